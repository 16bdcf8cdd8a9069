//! The Telegram notifier, the owner's bot and the webhook, end to end: a real
//! doorbell (our Socket.IO server on 127.0.0.1:0, the test pattern at
//! 320x240) against a fake Bot API server (`common/fake_telegram.rs`) that
//! answers like Telegram, fails or stalls on demand.
//!
//! All log output of this test binary, at trace level for the doorbell and the
//! HTTP stack, goes into one buffer, so the tests can check what was logged,
//! and that no bot token ever was.

mod common;
#[path = "common/fake_telegram.rs"]
mod fake_telegram;

use common::*;
use fake_telegram::{Fail, FakeTelegram};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use doorbell::cmd::daemon;
use doorbell::config::{Config, TelegramConfig};
use doorbell::notify::webhook::WebhookConfig;

const TOKEN: &str = "123456:TEST-TOKEN-abcdefghijklmnop";
/// Tokens that must never show up in any log line or event of this binary.
const CANARIES: [&str; 3] = [
    "123456:CANARY-SECRET-TOKEN-xyz",
    "654321:CANARY-SECRET-TOKEN-abc",
    "777777:CANARY-SECRET-TOKEN-file",
];

// ---- logs -------------------------------------------------------------------

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::env::var_os("TEST_LOGS").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every log line of this process (the `log` crate's too) to the buffer.
fn capture_logs() {
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_env_filter(
                "info,doorbell=trace,teloxide=trace,teloxide_core=trace,reqwest=trace,\
                 hyper=trace,hyper_util=trace,webrtc=warn,webrtc_ice=warn,webrtc_srtp=warn,\
                 webrtc_dtls=warn,webrtc_mdns=warn",
            )
            .with_ansi(false)
            .with_writer(move || Capture(writer.clone()))
            .try_init()
            .expect("this test binary sets the only subscriber");
        buffer
    });
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.get().expect("capture_logs first").lock().unwrap()).into_owned()
}

