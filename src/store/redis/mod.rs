//! [`RedisStore`]: entries kept in Redis (standalone, Cluster or Sentinel),
//! shared by every process that uses the same server and prefix.
//!
//! Module map: the store and its operations (this file), configuration and
//! connecting (`builder.rs`), the three kinds of connection (`connection.rs`),
//! `clear` by prefix (`clear.rs`), error counters (`stats.rs`) and the
//! store's own error types (`errors.rs`). Values are encoded by a
//! [`Codec`] behind a small header (see
//! [`codec`](crate::codec)).
//!
//! # How operations map to Redis
//!
//! | operation | Redis |
//! |---|---|
//! | `get` | `GET k` (the remaining TTL comes from the value's header); for a tagged entry, then `MGET` of its tag keys; with [`read_tags_in_script`](RedisStoreBuilder::read_tags_in_script), one `EVALSHA` instead of both |
//! | `set` with a TTL | `SET k v PX ms` (TTLs round up to whole milliseconds, at least 1) |
//! | `set` for ever | `SET k v` |
//! | `delete` | `UNLINK k` (answers whether the key existed) |
//! | `remaining_ttl` | `PTTL k` |
//! | `clear` | `SCAN` + `UNLINK` of `<prefix>:*`, by batches, on every master; `FLUSHDB` only if allowed |
//! | `get_many` | `MGET k1 k2 ...`, by chunks of 1,000 keys sent together: one round trip |
//! | `set_many` | a pipeline of `SET k v PX ms`: one round trip (Cluster: the `SET`s sent concurrently) |
//! | `delete_many` | `UNLINK k1 k2 ...`, by chunks of 1,000 keys sent together |
//! | `tag_stamps` | one `EVALSHA` per tag (`GET`, or `SET` of a fresh version), sent together |
//! | `invalidate_tags` | one `EVALSHA` per tag (`INCR`, or `SET` of a fresh version), sent together |
//!
//! where `k` is `<prefix>:<key>`, and a tag's key `<prefix>:__cachex_tag:{<tag>}`
//! (see `tags.rs` and [`tag`](crate::tag)).
//!
//! Every value carries its write time and TTL in its header (see
//! [`codec`](crate::codec)), which is how a plain `GET` or `MGET` answers
//! the remaining TTL that refresh decisions and the hybrid store's
//! promotion need. Values written by a cachex of format version 2 do not
//! carry it: reading one costs a `PTTL` more. A key's expiry changed behind
//! cachex's back (`EXPIRE`, `PEXPIRE`, `PERSIST`) still decides when Redis
//! drops the key, but readers keep seeing the TTL the value was written
//! with until it is written again.
//!
//! On a Cluster, the `redis` crate splits an `MGET` or `UNLINK` over
//! several slots into one command per slot, sends them to their masters
//! concurrently (each master's commands together on its connection) and
//! puts the answers back in order: a batch costs one round trip per master
//! holding its keys. An `MGET` skips keys holding another Redis type (they
//! read as absent) where a single `GET` reports them.
//!
//! # Failures
//!
//! - Every call is bounded by the [timeout](RedisStoreBuilder::timeout) and
//!   fails with [`Error::Store`] naming the operation and key; the source
//!   says why (a [`TimedOut`], or the `redis` crate's error).
//! - The connection reconnects by itself in the background: when Redis
//!   comes back, the same store works again.
//! - A value that does not decode (written by another program, codec or
//!   version, or damaged) is [`Error::Codec`] with the key (and
//!   `get_or_load` does not overwrite it: see [`OnCorrupt`]), or a miss
//!   (deleting it) under [`OnCorrupt::MissAndDelete`].
//! - A value over the [size limit](RedisStoreBuilder::max_value_size) is
//!   refused before anything is sent.
//!
//! Each kind is counted in [`RedisStore::stats`].

mod batch;
mod builder;
mod clear;
mod connection;
mod errors;
mod lock_backend;
mod pubsub;
mod stats;
mod tags;

use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use redis::{RedisResult, RedisWrite, ToRedisArgs, Value};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use builder::{OnCorrupt, RedisStoreBuilder, DEFAULT_MAX_VALUE_SIZE, DEFAULT_TIMEOUT};
pub use errors::{ConfigError, TimedOut, TlsFailed, UnexpectedReply, WrongType};
pub use stats::RedisStats;

