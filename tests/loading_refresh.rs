//! Background refresh: stale-while-revalidate, XFetch, and the background
//! work stopping with the cache. Time is tokio's paused clock.

mod loading_support;

use std::io;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use cachex::{Cache, Error};
use loading_support::{settle, Calls, DropFlag};
use tokio::time::{advance, sleep};

const TTL: Duration = Duration::from_secs(60);
const WINDOW: Duration = Duration::from_secs(10);
const SECOND: Duration = Duration::from_secs(1);

fn swr_cache() -> Cache<&'static str> {
    Cache::builder()
        .default_ttl(TTL)
        .jitter(0.0)
        .stale_while_revalidate(WINDOW)
        .build()
}

async fn failing_refresh() -> Result<&'static str, io::Error> {
    sleep(SECOND).await;
    Err(io::Error::other("db down"))
}

#[tokio::test(start_paused = true)]
async fn serves_the_old_value_and_refreshes_exactly_once_in_the_background() {
    let cache = swr_cache();
    let calls = Calls::default();
    cache
        .get_or_load("k", calls.returning("v1", SECOND))
        .await
        .unwrap();

    // Outside the window: a plain hit.
    advance(TTL - SECOND - WINDOW - SECOND).await;
    assert_eq!(
        cache
            .get_or_load("k", calls.returning("v2", SECOND))
            .await
            .unwrap(),
        "v1"
    );
    settle().await;
    assert_eq!(calls.get(), 1);

    // Inside it: every caller gets v1 at once; one refresh starts.
    advance(2 * SECOND).await;
    for _ in 0..50 {
        assert_eq!(
            cache
                .get_or_load("k", calls.returning("v2", SECOND))
                .await
                .unwrap(),
            "v1"
        );
    }
    settle().await;
    assert_eq!(calls.get(), 2, "one refresh for 50 stale hits");

    advance(SECOND).await;
    settle().await;
    assert_eq!(cache.get("k").await.unwrap(), Some("v2"));
    assert_eq!(cache.remaining_ttl("k").await.unwrap(), Some(Some(TTL)));
    let stats = cache.stats();
    assert_eq!(
        (stats.loads, stats.refreshes, stats.stale_served),
        (1, 1, 50)
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_refresh_keeps_the_old_value_until_it_expires() {
    let cache = swr_cache();
    let calls = Calls::default();
    cache
        .get_or_load("k", calls.returning("v1", Duration::ZERO))
        .await
        .unwrap();

    advance(TTL - WINDOW / 2).await;
    assert_eq!(cache.get_or_load("k", failing_refresh).await.unwrap(), "v1");
    settle().await; // the refresh starts...
    advance(SECOND).await; // ...and fails
    settle().await;
    let stats = cache.stats();
    assert_eq!(
        (stats.refreshes, stats.refresh_errors),
        (1, 1),
        "a failed refresh is a refresh, as `cachex_refreshes_total` counts it"
    );
    assert_eq!(
        cache.get("k").await.unwrap(),
        Some("v1"),
        "kept after the failure"
    );

    // Until it expires; then a caller loads in the foreground.
    advance(WINDOW / 2).await;
    assert_eq!(cache.get("k").await.unwrap(), None);
    assert_eq!(
        cache
            .get_or_load("k", calls.returning("v3", SECOND))
            .await
            .unwrap(),
        "v3"
    );
    assert_eq!(cache.stats().loads, 2);
}

#[tokio::test(start_paused = true)]
async fn callers_arriving_after_expiry_join_the_running_refresh() {
    let cache = swr_cache();
    let calls = Calls::default();
    cache
        .get_or_load("k", calls.returning("v1", Duration::ZERO))
        .await
        .unwrap();

    advance(TTL - SECOND).await;
    let slow = calls.returning("v2", 10 * SECOND);
    assert_eq!(cache.get_or_load("k", slow).await.unwrap(), "v1");
    settle().await;

    advance(2 * SECOND).await; // expired, refresh still running
    assert_eq!(cache.get("k").await.unwrap(), None);
    let unused = Calls::default();
    assert_eq!(
        cache
            .get_or_load("k", unused.returning("v3", SECOND))
            .await
            .unwrap(),
        "v2"
    );
    assert_eq!(unused.get(), 0);
    assert_eq!(calls.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn entries_that_never_expire_are_not_refreshed() {
    let cache = swr_cache();
    cache.set("k", "forever", cachex::Ttl::Never).await.unwrap();
    advance(TTL * 10).await;
    let calls = Calls::default();
    assert_eq!(
        cache
            .get_or_load("k", calls.returning("new", SECOND))
            .await
            .unwrap(),
        "forever"
    );
    settle().await;
    assert_eq!(calls.get(), 0);
}

/// XFetch refreshes a hit with probability exp(−remaining / (delta·beta)):
/// checked over 2,000 keys, each loaded in delta = 10 s, with a fixed seed.
#[tokio::test(start_paused = true)]
async fn xfetch_refreshes_early_with_the_predicted_probability() {
    const KEYS: usize = 2_000;
    let delta = 10 * SECOND;
    let cache: Cache<u32> = Cache::builder()
        .default_ttl(100 * SECOND)
        .jitter(0.0)
        .xfetch(1.0)
        .seed(7)
        .capacity(2 * KEYS as u64)
        .build();
    let key = |i: usize| format!("k{i}");
    let calls = Calls::default();
    let loads: Vec<_> = (0..KEYS)
        .map(|i| {
            let (cache, loader) = (cache.clone(), calls.returning(1, delta));
            tokio::spawn(async move { cache.get_or_load(&key(i), loader).await })
        })
        .collect();
    for load in loads {
        load.await.unwrap().unwrap();
    }
    // Every entry was written `delta` in, and expires 100 s later.

    // One hit per key; each refreshes with probability `p`.
    let hit_all = |p: f64, candidates: usize| {
        let (cache, calls) = (cache.clone(), calls.clone());
        async move {
            let before = cache.stats().stale_served;
            for i in 0..KEYS {
                cache
                    .get_or_load(&key(i), calls.returning(2, delta))
                    .await
                    .unwrap();
            }
            let refreshed = cache.stats().stale_served - before;
            let expected = p * candidates as f64;
            let sigma = (expected * (1.0 - p)).sqrt();
            assert!(
                (refreshed as f64 - expected).abs() <= 4.0 * sigma + 1.0,
                "{refreshed} early refreshes, expected {expected:.0} ± {sigma:.1}"
            );
            refreshed as usize
        }
    };

    // 50 s left: exp(−50/10), under 1%.
    advance(50 * SECOND).await;
    let early = hit_all((-5.0f64).exp(), KEYS).await;
    // Those refreshes start, and complete: their keys live on.
    settle().await;
    advance(delta).await;
    settle().await;

    // 10 s left for the others: exp(−1), about 37%.
    advance(30 * SECOND).await;
    let late = hit_all((-1.0f64).exp(), KEYS - early).await;
    settle().await;
    advance(delta).await;
    settle().await;

    let stats = cache.stats();
    assert_eq!(
        stats.refreshes as usize,
        early + late,
        "each due hit refreshed once"
    );
    assert_eq!(calls.get(), KEYS + early + late);
}

#[tokio::test(start_paused = true)]
async fn close_aborts_background_refreshes_and_their_waiters_get_closed() {
    let cache = swr_cache();
    let calls = Calls::default();
    cache
        .get_or_load("k", calls.returning("v1", Duration::ZERO))
        .await
        .unwrap();

    advance(TTL - SECOND).await;
    let (flag, refresh_dropped) = DropFlag::new();
    let endless = move || async move {
        let _flag = flag;
        sleep(Duration::from_secs(3600)).await;
        Ok::<_, io::Error>("never")
    };
    assert_eq!(cache.get_or_load("k", endless).await.unwrap(), "v1");
    settle().await;

    advance(2 * SECOND).await; // expired: the next caller joins the refresh
    let waiter = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .get_or_load("k", || async { Ok::<_, io::Error>("unused") })
                .await
        }
    });
    settle().await;

    cache.close().await;
    assert!(
        refresh_dropped.load(SeqCst),
        "close waited for the refresh to go"
    );
    assert!(matches!(waiter.await.unwrap(), Err(Error::Closed)));
    assert_eq!(cache.stats().refreshes, 0);
    assert!(cache.is_closed());
    cache.close().await; // twice is fine
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_aborts_background_refreshes() {
    let cache = swr_cache();
    let calls = Calls::default();
    cache
        .get_or_load("k", calls.returning("v1", Duration::ZERO))
        .await
        .unwrap();
    advance(TTL - SECOND).await;

    let (flag, refresh_dropped) = DropFlag::new();
    let endless = move || async move {
        let _flag = flag;
        sleep(Duration::from_secs(3600)).await;
        Ok::<_, io::Error>("never")
    };
    cache.get_or_load("k", endless).await.unwrap();
    settle().await;
    assert!(!refresh_dropped.load(SeqCst));

    let clone = cache.clone();
    drop(cache);
    settle().await;
    assert!(
        !refresh_dropped.load(SeqCst),
        "a clone still holds the cache"
    );
    drop(clone);
    settle().await;
    assert!(refresh_dropped.load(SeqCst));
}
