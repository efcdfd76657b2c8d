//! [`BufRing`]: a provided-buffer ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19), and
//! [`BufLease`], one received buffer lent to the caller.
//!
//! A ring is `COUNT` buffers of `SIZE` bytes and the ring of their descriptions the kernel reads,
//! in one `'static` value: all zero bytes when created, so a `static` ring sits in `.bss`. A loop
//! registers it ([`EventLoop::register_buf_ring`]); a multishot receive
//! ([`Handle::recv_multi`]) then lets the kernel pick a free buffer for each message it
//! receives, so an idle connection holds no buffer at all. The received bytes come back as a
//! [`BufLease`], which gives its buffer back to the ring when dropped: no copy, no allocation.
//!
//! Who holds a buffer: the kernel (in the ring, free to fill), or the pieces received into it
//! (each in a stream's queue or a lease), or the return queue. A buffer's reference count says
//! how many pieces are out, plus one while the kernel goes on filling it; whoever drops it to
//! zero pushes the buffer's index onto a lock-free queue (the submission ring's type,
//! `SubmitQueue`). The loop alone writes the kernel's ring, and moves what it finds in the queue
//! back into it at its next pass. While a stream waits for buffers (the ring ran dry), a
//! returned buffer also wakes the loop through its eventfd.
//!
//! A ring registered whole (`register_buf_ring`) gives each receive a buffer of its own: one
//! piece per buffer. A ring registered incremental (`register_buf_ring_incremental`,
//! `IOU_PBUF_RING_INC`, Linux 6.12) lets the kernel fill a buffer with several receives, one
//! after the other, each a piece at the next offset (possibly of different streams): a small
//! message then costs its bytes, not a whole buffer. The loop keeps each buffer's fill offset.
//!
//! [`EventLoop::register_buf_ring`]: crate::EventLoop::register_buf_ring
//! [`Handle::recv_multi`]: crate::Handle::recv_multi

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::AtomicU16;

use crate::error::Error;
use crate::handoff::submit_queue::SubmitQueue;
use crate::loom::{fence, AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};

/// The most buffers one ring may hold (the kernel's limit on a provided-buffer ring).
pub const MAX_RING_BUFFERS: usize = 1 << 15;

/// The largest buffer (`SIZE`) of a ring registered incremental, 16 MiB less a byte: a piece's
/// offset and length travel in 24 bits each.
pub const MAX_INCREMENTAL_SIZE: usize = (1 << 24) - 1;

/// The owner word while a loop registers the ring (claimed, not open to streams yet).
const CLAIMING: usize = usize::MAX;

/// In a buffer's fill word (`consumed`): the kernel goes on filling the buffer (its last CQE had
/// `IORING_CQE_F_BUF_MORE`); the low bits are the bytes filled so far.
const KERNEL_HOLDS: u32 = 1 << 31;

/// One entry of the kernel's ring (`struct io_uring_buf`). The ring's tail is the `resv` field
/// of entry 0, so entries are written field by field and entry 0's `resv` is never written as a
/// field.
#[repr(C)]
struct Entry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// Where a buffer of a stream's list points next, and how many bytes it holds.
#[derive(Clone, Copy)]
pub struct Link {
    pub next: u16,
    pub len: u32,
}

#[repr(C, align(4096))]
struct Entries<const COUNT: usize>(UnsafeCell<MaybeUninit<[Entry; COUNT]>>);

#[repr(C, align(4096))]
struct Bytes<const COUNT: usize, const SIZE: usize>(UnsafeCell<MaybeUninit<[[u8; SIZE]; COUNT]>>);

