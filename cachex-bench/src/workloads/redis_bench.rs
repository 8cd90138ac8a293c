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
/// answers its own latency in nanoseconds; answers every latency and the
/// operations per second of the whole.
pub async fn run_tasks<G, Fut>(get: G, concurrency: usize, ops: usize) -> (Vec<u64>, f64)
where
    G: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = u64> + Send,
{
    let start = Instant::now();
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
    let rate = all.len() as f64 / elapsed.as_secs_f64();
    (all, rate)
}
