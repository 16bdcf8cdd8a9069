//! One peer session of a call: the peer connection plus the media it carries.
//!
//! Built when an offer arrives ([`Session::answer`]), made live when the
//! transport is up ([`Session::go_live`]), torn down when the call ends or the
//! viewer starts over ([`Session::close`]). Opening devices and stopping their
//! threads block, so they run on the blocking pool; everything is bounded by
//! timeouts so a stuck device cannot hold the doorbell.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::machine::{Epoch, Input};
use crate::media::audio::{MicPipeline, Playout};
use crate::media::tap::{CallTap, Tapped};
use crate::media::video::{KeyframeRequester, VideoPipeline};
use crate::media::{AudioSink, AudioSource, MediaOpener, VideoSource};
use crate::peer::{AnswerInputs, AnswerPeer, PeerError, PeerEvent, PeerSettings};
use crate::signaling::protocol::IceCandidate;

/// Inbound silence longer than this is reported as a stall (with the time of
/// the last packet, from which the machine counts `call.media_timeout`).
const STALL: Duration = Duration::from_secs(1);
/// How often the inbound packet counter is looked at.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// What a session reports back to the call loop.
pub type Feedback = mpsc::Sender<Input>;

pub struct Session {
    pub epoch: Epoch,
    peer: Arc<AnswerPeer>,
    video: Option<VideoPipeline>,
    mic: Option<MicPipeline>,
    playout: Option<Playout>,
    live: Arc<AtomicBool>,
    keyframes: Option<KeyframeRequester>,
    tasks: Vec<JoinHandle<()>>,
}

struct Devices {
    video: Option<Box<dyn VideoSource>>,
    microphone: Option<Box<dyn AudioSource>>,
    speaker: Option<Box<dyn AudioSink>>,
    problems: Vec<String>,
}

/// Opens this call's devices; a device that fails is left out with a reason.
fn open_devices(media: &dyn MediaOpener, call: u64) -> Devices {
    let mut problems = Vec::new();
    let video = media.video().unwrap_or_else(|e| {
        problems.push(format!("camera: {e}; this call is audio only"));
        None
    });
    let microphone = media.microphone().unwrap_or_else(|e| {
        problems.push(format!(
            "microphone: {e}; the viewer will not hear the door"
        ));
        None
    });
    let speaker = media.speaker(call).unwrap_or_else(|e| {
        problems.push(format!(
            "speaker: {e}; the visitor will not hear the viewer"
        ));
        None
    });
    Devices {
        video,
        microphone,
        speaker,
        problems,
    }
}

/// Everything needed to answer one offer (or, with `offer_sdp` `None`, to
/// make ours).
pub struct AnswerRequest {
    pub epoch: Epoch,
    pub call: u64,
    /// The viewer's offer; `None`: we offer (seed 004).
    pub offer_sdp: Option<String>,
    /// Cap on ICE gathering for the answer.
    pub gather_cap: Duration,
    pub media: Arc<dyn MediaOpener>,
    pub peer: PeerSettings,
    /// Candidates the viewer trickles.
    pub candidates: mpsc::Receiver<IceCandidate>,
    pub feedback: Feedback,
    /// Where a copy of the call's encoded media goes (a recorder), if anywhere.
    pub tap: Option<CallTap>,
    /// Trickle our candidates (as [`Input::LocalCandidate`]) instead of
    /// waiting for them before answering.
    pub trickle: bool,
}

/// A session and the complete answer to send.
pub struct Answered {
    pub session: Session,
    pub sdp: String,
}

/// Why an offer could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("opening the devices failed: {0}")]
    Devices(String),
    #[error(transparent)]
    Peer(#[from] PeerError),
}