async fn until_logged(what: &str) {
    let start = Instant::now();
    while !logs().contains(what) {
        assert!(start.elapsed() < WAIT, "{what:?} was not logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_no_token_in(text: &str, place: &str) {
    for canary in CANARIES {
        let key = canary.split_once(':').unwrap().1;
        assert!(
            !text.contains(key),
            "the token {canary} appeared in {place}"
        );
        assert!(!text.contains(&canary.replace(':', "%3A")), "{place}");
    }
}

// ---- set-up -----------------------------------------------------------------

struct Setup {
    config: Config,
    server: TestServer,
    tg: FakeTelegram,
    _dir: tempfile::TempDir,
}

fn token_file(dir: &Path, token: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("telegram-token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A signaling server, a fake Bot API accepting `token`, and a loopback
/// doorbell config with Telegram on for `chats`.
async fn setup(token: &str, chats: &[i64]) -> Setup {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let server = test_server().await;
    let tg = FakeTelegram::start(token).await;
    let mut config = loopback_config(&server.url, dir.path());
    config.notify.telegram = TelegramConfig {
        enabled: true,
        chat_ids: chats.to_vec(),
        token_file: Some(token_file(dir.path(), token, 0o600)),
        api_url: tg.url.clone(),
        retry_for: Duration::from_secs(5),
        ..TelegramConfig::default()
    };
    config.validate(Path::new("test")).expect("valid");
    Setup {
        config,
        server,
        tg,
        _dir: dir,
    }
}

async fn start(config: &Config) -> Bell {
    config.validate(Path::new("test")).expect("valid");
    let bell = Bell::start(config).await;
    bell.wait_connected().await;
    bell
}

/// (width, height) of a JPEG, decoding all of it.
fn jpeg_size(data: &[u8]) -> (usize, usize) {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    let mut decoder = zune_jpeg::JpegDecoder::new(ZCursor::new(data));
    let pixels = decoder.decode().expect("a valid JPEG");
    let info = decoder.info().unwrap();
    let (w, h) = (usize::from(info.width), usize::from(info.height));
    assert_eq!(pixels.len(), w * h * 3, "fully decoded");
    (w, h)
}

fn button(call: &fake_telegram::Call) -> Value {
    call.params["reply_markup"]["inline_keyboard"][0][0].clone()
}

fn link_of(event: &doorbell::call::event::CallEvent) -> String {
    event.to_json()["link"].as_str().unwrap().to_string()
}

/// `14:03`, local time, as the notifier writes it.
fn hhmm(unix_ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms as i64)
        .unwrap()
        .with_timezone(&chrono::Local)
        .format("%H:%M")
        .to_string()
}

/// The ring message (`sendPhoto` or `sendMessage`) to `chat`.
fn ring_to(calls: &[fake_telegram::Call], chat: i64) -> fake_telegram::Call {
    calls
        .iter()
        .find(|c| c.chat() == chat && c.message_id.is_some())
        .unwrap_or_else(|| panic!("no ring message to chat {chat}"))
        .clone()
}

/// What the message `sent` shows now.
fn shown(tg: &FakeTelegram, sent: &fake_telegram::Call) -> fake_telegram::Shown {
    tg.message(sent.chat(), sent.message_id.unwrap())
        .expect("a message the fake sent")
}

/// Waits until the message `sent` shows a text ending with `end`.
async fn until_shows(
    tg: &FakeTelegram,
    sent: &fake_telegram::Call,
    end: &str,
) -> fake_telegram::Shown {
    let start = Instant::now();
    loop {
        let now = shown(tg, sent);
        if now.text.ends_with(end) {
            return now;
        }
        assert!(
            start.elapsed() < WAIT,
            "chat {} never showed {end:?}; it shows {:?}",
            sent.chat(),
            now.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// When the call was first answered.
fn answered_ts(seen: &[doorbell::call::event::CallEvent]) -> u64 {
    seen.iter()
        .find(|e| matches!(e.name(), "answered" | "connected"))
        .expect("an answered event")
        .ts
}

const RINGING: &str = "\n\n⏳ Ringing…";

// ---- ring messages ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_sends_every_allowed_chat_a_jpeg_of_the_camera_with_the_link() {
    let s = setup(TOKEN, &[111, 222]).await;
    s.tg.set_chats(&[111, 222, 333]);
    let mut bell = start(&s.config).await;

    let pressed = Instant::now();
    let reply = bell.ring().await;
    assert!(reply.starts_with("ringing"), "{reply}");
    let (notified, _) = bell.until("notified").await;
    let link = link_of(&notified);

    let photos = s.tg.wait_for("sendPhoto", 2, |_| true).await;
    let chats: BTreeSet<i64> = photos.iter().map(|p| p.chat()).collect();
    assert_eq!(
        chats,
        BTreeSet::from([111, 222]),
        "each allowed chat, no other"
    );
    for p in &photos {
        let jpeg = p.photo.as_ref().expect("a photo upload");
        assert_eq!(jpeg_size(jpeg), (320, 240), "a JPEG of the camera's size");
        let caption = p.str("caption");
        assert!(caption.contains("Someone is at the door"), "{caption}");
        assert!(
            caption.contains(&link),
            "the caption carries the link: {caption}"
        );
        assert!(caption.ends_with(RINGING), "{caption}");
        assert_eq!(button(p), json!({"text": "Answer", "url": link}));
    }
    eprintln!(
        "press -> photo upload at the API: {:?}",
        photos.iter().map(|p| p.at - pressed).collect::<Vec<_>>()
    );
    assert!(s.tg.calls_of("sendMessage").is_empty(), "a photo, not text");
    assert_no_token_in(&logs(), "the logs");
    bell.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_camera_the_ring_is_a_text_message_edited_as_text() {
    let mut s = setup(TOKEN, &[111]).await;
    s.config.video.source = "none".into();
    s.config.call.viewer_join_timeout = Duration::from_secs(1);
    let mut bell = start(&s.config).await;
    bell.ring().await;
    let (notified, _) = bell.until("notified").await;
    let link = link_of(&notified);
    let texts =
        s.tg.wait_for("sendMessage", 1, |c| {
            c.str("text").contains("Someone is at the door")
        })
        .await;
    let m = &texts[0];
    assert_eq!(m.chat(), 111);
    assert!(m.str("text").contains(&link), "{:?}", m.params);
    assert!(m.str("text").ends_with(RINGING), "{:?}", m.params);
    assert_eq!(
        m.params["link_preview_options"]["is_disabled"], true,
        "Telegram must not fetch the room link"
    );
    assert_eq!(button(m), json!({"text": "Answer", "url": link}));

    // Missed: a text message's text is edited (editMessageText), not a caption.
    let (ended, _) = bell.until("ended").await;
    let missed = format!("❌ Missed at {}.", hhmm(ended.ts));
    let now = until_shows(&s.tg, m, &missed).await;
    assert_eq!(now.reply_markup, None, "the button goes");
    let edit =
        s.tg.wait_for("editMessageText", 1, |_| true)
            .await
            .remove(0);
    assert_eq!(edit.params["link_preview_options"]["is_disabled"], true);
    assert!(s.tg.calls_of("sendPhoto").is_empty());
    assert!(s.tg.calls_of("editMessageCaption").is_empty());
    bell.stop().await;
}

/// Two chats: each message goes "Ringing…", then "Answered at 14:03."
/// without its button and link while the call goes on, then, once it is
/// over, "Answered at 14:03 (2 s).".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_call_edits_each_chats_message_then_adds_the_call_length() {
    let s = setup(TOKEN, &[111, 222]).await;
    let mut bell = start(&s.config).await;
    bell.ring().await;
    let (notified, _) = bell.until("notified").await;
    let link = link_of(&notified);
    let photos = s.tg.wait_for("sendPhoto", 2, |_| true).await;
    let rings = [ring_to(&photos, 111), ring_to(&photos, 222)];

    let url = s.server.url.clone();
    let room = room_of(&link);
    let viewer = tokio::spawn(async move {
        view_call(&url, &room, 10, (320, 240), Duration::from_secs(2), 1000.0).await
    });
    let (answered, _) = bell.until("answered").await;
    let during = format!("\n\n✅ Answered at {}.", hhmm(answered.ts));
    for ring in &rings {
        let now = until_shows(&s.tg, ring, &during).await;
        assert_eq!(now.reply_markup, None, "the button goes: the room is taken");
        assert_eq!(
            now.text,
            ring.str("caption")
                .replace(&format!("\nAnswer: {link}"), "")
                .replace(RINGING, &during),
            "the link goes too, the rest stays while the call goes on"
        );
    }

    let report = viewer.await.unwrap();
    assert!(report.decoded_frames >= 10, "{report:?}");
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "viewer_left");
    let length = ended.ts - answered.ts;
    assert!(
        (2_000..15_000).contains(&length),
        "a 2 s talk lasted {length} ms"
    );
    let after = format!(
        "\n\n✅ Answered at {} ({}).",
        hhmm(answered.ts),
        doorbell::history::store::span(length)
    );
    for ring in &rings {
        let now = until_shows(&s.tg, ring, &after).await;
        assert!(now.text.starts_with("🔔 Someone rang at "), "{}", now.text);
        assert!(
            !now.text.contains(&link),
            "the dead link goes: {}",
            now.text
        );
        assert_eq!(now.reply_markup, None);
        assert_eq!(now.edits, 2, "answered, then over");
    }
    let edits = s.tg.calls_of("editMessageCaption");
    assert!(
        edits.iter().all(|e| e.message_id.is_some()),
        "no edit was refused: {edits:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        s.tg.calls_of("sendMessage").is_empty(),
        "no missed-call reply for an answered call"
    );
    bell.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_call_gets_a_reply_in_each_chat_and_its_messages_lose_button_and_link() {
    let mut s = setup(TOKEN, &[111, 222]).await;
    s.config.call.viewer_join_timeout = Duration::from_secs(1);
    let mut bell = start(&s.config).await;
    bell.ring().await;
    let (notified, _) = bell.until("notified").await;
    let link = link_of(&notified);
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "unanswered");
    let photos = s.tg.wait_for("sendPhoto", 2, |_| true).await;

    let replies = s.tg.wait_for("sendMessage", 2, |_| true).await;
    for chat in [111, 222] {
        let photo = ring_to(&photos, chat);
        let reply = ring_to(&replies, chat);
        assert_eq!(
            reply.params["reply_parameters"]["message_id"].as_i64(),
            photo.message_id,
            "a reply to the ring message"
        );
        assert_eq!(
            reply.str("text"),
            format!("Missed at {}: nobody answered the door.", hhmm(ended.ts))
        );
        assert_eq!(reply.params["link_preview_options"]["is_disabled"], true);

        let now = until_shows(
            &s.tg,
            &photo,
            &format!("\n\n❌ Missed at {}.", hhmm(ended.ts)),
        )
        .await;
        assert!(now.text.starts_with("🔔 Someone rang at "), "{}", now.text);
        assert!(
            !now.text.contains(&link),
            "the dead link goes: {}",
            now.text
        );
        assert_eq!(now.reply_markup, None, "the dead link's button goes");
        assert_eq!(now.edits, 1);
    }
    bell.stop().await;
}

/// The photo reaches Telegram only after the call was answered and over:
/// the message is edited once, straight to how the call went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_delivered_after_the_call_shows_how_it_went() {
    let s = setup(TOKEN, &[111]).await;
    s.tg.stall("sendPhoto", Duration::from_secs(8));
    let mut bell = start(&s.config).await;
    bell.ring().await;
    let (created, _) = bell.until("room_created").await;
    let url = s.server.url.clone();
    let report = view_call(
        &url,
        &created.event.room,
        10,
        (320, 240),
        Duration::from_secs(1),
        1000.0,
    )
    .await;
    assert!(report.decoded_frames >= 10, "{report:?}");
    let (ended, seen) = bell.until("ended").await;
    assert!(
        !names(&seen).contains(&"notified"),
        "the call was over before the message arrived: {:?}",
        names(&seen)
    );
    let answered = answered_ts(&seen);
    let photo =
        s.tg.wait_for("sendPhoto", 1, |c| c.message_id.is_some())
            .await
            .remove(0);
    let after = format!(
        "\n\n✅ Answered at {} ({}).",
        hhmm(answered),
        doorbell::history::store::span(ended.ts - answered)
    );
    let now = until_shows(&s.tg, &photo, &after).await;
    assert_eq!(now.reply_markup, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(shown(&s.tg, &photo).edits, 1, "one edit, to the end");
    assert!(
        s.tg.calls_of("sendMessage").is_empty(),
        "answered: no reply"
    );
    bell.stop().await;
}

/// The same, for a ring nobody answered: the late message still gets its
/// missed-call reply and loses its button.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_delivered_after_a_missed_ring_still_gets_the_reply() {
    let mut s = setup(TOKEN, &[111]).await;
    s.config.call.viewer_join_timeout = Duration::from_secs(1);
    s.tg.stall("sendPhoto", Duration::from_secs(3));
    let mut bell = start(&s.config).await;
    bell.ring().await;
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "unanswered");
    assert!(
        s.tg.calls_of("editMessageCaption").is_empty(),
        "not delivered yet"
    );
    let photo =
        s.tg.wait_for("sendPhoto", 1, |c| c.message_id.is_some())
            .await
            .remove(0);
    let reply = s.tg.wait_for("sendMessage", 1, |_| true).await.remove(0);
    assert_eq!(
        reply.params["reply_parameters"]["message_id"].as_i64(),
        photo.message_id
    );
    let now = until_shows(&s.tg, &photo, &format!("❌ Missed at {}.", hhmm(ended.ts))).await;
    assert_eq!(now.reply_markup, None);
    bell.stop().await;
}

/// Telegram answers "message is not modified" when an edit changes nothing
/// (say a first attempt that timed out had arrived): that is not a failure
/// to retry or to warn about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_telegram_calls_not_modified_is_a_success() {
    let mut s = setup(TOKEN, &[4711]).await;
    s.config.call.viewer_join_timeout = Duration::from_secs(1);
    s.tg.fail(
        "editMessageCaption",
        Fail::api(400, fake_telegram::NOT_MODIFIED),
        1,
    );
    let mut bell = start(&s.config).await;
    bell.ring().await;
    bell.until("ended").await;
    s.tg.wait_for("editMessageCaption", 1, |_| true).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        s.tg.calls_of("editMessageCaption").len(),
        1,
        "not tried again"
    );
    let text = logs();
    assert!(
        !text.contains("follow-up edit in chat 4711"),
        "nothing to warn about"
    );
    bell.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_without_a_server_still_tells_the_owner() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let tg = FakeTelegram::start(TOKEN).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let mut config = loopback_config(&url, dir.path());
    config.notify.telegram = TelegramConfig {
        enabled: true,
        chat_ids: vec![111],
        token_file: Some(token_file(dir.path(), TOKEN, 0o600)),
        api_url: tg.url.clone(),
        ..TelegramConfig::default()
    };
    config.validate(Path::new("test")).unwrap();
    let mut bell = Bell::start(&config).await;
    bell.ring().await;
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "signaling_unavailable");
    let p = tg.wait_for("sendPhoto", 1, |_| true).await.remove(0);
    let caption = p.str("caption");
    assert!(caption.contains("no call could be set up"), "{caption}");
    assert!(p.params.get("reply_markup").is_none(), "no link, no button");
    assert_eq!(jpeg_size(p.photo.as_ref().unwrap()), (320, 240));
    bell.stop().await;
}

