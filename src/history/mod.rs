//! The history of rings and live views, kept across restarts and power cuts:
//! when, what kind, how it went, how long, the picture of the visitor and any
//! recording.
//!
//! - [`store`]: the SQLite database (`history.db`, WAL) and the files beside
//!   it; consistent whatever moment the power goes.
//! - [`History`]: the daemon's handle. Made once by the composition root,
//!   it follows the call events (a task of its own, writes on blocking
//!   threads so an SD card's slow `fsync` never holds the call loop) and
//!   answers the bot's `/history` and `/status`.
//! - [`resolve_dir`]: where it lives by default.
//!
//! A history that cannot be opened (a read-only disk, another doorbell on
//! the same directory) is kept in memory instead, with an error in the log:
//! the doorbell rings on without it.

pub mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::call::event::{CallEvent, EventKind};
use crate::media::ring_picture::RingPictures;
use crate::media::unix_ms;
pub use store::{Attachment, Kind, Outcome, Row, Store, StoreError};

/// What the history needs from `[history]`.
#[derive(Debug, Clone)]
pub struct HistorySettings {
    pub dir: PathBuf,
    /// Rows older than this go.
    pub keep: Duration,
    /// The files (pictures, clips) take at most this much; the oldest go.
    pub max_bytes: u64,
    /// Keep the picture taken at each press.
    pub snapshots: bool,
}

/// Where the history lives when `history.dir` is not set, and why there:
/// `$STATE_DIRECTORY` (systemd's `StateDirectory=doorbell`: /var/lib/doorbell),
/// else /var/lib/doorbell when it exists (so `doorbell history` in a shell
/// finds the service's), else `$XDG_STATE_HOME/doorbell`, else
/// `~/.local/state/doorbell`, else `/tmp/doorbell-<uid>`.
pub fn resolve_dir(configured: Option<&Path>) -> (PathBuf, &'static str) {
    if let Some(d) = configured {
        return (d.to_path_buf(), "history.dir");
    }
    if let Some(dir) = crate::systemd::directory("STATE_DIRECTORY") {
        return (dir, "$STATE_DIRECTORY");
    }
    let system = Path::new("/var/lib/doorbell");
    if system.is_dir() {
        return (system.to_path_buf(), "the service's state directory");
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return (Path::new(&d).join("doorbell"), "$XDG_STATE_HOME");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return (Path::new(&home).join(".local/state/doorbell"), "$HOME");
    }
    // SAFETY: getuid cannot fail and has no preconditions.
    let uid = unsafe { libc::getuid() };
    (
        PathBuf::from(format!("/tmp/doorbell-{uid}")),
        "no state directory",
    )
}

/// The daemon's history: shared, cheap to clone.
#[derive(Clone)]
pub struct History {
    store: Arc<Mutex<Store>>,
    settings: Arc<HistorySettings>,
    /// This run's calls and their rows (the newest [`CALLS_KEPT`]).
    calls: Arc<Mutex<BTreeMap<u64, i64>>>,
}

/// Calls whose rows are remembered, for files that come after the call.
const CALLS_KEPT: usize = 64;

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("dir", &self.settings.dir)
            .finish()
    }
}

/// What [`History::open`] gives: the history, and a message for the owner
/// when something happened that they should know (the database was damaged).
pub struct Opened {
    pub history: History,
    pub notice: Option<String>,
}

impl History {
    /// Opens the history in `settings.dir`; in memory when that fails (logged).
    pub fn open(settings: HistorySettings) -> Opened {
        let mut notice = None;
        let store = match Store::open(&settings.dir) {
            Ok((store, opening)) => {
                if opening.interrupted > 0 {
                    tracing::warn!(
                        "history: {} ring(s) had not ended when the doorbell stopped; marked \
                         interrupted",
                        opening.interrupted
                    );
                }
                if let Some(aside) = &opening.moved_aside {
                    notice = Some(format!(
                        "The doorbell's history was damaged (a power cut while writing, or a \
                         failing SD card?). It was moved aside to {} and a new history started.",
                        aside.display()
                    ));
                }
                store
            }
            Err(e) => {
                tracing::error!(
                    "history: {e}; keeping it in memory until the doorbell stops (set \
                     history.dir to a writable directory)"
                );
                Store::memory()
            }
        };
        let history = History {
            store: Arc::new(Mutex::new(store)),
            settings: Arc::new(settings),
            calls: Default::default(),
        };
        history.prune();
        Opened { history, notice }
    }

    /// A history in memory (tests, and tools that need one).
    pub fn memory() -> History {
        History {
            store: Arc::new(Mutex::new(Store::memory())),
            settings: Arc::new(HistorySettings {
                dir: PathBuf::new(),
                keep: Duration::from_secs(60 * 86_400),
                max_bytes: u64::MAX,
                snapshots: false,
            }),
            calls: Default::default(),
        }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The row of this run's call `call`, once its `ringing` was recorded.
    pub fn row_of(&self, call: u64) -> Option<i64> {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&call)
            .copied()
    }

    /// Where a file for row `id` is written before [`History::adopt`]
    /// (`None`: the history is in memory, no files are kept).
    pub fn scratch(&self, id: i64, what: Attachment) -> Option<PathBuf> {
        self.store().scratch(id, what)
    }

    /// Makes the finished file at `scratch` the row's; its path. Blocks
    /// (fsync): call it from a blocking thread.
    pub fn adopt(
        &self,
        id: i64,
        what: Attachment,
        scratch: &Path,
    ) -> Result<Option<PathBuf>, StoreError> {
        let adopted = self.store().adopt(id, what, scratch);
        self.prune();
        adopted
    }

