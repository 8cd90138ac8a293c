//! One load per key across every process: the key's distributed lock
//! under `get_or_load` (feature `redis`).
//!
//! The in-process singleflight picks one caller per key and process; that
//! caller, before running the loader, claims the key's
//! [`DistributedLock`]. The winner loads, stores the value, then releases
//! the lock, which wakes the other processes' claimers; they read the
//! value from the store and hand it to their own waiters. A claimer that
//! wakes to no value (the holder's load failed, or was dropped, or the
//! holder died and its lease ran out) takes the lock and loads itself.
//! When the lock cannot be reached, the load runs without it (counted),
//! unless the cache is strict.
//!
//! The hooks: [`Core::lead`](super::Core) claims before it calls the
//! loader and releases after it stored the result; a background refresh
//! only tries the lock, and refreshes only if it gets it.

#[cfg(feature = "redis")]
use std::collections::HashMap;
#[cfg(feature = "redis")]
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "redis")]
use futures_util::future::{BoxFuture, FutureExt, Shared, WeakShared};
#[cfg(feature = "redis")]
use parking_lot::Mutex;

#[cfg(feature = "redis")]
use tokio::time::Instant;

#[cfg(feature = "redis")]
use super::builder::CacheBuilder;
#[cfg(feature = "redis")]
use super::stats::Counter;
use super::Core;
use crate::loading::{Answer, Waiter};
use crate::store::{Found, StoreFuture};
use crate::Error;
#[cfg(feature = "redis")]
use {
    crate::lock::{Attempt, DistributedLock, Interest, LockGuard, Names, WindowClaim},
    crate::observe::spans::{traced, Op, OpSpan},
};

/// The builder's distributed-singleflight settings.
#[cfg(feature = "redis")]
#[derive(Clone, Debug)]
pub(super) struct Settings {
    lock: DistributedLock,
    lease: Duration,
    strict: bool,
}

/// Without the `redis` feature there is no distributed lock.
#[cfg(not(feature = "redis"))]
#[derive(Clone, Debug)]
pub(super) enum Settings {}

/// Distributed singleflight in a cache: its settings, and the store reads
/// its loads share.
pub(super) struct Distributed<V> {
    #[cfg(feature = "redis")]
    settings: Settings,
    #[cfg(feature = "redis")]
    reads: Reads<V>,
    #[cfg(not(feature = "redis"))]
    _never: (Settings, std::marker::PhantomData<fn() -> V>),
}

impl<V> Distributed<V> {
    pub(super) fn new(settings: Settings) -> Self {
        #[cfg(feature = "redis")]
        return Distributed {
            settings,
            reads: Reads::default(),
        };
        #[cfg(not(feature = "redis"))]
        match settings {}
    }
}

/// The store read of a key, as its loads share it.
#[cfg(feature = "redis")]
type ReadFuture<V> = BoxFuture<'static, Found<V>>;

/// The store read of a key under way, shared by the loads that want it.
#[cfg(feature = "redis")]
type SharedRead<V> = Shared<ReadFuture<V>>;

/// The reads under way: see [`Reads`].
#[cfg(feature = "redis")]
type ReadMap<V> = Mutex<HashMap<String, (u64, WeakShared<ReadFuture<V>>)>>;

/// Store reads under way, by key, each with the write count of its key's
/// shard when it started (see [`Flights::writes`](crate::loading::Flights::writes)),
/// held weakly: when its last caller goes, it goes.
#[cfg(feature = "redis")]
struct Reads<V> {
    map: Arc<ReadMap<V>>,
}

#[cfg(feature = "redis")]
impl<V> Default for Reads<V> {
    fn default() -> Self {
        Reads {
            map: Arc::default(),
        }
    }
}

