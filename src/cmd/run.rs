//! `doorbell run --config FILE [--events json]`: the daemon.

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

use super::{daemon, init_logging, shutdown_on_signals, EventFormat};
use crate::config::Config;

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
    let bell = daemon::start(
        &config,
        daemon::Options {
            stdin_button: true,
            stdout_notifier: args.events == EventFormat::Text,
            media: None,
        },
        cancel,
    )
    .await
    .context("starting the doorbell")?;
    if args.events == EventFormat::Json {
        daemon::print_events_as_json(&bell.events);
    }
    bell.task.await.context("the call loop failed")?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
