//! Counters of what a cache did, and why entries left it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why an entry left the cache; given to the eviction listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemovalCause {
    /// Evicted to keep the cache within its capacity (or rejected because
    /// it alone weighs more than a shard's share of the capacity).
    Size,
    /// Its time-to-live passed.
    Expired,
    /// Removed by `remove` or `clear`.
    Explicit,
    /// Its value was overwritten by an insert of the same key.
    Replaced,
}

/// A point-in-time snapshot of a cache's counters.
///
/// Counters are read shard by shard without stopping writers, so a
/// snapshot taken under load is consistent per counter, not across them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads that found a live entry.
    pub hits: u64,
    /// Reads that found nothing, or only an expired entry.
    pub misses: u64,
    /// Inserts of keys that were absent.
    pub inserts: u64,
    /// Inserts that replaced the value of a present key.
    pub updates: u64,
    /// Entries removed by `remove` or `clear`.
    pub removals: u64,
    /// Entries evicted (or rejected) to respect the capacity.
    pub evictions_size: u64,
    /// Entries reclaimed after their time-to-live.
    pub evictions_expired: u64,
}

impl CacheStats {
    /// Hits over reads, or 0 when nothing was read.
    pub fn hit_ratio(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }

    /// All evictions, whatever the cause (replacements not included).
    pub fn evictions(&self) -> u64 {
        self.evictions_size + self.evictions_expired
    }
}

/// Per-shard counters changed only under the shard's exclusive lock.
#[derive(Debug, Default)]
pub(crate) struct WriteCounters {
    inserts: AtomicU64,
    updates: AtomicU64,
    removals: AtomicU64,
    evictions_size: AtomicU64,
    evictions_expired: AtomicU64,
}

impl WriteCounters {
    // Inlined: every write calls this from code monomorphised in the user's
    // crate, where a non-generic function is otherwise a call through the
    // GOT (with the `writing` flag's release in `shard_lock`: +4.5% on
    // updates, single thread).
    #[inline]
    pub(crate) fn count(&self, event: WriteEvent) {
        let counter = match event {
            WriteEvent::Insert => &self.inserts,
            WriteEvent::Removed(RemovalCause::Replaced) => &self.updates,
            WriteEvent::Removed(RemovalCause::Explicit) => &self.removals,
            WriteEvent::Removed(RemovalCause::Size) => &self.evictions_size,
            WriteEvent::Removed(RemovalCause::Expired) => &self.evictions_expired,
        };
        // Writers hold the shard's exclusive lock: no increment can be lost,
        // so a load and a store spare the locked instruction.
        counter.store(counter.load(Relaxed) + 1, Relaxed);
    }

    pub(crate) fn add_to(&self, stats: &mut CacheStats) {
        stats.inserts += self.inserts.load(Relaxed);
        stats.updates += self.updates.load(Relaxed);
        stats.removals += self.removals.load(Relaxed);
        stats.evictions_size += self.evictions_size.load(Relaxed);
        stats.evictions_expired += self.evictions_expired.load(Relaxed);
    }
}

/// What a write did, for counting.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WriteEvent {
    Insert,
    Removed(RemovalCause),
}
