//! The hybrid store's read and write paths on a real `redis-server`:
//! promotion keeps the remaining L2 TTL, write-through vs write-behind,
//! `delete` never leaves the old value in L1 (even against a racing read),
//! and concurrent misses share one L2 read and one loader call.
#![cfg(feature = "redis")]

mod hybrid_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cachex::store::hybrid::{HybridStore, WriteMode};
use cachex::store::{Envelope, Store, Stored};
use cachex::Cache;
use hybrid_support::{eventually, guarded, hybrid, l2, RedisServer};

fn value<V>(stored: Option<Stored<V>>) -> Option<V> {
    stored.and_then(|s| s.envelope.into_value())
}

#[tokio::test]
async fn promotion_copies_the_remaining_l2_ttl_not_a_fresh_one() {
    let server = RedisServer::start();
    let store = hybrid::<u64>(&server, "ttl").await.build().await.unwrap();
    let redis = store.l2().clone();
    // Written to L2 alone (another process, say), with less time than
    // the L1 TTL; the time left travels in the value's header.
    redis
        .set("k", Envelope::found(1), Some(Duration::from_millis(300)))
        .await
        .unwrap();

    let got = store.get("k").await.unwrap().unwrap();
    assert_eq!(got.envelope.value(), Some(&1));
    let left = got.remaining_ttl.unwrap();
    assert!(left <= Duration::from_millis(300), "{left:?}");
    assert!(store.l1_contains("k"));
    // From L1 now, still the L2 deadline.
    let from_l1 = store.remaining_ttl("k").await.unwrap().unwrap().unwrap();
    assert!(from_l1 <= left, "{from_l1:?} > {left:?}");
    assert_eq!(store.stats().promotions, 1);

    // With a fresh (60 s) TTL, L1 would keep serving it after L2 dropped it.
    eventually("the entry expires from both tiers", || async {
        store.get("k").await.unwrap().is_none()
    })
    .await;
    assert!(!store.l1_contains("k"));
}

