//! The camera module's tests.

use super::capture::*;
use super::clock::*;
use super::error::*;
use super::ioctl::*;
use super::list::*;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use v4l::buffer::{Flags as BufferFlags, Metadata};

use crate::media::convert::CameraConverter;
use crate::media::negotiate::{FormatDesc, Fourcc, FrameSize, Interval, PixelFormat, Rates};
use crate::media::{Frame, MediaError};

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
    let mut c = CameraConverter::new(PixelFormat::Yuyv, 320, 240, 640, (320, 240)).unwrap();
    let mut out = Frame::new(320, 240);
    c.convert(&yuyv, &mut out).unwrap();
    assert_eq!(out.data, picture.data);
    let mut c = CameraConverter::new(PixelFormat::Yuyv, 320, 240, 640, (160, 120)).unwrap();
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
    let mut c = CameraConverter::new(PixelFormat::Mjpeg, 640, 480, 0, (640, 480)).unwrap();
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
