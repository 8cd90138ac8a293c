//! [`HybridStore`]: an in-memory L1 in front of a Redis L2, coherent across
//! processes, and standing when Redis falls.
//!
//! Module map: the store and its operations (this file), configuration
//! (`builder.rs`), the circuit breaker (`breaker.rs`), L1 and the locks
//! that keep it from going stale (`local.rs`), one L2 read per key at a
//! time (`coalesce.rs`), pub/sub invalidation (`invalidation.rs`), the
//! write-behind queue (`write_behind.rs`) and the counters (`stats.rs`).
//!
//! # Reads
//!
//! `get` answers from L1 when it can, at memory speed and without
//! allocating. On an L1 miss it asks L2 (unless the breaker is open), and
//! concurrent misses of one key share one L2 read. An L2 hit is copied into
//! L1 with the **remaining** L2 TTL, capped by the L1 TTL: an entry never
//! lives longer in L1 than in L2, and `get` reports the L2 TTL whichever
//! tier answered, so refresh decisions upstream do not depend on it.
//!
//! # Writes
//!
//! [`WriteMode::WriteThrough`] (default): `set` writes L2, publishes the
//! invalidation, then fills L1; `delete` drops the key from L1, deletes it
//! in L2, publishes, and drops it from L1 again. [`WriteMode::WriteBehind`]:
//! L1 at once, L2 from a bounded queue. `clear` always waits for L2.
//!
//! **A `delete` never leaves L1 holding the old value**, not even against
//! a read of the old value racing it: every write bumps a per-key-stripe
//! counter under a lock, and an L2 answer is copied into L1 only if the
//! counter has not moved since the read started (see `local.rs`).
//!
//! # Coherence across processes
//!
//! Each write to L2 is followed by a message on a pub/sub channel derived
//! from the prefix (`<prefix>:__cachex_inv`) carrying the writer's random
//! instance id and the key; every other store drops the key from its L1.
//! Pub/sub is the primary mechanism, rather than RESP3 client tracking
//! (`CLIENT TRACKING` with invalidation pushes), because:
//!
//! - a dedicated subscriber connection shows exactly when it is lost, which
//!   is when invalidations may have been missed: L1 is then cleared (and
//!   cleared again on resubscribing). Tracking has to be re-armed with
//!   `CLIENT TRACKING ON` after every reconnect, and the `redis` crate's
//!   reconnecting clients have no hook to do so (its own client-side cache
//!   is marked experimental);
//! - it works with every topology the Redis store supports: a regular
//!   `PUBLISH` on a cluster reaches the subscribers of every node;
//! - messages and tracking pushes arrive equally fast (about 0.1 ms on
//!   loopback).
//!
//! Tracking remains possible behind the same seam: what L1 needs is only
//! "drop this key" and "drop everything" (`Core::invalidate_local` and
//! `Core::clear_local`), whoever calls them; a tracking connection would
//! call them from its push messages (invalidate with a key, or with none
//! after a flush) and clear L1 on its own reconnects.
//!
//! While the subscription is down, another process's write is not seen
//! until the subscription is back (L1 is cleared then) or the entry's L1
//! TTL ends, whichever is first.
//!
//! # Degradation
//!
//! Every L2 call is bounded by the L2 timeout. Consecutive failures open a
//! circuit breaker: L2 is then not called at all, reads are answered by L1
//! (and, through [`Cache::get_or_load`](crate::Cache::get_or_load), by the
//! loader), writes go to L1 only. A background probe asks L2 every
//! `open_for` and closes the breaker when it answers. Without
//! [strict mode](HybridStoreBuilder::strict), L2 being unavailable is never
//! an error: reads miss, writes stay local. Errors that are not about
//! availability (a value that does not decode, a refused `clear`) are
//! still reported.

mod breaker;
mod builder;
mod coalesce;
mod invalidation;
mod local;
mod outage;
mod stats;
mod write_behind;

use std::error::Error as _;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::JoinHandle;

pub use breaker::BreakerState;
pub use builder::{
    HybridStoreBuilder, WriteMode, DEFAULT_BREAKER_OPEN_FOR, DEFAULT_BREAKER_THRESHOLD,
    DEFAULT_L1_CAPACITY, DEFAULT_L1_TTL, DEFAULT_L2_TIMEOUT, DEFAULT_WRITE_BEHIND_QUEUE,
};
pub use stats::HybridStats;

use super::redis::TimedOut;
use super::{Behind, Envelope, Found, LocalTier, RedisStore, Store, StoreFuture, Stored, Write};
use crate::codec::{Codec, MessagePack};
use crate::observe::{StoreStats, TierStats};
use crate::tag::{Stamp, TagStamps, Tags, UNKNOWN};
use crate::{Error, Result, StoreOp};
use breaker::Breaker;
use coalesce::Flights;
use invalidation::Message;
pub(crate) use local::Local;
use stats::{incr, Counters};
use write_behind::{Job, Queue};

