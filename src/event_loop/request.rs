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
use crate::event_loop::registry::Registry;
use crate::fd::Fd;
use crate::vectored::{Vectors, MAX_IOVECS};
use io_uring::{opcode, squeue, types};
use std::time::Instant;

/// The ten kinds of request the loop tells apart. `read_some_at` is a `ReadAt`, `sync_data` a
/// `Sync`, and the vectored forms are a `Send` and a `WriteAt` ([`Work`] keeps them apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Nop,
    Send,
    Recv,
    ReadAt,
    WriteAt,
    Sync,
    Accept,
    Connect,
    SendTo,
    RecvFrom,
}

impl OpKind {
    /// Whether a dropped caller lets the loop retire the request early, at its next completion
    /// (semantics A9): durable writes and syncs always run to completion, and with
    /// `cancel_on_drop` sends do too (A16: what is cancelled is what only takes or waits; a send
    /// is finished whole, since part of it may be on the wire).
    pub(crate) fn orphanable(self, cancel_on_drop: bool) -> bool {
        match self {
            OpKind::WriteAt | OpKind::Sync => false,
            OpKind::Send | OpKind::SendTo => !cancel_on_drop,
            _ => true,
        }
    }

    /// Whether dropping its future cancels it in the kernel when `Config::cancel_on_drop` is on:
    /// requests that only read or wait (docs/behaviour.md section 4 lists them); a send is not,
    /// since part of it may already be on the wire.
    pub(crate) fn cancelled_on_drop(self) -> bool {
        matches!(
            self,
            OpKind::Recv | OpKind::ReadAt | OpKind::Nop | OpKind::Accept | OpKind::RecvFrom
        )
    }
}

/// What a request does: the operation, the buffer it needs (inside the variant, so a request
/// cannot pair an operation with the wrong buffer) and its progress. Transfers move bytes
/// `[pos, end)` of their buffer; `pos` advances with each short transfer.
#[derive(Debug)]
pub(crate) enum Work {
    Nop,
    /// `fsync`, or `fdatasync` when `data_only`.
    Sync {
        data_only: bool,
    },
    /// `buf[pos..end]` still to send (`end` = the buffer's length).
    Send {
        buf: IoBuf,
        pos: usize,
        end: usize,
    },
    /// `buf[pos..end]` still to write, at file offset `at + pos`.
    WriteAt {
        buf: IoBuf,
        at: u64,
        pos: usize,
        end: usize,
    },
    /// Receive into `buf[pos..end]`; `pos` starts at the caller's offset. Not `exact`: done at the
    /// first bytes.
    Recv {
        buf: IoBufMut,
        pos: usize,
        end: usize,
        exact: bool,
    },
    /// Read into `buf[pos..end]` from file offset `at + pos`. Not `exact`: done at the first
    /// bytes or at end of file (pread semantics).
    ReadAt {
        buf: IoBufMut,
        at: u64,
        pos: usize,
        end: usize,
        exact: bool,
    },
    /// Accept a connection (`accept4` with `SOCK_CLOEXEC`); the result is the new descriptor.
    Accept,
    /// Connect to `addr`, kept here (stable) until the CQE.
    Connect {
        addr: RawAddr,
    },
    /// Send the whole datagram `buf` to `addr` (kept here until the CQE).
    SendTo {
        buf: IoBuf,
        addr: RawAddr,
    },
    /// Send bytes `pos..end` of `bufs` (the slot's vector cell; `end` = their total) with
    /// `sendmsg`; while in the kernel it uses message header `msg` of the loop's table.
    SendVectored {
        bufs: Vectors,
        pos: usize,
        end: usize,
        msg: u16,
    },
    /// Write bytes `pos..end` of `bufs` at file offset `at + pos` (`writev`, with the iovecs of
    /// message header `msg` while in the kernel).
    WriteAtVectored {
        bufs: Vectors,
        at: u64,
        pos: usize,
        end: usize,
        msg: u16,
    },
    /// Receive one datagram into `buf` (up to its capacity); `from` gets the sender's address.
    /// While in the kernel it uses message header `msg` of the loop's table.
    RecvFrom {
        buf: IoBufMut,
        from: RawAddr,
        msg: u16,
    },
}

