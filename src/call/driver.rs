//! The call loop: runs the [`CallMachine`] against the real world.
//!
//! It owns the machine and the current [`Session`], waits on every input
//! source at once (commands, signaling, session feedback, the machine's next
//! deadline, shutdown), feeds what arrives into the machine and carries out the
//! actions that come back. Anything slow (sending, notifying, answering,
//! tearing down) runs in a task that reports back as an input, so the loop never
//! blocks and a stuck part shows up as a timeout in the machine. Outgoing
//! signaling goes through one queue so messages keep their order.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::command::{Command, HangupReply, RingReply, Status};
use super::event::{CallEvent, Event, EventKind};
use super::machine::{Action, CallMachine, Epoch, Input, MachineConfig, NotifyFailed, State};
use super::session::{AnswerRequest, Answered, CallMedia, Session};
use crate::media::tap::{CallTap, MediaTap};
use crate::media::MediaOpener;
use crate::notify::{Notifier, NotifyError, Ring};
use crate::peer::PeerSettings;
use crate::signaling::protocol::{room_tag, IceCandidate, Message};
use crate::signaling::{random_room, Signaling, SignalingEvent, ViewerId};

/// Everything the call loop needs from outside.
pub struct Engine {
    pub machine: MachineConfig,
    pub signaling: Arc<dyn Signaling>,
    pub signaling_events: mpsc::Receiver<SignalingEvent>,
    pub media: Arc<dyn MediaOpener>,
    pub peer: PeerSettings,
    pub notifiers: Vec<Arc<dyn Notifier>>,
    pub commands: mpsc::Receiver<Command>,
    /// Every call event goes here (the event printer, notifiers, tests).
    pub events: broadcast::Sender<CallEvent>,
    /// A copy of every call's encoded media (a recorder), if anyone wants it.
    pub tap: Option<Arc<dyn MediaTap>>,
    /// The look key shared with `doorbell serve` (`signaling.look_key_file`):
    /// with it the doorbell says `doorbell_hello` after each connect, and the
    /// server's "Look now" button reaches it.
    pub look_key: Option<String>,
}

/// Trickled candidates waiting for the peer.
const CANDIDATE_QUEUE: usize = 64;

/// How long the notifiers get before the ring is reported as not notified.
const NOTIFY_LIMIT: Duration = Duration::from_secs(60);

/// A message on its way out: to a named viewer, or to the room.
type Outgoing = (Option<ViewerId>, Message);

type CallMediaCell = Arc<tokio::sync::OnceCell<Arc<CallMedia>>>;

struct Loop {
    machine: CallMachine,
    signaling: Arc<dyn Signaling>,
    signaling_out: mpsc::Sender<Outgoing>,
    media: Arc<dyn MediaOpener>,
    peer: PeerSettings,
    notifiers: Vec<Arc<dyn Notifier>>,
    events: broadcast::Sender<CallEvent>,
    tap: Option<Arc<dyn MediaTap>>,
    feedback: mpsc::Sender<Input>,
    /// The peer sessions of the call, one per viewer.
    sessions: Vec<Session>,
    /// The call's media, opened by whichever of its sessions comes first
    /// and shared by all.
    call_media: Option<CallMediaCell>,
    /// Sessions delivered by answer tasks: (epoch, ours is the offer,
    /// session with its SDP).
    answered: mpsc::Sender<(Epoch, bool, Answered)>,
    /// Where each viewer's trickled candidates go, by the epoch of its peer.
    candidates: Vec<(Epoch, mpsc::Sender<IceCandidate>)>,
    started: Instant,
    calls: u64,
    look_key: Option<String>,
}

