//! Volume and gain: the speaker's loudness (`audio.speaker_volume`, percent)
//! and the microphone's gain (`audio.microphone_gain_db`), as wrappers around
//! any source or sink, so they apply the same to a sound card, a tone or a WAV
//! file. Saturating: a gain that overshoots clips instead of wrapping around.

use super::{AudioSink, AudioSource, MediaError};

/// Linear factor for a gain in dB.
pub fn db_to_factor(db: f32) -> f32 {
    10f32.powf(db / 20.0)
}

/// Scales 16-bit samples in place, clipping at full scale.
pub fn apply(pcm: &mut [i16], factor: f32) {
    if factor == 1.0 {
        return;
    }
    for s in pcm {
        *s = (f32::from(*s) * factor)
            .round()
            .clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16;
    }
}

/// A microphone with gain.
pub struct GainSource {
    inner: Box<dyn AudioSource>,
    factor: f32,
}

impl GainSource {
    /// `inner` unchanged when the gain is 0 dB.
    pub fn wrap(inner: Box<dyn AudioSource>, db: f32) -> Box<dyn AudioSource> {
        if db == 0.0 {
            inner
        } else {
            Box::new(GainSource {
                inner,
                factor: db_to_factor(db),
            })
        }
    }
}

impl AudioSource for GainSource {
    fn read(&mut self, pcm: &mut [i16]) -> Result<(), MediaError> {
        self.inner.read(pcm)?;
        apply(pcm, self.factor);
        Ok(())
    }

    fn describe(&self) -> String {
        format!(
            "{} ({:+.1} dB)",
            self.inner.describe(),
            20.0 * self.factor.log10()
        )
    }
}

/// A speaker with a volume.
pub struct VolumeSink {
    inner: Box<dyn AudioSink>,
    factor: f32,
    scratch: Vec<i16>,
}

impl VolumeSink {
    /// `inner` unchanged at 100 %.
    pub fn wrap(inner: Box<dyn AudioSink>, percent: u32) -> Box<dyn AudioSink> {
        if percent == 100 {
            inner
        } else {
            Box::new(VolumeSink {
                inner,
                factor: percent as f32 / 100.0,
                scratch: Vec::new(),
            })
        }
    }
}

impl AudioSink for VolumeSink {
    fn write(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        self.scratch.clear();
        self.scratch.extend_from_slice(pcm);
        apply(&mut self.scratch, self.factor);
        self.inner.write(&self.scratch)
    }

    fn finish(&mut self) -> Result<(), MediaError> {
        self.inner.finish()
    }

    fn describe(&self) -> String {
        format!(
            "{} (volume {:.0} %)",
            self.inner.describe(),
            self.factor * 100.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::{rms, Tone};
    use std::sync::{Arc, Mutex};

    #[test]
    fn decibels_are_amplitude_ratios() {
        assert!((db_to_factor(0.0) - 1.0).abs() < 1e-6);
        assert!((db_to_factor(6.0) - 1.995).abs() < 1e-3);
        assert!((db_to_factor(-20.0) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn gain_clips_instead_of_wrapping() {
        let mut pcm = [1000, -1000, 30_000, -30_000, 0];
        apply(&mut pcm, 2.0);
        assert_eq!(pcm, [2000, -2000, 32_767, -32_768, 0]);
    }

    #[test]
    fn microphone_gain_scales_the_tone() {
        let mut plain = vec![0i16; 960];
        Tone::new(440.0).read(&mut plain).unwrap();
        let mut louder = GainSource::wrap(Box::new(Tone::new(440.0)), 6.0);
        let mut pcm = vec![0i16; 960];
        louder.read(&mut pcm).unwrap();
        let ratio = rms(&pcm) / rms(&plain);
        assert!((ratio - 1.995).abs() < 0.01, "ratio {ratio}");
        assert!(louder.describe().contains("+6.0 dB"));
    }

    struct Capture(Arc<Mutex<Vec<i16>>>);

    impl AudioSink for Capture {
        fn write(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
            self.0.lock().unwrap().extend_from_slice(pcm);
            Ok(())
        }
        fn describe(&self) -> String {
            "capture".into()
        }
    }

    #[test]
    fn speaker_volume_scales_what_is_played() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut sink = VolumeSink::wrap(Box::new(Capture(got.clone())), 50);
        sink.write(&[1000, -2000, 3]).unwrap();
        assert_eq!(*got.lock().unwrap(), vec![500, -1000, 2]);
        // 100 % is the sink itself, untouched.
        let sink = VolumeSink::wrap(Box::new(Capture(got)), 100);
        assert_eq!(sink.describe(), "capture");
    }
}
