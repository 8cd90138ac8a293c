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
#![warn(missing_docs)]

mod cache;
pub mod engine;
mod error;
mod loading;
mod mock;
mod policy;
pub mod store;
mod ttl;

pub use cache::{
    AsyncCache, AsyncCacheExt, BoxFuture, BoxLoader, Cache, CacheBuilder, Stats, DEFAULT_JITTER,
    DEFAULT_NEGATIVE_TTL, DEFAULT_TTL, MAX_KEY_LEN,
};
pub use error::{BoxError, Error, Result, StoreOp};
pub use mock::MockCache;
pub use store::{Envelope, MemoryStore, Store};

pub use engine::{
    CacheStats, Clock, DefaultHashBuilder, MemoryCache, MemoryCacheBuilder, RemovalCause,
};
pub use ttl::Ttl;
