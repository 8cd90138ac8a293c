//! Batches: `MGET`, a pipeline of `SET`s, a multi-key `UNLINK`, each one
//! round trip however many keys (see the table in the module docs).

use std::collections::HashMap;

use futures_util::future::try_join_all;
use redis::Value;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::connection::Resend;
use super::stats::Event;
use super::{unexpected, Inner, OnCorrupt, Reply, UnexpectedReply};
use crate::codec::Codec;
use crate::store::{Found, Stored, Write};
use crate::tag::TagStamps;
use crate::{BoxError, Error, Result, StoreOp};

/// Keys per `MGET` or `UNLINK`. A batch's chunks are sent together (one
/// round trip); the split keeps each command short, so that a large batch
/// does not hold the single-threaded server, and the other clients, for
/// long.
pub(crate) const CHUNK: usize = 1_000;

/// What decoding an `MGET` left to do for one key.
enum Pending {
    /// A value of format version 2: its TTL needs a `PTTL`.
    Ttl,
    /// Bytes that do not decode.
    Corrupt(BoxError),
}

impl<C: Codec> Inner<C> {
    /// Every key's entry: one `MGET` per chunk, all sent at once.
    pub(super) async fn get_many<V>(&self, keys: &[&str]) -> Result<Vec<Found<V>>>
    where
        V: DeserializeOwned,
    {
        let chunks = keys.chunks(CHUNK).map(|chunk| {
            let mut cmd = redis::cmd("MGET");
            for key in chunk {
                cmd.arg(self.key_arg(key));
            }
            cmd
        });
        let commands: Vec<_> = chunks.collect();
        let replies = self
            .call(
                StoreOp::Get,
                None,
                try_join_all(commands.iter().map(|cmd| self.connection.query(cmd))),
            )
            .await?;

        let mut found = Vec::with_capacity(keys.len());
        let mut pending = Vec::new();
        let mut values = Vec::with_capacity(keys.len());
        for reply in replies {
            match reply {
                Value::Array(chunk) => values.extend(chunk),
                other => return Err(unexpected_batch(StoreOp::Get, &other)),
            }
        }
        if values.len() != keys.len() {
            return Err(Error::store(
                StoreOp::Get,
                None,
                UnexpectedReply(format!(
                    "MGET of {} keys answered {} values",
                    keys.len(),
                    values.len()
                )),
            ));
        }
        for (index, (key, reply)) in keys.iter().zip(values).enumerate() {
            let entry = match self.decode_reply::<V>(key, Some(reply)) {
                Reply::Entry(None) => Ok(None),
                Reply::Entry(Some((envelope, expiry))) => {
                    let remaining_ttl = expiry.remaining().unwrap_or_else(|| {
                        pending.push((index, Pending::Ttl));
                        None
                    });
                    Ok(Some(Stored {
                        envelope,
                        remaining_ttl,
                    }))
                }
                Reply::Corrupt(why) => {
                    pending.push((index, Pending::Corrupt(why)));
                    Ok(None)
                }
                Reply::Failed(error) => Err(error),
            };
            found.push(entry);
        }
        if !pending.is_empty() {
            // Boxed: rare (old or foreign entries), kept out of the common
            // batch's future.
            Box::pin(self.settle(keys, &mut found, pending)).await?;
        }
        let tagged = |found: &Found<V>| matches!(found, Ok(Some(stored)) if stored.envelope.tags().is_some());
        if found.iter().any(tagged) {
            // Boxed: only batches with tagged entries go there.
            Box::pin(self.check_tags(&mut found)).await?;
        }
        for entry in found.iter().flatten() {
            self.counters.lookup(entry.is_some());
        }
        Ok(found)
    }

