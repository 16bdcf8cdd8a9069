//! The Socket.IO client of the room protocol: one long-lived connection per
//! daemon (rooms are server state, and a ring must not wait for a TCP and TLS
//! handshake).
//!
//! Our own small client over [`engineio`](super::engineio),
//! [`socketio`](super::socketio) and [`transport`](super::transport), because
//! the servers the original design runs speak two protocol generations and no
//! maintained Rust client speaks both (`docs/design.md`, "Our own Socket.IO
//! client"). Per connection it finds out which generation the server speaks
//! (`signaling.engine_io = "auto"`: Engine.IO 4 first, Engine.IO 3 when the
//! server refuses 4), WebSocket first and long-polling when WebSocket is
//! refused, and says in the log what it found.
//!
//! It reports `Up` only once the Socket.IO connection to `/` is confirmed,
//! `Down` when it is lost, and every event: parsed into a room protocol
//! [`Message`], or `Malformed` with the reason. Events may carry no argument
//! or several (the original server sends `new_peer` bare).
//!
//! Keep-alive follows the protocol: under Engine.IO 3 the client pings every
//! `pingInterval` and expects a pong within `pingTimeout`; under 4 the server
//! pings and a connection without one for `pingInterval + pingTimeout` is
//! dead. Reconnection: our own capped, jittered exponential backoff, forever;
//! a failure is logged (with its cause and fix) when it first happens or
//! changes, and recovery once.

use futures_util::future::{BoxFuture, FutureExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::engineio::{Packet, Version};
use super::protocol::Message;
use super::socketio::{self, SioPacket};
use super::tls::{Tls, TrustSettings};
use super::transport::{self, Dialer, Endpoint, Kind, Opened, TransportError};
use super::{ConnectError, Signaling, SignalingError, SignalingEvent};
use crate::backoff::Backoff;

/// Which Engine.IO protocol to speak (`signaling.engine_io`: `"auto"`, `"3"`
/// or `"4"`; a bare 3 or 4 is accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineIo {
    /// Ask for 4; fall back to 3 when the server refuses it.
    #[default]
    Auto,
    V3,
    V4,
}

impl serde::Serialize for EngineIo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            EngineIo::Auto => "auto",
            EngineIo::V3 => "3",
            EngineIo::V4 => "4",
        })
    }
}

impl<'de> serde::Deserialize<'de> for EngineIo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(u64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(t) => t,
            Raw::Number(n) => n.to_string(),
        };
        match text.as_str() {
            "auto" => Ok(EngineIo::Auto),
            "3" => Ok(EngineIo::V3),
            "4" => Ok(EngineIo::V4),
            other => Err(serde::de::Error::custom(format!(
                "engine_io {other:?} is not \"auto\", \"3\" or \"4\""
            ))),
        }
    }
}

impl EngineIo {
    fn versions(self) -> &'static [Version] {
        match self {
            EngineIo::Auto => &[Version::V4, Version::V3],
            EngineIo::V3 => &[Version::V3],
            EngineIo::V4 => &[Version::V4],
        }
    }
}

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub url: String,
    pub engine_io: EngineIo,
    pub trust: TrustSettings,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

/// The wait before reconnection attempt `attempt` (0 is the first retry):
/// capped exponential backoff with ±20 % jitter ([`Backoff`]).
pub fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    Backoff::new(min, max, 0.2).wait(attempt.saturating_add(1))
}

/// How long the Socket.IO connection to `/` may take once Engine.IO is open.
const SOCKETIO_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a message may wait to be sent.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks the settings and makes the dialer; errors here can never heal.
fn dialer(settings: &ClientSettings) -> Result<Dialer, SignalingError> {
    let endpoint =
        Endpoint::parse(&settings.url).map_err(|e| SignalingError::Settings(e.to_string()))?;
    let tls = if endpoint.tls {
        let tls = Tls::new(&settings.trust).map_err(|e| SignalingError::Settings(e.to_string()))?;
        Some(Arc::new(tls))
    } else {
        None
    };
    Ok(Dialer { endpoint, tls })
}

