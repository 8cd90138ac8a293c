//! The capacity planner: replays a user's own key log through cachex's
//! engine, exact LRU and Bélády's optimum at a sweep of capacities, and
//! prints (and charts) the hit ratio each would get, so a cache can be
//! sized from real traffic instead of a guess.
//!
//! The log is one key per line, any text (a URL, `user:7`, a row id);
//! blank lines are skipped. Keys are hashed to 64 bits with a fixed seed
//! (collisions are negligible below billions of distinct keys), so the
//! whole log is held in memory at 8 bytes per line. The replay is
//! read-through: a get, and an insert on a miss, as `get_or_load` does.
//!
//! Bélády's MIN (evict the key used farthest in the future) is the
//! ceiling no real cache reaches; LRU is the common baseline. Where
//! cachex's curve flattens is where more memory stops paying.

use std::hash::BuildHasher;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use super::hitratio::cache_hits;
use crate::chart::{self, ChartFormat};
use crate::contenders::Kind;
use crate::reference::{belady_hits, lru_hits};
use crate::report::{emit, json_wanted, round, thousands, Table};

/// Options of the `simulate` command.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The key log: one key per line, any text.
    #[arg(long)]
    pub trace: PathBuf,
    /// Capacities in entries to measure, e.g. `1000,10000,100000`.
    /// Default: `--points` sizes spread evenly on a log scale from 0.1% to
    /// 100% of the log's distinct keys.
    #[arg(long, value_delimiter = ',')]
    pub sizes: Vec<u64>,
    /// Capacities in the default sweep.
    #[arg(long, default_value_t = 12)]
    pub points: usize,
    /// Where to draw the chart (hit ratio against capacity); its
    /// extension chooses the format (`.png` or `.svg`). Default: no chart.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// Print one JSON object per capacity instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The policies replayed, in the order they are reported.
const POLICIES: [&str; 3] = ["cachex", "lru", "belady"];

/// Runs the `simulate` command.
pub fn run(args: &SimulateArgs) -> Result<(), String> {
    let keys = read_log(&args.trace)?;
    if keys.is_empty() {
        return Err(format!(
            "{}: no keys (one key per line)",
            args.trace.display()
        ));
    }
    let distinct = distinct(&keys);
    let sizes = if args.sizes.is_empty() {
        sweep(distinct as u64, args.points.max(2))
    } else {
        let mut sizes: Vec<u64> = args.sizes.iter().copied().filter(|&s| s > 0).collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    };
    if sizes.is_empty() {
        return Err("--sizes: give at least one positive capacity".into());
    }
    let chart_format = match &args.chart {
        Some(path) => Some(format_of(path)?),
        None => None,
    };
    eprintln!(
        "{}: {} accesses, {} distinct keys; replaying at {} capacities",
        args.trace.display(),
        thousands(keys.len() as u64),
        thousands(distinct as u64),
        sizes.len()
    );

    // One replay per (capacity, policy), spread over the cores.
    let jobs: Vec<(u64, &str)> = sizes
        .iter()
        .flat_map(|&size| POLICIES.iter().map(move |&p| (size, p)))
        .collect();
    let ratios = parallel(&jobs, |&(size, policy)| {
        let hits = match policy {
            "cachex" => cache_hits(Kind::Cachex, &keys, size),
            "lru" => lru_hits(&keys, size as usize),
            _ => belady_hits(&keys, size as usize),
        };
        100.0 * hits as f64 / keys.len() as f64
    });
    let ratio = |i: usize, p: usize| ratios[i * POLICIES.len() + p];

    let mut table = Table::new([
        "capacity",
        "% of distinct",
        "cachex %",
        "lru %",
        "belady %",
        "cachex - lru",
    ]);
    for (i, &size) in sizes.iter().enumerate() {
        let share = 100.0 * size as f64 / distinct as f64;
        if json_wanted() {
            emit(&json!({
                "workload": "simulate",
                "trace": args.trace.display().to_string(),
                "accesses": keys.len(),
                "distinct": distinct,
                "capacity": size,
                "share_of_distinct_pct": round(share, 3),
                "cachex_pct": round(ratio(i, 0), 2),
                "lru_pct": round(ratio(i, 1), 2),
                "belady_pct": round(ratio(i, 2), 2),
            }));
        }
        table.row(vec![
            thousands(size),
            format!("{share:.1}"),
            format!("{:.2}", ratio(i, 0)),
            format!("{:.2}", ratio(i, 1)),
            format!("{:.2}", ratio(i, 2)),
            format!("{:+.2}", ratio(i, 0) - ratio(i, 1)),
        ]);
    }
    if !json_wanted() {
        print!("{}", table.render());
    }
    if let (Some(path), Some(format)) = (&args.chart, chart_format) {
        let series: Vec<(String, Vec<(u64, f64)>)> = POLICIES
            .iter()
            .enumerate()
            .map(|(p, name)| {
                let points = sizes.iter().enumerate().map(|(i, &s)| (s, ratio(i, p)));
                (name.to_string(), points.collect())
            })
            .collect();
        let title = format!(
            "{}: hit ratio by capacity ({} distinct keys)",
            args.trace.file_name().map_or_else(
                || args.trace.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            ),
            thousands(distinct as u64)
        );
        chart::curves(path, format, &title, &series)?;
        eprintln!("chart: {}", path.display());
    }
    Ok(())
}

