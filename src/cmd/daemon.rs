//! Assembles a running doorbell from a config: signaling connection, control
//! socket, buttons, notifiers, media and the call loop. Shared by `doorbell
//! run`, `doorbell demo` and the integration tests.

use anyhow::Context;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::button;
use crate::call::command::Command;
use crate::call::driver::Engine;
use crate::call::event::CallEvent;
use crate::chime;
use crate::config::{Config, SignalingProtocol};
use crate::door_voice::DoorVoice;
use crate::history::History;
use crate::media::lease::SpeakerLease;
use crate::media::opener::ConfiguredMedia;
use crate::media::ring_picture::RingPictures;
use crate::media::tap::MediaTap;
use crate::media::MediaOpener;
use crate::notify::{self, Notifier, NotifyError};
use crate::peer::PeerSettings;
use crate::signaling::client::SocketIoSignaling;
use crate::signaling::device_ws::{DeviceWsSettings, DeviceWsSignaling};
use crate::signaling::sse::{SseSettings, SseSignaling};
use crate::signaling::Signaling;
use crate::spec::gpio::ButtonSpec;
use crate::spec::media::SinkSpec;

#[derive(Default)]
pub struct Options {
    /// Read presses from standard input when the config lists `stdin`.
    pub stdin_button: bool,
    /// Print links on standard output when the config enables it.
    pub stdout_notifier: bool,
    /// Media instead of the configured devices (tests).
    pub media: Option<Arc<dyn MediaOpener>>,
    /// Where a copy of every call's encoded media goes (a recorder).
    pub tap: Option<Arc<dyn MediaTap>>,
}

/// A running doorbell.
pub struct Doorbell {
    pub commands: mpsc::Sender<Command>,
    pub events: broadcast::Sender<CallEvent>,
    /// Every ring and live view, and how each went.
    pub history: History,
    /// Ends when the call loop has finished after `cancel`.
    pub task: JoinHandle<()>,
    /// GPIO buttons: their pins and interrupt threads live as long as this.
    _buttons: Vec<crate::gpio::Button>,
}

