//! The WebRTC peer: the only module that imports webrtc-rs (pinned at 0.17.2,
//! see `docs/design.md` for why).
//!
//! [`AnswerPeer`] is the doorbell's side: given the viewer's complete offer it
//! builds a connection with H.264 and Opus only, answers without trickle (ICE
//! gathering waited for, but capped), sends the camera and microphone, and
//! hands the viewer's audio packets to the playout. `viewer::ViewerPeer`
//! (feature `testkit`) is the browser's side (receive-only video, send-receive
//! audio, VP8 listed before H.264 like Chromium does), used by the tests and
//! the benchmark; [`ice`] holds the STUN and TURN servers.
//!
//! webrtc-rs callbacks only forward into bounded channels and counters; they
//! never block. Its `on_track` runs while the library holds a lock, so the read
//! loops are spawned and the callback returns at once.

use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use webrtc::api::interceptor_registry::{configure_nack, configure_rtcp_reports};
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::APIBuilder;
use webrtc::dtls_transport::dtls_role::DTLSRole;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::ice_transport::ice_connection_state::RTCIceConnectionState;
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::interceptor::registry::Registry;
use webrtc::media::Sample;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::policy::ice_transport_policy::RTCIceTransportPolicy;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::extension::playout_delay_extension::PlayoutDelayExtension;
use webrtc::rtp::extension::HeaderExtension;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpHeaderExtensionCapability;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType,
};
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::RTCPFeedback;
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;
use webrtc::track::track_local::TrackLocal;
use webrtc::track::track_remote::TrackRemote;

use crate::call::peer_state::PeerState;
use crate::media::audio::{RemoteAudio, RemoteAudioInput};
use crate::sdp;
use crate::signaling::protocol::IceCandidate;
pub use crate::spec::ice::IceServer;

#[cfg(feature = "testkit")]
pub mod viewer;

/// The profile every browser decodes: Constrained Baseline, level 3.1.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("the offer cannot be used: {0}")]
    BadOffer(String),
    #[error("the answer cannot be used: {0}")]
    BadAnswer(String),
    #[error("webrtc: {0}")]
    WebRtc(String),
}

pub(crate) fn webrtc_err(e: webrtc::Error) -> PeerError {
    PeerError::WebRtc(e.to_string())
}

#[derive(Debug, Clone, Default)]
pub struct PeerSettings {
    pub ice_servers: Vec<IceServer>,
    /// Offer 127.0.0.1 candidates (same-machine viewers: the demo, tests).
    pub include_loopback: bool,
    /// A TURN server with TURN REST credentials, minted per connection.
    pub turn: Option<Arc<crate::turn::TurnRest>>,
    /// Relay candidates only: every packet goes through TURN, and the
    /// viewer never learns the door's address.
    pub relay_only: bool,
}

/// The ICE servers of one connection: the configured ones, and a TURN
/// server with credentials minted for it (registered as a secret until the
/// connection closes).
fn servers_for_connection(
    settings: &PeerSettings,
    tag: &str,
) -> (Vec<IceServer>, Option<IceServer>) {
    let mut servers = settings.ice_servers.clone();
    let minted = settings
        .turn
        .as_ref()
        .map(|t| t.mint(crate::turn::unix_now(), tag));
    if let Some(m) = &minted {
        crate::redact::add(&m.credential);
        servers.push(m.clone());
    }
    (servers, minted)
}

/// Forgets a minted credential's secrecy once its connection is closed.
fn forget_minted(minted: &Option<IceServer>) {
    if let Some(m) = minted {
        crate::redact::remove(&m.credential);
    }
}

/// What the peer reports to the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    State(PeerState),
    /// The viewer asked for a keyframe (PLI or FIR).
    KeyframeRequest,
}

/// What this call will carry, decided from the offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MediaPlan {
    pub send_video: bool,
    pub send_audio: bool,
    pub receive_audio: bool,
}

