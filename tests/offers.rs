//! The offer decides what the doorbell sends, the answer what it accepts: the
//! doorbell's answering peer against viewers that offer different things
//! (real webrtc-rs peers on loopback, media sent and received).
//!
//! - The original design's page offers its own camera (`sendrecv` video) and
//!   a data channel: the answer is `sendonly` for video, so nothing comes to
//!   the Pi, and the data channel is accepted and ignored.
//! - An offer with audio only gives an audio call; video only, a video call.
//! - A viewer that only sends video gets `inactive`: the doorbell never takes
//!   video.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use doorbell::call::peer_state::PeerState;
use doorbell::media::h264::{EncoderSettings, H264Decoder, H264Encoder};
use doorbell::media::testsrc::TestPattern;
use doorbell::media::Frame;
use doorbell::peer::viewer::{ViewerOptions, ViewerPeer, ViewerStreams};
use doorbell::peer::{AnswerInputs, AnswerPeer, MediaPlan, PeerEvent, PeerSettings};
use doorbell::sdp::{self, Direction};

fn settings() -> PeerSettings {
    PeerSettings {
        ice_servers: vec![],
        include_loopback: true,
        ..Default::default()
    }
}

struct Call {
    doorbell: AnswerPeer,
    doorbell_events: mpsc::Receiver<PeerEvent>,
    viewer: ViewerPeer,
    streams: ViewerStreams,
    answer: String,
}

async fn call(options: ViewerOptions) -> Call {
    let (viewer, streams, offer) = ViewerPeer::offer(&settings(), options, Duration::from_secs(3))
        .await
        .expect("viewer offer");
    let (events, doorbell_events) = mpsc::channel(64);
    let (_candidates_tx, candidates) = mpsc::channel(8);
    let answer = AnswerPeer::answer(
        &settings(),
        &offer,
        AnswerInputs {
            gather_cap: Duration::from_secs(3),
            have_video: true,
            have_microphone: true,
            events,
            remote_audio: None,
            candidates,
            local_candidates: None,
        },
    )
    .await
    .expect("the doorbell answers");
    viewer.accept(&answer.sdp).await.expect("answer accepted");
    Call {
        doorbell: answer.peer,
        doorbell_events,
        viewer,
        streams,
        answer: answer.sdp,
    }
}

async fn connected(events: &mut mpsc::Receiver<PeerEvent>) {
    let start = Instant::now();
    loop {
        let e = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("a peer event in time")
            .expect("events open");
        if e == PeerEvent::State(PeerState::Connected) {
            return;
        }
        assert!(start.elapsed() < WAIT, "not connected");
    }
}

/// (kind, direction) of every section that is not rejected.
fn sections(answer: &str) -> Vec<(String, Direction)> {
    sdp::media_sections(answer)
        .into_iter()
        .filter(|s| s.port != 0 || s.kind == "application")
        .map(|s| (s.kind, s.direction))
        .collect()
}

/// Sends test-pattern video (and a little audio) from the doorbell; returns
/// how many pictures the viewer decoded and how many audio packets it got.
async fn media_through(c: &mut Call) -> (usize, usize) {
    let video = c.doorbell.video_track();
    let audio = c.doorbell.audio_track();
    let sender = tokio::spawn(async move {
        let mut encoder = H264Encoder::new(&EncoderSettings {
            width: 320,
            height: 240,
            fps: 30,
            bitrate_kbps: 500,
            keyframe_interval: Duration::from_secs(1),
            encoder: doorbell::spec::media::EncoderSpec::OpenH264,
        })
        .unwrap();
        let pattern = TestPattern::new(320, 240, 30);
        let mut frame = Frame::new(320, 240);
        let mut tick = tokio::time::interval(Duration::from_millis(33));
        for n in 0..60u64 {
            tick.tick().await;
            if let Some(v) = &video {
                pattern.render(n, 0, &mut frame);
                if let Some(e) = encoder.encode(&frame).unwrap() {
                    let _ = v.send(e.data, Duration::from_millis(33)).await;
                }
            }
            if let Some(a) = &audio {
                // An Opus frame of silence (TOC byte, code 0: one 20 ms frame).
                let _ = a
                    .send(
                        bytes::Bytes::from_static(&[0xf8, 0xff, 0xfe]),
                        Duration::from_millis(20),
                    )
                    .await;
            }
        }
    });
    let mut decoder = H264Decoder::new().unwrap();
    let (mut pictures, mut packets) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    loop {
        tokio::select! {
            Some(unit) = c.streams.video.recv() => {
                if let Ok(Some(_)) = decoder.decode(&unit.data) {
                    pictures += 1;
                }
            }
            Some(_) = c.streams.audio.recv() => packets += 1,
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    sender.await.unwrap();
    (pictures, packets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_pages_offer_gets_video_sendonly_and_its_data_channel_accepted() {
    init_logs();
    let mut c = call(ViewerOptions {
        send_video: true,
        data_channel: true,
        ..ViewerOptions::default()
    })
    .await;
    let s = sections(&c.answer);
    assert!(s.contains(&("video".into(), Direction::SendOnly)), "{s:?}");
    assert!(s.contains(&("audio".into(), Direction::SendRecv)), "{s:?}");
    assert!(
        s.iter().any(|(k, _)| k == "application"),
        "the data channel is answered: {s:?}\n{}",
        c.answer
    );
    connected(&mut c.doorbell_events).await;
    let (pictures, packets) = media_through(&mut c).await;
    assert!(
        pictures >= 20 && packets > 20,
        "{pictures} pictures, {packets} packets"
    );
    c.viewer.close().await;
    c.doorbell.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_with_audio_only_gives_an_audio_call() {
    init_logs();
    let mut c = call(ViewerOptions {
        receive_video: false,
        ..ViewerOptions::default()
    })
    .await;
    assert_eq!(
        sections(&c.answer),
        [("audio".to_string(), Direction::SendRecv)]
    );
    assert_eq!(
        c.doorbell.plan(),
        MediaPlan {
            send_video: false,
            send_audio: true,
            receive_audio: true
        }
    );
    assert!(c.doorbell.video_track().is_none());
    connected(&mut c.doorbell_events).await;
    let (pictures, packets) = media_through(&mut c).await;
    assert_eq!(pictures, 0);
    assert!(packets > 20, "{packets} audio packets");
    c.viewer.close().await;
    c.doorbell.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_with_video_only_gives_a_video_call() {
    init_logs();
    let mut c = call(ViewerOptions {
        audio: false,
        ..ViewerOptions::default()
    })
    .await;
    assert_eq!(
        sections(&c.answer),
        [("video".to_string(), Direction::SendOnly)]
    );
    assert!(c.doorbell.audio_track().is_none());
    connected(&mut c.doorbell_events).await;
    let (pictures, packets) = media_through(&mut c).await;
    assert!(pictures >= 20, "{pictures} pictures");
    assert_eq!(packets, 0);
    c.viewer.close().await;
    c.doorbell.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_only_sends_video_gets_inactive() {
    init_logs();
    let c = call(ViewerOptions {
        receive_video: false,
        send_video: true,
        ..ViewerOptions::default()
    })
    .await;
    let s = sections(&c.answer);
    assert!(s.contains(&("video".into(), Direction::Inactive)), "{s:?}");
    assert!(s.contains(&("audio".into(), Direction::SendRecv)), "{s:?}");
    c.viewer.close().await;
    c.doorbell.close().await;
}
