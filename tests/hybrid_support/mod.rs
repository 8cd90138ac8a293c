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

/// This test binary run again as a second OS process, running only the
/// test `role` with `env` set, talking over its stdin and stdout: the
/// child prints `CHILD:<line>` (see [`say`]) and reads plain lines.
pub struct ChildProcess {
    child: std::process::Child,
    to_child: std::process::ChildStdin,
    from_child: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl ChildProcess {
    pub fn spawn(role: &str, env: (&str, &str)) -> ChildProcess {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", role, "--nocapture", "--test-threads=1"])
            .env(env.0, env.1)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the test binary again");
        let to_child = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        // Read on a thread (blocking pipe) into a channel.
        let (tx, from_child) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest may print `test <role> ... ` first on the line.
                if let Some(at) = line.find("CHILD:") {
                    let _ = tx.send(line[at + "CHILD:".len()..].to_string());
                }
            }
        });
        ChildProcess {
            child,
            to_child,
            from_child,
        }
    }

    /// The child's next line; fails the test if it exits or hangs first.
    pub async fn hear(&mut self) -> String {
        guarded("the child", self.from_child.recv())
            .await
            .expect("the child exited early (see its output above)")
    }

    /// Sends the child one line.
    pub fn tell(&mut self, line: &str) {
        use std::io::Write;
        writeln!(self.to_child, "{line}").expect("the child's stdin");
    }

    /// Kills the child at once (SIGKILL: no cleanup, no goodbye), as a
    /// crash would, and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the child to exit; fails the test unless it passed.
    pub fn finish(mut self) {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child failed: {status}");
    }
}

/// What a child process says to its parent (see [`ChildProcess`]).
pub fn say(line: &str) {
    use std::io::Write;
    println!("CHILD:{line}");
    std::io::stdout().flush().unwrap();
}
