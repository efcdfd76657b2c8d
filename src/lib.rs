//! An io_uring event loop that never touches the heap on its hot path.
//!
//! Callers submit logical requests (send, recv, read_at, write_at, sync, nop, and the
//! connection, datagram, vectored and registered-buffer forms around them), each with an
//! optional deadline; one loop thread owns the ring, stages SQEs, resubmits short reads and
//! writes, cancels timed-out requests with AsyncCancel, keeps a timeout wheel, sleeps in the
//! kernel when idle and wakes through an eventfd, and drains in-flight work at shutdown. The
//! timeout, cancel and shutdown semantics are those of `commonware-runtime`'s io_uring loop;
//! the machinery is new: every byte the loop uses is in one [`Storage`] sized by const generics,
//! built by a `const fn` (it can live in a `static`) and never grown.
//!
//! ```text
//! caller ── handle.read_at(fd, off, buf).limit(len).deadline(deadline)      (at the future's first poll)
//!   1. claim a free slot           handoff/free_list.rs   lock-free; else handoff/wait_list.rs
//!   2. write the request into it   handoff/slot.rs        the caller owns the slot (FILLED)
//!   3. push the slot index         handoff/submit_queue.rs lock-free MPSC ring, never full
//!   4. ring the loop if it sleeps  handoff/wake.rs        eventfd only when the intent is armed
//!   5. the future holds the index  handle.rs
//!
//! loop thread ── EventLoop::run()                                event_loop/
//!   a. drain CQEs                  request.rs     complete | requeue short I/O | ignore cancel CQEs
//!   b. advance the timeout wheel   wheel.rs       expired: AsyncCancel if in flight, else Timeout
//!   c. stage SQEs                  wake rearm, cancels, ready queue, fresh (< RING admitted)
//!   d. submit and wait             io_uring_enter bounded by the next deadline
//!
//! completion ── the loop stores the result in the slot, flips it to DONE, wakes the waker; the
//!   future takes result and buffer and frees the slot. A dropped future leaves the slot ORPHANED
//!   and the loop frees it.
//! ```
//!
//! # Quick start
//!
//! ```
//! use static_uring::{Config, IoBufMut};
//! use std::sync::Arc;
//!
//! # fn main() -> Result<(), static_uring::Error> {
//! let (handle, event_loop) = static_uring::new::<64, 32, 1024>(Config::default())?;
//! let thread = std::thread::spawn(move || event_loop.run());
//!
//! let file = Arc::new(std::fs::File::open("/proc/self/exe").unwrap());
//! let buf = handle.read_at(file.clone(), 0, IoBufMut::with_capacity(4)).limit(4).wait().unwrap();
//! assert_eq!(&buf[..], b"\x7fELF");
//!
//! drop(handle); // the loop drains and returns once every handle is gone
//! thread.join().unwrap()?;
//! # Ok(()) }
//! ```
//!
//! # Choosing the three sizes
//!
//! * `SLOTS`: requests outstanding at once (queued + in the kernel). When every slot is taken,
//!   async callers wait (FIFO, no allocation) and [`Op::try_submit`] fails with [`Error::Full`].
//! * `RING`: requests in the kernel at once (the SQ size; the CQ is twice that). Requests beyond
//!   it wait in the submission ring. `RING <= SLOTS`.
//! * `WHEEL`: timeout wheel slots. The horizon is `(WHEEL - 1) * timeout_wheel_tick`; pick
//!   `WHEEL >= max timeout / tick` so that deadlines fit in one revolution. A deadline further
//!   away still never fires early (the loop re-arms it at the horizon); only an explicit
//!   `Config::max_request_timeout` caps deadlines (docs/behaviour.md section 3.1).
//!
//! All three are powers of two, checked at compile time. `memory-budget.md` gives the bytes.
//!
//! # Liveness caveat
//!
//! Admitted requests are restaged before new ones, but `RING` is a hard cap. If every admitted
//! request waits for something still queued behind the cap (say `RING = 2`: two reads admitted,
//! the two writes that would satisfy them still queued), nothing completes and nothing new is
//! admitted. The loop cannot see such dependencies; deadlines break the cycle (the timed-out
//! requests free their entries), so give deadlines to requests that wait on peers, or size
//! `RING` above the largest dependent group.
//!
//! # Safety model
//!
//! A buffer handed to the kernel is never freed, moved or returned while the kernel may still
//! write it: it lives in its slot until the request's last CQE. At shutdown, requests the kernel
//! will not release are abandoned (callers get [`Error::Abandoned`]) and their buffers are leaked
//! on purpose rather than freed, also if the loop thread unwinds or the storage is dropped.
//!
//! User code the crate runs (wakers, the `Drop` of the descriptor owners behind [`Fd`]) runs only
//! once the crate's own state is final and never under one of its locks; a panic in it is caught
//! and counted ([`Metrics::user_panics`]), so it cannot stop the loop or corrupt a slot.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]
// Under the loom models (`--cfg loom` in tests) most of the loop is built but never run.
#![cfg_attr(all(test, loom), allow(dead_code))]

