//! Tags on the memory store and the mock: what a tagged write, an
//! invalidation and a read do, the limits, loads racing an invalidation,
//! and a property test of set / tag / invalidate / get sequences against a
//! plain model.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cachex::{AsyncCache, AsyncCacheExt, Cache, Error, MockCache, Tags, Ttl, MAX_TAGS};
use proptest::prelude::*;

fn cache() -> Cache<String> {
    Cache::builder().build()
}

#[tokio::test]
async fn invalidating_a_tag_drops_its_entries_and_only_them() {
    let cache = cache();
    let user7 = cache.tagged(["user:7", "users"]).unwrap();
    user7
        .set("u7:name", "alice".into(), Ttl::Default)
        .await
        .unwrap();
    user7
        .set("u7:mail", "a@x".into(), Ttl::Default)
        .await
        .unwrap();
    let user8 = cache.tagged(["user:8", "users"]).unwrap();
    user8
        .set("u8:name", "bob".into(), Ttl::Default)
        .await
        .unwrap();
    cache.set("motd", "hi".into(), Ttl::Default).await.unwrap();

    cache.invalidate_tag("user:7").await.unwrap();
    assert_eq!(cache.get("u7:name").await.unwrap(), None);
    assert_eq!(cache.get("u7:mail").await.unwrap(), None);
    assert_eq!(cache.get("u8:name").await.unwrap().as_deref(), Some("bob"));
    assert_eq!(cache.get("motd").await.unwrap().as_deref(), Some("hi"));
    assert_eq!(cache.remaining_ttl("u7:name").await.unwrap(), None);

    // Written again after the invalidation: served again.
    user7
        .set("u7:name", "alice2".into(), Ttl::Default)
        .await
        .unwrap();
    assert_eq!(
        cache.get("u7:name").await.unwrap().as_deref(),
        Some("alice2")
    );

    cache.invalidate_tags(["users"]).await.unwrap();
    for key in ["u7:name", "u8:name"] {
        assert_eq!(cache.get(key).await.unwrap(), None, "{key}");
    }
    assert_eq!(cache.get("motd").await.unwrap().as_deref(), Some("hi"));
    let stats = cache.stats();
    assert_eq!(stats.tag_invalidations, 2);
    assert_eq!(stats.tagged_writes, 4);
}

#[tokio::test]
async fn a_tagged_load_is_invalidated_and_loaded_again() {
    let cache = cache();
    let loads = Arc::new(AtomicU64::new(0));
    let tagged = cache.tagged(["t"]).unwrap();
    let load = |loads: Arc<AtomicU64>| {
        move || async move {
            let n = loads.fetch_add(1, Ordering::SeqCst) + 1;
            Ok::<_, std::io::Error>(format!("v{n}"))
        }
    };
    assert_eq!(
        tagged.get_or_load("k", load(loads.clone())).await.unwrap(),
        "v1"
    );
    assert_eq!(
        tagged.get_or_load("k", load(loads.clone())).await.unwrap(),
        "v1"
    );
    cache.invalidate_tag("t").await.unwrap();
    assert_eq!(
        tagged.get_or_load("k", load(loads.clone())).await.unwrap(),
        "v2"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    // "Not found" answers carry the tags too.
    let none = || async { Ok::<Option<String>, std::io::Error>(None) };
    assert_eq!(
        tagged.get_or_load_optional("gone", none).await.unwrap(),
        None
    );
    assert_eq!(cache.stats().negative_hits, 0);
    assert_eq!(cache.get("gone").await.unwrap(), None);
    assert_eq!(cache.stats().negative_hits, 1);
    cache.invalidate_tag("t").await.unwrap();
    cache.get("gone").await.unwrap();
    assert_eq!(
        cache.stats().negative_hits,
        1,
        "the invalidated placeholder is a miss"
    );
}

#[tokio::test]
async fn a_tagged_batch_load_writes_its_tags_and_sparse_answers_too() {
    let cache = cache();
    let calls = Arc::new(AtomicU64::new(0));
    let page = {
        let calls = calls.clone();
        move |ids: Vec<String>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                // Only even ids exist.
                let rows = ids
                    .into_iter()
                    .filter(|id| id.ends_with(['0', '2', '4']))
                    .map(|id| (id.clone(), format!("row {id}")));
                Ok::<_, std::io::Error>(rows.collect::<Vec<_>>())
            }
        }
    };
    let tagged = cache.tagged(["page"]).unwrap();
    let keys = ["r0", "r1", "r2", "r3", "r4"];
    let got = tagged.get_many_or_load(&keys, page.clone()).await.unwrap();
    assert_eq!(got[0].as_deref(), Some("row r0"));
    assert_eq!(got[1], None);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tagged.get_many_or_load(&keys, page.clone()).await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "values and \"not found\" cached"
    );
    cache.invalidate_tag("page").await.unwrap();
    assert_eq!(cache.get("r0").await.unwrap(), None);
    tagged.get_many_or_load(&keys, page).await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "every key loaded again, in one call"
    );
}

