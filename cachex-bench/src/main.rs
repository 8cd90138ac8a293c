//! `cachex-bench`: throughput, hit-ratio and memory comparisons of cachex
//! against moka, quick_cache and an unbounded concurrent map, following the
//! standard workloads of `shared/workloads.md`.
//!
//! ```text
//! cargo run --release -p cachex-bench -- throughput --threads 1,2 --json
//! cargo run --release -p cachex-bench -- hitratio --all-traces --chart docs/charts
//! cargo run --release -p cachex-bench -- memory
//! cargo run --release -p cachex-bench -- redis --json
//! cargo run --release -p cachex-bench -- async --threads 1
//! cargo run --release -p cachex-bench -- hybrid --json
//! cargo run --release -p cachex-bench -- batch --json
//! cargo run --release -p cachex-bench -- tags --json
//! cargo run --release -p cachex-bench -- stampede --json
//! ```

mod alloc;
mod chart;
mod contenders;
mod reference;
mod report;
mod trace;
mod workloads;
mod zipf;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use workloads::asyncget::AsyncArgs;
use workloads::batch::BatchArgs;
use workloads::hitratio::HitratioArgs;
use workloads::hybrid::{HybridArgs, PeerArgs};
use workloads::memory::MemoryArgs;
use workloads::outage::OutagePeerArgs;
use workloads::redis::RedisArgs;
use workloads::simulate::SimulateArgs;
use workloads::soak::SoakArgs;
use workloads::stampede::{StampedeArgs, StampedePeerArgs};
use workloads::tags::TagsArgs;
use workloads::throughput::ThroughputArgs;

#[global_allocator]
static GLOBAL: alloc::CountingAlloc = alloc::CountingAlloc;

/// Benchmarks cachex against its peers on the standard workloads.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Also write the JSON result lines to this file (tables still print
    /// unless --json is given), so one run gives both forms.
    #[arg(long, global = true)]
    json_out: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// T1, T2, T3: operations per second at several thread counts.
    Throughput(ThroughputArgs),
    /// H: hit ratios on recorded and synthetic traces, with LRU, Bélády's
    /// optimum and the ideal Zipf policy as references.
    Hitratio(HitratioArgs),
    /// M: heap bytes per entry of a full cache.
    Memory(MemoryArgs),
    /// Redis: get latency and throughput through cachex vs a raw client.
    Redis(RedisArgs),
    /// The async hit path (`Cache::get`, `get_or_load`, over the memory
    /// and hybrid stores) beside the engine and the peers' async caches.
    Async(AsyncArgs),
    /// Batches: get_many vs sequential and concurrent gets vs a raw MGET
    /// (standalone and cluster), cold pages through get_many_or_load, and
    /// a hybrid batch mostly in L1.
    Batch(BatchArgs),
    /// Tags: an L1 hit of a tagged entry vs an untagged one, a Redis read
    /// of a tagged entry (round trips), invalidate_tag over 10 and
    /// 100,000 entries.
    Tags(TagsArgs),
    /// Hybrid (memory + Redis): get at 90% L1 hits beside memory-only and
    /// Redis-only; invalidation latency between two processes.
    Hybrid(HybridArgs),
    /// The second process of the `hybrid` invalidation measurement.
    #[command(hide = true)]
    HybridPeer(PeerArgs),
    /// The capacity planner: hit ratio against capacity on your own key
    /// log (one key per line), for cachex, LRU and Bélády's optimum.
    Simulate(SimulateArgs),
    /// The second process of the `hybrid` outage measurement.
    #[command(hide = true)]
    HybridOutagePeer(OutagePeerArgs),
    /// Stampede: 1, 2, 4, 8 processes x 100 tasks on a cold key, with
    /// cachex's distributed singleflight and with a lock-and-poll loop:
    /// loader calls, time to value, Redis commands per process.
    Stampede(StampedeArgs),
    /// One process of the `stampede` measurement.
    #[command(hide = true)]
    StampedePeer(StampedePeerArgs),
    /// Soak: memory and hybrid caches under a mixed load for minutes while
    /// Redis is killed, frozen, partitioned and made lossy in turn; fails
    /// on unbounded memory growth, a stale read or a lost acknowledged write.
    Soak(SoakArgs),
}

fn main() {
    let cli = Cli::parse();
    let json = match &cli.command {
        Command::Throughput(args) => args.json,
        Command::Hitratio(args) => args.json,
        Command::Memory(args) => args.json,
        Command::Redis(args) => args.json,
        Command::Async(args) => args.json,
        Command::Batch(args) => args.json,
        Command::Tags(args) => args.json,
        Command::Hybrid(args) => args.redis.json,
        Command::Simulate(args) => args.json,
        Command::Stampede(args) => args.json,
        Command::Soak(args) => args.json,
        Command::HybridPeer(_) | Command::HybridOutagePeer(_) | Command::StampedePeer(_) => false,
    };
    if let Err(e) = report::configure_json(json, cli.json_out.as_deref()) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let result = match &cli.command {
        Command::Throughput(args) => workloads::throughput::run(args),
        Command::Hitratio(args) => workloads::hitratio::run(args),
        Command::Memory(args) => workloads::memory::run(args),
        Command::Redis(args) => workloads::redis::run(args),
        Command::Async(args) => workloads::asyncget::run(args),
        Command::Batch(args) => workloads::batch::run(args),
        Command::Tags(args) => workloads::tags::run(args),
        Command::Hybrid(args) => workloads::hybrid::run(args),
        Command::HybridPeer(args) => workloads::hybrid::peer(args),
        Command::HybridOutagePeer(args) => workloads::outage::peer(args),
        Command::Simulate(args) => workloads::simulate::run(args),
        Command::Stampede(args) => workloads::stampede::run(args),
        Command::StampedePeer(args) => workloads::stampede::peer(args),
        Command::Soak(args) => workloads::soak::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
