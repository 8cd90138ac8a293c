//! Batch calls against real Redis: one `MGET` / one pipeline / one
//! `UNLINK` per batch (counted with `INFO commandstats`), the remaining TTL
//! read from the value's header, frames of format version 2, undecodable
//! entries in a batch, the 3-master cluster, and the hybrid store (L1 first,
//! one invalidation message per batch write, seen by another process).
#![cfg(feature = "redis")]

mod hybrid_support;
mod redis_support;

use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachex::store::redis::{OnCorrupt, RedisStore};
use cachex::store::{Envelope, HybridStore, Store, Write};
use cachex::{Cache, Ttl};
use hybrid_support::{eventually, say, ChildProcess};
use redis_support::{command_calls, counts, raw, raw_cmd, sent, RedisCluster, RedisServer};

fn keys(range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|i| format!("k{i}")).collect()
}

#[tokio::test]
async fn a_batch_is_one_command_and_ttls_come_from_the_header() {
    let server = RedisServer::start();
    let store: RedisStore<u64> = redis_support::store(&server, "batch").await;
    let names = keys(0..100);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();

    let before = command_calls(&server).await;
    let writes = (0..100)
        .map(|i| Write {
            key: refs[i as usize],
            entry: Envelope::found(i),
            ttl: Some(Duration::from_secs(60)),
        })
        .collect();
    store.set_many(writes).await.unwrap();
    let after_set = command_calls(&server).await;
    assert_eq!(sent(&before, &after_set), counts(&[("set", 100)]));

    let found = store.get_many(&refs).await.unwrap();
    let after_get = command_calls(&server).await;
    // One MGET, and no PTTL: the TTL is in each value's header.
    assert_eq!(sent(&after_set, &after_get), counts(&[("mget", 1)]));
    for (i, one) in found.into_iter().enumerate() {
        let stored = one.unwrap().unwrap();
        assert_eq!(stored.envelope.value(), Some(&(i as u64)));
        let left = stored.remaining_ttl.unwrap();
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50));
    }

    // A single get is one GET, with its TTL from the header too.
    let stored = store.get("k7").await.unwrap().unwrap();
    assert!(stored.remaining_ttl.unwrap() > Duration::from_secs(50));
    let after_single = command_calls(&server).await;
    assert_eq!(sent(&after_get, &after_single), counts(&[("get", 1)]));

    assert_eq!(store.delete_many(&refs[..10]).await.unwrap(), 10);
    assert_eq!(store.delete_many(&refs[..10]).await.unwrap(), 0);
    let after_delete = command_calls(&server).await;
    assert_eq!(sent(&after_single, &after_delete), counts(&[("unlink", 2)]));
}

#[tokio::test]
async fn large_batches_are_split_into_commands_of_a_thousand_keys() {
    let server = RedisServer::start();
    let store: RedisStore<u64> = redis_support::store(&server, "big").await;
    let names = keys(0..2_500);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    store
        .set_many(
            refs.iter()
                .map(|key| Write {
                    key,
                    entry: Envelope::found(1),
                    ttl: None,
                })
                .collect(),
        )
        .await
        .unwrap();
    let before = command_calls(&server).await;
    let found = store.get_many(&refs).await.unwrap();
    assert_eq!(found.len(), 2_500);
    assert!(found
        .iter()
        .all(|one| matches!(one, Ok(Some(s)) if s.remaining_ttl.is_none())));
    let after = command_calls(&server).await;
    assert_eq!(sent(&before, &after), counts(&[("mget", 3)]));
}

