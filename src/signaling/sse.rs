//! Seed 004's SSE sessions: the doorbell as one peer of a session.
//!
//! A press is a fresh, unguessable session id (the room name): the doorbell
//! gets `GET /iceServers` (its credentials are this call's), registers with
//! `POST /register/:sessionId/:peerId`, and listens on the event stream
//! `GET /events/:sessionId/:peerId` (opened again when it drops; `ping`
//! events are taken as signs of life). The owner's link names the session;
//! when the viewer registers, the server says `new-peer`, and the doorbell,
//! registered first, makes the offer, as the seed's diagram shows. Offer,
//! answer and candidates travel as `POST /message/:sessionId/:peerId` with a
//! `target`, and arrive on the stream with the sender's `senderId`.
//!
//! In the seam's vocabulary: `join` registers and opens the stream (and is
//! answered by `created`), `bye` closes it; `new-peer`, `offer`, `answer` and
//! `ice-candidate` come from a named viewer (its peer id). There is no
//! persistent connection while nothing rings, so the server's health is
//! checked with `GET /iceServers` every `signaling.heartbeat`.

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client::{backoff, base_dialer, ClientSettings};
use super::device_ws::{candidate, ice_servers};
use super::protocol::{Message, SessionDescription};
use super::transport::Dialer;
use super::{Signaling, SignalingError, SignalingEvent, ViewerId};
use crate::peer::IceServer;

/// A request (connect, send, read the answer) may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer body read, and longest line of the event stream.
const MAX_BODY: usize = 256 * 1024;

/// How to reach the server, and who we are.
#[derive(Debug, Clone)]
pub struct SseSettings {
    /// URL, TLS trust and reconnect bounds, as for the room protocol.
    pub client: ClientSettings,
    /// Our peer id in every session (`signaling.device_id`).
    pub peer_id: String,
    /// How often the server's health is checked while nothing rings.
    pub heartbeat: Duration,
}

/// What the event stream carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Ping,
    NewPeer { sender: String },
    Signal { sender: String, message: Message },
}

/// Reads one event's data (a JSON object). Checked field by field; an
/// event that is not what the seed says is an error, never a panic.
pub fn decode(data: &str) -> Result<Event, String> {
    let v: Value = serde_json::from_str(data).map_err(|e| format!("not JSON: {e}"))?;
    let kind = v["type"].as_str().ok_or("no string `type`")?;
    let sender = || -> Result<String, String> {
        let s = v["senderId"]
            .as_str()
            .ok_or_else(|| format!("{kind}: no senderId"))?;
        if s.is_empty() || s.len() > 128 {
            return Err(format!("{kind}: unusable senderId"));
        }
        Ok(s.to_string())
    };
    let sdp = |want: &str| -> Result<String, String> {
        match &v["payload"] {
            Value::String(s) => Ok(s.clone()),
            Value::Object(d) => {
                if let Some(t) = d.get("type").and_then(Value::as_str) {
                    if t != want {
                        return Err(format!("{kind}: an SDP of type {t:?}"));
                    }
                }
                d.get("sdp")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| format!("{kind}: no payload.sdp"))
            }
            _ => Err(format!("{kind}: no payload")),
        }
    };
    Ok(match kind {
        "ping" => Event::Ping,
        "new-peer" => Event::NewPeer { sender: sender()? },
        "offer" => Event::Signal {
            sender: sender()?,
            message: Message::Invite(SessionDescription::offer(sdp("offer")?)),
        },
        "answer" => Event::Signal {
            sender: sender()?,
            message: Message::Ok(SessionDescription::answer(sdp("answer")?)),
        },
        "ice-candidate" => Event::Signal {
            sender: sender()?,
            message: Message::IceCandidate(match &v["payload"] {
                Value::Null => None,
                c => candidate(c).map_err(|e| format!("{kind}: {e}"))?,
            }),
        },
        other => {
            return Err(format!(
                "unknown event type {:?}",
                other.chars().take(40).collect::<String>()
            ))
        }
    })
}

