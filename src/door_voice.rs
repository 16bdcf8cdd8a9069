//! The owner's voice at the door without answering the call: quick replies
//! (buttons under the ring message: "I'm coming", "Please leave it at the
//! door", ...) and voice messages sent to the bot, played on the door's
//! speaker.
//!
//! **When.** Only while a ring waits for an answer: from `ringing` until a
//! viewer joins or the ring ends. Once someone answers, the owner talks in
//! the page (and the call has the speaker); once the ring is over the
//! visitor may be gone, and a reply played into an empty porch, or into the
//! next visitor's ring, would be wrong. Buttons carry the ring they belong
//! to and this start's nonce, so a button of an old message (or of a
//! message from before a restart, when call numbers start again) does
//! nothing.
//!
//! **How.** Like the chime, as a courtesy sound: it waits for the speaker's
//! lease (the chime may still be ringing, the reply before may still play;
//! at most [`HOLD_WAIT`]), opens the speaker, plays at the real-time pace,
//! and stops at once when a viewer answers and the call takes the speaker.
//! Each playback is a `reply_played` event (the ring message then says what
//! was played and when).
//!
//! Voice messages are Ogg/Opus (what Telegram records; see
//! [`crate::media::ogg_opus`]), at most `replies.voice_max` long.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::call::event::{CallEvent, Event, EventKind};
use crate::chime;
use crate::media::lease::SpeakerLease;
use crate::media::{ogg_opus, unix_ms, MediaOpener, AUDIO_RATE};

/// How long a sound waits for the speaker (a chime, an earlier reply).
pub const HOLD_WAIT: Duration = Duration::from_secs(30);
/// Quick replies are short.
const REPLY_MAX: Duration = Duration::from_secs(15);
/// At most this many quick-reply buttons.
pub const MAX_QUICK: usize = 6;
/// The built-in replies (Ogg/Opus, made by scripts/make-voice-assets).
const BUILTIN: [(&str, &str, &[u8]); 2] = [
    (
        "coming",
        "I'm coming",
        include_bytes!("../assets/reply-coming.opus"),
    ),
    (
        "leave-it",
        "Please leave it at the door",
        include_bytes!("../assets/reply-leave-it.opus"),
    ),
];

/// The names of the built-in replies, for `builtin:NAME`.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(name, _, _)| *name).collect()
}

/// The text of a built-in reply.
pub fn builtin_text(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|b| b.0 == name).map(|b| b.1)
}

/// Loads a reply's sound: `builtin:NAME`, a WAV file (48 kHz, 16-bit) or an
/// Ogg/Opus file (`.ogg`, `.opus`, `.oga`).
pub fn load_sound(sound: &str) -> Result<Vec<i16>, String> {
    if let Some(name) = sound.strip_prefix("builtin:") {
        let (_, _, bytes) = BUILTIN.iter().find(|b| b.0 == name).ok_or_else(|| {
            format!(
                "no built-in reply {name:?} (there are: {})",
                builtin_names().join(", ")
            )
        })?;
        return ogg_opus::decode(bytes, REPLY_MAX).map_err(|e| e.to_string());
    }
    let bytes = std::fs::read(sound).map_err(|e| format!("{sound}: {e}"))?;
    let lower = sound.to_ascii_lowercase();
    let pcm = if [".ogg", ".opus", ".oga"].iter().any(|x| lower.ends_with(x)) {
        ogg_opus::decode(&bytes, REPLY_MAX).map_err(|e| e.to_string())
    } else {
        chime::decode(&bytes, 100).map_err(|e| e.replace("the chime", "the sound"))
    };
    pcm.map_err(|e| format!("{sound}: {e}"))
}

/// One button under the ring message.
#[derive(Debug, Clone)]
pub struct QuickReply {
    pub text: String,
    pub pcm: Arc<Vec<i16>>,
}

#[derive(Debug, Clone)]
pub struct RepliesSettings {
    pub quick: Vec<QuickReply>,
    /// Voice messages longer than this are refused.
    pub voice_max: Duration,
}

