//! Stress tests for `get_or_load`'s concurrency claims, on a multi-thread
//! runtime: many tasks hammer a few keys, with callers giving up at random
//! moments and loaders that fail or panic at random.
//!
//! Checked: two loaders never run for one key at once; every caller that
//! did not give up gets a value or an error, and exactly the one its flight's
//! loader produced; nothing hangs (each test runs under a generous timeout
//! that only a real hang reaches).

mod loading_support;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use cachex::{Cache, Error, Ttl};
use loading_support::NullStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::{sleep, timeout};

const KEYS: usize = 4;
const TASKS: usize = 64;
const CALLS_PER_TASK: usize = 1_000;
/// Only a hang takes this long; a normal run takes a second or two.
const HANG: Duration = Duration::from_secs(60);
const INJECTED: &str = "injected panic";

/// What a loader call was told to do, by its sequence number.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Plan {
    Value,
    Fail,
    Panic,
}

/// A loaded value: which key, and which loader call produced it.
type Loaded = (usize, u64);

#[derive(Debug)]
struct Injected {
    seq: u64,
}

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "injected failure #{}", self.seq)
    }
}

impl std::error::Error for Injected {}

/// What the loaders did, for the checks.
#[derive(Default)]
struct Ledger {
    /// Loaders running now, per key.
    running: [AtomicUsize; KEYS],
    /// Times a loader started while another ran for its key.
    overlaps: AtomicUsize,
    /// Loader calls dropped before finishing (their leader gave up).
    abandoned: AtomicUsize,
    next_seq: AtomicU64,
    plans: Mutex<HashMap<u64, Plan>>,
}

/// Marks a loader as running for its key while alive.
struct Running<'a> {
    ledger: &'a Ledger,
    key: usize,
    finished: bool,
}

impl<'a> Running<'a> {
    fn enter(ledger: &'a Ledger, key: usize) -> Self {
        if ledger.running[key].fetch_add(1, SeqCst) != 0 {
            ledger.overlaps.fetch_add(1, SeqCst);
        }
        Running {
            ledger,
            key,
            finished: false,
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.ledger.abandoned.fetch_add(1, SeqCst);
        }
        self.ledger.running[self.key].fetch_sub(1, SeqCst);
    }
}

fn key_name(key: usize) -> String {
    format!("key-{key}")
}

/// A loader for `key` that follows `plan` after a random delay (yields,
/// and sometimes a millisecond or two of real time so that timeouts can
/// land mid-load).
async fn loader(
    ledger: Arc<Ledger>,
    key: usize,
    plan: Plan,
    delay: (u32, Duration),
) -> Result<Loaded, Injected> {
    let mut running = Running::enter(&ledger, key);
    let seq = ledger.next_seq.fetch_add(1, SeqCst);
    ledger.plans.lock().unwrap().insert(seq, plan);
    for _ in 0..delay.0 {
        tokio::task::yield_now().await;
    }
    if !delay.1.is_zero() {
        sleep(delay.1).await;
    }
    running.finished = true;
    drop(running);
    match plan {
        Plan::Value => Ok((key, seq)),
        Plan::Fail => Err(Injected { seq }),
        Plan::Panic => panic!("{INJECTED} #{seq}"),
    }
}

/// Keeps the injected panics out of the test output (the cache catches
/// them; the default hook would still print each one).
fn silence_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info.payload().downcast_ref::<String>();
            if !message.is_some_and(|m| m.starts_with(INJECTED)) {
                default(info);
            }
        }));
    });
}

/// What one caller saw.
#[derive(Default)]
struct Tally {
    values: usize,
    errors: usize,
    gave_up: usize,
}

