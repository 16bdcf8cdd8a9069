//! Timeouts on a paused tokio clock: the real call loop with in-memory
//! signaling, so minutes of waiting take no time and the instants are exact.

use futures_util::future::{BoxFuture, FutureExt};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use doorbell::call::command::Command;
use doorbell::call::driver::Engine;
use doorbell::call::event::CallEvent;
use doorbell::config::Config;
use doorbell::media::lease::SpeakerLease;
use doorbell::media::opener::ConfiguredMedia;
use doorbell::notify::{Notifier, NotifyError, Ring};
use doorbell::peer::PeerSettings;
use doorbell::signaling::memory::{MemoryPeer, MemorySignaling};
use doorbell::signaling::protocol::Message;

#[derive(Default, Clone)]
struct RecordingNotifier {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Notifier for RecordingNotifier {
    fn name(&self) -> &str {
        "recording"
    }
    fn ring(&self, ring: Ring) -> BoxFuture<'static, Result<(), NotifyError>> {
        self.seen
            .lock()
            .unwrap()
            .push(format!("ring {}", ring.link));
        async { Ok(()) }.boxed()
    }
    fn ring_failed(
        &self,
        _call: u64,
        reason: String,
    ) -> BoxFuture<'static, Result<(), NotifyError>> {
        self.seen.lock().unwrap().push(format!("failed {reason}"));
        async { Ok(()) }.boxed()
    }
}

struct Harness {
    peer: MemoryPeer,
    commands: mpsc::Sender<Command>,
    events: broadcast::Receiver<CallEvent>,
    notifier: RecordingNotifier,
    _cancel: CancellationToken,
}

fn harness(config: Config) -> Harness {
    let (sig_tx, sig_rx) = mpsc::channel(64);
    let (signaling, peer) = MemorySignaling::new(sig_tx);
    let (commands, command_rx) = mpsc::channel(8);
    let (events_tx, events) = broadcast::channel(64);
    let notifier = RecordingNotifier::default();
    let cancel = CancellationToken::new();
    let engine = Engine {
        machine: config.machine(),
        signaling: Arc::new(signaling),
        signaling_events: sig_rx,
        media: Arc::new(ConfiguredMedia::new(
            config.media_settings().unwrap(),
            SpeakerLease::new(),
        )),
        peer: PeerSettings::default(),
        notifiers: vec![Arc::new(notifier.clone())],
        commands: command_rx,
        events: events_tx,
        tap: None,
        look_key: None,
    };
    tokio::spawn(engine.run(cancel.clone()));
    Harness {
        peer,
        commands,
        events,
        notifier,
        _cancel: cancel,
    }
}

impl Harness {
    async fn ring(&self) -> String {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Ring { reply: Some(tx) })
            .await
            .unwrap();
        rx.await.unwrap().to_string()
    }

    async fn state(&self) -> &'static str {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Status { reply: tx })
            .await
            .unwrap();
        rx.await.unwrap().state.name()
    }

    async fn until(&mut self, name: &str) -> CallEvent {
        loop {
            let e = self.events.recv().await.unwrap();
            if e.name() == name {
                return e;
            }
        }
    }

    /// Lets the loop process what was delivered (no time passes when nothing is due).
    async fn settle(&self) {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn nobody_joins_bye_unanswered_idle_again() {
    let mut h = harness(Config::default());
    h.peer.set_up(true);
    h.settle().await;
    let reply = h.ring().await;
    let room = reply.strip_prefix("ringing ").expect("ringing").to_string();
    h.settle().await;
    assert_eq!(h.peer.sent(), vec![Message::Join(room.clone())]);
    h.peer.deliver(Message::Created(room.clone()));
    h.until("notified").await;
    let linked = Instant::now();
    let ended = h.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "unanswered");
    assert_eq!(
        linked.elapsed(),
        Duration::from_secs(60),
        "the configured viewer join timeout, to the millisecond"
    );
    assert_eq!(
        h.peer.sent().last(),
        Some(&Message::Bye(Some(room))),
        "bye goes out"
    );
    assert_eq!(h.state().await, "idle");
    // Ready for the next press.
    assert!(h.ring().await.starts_with("ringing "));
}

