//! Cluster master failover: a cluster of 3 masters with a replica each;
//! the master of some keys is killed, its replica is promoted (the
//! cluster's own failover, node timeout 1.5 s), and a cluster store that
//! kept writing through it serves those keys again once the cluster has
//! healed, with every write replicated before the kill still there.
//! Prints the scenario's figures (time to recover, errors, p99).
#![cfg(feature = "redis")]

mod chaos_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachex::store::{Envelope, RedisStore, Store};
use cachex_testkit::RedisCluster;
use chaos_support::{eventually, guarded, Figures, Ledger};

const KEYS: usize = 60;
const HEAL: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_by_its_replica_and_its_keys_are_served_again() {
    let mut cluster = RedisCluster::start_with_replicas(3, 1);
    let store: RedisStore<u64> = RedisStore::builder()
        .cluster(cluster.urls())
        .prefix("cf")
        .timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let ledger = Arc::new(Ledger::new(KEYS));
    for key in 0..KEYS {
        let version = ledger.attempt(key);
        store
            .set(&key.to_string(), Envelope::found(version), None)
            .await
            .unwrap();
        ledger.ack(key, version);
    }
    tokio::task::block_in_place(|| cluster.wait_replicated(HEAL));
    let survived: Vec<u64> = (0..KEYS).map(|key| ledger.floor(key)).collect();

    // The master of key 0's slot dies; keys on it are found by asking the
    // cluster, not assumed.
    let victim = cluster
        .master_of(&store.redis_key("0"))
        .expect("a master serves key 0");
    let on_victim: Vec<usize> = (0..KEYS)
        .filter(|key| cluster.master_of(&store.redis_key(&key.to_string())) == Some(victim))
        .collect();
    assert!(!on_victim.is_empty());

    // A writer over the victim's keys; its figures are the scenario's.
    let figures = Arc::new(Figures::new(
        "cluster: a master killed, its replica promoted",
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let writing = {
        let (store, ledger, figures, stop, keys) = (
            store.clone(),
            ledger.clone(),
            figures.clone(),
            stop.clone(),
            on_victim.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = keys[i % keys.len()];
                let version = ledger.attempt(key);
                let started = Instant::now();
                let result = store
                    .set(&key.to_string(), Envelope::found(version), None)
                    .await;
                figures.call(started, &result);
                if result.is_ok() {
                    ledger.ack(key, version);
                    figures.recovered();
                } else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                i += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Writes the victim acknowledged after `wait_replicated` may die with
    // it (asynchronous replication); the writer rewrites every key after
    // the failover, so the final check below holds all the same.
    figures.fault();
    cluster.nodes_mut()[victim].kill();
    eventually("writes to the dead master's keys succeed again", || async {
        figures.recovered_after().is_some()
    })
    .await;
    tokio::task::block_in_place(|| cluster.wait_healthy(HEAL));
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    guarded("the writer", writing).await.unwrap();
    figures.print();
    assert!(figures.errors() > 0, "the kill was noticed");

    // A new master serves the victim's slots, and every key is readable:
    // nothing replicated before the kill was lost, every write
    // acknowledged after it is there.
    let promoted = cluster.master_of(&store.redis_key("0")).unwrap();
    assert_ne!(promoted, victim);
    for (key, &survived) in survived.iter().enumerate() {
        let found = store
            .get(&key.to_string())
            .await
            .unwrap_or_else(|e| panic!("key {key}: {e}"))
            .and_then(|s| s.envelope.into_value());
        assert!(found >= Some(survived), "key {key}: {found:?}");
        if on_victim.contains(&key) {
            ledger.check_final(key, found).unwrap();
        }
    }
}
