//! The cache handle's plain operations, errors, stats and interfaces.

mod loading_support;

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use cachex::store::Stored;
use cachex::{
    AsyncCache, AsyncCacheExt, Cache, Envelope, Error, MemoryStore, MockCache, Stats, StoreOp, Ttl,
    MAX_KEY_LEN,
};
use loading_support::{Calls, ConnectionRefused, DownStore};
use tokio::time::advance;

fn cache() -> Cache<String> {
    Cache::builder().build()
}

#[tokio::test(start_paused = true)]
async fn get_set_delete_clear() {
    let cache = cache();
    assert_eq!(cache.get("a").await.unwrap(), None, "a miss is Ok(None)");
    cache.set("a", "1".into(), Ttl::Default).await.unwrap();
    cache.set("b", "2".into(), Ttl::Default).await.unwrap();
    assert_eq!(cache.get("a").await.unwrap().as_deref(), Some("1"));

    cache.set("a", "1b".into(), Ttl::Default).await.unwrap();
    assert_eq!(cache.get("a").await.unwrap().as_deref(), Some("1b"));

    assert!(cache.delete("a").await.unwrap());
    assert!(!cache.delete("a").await.unwrap());
    assert_eq!(cache.get("a").await.unwrap(), None);

    cache.clear().await.unwrap();
    assert_eq!(cache.get("b").await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn ttl_choices() {
    let cache: Cache<u8> = Cache::builder()
        .default_ttl(Duration::from_secs(100))
        .jitter(0.0)
        .build();
    cache.set("default", 1, Ttl::Default).await.unwrap();
    cache.set("never", 2, Ttl::Never).await.unwrap();
    cache
        .set("exact", 3, Ttl::After(Duration::from_secs(7)))
        .await
        .unwrap();
    assert_eq!(
        cache.remaining_ttl("default").await.unwrap(),
        Some(Some(Duration::from_secs(100)))
    );
    assert_eq!(cache.remaining_ttl("never").await.unwrap(), Some(None));
    assert_eq!(
        cache.remaining_ttl("exact").await.unwrap(),
        Some(Some(Duration::from_secs(7)))
    );
    assert_eq!(cache.remaining_ttl("absent").await.unwrap(), None);

    advance(Duration::from_secs(7)).await;
    assert_eq!(cache.get("exact").await.unwrap(), None);
    assert_eq!(cache.get("default").await.unwrap(), Some(1));
    advance(Duration::from_secs(93)).await;
    assert_eq!(cache.get("default").await.unwrap(), None);
    advance(Duration::from_secs(1_000_000)).await;
    assert_eq!(cache.get("never").await.unwrap(), Some(2));
}

#[tokio::test]
async fn keys_are_checked() {
    let cache = cache();
    assert!(matches!(cache.get("").await, Err(Error::EmptyKey)));
    let long = "k".repeat(MAX_KEY_LEN + 1);
    let error = cache
        .set(&long, "v".into(), Ttl::Default)
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::KeyTooLong { len, max } if len == MAX_KEY_LEN + 1 && max == MAX_KEY_LEN)
    );
    assert!(error.is_invalid_key());
    assert_eq!(
        error.to_string(),
        "cache key is 4097 bytes long; the limit is 4096"
    );
    let error = cache.get_or_load("", || async { Ok::<_, std::io::Error>("v".to_string()) });
    assert_eq!(error.await.unwrap_err().to_string(), "cache key is empty");

    let longest = "k".repeat(MAX_KEY_LEN);
    cache.set(&longest, "v".into(), Ttl::Default).await.unwrap();
    assert!(cache.get(&longest).await.unwrap().is_some());
}

#[tokio::test]
async fn every_operation_fails_once_closed() {
    let cache = cache();
    cache.set("a", "1".into(), Ttl::Default).await.unwrap();
    assert!(!cache.is_closed());
    cache.close().await;
    assert!(cache.is_closed());
    assert!(cache.get("a").await.unwrap_err().is_closed());
    assert!(cache
        .set("a", "2".into(), Ttl::Default)
        .await
        .unwrap_err()
        .is_closed());
    assert!(cache.delete("a").await.unwrap_err().is_closed());
    assert!(cache.clear().await.unwrap_err().is_closed());
    assert!(cache.remaining_ttl("a").await.unwrap_err().is_closed());
    let calls = Calls::default();
    let loaded = cache.get_or_load("a", calls.returning("3".to_string(), Duration::ZERO));
    assert!(loaded.await.unwrap_err().is_closed());
    assert_eq!(calls.get(), 0);
    assert_eq!(Error::Closed.to_string(), "the cache is closed");
    // Closed wins over a bad key.
    assert!(cache.get("").await.unwrap_err().is_closed());
}

