//! Configuring and connecting a [`RedisStore`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::connection::{Addr, Connection, Target, Tls};
use super::errors::ConfigError;
use super::stats::Counters;
use super::{Inner, RedisStore};
use crate::codec::{Codec, Framing, MessagePack};
use crate::{Error, Result, StoreOp};

/// The default timeout of every Redis call: 1 second.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// The default limit on a stored value: 64 MiB encoded (Redis's own limit is
/// 512 MB, far past what a cache should move in one call).
pub const DEFAULT_MAX_VALUE_SIZE: usize = 64 << 20;

/// What `get` does with a value it cannot decode.
///
/// # Undecodable bytes and `get_or_load`
///
/// The one rule, for every store: when
/// [`Cache::get_or_load`](crate::Cache::get_or_load) (or
/// `get_or_load_optional`) reads bytes under its key that the store cannot
/// decode ([`Error::Codec`](crate::Error::Codec): another program's data, a
/// value of another codec or format version, or damage), the load still
/// runs and its value is returned to the callers, but it is **not written**
/// over those bytes: under [`OnCorrupt::Error`] they may belong to another
/// program, and the cache must not destroy them. The read is counted in
/// [`Stats::store_errors`](crate::Stats::store_errors), each value not
/// written in [`Stats::undecodable_kept`](crate::Stats::undecodable_kept).
/// Every such call loads again; the bytes stay until their owner changes
/// them or they expire. To have the cache replace them instead, use
/// [`OnCorrupt::MissAndDelete`]: the bytes are deleted on the read, which
/// is then a plain miss, and the loaded value is stored as usual.
/// [`Cache::set`](crate::Cache::set) is an explicit write and replaces them
/// in both cases.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnCorrupt {
    /// Answer [`Error::Codec`](crate::Error::Codec) naming the key, and
    /// leave the value where it is (another program may own it): a
    /// `get_or_load` returns its loader's value without storing it (see
    /// [above](OnCorrupt#undecodable-bytes-and-get_or_load)). The default.
    #[default]
    Error,
    /// Answer a miss and delete the value, so that the next load replaces
    /// it. For keyspaces only cachex writes to, where an undecodable value
    /// can only be a leftover of an old format or codec.
    MissAndDelete,
}

/// Builds a [`RedisStore`]: where Redis is, the key prefix, the codec, and
/// the limits. Start from [`RedisStore::builder`].
///
/// ```no_run
/// use std::time::Duration;
/// use cachex::store::redis::{OnCorrupt, RedisStore};
///
/// # async fn f() -> cachex::Result<()> {
/// let store: RedisStore<String> = RedisStore::builder()
///     .url("redis://127.0.0.1:6379/0")
///     .prefix("myapp")
///     .timeout(Duration::from_millis(250))
///     .max_value_size(1 << 20)
///     .on_corrupt(OnCorrupt::MissAndDelete)
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
pub struct RedisStoreBuilder<V, C = MessagePack> {
    addr: Option<Addr>,
    tls: Tls,
    prefix: Option<String>,
    codec: C,
    compress_above: Option<usize>,
    timeout: Duration,
    max_value_size: usize,
    on_corrupt: OnCorrupt,
    allow_flushdb: bool,
    read_tags_in_script: bool,
    _values: PhantomData<fn() -> V>,
}

impl<V> Default for RedisStoreBuilder<V> {
    fn default() -> Self {
        RedisStoreBuilder {
            addr: None,
            tls: Tls::default(),
            prefix: None,
            codec: MessagePack,
            compress_above: None,
            timeout: DEFAULT_TIMEOUT,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            on_corrupt: OnCorrupt::Error,
            allow_flushdb: false,
            read_tags_in_script: false,
            _values: PhantomData,
        }
    }
}

