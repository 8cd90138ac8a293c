//! L1: the in-process tier, and the locks that keep it from holding a
//! value older than what this process last wrote or was told about.
//!
//! The danger is a slow L2 read racing a write: the read fetches the old
//! value, the write (a `set`, a `delete`, an invalidation from another
//! process) goes through, then the read copies the old value into L1, where
//! it would stay until its TTL. Every L1 change except a plain hit goes
//! through one of 256 stripe locks, each guarding a counter bumped by every
//! write to a key of that stripe. A read takes a [`Ticket`] (the counter)
//! before asking L2 and promotes only if the counter has not moved, under
//! the same lock. `clear` (and a lost subscription) bumps an epoch held in
//! a read-write lock that promotions take for reading.
//!
//! Keys sharing a stripe cost each other a skipped promotion now and then,
//! never a stale value.

use std::hash::BuildHasher;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;

use crate::store::{Envelope, Stored};
use crate::{MemoryCache, Ttl};

const STRIPES: usize = 256;

/// What L1 keeps under a key.
#[derive(Clone)]
pub(crate) struct L1Entry<V> {
    envelope: Envelope<V>,
    /// When the entry expires in L2 (`None`: never), so that `get` reports
    /// the real remaining TTL, not L1's shorter one: refresh decisions in
    /// the cache must not depend on which tier answered.
    expires: Option<Instant>,
    kind: Kind,
}

/// Where an L1 entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Written by this process.
    Written,
    /// Copied from L2: a write-behind write that lands in L2 after the
    /// copy was made drops it.
    Promoted,
    /// A write-behind delete not yet applied to L2: reads answer "nothing"
    /// instead of bringing the old value back from L2.
    Tombstone,
}

/// The stripe counter and epoch seen before an L2 read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    epoch: u64,
    stripe: usize,
    seq: u64,
    /// When the read started: L2's remaining TTL is counted from here, so
    /// that the L1 copy never outlives the L2 entry by the round trip.
    at: Instant,
}

pub(crate) struct Local<V> {
    engine: MemoryCache<String, L1Entry<V>>,
    epoch: RwLock<u64>,
    stripes: Box<[Mutex<u64>]>,
    hasher: foldhash::fast::RandomState,
    /// The longest an entry stays in L1 (`None`: as long as in L2).
    ttl_cap: Option<Duration>,
}

