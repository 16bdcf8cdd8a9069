//! The history's database and its files: one SQLite file (`history.db`, WAL)
//! and a `media/` directory beside it with each row's snapshot and clip.
//!
//! Synchronous and IO-only: the recorder ([`super::recorder`]) calls it on a
//! blocking thread; readers (`doorbell history`, the bot, the server's page)
//! open their own connection, which WAL lets them do while the daemon writes.
//!
//! What keeps it consistent through a power cut or a SIGKILL at any point:
//! - A row is committed before anything refers to it; a file is written to a
//!   `.tmp` name, synced, renamed and the directory synced, and only then
//!   named in its row. So a crash leaves at worst a `.tmp` file or a file no
//!   row names: [`Store::open`] deletes both (the sweep), and marks rows that
//!   never ended as `interrupted`.
//! - Deleting (retention) removes the rows first, then their files.
//! - `synchronous = FULL`: a committed row is on the disk.
//! - A database SQLite reports as damaged is moved aside with its files into
//!   `damaged-<unix time>/` and a new one started; the caller tells the owner.
//! - `lock` (flock) keeps a second daemon off the same directory: it would
//!   sweep the first one's files in flight.

use rusqlite::{params, Connection, OpenFlags};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::call::event::EndReason;

pub const DB_FILE: &str = "history.db";
pub const MEDIA_DIR: &str = "media";
const LOCK_FILE: &str = "lock";
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY,
    kind        TEXT    NOT NULL,
    call        INTEGER NOT NULL,
    room        TEXT    NOT NULL,
    started_ms  INTEGER NOT NULL,
    answered_ms INTEGER,
    ended_ms    INTEGER,
    outcome     TEXT    NOT NULL,
    reason      TEXT,
    snapshot    TEXT,
    clip        TEXT,
    bytes       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_started ON events(started_ms);
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history database {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("history directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("history directory {0} is in use by another doorbell (its `lock` file is held)")]
    Locked(PathBuf),
}

/// What a row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The button was pressed.
    Ring,
    /// The owner looked at the door without a ring.
    Live,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ring => "ring",
            Kind::Live => "live",
        }
    }

    fn parse(s: &str) -> Kind {
        match s {
            "live" => Kind::Live,
            _ => Kind::Ring,
        }
    }
}

/// How it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Still going on.
    Ringing,
    /// Someone answered (the call may still go on: see `ended_ms`).
    Answered,
    /// Nobody answered in time.
    Missed,
    /// No call could be made, or it broke before anyone answered: `reason`.
    Failed,
    /// The doorbell stopped (power cut, crash) before it ended.
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ringing => "ringing",
            Outcome::Answered => "answered",
            Outcome::Missed => "missed",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> Outcome {
        match s {
            "answered" => Outcome::Answered,
            "missed" => Outcome::Missed,
            "failed" => Outcome::Failed,
            "interrupted" => Outcome::Interrupted,
            _ => Outcome::Ringing,
        }
    }
}

/// A file that belongs to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    /// The picture taken at the press (JPEG).
    Snapshot,
    /// A recording (MP4): the voicemail or the call.
    Clip,
}

impl Attachment {
    fn column(self) -> &'static str {
        match self {
            Attachment::Snapshot => "snapshot",
            Attachment::Clip => "clip",
        }
    }

    fn file_name(self, id: i64) -> String {
        match self {
            Attachment::Snapshot => format!("{id:06}-snapshot.jpg"),
            Attachment::Clip => format!("{id:06}-clip.mp4"),
        }
    }
}

/// One ring or live view.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    pub id: i64,
    pub kind: Kind,
    /// The daemon's call counter (restarts at 1 with the daemon).
    pub call: u64,
    pub room: String,
    /// Unix ms.
    pub started_ms: u64,
    pub answered_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    pub outcome: Outcome,
    /// Why it ended (`ended{reason}`), or why it failed.
    pub reason: Option<String>,
    /// Full paths (`None` for a history in memory).
    pub snapshot: Option<PathBuf>,
    pub clip: Option<PathBuf>,
    /// Bytes of its files.
    pub bytes: u64,
}

