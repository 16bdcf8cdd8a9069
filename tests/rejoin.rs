//! A viewer gets back into its call; nobody else gets in. The viewer (the
//! test's webrtc-rs peer, playing the browser page) joins `doorbell serve`
//! holding a seat, as the page does; its first network carries signaling
//! through a TCP proxy and media through a UDP relay. Then that network is
//! cut, silently, as Wi-Fi is when a phone leaves the house: the viewer joins
//! again over a new connection with the same seat and offers again, and the
//! doorbell answers and streams into the same call, well within
//! `call.media_timeout`. A stranger with another seat, or none, gets `full`.
//! (The page reload, with Chromium, is in tests/browser.rs.)

mod common;

use common::path::{TcpPath, UdpPath};
use common::*;
use std::time::{Duration, Instant};

use doorbell::media::h264::H264Decoder;
use doorbell::peer::viewer::{ViewerOptions, ViewerPeer, ViewerStreams};
use doorbell::peer::PeerSettings;
use doorbell::signaling::protocol::{Message, SessionDescription};

const SEAT: &str = "the-phone-s-seat-0123456789";

/// Joins `room` with `seat` (or none) over `url`: the server's answer.
async fn join(url: &str, room: &str, seat: Option<&str>) -> (ViewerSignaling, Message) {
    let mut sig = ViewerSignaling::connect(url).await;
    sig.send(match seat {
        Some(seat) => Message::JoinSeat {
            room: room.into(),
            seat: seat.into(),
        },
        None => Message::Join(room.into()),
    })
    .await;
    loop {
        match sig.next().await {
            Message::IceServers(_) => {}
            answer => return (sig, answer),
        }
    }
}

/// Offers over `sig` (through `path` when given) and returns the connected
/// viewer once it decoded `n` frames.
async fn offer_and_watch(
    sig: &mut ViewerSignaling,
    path: Option<&UdpPath>,
    n: usize,
) -> (ViewerPeer, ViewerStreams) {
    let settings = PeerSettings {
        include_loopback: true,
        ..Default::default()
    };
    let (viewer, mut streams, offer) =
        ViewerPeer::offer(&settings, ViewerOptions::default(), Duration::from_secs(3))
            .await
            .expect("viewer offer");
    let offer = path.map_or(offer.clone(), |p| p.offer_for_doorbell(&offer));
    sig.send(Message::Invite(SessionDescription::offer(offer)))
        .await;
    let answer = match sig.next().await {
        Message::Ok(d) => d.sdp,
        other => panic!("expected ok, got {other}"),
    };
    let answer = path.map_or(answer.clone(), |p| p.answer_for_viewer(&answer));
    viewer.accept(&answer).await.expect("answer accepted");
    let mut decoder = H264Decoder::new().unwrap();
    let (mut decoded, start) = (0, Instant::now());
    let mut asked = Instant::now();
    while decoded < n {
        assert!(start.elapsed() < WAIT, "decoded {decoded} of {n} frames");
        tokio::select! {
            Some(unit) = streams.video.recv() => match decoder.decode(&unit.data) {
                Ok(Some(_)) => decoded += 1,
                Ok(None) => {}
                Err(_) if asked.elapsed() > Duration::from_millis(300) => {
                    let _ = viewer.request_keyframe().await;
                    asked = Instant::now();
                }
                Err(_) => {}
            },
            Some(_) = streams.audio.recv() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    (viewer, streams)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_on_a_new_network_gets_back_into_the_call_and_nobody_else_gets_in() {
    init_logs();
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    let config = loopback_config(&server.url, dir.path());
    let media_timeout = config.call.media_timeout;
    let mut bell = Bell::start(&config).await;
    bell.wait_connected().await;
    assert!(bell.ring().await.starts_with("ringing "));
    let (notified, _) = bell.until("notified").await;
    let room = room_of(notified.to_json()["link"].as_str().unwrap());

    // Wi-Fi: signaling and media each through a path the test can cut.
    let wifi = TcpPath::start(server.server.addr).await;
    let media = UdpPath::start().await;
    let (mut sig, answer) = join(&wifi.url(), &room, Some(SEAT)).await;
    assert_eq!(answer, Message::Joined(room.clone()));
    let (old_viewer, _old_streams) = offer_and_watch(&mut sig, Some(&media), 30).await;
    bell.until("first_media").await;

    // The phone leaves the house: both paths go silent, nothing is closed.
    wifi.cut();
    media.cut();
    let cut = Instant::now();
    // The page notices (its media connection stays "disconnected" for 2 s)
    // and joins again over mobile data: a new connection, the same seat.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut sig2, answer) = join(&server.url, &room, Some(SEAT)).await;
    assert_eq!(
        answer,
        Message::Joined(room.clone()),
        "the seat's holder gets back in although its old connection looks alive"
    );
    let (viewer, _streams) = offer_and_watch(&mut sig2, None, 30).await;
    let back = cut.elapsed();
    let (_, seen) = bell.until("reconnected").await;
    let names = names(&seen);
    assert!(names.contains(&"viewer_joined"), "{names:?}");
    assert!(!names.contains(&"ended"), "the call went on: {names:?}");
    eprintln!("rejoin: frames again {back:?} after the network was cut");
    assert!(
        back < media_timeout,
        "back in the call after {back:?}, call.media_timeout is {media_timeout:?}"
    );

    // Nobody else gets in: another seat, no seat.
    let (_s, answer) = join(&server.url, &room, Some("somebody-else-s-seat-0000")).await;
    assert_eq!(answer, Message::Full(room.clone()));
    let (_s, answer) = join(&server.url, &room, None).await;
    assert_eq!(answer, Message::Full(room.clone()));
    // Nor does the old connection count any more: the server closed it.
    assert_eq!(server.server.members(&room), 2);

    // The call goes on until the viewer hangs up.
    sig2.send(Message::Bye(Some(room.clone()))).await;
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "viewer_left");
    viewer.close().await;
    old_viewer.close().await;
    bell.stop().await;
}

/// A seat is kept only while the call is there: when the viewer does not
/// come back, the doorbell ends the call (`media_lost`, after
/// `call.media_timeout`), its `bye` ends the room although the viewer's dead
/// connection still looks alive, and the link then opens a ring that is over
/// (`created`), for the seat's holder too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_does_not_come_back_ends_the_call_and_the_room() {
    init_logs();
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = loopback_config(&server.url, dir.path());
    config.call.media_timeout = Duration::from_secs(3);
    let mut bell = Bell::start(&config).await;
    bell.wait_connected().await;
    bell.ring().await;
    let (notified, _) = bell.until("notified").await;
    let room = room_of(notified.to_json()["link"].as_str().unwrap());
    let wifi = TcpPath::start(server.server.addr).await;
    let media = UdpPath::start().await;
    let (mut sig, _) = join(&wifi.url(), &room, Some(SEAT)).await;
    let (viewer, _streams) = offer_and_watch(&mut sig, Some(&media), 10).await;
    wifi.cut();
    media.cut();
    let cut = Instant::now();
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "media_lost");
    let took = cut.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < WAIT,
        "ended {took:?} after the cut (media_timeout 3 s)"
    );
    eventually("the room is gone", || server.server.room_count() == 0).await;
    let (_s, answer) = join(&server.url, &room, Some(SEAT)).await;
    assert_eq!(answer, Message::Created(room.clone()), "the ring is over");
    viewer.close().await;
    bell.stop().await;
}
