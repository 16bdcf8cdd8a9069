//! The press-to-phone benchmark behind `scripts/bench-ring` and
//! `docs/performance.md`: how long after a press the Telegram photo request
//! leaves the doorbell.
//!
//! Runs the real binaries as separate processes (`doorbell serve`, and
//! `doorbell run --events json` with the test pattern and Telegram on) against
//! the fake Bot API of the tests (`tests/common/fake_telegram.rs`, in this
//! process on 127.0.0.1), presses the button `--presses` times on the
//! doorbell's standard input, and measures for each press, from the moment
//! just before the newline is written:
//!
//! - press -> photo: the `sendPhoto` request complete at the fake API (the
//!   time it recorded, after reading the whole upload);
//! - press -> ringing and press -> room_created: the events, as read from the
//!   doorbell's standard output;
//! - the picture: the time the doorbell logs for taking it (camera opened,
//!   `--settle-frames` frames thrown away, JPEG encoded; debug line of
//!   `doorbell::media::ring_picture`).
//!
//! Nobody answers: each ring ends `unanswered` after `call.viewer_join_timeout`
//! (1 s), and the next press waits until the missed-call follow-up has been
//! edited in, so that no Telegram traffic of one ring overlaps the next.
//!
//! With `--voicemail SECONDS` the voicemail is on (no prompt) and each press
//! is also timed to its `sendVideo` request complete at the fake API.
//!
//! Usage: cargo bench --bench ring -- [--presses 20] [--settle-frames 5] [--size 640x480] [--fps 30] [--source testsrc] [--binary target/release/doorbell] [--voicemail 20]

#[path = "../tests/common/fake_telegram.rs"]
mod fake_telegram;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_telegram::FakeTelegram;
use tokio::sync::mpsc;

const TOKEN: &str = "123456:BENCH-TOKEN-abcdefghijklmnop";
const CHAT: i64 = 111;
/// Every wait for the doorbell is bounded by this.
const WAIT: Duration = Duration::from_secs(20);

struct Args {
    presses: usize,
    settle_frames: usize,
    width: u32,
    height: u32,
    fps: u32,
    /// `video.source`: `testsrc`, or a real camera (`v4l2:/dev/video0`).
    source: String,
    binary: String,
    /// With `[voicemail]` on, this long a message: press -> sendVideo too.
    voicemail: Option<u64>,
}

