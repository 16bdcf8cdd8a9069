//! Seed 002's viewer tokens: what a viewer says `hello` with on `/ws/viewer`.
//!
//! The seed shows a JWT (`eyJ0eXAiOiJKV1QiLCJhbGc...`) and says only that an
//! invalid one is closed with 1008. Ours are JWTs signed with HMAC-SHA256
//! (`HS256`), so that another backend can mint them with any JWT library
//! and the same key:
//!
//! ```text
//! base64url({"alg":"HS256","typ":"JWT"}) . base64url(claims) . base64url(HMAC-SHA256(key, first two parts))
//! claims = {"sub": USER_ID, "devices": [DEVICE_ID, ...], "iat": UNIX_S, "exp": UNIX_S}
//! ```
//!
//! `sub` is the viewer's user id (the `user_id` of `hello_ack` and of the
//! device's `watch_request`), `devices` the devices it may watch (`"*"`:
//! any), `exp` when it stops being accepted at `hello` (a session already
//! open goes on). Only `HS256` is taken (no `none`, no other algorithm:
//! the header must say exactly that), the signature is compared in constant
//! time, and nothing about a token reaches the log. Pure: the time is an
//! argument.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::secret::Secret;

/// The environment variable and systemd credential that may hold the key.
pub const KEY_ENV: &str = "DOORBELL_VIEWER_TOKEN_KEY";
pub const KEY_CREDENTIAL: &str = "viewer-token-key";
/// The shortest key taken (characters of the file).
pub const MIN_KEY_CHARS: usize = 32;
/// Longest token read (a JWT for a few devices is a few hundred bytes).
const MAX_TOKEN: usize = 4096;
/// Most devices one token names.
const MAX_DEVICES: usize = 64;

/// The only header we write and accept.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerClaims {
    pub user_id: String,
    /// The devices it may watch; `None`: any.
    pub devices: Option<Vec<String>>,
    pub expires_unix: u64,
}

impl ViewerClaims {
    pub fn may_watch(&self, device: &str) -> bool {
        self.devices
            .as_ref()
            .is_none_or(|d| d.iter().any(|x| x == device))
    }
}

/// Why a token is refused. The seed's word for all of them is "Invalid
/// token"; these are for the debug log and the tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a JWT of three parts")]
    Shape,
    #[error("not the HS256 header")]
    Header,
    #[error("the signature does not match")]
    Signature,
    #[error("the claims are not usable: {0}")]
    Claims(&'static str),
    #[error("expired")]
    Expired,
}

/// The signing key.
#[derive(Clone)]
pub struct TokenKey(Secret);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey([redacted])")
    }
}

impl TokenKey {
    /// A key from its text (a file's content), refused when short.
    pub fn new(key: Secret) -> Result<TokenKey, String> {
        if key.expose().chars().count() < MIN_KEY_CHARS {
            return Err(format!(
                "the viewer token key must have at least {MIN_KEY_CHARS} characters \
                 (make one: head -c 32 /dev/urandom | base64)"
            ));
        }
        Ok(TokenKey(key))
    }

    /// A random key for this process alone (tokens it mints work only here).
    pub fn random() -> TokenKey {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).expect("the OS random source works");
        TokenKey(Secret::new(URL_SAFE_NO_PAD.encode(raw)))
    }

    fn mac(&self, signed: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose().as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(signed.as_bytes());
        mac
    }

    /// A token for `claims`, issued at `now_unix`.
    pub fn mint(&self, claims: &ViewerClaims, now_unix: u64) -> String {
        let devices = match &claims.devices {
            Some(d) => json!(d),
            None => json!(["*"]),
        };
        let body = json!({
            "sub": claims.user_id,
            "devices": devices,
            "iat": now_unix,
            "exp": claims.expires_unix,
        });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(body.to_string())
        );
        let signature = URL_SAFE_NO_PAD.encode(self.mac(&signed).finalize().into_bytes());
        format!("{signed}.{signature}")
    }

    /// The claims of `token` if it is ours, well formed and not expired at
    /// `now_unix`.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<ViewerClaims, TokenError> {
        if token.len() > MAX_TOKEN {
            return Err(TokenError::Shape);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(body), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Shape);
        };
        // The signature first: nothing of an unsigned token is read.
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Shape)?;
        self.mac(&token[..header.len() + 1 + body.len()])
            .verify_slice(&signature)
            .map_err(|_| TokenError::Signature)?;
        let header: Value = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or(TokenError::Header)?;
        if header["alg"] != "HS256" || header.get("crit").is_some() {
            return Err(TokenError::Header);
        }
        let body: Value = URL_SAFE_NO_PAD
            .decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Claims("not JSON"))?;
        let user_id = body["sub"]
            .as_str()
            .filter(|s| valid_user(s))
            .ok_or(TokenError::Claims("sub"))?
            .to_string();
        let expires_unix = body["exp"].as_u64().ok_or(TokenError::Claims("exp"))?;
        let list = body["devices"]
            .as_array()
            .filter(|l| !l.is_empty() && l.len() <= MAX_DEVICES)
            .ok_or(TokenError::Claims("devices"))?;
        let mut devices = Vec::with_capacity(list.len());
        for d in list {
            let d = d.as_str().ok_or(TokenError::Claims("devices"))?;
            devices.push(d.to_string());
        }
        let devices = (!devices.iter().any(|d| d == "*")).then_some(devices);
        if now_unix >= expires_unix {
            return Err(TokenError::Expired);
        }
        Ok(ViewerClaims {
            user_id,
            devices,
            expires_unix,
        })
    }
}

