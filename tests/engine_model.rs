//! Model-based property tests: random operation sequences run against a
//! `MemoryCache` and against a plain `HashMap` model with deadlines.
//!
//! Two models:
//!
//! - **Exact** (with an eviction listener): the listener tells the model
//!   which entries left the cache and why, so the model knows precisely
//!   what is stored. Every read must then agree exactly with the model,
//!   `len`/`weighted_size` must equal the model's, every departure must have
//!   a cause consistent with the model (Replaced only for a live old value,
//!   Expired only past the deadline, Explicit only on remove/clear, Size
//!   only on inserts), and every inserted value is reported exactly once.
//! - **Weak** (no listener, a separate code path in the engine): the cache
//!   may hold fewer entries than the model, but a hit must be the model's
//!   latest, unexpired value.
//!
//! Time comes from a manual clock, advanced by the `Advance` operation.

mod engine_common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cachex::{MemoryCache, RemovalCause, Ttl};
use engine_common::{ManualClock, Recorder};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

const MS: u64 = 1_000_000;
const NEVER: u64 = u64::MAX;
/// Deadline of a default-TTL entry with jitter until the model learns it.
const UNKNOWN: u64 = u64::MAX - 1;
/// `run_pending_tasks` reclaims through a timer wheel whose finest buckets
/// are 2^20 ns wide: an entry whose deadline passed less than a bucket ago
/// may survive it (reads still treat it as absent). Anything older must go.
const RECLAIM_SLACK_NS: u64 = 2 << 20;

#[derive(Clone, Copy, Debug)]
enum TtlChoice {
    Default,
    Never,
    AfterMs(u64),
}

impl TtlChoice {
    fn ttl(self) -> Ttl {
        match self {
            TtlChoice::Default => Ttl::Default,
            TtlChoice::Never => Ttl::Never,
            TtlChoice::AfterMs(ms) => Ttl::After(Duration::from_millis(ms)),
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Insert(u8, TtlChoice),
    Get(u8),
    GetWithTtl(u8),
    Contains(u8),
    RemainingTtl(u8),
    Remove(u8),
    Clear,
    AdvanceMs(u64),
    RunPending,
}

#[derive(Clone, Debug)]
struct Setup {
    capacity: u64,
    shards: usize,
    default_ttl_ms: Option<u64>,
    jitter: f64,
    weighted: bool,
}

fn weight_of(id: u32) -> u64 {
    1 + u64::from(id % 4)
}

fn ttl_choice(with_ttls: bool) -> BoxedStrategy<TtlChoice> {
    if !with_ttls {
        return prop_oneof![Just(TtlChoice::Default), Just(TtlChoice::Never)].boxed();
    }
    prop_oneof![
        3 => Just(TtlChoice::Default),
        1 => Just(TtlChoice::Never),
        3 => (0u64..3_000).prop_map(TtlChoice::AfterMs),
        1 => Just(TtlChoice::AfterMs(0)),
    ]
    .boxed()
}

fn op(keys: u8, with_ttls: bool, reads: u32) -> BoxedStrategy<Op> {
    let key = 0..keys;
    let advance = if with_ttls { 0u64..1_500 } else { 0u64..1 };
    prop_oneof![
        10 => (key.clone(), ttl_choice(with_ttls)).prop_map(|(k, t)| Op::Insert(k, t)),
        reads => key.clone().prop_map(Op::Get),
        1 => key.clone().prop_map(Op::GetWithTtl),
        1 => key.clone().prop_map(Op::Contains),
        1 => key.clone().prop_map(Op::RemainingTtl),
        3 => key.prop_map(Op::Remove),
        1 => Just(Op::Clear),
        4 => advance.prop_map(Op::AdvanceMs),
        1 => Just(Op::RunPending),
    ]
    .boxed()
}

fn shards() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(1usize), 1 => Just(2), 1 => Just(4), 1 => Just(8)]
}

/// Any configuration: small capacities, TTLs, jitter, weights.
fn any_setup() -> impl Strategy<Value = Setup> {
    (
        0u64..=64,
        shards(),
        prop::option::of(1u64..3_000),
        prop_oneof![Just(0.0), Just(0.5)],
        any::<bool>(),
    )
        .prop_map(
            |(capacity, shards, default_ttl_ms, jitter, weighted)| Setup {
                capacity,
                shards,
                default_ttl_ms,
                jitter,
                weighted,
            },
        )
}

