//! Lock-free stack of free slot indices (a Treiber stack with a tagged head).
//!
//! ```text
//! head: AtomicU64 = [ WAITERS: 1 | tag: 31 | index: 32 ]   next[i]: AtomicU32 = below(i) XOR (i + 1)
//! ```
//! `pop` reads the top index and its `next`, then swings the head with one compare-exchange that
//! also bumps the tag. The tag defeats ABA: if the top was popped and pushed back between our read
//! and our CAS, the index is the same but the tag is not, so the CAS fails and we retry instead of
//! installing a stale `next`. A 31-bit tag wraps only after 2^31 successful head updates inside one
//! preempted read-CAS window, which we treat as impossible (the same bound crossbeam and others
//! accept).
//!
//! `WAITERS` is the wait list's flag (`wait_list.rs`): set while a caller waits for an index.
//! Every update keeps it, so a push learns from its own compare-exchange whether anyone waits
//! (no fence, no second word), and a claim that must not overtake a waiter is refused by the
//! same look that finds the top ([`pop_unwaited`](FreeList::pop_unwaited)). `next` is an atomic because a thread that lost the race may read it while the winner's
//! owner rewrites it; the value it reads is then discarded by the failed CAS.
//!
//! A link is stored XORed with `i + 1`, and any index `>= N` means "none", so a list whose bytes
//! are all zero holds every index in order (0 on top): a full list can sit in a zero-initialised
//! `static` (the `.bss` section) with no initialisation pass. The buffer pool relies on this.
//!
//! Order is LIFO: the slot freed last is handed out next, which keeps hot slots in cache.

use crate::loom::{AtomicU32, AtomicU64, Ordering};

/// No index: the end of the stack (any value `>= N` reads as none).
pub(crate) const NIL: u32 = u32::MAX;

const INDEX_MASK: u64 = 0xffff_ffff;
/// Someone waits for an index (see the module doc).
const WAITERS: u64 = 1 << 63;
/// The tag's bits.
const TAG_MASK: u64 = 0x7fff_ffff << 32;

/// A fixed-capacity lock-free stack holding each index in `0..N` at most once.
///
/// `repr(C)`: `head` then `next`, so [`push_erased`] can return an index knowing only the list's
/// address (a pool buffer's drop does not know `N`).
#[derive(Debug)]
#[repr(C)]
pub(crate) struct FreeList<const N: usize> {
    /// `WAITERS | tag << 32 | index`; index `>= N` = empty. Written by every claimer and freer.
    head: AtomicU64,
    /// `next[i]`: the index below `i`, XOR `i + 1`, while `i` is on the stack.
    next: [AtomicU32; N],
}

impl<const N: usize> FreeList<N> {
    crate::loom::maybe_const_fn! {
        /// An empty stack; [`fill`](Self::fill) puts every index on it.
        pub(crate) fn new() -> Self {
            Self { head: AtomicU64::new(NIL as u64), next: crate::loom::const_array!(AtomicU32::new(0); N) }
        }
    }

    crate::loom::maybe_const_fn! {
        /// A stack holding every index, 0 on top; its bytes are all zero.
        pub(crate) fn full() -> Self {
            Self { head: AtomicU64::new(0), next: crate::loom::const_array!(AtomicU32::new(0); N) }
        }
    }

    /// Puts every index on the stack so that `pop` returns 0, 1, 2, ... Only for a list no other
    /// thread can touch yet (the storage's first claim).
    pub(crate) fn fill(&self) {
        for next in &self.next {
            // Zero: the index below `i` is `i + 1` (`N`, none, for the last).
            next.store(0, Ordering::Relaxed);
        }
        // Release: pairs with the Acquire in `pop`, publishing the `next` links above.
        self.head.store(0, Ordering::Release);
    }

    /// Takes an index, or `None` when every index is in use. Waiters or not (the wait list's
    /// own claim, under its mutex).
    #[inline]
    pub(crate) fn pop(&self) -> Option<u32> {
        self.pop_if(|_| true)
    }

    /// Takes an index unless someone waits for one (a newcomer never overtakes a waiter), or
    /// every index is in use: `None` then.
    #[inline]
    pub(crate) fn pop_unwaited(&self) -> Option<u32> {
        self.pop_if(|head| head & WAITERS == 0)
    }

