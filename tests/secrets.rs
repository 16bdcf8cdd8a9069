//! No secret in any log, at any level: a whole call with every crate logging
//! at trace level (ours and every dependency's: webrtc-rs, hyper, reqwest,
//! teloxide, tungstenite), with canary values for each secret the daemon
//! holds: the room name (random; the call's only secret), TURN credentials,
//! the Telegram bot token, a webhook's path, query and header. None may
//! appear on standard error; the event stream on standard output carries the
//! room and the link by design.

mod common;
#[path = "common/fake_telegram.rs"]
mod fake_telegram;

use common::coturn::Coturn;
use common::lab::Daemon;
use common::*;
use fake_telegram::FakeTelegram;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "654321:CANARY-BOT-TOKEN-zYx9";
const TURN_USER: &str = "CANARY-TURN-USER";
const TURN_PASS: &str = "CANARY-TURN-PASS";
const TURN_SECRET: &str = "CANARY-TURN-REST-SECRET";
const HOOK_PATH: &str = "/hook/CANARY-HOOK-PATH";
const HOOK_QUERY: &str = "key=CANARY-HOOK-QUERY";
const HOOK_HEADER: &str = "Bearer CANARY-HOOK-HEADER";

/// A webhook receiver that answers every request 200.
async fn webhook_receiver() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_call_at_trace_level_logs_no_secret() {
    init_logs();
    let server = test_server().await;
    let telegram = FakeTelegram::start(TOKEN).await;
    let hook = webhook_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A real TURN server taking TURN REST credentials: the doorbell mints
    // one for the call and really uses it.
    let turn = Coturn::start(TURN_SECRET);
    let turn_secret = dir.path().join("turn-secret");
    std::fs::write(&turn_secret, TURN_SECRET).unwrap();
    std::fs::set_permissions(&turn_secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = format!(
        "[signaling]\nurl = \"{url}\"\n\
         [[ice.servers]]\nurls = [\"turn:127.0.0.1:9?transport=udp\"]\n\
         username = \"{TURN_USER}\"\ncredential = \"{TURN_PASS}\"\n\
         [ice]\ninclude_loopback = true\nturn_urls = [\"{turn_url}\"]\nturn_secret_file = \"{turn_secret}\"\n\
         [video]\nwidth = 320\nheight = 240\n\
         [audio]\nmicrophone = \"tone:440\"\nspeaker = \"wav:{wav}\"\n\
         [button]\nsources = [\"stdin\"]\n\
         [control]\nenabled = false\n\
         [notify]\nstdout = false\n\
         [notify.telegram]\nenabled = true\nchat_ids = [111]\n\
         token_file = \"{token}\"\napi_url = \"{api}\"\nretry_for = \"5s\"\n\
         [[notify.webhook]]\nurl = \"http://127.0.0.1:{hook}{HOOK_PATH}?{HOOK_QUERY}\"\n\
         headers = {{ Authorization = \"{HOOK_HEADER}\" }}\n",
        url = server.url,
        wav = dir.path().join("call-{call}.wav").display(),
        token = token_file.display(),
        api = telegram.url,
        turn_url = turn.url(),
        turn_secret = turn_secret.display(),
    );
    let mut bell = Daemon::start_exactly(dir, &config, Some("trace"));
    bell.wait_log("connected to the signaling server").await;
    bell.press();
    let (notified, _) = bell.until("notified").await;
    let link = notified["link"].as_str().unwrap().to_string();
    let room = room_of(&link);
    let report = view_call(
        &server.url,
        &room,
        30,
        (320, 240),
        Duration::from_secs(1),
        1000.0,
    )
    .await;
    assert!(report.decoded_frames >= 30, "{report:?}");
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended["reason"], "viewer_left");
    // The notifiers got their messages (so the secrets were used).
    telegram.wait_for("sendPhoto", 1, |_| true).await;
    let log = bell.log();
    assert!(bell.stop().success());

    let trace_lines = log.lines().filter(|l| l.contains("TRACE")).count();
    let debug_lines = log.lines().filter(|l| l.contains("DEBUG")).count();
    eprintln!("{trace_lines} trace and {debug_lines} debug lines in the log");
    assert!(
        trace_lines > 300,
        "the dependencies really logged at trace level ({trace_lines} lines)"
    );
    // ICE (webrtc-rs), HTTP (hyper, for the webhook and Telegram) and
    // WebSocket (tungstenite, signaling) all wrote at trace level.
    for sign in [
        "pinging all candidates",
        "http1 handshake complete",
        "Opcode",
    ] {
        assert!(log.contains(sign), "no {sign:?} in the trace log");
    }
    let token_secret = TOKEN.split_once(':').unwrap().1;
    // The credential minted for the call, from the user name coturn saw.
    let turn_log = turn.log();
    let user = turn_log
        .split("user <")
        .filter_map(|r| r.split_once('>'))
        .map(|(u, _)| u)
        .find(|u| u.ends_with(":doorbell"))
        .unwrap_or_else(|| panic!("the doorbell used its TURN server:\n{turn_log}"));
    let expiry: u64 = user.split(':').next().unwrap().parse().unwrap();
    let minted = doorbell::turn::mint_until(
        &[],
        &doorbell::secret::Secret::new(TURN_SECRET),
        expiry,
        "doorbell",
    );
    for (what, secret) in [
        ("the TURN REST secret", TURN_SECRET),
        ("the minted TURN password", minted.credential.as_str()),
        ("the room name", room.as_str()),
        ("the bot token", token_secret),
        ("the TURN user name", TURN_USER),
        ("the TURN password", TURN_PASS),
        ("the webhook path", HOOK_PATH),
        ("the webhook query", HOOK_QUERY),
        ("the webhook header", HOOK_HEADER),
    ] {
        let hits: Vec<&str> = log.lines().filter(|l| l.contains(secret)).take(3).collect();
        assert!(
            hits.is_empty(),
            "{what} is in the log:\n{}",
            hits.join("\n")
        );
    }
    // Rooms appear as their tag.
    let tag: String = room.chars().take(6).collect();
    assert!(
        log.contains(&format!("{tag}…")),
        "the room's tag names the call in the log"
    );
}