pub async fn start(
    config: &Config,
    options: Options,
    cancel: CancellationToken,
) -> anyhow::Result<Doorbell> {
    register_secrets(config);
    // The door's speaker, shared by the chime and the calls.
    let speaker = SpeakerLease::new();
    let media: Arc<dyn MediaOpener> = match options.media {
        Some(m) => m,
        None => Arc::new(ConfiguredMedia::new(
            config.media_settings().map_err(anyhow::Error::msg)?,
            speaker.clone(),
        )),
    };
    let look_key = look_key(config.signaling.look_key_file.as_deref())?.map(|(key, from)| {
        tracing::info!(
            "look key from {from}: the server's \"Look now\" button can reach this doorbell"
        );
        key
    });
    let (signaling_tx, signaling_events) = mpsc::channel(256);
    // Not a child of `cancel`: see the call loop's task below. Until then a
    // failed start closes it.
    let signaling_cancel = CancellationToken::new();
    let close_signaling_on_error = signaling_cancel.clone().drop_guard();
    let signaling: Arc<dyn Signaling> = match config.signaling.protocol {
        SignalingProtocol::Rooms => SocketIoSignaling::start(
            config.signaling.client_settings(),
            signaling_tx,
            signaling_cancel.clone(),
        )
        .context("signaling")?,
        SignalingProtocol::DeviceWs => DeviceWsSignaling::start(
            DeviceWsSettings {
                client: config.signaling.client_settings(),
                device_id: config.signaling.device_id.clone(),
                heartbeat: config.signaling.heartbeat,
            },
            signaling_tx,
            signaling_cancel.clone(),
        )
        .context("signaling")?,
        SignalingProtocol::Sse => SseSignaling::start(
            SseSettings {
                client: config.signaling.client_settings(),
                peer_id: config.signaling.peer_id(),
                heartbeat: config.signaling.heartbeat,
            },
            signaling_tx,
            signaling_cancel.clone(),
        )
        .context("signaling")?,
    };
    let (commands, command_rx) = mpsc::channel(32);
    if config.control.enabled {
        let path = config.control.socket_path();
        let listener = button::control::bind(&path).await?;
        tracing::info!(socket = %path.display(), "control socket ready (`doorbell ring` presses the button)");
        tokio::spawn(button::control::serve(
            listener,
            path,
            commands.clone(),
            cancel.child_token(),
        ));
    }
    let mut gpio_buttons = Vec::new();
    for source in &config.button.sources {
        match ButtonSpec::parse(source).map_err(anyhow::Error::msg)? {
            ButtonSpec::Stdin => {
                if options.stdin_button {
                    tokio::spawn(button::stdin::run(commands.clone()));
                }
            }
            ButtonSpec::Gpio(pin) => {
                // A button that cannot be opened is a start-up error with the
                // fix in it: an appliance without its button is not running.
                let b =
                    button::start_gpio(pin, config.button.debounce_settings(), commands.clone())?;
                gpio_buttons.push(b);
            }
        }
    }
    let (events, _) = broadcast::channel(256);
    // One picture per ring, for the owner's message and the history.
    let pictures = RingPictures::new(media.clone(), config.notify.telegram.settle_frames as usize);
    let (dir, from) = crate::history::resolve_dir(config.history.dir.as_deref());
    tracing::info!(dir = %dir.display(), "history kept in {} (from {from})", dir.display());
    let opened = History::open(config.history.settings());
    let history = opened.history;
    history.follow(
        events.subscribe(),
        Some(pictures.clone()),
        cancel.child_token(),
    );
    let mut taps: Vec<Arc<dyn MediaTap>> = options.tap.into_iter().collect();
    if config.record.calls {
        let v = &config.video;
        taps.push(crate::record::CallRecorder::start(
            history.clone(),
            &events,
            crate::record::RecordVideo {
                width: v.width,
                height: v.height,
                fps: f64::from(v.fps),
            },
            cancel.child_token(),
        ));
        tracing::info!("calls are recorded into the history (record.calls)");
    }
    let tap: Option<Arc<dyn MediaTap>> = match taps.len() {
        0 => None,
        1 => taps.pop(),
        _ => Some(Arc::new(crate::media::tap::Taps(taps))),
    };
    if config.voicemail.enabled {
        match config.voicemail.settings() {
            Ok(settings) => {
                crate::voicemail::start(
                    settings,
                    media.clone(),
                    pictures.clone(),
                    history.clone(),
                    speaker.clone(),
                    &events,
                    cancel.child_token(),
                );
                tracing::info!(
                    "voicemail: a visitor nobody answers may leave a {} s message",
                    config.voicemail.seconds.as_secs()
                );
            }
            Err(e) => tracing::error!("voicemail: {e}; the doorbell runs without it"),
        }
    }
    let voice = door_voice(config, &media, &speaker, &events, &cancel);
    let notifiers = notifiers(
        config,
        options.stdout_notifier,
        OwnerParts {
            media: media.clone(),
            pictures,
            commands: commands.clone(),
            history: history.clone(),
            voice,
        },
        cancel.child_token(),
    )?;
    if let Some(text) = opened.notice {
        // Told once: the damaged database is out of the way from now on.
        for n in notifiers.clone() {
            let text = text.clone();
            tokio::spawn(async move {
                if let Err(e) = n.notice(text).await {
                    tracing::warn!("{e}");
                }
            });
        }
    }
    let engine = Engine {
        machine: config.machine(),
        signaling,
        signaling_events,
        media,
        peer: PeerSettings {
            ice_servers: config.ice.servers.clone(),
            include_loopback: config.ice.include_loopback,
            turn: turn_rest(config)?,
            relay_only: config.ice.relay_only,
        },
        notifiers,
        commands: command_rx,
        events: events.clone(),
        tap,
        look_key,
    };
    // The chime is a courtesy to the visitor: without it the bell still rings
    // the owner, so a missing sound file or relay is logged, not fatal.
    let chime_speaker = SinkSpec::parse(&config.audio.speaker)
        .ok()
        .and_then(|spec| chime::speaker_for(&spec));
    if let Err(e) = chime::start(
        &config.chime,
        chime_speaker,
        speaker,
        &events,
        cancel.child_token(),
    ) {
        tracing::error!("chime: {e}; the doorbell runs without it (`doorbell check` explains)");
    }
    // The connection outlives the call loop, so a `bye` sent while shutting
    // down still reaches the viewer; it closes when the loop is done.
    close_signaling_on_error.disarm();
    let task = tokio::spawn(async move {
        engine.run(cancel).await;
        signaling_cancel.cancel();
    });
    Ok(Doorbell {
        commands,
        events,
        history,
        task,
        _buttons: gpio_buttons,
    })
}

