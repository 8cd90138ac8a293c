//! Hit-ratio workload H: single-threaded get-then-insert-on-miss replays of
//! recorded and synthetic Zipf traces, beside exact LRU, Bélády's optimal
//! and (for Zipf) the ideal online policy.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use crate::chart::{self, ChartFormat};
use crate::contenders::{Contender, Kind, Visitor};
use crate::reference::{belady_hits, lru_hits};
use crate::report::{emit, json_wanted, round, thousands, Table};
use crate::trace::{capacity_at, list_traces, standard_percents, Trace};
use crate::zipf::ideal_hit_ratio;

/// Exponents of the standard synthetic Zipf grid.
pub const GRID_S: [f64; 3] = [0.8, 1.01, 1.2];
/// Capacities of the standard synthetic Zipf grid.
pub const GRID_CAPACITIES: [u64; 2] = [10_000, 100_000];

/// Options of the `hitratio` command.
#[derive(Debug, Args)]
pub struct HitratioArgs {
    /// A trace file of one decimal key per line (repeatable).
    #[arg(long)]
    pub trace: Vec<PathBuf>,
    /// Capacities in entries, e.g. `1868,9344`. Default: the traces
    /// README's shares of each trace's distinct keys (1%, 5%, 25%), or
    /// 10,000 and 100,000 for Zipf.
    #[arg(long, value_delimiter = ',')]
    pub capacity: Vec<u64>,
    /// A synthetic Zipf trace with these exponents (comma list).
    #[arg(long, value_delimiter = ',')]
    pub zipf: Vec<f64>,
    /// Distinct keys of the synthetic Zipf trace.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Accesses of the synthetic Zipf trace.
    #[arg(long, default_value_t = 5_000_000)]
    pub len: usize,
    /// Every trace in --traces-dir at its standard capacities, plus the
    /// synthetic Zipf grid (s = 0.8, 1.01, 1.2; capacities 10,000, 100,000).
    #[arg(long)]
    pub all_traces: bool,
    /// Where --all-traces looks for `*.txt` traces.
    #[arg(long, default_value = "../shared/traces")]
    pub traces_dir: PathBuf,
    /// Write one hit-ratio chart per trace into this directory.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// Image format of the charts.
    #[arg(long, value_enum, default_value = "png")]
    pub chart_format: ChartFormat,
    /// Caches to replay (default: cachex, moka, quick_cache; the
    /// references lru, belady and ideal always run). `cachex_1shard` is a
    /// diagnostic: cachex with one shard.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub contenders: Vec<Kind>,
    /// Seed of the synthetic Zipf traces.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Fresh instances (fresh random hash seeds) of each cache replayed per
    /// trace and capacity: hit ratios averaged, and their spread (min,
    /// max) reported. Default: 10 seeds, except for moka, whose replay
    /// costs about 8 times cachex's: enough for about 500,000 accesses in
    /// all, between 1 and 5.
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Replays run at once (each one is single-threaded).
    #[arg(long, default_value_t = default_jobs())]
    pub jobs: usize,
    /// Print one JSON object per result line instead of tables.
    #[arg(long)]
    pub json: bool,
}

fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A policy whose hit ratio is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// One of the caches, replayed through its public API.
    Cache(Kind),
    /// Exact LRU.
    Lru,
    /// Bélády's MIN with bypass (offline optimum).
    Belady,
    /// Mass of the `capacity` most popular Zipf ranks (Zipf traces only).
    Ideal,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Cache(k) => k.name(),
            Policy::Lru => "lru",
            Policy::Belady => "belady",
            Policy::Ideal => "ideal",
        }
    }

    /// Rough replay time per access relative to cachex, for scheduling.
    fn relative_cost(self) -> f64 {
        match self {
            Policy::Cache(Kind::Moka) => 8.0,
            Policy::Cache(_) => 1.0,
            Policy::Lru => 0.3,
            Policy::Belady => 0.6,
            Policy::Ideal => 0.0,
        }
    }

    /// Every policy that applies to `trace`, with these caches.
    fn for_trace(trace: &Trace, caches: &[Kind]) -> Vec<Policy> {
        let mut out: Vec<Policy> = caches.iter().map(|&k| Policy::Cache(k)).collect();
        out.extend([Policy::Lru, Policy::Belady]);
        if trace.zipf.is_some() {
            out.push(Policy::Ideal);
        }
        out
    }

    /// The hit ratio (hits / gets) of this policy on `trace`, and for a
    /// cache the live entries it held (see [`Occupancy`]).
    fn hit_ratio(self, trace: &Trace, capacity: u64) -> (f64, Option<Occupancy>) {
        let keys = &trace.keys;
        let (hits, occupancy) = match self {
            Policy::Cache(kind) => {
                let (hits, occupancy) = kind.visit(Replay { keys, capacity });
                (hits, Some(occupancy))
            }
            Policy::Lru => (lru_hits(keys, capacity as usize), None),
            Policy::Belady => (belady_hits(keys, capacity as usize), None),
            Policy::Ideal => {
                let (s, n) = trace.zipf.expect("ideal only applies to Zipf traces");
                return (ideal_hit_ratio(n, s, capacity), None);
            }
        };
        (hits as f64 / keys.len().max(1) as f64, occupancy)
    }
}

