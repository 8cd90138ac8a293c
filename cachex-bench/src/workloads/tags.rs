//! `tags`: what tags cost, against a real `redis-server` the bench starts.
//!
//! Workloads, each side by side in one run:
//! - `l1_hit`: `Cache::get` hits of 10,000 entries, tagged (2 tags each,
//!   one shared by 100 entries, one by all) vs untagged, over the memory
//!   store and over a hybrid store whose L1 holds them all, reading a
//!   Zipf(1.01) trace as the `async` bench does; ns per operation, medians
//!   over interleaved runs (target: tagged <= 1.2x untagged).
//!   `l1_hit_uniform` reads every key in turn instead, scattered: the
//!   processor's caches then hold little, and a tagged hit pays for
//!   reaching its tag list.
//! - `redis_read`: `Cache::get` of one 100-byte entry over the Redis store:
//!   untagged (`GET`), tagged with the default reads (`GET`, then `MGET` of
//!   its tags) and with `read_tags_in_script` (one `EVALSHA`), beside a raw
//!   `GET` of the `redis` crate; p50/p99 in µs (target: 1 round trip).
//! - `invalidate`: `invalidate_tag` of a tag carried by 10 entries and by
//!   100,000 (target: the same cost, O(1)); and after it, a read of one of
//!   the entries misses.
//!
//! `round_trips` counts the commands the client sends per call, through a
//! counting TCP proxy in a separate pass (the timed runs connect
//! directly): a call waits for each of them in turn, except for the tags'
//! scripts of one write or invalidation, which go out together.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cachex::store::{HybridStore, MemoryStore, RedisStore};
use cachex::{Cache, Ttl};
use cachex_testkit::{FaultProxy, RedisServer};
use clap::Args;
use serde_json::json;

use crate::report::{emit, json_wanted, median, percentile, ratio, round, Table};
use crate::zipf::{Rng, Zipf};

/// Options of the `tags` command.
#[derive(Debug, Args)]
pub struct TagsArgs {
    /// Entries read by the L1 hit workload.
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// Reads per contender per run of the L1 hit workload.
    #[arg(long, default_value_t = 1_000_000)]
    pub ops: usize,
    /// Calls per contender per run of the Redis workloads.
    #[arg(long, default_value_t = 2_000)]
    pub calls: usize,
    /// Runs, alternating contenders.
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// Only these workloads (l1_hit, redis_read, invalidate; l1_hit runs
    /// l1_hit_uniform too).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Only these contenders of the L1 hit workloads (memory-untagged,
    /// memory-tagged, hybrid-untagged, hybrid-tagged): with `--runs 1` and
    /// two `--ops`, callgrind's instruction counts per read.
    #[arg(long, value_delimiter = ',')]
    pub contenders: Vec<String>,
    /// Print one JSON object per result line instead of tables.
    #[arg(long)]
    pub json: bool,
}

impl TagsArgs {
    fn runs_workload(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|only| only == name)
    }

    fn runs_contender(&self, name: &str) -> bool {
        self.contenders.is_empty() || self.contenders.iter().any(|c| c == name)
    }
}

/// Runs the `tags` command.
pub fn run(args: &TagsArgs) -> Result<(), String> {
    if args.keys == 0 || args.ops == 0 || args.calls == 0 || args.runs == 0 {
        return Err("--keys, --ops, --calls and --runs must be positive".into());
    }
    let server = RedisServer::try_start()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    let mut table = Table::new([
        "workload",
        "contender",
        "ns/op",
        "p50 us",
        "p99 us",
        "vs base",
        "round trips",
    ]);
    runtime.block_on(async {
        if args.runs_workload("l1_hit") {
            l1_hits(args, &server, &mut table).await?;
        }
        if args.runs_workload("redis_read") {
            redis_reads(args, &server, &mut table).await?;
        }
        if args.runs_workload("invalidate") {
            invalidations(args, &server, &mut table).await?;
        }
        Ok::<_, String>(())
    })?;
    if !args.json {
        println!(
            "targets: an L1 hit of a tagged entry <= 1.2x an untagged one; a Redis read of a \
             tagged entry 1 round trip; invalidate_tag the same over 10 and 100,000 entries\n"
        );
        print!("{}", table.render());
    }
    Ok(())
}

