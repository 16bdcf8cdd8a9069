//! Sound cards through cpal (the only module that imports it): the microphone
//! and the speaker by name, at whatever rate the device runs, converted to and
//! from 48 kHz mono with rubato.
//!
//! cpal streams live on a thread of their own (a stream may not be `Send`),
//! and talk to the call through small bounded buffers: the speaker plays
//! silence on underrun and drops the oldest audio on overrun, so the delay
//! stays bounded whatever the clocks do; the microphone drops the oldest audio
//! if the call falls behind.

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{BufferSize, FromSample, SampleFormat, SizedSample, StreamConfig, SupportedBufferSize};
use rubato::audioadapter::{Adapter, AdapterMut};
use rubato::{Fft, FixedSync, Resampler};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{AudioSink, AudioSource, MediaError, AUDIO_RATE};

/// The ALSA host, with ALSA's own error printing routed into our log first.
fn host() -> cpal::Host {
    super::alsa_log::route_to_log();
    cpal::default_host()
}

fn device_error(device: &str, message: impl std::fmt::Display) -> MediaError {
    MediaError::Device {
        device: device.to_string(),
        message: message.to_string(),
    }
}

/// Converts mono audio between two fixed rates, in a stream.
pub struct RateConverter {
    resampler: Option<Fft<f32>>,
    pending: Vec<f32>,
    scratch: Vec<f32>,
}

/// Mono f32 samples seen as an audio adapter (one channel).
struct Mono<'a>(&'a [f32]);
struct MonoMut<'a>(&'a mut [f32]);

impl<'a> Adapter<'a, f32> for Mono<'a> {
    unsafe fn read_sample_unchecked(&self, _channel: usize, frame: usize) -> f32 {
        // SAFETY: callers stay within frames(), per the trait's contract.
        unsafe { *self.0.get_unchecked(frame) }
    }
    fn channels(&self) -> usize {
        1
    }
    fn frames(&self) -> usize {
        self.0.len()
    }
}

impl<'a> Adapter<'a, f32> for MonoMut<'a> {
    unsafe fn read_sample_unchecked(&self, _channel: usize, frame: usize) -> f32 {
        // SAFETY: callers stay within frames(), per the trait's contract.
        unsafe { *self.0.get_unchecked(frame) }
    }
    fn channels(&self) -> usize {
        1
    }
    fn frames(&self) -> usize {
        self.0.len()
    }
}

impl<'a> AdapterMut<'a, f32> for MonoMut<'a> {
    unsafe fn write_sample_unchecked(
        &mut self,
        _channel: usize,
        frame: usize,
        value: &f32,
    ) -> bool {
        // SAFETY: callers stay within frames(), per the trait's contract.
        unsafe { *self.0.get_unchecked_mut(frame) = *value };
        false
    }
}

