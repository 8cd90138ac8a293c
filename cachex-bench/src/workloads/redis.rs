//! Redis workload: `get` of a 100-byte value through cachex against a raw
//! `redis` crate `GET` of the same bytes on one multiplexed connection.
//!
//! Contenders, all on one connection to one server:
//! - `raw`: `GET` on a `redis::aio::MultiplexedConnection`;
//! - `cachex`: `Cache<String>::get` over a `RedisStore` (what services call);
//! - `cachex-store`: `RedisStore::get` directly (the store alone, without
//!   the cache's key check and counters, and with the remaining TTL, which
//!   it reads from the value's header: one `GET`);
//! - `raw-manager`: `GET` through the `redis` crate's reconnecting
//!   `ConnectionManager`, which cachex uses: what reconnection costs.
//!
//! Latency is measured at concurrency 1 (one task, one call at a time);
//! throughput with 64 tasks calling at once. Runs alternate between the
//! contenders so that drift on a shared machine hits them alike; latency
//! percentiles pool every run's samples, throughput is the median run.

use std::sync::Arc;
use std::time::Instant;

use cachex::store::{Envelope, RedisStore, Store};
use cachex::Cache;
use serde_json::json;

use super::redis_bench::{run_tasks, Run};
use crate::report::{emit, json_wanted, median, percentile, ratio, round, thousands, Table};

/// Distinct keys read (every one a hit).
const KEYS: usize = 1_000;
const PREFIX: &str = "bench";

/// Options of the `redis` command: those every Redis benchmark takes.
pub use super::redis_bench::RedisBenchArgs as RedisArgs;

#[derive(Clone)]
enum Contender {
    Raw(redis::aio::MultiplexedConnection),
    /// Raw `GET` through the reconnecting `ConnectionManager` cachex uses:
    /// separates the manager's cost from cachex's own.
    RawManager(redis::aio::ConnectionManager),
    Cache(Cache<String>),
    Store(RedisStore<String>),
}

impl Contender {
    fn name(&self) -> &'static str {
        match self {
            Contender::Raw(_) => "raw",
            Contender::RawManager(_) => "raw-manager",
            Contender::Cache(_) => "cachex",
            Contender::Store(_) => "cachex-store",
        }
    }

    /// Reads key `i`, timed; answers the latency in nanoseconds. Errors
    /// and misses abort the benchmark, since they would make the figures
    /// meaningless.
    async fn get(&self, keys: &Keys, i: usize) -> u64 {
        let began = Instant::now();
        let found = match self {
            Contender::Raw(conn) => raw_get(&mut conn.clone(), &keys.raw[i]).await,
            Contender::RawManager(conn) => raw_get(&mut conn.clone(), &keys.raw[i]).await,
            Contender::Cache(cache) => cache
                .get(&keys.plain[i])
                .await
                .unwrap_or_else(|e| panic!("cachex get failed: {e}"))
                .map(|v| v.len()),
            Contender::Store(store) => store
                .get(&keys.plain[i])
                .await
                .unwrap_or_else(|e| panic!("store get failed: {e}"))
                .and_then(|s| s.envelope.into_value())
                .map(|v| v.len()),
        };
        let ns = began.elapsed().as_nanos() as u64;
        assert!(found.is_some(), "{}: key {i} missing", self.name());
        ns
    }
}

/// A plain `GET`, answering the value's length. The bytes are taken as
/// they are (no UTF-8 check, unlike cachex's `String`), as the target
/// defines the raw client: a little work cachex does that raw does not.
async fn raw_get(conn: &mut impl redis::aio::ConnectionLike, key: &str) -> Option<usize> {
    let value: Option<Vec<u8>> = redis::cmd("GET")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("raw GET failed: {e}"));
    value.map(|v| v.len())
}

struct Keys {
    /// What cachex is asked for (it adds its prefix).
    plain: Vec<String>,
    /// What the raw client asks for.
    raw: Vec<String>,
}

/// One measurement of one contender.
#[derive(Debug, Default)]
struct Sample {
    latencies_ns: Vec<u64>,
    ops_per_s: Vec<f64>,
    cpu_us_per_op: Vec<f64>,
}

/// Runs the `redis` command.
pub fn run(args: &RedisArgs) -> Result<(), String> {
    args.run(|url, version| async move { measure(args, &url, &version).await })
}

