//! Where the engine gets the time from.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A source of the current time, for expiry.
///
/// The default is the system's monotonic clock. Tests (and the async layer,
/// which follows tokio's pausable clock) can supply their own.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::{Duration, Instant};
/// use cachex::MemoryCache;
///
/// let now = Arc::new(Mutex::new(Instant::now()));
/// let time = now.clone();
/// let cache: MemoryCache<u32, u32> = MemoryCache::builder()
///     .max_capacity(100)
///     .time_to_live(Duration::from_secs(10))
///     .ttl_jitter(0.0)
///     .clock(move || *time.lock().unwrap())
///     .build();
/// cache.insert(1, 1);
/// *now.lock().unwrap() += Duration::from_secs(11);
/// assert_eq!(cache.get(&1), None);
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current instant. Must never go backwards.
    fn now(&self) -> Instant;
}

impl<F> Clock for F
where
    F: Fn() -> Instant + Send + Sync + 'static,
{
    fn now(&self) -> Instant {
        self()
    }
}

/// The engine's view of time: nanoseconds since the cache was built.
#[derive(Clone)]
pub(crate) struct TimeSource {
    origin: Instant,
    custom: Option<Arc<dyn Clock>>,
}

impl TimeSource {
    pub(crate) fn new(custom: Option<Arc<dyn Clock>>) -> Self {
        let origin = custom.as_ref().map_or_else(Instant::now, |c| c.now());
        TimeSource { origin, custom }
    }

    /// Nanoseconds since the cache was built. Out of line: a hit on an entry
    /// with a TTL calls it, and inlined it would crowd the hit path.
    #[inline(never)]
    pub(crate) fn now(&self) -> u64 {
        let now = match &self.custom {
            None => Instant::now(),
            Some(clock) => clock.now(),
        };
        duration_to_nanos(now.saturating_duration_since(self.origin))
    }
}

impl fmt::Debug for TimeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeSource")
            .field("custom", &self.custom.is_some())
            .finish()
    }
}

/// Saturating conversion (u64 nanoseconds last 584 years).
pub(crate) fn duration_to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
