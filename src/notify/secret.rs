//! The Telegram bot token: where it may come from, and keeping it out of logs.
//!
//! Whoever has the token can read the owner's chat with the bot and send it
//! anything, links included. So it never sits in the config file (which tends
//! to be world-readable and copied into bug reports): it comes from the
//! environment, from a file only the service can read, or from systemd's
//! credential directory. And it never reaches a log line or an error message:
//! the Bot API puts it in every request URL (`.../bot<TOKEN>/sendPhoto`), and
//! HTTP client errors quote that URL, so every error text passes through
//! [`redact`] before it is logged or returned.

use std::path::{Path, PathBuf};

/// The environment variable checked first.
pub const TOKEN_ENV: &str = "DOORBELL_TELEGRAM_TOKEN";
/// The credential name under `$CREDENTIALS_DIRECTORY` (systemd
/// `LoadCredential=telegram-token:/etc/doorbell/telegram-token`).
pub const CREDENTIAL: &str = "telegram-token";
pub use crate::secret::REDACTED;

pub use crate::secret::Secret;

pub use crate::secret::redact;
use crate::secret::SecretFileError;

/// Why no token could be had. None of these messages contains the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "no Telegram bot token: set {TOKEN_ENV}, or notify.telegram.token_file, or a systemd \
         credential named {CREDENTIAL} (LoadCredential=); see docs/telegram.md"
    )]
    Missing,
    #[error("notify.telegram.token_file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "notify.telegram.token_file {path} can be read by other users (mode {mode:04o}); \
         the token gives control of the bot: run `chmod 600 {path}`"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error(
        "the Telegram bot token from {from} does not look like one (digits, a colon, then \
         letters, digits, - or _, as BotFather gives it)"
    )]
    Malformed { from: String },
}

/// Where a token may come from, in the order they are tried.
#[derive(Debug, Default)]
pub struct TokenSources {
    /// The value of `DOORBELL_TELEGRAM_TOKEN`.
    pub env: Option<Secret>,
    /// `notify.telegram.token_file`.
    pub file: Option<PathBuf>,
    /// `$CREDENTIALS_DIRECTORY` (set by systemd when the unit loads credentials).
    pub credentials_dir: Option<PathBuf>,
}

