//! The rules with no sockets: connections wired together in memory, their
//! deliveries carried by hand, as a fleet of one instance would.

use super::*;
use crate::secret::Secret;

const KEY: &str = "a key of at least thirty-two characters";
const TS: &str = "2026-01-01T00:00:00.000Z";

fn key() -> TokenKey {
    TokenKey::new(Secret::new(KEY)).unwrap()
}

static KNOWN: std::sync::LazyLock<HashSet<String>> =
    std::sync::LazyLock::new(|| ["door-1", "door-2"].map(String::from).into());

fn at(conn: u64) -> Addr {
    Addr {
        instance: "a".into(),
        conn,
    }
}

/// A connection with its address, and the time the test passes in.
struct Peer {
    conn: Conn,
    addr: Addr,
}

fn cx<'a>(now: Instant, key: &'a TokenKey) -> Context<'a> {
    Context {
        now,
        unix: 1_000,
        ts: TS,
        key,
        devices: &KNOWN,
    }
}

fn msg(kind: &str, rid: Option<&str>, payload: Value) -> String {
    write(kind, rid, payload, TS)
}

fn sent(actions: &[Action]) -> Vec<Value> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(t) => Some(serde_json::from_str(t).unwrap()),
            _ => None,
        })
        .collect()
}

fn token(k: &TokenKey, user: &str, devices: Option<Vec<&str>>, exp: u64) -> String {
    k.mint(
        &ViewerClaims {
            user_id: user.into(),
            devices: devices.map(|d| d.into_iter().map(String::from).collect()),
            expires_unix: exp,
        },
        900,
    )
}

fn device(k: &TokenKey, now: Instant, conn: u64, id: &str) -> Peer {
    let mut c = Conn::new(Role::Device, Limits::default(), now);
    let out = c.on_text(&msg("hello", None, json!({ "device_id": id })), &cx(now, k));
    assert_eq!(out[0], Action::ClaimDevice(id.into()));
    assert_eq!(sent(&out)[0]["type"], "hello_ack");
    Peer {
        conn: c,
        addr: at(conn),
    }
}

fn viewer(k: &TokenKey, now: Instant, conn: u64, devices: Option<Vec<&str>>) -> Peer {
    let mut c = Conn::new(Role::Viewer, Limits::default(), now);
    let t = token(k, "42", devices, 2_000);
    let out = c.on_text(&msg("hello", None, json!({ "token": t })), &cx(now, k));
    assert_eq!(sent(&out)[0]["payload"]["user_id"], "42");
    Peer {
        conn: c,
        addr: at(conn),
    }
}

/// Carries every delivery of `actions` to the connection it is for; the
/// rest of the actions are returned, and what each side sent.
fn carry(actions: Vec<Action>, peers: &mut [&mut Peer]) -> Vec<(u64, Action)> {
    let mut out = Vec::new();
    let mut queue: std::collections::VecDeque<(u64, Action)> =
        actions.into_iter().map(|a| (0, a)).collect();
    while let Some((from, a)) = queue.pop_front() {
        match a {
            Action::Deliver(to, d) => {
                let p = peers
                    .iter_mut()
                    .find(|p| p.addr == to)
                    .expect("a delivery to a connection of the test");
                for next in p.conn.on_delivery(d, TS) {
                    queue.push_back((to.conn, next));
                }
            }
            other => out.push((from, other)),
        }
    }
    out
}

fn texts_to(conn: u64, actions: &[(u64, Action)]) -> Vec<Value> {
    actions
        .iter()
        .filter_map(|(c, a)| match a {
            Action::Send(t) if *c == conn => Some(serde_json::from_str(t).unwrap()),
            _ => None,
        })
        .collect()
}

/// A watch from `v` of `d`, up to the device's `watch_request`.
fn open_watch(k: &TokenKey, now: Instant, v: &mut Peer, d: &mut Peer, session: &str) {
    let out = v.conn.on_text(
        &msg(
            "watch_request",
            Some("req-1"),
            json!({ "device_id": "door-1" }),
        ),
        &cx(now, k),
    );
    assert_eq!(
        out,
        [Action::FindDevice {
            device: "door-1".into(),
            request_id: Some("req-1".into())
        }]
    );
    let turn = IceServer {
        urls: vec!["turn:127.0.0.1:3478".into()],
        username: "1:viewer".into(),
        credential: "c".into(),
    };
    let vaddr = v.addr.clone();
    let out = v.conn.watch_ready(
        &vaddr,
        session,
        "door-1",
        d.addr.clone(),
        Some("req-1"),
        std::slice::from_ref(&turn),
        &[],
        TS,
    );
    let ready = sent(&out);
    assert_eq!(ready[0]["type"], "watch_ready");
    assert_eq!(ready[0]["request_id"], "req-1");
    assert_eq!(ready[0]["payload"]["session_id"], session);
    assert_eq!(
        ready[0]["payload"]["ice_servers"][0],
        json!({"urls": ["turn:127.0.0.1:3478"], "username": "1:viewer", "credential": "c", "credentialType": "password"})
    );
    let rest = carry(out, &mut [d]);
    let to_device = texts_to(d.addr.conn, &rest);
    assert_eq!(to_device[0]["type"], "watch_request");
    assert_eq!(to_device[0]["payload"]["user_id"], "42");
    assert_eq!(to_device[0]["payload"]["session_id"], session);
}

