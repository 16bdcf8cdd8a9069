//! The fault matrix (docs/reliability.md, "Faults"): each fault is injected
//! into a real ring or call of the real binary (`doorbell run --events
//! json`), and every one is followed by a normal ring that must work: the
//! viewer answers, decodes pictures, talks, hangs up. For each fault the test
//! prints one row: what the owner sees (events, log lines), how long the
//! doorbell took to recover, and its open file descriptors and threads once
//! idle again, which must be back where they were before the fault.
//!
//! `cargo test --test faults -- --nocapture --test-threads 1` prints the
//! rows (`fault |`) that docs/reliability.md quotes. The camera and the
//! speaker failing are in tests/media_faults.rs (they need a device that
//! fails on cue, which only the library's media seam gives), the network
//! cut in tests/network_faults.rs (it must not run beside other calls).

mod common;
#[path = "common/fake_telegram.rs"]
mod fake_telegram;

use common::cdp;
use common::lab::{event_names, Daemon, Generation, Launch};
use common::live::LiveViewer;
use common::matrix::*;
use common::raw::Raw;
use common::*;
use fake_telegram::{Fail, FakeTelegram};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use doorbell::signaling::protocol::{Message, SessionDescription};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `doorbell serve` as its own process, so that it can be killed.
struct Serve {
    child: Child,
}

impl Serve {
    fn start(port: u16, log: &Path) -> Serve {
        let child = Command::new(env!("CARGO_BIN_EXE_doorbell"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--ice-server", "stun:127.0.0.1:9"])
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < WAIT, "doorbell serve did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Serve { child }
    }

    /// SIGKILL: no goodbye to anyone.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the viewer page shows, and the pictures its current session decoded.
const PAGE: &str = r#"(async () => {
  const d = window.doorbell;
  let frames = 0;
  if (d && d.pc) (await d.pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") frames = s.framesDecoded || 0;
  });
  return { state: d ? d.name : "none", frames, sessions: d ? d.sessions : 0 };
})()"#;

