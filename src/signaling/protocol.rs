//! The room protocol's messages, as plain data.
//!
//! This is the Socket.IO "room" protocol of the original design (see
//! `docs/protocol.md`): every event on the default namespace carries one
//! argument, which the original server leaves out of `new_peer` (and a page
//! may leave out of `bye`); extra arguments are ignored, as python-socketio
//! does. Parsing and encoding live here, with no IO, so the doorbell, the
//! built-in server and the test viewer all agree on one definition and the
//! malformed cases are unit-tested in one place.

use crate::spec::ice::IceServer;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// Largest SDP we accept. A browser offer with a handful of candidates is
/// 3-8 KiB; 64 KiB leaves room for many candidates and refuses abuse.
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// Longest room name we accept from the wire. Our own names are 22 characters.
pub const MAX_ROOM_CHARS: usize = 128;

/// Longest ICE candidate line we accept (a browser's are under 300 bytes).
pub const MAX_CANDIDATE_BYTES: usize = 1024;

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
    #[error("event \"ice_candidate\": {0}")]
    BadCandidate(String),
}

/// An RTCIceCandidateInit as browsers send it: `{"candidate": "candidate:...",
/// "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(rename = "sdpMid", default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(
        rename = "sdpMLineIndex",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_mline_index: Option<u16>,
    #[serde(
        rename = "usernameFragment",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub username_fragment: Option<String>,
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
    /// client -> server (`doorbell serve`, our page): join holding a seat, a
    /// random token the viewer keeps for the call; with it, the viewer gets
    /// back into the room after its connection dropped (page reload, another
    /// network) while anyone else still gets `full`. Argument:
    /// `{"room": ROOM, "seat": TOKEN}`.
    JoinSeat { room: String, seat: String },
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
    /// relayed: a candidate trickled after the offer; `None` is the end of
    /// candidates (`null`, or an empty candidate line). The doorbell adds the
    /// viewer's to its peer and sends none itself (its answer is complete).
    IceCandidate(Option<IceCandidate>),
    /// client -> server, relayed: leave the room. The relayed copy may lack the name.
    Bye(Option<String>),
    /// server -> a viewer that joined a live room (`doorbell serve` only):
    /// the STUN/TURN servers for its peer connection, with TURN credentials
    /// minted for it. Sent just before `joined`. Argument:
    /// `{"iceServers": [{"urls": [...], "username": ..., "credential": ...}]}`.
    IceServers(Vec<IceServer>),
    /// doorbell -> server (`doorbell serve` only, when both have the same
    /// look key): "I am the doorbell", after each connect, so that the
    /// owner's "Look now" button can reach it. Argument: `{"key": KEY}`.
    /// The key is never printed.
    DoorbellHello { key: String },
    /// server -> doorbell: the owner asks for a live view. Argument:
    /// `{"request": ID}`.
    Look { request: String },
    /// doorbell -> server: the live view is on, in `room`. Argument:
    /// `{"request": ID, "room": ROOM}`.
    LookStarted { request: String, room: String },
    /// doorbell -> server: no live view (`reason`: busy, ...). Argument:
    /// `{"request": ID, "reason": TEXT}`.
    LookRefused { request: String, reason: String },
}