#[tokio::test(start_paused = true)]
async fn stats_count_what_happened() {
    let cache = cache();
    cache.get("a").await.unwrap();
    cache.set("a", "1".into(), Ttl::Default).await.unwrap();
    cache.get("a").await.unwrap();
    let calls = Calls::default();
    cache
        .get_or_load(
            "b",
            calls.returning("2".to_string(), Duration::from_millis(3)),
        )
        .await
        .unwrap();
    cache
        .get_or_load(
            "b",
            calls.returning("2".to_string(), Duration::from_millis(3)),
        )
        .await
        .unwrap();
    cache
        .get_or_load_optional("c", || async { Ok::<_, std::io::Error>(None) })
        .await
        .unwrap();
    cache.get("c").await.unwrap();

    let stats = cache.stats();
    assert_eq!((stats.hits, stats.negative_hits, stats.misses), (2, 1, 3));
    assert_eq!((stats.loads, stats.load_errors), (2, 0));
    assert_eq!(stats.loader_calls(), 2);
    assert_eq!(stats.load_time, Duration::from_millis(3));
    assert_eq!(stats.mean_load_time(), Some(Duration::from_micros(1500)));
    assert!((stats.hit_ratio() - 0.5).abs() < 1e-9);
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let cache: Cache<u8> = Cache::builder().metrics(false).build();
    cache.set("a", 1, Ttl::Default).await.unwrap();
    cache.get("a").await.unwrap();
    cache.get("b").await.unwrap();
    // The cache's own counters stay 0; its store still reports its own.
    let mut own = cache.stats();
    own.store = cachex::StoreStats::default();
    assert_eq!(own, Stats::default());
}

#[tokio::test]
async fn a_store_failure_is_reported_with_operation_and_key() {
    let cache: Cache<u8> = Cache::builder().store(DownStore).build();
    let error = cache.get("user:1").await.unwrap_err();
    assert!(error.is_store());
    assert_eq!(error.store_op(), Some(StoreOp::Get));
    assert_eq!(error.key(), Some("user:1"));
    assert_eq!(error.to_string(), "cache store failed to get key `user:1`");
    assert!(error
        .source()
        .unwrap()
        .downcast_ref::<ConnectionRefused>()
        .is_some());

    let error = cache.clear().await.unwrap_err();
    assert_eq!(
        (error.store_op(), error.key()),
        (Some(StoreOp::Clear), None)
    );
    assert_eq!(error.to_string(), "cache store failed to clear");
    let error = cache.remaining_ttl("k").await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "cache store failed to read the time-to-live of key `k`"
    );
    assert!(cache
        .set("k", 1, Ttl::Default)
        .await
        .unwrap_err()
        .is_store());
    assert!(cache.delete("k").await.unwrap_err().is_store());
}

#[tokio::test]
async fn get_or_load_survives_a_store_outage() {
    let cache: Cache<u8> = Cache::builder().store(DownStore).build();
    let calls = Calls::default();
    let value = cache
        .get_or_load("k", calls.returning(9, Duration::ZERO))
        .await;
    assert_eq!(value.unwrap(), 9, "the loader still answers");
    assert_eq!(calls.get(), 1);
    assert_eq!(
        cache.stats().store_errors,
        2,
        "the failed read and the failed write"
    );
}

#[tokio::test]
async fn errors_are_cloneable_and_constructible_by_backends() {
    let error = Error::codec("k", "invalid utf-8");
    let copy = error.clone();
    assert!(copy.is_codec());
    assert_eq!(copy.key(), Some("k"));
    assert_eq!(
        copy.to_string(),
        "could not encode or decode the cached value of key `k`"
    );
    assert_eq!(copy.source().unwrap().to_string(), "invalid utf-8");
    assert!(!copy.is_loader() && !copy.is_store() && !copy.is_closed());
    assert_eq!(copy.store_op(), None);
}