/// Waits until the page is connected with more than `frames` pictures
/// decoded in its current session; what it then shows.
async fn page_connected(page: &mut cdp::Page, frames: u64) -> Value {
    let start = Instant::now();
    loop {
        let p = page.eval(PAGE).await;
        if p["state"] == "connected" && p["frames"].as_u64().unwrap_or(0) > frames {
            return p;
        }
        assert!(start.elapsed() < WAIT, "the page: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Our viewer page (Chromium) keeps its call while `doorbell serve` is
/// killed and restarted: the media never went through the server. Once it
/// is back, the page and the doorbell both join the room again, start a new
/// session, and the page's hang-up reaches the doorbell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_page_keeps_its_call_through_a_server_restart() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let serve_log = dir.path().join("serve.log");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut serve = Serve::start(port, &serve_log);
    let (mut bell, base) = started(&url, dir.path(), "", &Launch::default()).await;
    let pid = bell.pid();

    bell.press();
    let (notified, _) = bell.until("notified").await;
    let browser = cdp::launch(notified["link"].as_str().unwrap());
    let mut page = browser.page("room=").await;
    let before = page_connected(&mut page, 10).await;
    serve.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = page_connected(&mut page, before["frames"].as_u64().unwrap() + 30).await;
    assert_eq!(
        during["sessions"], before["sessions"],
        "the same session: {during}"
    );
    let restarted = Instant::now();
    serve = Serve::start(port, &serve_log);
    let (_, seen) = bell.until("reconnected").await;
    let back = restarted.elapsed();
    let after = page_connected(&mut page, 10).await;
    assert!(
        !event_names(&seen).contains(&"ended".to_string()),
        "the call went on: {seen:?}"
    );
    page.eval("document.getElementById('hangup').click(), true")
        .await;
    let (ended, _) = bell.until("ended").await;
    assert_eq!(
        ended["reason"], "viewer_left",
        "the hang-up reached the doorbell"
    );
    drop(browser);
    normal_ring(&mut bell, &url).await;
    let c = no_leak(pid, base, "server restart under the page").await;
    row(
        "signaling server killed during a call with the viewer page (Chromium), restarted 2 s later",
        &format!(
            "the page stays connected, pictures go on ({} decoded in the 2 s without a server, same session); then {}",
            during["frames"].as_u64().unwrap() - before["frames"].as_u64().unwrap(),
            told(&seen)
        ),
        &format!(
            "both in the room again and a new session up {} after the restart (session {} -> {}); the page's hang-up ended the call viewer_left; {} of the call without a server",
            secs(back),
            before["sessions"],
            after["sessions"],
            secs(restarted - killed)
        ),
        c,
    );
    assert!(bell.stop().success());
    drop(serve);
}

/// The signaling server: unreachable at start-up, killed during a ring,
/// killed during a call; the viewer's browser killed mid-call; SIGTERM
/// during a ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signaling_server_and_the_viewer_die_and_the_doorbell_carries_on() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let serve_log = dir.path().join("serve.log");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");

    // Unreachable at start-up, up 2 s later.
    let mut bell = Daemon::start_exactly(
        tempfile::tempdir().unwrap(),
        &config(&url, dir.path(), ""),
        None,
    );
    let pid = bell.pid();
    bell.wait_log("cannot reach the signaling server").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let up = Instant::now();
    let mut serve = Serve::start(port, &serve_log);
    bell.wait_log("connected to the signaling server").await;
    let recovery = up.elapsed();
    normal_ring(&mut bell, &url).await;
    let base = idle_counts(pid).await;
    row(
        "signaling server unreachable at start-up, up 2 s later",
        "log: cannot reach the signaling server ... retrying with backoff",
        &format!("connected {} after it came up", secs(recovery)),
        base,
    );

    // Killed during a ring, restarted 1 s later.
    let _room = ring(&mut bell).await;
    bell.clear_log();
    serve.kill();
    let killed = Instant::now();
    let (ended, seen) = bell.until("ended").await;
    let to_end = killed.elapsed();
    assert_eq!(ended["reason"], "signaling_lost", "{seen:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restarted = Instant::now();
    serve = Serve::start(port, &serve_log);
    bell.wait_log("connected to the signaling server").await;
    let reconnect = restarted.elapsed();
    normal_ring(&mut bell, &url).await;
    let c = no_leak(pid, base, "server killed during a ring").await;
    row(
        "signaling server killed (SIGKILL) during a ring, restarted 1 s later",
        &format!("{}; log: lost the signaling server", told(&seen)),
        &format!(
            "ring ended {} after the kill; reconnected {} after the restart",
            secs(to_end),
            secs(reconnect)
        ),
        c,
    );

    // Killed during a call: the call goes on peer to peer.
    let room = ring(&mut bell).await;
    let viewer = LiveViewer::join(&url, &room).await;
    bell.until("connected").await;
    viewer.more_frames(10).await;
    serve.kill();
    let killed = Instant::now();
    viewer.more_frames(60).await; // two seconds of pictures without a server
    viewer.more_audio(50).await;
    let restarted = Instant::now();
    serve = Serve::start(port, &serve_log);
    bell.wait_log("connected to the signaling server").await;
    let reconnect = restarted.elapsed();
    viewer.more_frames(30).await;
    // The page hangs up; its `bye` has no room to go to (the room died with
    // the server), so the doorbell ends the call on the silence.
    let hung_up = Instant::now();
    viewer.close().await;
    let (ended, seen) = bell.until("ended").await;
    let to_end = hung_up.elapsed();
    assert!(
        ["media_lost", "media_failed"].contains(&ended["reason"].as_str().unwrap()),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .filter(|e| e["event"] == "error")
            .all(|e| e["what"] == "no media from the viewer"),
        "the call itself was fine: {seen:?}"
    );
    normal_ring(&mut bell, &url).await;
    let c = no_leak(pid, base, "server killed during a call").await;
    row(
        "signaling server killed during a call, restarted 2 s later",
        &format!("nothing: pictures and sound go on; then {}", told(&seen)),
        &format!(
            "no gap in media ({} of pictures after the kill); reconnected {} after the restart; the call ended {} after the viewer hung up",
            secs(restarted - killed),
            secs(reconnect),
            secs(to_end)
        ),
        c,
    );

    // The viewer's browser killed mid-call.
    bell.press();
    let (notified, _) = bell.until("notified").await;
    let mut browser = cdp::launch(notified["link"].as_str().unwrap());
    bell.until("first_media").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    browser.kill();
    let killed = Instant::now();
    let (ended, seen) = bell.until("ended").await;
    let to_end = killed.elapsed();
    assert_eq!(ended["reason"], "media_lost", "{seen:?}");
    drop(browser);
    normal_ring(&mut bell, &url).await;
    let c = no_leak(pid, base, "viewer killed").await;
    row(
        "viewer's browser (Chromium) killed mid-call",
        &told(&seen),
        &format!("ended {} after the kill (media_timeout 3 s)", secs(to_end)),
        c,
    );

    // SIGTERM during a ring: the room is left, the process exits 0.
    let _room = ring(&mut bell).await;
    bell.terminate();
    let signalled = Instant::now();
    let (ended, seen) = bell.until("ended").await;
    assert_eq!(ended["reason"], "shutdown", "{seen:?}");
    let status = bell.wait_exit();
    let exited = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    eprintln!(
        "fault | SIGTERM during a ring | {} | exit 0 {} after the signal | -",
        told(&seen),
        secs(exited)
    );
    assert!(exited < Duration::from_secs(2), "{exited:?}");
    drop(serve);
}

/// `[notify.telegram]` for chat 111 through `tg`, its token in a file in
/// `dir`.
fn telegram_section(tg: &FakeTelegram, dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "[notify.telegram]\nenabled = true\nchat_ids = [111]\ntoken_file = \"{}\"\n\
         api_url = \"{}\"\nretry_for = \"20s\"\nsettle_frames = 0\n",
        token_file.display(),
        tg.url
    )
}

/// Makes the fake Bot API misbehave.
type Inject = fn(&FakeTelegram);

const TOKEN: &str = "424242:fault-matrix-token-AAAAAAAAAAAAAAAAAAAA";

/// A TCP server that accepts connections and never answers: a hanging
/// webhook receiver.
async fn hanging_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// Telegram answering 500, 429 with `retry_after`, and stalling; a webhook
/// that hangs. The visitor's call never waits for any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_failing_and_a_hanging_webhook_never_hold_up_the_call() {
    init_logs();
    let server = test_server().await;
    let tg = FakeTelegram::start(TOKEN).await;
    let hook = hanging_server().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}[[notify.webhook]]\nurl = \"http://{hook}/hook\"\ntimeout = \"2s\"\nretry_for = \"4s\"\n",
        telegram_section(&tg, dir.path())
    );
    let (mut bell, base) = started(&server.url, dir.path(), &extra, &Launch::default()).await;
    let pid = bell.pid();

    let faults: [(&str, Inject); 3] = [
        ("Telegram answers 500 once", |tg| {
            tg.fail("sendPhoto", Fail::api(500, "Internal Server Error"), 1)
        }),
        ("Telegram answers 429 with retry_after 2 once", |tg| {
            tg.fail("sendPhoto", Fail::flood(2), 1)
        }),
        ("Telegram stalls 6 s", |tg| {
            tg.stall("sendPhoto", Duration::from_secs(6))
        }),
    ];
    for (fault, inject) in faults {
        inject(&tg);
        let before = tg.calls_of("sendPhoto").len();
        bell.clear_log();
        bell.press();
        let pressed = Instant::now();
        // The call goes on while the message is retried or held.
        let (_, _) = bell.until("room_created").await;
        let room_after = pressed.elapsed();
        tg.wait_for("sendPhoto", 1, |c| c.message_id.is_some() && c.at > pressed)
            .await;
        let delivered_after = pressed.elapsed();
        let attempts = tg.calls_of("sendPhoto").len() - before;
        let (notified, seen) = bell.until("notified").await;
        let room = room_of(notified["link"].as_str().unwrap());
        let viewer = LiveViewer::join(&server.url, &room).await;
        viewer.more_frames(20).await;
        viewer.leave().await;
        let (ended, _) = bell.until("ended").await;
        assert_eq!(ended["reason"], "viewer_left");
        tg.heal("sendPhoto");
        let log = bell.log();
        let line = log
            .lines()
            .find(|l| l.contains("telegram: ") && l.contains("attempt"))
            .and_then(|l| l.split("telegram: ").nth(1))
            .map(|l| format!("; log: telegram: {l}"))
            .unwrap_or_default();
        assert!(!log.contains(TOKEN), "the token in the log");
        normal_ring(&mut bell, &server.url).await;
        let c = no_leak(pid, base, fault).await;
        row(
            fault,
            &format!("the ring goes on as usual ({}){line}", told(&seen)),
            &format!(
                "room open {} after the press; message delivered {} after it, {attempts} attempt(s)",
                secs(room_after),
                secs(delivered_after)
            ),
            c,
        );
    }

    // The webhook hangs on every ring (it has from the start): each ring's
    // Telegram message still goes at once and the call works.
    bell.clear_log();
    bell.press();
    let pressed = Instant::now();
    let (notified, seen) = bell.until("notified").await;
    let notified_after = pressed.elapsed();
    let room = room_of(notified["link"].as_str().unwrap());
    let sent = tg
        .wait_for("sendPhoto", 1, |c| c.message_id.is_some() && c.at > pressed)
        .await;
    let telegram_after = sent[0].at - pressed;
    // The webhook's attempts take 4.5 s (2 s, 0.5 s, 2 s); `notified` does
    // not wait for them.
    assert!(
        notified_after < Duration::from_secs(4),
        "notified {notified_after:?} after the press"
    );
    let viewer = LiveViewer::join(&server.url, &room).await;
    viewer.more_frames(20).await;
    viewer.leave().await;
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended["reason"], "viewer_left");
    bell.wait_log("webhook").await;
    let line = bell
        .log()
        .lines()
        .find(|l| l.contains("webhook"))
        .map(|l| l.split("WARN").last().unwrap_or(l).trim().to_string())
        .unwrap_or_default();
    normal_ring(&mut bell, &server.url).await;
    let c = no_leak(pid, base, "hanging webhook").await;
    row(
        "a webhook that accepts and never answers",
        &format!("the ring goes on as usual ({}); log: {line}", told(&seen)),
        &format!(
            "Telegram's message went {} and `notified` came {} after the press; the webhook gave up after its retry_for, logged",
            secs(telegram_after),
            secs(notified_after)
        ),
        c,
    );
    assert!(bell.stop().success());
}

