//! `doorbell serve`: the room signaling server and the web viewer.
//!
//! A drop-in replacement for the original design's Flask-SocketIO server: the
//! same events on the default namespace, one argument each, the same room
//! rules (see [`rooms`]), Engine.IO v4 / Socket.IO v5 over polling and
//! WebSocket (socketioxide). It also serves the viewer page from `assets/`,
//! compiled into the binary, so it works with no internet access.
//!
//! Limits: request payloads (64 KiB of SDP plus framing), packets buffered per
//! client, concurrent connections (in all and per address), rooms, and joins
//! per client per minute. An abuser is refused and logged once a minute per
//! address and limit (a flood must not flood the journal too); everyone else
//! goes on.
//!
//! With a look key (`--look-key-file`, the same key as the doorbell's
//! `signaling.look_key_file`), the doorbell says `doorbell_hello` with it
//! after connecting, and the owner page's "Look now" button asks it for a
//! live view (`look`; it answers `look_started` with the room, or
//! `look_refused`), then sends the owner to the viewer page of that room.

pub mod device_relay;
pub mod fleet;
pub mod fleet_redis;
pub mod owner;
mod owner_pages;
pub mod rooms;
pub mod sse_relay;
pub mod viewer_token;
mod web;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::{DisconnectReason, Sid};
use socketioxide::SocketIo;
use std::collections::HashMap;
use std::future::ready;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::signaling::protocol::{room_tag, valid_room, valid_seat, MAX_SDP_BYTES};
use crate::spec::ice::IceServer;
use crate::turn::TurnRest;
use rooms::{JoinOutcome, Limits, RoomTable};
use web::{client_address, secure_headers, Refusals};

/// Largest Engine.IO payload accepted (an SDP of [`MAX_SDP_BYTES`] plus JSON).
const MAX_PAYLOAD: u64 = MAX_SDP_BYTES as u64 + 16 * 1024;

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub limits: Limits,
    pub max_connections: usize,
    /// Connections from one address at a time (a home behind one NAT address
    /// needs a few: the doorbell, the owners' phones).
    pub max_connections_per_address: usize,
    /// STUN/TURN servers for viewers. Those without credentials are public
    /// (`/config.json`); a TURN server's password goes only to a viewer that
    /// joined a live room, in its `ice_servers` message.
    pub viewer_ice_servers: Vec<IceServer>,
    /// A TURN server taking TURN REST credentials: each viewer that joins a
    /// live room gets its own, valid for the server's TTL.
    pub viewer_turn: Option<Arc<TurnRest>>,
    /// The owner's password (its Argon2 hash) and login limits; `None`: the
    /// owner pages are off.
    pub owner: Option<OwnerSettings>,
    /// The doorbell's history directory (`history.dir`) when it runs on this
    /// machine: the owner's history page shows it.
    pub history_dir: Option<std::path::PathBuf>,
    /// The key the doorbell proves itself with (`doorbell_hello`); `None`:
    /// no "Look now" button.
    pub look_key: Option<crate::secret::Secret>,
    /// Seed 002's devices, viewer tokens and limits, and where the fleet's
    /// shared state is.
    pub fleet: device_relay::FleetSettings,
}

