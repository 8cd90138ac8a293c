//! XFetch: probabilistic early refresh.
//!
//! Vattani, Chierichetti and Lowenstein ("Optimal Probabilistic Cache
//! Stampede Prevention", VLDB 2015) recompute a value early when
//!
//! ```text
//! now − delta · beta · ln(u) ≥ expiry,    u uniform in (0, 1]
//! ```
//!
//! where `delta` is how long the last recomputation took and `beta` (1 by
//! default) tunes eagerness. With `remaining = expiry − now` that reads
//! `delta · beta · (−ln u) ≥ remaining`, which holds with probability
//! `exp(−remaining / (delta · beta))`: negligible while the entry is young,
//! rising towards 1 as expiry nears, and sooner for values that are slow to
//! recompute. Each reader decides alone, so no coordination is needed and no
//! single instant sends every reader to the database.

use std::time::Duration;

use super::Random;

/// The largest value `−ln u` takes for the `u` that [`Random::unit_nonzero`]
/// draws (`u ≥ 2⁻⁵³`): 53 · ln 2 ≈ 36.7. An entry with more than this many
/// `delta · beta` left cannot be picked, so the draw is skipped.
const MAX_EXPONENTIAL: f64 = 36.8;

/// Whether a hit with `remaining` time to live, on an entry whose last load
/// took `delta`, should refresh early.
pub(crate) fn due(remaining: Duration, delta: Duration, beta: f64, random: &Random) -> bool {
    let scale = delta.as_secs_f64() * beta;
    let remaining = remaining.as_secs_f64();
    // Most hits stop here, without touching the shared random state.
    if scale <= 0.0 || remaining > scale * MAX_EXPONENTIAL {
        return false;
    }
    draw_says_due(remaining, scale, random.unit_nonzero())
}

/// The XFetch test itself, for a drawn `u` in `(0, 1]`.
fn draw_says_due(remaining_secs: f64, scale_secs: f64, u: f64) -> bool {
    scale_secs * -u.ln() >= remaining_secs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_draw_decides_as_the_formula_says() {
        // u = 1: −ln u = 0, due only once nothing remains.
        assert!(!draw_says_due(0.001, 10.0, 1.0));
        assert!(draw_says_due(0.0, 10.0, 1.0));
        // u = e⁻¹: −ln u = 1, due once remaining ≤ delta · beta.
        let u = (-1.0_f64).exp();
        assert!(draw_says_due(9.99, 10.0, u));
        assert!(!draw_says_due(10.01, 10.0, u));
    }

    #[test]
    fn probability_is_exp_of_minus_remaining_over_scale() {
        let random = Random::new(3);
        let delta = Duration::from_secs(2);
        let trials = 20_000;
        for (remaining, beta) in [(1.0, 1.0), (2.0, 1.0), (4.0, 1.0), (4.0, 2.0)] {
            let hits = (0..trials)
                .filter(|_| due(Duration::from_secs_f64(remaining), delta, beta, &random))
                .count();
            let expected = (-remaining / (2.0 * beta)).exp();
            let observed = hits as f64 / f64::from(trials);
            assert!(
                (observed - expected).abs() < 0.015,
                "remaining {remaining}s beta {beta}: {observed} vs {expected}"
            );
        }
    }

    #[test]
    fn never_due_without_a_load_time_or_far_from_expiry() {
        let random = Random::new(1);
        for _ in 0..1000 {
            assert!(!due(Duration::from_millis(1), Duration::ZERO, 1.0, &random));
            assert!(!due(
                Duration::from_secs(38),
                Duration::from_secs(1),
                1.0,
                &random
            ));
        }
    }
}