/// The dialer for a server at `settings.url` used as a base (the seeds'
/// protocols: `/ws/device`, `/events/...` under it), with the same TLS
/// trust; the insecure flag is logged as a warning.
pub(crate) fn base_dialer(settings: &ClientSettings) -> Result<Dialer, SignalingError> {
    let endpoint =
        Endpoint::base(&settings.url).map_err(|e| SignalingError::Settings(e.to_string()))?;
    let tls = if endpoint.tls {
        let tls = Tls::new(&settings.trust).map_err(|e| SignalingError::Settings(e.to_string()))?;
        if tls.is_insecure() {
            tracing::warn!(
                url = %settings.url,
                "TLS certificate verification is OFF (signaling.insecure_skip_verify)"
            );
        }
        Some(Arc::new(tls))
    } else {
        None
    };
    Ok(Dialer { endpoint, tls })
}

/// A message on its way out, and who waits for the outcome.
struct Outgoing {
    packet: String,
    done: oneshot::Sender<Result<(), TransportError>>,
}

struct Shared {
    events: mpsc::Sender<SignalingEvent>,
    /// The live session's queue; `None` while down.
    outgoing: Mutex<Option<mpsc::Sender<Outgoing>>>,
    up: AtomicBool,
    url: String,
}

impl Shared {
    fn report(&self, event: SignalingEvent) {
        if self.events.try_send(event).is_err() {
            tracing::warn!("signaling event dropped: the call loop is not keeping up");
        }
    }
}

/// The connection to a Socket.IO room server.
pub struct SocketIoSignaling {
    shared: Arc<Shared>,
}

impl SocketIoSignaling {
    /// Starts connecting in the background; events arrive on `events`.
    /// Fails only on settings that can never work (a bad URL, CA file or pin).
    pub fn start(
        settings: ClientSettings,
        events: mpsc::Sender<SignalingEvent>,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, SignalingError> {
        let dialer = dialer(&settings)?;
        if dialer.tls.as_ref().is_some_and(|t| t.is_insecure()) {
            tracing::warn!(
                url = %settings.url,
                "TLS certificate verification is OFF (signaling.insecure_skip_verify): anyone on the path can read the calls' signaling; pin the server's certificate instead (signaling.pin_sha256)"
            );
        }
        let shared = Arc::new(Shared {
            events,
            outgoing: Mutex::new(None),
            up: AtomicBool::new(false),
            url: settings.url.clone(),
        });
        tokio::spawn(supervise(shared.clone(), dialer, settings, cancel));
        Ok(Arc::new(Self { shared }))
    }

    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Acquire)
    }
}

/// What one successful connection found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub version: Version,
    pub transport: Kind,
    /// How the certificate was trusted (`None` for `http://`).
    pub trust: Option<String>,
}

impl Found {
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} over {}",
            self.version.describe(),
            self.transport.describe()
        );
        if let Some(t) = &self.trust {
            s.push_str(", TLS ");
            s.push_str(t);
        }
        s
    }
}

/// Connects once, says what the server speaks, and disconnects (for
/// `doorbell check`).
pub async fn probe(settings: &ClientSettings) -> Result<Found, SignalingError> {
    let dialer = dialer(settings)?;
    let mut conn = connect(&dialer, settings.engine_io, None).await?;
    let found = conn.found(&dialer);
    conn.opened.writer.close().await;
    Ok(found)
}

/// An Engine.IO connection with Socket.IO connected to `/`.
struct Connection {
    opened: Opened,
    /// The version in use (it can differ from the one asked for when a server
    /// ignores `EIO`, see [`socketio_connect`]).
    version: Version,
    /// Packets that arrived with the connection and belong to the session.
    early: Vec<Packet>,
}

impl Connection {
    fn found(&self, dialer: &Dialer) -> Found {
        Found {
            version: self.version,
            transport: self.opened.kind,
            trust: dialer.tls.as_ref().map(|t| t.describe()),
        }
    }
}