#[derive(Debug, Clone)]
pub struct OwnerSettings {
    pub password: owner::PasswordHashString,
    pub limits: owner::LoginLimits,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_connections: 1000,
            max_connections_per_address: 20,
            viewer_ice_servers: IceServer::default_servers(),
            viewer_turn: None,
            owner: None,
            history_dir: None,
            look_key: None,
            fleet: device_relay::FleetSettings::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Fleet(#[from] fleet::FleetError),
}

/// The server's shared state.
struct Hub {
    table: Mutex<RoomTable<Sid>>,
    io: OnceLock<SocketIo>,
    connections: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    /// When each (address, limit) was last logged at warn level.
    refusals: Arc<Refusals>,
    /// TURN credentials minted for each connected viewer: secrets for the
    /// log until the viewer is gone.
    minted: Mutex<HashMap<Sid, String>>,
    /// Messages for sockets not yet marked connected (see [`Hub::emit_to`]).
    early: Mutex<HashMap<Sid, Vec<(String, Value)>>>,
    /// The doorbell's connection, once it said `doorbell_hello` with the
    /// look key.
    doorbell: Mutex<Option<Sid>>,
    /// "Look now" requests waiting for the doorbell's answer.
    looks: Mutex<HashMap<String, tokio::sync::oneshot::Sender<Result<String, String>>>>,
    settings: ServerSettings,
}

/// How long "Look now" waits for the doorbell.
const LOOK_LIMIT: Duration = Duration::from_secs(10);

/// The client's address, from the connection (axum's `ConnectInfo`) or, when
/// the connection comes from a reverse proxy on this machine, the address
/// that proxy appended to `X-Forwarded-For` (without this, every client of a
/// proxied server would be one address to the per-address limits).
fn address_of(s: &SocketRef) -> IpAddr {
    let parts = s.req_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
    client_address(peer, &parts.headers)
}

fn emit_now(socket: &SocketRef, sid: Sid, event: &str, arg: &Value) {
    // A one-element tuple: exactly one argument, even when it is an array.
    if let Err(e) = socket.emit(event, &(arg,)) {
        tracing::debug!(%sid, event, "emit failed: {e}");
    }
}

impl Hub {
    fn table(&self) -> std::sync::MutexGuard<'_, RoomTable<Sid>> {
        // The table is only mutated through whole operations; a panic mid-way
        // cannot leave it half-updated, so a poisoned lock is safe to reuse.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `event` to `sid`, in order with what was sent to it before.
    ///
    /// socketioxide sends a client its CONNECT acknowledgement a moment
    /// before it marks the socket connected, on another task; a client that
    /// joins at once can have its join handled in between, and an emit then
    /// fails as if the socket were closed (the soak lost one `joined` in
    /// about a thousand rings that way). Such messages wait in a queue for
    /// the socket to be marked connected, and everything after them queues
    /// behind them.
    fn emit_to(self: &Arc<Self>, sid: Sid, event: &str, arg: &Value) {
        let Some(io) = self.io.get() else { return };
        let Some(socket) = io.get_socket(sid) else {
            return;
        };
        let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = early.get_mut(&sid) {
            queue.push((event.to_string(), arg.clone()));
            return;
        }
        if !socket.connected() {
            early.insert(sid, vec![(event.to_string(), arg.clone())]);
            drop(early);
            let hub = self.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(2);
                while !socket.connected() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let queued = hub
                    .early
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&sid)
                    .unwrap_or_default();
                for (event, arg) in queued {
                    emit_now(&socket, sid, &event, &arg);
                }
            });
            return;
        }
        emit_now(&socket, sid, event, arg);
    }

    fn refused(&self, addr: IpAddr, limit: &'static str, what: std::fmt::Arguments<'_>) {
        self.refusals.refused(addr, limit, what);
    }

    /// Counts a new connection; false when it is over a limit.
    fn on_connect(&self, s: &SocketRef, addr: IpAddr) -> bool {
        let n = self.connections.fetch_add(1, Ordering::AcqRel) + 1;
        let from_addr = {
            let mut per = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
            let c = per.entry(addr).or_insert(0);
            *c += 1;
            *c
        };
        if n > self.settings.max_connections {
            self.refused(
                addr,
                "connections",
                format_args!(
                    "{n} connections open, the limit is {}",
                    self.settings.max_connections
                ),
            );
            return false;
        }
        if from_addr > self.settings.max_connections_per_address {
            self.refused(
                addr,
                "connections per address",
                format_args!(
                    "{from_addr} connections from this address, the limit is {}",
                    self.settings.max_connections_per_address
                ),
            );
            return false;
        }
        tracing::debug!(sid = %s.id, %addr, connections = n, "client connected");
        true
    }

    /// Undoes [`Hub::on_connect`]'s counting.
    fn forget_connection(&self, addr: IpAddr) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
        let mut per = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = per.get_mut(&addr) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                per.remove(&addr);
            }
        }
    }

    /// Lets a new socket in, or refuses it (over a connection limit: the
    /// client gets a CONNECT error with the reason), and registers its
    /// event handlers before the client is acknowledged.
    ///
    /// The handlers are plain closures that do their work and return a ready
    /// future: socketioxide calls a handler as the packet is read, in order,
    /// but runs the future it returns as a task of its own. Work done inside
    /// an `async` block would run in whatever order the runtime picks: a
    /// viewer's `bye` was seen after its disconnect, an `ice_candidate`
    /// could overtake its `invite`.
    fn admit(self: &Arc<Self>, s: &SocketRef) -> Result<(), &'static str> {
        let addr = address_of(s);
        if !self.on_connect(s, addr) {
            self.forget_connection(addr);
            return Err("too many connections");
        }
        let h = self.clone();
        s.on("join", move |s: SocketRef, TryData::<Value>(d)| {
            h.on_join(&s, arg(d));
            ready(())
        });
        for event in ["invite", "ok", "ice_candidate"] {
            let h = self.clone();
            s.on(event, move |s: SocketRef, TryData::<Value>(d)| {
                h.on_relay(&s, event, arg(d));
                ready(())
            });
        }
        let h = self.clone();
        s.on("bye", move |s: SocketRef, TryData::<Value>(d)| {
            h.on_bye(&s, arg(d));
            ready(())
        });
        if self.settings.look_key.is_some() {
            for event in ["doorbell_hello", "look_started", "look_refused"] {
                let h = self.clone();
                s.on(event, move |s: SocketRef, TryData::<Value>(d)| {
                    h.on_doorbell(&s, event, arg(d));
                    ready(())
                });
            }
        }
        let h = self.clone();
        s.on_disconnect(move |s: SocketRef, reason: DisconnectReason| {
            h.on_disconnect(&s, reason);
            ready(())
        });
        Ok(())
    }

    fn on_disconnect(self: &Arc<Self>, s: &SocketRef, reason: DisconnectReason) {
        let addr = address_of(s);
        self.forget_connection(addr);
        if reason == DisconnectReason::PacketParsingError {
            self.refused(
                addr,
                "malformed or oversized packets",
                format_args!("dropped the connection: {reason}"),
            );
        }
        {
            let mut doorbell = self.doorbell.lock().unwrap_or_else(|p| p.into_inner());
            if *doorbell == Some(s.id) {
                *doorbell = None;
                tracing::info!(sid = %s.id, "the doorbell disconnected: no \"Look now\" until it is back");
            }
        }
        let room = self.table().room_of(&s.id).map(str::to_string);
        let kept_until = self.table().disconnect(&s.id, Instant::now());
        self.forget_minted(&s.id);
        let room = room.as_deref().map(|r| room_tag(r).to_string());
        match kept_until {
            Some(until) => {
                tracing::info!(sid = %s.id, room = ?room, "viewer connection dropped; its seat is kept for a rejoin");
                let hub = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(until.into()).await;
                    hub.expire_seats();
                });
            }
            None => tracing::debug!(sid = %s.id, room = ?room, "client disconnected"),
        }
    }

    /// `doorbell_hello` (with the look key: this is the doorbell), and the
    /// doorbell's answers to `look`.
    fn on_doorbell(self: &Arc<Self>, s: &SocketRef, event: &str, arg: Option<Value>) {
        use crate::signaling::protocol::Message;
        let args: Vec<Value> = arg.into_iter().collect();
        let message = match Message::parse(event, &args) {
            Ok(m) => m,
            Err(e) => {
                return self.refused(
                    address_of(s),
                    "malformed doorbell messages",
                    format_args!("{e}"),
                )
            }
        };
        let is_doorbell = *self.doorbell.lock().unwrap_or_else(|p| p.into_inner()) == Some(s.id);
        match message {
            Message::DoorbellHello { key } => {
                let digest = |k: &str| sha2::Sha256::digest(k.as_bytes());
                use sha2::Digest;
                let right = self
                    .settings
                    .look_key
                    .as_ref()
                    .is_some_and(|k| digest(k.expose()) == digest(&key));
                if !right {
                    return self.refused(
                        address_of(s),
                        "wrong look keys",
                        format_args!("doorbell_hello with a wrong look key"),
                    );
                }
                let old = self
                    .doorbell
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .replace(s.id);
                tracing::info!(sid = %s.id, replaced = old.is_some(), "the doorbell connected: \"Look now\" reaches it");
            }
            Message::LookStarted { request, room } if is_doorbell => {
                self.answer_look(&request, Ok(room));
            }
            Message::LookRefused { request, reason } if is_doorbell => {
                self.answer_look(&request, Err(reason));
            }
            other => self.refused(
                address_of(s),
                "doorbell messages from others",
                format_args!("{} from a client that is not the doorbell", other.event()),
            ),
        }
    }

    fn answer_look(&self, request: &str, outcome: Result<String, String>) {
        let waiting = self
            .looks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(request);
        if let Some(tx) = waiting {
            let _ = tx.send(outcome);
        }
    }

    /// "Look now": asks the doorbell for a live view; its room, or why not.
    async fn look(self: Arc<Self>) -> Result<String, String> {
        let Some(sid) = *self.doorbell.lock().unwrap_or_else(|p| p.into_inner()) else {
            return Err("the doorbell is not connected to this server".into());
        };
        let request = crate::signaling::random_room().map_err(|e| e.to_string())?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.looks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(request.clone(), tx);
        self.emit_to(sid, "look", &json!({ "request": request }));
        let outcome = tokio::time::timeout(LOOK_LIMIT, rx).await;
        self.looks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&request);
        match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(_)) | Err(_) => Err(format!(
                "the doorbell did not answer in {} s",
                LOOK_LIMIT.as_secs()
            )),
        }
    }

    /// Seats whose grace is over are given up; the doorbell hears `bye`.
    fn expire_seats(self: &Arc<Self>) {
        let expired = self.table().expire(Instant::now());
        for e in expired {
            tracing::info!(room = %room_tag(&e.room), "a viewer did not come back in time; its seat is given up");
            for other in e.remaining {
                self.emit_to(other, "bye", &json!(e.room));
            }
        }
    }

    fn on_join(self: &Arc<Self>, s: &SocketRef, arg: Option<Value>) {
        // A room name, or (our page) `{"room": NAME, "seat": TOKEN}`.
        let (room, seat) = match arg {
            Some(Value::Object(mut o)) => match (o.remove("room"), o.remove("seat")) {
                (Some(Value::String(r)), Some(Value::String(seat)))
                    if valid_room(&r) && valid_seat(&seat) =>
                {
                    (r, Some(seat))
                }
                (Some(Value::String(r)), None) if valid_room(&r) => (r, None),
                _ => {
                    tracing::info!(sid = %s.id, "ignored join with a bad room or seat");
                    return;
                }
            },
            Some(Value::String(r)) if valid_room(&r) => (r, None),
            other => {
                tracing::info!(sid = %s.id, "ignored join with a bad room argument: {}", describe(&other));
                return;
            }
        };
        let outcome =
            self.table()
                .join(s.id, address_of(s), &room, seat.as_deref(), Instant::now());
        let reply = |event: &str| self.emit_to(s.id, event, &json!(room));
        match outcome {
            JoinOutcome::Created => {
                tracing::info!(sid = %s.id, room = %room_tag(&room), "room created");
                reply("created");
            }
            JoinOutcome::Joined { other } => {
                tracing::info!(sid = %s.id, room = %room_tag(&room), "second member joined");
                self.send_ice_servers(s.id);
                reply("joined");
                self.emit_to(other, "new_peer", &json!(room));
            }
            JoinOutcome::Rejoined { other, replaced } => {
                tracing::info!(sid = %s.id, room = %room_tag(&room), "the viewer took its seat back");
                if let Some(old) = replaced {
                    // The old connection of this seat (a phone's previous
                    // network) is silent, not gone: close it.
                    self.forget_minted(&old);
                    if let Some(socket) = self.io.get().and_then(|io| io.get_socket(old)) {
                        let _ = socket.disconnect();
                    }
                }
                match other {
                    Some(other) => {
                        self.send_ice_servers(s.id);
                        reply("joined");
                        self.emit_to(other, "new_peer", &json!(room));
                    }
                    // Nobody to call: the page sees the ring is over.
                    None => reply("created"),
                }
            }
            JoinOutcome::AlreadyIn { alone: true } => reply("created"),
            JoinOutcome::AlreadyIn { alone: false } => {
                self.send_ice_servers(s.id);
                reply("joined");
            }
            JoinOutcome::Full => {
                tracing::info!(sid = %s.id, room = %room_tag(&room), "room full");
                reply("full");
            }
            JoinOutcome::Refused(why) => {
                self.refused(address_of(s), why, format_args!("a join: {why}"));
                reply("full");
            }
        }
    }

    /// Gives a viewer that joined a live room its STUN/TURN servers, with
    /// TURN REST credentials minted for it alone.
    fn send_ice_servers(self: &Arc<Self>, viewer: Sid) {
        let mut servers = self.settings.viewer_ice_servers.clone();
        if let Some(turn) = &self.settings.viewer_turn {
            let m = turn.mint(crate::turn::unix_now(), "viewer");
            crate::redact::add(&m.credential);
            let old = self
                .minted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(viewer, m.credential.clone());
            if let Some(old) = old {
                crate::redact::remove(&old);
            }
            servers.push(m);
        }
        if servers.is_empty() {
            return;
        }
        let m = crate::signaling::protocol::Message::IceServers(servers);
        self.emit_to(viewer, m.event(), &m.argument());
    }

    fn forget_minted(&self, sid: &Sid) {
        let gone = self
            .minted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sid);
        if let Some(c) = gone {
            crate::redact::remove(&c);
        }
    }

    fn on_relay(self: &Arc<Self>, s: &SocketRef, event: &str, arg: Option<Value>) {
        let arg = arg.unwrap_or(Value::Null);
        let size = arg.to_string().len();
        if size > MAX_SDP_BYTES + 1024 {
            self.refused(
                address_of(s),
                "message size",
                format_args!("dropped a {size}-byte {event} message"),
            );
            return;
        }
        let others = self.table().others(&s.id);
        if others.is_empty() {
            tracing::debug!(sid = %s.id, event, "nobody to relay to");
        }
        for other in others {
            self.emit_to(other, event, &arg);
        }
    }

    fn on_bye(self: &Arc<Self>, s: &SocketRef, arg: Option<Value>) {
        let left = self.table().bye(&s.id);
        match left {
            Some((room, remaining)) => {
                tracing::info!(sid = %s.id, room = %room_tag(&room), "left the room");
                // Relay the name the sender gave, as the original does; ours if none.
                let arg = match arg {
                    Some(v @ Value::String(_)) => v,
                    _ => json!(room),
                };
                for other in remaining {
                    self.emit_to(other, "bye", &arg);
                }
            }
            None => tracing::debug!(sid = %s.id, "bye from a client in no room"),
        }
    }
}

