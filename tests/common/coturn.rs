//! A real TURN server for tests: Debian's coturn (`turnserver`) on
//! loopback, taking TURN REST credentials only (`use-auth-secret`), its log
//! kept so a test can see who allocated a relay and who was refused.

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Coturn {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Coturn {
    /// Starts `turnserver` with `secret` as its static auth secret and waits
    /// until it listens.
    pub fn start(secret: &str) -> Coturn {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // Relay ports: a small range of their own, picked from the port.
        let min = 20_000 + (port % 200) * 100;
        let log = dir.path().join("turnserver.log");
        // A config file rather than arguments: the secret stays out of `ps`,
        // as docs/security.md tells owners to do.
        let conf = dir.path().join("turnserver.conf");
        std::fs::write(
            &conf,
            format!(
                "listening-ip=127.0.0.1\nrelay-ip=127.0.0.1\nlistening-port={port}\n\
                 min-port={min}\nmax-port={max}\nuse-auth-secret\nstatic-auth-secret={secret}\n\
                 realm=doorbell\nno-tls\nno-dtls\nno-cli\nallow-loopback-peers\nfingerprint\n\
                 no-multicast-peers\nsimple-log\nverbose\nlog-file={log}\npidfile={pid}\n\
                 userdb={db}\n",
                max = min + 99,
                log = log.display(),
                pid = dir.path().join("turnserver.pid").display(),
                db = dir.path().join("turndb").display(),
            ),
        )
        .unwrap();
        let child = Command::new("turnserver")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("turnserver: {e} (Debian package coturn; scripts/test installs it)")
            });
        let mut turn = Coturn {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = turn.child.try_wait() {
                panic!("turnserver exited ({status}): {}", turn.log());
            }
            assert!(
                Instant::now() < deadline,
                "turnserver did not listen: {}",
                turn.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        turn
    }

    /// The UDP URL of the server.
    pub fn url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        // coturn may add a date to the file name; take every log file there.
        if let Some(dir) = self.log.parent() {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if name.starts_with("turnserver") && name.ends_with(".log") {
                    let _ = std::fs::File::open(entry.path())
                        .and_then(|mut f| f.read_to_string(&mut text));
                }
            }
        }
        text
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
