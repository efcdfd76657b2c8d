//! The loop's private table: what it knows about each admitted request, its ready and cancel
//! queues and the timeout wheel. It lives in the storage (so a loop allocates nothing) but only
//! the loop thread of the current claim touches it: the loop borrows it once, in `run`, and hands
//! `&mut` to its phases, so the borrow checker proves that nothing else does.

use crate::event_loop::id::RequestId;
use crate::event_loop::wheel::Wheel;
use crate::op::MsgHeader;

/// What the loop knows about an admitted request, kept outside the slot so that checking it
/// never touches memory the caller may own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SlotFlags {
    /// Counted in the loop's admitted requests (in flight, ready-queued or cancelling).
    pub(crate) admitted: bool,
    /// An op SQE is in the kernel.
    pub(crate) in_flight: bool,
    /// The deadline fired; the next CQE or staging ends the request with `Timeout`.
    pub(crate) cancel_requested: bool,
    /// Cancelled at shutdown: unless the kernel gives a terminal answer, `Abandoned`.
    pub(crate) abandoning: bool,
    /// Its caller dropped it and an AsyncCancel was queued for it (cancel on drop).
    pub(crate) drop_cancelled: bool,
}

impl SlotFlags {
    /// Not admitted.
    pub(crate) const NONE: SlotFlags = SlotFlags {
        admitted: false,
        in_flight: false,
        cancel_requested: false,
        abandoning: false,
        drop_cancelled: false,
    };
}

/// The table. `RING` bounds both queues: each holds at most one entry per admitted request.
pub(crate) struct Table<const SLOTS: usize, const RING: usize, const WHEEL: usize> {
    pub(crate) wheel: Wheel<SLOTS, WHEEL>,
    /// Slot indices of admitted requests waiting for their next SQE (FIFO). An entry always names
    /// the slot's current request: a request leaves the queue before it ends.
    pub(crate) ready: heapless::Deque<u32, RING>,
    /// Requests whose AsyncCancel is still to be staged (FIFO); stale ones are dropped then.
    pub(crate) cancels: heapless::Deque<RequestId, RING>,
    /// Per-slot bookkeeping.
    pub(crate) flags: [SlotFlags; SLOTS],
    /// Message headers for `recv_from`s in the kernel (at most `RING` at once), and the indices
    /// of the free ones. A header the kernel may still write (its request parked at shutdown) is
    /// never given back.
    pub(crate) msgs: [MsgHeader; RING],
    pub(crate) free_msgs: heapless::Vec<u16, RING>,
}

impl<const S: usize, const R: usize, const W: usize> Table<S, R, W> {
    /// Empty (a `const` image for the storage; see `Storage::init_at` for the heap path).
    pub(crate) const fn new() -> Self {
        Table {
            wheel: Wheel::new(),
            ready: heapless::Deque::new(),
            cancels: heapless::Deque::new(),
            flags: [SlotFlags::NONE; S],
            msgs: [const { MsgHeader::new() }; R],
            free_msgs: heapless::Vec::new(),
        }
    }

    /// Back to empty for a new claim.
    pub(crate) fn reset(&mut self) {
        self.wheel.reset();
        self.ready.clear();
        self.cancels.clear();
        self.flags.fill(SlotFlags::NONE);
        self.free_msgs.clear();
        for index in (0..R as u16).rev() {
            let _ = self.free_msgs.push(index);
        }
    }

    /// Takes request `index` out of the table (its deadline, its flags); the caller counts it
    /// out of the admitted requests.
    pub(crate) fn end(&mut self, index: u32) {
        self.wheel.remove(index);
        self.flags[index as usize] = SlotFlags::NONE;
    }
}