    /// Finishes the keys an `MGET` could not answer alone: the TTLs of
    /// version 2 values (`PTTL`s, sent together), and undecodable bytes,
    /// reported or deleted (one `UNLINK`) as [`OnCorrupt`] says.
    async fn settle<V>(
        &self,
        keys: &[&str],
        found: &mut [Found<V>],
        pending: Vec<(usize, Pending)>,
    ) -> Result<()> {
        let mut ttls = Vec::new();
        let mut corrupt = Vec::new();
        for (index, what) in pending {
            match what {
                Pending::Ttl => ttls.push(index),
                Pending::Corrupt(why) => corrupt.push((index, why)),
            }
        }
        let answers = try_join_all(ttls.iter().map(|&index| self.pttl(keys[index]))).await?;
        for (index, ttl) in ttls.into_iter().zip(answers) {
            match ttl {
                Some(ttl) => {
                    if let Ok(Some(stored)) = &mut found[index] {
                        stored.remaining_ttl = ttl;
                    }
                }
                // Expired since the MGET.
                None => found[index] = Ok(None),
            }
        }
        if corrupt.is_empty() {
            return Ok(());
        }
        for _ in &corrupt {
            self.counters.incr(Event::CodecError);
        }
        match self.on_corrupt {
            OnCorrupt::Error => {
                for (index, why) in corrupt {
                    found[index] = Err(Error::codec(keys[index], why));
                }
            }
            OnCorrupt::MissAndDelete => {
                let doomed: Vec<&str> = corrupt.iter().map(|(index, _)| keys[*index]).collect();
                self.unlink(StoreOp::Get, &doomed).await?;
                for _ in &corrupt {
                    self.counters.incr(Event::CorruptDeleted);
                }
            }
        }
        Ok(())
    }

    /// Drops the entries whose tags moved on: one `MGET` of every tag the
    /// batch's entries carry.
    async fn check_tags<V>(&self, found: &mut [Found<V>]) -> Result<()> {
        let mut names: Vec<&str> = Vec::new();
        for stored in found.iter().flatten().flatten() {
            for (name, _) in stored.envelope.tags().into_iter().flat_map(TagStamps::iter) {
                names.push(name);
            }
        }
        names.sort_unstable();
        names.dedup();
        let versions = self.current_versions(&names).await?;
        let current: HashMap<&str, Option<u64>> = names.into_iter().zip(versions).collect();
        let valid: Vec<bool> = found
            .iter()
            .map(|entry| match entry {
                Ok(Some(stored)) => stored.envelope.tags().is_none_or(|tags| {
                    tags.iter()
                        .all(|(name, version)| current.get(name) == Some(&Some(version)))
                }),
                _ => true,
            })
            .collect();
        for (entry, valid) in found.iter_mut().zip(valid) {
            if !valid {
                *entry = Ok(None);
            }
        }
        Ok(())
    }

    /// Every write in one round trip: one pipeline (standalone, Sentinel),
    /// or concurrent `SET`s that the cluster client sends to each key's
    /// master. Nothing is sent if any value cannot be encoded.
    pub(super) async fn set_many<V>(&self, writes: Vec<Write<'_, V>>) -> Result<()>
    where
        V: Serialize,
    {
        let mut commands = Vec::with_capacity(writes.len());
        for write in &writes {
            commands.push(self.set_command(write.key, &write.entry, write.ttl)?);
        }
        let replies = if self.connection.cluster().is_some() {
            let sent = try_join_all(commands.iter().map(|cmd| self.connection.query(cmd)));
            self.call(StoreOp::Set, None, sent).await?
        } else {
            let mut pipe = redis::pipe();
            for cmd in &commands {
                pipe.add_command(cmd.clone());
            }
            // Loaded values are sent once only: see `Resend`.
            let resend = Resend::for_writes(writes.iter().map(|write| &write.entry));
            let sent = self.connection.pipeline(&pipe, commands.len(), resend);
            self.call(StoreOp::Set, None, sent).await?
        };
        for (write, reply) in writes.iter().zip(replies) {
            if reply != Value::Okay {
                return Err(unexpected(StoreOp::Set, write.key, &Some(reply)));
            }
        }
        Ok(())
    }

    /// `UNLINK`s every key (by chunks, sent together); answers how many
    /// existed.
    pub(super) async fn delete_many(&self, keys: &[&str]) -> Result<usize> {
        self.unlink(StoreOp::Delete, keys).await
    }

    async fn unlink(&self, op: StoreOp, keys: &[&str]) -> Result<usize> {
        let commands: Vec<_> = keys
            .chunks(CHUNK)
            .map(|chunk| {
                let mut cmd = redis::cmd("UNLINK");
                for key in chunk {
                    cmd.arg(self.key_arg(key));
                }
                cmd
            })
            .collect();
        let sent = try_join_all(commands.iter().map(|cmd| self.connection.query(cmd)));
        let replies = self.call(op, None, sent).await?;
        let mut deleted = 0;
        for reply in replies {
            match reply {
                Value::Int(n) => deleted += usize::try_from(n).unwrap_or(0),
                other => return Err(unexpected_batch(op, &other)),
            }
        }
        Ok(deleted)
    }
}

/// A batch answered with something else than the command's reply type.
fn unexpected_batch(op: StoreOp, reply: &Value) -> Error {
    Error::store(op, None, UnexpectedReply(format!("{reply:?}")))
}
