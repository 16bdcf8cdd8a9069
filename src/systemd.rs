//! The systemd service protocol (`Type=notify`), without a library: one
//! datagram per message to the socket named by `$NOTIFY_SOCKET` (a path, or an
//! abstract socket when it starts with `@`). Nothing happens when the variable
//! is absent (a terminal, a test), so callers need not care where they run.
//!
//! What the daemon sends (see `cmd::run`): `READY=1` once it is up, `STATUS=`
//! lines as its state changes (shown by `systemctl status doorbell`),
//! `WATCHDOG=1` every half `WatchdogSec=` for as long as the call loop
//! answers, and `STOPPING=1` when it begins to shut down.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Where to send, if systemd is listening.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: NotifySocket,
}

#[derive(Debug, Clone)]
enum NotifySocket {
    Path(PathBuf),
    /// Linux abstract namespace, without the leading `@`.
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; `None` when not started by systemd as
    /// `Type=notify`.
    pub fn from_env() -> Option<Notifier> {
        let raw = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(raw.as_os_str()).to_vec();
        let socket = match bytes.first() {
            Some(b'@') => NotifySocket::Abstract(bytes[1..].to_vec()),
            Some(b'/') => NotifySocket::Path(PathBuf::from(raw)),
            _ => {
                tracing::warn!(
                    "NOTIFY_SOCKET is neither a path nor an abstract socket; not notifying systemd"
                );
                return None;
            }
        };
        Some(Notifier { socket })
    }

    /// Sends one message (`READY=1`, `STATUS=...`; several `KEY=VALUE` lines
    /// may go in one message).
    pub fn send(&self, message: &str) -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        match &self.socket {
            NotifySocket::Path(p) => sock.send_to(message.as_bytes(), p).map(drop),
            NotifySocket::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(message.as_bytes(), &addr).map(drop)
            }
        }
    }

    /// Sends, logging (once per kind of message) instead of failing: a
    /// missing notification must never stop the doorbell.
    pub fn tell(&self, message: &str) {
        if let Err(e) = self.send(message) {
            tracing::debug!("cannot notify systemd ({message:?}): {e}");
        }
    }
}

/// The watchdog period systemd expects pings within (`WatchdogSec=`), when
/// it is meant for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// The directory systemd gives the service in `var` (`RUNTIME_DIRECTORY=`,
/// `STATE_DIRECTORY=`): it may pass several, colon-separated; the first is
/// ours.
pub fn directory(var: &str) -> Option<PathBuf> {
    let dirs = std::env::var_os(var).filter(|d| !d.is_empty())?;
    let first = dirs.to_string_lossy().split(':').next()?.to_string();
    Some(PathBuf::from(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_on_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: NotifySocket::Path(path),
        };
        n.send("READY=1\nSTATUS=idle").unwrap();
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=idle");
    }

    #[test]
    fn messages_arrive_on_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("doorbell-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier {
            socket: NotifySocket::Abstract(name.into_bytes()),
        };
        n.send("WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn a_missing_listener_is_an_error_not_a_panic() {
        let n = Notifier {
            socket: NotifySocket::Path("/nonexistent/notify".into()),
        };
        assert!(n.send("READY=1").is_err());
        n.tell("READY=1");
    }
}
