//! Seed 002's device socket: the doorbell as one device of a camera fleet.
//!
//! A persistent WebSocket to `<signaling.url>/ws/device` (`wss` for
//! `https`, with the same TLS trust as the room protocol). `hello` with
//! `signaling.device_id` goes first and nothing else leaves before
//! `hello_ack`; `heartbeat` every `signaling.heartbeat`; a connection lost
//! is opened again with exponential backoff and jitter. Close code 1008 (the
//! server does not know this device) stops the retries and tells the owner:
//! retrying cannot help until someone registers the device.
//!
//! The server opens one session per viewer (`watch_request`, with the ICE
//! servers for it); the viewer offers, we answer (`signal_answer`), and
//! candidates trickle both ways (`signal_ice`, `null` ending them). In the
//! seam's vocabulary a session is a [`ViewerId`]: `watch_request` is
//! `new_peer`, `signal_offer` is `invite`, `watch_ended` is `bye`.
//! `device_presence` tells the server what is true: uptime, the CPU
//! temperature when the system has a sensor, whether a call is on.
//!
//! [`decode`] and [`encode`] are pure; [`DeviceWsSignaling`] runs the socket.

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use super::client::{backoff, base_dialer, ClientSettings};
use super::protocol::{IceCandidate, Message, SessionDescription};
use super::transport::{self, Dialer};
use super::{ConnectError, Signaling, SignalingError, SignalingEvent, ViewerId};
use crate::call::command::StateKind;
use crate::peer::IceServer;

/// Largest message taken from the server (an offer is a few kB).
const MAX_MESSAGE: usize = 256 * 1024;
/// How long the server has to answer `hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most sessions remembered at once (their ICE servers).
const MAX_SESSIONS: usize = 16;
/// Longest session id or device id taken.
const MAX_ID: usize = 128;

/// How to reach the server, and who we are.
#[derive(Debug, Clone)]
pub struct DeviceWsSettings {
    /// URL, TLS trust and reconnect bounds, as for the room protocol.
    pub client: ClientSettings,
    pub device_id: String,
    pub heartbeat: Duration,
}

/// What the server sends the device.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    HelloAck,
    HeartbeatAck,
    WatchRequest {
        session: String,
        user: Option<String>,
        ice_servers: Vec<IceServer>,
    },
    Offer {
        session: String,
        sdp: String,
    },
    Ice {
        session: String,
        candidate: Option<IceCandidate>,
    },
    WatchEnded {
        session: String,
        reason: String,
    },
    Error {
        request_id: Option<String>,
        message: String,
    },
}

/// One seed-002 message, as both ends read it: `{type, request_id?, ts,
/// payload}` with `type` a string and `payload` an object (absent or null
/// read as empty). `ts` is not required here: the seed shows it on every
/// message, but nothing depends on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub kind: String,
    pub request_id: Option<String>,
    pub payload: Map<String, Value>,
}

/// Reads the envelope of one message; the payload's fields are the
/// caller's to check.
pub fn envelope(text: &str) -> Result<Envelope, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut obj) = v else {
        return Err("not a JSON object".into());
    };
    let kind = match obj.remove("type") {
        Some(Value::String(k)) => k,
        _ => return Err("no string `type`".into()),
    };
    let payload = match obj.remove("payload") {
        Some(Value::Object(p)) => p,
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(format!("{}: `payload` is not an object", clip(&kind))),
    };
    let request_id = match obj.remove("request_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) if r.len() <= MAX_ID && !r.chars().any(char::is_control) => Some(r),
        Some(_) => return Err(format!("{}: unusable request_id", clip(&kind))),
    };
    Ok(Envelope {
        kind,
        request_id,
        payload,
    })
}

/// Writes one message: `type`, `request_id` when there is one, `ts`, `payload`.
pub fn write(kind: &str, request_id: Option<&str>, payload: Value, ts: &str) -> String {
    let mut m = json!({ "type": kind, "ts": ts, "payload": payload });
    if let Some(r) = request_id {
        m["request_id"] = json!(r);
    }
    m.to_string()
}

/// Whether `id` can be a device or session id: 1 to 128 characters, no
/// control characters.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID && !id.chars().any(char::is_control)
}

