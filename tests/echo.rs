//! Talk without echo, measured: the door's speaker heard again by its
//! microphone through an echo path built in software (delay and attenuation,
//! a little room noise), the owner's voice on the speaker, sometimes the
//! visitor speaking at the same time.
//!
//! The path runs through the real wrappers the doorbell puts around its
//! devices ([`EchoPath::speaker`], [`EchoPath::microphone`]: the reference,
//! AEC3, noise suppression, the duplex rule), 20 ms at a time as the playout
//! and microphone threads do. Prints the echo return loss enhancement (ERLE)
//! after convergence and how much of the visitor's voice survives double
//! talk, for each delay (`cargo test --test echo -- --nocapture`; the
//! figures are in docs/performance.md).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use doorbell::media::echo::{Duplex, EchoPath, EchoSettings};
use doorbell::media::{AudioSink, AudioSource, MediaError, AUDIO_FRAME, AUDIO_RATE};

const RATE: usize = AUDIO_RATE as usize;

/// xorshift: the same "voices" every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// The owner's voice, as far as an echo canceller cares: band-limited noise
/// in syllables (3 a second), peaks around -12 dBFS.
fn owner_voice(seconds: usize, seed: u64) -> Vec<i16> {
    let mut rng = Rng(seed);
    let (mut lp1, mut lp2) = (0.0, 0.0);
    (0..seconds * RATE)
        .map(|i| {
            lp1 = 0.8 * lp1 + 0.2 * rng.next();
            lp2 = 0.8 * lp2 + 0.2 * lp1;
            let t = i as f64 / RATE as f64;
            let syllable = (0.5 + 0.5 * (2.0 * std::f64::consts::PI * 3.0 * t).sin()).powi(2);
            (lp2 * syllable * 4.0 * 8000.0).clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// The visitor: two tones (voiced speech is harmonics) at -23 dBFS together.
const VISITOR_HZ: [f64; 2] = [440.0, 1250.0];

fn visitor_voice(i: usize) -> f64 {
    let t = i as f64 / RATE as f64;
    2000.0 * (2.0 * std::f64::consts::PI * VISITOR_HZ[0] * t).sin()
        + 1000.0 * (2.0 * std::f64::consts::PI * VISITOR_HZ[1] * t).sin()
}

/// The air between the speaker and the microphone.
#[derive(Clone)]
struct Room {
    air: Arc<Mutex<VecDeque<f64>>>,
    attenuation: f64,
    /// What the microphone picked up before any processing.
    heard: Arc<Mutex<Vec<i16>>>,
    /// The visitor speaks from this sample on (`usize::MAX`: never).
    visitor_from: usize,
    /// What the speaker really plays is not what it was given (a reference
    /// that does not match, as with a sound server mixing in other sounds).
    unrelated: Option<Arc<Mutex<Rng>>>,
}

impl Room {
    fn new(delay_ms: usize, attenuation_db: f64, visitor_from: usize) -> Self {
        Self {
            air: Arc::new(Mutex::new(vec![0.0; delay_ms * RATE / 1000].into())),
            attenuation: 10f64.powf(-attenuation_db / 20.0),
            heard: Arc::default(),
            visitor_from,
            unrelated: None,
        }
    }
}

impl AudioSink for Room {
    fn write(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        let mut air = self.air.lock().unwrap();
        for s in pcm {
            let played = match &self.unrelated {
                Some(rng) => rng.lock().unwrap().next() * f64::from(s.unsigned_abs()),
                None => f64::from(*s),
            };
            air.push_back(played * self.attenuation);
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "the room".into()
    }
}

struct Microphone {
    room: Room,
    at: usize,
    noise: Rng,
}

impl AudioSource for Microphone {
    fn read(&mut self, pcm: &mut [i16]) -> Result<(), MediaError> {
        let mut air = self.room.air.lock().unwrap();
        for s in pcm.iter_mut() {
            let echo = air.pop_front().unwrap_or(0.0);
            let visitor = if self.at >= self.room.visitor_from {
                visitor_voice(self.at)
            } else {
                0.0
            };
            // Room noise around -60 dBFS.
            let noise = 30.0 * self.noise.next();
            *s = (echo + visitor + noise).round().clamp(-32768.0, 32767.0) as i16;
            self.at += 1;
        }
        self.room.heard.lock().unwrap().extend_from_slice(pcm);
        Ok(())
    }

    fn describe(&self) -> String {
        "the room's microphone".into()
    }
}

/// Runs `seconds` of the owner talking through the door; returns what the
/// microphone heard and what the doorbell sends.
fn talk(settings: EchoSettings, room: Room, seconds: usize) -> (Vec<i16>, Vec<i16>, EchoPath) {
    let path = EchoPath::new(settings);
    let mut speaker = path.speaker(Box::new(room.clone()));
    let mut mic = path
        .microphone(Box::new(Microphone {
            room: room.clone(),
            at: 0,
            noise: Rng(99),
        }))
        .unwrap();
    let owner = owner_voice(seconds, 7);
    let mut sent = Vec::with_capacity(owner.len());
    let mut frame = [0i16; AUDIO_FRAME];
    for chunk in owner.chunks_exact(AUDIO_FRAME) {
        speaker.write(chunk).unwrap();
        mic.read(&mut frame).unwrap();
        sent.extend_from_slice(&frame);
    }
    let heard = room.heard.lock().unwrap().clone();
    (heard, sent, path)
}

fn power(pcm: &[i16]) -> f64 {
    pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / pcm.len() as f64
}

fn db(ratio: f64) -> f64 {
    10.0 * ratio.log10()
}

/// Power at one frequency (Goertzel), per sample.
fn tone_power(pcm: &[i16], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / RATE as f64;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for x in pcm {
        let s0 = f64::from(*x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (pcm.len() as f64).powi(2)
}

fn seconds(pcm: &[i16], from: usize, to: usize) -> &[i16] {
    &pcm[from * RATE..to * RATE]
}

const FULL: EchoSettings = EchoSettings {
    cancel: true,
    duplex: Duplex::Full,
};

#[test]
fn the_owner_does_not_hear_their_own_voice_back_at_any_delay_from_20_to_200_ms() {
    println!("| echo delay | echo level | ERLE after 3 s | visitor kept in double talk |");
    println!("|---|---|---|---|");
    for (delay_ms, attenuation_db) in [(20, 6.0), (60, 10.0), (120, 10.0), (200, 20.0)] {
        // Echo alone for 8 s, then the visitor speaks too for 4 s.
        let (heard, sent, _) = talk(FULL, Room::new(delay_ms, attenuation_db, 8 * RATE), 12);
        let erle = db(power(seconds(&heard, 3, 8)) / power(seconds(&sent, 3, 8)));
        let visitor_in: f64 = VISITOR_HZ
            .iter()
            .map(|hz| tone_power(seconds(&heard, 9, 12), *hz))
            .sum();
        let visitor_out: f64 = VISITOR_HZ
            .iter()
            .map(|hz| tone_power(seconds(&sent, 9, 12), *hz))
            .sum();
        let kept = db(visitor_out / visitor_in);
        println!("| {delay_ms} ms | -{attenuation_db} dB | {erle:.1} dB | {kept:+.1} dB |");
        assert!(
            erle >= 25.0,
            "{delay_ms} ms: ERLE {erle:.1} dB, below 25 dB"
        );
        assert!(
            kept > -6.0,
            "{delay_ms} ms: the visitor lost {kept:.1} dB in double talk"
        );
    }
}

#[test]
fn half_duplex_mutes_the_microphone_while_the_owner_speaks_and_opens_after() {
    let settings = EchoSettings {
        cancel: false,
        duplex: Duplex::Half,
    };
    // The visitor speaks all along; the owner for 4 s.
    let (heard, sent, path) = talk(settings, Room::new(60, 10.0, 0), 4);
    assert!(
        db(power(seconds(&heard, 1, 4)) / power(seconds(&sent, 1, 4))) > 40.0,
        "muted while the owner speaks"
    );
    let stats = path.stats();
    assert!(
        stats
            .muted_frames
            .load(std::sync::atomic::Ordering::Relaxed)
            > 300
    );
    // The owner stops: the visitor is heard again after the echo's tail.
    let path = EchoPath::new(settings);
    let room = Room::new(60, 10.0, 0);
    let mut speaker = path.speaker(Box::new(room.clone()));
    let mut mic = path
        .microphone(Box::new(Microphone {
            room,
            at: 0,
            noise: Rng(5),
        }))
        .unwrap();
    let owner = owner_voice(1, 3);
    let mut frame = [0i16; AUDIO_FRAME];
    for chunk in owner.chunks_exact(AUDIO_FRAME) {
        speaker.write(chunk).unwrap();
        mic.read(&mut frame).unwrap();
    }
    let mut after = Vec::new();
    for _ in 0..50 {
        speaker.write(&[0; AUDIO_FRAME]).unwrap();
        mic.read(&mut frame).unwrap();
        after.extend_from_slice(&frame);
    }
    // 1 s after: the last 0.5 s carries the visitor at full level.
    let visitor: f64 = VISITOR_HZ
        .iter()
        .map(|hz| tone_power(&after[RATE / 2..], *hz))
        .sum();
    // Full level: a sine of amplitude A has A²/4 here.
    let full = 2000f64.powi(2) / 4.0 + 1000f64.powi(2) / 4.0;
    assert!(
        db(visitor / full) > -1.0,
        "visitor back: {:.1} dB",
        db(visitor / full)
    );
}

#[test]
fn auto_stays_full_duplex_where_the_canceller_works_and_goes_half_while_it_falls_short() {
    use std::sync::atomic::Ordering::Relaxed;
    let (_, _, path) = talk(EchoSettings::default(), Room::new(120, 10.0, usize::MAX), 8);
    let stats = path.stats();
    let erle = stats.erle_db().expect("measured");
    println!("the echo canceller working: ERLE {erle:.1} dB over the last 3 s");
    assert!(erle >= 25.0);
    assert_eq!(stats.went_half.load(Relaxed), 0);
    assert_eq!(stats.muted_frames.load(Relaxed), 0);

    // The speaker plays loud sound the reference does not predict (the
    // microphone right beside it, something else mixed in on the way). AEC3's
    // suppressor, following the reference's loudness, removes some of it
    // (13 to 17 dB here), not enough: auto mutes the microphone while the
    // owner speaks.
    let mut room = Room::new(120, -20.0, usize::MAX);
    room.unrelated = Some(Arc::new(Mutex::new(Rng(11))));
    let (heard, sent, path) = talk(EchoSettings::default(), room, 12);
    let stats = path.stats();
    let muted = stats.muted_frames.load(Relaxed);
    println!(
        "a reference that does not match: went half {} time(s), {muted} of {} frames muted, ERLE now {:.1} dB",
        stats.went_half.load(Relaxed),
        stats.frames.load(Relaxed),
        stats.erle_db().unwrap_or(f32::NAN),
    );
    assert_eq!(stats.went_half.load(Relaxed), 1);
    assert!(stats.half.load(Relaxed));
    // Half by then: the owner's voice does not come back.
    let removed = db(power(seconds(&heard, 10, 12)) / power(seconds(&sent, 10, 12)));
    assert!(removed > 40.0, "{removed:.1} dB");
}
