//! The cache doing its job, with no server to set up.
//!
//! Many concurrent clients request Zipf-distributed product ids through
//! `Cache::get_or_load`, in front of a simulated database: a pool of a few
//! connections, each query holding one for a few milliseconds. The same
//! request stream is then sent straight to the database for comparison.
//!
//! ```text
//! cargo run --release --example demo
//! cargo run --release --example demo -- --tasks 128 --keys 100000 --duration 20
//! cargo run --release --example demo -- --help
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use cachex::{Cache, CacheBuilder};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::Zipf;
use tokio::sync::Semaphore;
use tokio::time::{sleep, Instant};

/// Load the cache with Zipf-distributed requests over a slow database.
#[derive(Parser, Debug)]
struct Args {
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    tasks: usize,
    /// Distinct keys (product ids). By default they all fit in the cache;
    /// with more, misses (and so the database) set the pace.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Zipf exponent of key popularity (0 is uniform; larger is more skewed).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Seconds of load through the cache; the run without it takes a third
    /// of that, at most 3 s.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Entries the cache holds.
    #[arg(long, default_value_t = 10_000)]
    capacity: u64,
    /// Time-to-live of cached rows, in seconds; the last fifth of it is
    /// refreshed in the background (stale-while-revalidate).
    #[arg(long, default_value_t = 8.0)]
    ttl: f64,
    /// Database connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Mean query time in milliseconds (each query takes 0.5× to 1.5× it).
    #[arg(long, default_value_t = 3.0)]
    query_ms: f64,
    /// Where the cache keeps its entries: `memory`, a `redis://` URL (Redis
    /// only), or `hybrid+redis://...` (memory in front of Redis).
    #[arg(long, default_value = "memory")]
    backend: String,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(problem) = check(&args) {
        eprintln!("error: {problem}");
        std::process::exit(2);
    }
    let cached_for = Duration::from_secs_f64(args.duration);
    let direct_for = (cached_for / 3).min(Duration::from_secs(3));

    println!(
        "cachex demo: {} clients, Zipf(s = {}) over {} keys, backend {} ({} entries in memory)",
        args.tasks,
        args.zipf,
        Count(args.keys),
        args.backend,
        Count(args.capacity)
    );
    println!(
        "simulated database: {} connections, {:.1}-{:.1} ms per query\n",
        args.connections,
        args.query_ms / 2.0,
        args.query_ms * 1.5
    );

    let ttl = Duration::from_secs_f64(args.ttl);
    let builder = Cache::builder()
        .capacity(args.capacity)
        .default_ttl(ttl)
        .stale_while_revalidate(ttl / 5);
    let cache: Cache<Product> = match with_backend(builder, &args).await {
        Ok(cache) => cache,
        Err(problem) => {
            eprintln!("error: backend {}: {problem}", args.backend);
            std::process::exit(1);
        }
    };
    let db = Database::new(&args);
    let with = run(
        &args,
        cached_for,
        "with cache",
        Some(cache.clone()),
        db.clone(),
    )
    .await;
    let stats = cache.stats();
    cache.close().await;

    let db_direct = Database::new(&args);
    let without = run(&args, direct_for, "without", None, db_direct.clone()).await;

    report(&with, &without, db.queries(), db_direct.queries());
    println!(
        "\ncache: hit ratio {:.1}%, {} loader calls (mean {:.2} ms), {} loads saved by \
         singleflight,\n       {} background refreshes ({} hits served while one ran), {} load errors",
        stats.hit_ratio() * 100.0,
        Count(stats.loader_calls()),
        stats.mean_load_time().unwrap_or_default().as_secs_f64() * 1e3,
        Count(stats.singleflight_waits),
        Count(stats.refreshes),
        Count(stats.stale_served),
        Count(stats.load_errors + stats.refresh_errors),
    );
}

/// Puts the chosen store under the cache. Redis keys go under the prefix
/// `cachex-demo`, and the demo clears that prefix first so that runs do not
/// see each other's entries.
async fn with_backend(
    builder: CacheBuilder<Product>,
    args: &Args,
) -> cachex::Result<Cache<Product>> {
    let backend = args.backend.as_str();
    if backend == "memory" {
        return Ok(builder.build());
    }
    #[cfg(feature = "redis")]
    {
        use cachex::store::hybrid::HybridStore;
        use cachex::store::{RedisStore, Store};

        let (hybrid, url) = match backend.strip_prefix("hybrid+") {
            Some(url) => (true, url),
            None => (false, backend),
        };
        let redis: RedisStore<Product> = RedisStore::builder()
            .url(url)
            .prefix("cachex-demo")
            .build()
            .await?;
        redis.clear().await?;
        if hybrid {
            let store = HybridStore::builder(redis)
                .l1_capacity(args.capacity)
                .build()
                .await?;
            return Ok(builder.store(store).build());
        }
        Ok(builder.store(redis).build())
    }
    #[cfg(not(feature = "redis"))]
    unreachable!("check() refuses Redis backends without the `redis` feature")
}

