//! The lock around a shard's state: a reader-writer lock whose readers
//! write only cache lines of their own, so reads scale with cores.
//!
//! # Why not a plain reader-writer lock
//! A hit is short (a table probe and a clone), so with an ordinary
//! reader-writer lock the lock word is the bottleneck: every reader writes
//! it twice (acquire and release), and on several cores that line bounces
//! between them. Measured with `cachex-bench throughput --workload T2` on the
//! 2-core development machine, parking_lot's `RwLock` held the engine to
//! 40.8 Mops/s on one thread and 48.6 on two, while the unbounded papaya map
//! went from 59 to 118. Even on one thread its acquire and release (two
//! locked instructions) cost 6.0 ns, against 2.4 ns for this lock's read.
//!
//! # The protocol
//! Every thread with a stripe id of its own
//! ([`thread_id`](super::stripes::thread_id)) owns one *reader slot* per
//! shard, on cache lines that only it writes.
//! - A **reader** increments its slot, issues a `SeqCst` fence, then checks
//!   the shard's `writing` flag. Clear: it reads. Set: it takes its mark
//!   back and queues on the inner lock's shared side instead, where it waits
//!   for the writer without spinning.
//! - A **writer** takes the inner lock exclusively (which excludes the
//!   other writers and the queued readers), raises `writing`, issues a
//!   `SeqCst` fence, then waits until every reader slot of the shard is 0.
//!
//! The two fences make this the store-buffering pattern: a reader and a
//! writer cannot both miss each other's store, so either the reader sees
//! `writing` and backs off, or the writer sees the reader's mark and waits
//! for its release (a `Release` store that the writer's `Acquire` load
//! synchronises with). A reader that sees `writing` clear synchronises with
//! the last writer's `Release` store of it, so it sees that writer's changes.
//! Threads without a stripe of their own take the inner lock's shared side.
//!
//! The slot holds a count, not a flag, so that a read nested in a read of the
//! same shard (user code such as `K::eq` or `V::clone` using the cache while
//! a read is in progress) keeps the outer read marked. As with any
//! reader-writer lock that lets writers in, such a nested read can deadlock
//! against a waiting writer; the engine never nests reads itself.
//!
//! # The read tally
//! The lock also counts the hits and misses of the reads it runs (the
//! closure says which a read was), per reader slot, and that is where the
//! engine's hit and miss statistics come from. A hit costs nothing extra:
//! the slot's word holds the nesting depth in its low 16 bits and the hits
//! above, so the store that releases a read also counts it. Measured with
//! interleaved single-threaded batches (`get` inlined into the loop),
//! counting hits in cache-wide striped counters after the release instead
//! (a store to a line of their own per read) cost 20-23% of the all-hit
//! Zipf read rate and 11-12% of the Zipf 90/10 mix; counting before the
//! release cost more. A miss adds a store to the slot's own line.
//! Reads on the inner lock's shared side are tallied with atomic adds.
//!
//! `tests` below check the protocol under loom (`scripts/test` runs them
//! with `--cfg cachex_loom`), which explores every interleaving of a
//! writer and two readers and reports any access to the state that the
//! protocol failed to order.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

use super::sync::{
    fence, spin_loop, yield_now, AtomicBool, AtomicU64, InnerLock, InnerReadGuard, InnerWriteGuard,
    MutPtr, UnsafeCell,
};

/// A writer spins this many times on a marked slot before yielding.
const SPINS_BEFORE_YIELD: u32 = 64;

/// The reads of its thread in progress, in a reader slot's `held` word.
const DEPTH_MASK: u64 = ONE_HIT - 1;
/// Where the hits start in a reader slot's `held` word: they fill the 48
/// bits above the depth (at a million hits a second on one shard from one
/// thread, they wrap after nine years).
const HIT_SHIFT: u32 = 16;
/// One hit, in a reader slot's `held` word.
const ONE_HIT: u64 = 1 << HIT_SHIFT;

