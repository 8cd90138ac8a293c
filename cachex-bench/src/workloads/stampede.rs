//! Stampede: N processes × T tasks ask for the same cold keys at once,
//! each through its own `Cache` on one `redis-server`. How many loader
//! calls, how long each caller waits for its value, and how many Redis
//! commands each process sends.
//!
//! Contenders:
//!
//! - `cachex`: `Cache` over `RedisStore` with
//!   `distributed_singleflight` (in-process singleflight, then the key's
//!   Redis lock; waiters woken by the release message).
//! - `polling`: the pattern of gocommon/cache and many hand-written
//!   caches, written here with the raw `redis` client: per process one
//!   poller per key (an in-process singleflight, as cachex has), which
//!   loops `GET` key → `SET lock NX PX` → on success load, `SET` the
//!   value, `DEL` the lock; on failure sleep 50 ms and start over.
//!
//! Every process is this binary again (`stampede-peer`), connected to the
//! server through its own counting proxy (`cachex-testkit`'s
//! `FaultProxy`), which counts the commands the process sends, scripts
//! and pipelines included, one each. The parent waits until every peer is
//! connected (and cachex's lock subscriber is up), then says `go` to all;
//! each caller's time to value runs from its process's `go`. Each
//! measurement uses keys no one has asked for before. Runs of the two
//! contenders are interleaved; latencies are pooled over runs.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cachex::lock::DistributedLock;
use cachex::store::RedisStore;
use cachex::Cache;
use cachex_testkit::{FaultProxy, RedisServer};
use clap::Args;
use serde_json::json;
use tokio::sync::OnceCell;

use crate::report::{emit, json_wanted, median, round, Table};

/// The gocommon/cache pattern's retry sleep.
const POLL: Duration = Duration::from_millis(50);
/// The lock's lease, for both contenders: longer than any load here.
const LEASE: Duration = Duration::from_secs(5);
const CONTENDERS: [&str; 2] = ["cachex", "polling"];

