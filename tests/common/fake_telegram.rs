//! A small Telegram Bot API server for the tests, on 127.0.0.1:0.
//!
//! It speaks enough of the API for the doorbell (getMe, sendPhoto and
//! sendVideo with a multipart upload, sendMessage, editMessageCaption, editMessageText,
//! editMessageReplyMarkup, getUpdates with real long polling over a queue the
//! test feeds, honouring `allowed_updates`; answerCallbackQuery, getFile and
//! the file download for the button presses and voice messages a test sends
//! as the owner) and answers the way Telegram does: `{"ok":true,"result":...}`
//! with full `Message` objects, errors as
//! `{"ok":false,"error_code":N,"description":"..."}` with the same HTTP
//! status, `Unauthorized` for a wrong token, `chat not found` for chats it
//! does not know. It keeps the messages it sent, so edits behave like
//! Telegram's: a caption can only be edited on a photo and a text only on a
//! text message, an edit without `reply_markup` drops the buttons, an edit
//! that changes nothing is refused as "message is not modified"; a test reads
//! what a message shows now with [`FakeTelegram::message`]. Switches make a
//! method fail (API error, or an HTTP 502 page from a proxy) or stall. Every
//! request is recorded, failed ones included, with the uploaded photo.
#![allow(dead_code)]

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Every wait of these helpers is bounded by this.
const WAIT: Duration = Duration::from_secs(20);
pub const BOT_ID: i64 = 4242;
pub const BOT_USERNAME: &str = "test_doorbell_bot";

/// How a method fails.
#[derive(Debug, Clone)]
pub enum Fail {
    /// Telegram's error JSON with `status` as HTTP status and `error_code`.
    Api {
        status: u16,
        description: String,
        retry_after: Option<u32>,
    },
    /// An HTTP 502 HTML page from a proxy in front of the API; like some
    /// proxies, it quotes the request path (token included).
    BadGateway,
}

impl Fail {
    pub fn api(status: u16, description: &str) -> Fail {
        Fail::Api {
            status,
            description: description.into(),
            retry_after: None,
        }
    }

    /// 429 with `parameters.retry_after`.
    pub fn flood(retry_after: u32) -> Fail {
        Fail::Api {
            status: 429,
            description: format!("Too Many Requests: retry after {retry_after}"),
            retry_after: Some(retry_after),
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// JSON body, or the multipart text fields (each parsed as JSON when it is).
    pub params: Map<String, Value>,
    /// The `photo` (or, for sendVideo, the `video`) part of a multipart upload.
    pub photo: Option<Vec<u8>>,
    pub at: Instant,
    /// The `message_id` it answered with, if it succeeded with a message.
    pub message_id: Option<i64>,
}

impl Call {
    pub fn chat(&self) -> i64 {
        self.params["chat_id"]
            .as_i64()
            .expect("chat_id is a number")
    }

    pub fn str(&self, key: &str) -> String {
        self.params
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }
}

/// A message as the chat shows it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub photo: bool,
    /// The caption of a photo, the text of a text message.
    pub text: String,
    /// The inline keyboard; `None` when it has no button.
    pub reply_markup: Option<Value>,
    /// How many edits changed it.
    pub edits: usize,
}

/// Telegram's answer to an edit that changes nothing.
pub const NOT_MODIFIED: &str = "Bad Request: message is not modified: specified new message \
     content and reply markup are exactly the same as a current content and reply markup of the \
     message";

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    updates: VecDeque<Value>,
    next_update_id: i64,
    next_message_id: i64,
    /// Per method: failures to apply to the next requests, in order.
    failures: HashMap<String, VecDeque<Fail>>,
    /// Per method: a failure for every request.
    always: HashMap<String, Fail>,
    stalls: HashMap<String, Duration>,
    /// Chats that exist; `None`: all.
    chats: Option<Vec<i64>>,
    /// The bot's messages, by (chat, message id).
    messages: HashMap<(i64, i64), Shown>,
    /// Files the owner sent, by file id: (path, bytes).
    files: HashMap<String, (String, Vec<u8>)>,
    next_callback_id: u64,
}

struct Shared {
    token: String,
    inner: Mutex<Inner>,
    updates_arrived: Notify,
}

