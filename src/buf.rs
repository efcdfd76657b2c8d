//! Owned buffers with stable addresses: [`IoBuf`] (read-only) and [`IoBufMut`] (writable).
//!
//! A buffer moves into its request and comes back with the result. Moving the buffer value moves
//! only a pointer, a length and a capacity, never the bytes, so the address the kernel was given
//! stays valid wherever the value goes. The bytes are freed only when the value is dropped, and
//! the loop never drops a buffer the kernel may still use (see `Error::Abandoned`).

use std::fmt;
use std::ptr::NonNull;

/// Who frees the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// A `Vec<u8>` of this capacity.
    Vec(usize),
    /// A `Box<[u8]>` (capacity = length at creation).
    Boxed(usize),
    /// `'static` memory of this length, never freed. The length is kept apart from the
    /// buffer's own, which `clear`, `truncate` and short reads shrink.
    Static(usize),
    /// Buffer `index` (of `size` bytes) of a [`BufPool`](crate::BufPool), whose free list is at
    /// `list`; dropping the buffer returns the index there.
    Pool {
        list: NonNull<()>,
        index: u16,
        size: u32,
    },
    /// A piece of buffer `bid` of a [`BufRing`](crate::BufRing) (`len` bytes received into it),
    /// taken from a [`BufLease`](crate::BufLease); dropping it gives the piece back to the ring,
    /// which
    /// `ring` names (a thin pointer to the ring's own `&'static dyn` handle).
    Lease {
        ring: NonNull<&'static dyn crate::buf_ring::Provided>,
        bid: u16,
        len: u32,
    },
}

/// Where a pool buffer came from: its pool (by free-list address) and its index there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolSlot {
    pub(crate) list: NonNull<()>,
    pub(crate) index: u16,
}

/// The raw parts shared by both buffer kinds.
struct Raw {
    ptr: NonNull<u8>,
    len: usize,
    owner: Owner,
}

impl Raw {
    fn from_vec(vec: Vec<u8>) -> Self {
        let mut vec = std::mem::ManuallyDrop::new(vec);
        // SAFETY: `Vec::as_mut_ptr` is never null (dangling but non-null when unallocated).
        let ptr = unsafe { NonNull::new_unchecked(vec.as_mut_ptr()) };
        Raw {
            ptr,
            len: vec.len(),
            owner: Owner::Vec(vec.capacity()),
        }
    }

    fn from_box(boxed: Box<[u8]>) -> Self {
        let len = boxed.len();
        let ptr = NonNull::from(Box::leak(boxed)).cast::<u8>();
        Raw {
            ptr,
            len,
            owner: Owner::Boxed(len),
        }
    }

    fn from_static(ptr: *mut u8, len: usize) -> Self {
        let ptr = NonNull::new(ptr).unwrap_or(NonNull::dangling());
        Raw {
            ptr,
            len,
            owner: Owner::Static(len),
        }
    }

    /// Buffer `index` of the pool whose free list is at `list`: `size` bytes at `ptr`, empty.
    ///
    /// # Safety
    /// `ptr` is valid for `size` bytes and exclusively the new buffer's until it is dropped; the
    /// free list outlives it (the pool is `'static`), and the caller popped `index` from it.
    pub(crate) unsafe fn from_pool(
        ptr: NonNull<u8>,
        list: NonNull<()>,
        index: u16,
        size: u32,
    ) -> Self {
        Raw {
            ptr,
            len: 0,
            owner: Owner::Pool { list, index, size },
        }
    }

    fn capacity(&self) -> usize {
        match self.owner {
            Owner::Vec(cap) | Owner::Boxed(cap) | Owner::Static(cap) => cap,
            Owner::Pool { size, .. } => size as usize,
            Owner::Lease { len, .. } => len as usize,
        }
    }

