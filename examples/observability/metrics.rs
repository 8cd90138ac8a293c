//! Prometheus metrics for a cache under load, served at `/metrics`.
//!
//! ```sh
//! cargo run --release -p cachex-examples-observability --example metrics -- 127.0.0.1:9898 30
//! curl -s http://127.0.0.1:9898/metrics | grep -v '^#'
//! ```
//!
//! Arguments: the address to listen on (default `127.0.0.1:9898`) and how
//! many seconds to run (default 30). Eight clients read Zipf-ish keys
//! through `get_or_load` over a simulated database of 5 ms queries, one
//! key in fifty missing; the last scrape is printed on exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use cachex::prometheus_client::encoding::text::encode;
use cachex::prometheus_client::registry::Registry;
use cachex::{Cache, CacheMetrics};
use rand::Rng;

/// What the OpenMetrics text format is served as.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut text, registry);
    text
}

/// The "database": 5 ms a query; every fiftieth id does not exist.
async fn query(id: u64) -> Result<Option<String>, std::io::Error> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok((!id.is_multiple_of(50)).then(|| format!("user {id}")))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:9898").parse()?;
    let seconds: u64 = args.next().as_deref().unwrap_or("30").parse()?;

    let users: Cache<String> = Cache::builder()
        .name("users")
        .capacity(2_000)
        .default_ttl(Duration::from_secs(20))
        .stale_while_revalidate(Duration::from_secs(5))
        .build();

    // The registry is the application's; the cache's metrics join it.
    let mut registry = Registry::default();
    let metrics = CacheMetrics::new();
    metrics.register(&mut registry);
    if !metrics.add(&users) {
        return Err("a cache named users is already registered".into());
    }
    let registry = Arc::new(registry);

    let app = Router::new().route(
        "/metrics",
        get({
            let registry = Arc::clone(&registry);
            move || async move { ([(CONTENT_TYPE, OPENMETRICS)], scrape(&registry)) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "serving http://{}/metrics for {seconds} s",
        listener.local_addr()?
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // The load: 8 clients, keys skewed towards small ids (10,000 in all).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let users = users.clone();
            tokio::spawn(async move {
                while tokio::time::Instant::now() < deadline {
                    let id = {
                        let mut rng = rand::rng();
                        let u: f64 = rng.random();
                        (10_000f64.powf(u)) as u64
                    };
                    let key = format!("user:{id}");
                    let _ = users.get_or_load_optional(&key, move || query(id)).await;
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            })
        })
        .collect();
    for client in clients {
        client.await?;
    }
    server.abort();

    println!("{}", scrape(&registry));
    let stats = users.stats();
    println!(
        "hit ratio {:.3}, loads {}, mean load time {:?}",
        stats.hit_ratio(),
        stats.loads,
        stats.mean_load_time().unwrap_or_default()
    );
    Ok(())
}
