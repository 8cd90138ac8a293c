//! What the async layer counts, and how it counts it cheaply.

use std::time::Duration;

use crate::engine::{stripe_count, thread_id, StripedCounters};
use crate::observe::StoreStats;

/// A snapshot of a [`Cache`](crate::Cache)'s counters, and of its store's.
///
/// The cache counts what the async layer did (lookups, loads, refreshes,
/// writes) in per-thread counter stripes; [`store`](Self::store) holds what
/// the store reports per tier ([`Store::stats`](crate::Store::stats)):
/// entries, evictions by cause, tier hits and errors, breaker state.
///
/// ```
/// use cachex::{Cache, Ttl};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cache: Cache<u32> = Cache::builder().capacity(100).build();
/// cache.set("a", 1, Ttl::Default).await?;
/// cache.get("a").await?;
/// cache.get("b").await?;
/// let stats = cache.stats();
/// assert_eq!((stats.sets, stats.hits, stats.misses), (1, 1, 1));
/// let memory = stats.store.l1.unwrap();
/// assert_eq!(memory.entries, Some(1));
/// assert_eq!(memory.evictions(), 0);
/// # Ok::<(), cachex::Error>(())
/// # }).unwrap();
/// ```
///
/// Counters are read one by one without stopping writers, so a snapshot
/// taken under load is consistent per counter, not across them. With
/// [`metrics(false)`](crate::CacheBuilder::metrics) the cache's own counters
/// stay 0; the store's are its own business and still reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Lookups (by `get` or `get_or_load`) answered with a cached value.
    pub hits: u64,
    /// Lookups answered with a cached "not found".
    pub negative_hits: u64,
    /// Lookups that found nothing usable in the store.
    pub misses: u64,
    /// Loader calls made for callers (on a miss), whatever their outcome:
    /// a value or "not found", an error, a panic, or abandonment at the
    /// [hard timeout](crate::CacheBuilder::hard_timeout). Counted when the
    /// call ends; one dropped by its caller midway is not counted. The
    /// Prometheus counter `cachex_loads_total` is this number.
    pub loads: u64,
    /// Of [`loads`](Self::loads), those that failed (error, panic or hard
    /// timeout), whether or not a stale value was served instead.
    pub load_errors: u64,
    /// Background refreshes (stale-while-revalidate, XFetch), whatever
    /// their outcome. `cachex_refreshes_total` is this number.
    pub refreshes: u64,
    /// Of [`refreshes`](Self::refreshes), those that failed; the old value
    /// was kept.
    pub refresh_errors: u64,
    /// Time spent in the loader calls counted above, loads and refreshes.
    pub load_time: Duration,
    /// Loads and refreshes abandoned at the
    /// [hard timeout](crate::CacheBuilder::hard_timeout) (also counted in
    /// [`load_errors`](Self::load_errors) or
    /// [`refresh_errors`](Self::refresh_errors)).
    pub load_timeouts: u64,
    /// Hits due for a refresh (inside the stale-while-revalidate window, or
    /// picked early by XFetch), served the current value at once while one
    /// background refresh ran.
    pub stale_served: u64,
    /// Callers of `get_or_load` served a value past its TTL because the
    /// load that should have replaced it failed (error, panic or hard
    /// timeout); see [`fail_safe`](crate::CacheBuilder::fail_safe). Each
    /// such caller is counted once; the failed load itself is counted in
    /// [`load_errors`](Self::load_errors).
    pub stale_served_on_failure: u64,
    /// Callers of `get_or_load` served a value past its TTL because the
    /// load passed the [soft timeout](crate::CacheBuilder::soft_timeout);
    /// the load went on in the background.
    pub stale_served_on_timeout: u64,
    /// Calls that waited for another caller's load instead of running their
    /// own loader: the loads singleflight saved.
    pub singleflight_waits: u64,
    /// Store operations that failed, whether reported to the caller or
    /// absorbed by `get_or_load`.
    pub store_errors: u64,
    /// Loaded values not written to the store because it held bytes under
    /// the key that it could not decode, which may belong to another
    /// program (see [`OnCorrupt`](crate::store::redis::OnCorrupt)). The
    /// read itself is counted in [`store_errors`](Self::store_errors).
    pub undecodable_kept: u64,
    /// Values stored by successful [`set`](crate::Cache::set) calls, and
    /// by [`set_many`](crate::Cache::set_many) (one per distinct key);
    /// values stored by loads not included.
    pub sets: u64,
    /// Keys removed by successful [`delete`](crate::Cache::delete) and
    /// [`delete_many`](crate::Cache::delete_many) calls (one per distinct
    /// key), whether or not they were there.
    pub deletes: u64,
    /// Batch calls: `get_many`, `set_many`, `delete_many`,
    /// `get_many_or_load` and its `_optional` flavour. Their lookups count
    /// in [`hits`](Self::hits), [`misses`](Self::misses)... per distinct
    /// key, and each bulk loader call is one of [`loads`](Self::loads).
    pub batch_calls: u64,
    /// Keys passed to batch calls, duplicates included.
    pub batch_keys: u64,
    /// Loads (and refreshes) that ran holding the key's distributed lock
    /// ([`distributed_singleflight`](crate::CacheBuilder::distributed_singleflight)).
    pub lock_acquisitions: u64,
    /// Loads that found the key's lock held by another process and waited
    /// for it.
    pub lock_waits: u64,
    /// Time those waits took.
    pub lock_wait_time: Duration,
    /// Loads answered by another process's load instead of running the
    /// loader (after waiting for its lock, or found just after taking the
    /// lock): the loads the lock saved.
    pub lock_answered: u64,
    /// Loads that waited, found no value, and then took the lock and ran
    /// the loader: the holder's load failed or was dropped, or the holder
    /// died and its lease ran out.
    pub lock_takeovers: u64,
    /// Loads (and refreshes) run without the lock because it could not be
    /// reached (Redis down, too slow, or refusing).
    pub lock_fallbacks: u64,
    /// Loads refused because the lock could not be reached, in strict mode
    /// ([`distributed_strict`](crate::CacheBuilder::distributed_strict)).
    pub lock_refusals: u64,
    /// Refresh-ahead loader calls made by this process
    /// ([`refresh_ahead`](crate::CacheBuilder::refresh_ahead); also counted
    /// in [`refreshes`](Self::refreshes)).
    pub refresh_ahead: u64,
    /// Refresh-ahead turns left to another process (it refreshed the key
    /// in this interval, or holds its lock) or to a load under way here.
    pub refresh_ahead_skipped: u64,
    /// Keys this process refreshes ahead now.
    pub refresh_ahead_keys: u64,
    /// Keys no longer refreshed ahead because they were not read for
    /// `stop_after`.
    pub refresh_ahead_idle: u64,
    /// Calls that could not start refreshing a key ahead because this
    /// process already refreshes the most keys it may
    /// ([`max_refreshing_keys`](crate::CacheBuilder::max_refreshing_keys)).
    pub refresh_ahead_rejected: u64,
    /// Tags invalidated ([`Cache::invalidate_tags`](crate::Cache::invalidate_tags)
    /// counts each tag).
    pub tag_invalidations: u64,
    /// Entries written with tags (by a tagged `set`, `set_many` or load).
    pub tagged_writes: u64,
    /// What the store reports, per tier.
    pub store: StoreStats,
}