/// What a reader does with the state under the lock, and how the read
/// counts ([`ShardLock::read_op`]). A hot caller implements it on a type of
/// its own to mark `run` `#[inline(always)]`, which a closure cannot be:
/// left to the compiler, a large read may stay a call.
pub(crate) trait ReadOp<T> {
    type Output;
    fn run(self, state: &T) -> (Self::Output, Tally);
}

/// A closure as a [`ReadOp`] (`ShardLock::read`).
#[cfg(test)]
struct ReadFn<F>(F);

#[cfg(test)]
impl<T, R, F: FnOnce(&T) -> (R, Tally)> ReadOp<T> for ReadFn<F> {
    type Output = R;

    #[inline(always)]
    fn run(self, state: &T) -> (R, Tally) {
        (self.0)(state)
    }
}

/// What a read counts as in the lock's tally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tally {
    Hit,
    Miss,
    /// Not a use of the entry (a peek).
    Uncounted,
}

/// One thread's reader slot: two cache lines of its own, so that
/// adjacent-line prefetching never makes two threads' slots share a line.
#[repr(align(128))]
struct ReaderSlot {
    /// Depth (reads of this thread in progress, nested ones included) in
    /// the low 16 bits, hits above; see the module docs.
    held: AtomicU64,
    misses: AtomicU64,
}

