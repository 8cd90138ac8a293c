//! A lossy, striped buffer of recent reads, replayed into the frequency
//! sketch.
//!
//! A hit holds only the shard's shared lock, and the sketch sits behind its
//! own mutex; taking that mutex on every read would serialise readers. Each
//! hit therefore records its key's hash in its thread's stripe with plain
//! (non-read-modify-write) atomic stores, and whoever next holds the sketch
//! replays the records. Records may be lost (two threads sharing a stripe
//! overwrite each other, a record written during a replay may be cleared),
//! which only blurs frequency estimates slightly; the hit path stays free of
//! contended atomic operations.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// Records per stripe between two replays; a power of two.
const LEN: usize = 16;
/// An empty record. A hash that happens to be 0 is recorded as 1.
const EMPTY: u32 = 0;

/// One thread stripe: a write cursor and its records, on their own lines.
#[derive(Debug)]
#[repr(align(64))]
struct Stripe {
    next: AtomicU32,
    records: [AtomicU32; LEN],
}

impl Default for Stripe {
    fn default() -> Self {
        Stripe {
            next: AtomicU32::new(0),
            records: std::array::from_fn(|_| AtomicU32::new(EMPTY)),
        }
    }
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
        let stripe = &self.stripes[stripe & (self.stripes.len() - 1)];
        let at = stripe.next.load(Relaxed);
        stripe.next.store(at.wrapping_add(1), Relaxed);
        stripe.records[at as usize % LEN].store(hash.max(1), Relaxed);
        at as usize % LEN == LEN - 1
    }

    /// Replays and clears the records of one stripe (the one that filled).
    pub(crate) fn drain_stripe(&self, stripe: usize, replay: impl FnMut(u32)) {
        self.stripes[stripe & (self.stripes.len() - 1)].drain(replay);
    }

    /// Replays and clears every record of every stripe.
    pub(crate) fn drain(&self, mut replay: impl FnMut(u32)) {
        for stripe in self.stripes.iter() {
            stripe.drain(&mut replay);
        }
    }
}

impl Stripe {
    fn drain(&self, mut replay: impl FnMut(u32)) {
        for record in &self.records {
            let hash = record.load(Relaxed);
            if hash != EMPTY {
                record.store(EMPTY, Relaxed);
                replay(hash);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_when_a_stripe_fills_and_replays_everything_once() {
        let buffer = ReadBuffer::new(2);
        let full: Vec<bool> = (1..=LEN as u32).map(|h| buffer.record(0, h)).collect();
        assert_eq!(full.iter().filter(|f| **f).count(), 1);
        assert!(full[LEN - 1]);
        assert!(!buffer.record(1, 99), "stripes fill independently");
        let mut seen = Vec::new();
        buffer.drain(|h| seen.push(h));
        seen.sort_unstable();
        let mut expected: Vec<u32> = (1..=LEN as u32).collect();
        expected.push(99);
        assert_eq!(seen, expected);
        buffer.drain(|_| panic!("drained records are cleared"));
    }
}
