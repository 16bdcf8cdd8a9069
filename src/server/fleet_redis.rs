//! The fleet bus in Redis: several instances of `doorbell serve` behind a
//! load balancer serve one fleet (`--redis URL`).
//!
//! Keys (all with an expiry, so that an instance that dies leaves nothing
//! behind for long):
//!
//! - `doorbell:device:{device_id}`: where the device is connected (the
//!   JSON of an [`Addr`]), for two heartbeats and a half, renewed by its
//!   messages; taken with `SET … GET` (the older holder is told it was
//!   replaced), renewed and given up only by its holder (small Lua scripts).
//! - `doorbell:presence:{device_id}`: its last `device_presence`, 24 h.
//! - `doorbell:session:{session_id}`: a watch session's record, 60 s,
//!   renewed every 5 s by its viewer's instance while the viewer is there.
//!
//! Each instance subscribes to its own channel, `doorbell:instance:{id}`
//! (a random id per start), and another instance delivers to one of its
//! sockets by publishing `{"conn": N, "delivery": …}` there; `PUBLISH`
//! answering 0 means that instance is gone. Deliveries to this instance's
//! own sockets never go through Redis.
//!
//! Failure: Redis unreachable at start stops the start with the reason.
//! Later, commands that fail are errors the relay answers with (a device's
//! `hello` is closed 1011 "Server error" and the device retries; a
//! `watch_request` gets `error` "Server error"), the connection is opened
//! again at the next command, and the subscription is opened again with
//! backoff; watches whose two sides are on this instance go on untouched.

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::fleet::{
    Addr, Delivery, FleetBus, FleetError, FleetResult, LocalSockets, SessionRecord,
};

/// How the subscription is opened again.
const RESUBSCRIBE: crate::backoff::Backoff =
    crate::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5), 0.2);
/// Every command waits at most this long for Redis.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Takes the device's place if it is ours or free; 1 renewed, 2 taken
/// again (the key had expired), 0 another holds it.
const KEEP: &str = "local v = redis.call('GET', KEYS[1]) \
    if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end \
    if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 2 end \
    return 0";
/// Gives the device's place up if it is ours.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) end return 0";

fn device_key(device: &str) -> String {
    format!("doorbell:device:{device}")
}

fn presence_key(device: &str) -> String {
    format!("doorbell:presence:{device}")
}

fn session_key(session: &str) -> String {
    format!("doorbell:session:{session}")
}

fn channel(instance: &str) -> String {
    format!("doorbell:instance:{instance}")
}

/// What goes on an instance's channel.
#[derive(serde::Serialize, serde::Deserialize)]
struct Envelope {
    conn: u64,
    delivery: Delivery,
}

pub struct RedisBus {
    instance: String,
    /// The URL without its password, for messages.
    shown: String,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    local: Arc<LocalSockets>,
}

/// `url` without a password in it.
fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("redacted"));
            }
            u.to_string()
        }
        Err(_) => "(an unreadable URL)".into(),
    }
}

