//! A held lock: its token, its renewal, its release.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::names::Names;
use super::stats::incr;
use super::DistributedLock;
use crate::Result;

/// The value a holder stores under its lock: random per acquisition, so
/// that only the holder that set it can release or extend the lock.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LockToken(Arc<str>);

impl LockToken {
    /// The token's text, as stored in Redis.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for LockToken {
    fn from(token: String) -> Self {
        LockToken(Arc::from(token))
    }
}

impl From<&str> for LockToken {
    fn from(token: &str) -> Self {
        LockToken(Arc::from(token))
    }
}

impl fmt::Display for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LockToken({})", self.0)
    }
}

/// A lock this process holds, from
/// [`DistributedLock::acquire`] or [`try_acquire`](DistributedLock::try_acquire).
///
/// - **Renewal**: while the guard lives, a background task extends the
///   lease every third of it, so a holder may keep the lock as long as it
///   needs. If a renewal finds the lock gone (it expired while this
///   process was stalled, and maybe someone else took it), or cannot reach
///   Redis before the lease runs out, the guard counts it as lost:
///   [`is_held`](Self::is_held) turns `false`. A holder that must not act
///   without the lock checks it, or better, hands the
///   [fencing token](Self::fencing_token) to the resource it protects.
/// - **Release**: [`release`](Self::release) deletes the lock (if it is
///   still this guard's) and wakes the waiters. Dropping the guard does
///   the same in the background, best effort; if that fails, the lock
///   expires at the end of its lease.
#[must_use = "dropping the guard releases the lock"]
pub struct LockGuard {
    lock: DistributedLock,
    names: Arc<Names>,
    token: LockToken,
    fence: u64,
    lease: Duration,
    held: Arc<AtomicBool>,
    renewal: Option<JoinHandle<()>>,
    /// Released (or handed to `release`): nothing left to do on drop.
    done: bool,
}

impl LockGuard {
    pub(crate) fn new(
        lock: DistributedLock,
        names: Arc<Names>,
        token: LockToken,
        fence: u64,
        lease: Duration,
    ) -> LockGuard {
        let held = Arc::new(AtomicBool::new(true));
        let renewal = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            runtime.spawn(renew(
                lock.clone(),
                Arc::clone(&names),
                token.clone(),
                lease,
                Arc::clone(&held),
            ))
        });
        LockGuard {
            lock,
            names,
            token,
            fence,
            lease,
            held,
            renewal,
            done: false,
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.names.name
    }

    /// This acquisition's token (what [`DistributedLock::release`] and
    /// [`extend`](DistributedLock::extend) check).
    pub fn token(&self) -> &LockToken {
        &self.token
    }

    /// The fencing token of this acquisition: larger than that of every
    /// earlier acquisition of the same lock name, so a resource that
    /// remembers the largest token it has seen can refuse a write from a
    /// holder that lost the lock without knowing it (a long pause, a
    /// partition) after someone else acquired it. See the
    /// [module docs](super) for how it is made.
    pub fn fencing_token(&self) -> u64 {
        self.fence
    }

    /// The lease the lock is renewed for.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// `false` once a renewal found the lock gone or could not renew it
    /// before its lease ran out: the lock may then be someone else's.
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// Sets the lease to `lease` from now (future renewals keep using the
    /// guard's lease). Answers `false` if the lock was no longer this
    /// guard's, which also marks it lost.
    pub async fn extend(&self, lease: Duration) -> Result<bool> {
        let extended = self
            .lock
            .extend_names(&self.names, &self.token, lease)
            .await?;
        if !extended {
            self.mark_lost();
        }
        Ok(extended)
    }

    /// Releases the lock: deletes it if it is still this guard's, and wakes
    /// its waiters. Answers whether it was still this guard's (`false`: it
    /// had expired, and maybe been taken by someone else, whose lock is
    /// left alone).
    pub async fn release(mut self) -> Result<bool> {
        self.done = true;
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        self.held.store(false, Ordering::Release);
        self.lock.release_names(&self.names, &self.token).await
    }

    fn mark_lost(&self) {
        if self.held.swap(false, Ordering::AcqRel) {
            incr(&self.lock.inner.counters.lost);
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        if self.done {
            return;
        }
        self.held.store(false, Ordering::Release);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // the lease will end it
        };
        let (lock, names, token) = (
            self.lock.clone(),
            Arc::clone(&self.names),
            self.token.clone(),
        );
        runtime.spawn(async move {
            let _ = lock.release_names(&names, &token).await;
        });
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.names.name)
            .field("fencing_token", &self.fence)
            .field("lease", &self.lease)
            .field("held", &self.is_held())
            .finish_non_exhaustive()
    }
}

/// The renewal task of a guard: extends the lease every third of it,
/// until the guard goes (which aborts it) or the lock is lost.
async fn renew(
    lock: DistributedLock,
    names: Arc<Names>,
    token: LockToken,
    lease: Duration,
    held: Arc<AtomicBool>,
) {
    let every = (lease / 3).max(Duration::from_millis(1));
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        match lock.extend_names(&names, &token, lease).await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => break,
            // Redis unreachable: keep trying while the lease may still run.
            Err(_) if renewed.elapsed() < lease => {}
            Err(_) => break,
        }
    }
    if held.swap(false, Ordering::AcqRel) {
        incr(&lock.inner.counters.lost);
    }
}