#[tokio::test(start_paused = true)]
async fn a_custom_store_and_a_shared_store() {
    let store = Arc::new(MemoryStore::new(100));
    let first: Cache<u8> = Cache::builder().store(store.clone()).build();
    let second: Cache<u8> = Cache::builder().store(store.clone()).build();
    first.set("k", 1, Ttl::Default).await.unwrap();
    assert_eq!(second.get("k").await.unwrap(), Some(1));
    assert_eq!(store.engine().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn loads_record_their_duration_in_the_envelope() {
    let store = MemoryStore::new(100);
    let cache: Cache<u8> = Cache::builder().store(store.clone()).jitter(0.0).build();
    let calls = Calls::default();
    cache
        .get_or_load("k", calls.returning(1, Duration::from_millis(40)))
        .await
        .unwrap();
    let (envelope, ttl) = store.engine().get_with_ttl("k").unwrap();
    assert_eq!(
        envelope,
        Envelope::found(1).with_load_time(Duration::from_millis(40))
    );
    assert_eq!(ttl, Some(cachex::DEFAULT_TTL));
}

#[test]
fn envelopes_round_trip_through_serde() {
    let found = Envelope::found(vec![1u8, 2]).with_load_time(Duration::from_millis(5));
    let json = serde_json::to_string(&found).unwrap();
    assert_eq!(
        serde_json::from_str::<Envelope<Vec<u8>>>(&json).unwrap(),
        found
    );

    let missing = Envelope::<String>::not_found();
    let json = serde_json::to_string(&missing).unwrap();
    let back: Envelope<String> = serde_json::from_str(&json).unwrap();
    assert!(back.is_not_found());
    // Entries written without a load time still decode.
    let bare: Envelope<u8> = serde_json::from_str(r#"{"value":3}"#).unwrap();
    assert_eq!(bare, Envelope::found(3));
}

#[test]
fn stored_is_plain_data() {
    let stored = Stored {
        envelope: Envelope::found(1),
        remaining_ttl: None,
    };
    assert_eq!(stored.clone(), stored);
}

#[test]
fn futures_are_send_so_they_can_be_spawned() {
    fn assert_send<T: Send>(_: &T) {}
    let cache = cache();
    assert_send(&cache.get("k"));
    assert_send(&cache.set("k", String::new(), Ttl::Default));
    assert_send(&cache.get_or_load("k", || async { Ok::<_, std::io::Error>(String::new()) }));
    assert_send(&cache.close());
    fn assert_sync<T: Send + Sync + Clone>() {}
    assert_sync::<Cache<String>>();
    assert_sync::<MockCache<String>>();
}

/// Code that takes its cache by generics.
async fn greeting<C: AsyncCache<String>>(cache: &C, id: u32) -> cachex::Result<String> {
    cache
        .get_or_load(&format!("greeting:{id}"), move || async move {
            Ok::<_, std::io::Error>(format!("hello {id}"))
        })
        .await
}

/// Code that takes its cache as a trait object.
struct Service {
    cache: Arc<dyn AsyncCache<String>>,
}

impl Service {
    async fn greeting(&self, id: u32) -> cachex::Result<String> {
        greeting(&self.cache, id).await
    }

    async fn forget(&self, id: u32) -> cachex::Result<bool> {
        self.cache.delete(&format!("greeting:{id}")).await
    }
}

#[tokio::test]
async fn the_real_cache_and_the_mock_are_interchangeable() {
    let real = cache();
    let mock = MockCache::new();
    assert_eq!(greeting(&real, 1).await.unwrap(), "hello 1");
    assert_eq!(greeting(&mock, 1).await.unwrap(), "hello 1");

    for cache in [
        Arc::new(real.clone()) as Arc<dyn AsyncCache<String>>,
        Arc::new(mock.clone()),
    ] {
        let service = Service { cache };
        assert_eq!(service.greeting(2).await.unwrap(), "hello 2");
        assert_eq!(service.greeting(2).await.unwrap(), "hello 2");
        assert!(service.forget(2).await.unwrap());
        let optional = service
            .cache
            .get_or_load_optional("absent", || async { Ok::<_, std::io::Error>(None) })
            .await;
        assert_eq!(optional.unwrap(), None);
        assert_eq!(service.cache.get("absent").await.unwrap(), None);
        assert_eq!(service.cache.stats().negative_hits, 1);
        service
            .cache
            .set("x", "y".into(), Ttl::Default)
            .await
            .unwrap();
        service.cache.clear().await.unwrap();
        assert_eq!(service.cache.get("x").await.unwrap(), None);
        service.cache.close().await;
        assert!(service.cache.get("x").await.unwrap_err().is_closed());
    }
    assert_eq!(mock.loads(), 3);
    assert_eq!(real.stats().loads, 3);
}
