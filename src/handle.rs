//! [`Handle`] and the operation future [`Op`]: how a caller's request gets into a slot, into the
//! submission ring, and back out with its result.
//!
//! An `Op` is lazy: nothing happens until its first poll (or `.wait()`), which claims a slot,
//! writes the request into it, pushes the slot index to the loop and rings the loop if it sleeps.
//! From then on the loop owns the request; dropping the `Op` orphans it (the loop retires it,
//! and write_at and sync still run to completion). `try_*` does the claim and submit at the call.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::buf::{IoBuf, IoBufMut};
use crate::error::Error;
use crate::event_loop::request::Request;
use crate::fd::Fd;
use crate::handoff::lane::Lane;
use crate::handoff::slot::Leave;
use crate::handoff::wait_list::{Notify, WaitState, Waiter};
use crate::metrics::Metrics;
use crate::op::{self, Operation, PollResult, RawAddr, Readiness, Tagged, Work};
use crate::storage::StorageRef;
use crate::vectored::{IoBufs, VectorCell};

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
///     io.nop(None).wait()
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

/// Result of `send` and `write_at`: the whole buffer back, or the buffer and the error.
pub type WriteResult = Result<IoBuf, (IoBuf, Error)>;
/// Result of `recv`: the buffer and `filled` (the position reached), or the buffer and the error.
pub type RecvResult = Result<(IoBufMut, usize), (IoBufMut, Error)>;
/// Result of `read_at`: the buffer holding exactly the requested bytes, or the buffer and the error.
pub type ReadResult = Result<IoBufMut, (IoBufMut, Error)>;
/// Result of `sync`, `nop` and `connect`.
pub type UnitResult = Result<(), Error>;
/// Result of `accept`: the connected socket (close-on-exec), owned by the caller.
pub type AcceptResult = Result<std::os::fd::OwnedFd, Error>;
/// Result of `recv_from`: the buffer (its length set to the datagram's), the datagram's length
/// and the sender's address; or the buffer and the error.
pub type RecvFromResult = Result<(IoBufMut, usize, std::net::SocketAddr), (IoBufMut, Error)>;

/// Result of `send_vectored` and `write_at_vectored`: all the buffers back once every byte is
/// sent or written, or the buffers and the error.
pub type VectoredResult = Result<IoBufs, (IoBufs, Error)>;

/// The result type of an operation ([`WriteResult`], [`RecvResult`], [`ReadResult`],
/// [`UnitResult`], [`AcceptResult`], [`RecvFromResult`] or [`VectoredResult`]). Sealed: it only
/// names the result shapes.
pub trait OpOutput: Sized + 'static + private::Output {}

impl<T: private::Output + 'static> OpOutput for T {}

mod private {
    /// What a result's future keeps until its request has a slot (crate-private: a sealed
    /// supertrait).
    pub trait Output {
        /// `()`, except the buffers of a vectored request, which then move into the slot's
        /// vector cell.
        type Held: Send;
    }
}

/// What the future of operation `O` keeps until its request has a slot.
pub(crate) type Held<O> = <<O as Operation>::Output as private::Output>::Held;

macro_rules! results_holding {
    ($held:ty: $($result:ty),*) => {
        $(impl private::Output for $result {
            type Held = $held;
        })*
    };
}

results_holding!((): WriteResult, RecvResult, ReadResult, UnitResult, AcceptResult, RecvFromResult, PollResult);
results_holding!(IoBufs: VectoredResult);

/// How an [`Op`] makes its result: the functions of the operation it was built with, typed by
/// it, chosen once when the `Op` is built ([`OpFns::FNS`]). An `Op` calls them only with the
/// [`Work`] it stored, so each may read that work back as its own operation type.
pub(crate) struct Fns<T: OpOutput> {
    /// Dropping the future in flight asks the loop to cancel it (with `Config::cancel_on_drop`).
    cancelled_on_drop: bool,
    /// The result from the finished work and its outcome.
    finish: fn(Work, Result<usize, Error>) -> T,
    /// The result when the work stays with the kernel.
    lost: fn(Error) -> T,
    /// The result when the request never reached a slot.
    unsubmitted: fn(Work, T::Held, Error) -> T,
    /// Moves what the future kept into the slot's vector cell.
    attach: fn(T::Held, &VectorCell, &mut Work),
}

/// An operation's [`Fns`].
pub(crate) trait OpFns: Operation + Tagged {
    const FNS: &'static Fns<Self::Output>;
}

impl<O: Operation + Tagged> OpFns for O {
    const FNS: &'static Fns<O::Output> = &Fns {
        cancelled_on_drop: O::KIND.dropped().cancelled(),
        finish: finish::<O>,
        lost: O::lost,
        unsubmitted: unsubmitted::<O>,
        attach: attach::<O>,
    };
}

// SAFETY (the three functions below): an `Op` passes its own work, which it built from an `O`
// (`Handle::op_with`, `Handle::try_op`), to the `Fns` of that same `O`.
#[inline]
fn finish<O: Operation + Tagged>(work: Work, outcome: Result<usize, Error>) -> O::Output {
    // SAFETY: see above.
    O::output(unsafe { work.take::<O>() }, outcome)
}

fn unsubmitted<O: Operation + Tagged>(work: Work, held: Held<O>, error: Error) -> O::Output {
    // SAFETY: see above.
    O::unsubmitted(unsafe { work.take::<O>() }, held, error)
}

fn attach<O: Operation + Tagged>(held: Held<O>, cell: &VectorCell, work: &mut Work) {
    // SAFETY: see above.
    unsafe { work.get_mut::<O>() }.attach(held, cell);
}

/// Where an [`Op`] stands.
enum State<T: OpOutput> {
    /// Not submitted yet: the request waits in the future (and maybe for a slot).
    Start(Request, T::Held),
    /// In slot `index`, owned by the loop until it is `DONE`.
    Submitted(u32),
    /// Finished without the loop (zero length, bad input, closed, full).
    Ready(T),
    /// The result was taken.
    Finished,
}

