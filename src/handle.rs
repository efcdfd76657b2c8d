//! [`Handle`] and the operation [`Op`]: how a caller's request gets into a slot, into the
//! submission ring, and back out with its result.
//!
//! A `Handle` method builds an operation from its required arguments and returns it as an `Op`,
//! a value whose optional parts (deadline, limits) are methods on it. An `Op` is lazy: nothing
//! happens until its first poll (or `.wait()`), which checks the operation, claims a slot,
//! writes the request into it, pushes the slot index to the loop and rings the loop if it
//! sleeps; [`Op::try_submit`] does the same at once or fails. From then on the loop owns the
//! request; dropping the `Op` orphans it (docs/behaviour.md section 4).

use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::buf::{IoBuf, IoBufMut};
use crate::error::Error;
use crate::event_loop::request::Request;
use crate::event_loop::EventLoop;
use crate::fd::Fd;
use crate::handoff::lane::Lane;
use crate::handoff::loop_local::LoopLocal;
use crate::handoff::slot::Leave;
use crate::handoff::submit_queue::Claimed;
use crate::handoff::wait_list::{Notify, WaitState, Waiter};
use crate::handoff::wake;
use crate::metrics::Metrics;
use crate::op::table::Dropped;
use crate::op::{self, OpResult, Operation, RawAddr, Readiness};
use crate::storage::StorageRef;
use crate::vectored::IoBufs;

mod held;

/// Submits requests to one loop. `Clone + Send + Sync`; the loop shuts down (drains and returns
/// from `run`) once every clone is dropped.
///
/// Name a handle once with a type alias, so the three sizes appear in one place:
///
/// ```
/// use static_uring::{Config, Handle, Storage};
///
/// const SLOTS: usize = 256;
/// const RING: usize = 128;
/// const WHEEL: usize = 4096;
/// type Io = Handle<SLOTS, RING, WHEEL>;
/// static STORAGE: Storage<SLOTS, RING, WHEEL> = Storage::new();
///
/// fn ping(io: &Io) -> Result<(), static_uring::Error> {
///     io.nop().wait()
/// }
///
/// let (io, event_loop) = static_uring::with_storage(&STORAGE, Config::default()).unwrap();
/// let thread = std::thread::spawn(move || event_loop.run());
/// ping(&io).unwrap();
/// drop(io);
/// thread.join().unwrap().unwrap();
/// ```
pub struct Handle<const SLOTS: usize, const RING: usize, const WHEEL: usize> {
    storage: StorageRef<SLOTS, RING, WHEEL>,
    epoch: u32,
}

/// Where an [`Op`] stands.
enum State<O: Operation> {
    /// Not submitted yet: the operation and its options wait in the future.
    Start(Start<O>),
    /// Checked, waiting for a slot.
    Checked(Start<O>),
    /// In slot `index`, owned by the loop until it is `DONE`.
    Submitted(u32),
    /// In flight from slot `index` while the operation stays here (a `LocalOp` on the loop
    /// thread, `held.rs`): the loop reaches into it until it is `DONE`, and the state is only
    /// read meanwhile.
    Held(Start<O>, u32),
    /// Finished without the loop (nothing to transfer, bad input, closed, full).
    Ready(OpResult<O>),
    /// The result was taken.
    Finished,
}

impl<O: Operation> State<O> {
    /// The result of a `Ready` state, which becomes `Finished`; `None` (unchanged) otherwise.
    /// Only the result's bytes are moved, not the whole state.
    #[inline(always)]
    fn take_ready(&mut self) -> Option<OpResult<O>> {
        let State::Ready(result) = self else {
            return None;
        };
        // SAFETY: the result is moved out once and the state overwritten without its drop glue
        // at once (nothing can panic in between).
        unsafe {
            let result = std::ptr::read(result);
            std::ptr::write(self, State::Finished);
            Some(result)
        }
    }

    /// Moves to `next` from a state that owns nothing (`Submitted`, or the `Finished` left
    /// while a start is taken out), without the drop glue a plain assignment calls.
    #[inline]
    fn settle(&mut self, next: State<O>) {
        let old = std::mem::replace(self, next);
        debug_assert!(matches!(old, State::Submitted(_) | State::Finished));
        std::mem::forget(old);
    }
}

/// An operation not submitted yet, with what its request needs.
struct Start<O: Operation> {
    op: O,
    held: O::Held,
    fd: Option<Fd>,
    deadline: Option<Instant>,
}

impl<O: Operation> Start<O> {
    /// Checks the operation (`Kernel::check`): the operation to submit, or its result already.
    #[inline]
    #[allow(clippy::result_large_err)] // the caller's buffer comes back by value
    fn check(self) -> Result<Self, OpResult<O>> {
        let (op, held) = self.op.check(self.held)?;
        Ok(Start { op, held, ..self })
    }

    /// Moves the request into slot `index`, which the caller claimed and marked `FILLED`.
    /// Inlined into both submit paths: called, it moves the whole request through memory.
    #[inline(always)]
    fn fill<const S: usize, const R: usize, const W: usize>(
        self,
        storage: &crate::storage::Storage<S, R, W>,
        index: u32,
    ) {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is read once and never dropped.
        unsafe { Self::fill_from(&*this, storage, index) }
    }

    /// [`fill`](Self::fill) from a start read in place: each field is moved from `*start`
    /// straight into the slot.
    ///
    /// # Safety
    /// `*start` is moved out: the caller neither uses nor drops it afterwards.
    #[inline(always)]
    unsafe fn fill_from<const S: usize, const R: usize, const W: usize>(
        start: *const Start<O>,
        storage: &crate::storage::Storage<S, R, W>,
        index: u32,
    ) {
        // SAFETY: the contract: each field is moved out of `*start` once.
        let fields = unsafe {
            (
                std::ptr::read(std::ptr::addr_of!((*start).op)),
                std::ptr::read(std::ptr::addr_of!((*start).held)),
                std::ptr::read(std::ptr::addr_of!((*start).fd)),
                (*start).deadline,
            )
        };
        Self::fill_fields(fields, storage, index);
    }

    /// Writes the request made of `start`'s fields into slot `index` (see `fill`).
    #[inline(always)]
    fn fill_fields<const S: usize, const R: usize, const W: usize>(
        (mut op, held, fd, deadline): (O, O::Held, Option<Fd>, Option<Instant>),
        storage: &crate::storage::Storage<S, R, W>,
        index: u32,
    ) {
        op.attach(held, &storage.vectors[index as usize]);
        // SAFETY: FILLED: the caller owns the request. A slot leaves FREE holding a request that
        // owns nothing (`Storage::free_slot` sees to it), so writing over it without dropping it
        // leaks nothing and skips its drop glue.
        unsafe {
            storage.slots[index as usize].with_request(|r| {
                debug_assert!(
                    r.is_empty(),
                    "a claimed slot holds a request that owns nothing"
                );
                Request::write_fresh(r, op.into(), fd, deadline)
            })
        };
    }

    /// The result when the request never reached a slot.
    fn unsubmitted(self, error: Error) -> OpResult<O> {
        self.op.unsubmitted(self.held, error)
    }
}

/// One operation: a value whose optional parts are methods on it, then a future (`.await`) or a
/// blocking [`wait`](Op::wait). `Send`, `'static` and allocation-free; it does not keep the loop
/// alive (only `Handle` clones do).
///
/// Every operation has [`deadline`](Op::deadline) and [`timeout`](Op::timeout) (none by
/// default) and [`try_submit`](Op::try_submit); some have more (`recv`: [`exact`](Op::exact),
/// [`limit`](Op::limit), [`offset`](Op::offset); `read_at` and `read_some_at`: a length limit).
/// It resolves to `Result<O::Output, O::Error>` ([`OpResult`](crate::op::OpResult)): an
/// operation that carries a buffer fails with [`BufError`](crate::BufError), which hands the
/// buffer back; the others with [`Error`].
///
/// Dropping it never leaks its slot or frees memory the kernel uses. What happens to a request
/// dropped after submission (cancelled, retired at its next completion, or run to completion)
/// depends on the operation and on `Config::cancel_on_drop`: docs/behaviour.md section 4,
/// "Dropped futures", states it for every operation. By default a dropped `recv` may consume
/// data nobody reads.
///
/// `Op` is `!Unpin`: while it waits for a free slot, its waiter node is linked into the slot
/// wait list in place. `.await` and executors pin it for you; to poll it by reference (for
/// example in `select!`), pin it first with `std::pin::pin!`.
#[must_use = "operations do nothing until polled or waited on"]
pub struct Op<O: Operation, const SLOTS: usize, const RING: usize, const WHEEL: usize> {
    storage: StorageRef<SLOTS, RING, WHEEL>,
    epoch: u32,
    /// Dropped by hand (`Drop`): an `Op` whose result was taken (`Finished`, the common case)
    /// then skips the state's drop glue.
    state: ManuallyDrop<State<O>>,
    /// Our node in the slot wait list (pinned with the future).
    waiter: Waiter,
    /// Whether `waiter` may be linked (so `Drop` must unlink it).
    queued: bool,
    /// Whether a waker was registered in the slot's cell (so it must be taken back).
    registered: bool,
    /// Whether a waker was registered in the loop thread's private cell of the slot (polled on
    /// the loop thread; taken back there).
    registered_here: bool,
    /// Whether it can never leave the thread it is polled on (wrapped in a `LocalOp`): its
    /// request, admitted on the loop thread, is then finished without a compare-exchange.
    pinned: bool,
    /// The single-producer lane it is submitted through (`LaneHandle::submit`), else the
    /// shared ring.
    lane: Option<&'static Lane<SLOTS>>,
}