#[tokio::test]
async fn version_2_frames_are_read_with_a_pttl() {
    let server = RedisServer::start();
    let store: RedisStore<String> = redis_support::store(&server, "old").await;
    let mut conn = raw(&server).await;
    // "hi" as cachex wrote it with format version 2 (MessagePack, id 1).
    let v2: &[u8] = &[0xCA, 2, 1, 0, 0, 0xA2, b'h', b'i'];
    let _: () = raw_cmd(&mut conn, &[b"SET", b"old:a", v2, b"PX", b"60000"]).await;
    let _: () = raw_cmd(&mut conn, &[b"SET", b"old:b", v2]).await;

    let before = command_calls(&server).await;
    let stored = store.get("a").await.unwrap().unwrap();
    assert_eq!(stored.envelope.value().map(String::as_str), Some("hi"));
    assert!(stored.remaining_ttl.unwrap() > Duration::from_secs(50));
    let found = store.get_many(&["a", "b", "c"]).await.unwrap();
    let after = command_calls(&server).await;
    assert_eq!(
        sent(&before, &after),
        counts(&[("get", 1), ("mget", 1), ("pttl", 3)])
    );
    assert!(found[0]
        .as_ref()
        .unwrap()
        .as_ref()
        .unwrap()
        .remaining_ttl
        .is_some());
    assert_eq!(
        found[1].as_ref().unwrap().as_ref().unwrap().remaining_ttl,
        None
    );
    assert!(found[2].as_ref().unwrap().is_none());
}

#[tokio::test]
async fn an_undecodable_entry_fails_only_its_key() {
    let server = RedisServer::start();
    let store: RedisStore<u64> = redis_support::store(&server, "bad").await;
    store.set("good", Envelope::found(1), None).await.unwrap();
    let mut conn = raw(&server).await;
    let _: () = raw_cmd(&mut conn, &[b"SET", b"bad:foreign", b"not cachex"]).await;
    let found = store.get_many(&["good", "foreign", "none"]).await.unwrap();
    assert!(matches!(&found[0], Ok(Some(_))));
    let err = found[1].as_ref().unwrap_err();
    assert!(err.is_codec() && err.key() == Some("foreign"), "{err}");
    assert!(matches!(&found[2], Ok(None)));

    // Through the cache: get_many reports it, get_many_or_load loads the
    // key but leaves the foreign bytes alone.
    let cache: Cache<u64> = Cache::builder().store(store.clone()).build();
    assert!(cache
        .get_many(&["good", "foreign"])
        .await
        .unwrap_err()
        .is_codec());
    let got = cache
        .get_many_or_load(&["good", "foreign"], |keys| async move {
            Ok::<_, std::io::Error>(keys.into_iter().map(|k| (k, 9)).collect::<Vec<_>>())
        })
        .await
        .unwrap();
    assert_eq!(got, [Some(1), Some(9)]);
    let raw_value: Vec<u8> = raw_cmd(&mut conn, &[b"GET", b"bad:foreign"]).await;
    assert_eq!(raw_value, b"not cachex");
    assert_eq!(cache.stats().undecodable_kept, 1);

    // Under MissAndDelete it is a miss, deleted by one UNLINK.
    let lenient: RedisStore<u64> = redis_support::builder(&server, "bad")
        .on_corrupt(OnCorrupt::MissAndDelete)
        .build()
        .await
        .unwrap();
    let found = lenient.get_many(&["good", "foreign"]).await.unwrap();
    assert!(matches!(&found[1], Ok(None)));
    let exists: i64 = raw_cmd(&mut conn, &[b"EXISTS", b"bad:foreign"]).await;
    assert_eq!(exists, 0);
}

