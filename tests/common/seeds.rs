//! The seeds' worlds, for tests: the servers in tests/servers (written from
//! seeds 002 and 004, not from our code) and a seed-002 viewer that speaks
//! `/ws/viewer` with the webrtc-rs test peer, trickling its candidates.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use doorbell::media::h264::H264Decoder;
use doorbell::peer::viewer::{ViewerOptions, ViewerPeer, ViewerStreams};
use doorbell::peer::PeerSettings;
use doorbell::signaling::protocol::IceCandidate;

use super::WAIT;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The Python with aiohttp (the python-socketio 5 venv of scripts/test).
pub fn python() -> String {
    std::env::var("DOORBELL_PY5").unwrap_or_else(|_| {
        let p = Path::new(ROOT).join("target/py5/bin/python");
        assert!(
            p.exists(),
            "DOORBELL_PY5 is not set and {} does not exist: run scripts/test",
            p.display()
        );
        p.display().to_string()
    })
}

/// One of the seed servers, running until dropped.
pub struct SeedServer {
    child: Child,
    pub port: u16,
    pub url: String,
}

impl Drop for SeedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SeedServer {
    /// Runs `tests/servers/<script>` with `args` on a free loopback port.
    pub fn start(script: &str, args: &[&str]) -> SeedServer {
        Self::start_on(script, 0, args)
    }

