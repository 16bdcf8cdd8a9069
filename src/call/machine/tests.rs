//! Tables of (state, input) -> (state, actions) for the call machine, plus the
//! scenarios and invariants that a table cannot show.

use super::*;
use crate::signaling::protocol::{IceCandidate, SessionDescription};

const ROOM: &str = "room1";

fn config() -> MachineConfig {
    MachineConfig {
        timeouts: Timeouts::default(),
        press_during_call: PressDuringCall::Ignore,
        link_template: "http://bell.test/?room={room}".into(),
        protocol: ProtocolTraits::ROOMS,
        max_viewers: 4,
    }
}

fn offer() -> SessionDescription {
    SessionDescription::offer("v=0\r\n")
}

fn candidate(n: u8) -> IceCandidate {
    IceCandidate {
        candidate: format!("candidate:{n} 1 udp 2122260223 192.0.2.{n} 5000{n} typ host"),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    }
}

/// A short, comparable form of the actions.
fn summary(actions: &[Action]) -> String {
    actions
        .iter()
        .map(|a| match a {
            Action::Send(m) => format!("send:{}", m.event()),
            Action::SendTo { message, .. } => format!("send_to:{}", message.event()),
            Action::Notify { .. } => "notify".into(),
            Action::NotifyFailure { .. } => "notify_failure".into(),
            Action::Answer { .. } => "answer".into(),
            Action::Offer { .. } => "offer".into(),
            Action::AcceptAnswer { .. } => "accept_answer".into(),
            Action::AddCandidate { .. } => "add_candidate".into(),
            Action::StartMedia { .. } => "start_media".into(),
            Action::ClosePeer { .. } => "close_peer".into(),
            Action::Teardown { .. } => "teardown".into(),
            Action::Emit(e) => match &e.kind {
                EventKind::Ended { reason } => format!("ended:{}", reason.as_str()),
                k => k.name().to_string(),
            },
            Action::Ignored { .. } => "ignored".into(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn state_name(m: &CallMachine) -> String {
    match m.state() {
        State::InCall { connected: true } => "in_call+".into(),
        State::Ending { reason } => format!("ending:{}", reason.as_str()),
        s => s.name().into(),
    }
}

/// A machine brought to `state` through the normal path, and the time it got there.
fn machine_in(state: &str) -> (CallMachine, Instant) {
    let t = Instant::now();
    let mut m = CallMachine::new(config());
    m.handle(t, Input::SignalingUp);
    let steps: &[&str] = match state {
        "idle" => &[],
        "joining" => &["press"],
        "waiting_viewer" => &["press", "created"],
        "waiting_offer" => &["press", "created", "new_peer"],
        "answering" => &["press", "created", "new_peer", "invite"],
        "in_call" => &["press", "created", "new_peer", "invite", "answer_ready"],
        "in_call+" => &[
            "press",
            "created",
            "new_peer",
            "invite",
            "answer_ready",
            "connected",
        ],
        "ending" => &[
            "press",
            "created",
            "new_peer",
            "invite",
            "answer_ready",
            "connected",
            "hangup",
        ],
        other => panic!("no such state {other}"),
    };
    for step in steps {
        let input = input_named(step, &m);
        m.handle(t, input);
    }
    assert_eq!(state_name(&m).split(':').next().unwrap(), state, "setup");
    (m, t)
}

fn input_named(name: &str, m: &CallMachine) -> Input {
    let epoch = m.epoch();
    match name {
        "press" => Input::Press { room: ROOM.into() },
        "look" => Input::Look { room: ROOM.into() },
        "hangup" => Input::Hangup,
        "shutdown" => Input::Shutdown,
        "signaling_up" => Input::SignalingUp,
        "signaling_down" => Input::SignalingDown,
        "created" => Input::Signal(Message::Created(ROOM.into())),
        "created_other" => Input::Signal(Message::Created("other".into())),
        "joined" => Input::Signal(Message::Joined(ROOM.into())),
        "full" => Input::Signal(Message::Full(ROOM.into())),
        "new_peer" => Input::Signal(Message::NewPeer(Some(ROOM.into()))),
        "new_peer_bare" => Input::Signal(Message::NewPeer(None)),
        "invite" => Input::Signal(Message::Invite(offer())),
        "ok" => Input::Signal(Message::Ok(SessionDescription::answer("v=0\r\n"))),
        "ice_candidate" => Input::Signal(Message::IceCandidate(Some(candidate(1)))),
        "ice_candidate_end" => Input::Signal(Message::IceCandidate(None)),
        "bye" => Input::Signal(Message::Bye(Some(ROOM.into()))),
        "bye_other" => Input::Signal(Message::Bye(Some("other".into()))),
        "join" => Input::Signal(Message::Join(ROOM.into())),
        "signal_failed" => Input::SignalFailed {
            what: "transport closed".into(),
        },
        "notified" => Input::Notified {
            epoch,
            result: Ok(()),
        },
        "notify_failed" => Input::Notified {
            epoch,
            result: Err(NotifyFailed("api down".into())),
        },
        "answer_ready" => Input::AnswerReady {
            epoch,
            answer: SessionDescription::answer("v=0\r\n"),
        },
        "answer_failed" => Input::AnswerFailed {
            epoch,
            error: "no common codec".into(),
        },
        "connected" => Input::Peer {
            epoch,
            state: PeerState::Connected,
        },
        "disconnected" => Input::Peer {
            epoch,
            state: PeerState::Disconnected,
        },
        "failed" => Input::Peer {
            epoch,
            state: PeerState::Failed,
        },
        "closed" => Input::Peer {
            epoch,
            state: PeerState::Closed,
        },
        "media_stalled" => Input::MediaStalled {
            epoch,
            last_packet: Instant::now(),
        },
        "media_flowing" => Input::MediaFlowing { epoch },
        "first_media" => Input::FirstMedia { epoch },
        "media_error" => Input::MediaError {
            epoch,
            what: "camera unplugged".into(),
        },
        "teardown_done" => Input::TeardownDone { epoch },
        "tick" | "tick_late" => Input::Tick,
        other => panic!("no such input {other}"),
    }
}

const STATES: [&str; 8] = [
    "idle",
    "joining",
    "waiting_viewer",
    "waiting_offer",
    "answering",
    "in_call",
    "in_call+",
    "ending",
];

/// One row per input; one cell per state in [`STATES`] order: "next state | actions".
/// `=` as next state means "unchanged".
#[rustfmt::skip]
const TABLE: &[(&str, [&str; 8])] = &[
    ("press", [
        "joining | ringing,send:join",
        "= | busy", "= | busy", "= | busy", "= | busy", "= | busy", "= | busy", "= | busy"]),
    ("look", [
        "joining | live_started,send:join",
        "= | busy", "= | busy", "= | busy", "= | busy", "= | busy", "= | busy", "= | busy"]),
    ("hangup", [
        "= | ignored",
        "ending:hangup | send:bye,teardown", "ending:hangup | send:bye,teardown",
        "ending:hangup | send:bye,teardown", "ending:hangup | send:bye,teardown",
        "ending:hangup | send:bye,teardown", "ending:hangup | send:bye,teardown",
        "= | ignored"]),
    ("shutdown", [
        "= | ",
        "ending:shutdown | send:bye,teardown", "ending:shutdown | send:bye,teardown",
        "ending:shutdown | send:bye,teardown", "ending:shutdown | send:bye,teardown",
        "ending:shutdown | send:bye,teardown", "ending:shutdown | send:bye,teardown",
        "= | "]),
    ("signaling_up", ["= | ", "= | ", "= | ", "= | ", "= | ", "= | ", "= | ", "= | "]),
    ("signaling_down", [
        "= | ",
        "ending:signaling_lost | error,teardown", "ending:signaling_lost | error,teardown",
        "ending:signaling_lost | error,teardown", "ending:signaling_lost | error,teardown",
        "= | ", "= | ", "= | "]),
    ("created", [
        "= | ignored", "waiting_viewer | room_created,notify", "= | ignored", "= | ignored",
        "= | ignored", "= | ", "= | ", "= | ignored"]),
    ("created_other", [
        "= | ignored", "= | ignored", "= | ignored", "= | ignored",
        "= | ignored", "= | ignored", "= | ignored", "= | ignored"]),
    ("joined", [
        "= | ignored", "ending:room_collision | error,send:bye,teardown", "= | ignored", "= | ignored",
        "= | ignored", "= | ", "= | ", "= | ignored"]),
    ("full", [
        "= | ignored", "ending:room_collision | error,send:bye,teardown", "= | ignored", "= | ignored",
        "= | ignored", "= | ignored", "= | ignored", "= | ignored"]),
    ("new_peer", [
        "= | ignored", "= | ignored", "waiting_offer | viewer_joined", "= | ignored",
        "waiting_offer | close_peer,viewer_joined", "waiting_offer | close_peer,viewer_joined",
        "waiting_offer | close_peer,viewer_joined", "= | ignored"]),
    ("new_peer_bare", [
        "= | ignored", "= | ignored", "waiting_offer | viewer_joined", "= | ignored",
        "waiting_offer | close_peer,viewer_joined", "waiting_offer | close_peer,viewer_joined",
        "waiting_offer | close_peer,viewer_joined", "= | ignored"]),
    ("invite", [
        "= | ignored", "= | ignored", "answering | viewer_joined,answer", "answering | answer",
        "answering | close_peer,answer", "answering | close_peer,answer",
        "answering | close_peer,answer", "= | ignored"]),
    ("ok", [
        "= | ignored", "= | ignored", "= | ignored", "= | ignored",
        "= | ignored", "= | ignored", "= | ignored", "= | ignored"]),
    // Trickled by the viewer: kept until the offer, then added to the peer.
    ("ice_candidate", [
        "= | ignored", "= | ignored", "= | ", "= | ",
        "= | add_candidate", "= | add_candidate", "= | add_candidate", "= | ignored"]),
    ("ice_candidate_end", ["= | ", "= | ", "= | ", "= | ", "= | ", "= | ", "= | ", "= | "]),
    ("bye", [
        "= | ignored", "= | ignored",
        "ending:viewer_left | send:bye,teardown", "ending:viewer_left | send:bye,teardown",
        "ending:viewer_left | send:bye,teardown", "ending:viewer_left | send:bye,teardown",
        "ending:viewer_left | send:bye,teardown", "= | ignored"]),
    ("bye_other", [
        "= | ignored", "= | ignored", "= | ignored", "= | ignored",
        "= | ignored", "= | ignored", "= | ignored", "= | ignored"]),
    ("join", [
        "= | ignored", "= | ignored", "= | ignored", "= | ignored",
        "= | ignored", "= | ignored", "= | ignored", "= | ignored"]),
    ("signal_failed", [
        "= | ignored",
        "ending:signaling_lost | error,send:bye,teardown", "ending:signaling_lost | error,send:bye,teardown",
        "ending:signaling_lost | error,send:bye,teardown", "ending:signaling_lost | error,send:bye,teardown",
        "= | ignored", "= | ignored", "= | ignored"]),
    ("notified", [
        "= | ignored", "= | notified", "= | notified", "= | notified",
        "= | notified", "= | notified", "= | notified", "= | notified"]),
    ("notify_failed", [
        "= | ignored", "= | error", "= | error", "= | error",
        "= | error", "= | error", "= | error", "= | error"]),
    ("answer_ready", [
        "= | ignored", "= | ignored", "= | ignored", "= | ignored",
        "in_call | send:ok,answered", "= | ignored", "= | ignored", "= | ignored"]),
    ("answer_failed", [
        "= | ignored", "= | ignored", "= | ignored", "= | ignored",
        "ending:answer_failed | error,send:bye,teardown", "= | ignored", "= | ignored", "= | ignored"]),
    ("connected", [
        "= | ignored", "= | ignored", "= | ignored", "= | ignored",
        "= | ignored", "in_call+ | connected,start_media", "= | ", "= | ignored"]),
    ("disconnected", [
        "= | ignored", "= | ignored", "= | ignored", "= | ignored",
        "= | ignored", "= | ", "= | ", "= | ignored"]),
    ("failed", [
        "= | ignored", "= | ignored", "= | ignored", "= | ignored", "= | ignored",
        "ending:media_failed | error,send:bye,teardown", "ending:media_failed | error,send:bye,teardown",
        "= | ignored"]),
    // Connected, the viewer's side closing is waited out like a disconnect.
    ("closed", [
        "= | ignored", "= | ignored", "= | ignored", "= | ignored", "= | ignored",
        "ending:media_failed | error,send:bye,teardown", "= | ",
        "= | ignored"]),
    ("media_stalled", [
        "= | ignored", "= | ignored", "= | ignored", "= | ignored",
        "= | ignored", "= | ignored", "= | ", "= | ignored"]),
    ("media_flowing", [
        "= | ignored", "= | ignored", "= | ignored", "= | ignored",
        "= | ignored", "= | ignored", "= | ", "= | ignored"]),
    ("first_media", [
        "= | ", "= | ", "= | ", "= | ", "= | ", "= | first_media", "= | first_media", "= | "]),
    ("media_error", [
        "= | ignored", "= | error", "= | error", "= | error",
        "= | error", "= | error", "= | error", "= | error"]),
    ("teardown_done", [
        "= | ignored", "= | ignored", "= | ignored", "= | ignored",
        "= | ignored", "= | ignored", "= | ignored", "idle | ended:hangup"]),
    ("tick", ["= | ", "= | ", "= | ", "= | ", "= | ", "= | ", "= | ", "= | "]),
    // An hour late: the earliest due deadline decides.
    ("tick_late", [
        "= | ",
        "ending:signaling_timeout | error,send:bye,teardown",
        "ending:unanswered | send:bye,teardown",
        "ending:no_offer | send:bye,teardown",
        "ending:answer_failed | error,send:bye,teardown",
        "ending:media_failed | error,send:bye,teardown",
        "ending:max_duration | send:bye,teardown",
        "idle | ignored,ended:hangup"]),
];

#[test]
fn every_state_times_every_input() {
    let mut failures = Vec::new();
    for (input, cells) in TABLE {
        for (state, cell) in STATES.iter().zip(cells.iter()) {
            let (mut m, t) = machine_in(state);
            let now = if *input == "tick_late" {
                t + Duration::from_secs(3600)
            } else {
                t
            };
            let before = state_name(&m);
            let actions = m.handle(now, input_named(input, &m));
            let (want_state, want_actions) = cell.split_once(" | ").expect("cell format");
            let want_state = if want_state == "=" {
                before.clone()
            } else {
                want_state.to_string()
            };
            let got = (state_name(&m), summary(&actions));
            if got != (want_state.clone(), want_actions.trim().to_string()) {
                failures.push(format!(
                    "{state:>14} x {input:<14} -> {} | {}   (want {want_state} | {want_actions})",
                    got.0, got.1
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_table_has_every_input_once() {
    let mut names: Vec<_> = TABLE.iter().map(|(n, _)| *n).collect();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n);
    assert!(n >= 32);
}

fn events(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit(e) => Some(match &e.kind {
                EventKind::Ended { reason } => format!("ended:{}", reason.as_str()),
                k => k.name().to_string(),
            }),
            _ => None,
        })
        .collect()
}

#[test]
fn a_whole_call_emits_the_events_in_order_and_links_after_created() {
    let t = Instant::now();
    let mut m = CallMachine::new(config());
    let mut all = Vec::new();
    let mut feed = |m: &mut CallMachine, i: Input| {
        let a = m.handle(t, i);
        all.extend(a.clone());
        a
    };
    feed(&mut m, Input::SignalingUp);
    let a = feed(&mut m, Input::Press { room: ROOM.into() });
    assert!(
        !a.iter().any(|a| matches!(a, Action::Notify { .. })),
        "no link before created"
    );
    let a = feed(&mut m, Input::Signal(Message::Created(ROOM.into())));
    let link = a.iter().find_map(|a| match a {
        Action::Notify { link, room, .. } => Some((link.clone(), room.clone())),
        _ => None,
    });
    assert_eq!(
        link,
        Some(("http://bell.test/?room=room1".to_string(), ROOM.to_string()))
    );
    let e = m.epoch();
    feed(
        &mut m,
        Input::Notified {
            epoch: e,
            result: Ok(()),
        },
    );
    feed(&mut m, Input::Signal(Message::NewPeer(Some(ROOM.into()))));
    let a = feed(&mut m, Input::Signal(Message::Invite(offer())));
    assert!(
        matches!(&a[..], [Action::Answer { gather_timeout, .. }] if *gather_timeout == Duration::from_secs(3))
    );
    feed(
        &mut m,
        Input::AnswerReady {
            epoch: e,
            answer: SessionDescription::answer("v=0\r\nanswer"),
        },
    );
    feed(
        &mut m,
        Input::Peer {
            epoch: e,
            state: PeerState::Connected,
        },
    );
    feed(&mut m, Input::FirstMedia { epoch: e });
    feed(&mut m, Input::FirstMedia { epoch: e });
    feed(&mut m, Input::Signal(Message::Bye(Some(ROOM.into()))));
    feed(&mut m, Input::TeardownDone { epoch: e });
    assert_eq!(
        events(&all),
        [
            "ringing",
            "room_created",
            "notified",
            "viewer_joined",
            "answered",
            "connected",
            "first_media",
            "ended:viewer_left"
        ]
    );
    let sent: Vec<_> = all
        .iter()
        .filter_map(|a| match a {
            Action::Send(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            Message::Join(ROOM.into()),
            Message::Ok(SessionDescription::answer("v=0\r\nanswer")),
            Message::Bye(Some(ROOM.into())),
        ]
    );
    for a in &all {
        if let Action::Emit(ev) = a {
            assert_eq!((ev.call, ev.room.as_str()), (1, ROOM));
        }
    }
    assert!(m.is_idle());
    assert_eq!(m.next_deadline(), None);
}

#[test]
fn nobody_joins_bye_unanswered_idle_at_exactly_the_configured_time() {
    let mut cfg = config();
    cfg.timeouts.viewer_join = Duration::from_secs(45);
    let t = Instant::now();
    let mut m = CallMachine::new(cfg);
    m.handle(t, Input::SignalingUp);
    m.handle(t, Input::Press { room: ROOM.into() });
    m.handle(t, Input::Signal(Message::Created(ROOM.into())));
    assert_eq!(m.next_deadline(), Some(t + Duration::from_secs(45)));
    assert_eq!(
        summary(&m.handle(t + Duration::from_millis(44_999), Input::Tick)),
        ""
    );
    let a = m.handle(t + Duration::from_secs(45), Input::Tick);
    assert_eq!(summary(&a), "send:bye,teardown");
    let e = m.epoch();
    let a = m.handle(
        t + Duration::from_secs(45),
        Input::TeardownDone { epoch: e },
    );
    assert_eq!(summary(&a), "ended:unanswered");
    assert!(m.is_idle());
}

#[test]
fn each_timeout_is_the_configured_one() {
    let s = Duration::from_secs;
    let cfg = MachineConfig {
        timeouts: Timeouts {
            signaling: s(7),
            viewer_join: s(11),
            offer: s(13),
            ice_gather: s(2),
            max_call: s(300),
            max_live: s(290),
            media: s(17),
            teardown: s(19),
        },
        ..config()
    };
    let t = Instant::now();
    let mut m = CallMachine::new(cfg);
    m.handle(t, Input::SignalingUp);
    m.handle(t, Input::Press { room: ROOM.into() });
    assert_eq!(m.next_deadline(), Some(t + s(7)));
    m.handle(t, Input::Signal(Message::Created(ROOM.into())));
    assert_eq!(m.next_deadline(), Some(t + s(11)));
    m.handle(t, Input::Signal(Message::NewPeer(None)));
    assert_eq!(m.next_deadline(), Some(t + s(13)));
    let a = m.handle(t, Input::Signal(Message::Invite(offer())));
    assert!(matches!(&a[..], [Action::Answer { gather_timeout, .. }] if *gather_timeout == s(2)));
    assert_eq!(m.next_deadline(), Some(t + s(2) + s(5)));
    let e = m.epoch();
    m.handle(
        t,
        Input::AnswerReady {
            epoch: e,
            answer: SessionDescription::answer("v=0"),
        },
    );
    assert_eq!(
        m.next_deadline(),
        Some(t + s(17)),
        "must connect within the media timeout"
    );
    m.handle(
        t,
        Input::Peer {
            epoch: e,
            state: PeerState::Connected,
        },
    );
    assert_eq!(
        m.next_deadline(),
        Some(t + s(300)),
        "only the max call length is left"
    );
    m.handle(
        t + s(1),
        Input::Peer {
            epoch: e,
            state: PeerState::Disconnected,
        },
    );
    assert_eq!(m.next_deadline(), Some(t + s(1) + s(17)));
    m.handle(
        t + s(2),
        Input::Peer {
            epoch: e,
            state: PeerState::Connected,
        },
    );
    assert_eq!(
        m.next_deadline(),
        Some(t + s(300)),
        "reconnecting cancels the media timer"
    );
    m.handle(
        t + s(3),
        Input::MediaStalled {
            epoch: e,
            last_packet: t + s(3),
        },
    );
    assert_eq!(m.next_deadline(), Some(t + s(3) + s(17)));
    m.handle(
        t + s(4),
        Input::MediaStalled {
            epoch: e,
            last_packet: t + s(4),
        },
    );
    assert_eq!(
        m.next_deadline(),
        Some(t + s(3) + s(17)),
        "a repeated stall does not push it back"
    );
    let a = m.handle(t + s(20), Input::Tick);
    assert_eq!(summary(&a), "error,send:bye,teardown");
    assert_eq!(state_name(&m), "ending:media_lost");
    assert_eq!(m.next_deadline(), Some(t + s(20) + s(19)));
    let a = m.handle(t + s(39), Input::Tick);
    assert_eq!(
        summary(&a),
        "ignored,ended:media_lost",
        "a stuck teardown cannot hold the bell"
    );
    assert!(m.is_idle());
}

#[test]
fn max_call_length_hangs_up() {
    let (mut m, t) = machine_in("in_call+");
    let a = m.handle(t + Duration::from_secs(600), Input::Tick);
    assert_eq!(summary(&a), "send:bye,teardown");
    assert_eq!(state_name(&m), "ending:max_duration");
}

#[test]
fn press_with_the_server_unreachable_fails_fast_and_tells_the_owner() {
    let t = Instant::now();
    let mut m = CallMachine::new(config());
    let a = m.handle(t, Input::Press { room: ROOM.into() });
    assert_eq!(
        summary(&a),
        "ringing,error,notify_failure,ended:signaling_unavailable"
    );
    assert!(m.is_idle());
    assert_eq!(m.next_deadline(), None);
    // Once the server is back, the next press works.
    m.handle(t, Input::SignalingUp);
    let a = m.handle(
        t,
        Input::Press {
            room: "room2".into(),
        },
    );
    assert_eq!(summary(&a), "ringing,send:join");
}

#[test]
fn a_late_answer_after_a_timeout_is_ignored() {
    let (mut m, t) = machine_in("answering");
    let old = m.epoch();
    m.handle(t + Duration::from_secs(3600), Input::Tick);
    m.handle(t, Input::TeardownDone { epoch: old });
    assert!(m.is_idle());
    m.handle(
        t,
        Input::Press {
            room: "room2".into(),
        },
    );
    let a = m.handle(
        t,
        Input::AnswerReady {
            epoch: old,
            answer: SessionDescription::answer("v=0"),
        },
    );
    assert_eq!(summary(&a), "ignored");
    let a = m.handle(
        t,
        Input::Peer {
            epoch: old,
            state: PeerState::Failed,
        },
    );
    assert_eq!(summary(&a), "ignored");
    assert_eq!(state_name(&m), "joining");
}

#[test]
fn viewer_reload_starts_a_new_peer_session_and_drops_the_old_ones_events() {
    let (mut m, t) = machine_in("in_call+");
    let old = m.epoch();
    let a = m.handle(t, Input::Signal(Message::NewPeer(Some(ROOM.into()))));
    assert!(matches!(a[0], Action::ClosePeer { epoch } if epoch == old));
    assert_ne!(m.epoch(), old);
    let a = m.handle(
        t,
        Input::Peer {
            epoch: old,
            state: PeerState::Closed,
        },
    );
    assert_eq!(
        summary(&a),
        "ignored",
        "the old peer's close must not end the call"
    );
    m.handle(t, Input::Signal(Message::Invite(offer())));
    let new = m.epoch();
    m.handle(
        t,
        Input::AnswerReady {
            epoch: new,
            answer: SessionDescription::answer("v=0"),
        },
    );
    let a = m.handle(
        t,
        Input::Peer {
            epoch: new,
            state: PeerState::Connected,
        },
    );
    assert_eq!(
        summary(&a),
        "reconnected,start_media",
        "the new session goes live; `connected` is reported once per call"
    );
    let a = m.handle(t, Input::FirstMedia { epoch: new });
    assert_eq!(summary(&a), "first_media");
    // ICE of the new session wobbles and recovers: nothing to start again.
    m.handle(
        t,
        Input::Peer {
            epoch: new,
            state: PeerState::Disconnected,
        },
    );
    let a = m.handle(
        t,
        Input::Peer {
            epoch: new,
            state: PeerState::Connected,
        },
    );
    assert_eq!(summary(&a), "");
}

#[test]
fn a_viewer_whose_page_went_away_has_the_media_timeout_to_come_back() {
    let media = config().timeouts.media;
    // It does not come back: the call ends as for silence.
    let (mut m, t) = machine_in("in_call+");
    let a = m.handle(t, input_named("closed", &m));
    assert_eq!(summary(&a), "");
    assert_eq!(m.next_deadline(), Some(t + media));
    let a = m.handle(t + media, Input::Tick);
    assert_eq!(summary(&a), "error,send:bye,teardown");
    assert_eq!(state_name(&m), "ending:media_lost");
    // It comes back in time: the same call goes on with a new session.
    let (mut m, t) = machine_in("in_call+");
    m.handle(t, input_named("closed", &m));
    let back = t + media - Duration::from_millis(1);
    m.handle(back, Input::Signal(Message::NewPeer(Some(ROOM.into()))));
    m.handle(back, Input::Signal(Message::Invite(offer())));
    let new = m.epoch();
    m.handle(
        back,
        Input::AnswerReady {
            epoch: new,
            answer: SessionDescription::answer("v=0"),
        },
    );
    let a = m.handle(t + media, Input::Tick);
    assert_eq!(summary(&a), "", "the old session's deadline went with it");
    let a = m.handle(
        back,
        Input::Peer {
            epoch: new,
            state: PeerState::Connected,
        },
    );
    assert_eq!(summary(&a), "reconnected,start_media");
}

#[test]
fn coming_back_does_not_make_the_call_longer() {
    let (mut m, t) = machine_in("in_call+");
    let max_call = config().timeouts.max_call;
    // The viewer comes back just before the call's end.
    let later = t + max_call - Duration::from_secs(1);
    m.handle(later, Input::Signal(Message::NewPeer(Some(ROOM.into()))));
    m.handle(later, Input::Signal(Message::Invite(offer())));
    let new = m.epoch();
    m.handle(
        later,
        Input::AnswerReady {
            epoch: new,
            answer: SessionDescription::answer("v=0"),
        },
    );
    let a = m.handle(t + max_call + Duration::from_millis(1), Input::Tick);
    assert_eq!(summary(&a), "send:bye,teardown");
    assert_eq!(state_name(&m), "ending:max_duration");
}

#[test]
fn back_on_the_server_mid_call_the_doorbell_joins_its_room_again() {
    let (mut m, now) = machine_in("in_call+");
    // Up without having been down: nothing to do.
    assert_eq!(summary(&m.handle(now, Input::SignalingUp)), "");
    assert_eq!(summary(&m.handle(now, Input::SignalingDown)), "");
    assert_eq!(
        state_name(&m),
        "in_call+",
        "the call goes on without the server"
    );
    assert_eq!(summary(&m.handle(now, Input::SignalingUp)), "send:join");
    assert_eq!(summary(&m.handle(now, Input::SignalingUp)), "", "once");
    // The server's answer, whoever was first, changes nothing...
    for answer in [Message::Created(ROOM.into()), Message::Joined(ROOM.into())] {
        assert_eq!(summary(&m.handle(now, Input::Signal(answer))), "");
        assert_eq!(state_name(&m), "in_call+");
    }
    // ...and the viewer's hang-up reaches the doorbell again.
    let out = m.handle(now, Input::Signal(Message::Bye(Some(ROOM.into()))));
    assert_eq!(state_name(&m), "ending:viewer_left", "{}", summary(&out));
}

#[test]
fn renotify_policy_sends_the_link_again_while_waiting() {
    let t = Instant::now();
    let mut m = CallMachine::new(MachineConfig {
        press_during_call: PressDuringCall::Renotify,
        ..config()
    });
    m.handle(t, Input::SignalingUp);
    m.handle(t, Input::Press { room: ROOM.into() });
    assert_eq!(
        summary(&m.handle(t, Input::Press { room: "x".into() })),
        "busy"
    );
    m.handle(t, Input::Signal(Message::Created(ROOM.into())));
    let a = m.handle(t, Input::Press { room: "x".into() });
    assert_eq!(summary(&a), "busy,notify");
    assert_eq!(
        m.room(),
        Some(ROOM),
        "the pressed room name is not used during a call"
    );
}

#[test]
fn no_new_call_after_shutdown() {
    let (mut m, t) = machine_in("idle");
    m.handle(t, Input::Shutdown);
    assert_eq!(
        summary(&m.handle(t, Input::Press { room: ROOM.into() })),
        "ignored"
    );
    assert!(m.is_idle());
}

#[test]
fn created_for_someone_elses_room_is_not_ours() {
    let (mut m, t) = machine_in("joining");
    m.handle(t, Input::Signal(Message::Created("other".into())));
    assert_eq!(state_name(&m), "joining");
}

/// A deterministic pseudo-random walk through inputs: whatever happens, the
/// machine never panics, every ringing gets exactly one ended, and it can always
/// get back to idle.
#[test]
fn random_walks_keep_the_invariants() {
    let names: Vec<&str> = TABLE.iter().map(|(n, _)| *n).collect();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _walk in 0..300 {
        let mut t = Instant::now();
        let mut m = CallMachine::new(config());
        let (mut rings, mut ends) = (0, 0);
        let mut count = |a: &[Action]| {
            for a in a {
                if let Action::Emit(e) = a {
                    match e.kind {
                        // A ringing while a call is open is a press during
                        // a live view: the same call, now a ring.
                        EventKind::Ringing | EventKind::LiveStarted if rings == ends => rings += 1,
                        EventKind::Ended { .. } => ends += 1,
                        _ => {}
                    }
                }
            }
        };
        for _ in 0..60 {
            let name = names[(next() % names.len() as u64) as usize];
            t += Duration::from_secs(next() % 40);
            // Sometimes replay an input of an earlier epoch.
            let mut input = input_named(name, &m);
            if next() % 5 == 0 {
                input = match input {
                    Input::Peer { state, .. } => Input::Peer {
                        epoch: Epoch(0),
                        state,
                    },
                    other => other,
                };
            }
            let a = m.handle(t, input);
            count(&a);
        }
        // Drain: time passes, teardowns complete.
        for _ in 0..10 {
            t += Duration::from_secs(3600);
            let a = m.handle(t, Input::Tick);
            count(&a);
            let e = m.epoch();
            let a = m.handle(t, Input::TeardownDone { epoch: e });
            count(&a);
        }
        assert!(m.is_idle(), "stuck in {:?}", m.state());
        assert_eq!(rings, ends, "every ring ends exactly once");
    }
}

/// The original server relays `ice_candidate`; a page that trickles sends its
/// candidates after the offer (or, through a server that reorders, before it).
#[test]
fn trickled_candidates_reach_the_peer_of_the_current_offer() {
    let (mut m, t) = machine_in("waiting_offer");
    m.handle(t, Input::Signal(Message::IceCandidate(Some(candidate(1)))));
    m.handle(t, Input::Signal(Message::IceCandidate(None)));
    let a = m.handle(t, Input::Signal(Message::Invite(offer())));
    let epoch = m.epoch();
    assert!(
        matches!(&a[..], [Action::Answer { candidates, epoch: e, .. }] if candidates == &[candidate(1)] && *e == epoch),
        "early candidates go with the offer: {a:?}"
    );
    let a = m.handle(t, Input::Signal(Message::IceCandidate(Some(candidate(2)))));
    assert_eq!(
        a,
        [Action::AddCandidate {
            epoch,
            candidate: candidate(2)
        }]
    );
    // The viewer starts over: its new candidates belong to the new peer.
    m.handle(t, Input::Signal(Message::NewPeer(None)));
    let a = m.handle(t, Input::Signal(Message::Invite(offer())));
    assert!(
        matches!(&a[..], [Action::Answer { candidates, .. }] if candidates.is_empty()),
        "{a:?}"
    );
    let a = m.handle(t, Input::Signal(Message::IceCandidate(Some(candidate(3)))));
    assert!(
        matches!(&a[..], [Action::AddCandidate { epoch: e, .. }] if *e > epoch),
        "{a:?}"
    );
}

#[test]
fn candidates_before_the_offer_are_bounded() {
    let (mut m, t) = machine_in("waiting_viewer");
    for n in 0..40u8 {
        m.handle(t, Input::Signal(Message::IceCandidate(Some(candidate(n)))));
    }
    let a = m.handle(t, Input::Signal(Message::Invite(offer())));
    let kept = a.iter().find_map(|a| match a {
        Action::Answer { candidates, .. } => Some(candidates.len()),
        _ => None,
    });
    assert_eq!(kept, Some(MAX_EARLY_CANDIDATES));
}

/// Field report: a viewer that vanished ended the call 13.7-13.9 s later with
/// `call.media_timeout` at 10 s, because the timer only started once the
/// silence was noticed. It now counts from the last packet.
#[test]
fn media_timeout_counts_from_the_last_packet_not_from_when_the_stall_was_noticed() {
    let (mut m, t) = machine_in("in_call+");
    let e = m.epoch();
    let s = Duration::from_secs;
    let last = t + s(100);
    // Noticed 3 s after the last packet.
    m.handle(
        last + s(3),
        Input::MediaStalled {
            epoch: e,
            last_packet: last,
        },
    );
    assert_eq!(m.next_deadline(), Some(last + s(10)));
    // ICE notices later still: the earlier deadline stands.
    m.handle(
        last + s(5),
        Input::Peer {
            epoch: e,
            state: PeerState::Disconnected,
        },
    );
    assert_eq!(m.next_deadline(), Some(last + s(10)));
    let a = m.handle(last + s(10), Input::Tick);
    assert_eq!(summary(&a), "error,send:bye,teardown");
    assert_eq!(state_name(&m), "ending:media_lost");
}

#[test]
fn media_flowing_again_cancels_the_stall() {
    let (mut m, t) = machine_in("in_call+");
    let e = m.epoch();
    m.handle(
        t,
        Input::MediaStalled {
            epoch: e,
            last_packet: t,
        },
    );
    m.handle(t, Input::MediaFlowing { epoch: e });
    assert_eq!(m.next_deadline(), Some(t + Duration::from_secs(600)));
}

#[test]
fn a_look_tells_nobody_and_a_press_during_it_rings() {
    let t = Instant::now();
    let mut m = CallMachine::new(MachineConfig {
        timeouts: Timeouts {
            max_live: Duration::from_secs(90),
            ..Timeouts::default()
        },
        ..config()
    });
    m.handle(t, Input::SignalingUp);
    let a = m.handle(t, Input::Look { room: ROOM.into() });
    assert_eq!(events(&a), ["live_started"]);
    let a = m.handle(t, Input::Signal(Message::Created(ROOM.into())));
    assert_eq!(events(&a), ["room_created"]);
    assert!(
        !a.iter().any(|a| matches!(a, Action::Notify { .. })),
        "the link went to the one who asked: {a:?}"
    );
    m.handle(t, Input::Signal(Message::NewPeer(Some(ROOM.into()))));
    m.handle(t, Input::Signal(Message::Invite(offer())));
    let e = m.epoch();
    m.handle(
        t,
        Input::AnswerReady {
            epoch: e,
            answer: SessionDescription::answer("v=0\r\n"),
        },
    );
    // The visitor presses while the owner looks: a ring, every owner told,
    // the same call.
    let a = m.handle(
        t,
        Input::Press {
            room: "fresh".into(),
        },
    );
    assert_eq!(events(&a), ["ringing"]);
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Notify { room, .. } if room == ROOM)),
        "{a:?}"
    );
    assert_eq!(m.room(), Some(ROOM));
    // A second press is an ordinary press during a call.
    let a = m.handle(
        t,
        Input::Press {
            room: "fresh".into(),
        },
    );
    assert_eq!(events(&a), ["busy"]);
}

#[test]
fn a_look_stops_after_max_live() {
    let t = Instant::now();
    let s = Duration::from_secs;
    let mut m = CallMachine::new(MachineConfig {
        timeouts: Timeouts {
            max_live: s(90),
            max_call: s(600),
            ..Timeouts::default()
        },
        ..config()
    });
    m.handle(t, Input::SignalingUp);
    m.handle(t, Input::Look { room: ROOM.into() });
    m.handle(t, Input::Signal(Message::Created(ROOM.into())));
    m.handle(t, Input::Signal(Message::NewPeer(Some(ROOM.into()))));
    m.handle(t, Input::Signal(Message::Invite(offer())));
    let e = m.epoch();
    m.handle(
        t,
        Input::AnswerReady {
            epoch: e,
            answer: SessionDescription::answer("v=0\r\n"),
        },
    );
    m.handle(
        t,
        Input::Peer {
            epoch: e,
            state: PeerState::Connected,
        },
    );
    assert!(
        events(&m.handle(t + s(89), Input::Tick)).is_empty(),
        "{:?}",
        m.state()
    );
    m.handle(t + s(91), Input::Tick);
    assert_eq!(state_name(&m), "ending:max_duration");
    let a = m.handle(t + s(91), Input::TeardownDone { epoch: e });
    assert_eq!(events(&a), ["ended:max_duration"]);
}

fn device_ws_machine_with(max_viewers: usize) -> (CallMachine, Instant) {
    let t = Instant::now();
    let mut m = CallMachine::new(MachineConfig {
        protocol: ProtocolTraits::DEVICE_WS,
        link_template: "http://fleet.test/watch/door-1".into(),
        max_viewers,
        ..config()
    });
    m.handle(t, Input::SignalingUp);
    (m, t)
}

fn from(viewer: &str, message: Message) -> Input {
    Input::FromViewer {
        viewer: ViewerId(viewer.into()),
        message,
    }
}

#[test]
fn without_rooms_a_press_waits_for_a_viewer_at_once_and_answers_it_by_name_with_trickle() {
    let (mut m, t) = device_ws_machine_with(1);
    let a = m.handle(t, Input::Press { room: ROOM.into() });
    assert_eq!(summary(&a), "ringing,room_created,notify");
    assert!(
        a.iter().any(
            |a| matches!(a, Action::Notify { link, .. } if link == "http://fleet.test/watch/door-1")
        ),
        "{a:?}"
    );
    assert_eq!(state_name(&m), "waiting_viewer");
    // The connection drops and comes back: the link names the device, so
    // the ring goes on.
    assert_eq!(summary(&m.handle(t, Input::SignalingDown)), "");
    m.handle(t, Input::SignalingUp);
    assert_eq!(state_name(&m), "waiting_viewer");

    let a = m.handle(t, from("s1", Message::NewPeer(None)));
    assert_eq!(summary(&a), "viewer_joined");
    // Another viewer while this one's session is open: one at a time
    // (call.max_viewers = 1).
    assert_eq!(
        summary(&m.handle(t, from("s2", Message::NewPeer(None)))),
        "ignored"
    );
    assert_eq!(
        summary(&m.handle(t, from("s2", Message::Invite(offer())))),
        "ignored"
    );
    let a = m.handle(t, from("s1", Message::Invite(offer())));
    let Some(Action::Answer {
        gather_timeout,
        trickle,
        viewer,
        ..
    }) = a.first()
    else {
        panic!("{a:?}")
    };
    assert_eq!(*gather_timeout, Duration::ZERO);
    assert!(*trickle);
    assert_eq!(viewer.as_ref().map(|v| v.0.as_str()), Some("s1"));
    // Candidates gathered before the answer is out wait for it.
    let epoch = m.epoch();
    let local = |n: u8| Input::LocalCandidate {
        epoch,
        candidate: Some(candidate(n)),
    };
    assert_eq!(summary(&m.handle(t, local(1))), "");
    let a = m.handle(
        t,
        Input::AnswerReady {
            epoch,
            answer: SessionDescription::answer("v=0\r\n"),
        },
    );
    assert_eq!(
        summary(&a),
        "send_to:ok,send_to:ice_candidate,answered",
        "the answer first, then the candidate"
    );
    assert!(a
        .iter()
        .all(|a| !matches!(a, Action::SendTo { viewer, .. } if viewer.0 != "s1")));
    assert_eq!(summary(&m.handle(t, local(2))), "send_to:ice_candidate");
    let end = Input::LocalCandidate {
        epoch,
        candidate: None,
    };
    assert_eq!(summary(&m.handle(t, end)), "send_to:ice_candidate");
    // A stale epoch's candidate is not sent.
    let stale = Input::LocalCandidate {
        epoch: Epoch(0),
        candidate: Some(candidate(3)),
    };
    assert_eq!(summary(&m.handle(t, stale)), "ignored");
    // The viewer's candidates reach the peer.
    let a = m.handle(t, from("s1", Message::IceCandidate(Some(candidate(4)))));
    assert_eq!(summary(&a), "add_candidate");
    // Another viewer's watch ending is not this call's.
    assert_eq!(
        summary(&m.handle(t, from("s2", Message::Bye(None)))),
        "ignored"
    );
    // The viewer's watch ends: no `bye` to send, there is no room.
    let a = m.handle(t, from("s1", Message::Bye(None)));
    assert_eq!(summary(&a), "teardown");
    let a = m.handle(t, Input::TeardownDone { epoch: m.epoch() });
    assert_eq!(summary(&a), "ended:viewer_left");
}

#[test]
fn the_room_protocol_never_trickles_and_sends_to_the_room() {
    let (mut m, t) = machine_in("answering");
    let epoch = m.epoch();
    let local = Input::LocalCandidate {
        epoch,
        candidate: Some(candidate(1)),
    };
    assert_eq!(summary(&m.handle(t, local)), "ignored");
    let a = m.handle(
        t,
        Input::AnswerReady {
            epoch,
            answer: SessionDescription::answer("v=0\r\n"),
        },
    );
    assert_eq!(summary(&a), "send:ok,answered");
    // A named viewer's message has no call to go to in the room protocol
    // only if another viewer holds it; here the room's viewer is unnamed.
    let (mut m, t) = machine_in("waiting_offer");
    let a = m.handle(t, Input::Signal(Message::Invite(offer())));
    assert!(matches!(
        a.first(),
        Some(Action::Answer { trickle: false, viewer: None, gather_timeout, .. }) if *gather_timeout == Timeouts::default().ice_gather
    ));
}

#[test]
fn with_seed_004_the_doorbell_offers_to_the_viewer_who_arrives() {
    let t = Instant::now();
    let mut m = CallMachine::new(MachineConfig {
        protocol: ProtocolTraits::SSE,
        ..config()
    });
    m.handle(t, Input::SignalingUp);
    assert_eq!(
        summary(&m.handle(t, Input::Press { room: ROOM.into() })),
        "ringing,send:join"
    );
    m.handle(t, input_named("created", &m));
    let a = m.handle(t, from("peer-2", Message::NewPeer(None)));
    assert_eq!(summary(&a), "viewer_joined,offer");
    assert!(matches!(
        a.last(),
        Some(Action::Offer { viewer: Some(v), .. }) if v.0 == "peer-2"
    ));
    assert_eq!(state_name(&m), "answering");
    let epoch = m.epoch();
    let local = Input::LocalCandidate {
        epoch,
        candidate: Some(candidate(1)),
    };
    assert_eq!(
        summary(&m.handle(t, local)),
        "",
        "kept until the offer is out"
    );
    let a = m.handle(
        t,
        Input::OfferReady {
            epoch,
            offer: offer(),
        },
    );
    assert_eq!(summary(&a), "send_to:invite,send_to:ice_candidate");
    assert_eq!(state_name(&m), "in_call");
    // An answer from someone else is not this call's.
    let stray = from("peer-3", Message::Ok(SessionDescription::answer("v=0\r\n")));
    assert_eq!(summary(&m.handle(t, stray)), "ignored");
    let answer = from("peer-2", Message::Ok(SessionDescription::answer("v=0\r\n")));
    assert_eq!(
        summary(&m.handle(t, answer.clone())),
        "accept_answer,answered"
    );
    // A second answer has no offer to go with.
    assert_eq!(summary(&m.handle(t, answer)), "ignored");
    // Setting it failed: the call ends as an answer failure.
    let a = m.handle(
        t,
        Input::AnswerFailed {
            epoch,
            error: "bad answer".into(),
        },
    );
    assert_eq!(summary(&a), "error,send:bye,teardown");
}

#[test]
fn an_offer_the_viewer_never_answers_times_out() {
    let t = Instant::now();
    let mut m = CallMachine::new(MachineConfig {
        protocol: ProtocolTraits::SSE,
        ..config()
    });
    m.handle(t, Input::SignalingUp);
    m.handle(t, Input::Press { room: ROOM.into() });
    m.handle(t, input_named("created", &m));
    m.handle(t, from("peer-2", Message::NewPeer(None)));
    let epoch = m.epoch();
    m.handle(
        t,
        Input::OfferReady {
            epoch,
            offer: offer(),
        },
    );
    let due = m.next_deadline().unwrap();
    let to = Timeouts::default();
    assert_eq!(due - t, to.offer + to.media);
    let a = m.handle(due, Input::Tick);
    assert_eq!(summary(&a), "error,send:bye,teardown");
}

/// A device-ws call with viewer `s1` connected, and the epoch of its session.
fn device_ws_in_call(max_viewers: usize) -> (CallMachine, Instant, Epoch) {
    let (mut m, t) = device_ws_machine_with(max_viewers);
    m.handle(t, Input::Press { room: ROOM.into() });
    m.handle(t, from("s1", Message::NewPeer(None)));
    m.handle(t, from("s1", Message::Invite(offer())));
    let e1 = m.epoch();
    m.handle(
        t,
        Input::AnswerReady {
            epoch: e1,
            answer: SessionDescription::answer("v=0\r\n"),
        },
    );
    let a = m.handle(
        t,
        Input::Peer {
            epoch: e1,
            state: PeerState::Connected,
        },
    );
    assert_eq!(summary(&a), "connected,start_media");
    (m, t, e1)
}

/// Viewer `name` joins the call in `m` and connects; the epoch of its session.
fn another_viewer_connects(m: &mut CallMachine, t: Instant, name: &str) -> Epoch {
    assert_eq!(
        summary(&m.handle(t, from(name, Message::NewPeer(None)))),
        "viewer_joined"
    );
    let a = m.handle(t, from(name, Message::Invite(offer())));
    let Some(Action::Answer { epoch, viewer, .. }) = a.first() else {
        panic!("{a:?}")
    };
    assert_eq!(viewer.as_ref().map(|v| v.0.as_str()), Some(name));
    let epoch = *epoch;
    assert_ne!(epoch, m.epoch(), "a session of its own");
    assert!(m.awaits_sdp(epoch));
    let a = m.handle(
        t,
        Input::AnswerReady {
            epoch,
            answer: SessionDescription::answer("v=0\r\n"),
        },
    );
    assert!(
        matches!(&a[..], [Action::SendTo { viewer, message: Message::Ok(_) }] if viewer.0 == name),
        "{a:?}"
    );
    let a = m.handle(
        t,
        Input::Peer {
            epoch,
            state: PeerState::Connected,
        },
    );
    assert_eq!(a, [Action::StartMedia { epoch }]);
    epoch
}

#[test]
fn several_viewers_share_a_call_and_one_leaving_does_not_end_it() {
    let (mut m, t, e1) = device_ws_in_call(4);
    let e2 = another_viewer_connects(&mut m, t, "s2");
    let e3 = another_viewer_connects(&mut m, t, "s3");
    let e4 = another_viewer_connects(&mut m, t, "s4");
    assert_eq!(m.viewers(), 4);
    // A fifth is one too many (call.max_viewers = 4).
    assert_eq!(
        summary(&m.handle(t, from("s5", Message::NewPeer(None)))),
        "ignored"
    );
    // Each viewer's candidates go to its own peer, ours to it by name.
    let a = m.handle(t, from("s3", Message::IceCandidate(Some(candidate(1)))));
    assert_eq!(
        a,
        [Action::AddCandidate {
            epoch: e3,
            candidate: candidate(1)
        }]
    );
    let a = m.handle(
        t,
        Input::LocalCandidate {
            epoch: e2,
            candidate: None,
        },
    );
    assert!(
        matches!(&a[..], [Action::SendTo { viewer, .. }] if viewer.0 == "s2"),
        "{a:?}"
    );
    // s2 leaves: its session closes, the call goes on.
    let a = m.handle(t, from("s2", Message::Bye(None)));
    assert_eq!(summary(&a), "close_peer,viewer_left");
    assert_eq!(a[0], Action::ClosePeer { epoch: e2 });
    assert!(matches!(
        &a[1],
        Action::Emit(Event {
            kind: EventKind::ViewerLeft { viewers: 3 },
            ..
        })
    ));
    assert_eq!(state_name(&m), "in_call+");
    // Its late reports are stale now.
    let late = Input::Peer {
        epoch: e2,
        state: PeerState::Failed,
    };
    assert_eq!(summary(&m.handle(t, late)), "ignored");
    // s4's media stops: only s4 is dropped, `call.media_timeout` after its
    // last packet.
    let media = Timeouts::default().media;
    m.handle(
        t + Duration::from_secs(1),
        Input::MediaStalled {
            epoch: e4,
            last_packet: t,
        },
    );
    assert_eq!(m.next_deadline(), Some(t + media));
    let a = m.handle(t + media, Input::Tick);
    assert_eq!(summary(&a), "close_peer,error,viewer_left");
    assert_eq!(a[0], Action::ClosePeer { epoch: e4 });
    assert_eq!((state_name(&m), m.viewers()), ("in_call+".into(), 2));
    // The first viewer leaves: s3 takes its place and the call goes on.
    let a = m.handle(t + media, from("s1", Message::Bye(None)));
    assert_eq!(summary(&a), "close_peer,viewer_left");
    assert_eq!(a[0], Action::ClosePeer { epoch: e1 });
    assert_eq!(m.epoch(), e3);
    assert_eq!((state_name(&m), m.viewers()), ("in_call+".into(), 1));
    // The last one leaving ends the call.
    let a = m.handle(t + media, from("s3", Message::Bye(None)));
    assert_eq!(summary(&a), "teardown");
    let a = m.handle(t + media, Input::TeardownDone { epoch: e3 });
    assert_eq!(events(&a), ["ended:viewer_left"]);
    assert!(m.is_idle());
}

#[test]
fn another_viewer_that_never_offers_or_fails_is_dropped_alone() {
    let (mut m, t, e1) = device_ws_in_call(4);
    assert_eq!(
        summary(&m.handle(t, from("s2", Message::NewPeer(None)))),
        "viewer_joined"
    );
    let offer_timeout = Timeouts::default().offer;
    assert_eq!(m.next_deadline(), Some(t + offer_timeout));
    let a = m.handle(t + offer_timeout, Input::Tick);
    assert_eq!(summary(&a), "close_peer,error,viewer_left");
    assert_eq!((state_name(&m), m.epoch()), ("in_call+".into(), e1));
    // One whose answer fails.
    m.handle(t, from("s3", Message::NewPeer(None)));
    let a = m.handle(t, from("s3", Message::Invite(offer())));
    let Some(Action::Answer { epoch, .. }) = a.first() else {
        panic!("{a:?}")
    };
    let failed = Input::AnswerFailed {
        epoch: *epoch,
        error: "bad SDP".into(),
    };
    assert_eq!(
        summary(&m.handle(t, failed)),
        "close_peer,error,viewer_left"
    );
    // A reload of another viewer is a new session of its own.
    let e4 = another_viewer_connects(&mut m, t, "s4");
    let a = m.handle(t, from("s4", Message::Invite(offer())));
    let Some(Action::Answer { epoch: e5, .. }) = a.get(1) else {
        panic!("{a:?}")
    };
    assert_eq!(a[0], Action::ClosePeer { epoch: e4 });
    assert!(*e5 > e4);
    assert_eq!((state_name(&m), m.viewers()), ("in_call+".into(), 2));
    // Hanging up ends every session at once (the teardown closes them all).
    let a = m.handle(t, Input::Hangup);
    assert_eq!(summary(&a), "teardown");
    assert_eq!(m.viewers(), 0);
}

#[test]
fn with_seed_004_the_doorbell_offers_to_each_viewer() {
    let t = Instant::now();
    let mut m = CallMachine::new(MachineConfig {
        protocol: ProtocolTraits::SSE,
        ..config()
    });
    m.handle(t, Input::SignalingUp);
    m.handle(t, Input::Press { room: ROOM.into() });
    m.handle(t, Input::Signal(Message::Created(ROOM.into())));
    let a = m.handle(t, from("p1", Message::NewPeer(None)));
    assert_eq!(summary(&a), "viewer_joined,offer");
    let a = m.handle(t, from("p2", Message::NewPeer(None)));
    assert_eq!(summary(&a), "viewer_joined,offer");
    let Some(Action::Offer { epoch, viewer }) = a.get(1) else {
        panic!("{a:?}")
    };
    assert_eq!(viewer.as_ref().map(|v| v.0.as_str()), Some("p2"));
    let e2 = *epoch;
    let a = m.handle(
        t,
        Input::OfferReady {
            epoch: e2,
            offer: offer(),
        },
    );
    assert!(
        matches!(&a[..], [Action::SendTo { viewer, message: Message::Invite(_) }] if viewer.0 == "p2"),
        "{a:?}"
    );
    let a = m.handle(
        t,
        from("p2", Message::Ok(SessionDescription::answer("v=0\r\n"))),
    );
    assert!(
        matches!(&a[..], [Action::AcceptAnswer { epoch, .. }] if *epoch == e2),
        "{a:?}"
    );
}
