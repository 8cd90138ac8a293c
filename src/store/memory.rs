//! The in-memory [`Store`]: the W-TinyLFU engine behind the async handle.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{
    Envelope, Found, LocalTier, Store, StoreFuture, StoreStats, Stored, Tier, TierStats, Write,
};
use crate::tag::{Stamp, TagRegistry, TagStamps, Tags};
use crate::{MemoryCache, Result, Ttl};

/// A [`Store`] over the in-memory engine, [`MemoryCache`].
///
/// Every operation completes synchronously, so no operation allocates a
/// future (see [`StoreFuture`]) and a hit through
/// [`Cache::get`](crate::Cache::get) costs an engine lookup plus a value
/// clone. Entries expire on tokio's clock, so a paused test clock
/// (`tokio::time::pause`, `#[tokio::test(start_paused = true)]`) drives
/// their expiry.
///
/// Cheap to clone: clones share one store.
///
/// ```
/// use std::time::Duration;
/// use cachex::{Cache, MemoryStore};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = MemoryStore::new(50_000);
/// let cache: Cache<String> = Cache::builder().store(store.clone()).build();
/// cache.set("greeting", "hello".to_string(), cachex::Ttl::Default).await?;
/// // The engine underneath is there for its own statistics.
/// assert_eq!(store.engine().len(), 1);
/// # Ok::<(), cachex::Error>(())
/// # }).unwrap();
/// ```
pub struct MemoryStore<V> {
    engine: MemoryCache<String, Envelope<V>>,
    /// The versions of the tags its entries carry (see [`tag`](crate::tag)).
    tags: Arc<TagRegistry>,
}

impl<V> MemoryStore<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// A store holding at most `capacity` entries, expiring them on tokio's
    /// clock.
    pub fn new(capacity: u64) -> Self {
        Self::from_engine(
            MemoryCache::builder()
                .max_capacity(capacity)
                .clock(tokio_now)
                .build(),
        )
    }

    /// A store over an engine configured by hand (a weigher, an eviction
    /// listener, a shard count...).
    ///
    /// The cache passes an explicit time-to-live with every write, so the
    /// engine's own default TTL and jitter are never used. Give the engine
    /// `.clock(|| tokio::time::Instant::now().into_std())` if tests should be
    /// able to pause its time.
    pub fn from_engine(engine: MemoryCache<String, Envelope<V>>) -> Self {
        MemoryStore {
            engine,
            tags: Arc::default(),
        }
    }

    /// The engine underneath, for its statistics and upkeep.
    pub fn engine(&self) -> &MemoryCache<String, Envelope<V>> {
        &self.engine
    }
}

/// The engine's default capacity, 10,000 entries.
impl<V> Default for MemoryStore<V>
where
    V: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::from_engine(MemoryCache::builder().clock(tokio_now).build())
    }
}

