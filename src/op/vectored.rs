//! `send_vectored` and `write_at_vectored`: up to `MAX_IOVECS` buffers as one stream, their
//! iovecs in a message header of the loop's table while in the kernel, the buffers in the
//! slot's vector cell (`crate::vectored`). Each follows its single-buffer form's rules.

use io_uring::{opcode, types};

use super::file::positioned;
use super::kernel::{buf_back, lost_buf, transfer, Kernel, Sqe, Step, Until};
use super::{Headers, OpResult, NO_MSG};
use crate::error::{BufError, Error};
use crate::event_loop::registry::Registry;
use crate::vectored::{IoBufs, VectorCell, Vectors};

/// Moves the buffers the future kept into the slot's vector cell (`Operation::attach`).
fn attach(bufs: &mut Vectors, held: IoBufs, cell: &VectorCell) {
    // SAFETY: `submit` calls `attach` for the slot it claimed (FILLED: ours), whose cell is
    // empty: the last request that used it took or dropped its `Vectors`.
    *bufs = unsafe { Vectors::attach(cell, held) };
}

/// The bytes `bufs` hold, if they fit positioned offsets from `at` (`None`: not positioned);
/// else their error: zero bytes complete at once, a range beyond `i64::MAX` is invalid.
#[allow(clippy::result_large_err)] // the caller's buffers come back by value
fn checked_len(at: Option<u64>, bufs: IoBufs) -> Result<(usize, IoBufs), OpResult<SendVectored>> {
    let end: usize = bufs.iter().map(|b| b.len()).sum();
    if at.is_some_and(|at| !positioned(at, end)) {
        return Err(Err(BufError::new(bufs, Error::InvalidInput)));
    }
    match end {
        0 => Err(Ok(bufs)),
        _ => Ok((end, bufs)),
    }
}

/// Sends bytes `pos..end` of `bufs` (`end` = their total) with `sendmsg`
/// ([`Handle::send_vectored`](crate::Handle::send_vectored)).
#[derive(Debug)]
pub struct SendVectored {
    pub(crate) bufs: Vectors,
    pub(crate) pos: usize,
    pub(crate) end: usize,
    pub(crate) msg: u16,
}

impl SendVectored {
    /// The buffers are still in the caller's future.
    pub(crate) fn new() -> Self {
        SendVectored {
            bufs: Vectors::DETACHED,
            pos: 0,
            end: 0,
            msg: NO_MSG,
        }
    }
}

impl Kernel for SendVectored {
    /// The buffers, whole.
    type Output = IoBufs;
    type Error = BufError<IoBufs>;
    type Held = IoBufs;

    /// Empty buffers (or none) complete at once.
    #[inline]
    fn check(mut self, held: IoBufs) -> Result<(Self, IoBufs), OpResult<Self>> {
        let (end, held) = checked_len(None, held)?;
        self.end = end;
        Ok((self, held))
    }

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
        <super::Send as Kernel>::error(errno)
    }

    fn msg(&mut self) -> Option<&mut u16> {
        Some(&mut self.msg)
    }

    fn vectors(&mut self) -> Option<&mut Vectors> {
        Some(&mut self.bufs)
    }

    #[inline]
    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        buf_back(self.bufs.take(), outcome)
    }

    fn lost(error: Error) -> BufError<IoBufs> {
        lost_buf(error)
    }

    fn attach(&mut self, held: IoBufs, cell: &VectorCell) {
        attach(&mut self.bufs, held, cell);
    }

    fn unsubmitted(self, held: IoBufs, error: Error) -> OpResult<Self> {
        Err(BufError::new(held, error))
    }
}

/// Writes bytes `pos..end` of `bufs` at file offset `at + pos` (`writev`)
/// ([`Handle::write_at_vectored`](crate::Handle::write_at_vectored)). Durable.
#[derive(Debug)]
pub struct WriteAtVectored {
    pub(crate) bufs: Vectors,
    pub(crate) at: u64,
    pub(crate) pos: usize,
    pub(crate) end: usize,
    pub(crate) msg: u16,
}

impl WriteAtVectored {
    /// At file offset `at`, the buffers still in the caller's future.
    pub(crate) fn new(at: u64) -> Self {
        WriteAtVectored {
            bufs: Vectors::DETACHED,
            at,
            pos: 0,
            end: 0,
            msg: NO_MSG,
        }
    }
}

impl Kernel for WriteAtVectored {
    /// The buffers, whole.
    type Output = IoBufs;
    type Error = BufError<IoBufs>;
    type Held = IoBufs;

    /// A range beyond `i64::MAX` is invalid; empty buffers (or none) complete at once.
    #[inline]
    fn check(mut self, held: IoBufs) -> Result<(Self, IoBufs), OpResult<Self>> {
        let (end, held) = checked_len(Some(self.at), held)?;
        self.end = end;
        Ok((self, held))
    }

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

    fn vectors(&mut self) -> Option<&mut Vectors> {
        Some(&mut self.bufs)
    }

    #[inline]
    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        buf_back(self.bufs.take(), outcome)
    }

    fn lost(error: Error) -> BufError<IoBufs> {
        lost_buf(error)
    }

    fn attach(&mut self, held: IoBufs, cell: &VectorCell) {
        attach(&mut self.bufs, held, cell);
    }

    fn unsubmitted(self, held: IoBufs, error: Error) -> OpResult<Self> {
        Err(BufError::new(held, error))
    }
}
