//! The original design's world, for tests: its signaling server in both
//! library generations (tests/lab/server.py under python-socketio 4 or 5),
//! its certificate made the lab's way, its page in Chromium, and the doorbell
//! as users run it (the real binary, `doorbell run --events json`, presses on
//! standard input, its log captured).

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use super::{cdp, WAIT};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Which generation of the original server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// python-socketio 4.6 / python-engineio 3 (Engine.IO 3), the lab
    /// README's era; the page loads socket.io-client 2.
    Sio4,
    /// python-socketio 5 / python-engineio 4 (Engine.IO 4); socket.io-client 4.
    Sio5,
}

impl Generation {
    fn python(self) -> String {
        let (var, venv) = match self {
            Generation::Sio4 => ("DOORBELL_PY4", "target/py4/bin/python"),
            Generation::Sio5 => ("DOORBELL_PY5", "target/py5/bin/python"),
        };
        std::env::var(var).unwrap_or_else(|_| {
            let p = Path::new(ROOT).join(venv);
            assert!(
                p.exists(),
                "{var} is not set and {} does not exist: run scripts/test, which installs python-socketio 4 and 5",
                p.display()
            );
            p.display().to_string()
        })
    }

    fn client_js(self) -> PathBuf {
        let modules = std::env::var("DOORBELL_LAB_NODE_MODULES")
            .map(PathBuf::from)
            .unwrap_or_else(|_| Path::new(ROOT).join("target/lab/node_modules"));
        let name = match self {
            Generation::Sio4 => "socket.io-client-2",
            Generation::Sio5 => "socket.io-client-4",
        };
        let p = modules.join(name).join("dist/socket.io.js");
        assert!(
            p.exists(),
            "{} is missing: run scripts/test, which installs the socket.io clients from npm",
            p.display()
        );
        p
    }

    /// What the doorbell's log says when it has found this generation.
    pub fn log_words(self) -> &'static str {
        match self {
            Generation::Sio4 => "it speaks Engine.IO 3 / Socket.IO protocol 4",
            Generation::Sio5 => "it speaks Engine.IO 4 / Socket.IO protocol 5",
        }
    }
}

/// A certificate made the lab's way (CN=127.0.0.1, no subjectAltName).
pub struct LabCert {
    _dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `AB:CD:...`, as `openssl x509 -fingerprint -sha256` prints it.
    pub fingerprint: String,
    /// base64 SHA-256 of the public key, for Chromium's SPKI allow-list.
    pub spki: String,
}

impl LabCert {
    /// For [`LabServerOptions::tls`].
    pub fn files(&self) -> (&Path, &Path) {
        (&self.cert, &self.key)
    }

    /// The lab's certificate: CN only.
    pub fn make() -> LabCert {
        Self::make_with(&[])
    }

    /// A proper one: the same with subjectAltName IP:127.0.0.1.
    pub fn make_proper() -> LabCert {
        Self::make_with(&["--san"])
    }

    fn make_with(args: &[&str]) -> LabCert {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("sh")
            .arg(Path::new(ROOT).join("tests/lab/make-cert.sh"))
            .arg(dir.path())
            .args(args)
            .output()
            .expect("tests/lab/make-cert.sh runs (openssl installed?)");
        assert!(
            out.status.success(),
            "make-cert.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cert = dir.path().join("cert.pem");
        // Computed here from the certificate, not taken from openssl's output,
        // so the two are checked against each other.
        let pem = std::fs::read_to_string(&cert).unwrap();
        let der = pem_to_der(&pem);
        let fingerprint = Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let printed = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            printed.contains(&fingerprint),
            "openssl printed {printed}, we computed {fingerprint}"
        );
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        use base64::Engine;
        let spki = base64::engine::general_purpose::STANDARD
            .encode(Sha256::digest(parsed.tbs_certificate.subject_pki.raw));
        assert!(printed.contains(&spki), "{printed} lacks SPKI {spki}");
        assert_eq!(
            parsed.subject_alternative_name().ok().flatten().is_some(),
            args.contains(&"--san"),
            "the lab's certificate has no subjectAltName, a proper one has"
        );
        LabCert {
            cert,
            key: dir.path().join("key.pem"),
            fingerprint,
            spki,
            _dir: dir,
        }
    }
}

