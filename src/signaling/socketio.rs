//! Socket.IO packets (protocol 4 over Engine.IO 3, protocol 5 over Engine.IO
//! 4): pure encoding and decoding, no IO.
//!
//! A packet is `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`, the
//! namespace left out for `/`. Types: `0` CONNECT, `1` DISCONNECT, `2` EVENT,
//! `3` ACK, `4` ERROR (protocol 4) / CONNECT_ERROR (protocol 5), `5` BINARY
//! EVENT, `6` BINARY ACK. An event is a JSON array: its name, then any number
//! of arguments, none included (the original server's `new_peer` is
//! `2["new_peer"]`, which some client libraries mistake for something else).
//!
//! The two protocols differ in the connection: under protocol 4 the server
//! connects the client to `/` by itself and says so with `0`; under protocol
//! 5 the client asks with `0` and the server answers `0{"sid":...}` or `4`
//! with the reason.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocketIoError {
    #[error("empty Socket.IO packet")]
    Empty,
    #[error("unknown Socket.IO packet type {0:?}")]
    UnknownType(char),
    #[error("Socket.IO packet {kind} has a broken {part}")]
    Broken {
        kind: &'static str,
        part: &'static str,
    },
    #[error("binary Socket.IO packets are not part of the room protocol")]
    Binary,
}

/// One Socket.IO packet, as far as the doorbell needs to tell them apart.
#[derive(Debug, Clone, PartialEq)]
pub enum SioPacket {
    /// `sid` is present under protocol 5 only: how a client tells the two
    /// protocols apart when the Engine.IO handshake did not.
    Connect {
        namespace: String,
        sid: Option<String>,
    },
    Disconnect {
        namespace: String,
    },
    Event {
        namespace: String,
        name: String,
        args: Vec<Value>,
        ack: Option<u64>,
    },
    Ack {
        namespace: String,
        id: u64,
    },
    /// The server refused the connection (or, in protocol 4, reports an error).
    Error {
        namespace: String,
        message: String,
    },
}