/// A tmpfs of `kib` KiB mounted on a fresh directory; unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(kib: u32) -> SmallDisk {
        need_root("mounting a tmpfs");
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "mount a tmpfs (the tests run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The disk where the viewer's voice is written fills up mid-call: the
/// owner is told, the call goes on, and once there is room again the next
/// call is recorded whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_fills_up_under_the_speakers_wav_mid_call() {
    init_logs();
    let server = test_server().await;
    // 512 KiB: 5.5 s of 48 kHz 16-bit mono.
    let disk = SmallDisk::mount(512);
    let (mut bell, base) = started(&server.url, disk.path(), "", &Launch::default()).await;
    let pid = bell.pid();
    // The first call's voice fitted; make room again.
    std::fs::remove_file(disk.path().join("call-1.wav")).unwrap();

    let room = ring(&mut bell).await;
    let viewer = LiveViewer::join(&server.url, &room).await;
    let (_, _) = bell.until("connected").await;
    let talking = Instant::now();
    let (error, _) = bell.until("error").await;
    let full_after = talking.elapsed();
    let what = error["what"].as_str().unwrap().to_string();
    assert!(what.starts_with("speaker:"), "{what}");
    assert!(
        what.contains("No space left on device") || what.contains("os error 28"),
        "{what}"
    );
    // The call goes on: pictures and the door's sound keep coming.
    viewer.more_frames(60).await;
    viewer.more_audio(50).await;
    viewer.leave().await;
    let (ended, seen) = bell.until("ended").await;
    assert_eq!(ended["reason"], "viewer_left", "{seen:?}");
    // The owner makes room; the next call is written whole.
    for f in std::fs::read_dir(disk.path()).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let room = ring(&mut bell).await;
    view_call(
        &server.url,
        &room,
        20,
        (320, 240),
        Duration::from_millis(1500),
        1000.0,
    )
    .await;
    bell.until("ended").await;
    let (rms, hz) = recorded_tone(&wav_of(disk.path(), 3));
    assert!(
        rms > 1000.0 && (hz.unwrap_or(0.0) - 1000.0).abs() < 30.0,
        "{rms} {hz:?}"
    );
    let c = no_leak(pid, base, "disk full").await;
    row(
        "the disk under the speaker's WAV files fills up mid-call",
        &format!(
            "error \"{what}\" {} into the call; the call goes on",
            secs(full_after)
        ),
        "the next call after the owner freed space was recorded whole",
        c,
    );
    assert!(bell.stop().success());
}