/// Live entries a cache held during a replay, sampled every
/// [`Occupancy::every`] accesses once the cache first filled. A cache that
/// holds more than its capacity is, for hit-ratio purposes, a bigger cache:
/// the tables flag it so the comparison stays honest.
#[derive(Debug, Clone, Copy, Default)]
struct Occupancy {
    peak: u64,
    sum: u64,
    samples: u64,
}

impl Occupancy {
    /// Sampling interval: counting moka's entries walks them all, so about
    /// one count per `capacity` accesses keeps the replay's cost near twice
    /// its own; the odd floor keeps samples out of step with batch sizes.
    fn every(capacity: u64) -> usize {
        capacity.max(97) as usize
    }

    fn record(&mut self, live: u64) {
        self.peak = self.peak.max(live);
        self.sum += live;
        self.samples += 1;
    }

    fn mean(&self) -> f64 {
        self.sum as f64 / self.samples.max(1) as f64
    }

    fn merge(self, other: Occupancy) -> Occupancy {
        Occupancy {
            peak: self.peak.max(other.peak),
            sum: self.sum + other.sum,
            samples: self.samples + other.samples,
        }
    }
}

/// Replays keys through a cache with get-then-insert-on-miss; counts hits
/// and samples the live entries.
struct Replay<'a> {
    keys: &'a [u64],
    capacity: u64,
}

impl Visitor for Replay<'_> {
    type Output = (u64, Occupancy);

    fn visit<C: Contender>(self) -> (u64, Occupancy) {
        let cache = C::with_capacity(self.capacity);
        let every = Occupancy::every(self.capacity);
        let mut occupancy = Occupancy::default();
        let mut filled = false;
        let mut hits = 0;
        for (i, &key) in self.keys.iter().enumerate() {
            if cache.get(key).is_some() {
                hits += 1;
            } else {
                cache.insert(key, key);
            }
            if i % every == every - 1 {
                let live = cache.live_entries();
                filled |= live >= self.capacity;
                if filled {
                    occupancy.record(live);
                }
            }
        }
        (hits, occupancy)
    }
}

/// Hits of `kind` replaying `keys` (get, then insert on a miss) at
/// `capacity` entries: the simulator's access to the replay above.
pub fn cache_hits(kind: Kind, keys: &[u64], capacity: u64) -> u64 {
    kind.visit(Replay { keys, capacity }).0
}

/// Hit ratios of one policy at one capacity over its repeats.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    mean: f64,
    min: f64,
    max: f64,
    repeats: usize,
    occupancy: Option<Occupancy>,
}

impl Outcome {
    const MISSING: Outcome = Outcome {
        mean: f64::NAN,
        min: f64::NAN,
        max: f64::NAN,
        repeats: 0,
        occupancy: None,
    };
}

/// A trace with the capacities to measure it at.
struct Subject {
    trace: Trace,
    distinct: usize,
    /// (capacity, share of distinct keys in percent if standard).
    capacities: Vec<(u64, Option<u32>)>,
    /// Instances (seeds) of each cache replayed, moka's apart.
    repeats: usize,
    moka_repeats: usize,
}

impl Subject {
    /// Instances of `policy` replayed (1 for the deterministic references).
    fn instances(&self, policy: Policy) -> usize {
        match policy {
            Policy::Cache(Kind::Moka) => self.moka_repeats,
            Policy::Cache(_) => self.repeats,
            _ => 1,
        }
    }
}

