//! One shard: a hash table over a dense vector of slots, its policy, its
//! timer wheel, behind one reader-writer lock ([`ShardLock`], whose readers
//! write no shared cache line, so hits scale with cores).
//!
//! Reads take the shared side and never allocate, reorder or count
//! anything: a hit sets the entry's referenced bit (a plain store, skipped
//! when the bit is set already), and that is all. The policy counts the use
//! in the frequency sketch when its CLOCK hand next passes the entry and
//! finds the bit (`TinyLfu`), under the write lock it holds anyway.
//!
//! So the sketch counts an entry's hits once per trip of the hand past it,
//! not every hit: a deliberate sampling. The bulk of hits land on hot
//! entries whose counters sit at or near the sketch's ceiling of 15 anyway,
//! and recording each of them mostly bought cache misses in the sketch and
//! earlier halving. Measured with `cachex-bench hitratio --all-traces`
//! against counting every hit: on the 26 trace/capacity pairs the hit ratio
//! moved by -0.9 to +0.9 points (median +0.1, every Zipf case up), while the
//! instructions per operation of the Zipf 90/10 workload fell by 30%
//! (callgrind). Counting at the hand rather than at the first hit of each
//! trip (recorded in a read buffer and replayed later) saves another 13% of
//! those instructions and makes T1 and all-hit reads about 10% faster
//! (`docs/BENCHMARKS.md`); it costs `lirs_ps` at 154 entries about half a
//! point.
//!
//! Every write takes the exclusive side and first does the shard's pending
//! maintenance (reclaiming expired entries), so upkeep rides on ordinary
//! traffic and no background thread is needed.
//! The frequency sketch lives in the shard's state, used only by writers
//! (an overwrite counts as a use of its key, unless the entry is marked
//! for the hand to count already).
//! Entries that leave are handed back to the caller, which tells the
//! listener after the lock is released (so a listener may use the cache).

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::mem;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use hashbrown::HashTable;

use super::config::Config;
use super::shard_lock::{ReadOp, ShardLock, Tally};
use super::slot::{Slot, Slots, MAX_ENTRY_WEIGHT, NEVER};
use super::stats::{CacheStats, RemovalCause, WriteCounters, WriteEvent};
use super::timer_wheel::TimerWheel;
use crate::policy::{FrequencySketch, TinyLfu};
use crate::Ttl;

/// What a read found, decided under the lock and acted on after it.
enum Lookup<R> {
    /// A live entry, and what the reader took from it.
    Live(R),
    Absent,
    Expired,
}

/// Entries that left the cache during one operation, for the listener.
pub(crate) struct Departed<K, V> {
    entries: Vec<(K, V, RemovalCause)>,
    keep: bool,
}

impl<K, V> Departed<K, V> {
    pub(crate) fn new(keep: bool) -> Self {
        Departed {
            entries: Vec::new(),
            keep,
        }
    }

    fn push(&mut self, key: K, value: V, cause: RemovalCause) {
        if self.keep {
            self.entries.push((key, value, cause));
        }
    }

    pub(crate) fn into_entries(self) -> Vec<(K, V, RemovalCause)> {
        self.entries
    }
}

/// The part of [`Shard::read`] done under the lock: find the key, check
/// its expiry, apply the reader. A type rather than a closure so that it is
/// always inlined: inside a larger caller (the async cache's hit path) the
/// compiler left the closure, or the table probe inside it, a call, which
/// cost a hit about 30 instructions (callgrind).
struct FindRead<'a, Q: ?Sized, C, F> {
    hash: u64,
    key: &'a Q,
    /// Whether the read counts as a use and in the tally.
    record: bool,
    config: &'a C,
    read: F,
}

impl<K, V, Q, S, R, F> ReadOp<State<K, V>> for FindRead<'_, Q, Config<K, V, S>, F>
where
    K: Hash + Eq + Borrow<Q>,
    Q: Eq + ?Sized,
    F: FnOnce(&Slot<K, V>, u64) -> R,
{
    type Output = Lookup<R>;

    #[inline(always)]
    fn run(self, state: &State<K, V>) -> (Lookup<R>, Tally) {
        let (hit, miss) = if self.record {
            (Tally::Hit, Tally::Miss)
        } else {
            (Tally::Uncounted, Tally::Uncounted)
        };
        let Some(idx) = state.find(self.hash, self.key) else {
            return (Lookup::Absent, miss);
        };
        let slot = &state.slots[idx];
        let mut now = 0;
        if slot.expires() {
            now = self.config.time.now();
            if slot.is_expired(now) {
                return (Lookup::Expired, miss);
            }
        }
        // The policy counts the use when its hand next passes the
        // entry: see the module documentation.
        if self.record {
            slot.mark_referenced();
        }
        (Lookup::Live((self.read)(slot, now)), hit)
    }
}

