//! The hardware H.264 encoder (`video.encoder = "v4l2m2m"` or `auto`),
//! against `FakeM2m`, a scripted device that answers like the Raspberry
//! Pi's `bcm2835-codec` driver. No encoder device here: the real device
//! path is only tried on nodes that are not encoders (`/dev/null`, a path
//! that does not exist).
//!
//! - the whole ioctl sequence of open, three frames, a forced IDR and the
//!   teardown, call by call;
//! - the controls as set, and the fallbacks when the driver refuses some;
//! - pictures copied at the driver's row stride;
//! - every scripted failure is a clear error, and the device is closed;
//! - `auto` falls back to OpenH264 and still encodes; `v4l2m2m` without a
//!   device is an error that names it.

use doorbell::media::encoder;
use doorbell::media::h264::nal_types;
use doorbell::media::v4l2m2m::fake::{Call, FakeHandle, FakeM2m, Script, Step};
use doorbell::media::v4l2m2m::*;
use doorbell::media::{EncoderSettings, Frame, MediaError};
use doorbell::spec::media::EncoderSpec;
use std::path::Path;
use std::time::Duration;

const W: usize = 100;
const H: usize = 60;
/// The fake rounds rows up to 32 bytes.
const STRIDE: usize = 128;
const PICTURE: u32 = (STRIDE * H * 3 / 2) as u32;

fn settings() -> EncoderSettings {
    EncoderSettings {
        width: W,
        height: H,
        fps: 30,
        bitrate_kbps: 500,
        keyframe_interval: Duration::from_secs(10),
        encoder: EncoderSpec::V4l2m2m("/dev/video11".into()),
    }
}

fn open_with(
    script: Script,
    s: &EncoderSettings,
) -> (Result<V4l2m2mEncoder, MediaError>, FakeHandle) {
    let (fake, handle) = FakeM2m::new(script);
    (
        V4l2m2mEncoder::with_device(Box::new(fake), "/dev/video11", s),
        handle,
    )
}

fn open(script: Script) -> (V4l2m2mEncoder, FakeHandle) {
    let (encoder, handle) = open_with(script, &settings());
    (encoder.expect("the fake opens"), handle)
}

/// A picture whose every byte says where it is.
fn frame(n: u8) -> Frame {
    let mut f = Frame::new(W, H);
    for (i, b) in f.data.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(7).wrapping_add(n) | 1;
    }
    f
}

fn set_up_calls(s: &EncoderSettings) -> Vec<Call> {
    use Queue::{Capture as C, Output as O};
    let (w, h) = (s.width as u32, s.height as u32);
    let mut calls = vec![
        Call::QueryCap,
        Call::SFmt(
            C,
            PixFormat {
                width: w,
                height: h,
                fourcc: PIX_FMT_H264,
                bytesperline: 0,
                sizeimage: CAPTURE_SIZE,
            },
        ),
        Call::SFmt(
            O,
            PixFormat {
                width: w,
                height: h,
                fourcc: PIX_FMT_YUV420,
                bytesperline: w,
                sizeimage: w * h * 3 / 2,
            },
        ),
        Call::SParm(O, 30),
        Call::SCtrl(CID_MPEG_VIDEO_BITRATE, 500_000),
        Call::SCtrl(CID_MPEG_VIDEO_BITRATE_MODE, BITRATE_MODE_CBR),
        Call::SCtrl(
            CID_MPEG_VIDEO_H264_PROFILE,
            H264_PROFILE_CONSTRAINED_BASELINE,
        ),
        Call::SCtrl(CID_MPEG_VIDEO_H264_LEVEL, H264_LEVEL_3_1),
        Call::SCtrl(CID_MPEG_VIDEO_H264_I_PERIOD, 300),
        Call::SCtrl(CID_MPEG_VIDEO_GOP_SIZE, 300),
        Call::SCtrl(CID_MPEG_VIDEO_REPEAT_SEQ_HEADER, 1),
        Call::SCtrl(CID_MPEG_VIDEO_PREPEND_SPSPPS_TO_IDR, 1),
        Call::ReqBufs(O, OUTPUT_BUFFERS),
        Call::ReqBufs(C, CAPTURE_BUFFERS),
    ];
    for i in 0..OUTPUT_BUFFERS {
        calls.extend([Call::QueryBuf(O, i), Call::Mmap(O, i)]);
    }
    for i in 0..CAPTURE_BUFFERS {
        calls.extend([Call::QueryBuf(C, i), Call::Mmap(C, i)]);
    }
    calls.extend((0..CAPTURE_BUFFERS).map(|i| Call::QBuf(C, i, 0)));
    calls.extend([Call::StreamOn(O), Call::StreamOn(C)]);
    calls
}

