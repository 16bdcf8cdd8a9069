//! Voicemail (`[voicemail]`): when nobody answers, the visitor is asked to
//! leave a message and `voicemail.seconds` of them are kept, pictures and
//! sound, in an MP4 in the history and sent to the owner.
//!
//! From each press (once the ring's picture has been taken, so the camera is
//! free) the door's camera and microphone are encoded, and the samples since
//! the last IDR are kept (an IDR is asked for every [`GOP`]): that is the
//! clip's pre-roll, so it starts on a keyframe a moment before the message,
//! with the visitor at the door. Someone answering (a viewer joins) stops it
//! at once, so the call gets the camera. When the ring ends `unanswered` the
//! prompt plays on the door's speaker (the built-in one, or the owner's
//! WAV) while the recording goes on, until the clip, pre-roll included, is
//! `voicemail.seconds` long. The clip becomes the ring's clip in the history
//! and a `voicemail_recorded` event, which the Telegram notifier sends as a
//! video. A new press during a message ends that message early.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::call::event::{CallEvent, EndReason, Event, EventKind};
use crate::chime;
use crate::history::{Attachment, History};
use crate::media::audio::{AudioPacket, MicPipeline};
use crate::media::lease::SpeakerLease;
use crate::media::mp4::Mp4Writer;
use crate::media::ring_picture::RingPictures;
use crate::media::video::{EncodedFrame, VideoPipeline};
use crate::media::{unix_ms, MediaOpener};

/// An IDR this often while ringing: the pre-roll is at most this long.
pub const GOP: Duration = Duration::from_secs(2);
/// The built-in prompt: "Nobody can come to the door right now. Please
/// leave a message after the tone." and a tone (espeak-ng, 48 kHz mono).
pub const BUILTIN_PROMPT: &[u8] = include_bytes!("../assets/voicemail-prompt.wav");

#[derive(Clone)]
pub struct VoicemailSettings {
    /// The clip's length, pre-roll included.
    pub seconds: Duration,
    /// The prompt, 48 kHz mono; `None`: no prompt.
    pub prompt: Option<Arc<Vec<i16>>>,
}

/// What became of a ring, as far as its recording is concerned.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    Ringing,
    /// Someone came, or the ring ended otherwise: stop, keep nothing.
    Over,
    /// Nobody answered: record the message (the room, for the event).
    Missed(String),
}

/// Starts following the call events; each ring is captured on its own task.
pub fn start(
    settings: VoicemailSettings,
    media: Arc<dyn MediaOpener>,
    pictures: RingPictures,
    history: History,
    lease: SpeakerLease,
    events: &broadcast::Sender<CallEvent>,
    cancel: CancellationToken,
) {
    let mut rx = events.subscribe();
    let events = events.clone();
    tokio::spawn(async move {
        let rings: Arc<Mutex<BTreeMap<u64, watch::Sender<Fate>>>> = Default::default();
        // Live views: the call has the camera already, and the owner is there.
        let mut looked: std::collections::BTreeSet<u64> = Default::default();
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => break,
                e = rx.recv() => e,
            };
            let e = match event {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            };
            let call = e.event.call;
            let decide = |fate: Fate| {
                if let Some(tx) = rings.lock().unwrap_or_else(|p| p.into_inner()).get(&call) {
                    tx.send_if_modified(|f| {
                        let changed = *f == Fate::Ringing;
                        if changed {
                            *f = fate.clone();
                        }
                        changed
                    });
                }
            };
            match &e.event.kind {
                EventKind::LiveStarted => {
                    looked.insert(call);
                    while looked.len() > 8 {
                        looked.pop_first();
                    }
                }
                EventKind::Ringing if looked.contains(&call) => {}
                EventKind::Ringing => {
                    // A new press ends a message being left.
                    for tx in rings.lock().unwrap_or_else(|p| p.into_inner()).values() {
                        tx.send_replace(Fate::Over);
                    }
                    let (tx, fate) = watch::channel(Fate::Ringing);
                    {
                        let mut r = rings.lock().unwrap_or_else(|p| p.into_inner());
                        r.insert(call, tx);
                        while r.len() > 4 {
                            r.pop_first();
                        }
                    }
                    let ring = Ring {
                        call,
                        settings: settings.clone(),
                        media: media.clone(),
                        history: history.clone(),
                        lease: lease.clone(),
                        events: events.clone(),
                    };
                    let picture = pictures.of(call);
                    tokio::spawn(async move {
                        // The ring's picture first: the camera is free after it.
                        let _ = tokio::time::timeout(Duration::from_secs(4), picture).await;
                        ring.run(fate).await;
                    });
                }
                EventKind::ViewerJoined | EventKind::Answered | EventKind::Connected => {
                    decide(Fate::Over)
                }
                EventKind::Ended { reason } => {
                    if *reason == EndReason::Unanswered {
                        decide(Fate::Missed(e.event.room.clone()));
                    } else {
                        decide(Fate::Over);
                    }
                }
                _ => {}
            }
        }
        for tx in rings.lock().unwrap_or_else(|p| p.into_inner()).values() {
            tx.send_replace(Fate::Over);
        }
    });
}

