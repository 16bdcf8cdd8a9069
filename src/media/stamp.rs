//! The capture-time stamp: a row of black and white blocks that a viewer can
//! read back from the decoded picture to measure glass-to-glass latency.
//!
//! Layout (also in `docs/performance.md`), for a frame `width` pixels wide:
//!
//! - block size `B = width / 40` pixels (16 at 640x480, 8 at 320x240); no stamp
//!   below `B = 4`;
//! - the stamp covers rows `0..B` and columns `0..40*B`, top left;
//! - 40 blocks, left to right: `1 0` (start), 32 bits of the capture time in
//!   Unix milliseconds modulo 2^32, most significant first, 4 bits of check
//!   (number of one bits among the 32, modulo 16), `0 1` (end);
//! - a one is luma 235 (white), a zero luma 16 (black); chroma under the stamp
//!   is neutral (128) so RGB readers see pure grey levels;
//! - a reader averages the centre half of each block and thresholds at 128.
//!
//! Large flat blocks aligned to the 16-pixel macroblock grid at 640 pixels wide
//! survive H.264 compression at any sane bitrate. The 32-bit time wraps every
//! 49.7 days; [`unwrap`] recovers the full time against the reader's clock.

pub const BLOCKS: usize = 40;
const DATA_BITS: usize = 32;
const WHITE: u8 = 235;
const BLACK: u8 = 16;

/// Block size in pixels for a frame this wide, if a stamp fits.
pub fn block_size(width: usize) -> Option<usize> {
    let b = width / BLOCKS;
    (b >= 4).then_some(b)
}

fn bits(ms: u64) -> [bool; BLOCKS] {
    let data = ms as u32;
    let check = data.count_ones() % 16;
    let mut out = [false; BLOCKS];
    out[0] = true;
    for i in 0..DATA_BITS {
        out[2 + i] = data >> (31 - i) & 1 == 1;
    }
    for i in 0..4 {
        out[2 + DATA_BITS + i] = check >> (3 - i) & 1 == 1;
    }
    out[BLOCKS - 1] = true;
    out
}

/// Draws the stamp for `ms` into an I420 picture.
#[allow(clippy::too_many_arguments)]
pub fn write(
    y: &mut [u8],
    u: &mut [u8],
    v: &mut [u8],
    width: usize,
    height: usize,
    y_stride: usize,
    uv_stride: usize,
    ms: u64,
) {
    let Some(b) = block_size(width) else { return };
    if height < b {
        return;
    }
    for (i, bit) in bits(ms).iter().enumerate() {
        let luma = if *bit { WHITE } else { BLACK };
        for row in 0..b {
            let start = row * y_stride + i * b;
            y[start..start + b].fill(luma);
        }
    }
    for row in 0..b / 2 {
        let start = row * uv_stride;
        u[start..start + BLOCKS * b / 2].fill(128);
        v[start..start + BLOCKS * b / 2].fill(128);
    }
}

/// Reads a stamp back from a luma plane; `None` if there is none or it is damaged.
pub fn read(y: &[u8], width: usize, height: usize, stride: usize) -> Option<u32> {
    let b = block_size(width)?;
    if height < b || y.len() < (b - 1) * stride + BLOCKS * b {
        return None;
    }
    let mut got = [false; BLOCKS];
    for (i, bit) in got.iter_mut().enumerate() {
        let (x0, y0, n) = (i * b + b / 4, b / 4, (b / 2).max(1));
        let mut sum = 0u32;
        for row in y0..y0 + n {
            for px in &y[row * stride + x0..row * stride + x0 + n] {
                sum += u32::from(*px);
            }
        }
        *bit = sum / (n * n) as u32 >= 128;
    }
    let mut data = 0u32;
    for bit in &got[2..2 + DATA_BITS] {
        data = data << 1 | u32::from(*bit);
    }
    let ms = u64::from(data);
    (got == bits(ms)).then_some(data)
}

/// The full Unix millisecond time of a stamp, given the reader's clock (which
/// must be within 24 days after the capture).
pub fn unwrap(stamp: u32, now_ms: u64) -> u64 {
    let age = (now_ms as u32).wrapping_sub(stamp);
    now_ms.wrapping_sub(u64::from(age))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(w: usize, h: usize, fill: u8) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        (vec![fill; w * h], vec![90; w * h / 4], vec![200; w * h / 4])
    }

    #[test]
    fn a_written_stamp_reads_back() {
        for (w, h) in [(640, 480), (320, 240), (1280, 720), (160, 120)] {
            for ms in [
                0u64,
                1,
                1_763_683_200_123,
                u64::from(u32::MAX),
                0xDEAD_BEEF_CAFE,
            ] {
                let (mut y, mut u, mut v) = picture(w, h, 77);
                write(&mut y, &mut u, &mut v, w, h, w, w / 2, ms);
                assert_eq!(read(&y, w, h, w), Some(ms as u32), "{w}x{h} {ms}");
                assert_eq!(u[0], 128);
            }
        }
    }

    #[test]
    fn noise_of_compression_does_not_flip_bits() {
        let (w, h) = (640, 480);
        let (mut y, mut u, mut v) = picture(w, h, 120);
        write(&mut y, &mut u, &mut v, w, h, w, w / 2, 1_234_567_890_123);
        // Ringing at block edges and a luma offset, as an encoder would leave.
        for (i, px) in y.iter_mut().enumerate() {
            let wobble = ((i * 7919) % 41) as i32 - 20;
            *px = (i32::from(*px) + wobble).clamp(0, 255) as u8;
        }
        assert_eq!(read(&y, w, h, w), Some(1_234_567_890_123u64 as u32));
    }

    #[test]
    fn no_stamp_or_a_damaged_one_reads_as_none() {
        let (w, h) = (640, 480);
        let (y, _, _) = picture(w, h, 16);
        assert_eq!(read(&y, w, h, w), None, "a black picture is not a stamp");
        let (mut y, mut u, mut v) = picture(w, h, 50);
        write(&mut y, &mut u, &mut v, w, h, w, w / 2, 42);
        let b = block_size(w).unwrap();
        let flipped = if y[10 * b] > 128 { 16 } else { 235 };
        for row in 0..b {
            y[row * w + 10 * b..row * w + 11 * b].fill(flipped);
        }
        assert_eq!(read(&y, w, h, w), None, "one flipped bit fails the check");
        assert_eq!(block_size(100), None);
    }

    #[test]
    fn unwrap_recovers_the_full_time() {
        let captured = 1_763_683_200_123u64;
        assert_eq!(unwrap(captured as u32, captured + 25), captured);
        let just_before_wrap = (1u64 << 40) - 3;
        assert_eq!(
            unwrap(just_before_wrap as u32, just_before_wrap + 10),
            just_before_wrap
        );
    }
}
