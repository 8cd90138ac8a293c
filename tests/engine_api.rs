//! The documented promises of `MemoryCache`, one behaviour per test.
//!
//! Time is always driven by a manual clock (`.clock(..)`): no test sleeps or
//! measures wall-clock time.

mod engine_common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

use cachex::{MemoryCache, MemoryCacheBuilder, RemovalCause, Ttl};
use engine_common::{ManualClock, Recorder};

const SEC: Duration = Duration::from_secs(1);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A builder on a manual clock with the given default TTL and jitter.
fn timed<K, V>(clock: &ManualClock, ttl: Duration, jitter: f64) -> MemoryCacheBuilder<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync,
    V: Clone + Send + Sync,
{
    MemoryCache::builder()
        .max_capacity(1_000)
        .time_to_live(ttl)
        .ttl_jitter(jitter)
        .clock(clock.source())
}

// ---------------------------------------------------------------------------
// Basic operations
// ---------------------------------------------------------------------------

fn check_basic_operations(cache: &MemoryCache<u32, &'static str>) {
    assert!(cache.is_empty());
    assert_eq!(cache.get(&1), None);
    cache.insert(1, "one");
    cache.insert(2, "two");
    assert_eq!(cache.get(&1), Some("one"));
    assert_eq!(cache.get(&2), Some("two"));
    assert!(cache.contains_key(&1));
    assert!(!cache.contains_key(&3));
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.weighted_size(), 2);

    cache.insert(1, "uno");
    assert_eq!(cache.get(&1), Some("uno"), "an update replaces the value");
    assert_eq!(cache.len(), 2, "an update does not add an entry");

    assert_eq!(
        cache.remove(&1),
        Some("uno"),
        "remove returns the live value"
    );
    assert_eq!(cache.get(&1), None);
    assert!(!cache.contains_key(&1));
    assert_eq!(cache.remove(&1), None, "a second remove finds nothing");
    assert_eq!(cache.remove(&42), None);
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.get(&2), Some("two"), "other entries are untouched");
    assert!(!cache.is_empty());
    assert_eq!(cache.capacity(), 100);
}

#[test]
fn insert_get_update_remove() {
    check_basic_operations(&MemoryCache::new(100));
}

#[test]
fn insert_get_update_remove_with_a_listener() {
    // With a listener the engine keeps departed entries for it: a separate path.
    let recorder = Recorder::new();
    let cache = MemoryCache::builder()
        .max_capacity(100)
        .eviction_listener(recorder.listener())
        .build();
    check_basic_operations(&cache);
    assert_eq!(
        recorder.take(),
        vec![
            (1, "one", RemovalCause::Replaced),
            (1, "uno", RemovalCause::Explicit)
        ]
    );
}

#[test]
fn borrowed_lookups_on_owned_keys() {
    let cache: MemoryCache<String, Vec<u8>> = MemoryCache::new(10);
    cache.insert("alpha".to_string(), vec![1]);
    cache.insert(String::from("beta"), vec![2, 2]);
    let key: &str = "alpha";
    assert_eq!(cache.get(key), Some(vec![1]));
    assert!(cache.contains_key(key));
    assert_eq!(cache.remaining_ttl(key), Some(None));
    assert_eq!(cache.get_with_ttl(key), Some((vec![1], None)));
    assert_eq!(cache.get("gamma"), None);
    assert!(!cache.contains_key("gamma"));
    assert_eq!(cache.remaining_ttl("gamma"), None);
    assert_eq!(cache.get_with_ttl("gamma"), None);
    assert_eq!(cache.remove(key), Some(vec![1]));
    assert_eq!(cache.get(key), None);
    assert_eq!(cache.get("beta"), Some(vec![2, 2]));

    // Vec<u8> keys looked up by byte slice.
    let bytes: MemoryCache<Vec<u8>, u32> = MemoryCache::new(10);
    bytes.insert(b"key".to_vec(), 7);
    assert_eq!(bytes.get(&b"key"[..]), Some(7));
    assert_eq!(bytes.remove(&b"key"[..]), Some(7));
    assert!(!bytes.contains_key(&b"key"[..]));
}

// ---------------------------------------------------------------------------
// Time-to-live
// ---------------------------------------------------------------------------

#[test]
fn explicit_ttl_is_exact_and_ignores_jitter() {
    let clock = ManualClock::new();
    let cache: MemoryCache<u32, u32> = timed(&clock, secs(100), 0.9).build();
    cache.insert_with_ttl(1, 10, Ttl::After(secs(30)));
    assert_eq!(cache.remaining_ttl(&1), Some(Some(secs(30))));
    assert_eq!(cache.get_with_ttl(&1), Some((10, Some(secs(30)))));

    clock.advance(Duration::from_millis(10_250));
    assert_eq!(
        cache.remaining_ttl(&1),
        Some(Some(Duration::from_millis(19_750)))
    );
    // One nanosecond before the deadline it is still there...
    clock.advance(Duration::from_millis(19_750) - Duration::from_nanos(1));
    assert_eq!(cache.get(&1), Some(10));
    assert_eq!(cache.remaining_ttl(&1), Some(Some(Duration::from_nanos(1))));
    // ...and at the deadline it is gone.
    clock.advance(Duration::from_nanos(1));
    assert_eq!(cache.get(&1), None);
}

