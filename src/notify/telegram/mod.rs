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
//! Under the picture: the Answer button (the link) and, with `[replies]`,
//! one button per quick reply ("I'm coming", ...), which the bot plays at
//! the door (see [`crate::door_voice`]); each reply played is a line of the
//! message ("🗣 “I'm coming” at 14:03."), and so is the visitor's message
//! when nobody answered ("📼 The visitor left a message (20 s): the video
//! below.", with the video as a reply).
//!
//! Each ring is one message per chat whose status line tells how the ring
//! went, edited as the call goes: "Ringing…"; at `answered` "Answered at
//! 14:03." (the button goes: the room is taken); at the end of an answered
//! call "Answered at 14:03 (1 min 20 s)."; an `ended` without an answer
//! "Missed at 14:04." or "Not answered at 14:04 (why).", with a reply
//! "Missed at 14:04: ..." as well (a reply buzzes the phone, an edit does
//! not). Once the ring is answered or over, the link leaves the text and
//! every button goes: an old message must not send anyone into a room that
//! is taken or gone, nor play a reply to nobody.
//!
//! The follow-ups run as spawned tasks and an edit may be retried for
//! seconds, so they can overtake each other, and a message can be delivered
//! late (the API was slow) after some of them. Hence an edit never carries
//! an event's news: it shows the call's state *as it is when the edit is
//! made*, one edit at a time per message, and it is skipped when the message
//! shows that already (same text, same buttons). Whoever comes last (an event or the delivery) leaves
//! the message right.
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
use tokio::sync::Mutex as AsyncMutex;

use self::api::{Api, ApiError, Button, ErrorKind, Keyboard, Sent};
use super::retry::retry;
use super::{Notifier, NotifyError, Ring};
use crate::call::event::CallEvent;
use crate::call::event::{EndReason, EventKind};
use crate::door_voice::DoorVoice;
use crate::history::store::span;
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
    /// Quick replies for the buttons, when `[replies]` is on.
    voice: Option<DoorVoice>,
    calls: Mutex<BTreeMap<u64, CallState>>,
}

type Snapshot = Picture;

/// What one call has done so far, as far as its messages are concerned.
#[derive(Default)]
struct CallState {
    /// The `ringing` event's time (Unix ms).
    rang_at: Option<u64>,
    snapshot: Option<Snapshot>,
    /// The viewer link, once the ring message is written.
    link: Option<String>,
    /// Ring messages delivered.
    messages: Vec<RingMessage>,
    /// The first `answered` (or `connected`): the call's length counts from it.
    answered_at: Option<u64>,
    ended: Option<(EndReason, u64)>,
    /// Lines under the status: the replies played at the door, the
    /// visitor's message.
    notes: Vec<String>,
}

/// A ring message in one chat and what it shows.
#[derive(Clone)]
struct RingMessage {
    sent: Sent,
    /// Its buttons as delivered (without the Answer button when Telegram
    /// refused the link).
    keyboard: Option<Keyboard>,
    /// Held while the message is edited, so that its edits do not overtake
    /// each other.
    shown: Arc<AsyncMutex<Shown>>,
}

/// What a ring message shows now.
struct Shown {
    text: String,
    keyboard: Option<Keyboard>,
    /// The missed-call reply went out (or was given up).
    replied: bool,
}

/// The last line of a ring message: how the ring went so far.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Status {
    Ringing,
    /// Answered at `at`; the call goes on.
    Answered {
        at: u64,
    },
    /// Answered at `at`, over at `ended`.
    Talked {
        at: u64,
        ended: u64,
    },
    NotAnswered {
        reason: EndReason,
        at: u64,
    },
}

impl Status {
    /// The ring is over: the link is dead.
    fn over(self) -> bool {
        matches!(self, Status::Talked { .. } | Status::NotAnswered { .. })
    }
}

