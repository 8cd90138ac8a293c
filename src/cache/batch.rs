//! Batch calls on [`Cache`]: `get_many`, `set_many`, `delete_many`, each
//! one store call (one round trip to Redis) however many keys. Loading in
//! batches is in `load_many.rs`.

use foldhash::fast::FixedState;
use std::collections::HashMap;

use super::stats::{Counter, Lookup};
use super::{check_key, Cache, Core, MAX_BATCH};
use crate::observe::spans::{traced, Op, OpSpan};
use crate::store::{Envelope, Write};
use crate::tag::Tags;
use crate::{Error, Result, Ttl};

/// The keys of one batch call, validated, each once.
pub(crate) struct Keys<'k> {
    /// Each distinct key, in the order of its first appearance.
    pub(crate) unique: Vec<&'k str>,
    /// For each key of the input, its index in `unique`.
    pub(crate) positions: Vec<usize>,
}

impl<'k> Keys<'k> {
    /// Validates every key and folds duplicates. One invalid key fails
    /// the whole batch, naming its position.
    pub(crate) fn new<K: AsRef<str>>(keys: &'k [K]) -> Result<Self> {
        if keys.len() > MAX_BATCH {
            return Err(Error::BatchTooLarge {
                len: keys.len(),
                max: MAX_BATCH,
            });
        }
        let mut unique = Vec::with_capacity(keys.len());
        let mut positions = Vec::with_capacity(keys.len());
        // Keys are the caller's, not an attacker's: a fixed seed is fine.
        let mut seen: HashMap<&str, usize, FixedState> =
            HashMap::with_capacity_and_hasher(keys.len(), FixedState::default());
        for (index, key) in keys.iter().enumerate() {
            let key = key.as_ref();
            check_key(key).map_err(|cause| Error::InvalidKeyInBatch {
                index,
                cause: Box::new(cause),
            })?;
            let next = unique.len();
            let position = *seen.entry(key).or_insert(next);
            if position == next {
                unique.push(key);
            }
            positions.push(position);
        }
        Ok(Keys { unique, positions })
    }

    /// Answers for the distinct keys, spread back over the input's order.
    pub(crate) fn spread<T: Clone>(&self, answers: Vec<T>) -> Vec<T> {
        if answers.len() == self.positions.len() {
            // No duplicates: already in input order.
            return answers;
        }
        self.positions
            .iter()
            .map(|&position| answers[position].clone())
            .collect()
    }
}

/// Checks a batch of writes: a map from each distinct key to the index of
/// its last entry (the one that wins).
fn last_writes<K: AsRef<str>, T>(entries: &[(K, T)]) -> Result<Vec<usize>> {
    if entries.len() > MAX_BATCH {
        return Err(Error::BatchTooLarge {
            len: entries.len(),
            max: MAX_BATCH,
        });
    }
    let mut last: HashMap<&str, usize, FixedState> =
        HashMap::with_capacity_and_hasher(entries.len(), FixedState::default());
    for (index, (key, _)) in entries.iter().enumerate() {
        let key = key.as_ref();
        check_key(key).map_err(|cause| Error::InvalidKeyInBatch {
            index,
            cause: Box::new(cause),
        })?;
        last.insert(key, index);
    }
    let mut winners: Vec<usize> = last.into_values().collect();
    winners.sort_unstable();
    Ok(winners)
}

impl<V> Cache<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// The values under `keys`, in the same order: `None` where there is
    /// none (or a cached "not found"), as [`get`](Self::get) answers each.
    ///
    /// One store call for the whole batch: one `MGET` on Redis (one per
    /// master holding the keys on a Cluster), L1 first then one `MGET` for
    /// the rest on the hybrid store.
    ///
    /// - **Duplicates** are read once and answered at each of their
    ///   positions.
    /// - **Limits**: at most [`MAX_BATCH`] keys, else
    ///   [`Error::BatchTooLarge`]; one empty or too long key fails the call
    ///   with [`Error::InvalidKeyInBatch`], naming its position, before
    ///   anything is read. An empty batch answers at once.
    /// - **Failures**: the call fails as `get` would for any of its keys (a
    ///   store that cannot be reached, bytes that do not decode).
    ///
    /// ```
    /// use cachex::{Cache, Ttl};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let cache: Cache<u32> = Cache::builder().build();
    /// cache.set_many([("a", 1), ("b", 2)], Ttl::Default).await?;
    /// assert_eq!(cache.get_many(&["a", "x", "b", "a"]).await?, [Some(1), None, Some(2), Some(1)]);
    /// # Ok::<(), cachex::Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn get_many<K: AsRef<str>>(&self, keys: &[K]) -> Result<Vec<Option<V>>> {
        let span = OpSpan::new(&self.core.observer, Op::GetMany, None);
        span.keys(keys.len());
        let result = traced!(span, self.core.get_many(keys, &span));
        span.finish(&result);
        result
    }

    /// Stores every `(key, value)` of `entries` for `ttl`, as
    /// [`set`](Self::set) does each: [`Ttl::Default`] jitters each key's
    /// TTL on its own. One store call for the whole batch (one pipeline on
    /// Redis; on the hybrid store, one invalidation message for all the
    /// keys).
    ///
    /// When a key appears more than once, its last value wins. Limits and
    /// invalid keys as for [`get_many`](Self::get_many): nothing is
    /// written if any key is refused. On a store error some of the entries
    /// may have been written.
    pub async fn set_many<K, I>(&self, entries: I, ttl: Ttl) -> Result<()>
    where
        K: AsRef<str>,
        I: IntoIterator<Item = (K, V)>,
    {
        let entries: Vec<(K, V)> = entries.into_iter().collect();
        let span = OpSpan::new(&self.core.observer, Op::SetMany, None);
        span.keys(entries.len());
        let result = traced!(span, self.core.set_many(entries, ttl, None));
        span.finish(&result);
        result
    }

    /// Removes the entries under `keys` (values and cached "not found"
    /// alike), as [`delete`](Self::delete) does each; answers how many
    /// there were. One store call for the whole batch (one `UNLINK` on
    /// Redis; on the hybrid store, one invalidation message).
    ///
    /// Duplicates are removed once. Limits and invalid keys as for
    /// [`get_many`](Self::get_many).
    pub async fn delete_many<K: AsRef<str>>(&self, keys: &[K]) -> Result<usize> {
        let span = OpSpan::new(&self.core.observer, Op::DeleteMany, None);
        span.keys(keys.len());
        let result = traced!(span, self.core.delete_many(keys));
        span.finish(&result);
        result
    }
}

