//! MP4 files of the door's media: H.264 video and Opus audio (ISO BMFF
//! `avc1`/`avcC` and `Opus`/`dOps`), moov first ("fast start") so a phone or
//! a browser plays the clip as soon as it has its first bytes.
//!
//! The only module that speaks `muxide`. Timestamps are given as the time
//! since the clip's start; the first video sample must be a keyframe that
//! carries its SPS and PPS (what the encoder gives at an IDR). The muxer keeps
//! the samples in memory until [`Mp4Writer::finish`] writes the file: about
//! the clip's bitrate times its length (20 s at 600 kbit/s: 1.5 MB).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Duration;

use muxide::api::{AudioCodec, Muxer, MuxerBuilder, VideoCodec};

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Mp4Error {
    pub path: PathBuf,
    pub message: String,
}

pub struct Mp4Writer {
    muxer: Muxer<BufWriter<File>>,
    path: PathBuf,
    last_video: Option<f64>,
    last_audio: Option<f64>,
    first_video: Option<f64>,
    /// Samples written (video, audio).
    pub counts: (u64, u64),
}

impl Mp4Writer {
    /// A new file at `path` (created now, whole once finished) for
    /// `width`x`height` H.264 at about `fps`, with an Opus track (48 kHz,
    /// mono) when `audio`.
    pub fn create(
        path: &Path,
        width: u32,
        height: u32,
        fps: f64,
        audio: bool,
    ) -> Result<Mp4Writer, Mp4Error> {
        let error = |message: String| Mp4Error {
            path: path.to_path_buf(),
            message,
        };
        let file = File::create(path).map_err(|e| error(e.to_string()))?;
        let mut builder = MuxerBuilder::new(BufWriter::new(file))
            .video(VideoCodec::H264, width, height, fps)
            .with_fast_start(true);
        if audio {
            builder = builder.audio(AudioCodec::Opus, 48_000, 1);
        }
        let muxer = builder.build().map_err(|e| error(e.to_string()))?;
        Ok(Mp4Writer {
            muxer,
            path: path.to_path_buf(),
            last_video: None,
            last_audio: None,
            first_video: None,
            counts: (0, 0),
        })
    }

    fn error(&self, message: impl ToString) -> Mp4Error {
        Mp4Error {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }

    /// Whether the next video sample is the first.
    pub fn started(&self) -> bool {
        self.first_video.is_some()
    }

    /// One H.264 access unit (Annex B) at `at` since the clip's start. A
    /// time at or before the previous one is moved just after it.
    pub fn video(&mut self, at: Duration, annex_b: &[u8], keyframe: bool) -> Result<(), Mp4Error> {
        if self.first_video.is_none() && !keyframe {
            return Err(self.error("the first picture of a clip must be a keyframe"));
        }
        let mut pts = at.as_secs_f64();
        if let Some(prev) = self.last_video {
            pts = pts.max(prev + 0.001);
        }
        self.muxer
            .write_video(pts, annex_b, keyframe)
            .map_err(|e| self.error(e))?;
        self.first_video.get_or_insert(pts);
        self.last_video = Some(pts);
        self.counts.0 += 1;
        Ok(())
    }

    /// One Opus packet at `at` since the clip's start. Audio before the
    /// first picture is dropped (the file starts with a picture).
    pub fn audio(&mut self, at: Duration, packet: &[u8]) -> Result<(), Mp4Error> {
        let Some(first) = self.first_video else {
            return Ok(());
        };
        let mut pts = at.as_secs_f64().max(first);
        if let Some(prev) = self.last_audio {
            pts = pts.max(prev);
        }
        self.muxer
            .write_audio(pts, packet)
            .map_err(|e| self.error(e))?;
        self.last_audio = Some(pts);
        self.counts.1 += 1;
        Ok(())
    }

    /// Writes the index and the samples; the file is whole when this returns
    /// Ok (not yet synced: see `history::Store::adopt`).
    pub fn finish(self) -> Result<PathBuf, Mp4Error> {
        let path = self.path.clone();
        let error = |message: String| Mp4Error {
            path: path.clone(),
            message,
        };
        let mut writer = {
            let mut muxer = self.muxer;
            muxer.finish_in_place().map_err(|e| error(e.to_string()))?;
            muxer.into_writer()
        };
        std::io::Write::flush(&mut writer).map_err(|e| error(e.to_string()))?;
        Ok(path)
    }
}
