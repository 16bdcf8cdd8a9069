//! `doorbell serve` speaks seed 002: the doorbell (the real binary, as a
//! device on `/ws/device`) watched through our server by a seed-002 viewer
//! (webrtc-rs, trickling) and by our viewer page in Chromium from the ring
//! link after the owner signs in; and the server's refusals, seen from raw
//! sockets: unknown devices and bad tokens closed with 1008, the seed's
//! errors with the request's id, sessions that end for the other side, no
//! relaying across sessions.

mod common;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use common::lab::{browser, event_names, gated_tone, microphone_file, Daemon};
use common::seeds::{decode_frames, FakeDevice, Seed002Viewer, Watch};
use common::{talk_tone, WAIT};
use doorbell::secret::Secret;
use doorbell::server::device_relay::{rules::Limits, FleetSettings};
use doorbell::server::owner::{hash_password, PasswordHashString};
use doorbell::server::viewer_token::{TokenKey, ViewerClaims};
use doorbell::server::{OwnerSettings, ServerSettings};
use tokio_util::sync::CancellationToken;

const DEVICE: &str = "door-1";
const KEY: &str = "the viewer token key of this test, 32+ characters";
const PASSWORD: &str = "a long owner password";
const VIEWER_TONE_HZ: f32 = 660.0;

