//! Media source and sink names as they appear in the config, parsed.
//!
//! Sources and sinks are chosen by a URL-like string (`testsrc`,
//! `v4l2:/dev/video0`, `tone:440`, `wav:/var/lib/doorbell/call-{call}.wav`,
//! `default`, `device:NAME`, `none`),
//! go2rtc style. Parsing is pure so `doorbell check` can reject a typo without
//! touching a device.

use std::path::{Path, PathBuf};

/// The camera side.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoSpec {
    /// A generated moving pattern with a frame counter, the time and a
    /// machine-readable capture stamp (see `media::stamp`).
    Testsrc,
    /// A V4L2 camera by device path: `/dev/video0`, or a stable name such as
    /// `/dev/v4l/by-id/usb-046d_0825_...-video-index0` (see `doorbell devices`).
    V4l2(PathBuf),
    /// The Raspberry Pi camera module through libcamera (`rpicam-vid` as a
    /// child process): `libcamera` (the first camera) or `libcamera:N`.
    Libcamera { camera: u32 },
    /// No video: the call is audio only.
    None,
}

/// The microphone side.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// A sine wave at `hz`.
    Tone {
        hz: f32,
    },
    /// A sound card input by name (`default` for the system default).
    Device(String),
    None,
}

/// The speaker side.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkSpec {
    /// A 48 kHz mono 16-bit WAV file per call; `{call}` in the path is replaced by
    /// the call number, otherwise each call overwrites the file.
    Wav(PathBuf),
    /// A sound card output by name (`default` for the system default).
    Device(String),
    None,
}

pub const DEFAULT_TONE_HZ: f32 = 440.0;

/// Which H.264 encoder a call's video goes through (`video.encoder`, with
/// `video.encoder_device`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncoderSpec {
    /// The hardware encoder at this device node if it opens, else OpenH264.
    Auto(PathBuf),
    /// The hardware encoder (a V4L2 memory-to-memory device) at this node;
    /// if it does not open, the call has no video.
    V4l2m2m(PathBuf),
    /// OpenH264, in software.
    OpenH264,
}

/// The Raspberry Pi's hardware H.264 encoder (Pi 4 and earlier).
pub const DEFAULT_ENCODER_DEVICE: &str = "/dev/video11";

impl EncoderSpec {
    /// `name` is `video.encoder`; `device` is `video.encoder_device`. The
    /// error says which of the two keys is wrong.
    pub fn parse(name: &str, device: &Path) -> Result<EncoderSpec, (&'static str, String)> {
        let hardware = || {
            if device.is_absolute() {
                Ok(device.to_path_buf())
            } else {
                Err((
                    "video.encoder_device",
                    format!(
                        "{}: the encoder's device node, an absolute path such as \"{DEFAULT_ENCODER_DEVICE}\"",
                        device.display()
                    ),
                ))
            }
        };
        match name.trim() {
            "auto" => Ok(EncoderSpec::Auto(hardware()?)),
            "v4l2m2m" => Ok(EncoderSpec::V4l2m2m(hardware()?)),
            "openh264" => Ok(EncoderSpec::OpenH264),
            other => Err((
                "video.encoder",
                format!("{other:?} is not an encoder (known: \"auto\", \"v4l2m2m\", \"openh264\")"),
            )),
        }
    }
}

impl VideoSpec {
    pub fn parse(s: &str) -> Result<VideoSpec, String> {
        match s.trim() {
            "testsrc" => Ok(VideoSpec::Testsrc),
            "none" => Ok(VideoSpec::None),
            "libcamera" => Ok(VideoSpec::Libcamera { camera: 0 }),
            other if other.starts_with("libcamera:") => other["libcamera:".len()..]
                .parse()
                .ok()
                .filter(|n| *n < 16)
                .map(|camera| VideoSpec::Libcamera { camera })
                .ok_or_else(|| {
                    format!("{other:?}: the camera's index, as in \"libcamera:0\" (`rpicam-hello --list-cameras` lists them)")
                }),
            other => match other.strip_prefix("v4l2:") {
                Some(path) => camera_path(other, path).map(VideoSpec::V4l2),
                None => Err(format!(
                    "{other:?} is not a video source (known: \"testsrc\", \"v4l2:/dev/videoN\", \"libcamera\", \"none\")"
                )),
            },
        }
    }
}

/// The device path of `v4l2:PATH`: absolute, and a name the kernel can take.
fn camera_path(spec: &str, path: &str) -> Result<PathBuf, String> {
    let path = path.trim();
    if path.is_empty() {
        return Err(format!(
            "{spec:?}: give the camera, as in \"v4l2:/dev/video0\" (`doorbell devices` lists them)"
        ));
    }
    if !path.starts_with('/') || path.contains('\0') {
        return Err(format!(
            "{spec:?}: the camera must be an absolute device path, as in \"v4l2:/dev/video0\""
        ));
    }
    Ok(PathBuf::from(path))
}

