//! Per-thread stripes, so threads on different cores do not write to the
//! same cache lines on the read path.
//!
//! Each thread gets a small id the first time it touches any cache; a
//! cache's striped structures are indexed by `id % stripes`. When threads
//! outnumber stripes some share one, which stays correct (the counters use
//! atomic adds; the read buffer is lossy by design) and only costs contention.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

static NEXT_THREAD_ID: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_ID: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's id, assigned on first use.
#[inline]
pub(crate) fn thread_id() -> usize {
    THREAD_ID.with(|id| {
        let current = id.get();
        if current != usize::MAX {
            return current;
        }
        let fresh = NEXT_THREAD_ID.fetch_add(1, Relaxed);
        id.set(fresh);
        fresh
    })
}

/// How many stripes a cache uses: two per core, at most 64, a power of two.
pub(crate) fn stripe_count() -> usize {
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    (cores * 2).next_power_of_two().min(64)
}

/// Hit and miss counters of one stripe, alone on their cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct ReadCounter {
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Hits and misses of a whole cache, striped by thread.
#[derive(Debug)]
pub(crate) struct ReadCounters {
    stripes: Box<[ReadCounter]>,
}

impl ReadCounters {
    pub(crate) fn new(stripes: usize) -> Self {
        ReadCounters {
            stripes: (0..stripes).map(|_| ReadCounter::default()).collect(),
        }
    }

    #[inline]
    pub(crate) fn hit(&self, stripe: usize) {
        self.stripes[stripe & (self.stripes.len() - 1)]
            .hits
            .fetch_add(1, Relaxed);
    }

    #[inline]
    pub(crate) fn miss(&self, stripe: usize) {
        self.stripes[stripe & (self.stripes.len() - 1)]
            .misses
            .fetch_add(1, Relaxed);
    }

    /// Totals over all stripes: `(hits, misses)`.
    pub(crate) fn totals(&self) -> (u64, u64) {
        self.stripes.iter().fold((0, 0), |(h, m), s| {
            (h + s.hits.load(Relaxed), m + s.misses.load(Relaxed))
        })
    }
}