/// Why a sound is not played; the text goes to the owner.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("Nobody is ringing now: replies are played at the door only while it rings.")]
    NotRinging,
    #[error("The ring was answered: talk in the call instead.")]
    Answered,
    #[error("That button belongs to a ring that is over.")]
    OldButton,
    #[error(
        "The voice message is longer than {max} s, the most the door plays (replies.voice_max)."
    )]
    TooLong { max: u64 },
    #[error("That is not a voice message the door can play ({0}). Hold the microphone button in Telegram to record one.")]
    NotVoice(String),
}

/// What the door is doing, as far as replies care.
#[derive(Default)]
struct Door {
    /// The ring that waits for an answer, and its room.
    ringing: Option<(u64, String)>,
    /// Calls a viewer has joined (a live view turned into a ring is one).
    watched: HashSet<u64>,
}

struct Inner {
    settings: RepliesSettings,
    media: Arc<dyn MediaOpener>,
    lease: SpeakerLease,
    events: broadcast::Sender<CallEvent>,
    door: Mutex<Door>,
    /// This start's nonce in button data.
    nonce: String,
}

/// Plays replies at the door; cheap to clone.
#[derive(Clone)]
pub struct DoorVoice(Arc<Inner>);

impl std::fmt::Debug for DoorVoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoorVoice")
            .field("quick", &self.0.settings.quick.len())
            .finish()
    }
}

impl DoorVoice {
    /// Follows the call events (to know which ring waits for an answer)
    /// until `cancel`.
    pub fn start(
        settings: RepliesSettings,
        media: Arc<dyn MediaOpener>,
        lease: SpeakerLease,
        events: &broadcast::Sender<CallEvent>,
        cancel: CancellationToken,
    ) -> DoorVoice {
        let mut nonce = [0u8; 4];
        let _ = getrandom::fill(&mut nonce);
        let voice = DoorVoice(Arc::new(Inner {
            settings,
            media,
            lease,
            events: events.clone(),
            door: Mutex::new(Door::default()),
            nonce: nonce.iter().map(|b| format!("{b:02x}")).collect(),
        }));
        let mut rx = events.subscribe();
        let follower = voice.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = cancel.cancelled() => return,
                    e = rx.recv() => e,
                };
                match event {
                    Ok(e) => follower.saw(&e.event),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        voice
    }

    fn door(&self) -> std::sync::MutexGuard<'_, Door> {
        self.0.door.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn saw(&self, e: &Event) {
        let mut door = self.door();
        match &e.kind {
            EventKind::Ringing if !door.watched.contains(&e.call) => {
                door.ringing = Some((e.call, e.room.clone()));
            }
            EventKind::ViewerJoined | EventKind::Answered | EventKind::Connected => {
                door.watched.insert(e.call);
                if door.ringing.as_ref().is_some_and(|r| r.0 == e.call) {
                    door.ringing = None;
                }
            }
            EventKind::Ended { .. } => {
                door.watched.remove(&e.call);
                if door.ringing.as_ref().is_some_and(|r| r.0 == e.call) {
                    door.ringing = None;
                }
            }
            _ => {}
        }
    }

    pub fn quick(&self) -> &[QuickReply] {
        &self.0.settings.quick
    }

    /// The callback data of quick reply `index` under the message of `call`
    /// (at most 64 bytes, as Telegram wants).
    pub fn button_data(&self, call: u64, index: usize) -> String {
        format!("say:{}:{call}:{index}", self.0.nonce)
    }

    /// `(call, index)` of a button this start made.
    fn parse_button(&self, data: &str) -> Option<(u64, usize)> {
        let mut parts = data.strip_prefix("say:")?.split(':');
        let (nonce, call, index) = (parts.next()?, parts.next()?, parts.next()?);
        if nonce != self.0.nonce || parts.next().is_some() {
            return None;
        }
        Some((call.parse().ok()?, index.parse().ok()?))
    }

    /// The ring that may get a reply now, or why none may.
    fn ringing(&self) -> Result<(u64, String), Refusal> {
        let door = self.door();
        match &door.ringing {
            Some(r) => Ok(r.clone()),
            None if !door.watched.is_empty() => Err(Refusal::Answered),
            None => Err(Refusal::NotRinging),
        }
    }