#[test]
fn remaining_ttl_decreases_with_the_clock() {
    let clock = ManualClock::new();
    let cache: MemoryCache<u32, u32> = timed(&clock, secs(60), 0.0).build();
    cache.insert(1, 1);
    cache.insert_with_ttl(2, 2, Ttl::After(secs(90)));
    for elapsed in 0..60 {
        assert_eq!(cache.remaining_ttl(&1), Some(Some(secs(60 - elapsed))));
        assert_eq!(cache.remaining_ttl(&2), Some(Some(secs(90 - elapsed))));
        assert_eq!(cache.get_with_ttl(&2), Some((2, Some(secs(90 - elapsed)))));
        clock.advance(SEC);
    }
    assert_eq!(cache.remaining_ttl(&1), None);
    assert_eq!(cache.remaining_ttl(&2), Some(Some(secs(30))));
}

#[test]
fn ttl_never_never_expires() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let cache: MemoryCache<u32, u32> = timed(&clock, SEC, 0.0)
        .eviction_listener(recorder.listener())
        .build();
    cache.insert_with_ttl(1, 1, Ttl::Never);
    cache.insert(2, 2);
    assert_eq!(cache.remaining_ttl(&1), Some(None));
    assert_eq!(cache.get_with_ttl(&1), Some((1, None)));
    for _ in 0..10 {
        clock.advance(secs(365 * 24 * 3600));
        cache.run_pending_tasks();
        assert_eq!(cache.get(&1), Some(1));
        assert_eq!(cache.remaining_ttl(&1), Some(None));
    }
    assert_eq!(cache.get(&2), None);
    assert_eq!(recorder.take(), vec![(2, 2, RemovalCause::Expired)]);
}

#[test]
fn ttl_default_without_a_configured_ttl_never_expires() {
    let clock = ManualClock::new();
    let cache: MemoryCache<u32, u32> = MemoryCache::builder()
        .max_capacity(10)
        .clock(clock.source())
        .build();
    cache.insert(1, 1);
    cache.insert_with_ttl(2, 2, Ttl::Default);
    clock.advance(secs(10 * 365 * 24 * 3600));
    cache.run_pending_tasks();
    assert_eq!(cache.remaining_ttl(&1), Some(None));
    assert_eq!(cache.remaining_ttl(&2), Some(None));
    assert_eq!(cache.get(&2), Some(2));
}

#[test]
fn ttl_default_uses_the_configured_ttl() {
    let clock = ManualClock::new();
    let cache: MemoryCache<u32, u32> = timed(&clock, secs(10), 0.0).build();
    cache.insert(1, 1);
    cache.insert_with_ttl(2, 2, Ttl::Default);
    assert_eq!(cache.remaining_ttl(&1), Some(Some(secs(10))));
    assert_eq!(cache.remaining_ttl(&2), Some(Some(secs(10))));
    clock.advance(secs(10));
    assert_eq!(cache.get(&1), None);
    assert_eq!(cache.get(&2), None);
}

#[test]
fn ttl_changes_on_update() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let cache: MemoryCache<u32, u32> = timed(&clock, secs(100), 0.0)
        .eviction_listener(recorder.listener())
        .build();
    // Expiring -> never: the old deadline must not reclaim the new value.
    cache.insert_with_ttl(1, 10, Ttl::After(SEC));
    cache.insert_with_ttl(1, 11, Ttl::Never);
    // Never -> expiring.
    cache.insert_with_ttl(2, 20, Ttl::Never);
    cache.insert_with_ttl(2, 21, Ttl::After(SEC));
    // Short -> long.
    cache.insert_with_ttl(3, 30, Ttl::After(SEC));
    cache.insert_with_ttl(3, 31, Ttl::After(secs(50)));
    // Long -> short.
    cache.insert_with_ttl(4, 40, Ttl::After(secs(50)));
    cache.insert_with_ttl(4, 41, Ttl::After(SEC));
    let replaced = recorder.take();
    assert_eq!(replaced.len(), 4);
    assert!(replaced.iter().all(|e| e.2 == RemovalCause::Replaced));

    clock.advance(secs(2));
    cache.run_pending_tasks();
    assert_eq!(cache.get(&1), Some(11));
    assert_eq!(cache.get(&2), None);
    assert_eq!(cache.get(&3), Some(31));
    assert_eq!(cache.remaining_ttl(&3), Some(Some(secs(48))));
    assert_eq!(cache.get(&4), None);
    let mut expired = recorder.take();
    expired.sort_unstable_by_key(|&(k, v, _)| (k, v));
    assert_eq!(
        expired,
        vec![
            (2, 21, RemovalCause::Expired),
            (4, 41, RemovalCause::Expired)
        ]
    );

    clock.advance(secs(49));
    cache.run_pending_tasks();
    assert_eq!(cache.get(&3), None);
    assert_eq!(cache.get(&1), Some(11));
    assert_eq!(recorder.take(), vec![(3, 31, RemovalCause::Expired)]);
    assert_eq!(cache.len(), 1);
}