fn any_case() -> impl Strategy<Value = (Setup, Vec<Op>)> {
    (any_setup(), 1u8..=24).prop_flat_map(|(setup, keys)| {
        (
            Just(setup),
            prop::collection::vec(op(keys, true, 7), 1..160),
        )
    })
}

/// Long, read-heavy runs: enough evictions and returns for the admission
/// window to move, and requests for the frequency sketch to age.
fn long_case() -> impl Strategy<Value = (Setup, Vec<Op>)> {
    (any_setup(), 1u8..=64).prop_flat_map(|(setup, keys)| {
        (
            Just(setup),
            prop::collection::vec(op(keys, true, 40), 2_000..5_000),
        )
    })
}

/// Every shard can hold every key, and nothing expires.
fn roomy_case() -> impl Strategy<Value = (Setup, Vec<Op>)> {
    (1u8..=24, shards(), 0u64..8).prop_flat_map(|(keys, shards, extra)| {
        let setup = Setup {
            capacity: u64::from(keys) * shards as u64 + extra,
            shards,
            default_ttl_ms: None,
            jitter: 0.0,
            weighted: false,
        };
        (
            Just(setup),
            prop::collection::vec(op(keys, false, 7), 1..160),
        )
    })
}

fn build(setup: &Setup, clock: &ManualClock) -> cachex::MemoryCacheBuilder<u8, u32> {
    let mut builder = MemoryCache::builder()
        .max_capacity(setup.capacity)
        .shards(setup.shards)
        .ttl_jitter(setup.jitter)
        .clock(clock.source());
    if let Some(ms) = setup.default_ttl_ms {
        builder = builder.time_to_live(Duration::from_millis(ms));
    }
    if setup.weighted {
        builder = builder.weigher(|_k, v: &u32| weight_of(*v) as u32);
    }
    builder
}

// ---------------------------------------------------------------------------
// The exact model
// ---------------------------------------------------------------------------

#[derive(Default, Debug)]
struct Counts {
    hits: u64,
    misses: u64,
    insert_ops: u64,
    replaced: u64,
    explicit: u64,
    size: u64,
    expired: u64,
}

struct Exact {
    setup: Setup,
    clock: ManualClock,
    cache: MemoryCache<u8, u32>,
    recorder: Recorder<u8, u32>,
    next_id: u32,
    /// What the cache stores (expired or not), as far as the listener says:
    /// key -> (value id, deadline in ns on the cache's clock).
    current: HashMap<u8, (u32, u64)>,
    reported: HashSet<u32>,
    counts: Counts,
}

impl Exact {
    fn new(setup: Setup) -> Self {
        let clock = ManualClock::new();
        let recorder = Recorder::new();
        let cache = build(&setup, &clock)
            .eviction_listener(recorder.listener())
            .build();
        Exact {
            setup,
            clock,
            cache,
            recorder,
            next_id: 0,
            current: HashMap::new(),
            reported: HashSet::new(),
            counts: Counts::default(),
        }
    }

    fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    /// The id of `key`'s live value, per the model.
    fn live(&self, key: u8) -> Option<u32> {
        let now = self.now();
        self.current
            .get(&key)
            .filter(|&&(_, deadline)| now < deadline)
            .map(|&(id, _)| id)
    }

    fn remaining(&self, key: u8) -> Option<Option<Duration>> {
        let now = self.now();
        self.current
            .get(&key)
            .filter(|&&(_, deadline)| now < deadline)
            .map(|&(_, deadline)| (deadline != NEVER).then(|| Duration::from_nanos(deadline - now)))
    }

    fn count(&mut self, cause: RemovalCause) {
        match cause {
            RemovalCause::Replaced => self.counts.replaced += 1,
            RemovalCause::Explicit => self.counts.explicit += 1,
            RemovalCause::Size => self.counts.size += 1,
            RemovalCause::Expired => self.counts.expired += 1,
            other => panic!("unknown cause {other:?}"),
        }
    }

    /// Records one reported departure of `key`'s current value. Returns its
    /// deadline; fails if the value is not the key's current one, or was
    /// reported before.
    fn depart(&mut self, key: u8, id: u32, cause: RemovalCause) -> u64 {
        assert!(
            self.reported.insert(id),
            "value {id} (key {key}) reported twice ({cause:?})"
        );
        let (current, deadline) = self.current.remove(&key).unwrap_or_else(|| {
            panic!("{cause:?} reported for key {key} (value {id}), which the model does not hold")
        });
        assert_eq!(
            current, id,
            "key {key}: {cause:?} reported value {id}, but its latest is {current}"
        );
        self.count(cause);
        deadline
    }

