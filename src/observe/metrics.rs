//! Prometheus metrics (feature `prometheus`), read from the stats snapshot
//! when scraped.

use std::fmt;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::{BreakerState, Coordination, StatsSource, Tier, TierStats};
use crate::{Cache, Stats};

/// The namespace metric names start with unless another is given.
const DEFAULT_NAMESPACE: &str = "cachex";

/// Bucket bounds of the load-duration histogram, in seconds: from half a
/// millisecond (a local lookup) to ten seconds (a loader in trouble).
const LOAD_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The Prometheus metrics of one or more [`Cache`]s, on a
/// [`Registry`] of yours.
///
/// Counters are not kept twice: at each scrape the collector takes every
/// cache's [`Stats`] snapshot (the same striped counters
/// [`Cache::stats`] reads), so metrics add nothing to the hot path. Only
/// the load-duration histogram is recorded as it happens, once per loader
/// call, from the moment the cache is [added](Self::add).
///
/// One `CacheMetrics` serves any number of caches, told apart by the
/// `cache` label (their [name](crate::CacheBuilder::name)): register it
/// once, then add each cache. A cache that is dropped leaves the output.
///
/// ```
/// use cachex::prometheus_client::registry::Registry;
/// use cachex::{Cache, CacheMetrics, Ttl};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let mut registry = Registry::default();
/// let metrics = CacheMetrics::new();
/// metrics.register(&mut registry);
///
/// let users: Cache<String> = Cache::builder().name("users").build();
/// assert!(metrics.add(&users));
/// users.set("user:7", "alice".into(), Ttl::Default).await?;
/// users.get("user:7").await?;
///
/// let mut text = String::new();
/// cachex::prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// assert!(text.contains("cachex_hits_total{cache=\"users\"} 1\n"));
/// assert!(text.contains("cachex_entries{cache=\"users\",tier=\"l1\"} 1\n"));
/// # Ok::<(), cachex::Error>(())
/// # }).unwrap();
/// ```
///
/// See the README's "Metrics" section for every metric and label.
#[derive(Clone)]
pub struct CacheMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    namespace: String,
    members: Mutex<Vec<Member>>,
}

struct Member {
    name: Arc<str>,
    source: Weak<dyn StatsSource>,
    load_histogram: Histogram,
}

impl CacheMetrics {
    /// Metrics named `cachex_*`.
    pub fn new() -> Self {
        Self::with_namespace(DEFAULT_NAMESPACE)
    }

