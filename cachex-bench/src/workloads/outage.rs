//! Outage workload (part of the `hybrid` command): two processes, each a
//! `Cache` over its own hybrid store on one `redis-server`, read 1,000 keys
//! with `get_or_load` from 64 tasks, before, during and after an outage:
//! the bench kills the server (SIGKILL), then restarts it on the same port
//! (empty: nothing persists).
//!
//! Every key is in both processes' L1 before the outage and no entry
//! expires during the run (TTLs of ten minutes), so the target is: no
//! loader call during the outage, and latency during it close to latency
//! before (p99 within 2x, max under 50 ms). After the outage, the restarted
//! server has lost every key: each process re-reads its entries from L2 on
//! their next read and, finding nothing, loads the key, writes it to L2
//! and invalidates it in the other process, which then finds it in L2. So
//! the "after" phase's loader calls of both processes together come to
//! about one per key (a few more where both miss the same key at once).
//!
//! The second process is this binary again (`hybrid-outage-peer`); the
//! first drives the phases through the peer's stdin and reads its results
//! from its stdout. The bench always starts its own server, since it kills
//! it (`--url` does not apply here).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachex::store::hybrid::{BreakerState, HybridStore};
use cachex::store::RedisStore;
use cachex::Cache;
use cachex_testkit::RedisServer;
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::report::{emit, json_wanted, round, thousands, Table};

const PREFIX: &str = "obench";
const PHASES: [&str; 3] = ["before", "during", "after"];
/// Entries outlive the run: a loader call during it can only come from
/// the outage, not from an expiry.
const TTL: Duration = Duration::from_secs(600);

/// Options of the outage measurement.
#[derive(Debug, Args)]
pub struct OutageArgs {
    /// Keys each process reads (all held in L1 before the outage).
    #[arg(long, default_value_t = 1_000)]
    pub outage_keys: usize,
    /// Tasks per process.
    #[arg(long, default_value_t = 64)]
    pub outage_tasks: usize,
    /// Milliseconds of the "before" and "after" phases; the outage lasts
    /// twice as long. 0 skips the outage measurement.
    #[arg(long, default_value_t = 1_000)]
    pub outage_phase_ms: u64,
}

/// Options of the hidden `hybrid-outage-peer` command.
#[derive(Debug, Args)]
pub struct OutagePeerArgs {
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub keys: usize,
    #[arg(long)]
    pub tasks: usize,
}

/// One phase's figures, in one process, as counted.
struct PhaseResult {
    calls: u64,
    errors: u64,
    loader_calls: u64,
    latency_ns: Histogram<u64>,
}

/// What is reported of a phase (and what the peer sends).
struct Summary {
    calls: u64,
    errors: u64,
    loader_calls: u64,
    p50_ns: u64,
    p99_ns: u64,
    max_ns: u64,
}

impl PhaseResult {
    fn summary(&self) -> Summary {
        Summary {
            calls: self.calls,
            errors: self.errors,
            loader_calls: self.loader_calls,
            p50_ns: self.latency_ns.value_at_quantile(0.50),
            p99_ns: self.latency_ns.value_at_quantile(0.99),
            max_ns: self.latency_ns.max(),
        }
    }
}

impl Summary {
    fn to_line(&self) -> String {
        format!(
            "RESULT {} {} {} {} {} {}",
            self.calls, self.errors, self.loader_calls, self.p50_ns, self.p99_ns, self.max_ns
        )
    }

    fn from_line(line: &str) -> Option<Summary> {
        let fields: Vec<u64> = line
            .strip_prefix("RESULT ")?
            .split_whitespace()
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        let [calls, errors, loader_calls, p50_ns, p99_ns, max_ns] = fields[..] else {
            return None;
        };
        Some(Summary {
            calls,
            errors,
            loader_calls,
            p50_ns,
            p99_ns,
            max_ns,
        })
    }
}

/// The readers of one process: `tasks` tasks calling `get_or_load` until
/// stopped, counting into the phase that is current at each call.
struct Load {
    phase: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    loader_calls: Arc<[AtomicU64; 3]>,
    tasks: Vec<tokio::task::JoinHandle<Vec<PhaseResult>>>,
}

async fn hybrid_cache(url: &str, keys: usize) -> Result<(Cache<u64>, HybridStore<u64>), String> {
    let l2 = RedisStore::builder()
        .url(url)
        .prefix(PREFIX)
        .build()
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    // Defaults otherwise: the measurement is of what a user gets.
    let store = HybridStore::builder(l2)
        .l1_capacity(keys as u64 * 2)
        .l1_ttl(TTL)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let cache = Cache::builder()
        .store(store.clone())
        .default_ttl(TTL)
        .build();
    Ok((cache, store))
}