impl<V> Core<V>
where
    V: Clone + Send + Sync + 'static,
{
    /// Counts one batch call of `keys` keys.
    pub(super) fn count_batch(&self, keys: usize) {
        self.counters.incr(Counter::BatchCalls);
        self.counters.add(Counter::BatchKeys, keys as u64);
    }

    async fn get_many<K: AsRef<str>>(&self, keys: &[K], span: &OpSpan) -> Result<Vec<Option<V>>> {
        self.ensure_open()?;
        let keys = Keys::new(keys)?;
        if keys.unique.is_empty() {
            return Ok(Vec::new());
        }
        self.count_batch(keys.positions.len());
        let found = self
            .store
            .get_many(&keys.unique)
            .await
            .inspect_err(|_| self.counters.incr(Counter::StoreErrors))?;
        let mut values = Vec::with_capacity(found.len());
        let mut hits = 0;
        for entry in found {
            let entry = entry
                .inspect_err(|_| self.counters.incr(Counter::StoreErrors))?
                .and_then(|stored| self.live(stored))
                .map(|stored| stored.envelope);
            let lookup = Lookup::classify(entry.as_ref().map(Envelope::value), true);
            self.counters.incr(lookup.counter());
            hits += usize::from(lookup.answered());
            values.push(entry.and_then(Envelope::into_value));
        }
        span.batch_hits(hits);
        Ok(keys.spread(values))
    }

    pub(super) async fn set_many<K: AsRef<str>>(
        &self,
        entries: Vec<(K, V)>,
        ttl: Ttl,
        tags: Option<&Tags>,
    ) -> Result<()> {
        self.ensure_open()?;
        let winners = last_writes(&entries)?;
        if winners.is_empty() {
            return Ok(());
        }
        let stamps = match tags {
            Some(tags) => Some(self.tag_stamps(tags).await?),
            None => None,
        };
        self.count_batch(entries.len());
        let mut writes = Vec::with_capacity(winners.len());
        let mut entries: Vec<Option<(K, V)>> = entries.into_iter().map(Some).collect();
        for index in &winners {
            if let Some((key, value)) = entries[*index].take() {
                writes.push((key, value));
            }
        }
        let writes: Vec<Write<'_, V>> = writes
            .iter()
            .map(|(key, value)| {
                let key = key.as_ref();
                self.flights.forget(key);
                let mut entry = Envelope::found(value.clone());
                entry.set_tags(stamps.clone());
                Write {
                    key,
                    entry,
                    ttl: self.physical_ttl(self.resolve(ttl)),
                }
            })
            .collect();
        let count = writes.len() as u64;
        let written = self.store.set_many(writes).await;
        if written.is_ok() {
            self.counters.add(Counter::Sets, count);
        } else {
            self.counters.incr(Counter::StoreErrors);
        }
        written
    }

    async fn delete_many<K: AsRef<str>>(&self, keys: &[K]) -> Result<usize> {
        self.ensure_open()?;
        let keys = Keys::new(keys)?;
        if keys.unique.is_empty() {
            return Ok(0);
        }
        self.count_batch(keys.positions.len());
        for key in &keys.unique {
            self.flights.forget(key);
        }
        let deleted = self.store.delete_many(&keys.unique).await;
        match &deleted {
            Ok(_) => self
                .counters
                .add(Counter::Deletes, keys.unique.len() as u64),
            Err(_) => self.counters.incr(Counter::StoreErrors),
        }
        deleted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_fold_and_spread_back() {
        let keys = Keys::new(&["a", "b", "a", "c", "b"]).unwrap();
        assert_eq!(keys.unique, ["a", "b", "c"]);
        assert_eq!(keys.positions, [0, 1, 0, 2, 1]);
        assert_eq!(keys.spread(vec![1, 2, 3]), [1, 2, 1, 3, 2]);
    }

    #[test]
    fn one_bad_key_fails_the_batch_by_position() {
        let long = "k".repeat(crate::MAX_KEY_LEN + 1);
        let err = Keys::new(&["a", "", "b"]).err().unwrap();
        assert!(matches!(
            &err,
            Error::InvalidKeyInBatch { index: 1, cause } if matches!(**cause, Error::EmptyKey)
        ));
        assert!(err.is_invalid_key());
        let err = Keys::new(&["a", long.as_str()]).err().unwrap();
        assert!(matches!(err, Error::InvalidKeyInBatch { index: 1, .. }));
        let too_many = vec!["k"; MAX_BATCH + 1];
        assert!(matches!(
            Keys::new(&too_many).err().unwrap(),
            Error::BatchTooLarge { len, max: MAX_BATCH } if len == MAX_BATCH + 1
        ));
    }

    #[test]
    fn the_last_write_of_a_key_wins() {
        let entries = [("a", 1), ("b", 2), ("a", 3)];
        assert_eq!(last_writes(&entries).unwrap(), [1, 2]);
        assert!(last_writes(&[("", 1)]).is_err());
    }
}
