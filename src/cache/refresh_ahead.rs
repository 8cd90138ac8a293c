//! Refresh-ahead: keys read through
//! [`get_or_load_refreshed`](Cache::get_or_load_refreshed) are reloaded in
//! the background every interval for as long as they keep being read, so
//! their readers never wait for a load, and an idle key stops being
//! refreshed and simply expires.
//!
//! Each process keeps the keys it reads (at most `max_keys`), with their
//! loader and the time of their last read, and one timer task per key in
//! the cache's background set (so `close` stops them all). At each tick a
//! key is refreshed unless a load of it is under way here, and, with
//! [distributed singleflight](CacheBuilder::distributed_singleflight),
//! unless another process refreshed it in the current interval (windows of
//! the interval on the Redis server's clock, claimed with the key's lock:
//! see `lock/scripts.rs`). So a key read in any number of processes is
//! refreshed once per interval in total; the others see the new value
//! through the store (and, on a hybrid store, its invalidation).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use foldhash::fast::RandomState;
use parking_lot::RwLock;
use tokio::time::{Instant, MissedTickBehavior};

use super::builder::CacheBuilder;
use super::distributed::Claim;
use super::load::Lead;
use super::stats::Counter;
use super::{check_key, Cache, Core};
use crate::observe::spans::{traced, Op, OpSpan};
use crate::{BoxError, BoxFuture, Result};

/// The default [`max_refreshing_keys`](CacheBuilder::max_refreshing_keys):
/// 1,000 keys per cache and process.
pub const DEFAULT_MAX_REFRESHING_KEYS: usize = 1_000;

/// A loader kept for refreshing: callable again and again.
type RefreshLoader<V> = Arc<dyn Fn() -> BoxFuture<'static, Result<V, BoxError>> + Send + Sync>;

/// The builder's refresh-ahead settings.
#[derive(Clone, Copy, Debug)]
pub(super) struct Settings {
    /// `(interval, stop_after)`; `None`: off.
    every: Option<(Duration, Duration)>,
    max_keys: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            every: None,
            max_keys: DEFAULT_MAX_REFRESHING_KEYS,
        }
    }
}

/// The keys a cache refreshes ahead in this process.
pub(super) struct RefreshAhead<V> {
    interval: Duration,
    stop_after: Duration,
    max_keys: usize,
    keys: RwLock<HashMap<Arc<str>, Arc<Tracked<V>>, RandomState>>,
    epoch: Instant,
}

/// One key refreshed ahead.
struct Tracked<V> {
    loader: RefreshLoader<V>,
    /// When it was last read, in milliseconds since the registry's epoch.
    last_read: AtomicU64,
}

impl<V> RefreshAhead<V> {
    /// The registry `settings` ask for, if any.
    pub(super) fn new(settings: Settings) -> Option<Self> {
        let (interval, stop_after) = settings.every?;
        Some(RefreshAhead {
            interval,
            stop_after,
            max_keys: settings.max_keys,
            keys: RwLock::default(),
            epoch: Instant::now(),
        })
    }

    /// Keys refreshed now.
    pub(super) fn len(&self) -> usize {
        self.keys.read().len()
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether `tracked` went unread for longer than `stop_after`.
    fn idle(&self, tracked: &Tracked<V>) -> bool {
        let last = tracked.last_read.load(Ordering::Relaxed);
        Duration::from_millis(self.now().saturating_sub(last)) > self.stop_after
    }
}

impl<V> CacheBuilder<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// Refresh-ahead (jetcache's auto-refresh): keys read with
    /// [`get_or_load_refreshed`](Cache::get_or_load_refreshed) are
    /// reloaded in the background every `interval` while they have been
    /// read within `stop_after`, so that their readers find them fresh
    /// instead of waiting for a load when they expire. A key not read for
    /// `stop_after` stops being refreshed and simply expires. Choose a
    /// [default TTL](Self::default_ttl) longer than `interval`.
    ///
    /// - **Across processes**: with
    ///   [`distributed_singleflight`](Self::distributed_singleflight), a
    ///   key read in many processes is refreshed by one of them per
    ///   interval; the others read the new value from the store.
    ///   Without it, each process refreshes the keys it reads.
    /// - **Bounded**: each process refreshes at most
    ///   [`max_refreshing_keys`](Self::max_refreshing_keys) keys; beyond,
    ///   keys are loaded as by `get_or_load` and not refreshed.
    /// - **Observable**: refreshes count in
    ///   [`Stats::refresh_ahead`](crate::Stats::refresh_ahead) (and
    ///   [`refreshes`](crate::Stats::refreshes)), run in `cache.refresh`
    ///   spans, and stop on [`close`](Cache::close).
    ///
    /// Zero `interval` leaves refresh-ahead off. Default: off.
    pub fn refresh_ahead(mut self, interval: Duration, stop_after: Duration) -> Self {
        self.refresh_ahead.every = (!interval.is_zero()).then_some((interval, stop_after));
        self
    }

