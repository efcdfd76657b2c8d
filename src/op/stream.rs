//! `send` and `recv` on a connected socket: transfers with a cursor, resubmitted after short
//! ones.

use io_uring::{opcode, types};

use super::kernel::{buf_back, lost_buf, sqe_len, transfer, Kernel, Sqe, Step, Until};
use super::{Headers, OpResult};
use crate::buf::{IoBuf, IoBufMut};
use crate::error::{BufError, Error};
use crate::event_loop::registry::Registry;
use crate::handle::Op;

/// Sends the whole buffer ([`Handle::send`](crate::Handle::send)): bytes `pos..end` are left
/// (`end` = the buffer's length).
#[derive(Debug)]
pub struct Send {
    pub(crate) buf: IoBuf,
    pub(crate) pos: usize,
    pub(crate) end: usize,
}

impl Send {
    /// The whole of `buf`.
    pub(crate) fn new(buf: IoBuf) -> Self {
        let end = buf.len();
        Send { buf, pos: 0, end }
    }
}

impl Kernel for Send {
    type Output = IoBuf;
    type Error = BufError<IoBuf>;
    type Held = ();

    /// An empty buffer is sent at once.
    #[inline]
    fn check(self, held: ()) -> Result<(Self, ()), OpResult<Self>> {
        match self.end {
            0 => Err(Ok(self.buf)),
            _ => Ok((self, held)),
        }
    }

    #[inline]
    fn valid(&self) -> bool {
        self.end != 0
    }

    #[inline]
    fn sqe(&mut self, fd: types::Fd, limit: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        // SAFETY: pos <= end = the buffer's length (kept by `transfer`).
        let ptr = unsafe { self.buf.as_ptr().add(self.pos) };
        let entry = opcode::Send::new(fd, ptr, sqe_len(self.pos, self.end, limit))
            .flags(libc::MSG_NOSIGNAL)
            .build();
        Ok((entry, false))
    }

    #[inline]
    fn advance(&mut self, n: usize, cancel_requested: bool) -> Step {
        transfer(&mut self.pos, self.end, n, Until::Whole, cancel_requested)
    }

    /// A closed peer is end of stream, not an errno.
    #[inline]
    fn error(errno: i32) -> Error {
        match errno {
            libc::EPIPE => Error::UnexpectedEof,
            errno => Error::Os(errno),
        }
    }

    #[inline]
    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        buf_back(self.buf, outcome)
    }

    #[inline]
    fn lost(error: Error) -> BufError<IoBuf> {
        lost_buf(error)
    }
}

/// Receives into `buf[start..end]` ([`Handle::recv`](crate::Handle::recv)); `pos` is the
/// cursor. Not `exact`: done at the first bytes.
#[derive(Debug)]
pub struct Recv {
    pub(crate) buf: IoBufMut,
    pub(crate) start: usize,
    pub(crate) pos: usize,
    pub(crate) end: usize,
    pub(crate) exact: bool,
}

impl Recv {
    /// Into the whole capacity of `buf`, at least one byte.
    pub(crate) fn new(buf: IoBufMut) -> Self {
        let end = buf.capacity();
        Recv {
            buf,
            start: 0,
            pos: 0,
            end,
            exact: false,
        }
    }
}

/// The options of a `recv`: where in the buffer the bytes go and how many end it.
impl<const S: usize, const R: usize, const W: usize> Op<Recv, S, R, W> {
    /// Receives until the buffer holds exactly `len` bytes (resubmitting short receives); a
    /// peer that closes first is `Error::UnexpectedEof`. `len` beyond the buffer's capacity is
    /// `Error::InvalidInput`.
    ///
    /// # Panics
    /// After [`try_submit`](Op::try_submit): the request is already in the loop's hands.
    #[inline]
    pub fn exact(mut self, len: usize) -> Self {
        let recv = self.operation();
        (recv.end, recv.exact) = (len, true);
        self
    }

    /// Receives at least one byte and at most up to buffer length `len` (by default, its
    /// capacity). `len` beyond the capacity is `Error::InvalidInput`.
    ///
    /// # Panics
    /// After [`try_submit`](Op::try_submit).
    #[inline]
    pub fn limit(mut self, len: usize) -> Self {
        let recv = self.operation();
        (recv.end, recv.exact) = (len, false);
        self
    }

    /// Keeps the buffer's first `offset` bytes and receives after them (by default, from the
    /// start). Bytes between the buffer's length and `offset` are zeroed, never left undefined.
    /// `offset` beyond the end ([`limit`](Self::limit) or [`exact`](Self::exact)) is
    /// `Error::InvalidInput`; `offset` equal to it completes at once, with nothing received.
    ///
    /// # Panics
    /// After [`try_submit`](Op::try_submit).
    #[inline]
    pub fn offset(mut self, offset: usize) -> Self {
        let recv = self.operation();
        (recv.start, recv.pos) = (offset, offset);
        self
    }
}

impl Kernel for Recv {
    /// The buffer (its length set to the end of what was received) and the bytes received.
    type Output = (IoBufMut, usize);
    type Error = BufError<IoBufMut>;
    type Held = ();

    /// `start <= end <= capacity`; the bytes below `start` are defined before the kernel sees
    /// the buffer (the result sets the length past them).
    #[inline]
    fn check(mut self, held: ()) -> Result<(Self, ()), OpResult<Self>> {
        if self.start > self.end || self.end > self.buf.capacity() {
            return Err(Err(BufError::new(self.buf, Error::InvalidInput)));
        }
        const ZEROS: [u8; 64] = [0; 64];
        while self.buf.len() < self.start {
            let n = (self.start - self.buf.len()).min(ZEROS.len());
            let fits = self.buf.extend_from_slice(&ZEROS[..n]);
            debug_assert!(fits, "start <= capacity (checked above)");
        }
        if self.start == self.end {
            // SAFETY: start <= buf.len() now, so the first `start` bytes are initialised.
            unsafe { self.buf.set_len(self.start) };
            return Err(Ok((self.buf, 0)));
        }
        Ok((self, held))
    }

    /// `check` changes nothing when the bytes below `start` are defined already.
    #[inline]
    fn valid(&self) -> bool {
        self.start < self.end && self.end <= self.buf.capacity() && self.buf.len() >= self.start
    }

    #[inline]
    fn sqe(&mut self, fd: types::Fd, limit: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        // SAFETY: pos <= end <= the buffer's capacity (`check`, kept by `transfer`).
        let ptr = unsafe { self.buf.as_mut_ptr().add(self.pos) };
        let entry = opcode::Recv::new(fd, ptr, sqe_len(self.pos, self.end, limit)).build();
        Ok((entry, false))
    }

    #[inline]
    fn advance(&mut self, n: usize, cancel_requested: bool) -> Step {
        let until = if self.exact {
            Until::Whole
        } else {
            Until::FirstBytes
        };
        transfer(&mut self.pos, self.end, n, until, cancel_requested)
    }

    #[inline]
    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        let mut buf = self.buf;
        match outcome {
            Ok(filled) => {
                // SAFETY: the kernel wrote [start, filled); bytes below start were initialised
                // before submission (`check`); filled <= end <= capacity (checked there).
                unsafe { buf.set_len(filled) };
                Ok((buf, filled - self.start))
            }
            Err(error) => Err(BufError::new(buf, error)),
        }
    }

    #[inline]
    fn lost(error: Error) -> BufError<IoBufMut> {
        lost_buf(error)
    }
}