#[tokio::test(start_paused = true)]
async fn a_viewer_that_never_offers_ends_the_call_after_the_offer_timeout() {
    let mut config = Config::default();
    config.call.offer_timeout = Duration::from_secs(7);
    let mut h = harness(config);
    h.peer.set_up(true);
    h.settle().await;
    let room = h.ring().await.strip_prefix("ringing ").unwrap().to_string();
    h.peer.deliver(Message::Created(room.clone()));
    h.until("notified").await;
    h.peer.deliver(Message::NewPeer(Some(room.clone())));
    h.until("viewer_joined").await;
    let joined = Instant::now();
    let ended = h.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "no_offer");
    assert_eq!(joined.elapsed(), Duration::from_secs(7));
    assert_eq!(h.state().await, "idle");
}

#[tokio::test(start_paused = true)]
async fn a_server_that_never_answers_join_fails_the_ring_after_the_signaling_timeout() {
    let mut h = harness(Config::default());
    h.peer.set_up(true);
    h.settle().await;
    let start = Instant::now();
    h.ring().await;
    let error = h.until("error").await;
    assert!(error.to_json()["what"]
        .as_str()
        .unwrap()
        .contains("did not answer join"));
    let ended = h.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "signaling_timeout");
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert!(matches!(h.peer.sent().last(), Some(Message::Bye(_))));
}

#[tokio::test(start_paused = true)]
async fn a_ring_while_the_server_is_unreachable_fails_at_once_and_tells_the_owner() {
    let mut h = harness(Config::default());
    let start = Instant::now();
    let reply = h.ring().await;
    assert!(
        reply.starts_with("failed:") && reply.contains("unreachable"),
        "{reply}"
    );
    let ended = h.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "signaling_unavailable");
    assert_eq!(start.elapsed(), Duration::ZERO, "no waiting at all");
    h.settle().await;
    let seen = h.notifier.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].starts_with("failed ") && seen[0].contains("unreachable"),
        "{seen:?}"
    );
    assert!(h.peer.sent().is_empty());
}

#[tokio::test(start_paused = true)]
async fn malformed_and_unexpected_messages_change_nothing() {
    let mut h = harness(Config::default());
    h.peer.set_up(true);
    h.settle().await;
    // An invite, an ok and a bye while idle: a confused peer.
    h.peer.deliver(Message::Ok(
        doorbell::signaling::protocol::SessionDescription::answer("v=0"),
    ));
    h.peer.deliver(Message::Bye(Some("nope".into())));
    h.settle().await;
    assert_eq!(h.state().await, "idle");
    let room = h.ring().await.strip_prefix("ringing ").unwrap().to_string();
    // `joined` in answer to our join: someone owns the name; give it up.
    h.peer.deliver(Message::Joined(room.clone()));
    let ended = h.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "room_collision");
    assert_eq!(h.peer.sent().last(), Some(&Message::Bye(Some(room))));
    assert_eq!(h.state().await, "idle");
}

/// The signaling seam carries viewers by name (protocols with a session per
/// viewer): a named viewer's messages drive the call like the room's.
#[tokio::test(start_paused = true)]
async fn a_named_viewers_messages_drive_the_call() {
    let mut config = Config::default();
    config.call.offer_timeout = Duration::from_secs(7);
    let mut h = harness(config);
    h.peer.set_up(true);
    h.settle().await;
    let room = h.ring().await.strip_prefix("ringing ").unwrap().to_string();
    h.peer.deliver(Message::Created(room.clone()));
    h.until("notified").await;
    h.peer.deliver_from("viewer-1", Message::NewPeer(None));
    h.until("viewer_joined").await;
    let joined = Instant::now();
    let ended = h.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "no_offer");
    assert_eq!(joined.elapsed(), Duration::from_secs(7));
}