/// Runs the `hitratio` command.
pub fn run(args: &HitratioArgs) -> Result<(), String> {
    let subjects = subjects(args)?;
    let caches = Kind::selected(&args.contenders, &Kind::CACHES);
    if subjects.is_empty() {
        return Err("nothing to measure: give --trace, --zipf or --all-traces".into());
    }
    let jobs: Vec<(usize, usize, Policy)> = subjects
        .iter()
        .enumerate()
        .flat_map(|(t, s)| {
            let policies = Policy::for_trace(&s.trace, &caches);
            (0..s.capacities.len())
                .flat_map(move |c| policies.clone().into_iter().map(move |p| (t, c, p)))
        })
        .collect();
    // Longest jobs first, so the last ones to finish are short.
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by(|&a, &b| {
        let cost = |(t, _, p): (usize, usize, Policy)| {
            let s = &subjects[t];
            p.relative_cost() * (s.trace.keys.len() * s.instances(p)) as f64
        };
        cost(jobs[b]).total_cmp(&cost(jobs[a]))
    });
    let results = run_parallel(&subjects, &jobs, &order, args.jobs.max(1));

    if !args.json {
        println!("cachex-bench hitratio: single thread, get-then-insert-on-miss; hit ratio = hits / gets, in percent.");
        println!("Differences (cachex-peer) are in percentage points; cachex/belady is the share of the optimum reached.\n");
    }
    for (t, subject) in subjects.iter().enumerate() {
        let policies = Policy::for_trace(&subject.trace, &caches);
        let lookup = |c: usize, p: Policy| {
            jobs.iter()
                .position(|&j| j == (t, c, p))
                .map(|i| results[i])
                .unwrap_or(Outcome::MISSING)
        };
        if json_wanted() {
            for (c, &(capacity, pct)) in subject.capacities.iter().enumerate() {
                for &p in &policies {
                    let o = lookup(c, p);
                    let mut line = json!({
                        "workload": "H",
                        "trace": subject.trace.name,
                        "capacity": capacity,
                        "capacity_percent_of_distinct": pct,
                        "contender": p.name(),
                        "hit_ratio": round(o.mean, 6),
                        "hit_ratio_min": round(o.min, 6),
                        "hit_ratio_max": round(o.max, 6),
                        "repeats": o.repeats,
                        "seeds": o.repeats,
                        "seed_spread": round(o.max - o.min, 6),
                        "accesses": subject.trace.keys.len(),
                        "distinct": subject.distinct,
                    });
                    if let Some(occupancy) = o.occupancy.filter(|o| o.samples > 0) {
                        line["live_peak"] = json!(occupancy.peak);
                        line["live_mean"] = json!(round(occupancy.mean(), 1));
                    }
                    if let Some((s, n)) = subject.trace.zipf {
                        line["zipf_s"] = json!(s);
                        line["zipf_keys"] = json!(n);
                    }
                    emit(&line);
                }
            }
        }
        if !args.json {
            print_table(subject, &policies, lookup);
            print_overfull(subject, &policies, |c, p| lookup(c, p).occupancy);
        }
        if let Some(dir) = &args.chart {
            let groups: Vec<String> = subject
                .capacities
                .iter()
                .map(|&(cap, pct)| capacity_label(cap, pct))
                .collect();
            let series: Vec<(String, Vec<f64>)> = policies
                .iter()
                .map(|&p| {
                    let values = (0..subject.capacities.len())
                        .map(|c| lookup(c, p).mean * 100.0)
                        .collect();
                    (p.name().to_string(), values)
                })
                .collect();
            let title = format!(
                "{}: hit ratio % ({} accesses, {} distinct keys)",
                subject.trace.name,
                thousands(subject.trace.keys.len() as u64),
                thousands(subject.distinct as u64)
            );
            let path = dir.join(format!(
                "{}.{}",
                subject.trace.name,
                args.chart_format.extension()
            ));
            match chart::bars(&path, args.chart_format, &title, &groups, &series) {
                Ok(()) => eprintln!("chart: {}", path.display()),
                Err(e) => eprintln!("chart {} not written: {e}", path.display()),
            }
        }
    }
    Ok(())
}

