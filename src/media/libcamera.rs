//! The Raspberry Pi camera module through libcamera (`video.source =
//! "libcamera"`): `rpicam-vid` (`libcamera-vid` on older systems) runs as a
//! child process and writes raw YUV420 frames to its standard output, which
//! is read a frame at a time.
//!
//! Why a child process: libcamera is C++ with no maintained Rust binding,
//! and the Raspberry Pi's own apps carry the tuning (exposure, white
//! balance, denoise) for every sensor; what they print is what Pi owners
//! already know how to read.
//!
//! Supervised: if the program dies (the camera cable wiggles, the ISP
//! times out), it is started again after a pause that grows (0.5 s doubling
//! to 8 s, reset after a minute of frames), and the call goes on; after
//! [`GIVE_UP_AFTER`] starts in a row that gave no frame at all, the source
//! fails with the program's last words. Its standard error goes into our
//! log, line by line. It is stopped (SIGTERM, then SIGKILL after 2 s) when
//! the source is dropped.
//!
//! Frames are I420 with no padding: the width must be a multiple of 64, so
//! that the app's row alignment adds nothing (checked by the config).

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Frame, MediaError, VideoSource};
use crate::backoff::Backoff;

/// Starts in a row without a frame before the source fails.
pub const GIVE_UP_AFTER: u32 = 5;
/// Pause before a restart: 0.5 s doubling to 8 s.
const RESTART: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(8), 0.1);
/// Frames for this long reset the pause.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// The programs tried for `auto`, in order.
pub const PROGRAMS: [&str; 2] = ["rpicam-vid", "libcamera-vid"];
/// The last lines of the program's standard error kept for an error text.
const LAST_WORDS: usize = 3;

/// Finds the program for `command`: `auto` looks for [`PROGRAMS`] on
/// `$PATH`; anything else is a path (or a name on `$PATH`).
pub fn resolve(command: &str) -> Result<PathBuf, String> {
    let on_path = |name: &str| -> Option<PathBuf> {
        if name.contains('/') {
            return Path::new(name).is_file().then(|| PathBuf::from(name));
        }
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    };
    if command == "auto" {
        return PROGRAMS.iter().find_map(|p| on_path(p)).ok_or_else(|| {
            "neither rpicam-vid nor libcamera-vid is installed \
             (sudo apt install rpicam-apps)"
                .to_string()
        });
    }
    on_path(command).ok_or_else(|| format!("{command}: no such program"))
}

struct Running {
    child: Child,
    stdout: ChildStdout,
    started: Instant,
    frames: u64,
}

/// The camera module, through the program.
pub struct LibcameraCamera {
    program: PathBuf,
    args: Vec<String>,
    width: usize,
    height: usize,
    running: Option<Running>,
    /// Starts in a row that gave no frame.
    barren: u32,
    /// Restarts since the last healthy stretch (for the pause).
    restarts: u32,
    last_words: Arc<Mutex<Vec<String>>>,
}

impl LibcameraCamera {
    /// Starts `program` for `camera` (its index) at this size and rate, and
    /// waits for nothing: the first frame comes with the first read.
    pub fn open(
        program: &Path,
        camera: u32,
        width: usize,
        height: usize,
        fps: u32,
    ) -> Result<LibcameraCamera, MediaError> {
        if !width.is_multiple_of(64) || !height.is_multiple_of(2) {
            return Err(device(
                program,
                format!(
                    "{width}x{height}: the width must be a multiple of 64 and the height even \
                     (640x480, 1280x720, 1920x1080)"
                ),
            ));
        }
        let args = [
            "--nopreview",
            "-t",
            "0",
            "--codec",
            "yuv420",
            "--flush",
            "--camera",
            &camera.to_string(),
            "--width",
            &width.to_string(),
            "--height",
            &height.to_string(),
            "--framerate",
            &fps.to_string(),
            "-o",
            "-",
        ]
        .map(str::to_string)
        .to_vec();
        let mut camera = LibcameraCamera {
            program: program.to_path_buf(),
            args,
            width,
            height,
            running: None,
            barren: 0,
            restarts: 0,
            last_words: Arc::new(Mutex::new(Vec::new())),
        };
        camera.start()?;
        Ok(camera)
    }

