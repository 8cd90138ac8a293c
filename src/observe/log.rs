//! The periodic stats log line (feature `tracing`), one per cache and
//! interval, in the manner of jetcache's.

use std::sync::Weak;
use std::time::Duration;

use super::StatsSource;
use crate::loading::Background;
use crate::Stats;

/// Starts logging `source`'s stats every `interval`, as a background task
/// of the cache (stopped by `close` or by dropping the cache). Needs a
/// tokio runtime; without one nothing is logged.
pub(crate) fn start(background: &Background, source: Weak<dyn StatsSource>, interval: Duration) {
    if interval.is_zero() {
        return;
    }
    background.spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate
        let mut last = Stats::default();
        loop {
            ticks.tick().await;
            let Some(source) = source.upgrade() else {
                return;
            };
            let now = source.stats();
            line(&source.observer().name, &now, &last, interval);
            last = now;
        }
    });
}

/// Logs what happened since `last`, and the cumulative hit ratio.
fn line(name: &str, now: &Stats, last: &Stats, interval: Duration) {
    let delta = |f: fn(&Stats) -> u64| f(now).saturating_sub(f(last));
    let hits = delta(|s| s.hits + s.negative_hits);
    let misses = delta(|s| s.misses);
    let lookups = hits + misses;
    let interval_hit_ratio = if lookups == 0 {
        0.0
    } else {
        hits as f64 / lookups as f64
    };
    let loads = delta(|s| s.loader_calls());
    let load_time = now.load_time.saturating_sub(last.load_time);
    let mean_load_ms = if loads == 0 {
        0.0
    } else {
        load_time.as_secs_f64() * 1000.0 / loads as f64
    };
    tracing::info!(
        target: "cachex::stats",
        cache = name,
        interval_s = interval.as_secs_f64(),
        lookups,
        hits,
        misses,
        hit_ratio = interval_hit_ratio,
        loads,
        load_errors = delta(|s| s.load_errors + s.refresh_errors),
        mean_load_ms,
        sets = delta(|s| s.sets),
        deletes = delta(|s| s.deletes),
        evictions = delta(|s| s.store.evictions()),
        store_errors = delta(|s| s.store_errors),
        "cache stats"
    );
}
