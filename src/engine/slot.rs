//! One cached entry as a shard stores it, and the views the policy and the
//! timer wheel take of a shard's slots.
//!
//! The layout is kept to 32 bytes beyond the key and value: this is where
//! most of the cache's memory goes.

use std::sync::atomic::{AtomicU32, Ordering};

use super::list::{Link, LinkArena};
use super::timer_wheel::TimerArena;
use crate::policy::{PolicyArena, Segment};

/// Deadline of an entry that never expires.
pub(crate) const NEVER: u64 = u64::MAX;

/// Largest weight one entry can carry (29 bits); heavier entries count as this.
pub(crate) const MAX_ENTRY_WEIGHT: u32 = (1 << 29) - 1;
const SEGMENT_SHIFT: u32 = 29;
const SEGMENT_MASK: u32 = 0b11 << SEGMENT_SHIFT;
const REFERENCED: u32 = 1 << 31;

/// Field order is fixed (`repr(C)`) so that what a hit reads (key, value,
/// deadline, meta, hash) sits in the first 32 bytes: with 48-byte slots in a
/// vector, a quarter of hits then touch two cache lines instead of half.
#[repr(C)]
pub(crate) struct Slot<K, V> {
    pub(crate) key: K,
    pub(crate) value: V,
    /// Nanoseconds on the cache's clock, or [`NEVER`].
    pub(crate) deadline: u64,
    /// `referenced:1 | segment:2 | weight:29`. Readers set `referenced`
    /// under the shard's shared lock; everything else changes only under
    /// its exclusive lock.
    meta: AtomicU32,
    /// 32 bits of the key's hash, for the frequency sketch.
    pub(crate) hash: u32,
    queue_link: Link,
    timer_link: Link,
}

impl<K, V> Slot<K, V> {
    pub(crate) fn new(key: K, value: V, hash: u32, weight: u32, deadline: u64) -> Self {
        Slot {
            key,
            value,
            deadline,
            queue_link: Link::UNLINKED,
            timer_link: Link::UNLINKED,
            hash,
            meta: AtomicU32::new(weight.min(MAX_ENTRY_WEIGHT)),
        }
    }

    pub(crate) fn weight(&self) -> u32 {
        self.meta.load(Ordering::Relaxed) & MAX_ENTRY_WEIGHT
    }

    pub(crate) fn set_weight(&mut self, weight: u32) {
        let meta = self.meta.get_mut();
        *meta = (*meta & !MAX_ENTRY_WEIGHT) | weight.min(MAX_ENTRY_WEIGHT);
    }

    /// Marks the entry as read; answers whether the bit was clear (this is
    /// the first read since the policy last looked at the entry). The load
    /// first keeps hot entries' cache lines clean: most reads of a hot key
    /// find the bit already set. Two readers racing store the same value
    /// (and may both answer `true`), and writers are excluded by the lock,
    /// so a plain store is enough.
    #[inline]
    pub(crate) fn mark_referenced(&self) -> bool {
        let meta = self.meta.load(Ordering::Relaxed);
        if meta & REFERENCED == 0 {
            self.meta.store(meta | REFERENCED, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Whether the entry was read since the policy last looked at it.
    pub(crate) fn is_referenced(&self) -> bool {
        self.meta.load(Ordering::Relaxed) & REFERENCED != 0
    }

    pub(crate) fn is_expired(&self, now: u64) -> bool {
        now >= self.deadline
    }

    /// Whether an explicit TTL was given (then reads must consult the clock).
    #[inline]
    pub(crate) fn expires(&self) -> bool {
        self.deadline != NEVER
    }
}

/// The shard's slots seen as the policy's queue nodes.
pub(crate) struct QueueView<'a, K, V>(pub(crate) &'a mut [Slot<K, V>]);

impl<K, V> LinkArena for QueueView<'_, K, V> {
    fn link(&mut self, idx: u32) -> &mut Link {
        &mut self.0[idx as usize].queue_link
    }
}

impl<K, V> PolicyArena for QueueView<'_, K, V> {
    fn weight(&mut self, idx: u32) -> u64 {
        u64::from(self.0[idx as usize].weight())
    }

    fn hash(&mut self, idx: u32) -> u32 {
        self.0[idx as usize].hash
    }

    fn segment(&mut self, idx: u32) -> Segment {
        let meta = *self.0[idx as usize].meta.get_mut();
        Segment::from_bits((meta & SEGMENT_MASK) >> SEGMENT_SHIFT)
    }

    fn set_segment(&mut self, idx: u32, segment: Segment) {
        let meta = self.0[idx as usize].meta.get_mut();
        *meta = (*meta & !SEGMENT_MASK) | ((segment as u32) << SEGMENT_SHIFT);
    }

    fn take_referenced(&mut self, idx: u32) -> bool {
        let meta = self.0[idx as usize].meta.get_mut();
        let was = *meta & REFERENCED != 0;
        *meta &= !REFERENCED;
        was
    }
}

/// The shard's slots seen as the timer wheel's nodes.
pub(crate) struct TimerView<'a, K, V>(pub(crate) &'a mut [Slot<K, V>]);

impl<K, V> LinkArena for TimerView<'_, K, V> {
    fn link(&mut self, idx: u32) -> &mut Link {
        &mut self.0[idx as usize].timer_link
    }
}

impl<K, V> TimerArena for TimerView<'_, K, V> {
    fn deadline(&mut self, idx: u32) -> u64 {
        self.0[idx as usize].deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_overhead_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Slot<u64, u64>>(), 48);
    }

    #[test]
    fn what_a_hit_reads_is_in_the_first_32_bytes() {
        type S = Slot<u64, u64>;
        for end in [
            std::mem::offset_of!(S, key) + 8,
            std::mem::offset_of!(S, value) + 8,
            std::mem::offset_of!(S, deadline) + 8,
            std::mem::offset_of!(S, meta) + 4,
            std::mem::offset_of!(S, hash) + 4,
        ] {
            assert!(end <= 32, "a hit's field ends at byte {end}");
        }
    }

    #[test]
    fn meta_fields_do_not_clobber_each_other() {
        let mut slots = vec![Slot::new(1u64, 2u64, 3, 7, NEVER)];
        let mut view = QueueView(&mut slots);
        view.set_segment(0, Segment::Protected);
        assert_eq!(view.weight(0), 7);
        assert!(view.0[0].mark_referenced());
        assert!(!view.0[0].mark_referenced(), "already set");
        assert_eq!(view.segment(0), Segment::Protected);
        assert!(view.take_referenced(0));
        assert!(!view.take_referenced(0));
        view.0[0].set_weight(u32::MAX);
        assert_eq!(view.weight(0), u64::from(MAX_ENTRY_WEIGHT));
        assert_eq!(view.segment(0), Segment::Protected);
    }
}
