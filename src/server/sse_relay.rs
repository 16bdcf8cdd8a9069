//! Seed 004's four endpoints in `doorbell serve`: SSE sessions.
//!
//! `GET /iceServers` (STUN/TURN for one peer; TURN credentials minted per
//! request when the server has a TURN secret), `POST /register/:s/:p` (a
//! session is made by its first peer; the others get `new-peer`),
//! `GET /events/:s/:p` (the peer's event stream: `data: {json}` events, a
//! `ping` every 15 s), `POST /message/:s/:p` (`offer`, `answer` or
//! `ice-candidate` to a `target`, delivered with the sender's `senderId`).
//!
//! Where the seed is silent, the choices are those of the seed's own
//! diagram and of a server open to the Internet: a message for a peer
//! whose stream is not open waits for it (at most 100, the oldest dropped);
//! only a registered peer may send, and only to a peer of its session; ids
//! are 1 to 128 of `A-Z a-z 0-9 - _`; a session with no open stream is
//! forgotten after two minutes; at most 8 peers a session, the room limit of
//! `doorbell serve` for sessions, and 120 requests a minute per address.

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use super::web::{client_address, Refusals};
use crate::peer::IceServer;
use crate::turn::TurnRest;

/// Messages kept for a peer whose stream is not open.
const QUEUE: usize = 100;
/// Peers in one session (a doorbell and its owners).
const MAX_PEERS: usize = 8;
/// A session without an open stream for this long is forgotten.
const IDLE: Duration = Duration::from_secs(120);
/// Requests per address per minute, all four endpoints together.
const PER_MINUTE: usize = 120;
/// A `ping` on every open stream this often.
const PING_EVERY: Duration = Duration::from_secs(15);
/// Largest message body (an SDP with room to spare).
pub const MAX_BODY: usize = 64 * 1024;

/// What the relay needs from the server's settings.
#[derive(Clone)]
pub struct RelaySettings {
    pub max_sessions: usize,
    /// Public STUN/TURN servers (those without credentials are handed out).
    pub ice_servers: Vec<IceServer>,
    pub turn: Option<Arc<TurnRest>>,
}

#[derive(Default)]
struct Peer {
    queue: VecDeque<String>,
    /// The open stream: its number (a newer one replaces it) and sender.
    stream: Option<(u64, mpsc::Sender<String>)>,
}

struct Session {
    peers: HashMap<String, Peer>,
    /// Registration order, for `new-peer`.
    order: Vec<String>,
    idle_since: Option<Instant>,
}

/// The sessions, without IO: who is registered, what waits for whom.
pub struct Relay {
    sessions: HashMap<String, Session>,
    max_sessions: usize,
    streams: u64,
}

/// Why a request was refused: its status and the seed-style message.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub StatusCode, pub &'static str);

pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Relay {
    pub fn new(max_sessions: usize) -> Relay {
        Relay {
            sessions: HashMap::new(),
            max_sessions,
            streams: 0,
        }
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Forgets sessions nobody has listened to for [`IDLE`].
    pub fn sweep(&mut self, now: Instant) {
        for s in self.sessions.values_mut() {
            let open = s
                .peers
                .values()
                .any(|p| p.stream.as_ref().is_some_and(|(_, tx)| !tx.is_closed()));
            s.idle_since = if open {
                None
            } else {
                Some(s.idle_since.unwrap_or(now))
            };
        }
        self.sessions
            .retain(|_, s| s.idle_since.is_none_or(|t| now.duration_since(t) < IDLE));
    }

    pub fn register(&mut self, session: &str, peer: &str, now: Instant) -> Result<(), Refused> {
        self.sweep(now);
        if !self.sessions.contains_key(session) && self.sessions.len() >= self.max_sessions {
            return Err(Refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many sessions",
            ));
        }
        let s = self
            .sessions
            .entry(session.to_string())
            .or_insert_with(|| Session {
                peers: HashMap::new(),
                order: Vec::new(),
                idle_since: Some(now),
            });
        if !s.peers.contains_key(peer) {
            if s.peers.len() >= MAX_PEERS {
                return Err(Refused(StatusCode::FORBIDDEN, "Session is full"));
            }
            s.peers.insert(peer.to_string(), Peer::default());
            s.order.push(peer.to_string());
        }
        let event = json!({ "type": "new-peer", "senderId": peer }).to_string();
        let others: Vec<String> = s.order.iter().filter(|p| *p != peer).cloned().collect();
        for other in others {
            Self::deliver(s, &other, event.clone());
        }
        Ok(())
    }

    /// Opens `peer`'s stream: what waited for it comes first.
    pub fn open(
        &mut self,
        session: &str,
        peer: &str,
    ) -> Result<(u64, mpsc::Receiver<String>), Refused> {
        let p = self
            .sessions
            .get_mut(session)
            .and_then(|s| s.peers.get_mut(peer))
            .ok_or(Refused(StatusCode::NOT_FOUND, "Peer not found"))?;
        let (tx, rx) = mpsc::channel(QUEUE + 16);
        while let Some(m) = p.queue.pop_front() {
            let _ = tx.try_send(m);
        }
        self.streams += 1;
        p.stream = Some((self.streams, tx));
        if let Some(s) = self.sessions.get_mut(session) {
            s.idle_since = None;
        }
        Ok((self.streams, rx))
    }

    /// The stream `number` of `peer` ended (the client went away).
    pub fn closed(&mut self, session: &str, peer: &str, number: u64) {
        if let Some(p) = self
            .sessions
            .get_mut(session)
            .and_then(|s| s.peers.get_mut(peer))
        {
            if p.stream.as_ref().is_some_and(|(n, _)| *n == number) {
                p.stream = None;
            }
        }
    }

    /// `message` from `from` to `target`, both peers of `session`.
    pub fn message(
        &mut self,
        session: &str,
        from: &str,
        target: &str,
        kind: &str,
        payload: Value,
    ) -> Result<(), Refused> {
        if !matches!(kind, "offer" | "answer" | "ice-candidate") {
            return Err(Refused(StatusCode::BAD_REQUEST, "Invalid message type"));
        }
        let s = self
            .sessions
            .get_mut(session)
            .ok_or(Refused(StatusCode::NOT_FOUND, "Session not found"))?;
        if !s.peers.contains_key(from) {
            return Err(Refused(StatusCode::FORBIDDEN, "Unauthorized"));
        }
        if !s.peers.contains_key(target) || target == from {
            return Err(Refused(StatusCode::NOT_FOUND, "Peer not found"));
        }
        let event = json!({ "type": kind, "payload": payload, "senderId": from }).to_string();
        Self::deliver(s, target, event);
        Ok(())
    }

    fn deliver(s: &mut Session, to: &str, event: String) {
        let Some(p) = s.peers.get_mut(to) else { return };
        if let Some((_, tx)) = &p.stream {
            match tx.try_send(event) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e)) => {
                    p.stream = None;
                    p.queue.push_back(e);
                }
            }
        } else {
            p.queue.push_back(event);
        }
        while p.queue.len() > QUEUE {
            p.queue.pop_front();
        }
    }
}

/// The relay with what its handlers need.
pub struct RelayState {
    relay: Mutex<Relay>,
    settings: RelaySettings,
    requests: Mutex<HashMap<IpAddr, (Instant, usize)>>,
    refusals: Arc<Refusals>,
}

impl RelayState {
    fn relay(&self) -> std::sync::MutexGuard<'_, Relay> {
        self.relay.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a request from `addr`; false once it is over the limit.
    fn admit(&self, addr: IpAddr) -> bool {
        let now = Instant::now();
        let mut r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() > 10_000 {
            r.retain(|_, (t, _)| now.duration_since(*t) < Duration::from_secs(60));
        }
        let (start, n) = r.entry(addr).or_insert((now, 0));
        if now.duration_since(*start) >= Duration::from_secs(60) {
            *start = now;
            *n = 0;
        }
        *n += 1;
        if *n > PER_MINUTE {
            self.refusals.refused(
                addr,
                "sse requests per minute",
                format_args!("more than {PER_MINUTE} SSE requests a minute"),
            );
            return false;
        }
        true
    }
}

pub fn router<S: Clone + Send + Sync + 'static>(
    settings: RelaySettings,
    refusals: Arc<Refusals>,
) -> (Router<S>, Arc<RelayState>) {
    let state = Arc::new(RelayState {
        relay: Mutex::new(Relay::new(settings.max_sessions)),
        settings,
        requests: Mutex::new(HashMap::new()),
        refusals,
    });
    let router = Router::new()
        .route("/iceServers", get(ice_servers))
        .route("/register/{session}/{peer}", post(register))
        .route("/events/{session}/{peer}", get(events))
        .route("/message/{session}/{peer}", post(message))
        .with_state(state.clone());
    (router, state)
}

