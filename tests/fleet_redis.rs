//! `doorbell serve --redis`: two instances (real `doorbell serve`
//! processes) share one fleet through a real `redis-server` on loopback,
//! without persistence. The doorbell reaches them through a small TCP "load
//! balancer" that sends every connection to instance A while A answers,
//! else to B. The doorbell connects to A, a seed-002 viewer on B watches it
//! (frames decoded, the viewer's tone heard at the door); then A is killed
//! and the doorbell, reconnected through the balancer to B, is watched
//! there. A server that loses its Redis keeps relaying the watches whose
//! two sides it holds and refuses new ones clearly; a server whose Redis
//! cannot be reached does not start.

mod common;

use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::lab::{event_names, gated_tone, Daemon};
use common::seeds::{decode_frames, FakeDevice, Seed002Viewer, Watch};
use common::{talk_tone, WAIT};
use doorbell::secret::Secret;
use doorbell::server::viewer_token::{TokenKey, ViewerClaims};

const BIN: &str = env!("CARGO_BIN_EXE_doorbell");
const DEVICE: &str = "door-1";
const KEY: &str = "the fleet's viewer token key, 32+ characters";
const VIEWER_TONE_HZ: f32 = 720.0;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process this test started, killed (by its PID) when dropped.
struct Proc {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn wait_for_port(port: u16, what: &str, log: &dyn Fn() -> String) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < WAIT, "{what} did not start:\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `redis-server` on a free loopback port, nothing written to disk.
fn redis_server(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    let log = dir.join("redis.log");
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
        ])
        .arg(dir)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start redis-server ({e}); scripts/test installs Debian's redis-server")
        });
    let mut p = Proc { child, log };
    // Ready once it answers PING (a listening socket is not enough), and
    // still running (another process may have taken the port meanwhile).
    let start = Instant::now();
    while try_redis_cmd(port, &["PING"]).as_deref() != Some("+PONG") {
        if let Some(status) = p.child.try_wait().unwrap() {
            panic!("redis-server exited ({status}):\n{}", p.log());
        }
        assert!(
            start.elapsed() < WAIT,
            "redis-server did not start:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (p, port)
}

/// One RESP command to Redis; its first line of answer.
fn redis_cmd(port: u16, args: &[&str]) -> String {
    try_redis_cmd(port, args).expect("Redis answers")
}

fn try_redis_cmd(port: u16, args: &[&str]) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    Some(line.trim_end().to_string())
}

/// `doorbell serve --redis` on a free port.
fn serve(dir: &Path, name: &str, redis_port: u16, key_file: &Path) -> (Proc, u16) {
    let port = free_port();
    let log = dir.join(format!("serve-{name}.log"));
    let child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--ice-server", "stun:127.0.0.1:9"])
        .args(["--redis", &format!("redis://127.0.0.1:{redis_port}")])
        .args(["--device", DEVICE, "--device-heartbeat", "1s"])
        .arg("--viewer-token-key-file")
        .arg(key_file)
        .env_remove("DOORBELL_VIEWER_TOKEN_KEY")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut p = Proc { child, log };
    wait_for_port(port, "doorbell serve", &|| p.log());
    std::thread::sleep(Duration::from_millis(100));
    if let Some(status) = p.child.try_wait().unwrap() {
        panic!("doorbell serve exited ({status}):\n{}", p.log());
    }
    (p, port)
}

/// A TCP "load balancer" on a free port: each connection goes to the
/// first backend that accepts it.
fn balancer(backends: Vec<u16>) -> (u16, Arc<AtomicU16>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let last = Arc::new(AtomicU16::new(0));
    let used = last.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Some((backend, server)) = backends.iter().find_map(|b| {
                let addr = SocketAddr::from(([127, 0, 0, 1], *b));
                TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                    .ok()
                    .map(|s| (*b, s))
            }) else {
                continue;
            };
            used.store(backend, Ordering::Release);
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                    let _ = from.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    (port, last)
}

fn token() -> String {
    let now = doorbell::turn::unix_now();
    TokenKey::new(Secret::new(KEY)).unwrap().mint(
        &ViewerClaims {
            user_id: "7".into(),
            devices: Some(vec![DEVICE.into()]),
            expires_unix: now + 600,
        },
        now,
    )
}

