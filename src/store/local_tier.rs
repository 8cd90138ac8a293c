//! A store's in-process tier, which a [`Cache`](crate::Cache) reads
//! directly on its hit path.
//!
//! Through [`Store::get`](super::Store::get), even an answer held in this
//! process's memory costs a dynamic call and a [`StoreFuture`] that the
//! cache then unpacks: together about as many instructions as the engine's
//! own lookup. The built-in stores with an in-process tier
//! ([`MemoryStore`](super::MemoryStore), [`HybridStore`](super::HybridStore)'s
//! L1) hand the cache a [`LocalTier`] once, when it is built
//! ([`Store::local_tier`](super::Store::local_tier)), and the cache reads it
//! with the engine's lookup inlined into its own code. What the tier does
//! not hold goes on as the store's own read would ([`LocalTier::behind`]):
//! nothing more for a memory store, L2 for a hybrid one.
//!
//! A store's answers must not depend on which way they were asked: the tier
//! reads exactly what the store's `get` and `get_entry` read first, and
//! counts the same (one engine read per lookup).

use std::hash::BuildHasher;
#[cfg(feature = "redis")]
use std::sync::Arc;
use std::time::Duration;

use super::{Envelope, StoreFuture, Stored};
use crate::engine::DefaultHashBuilder;
use crate::{MemoryCache, Result};

/// The in-process tier of a built-in store, as the cache reads it. Only
/// this crate's stores make one; a store of your own answers `None` from
/// [`Store::local_tier`](super::Store::local_tier) and is always called
/// through the trait.
pub struct LocalTier<V> {
    tier: Tier<V>,
    /// The tier's engine's hasher, kept here so that hashing a key needs
    /// no look at which tier this is.
    hasher: DefaultHashBuilder,
}

enum Tier<V> {
    /// A [`MemoryStore`](super::MemoryStore)'s engine: it holds everything
    /// the store holds, so a miss there is the store's answer.
    Memory(MemoryCache<String, Envelope<V>>),
    /// A [`HybridStore`](super::HybridStore)'s L1, and the rest of the
    /// store's read (L2) for what L1 does not hold.
    #[cfg(feature = "redis")]
    Hybrid {
        l1: Arc<super::hybrid::Local<V>>,
        behind: Arc<dyn Behind<V>>,
    },
}

/// The rest of a store's read after its in-process tier missed.
pub(crate) trait Behind<V>: Send + Sync {
    /// What [`Store::get`](super::Store::get) answers for `key` once its
    /// in-process tier has missed (and counted the miss).
    fn get_behind<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<Option<Stored<V>>>>;
}

