//! The owner's bot: commands over Telegram long polling.
//!
//! `/status` (idle or in a call, uptime, last ring), `/snapshot` (a photo
//! now), `/ring` (rings like the button: tests the whole chain), `/live`,
//! `/history` (the last 10 rings, with pictures), `/help`. With `[replies]`,
//! the quick-reply buttons under ring messages and voice messages sent
//! during a ring, both played at the door (see [`crate::door_voice`]).
//!
//! Only chats in `notify.telegram.chat_ids` are answered. Anyone can find a
//! bot and write to it, so other chats are ignored and logged at info with
//! their chat id (which is also how the owner finds theirs, see
//! docs/telegram.md) and at most the command word, never the rest of the text.
//! Commands sent while the doorbell was not polling (stopped, offline) are
//! ignored when older than two minutes: a `/ring` from this morning must not
//! ring tonight. Only those can be old: what a poll returns right after a
//! successful one was sent while the bot was listening, so it is taken
//! whatever its date says (a system clock stepped by NTP, or wrong for
//! hours, must not make the bot deaf); the age of the rest (the first poll
//! after the start or after the API failed) is judged by the system clock.
//!
//! The poller is a loop around one `getUpdates` at a time that races
//! shutdown; when the API is down it backs off (1 s doubling to 60 s) rather
//! than spin, and a refused token stops it with an error in the log. Nothing
//! here can hold up a call: commands go to the call loop as [`Command`]s like
//! any button.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::api::{Api, Callback, ErrorKind, Incoming, VoiceNote};
use super::{clock, day_and_clock, SNAPSHOT_LIMIT};
use crate::backoff::Backoff;
use crate::call::command::{Command, RingReply, StateKind, Status};
use crate::door_voice::DoorVoice;
use crate::history::{History, Row};
use crate::media::{ogg_opus, snapshot, unix_ms, MediaOpener};
use crate::notify::retry::retry;

/// How long one `getUpdates` waits for a message (below the client's 17 s).
const POLL_WAIT: Duration = Duration::from_secs(10);
/// Longest pause between polls while the API fails.
const POLL_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Older commands are ignored (seconds).
const STALE_AFTER_S: i64 = 120;
/// Replies are retried this long at most.
const REPLY_RETRY: Duration = Duration::from_secs(10);
/// How long the call loop gets to answer a command.
const COMMAND_LIMIT: Duration = Duration::from_secs(5);
/// Rows in `/history`, and how many of them come with their picture.
const HISTORY_ROWS: usize = 10;
const HISTORY_PHOTOS: usize = 3;

const HELP: &str = "Commands:\n\
/status - idle or in a call, uptime, last ring\n\
/snapshot - a photo from the door now\n\
/ring - ring like the button (tests the whole chain)\n\
/live - look at the door now (no ring; the link comes to you only)\n\
/history - the last 10 rings, with pictures";

/// What the bot needs.
pub struct BotSettings {
    pub chat_ids: Vec<i64>,
    /// Answer commands (else only check the token at start).
    pub commands: bool,
    pub settle_frames: usize,
}

/// Starts the bot: a token check, then (when commands are on) the poller and
/// the ring history. Everything stops on `cancel`.
pub fn spawn(
    api: Api,
    settings: BotSettings,
    media: Arc<dyn MediaOpener>,
    commands: mpsc::Sender<Command>,
    history: History,
    voice: Option<DoorVoice>,
    cancel: CancellationToken,
) {
    let bot = Arc::new(Bot {
        api,
        settings,
        media,
        commands,
        history,
        voice,
        username: Mutex::new(None),
    });
    tokio::spawn(async move {
        if !bot.check_token(&cancel).await {
            return;
        }
        if bot.settings.commands {
            bot.poll(cancel).await;
        }
    });
}

struct Bot {
    api: Api,
    settings: BotSettings,
    media: Arc<dyn MediaOpener>,
    commands: mpsc::Sender<Command>,
    history: History,
    /// Plays quick replies and voice messages at the door (`[replies]`).
    voice: Option<DoorVoice>,
    /// `@name` from getMe, to tell our commands from other bots' in groups.
    username: Mutex<Option<String>>,
}

/// The commands the bot knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BotCommand {
    Status,
    Snapshot,
    Ring,
    Live,
    History,
    Help,
    Unknown,
}

