//! What the servers of seeds 002 and 004 send: device-socket messages
//! (src/signaling/device_ws.rs) and SSE event streams, framed and decoded
//! (src/signaling/sse.rs), split into chunks anywhere; and what devices and
//! viewers send `doorbell serve`'s seed-002 sockets (lines of text into the
//! rules of a device or viewer socket, src/server/device_relay/rules.rs),
//! and deliveries from other instances (src/server/fleet_redis.rs).
#![no_main]

use doorbell::secret::Secret;
use doorbell::server::device_relay::rules::{Conn, Context, Delivery, Limits, Role};
use doorbell::server::viewer_token::TokenKey;
use doorbell::signaling::{device_ws, sse};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector & 1 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        if selector & 2 == 0 {
            if let Ok(m) = device_ws::decode(text) {
                let _ = format!("{m:?}");
            }
            return;
        }
        // A device (or, by the selector, a viewer) saying these lines, a
        // second apart; a line that is a delivery is delivered too.
        let role = if selector & 4 == 0 {
            Role::Device
        } else {
            Role::Viewer
        };
        let key = TokenKey::new(Secret::new("a fuzzing key of thirty-two chars!")).unwrap();
        let devices: HashSet<String> = ["door-1".to_string()].into();
        let start = Instant::now();
        let mut conn = Conn::new(role, Limits::default(), start);
        for (i, line) in text.split('\n').enumerate() {
            let now = start + Duration::from_secs(i as u64);
            let cx = Context {
                now,
                unix: 1_000 + i as u64,
                ts: "2026-01-01T00:00:00.000Z",
                key: &key,
                devices: &devices,
            };
            let _ = format!("{:?}", conn.on_text(line, &cx));
            if let Ok(d) = serde_json::from_str::<Delivery>(line) {
                let _ = format!("{:?}", conn.on_delivery(d, cx.ts));
            }
            let _ = conn.on_tick(now);
        }
        let _ = conn.gone("t");
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