struct Ring {
    call: u64,
    settings: VoicemailSettings,
    media: Arc<dyn MediaOpener>,
    history: History,
    lease: SpeakerLease,
    events: broadcast::Sender<CallEvent>,
}

/// One encoded sample and when it was taken.
enum Sample {
    Video(EncodedFrame),
    Audio(AudioPacket, Instant),
}

impl Ring {
    async fn run(self, mut fate: watch::Receiver<Fate>) {
        let call = self.call;
        if *fate.borrow() != Fate::Ringing {
            return;
        }
        let settings = self.media.video_settings();
        let (vtx, mut vrx) = mpsc::channel::<EncodedFrame>(64);
        let (atx, mut arx) = mpsc::channel::<AudioPacket>(128);
        let on_error = move |e| tracing::warn!(call, "voicemail: {e}");
        let video = match self.media.video() {
            Ok(Some(source)) => match VideoPipeline::start(source, &settings, vtx, on_error) {
                Ok(p) => Some(p),
                Err(e) => return tracing::warn!(call, "voicemail: no pictures: {e}"),
            },
            Ok(None) => return, // no camera: a clip needs pictures
            Err(e) => return tracing::warn!(call, "voicemail: the camera: {e}"),
        };
        let mic = match self.media.microphone() {
            Ok(Some(source)) => MicPipeline::start(source, atx, on_error).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(call, "voicemail: the microphone: {e}; pictures only");
                None
            }
        };
        let pipeline = video.expect("returned above without one");
        pipeline.go_live();
        let mut next_idr = Instant::now() + GOP;
        // The samples since the last IDR (the first sample is that IDR).
        let mut kept: Vec<Sample> = Vec::new();
        let room = loop {
            tokio::select! {
                changed = fate.changed() => {
                    let now = if changed.is_err() { Fate::Over } else { fate.borrow().clone() };
                    match now {
                        Fate::Missed(room) => break Some(room),
                        Fate::Over => break None,
                        Fate::Ringing => {}
                    }
                }
                Some(frame) = vrx.recv() => {
                    if frame.keyframe {
                        kept.clear();
                    }
                    if frame.keyframe || !kept.is_empty() {
                        kept.push(Sample::Video(frame));
                    }
                    if Instant::now() >= next_idr {
                        pipeline.request_keyframe();
                        next_idr += GOP;
                    }
                }
                Some(packet) = arx.recv() => {
                    if !kept.is_empty() {
                        kept.push(Sample::Audio(packet, Instant::now()));
                    }
                }
            }
        };
        let outcome = match room {
            Some(room) => {
                self.prompt();
                let recorded = self.record(kept, &mut vrx, &mut arx, &mut fate).await;
                Some((room, recorded))
            }
            None => None,
        };
        tokio::task::spawn_blocking(move || {
            pipeline.stop();
            if let Some(m) = mic {
                m.stop();
            }
        })
        .await
        .ok();
        if let Some((room, recorded)) = outcome {
            self.deliver(&room, recorded).await;
        }
    }

    /// Plays the prompt on the door's speaker, in the background.
    fn prompt(&self) {
        let Some(pcm) = self.settings.prompt.clone() else {
            return;
        };
        let (media, lease, call) = (self.media.clone(), self.lease.clone(), self.call);
        tokio::task::spawn_blocking(move || {
            let Some(hold) = lease.try_hold() else {
                return tracing::debug!(call, "voicemail: the speaker is busy; no prompt");
            };
            match media.courtesy_speaker(call) {
                Ok(Some(mut sink)) => match chime::play(&pcm, sink.as_mut(), &hold) {
                    Ok(()) => tracing::info!(call, "voicemail: prompt played"),
                    Err(e) => tracing::warn!(call, "voicemail: the prompt: {e}"),
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(call, "voicemail: the prompt: {e}"),
            }
        });
    }

    /// Writes the pre-roll and goes on recording until the clip is
    /// `seconds` long (or a new press ends it); the scratch file and the
    /// clip's length.
    async fn record(
        &self,
        kept: Vec<Sample>,
        vrx: &mut mpsc::Receiver<EncodedFrame>,
        arx: &mut mpsc::Receiver<AudioPacket>,
        fate: &mut watch::Receiver<Fate>,
    ) -> Result<(std::path::PathBuf, f64), String> {
        let id = self
            .history
            .row_of(self.call)
            .ok_or("the ring has no history row")?;
        let scratch = self
            .history
            .scratch(id, Attachment::Clip)
            .ok_or("the history is in memory (history.dir is not usable)")?;
        let Some(Sample::Video(first)) = kept.first() else {
            return Err("no picture came from the camera".into());
        };
        let t0 = first.captured;
        let v = self.media.video_settings();
        let mut file = Mp4Writer::create(
            &scratch,
            v.width as u32,
            v.height as u32,
            f64::from(v.fps),
            true,
        )
        .map_err(|e| e.to_string())?;
        let mut last = Duration::ZERO;
        let mut write = |file: &mut Mp4Writer, s: Sample| -> Result<(), String> {
            match s {
                Sample::Video(f) => {
                    last = f.captured.saturating_duration_since(t0);
                    file.video(last, &f.data, f.keyframe)
                }
                Sample::Audio(p, at) => file.audio(at.saturating_duration_since(t0), &p.data),
            }
            .map_err(|e| e.to_string())
        };
        for s in kept {
            write(&mut file, s)?;
        }
        let end = t0 + self.settings.seconds;
        let cut = |fate: &watch::Receiver<Fate>| *fate.borrow() == Fate::Over;
        while Instant::now() < end && !cut(fate) {
            let wait = end.saturating_duration_since(Instant::now());
            tokio::select! {
                _ = tokio::time::sleep(wait) => break,
                _ = fate.changed() => {}
                Some(frame) = vrx.recv() => {
                    if frame.captured < end {
                        write(&mut file, Sample::Video(frame))?;
                    }
                }
                Some(packet) = arx.recv() => {
                    let at = Instant::now();
                    if at < end {
                        write(&mut file, Sample::Audio(packet, at))?;
                    }
                }
            }
        }
        let path = tokio::task::spawn_blocking(move || file.finish())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok((path, last.as_secs_f64()))
    }

    async fn deliver(&self, room: &str, recorded: Result<(std::path::PathBuf, f64), String>) {
        let call = self.call;
        let kind = match recorded {
            Ok((scratch, seconds)) => {
                let history = self.history.clone();
                let id = history.row_of(call);
                let adopted = tokio::task::spawn_blocking(move || match id {
                    Some(id) => history
                        .adopt(id, Attachment::Clip, &scratch)
                        .map_err(|e| e.to_string()),
                    None => Err("the ring has no history row".into()),
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
                match adopted {
                    Ok(Some(path)) => {
                        tracing::info!(call, "voicemail: {} ({seconds:.1} s)", path.display());
                        EventKind::VoicemailRecorded {
                            file: path.display().to_string(),
                            seconds,
                        }
                    }
                    Ok(None) => return,
                    Err(e) => failed(call, &e),
                }
            }
            Err(e) => {
                if let Some(scratch) = self
                    .history
                    .row_of(call)
                    .and_then(|id| self.history.scratch(id, Attachment::Clip))
                {
                    let _ = std::fs::remove_file(scratch);
                }
                failed(call, &e)
            }
        };
        let _ = self.events.send(CallEvent {
            event: Event {
                call,
                room: room.to_string(),
                kind,
            },
            ts: unix_ms(),
        });
    }
}

fn failed(call: u64, why: &str) -> EventKind {
    tracing::error!(call, "voicemail: {why}");
    EventKind::Error {
        what: format!("voicemail: {why}"),
    }
}
