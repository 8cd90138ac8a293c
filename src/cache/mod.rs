//! The async cache handle users program against.
//!
//! Module map: [`Cache`] and its plain operations (this file), loading
//! through it (`load.rs`), the futures of `get` and `get_or_load`, which
//! answer a hit at their first poll (`get_future.rs`, `load_future.rs`),
//! building it (`builder.rs`), writing with tags and invalidating them
//! (`tagged.rs`), its counters (`stats.rs`), and the
//! object-safe interface it shares with [`MockCache`](crate::MockCache)
//! (`api.rs`).

mod api;
mod batch;
mod builder;
mod distributed;
mod get_future;
mod load;
mod load_future;
mod load_many;
mod refresh_ahead;
mod stats;
mod tagged;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use api::{AsyncCache, AsyncCacheExt, BoxFuture, BoxLoader, BulkLoader};
pub use builder::{
    CacheBuilder, DEFAULT_FAIL_SAFE_THROTTLE, DEFAULT_JITTER, DEFAULT_NEGATIVE_TTL, DEFAULT_TTL,
};
pub use refresh_ahead::DEFAULT_MAX_REFRESHING_KEYS;
pub use stats::Stats;
pub use tagged::Tagged;

pub(crate) use api::bulk;
pub(crate) use batch::Keys;
pub(crate) use stats::Lookup;
use stats::{Counter, Counters};

use crate::loading::{
    jittered, Background, FailSafe, Flights, Freshness, LoadTimeouts, Random, RefreshPolicy,
};
use crate::observe::spans::{traced, Op, OpSpan};
use crate::observe::{Coordination, Observer, StatsSource};
use crate::store::{Envelope, LocalTier, Store, Stored};
use crate::tag::Tags;
use crate::{Error, Result, Ttl};
use get_future::GetFuture;

/// The longest key accepted, in bytes. Longer keys are refused with
/// [`Error::KeyTooLong`]: a key that long is almost certainly a bug (a
/// serialized object used as a key), and remote stores penalise long keys.
pub const MAX_KEY_LEN: usize = 4096;

/// The most keys one batch call takes (`get_many`, `set_many`,
/// `delete_many`, `get_many_or_load`); longer batches are refused with
/// [`Error::BatchTooLarge`] before anything is done. Split larger work into
/// batches of this size or less. (A remote store splits a batch further,
/// into commands of at most 1,000 keys, sent together.)
pub const MAX_BATCH: usize = 10_000;

/// An async cache of `V`s under string keys, over any [`Store`].
///
/// - **Lookups**: [`get`](Self::get) answers `Ok(None)` on a miss; a miss is
///   not an error.
/// - **Loading**: [`get_or_load`](Self::get_or_load) and
///   [`get_or_load_optional`](Self::get_or_load_optional) call a loader on a
///   miss, at most once per key at a time however many callers ask
///   (singleflight), cache the answer (a "not found" too, for the negative
///   TTL), and can refresh entries in the background before they expire.
/// - **Expiry**: the TTLs the cache chooses itself (the default and the
///   negative TTL) are jittered, shortened by up to the jitter fraction, so
///   entries written together do not expire together. TTLs passed explicitly
///   are exact.
/// - **Failures**: with [fail-safe](CacheBuilder::fail_safe), a value past
///   its TTL is kept for a while and answers `get_or_load` when the load
///   that should replace it fails or is slow ([soft](CacheBuilder::soft_timeout)
///   and [hard](CacheBuilder::hard_timeout) timeouts).
/// - **Shutdown**: [`close`](Self::close) stops background work; later calls
///   fail with [`Error::Closed`].
///
/// Cheap to clone: clones share one cache. Dropping the last clone aborts
/// any background refresh still running.
///
/// ```
/// use std::time::Duration;
/// use cachex::{Cache, Ttl};
///
/// #[derive(Clone, Debug, PartialEq)]
/// struct User { name: String }
///
/// async fn fetch_user(id: u64) -> Result<Option<User>, std::io::Error> {
///     Ok((id == 7).then(|| User { name: "alice".into() }))
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cache: Cache<User> = Cache::builder()
///     .default_ttl(Duration::from_secs(60))
///     .stale_while_revalidate(Duration::from_secs(10))
///     .build();
///
/// let alice = cache.get_or_load_optional("user:7", || fetch_user(7)).await?;
/// assert_eq!(alice.unwrap().name, "alice");
/// // Absent rows are cached too, as "not found".
/// assert_eq!(cache.get_or_load_optional("user:8", || fetch_user(8)).await?, None);
///
/// cache.set("user:9", User { name: "bob".into() }, Ttl::After(Duration::from_secs(5))).await?;
/// assert!(cache.get("user:9").await?.is_some());
///
/// cache.close().await;
/// assert!(cache.get("user:7").await.unwrap_err().is_closed());
/// # Ok::<(), cachex::Error>(())
/// # }).unwrap();
/// ```
pub struct Cache<V> {
    core: Arc<Core<V>>,
    /// Kept apart from `core`, which background tasks hold: when the last
    /// handle goes, this goes, and with it the tasks.
    background: Arc<Background>,
}