/// An SQE, and which registered resources it names (for the `fixed_*` counters).
pub(crate) struct Staged {
    pub(crate) entry: squeue::Entry,
    pub(crate) fixed_file: bool,
    pub(crate) fixed_buffer: bool,
}

impl Staged {
    /// `entry` for request `user_data`; `fixed_file`: its descriptor field is a registered-file
    /// index (`IOSQE_FIXED_FILE`).
    fn new(entry: squeue::Entry, user_data: u64, fixed_file: bool, fixed_buffer: bool) -> Self {
        let entry = if fixed_file {
            entry.flags(squeue::Flags::FIXED_FILE)
        } else {
            entry
        };
        Staged {
            entry: entry.user_data(user_data),
            fixed_file,
            fixed_buffer,
        }
    }
}

/// `RecvFrom::msg` when no message header is held.
pub(crate) const NO_MSG: u16 = u16::MAX;

/// What `recvmsg` needs in stable memory while a `recv_from` is in the kernel: the header, its one
/// iovec and room for the sender's address. The loop keeps `RING` of them in its table.
#[repr(C)]
pub(crate) struct MsgHeader {
    hdr: libc::msghdr,
    /// One for a `recv_from`; up to all of them for a vectored request.
    iovs: [libc::iovec; MAX_IOVECS],
    name: RawAddr,
}

impl MsgHeader {
    /// Zeroed (pointers null).
    pub(crate) const fn new() -> Self {
        // SAFETY: msghdr, iovec and RawAddr are plain data for which all-zero bytes are valid
        // (null pointers, zero lengths).
        unsafe { std::mem::zeroed() }
    }

    /// Points the header at `buf`'s whole capacity and at this header's address room; returns
    /// the header for the SQE. `self` and `buf` must stay in place until the CQE.
    fn prepare(&mut self, buf: &mut IoBufMut) -> *mut libc::msghdr {
        self.name = RawAddr::EMPTY;
        self.iovs[0] = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.capacity(),
        };
        // SAFETY: zeroed msghdr is valid; the fields set below are all recvmsg reads.
        self.hdr = unsafe { std::mem::zeroed() };
        self.hdr.msg_name = self.name.storage.as_mut_ptr().cast();
        self.hdr.msg_namelen = std::mem::size_of_val(&self.name.storage) as u32;
        self.hdr.msg_iov = self.iovs.as_mut_ptr();
        self.hdr.msg_iovlen = 1;
        &mut self.hdr
    }

    /// Points the iovecs at bytes `skip..` of `bufs` (at most `limit`); returns the iovec array
    /// and how many it holds. `self` and the buffers must stay in place until the CQE.
    fn prepare_iovecs(
        &mut self,
        bufs: &Vectors,
        skip: usize,
        limit: usize,
    ) -> (*const libc::iovec, u32) {
        let used = bufs.fill_iovecs(&mut self.iovs, skip, limit);
        (self.iovs.as_ptr(), used as u32)
    }

    /// A `sendmsg` header (no address) over bytes `skip..` of `bufs`, at most `limit`.
    fn prepare_send(&mut self, bufs: &Vectors, skip: usize, limit: usize) -> *const libc::msghdr {
        let (_, used) = self.prepare_iovecs(bufs, skip, limit);
        // SAFETY: zeroed msghdr is valid (no name, no control data).
        self.hdr = unsafe { std::mem::zeroed() };
        self.hdr.msg_iov = self.iovs.as_mut_ptr();
        self.hdr.msg_iovlen = used as _;
        &self.hdr
    }

    /// The sender's address the kernel wrote (after the CQE).
    fn sender(&self) -> RawAddr {
        self.name
    }
}

/// A socket address in the kernel's layout (`sockaddr_in` or `sockaddr_in6`), inline; its
/// length follows from its family (so that a datagram request still fits a slot's 64 bytes).
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct RawAddr {
    /// Room for a `sockaddr_in6` (28 bytes), 4-aligned like it.
    storage: [u32; 7],
}

impl RawAddr {
    /// No address (family 0).
    pub(crate) const EMPTY: RawAddr = RawAddr { storage: [0; 7] };

    fn family(&self) -> i32 {
        // SAFETY: the storage starts with a sockaddr's family field (zero when empty).
        i32::from(unsafe { *self.storage.as_ptr().cast::<libc::sa_family_t>() })
    }

