//! `doorbell serve`: the room signaling server and the web viewer.

use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

use super::{init_logging, shutdown_on_signals};
use crate::server::device_relay::{rules::Limits, FleetSettings};
use crate::server::owner::{LoginLimits, PasswordHashString};
use crate::server::viewer_token::{self, TokenKey};
use crate::server::{self, rooms, OwnerSettings, ServerSettings};
use crate::spec::ice::IceServer;
use crate::turn::TurnRest;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// STUN/TURN URL for viewers (repeatable); `turn:` ones as
    /// `turn:user:password@host:port` (the password shows in `ps`: prefer
    /// --turn-url). Default: one public STUN server.
    #[arg(long = "ice-server", value_name = "URL")]
    pub ice_servers: Vec<String>,
    /// A TURN server taking TURN REST credentials (coturn's
    /// use-auth-secret), repeatable: each viewer of a live ring gets its own.
    #[arg(long = "turn-url", value_name = "URL")]
    pub turn_urls: Vec<String>,
    /// File (mode 0600) with the TURN server's shared secret; also taken
    /// from $DOORBELL_TURN_SECRET or the systemd credential `turn-secret`.
    #[arg(long, value_name = "FILE")]
    pub turn_secret_file: Option<std::path::PathBuf>,
    /// How long a viewer's TURN credentials are valid.
    #[arg(long, default_value = "1h", value_parser = crate::spec::duration::parse)]
    pub turn_ttl: std::time::Duration,
    /// Most rooms open at once.
    #[arg(long, default_value_t = rooms::Limits::default().max_rooms)]
    pub max_rooms: usize,
    /// Most rooms opened from one address that exist at once.
    #[arg(long, default_value_t = rooms::Limits::default().max_rooms_per_address)]
    pub max_rooms_per_address: usize,
    /// How long a viewer whose connection dropped (page reload, phone
    /// changing networks) keeps its place in the ring; at least the
    /// doorbell's `call.media_timeout`.
    #[arg(long, default_value = "30s", value_parser = crate::spec::duration::parse)]
    pub rejoin_grace: std::time::Duration,
    /// Most `join`s a client may send per minute.
    #[arg(long, default_value_t = rooms::Limits::default().joins_per_minute)]
    pub joins_per_minute: usize,
    /// Most clients connected at once.
    #[arg(long, default_value_t = 1000)]
    pub max_connections: usize,
    /// Most connections from one address at a time.
    #[arg(long, default_value_t = 20)]
    pub max_connections_per_address: usize,
    /// File (mode 0600) with the owner's password hash, made by `doorbell
    /// passwd`; also taken from the systemd credential `owner-password`.
    /// Without one, the owner pages (/login, /owner) are off.
    #[arg(long, value_name = "FILE")]
    pub owner_password_file: Option<std::path::PathBuf>,
    /// How long an owner stays signed in.
    #[arg(long, default_value = "12h", value_parser = crate::spec::duration::parse)]
    pub owner_session_ttl: std::time::Duration,
    /// Wrong owner passwords one address may send within
    /// --owner-login-window before it is refused until the window passed.
    #[arg(long, default_value_t = LoginLimits::default().failures)]
    pub owner_login_failures: usize,
    /// The window of --owner-login-failures.
    #[arg(long, default_value = "15m", value_parser = crate::spec::duration::parse)]
    pub owner_login_window: std::time::Duration,
    /// The doorbell's history directory (its `history.dir`, e.g.
    /// /var/lib/doorbell) when the doorbell runs on this machine: the owner
    /// pages show its history (/history), pictures and recordings.
    #[arg(long, value_name = "DIR")]
    pub history_dir: Option<std::path::PathBuf>,
    /// File (mode 0600) with the look key the doorbell also has
    /// (`signaling.look_key_file`): the owner page's "Look now" button then
    /// asks the doorbell for a live view. Also taken from
    /// $DOORBELL_LOOK_KEY or the systemd credential `look-key`.
    #[arg(long, value_name = "FILE")]
    pub look_key_file: Option<std::path::PathBuf>,
    /// A device that may connect to /ws/device (seed 002's `device_id`),
    /// repeatable. Unknown devices are closed with 1008.
    #[arg(long = "device", value_name = "ID")]
    pub devices: Vec<String>,
    /// File with more devices that may connect: one `device_id` a line,
    /// blank lines and `#` comments ignored.
    #[arg(long, value_name = "FILE")]
    pub devices_file: Option<std::path::PathBuf>,
    /// File (mode 0600) with the key that signs and checks viewer tokens
    /// (HS256 JWTs, at least 32 characters); also taken from
    /// $DOORBELL_VIEWER_TOKEN_KEY or the systemd credential
    /// `viewer-token-key`. Without one, a random key for this process:
    /// tokens minted here work only here.
    #[arg(long, value_name = "FILE")]
    pub viewer_token_key_file: Option<std::path::PathBuf>,
    /// How long a viewer token minted for the signed-in owner is accepted
    /// at `hello` (a watch already open goes on).
    #[arg(long, default_value = "10m", value_parser = crate::spec::duration::parse)]
    pub viewer_token_ttl: std::time::Duration,
    /// The devices' heartbeat period (their `signaling.heartbeat`): a
    /// device silent for two and a half of them is dropped.
    #[arg(long, default_value = "30s", value_parser = crate::spec::duration::parse)]
    pub device_heartbeat: std::time::Duration,
    /// Most messages one seed-002 socket may send per minute.
    #[arg(long, default_value_t = Limits::default().messages_per_minute)]
    pub ws_messages_per_minute: usize,
    /// Most watch sessions open at once per viewer socket and per device.
    #[arg(long, default_value_t = Limits::default().sessions_per_viewer)]
    pub max_watches: usize,
    /// Share seed 002's devices, sessions and messages with the other
    /// instances of `doorbell serve` through Redis (`redis://HOST:PORT[/DB]`),
    /// so that several instances behind a load balancer serve one fleet.
    /// Every instance needs the same --device list and token key.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Log level or tracing filter.
    #[arg(long, default_value = "info")]
    pub log: String,
}

