//! Real Redis servers for cachex's tests and benchmarks.
//!
//! - [`RedisServer::start`] runs `redis-server` on a free port of 127.0.0.1,
//!   in a temporary directory, without persistence, and kills it on drop.
//!   [`kill`](RedisServer::kill) and [`restart`](RedisServer::restart) (same
//!   port) let fault tests take it away and bring it back.
//! - [`RedisCluster::start`] runs a cluster of masters the same way and
//!   creates it with `redis-cli --cluster create`.
//! - [`SentinelGroup::start`] runs a master, its replica and three
//!   `redis-sentinel` processes watching them, to fail the master over.
//! - [`TestCa`] makes certificates at test time for a TLS `redis-server`.
//! - [`FaultProxy::start`] puts a TCP proxy in front of a server, which a
//!   test cuts, slows, stalls or makes lossy to partition one client from it;
//!   it counts the commands clients send through it.
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
mod tls;
pub use proxy::FaultProxy;
pub use sentinel::SentinelGroup;
pub use tls::{ServerCert, TestCa};

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
    /// The TLS port, for a server started with [`start_tls`](Self::start_tls).
    tls_port: Option<u16>,
    extra_args: Vec<String>,
    dir: TempDir,
    /// Where the certificate files of a TLS server are.
    tls_files: Option<TempDir>,
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

    /// Starts a server that also listens with TLS, on a second port
    /// ([`tls_url`](Self::tls_url)), presenting `cert`. The plain port
    /// stays open too, for the harness and for tests that look behind the
    /// client's back. Clients are not asked for certificates.
    ///
    /// # Panics
    /// As [`start`](Self::start), or if the certificate files cannot be
    /// written, or if this `redis-server` was built without TLS.
    pub fn start_tls(cert: &ServerCert) -> RedisServer {
        Self::try_start_tls(cert).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`start_tls`](Self::start_tls), answering why it could not.
    pub fn try_start_tls(cert: &ServerCert) -> Result<RedisServer, String> {
        let files = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
        let write = |name: &str, pem: &str| {
            let path = files.path().join(name);
            fs::write(&path, pem).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok::<_, String>(path.display().to_string())
        };
        let args = [
            "--tls-cert-file".to_string(),
            write("server.crt", &cert.cert_pem)?,
            "--tls-key-file".to_string(),
            write("server.key", &cert.key_pem)?,
            "--tls-ca-cert-file".to_string(),
            write("ca.crt", &cert.ca_pem)?,
            "--tls-auth-clients".to_string(),
            "no".to_string(),
        ];
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let tls_port = free_port(false)?;
            let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
            let tls_port_arg = tls_port.to_string();
            args.extend(["--tls-port", &tls_port_arg]);
            match Self::start_with(&args, false) {
                Ok(mut server) => {
                    server.tls_port = Some(tls_port);
                    server.tls_files = Some(files);
                    return Ok(server);
                }
                Err(e) if e.contains("Address already in use") => last_error = e,
                Err(e) => return Err(e),
            }
        }
        Err(format!(
            "redis-server with TLS could not get free ports in {PORT_ATTEMPTS} attempts: {last_error}"
        ))
    }

    /// Starts a server with extra `redis-server` arguments; `cluster` also
    /// requires the cluster bus port to be free.
    fn start_with(extra_args: &[&str], cluster: bool) -> Result<RedisServer, String> {
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port(cluster)?;
            let mut server = RedisServer {
                port,
                tls_port: None,
                tls_files: None,
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

    /// The TLS port, for a server started with [`start_tls`](Self::start_tls).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// `rediss://127.0.0.1:<tls port>/`.
    ///
    /// # Panics
    /// If the server was not started with [`start_tls`](Self::start_tls).
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("not a TLS server: use start_tls");
        format!("rediss://{HOST}:{port}/")
    }

    /// Sends one command (words separated by spaces, no quoting) on the
    /// plain port as the default user, and returns the raw reply (RESP),
    /// or `None` if nothing answered. For setting up a server (`ACL
    /// SETUSER ...`, `CONFIG SET ...`), not for reading values.
    pub fn command(&self, line: &str) -> Option<String> {
        command(self.port, line)
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

/// A Redis Cluster on 127.0.0.1, killed when dropped: masters only
/// ([`start`](Self::start)), or masters with replicas that take over when
/// their master dies ([`start_with_replicas`](Self::start_with_replicas)).
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// How long a cluster node may be silent before the others call it failed,
/// for a cluster of masters only: long, so a busy machine never triggers
/// a failover nobody asked for.
const NODE_TIMEOUT_MASTERS_ONLY: Duration = Duration::from_secs(5);
/// The same for a cluster with replicas, whose tests kill masters on
/// purpose: short, so that a replica takes over within a few seconds.
const NODE_TIMEOUT_WITH_REPLICAS: Duration = Duration::from_millis(1_500);

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
        Self::try_start_with(masters, 0, NODE_TIMEOUT_MASTERS_ONLY)
    }

    /// Starts `masters` masters and `replicas` replicas of each (nodes
    /// `0..masters` are the masters at first), with a short node timeout
    /// (1.5 s) so that a killed master's replica is promoted within
    /// seconds; waits until every replica has synchronised.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_with_replicas(masters: usize, replicas: usize) -> RedisCluster {
        Self::try_start_with(masters, replicas, NODE_TIMEOUT_WITH_REPLICAS)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start_with(
        masters: usize,
        replicas: usize,
        node_timeout: Duration,
    ) -> Result<RedisCluster, String> {
        if masters < 3 {
            return Err(format!(
                "a Redis Cluster needs at least 3 masters, not {masters}"
            ));
        }
        let node_timeout = node_timeout.as_millis().to_string();
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            &node_timeout,
        ];
        let nodes = (0..masters * (1 + replicas))
            .map(|_| RedisServer::start_with(&args, true))
            .collect::<Result<Vec<_>, _>>()?;
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(RedisServer::addr))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
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
        cluster.try_wait_healthy(START_TIMEOUT)?;
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

    /// The nodes, to kill, pause or restart one.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// The index (in [`nodes`](Self::nodes)) of the master that serves
    /// `key`'s hash slot now, as the running nodes see it.
    pub fn master_of(&self, key: &str) -> Option<usize> {
        let node = self.nodes.iter().find(|n| n.is_running())?;
        let slot: u16 = command(node.port, &format!("CLUSTER KEYSLOT {key}"))?
            .trim()
            .strip_prefix(':')?
            .parse()
            .ok()?;
        let reply = command(node.port, "CLUSTER NODES")?;
        let table = bulk_text(&reply)?;
        let line = table.lines().find(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 8
                && fields[2].contains("master")
                && !fields[2].contains("fail")
                && fields[8..].iter().any(|range| serves(range, slot))
        })?;
        let port: u16 = line
            .split_whitespace()
            .nth(1)?
            .split(['@', ','])
            .next()?
            .rsplit(':')
            .next()?
            .parse()
            .ok()?;
        self.nodes.iter().position(|n| n.port == port)
    }

    /// Waits until every running master's replicas have acknowledged all
    /// of its writes so far (their replication offsets caught up): Redis
    /// replicates asynchronously, and only what a replica has survives its
    /// master's death.
    ///
    /// # Panics
    /// If that does not happen within `timeout`.
    pub fn wait_replicated(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            loop {
                let info = command(node.port, "INFO replication").unwrap_or_default();
                if !info.contains("role:master") || replicas_caught_up(&info) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the replicas of {} did not catch up within {timeout:?}: {info}",
                    node.addr()
                );
                sleep(Duration::from_millis(10));
            }
        }
    }

    /// Waits until every running node reports `cluster_state:ok` and
    /// every running replica's link to its master is up: after a failover,
    /// the cluster serves every slot again.
    ///
    /// # Panics
    /// If that does not happen within `timeout`.
    pub fn wait_healthy(&self, timeout: Duration) {
        self.try_wait_healthy(timeout)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn try_wait_healthy(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            loop {
                let info = command(node.port, "CLUSTER INFO").unwrap_or_default();
                let replication = command(node.port, "INFO replication").unwrap_or_default();
                let replica = replication.contains("role:slave");
                if info.contains("cluster_state:ok")
                    && (!replica || replication.contains("master_link_status:up"))
                {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "cluster node {} not ok within {timeout:?}: {info}{replication}",
                        node.addr()
                    ));
                }
                sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

/// Whether every replica listed in a master's `INFO replication`
/// (`slave0:ip=..,port=..,state=online,offset=N,lag=0`) has reached the
/// master's `master_repl_offset`.
fn replicas_caught_up(info: &str) -> bool {
    let field = |line: &str, name: &str| -> Option<u64> {
        line.split([',', ':'])
            .find_map(|part| part.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    let Some(master) = info
        .lines()
        .find_map(|line| line.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        return false;
    };
    info.lines()
        .filter(|line| line.starts_with("slave") && line.contains("offset="))
        .all(|line| {
            line.contains("state=online") && field(line, "offset=").is_some_and(|o| o >= master)
        })
}

/// Whether a slot range of `CLUSTER NODES` (`5461-10922`, or `42`)
/// includes `slot`. Slots being migrated (`[...]`) do not count.
fn serves(range: &str, slot: u16) -> bool {
    let (low, high) = range.split_once('-').unwrap_or((range, range));
    match (low.parse::<u16>(), high.parse::<u16>()) {
        (Ok(low), Ok(high)) => (low..=high).contains(&slot),
        _ => false,
    }
}

/// The text of a bulk-string reply (`$<len>\r\n<text>\r\n`).
fn bulk_text(reply: &str) -> Option<&str> {
    let body = reply.strip_prefix('$')?;
    let (len, rest) = body.split_once("\r\n")?;
    rest.get(..len.parse::<usize>().ok()?)
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

/// Whether `reply` holds one whole RESP2 reply.
fn is_complete(reply: &[u8]) -> bool {
    reply_len(reply).is_some()
}

/// The length of the RESP2 reply at the start of `buf`, or `None` while it
/// is incomplete (or not RESP: the caller then stops at its read timeout).
fn reply_len(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let header = end + 2;
    let count = || -> Option<i64> { std::str::from_utf8(buf.get(1..end)?).ok()?.parse().ok() };
    match buf.first()? {
        b'$' => match count()? {
            n if n < 0 => Some(header),
            n => {
                let total = header + usize::try_from(n).ok()? + 2;
                (buf.len() >= total).then_some(total)
            }
        },
        b'*' => {
            let mut at = header;
            for _ in 0..count()?.max(0) {
                at += reply_len(buf.get(at..)?)?;
            }
            Some(at)
        }
        _ => Some(header),
    }
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
    fn replies_are_complete_only_when_whole() {
        assert_eq!(reply_len(b"+PONG\r\n"), Some(7));
        assert_eq!(reply_len(b"$3\r\nabc\r\n"), Some(9));
        assert_eq!(reply_len(b"$3\r\nab"), None);
        assert_eq!(reply_len(b"$-1\r\n"), Some(5));
        assert_eq!(reply_len(b"*2\r\n$1\r\na\r\n:5\r\n"), Some(15));
        assert_eq!(reply_len(b"*2\r\n$1\r\na\r\n"), None);
        assert_eq!(reply_len(b"*0\r\n"), Some(4));
    }

    #[test]
    fn cluster_slot_ranges() {
        assert!(serves("0-5460", 0) && serves("0-5460", 5460));
        assert!(!serves("0-5460", 5461));
        assert!(serves("42", 42) && !serves("42", 43));
        assert!(!serves("[93->-node]", 93));
    }

    #[test]
    fn a_stall_holds_replies_and_loss_kills_connections() {
        let server = RedisServer::start();
        let proxy = FaultProxy::start(&server.addr());
        let ping = || command(proxy.port(), "PING");
        assert_eq!(ping().as_deref(), Some("+PONG\r\n"));
        // `command` waits 500 ms for a reply: a 2 s stall outlasts it.
        proxy.stall(Duration::from_secs(2));
        assert_eq!(ping(), None, "a stalled proxy forwards nothing");
        sleep(Duration::from_secs(2));
        assert_eq!(ping().as_deref(), Some("+PONG\r\n"), "the stall ended");
        proxy.set_loss(1.0);
        assert_eq!(ping(), None, "every chunk lost");
        assert!(proxy.connections_lost() >= 1);
        proxy.set_loss(0.0);
        assert_eq!(ping().as_deref(), Some("+PONG\r\n"));
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
