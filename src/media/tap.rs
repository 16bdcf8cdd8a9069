//! A tap on a call's encoded media: what a recorder (or a clip of the
//! visitor) takes, without decoding or encoding anything again. The door's
//! H.264 access units and Opus packets as they go to the viewer, and the
//! viewer's Opus packets as they arrive.
//!
//! The tap is called on the send path: it must return at once (hand the
//! sample to a bounded queue of its own and drop when full), never block.

use bytes::Bytes;
use std::time::Duration;

/// One encoded sample of a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Tapped {
    /// One H.264 access unit (Annex-B) sent to the viewer; a keyframe carries
    /// its SPS and PPS.
    Video {
        data: Bytes,
        keyframe: bool,
        duration: Duration,
    },
    /// One 20 ms Opus packet of the door's microphone, sent to the viewer.
    DoorAudio { data: Bytes, duration: Duration },
    /// One Opus packet of the viewer's voice as it arrived (RTP sequence
    /// number, for reordering).
    ViewerAudio { sequence: u16, data: Bytes },
}

/// Where tapped samples go. `call` is the call number of the events.
pub trait MediaTap: Send + Sync {
    fn tapped(&self, call: u64, sample: Tapped);
}

/// A tap for one call.
#[derive(Clone)]
pub struct CallTap {
    pub call: u64,
    pub tap: std::sync::Arc<dyn MediaTap>,
}

impl CallTap {
    pub fn send(&self, sample: Tapped) {
        self.tap.tapped(self.call, sample);
    }
}

impl std::fmt::Debug for CallTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallTap").field("call", &self.call).finish()
    }
}

/// Several taps, each given every sample.
pub struct Taps(pub Vec<std::sync::Arc<dyn MediaTap>>);

impl MediaTap for Taps {
    fn tapped(&self, call: u64, sample: Tapped) {
        for t in &self.0 {
            t.tapped(call, sample.clone());
        }
    }
}
