// The crate's front page is the README: one copy of the overview, the sizes, the liveness
// caveat and the list of operations (its code runs as doc tests).
#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]
// Under the loom models (`--cfg loom` in tests) most of the loop is built but never run.
#![cfg_attr(all(test, loom), allow(dead_code))]

// The public surface.
mod buf;
mod buf_pool;
mod buf_ring;
mod config;
mod error;
mod fd;
mod handle;
mod local_op;
mod mailbox;
mod metrics;
mod multishot;
pub mod net;
pub mod signal;
mod spin;
mod storage;
mod task_pool;
mod timeout;
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
mod ring_features;

/// `arrayvec::ArrayVec`, re-exported: [`IoBufs`] is one, so callers need no dependency of their own.
pub use arrayvec::ArrayVec;
pub use buf::{IoBuf, IoBufMut};
pub use buf_pool::BufPool;
pub use buf_ring::{BufLease, BufRing, MAX_INCREMENTAL_SIZE, MAX_RING_BUFFERS};
pub use config::Config;
pub use error::{BufError, Error};
pub use event_loop::{EventLoop, MetricsReader};
pub use fd::Fd;
pub use handle::{Handle, LaneHandle, LaneOp, Op};
pub use handoff::lane::Lane;
pub use local_op::LocalOp;
pub use mailbox::Mailbox;
pub use metrics::Metrics;
pub use multishot::{AcceptStream, MultiKind, Multishot, Next, RecvStream};
pub use op::{OpResult, Readiness};
pub use ring_features::RingFeatures;
pub use storage::Storage;
pub use task_pool::{Busy, Run, RunLocal, TaskPool};
pub use timeout::Timeout;
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

// Guarantees stated at compile time.
static_assertions::assert_impl_all!(Handle<4, 2, 8>: Send, Sync, Clone);
static_assertions::assert_impl_all!(Op<op::Nop, 4, 2, 8>: Send);
static_assertions::assert_impl_all!(Timeout<std::future::Ready<()>, 4, 2, 8>: Send);
static_assertions::assert_impl_all!(RecvStream<4, 2, 8>: Send, Unpin);
static_assertions::assert_impl_all!(AcceptStream<4, 2, 8>: Send, Unpin);
static_assertions::assert_impl_all!(BufRing<2, 8>: Send, Sync);
static_assertions::assert_impl_all!(BufLease: Send, Sync);
static_assertions::assert_impl_all!(EventLoop<4, 2, 8>: Send);
static_assertions::assert_impl_all!(Storage<4, 2, 8>: Send, Sync);
static_assertions::assert_impl_all!(Error: Send, Sync, Copy, std::error::Error);
