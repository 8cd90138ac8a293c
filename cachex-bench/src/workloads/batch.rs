//! `batch`: reading and loading lists of keys, against a real
//! `redis-server` (and a 3-master Redis Cluster) that the bench starts.
//!
//! Workloads, each side by side in one run:
//! - `get_many` of 100 cached keys: `Cache::get_many` vs 100 sequential
//!   `get`s vs 100 concurrent `get`s vs the raw `redis` crate's `MGET` of
//!   the same keys (`raw-mget`); standalone, then the cluster.
//! - `cold_page`: `get_many_or_load` of 100 cold keys (one loader call?),
//!   and 8 concurrent overlapping batches of 100 keys sharing 50 keys with
//!   their neighbours (every key loaded once?).
//! - `hybrid_l1_90`: `get_many` of 100 keys, 90 of them in the hybrid
//!   store's L1, beside the same batch on the memory store.
//!
//! `round_trips` is what a call costs the servers: Redis commands per call
//! from `INFO commandstats` before and after (standalone), or the masters
//! a call reaches (cluster: the `redis` crate sends one `MGET` per hash
//! slot, each master's together on its connection; `commands` counts them).
//! A cold page's `commands` are its `MGET` and its pipeline of `SET`s (two
//! round trips).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cachex::store::{HybridStore, RedisStore};
use cachex::{Cache, Ttl};
use cachex_testkit::{RedisCluster, RedisServer};
use clap::Args;
use futures_util::future::join_all;
use serde_json::json;

use crate::report::{emit, json_wanted, percentile, ratio, round, Table};

/// Options of the `batch` command.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// Keys per batch.
    #[arg(long, default_value_t = 100)]
    pub keys: usize,
    /// Calls per contender per run.
    #[arg(long, default_value_t = 300)]
    pub calls: usize,
    /// Runs, alternating contenders.
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// Bytes of each value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// How long the pretend database takes per loader call.
    #[arg(long, default_value_t = 2)]
    pub db_ms: u64,
    /// Print one JSON object per result line instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Runs the `batch` command.
pub fn run(args: &BatchArgs) -> Result<(), String> {
    if args.keys == 0 || args.calls == 0 || args.runs == 0 {
        return Err("--keys, --calls and --runs must be positive".into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    let server = RedisServer::try_start()?;
    let cluster = RedisCluster::try_start(3)?;
    let mut report = Report::default();
    runtime.block_on(async {
        standalone(args, &server, &mut report).await?;
        clustered(args, &cluster, &mut report).await?;
        cold_pages(args, &server, &mut report).await?;
        hybrid_l1(args, &server, &mut report).await
    })?;
    if !args.json {
        println!(
            "batches of {} keys of {} bytes; targets: get_many 1 round trip and p50 <= 1.2x raw-mget; \
             cold page 1 loader call; overlapping batches load each key once\n",
            args.keys, args.value_size
        );
        print!("{}", report.table.render());
    }
    Ok(())
}

/// The result lines, as a table and as JSON.
struct Report {
    table: Table,
}

impl Default for Report {
    fn default() -> Self {
        Report {
            table: Table::new([
                "workload",
                "contender",
                "keys",
                "p50 us",
                "p99 us",
                "p50 / base",
                "round trips",
                "commands",
                "loader calls",
            ]),
        }
    }
}

/// One contender's figures.
struct Line<'a> {
    workload: &'a str,
    contender: &'a str,
    keys: usize,
    latencies_ns: Vec<u64>,
    /// The p50 this one is compared with.
    base_p50_us: Option<f64>,
    round_trips: Option<f64>,
    commands: Option<f64>,
    loader_calls: Option<u64>,
}

impl Report {
    fn line(&mut self, mut line: Line<'_>) -> f64 {
        line.latencies_ns.sort_unstable();
        let p50 = percentile(&line.latencies_ns, 0.5);
        let p99 = percentile(&line.latencies_ns, 0.99);
        if json_wanted() {
            let mut value = json!({
                "workload": line.workload,
                "contender": line.contender,
                "keys": line.keys,
                "p50_us": round(p50, 1),
                "p99_us": round(p99, 1),
            });
            let object = value.as_object_mut().expect("an object");
            if let Some(base) = line.base_p50_us {
                object.insert("p50_ratio".into(), json!(round(p50 / base, 3)));
            }
            if let Some(trips) = line.round_trips {
                object.insert("round_trips".into(), json!(round(trips, 2)));
            }
            if let Some(commands) = line.commands {
                object.insert("commands".into(), json!(round(commands, 2)));
            }
            if let Some(calls) = line.loader_calls {
                object.insert("loader_calls".into(), json!(calls));
            }
            emit(&value);
        }
        let show = |x: Option<f64>| x.map_or(String::new(), |x| format!("{x:.2}"));
        self.table.row(vec![
            line.workload.to_string(),
            line.contender.to_string(),
            line.keys.to_string(),
            format!("{p50:.1}"),
            format!("{p99:.1}"),
            line.base_p50_us
                .map_or(String::new(), |base| ratio(p50, base)),
            show(line.round_trips),
            show(line.commands),
            line.loader_calls.map_or(String::new(), |c| c.to_string()),
        ]);
        p50
    }
}

/// Commands a server has run, from `INFO commandstats` (`info` itself
/// left out).
async fn commands_run(url: &str) -> Result<u64, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(info
        .lines()
        .filter(|line| line.starts_with("cmdstat_") && !line.starts_with("cmdstat_info:"))
        .filter_map(|line| {
            let calls = line.split_once(":calls=")?.1.split(',').next()?;
            calls.parse::<u64>().ok()
        })
        .sum())
}

