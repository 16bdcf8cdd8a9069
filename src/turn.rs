//! TURN without a standing password: time-limited credentials in the "TURN
//! REST" scheme that coturn implements (`use-auth-secret`,
//! `static-auth-secret`). The doorbell and the server share a secret with
//! the TURN server; for each call (and, on `doorbell serve`, each viewer in a
//! live room) they mint a user name that is the expiry time (Unix seconds,
//! `:tag` after it) and a password that is base64(HMAC-SHA1(secret, user
//! name)). The TURN server checks the HMAC and the expiry; nobody holds a
//! password that works forever.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use std::time::Duration;

use crate::secret::Secret;
use crate::spec::ice::IceServer;

/// The environment variable and systemd credential that may hold the
/// shared secret (besides a configured file).
pub const TURN_SECRET_ENV: &str = "DOORBELL_TURN_SECRET";
pub const TURN_SECRET_CREDENTIAL: &str = "turn-secret";

/// A TURN server that takes TURN REST credentials, and the shared secret.
#[derive(Debug, Clone)]
pub struct TurnRest {
    /// `turn:` or `turns:` URLs of the server.
    pub urls: Vec<String>,
    pub secret: Secret,
    /// How long a minted credential is valid.
    pub ttl: Duration,
}

impl TurnRest {
    /// The server at `urls` with its secret from the environment
    /// (`$DOORBELL_TURN_SECRET`), `file` (mode 0600), or the systemd
    /// credential `turn-secret`, in that order; and where the secret came
    /// from. `file_option` names the option or key for messages. The secret
    /// is registered with the log's redaction from here on.
    pub fn load(
        urls: &[String],
        file: Option<&std::path::Path>,
        ttl: Duration,
        file_option: &str,
    ) -> Result<(TurnRest, String), String> {
        if let Some(bad) = urls
            .iter()
            .find(|u| !(u.starts_with("turn:") || u.starts_with("turns:")))
        {
            return Err(format!("{bad:?} must start with turn: or turns:"));
        }
        let (secret, from) = crate::secret::load(TURN_SECRET_ENV, file, TURN_SECRET_CREDENTIAL)
            .map_err(|e| format!("{file_option} {e}"))?
            .ok_or_else(|| {
                format!(
                    "a TURN server with TURN REST credentials needs its shared secret: set \
                     {file_option}, {TURN_SECRET_ENV}, or a systemd credential named \
                     {TURN_SECRET_CREDENTIAL}"
                )
            })?;
        crate::redact::add(secret.expose());
        Ok((
            TurnRest {
                urls: urls.to_vec(),
                secret,
                ttl,
            },
            from,
        ))
    }

    /// Credentials valid until `now_unix + ttl`, for `tag` (who they are
    /// for; part of the user name, seen in the TURN server's log).
    pub fn mint(&self, now_unix: u64, tag: &str) -> IceServer {
        let expiry = now_unix.saturating_add(self.ttl.as_secs());
        mint_until(&self.urls, &self.secret, expiry, tag)
    }
}

/// Credentials that expire at `expiry` (Unix seconds).
pub fn mint_until(urls: &[String], secret: &Secret, expiry: u64, tag: &str) -> IceServer {
    let username = if tag.is_empty() {
        expiry.to_string()
    } else {
        format!("{expiry}:{tag}")
    };
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    IceServer {
        urls: urls.to_vec(),
        username,
        credential,
    }
}

/// Seconds since the Unix epoch, from the system clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value `openssl dgst -sha1 -hmac` gives for the same user name.
    #[test]
    fn credentials_are_the_hmac_of_the_user_name() {
        let s = mint_until(
            &["turn:127.0.0.1:3478".into()],
            &Secret::new("north"),
            1_700_000_000,
            "doorbell",
        );
        assert_eq!(s.username, "1700000000:doorbell");
        // printf '1700000000:doorbell' | openssl dgst -sha1 -hmac north -binary | base64
        assert_eq!(s.credential, "ZRhTYqKfMS/+JkDV8FaoheCnogQ=");
        let bare = mint_until(&[], &Secret::new("north"), 1_700_000_000, "");
        assert_eq!(bare.username, "1700000000");
    }

    #[test]
    fn the_expiry_is_now_plus_the_ttl() {
        let t = TurnRest {
            urls: vec!["turn:x".into()],
            secret: Secret::new("s"),
            ttl: Duration::from_secs(600),
        };
        assert!(t.mint(1000, "v").username.starts_with("1600:"));
    }
}
