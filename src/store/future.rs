//! The future a [`Store`](super::Store) operation returns.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The result of a [`Store`](super::Store) operation: either already known,
/// or still to be computed by a boxed future.
///
/// Why not a plain `Pin<Box<dyn Future>>` (what `async-trait` generates)? The
/// trait has to stay object-safe, so its methods cannot be `async fn`s, and a
/// boxed future costs an allocation per call. An in-memory store answers
/// every operation synchronously, and the cache's hit path goes through
/// [`Store::get`](super::Store::get): making that path allocate would slow
/// the engine down measurably. `StoreFuture` keeps one signature for every
/// backend while letting synchronous ones skip the box:
///
/// ```
/// use cachex::store::StoreFuture;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// // An in-memory backend: no allocation, ready at the first poll.
/// let ready: StoreFuture<'_, u32> = StoreFuture::ready(7);
/// // A remote backend: any `Send` future, boxed.
/// let remote: StoreFuture<'_, u32> = StoreFuture::new(async { 7 });
/// assert_eq!(ready.await, remote.await);
/// # });
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct StoreFuture<'a, T>(State<'a, T>);

enum State<'a, T> {
    /// The answer, until the first poll takes it.
    Ready(Option<T>),
    Pending(Pin<Box<dyn Future<Output = T> + Send + 'a>>),
}

impl<'a, T> StoreFuture<'a, T> {
    /// A future that is already complete.
    pub fn ready(value: T) -> Self {
        StoreFuture(State::Ready(Some(value)))
    }

    /// Wraps (and boxes) a future that still has work to do.
    pub fn new(future: impl Future<Output = T> + Send + 'a) -> Self {
        StoreFuture(State::Pending(Box::pin(future)))
    }

    /// The output if it is already known, else the boxed future that will
    /// produce it: lets a caller answer a ready store (an in-memory one)
    /// on its own path, and hold only a box while it waits.
    #[inline]
    pub(crate) fn now_or_later(self) -> Result<T, Pin<Box<dyn Future<Output = T> + Send + 'a>>> {
        match self.0 {
            State::Ready(value) => Ok(value.expect("StoreFuture polled after completion")),
            State::Pending(future) => Err(future),
        }
    }

    /// Whether the answer is already here (nothing left to await).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn is_ready(&self) -> bool {
        matches!(self.0, State::Ready(Some(_)))
    }

    /// Applies `f` to the output. A ready future stays ready (no
    /// allocation); a pending one is wrapped in a new box.
    ///
    /// ```
    /// use cachex::store::StoreFuture;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// assert_eq!(StoreFuture::ready(2).map(|n| n * 10).await, 20);
    /// assert_eq!(StoreFuture::new(async { 2 }).map(|n| n * 10).await, 20);
    /// # });
    /// ```
    pub fn map<U>(self, f: impl FnOnce(T) -> U + Send + 'a) -> StoreFuture<'a, U>
    where
        T: 'a,
    {
        match self.0 {
            State::Ready(Some(value)) => StoreFuture::ready(f(value)),
            State::Ready(None) => StoreFuture(State::Ready(None)),
            State::Pending(future) => StoreFuture::new(async move { f(future.await) }),
        }
    }
}

// Sound because nothing inside is ever pinned in place: the boxed future is
// pinned on the heap, and the ready value is moved out, never pinned.
impl<T> Unpin for StoreFuture<'_, T> {}

impl<T> Future for StoreFuture<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &mut self.get_mut().0 {
            State::Ready(value) => {
                Poll::Ready(value.take().expect("StoreFuture polled after completion"))
            }
            State::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

impl<T> fmt::Debug for StoreFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.0 {
            State::Ready(Some(_)) => "ready",
            State::Ready(None) => "completed",
            State::Pending(_) => "pending",
        };
        f.debug_tuple("StoreFuture").field(&state).finish()
    }
}
