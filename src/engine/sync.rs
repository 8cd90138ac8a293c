//! The synchronisation primitives [`ShardLock`](super::shard_lock) is built
//! on: the standard library's and parking_lot's normally, loom's when the
//! crate is built with `--cfg cachex_loom` to model-check the lock (see
//! `scripts/test`). Only the shard lock goes through this module; it is the
//! one place where the engine's correctness rests on memory orderings.

#[cfg(not(cachex_loom))]
pub(crate) use std::{
    hint::spin_loop,
    sync::atomic::{fence, AtomicBool, AtomicU32},
    thread::yield_now,
};

#[cfg(cachex_loom)]
pub(crate) use loom::{
    hint::spin_loop,
    sync::atomic::{fence, AtomicBool, AtomicU32},
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

/// The cell holding a shard's state. Access goes through pointers that the
/// guards hold for as long as they live, so that under loom every access is
/// checked for races against the others.
#[cfg(not(cachex_loom))]
pub(crate) struct DataCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(cachex_loom))]
impl<T> DataCell<T> {
    pub(crate) fn new(value: T) -> Self {
        DataCell(std::cell::UnsafeCell::new(value))
    }

    pub(crate) fn shared(&self) -> SharedPtr<T> {
        SharedPtr(self.0.get())
    }

    pub(crate) fn exclusive(&self) -> ExclusivePtr<T> {
        ExclusivePtr(self.0.get())
    }
}

#[cfg(not(cachex_loom))]
pub(crate) struct SharedPtr<T>(*const T);

#[cfg(not(cachex_loom))]
impl<T> SharedPtr<T> {
    /// # Safety
    /// No `&mut T` may exist while the returned reference lives.
    pub(crate) unsafe fn deref(&self) -> &T {
        // SAFETY: the pointer comes from a live `DataCell`, which outlives
        // the guard holding this pointer; exclusion is the caller's promise.
        unsafe { &*self.0 }
    }
}

#[cfg(not(cachex_loom))]
pub(crate) struct ExclusivePtr<T>(*mut T);

#[cfg(not(cachex_loom))]
impl<T> ExclusivePtr<T> {
    /// # Safety
    /// No `&mut T` may exist while the returned reference lives.
    pub(crate) unsafe fn get(&self) -> &T {
        // SAFETY: as for `SharedPtr::deref`; exclusion is the caller's promise.
        unsafe { &*self.0 }
    }

    /// # Safety
    /// No other reference to the value may exist while the returned one lives.
    pub(crate) unsafe fn get_mut(&mut self) -> &mut T {
        // SAFETY: as for `SharedPtr::deref`; uniqueness is the caller's promise.
        unsafe { &mut *self.0 }
    }
}

#[cfg(cachex_loom)]
pub(crate) struct DataCell<T>(loom::cell::UnsafeCell<T>);

#[cfg(cachex_loom)]
impl<T> DataCell<T> {
    pub(crate) fn new(value: T) -> Self {
        DataCell(loom::cell::UnsafeCell::new(value))
    }

    pub(crate) fn shared(&self) -> SharedPtr<T> {
        SharedPtr(self.0.get())
    }

    pub(crate) fn exclusive(&self) -> ExclusivePtr<T> {
        ExclusivePtr(self.0.get_mut())
    }
}

#[cfg(cachex_loom)]
pub(crate) struct SharedPtr<T>(loom::cell::ConstPtr<T>);

#[cfg(cachex_loom)]
impl<T> SharedPtr<T> {
    pub(crate) unsafe fn deref(&self) -> &T {
        // SAFETY: loom checks the exclusion this relies on.
        unsafe { self.0.deref() }
    }
}

#[cfg(cachex_loom)]
pub(crate) struct ExclusivePtr<T>(loom::cell::MutPtr<T>);

#[cfg(cachex_loom)]
impl<T> ExclusivePtr<T> {
    pub(crate) unsafe fn get(&self) -> &T {
        // SAFETY: loom checks the exclusion this relies on.
        unsafe { self.0.deref() }
    }

    pub(crate) unsafe fn get_mut(&mut self) -> &mut T {
        // SAFETY: loom checks the exclusion this relies on.
        unsafe { self.0.deref() }
    }
}
