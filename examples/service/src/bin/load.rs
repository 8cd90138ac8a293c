//! The load generator: concurrent HTTP clients asking the service for
//! Zipf-distributed products, with the cache on and off, side by side.
//!
//! ```sh
//! cargo build --release -p cachex-service
//! target/release/load                                # starts the service twice itself
//! target/release/load --db-latency-ms 1 --json       # a database 1 ms away
//! target/release/load --url http://127.0.0.1:8080    # a service already running
//! ```
//!
//! Without `--url` it starts `service` (next to this binary) twice on free
//! loopback ports, once with the cache and once with `--no-cache`, each
//! over its own freshly seeded SQLite file, and sends both the same
//! request streams (each client's stream depends only on its number).
//! Database queries and the hit ratio come from the service's `/stats`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cachex_service::app::{CacheCounters, ServiceStats};
use cachex_service::client::{Client, ClientError};
use cachex_service::db::ProductUpdate;
use cachex_service::process::ServiceProcess;
use clap::Parser;
use hdrhistogram::Histogram;
use hyper::StatusCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::Zipf;
use tokio::time::Instant;

/// Measure the product service with the cache on and off.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Services to measure (`http://HOST:PORT`), one run each; without
    /// any, `service` is started twice (cache on, then `--no-cache`).
    #[arg(long)]
    url: Vec<String>,
    /// Concurrent clients, each on its own keep-alive connection.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds of load per run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Rounds: each runs every service once, in turn (the services, and so
    /// the cache, live across rounds).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Product ids are drawn from 1 to this (Zipf).
    #[arg(long, default_value_t = 100_000)]
    products: u64,
    /// Zipf exponent of product popularity (0 is uniform).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Share of requests that are pages (`GET /products?ids=...`).
    #[arg(long, default_value_t = 0.1)]
    page_share: f64,
    /// Products in a page.
    #[arg(long, default_value_t = 20)]
    page_size: usize,
    /// Share of requests that are updates (`PUT /products/{id}`).
    #[arg(long, default_value_t = 0.0)]
    write_share: f64,
    /// For the services started here: the simulated network latency
    /// added to each database query, in milliseconds.
    #[arg(long, default_value_t = 0.0)]
    db_latency_ms: f64,
    /// For the services started here: database connections.
    #[arg(long, default_value_t = 4)]
    connections: u32,
    /// For the service started here with the cache: the hybrid store over
    /// this Redis instead of memory only.
    #[arg(long)]
    redis: Option<String>,
    /// The `service` binary to start. Default: the one next to this binary.
    #[arg(long)]
    service_bin: Option<PathBuf>,
    /// One JSON line per run instead of the table.
    #[arg(long)]
    json: bool,
    /// Also append one JSON line per run to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// A service under measurement.
struct Target {
    label: String,
    addr: SocketAddr,
}

/// What one run measured.
struct Run {
    label: String,
    round: usize,
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    db_queries: u64,
    cache: Option<CacheCounters>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(problem) = measure(args).await {
        eprintln!("error: {problem}");
        std::process::exit(1);
    }
}

async fn measure(args: Args) -> Result<(), ClientError> {
    check(&args)?;
    // Held to the end: dropping them stops the services, then removes
    // their databases.
    let dir = tempfile::tempdir()?;
    let mut services = Vec::new();
    let mut targets = Vec::new();
    if args.url.is_empty() {
        let binary = match &args.service_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe()?.with_file_name("service"),
        };
        for (label, cached) in [("cache", true), ("no cache", false)] {
            let mut service_args = vec![
                format!("--products={}", args.products),
                format!("--db-latency-ms={}", args.db_latency_ms),
                format!("--connections={}", args.connections),
                format!("--db={}", dir.path().join(format!("{cached}.db")).display()),
            ];
            match (cached, &args.redis) {
                (false, _) => service_args.push("--no-cache".into()),
                (true, Some(url)) => service_args.push(format!("--redis={url}")),
                (true, None) => {}
            }
            let service = ServiceProcess::start(&binary, &service_args)?;
            targets.push(Target {
                label: label.into(),
                addr: service.addr(),
            });
            services.push(service);
        }
    } else {
        for url in &args.url {
            let addr = url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .parse()
                .map_err(|e| format!("--url {url}: expected http://IP:PORT ({e})"))?;
            targets.push(Target {
                label: url.clone(),
                addr,
            });
        }
    }

    if !args.json {
        println!(
            "{} clients, {} s a run, Zipf(s = {}) over {} products, {:.0}% pages of {}, {:.0}% updates, \
             database +{} ms a query\n",
            args.clients,
            args.seconds,
            args.zipf,
            args.products,
            args.page_share * 100.0,
            args.page_size,
            args.write_share * 100.0,
            args.db_latency_ms,
        );
        header();
    }
    let mut json_out = match &args.json_out {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("--json-out {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        for target in &targets {
            let run = run(&args, target, round).await?;
            if args.json {
                println!("{}", run.json(&args));
            } else {
                println!("{run}");
            }
            if let Some(file) = &mut json_out {
                use std::io::Write;
                writeln!(file, "{}", run.json(&args))?;
            }
            runs.push(run);
        }
    }
    if !args.json && targets.len() == 2 {
        compare(&runs, &targets);
    }
    drop(services);
    Ok(())
}

