//! The ring's two queues as the loop thread writes and reads them: a second mapping of the
//! kernel's SQ and CQ rings and SQE array, with the loop's own cursors.
//!
//! The io-uring crate's `submission()` and `completion()` views re-read the kernel's head and
//! tail, and their drop stores one back, on every use: about 26 instructions per pushed SQE and
//! 14 per reaped CQE (callgrind, loop-thread nop@64). Here the SQ keeps its tail and the last
//! head it saw, reading the kernel's head only when the queue looks full, and a CQE is read
//! where the kernel wrote it instead of being copied into a batch first.
//!
//! The mapping is the kernel's memory mapped a second time from the ring's descriptor (the
//! same pages; no memory of its own), so its addresses stay put however the `Ring` moves.
//! Nothing else in the crate may touch the SQ's tail or the CQ's head once a `Queues` exists:
//! the `Ring` reaches the queues through it only.
//!
//! ```text
//! push:  SQE ─▶ sqes[tail & mask], tail + 1 ─▶ SQ tail (Release)      the kernel reads it at enter
//! pop:   CQ tail (Acquire, when the cached one is used up) ─▶ cqes[head & mask], head + 1
//! publish (end of a reap, every enter): head ─▶ CQ head (Release)
//! ```
//!
//! Without SQPOLL the kernel reads entries only inside `io_uring_enter`, so until then the
//! queue is the loop's to rearrange: a send pushed behind receives moves ahead of them
//! ([`Sq::send_pushed`]), and a receive its data comes from completes at once.

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, Ordering};

use io_uring::{cqueue, squeue};

/// `IORING_OFF_SQ_RING`, `IORING_OFF_CQ_RING`, `IORING_OFF_SQES`: the mmap offsets.
const OFF_SQ_RING: libc::off_t = 0;
const OFF_CQ_RING: libc::off_t = 0x800_0000;
const OFF_SQES: libc::off_t = 0x1000_0000;
/// `IORING_FEAT_SINGLE_MMAP`: the SQ and CQ rings share one mapping.
const FEAT_SINGLE_MMAP: u32 = 1;
/// `IORING_SETUP_NO_SQARRAY`: no SQ index array (the ring's length stops before it).
const SETUP_NO_SQARRAY: u32 = 1 << 16;
/// The SQ ring's flags: `IORING_SQ_NEED_WAKEUP`, `IORING_SQ_CQ_OVERFLOW`, `IORING_SQ_TASKRUN`.
const SQ_NEED_WAKEUP: u32 = 1;
const SQ_CQ_OVERFLOW: u32 = 2;
const SQ_TASKRUN: u32 = 4;

/// `struct io_sqring_offsets`.
#[repr(C)]
#[allow(dead_code)] // the kernel's layout, of which some fields are not read
struct SqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

/// `struct io_cqring_offsets`.
#[repr(C)]
#[allow(dead_code)] // the kernel's layout, of which some fields are not read
struct CqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

/// `struct io_uring_params`, as the kernel filled it in at setup.
#[repr(C)]
#[allow(dead_code)] // the kernel's layout, of which some fields are not read
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqOffsets,
    cq_off: CqOffsets,
}

// `io_uring::Parameters` is a `repr(transparent)` wrapper of the kernel's struct (its doc says
// so): same size, same layout as `Params`.
static_assertions::assert_eq_size!(Params, io_uring::Parameters);
static_assertions::const_assert_eq!(std::mem::size_of::<Params>(), 120);

/// One shared mapping of the ring's descriptor, unmapped when dropped.
struct Map {
    addr: NonNull<u8>,
    len: usize,
}

impl Map {
    fn new(fd: RawFd, offset: libc::off_t, len: usize) -> io::Result<Map> {
        // SAFETY: a fresh shared mapping of the ring's memory at an offset the kernel defines;
        // nothing else is placed at the address the kernel picks.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let addr = NonNull::new(addr.cast()).ok_or_else(|| io::Error::other("mmap at 0"))?;
        Ok(Map { addr, len })
    }

