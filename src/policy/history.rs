//! The keys a shard evicted recently, and which side of it let each go.
//!
//! This is what sizes the admission window. A request for a key that the
//! window dropped a moment ago is a hit that a slightly larger window would
//! have had; a request for a key that main evicted a moment ago is a hit
//! that a slightly larger main space would have had. Counting both kinds of
//! "near misses" measures the slope of the hit rate against the window's
//! size directly, so the policy can climb it one step per near miss (see
//! `TinyLfu::on_insert`), the way ARC sizes its two lists from its ghost
//! lists.
//!
//! "A moment ago" means within the last `depth` evictions *of that side*:
//! each side's clock advances only on its own departures, so both sides
//! look back over the same amount of cache space, the extra room a step
//! would move. The window's clock also advances when a candidate leaves the
//! window for main: the key is not lost, but a larger window would have kept
//! it longer, so it takes a place in the window's look-back like any other.
//!
//! The table is set-associative: buckets of eight (hash, stamp) pairs, one
//! cache line each, and a full bucket forgets its oldest key. For large
//! shards only a hash-chosen sample of the keys is remembered (one in
//! [`EvictionHistory::sample_rate`]), each standing for that many: the table
//! stays small (at most 4 × [`MIN_TRACKED`] pairs, 8 bytes each, once
//! sampling starts), and most evictions and misses never touch it.

/// Keys remembered per side before sampling starts (from there on, between
/// this many and twice as many). Measured with `cachex-bench hitratio
/// --all-traces`: 256 and 1,024 scored alike on every row, 64 cost
/// `arc_oltp` at 1,868 entries a point; a smaller table keeps the insert
/// storm of `throughput --workload T3` from waiting on its cache lines.
const MIN_TRACKED: u64 = 256;
/// Stamps keep the side's eviction clock in their upper 30 bits.
const CLOCK_BITS: u32 = 30;
const CLOCK_MASK: u32 = (1 << CLOCK_BITS) - 1;
/// A stamp's low bits: whether the pair holds a key, and from which side.
const OCCUPIED: u32 = 0b10;
const SIDE_BIT: u32 = 0b01;
const WAYS: usize = 8;

/// The part of a shard that let a key go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// Dropped from the admission window: TinyLFU did not admit it.
    Window,
    /// Evicted from the main space (probation or protected).
    Main,
}

/// Eight remembered keys: their 32-bit hashes, and stamps saying when and
/// from which side each left. 64 bytes, one cache line.
#[derive(Clone, Copy, Debug, Default)]
#[repr(align(64))]
struct Bucket {
    hashes: [u32; WAYS],
    stamps: [u32; WAYS],
}

/// Recently evicted keys of one shard (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct EvictionHistory {
    buckets: Vec<Bucket>,
    /// Evictions remembered per side, counting the sampled-out ones.
    depth: u32,
    /// One key in `1 << shift` is remembered.
    shift: u32,
    /// Each side's eviction count, wrapping at 2^30 (stamps hold 30 bits).
    clocks: [u32; 2],
}

impl EvictionHistory {
    /// Sizes the history to remember each side's last `depth` evictions.
    /// Called once, when the shard's policy starts needing it; later calls
    /// do nothing.
    pub(crate) fn ensure_depth(&mut self, depth: u64) {
        if !self.buckets.is_empty() {
            return;
        }
        let depth = depth.clamp(1, u64::from(CLOCK_MASK >> 1));
        self.shift = (depth / MIN_TRACKED).max(1).ilog2();
        let tracked = 2 * (depth >> self.shift).max(1);
        self.buckets = vec![Bucket::default(); tracked.div_ceil(WAYS as u64) as usize];
        self.depth = depth as u32;
    }

    /// How many evictions one remembered key stands for.
    pub(crate) fn sample_rate(&self) -> u64 {
        1 << self.shift
    }

    /// The window passed a candidate on to main: not an eviction, but a
    /// larger window would have kept the key longer too.
    pub(crate) fn passed_on(&mut self) {
        self.tick(Side::Window);
    }