#[test]
fn hello_goes_first_and_unknown_devices_and_bad_tokens_are_closed_with_1008() {
    let k = key();
    let now = Instant::now();
    let c = cx(now, &k);
    let mut d = Conn::new(Role::Device, Limits::default(), now);
    assert_eq!(
        d.on_text(&msg("heartbeat", None, json!({})), &c),
        [Action::Close(POLICY, "Unauthorized")]
    );
    let mut d = Conn::new(Role::Device, Limits::default(), now);
    assert_eq!(
        d.on_text("garbage", &c),
        [Action::Close(POLICY, "Unauthorized")]
    );
    let mut d = Conn::new(Role::Device, Limits::default(), now);
    assert_eq!(
        d.on_text(&msg("hello", None, json!({ "device_id": "stranger" })), &c),
        [Action::Close(POLICY, "Device not found")]
    );
    for t in [
        "nonsense".to_string(),
        token(&k, "42", None, 1_000), // expired at 1 000, now is 1 000
        token(
            &TokenKey::new(Secret::new("another key, thirty-two characters")).unwrap(),
            "42",
            None,
            5_000,
        ),
    ] {
        let mut v = Conn::new(Role::Viewer, Limits::default(), now);
        let out = v.on_text(&msg("hello", Some("h"), json!({ "token": t })), &c);
        assert_eq!(
            out.last(),
            Some(&Action::Close(POLICY, "Invalid token")),
            "{t}"
        );
        assert!(
            out.iter().all(|a| !format!("{a:?}").contains(&t)),
            "the token is never logged"
        );
    }
}

#[test]
fn a_watch_relays_offer_answer_and_candidates_and_ends_with_user_ended() {
    let k = key();
    let now = Instant::now();
    let mut d = device(&k, now, 1, "door-1");
    let mut v = viewer(&k, now, 2, None);
    open_watch(&k, now, &mut v, &mut d, "s-1");
    // The viewer offers; the device gets exactly the seed's shape.
    let out = v.conn.on_text(
        &msg(
            "signal_offer",
            None,
            json!({"session_id": "s-1", "sdp": {"type": "offer", "sdp": "v=0\r\n"}, "extra": 1}),
        ),
        &cx(now, &k),
    );
    let rest = carry(out, &mut [&mut d]);
    let got = texts_to(1, &rest);
    assert_eq!(got[0]["type"], "signal_offer");
    assert_eq!(
        got[0]["payload"],
        json!({"session_id": "s-1", "sdp": {"type": "offer", "sdp": "v=0\r\n"}})
    );
    // The answer and a candidate back, then the end of candidates.
    for (kind, payload) in [
        (
            "signal_answer",
            json!({"session_id": "s-1", "sdp": {"type": "answer", "sdp": "v=0\r\n"}}),
        ),
        (
            "signal_ice",
            json!({"session_id": "s-1", "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 5 typ host", "sdpMid": "0", "sdpMLineIndex": 0}}),
        ),
        (
            "signal_ice",
            json!({"session_id": "s-1", "candidate": null}),
        ),
    ] {
        let out = d
            .conn
            .on_text(&msg(kind, None, payload.clone()), &cx(now, &k));
        let rest = carry(out, &mut [&mut v]);
        let got = texts_to(2, &rest);
        assert_eq!(got[0]["type"], kind);
        assert_eq!(got[0]["payload"], payload);
    }
    // end_watch: the device hears user_ended; the record is forgotten.
    let out = v.conn.on_text(
        &msg("end_watch", None, json!({"session_id": "s-1"})),
        &cx(now, &k),
    );
    let rest = carry(out, &mut [&mut d]);
    assert!(rest.contains(&(0, Action::SessionEnded("s-1".into()))));
    let got = texts_to(1, &rest);
    assert_eq!(
        got[0]["payload"],
        json!({"session_id": "s-1", "reason": "user_ended"})
    );
    assert!(v.conn.sessions().is_empty() && d.conn.sessions().is_empty());
}

