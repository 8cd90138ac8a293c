//! Jittered TTLs fall inside their band, and fill it evenly: a statistical
//! test over many entries with a fixed seed, reading each entry's TTL on
//! tokio's paused clock (so no time passes between write and read).

use std::io;
use std::time::Duration;

use cachex::{Cache, Ttl};

const TTL: Duration = Duration::from_secs(100);
const JITTER: f64 = 0.2;
const ENTRIES: usize = 10_000;
const BINS: usize = 10;

fn cache(seed: u64) -> Cache<u32> {
    Cache::builder()
        .capacity(2 * ENTRIES as u64)
        .default_ttl(TTL)
        .negative_ttl(TTL / 10)
        .jitter(JITTER)
        .seed(seed)
        .build()
}

/// Checks that every TTL lies in `[base × (1 − JITTER), base]`, that their
/// mean is the band's middle, and that each tenth of the band holds about a
/// tenth of them.
fn assert_fills_band(ttls: &[Duration], base: Duration) {
    let low = base.mul_f64(1.0 - JITTER);
    let width = (base - low).as_secs_f64();
    let mut bins = [0usize; BINS];
    for &ttl in ttls {
        assert!(
            low <= ttl && ttl <= base,
            "{ttl:?} outside [{low:?}, {base:?}]"
        );
        let bin = ((ttl - low).as_secs_f64() / width * BINS as f64) as usize;
        bins[bin.min(BINS - 1)] += 1;
    }
    let n = ttls.len() as f64;
    let mean = ttls.iter().map(Duration::as_secs_f64).sum::<f64>() / n;
    let middle = (low + base).as_secs_f64() / 2.0;
    // The mean of n uniforms has standard deviation width / sqrt(12 n).
    let sigma = width / (12.0 * n).sqrt();
    assert!(
        (mean - middle).abs() < 5.0 * sigma,
        "mean {mean} vs {middle}"
    );
    // Each bin: binomial(n, 1/BINS), standard deviation sqrt(n · 0.1 · 0.9).
    let expected = n / BINS as f64;
    let sigma = (n * 0.1 * 0.9).sqrt();
    for (i, &count) in bins.iter().enumerate() {
        assert!(
            (count as f64 - expected).abs() < 5.0 * sigma,
            "bin {i} holds {count}, expected {expected} ± {sigma:.0}: {bins:?}"
        );
    }
}

async fn ttl_of(cache: &Cache<u32>, key: &str) -> Duration {
    cache
        .remaining_ttl(key)
        .await
        .unwrap()
        .flatten()
        .expect("an expiring entry")
}

#[tokio::test(start_paused = true)]
async fn default_ttls_set_directly_are_jittered_into_their_band() {
    let cache = cache(42);
    let mut ttls = Vec::with_capacity(ENTRIES);
    for i in 0..ENTRIES {
        let key = format!("k{i}");
        cache.set(&key, 1, Ttl::Default).await.unwrap();
        ttls.push(ttl_of(&cache, &key).await);
    }
    assert_fills_band(&ttls, TTL);
}

#[tokio::test(start_paused = true)]
async fn loaded_values_and_not_found_answers_are_jittered_too() {
    let cache = cache(7);
    let (mut values, mut negatives) = (Vec::new(), Vec::new());
    for i in 0..ENTRIES {
        let key = format!("k{i}");
        let found = i % 2 == 0;
        cache
            .get_or_load_optional(&key, move || async move {
                Ok::<_, io::Error>(found.then_some(1))
            })
            .await
            .unwrap();
        let ttl = ttl_of(&cache, &key).await;
        if found {
            values.push(ttl)
        } else {
            negatives.push(ttl)
        }
    }
    assert_fills_band(&values, TTL);
    assert_fills_band(&negatives, TTL / 10);
}

#[tokio::test(start_paused = true)]
async fn explicit_ttls_and_zero_jitter_are_exact() {
    let cache = cache(1);
    cache
        .set("exact", 1, Ttl::After(Duration::from_secs(33)))
        .await
        .unwrap();
    assert_eq!(ttl_of(&cache, "exact").await, Duration::from_secs(33));

    let flat: Cache<u32> = Cache::builder().default_ttl(TTL).jitter(0.0).build();
    for i in 0..100 {
        let key = format!("k{i}");
        flat.set(&key, 1, Ttl::Default).await.unwrap();
        assert_eq!(flat.remaining_ttl(&key).await.unwrap(), Some(Some(TTL)));
    }
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_ttls() {
    let (a, b) = (cache(99), cache(99));
    for i in 0..100 {
        let key = format!("k{i}");
        a.set(&key, 1, Ttl::Default).await.unwrap();
        b.set(&key, 1, Ttl::Default).await.unwrap();
        assert_eq!(ttl_of(&a, &key).await, ttl_of(&b, &key).await);
    }
}