/// The future of one operation. `Send`, `'static` and allocation-free. Dropping it never leaks
/// its slot or frees memory the kernel uses. What happens to a request dropped after submission
/// (cancelled, retired at its next completion, or run to completion) depends on the operation
/// and on `Config::cancel_on_drop`: docs/behaviour.md section 4, "Dropped futures", states it for
/// every operation. By default a dropped `recv` may consume data nobody reads. Call
/// [`wait`](Op::wait) to block a thread that has no executor.
///
/// `Op` is `!Unpin`: while it waits for a free slot, its waiter node is linked into the slot
/// wait list in place. `.await` and executors pin it for you; to poll it by reference (for
/// example in `select!`), pin it first with `std::pin::pin!`.
#[must_use = "operations do nothing until polled or waited on"]
pub struct Op<T: OpOutput, const SLOTS: usize, const RING: usize, const WHEEL: usize> {
    storage: StorageRef<SLOTS, RING, WHEEL>,
    epoch: u32,
    state: State<T>,
    /// Our node in the slot wait list (pinned with the future).
    waiter: Waiter,
    /// Whether `waiter` may be linked (so `Drop` must unlink it).
    queued: bool,
    /// Whether a waker was registered in the slot's cell (so it must be taken back).
    registered: bool,
    /// The single-producer lane it is submitted through (`LaneHandle::submit`), else the
    /// shared ring.
    lane: Option<&'static Lane<SLOTS>>,
    /// How its result is made (the operation's functions).
    fns: &'static Fns<T>,
    _output: PhantomData<fn() -> T>,
}

impl<T: OpOutput, const S: usize, const R: usize, const W: usize> Op<T, S, R, W> {
    #[inline]
    fn new(handle: &Handle<S, R, W>, state: State<T>, fns: &'static Fns<T>) -> Self {
        Op {
            fns,
            storage: handle.storage.clone(),
            epoch: handle.epoch,
            state,
            waiter: Waiter::new(),
            queued: false,
            registered: false,
            lane: None,
            _output: PhantomData,
        }
    }

    /// Drives the submission: `Ready(Some(result))` if the op ended without the loop,
    /// `Ready(None)` once it is in the loop's hands, `Pending` while waiting for a slot (`notify`
    /// is told when one is handed over).
    fn poll_submit(&mut self, notify: Notify<'_>) -> Poll<Option<T>> {
        match &self.state {
            State::Start(..) => {}
            State::Submitted(_) => return Poll::Ready(None),
            State::Ready(_) => return Poll::Ready(self.take_ready()),
            State::Finished => panic!("operation polled after completion"),
        }
        let claimed = match self.claim(notify) {
            Poll::Ready(claimed) => claimed,
            Poll::Pending => return Poll::Pending,
        };
        let State::Start(request, held) = std::mem::replace(&mut self.state, State::Finished)
        else {
            unreachable!("checked above")
        };
        let submitted = match claimed {
            Ok(index) => submit::<T, S, R, W>(
                &self.storage,
                self.epoch,
                index,
                (request, held, self.fns.attach),
                self.lane,
            ),
            Err(e) => Err((request, held, e)),
        };
        match submitted {
            Ok(index) => {
                self.state = State::Submitted(index);
                Poll::Ready(None)
            }
            Err((request, held, e)) => {
                Poll::Ready(Some((self.fns.unsubmitted)(request.into_work(), held, e)))
            }
        }
    }