    /// Metrics named `<namespace>_*`. A registry's own prefix
    /// ([`Registry::sub_registry_with_prefix`]) comes before it.
    pub fn with_namespace(namespace: impl Into<String>) -> Self {
        CacheMetrics {
            inner: Arc::new(Inner {
                namespace: namespace.into(),
                members: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Registers these metrics on `registry`. Register once per registry:
    /// two registrations would list every metric twice.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(Scrape(Arc::clone(&self.inner))));
    }

    /// Adds `cache`, under its [name](crate::CacheBuilder::name). Answers
    /// `false`, and adds nothing, if a live cache of that name is already
    /// here: its series would clash.
    ///
    /// From now on the cache times its loads into the
    /// `load_duration_seconds` histogram (the counters include what
    /// happened before). With [`metrics(false)`](crate::CacheBuilder::metrics)
    /// the cache counts nothing, and its series stay at 0.
    #[must_use = "false means the cache was not added"]
    pub fn add<V>(&self, cache: &Cache<V>) -> bool
    where
        V: Clone + Send + Sync + 'static,
    {
        let source = cache.stats_source();
        let observer = source.observer();
        let mut members = self.inner.members.lock();
        members.retain(|member| member.source.strong_count() > 0);
        if members.iter().any(|member| member.name == observer.name) {
            return false;
        }
        let load_histogram = observer
            .load_histogram
            .get_or_init(|| Histogram::new(LOAD_BUCKETS))
            .clone();
        members.push(Member {
            name: Arc::clone(&observer.name),
            source: Arc::downgrade(&source),
            load_histogram,
        });
        true
    }
}

impl Default for CacheMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CacheMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<Arc<str>> = self
            .members
            .lock()
            .iter()
            .map(|member| Arc::clone(&member.name))
            .collect();
        f.debug_struct("CacheMetrics")
            .field("namespace", &self.namespace)
            .field("caches", &names)
            .finish()
    }
}

/// The collector the registry calls at each scrape.
#[derive(Debug)]
struct Scrape(Arc<Inner>);

/// One live cache, read once per scrape.
struct Snapshot {
    name: Arc<str>,
    stats: Stats,
    load_histogram: Histogram,
    coordination: Coordination,
}

/// A counter of the cache as a whole (label `cache`).
struct CacheCounter {
    name: &'static str,
    help: &'static str,
    value: fn(&Stats) -> u64,
}

const CACHE_COUNTERS: &[CacheCounter] = &[
    CacheCounter {
        name: "hits",
        help: "Lookups (get, get_or_load) answered with a cached value.",
        value: |s| s.hits,
    },
    CacheCounter {
        name: "negative_hits",
        help: "Lookups answered with a cached \"not found\".",
        value: |s| s.negative_hits,
    },
    CacheCounter {
        name: "misses",
        help: "Lookups that found nothing usable.",
        value: |s| s.misses,
    },
    CacheCounter {
        name: "loads",
        help: "Loader calls made for callers on a miss, failed ones included.",
        value: |s| s.loads,
    },
    CacheCounter {
        name: "load_errors",
        help: "Loader calls made for callers that failed (error or panic).",
        value: |s| s.load_errors,
    },
    CacheCounter {
        name: "refreshes",
        help: "Background refreshes (stale-while-revalidate, XFetch), failed ones included.",
        value: |s| s.refreshes,
    },
    CacheCounter {
        name: "refresh_errors",
        help: "Background refreshes that failed; the old value was kept.",
        value: |s| s.refresh_errors,
    },
    CacheCounter {
        name: "stale_served",
        help: "Hits served while a background refresh of the entry started.",
        value: |s| s.stale_served,
    },
    CacheCounter {
        name: "load_timeouts",
        help: "Loads and refreshes abandoned at the hard timeout.",
        value: |s| s.load_timeouts,
    },
    CacheCounter {
        name: "stale_served_on_failure",
        help: "Callers served a value past its TTL (fail-safe) because the load failed.",
        value: |s| s.stale_served_on_failure,
    },
    CacheCounter {
        name: "stale_served_on_timeout",
        help: "Callers served a value past its TTL because the load passed the soft timeout.",
        value: |s| s.stale_served_on_timeout,
    },
    CacheCounter {
        name: "undecodable_kept",
        help: "Loaded values not written over stored bytes the store could not decode.",
        value: |s| s.undecodable_kept,
    },
    CacheCounter {
        name: "singleflight_waits",
        help: "Calls that waited for another caller's load instead of loading.",
        value: |s| s.singleflight_waits,
    },
    CacheCounter {
        name: "sets",
        help: "Values stored by successful set and set_many calls.",
        value: |s| s.sets,
    },
    CacheCounter {
        name: "deletes",
        help: "Keys removed by successful delete and delete_many calls, whether or not they were there.",
        value: |s| s.deletes,
    },
    CacheCounter {
        name: "batch_calls",
        help: "Batch calls: get_many, set_many, delete_many, get_many_or_load.",
        value: |s| s.batch_calls,
    },
    CacheCounter {
        name: "batch_keys",
        help: "Keys passed to batch calls, duplicates included.",
        value: |s| s.batch_keys,
    },
    CacheCounter {
        name: "store_errors",
        help: "Store operations that failed, reported or absorbed.",
        value: |s| s.store_errors,
    },
];

/// Counters of distributed singleflight, for the caches that use it.
const LOCK_COUNTERS: &[CacheCounter] = &[
    CacheCounter {
        name: "lock_acquisitions",
        help: "Loads and refreshes run holding the key's distributed lock.",
        value: |s| s.lock_acquisitions,
    },
    CacheCounter {
        name: "lock_waits",
        help: "Loads that waited for another process holding the key's lock.",
        value: |s| s.lock_waits,
    },
    CacheCounter {
        name: "lock_answered",
        help: "Loads answered by another process's load instead of the loader.",
        value: |s| s.lock_answered,
    },
    CacheCounter {
        name: "lock_takeovers",
        help: "Loads that waited, found no value, and loaded themselves.",
        value: |s| s.lock_takeovers,
    },
    CacheCounter {
        name: "lock_fallbacks",
        help: "Loads and refreshes run without the lock, which could not be reached.",
        value: |s| s.lock_fallbacks,
    },
    CacheCounter {
        name: "lock_refusals",
        help: "Loads refused because the lock could not be reached (strict mode).",
        value: |s| s.lock_refusals,
    },
];

/// Counters of refresh-ahead, for the caches that use it.
const REFRESH_AHEAD_COUNTERS: &[CacheCounter] = &[
    CacheCounter {
        name: "refresh_ahead",
        help: "Refresh-ahead loader calls made by this process.",
        value: |s| s.refresh_ahead,
    },
    CacheCounter {
        name: "refresh_ahead_skipped",
        help: "Refresh-ahead turns left to another process or to a load under way.",
        value: |s| s.refresh_ahead_skipped,
    },
    CacheCounter {
        name: "refresh_ahead_idle",
        help: "Keys no longer refreshed ahead because they went unread.",
        value: |s| s.refresh_ahead_idle,
    },
    CacheCounter {
        name: "refresh_ahead_rejected",
        help: "Keys not refreshed ahead because the per-process limit was reached.",
        value: |s| s.refresh_ahead_rejected,
    },
    CacheCounter {
        name: "tag_invalidations",
        help: "Tags invalidated by this process.",
        value: |s| s.tag_invalidations,
    },
    CacheCounter {
        name: "tagged_writes",
        help: "Entries written with tags by this process.",
        value: |s| s.tagged_writes,
    },
];

/// A counter of one tier of the store (labels `cache`, `tier`).
struct TierCounter {
    name: &'static str,
    help: &'static str,
    value: fn(&TierStats) -> u64,
}

const TIER_COUNTERS: &[TierCounter] = &[
    TierCounter {
        name: "tier_hits",
        help: "Reads of the tier that found a live entry.",
        value: |t| t.hits,
    },
    TierCounter {
        name: "tier_misses",
        help: "Reads of the tier that found nothing.",
        value: |t| t.misses,
    },
    TierCounter {
        name: "tier_removals",
        help: "Entries of the tier removed by a delete or a clear.",
        value: |t| t.removals,
    },
    TierCounter {
        name: "tier_errors",
        help: "Operations on the tier that failed.",
        value: |t| t.errors,
    },
];

impl Scrape {
    fn full_name(&self, name: &str) -> String {
        if self.0.namespace.is_empty() {
            name.to_owned()
        } else {
            format!("{}_{name}", self.0.namespace)
        }
    }

