//! Negative caching: "not found" is cached for the negative TTL, and only
//! for it; errors never are. Time is tokio's paused clock.

mod loading_support;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use cachex::Cache;
use loading_support::Calls;
use tokio::time::advance;

const NEGATIVE_TTL: Duration = Duration::from_secs(10);

fn cache() -> Cache<String> {
    Cache::builder()
        .negative_ttl(NEGATIVE_TTL)
        .jitter(0.0)
        .build()
}

/// A lookup of a row that does not exist, counting its calls.
fn missing_row(
    calls: &Arc<AtomicUsize>,
) -> impl FnOnce() -> std::future::Ready<Result<Option<String>, io::Error>> + Send + 'static {
    let calls = calls.clone();
    move || {
        calls.fetch_add(1, SeqCst);
        std::future::ready(Ok(None))
    }
}

#[tokio::test(start_paused = true)]
async fn not_found_is_cached_for_the_negative_ttl_only() {
    let cache = cache();
    let calls = Arc::new(AtomicUsize::new(0));

    assert_eq!(
        cache
            .get_or_load_optional("user:404", missing_row(&calls))
            .await
            .unwrap(),
        None
    );
    assert_eq!(calls.load(SeqCst), 1);

    // Within the negative TTL: answered from the cache, as "not found".
    advance(NEGATIVE_TTL - Duration::from_millis(1)).await;
    assert_eq!(
        cache
            .get_or_load_optional("user:404", missing_row(&calls))
            .await
            .unwrap(),
        None
    );
    assert_eq!(cache.get("user:404").await.unwrap(), None);
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!(cache.stats().negative_hits, 2);

    // After it: asked again.
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        cache
            .get_or_load_optional("user:404", missing_row(&calls))
            .await
            .unwrap(),
        None
    );
    assert_eq!(calls.load(SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_found_row_replaces_nothing_and_is_cached_normally() {
    let cache = cache();
    let value = cache
        .get_or_load_optional("user:1", || async {
            Ok::<_, io::Error>(Some("alice".to_string()))
        })
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some("alice"));
    advance(NEGATIVE_TTL * 2).await;
    assert_eq!(cache.get("user:1").await.unwrap().as_deref(), Some("alice"));
}

#[tokio::test(start_paused = true)]
async fn a_value_caller_does_not_take_not_found_for_an_answer() {
    let cache = cache();
    let calls = Arc::new(AtomicUsize::new(0));
    cache
        .get_or_load_optional("k", missing_row(&calls))
        .await
        .unwrap();

    let loads = Calls::default();
    let value = cache.get_or_load("k", loads.returning("now here".to_string(), Duration::ZERO));
    assert_eq!(value.await.unwrap(), "now here");
    assert_eq!(loads.get(), 1);
    // The value replaced the negative entry.
    assert_eq!(
        cache
            .get_or_load_optional("k", missing_row(&calls))
            .await
            .unwrap()
            .as_deref(),
        Some("now here")
    );
    assert_eq!(calls.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_zero_negative_ttl_turns_negative_caching_off() {
    let cache: Cache<String> = Cache::builder().negative_ttl(Duration::ZERO).build();
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        assert_eq!(
            cache
                .get_or_load_optional("k", missing_row(&calls))
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(calls.load(SeqCst), 3);
    assert_eq!(cache.remaining_ttl("k").await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn errors_are_never_cached_even_with_negative_caching_on() {
    let cache = cache();
    let calls = Arc::new(AtomicUsize::new(0));
    for attempt in 1..=3 {
        let counter = calls.clone();
        let error = cache
            .get_or_load_optional("k", move || async move {
                counter.fetch_add(1, SeqCst);
                Err::<Option<String>, _>(io::Error::other("db down"))
            })
            .await
            .unwrap_err();
        assert!(error.is_loader());
        assert_eq!(calls.load(SeqCst), attempt);
    }
    assert_eq!(cache.remaining_ttl("k").await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_not_found() {
    let cache = cache();
    let calls = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let cache = cache.clone();
            let calls = calls.clone();
            tokio::spawn(async move {
                cache
                    .get_or_load_optional("k", move || async move {
                        calls.fetch_add(1, SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<Option<String>, io::Error>(None)
                    })
                    .await
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), None);
    }
    assert_eq!(calls.load(SeqCst), 1);
}
