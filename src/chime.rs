//! The chime: on a press that starts a call, the visitor hears a short
//! "ding-dong" on the door's speaker, so they know the bell worked, and an
//! optional GPIO output pulses a relay (for an existing mechanical chime or a
//! light in the house).
//!
//! It follows the call's `ringing` event rather than raw presses, so presses
//! during a call or within the button's ring gap stay silent. It plays on
//! `audio.speaker` when that is a sound card (a WAV-file or absent speaker has
//! nobody to hear it). The built-in sound is `assets/chime.wav`
//! (`scripts/make-chime`), compiled into the binary. If a viewer answers while
//! the chime still plays, the call's speaker takes over: the chime stops and
//! releases the device first ([`yield_speaker`]), so a sound card that allows
//! one user at a time still gets the viewer's voice.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::call::machine::EventKind;
use crate::config::{ChimeConfig, Config};
use crate::events::CallEvent;
use crate::media::spec::SinkSpec;
use crate::media::{AudioSink, MediaError, AUDIO_FRAME, AUDIO_RATE};

/// The built-in chime (48 kHz mono 16-bit WAV).
pub const BUILTIN: &[u8] = include_bytes!("../assets/chime.wav");

#[derive(Debug, Clone, PartialEq)]
pub enum ChimeSound {
    Builtin,
    Wav(PathBuf),
    None,
}

impl ChimeSound {
    pub fn parse(s: &str) -> Result<ChimeSound, String> {
        match s.trim() {
            "builtin" => Ok(ChimeSound::Builtin),
            "none" => Ok(ChimeSound::None),
            other => match other.strip_prefix("wav:") {
                Some(path) if !path.is_empty() => Ok(ChimeSound::Wav(PathBuf::from(path))),
                _ => Err(format!(
                    "{other:?} is not a chime sound (known: \"builtin\", \"wav:PATH\", \"none\")"
                )),
            },
        }
    }
}

impl ChimeConfig {
    /// The relay's BCM pin, if one is configured.
    pub fn relay_pin(&self) -> Result<Option<u8>, String> {
        let r = self.relay.trim();
        if r.is_empty() {
            return Ok(None);
        }
        match r.strip_prefix("gpio:") {
            Some(pin) => crate::button::parse_pin(pin).map(Some),
            None => Err(format!(
                "{r:?} is not a relay output (\"gpio:PIN\" or empty)"
            )),
        }
    }
}

/// Decodes a WAV file to 48 kHz mono 16-bit, scaled by `volume` percent.
/// Stereo is mixed down; other rates are refused (the chime is short, and
/// `sox in.wav -r 48000 -c 1 out.wav` fixes it once).
pub fn decode(bytes: &[u8], volume: u32) -> Result<Vec<i16>, String> {
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a WAV file: {e}"))?;
    let spec = reader.spec();
    if spec.sample_rate != AUDIO_RATE {
        return Err(format!(
            "the chime must be 48000 Hz, this one is {} Hz (convert it: sox IN.wav -r 48000 -c 1 -b 16 OUT.wav)",
            spec.sample_rate
        ));
    }
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return Err("the chime must be 16-bit integer PCM".into());
    }
    let channels = usize::from(spec.channels.max(1));
    let raw: Vec<i16> = reader
        .into_samples::<i16>()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read the samples: {e}"))?;
    if raw.len() > AUDIO_RATE as usize * channels * 10 {
        return Err("the chime is longer than 10 s; a doorbell chime should be short".into());
    }
    let mut pcm: Vec<i16> = raw
        .chunks(channels)
        .map(|c| (c.iter().map(|s| i32::from(*s)).sum::<i32>() / c.len() as i32) as i16)
        .collect();
    crate::media::gain::apply(&mut pcm, volume as f32 / 100.0);
    Ok(pcm)
}

/// Loads the configured sound; `Ok(None)` when the chime is off.
pub fn load(config: &ChimeConfig) -> Result<Option<Vec<i16>>, String> {
    match ChimeSound::parse(&config.sound)? {
        ChimeSound::None => Ok(None),
        ChimeSound::Builtin => decode(BUILTIN, config.volume).map(Some),
        ChimeSound::Wav(path) => {
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            decode(&bytes, config.volume)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display()))
        }
    }
}

/// Whether a chime is playing, and the request to stop it.
struct Playing {
    busy: Mutex<bool>,
    done: Condvar,
    stop: AtomicBool,
}

