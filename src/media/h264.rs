//! H.264 encoding with OpenH264 (the only module that imports `openh264`'s
//! encoder), and the few bitstream facts the rest of the crate checks.
//!
//! What browsers everywhere decode: Constrained Baseline, one slice per frame,
//! Annex-B with SPS and PPS in front of every IDR (OpenH264 repeats them on each
//! IDR; the RTP payloader sends them as a STAP-A ahead of the IDR slice).
//! Rate control holds the configured bitrate; to do so OpenH264 may skip a
//! frame on a sudden burst of detail (the pipeline carries the time over).
//! [`H264Decoder`] is the viewer's side, for tests, benchmarks and self-checks.

use bytes::Bytes;
#[cfg(feature = "testkit")]
use openh264::decoder::Decoder;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level, Profile,
    RateControlMode, SpsPpsStrategy, UsageType,
};
use openh264::formats::YUVSlices;
#[cfg(feature = "testkit")]
use openh264::formats::YUVSource;
use openh264::OpenH264API;

use super::{Frame, MediaError};

pub use super::EncoderSettings;

/// One encoded access unit.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub data: Bytes,
    pub keyframe: bool,
}

pub struct H264Encoder {
    encoder: Encoder,
    width: usize,
    height: usize,
    out: Vec<u8>,
}

impl H264Encoder {
    pub fn new(s: &EncoderSettings) -> Result<Self, MediaError> {
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(s.bitrate_kbps.saturating_mul(1000)))
            .max_frame_rate(FrameRate::from_hz(s.fps as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .level(Level::Level_3_1)
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            .skip_frames(true)
            .intra_frame_period(IntraFramePeriod::auto())
            .num_threads(1);
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| MediaError::Encoder(e.to_string()))?;
        Ok(Self {
            encoder,
            width: s.width,
            height: s.height,
            out: Vec::with_capacity(64 * 1024),
        })
    }

    /// The next encoded frame will be an IDR (with SPS and PPS).
    pub fn force_keyframe(&mut self) {
        self.encoder.force_intra_frame();
    }

    /// Encodes one picture; `None` if the encoder chose to skip it.
    pub fn encode(&mut self, frame: &Frame) -> Result<Option<Encoded>, MediaError> {
        if frame.width != self.width || frame.height != self.height {
            return Err(MediaError::Encoder(format!(
                "frame is {}x{}, the encoder was set up for {}x{}",
                frame.width, frame.height, self.width, self.height
            )));
        }
        let (y, u, v) = frame.planes();
        let yuv = YUVSlices::new(
            (y, u, v),
            (self.width, self.height),
            (self.width, self.width / 2, self.width / 2),
        );
        let bitstream = self
            .encoder
            .encode(&yuv)
            .map_err(|e| MediaError::Encoder(e.to_string()))?;
        let keyframe = matches!(bitstream.frame_type(), FrameType::IDR | FrameType::I);
        if matches!(bitstream.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        self.out.clear();
        bitstream.write_vec(&mut self.out);
        if self.out.is_empty() {
            return Ok(None);
        }
        Ok(Some(Encoded {
            data: Bytes::copy_from_slice(&self.out),
            keyframe,
        }))
    }
}

/// What the viewer sees of one decoded picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picture {
    pub width: usize,
    pub height: usize,
    /// The capture stamp (`media::stamp`), if the picture carries a readable one.
    pub stamp: Option<u32>,
}

/// The viewer's decoder (feature `testkit`: tests, benchmarks, self-checks).
#[cfg(feature = "testkit")]
pub struct H264Decoder(Decoder);

#[cfg(feature = "testkit")]
impl H264Decoder {
    pub fn new() -> Result<Self, MediaError> {
        Decoder::new()
            .map(Self)
            .map_err(|e| MediaError::Encoder(format!("decoder: {e}")))
    }

    /// Decodes one access unit (Annex-B); `None` while no picture is ready.
    pub fn decode(&mut self, access_unit: &[u8]) -> Result<Option<Picture>, MediaError> {
        let decoded = self
            .0
            .decode(access_unit)
            .map_err(|e| MediaError::Encoder(format!("decoder: {e}")))?;
        Ok(decoded.map(|yuv| {
            let (width, height) = yuv.dimensions();
            let (y_stride, _, _) = yuv.strides();
            Picture {
                width,
                height,
                stamp: super::stamp::read(yuv.y(), width, height, y_stride),
            }
        }))
    }
}

