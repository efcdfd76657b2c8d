//! Multishot operations: one request in the kernel that yields many results.
//!
//! A stream ([`Handle::accept_multi`](crate::Handle::accept_multi),
//! [`Handle::recv_multi`](crate::Handle::recv_multi)) is one slot holding an [`AcceptMulti`] or
//! a [`RecvMulti`]: the loop keeps its SQE armed and queues each CQE's result in it (a few
//! accepted descriptors inline; received buffers linked through their ring). Each result is
//! taken by a [`Next`]: an ordinary request in its own slot, with its own deadline, that the loop
//! holds (like a timer: no SQE) until the stream has a result for it. When the stream ends (end
//! of file, an error, the shutdown), the loop hands it back to its owner with what it still
//! queues, and the owner serves the rest itself.
//!
//! A receive stream on a ring registered incremental is re-armed as an accept stream is: one
//! single-shot receive (with buffer selection) at a time, and none while the piece it received
//! waits for a `next`. With multishot, the kernel could post any number of pieces before a
//! pause took effect, and pieces, unlike whole buffers, cannot be linked through their buffer
//! (several may share one), so they could not be queued in bounded memory.

use io_uring::{cqueue, opcode, squeue, types};

use super::kernel::{Kernel, Sqe};
use super::{Headers, OpResult};
use crate::buf_ring::Provided;
use crate::error::Error;
use crate::event_loop::registry::Registry;

/// Accepted connections a stream queues for its caller; when full the loop stops accepting
/// until `next` takes one.
pub const ACCEPT_QUEUE: usize = 8;

/// A stream's loop-side state.
#[derive(Debug, Clone, Copy)]
pub struct Multi {
    /// The slot of the [`Next`] waiting for a result (`NO_WAITER`: none).
    pub(crate) waiter: u32,
    /// Why the stream ended, once it has (returned after the queued results).
    pub(crate) end: Option<Error>,
    /// Not armed: waiting for room (accept) or buffers (recv); re-armed by the loop.
    pub(crate) paused: bool,
    /// Our own AsyncCancel is stopping it to pause (its `ECANCELED` is not an end).
    pub(crate) pausing: bool,
}

/// No waiting [`Next`].
pub(crate) const NO_WAITER: u32 = u32::MAX;

impl Multi {
    const NEW: Multi = Multi {
        waiter: NO_WAITER,
        end: None,
        paused: false,
        pausing: false,
    };
}

/// What a stream's CQE meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Got {
    /// A result was queued.
    Item,
    /// A result arrived with the queue full: released (an accepted connection closed).
    Refused,
    /// The ring had no buffer (`ENOBUFS`).
    Dry,
    /// An AsyncCancel stopped it.
    Cancelled,
    /// It ended for good.
    End(Error),
}

/// What the loop and the stream's owner need from a stream, whatever its kind.
pub trait Stream {
    /// The loop-side state.
    fn multi(&mut self) -> &mut Multi;
    /// Reads a CQE of its request.
    fn on_cqe(&mut self, result: i32, flags: u32) -> Got;
    /// The oldest queued result: `Ok` an accepted descriptor, or a buffer as `bid | len << 16`.
    fn pop(&mut self) -> Option<Result<usize, Error>>;
    /// Whether another result fits.
    fn has_room(&self) -> bool;
    /// Whether the loop re-arms it once a `next` makes room (one SQE per result), rather than
    /// keeping it armed (multishot).
    fn rearms_on_room(&self) -> bool;
    /// The ring its results come from (receives).
    fn ring(&self) -> Option<&'static dyn Provided>;
}

/// A stream handed back to its owner (its `output`): what it still queues, and why it ended.
fn handed_back<T: Stream>(mut stream: T, outcome: Result<usize, Error>) -> T {
    if let Err(e) = outcome {
        stream.multi().end.get_or_insert(e);
    }
    stream
}

/// Accepts connections until dropped ([`Handle::accept_multi`](crate::Handle::accept_multi)).
pub struct AcceptMulti {
    queue: [i32; ACCEPT_QUEUE],
    head: u8,
    len: u8,
    pub(crate) multi: Multi,
}

impl AcceptMulti {
    pub(crate) fn new() -> Self {
        AcceptMulti {
            queue: [0; ACCEPT_QUEUE],
            head: 0,
            len: 0,
            multi: Multi::NEW,
        }
    }

    fn push(&mut self, value: i32) {
        let at = (self.head as usize + self.len as usize) % ACCEPT_QUEUE;
        self.queue[at] = value;
        self.len += 1;
    }
}

impl Stream for AcceptMulti {
    fn multi(&mut self) -> &mut Multi {
        &mut self.multi
    }

