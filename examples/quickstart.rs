//! The README's quick start: the synchronous engine, then the async handle.
//!
//! `cargo run --example quickstart`

use std::time::Duration;

use cachex::{Cache, MemoryCache};

#[tokio::main]
async fn main() -> Result<(), cachex::Error> {
    // The synchronous engine: bounded, W-TinyLFU, TTL with jitter.
    let engine: MemoryCache<String, u64> = MemoryCache::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_secs(300))
        .build();
    engine.insert("answer".to_string(), 42);
    assert_eq!(engine.get("answer"), Some(42)); // lookup by &str: no allocation

    // The async handle: the loader runs once per key however many callers wait.
    let cache: Cache<String> = Cache::builder()
        .capacity(10_000)
        .default_ttl(Duration::from_secs(300))
        .stale_while_revalidate(Duration::from_secs(30))
        .build();
    let name = cache
        .get_or_load("user:7", || async {
            Ok::<_, std::io::Error>("alice".to_string())
        })
        .await?;
    assert_eq!(name, "alice");
    println!("engine: {:?}", engine.stats());
    println!("cache:  {:?}", cache.stats());
    cache.close().await;
    Ok(())
}
