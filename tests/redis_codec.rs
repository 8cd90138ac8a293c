//! Codecs through a real Redis: round trips of nested structs, enums and
//! large values with every codec, compressed or not; foreign, corrupt and
//! future bytes planted with a raw client give the documented errors.
#![cfg(feature = "redis")]

mod redis_support;

use std::collections::BTreeMap;
use std::time::Duration;

use cachex::codec::{Codec, FrameError, MessagePack, TrailingBytes};
use cachex::store::redis::{OnCorrupt, RedisStore};
use cachex::store::{Envelope, Store};
use redis_support::{builder, raw, raw_cmd, source, store, RedisServer};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Role {
    Guest,
    Member { since: u32 },
    Admin(String, Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Address {
    city: String,
    lines: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    score: f64,
    roles: Vec<Role>,
    address: Option<Address>,
    tags: BTreeMap<String, i32>,
    avatar: Vec<u8>,
}

fn user(id: u64, avatar_len: usize) -> User {
    User {
        id,
        name: format!("user {id} ✓"),
        score: -1.5,
        roles: vec![
            Role::Guest,
            Role::Member { since: 2019 },
            Role::Admin("root".into(), vec![1, 2, 3]),
        ],
        address: Some(Address {
            city: "Zürich".into(),
            lines: vec!["Bahnhofstrasse 1".into(), String::new()],
        }),
        tags: [("a".to_string(), 1), ("b".to_string(), -2)].into(),
        // Compressible: repeats a short pattern.
        avatar: (0..avatar_len).map(|i| (i % 7) as u8).collect(),
    }
}

/// Writes and reads back small and large users, with and without a TTL.
async fn round_trips<C: Codec + Clone>(codec: C, compress_above: Option<usize>) -> usize {
    let server = RedisServer::start();
    let mut b = builder::<User>(&server, "c").codec(codec);
    #[cfg(feature = "compression")]
    if let Some(threshold) = compress_above {
        b = b.compress_above(threshold);
    }
    #[cfg(not(feature = "compression"))]
    let _ = compress_above;
    let store = b.build().await.unwrap();
    for (key, value) in [("small", user(1, 0)), ("large", user(2, 200_000))] {
        store
            .set(
                key,
                Envelope::found(value.clone()),
                Some(Duration::from_secs(60)),
            )
            .await
            .unwrap();
        let stored = store.get(key).await.unwrap().unwrap();
        assert_eq!(stored.envelope.into_value(), Some(value.clone()), "{key}");
        store
            .set(key, Envelope::found(value.clone()), None)
            .await
            .unwrap();
        assert_eq!(
            store.get(key).await.unwrap().unwrap().envelope.into_value(),
            Some(value)
        );
    }
    // The stored size of the large value, to see compression work.
    let mut conn = raw(&server).await;
    raw_cmd::<usize>(&mut conn, &[b"STRLEN", b"c:large"]).await
}

#[tokio::test]
async fn messagepack_round_trips() {
    let size = round_trips(MessagePack, None).await;
    assert!(size > 200_000, "{size}");
}

#[cfg(feature = "json")]
#[tokio::test]
async fn json_round_trips() {
    round_trips(cachex::codec::Json, None).await;
}

#[cfg(feature = "postcard")]
#[tokio::test]
async fn postcard_round_trips() {
    let size = round_trips(cachex::codec::Postcard, None).await;
    assert!(size > 200_000, "{size}");
}

#[cfg(feature = "compression")]
#[tokio::test]
async fn compressed_values_round_trip_with_every_codec() {
    let size = round_trips(MessagePack, Some(1024)).await;
    assert!(size < 20_000, "compressed to {size} bytes");
    #[cfg(feature = "json")]
    round_trips(cachex::codec::Json, Some(1024)).await;
    #[cfg(feature = "postcard")]
    round_trips(cachex::codec::Postcard, Some(1024)).await;
}

#[cfg(feature = "compression")]
#[tokio::test]
async fn readers_decompress_whatever_their_own_threshold() {
    let server = RedisServer::start();
    let writer: RedisStore<User> = builder(&server, "c")
        .compress_above(64)
        .build()
        .await
        .unwrap();
    let reader: RedisStore<User> = store(&server, "c").await;
    let value = user(3, 10_000);
    writer
        .set("k", Envelope::found(value.clone()), None)
        .await
        .unwrap();
    let read = reader.get("k").await.unwrap().unwrap();
    assert_eq!(read.envelope.into_value(), Some(value));
}

/// Plants `bytes` under `c:key` and reads them through a MessagePack store.
async fn read_planted(server: &RedisServer, key: &str, bytes: &[u8]) -> cachex::Error {
    let mut conn = raw(server).await;
    let full = format!("c:{key}");
    let _: () = raw_cmd(&mut conn, &[b"SET", full.as_bytes(), bytes]).await;
    let store: RedisStore<User> = store(server, "c").await;
    let err = store.get(key).await.unwrap_err();
    assert!(err.is_codec(), "{err:?}");
    assert_eq!(err.key(), Some(key));
    assert!(err.to_string().contains(key));
    assert_eq!(store.stats().codec_errors, 1);
    // The value is left alone under the default policy.
    let exists: i64 = raw_cmd(&mut conn, &[b"EXISTS", full.as_bytes()]).await;
    assert_eq!(exists, 1);
    err
}

#[tokio::test]
async fn foreign_bytes_are_a_codec_error_naming_the_key() {
    let server = RedisServer::start();
    let err = read_planted(&server, "plain", b"hello from another program").await;
    assert_eq!(source::<FrameError>(&err), &FrameError::NotCachex);
    let err = read_planted(&server, "empty", b"").await;
    assert_eq!(source::<FrameError>(&err), &FrameError::NotCachex);
}

#[tokio::test]
async fn a_future_format_version_is_refused() {
    let server = RedisServer::start();
    let err = read_planted(&server, "future", &[0xCA, 4, MessagePack::ID, 0, 0, 0xA0]).await;
    assert_eq!(
        source::<FrameError>(&err),
        &FrameError::UnsupportedVersion(4)
    );
    let err = read_planted(&server, "flags", &[0xCA, 3, MessagePack::ID, 0x40, 0, 0xA0]).await;
    assert_eq!(source::<FrameError>(&err), &FrameError::UnknownFlags(0x40));
}

#[tokio::test]
async fn a_truncated_payload_is_the_codecs_error() {
    let server = RedisServer::start();
    // A valid header, then half a MessagePack map.
    let err = read_planted(
        &server,
        "cut",
        &[0xCA, 2, MessagePack::ID, 0, 0, 0x82, 0xa5],
    )
    .await;
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test]
async fn bytes_after_the_value_are_refused() {
    let server = RedisServer::start();
    let mut conn = raw(&server).await;
    // A valid header and load time, the string "x", then "yz": once read
    // as "x".
    let planted = b"\xCA\x02\x01\x00\x00\xA1x\xA2yz";
    let _: () = raw_cmd(&mut conn, &[b"SET", b"c:tail", planted]).await;
    let store: RedisStore<String> = store(&server, "c").await;
    let err = store.get("tail").await.unwrap_err();
    assert!(err.is_codec(), "{err:?}");
    assert_eq!(source::<TrailingBytes>(&err), &TrailingBytes(3));
}

#[cfg(feature = "json")]
#[tokio::test]
async fn a_value_written_by_another_codec_is_refused_not_misread() {
    let server = RedisServer::start();
    let json: RedisStore<User, cachex::codec::Json> = builder(&server, "c")
        .codec(cachex::codec::Json)
        .build()
        .await
        .unwrap();
    json.set("k", Envelope::found(user(1, 0)), None)
        .await
        .unwrap();
    let msgpack: RedisStore<User> = store(&server, "c").await;
    let err = msgpack.get("k").await.unwrap_err();
    assert_eq!(err.key(), Some("k"));
    assert_eq!(
        source::<FrameError>(&err),
        &FrameError::CodecMismatch {
            found: 2,
            expected: "msgpack"
        }
    );
    let why = std::error::Error::source(&err).unwrap().to_string();
    assert!(why.contains("json codec"), "{why}");
}

#[tokio::test]
async fn miss_and_delete_turns_corrupt_values_into_misses() {
    let server = RedisServer::start();
    let mut conn = raw(&server).await;
    let _: () = raw_cmd(&mut conn, &[b"SET", b"c:bad", b"\xCA\x02\x01\x00\x00\xc1"]).await;
    let store: RedisStore<User> = builder(&server, "c")
        .on_corrupt(OnCorrupt::MissAndDelete)
        .build()
        .await
        .unwrap();
    assert!(store.get("bad").await.unwrap().is_none());
    let exists: i64 = raw_cmd(&mut conn, &[b"EXISTS", b"c:bad"]).await;
    assert_eq!(exists, 0);
    let stats = store.stats();
    assert_eq!((stats.codec_errors, stats.corrupt_deleted), (1, 1));
    // And the key is usable again.
    store
        .set("bad", Envelope::found(user(4, 0)), None)
        .await
        .unwrap();
    assert!(store.get("bad").await.unwrap().is_some());
}

/// Under the default `OnCorrupt::Error`, `get_or_load` over bytes it cannot
/// decode answers with its loader's value but leaves the bytes alone: they
/// may belong to another program.
#[tokio::test]
async fn get_or_load_does_not_overwrite_bytes_it_cannot_decode() {
    let server = RedisServer::start();
    let mut conn = raw(&server).await;
    let foreign: &[u8] = b"owned by another program";
    let _: () = raw_cmd(&mut conn, &[b"SET", b"c:shared", foreign]).await;
    let cache: cachex::Cache<User> = cachex::Cache::builder()
        .store(store::<User>(&server, "c").await)
        .build();
    for _ in 0..2 {
        let loaded = cache
            .get_or_load("shared", || async { Ok::<_, std::io::Error>(user(5, 0)) })
            .await
            .unwrap();
        assert_eq!(loaded, user(5, 0));
    }
    let left: Vec<u8> = raw_cmd(&mut conn, &[b"GET", b"c:shared"]).await;
    assert_eq!(left, foreign, "the foreign bytes were overwritten");
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.store_errors), (2, 2), "{stats:?}");
    assert_eq!(stats.undecodable_kept, 2);
}