    /// Departures an operation may cause on the side: reclaiming expired entries.
    fn absorb_expired(&mut self, what: &str) {
        let now = self.now();
        for (key, id, cause) in self.recorder.take() {
            assert_eq!(
                cause,
                RemovalCause::Expired,
                "{what}: unexpected {cause:?} for key {key}"
            );
            let deadline = self.depart(key, id, cause);
            assert!(
                now >= deadline,
                "{what}: key {key} reported expired {} ns early",
                deadline - now
            );
        }
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now();
        match *op {
            Op::Insert(key, choice) => self.insert(key, choice),
            Op::Get(key) => {
                let got = self.cache.get(&key);
                assert_eq!(got, self.live(key), "get({key}) at {now} ns");
                if got.is_some() {
                    self.counts.hits += 1;
                } else {
                    self.counts.misses += 1;
                }
                self.absorb_expired("get");
            }
            Op::GetWithTtl(key) => {
                let got = self.cache.get_with_ttl(&key);
                let want = self.live(key).map(|id| (id, self.remaining(key).unwrap()));
                assert_eq!(got, want, "get_with_ttl({key}) at {now} ns");
                if got.is_some() {
                    self.counts.hits += 1;
                } else {
                    self.counts.misses += 1;
                }
                self.absorb_expired("get_with_ttl");
            }
            Op::Contains(key) => {
                assert_eq!(
                    self.cache.contains_key(&key),
                    self.live(key).is_some(),
                    "contains_key({key})"
                );
                self.absorb_expired("contains_key");
            }
            Op::RemainingTtl(key) => {
                assert_eq!(
                    self.cache.remaining_ttl(&key),
                    self.remaining(key),
                    "remaining_ttl({key})"
                );
                self.absorb_expired("remaining_ttl");
            }
            Op::Remove(key) => {
                let want = self.live(key);
                assert_eq!(self.cache.remove(&key), want, "remove({key}) at {now} ns");
                for (k, id, cause) in self.recorder.take() {
                    let deadline = self.depart(k, id, cause);
                    let expected = if k == key && now < deadline {
                        RemovalCause::Explicit
                    } else {
                        RemovalCause::Expired
                    };
                    assert_eq!(cause, expected, "remove({key}): departure of key {k}");
                    if cause == RemovalCause::Expired {
                        assert!(
                            now >= deadline,
                            "remove({key}): key {k} reported expired early"
                        );
                    }
                }
                assert!(
                    !self.current.contains_key(&key),
                    "remove({key}) did not report the removed value"
                );
                assert!(
                    !self.cache.contains_key(&key),
                    "key {key} still there after remove"
                );
                self.absorb_expired("contains_key after remove");
            }
            Op::Clear => {
                self.cache.clear();
                for (k, id, cause) in self.recorder.take() {
                    let deadline = self.depart(k, id, cause);
                    let ok = cause == RemovalCause::Explicit
                        || (cause == RemovalCause::Expired && now >= deadline);
                    assert!(ok, "clear: key {k} reported as {cause:?}");
                }
                assert!(
                    self.current.is_empty(),
                    "clear did not report {:?}",
                    self.current
                );
            }
            Op::AdvanceMs(ms) => self.clock.advance_ms(ms),
            Op::RunPending => {
                self.cache.run_pending_tasks();
                self.absorb_expired("run_pending_tasks");
                let overdue: Vec<_> = self
                    .current
                    .iter()
                    .filter(|(_, &(_, deadline))| {
                        deadline < UNKNOWN && deadline.saturating_add(RECLAIM_SLACK_NS) <= now
                    })
                    .collect();
                assert!(
                    overdue.is_empty(),
                    "run_pending_tasks left expired entries at {now} ns: {overdue:?}"
                );
            }
        }
        self.check_invariants(op);
    }

