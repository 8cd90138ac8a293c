//! Intrusive doubly linked lists over slot indices.
//!
//! A shard keeps its entries densely indexed (`slot.rs`); the policy queues
//! and the timer-wheel buckets are lists threaded through them by `u32`
//! indices stored in each entry's links, so membership costs no allocation. A node at
//! either end of a list stores `END | list_id` instead of a neighbour, which
//! lets a node be unlinked without knowing which list holds it.

/// "Not linked": both links of a node that is in no list.
pub(crate) const NONE: u32 = u32::MAX;
/// Marks a link that points at a list end rather than a neighbour.
const END: u32 = 1 << 31;

/// A node's two links: neighbour indices, or `END | list` at the ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    prev: u32,
    next: u32,
}

impl Link {
    pub(crate) const UNLINKED: Link = Link {
        prev: NONE,
        next: NONE,
    };

    pub(crate) fn is_linked(&self) -> bool {
        self.prev != NONE
    }
}

/// Gives a list set access to the links stored in the slots.
pub(crate) trait LinkArena {
    fn link(&mut self, idx: u32) -> &mut Link;
}

/// A fixed number of lists sharing one arena of nodes.
#[derive(Debug)]
pub(crate) struct Lists {
    heads: Box<[u32]>,
    tails: Box<[u32]>,
}

impl Lists {
    pub(crate) fn new(count: usize) -> Self {
        Lists {
            heads: vec![NONE; count].into_boxed_slice(),
            tails: vec![NONE; count].into_boxed_slice(),
        }
    }

    /// The oldest node of `list`.
    pub(crate) fn head(&self, list: usize) -> Option<u32> {
        let head = self.heads[list];
        (head != NONE).then_some(head)
    }

    /// Appends `idx` (which must be unlinked) at the tail of `list`.
    pub(crate) fn push_back(&mut self, arena: &mut impl LinkArena, list: usize, idx: u32) {
        debug_assert!(!arena.link(idx).is_linked());
        let end = END | list as u32;
        let tail = self.tails[list];
        if tail == NONE {
            self.heads[list] = idx;
            *arena.link(idx) = Link {
                prev: end,
                next: end,
            };
        } else {
            arena.link(tail).next = idx;
            *arena.link(idx) = Link {
                prev: tail,
                next: end,
            };
        }
        self.tails[list] = idx;
    }

    /// Removes `idx` from whichever list holds it; a no-op if it is unlinked.
    pub(crate) fn unlink(&mut self, arena: &mut impl LinkArena, idx: u32) {
        let Link { prev, next } = *arena.link(idx);
        if prev == NONE {
            return;
        }
        self.point_prev_at(arena, prev, next);
        self.point_next_at(arena, next, prev);
        *arena.link(idx) = Link::UNLINKED;
    }

    /// Moves `idx` to the tail of `list` (it may be in any list, or none).
    pub(crate) fn move_to_back(&mut self, arena: &mut impl LinkArena, list: usize, idx: u32) {
        self.unlink(arena, idx);
        self.push_back(arena, list, idx);
    }

    /// The node stored at `from` is about to move to index `to` (a
    /// `swap_remove`); repoint its neighbours and list ends at `to`.
    pub(crate) fn relocate(&mut self, arena: &mut impl LinkArena, from: u32, to: u32) {
        let Link { prev, next } = *arena.link(from);
        if prev == NONE {
            return;
        }
        self.point_prev_at(arena, prev, to);
        self.point_next_at(arena, next, to);
    }

    /// Detaches every node of `list` and returns the first; walk the chain
    /// with [`Lists::detached_next`]. The nodes keep their stale links until
    /// each is pushed elsewhere, and must all be relinked or marked unlinked.
    pub(crate) fn take(&mut self, list: usize) -> Option<u32> {
        let head = self.head(list)?;
        self.heads[list] = NONE;
        self.tails[list] = NONE;
        Some(head)
    }

    /// The successor of `idx` in a chain detached by [`Lists::take`].
    pub(crate) fn detached_next(arena: &mut impl LinkArena, idx: u32) -> Option<u32> {
        let next = arena.link(idx).next;
        (next & END == 0).then_some(next)
    }

    /// Marks a node of a detached chain as unlinked, before it is pushed
    /// into another list.
    pub(crate) fn forget(arena: &mut impl LinkArena, idx: u32) {
        *arena.link(idx) = Link::UNLINKED;
    }

    /// Empties every list without touching the nodes (used by `clear`).
    pub(crate) fn reset(&mut self) {
        self.heads.fill(NONE);
        self.tails.fill(NONE);
    }

    /// `prev` (a node or a list's head end) should now point forward at `target`.
    fn point_prev_at(&mut self, arena: &mut impl LinkArena, prev: u32, target: u32) {
        if prev & END != 0 {
            let list = (prev & !END) as usize;
            self.heads[list] = if target & END != 0 { NONE } else { target };
        } else {
            arena.link(prev).next = target;
        }
    }

    /// `next` (a node or a list's tail end) should now point back at `target`.
    fn point_next_at(&mut self, arena: &mut impl LinkArena, next: u32, target: u32) {
        if next & END != 0 {
            let list = (next & !END) as usize;
            self.tails[list] = if target & END != 0 { NONE } else { target };
        } else {
            arena.link(next).prev = target;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Arena(Vec<Link>);
    impl LinkArena for Arena {
        fn link(&mut self, idx: u32) -> &mut Link {
            &mut self.0[idx as usize]
        }
    }

    fn collect(lists: &Lists, arena: &mut Arena, list: usize) -> Vec<u32> {
        let mut out = Vec::new();
        let mut cur = lists.head(list);
        while let Some(idx) = cur {
            out.push(idx);
            cur = Lists::detached_next(arena, idx);
        }
        out
    }

    #[test]
    fn push_unlink_and_move() {
        let mut arena = Arena(vec![Link::UNLINKED; 5]);
        let mut lists = Lists::new(2);
        for i in 0..4 {
            lists.push_back(&mut arena, 0, i);
        }
        assert_eq!(collect(&lists, &mut arena, 0), [0, 1, 2, 3]);
        lists.unlink(&mut arena, 0);
        lists.unlink(&mut arena, 3);
        lists.unlink(&mut arena, 3); // already unlinked: no-op
        assert_eq!(collect(&lists, &mut arena, 0), [1, 2]);
        lists.move_to_back(&mut arena, 1, 1);
        assert_eq!(collect(&lists, &mut arena, 0), [2]);
        assert_eq!(collect(&lists, &mut arena, 1), [1]);
        lists.unlink(&mut arena, 2);
        assert_eq!(lists.head(0), None);
    }

    #[test]
    fn relocate_keeps_neighbours_consistent() {
        let mut arena = Arena(vec![Link::UNLINKED; 4]);
        let mut lists = Lists::new(1);
        for i in [1, 3, 2] {
            lists.push_back(&mut arena, 0, i);
        }
        // Simulate swap_remove of index 0 (unlinked) with the last slot, 3.
        lists.relocate(&mut arena, 3, 0);
        arena.0.swap_remove(0);
        assert_eq!(collect(&lists, &mut arena, 0), [1, 0, 2]);
        // And relocating a list end.
        lists.relocate(&mut arena, 2, 3);
        let moved = arena.0[2];
        arena.0.push(moved);
        arena.0[2] = Link::UNLINKED;
        assert_eq!(collect(&lists, &mut arena, 0), [1, 0, 3]);
    }
}
