//! The rules of one seed-002 connection, without IO: what a device or a
//! viewer may say and when, what each message makes the server do, which
//! sessions the connection is part of.
//!
//! A [`Conn`] takes the socket's text frames, what other connections
//! deliver to it ([`Delivery`]), the passing of time and its own end, and
//! answers with [`Action`]s for its handler to carry out: a message for its
//! own socket, a close, a delivery to another connection (on this instance
//! or, through the fleet bus, another one), or a question only IO can
//! answer (is the device online, where). Each side keeps the sessions it is
//! in and the address of the other side: a relayed message is checked here,
//! against the sender's own sessions, without asking anyone, so a message
//! can never reach a session its sender is not part of.
//!
//! The seed's words are kept: errors "Device not found", "Device is
//! offline", "Session not found", "Unauthorized", "Invalid token" (as a 1008
//! close reason) answer with the request's `request_id`; `watch_ended`
//! reasons `user_ended`, `viewer_disconnected`, `device_disconnected`,
//! `error`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use super::super::viewer_token::{TokenKey, ViewerClaims};
use crate::signaling::device_ws::{candidate, envelope, ice_servers_json, valid_id, write};
use crate::spec::ice::IceServer;

/// Close codes of the seed's table.
pub const GOING_AWAY: u16 = 1001;
pub const POLICY: u16 = 1008;
pub const SERVER_ERROR: u16 = 1011;

/// How long a new connection has to say `hello`.
pub const HELLO_WAIT: Duration = Duration::from_secs(10);

/// Where a connection is: the instance of `doorbell serve` holding its
/// socket, and its number there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Addr {
    pub instance: String,
    pub conn: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Device,
    Viewer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message taken, in bytes (an SDP with room to spare).
    pub max_message: usize,
    /// Messages a connection may send per minute; past it they are
    /// answered "Rate limit exceeded", past twice it the socket is closed.
    pub messages_per_minute: usize,
    /// Watch sessions open at once per viewer connection, and per device.
    pub sessions_per_viewer: usize,
    pub sessions_per_device: usize,
    /// A device silent this long is dropped (two heartbeats and a half).
    pub device_silence: Duration,
    /// A viewer silent this long is dropped (the server pings it, so any
    /// live browser answers in time).
    pub viewer_silence: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message: 64 * 1024,
            messages_per_minute: 240,
            sessions_per_viewer: 4,
            sessions_per_device: 4,
            device_silence: Duration::from_secs(75),
            viewer_silence: Duration::from_secs(90),
        }
    }
}

/// What one connection says to another (maybe on another instance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Delivery {
    /// A relayed message of `session`, as the socket sends it.
    Message { session: String, text: String },
    /// A viewer at `peer` opened `session` with this device: `text` is the
    /// device's `watch_request`.
    Opened {
        session: String,
        peer: Addr,
        device: String,
        text: String,
    },
    /// `session` is over; `text` (a `watch_ended`) tells this side why.
    Ended {
        session: String,
        text: Option<String>,
    },
    /// A newer connection of the same device took this one's place.
    Replaced,
}

/// What the handler of a connection does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A message for this connection's socket.
    Send(String),
    /// Close this socket with a code and reason; nothing follows.
    Close(u16, &'static str),
    Deliver(Addr, Delivery),
    /// A device said hello: take its place in the fleet (a connection that
    /// held it before is sent [`Delivery::Replaced`]).
    ClaimDevice(String),
    /// The device is alive (any message counts): keep its place.
    DeviceAlive(String),
    /// The device connection is over: give its place up.
    ReleaseDevice(String),
    /// A viewer asks to watch: look the device up, then call
    /// [`Conn::watch_ready`] or [`Conn::watch_refused`].
    FindDevice {
        device: String,
        request_id: Option<String>,
    },
    /// The device's `device_presence` payload, to keep.
    Presence(String, Value),
    /// This side ended the session: forget its record.
    SessionEnded(String),
    /// A limit refused something: log it (at most once a minute per
    /// address and limit).
    Refused(&'static str, String),
}

/// What the rules need from outside for one input: the time, and what
/// tokens and known devices are.
pub struct Context<'a> {
    pub now: Instant,
    pub unix: u64,
    /// `ts` of the messages written now.
    pub ts: &'a str,
    pub key: &'a TokenKey,
    /// The devices the operator registered.
    pub devices: &'a HashSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Stage {
    /// Before `hello`: nothing else is taken.
    New,
    Device(String),
    Viewer(ViewerClaims),
}