impl RateConverter {
    pub fn new(from: u32, to: u32) -> Result<Self, MediaError> {
        let resampler = if from == to {
            None
        } else {
            // 10 ms chunks: small delay, efficient FFT sizes for 44.1/48 kHz.
            let chunk = (from / 100) as usize;
            Some(
                Fft::<f32>::new(from as usize, to as usize, chunk, 1, 1, FixedSync::Input)
                    .map_err(|e| device_error("resampler", format!("{from} Hz -> {to} Hz: {e}")))?,
            )
        };
        Ok(Self {
            resampler,
            pending: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// Converts `input`, appending whatever output is ready to `out`.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let Some(r) = self.resampler.as_mut() else {
            out.extend_from_slice(input);
            return;
        };
        self.pending.extend_from_slice(input);
        loop {
            let need = r.input_frames_next();
            if self.pending.len() < need {
                return;
            }
            self.scratch.resize(r.output_frames_max(), 0.0);
            let result = r.process_into_buffer(
                &Mono(&self.pending[..need]),
                &mut MonoMut(&mut self.scratch),
                None,
            );
            match result {
                Ok((used, produced)) => {
                    out.extend_from_slice(&self.scratch[..produced]);
                    self.pending.drain(..used);
                }
                Err(e) => {
                    tracing::warn!("resampling failed, dropping {need} samples: {e}");
                    self.pending.drain(..need);
                }
            }
        }
    }
}

/// A sound card input or output as `doorbell devices` shows it.
#[derive(Debug, Clone)]
pub struct AudioDeviceInfo {
    /// What to write after `device:` in the config.
    pub name: String,
    /// A longer description when the backend has one.
    pub description: String,
    /// Default rate and channels, or why they cannot be read.
    pub format: Result<(u32, u16), String>,
    pub is_default: bool,
}

/// Every input (`input = true`) or output the audio backend (ALSA) knows.
pub fn list(input: bool) -> Result<Vec<AudioDeviceInfo>, MediaError> {
    let host = host();
    let default_id = if input {
        host.default_input_device()
    } else {
        host.default_output_device()
    }
    .and_then(|d| d.id().ok())
    .map(|i| i.id().to_string());
    let devices = if input {
        host.input_devices()
    } else {
        host.output_devices()
    }
    .map_err(|e| device_error("audio", e))?;
    let mut out = Vec::new();
    for d in devices {
        let name = d.id().map(|i| i.id().to_string()).unwrap_or_default();
        let description = d
            .description()
            .map(|x| x.name().to_string())
            .unwrap_or_default();
        let format = if input {
            d.default_input_config()
        } else {
            d.default_output_config()
        }
        .map(|c| (c.sample_rate(), c.channels()))
        .map_err(|e| e.to_string());
        out.push(AudioDeviceInfo {
            is_default: default_id.as_deref() == Some(name.as_str()),
            name,
            description,
            format,
        });
    }
    Ok(out)
}

/// What to do about a sound device that failed to open, from its error.
pub fn hint(error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    if e.contains("permission denied") {
        "add the user to the audio group (sudo usermod -aG audio USER)"
    } else if e.contains("busy") {
        "another program holds the device; use a shared one (`default`, `pulse`, or a dmix/dsnoop PCM)"
    } else if e.contains("no such") || e.contains("no default") || e.contains("not found") {
        "`doorbell devices` lists the names to use; is the sound card plugged in?"
    } else if e.contains("connection refused") || e.contains("pulse") {
        "is the PulseAudio/PipeWire server of this user running?"
    } else {
        "see docs/hardware.md (Audio)"
    }
}

/// Whether the default speaker can actually be opened (ALSA may name a
/// `default` device on a machine with no sound card). The demo falls back to a
/// WAV file when it cannot.
pub fn default_output_works() -> Result<(), MediaError> {
    DeviceSink::open("default").map(drop)
}

/// Finds a device: `default`, then an exact id or name, then (ALSA) a PCM name.
fn find_device(name: &str, input: bool) -> Result<cpal::Device, MediaError> {
    let host = host();
    let what = if input { "microphone" } else { "speaker" };
    if name == "default" {
        let d = if input {
            host.default_input_device()
        } else {
            host.default_output_device()
        };
        return d.ok_or_else(|| {
            device_error(
                name,
                format!("no default {what} (is a sound card present?)"),
            )
        });
    }
    let devices = if input {
        host.input_devices()
    } else {
        host.output_devices()
    };
    if let Ok(devices) = devices {
        for d in devices {
            let id = d.id().map(|i| i.id().to_string()).unwrap_or_default();
            let desc = d
                .description()
                .map(|x| x.name().to_string())
                .unwrap_or_default();
            if id == name || desc == name {
                return Ok(d);
            }
        }
    }
    host.device_by_id(&cpal::DeviceId::new(host.id(), name))
        .ok_or_else(|| {
            device_error(
                name,
                format!("no such {what}; `doorbell devices` lists them"),
            )
        })
}

/// A config close to what we want: the device's default rate and format, a
/// fixed 40 ms period when the device allows it.
fn stream_config(
    name: &str,
    supported: cpal::SupportedStreamConfig,
) -> (StreamConfig, SampleFormat) {
    let rate = supported.sample_rate();
    // 40 ms periods (cpal double-buffers: 80 ms in the device). 20 ms periods
    // starve capture through ALSA's PulseAudio plugin (measured: 2 s of audio
    // took 4 s to arrive, or none came for a second); 40 ms delivers in real
    // time there and on plain ALSA hardware.
    let want = (rate / 25).max(64);
    let buffer_size = match supported.buffer_size() {
        SupportedBufferSize::Range { min, max } if (*min..=*max).contains(&want) => {
            BufferSize::Fixed(want)
        }
        SupportedBufferSize::Range { min, max } => BufferSize::Fixed(want.clamp(*min, *max)),
        SupportedBufferSize::Unknown => {
            tracing::debug!(
                device = name,
                "buffer size range unknown; using the device default"
            );
            BufferSize::Default
        }
    };
    let format = supported.sample_format();
    tracing::debug!(
        device = name,
        rate,
        range = ?supported.buffer_size(),
        chosen = ?buffer_size,
        "stream buffer"
    );
    let config = StreamConfig {
        channels: supported.channels(),
        sample_rate: rate,
        buffer_size,
    };
    (config, format)
}

/// Whether a stream error ends the device. cpal's ALSA worker keeps the
/// stream running after anything but a disconnection (it recovers xruns
/// itself), and some errors are spurious: ALSA's PulseAudio plugin fails
/// `snd_pcm_avail_delay` with EIO while the server has no timing information
/// yet, right after opening (alsa-plugins issue 65). Those are logged, not
/// fatal; a device that really stops delivering is caught by the capture
/// timeout instead.
fn is_fatal(e: &cpal::Error) -> bool {
    use cpal::ErrorKind as K;
    let fatal = matches!(e.kind(), K::DeviceNotAvailable | K::HostUnavailable);
    if !fatal {
        static LAST: Mutex<Option<std::time::Instant>> = Mutex::new(None);
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last = Some(std::time::Instant::now());
            tracing::debug!("sound device hiccup (recovered): {e}");
        }
    }
    fatal
}