    fn snapshots(&self) -> Vec<Snapshot> {
        let mut members = self.0.members.lock();
        members.retain(|member| member.source.strong_count() > 0);
        let mut snapshots: Vec<Snapshot> = members
            .iter()
            .filter_map(|member| {
                let source = member.source.upgrade()?;
                Some(Snapshot {
                    name: Arc::clone(&member.name),
                    stats: source.stats(),
                    load_histogram: member.load_histogram.clone(),
                    coordination: source.coordination(),
                })
            })
            .collect();
        // Stable output, whatever the order caches were added in.
        snapshots.sort_by(|a, b| a.name.cmp(&b.name));
        snapshots
    }
}

impl Scrape {
    /// One family per counter, one series per cache.
    fn counters(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        counters: &[CacheCounter],
        caches: &[&Snapshot],
    ) -> fmt::Result {
        for counter in counters {
            let name = self.full_name(counter.name);
            let mut family =
                encoder.encode_descriptor(&name, counter.help, None, MetricType::Counter)?;
            for cache in caches {
                let labels = [("cache", &*cache.name)];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&(counter.value)(&cache.stats), None)?;
            }
        }
        Ok(())
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let caches = self.snapshots();
        if caches.is_empty() {
            return Ok(());
        }

        for counter in CACHE_COUNTERS {
            let name = self.full_name(counter.name);
            let mut family =
                encoder.encode_descriptor(&name, counter.help, None, MetricType::Counter)?;
            for cache in &caches {
                let labels = [("cache", &*cache.name)];
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&(counter.value)(&cache.stats), None)?;
            }
        }

