//! The chime's sound as the config names it: `builtin`, `wav:PATH` or `none`.

use std::path::PathBuf;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
