//! `send_zc` and `send_vectored_zc`: `send` and `send_vectored` whose bytes the kernel sends from
//! the caller's buffers instead of copying them (`IORING_OP_SEND_ZC`, Linux 6.0;
//! `IORING_OP_SENDMSG_ZC`, 6.1).
//!
//! Each SQE gives two CQEs with its `user_data`: the result (bytes sent or an errno), with
//! `IORING_CQE_F_MORE` set when a notification follows, then the notification
//! (`IORING_CQE_F_NOTIF`) once the kernel no longer reads the buffer. The request keeps its SQE
//! in flight (its slot and buffers the loop's) from one to the other: the loop's
//! `event_loop::zero_copy` holds the result in the operation's [`Notice`] and applies it, as
//! `send`'s rules say, only at the notification. So at most one SQE per request is in the kernel,
//! a short send's continuation is staged after the previous SQE's notification, and a buffer
//! never comes back (or is freed) while the kernel may still read it.

use io_uring::{opcode, types};

use super::kernel::{sqe_len, Kernel, Sqe, Step};
use super::{Headers, MsgHeader, OpResult, Send, SendVectored, Work};
use crate::buf::IoBuf;
use crate::error::{BufError, Error};
use crate::event_loop::registry::Registry;
use crate::vectored::{IoBufs, VectorCell, Vectors};

/// The error of a zero-copy send the ring's kernel cannot run (no `SEND_ZC` before Linux 6.0,
/// no `SENDMSG_ZC` before 6.1): the errno a socket that cannot send zero-copy gives too.
const UNSUPPORTED: Error = Error::Os(libc::EOPNOTSUPP);

/// Where a zero-copy SQE stands between its two CQEs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    /// No CQE of the SQE in flight yet (or no SQE).
    Idle,
    /// Its result CQE came (the result kept here); the notification is to come.
    Announced(i32),
    /// Its notification came first (the kernel orders them the other way; kept for safety).
    Released,
}

impl Notice {
    /// A result CQE that announces a notification: the result to apply now if the notification
    /// already came, else `None` (kept until it comes).
    pub(crate) fn announced(&mut self, result: i32) -> Option<i32> {
        match std::mem::replace(self, Notice::Idle) {
            Notice::Released => Some(result),
            Notice::Idle | Notice::Announced(_) => {
                *self = Notice::Announced(result);
                None
            }
        }
    }

    /// The notification: the kernel let go of the buffer. The result to apply now, or `None`
    /// if its result CQE is still to come.
    pub(crate) fn notified(&mut self) -> Option<i32> {
        match std::mem::replace(self, Notice::Idle) {
            Notice::Announced(result) => Some(result),
            Notice::Idle | Notice::Released => {
                *self = Notice::Released;
                None
            }
        }
    }
}

impl Work {
    /// The notice of a zero-copy send (`None` for every other operation).
    #[inline]
    pub(crate) fn notice(&mut self) -> Option<&mut Notice> {
        match self {
            Work::SendZc(op) => Some(&mut op.notice),
            Work::SendVectoredZc(op) => Some(&mut op.notice),
            _ => None,
        }
    }
}

/// Sends the whole buffer without copying it ([`Handle::send_zc`](crate::Handle::send_zc)):
/// `send`'s cursor, one SQE at a time, each released by its notification.
#[derive(Debug)]
pub struct SendZc {
    pub(crate) send: Send,
    pub(crate) notice: Notice,
}

impl SendZc {
    /// The whole of `buf`.
    pub(crate) fn new(buf: IoBuf) -> Self {
        SendZc {
            send: Send::new(buf),
            notice: Notice::Idle,
        }
    }
}

impl Kernel for SendZc {
    type Output = IoBuf;
    type Error = BufError<IoBuf>;
    type Held = ();

    /// As `send`: an empty buffer is sent at once.
    #[inline]
    fn check(self, held: ()) -> Result<(Self, ()), OpResult<Self>> {
        let notice = self.notice;
        let (send, held) = self.send.check(held)?;
        Ok((SendZc { send, notice }, held))
    }

