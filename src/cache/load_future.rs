//! The future [`Cache::get_or_load`](super::Cache::get_or_load) (and
//! `get_or_load_optional`) returns.
//!
//! Written by hand for the reason `get_future.rs` gives: the first poll
//! reads the store's in-process tier directly and answers a hit there, with
//! no nested state machine. A read that has to wait is polled here; a miss
//! hands the loader to the boxed miss path (`Cache::load_missing`: the
//! singleflight), and a live tracing span runs the whole operation boxed
//! inside it (`Cache::load_in_span`).

use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use super::load::{AfterRead, Miss, Read};
use super::stats::{Counter, Lookup};
use super::{BoxFuture, Cache};
use crate::loading::{Answer, Endings, Waiter};
use crate::observe::spans::{Op, OpSpan};
use crate::store::Stored;
use crate::{BoxError, Result};

/// The future of one `get_or_load`: lazy, like an `async fn`'s.
pub(super) struct LoadFuture<'a, V, A, L> {
    cache: &'a Cache<V>,
    key: &'a str,
    /// Until the read decides who gets it: a refresh, the miss path, or
    /// nobody (a hit).
    loader: Option<L>,
    /// Whether the first poll has run.
    started: bool,
    /// What the first poll left to wait for. Dropped by hand (see the
    /// `Drop` impl), so that finishing a hit drops nothing.
    pending: ManuallyDrop<Option<Pending<'a, V, A>>>,
}

/// A `get_or_load` still under way after its first poll.
enum Pending<'a, V, A> {
    /// The store's read, and the flights' endings noted before it.
    Read {
        read: BoxFuture<'a, Result<Option<Stored<V>>>>,
        endings: Endings,
    },
    /// The miss path, or the whole operation inside its live span.
    Boxed(BoxFuture<'a, Result<A>>),
}

// Nothing is pinned in place: the loader is only ever moved (into a
// refresh or the boxed miss path), never polled here, and the futures held
// are `Unpin` (boxed, or a `StoreFuture`).
impl<V, A, L> Unpin for LoadFuture<'_, V, A, L> {}

