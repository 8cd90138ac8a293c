//! Hybrid workload: `Cache::get` over the two-tier store at 90% L1 hits,
//! beside the memory-only and Redis-only stores; the invalidation
//! latency between two OS processes; and a Redis outage under load
//! (`outage.rs`).
//!
//! **get.** 1,000 keys of 100-byte values, all in Redis. For the hybrid,
//! 900 "hot" keys are kept in L1 and 100 "cold" ones are not: every tenth
//! request reads a cold key (an L1 miss, an L2 read and a promotion), and
//! the key is then dropped from L1 again, outside the timed call, so the
//! mix stays at 90% L1 hits. The memory-only and Redis-only caches read
//! the same keys (always hits). Latency at concurrency 1, throughput at
//! 64 tasks; runs alternate between contenders.
//!
//! **Invalidation latency.** This binary runs itself again as a second
//! process (`hybrid-peer`) with its own hybrid store on the same server.
//! The peer first reads every key, so its L1 holds the old values; this
//! process then writes each key once, 1 ms apart, and the peer reports,
//! from its invalidation hook, when its L1 dropped the key. Both sides
//! stamp with the system clock (one machine, one clock). Reported from
//! the write's start and from its return (clamped at 0: the message can
//! arrive before the writer has read Redis's reply). Target: the old value
//! is gone from the peer's L1 within 50 ms of the write returning.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cachex::store::hybrid::{HybridStore, Invalidated};
use cachex::store::{Envelope, MemoryStore, RedisStore, Store};
use cachex::Cache;
use clap::Args;
use serde_json::json;

use super::redis_bench::{run_tasks, RedisBenchArgs, Run};
use crate::report::{emit, json_wanted, median, percentile, ratio, round, thousands, Table};

const KEYS: usize = 1_000;
/// Keys `HOT..KEYS` are the cold ones.
const HOT: usize = 900;
const PREFIX: &str = "hbench";
const STALENESS_TARGET: Duration = Duration::from_millis(50);

/// Options of the `hybrid` command.
#[derive(Debug, Args)]
pub struct HybridArgs {
    #[command(flatten)]
    pub redis: RedisBenchArgs,
    /// Writes whose invalidation is timed in the second process.
    #[arg(long, default_value_t = 2_000)]
    pub invalidations: usize,
    #[command(flatten)]
    pub outage: super::outage::OutageArgs,
}

/// Options of the hidden `hybrid-peer` command (the second process).
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// The server.
    #[arg(long)]
    pub url: String,
    /// Keys to read into L1 before reporting ready.
    #[arg(long)]
    pub keys: usize,
}

#[derive(Clone)]
enum Contender {
    Memory(Cache<String>),
    Redis(Cache<String>),
    Hybrid(Cache<String>, HybridStore<String>),
}

impl Contender {
    fn name(&self) -> &'static str {
        match self {
            Contender::Memory(_) => "memory",
            Contender::Redis(_) => "redis",
            Contender::Hybrid(..) => "hybrid",
        }
    }

    /// Reads key `i`, timed; answers the latency in nanoseconds.
    async fn get(&self, keys: &[String], i: usize) -> u64 {
        let cache = match self {
            Contender::Memory(c) | Contender::Redis(c) | Contender::Hybrid(c, _) => c,
        };
        let began = Instant::now();
        let found = cache
            .get(&keys[i])
            .await
            .unwrap_or_else(|e| panic!("{} get failed: {e}", self.name()));
        let ns = began.elapsed().as_nanos() as u64;
        assert!(found.is_some(), "{}: key {i} missing", self.name());
        if let Contender::Hybrid(_, store) = self {
            if i >= HOT {
                store.invalidate_l1(&keys[i]);
            }
        }
        ns
    }
}

/// The key of request `n` of task `t`: one in ten is cold.
fn key_index(t: usize, n: usize) -> usize {
    let x = t * 7919 + n;
    if n % 10 == 9 {
        HOT + x % (KEYS - HOT)
    } else {
        x % HOT
    }
}

/// Runs the `hybrid` command.
pub fn run(args: &HybridArgs) -> Result<(), String> {
    args.redis.run(|url, version| async move {
        measure_get(args, &url, &version).await?;
        measure_invalidation(args, &url, &version).await?;
        super::outage::measure(&args.outage, &version).await
    })
}

async fn redis_store(url: &str) -> Result<RedisStore<String>, String> {
    RedisStore::builder()
        .url(url)
        .prefix(PREFIX)
        .build()
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))
}

