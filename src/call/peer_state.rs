//! The state of the media connection, as the peer reports it to the call.
//! Part of the call's vocabulary: the peer imports it without importing the
//! machine.

/// The state of the peer connection, as the peer module reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    Connected,
    Disconnected,
    Failed,
    Closed,
}
