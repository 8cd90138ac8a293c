//! `get_or_load`'s singleflight: one load per key, shared by every caller,
//! whatever happens to any one of them. Time is tokio's paused clock.

mod loading_support;

use std::error::Error as _;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use cachex::{Cache, Error, Ttl};
use loading_support::{settle, Calls, DropFlag};
use tokio::time::{sleep, timeout};

const LOAD: Duration = Duration::from_millis(100);

#[tokio::test(start_paused = true)]
async fn ten_thousand_concurrent_callers_share_one_load() {
    let cache: Cache<u64> = Cache::builder().build();
    let calls = Calls::default();
    let callers: Vec<_> = (0..10_000)
        .map(|_| {
            let (cache, loader) = (cache.clone(), calls.returning(42, LOAD));
            tokio::spawn(async move { cache.get_or_load("cold", loader).await })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), 42);
    }
    assert_eq!(calls.get(), 1);
    let stats = cache.stats();
    assert_eq!(stats.misses, 10_000);
    assert_eq!(stats.loads, 1);
    assert_eq!(stats.singleflight_waits, 9_999);
    assert_eq!(stats.load_time, LOAD);
    // Stored: the next call is a hit.
    assert_eq!(cache.get("cold").await.unwrap(), Some(42));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_times_out_leaves_the_others_their_value() {
    let cache: Cache<u64> = Cache::builder().build();
    let calls = Calls::default();
    let leader = tokio::spawn({
        let (cache, loader) = (cache.clone(), calls.returning(7, LOAD));
        async move { cache.get_or_load("k", loader).await }
    });
    settle().await;
    let patient = tokio::spawn({
        let (cache, loader) = (cache.clone(), calls.returning(8, LOAD));
        async move { cache.get_or_load("k", loader).await }
    });

    let impatient = timeout(LOAD / 10, cache.get_or_load("k", calls.returning(9, LOAD))).await;
    assert!(impatient.is_err(), "the impatient caller gets its timeout");

    assert_eq!(leader.await.unwrap().unwrap(), 7);
    assert_eq!(patient.await.unwrap().unwrap(), 7);
    assert_eq!(calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_leader_hands_the_load_to_a_waiter() {
    let cache: Cache<u64> = Cache::builder().build();
    let (first, second) = (Calls::default(), Calls::default());
    let (flag, leader_load_dropped) = DropFlag::new();
    let leader = tokio::spawn({
        let cache = cache.clone();
        let calls = first.clone();
        async move {
            cache
                .get_or_load("k", move || async move {
                    let _flag = flag;
                    calls.returning(1, LOAD)().await
                })
                .await
        }
    });
    settle().await;
    assert_eq!(first.get(), 1);

    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let (cache, loader) = (cache.clone(), second.returning(2, LOAD));
            tokio::spawn(async move { cache.get_or_load("k", loader).await })
        })
        .collect();
    settle().await;
    assert_eq!(second.get(), 0, "waiters wait while the leader loads");

    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    assert!(leader_load_dropped.load(SeqCst));

    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().unwrap(), 2);
    }
    assert_eq!(second.get(), 1, "exactly one waiter took over");
    assert_eq!(cache.stats().loads, 1, "the abandoned load is not counted");
    assert_eq!(cache.stats().singleflight_waits, 4);
}

async fn buggy_query() -> Result<u64, io::Error> {
    sleep(LOAD).await;
    panic!("database driver bug");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_loader_fails_every_waiter_and_the_next_call_loads_again() {
    let cache: Cache<u64> = Cache::builder().build();
    let calls = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load("k", move || {
                        calls.fetch_add(1, SeqCst);
                        buggy_query()
                    })
                    .await
            })
        })
        .collect();
    for caller in callers {
        let error = caller
            .await
            .expect("the panic does not escape")
            .unwrap_err();
        assert!(matches!(
            &error,
            Error::LoaderPanicked { key, message } if &**key == "k" && &**message == "database driver bug"
        ));
        assert!(error.is_loader());
        assert_eq!(
            error.to_string(),
            "loader for key `k` panicked: database driver bug"
        );
    }
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!(cache.stats().load_errors, 1);

    let calls = Calls::default();
    assert_eq!(
        cache
            .get_or_load("k", calls.returning(2, LOAD))
            .await
            .unwrap(),
        2
    );
    assert_eq!(calls.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_loader_error_reaches_every_waiter_and_is_not_cached() {
    let cache: Cache<u64> = Cache::builder().build();
    let calls = Arc::new(AtomicUsize::new(0));
    let failing = |calls: Arc<AtomicUsize>| {
        move || async move {
            calls.fetch_add(1, SeqCst);
            sleep(LOAD).await;
            Err::<u64, _>(io::Error::new(io::ErrorKind::TimedOut, "db timeout"))
        }
    };
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let (cache, loader) = (cache.clone(), failing(calls.clone()));
            tokio::spawn(async move { cache.get_or_load("user:1", loader).await })
        })
        .collect();
    for caller in callers {
        let error = caller.await.unwrap().unwrap_err();
        assert!(matches!(error, Error::Loader { .. }));
        assert_eq!(error.key(), Some("user:1"));
        assert_eq!(error.to_string(), "loader failed for key `user:1`");
        let source = error.source().expect("the loader's error is the source");
        let io = source
            .downcast_ref::<io::Error>()
            .expect("downcasts to the loader's type");
        assert_eq!(io.kind(), io::ErrorKind::TimedOut);
    }
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!(
        cache.get("user:1").await.unwrap(),
        None,
        "errors are not cached"
    );

    let retry = Calls::default();
    assert_eq!(
        cache
            .get_or_load("user:1", retry.returning(5, LOAD))
            .await
            .unwrap(),
        5
    );
    assert_eq!(retry.get(), 1, "the next call loads again");
    let stats = cache.stats();
    assert_eq!(
        (stats.loads, stats.load_errors),
        (2, 1),
        "every call counts"
    );
}

