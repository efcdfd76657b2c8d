//! Counters the loop keeps, and the plain snapshot callers read.

use crate::loom::{AtomicU64, Ordering};

/// A snapshot of the loop's counters. Reading it never allocates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Admitted requests (in flight, ready-queued or cancelling): the commonware gauge.
    pub pending_operations: u64,
    /// Operation SQEs pushed to the ring (a request with short I/O counts once per SQE).
    pub submitted: u64,
    /// Requests the loop took from the submission ring and ended, each counted once whatever
    /// the end: a result delivered, an orphan retired, `Abandoned`, or `Closed` at shutdown.
    /// Once the loop has returned, it equals the number of requests that reached the loop.
    pub completed: u64,
    /// Requests that ended with `Error::Timeout`.
    pub timed_out: u64,
    /// Deadlines shortened to an explicit `Config::max_request_timeout` (a cap the user set;
    /// without one, a far deadline is re-armed until due, never shortened).
    pub capped_deadlines: u64,
    /// AsyncCancel SQEs issued.
    pub cancel_sqes: u64,
    /// Requests retired because their caller dropped the future.
    pub orphaned: u64,
    /// CQEs that left a request unfinished (short I/O, EAGAIN) and put it back in the ready queue.
    pub requeued: u64,
    /// Requests that ended with `Error::Abandoned` (shutdown budget exhausted, or the loop failed).
    pub abandoned: u64,
    /// Of those, requests the kernel had not released: their slots (and buffers) stay parked for
    /// good, so the storage has that many fewer slots from then on. Unlike the other counters it
    /// is not reset when a static storage is claimed again: it counts the slots the storage has
    /// lost since it was built.
    pub parked: u64,
    /// Calls of `io_uring_enter` (syscalls made; with SQPOLL, a submission the awake poller takes
    /// costs none).
    pub enters: u64,
    /// Wake-up CQEs of the eventfd poll.
    pub wakeups: u64,
    /// Panics caught in user code the crate ran (a waker's `wake`, or the `Drop` of a
    /// descriptor owner a finished request released). Each was contained: the loop and every
    /// other request carried on.
    pub user_panics: u64,
    /// Operation SQEs that named a registered file (`EventLoop::register_file`).
    pub fixed_files: u64,
    /// Operation SQEs that used a registered buffer (`READ_FIXED`/`WRITE_FIXED` on a buffer of
    /// the pool given to `EventLoop::register_buffers`).
    pub fixed_buffers: u64,
}

/// The live counters: written by the loop thread, read by anyone.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) pending_operations: AtomicU64,
    pub(crate) submitted: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) capped_deadlines: AtomicU64,
    pub(crate) cancel_sqes: AtomicU64,
    pub(crate) orphaned: AtomicU64,
    pub(crate) requeued: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) parked: AtomicU64,
    pub(crate) enters: AtomicU64,
    pub(crate) wakeups: AtomicU64,
    pub(crate) user_panics: AtomicU64,
    pub(crate) fixed_files: AtomicU64,
    pub(crate) fixed_buffers: AtomicU64,
}

impl Counters {
    crate::maybe_const_fn! {
        /// All zero.
        pub(crate) fn new() -> Self {
            Self {
                pending_operations: AtomicU64::new(0),
                submitted: AtomicU64::new(0),
                completed: AtomicU64::new(0),
                timed_out: AtomicU64::new(0),
                capped_deadlines: AtomicU64::new(0),
                cancel_sqes: AtomicU64::new(0),
                orphaned: AtomicU64::new(0),
                requeued: AtomicU64::new(0),
                abandoned: AtomicU64::new(0),
                parked: AtomicU64::new(0),
                enters: AtomicU64::new(0),
                wakeups: AtomicU64::new(0),
                user_panics: AtomicU64::new(0),
                fixed_files: AtomicU64::new(0),
                fixed_buffers: AtomicU64::new(0),
            }
        }
    }

    /// Adds one. Only the loop thread writes, so a load and a store suffice (no locked RMW on the
    /// hot path); Relaxed because readers want a recent value, not an ordering.
    #[inline]
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Sets the gauge.
    #[inline]
    pub(crate) fn set_pending(&self, value: usize) {
        self.pending_operations
            .store(value as u64, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub(crate) fn snapshot(&self) -> Metrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Metrics {
            pending_operations: get(&self.pending_operations),
            submitted: get(&self.submitted),
            completed: get(&self.completed),
            timed_out: get(&self.timed_out),
            capped_deadlines: get(&self.capped_deadlines),
            cancel_sqes: get(&self.cancel_sqes),
            orphaned: get(&self.orphaned),
            requeued: get(&self.requeued),
            abandoned: get(&self.abandoned),
            parked: get(&self.parked),
            enters: get(&self.enters),
            wakeups: get(&self.wakeups),
            user_panics: get(&self.user_panics),
            fixed_files: get(&self.fixed_files),
            fixed_buffers: get(&self.fixed_buffers),
        }
    }

    /// Adds `n` caught panics (from any thread, hence a read-modify-write; rare).
    pub(crate) fn count_panics(&self, n: u64) {
        if n != 0 {
            self.user_panics.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Back to zero for a new claim, except `parked`: parked slots stay lost.
    pub(crate) fn reset(&self) {
        for c in [
            &self.pending_operations,
            &self.submitted,
            &self.completed,
            &self.timed_out,
            &self.capped_deadlines,
            &self.cancel_sqes,
            &self.orphaned,
            &self.requeued,
            &self.abandoned,
            &self.enters,
            &self.wakeups,
            &self.user_panics,
            &self.fixed_files,
            &self.fixed_buffers,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}
