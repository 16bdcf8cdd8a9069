//! The sound card path for real: a PulseAudio server in user space with a null
//! sink (44.1 kHz stereo, so audio is resampled both ways), reached through
//! cpal and ALSA's `pulse` plugin exactly as on a Pi with PulseAudio or
//! PipeWire. What is played into the sink comes back on its monitor, which is
//! the server's default source.
//!
//! - a tone played through `DeviceSink` is captured through `DeviceSource` at
//!   48 kHz with its frequency intact (a wrong resampling ratio would move it
//!   by 8 %);
//! - a full call with both the microphone and the speaker on PulseAudio: the
//!   viewer's voice goes out of the doorbell's speaker, into the monitor, into
//!   the doorbell's microphone and back to the viewer, who hears its own tone;
//! - a press plays the chime on the speaker;
//! - the owner's quick reply (a button under the ring message) and voice
//!   message (Ogg/Opus, made by ffmpeg) are heard on the speaker while the
//!   door rings, through the fake Bot API; a voice message too long, one that
//!   is Vorbis, an MP3 sent as music, and an old button get a reply saying why.
//!
//! Needs `pulseaudio` and `libasound2-plugins` (`scripts/test` installs them).

#![cfg(feature = "audio")]

mod common;
#[path = "common/fake_telegram.rs"]
mod fake_telegram;

use common::*;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use doorbell::media::audio::{dominant_frequency, power_share, rms, Tone};
use doorbell::media::device::{DeviceSink, DeviceSource};
use doorbell::media::{AudioSink, AudioSource, AUDIO_FRAME};

/// Tests share one null sink: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Pulse {
    dir: PathBuf,
}

