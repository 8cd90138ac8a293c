//! Spreading the time-to-live of entries written together.

use std::time::Duration;

/// `ttl` shortened by up to `fraction` of itself: uniform over
/// `[ttl × (1 − fraction), ttl]` as `unit` runs over `[0, 1)`.
///
/// Only ever shorter, never longer, so the configured TTL stays an upper
/// bound on staleness. Entries loaded in one burst (a cold start, a deploy)
/// then expire over a spread of time instead of all in the same instant,
/// which would send the whole burst back to the database at once.
///
/// The cache computes this once, above the store, so every backend applies
/// the same band and stores only ever see explicit TTLs.
pub(crate) fn jittered(ttl: Duration, fraction: f64, unit: f64) -> Duration {
    if fraction <= 0.0 {
        return ttl;
    }
    let factor = 1.0 - fraction * unit;
    // `mul_f64` would panic when float rounding pushes a huge TTL past
    // `Duration::MAX`; such a TTL is effectively infinite anyway.
    Duration::try_from_secs_f64(ttl.as_secs_f64() * factor).map_or(ttl, |d| d.min(ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_ends() {
        let ttl = Duration::from_secs(100);
        assert_eq!(jittered(ttl, 0.1, 0.0), ttl);
        assert_eq!(jittered(ttl, 0.0, 0.9), ttl);
        let low = jittered(ttl, 0.1, 1.0 - f64::EPSILON);
        assert!(low >= Duration::from_secs(90) && low < Duration::from_millis(90_001));
        assert_eq!(jittered(ttl, 1.0, 0.5), Duration::from_secs(50));
    }

    #[test]
    fn huge_ttls_do_not_panic() {
        assert!(jittered(Duration::MAX, 0.1, 0.0) <= Duration::MAX);
        assert!(jittered(Duration::MAX, 0.1, 0.5) < Duration::MAX);
    }
}
