//! Access traces: loading recorded ones, generating synthetic Zipf ones, and
//! the capacities each standard trace is measured at.

use std::path::{Path, PathBuf};

use crate::zipf::{mix64, Rng, Zipf};

/// A sequence of keys, replayed with get-then-insert-on-miss.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Short name: the file stem, or `zipf-S` for synthetic traces.
    pub name: String,
    /// The keys in access order.
    pub keys: Vec<u64>,
    /// For synthetic Zipf traces, the exponent and the key-space size.
    pub zipf: Option<(f64, u64)>,
}

impl Trace {
    /// Loads a file of one unsigned decimal key per line (blank lines and
    /// surrounding whitespace are ignored).
    pub fn load(path: &Path) -> Result<Trace, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let keys = parse_keys(&bytes).map_err(|line| {
            format!(
                "{}:{line}: not an unsigned 64-bit decimal key",
                path.display()
            )
        })?;
        let name = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        Ok(Trace {
            name,
            keys,
            zipf: None,
        })
    }

    /// `len` independent draws from Zipf(`s`) over `keys` ranks, each rank
    /// scrambled into a key with [`mix64`].
    pub fn zipf(s: f64, keys: u64, len: usize, seed: u64) -> Trace {
        let zipf = Zipf::new(keys, s);
        let mut rng = Rng::new(seed);
        Trace {
            name: format!("zipf-{s}"),
            keys: (0..len).map(|_| mix64(zipf.sample(&mut rng))).collect(),
            zipf: Some((s, keys)),
        }
    }

    /// Number of distinct keys.
    pub fn distinct(&self) -> usize {
        let mut seen = foldhash::HashSet::default();
        seen.reserve(self.keys.len() / 4);
        self.keys.iter().filter(|&&k| seen.insert(k)).count()
    }
}

/// Parses one key per line; on failure returns the 1-based line number.
fn parse_keys(bytes: &[u8]) -> Result<Vec<u64>, usize> {
    let mut keys = Vec::with_capacity(bytes.len() / 6);
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let mut v: u64 = 0;
        for &b in line {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return Err(i + 1);
            }
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d)))
                .ok_or(i + 1)?;
        }
        keys.push(v);
    }
    Ok(keys)
}

/// The capacities, as shares of the distinct keys in percent, at which the
/// traces README asks for each trace to be measured.
pub fn standard_percents(name: &str) -> &'static [u32] {
    match name {
        "lirs_gli" | "lirs_ps" => &[5, 25],
        "synthetic_lirs_loop" => &[25],
        _ => &[1, 5, 25],
    }
}

/// `percent`% of `distinct`, rounded down (1% of 186,880 is 1,868).
pub fn capacity_at(distinct: usize, percent: u32) -> u64 {
    (distinct as u64 * u64::from(percent) / 100).max(1)
}

/// Every `*.txt` trace in `dir`, sorted by name.
pub fn list_traces(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        assert_eq!(
            parse_keys(b"1\n22\r\n\n 333 \n18446744073709551615"),
            Ok(vec![1, 22, 333, u64::MAX])
        );
        assert_eq!(parse_keys(b"1\nx\n"), Err(2));
        assert_eq!(parse_keys(b"18446744073709551616\n"), Err(1));
    }

    #[test]
    fn standard_capacities() {
        assert_eq!(capacity_at(186_880, 1), 1868);
        assert_eq!(capacity_at(1011, 25), 252);
        assert_eq!(standard_percents("synthetic_lirs_loop"), &[25]);
    }
}