impl Row {
    /// From the press to the answer, or to the end when nobody answered.
    pub fn ring_ms(&self) -> Option<u64> {
        self.answered_ms
            .or(self.ended_ms)
            .map(|t| t.saturating_sub(self.started_ms))
    }

    /// From the answer to the end.
    pub fn talk_ms(&self) -> Option<u64> {
        Some(self.ended_ms?.saturating_sub(self.answered_ms?))
    }

    /// How it went, for the owner: `answered (talked 1 min 20 s)`.
    pub fn describe(&self) -> String {
        let reason = self.reason.as_deref().and_then(EndReason::parse);
        match (self.kind, self.outcome) {
            (Kind::Live, _) => match self.ended_ms {
                Some(end) => format!("live view ({})", span(end.saturating_sub(self.started_ms))),
                None => "live view, going on".into(),
            },
            (_, Outcome::Ringing) => "ringing now".into(),
            (_, Outcome::Answered) => match self.talk_ms() {
                Some(talk) => format!("answered (talked {})", span(talk)),
                None if self.reason.as_deref() == Some("interrupted") => {
                    "answered (the doorbell stopped during the call)".into()
                }
                None => "answered, call going on".into(),
            },
            (_, Outcome::Missed) => "missed".into(),
            (_, Outcome::Failed) => match reason {
                Some(reason) => format!("not answered: {}", reason.for_owner()),
                None => "not answered".into(),
            },
            (_, Outcome::Interrupted) => "not answered: the doorbell stopped".into(),
        }
    }
}

/// `45 s`, `1 min 20 s`, `1 h 02 min`.
pub fn span(ms: u64) -> String {
    let s = (ms + 500) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s / 60 % 60),
    }
}

/// What [`Store::open`] found and did.
#[derive(Debug, Default, PartialEq)]
pub struct Opening {
    /// Rows that had not ended and are now `interrupted`.
    pub interrupted: usize,
    /// Files deleted by the sweep (`.tmp` and files no row names).
    pub swept: usize,
    /// The damaged database was moved here; a new one was started.
    pub moved_aside: Option<PathBuf>,
}

pub struct Store {
    conn: Connection,
    /// `None`: in memory (no files are kept).
    dir: Option<PathBuf>,
    /// Held while open (flock on `lock`), for writers only.
    _lock: Option<File>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

impl Store {
    /// Opens (creating) the history in `dir` for writing: takes its lock,
    /// moves a damaged database aside, marks rows that never ended and sweeps
    /// files nobody names.
    pub fn open(dir: &Path) -> Result<(Store, Opening), StoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        std::fs::create_dir_all(dir.join(MEDIA_DIR)).map_err(io(&dir.join(MEDIA_DIR)))?;
        let lock = lock(dir)?;
        let mut opening = Opening::default();
        let conn = match connect(dir) {
            Ok(c) => c,
            Err(e) if damaged(&e) => {
                let aside = move_aside(dir)?;
                tracing::error!(
                    "history: the database was damaged ({e}); moved it aside to {} and \
                     started a new one",
                    aside.display()
                );
                opening.moved_aside = Some(aside);
                std::fs::create_dir_all(dir.join(MEDIA_DIR)).map_err(io(&dir.join(MEDIA_DIR)))?;
                connect(dir)?
            }
            Err(e) => return Err(e),
        };
        let store = Store {
            conn,
            dir: Some(dir.to_path_buf()),
            _lock: Some(lock),
        };
        opening.interrupted = store
            .conn
            .execute(
                "UPDATE events SET outcome = CASE outcome WHEN 'ringing' THEN 'interrupted' \
                 ELSE outcome END, reason = COALESCE(reason, 'interrupted') \
                 WHERE ended_ms IS NULL AND outcome IN ('ringing', 'answered')",
                [],
            )
            .map_err(|e| store.db_error(e))?;
        opening.swept = store.sweep()?;
        Ok((store, opening))
    }

