//! `async`: the hit path users program against (`Cache::get`,
//! `Cache::get_or_load`) beside the engine it rests on and beside the async
//! caches of the peers.
//!
//! Every contender reads the same pre-generated Zipf(1.01) trace of string
//! keys (`user:<n>`), all cached with the same `u64` values (100% hits), on
//! one current-thread tokio runtime per thread:
//!
//! - `engine`: `MemoryCache::get`, the floor;
//! - `get-on`/`get-off`, `load-on`/`load-off`: `Cache::get` and
//!   `Cache::get_or_load` hits over the in-memory store, metrics on and off;
//! - `hybrid-get`, `hybrid-load`: the same over a `HybridStore` whose L1
//!   holds every key (it starts a `redis-server` on loopback for its L2);
//! - `moka-get`, `moka-get-with`: moka's `future::Cache`, `get` and
//!   `get_with_by_ref` (`get_with` without cloning the key);
//! - `quick-guard`: quick_cache's async API, `get_value_or_guard_async`.
//!
//! Runs are interleaved (every contender once, then again) and the median
//! per contender is reported, with the ratios the targets are about. On a
//! shared machine use 7 runs or more, and decide with instruction counts:
//! `scripts/callgrind-async` counts them inside [`replay_on`] only.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use cachex::store::hybrid::HybridStore;
use cachex::store::RedisStore;
use cachex::{Cache, MemoryCache, Ttl};
use cachex_testkit::RedisServer;
use clap::Args;
use serde_json::{json, Map, Value};

use crate::report::{emit, median, round, thousands, Table};
use crate::zipf::{Rng, Zipf};