    /// The length of the sockaddr stored (0 for an unknown family).
    fn len(&self) -> u32 {
        match self.family() {
            libc::AF_INET => std::mem::size_of::<libc::sockaddr_in>() as u32,
            libc::AF_INET6 => std::mem::size_of::<libc::sockaddr_in6>() as u32,
            _ => 0,
        }
    }

    /// The address as std's, if it is an IPv4 or IPv6 one (the unspecified `0.0.0.0:0` for
    /// another family, such as a Unix datagram socket's sender).
    pub(crate) fn to_socket_addr(self) -> std::net::SocketAddr {
        // A sender shorter than its family's sockaddr left zeros (the room is cleared first).
        match self.family() {
            libc::AF_INET => {
                // SAFETY: a sockaddr_in fits the storage; its bytes are the kernel's or zeros.
                let sin = unsafe { *self.storage.as_ptr().cast::<libc::sockaddr_in>() };
                let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
                (ip, u16::from_be(sin.sin_port)).into()
            }
            libc::AF_INET6 => {
                // SAFETY: a sockaddr_in6 fits the storage; its bytes are the kernel's or zeros.
                let sin6 = unsafe { *self.storage.as_ptr().cast::<libc::sockaddr_in6>() };
                std::net::SocketAddrV6::new(
                    std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    u32::from_be(sin6.sin6_flowinfo),
                    sin6.sin6_scope_id,
                )
                .into()
            }
            _ => ([0, 0, 0, 0], 0).into(),
        }
    }

    pub(crate) fn new(addr: std::net::SocketAddr) -> Self {
        let mut raw = RawAddr::EMPTY;
        let ptr = raw.storage.as_mut_ptr();
        match addr {
            std::net::SocketAddr::V4(v4) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(v4.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: 16 bytes, 4-aligned, into a 28-byte 4-aligned buffer.
                unsafe { ptr.cast::<libc::sockaddr_in>().write(sin) };
            }
            std::net::SocketAddr::V6(v6) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: v6.flowinfo().to_be(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: v6.ip().octets(),
                    },
                    sin6_scope_id: v6.scope_id(),
                };
                // SAFETY: 28 bytes, 4-aligned, into a 28-byte 4-aligned buffer.
                unsafe { ptr.cast::<libc::sockaddr_in6>().write(sin6) };
            }
        }
        raw
    }

    fn as_ptr(&self) -> *const libc::sockaddr {
        self.storage.as_ptr().cast()
    }
}

impl std::fmt::Debug for RawAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawAddr({})", self.to_socket_addr())
    }
}

impl Work {
    /// The operation, without its data.
    pub(crate) fn kind(&self) -> OpKind {
        match self {
            Work::Nop => OpKind::Nop,
            Work::Sync { .. } => OpKind::Sync,
            Work::Accept => OpKind::Accept,
            Work::Connect { .. } => OpKind::Connect,
            Work::SendTo { .. } => OpKind::SendTo,
            Work::RecvFrom { .. } => OpKind::RecvFrom,
            // A vectored request follows its single-buffer form's rules (orphans, cancel on
            // drop, EPIPE, faults).
            Work::Send { .. } | Work::SendVectored { .. } => OpKind::Send,
            Work::WriteAt { .. } | Work::WriteAtVectored { .. } => OpKind::WriteAt,
            Work::Recv { .. } => OpKind::Recv,
            Work::ReadAt { .. } => OpKind::ReadAt,
        }
    }

    /// The progress cursor and its end, for operations that move bytes.
    fn cursor(&mut self) -> Option<(&mut usize, usize)> {
        match self {
            Work::Nop
            | Work::Sync { .. }
            | Work::Accept
            | Work::Connect { .. }
            | Work::SendTo { .. }
            | Work::RecvFrom { .. } => None,
            Work::Send { pos, end, .. }
            | Work::WriteAt { pos, end, .. }
            | Work::SendVectored { pos, end, .. }
            | Work::WriteAtVectored { pos, end, .. }
            | Work::Recv { pos, end, .. }
            | Work::ReadAt { pos, end, .. } => Some((pos, *end)),
        }
    }

