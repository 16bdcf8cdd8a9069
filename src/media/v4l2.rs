//! `v4l2:/dev/videoN`: a camera through Video4Linux2. The only module that
//! uses the `v4l` crate.
//!
//! A call opens the camera ([`V4l2Camera::open`]) and drops it at the end, so
//! the camera (and its LED) is off between calls. Opening reads the camera's
//! formats, sizes and rates, lets [`negotiate`](super::negotiate) choose,
//! sets that, and maps a few capture buffers; the first
//! [`next_frame`](VideoSource::next_frame) starts streaming. Each frame is
//! converted to I420 ([`convert`](super::convert)) at exactly the configured
//! size (cropped and scaled when the camera has no such size), stamped with
//! the time the driver says it was captured, and thinned to the configured
//! rate when the camera runs faster.
//!
//! Failure is part of the design, because USB cameras get unplugged and send
//! the odd broken frame:
//!
//! - a damaged or undecodable frame is skipped; only when nothing usable
//!   arrives for [`BAD_FRAMES_LIMIT`] does the camera count as failed;
//! - waiting for a frame is bounded (poll with a timeout), so an unplugged or
//!   stalled camera ends the video within about a second with an error that
//!   says so; the call keeps its audio (`media::video` reports it);
//! - opening fails with a reason and a fix ([`ProbeError`]), which the call
//!   logs before going on audio only, and `doorbell check` prints ([`probe`]);
//! - the `v4l` crate panics in its `Drop` on unusual driver errors; closing
//!   catches that, so a misbehaving camera cannot take the doorbell down.
//!
//! [`list_cameras`] is what `doorbell devices` shows.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use v4l::buffer::{Flags as BufferFlags, Metadata, Type as BufferType};
use v4l::device::{Device, Handle};
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::mmap::Stream as MmapStream;
use v4l::io::traits::{CaptureStream, Stream as _};
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::{v4l2, v4l_sys, Fraction};

use super::convert::{self, ConvertError, MjpegDecoder, Scaler};
use super::negotiate::{
    self, fps_text, Choice, FormatDesc, Fourcc, FrameDecimator, FrameSize, Interval, PixelFormat,
    Rates, Request, SizeRange,
};
use super::{Frame, MediaError, VideoSource};

/// Capture buffers: enough that the driver always has one to fill while we
/// convert, few enough that a frame waiting for us is never old.
const BUFFERS: u32 = 4;
/// UVC cameras take up to a second or two from stream-on to the first frame
/// (exposure settles first).
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// Once streaming, silence this long (or four frame intervals if longer)
/// means the camera is gone or stuck.
const FRAME_TIMEOUT: Duration = Duration::from_secs(1);
/// How long only unusable frames (damaged, undecodable) may arrive before the
/// camera counts as failed.
pub const BAD_FRAMES_LIMIT: Duration = Duration::from_secs(3);
/// Skipped frames are logged at most this often.
const BAD_FRAME_LOG_INTERVAL: Duration = Duration::from_secs(10);

const FIX_LIST: &str = "`doorbell devices` lists cameras";

/// Why a camera cannot be used, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}; {fix}", path.display())]
pub struct ProbeError {
    pub path: PathBuf,
    pub kind: ProbeErrorKind,
    /// What is wrong, without the path (`no such device`).
    pub reason: String,
    /// What to do about it.
    pub fix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeErrorKind {
    Missing,
    PermissionDenied,
    Busy,
    /// A V4L2 node that does not capture pictures (UVC metadata, codecs).
    NotCapture,
    NotV4l2,
    NoUsableFormat,
    Other,
}

impl ProbeError {
    fn new(
        path: &Path,
        kind: ProbeErrorKind,
        reason: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            path: path.to_path_buf(),
            kind,
            reason: reason.into(),
            fix: fix.into(),
        }
    }

