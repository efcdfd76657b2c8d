//! [`BufPool`]: a fixed set of equal buffers that a loop can register with the kernel.
//!
//! A pool is `COUNT` buffers of `SIZE` bytes in one page-aligned block, plus the lock-free free
//! list of their indices (the one the storage uses for slots). It is all zero bytes when created,
//! so a `static` pool costs no initialisation and sits in `.bss`; [`BufPool::allocate`] makes one
//! on the heap instead, once. Pools are `'static` because their buffers name them: a buffer goes
//! back to its pool when dropped, from any thread, without allocating.
//!
//! A loop that registered the pool ([`EventLoop::register_buffers`]) reads and writes pool
//! buffers with the fixed-buffer opcodes (`READ_FIXED`, `WRITE_FIXED`), which skip the kernel's
//! per-request page pinning. Everywhere else a pool buffer is an ordinary [`IoBufMut`].
//!
//! [`EventLoop::register_buffers`]: crate::EventLoop::register_buffers

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::ptr::NonNull;

use crate::buf::IoBufMut;
use crate::handoff::free_list::FreeList;

/// The most buffers one registration may hold (the kernel's `IORING_MAX_REG_BUFFERS`).
pub const MAX_BUFFERS: usize = 1 << 14;
/// The largest registered buffer the kernel accepts (1 GiB).
pub const MAX_BUFFER_SIZE: usize = 1 << 30;

/// `COUNT` buffers of `SIZE` bytes, taken with [`take`](Self::take) and returned on drop.
///
/// ```
/// use static_uring::{BufPool, Config, IoBuf};
///
/// static POOL: BufPool<16, 4096> = BufPool::new();
///
/// let (handle, mut event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
/// event_loop.register_buffers(&POOL).unwrap();
/// let thread = std::thread::spawn(move || event_loop.run());
///
/// let path = std::env::temp_dir().join(format!("su-doc-pool-{}", std::process::id()));
/// let file = static_uring::Fd::from(std::fs::File::create_new(&path).unwrap());
/// let mut buf = POOL.take().expect("a free buffer");
/// assert!(buf.extend_from_slice(b"fixed"));
/// // WRITE_FIXED: the loop registered this pool.
/// let buf = handle.write_at(file.clone(), 0, IoBuf::from(buf)).wait().unwrap();
/// drop(buf); // back to the pool
/// let buf = POOL.take().unwrap();
/// let buf = handle.read_at(file, 0, buf).limit(5).wait().unwrap(); // READ_FIXED
/// assert_eq!(&buf[..], b"fixed");
/// # std::fs::remove_file(&path).unwrap();
/// # drop(handle);
/// # thread.join().unwrap().unwrap();
/// ```
///
/// Each buffer starts `SIZE` bytes after the previous one in a 4096-byte-aligned block, so with a
/// `SIZE` that is a multiple of 4096 every buffer suits `O_DIRECT`. Create a pool in a `static`
/// or with [`allocate`](Self::allocate): a pool on the stack would be as large as its buffers.
pub struct BufPool<const COUNT: usize, const SIZE: usize> {
    /// Indices of the buffers nobody holds; all of them at first (zero bytes).
    free: FreeList<COUNT>,
    memory: Memory<COUNT, SIZE>,
}

#[repr(C, align(4096))]
struct Memory<const COUNT: usize, const SIZE: usize>(UnsafeCell<MaybeUninit<[[u8; SIZE]; COUNT]>>);

// SAFETY: the bytes of buffer `i` are reached only through the one `IoBuf`/`IoBufMut` that popped
// `i` from the free list (and, while a request holds that buffer, by the kernel); the free list is
// lock-free and shared by design.
unsafe impl<const COUNT: usize, const SIZE: usize> Sync for BufPool<COUNT, SIZE> {}

impl<const COUNT: usize, const SIZE: usize> BufPool<COUNT, SIZE> {
    /// Compile-time check of the two sizes.
    const VALID: () = assert!(
        COUNT >= 1 && COUNT <= MAX_BUFFERS && SIZE >= 1 && SIZE <= MAX_BUFFER_SIZE,
        "BufPool needs 1 <= COUNT <= 16384 and 1 <= SIZE <= 1 GiB (the kernel's limits)"
    );

