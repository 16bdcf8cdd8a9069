//! The history of rings: when the bell rang and how each call ended, kept up
//! to date from the call event stream by a task of its own.
//!
//! Made once by the composition root and shared with whoever shows it (the
//! Telegram bot's `/history` and `/status` today). It keeps the last
//! [`History::KEEP`] rings in memory; it is the seam where a persistent store
//! (SQLite, with snapshots and clips beside it) takes over.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::call::event::{CallEvent, EndReason, EventKind};

/// The last rings and how they ended, from the call events.
#[derive(Debug, Default)]
pub struct History {
    rings: VecDeque<Entry>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub call: u64,
    /// The `ringing` event's time, Unix ms.
    pub at_ms: u64,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Ringing,
    Answered,
    Missed,
    Failed(EndReason),
}

impl History {
    pub const KEEP: usize = 10;

    pub fn record(&mut self, e: &CallEvent) {
        let call = e.event.call;
        match &e.event.kind {
            EventKind::Ringing => {
                self.rings.push_back(Entry {
                    call,
                    at_ms: e.ts,
                    outcome: Outcome::Ringing,
                });
                while self.rings.len() > Self::KEEP {
                    self.rings.pop_front();
                }
            }
            EventKind::Answered | EventKind::Connected => {
                if let Some(entry) = self.entry(call) {
                    entry.outcome = Outcome::Answered;
                }
            }
            EventKind::Ended { reason } => {
                if let Some(entry) = self.entry(call).filter(|e| e.outcome == Outcome::Ringing) {
                    entry.outcome = match reason {
                        EndReason::Unanswered => Outcome::Missed,
                        other => Outcome::Failed(*other),
                    };
                }
            }
            _ => {}
        }
    }

    fn entry(&mut self, call: u64) -> Option<&mut Entry> {
        self.rings.iter_mut().rev().find(|e| e.call == call)
    }

    pub fn last(&self) -> Option<&Entry> {
        self.rings.back()
    }

    /// Newest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.rings.iter().rev()
    }

    pub fn len(&self) -> usize {
        self.rings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rings.is_empty()
    }
}

/// The history, shared, following the call events.
#[derive(Debug, Clone, Default)]
pub struct SharedHistory(Arc<Mutex<History>>);

impl SharedHistory {
    /// A history that records every event of `events` until `cancel`.
    pub fn follow(
        mut events: broadcast::Receiver<CallEvent>,
        cancel: CancellationToken,
    ) -> SharedHistory {
        let shared = SharedHistory::default();
        let history = shared.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = cancel.cancelled() => return,
                    e = events.recv() => e,
                };
                match event {
                    Ok(e) => history.lock().record(&e),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("{n} call events missed; the ring history may be incomplete")
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        shared
    }

    pub fn lock(&self) -> MutexGuard<'_, History> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::event::Event;

    fn event(call: u64, kind: EventKind) -> CallEvent {
        CallEvent {
            event: Event {
                call,
                room: "r".into(),
                kind,
            },
            ts: 1_700_000_000_000 + call,
        }
    }

    #[tokio::test]
    async fn the_shared_history_follows_the_call_events() {
        let (tx, rx) = broadcast::channel(16);
        let cancel = CancellationToken::new();
        let history = SharedHistory::follow(rx, cancel.clone());
        tx.send(event(1, EventKind::Ringing)).unwrap();
        tx.send(event(
            1,
            EventKind::Ended {
                reason: EndReason::Unanswered,
            },
        ))
        .unwrap();
        tx.send(event(2, EventKind::Ringing)).unwrap();
        for _ in 0..100 {
            if history.lock().len() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let h = history.lock();
        let entries: Vec<(u64, Outcome)> = h.entries().map(|e| (e.call, e.outcome)).collect();
        assert_eq!(entries, [(2, Outcome::Ringing), (1, Outcome::Missed)]);
        assert_eq!(h.last().map(|e| e.at_ms), Some(1_700_000_000_002));
        drop(h);
        cancel.cancel();
    }
}
