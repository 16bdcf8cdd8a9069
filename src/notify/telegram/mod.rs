//! `telegram` notifier: the owner's phone buzzes with a picture of the visitor
//! and an "Answer" button that opens the call.
//!
//! The picture is started at the `ringing` event, so the camera settles while
//! the signaling server creates the room; [`Notifier::ring`] (called once the
//! room exists) waits for it, then sends every allowed chat a photo with the
//! link in the caption and in an inline URL button, or a text message (link
//! previews off) when there is no camera. Each chat is retried on its own for
//! `retry_for` (see [`super::retry`]); the call never waits for any of it.
//!
//! Follow-ups come from the call events: `answered` edits the messages
//! ("Answered at 14:03", the button goes: the room is taken); an `ended`
//! without an answer replies "Missed at 14:04" (a reply buzzes the phone, an
//! edit does not) and edits the button away. A message that is delivered late
//! (the API was slow) gets the follow-ups that happened meanwhile: per call,
//! whoever comes second (the delivery or the event) applies them.
//!
//! [`api`] is the only module that speaks teloxide; [`bot`] answers the
//! owner's commands.

pub mod api;
pub mod bot;

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self::api::{Api, ApiError, Button, ErrorKind, Sent};
use super::retry::retry;
use super::{Notifier, NotifyError, Ring};
use crate::call::event::CallEvent;
use crate::call::event::{EndReason, EventKind};
use crate::media::ring_picture::{Picture, RingPictures};
use crate::media::unix_ms;

/// A camera that gives no picture in this long is given up for this ring:
/// the message goes out as text.
pub use crate::media::ring_picture::SNAPSHOT_LIMIT;
/// Calls whose messages are remembered for follow-ups.
const CALLS_KEPT: usize = 16;
/// The button's text.
const ANSWER: &str = "Answer";

/// What the notifier needs from `[notify.telegram]`.
#[derive(Debug, Clone)]
pub struct TelegramSettings {
    pub chat_ids: Vec<i64>,
    /// Send a photo with the ring (else text only).
    pub snapshot: bool,
    /// How long one message is retried.
    pub retry_for: Duration,
}

pub struct TelegramNotifier {
    inner: Arc<Inner>,
}

struct Inner {
    api: Api,
    settings: TelegramSettings,
    pictures: RingPictures,
    calls: Mutex<BTreeMap<u64, CallState>>,
}

type Snapshot = Picture;

/// What one call has done so far, as far as its messages are concerned.
#[derive(Default)]
struct CallState {
    /// The `ringing` event's time (Unix ms).
    rang_at: Option<u64>,
    snapshot: Option<Snapshot>,
    /// Ring messages delivered.
    messages: Vec<Sent>,
    answered_at: Option<u64>,
    ended: Option<(EndReason, u64)>,
}

/// A follow-up to apply to a ring message.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Answered { at: u64 },
    NotAnswered { reason: EndReason, at: u64 },
}

impl TelegramNotifier {
    /// `pictures`: the ring's picture, shared with the history.
    pub fn new(api: Api, settings: TelegramSettings, pictures: RingPictures) -> Self {
        Self {
            inner: Arc::new(Inner {
                api,
                settings,
                pictures,
                calls: Mutex::new(BTreeMap::new()),
            }),
        }
    }
}

impl Notifier for TelegramNotifier {
    fn name(&self) -> &str {
        "telegram"
    }

    fn ring(&self, ring: Ring) -> BoxFuture<'static, Result<(), NotifyError>> {
        let inner = self.inner.clone();
        async move { inner.ring(ring).await }.boxed()
    }

    fn ring_failed(
        &self,
        call: u64,
        reason: String,
    ) -> BoxFuture<'static, Result<(), NotifyError>> {
        let inner = self.inner.clone();
        async move { inner.ring_failed(call, reason).await }.boxed()
    }

    fn notice(&self, text: String) -> BoxFuture<'static, Result<(), NotifyError>> {
        let inner = self.inner.clone();
        async move {
            let sends = inner
                .settings
                .chat_ids
                .iter()
                .map(|&chat| inner.deliver(chat, None, &text, None, "notice"));
            let errors = futures_util::future::join_all(sends)
                .await
                .into_iter()
                .filter_map(Result::err)
                .collect();
            inner.outcome(errors)
        }
        .boxed()
    }

    fn follow_up(&self, event: CallEvent) -> BoxFuture<'static, ()> {
        let inner = self.inner.clone();
        async move { inner.follow_up(event).await }.boxed()
    }
}