/// Commands each of `urls` ran during `body`.
async fn commands_during<F: Future>(
    urls: &[String],
    body: F,
) -> Result<(F::Output, Vec<u64>), String> {
    let mut before = Vec::new();
    for url in urls {
        before.push(commands_run(url).await?);
    }
    let output = body.await;
    let mut during = Vec::new();
    for (url, before) in urls.iter().zip(before) {
        during.push(commands_run(url).await? - before);
    }
    Ok((output, during))
}

/// One batch read's future: answers how many keys it found.
type Reading = futures_util::future::BoxFuture<'static, usize>;

/// A contender: one batch read of `keys`, timed.
type Read = Arc<dyn Fn(Arc<Vec<String>>) -> Reading + Send + Sync>;

/// Runs every contender `runs` times `calls` calls, rotating the order;
/// answers each contender's latencies and the commands each server ran
/// per call.
async fn measure(
    contenders: &[(&str, Read)],
    keys: &Arc<Vec<String>>,
    args: &BatchArgs,
    urls: &[String],
) -> Result<Vec<(Vec<u64>, Vec<f64>)>, String> {
    let mut out: Vec<(Vec<u64>, Vec<u64>)> = contenders
        .iter()
        .map(|_| (Vec::new(), vec![0; urls.len()]))
        .collect();
    for (_, read) in contenders {
        for _ in 0..args.calls / 10 + 1 {
            read(keys.clone()).await;
        }
    }
    for run in 0..args.runs {
        for k in 0..contenders.len() {
            let idx = (k + run) % contenders.len();
            let read = &contenders[idx].1;
            let (latencies, commands) = commands_during(urls, async {
                let mut latencies = Vec::with_capacity(args.calls);
                for _ in 0..args.calls {
                    let began = Instant::now();
                    let found = read(keys.clone()).await;
                    latencies.push(began.elapsed().as_nanos() as u64);
                    assert_eq!(found, keys.len(), "{}: keys missing", contenders[idx].0);
                }
                latencies
            })
            .await?;
            out[idx].0.extend(latencies);
            for (total, n) in out[idx].1.iter_mut().zip(commands) {
                *total += n;
            }
        }
    }
    let calls = (args.calls * args.runs) as f64;
    Ok(out
        .into_iter()
        .map(|(latencies, commands)| {
            let per_call = commands.iter().map(|&n| n as f64 / calls).collect();
            (latencies, per_call)
        })
        .collect())
}

