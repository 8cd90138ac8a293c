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
    last_failure: Mutex<Option<Instant>>,
    recovered_at: Mutex<Option<Instant>>,
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
            last_failure: Mutex::new(None),
            recovered_at: Mutex::new(None),
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
        *self.last_failure.lock().unwrap() = None;
        *self.recovered_at.lock().unwrap() = None;
    }

    /// Something failed (a call's error is counted so by
    /// [`call`](Self::call); an invisible failure, such as a loader call
    /// standing in for Redis, may be marked here).
    pub fn failed(&self) {
        if self.fault_at.lock().unwrap().is_some() {
            *self.last_failure.lock().unwrap() = Some(Instant::now());
            *self.recovered_at.lock().unwrap() = None;
        }
    }

    /// A success: the first one after the last failure is the recovery.
    pub fn recovered(&self) {
        let mut recovered = self.recovered_at.lock().unwrap();
        if recovered.is_none() {
            *recovered = Some(Instant::now());
        }
    }

    /// From the fault to the first success after the last failure since
    /// it; zero if nothing failed; `None` until something succeeded after
    /// the last failure.
    pub fn recovered_after(&self) -> Option<Duration> {
        let fault_at = (*self.fault_at.lock().unwrap())?;
        let recovered_at = (*self.recovered_at.lock().unwrap())?;
        match *self.last_failure.lock().unwrap() {
            None => Some(Duration::ZERO),
            Some(_) => Some(recovered_at.saturating_duration_since(fault_at)),
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

/// A mixed load on one `Cache`: `writers` tasks each own some keys and
/// write new versions of them (the "database", [`Ledger::attempt`],
/// first, then `Cache::set`, as an application does); `readers` tasks
/// read random keys with `get_or_load`, whose loader reads the database.
/// Every call is counted in the figures; a read below the version
/// acknowledged before it started is a stale read.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(
        cache: &cachex::Cache<u64>,
        ledger: &std::sync::Arc<Ledger>,
        figures: &std::sync::Arc<Figures>,
        writers: usize,
        readers: usize,
    ) -> Load {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for writer in 0..writers {
            let (cache, ledger, figures, stop) =
                (cache.clone(), ledger.clone(), figures.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mine: Vec<usize> = (writer..ledger.keys()).step_by(writers).collect();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = mine[i % mine.len()];
                    i += 1;
                    let version = ledger.attempt(key);
                    let started = Instant::now();
                    let result = cache
                        .set(&key.to_string(), version, cachex::Ttl::Default)
                        .await;
                    figures.call(started, &result);
                    match result {
                        Ok(()) => {
                            ledger.ack(key, version);
                            figures.recovered();
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }));
        }
        for reader in 0..readers {
            let (cache, ledger, figures, stop) =
                (cache.clone(), ledger.clone(), figures.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut random = 0x9E37_79B9_7F4A_7C15u64 ^ reader as u64;
                while !stop.load(Ordering::Relaxed) {
                    random ^= random << 13;
                    random ^= random >> 7;
                    random ^= random << 17;
                    let key = (random % ledger.keys() as u64) as usize;
                    let floor = ledger.floor(key);
                    let started = Instant::now();
                    let (ledger2, figures2) = (ledger.clone(), figures.clone());
                    let result = cache
                        .get_or_load(&key.to_string(), move || async move {
                            figures2.load();
                            Ok::<_, std::io::Error>(ledger2.attempted(key))
                        })
                        .await;
                    figures.call(started, &result);
                    match result {
                        Ok(found) if found < floor => figures.stale_read(),
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }));
        }
        Load { stop, tasks }
    }

    /// Stops every task and waits for them (a hung call fails the test).
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            guarded("a load task", task)
                .await
                .expect("a load task panicked");
        }
    }
}
