//! Memory workload M: bytes per entry of 1,000,000 `u64 -> u64` entries in
//! a cache of capacity 1,000,000, read off the counting global allocator.

use clap::Args;
use serde_json::json;

use crate::alloc;
use crate::contenders::{Contender, Kind, Visitor};
use crate::report::{emit, json_wanted, ratio, round, thousands, Table};
use crate::zipf::mix64;

/// Options of the `memory` command.
#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// Entries inserted (and the capacity of the bounded caches).
    #[arg(long, default_value_t = 1_000_000)]
    pub entries: u64,
    /// Contenders to measure (default: all, papaya included).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub contenders: Vec<Kind>,
    /// Print one JSON object per result line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What one contender's measurement found.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    /// Live bytes after building and filling, minus before building.
    bytes: i64,
    /// Entries held afterwards, as the contender reports them.
    held: u64,
}

struct Measure<'a> {
    keys: &'a [u64],
    capacity: u64,
}

impl Visitor for Measure<'_> {
    type Output = Footprint;

    fn visit<C: Contender>(self) -> Footprint {
        let before = alloc::live_bytes();
        let cache = C::with_capacity(self.capacity);
        for &key in self.keys {
            cache.insert(key, key);
        }
        cache.sync();
        let after = alloc::live_bytes();
        let held = cache.entries();
        drop(cache);
        Footprint {
            bytes: (after - before) as i64,
            held,
        }
    }
}

/// Runs the `memory` command.
pub fn run(args: &MemoryArgs) -> Result<(), String> {
    if args.entries == 0 {
        return Err("--entries must be positive".into());
    }
    alloc::enable();
    let keys: Vec<u64> = (1..=args.entries).map(mix64).collect();
    let kinds = Kind::selected(&args.contenders, &Kind::ALL);
    let results: Vec<(Kind, Footprint)> = kinds
        .iter()
        .map(|&kind| {
            let f = kind.visit(Measure {
                keys: &keys,
                capacity: args.entries,
            });
            eprintln!("{kind}: {} bytes for {} entries", f.bytes, f.held);
            (kind, f)
        })
        .collect();
    let per_entry = |f: &Footprint| f.bytes as f64 / f.held.max(1) as f64;
    let cachex = results
        .iter()
        .find(|(k, _)| *k == Kind::Cachex)
        .map(|(_, f)| per_entry(f));
    if json_wanted() {
        for (kind, f) in &results {
            let mut line = json!({
                "workload": "M",
                "contender": kind.name(),
                "entries_inserted": args.entries,
                "capacity": if kind.bounded() { json!(args.entries) } else { json!(null) },
                "entries_held": f.held,
                "bytes": f.bytes,
                "bytes_per_entry": round(per_entry(f), 2),
            });
            if let (Some(c), true) = (cachex, *kind != Kind::Cachex) {
                line["cachex_over_this"] = json!(round(c / per_entry(f), 3));
            }
            emit(&line);
        }
    }
    if args.json {
        return Ok(());
    }
    println!(
        "M: {} u64 -> u64 entries inserted into a cache of capacity {} (papaya: unbounded).",
        thousands(args.entries),
        thousands(args.entries)
    );
    println!("Bytes = live heap bytes (counting global allocator, requested sizes) after inserting and pending maintenance, minus before building the cache.");
    println!("Bytes per entry divides by the entries actually held (len() / entry_count()), which a sharded or admission-filtered cache may keep below the count inserted.\n");
    let mut table = Table::new([
        "contender",
        "entries held",
        "MiB",
        "bytes/entry",
        "cachex/this",
    ]);
    for (kind, f) in &results {
        table.row(vec![
            kind.name().to_string(),
            thousands(f.held),
            format!("{:.1}", f.bytes as f64 / (1 << 20) as f64),
            format!("{:.1}", per_entry(f)),
            cachex.map_or("-".into(), |c| ratio(c, per_entry(f))),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}