#[test]
fn zero_and_huge_explicit_ttls() {
    let clock = ManualClock::new();
    let cache: MemoryCache<u32, u32> = timed(&clock, secs(100), 0.0).build();
    cache.insert_with_ttl(1, 1, Ttl::After(Duration::ZERO));
    assert_eq!(cache.get(&1), None, "a zero TTL expires at once");
    cache.insert_with_ttl(2, 2, Ttl::After(Duration::MAX));
    clock.advance(secs(100 * 365 * 24 * 3600));
    cache.run_pending_tasks();
    assert_eq!(cache.get(&2), Some(2));
    assert!(matches!(cache.remaining_ttl(&2), Some(Some(d)) if d > secs(1_000_000)));
}

#[test]
fn an_expired_entry_is_never_returned() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let cache: MemoryCache<String, u32> = timed(&clock, secs(100), 0.0)
        .eviction_listener(recorder.listener())
        .build();
    cache.insert_with_ttl("k".to_string(), 7, Ttl::After(secs(5)));
    cache.insert_with_ttl("other".to_string(), 8, Ttl::Never);
    clock.advance(secs(5));
    // Queries that do not count as a use come first: the entry is still
    // physically stored, but must look absent to every query.
    assert!(!cache.contains_key("k"));
    assert_eq!(cache.remaining_ttl("k"), None);
    assert_eq!(cache.get_with_ttl("k"), None);
    assert_eq!(cache.get("k"), None);
    assert_eq!(
        cache.remove("k"),
        None,
        "remove must not return an expired value"
    );
    assert_eq!(cache.get("k"), None);
    cache.run_pending_tasks();
    assert_eq!(
        recorder.take(),
        vec![("k".to_string(), 7, RemovalCause::Expired)],
        "the expired value is reported once, as Expired"
    );
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.get("other"), Some(8));
}

#[test]
fn removing_an_expired_entry_reports_it_as_expired() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let cache: MemoryCache<u32, u32> = timed(&clock, secs(100), 0.0)
        .eviction_listener(recorder.listener())
        .build();
    cache.insert_with_ttl(1, 1, Ttl::After(secs(5)));
    clock.advance(secs(6));
    assert_eq!(cache.remove(&1), None);
    assert_eq!(recorder.take(), vec![(1, 1, RemovalCause::Expired)]);
    let stats = cache.stats();
    assert_eq!(
        stats.removals, 0,
        "an expired entry is not an explicit removal"
    );
    assert_eq!(stats.evictions_expired, 1);
    assert_eq!(
        cache.len(),
        0,
        "a reclaimed (and reported) entry is no longer counted"
    );
    assert_eq!(cache.weighted_size(), 0);
}

#[test]
fn len_drops_when_a_remove_of_another_key_reclaims_expired_entries() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let cache: MemoryCache<u32, u32> = timed(&clock, secs(100), 0.0)
        .shards(1)
        .eviction_listener(recorder.listener())
        .build();
    cache.insert_with_ttl(1, 1, Ttl::After(secs(5)));
    clock.advance(secs(6));
    assert_eq!(cache.remove(&2), None);
    // The remove's upkeep reclaimed key 1 and reported it...
    assert_eq!(recorder.take(), vec![(1, 1, RemovalCause::Expired)]);
    // ...so it is no longer stored.
    assert_eq!(cache.len(), 0);
    assert_eq!(cache.weighted_size(), 0);
}

#[test]
fn overwriting_an_expired_entry_reports_expired_not_replaced() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let cache: MemoryCache<u32, u32> = timed(&clock, secs(100), 0.0)
        .eviction_listener(recorder.listener())
        .build();
    cache.insert_with_ttl(1, 1, Ttl::After(secs(5)));
    clock.advance(secs(5));
    cache.insert_with_ttl(1, 2, Ttl::Never);
    assert_eq!(recorder.take(), vec![(1, 1, RemovalCause::Expired)]);
    assert_eq!(cache.get(&1), Some(2));
    let stats = cache.stats();
    assert_eq!(stats.updates, 0);
    assert_eq!(stats.inserts, 2);
    assert_eq!(stats.evictions_expired, 1);
}

