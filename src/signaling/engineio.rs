//! Engine.IO, the transport under Socket.IO, in both protocol versions that
//! the original design's servers speak: pure encoding and decoding, no IO.
//!
//! - Engine.IO 3 (python-engineio 3.x, the socket.io 2.x JavaScript world;
//!   the lab's own server): the client sends `ping` and the server answers
//!   `pong`; a long-polling body is a list of `<length>:<packet>` (asked for
//!   with `b64=1`; the binary framing `\0<digits>\xff<packet>` is decoded too).
//! - Engine.IO 4 (python-engineio 4.x, socket.io 3.x and 4.x): the server
//!   sends `ping` and the client answers `pong`; a long-polling body is a list
//!   of packets separated by the record separator `\x1e`.
//!
//! A packet is one type digit and its data: `0` open (a JSON handshake), `1`
//! close, `2` ping, `3` pong, `4` message (a Socket.IO packet), `5` upgrade,
//! `6` noop. Binary messages (`b` + base64 in a v4 polling body) carry nothing
//! the room protocol uses; they are decoded so they can be refused by name.

use base64::Engine as _;
use std::time::Duration;

/// The Engine.IO protocol revision, as sent in the `EIO` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// python-engineio 3.x, socket.io 2.x: Socket.IO protocol 4 above it.
    V3,
    /// python-engineio 4.x, socket.io 3.x/4.x: Socket.IO protocol 5 above it.
    V4,
}

impl Version {
    pub fn query(self) -> &'static str {
        match self {
            Version::V3 => "3",
            Version::V4 => "4",
        }
    }

    /// What a person would recognise the version by.
    pub fn describe(self) -> &'static str {
        match self {
            Version::V3 => {
                "Engine.IO 3 / Socket.IO protocol 4 (python-socketio 4.x, Flask-SocketIO 4.x, socket.io 2.x)"
            }
            Version::V4 => {
                "Engine.IO 4 / Socket.IO protocol 5 (python-socketio 5.x, Flask-SocketIO 5.x, socket.io 3.x/4.x)"
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineIoError {
    #[error("empty Engine.IO packet")]
    Empty,
    #[error("unknown Engine.IO packet type {0:?}")]
    UnknownType(char),
    #[error("Engine.IO handshake is not valid JSON with a sid: {0}")]
    BadHandshake(String),
    #[error("Engine.IO payload framing is broken: {0}")]
    BadFraming(String),
    #[error("Engine.IO binary packet is not valid base64")]
    BadBase64,
}

/// The server's `open` packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub sid: String,
    pub upgrades: Vec<String>,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Engine.IO 4 servers say how large a payload they accept.
    pub max_payload: Option<u64>,
}

impl Handshake {
    fn parse(json: &str) -> Result<Handshake, EngineIoError> {
        let bad = |why: &str| EngineIoError::BadHandshake(why.to_string());
        let v: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(&e.to_string()))?;
        let sid = v["sid"]
            .as_str()
            .filter(|s| {
                (1..=256).contains(&s.len())
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
            })
            .ok_or_else(|| bad("no sid"))?
            .to_string();
        let ms = |key: &str, default: u64| {
            Duration::from_millis(v[key].as_u64().unwrap_or(default).clamp(100, 600_000))
        };
        Ok(Handshake {
            sid,
            upgrades: v["upgrades"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|u| u.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            ping_interval: ms("pingInterval", 25_000),
            ping_timeout: ms("pingTimeout", 20_000),
            max_payload: v["maxPayload"].as_u64(),
        })
    }
}

/// One Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Open(Handshake),
    Close,
    Ping(String),
    Pong(String),
    /// A Socket.IO packet, as text.
    Message(String),
    Upgrade,
    Noop,
    /// A binary message (never used by the room protocol).
    Binary(Vec<u8>),
}

impl Packet {
    /// Decodes a text packet (a WebSocket text frame, or one packet of a
    /// polling body).
    pub fn decode(text: &str) -> Result<Packet, EngineIoError> {
        let mut chars = text.chars();
        let kind = chars.next().ok_or(EngineIoError::Empty)?;
        let data = chars.as_str();
        Ok(match kind {
            '0' => Packet::Open(Handshake::parse(data)?),
            '1' => Packet::Close,
            '2' => Packet::Ping(data.to_string()),
            '3' => Packet::Pong(data.to_string()),
            '4' => Packet::Message(data.to_string()),
            '5' => Packet::Upgrade,
            '6' => Packet::Noop,
            'b' => Packet::Binary(
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|_| EngineIoError::BadBase64)?,
            ),
            other => return Err(EngineIoError::UnknownType(other)),
        })
    }

    /// The text form (what goes in a WebSocket text frame). Clients never
    /// send `open` or binary packets; they encode as a noop.
    pub fn encode(&self) -> String {
        match self {
            Packet::Close => "1".into(),
            Packet::Ping(d) => format!("2{d}"),
            Packet::Pong(d) => format!("3{d}"),
            Packet::Message(m) => format!("4{m}"),
            Packet::Upgrade => "5".into(),
            Packet::Open(_) | Packet::Noop | Packet::Binary(_) => "6".into(),
        }
    }
}

