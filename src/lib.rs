//! doorbell library
pub mod call;
pub mod signaling;
