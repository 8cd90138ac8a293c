//! Settings every shard of one cache shares.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::clock::TimeSource;
use super::shard::Departed;
use super::stats::RemovalCause;

/// Computes an entry's weight (its share of the capacity).
pub(crate) type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u32 + Send + Sync>;
/// Told about every entry that leaves the cache.
pub(crate) type Listener<K, V> = Arc<dyn Fn(K, V, RemovalCause) + Send + Sync>;

pub(crate) struct Config<K, V, S> {
    pub(crate) hasher: S,
    pub(crate) time: TimeSource,
    /// Default time-to-live in nanoseconds.
    pub(crate) default_ttl: Option<u64>,
    /// Share of the default TTL that jitter may take off, in [0, 1].
    pub(crate) jitter: f64,
    pub(crate) weigher: Option<Weigher<K, V>>,
    pub(crate) listener: Option<Listener<K, V>>,
    /// The whole cache's reads as the shards last reported them (shared
    /// state, not a setting, but every shard's writes need it).
    pub(crate) reads: ReadTotals,
    /// Number of shards, for per-shard shares of the whole cache's reads.
    pub(crate) shards: u64,
}

/// The hits and misses of the whole cache, as of each shard's last report.
///
/// The hill climber of each shard follows the whole cache's hit rate (each
/// shard sees a statistically alike slice of the traffic), which averages
/// every shard's slice and so is steadier than its own: fed only its own reads,
/// the climber cost `arc_p3` at 38,127 entries about 2 points of hit
/// ratio. Shards add their reads here when they feed their climber (every
/// 16 writes), so a read itself touches no shared line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct ReadTotals {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ReadTotals {
    /// Adds one shard's new reads; returns the totals after the addition.
    pub(crate) fn report(&self, hits: u64, misses: u64) -> (u64, u64) {
        (
            self.hits.fetch_add(hits, Relaxed).wrapping_add(hits),
            self.misses.fetch_add(misses, Relaxed).wrapping_add(misses),
        )
    }
}

impl<K, V, S> Config<K, V, S> {
    pub(crate) fn weigh(&self, key: &K, value: &V) -> u32 {
        self.weigher.as_ref().map_or(1, |weigh| weigh(key, value))
    }

    /// Tells the listener about departed entries; call with no lock held.
    pub(crate) fn notify(&self, departed: Departed<K, V>) {
        if let Some(listener) = &self.listener {
            for (key, value, cause) in departed.into_entries() {
                listener(key, value, cause);
            }
        }
    }
}

impl<K: Hash, V, S: BuildHasher> Config<K, V, S> {
    pub(crate) fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }
}