/// Telegram refuses inline buttons with links it considers unusable (a
/// `localhost` or LAN viewer link): the ring must still go out, link in text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_answer_button_still_delivers_the_link_in_the_caption() {
    let s = setup(TOKEN, &[111]).await;
    s.tg.fail(
        "sendPhoto",
        Fail::api(400, "Bad Request: BUTTON_URL_INVALID"),
        1,
    );
    let mut bell = start(&s.config).await;
    bell.ring().await;
    let (notified, _) = bell.until("notified").await;
    let link = link_of(&notified);
    let tries = s.tg.wait_for("sendPhoto", 2, |_| true).await;
    let urls = |c: &fake_telegram::Call| {
        c.params.get("reply_markup").map_or(0, |m| {
            m["inline_keyboard"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|row| row.as_array().unwrap())
                .filter(|b| b.get("url").is_some())
                .count()
        })
    };
    assert_eq!(urls(&tries[0]), 1);
    assert_eq!(urls(&tries[1]), 0, "sent again without it");
    let replies = &tries[1].params["reply_markup"]["inline_keyboard"];
    assert_eq!(
        replies.as_array().unwrap().len(),
        2,
        "the quick replies stay: {replies}"
    );
    assert!(tries[1].str("caption").contains(&link));
    until_logged("Telegram refused the Answer button").await;
    bell.stop().await;
}

