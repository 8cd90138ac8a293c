//! Real Redis servers for cachex's tests and benchmarks.
//!
//! - [`RedisServer::start`] runs `redis-server` on a free port of 127.0.0.1,
//!   in a temporary directory, without persistence, and kills it on drop.
//!   [`kill`](RedisServer::kill) and [`restart`](RedisServer::restart) (same
//!   port) let fault tests take it away and bring it back.
//! - [`RedisCluster::start`] runs a cluster of masters the same way and
//!   creates it with `redis-cli --cluster create`.
//! - [`RedisSentinel::start`] runs a `redis-sentinel` watching a server
//!   as the master of a named service.
//! - [`FaultProxy::start`] puts a TCP proxy in front of a server, which a
//!   test cuts and restores to partition one client from it.
//!
//! No mocks: the tests exercise the server users run. When `redis-server` is
//! not installed, starting one fails loudly with the command that installs it
//! instead of letting the tests skip silently.
//!
//! ```no_run
//! let server = cachex_testkit::RedisServer::start();
//! println!("redis at {}", server.url());
//! ```

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod proxy;
mod resp;
mod sentinel;
pub use proxy::FaultProxy;
pub use sentinel::RedisSentinel;

/// The only address servers listen on.
const HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// How long a server may take to answer its first PING.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Fresh ports to try when another process takes ours between the probe and
/// the server's bind.
const PORT_ATTEMPTS: usize = 20;
/// Cluster nodes talk to each other on their port plus this.
const BUS_OFFSET: u16 = 10_000;

const INSTALL_HINT: &str =
    "redis-server was not found on PATH. The Redis tests run against a real \
     server: install it with `apt-get install -y redis-server` (Debian/Ubuntu), or run \
     ./scripts/test, which installs it when it is missing.";

/// A `redis-server` process on 127.0.0.1, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    extra_args: Vec<String>,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port.
    ///
    /// # Panics
    /// If `redis-server` is not installed (the message says how to install
    /// it) or does not start; see [`try_start`](Self::try_start).
    pub fn start() -> RedisServer {
        Self::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a server on a free loopback port, or says why it could not.
    pub fn try_start() -> Result<RedisServer, String> {
        Self::start_with(&[], false)
    }

    /// Starts a server on a free loopback port with extra `redis-server`
    /// arguments (e.g. `["--requirepass", "secret"]`).
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_with_args(args: &[&str]) -> RedisServer {
        Self::start_with(args, false).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a server with extra `redis-server` arguments; `cluster` also
    /// requires the cluster bus port to be free.
    fn start_with(extra_args: &[&str], cluster: bool) -> Result<RedisServer, String> {
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port(cluster)?;
            let mut server = RedisServer {
                port,
                extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
                dir: tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?,
                child: None,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                // Someone else bound the port after our probe: try another.
                Err(e) if e.contains("Address already in use") => last_error = e,
                Err(e) => return Err(e),
            }
        }
        Err(format!(
            "redis-server could not get a free port in {PORT_ATTEMPTS} attempts: {last_error}"
        ))
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://{HOST}:{}/", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits for
    /// it to exit. The port stays reserved for [`restart`](Self::restart).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`kill`](Self::kill);
    /// kills it first if it still runs). Its data is gone: nothing persists.
    ///
    /// # Panics
    /// If it cannot start again.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                // The old socket may linger for a moment.
                Err(e) if e.contains("Address already in use") && Instant::now() < deadline => {
                    sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("redis-server did not restart on port {}: {e}", self.port),
            }
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is
    /// answered, as with a server stuck in a slow command. Undo with
    /// [`resume`](Self::resume).
    ///
    /// # Panics
    /// If the server is not running or `kill` cannot be run.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a [paused](Self::pause) server run again (SIGCONT).
    ///
    /// # Panics
    /// If the server is not running or `kill` cannot be run.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is not running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill {signal} failed: {status}");
    }

    /// Whether the server process is running (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The version `redis-server --version` reports, e.g. `7.0.15`.
    pub fn version() -> Result<String, String> {
        let out = Command::new("redis-server")
            .arg("--version")
            .output()
            .map_err(not_installed)?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .split_whitespace()
            .find_map(|word| word.strip_prefix("v="))
            .unwrap_or(text.trim())
            .to_string())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Runs `redis-server` on `self.port` and waits until it answers PING.
    fn spawn(&mut self) -> Result<(), String> {
        let log = self.log_path();
        let _ = fs::remove_file(&log);
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", &HOST.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(not_installed)?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ping(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return Err(format!(
                    "redis-server on port {} exited ({status}): {}{}",
                    self.port,
                    stderr.trim(),
                    read_log(&log)
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server on port {} did not answer PING within {START_TIMEOUT:?}{}",
                    self.port,
                    read_log(&log)
                ));
            }
            sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of masters (no replicas) on 127.0.0.1, killed when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` cluster-enabled servers (at least 3, Redis's minimum),
    /// creates the cluster with `redis-cli --cluster create`, and waits until
    /// every node reports `cluster_state:ok`.
    ///
    /// # Panics
    /// If `redis-server` or `redis-cli` is missing, or the cluster does not
    /// form; see [`try_start`](Self::try_start).
    pub fn start(masters: usize) -> RedisCluster {
        Self::try_start(masters).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`start`](Self::start), answering why the cluster could not form.
    pub fn try_start(masters: usize) -> Result<RedisCluster, String> {
        if masters < 3 {
            return Err(format!(
                "a Redis Cluster needs at least 3 masters, not {masters}"
            ));
        }
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "5000",
        ];
        let nodes = (0..masters)
            .map(|_| RedisServer::start_with(&args, true))
            .collect::<Result<Vec<_>, _>>()?;
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(RedisServer::addr))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .map_err(|e| {
                format!("cannot run redis-cli (installed with redis-server): {e}. {INSTALL_HINT}")
            })?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let cluster = RedisCluster { nodes };
        cluster.wait_ok()?;
        Ok(cluster)
    }

    /// The nodes' URLs, `redis://127.0.0.1:<port>/`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes themselves.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    fn wait_ok(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        for node in &self.nodes {
            loop {
                let info = command(node.port, "CLUSTER INFO").unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "cluster node {} not ok within {START_TIMEOUT:?}: {info}",
                        node.addr()
                    ));
                }
                sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

