//! How long a stored value lives.

use std::time::Duration;

/// The time-to-live chosen for one write.
///
/// ```
/// use std::time::Duration;
/// use cachex::{MemoryCache, Ttl};
///
/// let cache: MemoryCache<&str, u32> = MemoryCache::builder()
///     .max_capacity(100)
///     .time_to_live(Duration::from_secs(300))
///     .build();
/// cache.insert_with_ttl("session", 1, Ttl::After(Duration::from_secs(30)));
/// cache.insert_with_ttl("config", 2, Ttl::Never);
/// cache.insert_with_ttl("page", 3, Ttl::Default); // same as `insert`
/// assert_eq!(cache.remaining_ttl("config"), Some(None));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Ttl {
    /// The cache's default time-to-live, with its jitter applied; never
    /// expires if the cache has no default.
    #[default]
    Default,
    /// Never expires (it may still be evicted to respect the capacity).
    Never,
    /// Expires after exactly this long (no jitter).
    After(Duration),
}