use super::{Envelope, Found, Store, StoreFuture, Stored, Write};
use crate::codec::{Codec, EncodeError, Expiry, Framing, MessagePack};
use crate::observe::{StoreStats, Tier, TierStats};
use crate::tag::{TagStamps, Tags};
use crate::{BoxError, Error, Result, StoreOp};
use connection::{Connection, Resend};
pub(crate) use stats::is_connection_error;
use stats::{Counters, Event};

/// The longest TTL sent to Redis, in milliseconds (about 31,700 years):
/// Redis refuses expiry times that overflow when added to its clock, and
/// anything longer is "never" in practice.
const MAX_TTL_MS: u64 = 1_000_000_000_000_000;

/// A [`Store`] in Redis: entries of `V` encoded with codec `C`
/// ([`MessagePack`] by default) under `<prefix>:<key>`.
///
/// Use it under a [`Cache`](crate::Cache) (which adds singleflight loading,
/// negative caching and refresh), as the second tier of a two-tier store, or
/// on its own. Cheap to clone: clones share one connection.
///
/// ```no_run
/// use std::time::Duration;
/// use cachex::store::RedisStore;
/// use cachex::Cache;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// struct User { name: String }
///
/// # async fn f() -> cachex::Result<()> {
/// let store = RedisStore::builder()
///     .url("redis://127.0.0.1:6379")
///     .prefix("users")
///     .build()
///     .await?;
/// let cache: Cache<User> = Cache::builder()
///     .store(store.clone())
///     .default_ttl(Duration::from_secs(600))
///     .build();
/// let user = cache
///     .get_or_load("7", || async { Ok::<_, std::io::Error>(User { name: "alice".into() }) })
///     .await?;
/// assert_eq!(user.name, "alice");
/// println!("{:?}", store.stats());
/// # Ok(()) }
/// ```
pub struct RedisStore<V, C = MessagePack> {
    inner: Arc<Inner<C>>,
    _values: PhantomData<fn() -> V>,
}

/// Everything a store's clones share.
pub(crate) struct Inner<C> {
    connection: Connection,
    /// Where `connection` goes: a two-tier store opens its pub/sub
    /// subscription to the same place.
    target: connection::Target,
    /// `"<prefix>:"`, or `None` for bare keys.
    key_prefix: Option<String>,
    framing: Framing<C>,
    timeout: Duration,
    on_corrupt: OnCorrupt,
    allow_flushdb: bool,
    /// Reads by a script that returns tagged entries' tag versions with
    /// them (see `tags.rs`); never on a Cluster.
    read_tags_in_script: bool,
    counters: Counters,
}

impl<V> RedisStore<V> {
    /// A builder: give it where Redis is, then set what differs from the
    /// defaults (no prefix, [`MessagePack`], no compression, a 1-second
    /// timeout, a 64 MiB value limit, [`OnCorrupt::Error`]).
    pub fn builder() -> RedisStoreBuilder<V> {
        RedisStoreBuilder::default()
    }

    /// Connects to the server at `url` with the defaults and no prefix.
    pub async fn connect(url: impl Into<String>) -> Result<RedisStore<V>> {
        Self::builder().url(url).build().await
    }
}

impl<V, C> RedisStore<V, C> {
    /// A snapshot of the error counters.
    pub fn stats(&self) -> RedisStats {
        self.inner.counters.snapshot()
    }

    /// The key prefix, without its `:`.
    pub fn prefix(&self) -> Option<&str> {
        self.inner.key_prefix.as_deref().map(|p| &p[..p.len() - 1])
    }

    /// The key Redis stores `key` under: `<prefix>:<key>`.
    pub fn redis_key(&self, key: &str) -> String {
        self.inner.redis_key(key)
    }
}

impl<C> Inner<C> {
    /// `key` as a command argument: `<prefix>:<key>` written straight into
    /// the command, with no `String` in between.
    fn key_arg<'a>(&'a self, key: &'a str) -> KeyArg<'a> {
        KeyArg {
            prefix: self.key_prefix.as_deref().unwrap_or(""),
            key,
        }
    }

    fn redis_key(&self, key: &str) -> String {
        let arg = self.key_arg(key);
        [arg.prefix, arg.key].concat()
    }

