//! A distributed lock on Redis (feature `redis`): mutual exclusion across
//! processes, with fencing tokens, lease renewal, and waiters woken by the
//! release instead of polling.
//!
//! It is what makes [`Cache::get_or_load`](crate::Cache::get_or_load) load
//! a key once across every process
//! ([`distributed_singleflight`](crate::CacheBuilder::distributed_singleflight))
//! and what elects one refresher per key for
//! [refresh-ahead](crate::CacheBuilder::refresh_ahead); it is also usable on
//! its own.
//!
//! ```no_run
//! use std::time::Duration;
//! use cachex::lock::DistributedLock;
//! use cachex::store::RedisStore;
//!
//! # async fn f() -> cachex::Result<()> {
//! let store: RedisStore<String> = RedisStore::builder()
//!     .url("redis://127.0.0.1:6379")
//!     .prefix("billing")
//!     .build()
//!     .await?;
//! let lock = DistributedLock::new(&store)?;
//! // Waits (without polling) until the lock is free, then holds it,
//! // renewing the 10 s lease for as long as the guard lives.
//! let guard = lock.acquire("invoice:42", Duration::from_secs(10)).await?;
//! let fence = guard.fencing_token(); // hand it to the resource you protect
//! # let _ = fence;
//! guard.release().await?;
//!
//! // Or give up after a while.
//! match lock
//!     .try_acquire("invoice:42", Duration::from_secs(10), Duration::from_millis(500))
//!     .await?
//! {
//!     Some(guard) => drop(guard), // released in the background
//!     None => println!("busy"),
//! }
//! # Ok(()) }
//! ```
//!
//! # Protocol
//!
//! A lock is one Redis key under the store's prefix,
//! `<prefix>:__cachex_lock:{<name>}`, holding its holder's random token and
//! expiring with its lease. Next to it, in the same hash slot (the `{...}`
//! hash tag), live a "someone waits" marker (`...:w`), the last fencing
//! token given (`...:fence`, [`fence_retention`](DistributedLockBuilder::fence_retention)
//! long) and refresh-ahead's last window (`...:refresh`). The lock's
//! release channel is named like its key.
//!
//! - **Acquire** (one script): `SET lock token NX PX lease`. Taken: the
//!   fencing token is made and returned. Held by someone else: the caller
//!   marks the lock as waited on (a marker expiring with the lock) and gets
//!   the lock's remaining lease.
//! - **Wait**: before each attempt, the waiter registers with its handle's
//!   subscriber (one connection per handle, `PSUBSCRIBE` to every lock
//!   channel of the prefix, multiplexing all waited locks). It then sleeps
//!   until the release message for that lock, or until the remaining lease
//!   it was told has passed, and tries again. No fixed-interval polling:
//!   a holder that dies is noticed when its lease runs out, and a lost
//!   message (a dropped subscriber connection) costs at most that wait.
//! - **Release** (one script): deletes the lock only if it holds the
//!   caller's token; publishes on its channel only if a waiter left the
//!   marker, so an uncontended lock costs no message to anyone.
//! - **Extend** (one script): resets the lease only if the lock holds the
//!   caller's token. A [`LockGuard`] does so every third of its lease.
//!
//! # Invariants
//!
//! - A lock is released or extended only by the holder of its token: the
//!   check and the write are one script. A release after the lease ran out
//!   (and someone else took the lock) does nothing and answers `false`.
//! - At most one holder at a time, as long as holders do not outlive their
//!   lease unknowingly (a process paused longer than its lease, or cut off
//!   from Redis, may still believe it holds the lock: Redis locks cannot
//!   prevent that, which is what fencing tokens are for).
//! - Fencing tokens only grow for a given name: each is the server's clock
//!   in microseconds, or the previous token plus one when that is larger
//!   (kept in the fence key for [`fence_retention`](DistributedLockBuilder::fence_retention)).
//!   Unlike a plain `INCR` counter, this needs no key kept for ever per
//!   name, and a deleted fence key (a `clear` of the store's prefix, which
//!   deletes lock keys too) does not send tokens back to 1.
//! - No waiter is stranded: every wait is bounded by the lease the holder
//!   had left, so a waiter tries again at the latest when the lock would
//!   expire.
//! - Works on a standalone server, behind Sentinel (the master's
//!   connection) and on a Cluster (all keys of a lock in one slot, so its
//!   scripts run on one node; a `PUBLISH` reaches the subscribers on every
//!   node).
//!
//! # Failures
//!
//! Every call is bounded by the handle's [timeout](DistributedLockBuilder::timeout)
//! and fails with [`Error::Store`] (operation
//! [`StoreOp::Lock`]). After Redis was found
//! unreachable, attempts fail at once with [`LockUnavailable`] for
//! [`retry_after`](DistributedLockBuilder::retry_after), so that callers
//! falling back to local work do not each wait for the timeout. An attempt
//! that timed out may still have taken the lock on the server: it is
//! released in the background, best effort (else it expires with its lease).