impl Engine {
    /// Runs until `cancel` fires and any call in progress has been ended.
    pub async fn run(self, cancel: CancellationToken) {
        let Engine {
            machine,
            signaling,
            mut signaling_events,
            media,
            peer,
            notifiers,
            mut commands,
            events,
            tap,
            look_key,
        } = self;
        let (signaling_out, outgoing) = mpsc::channel::<Outgoing>(64);
        let (feedback, mut inputs) = mpsc::channel::<Input>(256);
        let (answered, mut sessions) = mpsc::channel(4);
        let sender = tokio::spawn(send_in_order(signaling.clone(), outgoing, feedback.clone()));
        let mut lp = Loop {
            machine: CallMachine::new(machine),
            signaling,
            signaling_out,
            media,
            peer,
            notifiers,
            events: events.clone(),
            tap,
            feedback,
            sessions: Vec::new(),
            call_media: None,
            answered,
            candidates: Vec::new(),
            started: Instant::now(),
            calls: 0,
            look_key,
        };
        {
            // Follow-ups for notifiers (answered, missed, ...).
            let notifiers = lp.notifiers.clone();
            let mut rx = events.subscribe();
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(e) => {
                            for n in &notifiers {
                                tokio::spawn(n.follow_up(e.clone()));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
        }
        let mut shutting_down = false;
        loop {
            let deadline = lp.machine.next_deadline().map(Instant::from_std);
            tokio::select! {
                _ = cancel.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    tracing::info!("shutting down");
                    lp.feed(Input::Shutdown);
                }
                Some(command) = commands.recv(), if !shutting_down => lp.command(command),
                Some(event) = signaling_events.recv() => match event {
                    SignalingEvent::Up => {
                        lp.feed(Input::SignalingUp);
                        lp.hello();
                    }
                    SignalingEvent::Message(Message::Look { request }) => lp.look(request),
                    SignalingEvent::Down => { lp.feed(Input::SignalingDown); }
                    SignalingEvent::Message(m) => {
                        tracing::debug!(message = %m, "signaling message");
                        lp.feed(Input::Signal(m));
                    }
                    SignalingEvent::FromViewer { viewer, message } => {
                        tracing::debug!(message = %message, %viewer, "signaling message");
                        lp.viewer_message(viewer, message);
                    }
                    SignalingEvent::Malformed(why) => {
                        tracing::warn!("ignored a malformed signaling message: {why}");
                    }
                    SignalingEvent::Refused(why) => lp.refused(why),
                },
                Some(input) = inputs.recv() => { lp.feed(input); }
                Some((epoch, offered, answered)) = sessions.recv() => lp.answered(epoch, offered, answered),
                _ = sleep_until(deadline) => { lp.feed(Input::Tick); }
            }
            if shutting_down && lp.machine.is_idle() {
                break;
            }
        }
        close_call(std::mem::take(&mut lp.sessions), lp.call_media.take()).await;
        // Let the last messages (the `bye` of a call cut by shutdown) leave
        // before the caller closes the connection.
        drop(lp);
        if tokio::time::timeout(Duration::from_secs(1), sender)
            .await
            .is_err()
        {
            tracing::warn!("the last signaling messages were not sent within 1 s");
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Sends queued messages one after the other, reporting failures.
async fn send_in_order(
    signaling: Arc<dyn Signaling>,
    mut outgoing: mpsc::Receiver<Outgoing>,
    feedback: mpsc::Sender<Input>,
) {
    while let Some((viewer, msg)) = outgoing.recv().await {
        let what = msg.to_string();
        let sent = match &viewer {
            Some(v) => signaling.send_to(v, msg).await,
            None => signaling.send(msg).await,
        };
        match sent {
            Ok(()) => tracing::debug!(message = %what, "sent"),
            Err(e) => {
                tracing::warn!(message = %what, "signaling send failed: {e}");
                let _ = feedback
                    .send(Input::SignalFailed {
                        what: format!("{what}: {e}"),
                    })
                    .await;
            }
        }
    }
}

impl Loop {
    fn session(&self, epoch: Epoch) -> Option<&Session> {
        self.sessions.iter().find(|s| s.epoch == epoch)
    }

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }

    fn feed(&mut self, input: Input) -> Vec<Action> {
        let before = self.machine.state().kind();
        let actions = self.machine.handle(self.now(), input);
        for action in &actions {
            self.act(action.clone());
        }
        let after = self.machine.state().kind();
        if after != before {
            self.signaling.call_state(after);
        }
        actions
    }

    /// A named viewer's message. In a protocol without rooms a viewer may
    /// come while nothing rings (the owner opened the device's page): that
    /// is a live view, started here so the machine has a call to put the
    /// viewer in.
    fn viewer_message(&mut self, viewer: ViewerId, message: Message) {
        let rooms = self.machine.config().protocol.server_rooms;
        if !rooms && self.machine.is_idle() && matches!(message, Message::NewPeer(_)) {
            tracing::info!(%viewer, "a viewer came without a ring: a live view");
            self.press(None, true);
        }
        self.feed(Input::FromViewer { viewer, message });
    }

    /// The server refuses this doorbell for good: say so, loudly, to the
    /// log and to every owner (the doorbell cannot ring until it is fixed).
    fn refused(&mut self, why: String) {
        tracing::error!("the signaling server refuses this doorbell: {why}");
        let text = format!(
            "⚠️ The doorbell cannot reach you: the signaling server refuses it ({why}). \
             Presses will fail until this is fixed and the doorbell restarted."
        );
        for n in self.notifiers.clone() {
            let text = text.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(NOTIFY_LIMIT, n.notice(text)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!("{e}"),
                    Err(_) => tracing::warn!(notifier = n.name(), "notice timed out"),
                }
            });
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Ring { reply } => self.press(reply, false),
            Command::Live { reply } => self.press(reply, true),
            Command::Hangup { reply } => {
                let active = !matches!(self.machine.state(), State::Idle | State::Ending { .. });
                self.feed(Input::Hangup);
                if let Some(r) = reply {
                    let _ = r.send(if active {
                        HangupReply::HangingUp
                    } else {
                        HangupReply::NoCall
                    });
                }
            }
            Command::Status { reply } => {
                let _ = reply.send(Status {
                    state: self.machine.state().kind(),
                    room: self.machine.room().map(str::to_string),
                    calls: self.calls,
                    signaling_up: self.machine.signaling_up(),
                    uptime_s: self.started.elapsed().as_secs(),
                });
            }
        }
    }

    /// Tells `doorbell serve` that this is the doorbell (with the look key).
    fn hello(&mut self) {
        if let Some(key) = self.look_key.clone() {
            self.act(Action::Send(Message::DoorbellHello { key }));
        }
    }

    /// The server asks for a live view for the owner ("Look now"): like
    /// `doorbell live`, with the outcome sent back to the server.
    fn look(&mut self, request: String) {
        if self.look_key.is_none() {
            return tracing::warn!(
                "the signaling server asked for a live view, but signaling.look_key_file \
                 is not set; ignored"
            );
        }
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        self.press(Some(tx), true);
        let reply = match rx.try_recv() {
            Ok(RingReply::Live { .. }) => match self.machine.room() {
                Some(room) => Message::LookStarted {
                    request,
                    room: room.to_string(),
                },
                None => Message::LookRefused {
                    request,
                    reason: "the live view ended at once".into(),
                },
            },
            Ok(other) => Message::LookRefused {
                request,
                reason: other.to_string(),
            },
            Err(_) => Message::LookRefused {
                request,
                reason: "no answer from the call loop".into(),
            },
        };
        self.act(Action::Send(reply));
    }

    /// A press (`live`: a live view): a fresh room, then the machine.
    fn press(&mut self, reply: Option<tokio::sync::oneshot::Sender<RingReply>>, live: bool) {
        let (room, actions) = match random_room() {
            Ok(room) => {
                // Live until its call ends: no log line may hold it.
                crate::redact::add(&room);
                let input = if live {
                    Input::Look { room: room.clone() }
                } else {
                    Input::Press { room: room.clone() }
                };
                let actions = self.feed(input);
                (room, actions)
            }
            Err(e) => {
                tracing::error!(
                    "the operating system's random source failed: {e}; cannot make a room"
                );
                if let Some(r) = reply {
                    let _ = r.send(RingReply::Failed {
                        why: format!("no random room name ({e})"),
                    });
                }
                return;
            }
        };
        let mut outcome = describe_press(&actions);
        let rang = outcome.is_ringing() && self.machine.room() == Some(room.as_str());
        if live && rang {
            outcome = RingReply::Live {
                link: self.machine.link(),
            };
        }
        match &outcome {
            RingReply::Ringing { room } => {
                tracing::info!("button pressed: ringing (room {})", room_tag(room))
            }
            RingReply::Live { .. } => {
                tracing::info!("live view asked for (room {})", room_tag(&room))
            }
            other if live => tracing::info!("live view asked for: {other}"),
            other => tracing::info!("button pressed: {other}"),
        }
        if !rang {
            // The name was not used (busy, failed at once).
            crate::redact::remove(&room);
        }
        if let Some(r) = reply {
            let _ = r.send(outcome);
        }
    }

    fn answered(&mut self, epoch: Epoch, offered: bool, Answered { session, sdp }: Answered) {
        if self.machine.awaits_sdp(epoch) {
            self.sessions.push(session);
            use crate::signaling::protocol::SessionDescription;
            self.feed(if offered {
                Input::OfferReady {
                    epoch,
                    offer: SessionDescription::offer(sdp),
                }
            } else {
                Input::AnswerReady {
                    epoch,
                    answer: SessionDescription::answer(sdp),
                }
            });
        } else {
            tracing::debug!(?epoch, "answer arrived after its call moved on; closing it");
            tokio::spawn(session.close());
        }
    }

    /// Builds the peer session of `epoch` in a task: the answer to
    /// `offer_sdp`, or our own offer when there is none. The session and
    /// its SDP come back through `answered`, a failure as `AnswerFailed`.
    fn start_session(
        &mut self,
        epoch: Epoch,
        offer_sdp: Option<String>,
        gather_cap: Duration,
        candidates: Vec<IceCandidate>,
        trickle: bool,
        viewer: Option<ViewerId>,
    ) {
        // Bounded like every queue here; a browser trickles a handful.
        let (candidate_tx, candidate_rx) = mpsc::channel(CANDIDATE_QUEUE);
        for c in candidates {
            let _ = candidate_tx.try_send(c);
        }
        self.candidates.retain(|(_, tx)| !tx.is_closed());
        self.candidates.push((epoch, candidate_tx));
        let call = self.calls;
        let opener = self.media.clone();
        let call_media = self.call_media.get_or_insert_default().clone();
        let mut peer = self.peer.clone();
        if let Some(servers) = viewer.and_then(|v| self.signaling.ice_servers(&v)) {
            // The session's own servers (with its TURN credentials) come
            // first; ours stay as a fallback. (`IceServer`'s Debug never
            // prints a credential.)
            peer.ice_servers.splice(0..0, servers);
        }
        let has_turn = peer.turn.is_some()
            || peer
                .ice_servers
                .iter()
                .any(|s| s.urls.iter().any(|u| u.starts_with("turn")));
        if peer.relay_only && !has_turn {
            tracing::warn!(
                "ice.relay_only, but this session has no TURN server: it cannot connect"
            );
        }
        let feedback = self.feedback.clone();
        let answered = self.answered.clone();
        let tap = self.tap.clone().map(|tap| CallTap { call, tap });
        // The machine bounds the whole answer; this bounds the task too.
        let limit = self.machine.config().timeouts.answer();
        let offering = offer_sdp.is_none();
        let what = if offering { "offer" } else { "answer" };
        tokio::spawn(async move {
            let work = async {
                let media = call_media
                    .get_or_try_init(|| CallMedia::open(opener, call, epoch, feedback.clone(), tap))
                    .await?
                    .clone();
                Session::answer(AnswerRequest {
                    epoch,
                    call,
                    offer_sdp,
                    gather_cap,
                    media,
                    peer,
                    candidates: candidate_rx,
                    feedback: feedback.clone(),
                    trickle,
                })
                .await
            };
            match tokio::time::timeout(limit, work).await {
                Ok(Ok(done)) => {
                    if let Err(mpsc::error::SendError((_, _, done))) =
                        answered.send((epoch, offering, done)).await
                    {
                        done.session.close().await;
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!("cannot make the {what}: {error}");
                    let error = error.to_string();
                    let _ = feedback.send(Input::AnswerFailed { epoch, error }).await;
                }
                Err(_) => {
                    let _ = feedback
                        .send(Input::AnswerFailed {
                            epoch,
                            error: format!("making the {what} took too long"),
                        })
                        .await;
                }
            }
        });
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Send(msg) => {
                if self.signaling_out.try_send((None, msg)).is_err() {
                    tracing::error!("signaling queue full; message dropped");
                }
            }
            Action::SendTo { viewer, message } => {
                if self
                    .signaling_out
                    .try_send((Some(viewer), message))
                    .is_err()
                {
                    tracing::error!("signaling queue full; message dropped");
                }
            }
            Action::Notify {
                epoch,
                call,
                room,
                link,
            } => {
                let notifiers = self.notifiers.clone();
                let feedback = self.feedback.clone();
                tokio::spawn(async move {
                    let ring = Ring { call, room, link };
                    let result = notify_all(&notifiers, ring).await;
                    let _ = feedback.send(Input::Notified { epoch, result }).await;
                });
            }
            Action::NotifyFailure { call, reason, .. } => {
                let notifiers = self.notifiers.clone();
                tokio::spawn(async move {
                    for n in notifiers {
                        match tokio::time::timeout(
                            NOTIFY_LIMIT,
                            n.ring_failed(call, reason.clone()),
                        )
                        .await
                        {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::warn!("{e}"),
                            Err(_) => {
                                tracing::warn!(notifier = n.name(), "failure notice timed out")
                            }
                        }
                    }
                });
            }
            Action::Answer {
                epoch,
                offer,
                gather_timeout,
                candidates,
                trickle,
                viewer,
            } => self.start_session(
                epoch,
                Some(offer.sdp),
                gather_timeout,
                candidates,
                trickle,
                viewer,
            ),
            Action::Offer { epoch, viewer } => {
                let trickle = self.machine.config().protocol.trickle;
                self.start_session(epoch, None, Duration::ZERO, Vec::new(), trickle, viewer)
            }
            Action::AcceptAnswer { epoch, answer } => match self.session(epoch) {
                Some(s) => {
                    let session_peer = s.accepting();
                    let feedback = self.feedback.clone();
                    tokio::spawn(async move {
                        if let Err(e) = session_peer.accept(&answer.sdp).await {
                            tracing::warn!("the viewer's answer cannot be used: {e}");
                            let error = e.to_string();
                            let _ = feedback.send(Input::AnswerFailed { epoch, error }).await;
                        }
                    });
                }
                _ => tracing::debug!(?epoch, "an answer for a peer that is gone"),
            },
            Action::AddCandidate { epoch, candidate } => {
                match self.candidates.iter().find(|(e, _)| *e == epoch) {
                    Some((_, tx)) => {
                        if tx.try_send(candidate).is_err() {
                            tracing::warn!("too many trickled candidates at once; one was dropped");
                        }
                    }
                    _ => tracing::debug!(?epoch, "candidate for a peer that is gone"),
                }
            }
            Action::StartMedia { epoch } => match self.session(epoch) {
                Some(s) => s.go_live(),
                None => tracing::debug!(?epoch, "no session to start"),
            },
            Action::ClosePeer { epoch } => {
                self.candidates.retain(|(e, _)| *e != epoch);
                if let Some(at) = self.sessions.iter().position(|s| s.epoch == epoch) {
                    tokio::spawn(self.sessions.swap_remove(at).close());
                }
            }
            Action::Teardown { epoch } => {
                self.candidates.clear();
                let sessions = std::mem::take(&mut self.sessions);
                let media = self.call_media.take();
                let feedback = self.feedback.clone();
                tokio::spawn(async move {
                    close_call(sessions, media).await;
                    let _ = feedback.send(Input::TeardownDone { epoch }).await;
                });
            }
            Action::Emit(event) => {
                if event.kind == EventKind::Ringing {
                    self.calls = event.call;
                }
                if matches!(event.kind, EventKind::Ended { .. }) {
                    crate::redact::remove(&event.room);
                }
                log_event(&event);
                let _ = self.events.send(CallEvent {
                    event,
                    ts: crate::media::unix_ms(),
                });
            }
            Action::Ignored { input, state } => {
                tracing::debug!(state, "ignored: {input}");
            }
        }
    }
}

/// Closes every viewer's session of a call, then the call's media.
async fn close_call(sessions: Vec<Session>, media: Option<CallMediaCell>) {
    futures_util::future::join_all(sessions.into_iter().map(Session::close)).await;
    if let Some(media) = media.as_ref().and_then(|m| m.get()) {
        media.close().await;
    }
}

/// One line per call event. The room appears only as its tag: logs outlive
/// the call (the journal keeps them) and the whole name answers the ring.
fn log_event(event: &Event) {
    let (call, room) = (event.call, room_tag(&event.room));
    match &event.kind {
        EventKind::Error { what } => tracing::warn!(call, %room, "{what}"),
        EventKind::Ended { reason } => {
            tracing::info!(call, %room, reason = reason.as_str(), "call ended")
        }
        EventKind::Notified { .. } => tracing::info!(call, %room, "owner notified"),
        kind => tracing::info!(call, %room, "{}", kind.name()),
    }
}

/// The short answer to a button press, from what the machine did with it.
fn describe_press(actions: &[Action]) -> RingReply {
    let mut room = None;
    for a in actions {
        match a {
            Action::Emit(e) => match &e.kind {
                EventKind::Busy => return RingReply::Busy,
                EventKind::Ringing | EventKind::LiveStarted => room = Some(e.room.clone()),
                EventKind::Error { what } => return RingReply::Failed { why: what.clone() },
                _ => {}
            },
            Action::Ignored { input, .. } => return RingReply::Ignored { why: input.clone() },
            _ => {}
        }
    }
    match room {
        Some(room) => RingReply::Ringing { room },
        None => RingReply::Ignored {
            why: "nothing happened".into(),
        },
    }
}

/// Runs every notifier at once; Ok as soon as one has delivered (or there
/// are none), Err once all failed. Notifiers still at work when one has
/// delivered finish in the background: a hanging webhook does not hold back
/// the `notified` event, whose link integrations wait for.
async fn notify_all(notifiers: &[Arc<dyn Notifier>], ring: Ring) -> Result<(), NotifyFailed> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    if notifiers.is_empty() {
        return Ok(());
    }
    let mut pending: FuturesUnordered<_> = notifiers
        .iter()
        .map(|n| {
            let name = n.name().to_string();
            let fut = n.ring(ring.clone());
            async move {
                match tokio::time::timeout(NOTIFY_LIMIT, fut).await {
                    Ok(r) => r,
                    Err(_) => Err(NotifyError {
                        notifier: name,
                        message: format!("no answer in {} s", NOTIFY_LIMIT.as_secs()),
                    }),
                }
            }
        })
        .collect();
    let mut errors = Vec::new();
    while let Some(result) = pending.next().await {
        match result {
            Ok(()) => {
                tokio::spawn(async move {
                    while let Some(result) = pending.next().await {
                        if let Err(e) = result {
                            tracing::warn!("notifier failed: {e}");
                        }
                    }
                });
                return Ok(());
            }
            Err(e) => {
                tracing::warn!("notifier failed: {e}");
                errors.push(e.to_string());
            }
        }
    }
    Err(NotifyFailed(errors.join("; ")))
}
