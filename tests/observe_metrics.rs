//! Prometheus metrics: the scraped text after a known sequence of
//! operations (feature `prometheus`).
#![cfg(feature = "prometheus")]

mod observe_support;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use cachex::prometheus_client::encoding::text::encode;
use cachex::prometheus_client::registry::Registry;
use cachex::{Cache, CacheMetrics, Ttl};
use observe_support::TwoTier;

fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).unwrap();
    text
}

/// The sample lines of `text` for metric families starting with `prefix`.
fn samples<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .collect()
}

async fn slow(value: &'static str) -> Result<String, std::io::Error> {
    tokio::time::sleep(Duration::from_millis(30)).await;
    Ok(value.to_owned())
}

#[tokio::test(start_paused = true)]
async fn scrape_after_known_operations_has_exact_counts() {
    let mut registry = Registry::default();
    let metrics = CacheMetrics::new();
    metrics.register(&mut registry);
    let cache: Cache<String> = Cache::builder().name("users").capacity(100).build();
    assert!(metrics.add(&cache));

    cache.set("a", "1".into(), Ttl::Default).await.unwrap();
    cache.get("a").await.unwrap(); // hit
    cache.get("b").await.unwrap(); // miss
    cache.get_or_load("c", || slow("3")).await.unwrap(); // miss + load
    cache.get_or_load("c", || slow("x")).await.unwrap(); // hit
    let failed = cache
        .get_or_load("d", || async {
            Err::<String, _>(std::io::Error::other("down"))
        })
        .await;
    assert!(failed.is_err()); // miss + failed load
    cache.delete("a").await.unwrap();
    cache.delete_many(&["q", "q"]).await.unwrap(); // one batch of two keys

    let text = scrape(&registry);
    // One name, one number: the metric is the `Stats` field of its name.
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.load_errors), (2, 1));
    let expected = [
        "cachex_hits_total{cache=\"users\"} 2",
        "cachex_negative_hits_total{cache=\"users\"} 0",
        "cachex_misses_total{cache=\"users\"} 3",
        "cachex_loads_total{cache=\"users\"} 2",
        "cachex_load_errors_total{cache=\"users\"} 1",
        "cachex_refreshes_total{cache=\"users\"} 0",
        "cachex_refresh_errors_total{cache=\"users\"} 0",
        "cachex_stale_served_total{cache=\"users\"} 0",
        "cachex_singleflight_waits_total{cache=\"users\"} 0",
        "cachex_load_timeouts_total{cache=\"users\"} 0",
        "cachex_stale_served_on_failure_total{cache=\"users\"} 0",
        "cachex_stale_served_on_timeout_total{cache=\"users\"} 0",
        "cachex_undecodable_kept_total{cache=\"users\"} 0",
        "cachex_sets_total{cache=\"users\"} 1",
        "cachex_deletes_total{cache=\"users\"} 2",
        "cachex_batch_calls_total{cache=\"users\"} 1",
        "cachex_batch_keys_total{cache=\"users\"} 2",
        "cachex_store_errors_total{cache=\"users\"} 0",
        "cachex_load_duration_seconds_sum{cache=\"users\"} 0.03",
        "cachex_load_duration_seconds_count{cache=\"users\"} 2",
        "cachex_load_duration_seconds_bucket{le=\"0.025\",cache=\"users\"} 1",
        "cachex_load_duration_seconds_bucket{le=\"0.05\",cache=\"users\"} 2",
        "cachex_tier_hits_total{cache=\"users\",tier=\"l1\"} 2",
        "cachex_tier_misses_total{cache=\"users\",tier=\"l1\"} 3",
        "cachex_tier_removals_total{cache=\"users\",tier=\"l1\"} 1",
        "cachex_tier_errors_total{cache=\"users\",tier=\"l1\"} 0",
        "cachex_evictions_total{cache=\"users\",tier=\"l1\",cause=\"size\"} 0",
        "cachex_evictions_total{cache=\"users\",tier=\"l1\",cause=\"expired\"} 0",
        "cachex_entries{cache=\"users\",tier=\"l1\"} 1",
    ];
    for line in expected {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    // Conventions: counters end in _total, durations are in seconds, and
    // every family is described once.
    assert!(text.contains("# TYPE cachex_hits counter\n"));
    assert!(text.contains("# TYPE cachex_load_duration_seconds histogram\n"));
    assert!(text.contains("# UNIT cachex_load_duration_seconds seconds\n"));
    assert_eq!(text.matches("# TYPE cachex_hits ").count(), 1);
    assert!(!text.contains("breaker"), "no breaker, no breaker series");
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test(start_paused = true)]
async fn one_family_per_metric_across_caches() {
    let mut registry = Registry::default();
    let metrics = CacheMetrics::new();
    metrics.register(&mut registry);
    let users: Cache<u8> = Cache::builder().name("users").build();
    let orders: Cache<String> = Cache::builder().name("orders").build();
    assert!(metrics.add(&users));
    assert!(metrics.add(&orders));
    let clash: Cache<u8> = Cache::builder().name("users").build();
    assert!(
        !metrics.add(&clash),
        "a second live cache named users is refused"
    );

    users.get("x").await.unwrap();
    orders.set("o", "1".into(), Ttl::Default).await.unwrap();
    let text = scrape(&registry);
    assert_eq!(text.matches("# HELP cachex_misses ").count(), 1);
    assert_eq!(
        samples(&text, "cachex_misses_total"),
        [
            "cachex_misses_total{cache=\"orders\"} 0",
            "cachex_misses_total{cache=\"users\"} 1",
        ]
    );

    drop(users);
    let text = scrape(&registry);
    assert_eq!(
        samples(&text, "cachex_misses_total"),
        ["cachex_misses_total{cache=\"orders\"} 0"],
        "a dropped cache leaves the output"
    );
    assert!(metrics.add(&clash), "its name is free again");
}