/// What an invalidation removed from L1; given to the
/// [`on_invalidation`](HybridStoreBuilder::on_invalidation) hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalidated<'a> {
    /// Another store wrote or deleted this key.
    Key(&'a str),
    /// Another store invalidated this tag: L1's entries carrying it are no
    /// longer served.
    Tag(&'a str),
    /// L1 was emptied: another store cleared, a message could not be read,
    /// or, with [`max_stale_on_outage`](HybridStoreBuilder::max_stale_on_outage)
    /// zero, the subscription was lost or re-established.
    All,
}

type Hook = Arc<dyn Fn(Invalidated<'_>) + Send + Sync>;

/// The L2 key the breaker's probe asks about (`PTTL` of a key that need
/// not exist: any answer means Redis is back).
const PROBE_KEY: &str = "__cachex_probe";

/// A two-tier [`Store`]: an in-memory L1 (the W-TinyLFU engine) in front
/// of a [`RedisStore`] L2, kept coherent across processes by pub/sub
/// invalidation, and serving from L1 (and the loader) while Redis is down.
/// See the [module docs](self) for the read and write paths and their
/// guarantees.
///
/// Cheap to clone: clones share one store. Its background tasks (the
/// subscriber, the breaker's prober, the write-behind worker) end when the
/// last clone is dropped.
///
/// ```no_run
/// use std::time::Duration;
/// use cachex::store::hybrid::HybridStore;
/// use cachex::store::RedisStore;
/// use cachex::Cache;
///
/// # async fn f() -> cachex::Result<()> {
/// let l2 = RedisStore::builder().url("redis://127.0.0.1:6379").prefix("users").build().await?;
/// let store = HybridStore::builder(l2)
///     .l1_capacity(100_000)
///     .l1_ttl(Duration::from_secs(30))
///     .build()
///     .await?;
/// let cache: Cache<String> = Cache::builder()
///     .store(store.clone())
///     .default_ttl(Duration::from_secs(600))
///     .build();
/// // One L2 read and at most one loader call per key per process at a
/// // time; while Redis is down, the loader answers.
/// let name = cache
///     .get_or_load("7", || async { Ok::<_, std::io::Error>("alice".to_string()) })
///     .await?;
/// assert_eq!(name, "alice");
/// println!("{:?}", store.stats());
/// # Ok(()) }
/// ```
pub struct HybridStore<V, C = MessagePack> {
    inner: Arc<Inner<V, C>>,
}

/// What the handles share; dropping it aborts the background tasks.
struct Inner<V, C> {
    core: Arc<Core<V, C>>,
    _tasks: Tasks,
}

/// What the handles and the background tasks share.
pub(crate) struct Core<V, C> {
    /// Shared with the caches over this store (see `Store::local_tier`).
    local: Arc<Local<V>>,
    l2: RedisStore<V, C>,
    flights: Arc<Flights<V>>,
    breaker: Breaker,
    queue: Option<Queue<V>>,
    mode: WriteMode,
    strict: bool,
    l2_timeout: Duration,
    /// `None`: invalidation off.
    channel: Option<String>,
    instance_id: u64,
    subscribed: AtomicBool,
    hook: Option<Hook>,
    counters: Counters,
}

/// Background tasks, aborted on drop.
#[derive(Default)]
struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.0.push(tokio::spawn(task));
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The refusal of a call while the breaker is open (strict mode), the
/// source of an [`Error::Store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerOpen;

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("L2 unavailable: the circuit breaker is open")
    }
}

impl std::error::Error for BreakerOpen {}

impl<V> HybridStore<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// A builder over the L2 store `l2`, with the defaults: 10,000 L1
    /// entries for at most 60 s, write-through, a 500 ms L2 timeout, a
    /// breaker opening after 5 failures and probing every second,
    /// invalidation on, not strict.
    pub fn builder<C: Codec>(l2: RedisStore<V, C>) -> HybridStoreBuilder<V, C> {
        HybridStoreBuilder::new(l2)
    }
}

