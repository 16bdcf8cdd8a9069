//! The owner's pages of `doorbell serve`: `/login`, `/owner`, `/logout`,
//! `/history` (the doorbell's history with its pictures and recordings,
//! when `--history-dir` names it), `/look` (the "Look now" button: a live
//! view, with a look key). Plain HTML forms, no script (the content
//! security policy allows none inline); the session logic is in
//! [`super::owner`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::owner::{cleared_cookie, session_cookie, token_in, Login, Owner};
use super::web::{client_address, link_safe, secure_headers, Refusals};

/// What the owner's pages show of the server.
pub struct Status {
    pub rings: usize,
    pub connections: usize,
    /// Whether the doorbell is connected; `None` without a look key.
    pub doorbell: Option<bool>,
}

/// Asks the doorbell for a live view: its room, or why not.
pub type Look =
    Box<dyn Fn() -> futures_util::future::BoxFuture<'static, Result<String, String>> + Send + Sync>;

/// The owner's pages' own state: the server gives it what they need.
pub struct Site {
    /// `None`: no owner password, the pages are off.
    pub owner: Option<Arc<Owner>>,
    pub refusals: Arc<Refusals>,
    pub status: Box<dyn Fn() -> Status + Send + Sync>,
    pub started: Instant,
    /// The doorbell's history directory, read-only.
    pub history_dir: Option<std::path::PathBuf>,
    /// "Look now", with a look key.
    pub look: Option<Look>,
}

pub fn router<S: Clone + Send + Sync + 'static>(site: Site) -> Router<S> {
    Router::new()
        .route("/login", get(get_login).post(post_login))
        .route("/owner", get(get_owner))
        .route("/logout", post(post_logout))
        .route("/look", post(post_look))
        .route("/history", get(get_history))
        .route("/history/media/{name}", get(get_history_file))
        .with_state(Arc::new(site))
}

/// A login form body is a few dozen bytes; anything much bigger is not one.
const MAX_FORM_BYTES: usize = 4096;

/// Whether the browser reached us over TLS: a reverse proxy on this machine
/// says so (`X-Forwarded-Proto: https` or `Forwarded: proto=https`). Such a
/// request gets `Secure` cookies; plain HTTP on a LAN address cannot keep
/// them, so they are not marked there.
fn over_tls(peer: IpAddr, headers: &HeaderMap) -> bool {
    if !peer.is_loopback() {
        return false;
    }
    let is = |name: header::HeaderName, f: &dyn Fn(&str) -> bool| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(f)
    };
    is(header::HeaderName::from_static("x-forwarded-proto"), &|v| {
        v.trim().eq_ignore_ascii_case("https")
    }) || is(header::FORWARDED, &|v| {
        v.split([';', ','])
            .any(|p| p.trim().eq_ignore_ascii_case("proto=https"))
    })
}

pub(super) fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n<title>{title}</title>\n\
         <link rel=\"stylesheet\" href=\"viewer.css\">\n</head>\n<body>\n<main class=\"owner\">\n\
         <h1>{title}</h1>\n{body}\n</main>\n</body>\n</html>\n"
    );
    let mut r = (status, html).into_response();
    secure_headers(r.headers_mut(), "text/html; charset=utf-8");
    r
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn with_cookie(mut r: Response, cookie: String) -> Response {
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn off() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Owner pages are off",
        "<p>This server has no owner password. Make one with <code>doorbell passwd</code> \
         and start <code>doorbell serve</code> with <code>--owner-password-file</code> \
         (see docs/install.md).</p>",
    )
}

fn login_form(status: StatusCode, note: &str, next: Option<&str>) -> Response {
    // Where to go once signed in (the ring link's page), carried through
    // the form; only pages of ours (see `next_page`).
    let next = next
        .map(|n| {
            format!(
                "<input type=\"hidden\" name=\"next\" value=\"{}\">\n",
                escape(n)
            )
        })
        .unwrap_or_default();
    page(
        status,
        "Doorbell owner",
        &format!(
            "<p id=\"note\">{note}</p>\n<form method=\"post\" action=\"login\">\n{next}\
             <label for=\"password\">Password</label>\n\
             <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required autofocus>\n\
             <button type=\"submit\">Sign in</button>\n</form>"
        ),
    )
}

/// A page to go to after signing in: only a ring link's page
/// (`watch/DEVICE`), never another site.
fn next_page(next: &str) -> Option<&str> {
    next.strip_prefix("watch/")
        .filter(|d| link_safe(d) && !d.starts_with('.'))
        .map(|_| next)
}

/// Whether the request carries a live owner session.
fn signed_in(site: &Site, headers: &HeaderMap) -> bool {
    signed_in_as_owner(site.owner.as_deref(), headers)
}

