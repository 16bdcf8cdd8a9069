//! A real camera, when this machine has one: open the first V4L2 capture
//! device, grab frames, check they are I420 of the asked size with a capture
//! time. Machines without a camera (CI, the build machine) skip it and say
//! so on stderr; nothing passes silently.

#![cfg(feature = "camera")]

use std::time::{Duration, Instant};

use doorbell::media::v4l2::{list_cameras, V4l2Camera};
use doorbell::media::{Frame, VideoSource};

#[test]
fn a_real_camera_delivers_frames_of_the_configured_size() {
    let cameras = list_cameras();
    let Some(camera) = cameras.iter().find(|c| c.error.is_none()) else {
        if cameras.is_empty() {
            eprintln!("skipped: no /dev/video* capture device on this machine");
        } else {
            for c in &cameras {
                eprintln!("skipped: {c}");
            }
        }
        return;
    };
    eprintln!("camera under test:\n  {camera}");
    let (w, h) = (640, 480);
    let mut source = match V4l2Camera::open(&camera.path, w, h, 30) {
        Ok(s) => s,
        Err(e) => panic!("a camera that lists fine must open: {e}"),
    };
    eprintln!("{}", source.describe());
    let mut frame = Frame::new(w as usize, h as usize);
    let start = Instant::now();
    for n in 0..10 {
        source
            .next_frame(&mut frame)
            .unwrap_or_else(|e| panic!("frame {n}: {e}"));
        assert_eq!((frame.width, frame.height), (w as usize, h as usize));
        assert_eq!(frame.data.len(), (w * h * 3 / 2) as usize);
        assert!(frame.captured <= Instant::now());
        assert!(frame.captured_unix_ms > 1_600_000_000_000);
    }
    let elapsed = start.elapsed();
    eprintln!("10 frames in {elapsed:?}, {} skipped", source.skipped());
    assert!(elapsed < Duration::from_secs(10));
    // Dropping releases the camera: it opens again at once.
    drop(source);
    V4l2Camera::open(&camera.path, w, h, 30).expect("the camera is free again");
}
