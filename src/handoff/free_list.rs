//! Lock-free stack of free slot indices (a Treiber stack with a tagged head).
//!
//! ```text
//! head: AtomicU64 = [ tag: u32 | index: u32 ]      next[i]: AtomicU32 (index below i, or NIL)
//! ```
//! `pop` reads the top index and its `next`, then swings the head with one compare-exchange that
//! also bumps the tag. The tag defeats ABA: if the top was popped and pushed back between our read
//! and our CAS, the index is the same but the tag is not, so the CAS fails and we retry instead of
//! installing a stale `next`. A 32-bit tag wraps only after 2^32 successful head updates inside one
//! preempted read-CAS window, which we treat as impossible (the same bound crossbeam and others
//! accept). `next` is an atomic because a thread that lost the race may read it while the winner's
//! owner rewrites it; the value it reads is then discarded by the failed CAS.
//!
//! Order is LIFO: the slot freed last is handed out next, which keeps hot slots in cache.

use crate::loom::{AtomicU32, AtomicU64, Ordering};

/// No index: the end of the stack.
pub(crate) const NIL: u32 = u32::MAX;

const INDEX_MASK: u64 = 0xffff_ffff;

/// A fixed-capacity lock-free stack holding each index in `0..N` at most once.
#[derive(Debug)]
pub(crate) struct FreeList<const N: usize> {
    /// `tag << 32 | index`; index NIL = empty. Written by every claimer and freer.
    head: AtomicU64,
    /// `next[i]`: the index below `i` while `i` is on the stack; meaningless otherwise.
    next: [AtomicU32; N],
}

impl<const N: usize> FreeList<N> {
    crate::maybe_const_fn! {
        /// An empty stack; [`fill`](Self::fill) puts every index on it.
        pub(crate) fn new() -> Self {
            Self { head: AtomicU64::new(NIL as u64), next: crate::const_array!(AtomicU32::new(NIL); N) }
        }
    }

    /// Puts every index on the stack so that `pop` returns 0, 1, 2, ... Only for a list no other
    /// thread can touch yet (the storage's first claim).
    pub(crate) fn fill(&self) {
        for (i, next) in self.next.iter().enumerate() {
            let below = if i + 1 < N { i as u32 + 1 } else { NIL };
            next.store(below, Ordering::Relaxed);
        }
        let top = if N > 0 { 0 } else { NIL };
        // Release: pairs with the Acquire in `pop`, publishing the `next` links above.
        self.head.store(top as u64, Ordering::Release);
    }

    /// Takes an index, or `None` when every index is in use.
    pub(crate) fn pop(&self) -> Option<u32> {
        // Acquire: pairs with the Release of the push that put `index` on top, so its `next`
        // link (and everything the freer wrote before freeing) is visible.
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let index = (head & INDEX_MASK) as u32;
            if index == NIL {
                return None;
            }
            let below = self.next[index as usize].load(Ordering::Relaxed);
            let new = (tag(head).wrapping_add(1) as u64) << 32 | below as u64;
            // AcqRel on success: Acquire as above; Release keeps later claimers ordered after us.
            match self
                .head
                .compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(index),
                Err(current) => head = current,
            }
        }
    }

    /// Returns `index` (which the caller owns and which is not on the stack) to the stack.
    pub(crate) fn push(&self, index: u32) {
        debug_assert!((index as usize) < N);
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            self.next[index as usize].store((head & INDEX_MASK) as u32, Ordering::Relaxed);
            let new = (tag(head).wrapping_add(1) as u64) << 32 | index as u64;
            // Release: publishes `next[index]` and the caller's writes to the slot to the next
            // `pop` (its Acquire).
            match self
                .head
                .compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(current) => head = current,
            }
        }
    }

    /// True when no index is free (a snapshot: it may change at once).
    #[allow(dead_code)] // tests
    pub(crate) fn is_empty(&self) -> bool {
        (self.head.load(Ordering::Acquire) & INDEX_MASK) as u32 == NIL
    }
}

fn tag(head: u64) -> u32 {
    (head >> 32) as u32
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn pops_in_index_order_after_fill_then_lifo() {
        // The loop relies on a freshly claimed storage handing out 0, 1, 2 ... and on the slot
        // freed last being reused first (it is the one still in cache).
        let list = FreeList::<4>::new();
        assert_eq!(list.pop(), None, "a list is empty until filled");
        list.fill();
        assert_eq!(list.pop(), Some(0));
        assert_eq!(list.pop(), Some(1));
        list.push(0);
        assert_eq!(list.pop(), Some(0));
        assert_eq!(list.pop(), Some(2));
        assert_eq!(list.pop(), Some(3));
        assert!(list.is_empty());
        assert_eq!(list.pop(), None);
        list.push(3);
        assert!(!list.is_empty());
    }

    #[test]
    fn head_tag_changes_on_every_update() {
        // ABA safety: the same index on top twice must look different to a stale CAS.
        let list = FreeList::<2>::new();
        list.fill();
        let before = list.head.load(Ordering::Relaxed);
        let i = list.pop().unwrap();
        list.push(i);
        let after = list.head.load(Ordering::Relaxed);
        assert_eq!(before & INDEX_MASK, after & INDEX_MASK);
        assert_ne!(before, after);
    }
}