async fn measure(args: &RedisArgs, url: &str, version: &str) -> Result<(), String> {
    let keys = Arc::new(Keys {
        plain: (0..KEYS).map(|i| format!("key:{i}")).collect(),
        raw: (0..KEYS).map(|i| format!("raw:key:{i}")).collect(),
    });
    let value = "v".repeat(args.value_size);

    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let store: RedisStore<String> = RedisStore::builder()
        .url(url)
        .prefix(PREFIX)
        .build()
        .await
        .map_err(|e| format!("cannot connect cachex to {url}: {e}"))?;
    let cache: Cache<String> = Cache::builder().store(store.clone()).build();
    for i in 0..KEYS {
        let _: () = redis::cmd("SET")
            .arg(&keys.raw[i])
            .arg(value.as_bytes())
            .query_async(&mut raw)
            .await
            .map_err(|e| e.to_string())?;
        store
            .set(&keys.plain[i], Envelope::found(value.clone()), None)
            .await
            .map_err(|e| e.to_string())?;
    }
    let manager = client
        .get_connection_manager()
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    // Raw first: every ratio is taken against `summary[0]`.
    let contenders = [
        Contender::Raw(raw),
        Contender::RawManager(manager),
        Contender::Cache(cache),
        Contender::Store(store),
    ];

    let mut table = Table::new([
        "contender",
        "concurrency",
        "p50 us",
        "p99 us",
        "ops/s",
        "p50 / raw",
        "p99 / raw",
        "ops/s / raw",
        "client CPU us/op",
        "CPU / raw",
    ]);
    for concurrency in [1, args.concurrency] {
        let ops_per_task = if concurrency == 1 {
            args.ops
        } else {
            args.ops_per_task
        };
        let mut samples: Vec<Sample> = contenders.iter().map(|_| Sample::default()).collect();
        // Warm-up: connections, buffers, branch predictors.
        for c in &contenders {
            run_once(c, &keys, concurrency, ops_per_task / 10 + 1).await;
        }
        for run in 0..args.runs {
            // Rotate the order, so no contender always runs first.
            for k in 0..contenders.len() {
                let idx = (k + run) % contenders.len();
                let run = run_once(&contenders[idx], &keys, concurrency, ops_per_task).await;
                samples[idx].latencies_ns.extend(run.latencies_ns);
                samples[idx].ops_per_s.push(run.ops_per_s);
                samples[idx].cpu_us_per_op.push(run.cpu_us_per_op);
            }
        }
        let summary: Vec<(f64, f64, f64, f64)> = samples
            .iter_mut()
            .map(|s| {
                s.latencies_ns.sort_unstable();
                (
                    percentile(&s.latencies_ns, 0.50),
                    percentile(&s.latencies_ns, 0.99),
                    median(&s.ops_per_s),
                    median(&s.cpu_us_per_op),
                )
            })
            .collect();
        let raw = summary[0];
        for (c, &(p50, p99, ops, cpu)) in contenders.iter().zip(&summary) {
            if json_wanted() {
                emit(&json!({
                    "workload": "redis_get",
                    "contender": c.name(),
                    "concurrency": concurrency,
                    "value_bytes": args.value_size,
                    "p50_us": round(p50, 1),
                    "p99_us": round(p99, 1),
                    "ops_per_s": ops.round(),
                    "p50_ratio": round(p50 / raw.0, 3),
                    "p99_ratio": round(p99 / raw.1, 3),
                    "ops_ratio": round(ops / raw.2, 3),
                    "client_cpu_us_per_op": round(cpu, 2),
                    "client_cpu_ratio": round(cpu / raw.3, 3),
                    "redis_version": version,
                    "runs": args.runs,
                }));
            }
            table.row(vec![
                c.name().to_string(),
                concurrency.to_string(),
                format!("{p50:.1}"),
                format!("{p99:.1}"),
                thousands(ops as u64),
                ratio(p50, raw.0),
                ratio(p99, raw.1),
                ratio(ops, raw.2),
                format!("{cpu:.2}"),
                ratio(cpu, raw.3),
            ]);
        }
    }
    if !args.json {
        println!(
            "get of a {}-byte value, redis {version}; targets: p50 and p99 ≤ 1.15× raw, ops/s ≥ 0.85× raw at {} tasks\n",
            args.value_size, args.concurrency
        );
        print!("{}", table.render());
    }
    Ok(())
}

/// `concurrency` tasks each doing `ops` gets of `c`; answers every latency
/// and the operations per second of the whole.
async fn run_once(c: &Contender, keys: &Arc<Keys>, concurrency: usize, ops: usize) -> Run {
    let (c, keys) = (c.clone(), keys.clone());
    let get = move |t: usize, n: usize| {
        let (c, keys) = (c.clone(), keys.clone());
        async move { c.get(&keys, (t * 7919 + n) % KEYS).await }
    };
    run_tasks(get, concurrency, ops).await
}
