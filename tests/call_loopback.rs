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
