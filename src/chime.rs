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
//! the chime still plays, the call's speaker takes over: the chime plays only
//! while it holds the [`SpeakerLease`] it shares with the call, which stops it
//! and waits for the device, so a sound card that allows one user at a time
//! still gets the viewer's voice.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::call::event::{CallEvent, EventKind};
use crate::media::lease::{SpeakerHold, SpeakerLease};
use crate::media::{AudioSink, MediaError, AUDIO_FRAME, AUDIO_RATE};
use crate::spec::chime::ChimeSound;
use crate::spec::duration;
use crate::spec::gpio::parse_relay;
use crate::spec::media::SinkSpec;

/// `[chime]` of the config: the chime's own settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChimeConfig {
    /// What the visitor hears on a press: `builtin`, `wav:PATH` or `none`.
    /// Plays on `audio.speaker` when that is a sound card.
    pub sound: String,
    /// Chime loudness, percent of the sound file's level (0..=200).
    pub volume: u32,
    /// Also pulse a GPIO output on a press (a relay for an existing chime):
    /// `gpio:PIN`, or empty for none.
    pub relay: String,
    /// The relay is switched on by a low level.
    pub relay_active_low: bool,
    /// How long the relay stays on.
    #[serde(with = "duration")]
    pub relay_pulse: Duration,
}

impl Default for ChimeConfig {
    fn default() -> Self {
        Self {
            sound: "builtin".into(),
            volume: 100,
            relay: String::new(),
            relay_active_low: false,
            relay_pulse: Duration::from_millis(300),
        }
    }
}

impl ChimeConfig {
    /// The relay's BCM pin, if one is configured.
    pub fn relay_pin(&self) -> Result<Option<u8>, String> {
        parse_relay(&self.relay)
    }
}

/// The built-in chime (48 kHz mono 16-bit WAV).
pub const BUILTIN: &[u8] = include_bytes!("../assets/chime.wav");

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

/// Plays `pcm` on `sink` at the real-time pace while `hold` keeps the
/// speaker, stopping early when the call takes it over.
pub fn play(pcm: &[i16], sink: &mut dyn AudioSink, hold: &SpeakerHold) -> Result<(), MediaError> {
    let result = play_paced(pcm, sink, hold);
    let _ = sink.finish();
    result
}

fn play_paced(pcm: &[i16], sink: &mut dyn AudioSink, hold: &SpeakerHold) -> Result<(), MediaError> {
    let start = std::time::Instant::now();
    let block = Duration::from_millis(20);
    let ahead = Duration::from_millis(60);
    for (i, chunk) in pcm.chunks(AUDIO_FRAME).enumerate() {
        if hold.should_stop() {
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
    let end = start + block * pcm.len().div_ceil(AUDIO_FRAME) as u32 + Duration::from_millis(80);
    while std::time::Instant::now() < end && !hold.should_stop() {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

pub type SpeakerOpener = Arc<dyn Fn() -> Result<Box<dyn AudioSink>, MediaError> + Send + Sync>;

/// The speaker `audio.speaker` names, when it is a sound card.
pub fn speaker_for(spec: &SinkSpec) -> Option<SpeakerOpener> {
    match spec.clone() {
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
    lease: SpeakerLease,
    events: &broadcast::Sender<CallEvent>,
    cancel: CancellationToken,
) -> Result<(), String> {
    let sound = load(config)?.map(Arc::new);
    let relay = match config.relay_pin()? {
        Some(pin) => {
            let r = crate::gpio::Relay::open(pin, config.relay_active_low)
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
                tokio::spawn(crate::gpio::pulse(relay.clone(), pulse));
            }
            if let Some((pcm, open)) = &sound {
                let (pcm, open, lease) = (pcm.clone(), open.clone(), lease.clone());
                tokio::task::spawn_blocking(move || {
                    let Some(hold) = lease.try_hold() else {
                        return; // still playing the last one, or a call has it
                    };
                    match open().and_then(|mut sink| play(&pcm, sink.as_mut(), &hold)) {
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
    use crate::media::memory::MemorySink;

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

    #[test]
    fn playing_writes_everything_and_a_call_can_cut_it_short() {
        let lease = SpeakerLease::new();
        let pcm = vec![1000i16; AUDIO_FRAME * 5];
        let (mut sink, got) = MemorySink::new();
        play(&pcm, &mut sink, &lease.try_hold().unwrap()).unwrap();
        assert_eq!(got.lock().unwrap().len(), pcm.len());

        let long = Arc::new(vec![1000i16; AUDIO_RATE as usize * 5]);
        let (mut sink, got) = MemorySink::new();
        let player = {
            let (long, lease) = (long.clone(), lease.clone());
            let hold = lease.try_hold().unwrap();
            std::thread::spawn(move || play(&long, &mut sink, &hold))
        };
        lease.take_over();
        assert!(!lease.is_held(), "the chime let go of the speaker");
        player.join().unwrap().unwrap();
        assert!(got.lock().unwrap().len() < long.len());
    }
}
