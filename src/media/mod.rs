//! Media: where pictures and sound come from, how they are encoded, and where
//! the viewer's voice goes.
//!
//! Sources and sinks sit behind three small traits ([`VideoSource`],
//! [`AudioSource`], [`AudioSink`]) so a call runs the same with a camera or the
//! test pattern, a microphone or a tone, a speaker or a WAV file. They are
//! opened per call through a [`MediaOpener`] (the camera LED goes off between
//! calls) and run on their own threads ([`video::VideoPipeline`],
//! [`audio::MicPipeline`], [`audio::Playout`]); the async side only moves
//! encoded frames. When a consumer falls behind, frames are dropped, never
//! queued without bound.

#[cfg(feature = "audio")]
mod alsa_log;
pub mod audio;
pub mod convert;
#[cfg(feature = "audio")]
pub mod device;
pub mod gain;
pub mod h264;
pub mod jitter;
pub mod negotiate;
pub mod snapshot;
pub mod spec;
pub mod stamp;
pub mod testsrc;
#[cfg(feature = "camera")]
pub mod v4l2;
pub mod video;
pub mod wav;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::Config;
use spec::{SinkSpec, SourceSpec, VideoSpec};

/// Opus and everything around it run at 48 kHz.
pub const AUDIO_RATE: u32 = 48_000;
/// 20 ms of 48 kHz mono: one Opus frame.
pub const AUDIO_FRAME: usize = 960;
pub const AUDIO_FRAME_DURATION: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("{device}: {message}")]
    Device { device: String, message: String },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("h264 encoder: {0}")]
    Encoder(String),
    #[error("opus: {0}")]
    Opus(String),
    #[error("{0} is not available in this build (feature {1:?} is off)")]
    NotBuilt(String, &'static str),
}

/// One I420 picture and when it was captured.
#[derive(Debug, Clone)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    /// Y plane (`width*height`), then U and V (`width/2*height/2` each).
    pub data: Vec<u8>,
    pub captured: Instant,
    /// Capture time as Unix milliseconds (what the stamp carries).
    pub captured_unix_ms: u64,
}

impl Frame {
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0; width * height * 3 / 2],
            captured: Instant::now(),
            captured_unix_ms: 0,
        }
    }

    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let (y, uv) = self.data.split_at(self.width * self.height);
        let (u, v) = uv.split_at(self.width * self.height / 4);
        (y, u, v)
    }

    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let (y, uv) = self.data.split_at_mut(self.width * self.height);
        let (u, v) = uv.split_at_mut(self.width * self.height / 4);
        (y, u, v)
    }
}

/// A camera, or anything that produces pictures at a steady rate.
pub trait VideoSource: Send {
    /// Fills `frame` with the next picture, blocking until it is due.
    fn next_frame(&mut self, frame: &mut Frame) -> Result<(), MediaError>;
    /// For logs: what this is (`testsrc 640x480@30`, `/dev/video0`).
    fn describe(&self) -> String;
}

/// A microphone: 48 kHz mono, 16-bit.
pub trait AudioSource: Send {
    /// Fills `pcm`, blocking until the samples exist (real-time pace).
    fn read(&mut self, pcm: &mut [i16]) -> Result<(), MediaError>;
    fn describe(&self) -> String;
}

/// A speaker: 48 kHz mono, 16-bit.
pub trait AudioSink: Send {
    fn write(&mut self, pcm: &[i16]) -> Result<(), MediaError>;
    /// End of the call: flush and close. Called once.
    fn finish(&mut self) -> Result<(), MediaError> {
        Ok(())
    }
    fn describe(&self) -> String;
}

/// Opens the devices of one call. The seam that lets tests and the demo swap
/// hardware for generated media.
pub trait MediaOpener: Send + Sync {
    /// `Ok(None)`: no video configured.
    fn video(&self) -> Result<Option<Box<dyn VideoSource>>, MediaError>;
    fn microphone(&self) -> Result<Option<Box<dyn AudioSource>>, MediaError>;
    fn speaker(&self, call: u64) -> Result<Option<Box<dyn AudioSink>>, MediaError>;
    /// Encoder settings for the video this opener produces.
    fn video_settings(&self) -> h264::EncoderSettings;
}

