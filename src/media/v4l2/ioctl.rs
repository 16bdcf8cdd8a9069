//! The V4L2 ioctls the doorbell makes, some read leniently where the `v4l`
//! crate's own versions panic on what real drivers return (a card name or
//! format description that is not UTF-8, a colour space newer than it knows).

use std::io;
use std::path::Path;

use v4l::buffer::Type as BufferType;
use v4l::device::Device;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::{v4l2, v4l_sys, Fraction};

use crate::media::negotiate::{
    Choice, FormatDesc, Fourcc, FrameSize, Interval, PixelFormat, Rates, SizeRange,
};

use super::error::*;

pub(super) fn open_device(path: &Path) -> Result<Device, ProbeError> {
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

pub(super) struct Caps {
    pub(super) driver: String,
    pub(super) card: String,
    pub(super) bus: String,
    /// The node's own capabilities (`device_caps`).
    pub(super) flags: u32,
}

pub(super) const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
pub(super) const CAP_VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
pub(super) const CAP_VIDEO_M2M_MPLANE: u32 = 0x0000_4000;
pub(super) const CAP_VIDEO_M2M: u32 = 0x0000_8000;
pub(super) const CAP_META_CAPTURE: u32 = 0x0080_0000;
pub(super) const CAP_STREAMING: u32 = 0x0400_0000;
pub(super) const CAP_DEVICE_CAPS: u32 = 0x8000_0000;

/// VIDIOC_QUERYCAP, read leniently: the `v4l` crate's version panics on a
/// card name that is not UTF-8 (a USB product string cut at 32 bytes can be).
pub(super) fn query_caps(device: &Device) -> io::Result<Caps> {
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

pub(super) fn c_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_string()
}

pub(super) fn check_capture(path: &Path, caps: &Caps) -> Result<(), ProbeError> {
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
pub(super) fn enum_formats(device: &Device) -> Vec<(Fourcc, String)> {
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
pub(super) fn read_formats(device: &Device, request: Option<(u32, u32)>) -> Vec<FormatDesc> {
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

pub(super) fn read_rates(device: &Device, code: v4l::FourCC, width: u32, height: u32) -> Rates {
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
pub(super) struct SetFormat {
    pub(super) fourcc: Fourcc,
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) stride: u32,
}

pub(super) const V4L2_FIELD_NONE: u32 = 1;

/// VIDIOC_S_FMT, read leniently (the crate's version panics on colour space
/// values newer than it knows).
pub(super) fn set_format(device: &Device, choice: &Choice) -> io::Result<SetFormat> {
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
pub(super) fn set_rate(device: &Device, interval: Interval) -> Option<Interval> {
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
