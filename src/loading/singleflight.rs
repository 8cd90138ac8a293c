//! Singleflight: at most one load per key at a time in this process;
//! everyone else who asks for the key meanwhile waits for that load's
//! outcome instead of running their own.
//!
//! # Protocol
//!
//! A sharded table maps each key being loaded to its *flight*: an id and the
//! receiving half of a `watch` channel. The caller that finds no flight
//! registers one and becomes its [`Leader`], holding the sending half;
//! callers that find one clone the receiver and become waiters.
//!
//! The leader runs the loader inline, in its own task, then
//! [`publish`](Leader::publish)es the outcome (a value, "not found", or an
//! error, panics included) and, when dropped, removes the flight from the
//! table. Between the two, late arrivals still find the flight and read the
//! published outcome at once; that span covers the leader's write to the
//! store, so no caller falls between "flight gone" and "value stored".
//!
//! # Cancellation and takeover
//!
//! A waiter owns nothing but its receiver: dropping it (a timeout, a
//! dropped request) affects no one else. A leader that is dropped before
//! publishing (its caller timed out or went away, or its task was aborted)
//! removes the flight and drops the sender; every waiter then sees the
//! channel closed with no outcome, and retries: the first to reach the table
//! leads a new flight with its own loader, the others join that one. Since
//! the old loader is dropped with the leader, two loaders for one key never
//! run at once. Loads are thus bound to callers who still want them: a
//! loader that hangs is abandoned when its caller gives up, instead of
//! holding the key forever as a detached task would.
//!
//! # Why no wake-up is lost
//!
//! - A waiter clones the receiver while holding the table's shard lock, and
//!   the leader removes the flight under the same lock *before* dropping the
//!   sender. So every waiter holds a receiver of a channel whose sender was
//!   alive when the receiver was made, or at worst one that is already
//!   closed, which it notices at once.
//! - `watch` keeps the latest value, and waiters wait with `wait_for`, which
//!   checks the current value before sleeping. An outcome published before a
//!   waiter starts waiting (even before it joined) is seen; the waiter does
//!   not depend on a notification that may have gone out before it listened.
//! - A sender dropped without an outcome closes the channel, which wakes
//!   every sleeping receiver and fails every later wait: abandonment cannot
//!   be missed either.
//!
//! # Between the store and the table
//!
//! A caller reads the store before it looks for a flight, and a leader
//! writes the store before it leaves the table. A caller whose read missed
//! just before a leader's write, and whose look at the table came just after
//! that leader left, would find neither value nor flight and load a second
//! time. So each shard counts the flights that ended in it: a caller notes
//! the count ([`Flights::endings`]) before reading the store, and if it
//! becomes a leader while the count has moved since, the read may predate a
//! write, and [`Leader::must_recheck`] tells it to read again before loading.
//! (The count is read before the store and bumped after the store write and
//! under the shard lock, so the orderings line up.) Only misses pay, and
//! only when a flight of the same shard ended meanwhile.
//!
//! # Invalidation
//!
//! A write or delete of the key (see [`Flights::forget`]) removes its flight
//! from the table without ending it, as Go's `singleflight.Forget` does:
//! the load may have read the data the write replaced, so later callers
//! start a fresh load instead of joining it. The forgotten load still
//! answers its own waiters, but [`Leader::is_current`] tells it not to store
//! its outcome.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::Arc;

use foldhash::fast::RandomState;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::Error;

/// What a load produced: a value or "not found" (`None`), or an error.
pub(crate) type Outcome<V> = Result<Option<V>, Error>;

/// Flights in flight are few (one per key being loaded), so a fixed,
/// modest shard count keeps lock contention between unrelated keys low
/// without a per-core table.
const SHARDS: usize = 64;

/// The keys being loaded, each with its flight.
pub(crate) struct Flights<V> {
    /// A fixed-size array: picking a shard needs no bounds check.
    shards: Box<[Shard<V>; SHARDS]>,
    hasher: RandomState,
    next_id: AtomicU64,
    /// Loads (not refreshes) whose leader is still alive: lets
    /// [`join_load`](Self::join_load) skip the table when there are none.
    loading: AtomicU64,
}

/// One cache line each: the index is a shift, and shards do not share
/// lines.
#[repr(align(64))]
struct Shard<V> {
    table: Mutex<Table<V>>,
    /// Writes (forgets) of keys of this shard: a store read started before
    /// one may be outdated (see [`Flights::writes`]).
    writes: AtomicU64,
    /// Flights that ended in this shard (see "Between the store and the
    /// table"); bumped under the lock, read without it.
    endings: AtomicU64,
}

type Table<V> = HashMap<Arc<str>, Flight<V>, RandomState>;

/// How many flights had ended in a key's shard when a caller read the
/// store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Endings(u64);

