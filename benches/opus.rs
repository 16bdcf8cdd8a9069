//! Why the doorbell encodes Opus the way it does (`media::audio::OpusEncoder`):
//! the CPU of one 20 ms 48 kHz mono frame at 32 kbit/s in the modes libopus
//! offers, on a speech-like signal (a tone plus a gliding harmonic voice).
//!
//! Usage: cargo bench --bench opus

use std::time::Instant;

fn main() {
    let mut pcm = vec![0i16; 48_000 * 10];
    for (i, s) in pcm.iter_mut().enumerate() {
        let t = i as f64 / 48_000.0;
        let tau = 2.0 * std::f64::consts::PI;
        let voice = 0.3 * (tau * (200.0 + 20.0 * (6.0 * t).sin()) * t).sin();
        *s = (8000.0 * ((tau * 440.0 * t).sin() + voice)) as i16;
    }
    let modes: [(&str, opus::Application, i32, Option<opus::Signal>); 6] = [
        (
            "VoIP, complexity 10 (libopus default)",
            opus::Application::Voip,
            10,
            None,
        ),
        ("VoIP, complexity 5", opus::Application::Voip, 5, None),
        (
            "VoIP, complexity 5, voice hint",
            opus::Application::Voip,
            5,
            Some(opus::Signal::Voice),
        ),
        (
            "low delay (CELT), complexity 10",
            opus::Application::LowDelay,
            10,
            None,
        ),
        (
            "low delay (CELT), complexity 5 [doorbell]",
            opus::Application::LowDelay,
            5,
            None,
        ),
        (
            "low delay (CELT), complexity 3",
            opus::Application::LowDelay,
            3,
            None,
        ),
    ];
    println!("Opus, 48 kHz mono, 20 ms frames, 32 kbit/s, 10 s of a speech-like signal");
    for (name, app, complexity, signal) in modes {
        let mut e = opus::Encoder::new(48_000, opus::Channels::Mono, app).unwrap();
        e.set_bitrate(opus::Bitrate::Bits(32_000)).unwrap();
        e.set_complexity(complexity).unwrap();
        if let Some(s) = signal {
            e.set_signal(s).unwrap();
        }
        let mut out = [0u8; 1500];
        // Best of three, to step around a busy machine.
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            for frame in pcm.chunks(960) {
                e.encode(frame, &mut out).unwrap();
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{name:44} {:6.1} us/frame  {:5.1} ms CPU per call-second",
            best * 1e6 / 500.0,
            best * 100.0
        );
    }
}
