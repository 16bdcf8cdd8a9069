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
//! With `--viewers N`, the call runs over seed 004's SSE sessions (which
//! `doorbell serve` also speaks) and N viewers register in the ring's
//! session; the doorbell offers to each, and the CPU window starts once all
//! N decode pictures. Run it with N = 1 and N = 4 to see what a viewer
//! costs beside the one shared encoder.
//!
//! Usage: cargo bench --bench call -- [--seconds 30] [--size 640x480] [--fps 30] [--viewers N] [--binary target/release/doorbell]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use doorbell::media::h264::H264Decoder;
use doorbell::media::{stamp, unix_ms};
use doorbell::peer::viewer::{ViewerOptions, ViewerPeer};
use doorbell::peer::PeerSettings;
use doorbell::signaling::client::{ClientSettings, SocketIoSignaling};
use doorbell::signaling::protocol::{IceCandidate, Message, SessionDescription};
use doorbell::signaling::{Signaling, SignalingEvent};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Args {
    seconds: u64,
    width: u32,
    height: u32,
    fps: u32,
    binary: String,
    /// `Some(n)`: n viewers over SSE sessions; `None`: one, room protocol.
    viewers: Option<usize>,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 30,
        width: 640,
        height: 480,
        fps: 30,
        binary: "target/release/doorbell".into(),
        viewers: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds N"),
            "--fps" => a.fps = it.next().and_then(|v| v.parse().ok()).expect("--fps N"),
            "--binary" => a.binary = it.next().expect("--binary PATH"),
            "--viewers" => {
                a.viewers = Some(it.next().and_then(|v| v.parse().ok()).expect("--viewers N"))
            }
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
            "[signaling]\nurl = \"{url}\"\nprotocol = \"{}\"\n[call]\nmax_viewers = {}\n\
             [ice]\nservers = []\ninclude_loopback = true\n\
             [video]\nsource = \"testsrc\"\nwidth = {}\nheight = {}\nfps = {}\nbitrate_kbps = 1000\n\
             [audio]\nmicrophone = \"tone\"\nspeaker = \"none\"\n\
             [control]\nsocket = \"{}\"\n[log]\nlevel = \"warn\"\n",
            if a.viewers.is_some() { "sse" } else { "rooms" },
            a.viewers.unwrap_or(1).max(1),
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
    if let Some(n) = a.viewers {
        let session = link.rsplit("session=").next().unwrap().to_string();
        return several_viewers(&a, &url, &session, n, pid, press_to_link).await;
    }
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

/// One seed-004 event stream, read by `GET /events/:session/:peer`.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    /// The next event that is not a ping.
    async fn next(&mut self) -> Option<serde_json::Value> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                match serde_json::from_str::<serde_json::Value>(&data) {
                    Ok(v) if v["type"] != "ping" => return Some(v),
                    _ => {}
                }
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// Viewer `peer` registers in `session`, answers the doorbell's offer and
/// takes its trickled candidates; the peer and its streams.
async fn sse_viewer(
    url: &str,
    session: &str,
    peer: &str,
    settings: &PeerSettings,
) -> (Arc<ViewerPeer>, doorbell::peer::viewer::ViewerStreams) {
    let http = reqwest::Client::new();
    let status = http
        .post(format!("{url}/register/{session}/{peer}"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "register: {status}");
    let response = http
        .get(format!("{url}/events/{session}/{peer}"))
        .send()
        .await
        .unwrap();
    let mut events = Events {
        response,
        buffer: String::new(),
    };
    let offer = loop {
        let e = events.next().await.expect("the doorbell's offer");
        if e["type"] == "offer" {
            break e;
        }
    };
    let from = offer["senderId"].as_str().unwrap().to_string();
    let (viewer, streams, answer) = ViewerPeer::answer(
        settings,
        offer["payload"]["sdp"].as_str().unwrap(),
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    let message = serde_json::json!({
        "type": "answer",
        "payload": { "type": "answer", "sdp": answer },
        "target": from,
    });
    let status = http
        .post(format!("{url}/message/{session}/{peer}"))
        .json(&message)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "answer: {status}");
    let viewer = Arc::new(viewer);
    let pc = viewer.clone();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            if e["type"] != "ice-candidate" || e["payload"].is_null() {
                continue;
            }
            let c = serde_json::from_value::<IceCandidate>(e["payload"].clone());
            if let Ok(c) = c {
                let _ = pc.add_candidate(c).await;
            }
        }
    });
    (viewer, streams)
}

