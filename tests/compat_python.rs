//! Compatibility with a Socket.IO server that is not ours: python-socketio 5,
//! the stack of the original design's server (tests/compat_server.py, written
//! from the protocol document). Same call flow as the loopback test.
//!
//! Needs python-socketio 5 and aiohttp: `scripts/test` installs them into
//! `target/py` and sets `DOORBELL_PYTHON`; without them this test fails and
//! says so (it is never silently skipped).

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct PythonServer {
    child: Child,
    port: u16,
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_python_server(extra: &[&str]) -> PythonServer {
    let python = std::env::var("DOORBELL_PYTHON").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/py/bin/python");
        if std::path::Path::new(venv).exists() {
            venv.to_string()
        } else {
            "python3".to_string()
        }
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compat_server.py");
    let mut child = Command::new(&python)
        .arg(script)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {python}: {e}; run scripts/test, which installs python-socketio")
        });
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .strip_prefix("PORT ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{python} {script} did not start (python-socketio 5 and aiohttp installed? run scripts/test); it said {line:?}"));
    PythonServer { child, port }
}

async fn open_rooms(port: u16) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /rooms HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body.rsplit("\r\n\r\n")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_works_against_python_socketio() {
    two_calls(start_python_server(&[])).await;
}

/// Like Flask-SocketIO's development server without WebSocket support: the
/// doorbell falls back to Engine.IO long-polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_works_over_long_polling() {
    two_calls(start_python_server(&["--polling-only"])).await;
}

async fn two_calls(server: PythonServer) {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", server.port);
    let mut bell = Bell::start(&loopback_config(&url, dir.path())).await;
    bell.wait_connected().await;
    for call in 1..=2u64 {
        assert!(bell.ring().await.starts_with("ringing "));
        let (notified, before) = bell.until("notified").await;
        assert_eq!(names(&before), ["ringing", "room_created", "notified"]);
        let room = room_of(notified.to_json()["link"].as_str().unwrap());
        assert_eq!(open_rooms(server.port).await, 1);
        let report = view_call(&url, &room, 60, (320, 240), Duration::from_secs(3), 1000.0).await;
        assert!(report.decoded_frames >= 60 && report.sizes_ok, "{report:?}");
        assert_eq!(report.answer_video_codecs, ["H264"]);
        let (ended, _) = bell.until("ended").await;
        assert_eq!(ended.to_json()["reason"], "viewer_left");
        assert_eq!(bell.status().await.state, "idle");
        let start = std::time::Instant::now();
        while open_rooms(server.port).await != 0 {
            assert!(
                start.elapsed() < WAIT,
                "the room is gone on the python server too"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (level, freq) = recorded_tone(&wav_of(dir.path(), call));
        assert!(level > 1000.0);
        assert!((freq.unwrap() - 1000.0).abs() < 50.0);
    }
    bell.stop().await;
}
