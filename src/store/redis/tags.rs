//! Tags in Redis (see [`tag`](crate::tag)): one key per tag,
//! `<prefix>:__cachex_tag:{<tag>}`, holding its version; an entry's frame
//! records the versions of its tags when it was written, and a read
//! answers it only if they are all still current.
//!
//! - **A tag's version** starts at a random number between 2³² and 2⁶²,
//!   chosen by the first writer (a script: `GET`, else `SET`), and an
//!   invalidation adds one (a script: `INCR` if the key exists, else a new
//!   random start). A tag key that Redis lost (evicted, flushed, deleted
//!   by hand) therefore never comes back at a version an entry recorded:
//!   entries of a tag whose key is gone are invalid, and stay so (fail
//!   closed). The chance that a new random start meets an old version is
//!   about one in 2⁶⁰.
//! - **Reads**: a `GET` tells whether the entry has tags (a header flag);
//!   then their versions are read with one `MGET`, a second round trip.
//!   With [`read_tags_in_script`](super::RedisStoreBuilder::read_tags_in_script),
//!   every read is one script instead, which reads the tags named in the
//!   frame's header on the server: one round trip for tagged entries too.
//!   On a Cluster the script cannot read keys outside the entry's hash slot,
//!   so tagged reads there always take the two round trips.
//! - **Tag keys never expire**: they are a few dozen bytes each, and one
//!   that expired would invalidate its entries for nothing. Under a
//!   `maxmemory-policy` of `allkeys-*` Redis may evict them; that
//!   invalidates their entries (see above), it never revives any.

use std::sync::LazyLock;

use futures_util::future::try_join_all;
use redis::Value;

use super::{Inner, UnexpectedReply};
use crate::codec::Codec;
use crate::loading::Random;
use crate::lock::scripts::{run_with, Arg, Script};
use crate::tag::{Stamp, TagCell, TagStamps, Tags};
use crate::{Error, Result, StoreOp};

/// `KEYS`: the tag. `ARGV`: a version to start it at if it has none.
/// Answers the tag's version.
static VERSION: Script = Script::new(
    r"
local version = redis.call('GET', KEYS[1])
if not version then
  version = ARGV[1]
  redis.call('SET', KEYS[1], version)
end
return version
",
);

/// `KEYS`: the tag. `ARGV`: a version to start it at if it has none.
/// Moves the tag's version on.
static INVALIDATE: Script = Script::new(
    r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('INCR', KEYS[1])
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
",
);

/// `KEYS`: the entry. `ARGV`: what goes before and after a tag's name in
/// its key. Answers nil for no entry, else `{frame}`, or, when the frame
/// (format version 3) has tags, `{frame, version, ...}`, one version
/// (empty if the tag key is gone) per tag in the frame's order. See
/// `codec/frame.rs` for the layout read here: flags in byte 4, then the
/// tag count, then per tag its name's length, its name and 8 bytes.
static READ: Script = Script::new(
    r"
local frame = redis.call('GET', KEYS[1])
if not frame then
  return false
end
if #frame < 5 or string.byte(frame, 1) ~= 202 or string.byte(frame, 2) ~= 3
    or bit.band(string.byte(frame, 4), 8) == 0 then
  return {frame}
end
local reply = {frame}
local at = 6
for i = 1, string.byte(frame, 5) do
  local len = string.byte(frame, at)
  local name = string.sub(frame, at + 1, at + len)
  reply[i + 1] = redis.call('GET', ARGV[1] .. name .. ARGV[2]) or ''
  at = at + len + 9
end
return reply
",
);

/// A fresh start for a tag's version: far from any version reached by
/// counting up from another start.
fn fresh_version() -> u64 {
    static RANDOM: LazyLock<Random> = LazyLock::new(Random::from_entropy);
    (RANDOM.next_u64() >> 2) | (1 << 32)
}

/// What a tag key's value says: its version, or `None` when the key is
/// gone (or holds something else).
fn version_of(value: &Value) -> Option<u64> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::SimpleString(text) => text.parse().ok(),
        _ => None,
    }
}

/// Whether `tags` are all at the versions read now.
pub(super) fn tags_match(tags: &TagStamps, current: &[Option<u64>]) -> bool {
    tags.stamps().len() == current.len()
        && tags
            .stamps()
            .iter()
            .zip(current)
            .all(|(stamp, now)| *now == Some(stamp.version))
}

impl<C: Codec> Inner<C> {
    /// The key of tag `name`.
    pub(super) fn tag_key(&self, name: &str) -> String {
        let (before, after) = self.tag_key_parts();
        [before.as_str(), name, after].concat()
    }

    /// What goes before and after a tag's name in its key.
    fn tag_key_parts(&self) -> (String, &'static str) {
        let prefix = self.key_prefix.as_deref().unwrap_or("");
        (format!("{prefix}__cachex_tag:{{"), "}")
    }