    /// An OS error while doing `step` (`open it`, `set the format`).
    fn os(path: &Path, step: &str, e: &io::Error) -> Self {
        use ProbeErrorKind::*;
        match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => Self::new(
                path,
                Missing,
                "no such device",
                format!("is the camera plugged in? {FIX_LIST}"),
            ),
            Some(libc::EACCES | libc::EPERM) => Self::new(
                path,
                PermissionDenied,
                "permission denied",
                "add the user to the `video` group (sudo usermod -aG video USER, then log in again) or run as the doorbell service user",
            ),
            Some(libc::EBUSY) => Self::new(
                path,
                Busy,
                "in use by another program",
                format!(
                    "stop the program using the camera (`fuser -v {}` shows which)",
                    path.display()
                ),
            ),
            Some(libc::ENOTTY) => Self::new(
                path,
                NotV4l2,
                "not a V4L2 video device",
                FIX_LIST,
            ),
            _ => Self::new(
                path,
                Other,
                format!("cannot {step}: {e}"),
                format!("{FIX_LIST}; unplugging and replugging the camera may help"),
            ),
        }
    }
}

/// Reads "camera: /dev/video0: no such device; ..." in the call's log.
impl From<ProbeError> for MediaError {
    fn from(e: ProbeError) -> Self {
        MediaError::Device {
            device: e.path.display().to_string(),
            message: format!("{}; {}", e.reason, e.fix),
        }
    }
}

/// A V4L2 capture device as `doorbell devices` shows it.
#[derive(Debug, Clone)]
pub struct CameraInfo {
    pub path: PathBuf,
    /// Names under `/dev/v4l/by-id` for this node: they survive reboots and
    /// re-plugging into another port, unlike `/dev/videoN`.
    pub stable_names: Vec<PathBuf>,
    pub card: String,
    pub driver: String,
    pub bus: String,
    pub formats: Vec<FormatDesc>,
    /// Set when the node could not be opened or read.
    pub error: Option<ProbeError>,
}

impl fmt::Display for CameraInfo {
    /// A block: the node on the first line, details indented below.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if !self.card.is_empty() {
            write!(f, ": {}", self.card)?;
        }
        if !self.driver.is_empty() {
            write!(f, " ({}, {})", self.driver, self.bus)?;
        }
        if let Some(e) = &self.error {
            write!(f, "\n    {}; {}", e.reason, e.fix)?;
        }
        for name in &self.stable_names {
            write!(f, "\n    stable name: v4l2:{}", name.display())?;
        }
        for format in &self.formats {
            write!(f, "\n    {}", format.to_string().replace('\n', "\n  "))?;
        }
        Ok(())
    }
}

/// The V4L2 capture devices of this machine (`/dev/video*` nodes that
/// capture pictures, and those that could not be opened, with the reason).
/// Metadata nodes and memory-to-memory codecs are left out.
pub fn list_cameras() -> Vec<CameraInfo> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_prefix("video")?.parse::<u32>().ok()?;
            Some((n, e.path()))
        })
        .collect();
    nodes.sort();
    let stable = stable_names();
    nodes
        .into_iter()
        .filter_map(|(_, path)| {
            let mut info = describe_node(&path)?;
            info.stable_names = stable.get(&path).cloned().unwrap_or_default();
            Some(info)
        })
        .collect()
}

/// `/dev/v4l/by-id/*` by the node they point to.
fn stable_names() -> HashMap<PathBuf, Vec<PathBuf>> {
    let mut map: HashMap<PathBuf, Vec<PathBuf>> = HashMap::new();
    for entry in std::fs::read_dir("/dev/v4l/by-id")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(target) = std::fs::canonicalize(entry.path()) {
            map.entry(target).or_default().push(entry.path());
        }
    }
    for names in map.values_mut() {
        names.sort();
    }
    map
}

/// `None` for nodes that open but do not capture pictures.
fn describe_node(path: &Path) -> Option<CameraInfo> {
    let mut info = CameraInfo {
        path: path.to_path_buf(),
        stable_names: Vec::new(),
        card: String::new(),
        driver: String::new(),
        bus: String::new(),
        formats: Vec::new(),
        error: None,
    };
    let device = match open_device(path) {
        Ok(d) => d,
        Err(e) => {
            // The name is world-readable even when the node is not.
            info.card = sysfs_name(path).unwrap_or_default();
            info.error = Some(e);
            return Some(info);
        }
    };
    match query_caps(&device) {
        Ok(caps) => {
            if check_capture(path, &caps).is_err() {
                return None;
            }
            info.card = caps.card;
            info.driver = caps.driver;
            info.bus = caps.bus;
        }
        Err(e) => {
            info.error = Some(ProbeError::os(path, "query it", &e));
            return Some(info);
        }
    }
    info.formats = read_formats(&device, None);
    Some(info)
}

