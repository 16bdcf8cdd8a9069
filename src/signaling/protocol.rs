//! The room protocol's messages, as plain data.
//!
//! This is the Socket.IO "room" protocol of the original design (see
//! `docs/protocol.md`): every event on the default namespace carries exactly one
//! argument. Parsing and encoding live here, with no IO, so the doorbell, the
//! built-in server and the test viewer all agree on one definition and the
//! malformed cases are unit-tested in one place.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// Largest SDP we accept. A browser offer with a handful of candidates is
/// 3-8 KiB; 64 KiB leaves room for many candidates and refuses abuse.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// Longest room name we accept from the wire. Our own names are 22 characters.
pub const MAX_ROOM_CHARS: usize = 128;

/// Why a message from the wire was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    #[error("event {event:?} needs one argument ({expected}), got {got}")]
    BadArgument {
        event: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error("event {event:?}: room name is empty, too long or has control characters")]
    BadRoom { event: &'static str },
    #[error("event {event:?}: session description {problem}")]
    BadDescription {
        event: &'static str,
        problem: String,
    },
}

/// `offer` or `answer`, the `type` field of an RTCSessionDescriptionInit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpType {
    Offer,
    Answer,
}

/// An RTCSessionDescriptionInit as browsers send it: `{"type": "offer", "sdp": "v=0..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    #[serde(rename = "type")]
    pub kind: SdpType,
    pub sdp: String,
}

impl SessionDescription {
    pub fn offer(sdp: impl Into<String>) -> Self {
        Self {
            kind: SdpType::Offer,
            sdp: sdp.into(),
        }
    }

    pub fn answer(sdp: impl Into<String>) -> Self {
        Self {
            kind: SdpType::Answer,
            sdp: sdp.into(),
        }
    }
}

/// Every event of the room protocol, in both directions.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// client -> server: join (or create) a room.
    Join(String),
    /// server -> sender: the sender is the first member.
    Created(String),
    /// server -> sender: the sender is the second member.
    Joined(String),
    /// server -> sender: the room already has two members; the sender did not join.
    Full(String),
    /// server -> the other member: a second member joined. The argument may be absent.
    NewPeer(Option<String>),
    /// relayed: SDP offer.
    Invite(SessionDescription),
    /// relayed: SDP answer.
    Ok(SessionDescription),
    /// relayed: a trickle candidate (the doorbell neither sends nor needs them).
    IceCandidate(Value),
    /// client -> server, relayed: leave the room. The relayed copy may lack the name.
    Bye(Option<String>),
}

impl Message {
    /// The Socket.IO event name.
    pub fn event(&self) -> &'static str {
        match self {
            Message::Join(_) => "join",
            Message::Created(_) => "created",
            Message::Joined(_) => "joined",
            Message::Full(_) => "full",
            Message::NewPeer(_) => "new_peer",
            Message::Invite(_) => "invite",
            Message::Ok(_) => "ok",
            Message::IceCandidate(_) => "ice_candidate",
            Message::Bye(_) => "bye",
        }
    }

    /// The single argument as JSON (`Value::Null` when the argument is absent).
    pub fn argument(&self) -> Value {
        match self {
            Message::Join(r) | Message::Created(r) | Message::Joined(r) | Message::Full(r) => {
                Value::String(r.clone())
            }
            Message::NewPeer(r) | Message::Bye(r) => {
                r.clone().map(Value::String).unwrap_or(Value::Null)
            }
            Message::Invite(d) | Message::Ok(d) => {
                serde_json::to_value(d).expect("a session description always serialises")
            }
            Message::IceCandidate(v) => v.clone(),
        }
    }

    /// Parses an event from the wire. `args` are the event's arguments after the name.
    pub fn parse(event: &str, args: &[Value]) -> Result<Message, ProtocolError> {
        let first = args.first();
        Ok(match event {
            "join" => Message::Join(room_arg("join", first)?),
            "created" => Message::Created(room_arg("created", first)?),
            "joined" => Message::Joined(room_arg("joined", first)?),
            "full" => Message::Full(room_arg("full", first)?),
            "new_peer" => Message::NewPeer(optional_room_arg("new_peer", first)?),
            "bye" => Message::Bye(optional_room_arg("bye", first)?),
            "invite" => Message::Invite(description_arg("invite", first, SdpType::Offer)?),
            "ok" => Message::Ok(description_arg("ok", first, SdpType::Answer)?),
            "ice_candidate" => Message::IceCandidate(first.cloned().unwrap_or(Value::Null)),
            other => return Err(ProtocolError::UnknownEvent(truncate(other, 40))),
        })
    }
}

