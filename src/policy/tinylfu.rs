//! Adaptive W-TinyLFU: which entry leaves when a shard is over capacity.
//!
//! New entries enter an admission **window**; the rest of the capacity is
//! the **main** space, split into **probation** and **protected** (~80%)
//! segments. When the window overflows, its oldest entry becomes a
//! candidate: it enters main if main has room, or if the frequency sketch
//! rates it above main's victim (the oldest probation entry); otherwise the
//! candidate itself is evicted. The window's share of the capacity is tuned
//! at run time by the [`HillClimber`].
//!
//! # Why CLOCK rather than strict LRU order
//! A read never reorders a queue: it sets a "referenced" bit in the entry
//! (a plain store, under the shard's *shared* lock) and, if the bit was
//! clear, records the key's hash in a lossy buffer that feeds the sketch. Queue order is corrected
//! lazily, when an entry reaches the head of its queue: a referenced window
//! entry gets a second pass through the window, a referenced probation
//! entry is promoted to protected, and a referenced protected entry goes
//! back to its tail (an unreferenced one is demoted to probation). That is
//! the CLOCK approximation of each segment's LRU order, and it keeps the hit
//! path free of the pointer chasing that strict LRU needs.

use super::climber::HillClimber;
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

/// Share of the capacity the window starts with. Caffeine starts at 1%;
/// 5% costs frequency-biased traces little (the climber shrinks it) and
/// spares recency-biased ones the first samples with a window too small for
/// their reuse distances (`corda` at 904 entries: 30.2% hits → 33.2%, the
/// optimum).
const INITIAL_WINDOW_SHARE: f64 = 0.05;
/// Share of the main space reserved for the protected segment.
const PROTECTED_SHARE: f64 = 0.80;
/// Requests per hill-climbing sample, per unit of capacity in entries.
const SAMPLE_PER_ENTRY: u64 = 10;
/// Fewest requests per sample (whole cache): fewer would measure mostly
/// noise.
const MIN_SAMPLE: u64 = 1024;
/// Most requests per sample (whole cache). Ten per entry suits small caches,
/// whose samples must span the reuse distances of loops, but a large cache
/// would adapt only every few million requests: `arc_p3` at 190,635 entries
/// got two samples in its 3.9 million requests and stayed at 53% hits
/// (LRU: 57.7%). 40,000 requests measure a hit rate to about ±0.25 points.
const MAX_SAMPLE: u64 = 40_000;

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
    climber: HillClimber,
    /// Capacity in entries when bounded by count; `None` when weighted.
    entry_capacity: Option<u64>,
    /// Shards of the cache: the climber is fed this shard's share of the
    /// whole cache's requests.
    shards: u64,
}

impl TinyLfu {
    /// `capacity` is in weight units; `weighted` says whether entries weigh
    /// more than one (then the sketch is sized from the entry count seen);
    /// `shards` is how many policies share the cache's traffic.
    pub(crate) fn new(capacity: u64, weighted: bool, shards: u64) -> Self {
        let window_max = if capacity == 0 {
            0
        } else {
            ((capacity as f64 * INITIAL_WINDOW_SHARE) as u64).max(1)
        };
        let shards = shards.max(1);
        let sample = sample_size(capacity, shards);
        let mut policy = TinyLfu {
            queues: Lists::new(3),
            weights: [0; 3],
            total_weight: 0,
            capacity,
            window_max,
            protected_max: 0,
            climber: HillClimber::new(capacity, sample),
            entry_capacity: (!weighted).then_some(capacity),
            shards,
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
        sketch.increment(arena.hash(idx));
    }

    /// An entry's value was replaced; its weight went from `old` to its
    /// current one. The write counts as a use of the entry, which the shard
    /// records as it records a read (referenced bit and read buffer), so
    /// updates need no sketch.
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

    /// Feeds a sample of requests to the climber and resizes the window.
    pub(crate) fn record_requests(&mut self, hits: u64, misses: u64) {
        if let Some(delta) = self.climber.record(hits, misses) {
            let window = (self.window_max as i64).saturating_add(delta);
            self.window_max = window.clamp(0, self.capacity as i64) as u64;
            self.protected_max = self.protected_share();
        }
    }

    /// The next entry to evict while the shard is over capacity, or `None`
    /// once it fits. The returned entry is still linked; the caller removes
    /// it (calling [`TinyLfu::on_remove`]) before asking again.
    pub(crate) fn next_victim(
        &mut self,
        arena: &mut impl PolicyArena,
        sketch: &FrequencySketch,
    ) -> Option<u32> {
        while self.is_over_capacity() {
            if self.weights[Segment::Window as usize] > self.window_max {
                let candidate = self.queues.head(Segment::Window as usize)?;
                if arena.take_referenced(candidate) {
                    // Read while in the window: another pass through it.
                    self.queues
                        .move_to_back(arena, Segment::Window as usize, candidate);
                    continue;
                }
                let weight = arena.weight(candidate);
                if self.main_weight() + weight <= self.main_max() {
                    self.move_to(arena, candidate, Segment::Probation);
                    continue;
                }
                let Some(victim) = self.main_victim(arena) else {
                    return Some(candidate);
                };
                let admit =
                    sketch.frequency(arena.hash(candidate)) > sketch.frequency(arena.hash(victim));
                if admit {
                    self.move_to(arena, candidate, Segment::Probation);
                    return Some(victim);
                }
                return Some(candidate);
            }
            // The window is within its share, so main is over its own.
            return self
                .main_victim(arena)
                .or_else(|| self.queues.head(Segment::Window as usize));
        }
        None
    }

    /// Main space's eviction candidate: the oldest unreferenced probation
    /// entry, promoting referenced ones on the way; protected's oldest when
    /// probation is empty.
    fn main_victim(&mut self, arena: &mut impl PolicyArena) -> Option<u32> {
        loop {
            if let Some(idx) = self.queues.head(Segment::Probation as usize) {
                if !arena.take_referenced(idx) {
                    return Some(idx);
                }
                self.move_to(arena, idx, Segment::Protected);
                self.rebalance_protected(arena);
                continue;
            }
            let idx = self.queues.head(Segment::Protected as usize)?;
            if !arena.take_referenced(idx) {
                return Some(idx);
            }
            self.queues
                .move_to_back(arena, Segment::Protected as usize, idx);
        }
    }

    /// Demotes protected entries to probation while protected is over its
    /// share, giving referenced ones another pass instead.
    fn rebalance_protected(&mut self, arena: &mut impl PolicyArena) {
        while self.weights[Segment::Protected as usize] > self.protected_max {
            let Some(idx) = self.queues.head(Segment::Protected as usize) else {
                return;
            };
            if arena.take_referenced(idx) {
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

    /// Allocates the sketch once the shard is half full: admission decisions
    /// only start when it is full, and an idle cache should not pay for it.
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
        // Weighted caches: size the hit-rate sample by entries, now that
        // their count is known.
        if self.entry_capacity.is_none() {
            self.climber
                .set_sample_size(sample_size(expected as u64, self.shards));
        }
    }
}

/// Requests per hill-climbing sample of one shard holding `entries` of a
/// cache with `shards` shards: ten per entry of the whole cache, within
/// [`MIN_SAMPLE`]..=[`MAX_SAMPLE`], split evenly over the shards (each
/// shard's climber is fed its share of the whole cache's requests).
fn sample_size(entries: u64, shards: u64) -> u64 {
    let whole = entries
        .saturating_mul(shards)
        .saturating_mul(SAMPLE_PER_ENTRY)
        .clamp(MIN_SAMPLE, MAX_SAMPLE);
    (whole / shards).max(1)
}
