//! [`Multishot`]: one kernel request that yields many results, taken one at a time with
//! [`next`](Multishot::next).
//!
//! [`Handle::accept_multi`] gives a stream of accepted connections and [`Handle::recv_multi`] a
//! stream of received buffers (leases of a [`BufRing`](crate::BufRing)). The stream holds one
//! slot and one of the `RING` entries while the loop keeps its SQE armed; each `next` is an
//! ordinary request with its own slot and optional deadline, answered as soon as the stream has a
//! result (so `next().timeout(d)` is an idle timeout). Results that arrive while no `next` waits
//! are queued: up to [`ACCEPT_QUEUE`](crate::op::ACCEPT_QUEUE) connections (then the
//! loop stops accepting, leaving the rest in the listen backlog, until one is taken), or any
//! number of received buffers (the ring bounds them; when it runs dry the loop waits for leases
//! to be dropped, counted in `Metrics::buf_ring_dry`, and loses nothing), or one piece of a
//! buffer on a ring registered incremental (the next receive is armed once it is taken).
//!
//! A stream ends with an error, after its queued results: end of file is
//! `Error::UnexpectedEof` (receive), the shutdown `Error::Abandoned` or `Error::Closed`, a
//! socket error the kernel's errno. An accept error (`EMFILE`, ...) is one result: the stream
//! goes on. Dropping the stream cancels its request (whatever `Config::cancel_on_drop` says);
//! what it still queues is released (connections closed, buffers given back); leases already
//! taken stay valid.
//!
//! [`Handle::accept_multi`]: crate::Handle::accept_multi
//! [`Handle::recv_multi`]: crate::Handle::recv_multi

use std::future::Future;
use std::os::fd::{FromRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::buf_ring::{BufLease, Provided};
use crate::error::Error;
use crate::handle::Op;
use crate::op;

mod sealed {
    /// What a stream kind gives and how its raw results become items.
    pub trait Kind:
        crate::op::Operation<Output = Self, Error = crate::Error> + crate::op::multishot::Stream
    {
        /// One result.
        type Item;
        /// The item for raw result `raw` (a descriptor, or a piece of a buffer of `ring`, as
        /// `Provided::item` encodes it), which the caller now owns.
        fn item(raw: usize, ring: Option<&'static dyn crate::buf_ring::Provided>) -> Self::Item;
    }
}

/// A kind of multishot stream: [`op::AcceptMulti`] (items: accepted connections, `OwnedFd`)
/// or [`op::RecvMulti`] (items: [`BufLease`]s).
pub trait MultiKind: sealed::Kind {}

impl<K: sealed::Kind> MultiKind for K {}

impl sealed::Kind for op::AcceptMulti {
    type Item = OwnedFd;

    fn item(raw: usize, _: Option<&'static dyn Provided>) -> OwnedFd {
        // SAFETY: the loop handed this accepted descriptor to the caller alone.
        unsafe { OwnedFd::from_raw_fd(raw as i32) }
    }
}

impl sealed::Kind for op::RecvMulti {
    type Item = BufLease;

    fn item(raw: usize, ring: Option<&'static dyn Provided>) -> BufLease {
        let ring = ring.expect("a receive stream's ring");
        let (bid, off, len) = ring.piece(raw);
        BufLease::new(ring, bid, off, len)
    }
}

/// A stream of accepted connections ([`Handle::accept_multi`](crate::Handle::accept_multi)).
pub type AcceptStream<const SLOTS: usize, const RING: usize, const WHEEL: usize> =
    Multishot<op::AcceptMulti, SLOTS, RING, WHEEL>;

/// A stream of received buffers ([`Handle::recv_multi`](crate::Handle::recv_multi)).
pub type RecvStream<const SLOTS: usize, const RING: usize, const WHEEL: usize> =
    Multishot<op::RecvMulti, SLOTS, RING, WHEEL>;

/// Where the stream's request is.
enum Inner<K: MultiKind, const S: usize, const R: usize, const W: usize> {
    /// With the loop, armed or paused.
    Live(Op<K, S, R, W>),
    /// Handed back: what it still queued, and why it ended.
    Ended(K),
    /// Handed back without its queue (abandoned with the kernel).
    Lost(Error),
}

/// A multishot stream: take its results with [`next`](Self::next). Dropping it cancels the
/// kernel request. `Send`; it may outlive its loop (`next` then ends `Closed` or `Abandoned`).
pub struct Multishot<K: MultiKind, const SLOTS: usize, const RING: usize, const WHEEL: usize> {
    inner: Inner<K, SLOTS, RING, WHEEL>,
    ring: Option<&'static dyn Provided>,
}

// The inner `Op` is submitted with `try_submit` and never polled: its wait-list node is never
// linked, so moving the stream is fine.
impl<K: MultiKind, const S: usize, const R: usize, const W: usize> Unpin for Multishot<K, S, R, W> {}

impl<K: MultiKind, const S: usize, const R: usize, const W: usize> Multishot<K, S, R, W> {
    /// A stream whose request `op` was just submitted.
    pub(crate) fn new(op: Op<K, S, R, W>, ring: Option<&'static dyn Provided>) -> Self {
        Multishot {
            inner: Inner::Live(op),
            ring,
        }
    }

    /// The next result: a future (`.await`) with `.wait()`, and a deadline or timeout of its
    /// own (none by default). `Err` once the stream has ended, after its queued results.
    // Not `Iterator::next`: it returns a future, which is what an async stream's `next` does.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Next<'_, K, S, R, W> {
        Next {
            stream: self,
            op: None,
            deadline: None,
        }
    }

    /// The oldest queued result, taken without a request when this thread serves the loop and
    /// polls inside its window (loop-thread mode).
    fn queued_here(&mut self) -> Option<Result<K::Item, Error>> {
        let Inner::Live(op) = &self.inner else {
            return None;
        };
        let ring = self.ring;
        Some(op.stream_item_here()?.map(|raw| K::item(raw, ring)))
    }

    /// The next result if the loop handed the stream back (it ended): served here.
    fn ended_result(&mut self) -> Option<Result<K::Item, Error>> {
        if let Inner::Live(op) = &mut self.inner {
            let serving = op.serves_here();
            self.inner = match op.try_take(serving)? {
                Ok(stream) => Inner::Ended(stream),
                Err(e) => Inner::Lost(e),
            };
        }
        let ring = self.ring;
        Some(match &mut self.inner {
            Inner::Ended(stream) => match stream.pop() {
                Some(raw) => raw.map(|raw| K::item(raw, ring)),
                None => Err(stream.multi().end.unwrap_or(Error::Closed)),
            },
            Inner::Lost(e) => Err(*e),
            Inner::Live(_) => unreachable!("taken above"),
        })
    }
}

impl<K: MultiKind, const S: usize, const R: usize, const W: usize> std::fmt::Debug
    for Multishot<K, S, R, W>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.inner {
            Inner::Live(_) => "live",
            Inner::Ended(_) => "ended",
            Inner::Lost(_) => "lost",
        };
        f.debug_struct("Multishot")
            .field("kind", &K::KIND)
            .field("state", &state)
            .finish()
    }
}

