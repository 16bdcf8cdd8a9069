//! `doorbell check --config FILE`: validates the config, connects to the
//! signaling server once (what it speaks, whether its certificate is trusted
//! and why), then opens every device the config names (button, camera,
//! microphone, speaker, chime, relay), says which H.264 encoder the calls
//! will use and why and what echo control the microphone gets, and prints
//! one line each: OK with what was found, or
//! the reason and the fix.
//! Exits non-zero when anything is wrong, so an install script or a person
//! setting up the Pi sees every problem at once instead of one per restart.
//!
//! Devices are opened and closed at once; nothing rings and no call is made.
//! Run it as the service user (`sudo -u doorbell doorbell check ...`) to see
//! that user's permissions.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;
use crate::signaling::client::{probe, ClientSettings};
use crate::signaling::device_ws::{self, DeviceWsSettings};
use crate::signaling::sse::{self, SseSettings};
use crate::spec::gpio::ButtonSpec;
use crate::spec::media::{EncoderSpec, SinkSpec, SourceSpec, VideoSpec};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file to check.
    #[arg(long, short)]
    pub config: PathBuf,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub what: &'static str,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok(String),
    /// Not configured: nothing to check.
    Off(String),
    Failed {
        reason: String,
        fix: String,
    },
}

fn ok(what: &'static str, s: impl Into<String>) -> Line {
    Line {
        what,
        outcome: Outcome::Ok(s.into()),
    }
}

fn off(what: &'static str, s: impl Into<String>) -> Line {
    Line {
        what,
        outcome: Outcome::Off(s.into()),
    }
}

fn failed(what: &'static str, reason: impl Into<String>, fix: impl Into<String>) -> Line {
    Line {
        what,
        outcome: Outcome::Failed {
            reason: reason.into(),
            fix: fix.into(),
        },
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            print(&[failed(
                "config",
                e.to_string(),
                "fix the file and run check again",
            )]);
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut lines = vec![ok("config", format!("{} is valid", args.config.display()))];
    let settings = config.signaling.client_settings();
    let device_ws =
        (config.signaling.protocol == crate::config::SignalingProtocol::DeviceWs).then(|| {
            DeviceWsSettings {
                client: settings.clone(),
                device_id: config.signaling.device_id.clone(),
                heartbeat: config.signaling.heartbeat,
            }
        });
    let sse =
        (config.signaling.protocol == crate::config::SignalingProtocol::Sse).then(|| SseSettings {
            client: settings.clone(),
            peer_id: config.signaling.peer_id(),
            heartbeat: config.signaling.heartbeat,
        });
    let ice = config.ice.clone();
    let devices = tokio::task::spawn_blocking(move || check_devices(&config));
    lines.push(match (device_ws, sse) {
        (Some(d), _) => check_device_socket(&d).await,
        (_, Some(s)) => check_sse(&s).await,
        _ => check_signaling(&settings).await,
    });
    lines.extend(check_turn(&ice));
    lines.extend(devices.await?);
    print(&lines);
    let problems = lines
        .iter()
        .filter(|l| matches!(l.outcome, Outcome::Failed { .. }))
        .count();
    if problems == 0 {
        println!("all good");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{problems} problem{} (see docs/hardware.md)",
            if problems == 1 { "" } else { "s" }
        );
        Ok(ExitCode::FAILURE)
    }
}

fn print(lines: &[Line]) {
    for l in lines {
        match &l.outcome {
            Outcome::Ok(s) => println!("{:<10} OK    {s}", l.what),
            Outcome::Off(s) => println!("{:<10} off   {s}", l.what),
            Outcome::Failed { reason, fix } => {
                println!("{:<10} FAIL  {reason}", l.what);
                println!("{:<10}       fix: {fix}", "");
            }
        }
    }
}

/// How long the signaling check may take (TCP, TLS, Engine.IO, Socket.IO;
/// with `auto`, up to four attempts).
const SIGNALING_CHECK_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Connects to the signaling server once and disconnects.
pub async fn check_signaling(settings: &ClientSettings) -> Line {
    let found = async { probe(settings).await.map(|f| f.describe()) };
    probe_line(&settings.url, found, None).await
}

/// Says hello on seed 002's device socket once.
async fn check_device_socket(settings: &DeviceWsSettings) -> Line {
    let fix = "register this device on the server, or correct signaling.device_id";
    probe_line(&settings.client.url, device_ws::probe(settings), Some(fix)).await
}