/// One frame: the picture out; a wait, which finds the picture consumed
/// (its buffer is taken back at once) and the access unit ready; the
/// stream buffer back to the driver; the picture queue checked again.
fn frame_calls(output: u32, capture: u32) -> Vec<Call> {
    use Queue::{Capture as C, Output as O};
    vec![
        Call::QBuf(O, output, PICTURE),
        Call::DqBuf(C, None),
        Call::Poll,
        Call::DqBuf(O, Some(output)),
        Call::DqBuf(O, None),
        Call::DqBuf(C, Some(capture)),
        Call::QBuf(C, capture, 0),
        Call::DqBuf(O, None),
    ]
}

fn teardown_calls() -> Vec<Call> {
    use Queue::{Capture as C, Output as O};
    let mut calls = vec![Call::StreamOff(O), Call::StreamOff(C)];
    calls.extend((0..OUTPUT_BUFFERS).map(|i| Call::Munmap(O, i)));
    calls.extend((0..CAPTURE_BUFFERS).map(|i| Call::Munmap(C, i)));
    calls.extend([Call::ReqBufs(O, 0), Call::ReqBufs(C, 0), Call::Close]);
    calls
}

#[test]
fn open_three_frames_a_forced_idr_and_drop_make_exactly_the_kernels_sequence() {
    let (mut enc, fake) = open(Script::default());
    assert_eq!(fake.calls(), set_up_calls(&settings()));

    let mut units = Vec::new();
    for n in 0..3 {
        units.push(enc.encode(&frame(n)).unwrap().expect("a frame"));
    }
    enc.force_keyframe();
    units.push(enc.encode(&frame(3)).unwrap().expect("a frame"));
    drop(enc);

    let mut expected = set_up_calls(&settings());
    expected.extend(frame_calls(0, 0));
    expected.extend(frame_calls(0, 1));
    expected.extend(frame_calls(0, 2));
    expected.push(Call::SCtrl(CID_MPEG_VIDEO_FORCE_KEY_FRAME, 1));
    expected.extend(frame_calls(0, 3));
    expected.extend(teardown_calls());
    assert_eq!(fake.calls(), expected);

    let kinds: Vec<(Vec<u8>, bool)> = units
        .iter()
        .map(|u| (nal_types(&u.data), u.keyframe))
        .collect();
    assert_eq!(
        kinds,
        [
            (vec![7, 8, 5], true),
            (vec![1], false),
            (vec![1], false),
            (vec![7, 8, 5], true),
        ],
        "SPS and PPS with every IDR; the forced frame is one"
    );
    // The frame number the fake put in each slice: nothing lost or reordered.
    let numbers: Vec<u8> = units.iter().map(|u| *u.data.last().unwrap()).collect();
    assert_eq!(numbers, [0, 1, 2, 3]);
}

