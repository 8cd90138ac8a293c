//! Loading through the cache: `get_or_load`, its singleflight, and its
//! background refreshes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::stats::Counter;
use super::{Cache, Core};
use crate::loading::{catch_unwind, Answer, Endings, Leader, Role};
use crate::observe::spans::{record_loaded_ttl, traced, Op, OpSpan};
use crate::store::{Envelope, Stored};
use crate::{BoxError, Error, Result};

impl<V> Cache<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// The value under `key`, loaded with `loader` if it is not cached.
    ///
    /// - **Singleflight**: however many callers ask for a missing key at
    ///   once, one loader runs and all of them receive its value (or its
    ///   error). Its value is stored with the default TTL and jitter.
    /// - **Cancellation**: each caller may give up on its own (drop the
    ///   future, or wrap it in [`tokio::time::timeout`]) without disturbing
    ///   the others. If the caller running the loader gives up, its load is
    ///   dropped and one of the callers still waiting takes over with its own
    ///   loader; no one is left waiting on a load that no longer runs.
    /// - **Failures**: a loader error reaches every caller waiting on that
    ///   load as [`Error::Loader`], and a panic as [`Error::LoaderPanicked`];
    ///   neither is cached, so the next call loads again.
    /// - **Refresh**: with [stale-while-revalidate](super::CacheBuilder::stale_while_revalidate)
    ///   or [XFetch](super::CacheBuilder::xfetch), a hit on a value close to
    ///   expiry returns the value at once and this call's loader
    ///   refreshes the entry in the background, once per key at a time. A
    ///   failed refresh keeps the old value until it expires.
    /// - **Not found**: a cached "not found" (written by
    ///   [`get_or_load_optional`](Self::get_or_load_optional)) is no answer
    ///   for a caller that needs a value: this call loads.
    /// - **Store failures**: a store that cannot be read counts as a miss,
    ///   and one that cannot be written leaves the value uncached; both are
    ///   counted in [`Stats::store_errors`](super::Stats::store_errors). A
    ///   cache outage thus costs database load, not availability.
    ///
    /// # The loader
    ///
    /// It is called at most once, and only if this call runs the load or a
    /// refresh. It must be `Send + 'static` because a refresh runs it in a
    /// background task after this call has returned; move into it what it
    /// needs (a pool handle, the id). Its error may be any type convertible
    /// into [`BoxError`]: every `std::error::Error + Send + Sync`, `String`,
    /// `anyhow::Error`.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use cachex::Cache;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache: Cache<String> = Cache::builder().build();
    /// let queries = Arc::new(AtomicUsize::new(0));
    ///
    /// let callers = (0..100).map(|_| {
    ///     let (cache, queries) = (cache.clone(), queries.clone());
    ///     tokio::spawn(async move {
    ///         cache
    ///             .get_or_load("config", move || async move {
    ///                 queries.fetch_add(1, Ordering::SeqCst);
    ///                 tokio::time::sleep(Duration::from_millis(20)).await; // the database
    ///                 Ok::<_, std::io::Error>("v1".to_string())
    ///             })
    ///             .await
    ///     })
    /// });
    /// for caller in callers.collect::<Vec<_>>() {
    ///     assert_eq!(caller.await.unwrap()?, "v1");
    /// }
    /// assert_eq!(queries.load(Ordering::SeqCst), 1);
    /// # Ok::<(), cachex::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn get_or_load<F, Fut, E>(&self, key: &str, loader: F) -> Result<V>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.load(
            key,
            move || async move { loader().await.map_err(Into::into) },
        )
        .await
    }

    /// Like [`get_or_load`](Self::get_or_load), for data that may not exist:
    /// the loader answers `Ok(None)` for "not found", and that answer is
    /// cached for the [negative TTL](super::CacheBuilder::negative_ttl) (with
    /// jitter), so a missing row is not fetched again on every request.
    /// Callers see it as `Ok(None)`, here and from [`get`](Self::get).
    ///
    /// ```
    /// use cachex::Cache;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache: Cache<String> = Cache::builder().build();
    /// let lookup = || async { Ok::<Option<String>, std::io::Error>(None) };
    /// assert_eq!(cache.get_or_load_optional("user:404", lookup).await?, None);
    /// // Answered from the cache this time.
    /// assert_eq!(cache.get_or_load_optional("user:404", lookup).await?, None);
    /// assert_eq!(cache.stats().negative_hits, 1);
    /// # Ok::<(), cachex::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn get_or_load_optional<F, Fut, E>(&self, key: &str, loader: F) -> Result<Option<V>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.load(
            key,
            move || async move { loader().await.map_err(Into::into) },
        )
        .await
    }

    /// Both flavours of `get_or_load`: `A` is `V` or `Option<V>`. The
    /// loader runs inside the operation's span, so its own spans (the
    /// database query) are children of it.
    async fn load<A, L, Fut>(&self, key: &str, loader: L) -> Result<A>
    where
        A: Answer<V> + Send + 'static,
        L: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<A, BoxError>> + Send + 'static,
    {
        let span = OpSpan::new(&self.core.observer, Op::GetOrLoad, Some(key));
        let result = traced!(span, self.load_in(key, loader, &span));
        span.finish(&result);
        result
    }

    /// [`load`](Self::load), inside its span.
    async fn load_in<A, L, Fut>(&self, key: &str, loader: L, span: &OpSpan) -> Result<A>
    where
        A: Answer<V> + Send + 'static,
        L: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<A, BoxError>> + Send + 'static,
    {
        let core = &self.core;
        core.check(key)?;

        let read = core.flights.endings(key);
        if let Some(Stored {
            envelope,
            remaining_ttl,
        }) = core.read(key).await
        {
            let load_time = envelope.load_time();
            let found = !envelope.is_not_found();
            if let Some(answer) = A::from_shared(envelope.into_value()) {
                span.hit(true);
                span.ttl(remaining_ttl);
                if !found {
                    core.counters.incr(Counter::NegativeHits);
                    return Ok(answer);
                }
                core.counters.incr(Counter::Hits);
                // Only values are refreshed: a cached "not found" is short
                // lived and simply expires.
                if core
                    .settings
                    .refresh
                    .due(remaining_ttl, load_time, &core.random)
                {
                    core.counters.incr(Counter::StaleServed);
                    self.refresh(key, loader);
                }
                return Ok(answer);
            }
        }
        // Nothing usable: a miss, even if a "not found" is cached and this
        // caller needs a value.
        core.counters.incr(Counter::Misses);
        span.hit(false);
        // Boxed: the miss path's state (flights, the loader's own future)
        // would otherwise make every hit build and move a much larger future.
        Box::pin(self.load_missing(key, loader, read)).await
    }

    /// The miss path of [`load`](Self::load): joins or leads the key's
    /// flight, taking over if its leader goes away. `read` is the flights'
    /// [`endings`](crate::loading::Flights::endings) noted before the miss.
    async fn load_missing<A, L, Fut>(&self, key: &str, loader: L, mut read: Endings) -> Result<A>
    where
        A: Answer<V> + Send + 'static,
        L: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<A, BoxError>> + Send + 'static,
    {
        let core = &self.core;
        // A flight whose outcome this caller saw but could not use.
        let mut unusable = None;
        loop {
            let waiter = match core.flights.join_or_lead(key, read, unusable) {
                Role::Leader(leader) => {
                    // The read above may predate the write of a flight that
                    // ended since; if so, that write is the answer.
                    if leader.must_recheck() {
                        if let Some(answer) = core.read_answer::<A>(key).await {
                            leader.publish(Ok(answer.to_shared()));
                            return Ok(answer);
                        }
                    }
                    return core.lead(leader, loader, false).await;
                }
                Role::Waiter(waiter) => waiter,
            };
            let flight = waiter.flight();
            match waiter.outcome().await {
                Some(Ok(shared)) => match A::from_shared(shared) {
                    Some(answer) => {
                        core.counters.incr(Counter::SingleflightWaits);
                        return Ok(answer);
                    }
                    // "Not found", and this caller needs a value: it loads
                    // for itself, replacing that flight instead of joining
                    // it again while its leader finishes up.
                    None => unusable = Some(flight),
                },
                Some(Err(error)) => {
                    core.counters.incr(Counter::SingleflightWaits);
                    return Err(error);
                }
                // The leader went away without an outcome: take over, unless
                // the cache closed meanwhile or the answer arrived another way.
                None => {
                    core.ensure_open()?;
                    read = core.flights.endings(key);
                    if let Some(answer) = core.read_answer::<A>(key).await {
                        return Ok(answer);
                    }
                }
            }
        }
    }

    /// Refreshes `key` in the background with `loader`, unless a load of it
    /// is already under way (that one will bring the new value).
    fn refresh<A, L, Fut>(&self, key: &str, loader: L)
    where
        A: Answer<V> + Send + 'static,
        L: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<A, BoxError>> + Send + 'static,
    {
        let Some(leader) = self.core.flights.try_lead(key) else {
            return;
        };
        let core = Arc::clone(&self.core);
        // Opened here, to follow from the call that started the refresh.
        let span = OpSpan::new(&core.observer, Op::Refresh, Some(key));
        #[cfg(feature = "tracing")]
        let live = span.live().cloned().unwrap_or_else(tracing::Span::none);
        let task = async move {
            // Counted and published to any waiters by `lead`; on failure the
            // old entry stays until it expires.
            let outcome = core.lead(leader, loader, true).await;
            span.finish(&outcome);
        };
        #[cfg(feature = "tracing")]
        let task = tracing::Instrument::instrument(task, live);
        // Refused once closed, or outside a runtime; the task is then
        // dropped unpolled, and its leader with it, which frees the key.
        self.background.spawn(task);
    }
}