/// Asks seed 004's server for its ICE servers once.
async fn check_sse(settings: &SseSettings) -> Line {
    probe_line(&settings.client.url, sse::probe(settings), None).await
}

/// The `signaling` line for one probe of any protocol: what it found, or
/// why not with the fix (TLS errors carry their own; with seed 002, close
/// 1008 means the server does not know the device: `refused_fix`).
async fn probe_line(
    url: &str,
    probe: impl std::future::Future<Output = Result<String, crate::signaling::SignalingError>>,
    refused_fix: Option<&str>,
) -> Line {
    const REACH: &str =
        "is the server running and reachable from here? (signaling.url; docs/install.md)";
    match tokio::time::timeout(SIGNALING_CHECK_LIMIT, probe).await {
        Ok(Ok(found)) => ok("signaling", format!("{url}: {found}")),
        Ok(Err(e)) => {
            let message = e.to_string();
            match message.split_once(" Fix: ") {
                Some((reason, fix)) => failed(
                    "signaling",
                    format!("{url}: {reason}"),
                    fix.trim_end_matches('.'),
                ),
                None => match refused_fix.filter(|_| message.contains("1008")) {
                    Some(fix) => failed("signaling", format!("{url}: {message}"), fix),
                    None => failed("signaling", format!("{url}: {message}"), REACH),
                },
            }
        }
        Err(_) => failed(
            "signaling",
            format!(
                "{url}: no answer within {} s",
                SIGNALING_CHECK_LIMIT.as_secs()
            ),
            REACH,
        ),
    }
}

/// The TURN REST secret, when `ice.turn_urls` names a server.
fn check_turn(ice: &crate::config::IceConfig) -> Option<Line> {
    if ice.turn_urls.is_empty() {
        return None;
    }
    Some(
        match crate::turn::TurnRest::load(
            &ice.turn_urls,
            ice.turn_secret_file.as_deref(),
            ice.turn_ttl,
            "ice.turn_secret_file",
        ) {
            Ok((_, from)) => ok(
                "turn",
                format!(
                    "secret from {from}; credentials minted per call, valid {}s",
                    ice.turn_ttl.as_secs()
                ),
            ),
            Err(e) => failed(
                "turn",
                e,
                "put the TURN server's static-auth-secret in a file only the service user can read (docs/install.md, step 5)",
            ),
        },
    )
}

/// Opens each configured device in turn. Blocking.
pub fn check_devices(config: &Config) -> Vec<Line> {
    let mut lines = Vec::new();
    for source in &config.button.sources {
        lines.push(check_button(source, config));
    }
    if config.button.sources.is_empty() {
        lines.push(off(
            "button",
            "no button source; only `doorbell ring` presses",
        ));
    }
    lines.push(check_camera(config));
    lines.push(check_encoder(config));
    lines.push(check_microphone(&config.audio.microphone));
    lines.push(check_speaker(&config.audio.speaker));
    lines.push(check_echo(config));
    lines.push(check_chime(config));
    lines.push(check_relay(config));
    lines
}

fn check_button(source: &str, config: &Config) -> Line {
    match ButtonSpec::parse(source) {
        Err(e) => failed("button", e, "see button.sources in docs/config.md"),
        Ok(ButtonSpec::Stdin) => ok("button", "stdin: each line on standard input is a press"),
        Ok(ButtonSpec::Gpio(pin)) => {
            let (tx, _rx) = tokio::sync::mpsc::channel(1);
            match crate::gpio::open_button(pin, config.button.active_low, tx) {
                Ok((_button, high)) => {
                    let pressed = high != config.button.active_low;
                    ok(
                        "button",
                        format!(
                            "gpio:{pin} opened, {} now",
                            if pressed { "PRESSED" } else { "released" }
                        ),
                    )
                }
                Err(e) => failed("button", format!("gpio:{pin}: {}", e.reason), e.fix),
            }
        }
    }
}

fn check_camera(config: &Config) -> Line {
    let v = &config.video;
    match VideoSpec::parse(&v.source) {
        Err(e) => failed("camera", e, "see video.source in docs/config.md"),
        Ok(VideoSpec::None) => off("camera", "video.source = \"none\": calls are audio only"),
        Ok(VideoSpec::Testsrc) => ok(
            "camera",
            format!("testsrc: test pattern {}x{}@{}", v.width, v.height, v.fps),
        ),
        Ok(VideoSpec::Libcamera { camera }) => {
            match crate::media::libcamera::resolve(&v.libcamera_command) {
                Ok(program) => match libcamera_frame(&program, camera, v) {
                    Ok(()) => ok(
                        "camera",
                        format!(
                            "libcamera:{camera} through {}: a {}x{} frame came",
                            program.display(),
                            v.width,
                            v.height
                        ),
                    ),
                    Err(e) => failed(
                        "camera",
                        format!("libcamera:{camera}: {e}"),
                        "is the camera module's cable in, and seen by `rpicam-hello --list-cameras`?",
                    ),
                },
                Err(e) => failed(
                    "camera",
                    format!("libcamera: {e}"),
                    "install rpicam-apps, or set video.libcamera_command",
                ),
            }
        }
        #[allow(unreachable_patterns)]
        Ok(other) => camera_probe(&other, config),
    }
}

