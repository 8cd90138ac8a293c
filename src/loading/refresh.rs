//! When a cache hit should start a background refresh.

use std::time::Duration;

use super::{xfetch, Random};

/// The refresh triggers a cache was built with; both are off by default.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RefreshPolicy {
    /// Stale-while-revalidate: refresh any hit with at most this long left.
    pub(crate) window: Option<Duration>,
    /// XFetch's `beta`: refresh early with a probability that rises as
    /// expiry nears.
    pub(crate) xfetch_beta: Option<f64>,
}

impl RefreshPolicy {
    /// Whether a hit on a value with `remaining` time to live (`None`:
    /// never expires), last loaded in `load_time`, should be refreshed now.
    /// Asked on every `get_or_load` hit, so always inlined (XFetch's draw
    /// stays a call).
    #[inline(always)]
    pub(crate) fn due(
        &self,
        remaining: Option<Duration>,
        load_time: Duration,
        random: &Random,
    ) -> bool {
        let Some(remaining) = remaining else {
            return false; // nothing expires, nothing to refresh ahead of
        };
        if self.window.is_some_and(|window| remaining <= window) {
            return true;
        }
        self.xfetch_beta
            .is_some_and(|beta| xfetch::due(remaining, load_time, beta, random))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default() {
        let random = Random::new(0);
        let policy = RefreshPolicy::default();
        assert!(!policy.due(Some(Duration::ZERO), Duration::from_secs(9), &random));
    }

    #[test]
    fn window_includes_its_edge_and_spares_eternal_entries() {
        let random = Random::new(0);
        let policy = RefreshPolicy {
            window: Some(Duration::from_secs(10)),
            xfetch_beta: None,
        };
        assert!(policy.due(Some(Duration::from_secs(10)), Duration::ZERO, &random));
        assert!(!policy.due(Some(Duration::from_millis(10_001)), Duration::ZERO, &random));
        assert!(!policy.due(None, Duration::from_secs(9), &random));
    }
}
