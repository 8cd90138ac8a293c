//! Loading through the cache: `get_or_load`, its singleflight, and its
//! background refreshes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::distributed::{Claim, Claimed};
use super::load_future::LoadFuture;
use super::stats::{Counter, Lookup};
use super::{Cache, Core};
use crate::loading::{
    catch_unwind, Answer, Endings, Freshness, Leader, Outcome, Role, Stale, Waiter,
};
use crate::observe::spans::{record_loaded_ttl, traced, Op, OpSpan};
use crate::store::{Envelope, Stored};
use crate::tag::{TagStamps, Tags};
use crate::{BoxError, Error, Result};

/// What a load's read of the store found.
pub(super) enum Read<V> {
    /// A live entry (a value, or a cached "not found").
    Live(Stored<V>),
    /// Nothing live.
    Miss(Miss<V>),
}

/// What a miss leaves its load to work with.
pub(super) struct Miss<V> {
    /// A value past its TTL that fail-safe kept: the answer if the load
    /// fails or passes the soft timeout.
    pub(super) stale: Option<Stale<V>>,
    /// Whether the load may store its result: not when the store holds
    /// bytes under the key that it could not decode (see `OnCorrupt`).
    pub(super) write: bool,
}

impl<V> Miss<V> {
    pub(super) fn nothing() -> Self {
        Miss {
            stale: None,
            write: true,
        }
    }
}

/// What a load does after its read: see [`Cache::after_read`].
pub(super) enum AfterRead<A, L, V> {
    /// A hit that answers the caller.
    Answered(A),
    /// Nothing usable: load, with this loader, from this miss.
    Load(L, Miss<V>),
}

/// How a load is run by [`Core::lead`].
pub(super) struct Lead<'a, V> {
    /// A background refresh, counted as such.
    pub(super) background: bool,
    /// Whether its result may be stored (see [`Miss::write`]).
    pub(super) write: bool,
    /// The stale value to re-arm if it fails.
    pub(super) stale: Option<&'a Stale<V>>,
    /// Its key's lock across processes (distributed singleflight).
    pub(super) claim: Claim,
    /// The tags to write its result with (see [`Cache::tagged`]).
    pub(super) tags: Option<Tags>,
}