    /// A history that lasts as long as the process (when the directory
    /// cannot be used): rows, no files.
    pub fn memory() -> Store {
        let conn = Connection::open_in_memory().expect("SQLite can always open a memory database");
        conn.execute_batch(SCHEMA)
            .expect("the schema is valid SQL for SQLite");
        Store {
            conn,
            dir: None,
            _lock: None,
        }
    }

    /// Opens an existing history to read it (`doorbell history`, the server's
    /// page) while a daemon may be writing it. `Ok(None)`: there is none yet.
    pub fn read_only(dir: &Path) -> Result<Option<Store>, StoreError> {
        let path = dir.join(DB_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Db {
            path: path.clone(),
            source,
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(2))
            .map_err(|source| StoreError::Db { path, source })?;
        Ok(Some(Store {
            conn,
            dir: Some(dir.to_path_buf()),
            _lock: None,
        }))
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn db_error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Db {
            path: self
                .dir
                .as_ref()
                .map(|d| d.join(DB_FILE))
                .unwrap_or_else(|| PathBuf::from(":memory:")),
            source,
        }
    }

    /// A new row, still going on; its id.
    pub fn begin(&self, kind: Kind, call: u64, room: &str, at_ms: u64) -> Result<i64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO events (kind, call, room, started_ms, outcome) \
                 VALUES (?1, ?2, ?3, ?4, 'ringing')",
                params![kind.as_str(), call as i64, room, at_ms as i64],
            )
            .map_err(|e| self.db_error(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// A live view became a ring (the visitor pressed while the owner looked).
    pub fn rung(&self, id: i64) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE events SET kind = 'ring' WHERE id = ?1", [id])
            .map_err(|e| self.db_error(e))?;
        Ok(())
    }

    /// Someone answered (the first time counts).
    pub fn answered(&self, id: i64, at_ms: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE events SET answered_ms = ?2, outcome = 'answered' \
                 WHERE id = ?1 AND answered_ms IS NULL AND ended_ms IS NULL",
                params![id, at_ms as i64],
            )
            .map_err(|e| self.db_error(e))?;
        Ok(())
    }