impl MediaPlan {
    /// Reads the offer: we send what the viewer receives, receive what it sends.
    /// Video only if the viewer can take H.264 with packetization-mode 1.
    pub fn from_offer(
        offer_sdp: &str,
        have_video: bool,
        have_microphone: bool,
    ) -> (MediaPlan, Vec<String>) {
        let mut plan = MediaPlan::default();
        let mut notes = Vec::new();
        for section in sdp::media_sections(offer_sdp) {
            if section.port == 0 {
                continue;
            }
            match section.kind.as_str() {
                "video" if section.direction.offerer_receives() => {
                    let h264 = section.codecs.iter().any(|c| {
                        c.name.eq_ignore_ascii_case("H264")
                            && c.fmtp.contains("packetization-mode=1")
                    });
                    if !h264 {
                        notes.push("the viewer's browser offers no H.264 (packetization-mode=1): no video this call".into());
                    } else if !have_video {
                        notes.push("no camera this call: audio only".into());
                    } else {
                        plan.send_video = true;
                    }
                }
                "audio" => {
                    plan.send_audio |= section.direction.offerer_receives() && have_microphone;
                    plan.receive_audio |= section.direction.offerer_sends();
                }
                _ => {}
            }
        }
        (plan, notes)
    }
}

pub(crate) fn h264_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        capability: RTCRtpCodecCapability {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: H264_FMTP.to_owned(),
            rtcp_feedback: vec![
                RTCPFeedback {
                    typ: "ccm".into(),
                    parameter: "fir".into(),
                },
                RTCPFeedback {
                    typ: "nack".into(),
                    parameter: String::new(),
                },
                RTCPFeedback {
                    typ: "nack".into(),
                    parameter: "pli".into(),
                },
            ],
        },
        payload_type: 102,
        ..Default::default()
    }
}

pub(crate) fn opus_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        capability: RTCRtpCodecCapability {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: 111,
        ..Default::default()
    }
}

#[cfg(feature = "testkit")]
pub(crate) fn vp8_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        capability: RTCRtpCodecCapability {
            mime_type: webrtc::api::media_engine::MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![RTCPFeedback {
                typ: "nack".into(),
                parameter: "pli".into(),
            }],
        },
        payload_type: 96,
        ..Default::default()
    }
}

pub(crate) async fn new_connection(
    settings: &PeerSettings,
    codecs: Vec<(RTCRtpCodecParameters, RTPCodecType)>,
    answering: bool,
) -> Result<(Arc<RTCPeerConnection>, Option<IceServer>), PeerError> {
    let mut media = MediaEngine::default();
    for (codec, kind) in codecs {
        media.register_codec(codec, kind).map_err(webrtc_err)?;
    }
    // Chromium offers it: with it, our video says "show at once" (see
    // `MediaTrack::send_video`).
    media
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: PLAYOUT_DELAY_URI.to_owned(),
            },
            RTPCodecType::Video,
            None,
        )
        .map_err(webrtc_err)?;
    // NACK (retransmit what the viewer missed, ask for what we missed) and
    // RTCP sender/receiver reports. Not transport-wide congestion control
    // feedback: nothing here adapts to it, and it costs per packet.
    let registry = configure_rtcp_reports(configure_nack(Registry::new(), &mut media));
    let mut engine = SettingEngine::default();
    // Browsers hide host addresses behind mDNS names until media permission is
    // granted; resolve them, but never announce our own.
    engine.set_ice_multicast_dns_mode(MulticastDnsMode::QueryOnly);
    engine.set_include_loopback_candidate(settings.include_loopback);
    if answering {
        // DTLS server (a=setup:passive): the viewer starts the handshake once it
        // has our answer. As the client we would send our ClientHello as soon as
        // ICE connects, often before the viewer has applied the answer; that
        // hello is dropped and the handshake waits out a 1 s retransmission.
        engine
            .set_answering_dtls_role(DTLSRole::Server)
            .map_err(webrtc_err)?;
    }
    let api = APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(engine)
        .build();
    let (servers, minted) =
        servers_for_connection(settings, if answering { "doorbell" } else { "viewer" });
    let config = RTCConfiguration {
        ice_servers: servers
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone(),
                credential: s.credential.clone(),
            })
            .collect(),
        ice_transport_policy: if settings.relay_only {
            RTCIceTransportPolicy::Relay
        } else {
            RTCIceTransportPolicy::All
        },
        ..Default::default()
    };
    match api.new_peer_connection(config).await {
        Ok(pc) => Ok((Arc::new(pc), minted)),
        Err(e) => {
            forget_minted(&minted);
            Err(webrtc_err(e))
        }
    }
}

pub(crate) fn forward_state(pc: &RTCPeerConnection, events: mpsc::Sender<PeerEvent>) {
    pc.on_peer_connection_state_change(Box::new(move |s| {
        let state = match s {
            RTCPeerConnectionState::Connected => Some(PeerState::Connected),
            RTCPeerConnectionState::Disconnected => Some(PeerState::Disconnected),
            RTCPeerConnectionState::Failed => Some(PeerState::Failed),
            RTCPeerConnectionState::Closed => Some(PeerState::Closed),
            _ => None,
        };
        if let Some(state) = state {
            let _ = events.try_send(PeerEvent::State(state));
        }
        Box::pin(async {})
    }));
}