#[tokio::test]
async fn a_cold_page_over_redis_is_one_loader_call_one_mget_and_one_pipeline() {
    let server = RedisServer::start();
    let store: RedisStore<String> = redis_support::store(&server, "page").await;
    let cache: Cache<String> = Cache::builder().store(store).build();
    let names = keys(0..100);
    let calls = Arc::new(Mutex::new(0));
    let loader = {
        let calls = calls.clone();
        move |ids: Vec<String>| {
            *calls.lock().unwrap() += 1;
            async move {
                Ok::<_, std::io::Error>(
                    ids.into_iter()
                        .filter(|id| !id.ends_with('7'))
                        .map(|id| (id.clone(), format!("row {id}")))
                        .collect::<Vec<_>>(),
                )
            }
        }
    };
    let before = command_calls(&server).await;
    let page = cache
        .get_many_or_load(&names, loader.clone())
        .await
        .unwrap();
    let after = command_calls(&server).await;
    assert_eq!(page.iter().filter(|v| v.is_none()).count(), 10);
    assert_eq!(*calls.lock().unwrap(), 1);
    assert_eq!(sent(&before, &after), counts(&[("mget", 1), ("set", 100)]));
    // Warm: one MGET, no load; the "not found"s are cached too.
    let again = cache.get_many_or_load(&names, loader).await.unwrap();
    assert_eq!(again, page);
    assert_eq!(*calls.lock().unwrap(), 1);
    assert_eq!(
        sent(&after, &command_calls(&server).await),
        counts(&[("mget", 1)])
    );
}

#[tokio::test]
async fn cluster_batches_reach_every_master_and_keep_their_order() {
    let cluster = RedisCluster::start(3);
    let store: RedisStore<u64> = RedisStore::builder()
        .cluster(cluster.urls())
        .prefix("cb")
        .build()
        .await
        .unwrap();
    let cache: Cache<u64> = Cache::builder().store(store).build();
    let names = keys(0..300);
    let entries: Vec<(String, u64)> = (0..300).map(|i| (format!("k{i}"), i)).collect();
    cache.set_many(entries, Ttl::Default).await.unwrap();
    // Every master holds some of them.
    for node in cluster.nodes() {
        let mut conn = raw(node).await;
        let size: i64 = raw_cmd(&mut conn, &[b"DBSIZE"]).await;
        assert!(size > 50, "a master holds {size} of 300 keys");
    }
    let mut asked: Vec<String> = names.clone();
    asked.push("missing".into());
    asked.push("k0".into());
    let got = cache.get_many(&asked).await.unwrap();
    let mut expected: Vec<Option<u64>> = (0..300).map(Some).collect();
    expected.push(None);
    expected.push(Some(0));
    assert_eq!(got, expected);
    assert_eq!(cache.delete_many(&names[..150]).await.unwrap(), 150);
    let got = cache.get_many(&names).await.unwrap();
    assert_eq!(got.iter().filter(|v| v.is_some()).count(), 150);
}

#[tokio::test]
async fn hybrid_reads_l1_first_and_misses_with_one_mget() {
    let server = RedisServer::start();
    let store = hybrid_support::hybrid::<u64>(&server, "hb")
        .await
        .build()
        .await
        .unwrap();
    let cache: Cache<u64> = Cache::builder().store(store.clone()).build();
    let entries: Vec<(String, u64)> = (0..10).map(|i| (format!("k{i}"), i)).collect();
    let before = command_calls(&server).await;
    cache.set_many(entries, Ttl::Default).await.unwrap();
    let after_set = command_calls(&server).await;
    // One pipeline of SETs and ONE invalidation message for the batch.
    assert_eq!(
        sent(&before, &after_set),
        counts(&[("set", 10), ("publish", 1)])
    );
    // Half of them leave L1: the batch reads those with one MGET, and
    // promotes them.
    for i in 0..5 {
        store.invalidate_l1(&format!("k{i}"));
    }
    let got = cache.get_many(&keys(0..12)).await.unwrap();
    let mut expected: Vec<Option<u64>> = (0..10).map(Some).collect();
    expected.extend([None, None]);
    assert_eq!(got, expected);
    let after_get = command_calls(&server).await;
    assert_eq!(sent(&after_set, &after_get), counts(&[("mget", 1)]));
    assert!((0..5).all(|i| store.l1_contains(&format!("k{i}"))));
    // All in L1 now: no command at all.
    cache.get_many(&keys(0..10)).await.unwrap();
    assert_eq!(sent(&after_get, &command_calls(&server).await), counts(&[]));
    // A batch delete: one UNLINK, one message.
    let before = command_calls(&server).await;
    assert_eq!(cache.delete_many(&keys(0..10)).await.unwrap(), 10);
    assert_eq!(
        sent(&before, &command_calls(&server).await),
        counts(&[("unlink", 1), ("publish", 1)])
    );
    assert!(!store.l1_contains("k3"));
}