impl TelegramNotifier {
    /// `pictures`: the ring's picture, shared with the history.
    /// `voice`: quick replies under each ring message.
    pub fn new(
        api: Api,
        settings: TelegramSettings,
        pictures: RingPictures,
        voice: Option<DoorVoice>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                api,
                settings,
                pictures,
                voice,
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
            let sends = sends.map(|s| async { s.await.map(|_| ()) });
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
        self.with_call(ring.call, |c| c.link = Some(ring.link.clone()));
        let photo = match snapshot {
            Some(s) => s.await,
            None => None,
        };
        let text = ring_text(rang_at, Some(&ring.link), Status::Ringing, &[]);
        let answer = match reqwest::Url::parse(&ring.link) {
            Ok(url) => Some(Button {
                text: ANSWER.into(),
                url,
            }),
            Err(e) => {
                tracing::warn!("telegram: the viewer link is not a URL ({e}); no Answer button");
                None
            }
        };
        let replies = self.voice.iter().flat_map(|v| {
            v.quick()
                .iter()
                .enumerate()
                .map(|(i, q)| (format!("🗣 {}", q.text), v.button_data(ring.call, i)))
        });
        let keyboard = Keyboard {
            answer,
            replies: replies.collect(),
        };
        // Each chat's message is brought up to date as soon as it is there,
        // not after the slowest chat's.
        let (photo, text, keyboard, call) = (&photo, &text, Some(&keyboard), ring.call);
        let sends = self.settings.chat_ids.iter().map(|&chat| async move {
            let (sent, keyboard) = self
                .deliver(chat, photo.clone(), text, keyboard, "ring message")
                .await?;
            self.delivered(call, sent, keyboard).await;
            Ok(())
        });
        let errors = futures_util::future::join_all(sends)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
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
            .map(|&chat| self.deliver(chat, photo.clone(), &text, None, "ring notice"))
            .map(|s| async { s.await.map(|_| ()) });
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

    /// Sends one message to one chat, retried for `retry_for`; the message
    /// and the buttons it got.
    async fn deliver(
        &self,
        chat: i64,
        photo: Option<Bytes>,
        text: &str,
        keyboard: Option<&Keyboard>,
        what: &str,
    ) -> Result<(Sent, Option<Keyboard>), String> {
        let label = format!("telegram: {what} to chat {chat}");
        retry(&label, self.settings.retry_for, || {
            self.send_once(chat, photo.clone(), text, keyboard.cloned())
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
        mut keyboard: Option<Keyboard>,
    ) -> Result<(Sent, Option<Keyboard>), ApiError> {
        let mut adaptations = 0;
        loop {
            let k = keyboard.as_ref();
            let result = match &photo {
                Some(jpeg) => self.api.send_photo(chat, jpeg.clone(), text, k).await,
                None => self.api.send_text(chat, text, k, None).await,
            };
            adaptations += 1;
            match result {
                Err(e)
                    if e.kind == ErrorKind::ButtonRefused
                        && k.is_some_and(|k| k.answer.is_some())
                        && adaptations < 3 =>
                {
                    tracing::warn!(
                        "telegram: chat {chat}: Telegram refused the Answer button for this \
                         link ({e}); sending the link in the text only (Telegram wants a public \
                         http(s) link: see signaling.viewer_link)"
                    );
                    if let Some(k) = keyboard.as_mut() {
                        k.answer = None;
                    }
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
                other => return other.map(|sent| (sent, keyboard)),
            }
        }
    }

    /// A ring message arrived: remember it, and bring it up to date with
    /// what happened meanwhile.
    async fn delivered(&self, call: u64, sent: Sent, keyboard: Option<Keyboard>) {
        let message = RingMessage {
            shown: Arc::new(AsyncMutex::new(Shown {
                text: sent.text.clone(),
                keyboard: keyboard.clone(),
                replied: false,
            })),
            sent,
            keyboard,
        };
        self.with_call(call, |c| c.messages.push(message.clone()));
        self.update(call, message).await;
    }

    async fn follow_up(&self, event: CallEvent) {
        let call = event.event.call;
        if let EventKind::VoicemailRecorded { file, seconds } = &event.event.kind {
            let messages = self.with_call(call, |c| {
                c.notes.push(format!(
                    "📼 The visitor left a message ({} s): the video below.",
                    seconds.round() as u64
                ));
                c.messages.clone()
            });
            let updates = messages.into_iter().map(|m| self.update(call, m));
            futures_util::future::join_all(updates).await;
            return self.voicemail(call, file, *seconds, event.ts).await;
        }
        let messages = match &event.event.kind {
            EventKind::Ringing => {
                self.prepare(call, Some(event.ts));
                return;
            }
            EventKind::Answered | EventKind::Connected => self.with_call(call, |c| {
                if c.answered_at.is_some() || c.ended.is_some() {
                    return Vec::new();
                }
                c.answered_at = Some(event.ts);
                c.messages.clone()
            }),
            EventKind::Ended { reason } => self.with_call(call, |c| {
                if c.ended.is_some() {
                    return Vec::new();
                }
                c.ended = Some((*reason, event.ts));
                c.snapshot = None;
                c.messages.clone()
            }),
            EventKind::ReplyPlayed { what, seconds, .. } if what == "voice" => {
                self.with_call(call, |c| {
                    c.notes.push(format!(
                        "🗣 A voice message ({} s) at {}.",
                        seconds.round().max(1.0) as u64,
                        clock(event.ts)
                    ));
                    c.messages.clone()
                })
            }
            EventKind::ReplyPlayed { text, .. } => self.with_call(call, |c| {
                c.notes.push(format!("🗣 “{text}” at {}.", clock(event.ts)));
                c.messages.clone()
            }),
            _ => return,
        };
        let updates = messages.into_iter().map(|m| self.update(call, m));
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
            let reply_to = messages
                .iter()
                .find(|m| m.sent.chat == chat)
                .map(|m| m.sent.id);
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

    /// Edits one ring message to show the call as it is now (and for a
    /// missed call, replies to it once).
    async fn update(&self, call: u64, message: RingMessage) {
        let mut shown = message.shown.lock().await;
        // Read under the message's lock: an update that waited for an older
        // one sees what happened meanwhile.
        let (status, text) = self.with_call(call, |c| {
            let status = status_of(c);
            let text = ring_text(
                c.rang_at.unwrap_or_default(),
                c.link.as_deref(),
                status,
                &c.notes,
            );
            (status, text)
        });
        // The buttons stay while the ring waits for an answer.
        let keyboard = match status {
            Status::Ringing => message.keyboard.clone(),
            _ => None,
        };
        if text == shown.text && keyboard == shown.keyboard {
            return;
        }
        let sent = &message.sent;
        let chat = sent.chat;
        let bound = self.settings.retry_for;
        if let Status::NotAnswered { reason, at } = status {
            if !shown.replied {
                shown.replied = true;
                let reply = missed_text(reason, at);
                let label = format!("telegram: missed-call reply to chat {chat}");
                let result = retry(&label, bound, || {
                    self.api.send_text(chat, &reply, None, Some(sent.id))
                })
                .await;
                if let Err(e) = result {
                    tracing::warn!("{label}: {e}");
                }
            }
        }
        let label = format!("telegram: follow-up edit in chat {chat}");
        match retry(&label, bound, || {
            self.api.edit(sent, &text, keyboard.as_ref())
        })
        .await
        {
            Ok(()) => {
                shown.text = text;
                shown.keyboard = keyboard;
            }
            // The next update tries again.
            Err(e) => tracing::warn!("{label}: {e}"),
        }
    }
}

/// How the ring went so far.
fn status_of(c: &CallState) -> Status {
    match (c.answered_at, c.ended) {
        (Some(at), Some((_, ended))) => Status::Talked { at, ended },
        (Some(at), None) => Status::Answered { at },
        (None, Some((reason, at))) => Status::NotAnswered { reason, at },
        (None, None) => Status::Ringing,
    }
}

/// A ring message: who rang when, the link while the ring waits for an
/// answer, the status line, and what happened since (the replies played
/// at the door, the visitor's message).
fn ring_text(rang_at: u64, link: Option<&str>, status: Status, notes: &[String]) -> String {
    let mut text = match (status, link) {
        (Status::Ringing, Some(link)) => format!(
            "🔔 Someone is at the door ({}).\nAnswer: {link}",
            clock(rang_at)
        ),
        _ if status.over() => format!("🔔 Someone rang at {}.", clock(rang_at)),
        _ => format!("🔔 Someone is at the door ({}).", clock(rang_at)),
    };
    text.push_str("\n\n");
    text.push_str(&status_line(status));
    for note in notes {
        text.push('\n');
        text.push_str(note);
    }
    text
}

fn status_line(status: Status) -> String {
    match status {
        Status::Ringing => "⏳ Ringing…".into(),
        Status::Answered { at } => format!("✅ Answered at {}.", clock(at)),
        Status::Talked { at, ended } => format!(
            "✅ Answered at {} ({}).",
            clock(at),
            span(ended.saturating_sub(at))
        ),
        Status::NotAnswered {
            reason: EndReason::Unanswered,
            at,
        } => format!("❌ Missed at {}.", clock(at)),
        Status::NotAnswered { reason, at } => {
            format!("❌ Not answered at {} ({}).", clock(at), why(reason))
        }
    }
}

/// The reply to a missed ring (it buzzes the phone, an edit does not).
fn missed_text(reason: EndReason, at_ms: u64) -> String {
    match reason {
        EndReason::Unanswered => format!("Missed at {}: nobody answered the door.", clock(at_ms)),
        other => format!("Not answered at {}: {}.", clock(at_ms), why(other)),
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

    const LINK: &str = "https://bell.example.org/?room=abc";

    #[test]
    fn the_ring_text_carries_the_link_while_it_is_of_use() {
        let rang = 1_700_000_000_000;
        let t = ring_text(rang, Some(LINK), Status::Ringing, &[]);
        assert_eq!(
            t,
            format!(
                "🔔 Someone is at the door ({}).\nAnswer: {LINK}\n\n⏳ Ringing…",
                clock(rang)
            )
        );
        let at = rang + 20_000;
        let t = ring_text(rang, Some(LINK), Status::Answered { at }, &[]);
        assert_eq!(
            t,
            format!(
                "🔔 Someone is at the door ({}).\n\n✅ Answered at {}.",
                clock(rang),
                clock(at)
            ),
            "the room is taken: no link"
        );
        let t = ring_text(
            rang,
            Some(LINK),
            Status::Talked {
                at,
                ended: at + 80_400,
            },
            &[],
        );
        assert_eq!(
            t,
            format!(
                "🔔 Someone rang at {}.\n\n✅ Answered at {} (1 min 20 s).",
                clock(rang),
                clock(at)
            )
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
        let missed = Status::NotAnswered {
            reason: EndReason::Unanswered,
            at,
        };
        let t = ring_text(at - 30_000, Some(LINK), missed, &[]);
        assert!(!t.contains(LINK), "the ring is over: {t}");
        assert!(
            t.ends_with(&format!("\n\n❌ Missed at {}.", clock(at))),
            "{t}"
        );
        let failed = Status::NotAnswered {
            reason: EndReason::MediaFailed,
            at,
        };
        assert_eq!(
            status_line(failed),
            format!("❌ Not answered at {} (the connection failed).", clock(at))
        );
    }

    #[test]
    fn the_status_follows_the_call() {
        let mut c = CallState::default();
        assert_eq!(status_of(&c), Status::Ringing);
        c.ended = Some((EndReason::Unanswered, 5));
        assert_eq!(
            status_of(&c),
            Status::NotAnswered {
                reason: EndReason::Unanswered,
                at: 5
            }
        );
        c.ended = None;
        c.answered_at = Some(3);
        assert_eq!(status_of(&c), Status::Answered { at: 3 });
        c.ended = Some((EndReason::ViewerLeft, 9));
        assert_eq!(status_of(&c), Status::Talked { at: 3, ended: 9 });
    }
}