    /// It ended: `reason` is the `ended` event's. Unanswered rings become
    /// `missed` (`unanswered`) or `failed` (anything else).
    pub fn ended(&self, id: i64, at_ms: u64, reason: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE events SET ended_ms = ?2, reason = ?3, outcome = CASE \
                 WHEN answered_ms IS NOT NULL THEN 'answered' \
                 WHEN kind = 'live' THEN 'answered' \
                 WHEN ?3 = 'unanswered' THEN 'missed' ELSE 'failed' END \
                 WHERE id = ?1 AND ended_ms IS NULL",
                params![id, at_ms as i64, reason],
            )
            .map_err(|e| self.db_error(e))?;
        Ok(())
    }

    /// Writes `data` as the row's snapshot or clip (replacing one it had) and
    /// names it in the row; the file's full path. Nothing happens in memory.
    pub fn attach(
        &self,
        id: i64,
        what: Attachment,
        data: &[u8],
    ) -> Result<Option<PathBuf>, StoreError> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let media = dir.join(MEDIA_DIR);
        let name = what.file_name(id);
        let path = media.join(&name);
        write_durably(&media, &name, data)?;
        self.name_file(id, what, &name, data.len() as u64, &path)
    }

    /// Where a file for the row `id` is written before [`Store::adopt`]
    /// names it (`None` in memory). A stop before that leaves it to the
    /// sweep.
    pub fn scratch(&self, id: i64, what: Attachment) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(
            dir.join(MEDIA_DIR)
                .join(format!("{}.tmp", what.file_name(id))),
        )
    }

    /// Makes the finished file at `scratch` the row's snapshot or clip:
    /// synced, renamed, named in the row; its full path.
    pub fn adopt(
        &self,
        id: i64,
        what: Attachment,
        scratch: &Path,
    ) -> Result<Option<PathBuf>, StoreError> {
        let Some(dir) = &self.dir else {
            let _ = std::fs::remove_file(scratch);
            return Ok(None);
        };
        let media = dir.join(MEDIA_DIR);
        let name = what.file_name(id);
        let path = media.join(&name);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        let bytes = (|| {
            let f = File::open(scratch)?;
            f.sync_all()?;
            f.metadata().map(|m| m.len())
        })()
        .map_err(io(scratch))?;
        std::fs::rename(scratch, &path).map_err(io(&path))?;
        File::open(&media)
            .and_then(|d| d.sync_all())
            .map_err(io(&media))?;
        self.name_file(id, what, &name, bytes, &path)
    }

    fn name_file(
        &self,
        id: i64,
        what: Attachment,
        name: &str,
        bytes: u64,
        path: &Path,
    ) -> Result<Option<PathBuf>, StoreError> {
        let column = what.column();
        let updated = self.conn.execute(
            &format!("UPDATE events SET {column} = ?2, bytes = bytes + ?3 WHERE id = ?1"),
            params![id, name, bytes as i64],
        );
        match updated {
            Ok(1) => Ok(Some(path.to_path_buf())),
            Ok(_) => {
                // The row went meanwhile (retention): the file must go too.
                let _ = std::fs::remove_file(path);
                Ok(None)
            }
            Err(e) => {
                let _ = std::fs::remove_file(path);
                Err(self.db_error(e))
            }
        }
    }

    /// Newest first.
    pub fn recent(&self, limit: usize) -> Result<Vec<Row>, StoreError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.select("ORDER BY started_ms DESC, id DESC LIMIT ?1", limit)
    }

    /// The row `id`, if it is still kept.
    pub fn row(&self, id: i64) -> Result<Option<Row>, StoreError> {
        Ok(self.select("WHERE id = ?1", id)?.pop())
    }

    fn select(&self, tail: &str, param: i64) -> Result<Vec<Row>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(&format!(
                "SELECT id, kind, call, room, started_ms, answered_ms, ended_ms, outcome, \
                 reason, snapshot, clip, bytes FROM events {tail}"
            ))
            .map_err(|e| self.db_error(e))?;
        let media = self.dir.as_ref().map(|d| d.join(MEDIA_DIR));
        let file = |name: Option<String>| match (&media, name) {
            (Some(m), Some(n)) => Some(m.join(n)),
            _ => None,
        };
        let rows = statement
            .query_map([param], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    kind: Kind::parse(&r.get::<_, String>(1)?),
                    call: r.get::<_, i64>(2)? as u64,
                    room: r.get(3)?,
                    started_ms: r.get::<_, i64>(4)? as u64,
                    answered_ms: r.get::<_, Option<i64>>(5)?.map(|t| t as u64),
                    ended_ms: r.get::<_, Option<i64>>(6)?.map(|t| t as u64),
                    outcome: Outcome::parse(&r.get::<_, String>(7)?),
                    reason: r.get(8)?,
                    snapshot: file(r.get(9)?),
                    clip: file(r.get(10)?),
                    bytes: r.get::<_, i64>(11)?.max(0) as u64,
                })
            })
            .map_err(|e| self.db_error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db_error(e))
    }

    /// Deletes rows (with their files), oldest first, that started before
    /// `now_ms - keep_ms`, then while the files take more than `max_bytes`.
    /// Rows still going on are kept. How many rows went.
    pub fn prune(&self, now_ms: u64, keep_ms: u64, max_bytes: u64) -> Result<usize, StoreError> {
        let cutoff = now_ms.saturating_sub(keep_ms) as i64;
        let mut doomed: Vec<(i64, Option<String>, Option<String>)> = Vec::new();
        let mut total: u64 = 0;
        {
            let mut statement = self
                .conn
                .prepare_cached(
                    "SELECT id, started_ms, ended_ms IS NOT NULL OR outcome = 'interrupted', \
                     bytes, snapshot, clip FROM events ORDER BY started_ms DESC, id DESC",
                )
                .map_err(|e| self.db_error(e))?;
            let rows = statement
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, bool>(2)?,
                        r.get::<_, i64>(3)?.max(0) as u64,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                    ))
                })
                .map_err(|e| self.db_error(e))?;
            for row in rows {
                let (id, started, finished, bytes, snapshot, clip) =
                    row.map_err(|e| self.db_error(e))?;
                total += bytes;
                let too_old = started < cutoff;
                let too_big = total > max_bytes && bytes > 0;
                if finished && (too_old || too_big) {
                    doomed.push((id, snapshot, clip));
                    total -= bytes;
                }
            }
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.db_error(e))?;
        for (id, _, _) in &doomed {
            tx.execute("DELETE FROM events WHERE id = ?1", [id])
                .map_err(|e| self.db_error(e))?;
        }
        tx.commit().map_err(|e| self.db_error(e))?;
        if let Some(dir) = &self.dir {
            for name in doomed
                .iter()
                .flat_map(|(_, s, c)| [s.as_deref(), c.as_deref()])
                .flatten()
            {
                let _ = std::fs::remove_file(dir.join(MEDIA_DIR).join(name));
            }
        }
        Ok(doomed.len())
    }

    /// Deletes `.tmp` files and files no row names.
    fn sweep(&self) -> Result<usize, StoreError> {
        let Some(dir) = &self.dir else { return Ok(0) };
        let media = dir.join(MEDIA_DIR);
        let mut named = std::collections::HashSet::new();
        {
            let mut statement = self
                .conn
                .prepare("SELECT snapshot, clip FROM events")
                .map_err(|e| self.db_error(e))?;
            let rows = statement
                .query_map([], |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                    ))
                })
                .map_err(|e| self.db_error(e))?;
            for row in rows {
                let (s, c) = row.map_err(|e| self.db_error(e))?;
                named.extend(s);
                named.extend(c);
            }
        }
        let entries = std::fs::read_dir(&media).map_err(|source| StoreError::Io {
            path: media.clone(),
            source,
        })?;
        let mut swept = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !named.contains(&name) && std::fs::remove_file(entry.path()).is_ok() {
                tracing::info!("history: removed {name}: no row names it (left by a stop in the middle of writing)");
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// `PRAGMA integrity_check`: "ok" when the database is whole.
    pub fn integrity(&self) -> Result<String, StoreError> {
        self.conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| self.db_error(e))
    }
}

