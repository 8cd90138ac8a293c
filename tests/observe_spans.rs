//! Tracing spans: names, fields, nesting and key modes, as a subscriber
//! sees them (feature `tracing`).
#![cfg(feature = "tracing")]

mod loading_support;
mod observe_support;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cachex::{Cache, KeyMode, Ttl};
use loading_support::{settle, ConnectionRefused, DownStore};
use observe_support::TwoTier;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// A span as the subscriber saw it, once closed or at the end of the test.
#[derive(Clone, Debug, Default)]
struct Seen {
    name: &'static str,
    parent: Option<&'static str>,
    fields: BTreeMap<&'static str, String>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// Records every span and event, with its fields as plain strings.
#[derive(Clone, Default)]
struct Recorder {
    spans: Arc<Mutex<Vec<Seen>>>,
    events: Arc<Mutex<Vec<BTreeMap<&'static str, String>>>>,
}

/// Where a span's record lives in [`Recorder::spans`].
struct Slot(usize);

struct Fields<'a>(&'a mut BTreeMap<&'static str, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

impl<S> Layer<S> for Recorder
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("the span being created exists");
        let mut seen = Seen {
            name: attrs.metadata().name(),
            parent: span.parent().map(|parent| parent.name()),
            fields: BTreeMap::new(),
        };
        attrs.record(&mut Fields(&mut seen.fields));
        let mut spans = self.spans.lock().unwrap();
        spans.push(seen);
        span.extensions_mut().insert(Slot(spans.len() - 1));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("a recorded span exists");
        let extensions = span.extensions();
        let Some(Slot(slot)) = extensions.get::<Slot>() else {
            return;
        };
        values.record(&mut Fields(&mut self.spans.lock().unwrap()[*slot].fields));
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        fields.insert("target", event.metadata().target().to_owned());
        event.record(&mut Fields(&mut fields));
        self.events.lock().unwrap().push(fields);
    }
}

impl Recorder {
    /// Installs the recorder on this thread (the test's current-thread
    /// runtime runs every task here) for as long as the guard lives.
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::registry().with(self.clone());
        tracing::subscriber::set_default(subscriber)
    }

    fn spans(&self) -> Vec<Seen> {
        self.spans.lock().unwrap().clone()
    }

    fn named(&self, name: &str) -> Vec<Seen> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect()
    }
}

async fn found(value: &str) -> Result<String, ConnectionRefused> {
    Ok(value.to_owned())
}

#[tokio::test(start_paused = true)]
async fn every_operation_has_its_span_and_fields() {
    let recorder = Recorder::default();
    let _guard = recorder.install();
    let cache: Cache<String> = Cache::builder()
        .name("users")
        .key_mode(KeyMode::Plain)
        .default_ttl(Duration::from_secs(60))
        .jitter(0.0)
        .build();

    cache
        .set("user:1", "alice".into(), Ttl::After(Duration::from_secs(5)))
        .await
        .unwrap();
    cache.get("user:1").await.unwrap();
    cache.get("user:2").await.unwrap();
    cache
        .get_or_load("user:3", || found("carol"))
        .await
        .unwrap();
    cache
        .get_or_load("user:3", || found("carol"))
        .await
        .unwrap();
    cache.delete("user:1").await.unwrap();
    cache.clear().await.unwrap();

    let spans = recorder.spans();
    let names: Vec<&str> = spans.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "cache.set",
            "cache.get",
            "cache.get",
            "cache.get_or_load",
            "cache.get_or_load",
            "cache.delete",
            "cache.clear"
        ]
    );
    for span in &spans {
        assert_eq!(span.field("db.system.name"), Some("cachex"));
        assert_eq!(span.field("cache.name"), Some("users"));
        assert_eq!(span.field("cache.tier"), Some("l1"), "{span:?}");
        assert_eq!(span.field("error.type"), None, "{span:?}");
        assert_eq!(span.parent, None);
    }
    let op = |i: usize| spans[i].field("db.operation.name");
    assert_eq!(
        [op(0), op(1), op(3), op(5), op(6)].map(Option::unwrap),
        ["set", "get", "get_or_load", "delete", "clear"]
    );

    let set = &spans[0];
    assert_eq!(set.field("cache.key"), Some("user:1"));
    assert_eq!(set.field("cache.ttl_ms"), Some("5000"));
    assert_eq!(set.field("cache.hit"), None);

    let (hit, miss) = (&spans[1], &spans[2]);
    assert_eq!(hit.field("cache.hit"), Some("true"));
    assert_eq!(hit.field("cache.ttl_ms"), Some("5000"), "the time left");
    assert_eq!(miss.field("cache.hit"), Some("false"));
    assert_eq!(miss.field("cache.key"), Some("user:2"));

    let (load, cached) = (&spans[3], &spans[4]);
    assert_eq!(load.field("cache.hit"), Some("false"));
    assert_eq!(load.field("cache.ttl_ms"), Some("60000"), "the TTL written");
    assert_eq!(cached.field("cache.hit"), Some("true"));

    assert_eq!(spans[6].field("cache.key"), None, "clear has no key");
}

