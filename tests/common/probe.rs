//! Checking the files the doorbell writes with tools that did not write
//! them: ffprobe and ffmpeg (Debian's `ffmpeg`), and Chromium playing a clip.

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// ffprobe's view of a file: its streams and format, as JSON.
pub fn ffprobe(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs (Debian package ffmpeg; scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The first video frame as ffprobe decodes it (`key_frame`, `pict_type`).
pub fn first_video_frame(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-select_streams",
            "v:0",
        ])
        .args(["-show_frames", "-read_intervals", "%+#1"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["frames"][0].clone()
}

/// The audio of `path` decoded by ffmpeg: 48 kHz mono samples.
pub fn decoded_audio(path: &Path) -> Vec<i16> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-map", "0:a:0", "-f", "s16le", "-ac", "1", "-ar", "48000", "-",
        ])
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// Seconds of `stream` (or of the format when the stream has none).
pub fn seconds(probe: &Value, stream: &Value) -> f64 {
    stream["duration"]
        .as_str()
        .or(probe["format"]["duration"].as_str())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0)
}

/// Headless Chromium plays `clip` in a `<video>` element: it loads, and its
/// time advances. Returns (duration, currentTime after a while) as the page
/// saw them.
pub async fn chromium_plays(clip: &Path) -> (f64, f64) {
    let dir = clip.parent().unwrap();
    let page = dir.join("play.html");
    std::fs::write(
        &page,
        format!(
            "<!doctype html><video id=\"v\" src=\"{}\" muted autoplay playsinline></video>",
            clip.file_name().unwrap().to_string_lossy()
        ),
    )
    .unwrap();
    let url = format!("file://{}", page.display());
    let mut browser = super::cdp::launch_with(&url, &["--allow-file-access-from-files".into()]);
    let mut tab = browser.page("play.html").await;
    let state = r#"(() => { const v = document.getElementById("v");
        if (!v) return { ready: -1, duration: 0, time: 0, error: null };
        return { ready: v.readyState, duration: v.duration, time: v.currentTime,
                 error: v.error ? v.error.code + " " + v.error.message : null }; })()"#;
    let mut last = Value::Null;
    for _ in 0..60 {
        last = tab.eval(state).await;
        assert!(
            last["error"].is_null(),
            "Chromium could not play {}: {last}",
            clip.display()
        );
        if last["time"].as_f64().unwrap_or(0.0) > 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_file(&page);
    browser.kill();
    (
        last["duration"].as_f64().unwrap_or(0.0),
        last["time"].as_f64().unwrap_or(0.0),
    )
}

/// `(codec_type, codec_name)` of each stream ffprobe found.
pub fn stream_kinds(probe: &Value) -> Vec<(String, String)> {
    probe["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap_or("?").to_string(),
                s["codec_name"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

/// An H.264 stream and an Opus stream, in that order, and an I frame first:
/// what every clip of the doorbell must be. The video stream's length in
/// seconds.
pub fn assert_h264_and_opus_from_an_idr(clip: &Path) -> f64 {
    let probe = ffprobe(clip);
    let kinds = stream_kinds(&probe);
    let want = [("video", "h264"), ("audio", "opus")].map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(kinds, want, "{probe}");
    let first = first_video_frame(clip);
    assert_eq!(
        (first["key_frame"].as_u64(), first["pict_type"].as_str()),
        (Some(1), Some("I")),
        "{first}"
    );
    seconds(&probe, &probe["streams"][0])
}