/// Which encoder `video.encoder` gives, set up at the configured size and
/// rate (then closed).
fn check_encoder(config: &Config) -> Line {
    use crate::media::v4l2m2m::V4l2m2mEncoder;
    if matches!(VideoSpec::parse(&config.video.source), Ok(VideoSpec::None)) {
        return off("encoder", "no video, no encoder");
    }
    let settings = match config.media_settings() {
        Ok(m) => m.encoder,
        Err(e) => return failed("encoder", e, "see video.encoder in docs/config.md"),
    };
    let size = format!("{}x{}@{}", settings.width, settings.height, settings.fps);
    match &settings.encoder {
        EncoderSpec::OpenH264 => ok(
            "encoder",
            "OpenH264 (software), as video.encoder = \"openh264\" says",
        ),
        EncoderSpec::V4l2m2m(path) => match V4l2m2mEncoder::open(path, &settings) {
            Ok(e) => ok(
                "encoder",
                format!(
                    "hardware: {}, {}, set up for {size}",
                    path.display(),
                    e.driver()
                ),
            ),
            Err(e) => failed(
                "encoder",
                format!("video.encoder = \"v4l2m2m\": {e}"),
                if path.exists() {
                    "add the user to the `video` group (docs/hardware.md), or set \
                     video.encoder = \"auto\""
                } else {
                    "a Pi 5 has no hardware encoder: set video.encoder = \"auto\"; on a Pi 4 \
                     or earlier, `doorbell devices` lists the encoder's node"
                },
            ),
        },
        EncoderSpec::Auto(path) => match V4l2m2mEncoder::open(path, &settings) {
            Ok(e) => ok(
                "encoder",
                format!(
                    "hardware (video.encoder = \"auto\"): {}, {}, set up for {size}",
                    path.display(),
                    e.driver()
                ),
            ),
            Err(e) => ok(
                "encoder",
                format!(
                    "OpenH264 (software): video.encoder = \"auto\" and the hardware \
                     encoder does not open ({e})"
                ),
            ),
        },
    }
}

/// Runs the libcamera program until its first frame (at most 20 s).
fn libcamera_frame(
    program: &std::path::Path,
    camera: u32,
    v: &crate::config::VideoConfig,
) -> Result<(), String> {
    use crate::media::VideoSource;
    let (program, (w, h, fps)) = (
        program.to_path_buf(),
        (v.width as usize, v.height as usize, v.fps),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = crate::media::libcamera::LibcameraCamera::open(&program, camera, w, h, fps)
            .and_then(|mut c| c.next_frame(&mut crate::media::Frame::new(w, h)))
            .map_err(|e| e.to_string());
        let _ = tx.send(result);
    });
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .unwrap_or_else(|_| Err("no frame in 20 s".into()))
}

#[cfg(feature = "camera")]
fn camera_probe(spec: &VideoSpec, config: &Config) -> Line {
    let v = &config.video;
    match spec {
        VideoSpec::V4l2(path) => match crate::media::v4l2::probe(path, v.width, v.height, v.fps) {
            Ok(s) => ok("camera", format!("{}: {s}", path.display())),
            Err(e) => failed("camera", format!("{}: {}", path.display(), e.reason), e.fix),
        },
        other => failed("camera", format!("{other:?} cannot be checked"), "-"),
    }
}

#[cfg(not(feature = "camera"))]
fn camera_probe(spec: &VideoSpec, _config: &Config) -> Line {
    failed(
        "camera",
        format!("{spec:?}: this build has no camera support"),
        "build with the `camera` cargo feature (on by default)",
    )
}