impl ReaderSlot {
    fn new() -> Self {
        ReaderSlot {
            held: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Whether a read of this slot's thread is in progress.
    #[inline]
    fn is_marked(&self) -> bool {
        self.held.load(Acquire) & DEPTH_MASK != 0
    }
}

/// A reader-writer lock over one shard's state; see the module docs.
pub(crate) struct ShardLock<T> {
    inner: InnerLock,
    /// Raised by a writer holding `inner`; marked readers back off while set.
    writing: AtomicBool,
    /// One per thread stripe id; threads with higher ids have none.
    readers: Box<[ReaderSlot]>,
    /// The tally of reads on the inner lock's shared side.
    shared_hits: AtomicU64,
    shared_misses: AtomicU64,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out `&T` to several threads at once and `&mut T`
// to one, exactly as `std::sync::RwLock` does, so it needs what that needs.
unsafe impl<T: Send> Send for ShardLock<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for ShardLock<T> {}

impl<T> ShardLock<T> {
    /// A lock over `value` with reader slots for the threads whose stripe
    /// ids are below `rows` (the others use the inner lock).
    pub(crate) fn new(value: T, rows: usize) -> Self {
        ShardLock {
            inner: InnerLock::default(),
            writing: AtomicBool::new(false),
            readers: (0..rows).map(|_| ReaderSlot::new()).collect(),
            shared_hits: AtomicU64::new(0),
            shared_misses: AtomicU64::new(0),
            data: UnsafeCell::new(value),
        }
    }

    /// [`read_op`](Self::read_op) with a closure (the tests' form).
    #[cfg(test)]
    pub(crate) fn read<R>(&self, read: impl FnOnce(&T) -> (R, Tally)) -> R {
        self.read_op(ReadFn(read))
    }

    /// Runs `read` with shared access and tallies what it says it was;
    /// blocks only while a writer holds the lock.
    ///
    /// A read handed in rather than a guard handed out: the marked-slot
    /// path stands alone, so the hot read keeps its state in registers.
    /// With a guard whose release depends on the path that took it, the two
    /// paths merged after the lock and the guard went through the stack.
    /// Always inlined, and so is the shard's [`ReadOp`]. Measured with
    /// callgrind on all-hit Zipf gets, a closure here (and a `move` closure
    /// in the caller) took a get from 146.5 to 133.5 instructions; wall time
    /// moved within the machine's noise.
    #[inline(always)]
    pub(crate) fn read_op<O: ReadOp<T>>(&self, read: O) -> O::Output {
        if let Some(mut mark) = self.try_mark() {
            // SAFETY: this thread's slot stays marked until `mark` drops,
            // after the read, so no writer holds a `WriteGuard` and no
            // `&mut T` exists meanwhile (see the module docs).
            let (found, tally) = unsafe { self.read_held(read) };
            match tally {
                Tally::Hit => mark.hit = ONE_HIT,
                // Only this thread writes its slot: a load and a store count.
                Tally::Miss => {
                    let misses = &mark.slot.misses;
                    misses.store(misses.load(Relaxed) + 1, Relaxed);
                }
                Tally::Uncounted => {}
            }
            found
        } else {
            let _shared = self.lock_shared();
            // SAFETY: the inner lock is held shared until `_shared` drops,
            // after the read, so no writer holds a `WriteGuard` meanwhile.
            let (found, tally) = unsafe { self.read_held(read) };
            match tally {
                Tally::Hit => self.shared_hits.fetch_add(1, Relaxed),
                Tally::Miss => self.shared_misses.fetch_add(1, Relaxed),
                Tally::Uncounted => 0,
            };
            found
        }
    }

    /// The hits and misses tallied so far, over every thread.
    pub(crate) fn tallies(&self) -> (u64, u64) {
        let mut hits = self.shared_hits.load(Relaxed);
        let mut misses = self.shared_misses.load(Relaxed);
        for reader in self.readers.iter() {
            hits = hits.wrapping_add(reader.held.load(Relaxed) >> HIT_SHIFT);
            misses = misses.wrapping_add(reader.misses.load(Relaxed));
        }
        (hits, misses)
    }

    /// Runs `read` on the state.
    ///
    /// # Safety
    /// The caller holds a marked reader slot or the inner lock's shared
    /// side for the whole call.
    #[inline(always)]
    unsafe fn read_held<O: ReadOp<T>>(&self, read: O) -> (O::Output, Tally) {
        // Under loom, the pointer counts as an access until it drops, at
        // the end of this call (before the caller releases its hold).
        let data = self.data.get();
        // SAFETY: the caller's hold excludes writers (see above).
        read.run(unsafe { data.deref() })
    }

    /// The inner lock's shared side, for threads without a reader slot and
    /// readers that met a writer.
    #[cold]
    #[inline(never)]
    fn lock_shared(&self) -> InnerReadGuard<'_> {
        self.inner.read()
    }

    /// Marks this thread's reader slot, unless the thread has none or a
    /// writer holds the lock.
    #[inline]
    fn try_mark(&self) -> Option<SlotMark<'_>> {
        // The same thread-local the caller's counters read: the compiler
        // loads it once per get (callgrind: no change when passed in).
        let slot = self.readers.get(current_row())?;
        // Only this thread writes its slot, so a plain load and store
        // suffice to count (no locked instruction).
        let held = slot.held.load(Relaxed);
        slot.held.store(held + 1, Relaxed);
        fence(SeqCst);
        if !self.writing.load(Acquire) {
            return Some(SlotMark { slot, hit: 0 });
        }
        slot.held.store(held, Release);
        None
    }

    /// Exclusive access; waits for the readers in progress to finish.
    pub(crate) fn write(&self) -> WriteGuard<'_, T> {
        let exclusive = self.inner.write();
        self.exclude_readers();
        WriteGuard {
            data: self.data.get_mut(),
            _writing: WritingFlag(&self.writing),
            _exclusive: exclusive,
        }
    }

    /// Exclusive access if no other writer holds the lock right now; still
    /// waits for the readers in progress, which are short.
    // Spelled out like `write` on purpose: a shared helper building the
    // guard changed the compiler's inlining of the insert path and cost 29
    // instructions per update (callgrind).
    pub(crate) fn try_write(&self) -> Option<WriteGuard<'_, T>> {
        let exclusive = self.inner.try_write()?;
        self.exclude_readers();
        Some(WriteGuard {
            data: self.data.get_mut(),
            _writing: WritingFlag(&self.writing),
            _exclusive: exclusive,
        })
    }

    /// Raises `writing` and waits for every marked reader slot to clear.
    /// Called holding `inner` exclusively.
    fn exclude_readers(&self) {
        self.writing.store(true, Relaxed);
        fence(SeqCst);
        for reader in self.readers.iter() {
            if reader.is_marked() {
                wait_until_clear(reader);
            }
        }
    }
}

