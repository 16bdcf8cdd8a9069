//! Camera pictures to I420, the one layout the H.264 encoder takes.
//!
//! Cameras deliver packed YUYV (4:2:2), NV12 or YU12 (4:2:0) or MJPEG; this
//! module turns each into an I420 [`Frame`] and, when the camera's size is not
//! the configured one, crops and scales it ([`Scaler`]). It is pure (bytes in,
//! bytes out) so the conversions are tested with frames the tests generate,
//! and it does the hot work of the camera path, so the loops run over whole
//! rows with slice iterators (no per-pixel bounds checks) and do integer
//! arithmetic only. A 640x480 YUYV frame costs well under a millisecond; MJPEG
//! costs a JPEG decode (`zune-jpeg`, pure Rust) on top.
//!
//! Every input is checked before it is read: a driver can hand over a short
//! buffer, and a USB camera sends the odd corrupt JPEG. Both are errors for
//! that frame ([`ConvertError`]), never a panic; the camera source skips the
//! frame and carries on. I420 needs even widths and heights; odd ones are
//! rejected (negotiation never asks for them).
//!
//! Colour: raw camera formats are BT.601 limited range already and are only
//! repacked. JPEG (JFIF) is BT.601 full range, so MJPEG luma and chroma are
//! mapped to limited range (Y 16..235, Cb/Cr 16..240) on the way.

use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use super::negotiate::PixelFormat;
use super::Frame;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    #[error("{width}x{height} cannot be I420: width and height must be even and not zero")]
    Size { width: usize, height: usize },
    #[error("{format} line stride of {stride} bytes is shorter than a line of {width} pixels")]
    Stride {
        format: PixelFormat,
        stride: usize,
        width: usize,
    },
    #[error(
        "{format} frame of {got} bytes is too short for {width}x{height} ({need} bytes needed)"
    )]
    Short {
        format: PixelFormat,
        width: usize,
        height: usize,
        got: usize,
        need: usize,
    },
    #[error("corrupt MJPEG frame: {0}")]
    Jpeg(String),
    #[error("MJPEG frame of {width}x{height} is larger than the {max_width}x{max_height} the camera announced")]
    JpegTooLarge {
        width: usize,
        height: usize,
        max_width: usize,
        max_height: usize,
    },
}

/// Makes `frame` an I420 picture of `width`x`height`, reusing its buffer.
pub fn reshape(frame: &mut Frame, width: usize, height: usize) {
    frame.width = width;
    frame.height = height;
    frame.data.resize(width * height * 3 / 2, 0);
}

fn check_size(width: usize, height: usize) -> Result<(), ConvertError> {
    if width == 0 || height == 0 || width % 2 == 1 || height % 2 == 1 {
        return Err(ConvertError::Size { width, height });
    }
    Ok(())
}

/// The stride to use: the driver's, or the natural one when it says 0.
fn stride_for(
    format: PixelFormat,
    stride: usize,
    line: usize,
    width: usize,
) -> Result<usize, ConvertError> {
    match stride {
        0 => Ok(line),
        s if s < line => Err(ConvertError::Stride {
            format,
            stride: s,
            width,
        }),
        s => Ok(s),
    }
}

fn check_len(
    format: PixelFormat,
    src: &[u8],
    need: usize,
    width: usize,
    height: usize,
) -> Result<(), ConvertError> {
    if src.len() < need {
        return Err(ConvertError::Short {
            format,
            width,
            height,
            got: src.len(),
            need,
        });
    }
    Ok(())
}

#[inline(always)]
fn avg2(a: u8, b: u8) -> u8 {
    ((u16::from(a) + u16::from(b) + 1) >> 1) as u8
}

/// A raw camera frame (`YUYV`, `NV12`, `YU12`) to I420. `stride` is the
/// driver's `bytesperline` (0: tightly packed).
pub fn raw_to_i420(
    format: PixelFormat,
    src: &[u8],
    stride: usize,
    width: usize,
    height: usize,
    out: &mut Frame,
) -> Result<(), ConvertError> {
    match format {
        PixelFormat::Yuyv => yuyv_to_i420(src, stride, width, height, out),
        PixelFormat::Nv12 => nv12_to_i420(src, stride, width, height, out),
        PixelFormat::Yu12 => yu12_to_i420(src, stride, width, height, out),
        PixelFormat::Mjpeg => Err(ConvertError::Jpeg(
            "MJPEG goes through MjpegDecoder, not raw_to_i420".into(),
        )),
    }
}

/// Packed Y0 U Y1 V, 4:2:2. Chroma of each pair of lines is averaged.
pub fn yuyv_to_i420(
    src: &[u8],
    stride: usize,
    width: usize,
    height: usize,
    out: &mut Frame,
) -> Result<(), ConvertError> {
    let format = PixelFormat::Yuyv;
    check_size(width, height)?;
    let line = width * 2;
    let stride = stride_for(format, stride, line, width)?;
    check_len(format, src, stride * (height - 1) + line, width, height)?;
    reshape(out, width, height);
    let (y, u, v) = out.planes_mut();
    let cw = width / 2;
    let rows = y
        .chunks_exact_mut(2 * width)
        .zip(u.chunks_exact_mut(cw))
        .zip(v.chunks_exact_mut(cw))
        .zip(src.chunks(2 * stride));
    for (((y2, u), v), s2) in rows {
        let (y0, y1) = y2.split_at_mut(width);
        let s0 = &s2[..line];
        let s1 = &s2[stride..stride + line];
        let pixels = s0
            .chunks_exact(4)
            .zip(s1.chunks_exact(4))
            .zip(y0.chunks_exact_mut(2).zip(y1.chunks_exact_mut(2)))
            .zip(u.iter_mut().zip(v.iter_mut()));
        for (((a, b), (ya, yb)), (u, v)) in pixels {
            ya[0] = a[0];
            ya[1] = a[2];
            yb[0] = b[0];
            yb[1] = b[2];
            *u = avg2(a[1], b[1]);
            *v = avg2(a[3], b[3]);
        }
    }
    Ok(())
}

