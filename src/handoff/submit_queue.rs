//! Lock-free multi-producer, single-consumer ring of slot indices: callers hand requests to the
//! loop through it.
//!
//! Based on Dmitry Vyukov's bounded queue, with two simplifications our storage allows:
//!
//! * **It can never be full.** Its capacity is `N` = SLOTS and only the owner of a slot pushes
//!   that slot's index, once per request, so at most `N` indices are ever in the ring. A producer
//!   therefore claims its position with one `fetch_add` on `tail` and never retries.
//! * **One consumer** (the loop thread) owns `head`, so popping needs no read-modify-write.
//!
//! Each cell carries a sequence stamp. For position `p` (cell `p % N`): stamp `p` means "empty,
//! ready for the producer of `p`"; stamp `p + 1` means "holds the index pushed at `p`"; after the
//! pop the consumer writes `p + N`, handing the cell to the producer one lap later.
//!
//! ```text
//!  producer: p = tail.fetch_add(1)   wait stamp == p   write index   stamp = p + 1 (Release)
//!  consumer: stamp(head) == head + 1 (Acquire)?  read index   stamp = head + N (Release)  head += 1
//! ```
//!
//! **Preemption.** A producer preempted between its `fetch_add` and its stamp store never stops
//! another producer: each has its own position and cell. It only delays the consumer from seeing
//! positions after its own until it resumes (the stall heapless deprecated its MPMC queue for).
//! The wake protocol copes: the loop does not spin on such a gap, it sleeps, and the stalled
//! producer's publish after its push wakes it (see `wake.rs`).
//!
//! **Why the producer's wait is never a real wait.** When the producer of `p` runs, position
//! `p - N` has been popped: positions claimed but not yet popped each hold a distinct slot that is
//! not free, our own slot among them, so there are at most `N` of them, `p - N` excluded. The
//! consumer's stamp store for `p - N` precedes (in real time) the freeing of the slot it popped, so
//! the wait loop only covers the visibility delay of that store.

use crate::loom::{spin_hint, AtomicU32, AtomicUsize, Ordering};

/// One position of the ring.
#[derive(Debug)]
struct Cell {
    /// Sequence stamp; see the module doc.
    stamp: AtomicUsize,
    /// The slot index, valid while `stamp == position + 1`.
    index: AtomicU32,
}

/// The ring: capacity `N`, a power of two.
/// `repr(C)`: `tail` first and `head` last, so that the two ends (written by different threads)
/// are a ring's length apart instead of sharing a cache line.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct SubmitQueue<const N: usize> {
    /// Next position a producer claims. Written by every producer.
    tail: AtomicUsize,
    cells: [Cell; N],
    /// Next position the consumer reads. Written by the consumer only (atomic so that `len`
    /// and loom see a well-defined value).
    head: AtomicUsize,
}

impl<const N: usize> SubmitQueue<N> {
    crate::loom::maybe_const_fn! {
        /// A ring whose cells are unstamped; [`reset`](Self::reset) readies it.
        pub(crate) fn new() -> Self {
            Self {
                tail: AtomicUsize::new(0),
                head: AtomicUsize::new(0),
                cells: crate::loom::const_array!(
                    Cell { stamp: AtomicUsize::new(0), index: AtomicU32::new(u32::MAX) };
                    N
                ),
            }
        }
    }

    /// Writes [`SubmitQueue::new`] into `ptr` cell by cell (no large stack temporary).
    ///
    /// # Safety
    /// `ptr` is valid for writes and aligned.
    pub(crate) unsafe fn init_at(ptr: *mut Self) {
        // SAFETY: every write stays inside the allocation behind `ptr` (contract).
        unsafe {
            core::ptr::addr_of_mut!((*ptr).tail).write(AtomicUsize::new(0));
            core::ptr::addr_of_mut!((*ptr).head).write(AtomicUsize::new(0));
            let cells = core::ptr::addr_of_mut!((*ptr).cells).cast::<Cell>();
            for i in 0..N {
                cells.add(i).write(Cell {
                    stamp: AtomicUsize::new(0),
                    index: AtomicU32::new(u32::MAX),
                });
            }
        }
    }

