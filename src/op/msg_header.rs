//! The message headers of the loop's table: what `recvmsg`, `sendmsg` and `writev` need in
//! stable memory while an operation is in the kernel, lent to one operation at a time.

use super::RawAddr;
use crate::buf::IoBufMut;
use crate::error::Error;
use crate::vectored::{Vectors, MAX_IOVECS};

/// An operation's `msg` when it holds no message header.
pub(crate) const NO_MSG: u16 = u16::MAX;

/// What `recvmsg` needs in stable memory while a `recv_from` is in the kernel: the header, its one
/// iovec and room for the sender's address. The loop keeps `RING` of them in its table.
#[repr(C)]
pub struct MsgHeader {
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
    pub(crate) fn prepare(&mut self, buf: &mut IoBufMut) -> *mut libc::msghdr {
        self.name = RawAddr::EMPTY;
        self.iovs[0] = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.capacity(),
        };
        // SAFETY: zeroed msghdr is valid; the fields set below are all recvmsg reads.
        self.hdr = unsafe { std::mem::zeroed() };
        self.hdr.msg_name = self.name.as_mut_ptr().cast();
        self.hdr.msg_namelen = RawAddr::ROOM;
        self.hdr.msg_iov = self.iovs.as_mut_ptr();
        self.hdr.msg_iovlen = 1;
        &mut self.hdr
    }

    /// Points the iovecs at bytes `skip..` of `bufs` (at most `limit`); returns the iovec array
    /// and how many it holds. `self` and the buffers must stay in place until the CQE.
    pub(crate) fn prepare_iovecs(
        &mut self,
        bufs: &Vectors,
        skip: usize,
        limit: usize,
    ) -> (*const libc::iovec, u32) {
        let used = bufs.fill_iovecs(&mut self.iovs, skip, limit);
        (self.iovs.as_ptr(), used as u32)
    }

    /// A `sendmsg` header (no address) over bytes `skip..` of `bufs`, at most `limit`.
    pub(crate) fn prepare_send(
        &mut self,
        bufs: &Vectors,
        skip: usize,
        limit: usize,
    ) -> *const libc::msghdr {
        let (_, used) = self.prepare_iovecs(bufs, skip, limit);
        // SAFETY: zeroed msghdr is valid (no name, no control data).
        self.hdr = unsafe { std::mem::zeroed() };
        self.hdr.msg_iov = self.iovs.as_mut_ptr();
        self.hdr.msg_iovlen = used as _;
        &self.hdr
    }

    /// The sender's address the kernel wrote (after the CQE).
    pub(crate) fn sender(&self) -> RawAddr {
        self.name
    }
}

/// The loop's free message headers, lent to an operation while it builds its SQE.
pub struct Headers<'a> {
    headers: &'a mut [MsgHeader],
    free: &'a mut heapless::vec::VecView<u16>,
}

impl<'a> Headers<'a> {
    /// The table's headers and the indices of the free ones.
    pub(crate) fn new(
        headers: &'a mut [MsgHeader],
        free: &'a mut heapless::vec::VecView<u16>,
    ) -> Self {
        Headers { headers, free }
    }

    /// A free header, held from now on by the operation whose `msg` cell this is (it keeps the
    /// index until its CQE gives the header back). `Os(ENOBUFS)` when none is free: every
    /// header is parked with the kernel by requests a shutdown abandoned (docs/behaviour.md
    /// section 2.2).
    pub(crate) fn take(&mut self, msg: &mut u16) -> Result<&mut MsgHeader, Error> {
        let index = self.free.pop().ok_or(Error::Os(libc::ENOBUFS))?;
        *msg = index;
        Ok(&mut self.headers[index as usize])
    }
}
