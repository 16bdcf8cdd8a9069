//! What to ask a camera for, decided from what it says it can do.
//!
//! A V4L2 camera lists its pixel formats, for each format its frame sizes, and
//! for each size its frame rates. Which entry to pick is a decision with
//! consequences on a Pi (a USB2 webcam gives 640x480 YUYV at 30 fps but
//! 1280x720 YUYV at 7.5, while MJPEG reaches 30 at every size and costs a JPEG
//! decode per frame), so it lives here as a pure function over plain data that
//! is tested with tables of real-world format lists; `media::v4l2` only reads
//! the list from the driver and applies the choice.
//!
//! The rules, in order:
//!
//! 1. Only formats we convert to I420: YUYV, NV12, YU12 and MJPEG (JPEG).
//! 2. Size first (the picture of the visitor matters more than its rate): the
//!    exact configured size; else the smallest size of the same aspect ratio
//!    that covers it; else the smallest size of any aspect that covers it
//!    (cropped to the aspect and scaled down); else the largest size there is
//!    (scaled up). Only even sizes (I420).
//! 3. Then, among the formats offering that size: the first raw format (YUYV,
//!    NV12, YU12) that reaches the configured rate, else MJPEG if it does,
//!    else whichever format is fastest at that size (ties go to raw formats).
//! 4. The rate asked for is the configured one when the camera has it, else
//!    the slowest rate above it (the surplus is dropped by
//!    [`FrameDecimator`]), else the fastest rate the camera has.
//!
//! [`FrameDecimator`] is the other pure decision of the camera path: which of
//! the frames a camera delivers to keep when it runs faster than configured.

use std::fmt;
use std::time::{Duration, Instant};

/// A V4L2 pixel format code, such as `YUYV` or `MJPG`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fourcc(pub [u8; 4]);

impl Fourcc {
    pub const YUYV: Fourcc = Fourcc(*b"YUYV");
    pub const NV12: Fourcc = Fourcc(*b"NV12");
    pub const YU12: Fourcc = Fourcc(*b"YU12");
    pub const MJPG: Fourcc = Fourcc(*b"MJPG");
    pub const JPEG: Fourcc = Fourcc(*b"JPEG");
}

impl fmt::Display for Fourcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            // Codes shorter than four letters are padded with spaces ("Y16 ").
            let s: String = self.0.iter().map(|&b| b as char).collect();
            f.write_str(s.trim_end())
        } else {
            write!(f, "0x{:08x}", u32::from_le_bytes(self.0))
        }
    }
}

impl fmt::Debug for Fourcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fourcc({self})")
    }
}

/// The pixel formats we convert to I420, in order of preference at equal rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PixelFormat {
    /// Packed 4:2:2, Y0 U Y1 V: what every UVC webcam offers.
    Yuyv,
    /// Planar Y then interleaved UV, 4:2:0.
    Nv12,
    /// Planar Y, U, V, 4:2:0: I420 itself.
    Yu12,
    /// A JPEG per frame: more CPU, less USB bandwidth.
    Mjpeg,
}

impl PixelFormat {
    pub fn from_fourcc(fourcc: Fourcc) -> Option<PixelFormat> {
        match fourcc {
            Fourcc::YUYV => Some(PixelFormat::Yuyv),
            Fourcc::NV12 => Some(PixelFormat::Nv12),
            Fourcc::YU12 => Some(PixelFormat::Yu12),
            Fourcc::MJPG | Fourcc::JPEG => Some(PixelFormat::Mjpeg),
            _ => None,
        }
    }

    pub fn is_raw(self) -> bool {
        self != PixelFormat::Mjpeg
    }

    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Yuyv => "YUYV",
            PixelFormat::Nv12 => "NV12",
            PixelFormat::Yu12 => "YU12",
            PixelFormat::Mjpeg => "MJPEG",
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Time per frame in seconds, as V4L2 gives it: 1/30 is 30 fps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub numerator: u32,
    pub denominator: u32,
}

impl Interval {
    pub const fn new(numerator: u32, denominator: u32) -> Self {
        Self {
            numerator,
            denominator,
        }
    }

    pub const fn from_fps(fps: u32) -> Self {
        Self::new(1, fps)
    }