fn key_names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// The contenders of `get_many` over one Redis deployment.
fn readers(cache: &Cache<String>, raw: RawMget) -> Vec<(&'static str, Read)> {
    let many = cache.clone();
    let sequential = cache.clone();
    let concurrent = cache.clone();
    vec![
        (
            "raw-mget",
            Arc::new(move |keys: Arc<Vec<String>>| -> Reading {
                let raw = raw.clone();
                Box::pin(async move { raw.mget(&keys).await })
            }) as Read,
        ),
        (
            "cachex-get-many",
            Arc::new(move |keys: Arc<Vec<String>>| -> Reading {
                let cache = many.clone();
                Box::pin(async move { found(cache.get_many(&keys).await) })
            }),
        ),
        (
            "sequential-get",
            Arc::new(move |keys: Arc<Vec<String>>| -> Reading {
                let cache = sequential.clone();
                Box::pin(async move {
                    let mut n = 0;
                    for key in keys.iter() {
                        n += usize::from(cache.get(key).await.expect("get").is_some());
                    }
                    n
                })
            }),
        ),
        (
            "concurrent-get",
            Arc::new(move |keys: Arc<Vec<String>>| -> Reading {
                let cache = concurrent.clone();
                Box::pin(async move {
                    let all = join_all(keys.iter().map(|key| cache.get(key))).await;
                    all.into_iter()
                        .filter(|one| matches!(one, Ok(Some(_))))
                        .count()
                })
            }),
        ),
    ]
}

fn found(values: cachex::Result<Vec<Option<String>>>) -> usize {
    values
        .expect("get_many")
        .iter()
        .filter(|v| v.is_some())
        .count()
}

/// The raw client's `MGET`, on a standalone or a cluster connection.
#[derive(Clone)]
enum RawMget {
    Standalone(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl RawMget {
    async fn mget(&self, keys: &[String]) -> usize {
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(format!("raw:{key}"));
        }
        let values: Vec<Option<Vec<u8>>> = match self {
            RawMget::Standalone(conn) => cmd.query_async(&mut conn.clone()).await,
            RawMget::Cluster(conn) => cmd.query_async(&mut conn.clone()).await,
        }
        .unwrap_or_else(|e| panic!("raw MGET failed: {e}"));
        values.iter().filter(|v| v.is_some()).count()
    }

    async fn fill(&self, keys: &[String], value: &str) {
        for key in keys {
            let mut cmd = redis::cmd("SET");
            cmd.arg(format!("raw:{key}")).arg(value);
            let done: redis::RedisResult<()> = match self {
                RawMget::Standalone(conn) => cmd.query_async(&mut conn.clone()).await,
                RawMget::Cluster(conn) => cmd.query_async(&mut conn.clone()).await,
            };
            done.unwrap_or_else(|e| panic!("raw SET failed: {e}"));
        }
    }
}

async fn get_many_workload(
    args: &BatchArgs,
    workload: &str,
    cache: Cache<String>,
    raw: RawMget,
    urls: &[String],
    report: &mut Report,
) -> Result<(), String> {
    let keys = Arc::new(key_names("item:", args.keys));
    let value = "v".repeat(args.value_size);
    let entries: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), value.clone())).collect();
    cache
        .set_many(entries, Ttl::Never)
        .await
        .map_err(|e| e.to_string())?;
    raw.fill(&keys, &value).await;
    let contenders = readers(&cache, raw);
    let results = measure(&contenders, &keys, args, urls).await?;
    let mut base = None;
    for ((name, _), (latencies, commands)) in contenders.iter().zip(results) {
        let total: f64 = commands.iter().sum();
        let masters = commands.iter().filter(|&&n| n > 0.0).count() as f64;
        // Standalone: commands per call. Cluster: the masters a call
        // reaches, its commands to each sent together, except for the
        // one-at-a-time contender, whose every command is a round trip.
        let round_trips = if urls.len() == 1 || *name == "sequential-get" {
            total
        } else {
            masters
        };
        let p50 = report.line(Line {
            workload,
            contender: name,
            keys: args.keys,
            latencies_ns: latencies,
            base_p50_us: base,
            round_trips: Some(round_trips),
            commands: Some(total),
            loader_calls: None,
        });
        base.get_or_insert(p50);
    }
    Ok(())
}

