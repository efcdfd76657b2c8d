//! The loop's private table: all the state only the loop touches. What it knows about each
//! request it owns, the count of admitted ones, its ready and cancel queues, the timeout wheel,
//! the message headers, the lanes it polls and what is registered with its ring. It lives in the
//! storage (so a loop allocates nothing per request) but only the loop of the current claim
//! touches it: the loop borrows it once, in `run`, and hands `&mut` to its phases, so the borrow
//! checker proves that nothing else does.
//!
//! The table is also where the loop proves that a request is its own: [`owned_request`] is the
//! one place the loop reaches into a slot.

use crate::event_loop::fifo::Fifo;
use crate::event_loop::held::HeldRef;
use crate::event_loop::id::RequestId;
use crate::event_loop::mail::Mail;
use crate::event_loop::registry::Registry;
use crate::event_loop::request::Request;
use crate::event_loop::wheel::Wheel;
use crate::handoff::lane::Lane;
use crate::handoff::slot::Slot;
use crate::op::MsgHeader;

/// What the loop knows about an admitted request, kept outside the slot so that checking it
/// never touches memory the caller may own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SlotFlags {
    /// The loop owns the request: popped from a submission queue (the shared ring, a lane or the
    /// loop thread's private queue; the slot is then `ACTIVE` or `ORPHANED`, the loop's phases)
    /// and not yet handed back or freed.
    owned: bool,
    /// Counted in the loop's admitted requests (in flight, ready-queued or cancelling).
    pub(crate) admitted: bool,
    /// An op SQE is in the kernel.
    pub(crate) in_flight: bool,
    /// Its operation's CQEs need none of the reap's special cases (`OpKind::is_plain`); set
    /// with `in_flight`.
    pub(crate) plain: bool,
    /// The deadline fired; the next CQE or staging ends the request with `Timeout`.
    pub(crate) cancel_requested: bool,
    /// Cancelled at shutdown: unless the kernel gives a terminal answer, `Abandoned`.
    pub(crate) abandoning: bool,
    /// Its caller dropped it and an AsyncCancel was queued for it (cancel on drop).
    pub(crate) drop_cancelled: bool,
    /// A timer (`sleep`): kept in the wheel (when it has an end), never admitted or staged.
    pub(crate) timer: bool,
    /// Its operation is in its future, not in the slot (`held.rs`): `Table::held` names it.
    pub(crate) held: bool,
}

impl SlotFlags {
    /// Whether the loop owns the request (see `owned`).
    #[inline]
    pub(crate) fn is_owned(&self) -> bool {
        self.owned
    }

    /// Not admitted.
    pub(crate) const NONE: SlotFlags = SlotFlags {
        owned: false,
        admitted: false,
        in_flight: false,
        plain: false,
        cancel_requested: false,
        abandoning: false,
        drop_cancelled: false,
        timer: false,
        held: false,
    };

    /// A plain request in flight (the caller of `on_cqe` checked `in_flight`) that nothing has
    /// cancelled: if its caller is pinned to the loop thread and still there (the slot's phase
    /// says, `Slot::is_pinned_active`), `finish_pinned` ends it.
    #[inline]
    pub(crate) fn may_end_pinned(&self) -> bool {
        self.plain & !self.cancel_requested & !self.abandoning
    }
}

/// The table. `RING` bounds both queues: each holds at most one entry per admitted request.
pub(crate) struct Table<const SLOTS: usize, const RING: usize, const WHEEL: usize> {
    pub(crate) wheel: Wheel<SLOTS, WHEEL>,
    /// Slot indices of admitted requests waiting for their next SQE (FIFO). An entry always names
    /// the slot's current request: a request leaves the queue before it ends.
    pub(crate) ready: Fifo<u32, RING>,
    /// Requests whose AsyncCancel is still to be staged (FIFO); stale ones are dropped then.
    pub(crate) cancels: Fifo<RequestId, RING>,
    /// Per-slot bookkeeping.
    pub(crate) flags: [SlotFlags; SLOTS],
    /// Per slot, the future holding its request while `SlotFlags::held` says so (`held.rs`).
    /// Written only through `hold` and `unhold`, which keep the two together.
    pub(super) held: [Option<HeldRef<SLOTS, RING, WHEEL>>; SLOTS],
    /// Message headers for `recv_from`s in the kernel (at most `RING` at once), and the indices
    /// of the free ones. A header the kernel may still write (its request parked at shutdown) is
    /// never given back.
    pub(crate) msgs: [MsgHeader; RING],
    pub(crate) free_msgs: heapless::Vec<u16, RING>,
    /// Requests counted in the table: in flight, ready-queued or cancelling (<= RING).
    admitted: usize,
    /// Timers the loop holds (`SlotFlags::timer`): not admitted, but the drain waits for them.
    pub(crate) timers: usize,
    /// Timers the wheel found due in this advance, ended right after it.
    pub(crate) fired: heapless::Vec<u32, SLOTS>,
    /// Single-producer lanes polled beside the shared ring (`register_lane`).
    pub(crate) lanes: Vec<&'static Lane<SLOTS>>,
    /// The lane the next fresh request is taken from first (round robin).
    pub(crate) next_lane: usize,
    /// Registered files and buffer pool.
    pub(crate) registry: Registry,
    /// Messages from other loops and the receivers waiting for them (`mail.rs`).
    pub(crate) mail: Mail<SLOTS>,
}

