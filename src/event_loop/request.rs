//! Per-operation logic, free of the ring: what SQE a request needs next, and what a CQE result
//! means for it (docs/behaviour.md section 2: every deadline that fires is `Timeout`, a negative
//! result is the kernel's errno, a zero where bytes were expected is end of file).
//!
//! | CQE class \ op                 | send, recv, read_at, write_at                       | sync, nop        |
//! |--------------------------------|-----------------------------------------------------|------------------|
//! | `-EAGAIN`/`-EINTR`             | requeue; `Timeout` if cancel was requested           | same             |
//! | `-ECANCELED`, cancel requested | `Timeout`                                           | `Timeout`        |
//! | other negative                 | `Os(errno)` (send: `EPIPE` is `UnexpectedEof`)      | `Os(errno)`      |
//! | `0`                            | `UnexpectedEof` (peer closed, end of file)          | `Ok`             |
//! | positive, request complete     | `Ok` (even if cancel was requested: success wins)   | `Ok`             |
//! | positive, still short          | advance; requeue, or `Timeout` if cancel requested  | n/a              |
//!
//! A recv that is not `exact` completes on its first positive result. A positive result larger
//! than what was asked is a kernel surprise: it fails the request with `Os(EIO)` instead of
//! panicking the loop: a kernel surprise fails the request concerned, never the loop.

use crate::buf::{IoBuf, IoBufMut};
use crate::error::Error;
use crate::fd::Fd;
use io_uring::{opcode, squeue, types};
use std::time::Instant;

/// The six operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Nop,
    Send,
    Recv,
    ReadAt,
    WriteAt,
    Sync,
}

impl OpKind {
    /// Whether a dropped caller lets the loop retire the request early: durable writes and
    /// syncs always run to completion.
    pub(crate) fn orphanable(self) -> bool {
        !matches!(self, OpKind::WriteAt | OpKind::Sync)
    }
}

/// The buffer a request carries.
#[derive(Debug)]
pub(crate) enum Buffer {
    None,
    Read(IoBuf),
    Write(IoBufMut),
}

/// One logical request, as stored in its slot.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) kind: OpKind,
    pub(crate) fd: Option<Fd>,
    pub(crate) buf: Buffer,
    /// File position of byte `start` (read_at, write_at).
    pub(crate) file_offset: u64,
    /// First buffer position to transfer (recv's `offset`, else 0).
    pub(crate) start: usize,
    /// One past the last buffer position to transfer.
    pub(crate) end: usize,
    /// Progress cursor: `start <= pos <= end`.
    pub(crate) pos: usize,
    /// recv: keep going until `end` (else complete on the first bytes).
    pub(crate) exact: bool,
    pub(crate) deadline: Option<Instant>,
    /// The terminal result: `Ok(position reached)` or the error.
    pub(crate) outcome: Option<Result<usize, Error>>,
}

impl Request {
    /// A slot's request when no request is in it.
    pub(crate) const EMPTY: Request = Request {
        kind: OpKind::Nop,
        fd: None,
        buf: Buffer::None,
        file_offset: 0,
        start: 0,
        end: 0,
        pos: 0,
        exact: false,
        deadline: None,
        outcome: None,
    };

    /// A fresh request; `end` is the transfer limit (buffer length for writes).
    pub(crate) fn new(
        kind: OpKind,
        fd: Option<Fd>,
        buf: Buffer,
        deadline: Option<Instant>,
    ) -> Self {
        Request {
            kind,
            fd,
            buf,
            deadline,
            ..Request::EMPTY
        }
    }

    /// The SQE that moves this request forward from its cursor, transferring at most `limit`
    /// bytes (`u32::MAX` but for injected short I/O).
    pub(crate) fn sqe(&mut self, user_data: u64, limit: u32) -> squeue::Entry {
        let fd = types::Fd(self.fd.as_ref().map_or(-1, Fd::as_raw_fd));
        let remaining = (self.end - self.pos).min(limit as usize) as u32;
        let at = self
            .file_offset
            .wrapping_add((self.pos - self.start) as u64);
        let entry = match (&mut self.buf, self.kind) {
            (Buffer::Read(buf), OpKind::Send) => {
                // SAFETY: the offset stays inside the buffer: pos <= end <= buf.len() (checked at the handle).
                let ptr = unsafe { buf.as_ptr().add(self.pos) };
                opcode::Send::new(fd, ptr, remaining)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            }
            (Buffer::Read(buf), OpKind::WriteAt) => {
                // SAFETY: the offset stays inside the buffer: pos <= end <= buf.len() (checked at the handle).
                let ptr = unsafe { buf.as_ptr().add(self.pos) };
                opcode::Write::new(fd, ptr, remaining).offset(at).build()
            }
            (Buffer::Write(buf), OpKind::Recv) => {
                // SAFETY: the offset stays inside the allocation: pos <= end <= capacity (checked at the handle).
                let ptr = unsafe { buf.as_mut_ptr().add(self.pos) };
                opcode::Recv::new(fd, ptr, remaining).build()
            }
            (Buffer::Write(buf), OpKind::ReadAt) => {
                // SAFETY: the offset stays inside the allocation: pos <= end <= capacity (checked at the handle).
                let ptr = unsafe { buf.as_mut_ptr().add(self.pos) };
                opcode::Read::new(fd, ptr, remaining).offset(at).build()
            }
            (_, OpKind::Sync) => opcode::Fsync::new(fd).build(),
            _ => opcode::Nop::new().build(),
        };
        entry.user_data(user_data)
    }