mod backend;
mod guard;
mod names;
pub(crate) mod scripts;
mod stats;
mod wakeup;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::{RedisError, Value};
use tokio::time::Instant;

pub(crate) use backend::Backend;
pub use guard::{LockGuard, LockToken};
pub(crate) use names::Names;
pub use stats::LockStats;
pub(crate) use wakeup::Interest;

use crate::codec::Codec;
use crate::store::redis::{ConfigError, RedisStore, TimedOut, UnexpectedReply};
use crate::{Error, Result, StoreOp};
use scripts::{Arg, Script};
use stats::{incr, Counters};
use wakeup::Wakeups;

/// The default [`retry_after`](DistributedLockBuilder::retry_after): 1 second.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The default [`fence_retention`](DistributedLockBuilder::fence_retention):
/// 24 hours.
pub const DEFAULT_FENCE_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// A handle to distributed locks in one Redis store's namespace: see the
/// [module docs](self) for the protocol and its guarantees.
///
/// Made from a [`RedisStore`] (for a two-tier store, from its
/// [`l2`](crate::store::HybridStore::l2)), whose connection it shares.
/// Cheap to clone: clones share the connection, the one subscriber
/// connection its waiters use, and the counters. The subscriber stops when
/// the last clone (and the last [`LockGuard`]) is dropped.
#[derive(Clone)]
pub struct DistributedLock {
    inner: Arc<LockInner>,
}

struct LockInner {
    backend: Arc<dyn Backend>,
    /// `"<prefix>:"`, or empty.
    prefix: String,
    timeout: Duration,
    retry_after: Duration,
    fence_retention: Duration,
    wakeups: Arc<Wakeups>,
    counters: Arc<Counters>,
    /// Until when attempts are refused without asking Redis, in
    /// milliseconds since `epoch` (0: not down).
    down_until: AtomicU64,
    epoch: Instant,
    /// This handle's random id, the first half of every token.
    instance: u64,
    next_token: AtomicU64,
}

impl Drop for LockInner {
    fn drop(&mut self) {
        self.wakeups.stop();
    }
}

/// Builds a [`DistributedLock`]; start from [`DistributedLock::builder`].
pub struct DistributedLockBuilder {
    backend: Arc<dyn Backend>,
    timeout: Duration,
    retry_after: Duration,
    fence_retention: Duration,
}

/// The refusal of a lock attempt in the pause after Redis was found
/// unreachable (see [`DistributedLockBuilder::retry_after`]): the source of
/// an [`Error::Store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockUnavailable;

impl fmt::Display for LockUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redis was unreachable for locks a moment ago; not asked again yet")
    }
}

impl std::error::Error for LockUnavailable {}

impl DistributedLockBuilder {
    /// The bound of each Redis call. Default: the store's timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// After a call finds Redis unreachable (a timeout, a refused or
    /// dropped connection, a cluster or replica that cannot serve), lock
    /// attempts fail at once with [`LockUnavailable`] for this long,
    /// instead of each waiting for the timeout; the first attempt after it
    /// asks Redis again. Zero: always ask. Default: [`DEFAULT_RETRY_AFTER`].
    pub fn retry_after(mut self, pause: Duration) -> Self {
        self.retry_after = pause;
        self
    }

