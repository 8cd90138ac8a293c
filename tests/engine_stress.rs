//! Concurrency stress tests: several threads reading, writing and removing
//! while a clock thread moves a shared manual clock and a monitor thread
//! samples the size bound. Each run prints its seed (`ENGINE_STRESS_SEED`
//! replays the operation mix, not the interleaving).

mod engine_common;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::SeqCst};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread;
use std::time::Duration;

use cachex::{MemoryCache, RemovalCause, Ttl};
use engine_common::ManualClock;
use rand_like::Rng;

/// Operations per worker thread, scaled down for unoptimised builds.
fn ops_per_thread(release: u64, debug: u64) -> u64 {
    if cfg!(debug_assertions) {
        debug
    } else {
        release
    }
}

/// A tiny deterministic-per-seed generator (xorshift), so the workers need
/// no extra dependency.
mod rand_like {
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        pub fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        /// Uniform in `0..n`.
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }
}

/// A fresh seed per run (or `ENGINE_STRESS_SEED`), printed so a failure's
/// operation mix can be replayed (thread interleavings cannot).
fn seed() -> u64 {
    let seed = std::env::var("ENGINE_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    eprintln!("seed: {seed}");
    seed
}

/// The value stored: which key it was written under, and a unique id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Val {
    key: u16,
    id: u32,
}

/// Facts about each value id, shared between workers and the listener.
struct Ledger {
    /// Listener calls per id (must end at exactly 1).
    departures: Vec<AtomicU8>,
    /// The earliest the value's deadline can be (clock read before the
    /// insert, plus the TTL); `u64::MAX` for no deadline.
    earliest_deadline: Vec<AtomicU64>,
    /// The latest the value's deadline can be (clock read after the insert
    /// returned, plus the TTL); `u64::MAX` until known, or for no deadline.
    latest_deadline: Vec<AtomicU64>,
    /// The TTL given, in ns (`u64::MAX` for none).
    ttl: Vec<AtomicU64>,
    causes: [AtomicU64; 4],
    next_id: AtomicU32,
}

impl Ledger {
    fn new(ids: usize) -> Self {
        let fill = |v: u64| (0..ids).map(|_| AtomicU64::new(v)).collect::<Vec<_>>();
        Ledger {
            departures: (0..ids).map(|_| AtomicU8::new(0)).collect(),
            earliest_deadline: fill(u64::MAX),
            latest_deadline: fill(u64::MAX),
            ttl: fill(u64::MAX),
            causes: Default::default(),
            next_id: AtomicU32::new(0),
        }
    }

    fn cause_index(cause: RemovalCause) -> usize {
        match cause {
            RemovalCause::Size => 0,
            RemovalCause::Expired => 1,
            RemovalCause::Explicit => 2,
            RemovalCause::Replaced => 3,
            other => panic!("unknown cause {other:?}"),
        }
    }
}

const MIXED_CAPACITY: u64 = 400; // 4 shards of 100
const MIXED_KEYS: u64 = 1_024;
const DEFAULT_TTL: Duration = Duration::from_millis(30);