impl SourceSpec {
    pub fn parse(s: &str) -> Result<SourceSpec, String> {
        let s = s.trim();
        if s == "none" {
            return Ok(SourceSpec::None);
        }
        if s == "tone" {
            return Ok(SourceSpec::Tone {
                hz: DEFAULT_TONE_HZ,
            });
        }
        if let Some(hz) = s.strip_prefix("tone:") {
            let hz: f32 = hz
                .parse()
                .map_err(|_| format!("{s:?}: the tone frequency must be a number of hertz"))?;
            if !(20.0..=20_000.0).contains(&hz) {
                return Err(format!("{s:?}: the tone must be within 20..20000 Hz"));
            }
            return Ok(SourceSpec::Tone { hz });
        }
        device(s).map(SourceSpec::Device).ok_or_else(|| {
            format!(
                "{s:?} is not a microphone (known: \"tone\", \"tone:HZ\", \"default\", \"device:NAME\", \"none\")"
            )
        })
    }
}

impl SinkSpec {
    pub fn parse(s: &str) -> Result<SinkSpec, String> {
        let s = s.trim();
        if s == "none" {
            return Ok(SinkSpec::None);
        }
        if let Some(path) = s.strip_prefix("wav:") {
            if path.is_empty() {
                return Err(format!(
                    "{s:?}: give the file, as in \"wav:/var/lib/doorbell/call.wav\""
                ));
            }
            return Ok(SinkSpec::Wav(PathBuf::from(path)));
        }
        device(s).map(SinkSpec::Device).ok_or_else(|| {
            format!(
                "{s:?} is not a speaker (known: \"wav:PATH\", \"default\", \"device:NAME\", \"none\")"
            )
        })
    }
}

fn device(s: &str) -> Option<String> {
    if s == "default" {
        return Some("default".into());
    }
    s.strip_prefix("device:")
        .filter(|n| !n.trim().is_empty())
        .map(|n| n.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_names_parse_and_a_typo_names_its_key() {
        let dev = Path::new(DEFAULT_ENCODER_DEVICE);
        assert_eq!(
            EncoderSpec::parse("auto", dev),
            Ok(EncoderSpec::Auto(dev.into()))
        );
        assert_eq!(
            EncoderSpec::parse("v4l2m2m", dev),
            Ok(EncoderSpec::V4l2m2m(dev.into()))
        );
        assert_eq!(
            EncoderSpec::parse("openh264", Path::new("")),
            Ok(EncoderSpec::OpenH264)
        );
        let (key, e) = EncoderSpec::parse("nvenc", dev).unwrap_err();
        assert_eq!(key, "video.encoder");
        assert!(e.contains("\"nvenc\"") && e.contains("v4l2m2m"), "{e}");
        let (key, _) = EncoderSpec::parse("auto", Path::new("video11")).unwrap_err();
        assert_eq!(key, "video.encoder_device");
    }

    #[test]
    fn known_names_parse() {
        assert_eq!(VideoSpec::parse("testsrc"), Ok(VideoSpec::Testsrc));
        assert_eq!(VideoSpec::parse("none"), Ok(VideoSpec::None));
        assert_eq!(
            SourceSpec::parse("tone"),
            Ok(SourceSpec::Tone { hz: 440.0 })
        );
        assert_eq!(
            SourceSpec::parse("tone:1000"),
            Ok(SourceSpec::Tone { hz: 1000.0 })
        );
        assert_eq!(
            SourceSpec::parse("default"),
            Ok(SourceSpec::Device("default".into()))
        );
        assert_eq!(
            SourceSpec::parse("device:hw:CARD=C505e,DEV=0"),
            Ok(SourceSpec::Device("hw:CARD=C505e,DEV=0".into()))
        );
        assert_eq!(
            SinkSpec::parse("wav:/tmp/x-{call}.wav"),
            Ok(SinkSpec::Wav("/tmp/x-{call}.wav".into()))
        );
        assert_eq!(SinkSpec::parse("none"), Ok(SinkSpec::None));
    }

    #[test]
    fn cameras_parse_by_path_or_stable_name() {
        assert_eq!(
            VideoSpec::parse("v4l2:/dev/video0"),
            Ok(VideoSpec::V4l2("/dev/video0".into()))
        );
        assert_eq!(
            VideoSpec::parse(" v4l2:/dev/v4l/by-id/usb-046d_0825_A1B2C3D4-video-index0 "),
            Ok(VideoSpec::V4l2(
                "/dev/v4l/by-id/usb-046d_0825_A1B2C3D4-video-index0".into()
            ))
        );
        assert!(VideoSpec::parse("v4l2:")
            .unwrap_err()
            .contains("v4l2:/dev/video0"));
        assert!(VideoSpec::parse("v4l2:video0")
            .unwrap_err()
            .contains("absolute"));
        assert!(VideoSpec::parse("v4l2:/dev/video0\0")
            .unwrap_err()
            .contains("absolute"));
        assert!(VideoSpec::parse("/dev/video0")
            .unwrap_err()
            .contains("v4l2:/dev/videoN"));
    }

    #[test]
    fn typos_are_explained() {
        assert!(VideoSpec::parse("camera").unwrap_err().contains("testsrc"));
        assert!(SourceSpec::parse("tone:loud")
            .unwrap_err()
            .contains("number"));
        assert!(SourceSpec::parse("tone:5")
            .unwrap_err()
            .contains("20..20000"));
        assert!(SourceSpec::parse("device:")
            .unwrap_err()
            .contains("device:NAME"));
        assert!(SinkSpec::parse("wav:")
            .unwrap_err()
            .contains("give the file"));
        assert!(SinkSpec::parse("speaker").unwrap_err().contains("wav:PATH"));
    }
}