    /// Pops while `may(head)` allows it.
    #[inline(always)]
    fn pop_if(&self, may: impl Fn(u64) -> bool) -> Option<u32> {
        // Acquire: pairs with the Release of the push that put `index` on top, so its `next`
        // link (and everything the freer wrote before freeing) is visible.
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let index = (head & INDEX_MASK) as u32;
            if index as usize >= N || !may(head) {
                return None;
            }
            let below = self.next[index as usize].load(Ordering::Relaxed) ^ (index + 1);
            // AcqRel on success: Acquire as above; Release keeps later claimers ordered after us.
            match self.head.compare_exchange_weak(
                head,
                bumped(head) | below as u64,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(index),
                Err(current) => head = current,
            }
        }
    }

    /// Returns `index` (which the caller owns and which is not on the stack) to the stack; true
    /// if someone waits for an index (`WAITERS` was set in the head this push replaced): the
    /// caller then serves the wait list.
    #[inline]
    pub(crate) fn push(&self, index: u32) -> bool {
        assert!((index as usize) < N, "index beyond the free list");
        // SAFETY: `self` is a live list and `index < N`.
        unsafe { push_erased(std::ptr::from_ref(self).cast(), index) }
    }

    /// True when no index is free (a snapshot: it may change at once).
    pub(crate) fn is_empty(&self) -> bool {
        (self.head.load(Ordering::Acquire) & INDEX_MASK) as usize >= N
    }

    /// Whether someone waits for an index (a snapshot: only the head's read-modify-writes,
    /// `push` and the pops, decide on it atomically).
    #[inline]
    pub(crate) fn has_waiters(&self) -> bool {
        self.head.load(Ordering::Relaxed) & WAITERS != 0
    }

    /// The wait list (under its mutex): a caller is about to wait. Every push after this one
    /// sees it; every push before it left its index where the caller's next `pop` finds it.
    pub(crate) fn set_waiters(&self) {
        // AcqRel: one read-modify-write of the head in its total order with the pushes.
        self.head.fetch_or(WAITERS, Ordering::AcqRel);
    }

    /// The wait list (under its mutex), found empty: nobody waits.
    pub(crate) fn clear_waiters(&self) {
        // AcqRel: as `set_waiters`.
        self.head.fetch_and(!WAITERS, Ordering::AcqRel);
    }
}

/// `head`'s `WAITERS` bit and tag, the tag bumped (wrapping inside its bits), without the index.
#[inline(always)]
fn bumped(head: u64) -> u64 {
    (head & WAITERS) | (head.wrapping_add(1 << 32) & TAG_MASK)
}

/// [`FreeList::push`] for a list known only by its address: true if someone waits.
///
/// # Safety
/// `list` points to a live `FreeList<N>` with `index < N`, and the caller owns `index` (it is
/// not on the stack).
#[inline]
pub(crate) unsafe fn push_erased(list: *const (), index: u32) -> bool {
    // SAFETY: `FreeList` is `repr(C)`: `head` at offset 0, then `next`, an array of `AtomicU32`
    // at the offset below (`AtomicU64` is 8-aligned and 8 bytes); `index < N` keeps the link
    // inside the array; the list is live (caller).
    let (head, link) = unsafe {
        let head = &*list.cast::<AtomicU64>();
        let next = list.cast::<u8>().add(NEXT_OFFSET).cast::<AtomicU32>();
        (head, &*next.add(index as usize))
    };
    let mut current = head.load(Ordering::Relaxed);
    loop {
        link.store(
            ((current & INDEX_MASK) as u32) ^ (index + 1),
            Ordering::Relaxed,
        );
        // Release: publishes `next[index]` and the caller's writes to the slot to the next
        // `pop` (its Acquire).
        match head.compare_exchange_weak(
            current,
            bumped(current) | index as u64,
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => return current & WAITERS != 0,
            Err(actual) => current = actual,
        }
    }
}

/// Where `next` starts in every `FreeList<N>`.
const NEXT_OFFSET: usize = std::mem::offset_of!(FreeList<1>, next);

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
    fn an_all_zero_list_is_full_in_index_order() {
        // The pool's `static` sits in .bss: zero bytes must mean "every index free, 0 first".
        // `full()` stores zero in every field (its padding is never read: that would be UB).
        let full = FreeList::<3>::full();
        assert_eq!(full.head.load(Ordering::Relaxed), 0);
        assert!(full.next.iter().all(|n| n.load(Ordering::Relaxed) == 0));
        // And memory that is all zero bytes, padding included, is such a list.
        // SAFETY: FreeList is plain atomics, for which all-zero bytes are a valid value.
        let list: FreeList<3> = unsafe { std::mem::MaybeUninit::zeroed().assume_init() };
        assert_eq!(
            [list.pop(), list.pop(), list.pop()],
            [Some(0), Some(1), Some(2)]
        );
        assert_eq!(list.pop(), None);
        list.push(1);
        list.push(2);
        assert_eq!(
            (list.pop(), list.pop(), list.pop()),
            (Some(2), Some(1), None)
        );
        // The erased push (a pool buffer's drop) is the same push.
        // SAFETY: `list` is live and 0 < 3 is not on the stack.
        unsafe { push_erased(std::ptr::from_ref(&list).cast(), 0) };
        assert_eq!(list.pop(), Some(0));
        assert_eq!(NEXT_OFFSET, std::mem::offset_of!(FreeList<64>, next));
    }

    #[test]
    fn the_waiters_flag_survives_every_update_and_the_tag_wrap() {
        // The wait list's flag must outlive pushes and pops (they carry it over) and a tag that
        // wraps must not carry into it.
        let list = FreeList::<2>::new();
        list.fill();
        list.set_waiters();
        assert_eq!(list.pop_unwaited(), None);
        let i = list.pop().unwrap();
        assert!(list.push(i));
        list.head.fetch_or(TAG_MASK, Ordering::Relaxed);
        let i = list.pop().unwrap();
        assert_eq!(
            list.head.load(Ordering::Relaxed) & TAG_MASK,
            0,
            "the tag wrapped"
        );
        assert!(list.has_waiters(), "without touching the flag");
        assert!(list.push(i));
        list.clear_waiters();
        assert!(!list.push(list.pop().unwrap()));
        assert_eq!(list.pop_unwaited(), Some(i));
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
