//! One L2 read per key at a time: concurrent L1 misses of a key share it.
//!
//! Without this, N tasks missing the same key would send N identical reads
//! to Redis, and a cache's singleflight (which starts only after the read
//! missed) would not prevent it. The read is a [`Shared`] future: each
//! caller polls it, any of them may be dropped, and the read goes on as
//! long as one caller still waits, so no caller is left waiting on a read
//! that nobody drives. The map holds it weakly: when every caller has gone,
//! the read is dropped and a later miss starts a new one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::future::{BoxFuture, FutureExt, Shared, WeakShared};
use parking_lot::Mutex;

use crate::store::Stored;
use crate::Result;

pub(crate) type Read<V> = BoxFuture<'static, Result<Option<Stored<V>>>>;

/// A read under way: its id (to tell it from a newer read of the key) and
/// a weak handle on it.
type Entry<V> = (u64, WeakShared<Read<V>>);

pub(crate) struct Flights<V> {
    map: Mutex<HashMap<String, Entry<V>>>,
    next_id: AtomicU64,
    pub(crate) joined: AtomicU64,
}

impl<V: Clone + Send + Sync + 'static> Flights<V> {
    pub(crate) fn new() -> Self {
        Flights {
            map: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            joined: AtomicU64::new(0),
        }
    }

    /// The read of `key` under way, or a new one made by `start`. `start`
    /// runs under the map's lock (it must only build the future, and take
    /// the L1 ticket: a write that forgets the key after this returns is
    /// then certain to be seen by the read's promotion check).
    pub(crate) fn join_or_start(
        self: &Arc<Self>,
        key: &str,
        start: impl FnOnce() -> Read<V>,
    ) -> Shared<Read<V>> {
        let mut map = self.map.lock();
        if let Some(read) = map.get(key).and_then(|(_, weak)| weak.upgrade()) {
            self.joined.fetch_add(1, Ordering::Relaxed);
            return read;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let done = Done {
            flights: Arc::clone(self),
            key: key.to_owned(),
            id,
        };
        let read = start();
        let read: Read<V> = async move {
            let _done = done;
            read.await
        }
        .boxed();
        let read = read.shared();
        if let Some(weak) = read.downgrade() {
            map.insert(key.to_owned(), (id, weak));
        }
        read
    }

    /// The reads of `keys`: each joins the read of its key under way, and
    /// the keys with none are read together by the one batch read `start`
    /// makes (given those keys, in order; it runs under the map's lock as
    /// for [`join_or_start`](Self::join_or_start)). Each key's read is
    /// registered on its own, so a later single miss (or batch) of one of
    /// those keys shares the batch's read.
    pub(crate) fn join_or_start_many(
        self: &Arc<Self>,
        keys: &[&str],
        start: impl FnOnce(&[&str]) -> BoxFuture<'static, Vec<Result<Option<Stored<V>>>>>,
    ) -> Vec<Shared<Read<V>>> {
        let mut map = self.map.lock();
        let mut reads: Vec<Option<Shared<Read<V>>>> = keys
            .iter()
            .map(|key| map.get(*key).and_then(|(_, weak)| weak.upgrade()))
            .collect();
        let joined = reads.iter().filter(|read| read.is_some()).count();
        self.joined.fetch_add(joined as u64, Ordering::Relaxed);
        let fresh: Vec<&str> = keys
            .iter()
            .zip(&reads)
            .filter(|(_, read)| read.is_none())
            .map(|(key, _)| *key)
            .collect();
        if !fresh.is_empty() {
            // In an `Arc`: every key's read gets the batch's answers, and
            // `Shared` hands each poller a clone.
            let batch = start(&fresh).map(Arc::new).boxed().shared();
            let mut next = 0;
            for (key, read) in keys.iter().zip(reads.iter_mut()) {
                if read.is_some() {
                    continue;
                }
                let index = next;
                next += 1;
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let done = Done {
                    flights: Arc::clone(self),
                    key: (*key).to_owned(),
                    id,
                };
                let batch = batch.clone();
                let one: Read<V> = async move {
                    let _done = done;
                    let all = batch.await;
                    all[index].clone()
                }
                .boxed();
                let one = one.shared();
                if let Some(weak) = one.downgrade() {
                    map.insert((*key).to_owned(), (id, weak));
                }
                *read = Some(one);
            }
        }
        reads.into_iter().flatten().collect()
    }

    /// Later misses of `key` start a new read instead of joining the one
    /// under way (which may have read what a write just replaced).
    pub(crate) fn forget(&self, key: &str) {
        self.map.lock().remove(key);
    }

    pub(crate) fn forget_all(&self) {
        self.map.lock().clear();
    }
}

/// Removes its read from the map when the read ends or is abandoned,
/// unless a newer read has replaced it.
struct Done<V> {
    flights: Arc<Flights<V>>,
    key: String,
    id: u64,
}

impl<V> Drop for Done<V> {
    fn drop(&mut self) {
        let mut map = self.flights.map.lock();
        if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            map.remove(&self.key);
        }
    }
}
