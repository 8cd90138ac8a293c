//! The Redis store against a real `redis-server`: the `Store` contract (TTL,
//! delete, remaining TTL), prefixes and `clear`, size limits, and a whole
//! `Cache` running on it.
#![cfg(feature = "redis")]

mod redis_support;

use std::time::Duration;

use cachex::codec::FrameError;
use cachex::store::redis::{ConfigError, RedisStore};
use cachex::store::{Envelope, Store};
use cachex::{Cache, Error, StoreOp, Ttl};
use redis_support::{builder, raw, raw_cmd, source, store, RedisServer};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn set_with_ttl_applies_px_and_get_reports_pttl() {
    let server = RedisServer::start();
    let store: RedisStore<String> = store(&server, "t").await;
    store
        .set("k", Envelope::found("v".to_string()), Some(MINUTE))
        .await
        .unwrap();

    let stored = store.get("k").await.unwrap().unwrap();
    assert_eq!(stored.envelope.value().map(String::as_str), Some("v"));
    let left = stored.remaining_ttl.expect("has a TTL");
    assert!(left > Duration::ZERO && left <= MINUTE, "{left:?}");

    // Under the prefix, with the expiry Redis itself reports.
    let mut conn = raw(&server).await;
    let pttl: i64 = raw_cmd(&mut conn, &[b"PTTL", b"t:k"]).await;
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");
    let left = store.remaining_ttl("k").await.unwrap().unwrap().unwrap();
    assert!(left > Duration::ZERO && left <= MINUTE);
}

#[tokio::test]
async fn set_without_ttl_never_expires() {
    let server = RedisServer::start();
    let store: RedisStore<u64> = store(&server, "t").await;
    store.set("k", Envelope::found(7), None).await.unwrap();
    let stored = store.get("k").await.unwrap().unwrap();
    assert_eq!(stored.envelope.into_value(), Some(7));
    assert_eq!(stored.remaining_ttl, None);
    assert_eq!(store.remaining_ttl("k").await.unwrap(), Some(None));
    let mut conn = raw(&server).await;
    let pttl: i64 = raw_cmd(&mut conn, &[b"PTTL", b"t:k"]).await;
    assert_eq!(pttl, -1);
}

#[tokio::test]
async fn a_ttl_under_a_millisecond_still_expires() {
    let server = RedisServer::start();
    let store: RedisStore<u64> = store(&server, "t").await;
    store
        .set("k", Envelope::found(1), Some(Duration::from_nanos(1)))
        .await
        .unwrap();
    let mut conn = raw(&server).await;
    let pttl: i64 = raw_cmd(&mut conn, &[b"PTTL", b"t:k"]).await;
    // Gone already, or about to: never "no expiry" (-1).
    assert!(pttl == -2 || (0..=1).contains(&pttl), "{pttl}");
}

#[tokio::test]
async fn expired_entries_are_not_returned() {
    let server = RedisServer::start();
    let store: RedisStore<u64> = store(&server, "t").await;
    store
        .set("k", Envelope::found(1), Some(Duration::from_millis(20)))
        .await
        .unwrap();
    // Redis expires on its own clock; wait until it says the key is gone.
    let mut conn = raw(&server).await;
    for _ in 0..500 {
        let exists: i64 = raw_cmd(&mut conn, &[b"EXISTS", b"t:k"]).await;
        if exists == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(store.get("k").await.unwrap().is_none());
    assert_eq!(store.remaining_ttl("k").await.unwrap(), None);
}

#[tokio::test]
async fn delete_answers_whether_the_key_existed() {
    let server = RedisServer::start();
    let store: RedisStore<u64> = store(&server, "t").await;
    store.set("k", Envelope::found(1), None).await.unwrap();
    assert!(store.delete("k").await.unwrap());
    assert!(!store.delete("k").await.unwrap());
    assert!(store.get("k").await.unwrap().is_none());
}

#[tokio::test]
async fn negative_entries_round_trip() {
    let server = RedisServer::start();
    let store: RedisStore<String> = store(&server, "t").await;
    let entry = Envelope::<String>::not_found().with_load_time(Duration::from_millis(3));
    store.set("k", entry.clone(), Some(MINUTE)).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap().envelope, entry);
}

