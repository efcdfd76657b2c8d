//! Vectored requests (`send_vectored`, `write_at_vectored`): where their buffers live.
//!
//! A vectored request carries up to [`MAX_IOVECS`] buffers, more than a slot's request has room
//! for. Each slot therefore has a [`VectorCell`] in the storage, beside it: the caller moves the
//! buffers into its slot's cell when it submits (it owns the slot then), and the request's
//! [`Vectors`] names the cell from then on. Ownership of the cell follows the slot's, exactly
//! like the request's. Requests of other kinds never touch their cell.
//!
//! The buffers leave the cell before the slot is freed, since the slot's next owner may fill the
//! cell at once: the caller builds its result first, and `Storage::free_slot` drops a dropped
//! request's buffers (`Work::drop_vectors`) before it releases the slot. A request parked at
//! shutdown is
//! never dropped (the storage leaks it), so its buffers stay in the cell for good: the kernel
//! may still read them.

use std::cell::UnsafeCell;
use std::fmt;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;

use crate::buf::IoBuf;

/// The most buffers one vectored request carries.
pub const MAX_IOVECS: usize = 4;

/// The buffers of a vectored request: an `ArrayVec` (no allocation) of up to [`MAX_IOVECS`].
pub type IoBufs = arrayvec::ArrayVec<IoBuf, MAX_IOVECS>;

/// A slot's room for the buffers of a vectored request. Empty unless that slot holds one.
pub struct VectorCell(UnsafeCell<ManuallyDrop<IoBufs>>);

impl VectorCell {
    /// An empty cell.
    pub(crate) const fn new() -> Self {
        VectorCell(UnsafeCell::new(ManuallyDrop::new(IoBufs::new_const())))
    }
}

/// A vectored request's buffers, in its slot's cell once submitted.
pub struct Vectors(Option<NonNull<IoBufs>>);

// SAFETY: `Vectors` is the unique handle of the buffers in its cell (`IoBuf` is `Send`); the cell
// is reached only by the slot's current owner, as the request is.
unsafe impl Send for Vectors {}

impl Vectors {
    /// Not in a cell yet (the buffers wait in the caller's future).
    pub(crate) const DETACHED: Vectors = Vectors(None);

    /// Moves `bufs` into `cell` and names it.
    ///
    /// # Safety
    /// The caller owns the cell's slot (`FILLED`) and the cell is empty (every `Vectors` that
    /// named it was dropped or taken).
    pub(crate) unsafe fn attach(cell: &VectorCell, bufs: IoBufs) -> Vectors {
        let inner = cell.0.get();
        // SAFETY: the slot, hence the cell, is ours (contract); the empty value it holds needs no
        // drop, so overwriting it leaks nothing.
        unsafe { inner.write(ManuallyDrop::new(bufs)) };
        // SAFETY: `ManuallyDrop<T>` is `repr(transparent)` over `T`; `get` is never null.
        Vectors(Some(unsafe {
            NonNull::new_unchecked(inner.cast::<IoBufs>())
        }))
    }

    /// The buffers.
    pub(crate) fn bufs(&self) -> &[IoBuf] {
        match self.0 {
            // SAFETY: the request (and with it this handle) is owned by whoever reads it, and so
            // is the cell (see the module doc).
            Some(ptr) => unsafe { ptr.as_ref() },
            None => &[],
        }
    }

    /// Takes the buffers out of the cell (leaving it empty).
    pub(crate) fn take(mut self) -> IoBufs {
        match self.0.take() {
            // SAFETY: as in `bufs`, and we hold the handle by value.
            Some(mut ptr) => std::mem::take(unsafe { ptr.as_mut() }),
            None => IoBufs::new(),
        }
    }

    /// Fills `iovecs` with the bytes from `skip` on, at most `limit` of them in all; returns how
    /// many iovecs it used.
    pub(crate) fn fill_iovecs(
        &self,
        iovecs: &mut [libc::iovec; MAX_IOVECS],
        mut skip: usize,
        limit: usize,
    ) -> usize {
        let mut used = 0;
        let mut left = limit;
        for buf in self.bufs() {
            if left == 0 {
                break;
            }
            if skip >= buf.len() {
                skip -= buf.len();
                continue;
            }
            let len = (buf.len() - skip).min(left);
            iovecs[used] = libc::iovec {
                // SAFETY: `skip < len(buf)`, inside the buffer.
                iov_base: unsafe { buf.as_ptr().add(skip) }.cast_mut().cast(),
                iov_len: len,
            };
            used += 1;
            left -= len;
            skip = 0;
        }
        used
    }
}

impl Drop for Vectors {
    fn drop(&mut self) {
        if let Some(mut ptr) = self.0.take() {
            // SAFETY: as in `bufs`; dropping the request drops its buffers.
            unsafe { ptr.as_mut() }.clear();
        }
    }
}

impl fmt::Debug for Vectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.bufs().iter().map(|b| b.len()))
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn bufs(parts: &[&'static [u8]]) -> IoBufs {
        parts.iter().map(|&p| IoBuf::from(p)).collect()
    }

    #[test]
    fn iovecs_resume_at_the_cursor_and_respect_the_limit() {
        let cell = VectorCell::new();
        // SAFETY: a fresh, empty cell that nothing else uses.
        let v = unsafe { Vectors::attach(&cell, bufs(&[b"abc", b"", b"defg", b"h"])) };
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_IOVECS];
        let lens =
            |iov: &[libc::iovec], n: usize| iov[..n].iter().map(|i| i.iov_len).collect::<Vec<_>>();
        let n = v.fill_iovecs(&mut iov, 0, usize::MAX);
        assert_eq!(lens(&iov, n), [3, 4, 1], "empty buffers are skipped");
        let n = v.fill_iovecs(&mut iov, 4, usize::MAX);
        assert_eq!(lens(&iov, n), [3, 1], "resumes inside the second buffer");
        // SAFETY: the iovec points into b"defg" at offset 1.
        assert_eq!(unsafe { *iov[0].iov_base.cast::<u8>() }, b'e');
        let n = v.fill_iovecs(&mut iov, 1, 3);
        assert_eq!(lens(&iov, n), [2, 1], "a limit cuts the total");
        assert_eq!(v.fill_iovecs(&mut iov, 8, usize::MAX), 0);
        let back = v.take();
        assert_eq!(back.len(), 4, "the buffers come back whole");
        // SAFETY: the cell's `Vectors` was taken, so it is ours to read.
        let empty = unsafe { (*cell.0.get()).is_empty() };
        assert!(empty, "the cell is empty again");
    }

    #[test]
    fn dropping_the_handle_drops_the_buffers() {
        // A pool buffer shows it: it is back in its pool only once dropped.
        let pool = crate::BufPool::<1, 8>::allocate();
        let buf = IoBuf::from(pool.take().unwrap());
        assert!(pool.take().is_none());
        let cell = VectorCell::new();
        // SAFETY: a fresh, empty cell.
        let v = unsafe { Vectors::attach(&cell, [buf].into_iter().collect()) };
        drop(v);
        // SAFETY: nothing names the cell any more.
        let empty = unsafe { (*cell.0.get()).is_empty() };
        assert!(empty);
        assert!(pool.take().is_some(), "the buffer went back to its pool");
    }
}
