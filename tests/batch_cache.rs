//! Batch calls on `Cache` over the memory store (the Redis and hybrid
//! stores are in `batch_redis.rs`): order and duplicates, partial hits,
//! "not found" placeholders, singleflight shared with `get_or_load`,
//! cancellation, failures and panics, refresh, bad input, the mock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachex::{AsyncCache, AsyncCacheExt, Cache, Error, MockCache, Ttl, MAX_BATCH};

/// A bulk loader over a pretend table where even ids exist: records each
/// call's keys, counts calls, takes `delay`.
#[derive(Clone, Default)]
struct Table {
    calls: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Table {
    fn loader(
        &self,
        delay: Duration,
    ) -> impl Fn(Vec<String>) -> futures_fut::Load + Send + Sync + 'static {
        let calls = self.calls.clone();
        move |keys: Vec<String>| {
            calls.lock().unwrap().push(keys.clone());
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(keys
                    .into_iter()
                    .filter(|key| id(key).is_multiple_of(2))
                    .map(|key| {
                        let value = format!("row {}", id(&key));
                        (key, value)
                    })
                    .collect())
            })
        }
    }

    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap().clone()
    }

    /// Every key loaded, over all calls.
    fn loaded(&self) -> Vec<String> {
        let mut all: Vec<String> = self.calls().concat();
        all.sort();
        all
    }
}

mod futures_fut {
    use std::collections::HashMap;
    use std::future::Future;
    use std::pin::Pin;

    pub type Load =
        Pin<Box<dyn Future<Output = Result<HashMap<String, String>, std::io::Error>> + Send>>;
}

fn id(key: &str) -> u64 {
    key.trim_start_matches("k").parse().unwrap()
}

fn keys(ids: impl IntoIterator<Item = u64>) -> Vec<String> {
    ids.into_iter().map(|i| format!("k{i}")).collect()
}

fn row(i: u64) -> Option<String> {
    i.is_multiple_of(2).then(|| format!("row {i}"))
}

#[tokio::test]
async fn answers_in_input_order_with_duplicates_at_each_position() {
    let cache: Cache<String> = Cache::builder().build();
    cache
        .set_many(
            [("k2", "two".to_string()), ("k4", "four".to_string())],
            Ttl::Default,
        )
        .await
        .unwrap();
    let got = cache.get_many(&["k4", "k9", "k2", "k4"]).await.unwrap();
    assert_eq!(
        got,
        [
            Some("four".into()),
            None,
            Some("two".into()),
            Some("four".into())
        ]
    );
    // Each distinct key is one lookup.
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (2, 1));
    assert_eq!((stats.batch_calls, stats.batch_keys), (2, 6));
    assert_eq!(stats.sets, 2);
    assert_eq!(cache.delete_many(&["k2", "k2", "k7"]).await.unwrap(), 1);
    assert_eq!(cache.get("k2").await.unwrap(), None);
    assert_eq!(cache.stats().deletes, 2);
}

#[tokio::test]
async fn the_last_value_of_a_key_wins_in_set_many() {
    let cache: Cache<u32> = Cache::builder().build();
    cache
        .set_many(
            vec![("a".to_string(), 1), ("a".to_string(), 2)],
            Ttl::Default,
        )
        .await
        .unwrap();
    assert_eq!(cache.get("a").await.unwrap(), Some(2));
}

