//! A still picture of the door for notifications: one JPEG from the camera.
//!
//! The owner's phone shows this before anything else, so it must be a picture
//! worth looking at: a freshly opened camera needs a few frames before exposure
//! and white balance settle (the first ones are often dark or green), so the
//! first `settle_frames` are thrown away. At 30 fps the default 5 cost about
//! 170 ms. The camera is opened through the same [`MediaOpener`] as calls and
//! closed again at once, so the camera LED goes off and a call can have it.
//!
//! Frames are I420 with BT.601 limited range (what the H.264 encoder gets);
//! JPEG (JFIF) is full range, so levels are stretched on the way, otherwise
//! black would come out grey. Encoding blocks: callers run [`take`] in
//! `spawn_blocking`.

use jpeg_encoder::{Encoder, ImageBuffer, JpegColorType, SamplingFactor};

use super::{Frame, MediaError, MediaOpener};

/// JPEG quality: small enough to upload fast over a weak uplink (a 640x480
/// picture is some 40 KB), good enough to recognise a face.
const QUALITY: u8 = 80;

/// An encoded picture.
#[derive(Clone, PartialEq, Eq)]
pub struct Jpeg {
    pub data: Vec<u8>,
    pub width: usize,
    pub height: usize,
}

impl std::fmt::Debug for Jpeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Jpeg({}x{}, {} bytes)",
            self.width,
            self.height,
            self.data.len()
        )
    }
}

/// Opens the video source, skips `settle_frames` frames, encodes the next one
/// and closes the source. `Ok(None)`: no video is configured. An error when
/// the camera cannot be opened (for instance because a call is using it).
pub fn take(opener: &dyn MediaOpener, settle_frames: usize) -> Result<Option<Jpeg>, MediaError> {
    let Some(mut source) = opener.video()? else {
        return Ok(None);
    };
    let settings = opener.video_settings();
    let mut frame = Frame::new(settings.width, settings.height);
    for _ in 0..=settle_frames {
        source.next_frame(&mut frame)?;
    }
    drop(source);
    encode(&frame).map(Some)
}

/// Encodes one I420 frame (4:2:0 in, 4:2:0 out, levels stretched to full range).
pub fn encode(frame: &Frame) -> Result<Jpeg, MediaError> {
    let error = |message: String| MediaError::Device {
        device: "snapshot".into(),
        message,
    };
    let (width, height) = (frame.width, frame.height);
    if width == 0 || height == 0 || width % 2 == 1 || height % 2 == 1 {
        return Err(error(format!("cannot encode a {width}x{height} picture")));
    }
    let (Ok(w), Ok(h)) = (u16::try_from(width), u16::try_from(height)) else {
        return Err(error(format!("{width}x{height} is too large for JPEG")));
    };
    if frame.data.len() < width * height * 3 / 2 {
        return Err(error(format!(
            "the {width}x{height} frame holds only {} bytes",
            frame.data.len()
        )));
    }
    let mut data = Vec::with_capacity(width * height / 4);
    let mut encoder = Encoder::new(&mut data, QUALITY);
    encoder.set_sampling_factor(SamplingFactor::F_2_2);
    encoder
        .encode_image(I420Image::new(frame, w, h))
        .map_err(|e| error(format!("jpeg encoding: {e}")))?;
    Ok(Jpeg {
        data,
        width,
        height,
    })
}

/// Feeds an I420 frame to the encoder row by row, without an intermediate
/// interleaved copy.
struct I420Image<'a> {
    frame: &'a Frame,
    width: u16,
    height: u16,
    luma: [u8; 256],
    chroma: [u8; 256],
}

impl<'a> I420Image<'a> {
    fn new(frame: &'a Frame, width: u16, height: u16) -> Self {
        // Limited range (Y 16..235, Cb/Cr 16..240) to full range (0..255).
        let stretch = |v: usize, offset: f32, scale: f32, centre: f32| {
            ((v as f32 - offset) * scale + centre)
                .round()
                .clamp(0.0, 255.0) as u8
        };
        let mut luma = [0u8; 256];
        let mut chroma = [0u8; 256];
        for v in 0..256 {
            luma[v] = stretch(v, 16.0, 255.0 / 219.0, 0.0);
            chroma[v] = stretch(v, 128.0, 255.0 / 224.0, 128.0);
        }
        Self {
            frame,
            width,
            height,
            luma,
            chroma,
        }
    }
}