    /// Applies one op CQE result; `cancel_requested` says whether the deadline fired while the
    /// SQE was in the kernel. Returns true when the request is finished (`outcome` set), false
    /// when it needs another SQE (requeue).
    pub(crate) fn complete(&mut self, result: i32, cancel_requested: bool) -> bool {
        let outcome = match result {
            r if r == -libc::EAGAIN || r == -libc::EINTR => {
                if !cancel_requested {
                    return false;
                }
                Err(Error::Timeout)
            }
            r if r == -libc::ECANCELED && cancel_requested => Err(Error::Timeout),
            r if r == -libc::EPIPE && self.kind == OpKind::Send => Err(Error::UnexpectedEof),
            r if r < 0 => Err(Error::Os(-r)),
            0 if self.transfers() && self.pos < self.end => Err(Error::UnexpectedEof),
            n => return self.advance(n as usize, cancel_requested),
        };
        self.outcome = Some(outcome);
        true
    }

    /// A positive (or zero, for sync/nop) result: move the cursor, finish if complete.
    fn advance(&mut self, n: usize, cancel_requested: bool) -> bool {
        if !self.transfers() {
            self.outcome = Some(Ok(0));
            return true;
        }
        if n > self.end - self.pos {
            self.outcome = Some(Err(Error::Os(libc::EIO)));
            return true;
        }
        self.pos += n;
        let complete = self.pos == self.end || (self.kind == OpKind::Recv && !self.exact);
        if complete {
            self.outcome = Some(Ok(self.pos));
            return true;
        }
        if cancel_requested {
            self.outcome = Some(Err(Error::Timeout));
            return true;
        }
        false
    }

    /// Whether the op moves bytes (and so has a cursor).
    fn transfers(&self) -> bool {
        !matches!(self.kind, OpKind::Nop | OpKind::Sync)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: OpKind, end: usize) -> Request {
        let buf = match kind {
            OpKind::Send | OpKind::WriteAt => Buffer::Read(IoBuf::from(vec![7u8; end])),
            OpKind::Recv | OpKind::ReadAt => Buffer::Write(IoBufMut::with_capacity(end)),
            _ => Buffer::None,
        };
        Request {
            end,
            ..Request::new(kind, None, buf, None)
        }
    }

    const EAGAIN: i32 = -libc::EAGAIN;

    #[test]
    fn retryable_codes_requeue_unless_cancel_requested() {
        // Port of request.rs test 1 with the per-op Retry rows: EAGAIN/EWOULDBLOCK/EINTR retry;
        // 0, EINVAL and ETIMEDOUT do not; after a cancel request a retry becomes Timeout.
        for kind in [
            OpKind::Send,
            OpKind::Recv,
            OpKind::ReadAt,
            OpKind::WriteAt,
            OpKind::Sync,
        ] {
            for code in [-libc::EAGAIN, -libc::EWOULDBLOCK, -libc::EINTR] {
                let mut r = request(kind, 5);
                assert!(!r.complete(code, false), "{kind:?} {code} requeues");
                assert_eq!(r.outcome, None);
                assert!(r.complete(code, true));
                assert_eq!(r.outcome, Some(Err(Error::Timeout)), "{kind:?}");
            }
            let mut r = request(kind, 5);
            assert!(r.complete(-libc::EINVAL, false));
            assert_eq!(r.outcome, Some(Err(Error::Os(libc::EINVAL))));
            let mut r = request(kind, 5);
            assert!(r.complete(-libc::ETIMEDOUT, false));
            assert_eq!(r.outcome, Some(Err(Error::Os(libc::ETIMEDOUT))));
        }
    }

    #[test]
    fn send_paths() {
        // Port of test_active_send_paths: partial progress requeues; success wins over a cancel;
        // partial or retry after a cancel is Timeout; zero and errors fail.
        let mut r = request(OpKind::Send, 5);
        assert!(!r.complete(EAGAIN, false));
        assert!(!r.complete(2, false));
        assert_eq!(r.pos, 2);
        assert!(r.complete(1, true), "still short after a cancel request");
        assert_eq!(r.outcome, Some(Err(Error::Timeout)));

        let mut r = request(OpKind::Send, 5);
        assert!(r.complete(-libc::ECANCELED, true));
        assert_eq!(r.outcome, Some(Err(Error::Timeout)));

        let mut r = request(OpKind::Send, 5);
        assert!(!r.complete(3, false));
        assert!(r.complete(2, false));
        assert_eq!(r.outcome, Some(Ok(5)));

        let mut r = request(OpKind::Send, 5);
        assert!(
            r.complete(5, true),
            "a full success wins over a requested cancel"
        );
        assert_eq!(r.outcome, Some(Ok(5)));

        let mut r = request(OpKind::Send, 5);
        assert!(r.complete(0, false));
        assert_eq!(r.outcome, Some(Err(Error::UnexpectedEof)));
        let mut r = request(OpKind::Send, 5);
        assert!(r.complete(-libc::EIO, false));
        assert_eq!(r.outcome, Some(Err(Error::Os(libc::EIO))));
        let mut r = request(OpKind::Send, 5);
        assert!(r.complete(-libc::EPIPE, false));
        assert_eq!(r.outcome, Some(Err(Error::UnexpectedEof)), "closed peer");
        let mut r = request(OpKind::Send, 5);
        assert!(
            r.complete(-libc::ECANCELED, false),
            "ECANCELED without a cancel request is an error"
        );
        assert_eq!(r.outcome, Some(Err(Error::Os(libc::ECANCELED))));
    }

