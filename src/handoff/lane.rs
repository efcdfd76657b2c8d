//! [`Lane`]: a single-producer path into the loop, beside the shared submission ring.
//!
//! ```text
//! producer (one thread, a LaneHandle)          loop
//!   cells[tail % N] = index   (Relaxed)          if head != tail (Acquire): index = cells[head % N]
//!   tail += 1                 (Release)           head += 1 (only the loop reads it)
//! ```
//! The shared ring makes every producer claim a position with a `fetch_add` and stamp its cell;
//! a lane has one producer, so a plain load and a Release store of `tail` suffice, and nothing
//! waits. It is never full for the same reason the shared ring is not: an index is in a lane only
//! while its slot is queued, each slot at most once, so at most `N = SLOTS` indices are in it.
//!
//! A lane is a `static` (or leaked) object: the loop it is registered with
//! ([`EventLoop::register_lane`](crate::EventLoop::register_lane)) polls it beside the shared
//! ring, and one producer at a time claims it ([`Handle::lane`](crate::Handle::lane)).

use crate::loom::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

/// A single-producer submission lane for a loop with `SLOTS` slots.
pub struct Lane<const SLOTS: usize> {
    /// Next position to fill; written by the producer only. On a line of its own: the loop's
    /// writes to `head` would otherwise take the line from the producer once per request.
    tail: Line,
    /// Next position to read; touched by the loop only (an atomic so that the type is `Sync`).
    head: Line,
    cells: [AtomicU32; SLOTS],
    /// A producer holds the lane.
    claimed: AtomicBool,
    /// The storage (its address) whose loop polls this lane, 0 = none, and that loop's claim.
    /// A loop binds a free lane and frees it when it closes: one live loop per lane.
    bound: AtomicUsize,
    bound_epoch: AtomicU32,
}

/// A position counter alone on its cache line.
#[repr(align(64))]
struct Line(AtomicU32);

impl std::ops::Deref for Line {
    type Target = AtomicU32;
    fn deref(&self) -> &AtomicU32 {
        &self.0
    }
}