impl<V, C: Codec> RedisStoreBuilder<V, C> {
    /// One Redis server: `redis://[user:password@]host[:port][/db]`,
    /// `rediss://...` for TLS (feature `tls`), or `redis+unix:///path`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.addr = Some(Addr::Url(url.into()));
        self
    }

    /// A Redis Cluster, from the URLs of some of its nodes (the others are
    /// discovered). `clear` visits every master.
    pub fn cluster<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.addr = Some(Addr::Cluster(nodes.into_iter().map(Into::into).collect()));
        self
    }

    /// The master that Redis Sentinels watch under `service`, from the
    /// Sentinels' URLs. After a connection failure the Sentinels are asked
    /// again, so the store follows a failover. The master is reached without
    /// credentials and on database 0; use
    /// [`redis_connection_info`](Self::redis_connection_info) for anything
    /// more elaborate.
    pub fn sentinel<I, S>(mut self, sentinels: I, service: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.addr = Some(Addr::Sentinel {
            nodes: sentinels.into_iter().map(Into::into).collect(),
            service: service.into(),
        });
        self
    }

    /// Escape hatch: one server described with the `redis` crate's own
    /// configuration (1.x), for what URLs cannot say. This is the one place
    /// where the `redis` crate's types appear in cachex's API: code using it
    /// must move with cachex when cachex moves to a new `redis` major version.
    pub fn redis_connection_info(mut self, info: redis::ConnectionInfo) -> Self {
        self.addr = Some(Addr::Info(Box::new(info)));
        self
    }

    /// Trusts the certificate authorities in `pem` (one or more
    /// `-----BEGIN CERTIFICATE-----` blocks) for `rediss://` connections,
    /// instead of the bundled web roots: for a server whose certificate
    /// your own CA signed. The server's certificate must still name the
    /// host of the URL (DNS name or IP address). Applies to
    /// [`url`](Self::url), [`cluster`](Self::cluster) (every node) and
    /// [`redis_connection_info`](Self::redis_connection_info) with TLS, and
    /// to a hybrid store's subscriber connection; not to Sentinel.
    /// [`build`](Self::build) refuses a PEM without a certificate, and a
    /// target that is not TLS. A server the CA did not sign, or whose
    /// certificate names another host, is refused at once with an error
    /// that says so.
    ///
    /// ```no_run
    /// # async fn f() -> cachex::Result<()> {
    /// let ca = std::fs::read("ca.crt").expect("the CA certificate");
    /// let store: cachex::store::RedisStore<String> = cachex::store::RedisStore::builder()
    ///     .url("rediss://redis.internal:6380")
    ///     .tls_ca_pem(ca)
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.ca_pem = Some(pem.into());
        self
    }

    /// Stores keys as `<prefix>:<key>`. Stores with different prefixes never
    /// see, delete or [`clear`](crate::Store::clear) each other's keys; that
    /// is why a prefix may not contain `:` (`a` would otherwise clear `a:b`'s
    /// keys). Default: none (keys are stored as they are, and `clear` is
    /// refused unless [`allow_flushdb`](Self::allow_flushdb)).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// The codec values are stored with. Default: [`MessagePack`].
    pub fn codec<C2: Codec>(self, codec: C2) -> RedisStoreBuilder<V, C2> {
        RedisStoreBuilder {
            addr: self.addr,
            tls: self.tls,
            prefix: self.prefix,
            codec,
            compress_above: self.compress_above,
            timeout: self.timeout,
            max_value_size: self.max_value_size,
            on_corrupt: self.on_corrupt,
            allow_flushdb: self.allow_flushdb,
            read_tags_in_script: self.read_tags_in_script,
            _values: PhantomData,
        }
    }

    /// Compresses (LZ4) values whose encoding is longer than `bytes`, when
    /// that makes them smaller. Default: no compression. Readers decompress
    /// whatever the header says, whatever their own threshold.
    #[cfg(feature = "compression")]
    pub fn compress_above(mut self, bytes: usize) -> Self {
        self.compress_above = Some(bytes);
        self
    }

    /// The longest any call may take, connecting included; past it the call
    /// fails with [`Error::Store`](crate::Error::Store), its source a
    /// [`TimedOut`](super::TimedOut). `clear` applies it to each of its
    /// round trips. Default: [`DEFAULT_TIMEOUT`], 1 second.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest value stored, in bytes after encoding and compression.
    /// Larger values are refused before anything is sent, with an
    /// [`Error::Store`](crate::Error::Store) whose source is
    /// [`FrameError::TooLarge`](crate::codec::FrameError::TooLarge).
    /// Also bounds how far a compressed value may inflate on reading.
    /// Default: [`DEFAULT_MAX_VALUE_SIZE`], 64 MiB.
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes;
        self
    }

    /// What `get` does with a value it cannot decode. Default:
    /// [`OnCorrupt::Error`].
    pub fn on_corrupt(mut self, policy: OnCorrupt) -> Self {
        self.on_corrupt = policy;
        self
    }

    /// Lets `clear` on a store without a prefix empty the whole database
    /// with `FLUSHDB` (on a cluster, on every master), other programs' keys
    /// included. Default: refused.
    pub fn allow_flushdb(mut self, allow: bool) -> Self {
        self.allow_flushdb = allow;
        self
    }

    /// Reads every entry with a small Lua script (`EVALSHA`) instead of a
    /// `GET`: the script also reads the versions of the tags the entry was
    /// written with (see [`tag`](crate::tag)), so that a read of a tagged
    /// entry takes one round trip instead of two (`GET`, then `MGET` of its
    /// tags). Untagged entries cost the script's overhead on the server
    /// (`cachex-bench tags` measures both). Worth it when most reads are of
    /// tagged entries. Ignored on a Cluster, whose scripts may not read
    /// keys outside the entry's hash slot. Default: off.
    pub fn read_tags_in_script(mut self, on: bool) -> Self {
        self.read_tags_in_script = on;
        self
    }

    /// Checks the configuration, connects and sends one `PING`; fails with
    /// [`Error::Store`](crate::Error::Store) (operation
    /// [`Connect`](crate::StoreOp::Connect)) when the configuration is bad or
    /// Redis cannot be reached within the timeout. The error's source says
    /// what happened, as soon as it happened: a refused connection, an
    /// unknown host, a wrong or missing password, a failed TLS handshake
    /// ([`TlsFailed`](super::TlsFailed)), or the timeout.
    pub async fn build(self) -> Result<RedisStore<V, C>> {
        let refuse = |why: ConfigError| Error::store(StoreOp::Connect, None, why);
        let addr = self
            .addr
            .ok_or_else(|| ConfigError("no Redis address: call url, cluster or sentinel".into()))
            .map_err(refuse)?;
        let target = Target {
            addr,
            tls: self.tls,
        };
        target.check().map_err(refuse)?;
        if let Some(prefix) = &self.prefix {
            check_prefix(prefix).map_err(refuse)?;
        }
        let timeout = self.timeout;
        // Connect, then PING: a server that wants a password accepts the
        // connection and refuses only the first command, which would
        // otherwise be a user's first `get`, far from the misconfiguration.
        let open = async {
            let connection = Connection::open(target.clone(), timeout).await?;
            // A refusal comes back as a value, not an `Err`.
            connection
                .query(&redis::cmd("PING"))
                .await?
                .extract_error()?;
            Ok::<_, redis::RedisError>(connection)
        };
        let connection = match tokio::time::timeout(timeout, open).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => {
                #[cfg(feature = "tls")]
                if let Some(tls) = super::TlsFailed::from_redis(&e) {
                    return Err(Error::store(StoreOp::Connect, None, tls));
                }
                return Err(Error::store(StoreOp::Connect, None, e));
            }
            Err(_) => {
                return Err(Error::store(
                    StoreOp::Connect,
                    None,
                    super::TimedOut { after: timeout },
                ))
            }
        };
        // Decided once: a Cluster's scripts may not read the tag keys (see
        // `tags.rs`).
        let read_tags_in_script = self.read_tags_in_script && connection.cluster().is_none();
        Ok(RedisStore {
            inner: Arc::new(Inner {
                connection,
                target,
                key_prefix: self.prefix.map(|p| format!("{p}:")),
                framing: Framing::new(self.codec, self.compress_above, self.max_value_size),
                timeout,
                on_corrupt: self.on_corrupt,
                allow_flushdb: self.allow_flushdb,
                read_tags_in_script,
                counters: Counters::default(),
            }),
            _values: PhantomData,
        })
    }
}

fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
    if prefix.is_empty() {
        return Err(ConfigError(
            "the key prefix is empty; leave it unset for no prefix".into(),
        ));
    }
    if prefix.contains(':') {
        return Err(ConfigError(format!(
            "the key prefix `{prefix}` contains `:`; keys are stored as `<prefix>:<key>`, so a \
             prefix with `:` could overlap another store's keys"
        )));
    }
    Ok(())
}

impl<V, C> fmt::Debug for RedisStoreBuilder<V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("codec", &std::any::type_name::<C>())
            .field("compress_above", &self.compress_above)
            .field("timeout", &self.timeout)
            .field("max_value_size", &self.max_value_size)
            .field("on_corrupt", &self.on_corrupt)
            .field("allow_flushdb", &self.allow_flushdb)
            .field("read_tags_in_script", &self.read_tags_in_script)
            .finish_non_exhaustive()
    }
}