    /// A quick-reply button was pressed (`data` is its callback data):
    /// plays it and returns its text, or why not.
    pub fn press(&self, data: &str) -> Result<String, Refusal> {
        let Some((call, index)) = self.parse_button(data) else {
            return Err(Refusal::OldButton);
        };
        let reply = self.quick().get(index).ok_or(Refusal::OldButton)?.clone();
        let (ringing, room) = self.ringing().map_err(|r| match r {
            Refusal::NotRinging => Refusal::OldButton,
            r => r,
        })?;
        if ringing != call {
            return Err(Refusal::OldButton);
        }
        self.play(call, room, reply.pcm.clone(), "quick", reply.text.clone());
        Ok(reply.text)
    }

    /// Whether a voice message of `seconds` (as Telegram says) may be
    /// played now; checked before it is downloaded.
    pub fn may_play_voice(&self, seconds: Option<u32>) -> Result<(), Refusal> {
        self.ringing()?;
        let max = self.0.settings.voice_max.as_secs();
        match seconds {
            Some(s) if u64::from(s) > max => Err(Refusal::TooLong { max }),
            _ => Ok(()),
        }
    }

    /// Decodes a voice message (Ogg/Opus) and plays it; its length in
    /// seconds.
    pub fn play_voice(&self, ogg: &[u8]) -> Result<f64, Refusal> {
        let max = self.0.settings.voice_max;
        let pcm = ogg_opus::decode(ogg, max).map_err(|e| match e {
            ogg_opus::OggOpusError::TooLong { .. } => Refusal::TooLong { max: max.as_secs() },
            e => Refusal::NotVoice(e.to_string()),
        })?;
        let (call, room) = self.ringing()?;
        let seconds = pcm.len() as f64 / f64::from(AUDIO_RATE);
        let text = format!("a voice message ({} s)", seconds.round().max(1.0) as u64);
        self.play(call, room, Arc::new(pcm), "voice", text);
        Ok(seconds)
    }