impl<V, C> HybridStore<V, C>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec,
{
    /// A snapshot of the counters, the breaker's state and the
    /// subscription's.
    pub fn stats(&self) -> HybridStats {
        let core = &*self.inner.core;
        let c = &core.counters;
        let l1 = core.local.engine().stats();
        let (unverified_hits, revalidations) = core.local.outage_counts();
        HybridStats {
            l1_hits: l1.hits,
            l1_misses: l1.misses,
            l1_entries: core.local.engine().len(),
            l2_hits: stats::get(&c.l2_hits),
            l2_misses: stats::get(&c.l2_misses),
            l2_reads_shared: stats::get(&core.flights.joined),
            l2_errors: stats::get(&c.l2_errors),
            l2_skipped: stats::get(&c.l2_skipped),
            promotions: stats::get(&c.promotions),
            promotions_skipped: stats::get(&c.promotions_skipped),
            l1_only_writes: stats::get(&c.l1_only_writes),
            breaker: core.breaker.state(),
            breaker_opened: stats::get(&core.breaker.opened_count),
            breaker_closed: stats::get(&core.breaker.closed_count),
            write_behind_queued: stats::get(&c.write_behind_queued),
            write_behind_pending: core.queue.as_ref().map_or(0, |q| q.len() as u64),
            write_behind_failures: stats::get(&c.write_behind_failures),
            write_behind_dropped: stats::get(&c.write_behind_dropped),
            invalidations_published: stats::get(&c.invalidations_published),
            publish_failures: stats::get(&c.publish_failures),
            invalidations_received: stats::get(&c.invalidations_received),
            invalidations_unreadable: stats::get(&c.invalidations_unreadable),
            subscribed: core.subscribed.load(Ordering::Acquire),
            subscription_losses: stats::get(&c.subscription_losses),
            resubscriptions: stats::get(&c.resubscriptions),
            unverified_hits,
            revalidations,
        }
    }

    /// The L2 store.
    pub fn l2(&self) -> &RedisStore<V, C> {
        &self.inner.core.l2
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.core.breaker.state()
    }

    /// Whether the invalidation subscription is up.
    pub fn is_subscribed(&self) -> bool {
        self.inner.core.subscribed.load(Ordering::Acquire)
    }

    /// Whether L1 holds an entry for `key` (a value, a cached "not found",
    /// or a write-behind delete on its way). For diagnostics and tests;
    /// not counted as a read.
    pub fn l1_contains(&self, key: &str) -> bool {
        self.inner.core.local.contains(key)
    }

    /// Drops `key` from this process's L1 only (L2 and other processes
    /// are left alone): the next read asks L2.
    pub fn invalidate_l1(&self, key: &str) {
        self.inner.core.invalidate_local(key);
    }

    /// Waits until every write-behind write queued before this call has
    /// been sent to L2 (or has failed, or been dropped). Returns at once in
    /// write-through mode.
    pub async fn flush(&self) {
        if let Some(queue) = &self.inner.core.queue {
            queue.flush().await;
        }
    }
}

/// What an L2 call came to.
enum L2<T> {
    Done(T),
    /// L2 is unavailable: the breaker is open, or the call timed out or
    /// could not reach Redis.
    Down(Error),
    /// Redis answered with an error that says nothing about its
    /// availability (a codec error, a refused command).
    Failed(Error),
}

impl<V, C> Core<V, C>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec,
{
    /// Runs one L2 call through the breaker and the timeout.
    async fn l2_call<T>(
        &self,
        op: StoreOp,
        key: Option<&str>,
        call: impl Future<Output = Result<T>>,
    ) -> L2<T> {
        if !self.breaker.allows() {
            incr(&self.counters.l2_skipped);
            return L2::Down(Error::store(op, key, BreakerOpen));
        }
        match tokio::time::timeout(self.l2_timeout, call).await {
            Ok(Ok(value)) => {
                self.breaker.success();
                L2::Done(value)
            }
            Ok(Err(error)) => {
                incr(&self.counters.l2_errors);
                if is_unavailable(&error) {
                    if is_refusal(&error) {
                        self.breaker.trip();
                    } else {
                        self.breaker.failure();
                    }
                    L2::Down(error)
                } else {
                    self.breaker.success();
                    L2::Failed(error)
                }
            }
            Err(_) => {
                incr(&self.counters.l2_errors);
                self.breaker.failure();
                let after = self.l2_timeout;
                L2::Down(Error::store(op, key, TimedOut { after }))
            }
        }
    }

    /// An outcome as the caller sees it: unavailability is `fallback`
    /// unless strict.
    fn answer<T>(&self, outcome: L2<T>, fallback: impl FnOnce() -> T) -> Result<T> {
        match outcome {
            L2::Done(value) => Ok(value),
            L2::Down(error) if self.strict => Err(error),
            L2::Down(_) => Ok(fallback()),
            L2::Failed(error) => Err(error),
        }
    }

    /// The shared L2 read of an L1 miss, and its promotion.
    async fn read_l2(&self, key: &str, ticket: local::Ticket) -> Result<Option<Stored<V>>> {
        // After the ticket: a write queued later bumps it, so whatever L2
        // answers then is not promoted over the write.
        if let Some(own) = self.pending(key) {
            return Ok(own);
        }
        let outcome = self
            .l2_call(StoreOp::Get, Some(key), self.l2.get(key))
            .await;
        if let L2::Done(found) = &outcome {
            match found {
                Some(stored) => {
                    incr(&self.counters.l2_hits);
                    if self.local.promote(key, ticket, stored) {
                        incr(&self.counters.promotions);
                    } else {
                        incr(&self.counters.promotions_skipped);
                    }
                }
                None => incr(&self.counters.l2_misses),
            }
        }
        self.answer(outcome, || None)
    }

