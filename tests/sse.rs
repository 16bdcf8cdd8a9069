//! Seed 004's world: the doorbell (the real binary) as the first peer of an
//! SSE session on tests/servers/sse.py, a server written from the seed's
//! text; the viewer registers second, so the doorbell makes the offer. The
//! viewer is webrtc-rs (answering, trickling) or the server's page in
//! Chromium.

mod common;

use serde_json::{json, Value};
use std::time::{Duration, Instant};

use common::lab::{browser, event_names, gated_tone, microphone_file, Daemon};
use common::seeds::{
    candidate_from, candidate_json, decode_frames, get_json, post_json, split_candidates,
    SeedServer, SseStream,
};
use common::{talk_tone, WAIT};
use doorbell::peer::viewer::{ViewerPeer, ViewerStreams};
use doorbell::peer::PeerSettings;

const VIEWER_TONE_HZ: f32 = 610.0;
const VIEWER: &str = "owner-phone";

fn server() -> SeedServer {
    SeedServer::start("sse.py", &["--ping", "1", "--ice-url", "stun:127.0.0.1:9"])
}

fn config(server: &SeedServer) -> String {
    config_for(&server.url)
}

fn config_for(url: &str) -> String {
    format!(
        "[signaling]\nprotocol = \"sse\"\nurl = \"{url}\"\nheartbeat = \"1s\"\n\
         reconnect_min = \"200ms\"\nreconnect_max = \"1s\"\n\
         [call]\nmedia_timeout = \"2s\"\n"
    )
}

/// The session id from the owner's link.
fn session_of(link: &str) -> String {
    link.split("session=")
        .nth(1)
        .expect("a session in the link")
        .to_string()
}

struct Joined {
    peer: ViewerPeer,
    streams: ViewerStreams,
    offer: String,
    doorbell_candidates: usize,
    events: SseStream,
}

