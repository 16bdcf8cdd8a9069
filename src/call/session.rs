//! The media of a call and its peer sessions, one per viewer.
//!
//! [`CallMedia`] is opened once per call, by its first peer session: one
//! capture and one H.264 encoder, one microphone and Opus encoder, one
//! speaker. The encoded streams fan out to every viewer's [`Session`]
//! (a webrtc peer and the tasks that feed it), and each viewer's voice is a
//! voice of its own in the speaker's mix. A viewer joining, or a picture
//! loss reported by any viewer, asks the one encoder for an IDR, which all
//! viewers get; a viewer waits for an IDR before its first picture.
//!
//! A session is built when an offer arrives ([`Session::answer`]), made live
//! when its transport is up ([`Session::go_live`]), and closed when its
//! viewer leaves or starts over ([`Session::close`]); the call's media stay
//! until the call ends ([`CallMedia::close`]). Opening devices and stopping
//! their threads block, so they run on the blocking pool; everything is
//! bounded by timeouts so a stuck device cannot hold the doorbell.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use super::machine::{Epoch, Input};
use crate::media::audio::{AudioPacket, MicPipeline, Playout};
use crate::media::tap::{CallTap, Tapped};
use crate::media::video::{EncodedFrame, KeyframeRequester, VideoPipeline};
use crate::media::{AudioSink, AudioSource, MediaOpener, VideoSource};
use crate::peer::{AnswerInputs, AnswerPeer, PeerError, PeerEvent, PeerSettings};
use crate::signaling::protocol::IceCandidate;

/// Inbound silence longer than this is reported as a stall (with the time of
/// the last packet, from which the machine counts `call.media_timeout`).
const STALL: Duration = Duration::from_secs(1);
/// How often the inbound packet counter is looked at.
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// Encoded frames queued per viewer; one that falls further behind skips to
/// the next IDR (which it asks for) rather than showing a broken picture.
const VIDEO_FANOUT: usize = 8;
/// Opus packets queued per viewer (320 ms).
const AUDIO_FANOUT: usize = 16;

/// What a session reports back to the call loop.
pub type Feedback = mpsc::Sender<Input>;

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

/// The threads of a call's media, taken out once when the call ends.
struct Pipelines {
    video: Option<VideoPipeline>,
    mic: Option<MicPipeline>,
    playout: Option<Playout>,
}

/// The devices and encoders of one call, shared by its viewers' sessions.
pub struct CallMedia {
    pipelines: Mutex<Option<Pipelines>>,
    video: Option<broadcast::Sender<EncodedFrame>>,
    audio: Option<broadcast::Sender<AudioPacket>>,
    keyframes: Option<KeyframeRequester>,
    voices: Option<crate::media::audio::RemoteAudioInputs>,
    /// Some viewer's transport is up: the door's sound goes to the recorder.
    any_live: Arc<AtomicBool>,
    /// The recorder takes the voice of the call's first viewer only (a
    /// recording holds one viewer track).
    voice_tapped: AtomicBool,
    tap: Option<CallTap>,
    tasks: Vec<JoinHandle<()>>,
}

impl CallMedia {
    /// Opens the call's devices and starts their threads (the encoder idles
    /// until the first viewer is live). A device that cannot be opened is
    /// reported through `feedback` (for `epoch`) and left out.
    pub async fn open(
        opener: Arc<dyn MediaOpener>,
        call: u64,
        epoch: Epoch,
        feedback: Feedback,
        tap: Option<CallTap>,
    ) -> Result<Arc<CallMedia>, SessionError> {
        let settings = opener.video_settings();
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
        let media_error = move |what: String| {
            let _ = feedback.try_send(Input::MediaError { epoch, what });
        };
        let playout = devices.speaker.and_then(|sink| {
            let on_error = media_error.clone();
            Playout::start(sink, move |e| on_error(format!("speaker: {e}")))
                .map_err(|e| media_error(format!("speaker: {e}")))
                .ok()
        });
        let any_live = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let (mut video, mut video_out, mut keyframes) = (None, None, None);
        if let Some(source) = devices.video {
            let (tx, mut rx) = mpsc::channel::<EncodedFrame>(4);
            let on_error = media_error.clone();
            match VideoPipeline::start(source, &settings, tx, move |e| {
                on_error(format!("video: {e}"))
            }) {
                Ok(p) => {
                    keyframes = Some(p.keyframe_requester());
                    video = Some(p);
                    let (out, _) = broadcast::channel(VIDEO_FANOUT);
                    video_out = Some(out.clone());
                    let tap = tap.clone();
                    tasks.push(tokio::spawn(async move {
                        while let Some(frame) = rx.recv().await {
                            if let Some(tap) = &tap {
                                tap.send(Tapped::Video {
                                    data: frame.data.clone(),
                                    keyframe: frame.keyframe,
                                    duration: frame.duration,
                                });
                            }
                            // No receiver (between viewers) is fine.
                            let _ = out.send(frame);
                        }
                    }));
                }
                Err(e) => media_error(format!("video: {e}")),
            }
        }
        let (mut mic, mut audio_out) = (None, None);
        if let Some(source) = devices.microphone {
            let (tx, mut rx) = mpsc::channel::<AudioPacket>(8);
            let on_error = media_error.clone();
            match MicPipeline::start(source, tx, move |e| on_error(format!("microphone: {e}"))) {
                Ok(p) => {
                    mic = Some(p);
                    let (out, _) = broadcast::channel(AUDIO_FANOUT);
                    audio_out = Some(out.clone());
                    let (tap, any_live) = (tap.clone(), any_live.clone());
                    tasks.push(tokio::spawn(async move {
                        while let Some(packet) = rx.recv().await {
                            if !any_live.load(Ordering::Acquire) {
                                continue; // nothing goes out before a transport is up
                            }
                            if let Some(tap) = &tap {
                                tap.send(Tapped::DoorAudio {
                                    data: packet.data.clone(),
                                    duration: packet.duration,
                                });
                            }
                            let _ = out.send(packet);
                        }
                    }));
                }
                Err(e) => media_error(format!("microphone: {e}")),
            }
        }
        Ok(Arc::new(CallMedia {
            voices: playout.as_ref().map(Playout::inputs),
            pipelines: Mutex::new(Some(Pipelines {
                video,
                mic,
                playout,
            })),
            video: video_out,
            audio: audio_out,
            keyframes,
            any_live,
            voice_tapped: AtomicBool::new(false),
            tap,
            tasks,
        }))
    }