fn ms(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

impl RedisBus {
    /// Connects to Redis at `url` and subscribes to this instance's
    /// channel; fails with the reason when Redis cannot be reached. The
    /// subscription lives until `cancel`.
    pub async fn connect(
        url: &str,
        instance: &str,
        cancel: CancellationToken,
    ) -> FleetResult<Arc<RedisBus>> {
        let shown = shown(url);
        let fail = |message: String| FleetError::Redis {
            url: shown.clone(),
            message,
        };
        let client = redis::Client::open(url).map_err(|e| fail(format!("not a Redis URL: {e}")))?;
        let bus = Arc::new(RedisBus {
            instance: instance.to_string(),
            shown: shown.clone(),
            client,
            conn: tokio::sync::Mutex::new(None),
            local: Arc::new(LocalSockets::default()),
        });
        let pong: String = bus
            .run(&redis::cmd("PING"))
            .await
            .map_err(|e| fail(format!("cannot reach it: {e}")))?;
        if pong != "PONG" {
            return Err(fail(format!("PING answered {pong:?}")));
        }
        let pubsub = bus
            .subscribe()
            .await
            .map_err(|e| fail(format!("cannot subscribe: {e}")))?;
        tokio::spawn(bus.clone().listen(pubsub, cancel));
        tracing::info!(redis = %shown, instance, "the fleet's state is shared through Redis");
        Ok(bus)
    }

    fn error(&self, e: impl std::fmt::Display) -> FleetError {
        FleetError::Redis {
            url: self.shown.clone(),
            message: e.to_string(),
        }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, String> {
        let mut pubsub = tokio::time::timeout(COMMAND_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| "no answer in time".to_string())?
            .map_err(|e| e.to_string())?;
        pubsub
            .subscribe(channel(&self.instance))
            .await
            .map_err(|e| e.to_string())?;
        Ok(pubsub)
    }

    /// Hands what other instances publish for this one to its sockets;
    /// subscribes again, with backoff, when the subscription drops.
    async fn listen(self: Arc<Self>, mut pubsub: redis::aio::PubSub, cancel: CancellationToken) {
        let mut failures = 0u32;
        loop {
            {
                let mut messages = pubsub.on_message();
                loop {
                    let msg = tokio::select! {
                        _ = cancel.cancelled() => return,
                        m = messages.next() => m,
                    };
                    let Some(msg) = msg else { break };
                    failures = 0;
                    let Ok(text) = msg.get_payload::<String>() else {
                        continue;
                    };
                    match serde_json::from_str::<Envelope>(&text) {
                        Ok(e) => {
                            self.local.deliver(e.conn, e.delivery);
                        }
                        Err(e) => tracing::warn!("a malformed delivery on the fleet channel: {e}"),
                    }
                }
            }
            tracing::error!(redis = %self.shown, "the fleet subscription dropped: deliveries from other instances are lost until it is back");
            pubsub = loop {
                failures = failures.saturating_add(1);
                let wait = RESUBSCRIBE.wait(failures);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                match self.subscribe().await {
                    Ok(p) => {
                        tracing::info!(redis = %self.shown, "the fleet subscription is back");
                        break p;
                    }
                    Err(e) => tracing::warn!(redis = %self.shown, "subscribing again: {e}"),
                }
            };
        }
    }

    /// The shared connection, opened when there is none.
    async fn connection(&self) -> FleetResult<MultiplexedConnection> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.error(e))?;
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> FleetResult<T> {
        let mut c = self.connection().await?;
        match tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async::<T>(&mut c)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    *self.conn.lock().await = None;
                }
                Err(self.error(e))
            }
            Err(_) => {
                *self.conn.lock().await = None;
                Err(self.error("no answer in time"))
            }
        }
    }

    fn addr_json(at: &Addr) -> String {
        serde_json::to_string(at).expect("an address is JSON")
    }
}

fn parse_addr(v: Option<String>) -> Option<Addr> {
    v.and_then(|s| serde_json::from_str(&s).ok())
}

impl FleetBus for RedisBus {
    fn instance(&self) -> &str {
        &self.instance
    }

    fn local(&self) -> &LocalSockets {
        &self.local
    }

    fn deliver<'a>(&'a self, to: &'a Addr, d: Delivery) -> BoxFuture<'a, FleetResult<bool>> {
        Box::pin(async move {
            if to.instance == self.instance {
                return Ok(self.local.deliver(to.conn, d));
            }
            let text = serde_json::to_string(&Envelope {
                conn: to.conn,
                delivery: d,
            })
            .expect("a delivery is JSON");
            let receivers: i64 = self
                .run(redis::cmd("PUBLISH").arg(channel(&to.instance)).arg(text))
                .await?;
            Ok(receivers > 0)
        })
    }