/// Quick replies and voice messages at the door (`[replies]`), when the
/// owner can send them (the bot takes commands) and the door can play them.
fn door_voice(
    config: &Config,
    media: &Arc<dyn MediaOpener>,
    speaker: &SpeakerLease,
    events: &broadcast::Sender<CallEvent>,
    cancel: &CancellationToken,
) -> Option<DoorVoice> {
    let t = &config.notify.telegram;
    if !config.replies.enabled || !t.enabled {
        return None;
    }
    if !t.commands {
        tracing::info!("replies: off, as the bot takes no commands (notify.telegram.commands)");
        return None;
    }
    if matches!(SinkSpec::parse(&config.audio.speaker), Ok(SinkSpec::None)) {
        tracing::info!("replies: off, as the door has no speaker (audio.speaker)");
        return None;
    }
    match config.replies.settings() {
        Ok(settings) => {
            tracing::info!(
                "replies: {} quick-reply button(s) under each ring message; voice messages \
                 up to {} s are played at the door while it rings",
                settings.quick.len(),
                settings.voice_max.as_secs()
            );
            Some(DoorVoice::start(
                settings,
                media.clone(),
                speaker.clone(),
                events,
                cancel.child_token(),
            ))
        }
        Err(e) => {
            tracing::error!("replies: {e}; the doorbell runs without them");
            None
        }
    }
}

/// The key shared with `doorbell serve` for its "Look now" button, from
/// `$DOORBELL_LOOK_KEY`, `signaling.look_key_file` (mode 0600) or the systemd
/// credential `look-key`; a secret for the log from now on. With where it
/// came from, for the log.
pub fn look_key(file: Option<&std::path::Path>) -> anyhow::Result<Option<(String, String)>> {
    let Some((key, from)) = crate::secret::load("DOORBELL_LOOK_KEY", file, "look-key")
        .map_err(|e| anyhow::anyhow!("signaling.look_key_file: {e}"))?
    else {
        return Ok(None);
    };
    let key = key.expose().to_string();
    crate::redact::add(&key);
    if key.len() < 16 || key.len() > 256 || key.chars().any(char::is_control) {
        anyhow::bail!(
            "the look key from {from} must be 16 to 256 characters on one line \
             (make one: head -c 24 /dev/urandom | base64)"
        );
    }
    Ok(Some((key, from)))
}

/// What the owner's notifiers and bot work with.
struct OwnerParts {
    media: Arc<dyn MediaOpener>,
    /// The ring's picture, shared with the history.
    pictures: RingPictures,
    /// Into the call loop (the bot's `/ring`, `/live`, `/status`).
    commands: mpsc::Sender<Command>,
    history: History,
    voice: Option<DoorVoice>,
}

