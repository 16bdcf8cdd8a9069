//! The secrets no log line may carry, whichever crate writes the line.
//!
//! Our own lines never name a secret (rooms appear as a tag), but a
//! dependency logging at debug or trace level may print a request URL with a
//! token in it, a WebSocket frame with a room name, a TURN user name. So the
//! log writer (`cmd::logging`) passes every line through [`scrub`], which
//! replaces every registered secret with `[redacted]`.
//!
//! The registry is process-wide, like the log it protects: the writer is
//! installed once, and secrets come from several layers (the composition
//! root registers the configured ones, the call loop each room while its
//! ring is live). It is small: a handful of configured secrets and the room
//! of the call in progress.

use std::borrow::Cow;
use std::sync::RwLock;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Shortest string worth redacting: shorter ones are words, not secrets,
/// and replacing them would garble the log.
const MIN_SECRET: usize = 4;

/// From now on, every log line has `secret` replaced by `[redacted]`.
pub fn add(secret: &str) {
    if secret.len() < MIN_SECRET {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    if !secrets.iter().any(|s| s == secret) {
        secrets.push(secret.to_string());
        // Longest first, so a secret that contains another goes whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// `secret` is worthless now (the room of an ended call).
pub fn remove(secret: &str) {
    let mut secrets = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    secrets.retain(|s| s != secret);
}

/// `text` with every registered secret replaced.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|p| p.into_inner());
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in secrets.iter() {
        out = out.replace(s.as_str(), "[redacted]");
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_are_scrubbed_whole_until_removed() {
        add("CANARY-TURN-PASSWORD");
        add("CANARY-TURN");
        add("abc");
        let line = "auth with CANARY-TURN-PASSWORD for CANARY-TURN at abc";
        assert_eq!(
            scrub(line),
            "auth with [redacted] for [redacted] at abc",
            "the longer secret goes whole; 3 characters are not a secret"
        );
        assert!(matches!(scrub("nothing here"), Cow::Borrowed(_)));
        remove("CANARY-TURN");
        assert_eq!(scrub("CANARY-TURN"), "CANARY-TURN");
    }
}
