//! Secrets the doorbell holds (the Telegram bot token, the TURN shared
//! secret): a type that never prints itself, and reading one from a file
//! only the service may read, or from systemd's credential directory.

use std::fmt;
use std::path::{Path, PathBuf};

/// What replaces a secret in text.
pub const REDACTED: &str = "[redacted]";

/// A secret string whose `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with this secret removed, as is and URL-encoded.
    pub fn redact(&self, text: &str) -> String {
        redact(text, &self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Replaces every occurrence of `secret` in `text` by `[redacted]`: as is,
/// URL-encoded (`:` as `%3A` or `%3a`), and, for a bot token, the part after
/// the colon on its own (the number before it is the bot's public id).
pub fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_string();
    }
    let mut forms = vec![
        secret.to_string(),
        secret.replace(':', "%3A"),
        secret.replace(':', "%3a"),
    ];
    if let Some((_, key)) = secret.split_once(':') {
        if key.len() >= 8 {
            forms.push(key.to_string());
        }
    }
    let mut out = text.to_string();
    for form in forms {
        if out.contains(&form) {
            out = out.replace(&form, REDACTED);
        }
    }
    out
}

/// Why a secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("{path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} can be read by other users (mode {mode:04o}): run `chmod 600 {path}`")]
    Exposed { path: PathBuf, mode: u32 },
}

/// The trimmed content of `path`, refused when group or others may read it.
pub fn read_private(path: &Path) -> Result<Secret, SecretFileError> {
    use std::os::unix::fs::PermissionsExt;
    let unreadable = |source| SecretFileError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path)
        .map_err(unreadable)?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(SecretFileError::Exposed {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    Ok(Secret::new(text.trim()))
}

/// The systemd credential `name` (`LoadCredential=name:FILE`), if the unit
/// loaded one: systemd made the file for this service alone.
pub fn credential(name: &str) -> Option<Result<Secret, SecretFileError>> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty())?;
    let path = Path::new(&dir).join(name);
    if !path.exists() {
        return None;
    }
    Some(
        std::fs::read_to_string(&path)
            .map(|t| Secret::new(t.trim()))
            .map_err(|source| SecretFileError::Unreadable { path, source }),
    )
}

/// A secret from the first place that has one: the environment variable
/// `env_var`, the configured `file` (mode 0600), or the systemd credential
/// `credential`. `None` when none has it; the `String` names the source,
/// for the start-up log line. A configured file that cannot be used is an
/// error, not a reason to look further: the owner meant that file.
pub fn load(
    env_var: &str,
    file: Option<&Path>,
    credential_name: &str,
) -> Result<Option<(Secret, String)>, SecretFileError> {
    if let Some(v) = std::env::var_os(env_var).filter(|v| !v.is_empty()) {
        let value = Secret::new(v.to_string_lossy().trim());
        return Ok(Some((value, format!("${env_var}"))));
    }
    if let Some(path) = file {
        return Ok(Some((read_private(path)?, path.display().to_string())));
    }
    match credential(credential_name) {
        Some(r) => Ok(Some((
            r?,
            format!("the systemd credential {credential_name}"),
        ))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_secret_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "north\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_private(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && e.contains("0640"), "{e}");
        assert!(!e.contains("north"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private(&path).unwrap().expose(), "north");
        let (s, from) = load("DOORBELL_TEST_UNSET_VARIABLE", Some(&path), "nothing")
            .unwrap()
            .unwrap();
        assert_eq!((s.expose(), from), ("north", path.display().to_string()));
        assert!(load(
            "DOORBELL_TEST_UNSET_VARIABLE",
            Some(&dir.path().join("gone")),
            "x"
        )
        .is_err());
    }
}