/// `COUNT` receive buffers of `SIZE` bytes that the kernel fills as messages arrive.
///
/// ```
/// use static_uring::{BufRing, Config};
///
/// static RING: BufRing<64, 2048> = BufRing::new();
///
/// let (handle, mut event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
/// event_loop.register_buf_ring(&RING).unwrap();
/// let thread = std::thread::spawn(move || event_loop.run());
///
/// let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
/// let mut messages = handle.recv_multi(b, &RING).unwrap();
/// std::io::Write::write_all(&mut &a, b"hello").unwrap();
/// let lease = messages.next().wait().unwrap(); // the kernel picked a buffer of RING
/// assert_eq!(&lease[..], b"hello");
/// drop(lease); // back to the ring
/// # drop((messages, handle));
/// # thread.join().unwrap().unwrap();
/// ```
///
/// `COUNT` is a power of two, at most 32,768 (the kernel's rule); `SIZE` at least 1 (and at
/// most [`MAX_INCREMENTAL_SIZE`] for a ring registered incremental). A ring serves one loop at a
/// time. Create it in a `static`: on the stack it would be as large as its
/// buffers.
pub struct BufRing<const COUNT: usize, const SIZE: usize> {
    entries: Entries<COUNT>,
    bytes: Bytes<COUNT, SIZE>,
    /// Per buffer, its place in the list of the stream that received it (owned by whoever holds
    /// the buffer; whole buffers only).
    links: UnsafeCell<MaybeUninit<[Link; COUNT]>>,
    /// Per buffer, its pieces not yet given back, plus one while the kernel goes on filling it.
    refs: [AtomicU32; COUNT],
    /// Per buffer, its fill word: the bytes the kernel filled so far, and `KERNEL_HOLDS` (loop
    /// only).
    consumed: UnsafeCell<MaybeUninit<[u32; COUNT]>>,
    /// Registered incremental with its loop.
    incremental: AtomicBool,
    /// Buffers given back by their holders, for the loop to hand to the kernel again.
    returned: SubmitQueue<COUNT>,
    /// The storage key of the loop it is registered with (0: none).
    owner: AtomicUsize,
    /// Its buffer group id with that loop.
    group: AtomicU32,
    /// A duplicate of the loop's eventfd (`watch`), written by a returned buffer while
    /// `starving`; -1 before the first claim.
    wake_fd: AtomicI32,
    /// A stream of the loop waits for buffers.
    starving: AtomicBool,
    /// The loop's shadow of the kernel ring's tail (loop only).
    tail: AtomicU32,
    /// Buffers the loop took from the kernel, and buffers it took back from `returned` (loop
    /// only; their difference is what streams, leases and the queue hold).
    taken: AtomicUsize,
    given: AtomicUsize,
    /// The ring as `&'static dyn Provided`, written by the first claim (before any lease of it
    /// exists) and never again: an `IoBuf` made from a lease names it with a thin pointer.
    this: UnsafeCell<Option<&'static dyn Provided>>,
}

// SAFETY: a piece's bytes are reached only by its one holder (module doc: the kernel, one
// stream's queue, one lease; pieces of a buffer never overlap: the kernel fills each range
// once), and a buffer's link only by the holder of the whole buffer (a ring registered whole),
// handed over with Release/Acquire (the CQ, the slot's phases, the reference count, the queue's
// stamps); the entries and the loop-only fields (fill words) are written by the registered
// loop's thread alone; the rest is atomic.
unsafe impl<const COUNT: usize, const SIZE: usize> Sync for BufRing<COUNT, SIZE> {}

impl<const COUNT: usize, const SIZE: usize> BufRing<COUNT, SIZE> {
    /// Compile-time check of the two sizes.
    const VALID: () = assert!(
        COUNT.is_power_of_two()
            && COUNT <= MAX_RING_BUFFERS
            && SIZE >= 1
            && SIZE <= u32::MAX as usize,
        "BufRing needs COUNT a power of two <= 32768 and 1 <= SIZE <= u32::MAX"
    );

    crate::loom::maybe_const_fn! {
        /// A ring with every buffer free, all zero bytes: in a `static` it needs no
        /// initialisation and takes no room in the binary.
        pub fn new() -> Self {
            #[allow(clippy::let_unit_value)]
            let () = Self::VALID;
            BufRing {
                entries: Entries(UnsafeCell::new(MaybeUninit::zeroed())),
                bytes: Bytes(UnsafeCell::new(MaybeUninit::zeroed())),
                links: UnsafeCell::new(MaybeUninit::zeroed()),
                refs: crate::loom::const_array!(AtomicU32::new(0); COUNT),
                consumed: UnsafeCell::new(MaybeUninit::zeroed()),
                incremental: AtomicBool::new(false),
                returned: SubmitQueue::new(),
                owner: AtomicUsize::new(0),
                group: AtomicU32::new(0),
                wake_fd: AtomicI32::new(-1),
                starving: AtomicBool::new(false),
                tail: AtomicU32::new(0),
                taken: AtomicUsize::new(0),
                given: AtomicUsize::new(0),
                this: UnsafeCell::new(None),
            }
        }
    }

