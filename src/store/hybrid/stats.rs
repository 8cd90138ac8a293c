//! What a [`HybridStore`](super::HybridStore) counts.

use std::sync::atomic::{AtomicU64, Ordering};

use super::BreakerState;

/// A snapshot of a [`HybridStore`](super::HybridStore)'s counters (since it
/// was built; shared by its clones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HybridStats {
    /// Reads answered by L1.
    pub l1_hits: u64,
    /// Reads L1 could not answer.
    pub l1_misses: u64,
    /// Entries in L1 now (expired ones may be counted until reclaimed).
    pub l1_entries: u64,
    /// L2 reads that found an entry.
    pub l2_hits: u64,
    /// L2 reads that found nothing.
    pub l2_misses: u64,
    /// L1 misses that joined an L2 read of the same key already under way
    /// instead of sending their own.
    pub l2_reads_shared: u64,
    /// L2 calls that failed: timed out, unreachable, or answered with an
    /// error (codec errors included).
    pub l2_errors: u64,
    /// L2 calls not tried because the breaker was open.
    pub l2_skipped: u64,
    /// L2 entries copied into L1.
    pub promotions: u64,
    /// L2 answers not copied into L1 because the key was written,
    /// deleted or invalidated while they were read.
    pub promotions_skipped: u64,
    /// Writes that went to L1 only because L2 was unavailable.
    pub l1_only_writes: u64,
    /// The breaker's state now.
    pub breaker: BreakerState,
    /// Times the breaker opened.
    pub breaker_opened: u64,
    /// Times a probe closed it again.
    pub breaker_closed: u64,
    /// Writes queued for L2 (write-behind).
    pub write_behind_queued: u64,
    /// Queued writes waiting now.
    pub write_behind_pending: u64,
    /// Queued writes that L2 did not take (error, timeout, breaker open).
    pub write_behind_failures: u64,
    /// Queued writes dropped, oldest first, because the queue was full.
    pub write_behind_dropped: u64,
    /// Invalidation messages sent.
    pub invalidations_published: u64,
    /// Invalidation messages that could not be sent.
    pub publish_failures: u64,
    /// Invalidation messages from other stores applied to L1.
    pub invalidations_received: u64,
    /// Messages on the channel this version could not read (each cleared
    /// L1).
    pub invalidations_unreadable: u64,
    /// Whether the invalidation subscription is up now (always `false`
    /// with invalidation off).
    pub subscribed: bool,
    /// Times the subscription was lost (L1 kept, unverified, for at most
    /// [`max_stale_on_outage`](super::HybridStoreBuilder::max_stale_on_outage);
    /// or cleared, with that bound zero).
    pub subscription_losses: u64,
    /// Times it was re-established (entries from before are then re-read
    /// from L2 on their next read; or L1 cleared again, bound zero).
    pub resubscriptions: u64,
    /// L1 hits on entries kept, unverified, through a lost subscription
    /// (within the staleness bound).
    pub unverified_hits: u64,
    /// Unverified entries dropped by the read that found them (past the
    /// staleness bound, or after the subscription came back), so that
    /// the read asked L2 instead.
    pub revalidations: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) l2_hits: AtomicU64,
    pub(crate) l2_misses: AtomicU64,
    pub(crate) l2_errors: AtomicU64,
    pub(crate) l2_skipped: AtomicU64,
    pub(crate) promotions: AtomicU64,
    pub(crate) promotions_skipped: AtomicU64,
    pub(crate) l1_only_writes: AtomicU64,
    pub(crate) write_behind_queued: AtomicU64,
    pub(crate) write_behind_failures: AtomicU64,
    pub(crate) write_behind_dropped: AtomicU64,
    pub(crate) invalidations_published: AtomicU64,
    pub(crate) publish_failures: AtomicU64,
    pub(crate) invalidations_received: AtomicU64,
    pub(crate) invalidations_unreadable: AtomicU64,
    pub(crate) subscription_losses: AtomicU64,
    pub(crate) resubscriptions: AtomicU64,
}

/// Reads a counter.
pub(crate) fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Adds one to a counter.
pub(crate) fn incr(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