#[tokio::test]
async fn a_load_racing_an_invalidation_is_not_kept_nor_joined() {
    let cache = cache();
    let gate = Arc::new(tokio::sync::Notify::new());
    let tagged = cache.tagged(["t"]).unwrap();
    let first = {
        let cache = cache.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            cache
                .tagged(["t"])
                .unwrap()
                .get_or_load("k", move || async move {
                    gate.notified().await; // the database read, before the change
                    Ok::<_, std::io::Error>("old".to_string())
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    // The data changes, and its tag is invalidated while the load runs.
    cache.invalidate_tag("t").await.unwrap();
    // A caller after the invalidation does not join the old load (which
    // would keep it waiting on the gate).
    let second = tagged.get_or_load("k", || async { Ok::<_, std::io::Error>("new".to_string()) });
    let second = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("joined the load that read the data before the invalidation")
        .unwrap();
    assert_eq!(second, "new");
    gate.notify_one();
    assert_eq!(first.await.unwrap().unwrap(), "old");
    // The old load's result, read before the invalidation, is never served.
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("new"));
}

#[tokio::test]
async fn tags_are_validated() {
    let cache = cache();
    assert!(cache.tagged([""]).unwrap_err().is_invalid_tag());
    assert!(cache.tagged(["a\u{7}"]).unwrap_err().is_invalid_tag());
    let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
    assert!(matches!(
        cache.tagged(&many).unwrap_err(),
        Error::TooManyTags { max: MAX_TAGS }
    ));
    assert!(cache.invalidate_tag("").await.unwrap_err().is_invalid_tag());
    // Many tags may be invalidated at once.
    cache.invalidate_tags(&many).await.unwrap();
    // An empty list writes untagged entries.
    cache
        .tagged(Vec::<String>::new())
        .unwrap()
        .set("k", "v".into(), Ttl::Default)
        .await
        .unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v"));
    cache.close().await;
    assert!(cache.invalidate_tag("t").await.unwrap_err().is_closed());
}

#[tokio::test]
async fn a_store_without_tags_refuses_tagged_writes() {
    /// A store of one's own, forwarding everything but tags.
    struct Plain(cachex::MemoryStore<String>);
    impl cachex::Store<String> for Plain {
        fn get<'a>(
            &'a self,
            key: &'a str,
        ) -> cachex::store::StoreFuture<'a, cachex::Result<Option<cachex::store::Stored<String>>>>
        {
            self.0.get(key)
        }
        fn set<'a>(
            &'a self,
            key: &'a str,
            entry: cachex::Envelope<String>,
            ttl: Option<Duration>,
        ) -> cachex::store::StoreFuture<'a, cachex::Result<()>> {
            self.0.set(key, entry, ttl)
        }
        fn delete<'a>(
            &'a self,
            key: &'a str,
        ) -> cachex::store::StoreFuture<'a, cachex::Result<bool>> {
            self.0.delete(key)
        }
        fn clear(&self) -> cachex::store::StoreFuture<'_, cachex::Result<()>> {
            self.0.clear()
        }
        fn remaining_ttl<'a>(
            &'a self,
            key: &'a str,
        ) -> cachex::store::StoreFuture<'a, cachex::Result<Option<Option<Duration>>>> {
            self.0.remaining_ttl(key)
        }
    }
    let cache: Cache<String> = Cache::builder()
        .store(Plain(cachex::MemoryStore::new(100)))
        .build();
    let tagged = cache.tagged(["t"]).unwrap();
    let refused = tagged.set("k", "v".into(), Ttl::Default).await.unwrap_err();
    assert!(matches!(refused, Error::TagsUnsupported), "{refused:?}");
    assert_eq!(cache.get("k").await.unwrap(), None, "nothing was written");
    // A load still answers, but is not cached untagged.
    let value = tagged
        .get_or_load("k", || async { Ok::<_, std::io::Error>("v".to_string()) })
        .await
        .unwrap();
    assert_eq!(value, "v");
    assert_eq!(cache.get("k").await.unwrap(), None);
    assert!(matches!(
        cache.invalidate_tag("t").await.unwrap_err(),
        Error::TagsUnsupported
    ));
}