/// Whether the request carries a live session of `owner`.
pub(super) fn signed_in_as_owner(owner: Option<&Owner>, headers: &HeaderMap) -> bool {
    let Some(owner) = owner else {
        return false;
    };
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(token_in)
        .any(|t| owner.session(t, Instant::now()))
}

#[derive(serde::Deserialize)]
struct Next {
    next: Option<String>,
}

async fn get_login(
    State(site): State<Arc<Site>>,
    axum::extract::Query(q): axum::extract::Query<Next>,
    headers: HeaderMap,
) -> Response {
    if site.owner.is_none() {
        return off();
    }
    let next = q.next.as_deref().and_then(next_page);
    if signed_in(&site, &headers) {
        return redirect(next.unwrap_or("owner"));
    }
    login_form(StatusCode::OK, "", next)
}

async fn post_login(
    State(site): State<Arc<Site>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(owner) = site.owner.as_ref() else {
        return off();
    };
    let from = client_address(peer.ip(), &headers);
    if body.len() > MAX_FORM_BYTES {
        return login_form(StatusCode::PAYLOAD_TOO_LARGE, "That is not a login.", None);
    }
    let field = |name: &str| {
        url::form_urlencoded::parse(&body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let password = field("password").unwrap_or_default();
    let next = field("next");
    let next = next.as_deref().and_then(next_page);
    match owner.login(from, &password).await {
        Login::Opened(token) => {
            tracing::info!(addr = %from, "the owner signed in");
            let cookie = session_cookie(
                &token,
                owner.limits().session_ttl,
                over_tls(peer.ip(), &headers),
            );
            with_cookie(redirect(next.unwrap_or("owner")), cookie)
        }
        Login::Wrong => {
            tracing::info!(addr = %from, "a wrong owner password");
            login_form(StatusCode::UNAUTHORIZED, "Wrong password.", next)
        }
        Login::Refused { retry_after } => {
            site.refusals.refused(
                from,
                "owner logins",
                format_args!(
                    "{} wrong passwords within {} s",
                    owner.limits().failures,
                    owner.limits().window.as_secs()
                ),
            );
            let minutes = retry_after.as_secs().div_ceil(60);
            let mut r = login_form(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("Too many wrong passwords from your address: try again in {minutes} min."),
                next,
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
    }
}

async fn get_owner(State(site): State<Arc<Site>>, headers: HeaderMap) -> Response {
    if site.owner.is_none() {
        return off();
    }
    if !signed_in(&site, &headers) {
        return redirect("login");
    }
    let Status {
        rings,
        connections,
        doorbell,
    } = (site.status)();
    let up = site.started.elapsed().as_secs();
    let look = match doorbell {
        None => String::new(),
        Some(true) => "<p id=\"doorbell\">The doorbell is connected.</p>\n\
             <form method=\"post\" action=\"look\"><button type=\"submit\">Look now</button> \
             (a live view: no chime, nobody else is told)</form>\n"
            .to_string(),
        Some(false) => "<p id=\"doorbell\">The doorbell is not connected to this server \
             (its signaling.look_key_file must hold this server's look key).</p>\n"
            .to_string(),
    };
    page(
        StatusCode::OK,
        "Doorbell owner",
        &format!(
            "<p>Signed in.</p>\n{look}<ul>\n<li>Rings open now: <span id=\"rings\">{rings}</span></li>\n\
             <li>Connections: <span id=\"connections\">{connections}</span></li>\n\
             <li>Server up for: {}h {:02}m</li>\n</ul>\n\
             <p><a href=\"history\">History</a></p>\n\
             <form method=\"post\" action=\"logout\"><button type=\"submit\">Sign out</button></form>",
            up / 3600,
            (up / 60) % 60
        ),
    )
}

/// "Look now": the doorbell opens a live view and the owner goes to its
/// viewer page. The session cookie is `SameSite=Strict`, so another site
/// cannot make the owner's browser post this.
async fn post_look(State(site): State<Arc<Site>>, headers: HeaderMap) -> Response {
    if site.owner.is_none() {
        return off();
    }
    if !signed_in(&site, &headers) {
        return redirect("login");
    }
    let Some(look) = site.look.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match look().await {
        Ok(room) => {
            tracing::info!("the owner looks at the door (Look now)");
            // Relative, like the other redirects: behind a proxy's path
            // prefix the viewer page is beside this one.
            let to = format!("./?room={}", url_encode(&room));
            let mut r = (StatusCode::SEE_OTHER, "").into_response();
            if let Ok(v) = HeaderValue::from_str(&to) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(why) => {
            tracing::info!("Look now did not start: {why}");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "No live view",
                &format!(
                    "<p>No live view: {}.</p>\n<p><a href=\"owner\">Back</a></p>",
                    escape(&why)
                ),
            )
        }
    }
}

/// A room name in a URL query (ours are URL-safe already).
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Rows on the history page.
const HISTORY_ROWS: usize = 100;

async fn get_history(State(site): State<Arc<Site>>, headers: HeaderMap) -> Response {
    if site.owner.is_none() {
        return off();
    }
    if !signed_in(&site, &headers) {
        return redirect("login");
    }
    let Some(dir) = site.history_dir.clone() else {
        return page(
            StatusCode::NOT_FOUND,
            "History",
            "<p>This server does not know where the doorbell keeps its history: start \
             <code>doorbell serve</code> with <code>--history-dir</code> (the doorbell's \
             <code>history.dir</code>, /var/lib/doorbell under systemd).</p>",
        );
    };
    let read = tokio::task::spawn_blocking(move || {
        crate::history::Store::read_only(&dir)?
            .map(|s| s.recent(HISTORY_ROWS))
            .transpose()
    })
    .await;
    let rows = match read {
        Ok(Ok(rows)) => rows.unwrap_or_default(),
        Ok(Err(e)) => {
            tracing::error!("history page: {e}");
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "History",
                "<p>The history could not be read; the server's log says why.</p>",
            );
        }
        Err(e) => {
            tracing::error!("history page: {e}");
            return page(StatusCode::INTERNAL_SERVER_ERROR, "History", "");
        }
    };
    page(StatusCode::OK, "History", &history_table(&rows))
}

/// The rows as a table, newest first; pictures and clips link to their files.
fn history_table(rows: &[crate::history::Row]) -> String {
    if rows.is_empty() {
        return "<p>No ring yet.</p>\n<p><a href=\"owner\">Back</a></p>".into();
    }
    let file = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
    };
    let mut html = String::from(
        "<table class=\"history\">\n<thead><tr><th>When</th><th>What</th>\
         <th>How it went</th><th>Picture</th><th>Recording</th></tr></thead>\n<tbody>\n",
    );
    for r in rows {
        let when = crate::notify::telegram::day_and_clock(r.started_ms);
        let picture = file(&r.snapshot)
            .map(|n| {
                format!(
                    "<a href=\"history/media/{n}\"><img src=\"history/media/{n}\" alt=\"The visitor \
                     at {when}\" width=\"160\" height=\"120\" loading=\"lazy\"></a>"
                )
            })
            .unwrap_or_default();
        let clip = file(&r.clip)
            .map(|n| format!("<video src=\"history/media/{n}\" controls preload=\"none\" width=\"240\"></video>"))
            .unwrap_or_default();
        html.push_str(&format!(
            "<tr id=\"row-{}\"><td>{when}</td><td>{}</td><td>{}</td><td>{picture}</td><td>{clip}</td></tr>\n",
            r.id,
            r.kind.as_str(),
            escape(&r.describe()),
        ));
    }
    html.push_str("</tbody>\n</table>\n<p><a href=\"owner\">Back</a></p>");
    html
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A picture or recording of the history: only names the doorbell gives
/// its files (`000012-snapshot.jpg`, `000012-clip.mp4`), so no request can
/// reach another file.
async fn get_history_file(
    State(site): State<Arc<Site>>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    if site.owner.is_none() || !signed_in(&site, &headers) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let kind = match name.split_once('-') {
        Some((id, "snapshot.jpg")) if id.len() == 6 && id.bytes().all(|b| b.is_ascii_digit()) => {
            "image/jpeg"
        }
        Some((id, "clip.mp4")) if id.len() == 6 && id.bytes().all(|b| b.is_ascii_digit()) => {
            "video/mp4"
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let Some(dir) = &site.history_dir else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let path = dir.join(crate::history::store::MEDIA_DIR).join(&name);
    match tokio::fs::read(&path).await {
        Ok(data) => {
            let mut r = (StatusCode::OK, data).into_response();
            secure_headers(r.headers_mut(), kind);
            r
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn post_logout(
    State(site): State<Arc<Site>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(owner) = site.owner.as_ref() {
        for t in headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(token_in)
        {
            owner.logout(t);
        }
    }
    with_cookie(
        redirect("login"),
        cleared_cookie(over_tls(peer.ip(), &headers)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_signing_in_only_a_ring_link_is_followed() {
        assert_eq!(next_page("watch/door-1"), Some("watch/door-1"));
        for bad in [
            "//evil.example",
            "https://evil.example/",
            "watch/../owner",
            "watch/a/b",
            "owner",
            "watch/",
        ] {
            assert_eq!(next_page(bad), None, "{bad}");
        }
    }

    #[test]
    fn tls_is_believed_only_from_a_local_proxy() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let remote: IpAddr = "203.0.113.5".parse().unwrap();
        assert!(over_tls(local, &h));
        assert!(!over_tls(remote, &h), "anyone can send the header");
        let mut h = HeaderMap::new();
        h.insert(
            header::FORWARDED,
            HeaderValue::from_static("for=1.2.3.4;proto=https"),
        );
        assert!(over_tls(local, &h));
        assert!(!over_tls(local, &HeaderMap::new()));
    }
}
