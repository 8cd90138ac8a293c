//! Coherence across stores: a write or delete in one hybrid store drops
//! the key from every other store's L1, between two stores of one process
//! and between two OS processes (this test binary runs itself again as the
//! second process), all on one real `redis-server`.
#![cfg(feature = "redis")]

mod hybrid_support;

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cachex::store::hybrid::Invalidated;
use cachex::store::{Envelope, Store};
use cachex::{Cache, Ttl};
use hybrid_support::{eventually, hybrid, say, ChildProcess, RedisServer};

fn value<V>(stored: Option<cachex::store::Stored<V>>) -> Option<V> {
    stored.and_then(|s| s.envelope.into_value())
}

#[tokio::test]
async fn a_write_in_one_store_drops_the_key_from_the_others_l1() {
    let server = RedisServer::start();
    let a = hybrid::<u64>(&server, "coh").await.build().await.unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    let b = hybrid::<u64>(&server, "coh")
        .await
        .on_invalidation(move |what| {
            if what == Invalidated::Key("k") {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .await
        .unwrap();

    a.set("k", Envelope::found(1), None).await.unwrap();
    // b's read may race a's invalidation of that very write, which
    // (conservatively) cancels the promotion: read until it sticks.
    eventually("b promotes k into its L1", || async {
        assert_eq!(value(b.get("k").await.unwrap()), Some(1));
        b.l1_contains("k")
    })
    .await;

    a.set("k", Envelope::found(2), None).await.unwrap();
    eventually("b's L1 drops k after a's set", || async {
        !b.l1_contains("k")
    })
    .await;
    assert_eq!(value(b.get("k").await.unwrap()), Some(2));
    assert!(
        seen.load(Ordering::SeqCst) >= 1,
        "the hook saw the invalidation"
    );
    // A store ignores its own messages: a's L1 kept its own write.
    assert!(a.l1_contains("k"));
    assert_eq!(a.stats().invalidations_received, 0);
    assert!(b.stats().invalidations_received >= 1);
}

#[tokio::test]
async fn a_delete_in_one_store_drops_the_key_from_the_others_l1() {
    let server = RedisServer::start();
    let a = hybrid::<u64>(&server, "coh").await.build().await.unwrap();
    let b = hybrid::<u64>(&server, "coh").await.build().await.unwrap();
    b.set("k", Envelope::found(1), None).await.unwrap();
    eventually("a promotes k into its L1", || async {
        assert_eq!(value(a.get("k").await.unwrap()), Some(1));
        a.l1_contains("k")
    })
    .await;
    assert!(b.l1_contains("k"));

    assert!(a.delete("k").await.unwrap());
    assert!(
        !a.l1_contains("k"),
        "the deleter's L1 is clean when delete returns"
    );
    eventually("b's L1 drops k after a's delete", || async {
        !b.l1_contains("k")
    })
    .await;
    assert_eq!(value(b.get("k").await.unwrap()), None);
}

#[tokio::test]
async fn a_clear_in_one_store_empties_the_others_l1_and_prefixes_are_apart() {
    let server = RedisServer::start();
    let a = hybrid::<u64>(&server, "coh").await.build().await.unwrap();
    let b = hybrid::<u64>(&server, "coh").await.build().await.unwrap();
    let other = hybrid::<u64>(&server, "other").await.build().await.unwrap();
    for key in ["x", "y"] {
        a.set(key, Envelope::found(1), None).await.unwrap();
        eventually("b promotes the key", || async {
            assert!(b.get(key).await.unwrap().is_some());
            b.l1_contains(key)
        })
        .await;
    }
    other.set("x", Envelope::found(9), None).await.unwrap();

    a.clear().await.unwrap();
    eventually("b's L1 is emptied", || async {
        !b.l1_contains("x") && !b.l1_contains("y")
    })
    .await;
    assert!(b.get("x").await.unwrap().is_none());
    // Another prefix has its own channel and keys.
    assert!(other.l1_contains("x"));
    assert_eq!(value(other.get("x").await.unwrap()), Some(9));
    assert_eq!(other.stats().invalidations_received, 0);
}

#[tokio::test]
async fn caches_over_two_stores_see_each_others_writes() {
    let server = RedisServer::start();
    let a: Cache<String> = Cache::builder()
        .store(hybrid(&server, "users").await.build().await.unwrap())
        .build();
    let b_store = hybrid::<String>(&server, "users")
        .await
        .build()
        .await
        .unwrap();
    let b: Cache<String> = Cache::builder().store(b_store.clone()).build();

    let loaded = b
        .get_or_load("7", || async {
            Ok::<_, std::io::Error>("alice".to_string())
        })
        .await
        .unwrap();
    assert_eq!(loaded, "alice");
    assert_eq!(a.get("7").await.unwrap().as_deref(), Some("alice"));

    a.set("7", "alicia".to_string(), Ttl::Default)
        .await
        .unwrap();
    eventually("b sees a's write", || async { !b_store.l1_contains("7") }).await;
    let reloaded = b
        .get_or_load("7", || async {
            Ok::<_, std::io::Error>("stale loader".to_string())
        })
        .await
        .unwrap();
    assert_eq!(reloaded, "alicia");
}

/// Environment of the child process: the server's URL.
const CHILD_URL: &str = "CACHEX_HYBRID_CHILD_URL";

/// The second process's side of [`two_processes_invalidate_each_other`].
/// Run by that test as a child; passes at once when run normally.
#[tokio::test]
async fn child_process_role() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let l2 = cachex::store::RedisStore::<u64>::builder()
        .url(url)
        .prefix("procs")
        .build()
        .await
        .unwrap();
    let b = cachex::store::HybridStore::builder(l2)
        .build()
        .await
        .unwrap();
    let mut lines = BufReader::new(std::io::stdin()).lines();
    let mut next = || lines.next().expect("parent closed stdin").unwrap();

    // 1. Hold the parent's value in L1.
    assert_eq!(value(b.get("k").await.unwrap()), Some(1));
    assert!(b.l1_contains("k"));
    say("holding");
    // 2. The parent wrote 2: wait for the invalidation.
    assert_eq!(next(), "wrote");
    eventually("child's L1 drops k", || async { !b.l1_contains("k") }).await;
    assert_eq!(value(b.get("k").await.unwrap()), Some(2));
    // 3. Write 3 ourselves (the parent waits for its own invalidation).
    b.set("k", Envelope::found(3), None).await.unwrap();
    say("wrote");
    // 4. The parent deleted k.
    assert_eq!(next(), "deleted");
    eventually("child's L1 drops k after the delete", || async {
        !b.l1_contains("k")
    })
    .await;
    assert_eq!(value(b.get("k").await.unwrap()), None);
    say("done");
}

#[tokio::test]
async fn two_processes_invalidate_each_other() {
    let server = RedisServer::start();
    let a = hybrid::<u64>(&server, "procs").await.build().await.unwrap();
    a.set("k", Envelope::found(1), None).await.unwrap();

    let mut child = ChildProcess::spawn("child_process_role", (CHILD_URL, &server.url()));
    assert_eq!(child.hear().await, "holding");
    a.set("k", Envelope::found(2), None).await.unwrap();
    child.tell("wrote");

    assert_eq!(child.hear().await, "wrote");
    eventually("parent's L1 drops k after the child's write", || async {
        !a.l1_contains("k")
    })
    .await;
    assert_eq!(value(a.get("k").await.unwrap()), Some(3));

    assert!(a.delete("k").await.unwrap());
    child.tell("deleted");
    assert_eq!(child.hear().await, "done");
    child.finish();
    assert!(a.stats().invalidations_received >= 1);
}
