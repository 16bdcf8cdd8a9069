//! `webhook` notifier: an HTTP POST of a JSON ring event, for Home Assistant,
//! ntfy, Node-RED or a script of one's own.
//!
//! ```json
//! {"event":"ring","call":3,"room":"...","link":"https://.../?room=...","ts":1700000000000}
//! {"event":"ring_failed","call":4,"reason":"the signaling server is unreachable","ts":1700000000000}
//! ```
//!
//! Any 2xx answer is success. Network errors, timeouts, 408, 429 and 5xx are
//! retried for `retry_for` (see [`super::retry`]); other answers are not. Webhook
//! URLs often hold their secret (Home Assistant's webhook id is the whole
//! password), so logs and errors name only the scheme, host and port, and
//! HTTP client errors are stripped of their URL.

use futures_util::future::{BoxFuture, FutureExt};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

use super::retry::{retry, Retry, Retryable};
use super::{Notifier, NotifyError, Ring};
use crate::media::unix_ms;
use crate::spec::duration;

/// One `[[notify.webhook]]`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL that gets the JSON ring event.
    pub url: String,
    /// Extra request headers (`Authorization`, ntfy's `Title`, ...).
    pub headers: std::collections::BTreeMap<String, String>,
    /// Bound on one attempt.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// How long a failed POST is retried.
    #[serde(with = "duration")]
    pub retry_for: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            headers: Default::default(),
            timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(30),
        }
    }
}

pub struct WebhookNotifier {
    /// `webhook https://ha.local:8123`: the URL without path or query.
    label: String,
    url: reqwest::Url,
    headers: HeaderMap,
    client: reqwest::Client,
    retry_for: Duration,
}

#[derive(Debug)]
struct PostError {
    message: String,
    retry: Retry,
}

impl std::fmt::Display for PostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Retryable for PostError {
    fn retry(&self) -> Retry {
        self.retry
    }
}

impl WebhookNotifier {
    /// From a validated `[[notify.webhook]]` entry. Opens nothing.
    pub fn new(config: &WebhookConfig) -> Result<Self, NotifyError> {
        let invalid = |message: String| NotifyError {
            notifier: "webhook".into(),
            message,
        };
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| invalid(format!("notify.webhook.url is not a URL: {e}")))?;
        let label = format!("webhook {}", origin(&url));
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|e| invalid(format!("notify.webhook.headers: {name:?}: {e}")))?;
            let mut value = HeaderValue::try_from(value.as_str()).map_err(|_| {
                invalid(format!(
                    "notify.webhook.headers: the value of {name} is not a valid header value"
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| {
                invalid(format!(
                    "cannot set up the HTTP client: {}",
                    e.without_url()
                ))
            })?;
        Ok(Self {
            label,
            url,
            headers,
            client,
            retry_for: config.retry_for,
        })
    }

    fn post(&self, body: serde_json::Value) -> BoxFuture<'static, Result<(), NotifyError>> {
        let label = self.label.clone();
        let url = self.url.clone();
        let headers = self.headers.clone();
        let client = self.client.clone();
        let bound = self.retry_for;
        async move {
            let attempt = || {
                let request = client
                    .post(url.clone())
                    .headers(headers.clone())
                    .json(&body);
                async move { check(request.send().await) }
            };
            retry(&label, bound, attempt)
                .await
                .map_err(|e| NotifyError {
                    notifier: label.clone(),
                    message: e.to_string(),
                })
        }
        .boxed()
    }
}

/// Success, or why not and whether to try again.
fn check(result: reqwest::Result<reqwest::Response>) -> Result<(), PostError> {
    match result {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => {
            let status = response.status();
            let transient = status.is_server_error()
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                || status == reqwest::StatusCode::REQUEST_TIMEOUT;
            Err(PostError {
                message: format!("the server answered HTTP {status}"),
                retry: if transient { Retry::Yes } else { Retry::No },
            })
        }
        Err(e) => Err(PostError {
            message: describe(e),
            retry: Retry::Yes,
        }),
    }
}

/// A reqwest error without its URL, with its causes.
fn describe(e: reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "the request failed"
    };
    let e = e.without_url();
    format!("{what}: {}", super::error_chain(&e))
}

/// `https://host:port` of a URL (no user, path or query).
fn origin(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

impl Notifier for WebhookNotifier {
    fn name(&self) -> &str {
        &self.label
    }

    fn ring(&self, ring: Ring) -> BoxFuture<'static, Result<(), NotifyError>> {
        self.post(serde_json::json!({
            "event": "ring",
            "call": ring.call,
            "room": ring.room,
            "link": ring.link,
            "ts": unix_ms(),
        }))
    }

    fn ring_failed(
        &self,
        call: u64,
        reason: String,
    ) -> BoxFuture<'static, Result<(), NotifyError>> {
        self.post(serde_json::json!({
            "event": "ring_failed",
            "call": call,
            "reason": reason,
            "ts": unix_ms(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            ..WebhookConfig::default()
        }
    }

    #[test]
    fn logs_name_the_server_never_the_secret_path() {
        let n = WebhookNotifier::new(&config(
            "https://user:pw@ha.example.org:8123/api/webhook/SECRET-ID?x=1",
        ))
        .unwrap();
        assert_eq!(n.name(), "webhook https://ha.example.org:8123");
        let n = WebhookNotifier::new(&config("http://ntfy.example.org/doorbell")).unwrap();
        assert_eq!(n.name(), "webhook http://ntfy.example.org");
    }

    #[test]
    fn bad_headers_are_refused_by_name() {
        let mut c = config("http://x/");
        c.headers.insert("Bad Header".into(), "v".into());
        let e = WebhookNotifier::new(&c).err().unwrap().to_string();
        assert!(e.contains("notify.webhook.headers"), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_retried_and_reported_without_the_path() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut c = config(&format!("http://127.0.0.1:{port}/api/webhook/SECRET-ID"));
        c.retry_for = Duration::from_millis(600);
        let n = WebhookNotifier::new(&c).unwrap();
        let e = n
            .ring(Ring {
                call: 1,
                room: "r".into(),
                link: "l".into(),
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot connect"), "{e}");
        assert!(e.contains("gave up after 2 attempts"), "{e}");
        assert!(!e.contains("SECRET-ID"), "{e}");
    }
}