#[tokio::test(start_paused = true)]
async fn key_modes() {
    let recorder = Recorder::default();
    let _guard = recorder.install();
    for (mode, name) in [
        (KeyMode::Off, "off"),
        (KeyMode::Hashed, "hashed"),
        (KeyMode::Plain, "plain"),
    ] {
        let cache: Cache<u8> = Cache::builder().name(name).key_mode(mode).build();
        cache.get("user:alice@example.com").await.unwrap();
    }
    let keys: Vec<Option<String>> = recorder
        .named("cache.get")
        .into_iter()
        .map(|s| s.field("cache.key").map(str::to_owned))
        .collect();
    let hashed = KeyMode::Hashed.render("user:alice@example.com").unwrap();
    assert_eq!(
        keys,
        [
            None,
            Some(hashed.clone()),
            Some("user:alice@example.com".to_owned())
        ]
    );
    assert_eq!(hashed.len(), 16);
    assert!(!hashed.contains("alice"));

    let cache: Cache<u8> = Cache::builder().build();
    cache.get("user:bob").await.unwrap();
    let default = recorder.named("cache.get").pop().unwrap();
    assert_eq!(default.field("cache.key"), None, "off by default");
    assert_eq!(default.field("cache.name"), Some("default"));
}

#[tokio::test(start_paused = true)]
async fn errors_are_recorded_and_keep_the_key_out() {
    let recorder = Recorder::default();
    let _guard = recorder.install();
    let hashed: Cache<String> = Cache::builder().key_mode(KeyMode::Hashed).build();
    let plain: Cache<String> = Cache::builder().key_mode(KeyMode::Plain).build();
    for cache in [&hashed, &plain] {
        let failed = cache
            .get_or_load("user:secret", || async {
                Err::<String, _>(ConnectionRefused)
            })
            .await;
        assert!(failed.is_err());
    }
    let spans = recorder.named("cache.get_or_load");
    for span in &spans {
        assert_eq!(span.field("error.type"), Some("loader"));
        assert_eq!(span.field("otel.status_code"), Some("ERROR"));
    }
    assert_eq!(
        spans[0].field("otel.status_description"),
        Some("loader failed")
    );
    assert!(spans[1]
        .field("otel.status_description")
        .unwrap()
        .contains("user:secret"));

    let down: Cache<u8> = Cache::builder().store(DownStore).build();
    assert!(down.get("k").await.is_err());
    assert!(down.set("", 1, Ttl::Default).await.is_err());
    let get = recorder.named("cache.get").pop().unwrap();
    assert_eq!(get.field("error.type"), Some("store"));
    assert_eq!(
        get.field("otel.status_description"),
        Some("cache store failed to get")
    );
    assert_eq!(
        get.field("cache.tier"),
        None,
        "a store without stats has no known tier"
    );
    let set = recorder.named("cache.set").pop().unwrap();
    assert_eq!(set.field("error.type"), Some("invalid_key"));
}