/// Registers as the second peer, takes the doorbell's offer, answers it
/// with trickle, and exchanges candidates until the doorbell's end.
async fn join(base: &str, session: &str) -> Joined {
    let ice = get_json(base, "/iceServers").await;
    assert!(ice["urls"].is_array(), "{ice}");
    let status = post_json(base, &format!("/register/{session}/{VIEWER}"), &json!({})).await;
    assert_eq!(status, 200);
    let mut events = SseStream::open(base, session, VIEWER).await;
    let offer = events.next().await;
    assert_eq!(offer["type"], "offer", "the doorbell offers: {offer}");
    assert_eq!(offer["senderId"], "doorbell");
    let offer_sdp = offer["payload"]["sdp"].as_str().unwrap().to_string();
    let (peer, streams, answer) = ViewerPeer::answer(
        &PeerSettings {
            include_loopback: true,
            ..Default::default()
        },
        &offer_sdp,
        Duration::from_secs(3),
    )
    .await
    .expect("the viewer answers the doorbell's offer");
    let (bare, candidates) = split_candidates(&answer);
    let message = |kind: &str, payload: Value| json!({ "type": kind, "payload": payload, "target": "doorbell" });
    let path = format!("/message/{session}/{VIEWER}");
    let answer_msg = message("answer", json!({ "type": "answer", "sdp": bare }));
    assert_eq!(post_json(base, &path, &answer_msg).await, 200);
    for c in &candidates {
        let m = message("ice-candidate", candidate_json(c));
        assert_eq!(post_json(base, &path, &m).await, 200);
    }
    assert_eq!(
        post_json(base, &path, &message("ice-candidate", Value::Null)).await,
        200
    );
    let mut doorbell_candidates = 0;
    loop {
        let e = events.next().await;
        assert_eq!(e["type"], "ice-candidate", "{e}");
        match candidate_from(&e["payload"]) {
            Some(c) => {
                doorbell_candidates += 1;
                peer.add_candidate(c).await.expect("a usable candidate");
            }
            None if e["payload"].is_null() => break,
            None => panic!("{e}"),
        }
    }
    Joined {
        peer,
        streams,
        offer: offer_sdp,
        doorbell_candidates,
        events,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doorbell_offers_in_a_seed_004_session_and_its_stream_comes_back_when_dropped() {
    common::init_logs();
    let server = server();
    let mut bell = Daemon::start(&config(&server));
    bell.wait_log("the SSE signaling server answers").await;
    for call in 1..=2u64 {
        bell.press();
        let (notified, _) = bell.until("notified").await;
        let link = notified["link"].as_str().unwrap().to_string();
        assert!(
            link.starts_with(&format!("{}/?session=", server.url)),
            "{link}"
        );
        let session = session_of(&link);
        assert_eq!(session.len(), 22, "a fresh unguessable session id");
        let sessions = format!("/test/sessions/{session}");
        server
            .until(&sessions, "the doorbell registered and listens", |s| {
                s["streams_opened"]["doorbell"].as_u64() >= Some(1)
            })
            .await;
        if call == 1 {
            // The doorbell's stream drops while it waits: it opens it
            // again, and the viewer's arrival still reaches it.
            assert_eq!(
                server.post(&format!("/test/drop/{session}/doorbell")).await,
                200
            );
            server
                .until(&sessions, "the stream is opened again", |s| {
                    s["streams_opened"]["doorbell"].as_u64() >= Some(2)
                })
                .await;
        }
        let mut j = join(&server.url, &session).await;
        assert!(
            !j.offer.contains("a=candidate"),
            "the offer goes out before gathering (trickle)"
        );
        assert!(
            j.doorbell_candidates > 0,
            "the doorbell trickled its candidates"
        );
        let talker = talk_tone(
            j.peer.audio_track().unwrap(),
            VIEWER_TONE_HZ,
            Duration::from_secs(2),
        );
        decode_frames(&j.peer, &mut j.streams, 20).await;
        let (_, seen) = bell.until("connected").await;
        let names = event_names(&seen);
        assert!(names.contains(&"answered".to_string()), "{names:?}");
        talker.await.unwrap();
        // The viewer hangs up: its connection closes and the doorbell,
        // after call.media_timeout, ends the call.
        j.peer.close().await;
        drop(j.events);
        let (ended, _) = bell.until("ended").await;
        assert!(
            ["media_lost", "viewer_left"].contains(&ended["reason"].as_str().unwrap()),
            "{ended}"
        );
        let (level, freq) = gated_tone(&bell.dir.path().join(format!("call-{call}.wav")));
        assert!(level > 100.0, "the viewer reached the door: rms {level}");
        assert!((freq - f64::from(VIEWER_TONE_HZ)).abs() < 20.0, "{freq} Hz");
        // Every message the doorbell sent is one of the seed's.
        let s = server.get(&sessions).await;
        for m in s["messages"].as_array().unwrap() {
            if m["from"] == "doorbell" {
                assert!(
                    ["offer", "ice-candidate"].contains(&m["type"].as_str().unwrap()),
                    "{m}"
                );
            }
        }
    }
    assert!(bell.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_page_in_chromium_answers_the_doorbells_offer() {
    common::init_logs();
    let server = server();
    let mut bell = Daemon::start(&config(&server));
    bell.wait_log("the SSE signaling server answers").await;
    bell.press();
    let (notified, _) = bell.until("notified").await;
    let link = notified["link"].as_str().unwrap().to_string();
    let microphone = microphone_file(bell.dir.path(), VIEWER_TONE_HZ);
    let chromium = browser(&link, None, &microphone);
    let mut page = chromium.page("session=").await;
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
    let (_, seen) = bell.until("first_media").await;
    assert!(event_names(&seen).contains(&"connected".to_string()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    page.eval("document.getElementById('end').click(), true")
        .await;
    bell.until("ended").await;
    drop(chromium);
    let (level, freq) = gated_tone(&bell.dir.path().join("call-1.wav"));
    assert!(
        level > 100.0,
        "the page's microphone reached the door: rms {level}"
    );
    assert!((freq - f64::from(VIEWER_TONE_HZ)).abs() < 20.0, "{freq} Hz");
    assert!(bell.stop().success());
}

/// `doorbell serve` speaks seed 004 too: the same doorbell and viewer
/// through our own server, then its viewer page (chosen by the
/// `?session=` link) in Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doorbell_serve_relays_seed_004_sessions_to_the_viewer_page_too() {
    common::init_logs();
    let server = common::test_server().await;
    let mut bell = Daemon::start(&config_for(&server.url));
    bell.wait_log("the SSE signaling server answers").await;
    // The webrtc-rs viewer, as against the seed's server.
    bell.press();
    let (notified, _) = bell.until("notified").await;
    let link = notified["link"].as_str().unwrap().to_string();
    let session = session_of(&link);
    let mut j = join(&server.url, &session).await;
    assert!(j.doorbell_candidates > 0);
    decode_frames(&j.peer, &mut j.streams, 20).await;
    bell.until("connected").await;
    j.peer.close().await;
    drop(j.events);
    bell.until("ended").await;
    // Our page, from the link.
    bell.press();
    let (notified, _) = bell.until("notified").await;
    let link = notified["link"].as_str().unwrap().to_string();
    assert!(link.contains("/?session="), "{link}");
    let microphone = microphone_file(bell.dir.path(), VIEWER_TONE_HZ);
    let chromium = browser(&link, None, &microphone);
    let mut page = chromium.page("session=").await;
    let stats = r#"(async () => {
      const d = window.doorbell;
      const out = { state: d ? d.name : "none", framesDecoded: 0 };
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
    let start = Instant::now();
    let report = loop {
        let r = page.eval(stats).await;
        let r: Value = serde_json::from_str(r.as_str().unwrap_or("null")).unwrap_or(Value::Null);
        if r["state"] == "connected" && r["framesDecoded"].as_u64() >= Some(60) {
            break r;
        }
        assert!(
            start.elapsed() < WAIT,
            "our page did not get going: {r}\ndoorbell log:\n{}",
            bell.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(report["width"], 320, "{report}");
    // Open talk is on: the owner talks for a while, then hangs up.
    tokio::time::sleep(Duration::from_secs(4)).await;
    page.eval("document.getElementById('hangup').click(), true")
        .await;
    bell.until("ended").await;
    drop(chromium);
    let (level, freq) = gated_tone(&bell.dir.path().join("call-2.wav"));
    assert!(
        level > 100.0,
        "the page's microphone reached the door: rms {level}"
    );
    assert!((freq - f64::from(VIEWER_TONE_HZ)).abs() < 20.0, "{freq} Hz");
    assert!(bell.stop().success());
}

/// `doorbell serve` hands TURN credentials only to a registered peer that
/// says who it is; the seed's bare `GET /iceServers` gets the public ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doorbell_serve_mints_turn_credentials_only_for_a_sessions_peers() {
    use doorbell::secret::Secret;
    use doorbell::turn::TurnRest;
    let cancel = tokio_util::sync::CancellationToken::new();
    let server = doorbell::server::start(
        "127.0.0.1:0",
        doorbell::server::ServerSettings {
            viewer_turn: Some(std::sync::Arc::new(TurnRest {
                urls: vec!["turn:127.0.0.1:3478?transport=udp".into()],
                secret: Secret::new("s3cret"),
                ttl: Duration::from_secs(600),
            })),
            ..doorbell::server::ServerSettings::default()
        },
        cancel.clone(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.addr);
    let bare = get_json(&base, "/iceServers").await;
    assert_eq!(bare["credential"], "", "{bare}");
    assert!(bare["urls"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u.as_str().unwrap().starts_with("stun:")));
    let outsider = get_json(&base, "/iceServers?session=abc&peer=me").await;
    assert_eq!(outsider["credential"], "", "not registered: {outsider}");
    assert_eq!(post_json(&base, "/register/abc/me", &json!({})).await, 200);
    let member = get_json(&base, "/iceServers?session=abc&peer=me").await;
    assert!(
        !member["credential"].as_str().unwrap().is_empty(),
        "{member}"
    );
    assert!(
        member["username"].as_str().unwrap().ends_with(":sse"),
        "{member}"
    );
    // Bad ids and strangers are refused with the seed's kind of message.
    assert_eq!(
        post_json(&base, "/register/a%2Fb/me", &json!({})).await,
        400
    );
    let stranger = json!({"type": "offer", "payload": {}, "target": "me"});
    assert_eq!(
        post_json(&base, "/message/abc/stranger", &stranger).await,
        403
    );
    let bad = json!({"type": "hack", "payload": {}, "target": "me"});
    assert_eq!(post_json(&base, "/message/abc/me", &bad).await, 400);
    cancel.cancel();
}
