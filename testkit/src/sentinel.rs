//! A master, its replica and three real `redis-sentinel` processes
//! watching them, on free loopback ports: the smallest Sentinel deployment
//! that survives the loss of its master.
//!
//! ```no_run
//! let mut group = cachex_testkit::SentinelGroup::start();
//! println!("sentinels at {:?}, service {}", group.sentinel_urls(), group.service());
//! let old = group.master_addr().unwrap();
//! group.kill_master();
//! let new = group.wait_for_new_master(&old, std::time::Duration::from_secs(30));
//! assert_ne!(old, new);
//! ```

use std::fs;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{command, free_port, ping, read_log, RedisServer, HOST, PORT_ATTEMPTS, START_TIMEOUT};

/// The name the Sentinels know the master by.
const SERVICE: &str = "cachex";
/// Sentinels needed to agree that the master is down.
const QUORUM: usize = 2;
/// How long the master may be silent before a Sentinel thinks it down:
/// short, so that a failover takes seconds; the Sentinels run on the same
/// machine as the servers, so a busy machine delays them all alike.
const DOWN_AFTER: Duration = Duration::from_millis(1_000);
// `failover-timeout` is 3 s (Redis's default: 3 minutes): a failover
// attempt whose election split the votes is retried after twice that.

const SENTINEL_HINT: &str =
    "redis-sentinel was not found on PATH. The Sentinel tests run real Sentinels: install \
     them with `apt-get install -y redis-sentinel` (Debian/Ubuntu), or run ./scripts/test, \
     which installs them when they are missing.";

/// A master, one replica and three Sentinels (quorum 2); every process
/// is killed when dropped.
#[derive(Debug)]
pub struct SentinelGroup {
    /// The servers: `[0]` is the first master, `[1]` its replica.
    servers: Vec<RedisServer>,
    sentinels: Vec<Sentinel>,
}

impl SentinelGroup {
    /// Starts the master, the replica (waiting until it has synchronised),
    /// then the Sentinels, and waits until they know each other and the
    /// replica (so that a failover can happen).
    ///
    /// # Panics
    /// If `redis-server` or `redis-sentinel` is missing (the message says
    /// how to install it) or the group does not come up.
    pub fn start() -> SentinelGroup {
        Self::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`start`](Self::start), answering why it could not.
    pub fn try_start() -> Result<SentinelGroup, String> {
        let master = RedisServer::try_start()?;
        let replica_of = master.port().to_string();
        let replica =
            RedisServer::start_with(&["--replicaof", &HOST.to_string(), &replica_of], false)?;
        let group = SentinelGroup {
            servers: vec![master, replica],
            sentinels: Vec::new(),
        };
        group.wait_replicated()?;
        let master_port = group.servers[0].port();
        let sentinels = (0..3)
            .map(|_| Sentinel::start(master_port))
            .collect::<Result<Vec<_>, _>>()?;
        let group = SentinelGroup { sentinels, ..group };
        group.wait_ready()?;
        Ok(group)
    }

