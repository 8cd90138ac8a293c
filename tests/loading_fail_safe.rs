//! Fail-safe and the load timeouts: a value past its TTL answers when the
//! load that should replace it fails or is slow, is re-armed for the
//! throttle period, and never shows otherwise. Time is tokio's paused
//! clock, which the memory store follows.

mod loading_support;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use cachex::{Cache, CacheBuilder, Error, Ttl, DEFAULT_FAIL_SAFE_THROTTLE};
use loading_support::DropFlag;
use tokio::time::{advance, Instant};

const TTL: Duration = Duration::from_secs(60);
const MAX_STALE: Duration = Duration::from_secs(3600);
const THROTTLE: Duration = Duration::from_secs(10);

type Loaded = Pin<Box<dyn Future<Output = Result<String, io::Error>> + Send>>;

fn builder() -> CacheBuilder<String> {
    Cache::builder().default_ttl(TTL).jitter(0.0)
}

fn fail_safe() -> Cache<String> {
    builder()
        .fail_safe(MAX_STALE)
        .fail_safe_throttle(THROTTLE)
        .build()
}

/// A source whose loaders count their calls and then answer as the
/// source currently does: down (an error), panicking, or up with a value.
#[derive(Clone, Default)]
struct Source {
    calls: Arc<AtomicUsize>,
    state: Arc<parking_lot::Mutex<State>>,
}

#[derive(Clone, Default)]
enum State {
    #[default]
    Down,
    Panicking,
    Up(&'static str),
}

impl Source {
    fn calls(&self) -> usize {
        self.calls.load(SeqCst)
    }

    fn set(&self, state: State) {
        *self.state.lock() = state;
    }

    /// A loader taking `delay` (tokio time).
    fn slow(&self, delay: Duration) -> impl FnOnce() -> Loaded + Send + 'static {
        let (calls, state) = (self.calls.clone(), self.state.clone());
        move || {
            Box::pin(async move {
                calls.fetch_add(1, SeqCst);
                tokio::time::sleep(delay).await;
                let state = state.lock().clone();
                match state {
                    State::Down => Err(io::Error::other("database down")),
                    State::Panicking => panic!("loader bug"),
                    State::Up(value) => Ok(value.to_owned()),
                }
            })
        }
    }

    fn loader(&self) -> impl FnOnce() -> Loaded + Send + 'static {
        self.slow(Duration::ZERO)
    }
}

/// Loads "v1" under `key`, then lets its TTL pass.
async fn expired(cache: &Cache<String>, key: &str) {
    let up = || async { Ok::<_, io::Error>("v1".to_string()) };
    assert_eq!(cache.get_or_load(key, up).await.unwrap(), "v1");
    advance(TTL).await;
    assert_eq!(cache.get(key).await.unwrap(), None, "expired for callers");
}

