//! The store's connection lent to a distributed lock
//! ([`DistributedLock`](crate::lock::DistributedLock)): the same
//! multiplexed connection the store's own commands use, so a lock adds no
//! connection but its subscriber.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::PubSub;
use redis::{Cmd, RedisResult, Value};

use super::clear::escape_glob;
use super::RedisStore;
use crate::lock::Backend;

impl<V, C: Send + Sync + 'static> RedisStore<V, C> {
    /// This store's connection and settings, as a lock uses them.
    pub(crate) fn lock_backend(&self) -> Arc<dyn Backend> {
        Arc::new(RedisStore::<(), C> {
            inner: Arc::clone(&self.inner),
            _values: PhantomData,
        })
    }
}

impl<C: Send + Sync + 'static> Backend for RedisStore<(), C> {
    fn prefix(&self) -> &str {
        self.inner.key_prefix.as_deref().unwrap_or("")
    }

    fn pattern(&self, start: &str) -> String {
        format!("{}*", escape_glob(start))
    }

    fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    fn query<'a>(&'a self, cmd: &'a Cmd) -> BoxFuture<'a, RedisResult<Value>> {
        Box::pin(self.inner.connection.query(cmd))
    }

    fn subscriber(&self, attempt: usize) -> BoxFuture<'_, RedisResult<PubSub>> {
        Box::pin(RedisStore::subscriber(self, attempt))
    }
}
