//! Pub/sub for the two-tier store: publishing on the store's own
//! connection, and opening a subscriber connection to the same server.
//!
//! Crate-private: the hybrid store's invalidation messages are the only
//! user, and the message format is its business.

use std::time::Duration;

use redis::aio::PubSub;
use redis::{RedisResult, Value};

use super::errors::UnexpectedReply;
use super::RedisStore;
use crate::{Error, Result, StoreOp};

impl<V, C> RedisStore<V, C> {
    /// `PUBLISH channel payload` on the store's connection, under its
    /// timeout. Commands on one connection run in order, so a message
    /// published after a write reaches subscribers after the write is
    /// visible. Answers how many subscribers received it.
    pub(crate) async fn publish(&self, op: StoreOp, channel: &str, payload: &[u8]) -> Result<u64> {
        let inner = &*self.inner;
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        match inner.call(op, None, inner.connection.query(&cmd)).await? {
            Value::Int(n) => Ok(u64::try_from(n).unwrap_or(0)),
            other => Err(Error::store(
                op,
                None,
                UnexpectedReply(format!("{other:?}")),
            )),
        }
    }

    /// Opens a connection in subscriber mode to the server this store
    /// talks to. `attempt` rotates through a cluster's nodes, so that a
    /// dead node is not retried for ever (a regular `PUBLISH` on a cluster
    /// reaches the subscribers of every node). Sentinels are asked for the
    /// current master each time, which follows a failover.
    pub(crate) async fn subscriber(&self, attempt: usize) -> RedisResult<PubSub> {
        let client = self.inner.target.subscriber_client(attempt).await?;
        client.get_async_pubsub().await
    }

    /// The store's timeout for one call.
    pub(crate) fn call_timeout(&self) -> Duration {
        self.inner.timeout
    }
}