impl Message {
    /// The Socket.IO event name.
    pub fn event(&self) -> &'static str {
        match self {
            Message::Join(_) | Message::JoinSeat { .. } => "join",
            Message::Created(_) => "created",
            Message::Joined(_) => "joined",
            Message::Full(_) => "full",
            Message::NewPeer(_) => "new_peer",
            Message::Invite(_) => "invite",
            Message::Ok(_) => "ok",
            Message::IceCandidate(_) => "ice_candidate",
            Message::Bye(_) => "bye",
            Message::IceServers(_) => "ice_servers",
            Message::DoorbellHello { .. } => "doorbell_hello",
            Message::Look { .. } => "look",
            Message::LookStarted { .. } => "look_started",
            Message::LookRefused { .. } => "look_refused",
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
            Message::IceCandidate(Some(c)) => {
                serde_json::to_value(c).expect("a candidate always serialises")
            }
            Message::IceCandidate(None) => Value::Null,
            Message::IceServers(servers) => serde_json::json!({ "iceServers": servers }),
            Message::JoinSeat { room, seat } => serde_json::json!({ "room": room, "seat": seat }),
            Message::DoorbellHello { key } => serde_json::json!({ "key": key }),
            Message::Look { request } => serde_json::json!({ "request": request }),
            Message::LookStarted { request, room } => {
                serde_json::json!({ "request": request, "room": room })
            }
            Message::LookRefused { request, reason } => {
                serde_json::json!({ "request": request, "reason": reason })
            }
        }
    }

    /// Parses an event from the wire. `args` are the event's arguments after the name.
    pub fn parse(event: &str, args: &[Value]) -> Result<Message, ProtocolError> {
        let first = args.first();
        Ok(match event {
            "join" => match first {
                Some(Value::Object(o)) => {
                    let room = room_arg("join", o.get("room"))?;
                    match o.get("seat") {
                        Some(Value::String(seat)) if valid_seat(seat) => Message::JoinSeat {
                            room,
                            seat: seat.clone(),
                        },
                        other => {
                            return Err(bad_argument(
                                "join",
                                "a seat of 16 to 128 characters",
                                other,
                            ))
                        }
                    }
                }
                _ => Message::Join(room_arg("join", first)?),
            },
            "created" => Message::Created(room_arg("created", first)?),
            "joined" => Message::Joined(room_arg("joined", first)?),
            "full" => Message::Full(room_arg("full", first)?),
            "new_peer" => Message::NewPeer(optional_room_arg("new_peer", first)?),
            "bye" => Message::Bye(optional_room_arg("bye", first)?),
            "invite" => Message::Invite(description_arg("invite", first, SdpType::Offer)?),
            "ok" => Message::Ok(description_arg("ok", first, SdpType::Answer)?),
            "ice_candidate" => Message::IceCandidate(candidate_arg(first)?),
            "ice_servers" => Message::IceServers(ice_servers_arg(first)?),
            "doorbell_hello" => Message::DoorbellHello {
                key: text_field("doorbell_hello", first, "key", 256)?,
            },
            "look" => Message::Look {
                request: text_field("look", first, "request", 64)?,
            },
            "look_started" => Message::LookStarted {
                request: text_field("look_started", first, "request", 64)?,
                room: room_arg("look_started", first.and_then(|v| v.get("room")))?,
            },
            "look_refused" => Message::LookRefused {
                request: text_field("look_refused", first, "request", 64)?,
                reason: text_field("look_refused", first, "reason", 200)?,
            },
            other => return Err(ProtocolError::UnknownEvent(truncate(other, 40))),
        })
    }
}

impl fmt::Display for Message {
    /// A log-friendly form: SDP bodies are summarised, not printed, and room
    /// names are shortened (the name is the call's only secret).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Invite(d) | Message::Ok(d) => {
                write!(f, "{} ({} bytes of SDP)", self.event(), d.sdp.len())
            }
            Message::IceCandidate(_) => f.write_str("ice_candidate"),
            Message::IceServers(s) => write!(f, "ice_servers ({} servers)", s.len()),
            // The seat is as secret as the room: it is never printed.
            Message::JoinSeat { room, .. } => write!(f, "join {} (holding a seat)", room_tag(room)),
            Message::DoorbellHello { .. } | Message::Look { .. } => f.write_str(self.event()),
            Message::LookStarted { room, .. } => {
                write!(f, "look_started {}", room_tag(room))
            }
            Message::LookRefused { reason, .. } => write!(f, "look_refused ({reason})"),
            _ => match self.argument() {
                Value::String(s) => write!(f, "{} {}", self.event(), room_tag(&s)),
                _ => f.write_str(self.event()),
            },
        }
    }
}

/// A room name as logs show it: its first 6 characters and an ellipsis. The
/// name is the call's only secret (whoever has it can answer the ring), so a
/// log, which outlives the call in the journal, never holds it whole.
pub struct RoomTag<'a>(&'a str);

pub fn room_tag(room: &str) -> RoomTag<'_> {
    RoomTag(room)
}

impl fmt::Display for RoomTag<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short: String = self.0.chars().take(6).collect();
        write!(f, "{short}…")
    }
}

/// Whether a room name from the wire is acceptable: 1..=128 characters, no
/// control characters. (Our own names are URL-safe base64; other clients may
/// use anything printable, as the original server allows.)
pub fn valid_room(name: &str) -> bool {
    let n = name.chars().count();
    (1..=MAX_ROOM_CHARS).contains(&n) && !name.chars().any(char::is_control)
}