/// Environment of the child process: the server's URL.
const CHILD_URL: &str = "CACHEX_BATCH_CHILD_URL";

/// The other process of [`a_batch_write_invalidates_every_key_in_another_process`]:
/// holds 50 keys in L1, and sees one batch write drop all of them.
#[tokio::test]
async fn batch_child_process_role() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let l2 = RedisStore::<u64>::builder()
        .url(url)
        .prefix("procs")
        .build()
        .await
        .unwrap();
    let store = HybridStore::builder(l2).build().await.unwrap();
    let cache: Cache<u64> = Cache::builder().store(store.clone()).build();
    let names = keys(0..50);
    let got = cache.get_many(&names).await.unwrap();
    assert!(got.iter().all(|v| *v == Some(1)));
    assert!(names.iter().all(|key| store.l1_contains(key)));
    say("holding");
    let mut lines = BufReader::new(std::io::stdin()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "wrote");
    eventually("every key leaves the child's L1", || async {
        names.iter().all(|key| !store.l1_contains(key))
    })
    .await;
    let got = cache.get_many(&names).await.unwrap();
    assert!(got.iter().all(|v| *v == Some(2)), "{got:?}");
    say(&format!(
        "received {}",
        store.stats().invalidations_received
    ));
}

#[tokio::test]
async fn a_batch_write_invalidates_every_key_in_another_process() {
    let server = RedisServer::start();
    let store = hybrid_support::hybrid::<u64>(&server, "procs")
        .await
        .build()
        .await
        .unwrap();
    let cache: Cache<u64> = Cache::builder().store(store).build();
    let names = keys(0..50);
    let ones: Vec<(String, u64)> = names.iter().map(|k| (k.clone(), 1)).collect();
    cache.set_many(ones, Ttl::Default).await.unwrap();

    let mut child = ChildProcess::spawn("batch_child_process_role", (CHILD_URL, &server.url()));
    assert_eq!(child.hear().await, "holding");
    let twos: Vec<(String, u64)> = names.iter().map(|k| (k.clone(), 2)).collect();
    cache.set_many(twos, Ttl::Default).await.unwrap();
    child.tell("wrote");
    // One message carried all 50 keys.
    assert_eq!(child.hear().await, "received 1");
    child.finish();
}

/// A cache over a fresh Redis store with `prefix`, "not found" kept for
/// `negative_ttl`.
async fn redis_cache(server: &RedisServer, prefix: &str, negative_ttl: Duration) -> Cache<String> {
    let store: RedisStore<String> = redis_support::store(server, prefix).await;
    Cache::builder()
        .store(store)
        .negative_ttl(negative_ttl)
        .jitter(0.0)
        .build()
}

type Rows = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<(String, String)>, std::io::Error>> + Send>,
>;

/// A bulk loader over a table where even ids exist, recording the keys of
/// each call.
fn even_rows(
    calls: Arc<Mutex<Vec<Vec<String>>>>,
    delay: Duration,
) -> impl Fn(Vec<String>) -> Rows + Send + Sync + Clone + 'static {
    move |keys: Vec<String>| {
        calls.lock().unwrap().push(keys.clone());
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(keys
                .into_iter()
                .filter(|key| key[1..].parse::<u64>().unwrap().is_multiple_of(2))
                .map(|key| (key.clone(), format!("row {key}")))
                .collect())
        })
    }
}

