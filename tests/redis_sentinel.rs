//! Sentinel failover with real processes: a master, its replica and three
//! `redis-sentinel`s (quorum 2). A store built with `sentinel(...)` keeps
//! writing while the master is killed, follows the master the Sentinels
//! promote, and loses no write that was acknowledged and replicated before
//! the kill; a hybrid store's invalidation follows it too. A failover
//! asked of the Sentinels while the old master lives (it is demoted, and
//! answers `READONLY`) is followed as well. Each scenario prints its
//! figures (time to recover, errors, p99).
#![cfg(feature = "redis")]

mod chaos_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cachex::store::hybrid::HybridStore;
use cachex::store::{Envelope, RedisStore, Store};
use cachex_testkit::SentinelGroup;
use chaos_support::{eventually, guarded, Figures, Ledger};

const KEYS: usize = 50;
/// How long the Sentinels get to fail over (they need about 2 to 5 s).
const FAILOVER: Duration = Duration::from_secs(30);

async fn sentinel_store(group: &SentinelGroup, prefix: &str) -> RedisStore<u64> {
    RedisStore::builder()
        .sentinel(group.sentinel_urls(), group.service())
        .prefix(prefix)
        .timeout(Duration::from_millis(300))
        .build()
        .await
        .expect("connect through the Sentinels")
}

/// Writes new versions of every key, in turn, until `stop`; each call is
/// counted in `figures`, each success marks recovery.
fn writer(
    store: RedisStore<u64>,
    ledger: Arc<Ledger>,
    figures: Arc<Figures>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut key = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
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
                // Do not spin on a dead master.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            key = (key + 1) % ledger.keys();
        }
    })
}

/// Waits until the replica has everything acknowledged so far: Redis
/// replicates asynchronously, so only writes the replica had when the
/// master died can survive its death (Redis's documented behaviour).
fn wait_replicated(group: &SentinelGroup, ledger: &Ledger, prefix: &str) {
    let replica = &group.servers()[1];
    let deadline = Instant::now() + FAILOVER;
    for key in 0..ledger.keys() {
        let want = ledger.floor(key);
        loop {
            let reply = replica
                .command(&format!("GET {prefix}:{key}"))
                .unwrap_or_default();
            if want == 0 || reply.len() > 5 {
                break; // present (the value's exact bytes are checked later)
            }
            assert!(Instant::now() < deadline, "the replica never got {key}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_and_the_store_follows_it() {
    let mut group = SentinelGroup::start();
    let store = sentinel_store(&group, "sf").await;
    let ledger = Arc::new(Ledger::new(KEYS));
    for key in 0..KEYS {
        let version = ledger.attempt(key);
        store
            .set(&key.to_string(), Envelope::found(version), None)
            .await
            .unwrap();
        ledger.ack(key, version);
    }
    wait_replicated(&group, &ledger, "sf");
    // The versions that must survive: replicated before the kill.
    let survived: Vec<u64> = (0..KEYS).map(|key| ledger.floor(key)).collect();

    let figures = Arc::new(Figures::new("sentinel: master killed, writes continue"));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = writer(store.clone(), ledger.clone(), figures.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;

    figures.fault();
    let killed = Instant::now();
    let old = tokio::task::block_in_place(|| group.kill_master());
    let new = tokio::task::block_in_place(|| group.wait_for_new_master(&old, FAILOVER));
    assert_ne!(old, new);
    let promoted = killed.elapsed();
    eventually("a write succeeds on the new master", || async {
        figures.recovered_after().is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    guarded("the writer", writing).await.unwrap();
    figures.print();
    println!(
        "  the Sentinels promoted the replica {} ms after the kill",
        promoted.as_millis()
    );

    // Every read is answered by the new master: nothing replicated before
    // the kill is lost, and every acknowledged write after it is there.
    for (key, &survived) in survived.iter().enumerate() {
        let found = store
            .get(&key.to_string())
            .await
            .unwrap()
            .and_then(|s| s.envelope.into_value());
        assert!(found >= Some(survived), "key {key}: {found:?}");
        // Writes acknowledged after the failover went to the new master.
        let acked_after = ledger.floor(key) > survived;
        if acked_after {
            ledger.check_final(key, found).unwrap();
        }
    }
    let new_master = group
        .servers()
        .iter()
        .find(|s| s.addr() == new)
        .expect("the new master is the replica");
    assert!(new_master
        .command("INFO replication")
        .unwrap()
        .contains("role:master"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_master_answering_readonly_is_left_for_the_new_one() {
    let group = SentinelGroup::start();
    let store = sentinel_store(&group, "sr").await;
    store.set("k", Envelope::found(1), None).await.unwrap();

    let figures = Arc::new(Figures::new(
        "sentinel: manual failover, old master demoted",
    ));
    let ledger = Arc::new(Ledger::new(KEYS));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = writer(store.clone(), ledger.clone(), figures.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;

    figures.fault();
    let old = group.failover();
    let new = tokio::task::block_in_place(|| group.wait_for_new_master(&old, FAILOVER));
    // The Sentinels demote the old master only seconds later; until then it
    // is a second master (and takes writes that its demotion will drop:
    // Redis's split brain, not the client's). Demote it now, by hand, as
    // they will, without dropping its clients: the store's connection to it
    // then gets READONLY, which must send the store to the Sentinels.
    let old_server = group
        .servers()
        .iter()
        .find(|s| s.addr() == old)
        .expect("the old master");
    let (host, port) = new.split_once(':').unwrap();
    let demoted = old_server
        .command(&format!("REPLICAOF {host} {port}"))
        .unwrap();
    assert!(demoted.starts_with("+OK"), "{demoted}");
    let before = figures.calls();
    eventually("writes succeed after the failover", || async {
        figures.calls() > before + 20 && figures.recovered_after().is_some()
    })
    .await;
    let errors_then = figures.errors();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    guarded("the writer", writing).await.unwrap();
    figures.print();
    let stats = store.stats();
    assert!(stats.server_errors >= 1, "READONLY was met: {stats:?}");
    assert_eq!(
        figures.errors(),
        errors_then,
        "once it follows the new master {new}, no more errors"
    );
    for key in 0..KEYS {
        let found = store
            .get(&key.to_string())
            .await
            .unwrap()
            .and_then(|s| s.envelope.into_value());
        ledger.check_final(key, found).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_invalidation_follows_the_failover() {
    let mut group = SentinelGroup::start();
    let hybrid = || async {
        HybridStore::builder(sentinel_store(&group, "sh").await)
            .l2_timeout(Duration::from_millis(300))
            .breaker(3, Duration::from_millis(100))
            .build()
            .await
            .unwrap()
    };
    let (a, b) = (hybrid().await, hybrid().await);
    let old = tokio::task::block_in_place(|| group.kill_master());
    tokio::task::block_in_place(|| group.wait_for_new_master(&old, FAILOVER));
    eventually("both resubscribed on the new master", || async {
        a.stats().resubscriptions >= 1 && b.stats().resubscriptions >= 1
    })
    .await;
    eventually("a's write reaches the new master", || async {
        a.set("k", Envelope::found(1), None).await.is_ok()
            && a.l2().get("k").await.is_ok_and(|found| found.is_some())
    })
    .await;
    eventually("b reads k into L1", || async {
        b.get("k").await.is_ok_and(|found| found.is_some()) && b.l1_contains("k")
    })
    .await;
    a.set("k", Envelope::found(2), None).await.unwrap();
    eventually("b's L1 drops k", || async { !b.l1_contains("k") }).await;
}