    /// Bytes transferred so far (the cursor, from the start of the buffer for read_at).
    pub(crate) fn progress(&self) -> usize {
        match self {
            Work::Nop
            | Work::Sync { .. }
            | Work::Accept
            | Work::Connect { .. }
            | Work::SendTo { .. }
            | Work::RecvFrom { .. } => 0,
            Work::Send { pos, .. }
            | Work::WriteAt { pos, .. }
            | Work::SendVectored { pos, .. }
            | Work::WriteAtVectored { pos, .. }
            | Work::Recv { pos, .. }
            | Work::ReadAt { pos, .. } => *pos,
        }
    }

    /// The read-only buffer of a send or write. The handle pairs every write result with a
    /// send or write request, so any other kind here is a bug of the crate's.
    pub(crate) fn into_read_buf(self) -> IoBuf {
        match self {
            Work::Send { buf, .. } | Work::WriteAt { buf, .. } | Work::SendTo { buf, .. } => buf,
            other => unreachable!("a write result from a {:?} request", other.kind()),
        }
    }

    /// The buffers of a vectored request.
    pub(crate) fn into_bufs(self) -> crate::vectored::IoBufs {
        match self {
            Work::SendVectored { bufs, .. } | Work::WriteAtVectored { bufs, .. } => bufs.take(),
            other => unreachable!("vectored buffers from a {:?} request", other.kind()),
        }
    }

    /// Where the buffers of a vectored request go once it has a slot.
    pub(crate) fn vectors_mut(&mut self) -> Option<&mut Vectors> {
        match self {
            Work::SendVectored { bufs, .. } | Work::WriteAtVectored { bufs, .. } => Some(bufs),
            _ => None,
        }
    }

    /// The sender's address of a `recv_from` (after its CQE).
    pub(crate) fn sender(&self) -> std::net::SocketAddr {
        match self {
            Work::RecvFrom { from, .. } => from.to_socket_addr(),
            other => unreachable!("a sender address from a {:?} request", other.kind()),
        }
    }

    /// The writable buffer of a recv or read (see [`into_read_buf`](Self::into_read_buf)).
    pub(crate) fn into_write_buf(self) -> IoBufMut {
        match self {
            Work::Recv { buf, .. } | Work::ReadAt { buf, .. } | Work::RecvFrom { buf, .. } => buf,
            other => unreachable!("a read result from a {:?} request", other.kind()),
        }
    }
}

/// One logical request, as stored in its slot.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) work: Work,
    pub(crate) fd: Option<Fd>,
    pub(crate) deadline: Option<Instant>,
    /// The terminal result: `Ok(position reached)` or the error.
    pub(crate) outcome: Option<Result<usize, Error>>,
}

impl Drop for Request {
    /// A connection the kernel accepted for a request nobody takes (an orphan retired, a result
    /// dropped) is closed, not leaked.
    fn drop(&mut self) {
        if let (Work::Accept, Some(Ok(fd))) = (&self.work, self.outcome) {
            // SAFETY: the kernel gave this descriptor to this request, and nothing else owns it:
            // a caller that takes the result takes the outcome out first.
            unsafe { libc::close(fd as i32) };
        }
    }
}

impl Request {
    /// The work, taking it out (the request is then dropped empty).
    pub(crate) fn into_work(mut self) -> Work {
        std::mem::replace(&mut self.work, Work::Nop)
    }

    /// A slot's request when no request is in it.
    pub(crate) const EMPTY: Request = Request {
        work: Work::Nop,
        fd: None,
        deadline: None,
        outcome: None,
    };

    /// A fresh request.
    pub(crate) fn new(work: Work, fd: Option<Fd>, deadline: Option<Instant>) -> Self {
        Request {
            work,
            fd,
            deadline,
            outcome: None,
        }
    }

    /// True when it owns nothing (no descriptor, no buffer, no accepted socket): dropping it
    /// runs no code.
    pub(crate) fn is_empty(&self) -> bool {
        self.fd.is_none() && matches!(self.work, Work::Nop)
    }

    /// The operation.
    pub(crate) fn kind(&self) -> OpKind {
        self.work.kind()
    }

