//! Loading in batches: `get_many_or_load`, one bulk loader call for the
//! keys nobody is loading, with singleflight per key shared with
//! `get_or_load`.
//!
//! # How a batch runs
//!
//! 1. One store read for every distinct key (`Store::get_many`). Live
//!    entries answer; the ones due for a refresh (stale-while-revalidate,
//!    XFetch) are refreshed together by one background bulk call.
//! 2. Each missing key joins its flight in the singleflight table, or
//!    leads a new one: the same table `get_or_load` uses, so a key is
//!    loaded once however many batches and single calls want it.
//! 3. The bulk loader is called once with the keys this batch leads, while
//!    the batch waits for the flights others lead. Both run together, so
//!    two batches each waiting for a key the other leads cannot deadlock.
//! 4. The loader's answers are published to each key's waiters, then
//!    written with one `Store::set_many`; keys it did not return are
//!    "not found" for the negative TTL.
//! 5. A flight whose leader went away (its caller dropped it) is taken
//!    over: the key is read again and, if still missing, led by this batch
//!    in another round with another loader call.
//!
//! Dropping the batch drops its loader call and then its leaders, which
//! releases their keys to their waiters (who take over), as for
//! `get_or_load`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use super::api::{bulk, BulkLoader};
use super::batch::Keys;
use super::load::{Miss, Read, Waited};
use super::stats::{Counter, Lookup};
use super::{Cache, Core};
use crate::error::SharedSource;
use crate::loading::{catch_unwind, Endings, Leader, Outcome, Role};
use crate::observe::spans::{traced, Op, OpSpan};
use crate::store::Write;
use crate::tag::Tags;
use crate::{BoxError, Error, Result};

/// A key this batch leads the load of.
struct Led<V> {
    /// Its index among the batch's distinct keys.
    index: usize,
    leader: Leader<V>,
    miss: Miss<V>,
}

