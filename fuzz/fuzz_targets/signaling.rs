//! Every signaling message we read from a server: Engine.IO 3 and 4 packets
//! (WebSocket frames) and long-polling payloads, the Socket.IO packet inside,
//! and the room protocol's events with their arguments.
#![no_main]

use doorbell::signaling::engineio::{decode_payload, Packet, Version};
use doorbell::signaling::protocol::Message;
use doorbell::signaling::socketio::SioPacket;
use libfuzzer_sys::fuzz_target;

fn message(text: &str) {
    if let Ok(SioPacket::Event { name, args, .. }) = SioPacket::decode(text) {
        if let Ok(m) = Message::parse(&name, &args) {
            // What the doorbell does with a parsed message: log it, send it on.
            let _ = m.to_string();
            let again = Message::parse(m.event(), &[m.argument()]);
            assert!(
                again.is_ok() || m.argument().is_null(),
                "{m:?} does not round-trip"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let version = if selector & 1 == 0 {
        Version::V3
    } else {
        Version::V4
    };
    if selector & 2 == 0 {
        // A polling body: one or more packets.
        if let Ok(packets) = decode_payload(version, rest) {
            for p in packets {
                if let Packet::Message(text) = p {
                    message(&text);
                }
            }
        }
    } else if let Ok(text) = std::str::from_utf8(rest) {
        // A WebSocket frame: one packet.
        if let Ok(Packet::Message(inner)) = Packet::decode(text) {
            message(&inner);
        }
    }
});