    fn pool_slot(&self) -> Option<PoolSlot> {
        match self.owner {
            Owner::Pool { list, index, .. } => Some(PoolSlot { list, index }),
            _ => None,
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` initialised bytes (the invariant of both buffer types:
        // `len` only grows over bytes that were written) and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Gives the bytes back as a Vec when they came from the heap.
    fn into_vec(self) -> Result<Vec<u8>, Self> {
        let this = std::mem::ManuallyDrop::new(self);
        match this.owner {
            // SAFETY: the parts came from a `Vec<u8>` of this capacity (or a boxed slice, whose
            // layout is a Vec with capacity == length) and ownership moves out exactly once.
            Owner::Vec(cap) | Owner::Boxed(cap) => unsafe {
                Ok(Vec::from_raw_parts(this.ptr.as_ptr(), this.len, cap))
            },
            Owner::Static(_) | Owner::Pool { .. } | Owner::Lease { .. } => {
                Err(std::mem::ManuallyDrop::into_inner(this))
            }
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        match self.owner {
            // SAFETY: these parts came from a Vec of capacity `cap` and are dropped once.
            Owner::Vec(cap) => unsafe {
                drop(Vec::from_raw_parts(self.ptr.as_ptr(), self.len, cap));
            },
            // SAFETY: these parts came from `Box<[u8]>` of length `len` via `Box::leak`.
            Owner::Boxed(len) => unsafe {
                let slice = std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), len);
                drop(Box::from_raw(slice));
            },
            Owner::Static(_) => {}
            // SAFETY: the pool is `'static` (its free list lives for ever) and this buffer owned
            // `index`, which is not on the free list until now.
            Owner::Pool { list, index, .. } => unsafe {
                crate::handoff::free_list::push_erased(list.as_ptr(), u32::from(index));
            },
            // SAFETY: `ring` points into a `'static` ring, at its handle, set before any lease
            // of it existed and never written again.
            Owner::Lease { ring, bid, .. } => unsafe { ring.as_ref() }.give_back(bid),
        }
    }
}

/// Read-only bytes with a stable address, for `send` and `write_at`.
pub struct IoBuf(Raw);

// SAFETY: IoBuf owns its bytes exclusively (or borrows 'static ones) and has no interior
// mutability; moving or sharing it across threads is as safe as for a Vec<u8>.
unsafe impl Send for IoBuf {}
// SAFETY: as above; `&IoBuf` only gives `&[u8]`.
unsafe impl Sync for IoBuf {}

impl IoBuf {
    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    /// Allocated size of the backing memory.
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// The bytes as a `Vec` when they came from a `Vec` or a `Box<[u8]>` (no copy); a static
    /// buffer is handed back unchanged.
    pub fn into_vec(self) -> Result<Vec<u8>, IoBuf> {
        self.0.into_vec().map_err(IoBuf)
    }

    /// Writable again, keeping the bytes, when this buffer owns its memory (a `Vec`, a
    /// `Box<[u8]>` or a [`BufPool`](crate::BufPool) buffer): for example to read into a pool
    /// buffer that a write just handed back. `'static` bytes are handed back unchanged, since
    /// they may be read-only.
    pub fn into_mut(self) -> Result<IoBufMut, IoBuf> {
        match self.0.owner {
            Owner::Static(_) | Owner::Lease { .. } => Err(self),
            _ => Ok(IoBufMut(self.0)),
        }
    }

    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.0.ptr.as_ptr()
    }

    /// The pool buffer this is, if it is one.
    pub(crate) fn pool_slot(&self) -> Option<PoolSlot> {
        self.0.pool_slot()
    }
}

impl AsRef<[u8]> for IoBuf {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl std::ops::Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl From<Vec<u8>> for IoBuf {
    fn from(vec: Vec<u8>) -> Self {
        IoBuf(Raw::from_vec(vec))
    }
}

impl From<Box<[u8]>> for IoBuf {
    fn from(boxed: Box<[u8]>) -> Self {
        IoBuf(Raw::from_box(boxed))
    }
}

/// An empty buffer (no allocation).
impl Default for IoBuf {
    fn default() -> Self {
        IoBuf::from(&[][..])
    }
}

impl From<&'static [u8]> for IoBuf {
    fn from(bytes: &'static [u8]) -> Self {
        IoBuf(Raw::from_static(bytes.as_ptr() as *mut u8, bytes.len()))
    }
}

impl From<&'static str> for IoBuf {
    fn from(text: &'static str) -> Self {
        IoBuf::from(text.as_bytes())
    }
}

