//! An in-process signaling "server" with the room rules of the real one, for
//! tests that drive the call on a simulated clock (real sockets and a paused
//! clock do not mix). The test plays the other member through [`MemoryPeer`].

use futures_util::future::{BoxFuture, FutureExt};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

use super::protocol::Message;
use super::{Signaling, SignalingError, SignalingEvent};

struct State {
    up: bool,
    /// Everything the doorbell sent, in order.
    sent: Vec<Message>,
    to_doorbell: mpsc::Sender<SignalingEvent>,
}

/// The doorbell's end.
#[derive(Clone)]
pub struct MemorySignaling {
    state: Arc<Mutex<State>>,
}

/// The test's end: see what the doorbell sent, answer as the server would.
#[derive(Clone)]
pub struct MemoryPeer {
    state: Arc<Mutex<State>>,
}

impl MemorySignaling {
    pub fn new(events: mpsc::Sender<SignalingEvent>) -> (Self, MemoryPeer) {
        let state = Arc::new(Mutex::new(State {
            up: false,
            sent: Vec::new(),
            to_doorbell: events,
        }));
        (
            Self {
                state: state.clone(),
            },
            MemoryPeer { state },
        )
    }
}

impl Signaling for MemorySignaling {
    fn send(&self, msg: Message) -> BoxFuture<'static, Result<(), SignalingError>> {
        let mut s = self.state.lock().expect("memory signaling lock");
        let result = if s.up {
            s.sent.push(msg);
            Ok(())
        } else {
            Err(SignalingError::NotConnected)
        };
        async move { result }.boxed()
    }
}

impl MemoryPeer {
    pub fn set_up(&self, up: bool) {
        let mut s = self.state.lock().expect("memory signaling lock");
        s.up = up;
        let event = if up {
            SignalingEvent::Up
        } else {
            SignalingEvent::Down
        };
        let _ = s.to_doorbell.try_send(event);
    }

    /// Delivers a message to the doorbell as the server would.
    pub fn deliver(&self, msg: Message) {
        let s = self.state.lock().expect("memory signaling lock");
        let _ = s.to_doorbell.try_send(SignalingEvent::Message(msg));
    }

    /// Delivers a message from a named viewer, as a protocol with a session
    /// per viewer would.
    pub fn deliver_from(&self, viewer: &str, message: Message) {
        let s = self.state.lock().expect("memory signaling lock");
        let _ = s.to_doorbell.try_send(SignalingEvent::FromViewer {
            viewer: super::ViewerId(viewer.to_string()),
            message,
        });
    }

    pub fn sent(&self) -> Vec<Message> {
        self.state
            .lock()
            .expect("memory signaling lock")
            .sent
            .clone()
    }
}