/// How a submit hands its request to the loop ([`Op::route`]).
enum Route<'a, const SLOTS: usize> {
    /// Through a lane; `true`: counted in the life word's `submitting` (off the loop thread).
    Lane(&'static Lane<SLOTS>, bool),
    /// Into the serving loop's private queue, on its thread.
    Here(&'a LoopLocal<SLOTS>),
    /// At a claimed position of the shared submission ring.
    Ring(Claimed),
}

/// The options every operation has, and its submission.
impl<O: Operation, const S: usize, const R: usize, const W: usize> Op<O, S, R, W> {
    /// The request fails with `Error::Timeout` if it has not finished by `at` (the whole
    /// logical request: every resubmission of a short transfer counts against it). None by
    /// default. A deadline already passed ends it without I/O. Takes an `Instant`, or an
    /// `Option<Instant>` for a deadline that may be absent (`None` clears it).
    ///
    /// # Panics
    /// After [`try_submit`](Self::try_submit): the request is already in the loop's hands.
    #[inline]
    pub fn deadline(mut self, at: impl Into<Option<Instant>>) -> Self {
        self.start().deadline = at.into();
        self
    }

    /// [`deadline`](Self::deadline) `after` from now (the call, not the first poll).
    ///
    /// # Panics
    /// After [`try_submit`](Self::try_submit).
    #[inline]
    pub fn timeout(self, after: Duration) -> Self {
        // A duration too long for the clock is as good as none.
        match Instant::now().checked_add(after) {
            Some(at) => self.deadline(at),
            None => self,
        }
    }

    /// Submits now: claims a free slot and hands the request to the loop, so the `Op` that
    /// comes back is already in flight (or already finished, when the operation needs no I/O).
    /// With no free slot it fails at once with `Error::Full`, as it does with
    /// `Error::InvalidInput` for arguments that cannot describe the operation and with
    /// `Error::Closed` once the loop is gone; the error hands the buffer back. It never waits.
    ///
    /// A slot freed on the loop thread (by an operation of a `block_on` future or a pool task)
    /// is kept for that thread's next operation while nobody waits for a slot, and reaches
    /// other threads' `try_submit` at the end of the loop's pass (a thread that waits for a slot
    /// is served first, as always).
    #[allow(clippy::result_large_err)] // the caller's buffer comes back by value
    pub fn try_submit(mut self) -> Result<Self, O::Error> {
        let start = match std::mem::replace(&mut *self.state, State::Finished) {
            State::Start(start) => start,
            other => {
                *self.state = other;
                return Ok(self);
            }
        };
        let start = match start.check() {
            Ok(checked) => checked,
            Err(Ok(done)) => {
                *self.state = State::Ready(Ok(done));
                return Ok(self);
            }
            Err(Err(e)) => return Err(e),
        };
        let serving = crate::event_loop::local::serves_here(self.storage.key());
        let claimed = if self.storage.is_closed(self.epoch) {
            Err(Error::Closed)
        } else {
            self.storage
                .pop_free(self.storage.loop_here_if(serving))
                .ok_or(Error::Full)
        };
        let submitted = match claimed {
            Ok(index) => self.submit(index, start, false, serving),
            Err(e) => Err(start.unsubmitted(e)),
        };
        match submitted {
            Ok(index) => *self.state = State::Submitted(index),
            Err(Err(e)) => return Err(e),
            Err(done) => *self.state = State::Ready(done),
        }
        Ok(self)
    }

    /// An operation `op` (no descriptor) on the same loop and claim: a stream's `next`.
    pub(crate) fn sibling<P: Operation<Held = ()>>(&self, op: P) -> Op<P, S, R, W> {
        Op {
            storage: self.storage.clone(),
            epoch: self.epoch,
            state: ManuallyDrop::new(State::Start(Start {
                op,
                held: (),
                fd: None,
                deadline: None,
            })),
            waiter: Waiter::new(),
            queued: false,
            registered: false,
            registered_here: false,
            pinned: false,
            lane: None,
        }
    }

    /// The slot of the request it submitted, while the loop has it.
    #[inline]
    fn in_slot(&self) -> Option<u32> {
        match *self.state {
            State::Submitted(index) | State::Held(_, index) => Some(index),
            _ => None,
        }
    }

    /// The identity (`RequestId::op_data`) of the request it submitted, while the loop has it.
    pub(crate) fn request_data(&self) -> Option<u64> {
        let index = self.in_slot()?;
        let generation = self.storage.slots[index as usize].generation();
        Some(crate::event_loop::id::RequestId::new(index, generation).op_data())
    }

    /// Whether the calling thread runs this operation's loop.
    pub(crate) fn serves_here(&self) -> bool {
        crate::event_loop::local::serves_here(self.storage.key())
    }

    /// The oldest result a stream (this submitted request) queues, taken here without a `next`
    /// request: only on the loop's thread while it polls `block_on`'s future (its window), when
    /// the loop holds the stream and no `next` of it waits.
    pub(crate) fn stream_item_here(&self) -> Option<Result<usize, Error>> {
        let data = self.request_data()?;
        if !self.serves_here() || !self.storage.local.is_active() {
            return None;
        }
        // SAFETY: read on the loop's thread (`serves_here`) during this poll, which runs no
        // user code until the call returns.
        unsafe { EventLoop::<S, R, W>::stream_item_in_window(self.storage.local.window(), data) }
    }

    /// Which operation it is.
    pub fn kind(&self) -> crate::op::OpKind {
        O::KIND
    }

    /// The same operation as a [`LocalOp`](crate::LocalOp): a future that never leaves the
    /// thread it is made on (`!Send`). Awaited on the loop's own thread (a `block_on` future or
    /// a pool task there), the loop hands its result over without a locked read-modify-write:
    /// the one an `Op` needs because it might be dropped on another thread at the moment the
    /// loop finishes it. Set the other options first.
    ///
    /// ```
    /// use static_uring::Config;
    /// let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// let done = event_loop
    ///     .block_on(async move { handle.nop().local().await })
    ///     .unwrap();
    /// assert!(done.is_ok());
    /// ```
    #[inline]
    pub fn local(mut self) -> crate::LocalOp<O, S, R, W> {
        self.pinned = true;
        crate::LocalOp::new(self)
    }

    /// The operation, to set one of its options.
    ///
    /// # Panics
    /// Once submitted.
    pub(crate) fn operation(&mut self) -> &mut O {
        &mut self.start().op
    }

    fn start(&mut self) -> &mut Start<O> {
        match &mut *self.state {
            State::Start(start) => start,
            _ => panic!("an operation's options are set before it is submitted (try_submit)"),
        }
    }

    /// Drives the submission: `Ready(Some(result))` if the op ended without the loop,
    /// `Ready(None)` once it is in the loop's hands, `Pending` while waiting for a slot (`notify`
    /// is told when one is handed over). An operation `check` would pass through as it is stays
    /// in the state until its request is written into the slot straight from there.
    #[inline]
    fn poll_submit(&mut self, notify: Notify<'_>, serving: bool) -> Poll<Option<OpResult<O>>> {
        match &*self.state {
            State::Submitted(_) | State::Held(..) => return Poll::Ready(None),
            State::Finished => panic!("operation polled after completion"),
            State::Start(start) if start.op.valid() => {}
            State::Checked(_) => {}
            State::Start(_) => {
                let State::Start(start) = std::mem::replace(&mut *self.state, State::Finished)
                else {
                    unreachable!("matched above")
                };
                match start.check() {
                    Ok(checked) => self.state.settle(State::Start(checked)),
                    Err(result) => return Poll::Ready(Some(result)),
                }
            }
            State::Ready(_) => return Poll::Ready(self.take_ready()),
        }
        match self.claim(notify, serving) {
            Poll::Pending => {
                let start = self.take_start();
                self.state.settle(State::Checked(start));
                Poll::Pending
            }
            Poll::Ready(Ok(index)) => match self.submit_in_place(index, notify.blocks(), serving) {
                Ok(()) => Poll::Ready(None),
                Err(result) => Poll::Ready(Some(result)),
            },
            Poll::Ready(Err(e)) => Poll::Ready(Some(self.take_start().unsubmitted(e))),
        }
    }

    /// The checked start out of the state (`Start` or `Checked`), which is left `Finished`.
    fn take_start(&mut self) -> Start<O> {
        match std::mem::replace(&mut *self.state, State::Finished) {
            State::Start(start) | State::Checked(start) => start,
            _ => unreachable!("called with a start in the state"),
        }
    }

    /// [`submit`](Self::submit) for the checked start in the state (`Start` or `Checked`): its
    /// fields move from there straight into slot `index`, and the state becomes `Submitted`.
    #[inline]
    #[allow(clippy::result_large_err)] // the caller's buffer comes back by value
    fn submit_in_place(
        &mut self,
        index: u32,
        blocking: bool,
        serving: bool,
    ) -> Result<(), OpResult<O>> {
        self.storage.slots[index as usize].mark_filled();
        // As in `submit`.
        let Some(route) = Self::route(&self.storage, self.lane, self.epoch, serving) else {
            self.storage.free_slot(index);
            return Err(self.take_start().unsubmitted(Error::Closed));
        };
        let (State::Start(start) | State::Checked(start)) = &*self.state else {
            unreachable!("called with a start in the state")
        };
        // SAFETY: the start's fields are moved out of the state once, and the state is
        // overwritten without its drop glue before anything can panic (the fields are then ours
        // alone, dropped by the unwinding if the fill panics).
        let fields = unsafe {
            let fields = (
                std::ptr::read(&start.op),
                std::ptr::read(&start.held),
                std::ptr::read(&start.fd),
                start.deadline,
            );
            std::ptr::write(&mut *self.state, State::Submitted(index));
            fields
        };
        Start::fill_fields(fields, &self.storage, index);
        self.hand_over(index, blocking, route);
        Ok(())
    }

    /// Writes the request of `start` into the claimed slot `index` and hands it to the loop; or,
    /// if the loop closed meanwhile, frees the slot and returns the request's result. `blocking`:
    /// the caller waits in `.wait()`; `serving`: this thread runs the loop (`serves_here`, read
    /// once by the caller's poll).
    #[inline]
    #[allow(clippy::result_large_err)] // the caller's buffer comes back by value
    fn submit(
        &self,
        index: u32,
        start: Start<O>,
        blocking: bool,
        serving: bool,
    ) -> Result<u32, OpResult<O>> {
        let storage = &self.storage;
        storage.slots[index as usize].mark_filled();
        let Some(route) = Self::route(storage, self.lane, self.epoch, serving) else {
            storage.free_slot(index);
            return Err(start.unsubmitted(Error::Closed));
        };
        start.fill(storage, index);
        self.hand_over(index, blocking, route);
        Ok(index)
    }

    /// The way in for a request about to be written into its slot, taken only if the loop still
    /// takes requests (`None`: closed for this claim). Taken before the slot is written, so that
    /// a closed loop's caller gets its buffer back untouched.
    ///
    /// On the loop's own thread (a `block_on` future, a pool task, a waker the loop runs) the
    /// loop is awake (it is running this code) and cannot start its drain or close before the
    /// hand-over: no count and no wake are needed, and the check that it still takes requests
    /// was made by the claim just before, in this same call (`claim`, `try_submit`), with no code
    /// of the loop's or the caller's in between.
    #[inline]
    fn route<'a>(
        storage: &'a crate::storage::Storage<S, R, W>,
        lane: Option<&'static Lane<S>>,
        epoch: u32,
        serving: bool,
    ) -> Option<Route<'a, S>> {
        match (lane, storage.loop_here_if(serving)) {
            // The lane's one producer is this thread (`LaneHandle` is not `Sync`, `LaneOp` not
            // `Send`), so its push needs no position; off the loop thread it is counted in the
            // life word's `submitting` until its push is visible.
            (Some(lane), _) => {
                (serving || storage.begin_submit(epoch)).then_some(Route::Lane(lane, !serving))
            }
            (None, Some(here)) => Some(Route::Here(here)),
            // One compare-exchange checks that the ring is open for our claim and takes a
            // position (`submit_queue.rs`). The loop waits for a claimed position, so nothing
            // between this and the publish may panic or run user code: the fill only moves.
            (None, None) => storage.queue.claim(epoch).map(Route::Ring),
        }
    }

    /// Hands request `index`, written into its slot (`FILLED`), to the loop by `route`; then
    /// wakes the loop if it may be asleep (the wake rides on the route's one read-modify-write).
    #[inline]
    fn hand_over(&self, index: u32, blocking: bool, route: Route<'_, S>) {
        let storage = &self.storage;
        let slot = &storage.slots[index as usize];
        match route {
            Route::Lane(lane, counted) => {
                slot.mark_queued(blocking);
                lane.push(index);
                if counted {
                    storage.end_submit(self.epoch);
                }
            }
            // On the serving loop's thread: admitted at once, into its private queue, which it
            // pops first.
            Route::Here(here) => {
                slot.mark_admitted_here();
                here.push(index);
            }
            Route::Ring(position) => {
                slot.mark_queued(blocking);
                if storage.queue.publish(position, index) && wake::take_intent(storage.queue.word())
                {
                    storage.eventfd().ring();
                }
            }
        }
    }

    /// A free slot for this request: taken directly while nobody waits, else through the wait
    /// list, which hands slots over in FIFO order. Once queued, the `Op` only ever takes the slot
    /// granted to its node, never a second one.
    fn claim(&mut self, notify: Notify<'_>, serving: bool) -> Poll<Result<u32, Error>> {
        let storage = &self.storage;
        // From another thread the claim of a ring position (or a lane's `begin_submit`) is the
        // authoritative check, made after the slot's (a closed loop's slot goes straight back);
        // on the loop's own thread, which takes neither, this is the check.
        if serving && storage.is_closed(self.epoch) {
            return Poll::Ready(Err(Error::Closed));
        }
        if !self.queued {
            if let Some(index) = storage.pop_free(storage.loop_here_if(serving)) {
                return Poll::Ready(Ok(index));
            }
        }
        let epoch = self.epoch;
        self.queued = true;
        // SAFETY: `waiter` is pinned inside this future (Op is !Unpin; `Future::poll` and `wait`
        // only run on pinned values) and `Drop` cancels it before the memory goes.
        let state = unsafe {
            storage.waiters.poll_claim(
                &self.waiter,
                epoch,
                &storage.free,
                || storage.is_closed(epoch),
                notify,
            )
        };
        match state {
            WaitState::Granted(index) => Poll::Ready(Ok(index)),
            WaitState::Closed => Poll::Ready(Err(Error::Closed)),
            WaitState::Queued | WaitState::Idle => Poll::Pending,
        }
    }

    /// The result, if the loop has finished with the request.
    pub(crate) fn try_take(&mut self, serving: bool) -> Option<OpResult<O>> {
        let index = match *self.state {
            State::Submitted(index) => index,
            // The loop unholds a request before it abandons it: done or pending.
            State::Held(_, index) => {
                let done = self.storage.slots[index as usize].is_done();
                return done.then(|| self.take_held(index, serving));
            }
            _ => return self.take_ready(),
        };
        self.try_take_submitted(index, serving)
    }

    /// [`try_take`](Self::try_take) of the request submitted in slot `index` (the state is
    /// `Submitted(index)`): inlined into `.wait()`, which knows it.
    #[inline(always)]
    fn try_take_submitted(&mut self, index: u32, serving: bool) -> Option<OpResult<O>> {
        let slot = &self.storage.slots[index as usize];
        if slot.is_done() {
            return Some(self.take_done(index, serving));
        }
        if slot.is_abandoned() {
            // The kernel may still write the buffer: it stays parked in the slot for good.
            self.state.settle(State::Finished);
            return Some(Err(O::lost(Error::Abandoned)));
        }
        None
    }

    /// Takes back the wakers this `Op` left for slot `index`: in the slot's cell, and in the
    /// loop thread's private cell when on that thread (`here`; from elsewhere the loop drops it).
    fn take_wakers_back(
        &self,
        index: u32,
        here: Option<&LoopLocal<S>>,
    ) -> (Option<Waker>, Option<Waker>) {
        let private = match (self.registered_here, here) {
            (true, Some(here)) => here.take_waker(index),
            _ => None,
        };
        (self.take_shared_waker_back(index), private)
    }

    /// Takes back the waker this `Op` left in slot `index`'s cell, if the loop did not take it.
    #[inline]
    fn take_shared_waker_back(&self, index: u32) -> Option<Waker> {
        match self.registered {
            true => self.storage.slots[index as usize].waker.take_back(),
            false => None,
        }
    }

    fn take_ready(&mut self) -> Option<OpResult<O>> {
        self.state.take_ready()
    }

    /// Blocks the calling thread until the operation finishes (no executor needed). Polls for
    /// up to the loop's `idle_spin` first, then parks on a futex; waiting for a free slot parks
    /// the thread in the wait list. Allocation-free.
    ///
    /// The loop enforces deadlines: a `.wait()` whose loop is never started (`run`, `block_on`,
    /// `spawn`) waits until that loop runs or is dropped (`Error::Closed`), whatever its
    /// deadline.
    ///
    /// # Panics
    /// On the thread that runs this operation's loop (inside `block_on`, a `TaskPool` task, or
    /// a waker or `Drop` the loop runs): it would block the only thread that can complete it.
    /// Use `.await` there.
    pub fn wait(mut self) -> OpResult<O> {
        assert!(
            !crate::event_loop::local::serves_here(self.storage.key()),
            "`.wait()` on the loop thread of the operation's own loop would block the only thread \
             that can complete it: inside `block_on` or a `TaskPool` task, use `.await` instead"
        );
        // Pinned where it lies (`pin!` would copy it first): `self` is never moved again, and is
        // dropped at the end of this call, so `waiter` stays in place.
        let this = &mut self;
        // If it must queue for a slot, the wait list takes its own handle on this thread (a
        // reference count, no allocation), so a late notification never points into this frame.
        loop {
            match this.poll_submit(Notify::CurrentThread, false) {
                Poll::Ready(Some(result)) => return result,
                Poll::Ready(None) => break,
                Poll::Pending => std::thread::park(),
            }
        }
        let State::Submitted(index) = *this.state else {
            unreachable!("submitted above")
        };
        let (budget, full) = this.storage.wait_spin_state();
        let mut spin = crate::spin::Spin::new(budget);
        let mut spinning = true;
        loop {
            // Looked at first: a request just handed over is still pending, and the look is
            // cheaper than the call.
            if !this.storage.slots[index as usize].is_pending() {
                if let Some(result) = this.try_take_submitted(index, false) {
                    // Found while spinning: a hit (`spin::grow`, no clock read), which changes
                    // nothing at a full budget; after the spin ended, adapted by its length.
                    if !spinning {
                        this.storage.adapt_wait_spin(&spin);
                    } else if !full {
                        this.storage.grow_wait_spin();
                    }
                    return result;
                }
            }
            let slot = &this.storage.slots[index as usize];
            spinning = spinning && slot.spin_while_pending(&mut spin);
            if !spinning {
                slot.park();
            }
        }
    }
}

