//! Network chaos between hybrid stores and a real `redis-server`, through
//! the test's own fault proxy, under a mixed load of writers and
//! `get_or_load` readers on a `Cache` (see `chaos_support::Load`):
//!
//! - a latency spike: no error reaches callers, the breaker opens, spares
//!   Redis, and closes once the network is fast again;
//! - lost connections and stalls (strict mode): no hang, no stale read,
//!   no lost acknowledged write;
//! - a partition during writes: strict mode reports errors and loses
//!   nothing acknowledged; the default mode reports none and counts the
//!   writes Redis never got (L1 only, as documented);
//! - write-behind through a partition: what Redis misses is at most what
//!   the store counted as failed or dropped;
//! - Redis restarted empty: the caches load again, and once the
//!   subscriptions are back no store serves a value from before.
//!
//! Each prints its figures (`FIGURES ...`, gathered in
//! `docs/BENCHMARKS.md`).
#![cfg(feature = "redis")]

mod chaos_support;

use std::sync::Arc;
use std::time::Duration;

use cachex::store::hybrid::{BreakerState, HybridStore, WriteMode};
use cachex::store::{RedisStore, Store};
use cachex::Cache;
use cachex_testkit::{FaultProxy, RedisServer};
use chaos_support::{eventually, Figures, Ledger, Load};

const KEYS: usize = 40;

/// A cache on a hybrid store that reaches Redis at `url`.
async fn hybrid_cache(
    url: &str,
    prefix: &str,
    strict: bool,
    mode: WriteMode,
) -> (Cache<u64>, HybridStore<u64>) {
    let l2: RedisStore<u64> = RedisStore::builder()
        .url(url)
        .prefix(prefix)
        .timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let store = HybridStore::builder(l2)
        .l2_timeout(Duration::from_millis(150))
        .breaker(3, Duration::from_millis(200))
        .max_stale_on_outage(Duration::from_secs(5))
        .strict(strict)
        .write_mode(mode)
        .write_behind_queue(64)
        .build()
        .await
        .unwrap();
    let cache = Cache::builder()
        .store(store.clone())
        .default_ttl(Duration::from_secs(600))
        .build();
    (cache, store)
}

