//! Talk without echo: the door's microphone hears the door's speaker, and
//! without this the owner hears their own voice come back a moment later.
//!
//! An [`EchoPath`] joins the two ends of the door's sound. The speaker is
//! wrapped so every sample it is given is kept as the echo canceller's
//! reference; the microphone is wrapped so each 20 ms it reads first goes
//! through WebRTC's echo canceller (AEC3, the pure-Rust port in the `aec3`
//! crate: high-pass filter, AEC3, noise suppression; no automatic gain, the
//! microphone's gain is `audio.microphone_gain_db`), then through the duplex
//! rule (`audio.duplex`):
//!
//! - `full`: the microphone is always open; the canceller alone removes the echo.
//! - `half`: the microphone is muted while the owner's voice plays (and for
//!   [`HANGOVER_FRAMES`] after, the echo's tail), like an intercom.
//! - `auto` (the default): full while the canceller removes enough of the
//!   echo, half while it does not. The echo return loss enhancement (ERLE:
//!   how much quieter the microphone's sound is after the canceller than
//!   before, while the speaker plays) is measured every frame the speaker
//!   is loud; over the last 3 s of speaker sound ([`DuplexRule::erle`]) below
//!   [`AUTO_HALF_BELOW_DB`] switches to half, above [`AUTO_FULL_ABOVE_DB`]
//!   back to full. The canceller keeps running and measuring while half.
//!   The measure cannot tell double talk from a failing canceller: a visitor
//!   talking over the owner for seconds on end reads as echo left, and auto
//!   goes half until the owner has spoken alone again for a moment.
//!
//! It only makes sense where there is air between the two: the composition
//! root uses it when both the microphone and the speaker are sound devices,
//! never for a tone or a WAV file.
//!
//! The decision ([`DuplexRule`]) is plain code fed one measurement per frame;
//! the canceller ([`EchoCanceller`]) is plain code fed samples; only the two
//! wrappers touch a shared buffer (the reference, written by the playout
//! thread and read by the microphone thread).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aec3::nodes::audio::AudioFormat;
use aec3::pipelines::linear::{self, LinearPipeline};

use super::{AudioSink, AudioSource, MediaError, AUDIO_RATE};

/// The canceller works on 10 ms frames.
pub const AEC_FRAME: usize = (AUDIO_RATE / 100) as usize;
/// The reference kept for a microphone that is late or not reading: 1 s.
const REFERENCE_LIMIT: usize = AUDIO_RATE as usize;
/// The speaker counts as playing above this RMS (-50 dBFS).
const SPEAKER_ACTIVE_RMS: f64 = 32768.0 * 0.003_16;
/// Half duplex keeps the microphone muted this many 10 ms frames after the
/// speaker went quiet: the echo's path and the room's reverberation.
pub const HANGOVER_FRAMES: u32 = 25;
/// Frames of speaker sound the automatic rule measures over (3 s).
const AUTO_WINDOW: usize = 300;
/// Auto switches to half duplex below this ERLE...
pub const AUTO_HALF_BELOW_DB: f32 = 16.0;
/// ...and back to full above this one.
pub const AUTO_FULL_ABOVE_DB: f32 = 22.0;
/// The mute fades in and out over this many samples (5 ms), without a click.
const FADE_SAMPLES: f32 = 240.0;

/// `audio.duplex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplex {
    Full,
    Half,
    Auto,
}

impl Duplex {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(Self::Full),
            "half" => Ok(Self::Half),
            "auto" => Ok(Self::Auto),
            other => Err(format!("{other:?} is not full, half or auto")),
        }
    }
}

/// `audio.echo_cancellation` and `audio.duplex`, parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EchoSettings {
    /// Run the canceller. Off, `auto` behaves as `half` (nothing measures).
    pub cancel: bool,
    pub duplex: Duplex,
}

impl Default for EchoSettings {
    fn default() -> Self {
        Self {
            cancel: true,
            duplex: Duplex::Auto,
        }
    }
}

/// AEC3 on 48 kHz mono, 10 ms at a time.
pub struct EchoCanceller {
    pipeline: LinearPipeline,
    render: [f32; AEC_FRAME],
    capture: [f32; AEC_FRAME],
    output: [f32; AEC_FRAME],
}