/// A session as one side holds it: the other side's address, the device.
#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    pub peer: Addr,
    pub device: String,
}

/// One connection's state.
#[derive(Debug)]
pub struct Conn {
    role: Role,
    stage: Stage,
    sessions: BTreeMap<String, Side>,
    limits: Limits,
    opened: Instant,
    last_heard: Instant,
    window_start: Instant,
    in_window: usize,
}

fn error(request_id: Option<&str>, message: &str, ts: &str) -> Action {
    Action::Send(write(
        "error",
        request_id,
        json!({ "message": message }),
        ts,
    ))
}

/// `payload` (with the session's id added) relayed as `kind` to the other
/// side of `session`.
fn relay(side: Side, session: String, kind: &str, mut payload: Value, ts: &str) -> Vec<Action> {
    payload["session_id"] = json!(session);
    let text = write(kind, None, payload, ts);
    vec![Action::Deliver(
        side.peer,
        Delivery::Message { session, text },
    )]
}

/// `session` is over here: the other side (`peer`) is told `watch_ended`
/// with `reason`, and the bus forgets the session.
fn ending(peer: Addr, session: String, reason: &str, ts: &str) -> [Action; 2] {
    [
        Action::Deliver(
            peer,
            Delivery::Ended {
                text: Some(watch_ended(&session, reason, ts)),
                session: session.clone(),
            },
        ),
        Action::SessionEnded(session),
    ]
}

/// A `watch_ended` for `session`.
pub fn watch_ended(session: &str, reason: &str, ts: &str) -> String {
    write(
        "watch_ended",
        None,
        json!({ "session_id": session, "reason": reason }),
        ts,
    )
}