impl Stats {
    /// Lookups answered from the cache (values and "not found" alike) over
    /// all lookups, or 0 when there was none.
    pub fn hit_ratio(&self) -> f64 {
        let answered = self.hits + self.negative_hits;
        let lookups = answered + self.misses;
        if lookups == 0 {
            0.0
        } else {
            answered as f64 / lookups as f64
        }
    }

    /// Every loader call that completed: loads and refreshes, successful or
    /// not.
    pub fn loader_calls(&self) -> u64 {
        self.loads + self.refreshes
    }

    /// The mean duration of a loader call, if any completed.
    pub fn mean_load_time(&self) -> Option<Duration> {
        let calls = u32::try_from(self.loader_calls()).unwrap_or(u32::MAX);
        (calls > 0).then(|| self.load_time / calls)
    }
}

/// What one lookup found, as far as its caller is concerned: the single
/// definition by which [`Cache`](crate::Cache) and
/// [`MockCache`](crate::MockCache) count lookups and choose hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// A cached value.
    Hit,
    /// A cached "not found", for a caller that takes it as an answer.
    NegativeHit,
    /// Nothing usable: no live entry, or a cached "not found" for a caller
    /// that needs a value (`get_or_load`, which then loads).
    Miss,
}

impl Lookup {
    /// Classifies a lookup that found `entry` (`None`: nothing live;
    /// `Some(None)`: a cached "not found") for a caller that does, or does
    /// not, accept "not found" as an answer (`get` and
    /// `get_or_load_optional` do, `get_or_load` does not).
    #[inline]
    pub(crate) fn classify<V>(entry: Option<Option<&V>>, accepts_not_found: bool) -> Lookup {
        match entry {
            Some(Some(_)) => Lookup::Hit,
            Some(None) if accepts_not_found => Lookup::NegativeHit,
            _ => Lookup::Miss,
        }
    }

