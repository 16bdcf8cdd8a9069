//! Seed 002 in `doorbell serve`: the device and viewer WebSockets, and the
//! owner's way in from the doorbell's ring link.
//!
//! - `GET /ws/device`: a device says `hello {device_id}`; a device the
//!   operator did not register (`--device`, `--devices-file`) is closed
//!   with 1008 "Device not found". Heartbeats are answered; a device silent
//!   for two heartbeats and a half (`--device-heartbeat`) is dropped; a
//!   second connection of the same device replaces the first (closed 1001).
//! - `GET /ws/viewer`: a viewer says `hello {token}` with a viewer token
//!   ([`super::viewer_token`]); an invalid or expired one is closed with
//!   1008 "Invalid token". Then `watch_request {device_id}` opens a session:
//!   the viewer gets `watch_ready` and the device `watch_request`, each with
//!   its own ICE servers (TURN REST credentials minted for each side, when
//!   the server has a TURN secret); offer, answer and candidates are
//!   relayed within the session only; `end_watch`, a closed viewer or a
//!   lost device end it with the seed's `watch_ended` reasons.
//! - `GET /watch/{device_id}`: the ring link. An owner who is not signed in
//!   is sent to `/login` and back; then the viewer page, which gets a token
//!   from `POST /watch/{device_id}/token` (owner session only) and speaks
//!   `/ws/viewer`. A link with `?token=` (minted elsewhere with the same
//!   key) opens the page without signing in.
//! - `GET /devices.json` (owner session only): the registered devices,
//!   whether each is online, and its last `device_presence`.
//!
//! The rules of a connection are in [`rules`] (no IO); what the instances
//! share (where devices are, session records, delivery between sockets)
//! goes through a [`FleetBus`], in memory or in Redis. This file owns the
//! sockets. Limits: message size, messages per minute per connection,
//! connections in all and per address, sessions per viewer and per device;
//! refusals are logged once a minute per address and limit.

pub mod rules;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role as WsRole, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::fleet::{FleetBus, SessionRecord};
use super::owner::Owner;
use super::owner_pages::{page, signed_in_as_owner};
use super::viewer_token::{TokenKey, ViewerClaims};
pub use super::web::link_safe;
use super::web::{client_address, secure_headers, Refusals};
use crate::signaling::device_ws::timestamp;
use crate::spec::ice::IceServer;
use crate::turn::TurnRest;
use rules::{Action, Addr, Conn, Context, Delivery, Limits, Role, GOING_AWAY, SERVER_ERROR};

/// The user id of the owner signed in on the owner pages.
pub const OWNER_USER: &str = "owner";
/// How often a socket's handler looks at the time.
const TICK: Duration = Duration::from_secs(1);
/// How often a viewer is pinged (a browser answers by itself).
const PING_EVERY: Duration = Duration::from_secs(30);
/// How often each side checks that the other side of its sessions is
/// still there (a side on an instance that died says nothing).
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// A session record not refreshed by its viewer for this long is gone.
const SESSION_TTL: Duration = Duration::from_secs(60);
/// How long a device's last presence is kept once it is offline.
const PRESENCE_TTL: Duration = Duration::from_secs(24 * 3600);

/// What the operator sets for seed 002.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// The devices that may connect (their `device_id`s).
    pub devices: Vec<String>,
    /// The key of viewer tokens; `None`: a random one for this process
    /// (tokens minted here work only here).
    pub token_key: Option<TokenKey>,
    /// How long a token minted for the signed-in owner is accepted.
    pub token_ttl: Duration,
    pub limits: Limits,
    /// Shared state in Redis (`redis://HOST:PORT`); `None`: in memory.
    pub redis: Option<String>,
}

impl Default for FleetSettings {
    fn default() -> Self {
        Self {
            devices: Vec::new(),
            token_key: None,
            token_ttl: Duration::from_secs(600),
            limits: Limits::default(),
            redis: None,
        }
    }
}

/// What the relay takes from the server besides [`FleetSettings`].
pub struct RelayParts {
    pub bus: Arc<dyn FleetBus>,
    pub ice_servers: Vec<IceServer>,
    pub turn: Option<Arc<TurnRest>>,
    pub owner: Option<Arc<Owner>>,
    pub refusals: Arc<Refusals>,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    /// The viewer page as served at `/watch/{device_id}`.
    pub watch_page: String,
    pub cancel: CancellationToken,
}