#[tokio::test(start_paused = true)]
async fn loader_and_store_spans_nest_under_the_operation() {
    let recorder = Recorder::default();
    let _guard = recorder.install();
    let store = Arc::new(TwoTier::new());
    let cache: Cache<String> = Cache::builder()
        .name("hybrid")
        .store(Arc::clone(&store))
        .build();

    cache
        .get_or_load("k", || async {
            let query = tracing::info_span!("db.query");
            let _entered = query.enter();
            Ok::<_, ConnectionRefused>("v".to_owned())
        })
        .await
        .unwrap();
    store.l1.engine().clear();
    cache.get("k").await.unwrap(); // answered by l2
    cache.get("k").await.unwrap(); // answered by l1, promoted
    store.open.store(true, Relaxed);
    assert!(cache.get("j").await.is_err());

    let query = &recorder.named("db.query")[0];
    assert_eq!(query.parent, Some("cache.get_or_load"));

    let store_gets = recorder.named("cache.store.get");
    assert_eq!(
        store_gets.len(),
        3,
        "the load's read, the l2 answer, the failure"
    );
    for span in &store_gets {
        assert_eq!(span.field("db.system.name"), Some("test-remote"));
        assert_eq!(span.field("db.operation.name"), Some("get"));
        assert_eq!(span.field("cache.tier"), Some("l2"));
        assert_eq!(span.field("otel.kind"), Some("client"));
    }
    assert_eq!(store_gets[0].parent, Some("cache.get_or_load"));
    assert_eq!(store_gets[1].parent, Some("cache.get"));
    assert_eq!(store_gets[2].field("error.type"), Some("store"));
    assert_eq!(store_gets[2].field("otel.status_code"), Some("ERROR"));
    assert_eq!(recorder.named("cache.store.set").len(), 1);

    let gets = recorder.named("cache.get");
    let tiers: Vec<Option<&str>> = gets.iter().map(|s| s.field("cache.tier")).collect();
    assert_eq!(
        tiers,
        [Some("l2"), Some("l1"), None],
        "the tier that answered"
    );
}

#[tokio::test(start_paused = true)]
async fn a_background_refresh_is_a_root_span() {
    let recorder = Recorder::default();
    let _guard = recorder.install();
    let cache: Cache<String> = Cache::builder()
        .default_ttl(Duration::from_secs(10))
        .jitter(0.0)
        .stale_while_revalidate(Duration::from_secs(5))
        .key_mode(KeyMode::Plain)
        .build();
    cache.get_or_load("k", || found("v1")).await.unwrap();
    tokio::time::advance(Duration::from_secs(6)).await;
    cache.get_or_load("k", || found("v2")).await.unwrap(); // stale, refreshes
    settle().await;
    let refresh = recorder.named("cache.refresh");
    assert_eq!(refresh.len(), 1);
    assert_eq!(refresh[0].parent, None);
    assert_eq!(refresh[0].field("db.operation.name"), Some("refresh"));
    assert_eq!(refresh[0].field("cache.key"), Some("k"));
    assert_eq!(refresh[0].field("cache.ttl_ms"), Some("10000"));
    assert_eq!(cache.stats().refreshes, 1);
}