#[tokio::test(start_paused = true)]
async fn a_failed_load_serves_the_stale_value_and_counts_it() {
    let cache = fail_safe();
    expired(&cache, "k").await;
    let source = Source::default();
    assert_eq!(cache.get_or_load("k", source.loader()).await.unwrap(), "v1");
    let stats = cache.stats();
    assert_eq!(stats.stale_served_on_failure, 1);
    assert_eq!((stats.loads, stats.load_errors), (2, 1));
    // Re-armed: answered as a hit, the source is not asked.
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v1"));
    assert_eq!(source.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_loader_serves_the_stale_value_too() {
    let cache = fail_safe();
    expired(&cache, "k").await;
    let source = Source::default();
    source.set(State::Panicking);
    assert_eq!(cache.get_or_load("k", source.loader()).await.unwrap(), "v1");
    assert_eq!(cache.stats().stale_served_on_failure, 1);
}

#[tokio::test(start_paused = true)]
async fn a_down_source_is_asked_once_per_throttle_period() {
    let cache = fail_safe();
    expired(&cache, "k").await;
    let source = Source::default();
    // One request a second for 35 seconds, the source down throughout:
    // asked at 0, 10, 20 and 30 s, every answer the stale value.
    for _ in 0..35 {
        assert_eq!(cache.get_or_load("k", source.loader()).await.unwrap(), "v1");
        advance(Duration::from_secs(1)).await;
    }
    assert_eq!(source.calls(), 4);
    let stats = cache.stats();
    assert_eq!(stats.stale_served_on_failure, 4);
    assert_eq!(stats.hits, 31, "the re-armed value is a plain hit");

    // Back up: the next attempt (at 40 s) brings the new value.
    source.set(State::Up("v2"));
    advance(Duration::from_secs(5)).await;
    assert_eq!(cache.get_or_load("k", source.loader()).await.unwrap(), "v2");
    assert_eq!(source.calls(), 5);
    assert_eq!(cache.remaining_ttl("k").await.unwrap(), Some(Some(TTL)));
}

#[tokio::test(start_paused = true)]
async fn the_default_throttle_is_ten_seconds() {
    assert_eq!(DEFAULT_FAIL_SAFE_THROTTLE, Duration::from_secs(10));
    let cache = builder().fail_safe(MAX_STALE).build();
    expired(&cache, "k").await;
    let source = Source::default();
    cache.get_or_load("k", source.loader()).await.unwrap();
    advance(DEFAULT_FAIL_SAFE_THROTTLE - Duration::from_millis(1)).await;
    cache.get_or_load("k", source.loader()).await.unwrap();
    assert_eq!(source.calls(), 1);
    advance(Duration::from_millis(1)).await;
    cache.get_or_load("k", source.loader()).await.unwrap();
    assert_eq!(source.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn every_waiter_of_a_failed_load_gets_the_stale_value() {
    let cache = fail_safe();
    expired(&cache, "k").await;
    let source = Source::default();
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let (cache, loader) = (cache.clone(), source.slow(Duration::from_secs(1)));
            tokio::spawn(async move { cache.get_or_load("k", loader).await })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), "v1");
    }
    assert_eq!(source.calls(), 1, "one load for all of them");
    let stats = cache.stats();
    assert_eq!(stats.stale_served_on_failure, 50);
    assert_eq!(stats.singleflight_waits, 49);
}

#[tokio::test(start_paused = true)]
async fn without_fail_safe_errors_surface_and_expired_values_are_gone() {
    let cache = builder().build();
    expired(&cache, "k").await;
    let source = Source::default();
    let error = cache.get_or_load("k", source.loader()).await.unwrap_err();
    assert!(matches!(error, Error::Loader { .. }), "{error:?}");
    let error = cache.get_or_load("k", source.loader()).await.unwrap_err();
    assert!(error.is_loader());
    assert_eq!(source.calls(), 2, "nothing throttles without fail-safe");
    assert_eq!(cache.stats().stale_served_on_failure, 0);
}

#[tokio::test(start_paused = true)]
async fn stale_values_are_dropped_after_max_stale() {
    let cache = fail_safe();
    expired(&cache, "k").await;
    advance(MAX_STALE).await;
    let source = Source::default();
    let error = cache.get_or_load("k", source.loader()).await.unwrap_err();
    assert!(error.is_loader());
}

#[tokio::test(start_paused = true)]
async fn not_found_is_never_kept_past_its_ttl() {
    let cache = builder()
        .negative_ttl(Duration::from_secs(5))
        .fail_safe(MAX_STALE)
        .build();
    let absent = || async { Ok::<Option<String>, io::Error>(None) };
    assert_eq!(cache.get_or_load_optional("n", absent).await.unwrap(), None);
    assert_eq!(
        cache.remaining_ttl("n").await.unwrap(),
        Some(Some(Duration::from_secs(5)))
    );
    advance(Duration::from_secs(5)).await;
    assert_eq!(cache.remaining_ttl("n").await.unwrap(), None);
    let source = Source::default();
    let down = source.loader();
    let error = cache
        .get_or_load_optional("n", move || async move { down().await.map(Some) })
        .await
        .unwrap_err();
    assert!(error.is_loader(), "{error:?}");
}

#[tokio::test(start_paused = true)]
async fn explicit_and_eternal_ttls_are_what_callers_see() {
    let cache = fail_safe();
    let five = Duration::from_secs(5);
    cache.set("a", "x".into(), Ttl::After(five)).await.unwrap();
    cache.set("e", "y".into(), Ttl::Never).await.unwrap();
    assert_eq!(cache.remaining_ttl("a").await.unwrap(), Some(Some(five)));
    assert_eq!(cache.remaining_ttl("e").await.unwrap(), Some(None));
    advance(five).await;
    assert_eq!(cache.get("a").await.unwrap(), None);
    assert_eq!(cache.remaining_ttl("a").await.unwrap(), None);
    // Kept, hidden, as the fallback of the next load.
    let source = Source::default();
    assert_eq!(cache.get_or_load("a", source.loader()).await.unwrap(), "x");
    advance(MAX_STALE).await;
    assert_eq!(cache.get("e").await.unwrap().as_deref(), Some("y"));
}

#[tokio::test(start_paused = true)]
async fn a_soft_timeout_serves_stale_and_the_load_lands_later() {
    let cache = builder()
        .fail_safe(MAX_STALE)
        .soft_timeout(Duration::from_secs(1))
        .build();
    expired(&cache, "k").await;
    let source = Source::default();
    source.set(State::Up("v2"));
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let (cache, loader) = (cache.clone(), source.slow(Duration::from_secs(5)));
            tokio::spawn(async move {
                let started = Instant::now();
                let value = cache.get_or_load("k", loader).await;
                (value, started.elapsed())
            })
        })
        .collect();
    for waiter in waiters {
        let (value, waited) = waiter.await.unwrap();
        assert_eq!(value.unwrap(), "v1");
        assert_eq!(
            waited,
            Duration::from_secs(1),
            "every caller at the soft timeout"
        );
    }
    assert_eq!(cache.stats().stale_served_on_timeout, 10);
    // Until the load lands, later callers get the stale value at once.
    let late = cache.get_or_load("k", source.loader()).await.unwrap();
    assert_eq!(late, "v1");
    assert_eq!(source.calls(), 1);

    advance(Duration::from_secs(4)).await;
    tokio::task::yield_now().await;
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v2"));
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.load_errors), (2, 0));
    assert_eq!(stats.stale_served_on_timeout, 11);
}