/// The log's keys, hashed; blank lines skipped.
fn read_log(path: &Path) -> Result<Vec<u64>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // Fixed seed: the same log gives the same figures on every run.
    let hasher = foldhash::quality::FixedState::with_seed(0x00ca_c4e5);
    let mut keys = Vec::new();
    for (n, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
        let key = line.trim_ascii();
        if !key.is_empty() {
            keys.push(hasher.hash_one(key));
        }
    }
    Ok(keys)
}

fn distinct(keys: &[u64]) -> usize {
    let mut seen = foldhash::HashSet::default();
    keys.iter().filter(|&&k| seen.insert(k)).count()
}

/// `points` capacities spread evenly on a log scale from 0.1% of
/// `distinct` (at least 1) to `distinct`.
fn sweep(distinct: u64, points: usize) -> Vec<u64> {
    let (lo, hi) = (
        ((distinct as f64) / 1000.0).max(1.0),
        distinct.max(1) as f64,
    );
    let step = (hi / lo).ln() / (points - 1) as f64;
    let mut sizes: Vec<u64> = (0..points)
        .map(|i| (lo * (step * i as f64).exp()).round() as u64)
        .map(|s| s.clamp(1, distinct.max(1)))
        .collect();
    sizes.dedup();
    sizes
}

fn format_of(path: &Path) -> Result<ChartFormat, String> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("png") => Ok(ChartFormat::Png),
        Some("svg") => Ok(ChartFormat::Svg),
        _ => Err(format!(
            "--chart {}: use a .png or .svg file",
            path.display()
        )),
    }
}

/// `f` over `jobs` on every core, results in job order.
fn parallel<J: Sync, R: Send + Default + Clone>(jobs: &[J], f: impl Fn(&J) -> R + Sync) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![R::default(); jobs.len()]);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..threads.min(jobs.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let r = f(job);
                results.lock().expect("a replay panicked")[i] = r;
            });
        }
    });
    results.into_inner().expect("a replay panicked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_spans_a_thousandth_to_all_distinct_keys() {
        let sizes = sweep(100_000, 12);
        assert_eq!(sizes.first(), Some(&100));
        assert_eq!(sizes.last(), Some(&100_000));
        assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{sizes:?}");
        assert_eq!(sweep(5, 12), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn text_keys_are_read_and_hashed_alike() {
        let dir = tempfile_dir();
        let path = dir.join("log.txt");
        std::fs::write(&path, "user:7\n\n  user:8 \nuser:7\r\n/a/b?c=1\n").unwrap();
        let keys = read_log(&path).unwrap();
        assert_eq!(keys.len(), 4);
        assert_eq!(keys[0], keys[2], "the same key twice, CRLF or not");
        assert_eq!(distinct(&keys), 3);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cachex-simulate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
