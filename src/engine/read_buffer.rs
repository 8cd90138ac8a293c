//! A lossy buffer of recent reads, replayed into the frequency sketch.
//!
//! Readers hold only the shard's shared lock, but the sketch needs exclusive
//! access. Each hit therefore records its key's hash here with plain
//! (non-read-modify-write) atomic stores, and the next holder of the shard's
//! exclusive lock replays the records. Two racing readers may overwrite one
//! another's record; losing a few reads only blurs frequency estimates
//! slightly, and it keeps the hit path free of contended atomic operations.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// Records between two replays; a power of two.
const LEN: usize = 32;
/// An empty record. A hash that happens to be 0 is recorded as 1.
const EMPTY: u32 = 0;

#[derive(Debug)]
pub(crate) struct ReadBuffer {
    next: AtomicU32,
    records: [AtomicU32; LEN],
}

impl Default for ReadBuffer {
    fn default() -> Self {
        ReadBuffer {
            next: AtomicU32::new(0),
            records: std::array::from_fn(|_| AtomicU32::new(EMPTY)),
        }
    }
}

impl ReadBuffer {
    /// Records a read; returns `true` when the buffer has just filled and
    /// should be replayed.
    #[inline]
    pub(crate) fn record(&self, hash: u32) -> bool {
        let at = self.next.load(Relaxed);
        self.next.store(at.wrapping_add(1), Relaxed);
        self.records[at as usize % LEN].store(hash.max(1), Relaxed);
        at as usize % LEN == LEN - 1
    }

    /// Replays and clears every record. Called under the shard's exclusive
    /// lock, when no reader can be recording.
    pub(crate) fn drain(&self, mut replay: impl FnMut(u32)) {
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
    fn signals_when_full_and_replays_everything_once() {
        let buffer = ReadBuffer::default();
        let full: Vec<bool> = (1..=LEN as u32).map(|h| buffer.record(h)).collect();
        assert_eq!(full.iter().filter(|f| **f).count(), 1);
        assert!(full[LEN - 1]);
        let mut seen = Vec::new();
        buffer.drain(|h| seen.push(h));
        seen.sort_unstable();
        assert_eq!(seen, (1..=LEN as u32).collect::<Vec<_>>());
        buffer.drain(|_| panic!("drained records are cleared"));
    }
}
