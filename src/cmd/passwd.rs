//! `doorbell passwd`: the owner's password for `doorbell serve`'s pages,
//! stored as an Argon2id hash (PHC string). The password itself is never
//! written anywhere.

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::server::owner::hash_password;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write the hash here (mode 0600, replaced atomically) for `doorbell
    /// serve --owner-password-file`; without it the hash is printed.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let password = read_password()?;
    let hash = hash_password(&password)?;
    match &args.file {
        Some(path) => {
            write_private(path, &format!("{hash}\n"))?;
            eprintln!(
                "doorbell: the owner password's hash is in {} (give it to doorbell serve \
                 with --owner-password-file)",
                path.display()
            );
        }
        None => println!("{hash}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// From a terminal: asked twice, not echoed. Otherwise: the first line of
/// standard input (scripts, `printf '%s\n' "$PW" | doorbell passwd`).
fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let first = prompt("New owner password: ")?;
    let second = prompt("Again: ")?;
    if first != second {
        anyhow::bail!("the two passwords differ; nothing was written");
    }
    Ok(first)
}

fn prompt(text: &str) -> anyhow::Result<String> {
    eprint!("{text}");
    std::io::stderr().flush()?;
    let _quiet = NoEcho::on_stdin();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    eprintln!();
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Terminal echo off while alive.
struct NoEcho(Option<libc::termios>);

impl NoEcho {
    fn on_stdin() -> NoEcho {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return NoEcho(None);
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            t.c_lflag |= libc::ECHONL;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return NoEcho(None);
            }
            NoEcho(Some(saved))
        }
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        if let Some(saved) = self.0 {
            // SAFETY: restores the settings read in `on_stdin`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &saved);
            }
        }
    }
}

/// Writes `text` to `path` as a new private file, then renames it over the
/// old one: a reader never sees half a file or a moment of wider mode.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.new",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("owner-password")
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}
