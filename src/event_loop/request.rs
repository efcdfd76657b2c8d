//! A request as its slot holds it, and what a CQE result means for it in general (what each
//! operation does is in `crate::op`) (docs/behaviour.md section 2: every deadline that fires is `Timeout`, a negative
//! result is the kernel's errno, a zero where bytes were expected is end of file).
//!
//! | CQE class \ op                 | send, recv, read_at, write_at                       | sync, nop        |
//! |--------------------------------|-----------------------------------------------------|------------------|
//! | `-EAGAIN`/`-EINTR` (and the operation's own retries, `Kernel::retries`) | requeue; `Timeout` if cancel was requested | same |
//! | `-ECANCELED`, cancel requested | `Timeout`                                           | `Timeout`        |
//! | other negative                 | `Os(errno)` (send: `EPIPE` is `UnexpectedEof`)      | `Os(errno)`      |
//! | `0`                            | `UnexpectedEof` (peer closed, end of file)          | `Ok`             |
//! | positive, request complete     | `Ok` (even if cancel was requested: success wins)   | `Ok`             |
//! | positive, still short          | advance; requeue, or `Timeout` if cancel requested  | n/a              |
//!
//! A recv that is not `exact` completes on its first positive result. A positive result larger
//! than what was asked is a kernel surprise: it fails the request with `Os(EIO)` instead of
//! panicking the loop: a kernel surprise fails the request concerned, never the loop.

use crate::error::Error;
use crate::event_loop::registry::Registry;
use crate::fd::Fd;
use crate::op::{Headers, OpKind, Work};
use io_uring::{squeue, types};
use std::time::Instant;

/// The process-wide instant deadlines are counted from: set before any loop's origin (see
/// [`Deadline`]).
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// The instant deadlines are counted from. A loop reads it before it takes its own origin, so
/// every origin is at or after it.
pub(crate) fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// A request's deadline in 8 bytes, not `Option<Instant>`'s 16 (which would push a request past
/// 128 bytes, and its moves from inline copies to `memcpy` calls): nanoseconds after
/// [`epoch`], plus one so that `None` takes no room. A deadline before the epoch is already past
/// for every loop, and is kept as the epoch itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline(std::num::NonZeroU64);

/// Nanoseconds from the epoch to `at` (0 before it).
pub(crate) fn since_epoch(at: Instant) -> u64 {
    let ns = at.saturating_duration_since(epoch()).as_nanos();
    u64::try_from(ns).unwrap_or(u64::MAX)
}

impl Deadline {
    /// The deadline at `at`.
    #[inline]
    pub(crate) fn new(at: Instant) -> Deadline {
        Deadline(std::num::NonZeroU64::MIN.saturating_add(since_epoch(at)))
    }

    /// Nanoseconds from a loop's origin (given as nanoseconds after the epoch, see
    /// [`since_epoch`]) to the deadline; 0 if it is not after the origin.
    #[inline]
    pub(crate) fn ns_after(self, origin_ns: u64) -> u64 {
        (self.0.get() - 1).saturating_sub(origin_ns)
    }
}

/// A request's next SQE as the loop pushes it: the operation's [`Sqe`](crate::op::Sqe) (its
/// entry, tagged in place with the request's `user_data` and, for a registered descriptor,
/// `FIXED_FILE`, and whether it names a registered buffer; or the error that ends the request
/// without one), and whether it names a registered file (the `fixed_*` counters). The entry
/// stays where the operation built it until the push copies it into the SQ: no copies through
/// wrappers in between.
pub(crate) struct Staged {
    pub(crate) sqe: crate::op::Sqe,
    pub(crate) fixed_file: bool,
}

/// The SQE `build` makes for descriptor `fd` (named as `reg` says: its registered index if
/// `reg` holds it, else its number, `-1` for none), tagged `user_data`: a request's, wherever
/// its operation lies (its slot, or the future holding it).
#[inline(always)]
pub(crate) fn sqe_for(
    fd: Option<&Fd>,
    user_data: u64,
    reg: &Registry,
    build: impl FnOnce(types::Fd) -> crate::op::Sqe,
) -> Staged {
    let (fd, fixed_file) = sqe_fd(fd, reg);
    staged(build(fd), fixed_file, user_data)
}

