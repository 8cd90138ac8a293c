//! Adaptive W-TinyLFU: which entry leaves when a shard is over capacity.
//!
//! New entries enter an admission **window**; the rest of the capacity is
//! the **main** space, split into **probation** and **protected** (~80%)
//! segments. When the window overflows, its oldest entry becomes a
//! candidate: it enters main if main has room, or if the frequency sketch
//! rates it above main's victim (the oldest probation entry); otherwise the
//! candidate itself is evicted.
//!
//! # Sizing the window
//! The window's share of the capacity moves at run time, one step per
//! "near miss": when a new key was evicted a moment ago (see
//! [`EvictionHistory`]), the side that let it go (window or main) grows by
//! the key's weight at the other's expense. Each such request is a hit that
//! the cache would have had with that side slightly larger, so the steps
//! follow the slope of the hit rate against the window's size, and the
//! window settles where a near miss on either side is equally likely: small
//! for frequency-biased workloads (TinyLFU filters almost every newcomer),
//! large for recency-biased ones.
//!
//! An earlier version compared the hit rates of successive samples of
//! requests (Caffeine's hill climber). It could not tell a gain due to its
//! last step from one due to time: while a cache fills and its sketch
//! learns, the hit rate climbs whatever the window does, and the climber
//! grew the window on the strength of it. Measured with `cachex-bench
//! hitratio --all-traces`, the near misses score higher on 20 of the 26
//! rows (by up to 2.8 points), tie on five and lose 0.6 point on one
//! (`arc_oltp` at 46,720 entries); see `docs/BENCHMARKS.md`.
//!
//! # Why CLOCK rather than strict LRU order
//! A read never reorders a queue or touches the sketch: it sets a
//! "referenced" bit in the entry (a plain store, under the shard's *shared*
//! lock). Queue order is corrected lazily, when an entry reaches the head
//! of its queue: a referenced window entry gets a second pass through the
//! window, a referenced probation entry is promoted to protected, and a
//! referenced protected entry goes back to its tail (an unreferenced one is
//! demoted to probation). Each time the hand finds the bit set, it counts
//! one use in the sketch ([`take_use`]). That is the CLOCK approximation of
//! each segment's LRU order, and it keeps the hit path free of the pointer
//! chasing that strict LRU needs and of the sketch's cache misses.

use super::history::{EvictionHistory, Side};
use super::sketch::FrequencySketch;
use crate::engine::list::{LinkArena, Lists};

/// The three segments, also used as list ids in [`Lists`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Segment {
    Window = 0,
    Probation = 1,
    Protected = 2,
}

impl Segment {
    pub(crate) fn from_bits(bits: u32) -> Segment {
        match bits {
            0 => Segment::Window,
            1 => Segment::Probation,
            _ => Segment::Protected,
        }
    }
}

/// What the policy needs to know about each entry.
pub(crate) trait PolicyArena: LinkArena {
    fn weight(&mut self, idx: u32) -> u64;
    fn hash(&mut self, idx: u32) -> u32;
    fn segment(&mut self, idx: u32) -> Segment;
    fn set_segment(&mut self, idx: u32, segment: Segment);
    /// Returns whether the entry was read since the last call, and clears it.
    fn take_referenced(&mut self, idx: u32) -> bool;
}

/// Share of the capacity the window starts with (as in Caffeine). Against
/// 5%, measured with `cachex-bench hitratio` (12 instances on the small
/// traces): the loop traces gain 0.3 to 0.7 point (`lirs_ps`, `lirs_gli`),
/// Zipf up to 0.16, and nothing loses more than 0.14. The near misses grow
/// the window quickly where recency pays (`corda` at 904 entries: 33.3%
/// either way; the old climber needed 5% to reach it).
const INITIAL_WINDOW_SHARE: f64 = 0.01;
/// Share of the main space reserved for the protected segment.
const PROTECTED_SHARE: f64 = 0.80;
/// How far back each side's eviction history looks, as a share of the
/// capacity in entries. Measured over `cachex-bench hitratio --all-traces`:
/// 5% and 10% left `arc_p3` at 190,635 entries 1.5 to 3.5 points short (too
/// few near misses to move its window from 5% to the 60% it needs); 20% to
/// 40% scored alike elsewhere, within 0.4 point.
const HISTORY_SHARE: f64 = 0.25;