impl From<crate::BufLease> for IoBuf {
    /// The received bytes as a buffer to send (no copy); dropping it gives the ring buffer back.
    fn from(lease: crate::BufLease) -> Self {
        let (ring, bid, bytes) = lease.into_parts();
        IoBuf(Raw {
            ptr: NonNull::from(bytes).cast::<u8>(),
            len: bytes.len(),
            owner: Owner::Lease {
                ring,
                bid,
                len: bytes.len() as u32,
            },
        })
    }
}

impl From<IoBufMut> for IoBuf {
    /// Freezes the first `len()` bytes; no copy.
    fn from(buf: IoBufMut) -> Self {
        IoBuf(buf.0)
    }
}

impl fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoBuf").field("len", &self.len()).finish()
    }
}

/// Writable bytes with a stable address, a length and a capacity, for `recv` and `read_at`.
///
/// Operations write into `[0, capacity)` and set the length to the bytes that are valid.
pub struct IoBufMut(Raw);

// SAFETY: IoBufMut owns its bytes exclusively (a `&'static mut` is exclusive too).
unsafe impl Send for IoBufMut {}
// SAFETY: `&IoBufMut` only gives `&[u8]`; mutation needs `&mut`.
unsafe impl Sync for IoBufMut {}

impl IoBufMut {
    /// An empty buffer that can take `capacity` bytes (one allocation, here and never again).
    pub fn with_capacity(capacity: usize) -> Self {
        IoBufMut(Raw::from_vec(Vec::with_capacity(capacity)))
    }

    /// Bytes that are valid.
    pub fn len(&self) -> usize {
        self.0.len
    }

    /// True when no byte is valid.
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    /// Bytes the buffer can hold.
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// Shortens the valid bytes to `len` (no effect if `len >= self.len()`).
    pub fn truncate(&mut self, len: usize) {
        self.0.len = self.0.len.min(len);
    }

    /// Forgets the contents: `len()` becomes 0, the capacity stays.
    pub fn clear(&mut self) {
        self.0.len = 0;
    }

    /// Sets the number of valid bytes.
    ///
    /// # Safety
    /// `len <= capacity()` and the first `len` bytes must have been written.
    pub unsafe fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.capacity());
        self.0.len = len;
    }

    /// Copies `bytes` to the end, if they fit in the capacity; returns false otherwise.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > self.capacity() - self.len() {
            return false;
        }
        // SAFETY: the destination range `[len, len + bytes.len())` is inside the capacity, owned
        // by us, and cannot overlap `bytes` (we hold `&mut self`).
        unsafe {
            let dst = self.0.ptr.as_ptr().add(self.0.len);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len());
        }
        self.0.len += bytes.len();
        true
    }

    /// The bytes as a `Vec` when they came from a `Vec` or a `Box<[u8]>` (no copy); a static
    /// buffer is handed back unchanged.
    pub fn into_vec(self) -> Result<Vec<u8>, IoBufMut> {
        self.0.into_vec().map_err(IoBufMut)
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.0.ptr.as_ptr()
    }

    /// The pool buffer this is, if it is one.
    pub(crate) fn pool_slot(&self) -> Option<PoolSlot> {
        self.0.pool_slot()
    }

    /// A pool's buffer (see [`Raw::from_pool`]).
    ///
    /// # Safety
    /// As [`Raw::from_pool`].
    pub(crate) unsafe fn from_pool(
        ptr: NonNull<u8>,
        list: NonNull<()>,
        index: u16,
        size: u32,
    ) -> Self {
        // SAFETY: the caller's contract.
        IoBufMut(unsafe { Raw::from_pool(ptr, list, index, size) })
    }
}

impl AsRef<[u8]> for IoBufMut {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl AsMut<[u8]> for IoBufMut {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: valid for `len` initialised bytes, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.0.ptr.as_ptr(), self.0.len) }
    }
}

impl std::ops::Deref for IoBufMut {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl std::ops::DerefMut for IoBufMut {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.as_mut()
    }
}

