//! The hardware H.264 encoder of the Raspberry Pi 4 and earlier
//! (`video.encoder = "v4l2m2m"`, or `auto`): the VideoCore's encoder, which
//! the kernel's `bcm2835-codec` driver offers as a V4L2 memory-to-memory
//! device at `/dev/video11`. It takes the CPU out of encoding, which on a
//! Pi 3 or Zero 2 is most of a call's load at 720p. The Pi 5 has no such
//! encoder; `auto` then uses OpenH264.
//!
//! The ioctl sequence is the kernel's "Memory-to-memory Stateful Video
//! Encoder Interface": the coded format on the capture queue, the picture
//! format on the output queue, the frame rate, the controls (bitrate,
//! profile, level, IDR period, SPS/PPS with every IDR), `MMAP` buffers on
//! both queues, streaming; then per picture a buffer out and an access unit
//! back. Only the multi-planar API is spoken (what `bcm2835-codec` has).
//!
//! The ioctls go through [`M2mDevice`]: [`device::RealDevice`] on a device
//! node, `fake::FakeM2m` (feature `testkit`) in the tests, which answers
//! like `bcm2835-codec` and records every call.

pub mod device;
#[cfg(any(test, feature = "testkit"))]
pub mod fake;
mod sys;

use bytes::Bytes;
use std::path::Path;
use std::time::{Duration, Instant};

pub use device::{BufferInfo, Caps, Done, M2mDevice, PixFormat, Queue, Ready};
pub use sys::{
    BITRATE_MODE_CBR, BITRATE_MODE_VBR, H264_LEVEL_3_1, H264_LEVEL_4_0, H264_LEVEL_4_2,
    H264_PROFILE_BASELINE, H264_PROFILE_CONSTRAINED_BASELINE,
};
pub use sys::{
    BUF_FLAG_ERROR, BUF_FLAG_KEYFRAME, CAP_STREAMING, CAP_VIDEO_M2M, CAP_VIDEO_M2M_MPLANE,
    CID_MPEG_VIDEO_BITRATE, CID_MPEG_VIDEO_BITRATE_MODE, CID_MPEG_VIDEO_FORCE_KEY_FRAME,
    CID_MPEG_VIDEO_GOP_SIZE, CID_MPEG_VIDEO_H264_I_PERIOD, CID_MPEG_VIDEO_H264_LEVEL,
    CID_MPEG_VIDEO_H264_PROFILE, CID_MPEG_VIDEO_PREPEND_SPSPPS_TO_IDR,
    CID_MPEG_VIDEO_REPEAT_SEQ_HEADER, PIX_FMT_H264, PIX_FMT_YUV420,
};

use super::h264::{nal_units, Encoded};
use super::{EncoderSettings, Frame, MediaError};
use sys::{control_name, fourcc_name};

/// How long an encoded frame may take before the encoder is given up.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);
/// Picture buffers: one being encoded, one being filled.
pub const OUTPUT_BUFFERS: u32 = 2;
/// Encoded-stream buffers.
pub const CAPTURE_BUFFERS: u32 = 4;
/// The size asked for each encoded-stream buffer: an IDR at 1080p and
/// 20 Mbit/s fits.
pub const CAPTURE_SIZE: u32 = 512 * 1024;

/// The H.264 level for this size and rate: 3.1 up to 720p30 (what the SDP
/// answer's `42e01f` promises), 4.0 up to 1080p30, 4.2 above.
pub fn h264_level(width: usize, height: usize, fps: u32) -> i32 {
    let macroblocks = width.div_ceil(16) * height.div_ceil(16);
    let per_second = macroblocks * fps as usize;
    if macroblocks <= 3600 && per_second <= 108_000 {
        H264_LEVEL_3_1
    } else if macroblocks <= 8192 && per_second <= 245_760 {
        H264_LEVEL_4_0
    } else {
        H264_LEVEL_4_2
    }
}

/// Where the planes of an I420 picture are in an output buffer.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Bytes per row of the Y plane (the chroma planes have half).
    stride: usize,
    /// Rows of the Y plane in the buffer.
    rows: usize,
    /// Bytes of one picture.
    size: usize,
}

/// The stateful V4L2 encoder, open and streaming.
pub struct V4l2m2mEncoder {
    dev: Box<dyn M2mDevice>,
    /// The device node, for messages.
    device: String,
    driver: String,
    width: usize,
    height: usize,
    fps: u32,
    layout: Layout,
    /// Output buffers: `true` when ours to fill.
    output_free: Vec<bool>,
    capture_count: u32,
    /// Buffers allocated on (output, capture), for the teardown.
    allocated: (bool, bool),
    streaming: bool,
    force: bool,
    frames: u64,
    /// The last SPS and PPS seen (with start codes), put in front of an IDR
    /// that comes without them.
    parameter_sets: Vec<u8>,
}

