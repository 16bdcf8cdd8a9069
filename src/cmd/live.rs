//! `doorbell live`: asks a running daemon for a live view (a look at the
//! door without a ring: no chime, nobody else notified) through its control
//! socket, and prints the viewer link to open.

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

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = match (args.socket, args.config) {
        (Some(s), _) => s,
        (None, Some(c)) => Config::load(&c)?.control.socket_path(),
        (None, None) => default_control_socket(),
    };
    let reply = control::request(&path, "live").await?;
    match reply.strip_prefix("live ") {
        Some(link) => {
            println!("{link}");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("doorbell: {reply}");
            Ok(super::exit(false))
        }
    }
}