/// How an SQE names descriptor `fd`: its index in `reg` if this loop registered it (true),
/// else its number (`-1` for none).
#[inline(always)]
pub(crate) fn sqe_fd(fd: Option<&Fd>, reg: &Registry) -> (types::Fd, bool) {
    match fd {
        None => (types::Fd(-1), false),
        Some(fd) => match reg.file_index(fd) {
            Some(index) => (types::Fd(index as i32), true),
            None => (types::Fd(fd.as_raw_fd()), false),
        },
    }
}

/// The SQE an operation built (`sqe`) for the descriptor [`sqe_fd`] gave (`fixed_file`),
/// tagged `user_data` in place.
#[inline(always)]
pub(crate) fn staged(mut sqe: crate::op::Sqe, fixed_file: bool, user_data: u64) -> Staged {
    if let Ok((entry, _)) = &mut sqe {
        let tagged = entry.clone().user_data(user_data);
        *entry = match fixed_file {
            true => tagged.flags(squeue::Flags::FIXED_FILE),
            false => tagged,
        };
    }
    Staged { sqe, fixed_file }
}

/// One logical request, as stored in its slot.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) work: Work,
    pub(crate) fd: Option<Fd>,
    pub(crate) deadline: Option<Deadline>,
    /// The terminal result: `Ok(position reached, or the operation's value)` or the error.
    pub(crate) outcome: Option<Result<usize, Error>>,
}

// A request is moved into and out of its slot on every operation: at 128 bytes the moves are
// inline copies; past it, `memcpy` calls (measured: +70 instructions per nop).
static_assertions::const_assert!(std::mem::size_of::<Request>() <= 128);

impl Drop for Request {
    /// What an outcome nobody took owns is released (an accepted connection is closed).
    fn drop(&mut self) {
        if let Some(outcome) = self.outcome {
            self.work.discard(outcome);
        }
    }
}

impl Request {
    /// A slot's request when no request is in it.
    pub(crate) const EMPTY: Request = Request {
        work: Work::EMPTY,
        fd: None,
        deadline: None,
        outcome: None,
    };

    /// Writes a fresh request into `r` field by field, so no whole request is built on the
    /// stack and copied (measured: a `Recv` went through four stack copies on its way in).
    ///
    /// # Safety
    /// `r` is valid for writes, and what it holds owns nothing (it is overwritten, not dropped).
    #[inline(always)]
    pub(crate) unsafe fn write_fresh(
        r: *mut Request,
        work: Work,
        fd: Option<Fd>,
        deadline: Option<Instant>,
    ) {
        // SAFETY: the caller's contract; each write targets one field of `*r`.
        unsafe {
            std::ptr::addr_of_mut!((*r).work).write(work);
            std::ptr::addr_of_mut!((*r).fd).write(fd);
            std::ptr::addr_of_mut!((*r).deadline).write(deadline.map(Deadline::new));
            std::ptr::addr_of_mut!((*r).outcome).write(None);
        }
    }

    /// A fresh request (tests build requests with it; submissions use `write_fresh`).
    #[cfg(test)]
    pub(crate) fn new(work: Work, fd: Option<Fd>, deadline: Option<Instant>) -> Self {
        Request {
            work,
            fd,
            deadline: deadline.map(Deadline::new),
            outcome: None,
        }
    }

    /// True when it owns nothing (no descriptor, no buffer, no accepted socket): dropping it
    /// runs no code.
    pub(crate) fn is_empty(&self) -> bool {
        self.fd.is_none() && self.work.kind() == OpKind::Nop
    }

    /// The operation.
    #[inline]
    pub(crate) fn kind(&self) -> OpKind {
        self.work.kind()
    }