/// Refuses what cannot be measured.
fn check(args: &Args) -> Result<(), String> {
    if args.clients == 0 || args.rounds == 0 || args.products == 0 || args.page_size == 0 {
        return Err("--clients, --rounds, --products and --page-size must be at least 1".into());
    }
    if args.page_size > cachex::MAX_BATCH {
        return Err(format!("--page-size: at most {}", cachex::MAX_BATCH));
    }
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        return Err("--seconds must be positive".into());
    }
    let share = |s: f64| (0.0..=1.0).contains(&s);
    if !(share(args.page_share)
        && share(args.write_share)
        && args.page_share + args.write_share <= 1.0)
    {
        return Err("--page-share and --write-share are shares: 0 to 1, 1 at most together".into());
    }
    if !(args.zipf >= 0.0 && args.zipf.is_finite()) {
        return Err("--zipf must not be negative".into());
    }
    Ok(())
}

async fn stats(addr: SocketAddr) -> Result<ServiceStats, ClientError> {
    let answer = Client::connect(addr).await?.get("/stats").await?;
    if answer.status != StatusCode::OK {
        return Err(format!("GET /stats: {} {}", answer.status, answer.text()).into());
    }
    answer.json()
}

/// Runs `args.clients` clients against `target` for `args.seconds`.
async fn run(args: &Args, target: &Target, round: usize) -> Result<Run, ClientError> {
    let zipf = Zipf::new(args.products as f64, args.zipf).map_err(|e| format!("--zipf: {e}"))?;
    let before = stats(target.addr).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let args = Arc::new(args.clone());
    let clients: Vec<_> = (0..args.clients as u64)
        .map(|number| {
            let (args, addr) = (Arc::clone(&args), target.addr);
            tokio::spawn(async move { client(&args, addr, zipf, number, deadline).await })
        })
        .collect();
    let mut latency = Histogram::new(3)?;
    let (mut requests, mut errors) = (0, 0);
    for client in clients {
        let (client_latency, client_errors) = client.await??;
        requests += client_latency.len() + client_errors;
        errors += client_errors;
        latency.add(&client_latency)?;
    }
    let elapsed = started.elapsed();
    let after = stats(target.addr).await?;
    let cache = match (before.cache, after.cache) {
        (Some(b), Some(a)) => Some(CacheCounters {
            hits: a.hits - b.hits,
            negative_hits: a.negative_hits - b.negative_hits,
            misses: a.misses - b.misses,
            loads: a.loads - b.loads,
            refreshes: a.refreshes - b.refreshes,
        }),
        _ => None,
    };
    Ok(Run {
        label: target.label.clone(),
        round,
        requests,
        errors,
        elapsed,
        latency,
        db_queries: after.db_queries - before.db_queries,
        cache,
    })
}