#[test]
fn the_controls_are_set_as_configured() {
    let (_enc, fake) = open(Script::default());
    assert_eq!(fake.control(CID_MPEG_VIDEO_BITRATE), Some(500_000));
    assert_eq!(
        fake.control(CID_MPEG_VIDEO_BITRATE_MODE),
        Some(BITRATE_MODE_CBR)
    );
    assert_eq!(
        fake.control(CID_MPEG_VIDEO_H264_PROFILE),
        Some(H264_PROFILE_CONSTRAINED_BASELINE)
    );
    assert_eq!(
        fake.control(CID_MPEG_VIDEO_H264_LEVEL),
        Some(H264_LEVEL_3_1)
    );
    assert_eq!(fake.control(CID_MPEG_VIDEO_H264_I_PERIOD), Some(300));
    assert_eq!(fake.control(CID_MPEG_VIDEO_GOP_SIZE), Some(300));
    assert_eq!(fake.control(CID_MPEG_VIDEO_REPEAT_SEQ_HEADER), Some(1));
    assert_eq!(fake.control(CID_MPEG_VIDEO_PREPEND_SPSPPS_TO_IDR), Some(1));

    let big = EncoderSettings {
        width: 1920,
        height: 1080,
        bitrate_kbps: 4000,
        keyframe_interval: Duration::ZERO,
        ..settings()
    };
    let (enc, fake) = open_with(Script::default(), &big);
    enc.unwrap();
    assert_eq!(
        fake.control(CID_MPEG_VIDEO_H264_LEVEL),
        Some(H264_LEVEL_4_0)
    );
    assert_eq!(fake.control(CID_MPEG_VIDEO_BITRATE), Some(4_000_000));
    assert_eq!(
        fake.control(CID_MPEG_VIDEO_H264_I_PERIOD),
        None,
        "no period: keyframes only on request (the pipeline forces them)"
    );
}

#[test]
fn pictures_are_copied_at_the_drivers_stride() {
    let (mut enc, fake) = open(Script::default());
    let f = frame(5);
    enc.encode(&f).unwrap();
    let pictures = fake.pictures();
    let buffer = &pictures[0];
    assert_eq!(buffer.len(), PICTURE as usize);
    let (y, u, v) = f.planes();
    let chroma = STRIDE / 2;
    let u_at = STRIDE * H;
    let v_at = u_at + chroma * H / 2;
    for row in 0..H {
        let at = row * STRIDE;
        assert_eq!(
            &buffer[at..at + W],
            &y[row * W..(row + 1) * W],
            "Y row {row}"
        );
        assert!(buffer[at + W..at + STRIDE].iter().all(|&b| b == 0));
    }
    for row in 0..H / 2 {
        let (cw, at) = (W / 2, row * chroma);
        assert_eq!(
            &buffer[u_at + at..u_at + at + cw],
            &u[row * cw..(row + 1) * cw]
        );
        assert_eq!(
            &buffer[v_at + at..v_at + at + cw],
            &v[row * cw..(row + 1) * cw]
        );
    }
}

#[test]
fn a_picture_without_padding_is_copied_whole() {
    let s = EncoderSettings {
        width: 128,
        height: 64,
        ..settings()
    };
    let (enc, fake) = open_with(Script::default(), &s);
    let mut enc = enc.unwrap();
    let mut f = Frame::new(128, 64);
    f.data
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = i as u8);
    enc.encode(&f).unwrap();
    assert_eq!(fake.pictures()[0], f.data);
}

#[test]
fn refused_wishes_fall_back_and_are_not_fatal() {
    let script = Script {
        refuse: vec![
            (CID_MPEG_VIDEO_BITRATE_MODE, vec![BITRATE_MODE_CBR]),
            (
                CID_MPEG_VIDEO_H264_PROFILE,
                vec![H264_PROFILE_CONSTRAINED_BASELINE],
            ),
            (CID_MPEG_VIDEO_H264_LEVEL, vec![]),
            (CID_MPEG_VIDEO_H264_I_PERIOD, vec![]),
            (CID_MPEG_VIDEO_PREPEND_SPSPPS_TO_IDR, vec![]),
        ],
        ..Script::default()
    };
    let (mut enc, fake) = open(script);
    assert_eq!(
        fake.control(CID_MPEG_VIDEO_BITRATE_MODE),
        Some(BITRATE_MODE_VBR)
    );
    assert_eq!(
        fake.control(CID_MPEG_VIDEO_H264_PROFILE),
        Some(H264_PROFILE_BASELINE)
    );
    assert!(enc.encode(&frame(0)).unwrap().unwrap().keyframe);
}