/// Room names are secrets: log only a prefix.
fn describe(v: &Option<Value>) -> &'static str {
    match v {
        None | Some(Value::Null) => "none",
        Some(Value::String(_)) => "an invalid room name",
        Some(Value::Object(_)) => "an object",
        Some(Value::Array(_)) => "an array",
        Some(_) => "a number or boolean",
    }
}

fn arg(data: Result<Value, impl std::fmt::Display>) -> Option<Value> {
    match data {
        Ok(Value::Null) | Err(_) => None,
        Ok(v) => Some(v),
    }
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    hub: Arc<Hub>,
    relay: Arc<device_relay::DeviceRelay>,
}

impl Server {
    /// Number of rooms open right now.
    pub fn room_count(&self) -> usize {
        self.hub.table().room_count()
    }

    /// Number of members connected in `room`.
    pub fn members(&self, room: &str) -> usize {
        self.hub.table().members(room).len()
    }

    /// Seed-002 sockets open on this instance.
    pub fn fleet_connections(&self) -> usize {
        self.relay.connections()
    }

    /// A viewer token for the owner to watch `device` (as the ring link's
    /// page gets one), and its expiry.
    pub fn owner_token(&self, device: &str) -> (String, u64) {
        self.relay.owner_token(device)
    }
}

/// The fleet bus `settings` ask for: in memory, or shared through Redis.
async fn fleet_bus(
    settings: &device_relay::FleetSettings,
    cancel: &CancellationToken,
) -> Result<Arc<dyn fleet::FleetBus>, ServerError> {
    let instance = crate::signaling::random_room()
        .map_err(|e| ServerError::Serve(std::io::Error::other(e)))?;
    match &settings.redis {
        None => Ok(Arc::new(fleet::MemoryBus::new(&instance))),
        Some(url) => Ok(fleet_redis::RedisBus::connect(url, &instance, cancel.clone()).await?),
    }
}