impl<O: Operation, const S: usize, const R: usize, const W: usize> Future for Op<O, S, R, W> {
    type Output = OpResult<O>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<OpResult<O>> {
        self.poll_inline(cx)
    }
}

impl<O: Operation, const S: usize, const R: usize, const W: usize> Op<O, S, R, W> {
    /// The result the loop delivered into this future when its held request ended
    /// (`State::Ready`, `handle/held.rs`), taken; `None` in any other state. Any thread may
    /// take a ready result: it is the future's own.
    #[inline(always)]
    pub(crate) fn take_delivered(self: &mut Pin<&mut Self>) -> Option<OpResult<O>> {
        // SAFETY: only the state is touched, and it is not pinned (it is moved in and out).
        unsafe { &mut *self.as_mut().get_unchecked_mut().state }.take_ready()
    }

    /// `poll`, inlined into the caller: a `LocalOp`'s poll, so that the loop thread's path
    /// lives in the task that awaits it (no call, no second frame).
    #[inline(always)]
    pub(crate) fn poll_inline(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<OpResult<O>> {
        // SAFETY: we never move the fields out of the pinned future; `waiter` stays in place.
        let this = unsafe { self.get_unchecked_mut() };
        // Whether this thread serves the operation's loop: read once per poll (a thread-local).
        let serving = crate::event_loop::local::serves_here(this.storage.key());
        if serving && this.lane.is_none() && this.storage.local.is_active() {
            return this.poll_here(cx);
        }
        this.poll_shared(cx, serving)
    }
}

/// The loop thread's own path (`loop_local.rs`): an operation polled on the thread that runs
/// its loop, while it serves, outside a lane. A private slot admitted at once, a private waker
/// cell, plain stores; the rare cases (waiting for a slot, a closed loop, a poll before the
/// result) go to the shared path, which handles the loop thread too.
impl<O: Operation, const S: usize, const R: usize, const W: usize> Op<O, S, R, W> {
    /// The rare cases go to the shared path (`poll_shared`, out of line), so that the result
    /// is built where the caller wants it.
    #[inline]
    fn poll_here(&mut self, cx: &mut Context<'_>) -> Poll<OpResult<O>> {
        match *self.state {
            // A held request the loop finished into this future (`event_loop/held.rs`).
            State::Ready(_) => match self.state.take_ready() {
                Some(result) => Poll::Ready(result),
                None => unreachable!("matched above"),
            },
            State::Held(_, index) if self.storage.slots[index as usize].is_done() => {
                Poll::Ready(self.take_held(index, true))
            }
            State::Submitted(index) if self.storage.slots[index as usize].is_done() => {
                Poll::Ready(self.take_done(index, true))
            }
            State::Start(_) if !self.queued => match self.submit_here(cx.waker()) {
                Ok(true) => Poll::Pending,
                Ok(false) => self.poll_shared_here(cx),
                Err(result) => Poll::Ready(result),
            },
            _ => self.poll_shared_here(cx),
        }
    }

