//! Call recording (`record.calls = true`, seed 000's recorder sink): every
//! answered call to an MP4 file in the history, the door's video and both
//! sides' voices mixed into one Opus track.
//!
//! A [`MediaTap`] on the call's send path: the encoded H.264 access units go
//! into the file as they were sent (nothing is encoded twice); the door's
//! and the viewer's Opus packets are decoded, mixed and encoded again, since
//! one track with both voices is what plays everywhere. The tap only hands
//! each sample to the call's recording thread through a bounded queue and
//! drops it when the queue is full: the call never waits for the recording.
//! The file is finished when the call's `ended` event comes (or the call's
//! samples stop), made the row's clip (`history::Store::adopt`), and
//! reported with a `recorded` event; a failure (a full disk) is an `error`
//! event and a log line, and the call is not affected.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::call::event::{CallEvent, Event, EventKind};
use crate::history::{Attachment, History};
use crate::media::audio::{OpusDecoder, OpusEncoder};
use crate::media::mp4::Mp4Writer;
use crate::media::tap::{MediaTap, Tapped};
use crate::media::{unix_ms, AUDIO_FRAME};

/// Samples queued per call: about 3 s of video and audio.
const QUEUE: usize = 400;
/// A call whose samples stopped this long ago is finished without waiting
/// for its `ended` event.
const IDLE_FINISH: Duration = Duration::from_secs(30);
/// A recording held in memory stops growing here (about 14 min at
/// 600 kbit/s): the file keeps what came before, and the log says so.
const MEMORY_LIMIT: usize = 64 << 20;
/// The viewer's voice waiting to be mixed: at most this much (a burst after
/// a network stall is cut, not kept as delay).
const VIEWER_BACKLOG: usize = AUDIO_FRAME * 10;

/// The picture's size and rate, for the file's header.
#[derive(Debug, Clone, Copy)]
pub struct RecordVideo {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
}

pub struct CallRecorder {
    history: History,
    events: broadcast::Sender<CallEvent>,
    video: RecordVideo,
    calls: Mutex<BTreeMap<u64, Recording>>,
}

enum Recording {
    On(SyncSender<Message>),
    /// Finished (or never to be): later samples are dropped.
    Done,
}

enum Message {
    Sample(Tapped, Instant),
    /// The call ended; its room, for the `recorded` event.
    Finish(String),
}

impl CallRecorder {
    /// A recorder that finishes each call's file at its `ended` event.
    pub fn start(
        history: History,
        events: &broadcast::Sender<CallEvent>,
        video: RecordVideo,
        cancel: CancellationToken,
    ) -> Arc<CallRecorder> {
        let recorder = Arc::new(CallRecorder {
            history,
            events: events.clone(),
            video,
            calls: Mutex::new(BTreeMap::new()),
        });
        let mut rx = events.subscribe();
        let r = recorder.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = cancel.cancelled() => break,
                    e = rx.recv() => e,
                };
                match event {
                    Ok(e) if matches!(e.event.kind, EventKind::Ended { .. }) => {
                        r.finish(e.event.call, &e.event.room)
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
            // Shutting down: finish what is being recorded.
            let calls: Vec<u64> = r.lock().keys().copied().collect();
            for call in calls {
                r.finish(call, "");
            }
        });
        recorder
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Recording>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn finish(&self, call: u64, room: &str) {
        let mut calls = self.lock();
        if let Some(Recording::On(tx)) = calls.insert(call, Recording::Done) {
            // The thread finishes at this, or when the queue's other end
            // goes; a full queue still ends with the sender dropped.
            let _ = tx.try_send(Message::Finish(room.to_string()));
        }
        while calls.len() > 32 {
            calls.pop_first();
        }
    }

    fn spawn(&self, call: u64) -> Option<SyncSender<Message>> {
        let (tx, rx) = sync_channel(QUEUE);
        let job = Job {
            call,
            history: self.history.clone(),
            events: self.events.clone(),
            video: self.video,
        };
        std::thread::Builder::new()
            .name(format!("record-{call}"))
            .spawn(move || job.run(rx))
            .map_err(|e| tracing::error!(call, "recording: cannot start its thread: {e}"))
            .ok()?;
        Some(tx)
    }
}

impl MediaTap for CallRecorder {
    fn tapped(&self, call: u64, sample: Tapped) {
        let mut calls = self.lock();
        let tx = match calls.get(&call) {
            Some(Recording::On(tx)) => tx.clone(),
            Some(Recording::Done) => return,
            None => match self.spawn(call) {
                Some(tx) => {
                    calls.insert(call, Recording::On(tx.clone()));
                    tx
                }
                None => {
                    calls.insert(call, Recording::Done);
                    return;
                }
            },
        };
        drop(calls);
        if let Err(TrySendError::Full(_)) = tx.try_send(Message::Sample(sample, Instant::now())) {
            tracing::debug!(call, "recording: queue full, a sample dropped");
        }
    }
}

/// One call's recording, on its own thread.
struct Job {
    call: u64,
    history: History,
    events: broadcast::Sender<CallEvent>,
    video: RecordVideo,
}

