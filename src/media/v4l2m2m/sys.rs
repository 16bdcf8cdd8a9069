//! The few structs, constants and ioctl numbers of the kernel's V4L2
//! interface (`linux/videodev2.h`, `linux/v4l2-controls.h`) that a stateful
//! memory-to-memory encoder needs, written out by hand so that the hardware
//! encoder builds without libclang and without the `camera` feature.
//!
//! The layouts are those of 64-bit Linux (x86_64, aarch64: the same sizes
//! and offsets); the unit tests check each struct's size against the
//! kernel's. A 32-bit build (armv7) lays out pointers and `timeval`
//! differently, so [`super::device::RealDevice`] is only built for 64-bit
//! targets.

#![allow(non_camel_case_types)]

// Capabilities (`v4l2_capability.capabilities`, `device_caps`).
pub const CAP_VIDEO_M2M_MPLANE: u32 = 0x0000_4000;
pub const CAP_VIDEO_M2M: u32 = 0x0000_8000;
pub const CAP_STREAMING: u32 = 0x0400_0000;
pub const CAP_DEVICE_CAPS: u32 = 0x8000_0000;

// `enum v4l2_buf_type`, `enum v4l2_memory`, `enum v4l2_field`.
pub const BUF_TYPE_VIDEO_CAPTURE_MPLANE: u32 = 9;
pub const BUF_TYPE_VIDEO_OUTPUT_MPLANE: u32 = 10;
pub const MEMORY_MMAP: u32 = 1;
pub const FIELD_NONE: u32 = 1;

// `v4l2_buffer.flags`.
pub const BUF_FLAG_KEYFRAME: u32 = 0x0000_0008;
pub const BUF_FLAG_ERROR: u32 = 0x0000_0040;

/// A V4L2 four-character code, as `v4l2_fourcc()` makes it.
pub const fn fourcc(code: &[u8; 4]) -> u32 {
    (code[0] as u32) | (code[1] as u32) << 8 | (code[2] as u32) << 16 | (code[3] as u32) << 24
}

