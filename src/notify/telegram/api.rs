//! The Bot API as the doorbell uses it: the only module that imports teloxide.
//!
//! The calls (getMe, sendPhoto, sendVideo, sendMessage, editMessageCaption,
//! editMessageText, getUpdates, answerCallbackQuery, getFile and the file
//! download) through teloxide's `Requester`, without its
//! dispatcher: the doorbell runs its own loops so it decides about retries,
//! backoff and shutdown. Every error leaves this module as an [`ApiError`]
//! whose text has been through the token's redaction (teloxide's network
//! errors quote the request URL, which holds the token) and says whether
//! trying again can help.
//!
//! Things to know about teloxide 0.17 here: `Bot` derives `Debug` with the
//! token in it, so it is never formatted; on an HTTP 5xx answer it waits 10 s
//! before reporting the error (to spare an overloaded API), which our retries
//! count as part of the attempt; its HTTP client times a request out after
//! 17 s, which bounds every attempt and is why long polls ask for 10 s.
//! TLS is native-tls with certificate verification on.

use bytes::Bytes;
use futures_util::StreamExt;
use std::fmt;
use std::time::Duration;
use teloxide::net::Download;
use teloxide::payloads::setters::*;
use teloxide::requests::Requester;
use teloxide::types::{
    AllowedUpdate, CallbackQueryId, ChatId, FileId, InlineKeyboardButton, InlineKeyboardMarkup,
    InputFile, LinkPreviewOptions, Message, MessageId, ReplyParameters, Update, UpdateKind,
};
use teloxide::{ApiError as TgError, Bot, RequestError};

use crate::notify::retry::{Retry, Retryable};
use crate::notify::secret::Secret;

/// Error texts are cut to this many characters (an HTML error page is long).
const MAX_ERROR_TEXT: usize = 300;

/// A Bot API client for one token.
#[derive(Clone)]
pub struct Api {
    bot: Bot,
    token: Secret,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Api({}, token {})", self.bot.api_url(), self.token)
    }
}

/// An inline URL button under a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Button {
    pub text: String,
    pub url: reqwest::Url,
}

/// The buttons under a ring message: the Answer link, then one row per
/// quick reply (its text and its callback data).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Keyboard {
    pub answer: Option<Button>,
    pub replies: Vec<(String, String)>,
}

impl Keyboard {
    pub fn is_empty(&self) -> bool {
        self.answer.is_none() && self.replies.is_empty()
    }
}

/// A message the bot sent, enough to edit it or reply to it later.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub chat: i64,
    pub id: i32,
    /// A photo (its text is a caption) or a text message.
    pub photo: bool,
    /// The caption or text as sent.
    pub text: String,
}

/// A message to the bot (or a press of one of its buttons), as long
/// polling delivers it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Incoming {
    pub update_id: u32,
    /// `None` for updates that are neither messages nor button presses.
    pub chat: Option<i64>,
    /// The message's id in its chat (to reply to it).
    pub message_id: i32,
    pub text: Option<String>,
    /// When it was sent, Unix seconds (0 for a button press).
    pub date: i64,
    /// A voice message.
    pub voice: Option<VoiceNote>,
    /// Sound or a file that is not a voice message (an audio file, a
    /// document, a round video).
    pub other_media: bool,
    /// A press of an inline button with callback data.
    pub callback: Option<Callback>,
}

/// A voice message's file, as Telegram describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct VoiceNote {
    pub file_id: String,
    pub seconds: u32,
    pub mime: Option<String>,
    pub size: u32,
}

/// A button press (`callback_query`).
#[derive(Debug, Clone, PartialEq)]
pub struct Callback {
    pub id: String,
    pub data: Option<String>,
}

