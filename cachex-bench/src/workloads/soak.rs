//! Soak: three caches under a steady mixed load for minutes while Redis
//! is taken away again and again, watching memory and correctness.
//!
//! - `memory`: a `Cache` on the in-memory store, smaller than its key
//!   space (so it evicts all the time);
//! - `strict`: a `Cache` on a strict hybrid store that reaches Redis
//!   through a fault proxy: every fault reaches it, and every failure is
//!   an error its callers see;
//! - `available`: a `Cache` on a default (non-strict) hybrid store straight
//!   to the same `redis-server`: it must answer every call through every
//!   fault.
//!
//! In each, half the tasks write new versions of their own keys (the
//! "database" first, then `Cache::set`) and half read random keys with
//! `get_or_load`, whose loader reads the database. Every `--fault-every`
//! seconds one fault, in turn, lasts `--fault-for` seconds: redis-server
//! killed and restarted empty, frozen (SIGSTOP, then SIGCONT), the proxy
//! cut (a partition of `strict` only), lossy (2% of chunks kill their
//! connection, with 250 ms stalls).
//!
//! It fails (exit status 1) when:
//! - a read of `memory` or `strict` returns a version older than one
//!   acknowledged before the read began (a stale or resurrected value);
//! - after the run, Redis lacks a version `strict` acknowledged since the
//!   last restart (a lost acknowledged write: a restart empties Redis by
//!   design, so writes acknowledged before it do not count);
//! - `available` returned an error;
//! - live heap bytes grew without bound: the highest reading of the last
//!   quarter of the run is over 1.25 x (+8 MiB) the highest of the second
//!   quarter (the first quarter is warm-up).
//!
//! RSS and live heap are sampled every 5 s and printed with the counts
//! every 30 s; a summary (and JSON with `--json`) at the end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cachex::store::hybrid::{HybridStats, HybridStore};
use cachex::store::{RedisStore, Store};
use cachex::{Cache, Ttl};
use cachex_testkit::{FaultProxy, RedisServer};
use clap::Args;
use serde_json::json;

use crate::alloc;
use crate::report::{emit, json_wanted, thousands, Table};

/// Options of the soak.
#[derive(Debug, Args)]
pub struct SoakArgs {
    /// How long to run, in minutes (fractions allowed: 0.5 is 30 s).
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Seconds between the starts of two faults.
    #[arg(long, default_value_t = 15)]
    pub fault_every: u64,
    /// Seconds each fault lasts.
    #[arg(long, default_value_t = 2)]
    pub fault_for: u64,
    /// Keys per cache.
    #[arg(long, default_value_t = 20_000)]
    pub keys: usize,
    /// Tasks per cache: half write, half read.
    #[arg(long, default_value_t = 8)]
    pub tasks: usize,
    /// One JSON object instead of the tables.
    #[arg(long)]
    pub json: bool,
}

const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const REPORT_EVERY: Duration = Duration::from_secs(30);
/// Pause between two calls of one task: a steady load, not a benchmark.
const PACE: Duration = Duration::from_micros(500);
const TTL: Duration = Duration::from_secs(600);
const MIB: f64 = 1024.0 * 1024.0;

pub fn run(args: &SoakArgs) -> Result<(), String> {
    if args.tasks < 2 || args.keys < args.tasks {
        return Err("--tasks must be at least 2, and --keys at least --tasks".into());
    }
    alloc::enable();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(soak(args))
}

/// Per key: versions attempted and acknowledged, and the Redis epoch
/// (restarts so far) of each acknowledgement.
struct Ledger {
    attempted: Vec<AtomicU64>,
    acked: Vec<AtomicU64>,
    acked_epoch: Vec<AtomicU64>,
}

impl Ledger {
    fn new(keys: usize) -> Ledger {
        let zeros = || (0..keys).map(|_| AtomicU64::new(0)).collect();
        Ledger {
            attempted: zeros(),
            acked: zeros(),
            acked_epoch: zeros(),
        }
    }
}