/// The relay's state, shared by its handlers.
pub struct DeviceRelay {
    bus: Arc<dyn FleetBus>,
    devices: HashSet<String>,
    key: TokenKey,
    token_ttl: Duration,
    limits: Limits,
    ice_servers: Vec<IceServer>,
    turn: Option<Arc<TurnRest>>,
    owner: Option<Arc<Owner>>,
    refusals: Arc<Refusals>,
    connections: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    max_connections: usize,
    max_per_address: usize,
    next_conn: AtomicU64,
    watch_page: String,
    cancel: CancellationToken,
}

impl DeviceRelay {
    pub fn new(settings: FleetSettings, parts: RelayParts) -> Arc<DeviceRelay> {
        Arc::new(DeviceRelay {
            bus: parts.bus,
            devices: settings.devices.into_iter().collect(),
            key: settings.token_key.unwrap_or_else(TokenKey::random),
            token_ttl: settings.token_ttl,
            limits: settings.limits,
            ice_servers: parts.ice_servers,
            turn: parts.turn,
            owner: parts.owner,
            refusals: parts.refusals,
            connections: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
            max_connections: parts.max_connections,
            max_per_address: parts.max_connections_per_address,
            next_conn: AtomicU64::new(1),
            watch_page: parts.watch_page,
            cancel: parts.cancel,
        })
    }

    /// Seed-002 sockets open on this instance.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// A token for the signed-in owner to watch `device`.
    pub fn owner_token(&self, device: &str) -> (String, u64) {
        let now = crate::turn::unix_now();
        let expires = now + self.token_ttl.as_secs().max(1);
        let token = self.key.mint(
            &ViewerClaims {
                user_id: OWNER_USER.into(),
                devices: Some(vec![device.to_string()]),
                expires_unix: expires,
            },
            now,
        );
        (token, expires)
    }

    /// Counts a new connection from `addr`; false (and logged) over a limit.
    fn admit(&self, addr: IpAddr) -> bool {
        let n = self.connections.fetch_add(1, Ordering::AcqRel) + 1;
        let from = {
            let mut per = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
            let c = per.entry(addr).or_insert(0);
            *c += 1;
            *c
        };
        if n > self.max_connections {
            self.refusals.refused(
                addr,
                "seed-002 connections",
                format_args!(
                    "{n} seed-002 sockets open, the limit is {}",
                    self.max_connections
                ),
            );
            self.forget(addr);
            return false;
        }
        if from > self.max_per_address {
            self.refusals.refused(
                addr,
                "seed-002 connections per address",
                format_args!(
                    "{from} seed-002 sockets from this address, the limit is {}",
                    self.max_per_address
                ),
            );
            self.forget(addr);
            return false;
        }
        true
    }

