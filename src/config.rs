//! The configuration file: TOML, every key optional with a documented default.
//!
//! Loading is parsing plus validation and nothing else: no device is opened and
//! no connection made, so `doorbell check` can explain a bad file on a machine
//! without hardware. Unknown keys are refused by name (a typo must not be
//! silently ignored on an appliance nobody watches). Every key is documented in
//! `docs/config.md`; a test walks the keys of [`Config::default`] and fails when
//! one is missing there.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::call::machine::{MachineConfig, ProtocolTraits, Timeouts};
use crate::chime::ChimeConfig;
use crate::media::echo::{Duplex, EchoSettings};
use crate::media::opener::MediaSettings;
use crate::media::EncoderSettings;
use crate::notify::webhook::WebhookConfig;
use crate::peer::IceServer;
use crate::signaling::client::{ClientSettings, EngineIo};
use crate::signaling::tls::{Fingerprint, TrustSettings};
use crate::spec::call::PressDuringCall;
use crate::spec::chime::ChimeSound;
use crate::spec::duration;
use crate::spec::gpio::ButtonSpec;
use crate::spec::media::{EncoderSpec, SinkSpec, SourceSpec, VideoSpec, DEFAULT_ENCODER_DEVICE};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}(see docs/config.md)")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {key}: {message} (see docs/config.md)")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub signaling: SignalingConfig,
    pub call: CallConfig,
    pub ice: IceConfig,
    pub video: VideoConfig,
    pub audio: AudioConfig,
    pub button: ButtonConfig,
    pub chime: ChimeConfig,
    pub control: ControlConfig,
    pub notify: NotifyConfig,
    pub history: HistoryConfig,
    pub record: RecordConfig,
    pub voicemail: VoicemailConfig,
    pub replies: RepliesConfig,
    pub live: LiveConfig,
    pub log: LogConfig,
}

/// `[live]`: looking at the door without a ring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveConfig {
    /// A live view stops by itself after this long (seed 000: 590 s).
    #[serde(with = "duration")]
    pub max_duration: Duration,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            max_duration: Duration::from_secs(590),
        }
    }
}

/// `[replies]`: the owner's voice at the door from Telegram, while it rings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepliesConfig {
    /// Quick-reply buttons under the ring message, and voice messages to
    /// the bot played at the door (both need `notify.telegram.commands`
    /// and a speaker).
    pub enabled: bool,
    /// Longer voice messages are refused (with a reply saying so).
    #[serde(with = "duration")]
    pub voice_max: Duration,
    /// The buttons, in order.
    pub quick: Vec<QuickReplyConfig>,
}

/// One quick-reply button: its text, and what the door plays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuickReplyConfig {
    pub text: String,
    /// `builtin:coming`, `builtin:leave-it`, a WAV file (48 kHz, 16-bit)
    /// or an Ogg/Opus file; at most 15 s.
    pub sound: String,
}

impl Default for RepliesConfig {
    fn default() -> Self {
        let builtin = |name: &str| QuickReplyConfig {
            text: crate::door_voice::builtin_text(name)
                .unwrap_or(name)
                .to_string(),
            sound: format!("builtin:{name}"),
        };
        Self {
            enabled: true,
            voice_max: Duration::from_secs(30),
            quick: vec![builtin("coming"), builtin("leave-it")],
        }
    }
}

impl RepliesConfig {
    /// The settings, every sound read and decoded.
    pub fn settings(&self) -> Result<crate::door_voice::RepliesSettings, String> {
        let quick = self
            .quick
            .iter()
            .map(|q| {
                let pcm = crate::door_voice::load_sound(&q.sound)
                    .map_err(|e| format!("replies.quick {:?}: {e}", q.text))?;
                Ok(crate::door_voice::QuickReply {
                    text: q.text.clone(),
                    pcm: std::sync::Arc::new(pcm),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(crate::door_voice::RepliesSettings {
            quick,
            voice_max: self.voice_max,
        })
    }
}

/// `[voicemail]`: a message from the visitor when nobody answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoicemailConfig {
    pub enabled: bool,
    /// The clip's length, its pre-roll included.
    #[serde(with = "duration")]
    pub seconds: Duration,
    /// `builtin`, `none`, or a WAV file (48 kHz, 16-bit, at most 10 s).
    pub prompt: String,
}

impl Default for VoicemailConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            seconds: Duration::from_secs(20),
            prompt: "builtin".into(),
        }
    }
}

impl VoicemailConfig {
    /// The settings, the prompt read and decoded.
    pub fn settings(&self) -> Result<crate::voicemail::VoicemailSettings, String> {
        let prompt = match self.prompt.as_str() {
            "none" => None,
            "builtin" => Some(crate::chime::decode(crate::voicemail::BUILTIN_PROMPT, 100)?),
            path => {
                let bytes =
                    std::fs::read(path).map_err(|e| format!("voicemail.prompt {path}: {e}"))?;
                Some(
                    crate::chime::decode(&bytes, 100)
                        .map_err(|e| format!("voicemail.prompt {path}: {e}"))?,
                )
            }
        };
        Ok(crate::voicemail::VoicemailSettings {
            seconds: self.seconds,
            prompt: prompt.map(std::sync::Arc::new),
        })
    }
}

/// `[record]`: recordings kept in the history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordConfig {
    /// Record every answered call (the door's video, both voices mixed) to
    /// an MP4 file in the history.
    pub calls: bool,
}

