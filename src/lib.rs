//! `doorbell`: a video doorbell appliance. A button press opens a fresh room on a
//! Socket.IO signaling server, the owner gets a link, and the browser that opens
//! it gets a two-way WebRTC call with the door.
//!
//! # Layout
//!
//! Modules import only downwards (no cycle: `scripts/check-layers`, run by
//! the tests). From the bottom:
//!
//! 1. **Vocabulary** (leaves, no IO): [`spec`] (what the config names:
//!    sources, pins, sounds, durations), the call's words
//!    ([`call::command`], [`call::event`], [`call::peer_state`]), the
//!    signaling messages ([`signaling::protocol`]), [`sdp`], [`backoff`],
//!    [`redact`] (the secrets no log line may carry), [`secret`] and
//!    [`turn`] (secrets, and TURN credentials minted from one), and the media traits
//!    and frames ([`media`]).
//! 2. **Pure cores**: the call state machine ([`call::machine`]), the button
//!    debouncer, camera format negotiation and conversion, the server's room
//!    rules, the Engine.IO and Socket.IO codecs.
//! 3. **Adapters**, one per outside crate: [`peer`] (webrtc-rs),
//!    [`signaling::client`] (our Socket.IO client over hyper, tungstenite and
//!    native-tls), `media::h264` (openh264), `media::audio` (opus), `media::mp4` (muxide),
//!    `media::device` (cpal), `media::v4l2` (v4l), `media::v4l2m2m` (the
//!    hardware encoder's ioctls, through libc), [`gpio`] (rppal), the
//!    Telegram API (teloxide), [`server`] (socketioxide and axum).
//! 4. **Subsystems**: the peer session of a call ([`call::session`]), media
//!    pipelines and the devices of a call (`media::opener`, `media::lease`,
//!    `media::tap`), [`button`] sources, the [`chime`], the notifiers
//!    ([`notify`]), the [`history`] on disk, call recordings ([`record`]) and
//!    the [`voicemail`],
//!    [`systemd`].
//! 5. **The call loop** ([`call::driver`]): inputs in, the machine decides,
//!    actions out.
//! 6. **[`config`]**: the file, made of the subsystems' settings.
//! 7. **[`cmd`]**: one module per subcommand; [`cmd::daemon`] is the
//!    composition root that gives each subsystem its own settings. `main.rs`
//!    only parses and dispatches.
//!
//! A newcomer reads `call::event` and `call::command` (what a call says and
//! is asked), then `call::machine` and its table of tests, then
//! `call::driver`, then `cmd::daemon`.

pub mod backoff;
pub mod button;
pub mod call;
pub mod chime;
pub mod cmd;
pub mod config;
pub mod door_voice;
pub mod gpio;
pub mod history;
pub mod media;
pub mod notify;
pub mod peer;
pub mod record;
pub mod redact;
pub mod sdp;
pub mod secret;
pub mod server;
pub mod signaling;
pub mod spec;
pub mod systemd;
pub mod turn;
pub mod voicemail;
