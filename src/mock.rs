//! A stand-in for [`Cache`](crate::Cache) in tests.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::cache::{bulk, check_key, Keys, Lookup};
use crate::loading::{catch_unwind, Answer};
use crate::tag::Tags;
use crate::{AsyncCache, BoxError, BoxFuture, BoxLoader, BulkLoader, Error, Result, Stats, Ttl};

/// A hook called with the key of a lookup.
type Hook = Arc<dyn Fn(&str) + Send + Sync>;

/// An in-memory [`AsyncCache`] for tests: a plain map with counters and
/// hooks, so a test can hand it to the code under test and then check what
/// that code asked of its cache.
///
/// **What it models**, as [`Cache`](crate::Cache) does: `Ok(None)` for a
/// miss; the key rules ([`Error::EmptyKey`], [`Error::KeyTooLong`]);
/// [`Error::Closed`] after [`close`](Self::close); `get_or_load` calling its
/// loader on a miss and caching the value; a loader's error or panic
/// reported as [`Error::Loader`] or [`Error::LoaderPanicked`] and not cached;
/// `get_or_load_optional` caching "not found", which `get` then reports as
/// `Ok(None)`; tags ([`set_tagged`](Self::set_tagged),
/// [`invalidate_tag`](Self::invalidate_tag)), with
/// [`tags_of`](Self::tags_of) to check what was tagged.
///
/// It counts lookups by the same rule as the cache: a cached "not found"
/// is a negative hit for `get` and `get_or_load_optional`, and a miss for
/// `get_or_load`, which needs a value and loads one.
///
/// **What it does not model**: time (TTLs passed to `set` are ignored and
/// nothing expires, "not found" included, until deleted or cleared);
/// capacity and eviction (it keeps everything); singleflight (concurrent
/// misses on one key each run their loader); background refreshes and
/// jitter; store failures. Fail-safe and the load timeouts
/// ([`CacheBuilder::fail_safe`](crate::CacheBuilder::fail_safe),
/// [`soft_timeout`](crate::CacheBuilder::soft_timeout),
/// [`hard_timeout`](crate::CacheBuilder::hard_timeout)) are not modelled
/// either: with no time nothing goes stale, so a failing loader's error
/// always reaches the caller, and a slow loader is awaited to the end. Test
/// those against a real [`Cache`](crate::Cache) with tokio's paused clock.
///
/// Thread-safe and cheap to clone: clones share one map, its counters and
/// its hooks.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use cachex::{MockCache, Ttl};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let misses = Arc::new(AtomicUsize::new(0));
/// let seen = misses.clone();
/// let mock = MockCache::new().on_miss(move |key| {
///     assert!(key.starts_with("user:"));
///     seen.fetch_add(1, Ordering::Relaxed);
/// });
///
/// mock.set("user:1", "alice".to_string(), Ttl::Default).await?;
/// assert_eq!(mock.get("user:1").await?, Some("alice".to_string()));
/// assert_eq!(mock.get("user:2").await?, None);
/// assert_eq!((mock.hits(), mock.misses(), mock.sets()), (1, 1, 1));
/// assert_eq!(misses.load(Ordering::Relaxed), 1);
/// # Ok::<(), cachex::Error>(())
/// # }).unwrap();
/// ```
pub struct MockCache<V> {
    inner: Arc<Inner<V>>,
}

struct Inner<V> {
    /// `None` values are cached "not found" answers.
    entries: Mutex<HashMap<String, Option<V>>>,
    /// The tags of the entries written with some; locked after `entries`.
    tags: Mutex<HashMap<String, Tags>>,
    counts: Counts,
    closed: AtomicBool,
    on_hit: RwLock<Option<Hook>>,
    on_miss: RwLock<Option<Hook>>,
}

#[derive(Default)]
struct Counts {
    hits: AtomicU64,
    negative_hits: AtomicU64,
    misses: AtomicU64,
    sets: AtomicU64,
    deletes: AtomicU64,
    loads: AtomicU64,
    load_errors: AtomicU64,
}