    /// `SEND_ZC` over the rest of the buffer, from the registered buffer when it is one of the
    /// loop's pool; `Os(EOPNOTSUPP)` without an SQE when the kernel has no `SEND_ZC`.
    fn sqe(&mut self, fd: types::Fd, limit: u32, reg: &Registry, _: &mut Headers<'_>) -> Sqe {
        if !reg.zero_copy.send {
            return Err(UNSUPPORTED);
        }
        self.notice = Notice::Idle;
        let send = &self.send;
        // SAFETY: pos <= end = the buffer's length (kept by `transfer`).
        let ptr = unsafe { send.buf.as_ptr().add(send.pos) };
        let index = reg.buf_index(send.buf.pool_slot());
        let entry = opcode::SendZc::new(fd, ptr, sqe_len(send.pos, send.end, limit))
            .flags(libc::MSG_NOSIGNAL)
            .zc_flags(reg.zero_copy.zc_flags())
            .buf_index(index)
            .build();
        Ok((entry, index.is_some()))
    }

    fn advance(&mut self, n: usize, cancel_requested: bool) -> Step {
        self.send.advance(n, cancel_requested)
    }

    /// As `send`: a closed peer is end of stream.
    fn error(errno: i32) -> Error {
        <Send as Kernel>::error(errno)
    }

    #[inline]
    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        self.send.output(outcome)
    }

    fn lost(error: Error) -> BufError<IoBuf> {
        <Send as Kernel>::lost(error)
    }
}

/// Sends every byte of its buffers without copying them
/// ([`Handle::send_vectored_zc`](crate::Handle::send_vectored_zc)): `send_vectored`'s cursor and
/// message header, one `SENDMSG_ZC` SQE at a time, each released by its notification.
#[derive(Debug)]
pub struct SendVectoredZc {
    pub(crate) send: SendVectored,
    pub(crate) notice: Notice,
}

impl SendVectoredZc {
    /// The buffers are still in the caller's future.
    pub(crate) fn new() -> Self {
        SendVectoredZc {
            send: SendVectored::new(),
            notice: Notice::Idle,
        }
    }
}

impl Kernel for SendVectoredZc {
    /// The buffers, whole.
    type Output = IoBufs;
    type Error = BufError<IoBufs>;
    type Held = IoBufs;

    /// As `send_vectored`: empty buffers (or none) complete at once.
    #[inline]
    fn check(self, held: IoBufs) -> Result<(Self, IoBufs), OpResult<Self>> {
        let notice = self.notice;
        let (send, held) = self.send.check(held)?;
        Ok((SendVectoredZc { send, notice }, held))
    }

    /// `SENDMSG_ZC` over the rest of the buffers; `Os(EOPNOTSUPP)` without an SQE when the
    /// kernel has no `SENDMSG_ZC`.
    fn sqe(&mut self, fd: types::Fd, limit: u32, reg: &Registry, headers: &mut Headers<'_>) -> Sqe {
        if !reg.zero_copy.send_msg {
            return Err(UNSUPPORTED);
        }
        self.notice = Notice::Idle;
        let send = &mut self.send;
        let header = headers.take(&mut send.msg)?;
        let hdr = header.prepare_send(&send.bufs, send.pos, limit as usize);
        let entry = opcode::SendMsgZc::new(fd, hdr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .ioprio(reg.zero_copy.zc_flags())
            .build();
        Ok((entry, false))
    }

    fn advance(&mut self, n: usize, cancel_requested: bool) -> Step {
        self.send.advance(n, cancel_requested)
    }

    /// As `send`: a closed peer is end of stream.
    fn error(errno: i32) -> Error {
        <Send as Kernel>::error(errno)
    }

    fn msg(&mut self) -> Option<&mut u16> {
        self.send.msg()
    }

    fn vectors(&mut self) -> Option<&mut Vectors> {
        self.send.vectors()
    }

    fn msg_done(&mut self, header: &MsgHeader) {
        self.send.msg_done(header);
    }

    #[inline]
    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        self.send.output(outcome)
    }

    fn lost(error: Error) -> BufError<IoBufs> {
        <SendVectored as Kernel>::lost(error)
    }

    fn attach(&mut self, held: IoBufs, cell: &VectorCell) {
        self.send.attach(held, cell);
    }

    fn unsubmitted(self, held: IoBufs, error: Error) -> OpResult<Self> {
        self.send.unsubmitted(held, error)
    }
}