/// How a wait for a flight ended.
pub(super) enum Waited<V> {
    /// With the flight's outcome, or `None` if its leader went away.
    Ended(Option<Outcome<V>>),
    /// At the soft timeout: serve this stale value.
    SoftTimeout(V),
}

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
    ///   load as [`Error::Loader`], a panic as [`Error::LoaderPanicked`], and
    ///   a load past the [hard timeout](super::CacheBuilder::hard_timeout)
    ///   as [`Error::LoadTimedOut`]; none is cached, so the next call loads
    ///   again. With [fail-safe](super::CacheBuilder::fail_safe), callers
    ///   get the value kept past its TTL instead, if there is one, and so
    ///   they do when the load passes the
    ///   [soft timeout](super::CacheBuilder::soft_timeout).
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
    /// - **Undecodable bytes**: when the store holds bytes under the key
    ///   that it cannot decode (another program's, under the default
    ///   [`OnCorrupt::Error`](crate::store::redis::OnCorrupt::Error)), the
    ///   loader's value is returned but not written over them; see
    ///   [`OnCorrupt`](crate::store::redis::OnCorrupt) for the rule.
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
    pub fn get_or_load<'a, F, Fut, E>(
        &'a self,
        key: &'a str,
        loader: F,
    ) -> impl Future<Output = Result<V>> + Send + 'a
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.load(
            key,
            move || async move { loader().await.map_err(Into::into) },
        )
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
    pub fn get_or_load_optional<'a, F, Fut, E>(
        &'a self,
        key: &'a str,
        loader: F,
    ) -> impl Future<Output = Result<Option<V>>> + Send + 'a
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.load(
            key,
            move || async move { loader().await.map_err(Into::into) },
        )
    }

    /// Both flavours of `get_or_load`: `A` is `V` or `Option<V>`. A hit in
    /// the store's in-process tier is answered at the first poll (see
    /// `load_future.rs`).
    fn load<'a, A, L, Fut>(&'a self, key: &'a str, loader: L) -> LoadFuture<'a, V, A, L>
    where
        A: Answer<V> + Send + 'static,
        L: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<A, BoxError>> + Send + 'static,
    {
        LoadFuture::new(self, key, loader)
    }

    /// [`load`](Self::load) with a live span: the loader runs inside it,
    /// so its own spans (the database query) are children of it.
    pub(super) async fn load_in_span<A, L, Fut>(
        &self,
        key: &str,
        loader: L,
        span: OpSpan,
        tags: Option<Tags>,
    ) -> Result<A>
    where
        A: Answer<V> + Send + 'static,
        L: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<A, BoxError>> + Send + 'static,
    {
        let result = traced!(span, self.load_in(key, loader, &span, tags));
        span.finish(&result);
        result
    }

    /// [`load`](Self::load), inside its span.
    async fn load_in<A, L, Fut>(
        &self,
        key: &str,
        loader: L,
        span: &OpSpan,
        tags: Option<Tags>,
    ) -> Result<A>
    where
        A: Answer<V> + Send + 'static,
        L: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<A, BoxError>> + Send + 'static,
    {
        let core = &self.core;
        core.check(key)?;
        let endings = core.flights.endings(key);
        // With distributed singleflight, a load of the key under way here
        // is joined without reading the store (see `distributed.rs`).
        if let Some(waiter) = core.join_load_first(key) {
            core.counters.incr(Counter::Misses);
            span.hit(false);
            let joined = Some(waiter);
            return self
                .load_missing(key, loader, endings, Miss::nothing(), joined, tags)
                .await;
        }
        let read = core.read(key).await;
        match self.after_read(key, read, loader, span, tags.as_ref()) {
            AfterRead::Answered(answer) => Ok(answer),
            AfterRead::Load(loader, miss) => {
                self.load_missing(key, loader, endings, miss, None, tags)
                    .await
            }
        }
    }

    /// What a load does with its read of the store: answers a hit (and
    /// starts a refresh if one is due), or hands the loader on to the miss
    /// path.
    #[inline(always)]
    pub(super) fn after_read<A, L, Fut>(
        &self,
        key: &str,
        read: Read<V>,
        loader: L,
        span: &OpSpan,
        tags: Option<&Tags>,
    ) -> AfterRead<A, L, V>
    where
        A: Answer<V> + Send + 'static,
        L: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<A, BoxError>> + Send + 'static,
    {
        match read {
            Read::Live(stored) => self.after_live(key, stored, loader, span, tags),
            Read::Miss(miss) => {
                self.core.counters.incr(Counter::Misses);
                span.hit(false);
                AfterRead::Load(loader, miss)
            }
        }
    }

    /// [`after_read`](Self::after_read) of a live entry.
    #[inline(always)]
    pub(super) fn after_live<A, L, Fut>(
        &self,
        key: &str,
        stored: Stored<V>,
        loader: L,
        span: &OpSpan,
        tags: Option<&Tags>,
    ) -> AfterRead<A, L, V>
    where
        A: Answer<V> + Send + 'static,
        L: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<A, BoxError>> + Send + 'static,
    {
        let core = &self.core;
        let Stored {
            envelope,
            remaining_ttl,
        } = stored;
        let lookup = Lookup::classify(Some(envelope.value()), A::ACCEPTS_NOT_FOUND);
        core.counters.incr(lookup.counter());
        span.hit(lookup.answered());
        let load_time = envelope.load_time();
        match A::from_shared(envelope.into_value()) {
            Some(answer) if lookup.answered() => {
                span.ttl(remaining_ttl);
                // Only values are refreshed: a cached "not found" is
                // short lived and simply expires.
                if lookup == Lookup::Hit
                    && core
                        .settings
                        .refresh
                        .due(remaining_ttl, load_time, &core.random)
                {
                    core.counters.incr(Counter::StaleServed);
                    self.refresh(key, loader, tags.cloned());
                }
                AfterRead::Answered(answer)
            }
            // A "not found", and this caller needs a value.
            _ => AfterRead::Load(loader, Miss::nothing()),
        }
    }

    /// The miss path of [`load`](Self::load): joins or leads the key's
    /// flight, taking over if its leader goes away. `read` is the flights'
    /// [`endings`](crate::loading::Flights::endings) noted before the miss;
    /// `joined`, a flight already joined instead of reading.
    pub(super) async fn load_missing<A, L, Fut>(
        &self,
        key: &str,
        loader: L,
        mut read: Endings,
        miss: Miss<V>,
        mut joined: Option<Waiter<V>>,
        tags: Option<Tags>,
    ) -> Result<A>
    where
        A: Answer<V> + Send + 'static,
        L: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<A, BoxError>> + Send + 'static,
    {
        let core = &self.core;
        // A flight whose outcome this caller saw but could not use.
        let mut unusable = None;
        loop {
            let role = match joined.take() {
                Some(waiter) => Role::Waiter(waiter),
                None => core.flights.join_or_lead(key, read, unusable),
            };
            let waiter = match role {
                Role::Leader(leader) => {
                    // The read above may predate the write of a flight that
                    // ended since; if so, that write is the answer.
                    if leader.must_recheck() {
                        if let Some(answer) = core.read_answer::<A>(key).await {
                            leader.publish(Ok(answer.to_shared()));
                            return Ok(answer);
                        }
                    }
                    return self.run_load(leader, loader, miss, tags).await;
                }
                Role::Waiter(waiter) => waiter,
            };
            let flight = waiter.flight();
            match core.wait(waiter, miss.stale.as_ref()).await {
                Waited::Ended(Some(Ok(shared))) => match A::from_shared(shared) {
                    Some(answer) => {
                        core.counters.incr(Counter::SingleflightWaits);
                        return Ok(answer);
                    }
                    // "Not found", and this caller needs a value: it loads
                    // for itself, replacing that flight instead of joining
                    // it again while its leader finishes up.
                    None => unusable = Some(flight),
                },
                Waited::Ended(Some(Err(error))) => {
                    core.counters.incr(Counter::SingleflightWaits);
                    return core.fall_back(error, miss.stale);
                }
                Waited::SoftTimeout(stale) => {
                    core.counters.incr(Counter::SingleflightWaits);
                    return Ok(core.serve_stale_on_timeout(stale));
                }
                // The leader went away without an outcome: take over, unless
                // the cache closed meanwhile or the answer arrived another way.
                Waited::Ended(None) => {
                    core.ensure_open()?;
                    read = core.flights.endings(key);
                    if let Some(answer) = core.read_answer::<A>(key).await {
                        return Ok(answer);
                    }
                }
            }
        }
    }

    /// Runs the load this caller leads. With a stale value and a soft
    /// timeout, the load moves into a background task, so that it can
    /// outlive this caller, who waits for it only until the soft timeout;
    /// otherwise it runs here, bound to this caller, as any load.
    async fn run_load<A, L, Fut>(
        &self,
        leader: Leader<V>,
        loader: L,
        miss: Miss<V>,
        tags: Option<Tags>,
    ) -> Result<A>
    where
        A: Answer<V> + Send + 'static,
        L: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<A, BoxError>> + Send + 'static,
    {
        let core = &self.core;
        let deadline = core
            .settings
            .timeouts
            .soft
            .and_then(|soft| leader.started().checked_add(soft));
        let (stale, deadline) = match (miss.stale, deadline) {
            (Some(stale), Some(deadline)) => (stale, deadline),
            (stale, _) => {
                let lead = Lead {
                    background: false,
                    write: miss.write,
                    stale: stale.as_ref(),
                    claim: Claim::Wait,
                    tags,
                };
                let outcome = core.lead(leader, loader, lead).await;
                return outcome.or_else(|error| core.fall_back(error, stale));
            }
        };

        let waiter = leader.subscribe();
        let task_core = Arc::clone(core);
        let fallback = stale.clone();
        let write = miss.write;
        let task = async move {
            let lead = Lead {
                background: false,
                write,
                stale: Some(&fallback),
                claim: Claim::Wait,
                tags,
            };
            // Counted and published by `lead`; its waiters, this caller
            // among them, apply the fallback themselves.
            let _: Result<A> = task_core.lead(leader, loader, lead).await;
        };
        // The loader's spans stay children of this call's span.
        #[cfg(feature = "tracing")]
        let task = tracing::Instrument::in_current_span(task);
        // Refused once closed: the task is dropped unpolled, its leader
        // with it, and the wait below ends at once.
        self.background.spawn(task);
        match tokio::time::timeout_at(deadline, waiter.outcome()).await {
            // This caller's own flight: its outcome always answers it.
            Ok(Some(Ok(shared))) => {
                Ok(A::from_shared(shared).unwrap_or(A::from_value(stale.value)))
            }
            Ok(Some(Err(error))) => core.fall_back(error, Some(stale)),
            // No load ran: the cache closed meanwhile.
            Ok(None) => {
                core.ensure_open()?;
                Ok(core.serve_stale_on_timeout(stale.value))
            }
            Err(_elapsed) => Ok(core.serve_stale_on_timeout(stale.value)),
        }
    }

    /// Refreshes `key` in the background with `loader`, unless a load of it
    /// is already under way (that one will bring the new value).
    fn refresh<A, L, Fut>(&self, key: &str, loader: L, tags: Option<Tags>)
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
            // Across processes, one refresh at a time: if another process
            // holds the key's lock, that one refreshes.
            let key = Arc::clone(leader.key());
            let Some(held) = core.try_claim(&key).await else {
                return;
            };
            // Counted and published to any waiters by `lead`; on failure the
            // old entry stays until it expires.
            let lead = Lead {
                background: true,
                write: true,
                stale: None,
                claim: Claim::Done(held),
                tags,
            };
            let outcome = core.lead(leader, loader, lead).await;
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
    async fn read(&self, key: &str) -> Read<V> {
        let found = self.shared_read(key, self.store.get(key)).await;
        self.judge(found)
    }

    /// What a store read means for a load (see [`read`](Self::read)).
    /// Always inlined: `get_or_load`'s hit path goes through it.
    #[inline(always)]
    pub(super) fn judge(&self, found: Result<Option<Stored<V>>>) -> Read<V> {
        match found {
            Ok(Some(stored)) => match self.settings.fail_safe {
                None => Read::Live(stored),
                Some(fail_safe) => match fail_safe.judge(stored) {
                    Freshness::Live(live) => Read::Live(live),
                    Freshness::Stale(stale) => Read::Miss(Miss {
                        stale: Some(stale),
                        write: true,
                    }),
                },
            },
            Ok(None) => Read::Miss(Miss::nothing()),
            Err(error) => {
                self.counters.incr(Counter::StoreErrors);
                // Bytes the store could not decode may be another program's
                // (the `OnCorrupt::Error` rule): load, but leave them alone.
                Read::Miss(Miss {
                    stale: None,
                    write: !error.is_codec(),
                })
            }
        }
    }

    /// Reads `key` for a caller wanting an `A`: `None` if there is no live
    /// entry, or only one that does not answer this caller.
    pub(super) async fn read_answer<A: Answer<V>>(&self, key: &str) -> Option<A> {
        match self.read(key).await {
            Read::Live(entry) => A::from_shared(entry.envelope.into_value()),
            Read::Miss(_) => None,
        }
    }

    /// Waits for another caller's load; with a stale value to fall back
    /// on, only until the soft timeout, counted from the load's start.
    pub(super) async fn wait(&self, waiter: Waiter<V>, stale: Option<&Stale<V>>) -> Waited<V> {
        let deadline = match (self.settings.timeouts.soft, stale) {
            (Some(soft), Some(stale)) => waiter
                .started()
                .checked_add(soft)
                .map(|deadline| (deadline, stale)),
            _ => None,
        };
        match deadline {
            Some((deadline, stale)) => {
                match tokio::time::timeout_at(deadline, waiter.outcome()).await {
                    Ok(outcome) => Waited::Ended(outcome),
                    Err(_elapsed) => Waited::SoftTimeout(stale.value.clone()),
                }
            }
            None => Waited::Ended(waiter.outcome().await),
        }
    }

    /// A failed load's answer for one caller: the stale value fail-safe
    /// kept, if any and if the failure is the load's own (error, panic,
    /// hard timeout), else the error.
    pub(super) fn fall_back<A: Answer<V>>(
        &self,
        error: Error,
        stale: Option<Stale<V>>,
    ) -> Result<A> {
        match stale {
            Some(stale) if error.is_loader() => {
                self.counters.incr(Counter::StaleServedOnFailure);
                Ok(A::from_value(stale.value))
            }
            _ => Err(error),
        }
    }

    /// A stale value as the answer of a caller whose load passed the soft
    /// timeout.
    pub(super) fn serve_stale_on_timeout<A: Answer<V>>(&self, stale: V) -> A {
        self.counters.incr(Counter::StaleServedOnTimeout);
        A::from_value(stale)
    }

    /// Runs a flight's load: calls the loader (catching a panic, abandoning
    /// it at the hard timeout), hands the outcome to the flight's waiters,
    /// and stores it unless it is an error, the key was written meanwhile,
    /// or the store held bytes it could not decode. A failure with a stale
    /// value re-arms it instead (fail-safe).
    ///
    /// If this future is dropped midway, the loader future goes first and
    /// the leader after it (locals drop in reverse order), so the key is
    /// never offered to a new loader while the old one still exists.
    pub(super) async fn lead<A, L, Fut>(
        &self,
        leader: Leader<V>,
        loader: L,
        how: Lead<'_, V>,
    ) -> Result<A>
    where
        A: Answer<V>,
        L: FnOnce() -> Fut,
        Fut: Future<Output = Result<A, BoxError>>,
    {
        // Across processes: take the key's lock, or wait for the process
        // holding it and answer with what it stored.
        let held = match how.claim {
            Claim::Wait => match self.claim::<A>(leader.key()).await {
                Claimed::Load(held) => held,
                Claimed::Answered(answer) => {
                    leader.publish(Ok(answer.to_shared()));
                    return Ok(answer);
                }
                Claimed::Refused(error) => {
                    leader.publish(Err(error.clone()));
                    return Err(error);
                }
            },
            Claim::Done(held) => held,
        };
        // The tags' versions are read before the loader runs: an
        // invalidation during the load then leaves its result invalid,
        // never a value read before the invalidation valid. Until the load
        // ends, invalidating one of its tags also keeps later callers from
        // joining it (see `TagFlights`).
        let _tag_flight = how
            .tags
            .as_ref()
            .map(|tags| self.tag_flights.enter(tags, leader.key()));
        let stamps = match &how.tags {
            Some(tags) => Some(self.store.tag_stamps(tags).await),
            None => None,
        };
        let started = Instant::now();
        let run = catch_unwind(async move { loader().await });
        // `timeout` drops the loader's future when time runs out.
        let result = match self.settings.timeouts.hard {
            Some(limit) => tokio::time::timeout(limit, run).await.map_err(|_| limit),
            None => Ok(run.await),
        };
        let load_time = started.elapsed();
        self.counters
            .record_load(how.background, matches!(result, Ok(Ok(Ok(_)))), load_time);
        if result.is_err() {
            self.counters.incr(Counter::LoadTimeouts);
        }
        if self.counters.enabled() {
            self.observer.record_load(load_time);
        }

        let key = leader.key();
        let outcome = match result {
            Ok(Ok(Ok(answer))) => Ok(answer),
            Ok(Ok(Err(source))) => Err(Error::loader(Arc::clone(key), source)),
            Ok(Err(message)) => Err(Error::panicked(Arc::clone(key), message)),
            Err(limit) => Err(Error::load_timed_out(Arc::clone(key), limit)),
        };
        match &outcome {
            Ok(answer) => {
                let shared = answer.to_shared();
                leader.publish(Ok(shared.clone()));
                if !how.write {
                    self.counters.incr(Counter::UndecodableKept);
                } else if leader.is_current() {
                    match stamps {
                        // The tags' versions could not be read: the answer
                        // stands, but an entry nothing can invalidate is
                        // not stored.
                        Some(Err(_)) => self.counters.incr(Counter::StoreErrors),
                        Some(Ok(stamps)) => {
                            self.store_loaded(key, shared, load_time, Some(stamps))
                                .await;
                        }
                        None => self.store_loaded(key, shared, load_time, None).await,
                    }
                }
            }
            Err(error) => {
                leader.publish(Err(error.clone()));
                if let Some(stale) = how.stale {
                    if how.write && leader.is_current() {
                        self.rearm(key, stale, error).await;
                    }
                }
            }
        }
        // After the store write: the other processes' waiters read it.
        held.release().await;
        outcome
    }

    /// Stores a load's answer: a value for the default TTL (plus
    /// fail-safe's `max_stale`), a "not found" for the negative TTL (not at
    /// all if that is zero), both jittered.
    async fn store_loaded(
        &self,
        key: &str,
        shared: Option<V>,
        load_time: Duration,
        tags: Option<TagStamps>,
    ) {
        let Some((mut entry, ttl)) = self.loaded_entry(shared, load_time) else {
            return;
        };
        entry.set_tags(tags);
        if self.store.set(key, entry, ttl).await.is_err() {
            // The callers have their answer; only the caching failed.
            self.counters.incr(Counter::StoreErrors);
        }
    }

    /// What a load's answer is stored as, and for how long (the TTL
    /// the store sets): `None` if it is not stored at all.
    pub(super) fn loaded_entry(
        &self,
        shared: Option<V>,
        load_time: Duration,
    ) -> Option<(Envelope<V>, Option<Duration>)> {
        let found = shared.is_some();
        let ttl = match shared {
            Some(_) => self.settings.default_ttl,
            None if self.settings.negative_ttl.is_zero() => return None,
            None => self.settings.negative_ttl,
        };
        let entry = Envelope::from_option(shared).with_load_time(load_time);
        let ttl = self.jittered(ttl);
        record_loaded_ttl(ttl);
        // "Not found" is never kept past its TTL: see `fail_safe`.
        let ttl = if found {
            self.physical_ttl(Some(ttl))
        } else {
            Some(ttl)
        };
        Some((entry, ttl))
    }

    /// Serves `stale` again for fail-safe's throttle period after its load
    /// failed with `error`, so that the failing source is asked again once
    /// per period, not by every request.
    pub(super) async fn rearm(&self, key: &str, stale: &Stale<V>, error: &Error) {
        let Some(fail_safe) = self.settings.fail_safe else {
            return;
        };
        #[cfg(feature = "tracing")]
        tracing::warn!(
            target: "cachex::fail_safe",
            cache = %self.observer.name,
            error = %error.keyless_message(),
            "load failed; serving the value kept past its TTL",
        );
        #[cfg(not(feature = "tracing"))]
        let _ = error;
        let mut entry = Envelope::found(stale.value.clone()).with_load_time(stale.load_time);
        entry.set_tags(stale.tags.clone());
        let ttl = Some(fail_safe.rearm_ttl());
        if self.store.set(key, entry, ttl).await.is_err() {
            self.counters.incr(Counter::StoreErrors);
        }
    }
}
