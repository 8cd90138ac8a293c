//! What the two Redis-backed commands (`redis`, `hybrid`) share: their
//! options, the server they run against, and the concurrent get loop.

use std::future::Future;
use std::time::{Duration, Instant};

use cachex_testkit::RedisServer;
use clap::Args;

/// Options common to the commands that measure gets against Redis.
#[derive(Debug, Args)]
pub struct RedisBenchArgs {
    /// Redis to measure against; default: start a `redis-server` on a free
    /// loopback port.
    #[arg(long)]
    pub url: Option<String>,
    /// Bytes of each value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Operations per contender per run at concurrency 1.
    #[arg(long, default_value_t = 20_000)]
    pub ops: usize,
    /// Tasks of the throughput measurement.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Operations per task per run of the throughput measurement.
    #[arg(long, default_value_t = 1_000)]
    pub ops_per_task: usize,
    /// Runs per measurement, alternating contenders.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Print one JSON object per result line instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// One measurement: every call's latency, and what the whole cost.
#[derive(Debug)]
pub struct Run {
    pub latencies_ns: Vec<u64>,
    pub ops_per_s: f64,
    /// CPU time this process (client side only: Redis runs in its own)
    /// spent per call, in microseconds. On a machine where client and
    /// server share the cores, it is what throughput depends on, and it is
    /// far steadier than throughput from run to run.
    pub cpu_us_per_op: f64,
}

/// CPU time all threads of this process have run so far, summed from
/// Linux's per-thread `schedstat` (nanosecond precision; `getrusage` and
/// `/proc/self/stat` count in clock ticks, too coarse for sub-second runs).
/// Zero where `/proc` is missing.
fn process_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

impl RedisBenchArgs {
    /// Starts tokio and, unless `--url` was given, a `redis-server` on a free
    /// loopback port (killed when `body` is done), then runs
    /// `body(url, redis version)`.
    pub fn run<F, Fut>(&self, body: F) -> Result<(), String>
    where
        F: FnOnce(String, String) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        if self.ops == 0 || self.runs == 0 || self.concurrency == 0 || self.ops_per_task == 0 {
            return Err("--ops, --runs, --concurrency and --ops-per-task must be positive".into());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start tokio: {e}"))?;
        // Kept alive (and killed on drop) for the whole run.
        let (url, _server) = match &self.url {
            Some(url) => (url.clone(), None),
            None => {
                let server = RedisServer::try_start()?;
                (server.url(), Some(server))
            }
        };
        let version = RedisServer::version().unwrap_or_else(|_| "unknown".into());
        eprintln!("redis {version} at {url}");
        runtime.block_on(body(url, version))
    }
}

/// `concurrency` tasks each making `ops` calls of `get(task, n)`, which
/// answers its own latency in nanoseconds.
pub async fn run_tasks<G, Fut>(get: G, concurrency: usize, ops: usize) -> Run
where
    G: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = u64> + Send,
{
    let start = Instant::now();
    let cpu_start = process_cpu();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let get = get.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(ops);
                for n in 0..ops {
                    latencies.push(get(t, n).await);
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(concurrency * ops);
    for task in tasks {
        all.extend(
            task.await
                .unwrap_or_else(|e| panic!("bench task failed: {e}")),
        );
    }
    let elapsed = start.elapsed().max(Duration::from_nanos(1));
    let cpu = process_cpu().saturating_sub(cpu_start);
    let calls = all.len().max(1) as f64;
    Run {
        ops_per_s: all.len() as f64 / elapsed.as_secs_f64(),
        cpu_us_per_op: cpu.as_secs_f64() * 1e6 / calls,
        latencies_ns: all,
    }
}