/// The request in slot `index`, which the loop owns (`Table::take`).
///
/// The loop reaches into a slot only through this function: `flags[index]` says the request is
/// the loop's, and the exclusive borrow of every flag for as long as the reference lives means no
/// two references to one request are ever live.
///
/// # Panics
/// If the loop does not own the request (a bug: it was never taken, or already released).
#[inline]
pub(crate) fn owned_request<'a, const S: usize>(
    flags: &'a mut [SlotFlags; S],
    slots: &'a [Slot<Request>; S],
    index: u32,
) -> &'a mut Request {
    assert!(
        flags[index as usize].owned,
        "the loop touches only the requests it owns"
    );
    // SAFETY: `owned` is set by `Table::take` only for a request the loop popped from a
    // submission queue (the caller does not touch it after the push), whose slot phase
    // (`ACTIVE` or `ORPHANED`) gives the request to the loop (slot.rs), and cleared by
    // `Table::release` before the loop publishes it to its caller
    // (`DONE`), frees the slot or abandons it; no other thread touches it meanwhile. The borrow
    // of `flags` (`&'a mut`, every flag) outlives the reference, so this function cannot hand out
    // a second one while it lives, and the loop has no other way in.
    unsafe { &mut *slots[index as usize].request_ptr() }
}

impl<const S: usize, const R: usize, const W: usize> Table<S, R, W> {
    /// Empty (a `const` image for the storage; see `init_at` for the heap path).
    pub(crate) const fn new() -> Self {
        Table {
            wheel: Wheel::new(),
            ready: Fifo::new(),
            cancels: Fifo::new(),
            flags: [SlotFlags::NONE; S],
            held: [None; S],
            msgs: [const { MsgHeader::new() }; R],
            free_msgs: heapless::Vec::new(),
            admitted: 0,
            timers: 0,
            fired: heapless::Vec::new(),
            lanes: Vec::new(),
            next_lane: 0,
            registry: Registry::NONE,
            mail: Mail::new(),
        }
    }

    /// Writes `Table::new()` into `ptr` field by field (no large temporary).
    ///
    /// # Safety
    /// `ptr` is valid for writes and aligned.
    pub(crate) unsafe fn init_at(ptr: *mut Self) {
        use std::ptr::addr_of_mut;
        // SAFETY: every write targets a field of the table behind `ptr` (contract); the arrays
        // are written element by element.
        unsafe {
            Wheel::init_at(addr_of_mut!((*ptr).wheel));
            addr_of_mut!((*ptr).ready).write(Fifo::new());
            addr_of_mut!((*ptr).cancels).write(Fifo::new());
            let flags = addr_of_mut!((*ptr).flags).cast::<SlotFlags>();
            let held = addr_of_mut!((*ptr).held).cast::<Option<HeldRef<S, R, W>>>();
            for i in 0..S {
                flags.add(i).write(SlotFlags::NONE);
                held.add(i).write(None);
            }
            let msgs = addr_of_mut!((*ptr).msgs).cast::<MsgHeader>();
            for i in 0..R {
                msgs.add(i).write(MsgHeader::new());
            }
            addr_of_mut!((*ptr).free_msgs).write(heapless::Vec::new());
            addr_of_mut!((*ptr).admitted).write(0);
            addr_of_mut!((*ptr).timers).write(0);
            addr_of_mut!((*ptr).fired).write(heapless::Vec::new());
            addr_of_mut!((*ptr).lanes).write(Vec::new());
            addr_of_mut!((*ptr).next_lane).write(0);
            addr_of_mut!((*ptr).registry).write(Registry::NONE);
            Mail::init_at(addr_of_mut!((*ptr).mail));
        }
    }

