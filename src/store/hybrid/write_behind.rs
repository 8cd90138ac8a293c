//! Write-behind: L2 writes queued and sent by one background worker.
//!
//! One worker, in queue order, so that two writes of a key reach L2 in
//! the order they were made. The queue is bounded; when it is full, the
//! **oldest** queued write is dropped (counted in
//! [`HybridStats::write_behind_dropped`](super::HybridStats)) and, unless
//! a newer write of its key is queued, its key is dropped from L1, so this
//! process goes back to L2's value, which every other process sees,
//! instead of keeping one that L2 will never get. Dropping the oldest
//! rather than refusing the newest keeps callers from failing, or waiting,
//! because L2 is slow: writing is what write-behind promised not to wait
//! for.
//!
//! **Through an outage.** A write that meets L2 unavailable (the breaker
//! open, a timeout, a lost connection) is not dropped: the worker holds
//! it and tries again once the breaker lets calls through, so a blip or a
//! partition costs no write. Meanwhile new writes queue behind it, and the
//! queue's bound still applies (oldest dropped first): an outage loses at
//! most what the bound pushes out. A newer queued write of the same key
//! makes the held one pointless; it is then skipped. Only
//! [`flush`](super::HybridStore::flush) stops the waiting, so that it never
//! hangs on an unreachable Redis: the writes it waits for then fail
//! (counted) instead.
//!
//! **Read-your-writes.** L1 may evict a written entry before its write
//! reaches L2, and L2 still holds the old value then. So the queue also
//! keeps, per key, what its newest queued write leaves (a value or
//! nothing) until the worker is done with the key's last write; a read
//! that misses L1 asks it before L2. L1's eviction policy thus never shows
//! this process an older value than its own last write.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::{Core, L2};
use crate::codec::Codec;
use crate::store::{Envelope, Stored};

/// A write waiting for L2.
pub(crate) enum Job<V> {
    Set {
        key: String,
        envelope: Envelope<V>,
        ttl: Option<Duration>,
    },
    Delete {
        key: String,
    },
}

impl<V> Job<V> {
    pub(crate) fn key(&self) -> &str {
        match self {
            Job::Set { key, .. } | Job::Delete { key } => key,
        }
    }

    fn into_key(self) -> String {
        match self {
            Job::Set { key, .. } | Job::Delete { key } => key,
        }
    }
}

impl<V> Queued<V> {
    /// One write of `key` is dealt with; answers whether others remain.
    fn done_with(&mut self, key: &str) -> bool {
        let Some(pending) = self.pending.get_mut(key) else {
            return false;
        };
        pending.writes -= 1;
        if pending.writes == 0 {
            self.pending.remove(key);
            return false;
        }
        true
    }
}

pub(crate) struct Queue<V> {
    jobs: Mutex<Queued<V>>,
    capacity: usize,
    ready: Notify,
    /// How many jobs have been dealt with (sent, failed or dropped), for
    /// [`flush`](super::HybridStore::flush).
    done: watch::Sender<u64>,
    /// Callers of `flush` waiting now: while there are any, the worker
    /// does not hold writes for an unavailable L2.
    flushing: AtomicUsize,
    /// Wakes a worker holding a write when `flush` starts.
    flush_started: Notify,
}

struct Queued<V> {
    jobs: VecDeque<Job<V>>,
    /// Jobs ever queued.
    pushed: u64,
    /// Keys with writes not yet dealt with (queued, or being sent).
    pending: HashMap<String, Pending<V>>,
    /// The key of the write the worker is sending (or holding through an
    /// outage): always the oldest write of its key.
    in_flight: Option<String>,
}

/// The writes of one key not yet dealt with.
struct Pending<V> {
    writes: usize,
    /// What the newest of them leaves: a value and when it expires, or
    /// `None` for a delete.
    newest: Option<(Envelope<V>, Option<Instant>)>,
}

/// What [`Queue::push`] pushed out of a full queue.
pub(crate) struct Dropped {
    pub(crate) key: String,
    /// Whether a newer write of the key is still queued.
    pub(crate) superseded: bool,
}