/// The eviction policy of one shard.
#[derive(Debug)]
pub(crate) struct TinyLfu {
    queues: Lists,
    /// Weight of each segment's entries.
    weights: [u64; 3],
    /// Their sum, kept rather than added up: every write asks for it.
    total_weight: u64,
    capacity: u64,
    window_max: u64,
    protected_max: u64,
    /// Recent evictions, whose return moves the window (see the module docs).
    history: EvictionHistory,
    /// Capacity in entries when bounded by count; `None` when weighted.
    entry_capacity: Option<u64>,
}

impl TinyLfu {
    /// `capacity` is in weight units; `weighted` says whether entries weigh
    /// more than one (then the sketch and the history are sized from the
    /// entry count seen).
    pub(crate) fn new(capacity: u64, weighted: bool) -> Self {
        let window_max = if capacity == 0 {
            0
        } else {
            ((capacity as f64 * INITIAL_WINDOW_SHARE) as u64).max(1)
        };
        let mut policy = TinyLfu {
            queues: Lists::new(3),
            weights: [0; 3],
            total_weight: 0,
            capacity,
            window_max,
            protected_max: 0,
            history: EvictionHistory::default(),
            entry_capacity: (!weighted).then_some(capacity),
        };
        policy.protected_max = policy.protected_share();
        policy
    }