    /// The SQE that moves this request forward from its cursor, transferring at most `limit`
    /// bytes (`u32::MAX` but for injected short I/O), tagged `user_data`. A descriptor or pool
    /// buffer that `reg` holds is named by its registered index; an operation that needs a
    /// message header takes one from `headers`. `Err`: the request ends without an SQE.
    #[inline]
    pub(crate) fn sqe(
        &mut self,
        user_data: u64,
        limit: u32,
        reg: &Registry,
        headers: &mut Headers<'_>,
    ) -> Staged {
        self.sqe_with(user_data, reg, |work, fd| work.sqe(fd, limit, reg, headers))
    }

    /// [`sqe`](Self::sqe) for a request known to hold an `O`: built without matching on the
    /// kind.
    ///
    /// # Safety
    /// The request's work is an `O` (it was made from one).
    #[inline]
    pub(crate) unsafe fn sqe_of<O: crate::op::Operation>(
        &mut self,
        user_data: u64,
        limit: u32,
        reg: &Registry,
        headers: &mut Headers<'_>,
    ) -> Staged {
        self.sqe_with(user_data, reg, |work, fd| {
            // SAFETY: the caller's contract.
            unsafe { O::get(work) }.sqe(fd, limit, reg, headers)
        })
    }

    /// The SQE `build` makes from the work for the request's descriptor, named as `reg` says,
    /// tagged `user_data`.
    #[inline(always)]
    fn sqe_with(
        &mut self,
        user_data: u64,
        reg: &Registry,
        build: impl FnOnce(&mut Work, types::Fd) -> crate::op::Sqe,
    ) -> Staged {
        let work = &mut self.work;
        sqe_for(self.fd.as_ref(), user_data, reg, |fd| build(work, fd))
    }

    /// The message header a request holds while in the kernel.
    pub(crate) fn held_msg(&mut self) -> Option<u16> {
        self.work.held_msg()
    }

    /// After its CQE: lets the operation read the message header it held and gives the header
    /// back (returns its index), if it held one.
    pub(crate) fn msg_done(&mut self, headers: &[crate::op::MsgHeader]) -> Option<u16> {
        self.work.msg_done(headers)
    }

