//! The Redis store on a real 3-master Redis Cluster: keys spread over slots
//! and nodes, and `clear` by prefix on every master.
#![cfg(feature = "redis")]

mod redis_support;

use std::time::Duration;

use cachex::store::redis::RedisStore;
use cachex::store::{Envelope, Store};
use cachex::Cache;
use redis_support::{raw, raw_cmd, RedisCluster};

const KEYS: u64 = 4_500;

async fn cluster_store(cluster: &RedisCluster, prefix: &str) -> RedisStore<u64> {
    RedisStore::builder()
        .cluster(cluster.urls())
        .prefix(prefix)
        .build()
        .await
        .unwrap()
}

/// Keys on each node, read from the node itself.
async fn keys_per_node(cluster: &RedisCluster) -> Vec<i64> {
    let mut counts = Vec::new();
    for node in cluster.nodes() {
        let mut conn = raw(node).await;
        counts.push(raw_cmd(&mut conn, &[b"DBSIZE"]).await);
    }
    counts
}

#[tokio::test]
async fn keys_spread_over_the_masters_and_clear_visits_them_all() {
    let cluster = RedisCluster::start(3);
    let store = cluster_store(&cluster, "spread").await;
    let other = cluster_store(&cluster, "other").await;

    for i in 0..KEYS {
        let ttl = (i % 2 == 0).then_some(Duration::from_secs(600));
        store
            .set(&i.to_string(), Envelope::found(i), ttl)
            .await
            .unwrap();
    }
    for i in 0..30 {
        other
            .set(&i.to_string(), Envelope::found(i), None)
            .await
            .unwrap();
    }
    for i in (0..KEYS).step_by(97) {
        let stored = store.get(&i.to_string()).await.unwrap().unwrap();
        assert_eq!(stored.envelope.into_value(), Some(i));
        assert_eq!(stored.remaining_ttl.is_some(), i % 2 == 0);
    }

    // Every master holds a share, each more than one SCAN batch (1,000).
    let before = keys_per_node(&cluster).await;
    assert_eq!(before.iter().sum::<i64>(), (KEYS + 30) as i64);
    assert!(before.iter().all(|&n| n > 1_000), "{before:?}");

    store.clear().await.unwrap();
    let after = keys_per_node(&cluster).await;
    assert_eq!(after.iter().sum::<i64>(), 30, "{after:?}");
    assert!(store.get("1").await.unwrap().is_none());
    assert_eq!(
        other.get("1").await.unwrap().unwrap().envelope.into_value(),
        Some(1)
    );

    assert!(other.delete("1").await.unwrap());
    assert!(!other.delete("1").await.unwrap());
    assert_eq!(other.remaining_ttl("2").await.unwrap(), Some(None));
}

#[tokio::test]
async fn a_cache_runs_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    let cache: Cache<u64> = Cache::builder()
        .store(cluster_store(&cluster, "cache").await)
        .build();
    for i in 0..50u64 {
        let key = format!("k{i}");
        let v = cache
            .get_or_load(&key, move || async move { Ok::<_, std::io::Error>(i) })
            .await
            .unwrap();
        assert_eq!(v, i);
        assert_eq!(cache.get(&key).await.unwrap(), Some(i));
    }
    cache.clear().await.unwrap();
    assert_eq!(cache.get("k1").await.unwrap(), None);
}