    /// The newest `limit` rows, newest first (empty when unreadable: logged).
    pub fn recent(&self, limit: usize) -> Vec<Row> {
        self.store().recent(limit).unwrap_or_else(|e| {
            tracing::error!("history: {e}");
            Vec::new()
        })
    }

    /// The newest ring (live views are not rings).
    pub fn last_ring(&self) -> Option<Row> {
        self.recent(20).into_iter().find(|r| r.kind == Kind::Ring)
    }

    /// Runs `f` with the store on a blocking thread (an SD card's `fsync`
    /// can take a while); errors are logged.
    async fn write<R: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Store) -> Result<R, StoreError> + Send + 'static,
    ) -> Option<R> {
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || {
            let store = store.lock().unwrap_or_else(|p| p.into_inner());
            f(&store)
        })
        .await;
        match result {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                tracing::error!("history: {what}: {e}");
                None
            }
            Err(e) => {
                tracing::error!("history: {what}: {e}");
                None
            }
        }
    }

    fn prune(&self) {
        let s = &self.settings;
        let keep_ms = s.keep.as_millis().min(u64::MAX as u128) as u64;
        match self.store().prune(unix_ms(), keep_ms, s.max_bytes) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                "history: {n} old row(s) removed (history.keep_days, history.max_mb)"
            ),
            Err(e) => tracing::error!("history: retention: {e}"),
        }
    }

    /// Records every call event of `events` until `cancel`; keeps each
    /// ring's picture from `pictures` when `history.snapshots` is on.
    pub fn follow(
        &self,
        mut events: broadcast::Receiver<CallEvent>,
        pictures: Option<RingPictures>,
        cancel: CancellationToken,
    ) {
        let history = self.clone();
        let pictures = pictures.filter(|_| self.settings.snapshots);
        tokio::spawn(async move {
            loop {
                // Events first: a ring that ended just before the stop is
                // written before the task goes.
                let event = tokio::select! {
                    biased;
                    e = events.recv() => e,
                    _ = cancel.cancelled() => return,
                };
                let e = match event {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("{n} call events missed; the history may be incomplete");
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let call = e.event.call;
                match &e.event.kind {
                    EventKind::Ringing if history.row_of(call).is_some() => {
                        // A press during a live view: the look became a ring.
                        if let Some(id) = history.row_of(call) {
                            history.write("a live view rung", move |s| s.rung(id)).await;
                        }
                    }
                    EventKind::Ringing | EventKind::LiveStarted => {
                        let room = e.event.room.clone();
                        let at = e.ts;
                        let kind = match e.event.kind {
                            EventKind::LiveStarted => Kind::Live,
                            _ => Kind::Ring,
                        };
                        let begun = history
                            .write("a new ring", move |s| s.begin(kind, call, &room, at))
                            .await;
                        let Some(id) = begun else { continue };
                        {
                            let mut rows = history.calls.lock().unwrap_or_else(|p| p.into_inner());
                            rows.insert(call, id);
                            while rows.len() > CALLS_KEPT {
                                rows.pop_first();
                            }
                        }
                        if let Some(p) = &pictures {
                            let picture = p.of(call);
                            let history = history.clone();
                            tokio::spawn(async move {
                                if let Some(jpeg) = picture.await {
                                    history
                                        .write("the ring's picture", move |s| {
                                            s.attach(id, Attachment::Snapshot, &jpeg)
                                        })
                                        .await;
                                }
                            });
                        }
                    }
                    EventKind::Answered | EventKind::Connected => {
                        if let Some(id) = history.row_of(call) {
                            let at = e.ts;
                            history
                                .write("an answer", move |s| s.answered(id, at))
                                .await;
                        }
                    }
                    EventKind::Ended { reason } => {
                        if let Some(id) = history.row_of(call) {
                            let (at, reason) = (e.ts, reason.as_str());
                            history
                                .write("the end of a ring", move |s| s.ended(id, at, reason))
                                .await;
                            let h = history.clone();
                            let _ = tokio::task::spawn_blocking(move || h.prune()).await;
                        }
                    }
                    _ => {}
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::event::{EndReason, Event};

    fn event(call: u64, kind: EventKind) -> CallEvent {
        CallEvent {
            event: Event {
                call,
                room: format!("room{call}"),
                kind,
            },
            ts: unix_ms() + call * 1000,
        }
    }

    #[tokio::test]
    async fn the_history_follows_the_call_events() {
        let (tx, rx) = broadcast::channel(16);
        let cancel = CancellationToken::new();
        let history = History::memory();
        history.follow(rx, None, cancel.clone());
        tx.send(event(1, EventKind::Ringing)).unwrap();
        tx.send(event(
            1,
            EventKind::Ended {
                reason: EndReason::Unanswered,
            },
        ))
        .unwrap();
        tx.send(event(2, EventKind::Ringing)).unwrap();
        tx.send(event(2, EventKind::Answered)).unwrap();
        for _ in 0..200 {
            if history
                .recent(5)
                .first()
                .is_some_and(|r| r.answered_ms.is_some())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let rows: Vec<(u64, Outcome)> = history
            .recent(5)
            .iter()
            .map(|r| (r.call, r.outcome))
            .collect();
        assert_eq!(rows, [(2, Outcome::Answered), (1, Outcome::Missed)]);
        assert_eq!(history.last_ring().map(|r| r.room), Some("room2".into()));
        cancel.cancel();
    }

    #[test]
    fn the_configured_directory_wins() {
        let (dir, from) = resolve_dir(Some(Path::new("/srv/bell")));
        assert_eq!(
            (dir.as_path(), from),
            (Path::new("/srv/bell"), "history.dir")
        );
    }
}