/// Whether a seat token from the wire is acceptable: 16..=128 printable
/// ASCII characters (our page sends 22 characters of URL-safe base64).
pub fn valid_seat(seat: &str) -> bool {
    (16..=128).contains(&seat.len()) && seat.bytes().all(|b| b.is_ascii_graphic())
}

fn room_arg(event: &'static str, v: Option<&Value>) -> Result<String, ProtocolError> {
    match v {
        Some(Value::String(s)) if valid_room(s) => Ok(s.clone()),
        Some(Value::String(_)) => Err(ProtocolError::BadRoom { event }),
        other => Err(bad_argument(event, "a room name string", other)),
    }
}

/// A string field of an object argument: 1 to `max` bytes, no control
/// characters.
fn text_field(
    event: &'static str,
    v: Option<&Value>,
    field: &'static str,
    max: usize,
) -> Result<String, ProtocolError> {
    match v.and_then(|v| v.get(field)) {
        Some(Value::String(s))
            if (1..=max).contains(&s.len()) && !s.chars().any(char::is_control) =>
        {
            Ok(s.clone())
        }
        other => Err(bad_argument(
            event,
            match field {
                "key" => "an object with a \"key\" string",
                "request" => "an object with a \"request\" string",
                "reason" => "an object with a \"reason\" string",
                _ => "an object",
            },
            other,
        )),
    }
}

