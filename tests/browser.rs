//! The web viewer in a real browser: Debian's Chromium, headless, with fake
//! camera and microphone devices, driven over the DevTools protocol. It opens
//! the link a ring produced and shows, through `getStats()`, that H.264
//! frames are decoded and that audio flows both ways (with the page's open
//! talk on: the page is push-to-talk, `tests/talk.rs`); the page reloads and
//! gets back into the same call; a second tab on the same link is told
//! someone else answered; the hang-up button ends the call.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const STATS: &str = r#"(async () => {
  const d = window.doorbell;
  const st = document.getElementById("status");
  const out = { state: d ? d.name : "none", status: st ? st.textContent : "" };
  if (!d || !d.pc) return out;
  const stats = await d.pc.getStats();
  const codecs = {};
  stats.forEach((s) => { if (s.type === "codec") codecs[s.id] = s.mimeType; });
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      out.framesDecoded = s.framesDecoded || 0;
      out.width = s.frameWidth; out.height = s.frameHeight;
      out.videoCodec = codecs[s.codecId];
    }
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      out.audioIn = s.packetsReceived || 0;
      out.audioLevel = s.audioLevel || 0;
      out.audioCodec = codecs[s.codecId];
    }
    if (s.type === "outbound-rtp" && s.kind === "audio") out.audioOut = s.packetsSent || 0;
  });
  return out;
})()"#;

/// Switches the page's "Open talk" on once it has a microphone: the page is
/// push-to-talk, and this test wants the owner heard throughout. Not on a
/// page that is about to be reloaded (`window.old`).
const OPEN_TALK: &str = r#"(() => {
  const s = document.getElementById("opentalk");
  if (window.old || !s || s.disabled) return false;
  if (!s.checked) s.click();
  return window.doorbell.talking;
})()"#;

async fn open_talk(page: &mut cdp::Page) {
    let start = Instant::now();
    // A page still loading answers null.
    while page.eval(OPEN_TALK).await != true {
        assert!(start.elapsed() < WAIT, "the page did not open talk");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn num(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_answers_the_door() {
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

    let browser = cdp::launch(&link);
    let mut page = browser.page("room=").await;
    open_talk(&mut page).await;
    let start = Instant::now();
    let stats = loop {
        let s = page.eval(STATS).await;
        let done = num(&s, "framesDecoded") >= 60.0
            && num(&s, "audioIn") > 50.0
            && num(&s, "audioOut") > 50.0;
        if done {
            break s;
        }
        assert!(
            start.elapsed() < WAIT,
            "the browser call did not get going: {s}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(stats["state"], "connected", "{stats}");
    assert_eq!(stats["videoCodec"], "video/H264", "{stats}");
    assert_eq!(
        (num(&stats, "width"), num(&stats, "height")),
        (320.0, 240.0),
        "{stats}"
    );
    assert_eq!(stats["audioCodec"], "audio/opus", "{stats}");

    // The page reloads: it joins again holding its seat (sessionStorage
    // survives a reload), offers again, and the same call goes on.
    let reloaded = Instant::now();
    page.eval("window.old = true").await;
    page.call("Page.reload", serde_json::json!({})).await;
    open_talk(&mut page).await;
    let stats = loop {
        let s = page.eval(STATS).await;
        if s["state"] == "connected" && num(&s, "framesDecoded") >= 30.0 {
            break s;
        }
        assert!(
            reloaded.elapsed() < WAIT,
            "the reloaded page did not get back into the call: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "browser: frames again {:?} after the reload ({stats})",
        reloaded.elapsed()
    );
    let (_, seen) = bell.until("reconnected").await;
    let seen = names(&seen);
    assert!(seen.contains(&"viewer_joined"), "{seen:?}");
    assert!(!seen.contains(&"ended"), "the call went on: {seen:?}");

    // A second viewer on the same link: someone else already answered.
    let mut second = browser
        .open(&link.replace("processing=off", "second=1"))
        .await;
    let start = Instant::now();
    loop {
        let s = second
            .eval("window.doorbell ? window.doorbell.name : 'none'")
            .await;
        if s == "full" {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "the second tab should say someone else answered, it is {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    page.eval("document.getElementById('hangup').click(), true")
        .await;
    let (ended, _) = bell.until("ended").await;
    assert_eq!(ended.to_json()["reason"], "viewer_left");
    assert_eq!(page.eval("window.doorbell.name").await, "ended");
    // The visitor heard the browser's (fake) microphone.
    let (level, _) = recorded_tone(&wav_of(dir.path(), 1));
    assert!(
        level > 100.0,
        "the browser's microphone reached the doorbell (rms {level})"
    );
    drop(browser);
    bell.stop().await;
}

/// The page's own glass-to-glass reading (`&stamps=1`): the doorbell's
/// capture stamp read back from every picture Chromium is about to show,
/// against its expected display time. Prints the figures of
/// docs/performance.md (median and p90 glass to glass, offer to first
/// picture shown); asserts only that the stamps are read and make sense.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_reads_the_capture_stamp_for_glass_to_glass() {
    init_logs();
    let Rig {
        mut bell,
        server: _server,
        dir: _dir,
    } = rig(|c| {
        c.video.width = 640;
        c.video.height = 480;
        c.video.bitrate_kbps = 1000;
    })
    .await;
    assert!(bell.ring().await.starts_with("ringing "));
    let (notified, _) = bell.until("notified").await;
    let link = format!(
        "{}&processing=off&stamps=1",
        notified.to_json()["link"].as_str().unwrap()
    );
    let browser = cdp::launch(&link);
    let mut page = browser.page("room=").await;
    const GLASS: &str = r#"(() => {
      const g = window.doorbell && window.doorbell.glass;
      if (!g) return null;
      return { samples: g.samples.slice(), first: g.firstShownMs, session: g.sessionStartMs, page: g.pageStartMs };
    })()"#;
    let start = Instant::now();
    let glass = loop {
        let g = page.eval(GLASS).await;
        if g["samples"].as_array().is_some_and(|s| s.len() >= 300) {
            break g;
        }
        assert!(
            start.elapsed() < WAIT * 2,
            "the page did not read 300 stamps: {}",
            page.eval(STATS).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let answer = page
        .eval("window.doorbell.pc.remoteDescription.sdp")
        .await
        .as_str()
        .unwrap_or_default()
        .to_string();
    let offer = page
        .eval("window.doorbell.pc.localDescription.sdp")
        .await
        .as_str()
        .unwrap_or_default()
        .to_string();
    eprintln!(
        "playout-delay offered: {}, answered: {}",
        offer.contains("playout-delay"),
        answer.contains("playout-delay")
    );
    let mut samples: Vec<f64> = glass["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    // Skip the first second (the connection settling), keep 10 s.
    let samples: Vec<f64> = samples.drain(30..).take(300).collect();
    assert!(
        samples.iter().all(|ms| (0.0..60_000.0).contains(ms)),
        "stamps read as nonsense: {samples:?}"
    );
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    let first = num(&glass, "first");
    eprintln!(
        "glass to glass in Chromium, 640x480@30, {} pictures: median {:.0} ms, p90 {:.0} ms, \
         max {:.0} ms; offer -> first picture shown {:.0} ms, page open -> first picture {:.0} ms",
        sorted.len(),
        at(0.5),
        at(0.9),
        sorted[sorted.len() - 1],
        first - num(&glass, "session"),
        first - num(&glass, "page"),
    );
    drop(browser);
    bell.stop().await;
}