// ---- the API failing --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_after_the_bound_and_the_reason_is_logged() {
    let mut s = setup(TOKEN, &[111]).await;
    s.config.notify.telegram.retry_for = Duration::from_secs(2);
    s.tg.fail_always("sendPhoto", Fail::flood(1));
    let mut bell = start(&s.config).await;
    bell.ring().await;
    let (error, seen) = bell.until("error").await;
    let what = error.to_json()["what"].as_str().unwrap().to_string();
    assert!(what.contains("telegram"), "{what}");
    assert!(what.contains("flood control"), "the reason: {what}");
    assert!(!names(&seen).contains(&"notified"), "{:?}", names(&seen));
    let attempts = s.tg.calls_of("sendPhoto").len();
    assert!((2..=3).contains(&attempts), "{attempts} attempts in 2 s");
    assert!(
        logs().contains("retry after 1 s"),
        "failed attempts are logged"
    );

    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        s.tg.calls_of("sendPhoto").len(),
        attempts,
        "no attempt after the bound"
    );
    assert_eq!(
        bell.status().await.state,
        "waiting_viewer",
        "the ring went on without its message"
    );
    bell.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5s_api_stall_does_not_delay_the_join() {
    let s = setup(TOKEN, &[111]).await;
    s.tg.stall("sendPhoto", Duration::from_secs(5));
    let mut bell = start(&s.config).await;
    let pressed = Instant::now();
    bell.ring().await;
    let (_, before) = bell.until("room_created").await;
    let joined = pressed.elapsed();
    assert_eq!(names(&before), ["ringing", "room_created"]);
    assert!(
        joined < Duration::from_secs(1),
        "room created {joined:?} after the press"
    );
    s.tg.wait_for("sendPhoto", 1, |_| true).await;
    assert_eq!(bell.status().await.state, "waiting_viewer");
    let (_, _) = bell.until("notified").await;
    let notified = pressed.elapsed();
    assert!(
        notified >= Duration::from_secs(5),
        "the message really was stalled ({notified:?})"
    );
    bell.stop().await;
}

