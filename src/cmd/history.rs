//! `doorbell history`: the rings and live views the doorbell kept, newest
//! first, as lines or as JSON (one array of rows, files as full paths).
//!
//! Reads the database beside a running daemon (WAL lets it); never writes.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;
use crate::history::{resolve_dir, Row, Store};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The doorbell's config file (for `history.dir`).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// One JSON array of rows on standard output.
    #[arg(long)]
    pub json: bool,
    /// The newest this many rows.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let (dir, from) = resolve_dir(config.history.dir.as_deref());
    let rows = match Store::read_only(&dir)? {
        Some(store) => store.recent(args.limit)?,
        None => {
            if !args.json {
                eprintln!("No history in {} (from {from}) yet.", dir.display());
            }
            Vec::new()
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for row in &rows {
            println!("{}", line(row));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `#12  2026-11-30 14:03:05  ring  answered (talked 1 min 20 s)  snapshot …`
fn line(row: &Row) -> String {
    let when = i64::try_from(row.started_ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "?".into());
    let mut text = format!(
        "#{}  {when}  {}  {}",
        row.id,
        row.kind.as_str(),
        row.describe()
    );
    for (what, file) in [("snapshot", &row.snapshot), ("clip", &row.clip)] {
        if let Some(f) = file {
            text.push_str(&format!("  {what} {}", f.display()));
        }
    }
    text
}