impl<V> LocalTier<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// A memory store's engine.
    pub(crate) fn memory(engine: MemoryCache<String, Envelope<V>>) -> Self {
        LocalTier {
            hasher: engine.hasher().clone(),
            tier: Tier::Memory(engine),
        }
    }

    /// A hybrid store's L1, with the read behind it.
    #[cfg(feature = "redis")]
    pub(crate) fn hybrid(l1: Arc<super::hybrid::Local<V>>, behind: Arc<dyn Behind<V>>) -> Self {
        LocalTier {
            hasher: l1.engine().hasher().clone(),
            tier: Tier::Hybrid { l1, behind },
        }
    }

    /// `read` applied, under the tier's read lock, to the entry the
    /// store's [`get_entry`](super::Store::get_entry) would answer from
    /// this tier (tags checked here; no clock read for the TTL); `None` if
    /// the tier does not hold it. See
    /// [`read_hashed`](Self::read_hashed) for why in place.
    #[inline(always)]
    pub(crate) fn read_entry<R>(
        &self,
        key: &str,
        read: impl FnOnce(&Envelope<V>) -> R,
    ) -> Option<R> {
        let hash = self.hash(key);
        match &self.tier {
            Tier::Memory(engine) => engine
                .read_hashed(
                    hash,
                    key,
                    #[inline(always)]
                    |envelope, _| envelope.tags_current().then(|| read(envelope)),
                )
                .flatten(),
            #[cfg(feature = "redis")]
            Tier::Hybrid { l1, .. } => l1.read_envelope_hashed(hash, key, read),
        }
    }

    /// The entry and its remaining TTL, as the store's
    /// [`get`](super::Store::get) would answer them from this tier, without
    /// its tags; `None` if the tier does not hold it.
    #[inline(always)]
    pub(crate) fn get(&self, key: &str) -> Option<Stored<V>> {
        self.get_hashed(self.hash(key), key, false)
    }

    /// The hasher the tier locates keys with: the cache's singleflight
    /// uses it too, so that one hash of a key serves both.
    pub(crate) fn hasher(&self) -> DefaultHashBuilder {
        self.hasher.clone()
    }

    /// `key`'s hash by [`hasher`](Self::hasher).
    #[inline(always)]
    pub(crate) fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// [`get`](Self::get) of the key whose hash is `hash`; the entry keeps
    /// its tags if `keep_tags` (fail-safe re-arms a stale value with them).
    ///
    /// A hit clones the entry without its tags otherwise: the tags are a
    /// shared list, and counting one more holder of it on every hit (and
    /// one less after) cost a tagged hit about a third of an untagged one.
    #[inline(always)]
    pub(crate) fn get_hashed(&self, hash: u64, key: &str, keep_tags: bool) -> Option<Stored<V>> {
        match &self.tier {
            Tier::Memory(engine) => {
                // Written from inside the engine's read rather than
                // returned through it: returned, the entry was copied at
                // each layer it passed (the shard's lookup, the engine's
                // `Option`, an `Option` of `Option` to flatten), about 40
                // instructions of moves on every hit.
                let mut found = None;
                engine.read_hashed(hash, key, |envelope, remaining_ttl| {
                    if envelope.tags_current() {
                        found = Some(Stored {
                            envelope: envelope.clone_checked(keep_tags),
                            remaining_ttl,
                        });
                    }
                });
                found
            }
            #[cfg(feature = "redis")]
            Tier::Hybrid { l1, .. } => l1.get_hashed(hash, key, keep_tags),
        }
    }

    /// `read` applied, under the tier's read lock, to the entry that
    /// [`get_hashed`](Self::get_hashed) would answer and to its remaining
    /// TTL; `None` if the tier does not hold it (live, with current tags).
    ///
    /// For a hit path that needs less than the whole entry: `read` copies
    /// out what it needs in place, rather than the entry being cloned and
    /// then moved through each layer of the lookup.
    #[inline(always)]
    pub(crate) fn read_hashed<R>(
        &self,
        hash: u64,
        key: &str,
        read: impl FnOnce(&Envelope<V>, Option<Duration>) -> R,
    ) -> Option<R> {
        match &self.tier {
            Tier::Memory(engine) => engine
                .read_hashed(
                    hash,
                    key,
                    #[inline(always)]
                    |envelope, remaining_ttl| {
                        envelope
                            .tags_current()
                            .then(|| read(envelope, remaining_ttl))
                    },
                )
                .flatten(),
            #[cfg(feature = "redis")]
            Tier::Hybrid { l1, .. } => l1.read_hashed(hash, key, read),
        }
    }

    /// After this tier missed `key`: the rest of the store's read, or
    /// `None` if there is nothing behind the tier (the miss is the answer).
    #[inline]
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    pub(crate) fn behind<'a>(
        &'a self,
        key: &'a str,
    ) -> Option<StoreFuture<'a, Result<Option<Stored<V>>>>> {
        match &self.tier {
            Tier::Memory(_) => None,
            #[cfg(feature = "redis")]
            Tier::Hybrid { behind, .. } => Some(behind.get_behind(key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ttl;

    #[test]
    fn a_memory_tier_answers_what_the_store_holds_and_nothing_behind() {
        let engine: MemoryCache<String, Envelope<u32>> = MemoryCache::new(10);
        engine.insert_with_ttl("a".into(), Envelope::found(1), Ttl::Never);
        let tier = LocalTier::memory(engine.clone());
        assert_eq!(
            tier.read_entry("a", Envelope::clone_untagged),
            Some(Envelope::found(1))
        );
        let stored = tier.get("a").unwrap();
        assert_eq!(
            (stored.envelope, stored.remaining_ttl),
            (Envelope::found(1), None)
        );
        assert_eq!(tier.read_entry("b", Envelope::clone_untagged), None);
        assert!(tier.behind("b").is_none(), "a miss is final");
        let stats = engine.stats();
        assert_eq!((stats.hits, stats.misses), (2, 1), "one read per lookup");
    }
}