#[test]
fn jitter_spreads_default_ttls_over_the_band() {
    const KEYS: u32 = 10_000;
    let clock = ManualClock::new();
    let cache: MemoryCache<u32, u32> = MemoryCache::builder()
        .max_capacity(2 * u64::from(KEYS))
        .time_to_live(secs(100))
        .ttl_jitter(0.2)
        .clock(clock.source())
        .build();
    for k in 0..KEYS {
        cache.insert(k, k);
    }
    let (low, high) = (secs(80), secs(100));
    let mut tenths = [0u32; 10];
    for k in 0..KEYS {
        let ttl = cache
            .remaining_ttl(&k)
            .expect("every key is cached")
            .expect("a default TTL is set");
        assert!(
            (low..=high).contains(&ttl),
            "key {k}: TTL {ttl:?} outside [80 s, 100 s]"
        );
        let tenth = ((ttl - low).as_secs_f64() / 2.0).floor() as usize;
        tenths[tenth.min(9)] += 1;
    }
    // Uniform: about 1,000 per tenth (standard deviation 30).
    for (i, &n) in tenths.iter().enumerate() {
        assert!(
            (700..=1_300).contains(&n),
            "tenth {i} of the band holds {n} of {KEYS} TTLs: {tenths:?}"
        );
    }
}

#[test]
fn jitter_is_clamped() {
    let clock = ManualClock::new();
    for (jitter, low) in [
        (-1.0, secs(100)),
        (f64::NAN, secs(100)),
        (0.0, secs(100)),
        (5.0, Duration::ZERO),
    ] {
        let cache: MemoryCache<u32, u32> = timed(&clock, secs(100), jitter).build();
        let mut spread = false;
        for k in 0..500 {
            cache.insert(k, k);
            // A TTL of exactly zero would already be expired.
            if let Some(ttl) = cache.remaining_ttl(&k) {
                let ttl = ttl.expect("a default TTL is set");
                assert!(
                    ttl >= low && ttl <= secs(100),
                    "jitter {jitter}: TTL {ttl:?} outside [{low:?}, 100 s]"
                );
                spread |= ttl < secs(50);
            }
        }
        assert_eq!(spread, low == Duration::ZERO, "jitter {jitter}");
    }
}

// ---------------------------------------------------------------------------
// The eviction listener
// ---------------------------------------------------------------------------

#[test]
fn listener_hears_replaced_with_the_old_value() {
    let recorder = Recorder::new();
    let cache = MemoryCache::builder()
        .max_capacity(10)
        .eviction_listener(recorder.listener())
        .build();
    cache.insert("k", 1);
    assert_eq!(recorder.count(), 0, "a fresh insert departs nothing");
    cache.insert("k", 2);
    cache.insert("k", 3);
    assert_eq!(
        recorder.take(),
        vec![
            ("k", 1, RemovalCause::Replaced),
            ("k", 2, RemovalCause::Replaced)
        ]
    );
    assert_eq!(cache.stats().updates, 2);
}

#[test]
fn listener_hears_explicit_on_remove_and_clear() {
    let recorder = Recorder::new();
    let cache = MemoryCache::builder()
        .max_capacity(100)
        .shards(4)
        .eviction_listener(recorder.listener())
        .build();
    for k in 0..20u32 {
        cache.insert(k, k * 10);
    }
    assert_eq!(cache.remove(&3), Some(30));
    assert_eq!(cache.remove(&3), None);
    assert_eq!(recorder.take(), vec![(3, 30, RemovalCause::Explicit)]);
    cache.clear();
    assert!(cache.is_empty());
    assert_eq!(cache.weighted_size(), 0);
    let mut cleared = recorder.take();
    cleared.sort_unstable_by_key(|&(k, v, _)| (k, v));
    let expected: Vec<_> = (0..20u32)
        .filter(|&k| k != 3)
        .map(|k| (k, k * 10, RemovalCause::Explicit))
        .collect();
    assert_eq!(cleared, expected);
    cache.clear();
    assert_eq!(
        recorder.count(),
        0,
        "clearing an empty cache reports nothing"
    );
    // The cache is usable after a clear.
    cache.insert(1, 1);
    assert_eq!(cache.get(&1), Some(1));
}

#[test]
fn listener_hears_size_on_eviction_exactly_once_per_entry() {
    let recorder = Recorder::new();
    let cache = MemoryCache::builder()
        .max_capacity(50)
        .shards(1)
        .eviction_listener(recorder.listener())
        .build();
    for k in 0..500u32 {
        cache.insert(k, k + 1_000);
        assert!(cache.len() <= 50);
    }
    let events = recorder.take();
    assert_eq!(events.len(), 450);
    let mut seen = HashMap::new();
    for (k, v, cause) in events {
        assert_eq!(cause, RemovalCause::Size);
        assert_eq!(v, k + 1_000);
        assert!(seen.insert(k, v).is_none(), "key {k} reported twice");
        assert!(!cache.contains_key(&k), "evicted key {k} is still cached");
    }
    for k in 0..500u32 {
        assert_eq!(
            cache.contains_key(&k),
            !seen.contains_key(&k),
            "key {k}: every key is either cached or reported"
        );
    }
    assert_eq!(cache.stats().evictions_size, 450);
}