    /// Stamps every cell for lap 0. Only for a ring no other thread can touch (storage claim).
    pub(crate) fn reset(&self) {
        for (i, cell) in self.cells.iter().enumerate() {
            cell.stamp.store(i, Ordering::Relaxed);
        }
        self.head.store(0, Ordering::Relaxed);
        // Release: the claim that follows publishes the stamps to producers.
        self.tail.store(0, Ordering::Release);
    }

    /// Appends `index`. The caller owns the slot `index`, which is not in the ring; never fails.
    #[inline]
    pub(crate) fn push(&self, index: u32) {
        let pos = self.tail.fetch_add(1, Ordering::Relaxed);
        let cell = &self.cells[pos & (N - 1)];
        // Acquire: pairs with the consumer's Release stamp of the previous lap, so our write of
        // `index` cannot be overtaken by its read of the old one. Almost never loops (module doc).
        while cell.stamp.load(Ordering::Acquire) != pos {
            spin_hint();
        }
        cell.index.store(index, Ordering::Relaxed);
        // Release: publishes `index` and the request the caller wrote into the slot before
        // pushing; pairs with the Acquire in `pop`.
        cell.stamp.store(pos.wrapping_add(1), Ordering::Release);
    }

    /// Takes the oldest index whose push has finished, or `None` if the head position is empty or
    /// its producer is still mid-push. Consumer only.
    #[inline]
    pub(crate) fn pop(&self) -> Option<u32> {
        let pos = self.head.load(Ordering::Relaxed);
        let cell = &self.cells[pos & (N - 1)];
        // Acquire: pairs with the producer's Release stamp; makes the slot's request visible.
        if cell.stamp.load(Ordering::Acquire) != pos.wrapping_add(1) {
            return None;
        }
        let index = cell.index.load(Ordering::Relaxed);
        // Release: hands the cell to the producer of `pos + N` (its Acquire wait).
        cell.stamp.store(pos.wrapping_add(N), Ordering::Release);
        self.head.store(pos.wrapping_add(1), Ordering::Relaxed);
        Some(index)
    }

    /// True when the head position holds a finished push. Consumer only.
    #[inline]
    pub(crate) fn has_ready(&self) -> bool {
        let pos = self.head.load(Ordering::Relaxed);
        self.cells[pos & (N - 1)].stamp.load(Ordering::Acquire) == pos.wrapping_add(1)
    }

    /// Positions claimed by producers and not yet popped, including pushes still in progress.
    pub(crate) fn len(&self) -> usize {
        let tail = self.tail.load(Ordering::Acquire);
        tail.wrapping_sub(self.head.load(Ordering::Relaxed))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fifo_across_laps() {
        // Requests must reach the loop in the order their pushes finished, lap after lap.
        let q = SubmitQueue::<4>::new();
        q.reset();
        assert_eq!(q.pop(), None);
        for lap in 0..5u32 {
            for i in 0..4 {
                q.push(lap * 10 + i);
            }
            assert_eq!(q.len(), 4);
            assert!(q.has_ready());
            for i in 0..4 {
                assert_eq!(q.pop(), Some(lap * 10 + i));
            }
            assert_eq!(q.pop(), None);
            assert!(!q.has_ready());
        }
    }

    #[test]
    fn unfinished_push_hides_later_ones_but_does_not_block_them() {
        // A producer stalled after claiming its position must not stop other producers; the
        // consumer sees nothing past the gap until the stalled push completes.
        let q = SubmitQueue::<4>::new();
        q.reset();
        let stalled = q.tail.fetch_add(1, Ordering::Relaxed); // claimed, not written
        q.push(7);
        q.push(8);
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop(), None, "the gap hides the finished pushes");
        let cell = &q.cells[stalled & 3];
        cell.index.store(6, Ordering::Relaxed);
        cell.stamp.store(stalled + 1, Ordering::Release);
        assert_eq!(q.pop(), Some(6));
        assert_eq!(q.pop(), Some(7));
        assert_eq!(q.pop(), Some(8));
    }
}