/// An HTML 502 page from a proxy that quotes the request path (with the
/// token); teloxide waits 10 s before it reports a 5xx, so this test is slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_502_from_a_proxy_is_retried_and_its_page_is_logged_without_the_token() {
    let canary = CANARIES[0];
    let mut s = setup(canary, &[111]).await;
    s.config.notify.telegram.retry_for = Duration::from_secs(20);
    s.tg.fail("sendPhoto", Fail::BadGateway, 1);
    s.tg.fail_always("getUpdates", Fail::BadGateway);
    let mut bell = start(&s.config).await;
    bell.ring().await;
    let (_, seen) = bell.until("notified").await;
    assert_eq!(
        s.tg.calls_of("sendPhoto").len(),
        2,
        "one 502, then delivered"
    );
    until_logged("502 Bad Gateway").await;
    let text = logs();
    assert!(
        text.contains("upstream failed for /bot[redacted]/SendPhoto"),
        "the page was logged, redacted"
    );
    assert_no_token_in(&text, "the logs");
    for e in &seen {
        assert_no_token_in(&e.to_json().to_string(), "the events");
    }
    bell.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_appears_in_logs_when_the_api_is_unreachable() {
    let canary = CANARIES[1];
    let mut s = setup(canary, &[111]).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    s.config.notify.telegram.api_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    s.config.notify.telegram.retry_for = Duration::from_secs(1);
    let mut bell = start(&s.config).await;
    bell.ring().await;
    let (error, seen) = bell.until("error").await;
    let what = error.to_json()["what"].as_str().unwrap().to_string();
    assert!(what.contains("cannot reach the Bot API"), "{what}");
    assert!(what.contains("Connection refused"), "the reason: {what}");
    until_logged("telegram: cannot check the bot").await;
    assert_no_token_in(&logs(), "the logs");
    for e in &seen {
        assert_no_token_in(&e.to_json().to_string(), "the events");
    }
    bell.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_others_can_read_stops_the_start_with_the_fix() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let mut config = loopback_config("http://127.0.0.1:9", dir.path());
    config.notify.telegram = TelegramConfig {
        enabled: true,
        chat_ids: vec![111],
        token_file: Some(token_file(dir.path(), CANARIES[2], 0o644)),
        ..TelegramConfig::default()
    };
    let cancel = CancellationToken::new();
    let e = match daemon::start(&config, daemon::Options::default(), cancel.clone()).await {
        Ok(_) => panic!("started with a token file everyone can read"),
        Err(e) => format!("{e:#}"),
    };
    cancel.cancel();
    assert!(e.contains("chmod 600"), "{e}");
    assert!(e.contains("0644"), "{e}");
    assert_no_token_in(&e, "the error");
    assert_no_token_in(&logs(), "the logs");
}

