//! Signaling: the room protocol's messages and the Socket.IO client that carries them.

pub mod protocol;