    fn forget(&self, addr: IpAddr) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
        let mut per = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = per.get_mut(&addr) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                per.remove(&addr);
            }
        }
    }

    /// The ICE servers of a new session: the configured ones, and TURN
    /// REST credentials of their own for the viewer and for the device.
    fn session_ice(&self, user: &str, session: &str) -> (Vec<IceServer>, Vec<IceServer>) {
        let mut viewer = self.ice_servers.clone();
        let mut device = self.ice_servers.clone();
        if let Some(turn) = &self.turn {
            let short: String = session.chars().take(8).collect();
            let now = crate::turn::unix_now();
            viewer.push(turn.mint(now, &format!("viewer_{user}_{short}")));
            device.push(turn.mint(now, &format!("device_{short}")));
        }
        (viewer, device)
    }

    /// One socket, from its upgrade to its end.
    async fn run_socket(
        self: Arc<Self>,
        ws: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
        role: Role,
        ip: IpAddr,
    ) {
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let me = Addr {
            instance: self.bus.instance().to_string(),
            conn: conn_id,
        };
        let mut inbox = self.bus.local().attach(conn_id);
        let mut conn = Conn::new(role, self.limits, Instant::now());
        let (mut sink, mut stream) = ws.split();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut last_ping, mut last_sweep) = (Instant::now(), Instant::now());
        let mut suspects = HashSet::new();
        tracing::debug!(conn = conn_id, %ip, ?role, "seed-002 socket opened");
        loop {
            let ts = timestamp();
            let actions = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => vec![Action::Close(GOING_AWAY, "Server shutting down")],
                Some(d) = inbox.recv() => conn.on_delivery(d, &ts),
                item = stream.next() => match item {
                    Some(Ok(WsMessage::Text(t))) => conn.on_text(t.as_str(), &self.context(&ts)),
                    // Not JSON text: the same answer as any invalid message.
                    Some(Ok(WsMessage::Binary(_))) => conn.on_text("", &self.context(&ts)),
                    Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {
                        conn.heard(Instant::now());
                        continue;
                    }
                },
                _ = tick.tick() => {
                    let now = Instant::now();
                    let mut actions = conn.on_tick(now);
                    if role == Role::Viewer && now.duration_since(last_ping) >= PING_EVERY {
                        last_ping = now;
                        let _ = sink.send(WsMessage::Ping(Vec::new().into())).await;
                    }
                    if now.duration_since(last_sweep) >= SWEEP_EVERY {
                        last_sweep = now;
                        actions.extend(self.sweep(&mut conn, &mut suspects, &ts).await);
                    }
                    actions
                }
            };
            if self.perform(&me, &mut conn, &mut sink, actions, ip).await {
                break;
            }
        }
        let ts = timestamp();
        let actions = conn.gone(&ts);
        self.perform(&me, &mut conn, &mut sink, actions, ip).await;
        self.bus.local().detach(conn_id);
        match (conn.device(), conn.user()) {
            (Some(d), _) => {
                tracing::info!(device = %d, conn = conn_id, "a seed-002 device disconnected")
            }
            (_, Some(u)) => {
                tracing::debug!(user = %u, conn = conn_id, "a seed-002 viewer disconnected")
            }
            _ => tracing::debug!(conn = conn_id, "a seed-002 socket closed before hello"),
        }
    }

    fn context<'a>(&'a self, ts: &'a str) -> Context<'a> {
        Context {
            now: Instant::now(),
            unix: crate::turn::unix_now(),
            ts,
            key: &self.key,
            devices: &self.devices,
        }
    }

    /// Whether the other side of each session is still there: for a
    /// viewer, the device still at the address it had; for a device, the
    /// session's record still kept by its viewer (missing twice in a row:
    /// a delivery that ends it may be on its way).
    async fn sweep(
        &self,
        conn: &mut Conn,
        suspects: &mut HashSet<String>,
        ts: &str,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let sessions: Vec<(String, rules::Side)> = conn
            .sessions()
            .iter()
            .map(|(s, side)| (s.clone(), side.clone()))
            .collect();
        for (session, side) in sessions {
            match conn.role() {
                Role::Viewer => match self.bus.find_device(&side.device).await {
                    Ok(at) if at.as_ref() == Some(&side.peer) => {
                        let _ = self.bus.keep_session(&session, SESSION_TTL).await;
                    }
                    Ok(_) => {
                        tracing::info!(%session, device = %side.device, "the device of a watch is gone");
                        out.extend(conn.lost_peer(&session, "device_disconnected", ts));
                    }
                    Err(e) => tracing::warn!("{e}"),
                },
                Role::Device => match self.bus.keep_session(&session, SESSION_TTL).await {
                    Ok(true) => {
                        suspects.remove(&session);
                    }
                    Ok(false) if !suspects.insert(session.clone()) => {
                        suspects.remove(&session);
                        tracing::info!(%session, "the viewer of a watch is gone");
                        out.extend(conn.lost_peer(&session, "viewer_disconnected", ts));
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!("{e}"),
                },
            }
        }
        out
    }

    /// Carries out `actions` (and what they lead to); true once the socket
    /// is closed.
    async fn perform<S>(
        &self,
        me: &Addr,
        conn: &mut Conn,
        sink: &mut S,
        actions: Vec<Action>,
        ip: IpAddr,
    ) -> bool
    where
        S: futures_util::Sink<WsMessage> + Unpin,
    {
        let mut queue: VecDeque<Action> = actions.into();
        let mut closed = false;
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send(text) => {
                    if !closed && sink.send(WsMessage::Text(text.into())).await.is_err() {
                        closed = true;
                    }
                }
                Action::Close(code, reason) => {
                    if !closed {
                        if code != GOING_AWAY || reason != "Server shutting down" {
                            tracing::info!(
                                conn = me.conn,
                                code,
                                reason,
                                "closing a seed-002 socket"
                            );
                        }
                        let frame = CloseFrame {
                            code: CloseCode::from(code),
                            reason: reason.into(),
                        };
                        let _ = sink.send(WsMessage::Close(Some(frame))).await;
                        let _ = sink.flush().await;
                    }
                    closed = true;
                }
                Action::Deliver(to, d) => {
                    if let Err(e) = self.bus.deliver(&to, d).await {
                        tracing::warn!("a seed-002 message was not delivered: {e}");
                    }
                }
                Action::ClaimDevice(device) => {
                    match self
                        .bus
                        .claim_device(&device, me, self.limits.device_silence)
                        .await
                    {
                        Ok(old) => {
                            tracing::info!(%device, conn = me.conn, replaced = old.is_some(), "a seed-002 device connected");
                            if let Some(old) = old {
                                if let Err(e) = self.bus.deliver(&old, Delivery::Replaced).await {
                                    tracing::warn!("{e}");
                                }
                            }
                        }
                        Err(e) => {
                            tracing::error!(%device, "cannot take the device's place in the fleet: {e}");
                            queue.push_front(Action::Close(SERVER_ERROR, "Server error"));
                        }
                    }
                }
                Action::DeviceAlive(device) => {
                    if let Err(e) = self
                        .bus
                        .keep_device(&device, me, self.limits.device_silence)
                        .await
                    {
                        tracing::warn!("{e}");
                    }
                }
                Action::ReleaseDevice(device) => {
                    if let Err(e) = self.bus.release_device(&device, me).await {
                        tracing::warn!("{e}");
                    }
                }
                Action::FindDevice { device, request_id } => {
                    let ts = timestamp();
                    let rid = request_id.as_deref();
                    let next = match self.bus.find_device(&device).await {
                        Ok(None) => conn.watch_refused(rid, "Device is offline", &ts),
                        Err(e) => {
                            tracing::error!("{e}");
                            conn.watch_refused(rid, "Server error", &ts)
                        }
                        Ok(Some(device_at)) => {
                            self.open_session(me, conn, &device, device_at, rid, &ts)
                                .await
                        }
                    };
                    queue.extend(next);
                }
                Action::Presence(device, presence) => {
                    if let Err(e) = self.bus.set_presence(&device, presence, PRESENCE_TTL).await {
                        tracing::warn!("{e}");
                    }
                }
                Action::SessionEnded(session) => {
                    tracing::info!(%session, conn = me.conn, "a watch ended");
                    if let Err(e) = self.bus.end_session(&session).await {
                        tracing::warn!("{e}");
                    }
                }
                Action::Refused(limit, what) => {
                    self.refusals.refused(ip, limit, format_args!("{what}"));
                }
            }
        }
        closed
    }

    async fn open_session(
        &self,
        me: &Addr,
        conn: &mut Conn,
        device: &str,
        device_at: Addr,
        rid: Option<&str>,
        ts: &str,
    ) -> Vec<Action> {
        let user = conn.user().unwrap_or_default().to_string();
        let session = new_session_id();
        let record = SessionRecord {
            session: session.clone(),
            device: device.to_string(),
            user: user.clone(),
            device_at: device_at.clone(),
            viewer_at: me.clone(),
            started_unix: crate::turn::unix_now(),
        };
        if let Err(e) = self.bus.put_session(&record, SESSION_TTL).await {
            tracing::error!("{e}");
            return conn.watch_refused(rid, "Server error", ts);
        }
        tracing::info!(%session, %device, %user, "a watch started");
        let (viewer_ice, device_ice) = self.session_ice(&user, &session);
        conn.watch_ready(
            me,
            &session,
            device,
            device_at,
            rid,
            &viewer_ice,
            &device_ice,
            ts,
        )
    }

    /// Whether the request comes from the signed-in owner.
    fn owner_signed_in(&self, headers: &HeaderMap) -> bool {
        signed_in_as_owner(self.owner.as_deref(), headers)
    }

    /// The registered devices, online or not, with their last presence.
    async fn devices_report(&self) -> Value {
        let mut ids: Vec<&String> = self.devices.iter().collect();
        ids.sort();
        let mut list = Vec::new();
        for id in ids {
            let online = self.bus.find_device(id).await.ok().flatten().is_some();
            let presence = self.bus.presence(id).await.ok().flatten();
            list.push(json!({ "device_id": id, "online": online, "presence": presence }));
        }
        json!({ "devices": list })
    }
}

