//! The circuit breaker in front of L2.
//!
//! Closed: calls go through; `threshold` consecutive failures open it, and
//! so does a single refused connection (nothing listens: no point in
//! waiting for more evidence).
//! Open: calls are refused without touching the network, so a dead Redis
//! costs nothing per request instead of a timeout each. The store's prober
//! task waits `open_for`, then moves it to half-open and sends one probe;
//! the probe's answer closes it, or opens it again for another `open_for`.
//! Requests never probe: no caller pays a probe's timeout.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

pub use crate::observe::BreakerState;

fn state_from_u8(v: u8) -> BreakerState {
    match v {
        CLOSED => BreakerState::Closed,
        OPEN => BreakerState::Open,
        _ => BreakerState::HalfOpen,
    }
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

pub(crate) struct Breaker {
    /// Read without the lock on every L2 call; written under it.
    state: AtomicU8,
    failures: AtomicU32,
    /// When the breaker last opened; serialises transitions.
    opened_at: Mutex<Option<Instant>>,
    threshold: u32,
    open_for: Duration,
    /// Wakes the prober when the breaker opens.
    opened: Notify,
    pub(crate) opened_count: AtomicU64,
    pub(crate) closed_count: AtomicU64,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker {
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            opened_at: Mutex::new(None),
            threshold: threshold.max(1),
            open_for,
            opened: Notify::new(),
            opened_count: AtomicU64::new(0),
            closed_count: AtomicU64::new(0),
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        state_from_u8(self.state.load(Ordering::Acquire))
    }

    /// Whether a call may go to L2 now.
    #[inline]
    pub(crate) fn allows(&self) -> bool {
        self.state.load(Ordering::Acquire) == CLOSED
    }

    /// L2 answered a call.
    pub(crate) fn success(&self) {
        // Only a probe closes an open breaker: a call that started before
        // the breaker opened says little about L2 now.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// L2 failed a call (timed out, unreachable, unavailable).
    pub(crate) fn failure(&self) {
        if self.state.load(Ordering::Acquire) != CLOSED {
            return;
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.threshold {
            self.open(failures);
        }
    }

    /// L2 refused the connection: nothing listens, open now.
    pub(crate) fn trip(&self) {
        if self.state.load(Ordering::Acquire) == CLOSED {
            let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            self.open(failures);
        }
    }

    fn open(&self, failures: u32) {
        let mut opened_at = self.opened_at.lock();
        if self.state.load(Ordering::Acquire) == CLOSED {
            *opened_at = Some(Instant::now());
            self.state.store(OPEN, Ordering::Release);
            self.opened_count.fetch_add(1, Ordering::Relaxed);
            log_change(BreakerState::Open, failures);
            self.opened.notify_one();
        }
    }

    /// Waits until the breaker is open and a probe is due, then moves it
    /// to half-open: the caller must report the probe's outcome with
    /// [`probe_result`](Self::probe_result).
    pub(crate) async fn probe_due(&self) {
        loop {
            let due = {
                let opened_at = self.opened_at.lock();
                match (self.state.load(Ordering::Acquire), *opened_at) {
                    (OPEN, Some(at)) => Some(at + self.open_for),
                    _ => None,
                }
            };
            match due {
                Some(due) => {
                    tokio::time::sleep_until(due).await;
                    let _guard = self.opened_at.lock();
                    if self.state.load(Ordering::Acquire) == OPEN {
                        self.state.store(HALF_OPEN, Ordering::Release);
                        return;
                    }
                }
                None => self.opened.notified().await,
            }
        }
    }

    /// The outcome of the probe started by [`probe_due`](Self::probe_due).
    pub(crate) fn probe_result(&self, ok: bool) {
        let mut opened_at = self.opened_at.lock();
        if self.state.load(Ordering::Acquire) != HALF_OPEN {
            return;
        }
        if ok {
            *opened_at = None;
            self.failures.store(0, Ordering::Relaxed);
            self.state.store(CLOSED, Ordering::Release);
            self.closed_count.fetch_add(1, Ordering::Relaxed);
            log_change(BreakerState::Closed, 0);
        } else {
            *opened_at = Some(Instant::now());
            self.state.store(OPEN, Ordering::Release);
        }
    }
}

/// State changes are rare and matter to operators: counted always (see
/// [`HybridStats`](super::HybridStats)) and, with the `tracing` feature,
/// logged: a warning when L2 is given up on, info when it is back.
#[cfg(feature = "tracing")]
fn log_change(to: BreakerState, failures: u32) {
    match to {
        BreakerState::Open => tracing::warn!(
            target: "cachex",
            consecutive_failures = failures,
            "cachex hybrid: L2 (Redis) circuit breaker opened; serving from L1 and loaders"
        ),
        _ => tracing::info!(
            target: "cachex",
            state = to.as_str(),
            "cachex hybrid: L2 (Redis) circuit breaker closed; L2 in use again"
        ),
    }
}

#[cfg(not(feature = "tracing"))]
fn log_change(_to: BreakerState, _failures: u32) {}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("state", &self.state())
            .field("threshold", &self.threshold)
            .field("open_for", &self.open_for)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_and_closes_after_a_good_probe() {
        let breaker = Breaker::new(3, Duration::from_secs(1));
        breaker.failure();
        breaker.failure();
        breaker.success(); // resets the run
        breaker.failure();
        breaker.failure();
        assert!(breaker.allows());
        breaker.failure();
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.allows());

        breaker.probe_due().await; // after open_for, on the paused clock
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(!breaker.allows());
        breaker.probe_result(false);
        assert_eq!(breaker.state(), BreakerState::Open);

        breaker.probe_due().await;
        breaker.probe_result(true);
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.allows());
        assert_eq!(breaker.opened_count.load(Ordering::Relaxed), 1);
        assert_eq!(breaker.closed_count.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_connection_opens_it_at_once() {
        let breaker = Breaker::new(5, Duration::from_secs(1));
        breaker.trip();
        assert_eq!(breaker.state(), BreakerState::Open);
        breaker.trip(); // already open: counted once
        assert_eq!(breaker.opened_count.load(Ordering::Relaxed), 1);
    }
}