/// The body of `POST /message` for `msg` to `target`; `None` for messages
/// the protocol does not have.
pub fn message_body(msg: &Message, target: &str) -> Option<Value> {
    let (kind, payload) = match msg {
        Message::Invite(d) => ("offer", json!({ "type": "offer", "sdp": d.sdp })),
        Message::Ok(d) => ("answer", json!({ "type": "answer", "sdp": d.sdp })),
        Message::IceCandidate(c) => (
            "ice-candidate",
            match c {
                None => Value::Null,
                Some(c) => json!({
                    "candidate": c.candidate.trim_start_matches("a="),
                    "sdpMid": c.sdp_mid,
                    "sdpMLineIndex": c.sdp_mline_index,
                }),
            },
        ),
        _ => return None,
    };
    Some(json!({ "type": kind, "payload": payload, "target": target }))
}

/// `GET /iceServers` as the seed gives it: one entry, `urls` a list.
pub fn ice_servers_of(v: &Value) -> Result<Vec<IceServer>, String> {
    if v.is_array() {
        return ice_servers(v);
    }
    ice_servers(&Value::Array(vec![v.clone()]))
}

/// The session of the ring in progress.
struct Active {
    session: String,
    ice: Vec<IceServer>,
    stop: CancellationToken,
}

struct Shared {
    events: mpsc::Sender<SignalingEvent>,
    dialer: Dialer,
    settings: SseSettings,
    up: AtomicBool,
    active: Mutex<Option<Active>>,
    cancel: CancellationToken,
}

impl Shared {
    fn report(&self, event: SignalingEvent) {
        if self.events.try_send(event).is_err() {
            tracing::warn!("signaling event dropped: the call loop is not keeping up");
        }
    }

    fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            self.report(if up {
                SignalingEvent::Up
            } else {
                SignalingEvent::Down
            });
        }
    }
}

/// One HTTP/1.1 request on a fresh connection: status and body.
async fn request(
    dialer: &Dialer,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Bytes), String> {
    let work = async {
        let stream = dialer.stream().await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let task = tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", dialer.endpoint.path))
            .header("host", &dialer.endpoint.authority)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(Value::to_string).unwrap_or_default(),
            )))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        task.abort();
        Ok((status, bytes))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .map_err(|_| format!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}"))?
}

fn body_text(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim()
        .chars()
        .take(200)
        .collect()
}

/// The doorbell's side of seed 004.
pub struct SseSignaling {
    shared: Arc<Shared>,
}

impl SseSignaling {
    /// Starts the health checks; events arrive on `events`. Fails only on
    /// settings that can never work.
    pub fn start(
        settings: SseSettings,
        events: mpsc::Sender<SignalingEvent>,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, SignalingError> {
        let dialer = base_dialer(&settings.client)?;
        let shared = Arc::new(Shared {
            events,
            dialer,
            settings,
            up: AtomicBool::new(false),
            active: Mutex::new(None),
            cancel,
        });
        tokio::spawn(health(shared.clone()));
        Ok(Arc::new(Self { shared }))
    }

    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Acquire)
    }
}

/// Asks `GET /iceServers` once (for `doorbell check`).
pub async fn probe(settings: &SseSettings) -> Result<String, SignalingError> {
    let dialer = base_dialer(&settings.client)?;
    let trust = dialer.tls.as_ref().map(|t| t.describe());
    let failed = |why: String| SignalingError::Unreachable(super::ConnectError::Failed(vec![why]));
    let (status, body) = request(&dialer, "GET", "iceServers", None)
        .await
        .map_err(failed)?;
    if status != 200 {
        return Err(failed(format!(
            "GET /iceServers answered {status}: {}",
            body_text(&body)
        )));
    }
    let servers = serde_json::from_slice::<Value>(&body)
        .map_err(|e| e.to_string())
        .and_then(|v| ice_servers_of(&v))
        .map_err(|e| failed(format!("GET /iceServers: {e}")))?;
    let mut s = format!(
        "seed 004 SSE sessions, {} ICE URL(s) offered",
        servers.iter().map(|s| s.urls.len()).sum::<usize>()
    );
    if let Some(t) = trust {
        s.push_str(", TLS ");
        s.push_str(&t);
    }
    Ok(s)
}