impl EchoCanceller {
    pub fn new() -> Result<Self, MediaError> {
        let format = AudioFormat::ten_ms(AUDIO_RATE, 1);
        let pipeline = linear::builder(format, format)
            .enable_gain_controller2(false)
            .build()
            .map_err(|e| MediaError::Echo(e.to_string()))?;
        Ok(Self {
            pipeline,
            render: [0.0; AEC_FRAME],
            capture: [0.0; AEC_FRAME],
            output: [0.0; AEC_FRAME],
        })
    }

    /// 10 ms of what the speaker was given.
    pub fn render(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        to_float(pcm, &mut self.render);
        self.pipeline
            .handle_render_frame(&self.render)
            .map_err(|e| MediaError::Echo(e.to_string()))
    }

    /// 10 ms of the microphone, the echo taken out in place.
    pub fn capture(&mut self, pcm: &mut [i16]) -> Result<(), MediaError> {
        to_float(pcm, &mut self.capture);
        self.pipeline
            .process_capture_frame(&self.capture, &mut self.output)
            .map_err(|e| MediaError::Echo(e.to_string()))?;
        for (s, o) in pcm.iter_mut().zip(&self.output) {
            *s = (o * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        }
        Ok(())
    }
}

// SAFETY: the pipeline is `!Send` because its graph runtime passes packets
// between its nodes as `Rc`s and keeps its nodes as trait objects. Every `Rc`
// it makes stays inside it: this wrapper only copies samples in and out and
// never calls the methods that hand out packets, so all clones of each `Rc`
// move together with the pipeline, and it is used by one thread at a time
// (`&mut self`). The crate's thread-local buffer pool only recycles `Vec`s.
unsafe impl Send for EchoCanceller {}

fn to_float(pcm: &[i16], out: &mut [f32; AEC_FRAME]) {
    for (o, s) in out.iter_mut().zip(pcm) {
        *o = f32::from(*s) / 32768.0;
    }
}

/// Mean power of 16-bit samples.
pub fn power(pcm: &[i16]) -> f64 {
    if pcm.is_empty() {
        return 0.0;
    }
    pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / pcm.len() as f64
}

/// What one 10 ms frame measured, for the duplex rule.
#[derive(Debug, Clone, Copy)]
pub struct FrameMeasure {
    /// The speaker's reference was loud in this frame.
    pub speaker_active: bool,
    /// Microphone power before and after the canceller (`None` without one).
    pub before_after: Option<(f64, f64)>,
}

/// The duplex decision, one frame at a time: no clocks, no IO.
#[derive(Debug)]
pub struct DuplexRule {
    duplex: Duplex,
    /// Frames since the speaker was last loud (saturating).
    quiet_frames: u32,
    /// Microphone power before and after the canceller in the last frames
    /// with speaker sound, oldest first.
    window: VecDeque<(f64, f64)>,
    /// Auto only: currently half.
    auto_half: bool,
}

/// What the rule decided for a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub mute: bool,
    /// Auto changed between full and half with this frame: `Some(half)`.
    pub switched: Option<bool>,
}

impl DuplexRule {
    pub fn new(settings: EchoSettings) -> Self {
        Self {
            // Nothing to measure without the canceller: auto is half.
            duplex: if settings.cancel {
                settings.duplex
            } else if settings.duplex == Duplex::Auto {
                Duplex::Half
            } else {
                settings.duplex
            },
            quiet_frames: u32::MAX,
            window: VecDeque::with_capacity(AUTO_WINDOW),
            auto_half: false,
        }
    }

    pub fn step(&mut self, m: FrameMeasure) -> Decision {
        self.quiet_frames = if m.speaker_active {
            0
        } else {
            self.quiet_frames.saturating_add(1)
        };
        let mut switched = None;
        if m.speaker_active {
            if let Some((before, after)) = m.before_after {
                if self.window.len() == AUTO_WINDOW {
                    self.window.pop_front();
                }
                // A rest too faint to hear counts as removed.
                let after = if after < INAUDIBLE_POWER {
                    before * 1e-6
                } else {
                    after
                };
                self.window.push_back((before, after));
            }
            if self.duplex == Duplex::Auto && self.window.len() == AUTO_WINDOW {
                let erle = self.erle().expect("a full window");
                let half = if self.auto_half {
                    erle < AUTO_FULL_ABOVE_DB
                } else {
                    erle < AUTO_HALF_BELOW_DB
                };
                if half != self.auto_half {
                    self.auto_half = half;
                    switched = Some(half);
                }
            }
        }
        let half = match self.duplex {
            Duplex::Full => false,
            Duplex::Half => true,
            Duplex::Auto => self.auto_half,
        };
        Decision {
            mute: half && self.quiet_frames <= HANGOVER_FRAMES,
            switched,
        }
    }