    /// [`poll_shared`](Self::poll_shared) for the loop thread's rare cases, out of line: the
    /// loop thread's path in `poll` then keeps a small frame.
    #[inline(never)]
    fn poll_shared_here(&mut self, cx: &mut Context<'_>) -> Poll<OpResult<O>> {
        self.poll_shared(cx, true)
    }

    /// Checks the operation, takes a free slot (the private stack first) while nobody waits
    /// for one and the loop is open, writes the request, keeps `waker` in the private cell and
    /// admits the request into the private queue: `Ok(true)`. `Ok(false)`: no slot at hand
    /// (the checked operation waits in `State::Checked` for the shared path); `Err`: its result
    /// without the loop.
    #[inline]
    #[allow(clippy::result_large_err)] // the caller's buffer comes back by value
    fn submit_here(&mut self, waker: &Waker) -> Result<bool, OpResult<O>> {
        // An operation `check` would pass through as it is stays where it is: its request is
        // written into the slot straight from the future (no moves through `check`).
        if !matches!(&*self.state, State::Start(start) if start.op.valid()) {
            let State::Start(start) = std::mem::replace(&mut *self.state, State::Finished) else {
                unreachable!("matched by poll_here")
            };
            let start = start.check()?;
            self.state.settle(State::Start(start));
        }
        let State::Start(start) = &*self.state else {
            unreachable!("matched by poll_here")
        };
        // Staged at once only without a deadline (the wheel's scheduling is the loop's staging)
        // and with an SQE (the loop holds the others).
        let direct = start.deadline.is_none() && !O::KIND.is_held();
        let storage = &self.storage;
        let here = &storage.local;
        // The loop cannot close while its thread runs this poll: the check holds until the
        // request is in the private queue, which the close sweeps.
        let claimed = match !storage.is_closed(self.epoch) {
            true => storage.pop_free(Some(here)),
            false => None,
        };
        let Some(index) = claimed else {
            let State::Start(start) = std::mem::replace(&mut *self.state, State::Finished) else {
                unreachable!("matched above")
            };
            self.state.settle(State::Checked(start));
            return Ok(false);
        };
        let slot = &storage.slots[index as usize];
        // Held (`held.rs`), deadline or not, when the kind allows it (never a loop-held kind:
        // those are not plain).
        if self.pinned && O::KIND.may_be_held() && !here.window().is_null() {
            let deadline = start.deadline;
            // SAFETY: the start is moved out of the state once, and the state overwritten with
            // it without its drop glue: nothing can panic in between.
            unsafe {
                let start = std::ptr::read(start);
                std::ptr::write(&mut *self.state, State::Held(start, index));
            }
            // Admitted and ours before anything else runs, as below.
            slot.mark_admitted_here_with_local_waker(true);
            let window = here.window();
            self.submit_held(index, window, deadline);
            self.registered_here = true;
            if let Some(old) = self.storage.local.register_first_waker(index, waker) {
                self.storage.run_user(move || drop(old));
            }
            return Ok(true);
        }
        slot.mark_filled();
        // SAFETY: the start's fields are moved out of the state once, and the state is
        // overwritten without its drop glue before anything can panic (the fields are then ours
        // alone, dropped by the unwinding if the fill panics).
        let fields = unsafe {
            (
                std::ptr::read(&start.op),
                std::ptr::read(&start.held),
                std::ptr::read(&start.fd),
                start.deadline,
            )
        };
        // SAFETY: as above: the old value was moved out just now.
        unsafe { std::ptr::write(&mut *self.state, State::Submitted(index)) };
        Start::fill_fields(fields, storage, index);
        // Admitted and ours (`Submitted`) before the waker's clone, which is user code: if it
        // panics, our `Drop` orphans the request like any other. Until then the private cell
        // may hold nothing: the loop, not running now, finds it empty at worst.
        slot.mark_admitted_here_with_local_waker(self.pinned);
        // Staged at once if the loop is polling us from its window (its SQE then waits in the
        // SQ for the pass's enter), else queued for the pass's staging.
        // SAFETY: read on the loop's thread (`loop_here`) during this poll, which runs no user
        // code until the call returns.
        let staged =
            direct && unsafe { EventLoop::<S, R, W>::stage_in_window::<O>(here.window(), index) };
        if !staged {
            here.push(index);
        }
        self.registered_here = true;
        if let Some(old) = here.register_first_waker(index, waker) {
            storage.run_user(move || drop(old));
        }
        Ok(true)
    }

    /// The result of the finished (`DONE`) request in slot `index`, which this `Op` owns now.
    /// The slot is freed (onto the loop thread's private stack when this thread serves the
    /// loop, `serving`); what the request still held (its descriptor, a waker we left) is
    /// dropped after, contained. Inlined into both callers, as the two copies it replaces were.
    #[inline(always)]
    fn take_done(&mut self, index: u32, serving: bool) -> OpResult<O> {
        let slot = &self.storage.slots[index as usize];
        // SAFETY: DONE (Acquire): the caller owns the request; its work is the `O` this `Op`
        // submitted (`Start::fill`), taken out once. Taking the descriptor too leaves a request
        // that owns nothing, as a free slot's must.
        let (op, outcome, fd) =
            unsafe { slot.with_request(|r| (r.work.take::<O>(), r.outcome.take(), r.fd.take())) };
        // Finished before the slot is freed (freeing runs other callers' wakers). A waker we
        // registered in the slot's cell may still be there (the loop woke before we
        // registered): taken back so the slot's next request starts empty, dropped after the
        // slot is free. The loop thread's private cell is empty by now: the loop takes what it
        // holds whenever it finishes a request (`wake_caller`) and when it closes.
        self.state.settle(State::Finished);
        let waker = self.take_shared_waker_back(index);
        // Built before the slot is free: the slot's next owner may fill a vectored request's
        // buffer cell at once.
        let result = op.output(outcome.unwrap_or(Err(Error::Closed)));
        self.storage
            .free_empty(index, self.storage.loop_here_if(serving));
        if fd.is_some() || waker.is_some() {
            self.storage.run_user(move || drop((fd, waker)));
        }
        result
    }

