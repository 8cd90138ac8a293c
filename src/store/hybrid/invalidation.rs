//! Cross-process coherence: invalidation messages over Redis pub/sub.
//!
//! Every write this store makes to L2 is followed by a `PUBLISH` on the
//! store's channel, on the same connection as the write, so the message
//! reaches subscribers after the write is visible. Each store holds one
//! subscriber connection; a message from another store drops the key from
//! L1 (or all of L1, for a `clear`).
//!
//! # Message format
//!
//! `c1:<instance id, 16 hex digits>:<op>:<key>`, where `op` is `k` (the
//! key was set or deleted), `m` (the keys of a batch were set or deleted;
//! each key as `<length in bytes>:<key>`, one after the other, so that keys
//! may hold any character) or `c` (everything was cleared; no key). The
//! instance id is random per store, so a process ignores its own messages
//! but two stores in one process invalidate each other. A message this
//! version does not understand (a future format) clears L1: the safe
//! reading of an unknown change.
//!
//! # Lost subscriptions
//!
//! Messages published while the subscriber is disconnected are lost (pub/sub
//! does not queue). So when the connection drops, or stops answering PINGs,
//! L1's entries stop being vouched for: they are served for a bounded time
//! and re-read from L2 once the subscription is back (see `outage.rs`), or,
//! if the user chose coherence over availability, L1 is cleared at once and
//! again on resubscribing. The subscriber reconnects by itself with backoff,
//! up to one second between attempts.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use redis::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Core, Invalidated};
use crate::codec::Codec;
use crate::store::redis::TimedOut;
use crate::{Error, Result, StoreOp};

const VERSION: &str = "c1:";
/// Channel suffix under the store's prefix.
pub(crate) const CHANNEL_SUFFIX: &str = "__cachex_inv";
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often an idle subscriber checks its connection: a server that
/// stopped answering (frozen, or a silent network) leaves the socket
/// open, and without a PING the subscriber would wait for ever.
const PING_EVERY: Duration = Duration::from_secs(1);

/// One change, as sent on the channel.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    Key {
        from: u64,
        key: &'a str,
    },
    /// The keys of one batch write: one message however many keys.
    Keys {
        from: u64,
        keys: Vec<&'a str>,
    },
    Clear {
        from: u64,
    },
    /// Tags invalidated: every entry carrying one of them is invalid.
    Tags {
        from: u64,
        tags: Vec<&'a str>,
    },
}

impl Message<'_> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Message::Key { from, key } => format!("{VERSION}{from:016x}:k:{key}").into_bytes(),
            Message::Keys { from, keys } => encode_list(*from, "m", keys),
            Message::Tags { from, tags } => encode_list(*from, "t", tags),
            Message::Clear { from } => format!("{VERSION}{from:016x}:c:").into_bytes(),
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Message<'_>> {
        let text = std::str::from_utf8(bytes).ok()?;
        let rest = text.strip_prefix(VERSION)?;
        let (id, rest) = (rest.get(..16)?, rest.get(16..)?);
        let from = u64::from_str_radix(id, 16).ok()?;
        match rest.get(..3)? {
            ":k:" if rest.len() > 3 => Some(Message::Key {
                from,
                key: &rest[3..],
            }),
            ":m:" => Some(Message::Keys {
                from,
                keys: decode_keys(&rest[3..])?,
            }),
            ":c:" => Some(Message::Clear { from }),
            ":t:" => Some(Message::Tags {
                from,
                tags: decode_keys(&rest[3..])?,
            }),
            _ => None,
        }
    }
}

/// An `m` or `t` message: its items as `<len>:<item>`, repeated.
fn encode_list(from: u64, kind: &str, items: &[&str]) -> Vec<u8> {
    let mut out = format!("{VERSION}{from:016x}:{kind}:");
    for item in items {
        out.push_str(&item.len().to_string());
        out.push(':');
        out.push_str(item);
    }
    out.into_bytes()
}

/// The keys of an `m` message (the tags of a `t` one): `<len>:<key>`
/// repeated, at least one.
fn decode_keys(mut rest: &str) -> Option<Vec<&str>> {
    let mut keys = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_once(':')?;
        let len: usize = len.parse().ok()?;
        let key = tail.get(..len).filter(|key| !key.is_empty())?;
        keys.push(key);
        rest = &tail[len..];
    }
    (!keys.is_empty()).then_some(keys)
}

/// The channel of a store with `prefix`.
pub(crate) fn channel(prefix: Option<&str>) -> String {
    match prefix {
        Some(prefix) => format!("{prefix}:{CHANNEL_SUFFIX}"),
        None => CHANNEL_SUFFIX.to_string(),
    }
}

