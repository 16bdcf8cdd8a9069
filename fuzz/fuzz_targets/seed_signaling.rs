//! What the servers of seeds 002 and 004 send: device-socket messages
//! (src/signaling/device_ws.rs) and SSE event streams, framed and decoded
//! (src/signaling/sse.rs), split into chunks anywhere.
#![no_main]

use doorbell::signaling::{device_ws, sse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector & 1 == 0 {
        if let Ok(text) = std::str::from_utf8(rest) {
            if let Ok(m) = device_ws::decode(text) {
                let _ = format!("{m:?}");
            }
        }
    } else {
        // The stream in two chunks, cut where the selector says.
        let cut = usize::from(selector >> 1).min(rest.len());
        let mut framing = sse::EventFraming::default();
        for chunk in [&rest[..cut], &rest[cut..]] {
            if let Ok(events) = framing.push(chunk) {
                for e in events {
                    if let Ok(event) = sse::decode(&e) {
                        let _ = format!("{event:?}");
                    }
                }
            }
        }
    }
});
