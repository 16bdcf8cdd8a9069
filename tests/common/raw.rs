//! A bare Socket.IO 5 client (Engine.IO 4 over WebSocket) that sends
//! exactly the frames a test writes: for abusers and malformed input that no
//! well-behaved client library would send.

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::WebSocketStream;

/// A bare Socket.IO 5 client over WebSocket from a chosen loopback address.
pub struct Raw {
    pub ws: WebSocketStream<tokio::net::TcpStream>,
}

impl Raw {
    /// The Engine.IO and Socket.IO handshakes from `from`: the connection
    /// and the server's answer to our CONNECT (`40{"sid":...}` when let in).
    pub async fn handshake(server: SocketAddr, from: [u8; 4]) -> Option<(Raw, String)> {
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::from((from, 0)))
            .expect("bind a loopback address");
        let stream = socket.connect(server).await.ok()?;
        let url = format!("ws://{server}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) = tokio_tungstenite::client_async(url, stream).await.ok()?;
        let mut raw = Raw { ws };
        let open = raw.next_text().await?;
        assert!(open.starts_with('0'), "{open}");
        raw.send("40").await;
        let connect = raw.next_text().await?;
        Some((raw, connect))
    }

    /// Connects from `from`; `None` when the server did not let it in.
    pub async fn connect(server: SocketAddr, from: [u8; 4]) -> Option<Raw> {
        let (mut raw, connect) = Self::handshake(server, from).await?;
        // Let in: `40{"sid":...}`, and no disconnect right after.
        if !connect.starts_with("40") {
            return None;
        }
        match tokio::time::timeout(Duration::from_millis(500), raw.next_text()).await {
            Ok(Some(t)) if t.starts_with("41") => None,
            Ok(None) => None,
            _ => Some(raw),
        }
    }

    /// Connects and joins `room` in the same breath as the server's CONNECT
    /// acknowledgement, as every real client does; the server's answer, or
    /// `None` when there is none within 2 s.
    pub async fn connect_and_join(server: SocketAddr, from: [u8; 4], room: &str) -> Option<String> {
        let (mut raw, connect) = Self::handshake(server, from).await.expect("connected");
        assert!(connect.starts_with("40"), "{connect}");
        raw.send(&format!("42[\"join\",\"{room}\"]")).await;
        let answer = tokio::time::timeout(Duration::from_secs(2), raw.next_text())
            .await
            .ok()??;
        let _ = raw.ws.close(None).await;
        Some(answer)
    }

    pub async fn send(&mut self, text: &str) {
        let _ = self.ws.send(Ws::Text(text.to_string().into())).await;
    }

    /// The next text frame (pings answered), `None` when the connection ends.
    pub async fn next_text(&mut self) -> Option<String> {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .ok()??
                .ok()?;
            match m {
                Ws::Text(t) if t.as_str() == "2" => self.send("3").await,
                Ws::Text(t) => return Some(t.to_string()),
                Ws::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// Whether the server ends the connection within `limit` (frames that
    /// arrive meanwhile are skipped; pings answered).
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Ws::Close(_)))) => return true,
                Ok(Some(Ok(Ws::Text(t)))) if t.as_str() == "2" => self.send("3").await,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Joins `room`; the server's answer (`created`, `joined`, `full`).
    pub async fn join(&mut self, room: &str) -> String {
        self.send(&format!("42[\"join\",\"{room}\"]")).await;
        loop {
            let t = self.next_text().await.expect("an answer to join");
            for answer in ["created", "joined", "full"] {
                if t.starts_with(&format!("42[\"{answer}\"")) {
                    return answer.to_string();
                }
            }
        }
    }
}