/// A loopback port nobody is bound to right now (and, for a cluster node,
/// whose bus port is free too). Released before returning, so the caller
/// must cope with losing a race for it.
fn free_port(cluster: bool) -> Result<u16, String> {
    for _ in 0..100 {
        let listener = TcpListener::bind((HOST, 0))
            .map_err(|e| format!("cannot bind a loopback port: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("cannot read a bound port: {e}"))?
            .port();
        if !cluster {
            return Ok(port);
        }
        let Some(bus) = port.checked_add(BUS_OFFSET) else {
            continue;
        };
        if TcpListener::bind((HOST, bus)).is_ok() {
            return Ok(port);
        }
    }
    Err("found no free loopback port pair for a cluster node".to_string())
}

/// Whether a server on `port` answers PING.
fn ping(port: u16) -> bool {
    // A server started with a password answers NOAUTH: it is up too.
    command(port, "PING")
        .is_some_and(|reply| reply.starts_with("+PONG") || reply.starts_with("-NOAUTH"))
}

/// Sends one inline command and returns what arrives within a short wait.
/// Enough for PING and CLUSTER INFO; not a Redis client.
fn command(port: u16, line: &str) -> Option<String> {
    let addr = SocketAddr::from((HOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(format!("{line}\r\n").as_bytes()).ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                if is_complete(&reply) {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    (!reply.is_empty()).then(|| String::from_utf8_lossy(&reply).into_owned())
}

/// Whether `reply` holds a whole simple-string, error or bulk-string reply.
fn is_complete(reply: &[u8]) -> bool {
    let Some(end) = reply.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    if reply[0] != b'$' {
        return true;
    }
    let len: usize = match std::str::from_utf8(&reply[1..end])
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(len) => len,
        None => return true,
    };
    reply.len() >= end + 2 + len + 2
}

fn read_log(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(log) if !log.trim().is_empty() => format!("\nredis-server log:\n{}", log.trim()),
        _ => String::new(),
    }
}

fn not_installed(e: std::io::Error) -> String {
    if e.kind() == ErrorKind::NotFound {
        INSTALL_HINT.to_string()
    } else {
        format!("cannot run redis-server: {e}. {INSTALL_HINT}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_starts_dies_and_restarts_on_its_port() {
        let mut server = RedisServer::start();
        let port = server.port();
        assert!(ping(port));
        server.kill();
        assert!(!ping(port));
        server.restart();
        assert_eq!(server.port(), port);
        assert!(ping(port));
    }

    #[test]
    fn two_servers_get_different_ports() {
        let a = RedisServer::start();
        let b = RedisServer::start();
        assert_ne!(a.port(), b.port());
    }

    #[test]
    fn reports_its_version() {
        let version = RedisServer::version().unwrap();
        assert!(
            version.chars().next().unwrap().is_ascii_digit(),
            "{version}"
        );
    }
}
