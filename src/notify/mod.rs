//! Telling the owner: the bell rang, here is the link.
//!
//! Every notifier implements [`Notifier`]; several can be configured, they run
//! concurrently, and one failing does not stop the others. Notifiers never hold
//! the call back: the call loop starts them and goes on; their outcome comes
//! back as an input (`notified` or `error` events).
//!
//! Notifiers: [`stdout`], [`telegram`] (a photo and an Answer button, the
//! owner's bot commands), [`webhook`] (JSON to any URL). [`build`] makes the
//! configured ones; [`retry`] bounds their retries, [`secret`] keeps the bot
//! token out of logs.

use futures_util::future::BoxFuture;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::call::driver::Command;
use crate::config::Config;
use crate::events::CallEvent;
use crate::media::MediaOpener;

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

    /// Every call event, for follow-ups (answered, missed). Default: nothing.
    fn follow_up(&self, _event: CallEvent) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// The notifiers `config` asks for, in order: stdout (when `stdout` allows it:
/// not with `--events json`), Telegram, then each webhook. Starts the Telegram
/// bot (token check, commands) in the background, stopped by `cancel`. Fails
/// on a missing or exposed bot token or an unusable URL, with the fix in the
/// message; never on an unreachable service (that is a runtime matter, logged
/// and retried).
pub fn build(
    config: &Config,
    stdout: bool,
    media: Arc<dyn MediaOpener>,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<CallEvent>,
    cancel: CancellationToken,
) -> Result<Vec<Arc<dyn Notifier>>, NotifyError> {
    let mut notifiers: Vec<Arc<dyn Notifier>> = Vec::new();
    if stdout && config.notify.stdout {
        notifiers.push(Arc::new(stdout::StdoutNotifier));
    }
    let t = &config.notify.telegram;
    if t.enabled {
        let error = |message: String| NotifyError {
            notifier: "telegram".into(),
            message,
        };
        let (token, from) = secret::TokenSources::from_environment(t.token_file.as_deref())
            .load()
            .map_err(|e| error(e.to_string()))?;
        tracing::info!("telegram: bot token from {from}");
        let api = telegram::api::Api::new(token, &t.api_url).map_err(error)?;
        let settle_frames = t.settle_frames as usize;
        notifiers.push(Arc::new(telegram::TelegramNotifier::new(
            api.clone(),
            telegram::TelegramSettings {
                chat_ids: t.chat_ids.clone(),
                snapshot: t.snapshot,
                settle_frames,
                retry_for: t.retry_for,
            },
            media.clone(),
        )));
        telegram::bot::spawn(
            api,
            telegram::bot::BotSettings {
                chat_ids: t.chat_ids.clone(),
                commands: t.commands,
                settle_frames,
            },
            media,
            commands,
            events.subscribe(),
            cancel,
        );
    }
    for w in &config.notify.webhook {
        notifiers.push(Arc::new(webhook::WebhookNotifier::new(w)?));
    }
    Ok(notifiers)
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
