//! Telling the owner: the bell rang, here is the link.
//!
//! Every notifier implements [`Notifier`]; several can be configured, they run
//! concurrently, and one failing does not stop the others. Notifiers never hold
//! the call back: the call loop starts them and goes on; their outcome comes
//! back as an input (`notified` or `error` events).

use futures_util::future::BoxFuture;

use crate::events::CallEvent;

pub mod stdout;

/// A ring to announce.
#[derive(Debug, Clone)]
pub struct Ring {
    pub call: u64,
    pub room: String,
    pub link: String,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{notifier}: {message}")]
pub struct NotifyError {
    pub notifier: String,
    pub message: String,
}

pub trait Notifier: Send + Sync + 'static {
    fn name(&self) -> &str;

    /// The bell rang and the room is ready: send the link.
    fn ring(&self, ring: Ring) -> BoxFuture<'static, Result<(), NotifyError>>;

    /// The bell rang but no call could be set up (e.g. the signaling server is
    /// unreachable): tell the owner someone is at the door anyway.
    fn ring_failed(&self, call: u64, reason: String)
        -> BoxFuture<'static, Result<(), NotifyError>>;

    /// Every call event, for follow-ups (answered, missed). Default: nothing.
    fn follow_up(&self, _event: CallEvent) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}
