//! `wav:` speaker: the viewer's voice into a 48 kHz mono 16-bit WAV file, one
//! per call. Used by the tests (the file is the evidence that two-way audio
//! works) and on machines without a speaker.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::{AudioSink, MediaError, AUDIO_RATE};

pub struct WavSink {
    path: PathBuf,
    writer: Option<hound::WavWriter<BufWriter<File>>>,
}

/// The file for call `call`: `{call}` in the path is replaced by the number.
pub fn path_for_call(path: &Path, call: u64) -> PathBuf {
    PathBuf::from(path.to_string_lossy().replace("{call}", &call.to_string()))
}

impl WavSink {
    pub fn create(path: &Path, call: u64) -> Result<Self, MediaError> {
        let path = path_for_call(path, call);
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: AUDIO_RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(&path, spec).map_err(|e| file_error(&path, e))?;
        Ok(Self {
            path,
            writer: Some(writer),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn file_error(path: &Path, e: hound::Error) -> MediaError {
    let source = match e {
        hound::Error::IoError(io) => io,
        other => std::io::Error::other(other.to_string()),
    };
    MediaError::File {
        path: path.to_path_buf(),
        source,
    }
}

impl AudioSink for WavSink {
    fn write(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        let mut samples = w.get_i16_writer(pcm.len() as u32);
        for s in pcm {
            samples.write_sample(*s);
        }
        samples.flush().map_err(|e| file_error(&self.path, e))
    }

    fn finish(&mut self) -> Result<(), MediaError> {
        match self.writer.take() {
            Some(w) => w.finalize().map_err(|e| file_error(&self.path, e)),
            None => Ok(()),
        }
    }

    fn describe(&self) -> String {
        format!("wav file {}", self.path.display())
    }
}

impl Drop for WavSink {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Reads a WAV file written by [`WavSink`] (tests, `doorbell check`).
pub fn read_mono(path: &Path) -> Result<Vec<i16>, MediaError> {
    let reader = hound::WavReader::open(path).map_err(|e| file_error(path, e))?;
    reader
        .into_samples::<i16>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_readable_file_per_call() {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("call-{call}.wav");
        let mut sink = WavSink::create(&template, 7).unwrap();
        sink.write(&[1, -2, 3]).unwrap();
        sink.write(&[4]).unwrap();
        sink.finish().unwrap();
        assert_eq!(
            read_mono(&dir.path().join("call-7.wav")).unwrap(),
            [1, -2, 3, 4]
        );
    }

    #[test]
    fn an_unwritable_path_names_the_file() {
        let e = WavSink::create(Path::new("/nonexistent-dir/x.wav"), 1)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/nonexistent-dir/x.wav"), "{e}");
    }
}
