//! The call state machine: what the doorbell decides, without doing any of it.
//!
//! Sans-IO in the str0m sense: inputs go in together with the current time,
//! actions come out, and [`CallMachine::next_deadline`] says when to come back
//! with [`Input::Tick`]. It spawns nothing, reads no clock, draws no random
//! numbers (the fresh room name arrives inside [`Input::Press`]) and opens
//! nothing. The driver (`call::driver`) carries out the actions and feeds the
//! outcomes back in. Every state × input pair is covered by the tables in the
//! tests below.
//!
//! ```text
//!   Idle --press--> Joining --created--> WaitingViewer --new_peer--> WaitingOffer
//!                                                  \--invite--.          |
//!                                                              v       invite
//!                    Idle <--teardown done-- Ending <--...-- Answering <-'
//!                                               ^                |answer ready (send ok)
//!                                               '--bye/timeout-- InCall
//! ```
//!
//! Invariants the tests pin down: every `ringing` event is followed by exactly
//! one `ended` event; only one call exists at a time; inputs that belong to an
//! earlier peer session (a late peer-state change, an answer that arrives after
//! a timeout) are recognised by their [`Epoch`] and ignored.

use std::time::{Duration, Instant};

use crate::call::command::StateKind;
use crate::call::event::{EndReason, Event, EventKind};
use crate::call::peer_state::PeerState;
use crate::signaling::protocol::{room_tag, IceCandidate, Message, SessionDescription};
use crate::signaling::ViewerId;

mod interface;
pub use interface::{
    Action, Epoch, Input, MachineConfig, NotifyFailed, PressDuringCall, ProtocolTraits, Timeouts,
};

/// The states of a call.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Idle,
    /// `join` sent, waiting for `created`.
    Joining,
    /// Room created, owner notified, waiting for `new_peer`.
    WaitingViewer,
    /// The viewer is in the room; waiting for its offer.
    WaitingOffer,
    /// Building the answer (peer, media warm-up, ICE gathering).
    Answering,
    /// Answer sent; `connected` once the transport is up.
    InCall {
        connected: bool,
    },
    /// Tearing down; back to Idle once the driver is done.
    Ending {
        reason: EndReason,
    },
}

impl State {
    pub fn kind(&self) -> StateKind {
        match self {
            State::Idle => StateKind::Idle,
            State::Joining => StateKind::Joining,
            State::WaitingViewer => StateKind::WaitingViewer,
            State::WaitingOffer => StateKind::WaitingOffer,
            State::Answering => StateKind::Answering,
            State::InCall { .. } => StateKind::InCall,
            State::Ending { .. } => StateKind::Ending,
        }
    }

    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Waiting for the state's next step (created, new_peer, invite, answer, connected).
    Step,
    /// Media silent or disconnected.
    MediaLoss,
    /// Maximum call length.
    MaxCall,
}

/// Data of the ring in progress.
#[derive(Debug, Clone)]
struct Call {
    number: u64,
    room: String,
    first_media_seen: bool,
    connected_once: bool,
    step_deadline: Option<Instant>,
    media_loss_deadline: Option<Instant>,
    max_call_deadline: Option<Instant>,
    /// Candidates that came before the offer (a server may reorder, a page
    /// may trickle early); handed over with the offer.
    early_candidates: Vec<IceCandidate>,
    /// The signaling connection was lost during the call: its room is to
    /// be joined again once the connection is back.
    rejoin_room: bool,
    /// A live view (no ring): nobody is notified, `max_live` applies.
    live: bool,
    /// The viewer of the peer session, in a protocol that names viewers
    /// (none: the room's only other member).
    viewer: Option<ViewerId>,
    /// Our candidates gathered before the answer went out (trickle): they
    /// follow it.
    local_candidates: Vec<Option<IceCandidate>>,
    /// The peer session's offer is ours and the viewer's answer is awaited.
    awaiting_answer: bool,
    /// The epoch of the call's first session: media errors of the call
    /// (its devices are shared by all its sessions) carry it or a later one.
    first_epoch: Epoch,
    /// The other viewers' sessions (protocols with sessions per viewer).
    others: Vec<Other>,
}

/// Where a viewer's peer session is (the first viewer's is the machine's
/// [`State`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    WaitingOffer,
    Answering,
    InCall { connected: bool },
}

/// A viewer beside the call's first one: its own peer session, on the
/// call's shared media. Whatever goes wrong with it ends its session, not
/// the call.
#[derive(Debug, Clone)]
struct Other {
    viewer: ViewerId,
    epoch: Epoch,
    phase: Phase,
    /// The phase's next step is due (offer, answer, connected), or its
    /// media came back (after a stall or a disconnect).
    deadline: Option<Instant>,
    early_candidates: Vec<IceCandidate>,
    local_candidates: Vec<Option<IceCandidate>>,
    awaiting_answer: bool,
}

/// Most candidates kept from before an offer (a browser gathers a handful),
/// and of ours before the answer is out.
const MAX_EARLY_CANDIDATES: usize = 32;

/// The machine. One per daemon; one call at a time.
#[derive(Debug)]
pub struct CallMachine {
    config: MachineConfig,
    state: State,
    call: Option<Call>,
    epoch: Epoch,
    /// The last epoch handed out (sessions of other viewers take them too).
    epochs: u64,
    calls: u64,
    signaling_up: bool,
    shutting_down: bool,
}

/// Builds the viewer link from a template such as `https://host/?room={room}`.
pub fn viewer_link(template: &str, room: &str) -> String {
    template.replace("{room}", room)
}

