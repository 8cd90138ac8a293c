//! What a lock handle counts.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A snapshot of a [`DistributedLock`](super::DistributedLock)'s counters
/// (all clones of a handle share them). Counted by this process only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockStats {
    /// Locks taken.
    pub acquired: u64,
    /// Attempts that found the lock held by someone else.
    pub busy: u64,
    /// Waits that ended with a release message.
    pub woken_by_message: u64,
    /// Waits that ended because the holder's lease ran out (the fallback
    /// wake-up: no message came, or the holder died or renewed).
    pub woken_by_timer: u64,
    /// Waits that ended because the subscriber connection was lost or
    /// came back (messages may have been missed meanwhile).
    pub woken_by_resubscription: u64,
    /// Time spent waiting for locks held by others.
    pub wait_time: Duration,
    /// Locks released by their holder.
    pub released: u64,
    /// Releases that found the lock no longer theirs (it had expired, or
    /// been taken by someone else after expiring).
    pub release_missed: u64,
    /// Lease renewals (by a guard's renewal task, or `extend`).
    pub extended: u64,
    /// Guards that lost their lock: a renewal found it gone, or could not
    /// reach Redis before the lease ran out.
    pub lost: u64,
    /// Calls that failed: Redis unreachable, too slow, or refusing.
    pub errors: u64,
    /// Attempts refused at once, without asking Redis, in the pause after
    /// Redis was found unreachable (see
    /// [`retry_after`](super::DistributedLockBuilder::retry_after)).
    pub skipped_while_down: u64,
    /// Release messages received (for any lock of this prefix).
    pub messages: u64,
    /// Whether the subscriber connection is up now.
    pub subscribed: bool,
    /// Times the subscriber connection was lost.
    pub subscription_losses: u64,
}

/// The live counters behind [`LockStats`]. Relaxed atomics: a lock step
/// is a Redis round trip, next to which a shared counter costs nothing.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) acquired: AtomicU64,
    pub(crate) busy: AtomicU64,
    pub(crate) woken_by_message: AtomicU64,
    pub(crate) woken_by_timer: AtomicU64,
    pub(crate) woken_by_resubscription: AtomicU64,
    pub(crate) wait_nanos: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) release_missed: AtomicU64,
    pub(crate) extended: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) skipped_while_down: AtomicU64,
    pub(crate) messages: AtomicU64,
    pub(crate) subscription_losses: AtomicU64,
}

/// Adds one.
pub(crate) fn incr(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

impl Counters {
    pub(crate) fn waited(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.wait_nanos.fetch_add(nanos, Relaxed);
    }

    pub(crate) fn snapshot(&self, subscribed: bool) -> LockStats {
        let get = |counter: &AtomicU64| counter.load(Relaxed);
        LockStats {
            acquired: get(&self.acquired),
            busy: get(&self.busy),
            woken_by_message: get(&self.woken_by_message),
            woken_by_timer: get(&self.woken_by_timer),
            woken_by_resubscription: get(&self.woken_by_resubscription),
            wait_time: Duration::from_nanos(get(&self.wait_nanos)),
            released: get(&self.released),
            release_missed: get(&self.release_missed),
            extended: get(&self.extended),
            lost: get(&self.lost),
            errors: get(&self.errors),
            skipped_while_down: get(&self.skipped_while_down),
            messages: get(&self.messages),
            subscribed,
            subscription_losses: get(&self.subscription_losses),
        }
    }
}