pub struct FakeTelegram {
    pub addr: SocketAddr,
    /// For `notify.telegram.api_url`.
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeTelegram {
    /// A server that accepts `token`.
    pub async fn start(token: &str) -> FakeTelegram {
        let shared = Arc::new(Shared {
            token: token.to_string(),
            inner: Mutex::new(Inner {
                next_update_id: 1000,
                next_message_id: 1,
                ..Inner::default()
            }),
            updates_arrived: Notify::new(),
        });
        let app = Router::new()
            .route("/{bot}/{method}", axum::routing::post(handle))
            .route("/file/{bot}/{*path}", axum::routing::get(file))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeTelegram {
            addr,
            url: format!("http://{addr}"),
            shared,
            task,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap()
    }

    /// Only these chats exist; others get `Bad Request: chat not found`.
    pub fn set_chats(&self, chats: &[i64]) {
        self.inner().chats = Some(chats.to_vec());
    }

    /// The next `times` requests of `method` fail with `fail`.
    pub fn fail(&self, method: &str, fail: Fail, times: usize) {
        let mut inner = self.inner();
        let queue = inner.failures.entry(method.into()).or_default();
        queue.extend(std::iter::repeat_n(fail, times));
    }

    /// Every request of `method` fails with `fail`.
    pub fn fail_always(&self, method: &str, fail: Fail) {
        self.inner().always.insert(method.into(), fail);
    }

    /// `method` works again.
    pub fn heal(&self, method: &str) {
        let mut inner = self.inner();
        inner.always.remove(method);
        inner.failures.remove(method);
        inner.stalls.remove(method);
    }

    /// Requests of `method` answer after `delay`.
    pub fn stall(&self, method: &str, delay: Duration) {
        self.inner().stalls.insert(method.into(), delay);
    }

    /// Queues a text message from `chat`, sent now.
    pub fn push_message(&self, chat: i64, text: &str) {
        self.push_message_sent_at(chat, text, unix_s());
    }

    /// Queues a text message from `chat`, sent at Unix second `date`.
    pub fn push_message_sent_at(&self, chat: i64, text: &str, date: i64) {
        let mut inner = self.inner();
        inner.next_update_id += 1;
        let update_id = inner.next_update_id;
        inner.next_message_id += 1;
        let message_id = inner.next_message_id;
        let mut message = json!({
            "message_id": message_id,
            "from": {"id": chat.abs(), "is_bot": false, "first_name": "Someone"},
            "chat": chat_json(chat),
            "date": date,
            "text": text,
        });
        if text.starts_with('/') {
            let len = text
                .split_whitespace()
                .next()
                .unwrap_or("")
                .encode_utf16()
                .count();
            message["entities"] = json!([{"type": "bot_command", "offset": 0, "length": len}]);
        }
        inner
            .updates
            .push_back(json!({"update_id": update_id, "message": message}));
        drop(inner);
        self.shared.updates_arrived.notify_waiters();
    }

    /// Queues an update (its `update_id` is added).
    fn push_update(&self, mut update: Value) {
        let mut inner = self.inner();
        inner.next_update_id += 1;
        update["update_id"] = json!(inner.next_update_id);
        inner.updates.push_back(update);
        drop(inner);
        self.shared.updates_arrived.notify_waiters();
    }

    fn next_message_id(&self) -> i64 {
        let mut inner = self.inner();
        inner.next_message_id += 1;
        inner.next_message_id
    }

    /// Queues a press, in `chat`, of the inline button with `data` under
    /// the bot's message `message_id`; the callback query's id.
    pub fn push_callback(&self, chat: i64, message_id: i64, data: &str) -> String {
        let id = {
            let mut inner = self.inner();
            inner.next_callback_id += 1;
            format!("cb{}", inner.next_callback_id)
        };
        let message = self
            .message(chat, message_id)
            .expect("a button under a message the bot sent");
        let mut m = json!({
            "message_id": message_id,
            "from": bot_user(),
            "chat": chat_json(chat),
            "date": unix_s(),
        });
        if message.photo {
            m["photo"] = json!([{"file_id": format!("photo-{message_id}"), "file_unique_id": format!("u{message_id}"), "width": 320, "height": 240}]);
            m["caption"] = json!(message.text);
        } else {
            m["text"] = json!(message.text);
        }
        if let Some(markup) = message.reply_markup {
            m["reply_markup"] = markup;
        }
        self.push_update(json!({"callback_query": {
            "id": id,
            "from": {"id": chat.abs(), "is_bot": false, "first_name": "Owner"},
            "message": m,
            "chat_instance": "42",
            "data": data,
        }}));
        id
    }

    /// Keeps `data` as a file the owner sent; its file id.
    fn keep_file(&self, data: &[u8], folder: &str) -> String {
        let mut inner = self.inner();
        let n = inner.files.len() + 1;
        let id = format!("{folder}-file-{n}");
        let path = format!("{folder}/file_{n}.oga");
        inner.files.insert(id.clone(), (path, data.to_vec()));
        id
    }

    /// Queues a voice message from `chat` (Telegram says it lasts
    /// `seconds`, whatever `data` holds); its message id.
    pub fn push_voice(&self, chat: i64, data: &[u8], seconds: u32, mime: &str) -> i64 {
        self.push_sound(chat, "voice", data, seconds, mime)
    }

    /// Queues an audio file (not a voice message) from `chat`; its message id.
    pub fn push_audio(&self, chat: i64, data: &[u8], seconds: u32, mime: &str) -> i64 {
        self.push_sound(chat, "audio", data, seconds, mime)
    }

    /// A message from `chat` with a sound file as `kind` (`voice`, `audio`).
    fn push_sound(&self, chat: i64, kind: &str, data: &[u8], seconds: u32, mime: &str) -> i64 {
        let file_id = self.keep_file(data, kind);
        let id = self.next_message_id();
        let mut message = json!({
            "message_id": id,
            "from": {"id": chat.abs(), "is_bot": false, "first_name": "Owner"},
            "chat": chat_json(chat),
            "date": unix_s(),
        });
        message[kind] = json!({"file_id": file_id, "file_unique_id": format!("u{file_id}"),
                               "duration": seconds, "mime_type": mime, "file_size": data.len()});
        self.push_update(json!({ "message": message }));
        id
    }

    /// What the bot's message `id` in `chat` shows now.
    pub fn message(&self, chat: i64, id: i64) -> Option<Shown> {
        self.inner().messages.get(&(chat, id)).cloned()
    }

    /// Every request so far.
    pub fn calls(&self) -> Vec<Call> {
        self.inner().calls.clone()
    }

    /// The requests of `method` so far.
    pub fn calls_of(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// Waits until `pred` holds for at least `n` requests of `method`; returns those.
    pub async fn wait_for(
        &self,
        method: &str,
        n: usize,
        pred: impl Fn(&Call) -> bool,
    ) -> Vec<Call> {
        let start = Instant::now();
        loop {
            let found: Vec<Call> = self
                .calls_of(method)
                .into_iter()
                .filter(|c| pred(c))
                .collect();
            if found.len() >= n {
                return found;
            }
            assert!(
                start.elapsed() < WAIT,
                "{n} matching {method} request(s) did not come; saw {:?}",
                self.calls()
                    .iter()
                    .map(|c| format!("{} {:?}", c.method, c.params))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn unix_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn chat_json(chat: i64) -> Value {
    if chat < 0 {
        json!({"id": chat, "type": "supergroup", "title": "Family"})
    } else {
        json!({"id": chat, "type": "private", "first_name": "Owner"})
    }
}

fn bot_user() -> Value {
    json!({"id": BOT_ID, "is_bot": true, "first_name": "Doorbell", "username": BOT_USERNAME})
}

fn ok(result: Value) -> Response {
    axum::Json(json!({"ok": true, "result": result})).into_response()
}

fn error(status: u16, description: &str, retry_after: Option<u32>) -> Response {
    let mut body = json!({"ok": false, "error_code": status, "description": description});
    if let Some(s) = retry_after {
        body["parameters"] = json!({"retry_after": s});
    }
    let status = StatusCode::from_u16(status).unwrap();
    (status, axum::Json(body)).into_response()
}

const KNOWN: [&str; 10] = [
    "getMe",
    "getFile",
    "answerCallbackQuery",
    "getUpdates",
    "sendPhoto",
    "sendVideo",
    "sendMessage",
    "editMessageCaption",
    "editMessageText",
    "editMessageReplyMarkup",
];

async fn read_params(request: Request<Body>) -> (Map<String, Value>, Option<Vec<u8>>) {
    let multipart = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let mut params = Map::new();
    if multipart {
        let mut form = Multipart::from_request(request, &())
            .await
            .expect("multipart body");
        // Files are parts with a file name; a field may point at one with
        // `attach://<part name>` (teloxide does that for uploads).
        let mut files = HashMap::new();
        while let Some(field) = form.next_field().await.expect("multipart field") {
            let name = field.name().unwrap_or_default().to_string();
            let is_file = field.file_name().is_some();
            let data = field.bytes().await.expect("multipart data");
            if is_file {
                files.insert(name, data.to_vec());
            } else {
                let text = String::from_utf8_lossy(&data).into_owned();
                let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
                params.insert(name, value);
            }
        }
        let kind = if params.contains_key("video") || files.contains_key("video") {
            "video"
        } else {
            "photo"
        };
        let upload = match params.get(kind).and_then(Value::as_str) {
            Some(reference) => reference
                .strip_prefix("attach://")
                .and_then(|part| files.remove(part)),
            None => files.remove(kind),
        };
        return (params, upload);
    }
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .expect("body");
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&body) {
        params = map;
    }
    (params, None)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    request: Request<Body>,
) -> Response {
    let path = request.uri().path().to_string();
    if bot != format!("bot{}", shared.token) {
        return error(401, "Unauthorized", None);
    }
    // Telegram's method names are case-insensitive (teloxide sends `SendPhoto`).
    let method = KNOWN
        .iter()
        .find(|m| m.eq_ignore_ascii_case(&method))
        .map_or(method, |m| m.to_string());
    let (params, photo) = read_params(request).await;
    let index = {
        let mut inner = shared.inner.lock().unwrap();
        inner.calls.push(Call {
            method: method.clone(),
            params: params.clone(),
            photo,
            at: Instant::now(),
            message_id: None,
        });
        inner.calls.len() - 1
    };
    let (stall, fail) = {
        let mut inner = shared.inner.lock().unwrap();
        let stall = inner.stalls.get(&method).copied();
        let fail = inner
            .failures
            .get_mut(&method)
            .and_then(VecDeque::pop_front)
            .or_else(|| inner.always.get(&method).cloned());
        (stall, fail)
    };
    if let Some(d) = stall {
        tokio::time::sleep(d).await;
    }
    match fail {
        Some(Fail::Api {
            status,
            description,
            retry_after,
        }) => return error(status, &description, retry_after),
        Some(Fail::BadGateway) => {
            let page = format!(
                "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
                 <center><h1>502 Bad Gateway</h1></center>\r\n<p>upstream failed for {path}</p>\r\n\
                 <hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            );
            return (StatusCode::BAD_GATEWAY, page).into_response();
        }
        None => {}
    }
    match method.as_str() {
        "getMe" => ok(json!({
            "id": BOT_ID, "is_bot": true, "first_name": "Doorbell", "username": BOT_USERNAME,
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "can_connect_to_business": false,
            "has_main_web_app": false,
        })),
        "getUpdates" => get_updates(&shared, &params).await,
        "answerCallbackQuery" => {
            if params
                .get("callback_query_id")
                .and_then(Value::as_str)
                .is_none()
            {
                return error(400, "Bad Request: query is too old and response timeout expired or query ID is invalid", None);
            }
            ok(json!(true))
        }
        "getFile" => {
            let id = params
                .get("file_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let inner = shared.inner.lock().unwrap();
            match inner.files.get(id) {
                Some((path, data)) => ok(json!({
                    "file_id": id, "file_unique_id": format!("u{id}"),
                    "file_size": data.len(), "file_path": path,
                })),
                None => error(400, "Bad Request: invalid file_id", None),
            }
        }
        "sendPhoto"
        | "sendVideo"
        | "sendMessage"
        | "editMessageCaption"
        | "editMessageText"
        | "editMessageReplyMarkup" => {
            let Some(chat) = params.get("chat_id").and_then(Value::as_i64) else {
                return error(400, "Bad Request: chat_id is empty", None);
            };
            let mut inner = shared.inner.lock().unwrap();
            if inner.chats.as_ref().is_some_and(|c| !c.contains(&chat)) {
                return error(400, "Bad Request: chat not found", None);
            }
            // Telegram counts an empty keyboard as none.
            let markup = params
                .get("reply_markup")
                .filter(|m| {
                    m["inline_keyboard"]
                        .as_array()
                        .is_none_or(|rows| !rows.is_empty())
                })
                .cloned();
            let id = if method.starts_with("edit") {
                let id = params["message_id"].as_i64().expect("message_id");
                let Some(old) = inner.messages.get(&(chat, id)).cloned() else {
                    return error(400, "Bad Request: message to edit not found", None);
                };
                let text = match method.as_str() {
                    "editMessageCaption" if !old.photo => {
                        return error(
                            400,
                            "Bad Request: there is no caption in the message to edit",
                            None,
                        )
                    }
                    "editMessageText" if old.photo => {
                        return error(
                            400,
                            "Bad Request: there is no text in the message to edit",
                            None,
                        )
                    }
                    "editMessageCaption" => params.get("caption").and_then(Value::as_str),
                    "editMessageText" => params.get("text").and_then(Value::as_str),
                    _ => Some(old.text.as_str()),
                };
                let new = Shown {
                    photo: old.photo,
                    text: text.unwrap_or_default().to_string(),
                    reply_markup: markup,
                    edits: old.edits + 1,
                };
                if new.text == old.text && new.reply_markup == old.reply_markup {
                    return error(400, NOT_MODIFIED, None);
                }
                inner.messages.insert((chat, id), new);
                id
            } else {
                inner.next_message_id += 1;
                let id = inner.next_message_id;
                // A video's caption is edited like a photo's.
                let photo = method == "sendPhoto" || method == "sendVideo";
                let text = params.get(if photo { "caption" } else { "text" });
                let shown = Shown {
                    photo,
                    text: text.and_then(Value::as_str).unwrap_or_default().to_string(),
                    reply_markup: markup,
                    edits: 0,
                };
                inner.messages.insert((chat, id), shown);
                id
            };
            inner.calls[index].message_id = Some(id);
            let shown = inner.messages[&(chat, id)].clone();
            let mut message = json!({
                "message_id": id,
                "from": bot_user(),
                "chat": chat_json(chat),
                "date": unix_s(),
            });
            if let Some(markup) = &shown.reply_markup {
                message["reply_markup"] = markup.clone();
            }
            if method == "sendVideo" {
                message["video"] = json!({
                    "file_id": format!("video-{id}"), "file_unique_id": format!("v{id}"),
                    "width": 320, "height": 240, "duration": 20,
                });
                message["caption"] = json!(shown.text);
            } else if shown.photo {
                message["photo"] = json!([
                    {"file_id": format!("photo-{id}-s"), "file_unique_id": format!("u{id}s"), "width": 90, "height": 68, "file_size": 1000},
                    {"file_id": format!("photo-{id}"), "file_unique_id": format!("u{id}"), "width": 320, "height": 240, "file_size": 10000},
                ]);
                message["caption"] = json!(shown.text);
            } else {
                message["text"] = json!(shown.text);
            }
            if shown.edits > 0 {
                message["edit_date"] = json!(unix_s());
            }
            ok(message)
        }
        _ => error(404, "Not Found: method not found", None),
    }
}

/// A file download (`/file/bot<token>/<file_path>`).
async fn file(
    State(shared): State<Arc<Shared>>,
    Path((bot, path)): Path<(String, String)>,
) -> Response {
    if bot != format!("bot{}", shared.token) {
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    let inner = shared.inner.lock().unwrap();
    match inner.files.values().find(|(p, _)| *p == path) {
        Some((_, data)) => data.clone().into_response(),
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

/// The update's type: `message`, `callback_query`, ...
fn update_type(update: &Value) -> String {
    update
        .as_object()
        .and_then(|o| o.keys().find(|k| *k != "update_id").cloned())
        .unwrap_or_default()
}

/// Long polling: confirms updates below `offset`, returns the rest, or
/// waits up to `timeout` seconds for one. Like Telegram, updates of a type
/// that `allowed_updates` leaves out are never delivered.
async fn get_updates(shared: &Shared, params: &Map<String, Value>) -> Response {
    let allowed: Option<Vec<String>> =
        params
            .get("allowed_updates")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            });
    let offset = params.get("offset").and_then(Value::as_i64).unwrap_or(0);
    let timeout = params.get("timeout").and_then(Value::as_u64).unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let arrived = shared.updates_arrived.notified();
        tokio::pin!(arrived);
        // Registered before the queue is looked at, so no push is missed.
        arrived.as_mut().enable();
        {
            let mut inner = shared.inner.lock().unwrap();
            while inner
                .updates
                .front()
                .is_some_and(|u| u["update_id"].as_i64().unwrap() < offset)
            {
                inner.updates.pop_front();
            }
            if let Some(allowed) = &allowed {
                inner
                    .updates
                    .retain(|u| allowed.is_empty() || allowed.contains(&update_type(u)));
            }
            if !inner.updates.is_empty() {
                return ok(Value::Array(inner.updates.iter().cloned().collect()));
            }
        }
        if tokio::time::timeout_at(deadline, arrived).await.is_err() {
            return ok(json!([]));
        }
    }
}
