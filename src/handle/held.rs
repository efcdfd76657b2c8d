//! The future's side of a held request (`event_loop/held.rs`): a `LocalOp` submitted on the
//! serving loop thread, from inside the window, keeps its operation in its own state
//! (`State::Held`) while the SQE is in flight, and the loop reaches it through the vtable here.
//! The loop's references point at the whole `Op` (which is `!Unpin`: the future's own `&mut`
//! borrows of it do not claim it uniquely), and reach its fields through raw places.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Instant;

use super::{Op, Start, State};
use crate::error::Error;
use crate::event_loop::held::{BuildSqe, Completion, HeldRef, HeldVtable};
use crate::event_loop::registry::Registry;
use crate::event_loop::request::Deadline;
use crate::event_loop::request::{self, Staged};
use crate::event_loop::EventLoop;
use crate::op::{Headers, OpResult, Operation};
use crate::storage::Storage;

/// The loop's calls into a future holding an `O`.
struct Calls<O, const S: usize, const R: usize, const W: usize>(PhantomData<O>);

impl<O: Operation, const S: usize, const R: usize, const W: usize> Calls<O, S, R, W> {
    const VTABLE: HeldVtable<S, R, W> = HeldVtable {
        kind: O::KIND,
        timed: false,
        complete: complete::<O, S, R, W>,
        unhold: unhold::<O, S, R, W>,
        deadline: deadline::<O, S, R, W>,
    };
    /// The same calls for a request with a deadline (in the wheel while it is held).
    const TIMED: HeldVtable<S, R, W> = HeldVtable {
        timed: true,
        ..Self::VTABLE
    };
}

/// The state of the `Op` at `op`.
///
/// # Safety
/// `op` points to a live, pinned `Op<O, S, R, W>` that nothing else accesses meanwhile.
unsafe fn state_of<O: Operation, const S: usize, const R: usize, const W: usize>(
    op: NonNull<()>,
) -> *mut State<O> {
    // SAFETY: the contract; a place, no reference to the whole `Op`. `ManuallyDrop` is
    // `repr(transparent)`.
    unsafe { std::ptr::addr_of_mut!((*op.cast::<Op<O, S, R, W>>().as_ptr()).state).cast() }
}

/// [`HeldVtable::complete`] for an `O`: applies the CQE's result to the held operation, and
/// when that finishes it, builds the caller's result into the state (`State::Ready`), unless
/// the future left a waker in the slot's cell (a poll from outside the window: the outcome then
/// goes through the slot, and the future takes the waker back with it).
///
/// # Safety
/// `op` points to a live `Op<O, S, R, W>` whose state is `Held`, which nothing else accesses
/// meanwhile.
unsafe fn complete<O: Operation, const S: usize, const R: usize, const W: usize>(
    op: NonNull<()>,
    result: i32,
) -> Completion {
    // SAFETY: the contract.
    let state = unsafe { state_of::<O, S, R, W>(op) };
    // SAFETY: the contract.
    let State::Held(start, _) = (unsafe { &mut *state }) else {
        unreachable!("the loop calls into held requests only")
    };
    let Some(outcome) = crate::op::complete(&mut start.op, result, false) else {
        return Completion::Again;
    };
    // SAFETY: the contract (a field read through the place).
    if unsafe { (*op.cast::<Op<O, S, R, W>>().as_ptr()).registered } {
        return Completion::Outcome(outcome);
    }
    // SAFETY: the start's fields are moved out once and the state overwritten without its drop
    // glue at once (nothing can panic in between); the result is written over `Finished`.
    let (operation, held, fd) = unsafe {
        let fields = (
            std::ptr::read(&start.op),
            std::ptr::read(&start.held),
            std::ptr::read(&start.fd),
        );
        std::ptr::write(state, State::Finished);
        fields
    };
    drop(held);
    let result = operation.output(outcome);
    // SAFETY: `Finished` owns nothing.
    unsafe { std::ptr::write(state, State::Ready(result)) };
    Completion::Delivered(fd)
}

/// [`HeldVtable::deadline`] for an `O`.
///
/// # Safety
/// As [`complete`].
unsafe fn deadline<O: Operation, const S: usize, const R: usize, const W: usize>(
    op: NonNull<()>,
) -> Option<Deadline> {
    // SAFETY: the contract.
    let State::Held(start, _) = (unsafe { &*state_of::<O, S, R, W>(op) }) else {
        unreachable!("the loop calls into held requests only")
    };
    start.deadline.map(Deadline::new)
}

/// [`HeldVtable::unhold`] for an `O`: the held start moves into slot `index`, and the state
/// becomes `Submitted(index)`, as if it had been submitted the ordinary way.
///
/// # Safety
/// As [`complete`]; slot `index` is the held request's, and its request owns nothing and may be
/// written by the caller now (the loop's request, the loop not running; or the future's, `DONE`).
unsafe fn unhold<O: Operation, const S: usize, const R: usize, const W: usize>(
    op: NonNull<()>,
    storage: &Storage<S, R, W>,
    index: u32,
) {
    // SAFETY: the contract.
    let state = unsafe { state_of::<O, S, R, W>(op) };
    // SAFETY: the contract: the start is moved out once, and the state overwritten without its
    // drop glue before anything can panic.
    let start = unsafe {
        let State::Held(start, held_index) = std::ptr::read(state) else {
            unreachable!("only a held request is unheld")
        };
        debug_assert_eq!(held_index, index);
        std::ptr::write(state, State::Submitted(index));
        start
    };
    let Start {
        op,
        held,
        fd,
        deadline,
    } = start;
    Start::fill_fields((op, held, fd, deadline), storage, index);
}

