//! `MockCache`: counters, hooks, and the behaviour it shares with `Cache`.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachex::{AsyncCache, AsyncCacheExt, Error, MockCache, Ttl, MAX_KEY_LEN};

#[tokio::test]
async fn counts_hits_misses_sets_and_deletes() {
    let mock = MockCache::new();
    assert!(mock.is_empty());
    assert_eq!(mock.get("a").await.unwrap(), None);
    mock.set("a", 1u32, Ttl::Default).await.unwrap();
    assert_eq!(mock.get("a").await.unwrap(), Some(1));
    assert!(mock.delete("a").await.unwrap());
    assert!(!mock.delete("a").await.unwrap());
    assert_eq!(
        (mock.hits(), mock.misses(), mock.sets(), mock.deletes()),
        (1, 1, 1, 2)
    );
    let stats = mock.stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
}

#[tokio::test]
async fn hooks_see_every_lookup_and_may_use_the_mock() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mock: MockCache<u32> = MockCache::new();
    let (hits, misses) = (log.clone(), log.clone());
    let inner = mock.clone();
    let mock = mock
        .on_hit(move |key| {
            hits.lock()
                .unwrap()
                .push(format!("hit {key} {}", inner.len()))
        })
        .on_miss(move |key| misses.lock().unwrap().push(format!("miss {key}")));

    mock.get("a").await.unwrap();
    mock.set("a", 1, Ttl::Default).await.unwrap();
    mock.get("a").await.unwrap();
    mock.get_or_load("b", || async { Ok::<_, io::Error>(2) })
        .await
        .unwrap();
    mock.get_or_load("b", || async { Ok::<_, io::Error>(3) })
        .await
        .unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        ["miss a", "hit a 1", "miss b", "hit b 2"]
    );
}

#[tokio::test(start_paused = true)]
async fn nothing_expires() {
    let mock = MockCache::new();
    mock.set("a", 1u8, Ttl::After(Duration::from_secs(1)))
        .await
        .unwrap();
    mock.get_or_load_optional("b", || async { Ok::<Option<u8>, io::Error>(None) })
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_eq!(mock.get("a").await.unwrap(), Some(1));
    assert!(mock.contains_key("b"));
    assert_eq!(
        mock.get("b").await.unwrap(),
        None,
        "not found stays not found"
    );
    assert_eq!(mock.hits(), 2);
}

async fn broken_loader() -> Result<u32, io::Error> {
    panic!("mock loader panic")
}

#[tokio::test]
async fn loads_like_the_cache_without_singleflight() {
    let mock: MockCache<u32> = MockCache::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let loader = |calls: Arc<AtomicUsize>| {
        move || async move {
            calls.fetch_add(1, SeqCst);
            Ok::<_, io::Error>(5)
        }
    };
    assert_eq!(
        mock.get_or_load("k", loader(calls.clone())).await.unwrap(),
        5
    );
    assert_eq!(
        mock.get_or_load("k", loader(calls.clone())).await.unwrap(),
        5
    );
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!(mock.loads(), 1);

    // Errors and panics: reported like the cache does, never cached.
    let error = mock
        .get_or_load("e", || async { Err::<u32, _>(io::Error::other("down")) })
        .await
        .unwrap_err();
    assert!(matches!(&error, Error::Loader { key, .. } if &**key == "e"));
    let error = mock.get_or_load("p", broken_loader).await.unwrap_err();
    assert!(matches!(error, Error::LoaderPanicked { .. }));
    assert!(!mock.contains_key("e") && !mock.contains_key("p"));
    assert_eq!(mock.loads(), 3);
    assert_eq!(mock.stats().load_errors, 2);

    // A value caller does not take a cached "not found" for an answer.
    mock.get_or_load_optional("n", || async { Ok::<_, io::Error>(None) })
        .await
        .unwrap();
    assert_eq!(
        mock.get_or_load("n", loader(calls.clone())).await.unwrap(),
        5
    );
}

#[tokio::test]
async fn keys_and_closing_behave_as_in_the_cache() {
    let mock: MockCache<u8> = MockCache::default();
    assert!(matches!(mock.get("").await, Err(Error::EmptyKey)));
    let long = "x".repeat(MAX_KEY_LEN + 1);
    assert!(mock.get(&long).await.unwrap_err().is_invalid_key());
    mock.set("a", 1, Ttl::Default).await.unwrap();
    mock.clear().await.unwrap();
    assert!(mock.is_empty());
    mock.close().await;
    assert!(mock.get("a").await.unwrap_err().is_closed());
    assert!(mock.clear().await.unwrap_err().is_closed());
}

#[tokio::test]
async fn usable_as_a_trait_object() {
    let mock = MockCache::new();
    let cache: Arc<dyn AsyncCache<String>> = Arc::new(mock.clone());
    let value = cache
        .get_or_load("k", || async { Ok::<_, io::Error>("v".to_string()) })
        .await
        .unwrap();
    assert_eq!(value, "v");
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v"));
    assert_eq!((mock.misses(), mock.hits(), mock.loads()), (1, 1, 1));
    assert_eq!(
        format!("{mock:?}"),
        "MockCache { len: 1, closed: false, .. }"
    );
}

/// The mock and the cache count the same lookups the same way: a
/// `get_or_load` over a cached "not found" found nothing it could use, so
/// it is a miss (and the miss hook fires), in both.
#[tokio::test]
async fn a_value_load_over_a_cached_not_found_counts_as_a_miss_in_both() {
    let hooks = Arc::new(Mutex::new(Vec::new()));
    let (hits, misses) = (hooks.clone(), hooks.clone());
    let mock = MockCache::new()
        .on_hit(move |key| hits.lock().unwrap().push(format!("hit {key}")))
        .on_miss(move |key| misses.lock().unwrap().push(format!("miss {key}")));
    let real = cachex::Cache::builder().build();
    for cache in [
        Arc::new(mock.clone()) as Arc<dyn AsyncCache<u32>>,
        Arc::new(real.clone()),
    ] {
        let absent = || async { Ok::<Option<u32>, io::Error>(None) };
        assert_eq!(cache.get_or_load_optional("n", absent).await.unwrap(), None);
        assert_eq!(cache.get_or_load_optional("n", absent).await.unwrap(), None);
        let value = || async { Ok::<_, io::Error>(7) };
        assert_eq!(cache.get_or_load("n", value).await.unwrap(), 7);
        let stats = cache.stats();
        assert_eq!(
            (stats.hits, stats.negative_hits, stats.misses),
            (0, 1, 2),
            "{stats:?}"
        );
    }
    assert_eq!(*hooks.lock().unwrap(), ["miss n", "hit n", "miss n"]);
}