#[repr(align(64))]
pub(crate) struct Shard<K, V> {
    state: ShardLock<State<K, V>>,
    len: AtomicUsize,
    weight: AtomicU64,
    writes: WriteCounters,
}

struct State<K, V> {
    table: HashTable<u32>,
    slots: Slots<K, V>,
    policy: TinyLfu,
    /// Only writers, which hold the lock exclusively, touch the sketch:
    /// reads leave their uses for the policy's hand to count.
    sketch: FrequencySketch,
    wheel: TimerWheel,
    /// The shard never holds more slots than this (the entry capacity, plus
    /// the one being inserted); `usize::MAX` when weighted.
    max_slots: usize,
    /// State of the jitter's random generator.
    rng: u64,
}

impl<K, V> Shard<K, V> {
    pub(crate) fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    pub(crate) fn weight(&self) -> u64 {
        self.weight.load(Relaxed)
    }

    pub(crate) fn add_stats(&self, stats: &mut CacheStats) {
        let (hits, misses) = self.state.tallies();
        stats.hits = stats.hits.wrapping_add(hits);
        stats.misses = stats.misses.wrapping_add(misses);
        self.writes.add_to(stats);
    }
}

impl<K, V> Shard<K, V>
where
    K: Hash + Eq,
{
    /// A shard holding `capacity` (in weight units if `weighted`).
    pub(crate) fn new(capacity: u64, weighted: bool, stripes: usize, seed: u64) -> Self {
        let max_slots = if weighted {
            usize::MAX
        } else {
            usize::try_from(capacity)
                .unwrap_or(usize::MAX)
                .saturating_add(1)
        };
        Shard {
            state: ShardLock::new(
                State {
                    table: HashTable::new(),
                    slots: Slots::new(),
                    policy: TinyLfu::new(capacity, weighted),
                    sketch: FrequencySketch::default(),
                    wheel: TimerWheel::new(0),
                    max_slots,
                    rng: seed | 1,
                },
                stripes,
            ),
            len: AtomicUsize::new(0),
            weight: AtomicU64::new(0),
            writes: WriteCounters::default(),
        }
    }

    /// Looks `key` up and, if a live entry holds it, applies `read` to it
    /// with the time the expiry check used (0 if the entry never expires).
    /// `record` says whether this counts as a use of the entry (a hit).
    /// Always inlined: `record` and `read` are then known at the call
    /// site, and a get costs no call.
    #[inline(always)]
    pub(crate) fn read<Q, R, S>(
        &self,
        hash: u64,
        key: &Q,
        record: bool,
        config: &Config<K, V, S>,
        read: impl FnOnce(&Slot<K, V>, u64) -> R,
    ) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
        S: BuildHasher,
    {
        // The lock tallies hits and misses (see `shard_lock`).
        let lookup = self.state.read_op(FindRead {
            hash,
            key,
            record,
            config,
            read,
        });
        match lookup {
            Lookup::Live(taken) => Some(taken),
            Lookup::Absent => None,
            Lookup::Expired => {
                self.try_maintain(config);
                None
            }
        }
    }

    /// Inserts or replaces `key`'s value.
    pub(crate) fn insert<S: BuildHasher>(
        &self,
        hash: u64,
        key: K,
        value: V,
        ttl: Ttl,
        config: &Config<K, V, S>,
    ) -> Departed<K, V> {
        let mut departed = Departed::new(config.listener.is_some());
        let weight = config.weigh(&key, &value);
        let mut state = self.state.write();
        state.maintain(self, config, &mut departed);
        let mut clock = LazyNow::new(config);
        let deadline = state.deadline(ttl, config, &mut clock);
        let state = &mut *state;
        let fits = weight <= MAX_ENTRY_WEIGHT && u64::from(weight) <= state.policy.capacity();
        let existing = state.find(hash, &key);
        if !fits {
            // It could never fit: refuse it rather than empty the shard, and
            // drop the old value, which the caller meant to overwrite.
            if let Some(idx) = existing {
                let old = state.remove_at(idx);
                let cause = if old.expires() && old.is_expired(clock.get()) {
                    RemovalCause::Expired
                } else {
                    RemovalCause::Replaced
                };
                self.writes.count(WriteEvent::Removed(cause));
                departed.push(old.key, old.value, cause);
            }
            self.writes.count(WriteEvent::Removed(RemovalCause::Size));
            departed.push(key, value, RemovalCause::Size);
        } else if let Some(idx) = existing {
            let slot = &mut state.slots[idx];
            let old_weight = u64::from(slot.weight());
            let old_expired = slot.expires() && slot.is_expired(clock.get());
            let old_value = mem::replace(&mut slot.value, value);
            slot.set_weight(weight);
            // Overwriting counts towards the key's frequency, unless the
            // entry is marked referenced: the hand will count that use when
            // it passes. It does not set the referenced bit: recency is for
            // entries that are read, and setting it made each eviction's
            // CLOCK sweep 6x longer on the Zipf 90/10 workload (callgrind).
            if !slot.is_referenced() {
                state.sketch.increment(slot.hash);
            }
            let old_deadline = mem::replace(&mut slot.deadline, deadline);
            if old_deadline != deadline {
                let timers = &mut state.slots.timer_view();
                state.wheel.cancel(timers, idx);
                if deadline != NEVER {
                    state.wheel.schedule(timers, idx, deadline);
                }
            }
            state
                .policy
                .on_update(&mut state.slots.queue_view(), idx, old_weight);
            let cause = if old_expired {
                self.writes.count(WriteEvent::Insert);
                RemovalCause::Expired
            } else {
                RemovalCause::Replaced
            };
            self.writes.count(WriteEvent::Removed(cause));
            departed.push(key, old_value, cause);
            if state.policy.is_over_capacity() {
                // The new value is heavier than the old one.
                state.evict(self, &mut departed);
            }
        } else {
            let slot = Slot::new(key, value, hash as u32, weight, deadline);
            state.push(slot);
            self.writes.count(WriteEvent::Insert);
            state.evict(self, &mut departed);
        }
        self.publish_size(state);
        departed
    }

    /// Removes `key`; returns its value if it was live.
    pub(crate) fn remove<Q, S>(
        &self,
        hash: u64,
        key: &Q,
        config: &Config<K, V, S>,
    ) -> (Option<V>, Departed<K, V>)
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
        V: Clone,
        S: BuildHasher,
    {
        let mut departed = Departed::new(config.listener.is_some());
        let mut state = self.state.write();
        state.maintain(self, config, &mut departed);
        let Some(idx) = state.find(hash, key) else {
            // Maintenance may still have reclaimed expired entries.
            self.publish_size(&state);
            return (None, departed);
        };
        let expired = {
            let slot = &state.slots[idx];
            slot.expires() && slot.is_expired(config.time.now())
        };
        let slot = state.remove_at(idx);
        self.publish_size(&state);
        drop(state);
        if expired {
            self.writes
                .count(WriteEvent::Removed(RemovalCause::Expired));
            departed.push(slot.key, slot.value, RemovalCause::Expired);
            return (None, departed);
        }
        self.writes
            .count(WriteEvent::Removed(RemovalCause::Explicit));
        let value = if departed.keep {
            let copy = slot.value.clone();
            departed.push(slot.key, slot.value, RemovalCause::Explicit);
            copy
        } else {
            slot.value
        };
        (Some(value), departed)
    }

    /// Removes every entry.
    pub(crate) fn clear<S>(&self, config: &Config<K, V, S>) -> Departed<K, V> {
        let mut departed = Departed::new(config.listener.is_some());
        let mut state = self.state.write();
        let slots = state.slots.take();
        state.table = HashTable::new();
        state.policy.reset();
        state.wheel.reset();
        self.publish_size(&state);
        drop(state);
        for slot in slots {
            self.writes
                .count(WriteEvent::Removed(RemovalCause::Explicit));
            departed.push(slot.key, slot.value, RemovalCause::Explicit);
        }
        departed
    }

    /// Runs pending maintenance now (reclaims expired entries).
    pub(crate) fn run_pending<S: BuildHasher>(&self, config: &Config<K, V, S>) -> Departed<K, V> {
        let mut departed = Departed::new(config.listener.is_some());
        let mut state = self.state.write();
        state.maintain(self, config, &mut departed);
        self.publish_size(&state);
        departed
    }

    /// Maintenance on the read path (a read met an expired entry): only if
    /// the lock is free right now. Out of line, to keep reads short.
    #[cold]
    #[inline(never)]
    fn try_maintain<S: BuildHasher>(&self, config: &Config<K, V, S>) {
        let Some(mut state) = self.state.try_write() else {
            return;
        };
        let mut departed = Departed::new(config.listener.is_some());
        state.maintain(self, config, &mut departed);
        self.publish_size(&state);
        drop(state);
        config.notify(departed);
    }

    fn publish_size(&self, state: &State<K, V>) {
        self.len.store(state.slots.len(), Relaxed);
        self.weight.store(state.policy.weight(), Relaxed);
    }
}