/// The future of [`Multishot::next`]. `!Unpin` (its request may wait for a slot in place):
/// `.await` pins it; [`wait`](Self::wait) blocks a thread that runs no executor.
#[must_use = "a `next` does nothing until polled or waited on"]
pub struct Next<'a, K: MultiKind, const S: usize, const R: usize, const W: usize> {
    stream: &'a mut Multishot<K, S, R, W>,
    op: Option<Op<op::Next, S, R, W>>,
    deadline: Option<Instant>,
}

impl<K: MultiKind, const S: usize, const R: usize, const W: usize> Next<'_, K, S, R, W> {
    /// Fails with `Error::Timeout` if no result has come by `at`.
    pub fn deadline(mut self, at: impl Into<Option<Instant>>) -> Self {
        self.deadline = at.into();
        self
    }

    /// Fails with `Error::Timeout` if no result has come within `after`.
    pub fn timeout(self, after: Duration) -> Self {
        let at = Instant::now().checked_add(after);
        self.deadline(at)
    }

    /// Blocks the calling thread until the result (not on the loop's own thread: see
    /// [`Op::wait`](crate::Op::wait)).
    pub fn wait(mut self) -> Result<K::Item, Error> {
        loop {
            if let Some(result) = self.stream.ended_result() {
                return result;
            }
            let op = self.request().expect("the stream is live");
            match op.wait() {
                Ok(Some(raw)) => return Ok(K::item(raw, self.stream.ring)),
                // The loop did not hold the stream (handed back or not taken yet): look again.
                Ok(None) => {}
                Err(e) => return self.stream.ended_result().unwrap_or(Err(e)),
            }
        }
    }

    /// A fresh `next` request for the live stream (`None` once it was handed back).
    fn request(&mut self) -> Option<Op<op::Next, S, R, W>> {
        let Inner::Live(stream) = &self.stream.inner else {
            return None;
        };
        let next = op::Next {
            stream: stream.request_data()?,
            ring: self.stream.ring,
            gone: false,
        };
        Some(stream.sibling(next).deadline(self.deadline))
    }
}

impl<K: MultiKind, const S: usize, const R: usize, const W: usize> Future for Next<'_, K, S, R, W> {
    type Output = Result<K::Item, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `op` is never moved out while it lives: it is polled in place and dropped in
        // place (`set(None)`), as pinning requires; the other fields are not structural.
        let this = unsafe { self.get_unchecked_mut() };
        loop {
            if this.op.is_none() {
                if let Some(result) = this.stream.ended_result() {
                    return Poll::Ready(result);
                }
                if let Some(result) = this.stream.queued_here() {
                    return Poll::Ready(result);
                }
                this.op = this.request();
            }
            let Some(op) = this.op.as_mut() else {
                unreachable!("a live stream has a request")
            };
            // SAFETY: `op` lives inside the pinned future (see above).
            let polled = unsafe { Pin::new_unchecked(op) }.poll(cx);
            let result = match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => result,
            };
            this.op = None;
            match result {
                Ok(Some(raw)) => return Poll::Ready(Ok(K::item(raw, this.stream.ring))),
                // The loop did not hold the stream: look at it again (handed back: served here;
                // not taken yet: a new request, queued behind it).
                Ok(None) => {}
                Err(e) => return Poll::Ready(this.stream.ended_result().unwrap_or(Err(e))),
            }
        }
    }
}

impl<K: MultiKind, const S: usize, const R: usize, const W: usize> std::fmt::Debug
    for Next<'_, K, S, R, W>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next")
            .field("stream", &self.stream)
            .finish()
    }
}

/// The stream of `op` once submitted.
pub(crate) fn start<K: MultiKind, const S: usize, const R: usize, const W: usize>(
    op: Op<K, S, R, W>,
    ring: Option<&'static dyn Provided>,
) -> Result<Multishot<K, S, R, W>, Error> {
    Ok(Multishot::new(op.try_submit()?, ring))
}