/// The lock a load holds, released once its result is stored (or, if the
/// load is dropped, in the background by the guard).
pub(super) struct Held(#[cfg(feature = "redis")] Option<LockGuard>);

impl Held {
    /// No lock: distributed singleflight is off, or could not be reached.
    pub(super) fn none() -> Held {
        Held(
            #[cfg(feature = "redis")]
            None,
        )
    }

    /// Releases the lock (and wakes the other processes' waiters).
    pub(super) async fn release(self) {
        #[cfg(feature = "redis")]
        if let Some(guard) = self.0 {
            let _ = guard.release().await;
        }
    }
}

/// How a load gets its lock across processes.
pub(super) enum Claim {
    /// Claim it, waiting for another process's load if need be.
    Wait,
    /// Already claimed (or not needed).
    Done(Held),
}

/// What claiming a key's lock came to.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(super) enum Claimed<A> {
    /// Load (holding the lock, or without it).
    Load(Held),
    /// Another process loaded it: here is the value.
    Answered(A),
    /// The lock could not be reached, and the cache is strict.
    Refused(Error),
}

#[cfg(feature = "redis")]
impl<V> CacheBuilder<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// Distributed singleflight: `get_or_load` loads a key once across
    /// every process sharing the store, not once per process. After the
    /// in-process singleflight, the caller about to load takes the key's
    /// lock (see [`lock`](crate::lock)) for `lease`, renewed while the
    /// load runs; callers in other processes wait for its release
    /// (woken by a message, not polling) and read the value it stored.
    ///
    /// - **Failures**: if the holder's load fails, or its caller goes
    ///   away, or its process dies (its lease then runs out), a waiting
    ///   process takes the lock and loads. Every waiter honours its own
    ///   cancellation.
    /// - **Redis down or slow**: the load runs without the lock
    ///   ([`Stats::lock_fallbacks`](crate::Stats::lock_fallbacks)), as
    ///   when the store cannot be read: availability first. See
    ///   [`distributed_strict`](Self::distributed_strict) to refuse instead,
    ///   and [`DistributedLockBuilder::retry_after`](crate::lock::DistributedLockBuilder::retry_after)
    ///   for how long the lock is then not asked.
    /// - **The store** must be the one the lock's Redis serves to every
    ///   process (a [`RedisStore`](crate::store::RedisStore) or a
    ///   [`HybridStore`](crate::store::HybridStore) on it): waiters read
    ///   the value from it. Values that cannot be stored (too large) are
    ///   loaded by each waiting process in turn.
    /// - **Cost**: a miss adds two Redis commands for the loading process
    ///   (the lock, then a second read of the key before loading, in case
    ///   another process stored it meanwhile) and a release after storing;
    ///   a waiting process sends its attempt on the lock and one read.
    ///   Hits cost nothing.
    /// - **Lease**: longer than most loads (renewal covers the rest, so a
    ///   long lease only delays the takeover after a crash). At least 1 ms.
    ///
    /// Batch loads (`get_many_or_load`) do not take the lock.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use cachex::lock::DistributedLock;
    /// use cachex::store::RedisStore;
    /// use cachex::Cache;
    ///
    /// # async fn f() -> cachex::Result<()> {
    /// let store = RedisStore::builder().url("redis://127.0.0.1:6379").prefix("users").build().await?;
    /// let cache: Cache<String> = Cache::builder()
    ///     .store(store.clone())
    ///     .distributed_singleflight(DistributedLock::new(&store)?, Duration::from_secs(5))
    ///     .build();
    /// // However many processes ask at once: one database query.
    /// let name = cache
    ///     .get_or_load("7", || async { Ok::<_, std::io::Error>("alice".to_string()) })
    ///     .await?;
    /// # let _ = name;
    /// # Ok(()) }
    /// ```
    pub fn distributed_singleflight(mut self, lock: DistributedLock, lease: Duration) -> Self {
        self.distributed = Some(Settings {
            lock,
            lease,
            strict: self.distributed.as_ref().is_some_and(|d| d.strict),
        });
        self
    }

    /// With [`distributed_singleflight`](Self::distributed_singleflight):
    /// when the lock cannot be reached, fail the load with the lock's error
    /// ([`Error::Store`], operation [`StoreOp::Lock`](crate::StoreOp::Lock))
    /// instead of loading without it; for a database that must never see
    /// two loads of a key at once. Default: off (load anyway).
    pub fn distributed_strict(mut self, strict: bool) -> Self {
        if let Some(distributed) = &mut self.distributed {
            distributed.strict = strict;
        }
        self
    }
}