    /// A free slot for this request: taken directly while nobody waits, else through the wait
    /// list, which hands slots over in FIFO order. Once queued, the `Op` only ever takes the slot
    /// granted to its node, never a second one.
    fn claim(&mut self, notify: Notify<'_>) -> Poll<Result<u32, Error>> {
        let storage = &self.storage;
        if storage.is_closed(self.epoch) {
            return Poll::Ready(Err(Error::Closed));
        }
        if !self.queued && storage.waiters.is_empty() {
            if let Some(index) = storage.free.pop() {
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
    fn try_take(&mut self) -> Option<T> {
        let State::Submitted(index) = self.state else {
            return self.take_ready();
        };
        let slot = &self.storage.slots[index as usize];
        if slot.is_done() {
            // SAFETY: DONE (Acquire): the caller owns the request now.
            let (work, outcome) = unsafe {
                slot.with_request(|r| {
                    (
                        std::mem::replace(&mut r.work, Work::EMPTY),
                        r.outcome.take(),
                    )
                })
            };
            // Finished before the slot is freed (freeing runs other callers' wakers). A waker we
            // registered may still be in the cell (the loop woke before we registered): take it
            // back so the next request of the slot starts empty; dropped after the slot is free.
            self.state = State::Finished;
            let waker = if self.registered {
                slot.waker.take_back()
            } else {
                None
            };
            self.storage.free_slot(index);
            self.storage.run_user(move || drop(waker));
            return Some((self.fns.finish)(
                work,
                outcome.unwrap_or(Err(Error::Closed)),
            ));
        }
        if slot.is_abandoned() {
            // The kernel may still write the buffer: it stays parked in the slot for good.
            self.state = State::Finished;
            return Some((self.fns.lost)(Error::Abandoned));
        }
        None
    }

    fn take_ready(&mut self) -> Option<T> {
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Ready(result) => Some(result),
            other => {
                self.state = other;
                None
            }
        }
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
    pub fn wait(self) -> T {
        assert!(
            !crate::event_loop::local::serves_here(self.storage.key()),
            "`.wait()` on the loop thread of the operation's own loop would block the only thread \
             that can complete it: inside `block_on` or a `TaskPool` task, use `.await` instead"
        );
        let mut this = std::pin::pin!(self);
        // SAFETY: we never move out of the pinned value; `waiter` stays in place.
        let this = unsafe { this.as_mut().get_unchecked_mut() };
        // If it must queue for a slot, the wait list takes its own handle on this thread (a
        // reference count, no allocation), so a late notification never points into this frame.
        loop {
            match this.poll_submit(Notify::CurrentThread) {
                Poll::Ready(Some(result)) => return result,
                Poll::Ready(None) => break,
                Poll::Pending => std::thread::park(),
            }
        }
        let State::Submitted(index) = this.state else {
            unreachable!("submitted above")
        };
        let (budget, full) = this.storage.wait_spin_state();
        let mut spin = crate::spin::Spin::new(budget);
        let mut spinning = true;
        loop {
            if let Some(result) = this.try_take() {
                // A wait that ended in the quick polls leaves a full budget as it is.
                if spin.timed() || !full {
                    this.storage
                        .adapt_wait_spin(spin.elapsed(), spin.preempted());
                }
                return result;
            }
            spinning = spinning && spin.step();
            if !spinning {
                this.storage.slots[index as usize].park();
            }
        }
    }
}

/// Writes `request` into the claimed slot `index` and hands it to the loop. On failure the slot is
/// freed and the request comes back (large `Err` on purpose: it carries the caller's buffer).
#[allow(clippy::result_large_err, clippy::type_complexity)]
fn submit<T: OpOutput, const S: usize, const R: usize, const W: usize>(
    storage: &StorageRef<S, R, W>,
    epoch: u32,
    index: u32,
    (mut request, held, attach): (Request, T::Held, fn(T::Held, &VectorCell, &mut Work)),
    lane: Option<&Lane<S>>,
) -> Result<u32, (Request, T::Held, Error)> {
    let slot = &storage.slots[index as usize];
    slot.mark_filled();
    if !storage.begin_submit(epoch) {
        storage.free_slot(index);
        return Err((request, held, Error::Closed));
    }
    attach(held, &storage.vectors[index as usize], &mut request.work);
    // SAFETY: FILLED: the caller owns the request. A slot leaves FREE holding a request that
    // owns nothing (`Storage::free_slot` sees to it), so writing over it without dropping it
    // leaks nothing and skips its drop glue.
    unsafe {
        slot.with_request(|r| {
            debug_assert!(
                r.is_empty(),
                "a claimed slot holds a request that owns nothing"
            );
            std::ptr::write(r, request)
        })
    };
    slot.mark_queued();
    match lane {
        // The lane's one producer is this thread (`LaneHandle` is not `Sync`, `LaneOp` not
        // `Send`), so its push needs no claim.
        Some(lane) => lane.push(index),
        None => storage.queue.push(index),
    }
    if storage.wake.publish() {
        storage.eventfd().ring();
    }
    storage.end_submit(epoch);
    Ok(index)
}

impl<T: OpOutput, const S: usize, const R: usize, const W: usize> Future for Op<T, S, R, W> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        // SAFETY: we never move the fields out of the pinned future; `waiter` stays in place.
        let this = unsafe { self.get_unchecked_mut() };
        let fresh = matches!(this.state, State::Start(..));
        match this.poll_submit(Notify::Task(cx.waker())) {
            Poll::Ready(Some(result)) => return Poll::Ready(result),
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {}
        }
        // A request submitted in this very poll cannot be done yet (the loop has not even seen
        // it): go straight to registering. Otherwise look first, and skip the waker when done.
        if !fresh {
            if let Some(result) = this.try_take() {
                return Poll::Ready(result);
            }
        }
        let State::Submitted(index) = this.state else {
            unreachable!("submitted above")
        };
        // Register, then check again: the loop sets DONE before it wakes (waker_cell.rs).
        this.registered = true;
        this.storage.slots[index as usize]
            .waker
            .register(cx.waker());
        match this.try_take() {
            Some(result) => Poll::Ready(result),
            None => Poll::Pending,
        }
    }
}

impl<T: OpOutput, const S: usize, const R: usize, const W: usize> Drop for Op<T, S, R, W> {
    fn drop(&mut self) {
        if self.queued {
            // SAFETY: `waiter` is still in place (we are in its owner's drop).
            if let Some(index) = unsafe { self.storage.waiters.cancel(&self.waiter) } {
                self.storage.free_slot(index);
            }
        }
        if let State::Submitted(index) = self.state {
            self.state = State::Finished;
            let slot = &self.storage.slots[index as usize];
            // Take our waker back first: once orphaned, the slot may be retired and reused, and
            // its cell then belongs to the next request. Dropped last, after the slot is settled.
            let waker = if self.registered {
                slot.waker.take_back()
            } else {
                None
            };
            match slot.orphan() {
                Leave::Orphaned => {
                    if self.fns.cancelled_on_drop && self.storage.cancels_dropped() {
                        self.storage.note_dropped();
                    }
                }
                Leave::Abandoned => {}
                // We own the finished request: drop its result and free the slot.
                Leave::Done => self.storage.free_slot(index),
            }
            self.storage.run_user(move || drop(waker));
        }
    }
}

impl<T: OpOutput, const S: usize, const R: usize, const W: usize> std::fmt::Debug
    for Op<T, S, R, W>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Start(..) => "not submitted",
            State::Submitted(_) => "submitted",
            State::Ready(_) => "ready",
            State::Finished => "finished",
        };
        f.debug_struct("Op").field("state", &state).finish()
    }
}

impl<const S: usize, const R: usize, const W: usize> Handle<S, R, W> {
    pub(crate) fn from_storage(storage: StorageRef<S, R, W>) -> Self {
        let epoch = storage.epoch();
        Handle { storage, epoch }
    }

    /// The future of `op` (nothing submitted before its first poll).
    #[inline]
    fn op<O: OpFns>(
        &self,
        op: O,
        fd: Option<Fd>,
        deadline: Option<Instant>,
    ) -> Op<O::Output, S, R, W>
    where
        O::Output: private::Output<Held = ()>,
    {
        self.op_with(op, fd, deadline, ())
    }

    /// [`op`](Self::op), with what the future keeps until the request has a slot.
    #[inline]
    fn op_with<O: OpFns>(
        &self,
        op: O,
        fd: Option<Fd>,
        deadline: Option<Instant>,
        held: Held<O>,
    ) -> Op<O::Output, S, R, W> {
        let request = Request::new(op.into(), fd, deadline);
        Op::new(self, State::Start(request, held), O::FNS)
    }

    /// An operation of kind `O` that finished without the loop.
    fn ready<O: OpFns>(&self, result: O::Output) -> Op<O::Output, S, R, W> {
        Op::new(self, State::Ready(result), O::FNS)
    }