pub(crate) fn local_track(codec: &RTCRtpCodecParameters, id: &str) -> Arc<TrackLocalStaticSample> {
    Arc::new(TrackLocalStaticSample::new(
        codec.capability.clone(),
        id.to_owned(),
        "doorbell".to_owned(),
    ))
}

/// Sets the local description and waits for ICE gathering to finish, at most
/// `cap`; returns the description with every candidate gathered by then.
pub(crate) async fn set_local_and_gather(
    pc: &RTCPeerConnection,
    desc: RTCSessionDescription,
    cap: Duration,
) -> Result<(String, bool), PeerError> {
    // Must be taken before set_local_description starts the gathering.
    let mut done = pc.gathering_complete_promise().await;
    pc.set_local_description(desc).await.map_err(webrtc_err)?;
    let complete = tokio::time::timeout(cap, done.recv()).await.is_ok();
    let sdp = pc
        .local_description()
        .await
        .ok_or_else(|| PeerError::WebRtc("no local description after setting it".into()))?
        .sdp;
    Ok((sdp, complete))
}

/// The offer says what the viewer sends; the answer says what we accept.
/// We never take video (a page that sends its camera gets `sendonly` for
/// the section carrying ours, `inactive` for any other), and we take audio on
/// the first audio section only. Runs after the offer is set, when every
/// section has its transceiver.
async fn settle_directions(pc: &RTCPeerConnection, plan: MediaPlan) {
    let mut audio_seen = false;
    for t in pc.get_transceivers().await {
        if t.mid().is_none() {
            continue;
        }
        let ours = t.sender().await.track().await.is_some();
        let current = t.direction();
        let wanted = match t.kind() {
            RTPCodecType::Video if ours => RTCRtpTransceiverDirection::Sendonly,
            RTPCodecType::Audio if !audio_seen => {
                audio_seen = true;
                RTCRtpTransceiverDirection::from_send_recv(
                    ours && current.has_send(),
                    plan.receive_audio && current.has_recv(),
                )
            }
            _ => RTCRtpTransceiverDirection::Inactive,
        };
        if wanted != current {
            tracing::debug!(kind = %t.kind(), from = %current, to = %wanted, "answer direction");
            t.set_direction(wanted).await;
        }
    }
}

/// Our tracks (with their RTCP readers: keyframe requests, the inbound
/// count), the viewer's audio to the playout, state changes and, with
/// trickle, our candidates: what answering and offering share.
async fn wire_media(
    pc: &Arc<RTCPeerConnection>,
    plan: MediaPlan,
    events: mpsc::Sender<PeerEvent>,
    remote_audio: Option<RemoteAudioInput>,
    local_candidates: Option<mpsc::Sender<Option<IceCandidate>>>,
    inbound: Arc<AtomicU64>,
) -> Result<
    (
        Option<Arc<TrackLocalStaticSample>>,
        Option<Arc<TrackLocalStaticSample>>,
    ),
    PeerError,
> {
    forward_state(pc, events.clone());
    if let Some(out) = local_candidates {
        forward_candidates(pc, out);
    }
    let mut video = None;
    if plan.send_video {
        let track = local_track(&h264_codec(), "video");
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>)
            .await
            .map_err(webrtc_err)?;
        let (events, inbound) = (events.clone(), inbound.clone());
        // Reading RTCP also runs the interceptors (NACK answers, reports).
        tokio::spawn(async move {
            while let Ok((packets, _)) = sender.read_rtcp().await {
                inbound.fetch_add(1, Ordering::Relaxed);
                let wants_keyframe = packets.iter().any(|p| {
                    let any = p.as_any();
                    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
                });
                if wants_keyframe {
                    let _ = events.try_send(PeerEvent::KeyframeRequest);
                }
            }
        });
        video = Some(track);
    }
    let mut audio = None;
    if plan.send_audio {
        let track = local_track(&opus_codec(), "audio");
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>)
            .await
            .map_err(webrtc_err)?;
        let inbound = inbound.clone();
        tokio::spawn(async move {
            while sender.read_rtcp().await.is_ok() {
                inbound.fetch_add(1, Ordering::Relaxed);
            }
        });
        audio = Some(track);
    }
    {
        let inbound = inbound.clone();
        pc.on_track(Box::new(move |track: Arc<TrackRemote>, _, _| {
            let inbound = inbound.clone();
            let remote_audio = remote_audio.clone();
            tokio::spawn(async move {
                let is_audio = track.kind() == RTPCodecType::Audio;
                while let Ok((packet, _)) = track.read_rtp().await {
                    inbound.fetch_add(1, Ordering::Relaxed);
                    if let (true, Some(out)) = (is_audio, remote_audio.as_ref()) {
                        out.push(RemoteAudio {
                            sequence: packet.header.sequence_number,
                            payload: packet.payload,
                        });
                    }
                }
            });
            Box::pin(async {})
        }));
    }
    // Some pages open a data channel before their offer (the original
    // design's does): accept it, so their SCTP association comes up
    // cleanly, and drop what they say on it.
    pc.on_data_channel(Box::new(|channel| {
        tracing::debug!(
            label = channel.label(),
            "the viewer opened a data channel; its messages are not used"
        );
        channel.on_message(Box::new(|_| Box::pin(async {})));
        Box::pin(async {})
    }));
    Ok((video, audio))
}

