//! Call events as integrations see them: one JSON object per line with
//! `--events json` (`{"event":"notified","call":1,"room":"...","ts":...,"link":"..."}`).
//!
//! Every event carries `event`, `call` (counter since the daemon started),
//! `room` and `ts` (Unix milliseconds); `notified` adds `link`, `ended` adds
//! `reason`, `error` adds `what`. The list and meaning of events is in
//! `docs/config.md` (section "Events").

use serde_json::{json, Value};

use crate::call::machine::{Event, EventKind};

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
            _ => {}
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::machine::EndReason;

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
    }
}
