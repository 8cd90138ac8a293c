//! Helpers shared by the async-layer tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use cachex::store::{Envelope, Store, StoreFuture, Stored};
use cachex::{Error, Result, StoreOp};

/// What the loaders built here return.
pub type Load<V> = Pin<Box<dyn Future<Output = std::result::Result<V, Infallible>> + Send>>;

/// Counts loader calls, and builds loaders that count themselves.
#[derive(Clone, Default)]
pub struct Calls(Arc<AtomicUsize>);

impl Calls {
    pub fn get(&self) -> usize {
        self.0.load(SeqCst)
    }

    /// A loader that counts its call, takes `delay` (tokio time), and
    /// answers `value`.
    pub fn returning<V: Send + 'static>(
        &self,
        value: V,
        delay: Duration,
    ) -> impl FnOnce() -> Load<V> + Send + 'static {
        let calls = self.0.clone();
        move || {
            Box::pin(async move {
                calls.fetch_add(1, SeqCst);
                tokio::time::sleep(delay).await;
                Ok(value)
            })
        }
    }
}

/// Set when dropped: tells whether a future holding it was dropped.
pub struct DropFlag(pub Arc<std::sync::atomic::AtomicBool>);

impl DropFlag {
    pub fn new() -> (Self, Arc<std::sync::atomic::AtomicBool>) {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        (DropFlag(flag.clone()), flag)
    }
}

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

/// A store that keeps nothing: every read misses, so every call to
/// `get_or_load` goes through singleflight.
pub struct NullStore;

impl<V> Store<V> for NullStore {
    fn get<'a>(&'a self, _key: &'a str) -> StoreFuture<'a, Result<Option<Stored<V>>>> {
        StoreFuture::ready(Ok(None))
    }
    fn set<'a>(
        &'a self,
        _key: &'a str,
        _entry: Envelope<V>,
        _ttl: Option<Duration>,
    ) -> StoreFuture<'a, Result<()>> {
        StoreFuture::ready(Ok(()))
    }
    fn delete<'a>(&'a self, _key: &'a str) -> StoreFuture<'a, Result<bool>> {
        StoreFuture::ready(Ok(false))
    }
    fn clear(&self) -> StoreFuture<'_, Result<()>> {
        StoreFuture::ready(Ok(()))
    }
    fn remaining_ttl<'a>(
        &'a self,
        _key: &'a str,
    ) -> StoreFuture<'a, Result<Option<Option<Duration>>>> {
        StoreFuture::ready(Ok(None))
    }
}

/// A remote store that is down: every operation fails, after a yield, as a
/// network call would.
pub struct DownStore;

#[derive(Debug)]
pub struct ConnectionRefused;

impl std::fmt::Display for ConnectionRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection refused")
    }
}

impl std::error::Error for ConnectionRefused {}

fn down<'a, T: Send + 'a>(op: StoreOp, key: Option<&'a str>) -> StoreFuture<'a, Result<T>> {
    StoreFuture::new(async move {
        tokio::task::yield_now().await;
        Err(Error::store(op, key, ConnectionRefused))
    })
}

impl<V: Send + 'static> Store<V> for DownStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<Option<Stored<V>>>> {
        down(StoreOp::Get, Some(key))
    }
    fn set<'a>(
        &'a self,
        key: &'a str,
        _entry: Envelope<V>,
        _ttl: Option<Duration>,
    ) -> StoreFuture<'a, Result<()>> {
        down(StoreOp::Set, Some(key))
    }
    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<bool>> {
        down(StoreOp::Delete, Some(key))
    }
    fn clear(&self) -> StoreFuture<'_, Result<()>> {
        down(StoreOp::Clear, None)
    }
    fn remaining_ttl<'a>(
        &'a self,
        key: &'a str,
    ) -> StoreFuture<'a, Result<Option<Option<Duration>>>> {
        down(StoreOp::RemainingTtl, Some(key))
    }
}

/// Lets the spawned tasks of a current-thread runtime run until they block,
/// without moving the paused clock. A yield only lets the scheduler run a
/// batch of tasks (it checks back on the yielded task every few dozen), so
/// this yields enough times for thousands of tasks.
pub async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}