/// Tries the versions (and transports) in turn until one connects.
async fn connect(
    dialer: &Dialer,
    choice: EngineIo,
    preferred: Option<(Version, Kind)>,
) -> Result<Connection, ConnectError> {
    let mut plan: Vec<(Version, Kind)> = choice
        .versions()
        .iter()
        .flat_map(|&v| [(v, Kind::WebSocket), (v, Kind::Polling)])
        .collect();
    if let Some(p) = preferred {
        if let Some(i) = plan.iter().position(|x| *x == p) {
            let first = plan.remove(i);
            plan.insert(0, first);
        }
    }
    let mut refused: Vec<(Version, TransportError)> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for (version, kind) in plan {
        if refused.iter().any(|(v, _)| *v == version) {
            continue;
        }
        let opened = match kind {
            Kind::WebSocket => transport::open_websocket(dialer, version).await,
            Kind::Polling => transport::open_polling(dialer, version).await,
        };
        match opened {
            Ok(opened) => match socketio_connect(opened).await {
                Ok(conn) => return Ok(conn),
                Err(e) => failures.push(format!(
                    "{} over {}: {e}",
                    version.describe(),
                    kind.describe()
                )),
            },
            Err(e) if e.is_final() => return Err(e.into()),
            Err(e) if e.is_version_refusal() => refused.push((version, e)),
            Err(e) => {
                tracing::debug!(
                    "Engine.IO {} over {} failed: {e}",
                    version.query(),
                    kind.describe()
                );
                failures.push(format!(
                    "Engine.IO {} over {}: {e}",
                    version.query(),
                    kind.describe()
                ));
            }
        }
    }
    if refused.len() == choice.versions().len() {
        let asked: Vec<&str> = refused.iter().map(|(v, _)| v.query()).collect();
        return Err(ConnectError::Refused {
            versions: asked.join(" and "),
            fixed: choice != EngineIo::Auto,
            error: refused.swap_remove(0).1,
        });
    }
    Err(ConnectError::Failed(failures))
}

/// Completes the Socket.IO connection to `/`.
///
/// Protocol 4 (Engine.IO 3): the server connects us by itself and says `0`.
/// Protocol 5 (Engine.IO 4): we ask with `0`; the server answers `0` with
/// our Socket.IO sid, or `4` with the reason. A server that answers a bare
/// `0` speaks protocol 4 whatever `EIO` it accepted (a socket.io 2.x server
/// does not check it), so the session runs as Engine.IO 3.
async fn socketio_connect(mut opened: Opened) -> Result<Connection, TransportError> {
    let mut version = opened.version;
    if version == Version::V4 {
        opened
            .writer
            .send(&[Packet::Message(socketio::encode_connect())])
            .await?;
    }
    let deadline = Instant::now() + SOCKETIO_CONNECT_TIMEOUT;
    let mut early = Vec::new();
    loop {
        let next = tokio::time::timeout_at(deadline, opened.incoming.recv())
            .await
            .map_err(|_| TransportError::Timeout {
                limit: SOCKETIO_CONNECT_TIMEOUT,
                what: "Socket.IO connect",
            })?
            .ok_or_else(|| TransportError::Broken("the connection ended".into()))??;
        match &next {
            Packet::Message(text) => match SioPacket::decode(text) {
                Ok(SioPacket::Connect { namespace, sid }) if namespace == "/" => {
                    if version == Version::V4 && sid.is_none() {
                        tracing::debug!("the server accepted EIO=4 but answers like Socket.IO protocol 4; using Engine.IO 3 rules");
                        version = Version::V3;
                    }
                    return Ok(Connection {
                        opened,
                        version,
                        early,
                    });
                }
                Ok(SioPacket::Error { message, .. }) => {
                    return Err(TransportError::Protocol(format!(
                        "the server refused the Socket.IO connection: {message}"
                    )))
                }
                _ => early.push(next),
            },
            Packet::Ping(data) => {
                // Engine.IO 4 servers ping; answer even before Socket.IO is up.
                let pong = Packet::Pong(data.clone());
                opened.writer.send(&[pong]).await?;
            }
            Packet::Close => {
                return Err(TransportError::Broken(
                    "the server closed the connection".into(),
                ))
            }
            _ => {}
        }
    }
}

