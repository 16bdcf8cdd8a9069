//! The Socket.IO client: the only module that imports `rust_socketio`.
//!
//! One long-lived connection per daemon (rooms are server state, and a ring
//! must not wait for a TCP and TLS handshake). It reports `Up` only when the
//! Socket.IO handshake is done (emitting before that is dropped by some
//! servers), `Down` when the transport is lost, and every protocol message,
//! parsed, or the reason it could not be.
//!
//! Reconnection: rust_socketio reconnects by itself, but its backoff gives up
//! pacing after 15 minutes (`backoff`'s default elapsed limit) and would then
//! retry in a tight loop. The reconnect callback is awaited before every
//! attempt, so we do the pacing there, with our own capped, jittered
//! exponential backoff that never expires. If the first connection fails, the
//! same backoff paces our own retry loop. State changes are logged once, not
//! every attempt.

use futures_util::future::{BoxFuture, FutureExt};
use rust_socketio::asynchronous::{Client, ClientBuilder, ReconnectSettings};
use rust_socketio::{Event, Payload, TransportType};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::protocol::Message;
use super::{Signaling, SignalingError, SignalingEvent};

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub url: String,
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

/// Capped exponential backoff with ±20% jitter from the attempt number.
pub fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let base = min.saturating_mul(1u32 << attempt.min(16)).min(max);
    // Jitter from the sub-second clock: enough to spread many doorbells.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.8 + 0.4 * f64::from(nanos % 1000) / 1000.0;
    base.mul_f64(factor).min(max)
}

/// Builds the TLS configuration: verification on, unless told otherwise.
pub fn tls_connector(
    settings: &ClientSettings,
) -> Result<native_tls::TlsConnector, SignalingError> {
    let mut builder = native_tls::TlsConnector::builder();
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            SignalingError::Tls(format!("cannot read ca_file {}: {e}", path.display()))
        })?;
        let cert = native_tls::Certificate::from_pem(&pem).map_err(|e| {
            SignalingError::Tls(format!(
                "ca_file {} is not a PEM certificate: {e}",
                path.display()
            ))
        })?;
        builder.add_root_certificate(cert);
    }
    if settings.insecure_skip_verify {
        builder.danger_accept_invalid_certs(true);
        builder.danger_accept_invalid_hostnames(true);
    }
    builder
        .build()
        .map_err(|e| SignalingError::Tls(e.to_string()))
}

struct Shared {
    events: mpsc::Sender<SignalingEvent>,
    client: Mutex<Option<Client>>,
    up: AtomicBool,
    attempt: AtomicU32,
    settings: ClientSettings,
}

impl Shared {
    fn report(&self, event: SignalingEvent) {
        if self.events.try_send(event).is_err() {
            tracing::warn!("signaling event dropped: the call loop is not keeping up");
        }
    }

    fn went_up(&self) {
        self.attempt.store(0, Ordering::Relaxed);
        if !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!(url = %self.settings.url, "connected to the signaling server");
            self.report(SignalingEvent::Up);
        }
    }

    fn went_down(&self, why: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(url = %self.settings.url, "lost the signaling server ({why}); reconnecting");
            self.report(SignalingEvent::Down);
        }
    }

    /// Waits before the next attempt; the pacing that never gives up.
    async fn pause_before_retry(&self) {
        let attempt = self.attempt.fetch_add(1, Ordering::Relaxed);
        let wait = backoff(
            attempt,
            self.settings.reconnect_min,
            self.settings.reconnect_max,
        );
        tracing::debug!(attempt, ?wait, "signaling reconnect backoff");
        tokio::time::sleep(wait).await;
    }
}

/// The connection to a Socket.IO room server.
pub struct SocketIoSignaling {
    shared: Arc<Shared>,
}

impl SocketIoSignaling {
    /// Starts connecting in the background; events arrive on `events`.
    /// Fails only on settings that can never work (a bad CA file).
    pub fn start(
        settings: ClientSettings,
        events: mpsc::Sender<SignalingEvent>,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, SignalingError> {
        let tls = if settings.url.starts_with("https://") {
            if settings.insecure_skip_verify {
                tracing::warn!(
                    url = %settings.url,
                    "TLS certificate verification is OFF (signaling.insecure_skip_verify): anyone on the path can read the calls' signaling"
                );
            }
            Some(tls_connector(&settings)?)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            events,
            client: Mutex::new(None),
            up: AtomicBool::new(false),
            attempt: AtomicU32::new(0),
            settings,
        });
        let this = Arc::new(Self {
            shared: shared.clone(),
        });
        tokio::spawn(async move {
            tokio::select! {
                // Once connected, rust_socketio keeps the connection: wait for the end.
                _ = async { supervise(shared.clone(), tls).await; cancel.cancelled().await } => {}
                _ = cancel.cancelled() => {}
            }
            let client = shared
                .client
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(client) = client {
                let _ = tokio::time::timeout(Duration::from_secs(2), client.disconnect()).await;
            }
        });
        Ok(this)
    }

    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Acquire)
    }
}

