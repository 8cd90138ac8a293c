//! The engine against a model, on arbitrary operation sequences: inserts
//! with and without TTLs, reads, removals, clears and a clock that moves.
//!
//! - A cache that can hold every key (capacity above the 256 keys used)
//!   must agree with the model exactly: what was inserted and not removed,
//!   cleared or expired is found, and nothing else.
//! - A small cache may have evicted anything, but what it answers must be
//!   the model's live value (never a stale, removed or expired one), and it
//!   never holds more entries than its capacity.
#![no_main]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use cachex::{MemoryCache, Ttl};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Insert { key: u8, value: u16 },
    InsertFor { key: u8, value: u16, ms: u8 },
    Get { key: u8 },
    Remove { key: u8 },
    Clear,
    Advance { ms: u8 },
    Maintain,
}

const SMALL: u64 = 16;

fuzz_target!(|ops: Vec<Op>| {
    let start = Instant::now();
    let now_ms = Arc::new(AtomicU64::new(0));
    let clock = {
        let now_ms = Arc::clone(&now_ms);
        move || start + Duration::from_millis(now_ms.load(Ordering::Relaxed))
    };
    let big: MemoryCache<u8, u16> = MemoryCache::builder()
        .max_capacity(1_024)
        .clock(clock.clone())
        .build();
    let small: MemoryCache<u8, u16> = MemoryCache::builder()
        .max_capacity(SMALL)
        .clock(clock)
        .build();
    // key -> (value, expiry in ms on the fake clock)
    let mut model: HashMap<u8, (u16, Option<u64>)> = HashMap::new();
    let live = |model: &HashMap<u8, (u16, Option<u64>)>, key: u8, now: u64| {
        model
            .get(&key)
            .filter(|(_, until)| until.is_none_or(|until| now < until))
            .map(|&(value, _)| value)
    };

    for op in ops {
        let now = now_ms.load(Ordering::Relaxed);
        match op {
            Op::Insert { key, value } => {
                big.insert(key, value);
                small.insert(key, value);
                model.insert(key, (value, None));
            }
            Op::InsertFor { key, value, ms } => {
                let ttl = Duration::from_millis(u64::from(ms) + 1);
                big.insert_with_ttl(key, value, Ttl::After(ttl));
                small.insert_with_ttl(key, value, Ttl::After(ttl));
                model.insert(key, (value, Some(now + u64::from(ms) + 1)));
            }
            Op::Get { key } => {
                let expected = live(&model, key, now);
                assert_eq!(big.get(&key), expected, "big cache, key {key}");
                if let Some(found) = small.get(&key) {
                    assert_eq!(Some(found), expected, "small cache, key {key}");
                }
            }
            Op::Remove { key } => {
                let expected = live(&model, key, now);
                assert_eq!(big.remove(&key).filter(|_| expected.is_some()), expected);
                small.remove(&key);
                model.remove(&key);
            }
            Op::Clear => {
                big.clear();
                small.clear();
                model.clear();
            }
            Op::Advance { ms } => {
                now_ms.fetch_add(u64::from(ms), Ordering::Relaxed);
            }
            Op::Maintain => {
                big.run_pending_tasks();
                small.run_pending_tasks();
            }
        }
        assert!(small.len() <= SMALL, "{} entries over {SMALL}", small.len());
    }
});
