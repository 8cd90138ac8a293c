//! The distributed lock on real Redis: only the token's holder releases or
//! extends, leases expire, renewal keeps a long holder's lock, fencing
//! tokens only grow, waiters are woken by the release and, when the
//! message is lost, by the lease running out; standalone, Cluster and
//! Sentinel.
#![cfg(feature = "redis")]

mod redis_support;

use std::time::Duration;

use cachex::lock::{DistributedLock, LockToken, LockUnavailable};
use cachex::store::RedisStore;
use cachex_testkit::{RedisCluster, SentinelGroup};
use redis_support::{raw, raw_cmd, source, store, RedisServer};

/// Generous: only a guard against a hang, never a performance claim.
const DEADLINE: Duration = Duration::from_secs(20);

async fn lock_on(server: &RedisServer, prefix: &str) -> DistributedLock {
    DistributedLock::new(&store::<u64>(server, prefix).await).unwrap()
}

async fn guarded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// Polls `check` until it holds; panics with `what` after [`DEADLINE`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    guarded(what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn only_the_holder_releases_or_extends() {
    let server = RedisServer::start();
    let lock = lock_on(&server, "tok").await;
    let guard = lock.acquire("a", Duration::from_secs(5)).await.unwrap();
    let bogus = LockToken::from("not-the-token");
    assert!(!lock.release("a", &bogus).await.unwrap());
    assert!(!lock
        .extend("a", &bogus, Duration::from_secs(60))
        .await
        .unwrap());
    let mut conn = raw(&server).await;
    let key = lock.lock_key("a").unwrap();
    let left: i64 = raw_cmd(&mut conn, &[b"PTTL", key.as_bytes()]).await;
    assert!(
        (1..=5_000).contains(&left),
        "a wrong token extended: {left}"
    );
    let stored: String = raw_cmd(&mut conn, &[b"GET", key.as_bytes()]).await;
    assert_eq!(stored, guard.token().as_str());

    // The right token works, once.
    assert!(lock
        .extend("a", guard.token(), Duration::from_secs(7))
        .await
        .unwrap());
    let token = guard.token().clone();
    assert!(guard.release().await.unwrap());
    assert!(!lock.release("a", &token).await.unwrap());
    let exists: i64 = raw_cmd(&mut conn, &[b"EXISTS", key.as_bytes()]).await;
    assert_eq!(exists, 0);
    assert_eq!(lock.stats().release_missed, 2);
}

