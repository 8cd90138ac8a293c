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
//!
//! Every entry also carries the subscription generation it was made in
//! (see `outage.rs`): a hit checks it, so that entries kept through a lost
//! subscription are served only within their staleness bound.

use std::hash::BuildHasher;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::time::Instant;

use super::outage::Outage;
use crate::engine::stripes::{stripe_count, thread_id, StripedCounters};
use crate::store::{Envelope, Stored};
use crate::tag::TagRegistry;
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
    /// The subscription generation the entry was made in.
    generation: u64,
}

/// Where an L1 entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Written by this process.
    Written,
    /// Copied from L2: a write-behind write that lands in L2 after the
    /// copy was made drops it.
    Promoted,
}

/// The stripe counter and epoch seen before an L2 read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    epoch: u64,
    stripe: usize,
    seq: u64,
    /// The subscription generation when the read started: the copy belongs
    /// to it, so a resubscription during the read leaves it unverified.
    generation: u64,
    /// When the read started: L2's remaining TTL is counted from here, so
    /// that the L1 copy never outlives the L2 entry by the round trip.
    at: Instant,
    /// The tag registry's epoch when the read started: tag versions read
    /// with the entry are learnt only if no tag was invalidated since.
    tag_epoch: u64,
}

pub(crate) struct Local<V> {
    engine: MemoryCache<String, L1Entry<V>>,
    epoch: RwLock<u64>,
    stripes: Box<[Mutex<u64>]>,
    hasher: foldhash::fast::RandomState,
    /// The longest an entry stays in L1 (`None`: as long as in L2).
    ttl_cap: Option<Duration>,
    pub(crate) outage: Outage,
    /// [`UNVERIFIED_HITS`], [`REVALIDATIONS`]: striped, because during an
    /// outage every hit of every thread counts one.
    counters: StripedCounters<2>,
    /// The versions of the tags L1's entries carry, as this process knows
    /// them: learnt from L2 reads and writes, forgotten on invalidation
    /// messages (see [`tag`](crate::tag)).
    pub(crate) tags: TagRegistry,
}

/// Hits on entries kept, unverified, through a lost subscription.
const UNVERIFIED_HITS: usize = 0;
/// Entries found unverified past their bound (or after the subscription
/// came back), dropped so that L2 is asked again.
const REVALIDATIONS: usize = 1;

