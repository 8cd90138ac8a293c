//! Redis going away: killed or frozen mid-test, calls fail with `Store`
//! errors within the timeout instead of hanging, and the same store (and
//! cache) works again once a server is back on the same port.
#![cfg(feature = "redis")]

mod redis_support;

use std::time::Duration;

use cachex::store::redis::{RedisStore, TimedOut};
use cachex::store::{Envelope, Store};
use cachex::{Cache, StoreOp};
use cachex_testkit::FaultProxy;
use redis_support::{builder, source, RedisServer};

const TIMEOUT: Duration = Duration::from_millis(300);
/// Only guards against a hang (the test fails instead of stalling CI); far
/// above the store's own timeout, so scheduling noise cannot trip it.
const HANG_GUARD: Duration = Duration::from_secs(20);

async fn guarded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// Retries `set` until the store reaches the server again (it reconnects in
/// the background, with backoff).
async fn until_back(store: &RedisStore<u64>) {
    for _ in 0..200 {
        if store.set("probe", Envelope::found(0), None).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the store never reconnected: {:?}", store.stats());
}

#[tokio::test]
async fn a_killed_server_gives_store_errors_and_the_store_recovers_on_restart() {
    let mut server = RedisServer::start();
    let store: RedisStore<u64> = builder(&server, "f")
        .timeout(TIMEOUT)
        .build()
        .await
        .unwrap();
    store.set("k", Envelope::found(1), None).await.unwrap();

    server.kill();
    for _ in 0..3 {
        let err = guarded("get", store.get("k")).await.unwrap_err();
        assert_eq!(err.store_op(), Some(StoreOp::Get));
        assert_eq!(err.key(), Some("k"));
        let err = guarded("set", store.set("k", Envelope::found(2), None))
            .await
            .unwrap_err();
        assert_eq!(err.store_op(), Some(StoreOp::Set));
        let err = guarded("delete", store.delete("k")).await.unwrap_err();
        assert_eq!(err.store_op(), Some(StoreOp::Delete));
        let err = guarded("remaining_ttl", store.remaining_ttl("k"))
            .await
            .unwrap_err();
        assert_eq!(err.store_op(), Some(StoreOp::RemainingTtl));
        let err = guarded("clear", store.clear()).await.unwrap_err();
        assert_eq!(err.store_op(), Some(StoreOp::Clear));
        assert_eq!(err.key(), None);
    }
    let stats = store.stats();
    assert!(stats.connection_errors + stats.timeouts >= 15, "{stats:?}");

    server.restart();
    guarded("reconnect", until_back(&store)).await;
    // A fresh server: the old entry is gone, new ones work.
    assert!(store.get("k").await.unwrap().is_none());
    store.set("k", Envelope::found(3), None).await.unwrap();
    assert_eq!(
        store.get("k").await.unwrap().unwrap().envelope.into_value(),
        Some(3)
    );
}

#[tokio::test]
async fn a_frozen_server_times_out_and_the_store_resumes_with_it() {
    let server = RedisServer::start();
    let store: RedisStore<u64> = builder(&server, "f")
        .timeout(TIMEOUT)
        .build()
        .await
        .unwrap();
    store.set("k", Envelope::found(1), None).await.unwrap();

    server.pause();
    let err = guarded("get", store.get("k")).await.unwrap_err();
    server.resume();
    assert_eq!(err.store_op(), Some(StoreOp::Get));
    assert_eq!(err.key(), Some("k"));
    assert_eq!(source::<TimedOut>(&err).after, TIMEOUT);
    assert!(source::<TimedOut>(&err)
        .to_string()
        .contains("timed out after"));
    assert_eq!(store.stats().timeouts, 1);

    guarded("resume", until_back(&store)).await;
    assert_eq!(
        store.get("k").await.unwrap().unwrap().envelope.into_value(),
        Some(1)
    );
}

#[tokio::test]
async fn a_cache_on_redis_keeps_loading_through_an_outage() {
    let mut server = RedisServer::start();
    let store: RedisStore<u64> = builder(&server, "f")
        .timeout(TIMEOUT)
        .build()
        .await
        .unwrap();
    let cache: Cache<u64> = Cache::builder().store(store.clone()).build();
    assert_eq!(
        cache
            .get_or_load("k", || async { Ok::<_, std::io::Error>(1) })
            .await
            .unwrap(),
        1
    );

    server.kill();
    // The store is down: the loader answers, and the failures are counted.
    let value = guarded(
        "get_or_load",
        cache.get_or_load("k", || async { Ok::<_, std::io::Error>(2) }),
    )
    .await
    .unwrap();
    assert_eq!(value, 2);
    assert!(cache.stats().store_errors >= 1);
    assert!(guarded("get", cache.get("k")).await.unwrap_err().is_store());

    server.restart();
    guarded("reconnect", until_back(&store)).await;
    let value = cache
        .get_or_load("k", || async { Ok::<_, std::io::Error>(3) })
        .await
        .unwrap();
    assert_eq!(value, 3);
    assert_eq!(cache.get("k").await.unwrap(), Some(3));
}

/// Each way of failing to connect is reported as itself, at once: not as
/// a timeout (the timeout here is far longer than any of these takes).
#[tokio::test]
async fn connection_failures_say_what_happened() {
    let connect = |url: String| async move {
        let err = RedisStore::<u64>::builder()
            .url(url)
            .timeout(Duration::from_secs(30))
            .build()
            .await
            .unwrap_err();
        assert_eq!(err.store_op(), Some(StoreOp::Connect), "{err:?}");
        let source = std::error::Error::source(&err)
            .expect("a source")
            .to_string();
        assert!(!source.contains("timed out"), "{source}");
        source.to_lowercase()
    };
    let mut gone = RedisServer::start();
    let url = gone.url();
    gone.kill();
    assert!(connect(url).await.contains("refused"));
    assert!(connect("redis://cachex-no-such-host.invalid:6379/".into())
        .await
        .contains("lookup"));
    let locked = RedisServer::start_with_args(&["--requirepass", "secret"]);
    let wrong = locked.url().replace("redis://", "redis://:wrong@");
    assert!(connect(wrong).await.contains("auth"));
    assert!(
        connect(locked.url()).await.contains("auth"),
        "no password given"
    );
    let right = locked.url().replace("redis://", "redis://:secret@");
    RedisStore::<u64>::builder()
        .url(right)
        .build()
        .await
        .unwrap();
}

/// A value a load read from the database is written once only: resent
/// after its connection died, it could land after a `set` of the same key
/// sent later on the new connection, and keep the older value until its
/// TTL (`chaos_redis` met that as a stale read). A `set` is sent again.
#[tokio::test]
async fn a_loaded_value_is_not_resent_after_its_connection_died_and_a_set_is() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(&server.addr());
    let store: RedisStore<u64> = RedisStore::builder()
        .url(proxy.url())
        .prefix("resend")
        .build()
        .await
        .unwrap();
    let loaded = || Envelope::found(2).with_load_time(Duration::from_millis(3));
    let mut refused = 0;
    for _ in 0..5 {
        store.set("warm", Envelope::found(1), None).await.unwrap();
        proxy.drop_connections();
        if store.set("loaded", loaded(), None).await.is_err() {
            refused += 1;
        }
        store.set("warm", Envelope::found(1), None).await.unwrap();
        proxy.drop_connections();
        store
            .set("plain", Envelope::found(3), None)
            .await
            .expect("a set is sent again on the new connection");
    }
    assert!(refused > 0, "the loaded value was sent again every time");
}
