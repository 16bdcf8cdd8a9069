//! The fault matrix's device faults (the rest is tests/faults.rs): the
//! camera and the speaker fail in the middle of a call. There is no camera
//! or sound card here to unplug, so the doorbell gets its devices through
//! its media seam (`MediaOpener`) from a wrapper around the configured ones
//! (the test pattern, the WAV speaker) that starts failing on cue, with the
//! errors a real unplugged device gives. Everything else is real: the
//! signaling server, the webrtc-rs peers, the RTP.
//!
//! Alone in its test binary: the leak check counts this process's open file
//! descriptors and the doorbell's media threads.

mod common;

use common::live::LiveViewer;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use doorbell::call::event::CallEvent;
use doorbell::cmd::daemon;
use doorbell::media::lease::SpeakerLease;
use doorbell::media::opener::ConfiguredMedia;
use doorbell::media::{
    AudioSink, AudioSource, EncoderSettings, Frame, MediaError, MediaOpener, VideoSource,
};

#[derive(Default)]
struct Switches {
    camera_unplugged: AtomicBool,
    speaker_unplugged: AtomicBool,
}

struct Breakable {
    real: ConfiguredMedia,
    switches: Arc<Switches>,
}

fn unplugged(device: &str, call: &str) -> MediaError {
    MediaError::Device {
        device: device.into(),
        message: format!("{call}: No such device (os error 19)"),
    }
}

impl MediaOpener for Breakable {
    fn video(&self) -> Result<Option<Box<dyn VideoSource>>, MediaError> {
        if self.switches.camera_unplugged.load(Ordering::Acquire) {
            return Err(unplugged("/dev/video0", "open"));
        }
        Ok(self.real.video()?.map(|inner| {
            Box::new(Camera {
                inner,
                switches: self.switches.clone(),
            }) as Box<dyn VideoSource>
        }))
    }

    fn microphone(&self) -> Result<Option<Box<dyn AudioSource>>, MediaError> {
        self.real.microphone()
    }

    fn speaker(&self, call: u64) -> Result<Option<Box<dyn AudioSink>>, MediaError> {
        if self.switches.speaker_unplugged.load(Ordering::Acquire) {
            return Err(unplugged("plughw:CARD=Device,DEV=0", "snd_pcm_open"));
        }
        Ok(self.real.speaker(call)?.map(|inner| {
            Box::new(Speaker {
                inner,
                switches: self.switches.clone(),
            }) as Box<dyn AudioSink>
        }))
    }

    fn video_settings(&self) -> EncoderSettings {
        self.real.video_settings()
    }
}

struct Camera {
    inner: Box<dyn VideoSource>,
    switches: Arc<Switches>,
}

impl VideoSource for Camera {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<(), MediaError> {
        if self.switches.camera_unplugged.load(Ordering::Acquire) {
            return Err(unplugged("/dev/video0", "VIDIOC_DQBUF"));
        }
        self.inner.next_frame(frame)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

struct Speaker {
    inner: Box<dyn AudioSink>,
    switches: Arc<Switches>,
}

impl AudioSink for Speaker {
    fn write(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        if self.switches.speaker_unplugged.load(Ordering::Acquire) {
            return Err(unplugged("plughw:CARD=Device,DEV=0", "snd_pcm_writei"));
        }
        self.inner.write(pcm)
    }

