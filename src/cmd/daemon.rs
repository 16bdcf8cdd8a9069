//! Assembles a running doorbell from a config: signaling connection, control
//! socket, buttons, notifiers, media and the call loop. Shared by `doorbell
//! run`, `doorbell demo` and the integration tests.

use anyhow::Context;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::button;
use crate::call::driver::{Command, Engine};
use crate::config::Config;
use crate::events::CallEvent;
use crate::media::{ConfiguredMedia, MediaOpener};
use crate::notify::stdout::StdoutNotifier;
use crate::notify::Notifier;
use crate::peer::PeerSettings;
use crate::signaling::client::{ClientSettings, SocketIoSignaling};

#[derive(Default)]
pub struct Options {
    /// Read presses from standard input when the config lists `stdin`.
    pub stdin_button: bool,
    /// Print links on standard output when the config enables it.
    pub stdout_notifier: bool,
    /// Media instead of the configured devices (tests).
    pub media: Option<Arc<dyn MediaOpener>>,
}

/// A running doorbell.
pub struct Doorbell {
    pub commands: mpsc::Sender<Command>,
    pub events: broadcast::Sender<CallEvent>,
    /// Ends when the call loop has finished after `cancel`.
    pub task: JoinHandle<()>,
}

pub async fn start(
    config: &Config,
    options: Options,
    cancel: CancellationToken,
) -> anyhow::Result<Doorbell> {
    let media: Arc<dyn MediaOpener> = match options.media {
        Some(m) => m,
        None => Arc::new(ConfiguredMedia::new(config).map_err(anyhow::Error::msg)?),
    };
    let (signaling_tx, signaling_events) = mpsc::channel(256);
    let signaling = SocketIoSignaling::start(
        ClientSettings {
            url: config.signaling.url.clone(),
            ca_file: config.signaling.ca_file.clone(),
            insecure_skip_verify: config.signaling.insecure_skip_verify,
            reconnect_min: config.signaling.reconnect_min,
            reconnect_max: config.signaling.reconnect_max,
        },
        signaling_tx,
        cancel.child_token(),
    )
    .context("signaling")?;
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
    if options.stdin_button && config.button.sources.iter().any(|s| s == "stdin") {
        tokio::spawn(button::stdin::run(commands.clone()));
    }
    let mut notifiers: Vec<Arc<dyn Notifier>> = Vec::new();
    if options.stdout_notifier && config.notify.stdout {
        notifiers.push(Arc::new(StdoutNotifier));
    }
    let (events, _) = broadcast::channel(256);
    let engine = Engine {
        machine: config.machine(),
        signaling,
        signaling_events,
        media,
        peer: PeerSettings {
            ice_servers: config.ice.servers.clone(),
            include_loopback: config.ice.include_loopback,
        },
        notifiers,
        commands: command_rx,
        events: events.clone(),
    };
    let task = tokio::spawn(engine.run(cancel));
    Ok(Doorbell {
        commands,
        events,
        task,
    })
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
