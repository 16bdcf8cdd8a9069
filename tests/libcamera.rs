//! `video.source = "libcamera"`: rpicam-vid as a supervised child process,
//! against a stand-in that behaves like it (tests/fixtures/fake-rpicam-vid:
//! the same arguments, raw YUV420 on standard output at the frame rate,
//! talk on standard error, and the ways it ends). No camera module here:
//! the real program is not run.
//!
//! - frames of the asked size arrive in order, and the arguments are the
//!   real program's;
//! - when it dies, it is started again and the frames go on; its standard
//!   error is in our log;
//! - without a camera it is given up after a few starts, with its words;
//! - a full call with the door's video from it, decoded by the test viewer.

mod common;

use common::*;
use doorbell::media::libcamera::{LibcameraCamera, GIVE_UP_AFTER};
use doorbell::media::{Frame, VideoSource};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test binary, kept to be read.
fn capture_logs() {
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_env_filter("info,webrtc=warn,webrtc_ice=warn,webrtc_srtp=warn,webrtc_dtls=warn")
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

const FAKE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/fake-rpicam-vid"
);

/// A program that runs the stand-in in `mode`, logging its starts to `log`.
fn program(dir: &Path, mode: &str, log: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("rpicam-vid-{}", mode.replace(':', "-")));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nFAKE_RPICAM_MODE='{mode}' FAKE_RPICAM_LOG='{}' exec '{FAKE}' \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn starts(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn frames_arrive_and_the_program_is_started_again_when_it_dies() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("starts");
    let fake = program(dir.path(), "die-after:10", &log);
    let mut camera = LibcameraCamera::open(&fake, 1, 128, 96, 60).unwrap();
    assert!(
        camera.describe().contains("128x96"),
        "{}",
        camera.describe()
    );
    let mut frame = Frame::new(16, 16);
    let mut numbers = Vec::new();
    for _ in 0..25 {
        camera.next_frame(&mut frame).unwrap();
        assert_eq!((frame.width, frame.height), (128, 96));
        assert_eq!(frame.data.len(), 128 * 96 * 3 / 2);
        assert_eq!(frame.data[128 * 96], 128, "neutral chroma");
        numbers.push(frame.data[0]);
    }
    drop(camera);
    let expected: Vec<u8> = (0..25).map(|i| (i % 10) as u8).collect();
    assert_eq!(
        numbers, expected,
        "each run's frames in order, none lost or torn"
    );
    let starts = starts(&log);
    assert_eq!(starts.len(), 3, "{starts:?}");
    assert_eq!(
        starts[0],
        "--nopreview -t 0 --codec yuv420 --flush --camera 1 --width 128 --height 96 --framerate 60 -o -"
    );
    let logged = logs();
    assert!(
        logged.contains("fake camera timed out"),
        "its stderr is in our log"
    );
    assert!(logged.contains("starting it again in"), "{logged}");
}

#[test]
fn without_a_camera_it_is_given_up_with_its_words() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("starts");
    let fake = program(dir.path(), "no-camera", &log);
    let mut camera = LibcameraCamera::open(&fake, 0, 64, 48, 30).unwrap();
    let mut frame = Frame::new(64, 48);
    let e = camera.next_frame(&mut frame).unwrap_err().to_string();
    assert!(e.contains("no cameras available"), "{e}");
    assert!(e.contains(&format!("{GIVE_UP_AFTER} starts")), "{e}");
    assert_eq!(starts(&log).len(), GIVE_UP_AFTER as usize);
    // And a width with row padding is refused before anything starts.
    let e = LibcameraCamera::open(&fake, 0, 100, 48, 30)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("multiple of 64"), "{e}");
    assert_eq!(starts(&log).len(), GIVE_UP_AFTER as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_carries_the_camera_module_s_video() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("starts");
    let fake = program(dir.path(), "ok", &log);
    let Rig {
        mut bell,
        server,
        dir: _dir,
    } = rig(|c| {
        c.video.source = "libcamera".into();
        c.video.libcamera_command = fake.display().to_string();
        c.video.width = 320;
        c.video.height = 240;
    })
    .await;
    let reply = bell.ring().await;
    let room = reply.strip_prefix("ringing ").unwrap().to_string();
    let _ = bell.until("room_created").await;
    let report = view_call(
        &server.url,
        &room,
        30,
        (320, 240),
        Duration::from_secs(1),
        1000.0,
    )
    .await;
    assert!(
        report.decoded_frames >= 30,
        "{} frames",
        report.decoded_frames
    );
    let _ = bell.until("ended").await;
    bell.stop().await;
    let starts = starts(&log);
    assert!(!starts.is_empty(), "{starts:?}");
    assert!(starts[0].contains("--width 320 --height 240"), "{starts:?}");
}
