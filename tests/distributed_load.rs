//! One load per key across processes: `get_or_load` with distributed
//! singleflight, in real OS processes (this test binary runs itself
//! again) on a real `redis-server`: a stampede of 8 processes loads once, a
//! holder killed mid-load is taken over when its lease runs out, refresh-
//! ahead refreshes a key once per interval across 4 processes and stops
//! when it goes idle, and a frozen Redis (SIGSTOP) costs a local load, not
//! availability. Loader calls are counted in Redis (`INCR`), across all
//! processes.
#![cfg(feature = "redis")]

mod hybrid_support;

use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cachex::lock::DistributedLock;
use cachex::store::hybrid::HybridStore;
use cachex::store::RedisStore;
use cachex::{Cache, Error, Store, StoreOp};
use cachex_testkit::FaultProxy;
use hybrid_support::{eventually, guarded, say, ChildProcess, RedisServer};
use tokio::time::Instant;

/// The child's instructions: `mode|store url|counter url|prefix` (the
/// store may be reached through a counting proxy; loader calls are
/// counted on the server itself).
const CHILD: &str = "CACHEX_DISTRIBUTED_CHILD";
/// How long a load takes.
const LOAD: Duration = Duration::from_millis(200);

async fn store_on(url: &str, prefix: &str, timeout: Duration) -> RedisStore<u64> {
    RedisStore::builder()
        .url(url)
        .prefix(prefix)
        .timeout(timeout)
        .build()
        .await
        .expect("connect")
}

/// A cache with distributed singleflight on `store`, and its lock.
fn cache_on(store: &RedisStore<u64>, lease: Duration) -> (Cache<u64>, DistributedLock) {
    let lock = DistributedLock::new(store).unwrap();
    let cache = Cache::builder()
        .store(store.clone())
        .default_ttl(Duration::from_secs(60))
        .distributed_singleflight(lock.clone(), lease)
        .refresh_ahead(Duration::from_millis(200), Duration::from_millis(600))
        .build();
    (cache, lock)
}

/// A connection to count loader calls with, apart from the store's.
async fn counter(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The loader: counts itself in Redis, takes `took`, answers the count.
fn loader(
    conn: &redis::aio::MultiplexedConnection,
    counter_key: &str,
    took: Duration,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, Error>> + Send>>
       + Send
       + Sync
       + Clone
       + 'static {
    let (conn, key) = (conn.clone(), counter_key.to_string());
    move || {
        let (mut conn, key) = (conn.clone(), key.clone());
        Box::pin(async move {
            let n: u64 = redis::cmd("INCR")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            tokio::time::sleep(took).await;
            Ok(n)
        })
    }
}

async fn loads(url: &str, counter_key: &str) -> u64 {
    let n: Option<u64> = redis::cmd("GET")
        .arg(counter_key)
        .query_async(&mut counter(url).await)
        .await
        .unwrap();
    n.unwrap_or(0)
}

/// Lines from the parent, read on a thread; the child exits when the
/// parent goes (stdin closes), so no child outlives a failed test.
fn from_parent() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
        std::process::exit(0);
    });
    rx
}

