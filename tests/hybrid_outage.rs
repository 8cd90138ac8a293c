//! Staying up through a Redis outage: L1 is kept, unverified, for at most
//! `max_stale_on_outage`; keys held in L1 cost no loader call and no wait
//! on Redis; after the outage, entries are re-read from L2, which drops
//! exactly the keys changed meanwhile. Two OS processes (this test binary
//! runs itself again), real `redis-server` processes killed and restarted,
//! and a TCP proxy cut to partition one store from Redis.
//!
//! Also: write-behind keeps read-your-writes when L1 evicts a queued key.
#![cfg(feature = "redis")]

mod hybrid_support;

use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cachex::store::hybrid::{BreakerState, HybridStore, WriteMode};
use cachex::store::{Envelope, RedisStore, Store};
use cachex::Cache;
use cachex_testkit::FaultProxy;
use hybrid_support::{eventually, guarded, hybrid, say, ChildProcess, RedisServer};

const KEYS: u64 = 200;

/// A cache over a hybrid store on `url`, with an L1 TTL far beyond the
/// test and the given staleness bound.
async fn cache_on(url: &str, prefix: &str, max_stale: Duration) -> (Cache<u64>, HybridStore<u64>) {
    let l2 = RedisStore::builder()
        .url(url)
        .prefix(prefix)
        .timeout(Duration::from_millis(300))
        .build()
        .await
        .expect("connect");
    let store = HybridStore::builder(l2)
        .l1_ttl(Duration::from_secs(600))
        .l2_timeout(Duration::from_millis(300))
        .breaker(5, Duration::from_millis(100))
        .max_stale_on_outage(max_stale)
        .build()
        .await
        .unwrap();
    let cache = Cache::builder()
        .store(store.clone())
        .default_ttl(Duration::from_secs(600))
        .build();
    (cache, store)
}