impl SioPacket {
    pub fn decode(text: &str) -> Result<SioPacket, SocketIoError> {
        let mut rest = text;
        let kind = rest.chars().next().ok_or(SocketIoError::Empty)?;
        rest = &rest[kind.len_utf8()..];
        let kind_name = match kind {
            '0' => "CONNECT",
            '1' => "DISCONNECT",
            '2' => "EVENT",
            '3' => "ACK",
            '4' => "ERROR",
            '5' | '6' => return Err(SocketIoError::Binary),
            other => return Err(SocketIoError::UnknownType(other)),
        };
        let broken = |part| SocketIoError::Broken {
            kind: kind_name,
            part,
        };
        let namespace = if rest.starts_with('/') {
            let end = rest.find(',').unwrap_or(rest.len());
            let ns = rest[..end].to_string();
            rest = rest.get(end + 1..).unwrap_or("");
            ns
        } else {
            "/".to_string()
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let id = if digits > 0 {
            let id = rest[..digits].parse().map_err(|_| broken("ack id"))?;
            rest = &rest[digits..];
            Some(id)
        } else {
            None
        };
        let json = || -> Result<Value, SocketIoError> {
            serde_json::from_str(rest).map_err(|_| broken("JSON"))
        };
        Ok(match kind {
            '0' => SioPacket::Connect {
                namespace,
                sid: json()
                    .ok()
                    .and_then(|v| v.get("sid").and_then(Value::as_str).map(str::to_string)),
            },
            '1' => SioPacket::Disconnect { namespace },
            '2' => {
                let Value::Array(mut items) = json()? else {
                    return Err(broken("event array"));
                };
                if items.is_empty() {
                    return Err(broken("event name"));
                }
                let Value::String(name) = items.remove(0) else {
                    return Err(broken("event name"));
                };
                SioPacket::Event {
                    namespace,
                    name,
                    args: items,
                    ack: id,
                }
            }
            '3' => SioPacket::Ack {
                namespace,
                id: id.ok_or_else(|| broken("ack id"))?,
            },
            _ => {
                // Protocol 5: {"message": "..."}; protocol 4: a JSON string or
                // nothing.
                let message = match json() {
                    Ok(Value::Object(o)) => o
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given")
                        .to_string(),
                    Ok(Value::String(s)) => s,
                    _ if rest.is_empty() => "no reason given".to_string(),
                    _ => rest.chars().take(200).collect(),
                };
                SioPacket::Error { namespace, message }
            }
        })
    }
}

/// `CONNECT` to `/` (protocol 5 only; protocol 4 servers connect by themselves).
pub fn encode_connect() -> String {
    "0".into()
}

/// `DISCONNECT` from `/`.
pub fn encode_disconnect() -> String {
    "1".into()
}

/// An event on `/`: the name, then each argument (none is fine).
pub fn encode_event(name: &str, args: &[Value]) -> String {
    let mut items = Vec::with_capacity(args.len() + 1);
    items.push(Value::String(name.to_string()));
    items.extend(args.iter().cloned());
    let json = Value::Array(items).to_string();
    format!("2{}", ascii_json(&json))
}

/// An empty acknowledgement (the room protocol never asks for one, but a
/// server that does gets an answer rather than a hang).
pub fn encode_ack(id: u64) -> String {
    format!("3{id}[]")
}

/// Escapes every non-ASCII character of serialised JSON as `\uXXXX`, which
/// is still the same JSON. Engine.IO 3 polling bodies frame packets by length,
/// and servers disagree on what a length counts (bytes in Python, UTF-16
/// units in JavaScript); for ASCII they all agree.
fn ascii_json(json: &str) -> String {
    if json.is_ascii() {
        return json.to_string();
    }
    let mut out = String::with_capacity(json.len() + 16);
    let mut units = [0u16; 2];
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_original_servers_new_peer_has_no_argument() {
        // Flask-SocketIO: emit('new_peer', room=..., include_self=False).
        assert_eq!(
            SioPacket::decode("2[\"new_peer\"]").unwrap(),
            SioPacket::Event {
                namespace: "/".into(),
                name: "new_peer".into(),
                args: vec![],
                ack: None
            }
        );
    }

    #[test]
    fn events_with_several_arguments_keep_them_all() {
        let p = SioPacket::decode("2[\"bye\",\"r\",{\"x\":1},null]").unwrap();
        let SioPacket::Event { args, .. } = p else {
            panic!()
        };
        assert_eq!(args, vec![json!("r"), json!({"x": 1}), Value::Null]);
    }

    #[test]
    fn namespaces_and_ack_ids_are_read() {
        assert_eq!(
            SioPacket::decode("2/admin,12[\"x\"]").unwrap(),
            SioPacket::Event {
                namespace: "/admin".into(),
                name: "x".into(),
                args: vec![],
                ack: Some(12)
            }
        );
        assert_eq!(
            SioPacket::decode("37[]").unwrap(),
            SioPacket::Ack {
                namespace: "/".into(),
                id: 7
            }
        );
    }

    #[test]
    fn connect_in_both_protocols() {
        // Protocol 4: "0"; protocol 5: "0{\"sid\":...}".
        for (text, sid) in [
            ("0", None),
            ("0{\"sid\":\"abc\"}", Some("abc")),
            ("0/,", None),
        ] {
            assert_eq!(
                SioPacket::decode(text).unwrap(),
                SioPacket::Connect {
                    namespace: "/".into(),
                    sid: sid.map(str::to_string)
                },
                "{text}"
            );
        }
    }

    #[test]
    fn refusals_carry_their_reason() {
        let m = |t: &str| match SioPacket::decode(t).unwrap() {
            SioPacket::Error { message, .. } => message,
            other => panic!("{other:?}"),
        };
        assert_eq!(m("4{\"message\":\"not authorized\"}"), "not authorized");
        assert_eq!(m("4\"Invalid namespace\""), "Invalid namespace");
        assert_eq!(m("4"), "no reason given");
    }

    #[test]
    fn broken_packets_are_errors_not_panics() {
        for text in [
            "",
            "9",
            "2",
            "2[]",
            "2[5]",
            "2{\"a\":1}",
            "2[\"x\"",
            "3",
            "299999999999999999999999[\"x\"]",
            "51-[\"x\",{\"_placeholder\":true,\"num\":0}]",
            "2/ns",
            "\u{e9}",
        ] {
            assert!(
                SioPacket::decode(text).is_err(),
                "{text:?} should be refused"
            );
        }
    }

    #[test]
    fn events_encode_as_ascii_json() {
        assert_eq!(encode_event("new_peer", &[]), "2[\"new_peer\"]");
        assert_eq!(encode_event("join", &[json!("r1")]), "2[\"join\",\"r1\"]");
        let e = encode_event("x", &[json!("caf\u{e9} \u{1f514}")]);
        assert!(e.is_ascii(), "{e}");
        let SioPacket::Event { args, .. } = SioPacket::decode(&e).unwrap() else {
            panic!()
        };
        assert_eq!(args, vec![json!("caf\u{e9} \u{1f514}")]);
        assert_eq!(encode_ack(3), "33[]");
    }
}
