//! One module per subcommand, each with its `Args` and `run`. They turn
//! arguments and config into the objects that do IO, and are the only place
//! that prints to standard output.

pub mod check;
pub mod daemon;
pub mod demo;
pub mod devices;
pub mod ring;
pub mod run;
pub mod serve;

use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// How call events reach standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum EventFormat {
    /// Nothing but the stdout notifier's lines; events go to the log.
    #[default]
    Text,
    /// One JSON object per line per call event.
    Json,
}

/// Logs to standard error. `RUST_LOG` wins over `level`.
pub fn init_logging(level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<EnvFilter>().ok())
        .unwrap_or_else(|| EnvFilter::new(quiet_dependencies(level)));
    // Under systemd the journal stamps each line; do not print a second time.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = if journald {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}

/// The WebRTC stack logs a lot at info; keep it at warn unless asked.
fn quiet_dependencies(level: &str) -> String {
    if level.contains('=') {
        level.to_string()
    } else {
        format!("{level},webrtc=warn,webrtc_ice=error,webrtc_dtls=warn,webrtc_srtp=warn,webrtc_sctp=warn,webrtc_mdns=warn,rust_socketio=warn,rust_engineio=warn,socketioxide=warn,engineioxide=warn")
    }
}

/// First SIGTERM/SIGINT cancels gracefully; a second one exits at once.
pub fn shutdown_on_signals(cancel: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        cancel.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}

pub fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
