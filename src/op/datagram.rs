//! `send_to` and `recv_from`: one datagram, with the peer's address.

use io_uring::{opcode, types};

use super::{
    buf_back, no_buf, no_buf_mut, Headers, MsgHeader, Operation, RawAddr, Sqe, Step, NO_MSG,
};
use crate::buf::{IoBuf, IoBufMut};
use crate::error::Error;
use crate::event_loop::registry::Registry;
use crate::handle::{RecvFromResult, WriteResult};

/// Sends the whole datagram `buf` to `addr` (kept here until the CQE).
#[derive(Debug)]
pub(crate) struct SendTo {
    pub(crate) buf: IoBuf,
    pub(crate) addr: RawAddr,
}

impl Operation for SendTo {
    type Output = WriteResult;

    fn sqe(&mut self, fd: types::Fd, limit: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        let len = self.buf.len().min(limit as usize) as u32;
        let entry = opcode::Send::new(fd, self.buf.as_ptr(), len)
            .dest_addr(self.addr.as_ptr())
            .dest_addr_len(self.addr.len())
            .flags(libc::MSG_NOSIGNAL)
            .build();
        Ok((entry, false))
    }

    /// A datagram goes whole or not at all: the result is its length (zero included).
    fn advance(&mut self, n: usize, _: bool) -> Step {
        Step::Done(Ok(n))
    }

    fn output(self, outcome: Result<usize, Error>) -> WriteResult {
        buf_back(self.buf, outcome)
    }

    fn lost(error: Error) -> WriteResult {
        Err((no_buf(), error))
    }
}

/// Receives one datagram into `buf` (up to its capacity); `from` gets the sender's address.
/// While in the kernel it uses message header `msg` of the loop's table.
#[derive(Debug)]
pub(crate) struct RecvFrom {
    pub(crate) buf: IoBufMut,
    pub(crate) from: RawAddr,
    pub(crate) msg: u16,
}

impl RecvFrom {
    /// Into the whole capacity of `buf`.
    pub(crate) fn new(buf: IoBufMut) -> Self {
        RecvFrom {
            buf,
            from: RawAddr::EMPTY,
            msg: NO_MSG,
        }
    }
}

impl Operation for RecvFrom {
    type Output = RecvFromResult;

    fn sqe(&mut self, fd: types::Fd, _: u32, _: &Registry, headers: &mut Headers<'_>) -> Sqe {
        let header = headers.take(&mut self.msg)?;
        Ok((
            opcode::RecvMsg::new(fd, header.prepare(&mut self.buf)).build(),
            false,
        ))
    }

    /// The result is the datagram's length (zero included).
    fn advance(&mut self, n: usize, _: bool) -> Step {
        Step::Done(Ok(n))
    }

    fn msg(&mut self) -> Option<&mut u16> {
        Some(&mut self.msg)
    }

    fn msg_done(&mut self, header: &MsgHeader) {
        self.from = header.sender();
    }

    fn output(self, outcome: Result<usize, Error>) -> RecvFromResult {
        let mut buf = self.buf;
        match outcome {
            Ok(len) => {
                // SAFETY: the kernel wrote the datagram's `len` bytes at the start of the buffer;
                // len <= capacity (the iovec's length).
                unsafe { buf.set_len(len) };
                Ok((buf, len, self.from.to_socket_addr()))
            }
            Err(e) => Err((buf, e)),
        }
    }

    fn lost(error: Error) -> RecvFromResult {
        Err((no_buf_mut(), error))
    }
}