    /// The next picture out is an IDR, for every viewer.
    pub fn request_keyframe(&self) {
        if let Some(k) = &self.keyframes {
            k.request();
        }
    }

    /// A viewer's transport is up: encoding starts if it had not (IDR
    /// first), or the running encoder makes an IDR for the newcomer.
    fn viewer_live(&self) {
        self.any_live.store(true, Ordering::Release);
        let pipelines = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        match pipelines.as_ref().and_then(|p| p.video.as_ref()) {
            Some(v) => v.go_live(),
            None => self.request_keyframe(),
        }
    }

    /// Stops the call's threads, at most about 2 s.
    pub async fn close(&self) {
        for t in &self.tasks {
            t.abort();
        }
        let taken = self
            .pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(Pipelines {
            video,
            mic,
            playout,
        }) = taken
        else {
            return;
        };
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

/// One viewer's peer session of a call.
pub struct Session {
    pub epoch: Epoch,
    peer: Arc<AnswerPeer>,
    media: Arc<CallMedia>,
    live: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
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
    /// The call's media, opened by its first session.
    pub media: Arc<CallMedia>,
    pub peer: PeerSettings,
    /// Candidates the viewer trickles.
    pub candidates: mpsc::Receiver<IceCandidate>,
    pub feedback: Feedback,
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
    /// Answers the offer (or makes ours) and starts the tasks that feed the
    /// call's media to this viewer once its transport is up.
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
            trickle,
        } = request;
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
        let remote_audio = media.voices.as_ref().map(|v| {
            let first = !media.voice_tapped.swap(true, Ordering::AcqRel);
            v.input().tapped(media.tap.clone().filter(|_| first))
        });
        let inputs = AnswerInputs {
            gather_cap,
            have_video: media.video.is_some(),
            have_microphone: media.audio.is_some(),
            events: peer_tx,
            remote_audio,
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
        if let (true, Some(frames), Some(track)) =
            (plan.send_video, &media.video, peer.video_track())
        {
            let mut frames = frames.subscribe();
            let (feedback, first_sent, live, media) = (
                feedback.clone(),
                first_sent.clone(),
                live.clone(),
                media.clone(),
            );
            tasks.push(tokio::spawn(async move {
                // Every viewer starts on an IDR, and starts over on one after
                // falling behind: a P frame without its references is garbage.
                let mut need_keyframe = true;
                loop {
                    let frame = match frames.recv().await {
                        Ok(frame) => frame,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            need_keyframe = true;
                            media.request_keyframe();
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    };
                    if !live.load(Ordering::Acquire) || (need_keyframe && !frame.keyframe) {
                        continue;
                    }
                    need_keyframe = false;
                    if track.send_video(frame.data, frame.duration).await.is_err() {
                        break;
                    }
                    if !first_sent.swap(true, Ordering::AcqRel) {
                        let _ = feedback.send(Input::FirstMedia { epoch }).await;
                    }
                }
            }));
        }
        if let (true, Some(packets), Some(track)) =
            (plan.send_audio, &media.audio, peer.audio_track())
        {
            let mut packets = packets.subscribe();
            let (feedback, first_sent, live) = (feedback.clone(), first_sent.clone(), live.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let packet = match packets.recv().await {
                        Ok(packet) => packet,
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break,
                    };
                    if !live.load(Ordering::Acquire) {
                        continue; // nothing goes out before the transport is up
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
        {
            let (feedback, media) = (feedback.clone(), media.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(event) = peer_rx.recv().await {
                    match event {
                        PeerEvent::State(state) => {
                            let _ = feedback.send(Input::Peer { epoch, state }).await;
                        }
                        PeerEvent::KeyframeRequest => media.request_keyframe(),
                    }
                }
            }));
        }
        tasks.push(tokio::spawn(watch_inbound(epoch, peer.clone(), feedback)));
        Ok(Answered {
            session: Session {
                epoch,
                peer,
                media,
                live,
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

    /// The transport is up: this viewer's media flow, from an IDR.
    pub fn go_live(&self) {
        self.live.store(true, Ordering::Release);
        self.media.viewer_live();
    }

    /// Closes the peer and stops this viewer's tasks (the call's media go on).
    pub async fn close(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.peer.close().await;
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