/// A driver that sends SPS and PPS only once, at the start (no
/// `REPEAT_SEQ_HEADER`): a viewer who joins later still gets them with
/// every IDR, from the ones kept.
#[test]
fn without_repeated_headers_the_kept_sps_and_pps_go_before_each_idr() {
    let script = Script {
        refuse: vec![(CID_MPEG_VIDEO_REPEAT_SEQ_HEADER, vec![])],
        ..Script::default()
    };
    let (mut enc, _fake) = open(script);
    let first = enc.encode(&frame(0)).unwrap().unwrap();
    assert_eq!(nal_types(&first.data), [7, 8, 5]);
    enc.encode(&frame(1)).unwrap().unwrap();
    enc.force_keyframe();
    let idr = enc.encode(&frame(2)).unwrap().unwrap();
    assert_eq!(nal_types(&idr.data), [7, 8, 5]);
    assert!(idr.keyframe);
}

#[test]
fn sps_and_pps_in_a_buffer_of_their_own_join_the_idr() {
    let script = Script {
        headers_apart: true,
        refuse: vec![(CID_MPEG_VIDEO_REPEAT_SEQ_HEADER, vec![])],
        ..Script::default()
    };
    let (mut enc, _fake) = open(script);
    let first = enc.encode(&frame(0)).unwrap().unwrap();
    assert_eq!(nal_types(&first.data), [7, 8, 5]);
    assert!(first.keyframe);
    assert_eq!(
        nal_types(&enc.encode(&frame(1)).unwrap().unwrap().data),
        [1]
    );
}

#[test]
fn an_empty_stream_buffer_is_a_skipped_frame() {
    let script = Script {
        skip: vec![1],
        ..Script::default()
    };
    let (mut enc, _fake) = open(script);
    assert!(enc.encode(&frame(0)).unwrap().is_some());
    assert!(enc.encode(&frame(1)).unwrap().is_none(), "skipped");
    assert!(enc.encode(&frame(2)).unwrap().is_some(), "and on");
}

#[test]
fn a_wrong_sized_frame_is_an_error_not_a_crash() {
    let (mut enc, _fake) = open(Script::default());
    let e = enc.encode(&Frame::new(640, 480)).unwrap_err().to_string();
    assert!(e.contains("640x480"), "{e}");
}

/// Opens with `script`, which must fail (at open, or at the first frame
/// when `at_frame`); the message must contain `says`, and the device must
/// end closed.
fn fails(script: Script, at_frame: bool, says: &str) -> Vec<Call> {
    let (enc, fake) = open_with(script, &settings());
    let e = match enc {
        Ok(mut enc) => {
            assert!(at_frame, "opened, but should not have");
            let e = enc.encode(&frame(0)).unwrap_err();
            drop(enc);
            e
        }
        Err(e) => {
            assert!(!at_frame, "failed at open: {e}");
            e
        }
    };
    let text = e.to_string();
    assert!(text.starts_with("/dev/video11: "), "{text}");
    assert!(text.contains(says), "{text:?} should say {says:?}");
    let calls = fake.calls();
    assert_eq!(calls.last(), Some(&Call::Close), "{calls:?}");
    calls
}