    /// The address `offset` bytes in (an offset the kernel gave, inside the mapping).
    fn at<T>(&self, offset: u32) -> *mut T {
        debug_assert!((offset as usize) < self.len);
        // SAFETY: in bounds (the kernel's offsets lie inside the length computed from them).
        unsafe { self.addr.as_ptr().add(offset as usize).cast() }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; the queues that point into it go with it.
        unsafe { libc::munmap(self.addr.as_ptr().cast(), self.len) };
    }
}

/// The submission queue: the loop's tail, published after every push, and the last head seen.
pub(crate) struct Sq {
    head: *const AtomicU32,
    tail: *const AtomicU32,
    flags: *const AtomicU32,
    sqes: *mut squeue::Entry,
    mask: u32,
    entries: u32,
    /// The tail the loop wrote last (the kernel's copy is only ever this).
    local_tail: u32,
    /// The kernel's head when last read: the queue has at least `entries - (tail - head)` room.
    seen_head: u32,
    /// Sends are moved before the receives pushed just before them ([`Sq::send_pushed`]):
    /// only while the kernel reads entries inside `io_uring_enter` alone (no SQPOLL), and only
    /// this thread enters. Set by the `Ring`; off in a fresh `Queues`.
    pub(crate) reorder: bool,
    /// A send was pushed since the last enter ([`Sq::take_send_staged`]).
    send_staged: bool,
    /// A receive was pushed since the last enter: only then can a send pushed now move
    /// ([`Sq::send_pushed`], which checks the rest). A stream's sends skip the call.
    recv_pushed: bool,
}

/// The completion queue: the loop's head, published after every CQE it takes, and the last
/// tail seen.
pub(crate) struct Cq {
    head: *const AtomicU32,
    tail: *const AtomicU32,
    cqes: *const cqueue::Entry,
    mask: u32,
    /// The head the loop wrote last.
    local_head: u32,
    /// The kernel's tail when last read: CQEs up to it are posted.
    seen_tail: u32,
}

/// The most places [`Sq::send_pushed`] moves a send (a batch's reordering stays linear).
const REORDER_MAX: u32 = 64;
/// `IOSQE_IO_DRAIN`, `IOSQE_IO_LINK`, `IOSQE_IO_HARDLINK`: an entry with one keeps its place.
const ORDER_FLAGS: u8 = 0x02 | 0x04 | 0x08;
/// `IOSQE_IO_LINK`, `IOSQE_IO_HARDLINK`: the next entry is linked to this one.
const LINK_FLAGS: u8 = 0x04 | 0x08;

/// An entry's `flags` byte: the second byte of `struct io_uring_sqe` (`Entry` is a
/// `repr(C)` wrapper of it).
///
/// # Safety
/// `e` points to an initialised entry.
#[inline(always)]
unsafe fn sqe_flags(e: *const squeue::Entry) -> u8 {
    // SAFETY: the contract; byte 1 of the kernel's layout (`opcode: u8, flags: u8, ...`).
    unsafe { e.cast::<u8>().add(1).read() }
}

/// The socket sends: `IORING_OP_SEND`, `IORING_OP_SENDMSG` and their zero-copy forms, as bits
/// of their opcodes (all below 64).
const SENDS: u64 = 1 << io_uring::opcode::Send::CODE
    | 1 << io_uring::opcode::SendMsg::CODE
    | 1 << io_uring::opcode::SendZc::CODE
    | 1 << io_uring::opcode::SendMsgZc::CODE;

/// The socket receives a send may pass (`IORING_OP_RECV`, `IORING_OP_RECVMSG`), as [`SENDS`].
const RECVS: u64 = 1 << io_uring::opcode::Recv::CODE | 1 << io_uring::opcode::RecvMsg::CODE;

/// The entries that usually complete inside the `io_uring_enter` that submits them, so that the
/// loop goes round to deliver them instead of arming its sleep for a wait that ends at once: a
/// nop, a send with room in the socket buffer, a read or write the page cache serves. (A read
/// the cache misses, or one with `O_DIRECT`, costs a pass and an enter more.)
const INLINE: u64 = SENDS
    | 1 << io_uring::opcode::Nop::CODE
    | 1 << io_uring::opcode::Read::CODE
    | 1 << io_uring::opcode::Write::CODE
    | 1 << io_uring::opcode::ReadFixed::CODE
    | 1 << io_uring::opcode::WriteFixed::CODE
    | 1 << io_uring::opcode::Readv::CODE
    | 1 << io_uring::opcode::Writev::CODE;

