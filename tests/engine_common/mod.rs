//! Helpers shared by the engine test suites: a manually driven clock and a
//! recording eviction listener.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cachex::RemovalCause;

/// A clock that only moves when told to. Cheap to clone; clones share time.
#[derive(Clone)]
pub struct ManualClock {
    base: Instant,
    offset_ns: Arc<AtomicU64>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    pub fn new() -> Self {
        ManualClock {
            base: Instant::now(),
            offset_ns: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A time source for `MemoryCacheBuilder::clock`.
    pub fn source(&self) -> impl Fn() -> Instant + Send + Sync + 'static {
        let base = self.base;
        let offset = Arc::clone(&self.offset_ns);
        move || base + Duration::from_nanos(offset.load(Ordering::SeqCst))
    }

    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).expect("advance fits in u64 nanoseconds");
        self.offset_ns.fetch_add(nanos, Ordering::SeqCst);
    }

    pub fn advance_ms(&self, ms: u64) {
        self.advance(Duration::from_millis(ms));
    }

    /// Nanoseconds since this clock was created (and since any cache built
    /// with it was built, as long as the clock was not advanced before).
    pub fn now_ns(&self) -> u64 {
        self.offset_ns.load(Ordering::SeqCst)
    }
}

/// One call of the eviction listener.
pub type Event<K, V> = (K, V, RemovalCause);

/// Records every listener call, in order.
pub struct Recorder<K, V> {
    events: Arc<Mutex<Vec<Event<K, V>>>>,
}

impl<K, V> Clone for Recorder<K, V> {
    fn clone(&self) -> Self {
        Recorder {
            events: Arc::clone(&self.events),
        }
    }
}

impl<K: Send + 'static, V: Send + 'static> Default for Recorder<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Send + 'static, V: Send + 'static> Recorder<K, V> {
    pub fn new() -> Self {
        Recorder {
            events: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// A listener for `MemoryCacheBuilder::eviction_listener`.
    pub fn listener(&self) -> impl Fn(K, V, RemovalCause) + Send + Sync + 'static {
        let events = Arc::clone(&self.events);
        move |k, v, cause| events.lock().unwrap().push((k, v, cause))
    }

    /// Takes the events recorded since the last call.
    pub fn take(&self) -> Vec<Event<K, V>> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }

    pub fn count(&self) -> usize {
        self.events.lock().unwrap().len()
    }
}