/// Shared between the speaker's writer and its cpal callback.
struct Ring {
    samples: Mutex<VecDeque<f32>>,
    capacity: usize,
}

/// Runs a cpal stream on a thread of its own (a cpal stream is not `Send`,
/// so it lives and dies on the thread that built it): builds it with
/// `build`, starts it, reports within 5 s whether that worked, and keeps it
/// until `stop`. `role` names the thread and the log lines.
fn stream_thread(
    name: &str,
    role: &'static str,
    stop: Arc<AtomicBool>,
    build: impl FnOnce() -> Result<cpal::Stream, String> + Send + 'static,
) -> Result<JoinHandle<()>, MediaError> {
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let label = name.to_string();
    let thread = std::thread::Builder::new()
        .name(role.into())
        .spawn(move || {
            let stream = match build().and_then(|s| s.play().map(|_| s).map_err(|e| e.to_string()))
            {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            while !stop.load(Ordering::Acquire) {
                std::thread::park_timeout(Duration::from_millis(200));
            }
            drop(stream);
            tracing::debug!(device = %label, "{role} closed");
        })
        .map_err(|e| device_error(name, e))?;
    match ready_rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => Err(device_error(name, e)),
        Err(_) => Err(device_error(name, "the device did not start within 5 s")),
    }
}

/// A speaker by name.
pub struct DeviceSink {
    name: String,
    rate: u32,
    ring: Arc<Ring>,
    converter: RateConverter,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    failed: Arc<Mutex<Option<String>>>,
    converted: Vec<f32>,
}