fn failed(device: &str, message: impl Into<String>) -> MediaError {
    MediaError::Device {
        device: device.to_string(),
        message: message.into(),
    }
}

impl V4l2m2mEncoder {
    /// Opens the device node and sets the encoder up.
    #[cfg(target_pointer_width = "64")]
    pub fn open(path: &Path, s: &EncoderSettings) -> Result<Self, MediaError> {
        let dev = device::RealDevice::open(path).map_err(|e| {
            failed(
                &path.display().to_string(),
                format!("cannot open the hardware encoder: {e}"),
            )
        })?;
        Self::with_device(Box::new(dev), &path.display().to_string(), s)
    }

    /// 32-bit builds do not lay out the kernel's structs this module writes.
    #[cfg(not(target_pointer_width = "64"))]
    pub fn open(path: &Path, _: &EncoderSettings) -> Result<Self, MediaError> {
        Err(failed(
            &path.display().to_string(),
            "the hardware encoder is only supported in 64-bit builds",
        ))
    }

    /// Sets the encoder up on `dev` (named `device` in messages). On an
    /// error, what was set up is undone and the device closed.
    pub fn with_device(
        dev: Box<dyn M2mDevice>,
        device: &str,
        s: &EncoderSettings,
    ) -> Result<Self, MediaError> {
        let mut encoder = V4l2m2mEncoder {
            dev,
            device: device.to_string(),
            driver: String::new(),
            width: s.width,
            height: s.height,
            fps: s.fps.max(1),
            layout: Layout {
                stride: s.width,
                rows: s.height,
                size: s.width * s.height * 3 / 2,
            },
            output_free: Vec::new(),
            capture_count: 0,
            allocated: (false, false),
            streaming: false,
            force: false,
            frames: 0,
            parameter_sets: Vec::new(),
        };
        encoder.set_up(s)?;
        Ok(encoder)
    }

    /// The driver's name and card, as `QUERYCAP` gave them.
    pub fn driver(&self) -> &str {
        &self.driver
    }

    fn fail(&self, message: impl Into<String>) -> MediaError {
        failed(&self.device, message)
    }

