//! The two Engine.IO transports, over TCP or TLS: WebSocket (one frame per
//! packet) and HTTP long-polling (a GET that waits for packets, a POST per
//! batch sent). Both open the same way (the server's `open` packet first) and
//! then look alike to the client: packets come in on a channel fed by a reader
//! task, and go out through a [`Writer`].
//!
//! HTTP is hyper's HTTP/1.1 client over streams this module connects itself,
//! so every connection, polling ones included, goes through the same TLS
//! trust rules (a pinned certificate is checked before any request is
//! written). Every step is bounded by a timeout.

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

use super::engineio::{self, Handshake, Packet, Version};
use super::tls::{Tls, TlsError};

/// Connecting (TCP, then TLS) may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A POST, or the handshake's GET, may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the Socket.IO endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    /// Host name or address as written (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// `host:port` (IPv6 in brackets), for the Host header and messages.
    pub authority: String,
    /// The URL's path with a trailing `/` ([`Endpoint::base`]), then
    /// `socket.io/` for Engine.IO ([`Endpoint::parse`]).
    pub path: String,
}

impl Endpoint {
    /// `http(s)://host[:port][/prefix]`: a prefix (a server behind a reverse
    /// proxy at a sub-path) comes before `socket.io/`.
    pub fn parse(url: &str) -> Result<Endpoint, TransportError> {
        let mut e = Self::base(url)?;
        e.path.push_str("socket.io/");
        Ok(e)
    }

    /// `http(s)://host[:port][/prefix]` as the base of other endpoints:
    /// `path` is the prefix with a trailing `/`.
    pub fn base(url: &str) -> Result<Endpoint, TransportError> {
        let u = url::Url::parse(url).map_err(|e| TransportError::Url(format!("{url:?}: {e}")))?;
        let tls = match u.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(TransportError::Url(format!(
                    "{url:?}: the scheme must be http or https, not {other}"
                )))
            }
        };
        let host = match u.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(TransportError::Url(format!("{url:?} has no host"))),
        };
        let port = u
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut path = u.path().trim_end_matches('/').to_string();
        path.push('/');
        Ok(Endpoint {
            tls,
            host,
            port,
            authority,
            path,
        })
    }

    /// The WebSocket URL of `relative` under this endpoint's path.
    pub fn ws_url_at(&self, relative: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{}{relative}", self.authority, self.path)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("signaling.url {0}")]
    Url(String),
    #[error("cannot connect to {server}: {message}")]
    Connect { server: String, message: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the server answered HTTP {status}{}", if .body.is_empty() { String::new() } else { format!(": {}", .body) })]
    Http { status: u16, body: String },
    #[error("{0}")]
    Protocol(String),
    #[error("the connection broke: {0}")]
    Broken(String),
    #[error("no answer from the server within {} s ({what})", .limit.as_secs())]
    Timeout { limit: Duration, what: &'static str },
}

impl TransportError {
    /// The server refused the Engine.IO version asked for (python-engineio:
    /// "unsupported version"; the JavaScript server: "Unsupported protocol
    /// version").
    pub fn is_version_refusal(&self) -> bool {
        matches!(self, TransportError::Http { status: 400, body } if body.to_ascii_lowercase().contains("unsupported"))
    }

    /// Trying another transport or version cannot help.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TransportError::Url(_) | TransportError::Connect { .. } | TransportError::Tls(_)
        )
    }
}

/// TCP or TLS, one type for both transports.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_native_tls::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What the transports need to open connections.
#[derive(Debug, Clone)]
pub struct Dialer {
    pub endpoint: Endpoint,
    /// Present exactly when the endpoint is `https`.
    pub tls: Option<Arc<Tls>>,
}

impl Dialer {
    pub async fn stream(&self) -> Result<Stream, TransportError> {
        let server = self.endpoint.authority.clone();
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port)),
        )
        .await
        .map_err(|_| TransportError::Connect {
            server: server.clone(),
            message: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        })?
        .map_err(|e| TransportError::Connect {
            server: server.clone(),
            message: e.to_string(),
        })?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Stream::Plain(tcp)),
            Some(tls) => Ok(Stream::Tls(Box::new(
                tls.connect(&self.endpoint.host, &server, tcp).await?,
            ))),
        }
    }
}

/// Which transport a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    WebSocket,
    Polling,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::WebSocket => "WebSocket",
            Kind::Polling => "HTTP long-polling",
        }
    }
}

