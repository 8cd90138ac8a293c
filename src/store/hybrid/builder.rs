//! Configuring a [`HybridStore`].

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::breaker::Breaker;
use super::coalesce::Flights;
use super::invalidation;
use super::local::Local;
use super::stats::Counters;
use super::write_behind::{self, Queue};
use super::{Core, HybridStore, Inner, Invalidated, Tasks};
use crate::codec::{Codec, MessagePack};
use crate::store::RedisStore;
use crate::Result;

/// The default L1 capacity: 10,000 entries.
pub const DEFAULT_L1_CAPACITY: u64 = 10_000;
/// The default cap on an entry's life in L1: 60 seconds. It bounds how
/// long L1 can serve a value whose invalidation was lost.
pub const DEFAULT_L1_TTL: Duration = Duration::from_secs(60);
/// The default timeout of each L2 call made by the hybrid store: 500 ms.
pub const DEFAULT_L2_TIMEOUT: Duration = Duration::from_millis(500);
/// Consecutive L2 failures that open the breaker, by default: 5.
pub const DEFAULT_BREAKER_THRESHOLD: u32 = 5;
/// How long the breaker stays open before a probe, by default: 1 second.
pub const DEFAULT_BREAKER_OPEN_FOR: Duration = Duration::from_secs(1);
/// The default bound of the write-behind queue: 10,000 writes.
pub const DEFAULT_WRITE_BEHIND_QUEUE: usize = 10_000;

/// When `set` and `delete` return.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteMode {
    /// After L2 acknowledged the write (and the invalidation was
    /// published). Every process reads the new value once the call has
    /// returned and the invalidation has arrived. The default.
    #[default]
    WriteThrough,
    /// At once: L1 is written now, L2 by a background worker, in order,
    /// through a bounded queue (see
    /// [`write_behind_queue`](HybridStoreBuilder::write_behind_queue)).
    /// Other processes see the write when it reaches L2; until then this
    /// process answers for the key from what it wrote, even if L1 evicts
    /// it (a delete answers "nothing"), never with L2's older value. `delete`
    /// answers whether L1 held a value, since L2 has not been asked.
    /// [`HybridStore::flush`] waits for the queue.
    WriteBehind,
}

/// Builds a [`HybridStore`]. Start from [`HybridStore::builder`].
///
/// ```no_run
/// use std::time::Duration;
/// use cachex::store::hybrid::{HybridStore, WriteMode};
/// use cachex::store::RedisStore;
///
/// # async fn f() -> cachex::Result<()> {
/// let l2 = RedisStore::builder().url("redis://127.0.0.1:6379").prefix("app").build().await?;
/// let store: HybridStore<String> = HybridStore::builder(l2)
///     .l1_capacity(50_000)
///     .l1_ttl(Duration::from_secs(30))
///     .write_mode(WriteMode::WriteThrough)
///     .l2_timeout(Duration::from_millis(200))
///     .breaker(5, Duration::from_secs(2))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
pub struct HybridStoreBuilder<V, C = MessagePack> {
    l2: RedisStore<V, C>,
    l1_capacity: u64,
    l1_ttl: Option<Duration>,
    l2_timeout: Duration,
    write_mode: WriteMode,
    write_behind_queue: usize,
    breaker_threshold: u32,
    breaker_open_for: Duration,
    strict: bool,
    invalidation: bool,
    channel: Option<String>,
    on_invalidation: Option<super::Hook>,
    /// `None`: the L1 TTL.
    max_stale_on_outage: Option<Duration>,
}

impl<V, C> HybridStoreBuilder<V, C>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec,
{
    pub(crate) fn new(l2: RedisStore<V, C>) -> Self {
        HybridStoreBuilder {
            l2,
            l1_capacity: DEFAULT_L1_CAPACITY,
            l1_ttl: Some(DEFAULT_L1_TTL),
            l2_timeout: DEFAULT_L2_TIMEOUT,
            write_mode: WriteMode::WriteThrough,
            write_behind_queue: DEFAULT_WRITE_BEHIND_QUEUE,
            breaker_threshold: DEFAULT_BREAKER_THRESHOLD,
            breaker_open_for: DEFAULT_BREAKER_OPEN_FOR,
            strict: false,
            invalidation: true,
            channel: None,
            on_invalidation: None,
            max_stale_on_outage: None,
        }
    }