impl DeviceSink {
    pub fn open(name: &str) -> Result<Self, MediaError> {
        let device = find_device(name, false)?;
        let supported = device
            .default_output_config()
            .map_err(|e| device_error(name, e))?;
        let (config, format) = stream_config(name, supported);
        let rate = config.sample_rate;
        // 200 ms at most between the call and the speaker.
        let ring = Arc::new(Ring {
            samples: Mutex::new(VecDeque::with_capacity(rate as usize / 5)),
            capacity: rate as usize / 5,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(Mutex::new(None));
        let thread = {
            let (ring, failed) = (ring.clone(), failed.clone());
            stream_thread(name, "speaker", stop.clone(), move || match format {
                SampleFormat::F32 => output_stream::<f32>(&device, config, ring, failed),
                SampleFormat::I16 => output_stream::<i16>(&device, config, ring, failed),
                SampleFormat::I32 => output_stream::<i32>(&device, config, ring, failed),
                SampleFormat::U8 => output_stream::<u8>(&device, config, ring, failed),
                other => Err(format!("sample format {other} is not supported")),
            })?
        };
        tracing::info!(
            device = name,
            rate,
            channels = config.channels,
            "speaker open"
        );
        Ok(Self {
            name: name.to_string(),
            rate,
            ring,
            converter: RateConverter::new(AUDIO_RATE, rate)?,
            stop,
            thread: Some(thread),
            failed,
            converted: Vec::new(),
        })
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }
}

fn output_stream<T: SizedSample + FromSample<f32>>(
    device: &cpal::Device,
    config: StreamConfig,
    ring: Arc<Ring>,
    failed: Arc<Mutex<Option<String>>>,
) -> Result<cpal::Stream, String> {
    let channels = usize::from(config.channels);
    device
        .build_output_stream::<T, _, _>(
            config,
            move |out: &mut [T], _| {
                let mut samples = ring.samples.lock().unwrap_or_else(|p| p.into_inner());
                for frame in out.chunks_mut(channels) {
                    let v = samples.pop_front().unwrap_or(0.0);
                    frame.fill(T::from_sample(v));
                }
            },
            move |e| {
                if is_fatal(&e) {
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                }
            },
            Some(Duration::from_secs(2)),
        )
        .map_err(|e| e.to_string())
}

impl AudioSink for DeviceSink {
    fn write(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        if let Some(e) = self.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(device_error(&self.name, e));
        }
        let input: Vec<f32> = pcm.iter().map(|s| f32::from(*s) / 32768.0).collect();
        self.converted.clear();
        self.converter.push(&input, &mut self.converted);
        let mut samples = self.ring.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.extend(self.converted.iter().copied());
        let excess = samples.len().saturating_sub(self.ring.capacity);
        samples.drain(..excess);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), MediaError> {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("speaker {} ({} Hz)", self.name, self.rate)
    }
}

impl Drop for DeviceSink {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Captured audio waiting for the call, at the device rate, mono.
struct Capture {
    samples: Mutex<VecDeque<f32>>,
    arrived: Condvar,
    capacity: usize,
    failed: Mutex<Option<String>>,
}

/// A microphone by name.
pub struct DeviceSource {
    name: String,
    rate: u32,
    capture: Arc<Capture>,
    converter: RateConverter,
    ready: VecDeque<f32>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    chunk: Vec<f32>,
    converted: Vec<f32>,
    /// The device has delivered audio at least once.
    started: bool,
}

impl DeviceSource {
    pub fn open(name: &str) -> Result<Self, MediaError> {
        let device = find_device(name, true)?;
        let supported = device
            .default_input_config()
            .map_err(|e| device_error(name, e))?;
        let (config, format) = stream_config(name, supported);
        let rate = config.sample_rate;
        let capture = Arc::new(Capture {
            samples: Mutex::new(VecDeque::with_capacity(rate as usize)),
            arrived: Condvar::new(),
            capacity: rate as usize / 2,
            failed: Mutex::new(None),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let capture = capture.clone();
            stream_thread(name, "microphone", stop.clone(), move || match format {
                SampleFormat::F32 => input_stream::<f32>(&device, config, capture),
                SampleFormat::I16 => input_stream::<i16>(&device, config, capture),
                SampleFormat::I32 => input_stream::<i32>(&device, config, capture),
                SampleFormat::U8 => input_stream::<u8>(&device, config, capture),
                other => Err(format!("sample format {other} is not supported")),
            })?
        };
        tracing::info!(
            device = name,
            rate,
            channels = config.channels,
            "microphone open"
        );
        Ok(Self {
            name: name.to_string(),
            rate,
            capture,
            converter: RateConverter::new(rate, AUDIO_RATE)?,
            ready: VecDeque::new(),
            stop,
            thread: Some(thread),
            chunk: Vec::new(),
            converted: Vec::new(),
            started: false,
        })
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }
}

fn input_stream<T: SizedSample>(
    device: &cpal::Device,
    config: StreamConfig,
    capture: Arc<Capture>,
) -> Result<cpal::Stream, String>
where
    f32: FromSample<T>,
{
    let channels = usize::from(config.channels);
    let on_error = capture.clone();
    device
        .build_input_stream::<T, _, _>(
            config,
            move |data: &[T], _| {
                let mut samples = capture.samples.lock().unwrap_or_else(|p| p.into_inner());
                for frame in data.chunks(channels) {
                    let sum: f32 = frame.iter().map(|s| s.to_sample::<f32>()).sum();
                    samples.push_back(sum / channels as f32);
                }
                let excess = samples.len().saturating_sub(capture.capacity);
                samples.drain(..excess);
                drop(samples);
                capture.arrived.notify_one();
            },
            move |e| {
                if is_fatal(&e) {
                    *on_error.failed.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(e.to_string());
                    on_error.arrived.notify_one();
                }
            },
            Some(Duration::from_secs(2)),
        )
        .map_err(|e| e.to_string())
}

impl AudioSource for DeviceSource {
    fn read(&mut self, pcm: &mut [i16]) -> Result<(), MediaError> {
        while self.ready.len() < pcm.len() {
            {
                let mut samples = self
                    .capture
                    .samples
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if samples.is_empty() {
                    // A sound server may take a while to deliver the first
                    // block (PulseAudio: 2 s for the first stream on a null
                    // sink's monitor); after that, silence means trouble.
                    let limit = if self.started {
                        Duration::from_secs(2)
                    } else {
                        Duration::from_secs(5)
                    };
                    let (s, timeout) = self
                        .capture
                        .arrived
                        .wait_timeout(samples, limit)
                        .unwrap_or_else(|p| p.into_inner());
                    samples = s;
                    if let Some(e) = self
                        .capture
                        .failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .take()
                    {
                        return Err(device_error(&self.name, e));
                    }
                    if timeout.timed_out() && samples.is_empty() {
                        return Err(device_error(
                            &self.name,
                            format!(
                                "no audio from the device for {} s (unplugged?)",
                                limit.as_secs()
                            ),
                        ));
                    }
                }
                self.started |= !samples.is_empty();
                self.chunk.clear();
                self.chunk.extend(samples.drain(..));
            }
            self.converted.clear();
            self.converter.push(&self.chunk, &mut self.converted);
            self.ready.extend(self.converted.iter().copied());
        }
        let n = pcm.len();
        for (out, s) in pcm.iter_mut().zip(self.ready.drain(..n)) {
            *out = (s * 32767.0).clamp(-32768.0, 32767.0) as i16;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("microphone {} ({} Hz)", self.name, self.rate)
    }
}

impl Drop for DeviceSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::{dominant_frequency, Tone};

