//! The in-memory engine: a sharded, concurrent, bounded cache with
//! W-TinyLFU admission and eviction and per-entry expiry.
//!
//! Module map: [`MemoryCache`] (this file) hashes a key once and routes it
//! to a shard (`shard.rs`), which stores slots (`slot.rs`) in a dense vector
//! indexed by a hash table, threads them through the policy's queues and the
//! timer wheel (`list.rs`, `timer_wheel.rs`). The policy itself lives in
//! `src/policy/`.

mod builder;
mod clock;
mod config;
pub(crate) mod list;
mod shard;
mod shard_lock;
mod slot;
mod stats;
pub(crate) mod stripes;
mod sync;
mod timer_wheel;

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::Duration;

pub use builder::MemoryCacheBuilder;
pub use clock::Clock;
pub use stats::{CacheStats, RemovalCause};

use config::Config;
use shard::Shard;
use slot::NEVER;
pub(crate) use stripes::{stripe_count, thread_id, StripedCounters};

use crate::Ttl;

/// The hasher a [`MemoryCache`] uses unless told otherwise: fast, and
/// seeded at random per cache so keys cannot be crafted to collide.
pub type DefaultHashBuilder = foldhash::fast::RandomState;

/// A concurrent, bounded, synchronous in-memory cache.
///
/// - **Bounded** by entry count, or by total weight with a
///   [weigher](MemoryCacheBuilder::weigher). Each of the cache's shards owns
///   an equal share of the capacity and never exceeds it, so the bound holds
///   exactly, at any thread count.
/// - **Admission and eviction** by adaptive W-TinyLFU: a newcomer must look
///   more popular than the entry it would displace, and the recency/frequency
///   balance tunes itself to the workload.
/// - **Expiry**: a default time-to-live with jitter, per-entry TTLs, and
///   entries that never expire. An expired entry is never returned; expired
///   entries are reclaimed by ordinary operations, with no background thread.
/// - **Cheap to clone**: clones share one cache.
///
/// ```
/// use std::time::Duration;
/// use cachex::MemoryCache;
///
/// let cache: MemoryCache<String, u64> = MemoryCache::builder()
///     .max_capacity(10_000)
///     .time_to_live(Duration::from_secs(300))
///     .build();
/// cache.insert("answer".to_string(), 42);
/// assert_eq!(cache.get("answer"), Some(42)); // look up by &str, no allocation
/// assert_eq!(cache.remove("answer"), Some(42));
/// assert!(!cache.contains_key("answer"));
/// ```
pub struct MemoryCache<K, V, S = DefaultHashBuilder> {
    inner: Arc<Inner<K, V, S>>,
}

struct Inner<K, V, S> {
    shards: Box<[Shard<K, V>]>,
    /// `shards.len() - 1`; the shard count is a power of two.
    shard_mask: usize,
    config: Config<K, V, S>,
    capacity: u64,
}

impl<K, V, S> Clone for MemoryCache<K, V, S> {
    fn clone(&self) -> Self {
        MemoryCache {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V> MemoryCache<K, V, DefaultHashBuilder>
where
    K: Hash + Eq + Send + Sync,
    V: Clone + Send + Sync,
{
    /// A cache holding at most `max_capacity` entries, with no expiry.
    pub fn new(max_capacity: u64) -> Self {
        Self::builder().max_capacity(max_capacity).build()
    }

    /// A builder for every other setting.
    pub fn builder() -> MemoryCacheBuilder<K, V> {
        MemoryCacheBuilder::default()
    }
}

impl<K, V, S> MemoryCache<K, V, S>
where
    K: Hash + Eq + Send + Sync,
    V: Clone + Send + Sync,
    S: BuildHasher,
{
    /// The value stored for `key`, if there is a live one. A hit counts as
    /// a use of the entry for the eviction policy.
    // Always inlined into the caller: left to the compiler it was a call,
    // and the call cost 15-19% of all-hit reads and 11-13% of the Zipf
    // 90/10 mix (interleaved single-threaded batches on the development
    // machine). Its cold paths stay out of line.
    #[inline(always)]
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (hash, shard) = self.locate(key);
        shard.read(hash, key, true, &self.inner.config, |slot, _| {
            slot.value.clone()
        })
    }

    /// The value stored for `key` and its remaining time-to-live (`None`
    /// for an entry that never expires). Counts as a use, like [`get`](Self::get).
    // Always inlined, like `get`: it is the async cache's `get_or_load` hit
    // path, where the call and the copy of its answer out of it cost about
    // 25 instructions (callgrind).
    #[inline(always)]
    pub fn get_with_ttl<Q>(&self, key: &Q) -> Option<(V, Option<Duration>)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_with_ttl_hashed(self.inner.config.hash(key), key)
    }

    /// [`get_with_ttl`](Self::get_with_ttl) of the key whose hash (by
    /// [`hasher`](Self::hasher)) is `hash`: for a caller that needs the
    /// hash for something else too.
    #[inline(always)]
    pub(crate) fn get_with_ttl_hashed<Q>(&self, hash: u64, key: &Q) -> Option<(V, Option<Duration>)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard_of(hash)
            .read(hash, key, true, &self.inner.config, |slot, now| {
                (slot.value.clone(), remaining(slot.deadline, now))
            })
    }

