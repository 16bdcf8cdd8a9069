//! The encode-only floor for `docs/performance.md`: the CPU that encoding the
//! same test-pattern frames costs with the same encoder settings, and nothing
//! else (no capture pacing, no RTP, no crypto). Thread CPU time around the
//! `encode` calls only; pattern drawing is measured and reported apart.
//!
//! Two ways: `--paced` encodes at the real frame rate, sleeping between frames
//! as a call does (caches go cold in between, which costs real CPU); without
//! it, frames are encoded back to back (the optimistic figure).
//!
//! Usage: cargo bench --bench encode -- [--seconds 30] [--size 640x480] [--fps 30] [--paced]

use std::time::Duration;

use doorbell::media::h264::{EncoderSettings, H264Encoder};
use doorbell::media::testsrc::TestPattern;
use doorbell::media::Frame;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() {
    let (mut seconds, mut width, mut height, mut fps) = (30u64, 640usize, 480usize, 30u32);
    let mut paced = false;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--seconds" => seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds N"),
            "--fps" => fps = it.next().and_then(|v| v.parse().ok()).expect("--fps N"),
            "--size" => {
                let v = it.next().expect("--size WxH");
                let (w, h) = v.split_once('x').expect("--size WxH");
                width = w.parse().unwrap();
                height = h.parse().unwrap();
            }
            "--paced" => paced = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let settings = EncoderSettings {
        width,
        height,
        fps,
        bitrate_kbps: 1000,
        keyframe_interval: Duration::from_secs(10),
        encoder: doorbell::spec::media::EncoderSpec::OpenH264,
    };
    let mut encoder = H264Encoder::new(&settings).unwrap();
    let pattern = TestPattern::new(width, height, fps);
    let mut frame = Frame::new(width, height);
    let frames = seconds * u64::from(fps);
    let (mut draw, mut encode, mut bytes) = (Duration::ZERO, Duration::ZERO, 0usize);
    let t0 = 1_763_683_200_000u64;
    let start = std::time::Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(fps));
    for n in 0..frames {
        if paced {
            if let Some(wait) =
                (start + interval * n as u32).checked_duration_since(std::time::Instant::now())
            {
                std::thread::sleep(wait);
            }
        }
        if n > 0 && n % (10 * u64::from(fps)) == 0 {
            encoder.force_keyframe();
        }
        let a = thread_cpu();
        pattern.render(n, t0 + n * 1000 / u64::from(fps), &mut frame);
        let b = thread_cpu();
        if let Some(e) = encoder.encode(&frame).unwrap() {
            bytes += e.data.len();
        }
        let c = thread_cpu();
        draw += b - a;
        encode += c - b;
    }
    let call_seconds = frames as f64 / f64::from(fps);
    println!(
        "encode floor: {width}x{height}@{fps}, {frames} frames ({call_seconds:.0} s of call), 1000 kbps target, {}",
        if paced { "paced at the frame rate" } else { "back to back" }
    );
    println!(
        "encode only:   {:.4} CPU s per call-second ({:.2} ms per frame, {:.0} fps on one core)",
        encode.as_secs_f64() / call_seconds,
        encode.as_secs_f64() * 1000.0 / frames as f64,
        frames as f64 / encode.as_secs_f64()
    );
    println!(
        "pattern draw:  {:.4} CPU s per call-second ({:.2} ms per frame)",
        draw.as_secs_f64() / call_seconds,
        draw.as_secs_f64() * 1000.0 / frames as f64
    );
    println!(
        "bitstream:     {:.0} kbps",
        bytes as f64 * 8.0 / call_seconds / 1000.0
    );
}
