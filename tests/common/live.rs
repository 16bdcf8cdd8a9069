//! A viewer that stays in the call while a test does something to it (kills
//! the server, cuts the network, steps the clock, breaks a device): it joins
//! over real Socket.IO, offers with webrtc-rs, talks a tone without end,
//! decodes every picture it gets, and counts what arrives, until the test
//! lets it go.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

use doorbell::media::h264::H264Decoder;
use doorbell::peer::viewer::ViewerPeer;
use doorbell::signaling::protocol::Message;
use doorbell::signaling::tls::TrustSettings;

use super::{join_and_call, talk_tone, InCall, ViewerSignaling, WAIT};

pub struct LiveViewer {
    pub room: String,
    signaling: Option<ViewerSignaling>,
    peer: Arc<ViewerPeer>,
    frames: Arc<AtomicUsize>,
    audio_packets: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl LiveViewer {
    /// Joins `room` on the server at `url` and sets the call up (offer,
    /// answer); media flow from here on.
    pub async fn join(url: &str, room: &str) -> LiveViewer {
        let InCall {
            sig,
            peer,
            mut streams,
            ..
        } = join_and_call(url, TrustSettings::default(), room, false).await;
        let peer = Arc::new(peer);
        let mut tasks = Vec::new();
        if let Some(track) = peer.audio_track() {
            tasks.push(talk_tone(track, 1000.0, Duration::MAX));
        }
        let frames = Arc::new(AtomicUsize::new(0));
        let audio_packets = Arc::new(AtomicUsize::new(0));
        {
            let (frames, audio_packets, peer) =
                (frames.clone(), audio_packets.clone(), peer.clone());
            tasks.push(tokio::spawn(async move {
                let mut decoder = H264Decoder::new().unwrap();
                let mut last_request = Instant::now();
                loop {
                    tokio::select! {
                        unit = streams.video.recv() => match unit {
                            Some(unit) => match decoder.decode(&unit.data) {
                                Ok(Some(_)) => {
                                    frames.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(None) => {}
                                Err(_) => {
                                    if last_request.elapsed() > Duration::from_millis(300) {
                                        let _ = peer.request_keyframe().await;
                                        last_request = Instant::now();
                                    }
                                }
                            },
                            None => return,
                        },
                        Some(_) = streams.audio.recv() => {
                            audio_packets.fetch_add(1, Ordering::Relaxed);
                        }
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {
                            if frames.load(Ordering::Relaxed) == 0
                                && last_request.elapsed() > Duration::from_secs(1)
                            {
                                let _ = peer.request_keyframe().await;
                                last_request = Instant::now();
                            }
                        }
                    }
                }
            }));
        }
        LiveViewer {
            room: room.to_string(),
            signaling: Some(sig),
            peer,
            frames,
            audio_packets,
            tasks,
        }
    }

    /// Pictures decoded so far.
    pub fn frames(&self) -> usize {
        self.frames.load(Ordering::Relaxed)
    }

    /// The doorbell's audio packets received so far.
    pub fn audio_packets(&self) -> usize {
        self.audio_packets.load(Ordering::Relaxed)
    }

    /// Waits for `n` more pictures; how long that took.
    pub async fn more_frames(&self, n: usize) -> Duration {
        self.more(&self.frames, n, "pictures").await
    }

    /// Waits for `n` more of the doorbell's audio packets.
    pub async fn more_audio(&self, n: usize) -> Duration {
        self.more(&self.audio_packets, n, "audio packets").await
    }

    async fn more(&self, counter: &AtomicUsize, n: usize, what: &str) -> Duration {
        let start = Instant::now();
        let target = counter.load(Ordering::Relaxed) + n;
        while counter.load(Ordering::Relaxed) < target {
            assert!(
                start.elapsed() < WAIT,
                "{n} more {what} did not come in time ({} of {target})",
                counter.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        start.elapsed()
    }

    /// Hangs up as the page does: `bye`, then the connection closes.
    pub async fn leave(mut self) {
        if let Some(sig) = self.signaling.take() {
            sig.send(Message::Bye(Some(self.room.clone()))).await;
        }
        self.close().await;
    }

    /// Closes the connection without a word on signaling (the server that
    /// would carry it is gone, or the network is).
    pub async fn close(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.signaling.take();
        self.peer.close().await;
    }
}

impl Drop for LiveViewer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