#[tokio::test]
async fn the_l1_ttl_caps_a_promoted_entry() {
    let server = RedisServer::start();
    let store = hybrid::<u64>(&server, "cap")
        .await
        .l1_ttl(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    store
        .l2()
        .set("k", Envelope::found(1), Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(value(store.get("k").await.unwrap()), Some(1));
    assert!(store.l1_contains("k"));
    eventually("L1 drops k at its own, shorter TTL", || async {
        !store.l1_contains("k")
    })
    .await;
    // L2 still has it, with most of its hour left.
    let left = store
        .l2()
        .remaining_ttl("k")
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(left > Duration::from_secs(60), "{left:?}");
    // And a read promotes it again.
    assert_eq!(value(store.get("k").await.unwrap()), Some(1));
}

#[tokio::test]
async fn write_through_set_and_delete_reach_l2_before_returning() {
    let server = RedisServer::start();
    let store = hybrid::<u64>(&server, "wt").await.build().await.unwrap();
    store
        .set("k", Envelope::found(7), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(value(store.l2().get("k").await.unwrap()), Some(7));
    assert!(store.l1_contains("k"));
    assert!(store.delete("k").await.unwrap());
    assert!(store.l2().get("k").await.unwrap().is_none());
    assert!(!store.l1_contains("k"));
    assert!(!store.delete("k").await.unwrap());
    assert_eq!(store.stats().invalidations_published, 2 + 1);
}

#[tokio::test]
async fn write_behind_answers_from_l1_at_once_and_l2_follows() {
    let server = RedisServer::start();
    // A long Redis timeout: the queued write waits out the frozen server.
    // No subscriber, whose PINGs would (rightly) give up on a frozen server.
    let store: HybridStore<u64> =
        HybridStore::builder(l2(&server, "wb", Duration::from_secs(30)).await)
            .write_mode(WriteMode::WriteBehind)
            .l2_timeout(Duration::from_secs(30))
            .invalidation(false)
            .build()
            .await
            .unwrap();
    store.set("old", Envelope::found(1), None).await.unwrap();
    guarded("flush", store.flush()).await;
    assert_eq!(value(store.l2().get("old").await.unwrap()), Some(1));

    server.pause();
    // Returns although L2 cannot take a write now.
    guarded("set", store.set("k", Envelope::found(2), None))
        .await
        .unwrap();
    assert_eq!(value(store.get("k").await.unwrap()), Some(2));
    // A delete leaves a tombstone: the old value does not come back from L2.
    assert!(guarded("delete", store.delete("old")).await.unwrap());
    assert!(store.get("old").await.unwrap().is_none());
    server.resume();

    guarded("flush", store.flush()).await;
    assert_eq!(value(store.l2().get("k").await.unwrap()), Some(2));
    assert!(store.l2().get("old").await.unwrap().is_none());
    let stats = store.stats();
    assert_eq!(stats.write_behind_queued, 3);
    assert_eq!(stats.write_behind_failures, 0);
    assert_eq!(stats.write_behind_pending, 0);
    // The tombstone went once L2 had the delete.
    assert!(!store.l1_contains("old"));
    assert!(store.get("old").await.unwrap().is_none());
}

#[tokio::test]
async fn a_full_write_behind_queue_drops_the_oldest_write() {
    let server = RedisServer::start();
    let store: HybridStore<u64> =
        HybridStore::builder(l2(&server, "wbq", Duration::from_secs(30)).await)
            .write_mode(WriteMode::WriteBehind)
            .write_behind_queue(2)
            .l2_timeout(Duration::from_secs(30))
            .invalidation(false)
            .build()
            .await
            .unwrap();
    server.pause();
    // The worker takes the first write and blocks on the frozen server;
    // the queue then holds two, and each later write pushes out the oldest.
    for i in 0..6u64 {
        store
            .set(&format!("k{i}"), Envelope::found(i), None)
            .await
            .unwrap();
        tokio::task::yield_now().await;
    }
    server.resume();
    guarded("flush", store.flush()).await;
    let stats = store.stats();
    assert!(stats.write_behind_dropped >= 3, "{stats:?}");
    // The newest write always survives, in L1 and in L2; a dropped one is
    // gone from L1 too (this process does not keep what L2 never got).
    assert_eq!(value(store.l2().get("k5").await.unwrap()), Some(5));
    assert!(store.l1_contains("k5"));
    let in_l2 = |i: u64| {
        let l2 = store.l2().clone();
        async move { l2.get(&format!("k{i}")).await.unwrap().is_some() }
    };
    for i in 0..6 {
        if !in_l2(i).await {
            assert!(
                !store.l1_contains(&format!("k{i}")),
                "k{i} dropped but kept in L1"
            );
        }
    }
}

#[tokio::test]
async fn delete_never_leaves_the_old_value_in_l1_even_against_a_racing_read() {
    let server = RedisServer::start();
    let store = hybrid::<u64>(&server, "race").await.build().await.unwrap();
    for round in 0..300u64 {
        store.set("k", Envelope::found(round), None).await.unwrap();
        store.invalidate_l1("k"); // the next read goes to L2
        let reader = {
            let store = store.clone();
            tokio::spawn(async move { store.get("k").await.unwrap() })
        };
        if round % 2 == 0 {
            tokio::task::yield_now().await;
        }
        assert!(store.delete("k").await.unwrap() || round % 2 == 1);
        assert!(
            !store.l1_contains("k"),
            "round {round}: L1 holds k after delete"
        );
        let _ = reader.await.unwrap();
        // The read may have fetched the old value, but must not have kept it.
        assert!(
            !store.l1_contains("k"),
            "round {round}: a racing read promoted k"
        );
        assert!(store.get("k").await.unwrap().is_none());
    }
}

/// A read of `k` that has sent its GET to the (frozen) server but is not
/// polled again until later: its answer, the old value, is applied only
/// after the write under test has returned.
async fn read_sent_not_finished(
    store: &HybridStore<u64>,
) -> cachex::store::StoreFuture<'_, cachex::Result<Option<Stored<u64>>>> {
    let mut read = store.get("k");
    // Polls it until it waits on the server; the server is frozen, so it
    // cannot finish (the timeouts are 30 s).
    let polled = tokio::time::timeout(Duration::from_millis(50), &mut read).await;
    assert!(polled.is_err(), "the read finished against a frozen server");
    read
}

async fn held_store(server: &RedisServer, prefix: &str) -> HybridStore<u64> {
    HybridStore::builder(l2(server, prefix, Duration::from_secs(30)).await)
        .l2_timeout(Duration::from_secs(30))
        .invalidation(false)
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_read_of_the_old_value_finishing_after_delete_is_not_promoted() {
    let server = RedisServer::start();
    let store = held_store(&server, "held").await;
    store.set("k", Envelope::found(1), None).await.unwrap();
    store.invalidate_l1("k");

    server.pause();
    // The read's GET is queued in the frozen server ahead of the delete's
    // UNLINK, so it answers the old value; it is applied after delete returned.
    let read = read_sent_not_finished(&store).await;
    let deleter = {
        let store = store.clone();
        tokio::spawn(async move { store.delete("k").await.unwrap() })
    };
    tokio::task::yield_now().await;
    server.resume();
    assert!(guarded("delete", deleter).await.unwrap());
    assert!(!store.l1_contains("k"));

    let read = guarded("read", read).await.unwrap();
    assert_eq!(value(read), Some(1), "the read did fetch the old value");
    assert!(
        !store.l1_contains("k"),
        "the old value was promoted after delete returned"
    );
    assert!(store.get("k").await.unwrap().is_none());
    assert_eq!(store.stats().promotions_skipped, 1);
}

#[tokio::test]
async fn a_read_of_the_old_value_finishing_after_set_does_not_replace_it() {
    let server = RedisServer::start();
    let store = held_store(&server, "held").await;
    store.set("k", Envelope::found(1), None).await.unwrap();
    store.invalidate_l1("k");

    server.pause();
    let read = read_sent_not_finished(&store).await;
    let setter = {
        let store = store.clone();
        tokio::spawn(async move { store.set("k", Envelope::found(2), None).await.unwrap() })
    };
    tokio::task::yield_now().await;
    server.resume();
    guarded("set", setter).await.unwrap();
    assert_eq!(value(guarded("read", read).await.unwrap()), Some(1));
    assert_eq!(value(store.get("k").await.unwrap()), Some(2));
}

#[tokio::test]
async fn concurrent_misses_share_one_l2_read_and_one_loader_call() {
    let server = RedisServer::start();
    let store: HybridStore<u64> =
        HybridStore::builder(l2(&server, "sf", Duration::from_secs(30)).await)
            .l2_timeout(Duration::from_secs(30))
            .invalidation(false)
            .build()
            .await
            .unwrap();
    let cache: Cache<u64> = Cache::builder().store(store.clone()).build();
    let loads = Arc::new(AtomicUsize::new(0));

    // Hold the first L2 read in a frozen server so that every caller
    // misses L1 while it is under way.
    server.pause();
    let callers: Vec<_> = (0..32)
        .map(|_| {
            let (cache, loads) = (cache.clone(), Arc::clone(&loads));
            tokio::spawn(async move {
                cache
                    .get_or_load("hot", move || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, std::io::Error>(42)
                    })
                    .await
            })
        })
        .collect();
    eventually("every caller joined the one L2 read", || async {
        store.stats().l2_reads_shared == 31
    })
    .await;
    server.resume();
    for caller in callers {
        assert_eq!(guarded("caller", caller).await.unwrap().unwrap(), 42);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    let stats = store.stats();
    assert_eq!(stats.l2_hits + stats.l2_misses, 1, "{stats:?}");
    // The loaded value went to both tiers.
    assert!(store.l1_contains("hot"));
    assert_eq!(value(store.l2().get("hot").await.unwrap()), Some(42));
}

#[tokio::test]
async fn a_cached_not_found_is_promoted_like_a_value() {
    let server = RedisServer::start();
    let a = hybrid::<u64>(&server, "neg").await.build().await.unwrap();
    let cache: Cache<u64> = Cache::builder().store(a.clone()).build();
    let none = cache
        .get_or_load_optional("missing", || async { Ok::<_, std::io::Error>(None) })
        .await
        .unwrap();
    assert_eq!(none, None);
    let b = hybrid::<u64>(&server, "neg").await.build().await.unwrap();
    let stored = b.get("missing").await.unwrap().unwrap();
    assert!(stored.envelope.is_not_found());
    assert!(b.l1_contains("missing"));
}

#[tokio::test]
async fn stats_report_both_tiers_and_the_breaker() {
    use cachex::observe::BreakerState;

    let server = RedisServer::start();
    let store = hybrid::<u64>(&server, "stats").await.build().await.unwrap();
    let redis = store.l2().clone();
    redis.set("far", Envelope::found(9), None).await.unwrap();
    store.set("near", Envelope::found(1), None).await.unwrap();

    assert_eq!(value(store.get("near").await.unwrap()), Some(1)); // L1 hit
    assert_eq!(value(store.get("far").await.unwrap()), Some(9)); // L1 miss, L2 hit
    assert_eq!(value(store.get("none").await.unwrap()), None); // both miss

    let stats = Store::<u64>::stats(&store);
    let l1 = stats.l1.expect("an L1 tier");
    let l2 = stats.l2.expect("an L2 tier");
    assert!(l1.hits >= 1, "{l1:?}");
    assert!(l1.misses >= 2, "{l1:?}");
    assert_eq!(l1.entries, Some(2), "`near`, and `far` promoted");
    assert_eq!((l2.hits, l2.misses, l2.errors), (1, 1, 0));
    assert_eq!(l2.breaker, Some(BreakerState::Closed));
}

#[tokio::test]
async fn a_cache_reads_l1_once_per_lookup() {
    let server = RedisServer::start();
    let store = hybrid::<u64>(&server, "once").await.build().await.unwrap();
    store
        .l2()
        .set("far", Envelope::found(9), None)
        .await
        .unwrap();
    let cache: Cache<u64> = Cache::builder().store(store.clone()).build();
    cache.set("near", 1, cachex::Ttl::Never).await.unwrap();

    assert_eq!(cache.get("near").await.unwrap(), Some(1)); // L1 hit
    assert_eq!(cache.get("far").await.unwrap(), Some(9)); // L1 miss, L2 hit, promoted
    assert_eq!(cache.get("far").await.unwrap(), Some(9)); // L1 hit
    assert_eq!(cache.get("none").await.unwrap(), None); // both miss
    let loaded = cache.get_or_load("new", || async { Ok::<_, std::io::Error>(5) });
    assert_eq!(loaded.await.unwrap(), 5); // both miss, then loaded
    let loaded = cache.get_or_load("new", || async { Ok::<_, std::io::Error>(6) });
    assert_eq!(loaded.await.unwrap(), 5); // L1 hit

    let stats = cache.stats();
    let l1 = stats.store.l1.expect("an L1 tier");
    let l2 = stats.store.l2.expect("an L2 tier");
    assert_eq!(
        (l1.hits, l1.misses),
        (3, 3),
        "one L1 read per lookup: {l1:?}"
    );
    assert_eq!((l2.hits, l2.misses), (1, 2), "{l2:?}");
    assert_eq!((stats.hits, stats.misses, stats.loads), (4, 2, 1));
}