/// Opens what the config names.
#[derive(Debug, Clone)]
pub struct ConfiguredMedia {
    video: VideoSpec,
    microphone: SourceSpec,
    speaker: SinkSpec,
    speaker_volume: u32,
    microphone_gain_db: f32,
    settings: h264::EncoderSettings,
}

impl ConfiguredMedia {
    /// From a validated config (the specs parse).
    pub fn new(config: &Config) -> Result<Self, String> {
        let v = &config.video;
        Ok(Self {
            video: VideoSpec::parse(&v.source)?,
            microphone: SourceSpec::parse(&config.audio.microphone)?,
            speaker: SinkSpec::parse(&config.audio.speaker)?,
            speaker_volume: config.audio.speaker_volume,
            microphone_gain_db: config.audio.microphone_gain_db,
            settings: h264::EncoderSettings {
                width: v.width as usize,
                height: v.height as usize,
                fps: v.fps,
                bitrate_kbps: v.bitrate_kbps,
                keyframe_interval: v.keyframe_interval,
            },
        })
    }
}

impl MediaOpener for ConfiguredMedia {
    fn video(&self) -> Result<Option<Box<dyn VideoSource>>, MediaError> {
        let s = &self.settings;
        Ok(match &self.video {
            VideoSpec::Testsrc => Some(Box::new(testsrc::TestPattern::new(
                s.width, s.height, s.fps,
            ))),
            VideoSpec::V4l2(path) => Some(open_camera(path, s)?),
            VideoSpec::None => None,
        })
    }

    fn microphone(&self) -> Result<Option<Box<dyn AudioSource>>, MediaError> {
        let source: Box<dyn AudioSource> = match &self.microphone {
            SourceSpec::Tone { hz } => Box::new(audio::Tone::new(*hz)),
            SourceSpec::Device(name) => open_input(name)?,
            SourceSpec::None => return Ok(None),
        };
        Ok(Some(gain::GainSource::wrap(
            source,
            self.microphone_gain_db,
        )))
    }

    fn speaker(&self, call: u64) -> Result<Option<Box<dyn AudioSink>>, MediaError> {
        let sink: Box<dyn AudioSink> = match &self.speaker {
            SinkSpec::Wav(path) => Box::new(wav::WavSink::create(path, call)?),
            SinkSpec::Device(name) => {
                // A chime still playing gives the device up first.
                crate::chime::yield_speaker();
                open_output(name)?
            }
            SinkSpec::None => return Ok(None),
        };
        Ok(Some(gain::VolumeSink::wrap(sink, self.speaker_volume)))
    }

    fn video_settings(&self) -> h264::EncoderSettings {
        self.settings.clone()
    }
}

#[cfg(feature = "camera")]
fn open_camera(
    path: &std::path::Path,
    s: &h264::EncoderSettings,
) -> Result<Box<dyn VideoSource>, MediaError> {
    Ok(Box::new(v4l2::V4l2Camera::open(
        path,
        s.width as u32,
        s.height as u32,
        s.fps,
    )?))
}

#[cfg(not(feature = "camera"))]
fn open_camera(
    path: &std::path::Path,
    _: &h264::EncoderSettings,
) -> Result<Box<dyn VideoSource>, MediaError> {
    Err(MediaError::NotBuilt(
        format!("camera {}", path.display()),
        "camera",
    ))
}

#[cfg(feature = "audio")]
fn open_input(name: &str) -> Result<Box<dyn AudioSource>, MediaError> {
    Ok(Box::new(device::DeviceSource::open(name)?))
}

#[cfg(not(feature = "audio"))]
fn open_input(name: &str) -> Result<Box<dyn AudioSource>, MediaError> {
    Err(MediaError::NotBuilt(
        format!("microphone {name:?}"),
        "audio",
    ))
}

#[cfg(feature = "audio")]
fn open_output(name: &str) -> Result<Box<dyn AudioSink>, MediaError> {
    Ok(Box::new(device::DeviceSink::open(name)?))
}

#[cfg(not(feature = "audio"))]
fn open_output(name: &str) -> Result<Box<dyn AudioSink>, MediaError> {
    Err(MediaError::NotBuilt(format!("speaker {name:?}"), "audio"))
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