    /// The ERLE over the window (the microphone's energy before the
    /// canceller against after it, in the frames the speaker played), once
    /// anything was measured. Energy, not a mean of per-frame ratios: the
    /// loud moments, where an echo is heard, weigh the most.
    pub fn erle(&self) -> Option<f32> {
        if self.window.is_empty() {
            return None;
        }
        let (before, after) = self
            .window
            .iter()
            .fold((0.0, 0.0), |(b, a), (fb, fa)| (b + fb, a + fa));
        Some((10.0 * (before / after).log10()) as f32)
    }
}

/// Below this power (-60 dBFS RMS) what is left of the echo is inaudible,
/// whatever the ratio: a faint echo in a quiet room measures a low ERLE that
/// does not matter, so such a rest counts as removed (60 dB).
const INAUDIBLE_POWER: f64 = 32.768 * 32.768;

/// What the echo control did, for logs and tests.
#[derive(Debug, Default)]
pub struct EchoStats {
    /// ERLE over the last 3 s of speaker sound, dB ([`f32::to_bits`]).
    erle_db: AtomicU32,
    pub measured: AtomicBool,
    pub frames: AtomicU64,
    pub muted_frames: AtomicU64,
    /// Auto is half duplex now.
    pub half: AtomicBool,
    /// Times auto went half.
    pub went_half: AtomicU64,
}

impl EchoStats {
    pub fn erle_db(&self) -> Option<f32> {
        self.measured
            .load(Ordering::Relaxed)
            .then(|| f32::from_bits(self.erle_db.load(Ordering::Relaxed)))
    }
}

/// The reference between the speaker and the microphone.
#[derive(Clone, Debug)]
pub struct EchoPath {
    settings: EchoSettings,
    reference: Arc<Mutex<VecDeque<i16>>>,
    stats: Arc<Mutex<Arc<EchoStats>>>,
}

impl EchoPath {
    pub fn new(settings: EchoSettings) -> Self {
        Self {
            settings,
            reference: Arc::new(Mutex::new(VecDeque::with_capacity(REFERENCE_LIMIT))),
            stats: Arc::new(Mutex::new(Arc::new(EchoStats::default()))),
        }
    }

    /// The speaker, keeping what it plays as the reference.
    pub fn speaker(&self, inner: Box<dyn AudioSink>) -> Box<dyn AudioSink> {
        Box::new(ReferenceSink {
            inner,
            reference: self.reference.clone(),
        })
    }

    /// The microphone with the echo taken out (a canceller of its own, so
    /// each call starts converging afresh: a new caller, a new echo level).
    pub fn microphone(
        &self,
        inner: Box<dyn AudioSource>,
    ) -> Result<Box<dyn AudioSource>, MediaError> {
        let canceller = if self.settings.cancel {
            Some(EchoCanceller::new()?)
        } else {
            None
        };
        // What the speaker played before this microphone opened is no
        // reference for anything it will hear.
        lock(&self.reference).clear();
        let stats = Arc::new(EchoStats::default());
        *lock(&self.stats) = stats.clone();
        Ok(Box::new(EchoControlledSource {
            inner,
            canceller,
            rule: DuplexRule::new(self.settings),
            reference: self.reference.clone(),
            pending: Vec::with_capacity(REFERENCE_LIMIT),
            gain: 1.0,
            stats,
            failed: false,
        }))
    }

