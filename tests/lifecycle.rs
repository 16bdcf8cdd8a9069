//! The daemon's life cycle as systemd sees it, with the real binary:
//! `doorbell run` started with `NOTIFY_SOCKET` pointing at a socket this test
//! listens on and `WATCHDOG_USEC` set. It must send `READY=1` once the
//! signaling server is reached, `WATCHDOG=1` pings, and on SIGTERM during a
//! connected call: `STOPPING=1`, a `bye` to the viewer's room, and exit 0
//! within 2 s. Also: the unit file passes `systemd-analyze verify` and its
//! security exposure is "OK" or better.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use doorbell::peer::viewer::{ViewerOptions, ViewerPeer};
use doorbell::peer::PeerSettings;
use doorbell::signaling::protocol::{Message, SessionDescription};

/// Collects notify messages on a background thread.
fn listen(socket: UnixDatagram) -> std::sync::mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if tx.send((Instant::now(), text)).is_err() {
                return;
            }
        }
    });
    rx
}

fn wait_for(
    rx: &std::sync::mpsc::Receiver<(Instant, String)>,
    seen: &mut Vec<String>,
    what: &str,
) -> Instant {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, m)) => {
                seen.push(m.clone());
                if m.lines().any(|l| l == what) {
                    return at;
                }
            }
            Err(_) => panic!("no {what} from the daemon; got {seen:?}"),
        }
    }
}

/// The next event called `name` on the daemon's JSON event stream.
async fn next_event(
    lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    name: &str,
) -> serde_json::Value {
    loop {
        let line = tokio::time::timeout(WAIT, lines.recv())
            .await
            .unwrap_or_else(|_| panic!("no {name} event"))
            .expect("event stream open");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["event"] == name {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_sees_ready_watchdog_and_a_clean_stop_during_a_call() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let server = test_server().await;
    let url = server.url.clone();
    let config_path = dir.path().join("doorbell.toml");
    std::fs::write(
        &config_path,
        format!(
            "[signaling]\nurl = \"{url}\"\n\
             [ice]\nservers = []\ninclude_loopback = true\n\
             [video]\nwidth = 320\nheight = 240\n\
             [audio]\nspeaker = \"none\"\n\
             [button]\nsources = [\"stdin\"]\n\
             [chime]\nsound = \"none\"\n\
             [control]\nsocket = \"{}\"\n",
            dir.path().join("control.sock").display()
        ),
    )
    .unwrap();
    let notify_path = dir.path().join("notify");
    let rx = listen(UnixDatagram::bind(&notify_path).unwrap());
    let mut child = Command::new(env!("CARGO_BIN_EXE_doorbell"))
        .args(["run", "--events", "json", "--config"])
        .arg(&config_path)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("STATE_DIRECTORY", dir.path().join("state"))
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .env("RUST_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut seen = Vec::new();
    let _ready = wait_for(&rx, &mut seen, "READY=1");
    // Pings keep coming (every half second with a 1 s watchdog).
    let first = wait_for(&rx, &mut seen, "WATCHDOG=1");
    let second = wait_for(&rx, &mut seen, "WATCHDOG=1");
    assert!(second > first);

    // A call: press, read the link from the event stream, answer it.
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin).unwrap();
    let stdout = child.stdout.take().unwrap();
    let (line_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    let notified = next_event(&mut lines, "notified").await;
    let room = room_of(notified["link"].as_str().unwrap());
    let mut sig = ViewerSignaling::connect(&url).await;
    sig.send(Message::Join(room.clone())).await;
    assert_eq!(sig.next().await, Message::Joined(room.clone()));
    let (viewer, _streams, offer) = ViewerPeer::offer(
        &PeerSettings {
            ice_servers: vec![],
            include_loopback: true,
            ..Default::default()
        },
        ViewerOptions::default(),
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    sig.send(Message::Invite(SessionDescription::offer(offer)))
        .await;
    let answer = match sig.next().await {
        Message::Ok(d) => d.sdp,
        other => panic!("expected ok, got {other}"),
    };
    viewer.accept(&answer).await.unwrap();
    next_event(&mut lines, "first_media").await;

    // SIGTERM during the call.
    let term = Instant::now();
    // SAFETY: kill on the PID of the child this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    wait_for(&rx, &mut seen, "STOPPING=1");
    match sig.next().await {
        Message::Bye(_) => {}
        other => panic!("expected bye after SIGTERM, got {other}"),
    }
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return (s, Instant::now());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the daemon did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    let (status, exited) = status;
    let took = exited - term;
    eprintln!("exited {status:?} {} ms after SIGTERM", took.as_millis());
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took < Duration::from_secs(2),
        "SIGTERM to exit took {} ms (the unit's promise is under 2 s)",
        took.as_millis()
    );
    viewer.close().await;
}

/// `systemd-analyze` checks the unit as shipped (with ExecStart pointed at the
/// binary under test, since verify wants an existing executable).
#[test]
fn the_unit_verifies_and_its_exposure_is_ok() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/doorbell.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/doorbell run"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doorbell.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/doorbell", env!("CARGO_BIN_EXE_doorbell")),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs (package systemd; scripts/test installs it)");
    let complaints = String::from_utf8_lossy(&verify.stderr).to_string();
    assert!(
        verify.status.success() && !complaints.contains("doorbell.service"),
        "systemd-analyze verify: {complaints}"
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&path)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout).to_string();
    let overall = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall level in {report}"));
    eprintln!("{overall}");
    assert!(
        overall.contains(" OK") || overall.contains(" SAFE"),
        "exposure should be OK or better: {overall}"
    );
}