    #[test]
    fn conversion_keeps_the_pitch_and_the_rate() {
        for (from, to) in [
            (48_000, 44_100),
            (44_100, 48_000),
            (16_000, 48_000),
            (48_000, 48_000),
        ] {
            let mut tone = Tone::new(1000.0);
            let mut pcm = vec![0i16; 48_000];
            tone.fill(&mut pcm);
            // Make a `from`-rate tone by resampling the 48 kHz one from a fresh converter
            // when needed, then convert back and forth.
            let input: Vec<f32> = pcm.iter().map(|s| f32::from(*s) / 32768.0).collect();
            let mut c = RateConverter::new(48_000, from).unwrap();
            let mut at_from = Vec::new();
            for chunk in input.chunks(960) {
                c.push(chunk, &mut at_from);
            }
            let mut c = RateConverter::new(from, to).unwrap();
            let mut out = Vec::new();
            for chunk in at_from.chunks(333) {
                c.push(chunk, &mut out);
            }
            let expected = at_from.len() as f64 * f64::from(to) / f64::from(from);
            assert!(
                (out.len() as f64 - expected).abs() < f64::from(to) * 0.03,
                "{from}->{to}: {} vs {expected}",
                out.len()
            );
            let as_i16: Vec<i16> = out.iter().map(|s| (s * 32767.0) as i16).collect();
            let f =
                dominant_frequency(&as_i16[as_i16.len() / 4..]).unwrap() * f64::from(to) / 48_000.0;
            assert!((f - 1000.0).abs() < 20.0, "{from}->{to}: {f} Hz");
        }
    }
}