    /// The SQE that moves this request forward from its cursor, transferring at most `limit`
    /// bytes (`u32::MAX` but for injected short I/O). A descriptor or pool buffer that `reg`
    /// holds is named by its registered index.
    pub(crate) fn sqe(&mut self, user_data: u64, limit: u32, reg: &Registry) -> Staged {
        let (fd, fixed) = self.target(reg);
        let mut fixed_buffer = false;
        let len = |pos: usize, end: usize| (end - pos).min(limit as usize) as u32;
        // SAFETY (every `add` below): `pos <= end <= len or capacity` of the buffer, checked at
        // the handle and kept by `complete`, so the pointer stays inside the allocation.
        let entry = match &mut self.work {
            Work::Nop => opcode::Nop::new().build(),
            Work::Sync { data_only } => {
                let flags = if *data_only {
                    types::FsyncFlags::DATASYNC
                } else {
                    types::FsyncFlags::empty()
                };
                opcode::Fsync::new(fd).flags(flags).build()
            }
            Work::Accept => opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_CLOEXEC)
                .build(),
            Work::Connect { addr } => opcode::Connect::new(fd, addr.as_ptr(), addr.len()).build(),
            Work::SendTo { buf, addr } => {
                opcode::Send::new(fd, buf.as_ptr(), buf.len().min(limit as usize) as u32)
                    .dest_addr(addr.as_ptr())
                    .dest_addr_len(addr.len())
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            }
            Work::RecvFrom { .. } | Work::SendVectored { .. } | Work::WriteAtVectored { .. } => {
                unreachable!("staged with a message header (`msg_sqe`)")
            }
            Work::Send { buf, pos, end } => {
                // SAFETY: see above.
                let ptr = unsafe { buf.as_ptr().add(*pos) };
                opcode::Send::new(fd, ptr, len(*pos, *end))
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
            }
            Work::WriteAt { buf, at, pos, end } => {
                // SAFETY: see above.
                let ptr = unsafe { buf.as_ptr().add(*pos) };
                let (offset, n) = (*at + *pos as u64, len(*pos, *end));
                match reg.buf_index(buf.pool_slot()) {
                    Some(index) => {
                        fixed_buffer = true;
                        opcode::WriteFixed::new(fd, ptr, n, index)
                            .offset(offset)
                            .build()
                    }
                    None => opcode::Write::new(fd, ptr, n).offset(offset).build(),
                }
            }
            Work::Recv { buf, pos, end, .. } => {
                // SAFETY: see above.
                let ptr = unsafe { buf.as_mut_ptr().add(*pos) };
                opcode::Recv::new(fd, ptr, len(*pos, *end)).build()
            }
            Work::ReadAt {
                buf, at, pos, end, ..
            } => {
                // SAFETY: see above.
                let ptr = unsafe { buf.as_mut_ptr().add(*pos) };
                let (offset, n) = (*at + *pos as u64, len(*pos, *end));
                match reg.buf_index(buf.pool_slot()) {
                    Some(index) => {
                        fixed_buffer = true;
                        opcode::ReadFixed::new(fd, ptr, n, index)
                            .offset(offset)
                            .build()
                    }
                    None => opcode::Read::new(fd, ptr, n).offset(offset).build(),
                }
            }
        };
        Staged::new(entry, user_data, fixed, fixed_buffer)
    }

    /// The descriptor an SQE names: the registered index (and true) if `reg` holds it, else
    /// the descriptor number (`-1` for none).
    fn target(&self, reg: &Registry) -> (types::Fd, bool) {
        match &self.fd {
            None => (types::Fd(-1), false),
            Some(fd) => match reg.file_index(fd) {
                Some(index) => (types::Fd(index as i32), true),
                None => (types::Fd(fd.as_raw_fd()), false),
            },
        }
    }

    /// The SQE of a request that holds message header `index` (`header`) of the loop's table
    /// until [`msg_done`](Self::msg_done): a `recv_from`, or a vectored request (at most `limit`
    /// bytes).
    pub(crate) fn msg_sqe(
        &mut self,
        user_data: u64,
        index: u16,
        header: &mut MsgHeader,
        reg: &Registry,
        limit: u32,
    ) -> Staged {
        let (fd, fixed) = self.target(reg);
        let limit = limit as usize;
        let entry = match &mut self.work {
            Work::RecvFrom { buf, msg, .. } => {
                *msg = index;
                opcode::RecvMsg::new(fd, header.prepare(buf)).build()
            }
            Work::SendVectored { bufs, pos, msg, .. } => {
                *msg = index;
                opcode::SendMsg::new(fd, header.prepare_send(bufs, *pos, limit))
                    .flags(libc::MSG_NOSIGNAL as u32)
                    .build()
            }
            Work::WriteAtVectored {
                bufs, at, pos, msg, ..
            } => {
                *msg = index;
                let (iovecs, count) = header.prepare_iovecs(bufs, *pos, limit);
                opcode::Writev::new(fd, iovecs, count)
                    .offset(*at + *pos as u64)
                    .build()
            }
            other => unreachable!("a {:?} request holds no message header", other.kind()),
        };
        Staged::new(entry, user_data, fixed, false)
    }

    /// True for the requests staged with a message header ([`msg_sqe`](Self::msg_sqe)).
    pub(crate) fn needs_msg(&self) -> bool {
        matches!(
            self.work,
            Work::RecvFrom { .. } | Work::SendVectored { .. } | Work::WriteAtVectored { .. }
        )
    }

    /// The message header a request holds while in the kernel.
    pub(crate) fn held_msg(&self) -> Option<u16> {
        match self.work {
            Work::RecvFrom { msg, .. }
            | Work::SendVectored { msg, .. }
            | Work::WriteAtVectored { msg, .. }
                if msg != NO_MSG =>
            {
                Some(msg)
            }
            _ => None,
        }
    }

    /// After a `recv_from`'s CQE: takes the sender's address out of its message header and gives
    /// the header back (returns its index), if it held one.
    pub(crate) fn msg_done(&mut self, headers: &[MsgHeader]) -> Option<u16> {
        let (msg, from) = match &mut self.work {
            Work::RecvFrom { from, msg, .. } => (msg, Some(from)),
            Work::SendVectored { msg, .. } | Work::WriteAtVectored { msg, .. } => (msg, None),
            _ => return None,
        };
        let index = std::mem::replace(msg, NO_MSG);
        if index == NO_MSG {
            return None;
        }
        if let Some(from) = from {
            *from = headers[index as usize].sender();
        }
        Some(index)
    }

    /// Applies one op CQE result; `cancel_requested` says whether the deadline fired while the
    /// SQE was in the kernel. Returns true when the request is finished (`outcome` set), false
    /// when it needs another SQE (requeue).
    pub(crate) fn complete(&mut self, result: i32, cancel_requested: bool) -> bool {
        let kind = self.kind();
        let outcome = match result {
            r if r == -libc::EAGAIN || r == -libc::EINTR => {
                if !cancel_requested {
                    return false;
                }
                Err(Error::Timeout)
            }
            r if r == -libc::ECANCELED && cancel_requested => Err(Error::Timeout),
            r if r == -libc::EPIPE && kind == OpKind::Send => Err(Error::UnexpectedEof),
            r if r < 0 => Err(Error::Os(-r)),
            n => return self.advance(n as usize, cancel_requested),
        };
        self.outcome = Some(outcome);
        true
    }

    /// A non-negative result: move the cursor, finish if complete. Zero where bytes were still
    /// expected is end of file (or a closed peer).
    fn advance(&mut self, n: usize, cancel_requested: bool) -> bool {
        let first_bytes_suffice = matches!(
            self.work,
            Work::Recv { exact: false, .. } | Work::ReadAt { exact: false, .. }
        );
        let eof_is_an_answer = matches!(self.work, Work::ReadAt { exact: false, .. });
        let counted = matches!(
            self.work,
            Work::Accept | Work::SendTo { .. } | Work::RecvFrom { .. }
        );
        let Some((pos, end)) = self.work.cursor() else {
            // Accept's result is the new descriptor, a datagram's its length (zero included);
            // the others have nothing to report.
            self.outcome = Some(Ok(if counted { n } else { 0 }));
            return true;
        };
        let outcome = if n == 0 && *pos < end && !eof_is_an_answer {
            Err(Error::UnexpectedEof)
        } else if n > end - *pos {
            Err(Error::Os(libc::EIO))
        } else {
            *pos += n;
            if *pos == end || first_bytes_suffice {
                Ok(*pos)
            } else if cancel_requested {
                Err(Error::Timeout)
            } else {
                return false;
            }
        };
        self.outcome = Some(outcome);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: OpKind, end: usize) -> Request {
        let work = match kind {
            OpKind::Nop => Work::Nop,
            OpKind::Sync => Work::Sync { data_only: false },
            OpKind::Accept => Work::Accept,
            OpKind::Connect => Work::Connect {
                addr: RawAddr::new(([127, 0, 0, 1], 9).into()),
            },
            OpKind::SendTo => Work::SendTo {
                buf: IoBuf::from(vec![7u8; end]),
                addr: RawAddr::new(([127, 0, 0, 1], 9).into()),
            },
            OpKind::RecvFrom => Work::RecvFrom {
                buf: IoBufMut::with_capacity(end),
                from: RawAddr::EMPTY,
                msg: NO_MSG,
            },
            OpKind::Send => Work::Send {
                buf: IoBuf::from(vec![7u8; end]),
                pos: 0,
                end,
            },
            OpKind::WriteAt => Work::WriteAt {
                buf: IoBuf::from(vec![7u8; end]),
                at: 0,
                pos: 0,
                end,
            },
            OpKind::Recv => Work::Recv {
                buf: IoBufMut::with_capacity(end),
                pos: 0,
                end,
                exact: false,
            },
            OpKind::ReadAt => Work::ReadAt {
                buf: IoBufMut::with_capacity(end),
                at: 0,
                pos: 0,
                end,
                exact: true,
            },
        };
        Request::new(work, None, None)
    }

    /// The cursor of a transfer.
    fn pos(r: &mut Request) -> usize {
        *r.work.cursor().expect("a transfer").0
    }

    /// Sets recv's `exact`.
    fn set_exact(r: &mut Request) {
        if let Work::Recv { exact, .. } = &mut r.work {
            *exact = true;
        }
    }

    fn set_at(r: &mut Request, offset: u64) {
        if let Work::ReadAt { at, .. } | Work::WriteAt { at, .. } = &mut r.work {
            *at = offset;
        }
    }

    fn set_read_exact(r: &mut Request, value: bool) {
        if let Work::ReadAt { exact, .. } = &mut r.work {
            *exact = value;
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
        *r.work.cursor().unwrap().0 = 2; // recv at offset 2
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
            r.sqe(1, u32::MAX, &Registry::NONE).entry.get_opcode(),
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
            let mut r = Request::new(Work::Sync { data_only }, None, None);
            let sqe = r.sqe(1, u32::MAX, &Registry::NONE).entry;
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

        let work = Work::ReadAt {
            buf: pool.take().unwrap(),
            at: 0,
            pos: 0,
            end: 8,
            exact: true,
        };
        let mut r = Request::new(work, Some(fixed.clone()), None);
        let staged = r.sqe(1, u32::MAX, &reg);
        assert_eq!((staged.fixed_file, staged.fixed_buffer), (true, true));
        let sqe = staged.entry;
        assert_eq!(sqe.get_opcode(), u32::from(opcode::ReadFixed::CODE));
        assert_eq!(flags(sqe), (fixed_file, 0), "index 0, IOSQE_FIXED_FILE");
        // Unregistered: plain opcode, plain descriptor.
        let sqe = r.sqe(1, u32::MAX, &Registry::NONE).entry;
        assert_eq!(sqe.get_opcode(), u32::from(opcode::Read::CODE));
        assert_eq!(flags(sqe), (0, file.as_raw_fd()));
        // A heap buffer on a registered file: plain opcode, fixed file.
        let mut r = request(OpKind::WriteAt, 4);
        r.fd = Some(fixed);
        let staged = r.sqe(1, u32::MAX, &reg);
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
        let sqe = r.sqe(42, u32::MAX, &Registry::NONE).entry;
        assert_eq!(sqe.get_user_data(), 42);
        assert_eq!(sqe.get_opcode(), u32::from(opcode::Write::CODE));
        assert!(OpKind::Send.orphanable(false) && OpKind::ReadAt.orphanable(false));
        assert!(!OpKind::WriteAt.orphanable(false) && !OpKind::Sync.orphanable(false));
        // With cancel_on_drop a send runs to completion; reads are still retired.
        assert!(!OpKind::Send.orphanable(true) && !OpKind::SendTo.orphanable(true));
        assert!(OpKind::ReadAt.orphanable(true) && OpKind::Connect.orphanable(true));
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
            r.sqe(3, u32::MAX, &Registry::NONE).entry.get_opcode(),
            u32::from(opcode::Connect::CODE)
        );
        assert!(OpKind::Accept.cancelled_on_drop() && !OpKind::Connect.cancelled_on_drop());
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
