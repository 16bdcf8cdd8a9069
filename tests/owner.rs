//! The owner's pages of `doorbell serve` behind the owner's password: a
//! wrong password, the right one (and the cookie's flags, with and without
//! TLS in front), an expired session, a brute force from one address while
//! the owner signs in from another. The password hash is made by the real
//! `doorbell passwd`, and the server is the real `doorbell serve` process.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const BIN: &str = env!("CARGO_BIN_EXE_doorbell");
const PASSWORD: &str = "a long owner password";

/// `doorbell passwd --file`, fed the password on standard input.
fn passwd(file: &std::path::Path, password: &str) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(["passwd", "--file"])
        .arg(file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

struct Serve {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(dir: &std::path::Path, extra: &[&str]) -> Serve {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = dir.join(format!("serve-{port}.log"));
        let child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                &addr.to_string(),
                "--ice-server",
                "stun:127.0.0.1:9",
            ])
            .args(extra)
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                start.elapsed() < common::WAIT,
                "serve did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Serve { child, addr, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// One HTTP/1.1 exchange from `from` (a loopback address): status, headers
/// (lower-case names), body.
async fn http(
    server: SocketAddr,
    from: [u8; 4],
    request: &str,
) -> (u16, Vec<(String, String)>, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let mut stream = socket.connect(server).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(common::WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn get(
    server: SocketAddr,
    path: &str,
    cookie: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
    http(
        server,
        [127, 0, 0, 1],
        &format!("GET {path} HTTP/1.1\r\nHost: bell\r\n{cookie}Connection: close\r\n\r\n"),
    )
    .await
}

async fn login(
    server: SocketAddr,
    from: [u8; 4],
    password: &str,
    extra_headers: &str,
) -> (u16, Vec<(String, String)>, String) {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("password", password)
        .finish();
    http(
        server,
        from,
        &format!(
            "POST /login HTTP/1.1\r\nHost: bell\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

/// `name=value` of a Set-Cookie header.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_string()
}

fn hash_file(dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("owner.hash");
    let out = passwd(&file, PASSWORD);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    file
}

#[test]
fn doorbell_passwd_writes_a_private_argon2_hash_and_refuses_a_short_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = hash_file(dir.path());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("$argon2id$"), "{text}");
    assert!(!text.contains(PASSWORD));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let short = dir.path().join("short.hash");
    let out = passwd(&short, "short");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at least 10 characters"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!short.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_right_password_and_the_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let file = hash_file(dir.path());
    let serve = Serve::start(
        dir.path(),
        &["--owner-password-file", file.to_str().unwrap()],
    );
    let addr = serve.addr;

    // Not signed in: the owner page sends to the login form.
    let (status, headers, _) = get(addr, "/owner", None).await;
    assert_eq!(status, 303);
    assert_eq!(header(&headers, "location"), Some("login"));
    let (status, _, body) = get(addr, "/login", None).await;
    assert_eq!(status, 200);
    assert!(body.contains("type=\"password\""), "{body}");

    // A wrong password: refused, no cookie.
    let (status, headers, body) = login(addr, [127, 0, 0, 1], "not the password", "").await;
    assert_eq!(status, 401);
    assert!(header(&headers, "set-cookie").is_none());
    assert!(body.contains("Wrong password"), "{body}");
    let (status, _, _) = get(addr, "/owner", Some("doorbell_owner=forged-token")).await;
    assert_eq!(status, 303, "a made-up cookie is not a session");

    // The right one: a session cookie, HttpOnly and SameSite=Strict; not
    // Secure over plain HTTP (a browser would drop it).
    let (status, headers, _) = login(addr, [127, 0, 0, 1], PASSWORD, "").await;
    assert_eq!(status, 303);
    assert_eq!(header(&headers, "location"), Some("owner"));
    let set = header(&headers, "set-cookie")
        .expect("a session cookie")
        .to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(!set.contains("Secure"), "{set}");
    let cookie = cookie_pair(&set);
    let (status, headers, body) = get(addr, "/owner", Some(&cookie)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Signed in"), "{body}");
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));

    // Behind a TLS reverse proxy on this machine: Secure too.
    let (status, headers, _) = login(
        addr,
        [127, 0, 0, 1],
        PASSWORD,
        "X-Forwarded-Proto: https\r\n",
    )
    .await;
    assert_eq!(status, 303);
    assert!(header(&headers, "set-cookie")
        .unwrap()
        .ends_with("; Secure"));

    // Signing out ends the session.
    let (status, headers, _) = http(
        addr,
        [127, 0, 0, 1],
        &format!("POST /logout HTTP/1.1\r\nHost: bell\r\nCookie: {cookie}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 303);
    assert!(header(&headers, "set-cookie")
        .unwrap()
        .contains("Max-Age=0"));
    let (status, _, _) = get(addr, "/owner", Some(&cookie)).await;
    assert_eq!(status, 303);
    // The password is nowhere in the log.
    assert!(!serve.log().contains(PASSWORD), "{}", serve.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_sends_back_to_the_login() {
    let dir = tempfile::tempdir().unwrap();
    let file = hash_file(dir.path());
    let serve = Serve::start(
        dir.path(),
        &[
            "--owner-password-file",
            file.to_str().unwrap(),
            "--owner-session-ttl",
            "2s",
        ],
    );
    let (status, headers, _) = login(serve.addr, [127, 0, 0, 1], PASSWORD, "").await;
    assert_eq!(status, 303);
    let set = header(&headers, "set-cookie").unwrap().to_string();
    assert!(set.contains("Max-Age=2"), "{set}");
    let cookie = cookie_pair(&set);
    assert_eq!(get(serve.addr, "/owner", Some(&cookie)).await.0, 200);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (status, headers, _) = get(serve.addr, "/owner", Some(&cookie)).await;
    assert_eq!(status, 303, "the session expired");
    assert_eq!(header(&headers, "location"), Some("login"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brute_force_is_shut_out_while_the_owner_signs_in_from_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let file = hash_file(dir.path());
    let serve = Serve::start(
        dir.path(),
        &["--owner-password-file", file.to_str().unwrap()],
    );
    let attacker = [127, 0, 0, 2];
    for i in 0..5 {
        let (status, _, _) = login(serve.addr, attacker, &format!("guess number {i}"), "").await;
        assert_eq!(status, 401);
    }
    // Shut out now, the right password included, and told when to come back.
    for password in ["guess number 6", PASSWORD] {
        let (status, headers, _) = login(serve.addr, attacker, password, "").await;
        assert_eq!(status, 429);
        assert!(header(&headers, "set-cookie").is_none());
        let retry: u64 = header(&headers, "retry-after").unwrap().parse().unwrap();
        assert!(retry > 800 && retry <= 900, "{retry}");
    }
    // The owner, from another address, signs in at the same time.
    let (status, headers, _) = login(serve.addr, [127, 0, 0, 3], PASSWORD, "").await;
    assert_eq!(status, 303);
    assert!(header(&headers, "set-cookie").is_some());
    // Behind a reverse proxy, the client's address comes from the proxy:
    // the shut-out address is shut out through it too, others are not.
    let via_proxy = |a: &str| format!("X-Forwarded-For: {a}\r\n");
    for i in 0..5 {
        let (status, _, _) = login(
            serve.addr,
            [127, 0, 0, 1],
            &format!("guess {i} via proxy"),
            &via_proxy("198.51.100.7"),
        )
        .await;
        assert_eq!(status, 401);
    }
    let (status, _, _) = login(
        serve.addr,
        [127, 0, 0, 1],
        PASSWORD,
        &via_proxy("198.51.100.7"),
    )
    .await;
    assert_eq!(status, 429);
    let (status, _, _) = login(
        serve.addr,
        [127, 0, 0, 1],
        PASSWORD,
        &via_proxy("198.51.100.8"),
    )
    .await;
    assert_eq!(status, 303);
    // Refused and logged once (per address and minute), naming the address.
    let log = serve.log();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("owner logins"))
        .collect();
    assert_eq!(warned.len(), 2, "{log}");
    assert!(warned[0].contains("127.0.0.2"), "{}", warned[0]);
    assert!(warned[1].contains("198.51.100.7"), "{}", warned[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_password_the_owner_pages_are_off_and_a_bad_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[]);
    let (status, _, body) = get(serve.addr, "/owner", None).await;
    assert_eq!(status, 404);
    assert!(body.contains("doorbell passwd"), "{body}");
    assert_eq!(login(serve.addr, [127, 0, 0, 1], PASSWORD, "").await.0, 404);
    // A file that holds a password, not a hash: the start stops with the fix.
    let bad = dir.path().join("plain");
    std::fs::write(&bad, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--owner-password-file"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("doorbell passwd"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_page_shows_the_rings_with_their_pictures_to_the_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = hash_file(dir.path());
    // A history as the doorbell leaves it: a missed ring with its picture,
    // an answered one without.
    let state = dir.path().join("state");
    let jpeg = b"\xff\xd8\xff\xe0 a picture \xff\xd9".to_vec();
    {
        use doorbell::history::{Attachment, Kind, Store};
        let (store, _) = Store::open(&state).unwrap();
        let now = doorbell::media::unix_ms();
        let a = store.begin(Kind::Ring, 1, "r1", now - 60_000).unwrap();
        store.attach(a, Attachment::Snapshot, &jpeg).unwrap();
        store.ended(a, now - 30_000, "unanswered").unwrap();
        let b = store.begin(Kind::Ring, 2, "r2", now - 20_000).unwrap();
        store.answered(b, now - 15_000).unwrap();
        store.ended(b, now - 5_000, "viewer_left").unwrap();
    }
    let serve = Serve::start(
        dir.path(),
        &[
            "--owner-password-file",
            file.to_str().unwrap(),
            "--history-dir",
            state.to_str().unwrap(),
        ],
    );
    let addr = serve.addr;
    let picture = "/history/media/000001-snapshot.jpg";

    // Not signed in: the page sends to the login, the picture is not there.
    let (status, headers, _) = get(addr, "/history", None).await;
    assert_eq!(status, 303);
    assert_eq!(header(&headers, "location"), Some("login"));
    assert_eq!(get(addr, picture, None).await.0, 404);

    let (_, headers, _) = login(addr, [127, 0, 0, 1], PASSWORD, "").await;
    let cookie = cookie_pair(header(&headers, "set-cookie").unwrap());
    let (status, _, body) = get(addr, "/owner", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(body.contains("<a href=\"history\">History</a>"), "{body}");
    let (status, _, body) = get(addr, "/history", Some(&cookie)).await;
    assert_eq!(status, 200, "{body}");
    let newest = body.find("row-2").expect("the answered ring");
    let older = body.find("row-1").expect("the missed ring");
    assert!(newest < older, "newest first: {body}");
    assert!(body.contains("answered (talked 10 s)"), "{body}");
    assert!(body.contains("<td>missed</td>"), "{body}");
    assert!(
        body.contains("src=\"history/media/000001-snapshot.jpg\""),
        "{body}"
    );

    let (status, headers, _) = get(addr, picture, Some(&cookie)).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("image/jpeg"));
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    let length = jpeg.len().to_string();
    assert_eq!(header(&headers, "content-length"), Some(length.as_str()));
    // Only the names the doorbell gives its files.
    for path in [
        "/history/media/..%2Fhistory.db",
        "/history/media/history.db",
        "/history/media/000001-snapshot.jpg.tmp",
        "/history/media/000009-snapshot.jpg",
    ] {
        assert_eq!(get(addr, path, Some(&cookie)).await.0, 404, "{path}");
    }
    drop(serve);
}

/// A private file holding `key`.
fn key_file(dir: &std::path::Path, name: &str, key: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{key}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

async fn post(
    server: SocketAddr,
    path: &str,
    cookie: &str,
) -> (u16, Vec<(String, String)>, String) {
    http(
        server,
        [127, 0, 0, 1],
        &format!(
            "POST {path} HTTP/1.1\r\nHost: bell\r\nCookie: {cookie}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        ),
    )
    .await
}

/// Polls the owner page until `pred` holds for its body.
async fn owner_page_until(addr: SocketAddr, cookie: &str, pred: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let (status, _, body) = get(addr, "/owner", Some(cookie)).await;
        assert_eq!(status, 200);
        if pred(&body) {
            return body;
        }
        assert!(
            start.elapsed() < common::WAIT,
            "the owner page stayed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// "Look now" on the owner page of a real `doorbell serve`: a doorbell
/// with a wrong look key is not taken for the doorbell; with the right one
/// the button opens a live view (no chime, no notification) and sends the
/// owner to its viewer page, where a viewer gets the door's video; a second
/// press during it is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_now_opens_a_live_view_from_the_owner_page() {
    common::init_logs();
    const KEY: &str = "look-key-for-the-owner-page-test";
    let dir = tempfile::tempdir().unwrap();
    let file = hash_file(dir.path());
    let server_key = key_file(dir.path(), "server.key", KEY);
    let serve = Serve::start(
        dir.path(),
        &[
            "--owner-password-file",
            file.to_str().unwrap(),
            "--look-key-file",
            server_key.to_str().unwrap(),
        ],
    );
    let addr = serve.addr;
    let url = format!("http://{addr}");
    let (_, headers, _) = login(addr, [127, 0, 0, 1], PASSWORD, "").await;
    let cookie = cookie_pair(header(&headers, "set-cookie").unwrap());
    let body = owner_page_until(addr, &cookie, |b| b.contains("not connected")).await;
    assert!(!body.contains("Look now</button>"), "{body}");
    let (status, _, body) = post(addr, "/look", &cookie).await;
    assert_eq!(status, 503);
    assert!(body.contains("not connected"), "{body}");

    // A doorbell with the wrong key.
    let wrong = key_file(dir.path(), "wrong.key", "not-the-look-key-of-this-server");
    let bell_dir = tempfile::tempdir().unwrap();
    let mut config = common::loopback_config(&url, bell_dir.path());
    config.signaling.look_key_file = Some(wrong);
    let impostor = common::Bell::start(&config).await;
    impostor.wait_connected().await;
    let start = Instant::now();
    while !serve.log().contains("wrong look key") {
        assert!(start.elapsed() < common::WAIT, "{}", serve.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = owner_page_until(addr, &cookie, |_| true).await;
    assert!(body.contains("not connected"), "{body}");
    impostor.stop().await;

    // The doorbell.
    config.signaling.look_key_file = Some(key_file(dir.path(), "bell.key", KEY));
    let mut bell = common::Bell::start(&config).await;
    bell.wait_connected().await;
    owner_page_until(addr, &cookie, |b| b.contains("Look now</button>")).await;
    let (status, headers, _) = post(addr, "/look", &cookie).await;
    assert_eq!(status, 303);
    let location = header(&headers, "location").unwrap().to_string();
    let room = location
        .strip_prefix("./?room=")
        .unwrap_or_else(|| panic!("to the viewer page: {location}"))
        .to_string();
    let (started, _) = bell.until("live_started").await;
    assert_eq!(started.event.room, room);
    // Busy while it runs.
    let (status, _, body) = post(addr, "/look", &cookie).await;
    assert_eq!(status, 503);
    assert!(body.contains("busy"), "{body}");
    let report =
        common::view_call(&url, &room, 30, (320, 240), Duration::from_secs(1), 1000.0).await;
    assert!(
        report.decoded_frames >= 15,
        "{} frames",
        report.decoded_frames
    );
    let (_, seen) = bell.until("ended").await;
    let names = common::names(&seen);
    assert!(!names.contains(&"ringing"), "no ring: {names:?}");
    assert!(!names.contains(&"notified"), "nobody told: {names:?}");
    bell.stop().await;
    assert!(!serve.log().contains(KEY), "{}", serve.log());
    drop(serve);
}