/// Hands each candidate we gather to `out` as it comes (trickle), and
/// `None` when gathering is complete.
fn forward_candidates(pc: &RTCPeerConnection, out: mpsc::Sender<Option<IceCandidate>>) {
    pc.on_ice_candidate(Box::new(move |c| {
        let candidate = match c.map(|c| c.to_json()) {
            None => None,
            Some(Ok(init)) => Some(IceCandidate {
                candidate: init.candidate,
                sdp_mid: init.sdp_mid,
                sdp_mline_index: init.sdp_mline_index,
                username_fragment: init.username_fragment,
            }),
            Some(Err(e)) => {
                tracing::debug!("a gathered candidate could not be written: {e}");
                return Box::pin(async {});
            }
        };
        if out.try_send(candidate).is_err() {
            tracing::debug!("a gathered candidate was dropped: the call moved on");
        }
        Box::pin(async {})
    }));
}

/// Adds the viewer's trickled candidates until the call moves on.
async fn add_candidates(
    pc: std::sync::Weak<RTCPeerConnection>,
    mut candidates: mpsc::Receiver<IceCandidate>,
) {
    while let Some(c) = candidates.recv().await {
        let Some(pc) = pc.upgrade() else { return };
        let line = c.candidate.trim_start_matches("a=").to_string();
        let init = RTCIceCandidateInit {
            candidate: line,
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_mline_index,
            username_fragment: c.username_fragment,
        };
        match pc.add_ice_candidate(init).await {
            Ok(()) => tracing::debug!("added a candidate the viewer trickled"),
            Err(e) => tracing::info!("a candidate the viewer trickled was not usable: {e}"),
        }
    }
}

/// The doorbell's side of a call.
pub struct AnswerPeer {
    pc: Arc<RTCPeerConnection>,
    /// TURN credentials minted for this connection.
    minted: Option<IceServer>,
    video: Option<Arc<TrackLocalStaticSample>>,
    audio: Option<Arc<TrackLocalStaticSample>>,
    inbound: Arc<AtomicU64>,
    plan: MediaPlan,
}

/// The result of answering: the peer, the complete answer, and what to log.
pub struct Answer {
    pub peer: AnswerPeer,
    pub sdp: String,
    /// ICE gathering finished before the cap.
    pub gathering_complete: bool,
    pub notes: Vec<String>,
}

/// What [`AnswerPeer::negotiate`] sets up.
struct Negotiated {
    video: Option<Arc<TrackLocalStaticSample>>,
    audio: Option<Arc<TrackLocalStaticSample>>,
    sdp: String,
    gathering_complete: bool,
}

/// What the answer to one offer needs besides the offer itself.
pub struct AnswerInputs {
    pub gather_cap: Duration,
    /// What we can send.
    pub have_video: bool,
    pub have_microphone: bool,
    pub events: mpsc::Sender<PeerEvent>,
    /// Where the viewer's audio packets go.
    pub remote_audio: Option<RemoteAudioInput>,
    /// Candidates the viewer trickles after its offer.
    pub candidates: mpsc::Receiver<IceCandidate>,
    /// Trickle: our candidates go here as they are gathered (`None` once
    /// gathering is complete), and the answer does not wait for them.
    pub local_candidates: Option<mpsc::Sender<Option<IceCandidate>>>,
}

