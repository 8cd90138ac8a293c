//! The backend seam: where a [`Cache`](crate::Cache) keeps its entries.
//!
//! A [`Store`] is a dumb, possibly remote, key-value store with expiry. All
//! the loading logic (singleflight, stale-while-revalidate, jitter, negative
//! caching) lives above it in the cache, so every backend gets it for free,
//! and a backend only has to store [`Envelope`]s with a time-to-live.
//!
//! [`MemoryStore`] is the in-memory implementation; [`RedisStore`] (feature
//! `redis`) keeps entries in Redis; [`HybridStore`] (feature `redis`) puts
//! an in-memory L1 in front of Redis, coherent across processes.

mod envelope;
mod future;
#[cfg(feature = "redis")]
pub mod hybrid;
mod local_tier;
mod memory;
#[cfg(feature = "redis")]
pub mod redis;

use std::time::Duration;

pub use envelope::Envelope;
pub use future::StoreFuture;
#[cfg(feature = "redis")]
pub use hybrid::{HybridStore, HybridStoreBuilder};
#[cfg(feature = "redis")]
pub(crate) use local_tier::Behind;
pub(crate) use local_tier::LocalTier;
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis::{RedisStore, RedisStoreBuilder};

use crate::tag::{TagStamps, Tags};
use crate::{Error, Result};

pub use crate::observe::{StoreSpan, StoreStats, Tier, TierStats};

/// An entry read from a [`Store`], with its remaining time-to-live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored<V> {
    /// The stored value, or the cached "not found".
    pub envelope: Envelope<V>,
    /// How long the entry has left to live; `None` if it never expires.
    /// Stale-while-revalidate and early refresh decide on it, and a
    /// two-tier store copies it when promoting an entry.
    pub remaining_ttl: Option<Duration>,
}

/// One write of a batch: see [`Store::set_many`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write<'a, V> {
    /// The key, validated as for [`Store::set`].
    pub key: &'a str,
    /// What to store under it.
    pub entry: Envelope<V>,
    /// When it expires (`None`: never), as for [`Store::set`].
    pub ttl: Option<Duration>,
}

/// What a batch read found under one key: as [`Store::get`] answers for
/// it, so that one undecodable entry does not fail the others.
pub type Found<V> = Result<Option<Stored<V>>>;