    fn finish(&mut self) -> Result<(), MediaError> {
        self.inner.finish()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// This process's open file descriptors.
fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The doorbell's media threads alive in this process (capture, encode,
/// microphone, playout: all named by the media pipelines).
fn media_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .filter(|n| {
            ["video-", "mic", "playout", "audio-"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .collect()
}

/// Waits until no media thread is left and the fds are back to `base`.
async fn no_leak(base: usize, fault: &str) -> usize {
    let start = Instant::now();
    loop {
        let (n, threads) = (fds(), media_threads());
        if n <= base && threads.is_empty() {
            return n;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{fault}: {base} fds before, {n} after; media threads left: {threads:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn answered_ring(rig: &mut Rig) -> LiveViewer {
    answered_ring_seeing(rig).await.0
}

/// A ring answered by a live viewer; the events up to `connected`.
async fn answered_ring_seeing(rig: &mut Rig) -> (LiveViewer, Vec<CallEvent>) {
    rig.bell.ring().await;
    let (notified, mut seen) = rig.bell.until("notified").await;
    let link = notified.to_json()["link"].as_str().unwrap().to_string();
    let viewer = LiveViewer::join(&rig.server.url, &room_of(&link)).await;
    seen.extend(rig.bell.until("connected").await.1);
    (viewer, seen)
}

async fn ended(rig: &mut Rig) -> String {
    let (ended, seen) = rig.bell.until("ended").await;
    let reason = ended.to_json()["reason"].as_str().unwrap().to_string();
    assert_eq!(reason, "viewer_left", "{:?}", names(&seen));
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_camera_and_the_speaker_fail_mid_call_and_the_call_goes_on() {
    init_logs();
    let switches = Arc::new(Switches::default());
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    let config = loopback_config(&server.url, dir.path());
    let opener = Breakable {
        real: ConfiguredMedia::new(config.media_settings().unwrap(), SpeakerLease::new()),
        switches: switches.clone(),
    };
    let bell = Bell::start_with(
        &config,
        daemon::Options {
            media: Some(Arc::new(opener)),
            ..Default::default()
        },
    )
    .await;
    bell.wait_connected().await;
    let mut rig = Rig { bell, server, dir };

    // A normal call first, for the baseline.
    let viewer = answered_ring(&mut rig).await;
    viewer.more_frames(20).await;
    viewer.leave().await;
    ended(&mut rig).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let base = fds();

    // The camera is unplugged mid-call.
    let viewer = answered_ring(&mut rig).await;
    viewer.more_frames(20).await;
    switches.camera_unplugged.store(true, Ordering::Release);
    let unplugged_at = Instant::now();
    let (error, _) = rig.bell.until("error").await;
    let told_after = unplugged_at.elapsed();
    let what = error.to_json()["what"].as_str().unwrap().to_string();
    assert!(what.starts_with("video: /dev/video0"), "{what}");
    // The call goes on with sound both ways; no more pictures.
    let frames = viewer.frames();
    viewer.more_audio(100).await;
    assert!(
        viewer.frames() <= frames + 2,
        "pictures after the camera died"
    );
    viewer.leave().await;
    ended(&mut rig).await;
    // Rung while the camera is still gone: a call with sound only, the
    // owner told why.
    let (viewer, mut seen) = answered_ring_seeing(&mut rig).await;
    viewer.more_audio(50).await;
    viewer.leave().await;
    seen.extend(rig.bell.until("ended").await.1);
    let errors: Vec<String> = seen
        .iter()
        .filter(|e| e.name() == "error")
        .map(|e| e.to_json()["what"].as_str().unwrap().to_string())
        .collect();
    assert!(
        errors.iter().any(|w| w.contains("/dev/video0")),
        "{errors:?}"
    );
    // Plugged back: pictures again.
    switches.camera_unplugged.store(false, Ordering::Release);
    let viewer = answered_ring(&mut rig).await;
    viewer.more_frames(20).await;
    viewer.leave().await;
    ended(&mut rig).await;
    let n = no_leak(base, "camera unplugged").await;
    eprintln!(
        "fault | the camera fails mid-call (VIDIOC_DQBUF: ENODEV) | error \"{what}\" {}; the call goes on with sound; a ring while it is gone: {errors:?}, sound only | pictures again at the first ring after it is back | {n} fds, no media thread left",
        format_args!("{:.2} s after", told_after.as_secs_f64())
    );

    // The speaker is unplugged mid-call.
    let viewer = answered_ring(&mut rig).await;
    viewer.more_frames(20).await;
    switches.speaker_unplugged.store(true, Ordering::Release);
    let unplugged_at = Instant::now();
    let (error, _) = rig.bell.until("error").await;
    let told_after = unplugged_at.elapsed();
    let what = error.to_json()["what"].as_str().unwrap().to_string();
    assert!(what.starts_with("speaker: plughw"), "{what}");
    viewer.more_frames(60).await;
    viewer.more_audio(50).await;
    viewer.leave().await;
    ended(&mut rig).await;
    switches.speaker_unplugged.store(false, Ordering::Release);
    let viewer = answered_ring(&mut rig).await;
    viewer.more_frames(20).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    viewer.leave().await;
    ended(&mut rig).await;
    let call = rig.bell.status().await.calls;
    let (rms, hz) = recorded_tone(&wav_of(rig.dir.path(), call));
    assert!(
        rms > 1000.0 && (hz.unwrap_or(0.0) - 1000.0).abs() < 30.0,
        "{rms} {hz:?}"
    );
    let n = no_leak(base, "speaker unplugged").await;
    eprintln!(
        "fault | the speaker fails mid-call (snd_pcm_writei: ENODEV) | error \"{what}\" {:.2} s after; pictures and the door's sound go on | the next call plays the viewer's voice | {n} fds, no media thread left",
        told_after.as_secs_f64()
    );
    rig.bell.stop().await;
}