/// Everything a background refresh needs from its cache.
struct Core<V> {
    store: Arc<dyn Store<V>>,
    /// The store's in-process tier, read directly on the hit path.
    local: Option<LocalTier<V>>,
    flights: Arc<Flights<V>>,
    settings: Settings,
    random: Random,
    counters: Counters,
    observer: Observer,
    closed: AtomicBool,
    /// Distributed singleflight's lock, if on.
    distributed: Option<distributed::Distributed<V>>,
    /// The keys refreshed ahead, if refresh-ahead is on.
    refresh_ahead: Option<refresh_ahead::RefreshAhead<V>>,
    /// The tagged loads under way, by tag.
    tag_flights: tagged::TagFlights,
}

/// The builder's choices, fixed for the cache's life.
#[derive(Clone, Copy, Debug)]
struct Settings {
    default_ttl: Duration,
    jitter: f64,
    negative_ttl: Duration,
    refresh: RefreshPolicy,
    /// `None`: fail-safe off.
    fail_safe: Option<FailSafe>,
    timeouts: LoadTimeouts,
}

impl<V> Cache<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// A builder, starting from the defaults: an in-memory store of 10,000
    /// entries, a 5-minute TTL with 10% jitter, a 30-second negative TTL, no
    /// background refresh, metrics on.
    pub fn builder() -> CacheBuilder<V> {
        CacheBuilder::default()
    }

    /// The value under `key`: `Ok(None)` when there is none, or when a
    /// "not found" is cached for it. A value past its TTL kept by
    /// [fail-safe](CacheBuilder::fail_safe) is not returned.
    ///
    /// A hit in the store's in-process tier (memory, or a hybrid store's
    /// L1) is answered at the future's first poll.
    pub fn get<'a>(&'a self, key: &'a str) -> impl Future<Output = Result<Option<V>>> + Send + 'a {
        GetFuture::new(&self.core, key)
    }

    /// Stores `value` under `key` for `ttl`: [`Ttl::Default`] is the cache's
    /// default TTL with jitter, [`Ttl::Never`] never expires (the store may
    /// still evict it), [`Ttl::After`] is exact.
    ///
    /// A load of `key` already under way is not allowed to overwrite this
    /// value: it may have read the data this write replaces. It still
    /// answers the callers waiting for it.
    pub async fn set(&self, key: &str, value: V, ttl: Ttl) -> Result<()> {
        let span = OpSpan::new(&self.core.observer, Op::Set, Some(key));
        let result = traced!(span, self.core.set(key, value, ttl, &span, None));
        span.finish(&result);
        result
    }

    /// Removes `key`'s entry (a value or a cached "not found"); answers
    /// whether there was one. A load of `key` under way will not store its
    /// result, as with [`set`](Self::set).
    pub async fn delete(&self, key: &str) -> Result<bool> {
        let span = OpSpan::new(&self.core.observer, Op::Delete, Some(key));
        let result = traced!(span, self.core.delete(key));
        span.finish(&result);
        result
    }

    /// Removes every entry. Loads under way will not store their results.
    pub async fn clear(&self) -> Result<()> {
        let span = OpSpan::new(&self.core.observer, Op::Clear, None);
        let result = traced!(span, self.core.clear());
        span.finish(&result);
        result
    }

    /// The remaining time-to-live of `key`'s entry: `None` if there is no
    /// entry, `Some(None)` if it never expires. With
    /// [fail-safe](CacheBuilder::fail_safe), the time callers see: a value
    /// kept past its TTL counts as no entry.
    pub async fn remaining_ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        let core = &self.core;
        core.check(key)?;
        let ttl = match core.settings.fail_safe {
            None => core.store.remaining_ttl(key).await,
            // Only the entry tells whether the extra time applies.
            Some(fail_safe) => core.store.get(key).await.map(|stored| {
                stored.and_then(|stored| match fail_safe.judge(stored) {
                    Freshness::Live(live) => Some(live.remaining_ttl),
                    Freshness::Stale(_) => None,
                })
            }),
        };
        ttl.inspect_err(|_| core.counters.incr(Counter::StoreErrors))
    }

    /// A snapshot of the cache's counters (all zero with
    /// [`metrics(false)`](CacheBuilder::metrics)) and of its store's, per
    /// tier: evictions by cause, entries, tier errors. See [`Stats`].
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    /// The cache's [name](CacheBuilder::name), as its metrics and spans
    /// show it.
    pub fn name(&self) -> &str {
        &self.core.observer.name
    }

    /// The cache as metrics and the stats log see it: its stats and its
    /// name, without its value type.
    #[cfg(feature = "prometheus")]
    pub(crate) fn stats_source(&self) -> Arc<dyn StatsSource> {
        self.core.clone()
    }

    /// Closes the cache: later calls fail with [`Error::Closed`], and
    /// background refreshes are aborted; this returns once they are gone.
    /// Calls already under way finish normally. Closing twice is harmless.
    ///
    /// The entries themselves are left to the store (a shared remote store
    /// keeps them for other processes).
    pub async fn close(&self) {
        self.core.closed.store(true, Ordering::Release);
        self.background.shutdown().await;
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.core.closed.load(Ordering::Acquire)
    }
}