impl Load {
    fn start(cache: &Cache<u64>, keys: usize, tasks: usize) -> Load {
        let phase = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let loader_calls: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
        let tasks = (0..tasks)
            .map(|t| {
                let (cache, phase, stop, loads) = (
                    cache.clone(),
                    Arc::clone(&phase),
                    Arc::clone(&stop),
                    Arc::clone(&loader_calls),
                );
                tokio::spawn(async move {
                    let mut results: Vec<PhaseResult> = (0..PHASES.len())
                        .map(|_| PhaseResult {
                            calls: 0,
                            errors: 0,
                            loader_calls: 0,
                            latency_ns: Histogram::new(3).expect("3 significant figures"),
                        })
                        .collect();
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let key = (t * 7_919 + n * 13) % keys;
                        n += 1;
                        let now = phase.load(Ordering::Relaxed);
                        let loads = Arc::clone(&loads);
                        let began = Instant::now();
                        let got = cache
                            .get_or_load(&key.to_string(), move || async move {
                                loads[now].fetch_add(1, Ordering::Relaxed);
                                Ok::<_, std::io::Error>(key as u64)
                            })
                            .await;
                        let ns = began.elapsed().as_nanos() as u64;
                        let result = &mut results[now];
                        result.calls += 1;
                        result.errors += u64::from(!matches!(got, Ok(v) if v == key as u64));
                        let _ = result.latency_ns.record(ns.max(1));
                        // L1 hits never yield: let the other tasks (and the
                        // subscriber) run.
                        if n % 64 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    results
                })
            })
            .collect();
        Load {
            phase,
            stop,
            loader_calls,
            tasks,
        }
    }

    fn enter(&self, phase: usize) {
        self.phase.store(phase, Ordering::Relaxed);
    }

    async fn finish(self) -> Vec<PhaseResult> {
        self.stop.store(true, Ordering::Relaxed);
        let mut merged: Option<Vec<PhaseResult>> = None;
        for task in self.tasks {
            let results = task.await.expect("a reader task panicked");
            match &mut merged {
                None => merged = Some(results),
                Some(merged) => {
                    for (m, r) in merged.iter_mut().zip(results) {
                        m.calls += r.calls;
                        m.errors += r.errors;
                        let _ = m.latency_ns.add(&r.latency_ns);
                    }
                }
            }
        }
        let mut merged = merged.unwrap_or_default();
        for (i, m) in merged.iter_mut().enumerate() {
            m.loader_calls = self.loader_calls[i].load(Ordering::Relaxed);
        }
        merged
    }
}

