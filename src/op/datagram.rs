//! `send_to` and `recv_from`: one datagram, with the peer's address.

use io_uring::{opcode, types};

use super::kernel::{buf_back, lost_buf, Kernel, Sqe, Step};
use super::{Headers, MsgHeader, OpResult, RawAddr, NO_MSG};
use crate::buf::{IoBuf, IoBufMut};
use crate::error::{BufError, Error};
use crate::event_loop::registry::Registry;

/// Sends the whole datagram `buf` to `addr`, kept here until the CQE
/// ([`Handle::send_to`](crate::Handle::send_to)).
#[derive(Debug)]
pub struct SendTo {
    pub(crate) buf: IoBuf,
    pub(crate) addr: RawAddr,
}

impl Kernel for SendTo {
    type Output = IoBuf;
    type Error = BufError<IoBuf>;
    type Held = ();

    fn sqe(&mut self, fd: types::Fd, limit: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        let len = self.buf.len().min(limit as usize) as u32;
        let entry = opcode::Send::new(fd, self.buf.as_ptr(), len)
            .dest_addr(self.addr.as_ptr())
            .dest_addr_len(self.addr.len())
            .flags(libc::MSG_NOSIGNAL)
            .build();
        Ok((entry, false))
    }

    /// A datagram goes whole or not at all: the result is its length (zero included). More
    /// than the datagram is a kernel surprise: it fails the request, never the loop.
    fn advance(&mut self, n: usize, _: bool) -> Step {
        match n <= self.buf.len() {
            true => Step::Done(Ok(n)),
            false => Step::Done(Err(Error::Os(libc::EIO))),
        }
    }

    #[inline]
    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        buf_back(self.buf, outcome)
    }

    fn lost(error: Error) -> BufError<IoBuf> {
        lost_buf(error)
    }
}

/// Receives one datagram into `buf` (up to its capacity); `from` gets the sender's address
/// ([`Handle::recv_from`](crate::Handle::recv_from)). While in the kernel it uses message
/// header `msg` of the loop's table.
#[derive(Debug)]
pub struct RecvFrom {
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

impl Kernel for RecvFrom {
    /// The buffer (its length set to the datagram's), the datagram's length and the sender's
    /// address.
    type Output = (IoBufMut, usize, std::net::SocketAddr);
    type Error = BufError<IoBufMut>;
    type Held = ();

    fn sqe(&mut self, fd: types::Fd, _: u32, _: &Registry, headers: &mut Headers<'_>) -> Sqe {
        let header = headers.take(&mut self.msg)?;
        Ok((
            opcode::RecvMsg::new(fd, header.prepare(&mut self.buf)).build(),
            false,
        ))
    }

    /// The result is the datagram's length (zero included): at most the buffer's capacity
    /// (`recvmsg` without `MSG_TRUNC`), so the length set from it covers only bytes the kernel
    /// wrote. More is a kernel surprise: it fails the request, never the loop.
    fn advance(&mut self, n: usize, _: bool) -> Step {
        match n <= self.buf.capacity() {
            true => Step::Done(Ok(n)),
            false => Step::Done(Err(Error::Os(libc::EIO))),
        }
    }

    fn msg(&mut self) -> Option<&mut u16> {
        Some(&mut self.msg)
    }

    fn msg_done(&mut self, header: &MsgHeader) {
        self.from = header.sender();
    }

    #[inline]
    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        let mut buf = self.buf;
        match outcome {
            Ok(len) => {
                // SAFETY: the kernel wrote the datagram's `len` bytes at the start of the buffer;
                // len <= capacity (checked in `advance`).
                unsafe { buf.set_len(len) };
                Ok((buf, len, self.from.to_socket_addr()))
            }
            Err(error) => Err(BufError::new(buf, error)),
        }
    }

    fn lost(error: Error) -> BufError<IoBufMut> {
        lost_buf(error)
    }
}