/// A small private certificate authority and a server certificate it signed
/// (subjectAltName IP:127.0.0.1), as a company or a home lab would run.
pub struct PrivateCa {
    _dir: tempfile::TempDir,
    /// The authority's certificate (what `ca_file` names).
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl PrivateCa {
    pub fn make() -> PrivateCa {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/CN=Doorbell Test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(p("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "30",
            "-extfile",
            "ext.cnf",
        ]);
        PrivateCa {
            ca: p("ca.pem"),
            cert: p("cert.pem"),
            key: p("key.pem"),
            _dir: dir,
        }
    }
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// How to run the lab's server.
pub struct LabServerOptions<'a> {
    pub generation: Generation,
    /// Certificate and key files for HTTPS.
    pub tls: Option<(&'a Path, &'a Path)>,
    pub polling_only: bool,
    /// `aiohttp` (python-socketio's own server) or `flask` (Flask-SocketIO
    /// under Werkzeug, exactly as the lab runs it).
    pub backend: &'static str,
}

pub struct LabServer {
    child: Child,
    pub url: String,
    pub port: u16,
    /// `python-socketio X python-engineio Y`.
    pub versions: String,
}

impl Drop for LabServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LabServer {
    /// The server's member count per room (its `/rooms`), ghosts included.
    pub async fn rooms(&self) -> serde_json::Map<String, Value> {
        // Loopback, to the test's own server with its self-signed certificate.
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let body = client
            .get(format!("{}/rooms", self.url))
            .send()
            .await
            .expect("GET /rooms")
            .text()
            .await
            .unwrap();
        match serde_json::from_str(&body) {
            Ok(Value::Object(m)) => m,
            _ => panic!("/rooms answered {body:?}"),
        }
    }

