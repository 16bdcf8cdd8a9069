//! What the config file names, as values: media sources and sinks
//! ([`media`]), GPIO buttons and relays ([`gpio`]), chime sounds
//! ([`chime`]), call policies ([`call`]), STUN/TURN servers ([`ice`]) and
//! durations ([`duration`]).
//!
//! The leaf of the crate: it imports nothing from it, so the config (which
//! parses and validates these) and every subsystem (which acts on them) can
//! share one definition without importing each other. Parsing is pure, so
//! `doorbell check` can reject a typo without touching a device.

pub mod call;
pub mod chime;
pub mod duration;
pub mod gpio;
pub mod ice;
pub mod media;