/// Opens `dir/history.db` for writing, WAL, with the schema, and checks it.
fn connect(dir: &Path) -> Result<Connection, StoreError> {
    let path = dir.join(DB_FILE);
    let error = |source| StoreError::Db {
        path: path.clone(),
        source,
    };
    let conn = Connection::open(&path).map_err(error)?;
    conn.busy_timeout(std::time::Duration::from_secs(2))
        .map_err(error)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!("history: SQLite would not use WAL here (journal mode {mode})");
    }
    conn.execute_batch("PRAGMA synchronous = FULL;")
        .map_err(error)?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(error)?;
    if check != "ok" {
        return Err(error(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(check),
        )));
    }
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(error)?;
    if version > SCHEMA_VERSION {
        tracing::warn!(
            "history: {} was written by a newer doorbell (schema {version}); using it as \
             schema {SCHEMA_VERSION}",
            path.display()
        );
    }
    conn.execute_batch(SCHEMA).map_err(error)?;
    if version < SCHEMA_VERSION {
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))
            .map_err(error)?;
    }
    Ok(conn)
}

/// SQLite says the file is not a (whole) database.
fn damaged(e: &StoreError) -> bool {
    let StoreError::Db {
        source: rusqlite::Error::SqliteFailure(f, _),
        ..
    } = e
    else {
        return false;
    };
    matches!(
        f.code,
        rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
    )
}