#[tokio::test(start_paused = true)]
async fn a_load_faster_than_the_soft_timeout_answers_normally() {
    let cache = builder()
        .fail_safe(MAX_STALE)
        .soft_timeout(Duration::from_secs(1))
        .build();
    expired(&cache, "k").await;
    let source = Source::default();
    source.set(State::Up("v2"));
    let value = cache
        .get_or_load("k", source.slow(Duration::from_millis(999)))
        .await
        .unwrap();
    assert_eq!(value, "v2");
    assert_eq!(cache.stats().stale_served_on_timeout, 0);
}

#[tokio::test(start_paused = true)]
async fn a_soft_timed_out_load_survives_its_callers() {
    let cache = builder()
        .fail_safe(MAX_STALE)
        .soft_timeout(Duration::from_secs(1))
        .build();
    expired(&cache, "k").await;
    let source = Source::default();
    source.set(State::Up("v2"));
    let caller = {
        let (cache, loader) = (cache.clone(), source.slow(Duration::from_secs(5)));
        tokio::spawn(async move { cache.get_or_load("k", loader).await })
    };
    advance(Duration::from_millis(500)).await;
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    advance(Duration::from_secs(5)).await;
    tokio::task::yield_now().await;
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v2"));
    assert_eq!(source.calls(), 1);
}

/// `future`, or a failure if it is still running after `limit`: so that a
/// broken hard timeout fails its test instead of hanging it (the paused
/// clock jumps to this timer once nothing else can run).
async fn within<T>(limit: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .expect("still running: the hard timeout did not fire")
}

/// A loader that never ends, and tells when it is dropped.
fn hanging(
    calls: &Arc<AtomicUsize>,
) -> (
    impl FnOnce() -> Loaded + Send,
    Arc<std::sync::atomic::AtomicBool>,
) {
    let (guard, dropped) = DropFlag::new();
    let calls = calls.clone();
    let loader = move || -> Loaded {
        Box::pin(async move {
            let _guard = guard;
            calls.fetch_add(1, SeqCst);
            std::future::pending::<()>().await;
            Ok(String::new())
        })
    };
    (loader, dropped)
}

