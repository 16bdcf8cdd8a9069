//! Just enough of the Chrome DevTools Protocol to drive Debian's Chromium
//! headless: launch it on a page, evaluate JavaScript in the page, open
//! another tab. The browser is ended by the PID we started it with.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct Browser {
    child: Child,
    port: u16,
    /// The browser-level DevTools endpoint (for opening tabs).
    endpoint: String,
    _profile: tempfile::TempDir,
}

pub struct Page {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The flags the issue measured Debian's Chromium with, plus a private profile.
pub fn launch(url: &str) -> Browser {
    launch_with(url, &[])
}

/// [`launch`] with more flags (a certificate to accept, a file as microphone).
pub fn launch_with(url: &str, extra: &[String]) -> Browser {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            "--allow-loopback-in-peer-connection",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-gpu",
            "--no-first-run",
            "--autoplay-policy=no-user-gesture-required",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start chromium ({e}); scripts/test installs Debian's chromium")
        });
    let stderr = child.stderr.take().unwrap();
    let mut endpoint = None;
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.unwrap_or_default();
        if let Some(i) = line.find("ws://127.0.0.1:") {
            endpoint = Some(line[i..].trim().to_string());
            break;
        }
    }
    // Keep draining stderr so Chromium never blocks on a full pipe.
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            if std::env::var_os("DOORBELL_SHOW_CHROMIUM").is_some() {
                eprintln!("chromium: {l}");
            }
        }
    });
    let endpoint = endpoint.expect("chromium printed its DevTools address");
    let port = endpoint["ws://127.0.0.1:".len()..]
        .split('/')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    Browser {
        child,
        port,
        endpoint,
        _profile: profile,
    }
}

/// A GET against the DevTools HTTP endpoint (which keeps connections open:
/// read by Content-Length, not to the end).
async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut r = TokioBufReader::new(s);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.unwrap() == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).await.unwrap();
    String::from_utf8_lossy(&body).into_owned()
}

impl Browser {
    /// Kills the browser at once, as a phone that loses its network or runs
    /// out of battery: nothing is said to anyone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The open tab whose URL contains `needle`.
    pub async fn page(&self, needle: &str) -> Page {
        for _ in 0..100 {
            let list: Value = serde_json::from_str(&http_get(self.port, "/json/list").await)
                .unwrap_or(Value::Null);
            if let Some(target) = list.as_array().into_iter().flatten().find(|t| {
                t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.contains(needle))
            }) {
                let ws_url = target["webSocketDebuggerUrl"].as_str().unwrap().to_string();
                let (ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
                return Page { ws, next_id: 1 };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no tab with {needle}");
    }

    /// Opens `url` in a new tab.
    pub async fn open(&self, url: &str) -> Page {
        let (ws, _) = tokio_tungstenite::connect_async(self.endpoint.as_str())
            .await
            .unwrap();
        let mut browser = Page { ws, next_id: 1 };
        browser
            .call("Target.createTarget", json!({ "url": url }))
            .await;
        self.page(url).await
    }
}

impl Page {
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(WsMessage::Text(msg.to_string().into()))
            .await
            .unwrap();
        let reply = async {
            while let Some(Ok(m)) = self.ws.next().await {
                if let WsMessage::Text(t) = m {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["id"] == id {
                        return v;
                    }
                }
            }
            panic!("DevTools connection closed");
        };
        tokio::time::timeout(Duration::from_secs(10), reply)
            .await
            .unwrap_or_else(|_| panic!("no DevTools answer to {method} in 10 s"))
    }

    /// Evaluates `expression` (may return a promise) and returns its JSON value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        if let Some(e) = r["result"]["exceptionDetails"].as_object() {
            panic!("page threw: {e:?}");
        }
        r["result"]["result"]["value"].clone()
    }
}