    /// Back to empty for a new claim.
    pub(crate) fn reset(&mut self) {
        self.wheel.reset();
        self.ready.clear();
        self.cancels.clear();
        self.flags.fill(SlotFlags::NONE);
        self.held.fill(None);
        self.admitted = 0;
        self.timers = 0;
        self.fired.clear();
        self.lanes = Vec::new();
        self.next_lane = 0;
        self.registry = Registry::NONE;
        self.mail.reset();
        self.free_msgs.clear();
        for index in (0..R as u16).rev() {
            let _ = self.free_msgs.push(index);
        }
    }

    /// The loop popped request `index` from a submission queue: it is the loop's now.
    #[inline]
    pub(crate) fn take(&mut self, index: u32) {
        self.flags[index as usize] = SlotFlags {
            owned: true,
            ..SlotFlags::NONE
        };
    }

    /// Counts the loop's request `index` in (in flight, ready-queued or cancelling).
    #[inline]
    pub(crate) fn admit(&mut self, index: u32) {
        let flags = &mut self.flags[index as usize];
        debug_assert!(flags.owned && !flags.admitted);
        flags.admitted = true;
        self.admitted += 1;
    }

    /// Requests counted in: in flight, ready-queued or cancelling (at most `RING`).
    #[inline]
    pub(crate) fn admitted(&self) -> usize {
        self.admitted
    }

    /// Takes admitted request `index` out of the count, and out of the wheel if `scheduled`
    /// (it has a deadline); the loop still owns it.
    #[inline]
    pub(crate) fn end(&mut self, index: u32, scheduled: bool) {
        if scheduled {
            self.wheel.remove(index);
        }
        let flags = &mut self.flags[index as usize];
        debug_assert!(flags.admitted);
        *flags = SlotFlags {
            owned: flags.owned,
            ..SlotFlags::NONE
        };
        self.admitted -= 1;
    }

    /// [`end`](Self::end) and [`release`](Self::release) in one write: admitted request
    /// `index` leaves the loop (to its caller, or freed).
    #[inline]
    pub(crate) fn end_and_release(&mut self, index: u32, scheduled: bool) {
        if scheduled {
            self.wheel.remove(index);
        }
        debug_assert!(self.flags[index as usize].admitted);
        self.flags[index as usize] = SlotFlags::NONE;
        self.admitted -= 1;
    }

    /// Takes request `index`, staged from its future (`held.rs`), in one write: owned, counted
    /// in, its plain SQE in flight, held by `held`.
    #[inline]
    pub(crate) fn take_held(&mut self, index: u32, held: HeldRef<S, R, W>) {
        self.flags[index as usize] = SlotFlags {
            owned: true,
            admitted: true,
            in_flight: true,
            plain: true,
            held: true,
            ..SlotFlags::NONE
        };
        self.admitted += 1;
        self.held[index as usize] = Some(held);
    }

    /// The future holding request `index`, which is held (`SlotFlags::held`).
    #[inline]
    pub(crate) fn held_ref(&self, index: u32) -> HeldRef<S, R, W> {
        assert!(
            self.flags[index as usize].held,
            "only a held request names its future"
        );
        // SAFETY: `hold` sets the flag and the entry together, and `unhold` (the only place that
        // clears the flag but for `end` and `release`, which leave the entry stale but the flag
        // clear) clears both: a set flag means a set entry.
        unsafe { self.held[index as usize].unwrap_unchecked() }
    }

    /// Request `index` is no longer held: its operation is in its slot.
    #[inline]
    pub(crate) fn unhold(&mut self, index: u32) {
        self.flags[index as usize].held = false;
        self.held[index as usize] = None;
    }

    /// Holds the loop's request `index` as a timer (not admitted).
    #[inline]
    pub(crate) fn hold_timer(&mut self, index: u32) {
        let flags = &mut self.flags[index as usize];
        debug_assert!(flags.owned && !flags.admitted);
        flags.timer = true;
        self.timers += 1;
    }

    /// Takes timer `index` out of the count and the wheel; the loop still owns it.
    #[inline]
    pub(crate) fn end_timer(&mut self, index: u32) {
        self.wheel.remove(index);
        let flags = &mut self.flags[index as usize];
        debug_assert!(flags.timer);
        flags.timer = false;
        self.timers -= 1;
    }

    /// The loop gives request `index` up (to its caller, to the free list, or to the kernel
    /// for good): it may not touch it again.
    #[inline]
    pub(crate) fn release(&mut self, index: u32) {
        self.flags[index as usize] = SlotFlags::NONE;
    }
}