/// `GET /iceServers` every heartbeat: the server is up while it answers.
async fn health(shared: Arc<Shared>) {
    let mut failures = 0u32;
    loop {
        let ok = match request(&shared.dialer, "GET", "iceServers", None).await {
            Ok((200, _)) => true,
            Ok((status, body)) => {
                tracing::warn!("GET /iceServers answered {status}: {}", body_text(&body));
                false
            }
            Err(e) => {
                if shared.up.load(Ordering::Acquire) || failures == 0 {
                    tracing::warn!(url = %shared.settings.client.url, "signaling server unreachable: {e}");
                }
                false
            }
        };
        let was_up = shared.up.load(Ordering::Acquire);
        shared.set_up(ok);
        if ok && !was_up {
            // After `Up` went to the call loop: a press seen after this
            // line finds the server up.
            tracing::info!(url = %shared.settings.client.url, "the SSE signaling server answers");
        }
        failures = if ok { 0 } else { failures.saturating_add(1) };
        let wait = if ok {
            shared.settings.heartbeat
        } else {
            backoff(
                failures,
                shared.settings.client.reconnect_min,
                shared
                    .settings
                    .client
                    .reconnect_max
                    .min(shared.settings.heartbeat),
            )
        };
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

impl Shared {
    /// A ring: this call's ICE servers, registration, the event stream.
    async fn join(self: Arc<Self>, session: String) -> Result<(), SignalingError> {
        let fail = |what: String| SignalingError::Send(what);
        let ice = match request(&self.dialer, "GET", "iceServers", None).await {
            Ok((200, body)) => serde_json::from_slice(&body)
                .map_err(|e| e.to_string())
                .and_then(|v: Value| ice_servers_of(&v))
                .unwrap_or_else(|e| {
                    tracing::warn!("GET /iceServers gave nothing usable ({e}); using ours");
                    Vec::new()
                }),
            Ok((status, body)) => {
                tracing::warn!("GET /iceServers answered {status}: {}", body_text(&body));
                Vec::new()
            }
            Err(e) => return Err(fail(format!("GET /iceServers: {e}"))),
        };
        register(&self.dialer, &session, &self.settings.peer_id)
            .await
            .map_err(fail)?;
        let stop = self.cancel.child_token();
        let previous = self.active.lock().expect("active lock").replace(Active {
            session: session.clone(),
            ice,
            stop: stop.clone(),
        });
        if let Some(p) = previous {
            p.stop.cancel();
        }
        tokio::spawn(listen(self.clone(), session.clone(), stop));
        self.report(SignalingEvent::Message(Message::Created(session)));
        Ok(())
    }

    fn leave(&self) {
        if let Some(a) = self.active.lock().expect("active lock").take() {
            a.stop.cancel();
        }
    }

    fn session(&self) -> Option<String> {
        self.active
            .lock()
            .expect("active lock")
            .as_ref()
            .map(|a| a.session.clone())
    }
}

async fn register(dialer: &Dialer, session: &str, peer: &str) -> Result<(), String> {
    match request(dialer, "POST", &format!("register/{session}/{peer}"), None).await {
        Ok((200..=299, _)) => Ok(()),
        Ok((status, body)) => Err(format!(
            "POST /register answered {status}: {}",
            body_text(&body)
        )),
        Err(e) => Err(format!("POST /register: {e}")),
    }
}

/// Reads the session's event stream until `stop`, opening it again (with
/// backoff) whenever it drops; the server keeps what was sent meanwhile.
async fn listen(shared: Arc<Shared>, session: String, stop: CancellationToken) {
    let peer = shared.settings.peer_id.clone();
    let mut failures = 0u32;
    loop {
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            o = stream_once(&shared, &session, &peer, &mut failures) => o,
        };
        let wait = backoff(
            failures,
            shared.settings.client.reconnect_min,
            shared.settings.client.reconnect_max,
        );
        failures = failures.saturating_add(1);
        tracing::warn!("the event stream ended ({outcome}); open again in {wait:?}");
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One event stream, until it ends; why it ended.
async fn stream_once(shared: &Shared, session: &str, peer: &str, failures: &mut u32) -> String {
    let path = format!("events/{session}/{peer}");
    let opened = async {
        let stream = shared.dialer.stream().await.map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .uri(format!("{}{path}", shared.dialer.endpoint.path))
            .header("host", &shared.dialer.endpoint.authority)
            .header("accept", "text/event-stream")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        sender.send_request(req).await.map_err(|e| e.to_string())
    };
    let resp = match tokio::time::timeout(REQUEST_TIMEOUT, opened).await {
        Err(_) => return "no answer".into(),
        Ok(Err(e)) => return e,
        Ok(Ok(r)) => r,
    };
    match resp.status().as_u16() {
        200 => {}
        404 => {
            // The server forgot the session (restarted): register again.
            return match register(&shared.dialer, session, peer).await {
                Ok(()) => "the server had forgotten the session; registered again".into(),
                Err(e) => e,
            };
        }
        other => return format!("GET /events answered {other}"),
    }
    *failures = 0;
    tracing::debug!("event stream open");
    let mut body = resp.into_body();
    let mut framing = EventFraming::default();
    loop {
        let frame = match body.frame().await {
            None => return "the server closed it".into(),
            Some(Err(e)) => return e.to_string(),
            Some(Ok(f)) => f,
        };
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        match framing.push(&chunk) {
            Ok(events) => events.iter().for_each(|data| deliver(shared, data)),
            Err(e) => return e,
        }
    }
}

/// The `text/event-stream` framing: bytes in, each event's data out (its
/// `data:` lines joined; `event:`, `id:`, `retry:` and comments carry
/// nothing we use). Lines may end in LF or CRLF and may be split anywhere.
#[derive(Debug, Default)]
pub struct EventFraming {
    buffer: Vec<u8>,
    data: String,
}

impl EventFraming {
    /// The events `chunk` completes; an error when an event grows past
    /// 256 kB (the stream is then dropped and opened again).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, String> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(std::mem::take(&mut self.data));
                }
            } else if let Some(d) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
        }
        if self.buffer.len() + self.data.len() > MAX_BODY {
            self.buffer.clear();
            self.data.clear();
            return Err("an event longer than 256 kB".into());
        }
        Ok(events)
    }
}