#[test]
fn nobody_relays_into_a_session_it_is_not_part_of() {
    let k = key();
    let now = Instant::now();
    let mut d1 = device(&k, now, 1, "door-1");
    let mut d2 = device(&k, now, 3, "door-2");
    let mut v = viewer(&k, now, 2, None);
    let mut intruder = viewer(&k, now, 4, None);
    open_watch(&k, now, &mut v, &mut d1, "s-1");
    let offer = msg(
        "signal_offer",
        Some("r-9"),
        json!({"session_id": "s-1", "sdp": {"type": "offer", "sdp": "v=0"}}),
    );
    let out = intruder.conn.on_text(&offer, &cx(now, &k));
    assert_eq!(sent(&out)[0]["payload"]["message"], "Session not found");
    assert_eq!(sent(&out)[0]["request_id"], "r-9");
    assert!(!out.iter().any(|a| matches!(a, Action::Deliver(..))));
    // Another device answering for a session of door-1.
    let answer = msg(
        "signal_answer",
        None,
        json!({"session_id": "s-1", "sdp": {"type": "answer", "sdp": "v=0"}}),
    );
    let out = d2.conn.on_text(&answer, &cx(now, &k));
    assert_eq!(sent(&out)[0]["payload"]["message"], "Session not found");
    // A delivery for a session the connection is not in is dropped.
    assert!(d2
        .conn
        .on_delivery(
            Delivery::Message {
                session: "s-1".into(),
                text: "x".into()
            },
            TS
        )
        .is_empty());
    // A viewer may not answer, a device may not offer or ask to watch.
    let out = v.conn.on_text(&answer, &cx(now, &k));
    assert_eq!(sent(&out)[0]["payload"]["message"], "Unauthorized");
    let out = d1.conn.on_text(&offer, &cx(now, &k));
    assert_eq!(sent(&out)[0]["payload"]["message"], "Unauthorized");
    // The wrong SDP type, or no candidate object: "Invalid message".
    let wrong = msg(
        "signal_offer",
        None,
        json!({"session_id": "s-1", "sdp": {"type": "answer", "sdp": "v=0"}}),
    );
    let out = v.conn.on_text(&wrong, &cx(now, &k));
    assert_eq!(sent(&out)[0]["payload"]["message"], "Invalid message");
    let out = v.conn.on_text(
        &msg(
            "signal_ice",
            None,
            json!({"session_id": "s-1", "candidate": 5}),
        ),
        &cx(now, &k),
    );
    assert_eq!(sent(&out)[0]["payload"]["message"], "Invalid message");
}

#[test]
fn watch_requests_are_checked_against_the_registry_the_token_and_the_limit() {
    let k = key();
    let now = Instant::now();
    let mut v = viewer(&k, now, 2, Some(vec!["door-2"]));
    let ask = |v: &mut Peer, device: &str| {
        let out = v.conn.on_text(
            &msg("watch_request", Some("q"), json!({ "device_id": device })),
            &cx(now, &k),
        );
        let s = sent(&out);
        assert!(s.iter().all(|m| m["request_id"] == "q"));
        (out.clone(), s)
    };
    assert_eq!(
        ask(&mut v, "stranger").1[0]["payload"]["message"],
        "Device not found"
    );
    assert_eq!(
        ask(&mut v, "door-1").1[0]["payload"]["message"],
        "Unauthorized"
    );
    assert!(matches!(
        ask(&mut v, "door-2").0[0],
        Action::FindDevice { .. }
    ));
    let out = v.conn.watch_refused(Some("q"), "Device is offline", TS);
    assert_eq!(
        sent(&out)[0],
        json!({"type": "error", "request_id": "q", "ts": TS, "payload": {"message": "Device is offline"}})
    );
    // Sessions per viewer.
    let mut w = viewer(&k, now, 5, None);
    let mut d = device(&k, now, 1, "door-1");
    for i in 0..Limits::default().sessions_per_viewer {
        open_watch(&k, now, &mut w, &mut d, &format!("s-{i}"));
    }
    let out = w.conn.on_text(
        &msg("watch_request", None, json!({ "device_id": "door-1" })),
        &cx(now, &k),
    );
    assert_eq!(sent(&out)[0]["payload"]["message"], "Too many sessions");
}