impl<K, V> State<K, V>
where
    K: Hash + Eq,
{
    #[inline(always)]
    fn find<Q>(&self, hash: u64, key: &Q) -> Option<u32>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        self.table
            .find(table_hash(hash as u32), |&i| {
                self.slots[i].key.borrow() == key
            })
            .copied()
    }

    /// Stores a new entry and hands it to the policy and the wheel.
    fn push(&mut self, slot: Slot<K, V>) {
        let (hash, deadline) = (slot.hash, slot.deadline);
        let idx = self.slots.push(slot, self.max_slots);
        let slots = &self.slots;
        self.table
            .insert_unique(table_hash(hash), idx, |&i| table_hash(slots[i].hash));
        self.policy.on_insert(
            &mut self.slots.queue_view(),
            &mut self.sketch,
            idx,
            idx as usize + 1,
        );
        if deadline != NEVER {
            self.wheel
                .schedule(&mut self.slots.timer_view(), idx, deadline);
        }
    }

    /// Unlinks the entry at `idx` everywhere and takes it out of the slot
    /// vector, moving the last slot into its place.
    fn remove_at(&mut self, idx: u32) -> Slot<K, V> {
        let hash = table_hash(self.slots[idx].hash);
        if let Ok(entry) = self.table.find_entry(hash, |&i| i == idx) {
            entry.remove();
        }
        self.policy.on_remove(&mut self.slots.queue_view(), idx);
        self.wheel.cancel(&mut self.slots.timer_view(), idx);
        let last = (self.slots.len() - 1) as u32;
        if idx != last {
            let last_hash = table_hash(self.slots[last].hash);
            if let Some(entry) = self.table.find_mut(last_hash, |&i| i == last) {
                *entry = idx;
            }
            self.policy
                .relocate(&mut self.slots.queue_view(), last, idx);
            self.wheel.relocate(&mut self.slots.timer_view(), last, idx);
        }
        self.slots.swap_remove(idx)
    }

    /// Reclaims expired entries. Inlined, its common case (no timers)
    /// costs a compare per write.
    #[inline]
    fn maintain<S>(
        &mut self,
        shard: &Shard<K, V>,
        config: &Config<K, V, S>,
        departed: &mut Departed<K, V>,
    ) {
        if !self.wheel.is_empty() {
            self.expire(shard, config, departed);
        }
    }

    /// Reclaims the entries whose deadline has passed.
    #[inline(never)]
    fn expire<S>(
        &mut self,
        shard: &Shard<K, V>,
        config: &Config<K, V, S>,
        departed: &mut Departed<K, V>,
    ) {
        let now = config.time.now();
        self.wheel.advance(&mut self.slots.timer_view(), now);
        while let Some(idx) = self.wheel.pop_due(&mut self.slots.timer_view()) {
            let slot = self.remove_at(idx);
            shard
                .writes
                .count(WriteEvent::Removed(RemovalCause::Expired));
            departed.push(slot.key, slot.value, RemovalCause::Expired);
        }
    }

    /// Evicts until the shard is within its capacity.
    fn evict(&mut self, shard: &Shard<K, V>, departed: &mut Departed<K, V>) {
        while let Some(victim) = self
            .policy
            .next_victim(&mut self.slots.queue_view(), &mut self.sketch)
        {
            let slot = self.remove_at(victim);
            shard.writes.count(WriteEvent::Removed(RemovalCause::Size));
            departed.push(slot.key, slot.value, RemovalCause::Size);
        }
    }

    /// The deadline a write with this TTL choice gets.
    fn deadline<S>(
        &mut self,
        ttl: Ttl,
        config: &Config<K, V, S>,
        clock: &mut LazyNow<'_, K, V, S>,
    ) -> u64 {
        let ttl = match ttl {
            Ttl::Never => return NEVER,
            Ttl::After(ttl) => super::clock::duration_to_nanos(ttl),
            Ttl::Default => match config.default_ttl {
                None => return NEVER,
                Some(ttl) => ttl - (ttl as f64 * config.jitter * self.next_unit()) as u64,
            },
        };
        clock.get().saturating_add(ttl).min(NEVER - 1)
    }

    /// A uniform draw from [0, 1) (splitmix64; jitter needs no more).
    fn next_unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The hash the shard's table files an entry under, derived from the 32
/// bits every slot keeps, so that moving or removing an entry never hashes
/// its key again (for string keys that is most of an eviction's cost). The
/// table takes its bucket from the low bits and its tag from the top seven,
/// which here are bits 25..32 of the stored hash: independent of the
/// bucket bits for tables of up to 2^25 buckets per shard.
#[inline]
fn table_hash(hash: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(hash)
}

/// Reads the clock at most once per operation, and only if needed.
struct LazyNow<'a, K, V, S> {
    config: &'a Config<K, V, S>,
    now: Option<u64>,
}

impl<'a, K, V, S> LazyNow<'a, K, V, S> {
    fn new(config: &'a Config<K, V, S>) -> Self {
        LazyNow { config, now: None }
    }

    fn get(&mut self) -> u64 {
        *self.now.get_or_insert_with(|| self.config.time.now())
    }
}
