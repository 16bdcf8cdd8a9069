//! Telling the owner: the bell rang, here is the link.
//!
//! Every notifier implements [`Notifier`]; several can be configured, they run
//! concurrently, and one failing does not stop the others. Notifiers never hold
//! the call back: the call loop starts them and goes on; their outcome comes
//! back as an input (`notified` or `error` events).
//!
//! Notifiers: [`stdout`], [`telegram`] (a photo and an Answer button, the
//! owner's bot commands), [`webhook`] (JSON to any URL); the composition
//! root (`cmd::daemon`) makes the configured ones. [`retry`] bounds their
//! retries, [`secret`] keeps the bot token out of logs.

use futures_util::future::BoxFuture;

use crate::call::event::CallEvent;

pub mod retry;
pub mod secret;
pub mod stdout;
pub mod telegram;
pub mod webhook;

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

    /// Something the owner should know that is not about a ring (the
    /// history was damaged and started anew). Default: nothing.
    fn notice(&self, _text: String) -> BoxFuture<'static, Result<(), NotifyError>> {
        Box::pin(async { Ok(()) })
    }

    /// Every call event, for follow-ups (answered, missed). Default: nothing.
    fn follow_up(&self, _event: CallEvent) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// An error and its sources, each once (HTTP client errors repeat their
/// source in their own text).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