/// Spins, then yields, until a reader releases its slot (reads are short).
#[cold]
fn wait_until_clear(slot: &ReaderSlot) {
    let mut spins = 0;
    while slot.is_marked() {
        if spins < SPINS_BEFORE_YIELD {
            spins += 1;
            spin_loop();
        } else {
            yield_now();
        }
    }
}

/// A marked reader slot: gives the mark back when dropped (also if the
/// read panics), adding `hit` to the slot's tally in the same store.
struct SlotMark<'a> {
    slot: &'a ReaderSlot,
    /// [`ONE_HIT`] if the read was a hit, else 0.
    hit: u64,
}

impl Drop for SlotMark<'_> {
    #[inline]
    fn drop(&mut self) {
        // Loaded rather than remembered from the mark: a nested read of the
        // same shard may have tallied in between.
        let held = self.slot.held.load(Relaxed);
        self.slot.held.store(held - 1 + self.hit, Release);
    }
}

/// Exclusive access to a shard's state.
pub(crate) struct WriteGuard<'a, T> {
    // Fields drop in order: the pointer, then `writing` is lowered, then the
    // inner lock is released (so a reader queued on it finds `writing` clear).
    data: MutPtr<T>,
    _writing: WritingFlag<'a>,
    _exclusive: InnerWriteGuard<'a>,
}

/// Lowers a lock's `writing` flag when dropped.
struct WritingFlag<'a>(&'a AtomicBool);