/// `[history]`: every ring and live view, kept on disk (src/history/).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Where the database and the pictures go. Default: see
    /// [`crate::history::resolve_dir`] (/var/lib/doorbell under systemd).
    pub dir: Option<PathBuf>,
    /// Rows (and their files) older than this many days go.
    pub keep_days: u32,
    /// The pictures and recordings take at most this many megabytes
    /// (10^6 bytes); the oldest go first.
    pub max_mb: u64,
    /// Keep the picture of the visitor taken at each press.
    pub snapshots: bool,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            dir: None,
            keep_days: 60,
            max_mb: 500,
            snapshots: true,
        }
    }
}

impl HistoryConfig {
    pub fn settings(&self) -> crate::history::HistorySettings {
        crate::history::HistorySettings {
            dir: crate::history::resolve_dir(self.dir.as_deref()).0,
            keep: Duration::from_secs(u64::from(self.keep_days) * 86_400),
            max_bytes: self.max_mb.saturating_mul(1_000_000),
            snapshots: self.snapshots,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalingConfig {
    /// Which protocol the server speaks (`docs/protocol.md`).
    pub protocol: SignalingProtocol,
    /// The server, `http://` or `https://` (the room protocol's Socket.IO
    /// endpoint, or the base of seed 002's `/ws/device`).
    pub url: String,
    /// The link the owner gets; `{room}` is replaced by the room name and
    /// `{device_id}` by `device_id`. Empty: `<url>/?room={room}`, or
    /// `<url>/watch/{device_id}` with `device-ws`.
    pub viewer_link: String,
    /// This doorbell's name on a `device-ws` server (seed 002's `hello`).
    pub device_id: String,
    /// How often a `device-ws` connection says `heartbeat`.
    #[serde(with = "duration")]
    pub heartbeat: Duration,
    /// Which Engine.IO protocol the server speaks: found out per connection
    /// (`auto`), or `3` / `4`.
    pub engine_io: EngineIo,
    /// PEM file with the CA or self-signed certificate to trust for `https`.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 fingerprints of the exact server certificate(s) to trust,
    /// instead of CAs and names (the original design's CN-only certificate).
    #[serde(deserialize_with = "one_or_many")]
    pub pin_sha256: Vec<String>,
    /// Skip TLS certificate verification. Logged as a warning at every start.
    pub insecure_skip_verify: bool,
    /// Reconnect backoff bounds.
    #[serde(with = "duration")]
    pub reconnect_min: Duration,
    #[serde(with = "duration")]
    pub reconnect_max: Duration,
    /// A private file with the key shared with `doorbell serve
    /// --look-key-file`: the server's "Look now" button then reaches this
    /// doorbell.
    pub look_key_file: Option<PathBuf>,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        Self {
            protocol: SignalingProtocol::Rooms,
            url: "http://127.0.0.1:8080".into(),
            viewer_link: String::new(),
            device_id: String::new(),
            heartbeat: Duration::from_secs(30),
            engine_io: EngineIo::Auto,
            ca_file: None,
            pin_sha256: Vec::new(),
            insecure_skip_verify: false,
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            look_key_file: None,
        }
    }
}

impl SignalingConfig {
    /// What the signaling client gets.
    pub fn client_settings(&self) -> ClientSettings {
        ClientSettings {
            url: self.url.clone(),
            engine_io: self.engine_io,
            trust: TrustSettings {
                ca_file: self.ca_file.clone(),
                pin_sha256: self.pin_sha256.clone(),
                insecure_skip_verify: self.insecure_skip_verify,
            },
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max,
        }
    }

    /// The link template in effect.
    pub fn link_template(&self) -> String {
        let base = self.url.trim_end_matches('/');
        let template = match (self.viewer_link.is_empty(), self.protocol) {
            (false, _) => self.viewer_link.clone(),
            (true, SignalingProtocol::Rooms) => format!("{base}/?room={{room}}"),
            (true, SignalingProtocol::DeviceWs) => format!("{base}/watch/{{device_id}}"),
            (true, SignalingProtocol::Sse) => format!("{base}/?session={{room}}"),
        };
        template.replace("{device_id}", &self.device_id)
    }

    /// Our peer id in seed 004's sessions: `device_id`, or `doorbell`.
    pub fn peer_id(&self) -> String {
        if self.device_id.is_empty() {
            "doorbell".into()
        } else {
            self.device_id.clone()
        }
    }

    /// What the protocol asks of a call.
    pub fn protocol_traits(&self) -> ProtocolTraits {
        match self.protocol {
            SignalingProtocol::Rooms => ProtocolTraits::ROOMS,
            SignalingProtocol::DeviceWs => ProtocolTraits::DEVICE_WS,
            SignalingProtocol::Sse => ProtocolTraits::SSE,
        }
    }
}

/// The signaling protocols (`signaling.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignalingProtocol {
    /// The Socket.IO room protocol of the original design (seed 003).
    Rooms,
    /// Seed 002: the doorbell as a device on a persistent WebSocket.
    DeviceWs,
    /// Seed 004: a session per ring, server-sent events, the doorbell offers.
    Sse,
}

/// A device id as seed 002 uses them (`kitchen-cam-001`): printable, no
/// spaces or slashes (it goes into a URL path), at most 128 characters.
pub fn valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallConfig {
    #[serde(with = "duration")]
    pub signaling_timeout: Duration,
    #[serde(with = "duration")]
    pub viewer_join_timeout: Duration,
    #[serde(with = "duration")]
    pub offer_timeout: Duration,
    #[serde(with = "duration")]
    pub ice_gather_timeout: Duration,
    #[serde(with = "duration")]
    pub max_call: Duration,
    #[serde(with = "duration")]
    pub media_timeout: Duration,
    pub press_during_call: PressDuringCall,
    /// Most viewers in one call at once (protocols with sessions per
    /// viewer: `device-ws`, `sse`); they share one capture and encoder.
    pub max_viewers: usize,
}

impl Default for CallConfig {
    fn default() -> Self {
        let t = Timeouts::default();
        Self {
            signaling_timeout: t.signaling,
            viewer_join_timeout: t.viewer_join,
            offer_timeout: t.offer,
            ice_gather_timeout: t.ice_gather,
            max_call: t.max_call,
            media_timeout: t.media,
            press_during_call: PressDuringCall::Ignore,
            max_viewers: 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IceConfig {
    /// STUN and TURN servers for the doorbell's side of the call.
    pub servers: Vec<IceServer>,
    /// Also offer 127.0.0.1 candidates (only useful when the viewer runs on
    /// the same machine, as in the demo).
    pub include_loopback: bool,
    /// A TURN server that takes TURN REST credentials (coturn's
    /// `use-auth-secret`): the doorbell mints a user name and password per
    /// call from the shared secret, so no password that works forever is
    /// stored anywhere.
    #[serde(deserialize_with = "one_or_many")]
    pub turn_urls: Vec<String>,
    /// File holding the shared secret (mode 0600). Also taken from
    /// `$DOORBELL_TURN_SECRET` or the systemd credential `turn-secret`.
    pub turn_secret_file: Option<PathBuf>,
    /// How long a minted credential is valid; at least `call.max_call`,
    /// since the TURN server checks it on every refresh.
    #[serde(with = "duration")]
    pub turn_ttl: Duration,
    /// Use relayed candidates only: media always goes through TURN, and the
    /// viewer never learns the door's addresses.
    pub relay_only: bool,
}

impl Default for IceConfig {
    fn default() -> Self {
        Self {
            servers: IceServer::default_servers(),
            include_loopback: false,
            turn_urls: Vec::new(),
            turn_secret_file: None,
            turn_ttl: Duration::from_secs(3600),
            relay_only: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VideoConfig {
    /// `testsrc`, `v4l2:/dev/videoN`, `libcamera[:N]` or `none`.
    pub source: String,
    /// For `libcamera`: the program giving the frames; `auto` finds
    /// `rpicam-vid`, else `libcamera-vid`.
    pub libcamera_command: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    /// Send an IDR at least this often (besides call start and viewer requests).
    /// `0s`: only on request.
    #[serde(with = "duration")]
    pub keyframe_interval: Duration,
    /// `auto` (the hardware encoder if it opens, else OpenH264), `v4l2m2m`
    /// or `openh264`.
    pub encoder: String,
    /// The hardware encoder's device node.
    pub encoder_device: PathBuf,
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            source: "testsrc".into(),
            libcamera_command: "auto".into(),
            width: 640,
            height: 480,
            fps: 30,
            bitrate_kbps: 1000,
            keyframe_interval: Duration::from_secs(10),
            encoder: "auto".into(),
            encoder_device: DEFAULT_ENCODER_DEVICE.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioConfig {
    /// `tone[:HZ]`, `default`, `device:NAME` or `none`.
    pub microphone: String,
    /// `wav:PATH`, `default`, `device:NAME` or `none`.
    pub speaker: String,
    /// The viewer's voice on the speaker, percent (0..=400; 100 = as sent).
    pub speaker_volume: u32,
    /// Microphone gain in dB (-30..=30), applied before encoding.
    pub microphone_gain_db: f32,
    /// Take the speaker's echo out of the microphone (sound devices only).
    pub echo_cancellation: bool,
    /// `full`, `half` or `auto` (src/media/echo.rs).
    pub duplex: String,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            microphone: "tone".into(),
            speaker: "none".into(),
            speaker_volume: 100,
            microphone_gain_db: 0.0,
            echo_cancellation: true,
            duplex: "auto".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ButtonConfig {
    /// Where presses come from: `stdin` (each line is a press), `gpio:PIN` (a
    /// push button on a BCM GPIO pin). The control socket (`doorbell ring`) is
    /// always a source when it is enabled.
    pub sources: Vec<String>,
    /// GPIO buttons: pressed is low (button to ground, internal pull-up).
    /// `false`: pressed is high (internal pull-down).
    pub active_low: bool,
    /// GPIO buttons: a level counts once it has held this long.
    #[serde(with = "duration")]
    pub debounce: Duration,
    /// GPIO buttons: presses within this time of the last ring do not ring.
    #[serde(with = "duration")]
    pub ring_gap: Duration,
}

impl Default for ButtonConfig {
    fn default() -> Self {
        let d = crate::button::debounce::DebounceSettings::default();
        Self {
            sources: vec!["stdin".into()],
            active_low: d.active_low,
            debounce: d.debounce,
            ring_gap: d.ring_gap,
        }
    }
}

impl ButtonConfig {
    pub fn debounce_settings(&self) -> crate::button::debounce::DebounceSettings {
        crate::button::debounce::DebounceSettings {
            active_low: self.active_low,
            debounce: self.debounce,
            ring_gap: self.ring_gap,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    pub enabled: bool,
    /// Unix socket path. Empty: see [`default_control_socket`].
    pub socket: Option<PathBuf>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: None,
        }
    }
}

impl ControlConfig {
    pub fn socket_path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(default_control_socket)
    }
}

/// `$RUNTIME_DIRECTORY/control.sock` under systemd (`RuntimeDirectory=`), else
/// `$XDG_RUNTIME_DIR/doorbell.sock`, else `/tmp/doorbell-<uid>.sock`.
pub fn default_control_socket() -> PathBuf {
    if let Some(dir) = crate::systemd::directory("RUNTIME_DIRECTORY") {
        return dir.join("control.sock");
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join("doorbell.sock");
    }
    // SAFETY: getuid cannot fail and has no preconditions.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/doorbell-{uid}.sock"))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Print the link on standard output (off with `--events json`, whose
    /// `notified` event carries it).
    pub stdout: bool,
    pub telegram: TelegramConfig,
    /// `[[notify.webhook]]`: any number of URLs that get a JSON POST per ring.
    pub webhook: Vec<WebhookConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            stdout: true,
            telegram: TelegramConfig::default(),
            webhook: Vec::new(),
        }
    }
}

/// Longest `retry_for`: the snapshot (3 s), the retries and one last attempt
/// (17 s at most) must fit in the 60 s the call loop gives notifiers.
const MAX_NOTIFY_RETRY: Duration = Duration::from_secs(35);

/// `[notify.telegram]`. The bot token is deliberately not a setting: it comes
/// from `DOORBELL_TELEGRAM_TOKEN`, `token_file` or a systemd credential, and
/// `token = ...` here is refused (see [`InlineToken`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelegramConfig {
    pub enabled: bool,
    /// Chats that get ring messages and may use the bot's commands.
    pub chat_ids: Vec<i64>,
    /// File holding the bot token; must not be readable by group or others.
    pub token_file: Option<PathBuf>,
    /// The Bot API server (a self-hosted one, or a test server).
    pub api_url: String,
    /// Send a photo of the visitor with the ring (else text only).
    pub snapshot: bool,
    /// Camera frames dropped before the photo, while exposure settles.
    pub settle_frames: u32,
    /// How long a failed message is retried.
    #[serde(with = "duration")]
    pub retry_for: Duration,
    /// Answer /status, /snapshot, /ring and /history from the allowed chats.
    pub commands: bool,
    /// Not a setting: catches a `token = ...` line so that validation refuses
    /// it by name. Left to `deny_unknown_fields`, the parse error would quote
    /// the line, token and all, into the log.
    #[serde(default, skip_serializing)]
    pub token: Option<InlineToken>,
}

/// The value of a `token` key in the config, thrown away unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InlineToken;

impl<'de> Deserialize<'de> for InlineToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| InlineToken)
    }
}

impl Default for TelegramConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            chat_ids: Vec::new(),
            token_file: None,
            api_url: "https://api.telegram.org".into(),
            snapshot: true,
            settle_frames: 5,
            retry_for: Duration::from_secs(30),
            commands: true,
            token: None,
        }
    }
}