    /// The most keys one process refreshes ahead for this cache: each is a
    /// timer task and, with distributed singleflight, a Redis command per
    /// interval. Default: [`DEFAULT_MAX_REFRESHING_KEYS`].
    pub fn max_refreshing_keys(mut self, max: usize) -> Self {
        self.refresh_ahead.max_keys = max;
        self
    }
}

impl<V> Cache<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// [`get_or_load`](Self::get_or_load), and the key is then refreshed
    /// ahead in the background for as long as it keeps being read (see
    /// [`refresh_ahead`](CacheBuilder::refresh_ahead); without it, this is
    /// `get_or_load`). The loader is kept for the refreshes, hence `Fn`
    /// and `Sync`; the first loader given for a key is the one kept.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cachex::Cache;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache: Cache<String> = Cache::builder()
    ///     .default_ttl(Duration::from_secs(60))
    ///     .refresh_ahead(Duration::from_secs(10), Duration::from_secs(120))
    ///     .build();
    /// let price = cache
    ///     .get_or_load_refreshed("price:7", || async { Ok::<_, std::io::Error>("9.99".to_string()) })
    ///     .await?;
    /// assert_eq!(price, "9.99");
    /// assert_eq!(cache.stats().refresh_ahead_keys, 1);
    /// cache.close().await; // stops the refreshes
    /// # Ok::<(), cachex::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn get_or_load_refreshed<F, Fut, E>(&self, key: &str, loader: F) -> Result<V>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let loader: RefreshLoader<V> = Arc::new(move || {
            let load = loader();
            Box::pin(async move { load.await.map_err(Into::into) })
        });
        if let Some(ahead) = &self.core.refresh_ahead {
            if check_key(key).is_ok() && !self.is_closed() {
                self.track(ahead, key, &loader);
            }
        }
        self.get_or_load(key, move || loader()).await
    }

    /// Notes a read of `key`, and starts refreshing it if it is new.
    fn track(&self, ahead: &RefreshAhead<V>, key: &str, loader: &RefreshLoader<V>) {
        let now = ahead.now();
        if let Some(tracked) = ahead.keys.read().get(key) {
            tracked.last_read.store(now, Ordering::Relaxed);
            return;
        }
        let mut keys = ahead.keys.write();
        if let Some(tracked) = keys.get(key) {
            tracked.last_read.store(now, Ordering::Relaxed);
            return;
        }
        if keys.len() >= ahead.max_keys {
            self.core.counters.incr(Counter::RefreshAheadRejected);
            return;
        }
        let key: Arc<str> = Arc::from(key);
        let tracked = Arc::new(Tracked {
            loader: Arc::clone(loader),
            last_read: AtomicU64::new(now),
        });
        keys.insert(Arc::clone(&key), Arc::clone(&tracked));
        drop(keys);
        let task = refresh_key(Arc::clone(&self.core), Arc::clone(&key), tracked);
        if !self.background.spawn(task) {
            ahead.keys.write().remove(&key);
        }
    }
}

/// The timer task of one key: refreshes it every interval until it goes
/// idle (or the cache closes, which aborts the task).
async fn refresh_key<V>(core: Arc<Core<V>>, key: Arc<str>, tracked: Arc<Tracked<V>>)
where
    V: Clone + Send + Sync + 'static,
{
    let Some(ahead) = &core.refresh_ahead else {
        return;
    };
    let mut ticks = tokio::time::interval_at(Instant::now() + ahead.interval, ahead.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        if core.ensure_open().is_err() {
            return;
        }
        if ahead.idle(&tracked) {
            ahead.keys.write().remove(&key);
            core.counters.incr(Counter::RefreshAheadIdle);
            return;
        }
        core.refresh_ahead_once(&key, &tracked, ahead.interval)
            .await;
    }
}

impl<V> Core<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// One tick of a key: refresh it, unless a load of it is under way
    /// here or it is another process's turn.
    async fn refresh_ahead_once(&self, key: &str, tracked: &Tracked<V>, interval: Duration) {
        let Some(leader) = self.flights.try_lead(key) else {
            self.counters.incr(Counter::RefreshAheadSkipped);
            return;
        };
        let Some(held) = self.claim_window(key, interval).await else {
            self.counters.incr(Counter::RefreshAheadSkipped);
            return;
        };
        self.counters.incr(Counter::RefreshAhead);
        let loader = Arc::clone(&tracked.loader);
        let span = OpSpan::new(&self.observer, Op::Refresh, Some(key));
        let how = Lead {
            background: true,
            write: true,
            stale: None,
            claim: Claim::Done(held),
            tags: None,
        };
        // A failed refresh keeps the value until it expires; counted.
        let outcome: Result<V> = traced!(span, self.lead(leader, move || loader(), how));
        span.finish(&outcome);
    }
}