#[tokio::test]
async fn the_interface_and_the_mock_agree_on_tags() {
    let tags = Tags::new(["user:7"]).unwrap();
    let real = cache();
    let mock: MockCache<String> = MockCache::new();
    let caches: [&dyn AsyncCache<String>; 2] = [&real, &mock];
    for cache in caches {
        cache
            .set_tagged("a", "1".into(), Ttl::Default, &tags)
            .await
            .unwrap();
        let loaded = cache
            .get_or_load_tagged("b", &tags, || async {
                Ok::<_, std::io::Error>("2".to_string())
            })
            .await
            .unwrap();
        assert_eq!(loaded, "2");
        cache.set("c", "3".into(), Ttl::Default).await.unwrap();
        cache.invalidate_tag("user:7").await.unwrap();
        assert_eq!(cache.get("a").await.unwrap(), None);
        assert_eq!(cache.get("b").await.unwrap(), None);
        assert_eq!(cache.get("c").await.unwrap().as_deref(), Some("3"));
    }
    mock.set_tagged("d", "4".into(), Ttl::Default, &tags)
        .await
        .unwrap();
    assert_eq!(mock.tags_of("d"), Some(tags));
    assert_eq!(mock.tags_of("c"), None);
}

/// One step of a tagged workload.
#[derive(Clone, Debug)]
enum Step {
    Set { key: u8, tags: Vec<u8>, value: u32 },
    Load { key: u8, tags: Vec<u8>, value: u32 },
    Delete { key: u8 },
    Invalidate { tags: Vec<u8> },
    Get { key: u8 },
}

fn step() -> impl Strategy<Value = Step> {
    let key = 0u8..6;
    let tags = proptest::collection::vec(0u8..4, 0..3);
    prop_oneof![
        (key.clone(), tags.clone(), any::<u32>()).prop_map(|(key, tags, value)| Step::Set {
            key,
            tags,
            value
        }),
        (key.clone(), tags.clone(), any::<u32>()).prop_map(|(key, tags, value)| Step::Load {
            key,
            tags,
            value
        }),
        key.clone().prop_map(|key| Step::Delete { key }),
        proptest::collection::vec(0u8..4, 1..3).prop_map(|tags| Step::Invalidate { tags }),
        key.prop_map(|key| Step::Get { key }),
    ]
}

/// The model: each key's value and tags; invalidating drops the keys
/// carrying a tag.
#[derive(Default)]
struct Model(HashMap<u8, (u32, HashSet<u8>)>);

fn tag_names(tags: &[u8]) -> Vec<String> {
    tags.iter().map(|t| format!("tag{t}")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn tagged_sequences_behave_like_the_model(steps in proptest::collection::vec(step(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let cache: Cache<u32> = Cache::builder().build();
            let mut model = Model::default();
            for step in steps {
                match step {
                    Step::Set { key, tags, value } => {
                        let view = cache.tagged(tag_names(&tags)).unwrap();
                        view.set(&key.to_string(), value, Ttl::Never).await.unwrap();
                        model.0.insert(key, (value, tags.into_iter().collect()));
                    }
                    Step::Load { key, tags, value } => {
                        let view = cache.tagged(tag_names(&tags)).unwrap();
                        let got = view
                            .get_or_load(&key.to_string(), move || async move { Ok::<_, std::io::Error>(value) })
                            .await
                            .unwrap();
                        let expected = model
                            .0
                            .entry(key)
                            .or_insert((value, tags.into_iter().collect()))
                            .0;
                        prop_assert_eq!(got, expected);
                    }
                    Step::Delete { key } => {
                        let had = cache.delete(&key.to_string()).await.unwrap();
                        prop_assert_eq!(had, model.0.remove(&key).is_some());
                    }
                    Step::Invalidate { tags } => {
                        cache.invalidate_tags(tag_names(&tags)).await.unwrap();
                        model.0.retain(|_, (_, theirs)| !tags.iter().any(|t| theirs.contains(t)));
                    }
                    Step::Get { key } => {
                        let got = cache.get(&key.to_string()).await.unwrap();
                        prop_assert_eq!(got, model.0.get(&key).map(|(value, _)| *value));
                    }
                }
            }
            Ok(())
        })?;
    }
}
