//! Helpers shared by the observability tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use cachex::observe::{record_tier, BreakerState, StoreSpan, StoreStats, Tier, TierStats};
use cachex::store::{Envelope, Store, StoreFuture, Stored};
use cachex::{Error, MemoryStore, Result, StoreOp};

#[derive(Debug)]
pub struct Unreachable;

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("l2 unreachable")
    }
}

impl std::error::Error for Unreachable {}

/// A stand-in for the coming two-tier store, built the way it should be
/// observed: an in-memory near tier, a "remote" far tier (another memory
/// store, answered asynchronously) whose calls run in [`StoreSpan`]s, a
/// breaker that can be opened by hand, and per-tier stats.
pub struct TwoTier {
    pub l1: MemoryStore<String>,
    pub l2: MemoryStore<String>,
    /// While set, the far tier fails every call, as if its breaker were open.
    pub open: AtomicBool,
    pub l2_hits: AtomicU64,
    pub l2_misses: AtomicU64,
    pub l2_errors: AtomicU64,
}

impl TwoTier {
    pub fn new() -> Self {
        TwoTier {
            l1: MemoryStore::new(1_000),
            l2: MemoryStore::new(1_000),
            open: AtomicBool::new(false),
            l2_hits: AtomicU64::new(0),
            l2_misses: AtomicU64::new(0),
            l2_errors: AtomicU64::new(0),
        }
    }

    /// The far tier's `op`, in its span: fails while the breaker is open.
    async fn far<T>(&self, op: StoreOp, key: Option<&str>, call: impl FnOnce() -> T) -> Result<T> {
        let span = StoreSpan::new(Tier::L2, "test-remote", op);
        let result = span
            .instrument(async {
                tokio::task::yield_now().await;
                if self.open.load(Relaxed) {
                    self.l2_errors.fetch_add(1, Relaxed);
                    Err(Error::store(op, key, Unreachable))
                } else {
                    Ok(call())
                }
            })
            .await;
        span.finish(&result);
        result
    }
}

impl Store<String> for TwoTier {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<Option<Stored<String>>>> {
        StoreFuture::new(async move {
            if let Some(near) = self.l1.get(key).await? {
                record_tier(Tier::L1);
                return Ok(Some(near));
            }
            let far = self
                .far(StoreOp::Get, Some(key), || {
                    self.l2.engine().get_with_ttl(key)
                })
                .await?;
            let Some((envelope, remaining_ttl)) = far else {
                self.l2_misses.fetch_add(1, Relaxed);
                return Ok(None);
            };
            self.l2_hits.fetch_add(1, Relaxed);
            record_tier(Tier::L2);
            self.l1.set(key, envelope.clone(), remaining_ttl).await?;
            Ok(Some(Stored {
                envelope,
                remaining_ttl,
            }))
        })
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        entry: Envelope<String>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, Result<()>> {
        StoreFuture::new(async move {
            let far = entry.clone();
            self.far(StoreOp::Set, Some(key), || self.l2.set(key, far, ttl))
                .await?
                .await?;
            self.l1.set(key, entry, ttl).await
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<bool>> {
        StoreFuture::new(async move {
            let far = self
                .far(StoreOp::Delete, Some(key), || self.l2.delete(key))
                .await?
                .await?;
            Ok(self.l1.delete(key).await? || far)
        })
    }

    fn clear(&self) -> StoreFuture<'_, Result<()>> {
        StoreFuture::new(async move {
            self.far(StoreOp::Clear, None, || self.l2.clear())
                .await?
                .await?;
            self.l1.clear().await
        })
    }

    fn remaining_ttl<'a>(
        &'a self,
        key: &'a str,
    ) -> StoreFuture<'a, Result<Option<Option<Duration>>>> {
        self.l1.remaining_ttl(key)
    }

    fn stats(&self) -> StoreStats {
        let mut stats = StoreStats::default();
        stats.l1 = Store::<String>::stats(&self.l1).l1;
        let mut l2 = TierStats::default();
        l2.hits = self.l2_hits.load(Relaxed);
        l2.misses = self.l2_misses.load(Relaxed);
        l2.errors = self.l2_errors.load(Relaxed);
        l2.breaker = Some(if self.open.load(Relaxed) {
            BreakerState::Open
        } else {
            BreakerState::Closed
        });
        stats.l2 = Some(l2);
        stats
    }
}