    /// Applies one op CQE result; `cancel_requested` says whether the deadline fired while the
    /// SQE was in the kernel. Returns true when the request is finished (`outcome` set), false
    /// when it needs another SQE (requeue).
    #[inline]
    pub(crate) fn complete(&mut self, result: i32, cancel_requested: bool) -> bool {
        match self.work.complete(result, cancel_requested) {
            Some(outcome) => {
                self.outcome = Some(outcome);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::{IoBuf, IoBufMut};
    use crate::op::{self, RawAddr};
    use io_uring::opcode;

    fn request(kind: OpKind, end: usize) -> Request {
        let addr = || RawAddr::new(([127, 0, 0, 1], 9).into());
        let work: Work = match kind {
            OpKind::Nop => op::Nop.into(),
            OpKind::Sync => op::Sync { data_only: false }.into(),
            OpKind::Accept => op::Accept.into(),
            OpKind::Connect => op::Connect { addr: addr() }.into(),
            OpKind::SendTo => op::SendTo {
                buf: IoBuf::from(vec![7u8; end]),
                addr: addr(),
            }
            .into(),
            OpKind::RecvFrom => op::RecvFrom::new(IoBufMut::with_capacity(end)).into(),
            OpKind::Send => op::Send::new(IoBuf::from(vec![7u8; end])).into(),
            OpKind::WriteAt => op::WriteAt::new(0, IoBuf::from(vec![7u8; end])).into(),
            OpKind::Recv => op::Recv::new(IoBufMut::with_capacity(end)).into(),
            OpKind::ReadAt => op::ReadAt {
                buf: IoBufMut::with_capacity(end),
                at: 0,
                pos: 0,
                end,
                exact: true,
            }
            .into(),
            OpKind::SendVectored => {
                let mut op = op::SendVectored::new();
                op.end = end;
                op.into()
            }
            OpKind::WriteAtVectored => {
                let mut op = op::WriteAtVectored::new(0);
                op.end = end;
                op.into()
            }
            OpKind::Poll => op::Poll {
                events: op::Readiness::READABLE,
            }
            .into(),
            OpKind::Sleep => op::Sleep.into(),
            OpKind::AcceptMulti => op::AcceptMulti::new().into(),
            OpKind::RecvMulti => {
                let ring: &'static crate::BufRing<2, 8> = Box::leak(Box::default());
                op::RecvMulti::new(ring, 0).into()
            }
            OpKind::Next => op::Next {
                stream: 0,
                ring: None,
                gone: false,
            }
            .into(),
            OpKind::Post => {
                let ring = std::fs::File::open("/dev/null").unwrap();
                let inbox = crate::mailbox::Inbox::new(ring.into(), 8);
                let mailbox = crate::Mailbox::new(std::sync::Arc::new(inbox));
                op::Post::new(&mailbox, 7).into()
            }
            OpKind::RecvMessage => op::RecvMessage { value: 0 }.into(),
            OpKind::SendZc => op::SendZc::new(IoBuf::from(vec![7u8; end])).into(),
            OpKind::SendVectoredZc => {
                let mut op = op::SendVectoredZc::new();
                op.send.end = end;
                op.into()
            }
        };
        Request::new(work, None, None)
    }

    /// The operation of `r`, as the type it is.
    fn as_op<O: op::Operation>(r: &mut Request) -> &mut O {
        assert_eq!(r.kind(), O::KIND);
        // SAFETY: checked above: `r` holds an `O`.
        unsafe { r.work.get_mut::<O>() }
    }

    /// The cursor of a send or recv.
    fn pos(r: &mut Request) -> usize {
        match r.kind() {
            OpKind::Send => as_op::<op::Send>(r).pos,
            _ => as_op::<op::Recv>(r).pos,
        }
    }

    /// Sets recv's `exact`.
    fn set_exact(r: &mut Request) {
        as_op::<op::Recv>(r).exact = true;
    }

    fn set_at(r: &mut Request, offset: u64) {
        match r.kind() {
            OpKind::ReadAt => as_op::<op::ReadAt>(r).at = offset,
            _ => as_op::<op::WriteAt>(r).at = offset,
        }
    }

    fn set_read_exact(r: &mut Request, value: bool) {
        as_op::<op::ReadAt>(r).exact = value;
    }

    /// An SQE the loop would push, taken apart.
    struct Pushed {
        entry: squeue::Entry,
        fixed_file: bool,
        fixed_buffer: bool,
    }

    /// The SQE of `r` with no message header to give.
    fn stage(r: &mut Request, user_data: u64, reg: &Registry) -> Pushed {
        let mut free = heapless::Vec::<u16, 1>::new();
        let mut headers = op::Headers::new(&mut [], free.as_mut_view());
        let staged = r.sqe(user_data, u32::MAX, reg, &mut headers);
        let (entry, fixed_buffer) = staged.sqe.expect("no message header needed");
        Pushed {
            entry,
            fixed_file: staged.fixed_file,
            fixed_buffer,
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
        assert_eq!(pos(&mut r), 2);
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
        as_op::<op::Recv>(&mut r).pos = 2; // recv at offset 2
        assert!(r.complete(1, false));
        assert_eq!(r.outcome, Some(Ok(3)), "filled is offset + bytes received");

        let mut r = request(OpKind::Recv, 5);
        set_exact(&mut r);
        assert!(!r.complete(3, false));
        assert!(r.complete(1, true));
        assert_eq!(r.outcome, Some(Err(Error::Timeout)));

        let mut r = request(OpKind::Recv, 5);
        set_exact(&mut r);
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
        set_at(&mut r, 100);
        assert!(!r.complete(2, false));
        assert_eq!(
            stage(&mut r, 1, &Registry::NONE).entry.get_opcode(),
            u32::from(opcode::Read::CODE)
        );
        assert!(r.complete(3, false));
        assert_eq!(r.outcome, Some(Ok(5)));

        let mut r = request(OpKind::ReadAt, 5);
        assert!(!r.complete(2, false));
        assert!(r.complete(0, false), "EOF after partial progress");
        assert_eq!(r.outcome, Some(Err(Error::UnexpectedEof)));

        // read_some_at: the first bytes, or end of file, are the answer.
        let mut r = request(OpKind::ReadAt, 5);
        set_read_exact(&mut r, false);
        assert!(r.complete(2, false), "a short read ends a non-exact read");
        assert_eq!(r.outcome, Some(Ok(2)));
        let mut r = request(OpKind::ReadAt, 5);
        set_read_exact(&mut r, false);
        assert!(r.complete(0, false));
        assert_eq!(r.outcome, Some(Ok(0)), "end of file is Ok(0)");
        let mut r = request(OpKind::ReadAt, 5);
        set_read_exact(&mut r, false);
        assert!(!r.complete(-libc::EAGAIN, false), "EAGAIN still resubmits");

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
    fn sync_data_sets_the_datasync_flag() {
        // The SQE's op flags (byte 28 of the 64-byte io_uring_sqe) carry IORING_FSYNC_DATASYNC
        // for sync_data only.
        let flags = |data_only| {
            let mut r = Request::new(op::Sync { data_only }.into(), None, None);
            let sqe = stage(&mut r, 1, &Registry::NONE).entry;
            assert_eq!(sqe.get_opcode(), u32::from(opcode::Fsync::CODE));
            // SAFETY: `squeue::Entry` is a transparent wrapper of the 64-byte `io_uring_sqe`.
            let bytes: [u8; 64] = unsafe { std::mem::transmute(sqe) };
            u32::from_ne_bytes(bytes[28..32].try_into().unwrap())
        };
        assert_eq!(flags(false), 0);
        assert_eq!(flags(true), 1, "IORING_FSYNC_DATASYNC");
    }

    #[test]
    fn registered_files_and_pool_buffers_get_the_fixed_forms() {
        let pool = crate::BufPool::<1, 64>::allocate();
        let file = Fd::from(std::sync::Arc::new(
            std::fs::File::open("/dev/zero").unwrap(),
        ));
        let mut reg = Registry::NONE;
        let fixed = reg.add_file(&file);
        reg.set_pool(pool.id());
        let flags = |sqe: squeue::Entry| {
            // SAFETY: `squeue::Entry` is a transparent wrapper of the 64-byte `io_uring_sqe`;
            // byte 1 is `flags`, bytes 4..8 `fd`.
            let bytes: [u8; 64] = unsafe { std::mem::transmute(sqe) };
            (
                bytes[1],
                i32::from_ne_bytes(bytes[4..8].try_into().unwrap()),
            )
        };
        let fixed_file = squeue::Flags::FIXED_FILE.bits();

        let work = op::ReadAt {
            buf: pool.take().unwrap(),
            at: 0,
            pos: 0,
            end: 8,
            exact: true,
        };
        let mut r = Request::new(work.into(), Some(fixed.clone()), None);
        let staged = stage(&mut r, 1, &reg);
        assert_eq!((staged.fixed_file, staged.fixed_buffer), (true, true));
        let sqe = staged.entry;
        assert_eq!(sqe.get_opcode(), u32::from(opcode::ReadFixed::CODE));
        assert_eq!(flags(sqe), (fixed_file, 0), "index 0, IOSQE_FIXED_FILE");
        // Unregistered: plain opcode, plain descriptor.
        let sqe = stage(&mut r, 1, &Registry::NONE).entry;
        assert_eq!(sqe.get_opcode(), u32::from(opcode::Read::CODE));
        assert_eq!(flags(sqe), (0, file.as_raw_fd()));
        // A heap buffer on a registered file: plain opcode, fixed file.
        let mut r = request(OpKind::WriteAt, 4);
        r.fd = Some(fixed);
        let staged = stage(&mut r, 1, &reg);
        assert_eq!((staged.fixed_file, staged.fixed_buffer), (true, false));
        assert_eq!(staged.entry.get_opcode(), u32::from(opcode::Write::CODE));
        assert_eq!(flags(staged.entry), (fixed_file, 0));
    }

    #[test]
    fn sqe_targets_the_cursor() {
        // Short reads and writes must resume exactly where the kernel stopped.
        let mut r = request(OpKind::WriteAt, 8);
        set_at(&mut r, 4096);
        assert!(!r.complete(3, false));
        let sqe = stage(&mut r, 42, &Registry::NONE).entry;
        assert_eq!(sqe.get_user_data(), 42);
        assert_eq!(sqe.get_opcode(), u32::from(opcode::Write::CODE));
        assert!(
            OpKind::Send.dropped().orphanable(false) && OpKind::ReadAt.dropped().orphanable(false)
        );
        assert!(
            !OpKind::WriteAt.dropped().orphanable(false)
                && !OpKind::Sync.dropped().orphanable(false)
        );
        // With cancel_on_drop a send runs to completion; reads are still retired.
        assert!(
            !OpKind::Send.dropped().orphanable(true) && !OpKind::SendTo.dropped().orphanable(true)
        );
        assert!(
            OpKind::ReadAt.dropped().orphanable(true) && OpKind::Connect.dropped().orphanable(true)
        );
    }

    #[test]
    fn accept_reports_the_descriptor_and_connect_the_kernels_answer() {
        // accept: a non-negative result is the new descriptor; connect: 0 is Ok, a negative one
        // the errno; a retry is resubmitted, and becomes Timeout once a cancel was requested.
        let mut r = request(OpKind::Accept, 0);
        assert!(r.complete(7, false));
        assert_eq!(r.outcome, Some(Ok(7)));
        r.outcome = None; // the test takes the "descriptor": nothing for Drop to close
        let mut r = request(OpKind::Accept, 0);
        assert!(!r.complete(-libc::EAGAIN, false));
        assert!(r.complete(-libc::EAGAIN, true));
        assert_eq!(r.outcome, Some(Err(Error::Timeout)));
        let mut r = request(OpKind::Connect, 0);
        assert!(r.complete(0, false));
        assert_eq!(r.outcome, Some(Ok(0)));
        let mut r = request(OpKind::Connect, 0);
        assert!(r.complete(-libc::ECONNREFUSED, false));
        assert_eq!(r.outcome, Some(Err(Error::Os(libc::ECONNREFUSED))));
        assert_eq!(
            stage(&mut r, 3, &Registry::NONE).entry.get_opcode(),
            u32::from(opcode::Connect::CODE)
        );
        assert!(OpKind::Accept.dropped().cancelled() && !OpKind::Connect.dropped().cancelled());
    }

    #[test]
    fn datagrams_report_their_length_zero_included_and_addresses_round_trip() {
        // A datagram's result is its length; an empty datagram is not end of file.
        for kind in [OpKind::SendTo, OpKind::RecvFrom] {
            let mut r = request(kind, 8);
            assert!(r.complete(0, false));
            assert_eq!(r.outcome, Some(Ok(0)), "{kind:?}");
            let mut r = request(kind, 8);
            assert!(r.complete(5, false));
            assert_eq!(r.outcome, Some(Ok(5)), "{kind:?}");
        }
        for addr in ["127.0.0.1:4242", "[::1]:9", "[fe80::1%3]:80"] {
            let addr: std::net::SocketAddr = addr.parse().unwrap();
            assert_eq!(RawAddr::new(addr).to_socket_addr(), addr);
        }
        assert_eq!(
            RawAddr::EMPTY.to_socket_addr(),
            std::net::SocketAddr::from(([0, 0, 0, 0], 0))
        );
    }
}
