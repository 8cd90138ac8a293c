//! The caches under test, each behind the small [`Contender`] trait.
//!
//! Adding a contender takes a struct, its `Contender` impl, a [`Kind`]
//! variant and one arm in [`Kind::visit`]. Workloads are written once as a
//! [`Visitor`] and monomorphised per contender, so no dynamic dispatch sits
//! in the timed loops. Every contender's `get` and `insert` wrapper is
//! always inlined into the loop, so none pays for a call that another does
//! not: left to the compiler, cachex's `get` wrapper stayed a call while
//! the others were inlined, and on the development machine a call around a
//! get cost 15-19% of all-hit reads.

use std::fmt;

use clap::ValueEnum;

/// A concurrent `u64 -> u64` cache (or map) as the workloads drive it.
pub trait Contender: Send + Sync + Sized + 'static {
    /// Name used in tables and JSON.
    const NAME: &'static str;
    /// False for the unbounded ceiling map, which never evicts.
    const BOUNDED: bool = true;

    /// A cache holding at most `capacity` entries, configured as a user
    /// would by default.
    fn with_capacity(capacity: u64) -> Self;
    /// Looks `key` up.
    fn get(&self, key: u64) -> Option<u64>;
    /// Stores `value` under `key`.
    fn insert(&self, key: u64, value: u64);
    /// The entry count as the cache reports it.
    fn entries(&self) -> u64;
    /// Finishes deferred maintenance so [`entries`](Self::entries) is exact.
    fn sync(&self) {}
    /// Entries a `get` would find right now, counted exactly (however
    /// slowly): a cache that admits before it evicts can hold more than its
    /// capacity for a while, which lifts its hit ratio.
    fn live_entries(&self) -> u64 {
        self.entries()
    }
}

/// cachex's [`MemoryCache`](cachex::MemoryCache), default builder.
pub struct Cachex(cachex::MemoryCache<u64, u64>);

impl Contender for Cachex {
    const NAME: &'static str = "cachex";

    fn with_capacity(capacity: u64) -> Self {
        Cachex(
            cachex::MemoryCache::builder()
                .max_capacity(capacity)
                .build(),
        )
    }
    #[inline(always)]
    fn get(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
    #[inline(always)]
    fn insert(&self, key: u64, value: u64) {
        self.0.insert(key, value);
    }
    fn entries(&self) -> u64 {
        self.0.len()
    }
    fn sync(&self) {
        self.0.run_pending_tasks();
    }
}

/// cachex with a single shard: not a standard contender, a diagnostic that
/// separates the cost of sharding from the policy itself (on request only).
pub struct CachexOneShard(cachex::MemoryCache<u64, u64>);

impl Contender for CachexOneShard {
    const NAME: &'static str = "cachex_1shard";

    fn with_capacity(capacity: u64) -> Self {
        CachexOneShard(
            cachex::MemoryCache::builder()
                .max_capacity(capacity)
                .shards(1)
                .build(),
        )
    }
    #[inline(always)]
    fn get(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
    #[inline(always)]
    fn insert(&self, key: u64, value: u64) {
        self.0.insert(key, value);
    }
    fn entries(&self) -> u64 {
        self.0.len()
    }
    fn sync(&self) {
        self.0.run_pending_tasks();
    }
}

/// `moka::sync::Cache` with `max_capacity`, otherwise default.
pub struct Moka(moka::sync::Cache<u64, u64>);

impl Contender for Moka {
    const NAME: &'static str = "moka";

    fn with_capacity(capacity: u64) -> Self {
        Moka(moka::sync::Cache::builder().max_capacity(capacity).build())
    }
    #[inline(always)]
    fn get(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
    #[inline(always)]
    fn insert(&self, key: u64, value: u64) {
        self.0.insert(key, value);
    }
    fn entries(&self) -> u64 {
        self.0.entry_count()
    }
    fn sync(&self) {
        self.0.run_pending_tasks();
    }
    /// `entry_count` lags behind the writes moka has not applied yet; its
    /// iterator sees every entry a `get` would find.
    fn live_entries(&self) -> u64 {
        self.0.iter().count() as u64
    }
}

/// `quick_cache::sync::Cache::new(capacity)`.
pub struct QuickCache(quick_cache::sync::Cache<u64, u64>);

impl Contender for QuickCache {
    const NAME: &'static str = "quick_cache";