/// Reads every key through `get_or_load`, counting loader calls; the
/// loader answers `key * 10 + version`.
async fn read_all(cache: &Cache<u64>, loads: &Arc<AtomicU64>, version: u64) -> Vec<u64> {
    let mut values = Vec::new();
    for key in 0..KEYS {
        let loads = Arc::clone(loads);
        let value = cache
            .get_or_load(&key.to_string(), move || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(key * 10 + version)
            })
            .await
            .unwrap_or_else(|e| panic!("get_or_load({key}): {e}"));
        values.push(value);
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_in_l1_cost_no_load_and_no_wait_while_redis_is_down() {
    let mut server = RedisServer::start();
    let (cache, store) = cache_on(&server.url(), "down", Duration::from_secs(600)).await;
    let loads = Arc::new(AtomicU64::new(0));
    read_all(&cache, &loads, 0).await;
    assert_eq!(loads.load(Ordering::SeqCst), KEYS);

    server.kill();
    eventually("the lost subscription is noticed", || async {
        !store.is_subscribed()
    })
    .await;
    for _ in 0..20 {
        assert_eq!(
            read_all(&cache, &loads, 1).await,
            (0..KEYS).map(|k| k * 10).collect::<Vec<_>>()
        );
    }
    let during = store.stats();
    assert_eq!(
        loads.load(Ordering::SeqCst),
        KEYS,
        "no key held in L1 was loaded again"
    );
    assert_eq!(
        during.l2_errors, 0,
        "no read of a key held in L1 asked Redis: {during:?}"
    );
    assert!(during.unverified_hits >= 20 * KEYS, "{during:?}");
    assert_eq!(cache.stats().store_errors, 0);

    // A key L1 does not hold: one refused connection, the breaker opens,
    // the loader answers; the next one does not touch Redis at all.
    assert_eq!(
        guarded(
            "a miss",
            cache.get_or_load("other", || async { Ok::<_, std::io::Error>(1) })
        )
        .await
        .unwrap(),
        1
    );
    assert_ne!(store.breaker_state(), BreakerState::Closed);
    let errors = store.stats().l2_errors;
    assert!(errors >= 1);
    cache
        .get_or_load("other2", || async { Ok::<_, std::io::Error>(2) })
        .await
        .unwrap();
    assert_eq!(
        store.stats().l2_errors,
        errors,
        "the open breaker spares Redis"
    );

    // Redis comes back, empty: the entries are re-read from L2, and, L2
    // having lost them, loaded again, once each.
    server.restart();
    eventually("the subscription is back", || async {
        store.is_subscribed()
    })
    .await;
    eventually("the breaker closes", || async {
        store.breaker_state() == BreakerState::Closed
    })
    .await;
    read_all(&cache, &loads, 2).await;
    let after = store.stats();
    assert_eq!(after.revalidations, KEYS, "{after:?}");
    assert_eq!(
        loads.load(Ordering::SeqCst),
        2 * KEYS,
        "one reload per key lost by Redis"
    );
    assert_eq!(
        read_all(&cache, &loads, 3).await,
        (0..KEYS).map(|k| k * 10 + 2).collect::<Vec<_>>()
    );
    assert_eq!(loads.load(Ordering::SeqCst), 2 * KEYS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_kept_through_a_loss_are_served_within_the_bound_only() {
    let mut server = RedisServer::start();
    let bound = Duration::from_secs(2);
    let (cache, store) = cache_on(&server.url(), "bound", bound).await;
    cache.set("k", 1, cachex::Ttl::Default).await.unwrap();

    server.kill();
    eventually("the lost subscription is noticed", || async {
        !store.is_subscribed()
    })
    .await;
    // A write during the outage (L1 only) replaces the kept entry at once.
    cache.set("mine", 5, cachex::Ttl::Default).await.unwrap();
    let noticed = tokio::time::Instant::now();
    let served = cache.get("k").await.unwrap();
    let (read_at, mine) = (noticed.elapsed(), cache.get("mine").await.unwrap());
    if read_at < bound {
        assert_eq!(served, Some(1), "kept through the loss, within the bound");
    }
    assert_eq!(mine, Some(5));
    eventually("k is dropped past the bound", || async {
        !store.l1_contains("k")
    })
    .await;
    assert!(noticed.elapsed() >= bound - Duration::from_millis(50));
    // Past the bound, the loader answers (Redis is still down).
    let loaded = cache
        .get_or_load("k", || async { Ok::<_, std::io::Error>(2) })
        .await
        .unwrap();
    assert_eq!(loaded, 2);
    assert!(store.stats().revalidations >= 1);
    // What this process wrote during the outage is bounded the same way.
    eventually(
        "the outage's own write leaves L1 within the bound",
        || async { !store.l1_contains("mine") },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_partition_exactly_the_keys_changed_meanwhile_are_dropped() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(&server.addr());
    // A writes directly; B goes through the proxy.
    let (a, _a_store) = cache_on(&server.url(), "part", Duration::from_secs(600)).await;
    let (b, b_store) = cache_on(&proxy.url(), "part", Duration::from_secs(600)).await;
    let loads = Arc::new(AtomicU64::new(0));
    read_all(&a, &loads, 0).await;
    eventually("B holds every key in L1", || async {
        read_all(&b, &loads, 0).await;
        (0..KEYS).all(|k| b_store.l1_contains(&k.to_string()))
    })
    .await;
    assert_eq!(
        loads.load(Ordering::SeqCst),
        KEYS,
        "B read A's values from L2"
    );

    proxy.cut();
    eventually("B notices the partition", || async {
        !b_store.is_subscribed()
    })
    .await;
    // A changes the even keys; B cannot hear of it.
    for key in (0..KEYS).step_by(2) {
        a.set(&key.to_string(), key * 10 + 1, cachex::Ttl::Default)
            .await
            .unwrap();
    }
    // B serves what it holds (stale for the even keys, within the bound).
    assert_eq!(
        read_all(&b, &loads, 9).await,
        (0..KEYS).map(|k| k * 10).collect::<Vec<_>>()
    );

    proxy.restore();
    eventually("B is subscribed again", || async {
        b_store.is_subscribed()
    })
    .await;
    eventually("B's breaker closes", || async {
        b_store.breaker_state() == BreakerState::Closed
    })
    .await;
    let expected: Vec<u64> = (0..KEYS)
        .map(|k| if k % 2 == 0 { k * 10 + 1 } else { k * 10 })
        .collect();
    assert_eq!(
        read_all(&b, &loads, 9).await,
        expected,
        "L2's values, A's writes included"
    );
    assert_eq!(
        loads.load(Ordering::SeqCst),
        KEYS,
        "reconciling loads nothing"
    );
    let stats = b_store.stats();
    assert_eq!(
        stats.revalidations, KEYS,
        "each key re-read once: {stats:?}"
    );
    // And they are trusted again: served from L1 without asking L2.
    let l2_reads = stats.l2_hits + stats.l2_misses;
    assert_eq!(read_all(&b, &loads, 9).await, expected);
    let again = b_store.stats();
    assert_eq!(again.l2_hits + again.l2_misses, l2_reads, "{again:?}");
    // Looking is not reading: `l1_contains` counts no hit.
    assert!(b_store.l1_contains("0"));
    assert_eq!(b_store.stats().l1_hits, again.l1_hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_staleness_allowed_l1_is_emptied_on_a_loss() {
    let mut server = RedisServer::start();
    let (cache, store) = cache_on(&server.url(), "clear", Duration::ZERO).await;
    cache.set("k", 1, cachex::Ttl::Default).await.unwrap();
    assert!(store.l1_contains("k"));
    server.kill();
    eventually("L1 is emptied when the subscription is lost", || async {
        !store.l1_contains("k")
    })
    .await;
    assert_eq!(store.stats().unverified_hits, 0);
}

/// Write-behind: L1 evicting a key whose write is still queued must not
/// show this process L2's older value.
#[tokio::test]
async fn write_behind_keeps_read_your_writes_when_l1_evicts_a_queued_key() {
    let server = RedisServer::start();
    let store = hybrid::<u64>(&server, "wb")
        .await
        .write_mode(WriteMode::WriteBehind)
        .l1_capacity(100)
        .build()
        .await
        .unwrap();
    for (k, later) in [("set", Some(2)), ("deleted", None)] {
        store.set(k, Envelope::found(1), None).await.unwrap();
        store.flush().await;
        // Enough queued writes of other keys that L1 (100 entries) evicts
        // k while its new write waits behind them. On this runtime's one
        // thread the worker does not run until the test awaits something
        // that is not ready.
        for i in 0..8_000 {
            store
                .set(&format!("{k}-before-{i}"), Envelope::found(i), None)
                .await
                .unwrap();
        }
        match later {
            Some(v) => store.set(k, Envelope::found(v), None).await.unwrap(),
            None => {
                store.delete(k).await.unwrap();
            }
        }
        for i in 0..300 {
            store
                .set(&format!("{k}-after-{i}"), Envelope::found(i), None)
                .await
                .unwrap();
        }
        assert!(
            store.stats().write_behind_pending > 0,
            "the write is still queued"
        );
        let read = store
            .get(k)
            .await
            .unwrap()
            .and_then(|s| s.envelope.into_value());
        assert_eq!(
            read, later,
            "{k}: this process's own write, not L2's older value"
        );
        store.flush().await;
        let read = store
            .get(k)
            .await
            .unwrap()
            .and_then(|s| s.envelope.into_value());
        assert_eq!(read, later, "{k}: after the flush");
    }
}

/// Environment of the child process: the server's URL.
const CHILD_URL: &str = "CACHEX_OUTAGE_CHILD_URL";

/// The second process of [`two_processes_ride_out_an_outage_without_reloading`]:
/// loads every key, says so, keeps reading until told the outage is over,
/// and reports its loader calls. Passes at once when run normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_child_role() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let (cache, store) = cache_on(&url, "procs", Duration::from_secs(600)).await;
    let loads = Arc::new(AtomicU64::new(0));
    read_all(&cache, &loads, 0).await;
    say(&format!("loaded loads={}", loads.load(Ordering::SeqCst)));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    assert_eq!(rx.recv().await.as_deref(), Some("killed"));
    eventually("the child notices the outage", || async {
        !store.is_subscribed()
    })
    .await;
    let mut rounds = 0;
    while rx.try_recv().is_err() {
        read_all(&cache, &loads, 1).await;
        rounds += 1;
        tokio::task::yield_now().await;
    }
    say(&format!(
        "loads={} rounds={rounds}",
        loads.load(Ordering::SeqCst)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_ride_out_an_outage_without_reloading() {
    let mut server = RedisServer::start();
    let (cache, store) = cache_on(&server.url(), "procs", Duration::from_secs(600)).await;
    let loads = Arc::new(AtomicU64::new(0));
    read_all(&cache, &loads, 0).await;

    let mut child = ChildProcess::spawn("outage_child_role", (CHILD_URL, &server.url()));
    assert_eq!(
        child.hear().await,
        "loaded loads=0",
        "the child found the parent's values in L2"
    );

    server.kill();
    child.tell("killed");
    eventually("the parent notices the outage", || async {
        !store.is_subscribed()
    })
    .await;
    for _ in 0..20 {
        read_all(&cache, &loads, 1).await;
    }
    child.tell("over");
    let report = child.hear().await;
    child.finish();
    assert_eq!(
        loads.load(Ordering::SeqCst),
        KEYS,
        "the parent loaded nothing during the outage"
    );
    assert!(
        report.starts_with("loads=0 "),
        "the child loaded nothing either during the outage: {report}"
    );
}

/// Write-behind with the breaker open: a write still goes through the
/// queue, so this process reads it even if L1 evicts it before the worker
/// has met the breaker (it was an L1-only write, lost with the eviction).
#[tokio::test]
async fn write_behind_with_the_breaker_open_still_reads_its_own_write() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(&server.addr());
    let l2 = RedisStore::builder()
        .url(proxy.url())
        .prefix("wbo")
        .build()
        .await
        .unwrap();
    let store: HybridStore<u64> = HybridStore::builder(l2)
        .write_mode(WriteMode::WriteBehind)
        .build()
        .await
        .unwrap();
    proxy.cut();
    // A miss asks L2, which refuses: the breaker opens.
    assert_eq!(store.get("other").await.unwrap(), None);
    assert_ne!(store.breaker_state(), BreakerState::Closed);
    // On this runtime's one thread, the worker does not run until the test
    // awaits something that is not ready: the write is still queued.
    store.set("k", Envelope::found(2), None).await.unwrap();
    store.invalidate_l1("k"); // as an eviction would
    let read = store
        .get("k")
        .await
        .unwrap()
        .and_then(|s| s.envelope.into_value());
    assert_eq!(read, Some(2));
}