    #[test]
    fn recv_paths() {
        // Port of test_active_recv_paths: non-exact completes on the first bytes with the
        // cumulative position; exact loops; over-report fails the request instead of panicking.
        let mut r = request(OpKind::Recv, 5);
        assert!(r.complete(3, false));
        assert_eq!(r.outcome, Some(Ok(3)));

        let mut r = request(OpKind::Recv, 5);
        r.start = 2;
        r.pos = 2;
        assert!(r.complete(1, false));
        assert_eq!(r.outcome, Some(Ok(3)), "filled is offset + bytes received");

        let mut r = request(OpKind::Recv, 5);
        r.exact = true;
        assert!(!r.complete(3, false));
        assert!(r.complete(1, true));
        assert_eq!(r.outcome, Some(Err(Error::Timeout)));

        let mut r = request(OpKind::Recv, 5);
        r.exact = true;
        assert!(r.complete(5, true));
        assert_eq!(r.outcome, Some(Ok(5)));

        let mut r = request(OpKind::Recv, 5);
        assert!(r.complete(6, false));
        assert_eq!(r.outcome, Some(Err(Error::Os(libc::EIO))));
        let mut r = request(OpKind::Recv, 5);
        assert!(r.complete(0, false));
        assert_eq!(r.outcome, Some(Err(Error::UnexpectedEof)));
        let mut r = request(OpKind::Recv, 5);
        assert!(r.complete(-libc::EIO, false));
        assert_eq!(r.outcome, Some(Err(Error::Os(libc::EIO))));
    }

    #[test]
    fn read_write_sync_and_nop_paths() {
        // Ports of the read_at, write_at and sync rows: short I/O advances the file position;
        // EOF (even after progress) is UnexpectedEof; sync succeeds on any non-negative result.
        let mut r = request(OpKind::ReadAt, 5);
        r.file_offset = 100;
        assert!(!r.complete(2, false));
        assert_eq!(
            r.sqe(1, u32::MAX).get_opcode(),
            u32::from(opcode::Read::CODE)
        );
        assert!(r.complete(3, false));
        assert_eq!(r.outcome, Some(Ok(5)));

        let mut r = request(OpKind::ReadAt, 5);
        assert!(!r.complete(2, false));
        assert!(r.complete(0, false), "EOF after partial progress");
        assert_eq!(r.outcome, Some(Err(Error::UnexpectedEof)));

        let mut r = request(OpKind::WriteAt, 5);
        assert!(!r.complete(4, false));
        assert!(r.complete(1, false));
        assert_eq!(r.outcome, Some(Ok(5)));
        let mut r = request(OpKind::WriteAt, 5);
        assert!(r.complete(0, false));
        assert_eq!(r.outcome, Some(Err(Error::UnexpectedEof)));

        for (result, outcome) in [
            (0, Ok(0)),
            (1, Ok(0)),
            (-libc::EIO, Err(Error::Os(libc::EIO))),
            (-libc::EINVAL, Err(Error::Os(libc::EINVAL))),
        ] {
            let mut r = request(OpKind::Sync, 0);
            assert!(r.complete(result, false));
            assert_eq!(r.outcome, Some(outcome));
            let mut r = request(OpKind::Nop, 0);
            assert!(r.complete(result, false));
            assert_eq!(r.outcome, Some(outcome));
        }
        let mut r = request(OpKind::Sync, 0);
        assert!(r.complete(-libc::ECANCELED, true));
        assert_eq!(
            r.outcome,
            Some(Err(Error::Timeout)),
            "A5: every deadline is Timeout"
        );
    }

    #[test]
    fn sqe_targets_the_cursor() {
        // Short reads and writes must resume exactly where the kernel stopped.
        let mut r = request(OpKind::WriteAt, 8);
        r.file_offset = 4096;
        assert!(!r.complete(3, false));
        let sqe = r.sqe(42, u32::MAX);
        assert_eq!(sqe.get_user_data(), 42);
        assert_eq!(sqe.get_opcode(), u32::from(opcode::Write::CODE));
        assert!(OpKind::Send.orphanable() && OpKind::ReadAt.orphanable());
        assert!(!OpKind::WriteAt.orphanable() && !OpKind::Sync.orphanable());
    }
}