impl CallMachine {
    pub fn new(config: MachineConfig) -> Self {
        Self {
            config,
            state: State::Idle,
            call: None,
            epoch: Epoch(0),
            epochs: 0,
            calls: 0,
            signaling_up: false,
            shutting_down: false,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn is_idle(&self) -> bool {
        self.state == State::Idle
    }

    /// The room of the call in progress.
    pub fn room(&self) -> Option<&str> {
        self.call.as_ref().map(|c| c.room.as_str())
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    pub fn signaling_up(&self) -> bool {
        self.signaling_up
    }

    pub fn config(&self) -> &MachineConfig {
        &self.config
    }

    /// Whether the peer session of `epoch` waits for its SDP (an answer or
    /// our offer being made): the call's first viewer's, or another's.
    pub fn awaits_sdp(&self, epoch: Epoch) -> bool {
        (self.current(epoch) && self.state == State::Answering)
            || self
                .other_at(epoch)
                .is_some_and(|i| self.others()[i].phase == Phase::Answering)
    }

    /// How many viewers have a peer session in the call.
    pub fn viewers(&self) -> usize {
        match (&self.state, &self.call) {
            (State::WaitingOffer | State::Answering | State::InCall { .. }, Some(c)) => {
                1 + c.others.len()
            }
            _ => 0,
        }
    }

    /// When the driver must call back with [`Input::Tick`] at the latest.
    pub fn next_deadline(&self) -> Option<Instant> {
        let c = self.call.as_ref()?;
        [c.step_deadline, c.media_loss_deadline, c.max_call_deadline]
            .into_iter()
            .chain(c.others.iter().map(|o| o.deadline))
            .flatten()
            .min()
    }

    fn fresh_epoch(&mut self) -> Epoch {
        next_epoch(&mut self.epochs)
    }

    fn others(&self) -> &[Other] {
        self.call.as_ref().map_or(&[], |c| c.others.as_slice())
    }

    fn other_at(&self, epoch: Epoch) -> Option<usize> {
        self.others().iter().position(|o| o.epoch == epoch)
    }

    /// Feeds one input; returns what to do, in order.
    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(i) = session_epoch(&input).and_then(|e| self.other_at(e)) {
            self.on_other_input(now, i, input, &mut out);
            return out;
        }
        match input {
            Input::Tick => self.expire(now, &mut out),
            Input::SignalingUp => {
                self.signaling_up = true;
                self.on_signaling_up(&mut out);
            }
            Input::SignalingDown => {
                self.signaling_up = false;
                self.on_signaling_down(now, &mut out);
            }
            Input::Press { room } => self.on_press(now, room, false, &mut out),
            Input::Look { room } => self.on_press(now, room, true, &mut out),
            Input::Hangup => match self.state {
                State::Idle | State::Ending { .. } => self.ignore("hangup", &mut out),
                _ => self.end(now, EndReason::Hangup, &mut out),
            },
            Input::Shutdown => {
                self.shutting_down = true;
                match self.state {
                    State::Idle | State::Ending { .. } => {}
                    _ => self.end(now, EndReason::Shutdown, &mut out),
                }
            }
            Input::Signal(msg) => self.on_signal(now, msg, &mut out),
            Input::FromViewer { viewer, message } => {
                self.on_viewer_signal(now, viewer, message, &mut out)
            }
            Input::LocalCandidate { epoch, candidate } => {
                if self.current(epoch) && self.config.protocol.trickle {
                    self.on_local_candidate(candidate, &mut out);
                } else {
                    self.ignore("stale or unwanted local candidate", &mut out);
                }
            }
            Input::SignalFailed { what } => self.on_signal_failed(now, what, &mut out),
            Input::Notified { epoch, result } => {
                if self.current(epoch) {
                    self.on_notified(result, &mut out);
                } else {
                    self.ignore("stale notify result", &mut out);
                }
            }
            Input::AnswerReady { epoch, answer } => {
                if self.current(epoch) && self.state == State::Answering {
                    self.on_answer_ready(now, answer, &mut out);
                } else {
                    self.ignore("stale answer", &mut out);
                }
            }
            Input::OfferReady { epoch, offer } => {
                if self.current(epoch) && self.state == State::Answering {
                    self.on_offer_ready(now, offer, &mut out);
                } else {
                    self.ignore("stale offer", &mut out);
                }
            }
            Input::AnswerFailed { epoch, error } => {
                // Answering, or setting the viewer's answer to our offer.
                let ours = self.state == State::Answering
                    || (matches!(self.state, State::InCall { .. }) && self.config.protocol.offers);
                if self.current(epoch) && ours {
                    self.emit(
                        EventKind::Error {
                            what: format!("answer failed: {error}"),
                        },
                        &mut out,
                    );
                    self.session_over(now, EndReason::AnswerFailed, &mut out);
                } else {
                    self.ignore("stale answer failure", &mut out);
                }
            }
            Input::Peer { epoch, state } => {
                if self.current(epoch) && matches!(self.state, State::InCall { .. }) {
                    self.on_peer(now, state, &mut out);
                } else {
                    self.ignore("stale peer state", &mut out);
                }
            }
            Input::MediaStalled { epoch, last_packet } => {
                if self.current(epoch) && self.state == (State::InCall { connected: true }) {
                    self.on_media_stalled(last_packet);
                } else {
                    self.ignore("stale media stall", &mut out);
                }
            }
            Input::MediaFlowing { epoch } => {
                if self.current(epoch) && self.state == (State::InCall { connected: true }) {
                    if let Some(c) = self.call.as_mut() {
                        c.media_loss_deadline = None;
                    }
                } else {
                    self.ignore("stale media flow", &mut out);
                }
            }
            Input::FirstMedia { epoch } => {
                let fresh = self.current(epoch)
                    && matches!(self.state, State::InCall { .. })
                    && self.call.as_ref().is_some_and(|c| !c.first_media_seen);
                if fresh {
                    if let Some(c) = self.call.as_mut() {
                        c.first_media_seen = true;
                    }
                    self.emit(EventKind::FirstMedia, &mut out);
                }
            }
            Input::MediaError { epoch, what } => {
                // The devices are the call's, opened by its first session.
                if self.call.as_ref().is_some_and(|c| epoch >= c.first_epoch) {
                    self.emit(EventKind::Error { what }, &mut out);
                } else {
                    self.ignore("stale media error", &mut out);
                }
            }
            Input::TeardownDone { epoch } => {
                if self.current(epoch) && matches!(self.state, State::Ending { .. }) {
                    self.finish(&mut out);
                } else {
                    self.ignore("stale teardown", &mut out);
                }
            }
        }
        out
    }

    fn current(&self, epoch: Epoch) -> bool {
        self.call.is_some() && epoch == self.epoch
    }

    fn ignore(&self, input: impl Into<String>, out: &mut Vec<Action>) {
        out.push(Action::Ignored {
            input: input.into(),
            state: self.state.name(),
        });
    }

    fn emit(&self, kind: EventKind, out: &mut Vec<Action>) {
        if let Some(c) = &self.call {
            out.push(Action::Emit(Event {
                call: c.number,
                room: c.room.clone(),
                kind,
            }));
        }
    }

    fn set_step(&mut self, now: Instant, after: Option<Duration>) {
        if let Some(c) = self.call.as_mut() {
            c.step_deadline = after.map(|d| now + d);
        }
    }

    /// Tells the owners: the current call's room and link.
    fn notify(&self, out: &mut Vec<Action>) {
        if let Some(c) = &self.call {
            out.push(Action::Notify {
                epoch: self.epoch,
                call: c.number,
                room: c.room.clone(),
                link: self.link(),
            });
        }
    }

    /// The viewer link of the current call's room.
    pub fn link(&self) -> String {
        viewer_link(&self.config.link_template, self.room().unwrap_or_default())
    }

    fn on_press(&mut self, now: Instant, room: String, live: bool, out: &mut Vec<Action>) {
        if self.shutting_down {
            self.ignore("press while shutting down", out);
            return;
        }
        let looking = self.call.as_ref().is_some_and(|c| c.live);
        if !live && looking && !matches!(self.state, State::Ending { .. }) {
            // The visitor pressed while the owner was looking: now it is a
            // ring (the chime, every owner told), and the call goes on.
            let c = self.call.as_mut().expect("looking has a call");
            c.live = false;
            self.emit(EventKind::Ringing, out);
            if self.state != State::Joining {
                self.notify(out);
            }
            return;
        }
        if self.state != State::Idle {
            self.emit(EventKind::Busy, out);
            let renotify = self.config.press_during_call == PressDuringCall::Renotify
                && matches!(self.state, State::WaitingViewer | State::WaitingOffer);
            if renotify {
                self.notify(out);
            }
            return;
        }
        self.calls += 1;
        self.epoch = self.fresh_epoch();
        self.call = Some(Call {
            number: self.calls,
            room,
            first_media_seen: false,
            connected_once: false,
            step_deadline: None,
            media_loss_deadline: None,
            max_call_deadline: None,
            early_candidates: Vec::new(),
            rejoin_room: false,
            live,
            viewer: None,
            local_candidates: Vec::new(),
            awaiting_answer: false,
            first_epoch: self.epoch,
            others: Vec::new(),
        });
        self.emit(
            if live {
                EventKind::LiveStarted
            } else {
                EventKind::Ringing
            },
            out,
        );
        if !self.signaling_up {
            let reason = "the signaling server is unreachable".to_string();
            self.emit(
                EventKind::Error {
                    what: reason.clone(),
                },
                out,
            );
            let c = self.call.as_ref().expect("call was just created");
            if !live {
                out.push(Action::NotifyFailure {
                    call: c.number,
                    room: c.room.clone(),
                    reason,
                });
            }
            self.emit(
                EventKind::Ended {
                    reason: EndReason::SignalingUnavailable,
                },
                out,
            );
            self.call = None;
            return;
        }
        if !self.config.protocol.server_rooms {
            // Nothing to join: the link names this device, which the
            // server reaches while we are connected.
            self.room_ready(now, out);
            return;
        }
        let room = self.room().expect("call was just created").to_string();
        out.push(Action::Send(Message::Join(room)));
        self.state = State::Joining;
        self.set_step(now, Some(self.config.timeouts.signaling));
    }

    /// The call's room exists: tell the owners (unless it is a live view,
    /// whose link went to the one who asked) and wait for a viewer.
    fn room_ready(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.emit(EventKind::RoomCreated, out);
        if !self.call.as_ref().expect("a room belongs to a call").live {
            self.notify(out);
        }
        self.state = State::WaitingViewer;
        self.set_step(now, Some(self.config.timeouts.viewer_join));
    }

    /// A message from a named viewer. Its session is the call's if none is
    /// open yet; a later viewer gets a session beside it (up to
    /// `max_viewers`), on the call's shared media.
    fn on_viewer_signal(
        &mut self,
        now: Instant,
        viewer: ViewerId,
        message: Message,
        out: &mut Vec<Action>,
    ) {
        let Some(c) = self.call.as_mut() else {
            return self.ignore(format!("{message} from viewer {viewer} (no call)"), out);
        };
        if matches!(self.state, State::Joining | State::Ending { .. }) {
            return self.ignore(format!("{message} from viewer {viewer}"), out);
        }
        let arrives = matches!(message, Message::NewPeer(_) | Message::Invite(_));
        match &c.viewer {
            Some(v) if *v == viewer => {}
            None if arrives => c.viewer = Some(viewer),
            Some(_) => {
                if let Some(i) = c.others.iter().position(|o| o.viewer == viewer) {
                    return self.on_other_signal(now, i, message, out);
                }
                if !arrives {
                    return self.ignore(
                        format!("{message} from viewer {viewer} (not in this call)"),
                        out,
                    );
                }
                if 1 + c.others.len() >= self.config.max_viewers {
                    return self.ignore(
                        format!(
                            "viewer {viewer} (the call has its {} viewers: call.max_viewers)",
                            self.config.max_viewers
                        ),
                        out,
                    );
                }
                let epoch = self.fresh_epoch();
                let c = self.call.as_mut().expect("checked above");
                c.others.push(Other {
                    viewer,
                    epoch,
                    phase: Phase::WaitingOffer,
                    deadline: Some(now + self.config.timeouts.offer),
                    early_candidates: Vec::new(),
                    local_candidates: Vec::new(),
                    awaiting_answer: false,
                });
                let i = c.others.len() - 1;
                self.emit(EventKind::ViewerJoined, out);
                if matches!(message, Message::NewPeer(_)) {
                    if self.config.protocol.offers {
                        self.other_offer(now, i, out);
                    }
                    return;
                }
                return self.on_other_signal(now, i, message, out);
            }
            None => {
                return self.ignore(
                    format!("{message} from viewer {viewer} (not in this call)"),
                    out,
                )
            }
        }
        // Their session's messages mean for the call what the room's do.
        self.on_signal(now, message, out);
    }

    /// A message from a viewer beside the call's first one.
    fn on_other_signal(&mut self, now: Instant, i: usize, message: Message, out: &mut Vec<Action>) {
        let t = self.config.timeouts.clone();
        let trickle = self.config.protocol.trickle;
        let offers = self.config.protocol.offers;
        let c = self.call.as_mut().expect("others belong to a call");
        let o = &mut c.others[i];
        match message {
            Message::NewPeer(_) => {
                // The viewer started over (page reloaded): a new session.
                out.push(Action::ClosePeer { epoch: o.epoch });
                o.epoch = next_epoch(&mut self.epochs);
                o.phase = Phase::WaitingOffer;
                o.deadline = Some(now + t.offer);
                o.early_candidates.clear();
                o.local_candidates.clear();
                o.awaiting_answer = false;
                if offers {
                    self.other_offer(now, i, out);
                }
            }
            Message::Invite(offer) => {
                if o.phase != Phase::WaitingOffer {
                    out.push(Action::ClosePeer { epoch: o.epoch });
                    o.epoch = next_epoch(&mut self.epochs);
                }
                o.local_candidates.clear();
                o.awaiting_answer = false;
                out.push(Action::Answer {
                    epoch: o.epoch,
                    offer,
                    gather_timeout: if trickle {
                        Duration::ZERO
                    } else {
                        t.ice_gather
                    },
                    candidates: std::mem::take(&mut o.early_candidates),
                    trickle,
                    viewer: Some(o.viewer.clone()),
                });
                o.phase = Phase::Answering;
                o.deadline = Some(now + t.answer());
            }
            Message::Ok(answer) if o.awaiting_answer => {
                o.awaiting_answer = false;
                o.deadline = Some(now + t.media);
                out.push(Action::AcceptAnswer {
                    epoch: o.epoch,
                    answer,
                });
            }
            Message::IceCandidate(Some(candidate)) => match o.phase {
                Phase::WaitingOffer if o.early_candidates.len() < MAX_EARLY_CANDIDATES => {
                    o.early_candidates.push(candidate)
                }
                Phase::WaitingOffer => {
                    self.ignore("ice_candidate (too many before the offer)", out)
                }
                _ => out.push(Action::AddCandidate {
                    epoch: o.epoch,
                    candidate,
                }),
            },
            Message::IceCandidate(None) => {}
            Message::Bye(_) => self.drop_other(i, None, out),
            msg => self.ignore(format!("{msg} from another viewer"), out),
        }
    }

    /// We offer to another viewer who just arrived.
    fn other_offer(&mut self, now: Instant, i: usize, out: &mut Vec<Action>) {
        let answer = self.config.timeouts.answer();
        let o = &mut self.call.as_mut().expect("others belong to a call").others[i];
        o.phase = Phase::Answering;
        o.deadline = Some(now + answer);
        out.push(Action::Offer {
            epoch: o.epoch,
            viewer: Some(o.viewer.clone()),
        });
    }

    /// What the driver reports about another viewer's session.
    fn on_other_input(&mut self, now: Instant, i: usize, input: Input, out: &mut Vec<Action>) {
        let t = self.config.timeouts.clone();
        let c = self.call.as_mut().expect("others belong to a call");
        let o = &mut c.others[i];
        match input {
            Input::LocalCandidate { candidate, .. } => match o.phase {
                Phase::Answering if o.local_candidates.len() < MAX_EARLY_CANDIDATES => {
                    o.local_candidates.push(candidate)
                }
                Phase::InCall { .. } if self.config.protocol.trickle => out.push(Action::SendTo {
                    viewer: o.viewer.clone(),
                    message: Message::IceCandidate(candidate),
                }),
                _ => self.ignore("local candidate of another viewer", out),
            },
            Input::AnswerReady { answer, .. } if o.phase == Phase::Answering => {
                let viewer = o.viewer.clone();
                out.push(Action::SendTo {
                    viewer: viewer.clone(),
                    message: Message::Ok(answer),
                });
                for candidate in o.local_candidates.drain(..) {
                    out.push(Action::SendTo {
                        viewer: viewer.clone(),
                        message: Message::IceCandidate(candidate),
                    });
                }
                o.phase = Phase::InCall { connected: false };
                o.deadline = Some(now + t.media);
            }
            Input::OfferReady { offer, .. } if o.phase == Phase::Answering => {
                let viewer = o.viewer.clone();
                out.push(Action::SendTo {
                    viewer: viewer.clone(),
                    message: Message::Invite(offer),
                });
                for candidate in o.local_candidates.drain(..) {
                    out.push(Action::SendTo {
                        viewer: viewer.clone(),
                        message: Message::IceCandidate(candidate),
                    });
                }
                o.awaiting_answer = true;
                o.phase = Phase::InCall { connected: false };
                o.deadline = Some(now + t.offer + t.media);
            }
            Input::AnswerFailed { error, .. } => {
                self.drop_other(i, Some(format!("answer failed: {error}")), out)
            }
            Input::Peer { state, .. } => match (state, o.phase) {
                (PeerState::Connected, Phase::InCall { connected }) => {
                    o.phase = Phase::InCall { connected: true };
                    o.deadline = None;
                    if !connected {
                        out.push(Action::StartMedia { epoch: o.epoch });
                    }
                }
                (PeerState::Disconnected, _)
                | (PeerState::Closed, Phase::InCall { connected: true }) => {
                    o.deadline = Some(o.deadline.unwrap_or(now + t.media));
                }
                (PeerState::Failed | PeerState::Closed, _) => {
                    self.drop_other(i, Some("media connection failed".into()), out)
                }
                _ => self.ignore("peer state of another viewer", out),
            },
            Input::MediaStalled { last_packet, .. } => {
                if o.phase == (Phase::InCall { connected: true }) {
                    let due = last_packet + t.media;
                    o.deadline = Some(o.deadline.map_or(due, |d| d.min(due)));
                }
            }
            Input::MediaFlowing { .. } => {
                if o.phase == (Phase::InCall { connected: true }) {
                    o.deadline = None;
                }
            }
            // The call's first media was its first viewer's.
            Input::FirstMedia { .. } => {}
            other => self.ignore(format!("{other:?} for another viewer"), out),
        }
    }

    /// Another viewer's session is over (`why`: it failed): close it, the
    /// call goes on.
    fn drop_other(&mut self, i: usize, why: Option<String>, out: &mut Vec<Action>) {
        let c = self.call.as_mut().expect("others belong to a call");
        let o = c.others.remove(i);
        out.push(Action::ClosePeer { epoch: o.epoch });
        if let Some(why) = why {
            self.emit(
                EventKind::Error {
                    what: format!("viewer {}: {why}", o.viewer),
                },
                out,
            );
        }
        let viewers = self.viewers();
        self.emit(EventKind::ViewerLeft { viewers }, out);
    }

    /// The first viewer's session is over (`reason`). With other viewers
    /// in the call, the longest-standing one takes its place and the call
    /// goes on; without, the call ends.
    fn session_over(&mut self, now: Instant, reason: EndReason, out: &mut Vec<Action>) {
        let has_others = !self.others().is_empty()
            && matches!(
                self.state,
                State::WaitingOffer | State::Answering | State::InCall { .. }
            );
        if !has_others {
            return self.end(now, reason, out);
        }
        if reason != EndReason::ViewerLeft {
            self.emit(
                EventKind::Error {
                    what: format!("a viewer's session ended: {}", reason.as_str()),
                },
                out,
            );
        }
        out.push(Action::ClosePeer { epoch: self.epoch });
        let t = self.config.timeouts.clone();
        let c = self.call.as_mut().expect("others belong to a call");
        let o = c.others.remove(0);
        c.viewer = Some(o.viewer);
        c.early_candidates = o.early_candidates;
        c.local_candidates = o.local_candidates;
        c.awaiting_answer = o.awaiting_answer;
        c.media_loss_deadline = None;
        self.epoch = o.epoch;
        self.state = match o.phase {
            Phase::WaitingOffer => State::WaitingOffer,
            Phase::Answering => State::Answering,
            Phase::InCall { connected } => State::InCall { connected },
        };
        match o.phase {
            Phase::InCall { connected: true } => {
                c.step_deadline = None;
                c.media_loss_deadline = o.deadline;
            }
            _ => c.step_deadline = o.deadline.or(Some(now + t.media)),
        }
        let viewers = self.viewers();
        self.emit(EventKind::ViewerLeft { viewers }, out);
    }

    /// Sends to the viewer of the peer session: by name, or to the room.
    fn send_to_viewer(&self, message: Message, out: &mut Vec<Action>) {
        match self.call.as_ref().and_then(|c| c.viewer.clone()) {
            Some(viewer) => out.push(Action::SendTo { viewer, message }),
            None => out.push(Action::Send(message)),
        }
    }

    fn on_local_candidate(&mut self, candidate: Option<IceCandidate>, out: &mut Vec<Action>) {
        match self.state {
            State::Answering => {
                let c = self.call.as_mut().expect("answering has a call");
                if c.local_candidates.len() < MAX_EARLY_CANDIDATES {
                    c.local_candidates.push(candidate);
                } else {
                    self.ignore("local candidate (too many before the answer)", out);
                }
            }
            State::InCall { .. } => self.send_to_viewer(Message::IceCandidate(candidate), out),
            _ => self.ignore("local candidate", out),
        }
    }

    fn on_signal(&mut self, now: Instant, msg: Message, out: &mut Vec<Action>) {
        let ours = |name: &str, m: &CallMachine| m.room() == Some(name);
        match (&self.state, msg) {
            (State::Joining, Message::Created(room)) if ours(&room, self) => {
                self.room_ready(now, out);
            }
            (State::Joining, Message::Joined(room) | Message::Full(room)) if ours(&room, self) => {
                // Someone else owns this name: never stream into their room.
                self.emit(
                    EventKind::Error {
                        what: format!(
                            "room {} already existed on the signaling server",
                            room_tag(&room)
                        ),
                    },
                    out,
                );
                self.end(now, EndReason::RoomCollision, out);
            }
            (State::WaitingViewer, Message::NewPeer(room))
                if room.as_deref().is_none_or(|r| ours(r, self)) =>
            {
                self.viewer_arrived(now, out);
                if self.config.protocol.offers {
                    self.offer(now, out);
                }
            }
            (State::WaitingViewer | State::WaitingOffer, Message::Invite(offer)) => {
                if self.state == State::WaitingViewer {
                    // Servers that skip `new_peer`: the offer proves the viewer is here.
                    self.viewer_arrived(now, out);
                }
                self.answer(now, offer, out);
            }
            (State::Answering | State::InCall { .. }, Message::NewPeer(room))
                if room.as_deref().is_none_or(|r| ours(r, self)) =>
            {
                // A room holds two members, so the old viewer is gone (page reloaded,
                // phone switched networks) and a new one is here: start over.
                out.push(Action::ClosePeer { epoch: self.epoch });
                self.epoch = self.fresh_epoch();
                self.clear_call_timers();
                if let Some(c) = self.call.as_mut() {
                    c.early_candidates.clear();
                    c.local_candidates.clear();
                    c.awaiting_answer = false;
                }
                self.state = State::WaitingOffer;
                self.emit(EventKind::ViewerJoined, out);
                self.set_step(now, Some(self.config.timeouts.offer));
                if self.config.protocol.offers {
                    self.offer(now, out);
                }
            }
            (State::InCall { .. }, Message::Created(room) | Message::Joined(room))
                if ours(&room, self) =>
            {
                // The answer to joining the call's room again (see
                // `on_signaling_up`): nothing changes for the call.
            }
            (State::Answering | State::InCall { .. }, Message::Invite(offer)) => {
                // A fresh offer mid-call: the viewer started over without leaving.
                out.push(Action::ClosePeer { epoch: self.epoch });
                self.epoch = self.fresh_epoch();
                self.clear_call_timers();
                self.answer(now, offer, out);
            }
            (
                State::WaitingViewer
                | State::WaitingOffer
                | State::Answering
                | State::InCall { .. },
                Message::Bye(room),
            ) if room.as_deref().is_none_or(|r| ours(r, self)) => {
                self.session_over(now, EndReason::ViewerLeft, out);
            }
            (State::InCall { .. }, Message::Ok(answer))
                if self.call.as_ref().is_some_and(|c| c.awaiting_answer) =>
            {
                self.call
                    .as_mut()
                    .expect("in call has a call")
                    .awaiting_answer = false;
                out.push(Action::AcceptAnswer {
                    epoch: self.epoch,
                    answer,
                });
                self.call_answered(now, out);
            }
            (_, msg @ Message::Ok(_)) => {
                self.ignore(format!("{msg} (no offer of ours waits for it)"), out);
            }
            (State::Answering | State::InCall { .. }, Message::IceCandidate(Some(candidate))) => {
                out.push(Action::AddCandidate {
                    epoch: self.epoch,
                    candidate,
                });
            }
            (
                State::WaitingViewer | State::WaitingOffer,
                Message::IceCandidate(Some(candidate)),
            ) => {
                let c = self.call.as_mut().expect("waiting states have a call");
                if c.early_candidates.len() < MAX_EARLY_CANDIDATES {
                    c.early_candidates.push(candidate);
                } else {
                    self.ignore("ice_candidate (too many before the offer)", out);
                }
            }
            (_, Message::IceCandidate(None)) => {
                // The viewer's end-of-candidates: nothing to do.
            }
            (_, msg) => self.ignore(msg.to_string(), out),
        }
    }

    fn viewer_arrived(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.emit(EventKind::ViewerJoined, out);
        self.state = State::WaitingOffer;
        self.set_step(now, Some(self.config.timeouts.offer));
    }

    /// We offer to the viewer who just arrived.
    fn offer(&mut self, now: Instant, out: &mut Vec<Action>) {
        let viewer = self.call.as_mut().and_then(|c| {
            c.local_candidates.clear();
            c.early_candidates.clear();
            c.viewer.clone()
        });
        out.push(Action::Offer {
            epoch: self.epoch,
            viewer,
        });
        self.state = State::Answering;
        self.set_step(now, Some(self.config.timeouts.answer()));
    }

    /// Our offer goes out, our candidates after it; the viewer has
    /// `call.offer_timeout` to answer and the transport `call.media_timeout`
    /// after that to come up.
    fn on_offer_ready(&mut self, now: Instant, offer: SessionDescription, out: &mut Vec<Action>) {
        self.send_to_viewer(Message::Invite(offer), out);
        let gathered = self
            .call
            .as_mut()
            .map(|c| {
                c.awaiting_answer = true;
                std::mem::take(&mut c.local_candidates)
            })
            .unwrap_or_default();
        for candidate in gathered {
            self.send_to_viewer(Message::IceCandidate(candidate), out);
        }
        self.state = State::InCall { connected: false };
        let t = &self.config.timeouts;
        self.set_step(now, Some(t.offer + t.media));
    }

    fn answer(&mut self, now: Instant, offer: SessionDescription, out: &mut Vec<Action>) {
        let (candidates, viewer) = self
            .call
            .as_mut()
            .map(|c| {
                c.local_candidates.clear();
                c.awaiting_answer = false;
                (std::mem::take(&mut c.early_candidates), c.viewer.clone())
            })
            .unwrap_or_default();
        let trickle = self.config.protocol.trickle;
        out.push(Action::Answer {
            epoch: self.epoch,
            offer,
            gather_timeout: if trickle {
                Duration::ZERO
            } else {
                self.config.timeouts.ice_gather
            },
            candidates,
            trickle,
            viewer,
        });
        self.state = State::Answering;
        self.set_step(now, Some(self.config.timeouts.answer()));
    }

    /// A new peer session of the same call: its own media timers, but the
    /// call's length still counts from its first answer (a viewer does not
    /// get a longer call by reloading).
    fn clear_call_timers(&mut self) {
        if let Some(c) = self.call.as_mut() {
            c.media_loss_deadline = None;
            c.first_media_seen = false;
        }
    }

    fn on_answer_ready(&mut self, now: Instant, answer: SessionDescription, out: &mut Vec<Action>) {
        self.send_to_viewer(Message::Ok(answer), out);
        let gathered = self
            .call
            .as_mut()
            .map(|c| std::mem::take(&mut c.local_candidates))
            .unwrap_or_default();
        for candidate in gathered {
            self.send_to_viewer(Message::IceCandidate(candidate), out);
        }
        self.state = State::InCall { connected: false };
        self.call_answered(now, out);
    }

    /// Offer and answer are both known: the call is answered.
    fn call_answered(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.emit(EventKind::Answered, out);
        // Step deadline now means: the transport must come up within `media`.
        self.set_step(now, Some(self.config.timeouts.media));
        if let Some(c) = self.call.as_mut() {
            if c.max_call_deadline.is_none() {
                let t = &self.config.timeouts;
                c.max_call_deadline = Some(now + if c.live { t.max_live } else { t.max_call });
            }
        }
    }

    fn on_peer(&mut self, now: Instant, state: PeerState, out: &mut Vec<Action>) {
        match state {
            PeerState::Connected => {
                let connected_before = self.state == (State::InCall { connected: true });
                self.state = State::InCall { connected: true };
                self.set_step(now, None);
                let c = self.call.as_mut().expect("in call has a call");
                c.media_loss_deadline = None;
                if !connected_before {
                    // Every peer session goes live when it connects: the first
                    // of the call, and each one after the viewer came back.
                    let kind = if c.connected_once {
                        EventKind::Reconnected
                    } else {
                        c.connected_once = true;
                        EventKind::Connected
                    };
                    self.emit(kind, out);
                    out.push(Action::StartMedia { epoch: self.epoch });
                }
            }
            // The viewer's side closed a connected session (its page went
            // away: reloaded, or the phone changed networks and the browser
            // gave the old connection up). It may come back into the same
            // call: wait for it as for silence.
            PeerState::Disconnected => self.await_viewer(now),
            PeerState::Closed if self.state == (State::InCall { connected: true }) => {
                self.await_viewer(now)
            }
            PeerState::Failed | PeerState::Closed => {
                self.emit(
                    EventKind::Error {
                        what: format!(
                            "media connection {}",
                            if state == PeerState::Failed {
                                "failed"
                            } else {
                                "closed"
                            }
                        ),
                    },
                    out,
                );
                self.session_over(now, EndReason::MediaFailed, out);
            }
        }
    }

    /// The viewer's media went away: it has `call.media_timeout` to come
    /// back (or its path to recover) before the call ends `media_lost`.
    fn await_viewer(&mut self, now: Instant) {
        let media = self.config.timeouts.media;
        let c = self.call.as_mut().expect("in call has a call");
        if c.step_deadline.is_none() {
            // The earlier of this and a stall already being timed.
            let due = now + media;
            c.media_loss_deadline = Some(c.media_loss_deadline.map_or(due, |d| d.min(due)));
        }
    }

    /// Silence is timed from the last packet, not from when it was noticed,
    /// so `call.media_timeout` means what it says.
    fn on_media_stalled(&mut self, last_packet: Instant) {
        let due = last_packet + self.config.timeouts.media;
        let c = self.call.as_mut().expect("in call has a call");
        c.media_loss_deadline = Some(c.media_loss_deadline.map_or(due, |d| d.min(due)));
    }

    fn on_notified(&mut self, result: Result<(), NotifyFailed>, out: &mut Vec<Action>) {
        match result {
            Ok(()) => {
                let link = self.link();
                self.emit(EventKind::Notified { link }, out);
            }
            Err(e) => self.emit(
                EventKind::Error {
                    what: format!("notify: {e}"),
                },
                out,
            ),
        }
    }

    fn on_signal_failed(&mut self, now: Instant, what: String, out: &mut Vec<Action>) {
        match self.state {
            State::Joining | State::WaitingViewer | State::WaitingOffer | State::Answering => {
                self.emit(
                    EventKind::Error {
                        what: format!("signaling: {what}"),
                    },
                    out,
                );
                self.end(now, EndReason::SignalingLost, out);
            }
            // In a call the media path is peer to peer; a lost `bye` or `ok` retry
            // is not worth ending it for. While ending, the bye was best effort.
            _ => self.ignore(format!("signaling failure: {what}"), out),
        }
    }

    /// Back on the signaling server during a call whose connection was lost:
    /// the call's media never needed the server, but the room did (a
    /// restarted server has forgotten it, and a reconnected client is a new
    /// member). Joining it again lets the viewer's hang-up and a page reload
    /// reach the doorbell; whichever of the two joins first gets `created`,
    /// the other `joined`, and a `new_peer` to the doorbell starts a new
    /// session as any rejoin does.
    fn on_signaling_up(&mut self, out: &mut Vec<Action>) {
        if !matches!(self.state, State::InCall { .. }) || !self.config.protocol.server_rooms {
            return;
        }
        if let Some(c) = self.call.as_mut().filter(|c| c.rejoin_room) {
            c.rejoin_room = false;
            out.push(Action::Send(Message::Join(c.room.clone())));
        }
    }

    fn on_signaling_down(&mut self, now: Instant, out: &mut Vec<Action>) {
        match self.state {
            // Without rooms the link names the device, which is reachable
            // again once the connection is back: keep waiting.
            State::WaitingViewer if !self.config.protocol.server_rooms => {}
            State::Joining | State::WaitingViewer | State::WaitingOffer | State::Answering => {
                // Rooms are server state: the link died with the connection.
                self.emit(
                    EventKind::Error {
                        what: "lost the signaling connection before the call was set up".into(),
                    },
                    out,
                );
                self.end(now, EndReason::SignalingLost, out);
            }
            State::InCall { .. } => {
                if let Some(c) = self.call.as_mut() {
                    c.rejoin_room = true;
                }
            }
            _ => {}
        }
    }

    fn expire(&mut self, now: Instant, out: &mut Vec<Action>) {
        // Other viewers first: what is due for them ends their sessions only.
        while let Some(i) = self
            .others()
            .iter()
            .position(|o| o.deadline.is_some_and(|d| d <= now))
        {
            let why = match self.others()[i].phase {
                Phase::WaitingOffer => "no offer came",
                Phase::Answering => "answer timed out",
                Phase::InCall { connected: false } => "the media connection did not come up",
                Phase::InCall { connected: true } => "no media from the viewer",
            };
            self.drop_other(i, Some(why.into()), out);
        }
        let Some(c) = self.call.as_ref() else { return };
        // The earliest due deadline decides, however late the tick comes.
        let due = [
            (c.step_deadline, Timer::Step),
            (c.media_loss_deadline, Timer::MediaLoss),
            (c.max_call_deadline, Timer::MaxCall),
        ]
        .into_iter()
        .filter_map(|(d, t)| d.filter(|d| *d <= now).map(|d| (d, t)))
        .min_by_key(|(d, _)| *d);
        match due {
            None => {}
            Some((_, Timer::MaxCall)) => self.end(now, EndReason::MaxDuration, out),
            Some((_, Timer::MediaLoss)) => {
                self.emit(
                    EventKind::Error {
                        what: "no media from the viewer".into(),
                    },
                    out,
                );
                self.session_over(now, EndReason::MediaLost, out);
            }
            Some((_, Timer::Step)) => self.step_expired(now, out),
        }
    }

    fn step_expired(&mut self, now: Instant, out: &mut Vec<Action>) {
        match self.state {
            State::Idle => {}
            State::Joining => {
                self.emit(
                    EventKind::Error {
                        what: "the signaling server did not answer join".into(),
                    },
                    out,
                );
                self.end(now, EndReason::SignalingTimeout, out);
            }
            State::WaitingViewer => self.end(now, EndReason::Unanswered, out),
            State::WaitingOffer => self.session_over(now, EndReason::NoOffer, out),
            State::Answering => {
                self.emit(
                    EventKind::Error {
                        what: "answer timed out".into(),
                    },
                    out,
                );
                self.session_over(now, EndReason::AnswerFailed, out);
            }
            State::InCall { .. } => {
                self.emit(
                    EventKind::Error {
                        what: "the media connection did not come up".into(),
                    },
                    out,
                );
                self.session_over(now, EndReason::MediaFailed, out);
            }
            State::Ending { .. } => {
                self.ignore("teardown did not finish in time; going idle anyway", out);
                self.finish(out);
            }
        }
    }

    /// Ends the call: `bye`, tear down, wait for the driver.
    ///
    /// `bye` goes out whenever the connection is up, even after the viewer's own
    /// `bye`: the connection outlives the call, so without it our membership
    /// (and the room) would stay on the server. From `join` on we may be a
    /// member; on a collision the protocol asks for `bye` too (harmless on `full`).
    fn end(&mut self, now: Instant, reason: EndReason, out: &mut Vec<Action>) {
        if matches!(self.state, State::Idle | State::Ending { .. }) {
            return;
        }
        if self.signaling_up && self.config.protocol.server_rooms {
            if let Some(room) = self.room() {
                out.push(Action::Send(Message::Bye(Some(room.to_string()))));
            }
        }
        self.begin_teardown(now, reason, out);
    }

    fn begin_teardown(&mut self, now: Instant, reason: EndReason, out: &mut Vec<Action>) {
        out.push(Action::Teardown { epoch: self.epoch });
        self.state = State::Ending { reason };
        if let Some(c) = self.call.as_mut() {
            c.media_loss_deadline = None;
            c.max_call_deadline = None;
            // The teardown closes every viewer's session.
            c.others.clear();
        }
        self.set_step(now, Some(self.config.timeouts.teardown));
    }

    fn finish(&mut self, out: &mut Vec<Action>) {
        if let State::Ending { reason } = self.state {
            self.emit(EventKind::Ended { reason }, out);
        }
        self.state = State::Idle;
        self.call = None;
    }
}

/// Hands out the next epoch of the counter `epochs` (a field borrowed
/// apart from the call, which may be borrowed at the same time).
fn next_epoch(epochs: &mut u64) -> Epoch {
    *epochs += 1;
    Epoch(*epochs)
}

/// The peer session an input from the driver is about.
fn session_epoch(input: &Input) -> Option<Epoch> {
    match input {
        Input::LocalCandidate { epoch, .. }
        | Input::OfferReady { epoch, .. }
        | Input::AnswerReady { epoch, .. }
        | Input::AnswerFailed { epoch, .. }
        | Input::Peer { epoch, .. }
        | Input::MediaStalled { epoch, .. }
        | Input::MediaFlowing { epoch }
        | Input::FirstMedia { epoch } => Some(*epoch),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