/// A session id as the seed shows them: a version 4 UUID.
fn new_session_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source works");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

pub fn router<S: Clone + Send + Sync + 'static>(relay: Arc<DeviceRelay>) -> Router<S> {
    Router::new()
        .route("/ws/device", get(ws_device))
        .route("/ws/viewer", get(ws_viewer))
        .route("/watch/{device}", get(watch_page))
        .route("/watch/{device}/token", post(watch_token))
        .route("/devices.json", get(devices_json))
        .with_state(relay)
}

async fn ws_device(
    State(relay): State<Arc<DeviceRelay>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    upgrade(relay, peer, req, Role::Device)
}

async fn ws_viewer(
    State(relay): State<Arc<DeviceRelay>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    upgrade(relay, peer, req, Role::Viewer)
}

/// The WebSocket handshake (RFC 6455), then the socket on a task of its own.
fn upgrade(relay: Arc<DeviceRelay>, peer: SocketAddr, mut req: Request, role: Role) -> Response {
    let ip = client_address(peer.ip(), req.headers());
    let h = req.headers();
    let has = |name: header::HeaderName, word: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case(word)))
        })
    };
    let key = h.get(header::SEC_WEBSOCKET_KEY).cloned();
    let version_13 = h
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let (Some(key), true, true, true) = (
        key,
        version_13,
        has(header::UPGRADE, "websocket"),
        has(header::CONNECTION, "upgrade"),
    ) else {
        return (
            StatusCode::BAD_REQUEST,
            "a seed-002 WebSocket endpoint: connect with a WebSocket\n",
        )
            .into_response();
    };
    if !relay.admit(ip) {
        return (StatusCode::TOO_MANY_REQUESTS, "too many connections\n").into_response();
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let max = relay.limits.max_message + 1024;
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut config = WebSocketConfig::default();
                config.max_message_size = Some(max);
                config.max_frame_size = Some(max);
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    WsRole::Server,
                    Some(config),
                )
                .await;
                relay.clone().run_socket(ws, role, ip).await;
            }
            Err(e) => tracing::debug!(%ip, "a WebSocket upgrade failed: {e}"),
        }
        relay.forget(ip);
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = r.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The ring link: the owner signs in first, then the viewer page watches.
async fn watch_page(
    State(relay): State<Arc<DeviceRelay>>,
    Path(device): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !link_safe(&device) {
        return page(
            StatusCode::NOT_FOUND,
            "No such doorbell",
            "<p>This link names no doorbell.</p>",
        );
    }
    let with_token = query.contains_key("token");
    if !with_token && !relay.owner_signed_in(&headers) {
        if relay.owner.is_none() {
            return page(
                StatusCode::FORBIDDEN,
                "Sign-in is off",
                "<p>This server has no owner password, so nobody can sign in to watch. \
                 Make one with <code>doorbell passwd</code> and start <code>doorbell serve</code> \
                 with <code>--owner-password-file</code> (see docs/install.md).</p>",
            );
        }
        // Relative, like the owner pages: behind a proxy's path prefix the
        // login page is beside this one's parent.
        let to = format!("../login?next=watch/{device}");
        let mut r = StatusCode::SEE_OTHER.into_response();
        if let Ok(v) = HeaderValue::from_str(&to) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return no_store(r);
    }
    if !with_token && !relay.devices.contains(&device) {
        return page(
            StatusCode::NOT_FOUND,
            "No such doorbell",
            "<p>This server does not know this doorbell (see <code>--device</code>).</p>",
        );
    }
    let mut r = relay.watch_page.clone().into_response();
    secure_headers(r.headers_mut(), "text/html; charset=utf-8");
    r
}

/// A viewer token for the signed-in owner, for one device.
async fn watch_token(
    State(relay): State<Arc<DeviceRelay>>,
    Path(device): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !relay.owner_signed_in(&headers) {
        return no_store(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "message": "Sign in first" })),
            )
                .into_response(),
        );
    }
    if !relay.devices.contains(&device) {
        return no_store(
            (
                StatusCode::NOT_FOUND,
                Json(json!({ "message": "Device not found" })),
            )
                .into_response(),
        );
    }
    let (token, expires) = relay.owner_token(&device);
    no_store(
        Json(json!({ "token": token, "user_id": OWNER_USER, "expires_unix": expires }))
            .into_response(),
    )
}

async fn devices_json(State(relay): State<Arc<DeviceRelay>>, headers: HeaderMap) -> Response {
    if !relay.owner_signed_in(&headers) {
        return no_store(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "message": "Sign in first" })),
            )
                .into_response(),
        );
    }
    no_store(Json(relay.devices_report().await).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_version_4_uuids() {
        let a = new_session_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        assert_ne!(a, new_session_id());
    }
}