/// An opcode's bit in [`SENDS`], [`RECVS`] and [`INLINE`] (none above 63): [`Sq::push`] tests
/// every entry's.
#[inline(always)]
fn opcode_bit(opcode: u32) -> u64 {
    if opcode < 64 {
        1 << opcode
    } else {
        0
    }
}

/// The loop's view of the ring's queues, over its own mappings.
pub(crate) struct Queues {
    pub(crate) sq: Sq,
    pub(crate) cq: Cq,
    /// Kept for the pointers above (the SQ ring, the CQ ring unless shared, the SQEs).
    _maps: [Option<Map>; 3],
}

// SAFETY: the pointers name the `Queues`' own mappings, which live as long as it does; it moves
// between threads only whole, inside its `Ring`, and only the thread owning the `Ring` uses it.
unsafe impl Send for Queues {}

impl Queues {
    /// Maps the queues of `uring`, whose SQ and CQ nothing has used yet.
    pub(crate) fn map(uring: &io_uring::IoUring) -> io::Result<Queues> {
        // SAFETY: `Parameters` is a transparent wrapper of the kernel's struct (asserted above).
        let p = unsafe { &*(uring.params() as *const io_uring::Parameters).cast::<Params>() };
        let fd = std::os::fd::AsRawFd::as_raw_fd(uring);
        let array_len = match p.flags & SETUP_NO_SQARRAY {
            0 => p.sq_entries as usize * size_of::<u32>(),
            _ => 0,
        };
        let sq_len = p.sq_off.array as usize + array_len;
        let cq_len = p.cq_off.cqes as usize + p.cq_entries as usize * size_of::<cqueue::Entry>();
        let sqe_len = p.sq_entries as usize * size_of::<squeue::Entry>();
        let sqes = Map::new(fd, OFF_SQES, sqe_len)?;
        let (sq_ring, cq_ring) = match p.features & FEAT_SINGLE_MMAP {
            0 => (
                Map::new(fd, OFF_SQ_RING, sq_len)?,
                Some(Map::new(fd, OFF_CQ_RING, cq_len)?),
            ),
            _ => (Map::new(fd, OFF_SQ_RING, sq_len.max(cq_len))?, None),
        };
        let cq_map = cq_ring.as_ref().unwrap_or(&sq_ring);
        // SAFETY: the kernel's offsets inside the maps above; the masks and sizes are constant
        // for the ring's life, and the cursors are read as the kernel left them (nothing has
        // been pushed or reaped yet).
        let (sq, cq) = unsafe {
            let sq = Sq {
                head: sq_ring.at(p.sq_off.head),
                tail: sq_ring.at(p.sq_off.tail),
                flags: sq_ring.at(p.sq_off.flags),
                sqes: sqes.at(0),
                mask: sq_ring.at::<u32>(p.sq_off.ring_mask).read(),
                entries: sq_ring.at::<u32>(p.sq_off.ring_entries).read(),
                local_tail: (*sq_ring.at::<AtomicU32>(p.sq_off.tail)).load(Ordering::Relaxed),
                seen_head: (*sq_ring.at::<AtomicU32>(p.sq_off.head)).load(Ordering::Acquire),
                reorder: false,
                send_staged: false,
                recv_pushed: false,
            };
            let cq = Cq {
                head: cq_map.at(p.cq_off.head),
                tail: cq_map.at(p.cq_off.tail),
                cqes: cq_map.at(p.cq_off.cqes),
                mask: cq_map.at::<u32>(p.cq_off.ring_mask).read(),
                local_head: (*cq_map.at::<AtomicU32>(p.cq_off.head)).load(Ordering::Relaxed),
                seen_tail: (*cq_map.at::<AtomicU32>(p.cq_off.tail)).load(Ordering::Acquire),
            };
            (sq, cq)
        };
        Ok(Queues {
            sq,
            cq,
            _maps: [Some(sq_ring), cq_ring, Some(sqes)],
        })
    }
}