struct Flight<V> {
    /// Tells this flight from a later one for the same key.
    id: u64,
    /// When the load began: the soft timeout runs from here for every
    /// caller of the flight, so they all switch to a stale value at once.
    started: Instant,
    /// Cloned by each caller that joins.
    progress: watch::Receiver<Progress<V>>,
    /// A background refresh of a live entry, not a load after a miss.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    refresh: bool,
}

#[derive(Clone)]
enum Progress<V> {
    Loading,
    Done(Outcome<V>),
}

/// What a caller is to the flight for its key.
pub(crate) enum Role<V> {
    /// It registered the flight and must run the load.
    Leader(Leader<V>),
    /// It joined a flight already under way.
    Waiter(Waiter<V>),
}

impl<V: Clone> Flights<V> {
    pub(crate) fn new() -> Arc<Self> {
        Self::with_hasher(RandomState::default())
    }

    /// Flights that pick a key's shard with `hasher`. Given the hasher of
    /// the cache's in-memory store, the hash its lookup computes serves the
    /// flights too ([`endings_of_hash`](Self::endings_of_hash)): a
    /// `get_or_load` hit then hashes its key once.
    pub(crate) fn with_hasher(hasher: RandomState) -> Arc<Self> {
        Arc::new(Flights {
            shards: Box::new(std::array::from_fn(|_| Shard {
                table: Mutex::default(),
                writes: AtomicU64::new(0),
                endings: AtomicU64::new(0),
            })),
            hasher,
            next_id: AtomicU64::new(0),
            loading: AtomicU64::new(0),
        })
    }

    /// Notes how many flights have ended in `key`'s shard. Taken just
    /// before reading the store, and passed to
    /// [`join_or_lead`](Self::join_or_lead).
    pub(crate) fn endings(&self, key: &str) -> Endings {
        self.endings_of_hash(self.hasher.hash_one(key))
    }

    /// [`endings`](Self::endings) of the key whose hash (by this flights'
    /// hasher) is `hash`.
    #[inline]
    pub(crate) fn endings_of_hash(&self, hash: u64) -> Endings {
        Endings(self.shard_of_hash(hash).endings.load(Acquire))
    }

    /// Joins the flight for `key`, or starts one if there is none.
    ///
    /// `read` is what [`endings`](Self::endings) said before the caller's
    /// last store read. `unusable` names a flight whose outcome the caller
    /// has already seen and could not use (a "not found" for a caller that
    /// needs a value): it counts as absent and is replaced rather than
    /// joined again, which would only return the same outcome until its
    /// leader is gone.
    pub(crate) fn join_or_lead(
        self: &Arc<Self>,
        key: &str,
        read: Endings,
        unusable: Option<u64>,
    ) -> Role<V> {
        let shard = self.shard(key);
        let mut table = shard.table.lock();
        match table.get(key) {
            Some(flight) if Some(flight.id) != unusable => Role::Waiter(Waiter {
                id: flight.id,
                started: flight.started,
                progress: flight.progress.clone(),
            }),
            _ => {
                let recheck = shard.endings.load(Relaxed) != read.0;
                Role::Leader(self.register(&mut table, key, recheck, false))
            }
        }
    }

    /// Starts a flight for `key` unless one is under way: a background
    /// refresh.
    pub(crate) fn try_lead(self: &Arc<Self>, key: &str) -> Option<Leader<V>> {
        let mut table = self.shard(key).table.lock();
        (!table.contains_key(key)).then(|| self.register(&mut table, key, false, true))
    }

    /// How many writes of keys of `key`'s shard there have been: a store
    /// read shared between callers is joined only by callers that see the
    /// same count as when it started, so none gets a value read before a
    /// write it follows.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn writes(&self, key: &str) -> u64 {
        self.shard(key).writes.load(Acquire)
    }

    /// Joins the load of `key` under way, if there is one (not a refresh:
    /// a refresh runs while the entry is live, and its callers are
    /// answered by the store at once). For a caller that would otherwise
    /// read the store only to miss: concurrent misses of a key then cost
    /// one store read, not one each. Takes no lock while no load runs.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn join_load(&self, key: &str) -> Option<Waiter<V>> {
        if self.loading.load(Acquire) == 0 {
            return None;
        }
        let table = self.shard(key).table.lock();
        let flight = table.get(key).filter(|flight| !flight.refresh)?;
        Some(Waiter {
            id: flight.id,
            started: flight.started,
            progress: flight.progress.clone(),
        })
    }

    /// Detaches `key`'s flight, if any: later callers start a new one.
    pub(crate) fn forget(&self, key: &str) {
        let shard = self.shard(key);
        shard.writes.fetch_add(1, Release);
        shard.table.lock().remove(key);
    }

    /// Detaches every flight.
    pub(crate) fn forget_all(&self) {
        for shard in self.shards.iter() {
            shard.writes.fetch_add(1, Release);
            shard.table.lock().clear();
        }
    }

    fn register(
        self: &Arc<Self>,
        table: &mut Table<V>,
        key: &str,
        recheck: bool,
        refresh: bool,
    ) -> Leader<V> {
        let id = self.next_id.fetch_add(1, Relaxed);
        if !refresh {
            self.loading.fetch_add(1, Release);
        }
        let key: Arc<str> = Arc::from(key);
        let (sender, progress) = watch::channel(Progress::Loading);
        let started = Instant::now();
        table.insert(
            Arc::clone(&key),
            Flight {
                id,
                started,
                progress,
                refresh,
            },
        );
        Leader {
            flights: Arc::clone(self),
            key,
            id,
            started,
            recheck,
            refresh,
            progress: sender,
        }
    }
}

