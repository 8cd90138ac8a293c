//! The future [`Cache::get`](super::Cache::get) returns.
//!
//! Written by hand rather than as an `async fn` because a hit is the
//! common case and should cost little more than the engine's own lookup:
//! the first poll reads the store's in-process tier directly (no dynamic
//! call, no [`StoreFuture`]) and answers; only a read that has to wait (a
//! remote store, a hybrid store's L1 miss) or a live tracing span leaves
//! something to poll again. As an `async fn` the same steps cost about 60
//! more instructions per hit: moving the answer through the state
//! machine's slots and an out-of-line drop of the finished state machine.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use super::{BoxFuture, Core, Lookup};
use crate::observe::spans::{Op, OpSpan};
use crate::store::{Envelope, Stored};
use crate::Result;

/// [`Cache::get`](super::Cache::get)'s future: lazy, like an `async fn`'s
/// (nothing happens before the first poll).
pub(super) struct GetFuture<'a, V> {
    core: &'a Core<V>,
    key: &'a str,
    /// Whether the first poll has run.
    started: bool,
    /// What the first poll left to wait for. Dropped by hand (see the
    /// `Drop` impl), so that finishing a hit drops nothing.
    pending: ManuallyDrop<Option<Pending<'a, V>>>,
}

/// A `get` still under way after its first poll.
enum Pending<'a, V> {
    /// The store's read without the TTL (the quiet path, no fail-safe).
    Entry(BoxFuture<'a, Result<Option<Envelope<V>>>>),
    /// The store's read with the TTL: fail-safe needs it, and a hybrid
    /// store's read behind its L1 brings it.
    Stored(BoxFuture<'a, Result<Option<Stored<V>>>>),
    /// The whole operation inside its live span.
    InSpan(BoxFuture<'a, Result<Option<V>>>),
}

impl<'a, V> GetFuture<'a, V>
where
    V: Clone + Send + Sync + 'static,
{
    pub(super) fn new(core: &'a Core<V>, key: &'a str) -> Self {
        GetFuture {
            core,
            key,
            started: false,
            pending: ManuallyDrop::new(None),
        }
    }

    /// The first poll. What it cannot answer at once is left in `pending`
    /// and polled there. Returns straight into the poll's own result, so
    /// that a hit's answer is written where the caller wants it, not moved.
    #[inline(always)]
    fn start(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<V>>> {
        let (core, key) = (self.core, self.key);
        let span = OpSpan::new(&core.observer, Op::Get, Some(key));
        if span.live().is_some() {
            return self.wait(Pending::InSpan(Box::pin(core.get_in_span(key, span))), cx);
        }
        if let Err(error) = core.check(key) {
            return Poll::Ready(Err(error));
        }
        let fail_safe = core.settings.fail_safe.is_some();
        let stored = match &core.local {
            Some(local) => {
                // The TTL only when fail-safe needs it: a hybrid L1 hit
                // then reads no clock.
                if !fail_safe {
                    // Read in place: the answer cloned under the tier's
                    // lock, the entry itself not copied out and moved on
                    // (see `LocalTier::read_hashed`).
                    let hit = local.read_entry(
                        key,
                        #[inline(always)]
                        |envelope| {
                            (
                                Lookup::of::<V, Option<V>>(envelope),
                                envelope.value().cloned(),
                            )
                        },
                    );
                    if let Some((lookup, value)) = hit {
                        return Poll::Ready(Ok(core.answer_hit(lookup, value, &span)));
                    }
                } else if let Some(stored) = local.get(key) {
                    let entry = core.live_entry(Ok(Some(stored)), &span);
                    return Poll::Ready(core.answer_get(entry, &span));
                }
                match local.behind(key) {
                    Some(read) => read,
                    None => return Poll::Ready(core.answer_get(Ok(None), &span)),
                }
            }
            None if fail_safe => core.store.get(key),
            // Stores without an in-process tier may still answer at once.
            None => {
                return match core.store.get_entry(key).now_or_later() {
                    Ok(entry) => Poll::Ready(core.answer_get(entry, &span)),
                    Err(read) => self.wait(Pending::Entry(read), cx),
                }
            }
        };
        match stored.now_or_later() {
            Ok(stored) => Poll::Ready(core.answer_get(core.live_entry(stored, &span), &span)),
            Err(read) => self.wait(Pending::Stored(read), cx),
        }
    }

    /// Polls `pending`, and leaves it for the next polls.
    #[cold]
    fn wait(&mut self, pending: Pending<'a, V>, cx: &mut Context<'_>) -> Poll<Result<Option<V>>> {
        *self.pending = Some(pending);
        self.resume(cx)
    }

    /// Later polls: waits for what the first one left.
    fn resume(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<V>>> {
        let core = self.core;
        let quiet = OpSpan::quiet();
        match self.pending.as_mut() {
            Some(Pending::Entry(entry)) => {
                let entry = ready!(entry.as_mut().poll(cx));
                Poll::Ready(core.answer_get(entry, &quiet))
            }
            Some(Pending::Stored(stored)) => {
                let stored = ready!(stored.as_mut().poll(cx));
                Poll::Ready(core.answer_get(core.live_entry(stored, &quiet), &quiet))
            }
            Some(Pending::InSpan(operation)) => operation.as_mut().poll(cx),
            None => panic!("`Cache::get` polled after completion"),
        }
    }
}

impl<V> Future for GetFuture<'_, V>
where
    V: Clone + Send + Sync + 'static,
{
    type Output = Result<Option<V>>;

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
impl<V> Drop for GetFuture<'_, V> {
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