/// Y plane, then one plane of interleaved U V at half height; both planes
/// with the same stride, as V4L2 lays out single-planar NV12.
pub fn nv12_to_i420(
    src: &[u8],
    stride: usize,
    width: usize,
    height: usize,
    out: &mut Frame,
) -> Result<(), ConvertError> {
    let format = PixelFormat::Nv12;
    check_size(width, height)?;
    let stride = stride_for(format, stride, width, width)?;
    let uv_start = stride * height;
    check_len(
        format,
        src,
        uv_start + stride * (height / 2 - 1) + width,
        width,
        height,
    )?;
    reshape(out, width, height);
    let (y, u, v) = out.planes_mut();
    copy_plane(&src[..uv_start], stride, y, width);
    let cw = width / 2;
    let rows = src[uv_start..]
        .chunks(stride)
        .zip(u.chunks_exact_mut(cw).zip(v.chunks_exact_mut(cw)));
    for (s, (u, v)) in rows {
        for ((uv, u), v) in s[..width]
            .chunks_exact(2)
            .zip(u.iter_mut())
            .zip(v.iter_mut())
        {
            *u = uv[0];
            *v = uv[1];
        }
    }
    Ok(())
}

/// Planar Y, U, V (I420 itself); chroma planes have half the stride, as
/// V4L2 lays out single-planar YUV420.
pub fn yu12_to_i420(
    src: &[u8],
    stride: usize,
    width: usize,
    height: usize,
    out: &mut Frame,
) -> Result<(), ConvertError> {
    let format = PixelFormat::Yu12;
    check_size(width, height)?;
    let stride = stride_for(format, stride, width, width)?;
    if stride % 2 == 1 {
        return Err(ConvertError::Stride {
            format,
            stride,
            width,
        });
    }
    let (cw, ch, cstride) = (width / 2, height / 2, stride / 2);
    let u_start = stride * height;
    let v_start = u_start + cstride * ch;
    check_len(
        format,
        src,
        v_start + cstride * (ch - 1) + cw,
        width,
        height,
    )?;
    reshape(out, width, height);
    let (y, u, v) = out.planes_mut();
    copy_plane(&src[..u_start], stride, y, width);
    copy_plane(&src[u_start..v_start], cstride, u, cw);
    copy_plane(&src[v_start..], cstride, v, cw);
    Ok(())
}

/// Copies the first `width` bytes of each `stride`-long source line.
fn copy_plane(src: &[u8], stride: usize, dst: &mut [u8], width: usize) {
    if stride == width {
        let n = dst.len().min(src.len());
        dst[..n].copy_from_slice(&src[..n]);
        return;
    }
    for (d, s) in dst.chunks_exact_mut(width).zip(src.chunks(stride)) {
        d.copy_from_slice(&s[..width]);
    }
}

/// Full-range (JFIF) luma to limited range: 0..255 -> 16..235.
const LUMA_TO_LIMITED: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (16 + (i as u32 * 219 + 127) / 255) as u8;
        i += 1;
    }
    t
};

/// Full-range chroma to limited range: 0..255 -> 16..240, 128 stays 128.
const CHROMA_TO_LIMITED: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let d = (i as i32 - 128) * 224;
        let r = if d >= 0 {
            (d + 127) / 255
        } else {
            (d - 127) / 255
        };
        t[i] = (128 + r) as u8;
        i += 1;
    }
    t
};

/// Decodes MJPEG frames into I420, reusing its buffers from frame to frame.
#[derive(Debug, Default)]
pub struct MjpegDecoder {
    /// The frame with the standard Huffman tables added, when it lacks them.
    patched: Vec<u8>,
    /// Decoded pixels, interleaved Y Cb Cr (or Y alone for greyscale).
    pixels: Vec<u8>,
}