    fn insert(&mut self, key: u8, choice: TtlChoice) {
        let now = self.now();
        let old = self.current.get(&key).copied();
        let id = self.next_id;
        self.next_id += 1;
        self.counts.insert_ops += 1;
        let deadline = match choice {
            TtlChoice::Never => NEVER,
            TtlChoice::AfterMs(ms) => now + ms * MS,
            TtlChoice::Default => match self.setup.default_ttl_ms {
                None => NEVER,
                Some(ms) if self.setup.jitter == 0.0 => now + ms * MS,
                Some(_) => UNKNOWN,
            },
        };
        self.cache.insert_with_ttl(key, id, choice.ttl());
        // The new value is the key's current one; the old one must be
        // reported by this very insert.
        self.current.insert(key, (id, deadline));
        let mut old_reported = false;
        for (k, eid, cause) in self.recorder.take() {
            if let Some((old_id, old_deadline)) = old.filter(|&(old_id, _)| old_id == eid) {
                assert!(self.reported.insert(eid), "old value {eid} reported twice");
                assert_eq!(k, key);
                let want = if now >= old_deadline {
                    RemovalCause::Expired
                } else {
                    RemovalCause::Replaced
                };
                assert_eq!(
                    cause, want,
                    "insert({key}) over value {old_id} (deadline {old_deadline} ns, now {now} ns)"
                );
                self.count(cause);
                old_reported = true;
                continue;
            }
            let entry_deadline = self.depart(k, eid, cause);
            match cause {
                RemovalCause::Size => {}
                RemovalCause::Expired => assert!(
                    now >= entry_deadline,
                    "insert({key}): key {k} reported expired early"
                ),
                other => panic!("insert({key}): unexpected {other:?} for key {k} (value {eid})"),
            }
        }
        if let Some((old_id, _)) = old {
            assert!(
                old_reported,
                "insert({key}): the overwritten value {old_id} was never reported"
            );
        }
        // A jittered default TTL: learn the deadline the cache drew, and
        // check it lies in [ttl × (1 − jitter), ttl].
        if let Some(&(cur, UNKNOWN)) = self.current.get(&key) {
            assert_eq!(cur, id);
            let ttl = Duration::from_millis(self.setup.default_ttl_ms.unwrap());
            let Some(Some(remaining)) = self.cache.remaining_ttl(&key) else {
                panic!("insert({key}): fresh entry has no TTL")
            };
            let low = ttl.mul_f64(1.0 - self.setup.jitter) - Duration::from_nanos(1);
            assert!(
                remaining >= low && remaining <= ttl,
                "jittered TTL {remaining:?} outside [{low:?}, {ttl:?}]"
            );
            self.current
                .insert(key, (id, now + remaining.as_nanos() as u64));
        }
    }

    fn check_invariants(&self, op: &Op) {
        let len = self.cache.len();
        let weight = self.cache.weighted_size();
        assert!(
            len <= self.setup.capacity,
            "after {op:?}: len {len} > capacity"
        );
        assert!(
            weight <= self.setup.capacity,
            "after {op:?}: weighted_size {weight} > capacity"
        );
        assert_eq!(
            len,
            self.current.len() as u64,
            "after {op:?}: len() disagrees with what was inserted and not reported departed; model {:?}",
            self.current
        );
        let model_weight: u64 = if self.setup.weighted {
            self.current.values().map(|&(id, _)| weight_of(id)).sum()
        } else {
            self.current.len() as u64
        };
        assert_eq!(weight, model_weight, "after {op:?}: weighted_size");

        let s = self.cache.stats();
        let c = &self.counts;
        assert_eq!(
            (s.hits, s.misses),
            (c.hits, c.misses),
            "after {op:?}: hits/misses"
        );
        assert_eq!(s.updates, c.replaced, "after {op:?}: updates");
        assert_eq!(s.removals, c.explicit, "after {op:?}: removals");
        assert_eq!(s.evictions_size, c.size, "after {op:?}: evictions_size");
        assert_eq!(
            s.evictions_expired, c.expired,
            "after {op:?}: evictions_expired"
        );
        assert!(
            s.inserts + s.updates <= c.insert_ops,
            "after {op:?}: {s:?} {c:?}"
        );
        assert!(
            s.inserts + s.updates + c.size >= c.insert_ops,
            "after {op:?}: {s:?} {c:?}"
        );
    }

    /// Clears the cache and checks that every value ever inserted was
    /// reported exactly once.
    fn finish(mut self) {
        self.apply(&Op::Clear);
        assert_eq!(self.cache.len(), 0);
        assert_eq!(
            self.reported.len() as u32,
            self.next_id,
            "{} values inserted, {} reported",
            self.next_id,
            self.reported.len()
        );
    }
}

fn run_exact(setup: Setup, ops: &[Op]) -> Exact {
    let mut model = Exact::new(setup);
    for op in ops {
        model.apply(op);
    }
    model
}

// ---------------------------------------------------------------------------
// The weak model (no listener)
// ---------------------------------------------------------------------------

