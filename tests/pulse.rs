//! The sound card path for real: a PulseAudio server in user space with a null
//! sink (44.1 kHz stereo, so audio is resampled both ways), reached through
//! cpal and ALSA's `pulse` plugin exactly as on a Pi with PulseAudio or
//! PipeWire. What is played into the sink comes back on its monitor, which is
//! the server's default source.
//!
//! - a tone played through `DeviceSink` is captured through `DeviceSource` at
//!   48 kHz with its frequency intact (a wrong resampling ratio would move it
//!   by 8 %);
//! - a full call with both the microphone and the speaker on PulseAudio: the
//!   viewer's voice goes out of the doorbell's speaker, into the monitor, into
//!   the doorbell's microphone and back to the viewer, who hears its own tone;
//! - a press plays the chime on the speaker.
//!
//! Needs `pulseaudio` and `libasound2-plugins` (`scripts/test` installs them).

#![cfg(feature = "audio")]

mod common;

use common::*;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use doorbell::media::audio::{dominant_frequency, power_share, rms, Tone};
use doorbell::media::device::{DeviceSink, DeviceSource};
use doorbell::media::{AudioSink, AudioSource, AUDIO_FRAME};

/// Tests share one null sink: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Pulse {
    dir: PathBuf,
}

/// Starts the PulseAudio server once for this test binary and points this
/// process at it. The server dies with the process (PR_SET_PDEATHSIG, armed
/// from a thread that lives as long as the process).
fn pulse() -> &'static Pulse {
    static PULSE: OnceLock<Pulse> = OnceLock::new();
    PULSE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("doorbell-pulse-")
            .tempdir()
            .unwrap()
            .keep();
        let socket = dir.join("native");
        let script = dir.join("test.pa");
        std::fs::write(
            &script,
            format!(
                "load-module module-native-protocol-unix socket={} auth-anonymous=1\n\
                 load-module module-null-sink sink_name=doorbell_test rate=44100 channels=2\n\
                 set-default-sink doorbell_test\n\
                 set-default-source doorbell_test.monitor\n",
                socket.display()
            ),
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.clone();
        std::thread::spawn(move || {
            let child = spawn_pulseaudio(&d, &script);
            let _ = tx.send(child.map(|c| c.id()));
            loop {
                std::thread::park();
            }
        });
        let pid = rx
            .recv()
            .unwrap()
            .unwrap_or_else(|e| panic!("cannot start pulseaudio ({e}); install pulseaudio and libasound2-plugins (scripts/test does)"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "pulseaudio (pid {pid}) did not open {} in 10 s; log: {}",
                socket.display(),
                std::fs::read_to_string(dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Set before any thread of this process opens a sound device (every
        // test goes through this function first).
        std::env::set_var("PULSE_SERVER", format!("unix:{}", socket.display()));
        eprintln!("pulseaudio running, pid {pid}, socket {}", socket.display());
        Pulse { dir }
    })
}

fn spawn_pulseaudio(dir: &std::path::Path, script: &std::path::Path) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::File::create(dir.join("log"))?;
    let mut cmd = Command::new("pulseaudio");
    cmd.args([
        "-n",
        "--daemonize=no",
        "--exit-idle-time=-1",
        "--use-pid-file=no",
    ])
    .args([
        "--disable-shm=yes",
        "--log-target=stderr",
        "--log-level=error",
    ])
    .arg("-F")
    .arg(script)
    .env("HOME", dir)
    .env("XDG_RUNTIME_DIR", dir)
    .env("PULSE_RUNTIME_PATH", dir.join("runtime"))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(log);
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.spawn()
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads `seconds` of 48 kHz audio from `source`.
fn capture(source: &mut DeviceSource, seconds: f64) -> Vec<i16> {
    let mut out = Vec::new();
    let mut frame = [0i16; AUDIO_FRAME];
    while out.len() < (48_000.0 * seconds) as usize {
        source.read(&mut frame).unwrap();
        out.extend_from_slice(&frame);
    }
    out
}

#[test]
fn a_tone_round_trips_through_pulseaudio_at_48_khz() {
    let _one = serial();
    let p = pulse();
    let mut mic = DeviceSource::open("pulse").expect("the pulse microphone opens");
    // Capture is flowing before the tone starts (a PulseAudio stream can take
    // a moment to start delivering).
    capture(&mut mic, 0.2);
    let mut speaker = DeviceSink::open("pulse").expect("the pulse speaker opens");
    eprintln!(
        "speaker at {} Hz, microphone at {} Hz (server dir {})",
        speaker.rate(),
        mic.rate(),
        p.dir.display()
    );
    let player = std::thread::spawn(move || {
        let mut tone = Tone::new(1000.0);
        let start = Instant::now();
        for i in 0..150u32 {
            let mut pcm = [0i16; AUDIO_FRAME];
            tone.fill(&mut pcm);
            speaker.write(&pcm).unwrap();
            let due = start + Duration::from_millis(20) * (i + 1);
            // Stay about 60 ms ahead of the device, as the call's playout does.
            if let Some(wait) =
                due.checked_duration_since(Instant::now() + Duration::from_millis(60))
            {
                std::thread::sleep(wait);
            }
        }
        speaker.finish().unwrap();
    });
    let heard = capture(&mut mic, 4.0);
    player.join().unwrap();
    // The tone is there, whole, at its frequency: the 20 ms blocks that carry
    // it, without the first and last (fade in/out of the stream).
    let blocks: Vec<&[i16]> = heard.chunks(960).filter(|b| rms(b) > 1000.0).collect();
    assert!(
        blocks.len() > 50,
        "{} blocks of the 3 s tone came back: {:?}",
        blocks.len(),
        heard.chunks(960).map(|b| rms(b) as u32).collect::<Vec<_>>()
    );
    let middle: Vec<i16> = blocks[2..blocks.len() - 2].concat();
    let level = rms(&middle);
    let hz = dominant_frequency(&middle).expect("a dominant frequency");
    eprintln!("captured rms {level:.0}, {hz:.1} Hz");
    assert!(level > 1000.0, "the tone came back (rms {level})");
    assert!(
        (hz - 1000.0).abs() < 1000.0 * 0.02,
        "1000 Hz played, {hz} Hz captured: the 48 kHz conversion is off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard only serialises the tests of this file (one null sink); it is
// held by the test's own future, on the thread that blocks on it.
#[allow(clippy::await_holding_lock)]
async fn a_call_runs_on_pulseaudio_devices() {
    let _one = serial();
    pulse();
    init_logs();
    let Rig {
        mut bell,
        server,
        dir: _dir,
    } = rig(|config| {
        config.audio.microphone = "device:pulse".into();
        config.audio.speaker = "device:pulse".into();
        config.chime.sound = "none".into();
    })
    .await;
    let url = server.url.clone();
    assert!(bell.ring().await.starts_with("ringing "));
    let (notified, _) = bell.until("notified").await;
    let room = room_of(notified.to_json()["link"].as_str().unwrap());
    // The viewer talks at 660 Hz; the doorbell plays it into the null sink,
    // its microphone hears the sink's monitor, and the viewer gets it back.
    let report = view_call_listening(
        &url,
        &room,
        60,
        (320, 240),
        Duration::from_secs(7),
        660.0,
        Duration::from_secs(5),
    )
    .await;
    assert!(report.decoded_frames >= 60 && report.sizes_ok, "{report:?}");
    let hz = report
        .doorbell_tone_hz
        .expect("the viewer heard something from the doorbell");
    assert!(
        (hz - 660.0).abs() < 660.0 * 0.05,
        "the viewer's 660 Hz came back through the speaker and microphone as {hz} Hz"
    );
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "viewer_left");
    bell.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard only serialises the tests of this file (one null sink); it is
// held by the test's own future, on the thread that blocks on it.
#[allow(clippy::await_holding_lock)]
async fn a_press_plays_the_chime_on_the_speaker() {
    let _one = serial();
    pulse();
    init_logs();
    let Rig {
        mut bell,
        server: _server,
        dir: _dir,
    } = rig(|config| config.audio.speaker = "device:pulse".into()).await;
    // Listen on the monitor first, then press.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let listener = std::thread::spawn(move || {
        let mut mic = DeviceSource::open("pulse").unwrap();
        capture(&mut mic, 0.2);
        ready_tx.send(()).unwrap();
        capture(&mut mic, 3.0)
    });
    tokio::task::spawn_blocking(move || ready_rx.recv().unwrap())
        .await
        .unwrap();
    assert!(bell.ring().await.starts_with("ringing "));
    let heard = tokio::task::spawn_blocking(move || listener.join().unwrap())
        .await
        .unwrap();
    // The ding (E5, 659 Hz) dominates some 100 ms window.
    let best = heard
        .chunks(4800)
        .filter(|w| w.len() == 4800 && rms(w) > 500.0)
        .map(|w| power_share(w, 659.25))
        .fold(0.0, f64::max);
    assert!(
        best > 0.5,
        "the chime's 659 Hz note was heard on the speaker (best share {best:.2})"
    );
    let _ = bell.until("notified").await;
    bell.stop().await;
    let mut log = String::new();
    let _ =
        std::fs::File::open(pulse().dir.join("log")).and_then(|mut f| f.read_to_string(&mut log));
    assert!(!log.contains("E: "), "pulseaudio reported errors: {log}");
}