// ---- several notifiers ------------------------------------------------------

/// A webhook receiver: (headers, JSON body) of every POST.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<(axum::http::HeaderMap, Value)>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = got.clone();
    let app = axum::Router::new().route(
        "/hook/{secret}",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                let store = store.clone();
                async move {
                    store.lock().unwrap().push((headers, body));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hook/SECRET-HOOK-ID",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_notifiers_one_failing_does_not_stop_the_others() {
    let mut s = setup(TOKEN, &[111, 222]).await;
    s.tg.set_chats(&[111]);
    let (hook, got) = webhook_receiver().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/hook/OTHER-SECRET", dead.local_addr().unwrap());
    drop(dead);
    s.config.notify.webhook = vec![
        WebhookConfig {
            url: dead_url,
            retry_for: Duration::ZERO,
            ..WebhookConfig::default()
        },
        WebhookConfig {
            url: hook,
            headers: [("X-Doorbell".to_string(), "test".to_string())].into(),
            ..WebhookConfig::default()
        },
    ];
    let mut bell = start(&s.config).await;
    bell.ring().await;
    let (notified, _) = bell.until("notified").await;
    let link = link_of(&notified);

    let posts = got.lock().unwrap().clone();
    assert_eq!(posts.len(), 1);
    let (headers, body) = &posts[0];
    assert_eq!(headers["x-doorbell"], "test");
    assert_eq!(body["event"], "ring");
    assert_eq!(body["link"], link.as_str());
    assert_eq!(body["call"], 1);
    let photos = s.tg.wait_for("sendPhoto", 2, |_| true).await;
    assert_eq!(
        photos.iter().filter(|p| p.message_id.is_some()).count(),
        1,
        "chat 111 got it"
    );
    until_logged("notifier failed: webhook http://127.0.0.1").await;
    until_logged("chat 222: Telegram answered: Bad Request: chat not found").await;
    let text = logs();
    assert!(
        !text.contains("SECRET-HOOK-ID") && !text.contains("OTHER-SECRET"),
        "webhook paths stay out of logs"
    );
    bell.stop().await;
}

// ---- the owner's bot --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_answers_status_snapshot_ring_and_history() {
    let mut s = setup(TOKEN, &[111]).await;
    s.config.call.viewer_join_timeout = Duration::from_secs(1);
    let mut bell = start(&s.config).await;
    s.tg.wait_for("getUpdates", 1, |_| true).await;
    let to_111 = |text: &'static str| {
        move |c: &fake_telegram::Call| c.chat() == 111 && c.str("text").contains(text)
    };

    s.tg.push_message(111, "/status");
    let status =
        s.tg.wait_for("sendMessage", 1, to_111("Up "))
            .await
            .remove(0);
    let text = status.str("text");
    assert!(text.starts_with("Idle."), "{text}");
    assert!(text.contains("Signaling server: connected."), "{text}");
    assert!(text.contains("No ring yet."), "{text}");

    s.tg.push_message(111, "/snapshot");
    let photo =
        s.tg.wait_for("sendPhoto", 1, |c| {
            c.str("caption").starts_with("At the door now")
        })
        .await
        .remove(0);
    assert_eq!(photo.chat(), 111);
    assert_eq!(jpeg_size(photo.photo.as_ref().unwrap()), (320, 240));
    assert!(photo.params.get("reply_markup").is_none());

    s.tg.push_message(111, "/ring");
    s.tg.wait_for(
        "sendMessage",
        1,
        to_111("Ringing, like a press of the button"),
    )
    .await;
    let (notified, _) = bell.until("notified").await;
    let ring =
        s.tg.wait_for("sendPhoto", 1, |c| {
            c.str("caption").contains("Someone is at the door")
        })
        .await
        .remove(0);
    assert_eq!(button(&ring)["url"], link_of(&notified).as_str());
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "unanswered");

    // The event goes out as the row's end is being written.
    eventually("the missed ring in the history", || {
        bell.bell.history.recent(1).first().map(|r| r.outcome)
            == Some(doorbell::history::Outcome::Missed)
    })
    .await;
    s.tg.push_message(111, "/history");
    let history =
        s.tg.wait_for("sendMessage", 1, to_111("newest first"))
            .await
            .remove(0);
    let text = history.str("text");
    assert!(text.starts_with("The last 1, newest first:"), "{text}");
    assert!(text.trim_end().ends_with("missed"), "{text}");
    // The picture of that ring (the one the ring message had), kept in the
    // history, with its line as the caption.
    let kept =
        s.tg.wait_for("sendPhoto", 1, |c| c.str("caption").ends_with(", missed"))
            .await
            .remove(0);
    assert_eq!(kept.chat(), 111);
    assert_eq!(kept.photo, ring.photo, "one picture per ring");

    s.tg.push_message(111, &format!("/help@{}", fake_telegram::BOT_USERNAME));
    s.tg.wait_for("sendMessage", 1, to_111("/snapshot - a photo"))
        .await;
    s.tg.push_message(111, "/status@some_other_bot");
    s.tg.push_message(111, "/status");
    s.tg.wait_for("sendMessage", 2, to_111("Up ")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.tg.calls_of("sendMessage")
            .iter()
            .filter(|c| c.str("text").contains("Up "))
            .count(),
        2,
        "a command for another bot is not ours"
    );
    bell.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_chats_are_ignored_and_logged_without_their_text() {
    let s = setup(TOKEN, &[111]).await;
    let mut bell = start(&s.config).await;
    s.tg.wait_for("getUpdates", 1, |_| true).await;
    s.tg.push_message(999, "/ring my secret words");
    s.tg.push_message(998, "hello, these are private words");
    s.tg.push_message(111, "/status");
    s.tg.wait_for("sendMessage", 1, |c| c.chat() == 111).await;
    until_logged("ignored /ring from chat 999, which is not in notify.telegram.chat_ids").await;
    until_logged("ignored a message from chat 998").await;
    let text = logs();
    assert!(
        !text.contains("secret words") && !text.contains("private words"),
        "no message text in logs"
    );
    assert!(s
        .tg
        .calls()
        .iter()
        .all(|c| c.params.get("chat_id").is_none_or(|id| id == 111)));
    assert!(
        bell.events.try_recv().is_err(),
        "no ring from a stranger's /ring"
    );
    bell.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_sent_while_the_doorbell_was_off_are_ignored() {
    let s = setup(TOKEN, &[111]).await;
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 3600;
    s.tg.push_message_sent_at(111, "/ring", an_hour_ago);
    let mut bell = start(&s.config).await;
    s.tg.push_message(111, "/status");
    s.tg.wait_for("sendMessage", 1, |c| c.str("text").starts_with("Idle."))
        .await;
    until_logged("ignored /ring from chat 111: sent 36").await;
    assert!(s.tg.calls_of("sendPhoto").is_empty());
    assert!(
        bell.events.try_recv().is_err(),
        "the old /ring did not ring"
    );
    bell.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_backs_off_while_the_api_fails_rings_still_work_and_cancel_stops_it() {
    let s = setup(TOKEN, &[111]).await;
    s.tg.fail_always(
        "getUpdates",
        Fail::api(
            409,
            "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
        ),
    );
    let mut bell = start(&s.config).await;
    let started = Instant::now();
    bell.ring().await;
    bell.until("notified").await;
    s.tg.wait_for("sendPhoto", 1, |_| true).await;
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(started.elapsed())).await;
    let polls = s.tg.calls_of("getUpdates").len();
    assert!(
        (2..=4).contains(&polls),
        "{polls} polls in 3 s: backing off, not spinning"
    );
    until_logged("only one program may poll a bot").await;

    s.tg.heal("getUpdates");
    s.tg.push_message(111, "/status");
    s.tg.wait_for("sendMessage", 1, |c| c.str("text").contains("Up "))
        .await;
    until_logged("polling for commands works again").await;

    bell.stop().await;
    let polls = s.tg.calls_of("getUpdates").len();
    s.tg.push_message(111, "/status");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        s.tg.calls_of("getUpdates").len(),
        polls,
        "no polling after shutdown"
    );
    let answers = s.tg.calls_of("sendMessage");
    assert_eq!(
        answers
            .iter()
            .filter(|c| c.str("text").contains("Up "))
            .count(),
        1,
        "no answer after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sends_the_link_to_the_one_who_asked_and_rings_nobody() {
    let mut s = setup(TOKEN, &[111, 222]).await;
    s.config.call.viewer_join_timeout = Duration::from_secs(1);
    let mut bell = start(&s.config).await;
    s.tg.wait_for("getUpdates", 1, |_| true).await;
    s.tg.push_message(222, "/live");
    let reply =
        s.tg.wait_for("sendMessage", 1, |c| c.str("text").starts_with("Live view"))
            .await
            .remove(0);
    assert_eq!(reply.chat(), 222, "to the one who asked");
    let (started, _) = bell.until("live_started").await;
    let room = started.event.room.clone();
    let text = reply.str("text");
    assert!(text.contains(&format!("room={room}")), "{text}");
    let (ended, seen) = bell.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "unanswered");
    assert!(!names(&seen).contains(&"notified"), "{:?}", names(&seen));
    assert!(
        s.tg.calls_of("sendPhoto").is_empty(),
        "no ring message to anyone"
    );
    assert!(
        s.tg.calls_of("sendMessage").iter().all(|c| c.chat() == 222),
        "nothing to the other owner"
    );
    bell.stop().await;
}
