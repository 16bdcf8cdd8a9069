//! STUN and TURN servers as WebRTC takes them (`[[ice.servers]]` in the
//! config, `--ice-server` for `doorbell serve`'s viewers, the `ice_servers`
//! message that gives a viewer its TURN credentials).

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential: String,
}

impl IceServer {
    /// The default: one public STUN server, no TURN.
    pub fn default_servers() -> Vec<IceServer> {
        vec![IceServer {
            urls: vec!["stun:stun.l.google.com:19302".into()],
            username: String::new(),
            credential: String::new(),
        }]
    }
}

/// The credential is a password: `Debug` (and so every `{:?}` of a
/// settings struct holding servers) shows only whether there is one.
impl fmt::Debug for IceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field(
                "credential",
                &if self.credential.is_empty() {
                    ""
                } else {
                    "[redacted]"
                },
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_credential() {
        let s = IceServer {
            urls: vec!["turn:x".into()],
            username: "u".into(),
            credential: "CANARY".into(),
        };
        let text = format!("{s:?}");
        assert!(
            !text.contains("CANARY") && text.contains("[redacted]"),
            "{text}"
        );
    }
}
