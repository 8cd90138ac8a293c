//! A counting global allocator: wraps the system allocator and, once
//! [`enable`]d, tracks the bytes currently allocated.
//!
//! Counting is off until the memory workload turns it on, so the throughput
//! workloads pay only a relaxed load of a flag that is never written during
//! them (no shared counter bouncing between cores).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

/// The system allocator with live-byte accounting.
pub struct CountingAlloc;

static ENABLED: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// Starts counting. Memory freed later that was allocated before this call
/// is subtracted too, so only compare [`live_bytes`] readings taken after it
/// around code that allocates and frees its own memory.
pub fn enable() {
    ENABLED.store(true, Ordering::SeqCst);
}

/// Bytes allocated and not yet freed since counting started (requested
/// sizes, not the allocator's rounded-up blocks).
pub fn live_bytes() -> isize {
    LIVE.load(Ordering::SeqCst)
}

#[inline]
fn count(delta: isize) {
    if ENABLED.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the counting has no
// effect on the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}