    /// `side` evicted the key with this hash.
    pub(crate) fn evicted(&mut self, side: Side, hash: u32) {
        let clock = self.tick(side);
        let Some((bucket, mixed)) = self.bucket_of(hash) else {
            return;
        };
        let stamp = (clock << 2) | OCCUPIED | side as u32;
        let depth = self.depth;
        let clocks = self.clocks;
        let bucket = &mut self.buckets[bucket];
        // The same key's pair if present; else a free pair or one past its
        // side's look-back (counted as oldest of all), else the key evicted
        // longest ago (ages are in each side's own evictions, and both
        // sides look back equally far, so they compare).
        let mut chosen = 0;
        let mut oldest = 0;
        for way in 0..WAYS {
            let old = bucket.stamps[way];
            if old & OCCUPIED != 0 && bucket.hashes[way] == mixed {
                chosen = way;
                break;
            }
            let age = age_of(old, &clocks)
                .filter(|&age| age < depth)
                .unwrap_or(u32::MAX);
            if age > oldest {
                oldest = age;
                chosen = way;
            }
        }
        bucket.hashes[chosen] = mixed;
        bucket.stamps[chosen] = stamp;
    }

    /// Whether the key with this hash was evicted within its side's last
    /// `depth` evictions, and by which side. The key is forgotten, so that
    /// one return counts once.
    pub(crate) fn take(&mut self, hash: u32) -> Option<Side> {
        let (bucket, mixed) = self.bucket_of(hash)?;
        let depth = self.depth;
        let clocks = self.clocks;
        let bucket = &mut self.buckets[bucket];
        let way = (0..WAYS)
            .find(|&way| bucket.hashes[way] == mixed && bucket.stamps[way] & OCCUPIED != 0)?;
        let stamp = std::mem::take(&mut bucket.stamps[way]);
        let age = age_of(stamp, &clocks)?;
        (age < depth).then(|| side_of(stamp))
    }

    /// Advances a side's clock; returns its new value.
    fn tick(&mut self, side: Side) -> u32 {
        let clock = &mut self.clocks[side as usize];
        *clock = clock.wrapping_add(1) & CLOCK_MASK;
        *clock
    }

    /// The bucket of a sampled key, and the re-mixed hash stored for it;
    /// `None` for a key outside the sample or before the table exists.
    fn bucket_of(&self, hash: u32) -> Option<(usize, u32)> {
        if self.buckets.is_empty() {
            return None;
        }
        // The multiply spreads every bit of the hash over the high bits,
        // which choose the bucket; the sample takes the low bits, which
        // barely move the bucket, so sampled keys still use every bucket.
        let mixed = (hash ^ (hash >> 16)).wrapping_mul(0x45D9_F3B5);
        if mixed & ((1 << self.shift) - 1) != 0 {
            return None;
        }
        let bucket = (u64::from(mixed) * self.buckets.len() as u64) >> 32;
        Some((bucket as usize, mixed))
    }
}

/// How many of its side's evictions ago a stamp was made; `None` for a free
/// pair.
fn age_of(stamp: u32, clocks: &[u32; 2]) -> Option<u32> {
    if stamp & OCCUPIED == 0 {
        return None;
    }
    let clock = clocks[(stamp & SIDE_BIT) as usize];
    Some(clock.wrapping_sub(stamp >> 2) & CLOCK_MASK)
}