impl fmt::Display for Message {
    /// A log-friendly form: SDP bodies are summarised, not printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Invite(d) | Message::Ok(d) => {
                write!(f, "{} ({} bytes of SDP)", self.event(), d.sdp.len())
            }
            Message::IceCandidate(_) => f.write_str("ice_candidate"),
            _ => match self.argument() {
                Value::String(s) => write!(f, "{} {s}", self.event()),
                _ => f.write_str(self.event()),
            },
        }
    }
}

/// Whether a room name from the wire is acceptable: 1..=128 characters, no
/// control characters. (Our own names are URL-safe base64; other clients may
/// use anything printable, as the original server allows.)
pub fn valid_room(name: &str) -> bool {
    let n = name.chars().count();
    (1..=MAX_ROOM_CHARS).contains(&n) && !name.chars().any(char::is_control)
}

fn room_arg(event: &'static str, v: Option<&Value>) -> Result<String, ProtocolError> {
    match v {
        Some(Value::String(s)) if valid_room(s) => Ok(s.clone()),
        Some(Value::String(_)) => Err(ProtocolError::BadRoom { event }),
        other => Err(bad_argument(event, "a room name string", other)),
    }
}

fn optional_room_arg(
    event: &'static str,
    v: Option<&Value>,
) -> Result<Option<String>, ProtocolError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        other => room_arg(event, other).map(Some),
    }
}

fn description_arg(
    event: &'static str,
    v: Option<&Value>,
    expected: SdpType,
) -> Result<SessionDescription, ProtocolError> {
    let Some(Value::Object(obj)) = v else {
        return Err(bad_argument(event, "a {\"type\", \"sdp\"} object", v));
    };
    let problem = |p: &str| ProtocolError::BadDescription {
        event,
        problem: p.to_string(),
    };
    let kind = match obj.get("type").and_then(Value::as_str) {
        Some("offer") => SdpType::Offer,
        Some("answer") => SdpType::Answer,
        Some(other) => {
            return Err(problem(&format!(
                "has type {:?}, expected {:?}",
                truncate(other, 20),
                expected
            )))
        }
        None => return Err(problem("has no \"type\" string")),
    };
    if kind != expected {
        return Err(problem(&format!(
            "has type {kind:?}, expected {expected:?}"
        )));
    }
    let sdp = obj
        .get("sdp")
        .and_then(Value::as_str)
        .ok_or_else(|| problem("has no \"sdp\" string"))?;
    if sdp.len() > MAX_SDP_BYTES {
        return Err(problem(&format!(
            "is {} bytes, more than the {MAX_SDP_BYTES} allowed",
            sdp.len()
        )));
    }
    if !sdp.starts_with("v=0") {
        return Err(problem("does not start with \"v=0\""));
    }
    Ok(SessionDescription {
        kind,
        sdp: sdp.to_string(),
    })
}

