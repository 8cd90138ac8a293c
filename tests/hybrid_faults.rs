//! Redis falling under a hybrid store: killed during a load, the service
//! keeps answering from L1 and the loader, the breaker opens at the first
//! refused connection, L1 is kept through the lost subscription; after a
//! restart on the same port the breaker closes, the subscription comes
//! back (entries from before are re-read from L2), and L2 is used again.
//! Strict mode reports the outage instead. (`hybrid_outage.rs` measures
//! the staleness bound, the reconciliation and the loader calls.)
#![cfg(feature = "redis")]

mod hybrid_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cachex::store::hybrid::{BreakerOpen, BreakerState, HybridStore};
use cachex::store::{Envelope, Store};
use cachex::{Cache, StoreOp};
use hybrid_support::{eventually, guarded, l2, RedisServer};

async fn fragile(server: &RedisServer, prefix: &str, strict: bool) -> HybridStore<u64> {
    HybridStore::builder(l2(server, prefix, Duration::from_millis(300)).await)
        .l2_timeout(Duration::from_millis(200))
        .breaker(3, Duration::from_millis(100))
        .strict(strict)
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_during_a_load_the_service_keeps_answering_and_recovers() {
    let mut server = RedisServer::start();
    let store = fragile(&server, "load", false).await;
    let cache: Cache<u64> = Cache::builder()
        .store(store.clone())
        .default_ttl(Duration::from_secs(60))
        .build();

    // Clients: get_or_load over 50 keys; any error or wrong value fails.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4u64)
        .map(|client| {
            let (cache, stop, answered) = (cache.clone(), stop.clone(), answered.clone());
            tokio::spawn(async move {
                let mut i = client;
                while !stop.load(Ordering::Relaxed) {
                    let key = i % 50;
                    let got = cache
                        .get_or_load(&key.to_string(), move || async move {
                            Ok::<_, std::io::Error>(key * 10)
                        })
                        .await
                        .unwrap_or_else(|e| panic!("get_or_load({key}) failed: {e}"));
                    assert_eq!(got, key * 10);
                    answered.fetch_add(1, Ordering::Relaxed);
                    i += 7;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let progress = |answered: &Arc<AtomicU64>| {
        let before = answered.load(Ordering::Relaxed);
        let answered = answered.clone();
        async move {
            eventually("the clients make progress", || async {
                answered.load(Ordering::Relaxed) > before + 100
            })
            .await
        }
    };
    progress(&answered).await;

    // A key in L1 that the clients do not touch.
    store.set("marker", Envelope::found(1), None).await.unwrap();
    assert!(store.l1_contains("marker"));

    server.kill();
    eventually("the lost subscription is noticed", || async {
        store.stats().subscription_losses >= 1
    })
    .await;
    assert!(
        store.l1_contains("marker"),
        "L1 is kept through the lost subscription"
    );
    // The clients' keys are all in L1: they need no L2 call. A key that
    // is not sends one, which is refused, and that opens the breaker.
    assert_eq!(
        cache
            .get_or_load("new", || async { Ok::<_, std::io::Error>(7) })
            .await
            .unwrap(),
        7
    );
    assert_ne!(
        store.breaker_state(),
        BreakerState::Closed,
        "one refused connection opens the breaker"
    );
    progress(&answered).await;
    // Writes go to L1 only while Redis is down, and succeed.
    cache.set("outage", 5, cachex::Ttl::Default).await.unwrap();
    assert_eq!(cache.get("outage").await.unwrap(), Some(5));
    let down = store.stats();
    assert!(down.breaker_opened >= 1 && down.l2_errors >= 1, "{down:?}");
    assert!(down.l1_only_writes > 0, "{down:?}");
    assert!(down.unverified_hits > 0, "{down:?}");

    server.restart();
    eventually("the breaker closes", || async {
        store.breaker_state() == BreakerState::Closed
    })
    .await;
    eventually("the subscription is back", || async {
        store.is_subscribed() && store.stats().resubscriptions >= 1
    })
    .await;
    // Back: entries from before are no longer served without asking L2,
    // and L2 never had the L1-only write.
    assert!(!store.l1_contains("outage"));
    assert_eq!(cache.get("outage").await.unwrap(), None);
    progress(&answered).await;

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        guarded("client", client).await.unwrap();
    }
    // L2 is in use again: a write reaches the (fresh) server.
    cache.set("after", 9, cachex::Ttl::Default).await.unwrap();
    assert_eq!(
        store
            .l2()
            .get("after")
            .await
            .unwrap()
            .unwrap()
            .envelope
            .into_value(),
        Some(9)
    );
    // And reads: off L1, `after` comes back from L2.
    store.invalidate_l1("after");
    assert_eq!(cache.get("after").await.unwrap(), Some(9));
    let up = store.stats();
    assert!(up.breaker_closed >= 1, "{up:?}");
    assert!(up.l2_hits > down.l2_hits, "{up:?}");
    assert_eq!(
        cache.stats().store_errors,
        0,
        "non-strict: no store errors reach the cache"
    );
}

#[tokio::test]
async fn a_fresh_server_after_restart_is_seen_by_every_store() {
    let mut server = RedisServer::start();
    let a = fragile(&server, "re", false).await;
    let b = fragile(&server, "re", false).await;
    server.kill();
    server.restart();
    for store in [&a, &b] {
        eventually("resubscribed", || async {
            store.is_subscribed() && store.stats().resubscriptions >= 1
        })
        .await;
    }
    // Invalidation works over the new subscriptions. (The first write
    // after the restart may still find a's connection broken, and go to L1
    // only: write until L2 has it.)
    eventually("a's write reaches the new server", || async {
        a.set("k", Envelope::found(1), None).await.unwrap();
        a.l2().get("k").await.is_ok_and(|found| found.is_some())
    })
    .await;
    eventually("b promotes k", || async {
        b.get("k").await.unwrap().is_some() && b.l1_contains("k")
    })
    .await;
    a.set("k", Envelope::found(2), None).await.unwrap();
    eventually("b's L1 drops k", || async { !b.l1_contains("k") }).await;
}

#[tokio::test]
async fn strict_mode_reports_the_outage() {
    let mut server = RedisServer::start();
    let store = fragile(&server, "strict", true).await;
    store.set("k", Envelope::found(1), None).await.unwrap();
    server.kill();
    // L1 still answers what it holds (within the staleness bound); an L2
    // read fails.
    let err = guarded("get", store.get("other")).await.unwrap_err();
    assert_eq!(err.store_op(), Some(StoreOp::Get));
    eventually("the breaker opens", || async {
        let _ = store.set("w", Envelope::found(1), None).await;
        store.breaker_state() != BreakerState::Closed
    })
    .await;
    eventually("a refusal names the breaker", || async {
        let err = store.get("other").await.unwrap_err();
        let source = std::error::Error::source(&err).unwrap();
        source.is::<BreakerOpen>()
    })
    .await;
    assert!(store
        .set("k", Envelope::found(2), None)
        .await
        .unwrap_err()
        .is_store());
    assert!(store.delete("k").await.unwrap_err().is_store());
}

#[tokio::test]
async fn dropping_the_store_ends_its_background_tasks() {
    let server = RedisServer::start();
    let store = fragile(&server, "drop", false).await;
    let weak = {
        // The subscriber connection is visible to the server as a client.
        let clients = || async {
            let mut conn = redis::Client::open(server.url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut conn)
                .await
                .unwrap();
            list.lines().filter(|l| l.contains("sub=1")).count()
        };
        assert_eq!(clients().await, 1);
        drop(store);
        eventually("the subscriber disconnects", || async {
            clients().await == 0
        })
        .await;
        true
    };
    assert!(weak);
}

#[tokio::test]
async fn an_idle_subscription_stays_up_and_a_frozen_server_is_noticed() {
    let server = RedisServer::start();
    let store = fragile(&server, "idle", false).await;
    store.set("k", Envelope::found(1), None).await.unwrap();
    // Several PING rounds (one a second) on an idle subscriber connection.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let stats = store.stats();
    assert_eq!(stats.subscription_losses, 0, "{stats:?}");
    assert!(store.l1_contains("k"));

    // A frozen server keeps the socket open: only the PING notices.
    server.pause();
    eventually(
        "the unanswered PING counts as a lost subscription",
        || async { store.stats().subscription_losses >= 1 },
    )
    .await;
    assert!(!store.is_subscribed());
    // Frozen, not gone: L1 still answers, without waiting on Redis.
    let held = guarded("an L1 read while Redis is frozen", store.get("k")).await;
    assert_eq!(held.unwrap().and_then(|s| s.envelope.into_value()), Some(1));
    assert!(store.stats().unverified_hits >= 1);
    server.resume();
    eventually("resubscribed", || async { store.is_subscribed() }).await;
    // What L1 held before the loss is re-read from L2, not trusted.
    assert!(!store.l1_contains("k"));
}
