//! Voicemail with the real binary: nobody answers, the door plays the
//! prompt, the visitor's message is kept as an MP4 (checked by ffprobe,
//! ffmpeg and Chromium) that starts with a pre-roll from before the ring
//! ended, goes into the history and reaches the owner as a Telegram video;
//! an answered ring leaves no message.

mod common;
#[path = "common/fake_telegram.rs"]
mod fake_telegram;

use common::lab::Daemon;
use common::matrix::{config, normal_ring};
use common::probe::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOKEN: &str = "424242:voicemail-test-token-AAAAAAAAAAAAAAAA";

/// The capture time (Unix ms, from the test pattern's stamp) of the clip's
/// first picture, decoded by ffmpeg.
fn first_stamp(clip: &Path, near_ms: u64) -> u64 {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(clip)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stamp = doorbell::media::stamp::read(&out.stdout, 320, 240, 320)
        .expect("the test pattern's stamp in the first picture");
    doorbell::media::stamp::unwrap(stamp, near_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_visitor_leaves_a_message_that_reaches_the_owner() {
    let server = test_server().await;
    let tg = fake_telegram::FakeTelegram::start(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let state = dir.path().join("state");
    let text = config(
        &server.url,
        dir.path(),
        &format!(
            "viewer_join_timeout = \"3s\"\n\
             [voicemail]\nenabled = true\nseconds = \"6s\"\n\
             [history]\ndir = \"{}\"\n\
             [notify.telegram]\nenabled = true\nchat_ids = [111]\ntoken_file = \"{}\"\napi_url = \"{}\"\n",
            state.display(),
            token.display(),
            tg.url
        ),
    );
    let mut bell = Daemon::start_exactly(tempfile::tempdir().unwrap(), &text, None);
    bell.wait_log("connected to the signaling server").await;
    bell.wait_log("voicemail: a visitor nobody answers may leave a 6 s message")
        .await;

    bell.press();
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended["reason"], "unanswered");
    let ended_ms = ended["ts"].as_u64().unwrap();
    let (message, seen) = bell.until("voicemail_recorded").await;
    let names = common::lab::event_names(&seen);
    assert!(!names.contains(&"error".to_string()), "{names:?}");
    let clip = PathBuf::from(message["file"].as_str().unwrap());
    let seconds = message["seconds"].as_f64().unwrap();

    // One H.264 and one Opus stream, 6 s within 5 %, an I frame first.
    let video = assert_h264_and_opus_from_an_idr(&clip);
    assert!(
        (video - 6.0).abs() <= 0.3,
        "the clip is {video} s for 6 s asked ({seconds} s said)"
    );
    // The pre-roll: the first picture was taken before the ring ended, by
    // at most one GOP (2 s) and a frame.
    let first_ms = first_stamp(&clip, ended_ms);
    assert!(
        first_ms < ended_ms && ended_ms - first_ms <= 2100,
        "first picture taken {} ms before the ring ended",
        ended_ms as i64 - first_ms as i64
    );
    // The visitor is heard: the door's microphone is a 440 Hz tone.
    let pcm = decoded_audio(&clip);
    let share = doorbell::media::audio::power_share(&pcm, 440.0);
    assert!(share > 0.5, "440 Hz share {share:.2}");

    // The prompt played on the door's speaker (the WAV of call 1, whole
    // once the prompt is over).
    bell.wait_log("voicemail: prompt played").await;
    let (rms, _) = recorded_tone(&wav_of(dir.path(), 1));
    assert!(rms > 300.0, "the prompt at the door: RMS {rms}");

    // The owner gets it as a video, in reply to the ring message.
    let ring = tg
        .wait_for("sendPhoto", 1, |c| {
            c.str("caption").contains("Someone is at the door")
        })
        .await
        .remove(0);
    let video_msg = tg.wait_for("sendVideo", 1, |_| true).await.remove(0);
    assert_eq!(video_msg.chat(), 111);
    assert!(
        video_msg.str("caption").contains("message"),
        "{}",
        video_msg.str("caption")
    );
    assert_eq!(
        video_msg.photo.as_deref(),
        Some(std::fs::read(&clip).unwrap().as_slice())
    );
    assert_eq!(
        video_msg.params["reply_parameters"]["message_id"].as_i64(),
        ring.message_id,
        "a reply to the ring message"
    );
    // The ring message tells of it too.
    let id = ring.message_id.unwrap();
    let start = std::time::Instant::now();
    let shown = loop {
        let shown = tg.message(111, id).unwrap();
        if shown.text.contains("📼") || start.elapsed() > common::WAIT {
            break shown;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(shown.text.contains("Missed at"), "{}", shown.text);
    assert!(
        shown.text.contains("📼 The visitor left a message (6 s)"),
        "{}",
        shown.text
    );

    // In the history, as the ring's clip.
    let out = Command::new(env!("CARGO_BIN_EXE_doorbell"))
        .args(["history", "--json", "--config"])
        .arg(bell.dir.path().join("doorbell.toml"))
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["outcome"], "missed");
    assert_eq!(rows[0]["clip"].as_str(), clip.to_str());

    let (duration, time) = chromium_plays(&clip).await;
    assert!((duration - 6.0).abs() < 0.5, "Chromium: {duration} s");
    assert!(time > 0.3, "Chromium's time advanced to {time} s");

    // An answered ring leaves no message.
    normal_ring(&mut bell, &server.url).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(tg.calls_of("sendVideo").len(), 1);
    eprintln!(
        "voicemail | clip {video:.2} s (asked 6 s), pre-roll {} ms before the ring ended, 440 Hz {share:.2}, prompt RMS {rms:.0}, Chromium {duration:.2} s",
        ended_ms - first_ms
    );
    assert!(bell.stop().success());
}