fn deliver(shared: &Shared, data: &str) {
    match decode(data) {
        Ok(Event::Ping) => {}
        Ok(Event::NewPeer { sender }) => {
            tracing::info!(peer = %sender, "a peer joined the session");
            shared.report(SignalingEvent::FromViewer {
                viewer: ViewerId(sender),
                message: Message::NewPeer(None),
            });
        }
        Ok(Event::Signal { sender, message }) => shared.report(SignalingEvent::FromViewer {
            viewer: ViewerId(sender),
            message,
        }),
        Err(e) => shared.report(SignalingEvent::Malformed(e)),
    }
}

impl Signaling for SseSignaling {
    fn send(&self, msg: Message) -> BoxFuture<'static, Result<(), SignalingError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            match msg {
                Message::Join(session) => shared.join(session).await,
                Message::Bye(_) => {
                    shared.leave();
                    Ok(())
                }
                other => {
                    tracing::debug!("not sent on the SSE protocol: {other}");
                    Ok(())
                }
            }
        })
    }

    fn send_to(
        &self,
        viewer: &ViewerId,
        msg: Message,
    ) -> BoxFuture<'static, Result<(), SignalingError>> {
        let shared = self.shared.clone();
        let target = viewer.0.clone();
        Box::pin(async move {
            let session = shared.session().ok_or(SignalingError::NotConnected)?;
            let body = message_body(&msg, &target).ok_or_else(|| {
                SignalingError::Send(format!("{msg}: no such message in seed 004"))
            })?;
            let path = format!("message/{session}/{}", shared.settings.peer_id);
            match request(&shared.dialer, "POST", &path, Some(&body)).await {
                Ok((200..=299, _)) => Ok(()),
                Ok((status, b)) => Err(SignalingError::Send(format!(
                    "{msg}: POST /message answered {status}: {}",
                    body_text(&b)
                ))),
                Err(e) => Err(SignalingError::Send(format!("{msg}: {e}"))),
            }
        })
    }

    fn ice_servers(&self, _viewer: &ViewerId) -> Option<Vec<IceServer>> {
        self.shared
            .active
            .lock()
            .expect("active lock")
            .as_ref()
            .map(|a| a.ice.clone())
            .filter(|i| !i.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_events_decode() {
        assert_eq!(
            decode(r#"{"time":"2025-02-14T11:19:47.726Z","type":"ping"}"#),
            Ok(Event::Ping)
        );
        assert_eq!(
            decode(r#"{"type":"new-peer","senderId":"peer2"}"#),
            Ok(Event::NewPeer {
                sender: "peer2".into()
            })
        );
        assert_eq!(
            decode(
                r#"{"type":"answer","payload":{"type":"answer","sdp":"v=0\r\n"},"senderId":"peer2"}"#
            ),
            Ok(Event::Signal {
                sender: "peer2".into(),
                message: Message::Ok(SessionDescription::answer("v=0\r\n"))
            })
        );
        assert_eq!(
            decode(r#"{"type":"ice-candidate","payload":null,"senderId":"p"}"#),
            Ok(Event::Signal {
                sender: "p".into(),
                message: Message::IceCandidate(None)
            })
        );
        let Ok(Event::Signal {
            message: Message::IceCandidate(Some(c)),
            ..
        }) = decode(
            r#"{"type":"ice-candidate","payload":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5 typ host","sdpMid":"0","sdpMLineIndex":0},"senderId":"p"}"#,
        )
        else {
            panic!()
        };
        assert_eq!(c.sdp_mline_index, Some(0));
        for bad in [
            "",
            "{}",
            r#"{"type":"offer","senderId":"p"}"#,
            r#"{"type":"offer","payload":{"type":"answer","sdp":"x"},"senderId":"p"}"#,
            r#"{"type":"new-peer"}"#,
            r#"{"type":"new-peer","senderId":""}"#,
            r#"{"type":"hack","senderId":"p"}"#,
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_are_framed_however_the_bytes_are_split() {
        let stream =
            b"data: {\"type\":\"ping\"}\r\n\r\n: a comment\nevent: x\ndata: {\"a\":\ndata: 1}\n\n";
        for cut in 0..stream.len() {
            let mut f = EventFraming::default();
            let mut events = f.push(&stream[..cut]).unwrap();
            events.extend(f.push(&stream[cut..]).unwrap());
            assert_eq!(
                events,
                ["{\"type\":\"ping\"}", "{\"a\":\n1}"],
                "cut at {cut}"
            );
        }
        let mut f = EventFraming::default();
        assert!(f.push(&vec![b'x'; MAX_BODY + 1]).is_err());
        assert_eq!(f.push(b"data: ok\n\n").unwrap(), ["ok"], "usable after");
    }

    #[test]
    fn messages_have_the_seeds_body() {
        let b = message_body(&Message::Invite(SessionDescription::offer("v=0")), "peer2").unwrap();
        assert_eq!(
            b,
            json!({"type":"offer","payload":{"type":"offer","sdp":"v=0"},"target":"peer2"})
        );
        let end = message_body(&Message::IceCandidate(None), "peer2").unwrap();
        assert_eq!(
            end,
            json!({"type":"ice-candidate","payload":null,"target":"peer2"})
        );
        assert!(message_body(&Message::Join("r".into()), "p").is_none());
        let servers = ice_servers_of(&json!({
            "urls": ["stun:stun.cloudflare.com:3478", "turn:turn.cloudflare.com:3478?transport=udp"],
            "username": "g00e", "credential": "75b1"
        }))
        .unwrap();
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].urls.len(), 2);
        assert_eq!(servers[0].credential, "75b1");
    }
}