    /// Runs one Redis call under the timeout, turning its failures into
    /// [`Error::Store`] and counting them.
    ///
    /// A combinator rather than an `async fn`: an `async fn` would hold
    /// `call` twice in its state (as its argument, then inside the timeout),
    /// and every operation's future, copied into the store's box on each
    /// call, would grow by a whole command's future.
    fn call<'a, T: 'a>(
        &'a self,
        op: StoreOp,
        key: Option<&'a str>,
        call: impl Future<Output = RedisResult<T>> + 'a,
    ) -> impl Future<Output = Result<T>> + 'a {
        tokio::time::timeout(self.timeout, call).map(move |outcome| match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                self.counters.redis_error(&e);
                Err(Error::store(op, key, e))
            }
            Err(_) => {
                self.counters.incr(Event::Timeout);
                Err(Error::store(
                    op,
                    key,
                    TimedOut {
                        after: self.timeout,
                    },
                ))
            }
        })
    }

    /// The entry in a `GET` reply: `None` for no key.
    ///
    /// Synchronous, with undecodable data handed back as
    /// [`Reply::Corrupt`] for [`corrupt`](Self::corrupt): that rare path
    /// sends a command of its own, and keeping its future out of the read's
    /// keeps every read's future small (see `docs/ARCHITECTURE.md`).
    fn decode_reply<V: DeserializeOwned>(&self, key: &str, reply: Option<Value>) -> Reply<V>
    where
        C: Codec,
    {
        let bytes = match reply {
            Some(Value::Nil) => return Reply::Entry(None),
            Some(Value::BulkString(bytes)) => bytes,
            Some(Value::ServerError(e)) if e.code() == "WRONGTYPE" => {
                return Reply::Corrupt(WrongType.into())
            }
            other => return Reply::Failed(unexpected(StoreOp::Get, key, &other)),
        };
        match self.framing.decode::<V>(&bytes) {
            Ok(entry) => Reply::Entry(Some(entry)),
            Err(why) => Reply::Corrupt(why),
        }
    }

    /// The entry a decoded reply holds, handling corrupt data as
    /// configured.
    async fn entry<V>(&self, key: &str, reply: Reply<V>) -> Result<Option<(Envelope<V>, Expiry)>> {
        match reply {
            Reply::Entry(entry) => Ok(entry),
            Reply::Failed(e) => Err(e),
            // Boxed: see `decode_reply`.
            Reply::Corrupt(why) => Box::pin(self.corrupt(key, why)).await,
        }
    }

    /// An undecodable value under `key`: an error, or a miss after deleting
    /// it, as configured.
    async fn corrupt<T>(&self, key: &str, why: BoxError) -> Result<Option<T>> {
        self.counters.incr(Event::CodecError);
        match self.on_corrupt {
            OnCorrupt::Error => Err(Error::codec(key, why)),
            OnCorrupt::MissAndDelete => {
                let mut del = redis::cmd("UNLINK");
                del.arg(self.key_arg(key));
                self.call(StoreOp::Get, Some(key), self.connection.query(&del))
                    .await?;
                self.counters.incr(Event::CorruptDeleted);
                Ok(None)
            }
        }
    }

    /// `PTTL k`: the remaining TTL, `Some(None)` for none, `None` for no
    /// key.
    async fn pttl(&self, key: &str) -> Result<Option<Option<Duration>>> {
        let mut cmd = redis::cmd("PTTL");
        cmd.arg(self.key_arg(key));
        let reply = self
            .call(
                StoreOp::RemainingTtl,
                Some(key),
                self.connection.query(&cmd),
            )
            .await?;
        match reply {
            Value::Int(ms) => Ok(pttl_to_ttl(ms)),
            other => Err(unexpected(StoreOp::RemainingTtl, key, &Some(other))),
        }
    }

    /// One entry: a plain `GET` (or the read script), the remaining TTL
    /// from the value's header (from a `PTTL` for a value of format version
    /// 2), and, for a tagged entry, its tags checked.
    async fn get<V: DeserializeOwned>(&self, key: &str) -> Result<Option<Stored<V>>>
    where
        C: Codec,
    {
        let answer = if self.reads_by_script() {
            // Boxed: the script's future is larger than a `GET`'s, and most
            // stores read without it.
            let read = Box::pin(self.read_by_script(key));
            self.call(StoreOp::Get, Some(key), foreign_is_none(read))
                .await?
        } else {
            let mut cmd = redis::cmd("GET");
            cmd.arg(self.key_arg(key));
            // (The query is built in the call's argument: bound to a local
            // first, it would take room in this future twice.)
            let read = self
                .connection
                .query(&cmd)
                .map(|reply| reply.map(|v| (v, None)));
            self.call(StoreOp::Get, Some(key), foreign_is_none(read))
                .await?
        };
        let (reply, versions) = match answer {
            Some((reply, versions)) => (self.decode_reply(key, Some(reply)), versions),
            None => (Reply::Corrupt(WrongType.into()), None),
        };
        let Some((envelope, expiry)) = self.entry(key, reply).await? else {
            self.counters.lookup(false);
            return Ok(None);
        };
        if let Some(tags) = envelope.tags() {
            // Boxed: only tagged entries go there.
            if !Box::pin(self.tags_current(tags, versions)).await? {
                self.counters.lookup(false);
                return Ok(None);
            }
        }
        let remaining_ttl = match expiry.remaining() {
            Some(ttl) => ttl,
            // Boxed: rare (old entries), and kept out of every read's
            // future.
            None => match Box::pin(self.pttl(key)).await? {
                Some(ttl) => ttl,
                // Expired since the GET.
                None => {
                    self.counters.lookup(false);
                    return Ok(None);
                }
            },
        };
        self.counters.lookup(true);
        Ok(Some(Stored {
            envelope,
            remaining_ttl,
        }))
    }

    /// `SET k v [PX ms]`, with the value framed (its header recording the
    /// same TTL), or why it cannot be stored.
    fn set_command<V: Serialize>(
        &self,
        key: &str,
        entry: &Envelope<V>,
        ttl: Option<Duration>,
    ) -> Result<redis::Cmd>
    where
        C: Codec,
    {
        let ttl_ms = ttl.map(ttl_to_ms);
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key_arg(key));
        if let Err(e) = self
            .framing
            .encode(entry, Expiry::from_now(ttl_ms), |bytes| {
                cmd.arg(bytes);
            })
        {
            return Err(match e {
                EncodeError::Codec(why) => {
                    self.counters.incr(Event::CodecError);
                    Error::codec(key, why)
                }
                EncodeError::TooLarge(why) => {
                    self.counters.incr(Event::Oversized);
                    Error::store(StoreOp::Set, Some(key), why)
                }
            });
        }
        if let Some(ms) = ttl_ms {
            cmd.arg("PX").arg(ms);
        }
        Ok(cmd)
    }
}