/// NAL unit types in an Annex-B buffer, in order.
pub fn nal_types(annex_b: &[u8]) -> Vec<u8> {
    nal_units(annex_b).map(|n| n[0] & 0x1F).collect()
}

/// The NAL units (without start codes) of an Annex-B buffer.
pub fn nal_units(annex_b: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= annex_b.len() {
        if annex_b[i] == 0 && annex_b[i + 1] == 0 && annex_b[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| {
            // Back over the start code and any zero of a 4-byte one.
            let mut e = s - 3;
            while e > 0 && annex_b[e - 1] == 0 {
                e -= 1;
            }
            e
        })
        .chain(std::iter::once(annex_b.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .filter(|(s, e)| e > s)
        .map(move |(s, e)| &annex_b[s..e])
}

/// `profile_idc`, constraint flags and `level_idc` of the first SPS: the three
/// bytes of an SDP `profile-level-id`.
pub fn sps_profile(annex_b: &[u8]) -> Option<[u8; 3]> {
    nal_units(annex_b)
        .find(|n| n[0] & 0x1F == 7 && n.len() >= 4)
        .map(|n| [n[1], n[2], n[3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::testsrc::TestPattern;
    use std::time::Duration;

    fn settings() -> EncoderSettings {
        EncoderSettings {
            width: 320,
            height: 240,
            fps: 30,
            bitrate_kbps: 500,
            keyframe_interval: Duration::ZERO,
            encoder: crate::spec::media::EncoderSpec::OpenH264,
        }
    }

    #[test]
    fn every_idr_carries_sps_and_pps_and_the_profile_is_constrained_baseline() {
        let mut enc = H264Encoder::new(&settings()).unwrap();
        let pattern = TestPattern::new(320, 240, 30);
        let mut frame = Frame::new(320, 240);
        let mut idrs = 0;
        for n in 0..40 {
            if n == 20 {
                enc.force_keyframe();
            }
            pattern.render(n, n * 33, &mut frame);
            let e = enc.encode(&frame).unwrap().expect("no skipped frames");
            let types = nal_types(&e.data);
            if types.contains(&5) {
                idrs += 1;
                assert!(e.keyframe);
                let sps = types.iter().position(|t| *t == 7).expect("SPS");
                let pps = types.iter().position(|t| *t == 8).expect("PPS");
                let idr = types.iter().position(|t| *t == 5).unwrap();
                assert!(sps < pps && pps < idr, "{types:?}");
                let [profile, constraints, _level] = sps_profile(&e.data).unwrap();
                assert_eq!(profile, 66, "baseline");
                assert!(
                    constraints & 0x40 != 0,
                    "constraint_set1: constrained baseline ({constraints:#x})"
                );
            } else {
                assert!(!e.keyframe, "{types:?}");
                assert_eq!(types, [1], "one P slice per frame");
            }
        }
        assert_eq!(idrs, 2, "the first frame and the forced one");
    }

    #[test]
    fn decoded_pictures_keep_their_size_and_stamp() {
        let mut enc = H264Encoder::new(&settings()).unwrap();
        let mut dec = H264Decoder::new().unwrap();
        let pattern = TestPattern::new(320, 240, 30);
        let mut frame = Frame::new(320, 240);
        let mut decoded = 0;
        for n in 0..10u64 {
            let ms = 1_700_000_000_000 + n * 33;
            pattern.render(n, ms, &mut frame);
            let e = enc.encode(&frame).unwrap().unwrap();
            if let Some(p) = dec.decode(&e.data).unwrap() {
                assert_eq!((p.width, p.height), (320, 240));
                assert_eq!(p.stamp, Some(ms as u32), "the stamp survives compression");
                decoded += 1;
            }
        }
        assert!(decoded >= 9, "{decoded}");
    }

    #[test]
    fn a_wrong_sized_frame_is_an_error_not_a_crash() {
        let mut enc = H264Encoder::new(&settings()).unwrap();
        let e = enc.encode(&Frame::new(640, 480)).unwrap_err().to_string();
        assert!(e.contains("640x480"), "{e}");
    }

    #[test]
    fn nal_splitting_handles_three_and_four_byte_start_codes() {
        let buf = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
        ];
        let units: Vec<&[u8]> = nal_units(&buf).collect();
        assert_eq!(
            units,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]
        );
        assert_eq!(nal_types(&buf), [7, 8, 5]);
    }
}