/// One cache's counts.
#[derive(Default)]
struct Counts {
    calls: AtomicU64,
    errors: AtomicU64,
    loads: AtomicU64,
    stale_reads: AtomicU64,
}

/// One cache under load.
struct Subject {
    name: &'static str,
    cache: Cache<u64>,
    hybrid: Option<HybridStore<u64>>,
    ledger: Ledger,
    counts: Counts,
    /// Whether a stale read fails the soak (not for `available`, whose
    /// writes made while Redis is frozen go to L1 only and are re-read
    /// from Redis afterwards, as documented).
    stale_fails: bool,
}

/// What every task and the fault thread share.
struct Shared {
    stop: AtomicBool,
    /// Redis restarts so far.
    epoch: AtomicU64,
    faults: Mutex<Vec<(f64, &'static str)>>,
}

async fn hybrid(
    url: &str,
    prefix: &str,
    strict: bool,
    keys: usize,
) -> Result<HybridStore<u64>, String> {
    let l2 = RedisStore::builder()
        .url(url)
        .prefix(prefix)
        .timeout(Duration::from_millis(300))
        .build()
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    HybridStore::builder(l2)
        .l1_capacity(keys as u64 / 2)
        .l1_ttl(Duration::from_secs(60))
        .l2_timeout(Duration::from_millis(200))
        .strict(strict)
        .build()
        .await
        .map_err(|e| e.to_string())
}

fn cache_on<S: Store<u64> + 'static>(store: S) -> Cache<u64> {
    Cache::builder().store(store).default_ttl(TTL).build()
}

async fn soak(args: &SoakArgs) -> Result<(), String> {
    let mut server = RedisServer::try_start()?;
    let proxy = FaultProxy::start(&server.addr());
    let strict = hybrid(&proxy.url(), "soak-strict", true, args.keys).await?;
    let available = hybrid(&server.url(), "soak-avail", false, args.keys).await?;
    let memory: Cache<u64> = Cache::builder()
        .capacity(args.keys as u64 / 4)
        .default_ttl(TTL)
        .build();
    let subjects: Vec<Arc<Subject>> = [
        ("memory", memory, None, true),
        ("strict", cache_on(strict.clone()), Some(strict), true),
        (
            "available",
            cache_on(available.clone()),
            Some(available),
            false,
        ),
    ]
    .into_iter()
    .map(|(name, cache, hybrid, stale_fails)| {
        Arc::new(Subject {
            name,
            cache,
            hybrid,
            ledger: Ledger::new(args.keys),
            counts: Counts::default(),
            stale_fails,
        })
    })
    .collect();
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        epoch: AtomicU64::new(0),
        faults: Mutex::new(Vec::new()),
    });

    let mut tasks = Vec::new();
    for subject in &subjects {
        for task in 0..args.tasks {
            let (subject, shared) = (Arc::clone(subject), Arc::clone(&shared));
            let writers = args.tasks / 2;
            tasks.push(tokio::spawn(async move {
                if task < writers {
                    write_loop(&subject, &shared, task, writers).await;
                } else {
                    read_loop(subject, &shared, task as u64).await;
                }
            }));
        }
    }

    let started = Instant::now();
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let faults = {
        let shared = Arc::clone(&shared);
        let (every, lasting) = (
            Duration::from_secs(args.fault_every),
            Duration::from_secs(args.fault_for),
        );
        std::thread::spawn(move || {
            inject_faults(&mut server, &proxy, &shared, started, every, lasting);
            (server, proxy)
        })
    };

    let mut samples: Vec<Sample> = Vec::new();
    let mut next_report = REPORT_EVERY;
    if !json_wanted() {
        println!(
            "soak: {:.1} min, {} keys and {} tasks per cache, a fault every {} s for {} s",
            args.minutes, args.keys, args.tasks, args.fault_every, args.fault_for
        );
    }
    while started.elapsed() < total {
        tokio::time::sleep(SAMPLE_EVERY.min(total.saturating_sub(started.elapsed()))).await;
        samples.push(Sample::now(started));
        if started.elapsed() >= next_report && !json_wanted() {
            next_report += REPORT_EVERY;
            print_progress(samples.last().expect("a sample"), &subjects);
        }
    }
    shared.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .map_err(|_| "a load task hung".to_string())?
            .map_err(|e| format!("a load task panicked: {e}"))?;
    }
    let (server, proxy) = faults
        .join()
        .map_err(|_| "the fault thread panicked".to_string())?;

    // Faults over: what `strict` acknowledged since the last restart must
    // be in Redis.
    let lost = lost_writes(&subjects[1], shared.epoch.load(Ordering::SeqCst)).await;
    drop((proxy, server));
    let memory_check = memory_growth(&samples);
    report(args, &subjects, &shared, &samples, lost, &memory_check);

    let mut failures = Vec::new();
    for subject in &subjects {
        let stale = subject.counts.stale_reads.load(Ordering::Relaxed);
        if subject.stale_fails && stale > 0 {
            failures.push(format!("{}: {stale} stale reads", subject.name));
        }
    }
    let available_errors = subjects[2].counts.errors.load(Ordering::Relaxed);
    if available_errors > 0 {
        failures.push(format!(
            "available: {available_errors} errors reached callers"
        ));
    }
    if lost > 0 {
        failures.push(format!("strict: {lost} acknowledged writes lost"));
    }
    if let Err(e) = memory_check {
        failures.push(e);
    }
    if failures.is_empty() {
        Ok(())
    } else {
        eprintln!("soak FAILED: {}", failures.join("; "));
        std::process::exit(1);
    }
}