impl RelayState {
    pub fn session_count(&self) -> usize {
        self.relay().session_count()
    }
}

fn refused(r: Refused) -> Response {
    (r.0, Json(json!({ "message": r.1 }))).into_response()
}

fn check(
    state: &RelayState,
    peer: SocketAddr,
    headers: &HeaderMap,
    ids: &[&str],
) -> Result<(), Refused> {
    if !state.admit(client_address(peer.ip(), headers)) {
        return Err(Refused(StatusCode::TOO_MANY_REQUESTS, "Too many requests"));
    }
    if !ids.iter().all(|id| valid_id(id)) {
        return Err(Refused(StatusCode::BAD_REQUEST, "Invalid id"));
    }
    Ok(())
}

/// Who asks for ICE servers (`?session=S&peer=P`, our addition).
#[derive(serde::Deserialize)]
struct Asker {
    session: Option<String>,
    peer: Option<String>,
}

impl Relay {
    /// Whether `peer` is registered in `session`.
    pub fn is_member(&self, session: &str, peer: &str) -> bool {
        self.sessions
            .get(session)
            .is_some_and(|s| s.peers.contains_key(peer))
    }
}

/// `GET /iceServers`: the seed's one object, `urls` a list. TURN
/// credentials only for a registered peer that says who it is
/// (`?session=S&peer=P`): handed to anyone, they would make the TURN server
/// an open relay. Without, the public servers (STUN) alone.
async fn ice_servers(
    State(state): State<Arc<RelayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::Query(asker): axum::extract::Query<Asker>,
) -> Response {
    if let Err(r) = check(&state, peer, &headers, &[]) {
        return refused(r);
    }
    let member = match (&asker.session, &asker.peer) {
        (Some(s), Some(p)) => state.relay().is_member(s, p),
        _ => false,
    };
    let mut urls: Vec<String> = state
        .settings
        .ice_servers
        .iter()
        .filter(|s| s.credential.is_empty())
        .flat_map(|s| s.urls.clone())
        .collect();
    let (mut username, mut credential) = (String::new(), String::new());
    if let (Some(turn), true) = (&state.settings.turn, member) {
        let minted = turn.mint(crate::turn::unix_now(), "sse");
        urls.extend(minted.urls);
        username = minted.username;
        credential = minted.credential;
    }
    let mut r = Json(json!({ "urls": urls, "username": username, "credential": credential }))
        .into_response();
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

async fn register(
    State(state): State<Arc<RelayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((session, id)): Path<(String, String)>,
) -> Response {
    if let Err(r) = check(&state, peer, &headers, &[&session, &id]) {
        return refused(r);
    }
    match state.relay().register(&session, &id, Instant::now()) {
        Ok(()) => Json(json!({ "message": "Session registered successfully" })).into_response(),
        Err(r) => refused(r),
    }
}

/// Ends a stream's registration when the client goes away.
struct Closer {
    state: Arc<RelayState>,
    session: String,
    peer: String,
    number: u64,
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.state
            .relay()
            .closed(&self.session, &self.peer, self.number);
    }
}