    /// Whether the lookup answered its caller from the cache.
    #[inline]
    pub(crate) fn answered(self) -> bool {
        self != Lookup::Miss
    }

    /// The counter it adds to.
    #[inline]
    pub(crate) fn counter(self) -> Counter {
        match self {
            Lookup::Hit => Counter::Hits,
            Lookup::NegativeHit => Counter::NegativeHits,
            Lookup::Miss => Counter::Misses,
        }
    }
}

/// One counter of [`Stats`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Counter {
    Hits,
    NegativeHits,
    Misses,
    Loads,
    LoadErrors,
    Refreshes,
    RefreshErrors,
    LoadNanos,
    LoadTimeouts,
    StaleServed,
    StaleServedOnFailure,
    StaleServedOnTimeout,
    SingleflightWaits,
    StoreErrors,
    UndecodableKept,
    Sets,
    Deletes,
    BatchCalls,
    BatchKeys,
    LockAcquisitions,
    LockWaits,
    LockWaitNanos,
    LockAnswered,
    LockTakeovers,
    LockFallbacks,
    LockRefusals,
    RefreshAhead,
    RefreshAheadSkipped,
    RefreshAheadIdle,
    RefreshAheadRejected,
    TagInvalidations,
    TaggedWrites,
}

const COUNTERS: usize = Counter::TaggedWrites as usize + 1;

/// The live counters behind [`Stats`].
///
/// Striped by thread (the engine's [`StripedCounters`]): a thread adds to a
/// stripe only it writes, so cores hitting the cache at once neither contend
/// on a cache line nor pay for locked instructions, and no count is lost; a
/// snapshot sums the stripes. `None` when metrics are off, which makes
/// counting a single branch.
pub(crate) struct Counters {
    stripes: Option<StripedCounters<COUNTERS>>,
}

impl Counters {
    pub(crate) fn new(enabled: bool) -> Self {
        let stripes = enabled.then(|| StripedCounters::new(stripe_count()));
        Counters { stripes }
    }