impl NotifyConfig {
    /// The `[notify]` part of [`Config::validate`]: (key, message) of the
    /// first problem.
    fn check(&self) -> Result<(), (&'static str, String)> {
        let http = |url: &str| url.starts_with("http://") || url.starts_with("https://");
        let t = &self.telegram;
        if t.token.is_some() {
            return Err((
                "notify.telegram.token",
                "the bot token does not belong in the config file (such files get read by \
                 others and pasted into bug reports): put it in a file named by \
                 notify.telegram.token_file (chmod 600), in $DOORBELL_TELEGRAM_TOKEN or in a \
                 systemd credential (docs/telegram.md), and as it may have been seen, get a new \
                 one from BotFather (/revoke)"
                    .into(),
            ));
        }
        if t.enabled && t.chat_ids.is_empty() {
            return Err((
                "notify.telegram.chat_ids",
                "Telegram is enabled but lists no chat: add the owner's chat id \
                 (docs/telegram.md says how to find it)"
                    .into(),
            ));
        }
        if t.chat_ids.contains(&0) {
            return Err(("notify.telegram.chat_ids", "0 is not a chat id".into()));
        }
        if !http(&t.api_url) {
            return Err((
                "notify.telegram.api_url",
                format!("{:?} must start with http:// or https://", t.api_url),
            ));
        }
        if t.settle_frames > 30 {
            return Err((
                "notify.telegram.settle_frames",
                format!(
                    "{} is more than 30 (a second at 30 fps): the picture would come late",
                    t.settle_frames
                ),
            ));
        }
        let too_long = |d: Duration| d > MAX_NOTIFY_RETRY;
        if too_long(t.retry_for) {
            return Err((
                "notify.telegram.retry_for",
                "must be at most 35s (the call loop gives notifiers 60 s)".into(),
            ));
        }
        for w in &self.webhook {
            if !http(&w.url) {
                return Err((
                    "notify.webhook.url",
                    format!("{:?} must start with http:// or https://", w.url),
                ));
            }
            if w.timeout.is_zero() || w.timeout > Duration::from_secs(15) {
                return Err((
                    "notify.webhook.timeout",
                    "must be above zero and at most 15s".into(),
                ));
            }
            if too_long(w.retry_for) {
                return Err((
                    "notify.webhook.retry_for",
                    "must be at most 35s (the call loop gives notifiers 60 s)".into(),
                ));
            }
            let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if let Some(name) = w
                .headers
                .keys()
                .find(|n| n.is_empty() || !n.chars().all(token_char))
            {
                return Err((
                    "notify.webhook.headers",
                    format!("{name:?} is not an HTTP header name"),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter such as
    /// `info,doorbell=debug`. `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is for messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// The TURN REST keys: which key is wrong and why.
    fn check_turn(&self) -> Result<(), (&'static str, String)> {
        let ice = &self.ice;
        for url in &ice.turn_urls {
            if !(url.starts_with("turn:") || url.starts_with("turns:")) {
                return Err((
                    "ice.turn_urls",
                    format!("{url:?} must start with turn: or turns:"),
                ));
            }
        }
        if !ice.turn_urls.is_empty() && ice.turn_ttl < self.call.max_call {
            return Err((
                "ice.turn_ttl",
                format!(
                    "{}s is shorter than call.max_call ({}s): the TURN server checks the \
                     credential on every refresh, so a long call would lose its relay",
                    ice.turn_ttl.as_secs(),
                    self.call.max_call.as_secs()
                ),
            ));
        }
        let has_turn = !ice.turn_urls.is_empty()
            || ice
                .servers
                .iter()
                .any(|s| s.urls.iter().any(|u| u.starts_with("turn")));
        // Seed 002 and 004 servers hand each session its TURN server.
        let session_turn = self.signaling.protocol != SignalingProtocol::Rooms;
        if ice.relay_only && !has_turn && !session_turn {
            return Err((
                "ice.relay_only",
                "needs a TURN server (ice.turn_urls, or a turn: URL in ice.servers)".into(),
            ));
        }
        Ok(())
    }

    /// Checks values that parse but make no sense. Opens nothing.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        let s = &self.signaling;
        if !(s.url.starts_with("http://") || s.url.starts_with("https://")) {
            return Err(invalid(
                "signaling.url",
                format!("{:?} must start with http:// or https://", s.url),
            ));
        }
        match s.protocol {
            SignalingProtocol::Rooms => {
                if !s.viewer_link.is_empty() && !s.viewer_link.contains("{room}") {
                    return Err(invalid(
                        "signaling.viewer_link",
                        "must contain {room} where the room name goes".into(),
                    ));
                }
            }
            SignalingProtocol::DeviceWs => {
                if !valid_device_id(&s.device_id) {
                    return Err(invalid(
                        "signaling.device_id",
                        format!(
                            "{:?} is not a device id: signaling.protocol = \"device-ws\" needs one \
                             (1 to 128 of A-Z a-z 0-9 - _ . :)",
                            s.device_id
                        ),
                    ));
                }
            }
            SignalingProtocol::Sse => {
                let peer = s.peer_id();
                let ok = peer.len() <= 128
                    && peer
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !ok {
                    return Err(invalid(
                        "signaling.device_id",
                        format!(
                            "{peer:?} cannot be a peer id: with signaling.protocol = \"sse\" it is \
                             1 to 128 of A-Z a-z 0-9 - _"
                        ),
                    ));
                }
                if !s.viewer_link.is_empty() && !s.viewer_link.contains("{room}") {
                    return Err(invalid(
                        "signaling.viewer_link",
                        "must contain {room} where the session id goes".into(),
                    ));
                }
            }
        }
        if s.heartbeat < Duration::from_secs(1) || s.heartbeat > Duration::from_secs(300) {
            return Err(invalid(
                "signaling.heartbeat",
                "must be between 1 s and 5 min".into(),
            ));
        }
        for pin in &s.pin_sha256 {
            Fingerprint::parse(pin).map_err(|e| invalid("signaling.pin_sha256", e))?;
        }
        if !s.pin_sha256.is_empty() {
            let clash = if s.insecure_skip_verify {
                Some("signaling.insecure_skip_verify")
            } else if s.ca_file.is_some() {
                Some("signaling.ca_file")
            } else {
                None
            };
            if let Some(other) = clash {
                return Err(invalid(
                    "signaling.pin_sha256",
                    format!("cannot be combined with {other}: a pin already says exactly which certificate to trust"),
                ));
            }
            if !s.url.starts_with("https://") {
                return Err(invalid(
                    "signaling.pin_sha256",
                    "is only used with an https:// signaling.url (this one is not encrypted at all)".into(),
                ));
            }
        }
        if s.reconnect_min.is_zero() || s.reconnect_min > s.reconnect_max {
            return Err(invalid(
                "signaling.reconnect_min",
                "must be above zero and at most signaling.reconnect_max".into(),
            ));
        }
        let vm = &self.voicemail;
        if vm.seconds < Duration::from_secs(3) || vm.seconds > Duration::from_secs(120) {
            return Err(invalid(
                "voicemail.seconds",
                "must be between 3s and 120s (the clip is kept in memory until it is written)"
                    .into(),
            ));
        }
        let r = &self.replies;
        if r.quick.len() > crate::door_voice::MAX_QUICK {
            return Err(invalid(
                "replies.quick",
                format!(
                    "at most {} buttons fit under a ring message",
                    crate::door_voice::MAX_QUICK
                ),
            ));
        }
        if let Some(q) = r
            .quick
            .iter()
            .find(|q| q.text.trim().is_empty() || q.text.chars().count() > 40)
        {
            return Err(invalid(
                "replies.quick",
                format!("{:?}: a button's text must be 1 to 40 characters", q.text),
            ));
        }
        if r.voice_max < Duration::from_secs(1) || r.voice_max > Duration::from_secs(300) {
            return Err(invalid(
                "replies.voice_max",
                "must be between 1s and 300s".into(),
            ));
        }
        let h = &self.history;
        if h.keep_days == 0 {
            return Err(invalid(
                "history.keep_days",
                "must be at least 1 (to keep no history, set history.max_mb = 0 and \
                 history.snapshots = false)"
                    .into(),
            ));
        }
        if h.dir.as_ref().is_some_and(|d| !d.is_absolute()) {
            return Err(invalid(
                "history.dir",
                "must be an absolute path (the service does not start in a known directory)".into(),
            ));
        }
        let c = &self.call;
        for (key, d) in [
            ("call.signaling_timeout", c.signaling_timeout),
            ("call.viewer_join_timeout", c.viewer_join_timeout),
            ("call.offer_timeout", c.offer_timeout),
            ("call.ice_gather_timeout", c.ice_gather_timeout),
            ("call.max_call", c.max_call),
            ("call.media_timeout", c.media_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be above zero".into()));
            }
        }
        if !(1..=crate::media::audio::MAX_VOICES).contains(&c.max_viewers) {
            return Err(invalid(
                "call.max_viewers",
                format!("must be 1 to {}", crate::media::audio::MAX_VOICES),
            ));
        }
        for server in &self.ice.servers {
            for url in &server.urls {
                let scheme = url.split(':').next().unwrap_or_default();
                if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") {
                    return Err(invalid(
                        "ice.servers.urls",
                        format!("{url:?} must start with stun:, stuns:, turn: or turns:"),
                    ));
                }
                if scheme.starts_with("turn")
                    && (server.username.is_empty() || server.credential.is_empty())
                {
                    return Err(invalid(
                        "ice.servers.username",
                        format!("TURN server {url:?} needs a username and a credential"),
                    ));
                }
            }
        }
        self.check_turn().map_err(|(key, m)| invalid(key, m))?;
        let v = &self.video;
        let spec = VideoSpec::parse(&v.source).map_err(|e| invalid("video.source", e))?;
        if matches!(spec, VideoSpec::Libcamera { .. }) && !v.width.is_multiple_of(64) {
            return Err(invalid(
                "video.width",
                format!(
                    "{} with video.source = \"libcamera\": must be a multiple of 64 (320, 640, \
                     1280, 1920), so that the camera's frames come without row padding",
                    v.width
                ),
            ));
        }
        if !(16..=1920).contains(&v.width)
            || !(16..=1088).contains(&v.height)
            || v.width % 2 == 1
            || v.height % 2 == 1
        {
            return Err(invalid(
                "video.width",
                format!(
                    "{}x{} is not supported: width 16..1920 and height 16..1088, both even",
                    v.width, v.height
                ),
            ));
        }
        if !(1..=60).contains(&v.fps) {
            return Err(invalid(
                "video.fps",
                format!("{} is not within 1..60", v.fps),
            ));
        }
        if !(50..=20_000).contains(&v.bitrate_kbps) {
            return Err(invalid(
                "video.bitrate_kbps",
                format!("{} is not within 50..20000", v.bitrate_kbps),
            ));
        }
        EncoderSpec::parse(&v.encoder, &v.encoder_device).map_err(|(key, e)| invalid(key, e))?;
        SourceSpec::parse(&self.audio.microphone).map_err(|e| invalid("audio.microphone", e))?;
        SinkSpec::parse(&self.audio.speaker).map_err(|e| invalid("audio.speaker", e))?;
        let a = &self.audio;
        if a.speaker_volume > 400 {
            return Err(invalid(
                "audio.speaker_volume",
                format!("{} is not within 0..=400 (percent)", a.speaker_volume),
            ));
        }
        if !(-30.0..=30.0).contains(&a.microphone_gain_db) {
            return Err(invalid(
                "audio.microphone_gain_db",
                format!("{} is not within -30..=30 (dB)", a.microphone_gain_db),
            ));
        }
        Duplex::parse(&a.duplex).map_err(|e| invalid("audio.duplex", e))?;
        let mut pins = Vec::new();
        for source in &self.button.sources {
            match ButtonSpec::parse(source).map_err(|e| invalid("button.sources", e))? {
                ButtonSpec::Gpio(pin) => pins.push(pin),
                ButtonSpec::Stdin => {}
            }
        }
        if self.button.debounce > Duration::from_secs(1) {
            return Err(invalid(
                "button.debounce",
                "more than 1 s would swallow real presses (50ms is typical)".into(),
            ));
        }
        let c = &self.chime;
        ChimeSound::parse(&c.sound).map_err(|e| invalid("chime.sound", e))?;
        if c.volume > 200 {
            return Err(invalid(
                "chime.volume",
                format!("{} is not within 0..=200 (percent)", c.volume),
            ));
        }
        if let Some(pin) = c.relay_pin().map_err(|e| invalid("chime.relay", e))? {
            if pins.contains(&pin) {
                return Err(invalid(
                    "chime.relay",
                    format!("GPIO{pin} is the button's pin too"),
                ));
            }
        }
        self.notify
            .check()
            .map_err(|(key, message)| invalid(key, message))?;
        if !valid_log_filter(&self.log.level) {
            return Err(invalid(
                "log.level",
                format!("{:?} is not a level or tracing filter", self.log.level),
            ));
        }
        Ok(())
    }

    /// The media's part of the configuration. Validated configs only (the
    /// specs parse).
    pub fn media_settings(&self) -> Result<MediaSettings, String> {
        let v = &self.video;
        Ok(MediaSettings {
            video: VideoSpec::parse(&v.source)?,
            microphone: SourceSpec::parse(&self.audio.microphone)?,
            speaker: SinkSpec::parse(&self.audio.speaker)?,
            speaker_volume: self.audio.speaker_volume,
            microphone_gain_db: self.audio.microphone_gain_db,
            echo: EchoSettings {
                cancel: self.audio.echo_cancellation,
                duplex: Duplex::parse(&self.audio.duplex)?,
            },
            encoder: EncoderSettings {
                width: v.width as usize,
                height: v.height as usize,
                fps: v.fps,
                bitrate_kbps: v.bitrate_kbps,
                keyframe_interval: v.keyframe_interval,
                encoder: EncoderSpec::parse(&v.encoder, &v.encoder_device).map_err(|(_, e)| e)?,
            },
            libcamera_command: v.libcamera_command.clone(),
        })
    }

    /// The call machine's part of the configuration.
    pub fn machine(&self) -> MachineConfig {
        let c = &self.call;
        MachineConfig {
            timeouts: Timeouts {
                signaling: c.signaling_timeout,
                viewer_join: c.viewer_join_timeout,
                offer: c.offer_timeout,
                ice_gather: c.ice_gather_timeout,
                max_call: c.max_call,
                max_live: self.live.max_duration,
                media: c.media_timeout,
                teardown: Timeouts::default().teardown,
            },
            press_during_call: c.press_during_call,
            link_template: self.signaling.link_template(),
            protocol: self.signaling.protocol_traits(),
            max_viewers: c.max_viewers,
        }
    }
}

/// A string or a list of strings.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::One(s) => vec![s],
        Raw::Many(v) => v,
    })
}

