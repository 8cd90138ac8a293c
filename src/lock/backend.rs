//! What a lock needs of Redis, without the value type and codec of the
//! store it came from: the store's own connection (so a lock costs no
//! connection of its own), a subscriber connection to the same server,
//! and the store's key prefix and timeout.

use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::PubSub;
use redis::{Cmd, RedisResult, Value};

/// Redis as a lock sees it. Implemented by the Redis store
/// (`store/redis/lock_backend.rs`).
pub(crate) trait Backend: Send + Sync + 'static {
    /// `"<prefix>:"`, or empty for a store without a prefix.
    fn prefix(&self) -> &str;

    /// A `PSUBSCRIBE` pattern matching every channel that starts with
    /// `start` (its glob characters escaped).
    fn pattern(&self, start: &str) -> String;

    /// The store's timeout for one call.
    fn timeout(&self) -> Duration;

    /// Sends one command on the store's connection (no timeout of its
    /// own: the lock bounds each call).
    fn query<'a>(&'a self, cmd: &'a Cmd) -> BoxFuture<'a, RedisResult<Value>>;

    /// Opens a connection in subscriber mode to the server the store talks
    /// to; `attempt` rotates through a cluster's nodes.
    fn subscriber(&self, attempt: usize) -> BoxFuture<'_, RedisResult<PubSub>>;
}
