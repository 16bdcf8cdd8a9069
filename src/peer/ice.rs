//! STUN and TURN servers as WebRTC takes them (`[[ice.servers]]` in the
//! config, `--ice-server` for `doorbell serve`'s viewers). Owned by the peer
//! side; the config and the server's viewer page use it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
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
