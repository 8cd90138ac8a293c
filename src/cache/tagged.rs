//! Writing with tags ([`Tagged`]), and invalidating tags.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;

use super::stats::Counter;
use super::{bulk, Cache, Core};
use crate::observe::spans::{traced, Op, OpSpan};
use crate::tag::{TagStamps, Tags};
use crate::{BoxError, Result, Ttl};

/// A cache seen through a list of tags: what it writes carries them, so
/// that [`Cache::invalidate_tag`] of any of them drops it, in every process
/// sharing the store. Made by [`Cache::tagged`]; reads need no tags.
///
/// A write first reads the tags' current versions (from this process's
/// memory for a memory or hybrid store that knows them, else one Redis
/// round trip), then writes the entry with them; a load reads them before
/// its loader runs. See [`tag`](crate::tag) for the semantics.
///
/// ```
/// use cachex::{Cache, Ttl};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let cache: Cache<String> = Cache::builder().build();
/// let orders = cache.tagged(["customer:7"])?;
/// let order = orders
///     .get_or_load("order:1", || async { Ok::<_, std::io::Error>("3 apples".to_string()) })
///     .await?;
/// assert_eq!(order, "3 apples");
/// assert_eq!(cache.get("order:1").await?.as_deref(), Some("3 apples"));
///
/// cache.invalidate_tag("customer:7").await?;
/// assert_eq!(cache.get("order:1").await?, None);
/// # Ok::<(), cachex::Error>(())
/// # }).unwrap();
/// ```
pub struct Tagged<'a, V> {
    cache: &'a Cache<V>,
    tags: Tags,
}

impl<V> Cache<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// This cache, writing with `tags` (validated here: see
    /// [`Tags::new`]; an empty list writes untagged entries).
    pub fn tagged<I, S>(&self, tags: I) -> Result<Tagged<'_, V>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ok(self.with_tags(Tags::new(tags)?))
    }

    /// [`tagged`](Self::tagged) with a list validated beforehand.
    pub fn with_tags(&self, tags: Tags) -> Tagged<'_, V> {
        Tagged { cache: self, tags }
    }

    /// Invalidates `tag`: no entry written with it before this call is
    /// answered again, by any cache sharing the store. See
    /// [`invalidate_tags`](Self::invalidate_tags).
    pub async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        self.invalidate_tags([tag]).await
    }

    /// Invalidates every tag of `tags`: once this returns, no entry written
    /// with one of them before the call is answered, by this cache or by
    /// any other sharing its store (on a hybrid store, other processes' L1
    /// drop theirs when the invalidation message reaches them, as for
    /// writes). One store operation per tag, however many entries carry it;
    /// the entries themselves are left to expire or be evicted.
    ///
    /// A load of a key carrying one of the tags that is under way here
    /// finishes for the callers already waiting for it, but is not joined
    /// by later callers, and its result stays invalid.
    ///
    /// Tags are validated as by [`Tags::new`], except that up to
    /// [`MAX_BATCH`](crate::MAX_BATCH) of them may be given.
    pub async fn invalidate_tags<I, S>(&self, tags: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let tags = Tags::for_invalidation(tags)?;
        let span = OpSpan::new(&self.core.observer, Op::InvalidateTags, None);
        span.keys(tags.len());
        let result = traced!(span, self.core.invalidate_tags(&tags));
        span.finish(&result);
        result
    }
}