/// Reads `key` from Redis directly, waiting out bytes the proxy may still
/// hold from the fault.
async fn in_redis(store: &HybridStore<u64>, key: usize) -> Option<u64> {
    let deadline = std::time::Instant::now() + chaos_support::DEADLINE;
    loop {
        match store.l2().get(&key.to_string()).await {
            Ok(stored) => return stored.and_then(|s| s.envelope.into_value()),
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
    }
}

/// Runs the load for a while, `fault` for `during`, `heal`, and the load
/// until calls succeed again (and the breaker is closed) plus a while.
async fn scenario(
    figures: &Arc<Figures>,
    cache: &Cache<u64>,
    store: &HybridStore<u64>,
    ledger: &Arc<Ledger>,
    fault: impl FnOnce(),
    during: Duration,
    heal: impl FnOnce(),
) {
    let load = Load::start(cache, ledger, figures, 4, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    figures.fault();
    fault();
    tokio::time::sleep(during).await;
    heal();
    eventually("the breaker closes", || async {
        store.breaker_state() == BreakerState::Closed
    })
    .await;
    eventually("calls succeed again", || async {
        figures.recovered_after().is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.stop().await;
    figures.print();
    let stats = store.stats();
    println!(
        "  breaker opened {} closed {}; L2 calls skipped {}; L1-only writes {}; L2 errors {}",
        stats.breaker_opened,
        stats.breaker_closed,
        stats.l2_skipped,
        stats.l1_only_writes,
        stats.l2_errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_spike_no_error_reaches_callers_and_the_breaker_cycles() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(&server.addr());
    let (cache, store) = hybrid_cache(&proxy.url(), "hlat", false, WriteMode::WriteThrough).await;
    let figures = Arc::new(Figures::new(
        "hybrid: latency spike 200-300 ms (L2 timeout 150 ms)",
    ));
    let ledger = Arc::new(Ledger::new(KEYS));
    scenario(
        &figures,
        &cache,
        &store,
        &ledger,
        || proxy.set_latency(Duration::from_millis(200), Duration::from_millis(100)),
        Duration::from_millis(1_000),
        || proxy.set_latency(Duration::ZERO, Duration::ZERO),
    )
    .await;
    let stats = store.stats();
    assert_eq!(figures.errors(), 0, "non-strict: no error reaches callers");
    assert!(
        stats.breaker_opened >= 1 && stats.breaker_closed >= 1,
        "{stats:?}"
    );
    assert!(
        stats.l2_skipped > 0,
        "the open breaker spared Redis: {stats:?}"
    );
    // Stale reads can only come from writes Redis never got (made while it
    // was unreachable, kept in L1, re-read from L2 afterwards: documented).
    assert!(
        figures.stale_reads() == 0 || stats.l1_only_writes > 0,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_lost_connections_and_stalls_lose_nothing_acknowledged() {
    let server = RedisServer::start();
    let proxy = Arc::new(FaultProxy::start(&server.addr()));
    let (cache, store) = hybrid_cache(&proxy.url(), "hloss", true, WriteMode::WriteThrough).await;
    let figures = Arc::new(Figures::new(
        "hybrid strict: 1% of chunks kill their connection, 250 ms stalls",
    ));
    let ledger = Arc::new(Ledger::new(KEYS));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stalls = {
        let (proxy, stop) = (proxy.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                proxy.stall(Duration::from_millis(250));
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    scenario(
        &figures,
        &cache,
        &store,
        &ledger,
        || proxy.set_loss(0.01),
        Duration::from_millis(1_500),
        || {
            proxy.set_loss(0.0);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        },
    )
    .await;
    stalls.join().unwrap();
    println!("  connections killed: {}", proxy.connections_lost());
    assert!(proxy.connections_lost() > 0);
    assert_eq!(figures.stale_reads(), 0);
    for key in 0..KEYS {
        ledger
            .check_final(key, in_redis(&store, key).await)
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_partition_during_writes_reports_errors_and_loses_nothing_acknowledged() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(&server.addr());
    let (cache, store) = hybrid_cache(&proxy.url(), "hps", true, WriteMode::WriteThrough).await;
    let figures = Arc::new(Figures::new(
        "hybrid strict: partition of 800 ms during writes",
    ));
    let ledger = Arc::new(Ledger::new(KEYS));
    scenario(
        &figures,
        &cache,
        &store,
        &ledger,
        || proxy.cut(),
        Duration::from_millis(800),
        || proxy.restore(),
    )
    .await;
    assert!(figures.errors() > 0, "strict: the partition is reported");
    assert_eq!(figures.stale_reads(), 0);
    for key in 0..KEYS {
        ledger
            .check_final(key, in_redis(&store, key).await)
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_during_writes_reports_no_error_and_counts_what_redis_missed() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(&server.addr());
    let (cache, store) = hybrid_cache(&proxy.url(), "hpd", false, WriteMode::WriteThrough).await;
    let figures = Arc::new(Figures::new("hybrid: partition of 800 ms during writes"));
    let ledger = Arc::new(Ledger::new(KEYS));
    scenario(
        &figures,
        &cache,
        &store,
        &ledger,
        || proxy.cut(),
        Duration::from_millis(800),
        || proxy.restore(),
    )
    .await;
    let stats = store.stats();
    assert_eq!(figures.errors(), 0, "non-strict: no error reaches callers");
    assert!(stats.l1_only_writes > 0, "{stats:?}");
    // Writes made during the partition went to L1 only (documented); the
    // writers wrote every key again after it, so Redis has them all now.
    for key in 0..KEYS {
        ledger
            .check_final(key, in_redis(&store, key).await)
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_behind_through_a_partition_loses_at_most_what_it_counts() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(&server.addr());
    let (cache, store) = hybrid_cache(&proxy.url(), "hwb", false, WriteMode::WriteBehind).await;
    let figures = Arc::new(Figures::new("hybrid write-behind: partition of 800 ms"));
    let ledger = Arc::new(Ledger::new(KEYS));
    // Writers only: a read's load would write the key itself and hide
    // what the queue lost.
    let load = Load::start(&cache, &ledger, &figures, 4, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    figures.fault();
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The last write of each key made during the partition is the one
    // that must reach Redis, or be counted: stop writing first.
    load.stop().await;
    proxy.restore();
    eventually("the breaker closes", || async {
        store.breaker_state() == BreakerState::Closed
    })
    .await;
    store.flush().await;
    figures.print();
    let stats = store.stats();
    println!(
        "  queued {} failed {} dropped {}",
        stats.write_behind_queued, stats.write_behind_failures, stats.write_behind_dropped
    );
    assert_eq!(figures.errors(), 0, "write-behind: writes never fail");
    let mut missed = 0;
    for key in 0..KEYS {
        if ledger
            .check_final(key, in_redis(&store, key).await)
            .is_err()
        {
            missed += 1;
        }
    }
    println!("  keys whose last write Redis missed: {missed}");
    assert!(
        missed <= stats.write_behind_failures + stats.write_behind_dropped,
        "lost {missed} writes, counted {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_no_value_from_before_is_served_once_back() {
    let mut server = RedisServer::start();
    let (cache, a) = hybrid_cache(&server.url(), "hre", false, WriteMode::WriteThrough).await;
    let (other, b) = hybrid_cache(&server.url(), "hre", false, WriteMode::WriteThrough).await;
    let figures = Arc::new(Figures::new("hybrid: Redis restarted empty"));
    let ledger = Arc::new(Ledger::new(KEYS));
    // B holds every key in L1 from before the restart.
    let load = Load::start(&cache, &ledger, &figures, 4, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for key in 0..KEYS {
        other.get(&key.to_string()).await.unwrap();
    }
    let loads_before = figures.loads();
    figures.fault();
    server.kill();
    server.restart();
    eventually("both stores resubscribed", || async {
        a.stats().resubscriptions >= 1 && b.stats().resubscriptions >= 1
    })
    .await;
    eventually("calls succeed", || async {
        figures.recovered_after().is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.stop().await;
    figures.print();
    assert_eq!(figures.errors(), 0);
    assert!(figures.loads() > loads_before, "the cache loaded again");
    // Quiet now: every invalidation has had time to arrive. B answers
    // exactly what Redis holds (which A wrote after the restart, or
    // nothing): no value from before the restart comes back.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for key in 0..KEYS {
        let served = other.get(&key.to_string()).await.unwrap();
        assert_eq!(served, in_redis(&b, key).await, "key {key}");
    }
    assert!(b.stats().revalidations > 0, "{:?}", b.stats());
}

/// Write-behind holds writes while Redis is unreachable and sends them
/// once it is back: a partition shorter than the queue's bound costs no
/// write. And `flush` during an outage returns (the writes it waits for
/// fail, counted) instead of waiting for Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_behind_holds_writes_through_a_partition_and_flush_never_hangs() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(&server.addr());
    let (_, store) = hybrid_cache(&proxy.url(), "hwh", false, WriteMode::WriteBehind).await;
    proxy.cut();
    for key in 0..KEYS {
        store
            .set(
                &key.to_string(),
                cachex::store::Envelope::found(key as u64),
                None,
            )
            .await
            .unwrap();
    }
    eventually("the worker met the outage", || async {
        store.stats().l2_errors + store.stats().l2_skipped > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
    eventually("every held write reaches Redis", || async {
        store.stats().write_behind_pending == 0
    })
    .await;
    let stats = store.stats();
    assert_eq!(
        stats.write_behind_failures + stats.write_behind_dropped,
        0,
        "{stats:?}"
    );
    for key in 0..KEYS {
        assert_eq!(in_redis(&store, key).await, Some(key as u64), "key {key}");
    }

    // An outage again, and a flush: it returns, and says what failed.
    proxy.cut();
    store
        .set("late", cachex::store::Envelope::found(1), None)
        .await
        .unwrap();
    chaos_support::guarded("flush during an outage", store.flush()).await;
    assert_eq!(store.stats().write_behind_failures, 1);
}
