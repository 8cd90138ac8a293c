//! Network chaos between a `Cache` on the Redis store and a real
//! `redis-server`, through the test's own fault proxy (these machines
//! have no `tc netem`), under a mixed load of writers and `get_or_load`
//! readers (see `chaos_support::Load`):
//!
//! - a latency spike past the timeout: every failed call failed by the
//!   store's timeout, none hangs;
//! - lost connections and stalls: no hang, no stale read, no lost
//!   acknowledged write;
//! - a partition during writes: the writes report errors, and nothing
//!   acknowledged is lost once Redis is back;
//! - Redis restarted empty: the cache loads again, and no read returns a
//!   version older than one acknowledged before it began.
//!
//! Each prints its figures (`FIGURES ...`, gathered in
//! `docs/BENCHMARKS.md`).
#![cfg(feature = "redis")]

mod chaos_support;

use std::sync::Arc;
use std::time::Duration;

use cachex::store::redis::TimedOut;
use cachex::store::{RedisStore, Store};
use cachex::Cache;
use cachex_testkit::{FaultProxy, RedisServer};
use chaos_support::{eventually, Figures, Ledger, Load};

const KEYS: usize = 40;
const TIMEOUT: Duration = Duration::from_millis(150);

async fn cache_through(proxy: &FaultProxy, prefix: &str) -> (Cache<u64>, RedisStore<u64>) {
    let store: RedisStore<u64> = RedisStore::builder()
        .url(proxy.url())
        .prefix(prefix)
        .timeout(TIMEOUT)
        .build()
        .await
        .unwrap();
    let cache = Cache::builder()
        .store(store.clone())
        .default_ttl(Duration::from_secs(600))
        .build();
    (cache, store)
}

/// Every key in Redis holds at least its acknowledged version.
async fn nothing_acknowledged_is_lost(store: &RedisStore<u64>, ledger: &Ledger) {
    for key in 0..ledger.keys() {
        // Bytes the proxy still holds from the fault may delay the first
        // reads past the timeout: read until Redis answers.
        let deadline = std::time::Instant::now() + chaos_support::DEADLINE;
        let found = loop {
            match store.get(&key.to_string()).await {
                Ok(stored) => break stored.and_then(|s| s.envelope.into_value()),
                Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
            }
        };
        ledger.check_final(key, found).unwrap();
    }
}

/// Runs the load for `before`, then `fault` for `during`, then `heal`,
/// and the load until a call succeeds again plus `after`.
async fn scenario(
    figures: &Arc<Figures>,
    cache: &Cache<u64>,
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
    eventually("calls succeed again", || async {
        figures.recovered_after().is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.stop().await;
    figures.print();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_spike_every_call_is_bounded_by_the_timeout() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(&server.addr());
    let (cache, store) = cache_through(&proxy, "lat").await;
    let (figures, ledger) = (
        Arc::new(Figures::new(
            "redis: latency spike 150-250 ms (timeout 150 ms)",
        )),
        Arc::new(Ledger::new(KEYS)),
    );
    scenario(
        &figures,
        &cache,
        &ledger,
        || proxy.set_latency(Duration::from_millis(150), Duration::from_millis(100)),
        Duration::from_millis(800),
        || proxy.set_latency(Duration::ZERO, Duration::ZERO),
    )
    .await;
    let stats = store.stats();
    assert!(figures.errors() > 0 && stats.timeouts > 0, "{stats:?}");
    // Every failure was the store's own timeout: nothing else gave up, and
    // nothing waited past it (a call that hung would have failed the test).
    assert_eq!(
        stats.errors(),
        stats.timeouts + stats.connection_errors,
        "{stats:?}"
    );
    let err = {
        proxy.set_latency(Duration::from_millis(400), Duration::ZERO);
        let err = cache.get("0").await.unwrap_err();
        proxy.set_latency(Duration::ZERO, Duration::ZERO);
        err
    };
    let source = std::error::Error::source(&err).unwrap();
    assert_eq!(
        source.downcast_ref::<TimedOut>(),
        Some(&TimedOut { after: TIMEOUT })
    );
    assert_eq!(figures.stale_reads(), 0);
    nothing_acknowledged_is_lost(&store, &ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connections_and_stalls_lose_nothing_acknowledged() {
    let server = RedisServer::start();
    let proxy = Arc::new(FaultProxy::start(&server.addr()));
    let (cache, store) = cache_through(&proxy, "loss").await;
    let (figures, ledger) = (
        Arc::new(Figures::new(
            "redis: 1% of chunks kill their connection, 250 ms stalls",
        )),
        Arc::new(Ledger::new(KEYS)),
    );
    // Stalls of 250 ms every 500 ms while the loss lasts.
    let stalls = {
        let proxy = proxy.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                proxy.stall(Duration::from_millis(250));
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        (stop, thread)
    };
    scenario(
        &figures,
        &cache,
        &ledger,
        || proxy.set_loss(0.01),
        Duration::from_millis(1_500),
        || {
            proxy.set_loss(0.0);
            stalls.0.store(true, std::sync::atomic::Ordering::Relaxed);
        },
    )
    .await;
    stalls.1.join().unwrap();
    println!(
        "connections killed: {}; {:?}",
        proxy.connections_lost(),
        store.stats()
    );
    assert!(proxy.connections_lost() > 0, "the loss happened");
    assert_eq!(figures.stale_reads(), 0);
    nothing_acknowledged_is_lost(&store, &ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_during_writes_reports_errors_and_loses_nothing_acknowledged() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(&server.addr());
    let (cache, store) = cache_through(&proxy, "part").await;
    let (figures, ledger) = (
        Arc::new(Figures::new("redis: partition of 800 ms during writes")),
        Arc::new(Ledger::new(KEYS)),
    );
    scenario(
        &figures,
        &cache,
        &ledger,
        || proxy.cut(),
        Duration::from_millis(800),
        || proxy.restore(),
    )
    .await;
    assert!(figures.errors() > 0, "the writes reported the partition");
    assert_eq!(figures.stale_reads(), 0);
    nothing_acknowledged_is_lost(&store, &ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_the_cache_loads_again_and_nothing_stale_returns() {
    let mut server = RedisServer::start();
    let proxy = FaultProxy::start(&server.addr());
    let (cache, store) = cache_through(&proxy, "empty").await;
    let (figures, ledger) = (
        Arc::new(Figures::new("redis: restarted empty")),
        Arc::new(Ledger::new(KEYS)),
    );
    let loads_before = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let loads = loads_before.clone();
    let figures2 = figures.clone();
    scenario(
        &figures,
        &cache,
        &ledger,
        || {
            loads.store(figures2.loads(), std::sync::atomic::Ordering::SeqCst);
            server.kill();
            server.restart();
        },
        Duration::from_millis(200),
        || {},
    )
    .await;
    // Redis lost every key; the cache read them again from the database
    // (the loader), and never an older version than one acknowledged.
    assert!(
        figures.loads() > loads_before.load(std::sync::atomic::Ordering::SeqCst),
        "loads after the restart"
    );
    assert_eq!(figures.stale_reads(), 0);
    // What was written since the restart is there.
    for key in 0..KEYS {
        let found = store
            .get(&key.to_string())
            .await
            .unwrap()
            .and_then(|s| s.envelope.into_value());
        if let Some(found) = found {
            assert!(found <= ledger.attempted(key), "key {key}: {found}");
        }
    }
}