    /// The shared L2 read of a batch's L1 misses (`keys`, with the ticket
    /// each took), and their promotions: one `MGET` for the keys this
    /// process has no write of its own on the way to L2.
    async fn read_l2_many(
        &self,
        keys: Vec<String>,
        tickets: Vec<local::Ticket>,
    ) -> Vec<Result<Option<Stored<V>>>> {
        let mut found: Vec<Option<Result<Option<Stored<V>>>>> =
            keys.iter().map(|key| self.pending(key).map(Ok)).collect();
        let remote: Vec<&str> = keys
            .iter()
            .zip(&found)
            .filter(|(_, own)| own.is_none())
            .map(|(key, _)| key.as_str())
            .collect();
        if !remote.is_empty() {
            let outcome = self
                .l2_call(StoreOp::Get, None, self.l2.get_many(&remote))
                .await;
            let mut answers = match outcome {
                L2::Done(answers) => answers.into_iter(),
                L2::Down(error) if self.strict => vec![Err(error); remote.len()].into_iter(),
                L2::Down(_) => vec![Ok(None); remote.len()].into_iter(),
                L2::Failed(error) => vec![Err(error); remote.len()].into_iter(),
            };
            for ((key, ticket), slot) in keys.iter().zip(&tickets).zip(found.iter_mut()) {
                if slot.is_some() {
                    continue;
                }
                let answer = answers.next().unwrap_or(Ok(None));
                match &answer {
                    Ok(Some(stored)) => {
                        incr(&self.counters.l2_hits);
                        if self.local.promote(key, *ticket, stored) {
                            incr(&self.counters.promotions);
                        } else {
                            incr(&self.counters.promotions_skipped);
                        }
                    }
                    Ok(None) => incr(&self.counters.l2_misses),
                    Err(_) => {}
                }
                *slot = Some(answer);
            }
        }
        found
            .into_iter()
            .map(|one| one.unwrap_or(Ok(None)))
            .collect()
    }

    /// Writes `key` to L2 and publishes its invalidation.
    async fn l2_set(&self, key: &str, envelope: Envelope<V>, ttl: Option<Duration>) -> L2<()> {
        let outcome = self
            .l2_call(StoreOp::Set, Some(key), self.l2.set(key, envelope, ttl))
            .await;
        if let L2::Done(()) = outcome {
            self.publish(
                StoreOp::Set,
                Message::Key {
                    from: self.instance_id,
                    key,
                },
            )
            .await;
        }
        outcome
    }

    /// Deletes `key` in L2 and publishes its invalidation.
    async fn l2_delete(&self, key: &str) -> L2<bool> {
        let outcome = self
            .l2_call(StoreOp::Delete, Some(key), self.l2.delete(key))
            .await;
        if let L2::Done(_) = outcome {
            self.publish(
                StoreOp::Delete,
                Message::Key {
                    from: self.instance_id,
                    key,
                },
            )
            .await;
        }
        outcome
    }

    /// Tells the other stores. A failure is counted, not reported: the
    /// write itself is done, and the others' L1 TTL bounds their staleness.
    async fn publish(&self, op: StoreOp, message: Message<'_>) {
        let Some(channel) = &self.channel else {
            return;
        };
        let payload = message.encode();
        let published = self
            .l2_call(op, None, self.l2.publish(op, channel, &payload))
            .await;
        match published {
            L2::Done(_) => incr(&self.counters.invalidations_published),
            _ => incr(&self.counters.publish_failures),
        }
    }

    async fn set(&self, key: &str, envelope: Envelope<V>, ttl: Option<Duration>) -> Result<()> {
        self.refuse_if_strict_and_open(StoreOp::Set, key)?;
        if let Some(queue) = &self.queue {
            // Queued whatever the breaker says (the worker meets it), so
            // that the queue's newest write of the key is always this
            // process's newest. Queued before L1 is written: see
            // `Queue::push`.
            self.enqueue(
                queue,
                Job::Set {
                    key: key.to_owned(),
                    envelope: envelope.clone(),
                    ttl,
                },
            );
            self.local.write(key, envelope, ttl);
            self.flights.forget(key);
            return Ok(());
        }
        if !self.breaker.allows() {
            incr(&self.counters.l2_skipped);
            incr(&self.counters.l1_only_writes);
            self.local.write(key, envelope, ttl);
            self.flights.forget(key);
            return Ok(());
        }
        let mine = self.local.begin_write(key);
        self.flights.forget(key);
        let outcome = self.l2_set(key, envelope.clone(), ttl).await;
        let result = match outcome {
            L2::Done(()) => Ok(()),
            L2::Down(_) if !self.strict => {
                incr(&self.counters.l1_only_writes);
                Ok(())
            }
            L2::Down(error) | L2::Failed(error) => Err(error),
        };
        let keep = result.is_ok().then_some((envelope, ttl));
        self.local.finish_write(key, mine, keep);
        self.flights.forget(key);
        result
    }

