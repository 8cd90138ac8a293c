//! Write-behind: L2 writes queued and sent by one background worker.
//!
//! One worker, in queue order, so that two writes of a key reach L2 in
//! the order they were made. The queue is bounded; when it is full, the
//! **oldest** queued write is dropped (counted in
//! [`HybridStats::write_behind_dropped`](super::HybridStats)) and its key
//! is dropped from L1, so this process goes back to L2's value, which
//! every other process sees, instead of keeping one that L2 will never
//! get. Dropping the oldest rather than refusing the newest keeps callers
//! from failing, or waiting, because L2 is slow: writing is what
//! write-behind promised not to wait for.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{watch, Notify};

use super::Core;
use crate::codec::Codec;
use crate::store::Envelope;

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
}

pub(crate) struct Queue<V> {
    jobs: Mutex<Queued<V>>,
    capacity: usize,
    ready: Notify,
    /// How many jobs have been dealt with (sent, failed or dropped), for
    /// [`flush`](super::HybridStore::flush).
    done: watch::Sender<u64>,
}

struct Queued<V> {
    jobs: VecDeque<Job<V>>,
    /// Jobs ever queued.
    pushed: u64,
}

impl<V> Queue<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Queue {
            jobs: Mutex::new(Queued {
                jobs: VecDeque::new(),
                pushed: 0,
            }),
            capacity: capacity.max(1),
            ready: Notify::new(),
            done: watch::Sender::new(0),
        }
    }

    /// Queues `job`; answers the job it pushed out, if the queue was full.
    pub(crate) fn push(&self, job: Job<V>) -> Option<Job<V>> {
        let dropped = {
            let mut queued = self.jobs.lock();
            let dropped = if queued.jobs.len() >= self.capacity {
                queued.jobs.pop_front()
            } else {
                None
            };
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

    /// Waits until every job queued before this call has been dealt with.
    pub(crate) async fn flush(&self) {
        let target = self.jobs.lock().pushed;
        let mut done = self.done.subscribe();
        // Cannot fail: `self` holds the sender.
        let _ = done.wait_for(|done| *done >= target).await;
    }

    async fn pop(&self) -> Job<V> {
        loop {
            if let Some(job) = self.jobs.lock().jobs.pop_front() {
                return job;
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
        let ok = match &job {
            Job::Set { key, envelope, ttl } => {
                core.l2_set(key, envelope.clone(), *ttl).await.is_done()
            }
            Job::Delete { key } => core.l2_delete(key).await.is_done(),
        };
        if ok {
            core.local.settle(job.key());
        } else {
            core.counters
                .write_behind_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        queue.done.send_modify(|done| *done += 1);
    }
}
