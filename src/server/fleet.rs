//! The fleet bus: what the instances of `doorbell serve` share about seed
//! 002's devices and sessions, behind one trait.
//!
//! - Where each online device is connected ([`Addr`]: instance and
//!   connection), taken by its `hello` and kept alive by its messages;
//!   a newer connection of the same device takes the place and the older
//!   one is told [`Delivery::Replaced`].
//! - The devices' last `device_presence`.
//! - A record of each watch session (who watches which device, where
//!   both sides are), so that either side can find out the other is gone.
//! - Delivery of a [`Delivery`] to a connection wherever it is.
//!
//! [`MemoryBus`] is one instance on its own (everything in this process);
//! `fleet_redis::RedisBus` shares it through Redis, for several instances
//! behind a load balancer. Both deliver to this instance's own connections
//! through [`LocalSockets`], without a round trip.

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub use super::device_relay::rules::{Addr, Delivery};

/// Deliveries waiting for one socket's handler; past this the socket is
/// not keeping up and what comes is dropped.
const QUEUE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("redis at {url}: {message}")]
    Redis { url: String, message: String },
}

/// A watch session's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub session: String,
    pub device: String,
    pub user: String,
    pub device_at: Addr,
    pub viewer_at: Addr,
    pub started_unix: u64,
}

pub type FleetResult<T> = Result<T, FleetError>;

/// What the instances share. Every call may fail only in a bus that has a
/// network under it (Redis); the memory bus never fails.
pub trait FleetBus: Send + Sync {
    /// This instance's name in addresses.
    fn instance(&self) -> &str;
    /// The local sockets (attach, detach, deliver here).
    fn local(&self) -> &LocalSockets;
    /// Delivers `d` to the connection at `to`; false when nobody is there.
    fn deliver<'a>(&'a self, to: &'a Addr, d: Delivery) -> BoxFuture<'a, FleetResult<bool>>;
    /// `at` is where `device` is now, for `ttl` unless kept alive; the
    /// connection that had it before, if another.
    fn claim_device<'a>(
        &'a self,
        device: &'a str,
        at: &'a Addr,
        ttl: Duration,
    ) -> BoxFuture<'a, FleetResult<Option<Addr>>>;
    /// Keeps `device` at `at` for another `ttl` (takes the place again if
    /// it was lost, e.g. Redis restarted; leaves it to a newer holder).
    fn keep_device<'a>(
        &'a self,
        device: &'a str,
        at: &'a Addr,
        ttl: Duration,
    ) -> BoxFuture<'a, FleetResult<()>>;
    /// Gives `device`'s place up, if `at` still holds it.
    fn release_device<'a>(
        &'a self,
        device: &'a str,
        at: &'a Addr,
    ) -> BoxFuture<'a, FleetResult<()>>;
    /// Where `device` is connected, if it is.
    fn find_device<'a>(&'a self, device: &'a str) -> BoxFuture<'a, FleetResult<Option<Addr>>>;
    fn set_presence<'a>(
        &'a self,
        device: &'a str,
        presence: Value,
        ttl: Duration,
    ) -> BoxFuture<'a, FleetResult<()>>;
    fn presence<'a>(&'a self, device: &'a str) -> BoxFuture<'a, FleetResult<Option<Value>>>;
    fn put_session<'a>(
        &'a self,
        record: &'a SessionRecord,
        ttl: Duration,
    ) -> BoxFuture<'a, FleetResult<()>>;
    /// Whether the session's record is there; its expiry moves to `ttl`
    /// from now.
    fn keep_session<'a>(
        &'a self,
        session: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, FleetResult<bool>>;
    fn end_session<'a>(&'a self, session: &'a str) -> BoxFuture<'a, FleetResult<()>>;
}

/// This instance's sockets: a queue into each handler.
#[derive(Default)]
pub struct LocalSockets {
    queues: Mutex<HashMap<u64, mpsc::Sender<Delivery>>>,
}