impl<V: Clone> Queue<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Queue {
            jobs: Mutex::new(Queued {
                jobs: VecDeque::new(),
                pushed: 0,
                pending: HashMap::new(),
                in_flight: None,
            }),
            capacity: capacity.max(1),
            ready: Notify::new(),
            done: watch::Sender::new(0),
            flushing: AtomicUsize::new(0),
            flush_started: Notify::new(),
        }
    }

    /// Queues `job`; answers what it pushed out, if the queue was full.
    /// Must be called before L1 is written: a read that misses L1 after
    /// the L1 write then finds the job here.
    pub(crate) fn push(&self, job: Job<V>) -> Option<Dropped> {
        let newest = match &job {
            Job::Set { envelope, ttl, .. } => Some((
                envelope.clone(),
                ttl.and_then(|ttl| Instant::now().checked_add(ttl)),
            )),
            Job::Delete { .. } => None,
        };
        let dropped = {
            let mut queued = self.jobs.lock();
            // The new write first: if the dropped one is of the same key,
            // it is then superseded.
            match queued.pending.get_mut(job.key()) {
                Some(pending) => {
                    pending.writes += 1;
                    pending.newest = newest;
                }
                None => {
                    let key = job.key().to_owned();
                    queued.pending.insert(key, Pending { writes: 1, newest });
                }
            }
            let dropped = if queued.jobs.len() >= self.capacity {
                queued.jobs.pop_front()
            } else {
                None
            };
            let dropped = dropped.map(|job| {
                let key = job.into_key();
                let remaining = queued.done_with(&key);
                // The write in flight is older than the dropped one: it
                // does not supersede it.
                let superseded = remaining
                    && (queued.in_flight.as_deref() != Some(key.as_str())
                        || queued.pending.get(&key).is_some_and(|p| p.writes > 1));
                Dropped { key, superseded }
            });
            queued.jobs.push_back(job);
            queued.pushed += 1;
            dropped
        };
        if dropped.is_some() {
            self.done.send_modify(|done| *done += 1);
        }
        self.ready.notify_one();
        dropped
    }

    pub(crate) fn len(&self) -> usize {
        self.jobs.lock().jobs.len()
    }

    /// What this process last wrote to `key`, if that write has not been
    /// dealt with yet: `Some(None)` for a delete (or a value now expired).
    pub(crate) fn pending(&self, key: &str) -> Option<Option<Stored<V>>> {
        let queued = self.jobs.lock();
        let Some((envelope, expires)) = queued.pending.get(key)?.newest.clone() else {
            return Some(None);
        };
        let remaining_ttl = match expires {
            Some(at) => match at.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return Some(None),
            },
            None => None,
        };
        Some(Some(Stored {
            envelope,
            remaining_ttl,
        }))
    }

    /// The worker is done with one write of `key` (sent or failed).
    fn finished(&self, key: &str) {
        {
            let mut queued = self.jobs.lock();
            queued.done_with(key);
            queued.in_flight = None;
        }
        self.done.send_modify(|done| *done += 1);
    }

    /// Waits until every job queued before this call has been dealt with.
    /// While it waits, writes that meet L2 unavailable fail instead of
    /// waiting for it.
    pub(crate) async fn flush(&self) {
        let target = self.jobs.lock().pushed;
        let mut done = self.done.subscribe();
        self.flushing.fetch_add(1, Ordering::SeqCst);
        // Decremented however this future ends (it may be cancelled).
        let _flushing = Flushing(&self.flushing);
        self.flush_started.notify_waiters();
        // Cannot fail: `self` holds the sender.
        let _ = done.wait_for(|done| *done >= target).await;
    }

    /// Whether a newer write of `key` than the one in flight is queued.
    fn superseded(&self, key: &str) -> bool {
        self.jobs
            .lock()
            .pending
            .get(key)
            .is_some_and(|pending| pending.writes > 1)
    }

    async fn pop(&self) -> Job<V> {
        // The job stays in `pending` until `finished`: while it is being
        // sent, L2 may not have it yet.
        loop {
            {
                let mut queued = self.jobs.lock();
                if let Some(job) = queued.jobs.pop_front() {
                    queued.in_flight = Some(job.key().to_owned());
                    return job;
                }
            }
            self.ready.notified().await;
        }
    }
}

/// The worker: sends queued writes to L2 until the store is dropped
/// (which aborts it; writes still queued then are lost: call
/// [`flush`](super::HybridStore::flush) before shutting down).
pub(crate) async fn run<V, C>(core: Arc<Core<V, C>>)
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec,
{
    let Some(queue) = core.queue.as_ref() else {
        return;
    };
    loop {
        let job = queue.pop().await;
        match send_through_outage(&core, queue, &job).await {
            Sent::Yes => core.local.settle(job.key()),
            Sent::Superseded => {}
            Sent::No => {
                core.counters
                    .write_behind_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        queue.finished(job.key());
    }
}

/// How long the worker waits before trying a held write again: the
/// breaker is read that often (it costs one atomic load).
const RETRY_EVERY: Duration = Duration::from_millis(20);

/// What became of a write.
enum Sent {
    Yes,
    /// Held through an outage until a newer write of its key made it
    /// pointless.
    Superseded,
    /// Refused by L2, or given up for a flush.
    No,
}

/// Sends `job`, holding it while L2 is unavailable (see the module docs).
async fn send_through_outage<V, C>(core: &Core<V, C>, queue: &Queue<V>, job: &Job<V>) -> Sent
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec,
{
    loop {
        let outcome = match job {
            Job::Set { key, envelope, ttl } => match core.l2_set(key, envelope.clone(), *ttl).await
            {
                L2::Done(()) => L2::Done(()),
                L2::Down(e) => L2::Down(e),
                L2::Failed(e) => L2::Failed(e),
            },
            Job::Delete { key } => match core.l2_delete(key).await {
                L2::Done(_) => L2::Done(()),
                L2::Down(e) => L2::Down(e),
                L2::Failed(e) => L2::Failed(e),
            },
        };
        match outcome {
            L2::Done(()) => return Sent::Yes,
            L2::Failed(_) => return Sent::No,
            L2::Down(_) => {}
        }
        // L2 is unavailable: wait for the breaker to let calls through
        // (its prober closes it), unless there is no point waiting.
        loop {
            if queue.flushing.load(Ordering::SeqCst) > 0 {
                return Sent::No;
            }
            if queue.superseded(job.key()) {
                return Sent::Superseded;
            }
            tokio::select! {
                () = tokio::time::sleep(RETRY_EVERY) => {}
                () = queue.flush_started.notified() => {}
            }
            if core.breaker.allows() {
                break;
            }
        }
    }
}

/// Counts one waiting `flush` for as long as it lives.
struct Flushing<'a>(&'a AtomicUsize);

impl Drop for Flushing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