impl<V> MockCache<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// An empty mock.
    pub fn new() -> Self {
        MockCache {
            inner: Arc::new(Inner {
                entries: Mutex::default(),
                tags: Mutex::default(),
                counts: Counts::default(),
                closed: AtomicBool::new(false),
                on_hit: RwLock::new(None),
                on_miss: RwLock::new(None),
            }),
        }
    }

    /// Calls `hook` with the key of every lookup (`get`, `get_or_load`)
    /// answered from the mock, "not found" answers included (except for
    /// `get_or_load`, which needs a value: a miss for it). Replaces any
    /// earlier hit hook, for every clone. Hooks run outside the mock's lock,
    /// so they may use the mock.
    #[must_use]
    pub fn on_hit(self, hook: impl Fn(&str) + Send + Sync + 'static) -> Self {
        *self.inner.on_hit.write() = Some(Arc::new(hook));
        self
    }

    /// Calls `hook` with the key of every lookup that found nothing usable.
    /// Replaces any earlier miss hook, for every clone.
    #[must_use]
    pub fn on_miss(self, hook: impl Fn(&str) + Send + Sync + 'static) -> Self {
        *self.inner.on_miss.write() = Some(Arc::new(hook));
        self
    }

    /// Lookups answered from the mock: values and cached "not found" alike.
    pub fn hits(&self) -> u64 {
        count(&self.inner.counts.hits) + count(&self.inner.counts.negative_hits)
    }

    /// Lookups that found nothing usable.
    pub fn misses(&self) -> u64 {
        count(&self.inner.counts.misses)
    }

    /// Calls to [`set`](Self::set) (values stored by loads not included).
    pub fn sets(&self) -> u64 {
        count(&self.inner.counts.sets)
    }

    /// Calls to [`delete`](Self::delete), whether or not the key was there.
    pub fn deletes(&self) -> u64 {
        count(&self.inner.counts.deletes)
    }

    /// Loader calls, whatever their outcome, as
    /// [`Stats::loads`](crate::Stats::loads).
    pub fn loads(&self) -> u64 {
        count(&self.inner.counts.loads)
    }

    /// Entries held, "not found" answers included.
    pub fn len(&self) -> usize {
        self.inner.entries.lock().len()
    }

    /// Whether the mock holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` holds an entry (a value or "not found"). Not counted
    /// as a lookup.
    pub fn contains_key(&self, key: &str) -> bool {
        self.inner.entries.lock().contains_key(key)
    }

    /// See [`Cache::get`](crate::Cache::get).
    pub async fn get(&self, key: &str) -> Result<Option<V>> {
        self.check(key)?;
        Ok(self.lookup(key, true).flatten())
    }

    /// See [`Cache::set`](crate::Cache::set); `ttl` is ignored.
    pub async fn set(&self, key: &str, value: V, _ttl: Ttl) -> Result<()> {
        self.check(key)?;
        self.inner.counts.sets.fetch_add(1, Ordering::Relaxed);
        self.store(key, Some(value), None);
        Ok(())
    }

    /// See [`Tagged::set`](crate::Tagged::set); `ttl` is ignored.
    pub async fn set_tagged(&self, key: &str, value: V, _ttl: Ttl, tags: &Tags) -> Result<()> {
        self.check(key)?;
        self.inner.counts.sets.fetch_add(1, Ordering::Relaxed);
        self.store(key, Some(value), Some(tags));
        Ok(())
    }

    /// See [`Tagged::get_or_load`](crate::Tagged::get_or_load): a loaded
    /// value is kept with `tags`.
    pub async fn get_or_load_tagged<F, Fut, E>(
        &self,
        key: &str,
        tags: &Tags,
        loader: F,
    ) -> Result<V>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.load(key, loader, Some(tags)).await
    }

    /// See [`Cache::invalidate_tag`](crate::Cache::invalidate_tag).
    pub async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        self.invalidate_tags(&Tags::new([tag])?).await
    }

    /// See [`Cache::invalidate_tags`](crate::Cache::invalidate_tags): every
    /// entry written with one of `tags` is removed.
    pub async fn invalidate_tags(&self, tags: &Tags) -> Result<()> {
        self.ensure_open()?;
        let mut entries = self.inner.entries.lock();
        let mut tagged = self.inner.tags.lock();
        tagged.retain(|key, theirs| {
            let hit = theirs.iter().any(|tag| tags.iter().any(|t| t == tag));
            if hit {
                entries.remove(key);
            }
            !hit
        });
        Ok(())
    }

    /// The tags `key`'s entry was written with, if it has some: for tests
    /// checking that the code under test tags what it writes.
    pub fn tags_of(&self, key: &str) -> Option<Tags> {
        self.inner.tags.lock().get(key).cloned()
    }

    /// Keeps `entry` under `key`, with `tags` or none.
    fn store(&self, key: &str, entry: Option<V>, tags: Option<&Tags>) {
        let mut entries = self.inner.entries.lock();
        entries.insert(key.to_owned(), entry);
        let mut tagged = self.inner.tags.lock();
        match tags {
            Some(tags) if !tags.is_empty() => {
                tagged.insert(key.to_owned(), tags.clone());
            }
            _ => {
                tagged.remove(key);
            }
        }
    }

    /// See [`Cache::delete`](crate::Cache::delete).
    pub async fn delete(&self, key: &str) -> Result<bool> {
        self.check(key)?;
        self.inner.counts.deletes.fetch_add(1, Ordering::Relaxed);
        let removed = self.inner.entries.lock().remove(key).is_some();
        self.inner.tags.lock().remove(key);
        Ok(removed)
    }

    /// See [`Cache::clear`](crate::Cache::clear).
    pub async fn clear(&self) -> Result<()> {
        self.ensure_open()?;
        let mut entries = self.inner.entries.lock();
        entries.clear();
        self.inner.tags.lock().clear();
        Ok(())
    }

    /// See [`Cache::get_or_load`](crate::Cache::get_or_load). Without
    /// singleflight: concurrent misses each call their loader.
    pub async fn get_or_load<F, Fut, E>(&self, key: &str, loader: F) -> Result<V>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.load(key, loader, None).await
    }

    /// See [`Cache::get_or_load_optional`](crate::Cache::get_or_load_optional).
    /// A "not found" is kept until deleted or cleared.
    pub async fn get_or_load_optional<F, Fut, E>(&self, key: &str, loader: F) -> Result<Option<V>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.load(key, loader, None).await
    }

    /// See [`Cache::get_many`](crate::Cache::get_many): each key counted
    /// as a lookup, duplicates once.
    pub async fn get_many<K: AsRef<str>>(&self, keys: &[K]) -> Result<Vec<Option<V>>> {
        self.ensure_open()?;
        let keys = Keys::new(keys)?;
        let values = keys
            .unique
            .iter()
            .map(|key| self.lookup(key, true).flatten())
            .collect();
        Ok(keys.spread(values))
    }

    /// See [`Cache::set_many`](crate::Cache::set_many); `ttl` is ignored.
    /// Counted as one set per entry.
    pub async fn set_many<K, I>(&self, entries: I, _ttl: Ttl) -> Result<()>
    where
        K: AsRef<str>,
        I: IntoIterator<Item = (K, V)>,
    {
        self.ensure_open()?;
        let entries: Vec<(K, V)> = entries.into_iter().collect();
        let keys: Vec<&str> = entries.iter().map(|(key, _)| key.as_ref()).collect();
        Keys::new(&keys)?;
        for (key, value) in &entries {
            self.inner.counts.sets.fetch_add(1, Ordering::Relaxed);
            self.store(key.as_ref(), Some(value.clone()), None);
        }
        Ok(())
    }

    /// See [`Cache::delete_many`](crate::Cache::delete_many). Counted as
    /// one delete per distinct key.
    pub async fn delete_many<K: AsRef<str>>(&self, keys: &[K]) -> Result<usize> {
        self.ensure_open()?;
        let keys = Keys::new(keys)?;
        let mut map = self.inner.entries.lock();
        let mut tagged = self.inner.tags.lock();
        let mut deleted = 0;
        for key in &keys.unique {
            self.inner.counts.deletes.fetch_add(1, Ordering::Relaxed);
            deleted += usize::from(map.remove(*key).is_some());
            tagged.remove(*key);
        }
        Ok(deleted)
    }

    /// See [`Cache::get_many_or_load`](crate::Cache::get_many_or_load): one
    /// loader call with the keys not held, whose answers are kept (keys it
    /// does not return as "not found"). Without singleflight.
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
        self.load_many(keys, bulk(loader, |value| Some(value)))
            .await
    }

    /// See [`Cache::get_many_or_load_optional`](crate::Cache::get_many_or_load_optional).
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
        self.load_many(keys, bulk(loader, |value| value)).await
    }

    async fn load_many<K: AsRef<str>>(
        &self,
        keys: &[K],
        loader: BulkLoader<V>,
    ) -> Result<Vec<Option<V>>> {
        self.ensure_open()?;
        let keys = Keys::new(keys)?;
        let mut answers: Vec<Option<Option<V>>> = keys
            .unique
            .iter()
            .map(|key| self.lookup(key, true))
            .collect();
        let missing: Vec<String> = keys
            .unique
            .iter()
            .zip(&answers)
            .filter(|(_, answer)| answer.is_none())
            .map(|(key, _)| (*key).to_owned())
            .collect();
        if !missing.is_empty() {
            let counts = &self.inner.counts;
            let result = catch_unwind(loader(missing.clone())).await;
            counts.loads.fetch_add(1, Ordering::Relaxed);
            let mut found = match result {
                Ok(Ok(found)) => found,
                Ok(Err(source)) => {
                    counts.load_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(Error::loader(missing[0].as_str(), source));
                }
                Err(message) => {
                    counts.load_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(Error::panicked(Arc::from(missing[0].as_str()), message));
                }
            };
            for (key, answer) in keys.unique.iter().zip(answers.iter_mut()) {
                if answer.is_none() {
                    let value = found.remove(*key).flatten();
                    self.store(key, value.clone(), None);
                    *answer = Some(value);
                }
            }
        }
        Ok(keys.spread(answers.into_iter().map(Option::flatten).collect()))
    }

    /// The counters, in the shape of [`Cache::stats`](crate::Cache::stats);
    /// the counters the mock does not model stay 0.
    pub fn stats(&self) -> Stats {
        let counts = &self.inner.counts;
        Stats {
            hits: count(&counts.hits),
            negative_hits: count(&counts.negative_hits),
            misses: count(&counts.misses),
            loads: count(&counts.loads),
            load_errors: count(&counts.load_errors),
            sets: count(&counts.sets),
            deletes: count(&counts.deletes),
            ..Stats::default()
        }
    }

    /// Closes the mock: later calls fail with [`Error::Closed`].
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }

    async fn load<A, F, Fut, E>(&self, key: &str, loader: F, tags: Option<&Tags>) -> Result<A>
    where
        A: Answer<V>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<A, E>>,
        E: Into<BoxError>,
    {
        self.check(key)?;
        if let Some(answer) = self
            .lookup(key, A::ACCEPTS_NOT_FOUND)
            .and_then(A::from_shared)
        {
            return Ok(answer);
        }
        let counts = &self.inner.counts;
        let result = catch_unwind(async move { loader().await }).await;
        counts.loads.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(Ok(answer)) => {
                self.store(key, answer.to_shared(), tags);
                Ok(answer)
            }
            Ok(Err(source)) => {
                counts.load_errors.fetch_add(1, Ordering::Relaxed);
                Err(Error::loader(key, source))
            }
            Err(message) => {
                counts.load_errors.fetch_add(1, Ordering::Relaxed);
                Err(Error::panicked(Arc::from(key), message))
            }
        }
    }

    /// The entry under `key` (`Some(None)`: a cached "not found"), counted
    /// and reported to the hooks as the cache counts it (see [`Lookup`]),
    /// for a caller that does or does not take "not found" for an answer.
    fn lookup(&self, key: &str, accepts_not_found: bool) -> Option<Option<V>> {
        let entry = self.inner.entries.lock().get(key).cloned();
        let counts = &self.inner.counts;
        let found = entry.as_ref().map(Option::as_ref);
        let (counter, hook) = match Lookup::classify(found, accepts_not_found) {
            Lookup::Hit => (&counts.hits, &self.inner.on_hit),
            Lookup::NegativeHit => (&counts.negative_hits, &self.inner.on_hit),
            Lookup::Miss => (&counts.misses, &self.inner.on_miss),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        // Cloned out so the hook runs with no lock held.
        let hook = hook.read().clone();
        if let Some(hook) = hook {
            hook(key);
        }
        entry
    }

    fn ensure_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn check(&self, key: &str) -> Result<()> {
        self.ensure_open()?;
        check_key(key)
    }
}

