//! The caller-to-loop hand-off: the syscall-free, lock-free primitives every request passes
//! through between a caller and the loop thread, all built on the [`loom`](crate::loom) shim so
//! that the loom models below check the code that ships.
//!
//! ```text
//! caller: free_list.pop ─▶ submit_queue.claim ─▶ slot (FILLED ─▶ QUEUED) ─▶ submit_queue.publish
//!         (none free: wait_list, FIFO hand-over)          eventfd if the claim saw the intent ◀─┘
//!         (a LaneHandle: lane.push instead, one producer, counted in the life word: wake::release)
//! loop:   submit_queue.pop ─▶ slot (ACTIVE ─▶ DONE) ─▶ waker_cell / futex ─▶ caller takes the
//!         result ─▶ free_list.push ─▶ wait_list hands the slot to the oldest waiter
//! on the loop thread (`loop_local`): a private free stack and a private queue instead of the
//!         free list and the submission ring, handed back to the shared list every pass
//! ```

pub(crate) mod free_list;
pub(crate) mod lane;
pub(crate) mod loop_local;
pub(crate) mod slot;
pub(crate) mod submit_queue;
pub(crate) mod wait_list;
pub(crate) mod wake;
pub(crate) mod waker_cell;

#[cfg(all(test, not(loom)))]
mod core_tests;
#[cfg(all(test, loom))]
mod loom_tests;