fn builder(
    shared: &Arc<Shared>,
    tls: Option<native_tls::TlsConnector>,
    transport: TransportType,
) -> ClientBuilder {
    let on_connect = shared.clone();
    let on_close = shared.clone();
    let on_reconnect = shared.clone();
    let on_any = shared.clone();
    let mut b = ClientBuilder::new(shared.settings.url.clone())
        .namespace("/")
        .transport_type(transport)
        .reconnect(true)
        .reconnect_on_disconnect(true)
        // Our callback paces attempts; keep the crate's own delay short.
        .reconnect_delay(100, 200)
        .on(Event::Connect, move |_, _| {
            on_connect.went_up();
            async {}.boxed()
        })
        .on(Event::Close, move |_, _| {
            on_close.went_down("the server closed the connection");
            async {}.boxed()
        })
        .on_reconnect(move || {
            let shared = on_reconnect.clone();
            async move {
                shared.went_down("transport closed");
                shared.pause_before_retry().await;
                ReconnectSettings::new()
            }
            .boxed()
        })
        .on_any(move |event, payload, _| {
            let shared = on_any.clone();
            let name = event.as_str().to_string();
            match payload {
                Payload::Text(args) => match Message::parse(&name, &args) {
                    Ok(m) => shared.report(SignalingEvent::Message(m)),
                    Err(e) => shared.report(SignalingEvent::Malformed(e.to_string())),
                },
                _ => shared.report(SignalingEvent::Malformed(format!(
                    "event {name:?} with a binary payload"
                ))),
            }
            async {}.boxed()
        });
    if let Some(tls) = tls {
        b = b.tls_config(tls);
    }
    b
}

/// Connects, WebSocket first. A straight WebSocket costs one round trip less
/// than Engine.IO's polling handshake and, on `http://`, never builds the
/// polling transport's HTTP client (which loads the whole system trust store,
/// a few MB of memory and a spike of CPU). Servers without WebSocket support
/// (Flask-SocketIO's development server without simple-websocket) get the
/// polling transport, upgraded when they allow it.
async fn connect(
    shared: &Arc<Shared>,
    tls: &Option<native_tls::TlsConnector>,
) -> Result<Client, rust_socketio::Error> {
    match builder(shared, tls.clone(), TransportType::Websocket)
        .connect()
        .await
    {
        Ok(c) => Ok(c),
        Err(e) => {
            tracing::debug!("WebSocket transport failed ({e}); trying Engine.IO polling");
            builder(shared, tls.clone(), TransportType::Any)
                .connect()
                .await
        }
    }
}

async fn supervise(shared: Arc<Shared>, tls: Option<native_tls::TlsConnector>) {
    let mut logged_failure = false;
    loop {
        match connect(&shared, &tls).await {
            Ok(client) => {
                if logged_failure {
                    tracing::info!(url = %shared.settings.url, "the signaling server is reachable again");
                }
                *shared.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(client);
                // From here rust_socketio reconnects by itself, paced by our callback.
                return;
            }
            Err(e) => {
                if !logged_failure {
                    tracing::warn!(url = %shared.settings.url, error = %e, "cannot reach the signaling server; retrying with backoff");
                    logged_failure = true;
                } else {
                    tracing::debug!(error = %e, "signaling connect attempt failed");
                }
                shared.pause_before_retry().await;
            }
        }
    }
}

impl Signaling for SocketIoSignaling {
    fn send(&self, msg: Message) -> BoxFuture<'static, Result<(), SignalingError>> {
        let shared = self.shared.clone();
        async move {
            if !shared.up.load(Ordering::Acquire) {
                return Err(SignalingError::NotConnected);
            }
            let client = shared
                .client
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .ok_or(SignalingError::NotConnected)?;
            let arg = msg.argument();
            let payload = if arg.is_null() {
                Payload::Text(vec![])
            } else {
                Payload::Text(vec![arg])
            };
            match tokio::time::timeout(Duration::from_secs(5), client.emit(msg.event(), payload))
                .await
            {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(SignalingError::Send(format!("{}: {e}", msg.event()))),
                Err(_) => Err(SignalingError::Send(format!(
                    "{}: no progress in 5 s",
                    msg.event()
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
    fn a_bad_ca_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("ca.pem");
        std::fs::write(&bad, "not a certificate").unwrap();
        let s = |ca: Option<PathBuf>| ClientSettings {
            url: "https://x".into(),
            ca_file: ca,
            insecure_skip_verify: false,
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(2),
        };
        let e = tls_connector(&s(Some(bad))).unwrap_err().to_string();
        assert!(e.contains("not a PEM certificate"), "{e}");
        let e = tls_connector(&s(Some(dir.path().join("missing.pem"))))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read ca_file"), "{e}");
    }
}