/// The call with `n` viewers in one SSE session: all decode, and the
/// doorbell's CPU is measured once every one of them has a picture.
async fn several_viewers(
    a: &Args,
    url: &str,
    session: &str,
    n: usize,
    pid: u32,
    press_to_link: Duration,
) {
    let settings = PeerSettings {
        ice_servers: vec![],
        include_loopback: true,
        ..Default::default()
    };
    let joined_at = Instant::now();
    let (first_tx, mut first_rx) = mpsc::unbounded_channel::<Duration>();
    let stop = CancellationToken::new();
    let mut counters = Vec::new();
    let mut viewers = Vec::new();
    for i in 0..n {
        let (viewer, mut streams) =
            sse_viewer(url, session, &format!("viewer-{i}"), &settings).await;
        let frames = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        counters.push(frames.clone());
        let (first_tx, stop, pc) = (first_tx.clone(), stop.clone(), viewer.clone());
        tokio::spawn(async move {
            let mut decoder = H264Decoder::new().unwrap();
            let mut first = true;
            loop {
                let unit = tokio::select! {
                    _ = stop.cancelled() => return,
                    u = tokio::time::timeout(Duration::from_secs(1), streams.video.recv()) => u,
                };
                match unit {
                    Ok(Some(u)) => {
                        if let Ok(Some(_)) = decoder.decode(&u.data) {
                            frames.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if first {
                                first = false;
                                let _ = first_tx.send(joined_at.elapsed());
                            }
                        }
                    }
                    Ok(None) => return,
                    Err(_) => {
                        let _ = pc.request_keyframe().await;
                    }
                }
            }
        });
        viewers.push(viewer);
    }
    let mut last_first = Duration::ZERO;
    for _ in 0..n {
        let at = tokio::time::timeout(Duration::from_secs(20), first_rx.recv())
            .await
            .expect("every viewer decodes a picture")
            .unwrap();
        last_first = last_first.max(at);
    }
    let count = |c: &[std::sync::Arc<std::sync::atomic::AtomicU64>]| -> Vec<u64> {
        c.iter()
            .map(|f| f.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    };
    let (cpu_start, frames_start, window_start) =
        (cpu_seconds(pid), count(&counters), Instant::now());
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let window = window_start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_start;
    let frames_end = count(&counters);
    let hwm = status_kb(pid, "VmHWM:");
    stop.cancel();
    for v in viewers {
        v.close().await;
    }
    let fps: Vec<String> = frames_start
        .iter()
        .zip(&frames_end)
        .map(|(s, e)| format!("{:.1}", (e - s) as f64 / window))
        .collect();
    println!(
        "call benchmark: {}x{}@{} test pattern, {n} viewers over SSE sessions, {window:.1} s measured window",
        a.width, a.height, a.fps
    );
    println!("frames decoded per viewer per second: {}", fps.join(", "));
    println!(
        "press -> link:             {:.1} ms",
        press_to_link.as_secs_f64() * 1000.0
    );
    println!(
        "register -> all decoding:  {:.1} ms",
        last_first.as_secs_f64() * 1000.0
    );
    println!(
        "doorbell CPU:              {:.4} CPU s per call-second ({cpu:.2} s over {window:.1} s)",
        cpu / window
    );
    println!(
        "doorbell peak RSS:         {:.1} MB (VmHWM)",
        hwm as f64 / 1024.0
    );
}