/// The notifiers `config` asks for, in order: stdout (when `stdout` allows it:
/// not with `--events json`), Telegram, then each webhook. Starts the Telegram
/// bot (token check, commands) in the background, stopped by `cancel`. Fails
/// on a missing or exposed bot token or an unusable URL, with the fix in the
/// message; never on an unreachable service (that is a runtime matter, logged
/// and retried).
fn notifiers(
    config: &Config,
    stdout: bool,
    parts: OwnerParts,
    cancel: CancellationToken,
) -> Result<Vec<Arc<dyn Notifier>>, NotifyError> {
    let OwnerParts {
        media,
        pictures,
        commands,
        history,
        voice,
    } = parts;
    let mut notifiers: Vec<Arc<dyn Notifier>> = Vec::new();
    if stdout && config.notify.stdout {
        notifiers.push(Arc::new(notify::stdout::StdoutNotifier));
    }
    let t = &config.notify.telegram;
    if t.enabled {
        let error = |message: String| NotifyError {
            notifier: "telegram".into(),
            message,
        };
        let (token, from) = notify::secret::TokenSources::from_environment(t.token_file.as_deref())
            .load()
            .map_err(|e| error(e.to_string()))?;
        register_token(token.expose());
        tracing::info!("telegram: bot token from {from}");
        let api = notify::telegram::api::Api::new(token, &t.api_url).map_err(error)?;
        let settle_frames = t.settle_frames as usize;
        notifiers.push(Arc::new(notify::telegram::TelegramNotifier::new(
            api.clone(),
            notify::telegram::TelegramSettings {
                chat_ids: t.chat_ids.clone(),
                snapshot: t.snapshot,
                retry_for: t.retry_for,
            },
            pictures,
            voice.clone(),
        )));
        notify::telegram::bot::spawn(
            api,
            notify::telegram::bot::BotSettings {
                chat_ids: t.chat_ids.clone(),
                commands: t.commands,
                settle_frames,
            },
            media,
            commands,
            history,
            voice,
            cancel,
        );
    }
    for w in &config.notify.webhook {
        notifiers.push(Arc::new(notify::webhook::WebhookNotifier::new(w)?));
    }
    Ok(notifiers)
}

/// The TURN server with TURN REST credentials, when `ice.turn_urls` names
/// one, with its shared secret loaded (a secret for the log from now on).
fn turn_rest(config: &Config) -> anyhow::Result<Option<Arc<crate::turn::TurnRest>>> {
    let ice = &config.ice;
    if ice.turn_urls.is_empty() {
        return Ok(None);
    }
    let (turn, from) = crate::turn::TurnRest::load(
        &ice.turn_urls,
        ice.turn_secret_file.as_deref(),
        ice.turn_ttl,
        "ice.turn_secret_file",
    )
    .map_err(anyhow::Error::msg)?;
    tracing::info!("ice: TURN REST secret from {from}");
    Ok(Some(Arc::new(turn)))
}

/// The bot token in every form a URL may carry it: whole, with the colon
/// URL-encoded, and its key part alone (the number is the bot's public id).
fn register_token(token: &str) {
    crate::redact::add(token);
    crate::redact::add(&token.replace(':', "%3A"));
    crate::redact::add(&token.replace(':', "%3a"));
    if let Some((_, key)) = token.split_once(':') {
        crate::redact::add(key);
    }
}

/// What no log line may carry, whichever crate writes it: TURN credentials,
/// webhook paths and queries (a Home Assistant webhook id is a password). The
/// bot token is added where it is loaded.
fn register_secrets(config: &Config) {
    for server in &config.ice.servers {
        crate::redact::add(&server.username);
        crate::redact::add(&server.credential);
    }
    for w in &config.notify.webhook {
        if let Ok(url) = url::Url::parse(&w.url) {
            if url.path() != "/" {
                crate::redact::add(url.path());
            }
            if let Some(q) = url.query() {
                crate::redact::add(q);
            }
        }
        for value in w.headers.values() {
            crate::redact::add(value);
        }
    }
}

/// Prints every call event as a JSON line on standard output.
pub fn print_events_as_json(events: &broadcast::Sender<CallEvent>) {
    let mut rx = events.subscribe();
    tokio::spawn(async move {
        use std::io::Write;
        loop {
            match rx.recv().await {
                Ok(e) => {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{}", e.to_json());
                    let _ = out.flush();
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("{n} events were not printed: standard output is too slow");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}