/// Writes new versions of this task's keys (`task`, `task + writers`, ...).
async fn write_loop(subject: &Subject, shared: &Shared, task: usize, writers: usize) {
    let keys = subject.ledger.attempted.len();
    let mut key = task;
    while !shared.stop.load(Ordering::Relaxed) {
        let version = subject.ledger.attempted[key].fetch_add(1, Ordering::SeqCst) + 1;
        // The epoch before the write: a restart during it makes the
        // acknowledgement count for the old server (not checked).
        let epoch = shared.epoch.load(Ordering::SeqCst);
        let result = subject
            .cache
            .set(&key.to_string(), version, Ttl::Default)
            .await;
        subject.counts.calls.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => {
                subject.ledger.acked[key].fetch_max(version, Ordering::SeqCst);
                subject.ledger.acked_epoch[key].store(epoch, Ordering::SeqCst);
            }
            Err(_) => {
                subject.counts.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        key += writers;
        if key >= keys {
            key = task;
        }
        tokio::time::sleep(PACE).await;
    }
}

/// Reads random keys with `get_or_load`; the loader reads the database.
async fn read_loop(subject: Arc<Subject>, shared: &Shared, seed: u64) {
    let keys = subject.ledger.attempted.len() as u64;
    let mut random = 0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0x2545_F491_4F6C_DD1D);
    while !shared.stop.load(Ordering::Relaxed) {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        let key = (random % keys) as usize;
        let floor = subject.ledger.acked[key].load(Ordering::SeqCst);
        let loading = Arc::clone(&subject);
        let result = subject
            .cache
            .get_or_load(&key.to_string(), move || async move {
                loading.counts.loads.fetch_add(1, Ordering::Relaxed);
                Ok::<_, std::io::Error>(loading.ledger.attempted[key].load(Ordering::SeqCst))
            })
            .await;
        subject.counts.calls.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(found) if found < floor => {
                subject.counts.stale_reads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(_) => {
                subject.counts.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(PACE).await;
    }
}

/// Takes Redis away every `every`, for `lasting`, in turn: killed and
/// restarted empty, frozen, partitioned (the proxy), lossy.
fn inject_faults(
    server: &mut RedisServer,
    proxy: &FaultProxy,
    shared: &Shared,
    started: Instant,
    every: Duration,
    lasting: Duration,
) {
    let wait = |until: Instant| {
        while Instant::now() < until && !shared.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut next = started + every;
    let mut turn = 0usize;
    loop {
        wait(next);
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let name = ["kill and restart", "pause", "partition", "loss and stalls"][turn % 4];
        shared
            .faults
            .lock()
            .expect("faults")
            .push((started.elapsed().as_secs_f64(), name));
        let end = Instant::now() + lasting;
        match turn % 4 {
            0 => {
                server.kill();
                // Acknowledgements from now on are of the new server.
                shared.epoch.fetch_add(1, Ordering::SeqCst);
                wait(end);
                server.restart();
            }
            1 => {
                server.pause();
                wait(end);
                server.resume();
            }
            2 => {
                proxy.cut();
                wait(end);
                proxy.restore();
            }
            _ => {
                proxy.set_loss(0.02);
                while Instant::now() < end && !shared.stop.load(Ordering::Relaxed) {
                    proxy.stall(Duration::from_millis(250));
                    std::thread::sleep(Duration::from_millis(500));
                }
                proxy.set_loss(0.0);
            }
        }
        turn += 1;
        next += every;
    }
}

/// Keys whose version acknowledged since the last restart is not in
/// Redis (read straight from L2, after the faults).
async fn lost_writes(subject: &Subject, epoch: u64) -> u64 {
    let Some(store) = &subject.hybrid else {
        return 0;
    };
    let mut lost = 0;
    for key in 0..subject.ledger.acked.len() {
        let acked = subject.ledger.acked[key].load(Ordering::SeqCst);
        if acked == 0 || subject.ledger.acked_epoch[key].load(Ordering::SeqCst) != epoch {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let found = loop {
            match store.l2().get(&key.to_string()).await {
                Ok(stored) => break stored.and_then(|s| s.envelope.into_value()),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(_) => break None,
            }
        };
        if found.unwrap_or(0) < acked {
            lost += 1;
        }
    }
    lost
}

/// Memory at one moment.
#[derive(Clone, Copy)]
struct Sample {
    at_s: f64,
    rss_bytes: u64,
    heap_bytes: i64,
}

impl Sample {
    fn now(started: Instant) -> Sample {
        Sample {
            at_s: started.elapsed().as_secs_f64(),
            rss_bytes: rss_bytes(),
            heap_bytes: alloc::live_bytes() as i64,
        }
    }
}

/// Resident set size, from `/proc/self/statm` (0 where there is none).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Fails if the live heap of the last quarter of the run tops the second
/// quarter's by more than 25% + 8 MiB.
fn memory_growth(samples: &[Sample]) -> Result<(), String> {
    let n = samples.len();
    if n < 8 {
        return Ok(()); // too short to tell growth from warm-up
    }
    let max = |range: &[Sample]| range.iter().map(|s| s.heap_bytes).max().unwrap_or(0);
    let (second, last) = (max(&samples[n / 4..n / 2]), max(&samples[n * 3 / 4..]));
    let allowed = second as f64 * 1.25 + 8.0 * MIB;
    if last as f64 > allowed {
        Err(format!(
            "live heap grew from {:.1} MiB (second quarter) to {:.1} MiB (last quarter)",
            second as f64 / MIB,
            last as f64 / MIB
        ))
    } else {
        Ok(())
    }
}

fn print_progress(sample: &Sample, subjects: &[Arc<Subject>]) {
    let counts: Vec<String> = subjects
        .iter()
        .map(|s| {
            format!(
                "{} {} calls/{} err/{} loads",
                s.name,
                thousands(s.counts.calls.load(Ordering::Relaxed)),
                thousands(s.counts.errors.load(Ordering::Relaxed)),
                thousands(s.counts.loads.load(Ordering::Relaxed)),
            )
        })
        .collect();
    println!(
        "{:>5.0} s  rss {:.1} MiB  heap {:.1} MiB  {}",
        sample.at_s,
        sample.rss_bytes as f64 / MIB,
        sample.heap_bytes as f64 / MIB,
        counts.join("  ")
    );
}

fn report(
    args: &SoakArgs,
    subjects: &[Arc<Subject>],
    shared: &Shared,
    samples: &[Sample],
    lost: u64,
    memory_check: &Result<(), String>,
) {
    let faults = shared.faults.lock().expect("faults").clone();
    let hybrid_stats = |s: &Subject| s.hybrid.as_ref().map(HybridStore::stats);
    let first = samples.first().copied();
    let last = samples.last().copied();
    let peak_rss = samples.iter().map(|s| s.rss_bytes).max().unwrap_or(0);
    if json_wanted() {
        let caches: Vec<_> = subjects
            .iter()
            .map(|s| {
                let stats = hybrid_stats(s);
                json!({
                    "cache": s.name,
                    "calls": s.counts.calls.load(Ordering::Relaxed),
                    "errors": s.counts.errors.load(Ordering::Relaxed),
                    "loads": s.counts.loads.load(Ordering::Relaxed),
                    "stale_reads": s.counts.stale_reads.load(Ordering::Relaxed),
                    "breaker_opened": stats.map(|h| h.breaker_opened),
                    "breaker_closed": stats.map(|h| h.breaker_closed),
                    "l1_only_writes": stats.map(|h| h.l1_only_writes),
                    "subscription_losses": stats.map(|h| h.subscription_losses),
                })
            })
            .collect();
        emit(&json!({
            "workload": "soak",
            "minutes": args.minutes,
            "faults": faults.len(),
            "caches": caches,
            "lost_acknowledged_writes": lost,
            "rss_mib": samples.iter().map(|s| crate::report::round(s.rss_bytes as f64 / MIB, 1)).collect::<Vec<_>>(),
            "heap_mib": samples.iter().map(|s| crate::report::round(s.heap_bytes as f64 / MIB, 1)).collect::<Vec<_>>(),
            "memory_check": memory_check.as_ref().map_or_else(|e| e.clone(), |()| "ok".into()),
        }));
        return;
    }
    println!();
    let mut table = Table::new([
        "cache",
        "calls",
        "errors",
        "loads",
        "stale reads",
        "breaker opened/closed",
        "L1-only writes",
        "subscription losses",
    ]);
    for s in subjects {
        let stats: Option<HybridStats> = hybrid_stats(s);
        table.row(vec![
            s.name.to_string(),
            thousands(s.counts.calls.load(Ordering::Relaxed)),
            thousands(s.counts.errors.load(Ordering::Relaxed)),
            thousands(s.counts.loads.load(Ordering::Relaxed)),
            thousands(s.counts.stale_reads.load(Ordering::Relaxed)),
            stats.map_or("-".into(), |h| {
                format!("{}/{}", h.breaker_opened, h.breaker_closed)
            }),
            stats.map_or("-".into(), |h| thousands(h.l1_only_writes)),
            stats.map_or("-".into(), |h| thousands(h.subscription_losses)),
        ]);
    }
    print!("{}", table.render());
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    for (_, name) in &faults {
        match kinds.iter_mut().find(|(k, _)| k == name) {
            Some((_, n)) => *n += 1,
            None => kinds.push((name, 1)),
        }
    }
    println!(
        "faults: {} ({})",
        faults.len(),
        kinds
            .iter()
            .map(|(k, n)| format!("{k} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("acknowledged writes of `strict` lost (since the last restart): {lost}");
    if let (Some(first), Some(last)) = (first, last) {
        println!(
            "memory: rss {:.1} -> {:.1} MiB (peak {:.1}), live heap {:.1} -> {:.1} MiB: {}",
            first.rss_bytes as f64 / MIB,
            last.rss_bytes as f64 / MIB,
            peak_rss as f64 / MIB,
            first.heap_bytes as f64 / MIB,
            last.heap_bytes as f64 / MIB,
            memory_check
                .as_ref()
                .map_or_else(|e| e.clone(), |()| "bounded".into()),
        );
    }
}
