//! What echo control costs (`media::echo`): the CPU of one 20 ms 48 kHz mono
//! microphone frame through the doorbell's wrappers (the reference taken from
//! the speaker's side, AEC3 with its high-pass filter and noise suppression,
//! the duplex rule), with the owner talking (a speech-like signal on the
//! speaker) and its echo in the microphone 60 ms later at -10 dB.
//!
//! Usage: cargo bench --bench echo

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use doorbell::media::echo::{Duplex, EchoPath, EchoSettings};
use doorbell::media::{AudioSink, AudioSource, MediaError, AUDIO_FRAME};

#[derive(Clone)]
struct Air(Arc<Mutex<VecDeque<i16>>>);

impl AudioSink for Air {
    fn write(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        self.0.lock().unwrap().extend(pcm.iter().map(|s| s / 3));
        Ok(())
    }
    fn describe(&self) -> String {
        "air".into()
    }
}

impl AudioSource for Air {
    fn read(&mut self, pcm: &mut [i16]) -> Result<(), MediaError> {
        let mut air = self.0.lock().unwrap();
        for s in pcm.iter_mut() {
            *s = air.pop_front().unwrap_or(0);
        }
        Ok(())
    }
    fn describe(&self) -> String {
        "air".into()
    }
}

fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn main() {
    let seconds = 20;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let (mut lp1, mut lp2) = (0.0f64, 0.0f64);
    let voice: Vec<i16> = (0..48_000 * seconds)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            lp1 = 0.8 * lp1 + 0.2 * x;
            lp2 = 0.8 * lp2 + 0.2 * lp1;
            let t = i as f64 / 48_000.0;
            let syllable = (0.5 + 0.5 * (std::f64::consts::TAU * 3.0 * t).sin()).powi(2);
            (lp2 * syllable * 32_000.0) as i16
        })
        .collect();
    println!("Echo control per 20 ms microphone frame, {seconds} s of the owner talking");
    for (name, settings) in [
        (
            "AEC3 + noise suppression, auto duplex [doorbell]",
            EchoSettings {
                cancel: true,
                duplex: Duplex::Auto,
            },
        ),
        (
            "half duplex only (no canceller)",
            EchoSettings {
                cancel: false,
                duplex: Duplex::Half,
            },
        ),
    ] {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let air = Air(Arc::new(Mutex::new(vec![0; 48 * 60].into())));
            let path = EchoPath::new(settings);
            let mut speaker = path.speaker(Box::new(air.clone()));
            let mut mic = path.microphone(Box::new(air)).unwrap();
            let mut frame = [0i16; AUDIO_FRAME];
            let mut cpu_mic = 0.0;
            for chunk in voice.chunks_exact(AUDIO_FRAME) {
                speaker.write(chunk).unwrap();
                let before = cpu_seconds();
                mic.read(&mut frame).unwrap();
                cpu_mic += cpu_seconds() - before;
            }
            let frames = (voice.len() / AUDIO_FRAME) as f64;
            best = best.min(cpu_mic / frames);
        }
        println!(
            "  {name:<50} {:>7.1} µs per frame ({:.2} % of one core)",
            best * 1e6,
            best / 0.020 * 100.0
        );
    }
}
