//! Random keys: a small fast generator, a Zipf sampler and the key scrambler.
//!
//! The Zipf sampler is Hörmann and Derflinger's rejection-inversion method
//! ("Rejection-inversion to generate variates from monotone discrete
//! distributions", ACM TOMACS 1996), as in Apache Commons RNG: constant time
//! per draw, no tables, exact for any exponent `s > 0` (including 1).

/// SplitMix64: a tiny, fast, statistically sound 64-bit generator. Good
/// enough for workload generation and deterministic from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// A uniform draw from `[0, 1)` with 53 bits of precision.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p`.
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }
}

/// A bijective 64-bit mix (the SplitMix64 / Stafford "Mix13" finaliser).
/// Maps a rank to a scrambled key, so hot keys do not sit in neighbouring
/// hash buckets and distinct ranks stay distinct keys.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Zipf distribution over ranks `1..=n`: P(r) is proportional to `1 / r^s`.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: f64,
    s: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    squeeze: f64,
}

impl Zipf {
    /// The distribution over `n >= 1` ranks with exponent `s > 0`.
    ///
    /// # Panics
    /// If `n == 0` or `s` is not positive and finite.
    pub fn new(n: u64, s: f64) -> Self {
        assert!(n >= 1, "Zipf needs at least one rank");
        assert!(s > 0.0 && s.is_finite(), "Zipf exponent must be > 0");
        let mut z = Zipf {
            n: n as f64,
            s,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            squeeze: 0.0,
        };
        z.h_integral_x1 = z.h_integral(1.5) - 1.0;
        z.h_integral_n = z.h_integral(z.n + 0.5);
        z.squeeze = 2.0 - z.h_integral_inverse(z.h_integral(2.5) - z.h(2.0));
        z
    }

    /// Draws one rank in `1..=n`.
    #[inline]
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        loop {
            let u = self.h_integral_n + rng.next_f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).clamp(1.0, self.n).floor();
            if k - x <= self.squeeze || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
    }

    /// `h(x) = x^-s`.
    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    /// An antiderivative of `h`, continuous in `s` at 1.
    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.s) * log_x) * log_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.s)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// `ln(1 + x) / x`, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// `(e^x - 1) / x`, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

/// Generalised harmonic number `H(n, s) = sum over r in 1..=n of 1/r^s`.
pub fn harmonic(n: u64, s: f64) -> f64 {
    // Summed from the small terms up, for accuracy.
    (1..=n).rev().map(|r| (r as f64).powf(-s)).sum()
}

/// The share of Zipf(`s`) draws over `keys` ranks that fall on the
/// `capacity` most popular ranks: the best hit ratio any policy without
/// foresight can reach on independent draws.
pub fn ideal_hit_ratio(keys: u64, s: f64, capacity: u64) -> f64 {
    harmonic(capacity.min(keys), s) / harmonic(keys, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_injective_on_small_ranks() {
        let mut seen: Vec<u64> = (0..100_000).map(mix64).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 100_000);
    }

    #[test]
    fn samples_stay_in_range() {
        let mut rng = Rng::new(7);
        for &(n, s) in &[(1, 1.01), (2, 0.8), (10, 1.0), (1000, 1.2)] {
            let z = Zipf::new(n, s);
            for _ in 0..10_000 {
                let r = z.sample(&mut rng);
                assert!((1..=n).contains(&r), "rank {r} outside 1..={n}");
            }
        }
    }

    #[test]
    fn rank_shares_match_theory() {
        for &(n, s) in &[
            (1_000_000u64, 1.01),
            (1_000_000, 0.8),
            (100, 1.2),
            (1000, 1.0),
        ] {
            let z = Zipf::new(n, s);
            let mut rng = Rng::new(42);
            let draws = 2_000_000;
            let (mut one, mut two, mut top10) = (0u64, 0u64, 0u64);
            for _ in 0..draws {
                let r = z.sample(&mut rng);
                one += u64::from(r == 1);
                two += u64::from(r == 2);
                top10 += u64::from(r <= 10);
            }
            let h = harmonic(n, s);
            for (count, expected) in [
                (one, 1.0 / h),
                (two, 2f64.powf(-s) / h),
                (top10, harmonic(10, s) / h),
            ] {
                let got = count as f64 / draws as f64;
                let sigma = (expected * (1.0 - expected) / draws as f64).sqrt();
                assert!(
                    (got - expected).abs() < 5.0 * sigma,
                    "n={n} s={s}: share {got} vs theory {expected}"
                );
            }
        }
    }

    #[test]
    fn ideal_is_the_top_mass() {
        // s = 1, 3 keys: weights 1, 1/2, 1/3 summing to 11/6.
        assert!((ideal_hit_ratio(3, 1.0, 1) - 6.0 / 11.0).abs() < 1e-12);
        assert!((ideal_hit_ratio(3, 1.0, 2) - 9.0 / 11.0).abs() < 1e-12);
        assert_eq!(ideal_hit_ratio(3, 1.0, 3), 1.0);
        assert_eq!(ideal_hit_ratio(3, 1.0, 10), 1.0);
    }
}