/// The four characters of a code, for messages.
pub fn fourcc_name(code: u32) -> String {
    code.to_le_bytes()
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

pub const PIX_FMT_H264: u32 = fourcc(b"H264");
/// I420: the Y plane, then U, then V, in one buffer.
pub const PIX_FMT_YUV420: u32 = fourcc(b"YU12");

// Codec controls (`V4L2_CTRL_CLASS_CODEC`, formerly `_MPEG`).
pub const CTRL_CLASS_CODEC: u32 = 0x0099_0000;
const CID_CODEC_BASE: u32 = CTRL_CLASS_CODEC | 0x900;
pub const CID_MPEG_VIDEO_GOP_SIZE: u32 = CID_CODEC_BASE + 203;
pub const CID_MPEG_VIDEO_BITRATE_MODE: u32 = CID_CODEC_BASE + 206;
pub const CID_MPEG_VIDEO_BITRATE: u32 = CID_CODEC_BASE + 207;
pub const CID_MPEG_VIDEO_REPEAT_SEQ_HEADER: u32 = CID_CODEC_BASE + 226;
pub const CID_MPEG_VIDEO_FORCE_KEY_FRAME: u32 = CID_CODEC_BASE + 229;
pub const CID_MPEG_VIDEO_H264_I_PERIOD: u32 = CID_CODEC_BASE + 358;
pub const CID_MPEG_VIDEO_H264_LEVEL: u32 = CID_CODEC_BASE + 359;
pub const CID_MPEG_VIDEO_H264_PROFILE: u32 = CID_CODEC_BASE + 363;
pub const CID_MPEG_VIDEO_PREPEND_SPSPPS_TO_IDR: u32 = CID_CODEC_BASE + 644;

pub const BITRATE_MODE_VBR: i32 = 0;
pub const BITRATE_MODE_CBR: i32 = 1;
pub const H264_PROFILE_BASELINE: i32 = 0;
pub const H264_PROFILE_CONSTRAINED_BASELINE: i32 = 1;
pub const H264_LEVEL_3_1: i32 = 9;
pub const H264_LEVEL_4_0: i32 = 11;
pub const H264_LEVEL_4_2: i32 = 13;

/// The name of a control, for logs and messages.
pub fn control_name(id: u32) -> &'static str {
    match id {
        CID_MPEG_VIDEO_GOP_SIZE => "GOP size",
        CID_MPEG_VIDEO_BITRATE_MODE => "bitrate mode",
        CID_MPEG_VIDEO_BITRATE => "bitrate",
        CID_MPEG_VIDEO_REPEAT_SEQ_HEADER => "repeat sequence header",
        CID_MPEG_VIDEO_FORCE_KEY_FRAME => "force key frame",
        CID_MPEG_VIDEO_H264_I_PERIOD => "H.264 I period",
        CID_MPEG_VIDEO_H264_LEVEL => "H.264 level",
        CID_MPEG_VIDEO_H264_PROFILE => "H.264 profile",
        CID_MPEG_VIDEO_PREPEND_SPSPPS_TO_IDR => "prepend SPS and PPS to IDR",
        _ => "control",
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_capability {
    pub driver: [u8; 16],
    pub card: [u8; 32],
    pub bus_info: [u8; 32],
    pub version: u32,
    pub capabilities: u32,
    pub device_caps: u32,
    pub reserved: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_fmtdesc {
    pub index: u32,
    pub type_: u32,
    pub flags: u32,
    pub description: [u8; 32],
    pub pixelformat: u32,
    pub mbus_code: u32,
    pub reserved: [u32; 3],
}

#[repr(C, packed)]
#[derive(Clone, Copy)]
pub struct v4l2_plane_pix_format {
    pub sizeimage: u32,
    pub bytesperline: u32,
    pub reserved: [u16; 6],
}

#[repr(C, packed)]
#[derive(Clone, Copy)]
pub struct v4l2_pix_format_mplane {
    pub width: u32,
    pub height: u32,
    pub pixelformat: u32,
    pub field: u32,
    pub colorspace: u32,
    pub plane_fmt: [v4l2_plane_pix_format; 8],
    pub num_planes: u8,
    pub flags: u8,
    pub ycbcr_enc: u8,
    pub quantization: u8,
    pub xfer_func: u8,
    pub reserved: [u8; 7],
}

/// `v4l2_format.fmt`: 200 bytes, aligned for the pointers of the overlay
/// format it also holds.
#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_format_fmt {
    pub pix_mp: v4l2_pix_format_mplane,
    pub raw_data: [u8; 200],
    _align: [u64; 25],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_format {
    pub type_: u32,
    pub fmt: v4l2_format_fmt,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_fract {
    pub numerator: u32,
    pub denominator: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_outputparm {
    pub capability: u32,
    pub outputmode: u32,
    pub timeperframe: v4l2_fract,
    pub extendedmode: u32,
    pub writebuffers: u32,
    pub reserved: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_streamparm_parm {
    pub output: v4l2_outputparm,
    pub raw_data: [u8; 200],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_streamparm {
    pub type_: u32,
    pub parm: v4l2_streamparm_parm,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_control {
    pub id: u32,
    pub value: i32,
}

/// One control of `VIDIOC_S_EXT_CTRLS`. The kernel's union of `value`,
/// `value64` and pointers is `value64` here: on a little-endian machine its
/// low four bytes are `value`.
#[repr(C, packed)]
#[derive(Clone, Copy)]
pub struct v4l2_ext_control {
    pub id: u32,
    pub size: u32,
    pub reserved2: [u32; 1],
    pub value64: i64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_ext_controls {
    /// `ctrl_class` or `which`.
    pub which: u32,
    pub count: u32,
    pub error_idx: u32,
    pub request_fd: i32,
    pub reserved: [u32; 1],
    pub controls: *mut v4l2_ext_control,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_requestbuffers {
    pub count: u32,
    pub type_: u32,
    pub memory: u32,
    pub capabilities: u32,
    pub flags: u8,
    pub reserved: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct timeval {
    pub tv_sec: i64,
    pub tv_usec: i64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_timecode {
    pub type_: u32,
    pub flags: u32,
    pub frames: u8,
    pub seconds: u8,
    pub minutes: u8,
    pub hours: u8,
    pub userbits: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_plane_m {
    pub mem_offset: u32,
    pub userptr: u64,
    pub fd: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_plane {
    pub bytesused: u32,
    pub length: u32,
    pub m: v4l2_plane_m,
    pub data_offset: u32,
    pub reserved: [u32; 11],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union v4l2_buffer_m {
    pub offset: u32,
    pub userptr: u64,
    pub planes: *mut v4l2_plane,
    pub fd: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct v4l2_buffer {
    pub index: u32,
    pub type_: u32,
    pub bytesused: u32,
    pub flags: u32,
    pub field: u32,
    pub timestamp: timeval,
    pub timecode: v4l2_timecode,
    pub sequence: u32,
    pub memory: u32,
    pub m: v4l2_buffer_m,
    /// For the multi-planar API: how many entries `m.planes` has.
    pub length: u32,
    pub reserved2: u32,
    pub request_fd: i32,
}

/// All-zero value of one of the structs above (the state the kernel
/// expects before the fields that matter are filled in).
pub fn zeroed<T: Copy>() -> T {
    // SAFETY: only used for the plain C structs of this module: integers,
    // byte arrays, unions of those and raw pointers, for which all-zero
    // bytes are a valid value (null pointers are never dereferenced here).
    unsafe { std::mem::zeroed() }
}

// `_IOC()` of asm-generic/ioctl.h, which x86_64 and aarch64 both use.
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | ((b'V' as u32) << 8) | nr
}

const fn ior<T>(nr: u32) -> u32 {
    ioc(IOC_READ, nr, std::mem::size_of::<T>())
}

const fn iow<T>(nr: u32) -> u32 {
    ioc(IOC_WRITE, nr, std::mem::size_of::<T>())
}

const fn iowr<T>(nr: u32) -> u32 {
    ioc(IOC_READ | IOC_WRITE, nr, std::mem::size_of::<T>())
}

pub const VIDIOC_QUERYCAP: u32 = ior::<v4l2_capability>(0);
pub const VIDIOC_ENUM_FMT: u32 = iowr::<v4l2_fmtdesc>(2);
pub const VIDIOC_S_FMT: u32 = iowr::<v4l2_format>(5);
pub const VIDIOC_REQBUFS: u32 = iowr::<v4l2_requestbuffers>(8);
pub const VIDIOC_QUERYBUF: u32 = iowr::<v4l2_buffer>(9);
pub const VIDIOC_QBUF: u32 = iowr::<v4l2_buffer>(15);
pub const VIDIOC_DQBUF: u32 = iowr::<v4l2_buffer>(17);
pub const VIDIOC_STREAMON: u32 = iow::<i32>(18);
pub const VIDIOC_STREAMOFF: u32 = iow::<i32>(19);
pub const VIDIOC_S_PARM: u32 = iowr::<v4l2_streamparm>(22);
pub const VIDIOC_S_CTRL: u32 = iowr::<v4l2_control>(28);
pub const VIDIOC_S_EXT_CTRLS: u32 = iowr::<v4l2_ext_controls>(72);

#[cfg(all(test, target_pointer_width = "64"))]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// Sizes and offsets as the kernel's headers give them on x86_64 and
    /// aarch64 (checked with a C program against linux/videodev2.h).
    #[test]
    fn structs_have_the_kernels_sizes_and_offsets() {
        assert_eq!(size_of::<v4l2_capability>(), 104);
        assert_eq!(size_of::<v4l2_fmtdesc>(), 64);
        assert_eq!(size_of::<v4l2_plane_pix_format>(), 20);
        assert_eq!(size_of::<v4l2_pix_format_mplane>(), 192);
        assert_eq!(size_of::<v4l2_format>(), 208);
        assert_eq!(offset_of!(v4l2_format, fmt), 8);
        assert_eq!(size_of::<v4l2_streamparm>(), 204);
        assert_eq!(size_of::<v4l2_control>(), 8);
        assert_eq!(size_of::<v4l2_ext_control>(), 20);
        assert_eq!(size_of::<v4l2_ext_controls>(), 32);
        assert_eq!(offset_of!(v4l2_ext_controls, controls), 24);
        assert_eq!(size_of::<v4l2_requestbuffers>(), 20);
        assert_eq!(size_of::<v4l2_plane>(), 64);
        assert_eq!(offset_of!(v4l2_plane, m), 8);
        assert_eq!(offset_of!(v4l2_plane, data_offset), 16);
        assert_eq!(size_of::<v4l2_buffer>(), 88);
        assert_eq!(offset_of!(v4l2_buffer, timestamp), 24);
        assert_eq!(offset_of!(v4l2_buffer, sequence), 56);
        assert_eq!(offset_of!(v4l2_buffer, memory), 60);
        assert_eq!(offset_of!(v4l2_buffer, m), 64);
        assert_eq!(offset_of!(v4l2_buffer, length), 72);
        assert_eq!(offset_of!(v4l2_buffer, request_fd), 80);
    }

    /// The numbers `VIDIOC_*` expand to in linux/videodev2.h.
    #[test]
    fn ioctl_numbers_are_the_kernels() {
        assert_eq!(VIDIOC_QUERYCAP, 0x8068_5600);
        assert_eq!(VIDIOC_ENUM_FMT, 0xc040_5602);
        assert_eq!(VIDIOC_S_FMT, 0xc0d0_5605);
        assert_eq!(VIDIOC_REQBUFS, 0xc014_5608);
        assert_eq!(VIDIOC_QUERYBUF, 0xc058_5609);
        assert_eq!(VIDIOC_QBUF, 0xc058_560f);
        assert_eq!(VIDIOC_DQBUF, 0xc058_5611);
        assert_eq!(VIDIOC_STREAMON, 0x4004_5612);
        assert_eq!(VIDIOC_STREAMOFF, 0x4004_5613);
        assert_eq!(VIDIOC_S_PARM, 0xc0cc_5616);
        assert_eq!(VIDIOC_S_CTRL, 0xc008_561c);
        assert_eq!(VIDIOC_S_EXT_CTRLS, 0xc020_5648);
    }

    #[test]
    fn control_ids_and_fourccs_are_the_kernels() {
        assert_eq!(CID_MPEG_VIDEO_BITRATE, 0x0099_09cf);
        assert_eq!(CID_MPEG_VIDEO_BITRATE_MODE, 0x0099_09ce);
        assert_eq!(CID_MPEG_VIDEO_H264_PROFILE, 0x0099_0a6b);
        assert_eq!(CID_MPEG_VIDEO_H264_LEVEL, 0x0099_0a67);
        assert_eq!(CID_MPEG_VIDEO_H264_I_PERIOD, 0x0099_0a66);
        assert_eq!(CID_MPEG_VIDEO_GOP_SIZE, 0x0099_09cb);
        assert_eq!(CID_MPEG_VIDEO_REPEAT_SEQ_HEADER, 0x0099_09e2);
        assert_eq!(CID_MPEG_VIDEO_PREPEND_SPSPPS_TO_IDR, 0x0099_0b84);
        assert_eq!(CID_MPEG_VIDEO_FORCE_KEY_FRAME, 0x0099_09e5);
        assert_eq!(PIX_FMT_H264, 0x3436_3248);
        assert_eq!(PIX_FMT_YUV420, 0x3231_5559);
        assert_eq!(fourcc_name(PIX_FMT_H264), "H264");
    }
}
