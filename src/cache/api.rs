//! The object-safe interface shared by [`Cache`] and
//! [`MockCache`](crate::MockCache), so code can take either.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{Cache, Stats};
use crate::tag::Tags;
use crate::{BoxError, Error, Result, Ttl};

/// A boxed, `Send` future: what [`AsyncCache`]'s methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A type-erased loader: what [`AsyncCache`]'s loading methods take.
/// [`AsyncCacheExt`] builds one from any closure.
pub type BoxLoader<T> = Box<dyn FnOnce() -> BoxFuture<'static, Result<T, BoxError>> + Send>;

/// A type-erased bulk loader: what [`AsyncCache::get_many_or_load_boxed`]
/// takes. Given keys, it answers what it found (`None`: known not to
/// exist; a key left out counts as not found). [`AsyncCacheExt`] builds one
/// from any closure.
pub type BulkLoader<V> = Arc<
    dyn Fn(Vec<String>) -> BoxFuture<'static, Result<HashMap<String, Option<V>>, BoxError>>
        + Send
        + Sync,
>;

/// The operations of a cache of `V`s, as an object-safe trait: implemented
/// by [`Cache`] and [`MockCache`](crate::MockCache), so code that uses a
/// cache can be handed the mock in tests.
///
/// Take it either way:
///
/// - **generically**, `fn new(cache: C) where C: AsyncCache<User>`, or
/// - **as a trait object**, `Arc<dyn AsyncCache<User>>`.
///
/// `get_or_load` is generic over its loader, which a trait object cannot
/// be; the trait therefore takes [boxed loaders](BoxLoader), and
/// [`AsyncCacheExt`] (implemented for every `AsyncCache`, trait objects
/// included) adds the generic `get_or_load` on top. The concrete types also
/// have inherent methods of the same names that skip the boxing.
///
/// ```
/// use std::sync::Arc;
/// use cachex::{AsyncCache, AsyncCacheExt, Cache, MockCache};
///
/// struct Profiles {
///     cache: Arc<dyn AsyncCache<String>>,
/// }
///
/// impl Profiles {
///     async fn name(&self, id: u64) -> cachex::Result<String> {
///         self.cache
///             .get_or_load(&format!("user:{id}"), move || async move {
///                 Ok::<_, std::io::Error>(format!("user {id}")) // the database
///             })
///             .await
///     }
/// }
///
/// /// The same, generically.
/// async fn warm<C: AsyncCache<String>>(cache: &C) -> cachex::Result<()> {
///     cache.set("motd", "hello".to_string(), cachex::Ttl::Default).await
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let live = Profiles { cache: Arc::new(Cache::builder().build()) };
/// assert_eq!(live.name(7).await?, "user 7");
///
/// let mock = MockCache::new();
/// let test = Profiles { cache: Arc::new(mock.clone()) };
/// assert_eq!(test.name(7).await?, "user 7");
/// assert_eq!(test.name(7).await?, "user 7");
/// assert_eq!((mock.misses(), mock.hits()), (1, 1));
///
/// warm(&mock).await?;
/// assert_eq!(mock.sets(), 1);
/// # Ok::<(), cachex::Error>(())
/// # }).unwrap();
/// ```
pub trait AsyncCache<V>: Send + Sync {
    /// The value under `key`, or `Ok(None)`; see [`Cache::get`].
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<V>>>;

    /// Stores `value` under `key` for `ttl`; see [`Cache::set`].
    fn set<'a>(&'a self, key: &'a str, value: V, ttl: Ttl) -> BoxFuture<'a, Result<()>>;

    /// Removes `key`'s entry, answering whether there was one; see
    /// [`Cache::delete`].
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// Removes every entry; see [`Cache::clear`].
    fn clear(&self) -> BoxFuture<'_, Result<()>>;

