//! Building a [`Cache`].

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::distributed::{self, Distributed};
use super::refresh_ahead::{self, RefreshAhead};
use super::stats::Counters;
use super::{Cache, Core, Settings};
use crate::loading::{Background, FailSafe, Flights, LoadTimeouts, Random, RefreshPolicy};
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

/// The default [`fail_safe_throttle`](CacheBuilder::fail_safe_throttle):
/// 10 seconds.
///
/// Long enough that a hot key costs a failing source at most one call per
/// 10 s per process (instead of one per request: at 1,000 requests a second,
/// a 10,000-fold cut), short enough that a recovered source is seen within
/// seconds.
pub const DEFAULT_FAIL_SAFE_THROTTLE: Duration = Duration::from_secs(10);

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
    /// Kept apart until `build`, so that it may be set before or after
    /// `fail_safe`.
    throttle: Duration,
    metrics: bool,
    seed: Option<u64>,
    name: Arc<str>,
    key_mode: KeyMode,
    #[cfg(feature = "tracing")]
    log_interval: Option<Duration>,
    /// See `distributed.rs`.
    pub(super) distributed: Option<distributed::Settings>,
    /// See `refresh_ahead.rs`.
    pub(super) refresh_ahead: refresh_ahead::Settings,
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
                fail_safe: None,
                timeouts: LoadTimeouts::default(),
            },
            throttle: DEFAULT_FAIL_SAFE_THROTTLE,
            metrics: true,
            seed: None,
            name: Arc::from(DEFAULT_NAME),
            key_mode: KeyMode::default(),
            #[cfg(feature = "tracing")]
            log_interval: None,
            distributed: None,
            refresh_ahead: refresh_ahead::Settings::default(),
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

    /// Fail-safe: a value past its TTL is kept, hidden, for up to
    /// `max_stale` more, as the answer of last resort for
    /// [`get_or_load`](Cache::get_or_load). If the load that should replace
    /// it fails (the loader errs or panics, or runs past the
    /// [hard timeout](Self::hard_timeout)), every caller of that load gets
    /// the stale value instead of the error, and the value is served again
    /// (re-armed) for the [throttle](Self::fail_safe_throttle) period, so
    /// that a source that is down is asked once per key per period, not on
    /// every request. The failure is still counted
    /// ([`Stats::load_errors`](super::Stats::load_errors)) and traced; the
    /// stale answers are counted in
    /// [`Stats::stale_served_on_failure`](super::Stats::stale_served_on_failure).
    /// Zero leaves fail-safe off. Default: off.
    ///
    /// - **Reads**: [`get`](Cache::get) never returns a value past its TTL;
    ///   [`remaining_ttl`](Cache::remaining_ttl) reports the TTL callers
    ///   see, not the extra time.
    /// - **Storage**: values are stored for their TTL plus `max_stale`, so
    ///   a store holds expired values that long longer. Every process
    ///   sharing a remote store must use the same `max_stale`: the stored
    ///   TTL is how the extra time is told from the real one. With
    ///   fail-safe on, `get` on Redis sends `GET` + `PTTL` instead of `GET`.
    /// - **Not found** answers are not kept past their TTL (a stale "does
    ///   not exist" is a poor answer), and values written with
    ///   [`Ttl::Never`](crate::Ttl::Never) never go stale.
    /// - **Refresh**: stale-while-revalidate, XFetch and jitter work on the
    ///   TTL callers see, as without fail-safe; a failed background refresh
    ///   leaves the value as it is.
    /// - **Lasting outages**: while every load fails, the value keeps being
    ///   served stale, one attempt per throttle period; `max_stale` bounds
    ///   how long an expired value is kept when no load has failed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cachex::Cache;
    ///
    /// # tokio::runtime::Builder::new_current_thread()
    /// #     .enable_all()
    /// #     .start_paused(true) // time is tokio's, paused: `advance` moves it
    /// #     .build()
    /// #     .unwrap()
    /// #     .block_on(async {
    /// let cache: Cache<String> = Cache::builder()
    ///     .default_ttl(Duration::from_secs(60))
    ///     .jitter(0.0)
    ///     .fail_safe(Duration::from_secs(3600))
    ///     .build();
    /// let fresh = || async { Ok::<_, std::io::Error>("v1".to_string()) };
    /// cache.get_or_load("config", fresh).await?;
    ///
    /// tokio::time::advance(Duration::from_secs(61)).await; // expired...
    /// assert_eq!(cache.get("config").await?, None);
    /// // ...but kept: the database is down, the last value answers.
    /// let down = || async { Err::<String, _>(std::io::Error::other("down")) };
    /// assert_eq!(cache.get_or_load("config", down).await?, "v1");
    /// assert_eq!(cache.stats().stale_served_on_failure, 1);
    /// # Ok::<(), cachex::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn fail_safe(mut self, max_stale: Duration) -> Self {
        self.settings.fail_safe = (!max_stale.is_zero()).then_some(FailSafe {
            max_stale,
            throttle: self.throttle,
        });
        self
    }

    /// How long a stale value served after a failed load is served again
    /// before the next attempt to load it; see [`fail_safe`](Self::fail_safe).
    /// Default: [`DEFAULT_FAIL_SAFE_THROTTLE`], 10 seconds.
    pub fn fail_safe_throttle(mut self, throttle: Duration) -> Self {
        self.throttle = throttle;
        self
    }

    /// Soft timeout of a load: when a load runs longer than `timeout` and
    /// a stale value is at hand ([`fail_safe`](Self::fail_safe)), its
    /// callers get the stale value (counted in
    /// [`Stats::stale_served_on_timeout`](super::Stats::stale_served_on_timeout))
    /// while the load goes on in the background and stores its result when
    /// it ends. Measured from the start of the load, so every caller of one
    /// load switches at the same moment, and later callers get the stale
    /// value at once until the load lands. Loads with no stale value to
    /// fall back on are not affected (see [`hard_timeout`](Self::hard_timeout)).
    /// Default: none.
    ///
    /// A load with a stale fallback runs in a background task of the
    /// cache, so that it survives its callers: cancelling the caller does
    /// not cancel it, and closing or dropping the cache does.
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeouts.soft = Some(timeout);
        self
    }

    /// Hard timeout of every loader call, loads and background refreshes:
    /// past `timeout` the load is abandoned (its future dropped, which
    /// cancels whatever it awaits) and counted as failed
    /// ([`Stats::load_timeouts`](super::Stats::load_timeouts)). Its callers
    /// get the stale value if [fail-safe](Self::fail_safe) kept one,
    /// [`Error::LoadTimedOut`](crate::Error::LoadTimedOut) otherwise.
    /// Default: none.
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeouts.hard = Some(timeout);
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
        let mut settings = self.settings;
        if let Some(fail_safe) = &mut settings.fail_safe {
            fail_safe.throttle = self.throttle;
        }
        let local = store.local_tier();
        // One hash of a key then finds it in the local tier and in the
        // flights (see `Flights::with_hasher`).
        let flights = match &local {
            Some(local) => Flights::with_hasher(local.hasher()),
            None => Flights::new(),
        };
        let core = Core {
            local,
            store,
            flights,
            settings,
            random: self.seed.map_or_else(Random::from_entropy, Random::new),
            counters: Counters::new(self.metrics),
            observer: Observer::new(self.name, self.key_mode, tier),
            closed: AtomicBool::new(false),
            distributed: self.distributed.map(Distributed::new),
            refresh_ahead: RefreshAhead::new(self.refresh_ahead),
            tag_flights: Default::default(),
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
            .field("fail_safe_throttle", &self.throttle)
            .field("metrics", &self.metrics)
            .field("seed", &self.seed)
            .field("name", &self.name)
            .field("key_mode", &self.key_mode)
            .field("distributed", &self.distributed)
            .field("refresh_ahead", &self.refresh_ahead)
            .finish_non_exhaustive()
    }
}