    /// The tags' versions for a write: from L1's knowledge when it has them
    /// all (no round trip), else read from L2 (and learnt, unless an
    /// invalidation came in meanwhile). Without L2, the versions are
    /// unknown and a tagged write is refused.
    async fn tag_stamps(&self, tags: &Tags) -> Result<TagStamps> {
        let registry = &self.local.tags;
        let epoch = registry.epoch();
        let cells: Vec<_> = tags.iter().map(|tag| registry.cell(tag, UNKNOWN)).collect();
        if cells.iter().all(|cell| cell.version() != UNKNOWN) {
            let stamps = cells
                .into_iter()
                .map(|cell| {
                    let version = cell.version();
                    Stamp { cell, version }
                })
                .collect();
            return Ok(TagStamps::new(stamps));
        }
        let first = tags.iter().next();
        let read = self
            .l2_call(StoreOp::Tags, first, self.l2.tag_stamps(tags))
            .await;
        let read = match read {
            L2::Done(read) => read,
            L2::Down(error) | L2::Failed(error) => return Err(error),
        };
        let stamps = cells
            .into_iter()
            .zip(read.stamps())
            .map(|(cell, read)| {
                registry.learn(&cell, epoch, read.version);
                Stamp {
                    cell,
                    version: read.version,
                }
            })
            .collect();
        Ok(TagStamps::new(stamps))
    }

    /// Invalidates the tags in L2 (one script per tag), then in L1, then
    /// tells the other stores. Refused when L2 cannot be reached, strict
    /// or not: an invalidation that only this process saw would leave the
    /// others serving what it was meant to drop.
    async fn invalidate_tags(&self, tags: &Tags) -> Result<()> {
        let first = tags.iter().next();
        let done = self
            .l2_call(StoreOp::Tags, first, self.l2.invalidate_tags(tags))
            .await;
        self.forget_tags(tags.iter());
        match done {
            L2::Done(()) => {}
            L2::Down(error) | L2::Failed(error) => return Err(error),
        }
        let message = Message::Tags {
            from: self.instance_id,
            tags: tags.iter().collect(),
        };
        self.publish(StoreOp::Tags, message).await;
        Ok(())
    }

    /// A batch of writes: as [`set`](Self::set) for each, with one L2
    /// pipeline and one invalidation message for them all.
    async fn set_many(&self, writes: Vec<Write<'_, V>>) -> Result<()> {
        self.refuse_if_strict_and_open(StoreOp::Set, writes[0].key)?;
        if let Some(queue) = &self.queue {
            for write in writes {
                self.enqueue(
                    queue,
                    Job::Set {
                        key: write.key.to_owned(),
                        envelope: write.entry.clone(),
                        ttl: write.ttl,
                    },
                );
                self.local.write(write.key, write.entry, write.ttl);
                self.flights.forget(write.key);
            }
            return Ok(());
        }
        if !self.breaker.allows() {
            incr(&self.counters.l2_skipped);
            for write in writes {
                incr(&self.counters.l1_only_writes);
                self.local.write(write.key, write.entry, write.ttl);
                self.flights.forget(write.key);
            }
            return Ok(());
        }
        let keys: Vec<&str> = writes.iter().map(|write| write.key).collect();
        let mine: Vec<_> = keys.iter().map(|key| self.local.begin_write(key)).collect();
        for key in &keys {
            self.flights.forget(key);
        }
        let kept: Vec<_> = writes
            .iter()
            .map(|write| (write.entry.clone(), write.ttl))
            .collect();
        let outcome = self
            .l2_call(StoreOp::Set, None, self.l2.set_many(writes))
            .await;
        if let L2::Done(()) = outcome {
            self.publish_keys(StoreOp::Set, &keys).await;
        }
        let result = match outcome {
            L2::Done(()) => Ok(()),
            L2::Down(_) if !self.strict => {
                for _ in &keys {
                    incr(&self.counters.l1_only_writes);
                }
                Ok(())
            }
            L2::Down(error) | L2::Failed(error) => Err(error),
        };
        for ((key, mine), kept) in keys.iter().zip(mine).zip(kept) {
            self.local
                .finish_write(key, mine, result.is_ok().then_some(kept));
            self.flights.forget(key);
        }
        result
    }

    /// A batch of deletes: as [`delete`](Self::delete) for each, with one
    /// L2 `UNLINK` and one invalidation message for them all.
    async fn delete_many(&self, keys: &[&str]) -> Result<usize> {
        if let Some(queue) = &self.queue {
            self.refuse_if_strict_and_open(StoreOp::Delete, keys[0])?;
            let mut had = 0;
            for key in keys {
                self.enqueue(
                    queue,
                    Job::Delete {
                        key: (*key).to_owned(),
                    },
                );
                had += usize::from(self.invalidate_local(key));
            }
            return Ok(had);
        }
        let had = keys.iter().filter(|key| self.invalidate_local(key)).count();
        let outcome = self
            .l2_call(StoreOp::Delete, None, self.l2.delete_many(keys))
            .await;
        if let L2::Done(_) = outcome {
            self.publish_keys(StoreOp::Delete, keys).await;
        }
        // As in `delete`: a read racing the L2 delete may have promoted.
        for key in keys {
            self.invalidate_local(key);
        }
        self.answer(outcome, || had).map(|existed| existed.max(had))
    }