async fn supervise(
    shared: Arc<Shared>,
    dialer: Dialer,
    settings: ClientSettings,
    cancel: CancellationToken,
) {
    let mut attempt = 0u32;
    let mut last_failure: Option<String> = None;
    let mut last_found: Option<Found> = None;
    let mut preferred = None;
    loop {
        let connected = tokio::select! {
            r = connect(&dialer, settings.engine_io, preferred) => r,
            _ = cancel.cancelled() => return,
        };
        match connected {
            Ok(conn) => {
                attempt = 0;
                let found = conn.found(&dialer);
                preferred = Some((found.version, found.transport));
                if last_found.as_ref() != Some(&found) || last_failure.is_some() {
                    tracing::info!(url = %shared.url, "connected to the signaling server: it speaks {}", found.describe());
                } else {
                    tracing::info!(url = %shared.url, "reconnected to the signaling server");
                }
                last_found = Some(found);
                last_failure = None;
                let why = run_session(&shared, conn, &cancel).await;
                if cancel.is_cancelled() {
                    return;
                }
                tracing::warn!(url = %shared.url, "lost the signaling server ({why}); reconnecting");
            }
            Err(e) => {
                let e = e.to_string();
                if last_failure.as_deref() != Some(e.as_str()) {
                    tracing::warn!(url = %shared.url, "cannot reach the signaling server: {e}; retrying with backoff");
                } else {
                    tracing::debug!(url = %shared.url, "signaling connect attempt failed: {e}");
                }
                last_failure = Some(e);
            }
        }
        let wait = backoff(attempt, settings.reconnect_min, settings.reconnect_max);
        attempt = attempt.saturating_add(1);
        tracing::debug!(attempt, ?wait, "signaling reconnect backoff");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// Runs one connected session until it ends; returns why it ended.
async fn run_session(shared: &Arc<Shared>, conn: Connection, cancel: &CancellationToken) -> String {
    let Connection {
        mut opened,
        version,
        early,
    } = conn;
    let (tx, mut outgoing) = mpsc::channel::<Outgoing>(64);
    *shared.outgoing.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    shared.up.store(true, Ordering::Release);
    shared.report(SignalingEvent::Up);

    let hs = opened.handshake.clone();
    // Engine.IO 3: our ping is due at `next_ping`, its pong by `pong_due`.
    // Engine.IO 4: the server's next ping must come by `ping_due`.
    let mut next_ping = Instant::now() + hs.ping_interval;
    let mut pong_due: Option<Instant> = None;
    let mut ping_due = Instant::now() + hs.ping_interval + hs.ping_timeout;
    let mut backlog: std::collections::VecDeque<Packet> = early.into();

    let why = loop {
        let heartbeat = match version {
            Version::V3 => pong_due.unwrap_or(next_ping),
            Version::V4 => ping_due,
        };
        let packet = if let Some(p) = backlog.pop_front() {
            Ok(p)
        } else {
            tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        opened.writer.send(&[Packet::Message(socketio::encode_disconnect())]),
                    ).await;
                    opened.writer.close().await;
                    break "stopping".to_string();
                }
                Some(first) = outgoing.recv() => {
                    // Everything queued goes in one write (one POST when polling).
                    let mut batch = vec![first];
                    while let Ok(more) = outgoing.try_recv() {
                        batch.push(more);
                    }
                    let packets: Vec<Packet> =
                        batch.iter().map(|o| Packet::Message(o.packet.clone())).collect();
                    let result = opened.writer.send(&packets).await;
                    let failed = result.clone().err();
                    for o in batch {
                        let _ = o.done.send(result.clone());
                    }
                    if let Some(e) = failed {
                        break format!("sending failed: {e}");
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(heartbeat) => {
                    match version {
                        Version::V3 if pong_due.is_some() => {
                            break format!("no pong within {} s", hs.ping_timeout.as_secs());
                        }
                        Version::V3 => {
                            if let Err(e) = opened.writer.send(&[Packet::Ping(String::new())]).await {
                                break format!("ping failed: {e}");
                            }
                            pong_due = Some(Instant::now() + hs.ping_timeout);
                            continue;
                        }
                        Version::V4 => {
                            break format!(
                                "no ping from the server for {} s",
                                (hs.ping_interval + hs.ping_timeout).as_secs()
                            );
                        }
                    }
                }
                next = opened.incoming.recv() => match next {
                    Some(p) => p,
                    None => break "the connection ended".to_string(),
                },
            }
        };
        let packet = match packet {
            Ok(p) => p,
            Err(e) => break e.to_string(),
        };
        match packet {
            Packet::Ping(data) => {
                ping_due = Instant::now() + hs.ping_interval + hs.ping_timeout;
                if let Err(e) = opened.writer.send(&[Packet::Pong(data)]).await {
                    break format!("pong failed: {e}");
                }
            }
            Packet::Pong(_) => {
                if pong_due.take().is_some() {
                    next_ping = Instant::now() + hs.ping_interval;
                }
            }
            Packet::Message(text) => match SioPacket::decode(&text) {
                Ok(SioPacket::Event {
                    namespace,
                    name,
                    args,
                    ack,
                }) if namespace == "/" => {
                    if let Some(id) = ack {
                        let reply = Packet::Message(socketio::encode_ack(id));
                        if let Err(e) = opened.writer.send(&[reply]).await {
                            break format!("acknowledging failed: {e}");
                        }
                    }
                    shared.report(match Message::parse(&name, &args) {
                        Ok(m) => SignalingEvent::Message(m),
                        Err(e) => SignalingEvent::Malformed(e.to_string()),
                    });
                }
                Ok(SioPacket::Disconnect { namespace }) if namespace == "/" => {
                    break "the server ended the Socket.IO session".to_string();
                }
                Ok(SioPacket::Error { message, .. }) => {
                    tracing::warn!("the signaling server reported an error: {message}");
                }
                Ok(other) => tracing::debug!("ignored Socket.IO packet {other:?}"),
                Err(e) => shared.report(SignalingEvent::Malformed(e.to_string())),
            },
            Packet::Binary(_) => shared.report(SignalingEvent::Malformed(
                "a binary message (the room protocol has none)".into(),
            )),
            Packet::Close => break "the server closed the connection".to_string(),
            Packet::Open(_) | Packet::Upgrade | Packet::Noop => {}
        }
    };
    shared.up.store(false, Ordering::Release);
    *shared.outgoing.lock().unwrap_or_else(|p| p.into_inner()) = None;
    if !cancel.is_cancelled() {
        shared.report(SignalingEvent::Down);
    }
    why
}

impl Signaling for SocketIoSignaling {
    fn send(&self, msg: Message) -> BoxFuture<'static, Result<(), SignalingError>> {
        let shared = self.shared.clone();
        async move {
            let queue = shared
                .outgoing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .ok_or(SignalingError::NotConnected)?;
            let arg = msg.argument();
            let args = if arg.is_null() { vec![] } else { vec![arg] };
            let (done, outcome) = oneshot::channel();
            let out = Outgoing {
                packet: socketio::encode_event(msg.event(), &args),
                done,
            };
            let sent = async {
                queue
                    .send(out)
                    .await
                    .map_err(|_| SignalingError::NotConnected)?;
                match outcome.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(SignalingError::Send(format!("{}: {e}", msg.event()))),
                    Err(_) => Err(SignalingError::NotConnected),
                }
            };
            match tokio::time::timeout(SEND_TIMEOUT, sent).await {
                Ok(r) => r,
                Err(_) => Err(SignalingError::Send(format!(
                    "{}: no progress in {} s",
                    msg.event(),
                    SEND_TIMEOUT.as_secs()
                ))),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(30));
        let b0 = backoff(0, min, max);
        assert!(
            b0 >= Duration::from_millis(800) && b0 <= Duration::from_millis(1200),
            "{b0:?}"
        );
        let b3 = backoff(3, min, max);
        assert!(
            b3 >= Duration::from_millis(6400) && b3 <= Duration::from_millis(9600),
            "{b3:?}"
        );
        for attempt in [10, 31, 1000, u32::MAX] {
            assert!(backoff(attempt, min, max) <= max);
            assert!(backoff(attempt, min, max) >= max.mul_f64(0.8));
        }
    }

    #[test]
    fn settings_that_can_never_work_fail_at_start() {
        let s = |url: &str, pin: &str| ClientSettings {
            url: url.into(),
            engine_io: EngineIo::Auto,
            trust: TrustSettings {
                pin_sha256: if pin.is_empty() {
                    vec![]
                } else {
                    vec![pin.into()]
                },
                ..Default::default()
            },
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(2),
        };
        assert!(dialer(&s("ftp://x", "")).is_err());
        let e = dialer(&s("https://x", "12:34")).unwrap_err().to_string();
        assert!(e.contains("not a SHA-256 fingerprint"), "{e}");
        // Plain HTTP never builds TLS, so a pin there is not an error.
        assert!(dialer(&s("http://x", "")).unwrap().tls.is_none());
    }
}