#[tokio::test(start_paused = true)]
async fn namespace_and_registry_prefix() {
    let mut registry = Registry::default();
    let metrics = CacheMetrics::with_namespace("kv");
    metrics.register(registry.sub_registry_with_prefix("shop"));
    let cache: Cache<u8> = Cache::builder().build();
    assert!(metrics.add(&cache));
    cache.get("a").await.unwrap();
    let text = scrape(&registry);
    assert!(
        text.contains("shop_kv_misses_total{cache=\"default\"} 1\n"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn two_tiers_and_breaker_state() {
    let mut registry = Registry::default();
    let metrics = CacheMetrics::new();
    metrics.register(&mut registry);
    let store = Arc::new(TwoTier::new());
    let cache: Cache<String> = Cache::builder()
        .name("hybrid")
        .store(Arc::clone(&store))
        .build();
    assert!(metrics.add(&cache));
    cache.set("a", "1".into(), Ttl::Default).await.unwrap();
    store.l1.engine().clear();
    cache.get("a").await.unwrap(); // l2 hit
    store.open.store(true, Relaxed);
    assert!(cache.get("b").await.is_err());
    assert!(cache.get("c").await.is_err());

    let text = scrape(&registry);
    for line in [
        "cachex_tier_hits_total{cache=\"hybrid\",tier=\"l2\"} 1",
        "cachex_tier_errors_total{cache=\"hybrid\",tier=\"l2\"} 2",
        "cachex_tier_errors_total{cache=\"hybrid\",tier=\"l1\"} 0",
        "cachex_store_errors_total{cache=\"hybrid\"} 2",
        "cachex_breaker_state{cache=\"hybrid\",tier=\"l2\",state=\"closed\"} 0",
        "cachex_breaker_state{cache=\"hybrid\",tier=\"l2\",state=\"open\"} 1",
        "cachex_breaker_state{cache=\"hybrid\",tier=\"l2\",state=\"half_open\"} 0",
        "cachex_entries{cache=\"hybrid\",tier=\"l1\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    assert!(
        !text.contains("cachex_entries{cache=\"hybrid\",tier=\"l2\""),
        "a remote tier that cannot count its entries has no entries series"
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_off_exports_zeros() {
    let mut registry = Registry::default();
    let metrics = CacheMetrics::new();
    metrics.register(&mut registry);
    let cache: Cache<String> = Cache::builder().metrics(false).build();
    assert!(metrics.add(&cache));
    cache.get_or_load("a", || slow("1")).await.unwrap();
    let text = scrape(&registry);
    assert!(text.contains("cachex_loads_total{cache=\"default\"} 0\n"));
    assert!(text.contains("cachex_load_duration_seconds_count{cache=\"default\"} 0\n"));
}

#[test]
fn nothing_added_nothing_exported() {
    let mut registry = Registry::default();
    CacheMetrics::new().register(&mut registry);
    assert_eq!(scrape(&registry), "# EOF\n");
}

/// Fail-safe's answers are exported under the names of their `Stats` fields.
#[tokio::test(start_paused = true)]
async fn fail_safe_answers_are_exported() {
    let mut registry = Registry::default();
    let metrics = CacheMetrics::new();
    metrics.register(&mut registry);
    let cache: Cache<String> = Cache::builder()
        .name("fs")
        .default_ttl(Duration::from_secs(1))
        .fail_safe(Duration::from_secs(60))
        .build();
    assert!(metrics.add(&cache));
    cache.set("k", "old".into(), Ttl::Default).await.unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    let served = cache
        .get_or_load("k", || async {
            Err::<String, _>(std::io::Error::other("database down"))
        })
        .await
        .unwrap();
    assert_eq!(served, "old");
    let text = scrape(&registry);
    assert!(
        text.lines()
            .any(|l| l == "cachex_stale_served_on_failure_total{cache=\"fs\"} 1"),
        "{text}"
    );
    assert_eq!(cache.stats().stale_served_on_failure, 1);
}