#[test]
fn listener_hears_expired_after_run_pending_tasks() {
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let cache: MemoryCache<u32, u32> = timed(&clock, secs(10), 0.0)
        .shards(4)
        .eviction_listener(recorder.listener())
        .build();
    for k in 0..100 {
        cache.insert(k, k);
    }
    cache.insert_with_ttl(1_000, 1, Ttl::After(secs(60)));
    clock.advance(secs(9));
    cache.run_pending_tasks();
    assert_eq!(recorder.count(), 0, "nothing expires early");
    assert_eq!(cache.len(), 101);
    clock.advance(secs(2));
    cache.run_pending_tasks();
    let mut expired = recorder.take();
    expired.sort_unstable_by_key(|&(k, v, _)| (k, v));
    let expected: Vec<_> = (0..100).map(|k| (k, k, RemovalCause::Expired)).collect();
    assert_eq!(expired, expected);
    assert_eq!(cache.len(), 1, "expired entries are reclaimed");
    assert_eq!(cache.stats().evictions_expired, 100);
    cache.run_pending_tasks();
    assert_eq!(recorder.count(), 0, "each expiry is reported once");
}

#[test]
fn reads_reclaim_expired_entries_too() {
    // No write happens after the expiry: reads alone must reclaim (and
    // report) expired entries when they find them.
    let clock = ManualClock::new();
    let recorder = Recorder::new();
    let cache: MemoryCache<u32, u32> = timed(&clock, secs(10), 0.0)
        .shards(1)
        .eviction_listener(recorder.listener())
        .build();
    for k in 0..10 {
        cache.insert(k, k);
    }
    clock.advance(secs(11));
    for k in 0..10 {
        assert_eq!(cache.get(&k), None);
    }
    let mut expired = recorder.take();
    expired.sort_unstable_by_key(|&(k, v, _)| (k, v));
    let expected: Vec<_> = (0..10).map(|k| (k, k, RemovalCause::Expired)).collect();
    assert_eq!(expired, expected);
    assert_eq!(cache.len(), 0);
}

// ---------------------------------------------------------------------------
// Capacity and weights
// ---------------------------------------------------------------------------

#[test]
fn weigher_bounds_the_weighted_size() {
    let recorder = Recorder::new();
    let cache: MemoryCache<u32, Vec<u8>> = MemoryCache::builder()
        .max_capacity(100)
        .shards(1)
        .weigher(|_k, v: &Vec<u8>| v.len() as u32)
        .eviction_listener(recorder.listener())
        .build();
    let mut departed = 0;
    for k in 0..300u32 {
        let weight = (k * 7 % 20 + 1) as usize;
        cache.insert(k, vec![0; weight]);
        assert!(cache.weighted_size() <= 100, "after key {k}");
        departed += recorder.take().len();
        // The weighted size is exactly the weight of what is cached.
        let stored: u64 = (0..=k)
            .filter(|k| cache.contains_key(k))
            .map(|k| u64::from(k * 7 % 20 + 1))
            .sum();
        assert_eq!(cache.weighted_size(), stored, "after key {k}");
        assert_eq!(cache.len() as usize + departed, k as usize + 1);
    }
    assert!(cache.weighted_size() > 50, "the cache is used");
}

#[test]
fn an_entry_heavier_than_the_capacity_is_refused_alone() {
    let recorder = Recorder::new();
    let cache: MemoryCache<&str, u32> = MemoryCache::builder()
        .max_capacity(10)
        .shards(1)
        .weigher(|_k, v: &u32| *v)
        .eviction_listener(recorder.listener())
        .build();
    for k in ["a", "b", "c", "d", "e", "f"] {
        cache.insert(k, 1);
    }
    cache.insert("big", 11);
    assert_eq!(recorder.take(), vec![("big", 11, RemovalCause::Size)]);
    assert_eq!(cache.get("big"), None);
    for k in ["a", "b", "c", "d", "e", "f"] {
        assert_eq!(
            cache.get(k),
            Some(1),
            "{k} must not be evicted for a refused entry"
        );
    }
    assert_eq!(cache.weighted_size(), 6);
    let stats = cache.stats();
    assert_eq!(stats.evictions_size, 1);
    assert_eq!(stats.inserts, 6);
    // Exactly the capacity fits.
    let exact: MemoryCache<&str, u32> = MemoryCache::builder()
        .max_capacity(10)
        .shards(1)
        .weigher(|_k, v: &u32| *v)
        .build();
    exact.insert("ten", 10);
    assert_eq!(exact.get("ten"), Some(10));
}