#[tokio::test]
async fn prefixes_isolate_get_delete_and_clear() {
    let server = RedisServer::start();
    let a: RedisStore<String> = store(&server, "a").await;
    let ab: RedisStore<String> = store(&server, "ab").await;
    // Glob characters in a prefix match only themselves.
    let star: RedisStore<String> = store(&server, "a*").await;
    for (s, v) in [(&a, "from a"), (&ab, "from ab"), (&star, "from a*")] {
        s.set("k", Envelope::found(v.to_string()), None)
            .await
            .unwrap();
    }
    let mut conn = raw(&server).await;
    let _: () = raw_cmd(&mut conn, &[b"SET", b"k", b"bare"]).await;

    let value = |s: &RedisStore<String>| {
        let s = s.clone();
        async move {
            s.get("k")
                .await
                .unwrap()
                .and_then(|e| e.envelope.into_value())
        }
    };
    assert_eq!(value(&a).await.as_deref(), Some("from a"));
    assert_eq!(value(&ab).await.as_deref(), Some("from ab"));

    assert!(a.delete("k").await.unwrap());
    assert_eq!(value(&a).await, None);
    assert_eq!(value(&ab).await.as_deref(), Some("from ab"));

    star.clear().await.unwrap();
    assert_eq!(value(&star).await, None);
    assert_eq!(value(&ab).await.as_deref(), Some("from ab"));

    a.set("k", Envelope::found("again".into()), None)
        .await
        .unwrap();
    a.clear().await.unwrap();
    assert_eq!(value(&a).await, None);
    assert_eq!(value(&ab).await.as_deref(), Some("from ab"));
    let bare: String = raw_cmd(&mut conn, &[b"GET", b"k"]).await;
    assert_eq!(bare, "bare");
}

#[tokio::test]
async fn clear_removes_a_prefix_over_many_scan_batches() {
    let server = RedisServer::start();
    let other: RedisStore<u64> = store(&server, "other").await;
    let store: RedisStore<u64> = store(&server, "many").await;
    // Several SCAN batches' worth (the store asks 1,000 keys per SCAN).
    for i in 0..3_500u64 {
        store
            .set(&i.to_string(), Envelope::found(i), Some(MINUTE))
            .await
            .unwrap();
    }
    for i in 0..50u64 {
        other
            .set(&i.to_string(), Envelope::found(i), None)
            .await
            .unwrap();
    }
    store.clear().await.unwrap();
    let mut conn = raw(&server).await;
    let left: i64 = raw_cmd(&mut conn, &[b"DBSIZE"]).await;
    assert_eq!(left, 50);
    assert!(other.get("7").await.unwrap().is_some());
}

#[tokio::test]
async fn clear_without_a_prefix_is_refused_unless_allowed() {
    let server = RedisServer::start();
    let bare: RedisStore<u64> = RedisStore::connect(server.url()).await.unwrap();
    bare.set("k", Envelope::found(1), None).await.unwrap();
    let err = bare.clear().await.unwrap_err();
    assert_eq!(err.store_op(), Some(StoreOp::Clear));
    assert!(source::<ConfigError>(&err)
        .to_string()
        .contains("allow_flushdb"));
    assert!(bare.get("k").await.unwrap().is_some());

    let flushing: RedisStore<u64> = RedisStore::builder()
        .url(server.url())
        .allow_flushdb(true)
        .build()
        .await
        .unwrap();
    flushing.clear().await.unwrap();
    assert!(bare.get("k").await.unwrap().is_none());
}

#[tokio::test]
async fn bad_configurations_are_refused_when_building() {
    let server = RedisServer::start();
    for prefix in ["a:b", ""] {
        let err = builder::<u64>(&server, prefix).build().await.unwrap_err();
        assert_eq!(err.store_op(), Some(StoreOp::Connect), "{prefix}");
        source::<ConfigError>(&err);
    }
    let err = RedisStore::<u64>::builder().build().await.unwrap_err();
    source::<ConfigError>(&err);
    #[cfg(not(feature = "tls"))]
    {
        let err = RedisStore::<u64>::connect("rediss://127.0.0.1:1/")
            .await
            .unwrap_err();
        assert!(source::<ConfigError>(&err).to_string().contains("`tls`"));
    }
}

#[tokio::test]
async fn a_server_that_is_not_there_fails_to_connect_within_the_timeout() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.kill();
    let err = RedisStore::<u64>::builder()
        .url(url)
        .timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap_err();
    assert!(err.is_store(), "{err:?}");
    assert_eq!(err.store_op(), Some(StoreOp::Connect));
}

