//! The history on disk, with the real binary: rings kept across restarts
//! with their pictures (checked by ffprobe), `doorbell history` in both
//! forms, a SIGKILL at any moment leaving a consistent database and no
//! stray files, a damaged database moved aside with the owner told once,
//! and calls recorded to MP4 (`record.calls`), checked by ffprobe, ffmpeg
//! and Chromium.

mod common;
#[path = "common/fake_telegram.rs"]
mod fake_telegram;

use common::lab::Daemon;
use common::matrix::{config, normal_ring};
use common::probe::*;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TOKEN: &str = "424242:history-test-token-AAAAAAAAAAAAAAAAAAA";

/// `doorbell history --config FILE` with `args`; its standard output.
fn history(config: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_doorbell"))
        .args(["history", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "doorbell history: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn rows(config: &Path) -> Vec<Value> {
    let text = history(config, &["--json"]);
    serde_json::from_str::<Value>(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}"))
        .as_array()
        .unwrap()
        .clone()
}

/// Writes the doorbell's config with the history in `state`; its path.
fn write_config(dir: &Path, url: &str, state: &Path, extra: &str) -> std::path::PathBuf {
    let text = config(
        url,
        dir,
        &format!(
            "viewer_join_timeout = \"1s\"\n{extra}\n[history]\ndir = \"{}\"\n",
            state.display()
        ),
    );
    let path = dir.join("doorbell.toml");
    std::fs::write(&path, &text).unwrap();
    path
}

fn start(config: &Path) -> Daemon {
    let text = std::fs::read_to_string(config).unwrap();
    Daemon::start_exactly(tempfile::tempdir().unwrap(), &text, None)
}

/// Every file in `media` is named by a row, every named file exists, and
/// nothing half-written is left.
fn files_match_rows(state: &Path) {
    let db = rusqlite::Connection::open(state.join("history.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let mut named = std::collections::BTreeSet::new();
    let mut statement = db.prepare("SELECT snapshot, clip FROM events").unwrap();
    let files = statement
        .query_map([], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
            ))
        })
        .unwrap();
    for f in files {
        let (s, c) = f.unwrap();
        named.extend(s);
        named.extend(c);
    }
    let present: std::collections::BTreeSet<String> = std::fs::read_dir(state.join("media"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(present, named, "files on disk and files the rows name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rings_are_kept_across_restarts_with_their_pictures() {
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = write_config(dir.path(), &server.url, &state, "");
    let mut bell = start(&cfg);
    bell.wait_log("connected to the signaling server").await;
    bell.wait_log(&format!("history kept in {}", state.display()))
        .await;
    // Nobody answers the first ring; the second is answered.
    bell.press();
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended["reason"], "unanswered");
    normal_ring(&mut bell, &server.url).await;
    assert!(bell.stop().success());

    let rows = rows(&cfg);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (answered, missed) = (&rows[0], &rows[1]);
    assert_eq!(missed["kind"], "ring");
    assert_eq!(missed["outcome"], "missed");
    assert_eq!(missed["reason"], "unanswered");
    let rang = missed["ended_ms"].as_u64().unwrap() - missed["started_ms"].as_u64().unwrap();
    assert!(
        (1000..3000).contains(&rang),
        "rang {rang} ms for a 1 s timeout"
    );
    assert_eq!(answered["outcome"], "answered");
    assert_eq!(answered["reason"], "viewer_left");
    let talked = answered["ended_ms"].as_u64().unwrap() - answered["answered_ms"].as_u64().unwrap();
    assert!(talked > 300, "talked {talked} ms");
    for row in &rows {
        let picture = Path::new(row["snapshot"].as_str().expect("a picture per ring"));
        assert!(picture.starts_with(state.join("media")), "{picture:?}");
        let probe = ffprobe(picture);
        let video = &probe["streams"][0];
        assert_eq!(video["codec_name"], "mjpeg", "{probe}");
        assert_eq!(
            (video["width"].as_u64(), video["height"].as_u64()),
            (Some(320), Some(240))
        );
        assert_eq!(
            row["bytes"].as_u64(),
            Some(std::fs::metadata(picture).unwrap().len())
        );
    }
    files_match_rows(&state);

    // A restart keeps them, and adds to them.
    let mut bell = start(&cfg);
    bell.wait_log("connected to the signaling server").await;
    bell.press();
    bell.until("ended").await;
    // The event goes out as the row's end is being written.
    let mut text = String::new();
    eventually("the third ring's end in the history", || {
        text = history(&cfg, &[]);
        !text.contains("ringing now")
    })
    .await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].contains("  ring  missed  snapshot "), "{text}");
    assert!(lines[1].contains("  ring  answered (talked "), "{text}");
    assert!(
        lines[2].ends_with(missed["snapshot"].as_str().unwrap()),
        "{text}"
    );
    assert_eq!(
        history(&cfg, &["--json", "--limit", "1"])
            .matches("\"id\"")
            .count(),
        1
    );
    assert!(bell.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_any_moment_leaves_a_consistent_history() {
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = write_config(dir.path(), &server.url, &state, "");
    // SIGKILL at moments spread over the ring's first 400 ms: before the
    // row, while the picture is taken and written, after.
    let kills = 12;
    for i in 0..kills {
        let mut bell = start(&cfg);
        bell.wait_log("connected to the signaling server").await;
        bell.press();
        tokio::time::sleep(Duration::from_millis(i * 400 / kills)).await;
        drop(bell); // SIGKILL, then reaped
    }
    // What a kill between the steps of a file write leaves: a file half
    // written, and one written and renamed but not yet named in its row.
    let media = state.join("media");
    std::fs::write(media.join("000099-clip.mp4.tmp"), b"half a clip").unwrap();
    std::fs::write(media.join("000098-snapshot.jpg"), b"nobody's").unwrap();

    let mut bell = start(&cfg);
    bell.wait_log("connected to the signaling server").await;
    bell.wait_log("no row names it").await;
    let rows = rows(&cfg);
    assert!(!rows.is_empty() && rows.len() <= kills as usize, "{rows:?}");
    for row in &rows {
        assert_eq!(row["outcome"], "interrupted", "{row}");
    }
    files_match_rows(&state);
    assert!(!media.join("000099-clip.mp4.tmp").exists());
    assert!(!media.join("000098-snapshot.jpg").exists());
    // And it goes on recording.
    bell.press();
    bell.until("ended").await;
    assert!(bell.stop().success());
    assert_eq!(self::rows(&cfg)[0]["outcome"], "missed");
    files_match_rows(&state);
    eprintln!(
        "history | {kills} kills: {} rows, {} with a picture",
        rows.len(),
        rows.iter().filter(|r| !r["snapshot"].is_null()).count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_is_moved_aside_and_the_owner_told_once() {
    let server = test_server().await;
    let tg = fake_telegram::FakeTelegram::start(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let state = dir.path().join("state");
    let telegram = format!(
        "[notify.telegram]\nenabled = true\nchat_ids = [111]\ntoken_file = \"{}\"\napi_url = \"{}\"\n",
        token.display(),
        tg.url
    );
    // `extra` starts in [call]: the Telegram table follows the history's.
    let cfg = write_config(dir.path(), &server.url, &state, "");
    let text = std::fs::read_to_string(&cfg).unwrap() + &telegram;
    std::fs::write(&cfg, text).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("history.db"), vec![0x5a_u8; 16384]).unwrap();

    let told = |c: &fake_telegram::Call| c.str("text").contains("history was damaged");
    let bell = start(&cfg);
    bell.wait_log("connected to the signaling server").await;
    let notice = tg.wait_for("sendMessage", 1, told).await.remove(0);
    assert_eq!(notice.chat(), 111);
    assert!(
        notice.str("text").contains("damaged-"),
        "{}",
        notice.str("text")
    );
    bell.wait_log("the database was damaged").await;
    let aside: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(state.join(&aside[0]).join("history.db")).unwrap(),
        vec![0x5a_u8; 16384],
        "kept as it was, for whoever wants to look"
    );
    assert!(bell.stop().success());

    // Once: the next start finds the new database whole, and records.
    let mut bell = start(&cfg);
    bell.wait_log("connected to the signaling server").await;
    bell.press();
    bell.until("ended").await;
    assert!(bell.stop().success());
    assert_eq!(
        tg.calls_of("sendMessage")
            .into_iter()
            .filter(|c| told(c))
            .count(),
        1
    );
    assert_eq!(rows(&cfg).len(), 1);
    files_match_rows(&state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_calls_are_recorded_with_both_voices() {
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = write_config(dir.path(), &server.url, &state, "[record]\ncalls = true\n");
    let mut bell = start(&cfg);
    bell.wait_log("connected to the signaling server").await;
    // The door's microphone is a 440 Hz tone; the viewer talks at 1000 Hz
    // for 600 ms of the call.
    normal_ring(&mut bell, &server.url).await;
    let (recorded, _) = bell.until("recorded").await;
    assert_eq!(recorded["what"], "call");
    let clip = std::path::PathBuf::from(recorded["file"].as_str().unwrap());
    let seconds = recorded["seconds"].as_f64().unwrap();
    assert!(seconds > 0.5, "{recorded}");

    let video = assert_h264_and_opus_from_an_idr(&clip);
    assert!(
        (video - seconds).abs() <= 0.05 * seconds + 0.05,
        "video {video} s against {seconds} s recorded"
    );
    let probe = ffprobe(&clip);
    assert_eq!(
        (
            probe["streams"][0]["width"].as_u64(),
            probe["streams"][0]["height"].as_u64()
        ),
        (Some(320), Some(240))
    );

    // Both voices, mixed into the one track.
    let pcm = decoded_audio(&clip);
    let door = doorbell::media::audio::power_share(&pcm, 440.0);
    let viewer = doorbell::media::audio::power_share(&pcm, 1000.0);
    assert!(
        door > 0.1 && viewer > 0.02,
        "440 Hz share {door:.3}, 1000 Hz share {viewer:.3}"
    );

    let rows = rows(&cfg);
    assert_eq!(rows[0]["clip"].as_str(), clip.to_str());
    assert!(clip.starts_with(state.join("media")));
    files_match_rows(&state);

    let (duration, time) = chromium_plays(&clip).await;
    assert!(
        (duration - seconds).abs() < 0.1 * seconds + 0.1,
        "Chromium: {duration} s"
    );
    assert!(time > 0.3, "Chromium's time advanced to {time} s");
    eprintln!(
        "record | call {seconds:.2} s, ffprobe video {video:.2} s, 440 Hz {door:.2}, 1000 Hz {viewer:.2}, Chromium {duration:.2} s played to {time:.2} s"
    );
    assert!(bell.stop().success());
}