impl<V> Flights<V> {
    fn shard(&self, key: &str) -> &Shard<V> {
        self.shard_of_hash(self.hasher.hash_one(key))
    }

    #[inline]
    fn shard_of_hash(&self, hash: u64) -> &Shard<V> {
        &self.shards[hash as usize % SHARDS]
    }
}

/// The caller running a flight's load. Dropping it ends the flight: with
/// the published outcome if there is one, as abandoned otherwise.
pub(crate) struct Leader<V> {
    flights: Arc<Flights<V>>,
    key: Arc<str>,
    id: u64,
    started: Instant,
    recheck: bool,
    /// Registered by [`Flights::try_lead`].
    refresh: bool,
    progress: watch::Sender<Progress<V>>,
}

impl<V> Leader<V> {
    /// The key being loaded.
    pub(crate) fn key(&self) -> &Arc<str> {
        &self.key
    }

    /// Whether a flight ended in this key's shard since the leader's store
    /// read, which may then have missed that flight's write: read again
    /// before loading.
    pub(crate) fn must_recheck(&self) -> bool {
        self.recheck
    }

    /// When the flight began.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// A waiter on this very flight: how a caller whose load was moved
    /// into the background (see the soft timeout) waits for it.
    pub(crate) fn subscribe(&self) -> Waiter<V> {
        Waiter {
            id: self.id,
            started: self.started,
            progress: self.progress.subscribe(),
        }
    }

    /// Hands `outcome` to every waiter, present and yet to join.
    pub(crate) fn publish(&self, outcome: Outcome<V>) {
        // `send_replace` stores the value even with no receiver left: the
        // table's own receiver keeps it readable for late joiners.
        self.progress.send_replace(Progress::Done(outcome));
    }

    /// Whether this flight is still the key's registered one, i.e. no write
    /// or delete of the key has happened since it started.
    pub(crate) fn is_current(&self) -> bool {
        let table = self.flights.shard(&self.key).table.lock();
        table
            .get(&*self.key)
            .is_some_and(|flight| flight.id == self.id)
    }
}

impl<V> Drop for Leader<V> {
    fn drop(&mut self) {
        let shard = self.flights.shard(&self.key);
        let mut table = shard.table.lock();
        if table
            .get(&*self.key)
            .is_some_and(|flight| flight.id == self.id)
        {
            table.remove(&*self.key);
        }
        // Counted even for a forgotten flight: a spurious recheck is cheap.
        shard.endings.fetch_add(1, Release);
        if !self.refresh {
            self.flights.loading.fetch_sub(1, Release);
        }
        // The sender is dropped after this, outside the lock and after the
        // removal: see "Why no wake-up is lost" above.
    }
}

/// A caller waiting for another caller's load.
pub(crate) struct Waiter<V> {
    id: u64,
    started: Instant,
    progress: watch::Receiver<Progress<V>>,
}

impl<V: Clone> Waiter<V> {
    /// The flight this waiter joined, for [`Flights::join_or_lead`].
    pub(crate) fn flight(&self) -> u64 {
        self.id
    }

