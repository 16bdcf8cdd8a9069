//! Opens the devices the config names, per call: the camera (or the test
//! pattern), the microphone (or a tone), the speaker (or a WAV file). The
//! composition root makes one [`ConfiguredMedia`] from [`MediaSettings`] and
//! the [`SpeakerLease`] it shares with the chime.

use super::lease::SpeakerLease;
use super::{
    audio, gain, testsrc, wav, AudioSink, AudioSource, EncoderSettings, MediaError, MediaOpener,
    VideoSource,
};
use crate::spec::media::{SinkSpec, SourceSpec, VideoSpec};

/// What the media of a call are made of (`[video]` and `[audio]` of the
/// config, parsed).
#[derive(Debug, Clone, PartialEq)]
pub struct MediaSettings {
    pub video: VideoSpec,
    pub microphone: SourceSpec,
    pub speaker: SinkSpec,
    pub speaker_volume: u32,
    pub microphone_gain_db: f32,
    pub encoder: EncoderSettings,
    /// The program for `libcamera` (`auto`: rpicam-vid, then libcamera-vid).
    pub libcamera_command: String,
}

/// Opens the configured devices.
#[derive(Debug, Clone)]
pub struct ConfiguredMedia {
    settings: MediaSettings,
    /// The speaker, shared with the chime.
    lease: SpeakerLease,
}

impl ConfiguredMedia {
    pub fn new(settings: MediaSettings, lease: SpeakerLease) -> Self {
        Self { settings, lease }
    }
}

impl MediaOpener for ConfiguredMedia {
    fn video(&self) -> Result<Option<Box<dyn VideoSource>>, MediaError> {
        let s = &self.settings.encoder;
        Ok(match &self.settings.video {
            VideoSpec::Testsrc => Some(Box::new(testsrc::TestPattern::new(
                s.width, s.height, s.fps,
            ))),
            VideoSpec::V4l2(path) => Some(open_camera(path, s)?),
            VideoSpec::Libcamera { camera } => {
                let program = super::libcamera::resolve(&self.settings.libcamera_command).map_err(
                    |message| MediaError::Device {
                        device: "libcamera".into(),
                        message,
                    },
                )?;
                Some(Box::new(super::libcamera::LibcameraCamera::open(
                    &program, *camera, s.width, s.height, s.fps,
                )?))
            }
            VideoSpec::None => None,
        })
    }

    fn microphone(&self) -> Result<Option<Box<dyn AudioSource>>, MediaError> {
        let source: Box<dyn AudioSource> = match &self.settings.microphone {
            SourceSpec::Tone { hz } => Box::new(audio::Tone::new(*hz)),
            SourceSpec::Device(name) => open_input(name)?,
            SourceSpec::None => return Ok(None),
        };
        Ok(Some(gain::GainSource::wrap(
            source,
            self.settings.microphone_gain_db,
        )))
    }

    fn speaker(&self, call: u64) -> Result<Option<Box<dyn AudioSink>>, MediaError> {
        self.open_speaker(call, true)
    }

    fn courtesy_speaker(&self, call: u64) -> Result<Option<Box<dyn AudioSink>>, MediaError> {
        self.open_speaker(call, false)
    }

    fn video_settings(&self) -> EncoderSettings {
        self.settings.encoder.clone()
    }
}

impl ConfiguredMedia {
    /// `take_over`: for the call, which stops a chime still playing first.
    /// A courtesy sound holds the lease itself and must not.
    fn open_speaker(
        &self,
        call: u64,
        take_over: bool,
    ) -> Result<Option<Box<dyn AudioSink>>, MediaError> {
        let sink: Box<dyn AudioSink> = match &self.settings.speaker {
            SinkSpec::Wav(path) => Box::new(wav::WavSink::create(path, call)?),
            SinkSpec::Device(name) => {
                if take_over {
                    self.lease.take_over();
                }
                open_output(name)?
            }
            SinkSpec::None => return Ok(None),
        };
        Ok(Some(gain::VolumeSink::wrap(
            sink,
            self.settings.speaker_volume,
        )))
    }
}

#[cfg(feature = "camera")]
fn open_camera(
    path: &std::path::Path,
    s: &EncoderSettings,
) -> Result<Box<dyn VideoSource>, MediaError> {
    Ok(Box::new(super::v4l2::V4l2Camera::open(
        path,
        s.width as u32,
        s.height as u32,
        s.fps,
    )?))
}

#[cfg(not(feature = "camera"))]
fn open_camera(
    path: &std::path::Path,
    _: &EncoderSettings,
) -> Result<Box<dyn VideoSource>, MediaError> {
    Err(MediaError::NotBuilt(
        format!("camera {}", path.display()),
        "camera",
    ))
}

#[cfg(feature = "audio")]
fn open_input(name: &str) -> Result<Box<dyn AudioSource>, MediaError> {
    Ok(Box::new(super::device::DeviceSource::open(name)?))
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
    Ok(Box::new(super::device::DeviceSink::open(name)?))
}

#[cfg(not(feature = "audio"))]
fn open_output(name: &str) -> Result<Box<dyn AudioSink>, MediaError> {
    Err(MediaError::NotBuilt(format!("speaker {name:?}"), "audio"))
}