    /// Plays `pcm` in the background once the speaker is free, if the ring
    /// still waits for an answer then.
    fn play(&self, call: u64, room: String, pcm: Arc<Vec<i16>>, what: &'static str, text: String) {
        let voice = self.clone();
        tokio::task::spawn_blocking(move || {
            let inner = &voice.0;
            let still_ringing = || voice.ringing().is_ok_and(|(c, _)| c == call);
            let deadline = Instant::now() + HOLD_WAIT;
            let hold = loop {
                if let Some(h) = inner.lease.try_hold() {
                    break h;
                }
                if !still_ringing() || Instant::now() > deadline {
                    return tracing::info!(
                        call,
                        "reply: {text} not played: the speaker stayed busy or the ring is over"
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            if !still_ringing() {
                return tracing::info!(call, "reply: {text} not played: the ring is over");
            }
            let mut sink = match inner.media.courtesy_speaker(call) {
                Ok(Some(sink)) => sink,
                Ok(None) => return tracing::info!(call, "reply: no speaker (audio.speaker)"),
                Err(e) => return tracing::warn!(call, "reply: the speaker: {e}"),
            };
            tracing::info!(call, "reply: playing {text:?} at the door");
            let _ = inner.events.send(CallEvent {
                event: Event {
                    call,
                    room,
                    kind: EventKind::ReplyPlayed {
                        what: what.into(),
                        text: text.clone(),
                        seconds: pcm.len() as f64 / f64::from(AUDIO_RATE),
                    },
                },
                ts: unix_ms(),
            });
            if let Err(e) = chime::play(&pcm, sink.as_mut(), &hold) {
                tracing::warn!(call, "reply: {text}: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::event::EndReason;
    use crate::media::{AudioSink, AudioSource, EncoderSettings, MediaError, VideoSource};

    /// A door with no devices: nothing here plays.
    struct NoMedia;

    impl MediaOpener for NoMedia {
        fn video(&self) -> Result<Option<Box<dyn VideoSource>>, MediaError> {
            Ok(None)
        }
        fn microphone(&self) -> Result<Option<Box<dyn AudioSource>>, MediaError> {
            Ok(None)
        }
        fn speaker(&self, _call: u64) -> Result<Option<Box<dyn AudioSink>>, MediaError> {
            Ok(None)
        }
        fn video_settings(&self) -> EncoderSettings {
            EncoderSettings {
                width: 320,
                height: 240,
                fps: 30,
                bitrate_kbps: 600,
                keyframe_interval: Duration::ZERO,
                encoder: crate::spec::media::EncoderSpec::OpenH264,
            }
        }
    }

    fn voice() -> (DoorVoice, broadcast::Sender<CallEvent>) {
        let (events, _) = broadcast::channel(16);
        let settings = RepliesSettings {
            quick: vec![QuickReply {
                text: "I'm coming".into(),
                pcm: Arc::new(vec![0; 960]),
            }],
            voice_max: Duration::from_secs(30),
        };
        let media: Arc<dyn MediaOpener> = Arc::new(NoMedia);
        let v = DoorVoice::start(
            settings,
            media,
            SpeakerLease::new(),
            &events,
            CancellationToken::new(),
        );
        (v, events)
    }

    fn see(v: &DoorVoice, call: u64, kind: EventKind) {
        v.saw(&Event {
            call,
            room: "r".into(),
            kind,
        });
    }

    #[tokio::test]
    async fn buttons_work_only_for_the_ring_that_waits_for_an_answer() {
        let (v, _events) = voice();
        let data = v.button_data(3, 0);
        assert!(data.len() <= 64);
        assert_eq!(v.press(&data), Err(Refusal::OldButton));
        see(&v, 3, EventKind::Ringing);
        assert_eq!(v.press(&data).as_deref(), Ok("I'm coming"));
        assert_eq!(v.press(&v.button_data(2, 0)), Err(Refusal::OldButton));
        assert_eq!(v.press(&v.button_data(3, 5)), Err(Refusal::OldButton));
        let other_start = data.replacen(&v.0.nonce, "00000000", 1);
        assert_eq!(v.press(&other_start), Err(Refusal::OldButton));
        assert_eq!(v.press("say:x"), Err(Refusal::OldButton));
        see(&v, 3, EventKind::ViewerJoined);
        assert_eq!(v.press(&data), Err(Refusal::Answered));
        assert_eq!(v.may_play_voice(Some(3)), Err(Refusal::Answered));
        see(
            &v,
            3,
            EventKind::Ended {
                reason: EndReason::ViewerLeft,
            },
        );
        assert_eq!(v.may_play_voice(Some(3)), Err(Refusal::NotRinging));
    }

    #[tokio::test]
    async fn a_ring_during_a_live_view_is_already_answered() {
        let (v, _events) = voice();
        see(&v, 4, EventKind::LiveStarted);
        see(&v, 4, EventKind::ViewerJoined);
        see(&v, 4, EventKind::Ringing);
        assert_eq!(v.press(&v.button_data(4, 0)), Err(Refusal::Answered));
    }

    #[tokio::test]
    async fn voice_messages_are_checked_before_and_after_the_download() {
        let (v, _events) = voice();
        see(&v, 5, EventKind::Ringing);
        assert_eq!(v.may_play_voice(Some(12)), Ok(()));
        assert_eq!(
            v.may_play_voice(Some(31)),
            Err(Refusal::TooLong { max: 30 })
        );
        assert!(matches!(
            v.play_voice(b"ID3\x04 an mp3"),
            Err(Refusal::NotVoice(_))
        ));
    }

    #[test]
    fn sounds_load_from_the_built_ins_and_refuse_what_is_not_there() {
        for name in builtin_names() {
            assert!(load_sound(&format!("builtin:{name}")).unwrap().len() > 24_000);
            assert!(builtin_text(name).is_some());
        }
        assert!(load_sound("builtin:nope").unwrap_err().contains("coming"));
        assert!(load_sound("/nonexistent/x.wav").is_err());
    }
}
