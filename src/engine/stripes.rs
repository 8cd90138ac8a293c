//! Per-thread stripes, so threads on different cores do not write to the
//! same cache lines on hot paths.
//!
//! Each live thread holds a small id, unique among live threads: taken the
//! first time the thread touches any cache, given back when it exits, and
//! then reused (the smallest free id first), so ids stay dense even when a
//! runtime keeps starting and stopping threads. Striped structures index
//! by id.
//!
//! Uniqueness is what makes [`StripedCounters`] cheap and exact at once: a
//! thread whose id has a stripe of its own is that stripe's only writer, so
//! it counts with a plain load and store instead of a locked
//! read-modify-write (the dearest instruction left on a cache hit). Threads
//! without a stripe of their own (more live threads than stripes, or a
//! thread already tearing down its thread-locals) share one overflow stripe
//! and use atomic adds there. The shard lock's reader slots are indexed by
//! the same ids (a thread without one takes the lock's inner shared side).

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use parking_lot::Mutex;

/// The id of a thread that has none of its own (it is tearing down its
/// thread-locals); it owns no stripe.
pub(crate) const SHARED: usize = usize::MAX;

/// Ids not taken yet start here; freed ids wait in [`FREE_IDS`].
static NEXT_THREAD_ID: AtomicUsize = AtomicUsize::new(0);
static FREE_IDS: Mutex<BinaryHeap<Reverse<usize>>> = Mutex::new(BinaryHeap::new());

/// Not assigned yet.
const UNASSIGNED: usize = usize::MAX - 1;

thread_local! {
    /// Read on every operation: a plain `Cell` with no destructor, so the
    /// access is one thread-local load.
    static THREAD_ID: Cell<usize> = const { Cell::new(UNASSIGNED) };
    /// Gives the id back when the thread exits.
    static RELEASE: IdRelease = const { IdRelease };
}

struct IdRelease;

impl Drop for IdRelease {
    fn drop(&mut self) {
        // Anything this thread does from now on (another thread-local's
        // destructor using a cache) goes through the shared stripe.
        let id = THREAD_ID.with(|cell| cell.replace(SHARED));
        if id < UNASSIGNED {
            FREE_IDS.lock().push(Reverse(id));
        }
    }
}

/// This thread's id: unique among live threads, or [`SHARED`].
#[inline]
pub(crate) fn thread_id() -> usize {
    let id = THREAD_ID.with(Cell::get);
    if id != UNASSIGNED {
        return id;
    }
    assign_thread_id()
}

#[cold]
fn assign_thread_id() -> usize {
    // Registering the release first: if this thread's destructors already
    // ran, it cannot give an id back, so it takes none.
    if RELEASE.try_with(|_| ()).is_err() {
        THREAD_ID.with(|cell| cell.set(SHARED));
        return SHARED;
    }
    let id = FREE_IDS
        .lock()
        .pop()
        .map_or_else(|| NEXT_THREAD_ID.fetch_add(1, Relaxed), |Reverse(id)| id);
    THREAD_ID.with(|cell| cell.set(id));
    id
}

/// How many stripes a cache uses: two per core, at most 64, a power of two.
pub(crate) fn stripe_count() -> usize {
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    (cores * 2).next_power_of_two().min(64)
}

/// `N` counters of one stripe. Two cache lines, so neighbouring stripes
/// share none even with adjacent-line prefetching.
#[derive(Debug)]
#[repr(align(128))]
struct Stripe<const N: usize>([AtomicU64; N]);

impl<const N: usize> Default for Stripe<N> {
    fn default() -> Self {
        Stripe(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// `N` monotonic counters, striped by thread: exact, and free of locked
/// instructions for threads that own a stripe (see the module docs).
#[derive(Debug)]
pub(crate) struct StripedCounters<const N: usize> {
    owned: Box<[Stripe<N>]>,
    shared: Stripe<N>,
}

impl<const N: usize> StripedCounters<N> {
    /// Counters with `stripes` owned stripes (threads with ids below that).
    pub(crate) fn new(stripes: usize) -> Self {
        StripedCounters {
            owned: (0..stripes).map(|_| Stripe::default()).collect(),
            shared: Stripe::default(),
        }
    }

    /// Adds `n` to `counter` as the thread with id `thread` (its own
    /// [`thread_id`]: passing another thread's id would lose counts).
    #[inline]
    pub(crate) fn add(&self, thread: usize, counter: usize, n: u64) {
        match self.owned.get(thread) {
            Some(stripe) => {
                // Sole writer of this stripe: see the module docs.
                let cell = &stripe.0[counter];
                cell.store(cell.load(Relaxed).wrapping_add(n), Relaxed);
            }
            None => {
                self.shared.0[counter].fetch_add(n, Relaxed);
            }
        }
    }

    /// Every counter summed over the stripes.
    pub(crate) fn sums(&self) -> [u64; N] {
        let mut sums = [0u64; N];
        for stripe in self.owned.iter().chain(std::iter::once(&self.shared)) {
            for (sum, cell) in sums.iter_mut().zip(&stripe.0) {
                *sum = sum.wrapping_add(cell.load(Relaxed));
            }
        }
        sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::{Arc, Barrier};

    #[test]
    fn live_threads_hold_distinct_ids() {
        const THREADS: usize = 8;
        let barrier = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let id = thread_id();
                    // All alive at once while they read their ids.
                    barrier.wait();
                    assert_eq!(thread_id(), id, "an id is stable for the thread's life");
                    id
                })
            })
            .collect();
        let ids: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let distinct: HashSet<usize> = ids.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            THREADS,
            "ids of live threads differ: {ids:?}"
        );
        assert!(!distinct.contains(&SHARED));
    }

    #[test]
    fn ids_of_exited_threads_are_reused() {
        // A thousand threads, one after another: without reuse they would
        // take a thousand new ids. Tests running beside this one may hold a
        // few ids or start threads meanwhile, hence the margin.
        const THREADS: usize = 1000;
        let before = NEXT_THREAD_ID.load(Relaxed);
        let highest = (0..THREADS)
            .map(|_| std::thread::spawn(thread_id).join().unwrap())
            .max()
            .unwrap();
        assert!(
            highest < before + 64,
            "id {highest} after {THREADS} short-lived threads: ids are not reused"
        );
        assert!(NEXT_THREAD_ID.load(Relaxed) < before + 64);
    }

    #[test]
    fn counts_are_exact_across_more_threads_than_stripes() {
        const THREADS: usize = 6;
        const ADDS: u64 = 20_000;
        // Two owned stripes: at least four threads use the shared one.
        let counters = Arc::new(StripedCounters::<2>::new(2));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let counters = Arc::clone(&counters);
                std::thread::spawn(move || {
                    for _ in 0..ADDS {
                        counters.add(thread_id(), 0, 1);
                        counters.add(thread_id(), 1, 2);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            counters.sums(),
            [THREADS as u64 * ADDS, THREADS as u64 * ADDS * 2]
        );
    }

    #[test]
    fn a_thread_without_an_id_counts_in_the_shared_stripe() {
        let counters = StripedCounters::<1>::new(4);
        counters.add(SHARED, 0, 5);
        counters.add(0, 0, 1);
        assert_eq!(counters.sums(), [6]);
        assert_eq!(counters.shared.0[0].load(Relaxed), 5);
    }
}
