//! The background work a cache owns.

use std::future::Future;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::OnceCell;
use tokio::task::JoinSet;

/// The cache's background refreshes, so that none outlives the cache.
///
/// A `JoinSet` aborts its tasks when dropped, and the set lives exactly as
/// long as the cache handles do: dropping the last handle aborts whatever is
/// still running, and [`shutdown`](Self::shutdown) (from
/// [`Cache::close`](crate::Cache::close)) aborts and awaits it.
#[derive(Debug)]
pub(crate) struct Background {
    /// `None` once shut down: no new task may start.
    tasks: Mutex<Option<JoinSet<()>>>,
    /// Set once the tasks are gone, so that every caller of `shutdown`,
    /// not only the first, returns after that.
    stopped: OnceCell<()>,
}

impl Background {
    pub(crate) fn new() -> Self {
        Background {
            tasks: Mutex::new(Some(JoinSet::new())),
            stopped: OnceCell::new(),
        }
    }

    /// Starts `task` on the current tokio runtime. Refused (and `task`
    /// dropped unpolled) after shutdown, or when called outside a runtime,
    /// since a refresh is an optimisation the caller can do without.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> bool {
        let Ok(runtime) = Handle::try_current() else {
            return false;
        };
        let mut tasks = self.tasks.lock();
        let Some(set) = tasks.as_mut() else {
            return false;
        };
        // Finished tasks stay in the set until joined; reap them here so
        // the set only ever holds the running ones.
        while set.try_join_next().is_some() {}
        set.spawn_on(task, &runtime);
        true
    }

    /// Refuses new tasks, aborts the running ones and waits until they are
    /// gone.
    pub(crate) async fn shutdown(&self) {
        self.stopped
            .get_or_init(|| async {
                // Taken out so the lock is not held across the await. Should
                // this future be dropped midway, the set goes with it, which
                // aborts the tasks all the same.
                let tasks = self.tasks.lock().take();
                if let Some(mut tasks) = tasks {
                    tasks.shutdown().await;
                }
            })
            .await;
    }
}