/// An open Engine.IO connection.
pub struct Opened {
    pub version: Version,
    pub kind: Kind,
    pub handshake: Handshake,
    /// Packets from the server, in order; an `Err` ends the connection.
    pub incoming: mpsc::Receiver<Result<Packet, TransportError>>,
    pub writer: Writer,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Sends packets to the server.
pub enum Writer {
    WebSocket(SplitSink<WebSocketStream<Stream>, WsMessage>),
    Polling(PollingWriter),
}

impl Writer {
    pub async fn send(&mut self, packets: &[Packet]) -> Result<(), TransportError> {
        match self {
            Writer::WebSocket(sink) => {
                let send = async {
                    for p in packets {
                        sink.feed(WsMessage::Text(p.encode().into())).await?;
                    }
                    sink.flush().await
                };
                tokio::time::timeout(REQUEST_TIMEOUT, send)
                    .await
                    .map_err(|_| TransportError::Timeout {
                        limit: REQUEST_TIMEOUT,
                        what: "sending",
                    })?
                    .map_err(|e| TransportError::Broken(e.to_string()))
            }
            Writer::Polling(w) => w.post(packets).await,
        }
    }

    /// Best effort: the close packet, then the connection's own close.
    pub async fn close(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.send(&[Packet::Close])).await;
        if let Writer::WebSocket(sink) = self {
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
        }
    }
}

/// The packets a reader forwards before the client catches up.
const INCOMING_QUEUE: usize = 64;

fn query(version: Version, transport: &str, sid: Option<&str>) -> String {
    let mut q = format!("EIO={}&transport={transport}", version.query());
    if version == Version::V3 && transport == "polling" {
        // Text framing (`<length>:<packet>`) instead of binary.
        q.push_str("&b64=1");
    }
    if let Some(sid) = sid {
        q.push_str("&sid=");
        q.push_str(sid);
    }
    q
}

/// Opens a WebSocket straight away (no polling first).
pub async fn open_websocket(dialer: &Dialer, version: Version) -> Result<Opened, TransportError> {
    let relative = format!("?{}", query(version, "websocket", None));
    let ws = websocket(dialer, &relative, engineio::MAX_PAYLOAD_BYTES).await?;
    let (sink, mut stream) = ws.split();
    let first = tokio::time::timeout(REQUEST_TIMEOUT, next_ws_packet(&mut stream))
        .await
        .map_err(|_| TransportError::Timeout {
            limit: REQUEST_TIMEOUT,
            what: "Engine.IO open packet",
        })??;
    let handshake = expect_open(first)?;
    let (tx, incoming) = mpsc::channel(INCOMING_QUEUE);
    let reader = tokio::spawn(async move {
        loop {
            let item = next_ws_packet(&mut stream).await;
            let end = item.is_err();
            if tx.send(item).await.is_err() || end {
                return;
            }
        }
    });
    Ok(Opened {
        version,
        kind: Kind::WebSocket,
        handshake,
        incoming,
        writer: Writer::WebSocket(sink),
        reader,
    })
}

fn ws_error(e: tungstenite::Error) -> TransportError {
    match e {
        tungstenite::Error::Http(response) => TransportError::Http {
            status: response.status().as_u16(),
            body: response
                .body()
                .as_deref()
                .map(body_text)
                .unwrap_or_default(),
        },
        other => TransportError::Broken(other.to_string()),
    }
}

async fn next_ws_packet(
    stream: &mut SplitStream<WebSocketStream<Stream>>,
) -> Result<Packet, TransportError> {
    loop {
        match stream.next().await {
            Some(Ok(WsMessage::Text(t))) => {
                return Packet::decode(t.as_str())
                    .map_err(|e| TransportError::Protocol(e.to_string()))
            }
            Some(Ok(WsMessage::Binary(b))) => return Ok(Packet::Binary(b.to_vec())),
            Some(Ok(WsMessage::Close(frame))) => {
                return Err(TransportError::Broken(match frame {
                    Some(f) => format!(
                        "the server closed the WebSocket ({} {})",
                        u16::from(f.code),
                        f.reason
                    ),
                    None => "the server closed the WebSocket".into(),
                }))
            }
            Some(Ok(_)) => continue, // ping/pong frames: answered by tungstenite
            Some(Err(e)) => return Err(TransportError::Broken(e.to_string())),
            None => return Err(TransportError::Broken("the WebSocket ended".into())),
        }
    }
}