fn args() -> Args {
    let mut a = Args {
        presses: 20,
        settle_frames: 5,
        width: 640,
        height: 480,
        fps: 30,
        source: "testsrc".into(),
        binary: "target/release/doorbell".into(),
        voicemail: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut value = |what: &str| it.next().unwrap_or_else(|| panic!("{k} {what}"));
        match k.as_str() {
            "--presses" => a.presses = value("N").parse().expect("--presses N"),
            "--settle-frames" => a.settle_frames = value("N").parse().expect("--settle-frames N"),
            "--fps" => a.fps = value("N").parse().expect("--fps N"),
            "--binary" => a.binary = value("PATH"),
            "--source" => a.source = value("SOURCE"),
            "--voicemail" => {
                a.voicemail = Some(value("SECONDS").parse().expect("--voicemail SECONDS"))
            }
            "--size" => {
                let v = value("WxH");
                let (w, h) = v.split_once('x').expect("--size WxH");
                a.width = w.parse().unwrap();
                a.height = h.parse().unwrap();
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a child we started; SIGTERM lets it stop cleanly.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `median X ms, p90 Y ms, max Z ms` of `ms`.
fn summary(ms: &[f64]) -> String {
    let mut sorted = ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    format!(
        "median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.9),
        sorted[sorted.len() - 1]
    )
}

/// `171.23ms` or `1.2s` (a `Duration`'s `Debug`) in milliseconds.
fn debug_duration_ms(text: &str) -> Option<f64> {
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic() || c == 'µ')
        .map(|i| text.split_at(i))?;
    let n: f64 = number.parse().ok()?;
    match unit {
        "ms" => Some(n),
        "s" => Some(n * 1000.0),
        "µs" => Some(n / 1000.0),
        "ns" => Some(n / 1e6),
        _ => None,
    }
}

/// Waits until the fake API has seen `n` requests of `method`.
async fn until_calls(tg: &FakeTelegram, method: &str, n: usize) -> Vec<fake_telegram::Call> {
    let start = Instant::now();
    loop {
        let calls = tg.calls_of(method);
        if calls.len() >= n {
            return calls;
        }
        assert!(
            start.elapsed() < WAIT,
            "{method}: {} of {n} requests in {WAIT:?}",
            calls.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let _server = Killed(
        Command::new(&a.binary)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--log",
                "warn",
            ])
            .stderr(Stdio::null())
            .spawn()
            .expect("doorbell serve starts (build with cargo build --release first)"),
    );
    let tg = FakeTelegram::start(TOKEN).await;
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[signaling]\nurl = \"{url}\"\n[ice]\nservers = []\ninclude_loopback = true\n\
             [call]\nviewer_join_timeout = \"1s\"\n\
             [video]\nsource = \"{}\"\nwidth = {}\nheight = {}\nfps = {}\n\
             [audio]\nmicrophone = \"tone\"\nspeaker = \"none\"\n\
             [control]\nenabled = false\n\
             [history]\ndir = \"{}\"\n\
             [notify.telegram]\nenabled = true\nchat_ids = [{CHAT}]\napi_url = \"{}\"\n\
             settle_frames = {}\n{}",
            a.source,
            a.width,
            a.height,
            a.fps,
            dir.path().join("history").display(),
            tg.url,
            a.settle_frames,
            match a.voicemail {
                Some(n) =>
                    format!("[voicemail]\nenabled = true\nseconds = \"{n}s\"\nprompt = \"none\"\n"),
                None => String::new(),
            },
        ),
    )
    .unwrap();
    let mut bell = Command::new(&a.binary)
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--events",
            "json",
        ])
        .env("DOORBELL_TELEGRAM_TOKEN", TOKEN)
        .env("RUST_LOG", "warn,doorbell::media::ring_picture=debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("doorbell run starts");
    let mut stdin = bell.stdin.take().unwrap();
    let (event_tx, mut events) = mpsc::unbounded_channel::<(Instant, serde_json::Value)>();
    let stdout = bell.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = event_tx.send((Instant::now(), v));
            }
        }
    });
    // The picture times the doorbell logs, in order; other lines go on to
    // our standard error.
    let pictures = Arc::new(Mutex::new(Vec::<f64>::new()));
    let stderr = bell.stderr.take().unwrap();
    let found = pictures.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            match line
                .contains("ring picture")
                .then(|| line.rsplit(" in ").next())
            {
                Some(Some(d)) => found.lock().unwrap().extend(debug_duration_ms(d.trim())),
                _ => eprintln!("{line}"),
            }
        }
    });
    let _bell = Killed(bell);

    // The bot checks its token at start: the doorbell is up once it has, and
    // its signaling connection is tried by a first press that must ring.
    until_calls(&tg, "getMe", 1).await;
    let mut photo = Vec::new();
    let mut ringing = Vec::new();
    let mut room = Vec::new();
    let mut video = Vec::new();
    let mut after_end = Vec::new();
    let mut presses = 0;
    while photo.len() < a.presses {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let photos_before = tg.calls_of("sendPhoto").len();
        let edits_before = tg.calls_of("editMessageCaption").len();
        let videos_before = tg.calls_of("sendVideo").len();
        let pressed = Instant::now();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
        presses += 1;
        let (mut rang, mut created, mut reason) = (None, None, None);
        let mut ended_at = pressed;
        while reason.is_none() {
            let (at, e) = tokio::time::timeout(WAIT, events.recv())
                .await
                .expect("the doorbell's events")
                .expect("the doorbell runs");
            match e["event"].as_str() {
                Some("ringing") => rang = Some(at - pressed),
                Some("room_created") => created = Some(at - pressed),
                Some("ended") => {
                    ended_at = at;
                    reason = e["reason"].as_str().map(str::to_string)
                }
                _ => {}
            }
        }
        if reason.as_deref() != Some("unanswered") {
            // Not connected to the server yet (the first press): again.
            assert!(presses < 10, "rings end {reason:?}, not unanswered");
            continue;
        }
        let sent = until_calls(&tg, "sendPhoto", photos_before + 1).await;
        let at = sent[photos_before].at;
        // The missed-call edit: the last Telegram request of this ring.
        until_calls(&tg, "editMessageCaption", edits_before + 1).await;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        if a.voicemail.is_some() {
            let sent = until_calls(&tg, "sendVideo", videos_before + 1).await;
            video.push(ms(sent[videos_before].at - pressed));
            after_end.push(ms(sent[videos_before].at - ended_at));
        }
        photo.push(ms(at - pressed));
        ringing.push(ms(rang.expect("a ringing event")));
        room.push(ms(created.expect("a room_created event")));
        eprintln!(
            "press {:2}: ringing {:6.1} ms, room_created {:6.1} ms, sendPhoto at the API {:6.1} ms",
            photo.len(),
            ringing[ringing.len() - 1],
            room[room.len() - 1],
            photo[photo.len() - 1]
        );
    }
    let pictures = pictures.lock().unwrap().clone();
    // The pictures of the presses counted (a press that did not ring took
    // none, or one that came before any of these).
    let pictures = &pictures[pictures.len().saturating_sub(a.presses)..];

    println!(
        "presses: {} ({} {}x{}@{}, settle_frames {})",
        photo.len(),
        a.source,
        a.width,
        a.height,
        a.fps,
        a.settle_frames
    );
    println!("press -> sendPhoto at the API: {}", summary(&photo));
    println!("press -> ringing event: {}", summary(&ringing));
    println!("press -> room_created event: {}", summary(&room));
    if !pictures.is_empty() {
        println!("ring picture taken in: {}", summary(pictures));
    }
    if let Some(n) = a.voicemail {
        println!(
            "press -> sendVideo (voicemail) at the API: {}",
            summary(&video)
        );
        // The clip's pre-roll (up to 2 s before the ring ended) counts in
        // its n s, so the video leaves less than n s after the end.
        println!(
            "ring ended -> sendVideo at the API ({n} s clip, pre-roll included): {}",
            summary(&after_end)
        );
    }
    let all: Vec<String> = photo.iter().map(|ms| format!("{ms:.0}")).collect();
    println!("every press -> sendPhoto, ms: {}", all.join(" "));
}