    /// Claims and submits now; hands the operation back on `Full` or `Closed`.
    #[allow(clippy::type_complexity, clippy::result_large_err)]
    fn try_op<O: OpFns>(
        &self,
        op: O,
        fd: Option<Fd>,
        deadline: Option<Instant>,
        held: Held<O>,
    ) -> Result<Op<O::Output, S, R, W>, (O, Held<O>, Error)> {
        if self.storage.is_closed(self.epoch) {
            return Err((op, held, Error::Closed));
        }
        let Some(index) = self.storage.free.pop() else {
            return Err((op, held, Error::Full));
        };
        let request = Request::new(op.into(), fd, deadline);
        let submitted = (request, held, O::FNS.attach);
        match submit::<O::Output, S, R, W>(&self.storage, self.epoch, index, submitted, None) {
            Ok(index) => Ok(Op::new(self, State::Submitted(index), O::FNS)),
            // SAFETY: the work was built from `op`, an `O`, just above.
            Err((request, held, e)) => Err((unsafe { request.into_work().take::<O>() }, held, e)),
        }
    }

    /// Sends the whole buffer on a socket (short sends are resubmitted). An empty buffer
    /// completes `Ok` at once. A closed peer is `Error::UnexpectedEof`.
    ///
    /// ```
    /// # use static_uring::{Config, IoBuf, IoBufMut};
    /// # use std::sync::Arc;
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// let sent = handle.send(Arc::new(a), IoBuf::from(&b"hello"[..]), None).wait().unwrap();
    /// assert_eq!(&sent[..], b"hello"); // the buffer comes back
    /// # drop(b);
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    pub fn send(
        &self,
        fd: impl Into<Fd>,
        buf: IoBuf,
        deadline: Option<Instant>,
    ) -> Op<WriteResult, S, R, W> {
        if buf.is_empty() {
            return self.ready::<op::Send>(Ok(buf));
        }
        self.op(op::Send::new(buf), Some(fd.into()), deadline)
    }

    /// Receives into `buf[offset..len]`: with `exact`, until `len`; otherwise at least one byte.
    /// `Ok` carries `filled` (offset + bytes received) and the buffer's length is set to it;
    /// bytes below `offset` are what the buffer held, and those between its old length and
    /// `offset` are zeroed (never left undefined). `offset > len` or `len > capacity` is
    /// `Error::InvalidInput` (nothing submitted); `offset == len` completes `Ok` at once. A peer
    /// that closes first is `Error::UnexpectedEof`.
    ///
    /// ```
    /// # use static_uring::{Config, IoBuf, IoBufMut};
    /// # use std::sync::Arc;
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// use std::io::Write;
    /// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    /// (&a).write_all(b"hello").unwrap();
    /// let (buf, filled) = handle
    ///     .recv(Arc::new(b), IoBufMut::with_capacity(16), 0, 5, true, None)
    ///     .wait()
    ///     .unwrap();
    /// assert_eq!((filled, &buf[..]), (5, &b"hello"[..]));
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    pub fn recv(
        &self,
        fd: impl Into<Fd>,
        buf: IoBufMut,
        offset: usize,
        len: usize,
        exact: bool,
        deadline: Option<Instant>,
    ) -> Op<RecvResult, S, R, W> {
        match check_recv(buf, offset, len) {
            Err(result) => self.ready::<op::Recv>(result),
            Ok(buf) => self.op(recv_op(buf, offset, len, exact), Some(fd.into()), deadline),
        }
    }

    /// Reads exactly `len` bytes at file `offset` into `buf` (short reads are resubmitted) and
    /// sets its length to `len`. End of file first is `Error::UnexpectedEof`, with the bytes read
    /// before it in the buffer (its length says how many: nothing read is lost). `len > capacity`,
    /// or a range `offset..offset + len` beyond `i64::MAX` (which the kernel would read as "the
    /// current file position" or refuse), is `Error::InvalidInput` with nothing submitted;
    /// `len == 0` completes `Ok` at once.
    ///
    /// ```
    /// # use static_uring::{Config, IoBuf, IoBufMut};
    /// # use std::sync::Arc;
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let file = Arc::new(std::fs::File::open("/proc/self/exe").unwrap());
    /// let buf = handle.read_at(file, 1, 3, IoBufMut::with_capacity(3), None).wait().unwrap();
    /// assert_eq!(&buf[..], b"ELF");
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    pub fn read_at(
        &self,
        fd: impl Into<Fd>,
        offset: u64,
        len: usize,
        buf: IoBufMut,
        deadline: Option<Instant>,
    ) -> Op<ReadResult, S, R, W> {
        self.read(fd.into(), offset, len, buf, true, deadline)
    }

    /// Reads up to `len` bytes at file `offset` into `buf` with one read (pread semantics): the
    /// buffer's length is set to the bytes read, which is less than `len` near end of file and
    /// zero at or past it. Nothing is resubmitted except after `EAGAIN`/`EINTR`. The same checks
    /// as [`read_at`](Self::read_at) apply (`len > capacity` or a range beyond `i64::MAX` is
    /// `Error::InvalidInput`; `len == 0` completes `Ok` at once).
    ///
    /// ```
    /// # use static_uring::{Config, IoBufMut};
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let path = std::env::temp_dir().join(format!("su-doc-some-{}", std::process::id()));
    /// std::fs::write(&path, b"tail").unwrap();
    /// let file = std::fs::File::open(&path).unwrap();
    /// let fd = static_uring::Fd::from(file);
    /// // Four bytes are left at offset 0: a read of 64 returns them, one at offset 4 returns none.
    /// let buf = handle.read_some_at(fd.clone(), 0, 64, IoBufMut::with_capacity(64), None);
    /// assert_eq!(&buf.wait().unwrap()[..], b"tail");
    /// let buf = handle.read_some_at(fd, 4, 64, IoBufMut::with_capacity(64), None);
    /// assert!(buf.wait().unwrap().is_empty());
    /// # std::fs::remove_file(&path).unwrap();
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    pub fn read_some_at(
        &self,
        fd: impl Into<Fd>,
        offset: u64,
        len: usize,
        buf: IoBufMut,
        deadline: Option<Instant>,
    ) -> Op<ReadResult, S, R, W> {
        self.read(fd.into(), offset, len, buf, false, deadline)
    }