    /// How long the last fencing token of a lock name is kept after its
    /// last acquisition: within that time, tokens grow even if the
    /// server's clock steps back (or a failover lands on a server whose
    /// clock is behind). One small key per name acquired within the
    /// period. Default: [`DEFAULT_FENCE_RETENTION`].
    pub fn fence_retention(mut self, retention: Duration) -> Self {
        self.fence_retention = retention;
        self
    }

    /// The handle. Starts its subscriber connection in the background if
    /// called inside a tokio runtime (else at the first wait).
    ///
    /// Fails with [`Error::Store`] ([`StoreOp::Connect`]) if the store's
    /// prefix holds an empty hash tag (`{}`), under which a lock's keys
    /// would not share a cluster slot.
    pub fn build(self) -> Result<DistributedLock> {
        let prefix = self.backend.prefix().to_owned();
        names::check_prefix(&prefix).map_err(|e| Error::store(StoreOp::Connect, None, e))?;
        let counters = Arc::new(Counters::default());
        let pattern = self
            .backend
            .pattern(&format!("{prefix}{}", names::NAMESPACE));
        let wakeups = Arc::new(Wakeups::new(
            Arc::clone(&self.backend),
            pattern,
            self.timeout,
            Arc::clone(&counters),
        ));
        wakeups.start();
        Ok(DistributedLock {
            inner: Arc::new(LockInner {
                backend: self.backend,
                prefix,
                timeout: self.timeout,
                retry_after: self.retry_after,
                fence_retention: self.fence_retention,
                wakeups,
                counters,
                down_until: AtomicU64::new(0),
                epoch: Instant::now(),
                instance: instance_id(),
                next_token: AtomicU64::new(0),
            }),
        })
    }
}

/// What one attempt on a lock came to.
pub(crate) enum Attempt {
    Acquired(LockGuard),
    /// Held by someone else for `left` more at most; `interest` (when the
    /// caller means to wait) hears its release.
    Busy {
        interest: Option<Interest>,
        left: Duration,
    },
}

/// What a refresh-ahead claim came to.
pub(crate) enum WindowClaim {
    /// This caller refreshes: the window is its, and so is the lock.
    Won(LockGuard),
    /// Someone refreshed in this window already.
    Taken,
    /// The key's lock is held (a load or a refresh under way).
    Busy,
}

impl DistributedLock {
    /// A handle on `store`'s Redis and namespace, with the defaults.
    ///
    /// Fails if the store's prefix holds an empty hash tag: see
    /// [`DistributedLockBuilder::build`].
    pub fn new<V, C: Codec>(store: &RedisStore<V, C>) -> Result<DistributedLock> {
        Self::builder(store).build()
    }

    /// A builder on `store`'s Redis and namespace: the defaults are the
    /// store's timeout, [`DEFAULT_RETRY_AFTER`] and
    /// [`DEFAULT_FENCE_RETENTION`].
    pub fn builder<V, C: Codec>(store: &RedisStore<V, C>) -> DistributedLockBuilder {
        let backend = store.lock_backend();
        DistributedLockBuilder {
            timeout: backend.timeout(),
            backend,
            retry_after: DEFAULT_RETRY_AFTER,
            fence_retention: DEFAULT_FENCE_RETENTION,
        }
    }

    /// Acquires the lock `name` for `lease`, waiting as long as it takes
    /// (wrap it in [`tokio::time::timeout`] to bound the wait, or use
    /// [`try_acquire`](Self::try_acquire)). The guard renews the lease
    /// while it lives.
    ///
    /// Fails if Redis cannot be reached (then at once for a while: see
    /// [`retry_after`](DistributedLockBuilder::retry_after)), if `lease` is
    /// under a millisecond, or if `name` is empty or starts with `}`.
    pub async fn acquire(&self, name: &str, lease: Duration) -> Result<LockGuard> {
        match self.acquire_until(name, lease, None).await? {
            Some(guard) => Ok(guard),
            None => unreachable!("a wait without a deadline ends with the lock"),
        }
    }

