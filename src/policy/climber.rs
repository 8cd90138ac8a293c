//! Hill climbing on the hit rate to size the admission window.
//!
//! A small window favours frequency (TinyLFU filters almost every newcomer);
//! a large one favours recency (most entries live in the LRU-like window).
//! Which is better depends on the workload and changes with it, so the
//! window is tuned while the cache runs (Einziger et al., "Adaptive Software
//! Cache Management", 2018): after each sample of requests the window moves
//! by a step; the direction is kept while the hit rate improves and reversed
//! when it falls; steps shrink over time so the size settles, and a large
//! jump in the hit rate (a new workload phase) restores the full step.
//!
//! A change smaller than the sampling noise moves nothing. Without that gate
//! the climber follows noise on a stationary workload, and with the short
//! samples of large caches that random walk carried the window far from its
//! best size (Zipf 1.01 at 100,000 entries: 80.3% hits instead of 81.1%).

/// Initial (and restarted) step, as a share of the capacity.
const STEP_SHARE: f64 = 0.0625;
/// Steps shrink by this factor after every sample without a phase change.
const STEP_DECAY: f64 = 0.98;
/// A hit-rate change at least this large counts as a new phase. Caffeine
/// uses 0.05; with the shorter samples of large caches (see
/// `MAX_SAMPLE` in the policy) a scan-heavy trace such as `arc_p3` swings by
/// more than that between samples, and every restart threw the window back
/// by a full step.
const RESTART_THRESHOLD: f64 = 0.10;

/// A hit-rate change counts only beyond this many standard errors of the
/// difference between two samples (`sqrt(2 p (1 - p) / n)`); 2 was the best
/// of 0 to 3 over the traces of `cachex-bench hitratio`.
const NOISE_GATE: f64 = 2.0;

/// Decides, sample by sample, how far to move the window/main split.
#[derive(Debug)]
pub(crate) struct HillClimber {
    sample_size: u64,
    hits: u64,
    misses: u64,
    previous_hit_rate: f64,
    /// Signed step, in capacity units: positive grows the window.
    step: f64,
    full_step: f64,
}

impl HillClimber {
    /// `capacity` is in weight units; `sample_size` in requests.
    pub(crate) fn new(capacity: u64, sample_size: u64) -> Self {
        let full_step = (capacity as f64 * STEP_SHARE).max(1.0);
        HillClimber {
            sample_size: sample_size.max(1),
            hits: 0,
            misses: 0,
            previous_hit_rate: 0.0,
            step: full_step,
            full_step,
        }
    }

    /// Changes how many requests make one sample.
    pub(crate) fn set_sample_size(&mut self, sample_size: u64) {
        self.sample_size = sample_size.max(1);
    }

    /// Records requests; at the end of a sample returns the signed amount
    /// (in capacity units) by which the window should change.
    pub(crate) fn record(&mut self, hits: u64, misses: u64) -> Option<i64> {
        self.hits += hits;
        self.misses += misses;
        let requests = self.hits + self.misses;
        if requests < self.sample_size {
            return None;
        }
        let hit_rate = self.hits as f64 / requests as f64;
        let change = hit_rate - self.previous_hit_rate;
        self.previous_hit_rate = hit_rate;
        self.hits = 0;
        self.misses = 0;
        let noise = (2.0 * hit_rate * (1.0 - hit_rate) / requests as f64).sqrt();
        if change.abs() < NOISE_GATE * noise {
            return Some(0);
        }
        if change < 0.0 {
            self.step = -self.step;
        }
        let adjustment = self.step;
        self.step = if change.abs() >= RESTART_THRESHOLD {
            self.full_step.copysign(adjustment)
        } else {
            adjustment * STEP_DECAY
        };
        Some(adjustment.round() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds one sample of `requests` requests with the given hit rate.
    fn sample_of(climber: &mut HillClimber, hit_rate: f64, requests: u64) -> i64 {
        let hits = (hit_rate * requests as f64) as u64;
        climber
            .record(hits, requests - hits)
            .expect("a full sample")
    }

    /// A sample so large (a million requests) that its noise is ~0.14 point.
    fn sample(climber: &mut HillClimber, hit_rate: f64) -> i64 {
        sample_of(climber, hit_rate, 1_000_000)
    }

    #[test]
    fn nothing_happens_mid_sample() {
        let mut c = HillClimber::new(1000, 1000);
        assert_eq!(c.record(400, 500), None);
        assert!(c.record(50, 50).is_some());
    }

    #[test]
    fn keeps_direction_while_improving_and_reverses_on_a_drop() {
        let mut c = HillClimber::new(1600, 1_000_000);
        let first = sample(&mut c, 0.50);
        assert_eq!(first, 100, "starts by growing the window by 6.25%");
        let second = sample(&mut c, 0.52);
        assert!(second > 0, "improving: same direction");
        let third = sample(&mut c, 0.51);
        assert!(third < 0, "worse: reverse");
        let fourth = sample(&mut c, 0.515);
        assert!(fourth < 0, "improving again: keep the new direction");
        assert!(fourth.abs() < first, "steps decay");
    }

    #[test]
    fn a_change_within_the_noise_moves_nothing() {
        let mut c = HillClimber::new(1600, 1000);
        assert_eq!(sample_of(&mut c, 0.50, 1000), 100);
        // One standard error of a 1000-request difference at 50% is ~2.2
        // points: 1 point is noise, 10 points are not.
        assert_eq!(sample_of(&mut c, 0.51, 1000), 0, "noise: no move");
        assert_eq!(sample_of(&mut c, 0.50, 1000), 0, "noise: no move");
        assert!(sample_of(&mut c, 0.40, 1000) < 0, "a real drop reverses");
    }

    #[test]
    fn a_phase_change_restores_the_full_step() {
        let mut c = HillClimber::new(1600, 1_000_000);
        sample(&mut c, 0.50);
        for i in 1..=30 {
            sample(&mut c, 0.50 + f64::from(i) * 0.002);
        }
        let small = sample(&mut c, 0.563).abs();
        assert!(small < 100);
        sample(&mut c, 0.90); // big jump: restart
        assert_eq!(sample(&mut c, 0.91).abs(), 100);
    }
}