/// Refuses what this build cannot run.
fn check(args: &Args) -> Result<(), String> {
    let redis_url = |b: &str| {
        let url = b.strip_prefix("hybrid+").unwrap_or(b);
        url.starts_with("redis://") || url.starts_with("rediss://")
    };
    match args.backend.as_str() {
        "memory" => {}
        b if redis_url(b) && !cfg!(feature = "redis") => {
            return Err(format!(
                "backend {b}: this build has no Redis support (enable the `redis` feature)"
            ))
        }
        b if redis_url(b) => {}
        other => {
            return Err(format!(
            "unknown backend {other:?}; use memory, redis://HOST:PORT or hybrid+redis://HOST:PORT"
        ))
        }
    }
    if args.tasks == 0 || args.keys == 0 || args.connections == 0 {
        return Err("--tasks, --keys and --connections must be at least 1".into());
    }
    if !(args.duration > 0.0 && args.ttl > 0.0 && args.query_ms > 0.0 && args.zipf >= 0.0) {
        return Err(
            "--duration, --ttl and --query-ms must be positive, --zipf not negative".into(),
        );
    }
    Ok(())
}

/// A row of the simulated database.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[allow(dead_code)] // the fields are what a real row would carry
struct Product {
    id: u64,
    name: String,
    price_cents: u64,
}

/// A database with a small connection pool: a query waits for a free
/// connection, then holds it for a few milliseconds. Without a cache, the
/// pool is the bottleneck and queries queue.
#[derive(Clone)]
struct Database {
    pool: Arc<Semaphore>,
    query_time: Duration,
    queries: Arc<AtomicU64>,
}

impl Database {
    fn new(args: &Args) -> Self {
        Database {
            pool: Arc::new(Semaphore::new(args.connections)),
            query_time: Duration::from_secs_f64(args.query_ms / 1e3),
            queries: Arc::default(),
        }
    }

    async fn product(&self, id: u64) -> Result<Product, std::io::Error> {
        let _connection = self.pool.acquire().await.map_err(std::io::Error::other)?;
        self.queries.fetch_add(1, Relaxed);
        let spread = rand::random_range(0.5..1.5);
        sleep(self.query_time.mul_f64(spread)).await;
        Ok(Product {
            id,
            name: format!("product {id}"),
            price_cents: 100 + id % 9_900,
        })
    }

    fn queries(&self) -> u64 {
        self.queries.load(Relaxed)
    }
}

/// What one run measured.
struct Run {
    requests: u64,
    elapsed: Duration,
    latency: Histogram,
}

/// Sends requests from `args.tasks` clients for `duration`, through `cache`
/// if there is one, straight to `db` otherwise, with a progress bar.
async fn run(
    args: &Args,
    duration: Duration,
    label: &'static str,
    cache: Option<Cache<Product>>,
    db: Database,
) -> Run {
    let zipf = Zipf::new(args.keys as f64, args.zipf).expect("checked arguments");
    let started = Instant::now();
    let deadline = started + duration;
    let served = Arc::new(AtomicU64::new(0));
    let progress = progress_bar(label, duration, cache.clone(), Arc::clone(&served));

    let clients: Vec<_> = (0..args.tasks as u64)
        .map(|client| {
            let (cache, db, served) = (cache.clone(), db.clone(), Arc::clone(&served));
            tokio::spawn(async move {
                // Each client's stream depends only on its number, so both
                // runs send the same requests in the same order.
                let mut rng = StdRng::seed_from_u64(client);
                let mut latency = Histogram::default();
                while Instant::now() < deadline {
                    let id = rng.sample(zipf) as u64;
                    let asked = Instant::now();
                    let product = match &cache {
                        Some(cache) => {
                            let db = db.clone();
                            let key = format!("product:{id}");
                            let load = move || async move { db.product(id).await };
                            cache.get_or_load(&key, load).await.expect("a product")
                        }
                        None => db.product(id).await.expect("a product"),
                    };
                    latency.record(asked.elapsed());
                    assert_eq!(product.id, id);
                    served.fetch_add(1, Relaxed);
                    // A client sends its next request when the runtime gets
                    // to it, as after any network round trip: a hit
                    // completes without suspending, so without this yield a
                    // client would keep its thread to itself.
                    tokio::task::yield_now().await;
                }
                latency
            })
        })
        .collect();

    let mut latency = Histogram::default();
    for client in clients {
        latency.merge(&client.await.expect("client panicked"));
    }
    let elapsed = started.elapsed();
    progress.await.expect("progress bar panicked");
    Run {
        requests: served.load(Relaxed),
        elapsed,
        latency,
    }
}

