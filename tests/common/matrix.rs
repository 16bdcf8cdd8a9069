//! The fault matrix's common parts (tests/faults.rs, tests/network_faults.rs):
//! the doorbell binary started and rung once for a baseline, a normal ring
//! after each fault, the leak check on its fds and threads, one printed row
//! per fault.

use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

use doorbell::peer::viewer::{ViewerPeer, ViewerStreams};
use doorbell::peer::PeerSettings;

use super::lab::{event_names, Daemon, Generation, LabServer, LabServerOptions, Launch};
use super::{room_of, view_call};

/// A process's resident memory, open file descriptors and threads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counts {
    pub rss_kb: u64,
    pub fds: usize,
    pub threads: usize,
}

/// Reads [`Counts`] of `pid` from /proc.
pub fn counts(pid: u32) -> Counts {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Counts {
        rss_kb: field("VmRSS:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count(),
        threads: field("Threads:") as usize,
    }
}

/// The idle doorbell's counts once the last call's teardown has finished
/// (its threads and sockets close in the background).
pub async fn idle_counts(pid: u32) -> Counts {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    counts(pid)
}

/// Waits until the doorbell is back to `base` or below; panics with what
/// stayed open.
pub async fn no_leak(pid: u32, base: Counts, fault: &str) -> Counts {
    let start = Instant::now();
    loop {
        let c = counts(pid);
        if c.fds <= base.fds && c.threads <= base.threads {
            return c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{fault}: {base:?} before, still {c:?} 30 s after\nfds: {:?}",
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One row of the matrix, on standard error.
pub fn row(fault: &str, sees: &str, recovery: &str, c: Counts) {
    eprintln!(
        "fault | {fault} | {sees} | {recovery} | {} fds, {} threads",
        c.fds, c.threads
    );
}

pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// A doorbell config for these tests: loopback, small pictures, a tone,
/// the viewer's voice into `wavs`, a 3 s media timeout; `extra` appended
/// (bare keys in it belong to `[call]`).
pub fn config(url: &str, wavs: &Path, extra: &str) -> String {
    format!(
        "[signaling]\nurl = \"{url}\"\nreconnect_max = \"1s\"\n\
         [ice]\nservers = []\ninclude_loopback = true\n\
         [video]\nwidth = 320\nheight = 240\nfps = 30\nbitrate_kbps = 600\n\
         [audio]\nmicrophone = \"tone:440\"\nspeaker = \"wav:{}\"\n\
         [chime]\nsound = \"none\"\n\
         [button]\nsources = [\"stdin\"]\n\
         [control]\nenabled = false\n\
         [notify]\nstdout = false\n\
         [call]\nmedia_timeout = \"3s\"\n\
         {extra}",
        wavs.join("call-{call}.wav").display()
    )
}

/// A press answered by the test viewer: pictures, talk, hang-up. The
/// doorbell must report `viewer_left`.
pub async fn normal_ring(bell: &mut Daemon, url: &str) {
    bell.press();
    let (notified, _) = bell.until("notified").await;
    let room = room_of(notified["link"].as_str().unwrap());
    let report = view_call(
        url,
        &room,
        20,
        (320, 240),
        Duration::from_millis(600),
        1000.0,
    )
    .await;
    assert!(report.decoded_frames >= 20, "{report:?}");
    let (ended, seen) = bell.until("ended").await;
    assert_eq!(
        ended["reason"],
        "viewer_left",
        "the ring after the fault: {:?}",
        event_names(&seen)
    );
}

/// Starts the doorbell (through `launch`) on the server at `url` with
/// `config(url, wavs, extra)`, rings it once normally, and returns it with
/// its idle counts: the baseline that every fault is checked against.
pub async fn started(url: &str, wavs: &Path, extra: &str, launch: &Launch) -> (Daemon, Counts) {
    let mut bell = Daemon::start_launched(
        tempfile::tempdir().unwrap(),
        &config(url, wavs, extra),
        None,
        launch,
    );
    bell.wait_log("connected to the signaling server").await;
    normal_ring(&mut bell, url).await;
    let base = idle_counts(bell.pid()).await;
    (bell, base)
}

/// The original design's server (tests/lab/server.py) of `generation`.
pub fn lab_server(generation: Generation) -> LabServer {
    LabServer::start(LabServerOptions {
        generation,
        tls: None,
        polling_only: false,
        backend: "aiohttp",
    })
}

/// An offer like our test viewer's, its peer and streams, for tests that
/// send it their own way.
pub async fn bare_offer() -> (ViewerPeer, ViewerStreams, String) {
    ViewerPeer::offer(
        &PeerSettings {
            include_loopback: true,
            ..Default::default()
        },
        Default::default(),
        Duration::from_secs(3),
    )
    .await
    .unwrap()
}

/// Presses and waits for the link; the room.
pub async fn ring(bell: &mut Daemon) -> String {
    bell.press();
    let (notified, _) = bell.until("notified").await;
    room_of(notified["link"].as_str().unwrap())
}

/// Events of `seen` with what they say, for the matrix.
pub fn told(seen: &[Value]) -> String {
    seen.iter()
        .filter(|e| {
            !["notified", "ringing", "first_media"].contains(&e["event"].as_str().unwrap_or(""))
        })
        .map(|e| match (&e["reason"], &e["what"]) {
            (Value::String(r), _) => format!("{} {r}", e["event"].as_str().unwrap_or("?")),
            (_, Value::String(w)) => format!("{} \"{w}\"", e["event"].as_str().unwrap_or("?")),
            _ => e["event"].as_str().unwrap_or("?").to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Network namespaces and mounts need root; say so rather than fail on a
/// cryptic `ip` or `mount` error.
pub fn need_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "{what} needs root: run scripts/test as root or with sudo"
    );
}