    /// The same on `port` (0: a free one).
    pub fn start_on(script: &str, port: u16, args: &[&str]) -> SeedServer {
        let python = python();
        let mut child = Command::new(&python)
            .arg(Path::new(ROOT).join("tests/servers").join(script))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("DOORBELL_SHOW_LAB_SERVER").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port: u16 = lines
            .next()
            .and_then(Result::ok)
            .and_then(|l| {
                l.strip_prefix("listening on ")
                    .and_then(|p| p.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("tests/servers/{script} did not start"));
        SeedServer {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    pub async fn get(&self, path: &str) -> Value {
        let r = reqwest::get(format!("{}{path}", self.url))
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        r.json().await.unwrap_or(Value::Null)
    }

    pub async fn post(&self, path: &str) -> u16 {
        reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
            .status()
            .as_u16()
    }

    /// Polls `GET path` until `cond` holds.
    pub async fn until(&self, path: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let v = self.get(path).await;
            if cond(&v) {
                return v;
            }
            assert!(start.elapsed() < WAIT, "{what}: {path} says {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A seed-002 viewer's socket.
pub struct Seed002Viewer {
    ws: Ws,
    pub user_id: String,
}

/// How a socket ended.
#[derive(Debug, PartialEq)]
pub enum Next {
    Message(Value),
    Closed(Option<u16>),
}

impl Seed002Viewer {
    /// Connects to `/ws/viewer` and says hello with `token`; `Err` carries
    /// the close code when the server refuses.
    pub async fn connect(port: u16, token: &str) -> Result<Seed002Viewer, Option<u16>> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws/viewer"))
            .await
            .expect("viewer socket");
        let mut v = Seed002Viewer {
            ws,
            user_id: String::new(),
        };
        v.send("hello", None, json!({ "token": token })).await;
        match v.next().await {
            Next::Message(m) if m["type"] == "hello_ack" => {
                v.user_id = m["payload"]["user_id"].as_str().unwrap_or("").to_string();
                Ok(v)
            }
            Next::Closed(code) => Err(code),
            Next::Message(m) => panic!("expected hello_ack, got {m}"),
        }
    }

    pub async fn send(&mut self, kind: &str, request_id: Option<&str>, payload: Value) {
        let mut m = json!({ "type": kind, "ts": "2026-01-01T00:00:00.000Z", "payload": payload });
        if let Some(r) = request_id {
            m["request_id"] = json!(r);
        }
        self.ws
            .send(WsMessage::Text(m.to_string().into()))
            .await
            .expect("viewer send");
    }

    /// The next message (heartbeat acks skipped), or how the socket ended.
    pub async fn next(&mut self) -> Next {
        loop {
            let item = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message from the server in time");
            match item {
                Some(Ok(WsMessage::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON from the server");
                    if v["type"] != "heartbeat_ack" {
                        return Next::Message(v);
                    }
                }
                Some(Ok(WsMessage::Close(f))) => return Next::Closed(f.map(|f| u16::from(f.code))),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Next::Closed(None),
            }
        }
    }

    /// The next message of type `kind`; others are returned in the list.
    pub async fn until(&mut self, kind: &str) -> (Value, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            match self.next().await {
                Next::Message(m) if m["type"] == kind => return (m, before),
                Next::Message(m) => before.push(m),
                Next::Closed(c) => {
                    panic!("the socket closed ({c:?}) before {kind}; saw {before:?}")
                }
            }
        }
    }

    /// Closes the socket the way a page that goes away does.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A device speaking seed 002 from a raw socket.
pub struct FakeDevice {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// How a raw socket ended: its close code and reason.
pub type Closed = (Option<u16>, String);

impl FakeDevice {
    pub async fn connect(port: u16, id: &str) -> Result<FakeDevice, Closed> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws/device"))
            .await
            .expect("device socket");
        let mut d = FakeDevice { ws };
        d.send("hello", json!({ "device_id": id })).await;
        match d.next().await {
            Ok(m) if m["type"] == "hello_ack" => {
                assert_eq!(m["payload"]["device_id"], id);
                Ok(d)
            }
            Ok(m) => panic!("expected hello_ack, got {m}"),
            Err(c) => Err(c),
        }
    }

    pub async fn send(&mut self, kind: &str, payload: Value) {
        let m = json!({ "type": kind, "ts": "2026-01-01T00:00:00.000Z", "payload": payload });
        let _ = self.ws.send(WsMessage::Text(m.to_string().into())).await;
    }

    pub async fn next(&mut self) -> Result<Value, Closed> {
        loop {
            let item = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message from the server in time");
            match item {
                Some(Ok(WsMessage::Text(t))) => {
                    return Ok(serde_json::from_str(t.as_str()).unwrap())
                }
                Some(Ok(WsMessage::Close(f))) => {
                    return Err(f.map_or((None, String::new()), |f| {
                        (Some(u16::from(f.code)), f.reason.to_string())
                    }))
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Err((None, String::new())),
            }
        }
    }

    pub async fn until(&mut self, kind: &str) -> Value {
        loop {
            let m = self.next().await.expect("the device socket stays open");
            if m["type"] == kind {
                return m;
            }
        }
    }
}

/// A candidate line as a page trickles it.
pub fn candidate_json(c: &IceCandidate) -> Value {
    json!({
        "candidate": c.candidate.trim_start_matches("a="),
        "sdpMid": c.sdp_mid,
        "sdpMLineIndex": c.sdp_mline_index,
    })
}

pub fn candidate_from(v: &Value) -> Option<IceCandidate> {
    let line = v["candidate"].as_str()?;
    if line.is_empty() {
        return None;
    }
    Some(IceCandidate {
        candidate: line.to_string(),
        sdp_mid: v["sdpMid"].as_str().map(str::to_string),
        sdp_mline_index: v["sdpMLineIndex"].as_u64().map(|n| n as u16),
        username_fragment: None,
    })
}

/// Splits a complete SDP into the SDP without its candidates and the
/// candidates (with the mid and index of their section), as a page that
/// trickles would send them.
pub fn split_candidates(sdp: &str) -> (String, Vec<IceCandidate>) {
    let lines: Vec<&str> = sdp.split("\r\n").filter(|l| !l.is_empty()).collect();
    // Each section's mid, by section index.
    let mut mids: Vec<Option<String>> = Vec::new();
    for line in &lines {
        if line.starts_with("m=") {
            mids.push(None);
        } else if let (Some(m), Some(last)) = (line.strip_prefix("a=mid:"), mids.last_mut()) {
            *last = Some(m.to_string());
        }
    }
    let (mut bare, mut candidates) = (String::new(), Vec::new());
    let mut section: Option<usize> = None;
    for line in lines {
        if line.starts_with("m=") {
            section = Some(section.map_or(0, |s| s + 1));
        }
        if let (Some(c), Some(i)) = (line.strip_prefix("a=candidate:"), section) {
            candidates.push(IceCandidate {
                candidate: format!("candidate:{c}"),
                sdp_mid: mids[i].clone(),
                sdp_mline_index: u16::try_from(i).ok(),
                username_fragment: None,
            });
        } else if line != "a=end-of-candidates" {
            bare.push_str(line);
            bare.push_str("\r\n");
        }
    }
    (bare, candidates)
}

/// A watch from a seed-002 viewer, up to the answer and the trickled
/// candidates: the viewer's own candidates go one by one after its offer,
/// the doorbell's come the same way after its answer.
pub struct Watch {
    pub viewer: Seed002Viewer,
    pub session: String,
    pub peer: ViewerPeer,
    pub streams: ViewerStreams,
    pub answer: String,
    pub doorbell_candidates: usize,
}

impl Watch {
    /// Ends the watch of ring `call` (the first ring: `end_watch`, the
    /// owner's hang-up, which the server turns into watch_ended
    /// `user_ended`; later ones: the viewer's socket closes, which it turns
    /// into `viewer_disconnected`), then checks that the call ended
    /// `viewer_left` and that the door heard the viewer's `hz` tone.
    pub async fn end_and_check_heard(mut self, bell: &mut super::lab::Daemon, call: u64, hz: f32) {
        if call == 1 {
            self.viewer
                .send("end_watch", None, json!({ "session_id": self.session }))
                .await;
        } else {
            self.viewer.close().await;
        }
        let (ended, seen) = bell.until("ended").await;
        assert_eq!(
            ended["reason"],
            "viewer_left",
            "{:?}",
            super::lab::event_names(&seen)
        );
        self.peer.close().await;
        let (level, freq) =
            super::lab::gated_tone(&bell.dir.path().join(format!("call-{call}.wav")));
        assert!(level > 100.0, "the viewer reached the door: rms {level}");
        assert!(
            (freq - f64::from(hz)).abs() < 20.0,
            "the door heard {freq} Hz"
        );
    }

    /// Connects to the seed-002 server on `port` with `token`, watches
    /// `device` and offers; when `relay_only`, with relayed candidates only.
    pub async fn open(port: u16, token: &str, device: &str, relay_only: bool) -> Watch {
        let viewer = Seed002Viewer::connect(port, token)
            .await
            .expect("the owner's token is good");
        Self::with(viewer, device, relay_only).await
    }

    /// [`Watch::open`] on a viewer already connected.
    pub async fn with(mut viewer: Seed002Viewer, device: &str, relay_only: bool) -> Watch {
        viewer
            .send(
                "watch_request",
                Some("req-1"),
                json!({ "device_id": device }),
            )
            .await;
        let (ready, _) = viewer.until("watch_ready").await;
        assert_eq!(ready["request_id"], "req-1", "{ready}");
        let session = ready["payload"]["session_id"].as_str().unwrap().to_string();
        let ice_servers =
            doorbell::signaling::device_ws::ice_servers(&ready["payload"]["ice_servers"])
                .expect("watch_ready's ICE servers");
        let (peer, streams, offer) = ViewerPeer::offer(
            &PeerSettings {
                ice_servers,
                include_loopback: true,
                relay_only,
                ..Default::default()
            },
            ViewerOptions::default(),
            Duration::from_secs(3),
        )
        .await
        .expect("viewer offer");
        let (bare, candidates) = split_candidates(&offer);
        assert!(!candidates.is_empty(), "the viewer gathered candidates");
        viewer
            .send(
                "signal_offer",
                None,
                json!({ "session_id": session, "sdp": { "type": "offer", "sdp": bare } }),
            )
            .await;
        for c in &candidates {
            viewer
                .send(
                    "signal_ice",
                    None,
                    json!({ "session_id": session, "candidate": candidate_json(c) }),
                )
                .await;
        }
        viewer
            .send(
                "signal_ice",
                None,
                json!({ "session_id": session, "candidate": null }),
            )
            .await;
        let mut answer = None;
        let mut early = Vec::new();
        let mut doorbell_candidates = 0;
        loop {
            let m = match viewer.next().await {
                Next::Message(m) => m,
                Next::Closed(c) => panic!("the viewer's socket closed ({c:?})"),
            };
            assert_eq!(m["payload"]["session_id"], session.as_str(), "{m}");
            match m["type"].as_str() {
                Some("signal_answer") => {
                    let sdp = m["payload"]["sdp"]["sdp"].as_str().unwrap().to_string();
                    assert_eq!(m["payload"]["sdp"]["type"], "answer");
                    peer.accept(&sdp).await.expect("the answer is accepted");
                    for c in early.drain(..) {
                        peer.add_candidate(c).await.expect("a usable candidate");
                    }
                    answer = Some(sdp);
                }
                Some("signal_ice") => match candidate_from(&m["payload"]["candidate"]) {
                    Some(c) => {
                        doorbell_candidates += 1;
                        if answer.is_some() {
                            peer.add_candidate(c).await.expect("a usable candidate");
                        } else {
                            early.push(c);
                        }
                    }
                    None => break,
                },
                _ => panic!("unexpected {m}"),
            }
        }
        Watch {
            viewer,
            session,
            peer,
            streams,
            answer: answer.expect("the answer came before the end of candidates"),
            doorbell_candidates,
        }
    }
}

/// A seed-004 peer's event stream (`GET /events/:sessionId/:peerId`).
pub struct SseStream {
    response: reqwest::Response,
    buffer: String,
}

impl SseStream {
    /// Opens the stream on the server at `base` (`http://host:port`).
    pub async fn open(base: &str, session: &str, peer: &str) -> SseStream {
        let response = reqwest::get(format!("{base}/events/{session}/{peer}"))
            .await
            .expect("GET /events");
        assert_eq!(response.status().as_u16(), 200, "GET /events");
        SseStream {
            response,
            buffer: String::new(),
        }
    }

    /// The next event's data that is not a ping.
    pub async fn next(&mut self) -> Value {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect::<Vec<_>>()
                    .join("\n");
                if data.is_empty() {
                    continue;
                }
                let v: Value = serde_json::from_str(&data).expect("JSON event");
                if v["type"] != "ping" {
                    return v;
                }
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("an event in time")
                .expect("the stream reads")
                .expect("the stream stays open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// `POST` a JSON body to `base` + `path`; the status.
pub async fn post_json(base: &str, path: &str, body: &Value) -> u16 {
    reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
        .status()
        .as_u16()
}

/// `GET` JSON from `base` + `path`.
pub async fn get_json(base: &str, path: &str) -> Value {
    reqwest::get(format!("{base}{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .json()
        .await
        .unwrap_or(Value::Null)
}

/// Decodes `frames` H.264 frames of the doorbell's video, asking for a
/// keyframe (PLI) when none comes.
pub async fn decode_frames(peer: &ViewerPeer, streams: &mut ViewerStreams, frames: usize) {
    let mut decoder = H264Decoder::new().unwrap();
    let (mut decoded, start) = (0, Instant::now());
    let mut asked = Instant::now();
    while decoded < frames {
        assert!(
            start.elapsed() < WAIT,
            "decoded {decoded} of {frames} frames in time"
        );
        tokio::select! {
            Some(unit) = streams.video.recv() => match decoder.decode(&unit.data) {
                Ok(Some(_)) => decoded += 1,
                Ok(None) => {}
                Err(_) if asked.elapsed() > Duration::from_millis(300) => {
                    let _ = peer.request_keyframe().await;
                    asked = Instant::now();
                }
                Err(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                let _ = peer.request_keyframe().await;
            }
        }
    }
}
