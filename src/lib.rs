//! `doorbell`: a video doorbell appliance. A button press opens a fresh room on a
//! Socket.IO signaling server, the owner gets a link, and the browser that opens
//! it gets a two-way WebRTC call with the door.
//!
//! # Layout
//!
//! - [`call`]: the pure call state machine ([`call::machine`]), the loop that
//!   drives it ([`call::driver`]) and the per-call peer session ([`call::session`]).
//! - [`signaling`]: the room protocol ([`signaling::protocol`], pure), the
//!   Socket.IO client ([`signaling::client`]) and an in-memory stand-in.
//! - [`peer`]: the only module that imports webrtc-rs: the doorbell's answering
//!   peer and a browser-like viewer peer.
//! - [`media`]: sources (test pattern, tone, sound cards), H.264 and Opus,
//!   the video and audio pipelines, the jitter buffer, WAV and device sinks.
//! - [`server`]: `doorbell serve`, the room server and the web viewer.
//! - [`button`]: where presses come from (stdin, GPIO through rppal with a pure
//!   debouncer, the control socket).
//! - [`chime`]: the sound (and optional relay) that tells the visitor the bell
//!   worked.
//! - [`notify`]: telling the owner: stdout, Telegram (with a photo, follow-ups
//!   and the owner's bot commands), webhooks.
//! - [`config`], [`events`], [`sdp`]: the config file, the JSON event stream,
//!   and the little SDP reading we do ourselves.
//! - [`cmd`]: one module per subcommand; `main.rs` only parses and dispatches.

pub mod backoff;
pub mod button;
pub mod call;
pub mod chime;
pub mod cmd;
pub mod config;
pub mod gpio;
pub mod history;
pub mod media;
pub mod notify;
pub mod peer;
pub mod sdp;
pub mod server;
pub mod signaling;
pub mod spec;
pub mod systemd;