async fn measure_get(args: &HybridArgs, url: &str, version: &str) -> Result<(), String> {
    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("key:{i}")).collect());
    let value = "v".repeat(args.redis.value_size);
    let redis = redis_store(url).await?;
    let hybrid = HybridStore::builder(redis_store(url).await?)
        .l1_capacity(KEYS as u64 * 2)
        .l1_ttl(Duration::from_secs(3600))
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let memory = MemoryStore::new(KEYS as u64 * 2);
    for key in keys.iter() {
        let entry = || Envelope::found(value.clone());
        redis
            .set(key, entry(), None)
            .await
            .map_err(|e| e.to_string())?;
        memory
            .set(key, entry(), None)
            .await
            .map_err(|e| e.to_string())?;
    }
    // L1 holds the hot keys only.
    for (i, key) in keys.iter().enumerate() {
        if i < HOT {
            hybrid.get(key).await.map_err(|e| e.to_string())?;
        }
    }
    let cache = |store: Arc<dyn Store<String>>| Cache::builder().store(store).build();
    let contenders = [
        Contender::Memory(cache(Arc::new(memory))),
        Contender::Redis(cache(Arc::new(redis))),
        Contender::Hybrid(cache(Arc::new(hybrid.clone())), hybrid.clone()),
    ];

    let mut table = Table::new([
        "contender",
        "concurrency",
        "p50 us",
        "p99 us",
        "mean us",
        "ops/s",
        "ops/s / redis",
    ]);
    for concurrency in [1, args.redis.concurrency] {
        let ops = if concurrency == 1 {
            args.redis.ops
        } else {
            args.redis.ops_per_task
        };
        for c in &contenders {
            run_once(c, &keys, concurrency, ops / 10 + 1).await;
        }
        let mut latencies: Vec<Vec<u64>> = contenders.iter().map(|_| Vec::new()).collect();
        let mut rates: Vec<Vec<f64>> = contenders.iter().map(|_| Vec::new()).collect();
        for run in 0..args.redis.runs {
            for k in 0..contenders.len() {
                let idx = (k + run) % contenders.len();
                let run = run_once(&contenders[idx], &keys, concurrency, ops).await;
                latencies[idx].extend(run.latencies_ns);
                rates[idx].push(run.ops_per_s);
            }
        }
        let redis_rate = median(&rates[1]);
        for (idx, c) in contenders.iter().enumerate() {
            let lat = &mut latencies[idx];
            lat.sort_unstable();
            let (p50, p99) = (percentile(lat, 0.50), percentile(lat, 0.99));
            let mean = lat.iter().sum::<u64>() as f64 / lat.len().max(1) as f64 / 1_000.0;
            let rate = median(&rates[idx]);
            if json_wanted() {
                emit(&json!({
                    "workload": "hybrid_get",
                    "contender": c.name(),
                    "l1_hit_share": if matches!(c, Contender::Hybrid(..)) { 0.9 } else { f64::NAN },
                    "concurrency": concurrency,
                    "value_bytes": args.redis.value_size,
                    "p50_us": round(p50, 2),
                    "p99_us": round(p99, 2),
                    "mean_us": round(mean, 2),
                    "ops_per_s": rate.round(),
                    "ops_vs_redis": round(rate / redis_rate, 2),
                    "redis_version": version,
                    "runs": args.redis.runs,
                }));
            }
            table.row(vec![
                c.name().to_string(),
                concurrency.to_string(),
                format!("{p50:.2}"),
                format!("{p99:.2}"),
                format!("{mean:.2}"),
                thousands(rate as u64),
                ratio(rate, redis_rate),
            ]);
        }
    }
    let stats = hybrid.stats();
    let reads = (stats.l1_hits + stats.l1_misses).max(1);
    if !args.redis.json {
        println!(
            "Cache::get of a {}-byte value, redis {version}; hybrid at 90% L1 hits (measured over the whole run, warm-ups included: {:.1}%)\n",
            args.redis.value_size,
            100.0 * stats.l1_hits as f64 / reads as f64
        );
        print!("{}", table.render());
        println!();
    }
    Ok(())
}

