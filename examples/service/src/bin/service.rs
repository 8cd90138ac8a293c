//! The product service: axum over SQLite, reading through cachex.
//!
//! ```sh
//! cargo run --release -p cachex-service --bin service -- --help
//! curl -s localhost:8080/products/42
//! curl -s 'localhost:8080/products?ids=1,2,300000'
//! curl -s -X PUT localhost:8080/products/42 -H 'content-type: application/json' \
//!      -d '{"name":"renamed","price_cents":999}'
//! curl -s localhost:8080/metrics
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cachex_service::app::{build_cache, App, CacheConfig};
use cachex_service::db::Database;
use cachex_service::process::LISTENING;
use clap::Parser;

/// Serve products from SQLite through a cachex cache.
#[derive(Parser, Debug)]
struct Args {
    /// Where to listen (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// The SQLite file. Created and seeded if it has no products, used as
    /// it is otherwise. Default: a new file in a temporary directory,
    /// removed on exit.
    #[arg(long)]
    db: Option<PathBuf>,
    /// Products to seed a new database with (ids 1 to this).
    #[arg(long, default_value_t = 100_000)]
    products: u64,
    /// Database connections in the pool.
    #[arg(long, default_value_t = 4)]
    connections: u32,
    /// Added to every query while it holds its connection, in
    /// milliseconds, to stand for a database across a network.
    #[arg(long, default_value_t = 0.0)]
    db_latency_ms: f64,
    /// Serve straight from the database, without a cache (the baseline).
    #[arg(long)]
    no_cache: bool,
    /// Entries the cache keeps in memory.
    #[arg(long, default_value_t = 20_000)]
    capacity: u64,
    /// Seconds a product stays cached.
    #[arg(long, default_value_t = 60.0)]
    ttl: f64,
    /// Put the cache on the hybrid store: memory in front of this Redis
    /// (e.g. redis://127.0.0.1:6379; keys under `cachex-service`, cleared
    /// at start).
    #[arg(long, conflicts_with = "no_cache")]
    redis: Option<String>,
}

#[tokio::main]
async fn main() {
    if let Err(problem) = serve(Args::parse()).await {
        eprintln!("error: {problem}");
        std::process::exit(1);
    }
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if !(args.db_latency_ms >= 0.0 && args.db_latency_ms.is_finite()) {
        return Err("--db-latency-ms must be a number of milliseconds, 0 or more".into());
    }
    if !(args.ttl > 0.0 && args.ttl.is_finite()) || args.capacity == 0 {
        return Err("--ttl must be positive seconds and --capacity at least 1".into());
    }
    // Held to the end: the directory goes when the service stops.
    let temp_dir = match &args.db {
        Some(_) => None,
        None => Some(tempfile::tempdir()?),
    };
    let path = match (&args.db, &temp_dir) {
        (Some(path), _) => path.clone(),
        (None, Some(dir)) => dir.path().join("products.db"),
        (None, None) => unreachable!("a temp dir without --db"),
    };
    let latency = Duration::from_secs_f64(args.db_latency_ms / 1e3);
    let (products, connections) = (args.products, args.connections);
    let db = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || Database::open(&path, products, connections, latency))
    }
    .await?
    .map_err(|e| format!("database {}: {e}", path.display()))?;
    let cache = if args.no_cache {
        None
    } else {
        let config = CacheConfig {
            capacity: args.capacity,
            ttl: Duration::from_secs_f64(args.ttl),
            redis: args.redis.clone(),
        };
        Some(
            build_cache(&config)
                .await
                .map_err(|e| format!("cache: {e}"))?,
        )
    };
    let app = App::new(db, cache);
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    eprintln!(
        "database {} ({} products, {} connections, +{} ms a query); cache: {}",
        path.display(),
        args.products,
        args.connections,
        args.db_latency_ms,
        match (&args.no_cache, &args.redis) {
            (true, _) => "none".to_string(),
            (false, None) => format!("memory, {} entries", args.capacity),
            (false, Some(url)) =>
                format!("hybrid, {} entries in memory, Redis {url}", args.capacity),
        }
    );
    // The one line on stdout: what a parent process waits for.
    println!("{LISTENING}{}", listener.local_addr()?);
    axum::serve(listener, app.clone().router())
        .with_graceful_shutdown(stopped())
        .await?;
    app.close().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stopped() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = interrupt.await;
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