    /// The Sentinels' URLs, `redis://127.0.0.1:<port>/`.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("redis://{HOST}:{}/", s.port))
            .collect()
    }

    /// The name of the master the Sentinels watch.
    pub fn service(&self) -> &str {
        SERVICE
    }

    /// The two data servers (`[0]` the first master, `[1]` its replica),
    /// whichever is master now.
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    /// `127.0.0.1:<port>` of the master, as the first Sentinel that
    /// answers names it.
    pub fn master_addr(&self) -> Option<String> {
        self.sentinels.iter().find_map(Sentinel::named_master)
    }

    /// Kills (SIGKILL) whichever server is master now, and answers its
    /// address.
    ///
    /// # Panics
    /// If no Sentinel names a master, or the master is not one of the
    /// group's servers.
    pub fn kill_master(&mut self) -> String {
        let addr = self.master_addr().expect("no Sentinel names a master");
        let server = self
            .servers
            .iter_mut()
            .find(|s| s.addr() == addr)
            .unwrap_or_else(|| panic!("the master {addr} is not one of the group's servers"));
        server.kill();
        addr
    }

    /// Asks the Sentinels for a failover while the master is up (`SENTINEL
    /// FAILOVER`): the replica is promoted and the old master demoted to
    /// its replica, so clients still connected to it get `READONLY` on
    /// writes. Answers the old master's address.
    ///
    /// # Panics
    /// If no Sentinel names a master, or the Sentinel refuses.
    pub fn failover(&self) -> String {
        let addr = self.master_addr().expect("no Sentinel names a master");
        let reply = command(
            self.sentinels[0].port,
            &format!("SENTINEL FAILOVER {SERVICE}"),
        )
        .unwrap_or_default();
        assert!(reply.starts_with("+OK"), "SENTINEL FAILOVER: {reply}");
        addr
    }

    /// Waits until every Sentinel names a master other than `old`, and
    /// that master says it is one; answers its address.
    ///
    /// # Panics
    /// If that does not happen within `timeout`.
    pub fn wait_for_new_master(&self, old: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let named: Vec<Option<String>> =
                self.sentinels.iter().map(Sentinel::named_master).collect();
            if let Some(Some(new)) = named.first() {
                let agreed = named.iter().all(|n| n.as_deref() == Some(new.as_str()));
                let promoted = self.servers.iter().any(|s| {
                    s.addr() == *new
                        && command(s.port(), "INFO replication")
                            .is_some_and(|info| info.contains("role:master"))
                });
                if new != old && agreed && promoted {
                    return new.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no failover from {old} within {timeout:?}: the Sentinels name {named:?}{}",
                self.sentinels
                    .iter()
                    .map(|s| read_log(&s.log_path()))
                    .collect::<String>()
            );
            sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the replica's link to the master is up.
    fn wait_replicated(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let info = command(self.servers[1].port(), "INFO replication").unwrap_or_default();
            if info.contains("master_link_status:up") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the replica did not synchronise within {START_TIMEOUT:?}: {info}"
                ));
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Waits until each Sentinel has found the replica and the other two
    /// (`SENTINEL CKQUORUM` says a failover can be authorised).
    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        for sentinel in &self.sentinels {
            loop {
                let quorum = command(sentinel.port, &format!("SENTINEL CKQUORUM {SERVICE}"))
                    .unwrap_or_default();
                let replicas = command(sentinel.port, &format!("SENTINEL REPLICAS {SERVICE}"))
                    .unwrap_or_default();
                if quorum.starts_with("+OK 3 usable") && replicas.starts_with("*1\r\n") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "Sentinel on port {} not ready within {START_TIMEOUT:?}: {quorum} {replicas}{}",
                        sentinel.port,
                        read_log(&sentinel.log_path())
                    ));
                }
                sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

/// One `redis-sentinel` process.
#[derive(Debug)]
struct Sentinel {
    port: u16,
    dir: TempDir,
    child: Child,
}

impl Sentinel {
    fn start(master_port: u16) -> Result<Sentinel, String> {
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match Self::spawn(free_port(false)?, master_port) {
                Ok(sentinel) => return Ok(sentinel),
                Err(e) if e.contains("Address already in use") => last_error = e,
                Err(e) => return Err(e),
            }
        }
        Err(format!(
            "redis-sentinel could not get a free port in {PORT_ATTEMPTS} attempts: {last_error}"
        ))
    }

    /// `host:port` of the master this Sentinel names now.
    fn named_master(&self) -> Option<String> {
        let reply = command(
            self.port,
            &format!("SENTINEL get-master-addr-by-name {SERVICE}"),
        )?;
        // *2 $9 127.0.0.1 $5 port
        let words: Vec<&str> = reply.split("\r\n").collect();
        match words.as_slice() {
            ["*2", _, host, _, port, ..] => Some(format!("{host}:{port}")),
            _ => None,
        }
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("sentinel.log")
    }

    fn spawn(port: u16, master_port: u16) -> Result<Sentinel, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let conf = dir.path().join("sentinel.conf");
        let log = dir.path().join("sentinel.log");
        // Sentinels rewrite their configuration file (what they learn of
        // replicas and each other): it lives in the temp dir.
        let text = format!(
            "port {port}\nbind {HOST}\ndir {dir}\nlogfile {log}\n\
             sentinel monitor {SERVICE} {HOST} {master_port} {QUORUM}\n\
             sentinel down-after-milliseconds {SERVICE} {down}\n\
             sentinel failover-timeout {SERVICE} 3000\n\
             sentinel parallel-syncs {SERVICE} 1\n",
            dir = dir.path().display(),
            log = log.display(),
            down = DOWN_AFTER.as_millis(),
        );
        fs::write(&conf, text).map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let mut child = Command::new("redis-sentinel")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    SENTINEL_HINT.to_string()
                } else {
                    format!("cannot run redis-sentinel: {e}. {SENTINEL_HINT}")
                }
            })?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ping(port) {
                return Ok(Sentinel { port, dir, child });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return Err(format!(
                    "redis-sentinel on port {port} exited ({status}): {}{}",
                    stderr.trim(),
                    read_log(&log)
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-sentinel on port {port} did not answer PING within {START_TIMEOUT:?}{}",
                    read_log(&log)
                ));
            }
            sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