    /// Publishes the invalidation of a batch's keys: one message.
    async fn publish_keys(&self, op: StoreOp, keys: &[&str]) {
        let message = match keys {
            [key] => Message::Key {
                from: self.instance_id,
                key,
            },
            _ => Message::Keys {
                from: self.instance_id,
                keys: keys.to_vec(),
            },
        };
        self.publish(op, message).await;
    }

    /// Strict mode's refusal of a write while the breaker is open.
    fn refuse_if_strict_and_open(&self, op: StoreOp, key: &str) -> Result<()> {
        if self.strict && !self.breaker.allows() {
            incr(&self.counters.l2_skipped);
            return Err(Error::store(op, Some(key), BreakerOpen));
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        if let Some(queue) = &self.queue {
            self.refuse_if_strict_and_open(StoreOp::Delete, key)?;
            // Until the worker has dealt with it, the queue answers
            // "nothing" for the key (see `Queue::pending`); queued whatever
            // the breaker says, as `set` is.
            self.enqueue(
                queue,
                Job::Delete {
                    key: key.to_owned(),
                },
            );
            return Ok(self.invalidate_local(key));
        }
        let had = self.invalidate_local(key);
        let outcome = self.l2_delete(key).await;
        // A read that started before the L2 delete may have promoted the
        // old value since the first removal (its promotion was refused if
        // it took its ticket before; this one catches any other path).
        self.invalidate_local(key);
        self.answer(outcome, || had).map(|existed| existed || had)
    }

    async fn clear(&self) -> Result<()> {
        if let Some(queue) = &self.queue {
            // Queued writes must not land after the clear.
            queue.flush().await;
        }
        self.clear_local(false);
        let outcome = self.l2_call(StoreOp::Clear, None, self.l2.clear()).await;
        if let L2::Done(()) = outcome {
            self.publish(
                StoreOp::Clear,
                Message::Clear {
                    from: self.instance_id,
                },
            )
            .await;
        }
        self.clear_local(false);
        self.answer(outcome, || ())
    }

    async fn remaining_ttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        if let Some(ttl) = self.local.remaining_ttl(key) {
            return Ok(Some(ttl));
        }
        if let Some(own) = self.pending(key) {
            return Ok(own.map(|stored| stored.remaining_ttl));
        }
        let outcome = self
            .l2_call(StoreOp::RemainingTtl, Some(key), self.l2.remaining_ttl(key))
            .await;
        self.answer(outcome, || None)
    }

    fn enqueue(&self, queue: &Queue<V>, job: Job<V>) {
        incr(&self.counters.write_behind_queued);
        if let Some(dropped) = queue.push(job) {
            incr(&self.counters.write_behind_dropped);
            if !dropped.superseded {
                // L2 will not get that write: go back to L2's value, the
                // one every other process sees.
                self.invalidate_local(&dropped.key);
            }
        }
    }

    /// This process's own write of `key` still on its way to L2, if any
    /// (write-behind): it, not L2, answers for the key.
    fn pending(&self, key: &str) -> Option<Option<Stored<V>>> {
        let pending = self.queue.as_ref()?.pending(key)?;
        // A write whose tags were invalidated since is as good as gone.
        Some(pending.filter(|stored| stored.envelope.tags_current()))
    }
}

impl<V, C> Core<V, C>
where
    V: Clone + Send + Sync + 'static,
{
    /// Drops `key` from L1, and from the reads under way: the seam every
    /// invalidation goes through. Answers whether L1 held a value.
    pub(crate) fn invalidate_local(&self, key: &str) -> bool {
        let had = self.local.invalidate(key);
        self.flights.forget(key);
        had
    }

    /// `tags` were invalidated: L1's entries carrying them stop matching,
    /// and reads under way (which may have read them just before) are not
    /// joined by later reads (their keys are unknown here).
    pub(crate) fn forget_tags<'t>(&self, tags: impl IntoIterator<Item = &'t str>) {
        for tag in tags {
            self.local.tags.forget(tag);
        }
        self.flights.forget_all();
    }

    /// The subscription is lost: L1's entries are kept, unverified, within
    /// the staleness bound, or (bound zero) L1 is emptied.
    pub(crate) fn subscription_lost(&self) {
        if self.local.outage.keeps_l1() {
            self.local.outage.lost();
        } else {
            self.clear_local(true);
        }
    }

    /// The subscription is back: entries from before are re-read from L2
    /// on their next read, or (bound zero) L1 is emptied again.
    pub(crate) fn subscription_restored(&self) {
        // Tag invalidations may have been missed: versions are read anew.
        self.local.tags.forget_all();
        if self.local.outage.keeps_l1() {
            self.local.outage.restored();
        } else {
            self.clear_local(true);
        }
    }

    /// Empties L1 and stops reads under way from promoting; `notify`
    /// tells the hook (when the cause is not a call on this store).
    pub(crate) fn clear_local(&self, notify: bool) {
        self.local.clear();
        self.flights.forget_all();
        if notify {
            self.notify(Invalidated::All);
        }
    }

    fn notify(&self, what: Invalidated<'_>) {
        if let Some(hook) = &self.hook {
            hook(what);
        }
    }
}