impl<V, C> Store<V> for RedisStore<V, C>
where
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec,
{
    /// A plain `GET`: the remaining TTL comes from the value's header
    /// (from a `PTTL` for a value of format version 2).
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<Option<Stored<V>>>> {
        StoreFuture::new(self.inner.get(key))
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        entry: Envelope<V>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, Result<()>> {
        StoreFuture::new(async move {
            let inner = &*self.inner;
            let cmd = inner.set_command(key, &entry, ttl)?;
            // A loaded value is sent once only: see `Resend`.
            let sent = match Resend::for_writes(std::iter::once(&entry)) {
                Resend::IfStale => inner.connection.query(&cmd).left_future(),
                Resend::Never => inner.connection.query_once(&cmd).right_future(),
            };
            let reply = inner.call(StoreOp::Set, Some(key), sent).await?;
            match reply {
                Value::Okay => Ok(()),
                other => Err(unexpected(StoreOp::Set, key, &Some(other))),
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<bool>> {
        StoreFuture::new(async move {
            let inner = &*self.inner;
            let mut cmd = redis::cmd("UNLINK");
            cmd.arg(inner.key_arg(key));
            let reply = inner
                .call(StoreOp::Delete, Some(key), inner.connection.query(&cmd))
                .await?;
            match reply {
                Value::Int(n) => Ok(n > 0),
                other => Err(unexpected(StoreOp::Delete, key, &Some(other))),
            }
        })
    }

    fn clear(&self) -> StoreFuture<'_, Result<()>> {
        StoreFuture::new(self.inner.clear())
    }

    fn remaining_ttl<'a>(
        &'a self,
        key: &'a str,
    ) -> StoreFuture<'a, Result<Option<Option<Duration>>>> {
        StoreFuture::new(self.inner.pttl(key))
    }

    fn get_many<'a>(&'a self, keys: &'a [&'a str]) -> StoreFuture<'a, Result<Vec<Found<V>>>>
    where
        V: 'a,
    {
        StoreFuture::new(self.inner.get_many(keys))
    }

    fn set_many<'a>(&'a self, writes: Vec<Write<'a, V>>) -> StoreFuture<'a, Result<()>>
    where
        V: 'a,
    {
        StoreFuture::new(self.inner.set_many(writes))
    }

    fn delete_many<'a>(&'a self, keys: &'a [&'a str]) -> StoreFuture<'a, Result<usize>>
    where
        V: 'a,
    {
        StoreFuture::new(self.inner.delete_many(keys))
    }

    /// The tags' versions (one script per tag, sent together), each tag
    /// started at a random version if it has none.
    fn tag_stamps<'a>(&'a self, tags: &'a Tags) -> StoreFuture<'a, Result<TagStamps>> {
        StoreFuture::new(self.inner.tag_versions(tags))
    }

    /// One script per tag, sent together: `INCR` of the tag's key.
    fn invalidate_tags<'a>(&'a self, tags: &'a Tags) -> StoreFuture<'a, Result<()>> {
        StoreFuture::new(self.inner.invalidate_tags(tags))
    }

    /// Tier `l2`: this client's reads and failures (no `INFO` round trip).
    fn stats(&self) -> StoreStats {
        let redis = self.inner.counters.snapshot();
        let l2 = TierStats {
            hits: redis.hits,
            misses: redis.misses,
            errors: redis.errors(),
            ..TierStats::default()
        };
        StoreStats::single(Tier::L2, l2)
    }
}