/// Loads every key once, through the cache (the first process's loader
/// fills Redis; the second finds the keys there).
async fn warm(cache: &Cache<u64>, keys: usize) -> Result<(), String> {
    for key in 0..keys {
        cache
            .get_or_load(&key.to_string(), move || async move {
                Ok::<_, std::io::Error>(key as u64)
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Runs the outage measurement.
pub async fn measure(args: &OutageArgs, version: &str) -> Result<(), String> {
    if args.outage_phase_ms == 0 {
        return Ok(());
    }
    let phase = Duration::from_millis(args.outage_phase_ms);
    let (keys, tasks) = (args.outage_keys.max(1), args.outage_tasks.max(1));
    let mut server = RedisServer::try_start()?;
    let url = server.url();
    let (cache, store) = hybrid_cache(&url, keys).await?;
    warm(&cache, keys).await?;

    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut peer = Command::new(exe)
        .args(["hybrid-outage-peer", "--url", &url])
        .args(["--keys", &keys.to_string(), "--tasks", &tasks.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the peer process: {e}"))?;
    let mut to_peer = peer.stdin.take().ok_or("no peer stdin")?;
    let mut from_peer = BufReader::new(peer.stdout.take().ok_or("no peer stdout")?).lines();
    match from_peer.next() {
        Some(Ok(line)) if line == "ready" => {}
        other => return Err(format!("the peer did not start: {other:?}")),
    }
    let mut tell = |what: &str| writeln!(to_peer, "{what}").map_err(|e| e.to_string());

    let load = Load::start(&cache, keys, tasks);
    tell("0")?;
    tokio::time::sleep(phase).await;

    server.kill();
    let killed = Instant::now();
    load.enter(1);
    tell("1")?;
    tokio::time::sleep(phase * 2).await;

    server.restart();
    let outage = killed.elapsed();
    load.enter(2);
    tell("2")?;
    let began = Instant::now();
    let back = tokio::time::timeout(Duration::from_secs(10), async {
        while !(store.is_subscribed() && store.breaker_state() == BreakerState::Closed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .is_ok();
    let recovery = began.elapsed();
    tokio::time::sleep(phase.saturating_sub(recovery)).await;
    tell("stop")?;
    let mine: Vec<Summary> = load
        .finish()
        .await
        .iter()
        .map(PhaseResult::summary)
        .collect();
    let stats = store.stats();

    let mut rows = vec![("first", mine)];
    let mut theirs = Vec::new();
    for line in from_peer.by_ref().map_while(Result::ok) {
        let Some(result) = Summary::from_line(&line) else {
            continue;
        };
        theirs.push(result);
        if theirs.len() == PHASES.len() {
            break;
        }
    }
    let _ = peer.wait();
    if theirs.len() != PHASES.len() {
        return Err("the peer process did not report its results".into());
    }
    rows.push(("second", theirs));
    let recovered = back.then_some(recovery);
    report(
        &rows,
        keys,
        tasks,
        outage,
        recovered,
        stats.unverified_hits,
        version,
    );
    Ok(())
}

fn report(
    rows: &[(&str, Vec<Summary>)],
    keys: usize,
    tasks: usize,
    outage: Duration,
    recovered: Option<Duration>,
    unverified_hits: u64,
    version: &str,
) {
    let mut table = Table::new([
        "process",
        "phase",
        "calls",
        "errors",
        "loader calls",
        "p50 us",
        "p99 us",
        "max us",
    ]);
    for (process, results) in rows {
        for (phase, r) in PHASES.iter().zip(results) {
            let us = |ns: u64| ns as f64 / 1_000.0;
            let (p50, p99, max) = (us(r.p50_ns), us(r.p99_ns), us(r.max_ns));
            if json_wanted() {
                emit(&json!({
                    "workload": "outage",
                    "contender": "cachex-hybrid",
                    "process": process,
                    "phase": phase,
                    "keys": keys,
                    "tasks": tasks,
                    "calls": r.calls,
                    "errors": r.errors,
                    "loader_calls": r.loader_calls,
                    "p50_us": round(p50, 2),
                    "p99_us": round(p99, 2),
                    "max_us": round(max, 1),
                    "outage_ms": outage.as_millis() as u64,
                    "recovery_ms": recovered.map(|d| d.as_millis() as u64),
                    "redis_version": version,
                }));
            }
            table.row(vec![
                process.to_string(),
                phase.to_string(),
                thousands(r.calls),
                r.errors.to_string(),
                thousands(r.loader_calls),
                format!("{p50:.2}"),
                format!("{p99:.2}"),
                format!("{max:.1}"),
            ]);
        }
    }
    if !json_wanted() {
        println!(
            "\noutage: 2 processes x {tasks} tasks, get_or_load over {keys} keys held in L1; redis {version} killed for {} ms (SIGKILL), restarted empty; {}; first process: {unverified_hits} L1 hits served unverified during the outage\n",
            outage.as_millis(),
            match recovered {
                Some(d) => format!("the first process used it again {} ms after the restart", d.as_millis()),
                None => "the first process did not see it back within 10 s".to_string(),
            },
        );
        print!("{}", table.render());
        println!();
    }
}

/// The second process: warms up, says `ready`, then enters the phase
/// named by each stdin line until `stop`, and prints one `RESULT` line per
/// phase.
pub fn peer(args: &OutagePeerArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    runtime.block_on(async {
        let (cache, _store) = hybrid_cache(&args.url, args.keys).await?;
        warm(&cache, args.keys).await?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        println!("ready");
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        let mut load = None;
        while let Some(line) = rx.recv().await {
            match line.as_str() {
                "stop" => break,
                phase => {
                    let phase: usize = phase.parse().map_err(|_| format!("bad phase {phase}"))?;
                    load.get_or_insert_with(|| Load::start(&cache, args.keys, args.tasks))
                        .enter(phase);
                }
            }
        }
        let results = match load {
            Some(load) => load.finish().await,
            None => return Err("stopped before any phase".into()),
        };
        let mut out = std::io::stdout().lock();
        for r in &results {
            writeln!(out, "{}", r.summary().to_line()).map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())
    })
}