    /// `read` applied to the live value under the key whose hash is
    /// `hash`, and to its remaining time-to-live, under the shard's read
    /// lock: for a caller that needs less than a clone of the value (or
    /// decides about it first). Counts as a use, like [`get`](Self::get).
    #[inline(always)]
    pub(crate) fn read_hashed<Q, R>(
        &self,
        hash: u64,
        key: &Q,
        read: impl FnOnce(&V, Option<Duration>) -> R,
    ) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shard_of(hash)
            // Always inlined, like the shard's read around it: left a call,
            // it cost a hit path the call, its frame, and its result
            // written out and read back.
            .read(
                hash,
                key,
                true,
                &self.inner.config,
                #[inline(always)]
                |slot, now| read(&slot.value, remaining(slot.deadline, now)),
            )
    }

    /// The hasher that locates keys.
    pub(crate) fn hasher(&self) -> &S {
        &self.inner.config.hasher
    }

    /// A key's hash, by [`hasher`](Self::hasher).
    #[inline]
    pub(crate) fn hash_of<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.inner.config.hash(key)
    }

    /// The remaining time-to-live of `key`'s entry: `None` if there is no
    /// live entry, `Some(None)` if it never expires. Not counted as a use.
    pub fn remaining_ttl<Q>(&self, key: &Q) -> Option<Option<Duration>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (hash, shard) = self.locate(key);
        shard.read(hash, key, false, &self.inner.config, |slot, now| {
            remaining(slot.deadline, now)
        })
    }

    /// `inspect` applied to the live entry under `key`, without counting a
    /// use or a hit: for callers that look at an entry to decide about it
    /// (the hybrid store's L1 checking an entry's generation), not read it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn peek<Q, R>(&self, key: &Q, inspect: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (hash, shard) = self.locate(key);
        shard.read(hash, key, false, &self.inner.config, |slot, _| {
            inspect(&slot.value)
        })
    }

    /// Whether a live entry holds `key`. Not counted as a use.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (hash, shard) = self.locate(key);
        shard
            .read(hash, key, false, &self.inner.config, |_, _| ())
            .is_some()
    }

    /// Stores `value` under `key` with the default time-to-live (jittered).
    ///
    /// The cache may evict another entry to make room, or decline the new
    /// one if the policy rates it below the entry it would displace; either
    /// way the listener is told.
    #[inline]
    pub fn insert(&self, key: K, value: V) {
        self.insert_with_ttl(key, value, Ttl::Default);
    }

    /// Stores `value` under `key` with the given time-to-live choice.
    pub fn insert_with_ttl(&self, key: K, value: V, ttl: Ttl) {
        let (hash, shard) = self.locate(&key);
        let departed = shard.insert(hash, key, value, ttl, &self.inner.config);
        self.inner.config.notify(departed);
    }

    /// Removes `key`'s entry; returns its value if it was live.
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (hash, shard) = self.locate(key);
        let (value, departed) = shard.remove(hash, key, &self.inner.config);
        self.inner.config.notify(departed);
        value
    }

    /// Removes every entry (the listener hears [`RemovalCause::Explicit`]).
    pub fn clear(&self) {
        for shard in self.inner.shards.iter() {
            let departed = shard.clear(&self.inner.config);
            self.inner.config.notify(departed);
        }
    }

    /// Does now the upkeep that otherwise rides on later operations:
    /// applies buffered reads to the policy and reclaims expired entries.
    /// Never needed for correctness; useful before reading [`len`](Self::len)
    /// of a cache that has been idle.
    pub fn run_pending_tasks(&self) {
        for shard in self.inner.shards.iter() {
            let departed = shard.run_pending(&self.inner.config);
            self.inner.config.notify(departed);
        }
    }

    fn locate<Q: Hash + ?Sized>(&self, key: &Q) -> (u64, &Shard<K, V>) {
        let hash = self.inner.config.hash(key);
        (hash, self.shard_of(hash))
    }

    #[inline]
    fn shard_of(&self, hash: u64) -> &Shard<K, V> {
        // Bits 32.. pick the shard: the table uses the low bits for the
        // bucket and the top seven for its tag, the sketch the low 32.
        &self.inner.shards[(hash >> 32) as usize & self.inner.shard_mask]
    }
}

impl<K, V, S> MemoryCache<K, V, S> {
    /// Entries stored, including expired ones not reclaimed yet.
    pub fn len(&self) -> u64 {
        self.inner.shards.iter().map(|s| s.len() as u64).sum()
    }

    /// Whether no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total weight stored (equal to [`len`](Self::len) without a weigher).
    pub fn weighted_size(&self) -> u64 {
        self.inner.shards.iter().map(Shard::weight).sum()
    }

    /// The bound on [`weighted_size`](Self::weighted_size).
    pub fn capacity(&self) -> u64 {
        self.inner.capacity
    }

    /// A snapshot of the cache's counters.
    pub fn stats(&self) -> CacheStats {
        let mut stats = CacheStats::default();
        for shard in self.inner.shards.iter() {
            shard.add_stats(&mut stats);
        }
        stats
    }
}

impl<K, V, S> fmt::Debug for MemoryCache<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCache")
            .field("len", &self.len())
            .field("capacity", &self.inner.capacity)
            .field("shards", &self.inner.shards.len())
            .finish_non_exhaustive()
    }
}

fn remaining(deadline: u64, now: u64) -> Option<Duration> {
    (deadline != NEVER).then(|| Duration::from_nanos(deadline.saturating_sub(now)))
}