/// One result line.
#[derive(Default)]
struct Line<'a> {
    workload: &'a str,
    contender: &'a str,
    ns_per_op: Option<f64>,
    /// Sorted latencies, in ns.
    latencies: Vec<u64>,
    /// What "vs base" divides by (ns/op or p50 µs).
    base: Option<f64>,
    round_trips: Option<f64>,
}

fn report(table: &mut Table, line: Line<'_>) {
    let p50 = (!line.latencies.is_empty()).then(|| percentile(&line.latencies, 0.5));
    let p99 = (!line.latencies.is_empty()).then(|| percentile(&line.latencies, 0.99));
    let own = line.ns_per_op.or(p50);
    if json_wanted() {
        let mut value = json!({ "workload": line.workload, "contender": line.contender });
        let object = value.as_object_mut().expect("an object");
        if let Some(ns) = line.ns_per_op {
            object.insert("ns_per_op".into(), json!(round(ns, 2)));
        }
        if let (Some(p50), Some(p99)) = (p50, p99) {
            object.insert("p50_us".into(), json!(round(p50, 1)));
            object.insert("p99_us".into(), json!(round(p99, 1)));
        }
        if let (Some(base), Some(own)) = (line.base, own) {
            object.insert("ratio".into(), json!(round(own / base, 3)));
        }
        if let Some(trips) = line.round_trips {
            object.insert("round_trips".into(), json!(round(trips, 2)));
        }
        emit(&value);
    }
    let show = |x: Option<f64>| x.map_or(String::new(), |x| format!("{x:.1}"));
    table.row(vec![
        line.workload.to_string(),
        line.contender.to_string(),
        show(line.ns_per_op),
        show(p50),
        show(p99),
        match (line.base, own) {
            (Some(base), Some(own)) => ratio(own, base),
            _ => String::new(),
        },
        line.round_trips
            .map_or(String::new(), |t| format!("{t:.2}")),
    ]);
}

/// Fills `cache` with `keys` entries: `tagged` ones under 2 tags each.
async fn fill(cache: &Cache<u64>, keys: &[String], tagged: bool) -> Result<(), String> {
    for (i, key) in keys.iter().enumerate() {
        let written = if tagged {
            let tags = [format!("group:{}", i / 100), "all".to_string()];
            let view = cache.tagged(&tags).map_err(|e| e.to_string())?;
            view.set(key, i as u64, Ttl::Never).await
        } else {
            cache.set(key, i as u64, Ttl::Never).await
        };
        written.map_err(|e| format!("fill: {e}"))?;
    }
    Ok(())
}

/// The order keys are read in: a Zipf(1.01) trace over them, or every
/// key in turn, scattered (the worst case for the processor's caches).
fn trace(keys: usize, ops: usize, uniform: bool) -> Vec<usize> {
    if uniform {
        return (0..ops).map(|i| (i * 7_919) % keys).collect();
    }
    let zipf = Zipf::new(keys as u64, 1.01);
    let mut rng = Rng::new(0x7a95);
    (0..ops)
        .map(|_| zipf.sample(&mut rng) as usize % keys)
        .collect()
}

/// ns per `get` of the reads of `trace` (all hits).
async fn time_hits(cache: &Cache<u64>, keys: &[String], trace: &[usize]) -> Result<f64, String> {
    let began = Instant::now();
    for &index in trace {
        let key = &keys[index];
        let found = cache.get(key).await.map_err(|e| e.to_string())?;
        if black_box(found).is_none() {
            return Err(format!("l1_hit: {key} missed"));
        }
    }
    Ok(began.elapsed().as_nanos() as f64 / trace.len() as f64)
}

