//! Held requests: a `LocalOp`'s request that stays in its future while its SQE is in flight.
//!
//! A `LocalOp` submitted on the serving loop thread from inside the window (a `block_on`
//! future or a pool task it polls), of a plain kind whose SQE points at no memory inside the
//! operation ([`OpKind::may_be_held`]), is not written into its slot: its SQE
//! is built from the future where it lies, and the loop keeps a [`HeldRef`] to it. At its CQE
//! the loop applies the result to the operation through the reference and, when it finishes
//! (the common case), builds the caller's result into the future, frees the slot and wakes
//! the task: nothing moved in or out of the slot, and the future's next poll reads its own
//! state only.
//!
//! ```text
//! LocalOp poll:  slot ─▶ SQE from the future ─▶ SQ        (slot ACTIVE | LOCAL_WAKER | PINNED)
//! loop, CQE:     HeldRef::complete ─▶ result into the future ─▶ slot freed ─▶ task woken
//! LocalOp poll:  the result, from its own state
//! ```
//!
//! A future that left a waker in its slot's cell (polled from outside the window meanwhile)
//! takes the older way: the outcome goes into the slot, which turns `DONE`, and the future's
//! next poll takes it, the waker and the slot back itself.
//!
//! Anything else first turns the held request into an ordinary one (**unhold**: the operation
//! is moved into its slot and the future's state names the slot, as if it had been submitted
//! that way), after which every path of the loop applies unchanged:
//! - the loop unholds it when the result asks for another SQE (a short transfer, a retry), when
//!   the shutdown cancels it, when its caller registered a waker the fast path does not use,
//!   and before it parks it at abandonment (the buffer then stays in the slot for good);
//! - the future unholds it itself when it is dropped in flight, and orphans it: the loop finds
//!   the slot `ORPHANED` and forgets its reference ([`EventLoop::settle_held`]).
//!
//! A deadline stays in the future too: the request enters the wheel when its SQE is pushed
//! (one whose deadline has passed is not held: the staging pass ends it with `Timeout`), the
//! wheel's expiry reads the deadline through the reference ([`deadline_of`]), and a deadline
//! that fires makes its CQE take the general path (unheld first), as a cancel does.
//!
//! **Why the reference stays valid.** It points into a pinned `LocalOp`, which is `!Send`: it is
//! polled and dropped only on the loop's thread, and pinning guarantees its memory is not
//! reused before its `Drop` runs, which unholds an in-flight request before anything goes. The
//! loop dereferences it only while the slot is `ACTIVE` (not `ORPHANED`), on its own thread,
//! never while the future runs (the loop runs no phase from inside a poll but the staging of
//! that poll's own request). The future only reads its state while the request is held.

use std::ptr::NonNull;

use super::registry::Registry;
use super::request::Request;
use super::request::{Deadline, Staged};
use super::table::{owned_request, SlotFlags, Table};
use super::wheel::Target;
use super::EventLoop;
use crate::error::Error;
use crate::fd::Fd;
use crate::handoff::slot::Slot;
use crate::metrics::Counters;
use crate::op::{Headers, OpKind};
use crate::storage::Storage;

/// What a held request's CQE did to it ([`HeldVtable::complete`]).
pub(crate) enum Completion {
    /// It needs another SQE (the operation moved forward in the future).
    Again,
    /// It finished; the future has a waker in the slot's cell, so the outcome goes into the
    /// slot for the future to take, with that waker.
    Outcome(Result<usize, Error>),
    /// It finished and the future holds the caller's result now: the slot is the loop's to
    /// free, and the descriptor the request named (taken out of the future) the loop's to drop.
    Delivered(Option<Fd>),
}

/// The loop's calls into the future holding a request, for one operation type.
pub(crate) struct HeldVtable<const S: usize, const R: usize, const W: usize> {
    /// The operation's kind (the slot holds none).
    pub(crate) kind: OpKind,
    /// The request has a deadline, so it is in the wheel until it ends.
    pub(crate) timed: bool,
    /// Applies CQE `result` to the held operation (`kernel::complete`, no cancel requested),
    /// and when that finishes it, delivers the result into the future if it can.
    pub(crate) complete: unsafe fn(NonNull<()>, i32) -> Completion,
    /// Moves the held operation into its slot (`index`, whose request owns nothing) and leaves
    /// the future submitted the ordinary way.
    pub(crate) unhold: unsafe fn(NonNull<()>, &Storage<S, R, W>, u32),
    /// The held request's deadline (the slot holds none): what the wheel's expiry reads.
    pub(crate) deadline: unsafe fn(NonNull<()>) -> Option<Deadline>,
}

