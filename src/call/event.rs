//! What a call reports: its events ([`Event`], [`EventKind`]), why it ended
//! ([`EndReason`]), and the form integrations see ([`CallEvent`], one JSON
//! object per line with `--events json`:
//! `{"event":"notified","call":1,"room":"...","ts":...,"link":"..."}`).
//!
//! Part of the call's vocabulary: a leaf that notifiers, the chime, the
//! history and the event printer import without importing the machine.
//! Every event carries `event`, `call` (counter since the daemon started),
//! `room` and `ts` (Unix milliseconds); `notified` adds `link`, `ended` adds
//! `reason`, `error` adds `what`. The list and meaning of events is in
//! `docs/config.md` (section "Events").

use serde_json::{json, Value};

/// Why a call ended, as reported in `ended{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Nobody opened the link in time.
    Unanswered,
    /// The viewer joined but sent no offer in time.
    NoOffer,
    /// The viewer sent `bye`.
    ViewerLeft,
    /// Hang-up command.
    Hangup,
    /// The maximum call length was reached.
    MaxDuration,
    /// The media connection never came up, or ICE failed.
    MediaFailed,
    /// The media connection went silent for too long.
    MediaLost,
    /// The offer could not be answered (bad SDP, no common codec, peer error).
    AnswerFailed,
    /// Our room name was already taken (`joined`/`full` answered our `join`).
    RoomCollision,
    /// The signaling server did not answer `join` in time.
    SignalingTimeout,
    /// The signaling server was unreachable when the button was pressed.
    SignalingUnavailable,
    /// The signaling connection was lost before the call was established.
    SignalingLost,
    /// The daemon is stopping.
    Shutdown,
}

impl EndReason {
    pub const ALL: [EndReason; 13] = [
        EndReason::Unanswered,
        EndReason::NoOffer,
        EndReason::ViewerLeft,
        EndReason::Hangup,
        EndReason::MaxDuration,
        EndReason::MediaFailed,
        EndReason::MediaLost,
        EndReason::AnswerFailed,
        EndReason::RoomCollision,
        EndReason::SignalingTimeout,
        EndReason::SignalingUnavailable,
        EndReason::SignalingLost,
        EndReason::Shutdown,
    ];

    /// The reason named `s` (as in `ended{reason}`).
    pub fn parse(s: &str) -> Option<EndReason> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Why it ended, in words for the owner.
    pub fn for_owner(self) -> &'static str {
        match self {
            EndReason::Unanswered => "nobody answered",
            EndReason::NoOffer | EndReason::AnswerFailed => {
                "the link was opened but the call could not be set up"
            }
            EndReason::ViewerLeft => "the viewer left before the call started",
            EndReason::Hangup => "hung up",
            EndReason::MaxDuration => "the call reached its maximum length",
            EndReason::MediaFailed | EndReason::MediaLost => "the connection failed",
            EndReason::RoomCollision
            | EndReason::SignalingTimeout
            | EndReason::SignalingUnavailable
            | EndReason::SignalingLost => "the signaling server could not be reached",
            EndReason::Shutdown => "the doorbell was stopped",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Unanswered => "unanswered",
            EndReason::NoOffer => "no_offer",
            EndReason::ViewerLeft => "viewer_left",
            EndReason::Hangup => "hangup",
            EndReason::MaxDuration => "max_duration",
            EndReason::MediaFailed => "media_failed",
            EndReason::MediaLost => "media_lost",
            EndReason::AnswerFailed => "answer_failed",
            EndReason::RoomCollision => "room_collision",
            EndReason::SignalingTimeout => "signaling_timeout",
            EndReason::SignalingUnavailable => "signaling_unavailable",
            EndReason::SignalingLost => "signaling_lost",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// Call events for integrations (`--events json`), notifiers and logs.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    Ringing,
    /// A live view started (the owner looks without a ring): like
    /// `ringing`, without the chime and the notifications.
    LiveStarted,
    RoomCreated,
    Notified {
        link: String,
    },
    ViewerJoined,
    /// One of several viewers left (or its connection failed) and the call
    /// goes on with the `viewers` still in it (protocols with sessions per
    /// viewer; the last viewer leaving ends the call instead).
    ViewerLeft {
        viewers: usize,
    },
    Answered,
    Connected,
    /// The viewer came back (page reloaded, phone changed networks) and a new
    /// media connection is up: the same call goes on.
    Reconnected,
    FirstMedia,
    Ended {
        reason: EndReason,
    },
    Error {
        what: String,
    },
    /// The button was pressed while a call was in progress.
    Busy,
    /// Nobody answered and the visitor's message was kept, in `file`.
    VoicemailRecorded {
        file: String,
        seconds: f64,
    },
    /// A recording of the call was kept (`what`: `call`), in `file`.
    Recorded {
        what: String,
        file: String,
        seconds: f64,
    },
    /// The owner's reply started playing at the door (`what`: `quick` for a
    /// quick-reply button, `voice` for a voice message; `text` says which).
    ReplyPlayed {
        what: String,
        text: String,
        seconds: f64,
    },
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Ringing => "ringing",
            EventKind::LiveStarted => "live_started",
            EventKind::RoomCreated => "room_created",
            EventKind::Notified { .. } => "notified",
            EventKind::ViewerJoined => "viewer_joined",
            EventKind::ViewerLeft { .. } => "viewer_left",
            EventKind::Answered => "answered",
            EventKind::Connected => "connected",
            EventKind::Reconnected => "reconnected",
            EventKind::FirstMedia => "first_media",
            EventKind::Ended { .. } => "ended",
            EventKind::Error { .. } => "error",
            EventKind::Busy => "busy",
            EventKind::Recorded { .. } => "recorded",
            EventKind::VoicemailRecorded { .. } => "voicemail_recorded",
            EventKind::ReplyPlayed { .. } => "reply_played",
        }
    }
}