impl AnswerPeer {
    /// Answers `offer_sdp` without trickle.
    pub async fn answer(
        settings: &PeerSettings,
        offer_sdp: &str,
        inputs: AnswerInputs,
    ) -> Result<Answer, PeerError> {
        let (plan, notes) =
            MediaPlan::from_offer(offer_sdp, inputs.have_video, inputs.have_microphone);
        if sdp::media_sections(offer_sdp)
            .iter()
            .all(|s| s.kind != "audio" && s.kind != "video")
        {
            return Err(PeerError::BadOffer(
                "it has no audio or video section".into(),
            ));
        }
        let offer = RTCSessionDescription::offer(offer_sdp.to_owned())
            .map_err(|e| PeerError::BadOffer(e.to_string()))?;
        let (pc, minted) = new_connection(
            settings,
            vec![
                (h264_codec(), RTPCodecType::Video),
                (opus_codec(), RTPCodecType::Audio),
            ],
            true,
        )
        .await?;
        let inbound = Arc::new(AtomicU64::new(0));
        let result = Self::negotiate(&pc, offer, plan, inputs, inbound.clone()).await;
        match result {
            Ok(n) => Ok(Answer {
                peer: AnswerPeer {
                    pc,
                    minted,
                    video: n.video,
                    audio: n.audio,
                    inbound,
                    plan,
                },
                sdp: n.sdp,
                gathering_complete: n.gathering_complete,
                notes,
            }),
            Err(e) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), pc.close()).await;
                forget_minted(&minted);
                Err(e)
            }
        }
    }

    async fn negotiate(
        pc: &Arc<RTCPeerConnection>,
        offer: RTCSessionDescription,
        plan: MediaPlan,
        inputs: AnswerInputs,
        inbound: Arc<AtomicU64>,
    ) -> Result<Negotiated, PeerError> {
        let AnswerInputs {
            gather_cap,
            events,
            remote_audio,
            candidates,
            local_candidates,
            ..
        } = inputs;
        let trickle = local_candidates.is_some();
        // Tracks first, so that setting the offer binds them to its sections;
        // the directions are settled once the offer is set.
        let (video, audio) =
            wire_media(pc, plan, events, remote_audio, local_candidates, inbound).await?;
        pc.set_remote_description(offer)
            .await
            .map_err(|e| PeerError::BadOffer(e.to_string()))?;
        settle_directions(pc, plan).await;
        tokio::spawn(add_candidates(Arc::downgrade(pc), candidates));
        let answer = pc
            .create_answer(None)
            .await
            .map_err(|e| PeerError::BadOffer(format!("cannot answer it: {e}")))?;
        let (mut sdp, gathering_complete) = set_local_and_gather(pc, answer, gather_cap).await?;
        if trickle {
            // Those gathered already follow one by one, like the rest.
            sdp = sdp::without_candidates(&sdp);
        }
        Ok(Negotiated {
            video,
            audio,
            sdp,
            gathering_complete,
        })
    }

    /// Offers our media to a viewer (protocols where the doorbell offers),
    /// trickling our candidates; [`AnswerPeer::accept`] takes its answer.
    pub async fn offer(
        settings: &PeerSettings,
        inputs: AnswerInputs,
    ) -> Result<(AnswerPeer, String), PeerError> {
        let plan = MediaPlan {
            send_video: inputs.have_video,
            send_audio: inputs.have_microphone,
            receive_audio: inputs.remote_audio.is_some(),
        };
        let (pc, minted) = new_connection(
            settings,
            vec![
                (h264_codec(), RTPCodecType::Video),
                (opus_codec(), RTPCodecType::Audio),
            ],
            false,
        )
        .await?;
        let inbound = Arc::new(AtomicU64::new(0));
        let AnswerInputs {
            events,
            remote_audio,
            candidates,
            local_candidates,
            ..
        } = inputs;
        let made = async {
            let (video, audio) = wire_media(
                &pc,
                plan,
                events,
                remote_audio,
                local_candidates,
                inbound.clone(),
            )
            .await?;
            // What we offer: our video to watch, our sound and theirs.
            for t in pc.get_transceivers().await {
                if t.kind() == RTPCodecType::Video {
                    t.set_direction(RTCRtpTransceiverDirection::Sendonly).await;
                }
            }
            if audio.is_none() && plan.receive_audio {
                pc.add_transceiver_from_kind(
                    RTPCodecType::Audio,
                    Some(webrtc::rtp_transceiver::RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        send_encodings: vec![],
                    }),
                )
                .await
                .map_err(webrtc_err)?;
            }
            tokio::spawn(add_candidates(Arc::downgrade(&pc), candidates));
            let offer = pc.create_offer(None).await.map_err(webrtc_err)?;
            let (sdp, _) = set_local_and_gather(&pc, offer, Duration::ZERO).await?;
            Ok::<_, PeerError>((video, audio, sdp::without_candidates(&sdp)))
        };
        match made.await {
            Ok((video, audio, sdp)) => Ok((
                AnswerPeer {
                    pc,
                    minted,
                    video,
                    audio,
                    inbound,
                    plan,
                },
                sdp,
            )),
            Err(e) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), pc.close()).await;
                forget_minted(&minted);
                Err(e)
            }
        }
    }

    /// The viewer's answer to our offer.
    pub async fn accept(&self, answer_sdp: &str) -> Result<(), PeerError> {
        let answer = RTCSessionDescription::answer(answer_sdp.to_owned())
            .map_err(|e| PeerError::BadAnswer(e.to_string()))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(|e| PeerError::BadAnswer(e.to_string()))
    }

    pub fn plan(&self) -> MediaPlan {
        self.plan
    }

    /// Packets (RTP and RTCP) received from the viewer so far.
    pub fn inbound_packets(&self) -> u64 {
        self.inbound.load(Ordering::Relaxed)
    }

    /// A handle for the task that sends video.
    pub fn video_track(&self) -> Option<MediaTrack> {
        self.video.clone().map(MediaTrack)
    }

    pub fn audio_track(&self) -> Option<MediaTrack> {
        self.audio.clone().map(MediaTrack)
    }

    /// Closes the connection (DTLS close, sockets released), at most 2 s.
    pub async fn close(&self) {
        if tokio::time::timeout(Duration::from_secs(2), self.pc.close())
            .await
            .is_err()
        {
            tracing::warn!("closing the peer connection took more than 2 s; dropped");
        }
        // webrtc-rs reports ICE's last state change from a task of its own,
        // which needs the connection still alive (or it warns "dtls_transport
        // unavailable"): wait for it, briefly, before the caller drops us.
        let start = tokio::time::Instant::now();
        while self.pc.ice_connection_state() != RTCIceConnectionState::Closed
            && start.elapsed() < Duration::from_millis(300)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        forget_minted(&self.minted);
    }
}