/// Longest polling body we read (python-engineio's default limit is 1 MB).
pub const MAX_PAYLOAD_BYTES: usize = 1_000_000;

/// Most packets in one polling body.
const MAX_PACKETS: usize = 256;

/// Encodes packets as a long-polling request body.
///
/// Version 3 counts lengths in characters as the JavaScript reference does;
/// the room protocol's messages are ASCII (see [`super::socketio`], which
/// escapes anything else), so the Python server's byte count agrees.
pub fn encode_payload(version: Version, packets: &[Packet]) -> String {
    match version {
        Version::V4 => packets
            .iter()
            .map(Packet::encode)
            .collect::<Vec<_>>()
            .join("\u{1e}"),
        Version::V3 => packets
            .iter()
            .map(|p| {
                let text = p.encode();
                format!("{}:{text}", text.encode_utf16().count())
            })
            .collect(),
    }
}

/// Decodes a long-polling response body.
pub fn decode_payload(version: Version, body: &[u8]) -> Result<Vec<Packet>, EngineIoError> {
    if body.len() > MAX_PAYLOAD_BYTES {
        return Err(EngineIoError::BadFraming(format!(
            "{} bytes is more than the {MAX_PAYLOAD_BYTES} accepted",
            body.len()
        )));
    }
    if body.is_empty() {
        return Ok(Vec::new());
    }
    match version {
        Version::V4 => {
            let text = std::str::from_utf8(body)
                .map_err(|_| EngineIoError::BadFraming("not UTF-8".into()))?;
            let parts: Vec<&str> = text.split('\u{1e}').collect();
            if parts.len() > MAX_PACKETS {
                return Err(EngineIoError::BadFraming("too many packets".into()));
            }
            parts.into_iter().map(Packet::decode).collect()
        }
        Version::V3 if body[0] <= 1 => decode_v3_binary(body),
        Version::V3 => {
            let text = std::str::from_utf8(body)
                .map_err(|_| EngineIoError::BadFraming("not UTF-8".into()))?;
            decode_v3_text(text)
        }
    }
}

/// `<length>:<packet>...`, the length in UTF-16 code units.
fn decode_v3_text(mut text: &str) -> Result<Vec<Packet>, EngineIoError> {
    let mut packets = Vec::new();
    while !text.is_empty() {
        if packets.len() >= MAX_PACKETS {
            return Err(EngineIoError::BadFraming("too many packets".into()));
        }
        let colon = text
            .find(':')
            .filter(|&i| i > 0 && i <= 8)
            .ok_or_else(|| EngineIoError::BadFraming("no <length>: prefix".into()))?;
        let len: usize = text[..colon]
            .parse()
            .map_err(|_| EngineIoError::BadFraming(format!("length {:?}", &text[..colon])))?;
        let rest = &text[colon + 1..];
        // Walk `len` UTF-16 units into the rest.
        let mut units = 0;
        let mut end = None;
        for (i, c) in rest.char_indices() {
            if units == len {
                end = Some(i);
                break;
            }
            units += c.len_utf16();
        }
        let end = match end {
            Some(e) => e,
            None if units == len => rest.len(),
            None => {
                return Err(EngineIoError::BadFraming(format!(
                    "packet of {len} announced, {units} present"
                )))
            }
        };
        packets.push(Packet::decode(&rest[..end])?);
        text = &rest[end..];
    }
    Ok(packets)
}

