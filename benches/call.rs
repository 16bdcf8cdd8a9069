//! The call benchmark behind `scripts/bench-call` and `docs/performance.md`.
//!
//! Runs the real binaries as separate processes (`doorbell serve`, and
//! `doorbell run --events json` with the test pattern), plays the viewer
//! in-process with the library's webrtc-rs viewer, and measures:
//!
//! - press -> link: a newline on the doorbell's stdin to its `notified` event;
//! - join -> first frame: the viewer's `join` to its first decoded picture;
//! - glass-to-glass: capture stamp in each decoded picture against the clock
//!   when it was decoded (one machine, one clock);
//! - doorbell CPU seconds per call-second, between the first decoded picture
//!   and the end of the measured window (/proc/PID/stat);
//! - doorbell peak RSS (VmHWM at the end).
//!
//! Usage: cargo bench --bench call -- [--seconds 30] [--size 640x480] [--fps 30] [--binary target/release/doorbell]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use doorbell::media::h264::H264Decoder;
use doorbell::media::{stamp, unix_ms};
use doorbell::peer::viewer::{ViewerOptions, ViewerPeer};
use doorbell::peer::PeerSettings;
use doorbell::signaling::client::{ClientSettings, SocketIoSignaling};
use doorbell::signaling::protocol::{Message, SessionDescription};
use doorbell::signaling::{Signaling, SignalingEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Args {
    seconds: u64,
    width: u32,
    height: u32,
    fps: u32,
    binary: String,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 30,
        width: 640,
        height: 480,
        fps: 30,
        binary: "target/release/doorbell".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds N"),
            "--fps" => a.fps = it.next().and_then(|v| v.parse().ok()).expect("--fps N"),
            "--binary" => a.binary = it.next().expect("--binary PATH"),
            "--size" => {
                let v = it.next().expect("--size WxH");
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
        // SAFETY: kill(2) on a child we started; SIGTERM lets it hang up cleanly.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process alive");
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields[11].parse().unwrap();
    let stime: f64 = fields[12].parse().unwrap();
    (utime + stime) / clock_ticks()
}

fn status_kb(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
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
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[signaling]\nurl = \"{url}\"\n[ice]\nservers = []\ninclude_loopback = true\n\
             [video]\nsource = \"testsrc\"\nwidth = {}\nheight = {}\nfps = {}\nbitrate_kbps = 1000\n\
             [audio]\nmicrophone = \"tone\"\nspeaker = \"none\"\n\
             [control]\nsocket = \"{}\"\n[log]\nlevel = \"warn\"\n",
            a.width,
            a.height,
            a.fps,
            dir.path().join("c.sock").display()
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
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("doorbell run starts");
    let pid = bell.id();
    let mut stdin = bell.stdin.take().unwrap();
    let (line_tx, mut lines) = mpsc::unbounded_channel::<(Instant, serde_json::Value)>();
    let stdout = bell.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = line_tx.send((Instant::now(), v));
            }
        }
    });
    let _bell = Killed(bell);

    // Wait for the doorbell to reach the server, then press.
    let link = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let pressed = Instant::now();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
        let mut outcome = None;
        while let Ok(Some((at, e))) =
            tokio::time::timeout(Duration::from_secs(5), lines.recv()).await
        {
            match e["event"].as_str() {
                Some("notified") => {
                    outcome = Some((at - pressed, e["link"].as_str().unwrap().to_string()));
                    break;
                }
                Some("ended") => break, // not connected yet: try again
                _ => {}
            }
        }
        if let Some(o) = outcome {
            break o;
        }
    };
    let (press_to_link, link) = link;
    let room = link.rsplit("room=").next().unwrap().to_string();

    // The viewer.
    let (sig_tx, mut sig_rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let sig = SocketIoSignaling::start(
        ClientSettings {
            url: url.clone(),
            engine_io: Default::default(),
            trust: Default::default(),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(1),
        },
        sig_tx,
        cancel.clone(),
    )
    .unwrap();
    assert_eq!(sig_rx.recv().await, Some(SignalingEvent::Up));
    let settings = PeerSettings {
        ice_servers: vec![],
        include_loopback: true,
        ..Default::default()
    };
    // As the viewer page does: join, and on `joined` make the offer.
    let joined_at = Instant::now();
    sig.send(Message::Join(room.clone())).await.unwrap();
    loop {
        match sig_rx.recv().await {
            Some(SignalingEvent::Message(Message::Joined(_))) => break,
            other => assert!(
                matches!(other, Some(SignalingEvent::Message(_))),
                "{other:?}"
            ),
        }
    }
    let (viewer, mut streams, offer) =
        ViewerPeer::offer(&settings, ViewerOptions::default(), Duration::from_secs(3))
            .await
            .unwrap();
    sig.send(Message::Invite(SessionDescription::offer(offer)))
        .await
        .unwrap();
    let answer = loop {
        if let Some(SignalingEvent::Message(Message::Ok(d))) = sig_rx.recv().await {
            break d.sdp;
        }
    };
    viewer.accept(&answer).await.unwrap();

    let mut decoder = H264Decoder::new().unwrap();
    let mut first_frame = None;
    let mut latencies = Vec::new();
    let mut frames = 0u64;
    let mut cpu_start = 0.0;
    let mut window_start = Instant::now();
    loop {
        let unit = match tokio::time::timeout(Duration::from_secs(5), streams.video.recv()).await {
            Ok(Some(u)) => u,
            _ => panic!("video stopped after {frames} frames"),
        };
        let Ok(Some(p)) = decoder.decode(&unit.data) else {
            continue;
        };
        let decoded_ms = unix_ms();
        frames += 1;
        if first_frame.is_none() {
            first_frame = Some(joined_at.elapsed());
            cpu_start = cpu_seconds(pid);
            window_start = Instant::now();
        }
        if let Some(s) = p.stamp {
            latencies.push(decoded_ms.saturating_sub(stamp::unwrap(s, decoded_ms)) as f64);
        }
        if window_start.elapsed() >= Duration::from_secs(a.seconds) {
            break;
        }
    }
    let window = window_start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_start;
    let hwm = status_kb(pid, "VmHWM:");
    sig.send(Message::Bye(Some(room))).await.unwrap();
    viewer.close().await;
    latencies.sort_by(f64::total_cmp);
    println!(
        "call benchmark: {}x{}@{} test pattern, {:.1} s measured window",
        a.width, a.height, a.fps, window
    );
    println!(
        "frames decoded by the viewer: {frames} ({:.1} fps)",
        frames as f64 / window
    );
    println!(
        "press -> link:             {:.1} ms",
        press_to_link.as_secs_f64() * 1000.0
    );
    println!(
        "join -> first frame:       {:.1} ms",
        first_frame.unwrap().as_secs_f64() * 1000.0
    );
    println!(
        "glass-to-glass (stamp -> decoded): median {:.0} ms, p95 {:.0} ms, max {:.0} ms ({} stamps read)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        latencies.last().copied().unwrap_or(f64::NAN),
        latencies.len()
    );
    println!(
        "doorbell CPU:              {:.4} CPU s per call-second ({cpu:.2} s over {window:.1} s)",
        cpu / window
    );
    println!(
        "doorbell peak RSS:         {:.1} MB (VmHWM)",
        hwm as f64 / 1024.0
    );
    cancel.cancel();
}