/// A level, or comma-separated `level` / `target=level` directives.
fn valid_log_filter(filter: &str) -> bool {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    !filter.trim().is_empty()
        && filter.split(',').all(|d| {
            let level =
                d.rsplit_once('=').map_or(
                    d,
                    |(target, level)| {
                        if target.trim().is_empty() {
                            ""
                        } else {
                            level
                        }
                    },
                );
            LEVELS.contains(&level.trim().to_ascii_lowercase().as_str())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = parse("[call]\nviewer_join_timout = \"30s\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("viewer_join_timout"), "{e}");
        let e = parse("[camera]\nx = 1\n").unwrap_err().to_string();
        assert!(e.contains("camera"), "{e}");
    }

    #[test]
    fn durations_read_like_people_write_them() {
        let c = parse("[call]\nviewer_join_timeout = \"90s\"\nmax_call = \"5m\"\noffer_timeout = 7\nice_gather_timeout = \"1500ms\"\n").unwrap();
        assert_eq!(c.call.viewer_join_timeout, Duration::from_secs(90));
        assert_eq!(c.call.max_call, Duration::from_secs(300));
        assert_eq!(c.call.offer_timeout, Duration::from_secs(7));
        assert_eq!(c.call.ice_gather_timeout, Duration::from_millis(1500));
        let e = parse("[call]\nmax_call = \"5 fortnights\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown unit"), "{e}");
        for d in ["250ms", "3s", "10m", "2h", "0s"] {
            assert_eq!(duration::format(duration::parse(d).unwrap()), d);
        }
    }

    #[test]
    fn turn_rest_keys_parse() {
        let c = parse(
            "[ice]\nturn_urls = \"turn:127.0.0.1:3478\"\nturn_secret_file = \"/etc/doorbell/turn-secret\"\n\
             turn_ttl = \"2h\"\nrelay_only = true\n",
        )
        .unwrap();
        assert_eq!(c.ice.turn_urls, ["turn:127.0.0.1:3478"]);
        assert_eq!(c.ice.turn_ttl, Duration::from_secs(7200));
        assert!(c.ice.relay_only);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[signaling]\nurl = \"ws://x\"", "signaling.url"),
            (
                "[signaling]\nviewer_link = \"http://x/\"",
                "signaling.viewer_link",
            ),
            ("[call]\nmedia_timeout = \"0s\"", "call.media_timeout"),
            ("[call]\nmax_viewers = 0", "call.max_viewers"),
            ("[[ice.servers]]\nurls = [\"http://x\"]", "ice.servers.urls"),
            (
                "[[ice.servers]]\nurls = [\"turn:x:3478\"]",
                "ice.servers.username",
            ),
            ("[ice]\nturn_urls = \"stun:x\"", "ice.turn_urls"),
            (
                "[ice]\nturn_urls = \"turn:x\"\nturn_ttl = \"5m\"",
                "ice.turn_ttl",
            ),
            ("[ice]\nrelay_only = true", "ice.relay_only"),
            ("[video]\nwidth = 641", "video.width"),
            ("[video]\nfps = 0", "video.fps"),
            ("[video]\nsource = \"webcam\"", "video.source"),
            ("[video]\nencoder = \"nvenc\"", "video.encoder"),
            (
                "[video]\nencoder_device = \"video11\"",
                "video.encoder_device",
            ),
            ("[audio]\nmicrophone = \"tone:abc\"", "audio.microphone"),
            ("[audio]\nspeaker = \"wav:\"", "audio.speaker"),
            ("[button]\nsources = [\"gpoi:17\"]", "button.sources"),
            ("[log]\nlevel = \"loud!\"", "log.level"),
            ("[signaling]\nengine_io = \"5\"", "engine_io"),
            (
                "[signaling]\nurl = \"https://x\"\npin_sha256 = \"12:34\"",
                "signaling.pin_sha256",
            ),
            (
                "[signaling]\nurl = \"http://x\"\npin_sha256 = \"00\"",
                "signaling.pin_sha256",
            ),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
            assert!(e.contains("docs/config.md"), "{e}");
        }
    }

    #[test]
    fn log_filters() {
        for ok in [
            "info",
            "DEBUG",
            "info,doorbell=debug",
            "warn,webrtc_ice=trace",
        ] {
            assert!(valid_log_filter(ok), "{ok}");
        }
        for bad in ["", "loud!", "info,=debug", "doorbell"] {
            assert!(!valid_log_filter(bad), "{bad}");
        }
    }

    #[test]
    fn engine_io_and_pins_read_like_people_write_them() {
        let pin = "AB:".repeat(31) + "AB";
        let c = parse(&format!(
            "[signaling]\nurl = \"https://10.0.0.2:8443\"\nengine_io = \"3\"\npin_sha256 = \"{pin}\"\n"
        ))
        .unwrap();
        assert_eq!(c.signaling.engine_io, EngineIo::V3);
        assert_eq!(c.signaling.pin_sha256, std::slice::from_ref(&pin));
        let c = parse(&format!(
            "[signaling]\nurl = \"https://x\"\nengine_io = 4\npin_sha256 = [\"{pin}\", \"{pin}\"]\n"
        ))
        .unwrap();
        assert_eq!(c.signaling.engine_io, EngineIo::V4);
        assert_eq!(c.signaling.pin_sha256.len(), 2);
        let e = parse(&format!(
            "[signaling]\nurl = \"https://x\"\ninsecure_skip_verify = true\npin_sha256 = \"{pin}\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("cannot be combined"), "{e}");
        assert_eq!(parse("").unwrap().signaling.engine_io, EngineIo::Auto);
    }

    #[test]
    fn the_link_defaults_to_the_server_page() {
        let c = parse("[signaling]\nurl = \"https://bell.example.org/\"").unwrap();
        assert_eq!(
            c.signaling.link_template(),
            "https://bell.example.org/?room={room}"
        );
        let c = parse("[signaling]\nviewer_link = \"https://x/v.html#{room}\"").unwrap();
        assert_eq!(c.signaling.link_template(), "https://x/v.html#{room}");
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/assets/doorbell.example.toml"
        ));
        let c = Config::load(path).unwrap();
        assert_eq!(c.signaling.url, "https://bell.example.org");
    }

    /// docs/config.md must name every key (as `section.key`).
    #[test]
    fn every_key_is_documented() {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/config.md"))
            .expect("docs/config.md exists");
        let mut config = Config::default();
        config.signaling.ca_file = Some("x".into());
        config.control.socket = Some("x".into());
        config.notify.telegram.token_file = Some("x".into());
        config.ice.turn_secret_file = Some("x".into());
        config.notify.webhook = vec![WebhookConfig::default()];
        let value = toml::Value::try_from(&config).unwrap();
        let mut missing = Vec::new();
        let toml::Value::Table(sections) = value else {
            panic!()
        };
        for (section, v) in sections {
            let toml::Value::Table(keys) = v else {
                continue;
            };
            for (key, v) in keys {
                let name = format!("{section}.{key}");
                if !docs.contains(&format!("`{name}`")) {
                    missing.push(name.clone());
                }
                if let toml::Value::Table(t) = &v {
                    for sub in t.keys() {
                        let name = format!("{name}.{sub}");
                        if !docs.contains(&format!("`{name}`")) {
                            missing.push(name);
                        }
                    }
                }
                if let toml::Value::Array(items) = v {
                    if let Some(toml::Value::Table(t)) = items.first() {
                        for sub in t.keys() {
                            let name = format!("{name}.{sub}");
                            if !docs.contains(&format!("`{name}`")) {
                                missing.push(name);
                            }
                        }
                    }
                }
            }
        }
        assert!(missing.is_empty(), "undocumented keys: {missing:?}");
    }

    #[test]
    fn notifiers_are_off_by_default_and_checked_by_key() {
        let c = parse("").unwrap();
        assert!(!c.notify.telegram.enabled);
        assert!(c.notify.webhook.is_empty());
        let c = parse(
            "[notify.telegram]\nenabled = true\nchat_ids = [123, -100456]\n\
             token_file = \"/etc/doorbell/telegram-token\"\nretry_for = \"20s\"\n\
             [[notify.webhook]]\nurl = \"https://ha.example.org/api/webhook/x\"\n\
             headers = { Authorization = \"Bearer y\" }\n",
        )
        .unwrap();
        assert_eq!(c.notify.telegram.chat_ids, [123, -100456]);
        assert_eq!(c.notify.telegram.retry_for, Duration::from_secs(20));
        assert_eq!(c.notify.webhook[0].headers["Authorization"], "Bearer y");
        assert_eq!(c.notify.webhook[0].timeout, Duration::from_secs(5));

        let cases = [
            (
                "[notify.telegram]\nenabled = true",
                "notify.telegram.chat_ids",
            ),
            (
                "[notify.telegram]\nchat_ids = [0]",
                "notify.telegram.chat_ids",
            ),
            (
                "[notify.telegram]\napi_url = \"api.telegram.org\"",
                "notify.telegram.api_url",
            ),
            (
                "[notify.telegram]\nsettle_frames = 100",
                "notify.telegram.settle_frames",
            ),
            (
                "[notify.telegram]\nretry_for = \"5m\"",
                "notify.telegram.retry_for",
            ),
            (
                "[[notify.webhook]]\nurl = \"ha.local\"",
                "notify.webhook.url",
            ),
            (
                "[[notify.webhook]]\nurl = \"http://x\"\ntimeout = \"0s\"",
                "notify.webhook.timeout",
            ),
            (
                "[[notify.webhook]]\nurl = \"http://x\"\nretry_for = \"1h\"",
                "notify.webhook.retry_for",
            ),
            (
                "[[notify.webhook]]\nurl = \"http://x\"\nheaders = { \"A B\" = \"c\" }",
                "notify.webhook.headers",
            ),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }

    /// The token has no key: someone writing it into the (often world-readable)
    /// config file gets an error instead of a leak.
    #[test]
    fn a_telegram_token_in_the_config_is_refused() {
        let e = parse("[notify.telegram]\ntoken = \"123456:CANARY-SECRET-TOKEN-xyz\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("notify.telegram.token"), "{e}");
        assert!(e.contains("token_file"), "says where it goes: {e}");
        assert!(!e.contains("CANARY"), "and does not quote it: {e}");
    }
}