/// Builds a held request's SQE from its future ([`EventLoop::stage_held_in_window`]), given
/// the request's id, the byte limit, the registry and the message headers. A trait rather than
/// a closure so that the build is inlined into the staging (`#[inline(always)]` on the
/// implementation): left to the inliner, the closure was sometimes called out of line, with
/// the SQE passed back through memory.
pub(crate) trait BuildSqe {
    /// The SQE.
    fn build(self, id: u64, limit: u32, reg: &Registry, h: &mut Headers<'_>) -> Staged;
}

/// The future holding a request, and its operation's calls.
pub(crate) struct HeldRef<const S: usize, const R: usize, const W: usize> {
    /// The future's `Op`, whose state holds the operation (type-erased: the vtable knows it).
    pub(crate) op: NonNull<()>,
    /// The calls for its operation's type.
    pub(crate) vtable: &'static HeldVtable<S, R, W>,
}

impl<const S: usize, const R: usize, const W: usize> Clone for HeldRef<S, R, W> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<const S: usize, const R: usize, const W: usize> Copy for HeldRef<S, R, W> {}

// SAFETY: the pointer is only dereferenced by the loop on its own thread, which is the thread
// of the `LocalOp` it points into (module doc); the table that keeps it moves between threads
// only with the claim, when no request is held.
unsafe impl<const S: usize, const R: usize, const W: usize> Send for HeldRef<S, R, W> {}
// SAFETY: as above; a shared table is never read by two threads at once (the claim).
unsafe impl<const S: usize, const R: usize, const W: usize> Sync for HeldRef<S, R, W> {}

/// The deadline of admitted request `index`: its future's while the future holds the request
/// (`held`, and the slot not `ORPHANED`: a future that left moved its operation into the slot),
/// else its slot's. For the wheel's expiry, which runs outside the window.
pub(super) fn deadline_of<const S: usize, const R: usize, const W: usize>(
    flags: &mut [SlotFlags; S],
    held: &[Option<HeldRef<S, R, W>>; S],
    slots: &[Slot<Request>; S],
    index: u32,
) -> Option<Deadline> {
    match held[index as usize] {
        Some(h) if flags[index as usize].held && !slots[index as usize].is_orphaned() => {
            // SAFETY: held and not orphaned: the future is alive, pinned and not running (the
            // loop is outside the window), and its state holds the operation (module doc).
            unsafe { (h.vtable.deadline)(h.op) }
        }
        _ => owned_request(flags, slots, index).deadline,
    }
}

impl<const S: usize, const R: usize, const W: usize> EventLoop<S, R, W> {
    /// Stages held request `index` (its slot `ACTIVE`, owning nothing) through the loop whose
    /// window is open: `build` makes its SQE from the future (given the request's id, the byte
    /// limit, the registry and the message headers), `held` is what the loop keeps, `deadline`
    /// the request's (scheduled in the wheel once the SQE is pushed). False, touching nothing,
    /// when `stage_fresh` would refuse it or the deadline has passed: the caller unholds it and
    /// queues it (the staging pass then ends it with `Timeout`, without I/O).
    ///
    /// # Safety
    /// As [`stage_in_window`](Self::stage_in_window); `held` names the future of the request in
    /// slot `index`, pinned, with the guarantees of the module doc.
    #[inline(always)]
    pub(crate) unsafe fn stage_held_in_window(
        window: *mut (),
        index: u32,
        held: HeldRef<S, R, W>,
        deadline: Option<Deadline>,
        build: impl BuildSqe,
    ) -> bool {
        // SAFETY: the contract.
        let Some((el, t)) = (unsafe { Self::in_window(window) }) else {
            return false;
        };
        let kind = held.vtable.kind;
        let room_first = cfg!(feature = "fault-injection");
        if !el.may_stage_fresh(t) || (room_first && el.ring.sq_full()) {
            return false;
        }
        let mut scheduled = None;
        if let Some(deadline) = deadline {
            match el.held_target(t, deadline) {
                Some(at) => scheduled = Some(at),
                None => return false,
            }
        }
        let generation = el.storage.slots[index as usize].generation();
        let id = super::id::RequestId::new(index, generation).op_data();
        let limit = crate::fault::sqe_limit(el.storage.fault_key(), kind);
        let mut headers = Headers::new(&mut t.msgs, t.free_msgs.as_mut_view());
        let staged = build.build(id, limit, &t.registry, &mut headers);
        let Ok((entry, fixed_buffer)) = &staged.sqe else {
            return false;
        };
        if !el.push_entry(kind, entry) {
            return false;
        }
        debug_assert!(kind.is_plain(), "only plain kinds are held");
        t.take_held(index, held);
        if let Some((deadline_tick, tick)) = scheduled {
            el.schedule(t, index, deadline_tick, tick);
        }
        el.count_pushed(staged.fixed_file, *fixed_buffer);
        true
    }

