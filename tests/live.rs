//! Live view on demand: the owner looks at the door without a ring (the
//! control socket's `live`, `doorbell live`, the bot's `/live`). No chime
//! event, nobody notified, the link to the one who asked, a history row of
//! kind `live`, a stop by itself after `live.max_duration`; a press during a
//! live view turns it into a ring and the call goes on.

mod common;

use common::live::LiveViewer;
use common::*;
use doorbell::call::command::{Command, RingReply};
use std::process::Command as Process;
use std::time::{Duration, Instant};

async fn look(bell: &Bell) -> RingReply {
    let (tx, rx) = tokio::sync::oneshot::channel();
    bell.bell
        .commands
        .send(Command::Live { reply: Some(tx) })
        .await
        .unwrap();
    tokio::time::timeout(WAIT, rx).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_view_is_a_quiet_ring_that_stops_by_itself() {
    init_logs();
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = loopback_config(&server.url, dir.path());
    config.live.max_duration = Duration::from_secs(2);
    let mut bell = Bell::start(&config).await;
    bell.wait_connected().await;

    let RingReply::Live { link } = look(&bell).await else {
        panic!("no live view")
    };
    let room = room_of(&link);
    let (_, seen) = bell.until("room_created").await;
    assert_eq!(
        names(&seen),
        ["live_started", "room_created"],
        "no ringing: no chime"
    );
    let viewer = LiveViewer::join(&server.url, &room).await;
    let (connected, seen) = bell.until("connected").await;
    assert!(
        !names(&seen).contains(&"notified"),
        "nobody told: {:?}",
        names(&seen)
    );
    viewer.more_frames(10).await;
    // It stops by itself after live.max_duration, though watched.
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "max_duration");
    let watched = Duration::from_millis(ended.ts - connected.ts);
    assert!(
        watched >= Duration::from_millis(1900) && watched < Duration::from_secs(4),
        "stopped {watched:?} after it was connected"
    );
    viewer.leave().await;
    // The event goes out as the row's end is being written.
    eventually("the live view's end in the history", || {
        bell.bell
            .history
            .recent(1)
            .first()
            .is_some_and(|r| r.ended_ms.is_some())
    })
    .await;
    let rows = bell.bell.history.recent(5);
    assert_eq!(rows[0].kind, doorbell::history::Kind::Live);
    assert!(
        rows[0].describe().starts_with("live view ("),
        "{}",
        rows[0].describe()
    );

    // A look while a call is on is refused.
    bell.ring().await;
    bell.until("room_created").await;
    assert_eq!(look(&bell).await, RingReply::Busy);
    bell.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_press_during_a_live_view_turns_it_into_a_ring() {
    init_logs();
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    let config = loopback_config(&server.url, dir.path());
    let mut bell = Bell::start(&config).await;
    bell.wait_connected().await;

    // `doorbell live` through the control socket prints the link.
    let socket = dir.path().join("control.sock");
    let out = tokio::task::spawn_blocking(move || {
        Process::new(env!("CARGO_BIN_EXE_doorbell"))
            .args(["live", "--socket"])
            .arg(socket)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let link = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let room = room_of(&link);
    let viewer = LiveViewer::join(&server.url, &room).await;
    bell.until("connected").await;
    viewer.more_frames(10).await;

    // The visitor presses: a ring now (the chime's event, the owners told),
    // the same call and room, the pictures go on.
    let pressed = Instant::now();
    let reply = bell.ring().await;
    assert_eq!(
        reply,
        format!("ringing {room}"),
        "the press rang in the live view's room"
    );
    let (ringing, _) = bell.until("ringing").await;
    assert_eq!(ringing.event.room, room);
    let (notified, _) = bell.until("notified").await;
    assert_eq!(notified.to_json()["link"].as_str(), Some(link.as_str()));
    assert!(pressed.elapsed() < Duration::from_secs(2));
    viewer.more_frames(20).await;
    viewer.leave().await;
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "viewer_left");
    let rows = bell.bell.history.recent(5);
    assert_eq!(rows[0].kind, doorbell::history::Kind::Ring, "{:?}", rows[0]);
    assert_eq!(rows[0].outcome, doorbell::history::Outcome::Answered);
    bell.stop().await;
}
