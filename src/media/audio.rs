//! Sound of one call: the microphone pipeline (capture -> Opus -> peer), the
//! playout of the viewer's voice (RTP -> jitter buffer -> Opus -> speaker), and
//! the `tone` microphone.
//!
//! Both run on their own threads, paced by the device or by an absolute 20 ms
//! schedule; the async side only moves packets, through bounded channels that
//! drop rather than queue when the other end is slow.

use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use super::jitter::{JitterBuffer, JitterConfig, Pop};
use super::tap::{CallTap, Tapped};
use super::{AudioSink, AudioSource, MediaError, AUDIO_FRAME, AUDIO_FRAME_DURATION, AUDIO_RATE};

/// A sine wave microphone at real-time pace.
pub struct Tone {
    hz: f32,
    /// The oscillator: a unit phasor turned by `step` each sample (two
    /// multiplications instead of a `sin` call), renormalised once per buffer.
    phasor: (f64, f64),
    step: (f64, f64),
    amplitude: f64,
    next_due: Option<Instant>,
}

impl Tone {
    pub fn new(hz: f32) -> Self {
        let w = 2.0 * std::f64::consts::PI * f64::from(hz) / f64::from(AUDIO_RATE);
        Self {
            hz,
            phasor: (1.0, 0.0),
            step: (w.cos(), w.sin()),
            // -12 dBFS: clearly audible, far from clipping.
            amplitude: 0.25 * f64::from(i16::MAX),
            next_due: None,
        }
    }

    /// Fills `pcm` without waiting (the generator itself).
    pub fn fill(&mut self, pcm: &mut [i16]) {
        let (mut c, mut s) = self.phasor;
        let (sc, ss) = self.step;
        for out in pcm.iter_mut() {
            *out = (self.amplitude * s) as i16;
            (c, s) = (c * sc - s * ss, c * ss + s * sc);
        }
        let norm = (c * c + s * s).sqrt();
        self.phasor = (c / norm, s / norm);
    }
}

impl AudioSource for Tone {
    fn read(&mut self, pcm: &mut [i16]) -> Result<(), MediaError> {
        let duration = Duration::from_secs_f64(pcm.len() as f64 / f64::from(AUDIO_RATE));
        let now = Instant::now();
        let due = match self.next_due {
            // More than 100 ms late (the thread was starved): resynchronise.
            Some(d) if now <= d + Duration::from_millis(100) => d,
            _ => now,
        };
        if let Some(wait) = due.checked_duration_since(now) {
            std::thread::sleep(wait);
        }
        self.next_due = Some(due + duration);
        self.fill(pcm);
        Ok(())
    }

    fn describe(&self) -> String {
        format!("tone {} Hz", self.hz)
    }
}

/// Opus for a doorbell: 48 kHz mono, 20 ms frames, 32 kbit/s, CELT only
/// ("restricted low delay"), complexity 5.
///
/// Measured on the build machine (`docs/performance.md`): CELT at complexity 5
/// costs about 85 µs per 20 ms frame against 155-245 µs for the SILK/hybrid
/// modes the VoIP default picks for speech, and its 5 ms algorithmic delay
/// (against 26.5 ms) shortens the conversation loop. The price: no in-band
/// FEC (a SILK feature); losses are concealed by the decoder instead.
pub struct OpusEncoder(opus::Encoder);

impl OpusEncoder {
    pub fn new() -> Result<Self, MediaError> {
        let err = |e: opus::Error| MediaError::Opus(e.to_string());
        let mut enc = opus::Encoder::new(
            AUDIO_RATE,
            opus::Channels::Mono,
            opus::Application::LowDelay,
        )
        .map_err(err)?;
        enc.set_bitrate(opus::Bitrate::Bits(32_000)).map_err(err)?;
        enc.set_complexity(5).map_err(err)?;
        Ok(Self(enc))
    }

    pub fn encode(&mut self, pcm: &[i16]) -> Result<Bytes, MediaError> {
        let mut buf = [0u8; 1500];
        let n = self
            .0
            .encode(pcm, &mut buf)
            .map_err(|e| MediaError::Opus(e.to_string()))?;
        Ok(Bytes::copy_from_slice(&buf[..n]))
    }
}

pub struct OpusDecoder(opus::Decoder);

impl OpusDecoder {
    pub fn new() -> Result<Self, MediaError> {
        opus::Decoder::new(AUDIO_RATE, opus::Channels::Mono)
            .map(Self)
            .map_err(|e| MediaError::Opus(e.to_string()))
    }