impl<'a, V> Tagged<'a, V>
where
    V: Clone + Send + Sync + 'static,
{
    /// The tags this view writes with.
    pub fn tags(&self) -> &Tags {
        &self.tags
    }

    /// [`Cache::set`], writing the entry with this view's tags.
    pub async fn set(&self, key: &str, value: V, ttl: Ttl) -> Result<()> {
        let core = &self.cache.core;
        let span = OpSpan::new(&core.observer, Op::Set, Some(key));
        let tags = Some(&self.tags);
        let result = traced!(span, core.set(key, value, ttl, &span, tags));
        span.finish(&result);
        result
    }

    /// [`Cache::set_many`], writing every entry with this view's tags
    /// (read once for the batch).
    pub async fn set_many<K, I>(&self, entries: I, ttl: Ttl) -> Result<()>
    where
        K: AsRef<str>,
        I: IntoIterator<Item = (K, V)>,
    {
        let core = &self.cache.core;
        let entries: Vec<(K, V)> = entries.into_iter().collect();
        let span = OpSpan::new(&core.observer, Op::SetMany, None);
        span.keys(entries.len());
        let result = traced!(span, core.set_many(entries, ttl, Some(&self.tags)));
        span.finish(&result);
        result
    }

    /// [`Cache::get_or_load`]: a loaded value is stored with this view's
    /// tags, whose versions are read before the loader runs. A cached entry
    /// answers whatever its tags (reads need none); so does a load of the
    /// key already under way, with the tags it was started with.
    pub fn get_or_load<F, Fut, E>(
        &self,
        key: &'a str,
        loader: F,
    ) -> impl Future<Output = Result<V>> + Send + 'a
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let (cache, tags) = (self.cache, self.tags.clone());
        let loader = move || async move { loader().await.map_err(Into::into) };
        async move {
            let span = OpSpan::new(&cache.core.observer, Op::GetOrLoad, Some(key));
            cache.load_in_span(key, loader, span, Some(tags)).await
        }
    }

    /// [`Cache::get_many_or_load`]: the values the bulk loader returns are
    /// stored with this view's tags (read once for the call, before the
    /// loader runs), the keys it leaves out as "not found" with them too.
    pub async fn get_many_or_load<K, F, Fut, I, E>(
        &self,
        keys: &[K],
        loader: F,
    ) -> Result<Vec<Option<V>>>
    where
        K: AsRef<str>,
        F: Fn(Vec<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<I, E>> + Send + 'static,
        I: IntoIterator<Item = (String, V)>,
        E: Into<BoxError>,
    {
        let loader = bulk(loader, |value| Some(value));
        self.cache.load_many(keys, loader, Some(&self.tags)).await
    }

    /// [`Cache::get_many_or_load_optional`], with this view's tags as for
    /// [`get_many_or_load`](Self::get_many_or_load).
    pub async fn get_many_or_load_optional<K, F, Fut, I, E>(
        &self,
        keys: &[K],
        loader: F,
    ) -> Result<Vec<Option<V>>>
    where
        K: AsRef<str>,
        F: Fn(Vec<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<I, E>> + Send + 'static,
        I: IntoIterator<Item = (String, Option<V>)>,
        E: Into<BoxError>,
    {
        let loader = bulk(loader, |value| value);
        self.cache.load_many(keys, loader, Some(&self.tags)).await
    }

    /// [`Cache::get_or_load_optional`], with this view's tags as for
    /// [`get_or_load`](Self::get_or_load) (a cached "not found" carries
    /// them too).
    pub fn get_or_load_optional<F, Fut, E>(
        &self,
        key: &'a str,
        loader: F,
    ) -> impl Future<Output = Result<Option<V>>> + Send + 'a
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let (cache, tags) = (self.cache, self.tags.clone());
        let loader = move || async move { loader().await.map_err(Into::into) };
        async move {
            let span = OpSpan::new(&cache.core.observer, Op::GetOrLoad, Some(key));
            cache.load_in_span(key, loader, span, Some(tags)).await
        }
    }
}

impl<V> Clone for Tagged<'_, V> {
    fn clone(&self) -> Self {
        Tagged {
            cache: self.cache,
            tags: self.tags.clone(),
        }
    }
}

impl<V> std::fmt::Debug for Tagged<'_, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tagged")
            .field("cache", &self.cache.core.observer.name)
            .field("tags", &self.tags)
            .finish()
    }
}

impl<V> Core<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// The current versions of `tags`, for a write; an error is counted.
    pub(super) async fn tag_stamps(&self, tags: &Tags) -> Result<TagStamps> {
        let stamps = self.store.tag_stamps(tags).await;
        let stamps = stamps.inspect_err(|_| self.counters.incr(Counter::StoreErrors))?;
        self.counters.incr(Counter::TaggedWrites);
        Ok(stamps)
    }

    async fn invalidate_tags(&self, tags: &Tags) -> Result<()> {
        self.ensure_open()?;
        if tags.is_empty() {
            return Ok(());
        }
        let invalidated = self.store.invalidate_tags(tags).await;
        invalidated.inspect_err(|_| self.counters.incr(Counter::StoreErrors))?;
        self.counters
            .add(Counter::TagInvalidations, tags.len() as u64);
        // Loads of those tags under way read the old versions: their
        // results are invalid already, but later callers must not join them.
        for key in self.tag_flights.keys_of(tags) {
            self.flights.forget(&key);
        }
        Ok(())
    }
}

/// The keys of the tagged loads under way in this cache, by tag, so that
/// invalidating a tag can keep later callers from joining them.
#[derive(Default)]
pub(super) struct TagFlights {
    loads: Mutex<HashMap<u64, (Tags, Arc<str>)>>,
    next: std::sync::atomic::AtomicU64,
}

/// A tagged load's place in [`TagFlights`], left when dropped.
pub(super) struct TagFlight<'a> {
    flights: &'a TagFlights,
    id: u64,
}

impl TagFlights {
    /// Records a load of `key` with `tags` until the guard is dropped.
    pub(super) fn enter(&self, tags: &Tags, key: &Arc<str>) -> TagFlight<'_> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.loads
            .lock()
            .insert(id, (tags.clone(), Arc::clone(key)));
        TagFlight { flights: self, id }
    }

    /// The keys of the loads under way carrying one of `tags`.
    fn keys_of(&self, tags: &Tags) -> Vec<Arc<str>> {
        self.loads
            .lock()
            .values()
            .filter(|(theirs, _)| theirs.iter().any(|tag| tags.iter().any(|t| t == tag)))
            .map(|(_, key)| Arc::clone(key))
            .collect()
    }
}

impl Drop for TagFlight<'_> {
    fn drop(&mut self) {
        self.flights.loads.lock().remove(&self.id);
    }
}