impl MjpegDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes one frame into `out` (which takes the JPEG's size). A frame
    /// larger than `max_width`x`max_height` (what the camera announced) is
    /// refused before any memory is spent on it.
    pub fn decode(
        &mut self,
        jpeg: &[u8],
        max_width: usize,
        max_height: usize,
        out: &mut Frame,
    ) -> Result<(), ConvertError> {
        if jpeg.len() < 4 || jpeg[..2] != [0xFF, 0xD8] {
            return Err(ConvertError::Jpeg("no start-of-image marker".into()));
        }
        let header = walk_header(jpeg);
        // The decoder fills a missing tail with grey and calls it a picture;
        // a frame that lost its end on the USB bus is skipped instead.
        let Some(scan) = header.scan else {
            return Err(ConvertError::Jpeg("no start-of-scan marker".into()));
        };
        if !jpeg[scan..].windows(2).rev().any(|w| w == [0xFF, 0xD9]) {
            return Err(ConvertError::Jpeg(
                "no end-of-image marker (frame cut short?)".into(),
            ));
        }
        let data = if header.huffman_tables {
            jpeg
        } else {
            // UVC cameras may leave out the Huffman tables (as in AVI MJPEG),
            // expecting the standard ones; put them in.
            self.patched.clear();
            self.patched.extend_from_slice(&jpeg[..2]);
            push_standard_dht(&mut self.patched);
            self.patched.extend_from_slice(&jpeg[2..]);
            &self.patched
        };
        let options = DecoderOptions::default()
            .set_strict_mode(true)
            .set_max_width(max_width.max(2))
            .set_max_height(max_height.max(2));
        let mut decoder = JpegDecoder::new_with_options(ZCursor::new(data), options);
        decoder.decode_headers().map_err(jpeg_error)?;
        let (width, height) = decoder
            .dimensions()
            .ok_or_else(|| ConvertError::Jpeg("no frame header".into()))?;
        if width > max_width || height > max_height {
            return Err(ConvertError::JpegTooLarge {
                width,
                height,
                max_width,
                max_height,
            });
        }
        check_size(width, height)?;
        let grey = match decoder.input_colorspace() {
            Some(ColorSpace::YCbCr) => false,
            Some(ColorSpace::Luma) => true,
            other => {
                return Err(ConvertError::Jpeg(format!(
                    "colour space {other:?} is not supported (YCbCr or greyscale)"
                )))
            }
        };
        let out_space = if grey {
            ColorSpace::Luma
        } else {
            ColorSpace::YCbCr
        };
        decoder.set_options(options.jpeg_set_out_colorspace(out_space));
        let size = width * height * out_space.num_components();
        self.pixels.resize(size, 0);
        decoder.decode_into(&mut self.pixels).map_err(jpeg_error)?;
        reshape(out, width, height);
        if grey {
            grey_to_i420(&self.pixels, width, out);
        } else {
            ycbcr444_to_i420(&self.pixels, width, out);
        }
        Ok(())
    }
}

fn jpeg_error(e: zune_jpeg::errors::DecodeErrors) -> ConvertError {
    ConvertError::Jpeg(e.to_string())
}

/// Interleaved full-range Y Cb Cr at full resolution to limited-range I420,
/// chroma averaged over 2x2.
fn ycbcr444_to_i420(src: &[u8], width: usize, out: &mut Frame) {
    let cw = width / 2;
    let (y, u, v) = out.planes_mut();
    let rows = y
        .chunks_exact_mut(2 * width)
        .zip(u.chunks_exact_mut(cw))
        .zip(v.chunks_exact_mut(cw))
        .zip(src.chunks_exact(6 * width));
    for (((y2, u), v), s2) in rows {
        let (y0, y1) = y2.split_at_mut(width);
        let (s0, s1) = s2.split_at(3 * width);
        let pixels = s0
            .chunks_exact(6)
            .zip(s1.chunks_exact(6))
            .zip(y0.chunks_exact_mut(2).zip(y1.chunks_exact_mut(2)))
            .zip(u.iter_mut().zip(v.iter_mut()));
        for (((a, b), (ya, yb)), (u, v)) in pixels {
            ya[0] = LUMA_TO_LIMITED[a[0] as usize];
            ya[1] = LUMA_TO_LIMITED[a[3] as usize];
            yb[0] = LUMA_TO_LIMITED[b[0] as usize];
            yb[1] = LUMA_TO_LIMITED[b[3] as usize];
            let cb = u16::from(a[1]) + u16::from(a[4]) + u16::from(b[1]) + u16::from(b[4]);
            let cr = u16::from(a[2]) + u16::from(a[5]) + u16::from(b[2]) + u16::from(b[5]);
            *u = CHROMA_TO_LIMITED[((cb + 2) >> 2) as usize];
            *v = CHROMA_TO_LIMITED[((cr + 2) >> 2) as usize];
        }
    }
}

fn grey_to_i420(src: &[u8], width: usize, out: &mut Frame) {
    let (y, u, v) = out.planes_mut();
    for (d, s) in y.chunks_exact_mut(width).zip(src.chunks_exact(width)) {
        for (d, s) in d.iter_mut().zip(s) {
            *d = LUMA_TO_LIMITED[*s as usize];
        }
    }
    u.fill(128);
    v.fill(128);
}

/// What the segments before the first scan say.
struct Header {
    /// A Huffman table segment (DHT) comes before the scan. A header too
    /// broken to walk counts as "has them": the decoder will say what is wrong.
    huffman_tables: bool,
    /// Where the first start-of-scan marker is.
    scan: Option<usize>,
}

fn walk_header(jpeg: &[u8]) -> Header {
    let mut huffman_tables = false;
    let mut i = 2;
    while let (Some(0xFF), Some(&marker)) = (jpeg.get(i), jpeg.get(i + 1)) {
        match marker {
            0xC4 => huffman_tables = true,
            0xDA => {
                return Header {
                    huffman_tables,
                    scan: Some(i),
                }
            }
            _ => {}
        }
        match marker {
            // Fill bytes.
            0xFF => i += 1,
            // Markers without a length.
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => {
                let Some(len) = jpeg.get(i + 2..i + 4) else {
                    break;
                };
                i += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
            }
        }
    }
    Header {
        huffman_tables: true,
        scan: None,
    }
}