impl<'a, V, A, L, Fut> LoadFuture<'a, V, A, L>
where
    V: Clone + Send + Sync + 'static,
    A: Answer<V> + Send + 'static,
    L: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<A, BoxError>> + Send + 'static,
{
    pub(super) fn new(cache: &'a Cache<V>, key: &'a str, loader: L) -> Self {
        LoadFuture {
            cache,
            key,
            loader: Some(loader),
            started: false,
            pending: ManuallyDrop::new(None),
        }
    }

    /// The first poll. What it cannot answer at once is left in `pending`
    /// and polled there. Returns straight into the poll's own result (see
    /// `get_future.rs`).
    #[inline(always)]
    fn start(&mut self, cx: &mut Context<'_>) -> Poll<Result<A>> {
        let (cache, key) = (self.cache, self.key);
        let core = &*cache.core;
        let span = OpSpan::new(&core.observer, Op::GetOrLoad, Some(key));
        if span.live().is_some() {
            let loader = self.take_loader();
            let operation = Box::pin(cache.load_in_span(key, loader, span, None));
            return self.wait(Pending::Boxed(operation), cx);
        }
        if let Err(error) = core.check(key) {
            return Poll::Ready(Err(error));
        }
        // The flights' endings are noted before the read (see
        // `Flights::endings`); with a local tier, by the hash its lookup
        // uses (the flights share its hasher).
        let read = match &core.local {
            Some(local) => {
                let hash = local.hash(key);
                let endings = core.flights.endings_of_hash(hash);
                if let Some(waiter) = core.join_load_first(key) {
                    return self.join(waiter, endings, cx);
                }
                if core.settings.fail_safe.is_none() {
                    // Without fail-safe, anything found is live: the hit is
                    // read in place (see `LiveHit`), the answer cloned
                    // under the tier's lock and nothing else copied.
                    let hit = local.read_hashed(
                        hash,
                        key,
                        #[inline(always)]
                        |envelope, remaining_ttl| {
                            let lookup = Lookup::of::<V, A>(envelope);
                            let load_time = envelope.load_time();
                            let value = || envelope.value().cloned();
                            core.live_hit::<A>(lookup, load_time, remaining_ttl, value)
                        },
                    );
                    if let Some(hit) = hit {
                        let loader = self.take_loader();
                        let after = cache.after_live_hit(key, hit, loader, &span, None);
                        return self.act(after, endings, cx);
                    }
                } else if let Some(stored) = local.get_hashed(hash, key, true) {
                    // Fail-safe re-arms a stale value with its tags.
                    let read = core.judge(Ok(Some(stored)));
                    return self.decide(read, endings, &span, cx);
                }
                match local.behind(key) {
                    Some(read) => (core.shared_read(key, read), endings),
                    None => return self.decide(core.judge(Ok(None)), endings, &span, cx),
                }
            }
            None => {
                let endings = core.flights.endings(key);
                if let Some(waiter) = core.join_load_first(key) {
                    return self.join(waiter, endings, cx);
                }
                (core.shared_read(key, core.store.get(key)), endings)
            }
        };
        let (read, endings) = read;
        // Stores without an in-process tier may still answer at once.
        match read.now_or_later() {
            Ok(stored) => self.decide(core.judge(stored), endings, &span, cx),
            Err(read) => self.wait(Pending::Read { read, endings }, cx),
        }
    }

    /// With distributed singleflight, a load of the key under way in this
    /// process is joined without reading the store (see `distributed.rs`).
    #[cold]
    fn join(
        &mut self,
        waiter: Waiter<V>,
        endings: Endings,
        cx: &mut Context<'_>,
    ) -> Poll<Result<A>> {
        let (cache, key) = (self.cache, self.key);
        cache.core.counters.incr(Counter::Misses);
        let loader = self.take_loader();
        let joined = Some(waiter);
        let operation =
            Box::pin(cache.load_missing(key, loader, endings, Miss::nothing(), joined, None));
        self.wait(Pending::Boxed(operation), cx)
    }

    /// Acts on the read: a hit is the answer; otherwise the miss path takes
    /// the loader (`Pending`, to be polled).
    #[inline(always)]
    fn decide(
        &mut self,
        read: Read<V>,
        endings: Endings,
        span: &OpSpan,
        cx: &mut Context<'_>,
    ) -> Poll<Result<A>> {
        let loader = self.take_loader();
        let after = self.cache.after_read(self.key, read, loader, span, None);
        self.act(after, endings, cx)
    }

    /// Answers, or goes on to the miss path.
    #[inline(always)]
    fn act(
        &mut self,
        after: AfterRead<A, L, V>,
        endings: Endings,
        cx: &mut Context<'_>,
    ) -> Poll<Result<A>> {
        match after {
            AfterRead::Answered(answer) => Poll::Ready(Ok(answer)),
            AfterRead::Load(loader, miss) => {
                let (cache, key) = (self.cache, self.key);
                let operation =
                    Box::pin(cache.load_missing(key, loader, endings, miss, None, None));
                self.wait(Pending::Boxed(operation), cx)
            }
        }
    }

    /// Polls `pending`, and leaves it for the next polls.
    #[cold]
    fn wait(&mut self, pending: Pending<'a, V, A>, cx: &mut Context<'_>) -> Poll<Result<A>> {
        *self.pending = Some(pending);
        self.resume(cx)
    }

    #[inline(always)]
    fn take_loader(&mut self) -> L {
        self.loader
            .take()
            .expect("a load's loader is handed on once")
    }

    /// Polls what is pending: a read, which then decides (a miss goes on
    /// to the miss path, polled at once), or the miss path itself.
    fn resume(&mut self, cx: &mut Context<'_>) -> Poll<Result<A>> {
        match self.pending.as_mut() {
            Some(Pending::Read { read, endings }) => {
                let stored = ready!(read.as_mut().poll(cx));
                let endings = *endings;
                *self.pending = None;
                let read = self.cache.core.judge(stored);
                self.decide(read, endings, &OpSpan::quiet(), cx)
            }
            Some(Pending::Boxed(operation)) => operation.as_mut().poll(cx),
            None => panic!("`Cache::get_or_load` polled after completion"),
        }
    }
}

impl<V, A, L, Fut> Future for LoadFuture<'_, V, A, L>
where
    V: Clone + Send + Sync + 'static,
    A: Answer<V> + Send + 'static,
    L: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<A, BoxError>> + Send + 'static,
{
    type Output = Result<A>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if !this.started {
            this.started = true;
            return this.start(cx);
        }
        this.resume(cx)
    }
}

/// Drops what is pending, if anything. By hand rather than by the field's
/// drop glue, which the compiler left out of line: a call on every hit.
impl<V, A, L> Drop for LoadFuture<'_, V, A, L> {
    #[inline]
    fn drop(&mut self) {
        if self.pending.is_some() {
            drop_pending(&mut self.pending);
        }
    }
}

#[cold]
fn drop_pending<T>(pending: &mut Option<T>) {
    // Taken out, the field holds `None`: nothing is left undropped.
    drop(pending.take());
}