#[tokio::test(start_paused = true)]
async fn a_hard_timeout_abandons_the_load_and_serves_stale() {
    let cache = builder()
        .fail_safe(MAX_STALE)
        .hard_timeout(Duration::from_secs(2))
        .build();
    expired(&cache, "k").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let (loader, dropped) = hanging(&calls);
    let started = Instant::now();
    let value = within(TTL, cache.get_or_load("k", loader)).await;
    assert_eq!(value.unwrap(), "v1");
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert!(dropped.load(SeqCst), "the loader future was dropped");
    let stats = cache.stats();
    assert_eq!((stats.load_timeouts, stats.load_errors), (1, 1));
    assert_eq!(stats.stale_served_on_failure, 1);
    assert_eq!(calls.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hard_timeout_without_a_stale_value_is_an_error() {
    let cache = builder().hard_timeout(Duration::from_secs(2)).build();
    let calls = Arc::new(AtomicUsize::new(0));
    let (loader, dropped) = hanging(&calls);
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_or_load("k", || async { Ok::<_, io::Error>("unused".to_string()) })
                .await
        })
    };
    let error = within(TTL, cache.get_or_load("k", loader))
        .await
        .unwrap_err();
    assert!(error.is_load_timeout() && error.is_loader(), "{error:?}");
    assert!(matches!(&error, Error::LoadTimedOut { key, after }
        if &**key == "k" && *after == Duration::from_secs(2)));
    assert_eq!(
        error.to_string(),
        "load of key `k` abandoned after the hard timeout of 2s"
    );
    assert!(dropped.load(SeqCst));
    let waited = within(TTL, waiter).await.unwrap().unwrap_err();
    assert!(waited.is_load_timeout(), "the waiter shares the outcome");
    assert_eq!(cache.stats().load_timeouts, 1);
}

#[tokio::test(start_paused = true)]
async fn soft_then_hard_timeout_serves_stale_then_abandons_in_the_background() {
    let cache = builder()
        .fail_safe(MAX_STALE)
        .fail_safe_throttle(THROTTLE)
        .soft_timeout(Duration::from_secs(1))
        .hard_timeout(Duration::from_secs(3))
        .build();
    expired(&cache, "k").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let (loader, dropped) = hanging(&calls);
    let started = Instant::now();
    assert_eq!(cache.get_or_load("k", loader).await.unwrap(), "v1");
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert!(!dropped.load(SeqCst), "still loading in the background");
    advance(Duration::from_secs(2)).await;
    tokio::task::yield_now().await;
    assert!(dropped.load(SeqCst), "abandoned at the hard timeout");
    // And the stale value was re-armed for the throttle period.
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v1"));
    let stats = cache.stats();
    assert_eq!(stats.load_timeouts, 1);
    assert_eq!(
        (stats.stale_served_on_timeout, stats.stale_served_on_failure),
        (1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn refresh_windows_count_on_the_ttl_callers_see() {
    let cache = builder()
        .fail_safe(MAX_STALE)
        .stale_while_revalidate(Duration::from_secs(10))
        .build();
    let source = Source::default();
    source.set(State::Up("v1"));
    cache.get_or_load("k", source.loader()).await.unwrap();
    advance(Duration::from_secs(49)).await;
    cache.get_or_load("k", source.loader()).await.unwrap();
    assert_eq!(cache.stats().stale_served, 0, "11 s left: not due yet");
    advance(Duration::from_secs(1)).await;
    cache.get_or_load("k", source.loader()).await.unwrap();
    assert_eq!(cache.stats().stale_served, 1, "10 s left: due");
    tokio::task::yield_now().await;
    assert_eq!(source.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_leader_hands_over_and_the_new_load_falls_back_too() {
    let cache = fail_safe();
    expired(&cache, "k").await;
    let first = Source::default();
    first.set(State::Up("never"));
    let leader = {
        let (cache, loader) = (cache.clone(), first.slow(Duration::from_secs(5)));
        tokio::spawn(async move { cache.get_or_load("k", loader).await })
    };
    tokio::task::yield_now().await;
    let second = Source::default();
    let waiter = {
        let (cache, loader) = (cache.clone(), second.slow(Duration::from_secs(1)));
        tokio::spawn(async move { cache.get_or_load("k", loader).await })
    };
    tokio::task::yield_now().await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    // The waiter took over with its own loader, which failed: stale.
    assert_eq!(waiter.await.unwrap().unwrap(), "v1");
    assert_eq!((first.calls(), second.calls()), (1, 1));
    assert_eq!(cache.stats().stale_served_on_failure, 1);
}