    /// The figures of the newest microphone.
    pub fn stats(&self) -> Arc<EchoStats> {
        lock(&self.stats).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct ReferenceSink {
    inner: Box<dyn AudioSink>,
    reference: Arc<Mutex<VecDeque<i16>>>,
}

impl AudioSink for ReferenceSink {
    fn write(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        {
            let mut r = lock(&self.reference);
            r.extend(pcm);
            let over = r.len().saturating_sub(REFERENCE_LIMIT);
            r.drain(..over);
        }
        self.inner.write(pcm)
    }

    fn finish(&mut self) -> Result<(), MediaError> {
        self.inner.finish()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

struct EchoControlledSource {
    inner: Box<dyn AudioSource>,
    canceller: Option<EchoCanceller>,
    rule: DuplexRule,
    reference: Arc<Mutex<VecDeque<i16>>>,
    /// The reference taken from the shared buffer, not yet given to the
    /// canceller (less than 10 ms).
    pending: Vec<i16>,
    /// The microphone's gain now (0 muted, 1 open), fading.
    gain: f32,
    stats: Arc<EchoStats>,
    /// The canceller failed once (logged): the microphone goes on without it.
    failed: bool,
}

impl EchoControlledSource {
    /// Gives the canceller the reference that arrived; whether the speaker
    /// was loud in it.
    fn feed_reference(&mut self) -> Result<bool, MediaError> {
        self.pending.extend(lock(&self.reference).drain(..));
        let whole = self.pending.len() / AEC_FRAME * AEC_FRAME;
        let mut active = false;
        for chunk in self.pending[..whole].chunks_exact(AEC_FRAME) {
            active |= power(chunk).sqrt() > SPEAKER_ACTIVE_RMS;
            if let Some(c) = self.canceller.as_mut() {
                c.render(chunk)?;
            }
        }
        self.pending.drain(..whole);
        Ok(active)
    }

    fn process(&mut self, frame: &mut [i16]) -> Result<(), MediaError> {
        let speaker_active = self.feed_reference()?;
        let before_after = match self.canceller.as_mut() {
            Some(c) => {
                let before = power(frame);
                c.capture(frame)?;
                Some((before, power(frame)))
            }
            None => None,
        };
        let decision = self.rule.step(FrameMeasure {
            speaker_active,
            before_after,
        });
        if let Some(erle) = self.rule.erle() {
            self.stats.erle_db.store(erle.to_bits(), Ordering::Relaxed);
            self.stats.measured.store(true, Ordering::Relaxed);
        }
        match decision.switched {
            Some(true) => {
                self.stats.half.store(true, Ordering::Relaxed);
                self.stats.went_half.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    erle_db = self.rule.erle(),
                    "the echo canceller removes too little of the speaker's echo: \
                     the microphone now mutes while the owner speaks (audio.duplex = \"auto\")"
                );
            }
            Some(false) => {
                self.stats.half.store(false, Ordering::Relaxed);
                tracing::info!(
                    erle_db = self.rule.erle(),
                    "the echo canceller removes the echo again: full duplex"
                );
            }
            None => {}
        }
        self.stats.frames.fetch_add(1, Ordering::Relaxed);
        if decision.mute {
            self.stats.muted_frames.fetch_add(1, Ordering::Relaxed);
        }
        let target = if decision.mute { 0.0 } else { 1.0 };
        if self.gain != target || target == 0.0 {
            for s in frame.iter_mut() {
                self.gain = if target > self.gain {
                    (self.gain + 1.0 / FADE_SAMPLES).min(1.0)
                } else {
                    (self.gain - 1.0 / FADE_SAMPLES).max(0.0)
                };
                *s = (f32::from(*s) * self.gain).round() as i16;
            }
        }
        Ok(())
    }
}

impl AudioSource for EchoControlledSource {
    fn read(&mut self, pcm: &mut [i16]) -> Result<(), MediaError> {
        self.inner.read(pcm)?;
        if self.failed || !pcm.len().is_multiple_of(AEC_FRAME) {
            return Ok(());
        }
        for frame in pcm.chunks_exact_mut(AEC_FRAME) {
            if let Err(e) = self.process(frame) {
                // The call goes on with the plain microphone.
                tracing::warn!("echo control stops for this call: {e}");
                self.failed = true;
                break;
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let what = match (self.canceller.is_some(), self.rule.duplex) {
            (true, Duplex::Full) => "echo cancelled",
            (true, Duplex::Half) => "echo cancelled, half duplex",
            (true, Duplex::Auto) => "echo cancelled, half duplex when it falls short",
            (false, _) => "half duplex",
        };
        format!("{} ({what})", self.inner.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(active: bool, erle: f64) -> FrameMeasure {
        let before = 1e7;
        FrameMeasure {
            speaker_active: active,
            before_after: Some((before, before * 10f64.powf(-erle / 10.0))),
        }
    }

    #[test]
    fn the_erle_weighs_loud_frames_and_an_inaudible_rest_counts_as_cancelled() {
        let mut rule = DuplexRule::new(EchoSettings::default());
        let frame = |before: f64, after: f64| FrameMeasure {
            speaker_active: true,
            before_after: Some((before, after)),
        };
        rule.step(frame(1e8, 1e6));
        assert!((rule.erle().unwrap() - 20.0).abs() < 1e-3);
        // A quiet frame with little removed hardly changes it.
        rule.step(frame(1e4, 2.5e3));
        assert!((rule.erle().unwrap() - 20.0).abs() < 0.1);
        // What is left below -60 dBFS counts as removed.
        let mut rule = DuplexRule::new(EchoSettings::default());
        rule.step(frame(1e4, 1e3));
        assert!((rule.erle().unwrap() - 60.0).abs() < 0.1);
    }

    #[test]
    fn full_never_mutes_and_half_mutes_while_the_speaker_plays_and_its_tail() {
        let mut full = DuplexRule::new(EchoSettings {
            cancel: true,
            duplex: Duplex::Full,
        });
        let mut half = DuplexRule::new(EchoSettings {
            cancel: true,
            duplex: Duplex::Half,
        });
        assert!(
            !half.step(measure(false, 0.0)).mute,
            "open before the owner speaks"
        );
        for _ in 0..50 {
            assert!(!full.step(measure(true, 3.0)).mute);
            assert!(half.step(measure(true, 3.0)).mute);
        }
        for i in 1..=HANGOVER_FRAMES + 1 {
            let d = half.step(measure(false, 0.0));
            assert_eq!(
                d.mute,
                i <= HANGOVER_FRAMES,
                "frame {i} after the speaker stopped"
            );
        }
    }

    #[test]
    fn auto_goes_half_when_the_echo_stays_and_back_when_it_is_cancelled() {
        let mut rule = DuplexRule::new(EchoSettings::default());
        let mut switched = Vec::new();
        for _ in 0..AUTO_WINDOW - 1 {
            let d = rule.step(measure(true, 5.0));
            assert!(!d.mute, "no decision before a full window");
        }
        // Quiet frames do not count towards the window.
        for _ in 0..100 {
            assert_eq!(rule.step(measure(false, 0.0)).switched, None);
        }
        let d = rule.step(measure(true, 5.0));
        assert_eq!(d.switched, Some(true));
        assert!(d.mute);
        switched.push(d.switched);
        // 19 dB is between the thresholds: it stays half.
        for _ in 0..AUTO_WINDOW {
            assert_eq!(rule.step(measure(true, 19.0)).switched, None);
        }
        let mut back = None;
        for i in 0..AUTO_WINDOW {
            if let Some(s) = rule.step(measure(true, 30.0)).switched {
                back = Some((i, s));
            }
        }
        let (at, half) = back.expect("back to full");
        assert!(!half);
        // Once the 30 dB frames' share of the window's energy is enough:
        // 163 of 300 with the rest at 19 dB.
        assert_eq!(at, 162);
    }

    #[test]
    fn auto_without_a_canceller_is_half() {
        let mut rule = DuplexRule::new(EchoSettings {
            cancel: false,
            duplex: Duplex::Auto,
        });
        assert!(
            rule.step(FrameMeasure {
                speaker_active: true,
                before_after: None
            })
            .mute
        );
    }

    #[test]
    fn duplex_parses_its_three_words_only() {
        assert_eq!(Duplex::parse("auto"), Ok(Duplex::Auto));
        assert_eq!(Duplex::parse("half"), Ok(Duplex::Half));
        assert_eq!(Duplex::parse("full"), Ok(Duplex::Full));
        assert!(Duplex::parse("Full").is_err());
    }
}