    /// How many entries L1 holds at most. Default: [`DEFAULT_L1_CAPACITY`].
    pub fn l1_capacity(mut self, entries: u64) -> Self {
        self.l1_capacity = entries;
        self
    }

    /// The longest an entry stays in L1, whatever its TTL in L2 (which is
    /// never extended: an entry leaves L1 no later than L2). A short L1 TTL
    /// bounds staleness even when an invalidation is lost. Default:
    /// [`DEFAULT_L1_TTL`]; `Duration::MAX` for no cap.
    pub fn l1_ttl(mut self, ttl: Duration) -> Self {
        self.l1_ttl = (ttl != Duration::MAX).then_some(ttl);
        self
    }

    /// The longest one L2 call may take before it counts as a failure.
    /// The Redis store's own timeout applies too; the shorter wins.
    /// Default: [`DEFAULT_L2_TIMEOUT`].
    pub fn l2_timeout(mut self, timeout: Duration) -> Self {
        self.l2_timeout = timeout;
        self
    }

    /// When writes return. Default: [`WriteMode::WriteThrough`].
    pub fn write_mode(mut self, mode: WriteMode) -> Self {
        self.write_mode = mode;
        self
    }

    /// The bound of the write-behind queue; when it is full the oldest
    /// queued write is dropped (and its key dropped from L1). Default:
    /// [`DEFAULT_WRITE_BEHIND_QUEUE`].
    pub fn write_behind_queue(mut self, writes: usize) -> Self {
        self.write_behind_queue = writes;
        self
    }

    /// The circuit breaker: `threshold` consecutive L2 failures open it;
    /// it is probed every `open_for` and closes when L2 answers. Default:
    /// [`DEFAULT_BREAKER_THRESHOLD`], [`DEFAULT_BREAKER_OPEN_FOR`].
    pub fn breaker(mut self, threshold: u32, open_for: Duration) -> Self {
        self.breaker_threshold = threshold;
        self.breaker_open_for = open_for;
        self
    }

    /// Strict mode: L2 being unavailable (breaker open, timeout, lost
    /// connection) is an [`Error::Store`](crate::Error::Store) instead of
    /// a miss (reads) or an L1-only write (writes). Default: off, so a
    /// Redis outage costs loader calls, not errors.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Cross-process invalidation over pub/sub. Default: on. Off, other
    /// processes' writes reach this L1 only when entries expire (see
    /// [`l1_ttl`](Self::l1_ttl)).
    pub fn invalidation(mut self, on: bool) -> Self {
        self.invalidation = on;
        self
    }