/// Options of the `stampede` command.
#[derive(Debug, Args)]
pub struct StampedeArgs {
    /// Process counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub processes: Vec<usize>,
    /// Tasks per process, all asking at once.
    #[arg(long, default_value_t = 100)]
    pub tasks: usize,
    /// Cold keys the tasks share (task i asks for key i mod keys).
    #[arg(long, default_value_t = 1)]
    pub keys: usize,
    /// How long one loader call takes, in milliseconds. The default is not
    /// a multiple of the 50 ms poll, so the poller pays its average delay
    /// (half a poll) rather than a lucky or unlucky phase.
    #[arg(long, default_value_t = 125)]
    pub load_ms: u64,
    /// Repetitions of every measurement (contenders interleaved).
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Options of the hidden `stampede-peer` command.
#[derive(Debug, Args)]
pub struct StampedePeerArgs {
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub contender: String,
    #[arg(long)]
    pub prefix: String,
    #[arg(long)]
    pub tasks: usize,
    #[arg(long)]
    pub keys: usize,
    #[arg(long)]
    pub load_ms: u64,
}

/// What one process reports of one measurement.
struct PeerResult {
    loader_calls: u64,
    /// Each caller's time to value, in microseconds.
    latencies_us: Vec<u64>,
    commands: u64,
}

/// One (contender, processes) cell, over all runs.
#[derive(Default)]
struct Cell {
    latencies_us: Vec<u64>,
    /// Callers in processes that made loader calls.
    loading_latencies_us: Vec<u64>,
    /// Callers in processes that made none.
    waiting_latencies_us: Vec<u64>,
    loader_calls: Vec<u64>,
    commands_per_process: Vec<f64>,
    commands_per_waiting_process: Vec<f64>,
}

pub fn run(args: &StampedeArgs) -> Result<(), String> {
    let server = RedisServer::try_start()?;
    let version = RedisServer::version().unwrap_or_default();
    let keys = args.keys.max(1);
    let mut cells: HashMap<(&str, usize), Cell> = HashMap::new();
    let mut measurement = 0;
    for run in 0..args.runs.max(1) {
        for &processes in &args.processes {
            for contender in CONTENDERS {
                measurement += 1;
                let prefix = format!("st{measurement}");
                let results = measure(&server, contender, processes, &prefix, args)?;
                let cell = cells.entry((contender, processes)).or_default();
                let mut commands = Vec::new();
                let mut waiting = Vec::new();
                for result in &results {
                    cell.latencies_us.extend(&result.latencies_us);
                    commands.push(result.commands as f64 / keys as f64);
                    if result.loader_calls == 0 {
                        cell.waiting_latencies_us.extend(&result.latencies_us);
                        waiting.push(result.commands as f64 / keys as f64);
                    } else {
                        cell.loading_latencies_us.extend(&result.latencies_us);
                    }
                }
                cell.loader_calls
                    .push(results.iter().map(|r| r.loader_calls).sum());
                cell.commands_per_process.push(mean(&commands));
                if !waiting.is_empty() {
                    cell.commands_per_waiting_process.push(mean(&waiting));
                }
                if !args.json {
                    eprint!(
                        "\rrun {}/{}: {contender} x{processes}   ",
                        run + 1,
                        args.runs
                    );
                }
            }
        }
    }
    if !args.json {
        eprintln!();
    }
    report(args, &version, keys, &mut cells);
    Ok(())
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn quantile_ms(sorted_us: &[u64], q: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let idx = ((sorted_us.len() - 1) as f64 * q).round() as usize;
    Some(round(sorted_us[idx] as f64 / 1_000.0, 2))
}

fn report(
    args: &StampedeArgs,
    version: &str,
    keys: usize,
    cells: &mut HashMap<(&str, usize), Cell>,
) {
    let mut table = Table::new([
        "contender",
        "processes",
        "loader calls",
        "p50 ms",
        "p99 ms",
        "loading p50 ms",
        "waiting p50 ms",
        "commands/process/key",
        "commands/waiting process/key",
    ]);
    let show = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
    for &processes in &args.processes {
        for contender in CONTENDERS {
            let Some(cell) = cells.get_mut(&(contender, processes)) else {
                continue;
            };
            cell.latencies_us.sort_unstable();
            cell.loading_latencies_us.sort_unstable();
            cell.waiting_latencies_us.sort_unstable();
            let loading_p50 = quantile_ms(&cell.loading_latencies_us, 0.50);
            let p50 = quantile_ms(&cell.latencies_us, 0.50);
            let p99 = quantile_ms(&cell.latencies_us, 0.99);
            let waiting_p50 = quantile_ms(&cell.waiting_latencies_us, 0.50);
            let waiting_p99 = quantile_ms(&cell.waiting_latencies_us, 0.99);
            let loader_calls = cell.loader_calls.iter().copied().max().unwrap_or(0);
            let commands = round(median(&cell.commands_per_process), 2);
            let waiting_commands = (!cell.commands_per_waiting_process.is_empty())
                .then(|| round(median(&cell.commands_per_waiting_process), 2));
            if json_wanted() {
                emit(&json!({
                    "workload": "stampede",
                    "contender": contender,
                    "processes": processes,
                    "tasks": args.tasks,
                    "keys": keys,
                    "load_ms": args.load_ms,
                    "runs": args.runs,
                    "loader_calls": loader_calls,
                    "loader_calls_per_run": cell.loader_calls,
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "loading_p50_ms": loading_p50,
                    "waiting_p50_ms": waiting_p50,
                    "waiting_p99_ms": waiting_p99,
                    "redis_commands_per_process": commands,
                    "redis_commands_per_waiting_process": waiting_commands,
                    "redis_version": version,
                }));
            }
            table.row(vec![
                contender.to_string(),
                processes.to_string(),
                loader_calls.to_string(),
                show(p50),
                show(p99),
                show(loading_p50),
                show(waiting_p50),
                format!("{commands:.2}"),
                show(waiting_commands),
            ]);
        }
    }
    if !args.json {
        println!(
            "stampede: {} tasks per process on {keys} cold key(s), {} ms loads, {} runs, \
             redis {version}",
            args.tasks, args.load_ms, args.runs
        );
        print!("{}", table.render());
        println!(
            "loader calls: the most in one run (the target is one per key); times: from \
             each process's start to each caller's value, pooled over runs (loading: \
             callers in processes that made loader calls; waiting: in those that made \
             none); commands: median over runs of the mean per process, per key"
        );
    }
}

/// One measurement: `processes` peers of `contender`, each through its
/// own counting proxy, started together.
fn measure(
    server: &RedisServer,
    contender: &str,
    processes: usize,
    prefix: &str,
    args: &StampedeArgs,
) -> Result<Vec<PeerResult>, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let proxies: Vec<FaultProxy> = (0..processes)
        .map(|_| FaultProxy::start(&server.addr()))
        .collect();
    let mut peers = Vec::new();
    for proxy in &proxies {
        let mut child = Command::new(&exe)
            .args(["stampede-peer", "--url", &proxy.url()])
            .args(["--contender", contender, "--prefix", prefix])
            .args(["--tasks", &args.tasks.to_string()])
            .args(["--keys", &args.keys.max(1).to_string()])
            .args(["--load-ms", &args.load_ms.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start a peer: {e}"))?;
        let stdin = child.stdin.take().ok_or("no peer stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no peer stdout")?).lines();
        peers.push((child, stdin, stdout));
    }
    for (_, _, from) in &mut peers {
        match from.next() {
            Some(Ok(line)) if line == "ready" => {}
            other => return Err(format!("a peer did not start: {other:?}")),
        }
    }
    let before: Vec<u64> = proxies.iter().map(FaultProxy::commands).collect();
    for (_, to, _) in &mut peers {
        writeln!(to, "go").map_err(|e| e.to_string())?;
    }
    let mut results = Vec::new();
    for (_, _, from) in &mut peers {
        let line = from
            .next()
            .and_then(Result::ok)
            .ok_or("a peer died before reporting")?;
        let mut fields = line.split_whitespace();
        if fields.next() != Some("result") {
            return Err(format!("unexpected peer line: {line}"));
        }
        let numbers: Vec<u64> = fields.filter_map(|x| x.parse().ok()).collect();
        let (&loader_calls, latencies) = numbers.split_first().ok_or("empty result")?;
        results.push(PeerResult {
            loader_calls,
            latencies_us: latencies.to_vec(),
            commands: 0,
        });
    }
    // Releases finishing in the background land within a few ms.
    std::thread::sleep(Duration::from_millis(20));
    for (result, (proxy, before)) in results.iter_mut().zip(proxies.iter().zip(before)) {
        result.commands = proxy.commands() - before;
    }
    for (mut child, mut to, _) in peers {
        let _ = writeln!(to, "exit");
        drop(to);
        let _ = child.wait();
    }
    Ok(results)
}

/// The `stampede-peer` command: one process of a measurement.
pub fn peer(args: &StampedePeerArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(peer_main(args))
}

async fn peer_main(args: &StampedePeerArgs) -> Result<(), String> {
    let load = Duration::from_millis(args.load_ms);
    let loader_calls = Arc::new(AtomicU64::new(0));
    let get: Getter = match args.contender.as_str() {
        "cachex" => cachex_getter(args, load, Arc::clone(&loader_calls)).await?,
        "polling" => polling_getter(args, load, Arc::clone(&loader_calls)).await?,
        other => return Err(format!("unknown contender {other}")),
    };
    let mut lines = BufReader::new(std::io::stdin()).lines();
    println!("ready");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    match lines.next() {
        Some(Ok(line)) if line == "go" => {}
        other => return Err(format!("expected go, got {other:?}")),
    }
    let began = Instant::now();
    let callers: Vec<_> = (0..args.tasks)
        .map(|task| {
            let get = Arc::clone(&get);
            let key = format!("k{}", task % args.keys.max(1));
            tokio::spawn(async move {
                get(key).await?;
                Ok::<_, String>(began.elapsed().as_micros() as u64)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(callers.len());
    for caller in callers {
        latencies.push(caller.await.map_err(|e| e.to_string())??);
    }
    let mut line = format!("result {}", loader_calls.load(Ordering::SeqCst));
    for us in latencies {
        line.push(' ');
        line.push_str(&us.to_string());
    }
    println!("{line}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    // Stay until told to go, so that the lock's background work (a
    // release after a read found the value) is counted, then exit.
    let _ = lines.next();
    Ok(())
}

type Getter = Arc<
    dyn Fn(
            String,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, String>> + Send>>
        + Send
        + Sync,
>;

async fn cachex_getter(
    args: &StampedePeerArgs,
    load: Duration,
    calls: Arc<AtomicU64>,
) -> Result<Getter, String> {
    let store: RedisStore<u64> = RedisStore::builder()
        .url(&args.url)
        .prefix(&args.prefix)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let lock = DistributedLock::new(&store).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lock.is_subscribed() {
        if Instant::now() > deadline {
            return Err("the lock's subscriber did not connect".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let cache: Cache<u64> = Cache::builder()
        .store(store)
        .default_ttl(Duration::from_secs(600))
        .distributed_singleflight(lock, LEASE)
        .build();
    Ok(Arc::new(move |key: String| {
        let (cache, calls) = (cache.clone(), Arc::clone(&calls));
        Box::pin(async move {
            cache
                .get_or_load(&key, move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(load).await;
                    Ok::<_, std::io::Error>(7)
                })
                .await
                .map_err(|e| e.to_string())
        })
    }))
}

async fn polling_getter(
    args: &StampedePeerArgs,
    load: Duration,
    calls: Arc<AtomicU64>,
) -> Result<Getter, String> {
    let client = redis::Client::open(args.url.as_str()).map_err(|e| e.to_string())?;
    let conn = redis::aio::ConnectionManager::new(client)
        .await
        .map_err(|e| e.to_string())?;
    let prefix = args.prefix.clone();
    // One poller per key in this process: the in-process singleflight.
    let flights: Arc<Mutex<HashMap<String, Arc<OnceCell<u64>>>>> = Arc::default();
    Ok(Arc::new(move |key: String| {
        let (mut conn, calls, prefix) = (conn.clone(), Arc::clone(&calls), prefix.clone());
        let flight = Arc::clone(
            flights
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key.clone())
                .or_default(),
        );
        Box::pin(async move {
            let value = flight
                .get_or_try_init(|| async move {
                    poll(&mut conn, &format!("{prefix}:{key}"), load, &calls).await
                })
                .await?;
            Ok(*value)
        })
    }))
}

/// gocommon/cache's load: read; else lock and load; else sleep and retry.
async fn poll(
    conn: &mut redis::aio::ConnectionManager,
    key: &str,
    load: Duration,
    calls: &AtomicU64,
) -> Result<u64, String> {
    let lock = format!("{key}:lock");
    let lease_ms = LEASE.as_millis() as u64;
    loop {
        let found: Option<u64> = redis::cmd("GET")
            .arg(key)
            .query_async(conn)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(value) = found {
            return Ok(value);
        }
        let locked: Option<String> = redis::cmd("SET")
            .arg(&lock)
            .arg("token")
            .arg("NX")
            .arg("PX")
            .arg(lease_ms)
            .query_async(conn)
            .await
            .map_err(|e| e.to_string())?;
        if locked.is_some() {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(load).await;
            let value = 7u64;
            let _: () = redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("EX")
                .arg(600)
                .query_async(conn)
                .await
                .map_err(|e| e.to_string())?;
            let _: i64 = redis::cmd("DEL")
                .arg(&lock)
                .query_async(conn)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(value);
        }
        tokio::time::sleep(POLL).await;
    }
}
