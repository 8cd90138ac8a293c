//! Helpers shared by the Redis tests: a store on a real server, and a raw
//! client to look behind the store's back.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::HashMap;
use std::error::Error as _;

use cachex::store::redis::RedisStoreBuilder;
use cachex::store::RedisStore;
use cachex::Error;
#[allow(unused_imports)]
pub use cachex_testkit::{RedisCluster, RedisServer};
use redis::aio::MultiplexedConnection;

/// A store builder pointed at `server`, with `prefix`.
pub fn builder<V>(server: &RedisServer, prefix: &str) -> RedisStoreBuilder<V> {
    RedisStore::builder().url(server.url()).prefix(prefix)
}

/// A store on `server` under `prefix`, with the defaults.
pub async fn store<V>(server: &RedisServer, prefix: &str) -> RedisStore<V> {
    builder(server, prefix).build().await.expect("connect")
}

/// A plain `redis` connection to `server`.
pub async fn raw(server: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Sends `args` as one command on `conn`.
pub async fn raw_cmd<T: redis::FromRedisValue>(
    conn: &mut MultiplexedConnection,
    args: &[&[u8]],
) -> T {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(conn).await.unwrap()
}

/// The error's source, as `T`.
pub fn source<T: std::error::Error + 'static>(err: &Error) -> &T {
    err.source()
        .and_then(|s| s.downcast_ref::<T>())
        .unwrap_or_else(|| {
            panic!(
                "source of `{err}` is not a {}: {:?}",
                std::any::type_name::<T>(),
                err.source()
            )
        })
}

/// Calls of each command the server has seen, from `INFO commandstats`.
pub async fn command_calls(server: &RedisServer) -> HashMap<String, u64> {
    let mut conn = raw(server).await;
    let info: String = raw_cmd(&mut conn, &[b"INFO", b"commandstats"]).await;
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.strip_prefix("calls=")?.split(',').next()?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}

/// Commands sent between two snapshots, by name (zero counts left out).
pub fn sent(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> HashMap<String, u64> {
    after
        .iter()
        .map(|(name, calls)| (name.clone(), calls - before.get(name).unwrap_or(&0)))
        .filter(|(name, calls)| *calls > 0 && name != "info")
        .collect()
}

/// Expected command counts, by name.
pub fn counts(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}
