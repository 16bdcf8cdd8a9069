//! Capped exponential backoff: the one rule every retry loop of the doorbell
//! follows (the signaling reconnection, notification retries, the Telegram
//! bot's polling).
//!
//! The wait after the n-th failure is `first * 2^(n-1)`, capped at `max`,
//! then spread by up to `±jitter` with randomness from the operating system,
//! so that many doorbells that lost the same server (a restart, an outage)
//! do not come back in step. A loop whose deadline arithmetic must be exact
//! (notification retries within the call's notify limit) uses no jitter.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// Fraction of spread, 0.0..=0.5 (0.2: ±20 %).
    pub jitter: f64,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration, jitter: f64) -> Backoff {
        Backoff { first, max, jitter }
    }

    /// The wait after failure number `failures` (1 is the first), before
    /// jitter.
    pub fn base(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.first.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// The wait after failure number `failures`, with jitter; never above `max`.
    pub fn wait(&self, failures: u32) -> Duration {
        let base = self.base(failures);
        if self.jitter <= 0.0 {
            return base;
        }
        let spread = self.jitter.min(0.5);
        let unit = f64::from(random_u32()) / f64::from(u32::MAX); // 0..=1
        let factor = 1.0 - spread + 2.0 * spread * unit;
        base.mul_f64(factor).min(self.max)
    }
}

/// From the operating system's random source; the middle of the range when
/// that fails (no jitter is better than no retry).
fn random_u32() -> u32 {
    getrandom::u32().unwrap_or(u32::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_first_up_to_max() {
        let b = Backoff::new(Duration::from_millis(500), Duration::from_secs(8), 0.0);
        let waits: Vec<f64> = (1..=7).map(|n| b.wait(n).as_secs_f64()).collect();
        assert_eq!(waits, [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]);
        assert_eq!(b.wait(0), Duration::from_millis(500));
        assert_eq!(b.wait(u32::MAX), Duration::from_secs(8));
    }

    #[test]
    fn jitter_spreads_within_its_bounds_and_varies() {
        let b = Backoff::new(Duration::from_secs(4), Duration::from_secs(60), 0.2);
        let waits: Vec<Duration> = (0..200).map(|_| b.wait(1)).collect();
        for w in &waits {
            assert!(
                *w >= Duration::from_millis(3200) && *w <= Duration::from_millis(4800),
                "{w:?}"
            );
        }
        let mut distinct = waits.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() > 100,
            "random, not the clock: {}",
            distinct.len()
        );
        // Capped even with jitter.
        assert!((0..100).all(|_| b.wait(10) <= Duration::from_secs(60)));
    }
}