impl Conn {
    pub fn new(role: Role, limits: Limits, now: Instant) -> Conn {
        Conn {
            role,
            stage: Stage::New,
            sessions: BTreeMap::new(),
            limits,
            opened: now,
            last_heard: now,
            window_start: now,
            in_window: 0,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The device's id, once it said hello.
    pub fn device(&self) -> Option<&str> {
        match &self.stage {
            Stage::Device(d) => Some(d),
            _ => None,
        }
    }

    /// The viewer's user id, once it said hello.
    pub fn user(&self) -> Option<&str> {
        match &self.stage {
            Stage::Viewer(c) => Some(&c.user_id),
            _ => None,
        }
    }

    pub fn sessions(&self) -> &BTreeMap<String, Side> {
        &self.sessions
    }

    /// Anything from the socket (a pong too) shows it is alive.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// One text frame from the socket.
    pub fn on_text(&mut self, text: &str, cx: &Context<'_>) -> Vec<Action> {
        self.last_heard = cx.now;
        if cx.now.duration_since(self.window_start) >= Duration::from_secs(60) {
            self.window_start = cx.now;
            self.in_window = 0;
        }
        self.in_window += 1;
        if self.in_window > self.limits.messages_per_minute {
            let what = format!(
                "more than {} seed-002 messages a minute",
                self.limits.messages_per_minute
            );
            if self.in_window > 2 * self.limits.messages_per_minute {
                return vec![
                    Action::Refused("seed-002 messages per minute", what),
                    Action::Close(POLICY, "Rate limit exceeded"),
                ];
            }
            return vec![
                Action::Refused("seed-002 messages per minute", what),
                error(None, "Rate limit exceeded", cx.ts),
            ];
        }
        if text.len() > self.limits.max_message {
            return vec![
                Action::Refused(
                    "seed-002 message size",
                    format!("a {}-byte message", text.len()),
                ),
                error(None, "Message too large", cx.ts),
            ];
        }
        let m = match envelope(text) {
            Ok(m) => m,
            Err(_) if self.stage == Stage::New => {
                return vec![Action::Close(POLICY, "Unauthorized")]
            }
            Err(_) => return vec![error(None, "Invalid message", cx.ts)],
        };
        let rid = m.request_id.as_deref();
        let p = &m.payload;
        match (&self.stage, m.kind.as_str()) {
            (Stage::New, "hello") => self.hello(p, rid, cx),
            // "Always send hello first".
            (Stage::New, _) => vec![Action::Close(POLICY, "Unauthorized")],
            (_, "hello") => self.hello_again(p, rid, cx),
            (stage, "heartbeat") => {
                let mut out = vec![Action::Send(write("heartbeat_ack", rid, json!({}), cx.ts))];
                if let Stage::Device(d) = stage {
                    out.push(Action::DeviceAlive(d.clone()));
                }
                out
            }
            (Stage::Device(d), "device_presence") => vec![
                Action::Presence(d.clone(), Value::Object(p.clone())),
                Action::DeviceAlive(d.clone()),
            ],
            (Stage::Device(_), "signal_answer") => self.relay_sdp(p, rid, "answer", cx),
            (Stage::Viewer(_), "signal_offer") => self.relay_sdp(p, rid, "offer", cx),
            (_, "signal_ice") => self.relay_ice(p, rid, cx),
            (Stage::Viewer(_), "watch_request") => self.watch_request(p, rid, cx),
            (Stage::Viewer(_), "end_watch") => self.end_watch(p, rid, cx),
            (
                _,
                "signal_answer" | "signal_offer" | "watch_request" | "end_watch"
                | "device_presence",
            ) => {
                vec![error(rid, "Unauthorized", cx.ts)]
            }
            (_, other) => {
                let shown: String = other.chars().take(40).collect();
                vec![error(rid, &format!("Unknown message type: {shown}"), cx.ts)]
            }
        }
    }

    fn hello(
        &mut self,
        p: &Map<String, Value>,
        rid: Option<&str>,
        cx: &Context<'_>,
    ) -> Vec<Action> {
        match self.role {
            Role::Device => {
                let Some(id) = p.get("device_id").and_then(Value::as_str) else {
                    return vec![Action::Close(POLICY, "Device not found")];
                };
                if !valid_id(id) || !cx.devices.contains(id) {
                    return vec![Action::Close(POLICY, "Device not found")];
                }
                self.stage = Stage::Device(id.to_string());
                vec![
                    Action::ClaimDevice(id.to_string()),
                    Action::Send(write(
                        "hello_ack",
                        rid,
                        json!({ "device_id": id, "server_time": cx.ts }),
                        cx.ts,
                    )),
                ]
            }
            Role::Viewer => {
                let token = p.get("token").and_then(Value::as_str).unwrap_or("");
                match cx.key.verify(token, cx.unix) {
                    Ok(claims) => {
                        let ack = write(
                            "hello_ack",
                            rid,
                            json!({ "user_id": claims.user_id, "server_time": cx.ts }),
                            cx.ts,
                        );
                        self.stage = Stage::Viewer(claims);
                        vec![Action::Send(ack)]
                    }
                    Err(e) => vec![
                        Action::Refused("seed-002 viewer tokens", format!("a viewer hello: {e}")),
                        Action::Close(POLICY, "Invalid token"),
                    ],
                }
            }
        }
    }

    /// `hello` again: the same identity is acknowledged again, another one
    /// is refused (the connection stays what it was).
    fn hello_again(
        &mut self,
        p: &Map<String, Value>,
        rid: Option<&str>,
        cx: &Context<'_>,
    ) -> Vec<Action> {
        match &self.stage {
            Stage::Device(d) if p.get("device_id").and_then(Value::as_str) == Some(d) => {
                vec![
                    Action::Send(write(
                        "hello_ack",
                        rid,
                        json!({ "device_id": d, "server_time": cx.ts }),
                        cx.ts,
                    )),
                    Action::DeviceAlive(d.clone()),
                ]
            }
            Stage::Viewer(c) => {
                let token = p.get("token").and_then(Value::as_str).unwrap_or("");
                match cx.key.verify(token, cx.unix) {
                    Ok(again) if again.user_id == c.user_id => vec![Action::Send(write(
                        "hello_ack",
                        rid,
                        json!({ "user_id": c.user_id, "server_time": cx.ts }),
                        cx.ts,
                    ))],
                    _ => vec![error(rid, "Unauthorized", cx.ts)],
                }
            }
            _ => vec![error(rid, "Unauthorized", cx.ts)],
        }
    }

    /// The session named by the payload, if this connection is part of it.
    fn own_session(&self, p: &Map<String, Value>) -> Option<(String, Side)> {
        let id = p.get("session_id").and_then(Value::as_str)?;
        self.sessions.get(id).map(|s| (id.to_string(), s.clone()))
    }

    fn relay_sdp(
        &mut self,
        p: &Map<String, Value>,
        rid: Option<&str>,
        kind: &str,
        cx: &Context<'_>,
    ) -> Vec<Action> {
        let Some((session, side)) = self.own_session(p) else {
            return vec![error(rid, "Session not found", cx.ts)];
        };
        let sdp = match p.get("sdp") {
            Some(Value::Object(d))
                if d.get("type").and_then(Value::as_str) == Some(kind)
                    && d.get("sdp").and_then(Value::as_str).is_some() =>
            {
                json!({ "type": kind, "sdp": d["sdp"] })
            }
            _ => return vec![error(rid, "Invalid message", cx.ts)],
        };
        let message = if kind == "offer" {
            "signal_offer"
        } else {
            "signal_answer"
        };
        relay(side, session, message, json!({ "sdp": sdp }), cx.ts)
    }

    fn relay_ice(
        &mut self,
        p: &Map<String, Value>,
        rid: Option<&str>,
        cx: &Context<'_>,
    ) -> Vec<Action> {
        let Some((session, side)) = self.own_session(p) else {
            return vec![error(rid, "Session not found", cx.ts)];
        };
        let c = match p.get("candidate") {
            Some(Value::Null) => Value::Null,
            Some(c @ Value::Object(o)) if candidate(c).is_ok() => {
                // What the seed shows, nothing else.
                let mut out = Map::new();
                for k in ["candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"] {
                    if let Some(v) = o.get(k) {
                        out.insert(k.to_string(), v.clone());
                    }
                }
                Value::Object(out)
            }
            _ => return vec![error(rid, "Invalid message", cx.ts)],
        };
        relay(
            side,
            session,
            "signal_ice",
            json!({ "candidate": c }),
            cx.ts,
        )
    }

    fn watch_request(
        &mut self,
        p: &Map<String, Value>,
        rid: Option<&str>,
        cx: &Context<'_>,
    ) -> Vec<Action> {
        let Stage::Viewer(claims) = &self.stage else {
            return vec![error(rid, "Unauthorized", cx.ts)];
        };
        let Some(device) = p.get("device_id").and_then(Value::as_str) else {
            return vec![error(rid, "Invalid message", cx.ts)];
        };
        if !valid_id(device) || !cx.devices.contains(device) {
            return vec![error(rid, "Device not found", cx.ts)];
        }
        if !claims.may_watch(device) {
            return vec![error(rid, "Unauthorized", cx.ts)];
        }
        if self.sessions.len() >= self.limits.sessions_per_viewer {
            return vec![
                Action::Refused(
                    "seed-002 sessions per viewer",
                    format!(
                        "a viewer with {} sessions asked for another",
                        self.sessions.len()
                    ),
                ),
                error(rid, "Too many sessions", cx.ts),
            ];
        }
        vec![Action::FindDevice {
            device: device.to_string(),
            request_id: rid.map(str::to_string),
        }]
    }

    /// The device of a [`Action::FindDevice`] is at `device_at`: the new
    /// `session` (whose record the handler stored) starts. The viewer gets
    /// `watch_ready` with its ICE servers, then the device `watch_request`
    /// with its own.
    #[allow(clippy::too_many_arguments)]
    pub fn watch_ready(
        &mut self,
        me: &Addr,
        session: &str,
        device: &str,
        device_at: Addr,
        request_id: Option<&str>,
        viewer_ice: &[IceServer],
        device_ice: &[IceServer],
        ts: &str,
    ) -> Vec<Action> {
        let Some(user) = self.user().map(str::to_string) else {
            return Vec::new();
        };
        self.sessions.insert(
            session.to_string(),
            Side {
                peer: device_at.clone(),
                device: device.to_string(),
            },
        );
        let ready = write(
            "watch_ready",
            request_id,
            json!({ "session_id": session, "ice_servers": ice_servers_json(viewer_ice) }),
            ts,
        );
        let request = write(
            "watch_request",
            None,
            json!({ "session_id": session, "user_id": user, "ice_servers": ice_servers_json(device_ice) }),
            ts,
        );
        vec![
            Action::Send(ready),
            Action::Deliver(
                device_at,
                Delivery::Opened {
                    session: session.to_string(),
                    peer: me.clone(),
                    device: device.to_string(),
                    text: request,
                },
            ),
        ]
    }

    /// The device of a [`Action::FindDevice`] cannot be watched: `message`
    /// ("Device is offline").
    pub fn watch_refused(&self, request_id: Option<&str>, message: &str, ts: &str) -> Vec<Action> {
        vec![error(request_id, message, ts)]
    }

    fn end_watch(
        &mut self,
        p: &Map<String, Value>,
        rid: Option<&str>,
        cx: &Context<'_>,
    ) -> Vec<Action> {
        let Some((session, side)) = self.own_session(p) else {
            return vec![error(rid, "Session not found", cx.ts)];
        };
        self.sessions.remove(&session);
        ending(side.peer, session, "user_ended", cx.ts).into()
    }

    /// Something another connection sent this one.
    pub fn on_delivery(&mut self, d: Delivery, ts: &str) -> Vec<Action> {
        match d {
            Delivery::Message { session, text } => {
                // A message of a session that already ended here is dropped.
                if self.sessions.contains_key(&session) {
                    vec![Action::Send(text)]
                } else {
                    Vec::new()
                }
            }
            Delivery::Opened {
                session,
                peer,
                device,
                text,
            } => {
                if self.device() != Some(device.as_str()) {
                    return ending(peer, session, "device_disconnected", ts).into();
                }
                if self.sessions.len() >= self.limits.sessions_per_device {
                    let refused = Action::Refused(
                        "seed-002 sessions per device",
                        format!("{device} has {} sessions open", self.sessions.len()),
                    );
                    let mut out = vec![refused];
                    out.extend(ending(peer, session, "error", ts));
                    return out;
                }
                self.sessions.insert(session, Side { peer, device });
                vec![Action::Send(text)]
            }
            Delivery::Ended { session, text } => {
                if self.sessions.remove(&session).is_some() {
                    text.map(Action::Send).into_iter().collect()
                } else {
                    Vec::new()
                }
            }
            Delivery::Replaced => vec![Action::Close(GOING_AWAY, "Replaced by a new connection")],
        }
    }

    /// The other side of `session` is gone without a word (its instance
    /// died, or the device's place was taken): this side is told `reason`.
    pub fn lost_peer(&mut self, session: &str, reason: &str, ts: &str) -> Vec<Action> {
        if self.sessions.remove(session).is_none() {
            return Vec::new();
        }
        vec![
            Action::Send(watch_ended(session, reason, ts)),
            Action::SessionEnded(session.to_string()),
        ]
    }

    /// The passing of time: a silent device or viewer, or a connection
    /// that never said hello, is closed.
    pub fn on_tick(&self, now: Instant) -> Vec<Action> {
        let silent = now.duration_since(self.last_heard);
        match (&self.stage, self.role) {
            (Stage::New, _) if now.duration_since(self.opened) >= HELLO_WAIT => {
                vec![Action::Close(POLICY, "Unauthorized")]
            }
            (Stage::Device(_), _) if silent >= self.limits.device_silence => {
                vec![Action::Close(GOING_AWAY, "Heartbeat timeout")]
            }
            (Stage::Viewer(_), _) if silent >= self.limits.viewer_silence => {
                vec![Action::Close(GOING_AWAY, "Heartbeat timeout")]
            }
            _ => Vec::new(),
        }
    }

    /// The socket is gone: every session ends (the other side hears
    /// `device_disconnected` or `viewer_disconnected`), a device gives its
    /// place up.
    pub fn gone(&mut self, ts: &str) -> Vec<Action> {
        let reason = match self.role {
            Role::Device => "device_disconnected",
            Role::Viewer => "viewer_disconnected",
        };
        let mut out = Vec::new();
        for (session, side) in std::mem::take(&mut self.sessions) {
            out.extend(ending(side.peer, session, reason, ts));
        }
        if let Stage::Device(d) = &self.stage {
            out.push(Action::ReleaseDevice(d.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests;
