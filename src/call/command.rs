//! What buttons, the control socket and the owner's bot ask of the call loop,
//! and its typed replies.
//!
//! Part of the call's vocabulary: a leaf that button sources, the control
//! socket and notifiers import without importing the driver. The replies'
//! `Display` is the control socket's wire text (`ringing ROOM`, `busy: ...`,
//! `hanging up`...), which `doorbell ring` and integrations read.

use std::fmt;
use tokio::sync::oneshot;

/// A request to the call loop.
#[derive(Debug)]
pub enum Command {
    /// The button.
    Ring {
        reply: Option<oneshot::Sender<RingReply>>,
    },
    /// A live view: a room without a ring; the reply carries the link.
    Live {
        reply: Option<oneshot::Sender<RingReply>>,
    },
    Hangup {
        reply: Option<oneshot::Sender<HangupReply>>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
}

/// What a press did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingReply {
    /// A call started in this room.
    Ringing { room: String },
    /// A live view started; its viewer link.
    Live { link: String },
    /// A call is in progress.
    Busy,
    /// The press rang, but no call could start (why: for the owner).
    Failed { why: String },
    /// The press was not taken (the daemon is stopping).
    Ignored { why: String },
}

impl RingReply {
    pub fn is_ringing(&self) -> bool {
        matches!(self, RingReply::Ringing { .. } | RingReply::Live { .. })
    }
}

impl fmt::Display for RingReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingReply::Ringing { room } => write!(f, "ringing {room}"),
            RingReply::Live { link } => write!(f, "live {link}"),
            RingReply::Busy => f.write_str("busy: a call is in progress"),
            RingReply::Failed { why } => write!(f, "failed: {why}"),
            RingReply::Ignored { why } => write!(f, "ignored: {why}"),
        }
    }
}

/// What a hang-up did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupReply {
    HangingUp,
    NoCall,
}

impl fmt::Display for HangupReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HangupReply::HangingUp => "hanging up",
            HangupReply::NoCall => "no call to hang up",
        })
    }
}

/// The call machine's state, without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateKind {
    Idle,
    Joining,
    WaitingViewer,
    WaitingOffer,
    Answering,
    InCall,
    Ending,
}

impl StateKind {
    pub fn name(self) -> &'static str {
        match self {
            StateKind::Idle => "idle",
            StateKind::Joining => "joining",
            StateKind::WaitingViewer => "waiting_viewer",
            StateKind::WaitingOffer => "waiting_offer",
            StateKind::Answering => "answering",
            StateKind::InCall => "in_call",
            StateKind::Ending => "ending",
        }
    }
}

/// Comparing with a state's name (`status.state == "idle"`).
impl PartialEq<&str> for StateKind {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

impl serde::Serialize for StateKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// The daemon's state, for `status` (control socket, the bot, systemd).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub state: StateKind,
    pub room: Option<String>,
    pub calls: u64,
    pub signaling_up: bool,
    pub uptime_s: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The control socket's replies are an interface (`doorbell ring` and
    /// scripts read them): they keep their words.
    #[test]
    fn replies_keep_their_wire_text() {
        assert_eq!(
            RingReply::Ringing { room: "abc".into() }.to_string(),
            "ringing abc"
        );
        assert_eq!(RingReply::Busy.to_string(), "busy: a call is in progress");
        assert_eq!(
            RingReply::Failed {
                why: "the signaling server is unreachable".into()
            }
            .to_string(),
            "failed: the signaling server is unreachable"
        );
        assert_eq!(HangupReply::NoCall.to_string(), "no call to hang up");
        let status = Status {
            state: StateKind::WaitingViewer,
            room: None,
            calls: 2,
            signaling_up: true,
            uptime_s: 9,
        };
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            serde_json::json!({"state": "waiting_viewer", "room": null, "calls": 2, "signaling_up": true, "uptime_s": 9})
        );
    }
}