/// Tokio's clock (pausable in tests), as the engine's time source.
fn tokio_now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl<V> Store<V> for MemoryStore<V>
where
    V: Clone + Send + Sync + 'static,
{
    #[inline]
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<Option<Stored<V>>>> {
        StoreFuture::ready(Ok(self.read(key)))
    }

    /// The engine's plain `get`: no remaining TTL to compute, no mapping.
    #[inline]
    fn get_entry<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<Option<Envelope<V>>>>
    where
        V: 'a,
    {
        let entry = self.engine.get(key).filter(Envelope::tags_current);
        StoreFuture::ready(Ok(entry))
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        entry: Envelope<V>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, Result<()>> {
        let ttl = ttl.map_or(Ttl::Never, Ttl::After);
        self.engine.insert_with_ttl(key.to_owned(), entry, ttl);
        StoreFuture::ready(Ok(()))
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<bool>> {
        let removed = self.engine.remove(key);
        StoreFuture::ready(Ok(removed.is_some_and(|entry| entry.tags_current())))
    }

    fn clear(&self) -> StoreFuture<'_, Result<()>> {
        self.engine.clear();
        StoreFuture::ready(Ok(()))
    }

    fn remaining_ttl<'a>(
        &'a self,
        key: &'a str,
    ) -> StoreFuture<'a, Result<Option<Option<Duration>>>> {
        let ttl = self.read(key).map(|stored| stored.remaining_ttl);
        StoreFuture::ready(Ok(ttl))
    }

    /// Engine lookups, answered at once: no future per key.
    fn get_many<'a>(&'a self, keys: &'a [&'a str]) -> StoreFuture<'a, Result<Vec<Found<V>>>>
    where
        V: 'a,
    {
        let found = keys.iter().map(|key| Ok(self.read(key))).collect();
        StoreFuture::ready(Ok(found))
    }

    fn set_many<'a>(&'a self, writes: Vec<Write<'a, V>>) -> StoreFuture<'a, Result<()>>
    where
        V: 'a,
    {
        for write in writes {
            let ttl = write.ttl.map_or(Ttl::Never, Ttl::After);
            self.engine
                .insert_with_ttl(write.key.to_owned(), write.entry, ttl);
        }
        StoreFuture::ready(Ok(()))
    }

    fn delete_many<'a>(&'a self, keys: &'a [&'a str]) -> StoreFuture<'a, Result<usize>>
    where
        V: 'a,
    {
        let deleted = keys
            .iter()
            .filter(|key| {
                let removed = self.engine.remove(**key);
                removed.is_some_and(|entry| entry.tags_current())
            })
            .count();
        StoreFuture::ready(Ok(deleted))
    }

    /// The engine's counters as tier `l1`. The engine counts every read
    /// (striped per thread) and every write (under the shard lock it holds
    /// anyway), whether or not the cache's metrics are on.
    fn stats(&self) -> StoreStats {
        let engine = self.engine.stats();
        let l1 = TierStats {
            hits: engine.hits,
            misses: engine.misses,
            entries: Some(self.engine.len()),
            evictions_size: engine.evictions_size,
            evictions_expired: engine.evictions_expired,
            removals: engine.removals,
            ..TierStats::default()
        };
        StoreStats::single(Tier::L1, l1)
    }

    /// Each tag's cell, made at version 1 if no entry holds it yet.
    fn tag_stamps<'a>(&'a self, tags: &'a Tags) -> StoreFuture<'a, Result<TagStamps>> {
        let stamps = tags
            .iter()
            .map(|tag| {
                let cell = self.tags.cell(tag, 1);
                let version = cell.version();
                Stamp { cell, version }
            })
            .collect();
        StoreFuture::ready(Ok(TagStamps::new(stamps)))
    }

    /// Moves each tag's version on. A tag no entry (nor load under way)
    /// holds has no cell, and nothing to invalidate.
    fn invalidate_tags<'a>(&'a self, tags: &'a Tags) -> StoreFuture<'a, Result<()>> {
        for tag in tags.iter() {
            if let Some(cell) = self.tags.find(tag) {
                cell.bump();
            }
        }
        StoreFuture::ready(Ok(()))
    }

    /// The engine: a cache's hit path reads it directly.
    fn local_tier(&self) -> Option<LocalTier<V>> {
        Some(LocalTier::memory(self.engine.clone()))
    }
}

impl<V> MemoryStore<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// The live entry under `key`, unless one of its tags moved on.
    #[inline]
    fn read(&self, key: &str) -> Option<Stored<V>> {
        let (envelope, remaining_ttl) = self.engine.get_with_ttl(key)?;
        envelope.tags_current().then_some(Stored {
            envelope,
            remaining_ttl,
        })
    }
}

impl<V> Clone for MemoryStore<V> {
    fn clone(&self) -> Self {
        MemoryStore {
            engine: self.engine.clone(),
            tags: Arc::clone(&self.tags),
        }
    }
}

impl<V> fmt::Debug for MemoryStore<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("engine", &self.engine)
            .finish()
    }
}
