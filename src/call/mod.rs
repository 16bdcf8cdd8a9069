//! The call: a pure state machine ([`machine`]), the loop that carries out
//! its actions ([`driver`]) and the peer session of one viewer ([`session`]).
//!
//! Its vocabulary sits in leaves that the layers around the call import
//! without importing the machine or the driver: [`command`] (what buttons and
//! owners ask, with typed replies), [`event`] (what a call reports),
//! [`peer_state`] (what the media connection reports).

pub mod command;
pub mod driver;
pub mod event;
pub mod machine;
pub mod peer_state;
pub mod session;