fn sysfs_name(path: &Path) -> Option<String> {
    let node = path.file_name()?.to_str()?;
    let name = std::fs::read_to_string(format!("/sys/class/video4linux/{node}/name")).ok()?;
    Some(name.trim().to_string())
}

/// What `doorbell check` says about a configured camera: what would be used
/// (`YUYV 640x480@30`), or why it cannot be.
pub fn probe(path: &Path, width: u32, height: u32, fps: u32) -> Result<String, ProbeError> {
    let camera = V4l2Camera::open(path, width, height, fps)?;
    Ok(format!("{} ({})", camera.setup, camera.card))
}

/// A camera streaming I420 frames of the configured size.
pub struct V4l2Camera {
    path: PathBuf,
    card: String,
    /// What was set up, for logs (`MJPEG 1280x720@30, cropped and scaled to 640x480`).
    setup: String,
    handle: Arc<Handle>,
    /// `None` once closed.
    stream: Option<MmapStream<'static>>,
    converter: Converter,
    decimator: FrameDecimator,
    frame_timeout: Duration,
    started: bool,
    /// When the last usable frame arrived (or streaming started).
    last_good: Option<Instant>,
    skipped: u64,
    skipped_logged: Option<Instant>,
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
        let converter = Converter::new(format, w, h, set.stride as usize, target)
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

    fn device_error(&self, message: String) -> MediaError {
        MediaError::Device {
            device: format!("camera {}", self.path.display()),
            message,
        }
    }