    /// `read_at` (`exact`) or `read_some_at`.
    fn read(
        &self,
        fd: Fd,
        offset: u64,
        len: usize,
        buf: IoBufMut,
        exact: bool,
        deadline: Option<Instant>,
    ) -> Op<ReadResult, S, R, W> {
        match check_read(buf, offset, len) {
            Err(result) => self.ready::<op::ReadAt>(result),
            Ok(buf) => self.op(read_op(offset, len, buf, exact), Some(fd), deadline),
        }
    }

    /// Writes the whole buffer at file `offset` (short writes are resubmitted). Runs to
    /// completion even if the future is dropped. An empty buffer completes `Ok` at once. A range
    /// `offset..offset + len` beyond `i64::MAX` is `Error::InvalidInput` with nothing submitted.
    ///
    /// ```
    /// # use static_uring::{Config, IoBuf, IoBufMut};
    /// # use std::sync::Arc;
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let path = std::env::temp_dir().join(format!("su-doc-{}", std::process::id()));
    /// let file = Arc::new(std::fs::File::create(&path).unwrap());
    /// handle.write_at(file.clone(), 0, IoBuf::from(&b"data"[..]), None).wait().unwrap();
    /// handle.sync(file, None).wait().unwrap();
    /// assert_eq!(std::fs::read(&path).unwrap(), b"data");
    /// # std::fs::remove_file(&path).unwrap();
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    pub fn write_at(
        &self,
        fd: impl Into<Fd>,
        offset: u64,
        buf: IoBuf,
        deadline: Option<Instant>,
    ) -> Op<WriteResult, S, R, W> {
        if !positioned(offset, buf.len()) {
            return self.ready::<op::WriteAt>(Err((buf, Error::InvalidInput)));
        }
        if buf.is_empty() {
            return self.ready::<op::WriteAt>(Ok(buf));
        }
        self.op(write_op(offset, buf), Some(fd.into()), deadline)
    }