    /// Frames per second; `None` for a degenerate interval (0/x or x/0).
    pub fn fps(self) -> Option<f64> {
        (self.numerator != 0 && self.denominator != 0)
            .then(|| f64::from(self.denominator) / f64::from(self.numerator))
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.fps() {
            Some(fps) => f.write_str(&fps_text(fps)),
            None => write!(f, "{}/{} s", self.numerator, self.denominator),
        }
    }
}

/// `30`, `7.5`, `29.97`.
pub fn fps_text(fps: f64) -> String {
    if (fps - fps.round()).abs() < 0.005 {
        format!("{}", fps.round() as u64)
    } else {
        let s = format!("{fps:.2}");
        s.trim_end_matches('0').to_string()
    }
}

/// The frame rates of one format at one size.
#[derive(Debug, Clone, PartialEq)]
pub enum Rates {
    /// A list, as UVC webcams give it.
    Discrete(Vec<Interval>),
    /// Any interval from `min` (fastest) to `max` (slowest) in `step`s.
    Stepwise {
        min: Interval,
        max: Interval,
        step: Interval,
    },
    /// The driver does not enumerate rates; we ask and take what it sets.
    Unknown,
}

impl Rates {
    /// The rates as fps, fastest first (discrete only).
    fn discrete_fps(list: &[Interval]) -> Vec<(f64, Interval)> {
        let mut v: Vec<(f64, Interval)> = list
            .iter()
            .filter_map(|i| i.fps().map(|fps| (fps, *i)))
            .collect();
        v.sort_by(|a, b| b.0.total_cmp(&a.0));
        v
    }
}

impl fmt::Display for Rates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rates::Discrete(list) => {
                let fps: Vec<String> = Rates::discrete_fps(list)
                    .iter()
                    .map(|(fps, _)| fps_text(*fps))
                    .collect();
                if fps.is_empty() {
                    f.write_str("no rates")
                } else {
                    write!(f, "{} fps", fps.join(", "))
                }
            }
            Rates::Stepwise { min, max, .. } => match (max.fps(), min.fps()) {
                (Some(lo), Some(hi)) => write!(f, "{}-{} fps", fps_text(lo), fps_text(hi)),
                _ => f.write_str("rates unknown"),
            },
            Rates::Unknown => f.write_str("rates unknown"),
        }
    }
}

/// The sizes of one format.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameSize {
    Discrete {
        width: u32,
        height: u32,
        rates: Rates,
    },
    /// A range of sizes (continuous when the steps are 1).
    Stepwise {
        range: SizeRange,
        /// The rates the driver reports at `rates_at` (rates depend on the
        /// size; `media::v4l2` asks at the size [`SizeRange::fit`] picks).
        rates: Rates,
        rates_at: (u32, u32),
    },
}

/// A stepwise range of frame sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeRange {
    pub min_width: u32,
    pub max_width: u32,
    pub step_width: u32,
    pub min_height: u32,
    pub max_height: u32,
    pub step_height: u32,
}

impl SizeRange {
    /// The size in the range closest to `width`x`height`: the request itself
    /// when the range has it, else rounded up to the next step, else clamped
    /// to the range; always even (or `None` if the range holds no even size).
    pub fn fit(&self, width: u32, height: u32) -> Option<(u32, u32)> {
        let w = fit_axis(width, self.min_width, self.max_width, self.step_width)?;
        let h = fit_axis(height, self.min_height, self.max_height, self.step_height)?;
        Some((w, h))
    }
}

/// The even value of `min + k*step` (within `min..=max`) nearest to `want`,
/// preferring the one just above.
fn fit_axis(want: u32, min: u32, max: u32, step: u32) -> Option<u32> {
    if min > max || max == 0 {
        return None;
    }
    let step = step.max(1);
    let clamped = want.clamp(min, max);
    let k = (clamped - min).div_ceil(step);
    let mut v = min.saturating_add(k.saturating_mul(step));
    if v > max {
        v = min + (max - min) / step * step;
    }
    // Odd sizes cannot be I420: walk to the nearest even step, up then down.
    if v % 2 == 1 {
        let up = (1..=2)
            .map(|i| v.saturating_add(i * step))
            .find(|c| c % 2 == 0 && *c <= max);
        let down = (1..=2)
            .filter_map(|i| v.checked_sub(i * step))
            .find(|c| c % 2 == 0 && *c >= min && *c > 0);
        v = up.or(down)?;
    }
    (v > 0).then_some(v)
}