/// Reads one message from the server. Every field is checked; a message
/// that is not what the seed says is an error, never a panic.
pub fn decode(text: &str) -> Result<Incoming, String> {
    let Envelope {
        kind,
        request_id,
        payload,
    } = envelope(text)?;
    let kind = kind.as_str();
    let payload = &payload;
    let session = || -> Result<String, String> {
        let s = payload
            .get("session_id")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{kind}: no session_id"))?;
        if !valid_id(s) {
            return Err(format!("{kind}: unusable session_id"));
        }
        Ok(s.to_string())
    };
    Ok(match kind {
        "hello_ack" => Incoming::HelloAck,
        "heartbeat_ack" => Incoming::HeartbeatAck,
        "watch_request" => Incoming::WatchRequest {
            session: session()?,
            user: payload.get("user_id").map(|u| match u {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
            ice_servers: match payload.get("ice_servers") {
                None | Some(Value::Null) => Vec::new(),
                Some(v) => ice_servers(v).map_err(|e| format!("{kind}: ice_servers: {e}"))?,
            },
        },
        "signal_offer" => {
            let sdp = match payload.get("sdp") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(d)) => {
                    if let Some(t) = d.get("type").and_then(Value::as_str) {
                        if t != "offer" {
                            return Err(format!("{kind}: an SDP of type {t:?}, not an offer"));
                        }
                    }
                    d.get("sdp")
                        .and_then(Value::as_str)
                        .ok_or_else(|| format!("{kind}: no sdp.sdp"))?
                        .to_string()
                }
                _ => return Err(format!("{kind}: no sdp")),
            };
            Incoming::Offer {
                session: session()?,
                sdp,
            }
        }
        "signal_ice" => Incoming::Ice {
            session: session()?,
            candidate: match payload.get("candidate") {
                None | Some(Value::Null) => None,
                Some(c) => candidate(c).map_err(|e| format!("{kind}: {e}"))?,
            },
        },
        "watch_ended" => Incoming::WatchEnded {
            session: session()?,
            reason: payload
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .chars()
                .take(64)
                .collect(),
        },
        "error" => Incoming::Error {
            request_id,
            message: payload
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)")
                .chars()
                .take(300)
                .collect(),
        },
        other => return Err(format!("unknown message type {:?}", clip(other))),
    })
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// A candidate as browsers write it (`RTCIceCandidateInit`); an empty
/// `candidate` string is the end of candidates, like `null`.
pub fn candidate(v: &Value) -> Result<Option<IceCandidate>, String> {
    let o = v.as_object().ok_or("candidate is not an object")?;
    let line = o
        .get("candidate")
        .and_then(Value::as_str)
        .ok_or("candidate has no candidate string")?;
    if line.is_empty() {
        return Ok(None);
    }
    Ok(Some(IceCandidate {
        candidate: line.to_string(),
        sdp_mid: o.get("sdpMid").and_then(Value::as_str).map(str::to_string),
        sdp_mline_index: o
            .get("sdpMLineIndex")
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok()),
        username_fragment: o
            .get("usernameFragment")
            .and_then(Value::as_str)
            .map(str::to_string),
    }))
}

/// ICE servers as `RTCIceServer` writes them: `urls` a string or a list.
pub fn ice_servers(v: &Value) -> Result<Vec<IceServer>, String> {
    let list = v.as_array().ok_or("not a list")?;
    list.iter()
        .take(8)
        .map(|s| {
            let o = s.as_object().ok_or("an entry is not an object")?;
            let urls = match o.get("urls").or_else(|| o.get("url")) {
                Some(Value::String(u)) => vec![u.clone()],
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|u| {
                        u.as_str()
                            .map(str::to_string)
                            .ok_or("a url is not a string")
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => return Err("an entry has no urls".to_string()),
            };
            let text = |k: &str| {
                o.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            Ok(IceServer {
                urls,
                username: text("username"),
                credential: text("credential"),
            })
        })
        .collect()
}

/// What the device sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    Hello {
        device_id: String,
    },
    Heartbeat,
    Answer {
        session: String,
        sdp: String,
    },
    Ice {
        session: String,
        candidate: Option<IceCandidate>,
    },
    Presence(Value),
}

