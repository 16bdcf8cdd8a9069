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
pub mod echo;
pub mod encoder;
pub mod gain;
pub mod h264;
pub mod jitter;
pub mod lease;
pub mod libcamera;
#[cfg(any(test, feature = "testkit"))]
pub mod memory;
pub mod mp4;
pub mod negotiate;
pub mod ogg_opus;
pub mod opener;
pub mod ring_picture;
pub mod snapshot;
pub mod stamp;
pub mod tap;
pub mod testsrc;
#[cfg(feature = "camera")]
pub mod v4l2;
pub mod v4l2m2m;
pub mod video;
pub mod wav;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::spec::media::EncoderSpec;

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
    #[error("echo canceller: {0}")]
    Echo(String),
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

/// H.264 encoder settings for the video of a call.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderSettings {
    pub width: usize,
    pub height: usize,
    pub fps: u32,
    pub bitrate_kbps: u32,
    /// Force an IDR at least this often; zero: only on request.
    pub keyframe_interval: Duration,
    /// Which encoder: the hardware one, OpenH264, or the first that opens.
    pub encoder: EncoderSpec,
}

/// Opens the devices of one call. The seam that lets tests and the demo swap
/// hardware for generated media.
pub trait MediaOpener: Send + Sync {
    /// `Ok(None)`: no video configured.
    fn video(&self) -> Result<Option<Box<dyn VideoSource>>, MediaError>;
    fn microphone(&self) -> Result<Option<Box<dyn AudioSource>>, MediaError>;
    fn speaker(&self, call: u64) -> Result<Option<Box<dyn AudioSink>>, MediaError>;
    /// The speaker for a courtesy sound (the voicemail prompt, a quick
    /// reply) played by one who holds the [`lease::SpeakerLease`]: unlike
    /// [`MediaOpener::speaker`], it does not ask the holder to let go.
    fn courtesy_speaker(&self, call: u64) -> Result<Option<Box<dyn AudioSink>>, MediaError> {
        self.speaker(call)
    }
    /// Encoder settings for the video this opener produces.
    fn video_settings(&self) -> EncoderSettings;
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