fn count(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl<V> Default for MockCache<V>
where
    V: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<V> Clone for MockCache<V> {
    fn clone(&self) -> Self {
        MockCache {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<V> fmt::Debug for MockCache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockCache")
            .field("len", &self.inner.entries.lock().len())
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<V> AsyncCache<V> for MockCache<V>
where
    V: Clone + Send + Sync + 'static,
{
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<V>>> {
        Box::pin(MockCache::get(self, key))
    }

    fn set<'a>(&'a self, key: &'a str, value: V, ttl: Ttl) -> BoxFuture<'a, Result<()>> {
        Box::pin(MockCache::set(self, key, value, ttl))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(MockCache::delete(self, key))
    }

    fn clear(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(MockCache::clear(self))
    }

    fn get_or_load_boxed<'a>(
        &'a self,
        key: &'a str,
        loader: BoxLoader<V>,
    ) -> BoxFuture<'a, Result<V>> {
        Box::pin(MockCache::get_or_load(self, key, loader))
    }

    fn get_or_load_optional_boxed<'a>(
        &'a self,
        key: &'a str,
        loader: BoxLoader<Option<V>>,
    ) -> BoxFuture<'a, Result<Option<V>>> {
        Box::pin(MockCache::get_or_load_optional(self, key, loader))
    }

    fn get_many<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<V>>>>
    where
        V: Send + 'a,
    {
        Box::pin(MockCache::get_many(self, keys))
    }

    fn set_many(&self, entries: Vec<(String, V)>, ttl: Ttl) -> BoxFuture<'_, Result<()>>
    where
        V: Send + 'static,
    {
        Box::pin(MockCache::set_many(self, entries, ttl))
    }

    fn delete_many<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<usize>> {
        Box::pin(MockCache::delete_many(self, keys))
    }

    fn get_many_or_load_boxed<'a>(
        &'a self,
        keys: &'a [&'a str],
        loader: BulkLoader<V>,
    ) -> BoxFuture<'a, Result<Vec<Option<V>>>> {
        Box::pin(MockCache::load_many(self, keys, loader))
    }

    fn set_tagged<'a>(
        &'a self,
        key: &'a str,
        value: V,
        ttl: Ttl,
        tags: &'a Tags,
    ) -> BoxFuture<'a, Result<()>>
    where
        V: 'a,
    {
        Box::pin(MockCache::set_tagged(self, key, value, ttl, tags))
    }

    fn get_or_load_tagged_boxed<'a>(
        &'a self,
        key: &'a str,
        tags: &'a Tags,
        loader: BoxLoader<V>,
    ) -> BoxFuture<'a, Result<V>> {
        Box::pin(MockCache::get_or_load_tagged(self, key, tags, loader))
    }

    fn invalidate_tags<'a>(&'a self, tags: &'a Tags) -> BoxFuture<'a, Result<()>> {
        Box::pin(MockCache::invalidate_tags(self, tags))
    }

    fn stats(&self) -> Stats {
        MockCache::stats(self)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(MockCache::close(self))
    }
}