/// A WebSocket to `relative` under the endpoint's path (TCP, then TLS when
/// the endpoint is `https`), refusing messages over `max_message` bytes.
pub async fn websocket(
    dialer: &Dialer,
    relative: &str,
    max_message: usize,
) -> Result<WebSocketStream<Stream>, TransportError> {
    let stream = dialer.stream().await?;
    let request = dialer
        .endpoint
        .ws_url_at(relative)
        .into_client_request()
        .map_err(|e| TransportError::Url(e.to_string()))?;
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(max_message);
    config.max_frame_size = Some(max_message);
    let (ws, _) = tokio::time::timeout(
        REQUEST_TIMEOUT,
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)),
    )
    .await
    .map_err(|_| TransportError::Timeout {
        limit: REQUEST_TIMEOUT,
        what: "WebSocket handshake",
    })?
    .map_err(ws_error)?;
    Ok(ws)
}

fn expect_open(first: Packet) -> Result<Handshake, TransportError> {
    match first {
        Packet::Open(h) => Ok(h),
        other => Err(TransportError::Protocol(format!(
            "expected the Engine.IO open packet first, got {other:?}"
        ))),
    }
}

/// A short, printable form of an error body.
fn body_text(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s = s.trim().trim_matches('"');
    s.chars().take(200).collect()
}

/// One HTTP/1.1 connection, reopened when the server closes it.
struct Http {
    dialer: Dialer,
    conn: Option<(SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>)>,
}

impl Drop for Http {
    fn drop(&mut self) {
        if let Some((_, task)) = self.conn.take() {
            task.abort();
        }
    }
}

impl Http {
    fn new(dialer: Dialer) -> Http {
        Http { dialer, conn: None }
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, TransportError> {
        let alive = match &mut self.conn {
            Some((s, _)) => s.ready().await.is_ok(),
            None => false,
        };
        if !alive {
            if let Some((_, task)) = self.conn.take() {
                task.abort();
            }
            let stream = self.dialer.stream().await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| TransportError::Broken(e.to_string()))?;
            let task = tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("signaling HTTP connection ended: {e}");
                }
            });
            self.conn = Some((sender, task));
        }
        Ok(&mut self.conn.as_mut().expect("connection was just made").0)
    }

    /// Sends one request; returns the status and the body.
    async fn request(
        &mut self,
        post: Option<String>,
        query: &str,
        limit: Duration,
    ) -> Result<(u16, Bytes), TransportError> {
        let uri = format!("{}?{query}", self.dialer.endpoint.path);
        let authority = self.dialer.endpoint.authority.clone();
        let work = async {
            let sender = self.sender().await?;
            let mut req = hyper::Request::builder()
                .uri(uri)
                .header(hyper::header::HOST, authority)
                .header(
                    hyper::header::USER_AGENT,
                    concat!("doorbell/", env!("CARGO_PKG_VERSION")),
                )
                .header(hyper::header::ACCEPT, "*/*");
            let body = match post {
                Some(text) => {
                    req = req
                        .method(hyper::Method::POST)
                        .header(hyper::header::CONTENT_TYPE, "text/plain;charset=UTF-8");
                    Full::new(Bytes::from(text))
                }
                None => {
                    req = req.method(hyper::Method::GET);
                    Full::new(Bytes::new())
                }
            };
            let req = req
                .body(body)
                .map_err(|e| TransportError::Protocol(e.to_string()))?;
            let response = sender
                .send_request(req)
                .await
                .map_err(|e| TransportError::Broken(e.to_string()))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), engineio::MAX_PAYLOAD_BYTES)
                .collect()
                .await
                .map_err(|e| TransportError::Broken(e.to_string()))?
                .to_bytes();
            Ok((status, body))
        };
        match tokio::time::timeout(limit, work).await {
            Ok(r) => {
                if r.is_err() {
                    self.conn = None;
                }
                r
            }
            Err(_) => {
                self.conn = None;
                Err(TransportError::Timeout {
                    limit,
                    what: "HTTP request",
                })
            }
        }
    }
}

/// Posts packets for a polling connection.
pub struct PollingWriter {
    http: Http,
    version: Version,
    query: String,
}

impl PollingWriter {
    async fn post(&mut self, packets: &[Packet]) -> Result<(), TransportError> {
        let body = engineio::encode_payload(self.version, packets);
        let (status, answer) = self
            .http
            .request(Some(body), &self.query, REQUEST_TIMEOUT)
            .await?;
        if status != 200 {
            return Err(TransportError::Http {
                status,
                body: body_text(&answer),
            });
        }
        Ok(())
    }
}