    fn set_up(&mut self, s: &EncoderSettings) -> Result<(), MediaError> {
        let caps = self
            .dev
            .querycap()
            .map_err(|e| self.fail(format!("not a V4L2 device (VIDIOC_QUERYCAP: {e})")))?;
        self.driver = format!("{} ({})", caps.driver, caps.card);
        check_caps(&caps).map_err(|m| self.fail(m))?;

        let coded = self
            .dev
            .s_fmt(
                Queue::Capture,
                PixFormat {
                    width: s.width as u32,
                    height: s.height as u32,
                    fourcc: PIX_FMT_H264,
                    bytesperline: 0,
                    sizeimage: CAPTURE_SIZE,
                },
            )
            .map_err(|e| self.fail(format!("refused H.264 on its capture queue: {e}")))?;
        if coded.fourcc != PIX_FMT_H264 {
            return Err(self.fail(format!(
                "{}: not an H.264 encoder (it answered H.264 with {})",
                self.driver,
                fourcc_name(coded.fourcc)
            )));
        }

        let (w, h) = (s.width as u32, s.height as u32);
        let raw = self
            .dev
            .s_fmt(
                Queue::Output,
                PixFormat {
                    width: w,
                    height: h,
                    fourcc: PIX_FMT_YUV420,
                    bytesperline: w,
                    sizeimage: w * h * 3 / 2,
                },
            )
            .map_err(|e| self.fail(format!("refused {w}x{h} I420 pictures: {e}")))?;
        if raw.fourcc != PIX_FMT_YUV420 {
            return Err(self.fail(format!(
                "does not take I420 pictures (it answered with {})",
                fourcc_name(raw.fourcc)
            )));
        }
        if (raw.width, raw.height) != (w, h) {
            return Err(self.fail(format!(
                "wants {}x{} pictures for {w}x{h}: choose a size it keeps \
                 (multiples of 16, such as 640x480 or 1280x720)",
                raw.width, raw.height
            )));
        }
        let stride = raw.bytesperline as usize;
        let layout = Layout {
            stride,
            rows: s.height,
            size: stride * s.height * 3 / 2,
        };
        if stride < s.width || stride % 2 == 1 || (raw.sizeimage as usize) < layout.size {
            return Err(self.fail(format!(
                "an unusable picture layout: {} bytes per row and {} bytes for {w}x{h}",
                raw.bytesperline, raw.sizeimage
            )));
        }
        self.layout = layout;

        if let Err(e) = self.dev.s_parm(Queue::Output, self.fps) {
            tracing::debug!(device = %self.device, "frame rate {} not set: {e}", self.fps);
        }

        self.set_controls(s)?;

        let outputs = self
            .dev
            .reqbufs(Queue::Output, OUTPUT_BUFFERS)
            .map_err(|e| self.fail(format!("no picture buffers: {e}")))?;
        self.allocated.0 = true;
        let captures = self
            .dev
            .reqbufs(Queue::Capture, CAPTURE_BUFFERS)
            .map_err(|e| self.fail(format!("no stream buffers: {e}")))?;
        self.allocated.1 = true;
        if outputs == 0 || captures == 0 {
            return Err(self.fail(format!(
                "gave {outputs} picture and {captures} stream buffers"
            )));
        }
        for (queue, count) in [(Queue::Output, outputs), (Queue::Capture, captures)] {
            for index in 0..count {
                let info = self
                    .dev
                    .querybuf(queue, index)
                    .map_err(|e| self.fail(format!("VIDIOC_QUERYBUF: {e}")))?;
                if queue == Queue::Output && (info.length as usize) < self.layout.size {
                    return Err(self.fail(format!(
                        "a picture buffer of {} bytes for a {}-byte picture",
                        info.length, self.layout.size
                    )));
                }
                self.dev
                    .mmap(queue, index, info)
                    .map_err(|e| self.fail(format!("cannot map a buffer: {e}")))?;
                if queue == Queue::Output {
                    self.output_free.push(true);
                } else {
                    self.capture_count += 1;
                }
            }
        }
        for index in 0..captures {
            self.dev
                .qbuf(Queue::Capture, index, 0, Duration::ZERO)
                .map_err(|e| self.fail(format!("VIDIOC_QBUF: {e}")))?;
        }
        self.streaming = true;
        for queue in [Queue::Output, Queue::Capture] {
            self.dev
                .streamon(queue)
                .map_err(|e| self.fail(format!("cannot start streaming: {e}")))?;
        }
        Ok(())
    }

    /// Bitrate is required; Constrained Baseline, else Baseline, too (the
    /// SDP answer promises it). The rest are wishes: a driver that refuses
    /// one is logged at debug.
    fn set_controls(&mut self, s: &EncoderSettings) -> Result<(), MediaError> {
        let bps = s.bitrate_kbps.saturating_mul(1000).min(i32::MAX as u32) as i32;
        self.dev
            .s_ctrl(CID_MPEG_VIDEO_BITRATE, bps)
            .map_err(|e| self.fail(format!("refused the bitrate {bps} bit/s: {e}")))?;
        self.first_taken(
            CID_MPEG_VIDEO_BITRATE_MODE,
            &[BITRATE_MODE_CBR, BITRATE_MODE_VBR],
        );
        if !self.first_taken(
            CID_MPEG_VIDEO_H264_PROFILE,
            &[H264_PROFILE_CONSTRAINED_BASELINE, H264_PROFILE_BASELINE],
        ) {
            return Err(self.fail("refused the Constrained Baseline and Baseline profiles"));
        }
        let level = h264_level(s.width, s.height, s.fps);
        self.first_taken(CID_MPEG_VIDEO_H264_LEVEL, &[level]);
        let period = (s.keyframe_interval.as_secs_f64() * s.fps as f64).round();
        if period >= 1.0 {
            let period = period.min(i32::MAX as f64) as i32;
            self.first_taken(CID_MPEG_VIDEO_H264_I_PERIOD, &[period]);
            self.first_taken(CID_MPEG_VIDEO_GOP_SIZE, &[period]);
        }
        self.first_taken(CID_MPEG_VIDEO_REPEAT_SEQ_HEADER, &[1]);
        self.first_taken(CID_MPEG_VIDEO_PREPEND_SPSPPS_TO_IDR, &[1]);
        Ok(())
    }

    /// Sets the first of `values` the driver takes; `false` if none.
    fn first_taken(&mut self, id: u32, values: &[i32]) -> bool {
        for &value in values {
            match self.dev.s_ctrl(id, value) {
                Ok(()) => return true,
                Err(e) => tracing::debug!(
                    device = %self.device,
                    "{} = {value} refused: {e}",
                    control_name(id)
                ),
            }
        }
        false
    }