/// What the bot needs of an update.
fn incoming(u: Update) -> Incoming {
    let update_id = u.id.0;
    match u.kind {
        UpdateKind::Message(m) => Incoming {
            update_id,
            chat: Some(m.chat.id.0),
            message_id: m.id.0,
            text: m.text().map(str::to_string),
            date: m.date.timestamp(),
            voice: m.voice().map(|v| VoiceNote {
                file_id: v.file.id.0.clone(),
                seconds: v.duration.seconds(),
                mime: v.mime_type.as_ref().map(|m| m.essence_str().to_string()),
                size: v.file.size,
            }),
            other_media: m.audio().is_some() || m.document().is_some() || m.video_note().is_some(),
            callback: None,
        },
        UpdateKind::CallbackQuery(q) => Incoming {
            update_id,
            chat: q.message.as_ref().map(|m| m.chat().id.0),
            message_id: q.message.as_ref().map_or(0, |m| m.id().0),
            callback: Some(Callback {
                id: q.id.0,
                data: q.data,
            }),
            ..Incoming::default()
        },
        _ => Incoming {
            update_id,
            ..Incoming::default()
        },
    }
}

/// The `result` array of a `getUpdates` answer, as the bot reads it (the
/// fuzz target `telegram_updates` feeds it anything).
pub fn parse_updates(json: &[u8]) -> Result<Vec<Incoming>, serde_json::Error> {
    let updates: Vec<Update> = serde_json::from_slice(json)?;
    Ok(updates.into_iter().map(incoming).collect())
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ErrorKind {
    /// Network, timeout, server error, unreadable answer: may work next time.
    Transient,
    /// Flood control: wait this long.
    RetryAfter(Duration),
    /// A request Telegram will refuse again (unknown chat, bot blocked, ...).
    Permanent,
    /// The token is wrong or revoked.
    TokenRefused,
    /// Telegram refused the inline button's URL (it wants public http(s) URLs).
    ButtonRefused,
    /// The group became a supergroup with this chat id.
    Migrated(i64),
    /// Another client is polling with this token, or a webhook is set.
    Conflict,
}

/// A failed Bot API call; the text never contains the token.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

impl Retryable for ApiError {
    fn retry(&self) -> Retry {
        match self.kind {
            ErrorKind::Transient | ErrorKind::Conflict => Retry::Yes,
            ErrorKind::RetryAfter(d) => Retry::After(d),
            ErrorKind::Permanent
            | ErrorKind::TokenRefused
            | ErrorKind::ButtonRefused
            | ErrorKind::Migrated(_) => Retry::No,
        }
    }
}

fn no_preview() -> LinkPreviewOptions {
    LinkPreviewOptions {
        is_disabled: true,
        url: None,
        prefer_small_media: false,
        prefer_large_media: false,
        show_above_text: false,
    }
}

fn markup(keyboard: &Keyboard) -> InlineKeyboardMarkup {
    let answer = keyboard
        .answer
        .iter()
        .map(|b| vec![InlineKeyboardButton::url(b.text.clone(), b.url.clone())]);
    let replies = keyboard
        .replies
        .iter()
        .map(|(text, data)| vec![InlineKeyboardButton::callback(text.clone(), data.clone())]);
    InlineKeyboardMarkup::new(answer.chain(replies).collect::<Vec<_>>())
}

impl Api {
    /// A client for `api_url` (`https://api.telegram.org`, or a self-hosted
    /// Bot API server). Opens nothing yet.
    pub fn new(token: Secret, api_url: &str) -> Result<Api, String> {
        let url = reqwest::Url::parse(api_url.trim_end_matches('/'))
            .map_err(|e| format!("notify.telegram.api_url {api_url:?}: {e}"))?;
        if url.cannot_be_a_base() || !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "notify.telegram.api_url {api_url:?} is not an http(s) URL"
            ));
        }
        // One idle connection kept besides the long poll in flight: rings
        // are rare, and a burst of edits (several chats, a call's end)
        // would otherwise leave a connection per request open for 90 s.
        let client = teloxide::net::default_reqwest_settings()
            .pool_max_idle_per_host(1)
            .build()
            .map_err(|e| token.redact(&format!("cannot set up the HTTP client: {e}")))?;
        let bot = Bot::with_client(token.expose(), client).set_api_url(url);
        Ok(Api { bot, token })
    }

    /// `@username` of the bot (checks the token).
    pub async fn me(&self) -> Result<String, ApiError> {
        let me = self.bot.get_me().await.map_err(|e| self.error(e))?;
        Ok(format!("@{}", me.user.username.as_deref().unwrap_or("?")))
    }

    pub async fn send_photo(
        &self,
        chat: i64,
        jpeg: Bytes,
        caption: &str,
        keyboard: Option<&Keyboard>,
    ) -> Result<Sent, ApiError> {
        let photo = InputFile::memory(jpeg).file_name("door.jpg");
        let mut request = self
            .bot
            .send_photo(ChatId(chat), photo)
            .caption(caption.to_string());
        if let Some(k) = keyboard.filter(|k| !k.is_empty()) {
            request = request.reply_markup(markup(k));
        }
        let message = request.await.map_err(|e| self.error(e))?;
        Ok(sent(&message, true, caption))
    }

    /// A video (an MP4 clip) with its caption, as a reply to `reply_to`
    /// when given (the ring message it belongs to).
    pub async fn send_video(
        &self,
        chat: i64,
        mp4: Bytes,
        caption: &str,
        reply_to: Option<i32>,
    ) -> Result<Sent, ApiError> {
        let video = InputFile::memory(mp4).file_name("visitor.mp4");
        let mut request = self
            .bot
            .send_video(ChatId(chat), video)
            .caption(caption.to_string())
            .supports_streaming(true);
        if let Some(id) = reply_to {
            let mut reply = ReplyParameters::new(MessageId(id));
            reply.allow_sending_without_reply = Some(true);
            request = request.reply_parameters(reply);
        }
        let message = request.await.map_err(|e| self.error(e))?;
        Ok(sent(&message, true, caption))
    }

    /// A text message, link previews off (Telegram must not fetch the room
    /// link: the room name is the call's only secret).
    pub async fn send_text(
        &self,
        chat: i64,
        text: &str,
        keyboard: Option<&Keyboard>,
        reply_to: Option<i32>,
    ) -> Result<Sent, ApiError> {
        let mut request = self
            .bot
            .send_message(ChatId(chat), text.to_string())
            .link_preview_options(no_preview());
        if let Some(k) = keyboard.filter(|k| !k.is_empty()) {
            request = request.reply_markup(markup(k));
        }
        if let Some(id) = reply_to {
            let mut reply = ReplyParameters::new(MessageId(id));
            // The owner may have deleted the ring message: send anyway.
            reply.allow_sending_without_reply = Some(true);
            request = request.reply_parameters(reply);
        }
        let message = request.await.map_err(|e| self.error(e))?;
        Ok(sent(&message, false, text))
    }

    /// Replaces the caption of a photo message (editMessageCaption) or the
    /// text of a text message (editMessageText; Telegram refuses the other
    /// method for each kind), with `keyboard` under it. Without one its
    /// buttons go away: Telegram drops the inline keyboard of a message
    /// edited without `reply_markup`, which is the usual way to remove one.
    /// "Message is not modified" (the message says this already, e.g. an
    /// attempt that timed out had arrived) is a success, not an error to
    /// retry.
    pub async fn edit(
        &self,
        message: &Sent,
        text: &str,
        keyboard: Option<&Keyboard>,
    ) -> Result<(), ApiError> {
        let (chat, id) = (ChatId(message.chat), MessageId(message.id));
        let keyboard = keyboard.filter(|k| !k.is_empty()).map(markup);
        let result = if message.photo {
            let mut request = self
                .bot
                .edit_message_caption(chat, id)
                .caption(text.to_string());
            if let Some(k) = keyboard {
                request = request.reply_markup(k);
            }
            request.await
        } else {
            let mut request = self
                .bot
                .edit_message_text(chat, id, text.to_string())
                .link_preview_options(no_preview());
            if let Some(k) = keyboard {
                request = request.reply_markup(k);
            }
            request.await
        };
        match result {
            Ok(_) => Ok(()),
            Err(RequestError::Api(e)) if not_modified(&e) => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Long polling: messages after `offset`, waiting up to `wait` for one.
    pub async fn updates(&self, offset: i32, wait: Duration) -> Result<Vec<Incoming>, ApiError> {
        let updates = self
            .bot
            .get_updates()
            .offset(offset)
            .timeout(wait.as_secs() as u32)
            .allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery])
            .await
            .map_err(|e| self.error(e))?;
        Ok(updates.into_iter().map(incoming).collect())
    }

    /// Answers a button press (the spinner on the owner's button stops);
    /// `text` shows as a short notice on their screen.
    pub async fn answer_callback(&self, id: &str, text: &str) -> Result<(), ApiError> {
        self.bot
            .answer_callback_query(CallbackQueryId(id.to_string()))
            .text(shorten(text, 190))
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Downloads a file the owner sent (getFile, then the file itself),
    /// refusing files above `max` bytes before and while downloading.
    pub async fn download(&self, file_id: &str, max: usize) -> Result<Bytes, ApiError> {
        let file = self
            .bot
            .get_file(FileId(file_id.to_string()))
            .await
            .map_err(|e| self.error(e))?;
        let too_big = || ApiError {
            kind: ErrorKind::Permanent,
            message: format!("the file is larger than {} kB", max / 1024),
        };
        if file.meta.size as usize > max {
            return Err(too_big());
        }
        let mut stream = self.bot.download_file_stream(&file.path);
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError {
                kind: ErrorKind::Transient,
                message: shorten(
                    &self.token.redact(&format!(
                        "cannot download the file: {}",
                        crate::notify::error_chain(&e)
                    )),
                    MAX_ERROR_TEXT,
                ),
            })?;
            if data.len() + chunk.len() > max {
                return Err(too_big());
            }
            data.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(data))
    }

    /// Our error for a teloxide one: classified, explained, redacted, short.
    fn error(&self, e: RequestError) -> ApiError {
        let (kind, text) = match &e {
            RequestError::Api(api) => {
                let kind = match api {
                    TgError::InvalidToken => ErrorKind::TokenRefused,
                    TgError::ButtonUrlInvalid | TgError::WrongHttpUrl => ErrorKind::ButtonRefused,
                    TgError::TerminatedByOtherGetUpdates | TgError::CantGetUpdates => {
                        ErrorKind::Conflict
                    }
                    TgError::Unknown(text) if !is_client_error(text) => ErrorKind::Transient,
                    _ => ErrorKind::Permanent,
                };
                let text = match api {
                    TgError::InvalidToken => {
                        "Telegram refused the bot token (Unauthorized): check it (docs/telegram.md)"
                            .to_string()
                    }
                    TgError::Unknown(text) => format!("Telegram answered: {text}"),
                    other => format!("Telegram answered: {other}"),
                };
                (kind, text)
            }
            RequestError::RetryAfter(s) => (
                ErrorKind::RetryAfter(s.duration()),
                format!(
                    "Telegram's flood control: retry after {} s",
                    s.duration().as_secs()
                ),
            ),
            RequestError::MigrateToChatId(id) => (
                ErrorKind::Migrated(id.0),
                format!("the group chat became a supergroup with chat id {}", id.0),
            ),
            RequestError::Network(inner) => (
                ErrorKind::Transient,
                format!(
                    "cannot reach the Bot API: {}",
                    crate::notify::error_chain(inner.as_ref())
                ),
            ),
            RequestError::InvalidJson { raw, .. } => (
                ErrorKind::Transient,
                format!(
                    "the Bot API answered something else than its JSON (a proxy or server \
                     error?): {}",
                    raw.split_whitespace().collect::<Vec<_>>().join(" ")
                ),
            ),
            RequestError::Io(inner) => (ErrorKind::Transient, format!("I/O error: {inner}")),
        };
        ApiError {
            kind,
            message: shorten(&self.token.redact(&text), MAX_ERROR_TEXT),
        }
    }
}