#[test]
fn mixed_workload_keeps_bound_freshness_and_exactly_once_delivery() {
    const THREADS: u64 = 4;
    let ops = ops_per_thread(400_000, 60_000);
    let seed = seed();
    let clock = ManualClock::new();
    let ledger = Arc::new(Ledger::new((THREADS * ops) as usize));

    let listener_ledger = Arc::clone(&ledger);
    let listener_clock = clock.clone();
    let cache: MemoryCache<u16, Val> = MemoryCache::builder()
        .max_capacity(MIXED_CAPACITY)
        .shards(4)
        .time_to_live(DEFAULT_TTL)
        .ttl_jitter(0.5)
        .clock(clock.source())
        .eviction_listener(move |key: u16, val: Val, cause| {
            let ledger = &listener_ledger;
            assert_eq!(key, val.key, "listener got a value under the wrong key");
            let id = val.id as usize;
            ledger.departures[id].fetch_add(1, SeqCst);
            ledger.causes[Ledger::cause_index(cause)].fetch_add(1, SeqCst);
            if cause == RemovalCause::Expired {
                let earliest = ledger.earliest_deadline[id].load(SeqCst);
                let now = listener_clock.now_ns();
                assert!(
                    earliest <= now,
                    "value {id} reported Expired at {now} ns, but its deadline is at least {earliest} ns"
                );
            }
        })
        .build();

    let stop = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (cache, stop) = (cache.clone(), Arc::clone(&stop));
        thread::spawn(move || {
            let mut samples = 0u64;
            while !stop.load(SeqCst) {
                let (len, weight) = (cache.len(), cache.weighted_size());
                assert!(len <= MIXED_CAPACITY, "len {len} > capacity");
                assert!(
                    weight <= MIXED_CAPACITY,
                    "weighted_size {weight} > capacity"
                );
                samples += 1;
                thread::yield_now();
            }
            samples
        })
    };
    let ticker = {
        let (clock, stop) = (clock.clone(), Arc::clone(&stop));
        thread::spawn(move || {
            let mut rng = Rng::new(seed ^ 0xC10C);
            while !stop.load(SeqCst) {
                clock.advance(Duration::from_micros(rng.below(1_000)));
                thread::yield_now();
            }
        })
    };

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (cache, clock, ledger) = (cache.clone(), clock.clone(), Arc::clone(&ledger));
            thread::spawn(move || {
                let mut rng = Rng::new(seed.wrapping_add(t));
                let mut hits = 0u64;
                for _ in 0..ops {
                    let key = rng.below(MIXED_KEYS) as u16;
                    let roll = rng.below(100);
                    let before = clock.now_ns();
                    // A value handed out must not have been expired when the
                    // call began: its latest possible deadline is after `before`.
                    let check_fresh = |val: Val, what: &str| {
                        assert_eq!(val.key, key, "{what}({key}) returned another key's value");
                        let latest = ledger.latest_deadline[val.id as usize].load(SeqCst);
                        assert!(
                            latest > before,
                            "{what}({key}) returned value {} whose deadline ({latest} ns at the latest) \
                             had passed when the call began ({before} ns)",
                            val.id
                        );
                    };
                    match roll {
                        0..=39 => {
                            if let Some(val) = cache.get(&key) {
                                check_fresh(val, "get");
                                hits += 1;
                            }
                        }
                        40..=44 => {
                            if let Some((val, remaining)) = cache.get_with_ttl(&key) {
                                check_fresh(val, "get_with_ttl");
                                let ttl = ledger.ttl[val.id as usize].load(SeqCst);
                                match remaining {
                                    None => assert_eq!(ttl, u64::MAX, "value {} lost its TTL", val.id),
                                    Some(r) => {
                                        assert!(!r.is_zero(), "a live entry with no time left");
                                        assert!(r.as_nanos() as u64 <= ttl, "remaining {r:?} > TTL {ttl} ns");
                                    }
                                }
                            }
                        }
                        45..=49 => {
                            let _ = cache.contains_key(&key);
                            let _ = cache.remaining_ttl(&key);
                        }
                        50..=84 => {
                            let id = ledger.next_id.fetch_add(1, SeqCst);
                            let idx = id as usize;
                            let (ttl, ttl_ns) = match rng.below(10) {
                                0..=5 => {
                                    let d = Duration::from_micros(rng.below(20_000));
                                    (Ttl::After(d), d.as_nanos() as u64)
                                }
                                6..=7 => (Ttl::Never, u64::MAX),
                                _ => (Ttl::Default, DEFAULT_TTL.as_nanos() as u64),
                            };
                            // The jitter only shortens the default TTL, so
                            // the earliest deadline of a default entry is
                            // half of it away.
                            let earliest_ttl = if ttl == Ttl::Default { ttl_ns / 2 } else { ttl_ns };
                            ledger.ttl[idx].store(ttl_ns, SeqCst);
                            ledger.earliest_deadline[idx]
                                .store(before.saturating_add(earliest_ttl), SeqCst);
                            cache.insert_with_ttl(key, Val { key, id }, ttl);
                            let after = clock.now_ns();
                            let len = cache.len();
                            assert!(len <= MIXED_CAPACITY, "len {len} > capacity");
                            ledger.latest_deadline[idx].store(after.saturating_add(ttl_ns), SeqCst);
                        }
                        85..=97 => {
                            if let Some(val) = cache.remove(&key) {
                                check_fresh(val, "remove");
                            }
                        }
                        // Workers move the clock too, so expiry keeps pace
                        // however the threads are scheduled.
                        _ => clock.advance(Duration::from_micros(rng.below(300))),
                    }
                }
                hits
            })
        })
        .collect();

    let hits: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    stop.store(true, SeqCst);
    let samples = monitor.join().unwrap();
    ticker.join().unwrap();

    cache.clear();
    assert_eq!(cache.len(), 0);
    let inserted = ledger.next_id.load(SeqCst) as usize;
    let mut wrong = Vec::new();
    for (id, n) in ledger.departures[..inserted].iter().enumerate() {
        let n = n.load(SeqCst);
        if n != 1 {
            wrong.push((id, n));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {inserted} values were not reported exactly once (id, times): {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(20)]
    );
    let causes: Vec<u64> = ledger.causes.iter().map(|c| c.load(SeqCst)).collect();
    eprintln!("inserted {inserted}, hits {hits}, monitor samples {samples}, [size, expired, explicit, replaced] = {causes:?}");
    assert!(
        causes.iter().all(|&n| n > 0),
        "every cause exercised: {causes:?}"
    );
    assert!(hits > 0 && samples > 0);
    let stats = cache.stats();
    assert_eq!(
        stats.updates + stats.removals + stats.evictions_size + stats.evictions_expired,
        inserted as u64,
        "stats disagree with the listener: {stats:?}"
    );
}

