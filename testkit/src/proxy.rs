//! A TCP proxy between a client and a server that a test can cut.
//!
//! The machines these tests run on have no `tc netem`, and a partition
//! must affect one client without touching the server others use. So the
//! client under test connects through a [`FaultProxy`], and the test
//! decides what the network does: [`cut`](FaultProxy::cut) closes every
//! proxied connection and refuses new ones (what a client sees when the
//! server's host is gone), [`drop_connections`](FaultProxy::drop_connections)
//! only resets the connections open now, [`restore`](FaultProxy::restore)
//! listens again on the same port, and [`set_latency`](FaultProxy::set_latency)
//! delays every chunk of bytes forwarded, both ways (a slow or distant
//! network; with jitter, chunks keep their order). It also counts the
//! Redis commands clients send through it ([`commands`](FaultProxy::commands)).
//! Two faults model a
//! lossy network as a TCP client sees it (TCP itself never delivers a
//! partial or reordered stream): [`set_loss`](FaultProxy::set_loss)
//! kills a connection at a random forwarded chunk, request or reply (so a
//! write may have been applied although its reply never arrives), and
//! [`stall`](FaultProxy::stall) holds every byte for a while, both ways,
//! as retransmissions after lost packets do.
//!
//! Plain threads, no async runtime: the proxy must keep forwarding while
//! the test's runtime is busy or paused.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::resp::CommandCounter;
use super::HOST;

/// How often the accept loop looks for new connections.
const ACCEPT_POLL: Duration = Duration::from_millis(2);

/// A TCP proxy on a free port of 127.0.0.1 in front of `upstream`; it
/// stops when dropped.
///
/// ```no_run
/// let server = cachex_testkit::RedisServer::start();
/// let proxy = cachex_testkit::FaultProxy::start(&server.addr());
/// // ... a client connected to proxy.url() ...
/// proxy.cut(); // the client's connections drop, new ones are refused
/// proxy.restore(); // reachable again
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    upstream: String,
    /// `None` while cut: the port then refuses connections.
    listener: Mutex<Option<TcpListener>>,
    /// Both sides of every proxied connection, to shut them down on a cut.
    open: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
    /// Delay added to every forwarded chunk, and the most jitter on top,
    /// in microseconds.
    latency_us: AtomicU64,
    jitter_us: AtomicU64,
    /// Commands clients sent through the proxy.
    commands: AtomicU64,
    /// Chance, in parts per million, that a forwarded chunk kills its
    /// connection instead of going through.
    loss_ppm: AtomicU64,
    /// Connections killed by [`FaultProxy::set_loss`] so far.
    lost: AtomicU64,
    /// Until when no byte is forwarded, either way.
    stall_until: Mutex<Option<Instant>>,
}

