//! The control socket: a Unix socket on which `doorbell ring` (and scripts)
//! press the button of a running daemon.
//!
//! Protocol: one command per line, one reply line per command.
//! `ring` -> `ringing ROOM` | `busy: ...` | `failed: ...`;
//! `live` -> `live LINK` (a live view: no chime, nobody notified) | `busy: ...` | `failed: ...`;
//! `hangup` -> `hanging up` | `no call to hang up`;
//! `status` -> a JSON object (`state`, `room`, `calls`, `signaling_up`, `uptime_s`).
//! Unknown commands get `error: ...`. The socket is created mode 0660 so a
//! group (e.g. `doorbell`) can be allowed to ring.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::call::command::Command;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("another doorbell is already listening on {0}")]
    InUse(PathBuf),
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no doorbell is listening on {path} ({source}); is `doorbell run` started, with the same control socket?")]
    NotRunning {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the doorbell did not answer within 10 s")]
    Timeout,
}

/// Binds the socket, replacing a stale one left by a crash.
pub async fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ControlError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    Ok(listener)
}

/// Serves the socket until `cancel`; removes it on the way out, unless it
/// is no longer the socket this listener was bound to: the daemon's main
/// task may end before this one, and a doorbell started right after (a
/// restart in the same process, the tests) binds the same path; its socket
/// must not be taken away.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    commands: mpsc::Sender<Command>,
    cancel: CancellationToken,
) {
    let ours = socket_identity(&path);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(client(stream, commands.clone()));
                }
                Err(e) => {
                    tracing::warn!("control socket accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    if ours.is_some() && socket_identity(&path) == ours {
        let _ = std::fs::remove_file(&path);
    }
}

/// Device, inode and change time of the file at `path` (an inode number
/// freed by a removal may be given to the next file at once).
fn socket_identity(path: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

async fn client(stream: UnixStream, commands: mpsc::Sender<Command>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    // One command per line; bounded so a stuck client cannot pile up work.
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await
    {
        let reply = handle(line.trim(), &commands).await;
        if write
            .write_all(format!("{reply}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn handle(line: &str, commands: &mpsc::Sender<Command>) -> String {
    const STOPPING: &str = "error: the doorbell is stopping";
    match line {
        "ring" => {
            let (tx, rx) = oneshot::channel();
            if commands
                .send(Command::Ring { reply: Some(tx) })
                .await
                .is_err()
            {
                return STOPPING.into();
            }
            rx.await.map_or_else(|_| STOPPING.into(), |r| r.to_string())
        }
        "live" => {
            let (tx, rx) = oneshot::channel();
            if commands
                .send(Command::Live { reply: Some(tx) })
                .await
                .is_err()
            {
                return STOPPING.into();
            }
            rx.await.map_or_else(|_| STOPPING.into(), |r| r.to_string())
        }
        "hangup" => {
            let (tx, rx) = oneshot::channel();
            if commands
                .send(Command::Hangup { reply: Some(tx) })
                .await
                .is_err()
            {
                return STOPPING.into();
            }
            rx.await.map_or_else(|_| STOPPING.into(), |r| r.to_string())
        }
        "status" => {
            let (stx, srx) = oneshot::channel();
            if commands.send(Command::Status { reply: stx }).await.is_err() {
                return STOPPING.into();
            }
            match srx.await {
                Ok(status) => {
                    serde_json::to_string(&status).unwrap_or_else(|e| format!("error: {e}"))
                }
                Err(_) => STOPPING.into(),
            }
        }
        other => format!(
            "error: unknown command {:?} (known: ring, live, hangup, status)",
            other.chars().take(40).collect::<String>()
        ),
    }
}

/// Client side: sends one command to a running daemon and returns its reply.
pub async fn request(path: &Path, command: &str) -> Result<String, ControlError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::NotRunning {
            path: path.to_path_buf(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    write
        .write_all(format!("{command}\n").as_bytes())
        .await
        .map_err(io)?;
    let mut lines = BufReader::new(read).lines();
    match tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await {
        Ok(Ok(Some(reply))) => Ok(reply),
        Ok(Ok(None)) => Err(io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed without a reply",
        ))),
        Ok(Err(e)) => Err(io(e)),
        Err(_) => Err(ControlError::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::command::{HangupReply, RingReply};

    #[tokio::test]
    async fn commands_round_trip_and_unknown_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let listener = bind(&path).await.unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        tokio::spawn(serve(listener, path.clone(), tx, cancel.clone()));
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                match c {
                    Command::Ring { reply: Some(r) } => {
                        let _ = r.send(RingReply::Ringing { room: "abc".into() });
                    }
                    Command::Hangup { reply: Some(r) } => {
                        let _ = r.send(HangupReply::NoCall);
                    }
                    _ => {}
                }
            }
        });
        assert_eq!(request(&path, "ring").await.unwrap(), "ringing abc");
        assert_eq!(
            request(&path, "hangup").await.unwrap(),
            "no call to hang up"
        );
        assert!(request(&path, "explode")
            .await
            .unwrap()
            .starts_with("error: unknown command"));
        // A second daemon on the same socket is refused, not allowed to steal it.
        assert!(matches!(bind(&path).await, Err(ControlError::InUse(_))));
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_stale_socket_from_a_crash_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        bind(&path).await.unwrap();
    }

    #[tokio::test]
    async fn a_daemon_that_stops_late_leaves_the_next_ones_socket_alone() {
        // tests/owner.rs once failed on this: the old daemon's control task
        // removed the socket the next daemon had just bound.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let old = bind(&path).await.unwrap();
        drop(old);
        let (tx, _rx) = mpsc::channel(4);
        // The old listener's task starts serving, the file is replaced by the
        // next daemon's socket, then the old task is told to stop.
        let stale = UnixListener::bind(dir.path().join("other.sock")).unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(stale, path.clone(), tx.clone(), cancel.clone()));
        tokio::task::yield_now().await;
        std::fs::remove_file(&path).unwrap();
        let next = bind(&path).await.unwrap();
        cancel.cancel();
        task.await.unwrap();
        assert!(path.exists(), "the next daemon's socket is still there");
        // Its own socket is removed on the way out.
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(next, path.clone(), tx, cancel.clone()));
        tokio::task::yield_now().await;
        cancel.cancel();
        task.await.unwrap();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn ringing_nobody_says_how_to_fix_it() {
        let e = request(Path::new("/nonexistent/doorbell.sock"), "ring")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("doorbell run"), "{e}");
    }
}
