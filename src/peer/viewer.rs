//! The browser's side of a call, for tests, benchmarks and self-checks:
//! receive-only video (or a camera of its own), send-receive audio, VP8
//! listed before H.264 like Chromium, a data channel if asked; it
//! depacketises and hands over the H.264 access units it receives. Built only
//! with the `testkit` feature: the appliance does not carry it.

use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use webrtc::ice_transport::ice_candidate::RTCIceCandidateInit;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::codecs::h264::H264Packet;
use webrtc::rtp::packetizer::Depacketizer;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::track::track_local::TrackLocal;
use webrtc::track::track_remote::TrackRemote;

use super::{
    forward_state, h264_codec, local_track, new_connection, opus_codec, set_local_and_gather,
    vp8_codec, webrtc_err, MediaTrack, PeerError, PeerEvent, PeerSettings,
};
use crate::media::audio::RemoteAudio;
use crate::signaling::protocol::IceCandidate;

/// One H.264 access unit as the viewer received it.
#[derive(Debug, Clone)]
pub struct VideoUnit {
    /// Annex-B.
    pub data: Bytes,
    pub rtp_timestamp: u32,
    pub received: Instant,
}

#[derive(Debug, Clone, Copy)]
pub struct ViewerOptions {
    pub receive_video: bool,
    /// Offer to send a camera too (the original design's page does).
    pub send_video: bool,
    /// Have an audio section at all.
    pub audio: bool,
    pub send_audio: bool,
    /// Open a data channel before the offer (some versions of the original
    /// design's page do).
    pub data_channel: bool,
    /// List VP8 before H.264, as Chromium does.
    pub vp8_first: bool,
}

impl Default for ViewerOptions {
    fn default() -> Self {
        Self {
            receive_video: true,
            send_video: false,
            audio: true,
            send_audio: true,
            data_channel: false,
            vp8_first: true,
        }
    }
}

/// The browser's side of a call.
pub struct ViewerPeer {
    pc: Arc<RTCPeerConnection>,
    audio: Option<MediaTrack>,
    video_ssrc: Arc<AtomicU64>,
}

pub struct ViewerStreams {
    /// Complete access units, in order; units with a missing packet are dropped.
    pub video: mpsc::Receiver<VideoUnit>,
    /// The doorbell's audio packets.
    pub audio: mpsc::Receiver<RemoteAudio>,
    pub events: mpsc::Receiver<PeerEvent>,
}

