//! The object-safe interface shared by [`Cache`] and
//! [`MockCache`](crate::MockCache), so code can take either.

use std::future::Future;
use std::pin::Pin;

use super::{Cache, Stats};
use crate::{BoxError, Result, Ttl};

/// A boxed, `Send` future: what [`AsyncCache`]'s methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A type-erased loader: what [`AsyncCache`]'s loading methods take.
/// [`AsyncCacheExt`] builds one from any closure.
pub type BoxLoader<T> = Box<dyn FnOnce() -> BoxFuture<'static, Result<T, BoxError>> + Send>;

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

    fn stats(&self) -> Stats {
        (**self).stats()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        (**self).close()
    }
}
