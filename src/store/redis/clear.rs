//! `clear`: removing this store's keys, and only them.
//!
//! With a prefix: `SCAN` for `<prefix>:*` and `UNLINK` what it finds, batch
//! by batch (`UNLINK` frees memory off Redis's main thread, and batches keep
//! every command short, so a large clear never blocks other clients). On a
//! cluster each master is scanned in turn, since a `SCAN` sees one node's
//! keys. Without a prefix: `FLUSHDB`, only if the user allowed it.

use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, SingleNodeRoutingInfo,
};
use redis::{Cmd, RedisResult, Value};

use super::errors::{ConfigError, UnexpectedReply};
use super::Inner;
use crate::{Error, Result, StoreOp};

/// Keys asked of each `SCAN` call (a hint to Redis, not a limit).
pub(crate) const SCAN_BATCH: usize = 1000;

impl<C> Inner<C> {
    pub(crate) async fn clear(&self) -> Result<()> {
        let Some(prefix) = &self.key_prefix else {
            if !self.allow_flushdb {
                return Err(Error::store(
                    StoreOp::Clear,
                    None,
                    ConfigError(
                        "refusing to clear a Redis store without a key prefix: that would \
                         empty the whole database (FLUSHDB). Set a prefix, or opt in with \
                         allow_flushdb(true)"
                            .into(),
                    ),
                ));
            }
            // The cluster client sends FLUSHDB to every master by itself.
            let flush = redis::cmd("FLUSHDB");
            self.call(StoreOp::Clear, None, self.connection.query(&flush))
                .await?;
            return Ok(());
        };
        let pattern = format!("{}*", escape_glob(prefix));
        match self.connection.cluster() {
            None => self.scan_and_unlink(&pattern, None).await,
            Some(cluster) => {
                for (host, port) in self.masters(cluster).await? {
                    let node = SingleNodeRoutingInfo::ByAddress { host, port };
                    self.scan_and_unlink(&pattern, Some(node)).await?;
                }
                Ok(())
            }
        }
    }

    /// Removes every key matching `pattern` on one server (`node`: which
    /// cluster master; `None`: the only server).
    async fn scan_and_unlink(
        &self,
        pattern: &str,
        node: Option<SingleNodeRoutingInfo>,
    ) -> Result<()> {
        let mut cursor = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH);
            let reply = self
                .call(StoreOp::Clear, None, self.routed(scan, node.clone()))
                .await?;
            let (next, keys) = parse_scan(reply)?;
            if !keys.is_empty() {
                let mut unlink = redis::cmd("UNLINK");
                unlink.arg(&keys);
                // On a cluster the client splits this by slot (keys of one
                // node may lie in many slots).
                self.call(StoreOp::Clear, None, self.connection.query(&unlink))
                    .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Sends `cmd` to `node` of the cluster, or to the only server.
    async fn routed(&self, cmd: Cmd, node: Option<SingleNodeRoutingInfo>) -> RedisResult<Value> {
        match (self.connection.cluster(), node) {
            (Some(mut cluster), Some(node)) => {
                cluster
                    .route_command(cmd, RoutingInfo::SingleNode(node))
                    .await
            }
            _ => self.connection.query(&cmd).await,
        }
    }

    /// The addresses of the cluster's masters, as the client knows them.
    async fn masters(&self, mut cluster: ClusterConnection) -> Result<Vec<(String, u16)>> {
        // With no response policy, the client answers a map from each
        // master's address to its reply.
        let routing =
            RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None::<ResponsePolicy>));
        let reply = self
            .call(
                StoreOp::Clear,
                None,
                cluster.route_command(redis::cmd("PING"), routing),
            )
            .await?;
        let unexpected =
            |what: &str| Error::store(StoreOp::Clear, None, UnexpectedReply(what.to_string()));
        let Value::Map(entries) = reply else {
            return Err(unexpected(&format!("PING to all masters gave {reply:?}")));
        };
        entries
            .into_iter()
            .map(|(address, _)| {
                let address = match address {
                    Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
                    Value::SimpleString(s) => Some(s),
                    _ => None,
                };
                address
                    .as_deref()
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(host, port)| Some((host.to_string(), port.parse().ok()?)))
                    .ok_or_else(|| unexpected(&format!("master address {address:?}")))
            })
            .collect()
    }
}

/// `(next cursor, keys)` from a `SCAN` reply.
fn parse_scan(reply: Value) -> Result<(u64, Vec<Vec<u8>>)> {
    let bad = |reply: &Value| {
        Error::store(
            StoreOp::Clear,
            None,
            UnexpectedReply(format!("SCAN gave {reply:?}")),
        )
    };
    let Value::Array(parts) = &reply else {
        return Err(bad(&reply));
    };
    let [Value::BulkString(cursor), Value::Array(keys)] = parts.as_slice() else {
        return Err(bad(&reply));
    };
    let cursor = std::str::from_utf8(cursor)
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad(&reply))?;
    let keys = keys
        .iter()
        .map(|key| match key {
            Value::BulkString(key) => Ok(key.clone()),
            _ => Err(bad(&reply)),
        })
        .collect::<Result<_>>()?;
    Ok((cursor, keys))
}

/// `text` with the characters special to Redis's glob patterns escaped, so
/// that a prefix matches only itself.
pub(crate) fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("app:"), "app:");
        assert_eq!(escape_glob("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
    }

    #[test]
    fn scan_replies_parse() {
        let reply = Value::Array(vec![
            Value::BulkString(b"17".to_vec()),
            Value::Array(vec![Value::BulkString(b"p:a".to_vec())]),
        ]);
        assert_eq!(parse_scan(reply).unwrap(), (17, vec![b"p:a".to_vec()]));
        assert!(parse_scan(Value::Nil).is_err());
    }
}