    /// `poll` by any thread, for any state (the loop thread too: in a lane, while the loop
    /// does not serve, or a case `poll_here` leaves).
    fn poll_shared(&mut self, cx: &mut Context<'_>, serving: bool) -> Poll<OpResult<O>> {
        let this = self;
        if let State::Submitted(_) | State::Held(..) = *this.state {
            // Woken (or polled again): look first, and skip the waker when done.
            if let Some(result) = this.try_take(serving) {
                return Poll::Ready(result);
            }
        } else {
            match this.poll_submit(Notify::Task(cx.waker()), serving) {
                Poll::Ready(Some(result)) => return Poll::Ready(result),
                Poll::Pending => return Poll::Pending,
                // Submitted in this very poll: it cannot be done yet (the loop has not even
                // seen it), so go straight to registering.
                Poll::Ready(None) => {}
            }
        }
        let Some(index) = this.in_slot() else {
            unreachable!("submitted above")
        };
        // Register, then check again: the loop sets DONE before it wakes (waker_cell.rs).
        let slot = &this.storage.slots[index as usize];
        match this.storage.loop_here_if(serving) {
            // On the loop thread: its private cell, plain stores (`loop_local.rs`).
            // No check after it: the loop is not running while its thread runs this poll, so
            // the request cannot have finished since the look above (or since it was submitted
            // in this poll).
            Some(here) => {
                let replaced = here.register_waker(index, cx.waker());
                slot.mark_local_waker();
                this.registered_here = true;
                if let Some(old) = replaced {
                    this.storage.run_user(move || drop(old));
                }
                return Poll::Pending;
            }
            None => {
                slot.clear_local_waker();
                this.registered = true;
                slot.waker.register(cx.waker());
            }
        }
        // Most requests are still with the loop: one load (Acquire, as `try_take`'s) tells.
        if slot.is_pending() {
            return Poll::Pending;
        }
        match this.try_take(serving) {
            Some(result) => Poll::Ready(result),
            None => Poll::Pending,
        }
    }
}

impl<O: Operation, const S: usize, const R: usize, const W: usize> Drop for Op<O, S, R, W> {
    /// Inlined for the common case, an `Op` whose result was taken: nothing to do, not even
    /// the state's drop glue (two loads).
    #[inline]
    fn drop(&mut self) {
        if self.queued || !matches!(*self.state, State::Finished) {
            self.drop_slow();
        }
    }
}

impl<O: Operation, const S: usize, const R: usize, const W: usize> Op<O, S, R, W> {
    /// `Drop` of an `Op` that still holds something: leaves the wait list or the loop's hands,
    /// then drops its state (a start, a result never taken).
    fn drop_slow(&mut self) {
        if self.queued || matches!(*self.state, State::Submitted(_) | State::Held(..)) {
            self.leave();
        }
        // SAFETY: `Drop` calls this once, and nothing reads the state after it.
        unsafe { ManuallyDrop::drop(&mut self.state) };
    }
}

impl<O: Operation, const S: usize, const R: usize, const W: usize> Op<O, S, R, W> {
    /// `Drop` of an `Op` still waiting for a slot or still in the loop's hands.
    fn leave(&mut self) {
        // From here on, an ordinary submitted request.
        self.unhold_for_drop();
        if self.queued {
            // SAFETY: `waiter` is still in place (we are in its owner's drop).
            if let Some(index) = unsafe { self.storage.waiters.cancel(&self.waiter) } {
                self.storage.free_slot(index);
            }
        }
        if let State::Submitted(index) = *self.state {
            self.state.settle(State::Finished);
            let slot = &self.storage.slots[index as usize];
            // Take our wakers back first: once orphaned, the slot may be retired and reused, and
            // its cells then belong to the next request. Dropped last, after the slot is settled.
            let waker = self.take_wakers_back(index, self.storage.loop_here());
            match slot.orphan() {
                Leave::Orphaned => match O::KIND.dropped() {
                    // Its slot is freed at the loop's next pass, not at the timer's end.
                    Dropped::Timer => {
                        let serving = crate::event_loop::local::serves_here(self.storage.key());
                        self.storage.note_dropped_timer(index, serving);
                    }
                    rule if rule.always_cancelled()
                        || rule.cancelled() && self.storage.cancels_dropped() =>
                    {
                        self.storage.note_dropped();
                    }
                    _ => {}
                },
                Leave::Abandoned => {}
                // We own the finished request: drop its result and free the slot.
                Leave::Done => self.storage.free_slot(index),
            }
            self.storage.run_user(move || drop(waker));
        }
    }
}

impl<O: Operation, const S: usize, const R: usize, const W: usize> std::fmt::Debug
    for Op<O, S, R, W>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match *self.state {
            State::Start(..) => "not submitted",
            State::Checked(..) => "waiting for a slot",
            State::Submitted(_) | State::Held(..) => "submitted",
            State::Ready(_) => "ready",
            State::Finished => "finished",
        };
        f.debug_struct("Op")
            .field("operation", &O::KIND)
            .field("state", &state)
            .finish()
    }
}

impl<const S: usize, const R: usize, const W: usize> Handle<S, R, W> {
    pub(crate) fn from_storage(storage: StorageRef<S, R, W>) -> Self {
        let epoch = storage.epoch();
        Handle { storage, epoch }
    }

    /// The operation `op` on `fd` (nothing submitted before its first poll).
    #[inline]
    fn op<O: Operation<Held = ()>>(&self, op: O, fd: Option<Fd>) -> Op<O, S, R, W> {
        self.op_with(op, fd, ())
    }

    /// [`op`](Self::op), with what the future keeps until the request has a slot.
    #[inline]
    fn op_with<O: Operation>(&self, op: O, fd: Option<Fd>, held: O::Held) -> Op<O, S, R, W> {
        let start = Start {
            op,
            held,
            fd,
            deadline: None,
        };
        Op {
            storage: self.storage.clone(),
            epoch: self.epoch,
            state: ManuallyDrop::new(State::Start(start)),
            waiter: Waiter::new(),
            queued: false,
            registered: false,
            registered_here: false,
            pinned: false,
            lane: None,
        }
    }

    /// Sends the whole buffer on a socket (short sends are resubmitted) and hands it back. An
    /// empty buffer completes at once. A closed peer is `Error::UnexpectedEof`.
    ///
    /// ```
    /// # use static_uring::{Config, IoBuf};
    /// # use std::sync::Arc;
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let sent = handle.send(Arc::new(a), IoBuf::from(&b"hello"[..])).wait().unwrap();
    /// assert_eq!(&sent[..], b"hello"); // the buffer comes back
    /// # drop(b);
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    #[inline]
    pub fn send(&self, fd: impl Into<Fd>, buf: IoBuf) -> Op<op::Send, S, R, W> {
        self.op(op::Send::new(buf), Some(fd.into()))
    }

    /// Receives into `buf`, from its start up to its capacity: at least one byte by default
    /// ([`exact`](Op::exact), [`limit`](Op::limit) and [`offset`](Op::offset) change that). It
    /// resolves to the buffer, its length set to the end of what was received, and the number of
    /// bytes received. A peer that closes first is `Error::UnexpectedEof`.
    ///
    /// ```
    /// # use static_uring::{Config, IoBufMut};
    /// # use std::sync::Arc;
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// use std::io::Write;
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// (&a).write_all(b"hello").unwrap();
    /// let (buf, n) = handle.recv(b, IoBufMut::with_capacity(16)).exact(5).wait().unwrap();
    /// assert_eq!((n, &buf[..]), (5, &b"hello"[..]));
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    #[inline]
    pub fn recv(&self, fd: impl Into<Fd>, buf: IoBufMut) -> Op<op::Recv, S, R, W> {
        self.op(op::Recv::new(buf), Some(fd.into()))
    }

    /// Reads exactly the buffer's capacity (or [`limit`](Op::limit) bytes) at file `offset`
    /// into `buf` (short reads are resubmitted) and sets its length to it. End of file first is
    /// `Error::UnexpectedEof`, with the bytes read before it in the buffer (its length says how
    /// many: nothing read is lost). A range beyond `i64::MAX` (which the kernel would read as
    /// "the current file position" or refuse) is `Error::InvalidInput` with nothing submitted; a
    /// length of zero completes at once.
    ///
    /// ```
    /// # use static_uring::{Config, IoBufMut};
    /// # use std::sync::Arc;
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let file = Arc::new(std::fs::File::open("/proc/self/exe").unwrap());
    /// let buf = handle.read_at(file, 1, IoBufMut::with_capacity(3)).wait().unwrap();
    /// assert_eq!(&buf[..], b"ELF");
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    #[inline]
    pub fn read_at(
        &self,
        fd: impl Into<Fd>,
        offset: u64,
        buf: IoBufMut,
    ) -> Op<op::ReadAt, S, R, W> {
        self.op(op::ReadAt::new(offset, buf, true), Some(fd.into()))
    }

    /// Reads up to the buffer's capacity (or [`limit`](Op::limit) bytes) at file `offset` into
    /// `buf` with one read (pread semantics): the buffer's length is set to the bytes read,
    /// which is less near end of file and zero at or past it. Nothing is resubmitted except
    /// after `EAGAIN`/`EINTR`. The checks of [`read_at`](Self::read_at) apply.
    ///
    /// ```
    /// # use static_uring::{Config, IoBufMut};
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let path = std::env::temp_dir().join(format!("su-doc-some-{}", std::process::id()));
    /// std::fs::write(&path, b"tail").unwrap();
    /// let fd = static_uring::Fd::from(std::fs::File::open(&path).unwrap());
    /// // Four bytes are left at offset 0: a read of 64 returns them, one at offset 4 returns none.
    /// let buf = handle.read_some_at(fd.clone(), 0, IoBufMut::with_capacity(64)).wait();
    /// assert_eq!(&buf.unwrap()[..], b"tail");
    /// let buf = handle.read_some_at(fd, 4, IoBufMut::with_capacity(64)).wait();
    /// assert!(buf.unwrap().is_empty());
    /// # std::fs::remove_file(&path).unwrap();
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    #[inline]
    pub fn read_some_at(
        &self,
        fd: impl Into<Fd>,
        offset: u64,
        buf: IoBufMut,
    ) -> Op<op::ReadAt, S, R, W> {
        self.op(op::ReadAt::new(offset, buf, false), Some(fd.into()))
    }