/// Connects a subscriber and subscribes to `channel`, within `timeout`.
pub(crate) async fn subscribe<V, C>(
    core: &Core<V, C>,
    channel: &str,
    attempt: usize,
    timeout: Duration,
) -> Result<(PubSubSink, PubSubStream)> {
    let connect = async {
        let (mut sink, stream) = core.l2.subscriber(attempt).await?.split();
        sink.subscribe(channel).await?;
        Ok::<_, redis::RedisError>((sink, stream))
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(e)) => Err(Error::store(StoreOp::Connect, None, e)),
        Err(_) => Err(Error::store(
            StoreOp::Connect,
            None,
            TimedOut { after: timeout },
        )),
    }
}

/// The subscriber task: listens, and on a lost connection tells L1 and
/// resubscribes, until the store is dropped (which aborts it).
pub(crate) async fn run<V, C>(
    core: Arc<Core<V, C>>,
    channel: String,
    first: (PubSubSink, PubSubStream),
    timeout: Duration,
) where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec,
{
    let mut connection = Some(first);
    let mut attempt = 0usize;
    let mut backoff = BACKOFF_MIN;
    loop {
        if let Some((sink, stream)) = connection.take() {
            core.subscribed.store(true, Ordering::Release);
            listen(&core, sink, stream, timeout).await;
            core.subscribed.store(false, Ordering::Release);
            core.counters
                .subscription_losses
                .fetch_add(1, Ordering::Relaxed);
            core.subscription_lost();
            backoff = BACKOFF_MIN;
        }
        let outage = &core.local.outage;
        outage.expiring(tokio::time::sleep(backoff)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
        attempt = attempt.wrapping_add(1);
        let resubscribed = outage
            .expiring(subscribe(&core, &channel, attempt, timeout))
            .await;
        if let Ok(pair) = resubscribed {
            // Entries made while unsubscribed may have missed messages too.
            core.subscription_restored();
            core.counters
                .resubscriptions
                .fetch_add(1, Ordering::Relaxed);
            connection = Some(pair);
        }
    }
}

/// Applies messages until the connection is lost.
async fn listen<V, C>(
    core: &Core<V, C>,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    timeout: Duration,
) where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    C: Codec,
{
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => apply(core, message.get_payload_bytes()),
                None => return,
            },
            _ = ping.tick() => {
                let pong = tokio::time::timeout(timeout, sink.ping::<Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}

fn apply<V, C>(core: &Core<V, C>, payload: &[u8])
where
    V: Clone + Send + Sync + 'static,
{
    let counters = &core.counters;
    match Message::decode(payload) {
        Some(
            Message::Key { from, .. }
            | Message::Keys { from, .. }
            | Message::Clear { from }
            | Message::Tags { from, .. },
        ) if from == core.instance_id => {}
        Some(Message::Key { key, .. }) => {
            counters
                .invalidations_received
                .fetch_add(1, Ordering::Relaxed);
            core.invalidate_local(key);
            core.notify(Invalidated::Key(key));
        }
        Some(Message::Keys { keys, .. }) => {
            counters
                .invalidations_received
                .fetch_add(1, Ordering::Relaxed);
            for key in keys {
                core.invalidate_local(key);
                core.notify(Invalidated::Key(key));
            }
        }
        Some(Message::Tags { tags, .. }) => {
            counters
                .invalidations_received
                .fetch_add(1, Ordering::Relaxed);
            core.forget_tags(tags.iter().copied());
            for tag in tags {
                core.notify(Invalidated::Tag(tag));
            }
        }
        Some(Message::Clear { .. }) => {
            counters
                .invalidations_received
                .fetch_add(1, Ordering::Relaxed);
            core.clear_local(false);
            core.notify(Invalidated::All);
        }
        None => {
            counters
                .invalidations_unreadable
                .fetch_add(1, Ordering::Relaxed);
            core.clear_local(false);
            core.notify(Invalidated::All);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        for message in [
            Message::Key {
                from: 0xdead_beef,
                key: "user:7:with:colons",
            },
            Message::Clear { from: u64::MAX },
            Message::Keys {
                from: 7,
                keys: vec!["a", "user:7:with:colons", "12:3", "é"],
            },
            Message::Tags {
                from: 9,
                tags: vec!["user:7", "users"],
            },
        ] {
            assert_eq!(Message::decode(&message.encode()), Some(message));
        }
        assert_eq!(Message::decode(b"c1:zz"), None);
        assert_eq!(Message::decode(b"c2:0000000000000001:k:a"), None);
        assert_eq!(Message::decode(b"c1:0000000000000001:k:"), None);
        // Batches: lengths must match, keys must not be empty.
        assert_eq!(Message::decode(b"c1:0000000000000001:m:"), None);
        assert_eq!(Message::decode(b"c1:0000000000000001:m:5:abc"), None);
        assert_eq!(Message::decode(b"c1:0000000000000001:m:0:"), None);
        assert_eq!(Message::decode(b"c1:0000000000000001:m:x:a"), None);
        assert_eq!(
            Message::decode(b"c1:0000000000000001:m:1:a2:bc"),
            Some(Message::Keys {
                from: 1,
                keys: vec!["a", "bc"]
            })
        );
        assert_eq!(channel(Some("app")), "app:__cachex_inv");
    }
}
