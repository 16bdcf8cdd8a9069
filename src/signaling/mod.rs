//! Signaling: the call's messages, and the connections that carry them.
//!
//! The vocabulary is the room protocol's [`Message`] set, which every adapter
//! speaks in: an offer ([`Message::Invite`]) and an answer ([`Message::Ok`])
//! can go either way (the doorbell answers today; a protocol where it offers
//! sends `Invite` and receives `Ok`), candidates trickle both ways
//! ([`Message::IceCandidate`], `None` ending them), any event may come
//! without its argument. A protocol with a session per viewer names the
//! viewer ([`ViewerId`]: [`SignalingEvent::FromViewer`], [`Signaling::send_to`]);
//! the room protocol has one viewer per room and names none.
//!
//! [`device_ws`] is seed 002's device socket (a session per viewer,
//! trickle, no rooms); [`sse`] is seed 004's SSE sessions (we offer). [`protocol`] is pure data. [`client`] talks Socket.IO to a real server (ours
//! or the original design's, in either protocol generation), over
//! [`transport`] (WebSocket or long-polling, TCP or [`tls`]), with the pure
//! codecs [`engineio`] and [`socketio`]. [`memory`] is an in-process stand-in
//! with the same trait, for tests that run on a simulated clock.

pub mod client;
pub mod device_ws;
pub mod engineio;
#[cfg(feature = "testkit")]
pub mod memory;
pub mod protocol;
pub mod socketio;
pub mod sse;
pub mod tls;
pub mod transport;

use base64::Engine;
use futures_util::future::BoxFuture;

use protocol::Message;
use transport::TransportError;

/// What the signaling connection reports to the call loop.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalingEvent {
    /// Connected (the Socket.IO handshake is done): messages can be sent.
    Up,
    /// The connection is gone; reconnecting in the background.
    Down,
    /// A message in the room (one viewer per room).
    Message(Message),
    /// A message from one of possibly several viewers.
    FromViewer { viewer: ViewerId, message: Message },
    /// A message that could not be parsed; logged and otherwise ignored.
    Malformed(String),
    /// The server refuses us for good (seed 002's close 1008: unknown
    /// device): no more attempts; the owner is told why.
    Refused(String),
}

/// A viewer as a protocol with one session per viewer names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ViewerId(pub String);

impl std::fmt::Display for ViewerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SignalingError {
    #[error("not connected to the signaling server")]
    NotConnected,
    #[error("sending {0} failed")]
    Send(String),
    /// Settings that can never work (bad URL, CA file or pin).
    #[error("{0}")]
    Settings(String),
    /// The server could not be reached or refused us, with the cause.
    #[error(transparent)]
    Unreachable(#[from] ConnectError),
}

/// Why no connection could be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// Trying anything else cannot help (a TLS refusal, nobody listening).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The server refused every Engine.IO version asked for.
    #[error("the server refuses Engine.IO {versions}{}: {error}", if *.fixed { " (signaling.engine_io is set; \"auto\" tries both)" } else { "" })]
    Refused {
        versions: String,
        fixed: bool,
        error: TransportError,
    },
    /// Every attempt failed, each for its reason.
    #[error("{}", .0.join("; "))]
    Failed(Vec<String>),
}

/// Sends messages. Incoming ones arrive as [`SignalingEvent`]s on the channel
/// given when the connection was made.
pub trait Signaling: Send + Sync + 'static {
    /// To the room (every other member; the room protocol's only way).
    fn send(&self, msg: Message) -> BoxFuture<'static, Result<(), SignalingError>>;

    /// To one viewer. A protocol without per-viewer sessions has only the
    /// room, so by default this is [`Signaling::send`].
    fn send_to(
        &self,
        viewer: &ViewerId,
        msg: Message,
    ) -> BoxFuture<'static, Result<(), SignalingError>> {
        let _ = viewer;
        self.send(msg)
    }

    /// The ICE servers the server gave for this viewer's session (seed
    /// 002's `watch_request`), used besides the configured ones.
    fn ice_servers(&self, viewer: &ViewerId) -> Option<Vec<crate::peer::IceServer>> {
        let _ = viewer;
        None
    }

    /// The call's state changed (for a protocol that reports presence).
    fn call_state(&self, state: crate::call::command::StateKind) {
        let _ = state;
    }
}

/// A fresh room name: 128 bits from the operating system's random source,
/// URL-safe base64 without padding (22 characters). The room name is the only
/// secret protecting a call.
pub fn random_room() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_long_url_safe_and_different() {
        let rooms: Vec<String> = (0..1000).map(|_| random_room().unwrap()).collect();
        for r in &rooms {
            assert_eq!(r.len(), 22);
            assert!(
                r.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{r}"
            );
            assert!(protocol::valid_room(r));
        }
        let mut unique = rooms.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), rooms.len());
    }
}
