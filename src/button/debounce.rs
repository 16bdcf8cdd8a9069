//! From raw edges of a push button to presses: pure, no clock reads.
//!
//! A mechanical button bounces for a few milliseconds on press and release,
//! cheap ones for longer, and a long cable picks up the odd spike. A level
//! counts only once it has held for `debounce` (default 50 ms): every edge
//! restarts that wait, so a burst of bounces gives one transition and a spike
//! shorter than `debounce` gives none. A press is the settled transition to the
//! active level (low for a button to ground with the pull-up, the default);
//! holding the button is still one press, and releasing it is not a press.
//!
//! A visitor who hammers the button should give one ring: a press within
//! `ring_gap` (default 5 s) of the last *accepted* press is reported as
//! [`Outcome::TooSoon`] and not rung. Measuring from the last accepted press
//! (not the last attempt) keeps the rule predictable: pressing again after the
//! gap always rings, whatever happened in between. Presses during a call reach
//! the call machine like any other, which decides (`call.press_during_call`).
//!
//! Times are durations since any fixed origin (the caller's clock); the caller
//! feeds edges as they come and calls [`Debouncer::settle`] at
//! [`Debouncer::deadline`].

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DebounceSettings {
    /// The pressed level is low (button to ground, internal pull-up).
    pub active_low: bool,
    pub debounce: Duration,
    pub ring_gap: Duration,
}

impl Default for DebounceSettings {
    fn default() -> Self {
        Self {
            active_low: true,
            debounce: Duration::from_millis(50),
            ring_gap: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ring.
    Press,
    /// A settled press within the ring gap: not rung.
    TooSoon { since_last: Duration },
    /// The button was let go (settled).
    Released,
}

#[derive(Debug, Clone)]
pub struct Debouncer {
    settings: DebounceSettings,
    /// The settled state.
    pressed: bool,
    /// The line as last seen, and since when.
    raw_pressed: bool,
    raw_since: Duration,
    last_ring: Option<Duration>,
}

impl Debouncer {
    /// `high`: the line's level when the source was opened, at `now`. A button
    /// already held at start-up is taken as settled, not as a press.
    pub fn new(settings: DebounceSettings, high: bool, now: Duration) -> Self {
        let pressed = high != settings.active_low;
        Self {
            settings,
            pressed,
            raw_pressed: pressed,
            raw_since: now,
            last_ring: None,
        }
    }

    pub fn is_pressed(&self) -> bool {
        self.pressed
    }

    /// The line changed to `high` at `at`. Settles a level that had already
    /// held long enough before this edge (when the caller was late to call
    /// [`Debouncer::settle`]), then starts the wait for the new one.
    pub fn edge(&mut self, high: bool, at: Duration) -> Option<Outcome> {
        let earlier = self.settle(at);
        let raw = high != self.settings.active_low;
        if raw != self.raw_pressed {
            self.raw_pressed = raw;
            self.raw_since = at;
        }
        earlier
    }

    /// When [`Debouncer::settle`] should next be called, if a level is
    /// waiting to settle.
    pub fn deadline(&self) -> Option<Duration> {
        (self.raw_pressed != self.pressed).then(|| self.raw_since + self.settings.debounce)
    }

    /// Settles the waiting level if it has held for `debounce` by `now`.
    pub fn settle(&mut self, now: Duration) -> Option<Outcome> {
        let due = self.deadline()?;
        if now < due {
            return None;
        }
        self.pressed = self.raw_pressed;
        if !self.pressed {
            return Some(Outcome::Released);
        }
        // The press happened when the level first went active, not when it
        // settled; the gap is measured between those moments.
        let at = self.raw_since;
        if let Some(last) = self.last_ring {
            let since_last = at.saturating_sub(last);
            if since_last < self.settings.ring_gap {
                return Some(Outcome::TooSoon { since_last });
            }
        }
        self.last_ring = Some(at);
        Some(Outcome::Press)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// Feeds `(time ms, level high)` edges to a fresh debouncer (line idle
    /// high, pull-up), settling at every deadline as a caller would, and
    /// returns the outcomes with the time they were reported.
    fn run(settings: DebounceSettings, edges: &[(u64, bool)], until: u64) -> Vec<(u64, Outcome)> {
        let mut d = Debouncer::new(settings, true, ms(0));
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            let next_edge = edges.get(i).map(|(t, _)| ms(*t));
            let next_deadline = d.deadline();
            let step = match (next_edge, next_deadline) {
                (Some(e), Some(dl)) if dl <= e => Err(dl),
                (Some(e), _) => Ok(e),
                (None, Some(dl)) => Err(dl),
                (None, None) => break,
            };
            match step {
                Ok(at) => {
                    if at > ms(until) {
                        break;
                    }
                    if let Some(o) = d.edge(edges[i].1, at) {
                        out.push((at.as_millis() as u64, o));
                    }
                    i += 1;
                }
                Err(at) => {
                    if at > ms(until) {
                        break;
                    }
                    if let Some(o) = d.settle(at) {
                        out.push((at.as_millis() as u64, o));
                    }
                }
            }
        }
        out
    }

    fn presses(out: &[(u64, Outcome)]) -> Vec<u64> {
        out.iter()
            .filter(|(_, o)| *o == Outcome::Press)
            .map(|(t, _)| *t)
            .collect()
    }

    const LOW: bool = false;
    const HIGH: bool = true;

    #[test]
    fn a_clean_press_rings_once_after_the_debounce_time() {
        let out = run(
            DebounceSettings::default(),
            &[(1000, LOW), (1200, HIGH)],
            10_000,
        );
        assert_eq!(out, vec![(1050, Outcome::Press), (1250, Outcome::Released)]);
    }

    #[test]
    fn bounces_on_press_and_release_give_one_press() {
        let edges = [
            (1000, LOW),
            (1002, HIGH),
            (1003, LOW),
            (1007, HIGH),
            (1008, LOW),
            (1300, HIGH),
            (1301, LOW),
            (1304, HIGH),
        ];
        let out = run(DebounceSettings::default(), &edges, 10_000);
        assert_eq!(out, vec![(1058, Outcome::Press), (1354, Outcome::Released)]);
    }

    #[test]
    fn spikes_shorter_than_the_debounce_time_are_ignored() {
        let edges = [(1000, LOW), (1010, HIGH), (2000, LOW), (2049, HIGH)];
        assert_eq!(run(DebounceSettings::default(), &edges, 10_000), vec![]);
    }

    #[test]
    fn a_long_press_is_one_press() {
        let out = run(
            DebounceSettings::default(),
            &[(1000, LOW), (30_000, HIGH)],
            60_000,
        );
        assert_eq!(presses(&out), vec![1050]);
        assert_eq!(out.len(), 2, "{out:?}");
    }

    #[test]
    fn hammering_the_button_gives_one_ring_per_gap() {
        // A press every 500 ms for 8 s.
        let mut edges = Vec::new();
        for k in 0..16u64 {
            edges.push((1000 + k * 500, LOW));
            edges.push((1000 + k * 500 + 200, HIGH));
        }
        let out = run(DebounceSettings::default(), &edges, 20_000);
        // Accepted at 1000 (settled 1050); the next press at or after 6000.
        assert_eq!(presses(&out), vec![1050, 6050]);
        let too_soon = out
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::TooSoon { .. }))
            .count();
        assert_eq!(too_soon, 14);
        assert!(out.contains(&(
            1550,
            Outcome::TooSoon {
                since_last: ms(500)
            }
        )));
    }