    /// The pub/sub channel of invalidation messages. Default:
    /// `<prefix>:__cachex_inv` (`__cachex_inv` without a prefix). Stores
    /// sharing keys must share the channel.
    pub fn invalidation_channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = Some(channel.into());
        self
    }

    /// How long L1 keeps serving its entries after the invalidation
    /// subscription is lost (Redis down, restarting, or only the pub/sub
    /// connection cut): availability, with bounded staleness.
    ///
    /// While the subscription is down, invalidations may be missed, so:
    /// - an entry made before the loss is served until `max_stale` after
    ///   the loss was noticed (a PING goes unanswered for the L2 timeout,
    ///   or the connection closes), then dropped;
    /// - an entry made during the loss (this process's own write, or a
    ///   copy from L2) stays in L1 at most `max_stale`;
    /// - a write from this process replaces its entry at once, as always;
    /// - once the subscription is back, no entry from before is served
    ///   without asking L2 again: the next read of each drops it and reads
    ///   L2 (one shared read per key), which copies L2's current value
    ///   back. Keys changed in L2 meanwhile are thus seen, unchanged ones
    ///   come back, and nothing is loaded from the database for them.
    ///
    /// So a read returns a value that another process has replaced in L2
    /// for at most `max_stale` past the loss (plus the time to notice it),
    /// and never after the subscription is back.
    ///
    /// `Duration::ZERO` chooses coherence instead: L1 is emptied when the
    /// subscription is lost and again when it is back, and reads go to L2,
    /// or, with Redis down, to the loader.
    ///
    /// Default: the [L1 TTL](Self::l1_ttl) (itself 60 s by default), or
    /// [`DEFAULT_L1_TTL`] if L1's TTL is uncapped.
    pub fn max_stale_on_outage(mut self, max_stale: Duration) -> Self {
        self.max_stale_on_outage = Some(max_stale);
        self
    }

    /// Called after another store's invalidation dropped a key from L1
    /// ([`Invalidated::Key`]), or after L1 was cleared by another store's
    /// `clear`, an unreadable message or (with
    /// [`max_stale_on_outage`](Self::max_stale_on_outage) zero) a lost
    /// subscription ([`Invalidated::All`]). Runs on the subscriber task: keep it short.
    pub fn on_invalidation(
        mut self,
        hook: impl Fn(Invalidated<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.on_invalidation = Some(Arc::new(hook));
        self
    }

    /// Subscribes to the invalidation channel (unless invalidation is
    /// off) and starts the background tasks. Fails with
    /// [`Error::Store`](crate::Error::Store) (operation
    /// [`Connect`](crate::StoreOp::Connect)) if the subscription cannot be
    /// made within the L2 timeout. Must run inside a tokio runtime.
    pub async fn build(self) -> Result<HybridStore<V, C>> {
        let channel = self
            .channel
            .unwrap_or_else(|| invalidation::channel(self.l2.prefix()));
        let max_stale = self
            .max_stale_on_outage
            .unwrap_or(self.l1_ttl.unwrap_or(DEFAULT_L1_TTL));
        let core = Arc::new(Core {
            local: Arc::new(Local::new(self.l1_capacity, self.l1_ttl, max_stale)),
            flights: Arc::new(Flights::new()),
            breaker: Breaker::new(self.breaker_threshold, self.breaker_open_for),
            queue: (self.write_mode == WriteMode::WriteBehind)
                .then(|| Queue::new(self.write_behind_queue)),
            mode: self.write_mode,
            strict: self.strict,
            l2_timeout: self.l2_timeout,
            channel: self.invalidation.then(|| channel.clone()),
            instance_id: instance_id(),
            subscribed: AtomicBool::new(false),
            hook: self.on_invalidation,
            counters: Counters::default(),
            l2: self.l2,
        });
        let mut tasks = Tasks::default();
        if self.invalidation {
            let timeout = self.l2_timeout.max(core.l2.call_timeout());
            let first = invalidation::subscribe(&core, &channel, 0, timeout).await?;
            core.subscribed
                .store(true, std::sync::atomic::Ordering::Release);
            tasks.spawn(invalidation::run(
                Arc::clone(&core),
                channel,
                first,
                timeout,
            ));
        }
        if core.queue.is_some() {
            tasks.spawn(write_behind::run(Arc::clone(&core)));
        }
        tasks.spawn(super::probe(Arc::clone(&core)));
        Ok(HybridStore {
            inner: Arc::new(Inner {
                core,
                _tasks: tasks,
            }),
        })
    }
}

/// A random id per store, so that a store ignores its own messages and
/// two stores in one process do not.
fn instance_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // A randomly seeded hasher is random enough, and needs no new crate.
    let mut hasher = foldhash::fast::RandomState::default().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

impl<V, C> fmt::Debug for HybridStoreBuilder<V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HybridStoreBuilder")
            .field("l1_capacity", &self.l1_capacity)
            .field("l1_ttl", &self.l1_ttl)
            .field("l2_timeout", &self.l2_timeout)
            .field("write_mode", &self.write_mode)
            .field("write_behind_queue", &self.write_behind_queue)
            .field("breaker_threshold", &self.breaker_threshold)
            .field("breaker_open_for", &self.breaker_open_for)
            .field("strict", &self.strict)
            .field("invalidation", &self.invalidation)
            .field("channel", &self.channel)
            .field("max_stale_on_outage", &self.max_stale_on_outage)
            .finish_non_exhaustive()
    }
}