    crate::loom::maybe_const_fn! {
        /// A pool with every buffer free. All zero bytes: in a `static` it needs no
        /// initialisation and takes no room in the binary.
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            #[allow(clippy::let_unit_value)]
            let () = Self::VALID;
            BufPool {
                free: FreeList::full(),
                memory: Memory(UnsafeCell::new(MaybeUninit::zeroed())),
            }
        }
    }

    /// A pool allocated once on the heap (zeroed, so the pages are only touched when used) and
    /// never freed: its buffers may outlive any owner.
    pub fn allocate() -> &'static Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::VALID;
        #[cfg(not(all(test, loom)))]
        {
            let layout = std::alloc::Layout::new::<Self>();
            // SAFETY: the layout is not zero-sized (COUNT, SIZE >= 1).
            let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Self>();
            if ptr.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            // SAFETY: every field is valid as zero bytes (atomics and bytes; a zero free list is
            // full, see `FreeList::full`), the allocation fits and is aligned for `Self`, and it
            // is leaked, so the reference is `'static`.
            unsafe { &*ptr }
        }
        #[cfg(all(test, loom))]
        {
            Box::leak(Box::new(Self::new()))
        }
    }

    /// A free buffer (empty, capacity `SIZE`), or `None` if all are taken. Lock-free; dropping
    /// the buffer (or an `IoBuf` made from it) gives it back.
    pub fn take(&'static self) -> Option<IoBufMut> {
        let index = self.free.pop()?;
        let ptr = self.buffer_ptr(index as usize);
        // SAFETY: popping `index` made its bytes ours alone until the buffer is dropped; the pool
        // (and so the free list) is `'static`; `index < COUNT <= 2^14` fits a u16 and
        // `SIZE <= 2^30` a u32 (`VALID`).
        Some(unsafe { IoBufMut::from_pool(ptr, self.id(), index as u16, SIZE as u32) })
    }

    /// True when every buffer is taken (a snapshot).
    pub fn is_exhausted(&self) -> bool {
        self.free.is_empty()
    }

    /// The pool's identity as pool buffers record it: the address of its free list.
    pub(crate) fn id(&'static self) -> NonNull<()> {
        NonNull::from(&self.free).cast()
    }

    /// The address of buffer `index`.
    fn buffer_ptr(&self, index: usize) -> NonNull<u8> {
        debug_assert!(index < COUNT);
        // SAFETY: `index < COUNT`, so the offset stays inside the block (zeroed at creation, so
        // every byte is initialised).
        let ptr = unsafe { self.memory.0.get().cast::<u8>().add(index * SIZE) };
        // SAFETY: derived from a reference, so not null.
        unsafe { NonNull::new_unchecked(ptr) }
    }

    /// One `iovec` per buffer, in index order, for `IORING_REGISTER_BUFFERS`.
    pub(crate) fn iovecs(&self) -> impl Iterator<Item = libc::iovec> + '_ {
        (0..COUNT).map(|i| libc::iovec {
            iov_base: self.buffer_ptr(i).as_ptr().cast(),
            iov_len: SIZE,
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_distinct_aligned_and_come_back_on_drop() {
        static POOL: BufPool<3, 4096> = BufPool::new();
        let a = POOL.take().unwrap();
        let b = POOL.take().unwrap();
        let c = POOL.take().unwrap();
        assert!(POOL.take().is_none() && POOL.is_exhausted());
        let addrs = [
            a.as_ref().as_ptr(),
            b.as_ref().as_ptr(),
            c.as_ref().as_ptr(),
        ];
        for (i, addr) in addrs.iter().enumerate() {
            assert_eq!(*addr as usize % 4096, 0, "buffer {i} is page-aligned");
        }
        assert_eq!(addrs[1] as usize - addrs[0] as usize, 4096);
        assert_eq!((a.len(), a.capacity()), (0, 4096));
        drop(b);
        let again = POOL.take().unwrap();
        assert_eq!(
            again.as_ref().as_ptr(),
            addrs[1],
            "the freed buffer is reused"
        );
        // As an IoBuf too, and `into_vec` hands a pool buffer back instead of freeing it.
        let frozen = crate::IoBuf::from(again);
        let frozen = frozen.into_vec().unwrap_err();
        drop(frozen);
        assert!(POOL.take().is_some());
        drop((a, c));
    }

    #[test]
    fn a_static_pool_is_zero_bytes_and_allocate_matches_it() {
        // `.bss`: nothing to store in the binary, nothing to initialise.
        let pool = BufPool::<2, 64>::new();
        // SAFETY: reading the bytes of a live value of plain atomics and bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                std::ptr::from_ref(&pool).cast::<u8>(),
                std::mem::size_of_val(&pool),
            )
        };
        assert!(bytes.iter().all(|&b| b == 0));
        let heap = BufPool::<2, 64>::allocate();
        let (x, y) = (heap.take().unwrap(), heap.take().unwrap());
        assert!(heap.take().is_none());
        assert_ne!(x.as_ref().as_ptr(), y.as_ref().as_ptr());
        assert_eq!(heap.iovecs().count(), 2);
    }

    #[test]
    fn buffers_move_between_threads_and_all_return() {
        static POOL: BufPool<8, 64> = BufPool::new();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let mut held = Vec::new();
                    for i in 0..100_000 {
                        if let Some(mut buf) = POOL.take() {
                            assert!(buf.is_empty(), "a taken buffer starts empty");
                            assert!(buf.extend_from_slice(&[1; 64]));
                            held.push(buf);
                        }
                        if i % 3 == 0 || held.len() > 2 {
                            held.clear();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let all: Vec<_> = std::iter::from_fn(|| POOL.take()).collect();
        assert_eq!(all.len(), 8, "every buffer came back exactly once");
    }
}