impl<V: Clone + Send + Sync + 'static> Local<V> {
    pub(crate) fn new(capacity: u64, ttl_cap: Option<Duration>) -> Self {
        Local {
            engine: MemoryCache::builder()
                .max_capacity(capacity)
                .clock(|| Instant::now().into_std())
                .build(),
            epoch: RwLock::new(0),
            stripes: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            hasher: foldhash::fast::RandomState::default(),
            ttl_cap,
        }
    }

    pub(crate) fn engine(&self) -> &MemoryCache<String, L1Entry<V>> {
        &self.engine
    }

    /// The L1 entry under `key`, with its remaining L2 TTL: `None` if L1
    /// has nothing, `Some(None)` if the key's delete is still on its way
    /// to L2 (so L2 must not be asked).
    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<Option<Stored<V>>> {
        let entry = self.engine.get(key)?;
        if entry.kind == Kind::Tombstone {
            return Some(None);
        }
        let remaining_ttl = entry
            .expires
            .map(|at| at.saturating_duration_since(Instant::now()));
        Some(Some(Stored {
            envelope: entry.envelope,
            remaining_ttl,
        }))
    }

    /// Like [`get`](Self::get), without the remaining TTL (no clock read).
    #[inline]
    pub(crate) fn get_envelope(&self, key: &str) -> Option<Option<Envelope<V>>> {
        let entry = self.engine.get(key)?;
        Some((entry.kind != Kind::Tombstone).then_some(entry.envelope))
    }

    /// Like [`get`](Self::get), for the remaining TTL only.
    pub(crate) fn remaining_ttl(&self, key: &str) -> Option<Option<Option<Duration>>> {
        Some(self.get(key)?.map(|stored| stored.remaining_ttl))
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.engine.contains_key(key)
    }

    fn stripe(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) % STRIPES
    }

    /// Taken before reading `key` from L2.
    pub(crate) fn ticket(&self, key: &str) -> Ticket {
        let epoch = *self.epoch.read();
        let stripe = self.stripe(key);
        let seq = *self.stripes[stripe].lock();
        Ticket {
            epoch,
            stripe,
            seq,
            at: Instant::now(),
        }
    }

    /// Copies an L2 answer into L1, unless `key` was written, deleted or
    /// invalidated since `ticket` was taken, or L1 already holds something
    /// newer for it. Answers whether it did.
    pub(crate) fn promote(&self, key: &str, ticket: Ticket, stored: &Stored<V>) -> bool {
        let ttl = match stored.remaining_ttl {
            Some(left) => match left.checked_sub(ticket.at.elapsed()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return false,
            },
            None => None,
        };
        let epoch = self.epoch.read();
        if *epoch != ticket.epoch {
            return false;
        }
        let seq = self.stripes[ticket.stripe].lock();
        if *seq != ticket.seq || self.engine.contains_key(key) {
            return false;
        }
        self.insert(key, stored.envelope.clone(), ttl, Kind::Promoted);
        true
    }

    /// Drops `key` from L1 and makes reads under way skip their promotion.
    /// Answers whether L1 held it.
    pub(crate) fn invalidate(&self, key: &str) -> bool {
        let _epoch = self.epoch.read();
        let mut seq = self.stripes[self.stripe(key)].lock();
        *seq += 1;
        self.engine
            .remove(key)
            .is_some_and(|entry| entry.kind != Kind::Tombstone)
    }

    /// Starts a write-through write: drops the old value from L1 and
    /// answers the stripe counter to hand to [`finish_write`](Self::finish_write).
    pub(crate) fn begin_write(&self, key: &str) -> u64 {
        let _epoch = self.epoch.read();
        let mut seq = self.stripes[self.stripe(key)].lock();
        *seq += 1;
        self.engine.remove(key);
        *seq
    }

    /// Ends a write-through write: puts `entry` in L1 if nothing else
    /// touched `key` meanwhile (another write or an invalidation, whose
    /// order against this one in L2 is unknown: then L1 is left empty and
    /// the next read asks L2, the arbiter).
    pub(crate) fn finish_write(
        &self,
        key: &str,
        mine: u64,
        entry: Option<(Envelope<V>, Option<Duration>)>,
    ) {
        let _epoch = self.epoch.read();
        let mut seq = self.stripes[self.stripe(key)].lock();
        match entry {
            Some((envelope, ttl)) if *seq == mine => self.insert(key, envelope, ttl, Kind::Written),
            _ => {
                self.engine.remove(key);
            }
        }
        // Reads that started during the write must not promote over it.
        *seq += 1;
    }

    /// Writes `key` to L1 only (write-behind, or L2 unavailable).
    pub(crate) fn write(&self, key: &str, envelope: Envelope<V>, ttl: Option<Duration>) {
        let _epoch = self.epoch.read();
        let mut seq = self.stripes[self.stripe(key)].lock();
        *seq += 1;
        self.insert(key, envelope, ttl, Kind::Written);
    }

    /// A write-behind delete: L1 answers "nothing" for `key` until the
    /// delete reaches L2 (at most `ttl`). Answers whether L1 held a value.
    pub(crate) fn tombstone(&self, key: &str, ttl: Duration) -> bool {
        let _epoch = self.epoch.read();
        let mut seq = self.stripes[self.stripe(key)].lock();
        *seq += 1;
        let had = self
            .engine
            .remove(key)
            .is_some_and(|entry| entry.kind != Kind::Tombstone);
        self.insert(key, Envelope::not_found(), Some(ttl), Kind::Tombstone);
        had
    }

    /// A write-behind write of `key` reached L2: a copy of the older L2
    /// value promoted meanwhile is dropped, and so is a tombstone (L2 now
    /// answers for the key); this process's own write stays.
    pub(crate) fn settle(&self, key: &str) {
        let _epoch = self.epoch.read();
        let mut seq = self.stripes[self.stripe(key)].lock();
        *seq += 1;
        if self
            .engine
            .get(key)
            .is_some_and(|entry| entry.kind != Kind::Written)
        {
            self.engine.remove(key);
        }
    }

    /// Empties L1; reads under way will not promote.
    pub(crate) fn clear(&self) {
        let mut epoch = self.epoch.write();
        *epoch += 1;
        self.engine.clear();
    }

    fn insert(&self, key: &str, envelope: Envelope<V>, ttl: Option<Duration>, kind: Kind) {
        let expires = ttl.and_then(|ttl| Instant::now().checked_add(ttl));
        let l1_ttl = match (ttl, self.ttl_cap) {
            (Some(ttl), Some(cap)) => Ttl::After(ttl.min(cap)),
            (Some(ttl), None) => Ttl::After(ttl),
            (None, Some(cap)) => Ttl::After(cap),
            (None, None) => Ttl::Never,
        };
        let entry = L1Entry {
            envelope,
            expires,
            kind,
        };
        self.engine.insert_with_ttl(key.to_owned(), entry, l1_ttl);
    }
}