    /// The next frame will be an IDR (with SPS and PPS).
    pub fn force_keyframe(&mut self) {
        self.force = true;
    }

    /// Encodes one picture; `None` if the encoder skipped it.
    pub fn encode(&mut self, frame: &Frame) -> Result<Option<Encoded>, MediaError> {
        if frame.width != self.width || frame.height != self.height {
            return Err(self.fail(format!(
                "frame is {}x{}, the encoder was set up for {}x{}",
                frame.width, frame.height, self.width, self.height
            )));
        }
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let index = self.free_output(deadline)?;
        let layout = self.layout;
        let (width, height) = (self.width, self.height);
        let buffer = self
            .dev
            .buffer(Queue::Output, index)
            .ok_or_else(|| failed(&self.device, "a picture buffer is not mapped"))?;
        copy_i420(frame, width, height, layout, buffer);
        if self.force {
            self.dev
                .s_ctrl(CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1)
                .map_err(|e| self.fail(format!("refused to force a key frame: {e}")))?;
            self.force = false;
        }
        let timestamp = Duration::from_secs(self.frames) / self.fps;
        self.dev
            .qbuf(Queue::Output, index, layout.size as u32, timestamp)
            .map_err(|e| self.fail(format!("refused a picture: {e}")))?;
        self.output_free[index as usize] = false;
        self.frames += 1;
        let encoded = self.take_access_unit(deadline);
        self.reclaim_outputs()?;
        encoded
    }

    /// An output buffer to fill, waiting for the driver to give one back.
    fn free_output(&mut self, deadline: Instant) -> Result<u32, MediaError> {
        loop {
            if let Some(i) = self.output_free.iter().position(|free| *free) {
                return Ok(i as u32);
            }
            if self.reclaim_outputs()? {
                continue;
            }
            self.wait(deadline)?;
        }
    }

    /// Dequeues the pictures the driver is done with; `true` if any.
    fn reclaim_outputs(&mut self) -> Result<bool, MediaError> {
        let mut any = false;
        while let Some(done) = self
            .dev
            .dqbuf(Queue::Output)
            .map_err(|e| self.fail(format!("VIDIOC_DQBUF: {e}")))?
        {
            if let Some(free) = self.output_free.get_mut(done.index as usize) {
                *free = true;
                any = true;
            }
        }
        Ok(any)
    }

    fn wait(&mut self, deadline: Instant) -> Result<Ready, MediaError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let ready = self
            .dev
            .poll(left)
            .map_err(|e| self.fail(format!("poll: {e}")))?;
        if ready.error && !ready.capture && !ready.output {
            return Err(self.fail("the hardware encoder reports an error"));
        }
        if !ready.capture && !ready.output {
            return Err(self.fail(format!(
                "the hardware encoder did not answer in {} s",
                ANSWER_TIMEOUT.as_secs_f32()
            )));
        }
        Ok(ready)
    }

    /// The access unit of the picture just queued. A buffer with only SPS
    /// and PPS (the first one, from some firmware) is kept for the IDR
    /// that follows.
    fn take_access_unit(&mut self, deadline: Instant) -> Result<Option<Encoded>, MediaError> {
        loop {
            let done = self
                .dev
                .dqbuf(Queue::Capture)
                .map_err(|e| self.fail(format!("VIDIOC_DQBUF: {e}")))?;
            let Some(done) = done else {
                if Instant::now() >= deadline {
                    return Err(self.fail(format!(
                        "the hardware encoder did not answer in {} s",
                        ANSWER_TIMEOUT.as_secs_f32()
                    )));
                }
                if self.wait(deadline)?.output && !self.reclaim_outputs()? {
                    // Writable with nothing to take back: some drivers say
                    // so while the output queue is empty. Do not spin.
                    std::thread::sleep(Duration::from_millis(1));
                }
                continue;
            };
            let data = self.read_capture(done);
            self.dev
                .qbuf(Queue::Capture, done.index, 0, Duration::ZERO)
                .map_err(|e| self.fail(format!("VIDIOC_QBUF: {e}")))?;
            let data = data?;
            if done.flags & BUF_FLAG_ERROR != 0 {
                return Err(self.fail(format!(
                    "the hardware encoder marked frame {} as broken",
                    self.frames
                )));
            }
            if data.is_empty() {
                return Ok(None);
            }
            let types: Vec<u8> = nal_units(&data).map(|n| n[0] & 0x1F).collect();
            if types.contains(&7) {
                self.parameter_sets = nal_units(&data)
                    .filter(|n| matches!(n[0] & 0x1F, 7 | 8))
                    .flat_map(|n| [&[0, 0, 0, 1][..], n].concat())
                    .collect();
            }
            let idr = types.contains(&5);
            if !idr && !types.contains(&1) {
                // Parameter sets (or SEI) alone: the slice comes next.
                continue;
            }
            if (done.flags & BUF_FLAG_KEYFRAME != 0) != idr {
                tracing::debug!(
                    device = %self.device,
                    "the key frame flag ({}) disagrees with the slices {types:?}",
                    done.flags & BUF_FLAG_KEYFRAME != 0
                );
            }
            let data = if idr && !types.contains(&7) && !self.parameter_sets.is_empty() {
                [&self.parameter_sets[..], &data].concat()
            } else {
                data
            };
            return Ok(Some(Encoded {
                data: Bytes::from(data),
                keyframe: idr,
            }));
        }
    }

    fn read_capture(&mut self, done: Done) -> Result<Vec<u8>, MediaError> {
        let device = self.device.clone();
        let buffer = self
            .dev
            .buffer(Queue::Capture, done.index)
            .ok_or_else(|| failed(&device, "a stream buffer is not mapped"))?;
        let (start, end) = (done.data_offset as usize, done.bytesused as usize);
        if end > buffer.len() || start > end {
            return Err(failed(
                &device,
                format!(
                    "a stream buffer of {} bytes says {start}..{end}",
                    buffer.len()
                ),
            ));
        }
        Ok(buffer[start..end].to_vec())
    }
}

