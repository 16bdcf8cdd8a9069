//! The `doorbell` command: parse, set up, dispatch. Everything else is in the library.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

use doorbell::cmd;

#[derive(Parser)]
#[command(
    name = "doorbell",
    version,
    about = "Video doorbell: a button press calls the owner's browser"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the doorbell daemon.
    Run(cmd::run::Args),
    /// Run the signaling server and web viewer.
    Serve(Box<cmd::serve::Args>),
    /// Everything on this PC: server, test-pattern camera, tone microphone, Enter as the button.
    Demo(cmd::demo::Args),
    /// Press the button of a running doorbell.
    Ring(cmd::ring::Args),
    /// Look at the door now (a live view without a ring); prints the link.
    Live(cmd::live::Args),
    /// Validate a config and open every device it names, one line each.
    Check(cmd::check::Args),
    /// List cameras, microphones, speakers and GPIO, with their config names.
    Devices(cmd::devices::Args),
    /// The rings and live views the doorbell kept, newest first.
    History(cmd::history::Args),
    /// Set the owner's password for `doorbell serve`'s pages (an Argon2 hash).
    Passwd(cmd::passwd::Args),
}

/// Caps glibc's malloc at two arenas unless `MALLOC_ARENA_MAX` says
/// otherwise. glibc gives each thread that allocates under contention an
/// arena of its own (up to 8 per core), and the call's threads come and go
/// with every call: the soak saw resident memory step up by 7 MB at its 40th
/// call with no leak, because a new arena had been touched. On a Pi with
/// 512 MB two arenas are plenty for a handful of threads.
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tunable; called before any thread is
        // started.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn main() -> ExitCode {
    cap_malloc_arenas();
    let cli = Cli::parse();
    // The doorbell's heavy work runs on its own media threads; one runtime
    // thread moves the rest with fewer wake-ups. The server may have many clients.
    let mut builder = match cli.command {
        Command::Serve(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("doorbell: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(a) => cmd::run::run(a).await,
            Command::Serve(a) => cmd::serve::run(*a).await,
            Command::Demo(a) => cmd::demo::run(a).await,
            Command::Ring(a) => cmd::ring::run(a).await,
            Command::Live(a) => cmd::live::run(a).await,
            Command::Check(a) => cmd::check::run(a).await,
            Command::Devices(a) => cmd::devices::run(a).await,
            Command::History(a) => cmd::history::run(a).await,
            Command::Passwd(a) => cmd::passwd::run(a).await,
        }
    });
    // Calls are closed by now (media threads joined); what may linger is a
    // blocking read of standard input (the stdin button), which never ends
    // by itself: do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("doorbell: {e:#}");
            ExitCode::from(2)
        }
    }
}
