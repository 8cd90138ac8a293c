//! The cache's source of randomness, for jitter and XFetch.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// SplitMix64's increment, the golden ratio in 64 bits.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A seedable, lock-free random source (SplitMix64 over an atomic counter).
///
/// Every draw advances the shared counter with one `fetch_add`, so
/// concurrent draws never repeat a value, and a single task drawing from a
/// cache seeded with [`CacheBuilder::seed`](crate::CacheBuilder::seed) sees
/// the same sequence on every run: what makes jitter testable with a fixed
/// seed. Statistical quality is ample for spreading expiries; it is not a
/// cryptographic generator.
#[derive(Debug)]
pub(crate) struct Random {
    state: AtomicU64,
}

impl Random {
    pub(crate) fn new(seed: u64) -> Self {
        Random {
            state: AtomicU64::new(seed),
        }
    }

    /// Seeded from the standard library's per-process random keys.
    pub(crate) fn from_entropy() -> Self {
        Self::new(RandomState::new().hash_one(GAMMA))
    }

    pub(crate) fn next_u64(&self) -> u64 {
        let mut z = self.state.fetch_add(GAMMA, Relaxed).wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, with 53 bits of precision.
    pub(crate) fn unit(&self) -> f64 {
        (self.next_u64() >> 11) as f64 * f64::EPSILON / 2.0
    }

    /// Uniform in `(0, 1]`: safe to take the logarithm of.
    pub(crate) fn unit_nonzero(&self) -> f64 {
        1.0 - self.unit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let (a, b) = (Random::new(7), Random::new(7));
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
    }

    #[test]
    fn ranges_hold_and_mean_is_central() {
        let random = Random::new(42);
        let n = 100_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let u = random.unit();
            assert!((0.0..1.0).contains(&u));
            let v = random.unit_nonzero();
            assert!(v > 0.0 && v <= 1.0);
            sum += u;
        }
        let mean = sum / f64::from(n);
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }
}