/// Whether `error` means L2 is unavailable (rather than that it refused
/// this call): these feed the breaker and, outside strict mode, turn into
/// misses and L1-only writes.
fn is_unavailable(error: &Error) -> bool {
    if !error.is_store() {
        return false;
    }
    let Some(source) = error.source() else {
        return false;
    };
    if source.is::<TimedOut>() || source.is::<BreakerOpen>() {
        return true;
    }
    match source.downcast_ref::<redis::RedisError>() {
        Some(e) => {
            super::redis::is_connection_error(e)
                || matches!(
                    e.kind(),
                    redis::ErrorKind::Server(
                        redis::ServerErrorKind::BusyLoading
                            | redis::ServerErrorKind::TryAgain
                            | redis::ServerErrorKind::ClusterDown
                            | redis::ServerErrorKind::MasterDown
                            | redis::ServerErrorKind::ReadOnly
                    )
                )
        }
        None => false,
    }
}

/// Whether `error` is a refused connection: Redis is not listening (killed,
/// restarting), which one failure proves.
fn is_refusal(error: &Error) -> bool {
    error
        .source()
        .and_then(|source| source.downcast_ref::<redis::RedisError>())
        .is_some_and(redis::RedisError::is_connection_refusal)
}

/// The breaker's prober: when a probe is due, asks L2 one cheap question.
async fn probe<V, C>(core: Arc<Core<V, C>>)
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec,
{
    loop {
        core.breaker.probe_due().await;
        let answer = tokio::time::timeout(core.l2_timeout, core.l2.remaining_ttl(PROBE_KEY)).await;
        core.breaker.probe_result(matches!(answer, Ok(Ok(_))));
    }
}

impl<V, C> Store<V> for HybridStore<V, C>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec,
{
    #[inline]
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<Option<Stored<V>>>> {
        if let Some(found) = self.inner.core.local.get(key) {
            return StoreFuture::ready(Ok(Some(found)));
        }
        self.get_behind(key)
    }