    /// Counts an unusable frame; an error once they have lasted too long.
    fn skip(&mut self, why: &str) -> Result<(), MediaError> {
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
enum Outcome {
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

/// Turns camera frames into I420 of the target size.
struct Converter {
    format: PixelFormat,
    width: usize,
    height: usize,
    stride: usize,
    target: (usize, usize),
    scaler: Option<Scaler>,
    /// The picture at the camera's size, when it has to be scaled.
    staging: Frame,
    mjpeg: MjpegDecoder,
}

impl Converter {
    fn new(
        format: PixelFormat,
        width: usize,
        height: usize,
        stride: usize,
        target: (usize, usize),
    ) -> Result<Self, ConvertError> {
        let scaler = if (width, height) == target {
            None
        } else {
            Some(Scaler::new(width, height, target.0, target.1)?)
        };
        Ok(Self {
            format,
            width,
            height,
            stride,
            target,
            scaler,
            staging: Frame::new(width, height),
            mjpeg: MjpegDecoder::new(),
        })
    }

    fn convert(&mut self, data: &[u8], out: &mut Frame) -> Result<(), ConvertError> {
        let direct = (self.width, self.height) == self.target;
        let (w, h) = (self.width, self.height);
        match self.format {
            PixelFormat::Mjpeg if direct => {
                self.mjpeg.decode(data, w, h, out)?;
                if (out.width, out.height) == self.target {
                    return Ok(());
                }
                // A JPEG smaller than announced: scale it like any other.
                std::mem::swap(out, &mut self.staging);
            }
            PixelFormat::Mjpeg => self.mjpeg.decode(data, w, h, &mut self.staging)?,
            raw if direct => return convert::raw_to_i420(raw, data, self.stride, w, h, out),
            raw => convert::raw_to_i420(raw, data, self.stride, w, h, &mut self.staging)?,
        }
        let size = (self.staging.width, self.staging.height);
        if self.scaler.as_ref().map(Scaler::source_size) != Some(size) {
            self.scaler = Some(Scaler::new(size.0, size.1, self.target.0, self.target.1)?);
        }
        let scaler = self.scaler.as_ref().expect("set just above");
        scaler.scale(&self.staging, out)
    }
}

/// `MJPEG 1280x720@30, cropped and scaled to 640x480, thinned to 15 fps`.
fn describe_setup(
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

fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENODEV | libc::ENXIO | libc::EIO)
    )
}

/// The error that ends the video when capturing fails.
fn capture_error(path: &Path, e: &io::Error, waited: Duration, started: bool) -> MediaError {
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

/// When the frame was captured: the driver's timestamp when it is on the
/// monotonic clock (the clock of [`Instant`]), else when we received it.
fn capture_time(meta: &Metadata, received: Instant) -> (Instant, u64) {
    let now_unix = super::unix_ms();
    let monotonic = u32::from(meta.flags) & 0xE000 == 0x2000; // V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC
    if let (true, Some(now), Some(stamp)) = (monotonic, monotonic_now(), timestamp(meta)) {
        if let Some(age) = now
            .checked_sub(stamp)
            .filter(|a| *a < Duration::from_secs(1))
        {
            return (
                received.checked_sub(age).unwrap_or(received),
                now_unix.saturating_sub(age.as_millis() as u64),
            );
        }
    }
    (received, now_unix)
}

// time_t is i32 on 32-bit Raspberry Pi OS and i64 elsewhere.
#[allow(clippy::useless_conversion)]
fn timestamp(meta: &Metadata) -> Option<Duration> {
    let sec = u64::try_from(i64::from(meta.timestamp.sec)).ok()?;
    let usec = u32::try_from(i64::from(meta.timestamp.usec)).ok()?;
    (usec < 1_000_000).then(|| Duration::new(sec, usec * 1000))
}

fn monotonic_now() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid `ts`.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if r != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

fn open_device(path: &Path) -> Result<Device, ProbeError> {
    // The v4l crate panics on a path with a NUL byte; config parsing refuses
    // them, and so does this.
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(ProbeError::new(
            path,
            ProbeErrorKind::Missing,
            "not a valid device path",
            FIX_LIST,
        ));
    }
    Device::with_path(path).map_err(|e| ProbeError::os(path, "open it", &e))
}

struct Caps {
    driver: String,
    card: String,
    bus: String,
    /// The node's own capabilities (`device_caps`).
    flags: u32,
}

const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
const CAP_VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
const CAP_VIDEO_M2M_MPLANE: u32 = 0x0000_4000;
const CAP_VIDEO_M2M: u32 = 0x0000_8000;
const CAP_META_CAPTURE: u32 = 0x0080_0000;
const CAP_STREAMING: u32 = 0x0400_0000;
const CAP_DEVICE_CAPS: u32 = 0x8000_0000;

/// VIDIOC_QUERYCAP, read leniently: the `v4l` crate's version panics on a
/// card name that is not UTF-8 (a USB product string cut at 32 bytes can be).
fn query_caps(device: &Device) -> io::Result<Caps> {
    // SAFETY: v4l2_capability is plain old data; all zeroes is valid.
    let mut caps: v4l_sys::v4l2_capability = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes one v4l2_capability into `caps`, which lives
    // for the call; the descriptor is open (held by `device`).
    unsafe {
        v4l2::ioctl(
            device.handle().fd(),
            v4l2::vidioc::VIDIOC_QUERYCAP,
            &mut caps as *mut _ as *mut std::os::raw::c_void,
        )?;
    }
    let flags = if caps.capabilities & CAP_DEVICE_CAPS != 0 {
        caps.device_caps
    } else {
        caps.capabilities
    };
    Ok(Caps {
        driver: c_text(&caps.driver),
        card: c_text(&caps.card),
        bus: c_text(&caps.bus_info),
        flags,
    })
}

fn c_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_string()
}

fn check_capture(path: &Path, caps: &Caps) -> Result<(), ProbeError> {
    let f = caps.flags;
    let not = |reason: String, fix: &str| {
        Err(ProbeError::new(
            path,
            ProbeErrorKind::NotCapture,
            reason,
            fix,
        ))
    };
    if f & (CAP_VIDEO_M2M | CAP_VIDEO_M2M_MPLANE) != 0 {
        return not(
            format!("{} is a video codec or converter, not a camera", caps.card),
            FIX_LIST,
        );
    }
    if f & CAP_VIDEO_CAPTURE == 0 {
        if f & CAP_META_CAPTURE != 0 {
            return not(
                format!("this is the metadata node of {}, not its picture", caps.card),
                &format!("use the camera's other /dev/video node (usually the one numbered just below); {FIX_LIST}"),
            );
        }
        if f & CAP_VIDEO_CAPTURE_MPLANE != 0 {
            return not(
                format!(
                    "{} only offers multi-planar capture, which doorbell does not support",
                    caps.card
                ),
                "use a USB (UVC) webcam",
            );
        }
        return not(
            format!(
                "{} ({}) is not a video capture device",
                caps.card, caps.driver
            ),
            FIX_LIST,
        );
    }
    if f & CAP_STREAMING == 0 {
        return not(
            format!("{} cannot stream (no mmap capture)", caps.card),
            "use a USB (UVC) webcam",
        );
    }
    Ok(())
}

