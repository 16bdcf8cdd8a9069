//! Shared by the integration tests: a doorbell on loopback, and a viewer that
//! plays the browser (joins over real Socket.IO, offers with webrtc-rs, decodes
//! the H.264 it receives, talks back with an Opus tone).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use doorbell::call::command::{Command, Status};
use doorbell::call::event::CallEvent;
use doorbell::cmd::daemon::{self, Doorbell};
use doorbell::config::Config;
use doorbell::media::audio::{dominant_frequency, rms, OpusDecoder, OpusEncoder, Tone};
use doorbell::media::h264::H264Decoder;
use doorbell::media::{wav, AUDIO_FRAME};
use doorbell::peer::viewer::{ViewerOptions, ViewerPeer, ViewerStreams};
use doorbell::peer::MediaTrack;
use doorbell::peer::PeerSettings;
use doorbell::sdp;
use doorbell::signaling::client::{ClientSettings, SocketIoSignaling};
use doorbell::signaling::protocol::{Message, SessionDescription};
use doorbell::signaling::tls::TrustSettings;
use doorbell::signaling::{Signaling, SignalingEvent};

pub mod cdp;
pub mod coturn;
pub mod lab;
pub mod live;
pub mod matrix;
pub mod path;
pub mod probe;
pub mod raw;
pub mod seeds;

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info,webrtc=warn,webrtc_ice=warn,webrtc_srtp=warn,webrtc_dtls=warn,webrtc_mdns=warn".into()))
        .with_test_writer()
        .try_init();
}

/// `doorbell serve`'s server on a loopback port (no STUN for its viewers:
/// everything here is on loopback), stopped when dropped.
pub struct TestServer {
    pub url: String,
    /// Rooms and members, as the server sees them.
    pub server: doorbell::server::Server,
    cancel: CancellationToken,
}