    /// Decodes a packet (any Opus frame length up to 120 ms) and appends the samples.
    pub fn decode(&mut self, packet: &[u8], out: &mut Vec<i16>) -> Result<(), MediaError> {
        let mut buf = [0i16; 5760];
        let n = self
            .0
            .decode(packet, &mut buf, false)
            .map_err(|e| MediaError::Opus(e.to_string()))?;
        out.extend_from_slice(&buf[..n]);
        Ok(())
    }

    /// Appends 20 ms of concealment for a lost packet.
    pub fn conceal(&mut self, out: &mut Vec<i16>) {
        let mut buf = [0i16; AUDIO_FRAME];
        match self.0.decode(&[], &mut buf, false) {
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => out.extend_from_slice(&[0; AUDIO_FRAME]),
        }
    }
}

/// One 20 ms Opus packet for the peer.
#[derive(Debug, Clone)]
pub struct AudioPacket {
    pub data: Bytes,
    pub duration: Duration,
}

/// Microphone -> Opus on a thread; packets to the async side.
pub struct MicPipeline {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub dropped: Arc<AtomicU64>,
}

impl MicPipeline {
    pub fn start(
        mut source: Box<dyn AudioSource>,
        out: mpsc::Sender<AudioPacket>,
        on_error: impl Fn(MediaError) + Send + 'static,
    ) -> Result<Self, MediaError> {
        let mut encoder = OpusEncoder::new()?;
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, dropped) = (stop.clone(), dropped.clone());
            std::thread::Builder::new()
                .name("audio-capture".into())
                .spawn(move || {
                    let mut pcm = [0i16; AUDIO_FRAME];
                    while !stop.load(Ordering::Acquire) {
                        if let Err(e) = source.read(&mut pcm) {
                            if !stop.load(Ordering::Acquire) {
                                on_error(e);
                            }
                            return;
                        }
                        let data = match encoder.encode(&pcm) {
                            Ok(d) => d,
                            Err(e) => {
                                on_error(e);
                                return;
                            }
                        };
                        let packet = AudioPacket {
                            data,
                            duration: AUDIO_FRAME_DURATION,
                        };
                        match out.try_send(packet) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                        }
                    }
                })
                .map_err(|e| MediaError::Opus(format!("cannot start the microphone thread: {e}")))?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
            dropped,
        })
    }

    /// Stops and joins (within one 20 ms read). Blocking.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MicPipeline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// An RTP packet of the viewer's audio.
#[derive(Debug, Clone)]
pub struct RemoteAudio {
    pub sequence: u16,
    pub payload: Bytes,
}

#[derive(Debug, Default)]
pub struct PlayoutStats {
    pub packets: AtomicU64,
    pub played: AtomicU64,
    pub concealed: AtomicU64,
    pub silent_ticks: AtomicU64,
    pub dropped_input: AtomicU64,
}

/// The viewers' voices on the door's speaker: per voice a jitter buffer
/// and an Opus decoder, summed (saturating) into one 20 ms frame on a thread
/// paced by an absolute schedule. Each [`Playout::input`] is a voice of its
/// own, so two owners talking at once are both heard.
pub struct Playout {
    input: std_mpsc::SyncSender<(u32, RemoteAudio)>,
    next_voice: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<PlayoutStats>,
}

/// A voice that sent nothing for this long is forgotten (its buffer and
/// decoder freed); if it speaks again it starts afresh.
const VOICE_IDLE_TICKS: u32 = 250; // 5 s

/// Most voices mixed at once (`call.max_viewers` is at most this).
pub const MAX_VOICES: usize = 16;

/// One viewer's sound on its way to the speaker.
struct Voice {
    jitter: JitterBuffer<Bytes>,
    decoder: OpusDecoder,
    /// Decoded samples not played yet (Opus frames may be longer than 20 ms).
    pcm: Vec<i16>,
    idle_ticks: u32,
}

impl Voice {
    fn new() -> Result<Self, MediaError> {
        Ok(Self {
            jitter: JitterBuffer::new(JitterConfig::default()),
            decoder: OpusDecoder::new()?,
            pcm: Vec::with_capacity(4 * AUDIO_FRAME),
            idle_ticks: 0,
        })
    }