#[tokio::test]
async fn a_dead_holders_lease_expires_and_its_waiter_takes_over() {
    let server = RedisServer::start();
    let lock = lock_on(&server, "exp").await;
    // A holder that died: its token, a 300 ms lease, and no one to release.
    let mut conn = raw(&server).await;
    let key = lock.lock_key("job").unwrap();
    let _: () = raw_cmd(&mut conn, &[b"SET", key.as_bytes(), b"dead", b"PX", b"300"]).await;
    assert!(lock
        .try_acquire("job", Duration::from_secs(5), Duration::ZERO)
        .await
        .unwrap()
        .is_none());
    let guard = guarded("the waiter", lock.acquire("job", Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(guard.is_held());
    let stats = lock.stats();
    assert_eq!(stats.woken_by_message, 0, "nobody released: {stats:?}");
    assert!(stats.woken_by_timer >= 1, "{stats:?}");
    assert!(stats.busy >= 2, "{stats:?}");
}

#[tokio::test]
async fn a_lock_key_without_expiry_is_waited_on_a_lease_at_a_time() {
    let server = RedisServer::start();
    let lock = lock_on(&server, "noexp").await;
    // Not a lock's own doing (no expiry): someone else's key in the way.
    let mut conn = raw(&server).await;
    let key = lock.lock_key("k").unwrap();
    let _: () = raw_cmd(&mut conn, &[b"SET", key.as_bytes(), b"foreign"]).await;
    let wait = Duration::from_millis(300);
    let got = lock
        .try_acquire("k", Duration::from_secs(5), wait)
        .await
        .unwrap();
    assert!(got.is_none());
    // One attempt, then a wait bounded by the deadline, then one more: no
    // spinning on a "remaining lease" of -1.
    assert!(lock.stats().busy <= 3, "{:?}", lock.stats());
}

#[tokio::test]
async fn renewal_keeps_a_long_holders_lock() {
    let server = RedisServer::start();
    let holder = lock_on(&server, "renew").await;
    let other = lock_on(&server, "renew").await;
    let lease = Duration::from_millis(150);
    let guard = holder.acquire("long", lease).await.unwrap();
    // Four leases long: without renewal the lock would have expired.
    for _ in 0..8 {
        tokio::time::sleep(lease / 2).await;
        assert!(other
            .try_acquire("long", lease, Duration::ZERO)
            .await
            .unwrap()
            .is_none());
    }
    assert!(guard.is_held());
    assert!(holder.stats().extended >= 3, "{:?}", holder.stats());
    assert!(guard.release().await.unwrap());
    assert!(other
        .try_acquire("long", lease, Duration::ZERO)
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn a_guard_that_lost_its_lock_knows_it() {
    let server = RedisServer::start();
    let lock = lock_on(&server, "lost").await;
    let guard = lock.acquire("x", Duration::from_millis(90)).await.unwrap();
    // Someone deletes it behind the holder's back (a `clear`, an operator).
    let mut conn = raw(&server).await;
    let key = lock.lock_key("x").unwrap();
    let _: i64 = raw_cmd(&mut conn, &[b"DEL", key.as_bytes()]).await;
    eventually("the renewal notices", || !guard.is_held()).await;
    assert_eq!(lock.stats().lost, 1);
    assert!(!guard.release().await.unwrap());
}

#[tokio::test]
async fn fencing_tokens_only_grow() {
    let server = RedisServer::start();
    let a = lock_on(&server, "fence").await;
    let b = lock_on(&server, "fence").await;
    let mut last = 0;
    for i in 0..20 {
        let lock = if i % 2 == 0 { &a } else { &b };
        let guard = lock.acquire("f", Duration::from_secs(5)).await.unwrap();
        assert!(
            guard.fencing_token() > last,
            "{} after {last}",
            guard.fencing_token()
        );
        last = guard.fencing_token();
        guard.release().await.unwrap();
    }
    // The server's clock behind the last token (a clock step, a failover
    // to a server whose clock lags): the kept token still wins.
    let mut conn = raw(&server).await;
    let fence = format!("{}:fence", a.lock_key("f").unwrap());
    let ahead = (last + 1_000_000_000).to_string();
    let _: () = raw_cmd(&mut conn, &[b"SET", fence.as_bytes(), ahead.as_bytes()]).await;
    let guard = a.acquire("f", Duration::from_secs(5)).await.unwrap();
    assert_eq!(guard.fencing_token(), last + 1_000_000_001);
    last = guard.fencing_token();
    guard.release().await.unwrap();
    // The fence key gone (a `clear` of the prefix): tokens do not restart.
    let _: i64 = raw_cmd(&mut conn, &[b"DEL", fence.as_bytes()]).await;
    let _: () = raw_cmd(&mut conn, &[b"SET", fence.as_bytes(), b"1"]).await;
    let guard = b.acquire("f", Duration::from_secs(5)).await.unwrap();
    assert!(guard.fencing_token() > 1);
    drop(guard);
    let _ = last;
}

#[tokio::test]
async fn waiters_are_woken_by_the_release() {
    let server = RedisServer::start();
    let holder = lock_on(&server, "wake").await;
    let waiter = lock_on(&server, "wake").await;
    eventually("the waiter's subscriber", || waiter.is_subscribed()).await;
    let guard = holder.acquire("w", Duration::from_secs(10)).await.unwrap();
    let task = {
        let waiter = waiter.clone();
        tokio::spawn(async move { waiter.acquire("w", Duration::from_secs(10)).await })
    };
    eventually("the waiter waits", || waiter.stats().busy >= 1).await;
    assert!(guard.release().await.unwrap());
    let got = guarded("the waiter", task).await.unwrap().unwrap();
    assert!(got.is_held());
    let stats = waiter.stats();
    // The 10 s lease never ran out: the message woke it.
    assert_eq!(stats.woken_by_message, 1, "{stats:?}");
    assert_eq!(stats.woken_by_timer, 0, "{stats:?}");
    assert!(stats.wait_time > Duration::ZERO);
}

#[tokio::test]
async fn a_lost_message_delays_a_waiter_by_the_lease_at_most() {
    let server = RedisServer::start();
    let holder = lock_on(&server, "lostmsg").await;
    let waiter = lock_on(&server, "lostmsg").await;
    eventually("the waiter's subscriber", || waiter.is_subscribed()).await;
    let guard = holder
        .acquire("m", Duration::from_millis(400))
        .await
        .unwrap();
    let task = {
        let waiter = waiter.clone();
        tokio::spawn(async move { waiter.acquire("m", Duration::from_secs(5)).await })
    };
    eventually("the waiter waits", || waiter.stats().busy >= 1).await;
    // The waiter's mark goes: the release will publish nothing.
    let mut conn = raw(&server).await;
    let marker = format!("{}:w", holder.lock_key("m").unwrap());
    let _: i64 = raw_cmd(&mut conn, &[b"DEL", marker.as_bytes()]).await;
    assert!(guard.release().await.unwrap());
    let got = guarded("the waiter", task).await.unwrap().unwrap();
    drop(got);
    let stats = waiter.stats();
    assert_eq!(stats.woken_by_message, 0, "{stats:?}");
    assert!(stats.woken_by_timer >= 1, "{stats:?}");
    assert_eq!(holder.stats().released, 1);
}

#[tokio::test]
async fn a_dropped_subscription_wakes_its_waiters_to_look_again() {
    let server = RedisServer::start();
    let holder = lock_on(&server, "drop").await;
    let waiter = lock_on(&server, "drop").await;
    eventually("the waiter's subscriber", || waiter.is_subscribed()).await;
    let lease = Duration::from_secs(3);
    let guard = holder.acquire("d", lease).await.unwrap();
    let task = {
        let waiter = waiter.clone();
        tokio::spawn(async move { waiter.acquire("d", Duration::from_secs(5)).await })
    };
    eventually("the waiter waits", || waiter.stats().busy >= 1).await;
    // Every subscriber connection dropped, and the lock released at once:
    // the message may well be lost.
    let mut conn = raw(&server).await;
    let _: i64 = raw_cmd(&mut conn, &[b"CLIENT", b"KILL", b"TYPE", b"pubsub"]).await;
    assert!(guard.release().await.unwrap());
    // Well within the lease: woken by the resubscription (or the message).
    let got = tokio::time::timeout(lease, task)
        .await
        .expect("the waiter waited out the whole lease")
        .unwrap()
        .unwrap();
    drop(got);
    let stats = waiter.stats();
    assert!(stats.subscription_losses >= 1, "{stats:?}");
    assert_eq!(stats.woken_by_timer, 0, "{stats:?}");
    eventually("the subscriber is back", || waiter.is_subscribed()).await;
}

#[tokio::test]
async fn bad_arguments_are_refused_with_a_reason() {
    let server = RedisServer::start();
    let lock = lock_on(&server, "bad").await;
    let zero = lock.acquire("a", Duration::ZERO).await.unwrap_err();
    assert!(zero.to_string().contains("lock key `a`"), "{zero}");
    assert!(lock.acquire("", Duration::from_secs(1)).await.is_err());
    assert!(lock.acquire("}x", Duration::from_secs(1)).await.is_err());
    let braces: RedisStore<u64> = RedisStore::builder()
        .url(server.url())
        .prefix("a{}b")
        .build()
        .await
        .unwrap();
    assert!(DistributedLock::new(&braces).is_err());
}

#[tokio::test]
async fn redis_down_fails_fast_then_pauses() {
    let mut server = RedisServer::start();
    let lock = DistributedLock::builder(&store::<u64>(&server, "down").await)
        .retry_after(Duration::from_secs(30))
        .build()
        .unwrap();
    server.kill();
    let first = lock
        .try_acquire("a", Duration::from_secs(1), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(first.is_store());
    let second = lock
        .try_acquire("a", Duration::from_secs(1), Duration::ZERO)
        .await
        .unwrap_err();
    source::<LockUnavailable>(&second);
    let stats = lock.stats();
    assert_eq!((stats.errors, stats.skipped_while_down), (1, 1));
}

/// Two handles contending for locks whose names land on different slots.
async fn contend(a: DistributedLock, b: DistributedLock) {
    for name in ["user:1", "user:2", "order:{7}", "x"] {
        let guard = a.acquire(name, Duration::from_secs(5)).await.unwrap();
        let busy = b.stats().busy;
        let task = {
            let b = b.clone();
            let name = name.to_string();
            tokio::spawn(async move { b.acquire(&name, Duration::from_secs(5)).await })
        };
        eventually("b waits", || b.stats().busy > busy).await;
        let fence = guard.fencing_token();
        assert!(guard.release().await.unwrap());
        let got = guarded("b", task).await.unwrap().unwrap();
        assert!(got.fencing_token() > fence);
        got.release().await.unwrap();
    }
    let stats = b.stats();
    assert_eq!(stats.woken_by_message, 4, "{stats:?}");
}

#[tokio::test]
async fn works_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    let connect = || async {
        let store: RedisStore<u64> = RedisStore::builder()
            .cluster(cluster.urls())
            .prefix("cl")
            .build()
            .await
            .unwrap();
        DistributedLock::new(&store).unwrap()
    };
    let (a, b) = (connect().await, connect().await);
    eventually("b's subscriber", || b.is_subscribed()).await;
    contend(a, b).await;
}

#[tokio::test]
async fn works_behind_sentinel() {
    let group = SentinelGroup::start();
    let connect = || async {
        let store: RedisStore<u64> = RedisStore::builder()
            .sentinel(group.sentinel_urls(), group.service())
            .prefix("sen")
            .build()
            .await
            .unwrap();
        DistributedLock::new(&store).unwrap()
    };
    let (a, b) = (connect().await, connect().await);
    eventually("b's subscriber", || b.is_subscribed()).await;
    contend(a, b).await;
}