    fn with_capacity(capacity: u64) -> Self {
        QuickCache(quick_cache::sync::Cache::new(capacity as usize))
    }
    #[inline(always)]
    fn get(&self, key: u64) -> Option<u64> {
        self.0.get(&key)
    }
    #[inline(always)]
    fn insert(&self, key: u64, value: u64) {
        self.0.insert(key, value);
    }
    fn entries(&self) -> u64 {
        self.0.len() as u64
    }
}

/// The ceiling: an unbounded `papaya::HashMap` (foldhash, like cachex and
/// quick_cache) doing plain reads and inserts; the capacity is ignored.
pub struct Papaya(papaya::HashMap<u64, u64, foldhash::fast::RandomState>);

impl Contender for Papaya {
    const NAME: &'static str = "papaya";
    const BOUNDED: bool = false;

    fn with_capacity(_capacity: u64) -> Self {
        Papaya(papaya::HashMap::with_hasher(
            foldhash::fast::RandomState::default(),
        ))
    }
    #[inline(always)]
    fn get(&self, key: u64) -> Option<u64> {
        self.0.pin().get(&key).copied()
    }
    #[inline(always)]
    fn insert(&self, key: u64, value: u64) {
        self.0.pin().insert(key, value);
    }
    fn entries(&self) -> u64 {
        self.0.len() as u64
    }
}

/// A workload written once for any contender.
pub trait Visitor {
    /// What the workload produces.
    type Output;
    /// Runs the workload against contender `C`.
    fn visit<C: Contender>(self) -> Self::Output;
}

/// Names a contender at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// cachex's MemoryCache, default builder.
    Cachex,
    /// moka::sync::Cache with max_capacity.
    Moka,
    /// quick_cache::sync::Cache::new(capacity).
    #[value(name = "quick_cache", alias = "quick-cache")]
    QuickCache,
    /// papaya::HashMap, unbounded (the ceiling).
    Papaya,
    /// Diagnostic: cachex with `.shards(1)`; only when asked for.
    #[value(name = "cachex_1shard")]
    CachexOneShard,
}

impl Kind {
    /// Every standard contender, the ceiling last.
    pub const ALL: [Kind; 4] = [Kind::Cachex, Kind::Moka, Kind::QuickCache, Kind::Papaya];
    /// The bounded caches.
    pub const CACHES: [Kind; 3] = [Kind::Cachex, Kind::Moka, Kind::QuickCache];

    /// The contenders asked for on the command line, in the order given,
    /// or `default` when none were.
    pub fn selected(requested: &[Kind], default: &[Kind]) -> Vec<Kind> {
        if requested.is_empty() {
            return default.to_vec();
        }
        let mut out: Vec<Kind> = Vec::new();
        for &k in requested {
            if !out.contains(&k) {
                out.push(k);
            }
        }
        out
    }

    /// Runs `visitor` monomorphised for this contender.
    pub fn visit<V: Visitor>(self, visitor: V) -> V::Output {
        match self {
            Kind::Cachex => visitor.visit::<Cachex>(),
            Kind::Moka => visitor.visit::<Moka>(),
            Kind::QuickCache => visitor.visit::<QuickCache>(),
            Kind::Papaya => visitor.visit::<Papaya>(),
            Kind::CachexOneShard => visitor.visit::<CachexOneShard>(),
        }
    }

    /// The contender's display name.
    pub fn name(self) -> &'static str {
        struct Name;
        impl Visitor for Name {
            type Output = &'static str;
            fn visit<C: Contender>(self) -> &'static str {
                C::NAME
            }
        }
        self.visit(Name)
    }

    /// Whether the contender enforces a capacity.
    pub fn bounded(self) -> bool {
        struct Bounded;
        impl Visitor for Bounded {
            type Output = bool;
            fn visit<C: Contender>(self) -> bool {
                C::BOUNDED
            }
        }
        self.visit(Bounded)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Smoke;
    impl Visitor for Smoke {
        type Output = ();
        fn visit<C: Contender>(self) {
            let c = C::with_capacity(1000);
            assert_eq!(c.get(1), None);
            c.insert(1, 10);
            c.insert(2, 20);
            c.sync();
            assert_eq!(c.get(1), Some(10), "{}", C::NAME);
            assert_eq!(c.entries(), 2, "{}", C::NAME);
        }
    }

    #[test]
    fn every_contender_gets_and_inserts() {
        for kind in Kind::ALL.into_iter().chain([Kind::CachexOneShard]) {
            kind.visit(Smoke);
        }
    }
}
