//! Building a [`MemoryCache`].

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::clock::{duration_to_nanos, Clock, TimeSource};
use super::config::{Config, Listener, Weigher};
use super::shard::Shard;
use super::stats::RemovalCause;
use super::stripes::stripe_count;
use super::{DefaultHashBuilder, Inner, MemoryCache};

/// Capacity used when none is given.
pub const DEFAULT_CAPACITY: u64 = 10_000;
/// Share of the default TTL that jitter may take off, unless told otherwise.
pub const DEFAULT_JITTER: f64 = 0.1;
/// Below this capacity per shard, more shards would cost hit ratio (each
/// shard's policy sees only its slice of the traffic) for no gain.
const MIN_SHARD_CAPACITY: u64 = 1024;
const MAX_SHARDS: usize = 1024;

/// Builds a [`MemoryCache`]; see each method for its default.
///
/// ```
/// use std::time::Duration;
/// use cachex::{MemoryCache, RemovalCause};
///
/// // At most 64 MiB of values, weighed by their length.
/// let cache: MemoryCache<String, Vec<u8>> = MemoryCache::builder()
///     .max_capacity(64 << 20)
///     .weigher(|_key, value: &Vec<u8>| value.len() as u32)
///     .time_to_live(Duration::from_secs(60))
///     .ttl_jitter(0.2)
///     .eviction_listener(|key, _value, cause| {
///         if cause == RemovalCause::Expired {
///             println!("{key} expired");
///         }
///     })
///     .build();
/// cache.insert("blob".into(), vec![0; 1024]);
/// assert_eq!(cache.weighted_size(), 1024);
/// ```
pub struct MemoryCacheBuilder<K, V, S = DefaultHashBuilder> {
    capacity: u64,
    weigher: Option<Weigher<K, V>>,
    time_to_live: Option<Duration>,
    jitter: f64,
    listener: Option<Listener<K, V>>,
    shards: Option<usize>,
    clock: Option<Arc<dyn Clock>>,
    _hasher: PhantomData<S>,
}

impl<K, V> Default for MemoryCacheBuilder<K, V> {
    fn default() -> Self {
        MemoryCacheBuilder {
            capacity: DEFAULT_CAPACITY,
            weigher: None,
            time_to_live: None,
            jitter: DEFAULT_JITTER,
            listener: None,
            shards: None,
            clock: None,
            _hasher: PhantomData,
        }
    }
}

impl<K, V, S> MemoryCacheBuilder<K, V, S>
where
    K: Hash + Eq + Send + Sync,
    V: Clone + Send + Sync,
{
    /// The bound: a number of entries, or a total weight once a
    /// [weigher](Self::weigher) is set. Default: 10,000.
    pub fn max_capacity(mut self, capacity: u64) -> Self {
        self.capacity = capacity;
        self
    }

    /// Weighs entries (for instance by bytes); `max_capacity` then bounds
    /// the total weight. The weigher must return the same weight for the
    /// same entry every time. One entry may weigh at most 2^29 - 1 and at
    /// most one shard's share of the capacity (see [`shards`](Self::shards));
    /// a heavier entry is refused and the listener hears
    /// [`RemovalCause::Size`].
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> u32 + Send + Sync + 'static) -> Self {
        self.weigher = Some(Arc::new(weigher));
        self
    }

    /// Default time-to-live of entries written with [`Ttl::Default`](crate::Ttl::Default)
    /// (as `insert` does). Default: entries never expire.
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.time_to_live = Some(ttl);
        self
    }

    /// Spreads default-TTL expiries so entries written together do not all
    /// expire together: each gets a TTL drawn uniformly from
    /// `[ttl × (1 − jitter), ttl]`, never longer than the configured TTL.
    /// Clamped to `[0, 1]`. Default: 0.1. Explicit per-entry TTLs are exact.
    pub fn ttl_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        self
    }

    /// Called once for every entry that leaves the cache, with why it left.
    /// It runs on the thread whose operation removed the entry, after the
    /// cache's internal locks are released (so it may use the cache). Entries
    /// still cached when the cache is dropped are not reported.
    pub fn eviction_listener(
        mut self,
        listener: impl Fn(K, V, RemovalCause) + Send + Sync + 'static,
    ) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Number of shards (rounded up to a power of two). Default: four per
    /// available core, but no fewer than 1,024 units of capacity per shard.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards.clamp(1, MAX_SHARDS).next_power_of_two());
        self
    }

    /// The time source for expiry. Default: the system's monotonic clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Builds the cache with the default, randomly seeded hasher.
    pub fn build(self) -> MemoryCache<K, V, DefaultHashBuilder> {
        self.build_with_hasher(DefaultHashBuilder::default())
    }

    /// Builds the cache with the given hasher.
    pub fn build_with_hasher<H: BuildHasher>(self, hasher: H) -> MemoryCache<K, V, H> {
        let shard_count = self.shards.unwrap_or_else(|| default_shards(self.capacity));
        let weighted = self.weigher.is_some();
        let base = self.capacity / shard_count as u64;
        let extra = self.capacity % shard_count as u64;
        let seed = hasher.hash_one(0x5eed_u64);
        let stripes = stripe_count();
        let shards = (0..shard_count)
            .map(|i| {
                let capacity = base + u64::from((i as u64) < extra);
                Shard::new(capacity, weighted, stripes, seed.wrapping_add(i as u64))
            })
            .collect();
        let config = Config {
            hasher,
            time: TimeSource::new(self.clock),
            default_ttl: self.time_to_live.map(duration_to_nanos),
            jitter: self.jitter,
            weigher: self.weigher,
            listener: self.listener,
        };
        MemoryCache {
            inner: Arc::new(Inner {
                shards,
                shard_mask: shard_count - 1,
                config,
                capacity: self.capacity,
            }),
        }
    }
}

fn default_shards(capacity: u64) -> usize {
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    let wanted = (cores * 4).next_power_of_two();
    let by_capacity = (capacity / MIN_SHARD_CAPACITY).max(1);
    // Largest power of two not above `by_capacity`.
    let by_capacity = 1usize << (63 - by_capacity.leading_zeros()).min(20);
    wanted.min(by_capacity).clamp(1, MAX_SHARDS)
}

impl<K, V, S> fmt::Debug for MemoryCacheBuilder<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCacheBuilder")
            .field("capacity", &self.capacity)
            .field("weighted", &self.weigher.is_some())
            .field("time_to_live", &self.time_to_live)
            .field("jitter", &self.jitter)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}