/// The standard Huffman tables of JPEG Annex K.3 as one DHT segment
/// (counts of codes per length 1..16, then the symbols).
fn push_standard_dht(out: &mut Vec<u8>) {
    const DC_LUMA_COUNTS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
    const DC_CHROMA_COUNTS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
    const DC_SYMBOLS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    const AC_LUMA_COUNTS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D];
    const AC_LUMA_SYMBOLS: [u8; 162] = [
        0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61,
        0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52,
        0xD1, 0xF0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25,
        0x26, 0x27, 0x28, 0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45,
        0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64,
        0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83,
        0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
        0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6,
        0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3,
        0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8,
        0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA,
    ];
    const AC_CHROMA_COUNTS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
    const AC_CHROMA_SYMBOLS: [u8; 162] = [
        0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61,
        0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33,
        0x52, 0xF0, 0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18,
        0x19, 0x1A, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44,
        0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63,
        0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A,
        0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97,
        0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4,
        0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA,
        0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7,
        0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA,
    ];
    let tables: [(u8, &[u8; 16], &[u8]); 4] = [
        (0x00, &DC_LUMA_COUNTS, &DC_SYMBOLS),
        (0x10, &AC_LUMA_COUNTS, &AC_LUMA_SYMBOLS),
        (0x01, &DC_CHROMA_COUNTS, &DC_SYMBOLS),
        (0x11, &AC_CHROMA_COUNTS, &AC_CHROMA_SYMBOLS),
    ];
    let len: usize = 2 + tables.iter().map(|(_, _, s)| 17 + s.len()).sum::<usize>();
    out.extend_from_slice(&[0xFF, 0xC4]);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    for (class_id, counts, symbols) in tables {
        out.push(class_id);
        out.extend_from_slice(counts);
        out.extend_from_slice(symbols);
    }
}

/// Crops an I420 picture to the aspect ratio of the target size (centred),
/// then scales it bilinearly to that size. Tables are computed once per pair
/// of sizes; [`Scaler::scale`] only looks them up.
///
/// Cropping rather than stretching: a 16:9 camera feeding a 4:3 call loses
/// its sides, and faces keep their shape.
#[derive(Debug, Clone)]
pub struct Scaler {
    src: (usize, usize),
    dst: (usize, usize),
    luma: PlaneMap,
    chroma: PlaneMap,
}

/// For one plane: where each destination column and row samples the source.
#[derive(Debug, Clone)]
struct PlaneMap {
    /// Source width (the stride of the source plane).
    src_width: usize,
    width: usize,
    /// Per destination column: left source column, weight of the right one (0..=256).
    cols: Vec<(usize, u16)>,
    /// Per destination row: top source row, weight of the bottom one.
    rows: Vec<(usize, u16)>,
}

impl PlaneMap {
    /// `crop` is (x, y, width, height) within a `src_width`-wide plane.
    fn new(
        src_width: usize,
        crop: (usize, usize, usize, usize),
        width: usize,
        height: usize,
    ) -> Self {
        let axis = |offset: usize, len: usize, out: usize| -> Vec<(usize, u16)> {
            (0..out)
                .map(|i| {
                    // Pixel centres: (i + 0.5) * len / out - 0.5, in 1/256ths.
                    let pos = ((2 * i + 1) * len * 256 / (2 * out)).saturating_sub(128);
                    let (p, frac) = (pos / 256, (pos % 256) as u16);
                    if p + 1 >= len {
                        (offset + len - 1, 0)
                    } else {
                        (offset + p, frac)
                    }
                })
                .collect()
        };
        Self {
            src_width,
            width,
            cols: axis(crop.0, crop.2, width),
            rows: axis(crop.1, crop.3, height),
        }
    }

    fn scale(&self, src: &[u8], dst: &mut [u8]) {
        let w = self.src_width;
        for (d, &(row, wy)) in dst.chunks_exact_mut(self.width).zip(&self.rows) {
            let top = &src[row * w..(row + 1) * w];
            let bottom = if wy == 0 {
                top
            } else {
                &src[(row + 1) * w..(row + 2) * w]
            };
            let (wy, wt) = (u32::from(wy), 256 - u32::from(wy));
            for (d, &(col, wx)) in d.iter_mut().zip(&self.cols) {
                let (wx, wl) = (u32::from(wx), 256 - u32::from(wx));
                let right = if wx == 0 { col } else { col + 1 };
                let t = u32::from(top[col]) * wl + u32::from(top[right]) * wx;
                let b = u32::from(bottom[col]) * wl + u32::from(bottom[right]) * wx;
                *d = ((t * wt + b * wy + (1 << 15)) >> 16) as u8;
            }
        }
    }
}

impl Scaler {
    pub fn new(
        src_width: usize,
        src_height: usize,
        width: usize,
        height: usize,
    ) -> Result<Self, ConvertError> {
        check_size(src_width, src_height)?;
        check_size(width, height)?;
        // The largest centred crop of the target's aspect ratio, even-sized.
        let (cw, ch) = if src_width * height > width * src_height {
            ((src_height * width / height) & !1, src_height)
        } else {
            (src_width, (src_width * height / width) & !1)
        };
        let (cw, ch) = (cw.max(2), ch.max(2));
        let (cx, cy) = (((src_width - cw) / 2) & !1, ((src_height - ch) / 2) & !1);
        Ok(Self {
            src: (src_width, src_height),
            dst: (width, height),
            luma: PlaneMap::new(src_width, (cx, cy, cw, ch), width, height),
            chroma: PlaneMap::new(
                src_width / 2,
                (cx / 2, cy / 2, cw / 2, ch / 2),
                width / 2,
                height / 2,
            ),
        })
    }

    pub fn source_size(&self) -> (usize, usize) {
        self.src
    }

    /// Scales `src` (of the source size) into `dst` (made the target size).
    pub fn scale(&self, src: &Frame, dst: &mut Frame) -> Result<(), ConvertError> {
        if (src.width, src.height) != self.src || src.data.len() < src.width * src.height * 3 / 2 {
            return Err(ConvertError::Size {
                width: src.width,
                height: src.height,
            });
        }
        reshape(dst, self.dst.0, self.dst.1);
        let (sy, su, sv) = src.planes();
        let (dy, du, dv) = dst.planes_mut();
        self.luma.scale(sy, dy);
        self.chroma.scale(su, du);
        self.chroma.scale(sv, dv);
        Ok(())
    }
}

