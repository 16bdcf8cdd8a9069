//! What goes into the call machine and what comes out: its settings
//! ([`MachineConfig`], [`Timeouts`]), inputs ([`Input`]) and actions
//! ([`Action`]), and the [`Epoch`] that tells current inputs from stale ones.

use std::time::{Duration, Instant};

use crate::call::event::Event;
use crate::call::peer_state::PeerState;
use crate::signaling::protocol::{IceCandidate, Message, SessionDescription};
use crate::signaling::ViewerId;

/// Every timeout of a call. All are configurable (`[call]` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// `join` sent, no `created` yet.
    pub signaling: Duration,
    /// Link sent, nobody opened it.
    pub viewer_join: Duration,
    /// Viewer joined, no offer yet.
    pub offer: Duration,
    /// Cap on ICE gathering while building the answer (used by the peer).
    pub ice_gather: Duration,
    /// Longest call.
    pub max_call: Duration,
    /// Longest live view (a look without a ring).
    pub max_live: Duration,
    /// Media silent (counted from the last packet), ICE disconnected, or
    /// never connected: hang up after this.
    pub media: Duration,
    /// Longest wait for the driver to finish tearing a call down.
    pub teardown: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            signaling: Duration::from_secs(10),
            viewer_join: Duration::from_secs(60),
            offer: Duration::from_secs(20),
            ice_gather: Duration::from_secs(3),
            max_call: Duration::from_secs(600),
            max_live: Duration::from_secs(590),
            media: Duration::from_secs(10),
            teardown: Duration::from_secs(5),
        }
    }
}

impl Timeouts {
    /// Answer creation = ICE gathering (capped) plus SDP work; this bounds the lot.
    pub fn answer(&self) -> Duration {
        self.ice_gather + Duration::from_secs(5)
    }
}

pub use crate::spec::call::PressDuringCall;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineConfig {
    pub timeouts: Timeouts,
    pub press_during_call: PressDuringCall,
    /// Viewer link with `{room}` where the room name goes.
    pub link_template: String,
    /// What the signaling protocol asks of a call.
    pub protocol: ProtocolTraits,
    /// Most viewers in one call at once (`call.max_viewers`), in protocols
    /// with sessions per viewer; a room holds one.
    pub max_viewers: usize,
}

/// How a signaling protocol shapes a call (`docs/protocol.md`). The
/// machine stays protocol-free: these are the only differences it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolTraits {
    /// A call lives in a room on the server: `join` (answered by
    /// `created`) before the link is any good, `bye` when it ends, joined
    /// again after a reconnect. Without rooms (seed 002's device socket) the
    /// link names the device, which is reachable whenever it is connected.
    pub server_rooms: bool,
    /// Our candidates trickle: the answer goes out at once, without waiting
    /// for ICE gathering, and each candidate follows it ([`Input::LocalCandidate`]).
    pub trickle: bool,
    /// When a viewer arrives (`new_peer`), the doorbell makes the offer
    /// (seed 004: whoever registered first offers); a viewer's own offer is
    /// still answered.
    pub offers: bool,
}

impl ProtocolTraits {
    /// The Socket.IO room protocol: rooms, answers with every candidate.
    pub const ROOMS: ProtocolTraits = ProtocolTraits {
        server_rooms: true,
        trickle: false,
        offers: false,
    };
    /// Seed 002's device socket: no rooms, per-viewer sessions, trickle.
    pub const DEVICE_WS: ProtocolTraits = ProtocolTraits {
        server_rooms: false,
        trickle: true,
        offers: false,
    };
    /// Seed 004's SSE sessions: a session per ring on the server, peers by
    /// name, trickle, and we offer.
    pub const SSE: ProtocolTraits = ProtocolTraits {
        server_rooms: true,
        trickle: true,
        offers: true,
    };
}

impl Default for ProtocolTraits {
    fn default() -> Self {
        Self::ROOMS
    }
}

/// Increases with every ring and every new peer session inside a ring (each
/// viewer's session has its own). Inputs from the driver carry the epoch
/// they belong to; stale ones are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Epoch(pub u64);