/// Environment variable that may hold the owner's password hash.
pub const OWNER_HASH_ENV: &str = "DOORBELL_OWNER_PASSWORD_HASH";

/// The owner's password hash and login limits, if one is configured.
fn owner(args: &Args) -> anyhow::Result<Option<OwnerSettings>> {
    let Some((text, from)) = crate::secret::load(
        OWNER_HASH_ENV,
        args.owner_password_file.as_deref(),
        "owner-password",
    )
    .map_err(|e| anyhow::anyhow!("--owner-password-file: {e}"))?
    else {
        tracing::info!("no owner password: the owner pages are off (doorbell passwd)");
        return Ok(None);
    };
    let password = PasswordHashString::parse(text.expose())
        .map_err(|e| anyhow::anyhow!("the owner password from {from}: {e}"))?;
    tracing::info!("owner password hash from {from}");
    Ok(Some(OwnerSettings {
        password,
        limits: LoginLimits {
            failures: args.owner_login_failures.max(1),
            window: args.owner_login_window,
            session_ttl: args.owner_session_ttl,
        },
    }))
}

/// Seed 002's settings: the devices, the viewer token key, the limits.
fn fleet(args: &Args) -> anyhow::Result<FleetSettings> {
    let mut devices = args.devices.clone();
    if let Some(path) = &args.devices_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--devices-file {}: {e}", path.display()))?;
        devices.extend(parse_devices(&text));
    }
    if let Some(bad) = devices
        .iter()
        .find(|d| !crate::signaling::device_ws::valid_id(d))
    {
        anyhow::bail!(
            "--device {bad:?}: a device id is 1 to 128 characters, none of them control characters"
        );
    }
    for d in devices
        .iter()
        .filter(|d| !server::device_relay::link_safe(d))
    {
        tracing::warn!(
            device = %d,
            "this device id is not URL-safe (A-Z a-z 0-9 - _ . : ~): its ring link cannot be opened"
        );
    }
    let token_key = match crate::secret::load(
        viewer_token::KEY_ENV,
        args.viewer_token_key_file.as_deref(),
        viewer_token::KEY_CREDENTIAL,
    )
    .map_err(|e| anyhow::anyhow!("--viewer-token-key-file: {e}"))?
    {
        Some((key, from)) => {
            crate::redact::add(key.expose());
            let key = TokenKey::new(key)
                .map_err(|e| anyhow::anyhow!("the viewer token key from {from}: {e}"))?;
            tracing::info!("viewer token key from {from}");
            Some(key)
        }
        None if args.redis.is_some() => anyhow::bail!(
            "--redis needs --viewer-token-key-file (or ${} or the systemd credential {}): \
             every instance must accept the tokens the others mint",
            viewer_token::KEY_ENV,
            viewer_token::KEY_CREDENTIAL
        ),
        None => None,
    };
    if !devices.is_empty() {
        tracing::info!(devices = devices.len(), "seed 002: devices registered");
    }
    // A password in the Redis URL is a secret like the others.
    if let Some(password) = args
        .redis
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.password().map(str::to_string))
    {
        crate::redact::add(&password);
    }
    let watches = args.max_watches.max(1);
    Ok(FleetSettings {
        devices,
        token_key,
        token_ttl: args.viewer_token_ttl,
        limits: Limits {
            messages_per_minute: args.ws_messages_per_minute.max(10),
            sessions_per_viewer: watches,
            sessions_per_device: watches,
            device_silence: args.device_heartbeat * 5 / 2,
            ..Limits::default()
        },
        redis: args.redis.clone(),
    })
}