async fn events(
    State(state): State<Arc<RelayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((session, id)): Path<(String, String)>,
) -> Response {
    if let Err(r) = check(&state, peer, &headers, &[&session, &id]) {
        return refused(r);
    }
    let (number, rx) = match state.relay().open(&session, &id) {
        Ok(opened) => opened,
        Err(r) => return refused(r),
    };
    let closer = Closer {
        state: state.clone(),
        session,
        peer: id,
        number,
    };
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    let stream = futures_util::stream::unfold(
        (rx, ping, closer),
        |(mut rx, mut ping, closer)| async move {
            let data = tokio::select! {
                m = rx.recv() => m?,
                _ = ping.tick() => json!({
                    "time": crate::signaling::device_ws::timestamp(),
                    "type": "ping",
                })
                .to_string(),
            };
            Some((
                Ok::<_, std::convert::Infallible>(Event::default().data(data)),
                (rx, ping, closer),
            ))
        },
    );
    let mut r = Sse::new(stream).into_response();
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

async fn message(
    State(state): State<Arc<RelayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((session, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = check(&state, peer, &headers, &[&session, &id]) {
        return refused(r);
    }
    if body.len() > MAX_BODY {
        return refused(Refused(StatusCode::PAYLOAD_TOO_LARGE, "Message too large"));
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return refused(Refused(StatusCode::BAD_REQUEST, "Invalid message"));
    };
    let (Some(kind), Some(target)) = (v["type"].as_str(), v["target"].as_str()) else {
        return refused(Refused(StatusCode::BAD_REQUEST, "Invalid message"));
    };
    let payload = v.get("payload").cloned().unwrap_or(Value::Null);
    match state.relay().message(&session, &id, target, kind, payload) {
        Ok(()) => Json(json!({ "message": "Message sent" })).into_response(),
        Err(r) => refused(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rx: &mut mpsc::Receiver<String>) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            out.push(serde_json::from_str(&m).unwrap());
        }
        out
    }

    #[test]
    fn the_seeds_diagram_new_peer_offer_answer_candidates() {
        let t = Instant::now();
        let mut r = Relay::new(10);
        r.register("s1", "doorbell", t).unwrap();
        let (_, mut bell) = r.open("s1", "doorbell").unwrap();
        // The viewer registers before it opens its stream; the doorbell's
        // offer waits for it.
        r.register("s1", "viewer", t).unwrap();
        assert_eq!(
            drain(&mut bell),
            [json!({"type": "new-peer", "senderId": "viewer"})]
        );
        r.message(
            "s1",
            "doorbell",
            "viewer",
            "offer",
            json!({"type": "offer", "sdp": "v=0"}),
        )
        .unwrap();
        let (_, mut viewer) = r.open("s1", "viewer").unwrap();
        assert_eq!(
            drain(&mut viewer),
            [
                json!({"type": "offer", "payload": {"type": "offer", "sdp": "v=0"}, "senderId": "doorbell"})
            ]
        );
        r.message("s1", "viewer", "doorbell", "ice-candidate", Value::Null)
            .unwrap();
        assert_eq!(drain(&mut bell)[0]["payload"], Value::Null);
    }

    #[test]
    fn refusals_say_why() {
        let t = Instant::now();
        let mut r = Relay::new(1);
        r.register("s1", "a", t).unwrap();
        assert_eq!(
            r.register("s2", "a", t),
            Err(Refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many sessions"
            ))
        );
        assert_eq!(
            r.message("s1", "a", "nobody", "offer", Value::Null),
            Err(Refused(StatusCode::NOT_FOUND, "Peer not found"))
        );
        assert_eq!(
            r.message("s1", "outsider", "a", "offer", Value::Null),
            Err(Refused(StatusCode::FORBIDDEN, "Unauthorized"))
        );
        assert_eq!(
            r.message("s1", "a", "a", "hack", Value::Null),
            Err(Refused(StatusCode::BAD_REQUEST, "Invalid message type"))
        );
        assert!(r.open("s1", "b").is_err());
        for p in 1..MAX_PEERS {
            r.register("s1", &format!("p{p}"), t).unwrap();
        }
        assert_eq!(
            r.register("s1", "one-too-many", t),
            Err(Refused(StatusCode::FORBIDDEN, "Session is full"))
        );
        assert!(
            valid_id("peer_1-A")
                && !valid_id("")
                && !valid_id("a/b")
                && !valid_id(&"x".repeat(129))
        );
    }

    #[test]
    fn queues_are_bounded_and_idle_sessions_forgotten() {
        let t = Instant::now();
        let mut r = Relay::new(10);
        r.register("s1", "a", t).unwrap();
        r.register("s1", "b", t).unwrap();
        for i in 0..150 {
            r.message("s1", "a", "b", "ice-candidate", json!(i))
                .unwrap();
        }
        let (n, mut rx) = r.open("s1", "b").unwrap();
        let got = drain(&mut rx);
        assert_eq!(got.len(), QUEUE, "the oldest were dropped");
        assert_eq!(got.last().unwrap()["payload"], 149);
        drop(rx);
        r.closed("s1", "b", n);
        r.sweep(t);
        assert_eq!(r.session_count(), 1);
        r.sweep(t + IDLE + Duration::from_secs(1));
        assert_eq!(r.session_count(), 0, "nobody listened for two minutes");
    }
}