    /// Adds this voice's next 20 ms to `mix`.
    fn mix_into(&mut self, mix: &mut [i32; AUDIO_FRAME], stats: &PlayoutStats) {
        if self.pcm.len() < AUDIO_FRAME {
            match self.jitter.pop() {
                Pop::Packet(p) => {
                    if self.decoder.decode(&p, &mut self.pcm).is_err() {
                        self.decoder.conceal(&mut self.pcm);
                    }
                    stats.played.fetch_add(1, Ordering::Relaxed);
                    self.idle_ticks = 0;
                }
                Pop::Lost => {
                    self.decoder.conceal(&mut self.pcm);
                    stats.concealed.fetch_add(1, Ordering::Relaxed);
                }
                Pop::Underrun => {
                    stats.silent_ticks.fetch_add(1, Ordering::Relaxed);
                    self.idle_ticks += 1;
                }
            }
            if self.pcm.len() < AUDIO_FRAME {
                self.pcm.resize(AUDIO_FRAME, 0);
            }
        }
        for (m, s) in mix.iter_mut().zip(self.pcm.drain(..AUDIO_FRAME)) {
            *m += i32::from(s);
        }
    }
}

impl Playout {
    pub fn start(
        mut sink: Box<dyn AudioSink>,
        on_error: impl Fn(MediaError) + Send + 'static,
    ) -> Result<Self, MediaError> {
        // Fail here, not on the thread, if Opus cannot decode at all.
        drop(OpusDecoder::new()?);
        let (input, packets) = std_mpsc::sync_channel::<(u32, RemoteAudio)>(64 * 4);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(PlayoutStats::default());
        let thread = {
            let (stop, stats) = (stop.clone(), stats.clone());
            std::thread::Builder::new()
                .name("audio-playout".into())
                .spawn(move || {
                    let mut voices: Vec<(u32, Voice)> = Vec::new();
                    let mut mix = [0i32; AUDIO_FRAME];
                    let mut out = [0i16; AUDIO_FRAME];
                    let mut due = Instant::now();
                    let mut failed = false;
                    while !stop.load(Ordering::Acquire) {
                        loop {
                            match packets.try_recv() {
                                Ok((id, p)) => {
                                    stats.packets.fetch_add(1, Ordering::Relaxed);
                                    let at = match voices.iter().position(|(v, _)| *v == id) {
                                        Some(at) => at,
                                        None if voices.len() < MAX_VOICES => {
                                            match Voice::new() {
                                                Ok(v) => voices.push((id, v)),
                                                Err(e) => {
                                                    on_error(e);
                                                    continue;
                                                }
                                            }
                                            voices.len() - 1
                                        }
                                        None => {
                                            stats.dropped_input.fetch_add(1, Ordering::Relaxed);
                                            continue;
                                        }
                                    };
                                    voices[at].1.jitter.push(p.sequence, p.payload);
                                }
                                Err(std_mpsc::TryRecvError::Empty) => break,
                                Err(std_mpsc::TryRecvError::Disconnected) => {
                                    stop.store(true, Ordering::Release);
                                    break;
                                }
                            }
                        }
                        mix.fill(0);
                        for (_, voice) in voices.iter_mut() {
                            voice.mix_into(&mut mix, &stats);
                        }
                        voices.retain(|(_, v)| v.idle_ticks < VOICE_IDLE_TICKS);
                        for (o, m) in out.iter_mut().zip(&mix) {
                            *o = (*m).clamp(i16::MIN.into(), i16::MAX.into()) as i16;
                        }
                        if !failed {
                            if let Err(e) = sink.write(&out) {
                                on_error(e);
                                failed = true; // keep draining packets; the call goes on
                            }
                        }
                        due += AUDIO_FRAME_DURATION;
                        let now = Instant::now();
                        if now > due + Duration::from_millis(100) {
                            due = now; // starved: resynchronise rather than burst
                        }
                        if let Some(wait) = due.checked_duration_since(now) {
                            std::thread::sleep(wait);
                        }
                    }
                    if let Err(e) = sink.finish() {
                        if !failed {
                            on_error(e);
                        }
                    }
                })
                .map_err(|e| MediaError::Opus(format!("cannot start the playout thread: {e}")))?
        };
        Ok(Self {
            input,
            next_voice: Arc::new(AtomicU32::new(0)),
            stop,
            thread: Some(thread),
            stats,
        })
    }

