//! # cachex
//!
//! A caching library for tokio services: one interface over an in-memory
//! engine, Redis, and a two-tier hybrid.
//!
//! The foundation is [`MemoryCache`], a concurrent, bounded, synchronous
//! cache with adaptive W-TinyLFU admission and eviction, per-entry
//! time-to-live and an eviction listener.
//!
//! ```
//! use cachex::MemoryCache;
//!
//! let cache = MemoryCache::new(1_000);
//! cache.insert(1u64, "one");
//! assert_eq!(cache.get(&1), Some("one"));
//! ```
//!
//! Services program against [`Cache`], the async handle: string keys, any
//! [`Store`] behind it ([`MemoryStore`] over the engine by default), and
//! [`get_or_load`](Cache::get_or_load), which protects the database behind
//! the cache:
//!
//! - **singleflight**: one loader call per key at a time, however many
//!   callers miss at once; each caller may time out on its own, and if the
//!   one running the loader goes away, a waiting caller takes over;
//! - **negative caching**: [`get_or_load_optional`](Cache::get_or_load_optional)
//!   caches "not found" for a short TTL;
//! - **jitter**: the TTLs the cache picks are spread so that entries loaded
//!   together do not expire together;
//! - **background refresh**: stale-while-revalidate, and XFetch's
//!   probabilistic early refresh.
//!
//! Entries written through [`Cache::tagged`] carry tags, and
//! [`Cache::invalidate_tag`] drops every entry of a tag at once, in every
//! process sharing the store (see [`tag`]).
//!
//! ```
//! use std::time::Duration;
//! use cachex::Cache;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let cache: Cache<String> = Cache::builder()
//!     .default_ttl(Duration::from_secs(300))
//!     .stale_while_revalidate(Duration::from_secs(30))
//!     .build();
//! let name = cache
//!     .get_or_load("user:7", || async { Ok::<_, std::io::Error>("alice".to_string()) })
//!     .await?;
//! assert_eq!(name, "alice");
//! # Ok::<(), cachex::Error>(())
//! # }).unwrap();
//! ```
//!
//! Code that takes its cache through [`AsyncCache`] (by generics, or as
//! `Arc<dyn AsyncCache<V>>`) can be handed a [`MockCache`] in tests.
//!
//! # Redis
//!
//! `RedisStore` (in [`store::redis`], feature `redis`) keeps the entries in
//! Redis (standalone, Cluster or Sentinel) under `<prefix>:<key>`, encoded by
//! a [`codec`] behind a small header; put it under a [`Cache`] with
//! [`CacheBuilder::store`]. Every call is bounded by a timeout, the
//! connection reconnects by itself, and undecodable values are reported
//! with their key rather than misread.
//!
//! # Hybrid
//!
//! `HybridStore` (in [`store::hybrid`], feature `redis`) puts an in-memory
//! L1 in front of a `RedisStore`: L1 hits at memory speed, one L2 read per
//! key per process on a miss, promoted with the remaining L2 TTL. Writes
//! publish an invalidation on a pub/sub channel so that every other
//! process drops the key from its L1; a lost subscription clears L1. When
//! Redis is down a circuit breaker keeps the service on L1 and the loader.
//!
//! # Across processes
//!
//! A [`lock::DistributedLock`] (feature `redis`) is a Redis lock with
//! fencing tokens, lease renewal and waiters woken by the release rather
//! than polling. Given to a cache with
//! [`CacheBuilder::distributed_singleflight`], it makes `get_or_load` load
//! a key once across every process sharing the store; with
//! [`CacheBuilder::refresh_ahead`], keys read through
//! [`Cache::get_or_load_refreshed`] are reloaded in the background, by one
//! process per key and interval.
//!
//! # Cargo features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `redis` | yes | the Redis and hybrid stores (pulls in the `redis` crate and `msgpack`) |
//! | `msgpack` | yes (with `redis`) | [`codec::MessagePack`], through `rmp-serde` |
//! | `json` | no | `codec::Json`, through `serde_json` |
//! | `postcard` | no | `codec::Postcard`, the most compact encoding |
//! | `compression` | no | LZ4 (`lz4_flex`, pure Rust) for values above a threshold |
//! | `tls` | no | `rediss://` and TLS to Cluster and Sentinel (rustls) |
//! | `prometheus` | no | `CacheMetrics`, Prometheus metrics (see below) |
//! | `tracing` | no | spans per operation and a periodic stats log line |
//!
//! In-memory users can turn everything off (`default-features = false`):
//! the engine and the async cache need none of it.
//!
//! # Observability
//!
//! [`Cache::stats`] is always there (striped counters, plus the store's
//! per-tier [`StoreStats`]). Two cargo features, both **off by default** so
//! that an in-memory-only user compiles and pays for neither, add the rest
//! (see [`observe`]):
//!
//! - `prometheus`: `CacheMetrics`, a `prometheus-client` collector that
//!   reads the stats at scrape time, on a registry you own (take its types
//!   from the re-export `cachex::prometheus_client`, so that the versions
//!   match);
//! - `tracing`: a `DEBUG` span per operation (target `cachex`), with the
//!   key shown per [`KeyMode`] (default: not at all), and a periodic stats
//!   log line. Without the feature the span code is compiled out.
#![warn(missing_docs)]

mod cache;
pub mod codec;
pub mod engine;
mod error;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod loading;
#[cfg(feature = "redis")]
pub mod lock;
mod mock;
pub mod observe;
mod policy;
pub mod store;
pub mod tag;
mod ttl;

pub use cache::{
    AsyncCache, AsyncCacheExt, BoxFuture, BoxLoader, BulkLoader, Cache, CacheBuilder, Stats,
    Tagged, DEFAULT_FAIL_SAFE_THROTTLE, DEFAULT_JITTER, DEFAULT_MAX_REFRESHING_KEYS,
    DEFAULT_NEGATIVE_TTL, DEFAULT_TTL, MAX_BATCH, MAX_KEY_LEN,
};
pub use error::{BoxError, Error, Result, StoreOp};
pub use mock::MockCache;
#[cfg(feature = "prometheus")]
pub use observe::CacheMetrics;
pub use observe::{KeyMode, StoreStats, Tier, TierStats};
/// The `prometheus-client` crate whose `Registry` [`CacheMetrics`]
/// registers on (feature `prometheus`). Take its types from here rather
/// than from a dependency of your own: two versions of the crate have
/// types that do not match.
#[cfg(feature = "prometheus")]
pub use prometheus_client;
pub use store::{Envelope, MemoryStore, Store};

pub use engine::{
    CacheStats, Clock, DefaultHashBuilder, MemoryCache, MemoryCacheBuilder, RemovalCause,
};
pub use tag::{Tags, MAX_TAGS, MAX_TAG_LEN};
pub use ttl::Ttl;

/// Compiles every Rust block of the README as a doc test, so that the
/// README cannot drift from the API. Its blocks use the `redis` and
/// `prometheus` features; `./scripts/test` runs with every feature on.
#[cfg(all(doctest, feature = "redis", feature = "prometheus"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
