//! Push-to-talk in the viewer page, as the door hears it. Headless Chromium
//! answers a ring with a steady tone as its microphone; the test holds the
//! page's Talk button with the mouse, with the space bar (focus on the open
//! talk switch, which space must not toggle) and with a finger, and switches
//! open talk on and off, all through real input events (DevTools
//! `Input.dispatch*Event`). The doorbell writes what its speaker plays to a
//! WAV file at the pace it plays it, so the file's length, read at each
//! press and release, marks where that moment falls in the file. The door
//! must hear the tone through every hold and silence everywhere else.

mod common;

use common::*;
use doorbell::media::audio::{power_share, rms};
use doorbell::media::{wav, AUDIO_RATE};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The page's microphone: a steady tone (the page runs with
/// `processing=off`, so no noise suppression fades it out).
const TONE_HZ: f32 = 880.0;
/// How long each hold, and each pause between holds, lasts.
const HOLD: Duration = Duration::from_millis(1500);
/// From a press or release to when the door surely plays it: the page, the
/// network, the doorbell's jitter buffer, and the file's write buffer (8 KiB,
/// 85 ms) that makes a length read late by up to that much.
const SETTLE: Duration = Duration::from_millis(400);
/// Levels for "hears the owner" and "hears nothing", per 100 ms of the file:
/// the tone plays at an RMS of about 8500; a disabled track sends zeros.
const HEARD: f64 = 1000.0;
const SILENT: f64 = 30.0;

const PAGE: &str = r#"(async () => {
  const d = window.doorbell;
  const talk = document.getElementById("talk");
  const open = document.getElementById("opentalk");
  const out = { state: d ? d.name : "none", talking: d ? d.talking : null,
    pressed: talk ? talk.getAttribute("aria-pressed") : null, text: talk ? talk.textContent : null,
    ready: !!talk && !talk.disabled, open: open ? open.checked : null,
    pointers: window.talkTest ? window.talkTest.pointers : [], audioOut: 0 };
  if (!d || !d.pc) return out;
  (await d.pc.getStats()).forEach((s) => {
    if (s.type === "outbound-rtp" && s.kind === "audio") out.audioOut = s.packetsSent || 0;
  });
  return out;
})()"#;

/// Scrolls the element into view and gives its centre, in CSS pixels.
async fn centre(page: &mut cdp::Page, id: &str) -> (f64, f64) {
    let v = page
        .eval(&format!(
            r#"(() => {{
  const e = document.getElementById("{id}");
  e.scrollIntoView({{ block: "center" }});
  const r = e.getBoundingClientRect();
  return [r.x + r.width / 2, r.y + r.height / 2];
}})()"#
        ))
        .await;
    (v[0].as_f64().unwrap(), v[1].as_f64().unwrap())
}

async fn mouse(page: &mut cdp::Page, kind: &str, (x, y): (f64, f64)) {
    let buttons = u8::from(kind == "mousePressed");
    let r = page
        .call(
            "Input.dispatchMouseEvent",
            json!({ "type": kind, "x": x, "y": y, "button": "left", "buttons": buttons, "clickCount": 1 }),
        )
        .await;
    assert!(r.get("error").is_none(), "{kind}: {r}");
}

async fn click(page: &mut cdp::Page, at: (f64, f64)) {
    mouse(page, "mouseMoved", at).await;
    mouse(page, "mousePressed", at).await;
    mouse(page, "mouseReleased", at).await;
}

async fn space(page: &mut cdp::Page, kind: &str, repeat: bool) {
    let mut event = json!({ "type": kind, "key": " ", "code": "Space",
        "windowsVirtualKeyCode": 32, "nativeVirtualKeyCode": 32, "autoRepeat": repeat });
    if kind == "keyDown" {
        event["text"] = json!(" ");
    }
    let r = page.call("Input.dispatchKeyEvent", event).await;
    assert!(r.get("error").is_none(), "{kind}: {r}");
}

async fn touch(page: &mut cdp::Page, kind: &str, at: Option<(f64, f64)>) {
    let points: Vec<Value> = at
        .into_iter()
        .map(|(x, y)| json!({ "x": x, "y": y }))
        .collect();
    let r = page
        .call(
            "Input.dispatchTouchEvent",
            json!({ "type": kind, "touchPoints": points }),
        )
        .await;
    assert!(r.get("error").is_none(), "{kind}: {r}");
}

/// What the page says now; checks that it says the door hears the owner
/// exactly when `talking`.
async fn shows(page: &mut cdp::Page, talking: bool, what: &str) -> Value {
    let p = page.eval(PAGE).await;
    let expected = if talking {
        (true, "true", "Talking…")
    } else {
        (false, "false", "Hold to talk")
    };
    assert_eq!(
        (
            p["talking"].as_bool().unwrap_or(!talking),
            p["pressed"].as_str().unwrap_or(""),
            p["text"].as_str().unwrap_or(""),
        ),
        expected,
        "{what}: {p}"
    );
    p
}