async fn standalone(
    args: &BatchArgs,
    server: &RedisServer,
    report: &mut Report,
) -> Result<(), String> {
    let url = server.url();
    let store: RedisStore<String> = RedisStore::builder()
        .url(&url)
        .prefix("b")
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let cache = Cache::builder().store(store).build();
    let raw = redis::Client::open(url.as_str())
        .map_err(|e| e.to_string())?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    get_many_workload(
        args,
        "get_many",
        cache,
        RawMget::Standalone(raw),
        &[url],
        report,
    )
    .await
}

async fn clustered(
    args: &BatchArgs,
    cluster: &RedisCluster,
    report: &mut Report,
) -> Result<(), String> {
    let urls = cluster.urls();
    let store: RedisStore<String> = RedisStore::builder()
        .cluster(urls.clone())
        .prefix("b")
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let cache = Cache::builder().store(store).build();
    let raw = redis::cluster::ClusterClient::new(urls.clone())
        .map_err(|e| e.to_string())?
        .get_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    get_many_workload(
        args,
        "get_many_cluster",
        cache,
        RawMget::Cluster(raw),
        &urls,
        report,
    )
    .await
}

/// A pretend database: a bulk query that takes `db_ms`, counting calls
/// and keys.
#[derive(Clone, Default)]
struct Database {
    calls: Arc<AtomicUsize>,
    keys: Arc<AtomicUsize>,
}

impl Database {
    fn loader(
        &self,
        value: String,
        db_ms: u64,
    ) -> impl Fn(
        Vec<String>,
    ) -> futures_util::future::BoxFuture<
        'static,
        Result<HashMap<String, String>, std::io::Error>,
    > + Send
           + Sync
           + 'static {
        let (calls, loaded) = (self.calls.clone(), self.keys.clone());
        move |keys: Vec<String>| {
            calls.fetch_add(1, Ordering::Relaxed);
            loaded.fetch_add(keys.len(), Ordering::Relaxed);
            let value = value.clone();
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(db_ms)).await;
                Ok(keys.into_iter().map(|k| (k, value.clone())).collect())
            })
        }
    }
}

