//! `testsrc`: a generated picture for the demo, the tests and the benchmarks.
//!
//! Scrolling colour bars, a bouncing square, the frame counter and the UTC
//! wall-clock time in digits, and the machine-readable capture stamp
//! (`media::stamp`) in the top rows. Drawn straight into I420 from precomputed
//! rows, so generating a 640x480 frame costs a few hundred microseconds and the
//! encoder dominates, as it would with a camera.

use std::time::{Duration, Instant};

use super::{stamp, Frame, MediaError, VideoSource};

pub struct TestPattern {
    width: usize,
    height: usize,
    fps: u32,
    interval: Duration,
    start: Option<Instant>,
    /// Frames produced so far (also the frame number drawn).
    produced: u64,
    /// Frames skipped because the consumer fell behind.
    skipped: u64,
    bars_y: Vec<u8>,
    bars_u: Vec<u8>,
    bars_v: Vec<u8>,
}

/// Luma/chroma of 75% colour bars: white, yellow, cyan, green, magenta, red, blue, black.
const BARS: [(u8, u8, u8); 8] = [
    (180, 128, 128),
    (162, 44, 142),
    (131, 156, 44),
    (112, 72, 58),
    (84, 184, 198),
    (65, 100, 212),
    (35, 212, 114),
    (16, 128, 128),
];

impl TestPattern {
    pub fn new(width: usize, height: usize, fps: u32) -> Self {
        let fps = fps.max(1);
        // Two periods side by side so a scrolled row is one slice copy.
        let bar = |x: usize, w: usize| BARS[(x % w) * BARS.len() / w];
        let bars_y = (0..2 * width).map(|x| bar(x, width).0).collect();
        let bars_u = (0..width / 2).map(|x| bar(2 * x, width).1).collect();
        let bars_v = (0..width / 2).map(|x| bar(2 * x, width).2).collect();
        Self {
            width,
            height,
            fps,
            interval: Duration::from_secs_f64(1.0 / f64::from(fps)),
            start: None,
            produced: 0,
            skipped: 0,
            bars_y,
            bars_u,
            bars_v,
        }
    }

    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Draws frame number `n` captured at `unix_ms` into `frame`.
    pub fn render(&self, n: u64, unix_ms: u64, frame: &mut Frame) {
        let (w, h) = (self.width, self.height);
        if frame.width != w || frame.height != h {
            *frame = Frame::new(w, h);
        }
        let (y, u, v) = frame.planes_mut();
        let shift = (n as usize * 4) % w;
        for row in 0..h {
            // Darker bands every 32 rows give the encoder some vertical detail.
            let line = &mut y[row * w..(row + 1) * w];
            line.copy_from_slice(&self.bars_y[shift..shift + w]);
            if (row / 32) % 2 == 1 {
                line.iter_mut()
                    .for_each(|p| *p = (*p).saturating_sub(24).max(16));
            }
        }
        let (cw, ch) = (w / 2, h / 2);
        let cshift = shift / 2;
        for row in 0..ch {
            for (dst, src) in [(&mut *u, &self.bars_u), (&mut *v, &self.bars_v)] {
                let line = &mut dst[row * cw..(row + 1) * cw];
                line[..cw - cshift].copy_from_slice(&src[cshift..]);
                line[cw - cshift..].copy_from_slice(&src[..cshift]);
            }
        }
        // A bouncing square.
        let side = (h / 6).max(4) & !1;
        let span_x = w.saturating_sub(side).max(1);
        let span_y = h.saturating_sub(side).max(1);
        let bounce = |t: usize, span: usize| {
            let p = t % (2 * span);
            if p < span {
                p
            } else {
                2 * span - p
            }
        };
        let (bx, by) = (
            bounce(n as usize * 6, span_x),
            bounce(n as usize * 4, span_y),
        );
        for row in by..(by + side).min(h) {
            y[row * w + bx..row * w + (bx + side).min(w)].fill(235);
        }
        // Counter and time, on a dark strip below the stamp.
        let scale = (h / 160).max(1);
        let text = format!("#{:06} {} UTC", n, clock(unix_ms));
        let top = stamp::block_size(w).unwrap_or(0) + 2 * scale;
        let strip = (7 + 4) * scale;
        if top + strip <= h {
            let width_px = ((text.len() * 6 + 2) * scale).min(w);
            for row in top..top + strip {
                y[row * w..row * w + width_px].fill(16);
            }
            draw_text(y, w, 2 * scale, top + 2 * scale, scale, &text);
        }
        stamp::write(y, u, v, w, h, w, cw, unix_ms);
    }
}