/// One pixel format of a camera with its sizes and rates, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct FormatDesc {
    pub fourcc: Fourcc,
    /// The driver's name for it (`YUYV 4:2:2`, `Motion-JPEG`).
    pub description: String,
    pub sizes: Vec<FrameSize>,
}

impl FormatDesc {
    pub fn pixel_format(&self) -> Option<PixelFormat> {
        PixelFormat::from_fourcc(self.fourcc)
    }
}

impl fmt::Display for FormatDesc {
    /// One line for the format, then one per size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let usable = match self.pixel_format() {
            Some(_) => "",
            None => " (not usable: doorbell converts YUYV, NV12, YU12 and MJPEG)",
        };
        write!(f, "{} ({}){usable}", self.fourcc, self.description)?;
        for size in &self.sizes {
            match size {
                FrameSize::Discrete {
                    width,
                    height,
                    rates,
                } => write!(f, "\n    {width}x{height}: {rates}")?,
                FrameSize::Stepwise {
                    range: r,
                    rates,
                    rates_at,
                } => write!(
                    f,
                    "\n    {}x{} to {}x{} in steps of {}x{}: {rates} at {}x{}",
                    r.min_width,
                    r.min_height,
                    r.max_width,
                    r.max_height,
                    r.step_width,
                    r.step_height,
                    rates_at.0,
                    rates_at.1
                )?,
            }
        }
        Ok(())
    }
}

/// What the doorbell is configured for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// What to ask the camera for.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub format: PixelFormat,
    /// The code to ask for (`MJPG` or `JPEG` for [`PixelFormat::Mjpeg`]).
    pub fourcc: Fourcc,
    pub width: u32,
    pub height: u32,
    pub interval: Interval,
    /// `false`: the camera cannot deliver the configured rate at this size;
    /// `None`: it does not say.
    pub reaches_rate: Option<bool>,
}

impl Choice {
    pub fn fps(&self) -> Option<f64> {
        self.interval.fps()
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}x{}@{}",
            self.format, self.width, self.height, self.interval
        )
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NegotiateError {
    #[error("the camera offers no format doorbell can use (it offers: {offered}; doorbell converts YUYV, NV12, YU12 and MJPEG, at even sizes)")]
    NothingUsable { offered: String },
}

/// Within 1% counts as reaching the rate (29.97 for 30).
const RATE_TOLERANCE: f64 = 0.99;

/// Chooses format, size and rate for `request` from a camera's `formats`.
pub fn negotiate(formats: &[FormatDesc], request: Request) -> Result<Choice, NegotiateError> {
    let want = (request.width, request.height);
    let candidates: Vec<Candidate> = formats
        .iter()
        .filter_map(|f| f.pixel_format().map(|p| (f, p)))
        .flat_map(|(f, format)| {
            f.sizes.iter().filter_map(move |size| {
                let (width, height, rates) = match size {
                    FrameSize::Discrete {
                        width,
                        height,
                        rates,
                    } => (*width, *height, rates),
                    FrameSize::Stepwise { range, rates, .. } => {
                        let (w, h) = range.fit(want.0, want.1)?;
                        (w, h, rates)
                    }
                };
                (width > 0 && height > 0 && width % 2 == 0 && height % 2 == 0).then_some(
                    Candidate {
                        format,
                        fourcc: f.fourcc,
                        width,
                        height,
                        rates,
                    },
                )
            })
        })
        .collect();
    let Some(size) = candidates
        .iter()
        .map(|c| (c.width, c.height))
        .min_by_key(|&(w, h)| size_rank(w, h, want))
    else {
        return Err(NegotiateError::NothingUsable {
            offered: summary(formats),
        });
    };
    let best = candidates
        .iter()
        .filter(|c| (c.width, c.height) == size)
        .map(|c| (c, pick_rate(c.rates, request.fps)))
        .min_by(|(a, ra), (b, rb)| {
            ra.rank()
                .cmp(&rb.rank())
                .then_with(|| rb.fps_or_zero().total_cmp(&ra.fps_or_zero()))
                .then_with(|| a.format.cmp(&b.format))
        })
        .expect("the chosen size comes from a candidate");
    let (c, rate) = best;
    Ok(Choice {
        format: c.format,
        fourcc: c.fourcc,
        width: c.width,
        height: c.height,
        interval: rate.interval,
        reaches_rate: match rate.status {
            RateStatus::Reaches => Some(true),
            RateStatus::Unknown => None,
            RateStatus::Below => Some(false),
        },
    })
}