    /// Where the peer puts one viewer's packets (never blocks; drops when
    /// full): a voice of its own in the mix.
    pub fn input(&self) -> RemoteAudioInput {
        self.inputs().input()
    }

    /// A handle that makes [`Playout::input`]s, apart from the playout.
    pub fn inputs(&self) -> RemoteAudioInputs {
        RemoteAudioInputs {
            tx: self.input.clone(),
            next_voice: self.next_voice.clone(),
            stats: self.stats.clone(),
        }
    }

    pub fn stats(&self) -> &PlayoutStats {
        &self.stats
    }

    /// Stops, flushes the sink and joins. Blocking.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Playout {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Makes the inputs of new voices of a [`Playout`].
#[derive(Clone)]
pub struct RemoteAudioInputs {
    tx: std_mpsc::SyncSender<(u32, RemoteAudio)>,
    next_voice: Arc<AtomicU32>,
    stats: Arc<PlayoutStats>,
}

impl RemoteAudioInputs {
    /// The input of a new voice.
    pub fn input(&self) -> RemoteAudioInput {
        RemoteAudioInput {
            voice: self.next_voice.fetch_add(1, Ordering::Relaxed),
            tx: self.tx.clone(),
            stats: self.stats.clone(),
            tap: None,
        }
    }
}

/// The sending end of one voice of a [`Playout`].
#[derive(Clone)]
pub struct RemoteAudioInput {
    voice: u32,
    tx: std_mpsc::SyncSender<(u32, RemoteAudio)>,
    stats: Arc<PlayoutStats>,
    tap: Option<CallTap>,
}

impl RemoteAudioInput {
    pub fn push(&self, packet: RemoteAudio) {
        if let Some(tap) = &self.tap {
            tap.send(Tapped::ViewerAudio {
                sequence: packet.sequence,
                data: packet.payload.clone(),
            });
        }
        if self.tx.try_send((self.voice, packet)).is_err() {
            self.stats.dropped_input.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The same input, also feeding `tap`.
    pub fn tapped(mut self, tap: Option<CallTap>) -> Self {
        self.tap = tap;
        self
    }
}

/// The dominant frequency of `pcm` by counting rising zero crossings; `None`
/// for (near) silence. For tests and `doorbell check`.
/// The share (0..1) of the signal's power near `hz` (a Hann-windowed Goertzel
/// filter): about 1 for a pure tone at `hz`, near 0 when `hz` is absent. Unlike
/// [`dominant_frequency`] it copes with harmonics and mixtures.
pub fn power_share(pcm: &[i16], hz: f64) -> f64 {
    let n = pcm.len();
    if n < 2 {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(AUDIO_RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2, mut energy) = (0.0f64, 0.0f64, 0.0f64);
    for (i, s) in pcm.iter().enumerate() {
        let hann = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (n - 1) as f64).cos();
        let x = f64::from(*s) * hann;
        energy += x * x;
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    if energy == 0.0 {
        return 0.0;
    }
    let magnitude = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    // A sine of amplitude A under a Hann window: |X|^2 = (A N / 4)^2, windowed
    // energy = 3 A^2 N / 16, so the ratio below is 1 for a pure tone.
    (3.0 * magnitude / (n as f64 * energy)).min(1.0)
}

pub fn dominant_frequency(pcm: &[i16]) -> Option<f64> {
    let rms =
        (pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / pcm.len().max(1) as f64).sqrt();
    if rms < 100.0 {
        return None;
    }
    let crossings = pcm.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
    Some(crossings as f64 * f64::from(AUDIO_RATE) / pcm.len() as f64)
}

/// Root mean square level of `pcm`.
pub fn rms(pcm: &[i16]) -> f64 {
    (pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / pcm.len().max(1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::memory::MemorySink;

    #[test]
    fn power_share_finds_a_tone_among_others() {
        let mut a = vec![0i16; 4800];
        Tone::new(659.0).fill(&mut a);
        assert!(power_share(&a, 659.0) > 0.9, "{}", power_share(&a, 659.0));
        assert!(power_share(&a, 523.0) < 0.01);
        let mut b = vec![0i16; 4800];
        Tone::new(1318.0).fill(&mut b);
        let mix: Vec<i16> = a.iter().zip(&b).map(|(x, y)| x / 2 + y / 2).collect();
        let share = power_share(&mix, 659.0);
        assert!((0.4..0.6).contains(&share), "{share}");
        assert_eq!(power_share(&[0; 100], 659.0), 0.0);
    }

    #[test]
    fn tone_has_its_frequency_and_level() {
        let mut t = Tone::new(1000.0);
        let mut pcm = vec![0i16; AUDIO_RATE as usize];
        t.fill(&mut pcm);
        let f = dominant_frequency(&pcm).unwrap();
        assert!((f - 1000.0).abs() < 2.0, "{f}");
        assert!((rms(&pcm) - 0.25 * 32767.0 / 2f64.sqrt()).abs() < 50.0);
    }

    #[test]
    fn opus_round_trip_keeps_the_tone() {
        let mut t = Tone::new(440.0);
        let mut enc = OpusEncoder::new().unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let mut out = Vec::new();
        for _ in 0..50 {
            let mut pcm = [0i16; AUDIO_FRAME];
            t.fill(&mut pcm);
            let packet = enc.encode(&pcm).unwrap();
            assert!(packet.len() < 200);
            dec.decode(&packet, &mut out).unwrap();
        }
        let f = dominant_frequency(&out[AUDIO_FRAME * 5..]).unwrap();
        assert!((f - 440.0).abs() < 440.0 * 0.05, "{f}");
    }

    #[test]
    fn playout_decodes_reordered_packets_and_pads_silence() {
        let (sink, got) = MemorySink::new();
        let playout = Playout::start(Box::new(sink), |e| panic!("{e}")).unwrap();
        let input = playout.input();
        let mut t = Tone::new(600.0);
        let mut enc = OpusEncoder::new().unwrap();
        let mut packets = Vec::new();
        for seq in 0..25u16 {
            let mut pcm = [0i16; AUDIO_FRAME];
            t.fill(&mut pcm);
            packets.push(RemoteAudio {
                sequence: seq,
                payload: enc.encode(&pcm).unwrap(),
            });
        }
        // Swap neighbours, at the real-time pace: the jitter buffer puts them back.
        for pair in packets.chunks(2) {
            for p in pair.iter().rev() {
                input.push(p.clone());
            }
            std::thread::sleep(Duration::from_millis(40));
        }
        std::thread::sleep(Duration::from_millis(200));
        playout.stop();
        let pcm = got.lock().unwrap().clone();
        assert_eq!(pcm.len() % AUDIO_FRAME, 0);
        let voiced: Vec<i16> = pcm.iter().copied().skip_while(|s| *s == 0).collect();
        let f = dominant_frequency(&voiced[..AUDIO_FRAME * 15]).unwrap();
        assert!((f - 600.0).abs() < 30.0, "{f}");
    }

    /// 20 ms Opus packets of a tone, numbered from 0.
    fn tone_packets(hz: f32, count: u16) -> Vec<RemoteAudio> {
        let mut t = Tone::new(hz);
        let mut enc = OpusEncoder::new().unwrap();
        (0..count)
            .map(|sequence| {
                let mut pcm = [0i16; AUDIO_FRAME];
                t.fill(&mut pcm);
                RemoteAudio {
                    sequence,
                    payload: enc.encode(&pcm).unwrap(),
                }
            })
            .collect()
    }

    #[test]
    fn playout_mixes_two_voices_and_keeps_one_when_the_other_stops() {
        let (sink, got) = MemorySink::new();
        let playout = Playout::start(Box::new(sink), |e| panic!("{e}")).unwrap();
        let (a, b) = (playout.input(), playout.input());
        let (low, high) = (tone_packets(523.0, 50), tone_packets(784.0, 25));
        // Both voices for 0.5 s, then only the first one (the other left).
        for (i, p) in low.iter().enumerate() {
            a.push(p.clone());
            if let Some(q) = high.get(i) {
                b.push(q.clone());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        playout.stop();
        let pcm = got.lock().unwrap().clone();
        let start = pcm.iter().position(|s| *s != 0).unwrap();
        let both = &pcm[start + AUDIO_FRAME * 5..start + AUDIO_FRAME * 20];
        let (s523, s784) = (power_share(both, 523.0), power_share(both, 784.0));
        assert!(s523 > 0.3 && s784 > 0.3, "mixed: {s523} {s784}");
        let alone = &pcm[start + AUDIO_FRAME * 32..start + AUDIO_FRAME * 45];
        let (s523, s784) = (power_share(alone, 523.0), power_share(alone, 784.0));
        assert!(s523 > 0.8 && s784 < 0.05, "one left: {s523} {s784}");
    }
}