    /// [`Cache::get_or_load`] with a boxed loader; prefer
    /// [`AsyncCacheExt::get_or_load`], which boxes for you.
    fn get_or_load_boxed<'a>(
        &'a self,
        key: &'a str,
        loader: BoxLoader<V>,
    ) -> BoxFuture<'a, Result<V>>;

    /// [`Cache::get_or_load_optional`] with a boxed loader; prefer
    /// [`AsyncCacheExt::get_or_load_optional`].
    fn get_or_load_optional_boxed<'a>(
        &'a self,
        key: &'a str,
        loader: BoxLoader<Option<V>>,
    ) -> BoxFuture<'a, Result<Option<V>>>;

    /// The values under `keys`, in order; see [`Cache::get_many`]. The
    /// default calls [`get`](Self::get) for each key.
    fn get_many<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<V>>>>
    where
        V: Send + 'a,
    {
        Box::pin(async move {
            let mut values = Vec::with_capacity(keys.len());
            for key in keys {
                values.push(self.get(key).await?);
            }
            Ok(values)
        })
    }

    /// Stores every entry for `ttl`; see [`Cache::set_many`]. The default
    /// calls [`set`](Self::set) for each entry.
    fn set_many(&self, entries: Vec<(String, V)>, ttl: Ttl) -> BoxFuture<'_, Result<()>>
    where
        V: Send + 'static,
    {
        Box::pin(async move {
            for (key, value) in entries {
                self.set(&key, value, ttl).await?;
            }
            Ok(())
        })
    }

    /// Removes the entries under `keys`, answering how many there were;
    /// see [`Cache::delete_many`]. The default calls
    /// [`delete`](Self::delete) for each key.
    fn delete_many<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async move {
            let mut deleted = 0;
            for key in keys {
                deleted += usize::from(self.delete(key).await?);
            }
            Ok(deleted)
        })
    }

    /// [`Cache::get_many_or_load_optional`] with a type-erased loader;
    /// prefer [`AsyncCacheExt::get_many_or_load`] or
    /// [`AsyncCacheExt::get_many_or_load_optional`], which erase it for
    /// you.
    fn get_many_or_load_boxed<'a>(
        &'a self,
        keys: &'a [&'a str],
        loader: BulkLoader<V>,
    ) -> BoxFuture<'a, Result<Vec<Option<V>>>>;

    /// Stores `value` under `key` for `ttl`, with `tags`; see
    /// [`Tagged::set`](crate::Tagged::set). The default refuses with
    /// [`Error::TagsUnsupported`].
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
        let _ = (key, value, ttl, tags);
        Box::pin(std::future::ready(Err(Error::TagsUnsupported)))
    }

    /// [`Tagged::get_or_load`](crate::Tagged::get_or_load) with a boxed
    /// loader; prefer [`AsyncCacheExt::get_or_load_tagged`]. The default
    /// refuses with [`Error::TagsUnsupported`].
    fn get_or_load_tagged_boxed<'a>(
        &'a self,
        key: &'a str,
        tags: &'a Tags,
        loader: BoxLoader<V>,
    ) -> BoxFuture<'a, Result<V>> {
        let _ = (key, tags, loader);
        Box::pin(async { Err(Error::TagsUnsupported) })
    }

    /// Invalidates every tag of `tags`; see [`Cache::invalidate_tags`].
    /// The default refuses with [`Error::TagsUnsupported`].
    fn invalidate_tags<'a>(&'a self, tags: &'a Tags) -> BoxFuture<'a, Result<()>> {
        let _ = tags;
        Box::pin(std::future::ready(Err(Error::TagsUnsupported)))
    }

    /// A snapshot of the counters; see [`Cache::stats`].
    fn stats(&self) -> Stats;

    /// Closes the cache; see [`Cache::close`].
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// The generic loading methods of every [`AsyncCache`], trait objects
/// included (see there for an example).
pub trait AsyncCacheExt<V>: AsyncCache<V> {
    /// [`Cache::get_or_load`] through the object-safe interface: boxes the
    /// loader and its future.
    fn get_or_load<'a, F, Fut, E>(&'a self, key: &'a str, loader: F) -> BoxFuture<'a, Result<V>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.get_or_load_boxed(key, boxed(loader))
    }

    /// [`Cache::get_or_load_optional`] through the object-safe interface.
    fn get_or_load_optional<'a, F, Fut, E>(
        &'a self,
        key: &'a str,
        loader: F,
    ) -> BoxFuture<'a, Result<Option<V>>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.get_or_load_optional_boxed(key, boxed(loader))
    }

    /// [`Cache::get_many_or_load`] through the object-safe interface.
    fn get_many_or_load<'a, F, Fut, I, E>(
        &'a self,
        keys: &'a [&'a str],
        loader: F,
    ) -> BoxFuture<'a, Result<Vec<Option<V>>>>
    where
        F: Fn(Vec<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<I, E>> + Send + 'static,
        I: IntoIterator<Item = (String, V)>,
        E: Into<BoxError>,
        V: 'static,
    {
        self.get_many_or_load_boxed(keys, bulk(loader, |value| Some(value)))
    }

    /// [`Cache::get_many_or_load_optional`] through the object-safe
    /// interface.
    fn get_many_or_load_optional<'a, F, Fut, I, E>(
        &'a self,
        keys: &'a [&'a str],
        loader: F,
    ) -> BoxFuture<'a, Result<Vec<Option<V>>>>
    where
        F: Fn(Vec<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<I, E>> + Send + 'static,
        I: IntoIterator<Item = (String, Option<V>)>,
        E: Into<BoxError>,
        V: 'static,
    {
        self.get_many_or_load_boxed(keys, bulk(loader, |value| value))
    }

    /// [`Tagged::get_or_load`](crate::Tagged::get_or_load) through the
    /// object-safe interface.
    fn get_or_load_tagged<'a, F, Fut, E>(
        &'a self,
        key: &'a str,
        tags: &'a Tags,
        loader: F,
    ) -> BoxFuture<'a, Result<V>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.get_or_load_tagged_boxed(key, tags, boxed(loader))
    }

    /// [`Cache::invalidate_tag`] through the object-safe interface.
    fn invalidate_tag<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let tags = Tags::new([tag])?;
            self.invalidate_tags(&tags).await
        })
    }
}