impl Session {
    /// Opens devices, answers the offer and starts the media threads (video
    /// waits, encoder idle, until [`Session::go_live`]).
    pub async fn answer(request: AnswerRequest) -> Result<Answered, SessionError> {
        let AnswerRequest {
            epoch,
            call,
            offer_sdp,
            gather_cap,
            media,
            peer: peer_settings,
            candidates,
            feedback,
            tap,
            trickle,
        } = request;
        let opener = media.clone();
        let devices = tokio::task::spawn_blocking(move || open_devices(opener.as_ref(), call))
            .await
            .map_err(|e| SessionError::Devices(e.to_string()))?;
        for problem in &devices.problems {
            tracing::warn!(call, "{problem}");
            let _ = feedback.try_send(Input::MediaError {
                epoch,
                what: problem.clone(),
            });
        }
        let media_error = {
            let feedback = feedback.clone();
            move |what: String| {
                let _ = feedback.try_send(Input::MediaError { epoch, what });
            }
        };
        let playout = match devices.speaker {
            Some(sink) => {
                let on_error = media_error.clone();
                match Playout::start(sink, move |e| on_error(format!("speaker: {e}"))) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        media_error(format!("speaker: {e}"));
                        None
                    }
                }
            }
            None => None,
        };
        let (peer_tx, mut peer_rx) = mpsc::channel(64);
        let local_candidates = trickle.then(|| {
            let (tx, mut rx) = mpsc::channel(32);
            let feedback = feedback.clone();
            tokio::spawn(async move {
                while let Some(candidate) = rx.recv().await {
                    let input = Input::LocalCandidate { epoch, candidate };
                    if feedback.send(input).await.is_err() {
                        return;
                    }
                }
            });
            tx
        });
        let inputs = AnswerInputs {
            gather_cap,
            have_video: devices.video.is_some(),
            have_microphone: devices.microphone.is_some(),
            events: peer_tx,
            remote_audio: playout.as_ref().map(|p| p.input().tapped(tap.clone())),
            candidates,
            local_candidates,
        };
        let (peer, sdp) = match offer_sdp {
            Some(offer_sdp) => {
                let answer = AnswerPeer::answer(&peer_settings, &offer_sdp, inputs).await?;
                for note in &answer.notes {
                    tracing::warn!(call, "{note}");
                }
                if !answer.gathering_complete && !trickle {
                    tracing::warn!(
                        call,
                        cap = ?gather_cap,
                        "ICE gathering capped; answering with the candidates gathered so far (is a STUN/TURN server unreachable?)"
                    );
                }
                (answer.peer, answer.sdp)
            }
            None => AnswerPeer::offer(&peer_settings, inputs).await?,
        };
        let peer = Arc::new(peer);
        let plan = peer.plan();
        let live = Arc::new(AtomicBool::new(false));
        let first_sent = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();

        let mut video = None;
        let mut keyframes = None;
        if let (true, Some(source), Some(track)) =
            (plan.send_video, devices.video, peer.video_track())
        {
            let (tx, mut rx) = mpsc::channel(4);
            let on_error = media_error.clone();
            match VideoPipeline::start(source, &media.video_settings(), tx, move |e| {
                on_error(format!("video: {e}"))
            }) {
                Ok(p) => {
                    keyframes = Some(p.keyframe_requester());
                    video = Some(p);
                    let (feedback, first_sent, tap) =
                        (feedback.clone(), first_sent.clone(), tap.clone());
                    tasks.push(tokio::spawn(async move {
                        while let Some(frame) = rx.recv().await {
                            if let Some(tap) = &tap {
                                tap.send(Tapped::Video {
                                    data: frame.data.clone(),
                                    keyframe: frame.keyframe,
                                    duration: frame.duration,
                                });
                            }
                            if track.send(frame.data, frame.duration).await.is_err() {
                                break;
                            }
                            if !first_sent.swap(true, Ordering::AcqRel) {
                                let _ = feedback.send(Input::FirstMedia { epoch }).await;
                            }
                        }
                    }));
                }
                Err(e) => media_error(format!("video: {e}")),
            }
        }
        let mut mic = None;
        if let (true, Some(source), Some(track)) =
            (plan.send_audio, devices.microphone, peer.audio_track())
        {
            let (tx, mut rx) = mpsc::channel(8);
            let on_error = media_error.clone();
            match MicPipeline::start(source, tx, move |e| on_error(format!("microphone: {e}"))) {
                Ok(p) => {
                    mic = Some(p);
                    let (feedback, first_sent, live, tap) = (
                        feedback.clone(),
                        first_sent.clone(),
                        live.clone(),
                        tap.clone(),
                    );
                    tasks.push(tokio::spawn(async move {
                        while let Some(packet) = rx.recv().await {
                            if !live.load(Ordering::Acquire) {
                                continue; // nothing goes out before the transport is up
                            }
                            if let Some(tap) = &tap {
                                tap.send(Tapped::DoorAudio {
                                    data: packet.data.clone(),
                                    duration: packet.duration,
                                });
                            }
                            if track.send(packet.data, packet.duration).await.is_err() {
                                break;
                            }
                            if !first_sent.swap(true, Ordering::AcqRel) {
                                let _ = feedback.send(Input::FirstMedia { epoch }).await;
                            }
                        }
                    }));
                }
                Err(e) => media_error(format!("microphone: {e}")),
            }
        }
        {
            let (feedback, keyframes) = (feedback.clone(), keyframes.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(event) = peer_rx.recv().await {
                    match event {
                        PeerEvent::State(state) => {
                            let _ = feedback.send(Input::Peer { epoch, state }).await;
                        }
                        PeerEvent::KeyframeRequest => {
                            if let Some(k) = &keyframes {
                                k.request();
                            }
                        }
                    }
                }
            }));
        }
        tasks.push(tokio::spawn(watch_inbound(epoch, peer.clone(), feedback)));
        Ok(Answered {
            session: Session {
                epoch,
                peer,
                video,
                mic,
                playout,
                live,
                keyframes,
                tasks,
            },
            sdp,
        })
    }

    /// The peer, to set the viewer's answer to our offer on it
    /// ([`AnswerPeer::accept`]) from a task.
    pub fn accepting(&self) -> Arc<AnswerPeer> {
        self.peer.clone()
    }

    /// The transport is up: release the media, IDR first.
    pub fn go_live(&self) {
        self.live.store(true, Ordering::Release);
        if let Some(v) = &self.video {
            v.go_live();
        }
    }

    pub fn request_keyframe(&self) {
        if let Some(k) = &self.keyframes {
            k.request();
        }
    }

    /// Closes the peer and stops the media threads, at most about 4 s.
    pub async fn close(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.peer.close().await;
        let (video, mic, playout) = (self.video, self.mic, self.playout);
        let stop = tokio::task::spawn_blocking(move || {
            if let Some(v) = video {
                v.stop();
            }
            if let Some(m) = mic {
                m.stop();
            }
            if let Some(p) = playout {
                p.stop();
            }
        });
        if tokio::time::timeout(Duration::from_secs(2), stop)
            .await
            .is_err()
        {
            tracing::warn!("media threads did not stop within 2 s; leaving them to finish");
        }
    }
}

/// Reports when packets from the viewer stop (with when the last one came)
/// and when they start again.
async fn watch_inbound(epoch: Epoch, peer: Arc<AnswerPeer>, feedback: Feedback) {
    let mut count = peer.inbound_packets();
    let mut last_packet = tokio::time::Instant::now();
    let mut flowing = true;
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = peer.inbound_packets();
        if now != count {
            count = now;
            last_packet = tokio::time::Instant::now();
            if !flowing {
                flowing = true;
                let _ = feedback.send(Input::MediaFlowing { epoch }).await;
            }
        } else if flowing && last_packet.elapsed() >= STALL {
            flowing = false;
            let input = Input::MediaStalled {
                epoch,
                last_packet: last_packet.into_std(),
            };
            let _ = feedback.send(input).await;
        }
    }
}