    /// Bytes of buffer memory: what the ring costs (the entries, links, counts and fill words
    /// are on top: 32 bytes a buffer).
    pub const BYTES: usize = COUNT * SIZE;

    fn entry(&self, index: usize) -> *mut Entry {
        self.entries.0.get().cast::<Entry>().wrapping_add(index)
    }

    /// Buffer `bid`'s fill word (loop only).
    fn consumed(&self, bid: u16) -> *mut u32 {
        self.consumed.get().cast::<u32>().wrapping_add(bid as usize)
    }

    fn buffer(&self, bid: u16) -> *mut u8 {
        self.bytes
            .0
            .get()
            .cast::<u8>()
            .wrapping_add(bid as usize * SIZE)
    }

    /// The kernel ring's tail (entry 0's `resv`).
    fn shared_tail(&self) -> &AtomicU16 {
        // SAFETY: entry 0's `resv` is 2-aligned, inside the ring, lives as long as `self`, and
        // is only ever accessed atomically (by us and by the kernel).
        unsafe { &*std::ptr::addr_of_mut!((*self.entry(0)).resv).cast::<AtomicU16>() }
    }

    /// Loop side: puts buffer `bid` into the kernel's ring (published by `publish`).
    fn stage(&self, bid: u16) {
        let tail = self.tail.load(Ordering::Relaxed);
        let entry = self.entry(tail as usize & (COUNT - 1));
        // SAFETY: the loop alone writes entries; `entry` is in the ring and not one the kernel
        // may read (between its head and the published tail there are fewer than COUNT buffers,
        // and this one is not among them: we hold `bid`). Entry 0's `resv` is not written.
        unsafe {
            std::ptr::addr_of_mut!((*entry).addr).write(self.buffer(bid) as u64);
            std::ptr::addr_of_mut!((*entry).len).write(SIZE as u32);
            std::ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail.store(tail.wrapping_add(1), Ordering::Relaxed);
    }

    /// Loop side: lets the kernel see the staged entries.
    fn publish(&self) {
        // Release: the entries written before are visible to the kernel before the tail.
        self.shared_tail()
            .store(self.tail.load(Ordering::Relaxed) as u16, Ordering::Release);
    }

    /// Claims the ring for a loop that registers it as its buffer group `group`, whose eventfd
    /// is `wake_fd`: every buffer into the kernel's ring; [`open`](Self::open) then lets the
    /// loop's streams use it. `Err(InUse)` while another loop has it, or while a buffer is still
    /// held (a lease, a stream's list) from an earlier loop.
    pub(crate) fn claim(&'static self, group: u16, wake_fd: i32) -> Result<(), Error> {
        if self
            .owner
            .compare_exchange(0, CLAIMING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(Error::InUse);
        }
        // Buffers given back since the last loop are free again.
        let mut given = self.given.load(Ordering::Relaxed);
        while self.returned.pop().is_some() {
            given += 1;
        }
        if given != self.taken.load(Ordering::Relaxed) || self.returned.len() != 0 {
            self.owner.store(0, Ordering::Release);
            return Err(Error::InUse);
        }
        // Nobody holds a buffer, so nobody can be pushing one: the queue starts a new lap 0.
        self.returned.reset(0);
        // SAFETY: we hold the claim, and no lease (the only reader) exists; once written it
        // never changes, so later claims leave it alone.
        unsafe {
            if (*self.this.get()).is_none() {
                *self.this.get() = Some(self);
            }
        }
        self.taken.store(0, Ordering::Relaxed);
        self.given.store(0, Ordering::Relaxed);
        self.incremental.store(false, Ordering::Relaxed);
        for bid in 0..COUNT as u16 {
            // SAFETY: we hold the claim and every buffer (none is out): the loop-only words are
            // ours.
            unsafe { self.consumed(bid).write(0) };
        }
        if let Err(e) = self.watch(wake_fd) {
            self.owner.store(0, Ordering::Release);
            return Err(e);
        }
        self.group.store(group as u32, Ordering::Relaxed);
        self.starving.store(false, Ordering::Relaxed);
        self.tail.store(0, Ordering::Relaxed);
        for bid in 0..COUNT as u16 {
            self.stage(bid);
        }
        self.publish();
        Ok(())
    }

    /// Makes `wake_fd` (the loop's eventfd) the descriptor a returned buffer writes to wake the
    /// loop: a duplicate the ring owns. It is never closed: a later claim makes the same number
    /// name the new loop's eventfd (`dup3`, atomic), so a buffer given back late never writes to
    /// a number reused by an unrelated file.
    fn watch(&self, wake_fd: i32) -> Result<(), Error> {
        let current = self.wake_fd.load(Ordering::Relaxed);
        // SAFETY: plain descriptor syscalls on descriptors we own (or -1); results checked.
        let fd = unsafe {
            match current {
                -1 => libc::fcntl(wake_fd, libc::F_DUPFD_CLOEXEC, 0),
                _ => libc::dup3(wake_fd, current, libc::O_CLOEXEC),
            }
        };
        if fd < 0 {
            return Err(Error::Os(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
        self.wake_fd.store(fd, Ordering::Release);
        Ok(())
    }

    /// Loop side, once the kernel has the ring: opens it to the streams of loop `owner` (its
    /// storage key), filled incrementally or whole. Release: a stream that finds the owner
    /// (`group_of`, Acquire) sees the group and the mode.
    pub(crate) fn open(&self, owner: usize, incremental: bool) {
        self.incremental.store(incremental, Ordering::Relaxed);
        self.owner.store(owner, Ordering::Release);
    }

    /// Queues buffer `bid` for the loop; true if the loop must be woken (a stream starves).
    fn push_back(&self, bid: u16) -> bool {
        self.returned.push(bid as u32);
        // The fences (here and in `set_starving`) order each side's store before its load:
        // either the loop's `replenish` after `set_starving(true)` finds this push, or this load
        // sees the flag and the eventfd wakes the loop.
        fence(Ordering::SeqCst);
        self.starving.load(Ordering::Relaxed)
    }

    /// The address of the kernel's ring (page-aligned) and its entry count, for registration.
    pub(crate) fn ring_memory(&self) -> (u64, u16) {
        (self.entries.0.get() as u64, COUNT as u16)
    }
}

impl<const COUNT: usize, const SIZE: usize> Default for BufRing<COUNT, SIZE> {
    /// [`BufRing::new`].
    fn default() -> Self {
        Self::new()
    }
}

/// What the loop, its streams and the leases need from a ring, whatever its sizes.
pub trait Provided: Sync {
    /// The `len` bytes at `off` of buffer `bid`.
    ///
    /// # Safety
    /// The caller holds that piece of `bid` (no one, the kernel included, writes it) for as
    /// long as the slice lives, and `off + len` is at most the buffer's size.
    unsafe fn bytes(&self, bid: u16, off: u32, len: u32) -> &[u8];

    /// Gives a piece of buffer `bid` back (its holder lets go of it); the last one out sends the
    /// buffer back to the loop, waking it if a stream waits for buffers.
    fn give_back(&self, bid: u16);

    /// The list link of buffer `bid`, for its holder.
    fn link(&self, bid: u16) -> *mut Link;

    /// Loop side: the kernel handed `len` bytes of buffer `bid` over in a CQE, with
    /// `IORING_CQE_F_BUF_MORE` (`more`: it goes on filling the buffer). Returns the piece's
    /// offset in the buffer; the caller holds the piece (one reference).
    fn took(&self, bid: u16, len: u32, more: bool) -> u32;

    /// Whether it is registered incremental.
    fn incremental(&self) -> bool;

    /// A piece as a stream's raw result: `bid | len << 16`, and `off << 40` (incremental).
    fn item(&self, bid: u16, off: u32, len: u32) -> usize {
        debug_assert!(off == 0 || (self.incremental() && len as usize <= MAX_INCREMENTAL_SIZE));
        bid as usize | (len as usize) << 16 | (off as usize) << 40
    }

    /// The piece `(bid, off, len)` of a raw result ([`item`](Self::item)).
    fn piece(&self, raw: usize) -> (u16, u32, u32) {
        match self.incremental() {
            true => (
                raw as u16,
                (raw >> 40) as u32,
                ((raw >> 16) & MAX_INCREMENTAL_SIZE) as u32,
            ),
            false => (raw as u16, 0, (raw >> 16) as u32),
        }
    }

    /// Loop side: moves given-back buffers into the kernel's ring; true if there were some.
    fn replenish(&self) -> bool;

    /// Loop side: buffers in the kernel's ring as far as the CQEs reaped so far tell (the
    /// kernel may have taken some whose CQEs are still in the queue).
    fn available(&self) -> usize;

    /// Loop side: a stream waits for buffers (`true`), or none does.
    fn set_starving(&self, starving: bool);

    /// Whether loop `owner` registered it; its group id then.
    fn group_of(&self, owner: usize) -> Option<u16>;

    /// Loop side, at the loop's end: no longer registered.
    fn release(&self);

    /// Buffers and bytes each (for errors and metrics).
    fn size(&self) -> (usize, usize);

    /// The ring's own `&'static dyn` handle (set by its first claim, before any lease).
    fn handle(&self) -> std::ptr::NonNull<&'static dyn Provided>;

    /// The `len` bytes at `off` of buffer `bid`, for an `IoBuf` that holds the piece until it
    /// drops (the ring is `'static`; the holder's hold keeps writers away).
    fn bytes_static(&'static self, bid: u16, off: u32, len: u32) -> &'static [u8] {
        // SAFETY: the caller holds the piece until the returned slice's owner gives it back.
        unsafe { self.bytes(bid, off, len) }
    }
}

impl<const COUNT: usize, const SIZE: usize> Provided for BufRing<COUNT, SIZE> {
    unsafe fn bytes(&self, bid: u16, off: u32, len: u32) -> &[u8] {
        debug_assert!((bid as usize) < COUNT && off as usize + len as usize <= SIZE);
        // SAFETY: the caller's contract: nobody writes the piece while the slice lives.
        unsafe { std::slice::from_raw_parts(self.buffer(bid).add(off as usize), len as usize) }
    }

    fn give_back(&self, bid: u16) {
        // AcqRel: the last one out sees every other holder's reads of the buffer done before
        // it sends the buffer back to be filled again.
        if self.refs[bid as usize].fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        if self.push_back(bid) {
            let fd = self.wake_fd.load(Ordering::Acquire);
            if fd >= 0 {
                let one = 1u64.to_ne_bytes();
                // SAFETY: plain write of 8 bytes from a live buffer; a closed or reused
                // descriptor only makes the write fail or wake a reader early.
                unsafe { libc::write(fd, one.as_ptr().cast(), 8) };
            }
        }
    }

    fn link(&self, bid: u16) -> *mut Link {
        self.links.get().cast::<Link>().wrapping_add(bid as usize)
    }

    fn took(&self, bid: u16, len: u32, more: bool) -> u32 {
        let word = self.consumed(bid);
        // SAFETY: the fill words are the loop's alone.
        let filled = unsafe { word.read() };
        let holds = filled & KERNEL_HOLDS != 0;
        let refs = &self.refs[bid as usize];
        match (holds, more) {
            // The buffer's first piece: nobody else holds any of it (it came back through the
            // queue before it was staged), so plain stores. Counted taken from the kernel once.
            (false, more) => {
                let taken = self.taken.load(Ordering::Relaxed);
                self.taken.store(taken + 1, Ordering::Relaxed);
                refs.store(1 + u32::from(more), Ordering::Relaxed);
            }
            // One more piece while the kernel keeps the buffer (its reference keeps the count
            // above zero whatever the pieces' holders do).
            (true, true) => {
                refs.fetch_add(1, Ordering::Relaxed);
            }
            // The kernel's last piece takes over the kernel's reference.
            (true, false) => {}
        }
        let off = filled & !KERNEL_HOLDS;
        let next = match more {
            true => KERNEL_HOLDS | off.saturating_add(len).min(!KERNEL_HOLDS),
            false => 0,
        };
        // SAFETY: as above.
        unsafe { word.write(next) };
        off
    }

    fn incremental(&self) -> bool {
        self.incremental.load(Ordering::Relaxed)
    }

    fn replenish(&self) -> bool {
        let mut any = false;
        while let Some(bid) = self.returned.pop() {
            self.stage(bid as u16);
            let given = self.given.load(Ordering::Relaxed);
            self.given.store(given + 1, Ordering::Relaxed);
            any = true;
        }
        if any {
            self.publish();
        }
        any
    }

    fn available(&self) -> usize {
        let staged = COUNT + self.given.load(Ordering::Relaxed);
        staged - self.taken.load(Ordering::Relaxed)
    }

    fn set_starving(&self, starving: bool) {
        self.starving.store(starving, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    fn group_of(&self, owner: usize) -> Option<u16> {
        (self.owner.load(Ordering::Acquire) == owner)
            .then(|| self.group.load(Ordering::Relaxed) as u16)
    }

    fn release(&self) {
        self.starving.store(false, Ordering::Relaxed);
        // The kernel is done with the ring: a buffer it was still filling is let go (the last
        // of its pieces sends it back).
        for bid in 0..COUNT as u16 {
            let word = self.consumed(bid);
            // SAFETY: the fill words are the loop's alone (the loop is ending).
            if unsafe { word.read() } & KERNEL_HOLDS != 0 {
                // SAFETY: as above.
                unsafe { word.write(0) };
                self.give_back(bid);
            }
        }
        // Release: the loop's bookkeeping is visible to the next claimer.
        self.owner.store(0, Ordering::Release);
    }

    fn size(&self) -> (usize, usize) {
        (COUNT, SIZE)
    }

    fn handle(&self) -> std::ptr::NonNull<&'static dyn Provided> {
        // SAFETY: the field is never null; `claim` filled it before any lease existed.
        let cell = unsafe { &*self.this.get() };
        debug_assert!(cell.is_some(), "a lease exists only after a claim");
        std::ptr::NonNull::from(cell).cast()
    }
}

/// A received buffer of a [`BufRing`], lent to the caller: the bytes the kernel wrote
/// (`Deref<Target = [u8]>`). Dropping it gives the buffer back to the ring, from any thread,
/// without allocating; it stays valid after its loop has stopped.
pub struct BufLease {
    ring: &'static dyn Provided,
    bid: u16,
    off: u32,
    len: u32,
}

impl BufLease {
    /// A lease of the piece of buffer `bid` (which the caller holds) at `off`, `len` bytes.
    pub(crate) fn new(ring: &'static dyn Provided, bid: u16, off: u32, len: u32) -> Self {
        BufLease {
            ring,
            bid,
            off,
            len,
        }
    }

    /// Its ring's handle, buffer and bytes, for an `IoBuf` that takes the lease over (it gives
    /// the buffer back when dropped).
    pub(crate) fn into_parts(
        self,
    ) -> (std::ptr::NonNull<&'static dyn Provided>, u16, &'static [u8]) {
        let this = std::mem::ManuallyDrop::new(self);
        let bytes = this.ring.bytes_static(this.bid, this.off, this.len);
        (this.ring.handle(), this.bid, bytes)
    }

    /// The buffer's index in its ring.
    pub fn buffer_id(&self) -> u16 {
        self.bid
    }

    /// Where the bytes start in the buffer: 0, but for a later piece of a buffer of a ring
    /// registered incremental (`EventLoop::register_buf_ring_incremental`).
    pub fn offset(&self) -> u32 {
        self.off
    }
}

impl std::ops::Deref for BufLease {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the lease holds its piece of `bid` until it drops; `off` and `len` came from
        // the loop's fill word and the kernel's CQE, checked against the buffer size when the
        // loop received it.
        unsafe { self.ring.bytes(self.bid, self.off, self.len) }
    }
}

impl Drop for BufLease {
    fn drop(&mut self) {
        self.ring.give_back(self.bid);
    }
}

impl std::fmt::Debug for BufLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufLease")
            .field("buffer_id", &self.bid)
            .field("offset", &self.off)
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The starving protocol: a buffer given back while a stream starves is never lost.

    use super::*;
    use ::loom::sync::Arc;
    use ::loom::thread;

    /// The loop notes a starving stream and then replenishes; a holder gives a buffer back at
    /// the same time: either the loop's replenish finds the buffer, or the holder sees the flag
    /// (and writes the eventfd). Fails if either fence goes (each side's store may then pass
    /// its load).
    #[test]
    fn loom_buf_ring_starving_stream_never_misses_a_returned_buffer() {
        model(|| {
            // The ring is two page-aligned blocks: more than a model thread's default stack.
            let big = || thread::Builder::new().stack_size(1 << 20);
            let ring = big()
                .spawn(|| Arc::new(BufRing::<2, 8>::new()))
                .unwrap()
                .join()
                .unwrap();
            ring.returned.reset(0);
            let holder = {
                let ring = ring.clone();
                thread::spawn(move || ring.push_back(1))
            };
            let looped = {
                let ring = ring.clone();
                big().spawn(move || {
                    ring.set_starving(true);
                    ring.replenish()
                })
            };
            let found = looped.unwrap().join().unwrap();
            let woke = holder.join().unwrap();
            assert!(
                found || woke,
                "the returned buffer and the starving stream missed each other"
            );
        });
    }

    /// Checks `f` under loom, at most 3 preemptions (whatever LOOM_MAX_PREEMPTIONS says).
    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = ::loom::model::Builder::new();
        builder.preemption_bound = Some(builder.preemption_bound.map_or(3, |p| p.min(3)));
        builder.check(f);
    }

    /// A ring of two page-aligned blocks, built on a thread with room for it.
    fn ring() -> Arc<BufRing<2, 8>> {
        let ring = thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(|| Arc::new(BufRing::<2, 8>::new()))
            .unwrap()
            .join()
            .unwrap();
        ring.returned.reset(0);
        ring
    }

    /// Two pieces of one buffer dropped on two threads while the loop lets the kernel's hold
    /// go (its loop ends): exactly one of the three sends the buffer back. Fails if the count
    /// is decremented with a load and a store (a lost update sends it back twice or never).
    #[test]
    fn loom_pieces_and_the_kernels_hold_send_a_buffer_back_once() {
        model(|| {
            let ring = ring();
            ring.open(1, true);
            assert_eq!(ring.took(1, 2, true), 0);
            assert_eq!(ring.took(1, 3, true), 2);
            let holders: Vec<_> = (0..2)
                .map(|_| {
                    let ring = ring.clone();
                    thread::spawn(move || ring.give_back(1))
                })
                .collect();
            ring.release();
            for holder in holders {
                holder.join().unwrap();
            }
            assert_eq!(ring.returned.pop(), Some(1));
            assert_eq!(ring.returned.pop(), None, "the buffer went back twice");
        });
    }

    /// The loop takes more pieces of a buffer (the kernel still filling it, then done) while a
    /// holder drops the first one: the kernel's reference keeps the buffer out until its last
    /// piece is dropped too, and it goes back once.
    #[test]
    fn loom_a_buffer_goes_back_after_its_last_piece_whatever_the_order() {
        model(|| {
            let ring = ring();
            ring.open(1, true);
            assert_eq!(ring.took(0, 4, true), 0);
            let first = {
                let ring = ring.clone();
                thread::spawn(move || ring.give_back(0))
            };
            assert_eq!(ring.took(0, 2, true), 4);
            assert_eq!(ring.took(0, 2, false), 6);
            assert_eq!(ring.returned.pop(), None, "back while pieces are out");
            ring.give_back(0);
            ring.give_back(0);
            first.join().unwrap();
            assert_eq!(ring.returned.pop(), Some(0));
            assert_eq!(ring.returned.pop(), None, "the buffer went back twice");
        });
    }
}