    /// When the flight's load began.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// The flight's outcome, or `None` if its leader went away without one.
    /// Dropping this future abandons only this waiter's wait.
    pub(crate) async fn outcome(mut self) -> Option<Outcome<V>> {
        let progress = self
            .progress
            .wait_for(|progress| matches!(progress, Progress::Done(_)))
            .await
            .ok()?;
        match &*progress {
            Progress::Done(outcome) => Some(outcome.clone()),
            Progress::Loading => None, // excluded by `wait_for`'s predicate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(role: Role<u32>) -> Leader<u32> {
        match role {
            Role::Leader(leader) => leader,
            Role::Waiter(_) => panic!("expected to lead"),
        }
    }

    fn waiter(role: Role<u32>) -> Waiter<u32> {
        match role {
            Role::Waiter(waiter) => waiter,
            Role::Leader(_) => panic!("expected to wait"),
        }
    }

    #[test]
    fn a_hash_by_the_flights_hasher_finds_the_keys_endings() {
        let hasher = RandomState::default();
        let flights = Flights::<u32>::with_hasher(hasher.clone());
        // Keys of every shard: each key's ending shows through its hash only.
        for key in (0..256).map(|i| format!("key{i}")) {
            let before = flights.endings(&key);
            assert_eq!(flights.endings_of_hash(hasher.hash_one(&key)), before);
            drop(leader(flights.join_or_lead(&key, before, None)));
            let after = flights.endings_of_hash(hasher.hash_one(&key));
            assert_ne!(after, before, "{key}: the ended flight is seen");
            assert_eq!(after, flights.endings(&key));
        }
    }

    #[tokio::test]
    async fn waiters_get_the_published_outcome_even_joining_late() {
        let flights = Flights::new();
        let lead = leader(flights.join_or_lead("k", flights.endings("k"), None));
        let early = waiter(flights.join_or_lead("k", flights.endings("k"), None));
        lead.publish(Ok(Some(7)));
        let late = waiter(flights.join_or_lead("k", flights.endings("k"), None));
        assert_eq!(early.outcome().await.unwrap().unwrap(), Some(7));
        assert_eq!(late.outcome().await.unwrap().unwrap(), Some(7));
        drop(lead);
        assert!(matches!(
            flights.join_or_lead("k", flights.endings("k"), None),
            Role::Leader(_)
        ));
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_waiters_and_the_key() {
        let flights = Flights::new();
        let lead = leader(flights.join_or_lead("k", flights.endings("k"), None));
        let wait = waiter(flights.join_or_lead("k", flights.endings("k"), None));
        let outcome = tokio::spawn(wait.outcome());
        tokio::task::yield_now().await;
        drop(lead);
        assert!(outcome.await.unwrap().is_none());
        assert!(flights.try_lead("k").is_some());
    }

    #[tokio::test]
    async fn forgetting_detaches_without_ending_the_flight() {
        let flights = Flights::new();
        let old = leader(flights.join_or_lead("k", flights.endings("k"), None));
        let wait = waiter(flights.join_or_lead("k", flights.endings("k"), None));
        flights.forget("k");
        assert!(!old.is_current());
        let new = leader(flights.join_or_lead("k", flights.endings("k"), None));
        assert!(new.is_current());
        old.publish(Ok(None));
        drop(old); // must not remove the new flight
        assert_eq!(wait.outcome().await.unwrap().unwrap(), None);
        assert!(flights.try_lead("k").is_none());
        drop(new);
        assert!(flights.try_lead("k").is_some());
    }

    #[test]
    fn a_leader_rechecks_when_a_flight_ended_since_its_read() {
        let flights = Flights::<u32>::new();
        let read = flights.endings("k");
        let first = leader(flights.join_or_lead("k", read, None));
        assert!(!first.must_recheck());
        drop(first); // ends after the read...
        let second = leader(flights.join_or_lead("k", read, None));
        assert!(second.must_recheck()); // ...so the read may be stale
        drop(second);
        let fresh = flights.endings("k");
        assert!(!leader(flights.join_or_lead("k", fresh, None)).must_recheck());
    }

    #[tokio::test]
    async fn only_loads_are_joined_before_a_read() {
        let flights = Flights::new();
        assert!(flights.join_load("k").is_none());
        let refresh = flights.try_lead("k").unwrap();
        // A load of another key under way: the table is looked at.
        let other = leader(flights.join_or_lead("j", flights.endings("j"), None));
        assert!(flights.join_load("k").is_none(), "a refresh is not joined");
        drop((refresh, other));
        let load = leader(flights.join_or_lead("k", flights.endings("k"), None));
        let joined = flights.join_load("k").expect("a load is joined");
        assert!(flights.join_load("other").is_none());
        load.publish(Ok(Some(3)));
        assert_eq!(joined.outcome().await.unwrap().unwrap(), Some(3));
        drop(load);
        assert_eq!(flights.loading.load(Relaxed), 0);
        assert!(flights.join_load("k").is_none());
    }

    #[tokio::test]
    async fn a_finished_flight_can_be_replaced() {
        let flights = Flights::new();
        let lead = leader(flights.join_or_lead("k", flights.endings("k"), None));
        let wait = waiter(flights.join_or_lead("k", flights.endings("k"), None));
        let id = wait.flight();
        lead.publish(Ok(None));
        let replacement = leader(flights.join_or_lead("k", flights.endings("k"), Some(id)));
        assert!(!lead.is_current());
        assert!(replacement.is_current());
    }
}