impl BotCommand {
    /// `/status`, `/status@doorbell_bot extra words`, ... The second value is
    /// the bot name after `@`, if any. `None` when `text` is no command.
    pub fn parse(text: &str) -> Option<(BotCommand, Option<&str>)> {
        let word = text.split_whitespace().next()?.strip_prefix('/')?;
        let (name, bot) = match word.split_once('@') {
            Some((name, bot)) => (name, Some(bot)),
            None => (word, None),
        };
        let command = match name.to_ascii_lowercase().as_str() {
            "status" => BotCommand::Status,
            "snapshot" => BotCommand::Snapshot,
            "ring" => BotCommand::Ring,
            "live" => BotCommand::Live,
            "history" => BotCommand::History,
            "help" | "start" => BotCommand::Help,
            _ => BotCommand::Unknown,
        };
        Some((command, bot))
    }
}

/// The command word of a message for a log line: `/ring`, or `a message`.
/// Never more of the text (it is someone else's).
fn loggable_word(text: Option<&str>) -> String {
    text.and_then(|t| t.split_whitespace().next())
        .filter(|w| {
            w.starts_with('/')
                && w.len() <= 40
                && w[1..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'@')
        })
        .map_or_else(|| "a message".to_string(), str::to_string)
}

impl Bot {
    /// getMe until it works; false if the token is refused or on shutdown.
    async fn check_token(&self, cancel: &CancellationToken) -> bool {
        let mut failures = 0;
        loop {
            let result = tokio::select! {
                _ = cancel.cancelled() => return false,
                r = self.api.me() => r,
            };
            match result {
                Ok(name) => {
                    tracing::info!(
                        "telegram: bot {name} ready; ring messages to {} chat(s); commands {}",
                        self.settings.chat_ids.len(),
                        if self.settings.commands { "on" } else { "off" }
                    );
                    *self.username.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(name.trim_start_matches('@').to_string());
                    return true;
                }
                Err(e) if e.kind == ErrorKind::TokenRefused => {
                    tracing::error!("telegram: {e}; ring messages and commands will fail");
                    return false;
                }
                Err(e) => {
                    failures += 1;
                    let wait = POLL_BACKOFF.wait(failures);
                    tracing::warn!(
                        "telegram: cannot check the bot (retrying in {:.1} s): {e}",
                        wait.as_secs_f64()
                    );
                    tokio::select! {
                        _ = cancel.cancelled() => return false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    async fn poll(self: Arc<Self>, cancel: CancellationToken) {
        let mut offset = 0i32;
        let mut failures = 0u32;
        // Whether the last poll succeeded: then this poll's updates were
        // sent while we were listening.
        let mut listening = false;
        loop {
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.api.updates(offset, POLL_WAIT) => r,
            };
            match result {
                Ok(updates) => {
                    if failures > 0 {
                        tracing::info!("telegram: polling for commands works again");
                    }
                    failures = 0;
                    for update in updates {
                        offset = offset.max(
                            i32::try_from(update.update_id)
                                .unwrap_or(i32::MAX)
                                .saturating_add(1),
                        );
                        self.clone().handle(update, listening);
                    }
                    listening = true;
                }
                Err(e) if e.kind == ErrorKind::TokenRefused => {
                    tracing::error!("telegram: {e}; commands are off until the doorbell restarts");
                    return;
                }
                Err(e) => {
                    listening = false;
                    failures += 1;
                    let mut wait = POLL_BACKOFF.wait(failures);
                    if let ErrorKind::RetryAfter(d) = e.kind {
                        wait = wait.max(d);
                    }
                    let hint = if e.kind == ErrorKind::Conflict {
                        " (only one program may poll a bot: is a second doorbell, or a curl \
                         getUpdates, using this token? Or is a webhook set?)"
                    } else {
                        ""
                    };
                    tracing::warn!(
                        "telegram: polling for commands failed, retrying in {:.1} s: {e}{hint}",
                        wait.as_secs_f64()
                    );
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Checks who wrote and when, then runs the command in its own task.
    /// `live`: the update came while the bot was listening (see the module
    /// documentation), so its age does not matter.
    fn handle(self: Arc<Self>, update: Incoming, live: bool) {
        let Some(chat) = update.chat else {
            tracing::debug!(
                update = update.update_id,
                "telegram: ignored an update that is no message"
            );
            return;
        };
        let word = match (&update.callback, &update.voice) {
            (Some(_), _) => "a button press".to_string(),
            (_, Some(_)) => "a voice message".to_string(),
            _ => loggable_word(update.text.as_deref()),
        };
        if !self.settings.chat_ids.contains(&chat) {
            tracing::info!(
                chat,
                "telegram: ignored {word} from chat {chat}, which is not in notify.telegram.chat_ids"
            );
            if let Some(cb) = update.callback {
                tokio::spawn(async move {
                    self.answer(&cb, "This chat may not use the doorbell.")
                        .await;
                });
            }
            return;
        }
        if let Some(cb) = update.callback {
            tracing::info!(chat, "telegram: {word} from chat {chat}");
            tokio::spawn(async move { self.button(cb).await });
            return;
        }
        let media = update.voice.is_some() || update.other_media;
        if media && self.stale(&update, &word, chat, live) {
            return;
        }
        if let Some(note) = update.voice {
            tracing::info!(
                chat,
                "telegram: {word} from chat {chat} ({} s)",
                note.seconds
            );
            tokio::spawn(async move { self.voice_message(chat, update.message_id, note).await });
            return;
        }
        if update.other_media {
            // Only while the door rings: then a file is most likely meant for
            // the door; otherwise it is none of the doorbell's business.
            if let Some(door) = self.voice.clone() {
                if door.may_play_voice(None).is_ok() {
                    let refusal =
                        crate::door_voice::Refusal::NotVoice("an audio file or a document".into());
                    let id = update.message_id;
                    tokio::spawn(
                        async move { self.reply_to(chat, &refusal.to_string(), id).await },
                    );
                }
            }
            return;
        }
        let Some((command, addressee)) = update.text.as_deref().and_then(BotCommand::parse) else {
            return;
        };
        let ours = self
            .username
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let (Some(to), Some(me)) = (addressee, ours) {
            if !to.eq_ignore_ascii_case(&me) {
                return;
            }
        }
        if self.stale(&update, &word, chat, live) {
            return;
        }
        if command == BotCommand::Unknown && chat < 0 {
            // In a group, other bots' commands are none of our business.
            return;
        }
        tracing::info!(chat, "telegram: {word} from chat {chat}");
        tokio::spawn(async move {
            let reply = self.run(chat, command).await;
            if let Some(text) = reply {
                self.reply(chat, &text).await;
            }
        });
    }

    /// Whether a message is too old to act on (see the module
    /// documentation), logged.
    fn stale(&self, update: &Incoming, word: &str, chat: i64, live: bool) -> bool {
        let age = unix_ms() as i64 / 1000 - update.date;
        if age > STALE_AFTER_S && live {
            tracing::warn!(
                "telegram: {word} from chat {chat} came just now but is dated {age} s ago by \
                 this system's clock: is the clock wrong (NTP not synchronised yet)?"
            );
        } else if age > STALE_AFTER_S {
            tracing::info!(
                chat,
                "telegram: ignored {word} from chat {chat}: sent {age} s ago, while the doorbell was not listening"
            );
            return true;
        }
        false
    }

    /// A quick-reply button was pressed: play it, and say so on the
    /// owner's screen.
    async fn button(&self, cb: Callback) {
        let text = match (&self.voice, cb.data.as_deref()) {
            (Some(door), Some(data)) => match door.press(data) {
                Ok(text) => format!("Playing at the door: “{text}”"),
                Err(refusal) => refusal.to_string(),
            },
            _ => "This button does nothing any more.".into(),
        };
        self.answer(&cb, &text).await;
    }

    async fn answer(&self, cb: &Callback, text: &str) {
        let label = "telegram: answer to a button press";
        if let Err(e) = retry(label, REPLY_RETRY, || {
            self.api.answer_callback(&cb.id, text)
        })
        .await
        {
            tracing::warn!("{label}: {e}");
        }
    }

    /// A voice message: checked (a ring waits for an answer, not too long),
    /// fetched, decoded and played at the door; the owner is told which.
    async fn voice_message(&self, chat: i64, message: i32, note: VoiceNote) {
        let reply = match self.play_voice(&note, chat < 0).await {
            Ok(seconds) => format!(
                "▶ Playing your voice message at the door ({} s).",
                seconds.round().max(1.0) as u64
            ),
            Err(None) => return,
            Err(Some(text)) => {
                tracing::info!(chat, "telegram: the voice message is not played: {text}");
                text
            }
        };
        self.reply_to(chat, &reply, message).await;
    }

    /// Plays a voice message; its length, or the reply that says why not
    /// (`None`: say nothing; in a group, a voice message while nothing rings
    /// is most likely for the family, not for the door).
    async fn play_voice(&self, note: &VoiceNote, group: bool) -> Result<f64, Option<String>> {
        use crate::door_voice::Refusal;
        let Some(door) = self.voice.clone() else {
            return Err((!group).then(|| {
                "Voice messages are not played at this door (see [replies] in the doorbell's \
                 config; it needs a speaker)."
                    .to_string()
            }));
        };
        match door.may_play_voice(Some(note.seconds)) {
            Ok(()) => {}
            Err(Refusal::NotRinging) if group => return Err(None),
            Err(r) => return Err(Some(r.to_string())),
        }
        let label = "telegram: fetching a voice message";
        let data = retry(label, REPLY_RETRY, || {
            self.api.download(&note.file_id, ogg_opus::MAX_BYTES)
        })
        .await
        .map_err(|e| {
            Some(format!(
                "The voice message could not be fetched from Telegram: {e}."
            ))
        })?;
        tokio::task::spawn_blocking(move || door.play_voice(&data))
            .await
            .map_err(|e| Some(format!("The voice message could not be played: {e}.")))?
            .map_err(|r| Some(r.to_string()))
    }

    /// Carries out a command; the text reply, if it is not a photo.
    async fn run(&self, chat: i64, command: BotCommand) -> Option<String> {
        match command {
            BotCommand::Status => Some(match self.status().await {
                Some(status) => {
                    let last = self.history.last_ring();
                    status_text(&status, last.as_ref())
                }
                None => "The doorbell did not answer in time.".into(),
            }),
            BotCommand::Snapshot => self.snapshot(chat).await,
            BotCommand::Live => {
                let answer = self.press(|reply| Command::Live { reply }).await;
                Some(match answer {
                    Some(RingReply::Live { link }) => {
                        format!("Live view (no ring, nobody else told; it stops by itself): {link}")
                    }
                    Some(RingReply::Busy) => {
                        "Busy: a call is in progress (its link is in the ring message).".into()
                    }
                    Some(a) => format!("The live view did not start: {a}."),
                    None => "The doorbell did not answer in time.".into(),
                })
            }
            BotCommand::Ring => {
                let answer = self.press(|reply| Command::Ring { reply }).await;
                Some(match answer {
                    Some(RingReply::Ringing { .. }) => {
                        "Ringing, like a press of the button: the ring message follows.".into()
                    }
                    Some(RingReply::Busy) => "Busy: a call is in progress.".into(),
                    Some(a) => format!("The ring did not start: {a}."),
                    None => "The doorbell did not answer in time.".into(),
                })
            }
            BotCommand::History => self.history(chat).await,
            BotCommand::Help | BotCommand::Unknown => Some(HELP.into()),
        }
    }

    /// `/history`: the list, then the pictures of the newest rows that have
    /// one, each captioned with its line.
    async fn history(&self, chat: i64) -> Option<String> {
        let rows = self.history.recent(HISTORY_ROWS);
        self.reply(chat, &history_text(&rows)).await;
        let with_pictures = rows.iter().filter_map(|r| Some((r, r.snapshot.as_ref()?)));
        for (row, path) in with_pictures.take(HISTORY_PHOTOS) {
            let photo = match tokio::fs::read(path).await {
                Ok(data) => bytes::Bytes::from(data),
                Err(e) => {
                    tracing::warn!("telegram: /history: {}: {e}", path.display());
                    continue;
                }
            };
            let caption = row_text(row);
            let label = format!("telegram: history photo to chat {chat}");
            let sent = retry(&label, REPLY_RETRY, || {
                self.api.send_photo(chat, photo.clone(), &caption, None)
            })
            .await;
            if let Err(e) = sent {
                tracing::warn!("{label}: {e}");
            }
        }
        None
    }

    /// Sends a press (`Ring` or `Live`) to the call loop; its reply, if it
    /// came in time.
    async fn press(
        &self,
        command: impl FnOnce(Option<oneshot::Sender<RingReply>>) -> Command,
    ) -> Option<RingReply> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(command(Some(tx))).await.ok()?;
        tokio::time::timeout(COMMAND_LIMIT, rx).await.ok()?.ok()
    }

    async fn status(&self) -> Option<Status> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Status { reply: tx })
            .await
            .ok()?;
        tokio::time::timeout(COMMAND_LIMIT, rx).await.ok()?.ok()
    }

    /// Sends a photo now; a text reply when there is none.
    async fn snapshot(&self, chat: i64) -> Option<String> {
        let media = self.media.clone();
        let settle = self.settings.settle_frames;
        let work = tokio::task::spawn_blocking(move || snapshot::take(media.as_ref(), settle));
        let failure = match tokio::time::timeout(SNAPSHOT_LIMIT, work).await {
            Ok(Ok(Ok(Some(jpeg)))) => {
                let caption = format!("At the door now ({}).", clock(unix_ms()));
                let photo = bytes::Bytes::from(jpeg.data);
                let label = format!("telegram: snapshot to chat {chat}");
                let sent = retry(&label, REPLY_RETRY, || {
                    self.api.send_photo(chat, photo.clone(), &caption, None)
                })
                .await;
                if let Err(e) = sent {
                    tracing::warn!("{label}: {e}");
                }
                return None;
            }
            Ok(Ok(Ok(None))) => {
                return Some("There is no camera (video.source is \"none\").".into())
            }
            Ok(Ok(Err(e))) => e.to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!(
                "the camera gave no picture in {} s",
                SNAPSHOT_LIMIT.as_secs()
            ),
        };
        let busy = self
            .status()
            .await
            .is_some_and(|s| s.state != StateKind::Idle);
        tracing::warn!("telegram: /snapshot failed: {failure}");
        Some(if busy {
            "The camera is busy with a call; try again when it is over.".into()
        } else {
            format!("No snapshot: {failure}.")
        })
    }

    async fn reply(&self, chat: i64, text: &str) {
        self.send(chat, text, None).await;
    }

    /// A reply to the owner's message `id`.
    async fn reply_to(&self, chat: i64, text: &str, id: i32) {
        self.send(chat, text, Some(id)).await;
    }

    async fn send(&self, chat: i64, text: &str, reply_to: Option<i32>) {
        let label = format!("telegram: reply to chat {chat}");
        if let Err(e) = retry(&label, REPLY_RETRY, || {
            self.api.send_text(chat, text, None, reply_to)
        })
        .await
        {
            tracing::warn!("{label}: {e}");
        }
    }
}

/// 1 s, 2 s, 4 s, ... 60 s, ±20 %: every doorbell polling the same API comes
/// back from an outage at its own moment.
const POLL_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), POLL_BACKOFF_MAX, 0.2);

/// The schedule before jitter.
#[cfg(test)]
fn poll_backoff(failures: u32) -> Duration {
    POLL_BACKOFF.base(failures)
}

fn status_text(status: &Status, last: Option<&Row>) -> String {
    let state = match status.state {
        StateKind::Idle => "Idle.".to_string(),
        StateKind::InCall => "In a call.".to_string(),
        StateKind::Ending => "Ending a call.".to_string(),
        other => format!("Ringing ({}).", other.name().replace('_', " ")),
    };
    let up = status.uptime_s;
    let uptime = if up < 3600 {
        format!("{} min", up / 60)
    } else if up < 86_400 {
        format!("{} h {:02} min", up / 3600, up / 60 % 60)
    } else {
        format!("{} d {} h", up / 86_400, up / 3600 % 24)
    };
    let signaling = if status.signaling_up {
        "connected"
    } else {
        "not connected"
    };
    let last = match last {
        Some(r) => format!("Last ring: {}.", row_text(r)),
        None => "No ring yet.".into(),
    };
    format!("{state}\nUp {uptime}. Signaling server: {signaling}.\n{last}")
}

/// `/history`: newest first, one line per ring or live view.
fn history_text(rows: &[Row]) -> String {
    if rows.is_empty() {
        return "No ring yet.".into();
    }
    let mut text = format!("The last {}, newest first:", rows.len());
    for r in rows {
        text.push('\n');
        text.push_str(&row_text(r));
    }
    text
}

/// `Mon 2 Jun 14:03, answered (talked 1 min 20 s)`.
fn row_text(r: &Row) -> String {
    format!("{}, {}", day_and_clock(r.started_ms), r.describe())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Outcome;
    #[test]
    fn commands_parse_like_telegram_sends_them() {
        assert_eq!(
            BotCommand::parse("/status"),
            Some((BotCommand::Status, None))
        );
        assert_eq!(
            BotCommand::parse("/Snapshot@door_bot please"),
            Some((BotCommand::Snapshot, Some("door_bot")))
        );
        assert_eq!(BotCommand::parse("/start"), Some((BotCommand::Help, None)));
        assert_eq!(
            BotCommand::parse("/ring now"),
            Some((BotCommand::Ring, None))
        );
        assert_eq!(
            BotCommand::parse("/history"),
            Some((BotCommand::History, None))
        );
        assert_eq!(
            BotCommand::parse("/what"),
            Some((BotCommand::Unknown, None))
        );
        assert_eq!(BotCommand::parse("hello /status"), None);
        assert_eq!(BotCommand::parse(""), None);
    }

    #[test]
    fn logs_get_the_command_word_and_nothing_else() {
        assert_eq!(loggable_word(Some("/ring my secret words")), "/ring");
        assert_eq!(loggable_word(Some("my secret words")), "a message");
        assert_eq!(loggable_word(Some("/ring\u{1b}[31m")), "a message");
        assert_eq!(loggable_word(None), "a message");
        let long = format!("/{}", "a".repeat(60));
        assert_eq!(loggable_word(Some(&long)), "a message");
    }

    #[test]
    fn polling_backs_off_up_to_a_minute() {
        let waits: Vec<u64> = (1..=8).map(|n| poll_backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    fn row(id: i64, started_ms: u64, outcome: Outcome) -> Row {
        Row {
            id,
            kind: crate::history::Kind::Ring,
            call: id as u64,
            room: "r".into(),
            started_ms,
            answered_ms: None,
            ended_ms: None,
            outcome,
            reason: None,
            snapshot: None,
            clip: None,
            bytes: 0,
        }
    }

    #[test]
    fn history_lines_say_how_each_ring_went() {
        assert_eq!(history_text(&[]), "No ring yet.");
        let t = 1_700_000_000_000;
        let answered = Row {
            answered_ms: Some(t + 8_000),
            ended_ms: Some(t + 88_000),
            reason: Some("viewer_left".into()),
            ..row(3, t, Outcome::Answered)
        };
        let missed = Row {
            ended_ms: Some(t + 30_000),
            reason: Some("unanswered".into()),
            ..row(2, t, Outcome::Missed)
        };
        let failed = Row {
            reason: Some("signaling_unavailable".into()),
            ..row(1, t, Outcome::Failed)
        };
        let live = Row {
            kind: crate::history::Kind::Live,
            ended_ms: Some(t + 45_000),
            ..row(5, t, Outcome::Answered)
        };
        let text = history_text(&[
            row(6, t, Outcome::Ringing),
            live,
            row(4, t, Outcome::Interrupted),
            answered,
            missed,
            failed,
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "The last 6, newest first:");
        let when = day_and_clock(t);
        assert_eq!(lines[1], format!("{when}, ringing now"));
        assert_eq!(lines[2], format!("{when}, live view (45 s)"));
        assert_eq!(
            lines[3],
            format!("{when}, not answered: the doorbell stopped")
        );
        assert_eq!(lines[4], format!("{when}, answered (talked 1 min 20 s)"));
        assert_eq!(lines[5], format!("{when}, missed"));
        assert_eq!(
            lines[6],
            format!("{when}, not answered: the signaling server could not be reached")
        );
    }

    #[test]
    fn status_reads_like_a_sentence() {
        let status = Status {
            state: StateKind::WaitingViewer,
            room: Some("secret-room".into()),
            calls: 3,
            signaling_up: true,
            uptime_s: 2 * 3600 + 5 * 60,
        };
        let last = row(3, 1_700_000_000_000, Outcome::Ringing);
        let text = status_text(&status, Some(&last));
        assert!(text.starts_with("Ringing (waiting viewer)."), "{text}");
        assert!(
            text.contains("Up 2 h 05 min. Signaling server: connected."),
            "{text}"
        );
        assert!(text.contains("Last ring: "), "{text}");
        assert!(
            !text.contains("secret-room"),
            "no room names in chats: {text}"
        );
        let idle = Status {
            state: StateKind::Idle,
            signaling_up: false,
            uptime_s: 42,
            ..status
        };
        assert_eq!(
            status_text(&idle, None),
            "Idle.\nUp 0 min. Signaling server: not connected.\nNo ring yet."
        );
    }
}