/// What echo control the microphone gets (`audio.echo_cancellation`,
/// `audio.duplex`; docs/config.md). The canceller is set up once, as a call
/// would.
fn check_echo(config: &Config) -> Line {
    let a = &config.audio;
    let duplex = match crate::media::echo::Duplex::parse(&a.duplex) {
        Ok(d) => d,
        Err(e) => return failed("echo", e, "see audio.duplex in docs/config.md"),
    };
    let devices = matches!(SourceSpec::parse(&a.microphone), Ok(SourceSpec::Device(_)))
        && matches!(SinkSpec::parse(&a.speaker), Ok(SinkSpec::Device(_)));
    if !devices {
        return off(
            "echo",
            "no echo control: the microphone and the speaker are not both sound devices",
        );
    }
    use crate::media::echo::Duplex;
    let rule = match (duplex, a.echo_cancellation) {
        (Duplex::Full, _) => "full duplex",
        (Duplex::Half, _) | (Duplex::Auto, false) => {
            "half duplex: the microphone is muted while the owner speaks"
        }
        (Duplex::Auto, true) => "full duplex, half while the canceller falls short",
    };
    if !a.echo_cancellation {
        return if duplex == Duplex::Full {
            off(
                "echo",
                "no echo control (audio.echo_cancellation = false, duplex full)",
            )
        } else {
            ok("echo", format!("no canceller; {rule}"))
        };
    }
    match crate::media::echo::EchoCanceller::new() {
        Ok(_) => ok(
            "echo",
            format!("AEC3 echo canceller and noise suppression; {rule}"),
        ),
        Err(e) => failed(
            "echo",
            e.to_string(),
            "set audio.echo_cancellation = false and audio.duplex = \"half\"",
        ),
    }
}

fn check_microphone(spec: &str) -> Line {
    match SourceSpec::parse(spec) {
        Err(e) => failed("microphone", e, "see audio.microphone in docs/config.md"),
        Ok(SourceSpec::None) => off(
            "microphone",
            "audio.microphone = \"none\": the viewer will not hear the door",
        ),
        Ok(SourceSpec::Tone { hz }) => ok("microphone", format!("tone at {hz} Hz")),
        Ok(SourceSpec::Device(name)) => open_microphone(&name),
    }
}

fn check_speaker(spec: &str) -> Line {
    match SinkSpec::parse(spec) {
        Err(e) => failed("speaker", e, "see audio.speaker in docs/config.md"),
        Ok(SinkSpec::None) => off(
            "speaker",
            "audio.speaker = \"none\": the visitor will not hear the viewer",
        ),
        Ok(SinkSpec::Wav(path)) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let probe = dir.join(format!(".doorbell-check-{}", std::process::id()));
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)
                .map(drop);
            let _ = std::fs::remove_file(&probe);
            match written {
                Ok(()) => ok("speaker", format!("WAV files in {}", dir.display())),
                Err(e) => failed(
                    "speaker",
                    format!("cannot write WAV files in {}: {e}", dir.display()),
                    "create the directory and let the service user write there",
                ),
            }
        }
        Ok(SinkSpec::Device(name)) => open_speaker(&name),
    }
}

#[cfg(feature = "audio")]
fn open_microphone(name: &str) -> Line {
    match crate::media::device::DeviceSource::open(name) {
        Ok(d) => {
            let rate = d.rate();
            drop(d);
            ok("microphone", format!("{name} opened ({rate} Hz)"))
        }
        Err(e) => {
            let e = e.to_string();
            let fix = crate::media::device::hint(&e);
            failed("microphone", e, fix)
        }
    }
}

#[cfg(feature = "audio")]
fn open_speaker(name: &str) -> Line {
    match crate::media::device::DeviceSink::open(name) {
        Ok(d) => {
            let rate = d.rate();
            drop(d);
            ok("speaker", format!("{name} opened ({rate} Hz)"))
        }
        Err(e) => {
            let e = e.to_string();
            let fix = crate::media::device::hint(&e);
            failed("speaker", e, fix)
        }
    }
}

#[cfg(not(feature = "audio"))]
fn open_microphone(name: &str) -> Line {
    failed(
        "microphone",
        format!("{name}: this build has no sound card support"),
        "build with the `audio` cargo feature (on by default)",
    )
}

#[cfg(not(feature = "audio"))]
fn open_speaker(name: &str) -> Line {
    failed(
        "speaker",
        format!("{name}: this build has no sound card support"),
        "build with the `audio` cargo feature (on by default)",
    )
}