/// VIDIOC_ENUM_FMT, read leniently (the crate's version panics on a
/// description that is not UTF-8).
fn enum_formats(device: &Device) -> Vec<(Fourcc, String)> {
    let mut out = Vec::new();
    for index in 0..64 {
        // SAFETY: v4l2_fmtdesc is plain old data; all zeroes is valid.
        let mut desc: v4l_sys::v4l2_fmtdesc = unsafe { std::mem::zeroed() };
        desc.index = index;
        desc.type_ = BufferType::VideoCapture as u32;
        // SAFETY: the ioctl fills the v4l2_fmtdesc it is given, which lives
        // for the call.
        let r = unsafe {
            v4l2::ioctl(
                device.handle().fd(),
                v4l2::vidioc::VIDIOC_ENUM_FMT,
                &mut desc as *mut _ as *mut std::os::raw::c_void,
            )
        };
        if r.is_err() {
            break;
        }
        out.push((
            Fourcc(desc.pixelformat.to_le_bytes()),
            c_text(&desc.description),
        ));
    }
    out
}

/// The camera's formats with their sizes and rates. With `request`, the
/// rates of a stepwise size range are read at the size that fits the
/// request, and a usable format whose sizes are not listed gets the request
/// itself (the driver adjusts it when we set it); without, at the largest.
fn read_formats(device: &Device, request: Option<(u32, u32)>) -> Vec<FormatDesc> {
    enum_formats(device)
        .into_iter()
        .map(|(fourcc, description)| {
            let code = v4l::FourCC::new(&fourcc.0);
            let mut sizes: Vec<FrameSize> = device
                .enum_framesizes(code)
                .unwrap_or_default()
                .into_iter()
                .map(|s| match s.size {
                    FrameSizeEnum::Discrete(d) => FrameSize::Discrete {
                        width: d.width,
                        height: d.height,
                        rates: read_rates(device, code, d.width, d.height),
                    },
                    FrameSizeEnum::Stepwise(s) => {
                        let range = SizeRange {
                            min_width: s.min_width,
                            max_width: s.max_width,
                            step_width: s.step_width,
                            min_height: s.min_height,
                            max_height: s.max_height,
                            step_height: s.step_height,
                        };
                        let at = request
                            .and_then(|(w, h)| range.fit(w, h))
                            .unwrap_or((s.max_width, s.max_height));
                        FrameSize::Stepwise {
                            range,
                            rates: read_rates(device, code, at.0, at.1),
                            rates_at: at,
                        }
                    }
                })
                .collect();
            if let (true, Some((width, height))) = (sizes.is_empty(), request) {
                if PixelFormat::from_fourcc(fourcc).is_some() {
                    sizes.push(FrameSize::Discrete {
                        width,
                        height,
                        rates: Rates::Unknown,
                    });
                }
            }
            FormatDesc {
                fourcc,
                description,
                sizes,
            }
        })
        .collect()
}

fn read_rates(device: &Device, code: v4l::FourCC, width: u32, height: u32) -> Rates {
    let list = device
        .enum_frameintervals(code, width, height)
        .unwrap_or_default();
    let frac = |f: &Fraction| Interval::new(f.numerator, f.denominator);
    let mut discrete = Vec::new();
    for i in &list {
        match &i.interval {
            FrameIntervalEnum::Discrete(f) => discrete.push(frac(f)),
            FrameIntervalEnum::Stepwise(s) => {
                return Rates::Stepwise {
                    min: frac(&s.min),
                    max: frac(&s.max),
                    step: frac(&s.step),
                }
            }
        }
    }
    if discrete.is_empty() {
        Rates::Unknown
    } else {
        Rates::Discrete(discrete)
    }
}

/// What the driver set.
struct SetFormat {
    fourcc: Fourcc,
    width: u32,
    height: u32,
    stride: u32,
}

const V4L2_FIELD_NONE: u32 = 1;