#[test]
fn every_scripted_failure_is_a_clear_error_and_the_device_is_closed() {
    use Queue::{Capture as C, Output as O};
    const EINVAL: i32 = 22;
    const ENOTTY: i32 = 25;
    const ENOMEM: i32 = 12;
    const EIO: i32 = 5;
    fails(
        Script {
            fail: Some((Step::QueryCap, ENOTTY)),
            ..Script::default()
        },
        false,
        "not a V4L2 device",
    );
    fails(
        Script {
            caps: 0x1 | CAP_STREAMING, // a camera
            card: "USB camera".into(),
            ..Script::default()
        },
        false,
        "(USB camera) is not a memory-to-memory device",
    );
    fails(
        Script {
            caps: CAP_VIDEO_M2M | CAP_STREAMING,
            ..Script::default()
        },
        false,
        "single-planar",
    );
    fails(
        Script {
            coded_formats: vec![u32::from_le_bytes(*b"MJPG")],
            ..Script::default()
        },
        false,
        "not an H.264 encoder (it answered H.264 with MJPG)",
    );
    fails(
        Script {
            fail: Some((Step::SFmt(C), EINVAL)),
            ..Script::default()
        },
        false,
        "refused H.264 on its capture queue",
    );
    fails(
        Script {
            fail: Some((Step::SFmt(O), EINVAL)),
            ..Script::default()
        },
        false,
        "refused 100x60 I420 pictures",
    );
    let rounded = EncoderSettings {
        height: 1080,
        width: 1920,
        ..settings()
    };
    let (e, fake) = open_with(
        Script {
            height_align: 16,
            ..Script::default()
        },
        &rounded,
    );
    let e = e.err().expect("a size change is refused").to_string();
    assert!(e.contains("wants 1920x1088 pictures for 1920x1080"), "{e}");
    assert_eq!(fake.calls().last(), Some(&Call::Close));
    fails(
        Script {
            refuse: vec![(CID_MPEG_VIDEO_BITRATE, vec![])],
            ..Script::default()
        },
        false,
        "refused the bitrate 500000 bit/s",
    );
    fails(
        Script {
            refuse: vec![(CID_MPEG_VIDEO_H264_PROFILE, vec![])],
            ..Script::default()
        },
        false,
        "refused the Constrained Baseline and Baseline profiles",
    );
    let calls = fails(
        Script {
            fail: Some((Step::ReqBufs(C), ENOMEM)),
            ..Script::default()
        },
        false,
        "no stream buffers",
    );
    assert!(
        calls.ends_with(&[
            Call::ReqBufs(C, CAPTURE_BUFFERS),
            Call::ReqBufs(O, 0),
            Call::Close
        ]),
        "the picture buffers are freed: {calls:?}"
    );
    let calls = fails(
        Script {
            fail: Some((Step::Mmap, ENOMEM)),
            ..Script::default()
        },
        false,
        "cannot map a buffer",
    );
    assert!(!calls.contains(&Call::StreamOn(O)));
    let calls = fails(
        Script {
            fail: Some((Step::StreamOn, EINVAL)),
            ..Script::default()
        },
        false,
        "cannot start streaming",
    );
    assert!(calls.contains(&Call::Munmap(C, 3)), "{calls:?}");
    let calls = fails(
        Script {
            never_answer: true,
            ..Script::default()
        },
        true,
        "the hardware encoder did not answer in 1 s",
    );
    assert!(calls.contains(&Call::StreamOff(C)), "{calls:?}");
    fails(
        Script {
            error_flag: true,
            ..Script::default()
        },
        true,
        "the hardware encoder marked frame 1 as broken",
    );
    fails(
        Script {
            fail: Some((Step::Poll, EIO)),
            ..Script::default()
        },
        true,
        "poll: ",
    );
    fails(
        Script {
            fail: Some((Step::QBuf(O), EINVAL)),
            ..Script::default()
        },
        true,
        "refused a picture",
    );
}

#[test]
fn a_refused_forced_key_frame_is_an_error() {
    let script = Script {
        refuse: vec![(CID_MPEG_VIDEO_FORCE_KEY_FRAME, vec![])],
        ..Script::default()
    };
    let (mut enc, _fake) = open(script);
    enc.force_keyframe();
    let e = enc.encode(&frame(0)).unwrap_err().to_string();
    assert!(e.contains("refused to force a key frame"), "{e}");
}

#[test]
fn probing_finds_an_h264_encoder_and_names_what_is_not() {
    let (mut fake, _h) = FakeM2m::new(Script::default());
    assert_eq!(
        probe_device(&mut fake),
        Ok(Found {
            driver: "bcm2835-codec".into(),
            card: "bcm2835-codec-encode".into()
        })
    );
    let (mut decoder, _h) = FakeM2m::new(Script {
        card: "bcm2835-codec-decode".into(),
        coded_formats: vec![PIX_FMT_YUV420],
        ..Script::default()
    });
    let e = probe_device(&mut decoder).unwrap_err();
    assert!(e.contains("does not encode H.264"), "{e}");
}