/// An async, fallible key-value store with per-entry expiry: the backend of
/// a [`Cache`](crate::Cache).
///
/// # Contract
///
/// - **Keys** arrive validated: non-empty and at most
///   [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes. A store may namespace them
///   (a Redis key prefix, say) but must map distinct keys to distinct entries.
/// - **Expiry**: `ttl` is `Some(d)` to expire `d` after the write, `None` to
///   never expire. The cache has already applied jitter; the store applies
///   the TTL as given. [`get`](Self::get) never returns an expired entry and
///   reports the time the entry has left.
/// - **Errors** carry the operation and the key: build them with
///   [`Error::store`](crate::Error::store) (I/O, protocol) and
///   [`Error::codec`](crate::Error::codec) (a value that does not encode or
///   decode). The cache reports them to the caller; only `get_or_load` treats
///   a failed read as a miss and a failed write as "not cached", since a
///   working loader should not fail because its cache is down.
/// - **Cancellation**: callers wrap operations in timeouts, so a future may
///   be dropped at any await point. The store must remain usable; a dropped
///   write may or may not have happened.
/// - **Concurrency**: methods are called from many tasks at once.
/// - **Batches**: [`get_many`](Self::get_many),
///   [`set_many`](Self::set_many) and [`delete_many`](Self::delete_many)
///   have default implementations that make one single-key call after
///   another, so a store need not write them; a remote store overrides them
///   to make one round trip. Batches arrive non-empty, with distinct keys,
///   and at most [`MAX_BATCH`](crate::MAX_BATCH) of them.
/// - **Tags**: [`get`](Self::get) never answers an entry one of whose
///   tags was invalidated after it was written (see [`tag`](crate::tag)).
///   Only the built-in stores support tags: the defaults of
///   [`tag_stamps`](Self::tag_stamps) and
///   [`invalidate_tags`](Self::invalidate_tags) refuse with
///   [`Error::TagsUnsupported`], so a cache over a store of your own
///   refuses tagged writes rather than keep entries it cannot invalidate.
/// - **Observability**: [`stats`](Self::stats) reports the store's own
///   counters per [`Tier`] (evictions, errors, breaker state); a cache folds
///   them into its [`Stats`](crate::Stats) and metrics. Counting must stay
///   off the hot path's contended lines (per-thread stripes, or counters
///   the store already keeps under its own locks). A remote store wraps
///   each call in a [`StoreSpan`] so that traces show it.
///
/// # Why `StoreFuture` instead of `async fn`
///
/// The cache holds its store as `Arc<dyn Store<V>>` so that the backend is
/// chosen at run time without a type parameter on [`Cache`](crate::Cache).
/// That requires an object-safe trait, which `async fn` in traits is not.
/// The usual alternative, returning `Pin<Box<dyn Future>>`, allocates on
/// every call, including every cache hit of the in-memory store.
/// [`StoreFuture`] is either a ready value or such a boxed future: a remote
/// backend writes `StoreFuture::new(async move { ... })`, an in-memory one
/// `StoreFuture::ready(..)` and allocates nothing.
///
/// # Example: a decorator
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::time::Duration;
/// use cachex::store::{Envelope, MemoryStore, Store, StoreFuture, Stored};
/// use cachex::{Cache, Result};
///
/// /// Counts the reads that reach the backend.
/// struct Counting<S> {
///     inner: S,
///     reads: AtomicU64,
/// }
///
/// impl<V, S: Store<V>> Store<V> for Counting<S> {
///     fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<Option<Stored<V>>>> {
///         self.reads.fetch_add(1, Ordering::Relaxed);
///         self.inner.get(key)
///     }
///     fn set<'a>(
///         &'a self,
///         key: &'a str,
///         entry: Envelope<V>,
///         ttl: Option<Duration>,
///     ) -> StoreFuture<'a, Result<()>> {
///         self.inner.set(key, entry, ttl)
///     }
///     fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<bool>> {
///         self.inner.delete(key)
///     }
///     fn clear(&self) -> StoreFuture<'_, Result<()>> {
///         self.inner.clear()
///     }
///     fn remaining_ttl<'a>(
///         &'a self,
///         key: &'a str,
///     ) -> StoreFuture<'a, Result<Option<Option<Duration>>>> {
///         self.inner.remaining_ttl(key)
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = Counting { inner: MemoryStore::new(1_000), reads: AtomicU64::new(0) };
/// let cache: Cache<u32> = Cache::builder().store(store).build();
/// cache.set("a", 1, cachex::Ttl::Default).await?;
/// assert_eq!(cache.get("a").await?, Some(1));
/// # Ok::<(), cachex::Error>(())
/// # }).unwrap();
/// ```
pub trait Store<V>: Send + Sync {
    /// The live entry under `key`, with its remaining time-to-live, or
    /// `None` if there is none.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<Option<Stored<V>>>>;

    /// The live entry under `key`, without its remaining time-to-live: what
    /// [`Cache::get`](crate::Cache::get) needs. The default calls
    /// [`get`](Self::get); stores that pay extra for the TTL override it
    /// (Redis: a plain `GET` instead of `GET` + `PTTL`).
    fn get_entry<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<Option<Envelope<V>>>>
    where
        V: 'a,
    {
        self.get(key)
            .map(|stored| stored.map(|found| found.map(|stored| stored.envelope)))
    }

    /// Stores `entry` under `key`, replacing any entry there, to expire
    /// after `ttl` (`None`: never).
    fn set<'a>(
        &'a self,
        key: &'a str,
        entry: Envelope<V>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, Result<()>>;

    /// Removes the entry under `key`; answers whether there was a live one.
    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<bool>>;

    /// Removes every entry this store holds (for a shared remote store: every
    /// entry under this store's namespace, not the whole server).
    fn clear(&self) -> StoreFuture<'_, Result<()>>;