/// VIDIOC_S_FMT, read leniently (the crate's version panics on colour space
/// values newer than it knows).
fn set_format(device: &Device, choice: &Choice) -> io::Result<SetFormat> {
    // SAFETY: v4l2_format is plain old data; all zeroes is valid.
    let mut format: v4l_sys::v4l2_format = unsafe { std::mem::zeroed() };
    format.type_ = BufferType::VideoCapture as u32;
    // SAFETY: as above, for the pix member.
    let mut pix: v4l_sys::v4l2_pix_format = unsafe { std::mem::zeroed() };
    pix.width = choice.width;
    pix.height = choice.height;
    pix.pixelformat = u32::from_le_bytes(choice.fourcc.0);
    pix.field = V4L2_FIELD_NONE;
    format.fmt = v4l_sys::v4l2_format__bindgen_ty_1 { pix };
    // SAFETY: the ioctl reads and rewrites the v4l2_format it is given, which
    // lives for the call.
    unsafe {
        v4l2::ioctl(
            device.handle().fd(),
            v4l2::vidioc::VIDIOC_S_FMT,
            &mut format as *mut _ as *mut std::os::raw::c_void,
        )?;
    }
    // SAFETY: for a capture buffer type the driver fills the `pix` member.
    let pix = unsafe { format.fmt.pix };
    Ok(SetFormat {
        fourcc: Fourcc(pix.pixelformat.to_le_bytes()),
        width: pix.width,
        height: pix.height,
        stride: pix.bytesperline,
    })
}