/// One call event: which call (a counter since start), which room, what.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub call: u64,
    pub room: String,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallEvent {
    pub event: Event,
    /// Unix milliseconds.
    pub ts: u64,
}

impl CallEvent {
    pub fn name(&self) -> &'static str {
        self.event.kind.name()
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "event": self.event.kind.name(),
            "call": self.event.call,
            "room": self.event.room,
            "ts": self.ts,
        });
        match &self.event.kind {
            EventKind::Notified { link } => v["link"] = json!(link),
            EventKind::Ended { reason } => v["reason"] = json!(reason.as_str()),
            EventKind::Error { what } => v["what"] = json!(what),
            EventKind::ViewerLeft { viewers } => v["viewers"] = json!(viewers),
            EventKind::VoicemailRecorded { file, seconds } => {
                v["file"] = json!(file);
                v["seconds"] = json!((seconds * 10.0).round() / 10.0);
            }
            EventKind::Recorded {
                what,
                file,
                seconds,
            } => {
                v["what"] = json!(what);
                v["file"] = json!(file);
                v["seconds"] = json!((seconds * 10.0).round() / 10.0);
            }
            EventKind::ReplyPlayed {
                what,
                text,
                seconds,
            } => {
                v["what"] = json!(what);
                v["text"] = json!(text);
                v["seconds"] = json!((seconds * 10.0).round() / 10.0);
            }
            _ => {}
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_the_documented_fields() {
        let e = |kind| CallEvent {
            event: Event {
                call: 3,
                room: "r".into(),
                kind,
            },
            ts: 1_700_000_000_000,
        };
        assert_eq!(
            e(EventKind::Notified {
                link: "http://x/?room=r".into()
            })
            .to_json(),
            json!({"event": "notified", "call": 3, "room": "r", "ts": 1_700_000_000_000u64, "link": "http://x/?room=r"})
        );
        assert_eq!(
            e(EventKind::Ended {
                reason: EndReason::Unanswered
            })
            .to_json()["reason"],
            "unanswered"
        );
        assert_eq!(
            e(EventKind::Error {
                what: "boom".into()
            })
            .to_json()["what"],
            "boom"
        );
        assert_eq!(e(EventKind::FirstMedia).to_json()["event"], "first_media");
        assert_eq!(
            e(EventKind::ViewerLeft { viewers: 1 }).to_json(),
            json!({"event": "viewer_left", "call": 3, "room": "r", "ts": 1_700_000_000_000u64, "viewers": 1})
        );
    }
}
