//! `Cache::stats`: the cache's own counters and its store's, per tier, as
//! operators read them (no cargo feature needed).

mod loading_support;
mod observe_support;

use std::sync::Arc;
use std::time::Duration;

use cachex::observe::{BreakerState, Tier};
use cachex::{Cache, MemoryStore, Stats, StoreStats, Ttl};
use loading_support::{ConnectionRefused, DownStore, NullStore};
use observe_support::TwoTier;
use std::sync::atomic::Ordering::Relaxed;
use tokio::time::advance;

async fn found(value: &str) -> Result<String, ConnectionRefused> {
    Ok(value.to_owned())
}

#[tokio::test(start_paused = true)]
async fn every_operation_is_counted_once() {
    let cache: Cache<String> = Cache::builder().capacity(100).build();
    cache.set("a", "1".into(), Ttl::Default).await.unwrap();
    cache.set("b", "2".into(), Ttl::Default).await.unwrap();
    assert!(cache.get("a").await.unwrap().is_some()); // hit
    assert!(cache.get("zz").await.unwrap().is_none()); // miss
    cache.get_or_load("c", || found("3")).await.unwrap(); // miss + load
    cache.get_or_load("c", || found("x")).await.unwrap(); // hit
    let failed = cache
        .get_or_load("d", || async { Err::<String, _>(ConnectionRefused) })
        .await;
    assert!(failed.is_err()); // miss + load error
    let absent = cache
        .get_or_load_optional("e", || async { Ok::<_, ConnectionRefused>(None) })
        .await
        .unwrap();
    assert_eq!(absent, None); // miss + load
    assert_eq!(cache.get("e").await.unwrap(), None); // negative hit
    assert!(cache.delete("a").await.unwrap());
    assert!(!cache.delete("a").await.unwrap());

    let stats = cache.stats();
    assert_eq!(stats.hits, 2);
    assert_eq!(stats.negative_hits, 1);
    assert_eq!(stats.misses, 4);
    assert_eq!(stats.loads, 3, "every loader call, failed ones included");
    assert_eq!(stats.load_errors, 1);
    assert_eq!(stats.sets, 2, "values stored by loads are not sets");
    assert_eq!(
        stats.deletes, 2,
        "a delete counts whether or not the key was there"
    );
    assert_eq!(stats.store_errors, 0);
    assert_eq!(
        (stats.refreshes, stats.refresh_errors, stats.stale_served),
        (0, 0, 0)
    );

    let l1 = stats.store.l1.expect("a memory store reports tier l1");
    assert_eq!(stats.store.l2, None);
    assert_eq!(stats.store.single_tier(), Some(Tier::L1));
    assert_eq!(l1.entries, Some(3), "b, c and the cached not-found of e");
    assert_eq!(l1.removals, 1);
    assert_eq!(
        (l1.hits, l1.misses),
        (3, 4),
        "the engine counts its own reads"
    );
    assert_eq!(l1.breaker, None);
}

#[tokio::test(start_paused = true)]
async fn evictions_by_cause_reach_the_cache() {
    let store = MemoryStore::new(10);
    let cache: Cache<u64> = Cache::builder().store(store.clone()).build();
    for i in 0..100u64 {
        cache.set(&format!("k{i}"), i, Ttl::Never).await.unwrap();
    }
    let l1 = cache.stats().store.l1.unwrap();
    let entries = l1.entries.unwrap();
    assert!(entries <= 10, "bounded by the capacity: {entries}");
    assert_eq!(l1.evictions_size, 100 - entries);
    assert_eq!(l1.evictions_expired, 0);

    cache.clear().await.unwrap();
    for i in 0..5u64 {
        let ttl = Ttl::After(Duration::from_secs(1));
        cache.set(&format!("t{i}"), i, ttl).await.unwrap();
    }
    advance(Duration::from_secs(2)).await;
    store.engine().run_pending_tasks();
    let stats = cache.stats();
    let l1 = stats.store.l1.unwrap();
    assert_eq!(l1.evictions_expired, 5);
    assert_eq!(l1.entries, Some(0));
    assert_eq!(stats.store.evictions(), 100 - entries + 5);
}

#[tokio::test(start_paused = true)]
async fn a_shared_store_still_reports() {
    let store = Arc::new(MemoryStore::new(100));
    let cache: Cache<u8> = Cache::builder().store(Arc::clone(&store)).build();
    cache.set("a", 1, Ttl::Default).await.unwrap();
    assert_eq!(cache.stats().store.l1.unwrap().entries, Some(1));
}

#[tokio::test(start_paused = true)]
async fn metrics_off_counts_nothing_but_the_store_still_reports() {
    let cache: Cache<u8> = Cache::builder().metrics(false).build();
    cache.set("a", 1, Ttl::Default).await.unwrap();
    cache.get("a").await.unwrap();
    let stats = cache.stats();
    let mut own = stats;
    own.store = StoreStats::default();
    assert_eq!(own, Stats::default());
    assert_eq!(stats.store.l1.unwrap().hits, 1);
}

#[tokio::test(start_paused = true)]
async fn a_store_that_counts_nothing_reports_no_tier() {
    let cache: Cache<u8> = Cache::builder().store(NullStore).build();
    cache.get("a").await.unwrap();
    assert_eq!(cache.stats().store, StoreStats::default());
    assert_eq!(cache.stats().misses, 1);
}

#[tokio::test(start_paused = true)]
async fn store_failures_are_counted_for_writes_too() {
    let cache: Cache<u8> = Cache::builder().store(DownStore).build();
    assert!(cache.set("a", 1, Ttl::Default).await.is_err());
    assert!(cache.delete("a").await.is_err());
    assert!(cache.get("a").await.is_err());
    let stats = cache.stats();
    assert_eq!((stats.sets, stats.deletes, stats.store_errors), (0, 0, 3));
}

#[tokio::test(start_paused = true)]
async fn two_tiers_report_each_tier_and_the_breaker() {
    let store = Arc::new(TwoTier::new());
    let cache: Cache<String> = Cache::builder().store(Arc::clone(&store)).build();
    cache.set("a", "1".into(), Ttl::Default).await.unwrap();
    store.l1.engine().clear(); // only the far tier has it now
    assert!(cache.get("a").await.unwrap().is_some()); // l2 hit, promoted
    assert!(cache.get("a").await.unwrap().is_some()); // l1 hit
    store.open.store(true, Relaxed);
    assert!(cache.get("b").await.is_err());

    let stats = cache.stats();
    assert_eq!(stats.store.single_tier(), None);
    let l2 = stats.store.l2.unwrap();
    assert_eq!((l2.hits, l2.misses, l2.errors), (1, 0, 1));
    assert_eq!(l2.breaker, Some(BreakerState::Open));
    assert_eq!(stats.store.l1.unwrap().hits, 1);
    assert_eq!(stats.store_errors, 1);
}

#[test]
fn names() {
    let cache: Cache<u8> = Cache::builder().build();
    assert_eq!(cache.name(), "default");
    let cache: Cache<u8> = Cache::builder().name("users").build();
    assert_eq!(cache.name(), "users");
    assert!(format!("{cache:?}").contains("users"));
}