impl Sq {
    /// Writes `sqe` into the next free entry and publishes it; false (nothing written) when the
    /// queue is full.
    ///
    /// # Safety
    /// As the io-uring crate's `push`: whatever `sqe` names stays valid until its CQE.
    #[inline(always)]
    pub(crate) unsafe fn push(&mut self, sqe: &squeue::Entry) -> bool {
        let tail = self.local_tail;
        if tail.wrapping_sub(self.seen_head) == self.entries && self.room() == 0 {
            return false;
        }
        // SAFETY: entry `tail & mask` lies in the SQE array and is free: the kernel consumed it
        // (its head passed it) and reads it again only once the tail below passes it.
        unsafe { self.at(tail).write(sqe.clone()) };
        self.local_tail = tail.wrapping_add(1);
        // Release: the entry is written before the kernel can see the tail pass it.
        // SAFETY: the ring's tail word, in the mapping.
        unsafe { (*self.tail).store(self.local_tail, Ordering::Release) };
        let bit = opcode_bit(sqe.get_opcode());
        if bit & SENDS != 0 {
            self.send_staged = true;
            if self.reorder && self.recv_pushed {
                // SAFETY: `reorder`'s invariant.
                unsafe { self.send_pushed() };
            }
        } else if bit & RECVS != 0 {
            self.recv_pushed = true;
        }
        true
    }

    /// Moves the send just pushed before the receives pushed just before it, up to the first
    /// entry that is not a receive (at most [`REORDER_MAX`] places), so that between two other
    /// entries every send goes before every receive, each kind in its own order. A receive
    /// whose data a send of the same batch provides (both ends of a connection on this ring)
    /// then finds it at once, where going first it would arm a poll and complete through task
    /// work. Anything else never moves and nothing moves across it (an AsyncCancel stays after
    /// its target), nor across an entry with a link or drain flag or the entry a link continues
    /// into (a chain stays whole); a send with one of those flags stays where it is.
    ///
    /// # Safety
    /// `reorder`'s invariant: the kernel has read no entry since its head, and reads none until
    /// this thread enters.
    #[inline(never)]
    unsafe fn send_pushed(&mut self) {
        // Exact: the kernel moves its head only inside an enter (the contract).
        let head = self.local_tail.wrapping_sub(self.len());
        let mut j = self.local_tail.wrapping_sub(1);
        // SAFETY: the send just pushed, which the kernel has not read (the contract).
        if unsafe { sqe_flags(self.at(j)) } & ORDER_FLAGS != 0 {
            return;
        }
        for _ in 0..REORDER_MAX {
            // SAFETY: `j - 1` lies between the kernel's head and our tail when `j` is not the
            // head: written by `push`, not read by the kernel before the next enter.
            if j == head || !unsafe { self.movable_recv(j.wrapping_sub(1), head) } {
                break;
            }
            // SAFETY: as above; two distinct entries.
            unsafe { std::ptr::swap(self.at(j.wrapping_sub(1)), self.at(j)) };
            j = j.wrapping_sub(1);
        }
    }

    /// Entry `i`: a receive that a send may pass (no link or drain flag, not the entry a link
    /// continues into).
    ///
    /// # Safety
    /// Entries `head..=i` were written by `push` and are not read by the kernel meanwhile.
    unsafe fn movable_recv(&self, i: u32, head: u32) -> bool {
        // SAFETY: the contract.
        let (opcode, flags) = unsafe { ((*self.at(i)).get_opcode(), sqe_flags(self.at(i))) };
        // SAFETY: the contract (`i - 1` is at or after the head).
        let continues_link =
            i != head && unsafe { sqe_flags(self.at(i.wrapping_sub(1))) } & LINK_FLAGS != 0;
        opcode_bit(opcode) & RECVS != 0 && flags & ORDER_FLAGS == 0 && !continues_link
    }

    /// Where entry `i` (a queue position) lies in the SQE array.
    #[inline(always)]
    fn at(&self, i: u32) -> *mut squeue::Entry {
        self.sqes.wrapping_add((i & self.mask) as usize)
    }