    /// Total weight of the entries the policy tracks.
    pub(crate) fn weight(&self) -> u64 {
        self.total_weight
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// A new entry was stored at `idx`; `entries` is the shard's entry count.
    /// If the key was evicted a moment ago, the side that evicted it grows.
    pub(crate) fn on_insert(
        &mut self,
        arena: &mut impl PolicyArena,
        sketch: &mut FrequencySketch,
        idx: u32,
        entries: usize,
    ) {
        let weight = arena.weight(idx);
        self.weights[Segment::Window as usize] += weight;
        self.total_weight += weight;
        arena.set_segment(idx, Segment::Window);
        self.queues.push_back(arena, Segment::Window as usize, idx);
        self.ensure_sketch(arena, sketch, entries);
        let hash = arena.hash(idx);
        if let Some(side) = self.history.take(hash) {
            let step = weight.saturating_mul(self.history.sample_rate());
            self.grow(side, step);
        }
        sketch.increment(hash);
    }

    /// Moves `step` of capacity to `side` from the other, keeping at least
    /// one unit on each side: with no main space nothing would be evicted
    /// from main, and the window could never learn to shrink.
    fn grow(&mut self, side: Side, step: u64) {
        let window = match side {
            Side::Window => self.window_max.saturating_add(step),
            Side::Main => self.window_max.saturating_sub(step),
        };
        self.window_max = window.clamp(1, self.capacity.saturating_sub(1).max(1));
        self.protected_max = self.protected_share();
    }

    /// An entry's value was replaced; its weight went from `old` to its
    /// current one. The write counts as a use of the entry, which the shard
    /// counts in the sketch itself (unless the entry is marked for the hand
    /// to count), so this only moves weight.
    pub(crate) fn on_update(&mut self, arena: &mut impl PolicyArena, idx: u32, old: u64) {
        let segment = arena.segment(idx) as usize;
        let new = arena.weight(idx);
        self.weights[segment] = self.weights[segment] - old + new;
        self.total_weight = self.total_weight - old + new;
    }

    /// Whether the entries tracked weigh more than the capacity (eviction
    /// is due).
    pub(crate) fn is_over_capacity(&self) -> bool {
        self.weight() > self.capacity
    }

    /// The entry at `idx` is leaving the cache.
    pub(crate) fn on_remove(&mut self, arena: &mut impl PolicyArena, idx: u32) {
        let segment = arena.segment(idx) as usize;
        let weight = arena.weight(idx);
        self.weights[segment] -= weight;
        self.total_weight -= weight;
        self.queues.unlink(arena, idx);
    }

    /// The entry at `from` is moving to `to` (see [`Lists::relocate`]).
    pub(crate) fn relocate(&mut self, arena: &mut impl PolicyArena, from: u32, to: u32) {
        self.queues.relocate(arena, from, to);
    }

    /// Forgets every entry (the shard was cleared); frequencies are kept.
    pub(crate) fn reset(&mut self) {
        self.queues.reset();
        self.weights = [0; 3];
        self.total_weight = 0;
    }

    /// The next entry to evict while the shard is over capacity, or `None`
    /// once it fits. The returned entry is still linked; the caller removes
    /// it (calling [`TinyLfu::on_remove`]) before asking again.
    pub(crate) fn next_victim(
        &mut self,
        arena: &mut impl PolicyArena,
        sketch: &mut FrequencySketch,
    ) -> Option<u32> {
        while self.is_over_capacity() {
            if self.weights[Segment::Window as usize] > self.window_max {
                let candidate = self.queues.head(Segment::Window as usize)?;
                if take_use(arena, sketch, candidate) {
                    // Read while in the window: another pass through it.
                    self.queues
                        .move_to_back(arena, Segment::Window as usize, candidate);
                    continue;
                }
                let weight = arena.weight(candidate);
                if self.main_weight() + weight <= self.main_max() {
                    self.move_to(arena, candidate, Segment::Probation);
                    self.history.passed_on();
                    continue;
                }
                let Some(victim) = self.main_victim(arena, sketch) else {
                    return Some(self.evicted(arena, Side::Window, candidate));
                };
                let candidate_hash = arena.hash(candidate);
                let victim_hash = arena.hash(victim);
                if sketch.frequency(candidate_hash) > sketch.frequency(victim_hash) {
                    self.move_to(arena, candidate, Segment::Probation);
                    self.history.passed_on();
                    self.history.evicted(Side::Main, victim_hash);
                    return Some(victim);
                }
                self.history.evicted(Side::Window, candidate_hash);
                return Some(candidate);
            }
            // The window is within its share, so main is over its own.
            if let Some(victim) = self.main_victim(arena, sketch) {
                return Some(self.evicted(arena, Side::Main, victim));
            }
            let candidate = self.queues.head(Segment::Window as usize)?;
            return Some(self.evicted(arena, Side::Window, candidate));
        }
        None
    }

    /// Notes in the history that `side` evicts the entry at `idx`.
    fn evicted(&mut self, arena: &mut impl PolicyArena, side: Side, idx: u32) -> u32 {
        self.history.evicted(side, arena.hash(idx));
        idx
    }

    /// Main space's eviction candidate: the oldest unreferenced probation
    /// entry, promoting referenced ones on the way; protected's oldest when
    /// probation is empty.
    fn main_victim(
        &mut self,
        arena: &mut impl PolicyArena,
        sketch: &mut FrequencySketch,
    ) -> Option<u32> {
        loop {
            if let Some(idx) = self.queues.head(Segment::Probation as usize) {
                if !take_use(arena, sketch, idx) {
                    return Some(idx);
                }
                self.move_to(arena, idx, Segment::Protected);
                self.rebalance_protected(arena, sketch);
                continue;
            }
            let idx = self.queues.head(Segment::Protected as usize)?;
            if !take_use(arena, sketch, idx) {
                return Some(idx);
            }
            self.queues
                .move_to_back(arena, Segment::Protected as usize, idx);
        }
    }

    /// Demotes protected entries to probation while protected is over its
    /// share, giving referenced ones another pass instead.
    fn rebalance_protected(&mut self, arena: &mut impl PolicyArena, sketch: &mut FrequencySketch) {
        while self.weights[Segment::Protected as usize] > self.protected_max {
            let Some(idx) = self.queues.head(Segment::Protected as usize) else {
                return;
            };
            if take_use(arena, sketch, idx) {
                self.queues
                    .move_to_back(arena, Segment::Protected as usize, idx);
            } else {
                self.move_to(arena, idx, Segment::Probation);
            }
        }
    }

    /// Moves an entry to the tail of another segment, carrying its weight.
    fn move_to(&mut self, arena: &mut impl PolicyArena, idx: u32, to: Segment) {
        let weight = arena.weight(idx);
        let from = arena.segment(idx);
        self.weights[from as usize] -= weight;
        self.weights[to as usize] += weight;
        arena.set_segment(idx, to);
        self.queues.move_to_back(arena, to as usize, idx);
    }

    fn main_weight(&self) -> u64 {
        self.weights[Segment::Probation as usize] + self.weights[Segment::Protected as usize]
    }

    fn main_max(&self) -> u64 {
        self.capacity - self.window_max
    }

    fn protected_share(&self) -> u64 {
        (self.main_max() as f64 * PROTECTED_SHARE) as u64
    }

    /// Allocates the sketch and the eviction history once the shard is half
    /// full: admission decisions only start when it is full, and an idle
    /// cache should not pay for them.
    ///
    /// The entries already cached (all but the newest, at `entries - 1`,
    /// which the caller counts) are counted once each as it starts: each was
    /// requested at least once. Starting from zeros instead rated the first
    /// half of the cache below every later newcomer, which then displaced
    /// it: `lirs_gli` at 632 entries had 31% hits, 41.5% with this seeding
    /// (Bélády: 42.2%).
    fn ensure_sketch(
        &mut self,
        arena: &mut impl PolicyArena,
        sketch: &mut FrequencySketch,
        entries: usize,
    ) {
        if sketch.is_allocated() || self.weight() * 2 < self.capacity {
            return;
        }
        let expected = match self.entry_capacity {
            Some(capacity) => capacity as usize,
            None => entries.saturating_mul(2),
        };
        sketch.ensure_capacity(expected);
        for idx in 0..entries.saturating_sub(1) {
            sketch.increment(arena.hash(idx as u32));
        }
        self.history
            .ensure_depth((expected as f64 * HISTORY_SHARE) as u64);
    }
}

/// Whether the entry at `idx` was read since the hand last passed it,
/// clearing the mark; if so, the reads count once in the sketch, here.
fn take_use(arena: &mut impl PolicyArena, sketch: &mut FrequencySketch, idx: u32) -> bool {
    let used = arena.take_referenced(idx);
    if used {
        sketch.increment(arena.hash(idx));
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::list::Link;
    use std::collections::HashMap;

    /// A policy driven the way a shard drives it, over entries that are
    /// never moved (a removed entry's index is simply not reused).
    struct Replay {
        policy: TinyLfu,
        sketch: FrequencySketch,
        arena: Arena,
        index: HashMap<u64, u32>,
        hits: u64,
    }

    #[derive(Default)]
    struct Arena {
        links: Vec<Link>,
        hashes: Vec<u32>,
        segments: Vec<Segment>,
        referenced: Vec<bool>,
        keys: Vec<u64>,
    }

    impl LinkArena for Arena {
        fn link(&mut self, idx: u32) -> &mut Link {
            &mut self.links[idx as usize]
        }
    }

    impl PolicyArena for Arena {
        fn weight(&mut self, _: u32) -> u64 {
            1
        }
        fn hash(&mut self, idx: u32) -> u32 {
            self.hashes[idx as usize]
        }
        fn segment(&mut self, idx: u32) -> Segment {
            self.segments[idx as usize]
        }
        fn set_segment(&mut self, idx: u32, segment: Segment) {
            self.segments[idx as usize] = segment;
        }
        fn take_referenced(&mut self, idx: u32) -> bool {
            std::mem::take(&mut self.referenced[idx as usize])
        }
    }

    impl Replay {
        /// `weighted`: as a cache with a weigher (every entry weighs 1
        /// here), whose sketch and history are sized from the entries seen.
        fn new(capacity: u64, weighted: bool) -> Self {
            Replay {
                policy: TinyLfu::new(capacity, weighted),
                sketch: FrequencySketch::default(),
                arena: Arena::default(),
                index: HashMap::new(),
                hits: 0,
            }
        }

        /// Get, then insert on a miss (as `cachex-bench hitratio` does).
        fn request(&mut self, key: u64) {
            let hash = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32;
            if let Some(&idx) = self.index.get(&key) {
                self.hits += 1;
                // As a shard's hit: mark the entry; the hand counts it.
                self.arena.referenced[idx as usize] = true;
                return;
            }
            let idx = self.arena.keys.len() as u32;
            self.arena.links.push(Link::UNLINKED);
            self.arena.hashes.push(hash);
            self.arena.segments.push(Segment::Window);
            self.arena.referenced.push(false);
            self.arena.keys.push(key);
            self.index.insert(key, idx);
            let entries = self.index.len();
            self.policy
                .on_insert(&mut self.arena, &mut self.sketch, idx, entries);
            while let Some(victim) = self.policy.next_victim(&mut self.arena, &mut self.sketch) {
                self.policy.on_remove(&mut self.arena, victim);
                self.index.remove(&self.arena.keys[victim as usize]);
            }
            assert!(self.policy.weight() <= self.policy.capacity());
        }
    }

    #[test]
    fn the_window_grows_when_dropped_newcomers_come_back() {
        // Every key is used twice, 200 requests apart, and never again: a
        // window of 200 of the 1,000 entries keeps every key for its second
        // use, while TinyLFU, seeing each key as rarely as the next, cannot
        // tell which newcomers to admit.
        for weighted in [false, true] {
            let mut replay = Replay::new(1000, weighted);
            for key in 0..200_000u64 {
                if key == 100_000 {
                    replay.hits = 0;
                }
                replay.request(key);
                if key >= 100 {
                    replay.request(key - 100);
                }
            }
            let window = replay.policy.window_max;
            let hits = replay.hits;
            assert!(
                window > 150,
                "weighted {weighted}: window {window}, hits {hits}"
            );
            // The last 100,000 second uses: nearly all hit.
            assert!(
                hits > 90_000,
                "weighted {weighted}: window {window}, hits {hits}"
            );
        }
    }

    #[test]
    fn the_window_shrinks_when_main_evicts_what_comes_back() {
        // A loop over 900 hot keys, each followed by a key used only once,
        // in a cache of 1,000 starting with a window of half of it: main
        // is too small for the hot keys until the window gives way.
        for weighted in [false, true] {
            let mut replay = Replay::new(1000, weighted);
            replay.policy.window_max = 500;
            replay.policy.protected_max = replay.policy.protected_share();
            let mut fresh = 1_000_000u64;
            for round in 0..200 {
                if round == 100 {
                    replay.hits = 0;
                }
                for key in 0..900u64 {
                    replay.request(key);
                    replay.request(fresh);
                    fresh += 1;
                }
            }
            let window = replay.policy.window_max;
            let hits = replay.hits;
            assert!(
                window < 100,
                "weighted {weighted}: window {window}, hits {hits}"
            );
            // The last 100 rounds: nearly every hot request hits.
            assert!(
                hits > 100 * 900 * 9 / 10,
                "weighted {weighted}: window {window}, hits {hits}"
            );
        }
    }

    #[test]
    fn the_window_keeps_one_entry_on_each_side() {
        let mut policy = TinyLfu::new(10, false);
        policy.grow(Side::Main, 100);
        assert_eq!(policy.window_max, 1);
        policy.grow(Side::Window, 100);
        assert_eq!(policy.window_max, 9);
        let mut single = TinyLfu::new(1, false);
        single.grow(Side::Main, 1);
        assert_eq!(single.window_max, 1);
    }
}