    /// Writes the whole buffer at file `offset` (short writes are resubmitted) and hands it
    /// back. Runs to completion even if the future is dropped. An empty buffer completes at
    /// once. A range beyond `i64::MAX` is `Error::InvalidInput` with nothing submitted.
    ///
    /// ```
    /// # use static_uring::{Config, IoBuf};
    /// # use std::sync::Arc;
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let path = std::env::temp_dir().join(format!("su-doc-{}", std::process::id()));
    /// let file = Arc::new(std::fs::File::create(&path).unwrap());
    /// handle.write_at(file.clone(), 0, IoBuf::from(&b"data"[..])).wait().unwrap();
    /// handle.sync(file).wait().unwrap();
    /// assert_eq!(std::fs::read(&path).unwrap(), b"data");
    /// # std::fs::remove_file(&path).unwrap();
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    #[inline]
    pub fn write_at(&self, fd: impl Into<Fd>, offset: u64, buf: IoBuf) -> Op<op::WriteAt, S, R, W> {
        self.op(op::WriteAt::new(offset, buf), Some(fd.into()))
    }

    /// `fsync` of the descriptor. Runs to completion even if the future is dropped.
    #[inline]
    pub fn sync(&self, fd: impl Into<Fd>) -> Op<op::Sync, S, R, W> {
        self.op(op::Sync { data_only: false }, Some(fd.into()))
    }

    /// `fdatasync` of the descriptor: the data and the metadata needed to read it back (the file
    /// size), not timestamps. Otherwise as [`sync`](Self::sync).
    ///
    /// ```
    /// # use static_uring::{Config, IoBuf};
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let path = std::env::temp_dir().join(format!("su-doc-sync-{}", std::process::id()));
    /// let file = static_uring::Fd::from(std::fs::File::create(&path).unwrap());
    /// handle.write_at(file.clone(), 0, IoBuf::from(&b"log"[..])).wait().unwrap();
    /// handle.sync_data(file).wait().unwrap();
    /// # std::fs::remove_file(&path).unwrap();
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    #[inline]
    pub fn sync_data(&self, fd: impl Into<Fd>) -> Op<op::Sync, S, R, W> {
        self.op(op::Sync { data_only: true }, Some(fd.into()))
    }

    /// Accepts a connection on a listening socket (`accept4` with `SOCK_CLOEXEC`) and hands back
    /// the connected socket, owned by the caller (convert it to an [`Fd`] once to use it with the
    /// other operations). A connection accepted for a future that was dropped is closed. With a
    /// deadline, no connection within it is `Error::Timeout`.
    ///
    /// ```
    /// # use static_uring::Config;
    /// # use std::sync::Arc;
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// use static_uring::Fd;
    /// let listener = Arc::new(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    /// let addr = listener.local_addr().unwrap();
    /// let client = std::net::TcpStream::connect(addr).unwrap();
    /// let stream: Fd = handle.accept(listener).wait().unwrap().into();
    /// # drop((client, stream));
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    #[inline]
    pub fn accept(&self, listener: impl Into<Fd>) -> Op<op::Accept, S, R, W> {
        self.op(op::Accept, Some(listener.into()))
    }

    /// Accepts connections on `listener` until the stream is dropped: one request that yields
    /// each connection (`OwnedFd`, close on exec) to [`next`](crate::Multishot::next). The loop
    /// keeps one accept armed while the stream's queue has room, so the listen backlog stays in
    /// the kernel and no connection is refused (`IORING_ACCEPT_MULTISHOT` would hand the whole
    /// backlog over at once, more than a bounded queue holds). Submitted now, like
    /// [`try_submit`](Op::try_submit): `Error::Full` without a free slot, `Error::Closed` once
    /// the loop is gone. See [`Multishot`](crate::Multishot) for the queue, the pause and the
    /// end.
    ///
    /// ```
    /// # use static_uring::Config;
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let addr = listener.local_addr().unwrap();
    /// let mut connections = handle.accept_multi(listener).unwrap();
    /// let clients: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    /// for _ in &clients {
    ///     let conn: std::os::fd::OwnedFd = connections.next().wait().unwrap();
    /// #   drop(conn);
    /// }
    /// # drop((connections, handle));
    /// # thread.join().unwrap().unwrap();
    /// ```
    pub fn accept_multi(
        &self,
        listener: impl Into<Fd>,
    ) -> Result<crate::AcceptStream<S, R, W>, Error> {
        let op = self.op(op::AcceptMulti::new(), Some(listener.into()));
        crate::multishot::start(op, None)
    }

    /// Receives on a connected socket into the buffers of `ring` until the stream is dropped:
    /// one multishot request (`IORING_RECV_MULTISHOT` with a provided-buffer ring, Linux 6.0)
    /// that yields each received chunk as a [`BufLease`](crate::BufLease) to
    /// [`next`](crate::Multishot::next), with no buffer held while the socket is idle. The
    /// ring must be registered with this loop (`EventLoop::register_buf_ring`, else
    /// `Error::Config`). Submitted now, like [`try_submit`](Op::try_submit). End of file ends
    /// the stream with `Error::UnexpectedEof`. See [`BufRing`](crate::BufRing) for an example.
    ///
    /// On a ring registered incremental
    /// ([`register_buf_ring_incremental`](crate::EventLoop::register_buf_ring_incremental)),
    /// each lease is a piece of a buffer the kernel fills with several receives, and the stream
    /// keeps one single-shot receive armed while nothing it received waits for `next`.
    pub fn recv_multi<const COUNT: usize, const SIZE: usize>(
        &self,
        socket: impl Into<Fd>,
        ring: &'static crate::BufRing<COUNT, SIZE>,
    ) -> Result<crate::RecvStream<S, R, W>, Error> {
        use crate::buf_ring::Provided;
        let group = ring.group_of(self.storage.key()).ok_or(Error::Config(
            "the BufRing is not registered with this handle's loop (EventLoop::register_buf_ring)",
        ))?;
        let op = self.op(op::RecvMulti::new(ring, group), Some(socket.into()));
        crate::multishot::start(op, Some(ring))
    }

    /// Connects a socket to `addr`. A refused or unreachable peer is the kernel's errno
    /// (`Error::Os(ECONNREFUSED)`, ...); with a deadline, no connection within it is
    /// `Error::Timeout`.
    ///
    /// ```
    /// # use static_uring::Config;
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// use std::os::fd::FromRawFd;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let addr = listener.local_addr().unwrap();
    /// // A fresh, unconnected socket.
    /// // SAFETY: plain syscall; the result is checked below.
    /// let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    /// assert!(fd >= 0);
    /// // SAFETY: `fd` is a new descriptor nobody else owns.
    /// let socket = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    /// handle.connect(socket, addr).wait().unwrap();
    /// assert!(listener.accept().is_ok());
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    #[inline]
    pub fn connect(
        &self,
        socket: impl Into<Fd>,
        addr: std::net::SocketAddr,
    ) -> Op<op::Connect, S, R, W> {
        let addr = RawAddr::new(addr);
        self.op(op::Connect { addr }, Some(socket.into()))
    }