impl std::ops::Deref for TestServer {
    type Target = doorbell::server::Server;
    fn deref(&self) -> &Self::Target {
        &self.server
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub async fn test_server() -> TestServer {
    let cancel = CancellationToken::new();
    let server = doorbell::server::start(
        "127.0.0.1:0",
        doorbell::server::ServerSettings {
            viewer_ice_servers: vec![],
            ..doorbell::server::ServerSettings::default()
        },
        cancel.clone(),
    )
    .await
    .expect("the signaling server starts");
    TestServer {
        url: format!("http://{}", server.addr),
        server,
        cancel,
    }
}

/// The start of most call tests: a server, a directory, and a doorbell with
/// the loopback config (changed by `adjust`) connected to the server.
pub struct Rig {
    pub bell: Bell,
    pub server: TestServer,
    pub dir: tempfile::TempDir,
}

pub async fn rig(adjust: impl FnOnce(&mut Config)) -> Rig {
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = loopback_config(&server.url, dir.path());
    adjust(&mut config);
    let bell = Bell::start(&config).await;
    bell.wait_connected().await;
    Rig { bell, server, dir }
}

/// A doorbell config for loopback tests: no STUN, loopback candidates, a
/// small test pattern, a 440 Hz tone, the viewer's voice into WAV files.
pub fn loopback_config(url: &str, dir: &Path) -> Config {
    let mut c = Config::default();
    c.signaling.url = url.to_string();
    c.ice.servers.clear();
    c.ice.include_loopback = true;
    c.video.width = 320;
    c.video.height = 240;
    c.video.fps = 30;
    c.video.bitrate_kbps = 600;
    c.audio.microphone = "tone:440".into();
    c.audio.speaker = format!("wav:{}", dir.join("call-{call}.wav").display());
    c.button.sources.clear();
    c.control.socket = Some(dir.join("control.sock"));
    c.history.dir = Some(dir.join("history"));
    c.validate(Path::new("test")).expect("test config is valid");
    c
}

pub struct Bell {
    pub bell: Doorbell,
    pub events: broadcast::Receiver<CallEvent>,
    pub cancel: CancellationToken,
}

impl Bell {
    pub async fn start(config: &Config) -> Bell {
        Self::start_with(config, daemon::Options::default()).await
    }

    pub async fn start_with(config: &Config, options: daemon::Options) -> Bell {
        let cancel = CancellationToken::new();
        let bell = daemon::start(config, options, cancel.clone())
            .await
            .expect("doorbell starts");
        let events = bell.events.subscribe();
        Bell {
            bell,
            events,
            cancel,
        }
    }

    pub async fn status(&self) -> Status {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.bell
            .commands
            .send(Command::Status { reply: tx })
            .await
            .unwrap();
        tokio::time::timeout(WAIT, rx)
            .await
            .expect("status in time")
            .unwrap()
    }

    /// Waits until the doorbell's signaling connection is up.
    pub async fn wait_connected(&self) {
        let start = Instant::now();
        while !self.status().await.signaling_up {
            assert!(
                start.elapsed() < WAIT,
                "the doorbell did not connect to the signaling server"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Presses the button; the reply as the control socket words it.
    pub async fn ring(&self) -> String {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.bell
            .commands
            .send(Command::Ring { reply: Some(tx) })
            .await
            .unwrap();
        tokio::time::timeout(WAIT, rx)
            .await
            .expect("ring reply in time")
            .unwrap()
            .to_string()
    }

    /// The next event named `name`; every event seen on the way is returned too.
    pub async fn until(&mut self, name: &str) -> (CallEvent, Vec<CallEvent>) {
        let mut seen = Vec::new();
        loop {
            let e = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no {name} event in time; saw {:?}", names(&seen)))
                .expect("event stream open");
            seen.push(e.clone());
            if e.name() == name {
                return (e, seen);
            }
        }
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(WAIT, self.bell.task)
            .await
            .expect("stops in time")
            .unwrap();
    }
}

pub fn names(events: &[CallEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.name()).collect()
}

/// The browser's side of the room protocol, over real Socket.IO.
pub struct ViewerSignaling {
    pub signaling: Arc<SocketIoSignaling>,
    pub events: mpsc::Receiver<SignalingEvent>,
    cancel: CancellationToken,
}

impl ViewerSignaling {
    pub async fn connect(url: &str) -> ViewerSignaling {
        Self::connect_trusting(url, TrustSettings::default()).await
    }

    pub async fn connect_trusting(url: &str, trust: TrustSettings) -> ViewerSignaling {
        let (tx, mut events) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        let signaling = SocketIoSignaling::start(
            ClientSettings {
                url: url.to_string(),
                engine_io: Default::default(),
                trust,
                reconnect_min: Duration::from_millis(200),
                reconnect_max: Duration::from_secs(1),
            },
            tx,
            cancel.clone(),
        )
        .unwrap();
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(SignalingEvent::Up)) => {}
            other => panic!("viewer did not connect: {other:?}"),
        }
        ViewerSignaling {
            signaling,
            events,
            cancel,
        }
    }

    pub async fn send(&self, m: Message) {
        self.signaling.send(m).await.expect("viewer send");
    }

    pub async fn next(&mut self) -> Message {
        match tokio::time::timeout(WAIT, self.events.recv()).await {
            Ok(Some(SignalingEvent::Message(m))) => m,
            Ok(Some(other)) => panic!("viewer signaling: {other:?}"),
            Ok(None) => panic!("viewer signaling closed"),
            Err(_) => panic!("viewer got no message in time"),
        }
    }
}

impl Drop for ViewerSignaling {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// What one call looked like from the viewer.
#[derive(Debug)]
pub struct CallReport {
    pub decoded_frames: usize,
    pub sizes_ok: bool,
    pub answer_video_codecs: Vec<String>,
    pub doorbell_tone_hz: Option<f64>,
    /// The second half of what the viewer heard from the doorbell.
    pub heard_tail: Vec<i16>,
    pub room: String,
    /// Candidate types in the viewer's offer and the doorbell's answer.
    pub offer_candidates: Vec<String>,
    pub answer_candidates: Vec<String>,
}

/// The room name at the end of a viewer link.
pub fn room_of(link: &str) -> String {
    link.rsplit("room=")
        .next()
        .expect("link has a room")
        .to_string()
}

/// Joins `room`, offers like Chromium (VP8 first), and runs the call until at
/// least `frames` pictures of `size` are decoded and `talk` of tone went out.
/// Leaves with `bye`.
pub async fn view_call(
    url: &str,
    room: &str,
    frames: usize,
    size: (usize, usize),
    talk: Duration,
    tone_hz: f32,
) -> CallReport {
    view_call_listening(
        url,
        room,
        frames,
        size,
        talk,
        tone_hz,
        Duration::from_secs(1),
    )
    .await
}

/// [`view_call`], listening to at least `listen` of the doorbell's audio; the
/// reported frequency is that of the second half of what was heard.
pub async fn view_call_listening(
    url: &str,
    room: &str,
    frames: usize,
    size: (usize, usize),
    talk: Duration,
    tone_hz: f32,
    listen: Duration,
) -> CallReport {
    view_call_trusting(
        url,
        TrustSettings::default(),
        room,
        frames,
        size,
        talk,
        tone_hz,
        listen,
    )
    .await
}

/// [`view_call_listening`] over `https` with the viewer trusting per `trust`.
#[allow(clippy::too_many_arguments)]
pub async fn view_call_trusting(
    url: &str,
    trust: TrustSettings,
    room: &str,
    frames: usize,
    size: (usize, usize),
    talk: Duration,
    tone_hz: f32,
    listen: Duration,
) -> CallReport {
    view_call_as(
        url,
        room,
        Viewing {
            trust,
            frames,
            size,
            talk,
            tone_hz,
            listen,
            relay_only: false,
        },
    )
    .await
}

/// How a test viewer takes a call.
pub struct Viewing {
    pub trust: TrustSettings,
    /// Pictures to decode, and the size each must have.
    pub frames: usize,
    pub size: (usize, usize),
    /// How long to talk (a tone of `tone_hz`), and to listen at least.
    pub talk: Duration,
    pub tone_hz: f32,
    pub listen: Duration,
    /// Relayed candidates only, through the TURN server the signaling
    /// server hands out in `ice_servers`.
    pub relay_only: bool,
}

/// The candidate types (`host`, `srflx`, `relay`) an SDP carries.
pub fn candidate_types(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .filter_map(|l| l.split(" typ ").nth(1))
        .filter_map(|t| t.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// A test viewer whose offer the doorbell answered.
pub struct InCall {
    pub sig: ViewerSignaling,
    pub peer: ViewerPeer,
    pub streams: ViewerStreams,
    pub offer: String,
    pub answer: String,
}

/// Joins `room` as its second member (taking the ICE servers the server
/// gives), offers like Chromium (VP8 first), and accepts the answer.
pub async fn join_and_call(
    url: &str,
    trust: TrustSettings,
    room: &str,
    relay_only: bool,
) -> InCall {
    let mut sig = ViewerSignaling::connect_trusting(url, trust).await;
    sig.send(Message::Join(room.to_string())).await;
    let mut ice_servers = vec![];
    let joined = loop {
        match sig.next().await {
            Message::IceServers(s) => ice_servers = s,
            other => break other,
        }
    };
    assert_eq!(
        joined,
        Message::Joined(room.to_string()),
        "the viewer is the second member"
    );
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
    sig.send(Message::Invite(SessionDescription::offer(offer.clone())))
        .await;
    let answer = match sig.next().await {
        Message::Ok(d) => d.sdp,
        other => panic!("expected ok, got {other}"),
    };
    peer.accept(&answer).await.expect("answer accepted");
    InCall {
        sig,
        peer,
        streams,
        offer,
        answer,
    }
}

/// Talks into `track`: an Opus tone of `hz` at the real-time pace, for
/// `how_long`.
pub fn talk_tone(track: MediaTrack, hz: f32, how_long: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tone = Tone::new(hz);
        let mut enc = OpusEncoder::new().unwrap();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let start = Instant::now();
        while start.elapsed() < how_long {
            tick.tick().await;
            let mut pcm = [0i16; AUDIO_FRAME];
            tone.fill(&mut pcm);
            let _ = track
                .send(enc.encode(&pcm).unwrap(), Duration::from_millis(20))
                .await;
        }
    })
}

/// Joins `room` (taking the ICE servers the server gives), offers like
/// Chromium (VP8 first), and runs the call as `v` says. Leaves with `bye`.
pub async fn view_call_as(url: &str, room: &str, v: Viewing) -> CallReport {
    let Viewing {
        trust,
        frames,
        size,
        talk,
        tone_hz,
        listen,
        relay_only,
    } = v;
    let listen_samples = (listen.as_secs_f64() * 48_000.0) as usize;
    let InCall {
        sig,
        peer: viewer,
        mut streams,
        offer,
        answer,
    } = join_and_call(url, trust, room, relay_only).await;
    let offered: Vec<String> = sdp::media_sections(&offer)
        .iter()
        .filter(|s| s.kind == "video")
        .flat_map(|s| s.codecs.iter().map(|c| c.name.clone()))
        .collect();
    assert_eq!(
        offered.first().map(String::as_str),
        Some("VP8"),
        "offers VP8 first, like Chromium"
    );
    let answer_video_codecs: Vec<String> = sdp::media_sections(&answer)
        .iter()
        .filter(|s| s.kind == "video")
        .flat_map(|s| s.codecs.iter().map(|c| c.name.clone()))
        .collect();
    let candidates = (candidate_types(&offer), candidate_types(&answer));
    let talker = viewer
        .audio_track()
        .map(|track| talk_tone(track, tone_hz, talk));
    // Listen: decode video, collect the doorbell's audio.
    let mut decoder = H264Decoder::new().unwrap();
    let mut opus = OpusDecoder::new().unwrap();
    let mut heard = Vec::new();
    let (mut decoded, mut sizes_ok) = (0usize, true);
    let deadline = Instant::now() + WAIT;
    let mut last_request = Instant::now();
    while decoded < frames || heard.len() < listen_samples {
        assert!(
            Instant::now() < deadline,
            "decoded {decoded} frames and {} audio samples in time",
            heard.len()
        );
        tokio::select! {
            Some(unit) = streams.video.recv() => match decoder.decode(&unit.data) {
                Ok(Some(p)) => {
                    decoded += 1;
                    sizes_ok &= (p.width, p.height) == size;
                }
                Ok(None) => {}
                Err(_) => {
                    if last_request.elapsed() > Duration::from_millis(300) {
                        let _ = viewer.request_keyframe().await;
                        last_request = Instant::now();
                    }
                }
            },
            Some(a) = streams.audio.recv() => {
                let _ = opus.decode(&a.payload, &mut heard);
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if decoded == 0 && last_request.elapsed() > Duration::from_secs(1) {
                    let _ = viewer.request_keyframe().await;
                    last_request = Instant::now();
                }
            }
        }
    }
    if let Some(t) = talker {
        tokio::time::timeout(WAIT, t)
            .await
            .expect("talker done")
            .unwrap();
    }
    sig.send(Message::Bye(Some(room.to_string()))).await;
    viewer.close().await;
    let tail = &heard[heard.len() / 2..];
    CallReport {
        decoded_frames: decoded,
        sizes_ok,
        answer_video_codecs,
        doorbell_tone_hz: dominant_frequency(tail),
        heard_tail: tail.to_vec(),
        room: room.to_string(),
        offer_candidates: candidates.0,
        answer_candidates: candidates.1,
    }
}

/// The viewer's voice as the doorbell recorded it: (rms, dominant frequency).
pub fn recorded_tone(path: &Path) -> (f64, Option<f64>) {
    let pcm = wav::read_mono(path).unwrap_or_else(|e| panic!("{e}"));
    let voiced: Vec<i16> = pcm
        .iter()
        .copied()
        .skip_while(|s| s.unsigned_abs() < 200)
        .collect();
    assert!(
        voiced.len() > 24_000,
        "{}: only {} voiced samples of {}",
        path.display(),
        voiced.len(),
        pcm.len()
    );
    // Skip the first 100 ms of decoder warm-up.
    let body = &voiced[4800..voiced.len() - 4800.min(voiced.len() / 4)];
    (rms(body), dominant_frequency(body))
}

pub fn wav_of(dir: &Path, call: u64) -> PathBuf {
    dir.join(format!("call-{call}.wav"))
}

/// Waits until `cond` holds, or panics with `what`.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
