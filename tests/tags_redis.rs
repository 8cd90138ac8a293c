//! Tags against real Redis: the commands a tagged read, write and
//! invalidation send (`INFO commandstats`), tag keys deleted behind
//! cachex's back, batches, the 3-master cluster, a load racing an
//! invalidation from another cache, and the hybrid store across two OS
//! processes (L1 hits of tagged entries with no round trip; an
//! invalidation in one process seen by the other's L1).
#![cfg(feature = "redis")]

mod hybrid_support;
mod redis_support;

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cachex::store::{HybridStore, RedisStore, Store};
use cachex::{Cache, Ttl};
use hybrid_support::{eventually, guarded, say, ChildProcess};
use redis_support::{command_calls, counts, raw, raw_cmd, sent, RedisCluster, RedisServer};

async fn redis_cache(server: &RedisServer, prefix: &str, script: bool) -> Cache<String> {
    let store: RedisStore<String> = redis_support::builder(server, prefix)
        .read_tags_in_script(script)
        .build()
        .await
        .unwrap();
    Cache::builder().store(store).build()
}

#[tokio::test]
async fn tagged_reads_writes_and_invalidations_cost_what_the_docs_say() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "tags", false).await;
    let tagged = cache.tagged(["user:7", "users"]).unwrap();

    let before = command_calls(&server).await;
    tagged
        .set("profile", "alice".into(), Ttl::Default)
        .await
        .unwrap();
    let after_set = command_calls(&server).await;
    // One script per tag (sent together), reading (or starting) its
    // version, then the SET. The scripts' own GET and SET show up too.
    let set = sent(&before, &after_set);
    assert_eq!(
        set.get("evalsha").or(set.get("eval")).copied(),
        Some(2),
        "{set:?}"
    );
    assert_eq!(set.get("set").copied(), Some(3), "{set:?}");

    // A plain read: GET, then one MGET of its tags.
    assert_eq!(
        cache.get("profile").await.unwrap().as_deref(),
        Some("alice")
    );
    let after_get = command_calls(&server).await;
    assert_eq!(
        sent(&after_set, &after_get),
        counts(&[("get", 1), ("mget", 1)])
    );

    // Untagged entries cost a GET alone.
    cache.set("motd", "hi".into(), Ttl::Default).await.unwrap();
    let before = command_calls(&server).await;
    assert_eq!(cache.get("motd").await.unwrap().as_deref(), Some("hi"));
    assert_eq!(
        sent(&before, &command_calls(&server).await),
        counts(&[("get", 1)])
    );

    // Invalidation: one script per tag; O(1) however many entries.
    let before = command_calls(&server).await;
    cache.invalidate_tag("user:7").await.unwrap();
    let invalidated = sent(&before, &command_calls(&server).await);
    assert_eq!(
        invalidated.get("evalsha").copied(),
        Some(1),
        "{invalidated:?}"
    );
    assert_eq!(cache.get("profile").await.unwrap(), None);
    assert_eq!(cache.get("motd").await.unwrap().as_deref(), Some("hi"));
}

#[tokio::test]
async fn with_the_read_script_a_tagged_read_is_one_round_trip() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "script", true).await;
    let tagged = cache.tagged(["a", "b"]).unwrap();
    tagged.set("k", "v".into(), Ttl::Default).await.unwrap();
    cache.set("plain", "p".into(), Ttl::Default).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v"));

    let before = command_calls(&server).await;
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v"));
    let read = sent(&before, &command_calls(&server).await);
    // One EVALSHA; inside it, the entry's GET and one GET per tag.
    assert_eq!(read, counts(&[("evalsha", 1), ("get", 3)]));
    assert_eq!(cache.get("plain").await.unwrap().as_deref(), Some("p"));

    cache.invalidate_tag("b").await.unwrap();
    assert_eq!(cache.get("k").await.unwrap(), None);
    assert_eq!(cache.get("plain").await.unwrap().as_deref(), Some("p"));
    // Another cache without the script reads the same entries the same way.
    let other = redis_cache(&server, "script", false).await;
    assert_eq!(other.get("k").await.unwrap(), None);
    assert_eq!(other.get("plain").await.unwrap().as_deref(), Some("p"));
}