        let locking: Vec<&Snapshot> = caches
            .iter()
            .filter(|cache| cache.coordination.distributed)
            .collect();
        if !locking.is_empty() {
            self.counters(&mut encoder, LOCK_COUNTERS, &locking)?;
            let name = self.full_name("lock_wait");
            let mut family = encoder.encode_descriptor(
                &name,
                "Time loads spent waiting for another process's load of their key.",
                Some(&Unit::Seconds),
                MetricType::Counter,
            )?;
            for cache in &locking {
                let labels = [("cache", &*cache.name)];
                let seconds = cache.stats.lock_wait_time.as_secs_f64();
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, f64>(&seconds, None)?;
            }
        }
        let ahead: Vec<&Snapshot> = caches
            .iter()
            .filter(|cache| cache.coordination.refresh_ahead)
            .collect();
        if !ahead.is_empty() {
            self.counters(&mut encoder, REFRESH_AHEAD_COUNTERS, &ahead)?;
            let name = self.full_name("refresh_ahead_keys");
            let mut family = encoder.encode_descriptor(
                &name,
                "Keys this process refreshes ahead now.",
                None,
                MetricType::Gauge,
            )?;
            for cache in &ahead {
                let labels = [("cache", &*cache.name)];
                family
                    .encode_family(&labels)?
                    .encode_gauge(&cache.stats.refresh_ahead_keys)?;
            }
        }

        let name = self.full_name("load_duration");
        let mut family = encoder.encode_descriptor(
            &name,
            "Time spent in loader calls (loads and refreshes), from when the cache was added.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for cache in &caches {
            let labels = [("cache", &*cache.name)];
            cache
                .load_histogram
                .encode(family.encode_family(&labels)?)?;
        }

        let tiers = |cache: &'_ Snapshot| {
            let store = cache.stats.store;
            [Tier::L1, Tier::L2]
                .into_iter()
                .filter_map(move |tier| store.tier(tier).map(|stats| (tier, *stats)))
        };

        for counter in TIER_COUNTERS {
            let name = self.full_name(counter.name);
            let mut family =
                encoder.encode_descriptor(&name, counter.help, None, MetricType::Counter)?;
            for cache in &caches {
                for (tier, stats) in tiers(cache) {
                    let labels = [("cache", &*cache.name), ("tier", tier.as_str())];
                    family
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&(counter.value)(&stats), None)?;
                }
            }
        }

        let name = self.full_name("evictions");
        let mut family = encoder.encode_descriptor(
            &name,
            "Entries the tier evicted: for size (capacity) or expired (time-to-live).",
            None,
            MetricType::Counter,
        )?;
        for cache in &caches {
            for (tier, stats) in tiers(cache) {
                for (cause, count) in [
                    ("size", stats.evictions_size),
                    ("expired", stats.evictions_expired),
                ] {
                    let labels = [
                        ("cache", &*cache.name),
                        ("tier", tier.as_str()),
                        ("cause", cause),
                    ];
                    family
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
                }
            }
        }

        let name = self.full_name("entries");
        let mut family = encoder.encode_descriptor(
            &name,
            "Entries the tier holds, where it can tell.",
            None,
            MetricType::Gauge,
        )?;
        for cache in &caches {
            for (tier, stats) in tiers(cache) {
                if let Some(entries) = stats.entries {
                    let labels = [("cache", &*cache.name), ("tier", tier.as_str())];
                    family.encode_family(&labels)?.encode_gauge(&entries)?;
                }
            }
        }

        let breakers = caches
            .iter()
            .any(|cache| tiers(cache).any(|(_, stats)| stats.breaker.is_some()));
        if breakers {
            let name = self.full_name("breaker_state");
            let mut family = encoder.encode_descriptor(
                &name,
                "Circuit breaker guarding the tier: 1 for its current state, 0 for the others.",
                None,
                MetricType::Gauge,
            )?;
            for cache in &caches {
                for (tier, stats) in tiers(cache) {
                    let Some(current) = stats.breaker else {
                        continue;
                    };
                    for state in BreakerState::ALL {
                        let labels = [
                            ("cache", &*cache.name),
                            ("tier", tier.as_str()),
                            ("state", state.as_str()),
                        ];
                        let value = u64::from(state == current);
                        family.encode_family(&labels)?.encode_gauge(&value)?;
                    }
                }
            }
        }
        Ok(())
    }
}
