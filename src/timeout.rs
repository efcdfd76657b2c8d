//! [`Timeout`]: any future bounded by a timer on the loop's wheel, so a group of operations can
//! share one deadline ([`Handle::timeout`](crate::Handle::timeout)).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::Error;
use crate::handle::Op;
use crate::op::Sleep;

/// The future of [`Handle::timeout`](crate::Handle::timeout) and
/// [`Handle::timeout_at`](crate::Handle::timeout_at): the inner future's output, or
/// `Err(Error::Timeout)` once the timer ends first. The inner future is polled first, so one
/// that is ready when the time is up still wins; it is dropped with the `Timeout` (a dropped
/// operation follows its drop rule, docs/behaviour.md section 4). If the loop stops before the
/// time is up, the timer's error (`Closed`, or `Abandoned` when the shutdown budget ran out)
/// ends it: the time can no longer be kept.
///
/// Allocation-free: the timer is an [`Op`] that holds a slot (not a `RING` entry) while it
/// waits, and gives it back at the loop's next pass once dropped.
#[must_use = "futures do nothing unless polled"]
pub struct Timeout<F, const SLOTS: usize, const RING: usize, const WHEEL: usize> {
    future: F,
    timer: Op<Sleep, SLOTS, RING, WHEEL>,
}

impl<F, const S: usize, const R: usize, const W: usize> Timeout<F, S, R, W> {
    pub(crate) fn new(future: F, timer: Op<Sleep, S, R, W>) -> Self {
        Timeout { future, timer }
    }

    /// The inner future, back (its timer is dropped).
    pub fn into_inner(self) -> F {
        self.future
    }
}

impl<F: Future, const S: usize, const R: usize, const W: usize> Future for Timeout<F, S, R, W> {
    type Output = Result<F::Output, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: both fields are structurally pinned: never moved out while pinned (only
        // `into_inner` moves `future`, and it takes `self` by value, so it is not pinned).
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above.
        if let Poll::Ready(out) = unsafe { Pin::new_unchecked(&mut this.future) }.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        // SAFETY: as above.
        match unsafe { Pin::new_unchecked(&mut this.timer) }.poll(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Err(Error::Timeout)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F, const S: usize, const R: usize, const W: usize> std::fmt::Debug for Timeout<F, S, R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeout")
            .field("timer", &self.timer)
            .finish_non_exhaustive()
    }
}
