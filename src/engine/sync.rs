//! The synchronisation primitives [`ShardLock`](super::shard_lock) is built
//! on: the standard library's and parking_lot's normally, loom's when the
//! crate is built with `--cfg cachex_loom` to model-check the lock (see
//! `scripts/test`). Only the shard lock goes through this module; it is the
//! one place where the engine's correctness rests on memory orderings.

#[cfg(not(cachex_loom))]
pub(crate) use std::{
    hint::spin_loop,
    sync::atomic::{fence, AtomicBool, AtomicU64},
    thread::yield_now,
};

#[cfg(cachex_loom)]
pub(crate) use loom::{
    hint::spin_loop,
    sync::atomic::{fence, AtomicBool, AtomicU64},
    thread::yield_now,
};

/// A plain reader-writer lock protecting nothing itself: writers and the
/// readers that cannot use their reader slot take it.
#[cfg(not(cachex_loom))]
#[derive(Default)]
pub(crate) struct InnerLock(parking_lot::RwLock<()>);
#[cfg(not(cachex_loom))]
pub(crate) type InnerReadGuard<'a> = parking_lot::RwLockReadGuard<'a, ()>;
#[cfg(not(cachex_loom))]
pub(crate) type InnerWriteGuard<'a> = parking_lot::RwLockWriteGuard<'a, ()>;

#[cfg(not(cachex_loom))]
impl InnerLock {
    #[inline]
    pub(crate) fn read(&self) -> InnerReadGuard<'_> {
        self.0.read()
    }

    #[inline]
    pub(crate) fn write(&self) -> InnerWriteGuard<'_> {
        self.0.write()
    }

    #[inline]
    pub(crate) fn try_write(&self) -> Option<InnerWriteGuard<'_>> {
        self.0.try_write()
    }
}

#[cfg(cachex_loom)]
#[derive(Default)]
pub(crate) struct InnerLock(loom::sync::RwLock<()>);
#[cfg(cachex_loom)]
pub(crate) type InnerReadGuard<'a> = loom::sync::RwLockReadGuard<'a, ()>;
#[cfg(cachex_loom)]
pub(crate) type InnerWriteGuard<'a> = loom::sync::RwLockWriteGuard<'a, ()>;

#[cfg(cachex_loom)]
impl InnerLock {
    #[inline]
    pub(crate) fn read(&self) -> InnerReadGuard<'_> {
        self.0
            .read()
            .expect("the loom model never poisons the lock")
    }

    #[inline]
    pub(crate) fn write(&self) -> InnerWriteGuard<'_> {
        self.0
            .write()
            .expect("the loom model never poisons the lock")
    }

    #[inline]
    pub(crate) fn try_write(&self) -> Option<InnerWriteGuard<'_>> {
        self.0.try_write().ok()
    }
}

/// The cell holding a shard's state, with loom's interface: access goes
/// through pointers (`ConstPtr`, `MutPtr`) held for as long as the access
/// lasts (a read, a write guard), so that under loom every access is checked for races
/// against the others. Outside loom they are plain raw pointers.
#[cfg(cachex_loom)]
pub(crate) use loom::cell::{MutPtr, UnsafeCell};

#[cfg(not(cachex_loom))]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(cachex_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    pub(crate) fn get(&self) -> ConstPtr<T> {
        ConstPtr(self.0.get())
    }

    pub(crate) fn get_mut(&self) -> MutPtr<T> {
        MutPtr(self.0.get())
    }
}

#[cfg(not(cachex_loom))]
pub(crate) struct ConstPtr<T>(*const T);

#[cfg(not(cachex_loom))]
impl<T> ConstPtr<T> {
    /// # Safety
    /// The cell must outlive the returned reference, and no `&mut T` may
    /// exist while it lives.
    pub(crate) unsafe fn deref(&self) -> &T {
        // SAFETY: the caller's promise.
        unsafe { &*self.0 }
    }
}

#[cfg(not(cachex_loom))]
pub(crate) struct MutPtr<T>(*mut T);

#[cfg(not(cachex_loom))]
impl<T> MutPtr<T> {
    /// # Safety
    /// The cell must outlive the returned reference, and no other reference
    /// to the value may exist while it lives.
    // `&self` in, `&mut T` out, as loom's `MutPtr::deref`: uniqueness comes
    // from the lock, not from the borrow.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn deref(&self) -> &mut T {
        // SAFETY: the caller's promise.
        unsafe { &mut *self.0 }
    }
}