/// The traces and capacities the options ask for.
fn subjects(args: &HitratioArgs) -> Result<Vec<Subject>, String> {
    let mut paths: Vec<PathBuf> = args.trace.clone();
    let mut grid: Vec<f64> = args.zipf.clone();
    if args.all_traces {
        paths.extend(list_traces(&args.traces_dir)?);
        grid.extend(GRID_S);
    }
    let mut out = Vec::new();
    for path in &paths {
        let started = Instant::now();
        let trace = Trace::load(path)?;
        let distinct = trace.distinct();
        let len = trace.keys.len();
        eprintln!(
            "loaded {} ({} accesses, {} distinct) in {:.2} s",
            path.display(),
            thousands(trace.keys.len() as u64),
            thousands(distinct as u64),
            started.elapsed().as_secs_f64()
        );
        let capacities =
            if args.capacity.is_empty() || (args.all_traces && !is_explicit(path, args)) {
                standard_percents(&trace.name)
                    .iter()
                    .map(|&p| (capacity_at(distinct, p), Some(p)))
                    .collect()
            } else {
                args.capacity
                    .iter()
                    .map(|&c| (c, percent_of(c, distinct)))
                    .collect()
            };
        out.push(Subject {
            trace,
            distinct,
            repeats: args.repeats.unwrap_or(DEFAULT_SEEDS).max(1),
            moka_repeats: moka_repeats(args, len),
            capacities,
        });
    }
    for &s in &grid {
        if !(s > 0.0 && s.is_finite()) {
            return Err(format!("--zipf {s}: the exponent must be positive"));
        }
        let trace = Trace::zipf(s, args.keys, args.len, args.seed);
        let distinct = trace.distinct();
        let explicit = args.zipf.contains(&s) && !args.capacity.is_empty();
        let capacities = if explicit {
            args.capacity.clone()
        } else {
            GRID_CAPACITIES.to_vec()
        };
        out.push(Subject {
            trace,
            distinct,
            capacities: capacities.into_iter().map(|c| (c, None)).collect(),
            repeats: args.repeats.unwrap_or(DEFAULT_SEEDS).max(1),
            moka_repeats: moka_repeats(args, args.len),
        });
    }
    Ok(out)
}

/// Seeds per trace and capacity of every cache but moka.
const DEFAULT_SEEDS: usize = 10;

/// moka instances to average over for a trace of `len` accesses.
fn moka_repeats(args: &HitratioArgs, len: usize) -> usize {
    args.repeats
        .unwrap_or_else(|| 500_000usize.div_ceil(len.max(1)).clamp(1, 5))
        .max(1)
}

/// Whether `path` was named with `--trace` (its capacities then come from
/// `--capacity`), as opposed to found by `--all-traces`.
fn is_explicit(path: &Path, args: &HitratioArgs) -> bool {
    args.trace.iter().any(|p| p == path)
}

/// The standard percentage `capacity` is, if it is one of them.
fn percent_of(capacity: u64, distinct: usize) -> Option<u32> {
    [1, 5, 25]
        .into_iter()
        .find(|&p| capacity_at(distinct, p) == capacity)
}

fn capacity_label(capacity: u64, pct: Option<u32>) -> String {
    match pct {
        Some(p) => format!("{} ({p}%)", thousands(capacity)),
        None => thousands(capacity),
    }
}

/// Runs every (subject, capacity, policy) job on `threads` threads, taking
/// them in `order`; the results come back in job order.
fn run_parallel(
    subjects: &[Subject],
    jobs: &[(usize, usize, Policy)],
    order: &[usize],
    threads: usize,
) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(vec![Outcome::MISSING; jobs.len()]);
    std::thread::scope(|s| {
        for _ in 0..threads.min(jobs.len()) {
            s.spawn(|| loop {
                let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return;
                };
                let (t, c, policy) = jobs[i];
                let subject = &subjects[t];
                let capacity = subject.capacities[c].0;
                let started = Instant::now();
                let repeats = subject.instances(policy);
                let runs: Vec<(f64, Option<Occupancy>)> = (0..repeats)
                    .map(|_| policy.hit_ratio(&subject.trace, capacity))
                    .collect();
                let ratios = runs.iter().map(|&(ratio, _)| ratio);
                let outcome = Outcome {
                    mean: ratios.clone().sum::<f64>() / repeats as f64,
                    min: ratios.clone().fold(f64::INFINITY, f64::min),
                    max: ratios.fold(f64::NEG_INFINITY, f64::max),
                    repeats,
                    occupancy: runs
                        .iter()
                        .filter_map(|&(_, occupancy)| occupancy)
                        .reduce(Occupancy::merge),
                };
                eprintln!(
                    "{} capacity {} {}: {:.2}% (mean of {repeats}) in {:.2} s",
                    subject.trace.name,
                    capacity,
                    policy.name(),
                    outcome.mean * 100.0,
                    started.elapsed().as_secs_f64()
                );
                results.lock().unwrap()[i] = outcome;
            });
        }
    });
    results.into_inner().unwrap()
}