    /// Sends `buf` as one datagram to `addr` (`sendto`, Linux 6.0+ for the address in the SQE)
    /// and hands it back. An empty buffer is sent as an empty datagram. A datagram too large for
    /// the socket is the kernel's errno (`Os(EMSGSIZE)`).
    ///
    /// ```
    /// # use static_uring::{Config, IoBuf, IoBufMut};
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let (a, b) = (std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
    ///               std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
    /// let (from, to) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    /// handle.send_to(a, IoBuf::from(&b"ping"[..]), to).wait().unwrap();
    /// let (buf, len, sender) = handle.recv_from(b, IoBufMut::with_capacity(16)).wait().unwrap();
    /// assert_eq!((&buf[..], len, sender), (&b"ping"[..], 4, from));
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    #[inline]
    pub fn send_to(
        &self,
        socket: impl Into<Fd>,
        buf: IoBuf,
        addr: std::net::SocketAddr,
    ) -> Op<op::SendTo, S, R, W> {
        let addr = RawAddr::new(addr);
        self.op(op::SendTo { buf, addr }, Some(socket.into()))
    }

    /// Receives one datagram into `buf` (up to its capacity; a longer datagram is truncated, as
    /// `recvfrom` does) and returns the buffer with its length set, the length, and the sender's
    /// address (`0.0.0.0:0` for a sender that is not an IP socket). No allocation: the address
    /// comes back by value; the loop keeps the message header in its own table.
    #[inline]
    pub fn recv_from(&self, socket: impl Into<Fd>, buf: IoBufMut) -> Op<op::RecvFrom, S, R, W> {
        self.op(op::RecvFrom::new(buf), Some(socket.into()))
    }

    /// A no-op through the ring: measures the loop's own round trip.
    ///
    /// ```
    /// # use static_uring::Config;
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// handle.nop().wait().unwrap();
    /// // A deadline that has passed ends the request without I/O.
    /// let past = std::time::Instant::now();
    /// std::thread::sleep(std::time::Duration::from_millis(10));
    /// assert_eq!(handle.nop().deadline(past).wait(), Err(static_uring::Error::Timeout));
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    #[inline]
    pub fn nop(&self) -> Op<op::Nop, S, R, W> {
        self.op(op::Nop, None)
    }

    /// Sends every byte of `bufs`, in order, as one stream (`sendmsg` with `MSG_NOSIGNAL`; short
    /// sends are resubmitted from where the kernel stopped). The rules are `send`'s: the whole
    /// buffers come back on success and on every error, a closed peer is
    /// `Error::UnexpectedEof`, a deadline is `Error::Timeout` (part may have been sent), and a
    /// dropped future's request still runs. Empty buffers (or none) complete at once.
    ///
    /// ```
    /// # use static_uring::{Config, IoBuf, IoBufs};
    /// # use std::io::Read;
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let mut bufs = IoBufs::new();
    /// bufs.push(IoBuf::from(&b"head:"[..]));
    /// bufs.push(IoBuf::from(&b"body"[..]));
    /// let bufs = handle.send_vectored(a, bufs).wait().unwrap();
    /// assert_eq!(bufs.len(), 2, "the buffers come back");
    /// let mut got = [0u8; 9];
    /// b.read_exact(&mut got).unwrap();
    /// assert_eq!(&got, b"head:body");
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    #[inline]
    pub fn send_vectored(&self, fd: impl Into<Fd>, bufs: IoBufs) -> Op<op::SendVectored, S, R, W> {
        self.op_with(op::SendVectored::new(), Some(fd.into()), bufs)
    }

    /// [`send`](Self::send) without copying: the kernel sends from `buf` itself
    /// (`IORING_OP_SEND_ZC`, Linux 6.0). The rules are `send`'s (the whole buffer, short sends
    /// resubmitted, `MSG_NOSIGNAL`, a closed peer is `Error::UnexpectedEof`, a deadline is
    /// `Error::Timeout`, the buffer back on success and on every error, a dropped future's
    /// request still runs), except that the buffer comes back only once the kernel has let go
    /// of it: each SQE's notification CQE ends its turn, so the request holds its slot (and
    /// the next SQE of a short send waits) until then. A buffer of the pool given to
    /// [`EventLoop::register_buffers`](crate::EventLoop::register_buffers) is sent as a
    /// registered buffer (no page pinning per send).
    ///
    /// `Error::Os(libc::EOPNOTSUPP)` (buffer back, nothing sent) when zero copy is not to be
    /// had: the kernel has no `SEND_ZC` (probed when the loop is built), or the socket cannot
    /// send zero-copy (a Unix socket: only TCP and UDP can). Use `send` there.
    ///
    /// Over TCP the kernel lets go of the buffer when the peer has acknowledged the bytes (the
    /// socket's write queue holds the pages until then). So a request waits for the peer's ACK,
    /// which a one-way flow may delay (Linux delays ACKs by up to 40 ms), and a deadline that
    /// cancels a send blocked on a full socket ends it `Error::Timeout` only once the bytes
    /// already queued are acknowledged (or the connection is torn down).
    ///
    /// Worth it only for large sends through a real network device: below a few kilobytes the
    /// page pinning and the second CQE cost more than the copy they save (published figures put
    /// the crossover near 3,000 bytes on real NICs). On loopback the kernel copies anyway, at
    /// delivery ([`Metrics::zero_copy_copied`](crate::Metrics::zero_copy_copied) counts those
    /// sends), so the copy is saved only on the sending side: on TCP loopback (`benches/zc.rs`,
    /// medians of 3, the quietest run on two shared cores) `send_zc` gave 0.59x `send`'s
    /// throughput at 64 B, 0.60-0.64x at 4 KiB, 0.73-0.83x at 16 KiB, and at 64 KiB 0.83x with
    /// one request in flight, 1.16x with 16: a crossover near 64 KiB there (busier runs spread
    /// from 0.2x to 1.7x).
    ///
    /// ```
    /// # use static_uring::{Config, IoBuf};
    /// # use std::io::Read;
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    /// let (mut b, _) = listener.accept().unwrap();
    /// let sent = handle.send_zc(a, IoBuf::from(&b"hello"[..])).wait().unwrap();
    /// assert_eq!(&sent[..], b"hello"); // back once the kernel let go of it
    /// let mut got = [0u8; 5];
    /// b.read_exact(&mut got).unwrap();
    /// assert_eq!(&got, b"hello");
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    #[inline]
    pub fn send_zc(&self, fd: impl Into<Fd>, buf: IoBuf) -> Op<op::SendZc, S, R, W> {
        self.op(op::SendZc::new(buf), Some(fd.into()))
    }

    /// [`send_vectored`](Self::send_vectored) without copying (`IORING_OP_SENDMSG_ZC`, Linux
    /// 6.1): every byte of `bufs`, in order, as one stream, under [`send_zc`](Self::send_zc)'s
    /// rules (the buffers back only once the kernel has let go of them;
    /// `Error::Os(libc::EOPNOTSUPP)`, buffers back, where the kernel or the socket cannot send
    /// zero-copy).
    ///
    /// ```
    /// # use static_uring::{Config, IoBuf, IoBufs};
    /// # use std::io::Read;
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    /// let a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    /// let (mut b, _) = listener.accept().unwrap();
    /// let bufs: IoBufs = [IoBuf::from(&b"head:"[..]), IoBuf::from(&b"body"[..])].into_iter().collect();
    /// let bufs = handle.send_vectored_zc(a, bufs).wait().unwrap();
    /// assert_eq!(bufs.len(), 2, "the buffers come back");
    /// let mut got = [0u8; 9];
    /// b.read_exact(&mut got).unwrap();
    /// assert_eq!(&got, b"head:body");
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    #[inline]
    pub fn send_vectored_zc(
        &self,
        fd: impl Into<Fd>,
        bufs: IoBufs,
    ) -> Op<op::SendVectoredZc, S, R, W> {
        self.op_with(op::SendVectoredZc::new(), Some(fd.into()), bufs)
    }

    /// Writes every byte of `bufs`, in order, at file `offset` (`writev`; short writes are
    /// resubmitted from where the kernel stopped). The rules are `write_at`'s: it runs to
    /// completion even if the future is dropped; a range beyond `i64::MAX` is
    /// `Error::InvalidInput` with nothing submitted; empty buffers complete at once.
    ///
    /// ```
    /// # use static_uring::{Config, IoBuf, IoBufs};
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let path = std::env::temp_dir().join(format!("su-doc-writev-{}", std::process::id()));
    /// let file = static_uring::Fd::from(std::fs::File::create(&path).unwrap());
    /// let bufs: IoBufs = [IoBuf::from(&b"ab"[..]), IoBuf::from(&b"cd"[..])].into_iter().collect();
    /// handle.write_at_vectored(file, 1, bufs).wait().unwrap();
    /// assert_eq!(std::fs::read(&path).unwrap(), b"\0abcd");
    /// # std::fs::remove_file(&path).unwrap();
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    #[inline]
    pub fn write_at_vectored(
        &self,
        fd: impl Into<Fd>,
        offset: u64,
        bufs: IoBufs,
    ) -> Op<op::WriteAtVectored, S, R, W> {
        self.op_with(op::WriteAtVectored::new(offset), Some(fd.into()), bufs)
    }

    /// Waits until `fd` is ready for `events` (`Readiness::READABLE`, `WRITABLE`, or both) and
    /// returns what happened (`IORING_OP_POLL_ADD`, one shot): the way to drive a descriptor
    /// through the loop without reading it here, such as a signalfd, a timerfd, an eventfd or
    /// another library's socket. A hang-up or error is reported whatever was asked. With a
    /// deadline, nothing within it is `Error::Timeout`; with `Config::cancel_on_drop`, a dropped
    /// poll is cancelled.
    ///
    /// ```
    /// # use static_uring::{Config, Readiness};
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// use std::io::Write;
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// (&a).write_all(b"!").unwrap();
    /// let ready = handle.poll(b, Readiness::READABLE).wait().unwrap();
    /// assert!(ready.is_readable());
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    #[inline]
    pub fn poll(&self, fd: impl Into<Fd>, events: Readiness) -> Op<op::Poll, S, R, W> {
        self.op(op::Poll { events }, Some(fd.into()))
    }

    /// A timer that ends `after` from now ([`sleep_until`](Self::sleep_until)).
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use static_uring::Config;
    /// let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// let thread = event_loop.spawn("io").unwrap();
    /// let start = Instant::now();
    /// handle.sleep(Duration::from_millis(20)).wait().unwrap();
    /// assert!(start.elapsed() >= Duration::from_millis(20)); // never early
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    #[inline]
    pub fn sleep(&self, after: Duration) -> Op<op::Sleep, S, R, W> {
        // Past `Instant`'s range: no end (it waits until dropped or the loop stops).
        self.op(op::Sleep, None)
            .deadline(Instant::now().checked_add(after))
    }

    /// A timer on the loop's wheel that ends `Ok(())` at `at`, never before (semantics A4: a
    /// deadline never fires early; it may fire up to a tick late, `Config::timeout_wheel_tick`).
    /// No kernel request: it holds a slot while it waits, but none of the `RING` entries. An
    /// instant already past ends it at once. Its deadline is its end (`Op::deadline` moves it;
    /// `None` waits until it is dropped or the loop stops). Dropped, its slot is free again at
    /// the loop's next pass. At shutdown the drain waits for it like a request in flight, and
    /// it ends `Abandoned` if the budget runs out first. From any thread, or on the loop thread.
    #[inline]
    pub fn sleep_until(&self, at: Instant) -> Op<op::Sleep, S, R, W> {
        self.op(op::Sleep, None).deadline(at)
    }

    /// Posts `value` to the loop `mailbox` addresses (another loop, or this one) with
    /// `IORING_OP_MSG_RING`: an SQE on this handle's loop that puts a CQE into the receiving
    /// loop's completion queue, where a [`recv_message`](Self::recv_message) of that loop takes
    /// it; no eventfd and no shared queue. `Ok(())` once the kernel posted it. Every `u64` gets
    /// through. Messages from one loop to one mailbox arrive in the order they were posted when
    /// each post is awaited before the next (the kernel may reorder SQEs in flight together).
    ///
    /// `Error::Closed` when the receiving loop is draining or gone (nothing is sent);
    /// `Error::Full` when it already holds `SLOTS` messages (its queue's capacity) that nobody
    /// took yet, counting those on their way: refused before sending, never dropped after. A
    /// post to a single-issuer loop that is not running yet waits until it runs. A dropped post
    /// that was submitted is still sent.
    ///
    /// ```
    /// # use static_uring::Config;
    /// let (receiver, mut receiving_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// let mailbox = receiving_loop.mailbox().unwrap();
    /// let thread = receiving_loop.spawn("rx").unwrap();
    /// // This loop posts to itself here; any other loop's handle posts the same way.
    /// receiver.post(&mailbox, 42).wait().unwrap();
    /// assert_eq!(receiver.recv_message().wait(), Ok(42));
    /// # drop(receiver);
    /// # thread.join().unwrap().unwrap();
    /// ```
    #[inline]
    pub fn post(&self, mailbox: &crate::Mailbox, value: u64) -> Op<op::Post, S, R, W> {
        self.op(op::Post::new(mailbox, value), None)
    }

    /// Takes the next message posted to this handle's loop (see [`post`](Self::post)): one
    /// queued already at once, else the first to arrive (waiting receivers are served oldest
    /// first). No kernel request: it holds a slot while it waits, none of the `RING` entries.
    /// With a deadline, none within it is `Error::Timeout`. When the loop drains, a waiting
    /// receiver gets the messages still on their way, then `Error::Closed`.
    /// `Error::InvalidInput` if the loop has no mailbox (`EventLoop::mailbox` was never
    /// called): no message could come.
    #[inline]
    pub fn recv_message(&self) -> Op<op::RecvMessage, S, R, W> {
        self.op(op::RecvMessage { value: 0 }, None)
    }

    /// Bounds `future` by a timer that ends `after` from now: its output, or
    /// `Err(Error::Timeout)` if the time is up first ([`Timeout`](crate::Timeout)). Several
    /// operations awaited inside one `future` share the one deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use static_uring::{Config, Error};
    /// let (io, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// event_loop
    ///     .block_on(async move {
    ///         let quick = io.timeout(Duration::from_secs(5), async {
    ///             io.nop().await?;
    ///             io.nop().await
    ///         });
    ///         assert_eq!(quick.await, Ok(Ok(())));
    ///         let slow = io.timeout(Duration::from_millis(10), io.sleep(Duration::from_secs(60)));
    ///         assert_eq!(slow.await, Err(Error::Timeout));
    ///     }) // `io` is dropped when the future ends: the loop drains and returns
    ///     .unwrap();
    /// ```
    pub fn timeout<F: Future>(&self, after: Duration, future: F) -> crate::Timeout<F, S, R, W> {
        crate::Timeout::new(future, self.sleep(after))
    }

    /// Bounds `future` by a timer that ends at `at` (see [`timeout`](Self::timeout)).
    pub fn timeout_at<F: Future>(&self, at: Instant, future: F) -> crate::Timeout<F, S, R, W> {
        crate::Timeout::new(future, self.sleep_until(at))
    }

    /// Starts the loop's shutdown now, as if every `Handle` were dropped: from this call on no
    /// request is taken (an operation submitted later, or waiting for a slot, ends `Closed`);
    /// requests already submitted drain as at the last handle's exit (in-flight ones finish or
    /// meet their deadline, under `Config::shutdown_timeout`, then are abandoned), and `run`
    /// returns. In loop-thread mode the `block_on` future is still polled while the loop
    /// drains, so tasks whose operations end can return; `block_on` gives its output if it
    /// finishes by then. Callable from any thread or task, any number of times; handles stay
    /// valid (their operations end `Closed`).
    ///
    /// ```
    /// use static_uring::{Config, Error};
    /// let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// let thread = event_loop.spawn("io").unwrap();
    /// handle.nop().wait().unwrap();
    /// handle.shutdown();
    /// thread.join().unwrap().unwrap(); // the loop ended though `handle` is alive
    /// assert_eq!(handle.nop().wait(), Err(Error::Closed));
    /// ```
    pub fn shutdown(&self) {
        self.storage.shutdown(self.epoch);
    }

    /// A snapshot of the loop's counters (no allocation).
    pub fn metrics(&self) -> Metrics {
        self.storage.metrics.snapshot()
    }

    /// Which optional ring setup features the loop uses ([`RingFeatures`](crate::RingFeatures)):
    /// the setup flags from the loop's construction, `registered_ring` once the loop runs.
    pub fn ring_features(&self) -> crate::RingFeatures {
        self.storage.features.get()
    }

    /// Testing only (cargo feature `fault-injection`): makes this loop's next matching event
    /// fail as `fault` says (see [`fault`](crate::fault)).
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&self, fault: crate::fault::Fault) {
        crate::fault::inject(self.storage.fault_key(), fault);
    }
}

