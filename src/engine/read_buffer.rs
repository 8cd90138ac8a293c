//! A lossy, striped buffer of recent uses, replayed into the frequency
//! sketch.
//!
//! Since session 10 only value overwrites record here (a hit just marks
//! its entry, and the policy counts it when its hand passes); they hold the
//! shard's write lock, but not the sketch's mutex, which an overwrite would
//! otherwise take for one increment. Each record writes its key's hash into
//! its thread's stripe with plain (non-read-modify-write) atomic stores, and
//! whoever next holds the sketch for that stripe replays the records written
//! since the last replay. (With only lock-holding writers left, a plain
//! per-shard buffer would do; the striped one predates that and is kept
//! until it is measured.)
//! Records may be lost (two threads sharing a stripe overwrite each other, a
//! record written during a replay may be skipped), which only blurs
//! frequency estimates slightly; the hit path stays free of contended atomic
//! operations.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// Records per stripe between two replays; a power of two.
const LEN: u32 = 16;

/// One stripe's records, taken out for replay.
pub(crate) type Batch = [u32; LEN as usize];

/// One thread stripe: its cursors and records, on their own cache lines.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Stripe {
    /// Records written so far (wrapping); the next one goes to `next % LEN`.
    next: AtomicU32,
    /// The value of `next` at the last replay: what came after is new.
    replayed: AtomicU32,
    records: [AtomicU32; LEN as usize],
}

#[derive(Debug)]
pub(crate) struct ReadBuffer {
    stripes: Box<[Stripe]>,
}

impl ReadBuffer {
    pub(crate) fn new(stripes: usize) -> Self {
        ReadBuffer {
            stripes: (0..stripes.max(1)).map(|_| Stripe::default()).collect(),
        }
    }

    /// Records a read in `stripe`; returns `true` when that stripe has just
    /// filled and should be replayed.
    #[inline]
    pub(crate) fn record(&self, stripe: usize, hash: u32) -> bool {
        let stripe = self.stripe(stripe);
        let at = stripe.next.load(Relaxed);
        stripe.next.store(at.wrapping_add(1), Relaxed);
        stripe.records[(at % LEN) as usize].store(hash, Relaxed);
        at % LEN == LEN - 1
    }

    /// Copies the records `stripe` received since its last replay into
    /// `out` and returns how many; callers hold the sketch.
    #[inline]
    pub(crate) fn take_stripe(&self, stripe: usize, out: &mut Batch) -> usize {
        let mut taken = 0;
        self.stripe(stripe).drain(|hash| {
            out[taken] = hash;
            taken += 1;
        });
        taken
    }

    /// Replays the new records of every stripe.
    pub(crate) fn drain(&self, mut replay: impl FnMut(u32)) {
        for stripe in self.stripes.iter() {
            stripe.drain(&mut replay);
        }
    }

    #[inline]
    fn stripe(&self, stripe: usize) -> &Stripe {
        &self.stripes[stripe & (self.stripes.len() - 1)]
    }
}

impl Stripe {
    #[inline]
    fn drain(&self, mut replay: impl FnMut(u32)) {
        let next = self.next.load(Relaxed);
        let last = self.replayed.load(Relaxed);
        if next == last {
            return;
        }
        self.replayed.store(next, Relaxed);
        // Older records than the last LEN were overwritten: lost, by design.
        let fresh = next.wrapping_sub(last).min(LEN);
        for at in next.wrapping_sub(fresh)..next {
            replay(self.records[(at % LEN) as usize].load(Relaxed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(buffer: &ReadBuffer) -> Vec<u32> {
        let mut seen = Vec::new();
        buffer.drain(|h| seen.push(h));
        seen.sort_unstable();
        seen
    }

    #[test]
    fn signals_when_a_stripe_fills_and_replays_everything_once() {
        let buffer = ReadBuffer::new(2);
        let full: Vec<bool> = (1..=LEN).map(|h| buffer.record(0, h)).collect();
        assert_eq!(full.iter().filter(|f| **f).count(), 1);
        assert!(full[LEN as usize - 1]);
        assert!(!buffer.record(1, 99), "stripes fill independently");
        let mut expected: Vec<u32> = (1..=LEN).collect();
        expected.push(99);
        assert_eq!(drained(&buffer), expected);
        assert!(
            drained(&buffer).is_empty(),
            "replayed records are not replayed again"
        );
    }

    #[test]
    fn replays_only_what_came_since_the_last_replay() {
        let buffer = ReadBuffer::new(1);
        buffer.record(0, 1);
        buffer.record(0, 2);
        let mut out = Batch::default();
        assert_eq!(buffer.take_stripe(0, &mut out), 2);
        assert_eq!(out[..2], [1, 2]);
        buffer.record(0, 3);
        assert_eq!(buffer.take_stripe(0, &mut out), 1);
        assert_eq!(out[..1], [3]);
        assert_eq!(buffer.take_stripe(0, &mut out), 0, "nothing new");
    }

    #[test]
    fn an_overrun_stripe_replays_its_latest_records() {
        let buffer = ReadBuffer::new(1);
        for h in 1..=40 {
            buffer.record(0, h);
        }
        assert_eq!(drained(&buffer), (25..=40).collect::<Vec<_>>());
    }
}