async fn cold_pages(
    args: &BatchArgs,
    server: &RedisServer,
    report: &mut Report,
) -> Result<(), String> {
    let url = server.url();
    let store: RedisStore<String> = RedisStore::builder()
        .url(&url)
        .prefix("cold")
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let cache: Cache<String> = Cache::builder().store(store).build();
    let value = "v".repeat(args.value_size);

    // One cold page at a time: every call loads all its keys.
    let db = Database::default();
    let mut latencies = Vec::new();
    let pages = args.runs * 10;
    let (_, commands) = commands_during(std::slice::from_ref(&url), async {
        for page in 0..pages {
            let keys = key_names(&format!("p{page}:"), args.keys);
            let began = Instant::now();
            let got = cache
                .get_many_or_load(&keys, db.loader(value.clone(), args.db_ms))
                .await
                .expect("get_many_or_load");
            latencies.push(began.elapsed().as_nanos() as u64);
            assert!(got.iter().all(Option::is_some));
        }
    })
    .await?;
    report.line(Line {
        workload: "cold_page",
        contender: "cachex-get-many-or-load",
        keys: args.keys,
        latencies_ns: latencies,
        base_p50_us: None,
        // An MGET, then one pipeline of SETs: two round trips.
        round_trips: None,
        commands: Some(commands[0] as f64 / pages as f64),
        loader_calls: Some(db.calls.load(Ordering::Relaxed) as u64 / pages as u64),
    });

    // 8 concurrent batches, each sharing half its keys with the next.
    let db = Database::default();
    let mut latencies = Vec::new();
    let mut distinct = 0;
    for run in 0..args.runs {
        let half = args.keys / 2;
        distinct += half * 7 + args.keys;
        let calls = (0..8).map(|b| {
            let keys = key_names(&format!("o{run}:"), b * half + args.keys);
            let keys = keys[b * half..].to_vec();
            let cache = cache.clone();
            let loader = db.loader(value.clone(), args.db_ms);
            async move {
                let began = Instant::now();
                let got = cache.get_many_or_load(&keys, loader).await.expect("load");
                assert!(got.iter().all(Option::is_some));
                began.elapsed().as_nanos() as u64
            }
        });
        latencies.extend(join_all(calls).await);
    }
    let loaded = db.keys.load(Ordering::Relaxed);
    report.line(Line {
        workload: "overlapping_pages",
        contender: "cachex-get-many-or-load",
        keys: distinct / args.runs,
        latencies_ns: latencies,
        base_p50_us: None,
        round_trips: None,
        commands: None,
        loader_calls: Some((loaded / args.runs) as u64),
    });
    if loaded != distinct {
        eprintln!("overlapping batches loaded {loaded} keys for {distinct} distinct keys");
    }
    Ok(())
}

async fn hybrid_l1(
    args: &BatchArgs,
    server: &RedisServer,
    report: &mut Report,
) -> Result<(), String> {
    let url = server.url();
    let l2: RedisStore<String> = RedisStore::builder()
        .url(&url)
        .prefix("hy")
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let hybrid = HybridStore::builder(l2)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let on_hybrid: Cache<String> = Cache::builder().store(hybrid.clone()).build();
    let on_memory: Cache<String> = Cache::builder().build();
    let keys = Arc::new(key_names("h:", args.keys));
    let value = "v".repeat(args.value_size);
    let entries: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), value.clone())).collect();
    for cache in [&on_hybrid, &on_memory] {
        cache
            .set_many(entries.clone(), Ttl::Never)
            .await
            .map_err(|e| e.to_string())?;
    }
    // Every call, the same 10% of the batch leaves L1 first.
    let evicted: Vec<String> = keys.iter().step_by(10).cloned().collect();
    let (memory, hybrid_cache) = (on_memory.clone(), on_hybrid.clone());
    let contenders: Vec<(&str, Read)> = vec![
        (
            "memory",
            Arc::new(move |keys: Arc<Vec<String>>| -> Reading {
                let cache = memory.clone();
                Box::pin(async move { found(cache.get_many(&keys).await) })
            }) as Read,
        ),
        (
            "hybrid-90pct-l1",
            Arc::new(move |keys: Arc<Vec<String>>| -> Reading {
                let (cache, store, evicted) =
                    (hybrid_cache.clone(), hybrid.clone(), evicted.clone());
                Box::pin(async move {
                    for key in &evicted {
                        store.invalidate_l1(key);
                    }
                    found(cache.get_many(&keys).await)
                })
            }),
        ),
    ];
    let results = measure(&contenders, &keys, args, std::slice::from_ref(&url)).await?;
    let mut base = None;
    for ((name, _), (latencies, commands)) in contenders.iter().zip(results) {
        let p50 = report.line(Line {
            workload: "hybrid_l1_90",
            contender: name,
            keys: args.keys,
            latencies_ns: latencies,
            base_p50_us: base,
            round_trips: Some(commands[0]),
            commands: None,
            loader_calls: None,
        });
        base.get_or_insert(p50);
    }
    Ok(())
}