fn bad_argument(event: &'static str, expected: &'static str, got: Option<&Value>) -> ProtocolError {
    let got = match got {
        None => "nothing".to_string(),
        Some(Value::Null) => "null".to_string(),
        Some(Value::Bool(_)) => "a boolean".to_string(),
        Some(Value::Number(_)) => "a number".to_string(),
        Some(Value::String(_)) => "a string".to_string(),
        Some(Value::Array(_)) => "an array".to_string(),
        Some(Value::Object(_)) => "an object".to_string(),
    };
    ProtocolError::BadArgument {
        event,
        expected,
        got,
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SDP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n";

    #[test]
    fn every_message_round_trips_through_the_wire_form() {
        let all = vec![
            Message::Join("r1".into()),
            Message::Created("r1".into()),
            Message::Joined("r1".into()),
            Message::Full("r1".into()),
            Message::NewPeer(Some("r1".into())),
            Message::NewPeer(None),
            Message::Invite(SessionDescription::offer(SDP)),
            Message::Ok(SessionDescription::answer(SDP)),
            Message::IceCandidate(
                json!({"candidate": "candidate:1 1 UDP 1 127.0.0.1 9 typ host", "sdpMid": "0"}),
            ),
            Message::Bye(Some("r1".into())),
            Message::Bye(None),
        ];
        for m in all {
            let arg = m.argument();
            let args: Vec<Value> = if arg.is_null() { vec![] } else { vec![arg] };
            assert_eq!(
                Message::parse(m.event(), &args).unwrap(),
                m,
                "{}",
                m.event()
            );
        }
    }

    #[test]
    fn descriptions_use_the_browser_field_names() {
        let v = Message::Ok(SessionDescription::answer(SDP)).argument();
        assert_eq!(v, json!({"type": "answer", "sdp": SDP}));
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        let cases: Vec<(&str, Vec<Value>, &str)> = vec![
            ("join", vec![], "needs one argument"),
            ("join", vec![json!(5)], "got a number"),
            ("join", vec![json!("")], "room name"),
            ("join", vec![json!("a\nb")], "control characters"),
            ("join", vec![json!("x".repeat(129))], "too long"),
            ("created", vec![json!({"room": "r"})], "got an object"),
            ("invite", vec![json!("v=0")], "got a string"),
            ("invite", vec![json!({"sdp": SDP})], "no \"type\""),
            (
                "invite",
                vec![json!({"type": "answer", "sdp": SDP})],
                "expected Offer",
            ),
            (
                "invite",
                vec![json!({"type": "pranswer", "sdp": SDP})],
                "expected Offer",
            ),
            ("invite", vec![json!({"type": "offer"})], "no \"sdp\""),
            (
                "invite",
                vec![json!({"type": "offer", "sdp": "hello"})],
                "v=0",
            ),
            (
                "ok",
                vec![json!({"type": "offer", "sdp": SDP})],
                "expected Answer",
            ),
            (
                "invite",
                vec![json!({"type": "offer", "sdp": format!("v=0{}", "a".repeat(MAX_SDP_BYTES))})],
                "allowed",
            ),
            ("bye", vec![json!(["r"])], "got an array"),
            ("hello", vec![json!("r")], "unknown event"),
        ];
        for (event, args, needle) in cases {
            let err = Message::parse(event, &args).unwrap_err().to_string();
            assert!(
                err.contains(needle) || err.contains(&needle.replace("too long", "room name")),
                "{event} {args:?}: {err:?} lacks {needle:?}"
            );
        }
    }

    #[test]
    fn new_peer_and_bye_accept_a_missing_or_null_room() {
        assert_eq!(
            Message::parse("new_peer", &[]).unwrap(),
            Message::NewPeer(None)
        );
        assert_eq!(
            Message::parse("new_peer", &[Value::Null]).unwrap(),
            Message::NewPeer(None)
        );
        assert_eq!(Message::parse("bye", &[]).unwrap(), Message::Bye(None));
    }

    #[test]
    fn extra_arguments_are_ignored_like_the_python_server_does() {
        assert_eq!(
            Message::parse("join", &[json!("r"), json!("extra")]).unwrap(),
            Message::Join("r".into())
        );
    }

    #[test]
    fn display_never_prints_sdp_bodies() {
        let s = Message::Invite(SessionDescription::offer(SDP)).to_string();
        assert!(!s.contains("IN IP4"), "{s}");
        assert!(s.contains("bytes of SDP"));
    }
}
