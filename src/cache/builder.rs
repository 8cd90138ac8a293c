//! Building a [`Cache`].

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::stats::Counters;
use super::{Cache, Core, Settings};
use crate::loading::{Background, Flights, Random, RefreshPolicy};
use crate::observe::{KeyMode, Observer, DEFAULT_NAME};
use crate::store::{MemoryStore, Store};

/// The default time-to-live: 5 minutes.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// The default jitter: TTLs the cache chooses are shortened by up to 10%.
pub const DEFAULT_JITTER: f64 = 0.1;
/// The default negative TTL, for cached "not found" answers: 30 seconds.
/// Shorter than [`DEFAULT_TTL`] because a missing row is often about to be
/// created.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(30);

/// Builds a [`Cache`]; see each method for its default.
///
/// ```
/// use std::time::Duration;
/// use cachex::Cache;
///
/// let cache: Cache<Vec<u8>> = Cache::builder()
///     .capacity(50_000)
///     .default_ttl(Duration::from_secs(600))
///     .jitter(0.2)
///     .negative_ttl(Duration::from_secs(10))
///     .stale_while_revalidate(Duration::from_secs(60))
///     .xfetch(1.0)
///     .name("blobs")
///     .build();
/// # drop(cache);
/// ```
pub struct CacheBuilder<V> {
    store: Option<Arc<dyn Store<V>>>,
    capacity: Option<u64>,
    settings: Settings,
    metrics: bool,
    seed: Option<u64>,
    name: Arc<str>,
    key_mode: KeyMode,
    #[cfg(feature = "tracing")]
    log_interval: Option<Duration>,
}

impl<V> Default for CacheBuilder<V> {
    fn default() -> Self {
        CacheBuilder {
            store: None,
            capacity: None,
            settings: Settings {
                default_ttl: DEFAULT_TTL,
                jitter: DEFAULT_JITTER,
                negative_ttl: DEFAULT_NEGATIVE_TTL,
                refresh: RefreshPolicy::default(),
            },
            metrics: true,
            seed: None,
            name: Arc::from(DEFAULT_NAME),
            key_mode: KeyMode::default(),
            #[cfg(feature = "tracing")]
            log_interval: None,
        }
    }
}

impl<V> CacheBuilder<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// The backend. Default: a [`MemoryStore`] of [`capacity`](Self::capacity)
    /// entries.
    pub fn store(mut self, store: impl Store<V> + 'static) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// The capacity, in entries, of the default in-memory store. Default:
    /// 10,000. Not used when a [`store`](Self::store) is given: size that
    /// store itself.
    pub fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// The time-to-live of values written with [`Ttl::Default`](crate::Ttl::Default)
    /// and of loaded values, before jitter. Default: 5 minutes.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.settings.default_ttl = ttl;
        self
    }

    /// Spreads the expiry of entries written together: every TTL the cache
    /// chooses itself (the default and the negative TTL) is drawn uniformly
    /// from `[ttl × (1 − jitter), ttl]`, so the configured TTL stays the
    /// longest an entry lives. Explicit TTLs are exact. Clamped to `[0, 1]`;
    /// NaN means 0. Default: 0.1.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.settings.jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        self
    }

    /// How long a "not found" answer from
    /// [`get_or_load_optional`](Cache::get_or_load_optional) is cached,
    /// before jitter. Zero turns negative caching off. Default: 30 seconds.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.settings.negative_ttl = ttl;
        self
    }

    /// Stale-while-revalidate: a `get_or_load` hit on a value with at most
    /// `window` left to live returns the value at once and refreshes it in
    /// the background (once per key at a time). A `window` as long as the TTL
    /// refreshes on every hit. Default: off.
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.settings.refresh.window = Some(window);
        self
    }

    /// XFetch, probabilistic early refresh (Vattani et al., VLDB 2015): a
    /// `get_or_load` hit refreshes in the background with probability
    /// `exp(−remaining / (delta × beta))`, where `delta` is how long the
    /// entry's last load took. Slow-to-load entries thus refresh earlier, and
    /// the refreshes of a popular key spread out instead of piling onto the
    /// instant it expires. `beta` tunes eagerness (1 is the paper's default;
    /// larger refreshes earlier); zero, negative or NaN leaves it off.
    /// Default: off.
    pub fn xfetch(mut self, beta: f64) -> Self {
        self.settings.refresh.xfetch_beta = (beta > 0.0 && beta.is_finite()).then_some(beta);
        self
    }

    /// Whether to keep [`Stats`](super::Stats) (and so the Prometheus
    /// counters, which read them). Default: on. The counters are striped
    /// per thread and cost a few nanoseconds per operation; see
    /// `docs/BENCHMARKS.md` for the measured difference.
    pub fn metrics(mut self, enabled: bool) -> Self {
        self.metrics = enabled;
        self
    }

    /// The cache's name: the `cache` label of its metrics and the
    /// `cache.name` field of its spans. Give each cache of a process its
    /// own. Default: `"default"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Arc::from(name.into());
        self
    }

    /// What the `cache.key` field of the cache's spans shows: nothing, a
    /// hash, or the key. Default: [`KeyMode::Off`], since keys may hold
    /// personal data (see there).
    pub fn key_mode(mut self, mode: KeyMode) -> Self {
        self.key_mode = mode;
        self
    }

    /// Logs a line of stats every `interval` (an `INFO` event, target
    /// `cachex::stats`: lookups, hits, misses, hit ratio, loads, load
    /// errors, mean load time, sets, deletes, evictions and store errors
    /// over the interval). Needs [`build`](Self::build) to be called inside
    /// a tokio runtime, which runs the logger; it stops when the cache is
    /// closed or dropped. Default: off.
    #[cfg(feature = "tracing")]
    pub fn log_stats(mut self, interval: Duration) -> Self {
        self.log_interval = Some(interval);
        self
    }

    /// Seeds the random source behind jitter and XFetch, for reproducible
    /// tests and simulations. Default: seeded at random.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Builds the cache. Needs no runtime; operations do.
    pub fn build(self) -> Cache<V> {
        let store = self.store.unwrap_or_else(|| {
            Arc::new(match self.capacity {
                Some(capacity) => MemoryStore::new(capacity),
                None => MemoryStore::default(),
            })
        });
        let tier = store.stats().single_tier();
        let core = Core {
            store,
            flights: Flights::new(),
            settings: self.settings,
            random: self.seed.map_or_else(Random::from_entropy, Random::new),
            counters: Counters::new(self.metrics),
            observer: Observer::new(self.name, self.key_mode, tier),
            closed: AtomicBool::new(false),
        };
        let cache = Cache {
            core: Arc::new(core),
            background: Arc::new(Background::new()),
        };
        #[cfg(feature = "tracing")]
        if let Some(interval) = self.log_interval {
            let core: Arc<dyn crate::observe::StatsSource> = cache.core.clone();
            crate::observe::log::start(&cache.background, Arc::downgrade(&core), interval);
        }
        cache
    }
}

impl<V> fmt::Debug for CacheBuilder<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("custom_store", &self.store.is_some())
            .field("capacity", &self.capacity)
            .field("settings", &self.settings)
            .field("metrics", &self.metrics)
            .field("seed", &self.seed)
            .field("name", &self.name)
            .field("key_mode", &self.key_mode)
            .finish_non_exhaustive()
    }
}