/// The SQE of the held request in the `Op` at `.0` (an `Op<O, S, R, W>` whose state is
/// `Held`, pinned, which nothing else accesses while the build runs: `submit_held`).
struct Build<O, const S: usize, const R: usize, const W: usize>(NonNull<()>, PhantomData<O>);

impl<O: Operation, const S: usize, const R: usize, const W: usize> BuildSqe for Build<O, S, R, W> {
    #[inline(always)]
    fn build(self, id: u64, limit: u32, reg: &Registry, h: &mut Headers<'_>) -> Staged {
        // SAFETY: the type's contract (`submit_held` builds it for its own pinned, held `Op`
        // and hands it to the staging, which calls this once, before it returns).
        let State::Held(start, _) = (unsafe { &mut *state_of::<O, S, R, W>(self.0) }) else {
            unreachable!("held by submit_held")
        };
        // The steps of `sqe_for`, without its closure (which the inliner may leave out of line).
        let (fd, fixed_file) = request::sqe_fd(start.fd.as_ref(), reg);
        request::staged(start.op.sqe(fd, limit, reg, h), fixed_file, id)
    }
}

impl<O: Operation, const S: usize, const R: usize, const W: usize> Op<O, S, R, W> {
    /// This `Op`'s address, as the loop keeps it (type-erased).
    fn op_ptr(&mut self) -> NonNull<()> {
        NonNull::from(self).cast()
    }

    /// Submits the start just moved into `State::Held(_, index)` (slot `index` marked `ACTIVE`
    /// for this pinned caller) through the loop whose window is open: true once its SQE is in
    /// the SQ and the loop holds a reference to it. Otherwise it is unheld (written into its
    /// slot) and queued for the loop's staging, as `submit_here` does. `deadline`: the start's.
    #[inline]
    pub(super) fn submit_held(&mut self, index: u32, window: *mut (), deadline: Option<Instant>) {
        let op = self.op_ptr();
        let deadline = deadline.map(Deadline::new);
        let vtable = match deadline {
            None => &Calls::<O, S, R, W>::VTABLE,
            Some(_) => &Calls::<O, S, R, W>::TIMED,
        };
        let held = HeldRef { op, vtable };
        // SAFETY: `window` is the loop thread's window, read during this poll (`submit_here`);
        // `held` names this pinned `LocalOp`'s state (`pinned`), which holds the start; the
        // build (`Build`, run once inside the call) is the only access to it while it runs.
        let staged = unsafe {
            EventLoop::<S, R, W>::stage_held_in_window(
                window,
                index,
                held,
                deadline,
                Build::<O, S, R, W>(op, PhantomData),
            )
        };
        if !staged {
            // SAFETY: held, and the loop knows nothing of it (not staged); the slot's request
            // owns nothing (claimed just now).
            unsafe { unhold::<O, S, R, W>(op, &self.storage, index) };
            self.storage.local.push(index);
        }
    }

    /// The result of the held request in slot `index`, finished (`DONE`): the outcome the loop
    /// stored in the slot, the operation from the state. The slot is freed (onto the loop
    /// thread's private stack when this thread serves the loop, `serving`).
    #[inline(always)]
    pub(super) fn take_held(&mut self, index: u32, serving: bool) -> OpResult<O> {
        let storage = &self.storage;
        let slot = &storage.slots[index as usize];
        // SAFETY: DONE (Acquire): the caller owns the request, of which the loop wrote only the
        // outcome (the operation stayed here); taking it leaves a request that owns nothing.
        let outcome = unsafe { slot.with_request(|r| r.outcome.take()) };
        let State::Held(start, _) = &*self.state else {
            unreachable!("called for a held request")
        };
        // SAFETY: the start's fields are moved out once and the state overwritten without its
        // drop glue at once (only its tag is written): nothing can panic in between.
        let (op, held, fd) = unsafe {
            let fields = (
                std::ptr::read(&start.op),
                std::ptr::read(&start.held),
                std::ptr::read(&start.fd),
            );
            std::ptr::write(&mut *self.state, State::Finished);
            fields
        };
        drop(held);
        // A waker left in the slot's cell by a poll from outside the window (the loop took the
        // private one): taken back so the slot's next request starts empty.
        let waker = self.take_shared_waker_back(index);
        let result = op.output(outcome.unwrap_or(Err(Error::Closed)));
        storage.free_empty(index, storage.loop_here_if(serving));
        if fd.is_some() || waker.is_some() {
            storage.run_user(move || drop((fd, waker)));
        }
        result
    }

    /// Before the ordinary `Drop`: a held request's operation moves into its slot (the kernel
    /// may still use its buffer, and the loop may still need it), and the state names the slot.
    pub(super) fn unhold_for_drop(&mut self) {
        if let State::Held(_, index) = *self.state {
            let op = self.op_ptr();
            // SAFETY: held by this future, which is being dropped on the loop's thread (a
            // `LocalOp` is `!Send`) while the loop is not running: the slot's request owns
            // nothing (ACTIVE: the loop's, untouched while held; DONE: ours, with an outcome
            // for our kinds owning nothing) and nothing else accesses the state.
            unsafe { unhold::<O, S, R, W>(op, &self.storage, index) };
        }
    }
}