fn side_of(stamp: u32) -> Side {
    if stamp & SIDE_BIT == 0 {
        Side::Window
    } else {
        Side::Main
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A history remembering every key (no sampling) for `depth` evictions.
    fn unsampled(depth: u64) -> EvictionHistory {
        let mut history = EvictionHistory::default();
        history.ensure_depth(depth);
        assert_eq!(history.sample_rate(), 1);
        history
    }

    #[test]
    fn an_empty_history_knows_nothing() {
        let mut history = EvictionHistory::default();
        history.evicted(Side::Main, 7);
        assert_eq!(history.take(7), None);
    }

    #[test]
    fn a_recent_eviction_is_found_once_with_its_side() {
        let mut history = unsampled(100);
        history.evicted(Side::Window, 1);
        history.evicted(Side::Main, 2);
        assert_eq!(history.take(1), Some(Side::Window));
        assert_eq!(history.take(2), Some(Side::Main));
        assert_eq!(history.take(1), None, "taken once");
        assert_eq!(history.take(3), None, "never evicted");
    }

    #[test]
    fn each_side_looks_back_over_its_own_evictions() {
        let mut history = unsampled(100);
        history.evicted(Side::Main, 1);
        // Window departures (drops and pass-ons) do not age main's keys.
        for hash in 1000..1500 {
            history.evicted(Side::Window, hash);
            history.passed_on();
        }
        assert_eq!(history.take(1), Some(Side::Main));
        history.evicted(Side::Main, 1);
        for hash in 2000..2100 {
            history.evicted(Side::Main, hash);
        }
        assert_eq!(history.take(1), None, "100 main evictions ago: too old");
        history.evicted(Side::Window, 5);
        for _ in 0..99 {
            history.passed_on();
        }
        assert_eq!(
            history.take(5),
            Some(Side::Window),
            "99 window departures ago"
        );
    }

    #[test]
    fn a_key_evicted_again_is_stamped_anew() {
        let mut history = unsampled(100);
        history.evicted(Side::Window, 9);
        history.evicted(Side::Main, 9);
        assert_eq!(history.take(9), Some(Side::Main));
        assert_eq!(history.take(9), None, "one pair per key");
    }

    #[test]
    fn large_depths_remember_a_sample_standing_for_the_rest() {
        let mut history = EvictionHistory::default();
        history.ensure_depth(16 * MIN_TRACKED);
        let rate = history.sample_rate();
        assert_eq!(rate, 16);
        let evictions = 16 * MIN_TRACKED as u32;
        for hash in 0..evictions {
            history.evicted(Side::Main, hash);
        }
        let found = (0..evictions)
            .filter(|&h| history.take(h).is_some())
            .count() as u64;
        // Expect 4,096 / 16 = 256 keys: within a factor of 1.5 either way.
        let expected = u64::from(evictions) / rate;
        assert!(
            found * 3 > expected * 2 && found * 2 < expected * 3,
            "{found} of {expected}"
        );
        assert_eq!(history.buckets.len(), 2 * MIN_TRACKED as usize / WAYS);
    }

    #[test]
    fn stamps_survive_the_clock_wrapping() {
        let mut history = unsampled(100);
        history.clocks = [CLOCK_MASK - 2; 2];
        history.evicted(Side::Main, 4);
        for hash in 0..10 {
            history.evicted(Side::Main, 100 + hash);
        }
        assert_eq!(history.clocks[1], 8, "wrapped");
        assert_eq!(history.take(4), Some(Side::Main));
    }

    /// One step of the property test: what the shard's policy tells the
    /// history, or asks it.
    #[derive(Clone, Debug)]
    enum Op {
        Evicted(Side, u32),
        PassedOn,
        Take(u32),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let side = prop_oneof![Just(Side::Window), Just(Side::Main)];
        // At most eight distinct keys: even if all share a bucket, none is
        // pushed out, so the history must match the model exactly.
        prop_oneof![
            (side, 0u32..8).prop_map(|(side, key)| Op::Evicted(side, key)),
            Just(Op::PassedOn),
            (0u32..8).prop_map(Op::Take),
        ]
    }

    proptest::proptest! {
        /// Against a model that remembers every eviction: `take` answers
        /// the side of the key's latest eviction, only while fewer than
        /// `depth` departures of that side have followed, and only once.
        #[test]
        fn matches_a_model_of_every_eviction(
            depth in 1u64..24,
            ops in proptest::collection::vec(op(), 0..300),
        ) {
            let mut history = unsampled(depth);
            let mut clocks = [0u64; 2];
            let mut model: std::collections::HashMap<u32, (Side, u64)> = Default::default();
            for op in ops {
                match op {
                    Op::Evicted(side, key) => {
                        clocks[side as usize] += 1;
                        model.insert(key, (side, clocks[side as usize]));
                        history.evicted(side, key);
                    }
                    Op::PassedOn => {
                        clocks[Side::Window as usize] += 1;
                        history.passed_on();
                    }
                    Op::Take(key) => {
                        let expected = model.remove(&key).and_then(|(side, at)| {
                            (clocks[side as usize] - at < depth).then_some(side)
                        });
                        proptest::prop_assert_eq!(history.take(key), expected);
                    }
                }
            }
        }
    }
}
