//! Reference policies for hit ratios: exact LRU and Bélády's optimal MIN.
//!
//! Both are single-threaded simulators over a whole trace and return the
//! number of hits of a get-then-insert-on-miss replay.

use std::collections::BinaryHeap;

use foldhash::HashMap;

const NIL: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Node {
    key: u64,
    prev: u32,
    next: u32,
}

/// An exact LRU cache of keys: a hash map into an index-linked list, most
/// recent at the head.
pub struct Lru {
    capacity: usize,
    map: HashMap<u64, u32>,
    nodes: Vec<Node>,
    head: u32,
    tail: u32,
}

impl Lru {
    /// An empty LRU holding at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        let mut map = HashMap::default();
        map.reserve(capacity);
        Lru {
            capacity,
            map,
            nodes: Vec::with_capacity(capacity),
            head: NIL,
            tail: NIL,
        }
    }

    /// Accesses `key`: true on a hit; on a miss the key is inserted,
    /// evicting the least recently used key if full.
    pub fn access(&mut self, key: u64) -> bool {
        if let Some(&i) = self.map.get(&key) {
            self.unlink(i);
            self.push_front(i);
            return true;
        }
        if self.capacity == 0 {
            return false;
        }
        let i = if self.nodes.len() < self.capacity {
            self.nodes.push(Node {
                key,
                prev: NIL,
                next: NIL,
            });
            (self.nodes.len() - 1) as u32
        } else {
            let victim = self.tail;
            self.unlink(victim);
            self.map.remove(&self.nodes[victim as usize].key);
            self.nodes[victim as usize].key = key;
            victim
        };
        self.map.insert(key, i);
        self.push_front(i);
        false
    }

    fn unlink(&mut self, i: u32) {
        let Node { prev, next, .. } = self.nodes[i as usize];
        if prev == NIL {
            self.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, i: u32) {
        self.nodes[i as usize].prev = NIL;
        self.nodes[i as usize].next = self.head;
        if self.head != NIL {
            self.nodes[self.head as usize].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }
}

/// Hits of an LRU of `capacity` keys over `keys`.
pub fn lru_hits(keys: &[u64], capacity: usize) -> u64 {
    let mut lru = Lru::new(capacity);
    keys.iter().map(|&k| u64::from(lru.access(k))).sum()
}

/// Hits of Bélády's MIN with bypass over `keys`: on a miss with the cache
/// full, the resident key whose next use lies farthest ahead is evicted,
/// unless the incoming key's own next use lies at least as far, in which
/// case the incoming key is not admitted. This is the optimal offline
/// policy for hit count.
pub fn belady_hits(keys: &[u64], capacity: usize) -> u64 {
    if capacity == 0 {
        return 0;
    }
    let next = next_uses(keys);
    // `never` is past every position; several keys may share it.
    let never = keys.len() as u64;
    let mut resident = vec![false; distinct_ids(keys)];
    // Max-heap of (next use, key id) for resident keys. A hit pushes the
    // key's new next use and leaves its old entry, whose position is now in
    // the past, stale: stale entries are always smaller than any live one
    // (live next uses lie in the future), so the top is always live.
    let mut heap: BinaryHeap<(u64, u32)> = BinaryHeap::with_capacity(capacity * 2);
    let mut len = 0usize;
    let mut hits = 0u64;
    for (i, &(id, nu)) in next.iter().enumerate() {
        let nu = if nu == NEVER { never } else { u64::from(nu) };
        if resident[id as usize] {
            hits += 1;
            heap.push((nu, id));
        } else if len < capacity {
            resident[id as usize] = true;
            len += 1;
            heap.push((nu, id));
        } else {
            let &(far, victim) = heap.peek().expect("a full cache has a live top");
            debug_assert!(far > i as u64 && resident[victim as usize]);
            if nu < far {
                heap.pop();
                resident[victim as usize] = false;
                resident[id as usize] = true;
                heap.push((nu, id));
            }
        }
        // Keep the stale entries from piling up without bound.
        if heap.len() > 4 * capacity + 1024 {
            heap.retain(|&(n, k)| n > i as u64 && resident[k as usize]);
        }
    }
    hits
}

const NEVER: u32 = u32::MAX;

/// For each access, the dense id of its key and the position of that key's
/// next access (`NEVER` if none).
fn next_uses(keys: &[u64]) -> Vec<(u32, u32)> {
    assert!(
        keys.len() < NEVER as usize,
        "trace too long for u32 positions"
    );
    let mut ids: HashMap<u64, u32> = HashMap::default();
    let mut out: Vec<(u32, u32)> = keys
        .iter()
        .map(|&k| {
            let n = ids.len() as u32;
            (*ids.entry(k).or_insert(n), NEVER)
        })
        .collect();
    let mut last = vec![NEVER; ids.len()];
    for i in (0..out.len()).rev() {
        let id = out[i].0 as usize;
        out[i].1 = last[id];
        last[id] = i as u32;
    }
    out
}

fn distinct_ids(keys: &[u64]) -> usize {
    let mut seen: foldhash::HashSet<u64> = foldhash::HashSet::default();
    keys.iter().filter(|&&k| seen.insert(k)).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_by_hand() {
        // Capacity 2: 1 m, 2 m, 1 h, 3 m (evicts 2), 2 m (evicts 1),
        // 3 h, 1 m (evicts 2), 3 h.
        assert_eq!(lru_hits(&[1, 2, 1, 3, 2, 3, 1, 3], 2), 3);
        // A loop one larger than the cache never hits under LRU.
        let looped: Vec<u64> = (0..10).flat_map(|_| 0..5).collect();
        assert_eq!(lru_hits(&looped, 4), 0);
        assert_eq!(lru_hits(&looped, 5), 45);
        assert_eq!(lru_hits(&looped, 0), 0);
    }

    #[test]
    fn belady_by_hand() {
        // Capacity 2, trace 1 2 3 1 2 3 1 2 3:
        // 1 m, 2 m (cache {1,2}); 3 m: next uses 1@3, 2@4, 3@5 -> bypass 3;
        // 1 h; 2 h; 3 m: 1@6, 2@7, 3@8 -> bypass; 1 h; 2 h; 3 m.
        assert_eq!(belady_hits(&[1, 2, 3, 1, 2, 3, 1, 2, 3], 2), 4);
        // 1 2 3 2 3 1 with capacity 2: 1 m, 2 m, 3 m: 1@5, 2@3, 3@4 ->
        // evict 1; 2 h; 3 h; 1 m. Two hits (LRU gets 2 as well here).
        assert_eq!(belady_hits(&[1, 2, 3, 2, 3, 1], 2), 2);
        // The loop LRU cannot hit: MIN keeps keys 0..4 and bypasses key 4
        // every pass, so all 4 of 5 accesses hit after the first pass.
        let looped: Vec<u64> = (0..10).flat_map(|_| 0..5).collect();
        assert_eq!(belady_hits(&looped, 4), 36);
        assert_eq!(belady_hits(&looped, 5), 45);
    }

    /// MIN with bypass the slow way: scan ahead for every next use.
    fn naive_belady(keys: &[u64], capacity: usize) -> u64 {
        let next = |key: u64, from: usize| {
            keys[from..]
                .iter()
                .position(|&k| k == key)
                .map_or(usize::MAX, |d| from + d)
        };
        let mut resident: Vec<u64> = Vec::new();
        let mut hits = 0;
        for (i, &key) in keys.iter().enumerate() {
            if resident.contains(&key) {
                hits += 1;
            } else if resident.len() < capacity {
                resident.push(key);
            } else if capacity > 0 {
                let (slot, far) = resident
                    .iter()
                    .enumerate()
                    .map(|(s, &k)| (s, next(k, i + 1)))
                    .max_by_key(|&(_, n)| n)
                    .unwrap();
                if next(key, i + 1) < far {
                    resident[slot] = key;
                }
            }
        }
        hits
    }

    #[test]
    fn belady_matches_naive() {
        let mut rng = crate::zipf::Rng::new(3);
        for round in 0..200 {
            let span = 2 + round % 40;
            let keys: Vec<u64> = (0..300).map(|_| rng.next_u64() % span).collect();
            for cap in [0, 1, 2, 3, 5, 8, 13, 40] {
                assert_eq!(
                    belady_hits(&keys, cap),
                    naive_belady(&keys, cap),
                    "round {round} capacity {cap}"
                );
            }
        }
        // Long enough for the heap to shed its stale entries.
        let keys: Vec<u64> = (0..4000).map(|_| rng.next_u64() % 12).collect();
        for cap in [1, 3, 6] {
            assert_eq!(belady_hits(&keys, cap), naive_belady(&keys, cap));
        }
    }

    #[test]
    fn belady_beats_lru() {
        let keys: Vec<u64> = (0..20_000u64)
            .map(|i| crate::zipf::mix64(i) % 300)
            .collect();
        for cap in [1, 10, 50, 299, 300] {
            assert!(belady_hits(&keys, cap) >= lru_hits(&keys, cap));
        }
    }
}