impl<V> Core<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// [`Cache::get`] with a live span: the store is called inside it.
    async fn get_in_span(&self, key: &str, span: OpSpan) -> Result<Option<V>> {
        let result = traced!(span, self.get(key, &span));
        span.finish(&result);
        result
    }

    async fn get(&self, key: &str, span: &OpSpan) -> Result<Option<V>> {
        self.check(key)?;
        // The remaining TTL is not needed for the answer, and a remote store
        // may charge for it (Redis: a second command), so it is read only
        // when a live span will record it, or when fail-safe needs it to
        // tell a live value from one kept past its TTL.
        let entry = if span.live().is_some() || self.settings.fail_safe.is_some() {
            let stored = self.store.get(key).await;
            self.live_entry(stored, span)
        } else {
            self.store.get_entry(key).await
        };
        self.answer_get(entry, span)
    }

    /// What `get` makes of an entry read with its TTL: the envelope, unless
    /// fail-safe keeps it past its TTL (then nothing); the remaining TTL
    /// goes to the span.
    #[inline]
    fn live_entry(
        &self,
        stored: Result<Option<Stored<V>>>,
        span: &OpSpan,
    ) -> Result<Option<Envelope<V>>> {
        stored.map(|stored| {
            self.live(stored?).map(|live| {
                span.ttl(live.remaining_ttl);
                live.envelope
            })
        })
    }

    /// `get`'s answer from what the store found, counted.
    #[inline(always)]
    fn answer_get(&self, entry: Result<Option<Envelope<V>>>, span: &OpSpan) -> Result<Option<V>> {
        let entry = entry.inspect_err(|_| self.counters.incr(Counter::StoreErrors))?;
        // `get` answers a cached "not found" as `Ok(None)`: a negative hit.
        let lookup = Lookup::classify(entry.as_ref().map(Envelope::value), true);
        Ok(self.answer_hit(lookup, entry.and_then(Envelope::into_value), span))
    }

    /// `get`'s answer from a lookup classified as `lookup` (by
    /// [`Lookup::classify`] with "not found" accepted) and the value
    /// found, counted.
    #[inline(always)]
    fn answer_hit(&self, lookup: Lookup, value: Option<V>, span: &OpSpan) -> Option<V> {
        span.hit(lookup.answered());
        self.counters.incr(lookup.counter());
        value
    }

    async fn set(
        &self,
        key: &str,
        value: V,
        ttl: Ttl,
        span: &OpSpan,
        tags: Option<&Tags>,
    ) -> Result<()> {
        self.check(key)?;
        let mut entry = Envelope::found(value);
        if let Some(tags) = tags {
            entry = entry.with_tags(self.tag_stamps(tags).await?);
        }
        let ttl = self.resolve(ttl);
        span.ttl(ttl);
        self.flights.forget(key);
        let ttl = self.physical_ttl(ttl);
        let written = self.store.set(key, entry, ttl).await;
        self.count_write(written, Counter::Sets)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.check(key)?;
        self.flights.forget(key);
        let deleted = self.store.delete(key).await;
        self.count_write(deleted, Counter::Deletes)
    }

    async fn clear(&self) -> Result<()> {
        self.ensure_open()?;
        self.flights.forget_all();
        let cleared = self.store.clear().await;
        cleared.inspect_err(|_| self.counters.incr(Counter::StoreErrors))
    }

    /// Counts a write's outcome: `done` if it worked, a store error if not.
    fn count_write<T>(&self, result: Result<T>, done: Counter) -> Result<T> {
        let counter = if result.is_ok() {
            done
        } else {
            Counter::StoreErrors
        };
        self.counters.incr(counter);
        result
    }
}