/// Bytes free on the file system of `path`.
fn free_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs fills the zeroed struct it is given; `c` outlives the call.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut s), 0);
        s.f_bavail as u64 * s.f_frsize as u64
    }
}

/// The disk under the history fills up while a call is recorded: the
/// recording is given up with an `error` event and a log line, the call and
/// its row are not affected, nothing half-written is left, and once there
/// is room again the next call is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_fills_up_under_a_call_recording() {
    init_logs();
    let server = test_server().await;
    let disk = SmallDisk::mount(1024);
    let wavs = tempfile::tempdir().unwrap();
    let history = disk.path().join("history");
    let extra = format!(
        "\n[record]\ncalls = true\n[history]\ndir = \"{}\"\n",
        history.display()
    );
    let (mut bell, base) = started(&server.url, wavs.path(), &extra, &Launch::default()).await;
    let pid = bell.pid();
    bell.until("recorded").await;
    // Leave 64 KiB: room for the database and the picture, not for 3 s of
    // video at 600 kbit/s.
    let filler = disk.path().join("filler");
    let fill = free_bytes(disk.path()).saturating_sub(64 * 1024);
    std::fs::write(&filler, vec![0u8; fill as usize]).unwrap();

    let room = ring(&mut bell).await;
    view_call(
        &server.url,
        &room,
        60,
        (320, 240),
        Duration::from_millis(2500),
        1000.0,
    )
    .await;
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended["reason"], "viewer_left");
    let (error, seen) = bell.until("error").await;
    let what = error["what"].as_str().unwrap().to_string();
    assert!(what.starts_with("recording:"), "{what}");
    assert!(
        what.contains("No space left on device") || what.contains("os error 28"),
        "{what}"
    );
    assert!(!event_names(&seen).contains(&"recorded".to_string()));
    let stray: Vec<_> = std::fs::read_dir(history.join("media"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");

    // Room again: the next call is recorded.
    std::fs::remove_file(&filler).unwrap();
    normal_ring(&mut bell, &server.url).await;
    let (recorded, _) = bell.until("recorded").await;
    assert!(Path::new(recorded["file"].as_str().unwrap()).exists());
    let c = no_leak(pid, base, "disk full under a recording").await;
    row(
        "the disk under the history fills up during a recorded call",
        &format!("error \"{what}\" when the call ends; the call and its row are kept"),
        "the next call after the owner freed space was recorded",
        c,
    );
    assert!(bell.stop().success());
}

/// libfaketime, which Debian's `faketime` package installs.
fn libfaketime() -> PathBuf {
    for dir in std::fs::read_dir("/usr/lib").unwrap().flatten() {
        let lib = dir.path().join("faketime/libfaketime.so.1");
        if lib.exists() {
            return lib;
        }
    }
    panic!("libfaketime is missing: install Debian's faketime (scripts/test does)");
}

/// The wall clock steps an hour forward during a call (as when NTP first
/// syncs a Pi that has no clock of its own): the call goes on, its timers
/// (on the monotonic clock) are unaffected, and the next ring works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_clock_steps_an_hour_during_a_call() {
    init_logs();
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let launch = Launch {
        prefix: vec![],
        env: vec![
            ("LD_PRELOAD".into(), libfaketime().display().to_string()),
            (
                "FAKETIME_TIMESTAMP_FILE".into(),
                offset.display().to_string(),
            ),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ("FAKETIME_CACHE_DURATION".into(), "1".into()),
        ],
    };
    let tg = FakeTelegram::start(TOKEN).await;
    let extra = format!("max_call = \"30s\"\n{}", telegram_section(&tg, dir.path()));
    let (mut bell, base) = started(&server.url, dir.path(), &extra, &launch).await;
    let pid = bell.pid();

    let room = ring(&mut bell).await;
    let viewer = LiveViewer::join(&server.url, &room).await;
    let (connected, _) = bell.until("connected").await;
    viewer.more_frames(10).await;
    std::fs::write(&offset, "+3600\n").unwrap();
    let stepped = Instant::now();
    // Pictures and sound go on over the step (the 3 s media timeout and
    // the 30 s call limit must not fire).
    viewer.more_frames(150).await;
    viewer.more_audio(200).await;
    viewer.leave().await;
    let (ended, seen) = bell.until("ended").await;
    let in_call = stepped.elapsed();
    assert_eq!(ended["reason"], "viewer_left", "{seen:?}");
    // The step really happened: the daemon's clock is an hour ahead.
    let jump = ended["ts"].as_i64().unwrap() - connected["ts"].as_i64().unwrap();
    assert!(
        (3_600_000..3_700_000).contains(&jump),
        "the events' clock moved {jump} ms"
    );
    // The owner's bot still answers: a command sent now is dated an hour
    // ago by the doorbell's clock, but it came while the bot was listening.
    tg.push_message(111, "/status");
    tg.wait_for("sendMessage", 1, |c| c.str("text").starts_with("Idle."))
        .await;
    bell.wait_log("is the clock wrong").await;
    normal_ring(&mut bell, &server.url).await;
    let c = no_leak(pid, base, "clock step").await;
    row(
        "the wall clock steps +1 h during a call",
        &format!(
            "nothing: the events' ts jump by {} s; {}; the bot answers /status and logs that the clock looks wrong",
            jump / 1000,
            told(&seen)
        ),
        &format!(
            "the call went on {} after the step until the viewer hung up",
            secs(in_call)
        ),
        c,
    );
    assert!(bell.stop().success());
}

