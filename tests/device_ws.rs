//! Seed 002's world: the doorbell (the real binary) as a device on
//! tests/servers/device_ws.py, a server written from the seed's text, watched
//! by a seed-002 viewer (webrtc-rs, trickling) and by the server's page in
//! Chromium.

mod common;

use serde_json::{json, Value};
use std::time::{Duration, Instant};

use common::lab::{browser, event_names, gated_tone, microphone_file, Daemon};
use common::seeds::{decode_frames, Seed002Viewer, SeedServer, Watch};
use common::{talk_tone, WAIT};

const DEVICE: &str = "door-1";
const TOKEN: &str = "owner-token";
const VIEWER_TONE_HZ: f32 = 550.0;

fn server() -> SeedServer {
    SeedServer::start(
        "device_ws.py",
        &["--device", DEVICE, "--token", &format!("{TOKEN}:42")],
    )
}

fn config(server: &SeedServer, device: &str) -> String {
    format!(
        "[signaling]\nprotocol = \"device-ws\"\nurl = \"{}\"\ndevice_id = \"{device}\"\n\
         heartbeat = \"1s\"\nreconnect_min = \"200ms\"\nreconnect_max = \"1s\"\n",
        server.url
    )
}

/// The server's view of our device.
async fn device(server: &SeedServer) -> Value {
    server.get(&format!("/test/devices/{DEVICE}")).await
}

async fn until_online(server: &SeedServer, hellos: u64) -> Value {
    server
        .until(
            &format!("/test/devices/{DEVICE}"),
            "the device is online",
            |d| d["online"] == true && d["hellos"].as_u64() >= Some(hellos),
        )
        .await
}

async fn watch(server: &SeedServer) -> Watch {
    watch_with(server, false).await
}

/// [`watch`], with the ICE servers of `watch_ready` and, when `relay_only`,
/// relayed candidates only.
async fn watch_with(server: &SeedServer, relay_only: bool) -> Watch {
    let w = Watch::open(server.port, TOKEN, DEVICE, relay_only).await;
    assert_eq!(w.viewer.user_id, "42");
    w
}

