//! The futures of `Cache::get` and `Cache::get_or_load`: a hit in the
//! store's in-process tier is answered at the first poll without
//! allocating; stores without one are always asked; reads that wait, and
//! futures dropped while waiting, behave as `async fn`s would.

mod loading_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use cachex::store::{Envelope, Store, StoreFuture, Stored};
use cachex::{Cache, MemoryStore, Result, Ttl};
use loading_support::{Calls, DropFlag};

/// Counts this thread's allocations, so that a test can tell whether a
/// piece of code allocates.
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// thread-local counter it bumps allocates nothing (a const-initialised
// `Cell` without a destructor).
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// How many allocations this thread made while `future` ran to completion,
/// with its answer.
async fn allocations_of<T>(future: impl Future<Output = T>) -> (usize, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let answer = future.await;
    (ALLOCATIONS.with(Cell::get) - before, answer)
}

async fn one() -> std::result::Result<u64, Infallible> {
    Ok(1)
}

async fn maybe_one() -> std::result::Result<Option<u64>, Infallible> {
    Ok(Some(1))
}

/// A store of someone else's: a memory store behind a wrapper that counts
/// the reads reaching it and, if `waits`, answers each operation only after
/// a yield, as a remote store would. It has no in-process tier of its own
/// (the default `local_tier`), so a cache must call it for every read.
struct Foreign {
    inner: MemoryStore<u64>,
    waits: bool,
    reads: AtomicUsize,
    /// Set when a read's future is dropped; a store with one never
    /// finishes a read.
    read_guard: Option<Arc<AtomicBool>>,
}

impl Foreign {
    fn new(waits: bool) -> Arc<Foreign> {
        Arc::new(Foreign {
            inner: MemoryStore::new(1_000),
            waits,
            reads: AtomicUsize::new(0),
            read_guard: None,
        })
    }

    /// A store whose reads never finish, each setting `dropped` when its
    /// future is dropped.
    fn stuck(dropped: Arc<AtomicBool>) -> Arc<Foreign> {
        Arc::new(Foreign {
            inner: MemoryStore::new(1_000),
            waits: true,
            reads: AtomicUsize::new(0),
            read_guard: Some(dropped),
        })
    }

    fn answer<'a, T: Send + 'a>(&'a self, answer: StoreFuture<'a, T>) -> StoreFuture<'a, T> {
        if !self.waits {
            return answer;
        }
        StoreFuture::new(async move {
            tokio::task::yield_now().await;
            answer.await
        })
    }
}

impl Store<u64> for Foreign {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<Option<Stored<u64>>>> {
        self.reads.fetch_add(1, SeqCst);
        let guard = self.read_guard.clone().map(DropFlag);
        let read = self.answer(self.inner.get(key));
        match guard {
            None => read,
            Some(guard) => StoreFuture::new(async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                read.await
            }),
        }
    }
    fn set<'a>(
        &'a self,
        key: &'a str,
        entry: Envelope<u64>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, Result<()>> {
        self.answer(self.inner.set(key, entry, ttl))
    }
    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Result<bool>> {
        self.answer(self.inner.delete(key))
    }
    fn clear(&self) -> StoreFuture<'_, Result<()>> {
        self.answer(self.inner.clear())
    }
    fn remaining_ttl<'a>(
        &'a self,
        key: &'a str,
    ) -> StoreFuture<'a, Result<Option<Option<Duration>>>> {
        self.answer(self.inner.remaining_ttl(key))
    }
}

#[tokio::test]
async fn hits_allocate_nothing() {
    for metrics in [true, false] {
        let cache: Cache<u64> = Cache::builder().metrics(metrics).build();
        cache.set("k", 1, Ttl::Default).await.unwrap();
        let (allocations, hit) = allocations_of(cache.get("k")).await;
        assert_eq!((allocations, hit.unwrap()), (0, Some(1)), "get");
        let (allocations, hit) = allocations_of(cache.get_or_load("k", one)).await;
        assert_eq!((allocations, hit.unwrap()), (0, 1), "get_or_load");
        let (allocations, hit) = allocations_of(cache.get_or_load_optional("k", maybe_one)).await;
        assert_eq!(
            (allocations, hit.unwrap()),
            (0, Some(1)),
            "get_or_load_optional"
        );
        let (allocations, miss) = allocations_of(cache.get("absent")).await;
        assert_eq!((allocations, miss.unwrap()), (0, None), "a miss of get");
    }
    // A store of one's own that answers at once is not boxed either.
    let store = Foreign::new(false);
    let cache: Cache<u64> = Cache::builder().store(store.clone()).build();
    cache.set("k", 1, Ttl::Default).await.unwrap();
    let (allocations, hit) = allocations_of(cache.get_or_load("k", one)).await;
    assert_eq!((allocations, hit.unwrap()), (0, 1), "a ready foreign store");
}