/// Starts the PulseAudio server once for this test binary and points this
/// process at it. The server dies with the process (PR_SET_PDEATHSIG, armed
/// from a thread that lives as long as the process).
fn pulse() -> &'static Pulse {
    static PULSE: OnceLock<Pulse> = OnceLock::new();
    PULSE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("doorbell-pulse-")
            .tempdir()
            .unwrap()
            .keep();
        let socket = dir.join("native");
        let script = dir.join("test.pa");
        std::fs::write(
            &script,
            format!(
                "load-module module-native-protocol-unix socket={} auth-anonymous=1\n\
                 load-module module-null-sink sink_name=doorbell_test rate=44100 channels=2\n\
                 set-default-sink doorbell_test\n\
                 set-default-source doorbell_test.monitor\n",
                socket.display()
            ),
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.clone();
        std::thread::spawn(move || {
            let child = spawn_pulseaudio(&d, &script);
            let _ = tx.send(child.map(|c| c.id()));
            loop {
                std::thread::park();
            }
        });
        let pid = rx
            .recv()
            .unwrap()
            .unwrap_or_else(|e| panic!("cannot start pulseaudio ({e}); install pulseaudio and libasound2-plugins (scripts/test does)"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "pulseaudio (pid {pid}) did not open {} in 10 s; log: {}",
                socket.display(),
                std::fs::read_to_string(dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Set before any thread of this process opens a sound device (every
        // test goes through this function first).
        std::env::set_var("PULSE_SERVER", format!("unix:{}", socket.display()));
        eprintln!("pulseaudio running, pid {pid}, socket {}", socket.display());
        Pulse { dir }
    })
}

fn spawn_pulseaudio(dir: &std::path::Path, script: &std::path::Path) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::File::create(dir.join("log"))?;
    let mut cmd = Command::new("pulseaudio");
    cmd.args([
        "-n",
        "--daemonize=no",
        "--exit-idle-time=-1",
        "--use-pid-file=no",
    ])
    .args([
        "--disable-shm=yes",
        "--log-target=stderr",
        "--log-level=error",
    ])
    .arg("-F")
    .arg(script)
    .env("HOME", dir)
    .env("XDG_RUNTIME_DIR", dir)
    .env("PULSE_RUNTIME_PATH", dir.join("runtime"))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(log);
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.spawn()
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads `seconds` of 48 kHz audio from `source`.
fn capture(source: &mut DeviceSource, seconds: f64) -> Vec<i16> {
    let mut out = Vec::new();
    let mut frame = [0i16; AUDIO_FRAME];
    while out.len() < (48_000.0 * seconds) as usize {
        source.read(&mut frame).unwrap();
        out.extend_from_slice(&frame);
    }
    out
}

#[test]
fn a_tone_round_trips_through_pulseaudio_at_48_khz() {
    let _one = serial();
    let p = pulse();
    let mut mic = DeviceSource::open("pulse").expect("the pulse microphone opens");
    // Capture is flowing before the tone starts (a PulseAudio stream can take
    // a moment to start delivering).
    capture(&mut mic, 0.2);
    let mut speaker = DeviceSink::open("pulse").expect("the pulse speaker opens");
    eprintln!(
        "speaker at {} Hz, microphone at {} Hz (server dir {})",
        speaker.rate(),
        mic.rate(),
        p.dir.display()
    );
    let player = std::thread::spawn(move || {
        let mut tone = Tone::new(1000.0);
        let start = Instant::now();
        for i in 0..150u32 {
            let mut pcm = [0i16; AUDIO_FRAME];
            tone.fill(&mut pcm);
            speaker.write(&pcm).unwrap();
            let due = start + Duration::from_millis(20) * (i + 1);
            // Stay about 60 ms ahead of the device, as the call's playout does.
            if let Some(wait) =
                due.checked_duration_since(Instant::now() + Duration::from_millis(60))
            {
                std::thread::sleep(wait);
            }
        }
        speaker.finish().unwrap();
    });
    let heard = capture(&mut mic, 4.0);
    player.join().unwrap();
    // The tone is there, whole, at its frequency: the 20 ms blocks that carry
    // it, without the first and last (fade in/out of the stream).
    let blocks: Vec<&[i16]> = heard.chunks(960).filter(|b| rms(b) > 1000.0).collect();
    assert!(
        blocks.len() > 50,
        "{} blocks of the 3 s tone came back: {:?}",
        blocks.len(),
        heard.chunks(960).map(|b| rms(b) as u32).collect::<Vec<_>>()
    );
    let middle: Vec<i16> = blocks[2..blocks.len() - 2].concat();
    let level = rms(&middle);
    let hz = dominant_frequency(&middle).expect("a dominant frequency");
    eprintln!("captured rms {level:.0}, {hz:.1} Hz");
    assert!(level > 1000.0, "the tone came back (rms {level})");
    assert!(
        (hz - 1000.0).abs() < 1000.0 * 0.02,
        "1000 Hz played, {hz} Hz captured: the 48 kHz conversion is off"
    );
}

/// A call with the doorbell's microphone and speaker both on PulseAudio, a
/// real echo path: the viewer talks at 660 Hz for `talk`, the doorbell plays
/// it into the null sink, and its microphone hears the sink's monitor. With
/// `echo_control` off the viewer gets its tone back.
async fn call_through_the_sink_and_its_monitor(
    echo_control: bool,
    listen: Duration,
    talk: Duration,
) -> CallReport {
    let Rig {
        mut bell,
        server,
        dir: _dir,
    } = rig(|config| {
        config.audio.microphone = "device:pulse".into();
        config.audio.speaker = "device:pulse".into();
        if !echo_control {
            config.audio.echo_cancellation = false;
            config.audio.duplex = "full".into();
        }
        config.chime.sound = "none".into();
    })
    .await;
    let url = server.url.clone();
    assert!(bell.ring().await.starts_with("ringing "));
    let (notified, _) = bell.until("notified").await;
    let room = room_of(notified.to_json()["link"].as_str().unwrap());
    let report = view_call_listening(&url, &room, 60, (320, 240), listen, 660.0, talk).await;
    assert!(report.decoded_frames >= 60 && report.sizes_ok, "{report:?}");
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "viewer_left");
    bell.stop().await;
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard only serialises the tests of this file (one null sink); it is
// held by the test's own future, on the thread that blocks on it.
#[allow(clippy::await_holding_lock)]
async fn a_call_runs_on_pulseaudio_devices() {
    let _one = serial();
    pulse();
    init_logs();
    // Without echo control: the echo is how the viewer's tone comes back.
    let report = call_through_the_sink_and_its_monitor(
        false,
        Duration::from_secs(7),
        Duration::from_secs(5),
    )
    .await;
    let hz = report
        .doorbell_tone_hz
        .expect("the viewer heard something from the doorbell");
    assert!(
        (hz - 660.0).abs() < 660.0 * 0.05,
        "the viewer's 660 Hz came back through the speaker and microphone as {hz} Hz"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard only serialises the tests of this file (one null sink); it is
// held by the test's own future, on the thread that blocks on it.
#[allow(clippy::await_holding_lock)]
async fn with_echo_cancellation_the_viewer_does_not_hear_its_own_voice_back() {
    // The loop above once with echo control off, once as configured by
    // default; the 660 Hz power in the second half of what the viewer heard.
    let _one = serial();
    pulse();
    init_logs();
    let mut heard_660 = Vec::new();
    for echo_control in [false, true] {
        let report = call_through_the_sink_and_its_monitor(
            echo_control,
            Duration::from_secs(9),
            Duration::from_secs(8),
        )
        .await;
        let tail = &report.heard_tail;
        assert!(tail.len() > 48_000, "the viewer heard the doorbell");
        heard_660.push(power_share(tail, 660.0) * rms(tail).powi(2));
    }
    let erle = 10.0 * (heard_660[0] / heard_660[1].max(1e-9)).log10();
    eprintln!(
        "PulseAudio echo path: the viewer's 660 Hz came back at power {:.0} without echo control and {:.1} with it: {erle:.1} dB less",
        heard_660[0], heard_660[1]
    );
    assert!(
        heard_660[0] > 1e4,
        "without echo control the tone comes back"
    );
    // Measured: about 10 dB here, against 34-48 dB over the software echo
    // path of tests/echo.rs (docs/performance.md, "Talk without echo", says
    // what is known of why). This checks that echo control acts on a real
    // sound server's loop; the figure is printed.
    assert!(erle >= 6.0, "echo control removed only {erle:.1} dB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard only serialises the tests of this file (one null sink); it is
// held by the test's own future, on the thread that blocks on it.
#[allow(clippy::await_holding_lock)]
async fn a_press_plays_the_chime_on_the_speaker() {
    let _one = serial();
    pulse();
    init_logs();
    let Rig {
        mut bell,
        server: _server,
        dir: _dir,
    } = rig(|config| config.audio.speaker = "device:pulse".into()).await;
    // Listen on the monitor first, then press.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let listener = std::thread::spawn(move || {
        let mut mic = DeviceSource::open("pulse").unwrap();
        capture(&mut mic, 0.2);
        ready_tx.send(()).unwrap();
        capture(&mut mic, 3.0)
    });
    tokio::task::spawn_blocking(move || ready_rx.recv().unwrap())
        .await
        .unwrap();
    assert!(bell.ring().await.starts_with("ringing "));
    let heard = tokio::task::spawn_blocking(move || listener.join().unwrap())
        .await
        .unwrap();
    // The ding (E5, 659 Hz) dominates some 100 ms window.
    let best = heard
        .chunks(4800)
        .filter(|w| w.len() == 4800 && rms(w) > 500.0)
        .map(|w| power_share(w, 659.25))
        .fold(0.0, f64::max);
    assert!(
        best > 0.5,
        "the chime's 659 Hz note was heard on the speaker (best share {best:.2})"
    );
    let _ = bell.until("notified").await;
    bell.stop().await;
    let mut log = String::new();
    let _ =
        std::fs::File::open(pulse().dir.join("log")).and_then(|mut f| f.read_to_string(&mut log));
    assert!(!log.contains("E: "), "pulseaudio reported errors: {log}");
}

/// A file made by ffmpeg from a sine tone: `-c:a CODEC`, into `name`.
fn ffmpeg_tone(dir: &std::path::Path, name: &str, hz: u32, seconds: f64, codec: &str) -> Vec<u8> {
    let path = dir.join(name);
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!(
            "sine=frequency={hz}:duration={seconds}:sample_rate=48000"
        ))
        .args(["-ac", "1", "-c:a", codec])
        .arg(&path)
        .output()
        .expect("ffmpeg runs (apt install ffmpeg; scripts/test does)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(path).unwrap()
}

/// The 100 ms windows of `heard` where `hz` dominates.
fn windows_of(heard: &[i16], hz: f64) -> usize {
    heard
        .chunks(4800)
        .filter(|w| w.len() == 4800 && rms(w) > 300.0 && power_share(w, hz) > 0.6)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn quick_replies_and_voice_messages_are_heard_at_the_door() {
    const TOKEN: &str = "424242:pulse-replies-token-AAAAAAAAAAAAAAAAAAAA";
    const CHAT: i64 = 111;
    let _one = serial();
    pulse();
    init_logs();
    let tg = fake_telegram::FakeTelegram::start(TOKEN).await;
    let files = tempfile::tempdir().unwrap();
    let token = files.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The quick reply: 1.5 s of 660 Hz in a WAV file, as an owner's own.
    let reply_wav = files.path().join("coming.wav");
    {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 48_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&reply_wav, spec).unwrap();
        let mut tone = Tone::new(660.0);
        let mut frame = [0i16; AUDIO_FRAME];
        for _ in 0..75 {
            tone.read(&mut frame).unwrap();
            for s in frame {
                w.write_sample(s).unwrap();
            }
        }
        w.finalize().unwrap();
    }
    // The voice message: 2 s of 550 Hz, Ogg/Opus as Telegram records it.
    let voice = ffmpeg_tone(files.path(), "voice.ogg", 550, 2.0, "libopus");
    let vorbis = ffmpeg_tone(files.path(), "vorbis.ogg", 550, 2.0, "libvorbis");
    let mp3 = ffmpeg_tone(files.path(), "song.mp3", 550, 2.0, "libmp3lame");
    let Rig {
        mut bell,
        server: _server,
        dir: _dir,
    } = rig(|c| {
        c.audio.speaker = "device:pulse".into();
        c.chime.sound = "none".into();
        c.call.viewer_join_timeout = Duration::from_secs(9);
        c.notify.telegram.enabled = true;
        c.notify.telegram.chat_ids = vec![CHAT];
        c.notify.telegram.token_file = Some(token.clone());
        c.notify.telegram.api_url = tg.url.clone();
        c.notify.telegram.snapshot = false;
        c.replies.quick = vec![
            doorbell::config::QuickReplyConfig {
                text: "Coming".into(),
                sound: reply_wav.display().to_string(),
            },
            doorbell::config::QuickReplyConfig {
                text: "Leave it".into(),
                sound: "builtin:leave-it".into(),
            },
        ];
    })
    .await;
    // The bot polls before anything is sent to it.
    tg.wait_for("getUpdates", 1, |_| true).await;

    // Listen on the monitor for the whole ring.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let listener = std::thread::spawn(move || {
        let mut mic = DeviceSource::open("pulse").unwrap();
        capture(&mut mic, 0.2);
        ready_tx.send(()).unwrap();
        capture(&mut mic, 8.0)
    });
    tokio::task::spawn_blocking(move || ready_rx.recv().unwrap())
        .await
        .unwrap();
    assert!(bell.ring().await.starts_with("ringing "));
    let ring = tg
        .wait_for("sendMessage", 1, |c| c.str("text").contains("at the door"))
        .await
        .remove(0);
    let message = ring.message_id.unwrap();
    let rows = ring.params["reply_markup"]["inline_keyboard"]
        .as_array()
        .expect("buttons under the ring message")
        .clone();
    assert_eq!(rows.len(), 3, "Answer and two quick replies: {rows:?}");
    assert_eq!(rows[0][0]["text"], "Answer");
    assert_eq!(rows[1][0]["text"], "🗣 Coming");
    assert_eq!(rows[2][0]["text"], "🗣 Leave it");
    let data = rows[1][0]["callback_data"].as_str().unwrap().to_string();
    assert!(data.len() <= 64, "{data}");

    // A quick reply.
    let pressed = tg.push_callback(CHAT, message, &data);
    let answer = tg
        .wait_for("answerCallbackQuery", 1, |c| {
            c.str("callback_query_id") == pressed
        })
        .await;
    assert_eq!(answer[0].str("text"), "Playing at the door: “Coming”");
    let (played, _) = bell.until("reply_played").await;
    assert_eq!(
        played.event.kind,
        doorbell::call::event::EventKind::ReplyPlayed {
            what: "quick".into(),
            text: "Coming".into(),
            seconds: 1.5
        }
    );

    // A voice message, then three it cannot play.
    let sent = tg.push_voice(CHAT, &voice, 2, "audio/ogg");
    let long = tg.push_voice(CHAT, &voice, 95, "audio/ogg");
    let not_opus = tg.push_voice(CHAT, &vorbis, 2, "audio/ogg");
    let music = tg.push_audio(CHAT, &mp3, 2, "audio/mpeg");
    let reply_to = |id: i64| {
        move |c: &fake_telegram::Call| {
            c.params
                .get("reply_parameters")
                .is_some_and(|r| r["message_id"] == id)
        }
    };
    let playing = tg.wait_for("sendMessage", 1, reply_to(sent)).await;
    assert_eq!(
        playing[0].str("text"),
        "▶ Playing your voice message at the door (2 s)."
    );
    let (played, _) = bell.until("reply_played").await;
    assert!(
        matches!(&played.event.kind, doorbell::call::event::EventKind::ReplyPlayed { what, seconds, .. }
            if what == "voice" && (seconds - 2.0).abs() < 0.05),
        "{played:?}"
    );
    let refused = tg.wait_for("sendMessage", 1, reply_to(long)).await;
    assert!(
        refused[0].str("text").contains("longer than 30 s"),
        "{:?}",
        refused[0]
    );
    let refused = tg.wait_for("sendMessage", 1, reply_to(not_opus)).await;
    assert!(
        refused[0].str("text").contains("Vorbis"),
        "{:?}",
        refused[0]
    );
    let refused = tg.wait_for("sendMessage", 1, reply_to(music)).await;
    assert!(
        refused[0].str("text").contains("not a voice message"),
        "{:?}",
        refused[0]
    );

    let heard = tokio::task::spawn_blocking(move || listener.join().unwrap())
        .await
        .unwrap();
    let (coming, voice_heard) = (windows_of(&heard, 660.0), windows_of(&heard, 550.0));
    eprintln!("heard: 660 Hz in {coming} windows of 100 ms, 550 Hz in {voice_heard}");
    assert!(
        coming >= 10,
        "the quick reply (1.5 s of 660 Hz) was heard: {coming} windows"
    );
    assert!(
        voice_heard >= 15,
        "the voice message (2 s of 550 Hz) was heard: {voice_heard} windows"
    );

    // The ring message says what was played; once the ring is over, its
    // buttons are gone and an old button does nothing.
    let (ended, _) = bell.until("ended").await;
    assert_eq!(
        ended.event.kind,
        doorbell::call::event::EventKind::Ended {
            reason: doorbell::call::event::EndReason::Unanswered
        }
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let shown = tg.message(CHAT, message).unwrap();
        if shown.text.contains("Missed") || Instant::now() > deadline {
            break shown;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(shown.text.contains("🗣 “Coming” at "), "{}", shown.text);
    assert!(
        shown.text.contains("🗣 A voice message (2 s) at "),
        "{}",
        shown.text
    );
    assert!(shown.text.contains("Missed at"), "{}", shown.text);
    assert_eq!(shown.reply_markup, None, "the buttons are gone");
    let late = tg.push_callback(CHAT, message, &data);
    let answer = tg
        .wait_for("answerCallbackQuery", 1, |c| {
            c.str("callback_query_id") == late
        })
        .await;
    assert_eq!(
        answer[0].str("text"),
        "That button belongs to a ring that is over."
    );
    let after = tg.push_voice(CHAT, &voice, 2, "audio/ogg");
    let refused = tg.wait_for("sendMessage", 1, reply_to(after)).await;
    assert!(
        refused[0].str("text").starts_with("Nobody is ringing now"),
        "{:?}",
        refused[0]
    );
    bell.stop().await;
}