fn check_chime(config: &Config) -> Line {
    match crate::chime::load(&config.chime) {
        Err(e) => failed("chime", e, "see chime.sound in docs/config.md"),
        Ok(None) => off("chime", "chime.sound = \"none\""),
        Ok(Some(pcm)) => {
            let seconds = pcm.len() as f32 / crate::media::AUDIO_RATE as f32;
            match SinkSpec::parse(&config.audio.speaker) {
                Ok(SinkSpec::Device(name)) => ok(
                    "chime",
                    format!("{} ({seconds:.1} s) on {name}", config.chime.sound),
                ),
                _ => off(
                    "chime",
                    format!(
                        "{} ({seconds:.1} s) loaded, but audio.speaker is not a sound card: nobody hears it",
                        config.chime.sound
                    ),
                ),
            }
        }
    }
}

fn check_relay(config: &Config) -> Line {
    match config.chime.relay_pin() {
        Err(e) => failed("relay", e, "see chime.relay in docs/config.md"),
        Ok(None) => off("relay", "no chime relay"),
        Ok(Some(pin)) => match crate::gpio::Relay::open(pin, config.chime.relay_active_low) {
            Ok(_relay) => ok("relay", format!("gpio:{pin} opened (left off)")),
            Err(e) => failed("relay", format!("gpio:{pin}: {}", e.reason), e.fix),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_sources_check_out_without_hardware() {
        let config = Config::default();
        let lines = check_devices(&config);
        assert!(
            lines
                .iter()
                .all(|l| !matches!(l.outcome, Outcome::Failed { .. })),
            "{lines:#?}"
        );
        assert!(lines.iter().any(|l| l.what == "camera"
            && matches!(&l.outcome, Outcome::Ok(s) if s.contains("test pattern"))));
    }

    #[test]
    fn the_encoder_line_says_which_one_and_why() {
        let mut config = Config::default();
        config.video.encoder_device = "/dev/video-not-here-21".into();
        let line = check_encoder(&config);
        assert!(
            matches!(&line.outcome, Outcome::Ok(s) if s.starts_with("OpenH264 (software)")
                && s.contains("auto") && s.contains("/dev/video-not-here-21")),
            "{line:?}"
        );
        config.video.encoder = "v4l2m2m".into();
        let line = check_encoder(&config);
        assert!(
            matches!(&line.outcome, Outcome::Failed { reason, fix }
                if reason.contains("/dev/video-not-here-21") && fix.contains("Pi 5")),
            "{line:?}"
        );
        config.video.encoder = "openh264".into();
        assert!(matches!(check_encoder(&config).outcome, Outcome::Ok(_)));
        config.video.source = "none".into();
        assert!(matches!(check_encoder(&config).outcome, Outcome::Off(_)));
    }

    #[test]
    fn the_echo_line_says_what_the_microphone_gets() {
        let mut config = Config::default();
        assert!(
            matches!(check_echo(&config).outcome, Outcome::Off(_)),
            "a tone"
        );
        config.audio.microphone = "device:mic".into();
        config.audio.speaker = "device:spk".into();
        let line = check_echo(&config);
        assert!(
            matches!(&line.outcome, Outcome::Ok(s) if s.starts_with("AEC3") && s.contains("half while")),
            "{line:?}"
        );
        config.audio.echo_cancellation = false;
        let line = check_echo(&config);
        assert!(
            matches!(&line.outcome, Outcome::Ok(s) if s.contains("no canceller; half duplex")),
            "{line:?}"
        );
        config.audio.duplex = "full".into();
        assert!(matches!(check_echo(&config).outcome, Outcome::Off(_)));
    }

    #[test]
    fn a_bad_relay_is_a_failed_line_not_a_panic() {
        let mut config = Config::default();
        config.chime.relay = "gpio:x".into();
        let line = check_relay(&config);
        assert!(matches!(line.outcome, Outcome::Failed { .. }), "{line:?}");
    }

    #[test]
    fn the_turn_secret_is_checked_without_showing_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut ice = crate::config::IceConfig {
            turn_urls: vec!["turn:127.0.0.1:3478".into()],
            turn_secret_file: Some(dir.path().join("missing")),
            ..Default::default()
        };
        let line = check_turn(&ice).unwrap();
        assert!(
            matches!(&line.outcome, Outcome::Failed { reason, .. } if reason.contains("missing")),
            "{line:?}"
        );
        let path = dir.path().join("turn-secret");
        std::fs::write(&path, "CHECKED-SECRET").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        ice.turn_secret_file = Some(path);
        let line = check_turn(&ice).unwrap();
        assert!(
            matches!(&line.outcome, Outcome::Ok(s) if s.contains("turn-secret") && !s.contains("CHECKED")),
            "{line:?}"
        );
        ice.turn_urls.clear();
        assert!(check_turn(&ice).is_none());
    }
}
