//! A small jitter buffer for the viewer's audio: reorders RTP packets by
//! sequence number and hands them to the decoder at the playout pace, keeping
//! the delay bounded.
//!
//! Pure: packets in, one decision per playout tick out. Rules:
//! - playout starts once `target` packets are buffered (about 40 ms);
//! - each tick takes the next sequence number: present -> decode it; missing
//!   while later packets wait -> conceal (Opus PLC); nothing buffered -> underrun
//!   (silence), and after `rebuffer_after` underruns in a row playout waits for
//!   `target` packets again (the viewer muted or the network stalled);
//! - late packets (behind playout) and duplicates are dropped;
//! - more than `max` buffered -> the oldest are dropped down to `target`, so a
//!   burst after a stall cannot leave the speaker seconds behind.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    pub target: usize,
    pub max: usize,
    pub rebuffer_after: u32,
}

impl Default for JitterConfig {
    fn default() -> Self {
        // 20 ms packets: 40 ms to start, 200 ms at most, rebuffer after 100 ms dry.
        Self {
            target: 2,
            max: 10,
            rebuffer_after: 5,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Pop<T> {
    /// Decode this packet.
    Packet(T),
    /// A packet is missing; conceal it.
    Lost,
    /// Nothing to play; output silence.
    Underrun,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JitterStats {
    pub played: u64,
    pub lost: u64,
    pub late: u64,
    pub duplicate: u64,
    pub overflow_dropped: u64,
    pub underruns: u64,
}

#[derive(Debug)]
pub struct JitterBuffer<T> {
    config: JitterConfig,
    packets: BTreeMap<u64, T>,
    /// Extended sequence number to play next; `None` before the first packet.
    next: Option<u64>,
    playing: bool,
    dry_ticks: u32,
    stats: JitterStats,
}

impl<T> JitterBuffer<T> {
    pub fn new(config: JitterConfig) -> Self {
        assert!(
            config.target >= 1 && config.max >= config.target,
            "jitter config sane"
        );
        Self {
            config,
            packets: BTreeMap::new(),
            next: None,
            playing: false,
            dry_ticks: 0,
            stats: JitterStats::default(),
        }
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.packets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Extends a 16-bit sequence number to the one nearest the playout point.
    fn extend(&self, seq: u16) -> u64 {
        let Some(reference) = self.next.or_else(|| self.packets.keys().next().copied()) else {
            return (1 << 32) + u64::from(seq);
        };
        let base = reference & !0xFFFF;
        let candidates = [base.wrapping_sub(1 << 16), base, base + (1 << 16)];
        candidates
            .into_iter()
            .map(|b| b + u64::from(seq))
            .min_by_key(|c| c.abs_diff(reference))
            .expect("three candidates")
    }

    pub fn push(&mut self, seq: u16, packet: T) {
        let mut ext = self.extend(seq);
        if let Some(next) = self.next {
            if ext < next {
                self.stats.late += 1;
                return;
            }
            if ext - next > 1000 {
                // The sender restarted its sequence: start over.
                self.packets.clear();
                self.next = None;
                self.playing = false;
                ext = self.extend(seq);
            }
        }
        if self.packets.contains_key(&ext) {
            self.stats.duplicate += 1;
            return;
        }
        self.packets.insert(ext, packet);
        let mut trimmed = false;
        if self.packets.len() > self.config.max {
            // Trim to the target so the delay falls back, not just stops growing.
            while self.packets.len() > self.config.target {
                self.packets.pop_first();
                self.stats.overflow_dropped += 1;
            }
            trimmed = true;
        }
        if !self.playing || trimmed {
            // Before playout, or after a trim, the earliest packet is next.
            self.next = self.packets.keys().next().copied();
        }
    }

    /// One playout tick.
    pub fn pop(&mut self) -> Pop<T> {
        if !self.playing {
            if self.packets.len() < self.config.target {
                self.stats.underruns += 1;
                return Pop::Underrun;
            }
            self.playing = true;
            self.next = self.packets.keys().next().copied();
        }
        let Some(next) = self.next else {
            self.stats.underruns += 1;
            return Pop::Underrun;
        };
        if let Some(p) = self.packets.remove(&next) {
            self.next = Some(next + 1);
            self.dry_ticks = 0;
            self.stats.played += 1;
            return Pop::Packet(p);
        }
        if !self.packets.is_empty() {
            // Behind `next` nothing can be buffered (pushes drop late packets), so
            // the gap is a loss.
            self.next = Some(next + 1);
            self.dry_ticks = 0;
            self.stats.lost += 1;
            return Pop::Lost;
        }
        self.dry_ticks += 1;
        self.stats.underruns += 1;
        if self.dry_ticks >= self.config.rebuffer_after {
            self.playing = false;
            self.dry_ticks = 0;
        }
        Pop::Underrun
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jb() -> JitterBuffer<u16> {
        JitterBuffer::new(JitterConfig::default())
    }

    fn drain(j: &mut JitterBuffer<u16>, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| match j.pop() {
                Pop::Packet(p) => p.to_string(),
                Pop::Lost => "L".into(),
                Pop::Underrun => "-".into(),
            })
            .collect()
    }

    #[test]
    fn waits_for_the_target_then_plays_in_order() {
        let mut j = jb();
        j.push(10, 10);
        assert_eq!(drain(&mut j, 1), ["-"]);
        j.push(12, 12);
        j.push(11, 11);
        assert_eq!(drain(&mut j, 4), ["10", "11", "12", "-"]);
    }

    #[test]
    fn a_missing_packet_is_concealed_when_later_ones_wait() {
        let mut j = jb();
        for s in [1u16, 2, 4, 5] {
            j.push(s, s);
        }
        assert_eq!(drain(&mut j, 5), ["1", "2", "L", "4", "5"]);
        assert_eq!(j.stats().lost, 1);
    }

    #[test]
    fn late_and_duplicate_packets_are_dropped() {
        let mut j = jb();
        j.push(1, 1);
        j.push(2, 2);
        assert_eq!(drain(&mut j, 2), ["1", "2"]);
        j.push(1, 1);
        j.push(3, 3);
        j.push(3, 3);
        assert_eq!((j.stats().late, j.stats().duplicate), (1, 1));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut j = jb();
        for s in [65534u16, 65535, 0, 1] {
            j.push(s, s);
        }
        assert_eq!(drain(&mut j, 4), ["65534", "65535", "0", "1"]);
    }

    #[test]
    fn a_burst_after_a_stall_is_trimmed_so_the_delay_stays_bounded() {
        let mut j = jb();
        for s in 0..40u16 {
            j.push(s, s);
        }
        assert!(j.len() <= JitterConfig::default().max);
        let played = drain(&mut j, 12);
        // Only the newest packets remain, so playout resumes near live.
        assert!(played[0].parse::<u16>().unwrap() >= 30, "{played:?}");
        assert!(j.stats().overflow_dropped >= 28);
    }

    #[test]
    fn a_long_silence_rebuffers_and_then_resumes_with_the_new_packets() {
        let mut j = jb();
        for s in 0..3u16 {
            j.push(s, s);
        }
        assert_eq!(drain(&mut j, 3), ["0", "1", "2"]);
        assert_eq!(drain(&mut j, 6), ["-", "-", "-", "-", "-", "-"]);
        // The viewer unmutes 50 packets later.
        j.push(53, 53);
        assert_eq!(drain(&mut j, 1), ["-"], "waits for the target again");
        j.push(54, 54);
        assert_eq!(drain(&mut j, 2), ["53", "54"]);
    }

    #[test]
    fn a_sequence_restart_starts_over() {
        let mut j = jb();
        for s in 100..103u16 {
            j.push(s, s);
        }
        assert_eq!(drain(&mut j, 2), ["100", "101"]);
        j.push(30_000, 1);
        j.push(30_001, 2);
        assert_eq!(drain(&mut j, 2), ["1", "2"]);
    }
}