    /// Acquires the lock `name` for `lease` if that takes at most `wait`:
    /// `None` if it is still held by someone else then. `Duration::ZERO`
    /// makes one attempt.
    pub async fn try_acquire(
        &self,
        name: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<LockGuard>> {
        let deadline = Instant::now().checked_add(wait);
        match deadline {
            Some(deadline) => self.acquire_until(name, lease, Some(deadline)).await,
            None => self.acquire_until(name, lease, None).await,
        }
    }

    /// Releases the lock `name` if `token` holds it (see
    /// [`LockGuard::token`]), waking its waiters; answers whether it did.
    /// A wrong or outdated token changes nothing.
    pub async fn release(&self, name: &str, token: &LockToken) -> Result<bool> {
        let names = self.names(name)?;
        self.release_names(&names, token).await
    }

    /// Sets the lease of the lock `name` to `lease` from now if `token`
    /// holds it; answers whether it did. A wrong or outdated token changes
    /// nothing.
    pub async fn extend(&self, name: &str, token: &LockToken, lease: Duration) -> Result<bool> {
        let names = self.names(name)?;
        self.extend_names(&names, token, lease).await
    }

    /// The Redis key of the lock `name` (the name of its channel too).
    pub fn lock_key(&self, name: &str) -> Result<String> {
        Ok(self.names(name)?.lock.clone())
    }

    /// A snapshot of this handle's counters.
    pub fn stats(&self) -> LockStats {
        let inner = &*self.inner;
        inner.counters.snapshot(inner.wakeups.is_subscribed())
    }

    /// Whether the subscriber connection that wakes waiters is up.
    pub fn is_subscribed(&self) -> bool {
        self.inner.wakeups.is_subscribed()
    }

    /// The Redis names of the lock `name`.
    pub(crate) fn names(&self, name: &str) -> Result<Arc<Names>> {
        Names::new(&self.inner.prefix, name)
            .map(Arc::new)
            .map_err(|e| Error::store(StoreOp::Lock, Some(name), e))
    }

    async fn acquire_until(
        &self,
        name: &str,
        lease: Duration,
        deadline: Option<Instant>,
    ) -> Result<Option<LockGuard>> {
        let names = self.names(name)?;
        let mut waiting_since: Option<Instant> = None;
        loop {
            let wait = deadline.is_none_or(|deadline| Instant::now() < deadline);
            match self.attempt(&names, lease, true, wait).await? {
                Attempt::Acquired(guard) => {
                    if let Some(since) = waiting_since {
                        self.inner.counters.waited(since.elapsed());
                    }
                    return Ok(Some(guard));
                }
                Attempt::Busy { interest, left } => {
                    let now = Instant::now();
                    let since = *waiting_since.get_or_insert(now);
                    let mut bound = left;
                    if let Some(deadline) = deadline {
                        if now >= deadline {
                            self.inner.counters.waited(now - since);
                            return Ok(None);
                        }
                        bound = bound.min(deadline - now);
                    }
                    if let Some(mut interest) = interest {
                        interest.wait(bound).await;
                    }
                }
            }
        }
    }

    /// One attempt on the lock: taken, or held by someone else (then, if
    /// `wait`, with an interest in its release registered before the
    /// attempt). `fenced`: keep the last fencing token (public locks).
    pub(crate) async fn attempt(
        &self,
        names: &Arc<Names>,
        lease: Duration,
        fenced: bool,
        wait: bool,
    ) -> Result<Attempt> {
        let inner = &*self.inner;
        let lease_ms = period_ms(&names.name, lease)?;
        self.check_up(&names.name)?;
        let interest = if wait {
            Some(inner.wakeups.interest(&names.lock).await)
        } else {
            None
        };
        let token = self.new_token();
        let retention_ms = ttl_ms(inner.fence_retention);
        let mut keys = vec![names.lock.as_str(), names.marker.as_str()];
        let mut args = vec![Arg::Str(token.as_str()), Arg::Int(lease_ms)];
        if fenced && retention_ms > 0 {
            keys.push(&names.fence);
            args.push(Arg::Int(retention_ms));
        }
        let reply = self
            .call(&names.name, &scripts::ACQUIRE_SCRIPT, &keys, &args)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                // The script may have run: free the lock in case it did.
                if timed_out(&error) {
                    let (lock, names, token) = (self.clone(), Arc::clone(names), token.clone());
                    tokio::spawn(async move {
                        let _ = lock.release_names(&names, &token).await;
                    });
                }
                return Err(error);
            }
        };
        match scripts::pair(&reply) {
            Some((1, fence)) => {
                incr(&inner.counters.acquired);
                let fence = u64::try_from(fence).unwrap_or(0);
                let guard = LockGuard::new(self.clone(), Arc::clone(names), token, fence, lease);
                Ok(Attempt::Acquired(guard))
            }
            Some((0, left)) => {
                incr(&inner.counters.busy);
                let left = match left {
                    // A key without expiry (not set by a lock): wait a
                    // lease at a time rather than spin.
                    -1 => lease,
                    // -2: expired between the commands: try again at once.
                    left => Duration::from_millis(u64::try_from(left).unwrap_or(0)),
                };
                Ok(Attempt::Busy { interest, left })
            }
            _ => Err(self.unexpected(&names.name, &reply)),
        }
    }

    /// Refresh-ahead's claim of the current `interval` window for lock
    /// `names`, taking the lock for `lease` if it wins.
    pub(crate) async fn claim_window(
        &self,
        names: &Arc<Names>,
        lease: Duration,
        interval: Duration,
    ) -> Result<WindowClaim> {
        let lease_ms = period_ms(&names.name, lease)?;
        let interval_ms = period_ms(&names.name, interval)?;
        self.check_up(&names.name)?;
        let token = self.new_token();
        let keys = [
            names.lock.as_str(),
            names.marker.as_str(),
            names.window.as_str(),
        ];
        let args = [
            Arg::Str(token.as_str()),
            Arg::Int(lease_ms),
            Arg::Int(interval_ms),
        ];
        let reply = self
            .call(&names.name, &scripts::CLAIM_WINDOW_SCRIPT, &keys, &args)
            .await?;
        match scripts::pair(&reply) {
            Some((1, fence)) => {
                incr(&self.inner.counters.acquired);
                let fence = u64::try_from(fence).unwrap_or(0);
                let guard = LockGuard::new(self.clone(), Arc::clone(names), token, fence, lease);
                Ok(WindowClaim::Won(guard))
            }
            Some((0, 0)) => Ok(WindowClaim::Taken),
            Some((0, _)) => {
                incr(&self.inner.counters.busy);
                Ok(WindowClaim::Busy)
            }
            _ => Err(self.unexpected(&names.name, &reply)),
        }
    }

    pub(crate) async fn release_names(&self, names: &Names, token: &LockToken) -> Result<bool> {
        let keys = [names.lock.as_str(), names.marker.as_str()];
        let reply = self
            .call(
                &names.name,
                &scripts::RELEASE_SCRIPT,
                &keys,
                &[Arg::Str(token.as_str())],
            )
            .await?;
        let released = scripts::flag(&reply).ok_or_else(|| self.unexpected(&names.name, &reply))?;
        let counters = &self.inner.counters;
        incr(if released {
            &counters.released
        } else {
            &counters.release_missed
        });
        Ok(released)
    }

    pub(crate) async fn extend_names(
        &self,
        names: &Names,
        token: &LockToken,
        lease: Duration,
    ) -> Result<bool> {
        let lease_ms = period_ms(&names.name, lease)?;
        let keys = [names.lock.as_str(), names.marker.as_str()];
        let args = [Arg::Str(token.as_str()), Arg::Int(lease_ms)];
        let reply = self
            .call(&names.name, &scripts::EXTEND_SCRIPT, &keys, &args)
            .await?;
        let extended = scripts::flag(&reply).ok_or_else(|| self.unexpected(&names.name, &reply))?;
        if extended {
            incr(&self.inner.counters.extended);
        }
        Ok(extended)
    }

    /// Runs a script under the timeout; failures become [`Error::Store`]
    /// (operation `Lock`), and unavailability starts the pause.
    async fn call(
        &self,
        name: &str,
        script: &Script,
        keys: &[&str],
        args: &[Arg<'_>],
    ) -> Result<Value> {
        let inner = &*self.inner;
        let run = scripts::run(&*inner.backend, script, keys, args);
        let outcome = tokio::time::timeout(inner.timeout, run).await;
        let error = match outcome {
            Ok(Ok(reply)) => return Ok(reply),
            Ok(Err(e)) => {
                let down = unavailable(&e);
                (Error::store(StoreOp::Lock, Some(name), e), down)
            }
            Err(_) => (
                Error::store(
                    StoreOp::Lock,
                    Some(name),
                    TimedOut {
                        after: inner.timeout,
                    },
                ),
                true,
            ),
        };
        incr(&inner.counters.errors);
        if error.1 {
            self.mark_down();
        }
        Err(error.0)
    }

    /// Refuses at once while Redis is taken as down.
    fn check_up(&self, name: &str) -> Result<()> {
        let inner = &*self.inner;
        let until = inner.down_until.load(Ordering::Relaxed);
        if until == 0 || millis_since(inner.epoch) >= until {
            return Ok(());
        }
        incr(&inner.counters.skipped_while_down);
        Err(Error::store(StoreOp::Lock, Some(name), LockUnavailable))
    }

    fn mark_down(&self) {
        let inner = &*self.inner;
        if inner.retry_after.is_zero() {
            return;
        }
        let until = millis_since(inner.epoch).saturating_add(ttl_ms(inner.retry_after));
        inner.down_until.store(until.max(1), Ordering::Relaxed);
    }

    fn new_token(&self) -> LockToken {
        let inner = &*self.inner;
        let n = inner.next_token.fetch_add(1, Ordering::Relaxed);
        LockToken::from(format!("{:016x}{n:016x}", inner.instance))
    }

    fn unexpected(&self, name: &str, reply: &Value) -> Error {
        incr(&self.inner.counters.errors);
        Error::store(
            StoreOp::Lock,
            Some(name),
            UnexpectedReply(format!("{reply:?}")),
        )
    }
}