/// Notes each cache that held more live entries than its capacity.
fn print_overfull(
    subject: &Subject,
    policies: &[Policy],
    occupancy: impl Fn(usize, Policy) -> Option<Occupancy>,
) {
    let mut any = false;
    for (c, &(capacity, _)) in subject.capacities.iter().enumerate() {
        for &p in policies {
            let Some(o) = occupancy(c, p).filter(|o| o.peak > capacity) else {
                continue;
            };
            println!(
                "  {} at capacity {}: held up to {} live entries (mean {:.0}, {:+.1}% over capacity)",
                p.name(),
                thousands(capacity),
                thousands(o.peak),
                o.mean(),
                (o.mean() / capacity as f64 - 1.0) * 100.0
            );
            any = true;
        }
    }
    if any {
        println!();
    }
}

fn print_table(subject: &Subject, policies: &[Policy], outcome: impl Fn(usize, Policy) -> Outcome) {
    let hit = |c: usize, p: Policy| outcome(c, p).mean;
    let trace = &subject.trace;
    let what = match trace.zipf {
        Some((s, n)) => format!("synthetic Zipf(s = {s}) over {} keys", thousands(n)),
        None => "trace file".to_string(),
    };
    let repeats = match (subject.repeats, subject.moka_repeats) {
        (1, 1) => String::new(),
        (n, m) if n == m || !policies.contains(&Policy::Cache(Kind::Moka)) => {
            format!(" (caches: mean of {n} instances with fresh hash seeds)")
        }
        (n, m) => format!(" (caches: mean of {n} instances with fresh hash seeds, moka {m})"),
    };
    println!(
        "{}: {what}, {} accesses, {} distinct keys; hit ratio %{repeats}",
        trace.name,
        thousands(trace.keys.len() as u64),
        thousands(subject.distinct as u64)
    );
    let cachex = Policy::Cache(Kind::Cachex);
    let compare = policies.contains(&cachex);
    let peers: Vec<Policy> = policies
        .iter()
        .copied()
        .filter(|&p| compare && p != cachex && !matches!(p, Policy::Belady | Policy::Ideal))
        .collect();
    let mut header = vec!["capacity".to_string()];
    header.extend(policies.iter().map(|p| p.name().to_string()));
    header.extend(peers.iter().map(|p| format!("cachex-{}", p.name())));
    if compare {
        header.push("cachex/belady".into());
        if trace.zipf.is_some() {
            header.push("cachex/ideal".into());
        }
        header.push("cachex seeds min-max".into());
    }
    let mut table = Table::new(header);
    for (c, &(capacity, pct)) in subject.capacities.iter().enumerate() {
        let mut cells = vec![capacity_label(capacity, pct)];
        cells.extend(
            policies
                .iter()
                .map(|&p| format!("{:.2}", hit(c, p) * 100.0)),
        );
        let x = hit(c, cachex);
        cells.extend(
            peers
                .iter()
                .map(|&p| format!("{:+.2}", (x - hit(c, p)) * 100.0)),
        );
        if compare {
            cells.push(crate::report::ratio(x, hit(c, Policy::Belady)));
            if trace.zipf.is_some() {
                cells.push(crate::report::ratio(x, hit(c, Policy::Ideal)));
            }
            let seeds = outcome(c, cachex);
            cells.push(format!("{:.2}-{:.2}", seeds.min * 100.0, seeds.max * 100.0));
        }
        table.row(cells);
    }
    print!("{}", table.render());
    println!();
}
