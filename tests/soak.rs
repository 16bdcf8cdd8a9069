//! The soak: ring -> answer -> 2 s of talk -> hang-up, over and over, against
//! the built-in server with the test viewer, and the doorbell process
//! (the real binary) watched for leaks: resident memory, open file
//! descriptors and threads, sampled along the way.
//!
//! CI runs 50 cycles; `scripts/soak N` runs N in release mode and plots them
//! (`docs/reliability.md` has the 1000-cycle figures). `DOORBELL_SOAK_CYCLES`
//! sets N, `DOORBELL_SOAK_CSV` a file for the samples.

mod common;

use common::lab::Daemon;
use common::matrix::counts;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// One sample of the doorbell process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    cycle: usize,
    rss_kb: u64,
    fds: usize,
    threads: usize,
}

fn sample(pid: u32, cycle: usize) -> Sample {
    let c = counts(pid);
    Sample {
        cycle,
        rss_kb: c.rss_kb,
        fds: c.fds,
        threads: c.threads,
    }
}

/// A sample once the last call's teardown is over. Threads come and go
/// after a call (its playout and encode threads end, the runtime's blocking
/// pool keeps an idle thread for 10 s), so a sample that shows more than one
/// thread or fd above the fewest seen so far is taken again, for up to 12 s,
/// and the lowest counts are kept: a leak never goes away, a teardown does.
/// (A CI run on a loaded machine caught a sample in the middle of one.)
async fn settled(pid: u32, cycle: usize, before: &[Sample]) -> Sample {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fewest = |f: fn(&Sample) -> usize| before.iter().map(f).min();
    let (threads, fds) = (fewest(|s| s.threads), fewest(|s| s.fds));
    let mut best = sample(pid, cycle);
    let deadline = Instant::now() + Duration::from_secs(12);
    while Instant::now() < deadline
        && (threads.is_some_and(|t| best.threads > t + 1) || fds.is_some_and(|f| best.fds > f + 1))
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let s = sample(pid, cycle);
        best.threads = best.threads.min(s.threads);
        best.fds = best.fds.min(s.fds);
        best.rss_kb = s.rss_kb;
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_answer_talk_hang_up_over_and_over() {
    init_logs();
    let cycles: usize = std::env::var("DOORBELL_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let every = (cycles / 10).clamp(5, 50);
    let server = test_server().await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[signaling]\nurl = \"{}\"\n\
         [ice]\nservers = []\ninclude_loopback = true\n\
         [video]\nwidth = 320\nheight = 240\nfps = 30\nbitrate_kbps = 600\n\
         [audio]\nmicrophone = \"tone:440\"\nspeaker = \"none\"\n\
         [chime]\nsound = \"none\"\n\
         [button]\nsources = [\"stdin\"]\n\
         [control]\nenabled = false\n\
         [notify]\nstdout = false\n",
        server.url
    );
    let mut bell = Daemon::start_exactly(dir, &config, None);
    bell.wait_log("connected to the signaling server").await;
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    for cycle in 1..=cycles {
        bell.press();
        let (notified, _) = bell.until("notified").await;
        let room = room_of(notified["link"].as_str().unwrap());
        // The viewer runs as its own task: a cycle that fails (a panic in
        // the viewer) is counted with its reason, and the soak goes on.
        let url = server.url.clone();
        let viewer = tokio::spawn(async move {
            view_call(&url, &room, 30, (320, 240), Duration::from_secs(2), 1000.0).await
        });
        let report = viewer.await;
        let (ended, seen) = bell.until("ended").await;
        let names = common::lab::event_names(&seen);
        let problem = match &report {
            // A panic's text carries its message.
            Err(e) => Some(format!("the viewer failed: {e}")),
            Ok(r) if r.decoded_frames < 30 => Some(format!("{} frames", r.decoded_frames)),
            Ok(_)
                if ended["reason"] != "viewer_left"
                    || !names.contains(&"connected".to_string()) =>
            {
                Some("the call did not go as it should".into())
            }
            Ok(_) => None,
        };
        if let Some(p) = problem {
            let errors: Vec<&Value> = seen.iter().filter(|e| e["event"] == "error").collect();
            let line = format!(
                "cycle {cycle}: {p}; ended {}, events {names:?}, errors {errors:?}\nthe doorbell's log of this cycle:\n{}",
                ended["reason"],
                bell.log()
            );
            eprintln!("soak: FAILED {line}");
            failures.push(line);
        }
        bell.clear_log();
        if cycle == 1 || cycle % every == 0 {
            let s = settled(bell.pid(), cycle, &samples).await;
            eprintln!(
                "soak: cycle {cycle}: rss {} kB, {} fds, {} threads ({:.0} s)",
                s.rss_kb,
                s.fds,
                s.threads,
                started.elapsed().as_secs_f64()
            );
            samples.push(s);
        }
    }
    assert!(bell.stop().success());
    if let Ok(path) = std::env::var("DOORBELL_SOAK_CSV") {
        let mut csv = String::from("cycle,rss_kb,fds,threads\n");
        for s in &samples {
            csv.push_str(&format!(
                "{},{},{},{}\n",
                s.cycle, s.rss_kb, s.fds, s.threads
            ));
        }
        std::fs::write(path, csv).unwrap();
    }
    assert!(
        failures.is_empty(),
        "failed cycles:\n{}",
        failures.join("\n")
    );
    // Leaks: from the first sample after warm-up to the last. The first ten
    // calls grow the heap to its working size (the allocator keeps an arena
    // per thread that ever allocated: capture, encode, playout threads come
    // and go with each call); after that it must stay flat.
    let warm = (cycles / 10).max(10);
    let from = samples
        .iter()
        .position(|s| s.cycle >= warm)
        .unwrap_or(samples.len() - 1);
    let base = samples[from];
    let last = *samples.last().unwrap();
    let drift_kb = last.rss_kb as i64 - base.rss_kb as i64;
    eprintln!(
        "soak: {cycles} cycles in {:.0} s; RSS {} -> {} kB ({drift_kb:+} kB), fds {} -> {}, threads {} -> {}",
        started.elapsed().as_secs_f64(),
        base.rss_kb,
        last.rss_kb,
        base.fds,
        last.fds,
        base.threads,
        last.threads
    );
    assert!(drift_kb < 2048, "RSS drifted by {drift_kb} kB: {samples:?}");
    let fds: Vec<usize> = samples[from..].iter().map(|s| s.fds).collect();
    let threads: Vec<usize> = samples[from..].iter().map(|s| s.threads).collect();
    let spread = |v: &[usize]| v.iter().max().unwrap_or(&0) - v.iter().min().unwrap_or(&0);
    assert!(spread(&fds) <= 2, "open fds not flat: {samples:?}");
    assert!(spread(&threads) <= 4, "threads not flat: {samples:?}");
}