#[test]
fn auto_uses_the_hardware_encoder_when_it_opens() {
    let s = EncoderSettings {
        encoder: EncoderSpec::Auto("/dev/video11".into()),
        ..settings()
    };
    let chosen = encoder::choose_with(&s, &|path, s| {
        let (fake, _) = FakeM2m::new(Script::default());
        V4l2m2mEncoder::with_device(Box::new(fake), &path.display().to_string(), s)
    })
    .unwrap();
    assert_eq!(chosen.encoder.name(), "v4l2m2m");
    assert!(chosen.fallback.is_none());
}

#[test]
fn auto_falls_back_to_openh264_and_still_encodes() {
    let missing = "/dev/video-not-here-11";
    let s = EncoderSettings {
        encoder: EncoderSpec::Auto(missing.into()),
        ..settings()
    };
    let mut chosen = encoder::choose(&s).unwrap();
    assert_eq!(chosen.encoder.name(), "openh264");
    let why = chosen.fallback.expect("why it fell back");
    assert!(!why.device_exists);
    let text = why.reason.to_string();
    assert!(
        text.contains(missing) && text.contains("cannot open"),
        "{text}"
    );
    let e = chosen.encoder.encode(&frame(0)).unwrap().expect("a frame");
    assert!(e.keyframe);
    assert!(nal_types(&e.data).contains(&5));

    // A device that is there but is not an encoder: the same, with the
    // driver's answer.
    let s = EncoderSettings {
        encoder: EncoderSpec::Auto("/dev/null".into()),
        ..settings()
    };
    let chosen = encoder::choose(&s).unwrap();
    assert_eq!(chosen.encoder.name(), "openh264");
    let why = chosen.fallback.unwrap();
    assert!(why.device_exists);
    assert!(
        why.reason.to_string().contains("not a V4L2 device"),
        "{}",
        why.reason
    );
}

/// What `auto` logs when it falls back: one line, with the reason.
#[test]
fn auto_says_why_in_one_log_line() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines(Arc::new(Mutex::new(Vec::new())));
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let s = EncoderSettings {
        encoder: EncoderSpec::Auto("/dev/video-not-here-12".into()),
        ..settings()
    };
    let enc = tracing::subscriber::with_default(subscriber, || encoder::open(&s)).unwrap();
    assert_eq!(enc.name(), "openh264");
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let about: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("video encoder"))
        .collect();
    assert_eq!(about.len(), 1, "{text}");
    assert!(
        about[0].contains("INFO")
            && about[0].contains("OpenH264")
            && about[0].contains("/dev/video-not-here-12"),
        "{text}"
    );
}

#[test]
fn v4l2m2m_without_the_device_is_an_error_that_names_it() {
    let missing = "/dev/video-not-here-13";
    let s = EncoderSettings {
        encoder: EncoderSpec::V4l2m2m(missing.into()),
        ..settings()
    };
    let e = encoder::choose(&s).err().expect("no fallback").to_string();
    assert!(
        e.starts_with(missing) && e.contains("cannot open the hardware encoder"),
        "{e}"
    );

    // In a call: the video pipeline does not start, with that reason (the
    // call goes on without video; the session reports it).
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let source = doorbell::media::testsrc::TestPattern::new(W, H, 30);
    let e = doorbell::media::video::VideoPipeline::start(Box::new(source), &s, tx, |_| {})
        .err()
        .expect("no video")
        .to_string();
    assert!(e.contains(missing), "{e}");
}

#[test]
fn the_real_device_refuses_what_is_not_an_encoder() {
    let s = settings();
    let e = V4l2m2mEncoder::open(Path::new("/dev/null"), &s)
        .err()
        .expect("/dev/null is no encoder")
        .to_string();
    assert!(
        e.starts_with("/dev/null: not a V4L2 device (VIDIOC_QUERYCAP: "),
        "{e}"
    );
    let e = V4l2m2mEncoder::open(Path::new("/nonexistent/video11"), &s)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("cannot open the hardware encoder") && e.contains("No such file"),
        "{e}"
    );
    assert!(probe(Path::new("/dev/null"))
        .unwrap_err()
        .contains("not a V4L2 device"));
    // Whatever this machine has, listing does not fail or panic.
    let _ = list_encoders();
}