    /// Whether a send was pushed since the last call (each enter makes one).
    #[inline]
    pub(crate) fn take_send_staged(&mut self) -> bool {
        // The kernel may have read the entries pushed so far: a send pushed next stays put.
        self.recv_pushed = false;
        std::mem::take(&mut self.send_staged)
    }

    /// Whether a send was pushed since the last enter.
    #[inline]
    pub(crate) fn send_staged(&self) -> bool {
        self.send_staged
    }

    /// The `user_data` of the one entry waiting for the kernel, if exactly one waits and it is
    /// an [`INLINE`] one. Looked at when the loop decides how to enter, not tracked per push
    /// (one entry's opcode is one load).
    #[inline]
    pub(crate) fn lone_inline(&mut self) -> Option<u64> {
        if self.len() != 1 {
            return None;
        }
        // SAFETY: the entry before the tail was written by `push` (one entry waits). Only this
        // thread writes entries and the kernel only reads them, so it holds what `push` wrote
        // even if an SQPOLL thread consumed it since.
        let entry = unsafe { &*self.at(self.local_tail.wrapping_sub(1)) };
        (opcode_bit(entry.get_opcode()) & INLINE != 0).then(|| entry.get_user_data())
    }

    /// Entries pushed that the kernel has not consumed yet (reads its head).
    #[inline]
    pub(crate) fn len(&mut self) -> u32 {
        // Acquire: the kernel is done with the entries its head passed.
        // SAFETY: the ring's head word, in the mapping.
        self.seen_head = unsafe { (*self.head).load(Ordering::Acquire) };
        self.local_tail.wrapping_sub(self.seen_head)
    }

    /// Free entries now (reads the kernel's head).
    #[inline]
    pub(crate) fn room(&mut self) -> u32 {
        self.entries - self.len()
    }

    /// The SQ ring's flags, with `ordering`.
    #[inline]
    fn flags(&self, ordering: Ordering) -> u32 {
        // SAFETY: the ring's flags word, in the mapping.
        unsafe { (*self.flags).load(ordering) }
    }

    /// SQPOLL: the poller sleeps and needs `IORING_ENTER_SQ_WAKEUP`. The SeqCst fence orders
    /// the tail store before the load, as the kernel's poller orders its flag store before its
    /// tail load, so that one of the two sees the other (as the io-uring crate does).
    #[inline]
    pub(crate) fn need_wakeup(&self) -> bool {
        fence(Ordering::SeqCst);
        self.flags(Ordering::Relaxed) & SQ_NEED_WAKEUP != 0
    }

    /// CQEs overflowed the CQ: an enter with GETEVENTS flushes them.
    #[inline]
    pub(crate) fn cq_overflow(&self) -> bool {
        self.flags(Ordering::Acquire) & SQ_CQ_OVERFLOW != 0
    }

    /// Task work is pending (with `IORING_SETUP_TASKRUN_FLAG`).
    #[inline]
    pub(crate) fn taskrun(&self) -> bool {
        self.flags(Ordering::Acquire) & SQ_TASKRUN != 0
    }
}

impl Cq {
    /// The next CQE's user data, result and flags, taken off the queue; `None` if the kernel
    /// has posted none since.
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<(u64, i32, u32)> {
        let head = self.local_head;
        if head == self.seen_tail {
            // Acquire: the entries before the tail are written.
            // SAFETY: the ring's tail word, in the mapping.
            self.seen_tail = unsafe { (*self.tail).load(Ordering::Acquire) };
            if head == self.seen_tail {
                return None;
            }
        }
        // SAFETY: entry `head & mask` lies in the CQE array and is posted (before the tail),
        // and the kernel does not reuse it before the head below passes it.
        let cqe = unsafe { &*self.cqes.add((head & self.mask) as usize) };
        let taken = (cqe.user_data(), cqe.result(), cqe.flags());
        self.local_head = head.wrapping_add(1);
        Some(taken)
    }

