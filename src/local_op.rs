//! [`LocalOp`]: an operation pinned to its thread, for the loop's own thread.
//!
//! An [`Op`] is `Send`: its caller may drop it on any thread while the loop finishes its
//! request, so the two race for the slot with a compare-exchange (`handoff/slot.rs`). A
//! `LocalOp` wraps the same `Op` but is `!Send`, so when it admits its request on the loop
//! thread (the loop-thread path of `Op::poll`), nothing but that thread can ever touch the
//! request's phase: the loop finishes it with a plain store. Everything else (deadlines,
//! cancel on drop, the loop closing under it, its result) is the `Op`'s.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::op::{OpResult, Operation};
use crate::Op;

/// An [`Op`] that stays on the thread it was made on ([`Op::local`]). Awaited on the loop's own
/// thread, inside [`EventLoop::block_on`](crate::EventLoop::block_on) or a pool task there, its
/// result is handed over without a locked read-modify-write; anywhere else it behaves exactly
/// as the `Op` it wraps. It resolves to the same `Result`, and dropping it follows the same
/// rules (docs/behaviour.md section 4).
///
/// It is `!Send`, which is what makes the cheaper hand-over sound:
///
/// ```compile_fail
/// fn needs_send<T: Send>(_: T) {}
/// let (handle, _event_loop) = static_uring::new::<8, 8, 64>(Default::default()).unwrap();
/// needs_send(handle.nop().local());
/// ```
#[must_use = "operations do nothing until polled"]
pub struct LocalOp<O: Operation, const SLOTS: usize, const RING: usize, const WHEEL: usize> {
    op: Op<O, SLOTS, RING, WHEEL>,
    /// `!Send` and `!Sync`: the request's phase is then only ever touched on this thread.
    _here: PhantomData<*const ()>,
}

impl<O: Operation, const S: usize, const R: usize, const W: usize> LocalOp<O, S, R, W> {
    /// Wraps `op`, already marked pinned (`Op::local`).
    #[inline]
    pub(crate) fn new(op: Op<O, S, R, W>) -> Self {
        LocalOp {
            op,
            _here: PhantomData,
        }
    }

    /// Which operation it is.
    pub fn kind(&self) -> crate::op::OpKind {
        self.op.kind()
    }
}

impl<O: Operation, const S: usize, const R: usize, const W: usize> Future for LocalOp<O, S, R, W> {
    type Output = OpResult<O>;

    /// The poll after a held request ended (the result is in the future already) is a check
    /// and a move in the task, without the call and frame of the submitting poll.
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<OpResult<O>> {
        // SAFETY: `op` is structurally pinned: never moved out of the pinned `LocalOp`.
        let mut op = unsafe { self.map_unchecked_mut(|this| &mut this.op) };
        if let Some(result) = op.take_delivered() {
            return Poll::Ready(result);
        }
        poll_op(op, cx)
    }
}

/// The rest of [`LocalOp::poll`]: inlined into the task or not, as the compiler finds best
/// (a task awaiting several kinds of operation keeps one copy of each).
#[inline]
fn poll_op<O: Operation, const S: usize, const R: usize, const W: usize>(
    op: Pin<&mut Op<O, S, R, W>>,
    cx: &mut Context<'_>,
) -> Poll<OpResult<O>> {
    op.poll_inline(cx)
}

impl<O: Operation, const S: usize, const R: usize, const W: usize> std::fmt::Debug
    for LocalOp<O, S, R, W>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LocalOp").field(&self.op).finish()
    }
}
