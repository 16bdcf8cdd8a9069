//! The whole call on loopback with real parts: our Socket.IO server on
//! 127.0.0.1:0, the doorbell engine, and a webrtc-rs viewer playing the
//! browser. Two calls in a row, so the second proves the first cleaned up.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_link_answer_media_both_ways_bye_and_ring_again() {
    init_logs();
    let Rig {
        mut bell,
        server,
        dir,
    } = rig(|_| {}).await;
    let url = server.url.clone();

    for call in 1..=2u64 {
        let reply = bell.ring().await;
        assert!(reply.starts_with("ringing "), "{reply}");
        let (notified, before) = bell.until("notified").await;
        assert_eq!(
            names(&before),
            ["ringing", "room_created", "notified"],
            "created comes before the link"
        );
        let link = notified.to_json()["link"].as_str().unwrap().to_string();
        let room = room_of(&link);
        assert_eq!(link, format!("{url}/?room={room}"));
        assert_eq!(room.len(), 22, "128-bit room names");
        assert_eq!(
            server.members(&room),
            1,
            "the room exists, with the doorbell in it, when the link goes out"
        );

        let report = view_call(&url, &room, 60, (320, 240), Duration::from_secs(3), 1000.0).await;
        assert!(report.decoded_frames >= 60, "{report:?}");
        assert!(report.sizes_ok, "every picture is 320x240: {report:?}");
        assert_eq!(
            report.answer_video_codecs,
            ["H264"],
            "H.264 only, though VP8 was offered first"
        );
        let heard = report
            .doorbell_tone_hz
            .expect("the viewer hears the doorbell");
        assert!(
            (heard - 440.0).abs() < 440.0 * 0.05,
            "the doorbell's tone reached the viewer: {heard} Hz"
        );

        let (ended, seen) = bell.until("ended").await;
        assert_eq!(
            ended.to_json()["reason"],
            "viewer_left",
            "after {:?}",
            names(&seen)
        );
        for expected in ["viewer_joined", "answered", "connected", "first_media"] {
            assert!(
                names(&seen).contains(&expected),
                "{expected} missing from {:?}",
                names(&seen)
            );
        }
        assert_eq!(
            bell.status().await.state,
            "idle",
            "bye brings the doorbell back to idle"
        );
        eventually("the room is gone from the server", || {
            server.room_count() == 0
        })
        .await;

        let (level, freq) = recorded_tone(&wav_of(dir.path(), call));
        assert!(
            level > 1000.0,
            "the viewer's voice is not silent (rms {level})"
        );
        let freq = freq.expect("a tone");
        assert!(
            (freq - 1000.0).abs() < 1000.0 * 0.05,
            "the viewer's tone at the door: {freq} Hz"
        );
    }
    bell.stop().await;
}

/// What a recorder would take from a call: the door's H.264 (IDR first, with
/// its parameter sets) and Opus, and the viewer's Opus, all of call 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_tap_gets_the_calls_encoded_media() {
    use doorbell::cmd::daemon;
    use doorbell::media::h264::nal_types;
    use doorbell::media::tap::{MediaTap, Tapped};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u64, Tapped)>>);
    impl MediaTap for Recorder {
        fn tapped(&self, call: u64, sample: Tapped) {
            self.0.lock().unwrap().push((call, sample));
        }
    }

    init_logs();
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let mut bell = Bell::start_with(
        &loopback_config(&server.url, dir.path()),
        daemon::Options {
            tap: Some(recorder.clone()),
            ..daemon::Options::default()
        },
    )
    .await;
    bell.wait_connected().await;
    assert!(bell.ring().await.starts_with("ringing "));
    let (notified, _) = bell.until("notified").await;
    let room = room_of(notified.to_json()["link"].as_str().unwrap());
    let report = view_call(
        &server.url,
        &room,
        30,
        (320, 240),
        Duration::from_secs(2),
        1000.0,
    )
    .await;
    assert!(report.decoded_frames >= 30, "{report:?}");
    bell.until("ended").await;
    let samples = std::mem::take(&mut *recorder.0.lock().unwrap());
    assert!(samples.iter().all(|(call, _)| *call == 1));
    let video: Vec<(&bytes::Bytes, bool)> = samples
        .iter()
        .filter_map(|(_, s)| match s {
            Tapped::Video { data, keyframe, .. } => Some((data, *keyframe)),
            _ => None,
        })
        .collect();
    assert!(video.len() >= 30, "{} video samples", video.len());
    let (first, keyframe) = video[0];
    let nals = nal_types(first);
    assert!(
        keyframe && nals.contains(&7) && nals.contains(&8) && nals.contains(&5),
        "the first is an IDR with SPS and PPS: {nals:?}"
    );
    let count = |f: fn(&Tapped) -> bool| samples.iter().filter(|(_, s)| f(s)).count();
    assert!(
        count(|s| matches!(s, Tapped::DoorAudio { .. })) > 25,
        "the door's audio"
    );
    assert!(
        count(|s| matches!(s, Tapped::ViewerAudio { .. })) > 25,
        "the viewer's voice"
    );
    bell.stop().await;
}