impl<V> Core<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// Reads `key` for a load. A store that cannot be read is treated as a
    /// miss: the loader can still answer.
    async fn read(&self, key: &str) -> Option<Stored<V>> {
        match self.store.get(key).await {
            Ok(entry) => entry,
            Err(_) => {
                self.counters.incr(Counter::StoreErrors);
                None
            }
        }
    }

    /// Reads `key` for a caller wanting an `A`: `None` if there is no
    /// entry, or only one that does not answer this caller.
    async fn read_answer<A: Answer<V>>(&self, key: &str) -> Option<A> {
        let entry = self.read(key).await?;
        A::from_shared(entry.envelope.into_value())
    }

    /// Runs a flight's load: calls the loader (catching a panic), hands the
    /// outcome to the flight's waiters, and stores it unless it is an error
    /// or the key was written meanwhile.
    ///
    /// If this future is dropped midway, the loader future goes first and
    /// the leader after it (locals drop in reverse order), so the key is
    /// never offered to a new loader while the old one still exists.
    async fn lead<A, L, Fut>(&self, leader: Leader<V>, loader: L, background: bool) -> Result<A>
    where
        A: Answer<V>,
        L: FnOnce() -> Fut,
        Fut: Future<Output = Result<A, BoxError>>,
    {
        let started = Instant::now();
        let result = catch_unwind(async move { loader().await }).await;
        let load_time = started.elapsed();
        self.counters
            .record_load(background, matches!(result, Ok(Ok(_))), load_time);
        if self.counters.enabled() {
            self.observer.record_load(load_time);
        }

        let key = leader.key();
        let outcome = match result {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(source)) => Err(Error::loader(Arc::clone(key), source)),
            Err(message) => Err(Error::panicked(Arc::clone(key), message)),
        };
        match &outcome {
            Ok(answer) => {
                let shared = answer.to_shared();
                leader.publish(Ok(shared.clone()));
                if leader.is_current() {
                    self.store_loaded(key, shared, load_time).await;
                }
            }
            Err(error) => leader.publish(Err(error.clone())),
        }
        outcome
    }

    /// Stores a load's answer: a value for the default TTL, a "not found"
    /// for the negative TTL (not at all if that is zero), both jittered.
    async fn store_loaded(&self, key: &str, shared: Option<V>, load_time: Duration) {
        let ttl = match shared {
            Some(_) => self.settings.default_ttl,
            None if self.settings.negative_ttl.is_zero() => return,
            None => self.settings.negative_ttl,
        };
        let entry = Envelope::from_option(shared).with_load_time(load_time);
        let ttl = self.jittered(ttl);
        record_loaded_ttl(ttl);
        let ttl = Some(ttl);
        if self.store.set(key, entry, ttl).await.is_err() {
            // The callers have their answer; only the caching failed.
            self.counters.incr(Counter::StoreErrors);
        }
    }
}