    fn name(&self) -> String {
        self.program
            .file_name()
            .map_or_else(|| "rpicam-vid".into(), |n| n.to_string_lossy().into_owned())
    }

    fn start(&mut self) -> Result<(), MediaError> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| device(&self.program, format!("cannot start it: {e}")))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        if let Some(stderr) = child.stderr.take() {
            let (name, pid, words) = (self.name(), child.id(), self.last_words.clone());
            words.lock().unwrap_or_else(|e| e.into_inner()).clear();
            let spawned = std::thread::Builder::new()
                .name("libcamera-log".into())
                .spawn(move || log_lines(stderr, &name, pid, &words));
            if let Err(e) = spawned {
                tracing::warn!("{}: no thread for its log: {e}", self.name());
            }
        }
        tracing::info!(
            pid = child.id(),
            "camera: started {} {}",
            self.program.display(),
            self.args.join(" ")
        );
        self.running = Some(Running {
            child,
            stdout,
            started: Instant::now(),
            frames: 0,
        });
        Ok(())
    }

    /// The program ended (or its output did): reap it and say why.
    fn ended(&mut self, why: String) -> String {
        let Some(mut r) = self.running.take() else {
            return why;
        };
        stop(&mut r.child);
        let status = r
            .child
            .wait()
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        if r.frames == 0 {
            self.barren += 1;
        } else {
            self.barren = 0;
        }
        if r.started.elapsed() > HEALTHY_AFTER {
            self.restarts = 0;
        }
        let words = self
            .last_words
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join(" / ");
        let mut text = format!(
            "{} stopped ({status}) after {} frames: {why}",
            self.name(),
            r.frames
        );
        if !words.is_empty() {
            text.push_str(&format!("; it said: {words}"));
        }
        text
    }
}

impl VideoSource for LibcameraCamera {
    fn next_frame(&mut self, frame: &mut Frame) -> Result<(), MediaError> {
        let size = self.width * self.height * 3 / 2;
        if frame.width != self.width || frame.height != self.height || frame.data.len() != size {
            *frame = Frame::new(self.width, self.height);
        }
        loop {
            if self.running.is_none() {
                if self.barren >= GIVE_UP_AFTER {
                    return Err(device(
                        &self.program,
                        format!(
                            "gave no picture in {GIVE_UP_AFTER} starts in a row; the last: {}",
                            self.last_words
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .join(" / ")
                        ),
                    ));
                }
                self.restarts += 1;
                std::thread::sleep(RESTART.wait(self.restarts));
                self.start()?;
            }
            let r = self.running.as_mut().expect("started above");
            match r.stdout.read_exact(&mut frame.data) {
                Ok(()) => {
                    r.frames += 1;
                    frame.captured = Instant::now();
                    frame.captured_unix_ms = super::unix_ms();
                    return Ok(());
                }
                Err(e) => {
                    let why = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        "its output ended".to_string()
                    } else {
                        e.to_string()
                    };
                    let text = self.ended(why);
                    tracing::warn!(
                        "camera: {text}; starting it again in {:.1} s",
                        RESTART.base(self.restarts + 1).as_secs_f64()
                    );
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!("{} {}x{}", self.name(), self.width, self.height)
    }
}

impl Drop for LibcameraCamera {
    fn drop(&mut self) {
        if let Some(mut r) = self.running.take() {
            stop(&mut r.child);
            let _ = r.child.wait();
        }
    }
}

/// SIGTERM, then SIGKILL if it has not gone in 2 s.
fn stop(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
}

/// The program's standard error into our log, and its last lines kept.
fn log_lines(stderr: std::process::ChildStderr, name: &str, pid: u32, words: &Mutex<Vec<String>>) {
    for line in std::io::BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let line: String = line.chars().take(300).collect();
        if line.contains("ERROR") || line.contains("error") {
            tracing::warn!(pid, "{name}: {line}");
        } else {
            tracing::info!(pid, "{name}: {line}");
        }
        let mut w = words.lock().unwrap_or_else(|e| e.into_inner());
        w.push(line);
        let extra = w.len().saturating_sub(LAST_WORDS);
        w.drain(..extra);
    }
}

fn device(program: &Path, message: String) -> MediaError {
    MediaError::Device {
        device: format!("libcamera ({})", program.display()),
        message,
    }
}