struct Candidate<'a> {
    format: PixelFormat,
    fourcc: Fourcc,
    width: u32,
    height: u32,
    rates: &'a Rates,
}

/// Smaller is better: (class, area key).
fn size_rank(w: u32, h: u32, (rw, rh): (u32, u32)) -> (u8, u64) {
    let area = u64::from(w) * u64::from(h);
    let covers = w >= rw && h >= rh;
    if (w, h) == (rw, rh) {
        (0, 0)
    } else if covers && u64::from(w) * u64::from(rh) == u64::from(rw) * u64::from(h) {
        (1, area)
    } else if covers {
        (2, area)
    } else {
        // Nothing covers the request: the largest, scaled up.
        (3, u64::MAX - area)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RateStatus {
    Reaches,
    Unknown,
    Below,
}

#[derive(Debug, Clone, Copy)]
struct RatePick {
    interval: Interval,
    status: RateStatus,
}

impl RatePick {
    fn rank(&self) -> RateStatus {
        self.status
    }

    /// Only compared among picks below the rate; others tie at zero.
    fn fps_or_zero(&self) -> f64 {
        match self.status {
            RateStatus::Below => self.interval.fps().unwrap_or(0.0),
            _ => 0.0,
        }
    }
}

fn pick_rate(rates: &Rates, fps: u32) -> RatePick {
    let wanted = f64::from(fps.max(1));
    let reaches = |f: f64| f >= wanted * RATE_TOLERANCE;
    match rates {
        Rates::Discrete(list) => {
            let all = Rates::discrete_fps(list);
            // Slowest of those that reach, else the fastest.
            match all.iter().rev().find(|(f, _)| reaches(*f)) {
                Some((_, i)) => RatePick {
                    interval: *i,
                    status: RateStatus::Reaches,
                },
                None => match all.first() {
                    Some((_, i)) => RatePick {
                        interval: *i,
                        status: RateStatus::Below,
                    },
                    None => RatePick {
                        interval: Interval::from_fps(fps.max(1)),
                        status: RateStatus::Unknown,
                    },
                },
            }
        }
        Rates::Stepwise { min, max, .. } => match (min.fps(), max.fps()) {
            (Some(fastest), Some(slowest)) => {
                if !reaches(fastest) {
                    RatePick {
                        interval: *min,
                        status: RateStatus::Below,
                    }
                } else if slowest > wanted {
                    RatePick {
                        interval: *max,
                        status: RateStatus::Reaches,
                    }
                } else {
                    RatePick {
                        interval: Interval::from_fps(fps.max(1)),
                        status: RateStatus::Reaches,
                    }
                }
            }
            _ => RatePick {
                interval: Interval::from_fps(fps.max(1)),
                status: RateStatus::Unknown,
            },
        },
        Rates::Unknown => RatePick {
            interval: Interval::from_fps(fps.max(1)),
            status: RateStatus::Unknown,
        },
    }
}

/// `YUYV 640x480, 1280x720; H264 1920x1080` (or `nothing`), for errors.
pub fn summary(formats: &[FormatDesc]) -> String {
    if formats.is_empty() {
        return "nothing".into();
    }
    formats
        .iter()
        .map(|f| {
            let sizes: Vec<String> = f
                .sizes
                .iter()
                .map(|s| match s {
                    FrameSize::Discrete { width, height, .. } => format!("{width}x{height}"),
                    FrameSize::Stepwise { range: r, .. } => format!(
                        "{}x{} to {}x{}",
                        r.min_width, r.min_height, r.max_width, r.max_height
                    ),
                })
                .collect();
            if sizes.is_empty() {
                format!("{} (no sizes)", f.fourcc)
            } else {
                format!("{} {}", f.fourcc, sizes.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Keeps frames at the configured rate when a camera delivers more.
///
/// Frames are kept on an absolute schedule (one per interval, with a quarter
/// of an interval of slack for jitter), so 30 fps thinned to 20 keeps two of every
/// three, and a camera at exactly the configured rate loses none. After a gap
/// the schedule restarts instead of letting a burst through.
#[derive(Debug, Clone)]
pub struct FrameDecimator {
    interval: Duration,
    due: Option<Instant>,
}

impl FrameDecimator {
    pub fn new(fps: u32) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / f64::from(fps.max(1))),
            due: None,
        }
    }

    /// Whether to keep the frame captured at `t`.
    pub fn accept(&mut self, t: Instant) -> bool {
        let slack = self.interval / 4;
        match self.due {
            Some(due) if t + slack < due => false,
            Some(due) => {
                let next = due + self.interval;
                // Far behind (a stall, or a slow consumer): restart from now.
                self.due = Some(if next + self.interval < t {
                    t + self.interval
                } else {
                    next
                });
                true
            }
            None => {
                self.due = Some(t + self.interval);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discrete(sizes: &[(u32, u32, &[f64])]) -> Vec<FrameSize> {
        sizes
            .iter()
            .map(|&(width, height, fps)| FrameSize::Discrete {
                width,
                height,
                rates: Rates::Discrete(
                    fps.iter()
                        .map(|&f| {
                            if f.fract() == 0.0 {
                                Interval::new(1, f as u32)
                            } else {
                                // 7.5 fps as UVC gives it: 1333333/10000000.
                                Interval::new((10_000_000.0 / f) as u32, 10_000_000)
                            }
                        })
                        .collect(),
                ),
            })
            .collect()
    }

    fn format(fourcc: Fourcc, description: &str, sizes: Vec<FrameSize>) -> FormatDesc {
        FormatDesc {
            fourcc,
            description: description.into(),
            sizes,
        }
    }

    const ALL_UVC: &[f64] = &[30.0, 25.0, 20.0, 15.0, 10.0, 7.5, 5.0];

    /// Logitech C270 as `v4l2-ctl --list-formats-ext` shows it (abridged):
    /// YUYV reaches 30 fps only up to 640x480, MJPEG at every size.
    fn c270() -> Vec<FormatDesc> {
        vec![
            format(
                Fourcc::YUYV,
                "YUYV 4:2:2",
                discrete(&[
                    (640, 480, ALL_UVC),
                    (160, 120, ALL_UVC),
                    (320, 240, ALL_UVC),
                    (352, 288, ALL_UVC),
                    (800, 600, &[20.0, 15.0, 10.0, 7.5, 5.0]),
                    (960, 720, &[10.0, 7.5, 5.0]),
                    (1280, 720, &[7.5, 5.0]),
                    (1280, 960, &[7.5, 5.0]),
                ]),
            ),
            format(
                Fourcc::MJPG,
                "Motion-JPEG",
                discrete(&[
                    (640, 480, ALL_UVC),
                    (160, 120, ALL_UVC),
                    (800, 600, ALL_UVC),
                    (960, 720, ALL_UVC),
                    (1280, 720, ALL_UVC),
                    (1280, 960, ALL_UVC),
                ]),
            ),
        ]
    }

    fn only_mjpeg() -> Vec<FormatDesc> {
        vec![format(
            Fourcc::MJPG,
            "Motion-JPEG",
            discrete(&[(1920, 1080, &[30.0]), (1280, 720, &[60.0, 30.0])]),
        )]
    }

    /// A cheap 720p camera: YUYV only, and only 5 fps at its full size.
    fn slow_yuyv() -> Vec<FormatDesc> {
        vec![format(
            Fourcc::YUYV,
            "YUYV 4:2:2",
            discrete(&[(1280, 720, &[5.0]), (640, 480, &[30.0, 15.0])]),
        )]
    }

    /// Like the Pi camera through the legacy bcm2835-v4l2 driver: any size in
    /// steps, rates as a range.
    fn stepwise() -> Vec<FormatDesc> {
        let range = SizeRange {
            min_width: 32,
            max_width: 2592,
            step_width: 2,
            min_height: 32,
            max_height: 1944,
            step_height: 2,
        };
        let rates = Rates::Stepwise {
            min: Interval::new(1, 90),
            max: Interval::new(1, 1),
            step: Interval::new(1, 1),
        };
        vec![
            format(
                Fourcc::YU12,
                "Planar YUV 4:2:0",
                vec![FrameSize::Stepwise {
                    range,
                    rates: rates.clone(),
                    rates_at: (640, 480),
                }],
            ),
            format(
                Fourcc::JPEG,
                "JFIF JPEG",
                vec![FrameSize::Stepwise {
                    range,
                    rates,
                    rates_at: (640, 480),
                }],
            ),
        ]
    }

    fn request(width: u32, height: u32, fps: u32) -> Request {
        Request { width, height, fps }
    }

    /// (what, camera, requested WxH@fps, expected choice, reaches the rate)
    type Case = (
        &'static str,
        fn() -> Vec<FormatDesc>,
        (u32, u32, u32),
        &'static str,
        Option<bool>,
    );

    #[rustfmt::skip]
    const CASES: &[Case] = &[
        ("c270 vga", c270, (640, 480, 30), "YUYV 640x480@30", Some(true)),
        ("c270 vga 15", c270, (640, 480, 15), "YUYV 640x480@15", Some(true)),
        ("c270 vga 12: 15, thinned", c270, (640, 480, 12), "YUYV 640x480@15", Some(true)),
        ("c270 720p: yuyv too slow", c270, (1280, 720, 30), "MJPEG 1280x720@30", Some(true)),
        ("c270 720p at 5: yuyv", c270, (1280, 720, 5), "YUYV 1280x720@5", Some(true)),
        ("c270 800x600@20: yuyv", c270, (800, 600, 20), "YUYV 800x600@20", Some(true)),
        ("c270 800x600@25: mjpeg", c270, (800, 600, 25), "MJPEG 800x600@25", Some(true)),
        // 640x360 (16:9): no exact size; 1280x720 has the same aspect.
        ("c270 640x360", c270, (640, 360, 30), "MJPEG 1280x720@30", Some(true)),
        // More than it has: the largest, scaled up.
        ("c270 1080p", c270, (1920, 1080, 30), "MJPEG 1280x960@30", Some(true)),
        // No 4:3 size: the smallest that covers, cropped.
        ("mjpeg only vga", only_mjpeg, (640, 480, 30), "MJPEG 1280x720@30", Some(true)),
        ("mjpeg only 720p", only_mjpeg, (1280, 720, 30), "MJPEG 1280x720@30", Some(true)),
        ("mjpeg only 720p60", only_mjpeg, (1280, 720, 60), "MJPEG 1280x720@60", Some(true)),
        // Size beats rate: nothing reaches 30 at 720p, so its best.
        ("slow yuyv 720p", slow_yuyv, (1280, 720, 30), "YUYV 1280x720@5", Some(false)),
        ("slow yuyv vga", slow_yuyv, (640, 480, 30), "YUYV 640x480@30", Some(true)),
        ("stepwise vga", stepwise, (640, 480, 30), "YU12 640x480@30", Some(true)),
        ("stepwise 720p", stepwise, (1280, 720, 25), "YU12 1280x720@25", Some(true)),
        ("stepwise too big", stepwise, (3000, 2000, 30), "YU12 2592x1944@30", Some(true)),
    ];

    #[test]
    fn the_choice_follows_the_rules_for_real_format_lists() {
        for &(name, camera, (width, height, fps), expected, reaches) in CASES {
            let request = Request { width, height, fps };
            let choice = negotiate(&camera(), request).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(choice.to_string(), expected, "{name}");
            assert_eq!(choice.reaches_rate, reaches, "{name}");
        }
    }

    #[test]
    fn raw_formats_are_preferred_in_order_when_they_reach_the_rate() {
        let sizes = || discrete(&[(640, 480, &[30.0])]);
        let formats = vec![
            format(Fourcc::MJPG, "Motion-JPEG", sizes()),
            format(Fourcc::YU12, "Planar YUV 4:2:0", sizes()),
            format(Fourcc::NV12, "Y/UV 4:2:0", sizes()),
            format(Fourcc::YUYV, "YUYV 4:2:2", sizes()),
        ];
        let pick = |formats: &[FormatDesc]| negotiate(formats, request(640, 480, 30)).unwrap();
        assert_eq!(pick(&formats).format, PixelFormat::Yuyv);
        assert_eq!(pick(&formats[..3]).format, PixelFormat::Nv12);
        assert_eq!(pick(&formats[..2]).format, PixelFormat::Yu12);
        assert_eq!(pick(&formats[..1]).format, PixelFormat::Mjpeg);
    }

    #[test]
    fn when_nothing_reaches_the_rate_the_fastest_format_wins() {
        let formats = vec![
            format(Fourcc::YUYV, "YUYV", discrete(&[(1280, 720, &[7.5, 5.0])])),
            format(
                Fourcc::MJPG,
                "MJPEG",
                discrete(&[(1280, 720, &[15.0, 10.0])]),
            ),
        ];
        let c = negotiate(&formats, request(1280, 720, 30)).unwrap();
        assert_eq!(c.to_string(), "MJPEG 1280x720@15");
        assert_eq!(c.reaches_rate, Some(false));
        // 7.5 fps as UVC gives it prints as 7.5.
        let c = negotiate(&formats[..1], request(1280, 720, 30)).unwrap();
        assert_eq!(c.to_string(), "YUYV 1280x720@7.5");
    }

    #[test]
    fn nothing_convertible_is_a_clear_error_listing_the_offer() {
        let formats = vec![
            format(
                Fourcc(*b"H264"),
                "H.264",
                discrete(&[(1920, 1080, &[30.0])]),
            ),
            format(
                Fourcc(*b"GREY"),
                "8-bit Greyscale",
                discrete(&[(640, 480, &[30.0])]),
            ),
        ];
        let e = negotiate(&formats, request(640, 480, 30)).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("H264 1920x1080; GREY 640x480"), "{text}");
        assert!(text.contains("YUYV, NV12, YU12 and MJPEG"), "{text}");
        let e = negotiate(&[], request(640, 480, 30)).unwrap_err();
        assert!(e.to_string().contains("offers: nothing"), "{e}");
    }

    #[test]
    fn odd_and_empty_sizes_are_not_candidates() {
        let formats = vec![format(
            Fourcc::YUYV,
            "YUYV",
            discrete(&[(641, 481, &[30.0]), (0, 0, &[30.0])]),
        )];
        assert!(negotiate(&formats, request(640, 480, 30)).is_err());
        let formats = vec![format(
            Fourcc::YUYV,
            "YUYV",
            discrete(&[(641, 481, &[30.0]), (320, 240, &[30.0])]),
        )];
        let c = negotiate(&formats, request(640, 480, 30)).unwrap();
        assert_eq!(
            (c.width, c.height),
            (320, 240),
            "the largest usable, scaled up"
        );
    }

    #[test]
    fn unknown_rates_rank_between_reaching_and_too_slow() {
        let formats = vec![
            format(
                Fourcc::YUYV,
                "YUYV",
                vec![FrameSize::Discrete {
                    width: 640,
                    height: 480,
                    rates: Rates::Unknown,
                }],
            ),
            format(Fourcc::MJPG, "MJPEG", discrete(&[(640, 480, &[10.0])])),
        ];
        let c = negotiate(&formats, request(640, 480, 30)).unwrap();
        assert_eq!(c.to_string(), "YUYV 640x480@30");
        assert_eq!(c.reaches_rate, None);
        let formats = vec![
            formats[0].clone(),
            format(Fourcc::MJPG, "MJPEG", discrete(&[(640, 480, &[30.0])])),
        ];
        assert_eq!(
            negotiate(&formats, request(640, 480, 30)).unwrap().format,
            PixelFormat::Mjpeg
        );
    }

    #[test]
    fn stepwise_rates_pick_the_request_or_the_nearest_end() {
        let r = Rates::Stepwise {
            min: Interval::new(1, 30),
            max: Interval::new(1, 10),
            step: Interval::new(1, 1),
        };
        let p = pick_rate(&r, 15);
        assert_eq!(
            (p.interval, p.status),
            (Interval::new(1, 15), RateStatus::Reaches)
        );
        let p = pick_rate(&r, 60);
        assert_eq!(
            (p.interval, p.status),
            (Interval::new(1, 30), RateStatus::Below)
        );
        let p = pick_rate(&r, 5);
        assert_eq!(
            (p.interval, p.status),
            (Interval::new(1, 10), RateStatus::Reaches)
        );
    }

    #[test]
    fn stepwise_sizes_fit_to_even_steps_within_the_range() {
        let r = SizeRange {
            min_width: 48,
            max_width: 1000,
            step_width: 16,
            min_height: 33,
            max_height: 999,
            step_height: 3,
        };
        // 640 = 48 + 37*16 and 480 = 33 + 149*3 fit exactly.
        assert_eq!(r.fit(640, 480), Some((640, 480)));
        // 481 rounds up to 483, odd, so on to 486.
        assert_eq!(r.fit(640, 481), Some((640, 486)));
        assert_eq!(r.fit(4000, 10), Some((992, 36)));
        let odd_only = SizeRange {
            min_width: 1,
            max_width: 1,
            step_width: 1,
            min_height: 1,
            max_height: 1,
            step_height: 1,
        };
        assert_eq!(odd_only.fit(640, 480), None);
        let broken = SizeRange {
            min_width: 100,
            max_width: 10,
            ..odd_only
        };
        assert_eq!(broken.fit(640, 480), None);
    }

    #[test]
    fn degenerate_intervals_do_not_divide_by_zero() {
        let formats = vec![FormatDesc {
            fourcc: Fourcc::YUYV,
            description: "YUYV".into(),
            sizes: vec![FrameSize::Discrete {
                width: 640,
                height: 480,
                rates: Rates::Discrete(vec![Interval::new(0, 30), Interval::new(1, 0)]),
            }],
        }];
        let c = negotiate(&formats, request(640, 480, 30)).unwrap();
        assert_eq!(c.reaches_rate, None);
        assert_eq!(c.interval, Interval::from_fps(30));
    }

    #[test]
    fn fourccs_print_readably() {
        assert_eq!(Fourcc::MJPG.to_string(), "MJPG");
        assert_eq!(Fourcc(*b"Y16 ").to_string(), "Y16");
        assert_eq!(Fourcc([0, 1, 2, 3]).to_string(), "0x03020100");
        assert_eq!(fps_text(30.0), "30");
        assert_eq!(fps_text(7.5), "7.5");
        assert_eq!(fps_text(29.97), "29.97");
    }

    #[test]
    fn format_lists_print_one_size_per_line() {
        let text = c270()[1].to_string();
        assert!(text.starts_with("MJPG (Motion-JPEG)\n    640x480: 30, 25, 20, 15, 10, 7.5, 5 fps"));
        let text = stepwise()[0].to_string();
        assert!(
            text.contains("32x32 to 2592x1944 in steps of 2x2: 1-90 fps at 640x480"),
            "{text}"
        );
        let grey = format(Fourcc(*b"GREY"), "Greyscale", vec![]);
        assert!(grey.to_string().contains("not usable"));
    }

    #[test]
    fn a_faster_camera_is_thinned_to_the_configured_rate() {
        let t0 = Instant::now();
        let at = |ms: f64| t0 + Duration::from_secs_f64(ms / 1000.0);
        // 30 fps camera, 15 configured: every other frame.
        let mut d = FrameDecimator::new(15);
        let kept = (0..30).filter(|&i| d.accept(at(i as f64 * 33.333))).count();
        assert_eq!(kept, 15);
        // 30 -> 20: two of three, over a second.
        let mut d = FrameDecimator::new(20);
        let kept = (0..30).filter(|&i| d.accept(at(i as f64 * 33.333))).count();
        assert_eq!(kept, 20);
        // Same rate with jitter: nothing lost.
        let mut d = FrameDecimator::new(30);
        let kept = (0..300)
            .filter(|&i| {
                let jitter = if i % 2 == 0 { 4.0 } else { -4.0 };
                d.accept(at(i as f64 * 33.333 + jitter))
            })
            .count();
        assert_eq!(kept, 300);
    }

    #[test]
    fn after_a_stall_the_decimator_does_not_burst() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut d = FrameDecimator::new(10);
        assert!(d.accept(at(0)));
        // A second of nothing, then a 30 fps camera again.
        let kept = (0..10).filter(|&i| d.accept(at(1000 + i * 33))).count();
        assert!(kept <= 4, "kept {kept} of 10 frames in 330 ms at 10 fps");
    }
}