    /// Waits until `room` has no members left on the server.
    pub async fn until_room_is_gone(&self, room: &str) {
        let start = Instant::now();
        loop {
            let rooms = self.rooms().await;
            if !rooms.contains_key(room) {
                return;
            }
            assert!(start.elapsed() < WAIT, "room {room} stays: {rooms:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn start(o: LabServerOptions<'_>) -> LabServer {
        let python = o.generation.python();
        let mut cmd = Command::new(&python);
        cmd.arg(Path::new(ROOT).join("tests/lab/server.py"))
            .args(["--port", "0", "--backend", o.backend])
            .arg("--client-js")
            .arg(o.generation.client_js())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("DOORBELL_SHOW_LAB_SERVER").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        if let Some((cert, key)) = o.tls {
            cmd.arg("--tls").arg(cert).arg(key);
        }
        if o.polling_only {
            cmd.arg("--polling-only");
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python}: {e}; run scripts/test"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut versions = String::new();
        let mut port = None;
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(v) = line.strip_prefix("VERSION ") {
                versions = v.to_string();
            } else if let Some(p) = line.strip_prefix("PORT ") {
                port = p.trim().parse().ok();
                break;
            }
        }
        let port: u16 =
            port.unwrap_or_else(|| panic!("tests/lab/server.py under {python} did not start"));
        let major = match o.generation {
            Generation::Sio4 => "python-socketio 4.",
            Generation::Sio5 => "python-socketio 5.",
        };
        assert!(versions.starts_with(major), "{python} has {versions}");
        let scheme = if o.tls.is_some() { "https" } else { "http" };
        LabServer {
            child,
            url: format!("{scheme}://127.0.0.1:{port}"),
            port,
            versions,
        }
    }
}

/// A tone with gaps (300 ms on, 200 ms off) as the page's microphone: a
/// steady tone would be faded out by the browser's noise suppression, which
/// the lab's page leaves on.
pub fn microphone_file(dir: &Path, hz: f32) -> PathBuf {
    let path = dir.join(format!("mic-{hz}.wav"));
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for i in 0..48_000 * 10 {
        let t = i as f32 / 48_000.0;
        let on = (t % 0.5) < 0.3;
        let s = if on {
            (2.0 * std::f32::consts::PI * hz * t).sin() * 12_000.0
        } else {
            0.0
        };
        w.write_sample(s as i16).unwrap();
    }
    w.finalize().unwrap();
    path
}

/// The loudest 100 ms stretches of what the door played (the page's tone
/// comes in bursts): their rms and the median of their frequencies.
pub fn gated_tone(path: &Path) -> (f64, f64) {
    use doorbell::media::audio::{dominant_frequency, rms};
    let pcm = doorbell::media::wav::read_mono(path).unwrap_or_else(|e| panic!("{e}"));
    let chunks: Vec<&[i16]> = pcm.chunks_exact(4800).collect();
    let loudest = chunks.iter().map(|c| rms(c)).fold(0.0, f64::max);
    let mut loud: Vec<(f64, f64)> = chunks
        .iter()
        .filter(|c| rms(c) > 0.8 * loudest)
        .filter_map(|c| dominant_frequency(c).map(|f| (rms(c), f)))
        .collect();
    assert!(
        loud.len() >= 5,
        "{}: only {} loud stretches of {}",
        path.display(),
        loud.len(),
        chunks.len()
    );
    loud.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (level, freq) = loud[loud.len() / 2];
    (level, freq)
}

/// Chromium on a lab page, trusting exactly `cert`, hearing `microphone`.
pub fn browser(url: &str, cert: Option<&LabCert>, microphone: &Path) -> cdp::Browser {
    let mut flags = vec![format!(
        "--use-file-for-fake-audio-capture={}",
        microphone.display()
    )];
    if let Some(c) = cert {
        flags.push(format!("--ignore-certificate-errors-spki-list={}", c.spki));
    }
    cdp::launch_with(url, &flags)
}

/// What the lab page saw, from `getStats()` and `window.lab`.
pub const PAGE_STATS: &str = r#"(async () => {
  const l = window.lab;
  const out = { state: l ? l.state : "none", events: l ? l.events : [], sent: l ? l.sent : [],
                error: l ? l.error : null, videoOutBytes: 0, framesDecoded: 0 };
  if (!l || !l.pc) return out;
  const stats = await l.pc.getStats();
  const codecs = {};
  stats.forEach((s) => { if (s.type === "codec") codecs[s.id] = s.mimeType; });
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      out.framesDecoded = s.framesDecoded || 0;
      out.videoCodec = codecs[s.codecId];
    }
    if (s.type === "inbound-rtp" && s.kind === "audio") out.audioIn = s.packetsReceived || 0;
    if (s.type === "outbound-rtp" && s.kind === "audio") out.audioOut = s.packetsSent || 0;
    if (s.type === "outbound-rtp" && s.kind === "video") out.videoOutBytes += s.bytesSent || 0;
  });
  out.directions = l.pc.getTransceivers().map((t) => (t.receiver.track ? t.receiver.track.kind : "?") + ":" + t.currentDirection);
  out.connection = l.pc.connectionState;
  return out;
})()"#;