async fn l1_hits(args: &TagsArgs, server: &RedisServer, table: &mut Table) -> Result<(), String> {
    let keys: Vec<String> = (0..args.keys).map(|i| format!("user:{i}")).collect();
    let capacity = (args.keys * 2) as u64;
    let mut contenders = Vec::new();
    for (name, tagged) in [("memory-untagged", false), ("memory-tagged", true)] {
        if !args.runs_contender(name) {
            continue;
        }
        let memory: Cache<u64> = Cache::builder().store(MemoryStore::new(capacity)).build();
        fill(&memory, &keys, tagged).await?;
        contenders.push((name, tagged, memory));
    }
    for (name, prefix, tagged) in [
        ("hybrid-untagged", "l1u", false),
        ("hybrid-tagged", "l1t", true),
    ] {
        if !args.runs_contender(name) {
            continue;
        }
        let l2 = redis_store(&server.url(), prefix, false).await?;
        let store = HybridStore::builder(l2)
            .l1_capacity(capacity)
            .build()
            .await
            .map_err(|e| e.to_string())?;
        let hybrid: Cache<u64> = Cache::builder().store(store).build();
        fill(&hybrid, &keys, tagged).await?;
        contenders.push((name, tagged, hybrid));
    }
    for (workload, uniform) in [("l1_hit", false), ("l1_hit_uniform", true)] {
        let trace = trace(keys.len(), args.ops, uniform);
        let mut times = vec![Vec::new(); contenders.len()];
        for (_, _, cache) in &contenders {
            time_hits(cache, &keys, &trace[..trace.len() / 10]).await?;
        }
        for run in 0..args.runs {
            for k in 0..contenders.len() {
                let index = (k + run) % contenders.len();
                let cache = &contenders[index].2;
                times[index].push(time_hits(cache, &keys, &trace).await?);
            }
        }
        let medians: Vec<f64> = times.iter().map(|t| median(t)).collect();
        for (index, (contender, tagged, _)) in contenders.iter().enumerate() {
            // The untagged contender of the same store, just before.
            let base = index
                .checked_sub(1)
                .filter(|_| *tagged && !contenders[index - 1].1)
                .map(|before| medians[before]);
            let contender = *contender;
            report(
                table,
                Line {
                    workload,
                    contender,
                    ns_per_op: Some(medians[index]),
                    base,
                    round_trips: Some(0.0),
                    ..Line::default()
                },
            );
        }
    }
    Ok(())
}

async fn redis_store(url: &str, prefix: &str, script: bool) -> Result<RedisStore<u64>, String> {
    RedisStore::builder()
        .url(url)
        .prefix(prefix)
        .read_tags_in_script(script)
        .build()
        .await
        .map_err(|e| e.to_string())
}

/// A read contender: a cache, or the raw client (`None`).
struct Reader {
    name: &'static str,
    key: &'static str,
    direct: Option<Cache<u64>>,
    proxied: Option<Cache<u64>>,
}