    /// Whether counting is on ([`metrics`](crate::CacheBuilder::metrics)).
    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        self.stripes.is_some()
    }

    #[inline]
    pub(crate) fn incr(&self, counter: Counter) {
        self.add(counter, 1);
    }

    #[inline]
    pub(crate) fn add(&self, counter: Counter, n: u64) {
        if let Some(stripes) = &self.stripes {
            stripes.add(thread_id(), counter as usize, n);
        }
    }

    /// Adds a duration to a nanosecond counter.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn add_time(&self, counter: Counter, took: Duration) {
        self.add(counter, u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records a finished loader call: every call counts as a load (or a
    /// refresh), and a failed one as an error too.
    pub(crate) fn record_load(&self, background: bool, ok: bool, took: Duration) {
        let (calls, errors) = if background {
            (Counter::Refreshes, Counter::RefreshErrors)
        } else {
            (Counter::Loads, Counter::LoadErrors)
        };
        self.incr(calls);
        if !ok {
            self.incr(errors);
        }
        self.add(
            Counter::LoadNanos,
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
        );
    }

    /// The counters, summed over the stripes (`store` left empty: the
    /// cache fills it in).
    pub(crate) fn snapshot(&self) -> Stats {
        let sums = self
            .stripes
            .as_ref()
            .map_or([0; COUNTERS], |stripes| stripes.sums());
        let get = |counter: Counter| sums[counter as usize];
        Stats {
            hits: get(Counter::Hits),
            negative_hits: get(Counter::NegativeHits),
            misses: get(Counter::Misses),
            loads: get(Counter::Loads),
            load_errors: get(Counter::LoadErrors),
            refreshes: get(Counter::Refreshes),
            refresh_errors: get(Counter::RefreshErrors),
            load_time: Duration::from_nanos(get(Counter::LoadNanos)),
            load_timeouts: get(Counter::LoadTimeouts),
            stale_served: get(Counter::StaleServed),
            stale_served_on_failure: get(Counter::StaleServedOnFailure),
            stale_served_on_timeout: get(Counter::StaleServedOnTimeout),
            singleflight_waits: get(Counter::SingleflightWaits),
            store_errors: get(Counter::StoreErrors),
            undecodable_kept: get(Counter::UndecodableKept),
            sets: get(Counter::Sets),
            deletes: get(Counter::Deletes),
            batch_calls: get(Counter::BatchCalls),
            batch_keys: get(Counter::BatchKeys),
            lock_acquisitions: get(Counter::LockAcquisitions),
            lock_waits: get(Counter::LockWaits),
            lock_wait_time: Duration::from_nanos(get(Counter::LockWaitNanos)),
            lock_answered: get(Counter::LockAnswered),
            lock_takeovers: get(Counter::LockTakeovers),
            lock_fallbacks: get(Counter::LockFallbacks),
            lock_refusals: get(Counter::LockRefusals),
            refresh_ahead: get(Counter::RefreshAhead),
            refresh_ahead_skipped: get(Counter::RefreshAheadSkipped),
            refresh_ahead_keys: 0,
            refresh_ahead_idle: get(Counter::RefreshAheadIdle),
            refresh_ahead_rejected: get(Counter::RefreshAheadRejected),
            tag_invalidations: get(Counter::TagInvalidations),
            tagged_writes: get(Counter::TaggedWrites),
            store: StoreStats::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_across_threads_and_sums() {
        let counters = Counters::new(true);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        counters.incr(Counter::Hits);
                    }
                    counters.record_load(false, true, Duration::from_millis(2));
                    counters.record_load(true, false, Duration::from_millis(1));
                });
            }
        });
        let stats = counters.snapshot();
        assert_eq!(stats.hits, 4000);
        assert_eq!((stats.loads, stats.load_errors), (4, 0));
        assert_eq!((stats.refreshes, stats.refresh_errors), (4, 4));
        assert_eq!(stats.loader_calls(), 8);
        assert_eq!(stats.load_time, Duration::from_millis(12));
        assert_eq!(stats.mean_load_time(), Some(Duration::from_micros(1500)));
    }

    #[test]
    fn lookups_are_classified_for_their_caller() {
        let value = 1;
        assert_eq!(Lookup::classify(Some(Some(&value)), false), Lookup::Hit);
        assert_eq!(
            Lookup::classify::<u8>(Some(None), true),
            Lookup::NegativeHit
        );
        assert_eq!(Lookup::classify::<u8>(Some(None), false), Lookup::Miss);
        assert_eq!(Lookup::classify::<u8>(None, true), Lookup::Miss);
        assert!(!Lookup::Miss.answered() && Lookup::NegativeHit.answered());
    }

    #[test]
    fn disabled_counts_nothing() {
        let counters = Counters::new(false);
        counters.incr(Counter::Misses);
        assert_eq!(counters.snapshot(), Stats::default());
        assert_eq!(Stats::default().hit_ratio(), 0.0);
        assert_eq!(Stats::default().mean_load_time(), None);
    }
}