    /// Hands the entries taken so far back to the kernel (stores the head). Once per reap and
    /// before every enter, not per CQE: the head shares its cache line with the tail the
    /// kernel writes. Until then the kernel counts them as waiting (a wait for completions
    /// would return at once) and will not write over them.
    #[inline]
    pub(crate) fn publish(&self) {
        // Release: the entries are read before the kernel may write over them.
        // SAFETY: the ring's head word, in the mapping.
        unsafe { (*self.head).store(self.local_head, Ordering::Release) };
    }

    /// Whether no CQE waits: two loads, no store (a spin looks here on every turn).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        // SAFETY: the ring's tail word, in the mapping.
        self.local_head == unsafe { (*self.tail).load(Ordering::Acquire) }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn nop(user_data: u64) -> squeue::Entry {
        io_uring::opcode::Nop::new().build().user_data(user_data)
    }

    /// Pushes `count` nops numbered from `first`, submits them and waits for their CQEs.
    fn run_nops(uring: &io_uring::IoUring, q: &mut Queues, first: u64, count: u64) {
        for n in first..first + count {
            // SAFETY: a nop names no memory.
            assert!(unsafe { q.sq.push(&nop(n)) }, "room for nop {n}");
        }
        assert_eq!(q.sq.len() as u64, count);
        // A nop completes inside the enter that submits it: no wait (a broken push cannot hang).
        assert_eq!(uring.submitter().submit().unwrap() as u64, count);
        assert_eq!(q.sq.len(), 0, "the kernel consumed every pushed SQE");
    }

    #[test]
    fn a_full_sq_refuses_a_push_until_the_kernel_consumes_its_entries() {
        let uring = io_uring::IoUring::new(4).unwrap();
        let mut q = Queues::map(&uring).unwrap();
        for n in 0..4 {
            // SAFETY: a nop names no memory.
            assert!(unsafe { q.sq.push(&nop(n)) });
        }
        assert_eq!(q.sq.room(), 0);
        // SAFETY: as above.
        assert!(!unsafe { q.sq.push(&nop(4)) }, "a full SQ takes nothing");
        assert_eq!(uring.submitter().submit().unwrap(), 4);
        assert_eq!(q.sq.room(), 4);
        // SAFETY: as above.
        assert!(unsafe { q.sq.push(&nop(4)) });
        let mut seen = Vec::new();
        while let Some((user_data, result, _)) = q.cq.pop() {
            assert_eq!(result, 0);
            seen.push(user_data);
        }
        assert_eq!(
            seen,
            [0, 1, 2, 3],
            "only the submitted nops completed, in order"
        );
    }

    #[test]
    fn cqes_are_taken_in_order_across_many_wraps_and_the_head_is_published() {
        let mut uring = io_uring::IoUring::new(4).unwrap();
        let mut q = Queues::map(&uring).unwrap();
        assert!(q.cq.is_empty());
        let mut next = 0;
        for round in 0..10u64 {
            let count = 1 + round % 4;
            run_nops(&uring, &mut q, next, count);
            assert!(!q.cq.is_empty());
            for n in next..next + count {
                assert_eq!(q.cq.pop(), Some((n, 0, 0)));
            }
            assert_eq!(q.cq.pop(), None);
            assert!(q.cq.is_empty());
            // Taken, not yet handed back: the kernel's head (what the crate's view reads) has
            // not moved until `publish`.
            assert_eq!(uring.completion().len() as u64, count);
            q.cq.publish();
            assert!(uring.completion().is_empty());
            next += count;
        }
    }

    /// An entry of `opcode` (never submitted: it names no memory), numbered `user_data`.
    fn entry(opcode: u8, user_data: u64) -> squeue::Entry {
        use io_uring::{opcode as op, types::Fd};
        let e = match opcode {
            op::Recv::CODE => op::Recv::new(Fd(-1), std::ptr::null_mut(), 0).build(),
            op::Send::CODE => op::Send::new(Fd(-1), std::ptr::null(), 0).build(),
            op::AsyncCancel::CODE => op::AsyncCancel::new(user_data).build(),
            _ => op::Nop::new().build(),
        };
        e.user_data(user_data)
    }