/// A bar that follows the run's time, with requests served so far (and the
/// hit ratio, with a cache), redrawn ten times a second; finishes when the
/// run's time is up.
fn progress_bar(
    label: &'static str,
    duration: Duration,
    cache: Option<Cache<Product>>,
    served: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let millis = duration.as_millis() as u64;
    let bar = ProgressBar::new(millis).with_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:40.cyan/blue}] {percent:>3}% {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label);
    let started = Instant::now();
    tokio::spawn(async move {
        loop {
            let mut message = format!("{} requests", Count(served.load(Relaxed)));
            if let Some(cache) = &cache {
                message += &format!(", hit ratio {:.1}%", cache.stats().hit_ratio() * 100.0);
            }
            bar.set_message(message);
            let elapsed = started.elapsed().as_millis() as u64;
            bar.set_position(elapsed.min(millis));
            if elapsed >= millis {
                break;
            }
            sleep(Duration::from_millis(100)).await;
        }
        bar.finish();
    })
}

fn report(with: &Run, without: &Run, queries_with: u64, queries_without: u64) {
    fn row(name: &str, with: impl fmt::Display, without: impl fmt::Display) {
        println!("{name:<22}{with:>16}{without:>16}");
    }
    let rate = |run: &Run| Count((run.requests as f64 / run.elapsed.as_secs_f64()) as u64);
    let per_request =
        |queries: u64, run: &Run| format!("{:.4}", queries as f64 / run.requests.max(1) as f64);

    println!();
    row("", "with cache", "without cache");
    row(
        "requests served",
        Count(with.requests),
        Count(without.requests),
    );
    row("time", Secs(with.elapsed), Secs(without.elapsed));
    row("requests per second", rate(with), rate(without));
    row(
        "database queries",
        Count(queries_with),
        Count(queries_without),
    );
    row(
        "queries per request",
        per_request(queries_with, with),
        per_request(queries_without, without),
    );
    for (name, quantile) in [
        ("latency p50", 0.5),
        ("latency p99", 0.99),
        ("latency p99.9", 0.999),
    ] {
        row(
            name,
            Latency(with.latency.quantile(quantile)),
            Latency(without.latency.quantile(quantile)),
        );
    }
}

/// Latencies in log-linear buckets: 16 per power of two, so any quantile is
/// within about 6% of the truth, in a fixed 8 KiB per client.
#[derive(Clone)]
struct Histogram {
    buckets: Vec<u64>,
}

const SUB_BUCKETS: u32 = 16;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; (64 * SUB_BUCKETS) as usize],
        }
    }
}

impl Histogram {
    fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.buckets[Self::bucket(nanos)] += 1;
    }

    /// Bucket of `nanos`: its power of two, then the next four bits.
    fn bucket(nanos: u64) -> usize {
        let exponent = 63 - nanos.leading_zeros();
        let fraction = if exponent >= 4 {
            (nanos >> (exponent - 4)) & 0xf
        } else {
            (nanos << (4 - exponent)) & 0xf
        };
        (exponent * SUB_BUCKETS) as usize + fraction as usize
    }

    /// The middle of a bucket's range.
    fn value(bucket: usize) -> Duration {
        let (exponent, fraction) = (bucket as u32 / SUB_BUCKETS, bucket as u64 % 16);
        let low = ((16 + fraction) << exponent) >> 4;
        let high = ((17 + fraction) << exponent) >> 4;
        Duration::from_nanos((low + high) / 2)
    }

    fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
    }

    fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.buckets.iter().sum();
        let rank = ((total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        self.buckets
            .iter()
            .enumerate()
            .find_map(|(bucket, &count)| {
                seen += count;
                (count > 0 && seen >= rank).then(|| Self::value(bucket))
            })
    }
}

/// A count with thousands separators.
struct Count(u64);

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        let mut out = String::new();
        for (i, digit) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(digit);
        }
        f.pad(&out)
    }
}

struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("{:.1} s", self.0.as_secs_f64()))
    }
}

/// A latency in the unit that suits it.
struct Latency(Option<Duration>);

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(latency) = self.0 else {
            return f.pad("-");
        };
        let nanos = latency.as_nanos() as f64;
        let text = if nanos < 1e3 {
            format!("{nanos:.0} ns")
        } else if nanos < 1e6 {
            format!("{:.1} µs", nanos / 1e3)
        } else {
            format!("{:.2} ms", nanos / 1e6)
        };
        f.pad(&text)
    }
}