#[test]
fn an_entry_heavier_than_its_shards_share_is_refused() {
    let recorder = Recorder::new();
    let cache: MemoryCache<u32, u32> = MemoryCache::builder()
        .max_capacity(100)
        .shards(4) // 25 each
        .weigher(|_k, v: &u32| *v)
        .eviction_listener(recorder.listener())
        .build();
    for k in 0..20 {
        cache.insert(k, 1);
    }
    cache.insert(100, 26);
    assert_eq!(recorder.take(), vec![(100, 26, RemovalCause::Size)]);
    assert_eq!(cache.len(), 20);
    assert_eq!(cache.weighted_size(), 20);
    // Into an empty shard (no admission contest with residents), a shard's
    // full share fits.
    cache.clear();
    cache.insert(101, 25);
    assert_eq!(cache.get(&101), Some(25), "a shard's full share fits");
}

/// An update whose new value alone outweighs the capacity must be refused
/// like a fresh insert would be, without emptying the shard.
#[test]
fn an_update_heavier_than_the_capacity_does_not_evict_others() {
    let recorder = Recorder::new();
    let cache: MemoryCache<&str, u32> = MemoryCache::builder()
        .max_capacity(10)
        .shards(1)
        .weigher(|_k, v: &u32| *v)
        .eviction_listener(recorder.listener())
        .build();
    for k in ["a", "b", "c", "d", "e", "f"] {
        cache.insert(k, 1);
    }
    for _ in 0..10 {
        cache.get("f");
    }
    cache.run_pending_tasks();
    cache.insert("f", 100);
    let events = recorder.take();
    assert_eq!(cache.get("f"), None, "the heavy value is not stored");
    assert!(cache.weighted_size() <= 10);
    for k in ["a", "b", "c", "d", "e"] {
        assert_eq!(
            cache.get(k),
            Some(1),
            "{k} was evicted to make room for a value that can never fit; events: {events:?}"
        );
    }
    assert!(
        events.contains(&("f", 100, RemovalCause::Size)),
        "the heavy value is reported as refused: {events:?}"
    );
}

/// The builder documents that one entry may weigh at most 2^29 - 1 and that
/// a heavier one is refused with `RemovalCause::Size`.
#[test]
fn an_entry_heavier_than_the_maximum_entry_weight_is_refused() {
    let recorder = Recorder::new();
    let cache: MemoryCache<u32, u32> = MemoryCache::builder()
        .max_capacity(1 << 40)
        .shards(1)
        .weigher(|_k, v: &u32| *v)
        .eviction_listener(recorder.listener())
        .build();
    cache.insert(1, (1 << 29) - 1);
    assert_eq!(
        cache.weighted_size(),
        (1 << 29) - 1,
        "the maximum weight fits"
    );
    cache.insert(2, 1 << 30);
    assert_eq!(
        cache.get(&2),
        None,
        "a 2^30 weight must be refused (weighted_size = {})",
        cache.weighted_size()
    );
    assert_eq!(recorder.take(), vec![(2, 1 << 30, RemovalCause::Size)]);
    assert_eq!(cache.weighted_size(), (1 << 29) - 1);
}

#[test]
fn capacity_zero_stores_nothing() {
    let recorder = Recorder::new();
    let cache = MemoryCache::builder()
        .max_capacity(0)
        .eviction_listener(recorder.listener())
        .build();
    for k in 0..10u32 {
        cache.insert(k, k);
        assert_eq!(cache.get(&k), None);
    }
    assert_eq!(cache.len(), 0);
    assert_eq!(cache.weighted_size(), 0);
    assert_eq!(cache.capacity(), 0);
    let events = recorder.take();
    assert_eq!(events.len(), 10);
    assert!(events
        .iter()
        .all(|&(k, v, c)| k == v && c == RemovalCause::Size));
    assert_eq!(cache.stats().evictions_size, 10);
    assert_eq!(cache.stats().inserts, 0);
}

