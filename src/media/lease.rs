//! The door's speaker, shared between the chime and the call.
//!
//! A `hw:` sound card has one user at a time. The chime plays on a press;
//! if a viewer answers while it still plays, the call's speaker must get the
//! device: the chime stops and releases it first. One [`SpeakerLease`] is
//! made by the composition root and handed to both sides (no global state):
//! the chime plays while it holds a [`SpeakerHold`], the call calls
//! [`SpeakerLease::take_over`] before it opens the speaker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long the call waits for the chime to let go.
const TAKE_OVER_LIMIT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Inner {
    held: Mutex<bool>,
    released: Condvar,
    stop: AtomicBool,
}

/// Who may use the speaker; cheap to clone, all clones are the same lease.
#[derive(Clone, Default)]
pub struct SpeakerLease(Arc<Inner>);

impl std::fmt::Debug for SpeakerLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeakerLease")
            .field("held", &self.is_held())
            .finish()
    }
}

impl SpeakerLease {
    pub fn new() -> SpeakerLease {
        SpeakerLease::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        self.0.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_held(&self) -> bool {
        *self.lock()
    }

    /// For a courtesy sound (the chime): the speaker, unless someone holds it.
    pub fn try_hold(&self) -> Option<SpeakerHold> {
        let mut held = self.lock();
        if *held {
            return None;
        }
        *held = true;
        self.0.stop.store(false, Ordering::Release);
        Some(SpeakerHold(self.clone()))
    }

    /// For the call: asks a holder to stop and waits (at most 1 s) until it
    /// has released the device. Returns at once when nobody holds it.
    pub fn take_over(&self) {
        let held = self.lock();
        if !*held {
            return;
        }
        self.0.stop.store(true, Ordering::Release);
        let _released = self
            .0
            .released
            .wait_timeout_while(held, TAKE_OVER_LIMIT, |h| *h)
            .unwrap_or_else(|p| p.into_inner());
    }
}

/// The speaker, held; released when dropped.
pub struct SpeakerHold(SpeakerLease);

impl SpeakerHold {
    /// The call wants the speaker: stop playing and drop this.
    pub fn should_stop(&self) -> bool {
        (self.0).0.stop.load(Ordering::Acquire)
    }
}

impl Drop for SpeakerHold {
    fn drop(&mut self) {
        *self.0.lock() = false;
        (self.0).0.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn one_holder_at_a_time() {
        let lease = SpeakerLease::new();
        let hold = lease.try_hold().expect("free");
        assert!(lease.try_hold().is_none(), "still playing");
        drop(hold);
        assert!(lease.try_hold().is_some());
    }

    #[test]
    fn the_call_takes_the_speaker_from_the_chime() {
        let lease = SpeakerLease::new();
        let hold = lease.try_hold().unwrap();
        let player = std::thread::spawn(move || {
            let start = Instant::now();
            while !hold.should_stop() {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "never asked to stop"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            // Dropping `hold` releases the device.
        });
        let start = Instant::now();
        lease.take_over();
        assert!(!lease.is_held(), "released when take_over returns");
        assert!(start.elapsed() < TAKE_OVER_LIMIT);
        player.join().unwrap();
    }

    #[test]
    fn take_over_of_a_free_speaker_returns_at_once() {
        let lease = SpeakerLease::new();
        let start = Instant::now();
        lease.take_over();
        assert!(start.elapsed() < Duration::from_millis(100));
        // A later chime is not told to stop by an earlier take-over.
        assert!(!lease.try_hold().unwrap().should_stop());
    }
}
