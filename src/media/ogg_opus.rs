//! Ogg/Opus files to 48 kHz mono PCM: what Telegram records for a voice
//! message, and the format of the built-in spoken replies.
//!
//! The Ogg pages are read with the `ogg` crate and the packets decoded with
//! `opus` (libopus), following RFC 7845: the first packet of the stream is
//! `OpusHead` (channels, pre-skip, output gain, mapping family 0 for mono
//! or stereo), the second `OpusTags`, then audio packets. The pre-skip is
//! dropped from the start, the end is cut at the last page's granule
//! position, stereo is mixed down. Anything else (Vorbis in Ogg, an MP3, a
//! damaged file, a file longer than the caller allows) is an error that says
//! what the file is, for a reply to the owner.

use std::io::Cursor;
use std::time::Duration;

use super::AUDIO_RATE;

/// Files are refused above this size before anything is decoded (a voice
/// message takes 2 to 4 kB per second).
pub const MAX_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OggOpusError {
    #[error("not an Ogg file ({0})")]
    NotOgg(String),
    #[error("an Ogg file, but not Opus ({0})")]
    NotOpus(&'static str),
    #[error("an Opus layout the door cannot play ({0})")]
    Unsupported(String),
    #[error("damaged Opus audio ({0})")]
    Damaged(String),
    #[error("longer than {max_s} s")]
    TooLong { max_s: u64 },
    #[error("the file is larger than {} MB", MAX_BYTES >> 20)]
    TooLarge,
}

/// `OpusHead`, as far as decoding needs it.
struct Head {
    channels: u8,
    pre_skip: usize,
    gain_db: f32,
}

fn head(packet: &[u8]) -> Result<Head, OggOpusError> {
    if packet.starts_with(b"\x01vorbis") {
        return Err(OggOpusError::NotOpus("it holds Vorbis audio"));
    }
    if packet.starts_with(b"\x7fFLAC") {
        return Err(OggOpusError::NotOpus("it holds FLAC audio"));
    }
    if packet.starts_with(b"Speex") {
        return Err(OggOpusError::NotOpus("it holds Speex audio"));
    }
    if !packet.starts_with(b"OpusHead") || packet.len() < 19 {
        return Err(OggOpusError::NotOpus("its first packet is no OpusHead"));
    }
    if packet[8] >> 4 != 0 {
        return Err(OggOpusError::Unsupported(format!(
            "OpusHead version {}",
            packet[8]
        )));
    }
    let channels = packet[9];
    let family = packet[18];
    if family != 0 || !(1..=2).contains(&channels) {
        return Err(OggOpusError::Unsupported(format!(
            "{channels} channels, mapping family {family}"
        )));
    }
    Ok(Head {
        channels,
        pre_skip: usize::from(u16::from_le_bytes([packet[10], packet[11]])),
        gain_db: f32::from(i16::from_le_bytes([packet[16], packet[17]])) / 256.0,
    })
}

/// Decodes `bytes` (one logical Ogg/Opus stream; other streams in the file
/// are skipped) to 48 kHz mono, refusing audio longer than `max`.
pub fn decode(bytes: &[u8], max: Duration) -> Result<Vec<i16>, OggOpusError> {
    if bytes.len() > MAX_BYTES {
        return Err(OggOpusError::TooLarge);
    }
    if !bytes.starts_with(b"OggS") {
        return Err(OggOpusError::NotOgg(sniff(bytes).into()));
    }
    let max_samples = (max.as_secs_f64() * f64::from(AUDIO_RATE)).ceil() as usize;
    let mut reader = ogg::PacketReader::new(Cursor::new(bytes));
    let read = |r: &mut ogg::PacketReader<Cursor<&[u8]>>| {
        r.read_packet()
            .map_err(|e| OggOpusError::Damaged(e.to_string()))
    };
    let first = read(&mut reader)?.ok_or(OggOpusError::NotOgg("empty".into()))?;
    let serial = first.stream_serial();
    let head = head(&first.data)?;
    let channels = usize::from(head.channels);
    let mut decoder = opus::Decoder::new(
        AUDIO_RATE,
        if channels == 2 {
            opus::Channels::Stereo
        } else {
            opus::Channels::Mono
        },
    )
    .map_err(|e| OggOpusError::Damaged(e.to_string()))?;
    // 120 ms, the longest Opus packet.
    let mut frame = vec![0i16; 5760 * channels];
    let mut pcm: Vec<i16> = Vec::new();
    let mut tags_seen = false;
    let mut last_granule = None;
    while let Some(packet) = read(&mut reader)? {
        if packet.stream_serial() != serial {
            continue;
        }
        if !tags_seen {
            if !packet.data.starts_with(b"OpusTags") {
                return Err(OggOpusError::Damaged("no OpusTags after OpusHead".into()));
            }
            tags_seen = true;
            continue;
        }
        let n = decoder
            .decode(&packet.data, &mut frame, false)
            .map_err(|e| OggOpusError::Damaged(e.to_string()))?;
        pcm.extend(
            frame[..n * channels]
                .chunks(channels)
                .map(|c| (c.iter().map(|&s| i32::from(s)).sum::<i32>() / channels as i32) as i16),
        );
        if packet.last_in_page() {
            last_granule = Some(packet.absgp_page());
        }
        if pcm.len() > max_samples + head.pre_skip {
            return Err(OggOpusError::TooLong {
                max_s: max.as_secs(),
            });
        }
        if packet.last_in_stream() {
            break;
        }
    }
    if !tags_seen {
        return Err(OggOpusError::Damaged(
            "the stream ends after OpusHead".into(),
        ));
    }
    // The final granule position counts the samples to keep, pre-skip
    // included (RFC 7845, 4.4); it can only shorten what was decoded.
    if let Some(end) = last_granule.and_then(|g| usize::try_from(g).ok()) {
        if end < pcm.len() {
            pcm.truncate(end);
        }
    }
    pcm.drain(..head.pre_skip.min(pcm.len()));
    if head.gain_db != 0.0 {
        super::gain::apply(&mut pcm, 10f32.powf(head.gain_db / 20.0));
    }
    Ok(pcm)
}

/// What a file that is not Ogg seems to be, for the owner's reply.
fn sniff(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"ID3") || bytes.first() == Some(&0xff) && bytes.len() > 1 {
        "it looks like MP3"
    } else if bytes.len() > 8 && &bytes[4..8] == b"ftyp" {
        "it looks like MP4/M4A"
    } else if bytes.starts_with(b"RIFF") {
        "it looks like WAV"
    } else if bytes.is_empty() {
        "it is empty"
    } else {
        "unknown format"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `packets` as one Ogg stream (RFC 7845 layout), each audio
    /// packet 20 ms, the last page's granule at `end` samples.
    fn ogg(head: &[u8], audio: &[Vec<u8>], end: u64) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = ogg::PacketWriter::new(&mut out);
            w.write_packet(head.to_vec(), 7, ogg::PacketWriteEndInfo::EndPage, 0)
                .unwrap();
            w.write_packet(
                b"OpusTags\x05\0\0\0test\0\0\0\0".to_vec(),
                7,
                ogg::PacketWriteEndInfo::EndPage,
                0,
            )
            .unwrap();
            for (i, p) in audio.iter().enumerate() {
                let last = i + 1 == audio.len();
                let gp = if last { end } else { 960 * (i as u64 + 1) };
                let info = if last {
                    ogg::PacketWriteEndInfo::EndStream
                } else {
                    ogg::PacketWriteEndInfo::EndPage
                };
                w.write_packet(p.clone(), 7, info, gp).unwrap();
            }
        }
        out
    }

    fn opus_head(channels: u8, pre_skip: u16, family: u8) -> Vec<u8> {
        let mut h = b"OpusHead".to_vec();
        h.push(1);
        h.push(channels);
        h.extend(pre_skip.to_le_bytes());
        h.extend(48_000u32.to_le_bytes());
        h.extend(0i16.to_le_bytes());
        h.push(family);
        h
    }

    /// `frames` 20 ms Opus packets of a 440 Hz tone.
    fn tone_packets(frames: usize, channels: usize) -> Vec<Vec<u8>> {
        let ch = if channels == 2 {
            opus::Channels::Stereo
        } else {
            opus::Channels::Mono
        };
        let mut enc = opus::Encoder::new(48_000, ch, opus::Application::Audio).unwrap();
        (0..frames)
            .map(|f| {
                let pcm: Vec<i16> = (0..960 * channels)
                    .map(|i| {
                        let t = (f * 960 + i / channels) as f32 / 48_000.0;
                        (8000.0 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()) as i16
                    })
                    .collect();
                enc.encode_vec(&pcm, 4000).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_voice_message_decodes_to_its_length_without_the_pre_skip() {
        for channels in [1usize, 2] {
            let file = ogg(
                &opus_head(channels as u8, 312, 0),
                &tone_packets(50, channels),
                312 + 47_000,
            );
            let pcm = decode(&file, Duration::from_secs(5)).unwrap();
            assert_eq!(pcm.len(), 47_000, "{channels} channel(s)");
            let rms = (pcm[10_000..]
                .iter()
                .map(|&s| f64::from(s).powi(2))
                .sum::<f64>()
                / (pcm.len() - 10_000) as f64)
                .sqrt();
            assert!(rms > 3000.0, "the tone is there: rms {rms}");
        }
    }

    #[test]
    fn too_long_is_refused() {
        let file = ogg(&opus_head(1, 312, 0), &tone_packets(100, 1), 312 + 96_000);
        assert_eq!(
            decode(&file, Duration::from_secs(1)),
            Err(OggOpusError::TooLong { max_s: 1 })
        );
        assert!(decode(&file, Duration::from_secs(3)).is_ok());
    }

    #[test]
    fn other_formats_are_named() {
        let vorbis = ogg(b"\x01vorbis\0\0\0\0\x01", &[], 0);
        assert_eq!(
            decode(&vorbis, Duration::from_secs(5)),
            Err(OggOpusError::NotOpus("it holds Vorbis audio"))
        );
        let err = decode(b"ID3\x04\0\0\0\0\0\0", Duration::from_secs(5)).unwrap_err();
        assert_eq!(err.to_string(), "not an Ogg file (it looks like MP3)");
        let surround = ogg(&opus_head(6, 312, 1), &[], 0);
        assert!(matches!(
            decode(&surround, Duration::from_secs(5)),
            Err(OggOpusError::Unsupported(_))
        ));
        let big = vec![0u8; MAX_BYTES + 1];
        assert_eq!(
            decode(&big, Duration::from_secs(5)),
            Err(OggOpusError::TooLarge)
        );
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let file = ogg(&opus_head(1, 312, 0), &tone_packets(10, 1), 312 + 9600);
        for cut in [4, 30, 60, file.len() / 2, file.len() - 3] {
            let _ = decode(&file[..cut], Duration::from_secs(5));
        }
        let mut flipped = file.clone();
        for i in (40..flipped.len()).step_by(7) {
            flipped[i] ^= 0x5a;
        }
        let _ = decode(&flipped, Duration::from_secs(5));
        assert!(decode(b"OggS", Duration::from_secs(5)).is_err());
    }

    #[test]
    fn the_built_in_replies_decode() {
        for (name, bytes) in [
            (
                "coming",
                &include_bytes!("../../assets/reply-coming.opus")[..],
            ),
            (
                "leave it",
                &include_bytes!("../../assets/reply-leave-it.opus")[..],
            ),
        ] {
            let pcm = decode(bytes, Duration::from_secs(10)).unwrap();
            let seconds = pcm.len() as f64 / 48_000.0;
            assert!((0.5..6.0).contains(&seconds), "{name}: {seconds} s");
        }
    }
}