async fn run_once(c: &Contender, keys: &Arc<Vec<String>>, concurrency: usize, ops: usize) -> Run {
    let (c, keys) = (c.clone(), keys.clone());
    let get = move |t: usize, n: usize| {
        let (c, keys) = (c.clone(), keys.clone());
        async move { c.get(&keys, key_index(t, n)).await }
    };
    run_tasks(get, concurrency, ops).await
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn inv_key(i: usize) -> String {
    format!("inv:{i}")
}

async fn measure_invalidation(args: &HybridArgs, url: &str, version: &str) -> Result<(), String> {
    let n = args.invalidations;
    if n == 0 {
        return Ok(());
    }
    let writer = HybridStore::builder(redis_store(url).await?)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    for i in 0..n {
        writer
            .set(&inv_key(i), Envelope::found("old".to_string()), None)
            .await
            .map_err(|e| e.to_string())?;
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut peer = Command::new(exe)
        .args(["hybrid-peer", "--url", url, "--keys", &n.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the peer process: {e}"))?;
    let mut lines = BufReader::new(peer.stdout.take().ok_or("no peer stdout")?).lines();
    match lines.next() {
        Some(Ok(line)) if line == "ready" => {}
        other => return Err(format!("the peer did not start: {other:?}")),
    }
    // The peer's report lines, read on a thread (blocking pipe).
    let reader = std::thread::spawn(move || {
        let mut seen = vec![None; n];
        for line in lines.map_while(Result::ok) {
            let mut parts = line.split_whitespace();
            let (Some(i), Some(ns)) = (parts.next(), parts.next()) else {
                continue;
            };
            if let (Ok(i), Ok(ns)) = (i.parse::<usize>(), ns.parse::<u64>()) {
                if i < n && seen[i].is_none() {
                    seen[i] = Some(ns);
                }
            }
            if seen.iter().all(Option::is_some) {
                break;
            }
        }
        seen
    });

    let mut writes = Vec::with_capacity(n);
    for i in 0..n {
        let started = unix_ns();
        writer
            .set(&inv_key(i), Envelope::found("new".to_string()), None)
            .await
            .map_err(|e| e.to_string())?;
        writes.push((started, unix_ns()));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Give the last messages a generous moment, then stop the peer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = peer.kill();
    let _ = peer.wait();
    let seen = reader.join().map_err(|_| "the peer reader panicked")?;

    let mut from_start = Vec::with_capacity(n);
    let mut from_return = Vec::with_capacity(n);
    for (&(started, returned), seen) in writes.iter().zip(&seen) {
        if let Some(at) = *seen {
            from_start.push(at.saturating_sub(started));
            from_return.push(at.saturating_sub(returned));
        }
    }
    let lost = n - from_start.len();
    from_start.sort_unstable();
    from_return.sort_unstable();
    let within = from_return
        .iter()
        .filter(|&&ns| ns <= STALENESS_TARGET.as_nanos() as u64)
        .count();
    let max = |v: &[u64]| v.last().map_or(f64::NAN, |&ns| ns as f64 / 1_000.0);
    if json_wanted() {
        emit(&json!({
            "workload": "hybrid_invalidation",
            "processes": 2,
            "writes": n,
            "lost": lost,
            "from_write_start_p50_us": round(percentile(&from_start, 0.50), 1),
            "from_write_start_p99_us": round(percentile(&from_start, 0.99), 1),
            "after_write_return_p50_us": round(percentile(&from_return, 0.50), 1),
            "after_write_return_p99_us": round(percentile(&from_return, 0.99), 1),
            "after_write_return_max_us": round(max(&from_return), 1),
            "within_50ms": within,
            "redis_version": version,
        }));
    } else {
        println!(
            "invalidation latency, 2 processes, {n} writes 1 ms apart, redis {version}; target: peer's L1 drops the old value within 50 ms of the write returning\n"
        );
        let mut table = Table::new([
            "measured from",
            "p50 us",
            "p99 us",
            "max us",
            "within 50 ms",
        ]);
        table.row(vec![
            "write start".into(),
            format!("{:.1}", percentile(&from_start, 0.50)),
            format!("{:.1}", percentile(&from_start, 0.99)),
            format!("{:.1}", max(&from_start)),
            String::new(),
        ]);
        table.row(vec![
            "write returned".into(),
            format!("{:.1}", percentile(&from_return, 0.50)),
            format!("{:.1}", percentile(&from_return, 0.99)),
            format!("{:.1}", max(&from_return)),
            format!("{within} / {n}"),
        ]);
        print!("{}", table.render());
        if lost > 0 {
            println!("{lost} invalidations never reported by the peer");
        }
    }
    Ok(())
}

/// The second process: holds every key in L1, then prints `<i> <unix ns>`
/// each time an invalidation drops one.
pub fn peer(args: &PeerArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    runtime.block_on(async {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, u64)>();
        let store = HybridStore::builder(redis_store(&args.url).await?)
            .on_invalidation(move |what| {
                // Stamped here, printed elsewhere: the hook runs on the
                // subscriber task and must stay short.
                if let Invalidated::Key(key) = what {
                    if let Some(i) = key.strip_prefix("inv:").and_then(|i| i.parse().ok()) {
                        let _ = tx.send((i, unix_ns()));
                    }
                }
            })
            .build()
            .await
            .map_err(|e| e.to_string())?;
        for i in 0..args.keys {
            store.get(&inv_key(i)).await.map_err(|e| e.to_string())?;
        }
        let printer = std::thread::spawn(move || {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "ready");
            let _ = out.flush();
            for (i, ns) in rx {
                let _ = writeln!(out, "{i} {ns}");
                let _ = out.flush();
            }
        });
        // Runs until the parent kills it.
        let _keep = store;
        std::future::pending::<()>().await;
        let _ = printer.join();
        Ok(())
    })
}
