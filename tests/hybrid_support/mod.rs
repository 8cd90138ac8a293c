//! Helpers shared by the hybrid store's tests: stores on a real server,
//! and waiting for something to happen without asserting how long it took.
#![allow(dead_code)] // each test binary uses its own subset

use std::future::Future;
use std::time::Duration;

use cachex::store::hybrid::{HybridStore, HybridStoreBuilder};
use cachex::store::RedisStore;
pub use cachex_testkit::RedisServer;

/// Generous: only a guard against a hang, never a performance claim.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The L2 store for `server` under `prefix`, with a Redis timeout of
/// `timeout`.
pub async fn l2<V>(server: &RedisServer, prefix: &str, timeout: Duration) -> RedisStore<V> {
    RedisStore::builder()
        .url(server.url())
        .prefix(prefix)
        .timeout(timeout)
        .build()
        .await
        .expect("connect")
}

/// A hybrid builder on `server` under `prefix`, with defaults.
pub async fn hybrid<V>(server: &RedisServer, prefix: &str) -> HybridStoreBuilder<V>
where
    V: Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    HybridStore::builder(l2(server, prefix, Duration::from_secs(1)).await)
}

/// Polls `check` until it holds; panics with `what` after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Fails the test instead of hanging it.
pub async fn guarded<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}
