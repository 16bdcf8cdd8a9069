//! `doorbell ring`: presses the button of a running daemon through its control
//! socket (as a test, or from another program).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::button::control;
use crate::config::{default_control_socket, Config};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The daemon's config file, to find its control socket.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The control socket (overrides the config).
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

/// The control socket: `socket` when given, else the one `config` names,
/// else the default one.
pub(crate) fn control_socket(
    socket: Option<PathBuf>,
    config: Option<PathBuf>,
) -> anyhow::Result<PathBuf> {
    Ok(match (socket, config) {
        (Some(s), _) => s,
        (None, Some(c)) => Config::load(&c)?.control.socket_path(),
        (None, None) => default_control_socket(),
    })
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = control_socket(args.socket, args.config)?;
    let reply = control::request(&path, "ring").await?;
    println!("{reply}");
    Ok(super::exit(reply.starts_with("ringing")))
}