static PLAYING: Playing = Playing {
    busy: Mutex::new(false),
    done: Condvar::new(),
    stop: AtomicBool::new(false),
};

/// Stops a chime that is playing and waits (at most 1 s) until it has closed
/// the speaker. Called before a call opens the speaker.
pub fn yield_speaker() {
    let busy = PLAYING.busy.lock().unwrap_or_else(|p| p.into_inner());
    if !*busy {
        return;
    }
    PLAYING.stop.store(true, Ordering::Release);
    let _released = PLAYING
        .done
        .wait_timeout_while(busy, Duration::from_secs(1), |b| *b)
        .unwrap_or_else(|p| p.into_inner());
}

/// Plays `pcm` on `sink` in real time (20 ms blocks), then lets the device's
/// buffer drain. Blocking. Returns early when [`yield_speaker`] asks.
pub fn play(pcm: &[i16], sink: &mut dyn AudioSink) -> Result<(), MediaError> {
    {
        let mut busy = PLAYING.busy.lock().unwrap_or_else(|p| p.into_inner());
        *busy = true;
        PLAYING.stop.store(false, Ordering::Release);
    }
    let result = play_paced(pcm, sink);
    let _ = sink.finish();
    let mut busy = PLAYING.busy.lock().unwrap_or_else(|p| p.into_inner());
    *busy = false;
    PLAYING.done.notify_all();
    result
}

