//! Count-min frequency sketch with 4-bit counters and periodic aging.
//!
//! TinyLFU asks one question of it: "has this key been seen more often
//! recently than that one?". Each key owns four 4-bit counters; its estimate
//! is the smallest of them. All four counters of a key live in one 64-byte
//! block (eight `u64` words), so an increment or an estimate touches a single
//! cache line. After `sample_size` increments every counter is halved, so old
//! popularity fades and the sketch follows a changing workload.
//!
//! The input is a 32-bit hash derived from the cache's per-instance random
//! hasher, so an attacker cannot pick keys that collide in the sketch.

/// Every 4-bit counter with its top bit cleared, for halving a word at once.
const HALVE_MASK: u64 = 0x7777_7777_7777_7777;
/// Each 4-bit counter's lowest bit, for counting odd counters when halving.
const ONE_MASK: u64 = 0x1111_1111_1111_1111;
const COUNTER_MAX: u64 = 15;
/// Fewest blocks a sketch has (4 KiB). A count-min sketch's error grows with
/// the distinct keys counted per aging period, and for a small cache those
/// are many times its capacity (`lirs_gli` at 126 entries: 2,529 distinct
/// keys). One word per entry is then too narrow: measured with `cachex-bench
/// hitratio`, this floor lifts `lirs_gli` at 126 entries from 5.0% to 7.2%
/// hits and costs nothing for shards of 512 entries or more.
const MIN_BLOCKS: usize = 64;

/// Eight words of sixteen counters, aligned so one block is one cache line.
#[derive(Clone, Copy, Debug, Default)]
#[repr(align(64))]
struct Block([u64; 8]);

/// A count-min sketch sized to a cache's capacity in entries.
#[derive(Debug, Default)]
pub(crate) struct FrequencySketch {
    blocks: Vec<Block>,
    /// `blocks.len() - 1`; the block count is a power of two.
    block_mask: usize,
    /// Increments since the last halving.
    additions: u64,
    /// Increments between two halvings (10 × the entry capacity, as in TinyLFU).
    sample_size: u64,
}

impl FrequencySketch {
    /// Whether the table has been allocated yet (it is allocated lazily, once
    /// the cache is half full, because admission only matters when it is full).
    pub(crate) fn is_allocated(&self) -> bool {
        !self.blocks.is_empty()
    }

    /// Allocates the table for `entries` distinct keys: one 64-bit word
    /// (sixteen counters) per entry, and at least [`MIN_BLOCKS`] blocks. A
    /// larger table replaces the old one and its counts (the policy calls
    /// this once, when a shard is half full, and seeds the new table).
    pub(crate) fn ensure_capacity(&mut self, entries: usize) {
        let blocks = (entries / 8).next_power_of_two().max(MIN_BLOCKS);
        if blocks <= self.blocks.len() {
            return;
        }
        self.blocks = vec![Block::default(); blocks];
        self.block_mask = blocks - 1;
        self.additions = 0;
        self.sample_size = (10 * entries.max(1)) as u64;
    }

    /// Bumps the key's four counters (those not saturated yet).
    #[inline]
    pub(crate) fn increment(&mut self, hash: u32) {
        let Some(block) = self.blocks.get_mut(hash as usize & self.block_mask) else {
            return;
        };
        let spread = spread(hash);
        for depth in 0..4 {
            let (word, shift) = counter(spread, depth);
            let word = &mut block.0[word];
            // +1 unless the counter is already 15: (c + 1) >> 4 is 1 only for 15.
            let count = (*word >> shift) & COUNTER_MAX;
            *word += (((count + 1) >> 4) ^ 1) << shift;
        }
        // Counted whether or not a counter saturated: aging just comes a
        // little sooner when very hot keys dominate, which is harmless.
        self.additions += 1;
        if self.additions >= self.sample_size {
            self.halve();
        }
    }

    /// The key's estimated recent frequency, 0..=15.
    pub(crate) fn frequency(&self, hash: u32) -> u8 {
        let Some(block) = self.blocks.get(hash as usize & self.block_mask) else {
            return 0;
        };
        let spread = spread(hash);
        (0..4)
            .map(|depth| {
                let (word, shift) = counter(spread, depth);
                (block.0[word] >> shift) & COUNTER_MAX
            })
            .min()
            .unwrap_or(0) as u8
    }

