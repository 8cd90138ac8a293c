//! Counters of what went wrong, cheap enough to keep always.

use std::sync::atomic::{AtomicU64, Ordering};

use redis::RedisError;

/// A snapshot of a [`RedisStore`](super::RedisStore)'s error counters
/// (since it was built; shared by its clones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Reads (`get`, `Cache::get`) that found a live entry.
    pub hits: u64,
    /// Reads that found nothing (or only bytes that were treated as a miss).
    pub misses: u64,
    /// Stored values that could not be decoded (foreign, corrupt, another
    /// codec's or a future format's), or values that could not be encoded.
    pub codec_errors: u64,
    /// Undecodable values deleted under
    /// [`OnCorrupt::MissAndDelete`](super::OnCorrupt::MissAndDelete).
    pub corrupt_deleted: u64,
    /// Calls that ran out of time.
    pub timeouts: u64,
    /// Calls that failed because Redis could not be reached or the
    /// connection dropped.
    pub connection_errors: u64,
    /// Other errors Redis answered with (out of memory, a read-only
    /// replica, ...).
    pub server_errors: u64,
    /// Writes refused before sending because the value was over the size
    /// limit.
    pub oversized: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    codec_errors: AtomicU64,
    corrupt_deleted: AtomicU64,
    timeouts: AtomicU64,
    connection_errors: AtomicU64,
    server_errors: AtomicU64,
    oversized: AtomicU64,
}

/// Which counter an event goes to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    Hit,
    Miss,
    CodecError,
    CorruptDeleted,
    Timeout,
    Oversized,
}

impl RedisStats {
    /// Every failure counted: codec errors, timeouts, connection and server
    /// errors, refused oversized values.
    pub fn errors(&self) -> u64 {
        self.codec_errors
            + self.timeouts
            + self.connection_errors
            + self.server_errors
            + self.oversized
    }
}

impl Counters {
    /// Counts a read's outcome.
    pub(crate) fn lookup(&self, found: bool) {
        self.incr(if found { Event::Hit } else { Event::Miss });
    }

    pub(crate) fn incr(&self, event: Event) {
        let counter = match event {
            Event::Hit => &self.hits,
            Event::Miss => &self.misses,
            Event::CodecError => &self.codec_errors,
            Event::CorruptDeleted => &self.corrupt_deleted,
            Event::Timeout => &self.timeouts,
            Event::Oversized => &self.oversized,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn redis_error(&self, error: &RedisError) {
        let counter = if is_connection_error(error) {
            &self.connection_errors
        } else {
            &self.server_errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RedisStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RedisStats {
            hits: get(&self.hits),
            misses: get(&self.misses),
            codec_errors: get(&self.codec_errors),
            corrupt_deleted: get(&self.corrupt_deleted),
            timeouts: get(&self.timeouts),
            connection_errors: get(&self.connection_errors),
            server_errors: get(&self.server_errors),
            oversized: get(&self.oversized),
        }
    }
}

/// Whether `error` means the server is out of reach (as opposed to a
/// server that answered with an error).
pub(crate) fn is_connection_error(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
        || error.is_timeout()
}
