//! Hierarchical timer wheel for reclaiming expired entries.
//!
//! Expiry is checked exactly on every read, so the wheel's only job is to
//! find entries whose time has passed without scanning the shard. Five
//! levels of 64 buckets cover, in turn, ~1 ms, ~67 ms, ~4.3 s, ~4.6 min and
//! ~4.9 h per bucket (about 13 days in all; later deadlines wait in the top
//! level and are placed again as time advances). Scheduling, cancelling and
//! firing an entry are O(1); advancing touches only the buckets whose time
//! span has been crossed, as in Varghese and Lauck's hierarchical wheels.

use super::list::{LinkArena, Lists};

const LEVELS: usize = 5;
const BUCKETS: usize = 64;
/// log2 of the bucket width of each level, in nanoseconds.
const SHIFTS: [u32; LEVELS] = [20, 26, 32, 38, 44];
/// A list (after the buckets) collecting due entries for the caller to reclaim.
const DUE: usize = LEVELS * BUCKETS;

/// Gives the wheel each node's deadline (nanoseconds on the shard's clock).
pub(crate) trait TimerArena: LinkArena {
    fn deadline(&mut self, idx: u32) -> u64;
}

/// The timer wheel of one shard.
#[derive(Debug)]
pub(crate) struct TimerWheel {
    buckets: Lists,
    /// The time the wheel was last advanced to; deadlines are placed relative to it.
    now: u64,
    /// Entries in any bucket or in the due list.
    scheduled: usize,
}

impl TimerWheel {
    pub(crate) fn new(now: u64) -> Self {
        TimerWheel {
            buckets: Lists::new(LEVELS * BUCKETS + 1),
            now,
            scheduled: 0,
        }
    }

    /// Whether no entry is scheduled (then the clock need not be read at all).
    pub(crate) fn is_empty(&self) -> bool {
        self.scheduled == 0
    }

    /// Schedules `idx`, which must not be scheduled already.
    pub(crate) fn schedule(&mut self, arena: &mut impl TimerArena, idx: u32, deadline: u64) {
        self.place(arena, idx, deadline);
        self.scheduled += 1;
    }

    /// Removes `idx` from the wheel if it is scheduled.
    pub(crate) fn cancel(&mut self, arena: &mut impl TimerArena, idx: u32) {
        if arena.link(idx).is_linked() {
            self.buckets.unlink(arena, idx);
            self.scheduled -= 1;
        }
    }

    /// The node at `from` is moving to `to` (see [`Lists::relocate`]).
    pub(crate) fn relocate(&mut self, arena: &mut impl TimerArena, from: u32, to: u32) {
        self.buckets.relocate(arena, from, to);
    }

    /// Advances the wheel to `now`, moving every entry whose deadline has
    /// passed to the due list; take them with [`TimerWheel::pop_due`].
    pub(crate) fn advance(&mut self, arena: &mut impl TimerArena, now: u64) {
        if now <= self.now {
            return;
        }
        let prev = self.now;
        self.now = now;
        // Top-down, so entries cascading into a lower level are seen by that
        // level's pass in this same call.
        for level in (0..LEVELS).rev() {
            let shift = SHIFTS[level];
            let (from, to) = (prev >> shift, now >> shift);
            if from == to {
                continue;
            }
            let span = (to - from + 1).min(BUCKETS as u64);
            for tick in from..from + span {
                self.fire(arena, level * BUCKETS + (tick as usize % BUCKETS), now);
            }
        }
    }

    /// Takes one entry whose deadline has passed, if any.
    pub(crate) fn pop_due(&mut self, arena: &mut impl TimerArena) -> Option<u32> {
        let idx = self.buckets.head(DUE)?;
        self.buckets.unlink(arena, idx);
        self.scheduled -= 1;
        Some(idx)
    }

    /// Forgets every entry (the shard is being cleared).
    pub(crate) fn reset(&mut self) {
        self.buckets.reset();
        self.scheduled = 0;
    }

    /// Empties one bucket: due entries go to the due list, the rest are placed again.
    fn fire(&mut self, arena: &mut impl TimerArena, bucket: usize, now: u64) {
        let mut cursor = self.buckets.take(bucket);
        while let Some(idx) = cursor {
            cursor = Lists::detached_next(arena, idx);
            Lists::forget(arena, idx);
            let deadline = arena.deadline(idx);
            if deadline <= now {
                self.buckets.push_back(arena, DUE, idx);
            } else {
                self.place(arena, idx, deadline);
            }
        }
    }

