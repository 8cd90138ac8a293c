//! Settings every shard of one cache shares.

use std::hash::{BuildHasher, Hash};
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