/// Erases a bulk loader's type; `found` turns each item's value into the
/// loader's answer for its key.
pub(crate) fn bulk<V, T, F, Fut, I, E>(loader: F, found: fn(T) -> Option<V>) -> BulkLoader<V>
where
    F: Fn(Vec<String>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<I, E>> + Send + 'static,
    I: IntoIterator<Item = (String, T)>,
    E: Into<BoxError>,
    V: 'static,
    T: 'static,
{
    Arc::new(move |keys| -> BoxFuture<'static, _> {
        let load = loader(keys);
        Box::pin(async move {
            let items = load.await.map_err(Into::into)?;
            Ok(items
                .into_iter()
                .map(|(key, value)| (key, found(value)))
                .collect())
        })
    })
}

impl<V, C: AsyncCache<V> + ?Sized> AsyncCacheExt<V> for C {}

/// Erases a loader's type.
fn boxed<T, F, Fut, E>(loader: F) -> BoxLoader<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    E: Into<BoxError>,
{
    Box::new(move || -> BoxFuture<'static, Result<T, BoxError>> {
        Box::pin(async move { loader().await.map_err(Into::into) })
    })
}

impl<V> AsyncCache<V> for Cache<V>
where
    V: Clone + Send + Sync + 'static,
{
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<V>>> {
        Box::pin(Cache::get(self, key))
    }

    fn set<'a>(&'a self, key: &'a str, value: V, ttl: Ttl) -> BoxFuture<'a, Result<()>> {
        Box::pin(Cache::set(self, key, value, ttl))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(Cache::delete(self, key))
    }

    fn clear(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(Cache::clear(self))
    }

    fn get_or_load_boxed<'a>(
        &'a self,
        key: &'a str,
        loader: BoxLoader<V>,
    ) -> BoxFuture<'a, Result<V>> {
        Box::pin(Cache::get_or_load(self, key, loader))
    }

    fn get_or_load_optional_boxed<'a>(
        &'a self,
        key: &'a str,
        loader: BoxLoader<Option<V>>,
    ) -> BoxFuture<'a, Result<Option<V>>> {
        Box::pin(Cache::get_or_load_optional(self, key, loader))
    }

    fn get_many<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<V>>>>
    where
        V: Send + 'a,
    {
        Box::pin(Cache::get_many(self, keys))
    }

    fn set_many(&self, entries: Vec<(String, V)>, ttl: Ttl) -> BoxFuture<'_, Result<()>>
    where
        V: Send + 'static,
    {
        Box::pin(Cache::set_many(self, entries, ttl))
    }

    fn delete_many<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<usize>> {
        Box::pin(Cache::delete_many(self, keys))
    }

    fn get_many_or_load_boxed<'a>(
        &'a self,
        keys: &'a [&'a str],
        loader: BulkLoader<V>,
    ) -> BoxFuture<'a, Result<Vec<Option<V>>>> {
        Box::pin(Cache::load_many(self, keys, loader, None))
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
        Box::pin(async move { self.with_tags(tags.clone()).set(key, value, ttl).await })
    }

    fn get_or_load_tagged_boxed<'a>(
        &'a self,
        key: &'a str,
        tags: &'a Tags,
        loader: BoxLoader<V>,
    ) -> BoxFuture<'a, Result<V>> {
        let tagged = self.with_tags(tags.clone());
        Box::pin(tagged.get_or_load(key, loader))
    }

    fn invalidate_tags<'a>(&'a self, tags: &'a Tags) -> BoxFuture<'a, Result<()>> {
        Box::pin(Cache::invalidate_tags(self, tags.iter()))
    }

    fn stats(&self) -> Stats {
        Cache::stats(self)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(Cache::close(self))
    }
}