/// Writes one message, stamped with `ts` (ISO 8601, UTC, milliseconds).
pub fn encode(message: &Outgoing, ts: &str) -> String {
    let (kind, payload) = match message {
        Outgoing::Hello { device_id } => ("hello", json!({ "device_id": device_id })),
        Outgoing::Heartbeat => ("heartbeat", json!({})),
        Outgoing::Answer { session, sdp } => (
            "signal_answer",
            json!({ "session_id": session, "sdp": { "type": "answer", "sdp": sdp } }),
        ),
        Outgoing::Ice { session, candidate } => (
            "signal_ice",
            json!({
                "session_id": session,
                "candidate": candidate.as_ref().map(|c| {
                    let mut o = json!({
                        "candidate": c.candidate.trim_start_matches("a="),
                        "sdpMid": c.sdp_mid,
                        "sdpMLineIndex": c.sdp_mline_index,
                    });
                    if let Some(u) = &c.username_fragment {
                        o["usernameFragment"] = json!(u);
                    }
                    o
                }),
            }),
        ),
        Outgoing::Presence(p) => ("device_presence", p.clone()),
    };
    write(kind, None, payload, ts)
}

/// ICE servers as `RTCIceServer` entries, as the seed writes them: `urls`
/// a list, `username`, `credential` and `credentialType` only with
/// credentials.
pub fn ice_servers_json(servers: &[IceServer]) -> Value {
    Value::Array(
        servers
            .iter()
            .map(|s| {
                let mut o = json!({ "urls": s.urls });
                if !s.username.is_empty() || !s.credential.is_empty() {
                    o["username"] = json!(s.username);
                    o["credential"] = json!(s.credential);
                    o["credentialType"] = json!("password");
                }
                o
            })
            .collect(),
    )
}

/// Now as ISO 8601 UTC with milliseconds (`2025-01-01T12:34:56.789Z`).
pub fn timestamp() -> String {
    let ms = crate::media::unix_ms();
    iso8601(ms)
}

fn iso8601(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// The CPU temperature in °C, from the first thermal zone, when there is one.
fn cpu_temperature() -> Option<f64> {
    let text = std::fs::read_to_string("/sys/class/thermal/thermal_zone0/temp").ok()?;
    let milli: f64 = text.trim().parse().ok()?;
    Some((milli / 100.0).round() / 10.0)
}

struct Shared {
    events: mpsc::Sender<SignalingEvent>,
    /// The authenticated connection's queue; `None` before `hello_ack`.
    outgoing: Mutex<Option<mpsc::Sender<Outgoing>>>,
    up: AtomicBool,
    /// The ICE servers each open session came with.
    sessions: Mutex<HashMap<String, Vec<IceServer>>>,
    /// Whether a call is on, for `device_presence`.
    call_on: AtomicBool,
    started: Instant,
}

impl Shared {
    fn report(&self, event: SignalingEvent) {
        if self.events.try_send(event).is_err() {
            tracing::warn!("signaling event dropped: the call loop is not keeping up");
        }
    }

    fn presence(&self) -> Outgoing {
        let mut p = json!({
            "uptime_s": self.started.elapsed().as_secs(),
            "in_call": self.call_on.load(Ordering::Relaxed),
        });
        if let Some(t) = cpu_temperature() {
            p["temperature"] = json!(t);
        }
        Outgoing::Presence(p)
    }

    fn queue(&self, message: Outgoing) -> Result<(), SignalingError> {
        let tx = self
            .outgoing
            .lock()
            .expect("outgoing lock")
            .clone()
            .ok_or(SignalingError::NotConnected)?;
        tx.try_send(message)
            .map_err(|e| SignalingError::Send(format!("the send queue is full or closed: {e}")))
    }
}

/// The device's connection to a seed-002 server.
pub struct DeviceWsSignaling {
    shared: Arc<Shared>,
}

impl DeviceWsSignaling {
    /// Starts connecting in the background; events arrive on `events`.
    /// Fails only on settings that can never work.
    pub fn start(
        settings: DeviceWsSettings,
        events: mpsc::Sender<SignalingEvent>,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, SignalingError> {
        let dialer = base_dialer(&settings.client)?;
        let shared = Arc::new(Shared {
            events,
            outgoing: Mutex::new(None),
            up: AtomicBool::new(false),
            sessions: Mutex::new(HashMap::new()),
            call_on: AtomicBool::new(false),
            started: Instant::now(),
        });
        tokio::spawn(supervise(shared.clone(), dialer, settings, cancel));
        Ok(Arc::new(Self { shared }))
    }

    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Acquire)
    }
}