fn ice_servers_arg(v: Option<&Value>) -> Result<Vec<IceServer>, ProtocolError> {
    let list = v
        .and_then(|v| v.get("iceServers"))
        .ok_or_else(|| bad_argument("ice_servers", "an {\"iceServers\": [...]} object", v))?;
    // Browsers accept one URL as a string; so do we.
    let list: Vec<Value> = serde_json::from_value(list.clone()).unwrap_or_default();
    let mut servers = Vec::new();
    for item in list.iter().take(16) {
        let urls = match item.get("urls") {
            Some(Value::String(u)) => vec![u.clone()],
            Some(u) => serde_json::from_value(u.clone()).unwrap_or_default(),
            None => Vec::new(),
        };
        let text = |k: &str| {
            item.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        if !urls.is_empty() {
            servers.push(IceServer {
                urls,
                username: text("username"),
                credential: text("credential"),
            });
        }
    }
    Ok(servers)
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

fn candidate_arg(v: Option<&Value>) -> Result<Option<IceCandidate>, ProtocolError> {
    let bad = |why: &str| ProtocolError::BadCandidate(why.to_string());
    let c = match v {
        None | Some(Value::Null) => return Ok(None),
        // Some pages send just the candidate line.
        Some(Value::String(line)) => IceCandidate {
            candidate: line.clone(),
            sdp_mid: None,
            sdp_mline_index: None,
            username_fragment: None,
        },
        Some(v @ Value::Object(_)) => serde_json::from_value(v.clone()).map_err(|e| {
            bad(&format!(
                "not an RTCIceCandidateInit ({})",
                truncate(&e.to_string(), 80)
            ))
        })?,
        Some(other) => {
            return Err(bad(&format!(
                "needs a candidate object, got {}",
                kind_of(Some(other))
            )))
        }
    };
    if c.candidate.len() > MAX_CANDIDATE_BYTES
        || c.candidate.chars().any(char::is_control)
        || c.sdp_mid.as_ref().is_some_and(|m| m.len() > 32)
        || c.username_fragment.as_ref().is_some_and(|u| u.len() > 256)
    {
        return Err(bad("candidate is too long or has control characters"));
    }
    if c.candidate.is_empty() {
        return Ok(None);
    }
    if !c.candidate.starts_with("candidate:") && !c.candidate.starts_with("a=candidate:") {
        return Err(bad("the candidate line does not start with \"candidate:\""));
    }
    Ok(Some(c))
}

fn kind_of(v: Option<&Value>) -> &'static str {
    match v {
        None => "nothing",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "an array",
        Some(Value::Object(_)) => "an object",
    }
}

fn bad_argument(event: &'static str, expected: &'static str, got: Option<&Value>) -> ProtocolError {
    ProtocolError::BadArgument {
        event,
        expected,
        got: kind_of(got).to_string(),
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
            Message::JoinSeat {
                room: "r1".into(),
                seat: "s".repeat(22),
            },
            Message::Created("r1".into()),
            Message::Joined("r1".into()),
            Message::Full("r1".into()),
            Message::NewPeer(Some("r1".into())),
            Message::NewPeer(None),
            Message::Invite(SessionDescription::offer(SDP)),
            Message::Ok(SessionDescription::answer(SDP)),
            Message::IceCandidate(Some(IceCandidate {
                candidate: "candidate:1 1 UDP 1 127.0.0.1 9 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: Some(0),
                username_fragment: Some("abcd".into()),
            })),
            Message::IceCandidate(None),
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
            ("join", vec![json!({"room": "r1"})], "seat"),
            ("join", vec![json!({"room": "r1", "seat": "short"})], "seat"),
            ("join", vec![json!({"seat": "s".repeat(22)})], "room name"),
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
            ("ice_candidate", vec![json!(5)], "got a number"),
            (
                "ice_candidate",
                vec![json!({"sdpMid": "0"})],
                "RTCIceCandidateInit",
            ),
            (
                "ice_candidate",
                vec![json!({"candidate": "hello"})],
                "candidate:",
            ),
            (
                "ice_candidate",
                vec![json!({"candidate": format!("candidate:{}", "1".repeat(2000))})],
                "too long",
            ),
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
    fn candidates_as_browsers_trickle_them() {
        // Chromium's candidate.toJSON().
        let c = Message::parse(
            "ice_candidate",
            &[json!({"candidate": "candidate:842163049 1 udp 1677729535 192.0.2.7 50000 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag 4ZcD network-cost 999", "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "4ZcD"})],
        )
        .unwrap();
        let Message::IceCandidate(Some(c)) = c else {
            panic!("{c:?}")
        };
        assert_eq!(c.sdp_mid.as_deref(), Some("0"));
        assert_eq!(c.sdp_mline_index, Some(0));
        // The end of candidates, in the forms pages send it.
        for end in [
            vec![],
            vec![Value::Null],
            vec![json!({"candidate": "", "sdpMid": "0"})],
        ] {
            assert_eq!(
                Message::parse("ice_candidate", &end).unwrap(),
                Message::IceCandidate(None)
            );
        }
        // A bare candidate line.
        assert!(matches!(
            Message::parse(
                "ice_candidate",
                &[json!("candidate:1 1 udp 1 10.0.0.1 9 typ host")]
            ),
            Ok(Message::IceCandidate(Some(_)))
        ));
    }

    #[test]
    fn extra_arguments_are_ignored_like_the_python_server_does() {
        assert_eq!(
            Message::parse("join", &[json!("r"), json!("extra")]).unwrap(),
            Message::Join("r".into())
        );
    }

    #[test]
    fn display_never_prints_a_whole_room_name() {
        let room = "AbCdEfGhIjKlMnOpQrStUv";
        for m in [
            Message::Join(room.into()),
            Message::Created(room.into()),
            Message::Bye(Some(room.into())),
            Message::NewPeer(Some(room.into())),
        ] {
            let s = m.to_string();
            assert!(!s.contains(room) && s.contains("AbCdEf…"), "{s}");
        }
    }

    #[test]
    fn display_never_prints_sdp_bodies() {
        let s = Message::Invite(SessionDescription::offer(SDP)).to_string();
        assert!(!s.contains("IN IP4"), "{s}");
        assert!(s.contains("bytes of SDP"));
    }
}

#[cfg(test)]
mod look_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_look_messages_round_trip_and_the_key_is_never_printed() {
        let messages = [
            Message::DoorbellHello {
                key: "a-look-key-of-some-length".into(),
            },
            Message::Look {
                request: "r1".into(),
            },
            Message::LookStarted {
                request: "r1".into(),
                room: "abcdefghijkl".into(),
            },
            Message::LookRefused {
                request: "r1".into(),
                reason: "busy: a call is in progress".into(),
            },
        ];
        for m in messages {
            let parsed = Message::parse(m.event(), &[m.argument()]).unwrap();
            assert_eq!(parsed, m);
            let shown = m.to_string();
            assert!(!shown.contains("a-look-key"), "{shown}");
            assert!(!shown.contains("abcdefghijkl"), "{shown}");
        }
        for (event, arg) in [
            ("doorbell_hello", json!({"key": ""})),
            ("doorbell_hello", json!("the-key-as-a-string")),
            ("look", json!({})),
            ("look_started", json!({"request": "r"})),
            ("look_started", json!({"request": "r", "room": ""})),
            (
                "look_refused",
                json!({"request": "r", "reason": "x".repeat(201)}),
            ),
        ] {
            let e = Message::parse(event, &[arg]).unwrap_err().to_string();
            assert!(!e.contains("the-key-as-a-string"), "{e}");
        }
    }
}