impl fmt::Debug for DistributedLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("DistributedLock")
            .field("prefix", &inner.prefix)
            .field("timeout", &inner.timeout)
            .field("retry_after", &inner.retry_after)
            .field("fence_retention", &inner.fence_retention)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for DistributedLockBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistributedLockBuilder")
            .field("timeout", &self.timeout)
            .field("retry_after", &self.retry_after)
            .field("fence_retention", &self.fence_retention)
            .finish_non_exhaustive()
    }
}

/// A lease (or interval) in whole milliseconds, rounded up, refusing one
/// under a millisecond.
fn period_ms(name: &str, period: Duration) -> Result<u64> {
    if period < Duration::from_millis(1) {
        return Err(Error::store(
            StoreOp::Lock,
            Some(name),
            ConfigError(format!(
                "lock periods are whole milliseconds, at least 1 ms; got {period:?}"
            )),
        ));
    }
    Ok(ttl_ms(period))
}

/// Milliseconds, rounded up, capped far below what Redis refuses.
fn ttl_ms(period: Duration) -> u64 {
    let ms = period.as_millis() + u128::from(!period.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX).min(1 << 50)
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Whether the error says Redis cannot be reached or cannot serve now
/// (rather than refusing this command).
fn unavailable(e: &RedisError) -> bool {
    crate::store::redis::is_connection_error(e)
        || matches!(
            e.code(),
            Some("LOADING" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "READONLY")
        )
}

/// Whether a lock call failed by running out of time (its script may have
/// run on the server).
fn timed_out(error: &Error) -> bool {
    use std::error::Error as _;
    error.source().is_some_and(|source| {
        source.is::<TimedOut>()
            || source
                .downcast_ref::<RedisError>()
                .is_some_and(RedisError::is_timeout)
    })
}

/// A random id per handle, the first half of its tokens (so two handles,
/// in one process or in two, never make the same token).
fn instance_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = foldhash::fast::RandomState::default().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}