impl<V> Core<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// With distributed singleflight: the load of `key` under way in this
    /// process, joined before reading the store, so that a stampede of
    /// callers costs one read per process, not one each (the waiting
    /// process's whole cost is then its leader's read, lock attempt and
    /// read of the value). Not with fail-safe: a caller there needs its
    /// own read, for the stale value it falls back on.
    #[inline]
    pub(super) fn join_load_first(&self, key: &str) -> Option<Waiter<V>> {
        #[cfg(feature = "redis")]
        if self.distributed.is_some() && self.settings.fail_safe.is_none() {
            return self.flights.join_load(key);
        }
        #[cfg(not(feature = "redis"))]
        let _ = key;
        None
    }

    /// A load's read of `key` (`read`, from the store), shared with the
    /// loads of this process that read `key` at the same time, when
    /// distributed singleflight is on: a stampede of callers then costs
    /// one store read per process. A read the store answered at once (an
    /// in-memory hit) is used as it is.
    pub(super) fn shared_read<'a>(
        &'a self,
        key: &'a str,
        read: StoreFuture<'a, Found<V>>,
    ) -> StoreFuture<'a, Found<V>> {
        #[cfg(feature = "redis")]
        if let Some(distributed) = &self.distributed {
            if !read.is_ready() {
                // Not polled yet: nothing was sent.
                drop(read);
                return StoreFuture::new(self.join_read(&distributed.reads, key));
            }
        }
        #[cfg(not(feature = "redis"))]
        let _ = key;
        read
    }

    /// Claims `key`'s lock for a load, or waits for the process that holds
    /// it and reads its value.
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    pub(super) async fn claim<A: Answer<V>>(&self, key: &str) -> Claimed<A> {
        #[cfg(feature = "redis")]
        if let Some(distributed) = &self.distributed {
            return Box::pin(self.claim_on(&distributed.settings, key)).await;
        }
        Claimed::Load(Held::none())
    }

    /// Tries `key`'s lock for a background refresh, without waiting:
    /// `None` if another process holds it (that one refreshes).
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    pub(super) async fn try_claim(&self, key: &str) -> Option<Held> {
        #[cfg(feature = "redis")]
        if let Some(Distributed {
            settings: distributed,
            ..
        }) = &self.distributed
        {
            let attempt = match distributed.lock.names(key) {
                Ok(names) => {
                    let lease = distributed.lease;
                    distributed.lock.attempt(&names, lease, false, false).await
                }
                Err(error) => Err(error),
            };
            return match attempt {
                Ok(Attempt::Acquired(guard)) => Some(self.holding(guard)),
                Ok(Attempt::Busy { .. }) => None,
                Err(error) => match self.unlocked::<V>(distributed, error) {
                    Claimed::Load(held) => Some(held),
                    _ => None,
                },
            };
        }
        Some(Held::none())
    }

    /// Refresh-ahead's turn for `key` in the current `interval`: `None` if
    /// another process refreshed it in this interval or holds its lock.
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    pub(super) async fn claim_window(&self, key: &str, interval: Duration) -> Option<Held> {
        #[cfg(feature = "redis")]
        if let Some(Distributed {
            settings: distributed,
            ..
        }) = &self.distributed
        {
            // Shorter than the interval, so that a refresher that died
            // does not cost the next interval's refresh.
            let lease = distributed
                .lease
                .min(interval / 2)
                .max(Duration::from_millis(1));
            let claim = match distributed.lock.names(key) {
                Ok(names) => distributed.lock.claim_window(&names, lease, interval).await,
                Err(error) => Err(error),
            };
            return match claim {
                Ok(WindowClaim::Won(guard)) => Some(self.holding(guard)),
                Ok(WindowClaim::Taken | WindowClaim::Busy) => None,
                Err(error) => match self.unlocked::<V>(distributed, error) {
                    Claimed::Load(held) => Some(held),
                    _ => None,
                },
            };
        }
        Some(Held::none())
    }
}