/// A ring watched by a viewer on the instance at `port`: frames decoded,
/// the viewer's tone heard at the door.
async fn ring_watched_on(bell: &mut Daemon, port: u16, call: u64) {
    bell.press();
    bell.until("notified").await;
    let mut w = Watch::open(port, &token(), DEVICE, false).await;
    assert_eq!(w.viewer.user_id, "7");
    let talker = talk_tone(
        w.peer.audio_track().expect("the viewer talks"),
        VIEWER_TONE_HZ,
        Duration::from_secs(2),
    );
    decode_frames(&w.peer, &mut w.streams, 30).await;
    bell.until("connected").await;
    talker.await.unwrap();
    w.viewer
        .send("end_watch", None, json!({ "session_id": w.session }))
        .await;
    let (ended, seen) = bell.until("ended").await;
    assert_eq!(ended["reason"], "viewer_left", "{:?}", event_names(&seen));
    w.peer.close().await;
    let (level, freq) = gated_tone(&bell.dir.path().join(format!("call-{call}.wav")));
    assert!(level > 100.0, "the viewer reached the door: rms {level}");
    assert!(
        (freq - f64::from(VIEWER_TONE_HZ)).abs() < 20.0,
        "the door heard {freq} Hz"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_fleet_through_redis_and_survive_losing_one() {
    common::init_logs();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("viewer-token-key");
    std::fs::write(&key_file, KEY).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_redis, redis_port) = redis_server(dir.path());
    let (a, port_a) = serve(dir.path(), "a", redis_port, &key_file);
    let (b, port_b) = serve(dir.path(), "b", redis_port, &key_file);
    let (lb, used) = balancer(vec![port_a, port_b]);

    let mut bell = Daemon::start(&format!(
        "[signaling]\nprotocol = \"device-ws\"\nurl = \"http://127.0.0.1:{lb}\"\n\
         device_id = \"{DEVICE}\"\nheartbeat = \"1s\"\n\
         reconnect_min = \"200ms\"\nreconnect_max = \"1s\"\n"
    ));
    bell.until_device_connected(1).await;
    assert_eq!(used.load(Ordering::Acquire), port_a, "the device is on A");
    assert!(
        a.log().contains("a seed-002 device connected"),
        "{}",
        a.log()
    );
    // Its place in Redis expires unless its heartbeats renew it.
    let ttl: i64 = redis_cmd(redis_port, &["PTTL", "doorbell:device:door-1"])[1..]
        .parse()
        .unwrap();
    assert!(ttl > 0 && ttl <= 2500, "PTTL {ttl}");

    // Watched from B: every message crosses Redis.
    ring_watched_on(&mut bell, port_b, 1).await;
    assert!(b.log().contains("a watch started"), "{}", b.log());
    assert!(
        !a.log().contains("a watch started"),
        "A only relayed:\n{}",
        a.log()
    );

    // A dies without a word. The doorbell comes back through the balancer
    // to B, and is watched there.
    let mut a = a;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    bell.until_device_connected(2).await;
    assert_eq!(
        used.load(Ordering::Acquire),
        port_b,
        "the device is on B now"
    );
    ring_watched_on(&mut bell, port_b, 2).await;
    // With nobody connected, the device is offline everywhere.
    assert!(bell.stop().success());
    let start = Instant::now();
    loop {
        let mut v = Seed002Viewer::connect(port_b, &token()).await.unwrap();
        v.send("watch_request", Some("q"), json!({ "device_id": DEVICE }))
            .await;
        let (m, _) = v.until("error").await;
        if m["payload"]["message"] == "Device is offline" {
            break;
        }
        assert!(start.elapsed() < WAIT, "{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_keeps_local_watches_and_refuses_new_ones_clearly() {
    common::init_logs();
    let dir = tempfile::tempdir().unwrap();
    let (mut redis, redis_port) = redis_server(dir.path());
    let cancel = tokio_util::sync::CancellationToken::new();
    let server = doorbell::server::start(
        "127.0.0.1:0",
        doorbell::server::ServerSettings {
            viewer_ice_servers: vec![],
            fleet: doorbell::server::device_relay::FleetSettings {
                devices: vec![DEVICE.into(), "door-2".into()],
                token_key: Some(TokenKey::new(Secret::new(KEY)).unwrap()),
                redis: Some(format!("redis://127.0.0.1:{redis_port}")),
                ..Default::default()
            },
            ..Default::default()
        },
        cancel.clone(),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "the server does not start: {e}\nredis log:\n{}",
            redis.log()
        )
    });
    let port = server.addr.port();
    let mut device = FakeDevice::connect(port, DEVICE).await.unwrap();
    let mut viewer = Seed002Viewer::connect(port, &token()).await.unwrap();
    viewer
        .send("watch_request", Some("r1"), json!({ "device_id": DEVICE }))
        .await;
    let (ready, _) = viewer.until("watch_ready").await;
    let session = ready["payload"]["session_id"].as_str().unwrap().to_string();
    device.until("watch_request").await;

    // Redis goes away.
    redis.child.kill().unwrap();
    redis.child.wait().unwrap();
    // The watch whose two sides are here goes on: offer and answer pass.
    let sdp =
        |kind: &str| json!({ "session_id": session, "sdp": { "type": kind, "sdp": "v=0\r\n" } });
    viewer.send("signal_offer", None, sdp("offer")).await;
    assert_eq!(device.until("signal_offer").await["payload"], sdp("offer"));
    device.send("signal_answer", sdp("answer")).await;
    let (answer, _) = viewer.until("signal_answer").await;
    assert_eq!(answer["payload"], sdp("answer"));
    // New ones are refused with the reason: a device's hello (it will try
    // again) and a watch.
    assert_eq!(
        FakeDevice::connect(port, "door-2").await.err(),
        Some((Some(1011), "Server error".into()))
    );
    viewer
        .send("watch_request", Some("r2"), json!({ "device_id": DEVICE }))
        .await;
    let (e, _) = viewer.until("error").await;
    assert_eq!(e["request_id"], "r2");
    assert_eq!(e["payload"]["message"], "Server error");
    cancel.cancel();
}

#[test]
fn a_server_whose_redis_cannot_be_reached_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, KEY).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--redis", &format!("redis://127.0.0.1:{}", free_port())])
        .arg("--viewer-token-key-file")
        .arg(&key_file)
        .env_remove("DOORBELL_VIEWER_TOKEN_KEY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("redis at redis://127.0.0.1:"), "{err}");
    assert!(err.contains("cannot reach it"), "{err}");
    // And without a shared token key, instances could not accept each
    // other's tokens: refused with the fix.
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--redis",
            "redis://127.0.0.1:1",
        ])
        .env_remove("DOORBELL_VIEWER_TOKEN_KEY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--redis needs --viewer-token-key-file"),
        "{err}"
    );
}