#[tokio::test]
async fn futures_do_nothing_before_their_first_poll() {
    let calls = Calls::default();
    let cache: Cache<u64> = Cache::builder().build();
    let get = cache.get("k");
    let load = cache.get_or_load("k", calls.returning(7, Duration::ZERO));
    // Written after the futures were made, before they are polled.
    cache.set("k", 1, Ttl::Default).await.unwrap();
    assert_eq!(get.await.unwrap(), Some(1));
    assert_eq!(load.await.unwrap(), 1);
    assert_eq!(calls.get(), 0, "the load found the value written");
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (2, 0));
}

#[tokio::test]
async fn a_store_without_an_in_process_tier_is_asked_for_every_read() {
    for waits in [false, true] {
        let store = Foreign::new(waits);
        let cache: Cache<u64> = Cache::builder().store(store.clone()).build();
        let calls = Calls::default();
        cache.set("k", 1, Ttl::Default).await.unwrap();
        assert_eq!(cache.get("k").await.unwrap(), Some(1));
        assert_eq!(cache.get("absent").await.unwrap(), None);
        let load = |v| cache.get_or_load("k", calls.returning(v, Duration::ZERO));
        assert_eq!(load(9).await.unwrap(), 1, "a hit");
        let loaded = cache.get_or_load("new", calls.returning(2, Duration::ZERO));
        assert_eq!(loaded.await.unwrap(), 2, "a miss loads");
        let again = cache.get_or_load("new", calls.returning(3, Duration::ZERO));
        assert_eq!(again.await.unwrap(), 2, "and stores");
        assert_eq!(calls.get(), 1);
        assert_eq!(store.reads.load(SeqCst), 5, "waits: {waits}");
        let stats = cache.stats();
        assert_eq!(
            (stats.hits, stats.misses, stats.loads),
            (3, 2, 1),
            "waits: {waits}"
        );
    }
}

#[tokio::test]
async fn a_waiting_read_behaves_as_a_ready_one() {
    let store = Foreign::new(true);
    let cache: Cache<u64> = Cache::builder()
        .store(store.clone())
        .negative_ttl(Duration::from_secs(60))
        .build();
    let absent = || async { Ok::<Option<u64>, Infallible>(None) };
    assert_eq!(
        cache.get_or_load_optional("gone", absent).await.unwrap(),
        None
    );
    assert_eq!(
        cache.get_or_load_optional("gone", absent).await.unwrap(),
        None,
        "answered by the cached \"not found\""
    );
    assert_eq!(cache.get("gone").await.unwrap(), None);
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.negative_hits, stats.loads), (1, 2, 1));

    // Many callers of one missing key: one load, every caller answered.
    let calls = Calls::default();
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let cache = cache.clone();
            let loader = calls.returning(5, Duration::from_millis(10));
            tokio::spawn(async move { cache.get_or_load("shared", loader).await })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), 5);
    }
    assert_eq!(calls.get(), 1);
}

/// Polls `future` once, with a waker that does nothing.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

#[tokio::test]
async fn a_future_dropped_while_waiting_drops_what_it_waited_for() {
    // Reads under way on the store: dropped with the future.
    let dropped = Arc::new(AtomicBool::new(false));
    let cache: Cache<u64> = Cache::builder()
        .store(Foreign::stuck(dropped.clone()))
        .build();
    {
        let mut get = pin!(cache.get("k"));
        assert!(poll_once(get.as_mut()).is_pending());
        assert!(!dropped.load(SeqCst), "the read is under way");
    }
    assert!(
        dropped.load(SeqCst),
        "dropping get's future dropped the read"
    );
    dropped.store(false, SeqCst);
    {
        let mut load = pin!(cache.get_or_load("k", one));
        assert!(poll_once(load.as_mut()).is_pending());
        assert!(!dropped.load(SeqCst), "the read is under way");
    }
    assert!(
        dropped.load(SeqCst),
        "dropping get_or_load's future dropped the read"
    );

    // A load under way (the memory store answered the read at once): the
    // loader's future is dropped with the future, and the key is free.
    let cache: Cache<u64> = Cache::builder().build();
    let (guard, loader_dropped) = DropFlag::new();
    {
        let mut load = pin!(cache.get_or_load("k", move || async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok::<u64, Infallible>(1)
        }));
        assert!(poll_once(load.as_mut()).is_pending());
        assert!(!loader_dropped.load(SeqCst), "the load is under way");
    }
    assert!(
        loader_dropped.load(SeqCst),
        "dropping the future dropped the load"
    );
    assert_eq!(cache.get_or_load("k", one).await.unwrap(), 1);
}
