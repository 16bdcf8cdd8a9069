//! `stdin` button: every line on standard input is a press (Enter in a
//! terminal, `echo` from a script). End of input switches the source off
//! quietly; the daemon keeps running (under systemd, stdin is /dev/null).

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::call::command::Command;

pub async fn run(commands: mpsc::Sender<Command>) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(_)) => {
                if commands.send(Command::Ring { reply: None }).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                tracing::debug!("standard input closed; the stdin button is off");
                return;
            }
            Err(e) => {
                tracing::warn!("reading standard input failed ({e}); the stdin button is off");
                return;
            }
        }
    }
}