    /// The deadline's tick and the wheel's tick for it now (`schedule`'s arguments), or `None`
    /// if it has passed. Out of line: most held requests have no deadline, and the staging they
    /// take stays small enough to be inlined into their poll.
    #[inline(never)]
    fn held_target(&mut self, t: &mut Table<S, R, W>, deadline: Deadline) -> Option<(u64, u64)> {
        match self.wheel_target(t, deadline) {
            (_, Target::Expired) => None,
            (deadline_tick, Target::At(tick)) => Some((deadline_tick, tick)),
        }
    }

    /// The CQE of held request `index` (in flight, plain, `result` after fault injection).
    /// The common case ends here: the future still holds it, nothing cancelled it, its waker is
    /// in the private cell, and the result finishes it (or asks for another SQE). True then;
    /// false once it is an ordinary request (unheld, or orphaned by its future), for the
    /// general path of `on_cqe`.
    #[inline]
    pub(super) fn held_cqe(&mut self, t: &mut Table<S, R, W>, index: u32, result: i32) -> bool {
        let slot = &self.storage.slots[index as usize];
        if !t.flags[index as usize].may_end_pinned() || !slot.is_pinned_active() {
            self.settle_held(t, index);
            return false;
        }
        let held = t.held_ref(index);
        // SAFETY: held, and the slot is ACTIVE: the future is alive, pinned, not running, and
        // its state holds the operation (module doc).
        match unsafe { (held.vtable.complete)(held.op, result) } {
            Completion::Delivered(fd) => self.deliver_held(t, index, held.vtable.timed, fd),
            Completion::Outcome(outcome) => {
                // The slot's request owns nothing (the operation is in the future): only its
                // outcome is written (over a stale one a free slot may keep, which owns
                // nothing either).
                let r = owned_request(&mut t.flags, &self.storage.slots, index);
                debug_assert!(r.is_empty());
                r.outcome = Some(outcome);
                self.deliver_pinned(t, index, held.vtable.timed);
            }
            Completion::Again => {
                // Another SQE: from the slot, as any request's.
                self.settle_held(t, index);
                t.flags[index as usize].in_flight = false;
                self.requeue(t, index);
            }
        }
        true
    }

    /// Ends held request `index`, whose future holds its result now (`Completion::Delivered`):
    /// `deliver_pinned`, but the slot is freed here (the future will not read it again), and
    /// then the task is woken and the request's descriptor dropped (`fd`), contained.
    #[inline(always)]
    fn deliver_held(&mut self, t: &mut Table<S, R, W>, index: u32, timed: bool, fd: Option<Fd>) {
        let storage = &self.storage;
        t.end_and_release(index, timed);
        storage.metrics.set_pending(t.admitted());
        Counters::bump(&storage.metrics.completed);
        let waker = storage.local.take_waker(index);
        storage.free_empty(index, Some(&storage.local));
        storage.wake_taken(waker);
        if fd.is_some() {
            storage.run_user(move || drop(fd));
        }
    }

    /// Makes held request `index` an ordinary one before a path that reads its slot: forgets
    /// the reference if its future left (`ORPHANED`: the future moved the operation into the
    /// slot), else moves the operation into the slot itself. Nothing for a request not held.
    pub(super) fn settle_held(&mut self, t: &mut Table<S, R, W>, index: u32) {
        if !t.flags[index as usize].held {
            return;
        }
        if !self.storage.slots[index as usize].is_orphaned() {
            let held = t.held_ref(index);
            // SAFETY: held and not orphaned: the future is alive and holds the operation (module
            // doc); the slot's request owns nothing.
            unsafe { (held.vtable.unhold)(held.op, &self.storage, index) };
        }
        t.unhold(index);
    }
}