impl Drop for WritingFlag<'_> {
    // Inlined for the same reason as `WriteCounters::count`: otherwise a
    // call on every write.
    #[inline]
    fn drop(&mut self) {
        self.0.store(false, Release);
    }
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: this guard holds the inner lock exclusively and every
        // reader slot of the shard was seen clear after `writing` was
        // raised, so no other reference to the state exists while it lives.
        unsafe { self.data.deref() }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`.
        unsafe { self.data.deref() }
    }
}

/// The calling thread's reader slot in every lock: its stripe id, unique
/// among live threads.
#[cfg(not(cachex_loom))]
#[inline]
fn current_row() -> usize {
    super::stripes::thread_id()
}

/// Under loom, model threads share one OS thread, so rows come from a
/// model-local counter instead.
#[cfg(cachex_loom)]
fn current_row() -> usize {
    use loom::sync::atomic::AtomicUsize;
    loom::lazy_static! {
        static ref NEXT_ROW: AtomicUsize = AtomicUsize::new(0);
    }
    loom::thread_local! {
        static ROW: usize = NEXT_ROW.fetch_add(1, Relaxed);
    }
    ROW.with(|row| *row)
}

#[cfg(all(test, cachex_loom))]
mod tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// A writer keeps both halves equal; any reader that saw a torn pair,
    /// or touched the pair while the writer did (loom's cell checks that),
    /// was let in when it should not have been.
    fn model(rows: usize) {
        loom::model(move || {
            let lock = Arc::new(ShardLock::new((0u32, 0u32), rows));
            let writer = {
                let lock = Arc::clone(&lock);
                thread::spawn(move || {
                    let mut pair = lock.write();
                    pair.0 += 1;
                    pair.1 += 1;
                })
            };
            let reader = {
                let lock = Arc::clone(&lock);
                thread::spawn(move || lock.read(|pair| (assert_eq!(pair.0, pair.1), Tally::Hit)))
            };
            lock.read(|pair| (assert_eq!(pair.0, pair.1), Tally::Miss));
            writer.join().unwrap();
            reader.join().unwrap();
            assert_eq!(lock.read(|pair| (*pair, Tally::Uncounted)), (1, 1));
            assert_eq!(lock.tallies(), (1, 1), "one hit, one miss");
        });
    }

    #[test]
    fn readers_with_slots_never_overlap_a_writer() {
        // Both reading threads get a slot (the writer never reads).
        model(2);
    }

    #[test]
    fn readers_without_slots_take_the_inner_lock() {
        // Only the first thread to read gets a row.
        model(1);
    }

    #[test]
    fn nested_reads_keep_the_outer_read_marked() {
        loom::model(|| {
            let lock = Arc::new(ShardLock::new(0u32, 2));
            let writer = {
                let lock = Arc::clone(&lock);
                thread::spawn(move || *lock.write() += 1)
            };
            lock.read(|outer| {
                let seen = *outer;
                // A nested read that gives up instead of queueing behind the
                // writer (a queued nested read would deadlock, as documented).
                drop(lock.try_mark());
                // The inner read's release must not have let the writer in.
                assert_eq!(*outer, seen);
                ((), Tally::Uncounted)
            });
            writer.join().unwrap();
        });
    }
}

#[cfg(all(test, not(cachex_loom)))]
mod stress_tests {
    use super::*;
    use std::thread;

    /// Real threads, more of them than reader rows (so some take the inner
    /// lock): writers keep both halves equal and count their writes; no
    /// reader may see a torn pair, and no write may be lost.
    #[test]
    fn readers_never_see_a_write_in_progress() {
        const WRITES: u64 = 2_000;
        let lock = ShardLock::new((0u64, 0u64), 2);
        thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    for _ in 0..WRITES {
                        let mut pair = lock.write();
                        pair.0 += 1;
                        std::hint::black_box(&mut *pair);
                        pair.1 += 1;
                    }
                });
            }
            for _ in 0..3 {
                scope.spawn(|| {
                    for _ in 0..WRITES * 10 {
                        lock.read(|pair| {
                            assert_eq!(pair.0, pair.1, "a reader saw a write in progress");
                            ((), Tally::Hit)
                        });
                    }
                });
            }
        });
        assert_eq!(
            lock.read(|pair| (*pair, Tally::Uncounted)),
            (2 * WRITES, 2 * WRITES)
        );
        assert_eq!(
            lock.tallies(),
            (3 * WRITES * 10, 0),
            "every read tallied once"
        );
    }

    /// Rows for every thread a test process may have, so reads take the
    /// marked-slot path; no rows, so they take the inner lock's.
    const ALL_ROWS: usize = 4096;

    #[test]
    fn the_tally_counts_reads_on_both_paths() {
        for rows in [ALL_ROWS, 0] {
            let lock = ShardLock::new(7u32, rows);
            for tally in [Tally::Hit, Tally::Miss, Tally::Hit, Tally::Uncounted] {
                assert_eq!(lock.read(|v| (*v, tally)), 7);
            }
            assert_eq!(lock.tallies(), (2, 1), "rows: {rows}");
            *lock.write() += 1; // every read was released
        }
    }

    #[test]
    fn nested_reads_keep_their_hits_and_release_their_depth() {
        let lock = ShardLock::new(0u32, ALL_ROWS);
        lock.read(|_| (lock.read(|_| ((), Tally::Hit)), Tally::Hit));
        assert_eq!(lock.tallies(), (2, 0));
        *lock.write() += 1; // would wait forever on a slot left marked
    }

    #[test]
    fn a_panicking_read_releases_its_slot_without_counting() {
        let lock = ShardLock::new(0u32, ALL_ROWS);
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lock.read(|_| -> ((), Tally) { panic!("a read that panics") })
        }));
        assert!(unwound.is_err());
        assert_eq!(lock.tallies(), (0, 0));
        *lock.write() += 1;
    }
}