    /// The unconsumed entries' user data, in queue order.
    fn pending(q: &mut Queues) -> Vec<u64> {
        let (head, tail) = (q.sq.seen_head, q.sq.local_tail);
        (0..tail.wrapping_sub(head))
            // SAFETY: an entry between the kernel's head and our tail, written by `push`.
            .map(|n| unsafe {
                (*q.sq.sqes.add((head.wrapping_add(n) & q.sq.mask) as usize)).get_user_data()
            })
            .collect()
    }

    /// Pushes `entries` with the reordering on (no SQPOLL here; this thread alone enters) and
    /// returns their order in the queue.
    fn reordered(q: &mut Queues, entries: &[squeue::Entry]) -> Vec<u64> {
        q.sq.reorder = true;
        for e in entries {
            // SAFETY: never submitted.
            assert!(unsafe { q.sq.push(e) });
        }
        q.sq.len();
        pending(q)
    }

    const RECV: u8 = io_uring::opcode::Recv::CODE;
    const SEND: u8 = io_uring::opcode::Send::CODE;
    const NOP: u8 = io_uring::opcode::Nop::CODE;
    const CANCEL: u8 = io_uring::opcode::AsyncCancel::CODE;
    const READ: u8 = io_uring::opcode::Read::CODE;

    #[test]
    fn sends_go_before_the_receives_of_their_segment_each_kind_in_its_order() {
        let uring = io_uring::IoUring::new(16).unwrap();
        let mut q = Queues::map(&uring).unwrap();
        let batch = [
            entry(RECV, 1),
            entry(RECV, 2),
            entry(SEND, 3),
            entry(SEND, 4),
            entry(RECV, 5),
            entry(SEND, 6),
        ];
        assert_eq!(reordered(&mut q, &batch), [3, 4, 6, 1, 2, 5]);
    }

    #[test]
    fn nothing_moves_across_a_barrier_and_a_chain_keeps_its_place() {
        let uring = io_uring::IoUring::new(16).unwrap();
        let mut q = Queues::map(&uring).unwrap();
        let link = squeue::Flags::IO_LINK;
        let batch = [
            entry(RECV, 1),
            entry(SEND, 2),
            // Another operation: the receive before it stays before it (a cancel stays after
            // its target).
            entry(CANCEL, 3),
            entry(RECV, 4),
            entry(NOP, 5),
            entry(SEND, 6),
            // A chain: the linked send and the receive it links into stay as they are.
            entry(RECV, 7),
            entry(SEND, 8).flags(link),
            entry(RECV, 9),
            entry(RECV, 10).flags(squeue::Flags::IO_DRAIN),
            entry(SEND, 11),
        ];
        assert_eq!(
            reordered(&mut q, &batch),
            [2, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11]
        );
    }

    #[test]
    fn sends_keep_their_order_and_a_send_moves_at_most_the_bound() {
        let uring = io_uring::IoUring::new(128).unwrap();
        let mut q = Queues::map(&uring).unwrap();
        let sends: Vec<_> = (0..4).map(|n| entry(SEND, n)).collect();
        assert_eq!(reordered(&mut q, &sends), [0, 1, 2, 3]);
        let uring = io_uring::IoUring::new(128).unwrap();
        let mut q = Queues::map(&uring).unwrap();
        // One receive more than the bound, then a send: it passes all but the first.
        let last = REORDER_MAX as u64 + 1;
        let long: Vec<_> = (0..=last)
            .map(|n| entry(if n == last { SEND } else { RECV }, n))
            .collect();
        let expected: Vec<u64> = [0, last].into_iter().chain(1..last).collect();
        assert_eq!(reordered(&mut q, &long), expected);
    }

    #[test]
    fn a_pushed_send_is_remembered_until_taken_and_nothing_else_is() {
        let uring = io_uring::IoUring::new(8).unwrap();
        let mut q = Queues::map(&uring).unwrap();
        reordered(&mut q, &[entry(RECV, 1), entry(NOP, 2), entry(CANCEL, 3)]);
        assert!(!q.sq.send_staged());
        reordered(&mut q, &[entry(SEND, 4)]);
        assert!(q.sq.send_staged());
        assert!(q.sq.take_send_staged());
        assert!(!q.sq.send_staged(), "taken by the enter");
        // Without the reordering (SQPOLL) a send is remembered all the same.
        q.sq.reorder = false;
        // SAFETY: never submitted.
        assert!(unsafe { q.sq.push(&entry(SEND, 5)) });
        assert!(q.sq.take_send_staged());
    }