#[test]
fn a_gone_viewer_or_device_ends_its_sessions_for_the_other_side() {
    let k = key();
    let now = Instant::now();
    let mut d = device(&k, now, 1, "door-1");
    let mut v = viewer(&k, now, 2, None);
    open_watch(&k, now, &mut v, &mut d, "s-1");
    let rest = carry(v.conn.gone(TS), &mut [&mut d]);
    assert_eq!(
        texts_to(1, &rest)[0]["payload"],
        json!({"session_id": "s-1", "reason": "viewer_disconnected"})
    );
    assert!(rest.contains(&(0, Action::SessionEnded("s-1".into()))));

    let mut v = viewer(&k, now, 3, None);
    open_watch(&k, now, &mut v, &mut d, "s-2");
    let rest = carry(d.conn.gone(TS), &mut [&mut v]);
    assert_eq!(
        texts_to(3, &rest)[0]["payload"],
        json!({"session_id": "s-2", "reason": "device_disconnected"})
    );
    assert!(rest.contains(&(0, Action::ReleaseDevice("door-1".into()))));
    // A session whose device went without a word (its instance died).
    let mut d = device(&k, now, 4, "door-1");
    open_watch(&k, now, &mut v, &mut d, "s-3");
    let out = v.conn.lost_peer("s-3", "device_disconnected", TS);
    assert_eq!(sent(&out)[0]["type"], "watch_ended");
    assert!(v
        .conn
        .lost_peer("s-3", "device_disconnected", TS)
        .is_empty());
}

#[test]
fn a_newer_connection_of_the_device_replaces_the_older() {
    let k = key();
    let now = Instant::now();
    let mut d = device(&k, now, 1, "door-1");
    assert_eq!(
        d.conn.on_delivery(Delivery::Replaced, TS),
        [Action::Close(GOING_AWAY, "Replaced by a new connection")]
    );
    // A watch_request that reaches a connection no longer this device's.
    let mut v = Conn::new(Role::Device, Limits::default(), now);
    let out = v.on_delivery(
        Delivery::Opened {
            session: "s".into(),
            peer: at(9),
            device: "door-1".into(),
            text: "x".into(),
        },
        TS,
    );
    assert!(matches!(&out[0], Action::Deliver(a, Delivery::Ended { .. }) if *a == at(9)));
}

#[test]
fn heartbeats_are_answered_and_silence_closes() {
    let k = key();
    let now = Instant::now();
    let mut d = device(&k, now, 1, "door-1");
    let out = d
        .conn
        .on_text(&msg("heartbeat", Some("hb"), json!({})), &cx(now, &k));
    assert_eq!(sent(&out)[0]["type"], "heartbeat_ack");
    assert_eq!(sent(&out)[0]["request_id"], "hb");
    assert!(out.contains(&Action::DeviceAlive("door-1".into())));
    let silence = Limits::default().device_silence;
    assert!(d.conn.on_tick(now + silence / 2).is_empty());
    assert_eq!(
        d.conn.on_tick(now + silence),
        [Action::Close(GOING_AWAY, "Heartbeat timeout")]
    );
    let quiet = Conn::new(Role::Viewer, Limits::default(), now);
    assert_eq!(
        quiet.on_tick(now + HELLO_WAIT),
        [Action::Close(POLICY, "Unauthorized")]
    );
    // Presence is kept, and counts as life.
    let out = d.conn.on_text(
        &msg("device_presence", None, json!({"battery": 85})),
        &cx(now, &k),
    );
    assert_eq!(
        out[0],
        Action::Presence("door-1".into(), json!({"battery": 85}))
    );
}

#[test]
fn floods_and_oversized_messages_are_refused() {
    let k = key();
    let now = Instant::now();
    let limits = Limits {
        messages_per_minute: 5,
        ..Limits::default()
    };
    let mut d = Conn::new(Role::Device, limits, now);
    d.on_text(
        &msg("hello", None, json!({ "device_id": "door-1" })),
        &cx(now, &k),
    );
    let hb = msg("heartbeat", None, json!({}));
    for _ in 1..5 {
        assert_eq!(
            sent(&d.on_text(&hb, &cx(now, &k)))[0]["type"],
            "heartbeat_ack"
        );
    }
    let out = d.on_text(&hb, &cx(now, &k));
    assert_eq!(sent(&out)[0]["payload"]["message"], "Rate limit exceeded");
    assert!(matches!(out[0], Action::Refused(..)));
    for _ in 0..4 {
        d.on_text(&hb, &cx(now, &k));
    }
    assert_eq!(
        d.on_text(&hb, &cx(now, &k)).last(),
        Some(&Action::Close(POLICY, "Rate limit exceeded"))
    );
    // A minute later the window starts again.
    let later = now + Duration::from_secs(60);
    assert_eq!(
        sent(&d.on_text(&hb, &cx(later, &k)))[0]["type"],
        "heartbeat_ack"
    );
    let big = msg("device_presence", None, json!({ "x": "y".repeat(70_000) }));
    assert_eq!(
        sent(&d.on_text(&big, &cx(later, &k)))[0]["payload"]["message"],
        "Message too large"
    );
    let out = d.on_text(&msg("reboot", None, json!({})), &cx(later, &k));
    assert_eq!(
        sent(&out)[0]["payload"]["message"],
        "Unknown message type: reboot"
    );
}