fn sent(message: &Message, photo: bool, text: &str) -> Sent {
    Sent {
        chat: message.chat.id.0,
        id: message.id.0,
        photo,
        text: text.to_string(),
    }
}

/// The edit changed nothing: teloxide knows Telegram's usual wording; any
/// other wording of the same answer is read as well.
fn not_modified(e: &TgError) -> bool {
    match e {
        TgError::MessageNotModified => true,
        TgError::Unknown(text) => text.starts_with("Bad Request: message is not modified"),
        _ => false,
    }
}

/// Telegram's descriptions of errors that a retry will not fix.
fn is_client_error(description: &str) -> bool {
    ["Bad Request", "Forbidden", "Unauthorized", "Not Found"]
        .iter()
        .any(|p| description.starts_with(p))
}

/// At most `max` characters, with an ellipsis when cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "123456:CANARY-SECRET-TOKEN-xyz";

    fn api() -> Api {
        Api::new(Secret::new(TOKEN), "http://127.0.0.1:9/").unwrap()
    }

    #[test]
    fn debug_shows_the_server_not_the_token() {
        let text = format!("{:?}", api());
        assert!(text.contains("127.0.0.1"), "{text}");
        assert!(!text.contains("CANARY"), "{text}");
    }

    #[test]
    fn bad_api_urls_are_refused() {
        for url in ["", "api.telegram.org", "ftp://x", "mailto:x@y"] {
            assert!(Api::new(Secret::new(TOKEN), url).is_err(), "{url}");
        }
    }

    #[test]
    fn errors_are_classified_and_never_carry_the_token() {
        let a = api();
        let raw = format!("<html>\n<h1>502 Bad Gateway</h1> for /bot{TOKEN}/sendPhoto</html>");
        let json_error = serde_json::from_str::<serde_json::Value>("<").unwrap_err();
        let cases = [
            (
                RequestError::Api(TgError::InvalidToken),
                ErrorKind::TokenRefused,
            ),
            (
                RequestError::Api(TgError::ChatNotFound),
                ErrorKind::Permanent,
            ),
            (
                RequestError::Api(TgError::ButtonUrlInvalid),
                ErrorKind::ButtonRefused,
            ),
            (
                RequestError::Api(TgError::Unknown("Internal Server Error".into())),
                ErrorKind::Transient,
            ),
            (
                RequestError::Api(TgError::Unknown("Bad Request: something new".into())),
                ErrorKind::Permanent,
            ),
            (
                RequestError::Api(TgError::TerminatedByOtherGetUpdates),
                ErrorKind::Conflict,
            ),
            (
                RequestError::MigrateToChatId(ChatId(-100123)),
                ErrorKind::Migrated(-100123),
            ),
            (
                RequestError::InvalidJson {
                    source: std::sync::Arc::new(json_error),
                    raw: raw.into(),
                },
                ErrorKind::Transient,
            ),
        ];
        for (error, kind) in cases {
            let e = a.error(error);
            assert_eq!(e.kind, kind, "{e}");
            assert!(!e.message.contains("CANARY"), "{e}");
        }
    }

    #[test]
    fn an_edit_that_changes_nothing_is_recognised() {
        assert!(not_modified(&TgError::MessageNotModified));
        assert!(not_modified(&TgError::Unknown(
            "Bad Request: message is not modified: same as before".into()
        )));
        assert!(!not_modified(&TgError::MessageToEditNotFound));
        assert!(!not_modified(&TgError::Unknown(
            "Bad Request: message can't be edited".into()
        )));
    }

    #[test]
    fn long_texts_are_shortened_on_a_character_boundary() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("ééééé", 2), "éé...");
    }
}
