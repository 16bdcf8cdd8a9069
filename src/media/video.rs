//! The video pipeline of one call: a capture thread and an encode thread.
//!
//! ```text
//!  source --(capture thread)--> [latest frame] --(encode thread)--> bounded channel --> peer
//! ```
//!
//! The capture thread keeps the camera drained; the mailbox between the threads
//! holds only the newest picture, so when encoding falls behind, old pictures
//! are dropped before they cost any encoding. The channel to the async side is
//! bounded too; an encoded frame that does not fit is dropped and the next
//! frame becomes an IDR (a lost reference would freeze the viewer). A keyframe
//! request (call start, PLI/FIR) wakes the encoder at once: if no new picture is
//! waiting it re-encodes the last one, so an IDR leaves within an encode time
//! of the request instead of a frame interval.

use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use super::encoder;
use super::h264::EncoderSettings;
use super::{Frame, MediaError, VideoSource};

/// One encoded frame on its way to the peer.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub data: Bytes,
    pub keyframe: bool,
    /// Time since the previous frame sent, for the RTP timestamp.
    pub duration: Duration,
    pub captured: Instant,
    pub captured_unix_ms: u64,
}

#[derive(Debug, Default)]
pub struct VideoStats {
    pub captured: AtomicU64,
    pub encoded: AtomicU64,
    /// Pictures replaced in the mailbox before the encoder took them.
    pub dropped_before_encode: AtomicU64,
    /// Encoded frames the async side had no room for.
    pub dropped_after_encode: AtomicU64,
    pub keyframes: AtomicU64,
}

struct Mailbox {
    latest: Option<Frame>,
    spare: Vec<Frame>,
}