#[tokio::test]
async fn oversized_values_are_refused_before_sending() {
    let server = RedisServer::start();
    let store: RedisStore<String> = builder(&server, "t")
        .max_value_size(1024)
        .build()
        .await
        .unwrap();
    let err = store
        .set("big", Envelope::found("x".repeat(10_000)), None)
        .await
        .unwrap_err();
    assert_eq!(err.store_op(), Some(StoreOp::Set));
    assert_eq!(err.key(), Some("big"));
    assert!(matches!(
        source::<FrameError>(&err),
        FrameError::TooLarge { max: 1024, .. }
    ));
    let mut conn = raw(&server).await;
    let exists: i64 = raw_cmd(&mut conn, &[b"EXISTS", b"t:big"]).await;
    assert_eq!(exists, 0);
    assert_eq!(store.stats().oversized, 1);
    // Values under the limit still go through.
    store
        .set("small", Envelope::found("x".repeat(100)), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_key_of_another_redis_type_is_a_codec_error() {
    let server = RedisServer::start();
    let store: RedisStore<String> = store(&server, "t").await;
    let mut conn = raw(&server).await;
    let _: i64 = raw_cmd(&mut conn, &[b"LPUSH", b"t:list", b"x"]).await;
    let err = store.get("list").await.unwrap_err();
    assert!(err.is_codec(), "{err:?}");
    assert_eq!(err.key(), Some("list"));
    assert_eq!(store.stats().codec_errors, 1);
}

#[tokio::test]
async fn a_cache_runs_on_redis() {
    let server = RedisServer::start();
    let store: RedisStore<String> = store(&server, "cache").await;
    let cache: Cache<String> = Cache::builder()
        .store(store.clone())
        .default_ttl(MINUTE)
        .negative_ttl(Duration::from_secs(30))
        .build();

    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..3 {
        let calls = calls.clone();
        let name = cache
            .get_or_load("user:7", move || async move {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, std::io::Error>("alice".to_string())
            })
            .await
            .unwrap();
        assert_eq!(name, "alice");
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Jittered default TTL: at most the default.
    let left = cache
        .remaining_ttl("user:7")
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(left <= MINUTE && left > Duration::ZERO);

    // Negative caching: the "not found" is stored in Redis too.
    let absent = || async { Ok::<Option<String>, std::io::Error>(None) };
    assert_eq!(
        cache
            .get_or_load_optional("user:404", absent)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        cache
            .get_or_load_optional("user:404", absent)
            .await
            .unwrap(),
        None
    );
    assert_eq!(cache.stats().negative_hits, 1);
    let negative = store.get("user:404").await.unwrap().unwrap();
    assert!(negative.envelope.is_not_found());
    assert!(negative.remaining_ttl.unwrap() <= Duration::from_secs(30));

    // A second cache on the same server and prefix sees the same entries.
    let other: Cache<String> = Cache::builder().store(store.clone()).build();
    assert_eq!(other.get("user:7").await.unwrap().as_deref(), Some("alice"));

    cache.set("user:8", "bob".into(), Ttl::Never).await.unwrap();
    assert_eq!(cache.remaining_ttl("user:8").await.unwrap(), Some(None));
    assert!(cache.delete("user:8").await.unwrap());
    cache.clear().await.unwrap();
    assert_eq!(other.get("user:7").await.unwrap(), None);
}

#[tokio::test]
async fn store_errors_name_the_operation_and_key() {
    let mut server = RedisServer::start();
    let store: RedisStore<u64> = builder(&server, "t")
        .timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    server.kill();
    let err: Error = store.get("k").await.unwrap_err();
    assert_eq!(err.store_op(), Some(StoreOp::Get));
    assert_eq!(err.key(), Some("k"));
    assert!(err.to_string().contains("`k`"), "{err}");
}

#[tokio::test]
async fn cache_stats_report_redis_as_tier_l2() {
    let server = RedisServer::start();
    let store: RedisStore<u64> = store(&server, "stats").await;
    let cache: Cache<u64> = Cache::builder().store(store).build();
    cache.set("a", 1, Ttl::Never).await.unwrap();
    assert_eq!(cache.get("a").await.unwrap(), Some(1));
    assert_eq!(cache.get("b").await.unwrap(), None);
    let loaded = cache
        .get_or_load("c", || async { Ok::<_, std::io::Error>(3) })
        .await
        .unwrap();
    assert_eq!(loaded, 3);

    let stats = cache.stats();
    assert!(stats.store.l1.is_none(), "Redis has one tier");
    let l2 = stats.store.l2.expect("Redis reports tier l2");
    // `get a` hit; `get b` and the read before the load of `c` missed.
    assert_eq!((l2.hits, l2.misses, l2.errors), (1, 2, 0));
    assert_eq!(
        l2.entries, None,
        "a shared server's size is not ours to count"
    );
}