/// One client's requests until `deadline`: latencies of the answered
/// ones (in nanoseconds), and how many failed.
async fn client(
    args: &Args,
    addr: SocketAddr,
    zipf: Zipf<f64>,
    number: u64,
    deadline: Instant,
) -> Result<(Histogram<u64>, u64), ClientError> {
    let mut rng = StdRng::seed_from_u64(number);
    let mut connection = Client::connect(addr).await?;
    let mut latency = Histogram::new(3)?;
    let mut errors = 0;
    let mut writes = 0u64;
    while Instant::now() < deadline {
        let kind: f64 = rng.random();
        let mut id = || rng.sample(zipf) as u64;
        let asked = Instant::now();
        let answer = if kind < args.write_share {
            writes += 1;
            let id = id();
            let update = ProductUpdate {
                name: format!("product {id}, edit {number}.{writes}"),
                price_cents: 100 + (writes % 1_000) as i64,
            };
            connection
                .put_json(&format!("/products/{id}"), &update)
                .await
        } else if kind < args.write_share + args.page_share {
            let ids: Vec<String> = (0..args.page_size).map(|_| id().to_string()).collect();
            connection
                .get(&format!("/products?ids={}", ids.join(",")))
                .await
        } else {
            connection.get(&format!("/products/{}", id())).await
        };
        match answer {
            Ok(answer) if answer.status == StatusCode::OK => {
                latency.record(asked.elapsed().as_nanos().max(1) as u64)?;
            }
            Ok(_) => errors += 1,
            // The connection is gone: a new one for the next request.
            Err(_) => {
                errors += 1;
                connection = Client::connect(addr).await?;
            }
        }
    }
    Ok((latency, errors))
}

impl Run {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile(&self, q: f64) -> Duration {
        Duration::from_nanos(self.latency.value_at_quantile(q))
    }

    fn queries_per_request(&self) -> f64 {
        self.db_queries as f64 / self.requests.max(1) as f64
    }

    fn json(&self, args: &Args) -> String {
        serde_json::json!({
            "run": self.label,
            "clients": args.clients,
            "products": args.products,
            "zipf": args.zipf,
            "page_share": args.page_share,
            "page_size": args.page_size,
            "write_share": args.write_share,
            "db_latency_ms": args.db_latency_ms,
            "round": self.round,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": self.elapsed.as_secs_f64(),
            "requests_per_second": self.rate(),
            "p50_us": self.quantile(0.5).as_secs_f64() * 1e6,
            "p99_us": self.quantile(0.99).as_secs_f64() * 1e6,
            "db_queries": self.db_queries,
            "db_queries_per_request": self.queries_per_request(),
            "hit_ratio": self.cache.as_ref().map(CacheCounters::hit_ratio),
        })
        .to_string()
    }
}

fn header() {
    println!(
        "{:<10}{:>6}{:>11}{:>10}{:>11}{:>11}{:>12}{:>13}{:>11}{:>8}",
        "run",
        "round",
        "requests",
        "req/s",
        "p50",
        "p99",
        "db queries",
        "queries/req",
        "hit ratio",
        "errors"
    );
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hit_ratio = match &self.cache {
            Some(cache) => format!("{:.1}%", cache.hit_ratio() * 100.0),
            None => "-".into(),
        };
        write!(
            f,
            "{:<10}{:>6}{:>11}{:>10.0}{:>11}{:>11}{:>12}{:>13.4}{:>11}{:>8}",
            self.label,
            self.round,
            self.requests,
            self.rate(),
            Latency(self.quantile(0.5)),
            Latency(self.quantile(0.99)),
            self.db_queries,
            self.queries_per_request(),
            hit_ratio,
            self.errors
        )
    }
}

/// The first service against the second: medians over the rounds.
fn compare(runs: &[Run], targets: &[Target]) {
    let median = |label: &str, value: &dyn Fn(&Run) -> f64| {
        let mut values: Vec<f64> = runs
            .iter()
            .filter(|r| r.label == label)
            .map(value)
            .collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (a, b) = (&targets[0].label, &targets[1].label);
    let ratio = |value: &dyn Fn(&Run) -> f64| median(a, value) / median(b, value);
    println!(
        "\n{a} / {b} (median of {} rounds): {:.2}x requests per second, p50 {:.2}x, p99 {:.2}x, \
         database queries per request {:.4}x",
        runs.len() / 2,
        ratio(&Run::rate),
        ratio(&|r| r.quantile(0.5).as_secs_f64()),
        ratio(&|r| r.quantile(0.99).as_secs_f64()),
        ratio(&Run::queries_per_request),
    );
}

/// A latency in the unit that suits it.
struct Latency(Duration);

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.as_secs_f64() * 1e6;
        let text = if micros < 1e3 {
            format!("{micros:.0} µs")
        } else {
            format!("{:.2} ms", micros / 1e3)
        };
        f.pad(&text)
    }
}