/// A store key as a Redis command argument: see [`Inner::key_arg`].
#[derive(Clone, Copy)]
struct KeyArg<'a> {
    /// `"<prefix>:"`, or empty.
    prefix: &'a str,
    key: &'a str,
}

impl ToRedisArgs for KeyArg<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        let mut arg = out.writer_for_next_arg();
        // Writes into the command's own buffer: they cannot fail.
        let _ = arg.write_all(self.prefix.as_bytes());
        let _ = arg.write_all(self.key.as_bytes());
    }

    fn num_of_args(&self) -> usize {
        1
    }
}

/// A `GET` reply, decoded.
enum Reply<V> {
    Entry(Option<(Envelope<V>, Expiry)>),
    /// Data under the key that is not an entry of ours.
    Corrupt(BoxError),
    Failed(Error),
}

/// A TTL in whole milliseconds for `PX`: rounded up, so that a TTL under a
/// millisecond still expires (rather than becoming 0, which Redis refuses,
/// or "never"), and capped at [`MAX_TTL_MS`].
fn ttl_to_ms(ttl: Duration) -> u64 {
    let ms = ttl.as_millis() + u128::from(!ttl.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX).clamp(1, MAX_TTL_MS)
}

/// A `PTTL` reply: `None` for no key (-2), `Some(None)` for no expiry (-1).
fn pttl_to_ttl(ms: i64) -> Option<Option<Duration>> {
    match u64::try_from(ms) {
        Ok(ms) => Some(Some(Duration::from_millis(ms))),
        Err(_) if ms == -1 => Some(None),
        Err(_) => None,
    }
}

/// A read's reply, with a `WRONGTYPE` refusal as `None`: unlike in a
/// pipeline, it arrives as an error, but it is foreign data under the key,
/// not a store failure.
async fn foreign_is_none<T>(
    read: impl Future<Output = RedisResult<(Value, T)>>,
) -> RedisResult<Option<(Value, T)>> {
    match read.await {
        Err(e) if e.code() == Some("WRONGTYPE") => Ok(None),
        other => other.map(Some),
    }
}

fn unexpected(op: StoreOp, key: &str, reply: &Option<Value>) -> Error {
    Error::store(op, Some(key), UnexpectedReply(format!("{reply:?}")))
}

impl<V, C> Clone for RedisStore<V, C> {
    fn clone(&self) -> Self {
        RedisStore {
            inner: Arc::clone(&self.inner),
            _values: PhantomData,
        }
    }
}

impl<V, C> fmt::Debug for RedisStore<V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner.connection {
            Connection::Standalone(_) => "standalone",
            Connection::Cluster(_) => "cluster",
            Connection::Sentinel(_) => "sentinel",
        };
        f.debug_struct("RedisStore")
            .field("connection", &kind)
            .field("prefix", &self.prefix())
            .field("codec", &std::any::type_name::<C>())
            .field("timeout", &self.inner.timeout)
            .field("on_corrupt", &self.inner.on_corrupt)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_and_never_become_never() {
        assert_eq!(ttl_to_ms(Duration::from_nanos(1)), 1);
        assert_eq!(ttl_to_ms(Duration::ZERO), 1);
        assert_eq!(ttl_to_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(ttl_to_ms(Duration::from_micros(1500)), 2);
        assert_eq!(ttl_to_ms(Duration::MAX), MAX_TTL_MS);
    }

    #[test]
    fn pttl_replies() {
        assert_eq!(pttl_to_ttl(-2), None);
        assert_eq!(pttl_to_ttl(-1), Some(None));
        assert_eq!(pttl_to_ttl(0), Some(Some(Duration::ZERO)));
        assert_eq!(pttl_to_ttl(250), Some(Some(Duration::from_millis(250))));
    }
}