    fn claim_device<'a>(
        &'a self,
        device: &'a str,
        at: &'a Addr,
        ttl: Duration,
    ) -> BoxFuture<'a, FleetResult<Option<Addr>>> {
        Box::pin(async move {
            let old: Option<String> = self
                .run(
                    redis::cmd("SET")
                        .arg(device_key(device))
                        .arg(Self::addr_json(at))
                        .arg("PX")
                        .arg(ms(ttl))
                        .arg("GET"),
                )
                .await?;
            Ok(parse_addr(old).filter(|o| o != at))
        })
    }

    fn keep_device<'a>(
        &'a self,
        device: &'a str,
        at: &'a Addr,
        ttl: Duration,
    ) -> BoxFuture<'a, FleetResult<()>> {
        Box::pin(async move {
            let kept: i64 = self
                .run(
                    redis::cmd("EVAL")
                        .arg(KEEP)
                        .arg(1)
                        .arg(device_key(device))
                        .arg(Self::addr_json(at))
                        .arg(ms(ttl)),
                )
                .await?;
            if kept == 2 {
                tracing::info!(%device, "the device's place had expired in Redis: taken again");
            }
            Ok(())
        })
    }

    fn release_device<'a>(
        &'a self,
        device: &'a str,
        at: &'a Addr,
    ) -> BoxFuture<'a, FleetResult<()>> {
        Box::pin(async move {
            let _: i64 = self
                .run(
                    redis::cmd("EVAL")
                        .arg(RELEASE)
                        .arg(1)
                        .arg(device_key(device))
                        .arg(Self::addr_json(at)),
                )
                .await?;
            Ok(())
        })
    }

    fn find_device<'a>(&'a self, device: &'a str) -> BoxFuture<'a, FleetResult<Option<Addr>>> {
        Box::pin(async move {
            let v: Option<String> = self.run(redis::cmd("GET").arg(device_key(device))).await?;
            Ok(parse_addr(v))
        })
    }

    fn set_presence<'a>(
        &'a self,
        device: &'a str,
        presence: Value,
        ttl: Duration,
    ) -> BoxFuture<'a, FleetResult<()>> {
        Box::pin(async move {
            let _: () = self
                .run(
                    redis::cmd("SET")
                        .arg(presence_key(device))
                        .arg(presence.to_string())
                        .arg("PX")
                        .arg(ms(ttl)),
                )
                .await?;
            Ok(())
        })
    }

    fn presence<'a>(&'a self, device: &'a str) -> BoxFuture<'a, FleetResult<Option<Value>>> {
        Box::pin(async move {
            let v: Option<String> = self
                .run(redis::cmd("GET").arg(presence_key(device)))
                .await?;
            Ok(v.and_then(|s| serde_json::from_str(&s).ok()))
        })
    }

    fn put_session<'a>(
        &'a self,
        record: &'a SessionRecord,
        ttl: Duration,
    ) -> BoxFuture<'a, FleetResult<()>> {
        Box::pin(async move {
            let text = serde_json::to_string(record).expect("a session record is JSON");
            let _: () = self
                .run(
                    redis::cmd("SET")
                        .arg(session_key(&record.session))
                        .arg(text)
                        .arg("PX")
                        .arg(ms(ttl)),
                )
                .await?;
            Ok(())
        })
    }

    fn keep_session<'a>(
        &'a self,
        session: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, FleetResult<bool>> {
        Box::pin(async move {
            let kept: i64 = self
                .run(redis::cmd("PEXPIRE").arg(session_key(session)).arg(ms(ttl)))
                .await?;
            Ok(kept == 1)
        })
    }

    fn end_session<'a>(&'a self, session: &'a str) -> BoxFuture<'a, FleetResult<()>> {
        Box::pin(async move {
            let _: i64 = self
                .run(redis::cmd("DEL").arg(session_key(session)))
                .await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            shown("redis://:hunter2@10.0.0.5:6379/0"),
            "redis://:redacted@10.0.0.5:6379/0"
        );
        assert_eq!(shown("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn deliveries_on_the_channel_are_json() {
        let e = Envelope {
            conn: 7,
            delivery: Delivery::Message {
                session: "s".into(),
                text: "{}".into(),
            },
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            r#"{"conn":7,"delivery":{"kind":"message","session":"s","text":"{}"}}"#
        );
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.delivery, e.delivery);
    }
}