/// The child processes' side of every test here; passes at once when run
/// normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_child_role() {
    let Ok(job) = std::env::var(CHILD) else {
        return;
    };
    let [mode, url, counter_url, prefix]: [&str; 4] =
        job.split('|').collect::<Vec<_>>().try_into().unwrap();
    let mut parent = from_parent();
    let store = store_on(url, prefix, Duration::from_secs(1)).await;
    let lease = Duration::from_secs(if mode == "stampede" { 5 } else { 1 });
    let (cache, lock) = cache_on(&store, lease);
    let conn = counter(counter_url).await;
    // Refreshes well within their interval (200 ms).
    let took = if mode == "reader" { LOAD / 10 } else { LOAD };
    let load = loader(&conn, &format!("{prefix}-loads"), took);
    eventually("the subscriber", || async { lock.is_subscribed() }).await;
    match mode {
        // A long load, killed by the parent midway.
        "holder" => {
            let (holding, load) = (cache.clone(), load.clone());
            tokio::spawn(async move {
                holding
                    .get_or_load("hot", move || async move {
                        let n = load().await;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        n
                    })
                    .await
            });
            eventually("the load", || async {
                cache.stats().lock_acquisitions == 1
            })
            .await;
            say("LOADING");
            std::future::pending::<()>().await;
        }
        // Many tasks on one cold key, at the parent's signal; each
        // reports how long it took from the parent's last signal.
        "stampede" | "waiter" => {
            let tasks = if mode == "stampede" { 200 } else { 50 };
            say("READY");
            assert_eq!(parent.recv().await.as_deref(), Some("GO"));
            let mark = Arc::new(std::sync::Mutex::new(Instant::now()));
            let callers: Vec<_> = (0..tasks)
                .map(|_| {
                    let (cache, load, mark) = (cache.clone(), load.clone(), Arc::clone(&mark));
                    tokio::spawn(async move {
                        let value = cache.get_or_load("hot", load).await.unwrap();
                        (value, mark.lock().unwrap().elapsed())
                    })
                })
                .collect();
            if mode == "waiter" {
                eventually("the wait", || async { cache.stats().lock_waits == 1 }).await;
                say("WAITING");
                assert_eq!(parent.recv().await.as_deref(), Some("KILLED"));
                *mark.lock().unwrap() = Instant::now();
            }
            let mut values = Vec::new();
            let mut longest = Duration::ZERO;
            for caller in callers {
                let (value, took) = guarded("a caller", caller).await.unwrap();
                values.push(value);
                longest = longest.max(took);
            }
            values.dedup();
            let stats = cache.stats();
            say(&format!(
                "values={values:?} loads={} answered={} takeovers={} longest_ms={}",
                stats.loads,
                stats.lock_answered,
                stats.lock_takeovers,
                longest.as_millis()
            ));
        }
        // Reads a key until told to stop; reports refresh-ahead's stats.
        "reader" => {
            say("READY");
            assert_eq!(parent.recv().await.as_deref(), Some("GO"));
            loop {
                cache
                    .get_or_load_refreshed("hot", load.clone())
                    .await
                    .unwrap();
                tokio::select! {
                    line = parent.recv() => {
                        assert_eq!(line.as_deref(), Some("STOP"));
                        break;
                    }
                    () = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
            say("STOPPED");
            assert_eq!(parent.recv().await.as_deref(), Some("REPORT"));
            let stats = cache.stats();
            say(&format!(
                "refreshed={} skipped={} keys={} idle={}",
                stats.refresh_ahead,
                stats.refresh_ahead_skipped,
                stats.refresh_ahead_keys,
                stats.refresh_ahead_idle
            ));
        }
        other => panic!("unknown mode {other}"),
    }
}

fn spawn(mode: &str, server: &RedisServer, prefix: &str) -> ChildProcess {
    spawn_via(mode, &server.url(), server, prefix)
}

/// A child whose store talks to `server` at `url` (a proxy's, say).
fn spawn_via(mode: &str, url: &str, server: &RedisServer, prefix: &str) -> ChildProcess {
    let job = format!("{mode}|{url}|{}|{prefix}", server.url());
    ChildProcess::spawn("distributed_child_role", (CHILD, &job))
}

/// `key=value` fields of a child's report.
fn field(report: &str, name: &str) -> String {
    report
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {report}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_load_a_cold_key_once() {
    let server = RedisServer::start();
    // Each child talks to Redis through its own proxy, which counts the
    // commands it sends.
    let proxies: Vec<_> = (0..8).map(|_| FaultProxy::start(&server.addr())).collect();
    let mut children: Vec<_> = proxies
        .iter()
        .map(|proxy| spawn_via("stampede", &proxy.url(), &server, "herd"))
        .collect();
    for child in &mut children {
        assert_eq!(child.hear().await, "READY");
    }
    let before: Vec<u64> = proxies.iter().map(FaultProxy::commands).collect();
    for child in &mut children {
        child.tell("GO");
    }
    let mut answered = 0;
    let mut loaders = 0;
    let mut waiting_commands = Vec::new();
    for (mut child, (proxy, before)) in children.into_iter().zip(proxies.iter().zip(before)) {
        let report = child.hear().await;
        assert_eq!(
            field(&report, "values"),
            "[1]",
            "every caller got the value: {report}"
        );
        answered += field(&report, "answered").parse::<u64>().unwrap();
        let loaded = field(&report, "loads").parse::<u64>().unwrap();
        loaders += loaded;
        child.finish();
        if loaded == 0 {
            waiting_commands.push(proxy.commands() - before);
        }
    }
    assert_eq!(
        loads(&server.url(), "herd-loads").await,
        1,
        "one loader call in all"
    );
    assert_eq!(loaders, 1);
    assert_eq!(answered, 7, "the seven other processes read the value");
    // 200 callers, one read, one attempt on the lock, one read of the
    // value (and at most a subscriber PING or two): not one read each.
    for commands in waiting_commands {
        assert!((3..=5).contains(&commands), "{commands} commands");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_is_taken_over_once_its_lease_runs_out() {
    let server = RedisServer::start();
    let mut holder = spawn("holder", &server, "crash");
    assert_eq!(holder.hear().await, "LOADING");
    let mut waiters: Vec<_> = (0..3).map(|_| spawn("waiter", &server, "crash")).collect();
    for waiter in &mut waiters {
        assert_eq!(waiter.hear().await, "READY");
        waiter.tell("GO");
        assert_eq!(waiter.hear().await, "WAITING");
    }
    holder.kill();
    for waiter in &mut waiters {
        waiter.tell("KILLED");
    }
    let (mut takeovers, mut answered) = (0, 0);
    for mut waiter in waiters {
        let report = waiter.hear().await;
        // The second load's count: the holder's load was the first.
        assert_eq!(field(&report, "values"), "[2]", "{report}");
        takeovers += field(&report, "takeovers").parse::<u64>().unwrap();
        answered += field(&report, "answered").parse::<u64>().unwrap();
        // Lease (1 s) + load (200 ms) + a generous margin for a shared
        // machine: a bound on stranding, not a performance claim.
        let longest: u64 = field(&report, "longest_ms").parse().unwrap();
        assert!(
            longest < 1_200 + 1_500,
            "a caller waited {longest} ms: {report}"
        );
        waiter.finish();
    }
    assert_eq!(loads(&server.url(), "crash-loads").await, 2);
    assert_eq!((takeovers, answered), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_refreshes_once_per_interval_across_four_processes() {
    let server = RedisServer::start();
    let url = server.url();
    let mut readers: Vec<_> = (0..4).map(|_| spawn("reader", &server, "ahead")).collect();
    for reader in &mut readers {
        assert_eq!(reader.hear().await, "READY");
    }
    for reader in &mut readers {
        reader.tell("GO");
    }
    // Read continuously: about one refresh per 200 ms interval in all
    // (windows of the server's clock), where four processes refreshing
    // on their own would make four.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = loads(&url, "ahead-loads").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = loads(&url, "ahead-loads").await - before;
    assert!(
        (8..=11).contains(&during),
        "{during} refreshes in 10 intervals"
    );
    // Left idle: refreshing stops after `stop_after` (600 ms).
    for reader in &mut readers {
        reader.tell("STOP");
        assert_eq!(reader.hear().await, "STOPPED");
    }
    tokio::time::sleep(Duration::from_millis(600 + 600)).await;
    let stopped = loads(&url, "ahead-loads").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        loads(&url, "ahead-loads").await,
        stopped,
        "an idle key is not refreshed"
    );
    let mut refreshed = 0;
    for mut reader in readers {
        reader.tell("REPORT");
        let report = reader.hear().await;
        assert_eq!(field(&report, "keys"), "0", "{report}");
        assert_eq!(field(&report, "idle"), "1", "{report}");
        refreshed += field(&report, "refreshed").parse::<u64>().unwrap();
        reader.finish();
    }
    assert_eq!(
        refreshed + 1,
        stopped,
        "every load but the first was a refresh"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_a_local_load_within_the_timeouts() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(200);
    let store = store_on(&server.url(), "frozen", timeout).await;
    let (cache, lock) = cache_on(&store, Duration::from_secs(5));
    let strict = Cache::builder()
        .store(store.clone())
        .distributed_singleflight(lock.clone(), Duration::from_secs(5))
        .distributed_strict(true)
        .build();
    eventually("the subscriber", || async { lock.is_subscribed() }).await;
    let calls = Arc::new(AtomicU64::new(0));
    let load = |value: u64| {
        let calls = Arc::clone(&calls);
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(value)
        }
    };
    assert_eq!(cache.get_or_load("a", load(1)).await.unwrap(), 1);
    assert_eq!(cache.stats().lock_acquisitions, 1);

    server.pause();
    let refused = strict.get_or_load("s", load(9)).await.unwrap_err();
    assert_eq!(refused.store_op(), Some(StoreOp::Lock), "{refused}");
    for (key, value) in [("b", 2), ("c", 3)] {
        let began = Instant::now();
        assert_eq!(cache.get_or_load(key, load(value)).await.unwrap(), value);
        // Read, lock and write each time out at most once: a bound on
        // hanging, not a performance claim.
        let took = began.elapsed();
        assert!(
            took < timeout * 3 + Duration::from_secs(1),
            "{key}: {took:?}"
        );
    }
    server.resume();
    let stats = cache.stats();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(stats.lock_fallbacks, 2, "{stats:?}");
    assert_eq!(strict.stats().lock_refusals, 1);
    // The second fallback did not wait for Redis: the lock was paused.
    assert!(lock.stats().skipped_while_down >= 1, "{:?}", lock.stats());
}

/// Two caches on one store stand for two processes: each has its own
/// in-process singleflight and its own lock handle.
async fn two_processes(server: &RedisServer, prefix: &str) -> [(Cache<u64>, DistributedLock); 2] {
    let mut pair = Vec::new();
    for _ in 0..2 {
        let store = store_on(&server.url(), prefix, Duration::from_secs(1)).await;
        let (cache, lock) = cache_on(&store, Duration::from_secs(5));
        eventually("the subscriber", || async { lock.is_subscribed() }).await;
        pair.push((cache, lock));
    }
    pair.try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_dropped_load_is_taken_over_by_a_waiting_process() {
    let server = RedisServer::start();
    let [(a, _), (b, _)] = two_processes(&server, "fail").await;
    for how in ["fails", "is dropped"] {
        let key = format!("k-{how}");
        let held = a.stats().lock_acquisitions;
        let holder = {
            let (a, key) = (a.clone(), key.clone());
            let how = how.to_string();
            tokio::spawn(async move {
                let load = a.get_or_load(&key, move || async move {
                    tokio::time::sleep(LOAD).await;
                    Err::<u64, _>(std::io::Error::other("database down"))
                });
                if how == "fails" {
                    load.await.map(|_| ())
                } else {
                    // The caller gives up midway: its load is dropped.
                    let _ = tokio::time::timeout(LOAD / 2, load).await;
                    Ok(())
                }
            })
        };
        eventually("a holds the lock", || async {
            a.stats().lock_acquisitions > held
        })
        .await;
        let waited = b.stats().lock_takeovers;
        let value = guarded(
            "the waiter",
            b.get_or_load(&key, || async { Ok::<_, std::io::Error>(7) }),
        )
        .await
        .unwrap();
        assert_eq!(value, 7, "{how}");
        assert_eq!(b.stats().lock_takeovers, waited + 1, "{how}");
        let outcome = holder.await.unwrap();
        assert_eq!(outcome.is_err(), how == "fails");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_gives_up_on_its_own() {
    let server = RedisServer::start();
    let [(a, _), (b, lock_b)] = two_processes(&server, "cancel").await;
    let holder = {
        let a = a.clone();
        tokio::spawn(async move {
            a.get_or_load("k", || async {
                tokio::time::sleep(LOAD * 2).await;
                Ok::<_, std::io::Error>(5)
            })
            .await
        })
    };
    eventually("a loads", || async { a.stats().lock_acquisitions == 1 }).await;
    let gave_up = tokio::time::timeout(
        LOAD / 4,
        b.get_or_load("k", || async { Ok::<_, std::io::Error>(6) }),
    )
    .await;
    assert!(gave_up.is_err());
    // Another caller of b still gets a's value; a was not disturbed.
    assert_eq!(
        b.get_or_load("k", || async { Ok::<_, std::io::Error>(6) })
            .await
            .unwrap(),
        5
    );
    assert_eq!(holder.await.unwrap().unwrap(), 5);
    assert_eq!(b.stats().loads, 0);
    assert!(lock_b.stats().woken_by_message >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_stores_load_once_across_processes_too() {
    let server = RedisServer::start();
    let mut caches = Vec::new();
    for _ in 0..2 {
        let l2 = store_on(&server.url(), "hyb", Duration::from_secs(1)).await;
        let lock = DistributedLock::new(&l2).unwrap();
        let hybrid = HybridStore::builder(l2).build().await.unwrap();
        let cache: Cache<u64> = Cache::builder()
            .store(hybrid)
            .distributed_singleflight(lock.clone(), Duration::from_secs(5))
            .build();
        eventually("the subscriber", || async { lock.is_subscribed() }).await;
        caches.push(cache);
    }
    let calls = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let cache = caches[i % 2].clone();
            let calls = Arc::clone(&calls);
            tokio::spawn(async move {
                cache
                    .get_or_load("k", move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(LOAD / 2).await;
                        Ok::<_, std::io::Error>(11)
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(guarded("a caller", task).await.unwrap().unwrap(), 11);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[cfg(feature = "prometheus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_lock_for_the_caches_that_use_it() {
    use cachex::prometheus_client::encoding::text::encode;
    use cachex::prometheus_client::registry::Registry;
    use cachex::CacheMetrics;

    let server = RedisServer::start();
    let [(a, _), (b, _)] = two_processes(&server, "metrics").await;
    let plain: Cache<u64> = Cache::builder().name("plain").build();
    let mut registry = Registry::default();
    let metrics = CacheMetrics::new();
    metrics.register(&mut registry);
    assert!(metrics.add(&b) && metrics.add(&plain));
    let holder = {
        let a = a.clone();
        tokio::spawn(async move {
            a.get_or_load("k", || async {
                tokio::time::sleep(LOAD).await;
                Ok::<_, std::io::Error>(1)
            })
            .await
        })
    };
    eventually("a loads", || async { a.stats().lock_acquisitions == 1 }).await;
    let answer = b.get_or_load("k", || async { Ok::<_, std::io::Error>(2) });
    assert_eq!(answer.await.unwrap(), 1);
    holder.await.unwrap().unwrap();
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    for line in [
        "cachex_lock_acquisitions_total{cache=\"default\"} 0",
        "cachex_lock_waits_total{cache=\"default\"} 1",
        "cachex_lock_answered_total{cache=\"default\"} 1",
        "cachex_lock_fallbacks_total{cache=\"default\"} 0",
        "cachex_refresh_ahead_keys{cache=\"default\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    assert!(text.contains("# UNIT cachex_lock_wait_seconds seconds\n"));
    assert!(!text.contains("cachex_lock_waits_total{cache=\"plain\"}"));
}

/// A store whose first read answers what Redis held then, but returns only
/// when the test allows it: a read that misses just before another
/// process's load lands.
struct HeldBackRead {
    inner: RedisStore<u64>,
    gate: tokio::sync::Semaphore,
    first: std::sync::atomic::AtomicBool,
}

impl Store<u64> for HeldBackRead {
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> cachex::store::StoreFuture<'a, cachex::Result<Option<cachex::store::Stored<u64>>>> {
        cachex::store::StoreFuture::new(async move {
            let found = self.inner.get(key).await;
            if self.first.swap(false, Ordering::SeqCst) {
                let _ = self.gate.acquire().await.unwrap();
            }
            found
        })
    }
    fn set<'a>(
        &'a self,
        key: &'a str,
        entry: cachex::Envelope<u64>,
        ttl: Option<Duration>,
    ) -> cachex::store::StoreFuture<'a, cachex::Result<()>> {
        self.inner.set(key, entry, ttl)
    }
    fn delete<'a>(&'a self, key: &'a str) -> cachex::store::StoreFuture<'a, cachex::Result<bool>> {
        self.inner.delete(key)
    }
    fn clear(&self) -> cachex::store::StoreFuture<'_, cachex::Result<()>> {
        self.inner.clear()
    }
    fn remaining_ttl<'a>(
        &'a self,
        key: &'a str,
    ) -> cachex::store::StoreFuture<'a, cachex::Result<Option<Option<Duration>>>> {
        self.inner.remaining_ttl(key)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_stored_between_the_read_and_the_lock_is_not_loaded_again() {
    let server = RedisServer::start();
    let [(a, _), _] = two_processes(&server, "late").await;
    let inner = store_on(&server.url(), "late", Duration::from_secs(1)).await;
    let lock = DistributedLock::new(&inner).unwrap();
    let late = Arc::new(HeldBackRead {
        inner,
        gate: tokio::sync::Semaphore::new(0),
        first: std::sync::atomic::AtomicBool::new(true),
    });
    let b: Cache<u64> = Cache::builder()
        .store(Arc::clone(&late))
        .distributed_singleflight(lock, Duration::from_secs(5))
        .build();
    let calls = Arc::new(AtomicU64::new(0));
    let reader = {
        let (b, calls) = (b.clone(), Arc::clone(&calls));
        tokio::spawn(async move {
            b.get_or_load("k", move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(2)
            })
            .await
        })
    };
    // b's read has missed; a loads, stores and releases meanwhile.
    eventually("b's read", || async { !late.first.load(Ordering::SeqCst) }).await;
    let value = a.get_or_load("k", || async { Ok::<_, std::io::Error>(1) });
    assert_eq!(value.await.unwrap(), 1);
    late.gate.add_permits(1);
    // b takes the free lock, reads again, and finds a's value.
    assert_eq!(guarded("b", reader).await.unwrap().unwrap(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let stats = b.stats();
    assert_eq!((stats.lock_answered, stats.loads), (1, 0), "{stats:?}");
}
