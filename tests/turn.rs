//! TURN without a standing password, against a real coturn on loopback:
//! the doorbell mints credentials per call, `doorbell serve` per viewer of a
//! live ring, both peers relay-only so every packet goes through the relay;
//! expired credentials are refused and the call ends cleanly; and a TURN
//! password never reaches anyone who has not joined a live ring.

mod common;

use common::coturn::Coturn;
use common::*;
use doorbell::call::event::EndReason;
use doorbell::peer::viewer::{ViewerOptions, ViewerPeer};
use doorbell::peer::PeerSettings;
use doorbell::secret::Secret;
use doorbell::server::ServerSettings;
use doorbell::signaling::protocol::{Message, SessionDescription};
use doorbell::spec::ice::IceServer;
use doorbell::turn::{mint_until, unix_now, TurnRest};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "turn-rest-test-secret-3f9a";

async fn server_with(settings: ServerSettings) -> (String, CancellationToken) {
    let cancel = CancellationToken::new();
    let server = doorbell::server::start("127.0.0.1:0", settings, cancel.clone())
        .await
        .expect("server starts");
    (format!("http://{}", server.addr), cancel)
}

fn secret_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("turn-secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_call_goes_through_coturn_with_credentials_minted_for_it() {
    init_logs();
    let turn = Coturn::start(SECRET);
    let (url, stop_server) = server_with(ServerSettings {
        viewer_ice_servers: vec![],
        viewer_turn: Some(Arc::new(TurnRest {
            urls: vec![turn.url()],
            secret: Secret::new(SECRET),
            ttl: Duration::from_secs(600),
        })),
        ..ServerSettings::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = loopback_config(&url, dir.path());
    config.ice.turn_urls = vec![turn.url()];
    config.ice.turn_secret_file = Some(secret_file(dir.path()));
    config.ice.relay_only = true;
    let mut bell = Bell::start(&config).await;
    bell.wait_connected().await;

    assert!(bell.ring().await.starts_with("ringing "));
    let (notified, _) = bell.until("notified").await;
    let room = room_of(notified.to_json()["link"].as_str().unwrap());
    let report = view_call_as(
        &url,
        &room,
        Viewing {
            trust: Default::default(),
            frames: 30,
            size: (320, 240),
            talk: Duration::from_secs(1),
            tone_hz: 1000.0,
            listen: Duration::from_secs(1),
            relay_only: true,
        },
    )
    .await;
    assert!(report.decoded_frames >= 30, "{report:?}");
    for (side, types) in [
        ("offer", &report.offer_candidates),
        ("answer", &report.answer_candidates),
    ] {
        assert!(
            !types.is_empty() && types.iter().all(|t| t == "relay"),
            "the {side} has relayed candidates only: {types:?}"
        );
    }
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "viewer_left", "{ended:?}");

    // The TURN server saw both sides, each under a user name that is an
    // expiry time and who it is for, and checked both passwords.
    let log = turn.log();
    let now = unix_now();
    for tag in ["doorbell", "viewer"] {
        let expiry: Vec<u64> = log
            .split(&format!(":{tag}>"))
            .filter_map(|before| before.rsplit('<').next()?.parse().ok())
            .collect();
        assert!(
            expiry.iter().any(|&t| t > now && t <= now + 3600 + 60),
            "coturn logged no allocation for a fresh `{tag}` credential:\n{log}"
        );
    }
    assert!(
        !log.lines()
            .any(|l| l.contains("error 401") && !l.contains("user <>")),
        "a credential was refused:\n{log}"
    );
    bell.stop().await;
    stop_server.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_credentials_are_refused_and_the_call_fails_cleanly() {
    init_logs();
    let turn = Coturn::start(SECRET);
    let secret = Secret::new(SECRET);
    let an_hour_ago = unix_now() - 3600;
    let expired = |tag| mint_until(&[turn.url()], &secret, an_hour_ago, tag);
    // The server hands the viewer an expired credential, the doorbell has one.
    let (url, stop_server) = server_with(ServerSettings {
        viewer_ice_servers: vec![expired("viewer")],
        ..ServerSettings::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = loopback_config(&url, dir.path());
    config.ice.servers = vec![expired("doorbell")];
    config.ice.relay_only = true;
    config.call.media_timeout = Duration::from_secs(3);
    let mut bell = Bell::start(&config).await;
    bell.wait_connected().await;

    assert!(bell.ring().await.starts_with("ringing "));
    let (notified, _) = bell.until("notified").await;
    let room = room_of(notified.to_json()["link"].as_str().unwrap());
    let mut sig = ViewerSignaling::connect(&url).await;
    sig.send(Message::Join(room.clone())).await;
    let Message::IceServers(servers) = sig.next().await else {
        panic!("the viewer of a live ring gets its ICE servers first")
    };
    assert_eq!(sig.next().await, Message::Joined(room.clone()));
    let (viewer, _streams, offer) = ViewerPeer::offer(
        &PeerSettings {
            ice_servers: servers,
            include_loopback: true,
            relay_only: true,
            ..Default::default()
        },
        ViewerOptions::default(),
        Duration::from_secs(3),
    )
    .await
    .expect("the viewer still makes an offer");
    assert!(
        candidate_types(&offer).is_empty(),
        "no relay for an expired credential, and nothing else is allowed: {offer}"
    );
    sig.send(Message::Invite(SessionDescription::offer(offer)))
        .await;
    let Message::Ok(answer) = sig.next().await else {
        panic!("the doorbell answers")
    };
    assert!(
        candidate_types(&answer.sdp).is_empty(),
        "the doorbell got no relay either: {}",
        answer.sdp
    );
    viewer.accept(&answer.sdp).await.expect("answer accepted");
    let (ended, _) = bell.until("ended").await;
    let reason = ended.to_json()["reason"].as_str().unwrap().to_string();
    assert_eq!(reason, EndReason::MediaFailed.as_str(), "{ended:?}");
    viewer.close().await;
    let log = turn.log();
    for tag in ["doorbell", "viewer"] {
        let user = format!("user <{an_hour_ago}:{tag}>");
        assert!(
            log.lines()
                .any(|l| l.contains(&user) && l.contains("error 401")),
            "coturn refused the expired `{tag}` credential with 401:\n{log}"
        );
    }

    // The doorbell is idle and rings again.
    assert!(bell.ring().await.starts_with("ringing "));
    bell.stop().await;
    stop_server.cancel();
}

/// The body of `GET path` from the server.
async fn http_get(url: &str, path: &str) -> String {
    let host = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_passwords_go_only_to_the_viewer_of_a_live_ring() {
    init_logs();
    let stun = IceServer {
        urls: vec!["stun:127.0.0.1:3478".into()],
        username: String::new(),
        credential: String::new(),
    };
    let fixed = IceServer {
        urls: vec!["turn:127.0.0.1:3478".into()],
        username: "door".into(),
        credential: "CANARY-FIXED-PASSWORD".into(),
    };
    let (url, stop_server) = server_with(ServerSettings {
        viewer_ice_servers: vec![stun.clone(), fixed.clone()],
        viewer_turn: Some(Arc::new(TurnRest {
            urls: vec!["turn:127.0.0.1:3478".into()],
            secret: Secret::new(SECRET),
            ttl: Duration::from_secs(600),
        })),
        ..ServerSettings::default()
    })
    .await;

    // Anyone may fetch the page's config: STUN only.
    let config = http_get(&url, "/config.json").await;
    assert!(config.contains("stun:127.0.0.1:3478"), "{config}");
    assert!(
        !config.contains("CANARY") && !config.contains("turn:"),
        "{config}"
    );

    // The first member of a room (the doorbell, or someone guessing) gets
    // no servers; the second gets them, with a credential of its own.
    let mut door = ViewerSignaling::connect(&url).await;
    door.send(Message::Join("a-live-ring".into())).await;
    assert_eq!(door.next().await, Message::Created("a-live-ring".into()));
    let mut viewer = ViewerSignaling::connect(&url).await;
    viewer.send(Message::Join("a-live-ring".into())).await;
    let Message::IceServers(servers) = viewer.next().await else {
        panic!("the viewer gets its servers before `joined`")
    };
    assert_eq!(viewer.next().await, Message::Joined("a-live-ring".into()));
    assert_eq!(servers[..2], [stun, fixed]);
    let minted = &servers[2];
    let (expiry, tag) = minted.username.split_once(':').unwrap();
    assert_eq!(tag, "viewer");
    let expiry: u64 = expiry.parse().unwrap();
    let now = unix_now();
    assert!(
        (now + 590..=now + 610).contains(&expiry),
        "{expiry} vs {now}"
    );
    assert_eq!(
        minted,
        &mint_until(&minted.urls, &Secret::new(SECRET), expiry, "viewer"),
        "the password is the HMAC of the user name"
    );
    // The door's side hears of the viewer, and nothing else.
    assert_eq!(
        door.next().await,
        Message::NewPeer(Some("a-live-ring".into()))
    );

    // A third party is told "full" and gets nothing.
    let mut third = ViewerSignaling::connect(&url).await;
    third.send(Message::Join("a-live-ring".into())).await;
    assert_eq!(third.next().await, Message::Full("a-live-ring".into()));
    stop_server.cancel();
}