impl Signaling for DeviceWsSignaling {
    /// The room vocabulary has nothing to say here: there are no rooms
    /// (`join` and `bye` are not sent by a machine without them).
    fn send(&self, msg: Message) -> BoxFuture<'static, Result<(), SignalingError>> {
        let what = msg.to_string();
        Box::pin(async move {
            tracing::debug!("not sent on the device socket (no rooms): {what}");
            Ok(())
        })
    }

    fn send_to(
        &self,
        viewer: &ViewerId,
        msg: Message,
    ) -> BoxFuture<'static, Result<(), SignalingError>> {
        let session = viewer.0.clone();
        let out = match msg {
            Message::Ok(answer) => Ok(Outgoing::Answer {
                session,
                sdp: answer.sdp,
            }),
            Message::IceCandidate(candidate) => Ok(Outgoing::Ice { session, candidate }),
            other => Err(SignalingError::Send(format!(
                "{other}: the device socket has no such message"
            ))),
        };
        let result = out.and_then(|m| self.shared.queue(m));
        Box::pin(async move { result })
    }

    fn ice_servers(&self, viewer: &ViewerId) -> Option<Vec<IceServer>> {
        self.shared
            .sessions
            .lock()
            .expect("sessions lock")
            .get(&viewer.0)
            .cloned()
    }

    fn call_state(&self, state: StateKind) {
        let on = state != StateKind::Idle;
        if self.shared.call_on.swap(on, Ordering::Relaxed) != on {
            let _ = self.shared.queue(self.shared.presence());
        }
    }
}

/// How one connection ended.
enum Ended {
    /// Try again after the backoff.
    Retry(String),
    /// The server does not know this device: retrying cannot help.
    Refused(String),
    Cancelled,
}

