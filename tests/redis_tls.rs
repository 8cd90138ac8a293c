//! TLS to a real `redis-server` (Debian's build supports `--tls-port`),
//! with certificates made for the test by a CA of its own: a store
//! reaches it with `rediss://` and that CA, and so does a hybrid store's
//! pub/sub; a server the CA did not sign, or whose certificate names
//! another host, is refused at once with an error that names TLS.
#![cfg(feature = "tls")]

mod redis_support;

use std::time::Duration;

use cachex::store::hybrid::HybridStore;
use cachex::store::redis::{ConfigError, RedisStoreBuilder, TlsFailed};
use cachex::store::{Envelope, RedisStore, Store};
use cachex::StoreOp;
use cachex_testkit::{RedisServer, TestCa};
use redis_support::source;

/// Only a guard against a hang; far above anything the test waits for.
const DEADLINE: Duration = Duration::from_secs(20);

fn tls_builder(server: &RedisServer, ca: &TestCa, prefix: &str) -> RedisStoreBuilder<u64> {
    RedisStore::builder()
        .url(server.tls_url())
        .tls_ca_pem(ca.cert_pem())
        .prefix(prefix)
}

/// The error a connection attempt ends with, checked to be a TLS
/// failure reported when connecting, long before the (30 s) timeout;
/// answers its text.
async fn refused(builder: RedisStoreBuilder<u64>) -> String {
    let err = tokio::time::timeout(DEADLINE, builder.timeout(Duration::from_secs(30)).build())
        .await
        .expect("the connection attempt hung")
        .unwrap_err();
    assert_eq!(err.store_op(), Some(StoreOp::Connect), "{err:?}");
    let text = source::<TlsFailed>(&err).to_string();
    assert!(
        text.starts_with("TLS handshake with Redis failed"),
        "{text}"
    );
    text.to_lowercase()
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_store_works_over_tls_with_the_ca_it_is_given() {
    let ca = TestCa::new();
    let server = RedisServer::start_tls(&ca.issue(&["127.0.0.1"]));
    let store = tls_builder(&server, &ca, "tls").build().await.unwrap();

    store
        .set("k", Envelope::found(7), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let got = store.get("k").await.unwrap().unwrap();
    assert_eq!(got.envelope.into_value(), Some(7));
    assert!(got.remaining_ttl.is_some());
    assert!(store.remaining_ttl("k").await.unwrap().is_some());
    // It went to that server: the plain port sees the same key.
    let raw = server.command("EXISTS tls:k").unwrap();
    assert_eq!(raw.trim(), ":1");
    assert!(store.delete("k").await.unwrap());
    store.set("a", Envelope::found(1), None).await.unwrap();
    store.clear().await.unwrap();
    assert!(store.get("a").await.unwrap().is_none());
}

#[tokio::test]
async fn hybrid_invalidation_travels_over_tls() {
    let ca = TestCa::new();
    let server = RedisServer::start_tls(&ca.issue(&["127.0.0.1"]));
    let hybrid = |_: ()| async {
        HybridStore::builder(tls_builder(&server, &ca, "htls").build().await.unwrap())
            .build()
            .await
            .unwrap()
    };
    let (a, b) = (hybrid(()).await, hybrid(()).await);
    assert!(a.is_subscribed() && b.is_subscribed());
    a.set("k", Envelope::found(1), None).await.unwrap();
    // B's read may race the message of A's write (B then skips copying
    // what it read into L1, which is the point): read until it is kept.
    eventually("b copies k into its L1", || async {
        let got = b.get("k").await.unwrap().unwrap().envelope.into_value();
        assert_eq!(got, Some(1));
        b.l1_contains("k")
    })
    .await;
    // A's write reaches B's L1 as an invalidation over B's TLS subscriber.
    a.set("k", Envelope::found(2), None).await.unwrap();
    eventually("b's L1 drops k", || async { !b.l1_contains("k") }).await;
    assert_eq!(
        b.get("k").await.unwrap().unwrap().envelope.into_value(),
        Some(2)
    );
    assert!(b.stats().invalidations_received >= 1);
}

#[tokio::test]
async fn a_server_signed_by_another_ca_is_refused_naming_tls() {
    let ours = TestCa::new();
    let theirs = TestCa::new();
    let server = RedisServer::start_tls(&theirs.issue(&["127.0.0.1"]));
    let text = refused(tls_builder(&server, &ours, "x")).await;
    assert!(text.contains("not signed by a trusted ca"), "{text}");
}

#[tokio::test]
async fn a_certificate_for_another_host_is_refused_naming_tls() {
    let ca = TestCa::new();
    let server = RedisServer::start_tls(&ca.issue(&["elsewhere.invalid"]));
    let text = refused(tls_builder(&server, &ca, "x")).await;
    assert!(text.contains("does not name the host"), "{text}");
}

#[tokio::test]
async fn a_ca_that_cannot_apply_is_refused_before_connecting() {
    let ca = TestCa::new();
    let server = RedisServer::start_tls(&ca.issue(&["127.0.0.1"]));
    let config_error = |err: cachex::Error| source::<ConfigError>(&err).to_string();
    // A plain URL: the CA would silently not apply.
    let err = RedisStore::<u64>::builder()
        .url(server.url())
        .tls_ca_pem(ca.cert_pem())
        .build()
        .await
        .unwrap_err();
    assert!(config_error(err).contains("rediss://"));
    // No certificate in the PEM.
    let err = RedisStore::<u64>::builder()
        .url(server.tls_url())
        .tls_ca_pem("not a certificate")
        .build()
        .await
        .unwrap_err();
    assert!(config_error(err).contains("no certificate"));
}