    fn on_cqe(&mut self, result: i32, _: u32) -> Got {
        match -result {
            libc::ECANCELED => return Got::Cancelled,
            // Not a listening socket: no later accept can succeed.
            libc::EBADF | libc::ENOTSOCK | libc::EINVAL | libc::EOPNOTSUPP => {
                return Got::End(Error::Os(-result))
            }
            _ => {}
        }
        if !self.has_room() {
            if result >= 0 {
                // SAFETY: the kernel created this descriptor for us and nobody else has it.
                unsafe { libc::close(result) };
            }
            return Got::Refused;
        }
        // An error (EMFILE, ...) is a result too: the caller sees it, the loop re-arms.
        self.push(result);
        Got::Item
    }

    fn pop(&mut self) -> Option<Result<usize, Error>> {
        if self.len == 0 {
            return None;
        }
        let value = self.queue[self.head as usize];
        self.head = ((self.head as usize + 1) % ACCEPT_QUEUE) as u8;
        self.len -= 1;
        Some(match value {
            fd if fd >= 0 => Ok(fd as usize),
            errno => Err(Error::Os(-errno)),
        })
    }

    fn has_room(&self) -> bool {
        (self.len as usize) < ACCEPT_QUEUE
    }

    fn rearms_on_room(&self) -> bool {
        true
    }

    fn ring(&self) -> Option<&'static dyn Provided> {
        None
    }
}

impl Drop for AcceptMulti {
    /// Connections nobody took are closed.
    fn drop(&mut self) {
        while let Some(item) = self.pop() {
            if let Ok(fd) = item {
                // SAFETY: queued descriptors belong to the stream alone.
                unsafe { libc::close(fd as i32) };
            }
        }
    }
}

impl Kernel for AcceptMulti {
    type Output = AcceptMulti;
    type Error = Error;
    type Held = ();

    /// One accept per SQE, re-armed by the loop while the queue has room: the listen backlog
    /// stays in the kernel. (`IORING_ACCEPT_MULTISHOT` hands the whole backlog over at once:
    /// measured here, a burst of 64 connects arrived as 64 CQEs before the loop could pause
    /// it, so a bounded queue would have to close most of them.)
    fn sqe(&mut self, fd: types::Fd, _: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        super::socket::accept_sqe(fd)
    }

    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        Ok(handed_back(self, outcome))
    }

    fn lost(error: Error) -> Error {
        error
    }
}

/// Receives into a [`BufRing`](crate::BufRing) until dropped
/// ([`Handle::recv_multi`](crate::Handle::recv_multi)).
pub struct RecvMulti {
    ring: &'static dyn Provided,
    group: u16,
    /// The ring is incremental: one piece queued at most, re-armed per result.
    incremental: bool,
    /// What it received and no `next` took yet. Whole buffers: linked through the ring, oldest
    /// first, `head | tail << 16 | count << 32`. Incremental ring: the one piece (its raw item,
    /// `Provided::item`), 0 for none (a piece is never empty). One word: the request must stay
    /// within its 128 bytes.
    queue: u64,
    pub(crate) multi: Multi,
}

impl RecvMulti {
    pub(crate) fn new(ring: &'static dyn Provided, group: u16) -> Self {
        RecvMulti {
            ring,
            group,
            incremental: ring.incremental(),
            queue: 0,
            multi: Multi::NEW,
        }
    }

    /// Its buffer group.
    pub(crate) fn group(&self) -> u16 {
        self.group
    }

    /// Results queued.
    fn count(&self) -> usize {
        match self.incremental {
            true => usize::from(self.queue != 0),
            false => (self.queue >> 32) as usize,
        }
    }

    /// A whole-buffer list's `(head, tail, count)`.
    fn list(&self) -> (u16, u16, u64) {
        (
            self.queue as u16,
            (self.queue >> 16) as u16,
            self.queue >> 32,
        )
    }

    fn set_list(&mut self, head: u16, tail: u16, count: u64) {
        self.queue = u64::from(head) | u64::from(tail) << 16 | count << 32;
    }

    fn push(&mut self, bid: u16, off: u32, len: u32) {
        if self.incremental {
            debug_assert_eq!(self.queue, 0, "armed only with room for the piece");
            self.queue = self.ring.item(bid, off, len) as u64;
            return;
        }
        // SAFETY: the stream holds `bid` (the kernel handed it over in this CQE).
        unsafe {
            self.ring
                .link(bid)
                .write(crate::buf_ring::Link { next: 0, len })
        };
        let (head, tail, count) = self.list();
        if count == 0 {
            self.set_list(bid, bid, 1);
        } else {
            // SAFETY: `tail` is in the stream's list, which it holds.
            unsafe { (*self.ring.link(tail)).next = bid };
            self.set_list(head, bid, count + 1);
        }
    }
}