impl ImageBuffer for I420Image<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.width
    }

    fn height(&self) -> u16 {
        self.height
    }

    fn fill_buffers(&self, row: u16, buffers: &mut [Vec<u8>; 4]) {
        let (y, u, v) = self.frame.planes();
        let (w, row) = (self.frame.width, usize::from(row));
        let cw = w / 2;
        let luma = &y[row * w..(row + 1) * w];
        let u = &u[(row / 2) * cw..(row / 2 + 1) * cw];
        let v = &v[(row / 2) * cw..(row / 2 + 1) * cw];
        buffers[0].extend(luma.iter().map(|&p| self.luma[usize::from(p)]));
        for x in 0..w {
            buffers[1].push(self.chroma[usize::from(u[x / 2])]);
            buffers[2].push(self.chroma[usize::from(v[x / 2])]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::EncoderSettings;
    use crate::media::testsrc::TestPattern;
    use crate::media::{AudioSink, AudioSource, VideoSource};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    use zune_jpeg::JpegDecoder;

    const FIXED_MS: u64 = 1_700_000_000_000;

    /// The test pattern without its pacing, frame `n` at a fixed time, so a
    /// test can draw the very frame it expects.
    struct Pattern {
        pattern: TestPattern,
        produced: Arc<AtomicUsize>,
        closed: Arc<AtomicUsize>,
    }

    impl VideoSource for Pattern {
        fn next_frame(&mut self, frame: &mut Frame) -> Result<(), MediaError> {
            let n = self.produced.fetch_add(1, Ordering::SeqCst);
            self.pattern.render(n as u64, FIXED_MS, frame);
            Ok(())
        }
        fn describe(&self) -> String {
            "pattern".into()
        }
    }

    impl Drop for Pattern {
        fn drop(&mut self) {
            self.closed.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[derive(Default)]
    struct FakeCamera {
        none: bool,
        produced: Arc<AtomicUsize>,
        closed: Arc<AtomicUsize>,
    }

    impl MediaOpener for FakeCamera {
        fn video(&self) -> Result<Option<Box<dyn VideoSource>>, MediaError> {
            if self.none {
                return Ok(None);
            }
            Ok(Some(Box::new(Pattern {
                pattern: TestPattern::new(320, 240, 30),
                produced: self.produced.clone(),
                closed: self.closed.clone(),
            })))
        }
        fn microphone(&self) -> Result<Option<Box<dyn AudioSource>>, MediaError> {
            Ok(None)
        }
        fn speaker(&self, _call: u64) -> Result<Option<Box<dyn AudioSink>>, MediaError> {
            Ok(None)
        }
        fn video_settings(&self) -> EncoderSettings {
            EncoderSettings {
                width: 320,
                height: 240,
                fps: 30,
                bitrate_kbps: 600,
                keyframe_interval: Duration::ZERO,
                encoder: crate::spec::media::EncoderSpec::OpenH264,
            }
        }
    }

    /// Decodes to (width, height, full-range luma).
    fn decode_luma(jpeg: &[u8]) -> (usize, usize, Vec<u8>) {
        let mut d = JpegDecoder::new(ZCursor::new(jpeg));
        d.set_options(DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::YCbCr));
        let pixels = d.decode().expect("a valid JPEG");
        let info = d.info().expect("headers decoded");
        let luma = pixels.chunks_exact(3).map(|p| p[0]).collect();
        (usize::from(info.width), usize::from(info.height), luma)
    }

    /// Mean absolute luma difference between a decoded JPEG and frame `n`.
    fn distance_to_frame(luma: &[u8], n: u64) -> f64 {
        let mut frame = Frame::new(320, 240);
        TestPattern::new(320, 240, 30).render(n, FIXED_MS, &mut frame);
        let (y, _, _) = frame.planes();
        let full = |v: u8| ((f64::from(v) - 16.0) * 255.0 / 219.0).clamp(0.0, 255.0);
        let total: f64 = y
            .iter()
            .zip(luma)
            .map(|(&a, &b)| (full(a) - f64::from(b)).abs())
            .sum();
        total / y.len() as f64
    }

    #[test]
    fn the_snapshot_is_the_frame_after_the_settling_ones_as_a_jpeg_of_the_camera_size() {
        let camera = FakeCamera::default();
        let jpeg = take(&camera, 5).unwrap().expect("a camera is configured");
        assert_eq!(
            camera.produced.load(Ordering::SeqCst),
            6,
            "5 skipped, 1 kept"
        );
        assert_eq!(
            camera.closed.load(Ordering::SeqCst),
            1,
            "the camera is closed"
        );
        assert_eq!(&jpeg.data[..2], &[0xFF, 0xD8], "JPEG start of image");
        assert_eq!((jpeg.width, jpeg.height), (320, 240));

        let (w, h, luma) = decode_luma(&jpeg.data);
        assert_eq!((w, h), (320, 240));
        let kept = distance_to_frame(&luma, 5);
        let first = distance_to_frame(&luma, 0);
        assert!(kept < 6.0, "the picture is the test pattern: {kept}");
        assert!(
            first > kept * 2.0,
            "it is frame 5, not a settling frame: {kept} vs {first}"
        );
    }

    #[test]
    fn black_and_white_come_out_black_and_white() {
        let mut frame = Frame::new(16, 16);
        let (y, u, v) = frame.planes_mut();
        y[..128].fill(16);
        y[128..].fill(235);
        u.fill(128);
        v.fill(128);
        let (_, _, luma) = decode_luma(&encode(&frame).unwrap().data);
        assert!(luma[..64].iter().all(|&p| p < 8), "{:?}", &luma[..16]);
        assert!(
            luma[192..].iter().all(|&p| p > 247),
            "{:?}",
            &luma[192..208]
        );
    }

    #[test]
    fn no_video_no_snapshot() {
        let camera = FakeCamera {
            none: true,
            ..FakeCamera::default()
        };
        assert_eq!(take(&camera, 5).unwrap(), None);
    }

    #[test]
    fn odd_or_empty_frames_are_refused() {
        for (w, h) in [(0, 0), (15, 16)] {
            let frame = Frame {
                width: w,
                height: h,
                data: vec![0; 16 * 16 * 3 / 2],
                ..Frame::new(2, 2)
            };
            let e = encode(&frame).unwrap_err().to_string();
            assert!(e.contains("cannot encode"), "{e}");
        }
    }
}