struct Serve {
    server: doorbell::server::Server,
    url: String,
    port: u16,
    cancel: CancellationToken,
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn key() -> TokenKey {
    TokenKey::new(Secret::new(KEY)).unwrap()
}

/// `doorbell serve` in this process, knowing [`DEVICE`] and `door-2`,
/// with the owner's password, and `limits`.
async fn serve(limits: Limits) -> Serve {
    let cancel = CancellationToken::new();
    let hash = hash_password(PASSWORD).unwrap();
    let server = doorbell::server::start(
        "127.0.0.1:0",
        ServerSettings {
            viewer_ice_servers: vec![],
            owner: Some(OwnerSettings {
                password: PasswordHashString::parse(&hash).unwrap(),
                limits: Default::default(),
            }),
            fleet: FleetSettings {
                devices: vec![DEVICE.into(), "door-2".into()],
                token_key: Some(key()),
                limits,
                ..FleetSettings::default()
            },
            ..ServerSettings::default()
        },
        cancel.clone(),
    )
    .await
    .expect("doorbell serve starts");
    Serve {
        url: format!("http://{}", server.addr),
        port: server.addr.port(),
        server,
        cancel,
    }
}

fn config(url: &str, device: &str) -> String {
    format!(
        "[signaling]\nprotocol = \"device-ws\"\nurl = \"{url}\"\ndevice_id = \"{device}\"\n\
         heartbeat = \"1s\"\nreconnect_min = \"200ms\"\nreconnect_max = \"1s\"\n"
    )
}

/// The owner's session cookie (`name=value`), from `POST /login`.
async fn sign_in(url: &str) -> String {
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{url}/login"))
        .form(&[("password", PASSWORD), ("next", "watch/door-1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(
        r.headers()["location"],
        "watch/door-1",
        "back to the ring link"
    );
    r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

fn owner_token(s: &Serve) -> String {
    s.server.owner_token(DEVICE).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doorbell_is_watched_through_doorbell_serve_and_the_door_hears_the_viewer() {
    common::init_logs();
    let s = serve(Limits::default()).await;
    // Asked for while the doorbell is not connected: the seed's error.
    let mut early = Seed002Viewer::connect(s.port, &owner_token(&s))
        .await
        .unwrap();
    assert_eq!(early.user_id, "owner");
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

    let mut bell = Daemon::start(&config(&s.url, DEVICE));
    bell.until_device_connected(1).await;
    for call in 1..=2u64 {
        bell.press();
        let (notified, _) = bell.until("notified").await;
        assert_eq!(notified["link"], format!("{}/watch/{DEVICE}", s.url));
        let mut w = Watch::open(s.port, &owner_token(&s), DEVICE, false).await;
        assert_eq!(w.viewer.user_id, "owner");
        assert!(w.doorbell_candidates > 0, "the doorbell trickled");
        let talker = talk_tone(
            w.peer.audio_track().expect("the viewer talks"),
            VIEWER_TONE_HZ,
            Duration::from_secs(2),
        );
        decode_frames(&w.peer, &mut w.streams, 20).await;
        bell.until("connected").await;
        talker.await.unwrap();
        // The owner hangs up (ring 1), the page goes away (ring 2).
        w.end_and_check_heard(&mut bell, call, VIEWER_TONE_HZ).await;
    }
    let log = bell.log();
    assert!(log.contains("reason=user_ended"), "{log}");
    assert!(log.contains("reason=viewer_disconnected"), "{log}");
    // The signed-in owner sees the device online with its presence.
    let cookie = sign_in(&s.url).await;
    let devices: Value = reqwest::Client::new()
        .get(format!("{}/devices.json", s.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let door = &devices["devices"][0];
    assert_eq!(door["device_id"], DEVICE, "{devices}");
    assert_eq!(door["online"], true, "{devices}");
    assert!(door["presence"]["uptime_s"].is_u64(), "{devices}");
    assert_eq!(devices["devices"][1]["online"], false, "{devices}");
    // `doorbell check` says hello once; the doorbell's connection is
    // replaced for a moment and comes back.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_doorbell"))
        .arg("check")
        .arg("--config")
        .arg(bell.dir.path().join("doorbell.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("\"door-1\" accepted"), "{text}");
    bell.until_device_connected(2).await;
    bell.press();
    bell.until("notified").await;
    let mut w = Watch::open(s.port, &owner_token(&s), DEVICE, false).await;
    decode_frames(&w.peer, &mut w.streams, 10).await;
    w.viewer.close().await;
    bell.until("ended").await;
    w.peer.close().await;
    assert!(bell.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_bad_tokens_and_other_sessions_are_refused_the_seeds_way() {
    common::init_logs();
    let s = serve(Limits::default()).await;
    // An unknown device, and anything before hello.
    assert_eq!(
        FakeDevice::connect(s.port, "stranger").await.err(),
        Some((Some(1008), "Device not found".into()))
    );
    let (mut raw, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws/viewer", s.port))
            .await
            .unwrap();
    let m = json!({"type": "watch_request", "ts": "x", "payload": {"device_id": DEVICE}});
    raw.send(WsMessage::Text(m.to_string().into()))
        .await
        .unwrap();
    let Some(Ok(WsMessage::Close(Some(f)))) = raw.next().await else {
        panic!("closed")
    };
    assert_eq!(
        (u16::from(f.code), f.reason.as_str()),
        (1008, "Unauthorized")
    );
    // Tokens: garbage, expired, another key's.
    let now = doorbell::turn::unix_now();
    let claims = |exp| ViewerClaims {
        user_id: "42".into(),
        devices: None,
        expires_unix: exp,
    };
    let other = TokenKey::new(Secret::new("somebody else's key, 32+ characters")).unwrap();
    for bad in [
        "eyJ0eXAiOiJKV1QiLCJhbGc".to_string(),
        key().mint(&claims(now - 1), now - 60),
        other.mint(&claims(now + 600), now),
    ] {
        assert_eq!(
            Seed002Viewer::connect(s.port, &bad).await.err(),
            Some(Some(1008)),
            "{bad}"
        );
    }

    let mut device = FakeDevice::connect(s.port, DEVICE).await.unwrap();
    let mut v1 = Seed002Viewer::connect(s.port, &key().mint(&claims(now + 600), now))
        .await
        .unwrap();
    assert_eq!(v1.user_id, "42");
    // A device the token does not name, and one nobody registered.
    let scoped = ViewerClaims {
        devices: Some(vec!["door-2".into()]),
        ..claims(now + 600)
    };
    let mut v2 = Seed002Viewer::connect(s.port, &key().mint(&scoped, now))
        .await
        .unwrap();
    for (device_id, message) in [
        (DEVICE, "Unauthorized"),
        ("nobody", "Device not found"),
        ("door-2", "Device is offline"),
    ] {
        v2.send(
            "watch_request",
            Some("r2"),
            json!({ "device_id": device_id }),
        )
        .await;
        let (e, _) = v2.until("error").await;
        assert_eq!(
            (e["request_id"].as_str(), e["payload"]["message"].as_str()),
            (Some("r2"), Some(message))
        );
    }
    // A session: the device hears watch_request with the viewer's user id.
    v1.send("watch_request", Some("r1"), json!({ "device_id": DEVICE }))
        .await;
    let (ready, _) = v1.until("watch_ready").await;
    assert_eq!(ready["request_id"], "r1");
    let session = ready["payload"]["session_id"].as_str().unwrap().to_string();
    let request = device.until("watch_request").await;
    assert_eq!(request["payload"]["session_id"], session.as_str());
    assert_eq!(request["payload"]["user_id"], "42");
    // Another viewer cannot offer into it, nor the device answer into a
    // session that is not its own.
    let offer = json!({ "session_id": session, "sdp": { "type": "offer", "sdp": "v=0\r\n" } });
    v2.send("signal_offer", Some("r3"), offer.clone()).await;
    let (e, _) = v2.until("error").await;
    assert_eq!(e["payload"]["message"], "Session not found");
    assert_eq!(e["request_id"], "r3");
    device
        .send(
            "signal_answer",
            json!({ "session_id": "not-a-session", "sdp": { "type": "answer", "sdp": "v=0\r\n" } }),
        )
        .await;
    let e = device.until("error").await;
    assert_eq!(e["payload"]["message"], "Session not found");
    // The viewer's own offer goes through, and only it.
    v1.send("signal_offer", None, offer).await;
    let got = device.until("signal_offer").await;
    assert_eq!(got["payload"]["sdp"]["sdp"], "v=0\r\n");
    // The viewer goes away: the device hears viewer_disconnected.
    v1.close().await;
    let ended = device.until("watch_ended").await;
    assert_eq!(
        ended["payload"],
        json!({ "session_id": session, "reason": "viewer_disconnected" })
    );
    // A new session, and the device goes away: the viewer hears
    // device_disconnected.
    let mut v3 = Seed002Viewer::connect(s.port, &owner_token(&s))
        .await
        .unwrap();
    v3.send("watch_request", Some("r4"), json!({ "device_id": DEVICE }))
        .await;
    let (ready, _) = v3.until("watch_ready").await;
    let session = ready["payload"]["session_id"].as_str().unwrap().to_string();
    device.until("watch_request").await;
    // A second connection of the device replaces the first (1001), and
    // the session on the first ends for its viewer.
    let _second = FakeDevice::connect(s.port, DEVICE).await.unwrap();
    loop {
        match device.next().await {
            Ok(_) => continue,
            Err(c) => {
                assert_eq!(c, (Some(1001), "Replaced by a new connection".into()));
                break;
            }
        }
    }
    let (ended, _) = v3.until("watch_ended").await;
    assert_eq!(
        ended["payload"],
        json!({ "session_id": session, "reason": "device_disconnected" })
    );
    // A device silent for two heartbeats and a half is dropped, and is
    // offline.
    let quick = serve(Limits {
        device_silence: Duration::from_millis(1500),
        ..Limits::default()
    })
    .await;
    let mut silent = FakeDevice::connect(quick.port, DEVICE).await.unwrap();
    let start = Instant::now();
    let closed = loop {
        match silent.next().await {
            Ok(_) => continue,
            Err(c) => break c,
        }
    };
    assert_eq!(closed, (Some(1001), "Heartbeat timeout".into()));
    assert!(
        start.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        start.elapsed()
    );
    let mut v4 = Seed002Viewer::connect(quick.port, &owner_token(&quick))
        .await
        .unwrap();
    v4.send("watch_request", Some("r5"), json!({ "device_id": DEVICE }))
        .await;
    let (e, _) = v4.until("error").await;
    assert_eq!(e["payload"]["message"], "Device is offline");

    // The ring link: not signed in, the owner is sent to sign in first; no
    // token without a session.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .get(format!("{}/watch/{DEVICE}", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "../login?next=watch/door-1");
    let r = http
        .post(format!("{}/watch/{DEVICE}/token", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let cookie = sign_in(&s.url).await;
    let r = http
        .post(format!("{}/watch/{DEVICE}/token", s.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let t: Value = r.json().await.unwrap();
    let claims = key()
        .verify(t["token"].as_str().unwrap(), doorbell::turn::unix_now())
        .unwrap();
    assert_eq!(claims.user_id, "owner");
    assert_eq!(claims.devices, Some(vec![DEVICE.to_string()]));
    let r = http
        .get(format!("{}/watch/{DEVICE}", s.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("../viewer.js"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_link_leads_the_owner_through_sign_in_to_our_page_in_chromium() {
    common::init_logs();
    let s = serve(Limits::default()).await;
    let mut bell = Daemon::start(&config(&s.url, DEVICE));
    bell.until_device_connected(1).await;
    bell.press();
    let (notified, _) = bell.until("notified").await;
    let link = notified["link"].as_str().unwrap().to_string();
    let microphone = microphone_file(bell.dir.path(), VIEWER_TONE_HZ);
    let chromium = browser(&link, None, &microphone);
    // The link sends the owner to sign in; the form takes the password and
    // brings the owner back to the link.
    let mut page = chromium.page("/login?next=watch/").await;
    let start = Instant::now();
    loop {
        let ready = page
            .eval("!!document.getElementById('password') && document.readyState === 'complete'")
            .await;
        if ready == json!(true) {
            break;
        }
        assert!(start.elapsed() < WAIT, "no login form");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    page.eval(&format!(
        "document.getElementById('password').value = {PASSWORD:?}; \
         document.querySelector('form').submit(); true"
    ))
    .await;
    let stats = r#"(async () => {
      const d = window.doorbell;
      const out = { path: location.pathname, state: d ? d.name : "none", framesDecoded: 0,
                    talking: !!(d && d.talking) };
      if (!d || !d.pc) return JSON.stringify(out);
      (await d.pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") {
          out.framesDecoded = s.framesDecoded || 0; out.width = s.frameWidth;
        }
      });
      const t = document.getElementById("opentalk");
      if (t && !t.disabled && !t.checked) t.click();
      return JSON.stringify(out);
    })()"#;
    let report = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let r = page.eval(stats).await;
        let r: Value = serde_json::from_str(r.as_str().unwrap_or("null")).unwrap_or(Value::Null);
        if r["state"] == "connected"
            && r["framesDecoded"].as_u64() >= Some(60)
            && r["talking"] == true
        {
            break r;
        }
        assert!(
            start.elapsed() < WAIT * 2,
            "our page did not get going: {r}\ndoorbell log:\n{}",
            bell.log()
        );
    };
    assert_eq!(report["path"], "/watch/door-1", "{report}");
    assert_eq!(report["width"], 320, "{report}");
    let (_, seen) = bell.until("first_media").await;
    assert!(event_names(&seen).contains(&"connected".to_string()));
    // Open talk is on: the owner talks for a while (long enough for the
    // door to hear several bursts of the tone on a loaded machine), then
    // hangs up.
    tokio::time::sleep(Duration::from_secs(6)).await;
    page.eval("document.getElementById('hangup').click(), true")
        .await;
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended["reason"], "viewer_left");
    assert!(bell.log().contains("reason=user_ended"), "{}", bell.log());
    drop(chromium);
    let (level, freq) = gated_tone(&bell.dir.path().join("call-1.wav"));
    assert!(
        level > 100.0,
        "the page's microphone reached the door: rms {level}"
    );
    assert!((freq - f64::from(VIEWER_TONE_HZ)).abs() < 20.0, "{freq} Hz");
    assert!(bell.stop().success());
}

/// TURN credentials only inside a session, minted for each side: the
/// viewer's in `watch_ready`, the device's in its `watch_request`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_side_of_a_session_gets_turn_credentials_of_its_own() {
    use doorbell::turn::TurnRest;
    let cancel = CancellationToken::new();
    let server = doorbell::server::start(
        "127.0.0.1:0",
        ServerSettings {
            viewer_ice_servers: vec![],
            viewer_turn: Some(std::sync::Arc::new(TurnRest {
                urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
                secret: Secret::new("s3cret"),
                ttl: Duration::from_secs(600),
            })),
            fleet: FleetSettings {
                devices: vec![DEVICE.into()],
                token_key: Some(key()),
                ..FleetSettings::default()
            },
            ..ServerSettings::default()
        },
        cancel.clone(),
    )
    .await
    .unwrap();
    let port = server.addr.port();
    let mut device = FakeDevice::connect(port, DEVICE).await.unwrap();
    let mut viewer = Seed002Viewer::connect(port, &server.owner_token(DEVICE).0)
        .await
        .unwrap();
    viewer
        .send("watch_request", Some("r"), json!({ "device_id": DEVICE }))
        .await;
    let (ready, _) = viewer.until("watch_ready").await;
    let session = ready["payload"]["session_id"].as_str().unwrap().to_string();
    let request = device.until("watch_request").await;
    let turn_of = |m: &Value| m["payload"]["ice_servers"][0].clone();
    let (mine, its) = (turn_of(&ready), turn_of(&request));
    assert_eq!(mine["urls"], json!(["turn:127.0.0.1:3478?transport=udp"]));
    assert_eq!(mine["credentialType"], "password");
    let short = &session[..8];
    assert!(
        mine["username"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":viewer_owner_{short}")),
        "{mine}"
    );
    assert!(
        its["username"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":device_{short}")),
        "{its}"
    );
    assert_ne!(mine["credential"], its["credential"]);
    // Nothing public lists them.
    let config: Value = reqwest::get(format!("http://{}/config.json", server.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["iceServers"], json!([]), "{config}");
    cancel.cancel();
}