impl Stream for RecvMulti {
    fn multi(&mut self) -> &mut Multi {
        &mut self.multi
    }

    fn on_cqe(&mut self, result: i32, flags: u32) -> Got {
        let bid = cqueue::buffer_select(flags);
        if let Some(bid) = bid {
            let len = result.max(0) as u32;
            let off = self.ring.took(bid, len, cqueue::buffer_more(flags));
            let size = self.ring.size().1;
            if result <= 0 || off as usize + len as usize > size {
                // Not a message: the piece goes back.
                self.ring.give_back(bid);
            } else {
                self.push(bid, off, len);
                return Got::Item;
            }
        }
        match result {
            0 => Got::End(Error::UnexpectedEof),
            r if r > 0 => Got::End(Error::Os(libc::EIO)),
            r if r == -libc::ENOBUFS => Got::Dry,
            r if r == -libc::ECANCELED => Got::Cancelled,
            r => Got::End(Error::Os(-r)),
        }
    }

    fn pop(&mut self) -> Option<Result<usize, Error>> {
        if self.count() == 0 {
            return None;
        }
        if self.incremental {
            return Some(Ok(std::mem::take(&mut self.queue) as usize));
        }
        let (bid, tail, count) = self.list();
        // SAFETY: `bid` is in the stream's list, which it holds.
        let link = unsafe { *self.ring.link(bid) };
        self.set_list(link.next, tail, count - 1);
        Some(Ok(self.ring.item(bid, 0, link.len)))
    }

    fn has_room(&self) -> bool {
        !self.incremental || self.queue == 0
    }

    fn rearms_on_room(&self) -> bool {
        self.incremental
    }

    fn ring(&self) -> Option<&'static dyn Provided> {
        Some(self.ring)
    }
}

impl Drop for RecvMulti {
    /// Buffers nobody took go back to the ring.
    fn drop(&mut self) {
        while let Some(Ok(item)) = self.pop() {
            self.ring.give_back(item as u16);
        }
    }
}

impl std::fmt::Debug for RecvMulti {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvMulti")
            .field("group", &self.group)
            .field("queued", &self.count())
            .finish()
    }
}

impl std::fmt::Debug for AcceptMulti {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcceptMulti")
            .field("queued", &self.len)
            .finish()
    }
}

impl Kernel for RecvMulti {
    type Output = RecvMulti;
    type Error = Error;
    type Held = ();

    fn sqe(&mut self, fd: types::Fd, _: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        if !self.incremental {
            return Ok((opcode::RecvMulti::new(fd, self.group).build(), false));
        }
        // One receive into whatever room the kernel's current buffer has left (or the next).
        let size = self.ring.size().1.min(u32::MAX as usize) as u32;
        let entry = opcode::Recv::new(fd, std::ptr::null_mut(), size)
            .buf_group(self.group)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT);
        Ok((entry, false))
    }

    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        Ok(handed_back(self, outcome))
    }

    fn lost(error: Error) -> Error {
        error
    }
}

/// Takes a stream's next result (the [`Multishot::next`](crate::Multishot::next) future): no
/// SQE; the loop holds it until the stream has a result.
pub struct Next {
    /// The stream's request identity (`RequestId` as `user_data`).
    pub(crate) stream: u64,
    /// The ring of a receive stream's buffers.
    pub(crate) ring: Option<&'static dyn Provided>,
    /// The loop did not have the stream (handed back, or not taken yet).
    pub(crate) gone: bool,
}

impl Kernel for Next {
    /// `None`: the loop does not hold the stream; the stream looks at itself.
    type Output = Option<usize>;
    type Error = Error;
    type Held = ();

    fn sqe(&mut self, _: types::Fd, _: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        // Never staged: the loop holds it (`admit_next`).
        Err(Error::InvalidInput)
    }

    /// A result nobody takes is released: its connection closed, its buffer given back.
    fn discard(&self, outcome: Result<usize, Error>) {
        let Ok(item) = outcome else { return };
        if self.gone {
            return;
        }
        match self.ring {
            Some(ring) => ring.give_back(item as u16),
            // SAFETY: the stream handed this descriptor to this request alone; a caller that
            // takes the result takes the outcome out first.
            None => unsafe {
                libc::close(item as i32);
            },
        }
    }

    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        match self.gone {
            true => Ok(None),
            false => outcome.map(Some),
        }
    }

    fn lost(error: Error) -> Error {
        error
    }
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next")
            .field("stream", &self.stream)
            .finish()
    }
}