impl<V> StatsSource for Core<V>
where
    V: Clone + Send + Sync + 'static,
{
    fn stats(&self) -> Stats {
        let mut stats = self.counters.snapshot();
        stats.store = self.store.stats();
        if let Some(ahead) = &self.refresh_ahead {
            stats.refresh_ahead_keys = ahead.len() as u64;
        }
        stats
    }

    fn observer(&self) -> &Observer {
        &self.observer
    }

    fn coordination(&self) -> Coordination {
        Coordination {
            distributed: self.distributed.is_some(),
            refresh_ahead: self.refresh_ahead.is_some(),
        }
    }
}

impl<V> Core<V> {
    fn ensure_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Refuses calls on a closed cache and keys the stores must not see.
    #[inline]
    fn check(&self, key: &str) -> Result<()> {
        self.ensure_open()?;
        check_key(key)
    }

    /// A stored entry as callers see it: `None` if fail-safe keeps it past
    /// its TTL, else with its remaining TTL as callers see it.
    #[inline]
    fn live(&self, stored: Stored<V>) -> Option<Stored<V>> {
        match self.settings.fail_safe {
            None => Some(stored),
            Some(fail_safe) => match fail_safe.judge(stored) {
                Freshness::Live(live) => Some(live),
                Freshness::Stale(_) => None,
            },
        }
    }

    /// The TTL to store a value for when callers should see `ttl`: longer
    /// by fail-safe's `max_stale` when it is on.
    #[inline]
    fn physical_ttl(&self, ttl: Option<Duration>) -> Option<Duration> {
        match &self.settings.fail_safe {
            None => ttl,
            Some(fail_safe) => fail_safe.physical_ttl(ttl),
        }
    }

    /// The explicit TTL a write with `ttl` gets (`None`: never expires).
    fn resolve(&self, ttl: Ttl) -> Option<Duration> {
        match ttl {
            Ttl::Default => Some(self.jittered(self.settings.default_ttl)),
            Ttl::Never => None,
            Ttl::After(ttl) => Some(ttl),
        }
    }

    fn jittered(&self, ttl: Duration) -> Duration {
        jittered(ttl, self.settings.jitter, self.random.unit())
    }
}

/// Refuses the keys no store should see: empty, or over [`MAX_KEY_LEN`].
#[inline]
pub(crate) fn check_key(key: &str) -> Result<()> {
    // One comparison on the way through: an empty key wraps to the top.
    if key.len().wrapping_sub(1) < MAX_KEY_LEN {
        return Ok(());
    }
    Err(refuse_key(key.len()))
}

#[cold]
fn refuse_key(len: usize) -> Error {
    if len == 0 {
        Error::EmptyKey
    } else {
        Error::KeyTooLong {
            len,
            max: MAX_KEY_LEN,
        }
    }
}

impl<V> Clone for Cache<V> {
    fn clone(&self) -> Self {
        Cache {
            core: Arc::clone(&self.core),
            background: Arc::clone(&self.background),
        }
    }
}

impl<V> fmt::Debug for Cache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.core.observer.name)
            .field("settings", &self.core.settings)
            .field("closed", &self.core.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