/// Options of the `async` command.
#[derive(Debug, Args)]
pub struct AsyncArgs {
    /// Thread counts to measure at.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Distinct keys, all cached.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Operations per thread per run.
    #[arg(long, default_value_t = 2_000_000)]
    pub ops: usize,
    /// Runs per contender; the median is reported.
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// Only the given contenders (by short name: engine, get-on, get-off,
    /// load-on, load-off, hybrid-get, hybrid-load, moka-get, moka-get-with,
    /// quick-guard). The hybrid ones start a redis-server; leave them out
    /// where there is none.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Store every entry with this time-to-live in seconds, in every
    /// contender that has one (quick_cache has none); the hybrid's L1 TTL
    /// cap too. Default: entries never expire, and no read needs a clock.
    #[arg(long)]
    pub ttl: Option<u64>,
    /// With cachex's `tracing` feature: install a subscriber at INFO level
    /// (writing nowhere) during the runs, the usual production set-up in
    /// which the cache's DEBUG spans are filtered out.
    #[arg(long)]
    pub info_subscriber: bool,
    /// Print one JSON object per result line instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// One contender: its short name, its label, and the contenders its ratios
/// are taken against.
struct Contender {
    name: &'static str,
    label: &'static str,
    /// What this one's time is divided by, as `(JSON key, contender)`:
    /// costs, where lower is better.
    costs: &'static [(&'static str, &'static str)],
    /// Whose time is divided by this one's: speeds, higher is better.
    speeds: &'static [(&'static str, &'static str)],
}

const CONTENDERS: [Contender; 10] = [
    Contender {
        name: "engine",
        label: "engine MemoryCache::get",
        costs: &[],
        speeds: &[],
    },
    Contender {
        name: "get-on",
        label: "Cache::get, metrics on",
        costs: &[
            ("cost_vs_engine", "engine"),
            ("cost_vs_metrics_off", "get-off"),
        ],
        speeds: &[("speed_vs_moka", "moka-get")],
    },
    Contender {
        name: "get-off",
        label: "Cache::get, metrics off",
        costs: &[("cost_vs_engine", "engine")],
        speeds: &[],
    },
    Contender {
        name: "load-on",
        label: "Cache::get_or_load hit, metrics on",
        costs: &[
            ("cost_vs_engine", "engine"),
            ("cost_vs_metrics_off", "load-off"),
        ],
        speeds: &[
            ("speed_vs_moka", "moka-get-with"),
            ("speed_vs_quick_cache", "quick-guard"),
        ],
    },
    Contender {
        name: "load-off",
        label: "Cache::get_or_load hit, metrics off",
        costs: &[("cost_vs_engine", "engine")],
        speeds: &[],
    },
    Contender {
        name: "hybrid-get",
        label: "hybrid L1 hit, Cache::get",
        costs: &[("cost_vs_engine", "engine"), ("cost_vs_memory", "get-on")],
        speeds: &[],
    },
    Contender {
        name: "hybrid-load",
        label: "hybrid L1 hit, Cache::get_or_load",
        costs: &[("cost_vs_engine", "engine"), ("cost_vs_memory", "load-on")],
        speeds: &[],
    },
    Contender {
        name: "moka-get",
        label: "moka future::Cache::get",
        costs: &[("cost_vs_engine", "engine")],
        speeds: &[],
    },
    Contender {
        name: "moka-get-with",
        label: "moka future::Cache::get_with_by_ref hit",
        costs: &[("cost_vs_engine", "engine")],
        speeds: &[],
    },
    Contender {
        name: "quick-guard",
        label: "quick_cache get_value_or_guard_async hit",
        costs: &[("cost_vs_engine", "engine")],
        speeds: &[],
    },
];

/// The hybrid contenders' cache, with what keeps it running.
struct Hybrid {
    cache: Cache<u64>,
    /// Drives the store's background tasks (invalidation subscriber,
    /// breaker prober) and its Redis connection.
    _runtime: tokio::runtime::Runtime,
    _server: RedisServer,
}

/// The caches under test, prefilled with the same keys and values.
struct Caches {
    engine: MemoryCache<String, u64>,
    on: Cache<u64>,
    off: Cache<u64>,
    hybrid: Option<Hybrid>,
    moka: moka::future::Cache<String, u64>,
    quick: quick_cache::sync::Cache<String, u64>,
}

impl Caches {
    fn build(
        keys: &[String],
        ttl: Option<Duration>,
        with_hybrid: bool,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<Caches, String> {
        let capacity = keys.len() as u64 * 2;
        let cache_ttl = ttl.map_or(Ttl::Never, Ttl::After);
        let engine = MemoryCache::new(capacity);
        let on = Cache::builder().capacity(capacity).metrics(true).build();
        let off = Cache::builder().capacity(capacity).metrics(false).build();
        let mut moka = moka::future::Cache::builder().max_capacity(capacity);
        if let Some(ttl) = ttl {
            moka = moka.time_to_live(ttl);
        }
        let moka = moka.build();
        let quick = quick_cache::sync::Cache::new(capacity as usize);
        let hybrid = if with_hybrid {
            Some(Hybrid::build(keys, ttl)?)
        } else {
            None
        };
        runtime.block_on(async {
            for (i, key) in keys.iter().enumerate() {
                let value = i as u64;
                engine.insert_with_ttl(key.clone(), value, cache_ttl);
                for cache in [&on, &off] {
                    // The in-memory store cannot fail.
                    let _ = cache.set(key, value, cache_ttl).await;
                }
                moka.insert(key.clone(), value).await;
                quick.insert(key.clone(), value);
            }
        });
        Ok(Caches {
            engine,
            on,
            off,
            hybrid,
            moka,
            quick,
        })
    }
}

impl Hybrid {
    /// A cache over a hybrid store on a fresh redis-server, every key
    /// written through it (to L2, and kept in L1).
    fn build(keys: &[String], ttl: Option<Duration>) -> Result<Hybrid, String> {
        let server = RedisServer::try_start().map_err(|e| {
            format!("the hybrid contenders need redis-server ({e}); leave them out with --only")
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let url = server.url();
        let cache = runtime.block_on(async {
            let l2 = RedisStore::builder()
                .url(&url)
                .prefix("asyncbench")
                .build()
                .await
                .map_err(|e| format!("cannot connect to {url}: {e}"))?;
            let store = HybridStore::builder(l2)
                .l1_capacity(keys.len() as u64 * 2)
                // Capped like the other contenders' entries, or not at all.
                .l1_ttl(ttl.unwrap_or(Duration::MAX))
                .build()
                .await
                .map_err(|e| e.to_string())?;
            let cache: Cache<u64> = Cache::builder().store(store).build();
            for (i, key) in keys.iter().enumerate() {
                cache
                    .set(key, i as u64, ttl.map_or(Ttl::Never, Ttl::After))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(cache)
        })?;
        Ok(Hybrid {
            cache,
            _runtime: runtime,
            _server: server,
        })
    }
}

/// Loader of the get_or_load contenders: never called, every read hits.
async fn unreachable_loader() -> Result<u64, std::io::Error> {
    Err(std::io::Error::other("the benchmark's keys are all cached"))
}

/// One thread's share of one run: the trace read once through `name`;
/// answers the hits. Never inlined, so that callgrind can count inside it
/// alone (`--toggle-collect=*replay_on*`, see `scripts/callgrind-async`).
#[inline(never)]
fn replay_on(
    runtime: &tokio::runtime::Runtime,
    caches: &Caches,
    name: &str,
    keys: &[String],
    trace: &[u32],
) -> u64 {
    runtime.block_on(replay(caches, name, keys, trace))
}

async fn replay(caches: &Caches, name: &str, keys: &[String], trace: &[u32]) -> u64 {
    let mut found = 0u64;
    let hybrid = || &caches.hybrid.as_ref().expect("built when selected").cache;
    match name {
        "engine" => {
            for &i in trace {
                found += u64::from(caches.engine.get(keys[i as usize].as_str()).is_some());
            }
        }
        "get-on" | "get-off" | "hybrid-get" => {
            let cache = match name {
                "get-on" => &caches.on,
                "get-off" => &caches.off,
                _ => hybrid(),
            };
            for &i in trace {
                found += u64::from(matches!(cache.get(&keys[i as usize]).await, Ok(Some(_))));
            }
        }
        "load-on" | "load-off" | "hybrid-load" => {
            let cache = match name {
                "load-on" => &caches.on,
                "load-off" => &caches.off,
                _ => hybrid(),
            };
            for &i in trace {
                let key = &keys[i as usize];
                found += u64::from(cache.get_or_load(key, unreachable_loader).await.is_ok());
            }
        }
        "moka-get" => {
            for &i in trace {
                found += u64::from(caches.moka.get(keys[i as usize].as_str()).await.is_some());
            }
        }
        "moka-get-with" => {
            for &i in trace {
                let key = keys[i as usize].as_str();
                let value = caches.moka.get_with_by_ref(key, async { u64::MAX }).await;
                found += u64::from(value != u64::MAX);
            }
        }
        "quick-guard" => {
            for &i in trace {
                let key = keys[i as usize].as_str();
                let value = caches.quick.get_value_or_guard_async(key).await;
                found += u64::from(value.is_ok());
            }
        }
        _ => unreachable!("contender names are checked before the runs"),
    }
    black_box(found)
}

/// Nanoseconds per operation (per thread) of one run of `name`.
fn measure(
    caches: &Caches,
    name: &str,
    keys: &[String],
    traces: &[Vec<u32>],
    threads: usize,
) -> Result<f64, String> {
    let barrier = Barrier::new(threads);
    let results: Vec<Result<(f64, u64), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = traces[..threads]
            .iter()
            .map(|trace| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .map_err(|e| e.to_string())?;
                    barrier.wait();
                    let start = Instant::now();
                    let found = replay_on(&runtime, caches, name, keys, trace);
                    Ok((start.elapsed().as_secs_f64(), found))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a thread panicked".into())))
            .collect()
    });
    let mut slowest = 0f64;
    for result in results {
        let (seconds, found) = result?;
        if found != traces[0].len() as u64 {
            return Err(format!("{name}: {found} hits of {}", traces[0].len()));
        }
        slowest = slowest.max(seconds);
    }
    Ok(slowest * 1e9 / traces[0].len() as f64)
}

/// Installs the INFO-level subscriber of `--info-subscriber`.
#[cfg(feature = "tracing")]
fn subscriber(args: &AsyncArgs) -> Result<(), String> {
    if !args.info_subscriber {
        return Ok(());
    }
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::sink)
        .finish();
    // Global, so that every measuring thread sees it.
    tracing::subscriber::set_global_default(subscriber).map_err(|e| e.to_string())
}

#[cfg(not(feature = "tracing"))]
fn subscriber(args: &AsyncArgs) -> Result<(), String> {
    if args.info_subscriber {
        return Err("--info-subscriber needs cachex-bench built with --features tracing".into());
    }
    Ok(())
}

/// The contenders `--only` selects, in table order. `none` selects none
/// (the runs then only build and fill the caches).
fn selected(only: &[String]) -> Result<Vec<&'static Contender>, String> {
    for name in only {
        if name != "none" && !CONTENDERS.iter().any(|c| c.name == name) {
            return Err(format!("--only {name}: no such contender"));
        }
    }
    Ok(CONTENDERS
        .iter()
        .filter(|c| only.is_empty() || only.iter().any(|o| o == c.name))
        .collect())
}

pub fn run(args: &AsyncArgs) -> Result<(), String> {
    subscriber(args)?;
    let tracing = if cfg!(feature = "tracing") {
        if args.info_subscriber {
            "on, INFO subscriber"
        } else {
            "on, no subscriber"
        }
    } else {
        "compiled out"
    };
    let contenders = selected(&args.only)?;
    let ttl = args.ttl.map(Duration::from_secs);
    let keys: Vec<String> = (0..args.keys).map(|i| format!("user:{i}")).collect();
    let max_threads = args.threads.iter().copied().max().unwrap_or(1).max(1);
    let zipf = Zipf::new(args.keys, 1.01);
    let traces: Vec<Vec<u32>> = (0..max_threads)
        .map(|t| {
            let mut rng = Rng::new(0x5eed + t as u64);
            (0..args.ops)
                .map(|_| (zipf.sample(&mut rng) % args.keys) as u32)
                .collect()
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    let with_hybrid = contenders.iter().any(|c| c.name.starts_with("hybrid"));
    let caches = Caches::build(&keys, ttl, with_hybrid, &runtime)?;

    if !args.json {
        println!(
            "async hit path: Zipf(1.01) over {} cached keys ({}), {} ops per thread per run, \
             median of {} interleaved runs; tracing {tracing}",
            thousands(args.keys),
            ttl.map_or("no TTL".to_string(), |t| format!("TTL {} s", t.as_secs())),
            thousands(args.ops as u64),
            args.runs
        );
        println!(
            "cost = this contender's ns / the other's (lower is better; targets: \
             vs engine <= 1.5, hybrid vs memory <= 1.2); speed = the peer's ns / \
             this one's (higher is better; targets: >= 3 vs moka, >= 1 vs quick_cache)"
        );
    }
    for &threads in &args.threads {
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
        for _ in 0..args.runs.max(1) {
            for (i, contender) in contenders.iter().enumerate() {
                let ns = measure(&caches, contender.name, &keys, &traces, threads.max(1))?;
                samples[i].push(ns);
            }
        }
        let medians: Vec<f64> = samples.iter().map(|s| median(s)).collect();
        let of = |name: &str| {
            contenders
                .iter()
                .position(|c| c.name == name)
                .map(|i| medians[i])
        };
        let mut table = Table::new(["contender", "ns/op (median)", "min", "max", "ratios"]);
        for (i, contender) in contenders.iter().enumerate() {
            let mut ratios = Map::new();
            let mut shown = Vec::new();
            for &(key, other) in contender.costs {
                if let Some(other_ns) = of(other) {
                    let ratio = medians[i] / other_ns;
                    ratios.insert(key.into(), json!(round(ratio, 4)));
                    shown.push(format!("cost {ratio:.2} vs {other}"));
                }
            }
            for &(key, other) in contender.speeds {
                if let Some(other_ns) = of(other) {
                    let ratio = other_ns / medians[i];
                    ratios.insert(key.into(), json!(round(ratio, 4)));
                    shown.push(format!("speed {ratio:.2} vs {other}"));
                }
            }
            let min = samples[i].iter().copied().fold(f64::INFINITY, f64::min);
            let max = samples[i].iter().copied().fold(0f64, f64::max);
            table.row(vec![
                contender.label.to_string(),
                format!("{:.1}", medians[i]),
                format!("{min:.1}"),
                format!("{max:.1}"),
                shown.join(", "),
            ]);
            let mut line = json!({
                "workload": "async",
                "contender": contender.name,
                "label": contender.label,
                "threads": threads,
                "keys": args.keys,
                "ttl_s": args.ttl,
                "ops_per_thread": args.ops,
                "runs": args.runs,
                "tracing": tracing,
                "ns_per_op": round(medians[i], 2),
                "ns_per_op_min": round(min, 2),
                "ns_per_op_max": round(max, 2),
                "samples": samples[i].iter().map(|s| round(*s, 2)).collect::<Vec<_>>(),
            });
            if let Value::Object(fields) = &mut line {
                fields.extend(ratios);
            }
            emit(&line);
        }
        if !args.json {
            println!("\nthreads: {threads}");
            print!("{}", table.render());
        }
    }
    Ok(())
}