#[tokio::test(start_paused = true)]
async fn loader_errors_of_any_convertible_type_are_accepted() {
    let cache: Cache<u64> = Cache::builder().build();
    let error = cache
        .get_or_load("k", || async { Err::<u64, _>("plain message") })
        .await
        .unwrap_err();
    assert_eq!(error.source().unwrap().to_string(), "plain message");
    let error = cache
        .get_or_load("k", || async { Err::<u64, _>(format!("formatted {}", 1)) })
        .await
        .unwrap_err();
    assert_eq!(error.source().unwrap().to_string(), "formatted 1");
}

#[tokio::test(start_paused = true)]
async fn a_write_during_a_load_wins_over_the_load() {
    let cache: Cache<&'static str> = Cache::builder().build();
    let calls = Calls::default();
    let reader = tokio::spawn({
        let (cache, loader) = (cache.clone(), calls.returning("old", LOAD));
        async move { cache.get_or_load("k", loader).await }
    });
    settle().await;
    cache.set("k", "new", Ttl::Default).await.unwrap();
    // The load answers the caller that asked before the write...
    assert_eq!(reader.await.unwrap().unwrap(), "old");
    // ...but does not overwrite it.
    assert_eq!(cache.get("k").await.unwrap(), Some("new"));

    // Same with a delete: the load in flight is not stored.
    cache.delete("k").await.unwrap();
    let reader = tokio::spawn({
        let (cache, loader) = (cache.clone(), calls.returning("stale", LOAD));
        async move { cache.get_or_load("k", loader).await }
    });
    settle().await;
    assert!(!cache.delete("k").await.unwrap());
    // A caller arriving after the delete starts a fresh load.
    let fresh = cache.get_or_load("k", calls.returning("fresh", LOAD * 2));
    assert_eq!(fresh.await.unwrap(), "fresh");
    assert_eq!(reader.await.unwrap().unwrap(), "stale");
    assert_eq!(cache.get("k").await.unwrap(), Some("fresh"));
}

#[tokio::test(start_paused = true)]
async fn a_value_caller_joining_a_not_found_flight_loads_for_itself() {
    let cache: Cache<u64> = Cache::builder().build();
    let optional = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .get_or_load_optional("k", || async {
                    sleep(LOAD).await;
                    Ok::<Option<u64>, io::Error>(None)
                })
                .await
        }
    });
    settle().await;
    let calls = Calls::default();
    let value = cache
        .get_or_load("k", calls.returning(3, LOAD))
        .await
        .unwrap();
    assert_eq!(value, 3);
    assert_eq!(calls.get(), 1);
    assert_eq!(optional.await.unwrap().unwrap(), None);
    assert_eq!(cache.get("k").await.unwrap(), Some(3));
}

#[tokio::test(start_paused = true)]
async fn distinct_keys_load_independently() {
    let cache: Cache<u64> = Cache::builder().build();
    let calls = Calls::default();
    let callers: Vec<_> = (0..100u64)
        .map(|i| {
            let (cache, loader) = (cache.clone(), calls.returning(i, LOAD));
            tokio::spawn(async move { cache.get_or_load(&format!("k{}", i % 10), loader).await })
        })
        .collect();
    for (i, caller) in callers.into_iter().enumerate() {
        assert_eq!(caller.await.unwrap().unwrap() % 10, i as u64 % 10);
    }
    assert_eq!(calls.get(), 10);
}