    /// The versions of `tags`, starting those that have none: one script
    /// per tag, sent together (one round trip; on a Cluster each goes to
    /// its tag's master).
    pub(super) async fn tag_versions(&self, tags: &Tags) -> Result<TagStamps> {
        let keys: Vec<String> = tags.iter().map(|tag| self.tag_key(tag)).collect();
        let replies = self
            .call(
                StoreOp::Tags,
                tags.iter().next(),
                try_join_all(keys.iter().map(|key| self.script(&VERSION, key))),
            )
            .await?;
        let mut stamps = Vec::with_capacity(replies.len());
        for (tag, reply) in tags.iter().zip(&replies) {
            let version = version_of(reply).ok_or_else(|| unexpected(tag, reply))?;
            stamps.push(Stamp {
                cell: TagCell::detached(tag),
                version,
            });
        }
        Ok(TagStamps::new(stamps))
    }

    /// Moves every tag of `tags` on: one script per tag, sent together.
    pub(super) async fn invalidate_tags(&self, tags: &Tags) -> Result<()> {
        let keys: Vec<String> = tags.iter().map(|tag| self.tag_key(tag)).collect();
        self.call(
            StoreOp::Tags,
            tags.iter().next(),
            try_join_all(keys.iter().map(|key| self.script(&INVALIDATE, key))),
        )
        .await?;
        Ok(())
    }

    /// Runs `script` on one tag key with a fresh version as its argument.
    async fn script(&self, script: &Script, key: &str) -> redis::RedisResult<Value> {
        let fresh = fresh_version();
        run_with(
            |cmd| async move { self.connection.query(&cmd).await },
            script,
            &[key],
            &[Arg::Int(fresh)],
        )
        .await
    }

    /// The versions of `names` now (`None`: the tag key is gone), by one
    /// `MGET` (on a Cluster, split by slot and sent together).
    pub(super) async fn current_versions(&self, names: &[&str]) -> Result<Vec<Option<u64>>> {
        let mut cmd = redis::cmd("MGET");
        for name in names {
            cmd.arg(self.tag_key(name));
        }
        let first = names.first().copied();
        let reply = self
            .call(StoreOp::Tags, first, self.connection.query(&cmd))
            .await?;
        match reply {
            Value::Array(values) if values.len() == names.len() => {
                Ok(values.iter().map(version_of).collect())
            }
            other => Err(unexpected(first.unwrap_or(""), &other)),
        }
    }

    /// Whether a read's entry, with `tags`, may be answered: its tags'
    /// versions come from the read script (`read`), or are read now.
    pub(super) async fn tags_current(
        &self,
        tags: &TagStamps,
        read: Option<Vec<Option<u64>>>,
    ) -> Result<bool> {
        let current = match read {
            Some(current) => current,
            None => {
                let names: Vec<&str> = tags.iter().map(|(name, _)| name).collect();
                self.current_versions(&names).await?
            }
        };
        Ok(tags_match(tags, &current))
    }

    /// Whether reads go through [`READ`]: asked for, and not on a Cluster
    /// (decided when the store was built).
    pub(super) fn reads_by_script(&self) -> bool {
        self.read_tags_in_script
    }

    /// One read by [`READ`]: the `GET` reply it carries, and the versions
    /// of the tags its frame names (`None` if it names none).
    pub(super) async fn read_by_script(
        &self,
        key: &str,
    ) -> redis::RedisResult<(Value, Option<Vec<Option<u64>>>)> {
        let full_key = self.redis_key(key);
        let (before, after) = self.tag_key_parts();
        let reply = run_with(
            |cmd| async move { self.connection.query(&cmd).await },
            &READ,
            &[&full_key],
            &[Arg::Str(&before), Arg::Str(after)],
        )
        .await?;
        Ok(match reply {
            Value::Array(mut items) if !items.is_empty() => {
                let frame = items.remove(0);
                let versions = (!items.is_empty()).then(|| items.iter().map(version_of).collect());
                (frame, versions)
            }
            other => (other, None),
        })
    }
}

fn unexpected(tag: &str, reply: &Value) -> Error {
    Error::store(
        StoreOp::Tags,
        Some(tag),
        UnexpectedReply(format!("{reply:?}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_versions_start_far_apart_from_counted_ones() {
        for _ in 0..1_000 {
            let version = fresh_version();
            assert!((1 << 32..1 << 62).contains(&version));
        }
    }

    #[test]
    fn tag_versions_read_from_replies() {
        assert_eq!(version_of(&Value::BulkString(b"42".to_vec())), Some(42));
        assert_eq!(version_of(&Value::Int(7)), Some(7));
        assert_eq!(version_of(&Value::Nil), None);
        assert_eq!(version_of(&Value::BulkString(Vec::new())), None);
    }
}