fn play_paced(pcm: &[i16], sink: &mut dyn AudioSink) -> Result<(), MediaError> {
    let start = std::time::Instant::now();
    let block = Duration::from_millis(20);
    // Keep about 60 ms queued ahead of the device, no more (its buffer holds
    // 200 ms and drops the oldest beyond that).
    let ahead = Duration::from_millis(60);
    for (i, chunk) in pcm.chunks(AUDIO_FRAME).enumerate() {
        if PLAYING.stop.load(Ordering::Acquire) {
            tracing::debug!("chime cut short: a call takes the speaker");
            return Ok(());
        }
        let due = start + block * i as u32;
        let now = std::time::Instant::now();
        if due > now + ahead {
            std::thread::sleep(due - now - ahead);
        }
        sink.write(chunk)?;
    }
    // Let what is queued play out.
    let end = start + block * pcm.len().div_ceil(AUDIO_FRAME) as u32 + Duration::from_millis(80);
    while std::time::Instant::now() < end && !PLAYING.stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Opens the speaker for a chime.
pub type SpeakerOpener = Arc<dyn Fn() -> Result<Box<dyn AudioSink>, MediaError> + Send + Sync>;

/// The speaker the config names, when it is a sound card.
pub fn configured_speaker(config: &Config) -> Option<SpeakerOpener> {
    match SinkSpec::parse(&config.audio.speaker).ok()? {
        #[cfg(feature = "audio")]
        SinkSpec::Device(name) => Some(Arc::new(move || {
            crate::media::device::DeviceSink::open(&name).map(|s| Box::new(s) as Box<dyn AudioSink>)
        })),
        _ => None,
    }
}

/// Starts the chime: plays `sound` on each `ringing` event and pulses the
/// relay. Returns at once; everything runs on its own tasks.
pub fn start(
    config: &ChimeConfig,
    speaker: Option<SpeakerOpener>,
    events: &broadcast::Sender<CallEvent>,
    cancel: CancellationToken,
) -> Result<(), String> {
    let sound = load(config)?.map(Arc::new);
    let relay = match config.relay_pin()? {
        Some(pin) => {
            let r = crate::button::gpio::Relay::open(pin, config.relay_active_low)
                .map_err(|e| format!("chime relay: {e}"))?;
            tracing::info!(pin, "chime relay ready");
            Some(Arc::new(Mutex::new(r)))
        }
        None => None,
    };
    let sound = match (sound, speaker) {
        (Some(s), Some(open)) => Some((s, open)),
        (Some(_), None) => {
            tracing::debug!("chime: the speaker is not a sound card; no chime sound");
            None
        }
        _ => None,
    };
    if sound.is_none() && relay.is_none() {
        return Ok(());
    }
    let pulse = config.relay_pulse;
    let mut rx = events.subscribe();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => return,
                e = rx.recv() => e,
            };
            match event {
                Ok(e) if matches!(e.event.kind, EventKind::Ringing) => {}
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
            if let Some(relay) = &relay {
                tokio::spawn(crate::button::gpio::pulse(relay.clone(), pulse));
            }
            if let Some((pcm, open)) = &sound {
                let (pcm, open) = (pcm.clone(), open.clone());
                tokio::task::spawn_blocking(move || {
                    if *PLAYING.busy.lock().unwrap_or_else(|p| p.into_inner()) {
                        return; // still playing the last one
                    }
                    match open().and_then(|mut sink| play(&pcm, sink.as_mut())) {
                        Ok(()) => tracing::debug!("chime played"),
                        Err(e) => tracing::warn!("chime: {e}; the visitor heard nothing"),
                    }
                });
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::{power_share, rms};

    #[test]
    fn sounds_parse() {
        assert_eq!(ChimeSound::parse("builtin"), Ok(ChimeSound::Builtin));
        assert_eq!(ChimeSound::parse("none"), Ok(ChimeSound::None));
        assert_eq!(
            ChimeSound::parse("wav:/usr/share/sounds/ding.wav"),
            Ok(ChimeSound::Wav("/usr/share/sounds/ding.wav".into()))
        );
        assert!(ChimeSound::parse("wav:").is_err());
        assert!(ChimeSound::parse("ding").is_err());
    }

    #[test]
    fn the_builtin_chime_is_a_short_audible_ding_dong() {
        let pcm = decode(BUILTIN, 100).unwrap();
        let seconds = pcm.len() as f64 / f64::from(AUDIO_RATE);
        assert!((1.0..=3.0).contains(&seconds), "{seconds} s");
        // The first note (E5) and, after it, the second (C5), each the
        // strongest partial of its moment.
        let ding = &pcm[2400..2400 + 4800];
        let dong = &pcm[36_000..36_000 + 4800];
        assert!(
            power_share(ding, 659.25) > 0.5,
            "{}",
            power_share(ding, 659.25)
        );
        assert!(power_share(ding, 523.25) < 0.05);
        assert!(
            power_share(dong, 523.25) > 0.3,
            "{}",
            power_share(dong, 523.25)
        );
        assert!(rms(&pcm) > 1000.0);
        // Half the volume, half the level.
        let half = decode(BUILTIN, 50).unwrap();
        assert!((rms(&half) / rms(&pcm) - 0.5).abs() < 0.01);
    }

    #[test]
    fn a_wrong_rate_is_explained() {
        let mut bytes = std::io::Cursor::new(Vec::new());
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::new(&mut bytes, spec).unwrap();
        w.write_sample(0i16).unwrap();
        w.write_sample(0i16).unwrap();
        w.finalize().unwrap();
        let e = decode(bytes.get_ref(), 100).unwrap_err();
        assert!(e.contains("48000") && e.contains("sox"), "{e}");
        assert!(decode(b"not a wav", 100).unwrap_err().contains("not a WAV"));
    }

    #[test]
    fn relays_parse() {
        let mut c = ChimeConfig::default();
        assert_eq!(c.relay_pin(), Ok(None));
        c.relay = "gpio:27".into();
        assert_eq!(c.relay_pin(), Ok(Some(27)));
        c.relay = "27".into();
        assert!(c.relay_pin().is_err());
    }

    struct Collect(Arc<Mutex<Vec<i16>>>);

    impl AudioSink for Collect {
        fn write(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
            self.0.lock().unwrap().extend_from_slice(pcm);
            Ok(())
        }
        fn describe(&self) -> String {
            "collect".into()
        }
    }

    #[test]
    fn playing_writes_everything_and_a_call_can_cut_it_short() {
        let pcm = vec![1000i16; AUDIO_FRAME * 5];
        let got = Arc::new(Mutex::new(Vec::new()));
        play(&pcm, &mut Collect(got.clone())).unwrap();
        assert_eq!(got.lock().unwrap().len(), pcm.len());

        let long = Arc::new(vec![1000i16; AUDIO_RATE as usize * 5]);
        let got = Arc::new(Mutex::new(Vec::new()));
        let player = {
            let (long, got) = (long.clone(), got.clone());
            std::thread::spawn(move || play(&long, &mut Collect(got)))
        };
        while !*PLAYING.busy.lock().unwrap() {
            std::thread::sleep(Duration::from_millis(5));
        }
        yield_speaker();
        assert!(
            !*PLAYING.busy.lock().unwrap(),
            "the chime let go of the speaker"
        );
        player.join().unwrap().unwrap();
        assert!(got.lock().unwrap().len() < long.len());
    }
}