/// A user id we pass on: 1 to 64 printable characters.
fn valid_user(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> TokenKey {
        TokenKey::new(Secret::new(text)).unwrap()
    }

    fn owner_for(device: &str, until: u64) -> ViewerClaims {
        ViewerClaims {
            user_id: "owner".into(),
            devices: Some(vec![device.into()]),
            expires_unix: until,
        }
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let k = key(KEY);
        let t = k.mint(&owner_for("door-1", 1_000), 400);
        assert!(
            t.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."),
            "{t}"
        );
        let c = k.verify(&t, 999).unwrap();
        assert_eq!(c, owner_for("door-1", 1_000));
        assert!(c.may_watch("door-1") && !c.may_watch("door-2"));
        assert_eq!(k.verify(&t, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn a_wildcard_token_watches_any_device() {
        let k = key(KEY);
        let c = ViewerClaims {
            user_id: "42".into(),
            devices: None,
            expires_unix: 10,
        };
        let v = k.verify(&k.mint(&c, 0), 5).unwrap();
        assert!(v.may_watch("anything"));
    }

    #[test]
    fn tampered_tokens_and_other_keys_are_refused() {
        let k = key(KEY);
        let t = k.mint(&owner_for("door-1", 1_000), 0);
        let other = key("another key of thirty-two chars!!");
        assert_eq!(other.verify(&t, 1), Err(TokenError::Signature));
        // A body that names another device, with the old signature.
        let parts: Vec<&str> = t.split('.').collect();
        let forged_body =
            URL_SAFE_NO_PAD.encode(r#"{"sub":"owner","devices":["*"],"iat":0,"exp":1000}"#);
        let forged = format!("{}.{forged_body}.{}", parts[0], parts[2]);
        assert_eq!(k.verify(&forged, 1), Err(TokenError::Signature));
        // One bit of the signature flipped.
        let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        sig[0] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
        assert_eq!(k.verify(&flipped, 1), Err(TokenError::Signature));
        for bad in ["", "a.b", "a.b.c.d", "x.y.!!!", &"a".repeat(5000)] {
            assert!(k.verify(bad, 1).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_hs256_is_taken() {
        // A token whose header says "none", signed anyway with our key:
        // still refused (only the exact algorithm is accepted).
        let k = key(KEY);
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(r#"{"sub":"x","devices":["*"],"exp":99}"#);
        let signed = format!("{header}.{body}");
        let sig = URL_SAFE_NO_PAD.encode(k.mac(&signed).finalize().into_bytes());
        assert_eq!(
            k.verify(&format!("{signed}.{sig}"), 1),
            Err(TokenError::Header)
        );
    }

    #[test]
    fn claims_are_checked() {
        let k = key(KEY);
        for body in [
            r#"{"devices":["d"],"exp":99}"#,
            r#"{"sub":"","devices":["d"],"exp":99}"#,
            r#"{"sub":"u","devices":[],"exp":99}"#,
            r#"{"sub":"u","devices":[5],"exp":99}"#,
            r#"{"sub":"u","devices":["d"]}"#,
            r#"[1]"#,
        ] {
            let signed = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(HEADER),
                URL_SAFE_NO_PAD.encode(body)
            );
            let sig = URL_SAFE_NO_PAD.encode(k.mac(&signed).finalize().into_bytes());
            assert!(
                matches!(
                    k.verify(&format!("{signed}.{sig}"), 1),
                    Err(TokenError::Claims(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn short_keys_are_refused_and_never_printed() {
        assert!(TokenKey::new(Secret::new("short")).is_err());
        assert_eq!(format!("{:?}", key(KEY)), "TokenKey([redacted])");
        let a = TokenKey::random();
        let b = TokenKey::random();
        let t = a.mint(&owner_for("d", 10), 0);
        assert!(a.verify(&t, 1).is_ok() && b.verify(&t, 1).is_err());
    }
}