/// A track to send encoded media on.
#[derive(Clone)]
pub struct MediaTrack(pub(crate) Arc<TrackLocalStaticSample>);

/// The playout-delay RTP header extension (Chromium's low-latency hint).
const PLAYOUT_DELAY_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";

impl MediaTrack {
    /// Sends one encoded frame; `duration` advances the RTP clock.
    /// Sends one encoded picture with the playout-delay header extension
    /// at min = max = 0 (where the viewer negotiated it, as Chromium does):
    /// a doorbell is live, so the browser shows each picture as soon as it
    /// is decoded instead of smoothing it through its jitter buffer's
    /// delay. A viewer that did not negotiate it gets the bare packets.
    pub async fn send_video(&self, data: Bytes, duration: Duration) -> Result<(), PeerError> {
        let now = HeaderExtension::PlayoutDelay(PlayoutDelayExtension {
            min_delay: 0,
            max_delay: 0,
        });
        self.0
            .write_sample_with_extensions(
                &Sample {
                    data,
                    duration,
                    ..Default::default()
                },
                &[now],
            )
            .await
            .map_err(webrtc_err)
    }

    pub async fn send(&self, data: Bytes, duration: Duration) -> Result<(), PeerError> {
        self.0
            .write_sample(&Sample {
                data,
                duration,
                ..Default::default()
            })
            .await
            .map_err(webrtc_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_follows_the_offer() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n\
a=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\n";
        let (plan, notes) = MediaPlan::from_offer(offer, true, true);
        assert_eq!(
            plan,
            MediaPlan {
                send_video: true,
                send_audio: true,
                receive_audio: true
            }
        );
        assert!(notes.is_empty());
        let (plan, notes) = MediaPlan::from_offer(offer, false, false);
        assert_eq!(
            plan,
            MediaPlan {
                send_video: false,
                send_audio: false,
                receive_audio: true
            }
        );
        assert!(notes[0].contains("audio only"));
    }

    #[test]
    fn a_browser_without_h264_gets_an_audio_only_call_and_a_reason() {
        let offer =
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n";
        let (plan, notes) = MediaPlan::from_offer(offer, true, true);
        assert!(!plan.send_video && plan.send_audio);
        assert!(notes[0].contains("no H.264"), "{notes:?}");
    }
}
