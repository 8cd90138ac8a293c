//! Fail-safe: keeping expired values, hidden, as the answer of last resort
//! when the load that should replace them fails; and the load timeouts.
//!
//! # How an expired value is kept: a longer physical TTL
//!
//! With fail-safe on, every value the cache writes is stored for its
//! *logical* TTL (what the caller or the default asked for) plus
//! `max_stale`, and a read that finds a value with `max_stale` or less left
//! treats it as logically expired: hidden from `get`, a miss for
//! `get_or_load`, but kept as the fallback of the load that follows.
//!
//! Why this rather than writing the logical expiry into the envelope:
//!
//! - no store and no frame format changes: the memory store, Redis and the
//!   hybrid store already report the remaining TTL with every `Store::get`,
//!   so fail-safe works on all of them, and on any third-party store;
//! - nothing in the stored bytes depends on a clock, so processes whose
//!   clocks disagree still agree on what is expired (Redis keeps the time);
//! - the cost is that processes sharing a remote store must be configured
//!   with the same `max_stale` (another one would see values expire
//!   `max_stale` early or late), and that `Cache::get` then needs the TTL
//!   (Redis: `GET` + `PTTL` instead of a plain `GET`). With fail-safe off,
//!   neither cost is paid.
//!
//! "Not found" entries are stored and read exactly as without fail-safe:
//! a stale "this row does not exist" is a poor answer during an outage
//! (the row may have been created since) and negative entries are short
//! lived anyway, so fail-safe applies to values only. Entries that never
//! expire never go stale.
//!
//! # Re-arming
//!
//! When a load with a fallback fails (error, panic, hard timeout), its
//! callers get the stale value and the value is written back for
//! [`throttle`](FailSafe::throttle) (logical; physically throttle +
//! `max_stale`), so that for that long every caller hits it and the failing
//! source is asked again once per key per throttle period, not on every
//! request. Under a lasting outage the value is thus served, stale, for as
//! long as every attempt fails; `max_stale` bounds how long an expired
//! value is kept when nobody needed it (no load failed in the meantime).

use std::time::Duration;

use crate::store::{Envelope, Stored};
use crate::tag::TagStamps;

/// The fail-safe settings of a cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FailSafe {
    /// How long past its logical expiry a value is kept as a fallback.
    pub(crate) max_stale: Duration,
    /// How long a stale value served after a failed load stays live.
    pub(crate) throttle: Duration,
}

/// What a read found, once fail-safe has had its say.
#[derive(Debug)]
pub(crate) enum Freshness<V> {
    /// A live entry, with its logical remaining TTL.
    Live(Stored<V>),
    /// A value past its logical expiry, kept as a fallback.
    Stale(Stale<V>),
}

/// A logically expired value, the fallback of the load that replaces it.
#[derive(Clone, Debug)]
pub(crate) struct Stale<V> {
    pub(crate) value: V,
    /// How long its load took, kept when it is re-armed (XFetch's delta).
    pub(crate) load_time: Duration,
    /// Its tags, kept when it is re-armed, so that invalidating one of them
    /// still drops it.
    pub(crate) tags: Option<TagStamps>,
}

impl FailSafe {
    /// The TTL to store a value under, for a logical TTL of `ttl` (`None`:
    /// never expires, and never goes stale).
    pub(crate) fn physical_ttl(&self, ttl: Option<Duration>) -> Option<Duration> {
        ttl.map(|ttl| ttl.saturating_add(self.max_stale))
    }

    /// The physical TTL of a re-armed stale value.
    pub(crate) fn rearm_ttl(&self) -> Duration {
        self.throttle.saturating_add(self.max_stale)
    }

    /// Splits a stored entry into live (with its logical remaining TTL) or
    /// stale. "Not found" entries are stored without the extra time, so
    /// they are taken as they are.
    pub(crate) fn judge<V>(&self, stored: Stored<V>) -> Freshness<V> {
        let load_time = stored.envelope.load_time();
        let tags = stored.envelope.tags().cloned();
        let rebuilt = |value, remaining_ttl, tags| {
            let mut envelope = Envelope::from_option(value).with_load_time(load_time);
            envelope.set_tags(tags);
            Stored {
                envelope,
                remaining_ttl,
            }
        };
        match (stored.remaining_ttl, stored.envelope.into_value()) {
            (Some(left), Some(value)) if left <= self.max_stale => Freshness::Stale(Stale {
                value,
                load_time,
                tags,
            }),
            (Some(left), Some(value)) => {
                Freshness::Live(rebuilt(Some(value), Some(left - self.max_stale), tags))
            }
            (remaining_ttl, value) => Freshness::Live(rebuilt(value, remaining_ttl, tags)),
        }
    }
}

/// The limits on a load's duration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LoadTimeouts {
    /// Past this, callers with a stale value get it; the load goes on.
    pub(crate) soft: Option<Duration>,
    /// Past this, the load is abandoned (its future dropped).
    pub(crate) hard: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: FailSafe = FailSafe {
        max_stale: Duration::from_secs(60),
        throttle: Duration::from_secs(10),
    };

    fn stored(envelope: Envelope<u8>, secs: Option<u64>) -> Stored<u8> {
        Stored {
            envelope,
            remaining_ttl: secs.map(Duration::from_secs),
        }
    }

    #[test]
    fn values_within_max_stale_of_their_end_are_stale() {
        let live = POLICY.judge(stored(Envelope::found(1), Some(61)));
        assert!(
            matches!(live, Freshness::Live(s) if s.remaining_ttl == Some(Duration::from_secs(1)))
        );
        let edge = POLICY.judge(stored(Envelope::found(1), Some(60)));
        assert!(matches!(edge, Freshness::Stale(Stale { value: 1, .. })));
    }

    #[test]
    fn not_found_and_eternal_entries_are_never_stale() {
        let negative = POLICY.judge(stored(Envelope::not_found(), Some(5)));
        assert!(
            matches!(negative, Freshness::Live(s) if s.remaining_ttl == Some(Duration::from_secs(5)))
        );
        let eternal = POLICY.judge(stored(Envelope::found(1), None));
        assert!(matches!(eternal, Freshness::Live(s) if s.remaining_ttl.is_none()));
    }

    #[test]
    fn physical_ttls_add_max_stale() {
        assert_eq!(
            POLICY.physical_ttl(Some(Duration::from_secs(5))),
            Some(Duration::from_secs(65))
        );
        assert_eq!(POLICY.physical_ttl(None), None);
        assert_eq!(
            POLICY.physical_ttl(Some(Duration::MAX)),
            Some(Duration::MAX)
        );
        assert_eq!(POLICY.rearm_ttl(), Duration::from_secs(70));
    }
}