impl Inner {
    fn calls(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, CallState>> {
        // A panic while holding this lock cannot leave the map half-changed
        // in a way that matters; keep going with it.
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The call's state, created (and the oldest forgotten) if new.
    fn with_call<R>(&self, call: u64, f: impl FnOnce(&mut CallState) -> R) -> R {
        let mut calls = self.calls();
        let result = f(calls.entry(call).or_default());
        while calls.len() > CALLS_KEPT {
            calls.pop_first();
        }
        result
    }

    /// The ring time and the picture of `call`, starting the picture if
    /// nobody has yet.
    fn prepare(&self, call: u64, at: Option<u64>) -> (u64, Option<Snapshot>) {
        let want_picture = self.settings.snapshot;
        self.with_call(call, |c| {
            if c.rang_at.is_none() {
                c.rang_at = Some(at.unwrap_or_else(unix_ms));
            }
            if want_picture && c.snapshot.is_none() {
                c.snapshot = Some(self.pictures.of(call));
            }
            (c.rang_at.unwrap_or_default(), c.snapshot.clone())
        })
    }

    async fn ring(&self, ring: Ring) -> Result<(), NotifyError> {
        let (rang_at, snapshot) = self.prepare(ring.call, None);
        let photo = match snapshot {
            Some(s) => s.await,
            None => None,
        };
        let text = ring_text(rang_at, &ring.link);
        let button = match reqwest::Url::parse(&ring.link) {
            Ok(url) => Some(Button {
                text: ANSWER.into(),
                url,
            }),
            Err(e) => {
                tracing::warn!("telegram: the viewer link is not a URL ({e}); no Answer button");
                None
            }
        };
        let sends =
            self.settings.chat_ids.iter().map(|&chat| {
                self.deliver(chat, photo.clone(), &text, button.as_ref(), "ring message")
            });
        let results = futures_util::future::join_all(sends).await;
        let mut errors = Vec::new();
        for result in results {
            match result {
                Ok(sent) => self.delivered(ring.call, sent).await,
                Err(e) => errors.push(e),
            }
        }
        self.outcome(errors)
    }

    async fn ring_failed(&self, call: u64, reason: String) -> Result<(), NotifyError> {
        let (rang_at, snapshot) = self.prepare(call, None);
        let photo = match snapshot {
            Some(s) => s.await,
            None => None,
        };
        let text = format!(
            "🔔 Someone rang at {}, but no call could be set up: {reason}.",
            clock(rang_at)
        );
        let sends = self
            .settings
            .chat_ids
            .iter()
            .map(|&chat| self.deliver(chat, photo.clone(), &text, None, "ring notice"));
        let errors = futures_util::future::join_all(sends)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        self.outcome(errors)
    }

    /// Ok when at least one chat got the message (the others are logged).
    fn outcome(&self, errors: Vec<String>) -> Result<(), NotifyError> {
        if !errors.is_empty() && errors.len() == self.settings.chat_ids.len() {
            return Err(NotifyError {
                notifier: "telegram".into(),
                message: errors.join("; "),
            });
        }
        for e in errors {
            tracing::warn!("telegram: {e}");
        }
        Ok(())
    }

    /// Sends one message to one chat, retried for `retry_for`.
    async fn deliver(
        &self,
        chat: i64,
        photo: Option<Bytes>,
        text: &str,
        button: Option<&Button>,
        what: &str,
    ) -> Result<Sent, String> {
        let label = format!("telegram: {what} to chat {chat}");
        retry(&label, self.settings.retry_for, || {
            self.send_once(chat, photo.clone(), text, button)
        })
        .await
        .map_err(|e| format!("chat {chat}: {e}"))
    }

    /// One attempt, adapting once to a refused button or a migrated group.
    async fn send_once(
        &self,
        mut chat: i64,
        photo: Option<Bytes>,
        text: &str,
        mut button: Option<&Button>,
    ) -> Result<Sent, ApiError> {
        let mut adaptations = 0;
        loop {
            let result = match &photo {
                Some(jpeg) => self.api.send_photo(chat, jpeg.clone(), text, button).await,
                None => self.api.send_text(chat, text, button, None).await,
            };
            adaptations += 1;
            match result {
                Err(e)
                    if e.kind == ErrorKind::ButtonRefused
                        && button.is_some()
                        && adaptations < 3 =>
                {
                    tracing::warn!(
                        "telegram: chat {chat}: Telegram refused the Answer button for this \
                         link ({e}); sending the link in the text only (Telegram wants a public \
                         http(s) link: see signaling.viewer_link)"
                    );
                    button = None;
                }
                Err(ApiError {
                    kind: ErrorKind::Migrated(to),
                    ..
                }) if adaptations < 3 => {
                    tracing::warn!(
                        "telegram: chat {chat} became the supergroup {to}: sending there; put \
                         {to} in notify.telegram.chat_ids instead of {chat}"
                    );
                    chat = to;
                }
                other => return other,
            }
        }
    }

    /// A ring message arrived: remember it, and apply what already happened.
    async fn delivered(&self, call: u64, sent: Sent) {
        let outcome = self.with_call(call, |c| {
            c.messages.push(sent.clone());
            outcome_of(c)
        });
        if let Some(outcome) = outcome {
            self.apply(sent, outcome).await;
        }
    }

    async fn follow_up(&self, event: CallEvent) {
        let call = event.event.call;
        if let EventKind::VoicemailRecorded { file, seconds } = &event.event.kind {
            return self.voicemail(call, file, *seconds, event.ts).await;
        }
        let (messages, outcome) = match &event.event.kind {
            EventKind::Ringing => {
                self.prepare(call, Some(event.ts));
                return;
            }
            EventKind::Answered | EventKind::Connected => self.with_call(call, |c| {
                if c.answered_at.is_some() || c.ended.is_some() {
                    return (Vec::new(), None);
                }
                c.answered_at = Some(event.ts);
                (c.messages.clone(), outcome_of(c))
            }),
            EventKind::Ended { reason } => self.with_call(call, |c| {
                if c.ended.is_some() {
                    return (Vec::new(), None);
                }
                c.ended = Some((*reason, event.ts));
                c.snapshot = None;
                // Answered calls were followed up already.
                let outcome = outcome_of(c).filter(|_| c.answered_at.is_none());
                (c.messages.clone(), outcome)
            }),
            _ => return,
        };
        let Some(outcome) = outcome else { return };
        let updates = messages.into_iter().map(|m| self.apply(m, outcome));
        futures_util::future::join_all(updates).await;
    }

    /// Sends the visitor's message as a video to every chat, as a reply to
    /// the ring message when it is known.
    async fn voicemail(&self, call: u64, file: &str, seconds: f64, at: u64) {
        let data = match tokio::fs::read(file).await {
            Ok(d) => Bytes::from(d),
            Err(e) => return tracing::warn!("telegram: the voicemail {file}: {e}"),
        };
        let messages = self.with_call(call, |c| c.messages.clone());
        let caption = format!(
            "📼 The visitor's message ({} s, {}).",
            seconds.round() as u64,
            clock(at)
        );
        let sends = self.settings.chat_ids.iter().map(|&chat| {
            let reply_to = messages.iter().find(|m| m.chat == chat).map(|m| m.id);
            let (data, caption) = (data.clone(), caption.clone());
            async move {
                let label = format!("telegram: voicemail to chat {chat}");
                let sent = retry(&label, self.settings.retry_for, || {
                    self.api.send_video(chat, data.clone(), &caption, reply_to)
                })
                .await;
                if let Err(e) = sent {
                    tracing::warn!("{label}: {e}");
                }
            }
        });
        futures_util::future::join_all(sends).await;
    }

    /// Edits (and for a missed call, replies to) one ring message.
    async fn apply(&self, message: Sent, outcome: Outcome) {
        let chat = message.chat;
        let bound = self.settings.retry_for;
        let edited = match outcome {
            Outcome::Answered { at } => {
                format!("{}\n\n✅ Answered at {}.", message.text, clock(at))
            }
            Outcome::NotAnswered { reason, at } => {
                let reply = missed_text(reason, at);
                let label = format!("telegram: missed-call reply to chat {chat}");
                let sent = retry(&label, bound, || {
                    self.api.send_text(chat, &reply, None, Some(message.id))
                })
                .await;
                if let Err(e) = sent {
                    tracing::warn!("{label}: {e}");
                }
                format!("{}\n\n{}", message.text, missed_note(reason))
            }
        };
        let label = format!("telegram: follow-up edit in chat {chat}");
        if let Err(e) = retry(&label, bound, || self.api.edit(&message, &edited)).await {
            tracing::warn!("{label}: {e}");
        }
    }
}

/// The follow-up due for a call's messages, if any.
fn outcome_of(c: &CallState) -> Option<Outcome> {
    if let Some(at) = c.answered_at {
        return Some(Outcome::Answered { at });
    }
    c.ended
        .map(|(reason, at)| Outcome::NotAnswered { reason, at })
}

fn ring_text(at_ms: u64, link: &str) -> String {
    format!(
        "🔔 Someone is at the door ({}).\nAnswer: {link}",
        clock(at_ms)
    )
}

fn missed_text(reason: EndReason, at_ms: u64) -> String {
    match reason {
        EndReason::Unanswered => format!("Missed at {}: nobody answered the door.", clock(at_ms)),
        other => format!("Not answered at {}: {}.", clock(at_ms), why(other)),
    }
}

fn missed_note(reason: EndReason) -> String {
    match reason {
        EndReason::Unanswered => "Missed.".into(),
        other => format!("Not answered ({}).", why(other)),
    }
}

/// A call's end, for the owner.
pub(crate) fn why(reason: EndReason) -> &'static str {
    reason.for_owner()
}

/// `14:03`, local time.
pub(crate) fn clock(unix_ms: u64) -> String {
    local(unix_ms, "%H:%M")
}

/// `Mon 2 Jun 14:03`, local time.
pub(crate) fn day_and_clock(unix_ms: u64) -> String {
    local(unix_ms, "%a %-d %b %H:%M")
}

fn local(unix_ms: u64, format: &str) -> String {
    i64::try_from(unix_ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.with_timezone(&chrono::Local).format(format).to_string())
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_like_a_clock() {
        let t = clock(1_700_000_000_000);
        assert_eq!(t.len(), 5, "{t}");
        assert_eq!(&t[2..3], ":", "{t}");
        let d = day_and_clock(1_700_000_000_000);
        assert!(d.ends_with(&t), "{d}");
        assert_eq!(clock(u64::MAX), "?");
    }

    #[test]
    fn the_ring_text_carries_the_link() {
        let t = ring_text(1_700_000_000_000, "https://bell.example.org/?room=abc");
        assert!(t.contains("Someone is at the door"), "{t}");
        assert!(
            t.ends_with("Answer: https://bell.example.org/?room=abc"),
            "{t}"
        );
    }

    #[test]
    fn missed_and_not_answered_say_when_and_why() {
        let at = 1_700_000_000_000;
        let m = missed_text(EndReason::Unanswered, at);
        assert_eq!(
            m,
            format!("Missed at {}: nobody answered the door.", clock(at))
        );
        let n = missed_text(EndReason::NoOffer, at);
        assert!(n.starts_with("Not answered at "), "{n}");
        assert!(n.contains("could not be set up"), "{n}");
        assert_eq!(missed_note(EndReason::Unanswered), "Missed.");
    }

    #[test]
    fn outcomes_follow_the_call() {
        let mut c = CallState::default();
        assert!(outcome_of(&c).is_none());
        c.ended = Some((EndReason::Unanswered, 5));
        assert!(matches!(
            outcome_of(&c),
            Some(Outcome::NotAnswered {
                reason: EndReason::Unanswered,
                at: 5
            })
        ));
        c.answered_at = Some(3);
        assert!(matches!(outcome_of(&c), Some(Outcome::Answered { at: 3 })));
    }
}