impl<V> Cache<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// The values under `keys`, in the same order, loading the missing
    /// ones with **one** call of `loader`; `None` where a key does not
    /// exist.
    ///
    /// - **The bulk loader** gets the keys that are neither cached nor
    ///   being loaded by another caller (each once), and returns what it
    ///   found as `(key, value)` pairs (a `HashMap`, a `Vec`...). Keys it
    ///   does not return are cached as "not found" for the
    ///   [negative TTL](super::CacheBuilder::negative_ttl) (with jitter),
    ///   so sparse lists do not reach the database again, and answered
    ///   `None`. Keys it returns that it was not asked for are ignored,
    ///   never cached. Values are cached for the default TTL (with
    ///   jitter), written with one store call (one pipeline on Redis).
    /// - **Singleflight per key**, shared with
    ///   [`get_or_load`](Self::get_or_load): a key already being loaded,
    ///   by a single call or another batch, is awaited rather than loaded
    ///   again, so overlapping batches load each key once in total. If
    ///   that load's caller gives up, this batch takes the key over (one
    ///   more loader call, with the keys taken over).
    /// - **Cancellation**: dropping the call drops its loader call; callers
    ///   waiting for its keys take them over with their own loaders.
    /// - **Failures**: a loader error or panic, or the
    ///   [hard timeout](super::CacheBuilder::hard_timeout), fails exactly
    ///   the keys it was asked for: this call, and every caller waiting for
    ///   one of those keys, gets the error (or, with
    ///   [fail-safe](super::CacheBuilder::fail_safe), the stale value kept
    ///   for the key); nothing is cached. Other keys' loads are unaffected.
    /// - **Refresh**: entries close to expiry (stale-while-revalidate,
    ///   XFetch) are answered at once, and all of a batch's due keys are
    ///   refreshed together by one background call of `loader`. That is
    ///   why the loader is a `Fn`, shareable (`Send + Sync + 'static`).
    /// - **Limits** as for [`get_many`](Self::get_many): at most
    ///   [`MAX_BATCH`](crate::MAX_BATCH) keys, one invalid key fails the
    ///   call before anything is read. A store that cannot be read or
    ///   written counts as a miss, or leaves values uncached, as for
    ///   `get_or_load`.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use cachex::Cache;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache: Cache<String> = Cache::builder().build();
    /// // The database: one query for any number of ids.
    /// let load = |ids: Vec<String>| async move {
    ///     let rows: HashMap<String, String> = ids
    ///         .into_iter()
    ///         .filter(|id| id != "user:404")
    ///         .map(|id| (id.clone(), format!("name of {id}")))
    ///         .collect();
    ///     Ok::<_, std::io::Error>(rows)
    /// };
    /// let page = cache.get_many_or_load(&["user:1", "user:404", "user:2"], load).await?;
    /// assert_eq!(page[0].as_deref(), Some("name of user:1"));
    /// assert_eq!(page[1], None); // cached as "not found"
    /// let again = cache.get_many_or_load(&["user:1", "user:404"], load).await?;
    /// assert_eq!(cache.stats().loads, 1);
    /// # Ok::<(), cachex::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn get_many_or_load<K, F, Fut, I, E>(
        &self,
        keys: &[K],
        loader: F,
    ) -> Result<Vec<Option<V>>>
    where
        K: AsRef<str>,
        F: Fn(Vec<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<I, E>> + Send + 'static,
        I: IntoIterator<Item = (String, V)>,
        E: Into<BoxError>,
    {
        self.load_many(keys, bulk(loader, |value| Some(value)), None)
            .await
    }

    /// Like [`get_many_or_load`](Self::get_many_or_load), with a loader
    /// that may also say "not found" explicitly: it returns
    /// `(key, Option<value>)` pairs, such as the ids it was given zipped
    /// with the rows of a query. `None`, like a key not returned at all,
    /// is cached as "not found" for the negative TTL.
    pub async fn get_many_or_load_optional<K, F, Fut, I, E>(
        &self,
        keys: &[K],
        loader: F,
    ) -> Result<Vec<Option<V>>>
    where
        K: AsRef<str>,
        F: Fn(Vec<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<I, E>> + Send + 'static,
        I: IntoIterator<Item = (String, Option<V>)>,
        E: Into<BoxError>,
    {
        self.load_many(keys, bulk(loader, |value| value), None)
            .await
    }

    /// Both flavours, with the loader's type erased.
    pub(crate) async fn load_many<K: AsRef<str>>(
        &self,
        keys: &[K],
        loader: BulkLoader<V>,
        tags: Option<&Tags>,
    ) -> Result<Vec<Option<V>>> {
        let span = OpSpan::new(&self.core.observer, Op::GetManyOrLoad, None);
        span.keys(keys.len());
        let result = traced!(span, self.load_many_in(keys, loader, &span, tags));
        span.finish(&result);
        result
    }

    async fn load_many_in<K: AsRef<str>>(
        &self,
        keys: &[K],
        loader: BulkLoader<V>,
        span: &OpSpan,
        tags: Option<&Tags>,
    ) -> Result<Vec<Option<V>>> {
        let core = &self.core;
        core.ensure_open()?;
        let keys = Keys::new(keys)?;
        if keys.unique.is_empty() {
            return Ok(Vec::new());
        }
        core.count_batch(keys.positions.len());
        let unique = &keys.unique;
        let mut answers: Vec<Option<Option<V>>> = vec![None; unique.len()];

        let mut endings: Vec<Endings> = unique.iter().map(|k| core.flights.endings(k)).collect();
        let reads = core.read_many(unique).await;
        let mut missing = Vec::new();
        let mut due = Vec::new();
        let mut hits = 0;
        for (index, read) in reads.into_iter().enumerate() {
            match read {
                Read::Live(stored) => {
                    let lookup = Lookup::classify(Some(stored.envelope.value()), true);
                    core.counters.incr(lookup.counter());
                    hits += 1;
                    let load_time = stored.envelope.load_time();
                    if lookup == Lookup::Hit
                        && core
                            .settings
                            .refresh
                            .due(stored.remaining_ttl, load_time, &core.random)
                    {
                        core.counters.incr(Counter::StaleServed);
                        due.push(unique[index]);
                    }
                    answers[index] = Some(stored.envelope.into_value());
                }
                Read::Miss(miss) => {
                    core.counters.incr(Counter::Misses);
                    missing.push((index, miss));
                }
            }
        }
        span.batch_hits(hits);
        if !due.is_empty() {
            self.refresh_many(&due, Arc::clone(&loader), tags.cloned());
        }

        let mut first_error = None;
        while !missing.is_empty() {
            let mut led = Vec::new();
            let mut waiting = Vec::new();
            for (index, miss) in missing.drain(..) {
                match core
                    .flights
                    .join_or_lead(unique[index], endings[index], None)
                {
                    Role::Leader(leader) => led.push(Led {
                        index,
                        leader,
                        miss,
                    }),
                    Role::Waiter(waiter) => waiting.push((index, waiter, miss)),
                }
            }
            // A flight that ended since the read may have written what
            // these leaders are about to load (see singleflight.rs).
            let rechecks: Vec<&str> = led
                .iter()
                .filter(|one| one.leader.must_recheck())
                .map(|one| unique[one.index])
                .collect();
            if !rechecks.is_empty() {
                let mut reads = core.read_many(&rechecks).await.into_iter();
                led.retain_mut(|one| {
                    if !one.leader.must_recheck() {
                        return true;
                    }
                    match reads.next() {
                        Some(Read::Live(stored)) => {
                            let value = stored.envelope.into_value();
                            one.leader.publish(Ok(value.clone()));
                            answers[one.index] = Some(value);
                            false
                        }
                        _ => true,
                    }
                });
            }

            let load = core.lead_many(led, &loader, false, tags);
            let waits = join_all(waiting.into_iter().map(|(index, waiter, miss)| async move {
                let waited = core.wait(waiter, miss.stale.as_ref()).await;
                (index, waited, miss)
            }));
            let (loaded, waited) = tokio::join!(load, waits);

            for (index, outcome, miss) in loaded {
                match outcome {
                    Ok(value) => answers[index] = Some(value),
                    Err(error) => match core.fall_back::<Option<V>>(error, miss.stale) {
                        Ok(stale) => answers[index] = Some(stale),
                        Err(error) => {
                            first_error.get_or_insert(error);
                        }
                    },
                }
            }
            let mut orphans = Vec::new();
            for (index, waited, miss) in waited {
                match waited {
                    Waited::Ended(Some(Ok(shared))) => {
                        core.counters.incr(Counter::SingleflightWaits);
                        answers[index] = Some(shared);
                    }
                    Waited::Ended(Some(Err(error))) => {
                        core.counters.incr(Counter::SingleflightWaits);
                        match core.fall_back::<Option<V>>(error, miss.stale) {
                            Ok(stale) => answers[index] = Some(stale),
                            Err(error) => {
                                first_error.get_or_insert(error);
                            }
                        }
                    }
                    Waited::SoftTimeout(stale) => {
                        core.counters.incr(Counter::SingleflightWaits);
                        answers[index] = Some(core.serve_stale_on_timeout(stale));
                    }
                    // Its leader went away: take the key over, unless it
                    // was written meanwhile.
                    Waited::Ended(None) => orphans.push(index),
                }
            }
            if !orphans.is_empty() {
                core.ensure_open()?;
                let orphan_keys: Vec<&str> = orphans.iter().map(|&i| unique[i]).collect();
                for &index in &orphans {
                    endings[index] = core.flights.endings(unique[index]);
                }
                let reads = core.read_many(&orphan_keys).await;
                for (index, read) in orphans.into_iter().zip(reads) {
                    match read {
                        Read::Live(stored) => answers[index] = Some(stored.envelope.into_value()),
                        Read::Miss(miss) => missing.push((index, miss)),
                    }
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        let answers = answers.into_iter().map(Option::flatten).collect();
        Ok(keys.spread(answers))
    }

    /// Refreshes `keys` in the background with one call of `loader`,
    /// leaving out those already being loaded.
    fn refresh_many(&self, keys: &[&str], loader: BulkLoader<V>, tags: Option<Tags>) {
        let leaders: Vec<Led<V>> = keys
            .iter()
            .filter_map(|key| self.core.flights.try_lead(key))
            .enumerate()
            .map(|(index, leader)| Led {
                index,
                leader,
                miss: Miss::nothing(),
            })
            .collect();
        if leaders.is_empty() {
            return;
        }
        let core = Arc::clone(&self.core);
        let span = OpSpan::new(&core.observer, Op::Refresh, None);
        span.keys(leaders.len());
        #[cfg(feature = "tracing")]
        let live = span.live().cloned().unwrap_or_else(tracing::Span::none);
        let task = async move {
            let outcomes = core.lead_many(leaders, &loader, true, tags.as_ref()).await;
            let failed = outcomes
                .into_iter()
                .find_map(|(_, outcome, _)| outcome.err());
            span.finish(&failed.map_or(Ok(()), Err));
        };
        #[cfg(feature = "tracing")]
        let task = tracing::Instrument::instrument(task, live);
        // Refused once closed: the task is dropped unpolled, and its
        // leaders with it, which frees the keys.
        self.background.spawn(task);
    }
}

impl<V> Core<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// Reads `keys` for a load, with one store call; a batch that cannot be
    /// read is all misses.
    async fn read_many(&self, keys: &[&str]) -> Vec<Read<V>> {
        match self.store.get_many(keys).await {
            Ok(found) => found.into_iter().map(|one| self.judge(one)).collect(),
            Err(_) => {
                self.counters.incr(Counter::StoreErrors);
                keys.iter().map(|_| Read::Miss(Miss::nothing())).collect()
            }
        }
    }

    /// Runs the bulk load of the keys `led`: one loader call (catching a
    /// panic, abandoned at the hard timeout), each key's outcome published
    /// to its waiters, then the values and "not found"s written with one
    /// store call. Answers each key's outcome.
    ///
    /// If this future is dropped midway, the loader's future goes first
    /// and the leaders after it (locals drop before arguments), so a key is
    /// never offered to a new loader while the old one still runs.
    async fn lead_many(
        &self,
        led: Vec<Led<V>>,
        loader: &BulkLoader<V>,
        background: bool,
        tags: Option<&Tags>,
    ) -> Vec<Done<V>> {
        if led.is_empty() {
            return Vec::new();
        }
        let keys: Vec<String> = led.iter().map(|one| one.leader.key().to_string()).collect();
        // As for a single load (see `Core::lead`): the tags' versions are
        // read before the loader runs.
        let _tag_flights: Vec<_> = tags
            .into_iter()
            .flat_map(|tags| {
                led.iter()
                    .map(|one| self.tag_flights.enter(tags, one.leader.key()))
            })
            .collect();
        let stamps = match tags {
            Some(tags) => Some(self.store.tag_stamps(tags).await),
            None => None,
        };
        let started = Instant::now();
        let run = catch_unwind(async move { loader(keys).await.map_err(SharedSource::from) });
        let result = match self.settings.timeouts.hard {
            Some(limit) => tokio::time::timeout(limit, run).await.map_err(|_| limit),
            None => Ok(run.await),
        };
        let load_time = started.elapsed();
        self.counters
            .record_load(background, matches!(result, Ok(Ok(Ok(_)))), load_time);
        if result.is_err() {
            self.counters.incr(Counter::LoadTimeouts);
        }
        if self.counters.enabled() {
            self.observer.record_load(load_time);
        }

        let mut found = match result {
            Ok(Ok(Ok(found))) => found,
            failed => return self.fail_many(led, failed).await,
        };
        let mut outcomes = Vec::with_capacity(led.len());
        let mut writes = Vec::with_capacity(led.len());
        for one in &led {
            let key = one.leader.key();
            let value = found.remove(&**key).flatten();
            one.leader.publish(Ok(value.clone()));
            if !one.miss.write {
                self.counters.incr(Counter::UndecodableKept);
            } else if one.leader.is_current() {
                if let Some((mut entry, ttl)) = self.loaded_entry(value.clone(), load_time) {
                    match &stamps {
                        // The tags' versions could not be read: nothing is
                        // stored (see `Core::lead`).
                        Some(Err(_)) => {}
                        Some(Ok(stamps)) => {
                            entry.set_tags(Some(stamps.clone()));
                            writes.push(Write { key, entry, ttl });
                        }
                        None => writes.push(Write { key, entry, ttl }),
                    }
                }
            }
            outcomes.push(value);
        }
        if let Some(Err(_)) = &stamps {
            self.counters.incr(Counter::StoreErrors);
        }
        if !writes.is_empty() && self.store.set_many(writes).await.is_err() {
            // The callers have their answers; only the caching failed.
            self.counters.incr(Counter::StoreErrors);
        }
        // The leaders go only now, after the write: see singleflight.rs.
        led.into_iter()
            .zip(outcomes)
            .map(|(one, value)| (one.index, Ok(value), one.miss))
            .collect()
    }

    /// A failed bulk load: every key it was asked for fails with the same
    /// cause (each error naming its key), published to its waiters; a key
    /// with a stale value is re-armed (fail-safe).
    async fn fail_many(&self, led: Vec<Led<V>>, failed: Failed<V>) -> Vec<Done<V>> {
        let mut outcomes = Vec::with_capacity(led.len());
        for one in led {
            let key = Arc::clone(one.leader.key());
            let error = match &failed {
                Ok(Ok(Ok(_))) => unreachable!("a failure"),
                Ok(Ok(Err(source))) => Error::Loader {
                    key,
                    source: Arc::clone(source),
                },
                Ok(Err(message)) => Error::panicked(key, Arc::clone(message)),
                Err(limit) => Error::load_timed_out(key, *limit),
            };
            one.leader.publish(Err(error.clone()));
            if let Some(stale) = &one.miss.stale {
                if one.miss.write && one.leader.is_current() {
                    self.rearm(one.leader.key(), stale, &error).await;
                }
            }
            outcomes.push((one.index, Err(error), one.miss));
        }
        outcomes
    }
}

/// What a bulk loader call came to: its answer, its error, its panic's
/// message, or the hard timeout it ran past. (The error is shared by the
/// keys it fails.)
type Failed<V> = std::result::Result<
    std::result::Result<std::result::Result<HashMap<String, Option<V>>, SharedSource>, Arc<str>>,
    Duration,
>;

/// A key's outcome from a bulk load: its index, outcome, and what its miss
/// left (a stale value to fall back on).
type Done<V> = (usize, Outcome<V>, Miss<V>);