/// Every capacity, at every shard count, must accept inserts and keep its
/// bound. (Regression: `insert` used to panic in `State::push` for shard
/// capacities 1, 2, 4-6, 8-10, 16-18, 32-34, ..., 1024-1026, ...)
#[test]
fn small_capacities_never_panic_and_hold_their_bound() {
    let mut failures = Vec::new();
    for shards in [1usize, 2, 4] {
        for capacity in 0..=70u64 {
            let result = std::panic::catch_unwind(|| {
                let cache = MemoryCache::builder()
                    .max_capacity(capacity)
                    .shards(shards)
                    .build();
                for k in 0..300u32 {
                    cache.insert(k, k);
                    assert!(cache.len() <= capacity);
                    assert!(cache.weighted_size() <= capacity);
                }
                if capacity > 0 {
                    assert!(!cache.is_empty());
                }
            });
            if result.is_err() {
                failures.push((capacity, shards));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "inserting panicked or broke the bound for (capacity, shards) = {failures:?}"
    );
}

#[test]
fn a_power_of_two_shard_capacity_does_not_panic() {
    // The default shard count gives a capacity of 4096 four shards of 1024
    // on any machine: a common configuration.
    let cache = MemoryCache::builder().max_capacity(1024).shards(1).build();
    for k in 0..2_000u32 {
        cache.insert(k, k);
    }
    assert_eq!(cache.len(), 1024);
}

#[test]
fn frequently_read_entries_survive_a_scan() {
    // "A hit counts as a use of the entry for the eviction policy": keys
    // that keep being read outlive a long stream of one-hit keys (a policy
    // that ignored reads, such as FIFO, would flush them within 100 inserts).
    let cache = MemoryCache::builder().max_capacity(100).shards(1).build();
    for k in 0..100u32 {
        cache.insert(k, k);
    }
    for _ in 0..20 {
        for k in 0..10u32 {
            assert_eq!(cache.get(&k), Some(k));
        }
    }
    for k in 1_000..5_000u32 {
        cache.insert(k, k);
        if k % 20 == 0 {
            for hot in 0..10u32 {
                assert_eq!(
                    cache.get(&hot),
                    Some(hot),
                    "hot key {hot} flushed by one-hit key {k}"
                );
            }
        }
    }
    assert!(cache.len() <= 100);
}

#[test]
fn one_time_newcomers_do_not_displace_the_first_entries_cached() {
    // The frequency sketch is allocated only when the cache is half full.
    // The entries cached before that must still count as seen once, or
    // every later newcomer, seen once too, would rate above them and
    // displace them (on loop-shaped traces this cost a quarter of the hits).
    let cache = MemoryCache::builder().max_capacity(100).shards(1).build();
    for k in 0..100u32 {
        cache.insert(k, k);
    }
    for k in 1_000..1_100u32 {
        cache.insert(k, k);
    }
    let kept = (0..100u32).filter(|k| cache.get(k).is_some()).count();
    assert!(kept >= 90, "only {kept} of the first 100 entries survived");
}

#[test]
fn overwriting_a_key_counts_towards_its_frequency() {
    // A key that is written often but never read is in use all the same
    // (a counter, a session being refreshed): its overwrites must raise its
    // frequency, or newcomers read once would push it out. The flood below
    // gives each newcomer two uses (the insert and one read), more than
    // the residents seeded with one; only the overwritten key must stay.
    fn survives_flood(overwrites: u32) -> bool {
        let cache = MemoryCache::builder().max_capacity(10).shards(1).build();
        for k in 0..10u32 {
            cache.insert(k, k);
        }
        for n in 0..overwrites {
            cache.insert(0, n);
        }
        cache.run_pending_tasks();
        for k in 100..130u32 {
            cache.insert(k, k);
            let _ = cache.get(&k);
        }
        let others = (1..10u32).filter(|k| cache.contains_key(k)).count();
        assert!(others < 9, "the flood displaced none of the residents");
        cache.contains_key(&0)
    }
    assert!(survives_flood(20), "a key overwritten 20 times was evicted");
    assert!(
        !survives_flood(0),
        "without the overwrites the key should go like its neighbours \
         (else this test proves nothing)"
    );
}

#[test]
fn a_clone_that_panics_during_a_get_leaves_the_shard_usable() {
    // A get clones the value while it holds the shard's read side. If the
    // clone panics, the read must still be released on the way out, or the
    // next write to the shard would wait for it forever.
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    static PANIC_ON_CLONE: AtomicBool = AtomicBool::new(false);
    #[derive(Debug, PartialEq)]
    struct Touchy(u32);
    impl Clone for Touchy {
        fn clone(&self) -> Self {
            if PANIC_ON_CLONE.load(Ordering::SeqCst) {
                panic!("clone refused");
            }
            Touchy(self.0)
        }
    }

    let cache = MemoryCache::builder().max_capacity(10).shards(1).build();
    cache.insert(1u32, Touchy(1));
    PANIC_ON_CLONE.store(true, Ordering::SeqCst);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cache.get(&1)));
    PANIC_ON_CLONE.store(false, Ordering::SeqCst);
    assert!(outcome.is_err(), "the clone should have panicked");

    // The write runs on another thread so that a wedged shard fails the
    // test instead of hanging it (a liveness guard, not a timing claim).
    let (done, finished) = mpsc::channel();
    let writer = cache.clone();
    std::thread::spawn(move || {
        writer.insert(2, Touchy(2));
        done.send(writer.get(&1)).ok();
    });
    let seen = finished
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("a write after the panicking get never finished: the read was not released");
    assert_eq!(seen, Some(Touchy(1)));
    assert_eq!(cache.get(&2), Some(Touchy(2)));
}

// ---------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------

