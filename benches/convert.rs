//! What the camera path costs per frame before encoding: each conversion to
//! I420 (`media::convert`) and the crop-and-scale, on 640x480 frames made from
//! the test pattern (MJPEG: encoded at quality 85, 4:2:2, as webcams send).
//! Wall time per frame, averaged; run on the Pi for the figures that matter.
//!
//! Usage: cargo bench --bench convert -- [--frames 300]

use std::hint::black_box;
use std::time::Instant;

use doorbell::media::convert::{nv12_to_i420, yu12_to_i420, yuyv_to_i420, MjpegDecoder, Scaler};
use doorbell::media::testsrc::TestPattern;
use doorbell::media::Frame;

const W: usize = 640;
const H: usize = 480;

fn picture(width: usize, height: usize) -> Frame {
    let mut f = Frame::new(width, height);
    TestPattern::new(width, height, 30).render(7, 1_763_683_200_000, &mut f);
    f
}

fn yuyv(f: &Frame) -> Vec<u8> {
    let (y, u, v) = f.planes();
    let mut out = Vec::with_capacity(W * H * 2);
    for r in 0..H {
        for x in 0..W / 2 {
            let c = (r / 2) * (W / 2) + x;
            out.extend_from_slice(&[y[r * W + 2 * x], u[c], y[r * W + 2 * x + 1], v[c]]);
        }
    }
    out
}

fn nv12(f: &Frame) -> Vec<u8> {
    let (y, u, v) = f.planes();
    let mut out = y.to_vec();
    for (u, v) in u.iter().zip(v) {
        out.extend_from_slice(&[*u, *v]);
    }
    out
}

/// Full-range interleaved YCbCr (what a JPEG holds) from limited-range I420.
fn ycbcr(f: &Frame) -> Vec<u8> {
    let (y, u, v) = f.planes();
    let full =
        |x: u8, lo: f32, span: f32| ((f32::from(x) - lo) * 255.0 / span).clamp(0.0, 255.0) as u8;
    let mut out = Vec::with_capacity(W * H * 3);
    for r in 0..H {
        for x in 0..W {
            let c = (r / 2) * (W / 2) + x / 2;
            out.push(full(y[r * W + x], 16.0, 219.0));
            out.push(full(u[c], 16.0, 224.0));
            out.push(full(v[c], 16.0, 224.0));
        }
    }
    out
}

fn time(name: &str, frames: u32, mut f: impl FnMut()) {
    f(); // warm up
    let start = Instant::now();
    for _ in 0..frames {
        f();
    }
    let per = start.elapsed() / frames;
    println!("{name:<34} {:>8.0} us/frame", per.as_secs_f64() * 1e6);
    black_box(per);
}

fn main() {
    let mut frames = 300u32;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--frames" => frames = it.next().and_then(|v| v.parse().ok()).expect("--frames N"),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let source = picture(W, H);
    let mut out = Frame::new(W, H);

    let packed = yuyv(&source);
    time("YUYV 640x480 -> I420", frames, || {
        yuyv_to_i420(black_box(&packed), 2 * W, W, H, &mut out).unwrap()
    });
    let packed = nv12(&source);
    time("NV12 640x480 -> I420", frames, || {
        nv12_to_i420(black_box(&packed), W, W, H, &mut out).unwrap()
    });
    let packed = source.data.clone();
    time("YU12 640x480 -> I420 (copy)", frames, || {
        yu12_to_i420(black_box(&packed), W, W, H, &mut out).unwrap()
    });

    let mut jpeg = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut jpeg, 85);
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_2);
    encoder
        .encode(
            &ycbcr(&source),
            W as u16,
            H as u16,
            jpeg_encoder::ColorType::Ycbcr,
        )
        .expect("encodes");
    let mut decoder = MjpegDecoder::new();
    let name = format!("MJPEG 640x480 ({} KB) -> I420", jpeg.len() / 1024);
    time(&name, frames, || {
        decoder.decode(black_box(&jpeg), W, H, &mut out).unwrap()
    });

    let large = picture(1280, 720);
    let scaler = Scaler::new(1280, 720, W, H).expect("sizes are even");
    time("crop+scale 1280x720 -> 640x480", frames, || {
        scaler.scale(black_box(&large), &mut out).unwrap()
    });
    let small = picture(320, 240);
    let scaler = Scaler::new(320, 240, W, H).expect("sizes are even");
    time("scale 320x240 -> 640x480", frames, || {
        scaler.scale(black_box(&small), &mut out).unwrap()
    });
}