/// Turns camera frames into I420 of the target size.
pub struct CameraConverter {
    format: PixelFormat,
    width: usize,
    height: usize,
    stride: usize,
    target: (usize, usize),
    scaler: Option<Scaler>,
    /// The picture at the camera's size, when it has to be scaled.
    staging: Frame,
    mjpeg: MjpegDecoder,
}

impl CameraConverter {
    pub fn new(
        format: PixelFormat,
        width: usize,
        height: usize,
        stride: usize,
        target: (usize, usize),
    ) -> Result<Self, ConvertError> {
        let scaler = if (width, height) == target {
            None
        } else {
            Some(Scaler::new(width, height, target.0, target.1)?)
        };
        Ok(Self {
            format,
            width,
            height,
            stride,
            target,
            scaler,
            staging: Frame::new(width, height),
            mjpeg: MjpegDecoder::new(),
        })
    }

    pub fn convert(&mut self, data: &[u8], out: &mut Frame) -> Result<(), ConvertError> {
        let direct = (self.width, self.height) == self.target;
        let (w, h) = (self.width, self.height);
        match self.format {
            PixelFormat::Mjpeg if direct => {
                self.mjpeg.decode(data, w, h, out)?;
                if (out.width, out.height) == self.target {
                    return Ok(());
                }
                // A JPEG smaller than announced: scale it like any other.
                std::mem::swap(out, &mut self.staging);
            }
            PixelFormat::Mjpeg => self.mjpeg.decode(data, w, h, &mut self.staging)?,
            raw if direct => return raw_to_i420(raw, data, self.stride, w, h, out),
            raw => raw_to_i420(raw, data, self.stride, w, h, &mut self.staging)?,
        }
        let size = (self.staging.width, self.staging.height);
        if self.scaler.as_ref().map(Scaler::source_size) != Some(size) {
            self.scaler = Some(Scaler::new(size.0, size.1, self.target.0, self.target.1)?);
        }
        let scaler = self.scaler.as_ref().expect("set just above");
        scaler.scale(&self.staging, out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A picture with detail in every plane: gradients plus a checker.
    pub(crate) fn test_picture(width: usize, height: usize) -> Frame {
        let mut f = Frame::new(width, height);
        let (y, u, v) = f.planes_mut();
        for (i, p) in y.iter_mut().enumerate() {
            let (x, r) = (i % width, i / width);
            *p = (16 + (x * 3 + r * 2) % 200 + if (x / 8 + r / 8) % 2 == 0 { 0 } else { 19 }) as u8;
        }
        let cw = width / 2;
        for (i, (u, v)) in u.iter_mut().zip(v.iter_mut()).enumerate() {
            let (x, r) = (i % cw, i / cw);
            *u = (16 + (x * 5 + r) % 224) as u8;
            *v = (240 - (x + r * 3) % 224) as u8;
        }
        f
    }

    /// I420 to YUYV with `stride` bytes per line (chroma repeated on both lines).
    pub(crate) fn pack_yuyv(f: &Frame, stride: usize) -> Vec<u8> {
        let (w, h) = (f.width, f.height);
        let (y, u, v) = f.planes();
        let mut out = vec![0xAA; stride * h];
        for r in 0..h {
            for x in 0..w / 2 {
                let c = (r / 2) * (w / 2) + x;
                let o = r * stride + 4 * x;
                out[o..o + 4].copy_from_slice(&[
                    y[r * w + 2 * x],
                    u[c],
                    y[r * w + 2 * x + 1],
                    v[c],
                ]);
            }
        }
        out
    }

    fn pack_nv12(f: &Frame, stride: usize) -> Vec<u8> {
        let (w, h) = (f.width, f.height);
        let (y, u, v) = f.planes();
        let mut out = vec![0xAA; stride * h * 3 / 2];
        for r in 0..h {
            out[r * stride..r * stride + w].copy_from_slice(&y[r * w..(r + 1) * w]);
        }
        for r in 0..h / 2 {
            for x in 0..w / 2 {
                let o = stride * h + r * stride + 2 * x;
                out[o] = u[r * w / 2 + x];
                out[o + 1] = v[r * w / 2 + x];
            }
        }
        out
    }

    fn pack_yu12(f: &Frame, stride: usize) -> Vec<u8> {
        let (w, h) = (f.width, f.height);
        let (y, u, v) = f.planes();
        let cs = stride / 2;
        let mut out = vec![0xAA; stride * h + cs * h];
        for r in 0..h {
            out[r * stride..r * stride + w].copy_from_slice(&y[r * w..(r + 1) * w]);
        }
        for (plane, start) in [(u, stride * h), (v, stride * h + cs * h / 2)] {
            for r in 0..h / 2 {
                let o = start + r * cs;
                out[o..o + w / 2].copy_from_slice(&plane[r * w / 2..(r + 1) * w / 2]);
            }
        }
        out
    }

    #[test]
    fn raw_formats_convert_back_to_the_same_picture() {
        for (w, h) in [(640, 480), (2, 2), (162, 98)] {
            let original = test_picture(w, h);
            for pad in [0, 32] {
                let mut out = Frame::new(8, 8);
                let yuyv = pack_yuyv(&original, 2 * w + pad);
                yuyv_to_i420(&yuyv, 2 * w + pad, w, h, &mut out).unwrap();
                assert_eq!(out.data, original.data, "YUYV {w}x{h} pad {pad}");
                let mut out = Frame::new(8, 8);
                nv12_to_i420(&pack_nv12(&original, w + pad), w + pad, w, h, &mut out).unwrap();
                assert_eq!(out.data, original.data, "NV12 {w}x{h} pad {pad}");
                let mut out = Frame::new(8, 8);
                yu12_to_i420(&pack_yu12(&original, w + pad), w + pad, w, h, &mut out).unwrap();
                assert_eq!(out.data, original.data, "YU12 {w}x{h} pad {pad}");
            }
        }
    }

    #[test]
    fn yuyv_chroma_of_two_lines_is_averaged() {
        // One 2x2 block: U 100 then 201 on the next line, V 50 then 51.
        let src = [10, 100, 11, 50, 12, 201, 13, 51];
        let mut out = Frame::new(2, 2);
        yuyv_to_i420(&src, 4, 2, 2, &mut out).unwrap();
        assert_eq!(out.data, [10, 11, 12, 13, 151, 51]);
    }

    #[test]
    fn a_stride_of_zero_means_tightly_packed() {
        let original = test_picture(64, 48);
        let mut out = Frame::new(2, 2);
        yuyv_to_i420(&pack_yuyv(&original, 128), 0, 64, 48, &mut out).unwrap();
        assert_eq!(out.data, original.data);
    }

    #[test]
    fn short_buffers_and_bad_sizes_are_errors_not_panics() {
        let original = test_picture(64, 48);
        let yuyv = pack_yuyv(&original, 128);
        let nv12 = pack_nv12(&original, 64);
        let yu12 = pack_yu12(&original, 64);
        let mut out = Frame::new(2, 2);
        for cut in [0, 1, 100, yuyv.len() - 1] {
            let e = yuyv_to_i420(&yuyv[..cut], 128, 64, 48, &mut out).unwrap_err();
            assert!(matches!(e, ConvertError::Short { .. }), "{e}");
        }
        for cut in [0, 64 * 48, nv12.len() - 1] {
            assert!(nv12_to_i420(&nv12[..cut], 64, 64, 48, &mut out).is_err());
            assert!(yu12_to_i420(&yu12[..cut], 64, 64, 48, &mut out).is_err());
        }
        for (w, h) in [(63, 48), (64, 47), (0, 48), (64, 0)] {
            let e = yuyv_to_i420(&yuyv, 0, w, h, &mut out).unwrap_err();
            assert_eq!(
                e,
                ConvertError::Size {
                    width: w,
                    height: h
                }
            );
        }
        let e = yuyv_to_i420(&yuyv, 100, 64, 48, &mut out).unwrap_err();
        assert!(e.to_string().contains("stride of 100"), "{e}");
        assert!(
            yu12_to_i420(&yu12, 65, 64, 48, &mut out).is_err(),
            "odd chroma stride"
        );
        let e = raw_to_i420(PixelFormat::Mjpeg, &yuyv, 0, 64, 48, &mut out).unwrap_err();
        assert!(matches!(e, ConvertError::Jpeg(_)));
        let e = yuyv_to_i420(&yuyv[..10], 128, 64, 48, &mut out).unwrap_err();
        assert_eq!(
            e.to_string(),
            "YUYV frame of 10 bytes is too short for 64x48 (6144 bytes needed)"
        );
    }

    /// BT.601 limited range from RGB, the reference the JPEG path is held to.
    fn rgb_to_i420_reference(rgb: &[u8], width: usize, height: usize) -> Frame {
        let mut f = Frame::new(width, height);
        let (y, u, v) = f.planes_mut();
        let px = |x: usize, r: usize| {
            let i = 3 * (r * width + x);
            (
                f64::from(rgb[i]),
                f64::from(rgb[i + 1]),
                f64::from(rgb[i + 2]),
            )
        };
        for r in 0..height {
            for x in 0..width {
                let (red, green, blue) = px(x, r);
                y[r * width + x] =
                    (16.0 + 0.257 * red + 0.504 * green + 0.098 * blue).round() as u8;
            }
        }
        for r in 0..height / 2 {
            for x in 0..width / 2 {
                let (mut cb, mut cr) = (0.0, 0.0);
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let (red, green, blue) = px(2 * x + dx, 2 * r + dy);
                    cb += 128.0 - 0.148 * red - 0.291 * green + 0.439 * blue;
                    cr += 128.0 + 0.439 * red - 0.368 * green - 0.071 * blue;
                }
                u[r * width / 2 + x] = (cb / 4.0).round() as u8;
                v[r * width / 2 + x] = (cr / 4.0).round() as u8;
            }
        }
        f
    }

    /// A smooth colourful RGB picture with some edges, like a scene.
    fn test_rgb(width: usize, height: usize) -> Vec<u8> {
        let mut rgb = Vec::with_capacity(width * height * 3);
        for r in 0..height {
            for x in 0..width {
                let square = (x / 40 + r / 40) % 3 == 0;
                rgb.push((x * 255 / width) as u8);
                rgb.push((r * 255 / height) as u8);
                rgb.push(if square { 220 } else { 60 });
            }
        }
        rgb
    }

    pub(crate) fn encode_jpeg(
        data: &[u8],
        width: usize,
        height: usize,
        color: jpeg_encoder::ColorType,
        sampling: jpeg_encoder::SamplingFactor,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut out, 95);
        enc.set_sampling_factor(sampling);
        enc.encode(data, width as u16, height as u16, color)
            .expect("encodes");
        out
    }

