//! `doorbell run --config FILE [--events json]`: the daemon. Under systemd
//! (`Type=notify`) it reports readiness, status and watchdog pings; SIGTERM or
//! SIGINT hang up a running call and stop (a second one exits at once); SIGHUP
//! checks the config file for the restart that applies it.

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{daemon, init_logging, shutdown_on_signals, EventFormat};
use crate::call::command::{Command, Status};
use crate::config::Config;
use crate::systemd;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file (TOML; see docs/config.md).
    #[arg(long, short)]
    pub config: PathBuf,
    /// `json`: one JSON object per line on standard output for every call event.
    #[arg(long, value_enum, default_value_t = EventFormat::Text)]
    pub events: EventFormat,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    init_logging(&config.log.level);
    let cancel = CancellationToken::new();
    shutdown_on_signals(cancel.clone());
    let cancel_all = cancel.clone();
    let bell = daemon::start(
        &config,
        daemon::Options {
            stdin_button: true,
            stdout_notifier: args.events == EventFormat::Text,
            ..daemon::Options::default()
        },
        cancel,
    )
    .await
    .context("starting the doorbell")?;
    if args.events == EventFormat::Json {
        daemon::print_events_as_json(&bell.events);
    }
    if let Some(sd) = systemd::Notifier::from_env() {
        tokio::spawn(supervise(sd, bell.commands.clone(), cancel_all.clone()));
    }
    reload_on_hangup(args.config.clone());
    bell.task.await.context("the call loop failed")?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// How long start-up may wait for the signaling server before telling systemd
/// the service is ready anyway: without network the doorbell still runs (and
/// keeps trying), and systemd must not kill it for being slow.
const READY_WAIT: Duration = Duration::from_secs(30);

/// Talks to systemd: `READY=1` once the signaling server is reached (or after
/// [`READY_WAIT`]), `STATUS=` on every change, `WATCHDOG=1` only while the call
/// loop answers a status request (a hung loop stops the pings and systemd
/// restarts the service), `STOPPING=1` on shutdown.
async fn supervise(
    sd: systemd::Notifier,
    commands: mpsc::Sender<Command>,
    cancel: CancellationToken,
) {
    let watchdog = systemd::watchdog_interval();
    let tick = watchdog
        .map(|w| (w / 2).min(Duration::from_secs(2)))
        .unwrap_or(Duration::from_secs(2));
    let started = Instant::now();
    let (mut ready, mut last_status) = (false, String::new());
    loop {
        // Look often until ready (a quick READY), then once per ping.
        let pause = if ready {
            tick
        } else {
            Duration::from_millis(200).min(tick)
        };
        tokio::select! {
            _ = cancel.cancelled() => {
                sd.tell("STOPPING=1\nSTATUS=stopping: hanging up any call");
                return;
            }
            _ = tokio::time::sleep(pause) => {}
        }
        let (reply, answer) = oneshot::channel();
        let status = match commands.try_send(Command::Status { reply }) {
            Ok(()) => tokio::time::timeout(tick, answer)
                .await
                .ok()
                .and_then(Result::ok),
            Err(_) => None,
        };
        let Some(status) = status else {
            tracing::warn!("the call loop did not answer a status request in time");
            continue; // no ping: systemd's watchdog decides
        };
        let text = describe(&status);
        if !ready && (status.signaling_up || started.elapsed() >= READY_WAIT) {
            ready = true;
            sd.tell(&format!("READY=1\nSTATUS={text}"));
            last_status = text.clone();
            tracing::info!("told systemd the doorbell is ready ({text})");
        }
        if ready {
            if watchdog.is_some() {
                sd.tell("WATCHDOG=1");
            }
            if text != last_status {
                sd.tell(&format!("STATUS={text}"));
                last_status = text;
            }
        }
    }
}

/// One line for `systemctl status`. No room names: they are the call's key.
fn describe(s: &Status) -> String {
    let server = if s.signaling_up {
        "signaling server connected"
    } else {
        "signaling server unreachable, retrying"
    };
    format!(
        "{}, {server}, {} calls since start",
        s.state.name(),
        s.calls
    )
}

/// SIGHUP: a restart applies a new config (`systemctl restart doorbell`); the
/// signal checks the file so the restart will not fail on a typo.
fn reload_on_hangup(path: PathBuf) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            match Config::load(&path) {
                Ok(_) => tracing::info!(
                    "SIGHUP: {} is valid; restart the service to apply it (systemctl restart doorbell)",
                    path.display()
                ),
                Err(e) => tracing::error!(
                    "SIGHUP: {e}; the running doorbell keeps its current config"
                ),
            }
        }
    });
}
