//! One module per subcommand, each with its `Args` and `run`. They turn
//! arguments and config into the objects that do IO, and are the only place
//! that prints to standard output.

pub mod check;
pub mod daemon;
pub mod demo;
pub mod devices;
pub mod history;
pub mod live;
pub mod logging;
pub mod passwd;
pub mod ring;
pub mod run;
pub mod serve;

use std::process::ExitCode;

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
    logging::init(level);
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