#[tokio::test]
async fn a_tag_key_lost_behind_cachexs_back_invalidates_its_entries_for_good() {
    for script in [false, true] {
        let server = RedisServer::start();
        let cache = redis_cache(&server, "lost", script).await;
        let store: RedisStore<String> = redis_support::store(&server, "lost").await;
        cache
            .tagged(["t"])
            .unwrap()
            .set("k", "v1".into(), Ttl::Default)
            .await
            .unwrap();
        let mut conn = raw(&server).await;
        let tag_key = "lost:__cachex_tag:{t}";
        let version: String = raw_cmd(&mut conn, &[b"GET", tag_key.as_bytes()]).await;
        assert!(version.parse::<u64>().unwrap() > 1 << 32);
        // Evicted, or deleted by hand.
        let _: i64 = raw_cmd(&mut conn, &[b"DEL", tag_key.as_bytes()]).await;
        assert_eq!(cache.get("k").await.unwrap(), None, "script: {script}");
        // The store itself answers nothing for it, not only the cache.
        assert!(store.get("k").await.unwrap().is_none());
        // A new write starts the tag again, at a fresh version: the new
        // entry is served, and the old one would not have been.
        cache
            .tagged(["t"])
            .unwrap()
            .set("k2", "v2".into(), Ttl::Default)
            .await
            .unwrap();
        assert_eq!(cache.get("k2").await.unwrap().as_deref(), Some("v2"));
        assert_eq!(cache.get("k").await.unwrap(), None);
        let fresh: String = raw_cmd(&mut conn, &[b"GET", tag_key.as_bytes()]).await;
        assert_ne!(fresh, version);
        // Lost again, then invalidated: still nothing old comes back.
        let _: i64 = raw_cmd(&mut conn, &[b"DEL", tag_key.as_bytes()]).await;
        cache.invalidate_tag("t").await.unwrap();
        assert_eq!(cache.get("k2").await.unwrap(), None);
        // The same once more: an invalidation of a lost tag does not
        // restart it where the previous one did.
        let view = cache.tagged(["t"]).unwrap();
        view.set("k3", "v3".into(), Ttl::Default).await.unwrap();
        let _: i64 = raw_cmd(&mut conn, &[b"DEL", tag_key.as_bytes()]).await;
        cache.invalidate_tag("t").await.unwrap();
        assert_eq!(cache.get("k3").await.unwrap(), None, "script: {script}");
    }
}

#[tokio::test]
async fn a_batch_checks_its_entries_tags_with_one_more_mget() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "batch", false).await;
    let odd = cache.tagged(["odd"]).unwrap();
    let even = cache.tagged(["even"]).unwrap();
    for i in 0..10u32 {
        let view = if i % 2 == 1 { &odd } else { &even };
        view.set(&format!("k{i}"), i.to_string(), Ttl::Default)
            .await
            .unwrap();
    }
    cache.set("plain", "p".into(), Ttl::Default).await.unwrap();
    cache.invalidate_tag("odd").await.unwrap();
    let keys: Vec<String> = (0..10)
        .map(|i| format!("k{i}"))
        .chain(["plain".into()])
        .collect();
    let before = command_calls(&server).await;
    let got = cache.get_many(&keys).await.unwrap();
    assert_eq!(
        sent(&before, &command_calls(&server).await),
        counts(&[("mget", 2)])
    );
    for (i, value) in got.iter().take(10).enumerate() {
        let expected = (i % 2 == 0).then(|| i.to_string());
        assert_eq!(value, &expected, "k{i}");
    }
    assert_eq!(got[10].as_deref(), Some("p"));
    // A tagged batch write reads its tags once.
    let before = command_calls(&server).await;
    even.set_many(
        [("x".to_string(), "1".to_string()), ("y".into(), "2".into())],
        Ttl::Default,
    )
    .await
    .unwrap();
    let wrote = sent(&before, &command_calls(&server).await);
    assert_eq!(wrote.get("evalsha").copied(), Some(1), "{wrote:?}");
    cache.invalidate_tag("even").await.unwrap();
    assert_eq!(cache.get_many(&["x", "y"]).await.unwrap(), vec![None, None]);
}

#[tokio::test]
async fn tags_work_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    let store: RedisStore<String> = RedisStore::builder()
        .cluster(cluster.urls())
        .prefix("ctags")
        .read_tags_in_script(true) // ignored on a cluster
        .build()
        .await
        .unwrap();
    let cache: Cache<String> = Cache::builder().store(store).build();
    // Tags and keys spread over the masters.
    for i in 0..30u32 {
        let tags = [format!("t{}", i % 3), "all".to_string()];
        let view = cache.tagged(&tags).unwrap();
        view.set(&format!("k{i}"), i.to_string(), Ttl::Default)
            .await
            .unwrap();
    }
    cache.invalidate_tag("t1").await.unwrap();
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    let batch = cache.get_many(&keys).await.unwrap();
    for i in 0..30usize {
        let expected = (i % 3 != 1).then(|| i.to_string());
        assert_eq!(cache.get(&keys[i]).await.unwrap(), expected, "k{i}");
        assert_eq!(batch[i], expected, "k{i} in the batch");
    }
    cache.invalidate_tags(["all"]).await.unwrap();
    assert!(cache
        .get_many(&keys)
        .await
        .unwrap()
        .iter()
        .all(Option::is_none));
}

