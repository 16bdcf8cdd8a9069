//! What a V4L2 driver reports about its formats (fourcc, sizes discrete or
//! stepwise, rates discrete or stepwise, any numbers at all), and the choice
//! the doorbell makes from it for a request.
#![no_main]

use doorbell::media::negotiate::{
    negotiate, summary, FormatDesc, Fourcc, FrameSize, Interval, Rates, Request, SizeRange,
};
use libfuzzer_sys::fuzz_target;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
    fn u32(&mut self) -> u32 {
        // Small numbers most of the time, any number sometimes.
        match self.u8() % 4 {
            0 => u32::from(self.u8()),
            1 => u32::from(self.u8()) * 16,
            2 => u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()]),
            _ => {
                [0, 1, 2, 30, 320, 240, 640, 480, 1280, 720, u32::MAX][usize::from(self.u8()) % 11]
            }
        }
    }
    fn interval(&mut self) -> Interval {
        Interval::new(self.u32(), self.u32())
    }
    fn rates(&mut self) -> Rates {
        match self.u8() % 3 {
            0 => Rates::Discrete((0..self.u8() % 6).map(|_| self.interval()).collect()),
            1 => Rates::Stepwise {
                min: self.interval(),
                max: self.interval(),
                step: self.interval(),
            },
            _ => Rates::Unknown,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let fourccs = [
        *b"YUYV",
        *b"NV12",
        *b"YU12",
        *b"MJPG",
        *b"H264",
        *b"\0\0\0\0",
    ];
    let formats: Vec<FormatDesc> = (0..b.u8() % 5)
        .map(|_| FormatDesc {
            fourcc: Fourcc(fourccs[usize::from(b.u8()) % fourccs.len()]),
            description: "fuzz".into(),
            sizes: (0..b.u8() % 5)
                .map(|_| {
                    if b.u8() % 2 == 0 {
                        FrameSize::Discrete {
                            width: b.u32(),
                            height: b.u32(),
                            rates: b.rates(),
                        }
                    } else {
                        FrameSize::Stepwise {
                            range: SizeRange {
                                min_width: b.u32(),
                                max_width: b.u32(),
                                step_width: b.u32(),
                                min_height: b.u32(),
                                max_height: b.u32(),
                                step_height: b.u32(),
                            },
                            rates: b.rates(),
                            rates_at: (b.u32(), b.u32()),
                        }
                    }
                })
                .collect(),
        })
        .collect();
    let request = Request {
        width: b.u32(),
        height: b.u32(),
        fps: b.u32(),
    };
    let _ = summary(&formats);
    if let Ok(choice) = negotiate(&formats, request) {
        let _ = format!("{choice:?}");
    }
});
