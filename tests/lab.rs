//! The original design's world, as a new user meets it: the classroom's own
//! signaling server (tests/lab/server.py, written from the lab's protocol
//! notes: bare `new_peer`, ghost members, `bye` relayed only to whoever
//! remains) in both library generations, over HTTPS with a certificate made
//! the lab's way and over plain HTTP, WebSocket and long-polling; the lab's
//! own page (camera and microphone both sent, the socket.io client of the
//! matching major version) in headless Chromium; and the doorbell as users
//! run it, the real binary with `--events json`.
//!
//! Needs python-socketio 4 and 5, the socket.io clients from npm, openssl and
//! Chromium: `scripts/test` installs them. Nothing here is skipped when they
//! are missing: the tests fail and say what to run.

mod common;

use common::lab::*;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

use doorbell::signaling::protocol::Message;
use doorbell::signaling::tls::TrustSettings;

/// The page's microphone, a tone the doorbell's WAV must hold.
const PAGE_TONE_HZ: f32 = 660.0;

fn num(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(0.0)
}

fn signaling_section(server: &LabServer, cert: Option<&LabCert>) -> String {
    match cert {
        Some(c) => format!(
            "[signaling]\nurl = \"{}\"\npin_sha256 = \"{}\"\nreconnect_max = \"2s\"\n",
            server.url, c.fingerprint
        ),
        None => format!(
            "[signaling]\nurl = \"{}\"\nreconnect_max = \"2s\"\n",
            server.url
        ),
    }
}

