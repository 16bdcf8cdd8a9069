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
    candidate_from, candidate_json, post_json, split_candidates, SeedServer, SseStream,
};
use common::{talk_tone, WAIT};
use doorbell::media::h264::H264Decoder;
use doorbell::peer::viewer::{ViewerPeer, ViewerStreams};
use doorbell::peer::PeerSettings;

const VIEWER_TONE_HZ: f32 = 610.0;
const VIEWER: &str = "owner-phone";

fn server() -> SeedServer {
    SeedServer::start("sse.py", &["--ping", "1", "--ice-url", "stun:127.0.0.1:9"])
}

fn config(server: &SeedServer) -> String {
    format!(
        "[signaling]\nprotocol = \"sse\"\nurl = \"{}\"\nheartbeat = \"1s\"\n\
         reconnect_min = \"200ms\"\nreconnect_max = \"1s\"\n\
         [call]\nmedia_timeout = \"2s\"\n",
        server.url
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
async fn join(server: &SeedServer, session: &str) -> Joined {
    let ice = server.get("/iceServers").await;
    assert!(ice["urls"].is_array(), "{ice}");
    let status = post_json(server, &format!("/register/{session}/{VIEWER}"), &json!({})).await;
    assert_eq!(status, 200);
    let mut events = SseStream::open(server, session, VIEWER).await;
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
    assert_eq!(post_json(server, &path, &answer_msg).await, 200);
    for c in &candidates {
        let m = message("ice-candidate", candidate_json(c));
        assert_eq!(post_json(server, &path, &m).await, 200);
    }
    assert_eq!(
        post_json(server, &path, &message("ice-candidate", Value::Null)).await,
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

async fn decode(peer: &ViewerPeer, streams: &mut ViewerStreams, frames: usize) {
    let mut decoder = H264Decoder::new().unwrap();
    let (mut decoded, start) = (0, Instant::now());
    while decoded < frames {
        assert!(
            start.elapsed() < WAIT,
            "decoded {decoded} of {frames} frames in time"
        );
        tokio::select! {
            Some(unit) = streams.video.recv() => {
                if let Ok(Some(_)) = decoder.decode(&unit.data) {
                    decoded += 1;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                let _ = peer.request_keyframe().await;
            }
        }
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
        let mut j = join(&server, &session).await;
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
        decode(&j.peer, &mut j.streams, 20).await;
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