    /// Links `idx` into the lowest level whose 64 buckets reach its deadline.
    fn place(&mut self, arena: &mut impl TimerArena, idx: u32, deadline: u64) {
        for (level, &shift) in SHIFTS.iter().enumerate() {
            let (at, now) = (deadline >> shift, self.now >> shift);
            let last_level = level == LEVELS - 1;
            if at.saturating_sub(now) < BUCKETS as u64 || last_level {
                // Beyond the top level's reach: park in its farthest bucket
                // and place again when that bucket fires.
                let tick = at.min(now + BUCKETS as u64 - 1);
                let bucket = level * BUCKETS + (tick as usize % BUCKETS);
                self.buckets.push_back(arena, bucket, idx);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::list::Link;
    use super::*;

    const MS: u64 = 1_000_000;

    struct Arena {
        links: Vec<Link>,
        deadlines: Vec<u64>,
    }
    impl LinkArena for Arena {
        fn link(&mut self, idx: u32) -> &mut Link {
            &mut self.links[idx as usize]
        }
    }
    impl TimerArena for Arena {
        fn deadline(&mut self, idx: u32) -> u64 {
            self.deadlines[idx as usize]
        }
    }

    fn drain(wheel: &mut TimerWheel, arena: &mut Arena) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some(idx) = wheel.pop_due(arena) {
            out.push(idx);
        }
        out.sort_unstable();
        out
    }

    /// Deadlines from 1 ms to ~20 days, advanced in irregular steps: every
    /// entry fires exactly once, never before its deadline, and within one
    /// level-0 bucket plus one advance step after it.
    #[test]
    fn every_entry_fires_once_and_not_early() {
        let deadlines: Vec<u64> = (0..400u64)
            .map(|i| (i * i * i * 7_919 + 1) * MS % (20 * 24 * 3600 * 1000 * MS) + MS)
            .collect();
        let mut arena = Arena {
            links: vec![Link::UNLINKED; deadlines.len()],
            deadlines: deadlines.clone(),
        };
        let mut wheel = TimerWheel::new(0);
        for (i, &d) in deadlines.iter().enumerate() {
            wheel.schedule(&mut arena, i as u32, d);
        }
        let mut fired = vec![None; deadlines.len()];
        let mut now = 0u64;
        let mut step = MS / 3;
        while !wheel.is_empty() {
            now += step;
            wheel.advance(&mut arena, now);
            for idx in drain(&mut wheel, &mut arena) {
                assert!(fired[idx as usize].is_none(), "entry {idx} fired twice");
                fired[idx as usize] = Some((now, step));
            }
            step = (step * 13 / 10).min(3_600_000 * MS);
        }
        for (i, at) in fired.iter().enumerate() {
            let (at, step) = at.expect("every entry fires");
            assert!(at >= deadlines[i], "entry {i} fired early");
            assert!(at - deadlines[i] <= step + 2 * MS, "entry {i} fired late");
        }
    }

    #[test]
    fn cancelled_entries_never_fire() {
        let mut arena = Arena {
            links: vec![Link::UNLINKED; 3],
            deadlines: vec![5 * MS, 10 * MS, 5_000 * MS],
        };
        let mut wheel = TimerWheel::new(0);
        for i in 0..3 {
            let deadline = arena.deadlines[i as usize];
            wheel.schedule(&mut arena, i, deadline);
        }
        wheel.cancel(&mut arena, 1);
        wheel.cancel(&mut arena, 1);
        wheel.advance(&mut arena, 20 * MS);
        assert_eq!(drain(&mut wheel, &mut arena), [0]);
        wheel.advance(&mut arena, 4_000 * MS);
        assert!(drain(&mut wheel, &mut arena).is_empty());
        wheel.advance(&mut arena, 6_000 * MS);
        assert_eq!(drain(&mut wheel, &mut arena), [2]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn a_long_idle_gap_fires_everything_due() {
        let mut arena = Arena {
            links: vec![Link::UNLINKED; 4],
            deadlines: vec![MS, 90 * MS, 70_000 * MS, 40 * 24 * 3600 * 1000 * MS],
        };
        let mut wheel = TimerWheel::new(0);
        for i in 0..4 {
            let deadline = arena.deadlines[i as usize];
            wheel.schedule(&mut arena, i, deadline);
        }
        wheel.advance(&mut arena, 30 * 24 * 3600 * 1000 * MS);
        assert_eq!(drain(&mut wheel, &mut arena), [0, 1, 2]);
        wheel.advance(&mut arena, 41 * 24 * 3600 * 1000 * MS);
        assert_eq!(drain(&mut wheel, &mut arena), [3]);
    }
}