/// The device ids of a devices file: one a line, `#` comments.
pub fn parse_devices(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// `turn:user:pass@host:3478` -> an ICE server with credentials.
pub fn parse_ice_server(url: &str) -> Result<IceServer, String> {
    let (scheme, rest) = url
        .split_once(':')
        .ok_or_else(|| format!("{url:?} is not a stun: or turn: URL"))?;
    if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") {
        return Err(format!("{url:?} is not a stun: or turn: URL"));
    }
    match rest.rsplit_once('@') {
        Some((creds, host)) if scheme.starts_with("turn") => {
            let (user, pass) = creds
                .split_once(':')
                .ok_or_else(|| format!("{url:?}: write turn:USER:PASSWORD@HOST:PORT"))?;
            Ok(IceServer {
                urls: vec![format!("{scheme}:{host}")],
                username: user.to_string(),
                credential: pass.to_string(),
            })
        }
        _ => Ok(IceServer {
            urls: vec![url.to_string()],
            username: String::new(),
            credential: String::new(),
        }),
    }
}

/// The TURN REST server for viewers, with its secret loaded.
fn viewer_turn(args: &Args) -> anyhow::Result<Option<Arc<TurnRest>>> {
    if args.turn_urls.is_empty() {
        return Ok(None);
    }
    let (turn, from) = TurnRest::load(
        &args.turn_urls,
        args.turn_secret_file.as_deref(),
        args.turn_ttl,
        "--turn-secret-file",
    )
    .map_err(|e| anyhow::anyhow!("--turn-url: {e}"))?;
    tracing::info!("TURN REST secret from {from}");
    Ok(Some(Arc::new(turn)))
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    init_logging(&args.log);
    let viewer_ice_servers = if args.ice_servers.is_empty() {
        ServerSettings::default().viewer_ice_servers
    } else {
        args.ice_servers
            .iter()
            .map(|u| parse_ice_server(u))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?
    };
    for s in &viewer_ice_servers {
        if !s.credential.is_empty() {
            crate::redact::add(&s.credential);
            tracing::warn!(
                "a TURN password on the command line shows in `ps` to every user of this \
                 machine; use --turn-url and --turn-secret-file (docs/security.md)"
            );
        }
    }
    let viewer_turn = viewer_turn(&args)?;
    let owner = owner(&args)?;
    let look_key =
        crate::cmd::daemon::look_key(args.look_key_file.as_deref())?.map(|(key, from)| {
            tracing::info!("look key from {from}: the owner page has \"Look now\"");
            crate::secret::Secret::new(key)
        });
    if look_key.is_some() && owner.is_none() {
        tracing::warn!(
            "a look key without an owner password: \"Look now\" is on the owner page, which is off"
        );
    }
    let fleet = fleet(&args)?;
    let cancel = CancellationToken::new();
    shutdown_on_signals(cancel.clone());
    let settings = ServerSettings {
        limits: rooms::Limits {
            max_rooms: args.max_rooms,
            max_rooms_per_address: args.max_rooms_per_address,
            joins_per_minute: args.joins_per_minute,
            rejoin_grace: args.rejoin_grace,
        },
        max_connections: args.max_connections,
        max_connections_per_address: args.max_connections_per_address,
        viewer_ice_servers,
        viewer_turn,
        owner,
        history_dir: args.history_dir.clone(),
        look_key,
        fleet,
    };
    let server = server::start(&args.listen, settings, cancel.clone()).await?;
    eprintln!(
        "doorbell signaling server on http://{}/ (viewer page and Socket.IO)",
        server.addr
    );
    cancel.cancelled().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_server_urls_with_and_without_credentials() {
        let s = parse_ice_server("turn:door:s3cret@turn.example.org:3478").unwrap();
        assert_eq!(
            (
                s.urls[0].as_str(),
                s.username.as_str(),
                s.credential.as_str()
            ),
            ("turn:turn.example.org:3478", "door", "s3cret")
        );
        let s = parse_ice_server("stun:stun.example.org:3478").unwrap();
        assert!(s.username.is_empty());
        assert!(parse_ice_server("http://x").is_err());
        assert!(parse_ice_server("turn:nopass@x:1").is_err());
    }

    #[test]
    fn a_devices_file_has_one_id_a_line_and_comments() {
        assert_eq!(
            parse_devices("# the fleet\ndoor-1\n\n  kitchen-cam-001  # the back door\n"),
            ["door-1", "kitchen-cam-001"]
        );
    }
}
