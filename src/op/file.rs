//! `read_at`, `read_some_at` and `write_at`: positioned file transfers with a cursor; the pool's
//! buffers take the registered (fixed) forms on a loop that registered the pool.

use io_uring::{opcode, types};

use super::kernel::{buf_back, lost_buf, sqe_len, transfer, Kernel, Sqe, Step, Until};
use super::{Headers, OpResult};
use crate::buf::{IoBuf, IoBufMut};
use crate::error::{BufError, Error};
use crate::event_loop::registry::Registry;
use crate::handle::Op;

/// Whether `[offset, offset + len)` is a range of positioned file offsets. io_uring reads an
/// offset of -1 (`u64::MAX`) as "the file's current position", and the kernel refuses other
/// negative `loff_t` values, so every byte's offset must fit in an `i64`.
pub(crate) fn positioned(offset: u64, len: usize) -> bool {
    offset
        .checked_add(len as u64)
        .is_some_and(|end| end <= i64::MAX as u64)
}

/// Reads into `buf[pos..end]` from file offset `at + pos` ([`Handle::read_at`], exact, and
/// [`Handle::read_some_at`]). Not `exact`: done at the first bytes or at end of file (pread
/// semantics).
///
/// [`Handle::read_at`]: crate::Handle::read_at
/// [`Handle::read_some_at`]: crate::Handle::read_some_at
#[derive(Debug)]
pub struct ReadAt {
    pub(crate) buf: IoBufMut,
    pub(crate) at: u64,
    pub(crate) pos: usize,
    pub(crate) end: usize,
    pub(crate) exact: bool,
}

impl ReadAt {
    /// `buf`'s whole capacity from file offset `at`.
    pub(crate) fn new(at: u64, buf: IoBufMut, exact: bool) -> Self {
        let end = buf.capacity();
        ReadAt {
            buf,
            at,
            pos: 0,
            end,
            exact,
        }
    }
}

/// The option of `read_at` and `read_some_at`: how many bytes.
impl<const S: usize, const R: usize, const W: usize> Op<ReadAt, S, R, W> {
    /// Reads into the buffer's first `len` bytes (by default, its whole capacity): `read_at`
    /// reads exactly `len` bytes, `read_some_at` at most `len`. `len` beyond the capacity is
    /// `Error::InvalidInput`; zero completes at once with an empty buffer.
    ///
    /// # Panics
    /// After [`try_submit`](Op::try_submit): the request is already in the loop's hands.
    #[inline]
    pub fn limit(mut self, len: usize) -> Self {
        self.operation().end = len;
        self
    }
}

impl Kernel for ReadAt {
    /// The buffer, its length set to the bytes read.
    type Output = IoBufMut;
    type Error = BufError<IoBufMut>;
    type Held = ();

    /// The bytes fit the buffer, at offsets the kernel reads as positions.
    #[inline]
    fn check(mut self, held: ()) -> Result<(Self, ()), OpResult<Self>> {
        if self.end > self.buf.capacity() || !positioned(self.at, self.end) {
            return Err(Err(BufError::new(self.buf, Error::InvalidInput)));
        }
        if self.end == 0 {
            self.buf.clear();
            return Err(Ok(self.buf));
        }
        Ok((self, held))
    }

    #[inline]
    fn valid(&self) -> bool {
        self.end != 0 && self.end <= self.buf.capacity() && positioned(self.at, self.end)
    }

    #[inline]
    fn sqe(&mut self, fd: types::Fd, limit: u32, reg: &Registry, _: &mut Headers<'_>) -> Sqe {
        // SAFETY: pos <= end <= the buffer's capacity (`check`, kept by `transfer`).
        let ptr = unsafe { self.buf.as_mut_ptr().add(self.pos) };
        let (offset, n) = (
            self.at + self.pos as u64,
            sqe_len(self.pos, self.end, limit),
        );
        match reg.buf_index(self.buf.pool_slot()) {
            Some(index) => {
                let entry = opcode::ReadFixed::new(fd, ptr, n, index)
                    .offset(offset)
                    .build();
                Ok((entry, true))
            }
            None => Ok((opcode::Read::new(fd, ptr, n).offset(offset).build(), false)),
        }
    }

    #[inline]
    fn advance(&mut self, n: usize, cancel_requested: bool) -> Step {
        let until = if self.exact {
            Until::Whole
        } else {
            Until::FirstBytesOrEof
        };
        transfer(&mut self.pos, self.end, n, until, cancel_requested)
    }

    #[inline]
    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        let (mut buf, read) = (self.buf, self.pos);
        match outcome {
            Ok(len) => {
                // SAFETY: the kernel wrote exactly [0, len); len <= capacity (checked).
                unsafe { buf.set_len(len) };
                Ok(buf)
            }
            Err(Error::UnexpectedEof) => {
                // The end of file came first: the bytes read before it are the buffer's.
                // SAFETY: the kernel wrote [0, read); read <= len <= capacity.
                unsafe { buf.set_len(read) };
                Err(BufError::new(buf, Error::UnexpectedEof))
            }
            Err(error) => Err(BufError::new(buf, error)),
        }
    }

    #[inline]
    fn lost(error: Error) -> BufError<IoBufMut> {
        lost_buf(error)
    }
}

/// Writes `buf[pos..end]` at file offset `at + pos` ([`Handle::write_at`](crate::Handle::write_at)).
/// Durable: a dropped one still runs to completion.
#[derive(Debug)]
pub struct WriteAt {
    pub(crate) buf: IoBuf,
    pub(crate) at: u64,
    pub(crate) pos: usize,
    pub(crate) end: usize,
}

impl WriteAt {
    /// The whole of `buf` at file offset `at`.
    pub(crate) fn new(at: u64, buf: IoBuf) -> Self {
        let end = buf.len();
        WriteAt {
            buf,
            at,
            pos: 0,
            end,
        }
    }
}

impl Kernel for WriteAt {
    type Output = IoBuf;
    type Error = BufError<IoBuf>;
    type Held = ();

    /// Offsets the kernel reads as positions; an empty buffer is written at once.
    #[inline]
    fn check(self, held: ()) -> Result<(Self, ()), OpResult<Self>> {
        if !positioned(self.at, self.end) {
            return Err(Err(BufError::new(self.buf, Error::InvalidInput)));
        }
        match self.end {
            0 => Err(Ok(self.buf)),
            _ => Ok((self, held)),
        }
    }

    #[inline]
    fn valid(&self) -> bool {
        self.end != 0 && positioned(self.at, self.end)
    }

    #[inline]
    fn sqe(&mut self, fd: types::Fd, limit: u32, reg: &Registry, _: &mut Headers<'_>) -> Sqe {
        // SAFETY: pos <= end = the buffer's length (kept by `transfer`).
        let ptr = unsafe { self.buf.as_ptr().add(self.pos) };
        let (offset, n) = (
            self.at + self.pos as u64,
            sqe_len(self.pos, self.end, limit),
        );
        match reg.buf_index(self.buf.pool_slot()) {
            Some(index) => {
                let entry = opcode::WriteFixed::new(fd, ptr, n, index)
                    .offset(offset)
                    .build();
                Ok((entry, true))
            }
            None => Ok((opcode::Write::new(fd, ptr, n).offset(offset).build(), false)),
        }
    }

    #[inline]
    fn advance(&mut self, n: usize, cancel_requested: bool) -> Step {
        transfer(&mut self.pos, self.end, n, Until::Whole, cancel_requested)
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
