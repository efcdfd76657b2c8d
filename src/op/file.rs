//! `read_at`, `read_some_at` and `write_at`: positioned file transfers with a cursor; the pool's
//! buffers take the registered (fixed) forms on a loop that registered the pool.

use io_uring::{opcode, types};

use super::{
    buf_back, no_buf, no_buf_mut, sqe_len, transfer, Headers, Operation, Sqe, Step, Until,
};
use crate::buf::{IoBuf, IoBufMut};
use crate::error::Error;
use crate::event_loop::registry::Registry;
use crate::handle::{ReadResult, WriteResult};

/// Reads into `buf[pos..end]` from file offset `at + pos`. Not `exact`: done at the first bytes
/// or at end of file (pread semantics).
#[derive(Debug)]
pub(crate) struct ReadAt {
    pub(crate) buf: IoBufMut,
    pub(crate) at: u64,
    pub(crate) pos: usize,
    pub(crate) end: usize,
    pub(crate) exact: bool,
}

impl Operation for ReadAt {
    type Output = ReadResult;

    fn sqe(&mut self, fd: types::Fd, limit: u32, reg: &Registry, _: &mut Headers<'_>) -> Sqe {
        // SAFETY: pos <= end <= the buffer's capacity (checked at the handle, kept by
        // `transfer`).
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

    fn advance(&mut self, n: usize, cancel_requested: bool) -> Step {
        let until = if self.exact {
            Until::Whole
        } else {
            Until::FirstBytesOrEof
        };
        transfer(&mut self.pos, self.end, n, until, cancel_requested)
    }

    fn output(self, outcome: Result<usize, Error>) -> ReadResult {
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
                Err((buf, Error::UnexpectedEof))
            }
            Err(e) => Err((buf, e)),
        }
    }

    fn lost(error: Error) -> ReadResult {
        Err((no_buf_mut(), error))
    }
}

/// Writes `buf[pos..end]` at file offset `at + pos`. Durable: a dropped one still runs to
/// completion.
#[derive(Debug)]
pub(crate) struct WriteAt {
    pub(crate) buf: IoBuf,
    pub(crate) at: u64,
    pub(crate) pos: usize,
    pub(crate) end: usize,
}

impl Operation for WriteAt {
    type Output = WriteResult;

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

    fn advance(&mut self, n: usize, cancel_requested: bool) -> Step {
        transfer(&mut self.pos, self.end, n, Until::Whole, cancel_requested)
    }

    fn output(self, outcome: Result<usize, Error>) -> WriteResult {
        buf_back(self.buf, outcome)
    }

    fn lost(error: Error) -> WriteResult {
        Err((no_buf(), error))
    }
}
