//! `doorbell demo`: the whole product on one PC, no hardware and no internet.
//!
//! Starts the signaling server and viewer on 127.0.0.1, a doorbell with the
//! test pattern as camera and a tone as microphone, plays the viewer's voice on
//! the default speaker (or writes it to a WAV file when there is none), and
//! rings on Enter. Open the printed link in Chromium or Firefox on this machine.

use anyhow::Context;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

use super::{daemon, init_logging, shutdown_on_signals, EventFormat};
use crate::config::Config;
use crate::server::{self, ServerSettings};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Port for the signaling server and viewer on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// `json`: one JSON object per line on standard output for every call event.
    #[arg(long, value_enum, default_value_t = EventFormat::Text)]
    pub events: EventFormat,
    /// Where the viewer's voice goes: `default`, `device:NAME`, `wav:PATH` or
    /// `none`. Default: the default speaker if there is one, else a WAV file.
    #[arg(long)]
    pub speaker: Option<String>,
}

fn default_speaker() -> String {
    #[cfg(feature = "audio")]
    match crate::media::device::default_output_works() {
        Ok(()) => return "default".into(),
        Err(e) => tracing::info!("no usable speaker ({e}); the viewer's voice goes to a WAV file"),
    }
    let path = std::env::temp_dir().join("doorbell-demo-call-{call}.wav");
    format!("wav:{}", path.display())
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    init_logging("info");
    let cancel = CancellationToken::new();
    shutdown_on_signals(cancel.clone());
    let server = server::start(
        &format!("127.0.0.1:{}", args.port),
        ServerSettings {
            viewer_ice_servers: vec![],
            ..ServerSettings::default()
        },
        cancel.child_token(),
    )
    .await
    .with_context(|| {
        format!(
            "starting the demo server (try another --port than {})",
            args.port
        )
    })?;
    let mut config = Config::default();
    config.signaling.url = format!("http://{}", server.addr);
    config.ice.servers.clear();
    config.ice.include_loopback = true;
    config.audio.speaker = args.speaker.unwrap_or_else(default_speaker);
    config.control.socket =
        Some(std::env::temp_dir().join(format!("doorbell-demo-{}.sock", std::process::id())));
    config.validate(std::path::Path::new("(demo)"))?;
    let bell = daemon::start(
        &config,
        daemon::Options {
            stdin_button: true,
            stdout_notifier: args.events == EventFormat::Text,
            ..daemon::Options::default()
        },
        cancel,
    )
    .await?;
    if args.events == EventFormat::Json {
        daemon::print_events_as_json(&bell.events);
    } else {
        println!(
            "doorbell demo: server and viewer on http://{}/",
            server.addr
        );
        println!(
            "camera: test pattern 640x480@30, microphone: 440 Hz tone, speaker: {}",
            config.audio.speaker
        );
        println!("Press Enter to ring the bell; open the link that appears in a browser on this machine.");
        println!(
            "(Or ring from another terminal: doorbell ring --socket {})",
            config.control.socket_path().display()
        );
    }
    bell.task.await.context("the call loop failed")?;
    Ok(ExitCode::SUCCESS)
}