#[cfg(feature = "redis")]
impl<V> Core<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// The read of `key` under way (if no write of its shard came since it
    /// started), or a new one.
    fn join_read(&self, reads: &Reads<V>, key: &str) -> SharedRead<V> {
        let writes = self.flights.writes(key);
        let mut map = reads.map.lock();
        if let Some((started, read)) = map.get(key) {
            if *started == writes {
                if let Some(read) = read.upgrade() {
                    return read;
                }
            }
        }
        let store = Arc::clone(&self.store);
        let (owned, map_ref) = (key.to_owned(), Arc::clone(&reads.map));
        let read: ReadFuture<V> = Box::pin(async move {
            let found = store.get(&owned).await;
            // Done: later loads read afresh (unless a newer read is there).
            let mut map = map_ref.lock();
            if map
                .get(&owned)
                .is_some_and(|(started, _)| *started == writes)
            {
                map.remove(&owned);
            }
            found
        });
        let read = read.shared();
        if let Some(weak) = read.downgrade() {
            map.insert(key.to_owned(), (writes, weak));
        }
        read
    }

    async fn claim_on<A: Answer<V>>(&self, distributed: &Settings, key: &str) -> Claimed<A> {
        let names = match distributed.lock.names(key) {
            Ok(names) => names,
            Err(error) => return self.unlocked(distributed, error),
        };
        let lock = &distributed.lock;
        match lock.attempt(&names, distributed.lease, false, true).await {
            Ok(Attempt::Acquired(guard)) => self.won(key, guard, false).await,
            Ok(Attempt::Busy { interest, left }) => {
                let span = OpSpan::new(&self.observer, Op::LockWait, Some(key));
                let claimed = traced!(
                    span,
                    self.wait_for_holder(distributed, &names, key, interest, left)
                );
                if let Claimed::Refused(error) = &claimed {
                    span.finish::<()>(&Err(error.clone()));
                }
                claimed
            }
            Err(error) => self.unlocked(distributed, error),
        }
    }

    /// Waits for the process holding `key`'s lock: after each wake-up,
    /// reads the key (the holder stored it: done) or tries the lock again
    /// (the holder left without a value: take over).
    async fn wait_for_holder<A: Answer<V>>(
        &self,
        distributed: &Settings,
        names: &Arc<Names>,
        key: &str,
        mut interest: Option<Interest>,
        mut left: Duration,
    ) -> Claimed<A> {
        let started = Instant::now();
        self.counters.incr(Counter::LockWaits);
        let waited = |core: &Self| {
            core.counters
                .add_time(Counter::LockWaitNanos, started.elapsed())
        };
        loop {
            if let Some(mut waiting) = interest.take() {
                waiting.wait(left).await;
            }
            if let Some(answer) = self.read_answer::<A>(key).await {
                waited(self);
                self.counters.incr(Counter::LockAnswered);
                return Claimed::Answered(answer);
            }
            match distributed
                .lock
                .attempt(names, distributed.lease, false, true)
                .await
            {
                Ok(Attempt::Acquired(guard)) => {
                    waited(self);
                    return self.won(key, guard, true).await;
                }
                Ok(Attempt::Busy {
                    interest: next,
                    left: next_left,
                }) => (interest, left) = (next, next_left),
                Err(error) => {
                    waited(self);
                    return self.unlocked(distributed, error);
                }
            }
        }
    }

    /// This process took `key`'s lock. A load may have landed between its
    /// read and the lock (another process loaded, stored and released
    /// meanwhile): read again before loading.
    async fn won<A: Answer<V>>(&self, key: &str, guard: LockGuard, waited: bool) -> Claimed<A> {
        if let Some(answer) = self.read_answer::<A>(key).await {
            drop(guard); // released in the background
            self.counters.incr(Counter::LockAnswered);
            return Claimed::Answered(answer);
        }
        if waited {
            self.counters.incr(Counter::LockTakeovers);
        }
        Claimed::Load(self.holding(guard))
    }

    fn holding(&self, guard: LockGuard) -> Held {
        self.counters.incr(Counter::LockAcquisitions);
        Held(Some(guard))
    }

    /// The lock could not be reached: load without it, or refuse.
    fn unlocked<A>(&self, distributed: &Settings, error: Error) -> Claimed<A> {
        if distributed.strict {
            self.counters.incr(Counter::LockRefusals);
            Claimed::Refused(error)
        } else {
            self.counters.incr(Counter::LockFallbacks);
            Claimed::Load(Held::none())
        }
    }
}
