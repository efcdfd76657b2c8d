//! `send` and `recv` on a connected socket: transfers with a cursor, resubmitted after short
//! ones.

use io_uring::{opcode, types};

use super::{
    buf_back, no_buf, no_buf_mut, sqe_len, transfer, Headers, Operation, Sqe, Step, Until,
};
use crate::buf::{IoBuf, IoBufMut};
use crate::error::Error;
use crate::event_loop::registry::Registry;
use crate::handle::{RecvResult, WriteResult};

/// Sends `buf[pos..end]` (`end` = the buffer's length).
#[derive(Debug)]
pub(crate) struct Send {
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

impl Operation for Send {
    type Output = WriteResult;

    fn sqe(&mut self, fd: types::Fd, limit: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        // SAFETY: pos <= end = the buffer's length (checked at the handle, kept by `transfer`).
        let ptr = unsafe { self.buf.as_ptr().add(self.pos) };
        let entry = opcode::Send::new(fd, ptr, sqe_len(self.pos, self.end, limit))
            .flags(libc::MSG_NOSIGNAL)
            .build();
        Ok((entry, false))
    }

    fn advance(&mut self, n: usize, cancel_requested: bool) -> Step {
        transfer(&mut self.pos, self.end, n, Until::Whole, cancel_requested)
    }

    /// A closed peer is end of stream, not an errno.
    fn error(errno: i32) -> Error {
        match errno {
            libc::EPIPE => Error::UnexpectedEof,
            errno => Error::Os(errno),
        }
    }

    fn output(self, outcome: Result<usize, Error>) -> WriteResult {
        buf_back(self.buf, outcome)
    }

    fn lost(error: Error) -> WriteResult {
        Err((no_buf(), error))
    }
}

/// Receives into `buf[pos..end]`; `pos` starts at the caller's offset. Not `exact`: done at the
/// first bytes.
#[derive(Debug)]
pub(crate) struct Recv {
    pub(crate) buf: IoBufMut,
    pub(crate) pos: usize,
    pub(crate) end: usize,
    pub(crate) exact: bool,
}

impl Operation for Recv {
    type Output = RecvResult;

    fn sqe(&mut self, fd: types::Fd, limit: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        // SAFETY: pos <= end <= the buffer's capacity (checked at the handle, kept by
        // `transfer`).
        let ptr = unsafe { self.buf.as_mut_ptr().add(self.pos) };
        let entry = opcode::Recv::new(fd, ptr, sqe_len(self.pos, self.end, limit)).build();
        Ok((entry, false))
    }

    fn advance(&mut self, n: usize, cancel_requested: bool) -> Step {
        let until = if self.exact {
            Until::Whole
        } else {
            Until::FirstBytes
        };
        transfer(&mut self.pos, self.end, n, until, cancel_requested)
    }

    fn output(self, outcome: Result<usize, Error>) -> RecvResult {
        let mut buf = self.buf;
        match outcome {
            Ok(filled) => {
                // SAFETY: the kernel wrote [offset, filled); bytes below offset were initialised
                // before submission (`check_recv`); filled <= len <= capacity (checked there).
                unsafe { buf.set_len(filled) };
                Ok((buf, filled))
            }
            Err(e) => Err((buf, e)),
        }
    }

    fn lost(error: Error) -> RecvResult {
        Err((no_buf_mut(), error))
    }
}