impl<V: Clone + Send + Sync + 'static> Local<V> {
    pub(crate) fn new(capacity: u64, ttl_cap: Option<Duration>, max_stale: Duration) -> Self {
        Local {
            engine: MemoryCache::builder()
                .max_capacity(capacity)
                .clock(|| Instant::now().into_std())
                .build(),
            epoch: RwLock::new(0),
            stripes: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            hasher: foldhash::fast::RandomState::default(),
            ttl_cap,
            outage: Outage::new(max_stale),
            counters: StripedCounters::new(stripe_count()),
            tags: TagRegistry::default(),
        }
    }

    /// Unverified hits and revalidations so far (see the counters).
    pub(crate) fn outage_counts(&self) -> (u64, u64) {
        let [hits, revalidations] = self.counters.sums();
        (hits, revalidations)
    }

    pub(crate) fn engine(&self) -> &MemoryCache<String, L1Entry<V>> {
        &self.engine
    }

    /// The L1 entry under `key`, with its remaining L2 TTL and its tags.
    #[inline]
    pub(crate) fn get(&self, key: &str) -> Option<Stored<V>> {
        self.get_hashed(self.engine.hash_of(key), key, true)
    }

    /// [`get`](Self::get) of the key whose hash by the L1 engine's hasher
    /// is `hash`, with the entry's tags if `keep_tags` (see
    /// `LocalTier::get_hashed`).
    #[inline]
    pub(crate) fn get_hashed(&self, hash: u64, key: &str, keep_tags: bool) -> Option<Stored<V>> {
        self.lookup(hash, key, |entry| Stored {
            envelope: entry.envelope.clone_checked(keep_tags),
            remaining_ttl: entry
                .expires
                .map(|at| at.saturating_duration_since(Instant::now())),
        })
    }

    /// `read` of the entry [`get_hashed`](Self::get_hashed) would answer,
    /// in place (see `LocalTier::read_hashed`).
    #[inline]
    pub(crate) fn read_hashed<R>(
        &self,
        hash: u64,
        key: &str,
        read: impl FnOnce(&Envelope<V>, Option<Duration>) -> R,
    ) -> Option<R> {
        self.lookup(hash, key, |entry| {
            let remaining_ttl = entry
                .expires
                .map(|at| at.saturating_duration_since(Instant::now()));
            read(&entry.envelope, remaining_ttl)
        })
    }

    /// Like [`get`](Self::get), without the remaining TTL (no clock read)
    /// and the tags.
    #[inline]
    pub(crate) fn get_envelope(&self, key: &str) -> Option<Envelope<V>> {
        self.get_envelope_hashed(self.engine.hash_of(key), key)
    }

    /// [`get_envelope`](Self::get_envelope) of the key whose hash by the
    /// L1 engine's hasher is `hash`.
    #[inline]
    pub(crate) fn get_envelope_hashed(&self, hash: u64, key: &str) -> Option<Envelope<V>> {
        self.read_envelope_hashed(hash, key, Envelope::clone_untagged)
    }

    /// `read` of the entry [`get_envelope_hashed`](Self::get_envelope_hashed)
    /// would answer, in place (see `LocalTier::read_hashed`).
    #[inline]
    pub(crate) fn read_envelope_hashed<R>(
        &self,
        hash: u64,
        key: &str,
        read: impl FnOnce(&Envelope<V>) -> R,
    ) -> Option<R> {
        self.lookup(hash, key, |entry| read(&entry.envelope))
    }

    /// `project` of the entry under `key` (whose hash is `hash`) if a read
    /// may use it: none of its tags invalidated since it was written, and
    /// vouched for by the subscription, or kept through its loss within the
    /// staleness bound.
    #[inline]
    fn lookup<R>(&self, hash: u64, key: &str, project: impl FnOnce(&L1Entry<V>) -> R) -> Option<R> {
        let (generation, found) = self.engine.read_hashed(hash, key, |entry, _| {
            let found = entry.envelope.tags_current().then(|| project(entry));
            (entry.generation, found)
        })?;
        let found = found?;
        if self.outage.is_current(generation) || self.unverified(key, generation) {
            return Some(found);
        }
        None
    }

    /// Whether an entry of `generation`, made before the subscription was
    /// lost, may still be served; if not, it is dropped.
    #[cold]
    #[inline(never)]
    fn unverified(&self, key: &str, generation: u64) -> bool {
        if self.outage.serves_unverified(generation) {
            self.counters.add(thread_id(), UNVERIFIED_HITS, 1);
            return true;
        }
        // Drop it, so that this read asks L2 and copies L2's value back.
        // Only this very entry: a write may have replaced it meanwhile.
        // Reads under way need not skip their promotion (no stripe bump):
        // what they read from L2 is no older than this entry.
        let _epoch = self.epoch.read();
        let _seq = self.stripes[self.stripe(key)].lock();
        if self
            .engine
            .peek(key, |now| now.generation == generation)
            .unwrap_or(false)
        {
            self.engine.remove(key);
            self.counters.add(thread_id(), REVALIDATIONS, 1);
        }
        false
    }

    /// Like [`get`](Self::get), for the remaining TTL only.
    pub(crate) fn remaining_ttl(&self, key: &str) -> Option<Option<Duration>> {
        Some(self.get(key)?.remaining_ttl)
    }

    /// Whether a read would find an entry for `key` in L1 (a value or a
    /// "not found"), without counting a read or dropping
    /// an unverified entry.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.engine
            .peek(key, |entry| {
                self.outage.is_current(entry.generation)
                    || self.outage.serves_unverified(entry.generation)
            })
            .unwrap_or(false)
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
            generation: self.outage.generation(),
            at: Instant::now(),
            tag_epoch: self.tags.epoch(),
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
        let entry = self.entry(
            stored.envelope.clone(),
            ttl,
            Kind::Promoted,
            ticket.generation,
        );
        // L2 answered the entry because its tags were at the versions it
        // recorded: those are the tags' versions as of the read, to be
        // learnt unless an invalidation came in since.
        if let Some(tags) = entry.envelope.tags() {
            for stamp in tags.stamps() {
                if !self
                    .tags
                    .learn(&stamp.cell, ticket.tag_epoch, stamp.version)
                {
                    return false;
                }
            }
        }
        self.insert(key, entry, ttl);
        true
    }

    /// Drops `key` from L1 and makes reads under way skip their promotion.
    /// Answers whether L1 held it.
    pub(crate) fn invalidate(&self, key: &str) -> bool {
        let _epoch = self.epoch.read();
        let mut seq = self.stripes[self.stripe(key)].lock();
        *seq += 1;
        self.engine.remove(key).is_some()
    }

    /// Starts a write-through write: drops the old value from L1 and
    /// answers what to hand to [`finish_write`](Self::finish_write).
    pub(crate) fn begin_write(&self, key: &str) -> Write {
        let _epoch = self.epoch.read();
        let mut seq = self.stripes[self.stripe(key)].lock();
        *seq += 1;
        self.engine.remove(key);
        Write {
            seq: *seq,
            // A write that may go to L1 only belongs to the generation it
            // started in: if the subscription comes back meanwhile, L2
            // (which may not have it) decides.
            generation: self.outage.generation(),
        }
    }

    /// Ends a write-through write: puts `entry` in L1 if nothing else
    /// touched `key` meanwhile (another write or an invalidation, whose
    /// order against this one in L2 is unknown: then L1 is left empty and
    /// the next read asks L2, the arbiter).
    pub(crate) fn finish_write(
        &self,
        key: &str,
        mine: Write,
        entry: Option<(Envelope<V>, Option<Duration>)>,
    ) {
        let _epoch = self.epoch.read();
        let mut seq = self.stripes[self.stripe(key)].lock();
        match entry {
            Some((envelope, ttl)) if *seq == mine.seq => {
                let entry = self.entry(envelope, ttl, Kind::Written, mine.generation);
                self.insert(key, entry, ttl);
            }
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
        let entry = self.entry(envelope, ttl, Kind::Written, self.outage.generation());
        self.insert(key, entry, ttl);
    }

    /// A write-behind write of `key` reached L2: a copy of the older L2
    /// value promoted meanwhile is dropped; this process's own write stays.
    pub(crate) fn settle(&self, key: &str) {
        let _epoch = self.epoch.read();
        let mut seq = self.stripes[self.stripe(key)].lock();
        *seq += 1;
        if self
            .engine
            .peek(key, |entry| entry.kind != Kind::Written)
            .unwrap_or(false)
        {
            self.engine.remove(key);
        }
    }

    /// Empties L1, and forgets the tags' versions; reads under way will
    /// not promote.
    pub(crate) fn clear(&self) {
        let mut epoch = self.epoch.write();
        *epoch += 1;
        self.engine.clear();
        self.tags.forget_all();
    }

    /// An L1 entry; its tags, if any, on this registry's cells.
    fn entry(
        &self,
        mut envelope: Envelope<V>,
        ttl: Option<Duration>,
        kind: Kind,
        generation: u64,
    ) -> L1Entry<V> {
        if let Some(tags) = envelope.tags() {
            let bound = tags.rebind(&self.tags);
            envelope.set_tags(Some(bound));
        }
        L1Entry {
            envelope,
            expires: ttl.and_then(|ttl| Instant::now().checked_add(ttl)),
            kind,
            generation,
        }
    }

    /// Inserts `entry`, whose L2 TTL is `ttl`, for at most the L1 TTL cap
    /// (and, while the subscription is lost, the staleness bound).
    fn insert(&self, key: &str, entry: L1Entry<V>, ttl: Option<Duration>) {
        let cap = match (self.ttl_cap, self.outage.ttl_cap()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let l1_ttl = match (ttl, cap) {
            (Some(ttl), Some(cap)) => Ttl::After(ttl.min(cap)),
            (Some(ttl), None) => Ttl::After(ttl),
            (None, Some(cap)) => Ttl::After(cap),
            (None, None) => Ttl::Never,
        };
        self.engine.insert_with_ttl(key.to_owned(), entry, l1_ttl);
    }
}

/// What [`Local::begin_write`] hands to [`Local::finish_write`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Write {
    seq: u64,
    generation: u64,
}