#[tokio::test(start_paused = true)]
async fn periodic_stats_line() {
    let recorder = Recorder::default();
    let _guard = recorder.install();
    let cache: Cache<u8> = Cache::builder()
        .name("sessions")
        .log_stats(Duration::from_secs(60))
        .build();
    cache.set("a", 1, Ttl::Default).await.unwrap();
    cache.get("a").await.unwrap();
    cache.get("b").await.unwrap();
    tokio::time::sleep(Duration::from_secs(61)).await;
    cache.get("a").await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    settle().await;

    let events = recorder.events.lock().unwrap().clone();
    let lines: Vec<_> = events
        .iter()
        .filter(|e| e.get("target").map(String::as_str) == Some("cachex::stats"))
        .collect();
    assert_eq!(lines.len(), 2, "{events:?}");
    let first = lines[0];
    assert_eq!(first["cache"], "sessions");
    assert_eq!(
        (first["hits"].as_str(), first["misses"].as_str()),
        ("1", "1")
    );
    assert_eq!(first["hit_ratio"], "0.5");
    assert_eq!(first["sets"], "1");
    let second = lines[1];
    assert_eq!(
        (second["hits"].as_str(), second["misses"].as_str()),
        ("1", "0"),
        "per interval"
    );

    cache.close().await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    settle().await;
    let after: usize = recorder
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.get("target").map(String::as_str) == Some("cachex::stats"))
        .count();
    assert_eq!(after, 2, "closing the cache stops its log");
}

#[tokio::test(start_paused = true)]
async fn batch_calls_have_spans_with_their_key_counts() {
    let recorder = Recorder::default();
    let _guard = recorder.install();
    let cache: Cache<String> = Cache::builder().name("items").build();
    cache
        .set_many(
            [("a", "1".to_string()), ("b", "2".to_string())],
            Ttl::Default,
        )
        .await
        .unwrap();
    cache.get_many(&["a", "b", "c", "a"]).await.unwrap();
    cache
        .get_many_or_load(&["a", "d"], |keys| async move {
            Ok::<_, ConnectionRefused>(
                keys.into_iter()
                    .map(|k| (k, "x".to_string()))
                    .collect::<Vec<_>>(),
            )
        })
        .await
        .unwrap();
    cache.delete_many(&["a", "b"]).await.unwrap();

    let spans = recorder.spans();
    let names: Vec<&str> = spans.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "cache.set_many",
            "cache.get_many",
            "cache.get_many_or_load",
            "cache.delete_many"
        ]
    );
    let size = |i: usize| spans[i].field("cache.batch.size");
    assert_eq!(
        [size(0), size(1), size(2), size(3)],
        [Some("2"), Some("4"), Some("2"), Some("2")]
    );
    // Distinct keys answered without a load: a and b of a, b, c.
    assert_eq!(spans[1].field("cache.batch.hits"), Some("2"));
    assert_eq!(spans[2].field("cache.batch.hits"), Some("1"));
    assert_eq!(
        spans[2].field("db.operation.name"),
        Some("get_many_or_load")
    );
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn waiting_for_another_processs_load_is_a_lock_wait_span() {
    use cachex::lock::DistributedLock;
    use cachex::store::RedisStore;

    let recorder = Recorder::default();
    let _guard = recorder.install();
    let server = cachex_testkit::RedisServer::start();
    // Two caches with their own locks stand for two processes.
    let mut caches = Vec::new();
    for name in ["a", "b"] {
        let store: RedisStore<String> = RedisStore::builder()
            .url(server.url())
            .prefix("spans")
            .build()
            .await
            .unwrap();
        let lock = DistributedLock::new(&store).unwrap();
        while !lock.is_subscribed() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let cache: Cache<String> = Cache::builder()
            .name(name)
            .store(store)
            .distributed_singleflight(lock, Duration::from_secs(5))
            .build();
        caches.push(cache);
    }
    let (a, b) = (caches[0].clone(), caches[1].clone());
    let holder = tokio::spawn(async move {
        a.get_or_load("k", || async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            found("v").await
        })
        .await
    });
    while caches[0].stats().lock_acquisitions == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(b.get_or_load("k", || found("x")).await.unwrap(), "v");
    assert_eq!(holder.await.unwrap().unwrap(), "v");
    let waits = recorder.named("cache.lock_wait");
    assert_eq!(waits.len(), 1, "{waits:?}");
    assert_eq!(waits[0].parent, Some("cache.get_or_load"));
    assert_eq!(waits[0].field("cache.name"), Some("b"));
    assert_eq!(waits[0].field("db.operation.name"), Some("lock_wait"));
    assert_eq!(b.stats().lock_answered, 1);
}