impl<const SLOTS: usize> Lane<SLOTS> {
    crate::loom::maybe_const_fn! {
        /// An empty, unclaimed lane.
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            Lane {
                tail: Line(AtomicU32::new(0)),
                head: Line(AtomicU32::new(0)),
                cells: crate::loom::const_array!(AtomicU32::new(0); SLOTS),
                claimed: AtomicBool::new(false),
                bound: AtomicUsize::new(0),
                bound_epoch: AtomicU32::new(0),
            }
        }
    }

    /// Producer side: appends `index`. Only the lane's claimer calls it, one call at a time.
    #[inline]
    pub(crate) fn push(&self, index: u32) {
        let tail = self.tail.load(Ordering::Relaxed);
        self.cells[tail as usize % SLOTS].store(index, Ordering::Relaxed);
        // Release: publishes the cell, and the slot's request written before, to the loop.
        self.tail.store(tail.wrapping_add(1), Ordering::Release);
    }

    /// Loop side: takes the oldest index, if any.
    #[inline]
    pub(crate) fn pop(&self) -> Option<u32> {
        let head = self.head.load(Ordering::Relaxed);
        // Acquire: pairs with `push`'s Release.
        if self.tail.load(Ordering::Acquire) == head {
            return None;
        }
        let index = self.cells[head as usize % SLOTS].load(Ordering::Relaxed);
        self.head.store(head.wrapping_add(1), Ordering::Relaxed);
        Some(index)
    }

    /// Loop side: whether an index waits.
    #[inline]
    pub(crate) fn has_ready(&self) -> bool {
        self.tail.load(Ordering::Acquire) != self.head.load(Ordering::Relaxed)
    }

    /// Takes the producer role; false if someone holds it.
    pub(crate) fn claim(&self) -> bool {
        // Acquire: the previous producer's pushes happen before ours.
        self.claimed
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Gives the producer role back.
    pub(crate) fn release(&self) {
        // Release: our pushes happen before the next producer's (its Acquire claim).
        self.claimed.store(false, Ordering::Release);
    }

    /// Binds the lane to the loop of claim `epoch` of the storage at `key` (registration, before
    /// that loop runs), unless another storage's loop holds it: false then. A storage has one
    /// loop at a time, so a lane bound to `key` is this loop's already (registered twice).
    pub(crate) fn bind(&self, key: usize, epoch: u32) -> bool {
        // AcqRel: Acquire pairs with the previous holder's `unbind` (its sweep of the lane
        // happens before our loop polls it); Release publishes the binding to `is_bound_to`.
        match self
            .bound
            .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {}
            Err(holder) if holder == key => {}
            Err(_) => return false,
        }
        // Written after the key: a handle that reads the key before the epoch lands sees "not
        // registered" (it raced the registration), never another loop's lane.
        self.bound_epoch.store(epoch, Ordering::Release);
        true
    }

    /// The loop of the storage at `key` is closed, its lane swept: another loop may bind it.
    pub(crate) fn unbind(&self, key: usize) {
        // Release: our sweep happens before the next binder's Acquire.
        let _ = self
            .bound
            .compare_exchange(key, 0, Ordering::Release, Ordering::Relaxed);
    }

    /// Whether the loop of claim `epoch` of the storage at `key` polls this lane.
    pub(crate) fn is_bound_to(&self, key: usize, epoch: u32) -> bool {
        self.bound.load(Ordering::Acquire) == key
            && self.bound_epoch.load(Ordering::Acquire) == epoch
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fifo_across_wraparound_and_one_producer_at_a_time() {
        let lane = Lane::<4>::new();
        assert!(lane.claim() && !lane.claim(), "one producer");
        for round in 0..10u32 {
            for i in 0..3 {
                lane.push(round * 3 + i);
            }
            assert!(lane.has_ready());
            for i in 0..3 {
                assert_eq!(lane.pop(), Some(round * 3 + i));
            }
            assert_eq!(lane.pop(), None);
        }
        lane.release();
        assert!(lane.claim(), "free again");
    }

    #[test]
    fn one_live_loop_binds_a_lane() {
        let lane = Lane::<4>::new();
        assert!(lane.bind(1, 5) && lane.is_bound_to(1, 5));
        assert!(lane.bind(1, 5), "the same loop again");
        assert!(
            !lane.bind(2, 9),
            "another storage's loop while the first lives"
        );
        assert!(lane.is_bound_to(1, 5), "the refused bind changed nothing");
        lane.unbind(2);
        assert!(lane.is_bound_to(1, 5), "only the holder unbinds");
        lane.unbind(1);
        assert!(!lane.is_bound_to(1, 5));
        assert!(
            lane.bind(2, 9) && lane.is_bound_to(2, 9),
            "free for the next loop"
        );
    }

    #[test]
    fn a_producer_and_the_loop_on_two_threads() {
        // The loop pops while the producer pushes; every index arrives once, in order. Like the
        // storage, the producer reuses an index only after the loop took it (here: 8 in flight).
        use std::sync::Arc;
        let lane = Arc::new(Lane::<8>::new());
        let popped = Arc::new(AtomicU32::new(0));
        let (l, p) = (lane.clone(), popped.clone());
        let producer = std::thread::spawn(move || {
            for i in 0..200_000u32 {
                while i - p.load(Ordering::Acquire) >= 8 {
                    std::hint::spin_loop();
                }
                l.push(i);
            }
        });
        let mut next = 0;
        while next < 200_000 {
            if let Some(i) = lane.pop() {
                assert_eq!(i, next);
                next += 1;
                popped.store(next, Ordering::Release);
            }
        }
        producer.join().unwrap();
    }
}

// A lane's producer is one thread at a time: its handle moves between threads but is never
// shared, and an operation submitted through it stays on that thread.
static_assertions::assert_impl_all!(crate::LaneHandle<8, 8, 64>: Send);
static_assertions::assert_not_impl_any!(crate::LaneHandle<8, 8, 64>: Sync);
static_assertions::assert_not_impl_any!(crate::LaneOp<'static, crate::op::Nop, 8, 8, 64>: Send);
