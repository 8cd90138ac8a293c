//! What the fault scenarios measure, and the bookkeeping that tells a lost
//! or stale write from a good one.
//!
//! - [`Figures`]: per scenario, the calls made, the errors callers saw,
//!   the p99 latency of calls, loader calls, stale reads and the time to
//!   recover; printed as one `FIGURES` line (gathered in
//!   `docs/BENCHMARKS.md`).
//! - [`Ledger`]: per key, the newest version a write was acknowledged for
//!   and the newest one attempted. A read below the acknowledged version
//!   it started after is stale; a final value below it is a lost write;
//!   a value above it (up to the attempted one) is a write whose reply was
//!   lost, which is allowed.
#![allow(dead_code)] // each test binary uses its own subset

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Only a guard against a hang, never a performance claim.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Fails the test instead of hanging it.
pub async fn guarded<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// Polls `check` until it holds; panics with `what` after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What one scenario measured.
#[derive(Debug)]
pub struct Figures {
    name: String,
    calls: AtomicU64,
    errors: AtomicU64,
    loads: AtomicU64,
    stale_reads: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
    fault_at: Mutex<Option<Instant>>,
    /// Whether a call failed since the fault: recovery is the first
    /// success after that.
    failed_since_fault: std::sync::atomic::AtomicBool,
    recovered_after: Mutex<Option<Duration>>,
}

impl Figures {
    pub fn new(name: &str) -> Figures {
        Figures {
            name: name.to_string(),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            stale_reads: AtomicU64::new(0),
            latencies: Mutex::new(Vec::new()),
            fault_at: Mutex::new(None),
            failed_since_fault: std::sync::atomic::AtomicBool::new(false),
            recovered_after: Mutex::new(None),
        }
    }

    /// Counts one call that started at `started`, and whether it failed
    /// (an error a user would see).
    pub fn call<T, E>(&self, started: Instant, result: &Result<T, E>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
            self.failed();
        }
        self.latencies.lock().unwrap().push(started.elapsed());
    }

    pub fn load(&self) {
        self.loads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stale_read(&self) {
        self.stale_reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks the moment the fault began (the clock of "time to recover").
    pub fn fault(&self) {
        *self.fault_at.lock().unwrap() = Some(Instant::now());
        self.failed_since_fault.store(false, Ordering::SeqCst);
        *self.recovered_after.lock().unwrap() = None;
    }

    /// Something failed that a later success shows recovered (a call's
    /// error is counted so by [`call`](Self::call); an invisible failure,
    /// such as a loader call standing in for Redis, is marked here).
    pub fn failed(&self) {
        if self.fault_at.lock().unwrap().is_some() {
            self.failed_since_fault.store(true, Ordering::SeqCst);
        }
    }

    /// Marks recovery: the first success after a failure that followed
    /// the fault. A fault nobody noticed recovers in 0.
    pub fn recovered(&self) {
        if !self.failed_since_fault.load(Ordering::SeqCst) {
            return;
        }
        let fault_at = *self.fault_at.lock().unwrap();
        let mut recovered = self.recovered_after.lock().unwrap();
        if let (Some(at), None) = (fault_at, *recovered) {
            *recovered = Some(at.elapsed());
        }
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    pub fn stale_reads(&self) -> u64 {
        self.stale_reads.load(Ordering::Relaxed)
    }

    pub fn recovered_after(&self) -> Option<Duration> {
        *self.recovered_after.lock().unwrap()
    }

    /// The latency under which 99% of calls finished, and the slowest.
    pub fn p99_and_max(&self) -> (Duration, Duration) {
        let mut latencies = self.latencies.lock().unwrap().clone();
        latencies.sort_unstable();
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        (at(0.99), at(1.0))
    }

    /// One line for the log (and `docs/BENCHMARKS.md`).
    pub fn print(&self) {
        let (p99, max) = self.p99_and_max();
        let recover = self
            .recovered_after()
            .map_or("-".to_string(), |d| format!("{}", d.as_millis()));
        println!(
            "FIGURES {}: calls={} errors={} p99_ms={:.1} max_ms={:.1} loads={} stale_reads={} recover_ms={}",
            self.name,
            self.calls(),
            self.errors(),
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            self.loads(),
            self.stale_reads(),
            recover,
        );
    }
}

/// Per key: the newest version acknowledged, and the newest attempted.
#[derive(Debug)]
pub struct Ledger {
    acked: Vec<AtomicU64>,
    attempted: Vec<AtomicU64>,
}

impl Ledger {
    pub fn new(keys: usize) -> Ledger {
        Ledger {
            acked: (0..keys).map(|_| AtomicU64::new(0)).collect(),
            attempted: (0..keys).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn keys(&self) -> usize {
        self.acked.len()
    }

    /// The next version to write to `key` (one writer per key).
    pub fn attempt(&self, key: usize) -> u64 {
        self.attempted[key].fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The write of `version` to `key` was acknowledged.
    pub fn ack(&self, key: usize, version: u64) {
        self.acked[key].fetch_max(version, Ordering::SeqCst);
    }

    /// The version a read of `key` starting now must see at least.
    pub fn floor(&self, key: usize) -> u64 {
        self.acked[key].load(Ordering::SeqCst)
    }

    pub fn attempted(&self, key: usize) -> u64 {
        self.attempted[key].load(Ordering::SeqCst)
    }

    /// Checks the value found under `key` at the end: at least the
    /// acknowledged version (else the write was lost), at most the
    /// attempted one (else it came from nowhere).
    pub fn check_final(&self, key: usize, found: Option<u64>) -> Result<(), String> {
        let (acked, attempted) = (self.floor(key), self.attempted(key));
        let found = found.unwrap_or(0);
        if found < acked {
            return Err(format!(
                "key {key}: acknowledged version {acked} lost (found {found})"
            ));
        }
        if found > attempted {
            return Err(format!(
                "key {key}: version {found} was never written (newest attempt {attempted})"
            ));
        }
        Ok(())
    }
}