/// Moves the database, its WAL and the media into `damaged-<unix s>/`.
fn move_aside(dir: &Path) -> Result<PathBuf, StoreError> {
    let now = crate::media::unix_ms() / 1000;
    let mut aside = dir.join(format!("damaged-{now}"));
    let mut n = 1;
    while aside.exists() {
        aside = dir.join(format!("damaged-{now}-{n}"));
        n += 1;
    }
    std::fs::create_dir(&aside).map_err(|source| StoreError::Io {
        path: aside.clone(),
        source,
    })?;
    for name in [
        DB_FILE.to_string(),
        format!("{DB_FILE}-wal"),
        format!("{DB_FILE}-shm"),
        MEDIA_DIR.to_string(),
    ] {
        let from = dir.join(&name);
        if from.exists() {
            std::fs::rename(&from, aside.join(&name)).map_err(|source| StoreError::Io {
                path: from.clone(),
                source,
            })?;
        }
    }
    Ok(aside)
}

/// Takes `dir/lock` (flock, exclusive, not waiting).
fn lock(dir: &Path) -> Result<File, StoreError> {
    use std::os::fd::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(StoreError::Locked(dir.to_path_buf()));
        }
        return Err(StoreError::Io { path, source: e });
    }
    Ok(file)
}

/// `dir/name` with `data`, whole or not at all: written as `name.tmp`,
/// synced, renamed, and the directory synced.
fn write_durably(dir: &Path, name: &str, data: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join(MEDIA_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_ring_goes_from_ringing_to_answered_or_missed() {
        let d = tempfile::tempdir().unwrap();
        let (s, opening) = Store::open(d.path()).unwrap();
        assert_eq!(opening, Opening::default());
        let a = s.begin(Kind::Ring, 1, "r1", 1_000).unwrap();
        let b = s.begin(Kind::Ring, 2, "r2", 5_000).unwrap();
        s.answered(a, 3_000).unwrap();
        s.answered(a, 4_000).unwrap();
        s.ended(a, 83_000, "viewer_left").unwrap();
        s.ended(b, 35_000, "unanswered").unwrap();
        let c = s.begin(Kind::Ring, 3, "r3", 40_000).unwrap();
        s.ended(c, 41_000, "signaling_unavailable").unwrap();
        let rows = s.recent(10).unwrap();
        let summary: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.id,
                    r.outcome,
                    r.reason.as_deref(),
                    r.ring_ms(),
                    r.talk_ms(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    c,
                    Outcome::Failed,
                    Some("signaling_unavailable"),
                    Some(1_000),
                    None
                ),
                (b, Outcome::Missed, Some("unanswered"), Some(30_000), None),
                (
                    a,
                    Outcome::Answered,
                    Some("viewer_left"),
                    Some(2_000),
                    Some(80_000)
                ),
            ]
        );
        assert_eq!(s.recent(1).unwrap().len(), 1);
    }

    #[test]
    fn files_are_named_in_their_row_and_survive_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(d.path()).unwrap();
        let a = s.begin(Kind::Ring, 1, "r", 1_000).unwrap();
        let path = s.attach(a, Attachment::Snapshot, b"jpeg").unwrap().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"jpeg");
        s.ended(a, 2_000, "unanswered").unwrap();
        drop(s);
        let (s, opening) = Store::open(d.path()).unwrap();
        assert_eq!(opening, Opening::default());
        let row = s.row(a).unwrap().unwrap();
        assert_eq!(row.snapshot, Some(path));
        assert_eq!(row.bytes, 4);
    }

    #[test]
    fn a_stop_in_the_middle_leaves_nothing_behind_on_the_next_start() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(d.path()).unwrap();
        let a = s.begin(Kind::Ring, 1, "r", 1_000).unwrap();
        s.attach(a, Attachment::Snapshot, b"kept").unwrap();
        let b = s.begin(Kind::Ring, 2, "r", 2_000).unwrap();
        s.answered(b, 2_500).unwrap();
        drop(s);
        // What a kill leaves: a file half written, one written but not yet
        // named in its row.
        let media = d.path().join(MEDIA_DIR);
        std::fs::write(media.join("000002-clip.mp4.tmp"), b"half").unwrap();
        std::fs::write(media.join("000002-snapshot.jpg"), b"unnamed").unwrap();
        let (s, opening) = Store::open(d.path()).unwrap();
        assert_eq!(opening.interrupted, 2);
        assert_eq!(opening.swept, 2);
        assert_eq!(names(d.path()), ["000001-snapshot.jpg"]);
        let rows = s.recent(10).unwrap();
        assert_eq!(rows[0].outcome, Outcome::Answered);
        assert_eq!(rows[0].reason.as_deref(), Some("interrupted"));
        assert_eq!(rows[1].outcome, Outcome::Interrupted);
        assert_eq!(s.integrity().unwrap(), "ok");
    }

    #[test]
    fn retention_goes_by_age_then_by_size_oldest_first() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(d.path()).unwrap();
        let day = 86_400_000;
        let mut ids = Vec::new();
        for i in 0..5u64 {
            let id = s.begin(Kind::Ring, i, "r", i * day).unwrap();
            s.attach(id, Attachment::Snapshot, &[0u8; 100]).unwrap();
            s.ended(id, i * day + 1, "unanswered").unwrap();
            ids.push(id);
        }
        let going_on = s.begin(Kind::Ring, 9, "r", 0).unwrap();
        // 10 days on, keeping 7: rows 0, 1 and 2 are older; the one going on stays.
        assert_eq!(s.prune(10 * day, 7 * day, u64::MAX).unwrap(), 3);
        // 200 bytes at most: of 3 and 4, only 4 (the newest) stays.
        assert_eq!(s.prune(10 * day, 7 * day, 150).unwrap(), 1);
        let left: Vec<i64> = s.recent(10).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(left, [ids[4], going_on]);
        assert_eq!(names(d.path()), ["000005-snapshot.jpg"]);
    }

    #[test]
    fn a_damaged_database_is_moved_aside_and_a_new_one_started() {
        let d = tempfile::tempdir().unwrap();
        {
            let (s, _) = Store::open(d.path()).unwrap();
            let a = s.begin(Kind::Ring, 1, "r", 1_000).unwrap();
            s.attach(a, Attachment::Snapshot, b"old").unwrap();
        }
        std::fs::write(d.path().join(DB_FILE), vec![0x5a; 8192]).unwrap();
        let _ = std::fs::remove_file(d.path().join(format!("{DB_FILE}-wal")));
        let (s, opening) = Store::open(d.path()).unwrap();
        let aside = opening.moved_aside.expect("moved aside");
        assert!(aside.join(DB_FILE).exists());
        assert!(aside.join(MEDIA_DIR).join("000001-snapshot.jpg").exists());
        assert!(s.recent(10).unwrap().is_empty());
        assert!(names(d.path()).is_empty());
        // Once: the next start finds a whole database.
        drop(s);
        assert_eq!(Store::open(d.path()).unwrap().1.moved_aside, None);
    }

    #[test]
    fn a_second_writer_is_refused_and_readers_see_the_rows() {
        let d = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(d.path()).unwrap();
        assert!(matches!(Store::open(d.path()), Err(StoreError::Locked(_))));
        s.begin(Kind::Live, 1, "r", 1_000).unwrap();
        let reader = Store::read_only(d.path()).unwrap().unwrap();
        assert_eq!(reader.recent(5).unwrap()[0].kind, Kind::Live);
        assert!(Store::read_only(&d.path().join("nothing"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn spans_read_like_a_clock() {
        assert_eq!(span(44_600), "45 s");
        assert_eq!(span(80_000), "1 min 20 s");
        assert_eq!(span(3_725_000), "1 h 02 min");
    }

    #[test]
    fn a_history_in_memory_keeps_rows_and_no_files() {
        let s = Store::memory();
        let a = s.begin(Kind::Ring, 1, "r", 1).unwrap();
        assert_eq!(s.attach(a, Attachment::Snapshot, b"x").unwrap(), None);
        assert_eq!(s.recent(1).unwrap()[0].snapshot, None);
    }
}