fn run_weak(setup: Setup, ops: &[Op], must_hold_everything: bool) {
    let clock = ManualClock::new();
    let cache = build(&setup, &clock).build();
    // key -> (latest value id, latest possible deadline)
    let mut model: HashMap<u8, (u32, u64)> = HashMap::new();
    let mut next_id = 0u32;
    for op in ops {
        let now = clock.now_ns();
        let live = |model: &HashMap<u8, (u32, u64)>, key: u8| {
            model
                .get(&key)
                .filter(|&&(_, d)| now < d)
                .map(|&(id, _)| id)
        };
        match *op {
            Op::Insert(key, choice) => {
                let latest_deadline = match choice {
                    TtlChoice::Never => NEVER,
                    TtlChoice::AfterMs(ms) => now + ms * MS,
                    // The jitter only shortens the default TTL.
                    TtlChoice::Default => setup.default_ttl_ms.map_or(NEVER, |ms| now + ms * MS),
                };
                cache.insert_with_ttl(key, next_id, choice.ttl());
                model.insert(key, (next_id, latest_deadline));
                next_id += 1;
            }
            Op::Get(key) | Op::GetWithTtl(key) | Op::Contains(key) | Op::RemainingTtl(key) => {
                let got = match op {
                    Op::Get(_) => cache.get(&key),
                    Op::GetWithTtl(_) => cache.get_with_ttl(&key).map(|(v, _)| v),
                    Op::Contains(_) => cache.contains_key(&key).then_some(u32::MAX),
                    _ => cache.remaining_ttl(&key).map(|_| u32::MAX),
                };
                let want = live(&model, key);
                match got {
                    Some(u32::MAX) => {
                        assert!(want.is_some(), "{op:?} found an absent or expired key")
                    }
                    Some(v) => {
                        assert_eq!(Some(v), want, "{op:?} returned a stale or expired value")
                    }
                    None if must_hold_everything => {
                        assert_eq!(want, None, "{op:?} lost a key with no eviction pressure")
                    }
                    None => {}
                }
            }
            Op::Remove(key) => {
                let got = cache.remove(&key);
                if got.is_some() || must_hold_everything {
                    assert_eq!(got, live(&model, key), "remove({key})");
                }
                model.remove(&key);
                assert_eq!(cache.get(&key), None, "get after remove({key})");
            }
            Op::Clear => {
                cache.clear();
                model.clear();
                assert!(cache.is_empty());
            }
            Op::AdvanceMs(ms) => clock.advance_ms(ms),
            Op::RunPending => cache.run_pending_tasks(),
        }
        assert!(
            cache.len() <= setup.capacity,
            "after {op:?}: len {} > capacity",
            cache.len()
        );
        assert!(
            cache.weighted_size() <= setup.capacity,
            "after {op:?}: weighted_size"
        );
        if must_hold_everything {
            assert_eq!(
                cache.len(),
                model.len() as u64,
                "after {op:?}: entries lost"
            );
        }
    }
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Keep failing cases out of the source tree; the failure message
        // prints the minimal case.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(200))]

    /// Any configuration: reads agree exactly with the listener-informed
    /// model, sizes and stats agree, every value is reported exactly once.
    #[test]
    fn matches_the_exact_model((setup, ops) in any_case()) {
        run_exact(setup, &ops).finish();
    }

    /// With room for every key and no TTLs the cache is the model: nothing
    /// is ever evicted.
    #[test]
    fn never_evicts_when_everything_fits((setup, ops) in roomy_case()) {
        let model = run_exact(setup, &ops);
        prop_assert_eq!(model.counts.size, 0, "evicted with room to spare");
        prop_assert_eq!(model.counts.expired, 0);
        model.finish();
    }

    /// Without a listener: hits are the latest unexpired value, removes stick,
    /// the bound holds.
    #[test]
    fn hits_are_fresh_without_a_listener((setup, ops) in any_case()) {
        run_weak(setup, &ops, false);
    }

    /// Without a listener and with room for every key: nothing is lost.
    #[test]
    fn holds_everything_without_a_listener_when_it_fits((setup, ops) in roomy_case()) {
        run_weak(setup, &ops, true);
    }
}

proptest! {
    #![proptest_config(config(10))]

    /// The exact model over long read-heavy runs.
    #[test]
    fn matches_the_exact_model_over_long_runs((setup, ops) in long_case()) {
        run_exact(setup, &ops).finish();
    }
}
