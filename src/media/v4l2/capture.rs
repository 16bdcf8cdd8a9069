//! A camera streaming I420 frames of the configured size, and what ends the
//! video when capturing fails.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use v4l::buffer::{Flags as BufferFlags, Type as BufferType};
use v4l::device::Handle;
use v4l::io::mmap::Stream as MmapStream;
use v4l::io::traits::{CaptureStream, Stream as _};

use crate::media::convert::CameraConverter;
use crate::media::negotiate::{self, fps_text, FrameDecimator, Interval, PixelFormat, Request};
use crate::media::{Frame, MediaError, VideoSource};

use super::clock::*;
use super::error::*;
use super::ioctl::*;

/// Capture buffers: enough that the driver always has one to fill while we
/// convert, few enough that a frame waiting for us is never old.
pub(super) const BUFFERS: u32 = 4;
/// UVC cameras take up to a second or two from stream-on to the first frame
/// (exposure settles first).
pub(super) const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// Once streaming, silence this long (or four frame intervals if longer)
/// means the camera is gone or stuck.
pub(super) const FRAME_TIMEOUT: Duration = Duration::from_secs(1);
/// How long only unusable frames (damaged, undecodable) may arrive before the
/// camera counts as failed.
pub const BAD_FRAMES_LIMIT: Duration = Duration::from_secs(3);
/// Skipped frames are logged at most this often.
pub(super) const BAD_FRAME_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A camera streaming I420 frames of the configured size.
pub struct V4l2Camera {
    pub(super) path: PathBuf,
    pub(super) card: String,
    /// What was set up, for logs (`MJPEG 1280x720@30, cropped and scaled to 640x480`).
    pub(super) setup: String,
    pub(super) handle: Arc<Handle>,
    /// `None` once closed.
    pub(super) stream: Option<MmapStream<'static>>,
    pub(super) converter: CameraConverter,
    pub(super) decimator: FrameDecimator,
    pub(super) frame_timeout: Duration,
    pub(super) started: bool,
    /// When the last usable frame arrived (or streaming started).
    pub(super) last_good: Option<Instant>,
    pub(super) skipped: u64,
    pub(super) skipped_logged: Option<Instant>,
}

impl V4l2Camera {
    /// Opens `path` for `width`x`height` at `fps`: negotiates, sets the
    /// format and rate, maps the buffers. Streaming starts with the first frame.
    pub fn open(path: &Path, width: u32, height: u32, fps: u32) -> Result<Self, ProbeError> {
        let device = open_device(path)?;
        let caps = query_caps(&device).map_err(|e| ProbeError::os(path, "query it", &e))?;
        check_capture(path, &caps)?;
        let request = Request { width, height, fps };
        let formats = read_formats(&device, Some((width, height)));
        let choice = negotiate::negotiate(&formats, request).map_err(|e| {
            ProbeError::new(
                path,
                ProbeErrorKind::NoUsableFormat,
                e.to_string(),
                format!("use a camera offering YUYV or MJPEG (most USB webcams do); {FIX_LIST} with what each offers"),
            )
        })?;
        let set =
            set_format(&device, &choice).map_err(|e| ProbeError::os(path, "set the format", &e))?;
        let format = PixelFormat::from_fourcc(set.fourcc)
            .filter(|_| {
                set.width > 0 && set.height > 0 && set.width % 2 == 0 && set.height % 2 == 0
            })
            .ok_or_else(|| {
                ProbeError::new(
                    path,
                    ProbeErrorKind::NoUsableFormat,
                    format!(
                        "asked for {choice}, the driver set {} {}x{} instead",
                        set.fourcc, set.width, set.height
                    ),
                    FIX_LIST,
                )
            })?;
        let interval = set_rate(&device, choice.interval);
        let stream: MmapStream<'static> =
            MmapStream::with_buffers(&device, BufferType::VideoCapture, BUFFERS)
                .map_err(|e| ProbeError::os(path, "map capture buffers", &e))?;
        let (w, h) = (set.width as usize, set.height as usize);
        let target = (width as usize, height as usize);
        let converter = CameraConverter::new(format, w, h, set.stride as usize, target)
            .map_err(|e| ProbeError::new(path, ProbeErrorKind::Other, e.to_string(), FIX_LIST))?;
        let setup = describe_setup(format, (w, h), interval, target, fps, choice.reaches_rate);
        let frame_timeout = interval
            .and_then(Interval::fps)
            .map(|f| Duration::from_secs_f64(4.0 / f.max(0.1)))
            .unwrap_or(FRAME_TIMEOUT)
            .max(FRAME_TIMEOUT);
        tracing::debug!(
            camera = %path.display(),
            card = %caps.card,
            offered = %negotiate::summary(&formats),
            "camera opened: {setup}"
        );
        if choice.reaches_rate == Some(false) {
            tracing::warn!(
                camera = %path.display(),
                "the camera reaches only {} at {w}x{h}; a smaller video.width/height gives a smoother picture",
                interval.map(|i| format!("{i} fps")).unwrap_or_else(|| "a lower rate".into()),
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            card: caps.card,
            setup,
            handle: device.handle(),
            stream: Some(stream),
            converter,
            decimator: FrameDecimator::new(fps),
            frame_timeout,
            started: false,
            last_good: None,
            skipped: 0,
            skipped_logged: None,
        })
    }

