//! A latency spike between a hybrid store and Redis (through a proxy of
//! the test's own, since these machines have no `tc netem`): every call
//! that needs Redis is bounded by its timeout, the breaker opens after its
//! threshold and spares Redis while open, L1 keeps answering at once, and
//! once the network is fast again the breaker closes and L2 is used again.
#![cfg(feature = "redis")]

mod hybrid_support;

use std::time::Duration;

use cachex::store::hybrid::{BreakerState, HybridStore};
use cachex::store::redis::TimedOut;
use cachex::store::{Envelope, RedisStore, Store};
use cachex::Cache;
use cachex_testkit::FaultProxy;
use hybrid_support::{eventually, guarded, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_spike_is_bounded_by_the_timeout_and_opens_the_breaker() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(&server.addr());
    let l2: RedisStore<u64> = RedisStore::builder()
        .url(proxy.url())
        .prefix("lat")
        .timeout(Duration::from_millis(150))
        .build()
        .await
        .unwrap();
    let store = HybridStore::builder(l2)
        .l2_timeout(Duration::from_millis(100))
        .breaker(3, Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let cache: Cache<u64> = Cache::builder().store(store.clone()).build();
    cache.set("held", 1, cachex::Ttl::Default).await.unwrap();

    // 300 to 400 ms each way: far beyond both timeouts.
    proxy.set_latency(Duration::from_millis(300), Duration::from_millis(100));
    // The Redis store's own call gives up at its timeout, and says so.
    let err = guarded("a slow read", store.l2().get("held"))
        .await
        .unwrap_err();
    let source = std::error::Error::source(&err).expect("a source");
    assert_eq!(
        source.downcast_ref::<TimedOut>(),
        Some(&TimedOut {
            after: Duration::from_millis(150)
        })
    );
    // Misses through the cache: each L2 read times out, the loader answers.
    for i in 0..3u64 {
        let key = format!("cold{i}");
        let got = guarded(
            "a miss",
            cache.get_or_load(&key, move || async move { Ok::<_, std::io::Error>(i) }),
        )
        .await
        .unwrap();
        assert_eq!(got, i);
    }
    assert_ne!(
        store.breaker_state(),
        BreakerState::Closed,
        "3 timeouts open it"
    );
    let open = store.stats();
    assert!(open.l2_errors >= 3, "{open:?}");
    // While open: misses never reach Redis, hits come from L1.
    for i in 3..10u64 {
        let key = format!("cold{i}");
        cache
            .get_or_load(&key, move || async move { Ok::<_, std::io::Error>(i) })
            .await
            .unwrap();
    }
    assert_eq!(
        guarded("an L1 hit", cache.get("held")).await.unwrap(),
        Some(1)
    );
    let still = store.stats();
    assert!(still.l2_skipped >= 7, "{still:?}");
    assert_eq!(
        cache.stats().store_errors,
        0,
        "non-strict: no errors reach callers"
    );

    // The network recovers: the probe closes the breaker; L2 answers again.
    proxy.set_latency(Duration::ZERO, Duration::ZERO);
    eventually("the breaker closes", || async {
        store.breaker_state() == BreakerState::Closed
    })
    .await;
    store
        .l2()
        .set("fresh", Envelope::found(7), None)
        .await
        .unwrap();
    eventually("a read reaches L2 again", || async {
        store
            .get("fresh")
            .await
            .unwrap()
            .and_then(|s| s.envelope.into_value())
            == Some(7)
    })
    .await;
}
