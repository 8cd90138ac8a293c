//! A Redis Sentinel watching one server, for tests of clients that find
//! their master through Sentinel.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{command, free_port, not_installed, read_log, RedisServer, HOST, START_TIMEOUT};

/// A `redis-server --sentinel` process on 127.0.0.1 monitoring one
/// [`RedisServer`] as the master of a service, killed when dropped.
///
/// ```no_run
/// let master = cachex_testkit::RedisServer::start();
/// let sentinel = cachex_testkit::RedisSentinel::start(&master, "mymaster");
/// println!("ask {} for mymaster", sentinel.url());
/// ```
#[derive(Debug)]
pub struct RedisSentinel {
    port: u16,
    _dir: TempDir,
    child: Child,
}

impl RedisSentinel {
    /// Starts a Sentinel that monitors `master` under `service` (quorum
    /// 1), and waits until it names the master.
    ///
    /// # Panics
    /// If `redis-server` is not installed or the Sentinel does not start.
    pub fn start(master: &RedisServer, service: &str) -> RedisSentinel {
        Self::try_start(master, service).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`start`](Self::start), answering why it could not start.
    pub fn try_start(master: &RedisServer, service: &str) -> Result<RedisSentinel, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let port = free_port(false)?;
        // Sentinel rewrites its configuration file: it must be its own.
        let config = dir.path().join("sentinel.conf");
        let text = format!(
            "port {port}\nbind {HOST}\ndir {dir}\nlogfile {dir}/sentinel.log\n\
             sentinel monitor {service} {HOST} {master} 1\n\
             sentinel down-after-milliseconds {service} 5000\n",
            dir = dir.path().display(),
            master = master.port(),
        );
        fs::write(&config, text).map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        let child = Command::new("redis-server")
            .arg(&config)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(not_installed)?;
        let mut sentinel = RedisSentinel {
            port,
            _dir: dir,
            child,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let ask = format!("SENTINEL get-master-addr-by-name {service}");
        loop {
            let reply = command(port, &ask).unwrap_or_default();
            if reply.contains(&master.port().to_string()) {
                return Ok(sentinel);
            }
            if let Ok(Some(status)) = sentinel.child.try_wait() {
                return Err(format!(
                    "redis-sentinel on port {port} exited ({status}){}",
                    read_log(&sentinel._dir.path().join("sentinel.log"))
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-sentinel on port {port} did not name {service} within \
                     {START_TIMEOUT:?}: {reply}{}",
                    read_log(&sentinel._dir.path().join("sentinel.log"))
                ));
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:<port>/`, the Sentinel's URL.
    pub fn url(&self) -> String {
        format!("redis://{HOST}:{}/", self.port)
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