/// Checks one caller's outcome against what the loader of its flight was
/// told to do.
fn check(ledger: &Ledger, key: usize, outcome: Result<Loaded, Error>, tally: &mut Tally) {
    let plan_of = |seq: u64| ledger.plans.lock().unwrap()[&seq];
    match outcome {
        Ok((loaded_key, seq)) => {
            assert_eq!(loaded_key, key, "a value for another key");
            assert_eq!(plan_of(seq), Plan::Value);
            tally.values += 1;
        }
        Err(Error::Loader { key: name, source }) => {
            assert_eq!(*name, key_name(key));
            let injected = source
                .downcast_ref::<Injected>()
                .expect("the loader's own error");
            assert_eq!(plan_of(injected.seq), Plan::Fail);
            tally.errors += 1;
        }
        Err(Error::LoaderPanicked { key: name, message }) => {
            assert_eq!(*name, key_name(key));
            let seq = message
                .strip_prefix(&format!("{INJECTED} #"))
                .and_then(|seq| seq.parse().ok())
                .expect("the loader's own panic");
            assert_eq!(plan_of(seq), Plan::Panic);
            tally.errors += 1;
        }
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

/// One task's calls: random keys, plans, delays and patience.
async fn hammer(cache: Cache<Loaded>, ledger: Arc<Ledger>, seed: u64, invalidate: bool) -> Tally {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    for _ in 0..CALLS_PER_TASK {
        let key = rng.random_range(0..KEYS);
        let name = key_name(key);
        if invalidate && rng.random_bool(0.05) {
            if rng.random_bool(0.5) {
                cache.delete(&name).await.unwrap();
            } else {
                let seq = ledger.next_seq.fetch_add(1, SeqCst);
                ledger.plans.lock().unwrap().insert(seq, Plan::Value);
                cache
                    .set(&name, (key, seq), Ttl::After(Duration::from_millis(2)))
                    .await
                    .unwrap();
            }
            continue;
        }
        let plan = match rng.random_range(0..100) {
            0..80 => Plan::Value,
            80..92 => Plan::Fail,
            _ => Plan::Panic,
        };
        let sleep_for = if rng.random_bool(0.3) {
            Duration::from_micros(rng.random_range(500..2_000))
        } else {
            Duration::ZERO
        };
        let delay = (rng.random_range(0..8), sleep_for);
        let load = {
            let ledger = Arc::clone(&ledger);
            cache.get_or_load(&name, move || loader(ledger, key, plan, delay))
        };
        let outcome = match rng.random_range(0..100) {
            // Gives up after a single poll: right after joining or leading.
            0..5 => timeout(Duration::ZERO, load).await,
            // Gives up somewhere during the load, or not at all.
            5..30 => timeout(Duration::from_micros(rng.random_range(0..3_000)), load).await,
            _ => Ok(load.await),
        };
        match outcome {
            Ok(outcome) => check(&ledger, key, outcome, &mut tally),
            Err(_elapsed) => tally.gave_up += 1,
        }
    }
    tally
}

async fn run(cache: Cache<Loaded>, invalidate: bool) -> (Arc<Ledger>, Tally) {
    silence_injected_panics();
    let ledger = Arc::new(Ledger::default());
    let tasks: Vec<_> = (0..TASKS as u64)
        .map(|seed| tokio::spawn(hammer(cache.clone(), Arc::clone(&ledger), seed, invalidate)))
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.expect("a caller panicked");
        total.values += tally.values;
        total.errors += tally.errors;
        total.gave_up += tally.gave_up;
    }
    (ledger, total)
}

/// Over a store that keeps nothing, so that every call goes through a
/// flight: the singleflight invariants, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_loader_per_key_at_a_time_under_random_cancellation_and_failures() {
    let cache: Cache<Loaded> = Cache::builder().store(NullStore).build();
    let (ledger, tally) = timeout(HANG, run(cache.clone(), false))
        .await
        .expect("hung");

    assert_eq!(
        ledger.overlaps.load(SeqCst),
        0,
        "two loaders ran for one key at once"
    );
    assert_eq!(
        tally.values + tally.errors + tally.gave_up,
        TASKS * CALLS_PER_TASK
    );
    // The scenario really happened: shared loads, failures, abandoned
    // leaders, and callers who gave up.
    let stats = cache.stats();
    assert!(stats.singleflight_waits > 0, "{stats:?}");
    assert!(tally.errors > 0 && tally.gave_up > 0);
    assert!(
        ledger.abandoned.load(SeqCst) > 0,
        "no leader was ever cancelled"
    );
    let calls = ledger.next_seq.load(SeqCst);
    assert_eq!(
        stats.loader_calls() + ledger.abandoned.load(SeqCst) as u64,
        calls,
        "every loader call either finished (and was counted) or was abandoned"
    );
    assert!(
        calls < (TASKS * CALLS_PER_TASK) as u64,
        "no load was shared"
    );
}

/// Over the in-memory store, with writes and deletes racing the loads
/// (which may then overlap by design: a write detaches the flight). Nothing
/// hangs, and every answer is a valid one for its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loads_racing_writes_and_deletes_never_hang_or_mix_keys() {
    let cache: Cache<Loaded> = Cache::builder()
        .default_ttl(Duration::from_millis(3))
        .build();
    let (_ledger, tally) = timeout(HANG, run(cache.clone(), true)).await.expect("hung");
    assert!(tally.values > 0);
    cache.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_callers_on_many_threads_share_one_load() {
    let cache: Cache<u64> = Cache::builder().build();
    let calls = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..10_000)
        .map(|_| {
            let (cache, calls) = (cache.clone(), Arc::clone(&calls));
            tokio::spawn(async move {
                cache
                    .get_or_load("cold", move || async move {
                        calls.fetch_add(1, SeqCst);
                        sleep(Duration::from_millis(20)).await;
                        Ok::<_, std::io::Error>(42)
                    })
                    .await
            })
        })
        .collect();
    let all = async {
        for caller in callers {
            assert_eq!(caller.await.unwrap().unwrap(), 42);
        }
    };
    timeout(HANG, all).await.expect("hung");
    assert_eq!(calls.load(SeqCst), 1);
}