/// Asks for the frame interval; returns what the driver set, if it says.
/// Cameras without rate control keep their own rate, which is fine.
fn set_rate(device: &Device, interval: Interval) -> Option<Interval> {
    let asked = Parameters::new(Fraction::new(interval.numerator, interval.denominator));
    let params = match device.set_params(&asked) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!("the camera does not take a frame rate: {e}");
            device.params().ok()?
        }
    };
    let set = Interval::new(params.interval.numerator, params.interval.denominator);
    set.fps().map(|_| set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn open_errors_carry_a_reason_and_a_fix() {
        let p = Path::new("/dev/video0");
        let e = ProbeError::os(p, "open it", &os(libc::ENOENT));
        assert_eq!(e.kind, ProbeErrorKind::Missing);
        assert_eq!(
            e.to_string(),
            "/dev/video0: no such device; is the camera plugged in? `doorbell devices` lists cameras"
        );
        let e = ProbeError::os(p, "open it", &os(libc::EACCES));
        assert_eq!(e.kind, ProbeErrorKind::PermissionDenied);
        assert!(e.fix.contains("sudo usermod -aG video USER"), "{e}");
        let e = ProbeError::os(p, "map capture buffers", &os(libc::EBUSY));
        assert_eq!(e.reason, "in use by another program");
        assert!(e.fix.contains("fuser -v /dev/video0"), "{e}");
        let e = ProbeError::os(p, "set the format", &os(libc::EINVAL));
        assert!(e.reason.starts_with("cannot set the format: "), "{e}");
        let m = MediaError::from(ProbeError::os(p, "open it", &os(libc::ENOENT)));
        assert_eq!(
            m.to_string(),
            "/dev/video0: no such device; is the camera plugged in? `doorbell devices` lists cameras"
        );
    }

    #[test]
    fn probing_a_missing_camera_says_so() {
        let e = probe(Path::new("/dev/video-doorbell-test-none"), 640, 480, 30).unwrap_err();
        assert_eq!(e.kind, ProbeErrorKind::Missing);
        assert!(e.fix.contains("plugged in"));
    }

    #[test]
    fn probing_something_that_is_not_a_camera_says_so() {
        // /dev/null opens fine but answers no V4L2 ioctl.
        let e = probe(Path::new("/dev/null"), 640, 480, 30).unwrap_err();
        assert_eq!(e.kind, ProbeErrorKind::NotV4l2, "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("video0");
        std::fs::write(&file, b"").unwrap();
        let e = probe(&file, 640, 480, 30).unwrap_err();
        assert_eq!(e.kind, ProbeErrorKind::NotV4l2, "{e}");
        let e = probe(dir.path(), 640, 480, 30).unwrap_err();
        assert_eq!(e.kind, ProbeErrorKind::Other, "{e}");
        let e = probe(Path::new("/dev/vid\0eo0"), 640, 480, 30).unwrap_err();
        assert!(e.reason.contains("not a valid device path"), "{e}");
    }

    fn caps(flags: u32) -> Caps {
        Caps {
            driver: "uvcvideo".into(),
            card: "HD Webcam C270".into(),
            bus: "usb-0000:01:00.0-1.2".into(),
            flags,
        }
    }

    #[test]
    fn only_streaming_single_planar_capture_nodes_are_cameras() {
        let p = Path::new("/dev/video1");
        assert!(check_capture(p, &caps(CAP_VIDEO_CAPTURE | CAP_STREAMING)).is_ok());
        // The second node of every UVC camera.
        let e = check_capture(p, &caps(CAP_META_CAPTURE | CAP_STREAMING)).unwrap_err();
        assert_eq!(e.kind, ProbeErrorKind::NotCapture);
        assert!(e.reason.contains("metadata node of HD Webcam C270"), "{e}");
        assert!(e.fix.contains("other /dev/video node"), "{e}");
        // The Pi's codec and ISP nodes.
        let e = check_capture(p, &caps(CAP_VIDEO_M2M_MPLANE | CAP_STREAMING)).unwrap_err();
        assert!(e.reason.contains("codec"), "{e}");
        let e = check_capture(p, &caps(CAP_VIDEO_CAPTURE_MPLANE | CAP_STREAMING)).unwrap_err();
        assert!(e.reason.contains("multi-planar"), "{e}");
        let e = check_capture(p, &caps(CAP_VIDEO_CAPTURE)).unwrap_err();
        assert!(e.reason.contains("cannot stream"), "{e}");
    }

    #[test]
    fn an_unplugged_or_silent_camera_ends_video_with_a_clear_error() {
        let p = Path::new("/dev/video0");
        let m = capture_error(p, &os(libc::ENODEV), FRAME_TIMEOUT, true).to_string();
        assert!(
            m.starts_with("camera /dev/video0: stopped delivering frames (unplugged?)"),
            "{m}"
        );
        let timed_out = io::Error::new(io::ErrorKind::TimedOut, "VIDIOC_DQBUF");
        let m = capture_error(p, &timed_out, FRAME_TIMEOUT, true).to_string();
        assert_eq!(
            m,
            "camera /dev/video0: stopped delivering frames (unplugged?): none for 1 s"
        );
        let m = capture_error(p, &timed_out, FIRST_FRAME_TIMEOUT, false).to_string();
        assert!(m.contains("no frame within 5 s of starting"), "{m}");
        let m = capture_error(p, &os(libc::EIO), FRAME_TIMEOUT, true).to_string();
        assert!(m.contains("unplugged?"), "{m}");
    }

    #[test]
    fn driver_timestamps_date_the_frame_when_they_are_monotonic() {
        let received = Instant::now();
        let now = monotonic_now().unwrap();
        let stamp = now - Duration::from_millis(40);
        let mut meta = Metadata::default();
        meta.timestamp.sec = stamp.as_secs() as _;
        meta.timestamp.usec = stamp.subsec_micros() as _;
        meta.flags = BufferFlags::from(0x2000);
        let (captured, unix_ms) = capture_time(&meta, received);
        let age = received - captured;
        assert!(
            age >= Duration::from_millis(39) && age <= Duration::from_millis(60),
            "{age:?}"
        );
        assert!(super::super::unix_ms() - unix_ms >= 39);
        // Unknown clock, or nonsense: the time we got it.
        meta.flags = BufferFlags::from(0);
        assert_eq!(capture_time(&meta, received).0, received);
        meta.flags = BufferFlags::from(0x2000);
        meta.timestamp.sec = 0;
        meta.timestamp.usec = 0;
        assert_eq!(
            capture_time(&meta, received).0,
            received,
            "too old to trust"
        );
        meta.timestamp.usec = -5 as _;
        assert_eq!(capture_time(&meta, received).0, received);
    }

    #[test]
    fn the_setup_line_says_what_happens_to_the_picture() {
        let i30 = Some(Interval::new(1, 30));
        assert_eq!(
            describe_setup(
                PixelFormat::Yuyv,
                (640, 480),
                i30,
                (640, 480),
                30,
                Some(true)
            ),
            "YUYV 640x480@30"
        );
        assert_eq!(
            describe_setup(
                PixelFormat::Mjpeg,
                (1280, 720),
                i30,
                (640, 480),
                15,
                Some(true)
            ),
            "MJPEG 1280x720@30, cropped and scaled to 640x480, thinned to 15 fps"
        );
        assert_eq!(
            describe_setup(
                PixelFormat::Yuyv,
                (1280, 720),
                Some(Interval::new(1, 5)),
                (640, 360),
                30,
                Some(false)
            ),
            "YUYV 1280x720@5, scaled to 640x360 (the camera does not reach 30 fps at this size)"
        );
    }

    #[test]
    fn conversion_scales_to_the_configured_size() {
        use crate::media::convert::tests::{pack_yuyv, test_picture};
        let picture = test_picture(320, 240);
        let yuyv = pack_yuyv(&picture, 640);
        let mut c = Converter::new(PixelFormat::Yuyv, 320, 240, 640, (320, 240)).unwrap();
        let mut out = Frame::new(320, 240);
        c.convert(&yuyv, &mut out).unwrap();
        assert_eq!(out.data, picture.data);
        let mut c = Converter::new(PixelFormat::Yuyv, 320, 240, 640, (160, 120)).unwrap();
        c.convert(&yuyv, &mut out).unwrap();
        assert_eq!(
            (out.width, out.height, out.data.len()),
            (160, 120, 160 * 120 * 3 / 2)
        );
        // A short buffer is an error for that frame only.
        assert!(c.convert(&yuyv[..1000], &mut out).is_err());
        c.convert(&yuyv, &mut out).unwrap();
    }

    #[test]
    fn an_mjpeg_frame_of_another_size_is_still_delivered_at_the_configured_size() {
        use crate::media::convert::tests::encode_jpeg;
        let rgb = vec![128u8; 320 * 240 * 3];
        let jpeg = encode_jpeg(
            &rgb,
            320,
            240,
            jpeg_encoder::ColorType::Rgb,
            jpeg_encoder::SamplingFactor::R_4_2_2,
        );
        // The camera announced 640x480 but sends 320x240.
        let mut c = Converter::new(PixelFormat::Mjpeg, 640, 480, 0, (640, 480)).unwrap();
        let mut out = Frame::new(640, 480);
        c.convert(&jpeg, &mut out).unwrap();
        assert_eq!((out.width, out.height), (640, 480));
        assert!(c.convert(&jpeg[..jpeg.len() / 2], &mut out).is_err());
    }

    #[test]
    fn listing_without_cameras_is_empty_not_an_error() {
        // Whatever this machine has, listing must not panic; every entry is
        // either usable or says why not.
        for camera in list_cameras() {
            let text = camera.to_string();
            assert!(text.starts_with("/dev/video"), "{text}");
        }
    }

    #[test]
    fn camera_entries_print_as_an_indented_block() {
        let info = CameraInfo {
            path: "/dev/video0".into(),
            stable_names: vec!["/dev/v4l/by-id/usb-046d_0825_ABCD-video-index0".into()],
            card: "HD Webcam C270".into(),
            driver: "uvcvideo".into(),
            bus: "usb-0000:01:00.0-1.2".into(),
            formats: vec![FormatDesc {
                fourcc: Fourcc::YUYV,
                description: "YUYV 4:2:2".into(),
                sizes: vec![FrameSize::Discrete {
                    width: 640,
                    height: 480,
                    rates: Rates::Discrete(vec![Interval::new(1, 30), Interval::new(1, 15)]),
                }],
            }],
            error: None,
        };
        assert_eq!(
            info.to_string(),
            "/dev/video0: HD Webcam C270 (uvcvideo, usb-0000:01:00.0-1.2)\n    \
             stable name: v4l2:/dev/v4l/by-id/usb-046d_0825_ABCD-video-index0\n    \
             YUYV (YUYV 4:2:2)\n      \
             640x480: 30, 15 fps"
        );
        let denied = CameraInfo {
            formats: vec![],
            stable_names: vec![],
            driver: String::new(),
            error: Some(ProbeError::os(
                Path::new("/dev/video0"),
                "open it",
                &os(libc::EACCES),
            )),
            ..info
        };
        let text = denied.to_string();
        assert!(
            text.starts_with("/dev/video0: HD Webcam C270\n    permission denied; add the user"),
            "{text}"
        );
    }
}
