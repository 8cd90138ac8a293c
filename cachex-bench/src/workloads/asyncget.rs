//! `async`: what metrics (and, built with `--features tracing`, spans) cost
//! on the async layer's hit path.
//!
//! Every contender reads the same pre-generated Zipf trace of string keys,
//! all prefilled (100% hits), on one current-thread tokio runtime per
//! thread:
//!
//! - `engine get`: `MemoryCache::get` directly, the floor;
//! - `Cache::get` with metrics on and off;
//! - `Cache::get_or_load` hits with metrics on and off.
//!
//! Runs are interleaved (every contender once, then again) and the median
//! per contender is reported, with the on/off ratios. `--runs` repeats the
//! whole set; on a shared machine use 7 or more.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::Instant;

use cachex::{Cache, MemoryCache, Ttl};
use clap::Args;
use serde_json::json;

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
    /// Only the given contenders (by their short name: engine, get-on,
    /// get-off, load-on, load-off).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// With cachex's `tracing` feature: install a subscriber at INFO level
    /// (writing nowhere) during the runs, the usual production set-up in
    /// which the cache's DEBUG spans are filtered out.
    #[arg(long)]
    pub info_subscriber: bool,
    /// Print one JSON object per result line instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// The contenders, by short name.
const CONTENDERS: [(&str, &str); 5] = [
    ("engine", "engine MemoryCache::get"),
    ("get-on", "Cache::get, metrics on"),
    ("get-off", "Cache::get, metrics off"),
    ("load-on", "Cache::get_or_load hit, metrics on"),
    ("load-off", "Cache::get_or_load hit, metrics off"),
];

/// The caches under test, prefilled with the same keys.
struct Caches {
    engine: MemoryCache<String, u64>,
    on: Cache<u64>,
    off: Cache<u64>,
}

impl Caches {
    fn build(keys: &[String], runtime: &tokio::runtime::Runtime) -> Caches {
        let capacity = keys.len() as u64 * 2;
        let engine = MemoryCache::new(capacity);
        let on = Cache::builder().capacity(capacity).metrics(true).build();
        let off = Cache::builder().capacity(capacity).metrics(false).build();
        runtime.block_on(async {
            for (i, key) in keys.iter().enumerate() {
                engine.insert(key.clone(), i as u64);
                for cache in [&on, &off] {
                    // The in-memory store cannot fail.
                    let _ = cache.set(key, i as u64, Ttl::Never).await;
                }
            }
        });
        Caches { engine, on, off }
    }
}

/// Loader of the get_or_load contenders: never called, every read hits.
async fn unreachable_loader() -> Result<u64, std::io::Error> {
    Err(std::io::Error::other("the benchmark's keys are all cached"))
}

/// One thread's share of one run: the trace, read once, through `name`.
async fn replay(caches: &Caches, name: &str, keys: &[String], trace: &[u32]) -> u64 {
    let mut found = 0u64;
    match name {
        "engine" => {
            for &i in trace {
                found += u64::from(caches.engine.get(keys[i as usize].as_str()).is_some());
            }
        }
        "get-on" | "get-off" => {
            let cache = if name == "get-on" {
                &caches.on
            } else {
                &caches.off
            };
            for &i in trace {
                let hit = cache.get(&keys[i as usize]).await;
                found += u64::from(matches!(hit, Ok(Some(_))));
            }
        }
        _ => {
            let cache = if name == "load-on" {
                &caches.on
            } else {
                &caches.off
            };
            for &i in trace {
                let hit = cache
                    .get_or_load(&keys[i as usize], unreachable_loader)
                    .await;
                found += u64::from(hit.is_ok());
            }
        }
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
                    let found = runtime.block_on(replay(caches, name, keys, trace));
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
    let caches = Caches::build(&keys, &runtime);
    let contenders: Vec<(&str, &str)> = CONTENDERS
        .iter()
        .copied()
        .filter(|(name, _)| args.only.is_empty() || args.only.iter().any(|o| o == name))
        .collect();

    if !args.json {
        println!(
            "async hit path: Zipf(1.01) over {} cached keys, {} ops per thread per run, \
             median of {} interleaved runs; tracing {tracing}",
            thousands(args.keys),
            thousands(args.ops as u64),
            args.runs
        );
    }
    for &threads in &args.threads {
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
        for _ in 0..args.runs.max(1) {
            for (i, (name, _)) in contenders.iter().enumerate() {
                samples[i].push(measure(&caches, name, &keys, &traces, threads.max(1))?);
            }
        }
        let medians: Vec<f64> = samples.iter().map(|s| median(s)).collect();
        let of = |name: &str| {
            contenders
                .iter()
                .position(|(n, _)| *n == name)
                .map(|i| medians[i])
        };
        let mut table = Table::new([
            "contender",
            "ns/op (median)",
            "min",
            "max",
            "vs metrics off",
        ]);
        for (i, (name, label)) in contenders.iter().enumerate() {
            let off = match *name {
                "get-on" => of("get-off"),
                "load-on" => of("load-off"),
                _ => None,
            };
            let vs_off = off.map(|off| medians[i] / off);
            let min = samples[i].iter().copied().fold(f64::INFINITY, f64::min);
            let max = samples[i].iter().copied().fold(0f64, f64::max);
            table.row(vec![
                label.to_string(),
                format!("{:.1}", medians[i]),
                format!("{min:.1}"),
                format!("{max:.1}"),
                vs_off.map_or(String::new(), |r| format!("{r:.3}")),
            ]);
            emit(&json!({
                "command": "async",
                "contender": name,
                "threads": threads,
                "keys": args.keys,
                "ops_per_thread": args.ops,
                "runs": args.runs,
                "tracing": tracing,
                "ns_per_op_median": round(medians[i], 2),
                "ns_per_op_min": round(min, 2),
                "ns_per_op_max": round(max, 2),
                "ratio_vs_metrics_off": vs_off.map(|r| round(r, 4)),
                "samples": samples[i].iter().map(|s| round(*s, 2)).collect::<Vec<_>>(),
            }));
        }
        if !args.json {
            println!("\nthreads: {threads}");
            print!("{}", table.render());
        }
    }
    Ok(())
}