    /// Halves every counter; the additions count drops by what was lost.
    fn halve(&mut self) {
        let mut odd = 0u64;
        for word in self.blocks.iter_mut().flat_map(|b| b.0.iter_mut()) {
            odd += u64::from((*word & ONE_MASK).count_ones());
            *word = (*word >> 1) & HALVE_MASK;
        }
        self.additions = self.additions.saturating_sub(odd / 4) / 2;
    }
}

/// 32 well-mixed bits from which the four counters' positions are drawn
/// (the block comes from the hash's low bits). The input is already a
/// randomly seeded hash, so one multiplication is mixing enough.
#[inline]
fn spread(hash: u32) -> u32 {
    (u64::from(hash).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32
}

/// Word and bit shift of counter `depth`: depth `d` uses word `2d` or
/// `2d + 1` of the block (so the four counters never share a word) and one of
/// that word's sixteen counters, all drawn from 5 bits of `spread` per depth.
#[inline]
fn counter(spread: u32, depth: u32) -> (usize, u32) {
    let bits = spread >> (depth * 5);
    let word = (depth as usize * 2 + (bits & 1) as usize) & 7;
    let shift = ((bits >> 1) & 15) * 4;
    (word, shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch(entries: usize) -> FrequencySketch {
        let mut sketch = FrequencySketch::default();
        sketch.ensure_capacity(entries);
        sketch
    }

    #[test]
    fn unallocated_sketch_reports_zero_and_ignores_increments() {
        let mut s = FrequencySketch::default();
        s.increment(7);
        assert_eq!(s.frequency(7), 0);
        assert!(!s.is_allocated());
    }

    #[test]
    fn counts_up_to_saturation() {
        let mut s = sketch(1024);
        for expected in 1..=15u8 {
            s.increment(42);
            assert_eq!(s.frequency(42), expected);
        }
        s.increment(42);
        assert_eq!(s.frequency(42), 15, "4-bit counters saturate at 15");
    }

    #[test]
    fn estimates_never_undercount_before_aging() {
        let mut s = sketch(4096);
        for key in 0..500u32 {
            for _ in 0..(key % 7) {
                s.increment(key.wrapping_mul(2_654_435_761));
            }
        }
        for key in 0..500u32 {
            let f = s.frequency(key.wrapping_mul(2_654_435_761));
            assert!(u32::from(f) >= key % 7, "count-min never undercounts");
        }
    }

    #[test]
    fn distinguishes_hot_from_cold_keys() {
        let mut s = sketch(1024);
        for round in 0..10u32 {
            s.increment(1);
            s.increment(1000 + round);
        }
        let cold_max = (0..10u32).map(|r| s.frequency(1000 + r)).max().unwrap();
        assert!(s.frequency(1) >= 10);
        assert!(cold_max <= 2, "cold keys stay cold, got {cold_max}");
    }

    #[test]
    fn aging_halves_counts() {
        let mut s = sketch(1024);
        for _ in 0..9 {
            s.increment(5);
        }
        s.halve();
        assert_eq!(
            s.frequency(5),
            4,
            "halving divides each counter by two, rounding down"
        );
    }

    #[test]
    fn small_sketches_get_the_floor_and_large_ones_a_word_per_entry() {
        assert_eq!(sketch(16).blocks.len(), MIN_BLOCKS);
        assert_eq!(
            sketch(100_000).blocks.len(),
            (100_000 / 8usize).next_power_of_two()
        );
        assert_eq!(
            sketch(16).sample_size,
            160,
            "aging still follows the capacity"
        );
    }

    #[test]
    fn aging_runs_once_per_sample_period() {
        let mut s = sketch(16); // sample size: 160 increments
        let mut halvings = 0;
        for key in 0..1600u32 {
            let before = s.additions;
            s.increment(key);
            if s.additions < before {
                halvings += 1;
            }
        }
        assert!(halvings >= 10, "expected periodic halving, saw {halvings}");
    }
}