/// One ring answered by the lab's page: checks everything the page and the
/// doorbell can show about it, then hangs up from the page.
async fn ring_answered_by_the_lab_page(
    server: &LabServer,
    bell: &mut Daemon,
    call: u64,
    cert: Option<&LabCert>,
    page_options: &str,
) {
    bell.press();
    let (notified, _) = bell.until("notified").await;
    let link = notified["link"].as_str().expect("a link").to_string();
    let room = room_of(&link);
    assert_eq!(server.rooms().await.get(&room), Some(&Value::from(1)));
    let url = format!("{link}{page_options}");
    let microphone = microphone_file(bell.dir.path(), PAGE_TONE_HZ);
    let browser = browser(&url, cert, &microphone);
    let mut page = browser.page("room=").await;
    let start = Instant::now();
    let stats = loop {
        let s = page.eval(PAGE_STATS).await;
        if num(&s, "framesDecoded") >= 60.0 && num(&s, "audioOut") >= 150.0 {
            break s;
        }
        assert!(
            s["error"].is_null(),
            "the page failed: {s}\ndoorbell log:\n{}",
            bell.log()
        );
        assert!(
            start.elapsed() < WAIT,
            "the call did not get going: {s}\ndoorbell log:\n{}",
            bell.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(stats["videoCodec"], "video/H264", "{stats}");
    assert!(num(&stats, "audioIn") > 50.0, "the door's sound: {stats}");
    // The page offered to send its camera; the doorbell answered `sendonly`
    // for video, so nothing goes to the Pi.
    assert_eq!(
        num(&stats, "videoOutBytes"),
        0.0,
        "the page sent video: {stats}"
    );
    let directions: Vec<&str> = stats["directions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        directions.contains(&"video:recvonly"),
        "the page's video transceiver: {directions:?}"
    );
    // Hang up from the page: it says `bye`, the server relays it.
    page.eval("document.getElementById('hangup').click(), true")
        .await;
    let (ended, seen) = bell.until("ended").await;
    assert_eq!(ended["reason"], "viewer_left", "{}", bell.log());
    let names = event_names(&seen);
    let joined = names.iter().position(|n| n == "viewer_joined");
    let answered = names.iter().position(|n| n == "answered");
    assert!(
        joined.is_some() && joined < answered,
        "viewer_joined (from the bare new_peer) comes before answered: {names:?}"
    );
    drop(browser);
    // Both said `bye`: nobody is left in the room on the server (the
    // doorbell's connection outlives the call, and must not keep it).
    server.until_room_is_gone(&room).await;
    let (level, freq) = gated_tone(&bell.dir.path().join(format!("call-{call}.wav")));
    assert!(
        level > 100.0,
        "the page's microphone reached the door: rms {level}"
    );
    assert!(
        (freq - f64::from(PAGE_TONE_HZ)).abs() < 20.0,
        "the door heard {freq} Hz, the page sent {PAGE_TONE_HZ} Hz"
    );
}

fn assert_clean_log(bell: &Daemon, generation: Generation) {
    let log = bell.log();
    assert!(log.contains(generation.log_words()), "{log}");
    for noise in [
        "malformed",
        "Unsupported Extension Type",
        "Failed to accept RTP",
        "Incoming unhandled RTCP",
        "failed to handle_inbound",
        "ALSA lib",
        "EngineIO Error",
    ] {
        assert!(!log.contains(noise), "{noise:?} in the log:\n{log}");
    }
    // Nothing at all to warn about in clean calls.
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

/// The lab README's setup over HTTPS, WebSocket allowed: the page as the lab
/// wrote it (non-trickle, with a data channel), then a page that trickles.
async fn https_websocket(generation: Generation) {
    init_logs();
    let cert = LabCert::make();
    let server = LabServer::start(LabServerOptions {
        generation,
        tls: Some(cert.files()),
        polling_only: false,
        backend: "aiohttp",
    });
    let mut bell = Daemon::start(&signaling_section(&server, Some(&cert)));
    bell.wait_log("connected to the signaling server").await;
    assert!(
        bell.log()
            .contains("over WebSocket, TLS certificate pinned"),
        "{}",
        bell.log()
    );
    ring_answered_by_the_lab_page(&server, &mut bell, 1, Some(&cert), "&datachannel=1").await;
    ring_answered_by_the_lab_page(&server, &mut bell, 2, Some(&cert), "&trickle=1").await;
    assert_clean_log(&bell, generation);
    assert!(bell.stop().success());
}

/// Flask-SocketIO under Werkzeug, as `socketio.run(app)` starts it without
/// eventlet, on plain HTTP and with WebSocket refused: long-polling.
async fn http_polling(generation: Generation) {
    init_logs();
    let server = LabServer::start(LabServerOptions {
        generation,
        tls: None,
        polling_only: true,
        backend: "flask",
    });
    let mut bell = Daemon::start(&signaling_section(&server, None));
    bell.wait_log("connected to the signaling server").await;
    assert!(
        bell.log().contains("over HTTP long-polling"),
        "{}",
        bell.log()
    );
    ring_answered_by_the_lab_page(&server, &mut bell, 1, None, "&trickle=1").await;
    ring_answered_by_the_lab_page(&server, &mut bell, 2, None, "").await;
    assert_clean_log(&bell, generation);
    assert!(bell.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_socketio_4_https_websocket_with_the_lab_page() {
    https_websocket(Generation::Sio4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_socketio_5_https_websocket_with_the_lab_page() {
    https_websocket(Generation::Sio5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_socketio_4_http_long_polling_with_the_lab_page() {
    http_polling(Generation::Sio4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_socketio_5_http_long_polling_with_the_lab_page() {
    http_polling(Generation::Sio5).await;
}

/// Field report: with the original server's bare `new_peer` lost, a viewer
/// that joined and never offered ended the call `unanswered` after 60 s
/// instead of `no_offer` after `call.offer_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_joins_and_never_offers_ends_the_call_no_offer() {
    init_logs();
    let server = LabServer::start(LabServerOptions {
        generation: Generation::Sio4,
        tls: None,
        polling_only: false,
        backend: "aiohttp",
    });
    let mut bell = Daemon::start(&format!(
        "{}[call]\noffer_timeout = \"3s\"\n",
        signaling_section(&server, None)
    ));
    bell.wait_log("connected to the signaling server").await;
    bell.press();
    let (notified, _) = bell.until("notified").await;
    let room = room_of(notified["link"].as_str().unwrap());
    let mut viewer = ViewerSignaling::connect(&server.url).await;
    viewer.send(Message::Join(room.clone())).await;
    assert_eq!(viewer.next().await, Message::Joined(room));
    let (_, _) = bell.until("viewer_joined").await;
    let joined_at = Instant::now();
    let (ended, _) = bell.until("ended").await;
    let waited = joined_at.elapsed();
    eprintln!("no_offer {waited:?} after viewer_joined (call.offer_timeout 3 s)");
    assert_eq!(ended["reason"], "no_offer");
    assert!(
        waited >= Duration::from_millis(2500) && waited <= Duration::from_millis(4500),
        "no_offer after {waited:?}, call.offer_timeout is 3 s"
    );
    assert!(!bell.log().contains("malformed"), "{}", bell.log());
    assert!(bell.stop().success());
}

/// Field report: a viewer whose browser vanished (no `bye`: the original
/// server does not tell anyone about a disconnect) ended the call 13.7-13.9 s
/// later with `call.media_timeout` at 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_vanishes_ends_the_call_within_the_media_timeout() {
    init_logs();
    let cert = LabCert::make();
    let server = LabServer::start(LabServerOptions {
        generation: Generation::Sio5,
        tls: Some(cert.files()),
        polling_only: false,
        backend: "aiohttp",
    });
    let media_timeout = Duration::from_secs(4);
    let mut bell = Daemon::start(&format!(
        "{}[call]\nmedia_timeout = \"{}s\"\n",
        signaling_section(&server, Some(&cert)),
        media_timeout.as_secs()
    ));
    bell.wait_log("connected to the signaling server").await;
    bell.press();
    let (notified, _) = bell.until("notified").await;
    let microphone = microphone_file(bell.dir.path(), PAGE_TONE_HZ);
    let mut browser = browser(notified["link"].as_str().unwrap(), Some(&cert), &microphone);
    let mut page = browser.page("room=").await;
    let start = Instant::now();
    loop {
        let s = page.eval(PAGE_STATS).await;
        if num(&s, "framesDecoded") >= 30.0 && num(&s, "audioOut") >= 50.0 {
            break;
        }
        assert!(start.elapsed() < WAIT, "the call did not get going: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser.kill();
    let gone = Instant::now();
    let (ended, _) = bell.until("ended").await;
    let took = gone.elapsed();
    eprintln!(
        "media_lost {took:?} after the browser was killed (call.media_timeout {media_timeout:?})"
    );
    assert_eq!(ended["reason"], "media_lost", "{}", bell.log());
    assert!(
        took <= media_timeout + Duration::from_secs(1),
        "media_lost {took:?} after the viewer vanished; call.media_timeout is {media_timeout:?}"
    );
    // The appliance is ready for the next press.
    bell.press();
    let (ringing, _) = bell.until("notified").await;
    assert_eq!(ringing["call"], 2);
    assert!(bell.stop().success());
}

fn check(config: &str, dir: &Path) -> String {
    let path = dir.join("check.toml");
    std::fs::write(
        &path,
        format!("{config}[audio]\nmicrophone = \"tone\"\nspeaker = \"none\"\n[chime]\nsound = \"none\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_doorbell"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn signaling_line(report: &str) -> String {
    let mut lines = report.lines().skip_while(|l| !l.starts_with("signaling"));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no signaling line:\n{report}"));
    match lines.next() {
        Some(fix) if fix.trim_start().starts_with("fix:") => format!("{first}\n{fix}"),
        _ => first.to_string(),
    }
}

/// The lab's certificate names the server only in its common name, so no
/// name check passes for it; pinning its fingerprint trusts exactly it. A
/// different certificate at the same address is refused, with the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_certificate_connects_and_another_is_refused() {
    init_logs();
    let right = LabCert::make();
    let wrong = LabCert::make();
    let server = LabServer::start(LabServerOptions {
        generation: Generation::Sio4,
        tls: Some(right.files()),
        polling_only: false,
        backend: "aiohttp",
    });
    let dir = tempfile::tempdir().unwrap();
    let url = &server.url;

    let l = signaling_line(&check(
        &format!(
            "[signaling]\nurl = \"{url}\"\npin_sha256 = \"{}\"\n",
            right.fingerprint
        ),
        dir.path(),
    ));
    assert!(l.contains("OK") && l.contains("certificate pinned"), "{l}");
    assert!(l.contains("Engine.IO 3"), "{l}");

    let l = signaling_line(&check(
        &format!(
            "[signaling]\nurl = \"{url}\"\npin_sha256 = \"{}\"\n",
            wrong.fingerprint
        ),
        dir.path(),
    ));
    assert!(l.contains("FAIL") && l.contains("is not pinned"), "{l}");
    assert!(
        l.contains(&right.fingerprint),
        "shows what the server presents: {l}"
    );
    assert!(l.contains("someone is in between"), "{l}");

    // What docs/install.md used to advise: trust it as a CA. The name check
    // still fails, and the fix is the pin.
    let l = signaling_line(&check(
        &format!(
            "[signaling]\nurl = \"{url}\"\nca_file = \"{}\"\n",
            right.cert.display()
        ),
        dir.path(),
    ));
    assert!(
        l.contains("FAIL") && l.contains("only in its common name (127.0.0.1)"),
        "{l}"
    );
    assert!(
        l.contains(&format!("signaling.pin_sha256 = \"{}\"", right.fingerprint)),
        "{l}"
    );

    let l = signaling_line(&check(
        &format!("[signaling]\nurl = \"{url}\"\n"),
        dir.path(),
    ));
    assert!(l.contains("FAIL") && l.contains("self-signed"), "{l}");

    // docs/install.md's other way: a proper certificate (with the address as
    // subjectAltName) trusted as `ca_file`, names still checked.
    let proper = LabCert::make_proper();
    let server_proper = LabServer::start(LabServerOptions {
        generation: Generation::Sio4,
        tls: Some(proper.files()),
        polling_only: false,
        backend: "aiohttp",
    });
    let l = signaling_line(&check(
        &format!(
            "[signaling]\nurl = \"{}\"\nca_file = \"{}\"\n",
            server_proper.url,
            proper.cert.display()
        ),
        dir.path(),
    ));
    assert!(
        l.contains("OK") && l.contains("certificate verified"),
        "{l}"
    );
    // ... but not under another name than the one it was made for.
    let l = signaling_line(&check(
        &format!(
            "[signaling]\nurl = \"https://localhost:{}\"\nca_file = \"{}\"\n",
            server_proper.port,
            proper.cert.display()
        ),
        dir.path(),
    ));
    assert!(
        l.contains("FAIL") && l.contains("it is for 127.0.0.1, not localhost"),
        "{l}"
    );
    drop(server_proper);

    // The daemon with the wrong pin: refused, said once with the cause, and
    // a press fails cleanly instead of hanging.
    let mut bell = Daemon::start(&format!(
        "[signaling]\nurl = \"{url}\"\npin_sha256 = \"{}\"\n",
        wrong.fingerprint
    ));
    bell.wait_log("is not pinned in signaling.pin_sha256").await;
    bell.press();
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended["reason"], "signaling_unavailable");
    assert!(!bell.log().contains("connected to the signaling server"));
    assert!(bell.stop().success());

    // With the right pin, a whole call (the viewer pins it too).
    let mut bell = Daemon::start(&signaling_section(&server, Some(&right)));
    bell.wait_log("connected to the signaling server").await;
    bell.press();
    let (notified, _) = bell.until("notified").await;
    let room = room_of(notified["link"].as_str().unwrap());
    let trust = TrustSettings {
        pin_sha256: vec![right.fingerprint.clone()],
        ..Default::default()
    };
    let report = view_call_trusting(
        url,
        trust,
        &room,
        30,
        (320, 240),
        Duration::from_secs(1),
        1000.0,
        Duration::from_secs(1),
    )
    .await;
    assert!(report.decoded_frames >= 30, "{report:?}");
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended["reason"], "viewer_left");
    assert!(bell.stop().success());
}

/// `signaling.engine_io` set by hand is kept, and a server of the other
/// generation is refused with a message that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_engine_io_version_is_kept_and_a_mismatch_explained() {
    init_logs();
    let server = LabServer::start(LabServerOptions {
        generation: Generation::Sio4,
        tls: None,
        polling_only: false,
        backend: "aiohttp",
    });
    let dir = tempfile::tempdir().unwrap();
    let config = |v: &str| {
        format!(
            "[signaling]\nurl = \"{}\"\nengine_io = \"{v}\"\n",
            server.url
        )
    };
    let l = signaling_line(&check(&config("3"), dir.path()));
    assert!(l.contains("OK") && l.contains("Engine.IO 3"), "{l}");
    let l = signaling_line(&check(&config("4"), dir.path()));
    assert!(
        l.contains("FAIL")
            && l.contains("the server refuses Engine.IO 4 (signaling.engine_io is set"),
        "{l}"
    );
    assert!(
        l.contains("unsupported version"),
        "the server's own words: {l}"
    );
    let l = signaling_line(&check(&config("auto"), dir.path()));
    assert!(l.contains("OK") && l.contains("Engine.IO 3"), "{l}");
}

/// Every transport and TLS combination of both generations, signaling and
/// media, with the webrtc-rs viewer (cheaper than a browser) and the
/// doorbell in this process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_of_both_generations_carries_a_call() {
    init_logs();
    let cert = LabCert::make();
    for generation in [Generation::Sio4, Generation::Sio5] {
        for (tls, polling_only) in [(false, false), (false, true), (true, false), (true, true)] {
            let what = format!("{generation:?} tls={tls} polling_only={polling_only}");
            let server = LabServer::start(LabServerOptions {
                generation,
                tls: tls.then(|| cert.files()),
                polling_only,
                backend: "aiohttp",
            });
            let dir = tempfile::tempdir().unwrap();
            let mut config = loopback_config(&server.url, dir.path());
            let trust = if tls {
                TrustSettings {
                    pin_sha256: vec![cert.fingerprint.clone()],
                    ..Default::default()
                }
            } else {
                TrustSettings::default()
            };
            config.signaling.pin_sha256 = trust.pin_sha256.clone();
            let mut bell = Bell::start(&config).await;
            bell.wait_connected().await;
            assert!(bell.ring().await.starts_with("ringing "), "{what}");
            let (notified, _) = bell.until("notified").await;
            let room = room_of(notified.to_json()["link"].as_str().unwrap());
            let report = view_call_trusting(
                &server.url,
                trust,
                &room,
                30,
                (320, 240),
                Duration::from_secs(1),
                1000.0,
                Duration::from_secs(1),
            )
            .await;
            assert!(report.decoded_frames >= 30, "{what}: {report:?}");
            let (ended, seen) = bell.until("ended").await;
            assert_eq!(ended.to_json()["reason"], "viewer_left", "{what}");
            assert!(names(&seen).contains(&"viewer_joined"), "{what}");
            bell.stop().await;
        }
    }
}