#[tokio::test]
async fn a_load_racing_an_invalidation_elsewhere_never_stores_a_value_read_before_it() {
    let server = RedisServer::start();
    // Two caches (two processes, as far as their singleflight knows).
    let loader_side = redis_cache(&server, "race", false).await;
    let other_side = redis_cache(&server, "race", false).await;
    for round in 0..20u32 {
        let key = format!("k{round}");
        let gate = Arc::new(tokio::sync::Notify::new());
        let load = {
            let cache = loader_side.clone();
            let gate = gate.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let tagged = cache.tagged(["t"]).unwrap();
                tagged
                    .get_or_load(&key, move || async move {
                        // Reads the database before the change...
                        let old = "old".to_string();
                        gate.notified().await;
                        Ok::<_, std::io::Error>(old)
                    })
                    .await
            })
        };
        // ...which changes now, and its tag is invalidated.
        tokio::time::sleep(Duration::from_millis(5)).await;
        other_side.invalidate_tag("t").await.unwrap();
        gate.notify_one();
        guarded("the load", load).await.unwrap().unwrap();
        // Whatever the order, no cache serves the pre-invalidation value.
        assert_eq!(other_side.get(&key).await.unwrap(), None, "round {round}");
        assert_eq!(loader_side.get(&key).await.unwrap(), None, "round {round}");
    }
}

/// Environment of the child process: the server's URL.
const CHILD_URL: &str = "CACHEX_TAGS_CHILD_URL";

/// The other process of [`an_invalidation_in_one_process_reaches_the_others_l1`]:
/// holds tagged and untagged entries in L1, then sees the tagged ones
/// miss (and load again) once the parent invalidates their tag.
#[tokio::test]
async fn tags_child_process_role() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let l2 = RedisStore::<String>::builder()
        .url(url)
        .prefix("procs")
        .read_tags_in_script(true)
        .build()
        .await
        .unwrap();
    let store = HybridStore::builder(l2).build().await.unwrap();
    let cache: Cache<String> = Cache::builder().store(store.clone()).build();
    let loads = Arc::new(AtomicU64::new(0));
    let tagged = cache.tagged(["user:7"]).unwrap();
    let keys = ["u7:a", "u7:b", "u7:c"];
    for key in keys {
        let loads = loads.clone();
        let got = tagged
            .get_or_load(key, move || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>("loaded".to_string())
            })
            .await
            .unwrap();
        assert_eq!(got, "parent", "read from L2, written by the parent");
    }
    assert_eq!(cache.get("plain").await.unwrap().as_deref(), Some("plain"));
    assert!(keys.iter().all(|key| store.l1_contains(key)));
    let l2_reads = store.stats().l2_hits;
    // L1 hits of tagged entries: no round trip.
    for key in keys {
        assert_eq!(cache.get(key).await.unwrap().as_deref(), Some("parent"));
    }
    assert_eq!(store.stats().l2_hits, l2_reads);
    say("holding");
    let mut lines = BufReader::new(std::io::stdin()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "invalidated");
    eventually("the tagged entries miss in the child's L1", || async {
        cache.get("u7:a").await.unwrap().is_none()
    })
    .await;
    for key in keys {
        let loads = loads.clone();
        let got = tagged
            .get_or_load(key, move || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>("reloaded".to_string())
            })
            .await
            .unwrap();
        assert_eq!(got, "reloaded", "{key}");
    }
    // The untagged entry is still an L1 hit.
    let l2_reads = store.stats().l2_hits + store.stats().l2_misses;
    assert_eq!(cache.get("plain").await.unwrap().as_deref(), Some("plain"));
    assert_eq!(store.stats().l2_hits + store.stats().l2_misses, l2_reads);
    say(&format!("loads {}", loads.load(Ordering::SeqCst)));
}

#[tokio::test]
async fn an_invalidation_in_one_process_reaches_the_others_l1() {
    let server = RedisServer::start();
    let store = hybrid_support::hybrid::<String>(&server, "procs")
        .await
        .build()
        .await
        .unwrap();
    let cache: Cache<String> = Cache::builder().store(store.clone()).build();
    let tagged = cache.tagged(["user:7"]).unwrap();
    for key in ["u7:a", "u7:b", "u7:c"] {
        tagged
            .set(key, "parent".into(), Ttl::Default)
            .await
            .unwrap();
    }
    cache
        .set("plain", "plain".into(), Ttl::Default)
        .await
        .unwrap();
    // This process's own L1 hits of tagged entries send nothing.
    let before = command_calls(&server).await;
    assert_eq!(cache.get("u7:a").await.unwrap().as_deref(), Some("parent"));
    assert_eq!(sent(&before, &command_calls(&server).await), counts(&[]));

    let mut child = ChildProcess::spawn("tags_child_process_role", (CHILD_URL, &server.url()));
    assert_eq!(child.hear().await, "holding");
    let before = command_calls(&server).await;
    cache.invalidate_tag("user:7").await.unwrap();
    let invalidated = sent(&before, &command_calls(&server).await);
    assert_eq!(
        invalidated.get("publish").copied(),
        Some(1),
        "{invalidated:?}"
    );
    // Here at once, without a round trip.
    assert_eq!(cache.get("u7:b").await.unwrap(), None);
    assert_eq!(cache.get("plain").await.unwrap().as_deref(), Some("plain"));
    child.tell("invalidated");
    // Every tagged key loaded again in the child, and only those.
    assert_eq!(child.hear().await, "loads 3");
    child.finish();
    assert_eq!(
        cache.get("u7:c").await.unwrap().as_deref(),
        Some("reloaded")
    );
}