/// Many threads inserting fresh keys at once; the bound (entries and
/// weight) must hold at every sample, and everything inserted is either
/// still cached or was reported.
fn write_storm(shards: usize, weighted: bool) {
    const THREADS: u64 = 4;
    const CAPACITY: u64 = 2_000;
    let ops = ops_per_thread(300_000, 60_000);
    let weight_of = |key: u64| 1 + (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as u32;
    let departed = Arc::new(AtomicU64::new(0));
    let departed_weight = Arc::new(AtomicU64::new(0));
    let mut builder = MemoryCache::builder()
        .max_capacity(CAPACITY)
        .shards(shards)
        .eviction_listener({
            let (departed, departed_weight) = (Arc::clone(&departed), Arc::clone(&departed_weight));
            move |key: u64, value: u64, cause| {
                assert_eq!(key, value);
                assert_eq!(
                    cause,
                    RemovalCause::Size,
                    "only size evictions in a storm of fresh keys"
                );
                departed.fetch_add(1, SeqCst);
                departed_weight.fetch_add(u64::from(weight_of(key)), SeqCst);
            }
        });
    if weighted {
        builder = builder.weigher(move |k: &u64, _v: &u64| weight_of(*k));
    }
    let cache: MemoryCache<u64, u64> = builder.build();

    let stop = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (cache, stop) = (cache.clone(), Arc::clone(&stop));
        thread::spawn(move || {
            let mut samples = 0u64;
            while !stop.load(SeqCst) {
                let (len, weight) = (cache.len(), cache.weighted_size());
                assert!(len <= CAPACITY, "len {len} > capacity");
                assert!(weight <= CAPACITY, "weighted_size {weight} > capacity");
                samples += 1;
                thread::yield_now();
            }
            samples
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let cache = cache.clone();
            thread::spawn(move || {
                for i in 0..ops {
                    let key = t << 32 | i;
                    cache.insert(key, key);
                    let (len, weight) = (cache.len(), cache.weighted_size());
                    assert!(
                        len <= CAPACITY && weight <= CAPACITY,
                        "len {len}, weight {weight}"
                    );
                    if i % 64 == 0 {
                        // Some reads, so the policy sees hits too.
                        let _ = cache.get(&(t << 32 | (i / 2)));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, SeqCst);
    let samples = monitor.join().unwrap();
    assert!(samples > 0);

    let total = THREADS * ops;
    let mut present = 0u64;
    let mut present_weight = 0u64;
    for t in 0..THREADS {
        for i in 0..ops {
            let key = t << 32 | i;
            if cache.contains_key(&key) {
                present += 1;
                present_weight += u64::from(weight_of(key));
            }
        }
    }
    assert_eq!(cache.len(), present);
    assert_eq!(
        present + departed.load(SeqCst),
        total,
        "an entry vanished unreported"
    );
    if weighted {
        assert_eq!(cache.weighted_size(), present_weight);
        assert!(present_weight <= CAPACITY);
        assert_eq!(
            present_weight + departed_weight.load(SeqCst),
            (0..THREADS)
                .flat_map(|t| (0..ops).map(move |i| u64::from(weight_of(t << 32 | i))))
                .sum::<u64>()
        );
    } else {
        assert_eq!(cache.weighted_size(), present);
    }
    let used = if weighted { present_weight } else { present };
    assert!(
        used > CAPACITY / 2,
        "the cache is used: {used} of {CAPACITY}"
    );
}

#[test]
fn write_storm_one_shard() {
    write_storm(1, false);
}

#[test]
fn write_storm_eight_shards() {
    // 8 shards of 250.
    write_storm(8, false);
}

#[test]
fn weighted_write_storm_one_shard() {
    write_storm(1, true);
}

#[test]
fn weighted_write_storm_eight_shards() {
    write_storm(8, true);
}

/// A listener that calls back into the cache while other threads use it
/// must not deadlock.
#[test]
fn reentrant_listener_under_concurrency() {
    const THREADS: u64 = 4;
    let ops = ops_per_thread(50_000, 10_000);
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let clock = ManualClock::new();
        let cell: Arc<OnceLock<MemoryCache<u64, u64>>> = Arc::new(OnceLock::new());
        let calls = Arc::new(AtomicU64::new(0));
        let cache = MemoryCache::builder()
            .max_capacity(60) // 2 shards of 30
            .shards(2)
            .clock(clock.source())
            .eviction_listener({
                let (cell, calls) = (Arc::clone(&cell), Arc::clone(&calls));
                move |key: u64, value: u64, _cause| {
                    calls.fetch_add(1, SeqCst);
                    let cache = cell.get().unwrap();
                    let _ = cache.get(&key);
                    let _ = (cache.len(), cache.stats());
                    if key < 1_000_000 {
                        cache.insert_with_ttl(key + 1_000_000, value, Ttl::Never);
                    } else {
                        cache.remove(&(key - 1));
                    }
                }
            })
            .build();
        assert!(cell.set(cache.clone()).is_ok());
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (cache, clock) = (cache.clone(), clock.clone());
                thread::spawn(move || {
                    let mut rng = Rng::new(t + 1);
                    for _ in 0..ops {
                        let key = rng.below(200);
                        match rng.below(10) {
                            0..=4 => {
                                let ttl = Duration::from_micros(rng.below(5_000));
                                cache.insert_with_ttl(key, key, Ttl::After(ttl));
                            }
                            5..=7 => {
                                let _ = cache.get(&key);
                            }
                            8 => {
                                cache.remove(&key);
                            }
                            _ => {
                                clock.advance(Duration::from_micros(500));
                                cache.run_pending_tasks();
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        cache.clear();
        done_tx.send(calls.load(SeqCst)).unwrap();
    });
    let calls = done_rx.recv_timeout(Duration::from_secs(120)).expect(
        "workers finished (otherwise the re-entrant listener deadlocked or a worker panicked)",
    );
    assert!(calls > 0);
}