impl TokenSources {
    /// The sources of this process: its environment and the configured file.
    pub fn from_environment(token_file: Option<&Path>) -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        Self {
            env: var(TOKEN_ENV).map(|v| Secret::new(v.to_string_lossy().into_owned())),
            file: token_file.map(Path::to_path_buf),
            credentials_dir: var("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        }
    }

    /// The token from the first source that has one, and a name for that
    /// source (for the start-up log line). A configured `token_file` that
    /// cannot be read, or that others can read, is an error rather than a
    /// reason to look further: the owner meant that file.
    pub fn load(&self) -> Result<(Secret, String), TokenError> {
        if let Some(token) = &self.env {
            let token = Secret::new(token.expose().trim());
            return checked(token, format!("${TOKEN_ENV}"));
        }
        if let Some(path) = &self.file {
            let token = read_private(path)?;
            return checked(token, path.display().to_string());
        }
        if let Some(dir) = &self.credentials_dir {
            let path = dir.join(CREDENTIAL);
            if path.exists() {
                // systemd made this file for this service alone; no mode check.
                let text = std::fs::read_to_string(&path)
                    .map_err(|source| TokenError::Unreadable { path, source })?;
                let from = format!("the systemd credential {CREDENTIAL}");
                return checked(Secret::new(text.trim()), from);
            }
        }
        Err(TokenError::Missing)
    }
}

fn read_private(path: &Path) -> Result<Secret, TokenError> {
    crate::secret::read_private(path).map_err(|e| match e {
        SecretFileError::Unreadable { path, source } => TokenError::Unreadable { path, source },
        SecretFileError::Exposed { path, mode } => TokenError::Exposed { path, mode },
    })
}

/// `123456789:AAE...`: digits, a colon, then at least 20 of `[A-Za-z0-9_-]`.
fn checked(token: Secret, from: String) -> Result<(Secret, String), TokenError> {
    let plausible = token.expose().split_once(':').is_some_and(|(id, key)| {
        !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && key.len() >= 20
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if plausible {
        Ok((token, from))
    } else {
        Err(TokenError::Malformed { from })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const TOKEN: &str = "123456:CANARY-SECRET-TOKEN-xyz";

    fn file_with(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let s = Secret::new(TOKEN);
        assert_eq!(
            format!("{s:?} {s} {:?}", Some(&s)),
            "[redacted] [redacted] Some([redacted])"
        );
        assert_eq!(s.expose(), TOKEN);
    }

    #[test]
    fn redaction_covers_the_plain_the_url_encoded_and_the_key_part() {
        let text = format!(
            "error sending request for url (https://api.telegram.org/bot{TOKEN}/sendPhoto); \
             encoded bot123456%3ACANARY-SECRET-TOKEN-xyz and bot123456%3aCANARY-SECRET-TOKEN-xyz; \
             key alone CANARY-SECRET-TOKEN-xyz"
        );
        let out = redact(&text, TOKEN);
        assert!(!out.contains("CANARY"), "{out}");
        assert!(out.contains("/bot[redacted]/sendPhoto"), "{out}");
        assert_eq!(redact("nothing here", TOKEN), "nothing here");
        assert_eq!(redact("an empty secret", ""), "an empty secret");
    }

    #[test]
    fn the_environment_comes_first_then_the_file_then_the_credential() {
        let dir = tempfile::tempdir().unwrap();
        let file = file_with(
            dir.path(),
            "token",
            "111:FROM-THE-FILE-aaaaaaaaaaaa\n",
            0o600,
        );
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        file_with(
            &creds,
            CREDENTIAL,
            "222:FROM-THE-CREDENTIAL-bbbbbbb\n",
            0o400,
        );

        let all = TokenSources {
            env: Some(Secret::new(format!(" {TOKEN}\n"))),
            file: Some(file.clone()),
            credentials_dir: Some(creds.clone()),
        };
        let (token, from) = all.load().unwrap();
        assert_eq!(
            (token.expose(), from.as_str()),
            (TOKEN, "$DOORBELL_TELEGRAM_TOKEN")
        );

        let no_env = TokenSources { env: None, ..all };
        let (token, from) = no_env.load().unwrap();
        assert_eq!(token.expose(), "111:FROM-THE-FILE-aaaaaaaaaaaa");
        assert_eq!(from, file.display().to_string());

        let only_creds = TokenSources {
            file: None,
            ..no_env
        };
        let (token, from) = only_creds.load().unwrap();
        assert_eq!(token.expose(), "222:FROM-THE-CREDENTIAL-bbbbbbb");
        assert!(from.contains("credential"), "{from}");

        let nothing = TokenSources {
            credentials_dir: Some(dir.path().join("empty")),
            ..TokenSources::default()
        };
        let e = nothing.load().unwrap_err().to_string();
        for hint in [TOKEN_ENV, "token_file", CREDENTIAL, "docs/telegram.md"] {
            assert!(e.contains(hint), "{e}");
        }
    }

    #[test]
    fn a_token_file_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604] {
            let path = file_with(dir.path(), "token", &format!("{TOKEN}\n"), mode);
            let sources = TokenSources {
                file: Some(path.clone()),
                ..TokenSources::default()
            };
            let e = sources.load().unwrap_err().to_string();
            assert!(e.contains("chmod 600"), "{e}");
            assert!(e.contains(&format!("{mode:04o}")), "{e}");
            assert!(!e.contains("CANARY"), "{e}");
        }
        let missing = TokenSources {
            file: Some(dir.path().join("nope")),
            // A configured file that is missing is an error, not a fall-through.
            credentials_dir: Some(dir.path().to_path_buf()),
            ..TokenSources::default()
        };
        let e = missing.load().unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn something_that_is_not_a_token_is_refused_without_quoting_it() {
        for bad in [
            "",
            "hello",
            "123456",
            ":abcdefghijklmnopqrstuvwxyz",
            "12a:abcdefghijklmnopqrstuvwxyz",
            "1:short",
            "1:abcdefghij klmnopqrstuvwxyz",
        ] {
            let sources = TokenSources {
                env: Some(Secret::new(bad)),
                ..TokenSources::default()
            };
            let e = sources.load().unwrap_err().to_string();
            assert!(e.contains("does not look like"), "{bad:?}: {e}");
            if !bad.is_empty() {
                assert!(!e.contains(bad), "{e}");
            }
        }
    }
}
