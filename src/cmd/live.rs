//! `doorbell live`: asks a running daemon for a live view (a look at the
//! door without a ring: no chime, nobody else notified) through its control
//! socket, and prints the viewer link to open.

use std::process::ExitCode;

use crate::button::control;

/// Its arguments are `doorbell ring`'s: how to find the control socket.
pub use super::ring::Args;

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = super::ring::control_socket(args.socket, args.config)?;
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