impl Job {
    fn run(self, rx: Receiver<Message>) {
        let call = self.call;
        let Some(id) = self.history.row_of(call) else {
            tracing::warn!(call, "recording: the call has no history row; not recorded");
            return;
        };
        let Some(scratch) = self.history.scratch(id, Attachment::Clip) else {
            tracing::warn!(call, "recording: the history is in memory; not recorded");
            return;
        };
        let mut room = String::new();
        match self.record(&rx, &scratch, &mut room) {
            Ok(Some(seconds)) => match self.history.adopt(id, Attachment::Clip, &scratch) {
                Ok(Some(path)) => {
                    tracing::info!(call, "call recorded: {} ({seconds:.1} s)", path.display());
                    self.report(
                        &room,
                        EventKind::Recorded {
                            what: "call".into(),
                            file: path.display().to_string(),
                            seconds,
                        },
                    );
                }
                Ok(None) => {}
                Err(e) => self.failed(&room, &e.to_string(), &scratch),
            },
            Ok(None) => {
                tracing::info!(call, "recording: no picture came; nothing recorded");
                let _ = std::fs::remove_file(&scratch);
            }
            Err(e) => self.failed(&room, &e, &scratch),
        }
    }

    fn failed(&self, room: &str, why: &str, scratch: &std::path::Path) {
        let _ = std::fs::remove_file(scratch);
        tracing::error!(call = self.call, "recording: {why}");
        self.report(
            room,
            EventKind::Error {
                what: format!("recording: {why}"),
            },
        );
    }

    fn report(&self, room: &str, kind: EventKind) {
        let _ = self.events.send(CallEvent {
            event: Event {
                call: self.call,
                room: room.to_string(),
                kind,
            },
            ts: unix_ms(),
        });
    }

    /// Records until told to finish; the length in seconds, `None` when no
    /// picture came.
    fn record(
        &self,
        rx: &Receiver<Message>,
        scratch: &std::path::Path,
        room: &mut String,
    ) -> Result<Option<f64>, String> {
        let mut file: Option<(Mp4Writer, Instant)> = None;
        let mut mix = Mixer::new()?;
        let mut last = Duration::ZERO;
        let mut held = 0usize;
        loop {
            let (sample, at) = match rx.recv_timeout(IDLE_FINISH) {
                Ok(Message::Sample(s, at)) => (s, at),
                Ok(Message::Finish(r)) => {
                    *room = r;
                    break;
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => break,
            };
            if held > MEMORY_LIMIT {
                continue;
            }
            match sample {
                Tapped::Video { data, keyframe, .. } => {
                    held += data.len();
                    if held > MEMORY_LIMIT {
                        tracing::warn!(
                            call = self.call,
                            "recording: {} MB held; the rest of the call is not recorded",
                            MEMORY_LIMIT >> 20
                        );
                        continue;
                    }
                    if file.is_none() {
                        if !keyframe {
                            continue;
                        }
                        let v = self.video;
                        let w = Mp4Writer::create(scratch, v.width, v.height, v.fps, true)
                            .map_err(|e| e.to_string())?;
                        file = Some((w, at));
                    }
                    if let Some((w, t0)) = file.as_mut() {
                        last = at.saturating_duration_since(*t0);
                        w.video(last, &data, keyframe).map_err(|e| e.to_string())?;
                    }
                }
                Tapped::DoorAudio { data, .. } => {
                    let Some((w, t0)) = file.as_mut() else {
                        continue;
                    };
                    if let Some(packet) = mix.door(&data)? {
                        let at = at.saturating_duration_since(*t0);
                        w.audio(at, &packet).map_err(|e| e.to_string())?;
                    }
                }
                Tapped::ViewerAudio { data, .. } => mix.viewer(&data),
            }
        }
        let Some((w, _)) = file else {
            return Ok(None);
        };
        w.finish().map_err(|e| e.to_string())?;
        Ok(Some(last.as_secs_f64()))
    }
}

/// Both voices into one: each door packet (20 ms, the steady clock of the
/// track) is mixed with as much of the viewer's voice as has come.
struct Mixer {
    door: OpusDecoder,
    viewer: OpusDecoder,
    encoder: OpusEncoder,
    waiting: VecDeque<i16>,
    pcm: Vec<i16>,
}

impl Mixer {
    fn new() -> Result<Mixer, String> {
        Ok(Mixer {
            door: OpusDecoder::new().map_err(|e| e.to_string())?,
            viewer: OpusDecoder::new().map_err(|e| e.to_string())?,
            encoder: OpusEncoder::new().map_err(|e| e.to_string())?,
            waiting: VecDeque::new(),
            pcm: Vec::with_capacity(AUDIO_FRAME * 2),
        })
    }

    fn viewer(&mut self, packet: &[u8]) {
        self.pcm.clear();
        if self.viewer.decode(packet, &mut self.pcm).is_ok() {
            self.waiting.extend(self.pcm.iter());
            let excess = self.waiting.len().saturating_sub(VIEWER_BACKLOG);
            self.waiting.drain(..excess);
        }
    }

    /// The mixed packet for one door packet (`None`: it did not decode).
    fn door(&mut self, packet: &[u8]) -> Result<Option<bytes::Bytes>, String> {
        self.pcm.clear();
        if self.door.decode(packet, &mut self.pcm).is_err() || self.pcm.len() != AUDIO_FRAME {
            return Ok(None);
        }
        for s in self.pcm.iter_mut() {
            let v = self.waiting.pop_front().unwrap_or(0);
            *s = s.saturating_add(v);
        }
        self.encoder
            .encode(&self.pcm)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}