    fn mean_abs_error(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        let sum: u64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        sum as f64 / a.len() as f64
    }

    fn assert_close(got: &Frame, want: &Frame, what: &str) {
        assert_eq!((got.width, got.height), (want.width, want.height), "{what}");
        let (gy, gu, gv) = got.planes();
        let (wy, wu, wv) = want.planes();
        let (ey, eu, ev) = (
            mean_abs_error(gy, wy),
            mean_abs_error(gu, wu),
            mean_abs_error(gv, wv),
        );
        assert!(ey < 3.0, "{what}: mean error of Y {ey:.2}");
        assert!(
            eu < 5.0 && ev < 5.0,
            "{what}: mean error of U {eu:.2}, V {ev:.2}"
        );
    }

    #[test]
    fn mjpeg_decodes_to_i420_within_tolerance_at_420_and_422() {
        use jpeg_encoder::{ColorType, SamplingFactor};
        let (w, h) = (320, 240);
        let rgb = test_rgb(w, h);
        let want = rgb_to_i420_reference(&rgb, w, h);
        let mut dec = MjpegDecoder::new();
        for sampling in [
            SamplingFactor::R_4_2_0,
            SamplingFactor::R_4_2_2,
            SamplingFactor::R_4_4_4,
        ] {
            let jpeg = encode_jpeg(&rgb, w, h, ColorType::Rgb, sampling);
            let mut out = Frame::new(2, 2);
            dec.decode(&jpeg, w, h, &mut out).unwrap();
            assert_close(&out, &want, &format!("{sampling:?}"));
        }
    }