// The public surface.
mod buf;
mod buf_pool;
mod config;
mod error;
mod fd;
mod handle;
mod metrics;
mod spin;
mod storage;
mod task_pool;
mod vectored;
// Caller -> loop hand-off: slots, free list, submission ring, waker cell, wake state, wait list.
mod handoff;
// The loop: its phases, its private table, the wheel and the ring edge toward the kernel.
mod event_loop;
// Operations: one file per family, one table of every kind (`op/mod.rs`).
pub mod op;
// Cross-cutting: the loom shim, running user code, test-only fault injection.
mod contain;
/// Test-only fault injection: public with the `fault-injection` feature, the loop's empty hooks
/// (compiled away) without it.
#[cfg(feature = "fault-injection")]
pub mod fault;
#[cfg(not(feature = "fault-injection"))]
mod fault;
mod loom;
mod placement;

/// `arrayvec::ArrayVec`, re-exported: [`IoBufs`] is one, so callers need no dependency of their own.
pub use arrayvec::ArrayVec;
pub use buf::{IoBuf, IoBufMut};
pub use buf_pool::BufPool;
pub use config::Config;
pub use error::{BufError, Error};
pub use event_loop::{EventLoop, MetricsReader};
pub use fd::Fd;
pub use handle::{Handle, LaneHandle, LaneOp, Op};
pub use handoff::lane::Lane;
pub use metrics::Metrics;
pub use op::{OpResult, Readiness};
pub use storage::Storage;
pub use task_pool::{Busy, Run, TaskPool};
pub use vectored::{IoBufs, MAX_IOVECS};

/// Builds a loop whose storage is allocated on the heap, once, here.
///
/// Validates `config` (and creates the ring) before returning, so errors come back as
/// [`Error::Config`] or [`Error::Os`] instead of a panic on the loop thread.
pub fn new<const SLOTS: usize, const RING: usize, const WHEEL: usize>(
    config: Config,
) -> Result<(Handle<SLOTS, RING, WHEEL>, EventLoop<SLOTS, RING, WHEEL>), Error> {
    let checked = config.check(WHEEL)?;
    let storage = storage::StorageRef::from_arc(Storage::new_shared());
    start(storage, checked)
}

/// Builds a loop on a `'static` storage: no heap allocation at any point.
///
/// A storage serves one loop at a time: while a loop or any of its handles is alive, a second
/// call fails with [`Error::InUse`]. Once that loop has returned and its handles are gone, the
/// storage can be used again.
pub fn with_storage<const SLOTS: usize, const RING: usize, const WHEEL: usize>(
    storage: &'static Storage<SLOTS, RING, WHEEL>,
    config: Config,
) -> Result<(Handle<SLOTS, RING, WHEEL>, EventLoop<SLOTS, RING, WHEEL>), Error> {
    let checked = config.check(WHEEL)?;
    start(storage::StorageRef::from_static(storage), checked)
}

fn start<const S: usize, const R: usize, const W: usize>(
    storage: storage::StorageRef<S, R, W>,
    checked: config::Checked,
) -> Result<(Handle<S, R, W>, EventLoop<S, R, W>), Error> {
    let eventfd = storage.claim()?;
    let event_loop = EventLoop::new(storage.clone(), eventfd, checked)?;
    Ok((Handle::from_storage(storage), event_loop))
}

// The README's code compiles and runs as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

// Guarantees stated at compile time.
static_assertions::assert_impl_all!(Handle<4, 2, 8>: Send, Sync, Clone);
static_assertions::assert_impl_all!(Op<op::Nop, 4, 2, 8>: Send);
static_assertions::assert_impl_all!(EventLoop<4, 2, 8>: Send);
static_assertions::assert_impl_all!(Storage<4, 2, 8>: Send, Sync);
static_assertions::assert_impl_all!(Error: Send, Sync, Copy, std::error::Error);