async fn supervise(
    shared: Arc<Shared>,
    dialer: Dialer,
    settings: DeviceWsSettings,
    cancel: CancellationToken,
) {
    let url = dialer.endpoint.ws_url_at("ws/device");
    let mut failures: u32 = 0;
    loop {
        let ended = tokio::select! {
            _ = cancel.cancelled() => Ended::Cancelled,
            e = connection(&shared, &dialer, &settings, &mut failures) => e,
        };
        let was_up = shared.up.swap(false, Ordering::AcqRel);
        *shared.outgoing.lock().expect("outgoing lock") = None;
        shared.sessions.lock().expect("sessions lock").clear();
        if was_up {
            shared.report(SignalingEvent::Down);
        }
        match ended {
            Ended::Cancelled => return,
            Ended::Refused(why) => {
                tracing::error!(%url, "{why}; not trying again (restart the doorbell once the server knows the device)");
                shared.report(SignalingEvent::Refused(why));
                return;
            }
            Ended::Retry(why) => {
                let wait = backoff(
                    failures,
                    settings.client.reconnect_min,
                    settings.client.reconnect_max,
                );
                failures = failures.saturating_add(1);
                if was_up {
                    tracing::warn!(%url, "signaling connection lost: {why}; again in {wait:?}");
                } else {
                    tracing::warn!(%url, "cannot connect: {why}; again in {wait:?}");
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

fn close_reason(frame: Option<&tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> String {
    match frame {
        Some(f) if f.reason.is_empty() => {
            format!("the server closed the socket ({})", u16::from(f.code))
        }
        Some(f) => format!(
            "the server closed the socket ({} {})",
            u16::from(f.code),
            clip(&f.reason)
        ),
        None => "the server closed the socket".into(),
    }
}

type Socket = tokio_tungstenite::WebSocketStream<transport::Stream>;

/// Opens the socket and says hello; done once the server acknowledged it.
async fn greet(dialer: &Dialer, device_id: &str) -> Result<Socket, Ended> {
    let mut ws = transport::websocket(dialer, "ws/device", MAX_MESSAGE)
        .await
        .map_err(|e| Ended::Retry(e.to_string()))?;
    let hello = Outgoing::Hello {
        device_id: device_id.to_string(),
    };
    ws.send(WsMessage::Text(encode(&hello, &timestamp()).into()))
        .await
        .map_err(|e| Ended::Retry(format!("sending hello: {e}")))?;
    // Nothing but hello until the server acknowledges it.
    let acked = tokio::time::timeout(HELLO_TIMEOUT, async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Text(t))) => match decode(t.as_str()) {
                    Ok(Incoming::HelloAck) => return Ok(()),
                    Ok(Incoming::Error {
                        request_id,
                        message,
                    }) => log_server_error(request_id, &message),
                    Ok(other) => {
                        tracing::warn!("before hello_ack the server sent {other:?}; ignored")
                    }
                    Err(e) => tracing::warn!("ignored a malformed message: {e}"),
                },
                Some(Ok(WsMessage::Close(frame))) => return Err(closed(frame.as_ref())),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(Ended::Retry(e.to_string())),
                None => return Err(Ended::Retry("the socket ended before hello_ack".into())),
            }
        }
    })
    .await;
    match acked {
        Err(_) => Err(Ended::Retry(format!(
            "no hello_ack within {HELLO_TIMEOUT:?}"
        ))),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => Ok(ws),
    }
}

/// Connects once, says hello, and disconnects (for `doorbell check`).
pub async fn probe(settings: &DeviceWsSettings) -> Result<String, SignalingError> {
    let dialer = base_dialer(&settings.client)?;
    let trust = dialer.tls.as_ref().map(|t| t.describe());
    match greet(&dialer, &settings.device_id).await {
        Ok(mut ws) => {
            let _ = ws.close(None).await;
            let mut s = format!("seed 002 device socket, {:?} accepted", settings.device_id);
            if let Some(t) = trust {
                s.push_str(", TLS ");
                s.push_str(&t);
            }
            Ok(s)
        }
        Err(Ended::Refused(why) | Ended::Retry(why)) => {
            Err(SignalingError::Unreachable(ConnectError::Failed(vec![why])))
        }
        Err(Ended::Cancelled) => Err(SignalingError::NotConnected),
    }
}

/// One connection: hello, then messages until it ends.
async fn connection(
    shared: &Arc<Shared>,
    dialer: &Dialer,
    settings: &DeviceWsSettings,
    failures: &mut u32,
) -> Ended {
    let (mut sink, mut stream) = match greet(dialer, &settings.device_id).await {
        Ok(ws) => ws.split(),
        Err(e) => return e,
    };
    *failures = 0;
    let (tx, mut rx) = mpsc::channel::<Outgoing>(64);
    let _ = tx.try_send(shared.presence());
    *shared.outgoing.lock().expect("outgoing lock") = Some(tx);
    shared.up.store(true, Ordering::Release);
    shared.report(SignalingEvent::Up);
    tracing::info!(
        device = %settings.device_id,
        "connected to the signaling server as a device"
    );

    let mut heartbeat = tokio::time::interval(settings.heartbeat);
    heartbeat.reset();
    // Anything from the server proves the connection; silence for two
    // heartbeats and a half does not.
    let silence = settings.heartbeat * 5 / 2;
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            Some(out) = rx.recv() => {
                let text = encode(&out, &timestamp());
                if let Err(e) = sink.send(WsMessage::Text(text.into())).await {
                    return Ended::Retry(format!("sending: {e}"));
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > silence {
                    let _ = sink.close().await;
                    return Ended::Retry(format!("nothing from the server for {silence:?}"));
                }
                let text = encode(&Outgoing::Heartbeat, &timestamp());
                if let Err(e) = sink.send(WsMessage::Text(text.into())).await {
                    return Ended::Retry(format!("sending heartbeat: {e}"));
                }
            }
            item = stream.next() => {
                last_heard = tokio::time::Instant::now();
                match item {
                    Some(Ok(WsMessage::Text(t))) => handle(shared, t.as_str()),
                    Some(Ok(WsMessage::Close(frame))) => return closed(frame.as_ref()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Ended::Retry(e.to_string()),
                    None => return Ended::Retry("the socket ended".into()),
                }
            }
        }
    }
}

fn closed(frame: Option<&tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> Ended {
    let why = close_reason(frame);
    match frame.map(|f| f.code) {
        Some(CloseCode::Policy) => Ended::Refused(format!(
            "{why}: the server does not accept this device (check signaling.device_id)"
        )),
        _ => Ended::Retry(why),
    }
}

fn log_server_error(request_id: Option<String>, message: &str) {
    match request_id {
        Some(r) => tracing::warn!(request_id = %r, "the signaling server reports: {message}"),
        None => tracing::warn!("the signaling server reports: {message}"),
    }
}

/// One message from the server, into the seam's vocabulary.
fn handle(shared: &Shared, text: &str) {
    let incoming = match decode(text) {
        Ok(m) => m,
        Err(e) => return shared.report(SignalingEvent::Malformed(e)),
    };
    let to_call = |session: String, message: Message| {
        shared.report(SignalingEvent::FromViewer {
            viewer: ViewerId(session),
            message,
        })
    };
    match incoming {
        Incoming::HelloAck | Incoming::HeartbeatAck => {}
        Incoming::WatchRequest {
            session,
            user,
            ice_servers,
        } => {
            tracing::info!(
                session = %session,
                user = user.as_deref().unwrap_or("?"),
                ice_servers = ice_servers.len(),
                "a viewer asks to watch"
            );
            {
                let mut sessions = shared.sessions.lock().expect("sessions lock");
                if sessions.len() >= MAX_SESSIONS {
                    sessions.clear();
                }
                sessions.insert(session.clone(), ice_servers);
            }
            to_call(session, Message::NewPeer(None));
        }
        Incoming::Offer { session, sdp } => {
            to_call(session, Message::Invite(SessionDescription::offer(sdp)))
        }
        Incoming::Ice { session, candidate } => to_call(session, Message::IceCandidate(candidate)),
        Incoming::WatchEnded { session, reason } => {
            tracing::info!(session = %session, reason = %reason, "the watch ended");
            shared
                .sessions
                .lock()
                .expect("sessions lock")
                .remove(&session);
            to_call(session, Message::Bye(None));
        }
        Incoming::Error {
            request_id,
            message,
        } => log_server_error(request_id, &message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso_8601_utc_with_milliseconds() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_735_734_896_789), "2025-01-01T12:34:56.789Z");
        assert_eq!(iso8601(951_782_400_001), "2000-02-29T00:00:00.001Z");
        assert_eq!(timestamp().len(), 24);
    }

    #[test]
    fn the_seeds_examples_decode() {
        let w = decode(
            r#"{"type":"watch_request","ts":"2025-01-01T12:36:00.000Z","payload":{
            "session_id":"550e8400-e29b-41d4-a716-446655440000","user_id":"123",
            "ice_servers":[{"urls":"stun:stun.l.google.com:19302"},
              {"urls":["turn:turn.example.com:3478?transport=udp","turn:turn.example.com:3478?transport=tcp"],
               "username":"1735740000:device_550e8400","credential":"a1b2","credentialType":"password"}]}}"#,
        )
        .unwrap();
        let Incoming::WatchRequest {
            session,
            user,
            ice_servers,
        } = w
        else {
            panic!("{w:?}")
        };
        assert_eq!(session, "550e8400-e29b-41d4-a716-446655440000");
        assert_eq!(user.as_deref(), Some("123"));
        assert_eq!(ice_servers.len(), 2);
        assert_eq!(ice_servers[0].urls, ["stun:stun.l.google.com:19302"]);
        assert_eq!(ice_servers[1].urls.len(), 2);
        assert_eq!(ice_servers[1].credential, "a1b2");
        assert_eq!(
            decode(
                r#"{"type":"signal_offer","ts":"x","payload":{"session_id":"s","sdp":{"type":"offer","sdp":"v=0\r\n"}}}"#
            ),
            Ok(Incoming::Offer {
                session: "s".into(),
                sdp: "v=0\r\n".into()
            })
        );
        assert_eq!(
            decode(
                r#"{"type":"signal_ice","ts":"x","payload":{"session_id":"s","candidate":null}}"#
            ),
            Ok(Incoming::Ice {
                session: "s".into(),
                candidate: None
            })
        );
        let Ok(Incoming::Ice {
            candidate: Some(c), ..
        }) = decode(
            r#"{"type":"signal_ice","ts":"x","payload":{"session_id":"s","candidate":{"candidate":"candidate:1 1 UDP 2130706431 192.168.1.100 54321 typ host","sdpMid":"0","sdpMLineIndex":0}}}"#,
        )
        else {
            panic!()
        };
        assert_eq!(c.sdp_mid.as_deref(), Some("0"));
        assert_eq!(c.sdp_mline_index, Some(0));
        assert_eq!(
            decode(
                r#"{"type":"watch_ended","ts":"x","payload":{"session_id":"s","reason":"viewer_disconnected"}}"#
            ),
            Ok(Incoming::WatchEnded {
                session: "s".into(),
                reason: "viewer_disconnected".into()
            })
        );
        assert_eq!(
            decode(
                r#"{"type":"error","request_id":"req-001","ts":"x","payload":{"message":"Device is offline"}}"#
            ),
            Ok(Incoming::Error {
                request_id: Some("req-001".into()),
                message: "Device is offline".into()
            })
        );
        assert_eq!(
            decode(
                r#"{"type":"hello_ack","ts":"x","payload":{"device_id":"d","server_time":"x"}}"#
            ),
            Ok(Incoming::HelloAck)
        );
    }

    #[test]
    fn bad_messages_are_errors() {
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"type":5}"#,
            r#"{"type":"signal_offer","payload":{"session_id":"s"}}"#,
            r#"{"type":"signal_offer","payload":{"session_id":"s","sdp":{"type":"answer","sdp":"v=0"}}}"#,
            r#"{"type":"signal_ice","payload":{"candidate":null}}"#,
            r#"{"type":"signal_ice","payload":{"session_id":"","candidate":null}}"#,
            r#"{"type":"watch_request","payload":{"session_id":"s","ice_servers":{}}}"#,
            r#"{"type":"watch_request","payload":"x"}"#,
            r#"{"type":"reboot","payload":{}}"#,
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn what_the_device_sends_has_the_seeds_shape() {
        let v: Value = serde_json::from_str(&encode(
            &Outgoing::Hello {
                device_id: "kitchen-cam-001".into(),
            },
            "2025-01-01T12:34:56.789Z",
        ))
        .unwrap();
        assert_eq!(
            v,
            json!({"type":"hello","ts":"2025-01-01T12:34:56.789Z","payload":{"device_id":"kitchen-cam-001"}})
        );
        let v: Value = serde_json::from_str(&encode(
            &Outgoing::Answer {
                session: "s".into(),
                sdp: "v=0\r\n".into(),
            },
            "t",
        ))
        .unwrap();
        assert_eq!(v["type"], "signal_answer");
        assert_eq!(
            v["payload"],
            json!({"session_id":"s","sdp":{"type":"answer","sdp":"v=0\r\n"}})
        );
        let end: Value = serde_json::from_str(&encode(
            &Outgoing::Ice {
                session: "s".into(),
                candidate: None,
            },
            "t",
        ))
        .unwrap();
        assert_eq!(end["payload"], json!({"session_id":"s","candidate":null}));
        let c: Value = serde_json::from_str(&encode(
            &Outgoing::Ice {
                session: "s".into(),
                candidate: Some(IceCandidate {
                    candidate: "a=candidate:1 1 udp 1 127.0.0.1 5 typ host".into(),
                    sdp_mid: Some("0".into()),
                    sdp_mline_index: Some(0),
                    username_fragment: None,
                }),
            },
            "t",
        ))
        .unwrap();
        assert_eq!(
            c["payload"]["candidate"],
            json!({"candidate":"candidate:1 1 udp 1 127.0.0.1 5 typ host","sdpMid":"0","sdpMLineIndex":0})
        );
    }
}