    #[test]
    fn greyscale_mjpeg_has_neutral_chroma() {
        let (w, h) = (64, 32);
        let grey: Vec<u8> = (0..w * h).map(|i| (i % 256) as u8).collect();
        let jpeg = encode_jpeg(
            &grey,
            w,
            h,
            jpeg_encoder::ColorType::Luma,
            jpeg_encoder::SamplingFactor::R_4_4_4,
        );
        let mut out = Frame::new(2, 2);
        MjpegDecoder::new().decode(&jpeg, w, h, &mut out).unwrap();
        let (y, u, v) = out.planes();
        assert!(u.iter().chain(v).all(|&c| c == 128));
        let expected: Vec<u8> = grey.iter().map(|&g| LUMA_TO_LIMITED[g as usize]).collect();
        assert!(mean_abs_error(y, &expected) < 3.0);
    }

    /// Removes every DHT segment, as UVC cameras send MJPEG.
    fn strip_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        let mut i = 2;
        while jpeg[i + 1] != 0xDA {
            let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
            if jpeg[i + 1] != 0xC4 {
                out.extend_from_slice(&jpeg[i..i + 2 + len]);
            }
            i += 2 + len;
        }
        out.extend_from_slice(&jpeg[i..]);
        out
    }

    #[test]
    fn uvc_mjpeg_without_huffman_tables_decodes_with_the_standard_ones() {
        let (w, h) = (160, 120);
        let rgb = test_rgb(w, h);
        let jpeg = encode_jpeg(
            &rgb,
            w,
            h,
            jpeg_encoder::ColorType::Rgb,
            jpeg_encoder::SamplingFactor::R_4_2_2,
        );
        let stripped = strip_huffman_tables(&jpeg);
        assert!(walk_header(&jpeg).huffman_tables);
        assert!(!walk_header(&stripped).huffman_tables);
        assert!(stripped.len() < jpeg.len());
        let mut dec = MjpegDecoder::new();
        let (mut a, mut b) = (Frame::new(2, 2), Frame::new(2, 2));
        dec.decode(&jpeg, w, h, &mut a).unwrap();
        dec.decode(&stripped, w, h, &mut b).unwrap();
        assert_eq!(a.data, b.data, "the encoder used the standard tables too");
    }

    #[test]
    fn corrupt_mjpeg_frames_are_errors_not_panics() {
        let (w, h) = (96, 64);
        let jpeg = encode_jpeg(
            &test_rgb(w, h),
            w,
            h,
            jpeg_encoder::ColorType::Rgb,
            jpeg_encoder::SamplingFactor::R_4_2_0,
        );
        let mut dec = MjpegDecoder::new();
        let mut out = Frame::new(2, 2);
        assert!(dec.decode(&[], w, h, &mut out).is_err());
        assert!(dec.decode(b"not a jpeg", w, h, &mut out).is_err());
        // Cut short anywhere (a USB frame that lost its tail): an error.
        for cut in (0..jpeg.len() - 2).step_by(7) {
            assert!(
                dec.decode(&jpeg[..cut], w, h, &mut out).is_err(),
                "a frame cut at {cut} of {} bytes decodes",
                jpeg.len()
            );
        }
        // Bytes flipped anywhere: no panic (an error or a damaged picture).
        let mut state = 0x2545_f491_u32;
        for _ in 0..300 {
            let mut bad = jpeg.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let i = state as usize % bad.len();
                bad[i] ^= (state >> 8) as u8 | 1;
            }
            let _ = dec.decode(&bad, w, h, &mut out);
        }
        // Still decodes good frames afterwards.
        dec.decode(&jpeg, w, h, &mut out).unwrap();
        assert_eq!((out.width, out.height), (w, h));
        let e = dec
            .decode(&jpeg[..jpeg.len() - 8], w, h, &mut out)
            .unwrap_err();
        assert!(e.to_string().contains("frame cut short"), "{e}");
    }

    #[test]
    fn mjpeg_padded_after_the_end_marker_decodes() {
        // Some cameras report the whole buffer, zeros after the picture.
        let (w, h) = (96, 64);
        let mut jpeg = encode_jpeg(
            &test_rgb(w, h),
            w,
            h,
            jpeg_encoder::ColorType::Rgb,
            jpeg_encoder::SamplingFactor::R_4_2_2,
        );
        let mut dec = MjpegDecoder::new();
        let mut clean = Frame::new(2, 2);
        dec.decode(&jpeg, w, h, &mut clean).unwrap();
        jpeg.extend_from_slice(&[0; 4096]);
        let mut padded = Frame::new(2, 2);
        dec.decode(&jpeg, w, h, &mut padded).unwrap();
        assert_eq!(clean.data, padded.data);
    }

    #[test]
    fn mjpeg_larger_than_announced_is_refused() {
        let jpeg = encode_jpeg(
            &test_rgb(64, 64),
            64,
            64,
            jpeg_encoder::ColorType::Rgb,
            jpeg_encoder::SamplingFactor::R_4_2_0,
        );
        let mut out = Frame::new(2, 2);
        let e = MjpegDecoder::new().decode(&jpeg, 32, 32, &mut out);
        assert!(e.is_err(), "{e:?}");
        // Odd sizes cannot be I420.
        let jpeg = encode_jpeg(
            &test_rgb(63, 64),
            63,
            64,
            jpeg_encoder::ColorType::Rgb,
            jpeg_encoder::SamplingFactor::R_4_2_0,
        );
        let e = MjpegDecoder::new()
            .decode(&jpeg, 64, 64, &mut out)
            .unwrap_err();
        assert_eq!(
            e,
            ConvertError::Size {
                width: 63,
                height: 64
            }
        );
    }

    #[test]
    fn range_tables_map_full_to_limited() {
        assert_eq!(LUMA_TO_LIMITED[0], 16);
        assert_eq!(LUMA_TO_LIMITED[255], 235);
        assert_eq!(CHROMA_TO_LIMITED[0], 16);
        assert_eq!(CHROMA_TO_LIMITED[128], 128);
        assert_eq!(CHROMA_TO_LIMITED[255], 240);
        assert!(LUMA_TO_LIMITED.windows(2).all(|w| w[0] <= w[1]));
        assert!(CHROMA_TO_LIMITED.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn scaling_to_the_same_size_is_a_copy() {
        let f = test_picture(64, 48);
        let s = Scaler::new(64, 48, 64, 48).unwrap();
        let mut out = Frame::new(2, 2);
        s.scale(&f, &mut out).unwrap();
        assert_eq!(out.data, f.data);
    }

    #[test]
    fn downscaling_keeps_flat_areas_and_gradients() {
        let (w, h) = (1280, 960);
        let mut f = Frame::new(w, h);
        {
            let (y, u, v) = f.planes_mut();
            for (i, p) in y.iter_mut().enumerate() {
                *p = (16 + (i % w) * 200 / w) as u8;
            }
            u.fill(90);
            v.fill(200);
        }
        let s = Scaler::new(w, h, 640, 480).unwrap();
        let mut out = Frame::new(2, 2);
        s.scale(&f, &mut out).unwrap();
        let (y, u, v) = out.planes();
        assert!(u.iter().all(|&c| c == 90) && v.iter().all(|&c| c == 200));
        let row = &y[100 * 640..101 * 640];
        assert!(row.windows(2).all(|p| p[0] <= p[1]), "monotonic");
        for x in [0, 100, 320, 639] {
            let expected = 16.0 + (2.0 * x as f64 + 0.5) * 200.0 / 1280.0;
            assert!(
                (f64::from(row[x]) - expected).abs() <= 1.5,
                "x {x}: {}",
                row[x]
            );
        }
    }

    #[test]
    fn a_wider_camera_is_cropped_at_the_sides_not_squeezed() {
        // 1280x720 with 160-pixel black bars at each side: cropped to 4:3
        // (960x720 in the middle), the bars are gone.
        let (w, h) = (1280, 720);
        let mut f = Frame::new(w, h);
        {
            let (y, u, v) = f.planes_mut();
            for (i, p) in y.iter_mut().enumerate() {
                let x = i % w;
                *p = if !(160..1120).contains(&x) { 16 } else { 180 };
            }
            u.fill(128);
            v.fill(128);
        }
        let s = Scaler::new(w, h, 640, 480).unwrap();
        let mut out = Frame::new(2, 2);
        s.scale(&f, &mut out).unwrap();
        assert_eq!((out.width, out.height), (640, 480));
        let (y, _, _) = out.planes();
        assert!(y.iter().all(|&p| p == 180), "no bar is left");
        // And the other way: a 4:3 camera for a 16:9 call loses top and bottom.
        let s = Scaler::new(640, 480, 640, 360).unwrap();
        let mut out2 = Frame::new(2, 2);
        s.scale(&out, &mut out2).unwrap();
        assert_eq!((out2.width, out2.height), (640, 360));
    }

    #[test]
    fn upscaling_small_pictures_works_and_mismatched_input_is_an_error() {
        let f = test_picture(160, 120);
        let s = Scaler::new(160, 120, 640, 480).unwrap();
        let mut out = Frame::new(2, 2);
        s.scale(&f, &mut out).unwrap();
        assert_eq!(out.data.len(), 640 * 480 * 3 / 2);
        let wrong = test_picture(162, 120);
        assert!(s.scale(&wrong, &mut out).is_err());
        assert!(Scaler::new(161, 120, 640, 480).is_err());
        // Extreme ratios still produce a picture.
        let s = Scaler::new(2, 2, 64, 64).unwrap();
        s.scale(&test_picture(2, 2), &mut out).unwrap();
        let s = Scaler::new(2000, 2, 64, 64).unwrap();
        s.scale(&test_picture(2000, 2), &mut out).unwrap();
    }
}
