//! The owner's side of `doorbell serve`: every page other than a live ring's
//! link sits behind the owner's password (the next pages, history and live
//! view, land here).
//!
//! - The password is stored only as an Argon2id hash in PHC form, made by
//!   `doorbell passwd` and read from a private file or a systemd credential.
//! - A correct password opens a session: 256 random bits in a cookie that is
//!   `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page
//!   can make the browser send it, so no cross-site form can act as the
//!   owner) and `Secure` when the request came over TLS (through a local
//!   reverse proxy, which is how `doorbell serve` is deployed). The server
//!   keeps only the token's SHA-256 and its expiry.
//! - Login attempts are limited per address: after
//!   [`LoginLimits::failures`] wrong passwords within
//!   [`LoginLimits::window`], the address is refused (429, `Retry-After`)
//!   without the password being looked at, until the window has passed. At
//!   most two hashes are checked at once, so a crowd of addresses cannot
//!   take the CPU either.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Passwords shorter than this are refused by `doorbell passwd`.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// The session cookie's name.
pub const COOKIE: &str = "doorbell_owner";

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is too short: use at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error(
        "the password file does not hold an Argon2 hash (make one with `doorbell passwd`): {0}"
    )]
    NotAHash(String),
    #[error("could not hash the password: {0}")]
    Hash(String),
}

/// The PHC string of `password` under Argon2id with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// A checked PHC string (parsed once at start-up, so a bad file stops the
/// start with the fix instead of failing every login).
#[derive(Clone)]
pub struct PasswordHashString(String);

impl PasswordHashString {
    pub fn parse(text: &str) -> Result<Self, PasswordError> {
        let text = text.trim();
        let parsed = PasswordHash::new(text).map_err(|e| PasswordError::NotAHash(e.to_string()))?;
        if !parsed.algorithm.as_str().starts_with("argon2") {
            return Err(PasswordError::NotAHash(format!(
                "the algorithm is {}",
                parsed.algorithm
            )));
        }
        Ok(Self(text.to_string()))
    }

    /// Whether `password` is the one (constant time in the hash comparison;
    /// takes the Argon2 time whatever the answer).
    pub fn verify(&self, password: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(&self.0) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    }
}

impl std::fmt::Debug for PasswordHashString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHashString([redacted])")
    }
}

#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Wrong passwords allowed from one address within `window`.
    pub failures: usize,
    pub window: Duration,
    /// How long a session lasts after login.
    pub session_ttl: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            failures: 5,
            window: Duration::from_secs(15 * 60),
            session_ttl: Duration::from_secs(12 * 3600),
        }
    }
}

/// What a login attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Login {
    /// The password was right: the new session's token, for the cookie.
    Opened(String),
    Wrong,
    /// Too many wrong passwords from this address: try again after this.
    Refused {
        retry_after: Duration,
    },
}

/// Sessions and login attempts. Holds no password, only its hash.
#[derive(Debug)]
pub struct Owner {
    hash: PasswordHashString,
    limits: LoginLimits,
    /// SHA-256 of each live session's token -> its expiry.
    sessions: Mutex<HashMap<[u8; 32], Instant>>,
    /// Recent wrong passwords per address.
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
    checking: tokio::sync::Semaphore,
}

/// Sessions kept at most (an owner has a few phones; old ones go first).
const MAX_SESSIONS: usize = 64;
/// Addresses whose failures are remembered at most.
const MAX_TRACKED: usize = 10_000;

impl Owner {
    pub fn new(hash: PasswordHashString, limits: LoginLimits) -> Owner {
        Owner {
            hash,
            limits,
            sessions: Mutex::default(),
            failures: Mutex::default(),
            checking: tokio::sync::Semaphore::new(2),
        }
    }

    pub fn limits(&self) -> LoginLimits {
        self.limits
    }