/// The WAV file's length in bytes, as written so far (its header is taken
/// off once the file is complete).
fn written(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// An interval of the call as the test lived it, in file bytes.
struct Span {
    what: &'static str,
    heard: bool,
    from: u64,
    to: u64,
}

struct Timeline {
    wav: PathBuf,
    spans: Vec<Span>,
    mark: u64,
    heard: bool,
    what: &'static str,
}

impl Timeline {
    fn new(wav: PathBuf) -> Timeline {
        let mark = written(&wav);
        Timeline {
            wav,
            spans: Vec::new(),
            mark,
            heard: false,
            what: "before any hold",
        }
    }

    /// Closes the current span here and opens the next.
    fn next(&mut self, heard: bool, what: &'static str) {
        let now = written(&self.wav);
        self.spans.push(Span {
            what: self.what,
            heard: self.heard,
            from: self.mark,
            to: now,
        });
        (self.mark, self.heard, self.what) = (now, heard, what);
    }
}

/// A steady tone, 60 s: Chromium plays the file in a loop, and its loop
/// comes with a glitch that a test of a few seconds need not meet.
fn microphone_file(dir: &Path) -> PathBuf {
    let path = dir.join("owner.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for i in 0..48_000 * 60 {
        let t = i as f64 / 48_000.0;
        w.write_sample(
            ((2.0 * std::f64::consts::PI * f64::from(TONE_HZ) * t).sin() * 12_000.0) as i16,
        )
        .unwrap();
    }
    w.finalize().unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_door_hears_the_owner_only_while_talk_is_held_or_open() {
    init_logs();
    let Rig {
        mut bell,
        server: _server,
        dir,
    } = rig(|_| {}).await;
    assert!(bell.ring().await.starts_with("ringing "));
    let (notified, _) = bell.until("notified").await;
    let link = format!(
        "{}&processing=off",
        notified.to_json()["link"].as_str().unwrap()
    );
    let microphone = microphone_file(dir.path());
    let browser = cdp::launch_with(
        &link,
        &[format!(
            "--use-file-for-fake-audio-capture={}",
            microphone.display()
        )],
    );
    let mut page = browser.page("room=").await;

    // In the call, the microphone's packets flowing (silence so far).
    let wav = wav_of(dir.path(), 1);
    let start = Instant::now();
    loop {
        let p = page.eval(PAGE).await;
        if p["state"] == "connected"
            && p["ready"] == true
            && p["audioOut"].as_u64().unwrap_or(0) > 50
            && written(&wav) > 48_000
        {
            break;
        }
        assert!(start.elapsed() < WAIT, "the call did not get going: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shows(&mut page, false, "push-to-talk by default").await;
    page.eval(
        r#"(() => {
  window.talkTest = { pointers: [] };
  document.getElementById("talk").addEventListener("pointerdown", (e) => window.talkTest.pointers.push(e.pointerType));
  return true;
})()"#,
    )
    .await;
    let talk = centre(&mut page, "talk").await;
    let switch = centre(&mut page, "opentalk").await;
    let began = Instant::now();
    let mut timeline = Timeline::new(wav.clone());
    tokio::time::sleep(HOLD).await;

    // The mouse.
    mouse(&mut page, "mouseMoved", talk).await;
    mouse(&mut page, "mousePressed", talk).await;
    timeline.next(true, "mouse held");
    shows(&mut page, true, "mouse held").await;
    tokio::time::sleep(HOLD).await;
    mouse(&mut page, "mouseReleased", talk).await;
    timeline.next(false, "mouse let go");
    shows(&mut page, false, "mouse let go").await;
    tokio::time::sleep(HOLD).await;

    // Open talk on, then off again.
    click(&mut page, switch).await;
    timeline.next(true, "open talk");
    assert_eq!(
        shows(&mut page, true, "open talk").await["open"],
        true,
        "the switch is on"
    );
    tokio::time::sleep(HOLD).await;
    click(&mut page, switch).await;
    timeline.next(false, "open talk off");
    assert_eq!(
        shows(&mut page, false, "open talk off").await["open"],
        false,
        "the switch is off"
    );
    tokio::time::sleep(HOLD).await;

    // The space bar, with the key repeating, while the switch has the focus:
    // space talks and leaves the switch alone.
    assert_eq!(
        page.eval("document.activeElement.id").await,
        "opentalk",
        "the click left the focus on the switch"
    );
    space(&mut page, "keyDown", false).await;
    timeline.next(true, "space held");
    shows(&mut page, true, "space held").await;
    let held = Instant::now();
    while held.elapsed() < HOLD {
        tokio::time::sleep(Duration::from_millis(100)).await;
        space(&mut page, "keyDown", true).await;
    }
    space(&mut page, "keyUp", false).await;
    timeline.next(false, "space let go");
    let p = shows(&mut page, false, "space let go").await;
    assert_eq!(p["open"], false, "space toggled the switch: {p}");
    tokio::time::sleep(HOLD).await;

    // A finger.
    touch(&mut page, "touchStart", Some(talk)).await;
    timeline.next(true, "touch held");
    shows(&mut page, true, "touch held").await;
    tokio::time::sleep(HOLD).await;
    touch(&mut page, "touchEnd", None).await;
    timeline.next(false, "touch let go");
    let p = shows(&mut page, false, "touch let go").await;
    assert_eq!(
        p["pointers"],
        json!(["mouse", "touch"]),
        "the presses the button saw"
    );
    tokio::time::sleep(HOLD).await;
    timeline.next(false, "end");
    let took = began.elapsed();

    page.eval("document.getElementById('hangup').click(), true")
        .await;
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "viewer_left");
    drop(browser);
    bell.stop().await;

    let pcm = wav::read_mono(&wav).unwrap();
    let header = written(&wav) - 2 * pcm.len() as u64;
    let at = |bytes: u64| (bytes.saturating_sub(header) / 2) as usize;
    let settle = (SETTLE.as_secs_f64() * f64::from(AUDIO_RATE)) as usize;
    let chunk = AUDIO_RATE as usize / 10;
    let (mut held_min, mut released_max) = (f64::MAX, 0.0f64);
    for span in &timeline.spans {
        let (from, to) = (at(span.from), at(span.to));
        // The marks follow the test's clock: a span of HOLD is about as
        // long in the file (less by up to the write buffer; more by what
        // the test's own steps took on a busy machine).
        let length = (to - from) as f64 / f64::from(AUDIO_RATE);
        assert!(
            length > HOLD.as_secs_f64() - 0.2 && length < HOLD.as_secs_f64() + 1.0,
            "{}: {length:.2} s in the file",
            span.what
        );
        let body = &pcm[from + settle..to];
        let levels: Vec<f64> = body.chunks(chunk).map(rms).collect();
        let (low, high) = levels
            .iter()
            .fold((f64::MAX, 0.0f64), |(l, h), x| (l.min(*x), h.max(*x)));
        let share = power_share(body, f64::from(TONE_HZ));
        // When the door started or stopped hearing the owner, after the mark.
        let loud = |s: &i16| s.unsigned_abs() > 1000;
        let change = if span.heard {
            pcm[from..to].iter().position(loud)
        } else {
            pcm[from..to].iter().rposition(loud).map(|i| i + 1)
        };
        eprintln!(
            "talk: {:<16} {:.2}-{:.2} s: rms {:.0} (100 ms: {low:.0}..{high:.0}), {TONE_HZ} Hz share {share:.2}, {} after the mark",
            span.what,
            from as f64 / f64::from(AUDIO_RATE),
            to as f64 / f64::from(AUDIO_RATE),
            rms(body),
            change.map_or("-".into(), |i| format!("{} ms", i * 1000 / AUDIO_RATE as usize)),
        );
        if span.heard {
            held_min = held_min.min(low);
            // Per 100 ms: the tone must dominate almost everywhere. A loaded
            // CI machine gave a hold whose whole-span share was 0.74 with the
            // tone present throughout (a few glitched chunks: late packets,
            // concealment); the feature is that the door hears the owner's
            // tone while held and nothing while released, not a pure tone.
            let shares: Vec<f64> = body
                .chunks(chunk)
                .filter(|c| c.len() == chunk)
                .map(|c| power_share(c, f64::from(TONE_HZ)))
                .collect();
            let mut sorted = shares.clone();
            sorted.sort_by(f64::total_cmp);
            let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
            let dominated = shares.iter().filter(|s| **s > 0.5).count();
            assert!(
                low > HEARD && median > 0.9 && dominated * 5 >= shares.len() * 4,
                "{}: the door should hear the owner's {TONE_HZ} Hz throughout: rms {low:.0}..{high:.0}, share {share:.2}, per 100 ms {shares:.2?}",
                span.what
            );
        } else {
            released_max = released_max.max(high);
            assert!(
                high < SILENT,
                "{}: the door should hear nothing: rms up to {high:.0} per 100 ms",
                span.what
            );
        }
    }
    eprintln!(
        "talk: held: rms at least {held_min:.0} per 100 ms; let go: at most {released_max:.0}; {:.1} s of holds and pauses",
        took.as_secs_f64()
    );
}
