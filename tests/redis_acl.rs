//! Least privilege: the ACL user the README gives (its line is read from
//! the README itself, so the two cannot drift apart) can do everything
//! cachex does (the Redis store's operations and batches, `Cache` on top,
//! the hybrid store's invalidation, write-behind and breaker probe, the
//! distributed lock's scripts and its waiters' pattern subscription) and
//! nothing the server logs as denied; every command of the line is needed
//! by some feature; keys and channels of another prefix are refused, and
//! left as they were.
#![cfg(feature = "redis")]

mod redis_support;

use std::time::Duration;

use cachex::lock::DistributedLock;
use cachex::store::hybrid::{BreakerState, HybridStore, WriteMode};
use cachex::store::{Envelope, RedisStore, Store};
use cachex::{Cache, Ttl};
use cachex_testkit::{FaultProxy, RedisServer};

/// The prefix the README's line is written for.
const README_PREFIX: &str = "myapp";
const PASSWORD: &str = "s3cret";
/// Only a guard against a hang.
const DEADLINE: Duration = Duration::from_secs(20);

/// The README's `ACL SETUSER` line, for `prefix` and [`PASSWORD`].
fn readme_acl_line(prefix: &str) -> String {
    let readme = include_str!("../README.md");
    let line = readme
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("ACL SETUSER cachex "))
        .expect("README.md gives an `ACL SETUSER cachex ...` line");
    let line = line.replace(&format!("{README_PREFIX}:"), &format!("{prefix}:"));
    let words: Vec<String> = line
        .split_whitespace()
        .map(|word| match word.strip_prefix('>') {
            Some(_) => format!(">{PASSWORD}"),
            None => word.to_string(),
        })
        .collect();
    words.join(" ")
}

/// The commands the line allows (`+get` ...).
fn allowed_commands(line: &str) -> Vec<String> {
    line.split_whitespace()
        .filter(|word| word.starts_with('+'))
        .map(str::to_string)
        .collect()
}

/// Runs `line` (`ACL SETUSER ...`) as the default user.
fn set_user(server: &RedisServer, line: &str) {
    let _ = server.command("ACL DELUSER cachex");
    let reply = server.command(line).unwrap_or_default();
    assert!(reply.starts_with("+OK"), "{line}: {reply}");
    assert!(server.command("ACL LOG RESET").is_some());
}