impl LocalSockets {
    pub fn attach(&self, conn: u64) -> mpsc::Receiver<Delivery> {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(conn, tx);
        rx
    }

    pub fn detach(&self, conn: u64) {
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&conn);
    }

    /// Hands `d` to the handler of `conn`; false if there is none (or it
    /// is not keeping up: the delivery is dropped).
    pub fn deliver(&self, conn: u64, d: Delivery) -> bool {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = queues.get(&conn) else {
            return false;
        };
        match tx.try_send(d) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    conn,
                    "a seed-002 socket is not keeping up; a delivery was dropped"
                );
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// One instance on its own: the fleet is this process.
pub struct MemoryBus {
    instance: String,
    local: LocalSockets,
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    devices: HashMap<String, Addr>,
    presence: HashMap<String, Value>,
    sessions: HashMap<String, (SessionRecord, Instant)>,
}

impl MemoryBus {
    pub fn new(instance: &str) -> MemoryBus {
        MemoryBus {
            instance: instance.to_string(),
            local: LocalSockets::default(),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, FleetResult<T>> {
    Box::pin(std::future::ready(Ok(v)))
}

impl FleetBus for MemoryBus {
    fn instance(&self) -> &str {
        &self.instance
    }

    fn local(&self) -> &LocalSockets {
        &self.local
    }

    fn deliver<'a>(&'a self, to: &'a Addr, d: Delivery) -> BoxFuture<'a, FleetResult<bool>> {
        ready(to.instance == self.instance && self.local.deliver(to.conn, d))
    }

    fn claim_device<'a>(
        &'a self,
        device: &'a str,
        at: &'a Addr,
        _ttl: Duration,
    ) -> BoxFuture<'a, FleetResult<Option<Addr>>> {
        let old = self.state().devices.insert(device.to_string(), at.clone());
        ready(old.filter(|o| o != at))
    }

    fn keep_device<'a>(
        &'a self,
        device: &'a str,
        at: &'a Addr,
        _ttl: Duration,
    ) -> BoxFuture<'a, FleetResult<()>> {
        self.state()
            .devices
            .entry(device.to_string())
            .or_insert_with(|| at.clone());
        ready(())
    }

    fn release_device<'a>(
        &'a self,
        device: &'a str,
        at: &'a Addr,
    ) -> BoxFuture<'a, FleetResult<()>> {
        let mut s = self.state();
        if s.devices.get(device) == Some(at) {
            s.devices.remove(device);
        }
        ready(())
    }

    fn find_device<'a>(&'a self, device: &'a str) -> BoxFuture<'a, FleetResult<Option<Addr>>> {
        ready(self.state().devices.get(device).cloned())
    }

    fn set_presence<'a>(
        &'a self,
        device: &'a str,
        presence: Value,
        _ttl: Duration,
    ) -> BoxFuture<'a, FleetResult<()>> {
        self.state().presence.insert(device.to_string(), presence);
        ready(())
    }

    fn presence<'a>(&'a self, device: &'a str) -> BoxFuture<'a, FleetResult<Option<Value>>> {
        ready(self.state().presence.get(device).cloned())
    }

    fn put_session<'a>(
        &'a self,
        record: &'a SessionRecord,
        ttl: Duration,
    ) -> BoxFuture<'a, FleetResult<()>> {
        let now = Instant::now();
        let mut s = self.state();
        s.sessions.retain(|_, (_, until)| *until > now);
        s.sessions
            .insert(record.session.clone(), (record.clone(), now + ttl));
        ready(())
    }

    fn keep_session<'a>(
        &'a self,
        session: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, FleetResult<bool>> {
        let now = Instant::now();
        let mut s = self.state();
        let alive = match s.sessions.get_mut(session) {
            Some((_, until)) if *until > now => {
                *until = now + ttl;
                true
            }
            _ => false,
        };
        ready(alive)
    }

    fn end_session<'a>(&'a self, session: &'a str) -> BoxFuture<'a, FleetResult<()>> {
        self.state().sessions.remove(session);
        ready(())
    }
}