#[tokio::test]
async fn over_redis_not_found_placeholders_expire_and_partial_hits_load_the_rest() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "neg", Duration::from_millis(300)).await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let load = even_rows(calls.clone(), Duration::ZERO);
    let got = cache
        .get_many_or_load(&keys(0..4), load.clone())
        .await
        .unwrap();
    assert_eq!(
        got,
        [Some("row k0".into()), None, Some("row k2".into()), None]
    );
    // Partial: k0..k3 cached (k1, k3 as "not found"), k4, k5 loaded.
    cache
        .get_many_or_load(&keys(0..6), load.clone())
        .await
        .unwrap();
    assert_eq!(calls.lock().unwrap().clone(), [keys(0..4), keys(4..6)]);
    // The placeholders are Redis keys with the negative TTL.
    let mut conn = raw(&server).await;
    let pttl: i64 = raw_cmd(&mut conn, &[b"PTTL", b"neg:k1"]).await;
    assert!(pttl > 0 && pttl <= 300, "{pttl}");
    eventually("the \"not found\" placeholders expire", || async {
        let exists: i64 =
            raw_cmd(&mut raw(&server).await, &[b"EXISTS", b"neg:k1", b"neg:k3"]).await;
        exists == 0
    })
    .await;
    cache.get_many_or_load(&keys(0..4), load).await.unwrap();
    assert_eq!(calls.lock().unwrap()[2], ["k1", "k3"]);
}

#[tokio::test]
async fn over_redis_overlapping_batches_and_single_calls_load_each_key_once() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "overlap", Duration::from_secs(30)).await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let singles = Arc::new(Mutex::new(0));
    let mut tasks = Vec::new();
    for b in 0..8u64 {
        let cache = cache.clone();
        let load = even_rows(calls.clone(), Duration::from_millis(50));
        tasks.push(tokio::spawn(async move {
            cache
                .get_many_or_load(&keys(b * 50..b * 50 + 100), load)
                .await
                .unwrap();
        }));
    }
    for i in (0..450u64).step_by(30) {
        let (cache, singles) = (cache.clone(), singles.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load_optional(&format!("k{i}"), move || async move {
                    *singles.lock().unwrap() += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, std::io::Error>(i.is_multiple_of(2).then(|| format!("row k{i}")))
                })
                .await
                .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut loaded: Vec<String> = calls.lock().unwrap().concat();
    let by_batches = loaded.len();
    loaded.sort();
    loaded.dedup();
    assert_eq!(loaded.len(), by_batches, "a key loaded twice by batches");
    assert_eq!(by_batches + *singles.lock().unwrap(), 450);
    // And every value is in Redis, read back in order.
    let got = cache.get_many(&keys(0..450)).await.unwrap();
    for (i, value) in got.iter().enumerate() {
        assert_eq!(value.is_some(), i % 2 == 0, "k{i}");
    }
}

#[tokio::test]
async fn over_redis_a_cancelled_or_panicking_batch_strands_no_one() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "cancel", Duration::from_secs(30)).await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let stuck = {
        let cache = cache.clone();
        let load = even_rows(calls.clone(), Duration::from_secs(3600));
        tokio::spawn(async move { cache.get_many_or_load(&keys(0..4), load).await })
    };
    eventually("the first batch is loading", || async {
        !calls.lock().unwrap().is_empty()
    })
    .await;
    let waiter = {
        let cache = cache.clone();
        let load = even_rows(calls.clone(), Duration::ZERO);
        tokio::spawn(async move { cache.get_many_or_load(&keys(2..6), load).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "it waits for k2 and k3");
    stuck.abort();
    let got = hybrid_support::guarded("the waiter", waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        [Some("row k2".into()), None, Some("row k4".into()), None]
    );

    // A panicking loader fails its keys, caches nothing.
    let err = cache
        .get_many_or_load(&keys(10..12), |_keys: Vec<String>| async move {
            if true {
                panic!("bulk loader bug");
            }
            Ok::<Vec<(String, String)>, std::io::Error>(Vec::new())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, cachex::Error::LoaderPanicked { .. }), "{err}");
    let mut conn = raw(&server).await;
    let exists: i64 = raw_cmd(&mut conn, &[b"EXISTS", b"cancel:k10", b"cancel:k11"]).await;
    assert_eq!(exists, 0);
}