#[tokio::test]
async fn a_cold_page_is_one_loader_call_and_sparse_keys_are_cached_as_not_found() {
    let cache: Cache<String> = Cache::builder().build();
    let table = Table::default();
    let page = keys(0..100);
    let got = cache
        .get_many_or_load(&page, table.loader(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(got, (0..100).map(row).collect::<Vec<_>>());
    assert_eq!(table.calls().len(), 1);
    assert_eq!(table.loaded(), {
        let mut k = page.clone();
        k.sort();
        k
    });
    // Again: everything cached, odd ids as "not found".
    let again = cache
        .get_many_or_load(&page, table.loader(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(again, got);
    assert_eq!(table.calls().len(), 1);
    let stats = cache.stats();
    assert_eq!(stats.loads, 1);
    assert_eq!((stats.hits, stats.negative_hits), (50, 50));
    assert_eq!(cache.get("k3").await.unwrap(), None);
}

#[tokio::test]
async fn partial_hits_load_only_the_missing_keys() {
    let cache: Cache<String> = Cache::builder().build();
    cache
        .set_many([("k2", "cached".to_string())], Ttl::Default)
        .await
        .unwrap();
    let table = Table::default();
    let got = cache
        .get_many_or_load(&["k2", "k4", "k6"], table.loader(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(got, [Some("cached".into()), row(4), row(6)]);
    assert_eq!(table.calls(), [keys([4, 6])]);
}

#[tokio::test(start_paused = true)]
async fn not_found_placeholders_expire_after_the_negative_ttl() {
    let cache: Cache<String> = Cache::builder()
        .negative_ttl(Duration::from_secs(10))
        .jitter(0.0)
        .build();
    let table = Table::default();
    let load = || table.loader(Duration::ZERO);
    assert_eq!(
        cache.get_many_or_load(&["k1"], load()).await.unwrap(),
        [None]
    );
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(
        cache.get_many_or_load(&["k1"], load()).await.unwrap(),
        [None]
    );
    assert_eq!(table.calls().len(), 1, "still cached as not found");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        cache.get_many_or_load(&["k1"], load()).await.unwrap(),
        [None]
    );
    assert_eq!(table.calls().len(), 2, "expired: asked again");
}

#[tokio::test]
async fn keys_the_loader_was_not_asked_for_are_ignored() {
    let cache: Cache<u32> = Cache::builder().build();
    let got = cache
        .get_many_or_load(&["a"], |_keys| async {
            Ok::<_, std::io::Error>(vec![("a".to_string(), 1), ("intruder".to_string(), 2)])
        })
        .await
        .unwrap();
    assert_eq!(got, [Some(1)]);
    assert_eq!(cache.get("intruder").await.unwrap(), None);
    assert_eq!(cache.stats().store.l1.unwrap().entries, Some(1));
}

#[tokio::test]
async fn the_optional_flavour_takes_explicit_not_found() {
    let cache: Cache<u32> = Cache::builder().build();
    let got = cache
        .get_many_or_load_optional(&["a", "b"], |keys| async move {
            Ok::<_, std::io::Error>(
                keys.into_iter()
                    .map(|key| {
                        let value = (key == "a").then_some(1);
                        (key, value)
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .await
        .unwrap();
    assert_eq!(got, [Some(1), None]);
    assert_eq!(cache.stats().store.l1.unwrap().entries, Some(2));
}

#[tokio::test]
async fn overlapping_batches_and_single_calls_load_each_key_once() {
    let cache: Cache<String> = Cache::builder().build();
    let table = Table::default();
    let singles = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    // 8 batches of 100 keys, each sharing 50 keys with the next.
    for b in 0..8u64 {
        let (cache, table) = (cache.clone(), table.clone());
        tasks.push(tokio::spawn(async move {
            let page = keys(b * 50..b * 50 + 100);
            let got = cache
                .get_many_or_load(&page, table.loader(Duration::from_millis(30)))
                .await
                .unwrap();
            assert_eq!(got, (b * 50..b * 50 + 100).map(row).collect::<Vec<_>>());
        }));
    }
    // And single calls on keys the batches load.
    for i in (0..450).step_by(25) {
        let (cache, singles) = (cache.clone(), singles.clone());
        tasks.push(tokio::spawn(async move {
            let got = cache
                .get_or_load_optional(&format!("k{i}"), move || async move {
                    singles.fetch_add(1, SeqCst);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    Ok::<_, std::io::Error>(row(i))
                })
                .await
                .unwrap();
            assert_eq!(got, row(i));
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // 450 distinct keys, each loaded exactly once by a batch or a single.
    let mut loaded = table.loaded();
    let batch_loaded = loaded.len();
    loaded.dedup();
    assert_eq!(loaded.len(), batch_loaded, "a key loaded twice by batches");
    assert_eq!(batch_loaded + singles.load(SeqCst), 450);
}

#[tokio::test]
async fn a_batch_waits_for_a_single_load_under_way() {
    let cache: Cache<String> = Cache::builder().build();
    let single = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_load("k2", || async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, std::io::Error>("from the single call".to_string())
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let table = Table::default();
    let got = cache
        .get_many_or_load(&["k2", "k4"], table.loader(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(got, [Some("from the single call".into()), row(4)]);
    assert_eq!(table.calls(), [keys([4])]);
    assert_eq!(cache.stats().singleflight_waits, 1);
    single.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_cancelled_batch_leaves_its_keys_to_their_waiters() {
    let cache: Cache<String> = Cache::builder().build();
    let table = Table::default();
    let batch = {
        let (cache, table) = (cache.clone(), table.clone());
        tokio::spawn(async move {
            cache
                .get_many_or_load(&keys([2, 4]), table.loader(Duration::from_secs(3600)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    // A single call and another batch wait for the first batch's keys.
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_load("k2", || async {
                    Ok::<_, std::io::Error>("taken over".to_string())
                })
                .await
        })
    };
    let other = {
        let cache = cache.clone();
        let table = table.clone();
        tokio::spawn(async move {
            cache
                .get_many_or_load(&keys([4, 6]), table.loader(Duration::ZERO))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished() && !other.is_finished(), "they wait");
    batch.abort();
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter took over")
        .unwrap()
        .unwrap();
    assert_eq!(got, "taken over");
    let got = tokio::time::timeout(Duration::from_secs(10), other)
        .await
        .expect("the other batch took over")
        .unwrap()
        .unwrap();
    assert_eq!(got, [row(4), row(6)]);
    // The first batch asked for 2 and 4, the second for 6, then took 4 over.
    let calls = table.calls();
    assert_eq!(calls[0], keys([2, 4]));
    assert_eq!(calls[1..].concat().iter().filter(|k| *k == "k4").count(), 1);
}

#[tokio::test]
async fn a_failing_bulk_loader_fails_exactly_its_keys_and_is_not_cached() {
    let cache: Cache<String> = Cache::builder().build();
    cache
        .set_many([("k2", "cached".to_string())], Ttl::Default)
        .await
        .unwrap();
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_many_or_load(&["k2", "k4", "k6"], |_keys| async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err::<Vec<(String, String)>, _>(std::io::Error::other("db down"))
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Waits for k4 (which fails) and loads k8 itself (which works).
    let table = Table::default();
    let neighbour = cache
        .get_many_or_load(&["k4", "k8"], table.loader(Duration::ZERO))
        .await;
    let err = neighbour.unwrap_err();
    assert!(err.is_loader());
    assert_eq!(err.key(), Some("k4"));
    let err = leader.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Loader { .. }), "{err}");
    assert!(err.to_string().contains("k4") || err.to_string().contains("k6"));
    // k8 was loaded and cached; the failed keys were not.
    assert_eq!(cache.get("k8").await.unwrap(), row(8));
    assert_eq!(cache.get("k4").await.unwrap(), None);
    assert_eq!(cache.stats().store.l1.unwrap().entries, Some(2));
    assert_eq!(table.calls(), [keys([8])]);
}

#[tokio::test]
async fn a_panicking_bulk_loader_is_reported_and_nothing_hangs() {
    let cache: Cache<String> = Cache::builder().build();
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            cache
                .get_or_load("k2", || async {
                    Ok::<_, std::io::Error>("never".to_string())
                })
                .await
        })
    };
    let err = cache
        .get_many_or_load(&["k2", "k4"], |_keys| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            panic!("bulk loader bug");
            #[allow(unreachable_code)]
            Ok::<Vec<(String, String)>, std::io::Error>(Vec::new())
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::LoaderPanicked { message, .. } if &**message == "bulk loader bug")
    );
    let err = waiter.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::LoaderPanicked { .. }));
    // Nothing cached: the next call loads.
    let table = Table::default();
    let got = cache
        .get_many_or_load(&["k2"], table.loader(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(got, [row(2)]);
}

#[tokio::test(start_paused = true)]
async fn due_keys_of_a_batch_are_refreshed_together_in_the_background() {
    let cache: Cache<String> = Cache::builder()
        .default_ttl(Duration::from_secs(100))
        .jitter(0.0)
        .stale_while_revalidate(Duration::from_secs(20))
        .build();
    let table = Table::default();
    cache
        .get_many_or_load(&keys([2, 4, 6]), table.loader(Duration::ZERO))
        .await
        .unwrap();
    // k6 is rewritten later, so it is not due when the others are.
    tokio::time::advance(Duration::from_secs(50)).await;
    cache
        .set("k6", "fresh".to_string(), Ttl::Default)
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(35)).await;
    let got = cache
        .get_many_or_load(&keys([2, 4, 6]), table.loader(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(
        got,
        [row(2), row(4), Some("fresh".into())],
        "served at once"
    );
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(table.calls(), [keys([2, 4, 6]), keys([2, 4])]);
    assert_eq!(cache.stats().refreshes, 1);
    assert_eq!(cache.stats().stale_served, 2);
}

#[tokio::test]
async fn bad_input_fails_before_anything_is_done() {
    let cache: Cache<u32> = Cache::builder().build();
    let calls = Arc::new(AtomicUsize::new(0));
    let counting = {
        let calls = calls.clone();
        move |_keys: Vec<String>| {
            calls.fetch_add(1, SeqCst);
            async { Ok::<_, std::io::Error>(HashMap::<String, u32>::new()) }
        }
    };
    let err = cache
        .get_many_or_load(&["a", "", "b"], counting.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidKeyInBatch { index: 1, .. }),
        "{err}"
    );
    assert_eq!(err.to_string(), "key #1 of the batch: cache key is empty");
    let long = "x".repeat(cachex::MAX_KEY_LEN + 1);
    let err = cache
        .set_many([("a", 1), (long.as_str(), 2)], Ttl::Default)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidKeyInBatch { index: 1, .. }),
        "{err}"
    );
    assert_eq!(cache.get("a").await.unwrap(), None, "nothing written");
    let too_many: Vec<String> = (0..=MAX_BATCH).map(|i| i.to_string()).collect();
    assert!(matches!(
        cache.get_many(&too_many).await.unwrap_err(),
        Error::BatchTooLarge { .. }
    ));
    assert_eq!(calls.load(SeqCst), 0);
    // Empty batches answer at once.
    let none: [&str; 0] = [];
    assert_eq!(
        cache.get_many(&none).await.unwrap(),
        Vec::<Option<u32>>::new()
    );
    assert_eq!(cache.get_many_or_load(&none, counting).await.unwrap(), []);
    assert_eq!(cache.delete_many(&none).await.unwrap(), 0);
    assert_eq!(calls.load(SeqCst), 0);
    cache.close().await;
    assert!(cache.get_many(&["a"]).await.unwrap_err().is_closed());
}

/// Code written against the trait works with the cache and the mock.
async fn page(cache: &dyn AsyncCache<String>) -> cachex::Result<Vec<Option<String>>> {
    cache
        .get_many_or_load(&["k1", "k2", "k4"], |keys| async move {
            Ok::<_, std::io::Error>(
                keys.into_iter()
                    .filter(|key| key != "k1")
                    .map(|key| (key.clone(), format!("row of {key}")))
                    .collect::<Vec<_>>(),
            )
        })
        .await
}

#[tokio::test]
async fn the_trait_and_the_mock_batch_alike() {
    let expected = [
        None,
        Some("row of k2".to_string()),
        Some("row of k4".into()),
    ];
    let cache: Cache<String> = Cache::builder().build();
    let mock = MockCache::new();
    for backend in [&cache as &dyn AsyncCache<String>, &mock] {
        assert_eq!(page(backend).await.unwrap(), expected);
        assert_eq!(page(backend).await.unwrap(), expected);
        assert_eq!(backend.stats().loads, 1);
        backend
            .set_many(vec![("x".into(), "1".into())], Ttl::Default)
            .await
            .unwrap();
        assert_eq!(
            backend.get_many(&["x", "k1", "k2"]).await.unwrap(),
            [Some("1".into()), None, Some("row of k2".into())]
        );
        assert_eq!(backend.delete_many(&["x", "k2", "nope"]).await.unwrap(), 2);
    }
    assert_eq!((mock.hits(), mock.misses()), (6, 3));
}