impl From<Vec<u8>> for IoBufMut {
    fn from(vec: Vec<u8>) -> Self {
        IoBufMut(Raw::from_vec(vec))
    }
}

impl From<Box<[u8]>> for IoBufMut {
    fn from(boxed: Box<[u8]>) -> Self {
        IoBufMut(Raw::from_box(boxed))
    }
}

/// An empty buffer with no capacity (no allocation).
impl Default for IoBufMut {
    fn default() -> Self {
        IoBufMut::from(&mut [][..])
    }
}

impl From<&'static mut [u8]> for IoBufMut {
    /// The whole slice is both length and capacity.
    fn from(bytes: &'static mut [u8]) -> Self {
        IoBufMut(Raw::from_static(bytes.as_mut_ptr(), bytes.len()))
    }
}

impl fmt::Debug for IoBufMut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoBufMut")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

// A pool owner fits beside the others: buffers stay four words, so requests do not grow.
static_assertions::assert_eq_size!(IoBuf, [usize; 4]);
static_assertions::assert_eq_size!(IoBufMut, [usize; 4]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn into_mut_keeps_owned_buffers_and_refuses_static_ones() {
        let buf = IoBuf::from(vec![1u8, 2, 3]);
        let addr = buf.as_ptr();
        let mut buf = buf.into_mut().unwrap();
        assert_eq!(
            buf.as_mut_ptr().cast_const(),
            addr,
            "the bytes did not move"
        );
        assert_eq!(&buf[..], &[1u8, 2, 3][..]);
        let frozen = IoBuf::from(&b"read-only"[..]);
        assert_eq!(&frozen.into_mut().unwrap_err()[..], b"read-only");
    }

    #[test]
    fn vec_round_trip_keeps_address_length_and_capacity() {
        // The kernel is given the address once; moving the buffer must not move the bytes.
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(b"abc");
        let addr = v.as_ptr();
        let buf = IoBufMut::from(v);
        assert_eq!((buf.len(), buf.capacity()), (3, 64));
        let moved = Box::new(buf);
        assert_eq!(moved.as_ref().as_ptr(), addr);
        let v = moved.into_vec().unwrap();
        assert_eq!((v.as_ptr(), v.len(), v.capacity()), (addr, 3, 64));
    }

    #[test]
    fn boxed_static_and_frozen_buffers() {
        // Every documented source converts without copying and gives its bytes back.
        let b = IoBuf::from(vec![1u8, 2, 3].into_boxed_slice());
        assert_eq!(b.as_ref(), &[1, 2, 3]);
        assert_eq!(b.into_vec().unwrap(), vec![1, 2, 3]);
        let s = IoBuf::from(&b"static"[..]);
        assert_eq!(&*s, b"static");
        assert!(s.into_vec().is_err(), "static bytes are not a Vec");
        let mut m = IoBufMut::with_capacity(8);
        assert!(m.extend_from_slice(b"hello"));
        assert!(!m.extend_from_slice(b"toolong"));
        m.as_mut()[0] = b'j';
        let frozen = IoBuf::from(m);
        assert_eq!(&*frozen, b"jello");
        assert_eq!(frozen.capacity(), 8);
        let leaked: &'static mut [u8] = Box::leak(vec![0u8; 4].into_boxed_slice());
        let m = IoBufMut::from(leaked);
        assert_eq!((m.len(), m.capacity()), (4, 4));
    }

    #[test]
    fn static_buffer_keeps_its_capacity_when_shortened() {
        // A `&'static mut` buffer is reused read after read: clearing or truncating it (or a
        // short recv setting its length) must not shrink what later reads may fill.
        let leaked: &'static mut [u8] = Box::leak(vec![0u8; 16].into_boxed_slice());
        let mut m = IoBufMut::from(leaked);
        m.truncate(3);
        assert_eq!((m.len(), m.capacity()), (3, 16));
        m.clear();
        assert_eq!((m.len(), m.capacity()), (0, 16));
        assert!(
            m.extend_from_slice(&[1; 16]),
            "the whole slice is usable again"
        );
        assert_eq!(m.len(), 16);
        let frozen = IoBuf::from(m);
        assert_eq!(frozen.capacity(), 16);
    }
}
