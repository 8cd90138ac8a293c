//! Turning a loader's panic into a value the waiters can be given.

use std::any::Any;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

/// Polls `future` to completion, catching a panic from any poll (including
/// the first, which is where a loader closure called lazily runs).
/// A panic becomes `Err(message)`.
///
/// Why catch, rather than run the loader in a spawned task and read the
/// panic off its `JoinError`: the load runs inline, in the task of the
/// caller that leads it (see `singleflight`), so that it stays bound to a
/// caller who still wants it. Catching around each poll gives that inline
/// load the same protection a task boundary would.
///
/// `AssertUnwindSafe` is sound here because nothing observes the future
/// after it panicked: it is dropped unpolled, and the cache's own state is
/// only updated once a poll has returned.
pub(crate) async fn catch_unwind<F: Future>(future: F) -> Result<F::Output, Arc<str>> {
    let mut future = pin!(future);
    std::future::poll_fn(move |cx| {
        match panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(message(&*payload))),
        }
    })
    .await
}

/// The panic's message, when it carried one (as `panic!` does).
fn message(payload: &(dyn Any + Send)) -> Arc<str> {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        Arc::from(*message)
    } else if let Some(message) = payload.downcast_ref::<String>() {
        Arc::from(message.as_str())
    } else {
        Arc::from("non-string panic payload")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_output_through() {
        assert_eq!(catch_unwind(async { 7 }).await, Ok(7));
    }

    #[tokio::test]
    async fn catches_panics_with_their_message() {
        let caught = catch_unwind(async {
            tokio::task::yield_now().await;
            panic!("boom {}", 7);
        })
        .await;
        assert_eq!(caught.unwrap_err().as_ref(), "boom 7");

        let caught = catch_unwind(async { std::panic::panic_any(7_u8) }).await;
        assert_eq!(caught.unwrap_err().as_ref(), "non-string panic payload");
    }
}