    /// `fsync` of the descriptor. Runs to completion even if the future is dropped.
    pub fn sync(&self, fd: impl Into<Fd>, deadline: Option<Instant>) -> Op<UnitResult, S, R, W> {
        self.op(op::Sync { data_only: false }, Some(fd.into()), deadline)
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
    /// handle.write_at(file.clone(), 0, IoBuf::from(&b"log"[..]), None).wait().unwrap();
    /// handle.sync_data(file, None).wait().unwrap();
    /// # std::fs::remove_file(&path).unwrap();
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    pub fn sync_data(
        &self,
        fd: impl Into<Fd>,
        deadline: Option<Instant>,
    ) -> Op<UnitResult, S, R, W> {
        self.op(op::Sync { data_only: true }, Some(fd.into()), deadline)
    }

    /// Accepts a connection on a listening socket (`accept4` with `SOCK_CLOEXEC`) and hands back
    /// the connected socket, owned by the caller (convert it to an [`Fd`] once to use it with the
    /// other operations). A connection accepted for a future that was dropped is closed. With a
    /// deadline, no connection within it is `Error::Timeout`.
    ///
    /// ```
    /// # use static_uring::{Config, IoBuf, IoBufMut};
    /// # use std::sync::Arc;
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// use static_uring::Fd;
    /// let listener = Arc::new(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    /// let addr = listener.local_addr().unwrap();
    /// let client = std::net::TcpStream::connect(addr).unwrap();
    /// let stream: Fd = handle.accept(listener, None).wait().unwrap().into();
    /// # drop((client, stream));
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    pub fn accept(
        &self,
        listener: impl Into<Fd>,
        deadline: Option<Instant>,
    ) -> Op<AcceptResult, S, R, W> {
        self.op(op::Accept, Some(listener.into()), deadline)
    }

    /// Connects a socket to `addr`. A refused or unreachable peer is the kernel's errno
    /// (`Error::Os(ECONNREFUSED)`, ...); with a deadline, no connection within it is
    /// `Error::Timeout`.
    ///
    /// ```
    /// # use static_uring::{Config, IoBuf, IoBufMut};
    /// # use std::sync::Arc;
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
    /// handle.connect(socket, addr, None).wait().unwrap();
    /// assert!(listener.accept().is_ok());
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    pub fn connect(
        &self,
        socket: impl Into<Fd>,
        addr: std::net::SocketAddr,
        deadline: Option<Instant>,
    ) -> Op<UnitResult, S, R, W> {
        let addr = RawAddr::new(addr);
        self.op(op::Connect { addr }, Some(socket.into()), deadline)
    }

    /// [`accept`](Self::accept), submitted now; `Error::Full` at once if no slot is free.
    pub fn try_accept(
        &self,
        listener: impl Into<Fd>,
        deadline: Option<Instant>,
    ) -> Result<Op<AcceptResult, S, R, W>, Error> {
        self.try_op(op::Accept, Some(listener.into()), deadline, ())
            .map_err(|(_, (), e)| e)
    }

    /// [`connect`](Self::connect), submitted now; `Error::Full` at once if no slot is free.
    pub fn try_connect(
        &self,
        socket: impl Into<Fd>,
        addr: std::net::SocketAddr,
        deadline: Option<Instant>,
    ) -> Result<Op<UnitResult, S, R, W>, Error> {
        let addr = RawAddr::new(addr);
        self.try_op(op::Connect { addr }, Some(socket.into()), deadline, ())
            .map_err(|(_, (), e)| e)
    }

    /// Sends `buf` as one datagram to `addr` (`sendto`, Linux 6.0+ for the address in the SQE).
    /// An empty buffer is sent as an empty datagram. A datagram too large for the socket is the
    /// kernel's errno (`Os(EMSGSIZE)`).
    ///
    /// ```
    /// # use static_uring::{Config, IoBuf, IoBufMut};
    /// # use std::sync::Arc;
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let (a, b) = (std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
    ///               std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
    /// let (from, to) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    /// handle.send_to(a, IoBuf::from(&b"ping"[..]), to, None).wait().unwrap();
    /// let (buf, len, sender) =
    ///     handle.recv_from(b, IoBufMut::with_capacity(16), None).wait().unwrap();
    /// assert_eq!((&buf[..], len, sender), (&b"ping"[..], 4, from));
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    pub fn send_to(
        &self,
        socket: impl Into<Fd>,
        buf: IoBuf,
        addr: std::net::SocketAddr,
        deadline: Option<Instant>,
    ) -> Op<WriteResult, S, R, W> {
        let addr = RawAddr::new(addr);
        self.op(op::SendTo { buf, addr }, Some(socket.into()), deadline)
    }

    /// Receives one datagram into `buf` (up to its capacity; a longer datagram is truncated, as
    /// `recvfrom` does) and returns the buffer with its length set, the length, and the sender's
    /// address (`0.0.0.0:0` for a sender that is not an IP socket). No allocation: the address
    /// comes back by value; the loop keeps the message header in its own table.
    pub fn recv_from(
        &self,
        socket: impl Into<Fd>,
        buf: IoBufMut,
        deadline: Option<Instant>,
    ) -> Op<RecvFromResult, S, R, W> {
        self.op(op::RecvFrom::new(buf), Some(socket.into()), deadline)
    }

    /// [`send_to`](Self::send_to), submitted now; `Error::Full` at once if no slot is free.
    pub fn try_send_to(
        &self,
        socket: impl Into<Fd>,
        buf: IoBuf,
        addr: std::net::SocketAddr,
        deadline: Option<Instant>,
    ) -> Result<Op<WriteResult, S, R, W>, (IoBuf, Error)> {
        let addr = RawAddr::new(addr);
        self.try_op(op::SendTo { buf, addr }, Some(socket.into()), deadline, ())
            .map_err(|(op, (), e)| (op.buf, e))
    }

    /// [`recv_from`](Self::recv_from), submitted now; `Error::Full` at once if no slot is free.
    pub fn try_recv_from(
        &self,
        socket: impl Into<Fd>,
        buf: IoBufMut,
        deadline: Option<Instant>,
    ) -> Result<Op<RecvFromResult, S, R, W>, (IoBufMut, Error)> {
        self.try_op(op::RecvFrom::new(buf), Some(socket.into()), deadline, ())
            .map_err(|(op, (), e)| (op.buf, e))
    }

    /// A no-op through the ring: measures the loop's own round trip.
    ///
    /// ```
    /// # use static_uring::{Config, IoBuf, IoBufMut};
    /// # use std::sync::Arc;
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// handle.nop(None).wait().unwrap();
    /// // A deadline that has passed ends the request without I/O.
    /// let past = std::time::Instant::now();
    /// std::thread::sleep(std::time::Duration::from_millis(10));
    /// assert_eq!(handle.nop(Some(past)).wait(), Err(static_uring::Error::Timeout));
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    pub fn nop(&self, deadline: Option<Instant>) -> Op<UnitResult, S, R, W> {
        self.op(op::Nop, None, deadline)
    }

    /// Sends every byte of `bufs`, in order, as one stream (`sendmsg` with `MSG_NOSIGNAL`; short
    /// sends are resubmitted from where the kernel stopped). The rules are `send`'s: the whole
    /// buffers come back on success and on every error, a closed peer is
    /// `Error::UnexpectedEof`, a deadline is `Error::Timeout` (part may have been sent), and a
    /// dropped future's request still runs. Empty buffers (or none) complete `Ok` at once.
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
    /// let bufs = handle.send_vectored(a, bufs, None).wait().unwrap();
    /// assert_eq!(bufs.len(), 2, "the buffers come back");
    /// let mut got = [0u8; 9];
    /// b.read_exact(&mut got).unwrap();
    /// assert_eq!(&got, b"head:body");
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    pub fn send_vectored(
        &self,
        fd: impl Into<Fd>,
        bufs: IoBufs,
        deadline: Option<Instant>,
    ) -> Op<VectoredResult, S, R, W> {
        match vectored_len(None, &bufs) {
            Ok(0) => self.ready::<op::SendVectored>(Ok(bufs)),
            Ok(end) => self.op_with(op::SendVectored::new(end), Some(fd.into()), deadline, bufs),
            Err(e) => self.ready::<op::SendVectored>(Err((bufs, e))),
        }
    }

    /// Writes every byte of `bufs`, in order, at file `offset` (`writev`; short writes are
    /// resubmitted from where the kernel stopped). The rules are `write_at`'s: it runs to
    /// completion even if the future is dropped; a range beyond `i64::MAX` is
    /// `Error::InvalidInput` with nothing submitted; empty buffers complete `Ok` at once.
    ///
    /// ```
    /// # use static_uring::{Config, IoBuf, IoBufs};
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let path = std::env::temp_dir().join(format!("su-doc-writev-{}", std::process::id()));
    /// let file = static_uring::Fd::from(std::fs::File::create(&path).unwrap());
    /// let bufs: IoBufs = [IoBuf::from(&b"ab"[..]), IoBuf::from(&b"cd"[..])].into_iter().collect();
    /// handle.write_at_vectored(file, 1, bufs, None).wait().unwrap();
    /// assert_eq!(std::fs::read(&path).unwrap(), b"\0abcd");
    /// # std::fs::remove_file(&path).unwrap();
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    pub fn write_at_vectored(
        &self,
        fd: impl Into<Fd>,
        offset: u64,
        bufs: IoBufs,
        deadline: Option<Instant>,
    ) -> Op<VectoredResult, S, R, W> {
        match vectored_len(Some(offset), &bufs) {
            Ok(0) => self.ready::<op::WriteAtVectored>(Ok(bufs)),
            Ok(end) => {
                let op = op::WriteAtVectored::new(offset, end);
                self.op_with(op, Some(fd.into()), deadline, bufs)
            }
            Err(e) => self.ready::<op::WriteAtVectored>(Err((bufs, e))),
        }
    }

    /// [`send_vectored`](Self::send_vectored), submitted now; `Error::Full` at once if no slot
    /// is free.
    #[allow(clippy::result_large_err)] // the buffers come back by value, as with every try_
    pub fn try_send_vectored(
        &self,
        fd: impl Into<Fd>,
        bufs: IoBufs,
        deadline: Option<Instant>,
    ) -> Result<Op<VectoredResult, S, R, W>, (IoBufs, Error)> {
        match vectored_len(None, &bufs) {
            Ok(0) => Ok(self.ready::<op::SendVectored>(Ok(bufs))),
            Ok(end) => self
                .try_op(op::SendVectored::new(end), Some(fd.into()), deadline, bufs)
                .map_err(|(_, bufs, e)| (bufs, e)),
            Err(e) => Err((bufs, e)),
        }
    }

    /// [`write_at_vectored`](Self::write_at_vectored), submitted now; `Error::Full` at once if
    /// no slot is free.
    #[allow(clippy::result_large_err)] // the buffers come back by value, as with every try_
    pub fn try_write_at_vectored(
        &self,
        fd: impl Into<Fd>,
        offset: u64,
        bufs: IoBufs,
        deadline: Option<Instant>,
    ) -> Result<Op<VectoredResult, S, R, W>, (IoBufs, Error)> {
        match vectored_len(Some(offset), &bufs) {
            Ok(0) => Ok(self.ready::<op::WriteAtVectored>(Ok(bufs))),
            Ok(end) => {
                let op = op::WriteAtVectored::new(offset, end);
                self.try_op(op, Some(fd.into()), deadline, bufs)
                    .map_err(|(_, bufs, e)| (bufs, e))
            }
            Err(e) => Err((bufs, e)),
        }
    }

    /// [`send`](Self::send), submitted now; `Error::Full` at once if no slot is free.
    pub fn try_send(
        &self,
        fd: impl Into<Fd>,
        buf: IoBuf,
        deadline: Option<Instant>,
    ) -> Result<Op<WriteResult, S, R, W>, (IoBuf, Error)> {
        if buf.is_empty() {
            return Ok(self.ready::<op::Send>(Ok(buf)));
        }
        self.try_op(op::Send::new(buf), Some(fd.into()), deadline, ())
            .map_err(|(op, (), e)| (op.buf, e))
    }

    /// [`recv`](Self::recv), submitted now; `Error::Full` at once if no slot is free.
    pub fn try_recv(
        &self,
        fd: impl Into<Fd>,
        buf: IoBufMut,
        offset: usize,
        len: usize,
        exact: bool,
        deadline: Option<Instant>,
    ) -> Result<Op<RecvResult, S, R, W>, (IoBufMut, Error)> {
        let buf = match check_recv(buf, offset, len) {
            Err(Err(e)) => return Err(e),
            Err(ok) => return Ok(self.ready::<op::Recv>(ok)),
            Ok(buf) => buf,
        };
        let op = recv_op(buf, offset, len, exact);
        self.try_op(op, Some(fd.into()), deadline, ())
            .map_err(|(op, (), e)| (op.buf, e))
    }

    /// [`read_at`](Self::read_at), submitted now; `Error::Full` at once if no slot is free.
    pub fn try_read_at(
        &self,
        fd: impl Into<Fd>,
        offset: u64,
        len: usize,
        buf: IoBufMut,
        deadline: Option<Instant>,
    ) -> Result<Op<ReadResult, S, R, W>, (IoBufMut, Error)> {
        self.try_read(fd.into(), offset, len, buf, true, deadline)
    }

    /// [`read_some_at`](Self::read_some_at), submitted now; `Error::Full` at once if no slot is
    /// free.
    pub fn try_read_some_at(
        &self,
        fd: impl Into<Fd>,
        offset: u64,
        len: usize,
        buf: IoBufMut,
        deadline: Option<Instant>,
    ) -> Result<Op<ReadResult, S, R, W>, (IoBufMut, Error)> {
        self.try_read(fd.into(), offset, len, buf, false, deadline)
    }

    /// `try_read_at` (`exact`) or `try_read_some_at`.
    fn try_read(
        &self,
        fd: Fd,
        offset: u64,
        len: usize,
        buf: IoBufMut,
        exact: bool,
        deadline: Option<Instant>,
    ) -> Result<Op<ReadResult, S, R, W>, (IoBufMut, Error)> {
        let buf = match check_read(buf, offset, len) {
            Err(Err(e)) => return Err(e),
            Err(ok) => return Ok(self.ready::<op::ReadAt>(ok)),
            Ok(buf) => buf,
        };
        self.try_op(read_op(offset, len, buf, exact), Some(fd), deadline, ())
            .map_err(|(op, (), e)| (op.buf, e))
    }

    /// [`write_at`](Self::write_at), submitted now; `Error::Full` at once if no slot is free.
    pub fn try_write_at(
        &self,
        fd: impl Into<Fd>,
        offset: u64,
        buf: IoBuf,
        deadline: Option<Instant>,
    ) -> Result<Op<WriteResult, S, R, W>, (IoBuf, Error)> {
        if !positioned(offset, buf.len()) {
            return Err((buf, Error::InvalidInput));
        }
        if buf.is_empty() {
            return Ok(self.ready::<op::WriteAt>(Ok(buf)));
        }
        self.try_op(write_op(offset, buf), Some(fd.into()), deadline, ())
            .map_err(|(op, (), e)| (op.buf, e))
    }

    /// [`sync`](Self::sync), submitted now; `Error::Full` at once if no slot is free.
    pub fn try_sync(
        &self,
        fd: impl Into<Fd>,
        deadline: Option<Instant>,
    ) -> Result<Op<UnitResult, S, R, W>, Error> {
        self.try_op(op::Sync { data_only: false }, Some(fd.into()), deadline, ())
            .map_err(|(_, (), e)| e)
    }

    /// [`sync_data`](Self::sync_data), submitted now; `Error::Full` at once if no slot is free.
    pub fn try_sync_data(
        &self,
        fd: impl Into<Fd>,
        deadline: Option<Instant>,
    ) -> Result<Op<UnitResult, S, R, W>, Error> {
        self.try_op(op::Sync { data_only: true }, Some(fd.into()), deadline, ())
            .map_err(|(_, (), e)| e)
    }

    /// [`nop`](Self::nop), submitted now; `Error::Full` at once if no slot is free.
    pub fn try_nop(&self, deadline: Option<Instant>) -> Result<Op<UnitResult, S, R, W>, Error> {
        self.try_op(op::Nop, None, deadline, ())
            .map_err(|(_, (), e)| e)
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
    /// let ready = handle.poll(b, Readiness::READABLE, None).wait().unwrap();
    /// assert!(ready.is_readable());
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    pub fn poll(
        &self,
        fd: impl Into<Fd>,
        events: Readiness,
        deadline: Option<Instant>,
    ) -> Op<PollResult, S, R, W> {
        self.op(op::Poll { events }, Some(fd.into()), deadline)
    }

    /// A snapshot of the loop's counters (no allocation).
    pub fn metrics(&self) -> Metrics {
        self.storage.metrics.snapshot()
    }

    /// Testing only (cargo feature `fault-injection`): makes this loop's next matching event
    /// fail as `fault` says (see [`fault`](crate::fault)).
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&self, fault: crate::fault::Fault) {
        crate::fault::inject(self.storage.fault_key(), fault);
    }
}

/// Validates recv bounds: `Ok(buf)` to submit, or the immediate result.
fn check_recv(mut buf: IoBufMut, offset: usize, len: usize) -> Result<IoBufMut, RecvResult> {
    if offset > len || len > buf.capacity() {
        return Err(Err((buf, Error::InvalidInput)));
    }
    // The result sets the length to `filled >= offset`, which makes [len, offset) readable:
    // define those bytes first (zeros; no allocation, offset <= capacity).
    const ZEROS: [u8; 64] = [0; 64];
    while buf.len() < offset {
        let n = (offset - buf.len()).min(ZEROS.len());
        let fits = buf.extend_from_slice(&ZEROS[..n]);
        debug_assert!(fits, "offset <= capacity (checked above)");
    }
    if offset == len {
        // SAFETY: offset <= buf.len() now, so the first `offset` bytes are initialised.
        unsafe { buf.set_len(offset) };
        return Err(Ok((buf, offset)));
    }
    Ok(buf)
}

/// Whether `[offset, offset + len)` is a range of positioned file offsets. io_uring reads an
/// offset of -1 (`u64::MAX`) as "the file's current position", and the kernel refuses other
/// negative `loff_t` values, so every byte's offset must fit in an `i64`.
fn positioned(offset: u64, len: usize) -> bool {
    offset
        .checked_add(len as u64)
        .is_some_and(|end| end <= i64::MAX as u64)
}

/// Validates read_at bounds: `Ok(buf)` to submit, or the immediate result.
fn check_read(mut buf: IoBufMut, offset: u64, len: usize) -> Result<IoBufMut, ReadResult> {
    if len > buf.capacity() || !positioned(offset, len) {
        return Err(Err((buf, Error::InvalidInput)));
    }
    if len == 0 {
        buf.clear();
        return Err(Ok(buf));
    }
    Ok(buf)
}

/// A `recv` into `buf[offset..len]` (checked by `check_recv`).
fn recv_op(buf: IoBufMut, offset: usize, len: usize, exact: bool) -> op::Recv {
    op::Recv {
        buf,
        pos: offset,
        end: len,
        exact,
    }
}

/// A `read_at` (`exact`) or `read_some_at` of `len` bytes at `offset` (checked by `check_read`).
fn read_op(offset: u64, len: usize, buf: IoBufMut, exact: bool) -> op::ReadAt {
    op::ReadAt {
        buf,
        at: offset,
        pos: 0,
        end: len,
        exact,
    }
}

/// A `write_at` of the whole of `buf` at `offset` (checked by `positioned`).
fn write_op(offset: u64, buf: IoBuf) -> op::WriteAt {
    let end = buf.len();
    op::WriteAt {
        buf,
        at: offset,
        pos: 0,
        end,
    }
}

/// The bytes a vectored request moves; `InvalidInput` for a positioned range beyond
/// `i64::MAX`.
fn vectored_len(offset: Option<u64>, bufs: &IoBufs) -> Result<usize, Error> {
    let end: usize = bufs.iter().map(|b| b.len()).sum();
    if offset.is_some_and(|at| !positioned(at, end)) {
        return Err(Error::InvalidInput);
    }
    Ok(end)
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
    /// (deadlines, cancel, drain). An op of another loop, or one already submitted (`try_*`),
    /// is returned unchanged and goes its own way.
    ///
    /// ```
    /// # use static_uring::{Config, Lane};
    /// # static LANE: Lane<8> = Lane::new();
    /// # let (handle, mut event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # event_loop.register_lane(&LANE).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let lane = handle.lane(&LANE).unwrap();
    /// for _ in 0..3 {
    ///     lane.submit(handle.nop(None)).wait().unwrap();
    /// }
    /// # drop((lane, handle));
    /// # thread.join().unwrap().unwrap();
    /// ```
    pub fn submit<T: OpOutput>(&self, mut op: Op<T, S, R, W>) -> LaneOp<'_, T, S, R, W> {
        let ours = op.storage.key() == self.key && op.epoch == self.epoch;
        if ours && matches!(op.state, State::Start(..)) {
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
pub struct LaneOp<'a, T: OpOutput, const SLOTS: usize, const RING: usize, const WHEEL: usize> {
    op: Op<T, SLOTS, RING, WHEEL>,
    _lane: PhantomData<&'a LaneHandle<SLOTS, RING, WHEEL>>,
}

impl<T: OpOutput, const S: usize, const R: usize, const W: usize> LaneOp<'_, T, S, R, W> {
    /// Blocks this thread until the operation finishes (as [`Op::wait`]).
    pub fn wait(self) -> T {
        self.op.wait()
    }
}

impl<T: OpOutput, const S: usize, const R: usize, const W: usize> Future
    for LaneOp<'_, T, S, R, W>
{
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
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