impl<const S: usize, const R: usize, const W: usize> Handle<S, R, W> {
    /// Binds this thread's submissions to `lane`, a single-producer path into the loop that
    /// skips the shared ring's claim: the lane must be registered with this handle's loop
    /// ([`EventLoop::register_lane`](crate::EventLoop::register_lane); `Error::Config`
    /// otherwise), and only one `LaneHandle` holds it at a time (`Error::InUse`). Submit
    /// operations built with any handle of the loop through [`LaneHandle::submit`].
    pub fn lane(&self, lane: &'static Lane<S>) -> Result<LaneHandle<S, R, W>, Error> {
        if !lane.is_bound_to(self.storage.key(), self.epoch) {
            return Err(Error::Config(
                "the lane is not registered with this handle's loop (EventLoop::register_lane)",
            ));
        }
        if !lane.claim() {
            return Err(Error::InUse);
        }
        Ok(LaneHandle {
            key: self.storage.key(),
            epoch: self.epoch,
            lane,
            _one_thread: PhantomData,
        })
    }
}

/// One producer's end of a [`Lane`]: `Send` but not `Sync`, so its submissions come from one
/// thread at a time and the lane needs no claim per request. It does not keep the loop alive
/// (the `Handle`s that build the operations do); dropping it frees the lane for the next
/// producer.
pub struct LaneHandle<const SLOTS: usize, const RING: usize, const WHEEL: usize> {
    /// The loop the lane is registered with: its storage's identity and claim.
    key: usize,
    epoch: u32,
    lane: &'static Lane<SLOTS>,
    _one_thread: PhantomData<std::cell::Cell<()>>,
}

impl<const S: usize, const R: usize, const W: usize> LaneHandle<S, R, W> {
    /// Sends `op` (built with any `Handle` of this loop, not yet polled) through the lane. The
    /// result is the same future, tied to this thread: every rule of the operation holds
    /// (deadlines, cancel, drain). An op of another loop, or one already submitted
    /// ([`Op::try_submit`]), is returned unchanged and goes its own way.
    ///
    /// ```
    /// # use static_uring::{Config, Lane};
    /// # static LANE: Lane<8> = Lane::new();
    /// # let (handle, mut event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # event_loop.register_lane(&LANE).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let lane = handle.lane(&LANE).unwrap();
    /// for _ in 0..3 {
    ///     lane.submit(handle.nop()).wait().unwrap();
    /// }
    /// # drop((lane, handle));
    /// # thread.join().unwrap().unwrap();
    /// ```
    #[inline]
    pub fn submit<O: Operation>(&self, mut op: Op<O, S, R, W>) -> LaneOp<'_, O, S, R, W> {
        let ours = op.storage.key() == self.key && op.epoch == self.epoch;
        if ours && matches!(*op.state, State::Start(..)) {
            op.lane = Some(self.lane);
        }
        LaneOp {
            op,
            _lane: PhantomData,
        }
    }
}

impl<const S: usize, const R: usize, const W: usize> Drop for LaneHandle<S, R, W> {
    fn drop(&mut self) {
        self.lane.release();
    }
}

impl<const S: usize, const R: usize, const W: usize> std::fmt::Debug for LaneHandle<S, R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneHandle").finish_non_exhaustive()
    }
}

/// An operation submitted through a lane ([`LaneHandle::submit`]): an [`Op`] tied to the lane's
/// thread (not `Send`). Await it or [`wait`](Self::wait) for it as the `Op` itself.
#[must_use = "operations do nothing until polled or waited on"]
pub struct LaneOp<'a, O: Operation, const SLOTS: usize, const RING: usize, const WHEEL: usize> {
    op: Op<O, SLOTS, RING, WHEEL>,
    _lane: PhantomData<&'a LaneHandle<SLOTS, RING, WHEEL>>,
}

impl<O: Operation, const S: usize, const R: usize, const W: usize> LaneOp<'_, O, S, R, W> {
    /// Blocks this thread until the operation finishes (as [`Op::wait`]).
    pub fn wait(self) -> OpResult<O> {
        self.op.wait()
    }
}

impl<O: Operation, const S: usize, const R: usize, const W: usize> Future
    for LaneOp<'_, O, S, R, W>
{
    type Output = OpResult<O>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<OpResult<O>> {
        // SAFETY: `op` is structurally pinned: never moved out while `self` is pinned.
        unsafe { self.map_unchecked_mut(|this| &mut this.op) }.poll(cx)
    }
}

impl<const S: usize, const R: usize, const W: usize> Clone for Handle<S, R, W> {
    fn clone(&self) -> Self {
        self.storage.add_handle();
        Handle {
            storage: self.storage.clone(),
            epoch: self.epoch,
        }
    }
}

impl<const S: usize, const R: usize, const W: usize> Drop for Handle<S, R, W> {
    fn drop(&mut self) {
        self.storage.drop_handle(self.epoch);
    }
}

impl<const S: usize, const R: usize, const W: usize> std::fmt::Debug for Handle<S, R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("slots", &S)
            .field("ring", &R)
            .field("wheel", &W)
            .finish()
    }
}