    /// The live entries under `keys`, in the same order, each as
    /// [`get`](Self::get) would answer it. The outer error is for a batch
    /// that failed as a whole (the store is unreachable).
    ///
    /// The default calls [`get`](Self::get) for each key in turn.
    fn get_many<'a>(&'a self, keys: &'a [&'a str]) -> StoreFuture<'a, Result<Vec<Found<V>>>>
    where
        V: Send + 'a,
    {
        StoreFuture::new(async move {
            let mut found = Vec::with_capacity(keys.len());
            for key in keys {
                found.push(self.get(key).await);
            }
            Ok(found)
        })
    }

    /// Stores every entry of `writes`, as [`set`](Self::set) would. On an
    /// error, some of the writes may have happened.
    ///
    /// The default calls [`set`](Self::set) for each write in turn,
    /// stopping at the first error.
    fn set_many<'a>(&'a self, writes: Vec<Write<'a, V>>) -> StoreFuture<'a, Result<()>>
    where
        V: Send + 'a,
    {
        StoreFuture::new(async move {
            for write in writes {
                self.set(write.key, write.entry, write.ttl).await?;
            }
            Ok(())
        })
    }

    /// Removes the entries under `keys`; answers how many were live. On an
    /// error, some of them may have been removed.
    ///
    /// The default calls [`delete`](Self::delete) for each key in turn,
    /// stopping at the first error.
    fn delete_many<'a>(&'a self, keys: &'a [&'a str]) -> StoreFuture<'a, Result<usize>>
    where
        V: Send + 'a,
    {
        StoreFuture::new(async move {
            let mut deleted = 0;
            for key in keys {
                deleted += usize::from(self.delete(key).await?);
            }
            Ok(deleted)
        })
    }

    /// The remaining time-to-live of `key`'s entry: `None` if there is no
    /// live entry, `Some(None)` if it never expires.
    fn remaining_ttl<'a>(
        &'a self,
        key: &'a str,
    ) -> StoreFuture<'a, Result<Option<Option<Duration>>>>;

    /// The current versions of `tags`, to be recorded with an entry about
    /// to be written ([`Envelope::with_tags`]); a tag the store has never
    /// seen is given a version then. A cache reads them *before* it calls
    /// a loader, so that an invalidation during the load leaves the loaded
    /// entry invalid rather than a value read before it valid.
    ///
    /// The default refuses with [`Error::TagsUnsupported`].
    fn tag_stamps<'a>(&'a self, tags: &'a Tags) -> StoreFuture<'a, Result<TagStamps>> {
        let _ = tags;
        StoreFuture::ready(Err(Error::TagsUnsupported))
    }

    /// Moves each tag of `tags` to a new version, so that no entry written
    /// with it before is answered again: one operation per tag, however
    /// many entries carry it.
    ///
    /// The default refuses with [`Error::TagsUnsupported`].
    fn invalidate_tags<'a>(&'a self, tags: &'a Tags) -> StoreFuture<'a, Result<()>> {
        let _ = tags;
        StoreFuture::ready(Err(Error::TagsUnsupported))
    }

    /// The store's counters, per tier. Called on every
    /// [`Cache::stats`](crate::Cache::stats) and metrics scrape, not on the
    /// hot path, so summing stripes here is fine; it must not block on I/O.
    /// Default: no tiers, nothing counted.
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }

    /// The store's in-process tier, which a cache reads directly instead
    /// of calling [`get`](Self::get) (see `store/local_tier.rs`). Only
    /// this crate's stores can have one; the default is none.
    #[doc(hidden)]
    fn local_tier(&self) -> Option<LocalTier<V>> {
        None
    }
}

/// A shared store is a store: several caches (or a cache and a two-tier
/// store) can hold one backend.
impl<V, S: Store<V> + ?Sized> Store<V> for std::sync::Arc<S> {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<Option<Stored<V>>>> {
        (**self).get(key)
    }

    fn get_entry<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<Option<Envelope<V>>>>
    where
        V: 'a,
    {
        (**self).get_entry(key)
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        entry: Envelope<V>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, Result<()>> {
        (**self).set(key, entry, ttl)
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<bool>> {
        (**self).delete(key)
    }

    fn clear(&self) -> StoreFuture<'_, Result<()>> {
        (**self).clear()
    }

    fn get_many<'a>(&'a self, keys: &'a [&'a str]) -> StoreFuture<'a, Result<Vec<Found<V>>>>
    where
        V: Send + 'a,
    {
        (**self).get_many(keys)
    }

    fn set_many<'a>(&'a self, writes: Vec<Write<'a, V>>) -> StoreFuture<'a, Result<()>>
    where
        V: Send + 'a,
    {
        (**self).set_many(writes)
    }

    fn delete_many<'a>(&'a self, keys: &'a [&'a str]) -> StoreFuture<'a, Result<usize>>
    where
        V: Send + 'a,
    {
        (**self).delete_many(keys)
    }

    fn remaining_ttl<'a>(
        &'a self,
        key: &'a str,
    ) -> StoreFuture<'a, Result<Option<Option<Duration>>>> {
        (**self).remaining_ttl(key)
    }

    fn tag_stamps<'a>(&'a self, tags: &'a Tags) -> StoreFuture<'a, Result<TagStamps>> {
        (**self).tag_stamps(tags)
    }

    fn invalidate_tags<'a>(&'a self, tags: &'a Tags) -> StoreFuture<'a, Result<()>> {
        (**self).invalidate_tags(tags)
    }

    fn stats(&self) -> StoreStats {
        (**self).stats()
    }

    fn local_tier(&self) -> Option<LocalTier<V>> {
        (**self).local_tier()
    }
}
