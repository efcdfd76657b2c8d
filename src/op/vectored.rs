//! `send_vectored` and `write_at_vectored`: up to `MAX_IOVECS` buffers as one stream, their
//! iovecs in a message header of the loop's table while in the kernel, the buffers in the
//! slot's vector cell (`crate::vectored`). Each follows its single-buffer form's rules.

use io_uring::{opcode, types};

use super::{buf_back, transfer, Headers, Operation, Sqe, Step, Until, NO_MSG};
use crate::error::Error;
use crate::event_loop::registry::Registry;
use crate::handle::{Held, VectoredResult};
use crate::vectored::{IoBufs, VectorCell, Vectors};

/// Moves the buffers the future kept into the slot's vector cell (`Operation::attach`).
fn attach(bufs: &mut Vectors, held: IoBufs, cell: &VectorCell) {
    // SAFETY: `submit` calls `attach` for the slot it claimed (FILLED: ours), whose cell is
    // empty: the last request that used it took or dropped its `Vectors`.
    *bufs = unsafe { Vectors::attach(cell, held) };
}

/// Sends bytes `pos..end` of `bufs` (`end` = their total) with `sendmsg`.
#[derive(Debug)]
pub(crate) struct SendVectored {
    pub(crate) bufs: Vectors,
    pub(crate) pos: usize,
    pub(crate) end: usize,
    pub(crate) msg: u16,
}

impl SendVectored {
    /// `end` bytes, the buffers still in the caller's future.
    pub(crate) fn new(end: usize) -> Self {
        SendVectored {
            bufs: Vectors::DETACHED,
            pos: 0,
            end,
            msg: NO_MSG,
        }
    }
}

impl Operation for SendVectored {
    type Output = VectoredResult;

    fn sqe(&mut self, fd: types::Fd, limit: u32, _: &Registry, headers: &mut Headers<'_>) -> Sqe {
        let header = headers.take(&mut self.msg)?;
        let hdr = header.prepare_send(&self.bufs, self.pos, limit as usize);
        let entry = opcode::SendMsg::new(fd, hdr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build();
        Ok((entry, false))
    }

    fn advance(&mut self, n: usize, cancel_requested: bool) -> Step {
        transfer(&mut self.pos, self.end, n, Until::Whole, cancel_requested)
    }

    /// As `send`: a closed peer is end of stream.
    fn error(errno: i32) -> Error {
        <super::Send as Operation>::error(errno)
    }

    fn msg(&mut self) -> Option<&mut u16> {
        Some(&mut self.msg)
    }

    fn output(self, outcome: Result<usize, Error>) -> VectoredResult {
        buf_back(self.bufs.take(), outcome)
    }

    fn lost(error: Error) -> VectoredResult {
        Err((IoBufs::new(), error))
    }

    fn attach(&mut self, held: Held<Self>, cell: &VectorCell) {
        attach(&mut self.bufs, held, cell);
    }

    fn unsubmitted(self, held: Held<Self>, error: Error) -> VectoredResult {
        Err((held, error))
    }
}

/// Writes bytes `pos..end` of `bufs` at file offset `at + pos` (`writev`). Durable.
#[derive(Debug)]
pub(crate) struct WriteAtVectored {
    pub(crate) bufs: Vectors,
    pub(crate) at: u64,
    pub(crate) pos: usize,
    pub(crate) end: usize,
    pub(crate) msg: u16,
}

impl WriteAtVectored {
    /// `end` bytes at `at`, the buffers still in the caller's future.
    pub(crate) fn new(at: u64, end: usize) -> Self {
        WriteAtVectored {
            bufs: Vectors::DETACHED,
            at,
            pos: 0,
            end,
            msg: NO_MSG,
        }
    }
}

impl Operation for WriteAtVectored {
    type Output = VectoredResult;

    fn sqe(&mut self, fd: types::Fd, limit: u32, _: &Registry, headers: &mut Headers<'_>) -> Sqe {
        let header = headers.take(&mut self.msg)?;
        let (iovecs, count) = header.prepare_iovecs(&self.bufs, self.pos, limit as usize);
        let entry = opcode::Writev::new(fd, iovecs, count)
            .offset(self.at + self.pos as u64)
            .build();
        Ok((entry, false))
    }

    fn advance(&mut self, n: usize, cancel_requested: bool) -> Step {
        transfer(&mut self.pos, self.end, n, Until::Whole, cancel_requested)
    }

    fn msg(&mut self) -> Option<&mut u16> {
        Some(&mut self.msg)
    }

    fn output(self, outcome: Result<usize, Error>) -> VectoredResult {
        buf_back(self.bufs.take(), outcome)
    }

    fn lost(error: Error) -> VectoredResult {
        Err((IoBufs::new(), error))
    }

    fn attach(&mut self, held: Held<Self>, cell: &VectorCell) {
        attach(&mut self.bufs, held, cell);
    }

    fn unsubmitted(self, held: Held<Self>, error: Error) -> VectoredResult {
        Err((held, error))
    }
}
