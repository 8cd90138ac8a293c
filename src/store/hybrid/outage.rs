//! Keeping L1 through a lost subscription, with bounded staleness.
//!
//! While the invalidation subscription is up, every L1 entry is vouched
//! for: a write elsewhere would have dropped it. When the subscription is
//! lost, messages may be missed, so no entry is vouched for any more. Two
//! answers are possible:
//!
//! - **Clear L1** (`max_stale_on_outage` zero): coherence first. Every
//!   read then goes to L2, or, when Redis itself is down, to the loader:
//!   exactly when the database can least afford it.
//! - **Keep L1, unverified** (the default): availability first, with a
//!   bound. Each entry carries the *generation* it was written or copied
//!   in. The generation is even while subscribed and odd while the
//!   subscription is lost; a loss and a resubscription each add one. An
//!   entry of the current generation is served as usual. An entry of the
//!   generation just before a loss is served until `lost at +
//!   max_stale_on_outage`. An entry made during the loss is served for
//!   at most `max_stale_on_outage` after it was made (its L1 TTL is capped
//!   by it). Once the subscription is back, nothing from before is served
//!   without asking L2 again: a read that finds an older generation drops
//!   the entry and reads L2, which copies L2's current value (unchanged or
//!   not) back into L1. Reconciliation is thus lazy, one shared L2 read
//!   per key on its next read, and costs nothing for keys never read again.
//!
//! The check on a hit is one atomic load and a compare; for an entry kept
//! through a loss, one more load. No clock is read on a hit: the end of the
//! staleness allowance is a timer of the subscriber task, which runs
//! anyway while the subscription is down (see [`Outage::expiring`]).
//! Reading the clock on every hit during an outage cost 20% of the hit.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// The subscription's generation and how long unverified entries may be
/// served.
pub(crate) struct Outage {
    /// Even: subscribed, or invalidation off. Odd: the subscription is lost.
    generation: AtomicU64,
    /// Whether entries from the generation before the loss may be served
    /// (meaningful while odd): set on the loss, cleared at `serve_until`.
    serving: AtomicBool,
    /// When `serving` ends; `None` once it has.
    serve_until: Mutex<Option<Instant>>,
    max_stale: Duration,
}

impl Outage {
    /// `max_stale` zero: L1 is cleared on a loss instead (the caller's
    /// job), and generations never move.
    pub(crate) fn new(max_stale: Duration) -> Self {
        Outage {
            generation: AtomicU64::new(0),
            serving: AtomicBool::new(false),
            serve_until: Mutex::new(None),
            max_stale,
        }
    }

    /// Whether entries are kept through a loss (rather than cleared).
    pub(crate) fn keeps_l1(&self) -> bool {
        !self.max_stale.is_zero()
    }

    /// The generation an entry made now belongs to.
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether an entry of generation `stamp` is vouched for now.
    #[inline]
    pub(crate) fn is_current(&self, stamp: u64) -> bool {
        stamp == self.generation()
    }

    /// Whether an entry of generation `stamp`, not current, may still be
    /// served: only during a loss, only if it was made just before it, and
    /// only until the staleness bound.
    pub(crate) fn serves_unverified(&self, stamp: u64) -> bool {
        let now = self.generation();
        now % 2 == 1 && stamp.wrapping_add(1) == now && self.serving.load(Ordering::Acquire)
    }

    /// The cap on the L1 TTL of an entry made now: during a loss, nothing
    /// new is served unverified for longer than the bound either.
    pub(crate) fn ttl_cap(&self) -> Option<Duration> {
        (self.generation() % 2 == 1).then_some(self.max_stale)
    }

    /// The subscription was lost: entries made until now become
    /// unverified, served until `max_stale` from now.
    pub(crate) fn lost(&self) {
        if self.generation() % 2 == 1 {
            return;
        }
        *self.serve_until.lock() = Instant::now().checked_add(self.max_stale);
        // The allowance first: a reader that sees the odd generation must
        // see it.
        self.serving.store(true, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Ends the allowance of entries from before the loss.
    fn expire(&self) {
        *self.serve_until.lock() = None;
        self.serving.store(false, Ordering::Release);
    }

    /// Runs `work` (the subscriber's wait or reconnection attempt) and, if
    /// the staleness allowance ends meanwhile, ends it on time.
    pub(crate) async fn expiring<T>(&self, work: impl Future<Output = T>) -> T {
        tokio::pin!(work);
        loop {
            let until = *self.serve_until.lock();
            let Some(until) = until else {
                return work.await;
            };
            tokio::select! {
                done = &mut work => return done,
                () = tokio::time::sleep_until(until) => self.expire(),
            }
        }
    }

    /// The subscription is back: entries made before now are no longer
    /// served without asking L2.
    pub(crate) fn restored(&self) {
        if self.generation() % 2 == 1 {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_before_a_loss_are_served_until_the_bound_then_never() {
        let outage = Outage::new(Duration::from_secs(10));
        let before = outage.generation();
        assert!(outage.is_current(before));

        outage.lost();
        assert!(!outage.is_current(before));
        assert!(outage.serves_unverified(before));
        let during = outage.generation();
        assert!(outage.is_current(during), "made during the loss");
        assert_eq!(outage.ttl_cap(), Some(Duration::from_secs(10)));

        // The subscriber's reconnection attempts, run through `expiring`.
        let retry = tokio::time::sleep(Duration::from_secs(9));
        outage.expiring(retry).await;
        outage.lost(); // a second notice of the same loss moves nothing
        assert!(outage.serves_unverified(before));
        let retry = tokio::time::sleep(Duration::from_secs(2));
        outage.expiring(retry).await;
        assert!(!outage.serves_unverified(before), "past the bound");

        outage.restored();
        assert_eq!(outage.ttl_cap(), None);
        for stamp in [before, during] {
            assert!(!outage.is_current(stamp) && !outage.serves_unverified(stamp));
        }
        // A later loss does not bring back entries of an older generation.
        outage.lost();
        assert!(!outage.serves_unverified(before));
        assert!(!outage.serves_unverified(during));
    }
}