impl FaultProxy {
    /// Starts forwarding connections on a free loopback port to
    /// `upstream` (`host:port`).
    ///
    /// # Panics
    /// If no port can be bound.
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind((HOST, 0)).expect("bind a proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            listener: Mutex::new(Some(listener)),
            open: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            latency_us: AtomicU64::new(0),
            jitter_us: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            loss_ppm: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            stall_until: Mutex::new(None),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || accept_loop(&shared))
        };
        FaultProxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// `redis://127.0.0.1:<port>/`: the URL a Redis client uses to go
    /// through the proxy.
    pub fn url(&self) -> String {
        format!("redis://{HOST}:{}/", self.port)
    }

    /// The Redis commands clients have sent through the proxy so far, on
    /// all their connections: each command of a pipeline counts, a script
    /// (`EVALSHA`) counts once whatever it runs.
    pub fn commands(&self) -> u64 {
        self.shared.commands.load(Ordering::Relaxed)
    }

    /// A partition: every proxied connection is shut down, and the port
    /// refuses new connections until [`restore`](Self::restore).
    pub fn cut(&self) {
        *lock(&self.shared.listener) = None;
        self.drop_connections();
    }

    /// Resets the connections open now; new ones are still accepted (a
    /// network blip, or a server-side `CLIENT KILL`).
    pub fn drop_connections(&self) {
        for stream in lock(&self.shared.open).drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Delays every chunk forwarded from now on, either way, by `latency`
    /// plus a random share of `jitter`. `Duration::ZERO` twice: no delay.
    pub fn set_latency(&self, latency: Duration, jitter: Duration) {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.shared.latency_us.store(us(latency), Ordering::Relaxed);
        self.shared.jitter_us.store(us(jitter), Ordering::Relaxed);
    }

    /// Loss: from now on, each chunk of bytes forwarded (either way: a
    /// request, or a reply) kills its connection instead, with probability
    /// `fraction` (0 to 1). The chunk is not delivered: a request lost this
    /// way never ran, a reply lost this way belongs to a command that did.
    /// `0.0`: no loss.
    pub fn set_loss(&self, fraction: f64) {
        let ppm = (fraction.clamp(0.0, 1.0) * 1_000_000.0).round() as u64;
        self.shared.loss_ppm.store(ppm, Ordering::Relaxed);
    }

    /// Connections killed by [`set_loss`](Self::set_loss) so far.
    pub fn connections_lost(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }

    /// A stall: no byte is forwarded, either way, for `hold` from now;
    /// what arrives meanwhile is delivered, in order, when it ends.
    /// Connections stay open. Returns at once.
    pub fn stall(&self, hold: Duration) {
        *lock(&self.shared.stall_until) = Some(Instant::now() + hold);
    }

    /// Listens again on the same port after a [`cut`](Self::cut).
    ///
    /// # Panics
    /// If the port cannot be bound again within a few seconds.
    pub fn restore(&self) {
        let mut listener = lock(&self.shared.listener);
        if listener.is_some() {
            return;
        }
        for _ in 0..1_000 {
            if let Ok(bound) = TcpListener::bind(SocketAddr::from((HOST, self.port))) {
                bound.set_nonblocking(true).expect("non-blocking listener");
                *listener = Some(bound);
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        panic!("the proxy could not listen on port {} again", self.port);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.cut();
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        let accepted = match &*lock(&shared.listener) {
            Some(listener) => listener.accept().map(|(client, _)| client),
            None => Err(ErrorKind::WouldBlock.into()),
        };
        match accepted {
            Ok(client) => forward(shared, client),
            Err(_) => thread::sleep(ACCEPT_POLL),
        }
    }
}

/// Connects to the upstream for `client` and copies bytes both ways on
/// two threads; a client whose upstream cannot be reached is dropped.
fn forward(shared: &Arc<Shared>, client: TcpStream) {
    let Ok(server) = TcpStream::connect(&shared.upstream) else {
        return;
    };
    let _ = client.set_nonblocking(false);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    {
        let mut open = lock(&shared.open);
        for stream in [&client, &server] {
            if let Ok(clone) = stream.try_clone() {
                open.push(clone);
            }
        }
    }
    let (up, down) = (Arc::clone(shared), Arc::clone(shared));
    thread::spawn(move || pipe(&up, client, server2, Some(CommandCounter::default())));
    thread::spawn(move || pipe(&down, server, client2, None));
}

/// Copies `from` into `to` until either side closes, then closes both;
/// counts the commands in the bytes if given a counter (the client's side).
fn pipe(
    shared: &Shared,
    mut from: TcpStream,
    mut to: TcpStream,
    mut counter: Option<CommandCounter>,
) {
    let mut buf = [0u8; 16 * 1024];
    let mut random = seed();
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                shared.wait_out_stall();
                let loss = shared.loss_ppm.load(Ordering::Relaxed);
                if loss > 0 && next(&mut random) % 1_000_000 < loss {
                    shared.lost.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                if let Some(counter) = &mut counter {
                    let commands = counter.feed(&buf[..n]);
                    shared.commands.fetch_add(commands, Ordering::Relaxed);
                }
                let delay = shared.latency_us.load(Ordering::Relaxed)
                    + match shared.jitter_us.load(Ordering::Relaxed) {
                        0 => 0,
                        jitter => next(&mut random) % (jitter + 1),
                    };
                if delay > 0 {
                    thread::sleep(Duration::from_micros(delay));
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Shared {
    /// Sleeps until a [stall](FaultProxy::stall) set now or during the
    /// wait is over.
    fn wait_out_stall(&self) {
        loop {
            let until = *lock(&self.stall_until);
            match until {
                Some(until) if until > Instant::now() => {
                    thread::sleep(until.saturating_duration_since(Instant::now()));
                }
                _ => return,
            }
        }
    }
}

/// A seed for [`next`], different per pipe.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    u64::from(nanos) | 1
}

/// xorshift64: jitter needs spread, not quality.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A poisoned lock only means another thread panicked mid-test; the data
/// (sockets) is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