/// `\0|\1 <decimal digits as bytes> \xff <packet>...` (python-engineio 3
/// without `b64`).
fn decode_v3_binary(mut body: &[u8]) -> Result<Vec<Packet>, EngineIoError> {
    let mut packets = Vec::new();
    while !body.is_empty() {
        if packets.len() >= MAX_PACKETS {
            return Err(EngineIoError::BadFraming("too many packets".into()));
        }
        let binary = match body[0] {
            0 => false,
            1 => true,
            b => return Err(EngineIoError::BadFraming(format!("marker byte {b}"))),
        };
        let sep = body
            .iter()
            .position(|&b| b == 0xff)
            .filter(|&i| (2..=9).contains(&i))
            .ok_or_else(|| EngineIoError::BadFraming("no length".into()))?;
        let mut len = 0usize;
        for &d in &body[1..sep] {
            if d > 9 {
                return Err(EngineIoError::BadFraming("length digit".into()));
            }
            len = len * 10 + usize::from(d);
        }
        let start = sep + 1;
        let packet = body
            .get(start..start + len)
            .ok_or_else(|| EngineIoError::BadFraming("packet cut short".into()))?;
        packets.push(if binary {
            // The first byte is the packet type (4, a message).
            Packet::Binary(packet.get(1..).unwrap_or_default().to_vec())
        } else {
            Packet::decode(
                std::str::from_utf8(packet)
                    .map_err(|_| EngineIoError::BadFraming("not UTF-8".into()))?,
            )?
        });
        body = &body[start + len..];
    }
    Ok(packets)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What python-engineio 3.14 (b64=1) answers a polling handshake with,
    /// copied from the wire: the open packet, then Socket.IO's CONNECT.
    const V3_OPEN: &str = "109:0{\"sid\":\"5af422e29a4e45e3800190f4fc1ae066\",\"upgrades\":[\"websocket\"],\"pingTimeout\":60000,\"pingInterval\":25000}2:40";

    #[test]
    fn python_engineio_3_handshake_body() {
        let p = decode_payload(Version::V3, V3_OPEN.as_bytes()).unwrap();
        assert_eq!(p.len(), 2);
        let Packet::Open(h) = &p[0] else {
            panic!("{p:?}")
        };
        assert_eq!(h.sid, "5af422e29a4e45e3800190f4fc1ae066");
        assert_eq!(h.upgrades, ["websocket"]);
        assert_eq!(h.ping_interval, Duration::from_secs(25));
        assert_eq!(h.ping_timeout, Duration::from_secs(60));
        assert_eq!(h.max_payload, None);
        assert_eq!(p[1], Packet::Message("0".into()));
    }

    #[test]
    fn python_engineio_3_binary_framing_without_b64() {
        // \0 1 0 9 \xff "0{...}" as python-engineio 3 sends without b64.
        let open = &V3_OPEN[4..113];
        let mut body = vec![0u8, 1, 0, 9, 0xff];
        body.extend_from_slice(open.as_bytes());
        body.extend_from_slice(&[0, 2, 0xff]);
        body.extend_from_slice(b"40");
        let p = decode_payload(Version::V3, &body).unwrap();
        assert!(matches!(p[0], Packet::Open(_)), "{p:?}");
        assert_eq!(p[1], Packet::Message("0".into()));
    }

    #[test]
    fn engineio_4_handshake_and_record_separator() {
        let body = "0{\"sid\":\"abc\",\"upgrades\":[],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}\u{1e}40{\"sid\":\"x\"}";
        let p = decode_payload(Version::V4, body.as_bytes()).unwrap();
        let Packet::Open(h) = &p[0] else {
            panic!("{p:?}")
        };
        assert_eq!(h.max_payload, Some(1_000_000));
        assert_eq!(h.ping_timeout, Duration::from_secs(20));
        assert_eq!(p[1], Packet::Message("0{\"sid\":\"x\"}".into()));
    }

    #[test]
    fn payloads_round_trip_in_both_versions() {
        let packets = vec![
            Packet::Message("2[\"join\",\"r\"]".into()),
            Packet::Ping(String::new()),
            Packet::Pong("probe".into()),
            Packet::Message("2[\"x\",\"caf\u{e9} \u{1f514}\"]".into()),
            Packet::Close,
        ];
        for v in [Version::V3, Version::V4] {
            let body = encode_payload(v, &packets);
            assert_eq!(
                decode_payload(v, body.as_bytes()).unwrap(),
                packets,
                "{v:?}"
            );
        }
        assert_eq!(
            encode_payload(Version::V3, &packets[..2]),
            "14:42[\"join\",\"r\"]1:2"
        );
    }

    #[test]
    fn v3_lengths_count_utf16_units_like_the_javascript_server() {
        // U+1F514 is two UTF-16 units.
        let p = decode_payload(Version::V3, "4:4\u{1f514}x1:6".as_bytes()).unwrap();
        assert_eq!(p, [Packet::Message("\u{1f514}x".into()), Packet::Noop]);
    }

    #[test]
    fn binary_messages_are_decoded_to_be_refused() {
        let p = decode_payload(Version::V4, b"bAQID").unwrap();
        assert_eq!(p, [Packet::Binary(vec![1, 2, 3])]);
    }

    #[test]
    fn broken_bodies_are_errors_not_panics() {
        let cases: &[(Version, &[u8])] = &[
            (Version::V3, b"5:40"),
            (Version::V3, b"x:40"),
            (Version::V3, b"40"),
            (Version::V3, b"999999999:4"),
            (Version::V3, b"\x00\x09"),
            (Version::V3, b"\x00\x09\xff4"),
            (Version::V3, b"\x07\x01\xff4"),
            (Version::V4, b"9"),
            (Version::V4, b"0{}"),
            (Version::V4, b"0{\"sid\":\"\"}"),
            (Version::V4, b"0{\"sid\":\"a&b=c\"}"),
            (Version::V4, b"\xff\xfe"),
            (Version::V4, b"b!!"),
            (Version::V4, b"4a\x1e"),
        ];
        for (v, body) in cases {
            assert!(
                decode_payload(*v, body).is_err(),
                "{v:?} {:?} should be refused",
                String::from_utf8_lossy(body)
            );
        }
        let huge = vec![b'6'; MAX_PAYLOAD_BYTES + 1];
        assert!(decode_payload(Version::V4, &huge).is_err());
    }

    #[test]
    fn handshake_durations_are_bounded() {
        let Packet::Open(h) =
            Packet::decode("0{\"sid\":\"s\",\"pingInterval\":1,\"pingTimeout\":99999999999}")
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(h.ping_interval, Duration::from_millis(100));
        assert_eq!(h.ping_timeout, Duration::from_secs(600));
    }
}