    #[test]
    fn a_lone_entry_that_completes_at_once_is_told_apart() {
        for (opcode, inline) in [(NOP, true), (READ, true), (SEND, true), (RECV, false)] {
            let uring = io_uring::IoUring::new(8).unwrap();
            let mut q = Queues::map(&uring).unwrap();
            assert_eq!(q.sq.lone_inline(), None, "nothing staged");
            reordered(&mut q, &[entry(opcode, 1)]);
            assert_eq!(q.sq.lone_inline(), inline.then_some(1), "opcode {opcode}");
            reordered(&mut q, &[entry(opcode, 2)]);
            assert_eq!(q.sq.lone_inline(), None, "two staged: a batch");
        }
    }

    #[test]
    fn a_send_pushed_after_an_enter_never_moves_past_what_came_before_it() {
        let uring = io_uring::IoUring::new(8).unwrap();
        let mut q = Queues::map(&uring).unwrap();
        reordered(&mut q, &[entry(RECV, 1)]);
        // An enter (which may have read the receive; this one did not, so the receive is
        // still in the queue, where a move would show).
        q.sq.take_send_staged();
        assert_eq!(reordered(&mut q, &[entry(SEND, 2)]), [1, 2]);
        // A receive pushed after the enter is passed as usual, by every send after it.
        assert_eq!(
            reordered(&mut q, &[entry(RECV, 3), entry(SEND, 4), entry(SEND, 5)]),
            [1, 2, 4, 5, 3]
        );
    }

    #[test]
    fn the_reorder_follows_the_queue_across_its_wrap() {
        let uring = io_uring::IoUring::new(4).unwrap();
        let mut q = Queues::map(&uring).unwrap();
        run_nops(&uring, &mut q, 0, 3);
        // Entries 3 and 0 of the array: the send moves back across the wrap.
        assert_eq!(
            reordered(&mut q, &[entry(RECV, 10), entry(SEND, 11)]),
            [11, 10]
        );
    }

    #[test]
    fn a_receive_behind_the_send_that_feeds_it_completes_in_the_same_enter() {
        use io_uring::{opcode as op, types::Fd};
        use std::os::fd::AsRawFd;
        let uring = io_uring::IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(8)
            .unwrap();
        let mut q = Queues::map(&uring).unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let out = [7u8; 64];
        let mut into = [0u8; 64];
        let recv = op::Recv::new(Fd(b.as_raw_fd()), into.as_mut_ptr(), 64)
            .build()
            .user_data(1);
        let send = op::Send::new(Fd(a.as_raw_fd()), out.as_ptr(), 64)
            .build()
            .user_data(2);
        // Both buffers and sockets outlive the CQEs, reaped below before they drop.
        assert_eq!(reordered(&mut q, &[recv, send]), [2, 1]);
        // No wait, and DEFER_TASKRUN: a receive that armed a poll (as it does when it goes
        // first) would complete only in a later enter with GETEVENTS.
        assert_eq!(uring.submitter().submit().unwrap(), 2);
        let mut done: Vec<_> = std::iter::from_fn(|| q.cq.pop())
            .map(|c| (c.0, c.1))
            .collect();
        q.cq.publish();
        done.sort();
        assert_eq!(done, [(1, 64), (2, 64)]);
        assert_eq!(into, out);
    }

    #[test]
    fn a_ring_without_the_sq_array_is_mapped_and_used_alike() {
        let Ok(uring) = io_uring::IoUring::builder().setup_no_sqarray().build(8) else {
            return; // an older kernel: the ring's own setup retries without the flag
        };
        let mut q = Queues::map(&uring).unwrap();
        run_nops(&uring, &mut q, 100, 8);
        let taken: Vec<u64> = std::iter::from_fn(|| q.cq.pop()).map(|c| c.0).collect();
        q.cq.publish();
        assert_eq!(taken, (100..108).collect::<Vec<_>>());
    }
}
