//! The H.264 encoder of a call's video, behind one trait: OpenH264 in
//! software ([`H264Encoder`]) or the Raspberry Pi's hardware encoder
//! ([`V4l2m2mEncoder`]), as `video.encoder` says. [`open`] is what the video
//! pipeline calls; [`choose`] also says why `auto` fell back, for `doorbell
//! check`.

use std::path::Path;

use super::h264::{Encoded, H264Encoder};
use super::v4l2m2m::V4l2m2mEncoder;
use super::{EncoderSettings, Frame, MediaError};
use crate::spec::media::EncoderSpec;

/// What the video pipeline needs of an encoder.
pub trait VideoEncoder: Send {
    /// The next encoded frame will be an IDR (with SPS and PPS).
    fn force_keyframe(&mut self);
    /// Encodes one picture; `None` if the encoder chose to skip it.
    fn encode(&mut self, frame: &Frame) -> Result<Option<Encoded>, MediaError>;
    /// `openh264` or `v4l2m2m`, as in `video.encoder`.
    fn name(&self) -> &'static str;
}

impl VideoEncoder for H264Encoder {
    fn force_keyframe(&mut self) {
        H264Encoder::force_keyframe(self)
    }
    fn encode(&mut self, frame: &Frame) -> Result<Option<Encoded>, MediaError> {
        H264Encoder::encode(self, frame)
    }
    fn name(&self) -> &'static str {
        "openh264"
    }
}

impl VideoEncoder for V4l2m2mEncoder {
    fn force_keyframe(&mut self) {
        V4l2m2mEncoder::force_keyframe(self)
    }
    fn encode(&mut self, frame: &Frame) -> Result<Option<Encoded>, MediaError> {
        V4l2m2mEncoder::encode(self, frame)
    }
    fn name(&self) -> &'static str {
        "v4l2m2m"
    }
}

/// The encoder that opened, and for `auto` on OpenH264, why the hardware
/// one did not.
pub struct Chosen {
    pub encoder: Box<dyn VideoEncoder>,
    pub fallback: Option<Fallback>,
}

/// Why `auto` uses OpenH264.
#[derive(Debug)]
pub struct Fallback {
    /// The device node is there (so something is wrong with it, rather than
    /// this being a machine without one).
    pub device_exists: bool,
    pub reason: MediaError,
}

/// Opens the encoder `s.encoder` names.
pub fn choose(s: &EncoderSettings) -> Result<Chosen, MediaError> {
    choose_with(s, &V4l2m2mEncoder::open)
}

/// [`choose`] with another way to open the hardware encoder (tests).
pub fn choose_with(
    s: &EncoderSettings,
    open_hardware: &dyn Fn(&Path, &EncoderSettings) -> Result<V4l2m2mEncoder, MediaError>,
) -> Result<Chosen, MediaError> {
    let software = |fallback| -> Result<Chosen, MediaError> {
        Ok(Chosen {
            encoder: Box::new(H264Encoder::new(s)?),
            fallback,
        })
    };
    match &s.encoder {
        EncoderSpec::OpenH264 => software(None),
        EncoderSpec::V4l2m2m(path) => Ok(Chosen {
            encoder: Box::new(open_hardware(path, s)?),
            fallback: None,
        }),
        EncoderSpec::Auto(path) => match open_hardware(path, s) {
            Ok(hw) => Ok(Chosen {
                encoder: Box::new(hw),
                fallback: None,
            }),
            Err(reason) => software(Some(Fallback {
                device_exists: path.exists(),
                reason,
            })),
        },
    }
}

/// Opens the configured encoder. When `auto` falls back to OpenH264, one
/// log line says why: at info on a machine without the device (a Pi 5, a
/// PC), as a warning when the device is there but did not work.
pub fn open(s: &EncoderSettings) -> Result<Box<dyn VideoEncoder>, MediaError> {
    let chosen = choose(s)?;
    if let Some(f) = &chosen.fallback {
        if f.device_exists {
            tracing::warn!(
                "video encoder: OpenH264 (software), the hardware one failed: {}",
                f.reason
            );
        } else {
            tracing::info!(
                "video encoder: OpenH264 (software), no hardware one: {}",
                f.reason
            );
        }
    } else {
        tracing::debug!("video encoder: {}", chosen.encoder.name());
    }
    Ok(chosen.encoder)
}