/// A shared cache is a cache: `Arc<dyn AsyncCache<V>>` (or `Arc<Cache<V>>`)
/// can be passed where a generic `C: AsyncCache<V>` is expected.
impl<V, C: AsyncCache<V> + ?Sized> AsyncCache<V> for std::sync::Arc<C> {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<V>>> {
        (**self).get(key)
    }

    fn set<'a>(&'a self, key: &'a str, value: V, ttl: Ttl) -> BoxFuture<'a, Result<()>> {
        (**self).set(key, value, ttl)
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        (**self).delete(key)
    }

    fn clear(&self) -> BoxFuture<'_, Result<()>> {
        (**self).clear()
    }

    fn get_or_load_boxed<'a>(
        &'a self,
        key: &'a str,
        loader: BoxLoader<V>,
    ) -> BoxFuture<'a, Result<V>> {
        (**self).get_or_load_boxed(key, loader)
    }

    fn get_or_load_optional_boxed<'a>(
        &'a self,
        key: &'a str,
        loader: BoxLoader<Option<V>>,
    ) -> BoxFuture<'a, Result<Option<V>>> {
        (**self).get_or_load_optional_boxed(key, loader)
    }

    fn get_many<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<V>>>>
    where
        V: Send + 'a,
    {
        (**self).get_many(keys)
    }

    fn set_many(&self, entries: Vec<(String, V)>, ttl: Ttl) -> BoxFuture<'_, Result<()>>
    where
        V: Send + 'static,
    {
        (**self).set_many(entries, ttl)
    }

    fn delete_many<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<usize>> {
        (**self).delete_many(keys)
    }

    fn get_many_or_load_boxed<'a>(
        &'a self,
        keys: &'a [&'a str],
        loader: BulkLoader<V>,
    ) -> BoxFuture<'a, Result<Vec<Option<V>>>> {
        (**self).get_many_or_load_boxed(keys, loader)
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
        (**self).set_tagged(key, value, ttl, tags)
    }

    fn get_or_load_tagged_boxed<'a>(
        &'a self,
        key: &'a str,
        tags: &'a Tags,
        loader: BoxLoader<V>,
    ) -> BoxFuture<'a, Result<V>> {
        (**self).get_or_load_tagged_boxed(key, tags, loader)
    }

    fn invalidate_tags<'a>(&'a self, tags: &'a Tags) -> BoxFuture<'a, Result<()>> {
        (**self).invalidate_tags(tags)
    }

    fn stats(&self) -> Stats {
        (**self).stats()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        (**self).close()
    }
}