/// Everything that can happen to the doorbell.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The button. `room` is a fresh random name, used only if a call starts.
    Press {
        room: String,
    },
    /// The owner wants to look at the door without a ring (live view):
    /// a room like a press's, but no chime, no notification (the one who
    /// asked gets the link) and `max_live` instead of `max_call`. A press
    /// during it turns it into a ring.
    Look {
        room: String,
    },
    /// Hang up the current call (control command).
    Hangup,
    /// The daemon is stopping: end any call, accept no new press.
    Shutdown,
    /// The signaling connection is up (Socket.IO connected) / gone.
    SignalingUp,
    SignalingDown,
    /// A message from the signaling server (the room's).
    Signal(Message),
    /// A message from one viewer of a protocol with sessions per viewer.
    /// The first viewer's session is the call's; later ones (up to
    /// `max_viewers`) get sessions beside it, sharing the call's media.
    FromViewer {
        viewer: ViewerId,
        message: Message,
    },
    /// One of our ICE candidates, gathered after the answer was made
    /// (`None`: gathering is complete). Sent to the viewer when the
    /// protocol trickles.
    LocalCandidate {
        epoch: Epoch,
        candidate: Option<IceCandidate>,
    },
    /// Sending a message to the signaling server failed.
    SignalFailed {
        what: String,
    },
    /// The notifiers finished sending the ring; `Err` when every one failed.
    Notified {
        epoch: Epoch,
        result: Result<(), NotifyFailed>,
    },
    /// Our offer is ready (after [`Action::Offer`]).
    OfferReady {
        epoch: Epoch,
        offer: SessionDescription,
    },
    /// The answer is ready (ICE gathering complete or capped).
    AnswerReady {
        epoch: Epoch,
        answer: SessionDescription,
    },
    AnswerFailed {
        epoch: Epoch,
        error: String,
    },
    Peer {
        epoch: Epoch,
        state: PeerState,
    },
    /// Nothing (RTP or RTCP) has come from the viewer since `last_packet`.
    MediaStalled {
        epoch: Epoch,
        last_packet: Instant,
    },
    /// Packets from the viewer arrive again after a stall.
    MediaFlowing {
        epoch: Epoch,
    },
    /// The first media sample went out on the connected transport.
    FirstMedia {
        epoch: Epoch,
    },
    /// A media source, encoder or sink failed; the call goes on without it.
    MediaError {
        epoch: Epoch,
        what: String,
    },
    /// The driver finished tearing down the call of `epoch`.
    TeardownDone {
        epoch: Epoch,
    },
    /// Time passed; expire what is due at `now`.
    Tick,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send a message to the signaling server.
    Send(Message),
    /// Send a message to one viewer (protocols with sessions per viewer).
    SendTo { viewer: ViewerId, message: Message },
    /// Tell the owner: the bell rang, here is the link. Answer with [`Input::Notified`].
    Notify {
        epoch: Epoch,
        call: u64,
        room: String,
        link: String,
    },
    /// Tell the owner the bell rang but no call could be set up.
    NotifyFailure {
        call: u64,
        room: String,
        reason: String,
    },
    /// Build the peer for `offer`, warm the media up, answer with ICE gathering
    /// capped at `gather_timeout`. Answer with [`Input::AnswerReady`] or
    /// [`Input::AnswerFailed`]. Any earlier peer of the call is closed first.
    /// `candidates` trickled in before the offer are added once it is set.
    /// With `trickle` the answer does not wait for gathering: our candidates
    /// come back one by one as [`Input::LocalCandidate`].
    Answer {
        epoch: Epoch,
        offer: SessionDescription,
        gather_timeout: Duration,
        candidates: Vec<IceCandidate>,
        trickle: bool,
        /// The viewer, in a protocol that names viewers (its session may
        /// come with ICE servers of its own).
        viewer: Option<ViewerId>,
    },
    /// Build the peer with our media and make an offer for the viewer
    /// (protocols where we offer). Answer with [`Input::OfferReady`] or
    /// [`Input::AnswerFailed`]; candidates trickle back as
    /// [`Input::LocalCandidate`].
    Offer {
        epoch: Epoch,
        viewer: Option<ViewerId>,
    },
    /// The viewer's answer to our offer: set it on the peer of `epoch`
    /// (failure comes back as [`Input::AnswerFailed`]).
    AcceptAnswer {
        epoch: Epoch,
        answer: SessionDescription,
    },
    /// A candidate the viewer trickled after its offer: add it to the peer of
    /// `epoch`.
    AddCandidate {
        epoch: Epoch,
        candidate: IceCandidate,
    },
    /// The transport is up: start sending media, IDR first.
    StartMedia { epoch: Epoch },
    /// Close the peer of `epoch` and stop its media (the call goes on, e.g. the
    /// viewer reloaded the page and a new offer is expected).
    ClosePeer { epoch: Epoch },
    /// Close the peer, stop media, release devices; answer with [`Input::TeardownDone`].
    Teardown { epoch: Epoch },
    /// Report a call event.
    Emit(Event),
    /// The input made no sense in this state; log it.
    Ignored { input: String, state: &'static str },
}

/// Every notifier failed to tell the owner; why, in their words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotifyFailed(pub String);