    /// Unusable frames skipped so far (damaged or undecodable).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    pub(super) fn device_error(&self, message: String) -> MediaError {
        MediaError::Device {
            device: format!("camera {}", self.path.display()),
            message,
        }
    }

    /// Counts an unusable frame; an error once they have lasted too long.
    pub(super) fn skip(&mut self, why: &str) -> Result<(), MediaError> {
        self.skipped += 1;
        let now = Instant::now();
        let since = *self.last_good.get_or_insert(now);
        if now.duration_since(since) > BAD_FRAMES_LIMIT {
            return Err(self.device_error(format!(
                "sent no usable frame for {} s (last problem: {why})",
                BAD_FRAMES_LIMIT.as_secs()
            )));
        }
        if self
            .skipped_logged
            .is_none_or(|t| now.duration_since(t) >= BAD_FRAME_LOG_INTERVAL)
        {
            self.skipped_logged = Some(now);
            tracing::warn!(
                camera = %self.path.display(),
                skipped = self.skipped,
                "skipping a frame: {why}"
            );
        }
        Ok(())
    }
}

/// What one dequeued buffer turned into.
pub(super) enum Outcome {
    Frame,
    /// Not wanted: a newer frame is waiting, or the rate is thinned.
    Dropped,
    Unusable(String),
}

impl VideoSource for V4l2Camera {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<(), MediaError> {
        loop {
            let timeout = if self.started {
                self.frame_timeout
            } else {
                FIRST_FRAME_TIMEOUT
            };
            let Some(stream) = self.stream.as_mut() else {
                return Err(self.device_error("the camera is closed".into()));
            };
            stream.set_timeout(timeout);
            let outcome = match CaptureStream::next(stream) {
                Err(e) => return Err(capture_error(&self.path, &e, timeout, self.started)),
                Ok((buffer, meta)) => {
                    let received = Instant::now();
                    let used = (meta.bytesused as usize).min(buffer.len());
                    if meta.flags.contains(BufferFlags::ERROR) {
                        Outcome::Unusable("the driver marked it damaged".into())
                    } else if used == 0 {
                        Outcome::Unusable("it is empty".into())
                    } else if self.handle.poll(libc::POLLIN, 0).unwrap_or(0) > 0 {
                        // A newer frame is already waiting: take that one.
                        Outcome::Dropped
                    } else {
                        let (captured, unix_ms) = capture_time(meta, received);
                        if !self.decimator.accept(captured) {
                            Outcome::Dropped
                        } else {
                            match self.converter.convert(&buffer[..used], frame) {
                                Ok(()) => {
                                    frame.captured = captured;
                                    frame.captured_unix_ms = unix_ms;
                                    Outcome::Frame
                                }
                                Err(e) => Outcome::Unusable(e.to_string()),
                            }
                        }
                    }
                }
            };
            if !self.started {
                self.started = true;
                self.last_good = Some(Instant::now());
                tracing::info!(camera = %self.path.display(), "camera streaming: {}", self.setup);
            }
            match outcome {
                Outcome::Frame => {
                    self.last_good = Some(Instant::now());
                    return Ok(());
                }
                Outcome::Dropped => {}
                Outcome::Unusable(why) => self.skip(&why)?,
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "v4l2:{} ({}, {})",
            self.path.display(),
            self.card,
            self.setup
        )
    }
}

impl Drop for V4l2Camera {
    fn drop(&mut self) {
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        if let Err(e) = stream.stop() {
            if !is_gone(&e) {
                tracing::debug!(camera = %self.path.display(), "stopping the stream: {e}");
            }
        }
        // The v4l crate panics in Drop when unmapping fails with anything but
        // ENODEV; a camera misbehaving on its way out must not end the process.
        if std::thread::panicking() {
            drop(stream);
        } else if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(stream)))
            .is_err()
        {
            tracing::warn!(camera = %self.path.display(), "the camera did not release its buffers cleanly");
        }
        tracing::debug!(camera = %self.path.display(), skipped = self.skipped, "camera closed");
    }
}

/// `MJPEG 1280x720@30, cropped and scaled to 640x480, thinned to 15 fps`.
pub(super) fn describe_setup(
    format: PixelFormat,
    (w, h): (usize, usize),
    interval: Option<Interval>,
    target: (usize, usize),
    fps: u32,
    reaches: Option<bool>,
) -> String {
    let mut s = format!("{format} {w}x{h}");
    if let Some(i) = interval {
        s.push_str(&format!("@{i}"));
    }
    if (w, h) != target {
        let how = if w * target.1 == h * target.0 {
            "scaled"
        } else {
            "cropped and scaled"
        };
        s.push_str(&format!(", {how} to {}x{}", target.0, target.1));
    }
    let camera_fps = interval.and_then(Interval::fps);
    if camera_fps.is_some_and(|f| f > f64::from(fps) * 1.01) {
        s.push_str(&format!(", thinned to {fps} fps"));
    }
    if reaches == Some(false) {
        s.push_str(&format!(
            " (the camera does not reach {fps} fps at this size)"
        ));
    }
    s
}

pub(super) fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENODEV | libc::ENXIO | libc::EIO)
    )
}

/// The error that ends the video when capturing fails.
pub(super) fn capture_error(
    path: &Path,
    e: &io::Error,
    waited: Duration,
    started: bool,
) -> MediaError {
    let message = if e.kind() == io::ErrorKind::TimedOut {
        if started {
            format!(
                "stopped delivering frames (unplugged?): none for {} s",
                fps_text(waited.as_secs_f64())
            )
        } else {
            format!(
                "delivered no frame within {} s of starting (unplugged, or another program holds it?)",
                fps_text(waited.as_secs_f64())
            )
        }
    } else if is_gone(e) {
        format!("stopped delivering frames (unplugged?): {e}")
    } else if e.raw_os_error() == Some(libc::EBUSY) {
        format!("in use by another program: {e}")
    } else {
        format!("capture failed: {e}")
    };
    MediaError::Device {
        device: format!("camera {}", path.display()),
        message,
    }
}