    #[test]
    fn the_gap_counts_from_the_last_accepted_press_not_the_last_attempt() {
        let edges = [
            (0, LOW),
            (100, HIGH),
            (4000, LOW), // too soon
            (4100, HIGH),
            (5000, LOW), // 5 s after the accepted one: rings
            (5100, HIGH),
        ];
        let out = run(DebounceSettings::default(), &edges, 20_000);
        assert_eq!(presses(&out), vec![50, 5050]);
    }

    #[test]
    fn presses_during_a_call_still_come_through_after_the_gap() {
        // The call machine, not the debouncer, decides what a press during a
        // call means: the debouncer reports them like any other.
        let edges = [(0, LOW), (100, HIGH), (30_000, LOW), (30_100, HIGH)];
        let out = run(DebounceSettings::default(), &edges, 60_000);
        assert_eq!(presses(&out), vec![50, 30_050]);
    }

    #[test]
    fn active_high_buttons_press_on_the_rising_edge() {
        let settings = DebounceSettings {
            active_low: false,
            ..DebounceSettings::default()
        };
        let mut d = Debouncer::new(settings, false, ms(0));
        assert_eq!(d.edge(true, ms(100)), None);
        assert_eq!(d.settle(ms(149)), None);
        assert_eq!(d.settle(ms(150)), Some(Outcome::Press));
        assert!(d.is_pressed());
    }

    #[test]
    fn a_button_held_at_start_up_is_not_a_press() {
        let mut d = Debouncer::new(DebounceSettings::default(), false, ms(0));
        assert!(d.is_pressed());
        assert_eq!(d.deadline(), None);
        assert_eq!(d.edge(true, ms(500)), None);
        assert_eq!(d.settle(ms(550)), Some(Outcome::Released));
        assert_eq!(d.edge(false, ms(1000)), None);
        assert_eq!(d.settle(ms(1050)), Some(Outcome::Press));
    }

    #[test]
    fn a_late_caller_still_gets_the_settled_press_on_the_next_edge() {
        // The caller never called settle between the press and the release.
        let mut d = Debouncer::new(DebounceSettings::default(), true, ms(0));
        assert_eq!(d.edge(false, ms(100)), None);
        assert_eq!(d.edge(true, ms(400)), Some(Outcome::Press));
        assert_eq!(d.settle(ms(450)), Some(Outcome::Released));
    }

    #[test]
    fn repeated_edges_at_the_same_level_do_not_restart_the_wait() {
        let mut d = Debouncer::new(DebounceSettings::default(), true, ms(0));
        d.edge(false, ms(100));
        d.edge(false, ms(140)); // a missed opposite edge in between
        assert_eq!(d.deadline(), Some(ms(150)));
        assert_eq!(d.settle(ms(150)), Some(Outcome::Press));
    }

    #[test]
    fn zero_debounce_and_zero_gap_pass_everything_through() {
        let settings = DebounceSettings {
            active_low: true,
            debounce: Duration::ZERO,
            ring_gap: Duration::ZERO,
        };
        let edges = [(10, LOW), (11, HIGH), (12, LOW), (13, HIGH)];
        assert_eq!(presses(&run(settings, &edges, 100)), vec![10, 12]);
    }
}
