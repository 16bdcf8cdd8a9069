//! An MJPEG frame from a USB camera (what the USB bus delivers, torn frames
//! included), decoded to I420 within the size the camera announced.
#![no_main]

use doorbell::media::convert::MjpegDecoder;
use doorbell::media::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decoder = MjpegDecoder::new();
    let mut out = Frame::new(2, 2);
    let _ = decoder.decode(data, 640, 480, &mut out);
});