/// What the server logged as denied (`ACL LOG`), empty when nothing was.
fn denials(server: &RedisServer) -> String {
    let log = server.command("ACL LOG").unwrap_or_default();
    if log.starts_with("*0\r\n") {
        String::new()
    } else {
        log.split("\r\n")
            .filter(|w| !w.starts_with(['*', '$', ':']))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn user_url(addr: &str) -> String {
    format!("redis://cachex:{PASSWORD}@{addr}/")
}

async fn redis_store(url: &str, prefix: &str) -> cachex::Result<RedisStore<u64>> {
    RedisStore::builder()
        .url(url)
        .prefix(prefix)
        .timeout(Duration::from_millis(500))
        .build()
        .await
}

/// Every feature of cachex that talks to Redis, as the user of `url`;
/// the first failure, described.
async fn exercise(server: &RedisServer, prefix: &str) -> Result<(), String> {
    let fail = |what: &str| {
        let what = what.to_string();
        move |e: cachex::Error| format!("{what}: {e}")
    };
    let url = user_url(&server.addr());
    // The Redis store, directly and under a Cache.
    let store = redis_store(&url, prefix).await.map_err(fail("connect"))?;
    store
        .set("k", Envelope::found(1), Some(Duration::from_secs(60)))
        .await
        .map_err(fail("set"))?;
    let got = store.get("k").await.map_err(fail("get"))?;
    if got.and_then(|s| s.envelope.into_value()) != Some(1) {
        return Err("get: wrong value".into());
    }
    store
        .remaining_ttl("k")
        .await
        .map_err(fail("remaining_ttl"))?;
    store.delete("k").await.map_err(fail("delete"))?;
    let cache: Cache<u64> = Cache::builder().store(store.clone()).build();
    cache
        .get_or_load("loaded", || async { Ok::<_, std::io::Error>(5) })
        .await
        .map_err(fail("get_or_load"))?;
    cache.get("loaded").await.map_err(fail("Cache::get"))?;
    cache
        .set_many([("a", 1), ("b", 2)], Ttl::Default)
        .await
        .map_err(fail("set_many"))?;
    let many = cache
        .get_many(&["a", "b", "c"])
        .await
        .map_err(fail("get_many"))?;
    if many != [Some(1), Some(2), None] {
        return Err(format!("get_many: {many:?}"));
    }
    cache
        .delete_many(&["a", "b"])
        .await
        .map_err(fail("delete_many"))?;
    store.clear().await.map_err(fail("clear"))?;

    // The hybrid store: invalidation between two stores, write-behind,
    // and the breaker's probe (through a proxy that is cut, then restored).
    let proxy = FaultProxy::start(&server.addr());
    let hybrid = |url: String, mode: WriteMode| async move {
        let l2 = redis_store(&url, prefix).await?;
        HybridStore::builder(l2)
            .write_mode(mode)
            .l2_timeout(Duration::from_millis(300))
            .breaker(1, Duration::from_millis(50))
            .build()
            .await
    };
    let a = hybrid(url.clone(), WriteMode::WriteThrough)
        .await
        .map_err(fail("hybrid a"))?;
    let b = hybrid(user_url(&proxy.addr()), WriteMode::WriteThrough)
        .await
        .map_err(fail("hybrid b"))?;
    a.set("h", Envelope::found(1), None)
        .await
        .map_err(fail("hybrid set"))?;
    b.get("h").await.map_err(fail("hybrid get"))?;
    a.set("h", Envelope::found(2), None)
        .await
        .map_err(fail("hybrid set"))?;
    // A refused PUBLISH does not fail the write (it is counted): look.
    if a.stats().publish_failures > 0 {
        return Err("the invalidation could not be published".into());
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while b.l1_contains("h") {
        if tokio::time::Instant::now() > deadline {
            return Err("the invalidation never reached b".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.cut();
    let _ = b.get("cold").await; // refused: opens the breaker
    if b.breaker_state() == BreakerState::Closed {
        return Err("the breaker did not open".into());
    }
    proxy.restore();
    while b.breaker_state() != BreakerState::Closed {
        if tokio::time::Instant::now() > deadline {
            return Err("the breaker's probe never closed it".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let behind = hybrid(url.clone(), WriteMode::WriteBehind)
        .await
        .map_err(fail("write-behind store"))?;
    behind
        .set("wb", Envelope::found(3), None)
        .await
        .map_err(fail("write-behind set"))?;
    behind.flush().await;
    let stats = behind.stats();
    if stats.write_behind_failures > 0 {
        return Err(format!("write-behind failed: {stats:?}"));
    }
    let landed = store
        .get("wb")
        .await
        .map_err(fail("read the write-behind write"))?;
    if landed.and_then(|s| s.envelope.into_value()) != Some(3) {
        return Err("the write-behind write never reached Redis".into());
    }
    a.clear().await.map_err(fail("hybrid clear"))?;

    // The distributed lock: scripts (acquire, extend, release), a waiter
    // woken by the release's message (its handle's pattern subscription).
    let lock = DistributedLock::new(&store).map_err(fail("lock"))?;
    let held = lock
        .acquire("job", Duration::from_secs(5))
        .await
        .map_err(fail("lock acquire"))?;
    held.extend(Duration::from_secs(5))
        .await
        .map_err(fail("lock extend"))?;
    let other = DistributedLock::new(&store).map_err(fail("lock"))?;
    let waiter = tokio::spawn(async move {
        other
            .try_acquire("job", Duration::from_secs(5), Duration::from_secs(4))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    held.release().await.map_err(fail("lock release"))?;
    match waiter.await.map_err(|e| format!("lock waiter: {e}"))? {
        Ok(Some(guard)) => {
            guard.release().await.map_err(fail("lock release"))?;
        }
        Ok(None) => return Err("the lock waiter never got the lock".into()),
        Err(e) => return Err(format!("lock waiter: {e}")),
    }

    // Tags: versions read or started, and invalidated (scripts), a tagged
    // read checked (GET + MGET, or the read script), on both stores.
    let cache: Cache<u64> = Cache::builder().store(store.clone()).build();
    let tagged = cache.tagged(["t"]).map_err(fail("tags"))?;
    tagged
        .set("tagged", 7, Ttl::Default)
        .await
        .map_err(fail("tagged set"))?;
    let scripted = RedisStore::builder()
        .url(&url)
        .prefix(prefix)
        .read_tags_in_script(true)
        .build()
        .await
        .map_err(fail("connect"))?;
    let scripted: Cache<u64> = Cache::builder().store(scripted).build();
    for reader in [&cache, &scripted] {
        if reader.get("tagged").await.map_err(fail("tagged get"))? != Some(7) {
            return Err("tagged get: wrong value".into());
        }
    }
    // Twice: the first starts the tag, the second moves it on.
    for _ in 0..2 {
        cache
            .invalidate_tag("t")
            .await
            .map_err(fail("invalidate_tag"))?;
    }
    if cache
        .get("tagged")
        .await
        .map_err(fail("tagged get"))?
        .is_some()
    {
        return Err("an invalidated entry was served".into());
    }
    let over_hybrid: Cache<u64> = Cache::builder().store(a.clone()).build();
    let tagged = over_hybrid.tagged(["h"]).map_err(fail("tags"))?;
    tagged
        .set("htagged", 8, Ttl::Default)
        .await
        .map_err(fail("hybrid tagged set"))?;
    over_hybrid
        .invalidate_tag("h")
        .await
        .map_err(fail("hybrid invalidate_tag"))?;
    if a.stats().publish_failures > 0 {
        return Err("the tag invalidation could not be published".into());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feature_works_under_the_readme_acl_and_nothing_is_denied() {
    let server = RedisServer::start();
    set_user(&server, &readme_acl_line("app"));
    tokio::time::timeout(DEADLINE * 2, exercise(&server, "app"))
        .await
        .expect("the features hung")
        .unwrap_or_else(|e| panic!("{e}; denied: {}", denials(&server)));
    // Nothing was refused, not even a command whose failure is ignored.
    assert_eq!(denials(&server), "", "ACL LOG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_of_the_acl_line_is_needed() {
    let server = RedisServer::start();
    let line = readme_acl_line("app");
    let commands = allowed_commands(&line);
    assert!(commands.len() >= 5, "{line}");
    for command in &commands {
        let without: Vec<&str> = line.split(' ').filter(|word| word != command).collect();
        let without = without.join(" ");
        set_user(&server, &without);
        let outcome = tokio::time::timeout(DEADLINE * 2, exercise(&server, "app"))
            .await
            .expect("the features hung");
        let denied = denials(&server);
        println!("without {command}: {outcome:?}; denied: {denied}");
        assert!(
            outcome.is_err() || !denied.is_empty(),
            "nothing needs {command}: {without}"
        );
    }
}

#[tokio::test]
async fn another_prefix_is_denied_and_left_untouched() {
    let server = RedisServer::start();
    set_user(&server, &readme_acl_line("app"));
    assert!(server
        .command("SET other:k theirs")
        .unwrap()
        .starts_with("+OK"));
    let url = user_url(&server.addr());
    let theirs = redis_store(&url, "other").await.unwrap(); // PING is allowed
    let denied = |e: cachex::Error| {
        let text = std::error::Error::source(&e).unwrap().to_string();
        assert!(text.contains("NoPerm"), "{text}");
    };
    denied(theirs.get("k").await.unwrap_err());
    denied(theirs.set("k", Envelope::found(1), None).await.unwrap_err());
    denied(theirs.delete("k").await.unwrap_err());
    denied(theirs.clear().await.unwrap_err());
    // Nor can a hybrid store listen on their channel.
    let err = HybridStore::builder(theirs).build().await.unwrap_err();
    assert!(format!("{err:?}").contains("NoPerm"), "{err:?}");
    // Their key is as it was.
    let value = server.command("GET other:k").unwrap();
    assert_eq!(value, "$6\r\ntheirs\r\n");
}
