//! Opens the devices the config names, per call: the camera (or the test
//! pattern), the microphone (or a tone), the speaker (or a WAV file). The
//! composition root makes one [`ConfiguredMedia`] from [`MediaSettings`] and
//! the [`SpeakerLease`] it shares with the chime.

use super::echo::{Duplex, EchoPath, EchoSettings};
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
    /// Echo control, where the microphone and the speaker are sound devices.
    pub echo: EchoSettings,
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
    /// Between a microphone and a speaker that share the air.
    echo: Option<EchoPath>,
}

impl ConfiguredMedia {
    pub fn new(settings: MediaSettings, lease: SpeakerLease) -> Self {
        let acoustic = matches!(settings.microphone, SourceSpec::Device(_))
            && matches!(settings.speaker, SinkSpec::Device(_));
        let needed = settings.echo.cancel || settings.echo.duplex != Duplex::Full;
        let echo = (acoustic && needed).then(|| EchoPath::new(settings.echo));
        Self {
            settings,
            lease,
            echo,
        }
    }

    /// The echo control between the microphone and the speaker, if any.
    pub fn echo(&self) -> Option<&EchoPath> {
        self.echo.as_ref()
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
        let source = gain::GainSource::wrap(source, self.settings.microphone_gain_db);
        Ok(Some(match &self.echo {
            Some(echo) => echo.microphone(source)?,
            None => source,
        }))
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
        let sink = gain::VolumeSink::wrap(sink, self.settings.speaker_volume);
        Ok(Some(match &self.echo {
            Some(echo) => echo.speaker(sink),
            None => sink,
        }))
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