/// What `QUERYCAP` must say for the encoder to be usable.
fn check_caps(caps: &Caps) -> Result<(), String> {
    if caps.caps & CAP_VIDEO_M2M_MPLANE == 0 {
        return Err(if caps.caps & CAP_VIDEO_M2M != 0 {
            format!(
                "{} ({}) is a single-planar memory-to-memory device; only the multi-planar \
                 API (the Raspberry Pi's encoder) is supported",
                caps.driver, caps.card
            )
        } else {
            format!(
                "{} ({}) is not a memory-to-memory device, so not a hardware encoder",
                caps.driver, caps.card
            )
        });
    }
    if caps.caps & CAP_STREAMING == 0 {
        return Err(format!(
            "{} ({}) has no streaming I/O",
            caps.driver, caps.card
        ));
    }
    Ok(())
}

/// Copies an I420 picture into a buffer whose rows are `layout.stride`
/// bytes (the chroma rows half that).
fn copy_i420(frame: &Frame, width: usize, height: usize, layout: Layout, buffer: &mut [u8]) {
    let (y, u, v) = frame.planes();
    let chroma_stride = layout.stride / 2;
    let u_at = layout.stride * layout.rows;
    let v_at = u_at + chroma_stride * (layout.rows / 2);
    let planes = [
        (y, 0, layout.stride, width, height),
        (u, u_at, chroma_stride, width / 2, height / 2),
        (v, v_at, chroma_stride, width / 2, height / 2),
    ];
    for (plane, at, stride, w, h) in planes {
        if stride == w {
            buffer[at..at + w * h].copy_from_slice(&plane[..w * h]);
            continue;
        }
        for row in 0..h {
            let to = at + row * stride;
            buffer[to..to + w].copy_from_slice(&plane[row * w..(row + 1) * w]);
        }
    }
}

impl Drop for V4l2m2mEncoder {
    /// Streaming off, buffers unmapped and freed; the device closes after.
    fn drop(&mut self) {
        if self.streaming {
            for queue in [Queue::Output, Queue::Capture] {
                if let Err(e) = self.dev.streamoff(queue) {
                    tracing::debug!(device = %self.device, "VIDIOC_STREAMOFF: {e}");
                }
            }
        }
        for index in 0..self.output_free.len() as u32 {
            self.dev.munmap(Queue::Output, index);
        }
        for index in 0..self.capture_count {
            self.dev.munmap(Queue::Capture, index);
        }
        for (queue, allocated) in [
            (Queue::Output, self.allocated.0),
            (Queue::Capture, self.allocated.1),
        ] {
            if allocated {
                if let Err(e) = self.dev.reqbufs(queue, 0) {
                    tracing::debug!(device = %self.device, "VIDIOC_REQBUFS 0: {e}");
                }
            }
        }
    }
}