/// Turns a Chromium-like offer into one that offers VP8 only for video.
fn vp8_only(offer: &str) -> String {
    let h264: Vec<String> = offer
        .lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter(|l| l.contains("H264/") || l.contains("rtx/"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    let mut out = String::new();
    for line in offer.lines() {
        let pt_of = |prefix: &str| {
            line.strip_prefix(prefix)
                .and_then(|r| r.split([' ', ':']).next())
                .map(str::to_string)
        };
        let pt = pt_of("a=rtpmap:")
            .or_else(|| pt_of("a=fmtp:"))
            .or_else(|| pt_of("a=rtcp-fb:"));
        if pt.is_some_and(|p| h264.contains(&p)) {
            continue;
        }
        if line.starts_with("m=video") {
            let kept: Vec<&str> = line
                .split(' ')
                .enumerate()
                .filter(|(i, w)| *i < 3 || !h264.iter().any(|p| p == w))
                .map(|(_, w)| w)
                .collect();
            out.push_str(&kept.join(" "));
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

/// Garbage, empty, VP8-only and 1 MB offers through the original design's
/// server (python-socketio 4 relays anything up to 100 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_offers_end_the_ring_with_a_reason_and_the_next_ring_works() {
    init_logs();
    let server = lab_server(Generation::Sio4);
    let dir = tempfile::tempdir().unwrap();
    let (mut bell, base) = started(
        &server.url,
        dir.path(),
        "offer_timeout = \"3s\"\n",
        &Launch::default(),
    )
    .await;
    let pid = bell.pid();

    let (peer, _streams, real) = bare_offer().await;
    peer.close().await;
    let huge = format!(
        "{real}{}",
        "a=x-padding:0123456789abcdef0123456789abcdef0123456789abcdef\r\n".repeat(17_000)
    );
    assert!(huge.len() > 1_000_000);
    let offers = [
        (
            "garbage offer",
            "\u{1}\u{2}not an SDP at all \u{fffd}".to_string(),
        ),
        ("empty offer", String::new()),
        ("VP8-only offer", vp8_only(&real)),
        ("1 MB offer", huge),
    ];
    for (fault, sdp) in offers {
        let room = ring(&mut bell).await;
        bell.clear_log();
        let mut viewer = ViewerSignaling::connect(&server.url).await;
        viewer.send(Message::Join(room.clone())).await;
        assert_eq!(viewer.next().await, Message::Joined(room.clone()));
        let sent = Instant::now();
        if fault == "VP8-only offer" {
            // No video codec in common: a call with sound only, which the
            // viewer takes and then hangs up.
            let (peer, mut streams, offer) = bare_offer().await;
            viewer
                .send(Message::Invite(SessionDescription::offer(vp8_only(&offer))))
                .await;
            let Message::Ok(answer) = viewer.next().await else {
                panic!("no answer to the VP8-only offer")
            };
            peer.accept(&answer.sdp).await.unwrap();
            for _ in 0..25 {
                tokio::time::timeout(WAIT, streams.audio.recv())
                    .await
                    .expect("the door's sound")
                    .expect("audio open");
            }
            viewer.send(Message::Bye(Some(room.clone()))).await;
            peer.close().await;
        } else {
            viewer
                .send(Message::Invite(SessionDescription::offer(sdp)))
                .await;
        }
        let (ended, seen) = bell.until("ended").await;
        let to_end = sent.elapsed();
        let reason = ended["reason"].as_str().unwrap().to_string();
        if fault == "VP8-only offer" {
            assert_eq!(reason, "viewer_left", "{fault}: {seen:?}");
        } else {
            // Too big for the doorbell's signaling client, which drops the
            // connection (and reconnects) rather than take it in.
            assert!(
                ["answer_failed", "no_offer", "signaling_lost"].contains(&reason.as_str()),
                "{fault}: {seen:?}"
            );
        }
        drop(viewer);
        if reason == "signaling_lost" {
            // Back on the server before the next press ("reconnected to
            // the signaling server" once the log has caught up).
            bell.wait_log("connected to the signaling server").await;
        }
        let warn = bell
            .log()
            .lines()
            .find_map(|l| l.split_once(" WARN ").map(|(_, w)| w.to_string()))
            .map(|l| l.chars().take(200).collect::<String>())
            .unwrap_or_default();
        normal_ring(&mut bell, &server.url).await;
        let c = no_leak(pid, base, fault).await;
        row(
            fault,
            &format!("{}; log: {warn}", told(&seen)),
            &format!("ended {} after the offer ({reason})", secs(to_end)),
            c,
        );
    }
    assert!(bell.stop().success());
}

/// Malformed Socket.IO frames relayed by the original design's server
/// (python-socketio 5 passes any payload on): wrong types, missing fields,
/// junk JSON, unknown events, in the middle of a ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_signaling_frames_are_logged_and_the_ring_goes_on() {
    init_logs();
    let server = lab_server(Generation::Sio5);
    let dir = tempfile::tempdir().unwrap();
    let (mut bell, base) = started(&server.url, dir.path(), "", &Launch::default()).await;
    let pid = bell.pid();

    let room = ring(&mut bell).await;
    bell.clear_log();
    let addr: SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let (mut raw, connect) = Raw::handshake(addr, [127, 0, 0, 1])
        .await
        .expect("connected");
    assert!(connect.starts_with("40"), "{connect}");
    raw.send(&format!("42[\"join\",\"{room}\"]")).await;
    let frames = [
        "42[\"invite\",42]".to_string(),
        "42[\"invite\",{\"type\":\"offer\"}]".into(),
        "42[\"invite\",{\"type\":\"answer\",\"sdp\":\"v=0\"}]".into(),
        "42[\"invite\",\"v=0\\r\\n\"]".into(),
        "42[\"ice_candidate\",[1,2,3]]".into(),
        "42[\"ice_candidate\",{\"candidate\":null}]".into(),
        "42[\"ok\",null]".into(),
        "42[\"bye\",{\"room\":[]}]".into(),
        "42[\"no_such_event\",\"x\"]".into(),
        format!("42[\"invite\",{}{}]", "[".repeat(300), "]".repeat(300)),
        "42[\"invite\",{\"type\":\"offer\",\"sdp\":".into(),
        format!("42[\"invite\",\"{}\"]", "\\u0000".repeat(1000)),
    ];
    let sent = Instant::now();
    for f in &frames {
        raw.send(f).await;
    }
    // The doorbell logs each and waits for a real offer: the same page's
    // proper offer after all that still gets its call.
    bell.wait_log("malformed").await;
    let logged = sent.elapsed();
    let (peer, mut streams, offer) = bare_offer().await;
    let invite = serde_json::json!(["invite", {"type": "offer", "sdp": offer}]);
    raw.send(&format!("42{invite}")).await;
    let answer = loop {
        let text = raw.next_text().await.expect("an answer to the offer");
        if let Some(v) = text
            .strip_prefix("42")
            .and_then(|j| serde_json::from_str::<Value>(j).ok())
        {
            if v[0] == "ok" {
                break v[1]["sdp"].as_str().unwrap().to_string();
            }
        }
    };
    peer.accept(&answer).await.unwrap();
    for _ in 0..20 {
        tokio::time::timeout(WAIT, streams.video.recv())
            .await
            .expect("pictures after the malformed frames")
            .expect("video open");
    }
    raw.send(&format!("42[\"bye\",\"{room}\"]")).await;
    peer.close().await;
    let malformed = bell
        .log()
        .lines()
        .filter(|l| l.contains("malformed"))
        .count();
    let (ended, seen) = bell.until("ended").await;
    assert_eq!(ended["reason"], "viewer_left", "{seen:?}");
    normal_ring(&mut bell, &server.url).await;
    let c = no_leak(pid, base, "malformed frames").await;
    row(
        &format!("{} malformed signaling frames mid-ring", frames.len()),
        &format!("{malformed} log lines \"malformed ...\"; {}", told(&seen)),
        &format!(
            "first logged {} after; the ring went on and was answered",
            secs(logged)
        ),
        c,
    );
    assert!(bell.stop().success());
}
