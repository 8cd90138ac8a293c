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

/// Words per block: 8 × 8 bytes = one cache line.
const BLOCK_WORDS: usize = 8;
/// Every 4-bit counter with its top bit cleared, for halving a word at once.
const HALVE_MASK: u64 = 0x7777_7777_7777_7777;
/// Each 4-bit counter's lowest bit, for counting odd counters when halving.
const ONE_MASK: u64 = 0x1111_1111_1111_1111;
const COUNTER_MAX: u64 = 15;

/// A count-min sketch sized to a cache's capacity in entries.
#[derive(Debug, Default)]
pub(crate) struct FrequencySketch {
    table: Vec<u64>,
    /// `table.len() / BLOCK_WORDS - 1`; the table length is a power of two.
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
        !self.table.is_empty()
    }

    /// (Re)allocates the table for `entries` distinct keys. Counts are lost,
    /// which is acceptable: it happens once per growth step of the cache.
    pub(crate) fn ensure_capacity(&mut self, entries: usize) {
        let words = entries.max(BLOCK_WORDS).next_power_of_two();
        if words <= self.table.len() {
            return;
        }
        self.table = vec![0; words];
        self.block_mask = words / BLOCK_WORDS - 1;
        self.additions = 0;
        self.sample_size = (10 * entries.max(1)) as u64;
    }

    /// Bumps the key's four counters (those not saturated yet).
    pub(crate) fn increment(&mut self, hash: u32) {
        if self.table.is_empty() {
            return;
        }
        let (block, spread) = self.locate(hash);
        let mut added = false;
        for depth in 0..4 {
            let (word, shift) = Self::counter(block, spread, depth);
            let value = (self.table[word] >> shift) & COUNTER_MAX;
            if value < COUNTER_MAX {
                self.table[word] += 1 << shift;
                added = true;
            }
        }
        if added {
            self.additions += 1;
            if self.additions >= self.sample_size {
                self.halve();
            }
        }
    }

    /// The key's estimated recent frequency, 0..=15.
    pub(crate) fn frequency(&self, hash: u32) -> u8 {
        if self.table.is_empty() {
            return 0;
        }
        let (block, spread) = self.locate(hash);
        let mut min = COUNTER_MAX;
        for depth in 0..4 {
            let (word, shift) = Self::counter(block, spread, depth);
            min = min.min((self.table[word] >> shift) & COUNTER_MAX);
        }
        min as u8
    }

    /// Halves every counter; the additions count drops by what was lost.
    fn halve(&mut self) {
        let mut odd = 0u64;
        for word in &mut self.table {
            odd += u64::from((*word & ONE_MASK).count_ones());
            *word = (*word >> 1) & HALVE_MASK;
        }
        self.additions = (self.additions - odd / 4) / 2;
    }

    /// Picks the block and a 64-bit spread from which the four counters'
    /// positions are drawn. The multiply-xorshift mixing keeps the positions
    /// of different depths independent even for similar inputs.
    fn locate(&self, hash: u32) -> (usize, u64) {
        let mut x = u64::from(hash).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 32;
        let block = (x as usize) & self.block_mask;
        let spread = x.rotate_left(23).wrapping_mul(0x94D0_49BB_1331_11EB);
        (block, spread)
    }

    /// Word index and bit shift of counter `depth`: depth `d` uses word `2d`
    /// or `2d + 1` of the block and one of its sixteen counters, so the four
    /// counters never share a word.
    fn counter(block: usize, spread: u64, depth: u32) -> (usize, u32) {
        let bits = spread >> (depth * 8);
        let word = block * BLOCK_WORDS + (depth as usize) * 2 + (bits & 1) as usize;
        let shift = (((bits >> 1) & 15) as u32) * 4;
        (word, shift)
    }
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