impl ViewerPeer {
    /// Builds the offer and waits for ICE gathering (at most `gather_cap`).
    pub async fn offer(
        settings: &PeerSettings,
        options: ViewerOptions,
        gather_cap: Duration,
    ) -> Result<(ViewerPeer, ViewerStreams, String), PeerError> {
        let mut codecs = Vec::new();
        if options.vp8_first {
            codecs.push((vp8_codec(), RTPCodecType::Video));
        }
        codecs.push((h264_codec(), RTPCodecType::Video));
        if !options.vp8_first {
            codecs.push((vp8_codec(), RTPCodecType::Video));
        }
        codecs.push((opus_codec(), RTPCodecType::Audio));
        let (pc, _minted) = new_connection(settings, codecs, false).await?;
        let (event_tx, events) = mpsc::channel(64);
        forward_state(&pc, event_tx);
        if options.send_video {
            let direction = if options.receive_video {
                RTCRtpTransceiverDirection::Sendrecv
            } else {
                RTCRtpTransceiverDirection::Sendonly
            };
            let track = local_track(&h264_codec(), "viewer-video");
            pc.add_transceiver_from_track(
                track as Arc<dyn TrackLocal + Send + Sync>,
                Some(RTCRtpTransceiverInit {
                    direction,
                    send_encodings: vec![],
                }),
            )
            .await
            .map_err(webrtc_err)?;
        } else if options.receive_video {
            pc.add_transceiver_from_kind(
                RTPCodecType::Video,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    send_encodings: vec![],
                }),
            )
            .await
            .map_err(webrtc_err)?;
        }
        if options.data_channel {
            pc.create_data_channel("chat", None)
                .await
                .map_err(webrtc_err)?;
        }
        let audio = if !options.audio {
            None
        } else if options.send_audio {
            let track = local_track(&opus_codec(), "viewer-audio");
            let sender = pc
                .add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>)
                .await
                .map_err(webrtc_err)?;
            tokio::spawn(async move { while sender.read_rtcp().await.is_ok() {} });
            Some(MediaTrack(track))
        } else {
            pc.add_transceiver_from_kind(
                RTPCodecType::Audio,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    send_encodings: vec![],
                }),
            )
            .await
            .map_err(webrtc_err)?;
            None
        };
        let (video, audio_rx, video_ssrc) = receive(&pc);
        let offer = pc.create_offer(None).await.map_err(webrtc_err)?;
        let (sdp, _complete) = set_local_and_gather(&pc, offer, gather_cap).await?;
        Ok((
            ViewerPeer {
                pc,
                audio,
                video_ssrc,
            },
            ViewerStreams {
                video,
                audio: audio_rx,
                events,
            },
            sdp,
        ))
    }

    /// Answers the doorbell's offer (seed 004, where the doorbell offers):
    /// receives its video, sends an audio track, and waits for ICE
    /// gathering (at most `gather_cap`).
    pub async fn answer(
        settings: &PeerSettings,
        offer_sdp: &str,
        gather_cap: Duration,
    ) -> Result<(ViewerPeer, ViewerStreams, String), PeerError> {
        let codecs = vec![
            (vp8_codec(), RTPCodecType::Video),
            (h264_codec(), RTPCodecType::Video),
            (opus_codec(), RTPCodecType::Audio),
        ];
        let (pc, _minted) = new_connection(settings, codecs, false).await?;
        let (event_tx, events) = mpsc::channel(64);
        forward_state(&pc, event_tx);
        let (video, audio_rx, video_ssrc) = receive(&pc);
        // The track first: setting the offer binds it to the offered audio
        // section (webrtc-rs 0.17 adds a track set later as a new section).
        let track = local_track(&opus_codec(), "viewer-audio");
        let sender = pc
            .add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>)
            .await
            .map_err(webrtc_err)?;
        tokio::spawn(async move { while sender.read_rtcp().await.is_ok() {} });
        let offer = RTCSessionDescription::offer(offer_sdp.to_owned())
            .map_err(|e| PeerError::BadOffer(e.to_string()))?;
        pc.set_remote_description(offer)
            .await
            .map_err(|e| PeerError::BadOffer(e.to_string()))?;
        let answer = pc.create_answer(None).await.map_err(webrtc_err)?;
        let (sdp, _complete) = set_local_and_gather(&pc, answer, gather_cap).await?;
        Ok((
            ViewerPeer {
                pc,
                audio: Some(MediaTrack(track)),
                video_ssrc,
            },
            ViewerStreams {
                video,
                audio: audio_rx,
                events,
            },
            sdp,
        ))
    }

    pub async fn accept(&self, answer_sdp: &str) -> Result<(), PeerError> {
        let answer = RTCSessionDescription::answer(answer_sdp.to_owned())
            .map_err(|e| PeerError::BadAnswer(e.to_string()))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(|e| PeerError::BadAnswer(e.to_string()))
    }

    pub fn audio_track(&self) -> Option<MediaTrack> {
        self.audio.clone()
    }

    /// Adds a candidate the doorbell trickled.
    pub async fn add_candidate(&self, c: IceCandidate) -> Result<(), PeerError> {
        self.pc
            .add_ice_candidate(RTCIceCandidateInit {
                candidate: c.candidate.trim_start_matches("a=").to_string(),
                sdp_mid: c.sdp_mid,
                sdp_mline_index: c.sdp_mline_index,
                username_fragment: c.username_fragment,
            })
            .await
            .map_err(webrtc_err)
    }

    /// Asks the doorbell for a keyframe (PLI), as a browser does after loss.
    pub async fn request_keyframe(&self) -> Result<(), PeerError> {
        let ssrc = self.video_ssrc.load(Ordering::Relaxed) as u32;
        if ssrc == 0 {
            return Ok(());
        }
        self.pc
            .write_rtcp(&[Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            })])
            .await
            .map(|_| ())
            .map_err(webrtc_err)
    }

    pub async fn close(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.pc.close()).await;
    }
}

/// Takes the doorbell's tracks: complete H.264 access units (a unit with a
/// missing packet is dropped) and Opus packets; the video SSRC for PLIs.
fn receive(
    pc: &RTCPeerConnection,
) -> (
    mpsc::Receiver<VideoUnit>,
    mpsc::Receiver<RemoteAudio>,
    Arc<AtomicU64>,
) {
    let (video_tx, video) = mpsc::channel(256);
    let (audio_tx, audio_rx) = mpsc::channel(256);
    let video_ssrc = Arc::new(AtomicU64::new(0));
    let ssrc_slot = video_ssrc.clone();
    pc.on_track(Box::new(move |track: Arc<TrackRemote>, _, _| {
        let (video_tx, audio_tx) = (video_tx.clone(), audio_tx.clone());
        let ssrc_slot = ssrc_slot.clone();
        tokio::spawn(async move {
            if track.kind() == RTPCodecType::Audio {
                while let Ok((p, _)) = track.read_rtp().await {
                    let _ = audio_tx.try_send(RemoteAudio {
                        sequence: p.header.sequence_number,
                        payload: p.payload,
                    });
                }
                return;
            }
            ssrc_slot.store(u64::from(track.ssrc()), Ordering::Relaxed);
            let mut depacketizer = H264Packet::default();
            let mut unit = BytesMut::new();
            let mut expected: Option<u16> = None;
            let mut broken = false;
            while let Ok((p, _)) = track.read_rtp().await {
                let seq = p.header.sequence_number;
                if expected.is_some_and(|e| e != seq) {
                    broken = true;
                }
                expected = Some(seq.wrapping_add(1));
                match depacketizer.depacketize(&p.payload) {
                    Ok(nals) => unit.extend_from_slice(&nals),
                    Err(_) => broken = true,
                }
                if p.header.marker {
                    if !broken && !unit.is_empty() {
                        let _ = video_tx.try_send(VideoUnit {
                            data: unit.split().freeze(),
                            rtp_timestamp: p.header.timestamp,
                            received: Instant::now(),
                        });
                    }
                    unit.clear();
                    broken = false;
                }
            }
        });
        Box::pin(async {})
    }));
    (video, audio_rx, video_ssrc)
}
