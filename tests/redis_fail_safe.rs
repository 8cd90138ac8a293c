//! Fail-safe over a real Redis: the value is stored for its TTL plus
//! `max_stale`, hidden once its TTL passes, and served when the load that
//! should replace it fails. Redis keeps the time here, so the test waits
//! (briefly) in real time; it asserts no durations it did not set.
#![cfg(feature = "redis")]

mod hybrid_support;
mod redis_support;

use std::time::Duration;

use cachex::{Cache, Store};
use redis_support::{raw, raw_cmd, store, RedisServer};

const TTL: Duration = Duration::from_millis(300);
const MAX_STALE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn an_expired_value_is_kept_in_redis_and_served_when_the_load_fails() {
    let server = RedisServer::start();
    let redis = store::<String>(&server, "fs").await;
    expired_value_is_kept_and_served(&server, redis).await;
}

#[tokio::test]
async fn the_same_holds_through_the_hybrid_store() {
    let server = RedisServer::start();
    let hybrid = hybrid_support::hybrid::<String>(&server, "fs").await;
    expired_value_is_kept_and_served(&server, hybrid.build().await.unwrap()).await;
}

/// Loads `k` through a fail-safe cache over `store` (prefix `fs`), lets
/// its TTL pass, and fails the next load.
async fn expired_value_is_kept_and_served(
    server: &RedisServer,
    store: impl Store<String> + 'static,
) {
    let cache: Cache<String> = Cache::builder()
        .store(store)
        .default_ttl(TTL)
        .jitter(0.0)
        .fail_safe(MAX_STALE)
        .build();
    let up = || async { Ok::<_, std::io::Error>("v1".to_string()) };
    assert_eq!(cache.get_or_load("k", up).await.unwrap(), "v1");
    let mut conn = raw(server).await;
    let pttl: i64 = raw_cmd(&mut conn, &[b"PTTL", b"fs:k"]).await;
    let physical = u128::try_from(pttl).unwrap();
    assert!(
        physical > MAX_STALE.as_millis(),
        "stored for TTL + max_stale: {pttl} ms"
    );
    assert!(physical <= (MAX_STALE + TTL).as_millis());

    tokio::time::sleep(TTL + Duration::from_millis(50)).await;
    assert_eq!(cache.get("k").await.unwrap(), None, "hidden past its TTL");
    assert_eq!(cache.remaining_ttl("k").await.unwrap(), None);

    let down = || async { Err::<String, _>(std::io::Error::other("database down")) };
    assert_eq!(cache.get_or_load("k", down).await.unwrap(), "v1");
    // Re-armed for the throttle period (10 s by default).
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v1"));
    let stats = cache.stats();
    assert_eq!((stats.stale_served_on_failure, stats.load_errors), (1, 1));
}
