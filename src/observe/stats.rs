//! What a [`Store`](crate::Store) reports about itself, per tier.

/// A tier of a store: the in-memory one, or the remote one.
///
/// Used as the `tier` label of the Prometheus metrics and the `cache.tier`
/// field of the tracing spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Tier {
    /// The in-process tier ([`MemoryStore`](crate::MemoryStore), or the
    /// near tier of a two-tier store).
    L1,
    /// The remote tier (Redis, or the far tier of a two-tier store).
    L2,
}

impl Tier {
    /// `"l1"` or `"l2"`: the label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::L1 => "l1",
            Tier::L2 => "l2",
        }
    }
}

/// The state of a circuit breaker guarding a remote tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused without being tried, until a probe is due.
    Open,
    /// A probe call is let through to test whether the tier recovered.
    HalfOpen,
}

impl BreakerState {
    /// Every state, in the order the metrics list them.
    pub const ALL: [BreakerState; 3] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
    ];

    /// `"closed"`, `"open"` or `"half_open"`: the label value.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// The counters of one tier of a store, as the store counts them.
///
/// A store fills in what it knows and leaves the rest at 0 (or `None`).
/// Fields are public so that stores outside this crate can build one:
///
/// ```
/// use cachex::observe::{BreakerState, TierStats};
///
/// let mut l2 = TierStats::default();
/// l2.hits = 10;
/// l2.errors = 1;
/// l2.breaker = Some(BreakerState::Closed);
/// assert_eq!(l2.hit_ratio(), 1.0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TierStats {
    /// Reads of this tier that found a live entry.
    pub hits: u64,
    /// Reads of this tier that found nothing (or only an expired entry).
    pub misses: u64,
    /// Entries held now, where the tier can tell cheaply (`None` for a
    /// shared remote server).
    pub entries: Option<u64>,
    /// Entries evicted (or refused) to keep within the capacity.
    pub evictions_size: u64,
    /// Entries reclaimed after their time-to-live.
    pub evictions_expired: u64,
    /// Entries removed by a delete or a clear.
    pub removals: u64,
    /// Operations on this tier that failed (I/O, protocol, codec, refused
    /// by an open breaker).
    pub errors: u64,
    /// The breaker guarding this tier, if it has one.
    pub breaker: Option<BreakerState>,
}

impl TierStats {
    /// Hits over reads of this tier, or 0 when there was none.
    pub fn hit_ratio(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }

    /// Evictions of every cause (explicit removals not included).
    pub fn evictions(&self) -> u64 {
        self.evictions_size + self.evictions_expired
    }
}

/// What a [`Store`](crate::Store) reports through
/// [`Store::stats`](crate::Store::stats): one [`TierStats`] per tier it has.
///
/// [`MemoryStore`](crate::MemoryStore) reports `l1`; a Redis store `l2`; a
/// two-tier store both. A store that counts nothing reports neither (the
/// default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// The in-memory tier's counters, if the store has one.
    pub l1: Option<TierStats>,
    /// The remote tier's counters, if the store has one.
    pub l2: Option<TierStats>,
}

impl StoreStats {
    /// Stats of a store with a single tier.
    pub fn single(tier: Tier, stats: TierStats) -> Self {
        let mut out = StoreStats::default();
        *out.tier_mut(tier) = Some(stats);
        out
    }

    /// The counters of `tier`, if the store has it.
    pub fn tier(&self, tier: Tier) -> Option<&TierStats> {
        match tier {
            Tier::L1 => self.l1.as_ref(),
            Tier::L2 => self.l2.as_ref(),
        }
    }

    /// The slot of `tier`, to fill in.
    pub fn tier_mut(&mut self, tier: Tier) -> &mut Option<TierStats> {
        match tier {
            Tier::L1 => &mut self.l1,
            Tier::L2 => &mut self.l2,
        }
    }

    /// The tiers the store has, nearest first.
    pub fn tiers(&self) -> impl Iterator<Item = (Tier, &TierStats)> {
        [(Tier::L1, &self.l1), (Tier::L2, &self.l2)]
            .into_iter()
            .filter_map(|(tier, stats)| stats.as_ref().map(|stats| (tier, stats)))
    }

    /// The only tier, if the store has exactly one.
    pub fn single_tier(&self) -> Option<Tier> {
        match (&self.l1, &self.l2) {
            (Some(_), None) => Some(Tier::L1),
            (None, Some(_)) => Some(Tier::L2),
            _ => None,
        }
    }

    /// Evictions of every cause over every tier.
    pub fn evictions(&self) -> u64 {
        self.tiers().map(|(_, stats)| stats.evictions()).sum()
    }
}