/// Binds `addr` and serves until `cancel`. Returns once listening.
pub async fn start(
    addr: &str,
    settings: ServerSettings,
    cancel: CancellationToken,
) -> Result<Server, ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(ServerError::Serve)?;
    let bus = fleet_bus(&settings.fleet, &cancel).await?;
    let hub = Arc::new(Hub {
        table: Mutex::new(RoomTable::new(settings.limits)),
        io: OnceLock::new(),
        connections: AtomicUsize::new(0),
        per_address: Mutex::new(HashMap::new()),
        refusals: Arc::new(Refusals::default()),
        minted: Mutex::new(HashMap::new()),
        early: Mutex::new(HashMap::new()),
        doorbell: Mutex::new(None),
        looks: Mutex::new(HashMap::new()),
        settings,
    });
    // The same bound for long-polling bodies and WebSocket messages (the
    // WebSocket default would be 64 MiB a message).
    let (layer, io) = SocketIo::builder()
        .max_payload(MAX_PAYLOAD)
        .ws_max_message_size(MAX_PAYLOAD as usize)
        .ws_max_frame_size(MAX_PAYLOAD as usize)
        .max_buffer_size(128)
        .build_layer();
    let _ = hub.io.set(io.clone());
    let ns_hub = hub.clone();
    // Everything about a new socket happens in a connect *middleware*:
    // socketioxide runs it before it acknowledges the client's CONNECT, while
    // it spawns the connect handler as a task after the acknowledgement and
    // drops every event that arrives before `on` registered its handler. A
    // client emits `join` the moment it is acknowledged; with the handlers
    // registered in the (async) handler, about one join in twenty was lost
    // and its viewer waited for nothing.
    io.ns(
        "/",
        (async |_: SocketRef| {}).with(move |s: SocketRef| {
            let hub = ns_hub.clone();
            async move { hub.admit(&s) }
        }),
    );
    // Seed 004's SSE sessions beside the room protocol.
    let (sse, _) = sse_relay::router(
        sse_relay::RelaySettings {
            max_sessions: hub.settings.limits.max_rooms,
            ice_servers: hub.settings.viewer_ice_servers.clone(),
            turn: hub.settings.viewer_turn.clone(),
        },
        hub.refusals.clone(),
    );
    let owner = hub
        .settings
        .owner
        .as_ref()
        .map(|o| Arc::new(owner::Owner::new(o.password.clone(), o.limits)));
    // Seed 002's device and viewer sockets, and the ring link's page.
    let relay = device_relay::DeviceRelay::new(
        hub.settings.fleet.clone(),
        device_relay::RelayParts {
            bus,
            ice_servers: hub.settings.viewer_ice_servers.clone(),
            turn: hub.settings.viewer_turn.clone(),
            owner: owner.clone(),
            refusals: hub.refusals.clone(),
            max_connections: hub.settings.max_connections,
            max_connections_per_address: hub.settings.max_connections_per_address,
            watch_page: INDEX_HTML
                .replace("href=\"viewer.css\"", "href=\"../viewer.css\"")
                .replace("src=\"viewer.js\"", "src=\"../viewer.js\""),
            cancel: cancel.clone(),
        },
    );
    let app = Router::new()
        .route("/", get(page_index))
        .route("/viewer.js", get(page_js))
        .route("/viewer.css", get(page_css))
        .route("/config.json", get(page_config))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(owner_pages::router(owner_pages::Site {
            owner,
            refusals: hub.refusals.clone(),
            status: {
                let hub = hub.clone();
                Box::new(move || owner_pages::Status {
                    rings: hub.table().room_count(),
                    connections: hub.connections.load(Ordering::Acquire),
                    doorbell: hub.settings.look_key.as_ref().map(|_| {
                        hub.doorbell
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .is_some()
                    }),
                })
            },
            look: hub.settings.look_key.as_ref().map(|_| {
                let hub = hub.clone();
                Box::new(move || {
                    let hub = hub.clone();
                    Box::pin(hub.look()) as futures_util::future::BoxFuture<'static, _>
                }) as owner_pages::Look
            }),
            started: Instant::now(),
            history_dir: hub.settings.history_dir.clone(),
        }))
        .merge(sse)
        .merge(device_relay::router(relay.clone()))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(hub.clone())
        .layer(layer);
    tokio::spawn(async move {
        let serve = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(cancel.cancelled_owned());
        if let Err(e) = serve.await {
            tracing::error!("signaling server stopped: {e}");
        }
    });
    tracing::info!(addr = %local, "signaling server listening");
    Ok(Server {
        addr: local,
        hub,
        relay,
    })
}

const INDEX_HTML: &str = include_str!("../../assets/viewer/index.html");
const VIEWER_JS: &str = include_str!("../../assets/viewer/viewer.js");
const VIEWER_CSS: &str = include_str!("../../assets/viewer/viewer.css");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    secure_headers(r.headers_mut(), content_type);
    r
}

async fn page_index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

async fn page_js() -> Response {
    asset(VIEWER_JS, "text/javascript; charset=utf-8")
}

async fn page_css() -> Response {
    asset(VIEWER_CSS, "text/css; charset=utf-8")
}

/// The public ICE servers: those without credentials. Anyone can fetch this,
/// so a TURN password never appears here (see [`Hub::send_ice_servers`]).
async fn page_config(State(hub): State<Arc<Hub>>) -> Response {
    let servers: Vec<Value> = hub
        .settings
        .viewer_ice_servers
        .iter()
        .filter(|s| s.credential.is_empty())
        .map(|s| json!({ "urls": s.urls }))
        .collect();
    let mut r = axum::Json(json!({ "iceServers": servers })).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