#[test]
fn stats_count_a_known_sequence() {
    let clock = ManualClock::new();
    let cache: MemoryCache<u32, u32> = MemoryCache::builder()
        .max_capacity(100)
        .clock(clock.source())
        .build();
    cache.insert(1, 10);
    cache.insert(2, 20);
    cache.insert(3, 30);
    cache.insert(1, 11); // update
    assert_eq!(cache.get(&1), Some(11)); // hit
    assert_eq!(cache.get(&2), Some(20)); // hit
    assert_eq!(cache.get(&9), None); // miss
    assert!(cache.get_with_ttl(&3).is_some()); // hit
    assert!(cache.get_with_ttl(&8).is_none()); // miss
                                               // Not counted as uses.
    assert!(cache.contains_key(&1));
    assert!(!cache.contains_key(&9));
    assert!(cache.remaining_ttl(&2).is_some());
    assert!(cache.remaining_ttl(&9).is_none());
    assert_eq!(cache.remove(&2), Some(20)); // removal
    assert_eq!(cache.remove(&2), None);
    assert_eq!(cache.remove(&9), None);
    cache.insert_with_ttl(4, 40, Ttl::After(SEC)); // insert
    clock.advance(secs(2));
    assert_eq!(cache.get(&4), None); // miss (expired)
    cache.run_pending_tasks(); // expiry
    let s = cache.stats();
    assert_eq!(
        (s.hits, s.misses, s.inserts, s.updates, s.removals),
        (3, 3, 4, 1, 1),
        "{s:?}"
    );
    assert_eq!((s.evictions_size, s.evictions_expired), (0, 1), "{s:?}");
    assert_eq!(s.evictions(), 1);
    assert!((s.hit_ratio() - 0.5).abs() < 1e-12);

    cache.clear(); // removes 1 and 3
    let s = cache.stats();
    assert_eq!(s.removals, 3, "{s:?}");
    assert_eq!((s.hits, s.misses, s.inserts, s.updates), (3, 3, 4, 1));

    let small = MemoryCache::builder().max_capacity(3).shards(1).build();
    assert_eq!(small.stats().hit_ratio(), 0.0);
    for k in 0..10u32 {
        small.insert(k, k);
    }
    let s = small.stats();
    assert_eq!(
        (s.inserts, s.evictions_size, s.evictions()),
        (10, 7, 7),
        "{s:?}"
    );
    assert_eq!(small.len(), 3);
}

// ---------------------------------------------------------------------------
// Sharing and re-entrancy
// ---------------------------------------------------------------------------

#[test]
fn clones_share_one_cache() {
    let a: MemoryCache<u32, u32> = MemoryCache::new(100);
    let b = a.clone();
    a.insert(1, 1);
    assert_eq!(b.get(&1), Some(1));
    b.insert(2, 2);
    assert_eq!(a.get(&2), Some(2));
    assert_eq!(b.remove(&1), Some(1));
    assert_eq!(a.get(&1), None);
    assert_eq!(a.len(), b.len());
    assert_eq!(a.stats(), b.stats());
    drop(a);
    assert_eq!(b.get(&2), Some(2), "dropping a clone keeps the cache");
    let c = b.clone();
    c.clear();
    assert!(b.is_empty());
}

#[test]
fn the_listener_may_use_the_cache() {
    type Cache = MemoryCache<u32, u32>;
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let clock = ManualClock::new();
        let cell: Arc<OnceLock<Cache>> = Arc::new(OnceLock::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let (listener_cell, listener_calls) = (Arc::clone(&cell), Arc::clone(&calls));
        let cache: Cache = MemoryCache::builder()
            .max_capacity(12)
            .shards(1)
            .time_to_live(secs(10))
            .ttl_jitter(0.0)
            .clock(clock.source())
            .eviction_listener(move |k, v, _cause| {
                listener_calls.fetch_add(1, Ordering::SeqCst);
                let cache = listener_cell.get().expect("cache is set");
                // Reads, writes and bookkeeping from inside the listener.
                let _ = cache.get(&k);
                let _ = cache.contains_key(&v);
                let _ = cache.remaining_ttl(&k);
                let _ = (cache.len(), cache.weighted_size(), cache.stats());
                if k < 1_000 {
                    cache.insert_with_ttl(k + 1_000, v, Ttl::Never);
                    cache.remove(&(k + 1_000));
                }
                cache.run_pending_tasks();
            })
            .build();
        assert!(cell.set(cache.clone()).is_ok());

        cache.insert(1, 1);
        cache.insert(1, 2); // Replaced
        cache.remove(&1); // Explicit
        for k in 10..40 {
            cache.insert(k, k); // Size
        }
        clock.advance(secs(11));
        cache.run_pending_tasks(); // Expired via maintenance
        for k in 50..55 {
            cache.insert(k, k);
        }
        clock.advance(secs(11));
        for k in 50..55 {
            assert_eq!(cache.get(&k), None); // Expired via reads
        }
        cache.insert(60, 60);
        cache.clear(); // Explicit
        done_tx.send(calls.load(Ordering::SeqCst)).unwrap();
    });
    let calls = done_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the operations finished (a re-entrant listener deadlocked otherwise)");
    assert!(calls > 2 + 18 + 5, "listener called {calls} times");
}
