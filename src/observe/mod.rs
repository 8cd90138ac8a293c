//! Seeing what a cache does: stats, Prometheus metrics, tracing spans.
//!
//! - **Stats** are always there: [`Cache::stats`](crate::Cache::stats)
//!   returns a [`Stats`] snapshot of the cache's own striped
//!   counters plus what its store reports per tier ([`StoreStats`],
//!   through [`Store::stats`](crate::Store::stats)).
//! - **Prometheus** (feature `prometheus`): `CacheMetrics` exposes those
//!   snapshots on a `prometheus_client` registry you own, read at scrape
//!   time, plus a load-duration histogram.
//! - **Tracing** (feature `tracing`): every cache operation runs in a
//!   `tracing` span at `DEBUG` level, target `cachex`; what the key field
//!   shows is set by [`KeyMode`]. Stores open their spans with
//!   [`StoreSpan`]. `CacheBuilder::log_stats` adds a periodic stats log
//!   line.
//!
//! The README's "Metrics" and "Tracing" sections list every metric and
//! every span field.

mod key_mode;
#[cfg(feature = "tracing")]
pub(crate) mod log;
#[cfg(feature = "prometheus")]
mod metrics;
pub(crate) mod spans;
mod stats;

use std::sync::Arc;

pub use key_mode::KeyMode;
#[cfg(feature = "prometheus")]
pub use metrics::CacheMetrics;
pub use spans::{record_tier, StoreSpan};
pub use stats::{BreakerState, StoreStats, Tier, TierStats};

use crate::Stats;

/// The name a cache gets unless the builder gives one.
pub const DEFAULT_NAME: &str = "default";

/// A cache's telemetry settings and handles, fixed at build.
#[derive(Debug)]
pub(crate) struct Observer {
    /// The `cache` label and `cache.name` field.
    pub(crate) name: Arc<str>,
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) key_mode: KeyMode,
    /// The store's tier, when it has exactly one: every operation goes
    /// there, so spans can say so without asking the store each time.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) tier: Option<Tier>,
    /// Set when the cache is added to a `CacheMetrics`; loads are timed
    /// into it from then on.
    #[cfg(feature = "prometheus")]
    pub(crate) load_histogram:
        std::sync::OnceLock<prometheus_client::metrics::histogram::Histogram>,
}

impl Observer {
    pub(crate) fn new(name: Arc<str>, key_mode: KeyMode, tier: Option<Tier>) -> Self {
        Observer {
            name,
            key_mode,
            tier,
            #[cfg(feature = "prometheus")]
            load_histogram: std::sync::OnceLock::new(),
        }
    }

    /// Times a finished loader call into the histogram, if there is one.
    #[inline]
    #[cfg_attr(not(feature = "prometheus"), allow(unused_variables))]
    pub(crate) fn record_load(&self, took: std::time::Duration) {
        #[cfg(feature = "prometheus")]
        if let Some(histogram) = self.load_histogram.get() {
            histogram.observe(took.as_secs_f64());
        }
    }
}

/// A cache seen without its value type: what metrics and the stats log
/// read.
#[cfg_attr(
    not(any(feature = "prometheus", feature = "tracing")),
    allow(dead_code)
)]
pub(crate) trait StatsSource: Send + Sync {
    fn stats(&self) -> Stats;
    fn observer(&self) -> &Observer;
    /// Which cross-process features the cache uses: their metrics are
    /// shown only for the caches that do.
    fn coordination(&self) -> Coordination {
        Coordination::default()
    }
}

/// The cross-process features a cache uses.
#[derive(Clone, Copy, Debug, Default)]
#[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
pub(crate) struct Coordination {
    /// Distributed singleflight.
    pub(crate) distributed: bool,
    /// Refresh-ahead.
    pub(crate) refresh_ahead: bool,
}