/// Opens a long-polling connection (it stays on polling; the doorbell sends
/// a few messages per ring, so upgrading buys nothing).
pub async fn open_polling(dialer: &Dialer, version: Version) -> Result<Opened, TransportError> {
    let mut http = Http::new(dialer.clone());
    let (status, body) = http
        .request(None, &query(version, "polling", None), REQUEST_TIMEOUT)
        .await?;
    if status != 200 {
        return Err(TransportError::Http {
            status,
            body: body_text(&body),
        });
    }
    let mut packets = decode(version, &body)?.into_iter();
    let handshake = expect_open(
        packets
            .next()
            .ok_or_else(|| TransportError::Protocol("the handshake answer is empty".into()))?,
    )?;
    let sid_query = query(version, "polling", Some(&handshake.sid));
    let (tx, incoming) = mpsc::channel(INCOMING_QUEUE);
    for p in packets {
        let _ = tx.try_send(Ok(p));
    }
    // A poll returns when the server has packets, at the latest when it pings
    // (Engine.IO 4) or times out waiting for ours (Engine.IO 3).
    let poll_limit = handshake.ping_interval + handshake.ping_timeout + Duration::from_secs(5);
    let reader = {
        let query = sid_query.clone();
        tokio::spawn(async move {
            loop {
                let result = match http.request(None, &query, poll_limit).await {
                    Ok((200, body)) => decode(version, &body),
                    Ok((status, body)) => Err(TransportError::Http {
                        status,
                        body: body_text(&body),
                    }),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(packets) => {
                        let closed = packets.contains(&Packet::Close);
                        for p in packets {
                            if tx.send(Ok(p)).await.is_err() {
                                return;
                            }
                        }
                        if closed {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        })
    };
    Ok(Opened {
        version,
        kind: Kind::Polling,
        handshake,
        incoming,
        writer: Writer::Polling(PollingWriter {
            http: Http::new(dialer.clone()),
            version,
            query: sid_query,
        }),
        reader,
    })
}

fn decode(version: Version, body: &[u8]) -> Result<Vec<Packet>, TransportError> {
    engineio::decode_payload(version, body).map_err(|e| TransportError::Protocol(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_urls() {
        let e = Endpoint::parse("https://192.168.1.20").unwrap();
        assert_eq!(
            (
                e.tls,
                e.host.as_str(),
                e.port,
                e.authority.as_str(),
                e.path.as_str()
            ),
            (true, "192.168.1.20", 443, "192.168.1.20:443", "/socket.io/")
        );
        let e = Endpoint::parse("http://bell.example.org:8080/doorbell/").unwrap();
        assert_eq!(e.path, "/doorbell/socket.io/");
        assert_eq!(e.authority, "bell.example.org:8080");
        let e = Endpoint::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (e.host.as_str(), e.authority.as_str()),
            ("::1", "[::1]:8080")
        );
        assert_eq!(
            e.ws_url_at("?EIO=4&transport=websocket"),
            "ws://[::1]:8080/socket.io/?EIO=4&transport=websocket"
        );
        let base = Endpoint::base("https://fleet.example.org/cams/").unwrap();
        assert_eq!(
            base.ws_url_at("ws/device"),
            "wss://fleet.example.org:443/cams/ws/device"
        );
        for bad in ["ftp://x", "http://", "nonsense"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_python_servers_version_refusal_is_recognised() {
        let refusal = TransportError::Http {
            status: 400,
            body:
                "The client is using an unsupported version of the Socket.IO or Engine.IO protocols"
                    .into(),
        };
        assert!(refusal.is_version_refusal());
        let js = TransportError::Http {
            status: 400,
            body: "{\"code\":5,\"message\":\"Unsupported protocol version\"}".into(),
        };
        assert!(js.is_version_refusal());
        let other = TransportError::Http {
            status: 400,
            body: "Invalid transport".into(),
        };
        assert!(!other.is_version_refusal());
    }

    #[test]
    fn queries_ask_for_text_framing_under_engineio_3() {
        assert_eq!(
            query(Version::V3, "polling", Some("s1")),
            "EIO=3&transport=polling&b64=1&sid=s1"
        );
        assert_eq!(
            query(Version::V4, "websocket", None),
            "EIO=4&transport=websocket"
        );
    }
}