/// `doorbell check` on the daemon's own config: its signaling line.
fn doorbell_check(bell: &Daemon) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_doorbell"))
        .arg("check")
        .arg("--config")
        .arg(bell.dir.path().join("doorbell.toml"))
        .output()
        .expect("doorbell check runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .skip_while(|l| !l.starts_with("signaling"))
        .take(2)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_servers_pass_their_own_self_test() {
    let out = std::process::Command::new(common::seeds::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/servers/selftest.py"
        ))
        .output()
        .expect("selftest.py runs");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_is_watched_through_a_seed_002_server_with_trickle_both_ways() {
    common::init_logs();
    let server = server();
    // Asked for while the doorbell is not connected: the seed's error.
    let mut early = Seed002Viewer::connect(server.port, TOKEN).await.unwrap();
    early
        .send(
            "watch_request",
            Some("req-0"),
            json!({ "device_id": DEVICE }),
        )
        .await;
    let (error, _) = early.until("error").await;
    assert_eq!(error["request_id"], "req-0");
    assert_eq!(error["payload"]["message"], "Device is offline");
    early.close().await;

    let mut bell = Daemon::start(&config(&server, DEVICE));
    let d = until_online(&server, 1).await;
    assert_eq!(d["messages"][0], "hello", "hello goes first: {d}");
    assert_eq!(d["presence"]["in_call"], false, "{d}");
    assert!(d["presence"]["uptime_s"].is_u64(), "{d}");
    // Heartbeats every second.
    server
        .until(&format!("/test/devices/{DEVICE}"), "heartbeats", |d| {
            d["heartbeats"].as_u64() >= Some(2)
        })
        .await;

    for call in 1..=2u64 {
        bell.press();
        let (notified, _) = bell.until("notified").await;
        assert_eq!(
            notified["link"],
            format!("{}/watch/{DEVICE}", server.url),
            "the link is the server's page for this device"
        );
        let mut w = watch(&server).await;
        assert!(
            !w.answer.contains("a=candidate"),
            "the answer goes out before gathering (trickle): {}",
            w.answer
        );
        assert!(
            w.doorbell_candidates > 0,
            "the doorbell trickled its candidates"
        );
        let talker = talk_tone(
            w.peer.audio_track().expect("the viewer talks"),
            VIEWER_TONE_HZ,
            Duration::from_secs(2),
        );
        decode_frames(&w.peer, &mut w.streams, 20).await;
        bell.until("connected").await;
        let d = device(&server).await;
        assert_eq!(
            d["presence"]["in_call"], true,
            "presence says a call is on: {d}"
        );
        talker.await.unwrap();
        // The owner hangs up (ring 1), the page goes away (ring 2).
        w.end_and_check_heard(&mut bell, call, VIEWER_TONE_HZ).await;
    }
    let log = bell.log();
    assert!(log.contains("reason=user_ended"), "{log}");
    assert!(log.contains("reason=viewer_disconnected"), "{log}");
    server
        .until(
            &format!("/test/devices/{DEVICE}"),
            "presence after the calls",
            |d| d["presence"]["in_call"] == false,
        )
        .await;
    // No message other than the seed's ever left the doorbell.
    let d = device(&server).await;
    for m in d["messages"].as_array().unwrap() {
        let m = m.as_str().unwrap();
        assert!(
            [
                "hello",
                "heartbeat",
                "device_presence",
                "signal_answer",
                "signal_ice"
            ]
            .contains(&m),
            "{m}"
        );
    }
    assert!(bell.stop().success());
}

/// The share of each of `tones` in the loud part of the door's WAV (where
/// the viewers talked at once).
fn tone_shares(path: &std::path::Path, tones: &[f32]) -> Vec<f64> {
    use doorbell::media::audio::{power_share, rms};
    let pcm = doorbell::media::wav::read_mono(path).unwrap_or_else(|e| panic!("{e}"));
    let chunks: Vec<&[i16]> = pcm.chunks_exact(4800).collect();
    let loudest = chunks.iter().map(|c| rms(c)).fold(0.0, f64::max);
    let loud: Vec<i16> = chunks
        .iter()
        .filter(|c| rms(c) > 0.7 * loudest)
        .flat_map(|c| c.iter().copied())
        .collect();
    assert!(
        loud.len() >= 4800 * 5,
        "{}: too little sound",
        path.display()
    );
    tones
        .iter()
        .map(|hz| power_share(&loud, f64::from(*hz)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_then_four_viewers_watch_one_ring_and_one_leaving_does_not_disturb_the_others() {
    use futures_util::future::join_all;
    common::init_logs();
    let server = server();
    let mut bell = Daemon::start(&config(&server, DEVICE));
    bell.until_device_connected(1).await;
    for (call, viewers) in [(1u64, 2usize), (2, 4)] {
        bell.press();
        let (_, mut seen_all) = bell.until("notified").await;
        let mut watches = Vec::new();
        for _ in 0..viewers {
            watches.push(watch(&server).await);
        }
        // Every viewer sees the door; one capture and one encoder feed them all.
        join_all(
            watches
                .iter_mut()
                .map(|w| decode_frames(&w.peer, &mut w.streams, 20)),
        )
        .await;
        // They all talk at once, each its own tone: the door hears the mix.
        let tones: Vec<f32> = (0..viewers).map(|i| 400.0 + 170.0 * i as f32).collect();
        let talkers: Vec<_> = watches
            .iter()
            .zip(&tones)
            .map(|(w, hz)| {
                talk_tone(
                    w.peer.audio_track().expect("the viewer talks"),
                    *hz,
                    Duration::from_secs(3),
                )
            })
            .collect();
        for t in talkers {
            t.await.unwrap();
        }
        // The second viewer hangs up, then (of four) the first, whose place
        // another takes: the others go on seeing the door, in the same call.
        let leaving: &[usize] = if viewers > 2 { &[1, 0] } else { &[1] };
        for (left, who) in leaving.iter().copied().enumerate() {
            let mut w = watches.remove(who);
            w.viewer
                .send("end_watch", None, json!({ "session_id": w.session }))
                .await;
            w.peer.close().await;
            let (e, seen) = bell.until("viewer_left").await;
            seen_all.extend(seen.iter().cloned());
            assert_eq!(
                e["viewers"].as_u64(),
                Some((viewers - left - 1) as u64),
                "{:?}",
                event_names(&seen)
            );
            join_all(
                watches
                    .iter_mut()
                    .map(|w| decode_frames(&w.peer, &mut w.streams, 30)),
            )
            .await;
        }
        for w in watches {
            w.viewer.close().await;
            w.peer.close().await;
        }
        let (ended, seen) = bell.until("ended").await;
        assert_eq!(ended["reason"], "viewer_left", "{:?}", event_names(&seen));
        seen_all.extend(seen);
        let names = event_names(&seen_all);
        assert_eq!(
            names.iter().filter(|n| *n == "viewer_joined").count(),
            viewers,
            "{names:?}"
        );
        let shares = tone_shares(&bell.dir.path().join(format!("call-{call}.wav")), &tones);
        for (hz, share) in tones.iter().zip(&shares) {
            assert!(
                *share > 0.4 / viewers as f64,
                "{viewers} viewers: {hz} Hz is {share:.3} of the door's sound ({shares:?})"
            );
        }
    }
    assert!(bell.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_comes_back_and_an_unknown_device_stops_trying() {
    common::init_logs();
    let server = server();
    let mut bell = Daemon::start(&config(&server, DEVICE));
    until_online(&server, 1).await;
    // A server error (1011) and going away (1001): both retried.
    for (code, hellos) in [(1011, 2), (1001, 3)] {
        assert_eq!(
            server
                .post(&format!("/test/close-device/{DEVICE}?code={code}"))
                .await,
            200
        );
        until_online(&server, hellos).await;
    }
    // The server refuses upgrades for a while: backoff, then back.
    assert_eq!(server.post("/test/stop-accepting?seconds=1.5").await, 200);
    server
        .post(&format!("/test/close-device/{DEVICE}?code=1011"))
        .await;
    until_online(&server, 4).await;
    let log = bell.log();
    assert!(
        log.contains("503") || log.contains("cannot connect"),
        "{log}"
    );
    // `doorbell check` says hello once and is accepted; its hello takes
    // the device's place on the server for a moment (the seed's server
    // replaces a device's older connection), and the doorbell comes back.
    let check = doorbell_check(&bell);
    assert!(check.contains("accepted"), "{check}");
    until_online(&server, 6).await;
    bell.until_device_connected(5).await;
    // A ring after all that works.
    bell.press();
    bell.until("notified").await;
    let mut w = watch(&server).await;
    decode_frames(&w.peer, &mut w.streams, 10).await;
    w.viewer.close().await;
    bell.until("ended").await;
    w.peer.close().await;
    assert!(bell.stop().success());

    // A device the server does not know: 1008, and no second try.
    let mut stranger = Daemon::start(&config(&server, "not-registered"));
    stranger.wait_log("does not accept this device").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = stranger.log();
    assert_eq!(
        log.matches("not trying again").count(),
        1,
        "no retry after 1008: {log}"
    );
    assert!(log.contains("1008 Device not found"), "{log}");
    let check = doorbell_check(&stranger);
    assert!(check.contains("1008"), "{check}");
    assert!(check.contains("register this device"), "{check}");
    // The daemon keeps running: a press fails fast with a reason.
    stranger.press();
    let (ended, _) = stranger.until("ended").await;
    assert_eq!(ended["reason"], "signaling_unavailable");
    assert!(stranger.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_page_in_chromium_watches_a_ring() {
    common::init_logs();
    let server = server();
    let mut bell = Daemon::start(&config(&server, DEVICE));
    until_online(&server, 1).await;
    bell.until_device_connected(1).await;
    bell.press();
    let (notified, _) = bell.until("notified").await;
    let link = notified["link"].as_str().unwrap().to_string();
    let microphone = microphone_file(bell.dir.path(), VIEWER_TONE_HZ);
    let chromium = browser(&format!("{link}?token={TOKEN}"), None, &microphone);
    let mut page = chromium.page("/watch/").await;
    let start = Instant::now();
    let report = loop {
        let r = page.eval("JSON.stringify(window.report || null)").await;
        let r: Value = serde_json::from_str(r.as_str().unwrap_or("null")).unwrap_or(Value::Null);
        if r["framesDecoded"].as_u64() >= Some(60) {
            break r;
        }
        assert!(
            start.elapsed() < WAIT,
            "the page did not get going: {r}\ndoorbell log:\n{}",
            bell.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(report["width"], 320, "{report}");
    assert!(
        report["errors"].as_array().is_none_or(|e| e.is_empty()),
        "{report}"
    );
    let (_, seen) = bell.until("first_media").await;
    assert!(event_names(&seen).contains(&"connected".to_string()));
    // Let the page's voice play at the door, then end from the page.
    tokio::time::sleep(Duration::from_secs(2)).await;
    page.eval("document.getElementById('end').click(), true")
        .await;
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended["reason"], "viewer_left");
    drop(chromium);
    let (level, freq) = gated_tone(&bell.dir.path().join("call-1.wav"));
    assert!(
        level > 100.0,
        "the page's microphone reached the door: rms {level}"
    );
    assert!((freq - f64::from(VIEWER_TONE_HZ)).abs() < 20.0, "{freq} Hz");
    assert!(bell.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_turn_credentials_carry_a_relay_only_call() {
    common::init_logs();
    const SECRET: &str = "seed-002-turn-secret";
    let turn = common::coturn::Coturn::start(SECRET);
    let server = SeedServer::start(
        "device_ws.py",
        &[
            "--device",
            DEVICE,
            "--token",
            &format!("{TOKEN}:42"),
            "--ice-url",
            &turn.url(),
            "--turn-secret",
            SECRET,
        ],
    );
    // The doorbell has no TURN server of its own and takes relayed
    // candidates only: the call can only work through the session's.
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[ice]\nservers = []\ninclude_loopback = true\nrelay_only = true\n\
         [video]\nwidth = 320\nheight = 240\n\
         [audio]\nmicrophone = \"tone:440\"\nspeaker = \"none\"\n\
         [button]\nsources = [\"stdin\"]\n[control]\nenabled = false\n\
         [notify]\nstdout = false\n",
        config(&server, DEVICE)
    );
    let mut bell = Daemon::start_exactly(dir, &text, None);
    until_online(&server, 1).await;
    bell.until_device_connected(1).await;
    bell.press();
    bell.until("notified").await;
    let mut w = watch_with(&server, true).await;
    decode_frames(&w.peer, &mut w.streams, 20).await;
    w.viewer.close().await;
    bell.until("ended").await;
    w.peer.close().await;
    // coturn allocated for the doorbell under the server's credential for
    // this session (`<expiry>:device_<session>`) and refused none.
    let log = turn.log();
    let tag = format!(":device_{}", &w.session[..8]);
    assert!(log.contains(&tag), "no allocation for {tag}:\n{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("error 401") && !l.contains("user <>")),
        "a credential was refused:\n{log}"
    );
    assert!(bell.stop().success());
}

/// A device-socket server that says whatever the test wants: after
/// `hello_ack`, garbage of every kind, then a viewer with an offer that is
/// not SDP. Each connection's hello arrives on the channel.
async fn scripted_server(
    script: Vec<String>,
) -> (
    u16,
    tokio::sync::mpsc::UnboundedReceiver<Value>,
    tokio::sync::mpsc::UnboundedSender<String>,
) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Ws;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (hellos, hello_rx) = tokio::sync::mpsc::unbounded_channel();
    let (more_tx, mut more) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((tcp, _)) = listener.accept().await {
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let Some(Ok(Ws::Text(hello))) = ws.next().await else {
                continue;
            };
            let _ = hellos.send(serde_json::from_str::<Value>(hello.as_str()).unwrap());
            let ack = json!({"type": "hello_ack", "ts": "2026-01-01T00:00:00.000Z", "payload": {}});
            ws.send(Ws::Text(ack.to_string().into())).await.unwrap();
            if std::mem::take(&mut first) {
                for m in &script {
                    ws.send(Ws::Text(m.clone().into())).await.unwrap();
                }
            }
            // Then whatever the test sends, until the socket ends.
            loop {
                tokio::select! {
                    Some(m) = more.recv() => {
                        if ws.send(Ws::Text(m.into())).await.is_err() { break; }
                    }
                    item = ws.next() => match item {
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                }
            }
        }
    });
    (port, hello_rx, more_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_server_is_logged_and_the_doorbell_keeps_ringing() {
    common::init_logs();
    let script: Vec<String> = [
        "not json at all".to_string(),
        "[1,2,3]".into(),
        json!({"type": "reboot", "payload": {}}).to_string(),
        json!({"type": "signal_offer", "payload": {}}).to_string(),
        json!({"type": "watch_request", "payload": {"session_id": "", "ice_servers": 5}}).to_string(),
        json!({"type": "signal_ice", "payload": {"session_id": "nobody", "candidate": {"candidate": "garbage"}}}).to_string(),
        json!({"type": "watch_ended", "payload": {"session_id": "nobody"}}).to_string(),
        json!({"type": "error", "request_id": "r-9", "payload": {"message": "Something broke"}}).to_string(),
        // Too long for the doorbell: its socket is dropped and opened again.
        "x".repeat(300 * 1024),
    ]
    .into();
    let (port, mut hellos, more) = scripted_server(script).await;
    let url = format!("http://127.0.0.1:{port}");
    let mut bell = Daemon::start(&format!(
        "[signaling]\nprotocol = \"device-ws\"\nurl = \"{url}\"\ndevice_id = \"{DEVICE}\"\n\
         reconnect_min = \"200ms\"\nreconnect_max = \"1s\"\n"
    ));
    for _ in 0..2 {
        let hello = tokio::time::timeout(WAIT, hellos.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hello["type"], "hello");
        assert_eq!(hello["payload"]["device_id"], DEVICE);
    }
    // Connected again after the message that was too long (the server has
    // seen the hello; the doorbell must have had its ack too).
    bell.until_device_connected(2).await;
    // A ring, and a "viewer" whose offer is not SDP: the call ends with a
    // reason, and the next press rings again.
    bell.press();
    bell.until("notified").await;
    let session = "s-1";
    more.send(
        json!({"type": "watch_request", "payload": {"session_id": session, "ice_servers": []}})
            .to_string(),
    )
    .unwrap();
    more.send(
        json!({"type": "signal_offer", "payload": {"session_id": session, "sdp": {"type": "offer", "sdp": "v=0\r\nthis is not SDP\r\n"}}})
            .to_string(),
    )
    .unwrap();
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended["reason"], "answer_failed", "{}", bell.log());
    bell.press();
    bell.until("notified").await;
    let log = bell.log();
    for expected in [
        "malformed signaling message: not JSON",
        "unknown message type \"reboot\"",
        "signal_offer: no sdp",
        "watch_request: unusable session_id",
        "request_id=r-9",
        "Something broke",
    ] {
        assert!(log.contains(expected), "the log lacks {expected:?}:\n{log}");
    }
    assert!(bell.stop().success(), "a clean exit after all that");
}