struct Shared {
    stop: AtomicBool,
    /// Encoding starts only when the transport is up: nothing is encoded for
    /// nobody, and the first frame out is fresh.
    live: AtomicBool,
    keyframe: AtomicBool,
    mailbox: Mutex<Mailbox>,
    wake: Condvar,
    stats: VideoStats,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Mailbox> {
        // A panicking pipeline thread leaves nothing half-written in the mailbox
        // (frames are swapped whole), so a poisoned lock is safe to keep using.
        self.mailbox.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs until [`VideoPipeline::stop`] or until the source fails (reported once
/// through `on_error`).
pub struct VideoPipeline {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl VideoPipeline {
    pub fn start(
        mut source: Box<dyn VideoSource>,
        settings: &EncoderSettings,
        out: mpsc::Sender<EncodedFrame>,
        on_error: impl Fn(MediaError) + Send + Sync + 'static,
    ) -> Result<Self, MediaError> {
        let mut encoder = encoder::open(settings)?;
        let on_error = Arc::new(on_error);
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            live: AtomicBool::new(false),
            keyframe: AtomicBool::new(true),
            mailbox: Mutex::new(Mailbox {
                latest: None,
                spare: Vec::new(),
            }),
            wake: Condvar::new(),
            stats: VideoStats::default(),
        });
        let (w, h) = (settings.width, settings.height);
        let capture = {
            let shared = shared.clone();
            let on_error = on_error.clone();
            std::thread::Builder::new()
                .name("video-capture".into())
                .spawn(move || {
                    while !shared.stop.load(Ordering::Acquire) {
                        let mut frame = shared
                            .lock()
                            .spare
                            .pop()
                            .unwrap_or_else(|| Frame::new(w, h));
                        if let Err(e) = source.next_frame(&mut frame) {
                            if !shared.stop.load(Ordering::Acquire) {
                                on_error(e);
                            }
                            shared.stop.store(true, Ordering::Release);
                            shared.wake.notify_all();
                            break;
                        }
                        shared.stats.captured.fetch_add(1, Ordering::Relaxed);
                        let mut mb = shared.lock();
                        if let Some(old) = mb.latest.replace(frame) {
                            shared
                                .stats
                                .dropped_before_encode
                                .fetch_add(1, Ordering::Relaxed);
                            mb.spare.push(old);
                        }
                        drop(mb);
                        shared.wake.notify_one();
                    }
                })
                .map_err(|e| MediaError::Encoder(format!("cannot start the capture thread: {e}")))?
        };
        let keyframe_interval = settings.keyframe_interval;
        let encode = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("video-encode".into())
                .spawn(move || {
                    let mut last: Option<Frame> = None;
                    let mut last_sent: Option<Instant> = None;
                    let mut last_keyframe = Instant::now();
                    loop {
                        let mut mb = shared.lock();
                        let frame = loop {
                            if shared.stop.load(Ordering::Acquire) {
                                return;
                            }
                            if shared.live.load(Ordering::Acquire) {
                                if let Some(f) = mb.latest.take() {
                                    break Some(f);
                                }
                                if shared.keyframe.load(Ordering::Acquire) && last.is_some() {
                                    break None; // re-encode the last picture now
                                }
                            }
                            mb = shared
                                .wake
                                .wait_timeout(mb, Duration::from_millis(200))
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                        };
                        drop(mb);
                        if let Some(f) = frame {
                            if let Some(old) = last.replace(f) {
                                shared.lock().spare.push(old);
                            }
                        }
                        let picture = last.as_ref().expect("a picture to encode");
                        let periodic = !keyframe_interval.is_zero()
                            && last_keyframe.elapsed() >= keyframe_interval;
                        if shared.keyframe.swap(false, Ordering::AcqRel) || periodic {
                            encoder.force_keyframe();
                        }
                        let encoded = match encoder.encode(picture) {
                            Ok(Some(e)) => e,
                            Ok(None) => continue,
                            Err(e) => {
                                on_error(e);
                                shared.stop.store(true, Ordering::Release);
                                return;
                            }
                        };
                        shared.stats.encoded.fetch_add(1, Ordering::Relaxed);
                        if encoded.keyframe {
                            shared.stats.keyframes.fetch_add(1, Ordering::Relaxed);
                            last_keyframe = Instant::now();
                        }
                        let now = Instant::now();
                        let duration = last_sent
                            .map(|t| now - t)
                            .unwrap_or(Duration::from_millis(33));
                        let item = EncodedFrame {
                            data: encoded.data,
                            keyframe: encoded.keyframe,
                            duration,
                            captured: picture.captured,
                            captured_unix_ms: picture.captured_unix_ms,
                        };
                        match out.try_send(item) {
                            Ok(()) => last_sent = Some(now),
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                shared
                                    .stats
                                    .dropped_after_encode
                                    .fetch_add(1, Ordering::Relaxed);
                                shared.keyframe.store(true, Ordering::Release);
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                        }
                    }
                })
                .map_err(|e| MediaError::Encoder(format!("cannot start the encode thread: {e}")))?
        };
        Ok(Self {
            shared,
            threads: vec![capture, encode],
        })
    }

    /// Starts encoding, IDR first, from the newest captured picture.
    pub fn go_live(&self) {
        self.shared.keyframe.store(true, Ordering::Release);
        self.shared.live.store(true, Ordering::Release);
        self.shared.wake.notify_all();
    }

    /// The next frame out will be an IDR; the encoder wakes up for it at once.
    pub fn request_keyframe(&self) {
        self.keyframe_requester().request();
    }

    /// A handle that asks for keyframes, for the task reading the viewer's RTCP.
    pub fn keyframe_requester(&self) -> KeyframeRequester {
        KeyframeRequester(self.shared.clone())
    }

    pub fn stats(&self) -> &VideoStats {
        &self.shared.stats
    }

    /// Stops both threads and waits for them (at most one frame interval plus
    /// one encode). Blocking: call from a blocking context.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[derive(Clone)]
pub struct KeyframeRequester(Arc<Shared>);

impl KeyframeRequester {
    pub fn request(&self) {
        self.0.keyframe.store(true, Ordering::Release);
        self.0.wake.notify_all();
    }
}

impl Drop for VideoPipeline {
    fn drop(&mut self) {
        // Signal only; joining here could block an async caller.
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::nal_types;
    use crate::media::testsrc::TestPattern;

    fn settings(fps: u32) -> EncoderSettings {
        EncoderSettings {
            width: 160,
            height: 120,
            fps,
            bitrate_kbps: 300,
            keyframe_interval: Duration::ZERO,
            encoder: crate::spec::media::EncoderSpec::OpenH264,
        }
    }

    #[test]
    fn frames_flow_and_the_first_is_an_idr() {
        let (tx, mut rx) = mpsc::channel(8);
        let p = VideoPipeline::start(
            Box::new(TestPattern::new(160, 120, 50)),
            &settings(50),
            tx,
            |e| panic!("{e}"),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            rx.try_recv().is_err(),
            "nothing is encoded before going live"
        );
        p.go_live();
        let first = rx.blocking_recv().unwrap();
        assert!(first.keyframe && nal_types(&first.data).contains(&5));
        for _ in 0..5 {
            let f = rx.blocking_recv().unwrap();
            assert!(!f.keyframe);
        }
        p.request_keyframe();
        let mut got_idr = false;
        for _ in 0..3 {
            if rx.blocking_recv().unwrap().keyframe {
                got_idr = true;
                break;
            }
        }
        assert!(got_idr, "a requested keyframe arrives within a few frames");
        p.stop();
    }

    #[test]
    fn a_stalled_consumer_drops_frames_and_restarts_with_an_idr() {
        let (tx, mut rx) = mpsc::channel(2);
        let p = VideoPipeline::start(
            Box::new(TestPattern::new(160, 120, 100)),
            &settings(100),
            tx,
            |e| panic!("{e}"),
        )
        .unwrap();
        p.go_live();
        // Nobody reads for a while: the channel fills, the rest is dropped.
        while p.stats().dropped_after_encode.load(Ordering::Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        let queued: Vec<_> = (0..2).map(|_| rx.blocking_recv().unwrap()).collect();
        assert!(queued[0].keyframe);
        let next = rx.blocking_recv().unwrap();
        assert!(next.keyframe, "after a drop the chain restarts with an IDR");
        p.stop();
    }

    struct Failing;
    impl VideoSource for Failing {
        fn next_frame(&mut self, _: &mut Frame) -> Result<(), MediaError> {
            Err(MediaError::Device {
                device: "/dev/video9".into(),
                message: "unplugged".into(),
            })
        }
        fn describe(&self) -> String {
            "failing".into()
        }
    }

    #[test]
    fn a_failing_source_is_reported_once_and_the_pipeline_ends() {
        let (tx, mut rx) = mpsc::channel(2);
        let (etx, erx) = std::sync::mpsc::channel();
        let p = VideoPipeline::start(Box::new(Failing), &settings(30), tx, move |e| {
            etx.send(e.to_string()).unwrap()
        })
        .unwrap();
        assert!(erx.recv().unwrap().contains("unplugged"));
        p.stop();
        assert!(rx.blocking_recv().is_none(), "the channel closes");
        assert!(erx.try_recv().is_err(), "reported once");
    }
}