async fn redis_reads(
    args: &TagsArgs,
    server: &RedisServer,
    table: &mut Table,
) -> Result<(), String> {
    let proxy = FaultProxy::start(&server.addr());
    let writer: Cache<u64> = Cache::builder()
        .store(redis_store(&server.url(), "read", false).await?)
        .build();
    writer
        .set("plain", 1, Ttl::Never)
        .await
        .map_err(|e| e.to_string())?;
    writer
        .tagged(["user:7", "users"])
        .map_err(|e| e.to_string())?
        .set("tagged", 2, Ttl::Never)
        .await
        .map_err(|e| e.to_string())?;
    let mut readers = Vec::new();
    for (name, key, script) in [
        ("untagged-get", "plain", false),
        ("tagged-get-mget", "tagged", false),
        ("tagged-script", "tagged", true),
    ] {
        let cache = |url: String| async move {
            let store = redis_store(&url, "read", script).await?;
            Ok::<_, String>(Cache::builder().store(store).build())
        };
        readers.push(Reader {
            name,
            key,
            direct: Some(cache(server.url()).await?),
            proxied: Some(cache(proxy.url()).await?),
        });
    }
    readers.insert(
        0,
        Reader {
            name: "raw-get",
            key: "plain",
            direct: None,
            proxied: None,
        },
    );
    let client = redis::Client::open(server.url()).map_err(|e| e.to_string())?;
    let raw = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let raw_key = "read:plain";
    let read_once = |reader: &Reader, proxied: bool| {
        let cache = if proxied {
            &reader.proxied
        } else {
            &reader.direct
        };
        let cache = cache.clone();
        let mut raw = raw.clone();
        let key = reader.key;
        async move {
            match cache {
                Some(cache) => cache
                    .get(key)
                    .await
                    .map(|v| v.is_some())
                    .map_err(|e| e.to_string()),
                None => redis::cmd("GET")
                    .arg(raw_key)
                    .query_async::<Option<Vec<u8>>>(&mut raw)
                    .await
                    .map(|v| v.is_some())
                    .map_err(|e| e.to_string()),
            }
        }
    };
    // Round trips, through the counting proxy.
    let mut trips = Vec::new();
    for reader in &readers {
        if reader.proxied.is_none() {
            trips.push(1.0);
            continue;
        }
        let before = proxy.commands();
        for _ in 0..100 {
            read_once(reader, true).await?;
        }
        trips.push((proxy.commands() - before) as f64 / 100.0);
    }
    let mut latencies = vec![Vec::new(); readers.len()];
    for run in 0..args.runs {
        for k in 0..readers.len() {
            let index = (k + run) % readers.len();
            for _ in 0..args.calls {
                let began = Instant::now();
                if !read_once(&readers[index], false).await? {
                    return Err(format!("{}: missed", readers[index].name));
                }
                latencies[index].push(began.elapsed().as_nanos() as u64);
            }
        }
    }
    for list in &mut latencies {
        list.sort_unstable();
    }
    let base = percentile(&latencies[0], 0.5);
    for (index, reader) in readers.iter().enumerate() {
        report(
            table,
            Line {
                workload: "redis_read",
                contender: reader.name,
                latencies: std::mem::take(&mut latencies[index]),
                base: (index > 0).then_some(base),
                round_trips: Some(trips[index]),
                ..Line::default()
            },
        );
    }
    Ok(())
}

async fn invalidations(
    args: &TagsArgs,
    server: &RedisServer,
    table: &mut Table,
) -> Result<(), String> {
    let proxy = FaultProxy::start(&server.addr());
    let cache: Cache<u64> = Cache::builder()
        .store(redis_store(&server.url(), "inv", false).await?)
        .build();
    let proxied: Cache<u64> = Cache::builder()
        .store(redis_store(&proxy.url(), "inv", false).await?)
        .build();
    let mut sizes = Vec::new();
    for (tag, entries) in [("small", 10usize), ("large", 100_000)] {
        let view = cache.tagged([tag]).map_err(|e| e.to_string())?;
        let keys: Vec<String> = (0..entries).map(|i| format!("{tag}:{i}")).collect();
        for chunk in keys.chunks(cachex::MAX_BATCH) {
            let batch = chunk.iter().map(|key| (key.clone(), 1u64));
            view.set_many(batch, Ttl::After(Duration::from_secs(600)))
                .await
                .map_err(|e| e.to_string())?;
        }
        let before = proxy.commands();
        for _ in 0..100 {
            proxied
                .invalidate_tag(tag)
                .await
                .map_err(|e| e.to_string())?;
        }
        let trips = (proxy.commands() - before) as f64 / 100.0;
        sizes.push((tag, entries, keys, trips, Vec::new()));
    }
    for run in 0..args.runs {
        for k in 0..sizes.len() {
            let index = (k + run) % sizes.len();
            let tag = sizes[index].0;
            for _ in 0..args.calls / 4 + 1 {
                let began = Instant::now();
                cache.invalidate_tag(tag).await.map_err(|e| e.to_string())?;
                sizes[index].4.push(began.elapsed().as_nanos() as u64);
            }
        }
    }
    let mut base = None;
    for (tag, entries, keys, trips, mut latencies) in sizes {
        if cache
            .get(&keys[entries / 2])
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Err(format!("invalidate: an entry of `{tag}` was still served"));
        }
        latencies.sort_unstable();
        let p50 = percentile(&latencies, 0.5);
        let contender = if entries == 10 {
            "invalidate_tag-10"
        } else {
            "invalidate_tag-100000"
        };
        report(
            table,
            Line {
                workload: "invalidate",
                contender,
                latencies,
                base,
                round_trips: Some(trips),
                ..Line::default()
            },
        );
        base.get_or_insert(p50);
    }
    Ok(())
}