/// A hardware H.264 encoder found by [`probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub driver: String,
    pub card: String,
}

/// Whether the node at `path` is an H.264 memory-to-memory encoder that
/// takes I420: `QUERYCAP`, then the formats of both queues. Opens and
/// closes it; sets nothing.
#[cfg(target_pointer_width = "64")]
pub fn probe(path: &Path) -> Result<Found, String> {
    let mut dev = device::RealDevice::open(path).map_err(|e| format!("cannot open: {e}"))?;
    probe_device(&mut dev)
}

#[cfg(not(target_pointer_width = "64"))]
pub fn probe(_: &Path) -> Result<Found, String> {
    Err("the hardware encoder is only supported in 64-bit builds".into())
}

/// [`probe`] on an open device.
pub fn probe_device(dev: &mut dyn M2mDevice) -> Result<Found, String> {
    let caps = dev
        .querycap()
        .map_err(|e| format!("not a V4L2 device (VIDIOC_QUERYCAP: {e})"))?;
    check_caps(&caps)?;
    let formats = |dev: &mut dyn M2mDevice, queue| -> Result<Vec<u32>, String> {
        let mut all = Vec::new();
        for index in 0..64 {
            match dev.enum_fmt(queue, index) {
                Ok(Some(f)) => all.push(f),
                Ok(None) => break,
                Err(e) => return Err(format!("VIDIOC_ENUM_FMT: {e}")),
            }
        }
        Ok(all)
    };
    let coded = formats(dev, Queue::Capture)?;
    if !coded.contains(&PIX_FMT_H264) {
        return Err(format!(
            "{} ({}) does not encode H.264",
            caps.driver, caps.card
        ));
    }
    if !formats(dev, Queue::Output)?.contains(&PIX_FMT_YUV420) {
        return Err(format!(
            "{} ({}) does not take I420 pictures",
            caps.driver, caps.card
        ));
    }
    Ok(Found {
        driver: caps.driver,
        card: caps.card,
    })
}

/// The H.264 encoders among `/dev/video*`, by path.
pub fn list_encoders() -> Vec<(std::path::PathBuf, Found)> {
    let Ok(entries) = std::fs::read_dir("/dev") else {
        return Vec::new();
    };
    let mut nodes: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("video"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    nodes.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n["video".len()..].parse::<u32>().ok())
    });
    nodes
        .into_iter()
        .filter_map(|p| probe(&p).ok().map(|found| (p, found)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_follows_size_and_rate() {
        assert_eq!(h264_level(640, 480, 30), H264_LEVEL_3_1);
        assert_eq!(h264_level(1280, 720, 30), H264_LEVEL_3_1);
        assert_eq!(h264_level(1280, 720, 60), H264_LEVEL_4_0);
        assert_eq!(h264_level(1920, 1080, 30), H264_LEVEL_4_0);
        assert_eq!(h264_level(1920, 1080, 60), H264_LEVEL_4_2);
    }

    #[test]
    fn caps_must_be_multi_planar_m2m_with_streaming() {
        let caps = |caps| Caps {
            driver: "d".into(),
            card: "c".into(),
            caps,
        };
        assert!(check_caps(&caps(CAP_VIDEO_M2M_MPLANE | CAP_STREAMING)).is_ok());
        let e = check_caps(&caps(0x1 | CAP_STREAMING)).unwrap_err();
        assert!(e.contains("not a memory-to-memory device"), "{e}");
        let e = check_caps(&caps(CAP_VIDEO_M2M | CAP_STREAMING)).unwrap_err();
        assert!(e.contains("single-planar"), "{e}");
        let e = check_caps(&caps(CAP_VIDEO_M2M_MPLANE)).unwrap_err();
        assert!(e.contains("streaming"), "{e}");
    }

    #[test]
    fn i420_rows_land_at_the_drivers_stride() {
        let (w, h) = (4, 2);
        let mut frame = Frame::new(w, h);
        for (i, b) in frame.data.iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        let layout = Layout {
            stride: 8,
            rows: 2,
            size: 8 * 2 * 3 / 2,
        };
        let mut buffer = vec![0u8; layout.size];
        copy_i420(&frame, w, h, layout, &mut buffer);
        assert_eq!(
            buffer,
            [
                1, 2, 3, 4, 0, 0, 0, 0, // Y row 0
                5, 6, 7, 8, 0, 0, 0, 0, // Y row 1
                9, 10, 0, 0, // U
                11, 12, 0, 0, // V
            ]
        );
    }
}