impl VideoSource for TestPattern {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<(), MediaError> {
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        let mut due = start + self.interval.mul_f64(self.produced as f64);
        if now > due + self.interval {
            // Behind by more than a frame: skip to the present rather than burst.
            let behind = ((now - start).as_secs_f64() / self.interval.as_secs_f64()) as u64;
            self.skipped += behind.saturating_sub(self.produced);
            self.produced = behind;
            due = start + self.interval.mul_f64(self.produced as f64);
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        frame.captured = Instant::now();
        frame.captured_unix_ms = super::unix_ms();
        self.render(self.produced, frame.captured_unix_ms, frame);
        self.produced += 1;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("testsrc {}x{}@{}", self.width, self.height, self.fps)
    }
}

/// `HH:MM:SS.mmm` of a Unix millisecond time, UTC.
fn clock(unix_ms: u64) -> String {
    let ms = unix_ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// 5x7 glyphs for the characters the overlay uses; each row is 5 bits, MSB left.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '#' => [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        _ => [0; 7],
    }
}

fn draw_text(y: &mut [u8], stride: usize, x0: usize, y0: usize, scale: usize, text: &str) {
    for (i, c) in text.chars().enumerate() {
        let g = glyph(c);
        for (gy, bits) in g.iter().enumerate() {
            for gx in 0..5 {
                if bits >> (4 - gx) & 1 == 0 {
                    continue;
                }
                let px = x0 + (i * 6 + gx) * scale;
                let py = y0 + gy * scale;
                for dy in 0..scale {
                    let start = (py + dy) * stride + px;
                    if px + scale <= stride && start + scale <= y.len() {
                        y[start..start + scale].fill(235);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_a_readable_stamp_and_move() {
        let p = TestPattern::new(640, 480, 30);
        let mut a = Frame::new(640, 480);
        let mut b = Frame::new(640, 480);
        p.render(0, 1_700_000_000_000, &mut a);
        p.render(1, 1_700_000_000_033, &mut b);
        assert_eq!(
            stamp::read(a.planes().0, 640, 480, 640),
            Some(1_700_000_000_000u64 as u32)
        );
        assert_eq!(
            stamp::read(b.planes().0, 640, 480, 640),
            Some(1_700_000_000_033u64 as u32)
        );
        let differing = a.data.iter().zip(&b.data).filter(|(x, y)| x != y).count();
        assert!(
            differing > 10_000,
            "the pattern moves ({differing} bytes differ)"
        );
    }

    #[test]
    fn odd_sizes_render_without_panicking() {
        for (w, h) in [(16, 16), (160, 120), (322, 242), (1280, 720)] {
            let p = TestPattern::new(w, h, 15);
            let mut f = Frame::new(w, h);
            for n in 0..50 {
                p.render(n * 97, n * 1000, &mut f);
            }
        }
    }

    #[test]
    fn the_clock_reads_utc() {
        assert_eq!(clock(1_700_000_000_123), "22:13:20.123");
    }

    #[test]
    fn a_slow_consumer_makes_the_pattern_skip_not_burst() {
        let mut p = TestPattern::new(64, 48, 50);
        let mut f = Frame::new(64, 48);
        p.next_frame(&mut f).unwrap();
        std::thread::sleep(Duration::from_millis(120));
        p.next_frame(&mut f).unwrap();
        assert!(p.skipped() >= 4, "skipped {}", p.skipped());
    }
}