    /// Whether `from` may try now; if not, for how long it may not.
    fn refused(&self, from: IpAddr, now: Instant) -> Option<Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let list = failures.get_mut(&from)?;
        while list
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.limits.window)
        {
            list.pop_front();
        }
        if list.is_empty() {
            failures.remove(&from);
            return None;
        }
        (list.len() >= self.limits.failures)
            .then(|| self.limits.window - now.duration_since(list[0]))
    }

    fn failed(&self, from: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&from) {
            let window = self.limits.window;
            failures.retain(|_, l| l.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        failures.entry(from).or_default().push_back(now);
    }

    /// A login attempt from `from` with `password`.
    pub async fn login(&self, from: IpAddr, password: &str) -> Login {
        if let Some(retry_after) = self.refused(from, Instant::now()) {
            return Login::Refused { retry_after };
        }
        let right = {
            let _slot = self.checking.acquire().await;
            let hash = self.hash.clone();
            let password = password.to_string();
            tokio::task::spawn_blocking(move || hash.verify(&password))
                .await
                .unwrap_or(false)
        };
        let now = Instant::now();
        if !right {
            self.failed(from, now);
            return Login::Wrong;
        }
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&from);
        Login::Opened(self.open_session(now))
    }

    fn open_session(&self, now: Instant) -> String {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).expect("the OS random source works");
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, until| *until > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, u)| **u).map(|(k, _)| *k) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(digest(&token), now + self.limits.session_ttl);
        token
    }

    /// Whether `token` (from the cookie) is a live session.
    pub fn session(&self, token: &str, now: Instant) -> bool {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let key = digest(token);
        match sessions.get(&key) {
            Some(until) if *until > now => true,
            Some(_) => {
                sessions.remove(&key);
                false
            }
            None => false,
        }
    }

    pub fn logout(&self, token: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&digest(token));
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The session token in a `Cookie` header, if any.
pub fn token_in(cookie_header: &str) -> Option<&str> {
    cookie_header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value for a new session.
pub fn session_cookie(token: &str, ttl: Duration, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        ttl.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn cleared_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const AWAY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    fn owner(limits: LoginLimits) -> Owner {
        let hash = hash_password("correct horse battery").unwrap();
        Owner::new(PasswordHashString::parse(&hash).unwrap(), limits)
    }

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        let h = PasswordHashString::parse(&a).unwrap();
        assert!(h.verify("correct horse battery"));
        assert!(!h.verify("correct horse batterY"));
        assert!(matches!(
            hash_password("short"),
            Err(PasswordError::TooShort)
        ));
        assert!(!format!("{h:?}").contains("argon2"), "Debug hides the hash");
    }

    #[test]
    fn a_file_without_a_hash_is_refused_with_the_fix() {
        for text in ["hunter2hunter2", "", "$md5$abc"] {
            let e = PasswordHashString::parse(text).unwrap_err().to_string();
            assert!(e.contains("doorbell passwd"), "{e}");
        }
    }

    #[tokio::test]
    async fn a_session_opens_with_the_right_password_and_expires() {
        let o = owner(LoginLimits {
            session_ttl: Duration::from_secs(60),
            ..LoginLimits::default()
        });
        assert_eq!(o.login(HOME, "wrong password!").await, Login::Wrong);
        let Login::Opened(token) = o.login(HOME, "correct horse battery").await else {
            panic!("the right password opens a session");
        };
        assert_eq!(token.len(), 43, "256 bits");
        let now = Instant::now();
        assert!(o.session(&token, now));
        assert!(!o.session("somebody-else-s-guess", now));
        assert!(!o.session(&token, now + Duration::from_secs(61)), "expired");
        assert!(!o.session(&token, now), "and forgotten");
        let Login::Opened(token) = o.login(HOME, "correct horse battery").await else {
            panic!();
        };
        o.logout(&token);
        assert!(!o.session(&token, Instant::now()));
    }

    #[tokio::test]
    async fn an_address_that_guesses_is_shut_out_for_the_window_and_others_are_not() {
        let o = owner(LoginLimits {
            failures: 3,
            window: Duration::from_secs(600),
            ..LoginLimits::default()
        });
        for _ in 0..3 {
            assert_eq!(o.login(AWAY, "guess guess guess").await, Login::Wrong);
        }
        match o.login(AWAY, "correct horse battery").await {
            Login::Refused { retry_after } => {
                assert!(
                    retry_after <= Duration::from_secs(600)
                        && retry_after > Duration::from_secs(590)
                )
            }
            other => panic!("even the right password is refused now: {other:?}"),
        }
        assert!(matches!(
            o.login(HOME, "correct horse battery").await,
            Login::Opened(_)
        ));
        // After the window, the address may try again.
        assert_eq!(
            o.refused(AWAY, Instant::now() + Duration::from_secs(601)),
            None
        );
    }

    #[test]
    fn cookies_carry_the_flags() {
        let c = session_cookie("t0k", Duration::from_secs(3600), false);
        assert_eq!(
            c,
            "doorbell_owner=t0k; Path=/; Max-Age=3600; HttpOnly; SameSite=Strict"
        );
        assert!(session_cookie("t0k", Duration::from_secs(1), true).ends_with("; Secure"));
        assert_eq!(token_in("a=b; doorbell_owner=t0k; c=d"), Some("t0k"));
        assert_eq!(token_in("doorbell_ownerx=t0k"), None);
    }
}