/// How the binary is started: a command it runs under (`ip netns exec NS`)
/// and extra environment (`LD_PRELOAD` of libfaketime).
#[derive(Debug, Default, Clone)]
pub struct Launch {
    pub prefix: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The doorbell as its users run it.
pub struct Daemon {
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::UnboundedReceiver<Value>,
    log: Arc<Mutex<String>>,
    pub dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Runs `doorbell run --config FILE --events json` with `config`, to
    /// which the test sources, loopback ICE and a WAV speaker are added.
    pub fn start(config: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{config}\n\
             [ice]\nservers = []\ninclude_loopback = true\n\
             [video]\nwidth = 320\nheight = 240\nfps = 30\nbitrate_kbps = 600\n\
             [audio]\nmicrophone = \"tone:440\"\nspeaker = \"wav:{}\"\n\
             [button]\nsources = [\"stdin\"]\n\
             [control]\nenabled = false\n\
             [notify]\nstdout = false\n",
            dir.path().join("call-{call}.wav").display()
        );
        Self::start_exactly(dir, &text, None)
    }

    /// Runs the binary with exactly `config` (written into `dir`), and
    /// `RUST_LOG` when given.
    pub fn start_exactly(dir: tempfile::TempDir, config: &str, rust_log: Option<&str>) -> Daemon {
        Self::start_launched(dir, config, rust_log, &Launch::default())
    }

    /// [`Daemon::start_exactly`], started through `launch`.
    pub fn start_launched(
        dir: tempfile::TempDir,
        config: &str,
        rust_log: Option<&str>,
        launch: &Launch,
    ) -> Daemon {
        let path = dir.path().join("doorbell.toml");
        std::fs::write(&path, config).unwrap();
        let binary = env!("CARGO_BIN_EXE_doorbell");
        let mut command = match launch.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        // The history in the test's directory, not the user's.
        command.env("STATE_DIRECTORY", dir.path().join("state"));
        command.envs(launch.env.iter().map(|(k, v)| (k, v)));
        command
            .args(["run", "--config"])
            .arg(&path)
            .args(["--events", "json"])
            .env_remove("RUST_LOG");
        if let Some(level) = rust_log {
            command.env("RUST_LOG", level);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the doorbell binary runs");
        let stdin = child.stdin.take();
        let (tx, events) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        let _ = tx.send(v);
                    }
                    Err(_) => panic!("not a JSON event line on stdout: {line:?}"),
                }
            }
        });
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("DOORBELL_SHOW_LOG").is_some() {
                    eprintln!("doorbell: {line}");
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Daemon {
            child,
            stdin,
            events,
            log,
            dir,
        }
    }

    /// Until the doorbell (a seed-002 device) has had `n` `hello_ack`s: a
    /// server counts a hello before the doorbell has read the answer, and a
    /// press in between would find it not yet connected.
    pub async fn until_device_connected(&self, n: usize) {
        crate::common::eventually("the doorbell is connected", || {
            self.log()
                .matches("connected to the signaling server as a device")
                .count()
                >= n
        })
        .await;
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Forgets the log so far (a long run would hold all of it).
    pub fn clear_log(&self) {
        self.log.lock().unwrap().clear();
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                start.elapsed() < WAIT,
                "the log never said {needle:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A press: one line on standard input.
    pub fn press(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The next event named `name`, and every event seen on the way.
    pub async fn until(&mut self, name: &str) -> (Value, Vec<Value>) {
        self.until_within(name, WAIT).await
    }

    pub async fn until_within(&mut self, name: &str, limit: Duration) -> (Value, Vec<Value>) {
        let mut seen = Vec::new();
        loop {
            let e = tokio::time::timeout(limit, self.events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no {name} event in time; saw {:?}\nlog:\n{}",
                        event_names(&seen),
                        self.log()
                    )
                })
                .expect("the doorbell's event stream ended");
            seen.push(e.clone());
            if e["event"] == name {
                return (e, seen);
            }
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate();
        self.wait_exit()
    }

    /// Sends SIGTERM, as systemd does to stop the service.
    pub fn terminate(&self) {
        // SAFETY: kill(2) on the PID of the child this test started.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// Waits for the process to exit (at most [`WAIT`]).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < WAIT,
                "the doorbell did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn event_names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?").to_string())
        .collect()
}