    /// An L1 hit without reading the clock for the TTL; a miss goes the
    /// way of [`get`](Store::get) (the promotion needs L2's TTL).
    #[inline]
    fn get_entry<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<Option<Envelope<V>>>>
    where
        V: 'a,
    {
        if let Some(found) = self.inner.core.local.get_envelope(key) {
            return StoreFuture::ready(Ok(Some(found)));
        }
        self.get_behind(key)
            .map(|stored| stored.map(|found| found.map(|stored| stored.envelope)))
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        entry: Envelope<V>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, Result<()>> {
        StoreFuture::new(self.inner.core.set(key, entry, ttl))
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<bool>> {
        StoreFuture::new(self.inner.core.delete(key))
    }

    fn clear(&self) -> StoreFuture<'_, Result<()>> {
        StoreFuture::new(self.inner.core.clear())
    }

    /// L1 first; the misses with one L2 `MGET`, each key's read shared
    /// with concurrent reads of the same key (single or batch).
    fn get_many<'a>(&'a self, keys: &'a [&'a str]) -> StoreFuture<'a, Result<Vec<Found<V>>>>
    where
        V: 'a,
    {
        let core = &self.inner.core;
        let mut found: Vec<Option<Found<V>>> = keys
            .iter()
            .map(|key| core.local.get(key).map(|stored| Ok(Some(stored))))
            .collect();
        let missing: Vec<&str> = keys
            .iter()
            .zip(&found)
            .filter(|(_, hit)| hit.is_none())
            .map(|(key, _)| *key)
            .collect();
        if missing.is_empty() {
            return StoreFuture::ready(Ok(found.into_iter().flatten().collect()));
        }
        if !core.breaker.allows() {
            incr(&core.counters.l2_skipped);
            for (key, slot) in keys.iter().zip(found.iter_mut()) {
                if slot.is_none() {
                    *slot = Some(if let Some(own) = core.pending(key) {
                        Ok(own)
                    } else if core.strict {
                        Err(Error::store(StoreOp::Get, Some(key), BreakerOpen))
                    } else {
                        Ok(None)
                    });
                }
            }
            return StoreFuture::ready(Ok(found.into_iter().flatten().collect()));
        }
        let reads = core.flights.join_or_start_many(&missing, |fresh| {
            // Under the flights' lock, as for a single read.
            let tickets: Vec<_> = fresh.iter().map(|key| core.local.ticket(key)).collect();
            let keys: Vec<String> = fresh.iter().map(|key| (*key).to_owned()).collect();
            let core = Arc::clone(core);
            async move { core.read_l2_many(keys, tickets).await }.boxed()
        });
        StoreFuture::new(async move {
            let mut answers = join_all(reads).await.into_iter();
            for slot in found.iter_mut().filter(|slot| slot.is_none()) {
                *slot = answers.next();
            }
            Ok(found.into_iter().flatten().collect())
        })
    }

    fn set_many<'a>(&'a self, writes: Vec<Write<'a, V>>) -> StoreFuture<'a, Result<()>>
    where
        V: 'a,
    {
        StoreFuture::new(self.inner.core.set_many(writes))
    }

    fn delete_many<'a>(&'a self, keys: &'a [&'a str]) -> StoreFuture<'a, Result<usize>>
    where
        V: 'a,
    {
        StoreFuture::new(self.inner.core.delete_many(keys))
    }

    fn remaining_ttl<'a>(
        &'a self,
        key: &'a str,
    ) -> StoreFuture<'a, Result<Option<Option<Duration>>>> {
        StoreFuture::new(self.inner.core.remaining_ttl(key))
    }

    /// From L1's knowledge of the tags when it has it (no round trip),
    /// else one L2 round trip.
    fn tag_stamps<'a>(&'a self, tags: &'a Tags) -> StoreFuture<'a, Result<TagStamps>> {
        StoreFuture::new(self.inner.core.tag_stamps(tags))
    }

    /// L2 (one script per tag, sent together), L1, then one message to the
    /// other stores.
    fn invalidate_tags<'a>(&'a self, tags: &'a Tags) -> StoreFuture<'a, Result<()>> {
        StoreFuture::new(self.inner.core.invalidate_tags(tags))
    }

    /// Both tiers: L1 from the in-process engine, L2 from this store's own
    /// counters (reads that reached Redis, failures of every kind, and the
    /// breaker's state). No I/O.
    fn stats(&self) -> StoreStats {
        let core = &*self.inner.core;
        let c = &core.counters;
        let engine = core.local.engine().stats();
        let l1 = TierStats {
            hits: engine.hits,
            misses: engine.misses,
            entries: Some(core.local.engine().len()),
            evictions_size: engine.evictions_size,
            evictions_expired: engine.evictions_expired,
            removals: engine.removals,
            ..TierStats::default()
        };
        let l2 = TierStats {
            hits: stats::get(&c.l2_hits),
            misses: stats::get(&c.l2_misses),
            // Write-behind writes go through the same L2 call path, so
            // their failures are already among `l2_errors`.
            errors: stats::get(&c.l2_errors) + stats::get(&c.publish_failures),
            breaker: Some(core.breaker.state()),
            ..TierStats::default()
        };
        StoreStats {
            l1: Some(l1),
            l2: Some(l2),
        }
    }

    /// L1, read by the cache's hit path; a miss goes on through
    /// [`Behind::get_behind`].
    fn local_tier(&self) -> Option<LocalTier<V>> {
        let behind: Arc<dyn Behind<V>> = Arc::new(self.clone());
        Some(LocalTier::hybrid(
            Arc::clone(&self.inner.core.local),
            behind,
        ))
    }
}

/// A read that missed L1 (or never asked it): the breaker, this process's
/// pending write, then L2, one read per key at a time.
impl<V, C> Behind<V> for HybridStore<V, C>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec,
{
    fn get_behind<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<Option<Stored<V>>>> {
        let core = &self.inner.core;
        if !core.breaker.allows() {
            incr(&core.counters.l2_skipped);
            let answer = if let Some(own) = core.pending(key) {
                Ok(own)
            } else if core.strict {
                Err(Error::store(StoreOp::Get, Some(key), BreakerOpen))
            } else {
                Ok(None)
            };
            return StoreFuture::ready(answer);
        }
        let read = core.flights.join_or_start(key, || {
            // Taken under the flights' lock: a write that forgets this
            // read after it was registered has bumped the ticket's counter.
            let ticket = core.local.ticket(key);
            let core = Arc::clone(core);
            let key = key.to_owned();
            async move { core.read_l2(&key, ticket).await }.boxed()
        });
        StoreFuture::new(read)
    }
}

impl<V, C> Clone for HybridStore<V, C> {
    fn clone(&self) -> Self {
        HybridStore {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<V, C> fmt::Debug for HybridStore<V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = &*self.inner.core;
        f.debug_struct("HybridStore")
            .field("l2", &core.l2.prefix())
            .field("mode", &core.mode)
            .field("strict", &core.strict)
            .field("l2_timeout", &core.l2_timeout)
            .field("channel", &core.channel)
            .field("breaker", &core.breaker)
            .field("subscribed", &core.subscribed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
