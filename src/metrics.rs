//! Counters the loop keeps, and the plain snapshot callers read. Each counter is named once, in
//! the `counters!` list below, which makes the public snapshot, the live atomics, their
//! constructor, the snapshot read and the reset.

use crate::loom::{AtomicU64, Ordering};

/// Declares every counter once: `Metrics` (the `Copy` snapshot, with the docs given here) and
/// `Counters` (one `AtomicU64` each), `Counters::new`, `snapshot` and `reset` (which keeps the
/// counters listed in `kept`).
macro_rules! counters {
    (kept: [$($kept:ident),*]; $($(#[$doc:meta])* $name:ident,)*) => {
        /// A snapshot of the loop's counters. Reading it never allocates.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Metrics {
            $($(#[$doc])* pub $name: u64,)*
        }

        /// The live counters: written by the loop thread, read by anyone.
        #[derive(Debug)]
        pub(crate) struct Counters {
            $(pub(crate) $name: AtomicU64,)*
        }

        impl Counters {
            crate::loom::maybe_const_fn! {
                /// All zero.
                pub(crate) fn new() -> Self {
                    Self { $($name: AtomicU64::new(0),)* }
                }
            }

            /// Reads every counter (Relaxed: readers want recent values, not an ordering).
            pub(crate) fn snapshot(&self) -> Metrics {
                Metrics { $($name: self.$name.load(Ordering::Relaxed),)* }
            }

            /// Back to zero for a new claim, except the kept ones (only the loop's claimer
            /// writes, so the store-back races nobody).
            pub(crate) fn reset(&self) {
                let kept = [$((&self.$kept, self.$kept.load(Ordering::Relaxed))),*];
                $(self.$name.store(0, Ordering::Relaxed);)*
                for (counter, value) in kept {
                    counter.store(value, Ordering::Relaxed);
                }
            }
        }
    };
}

counters! {
    kept: [parked];
    /// Admitted requests (in flight, ready-queued or cancelling): the commonware gauge.
    pending_operations,
    /// Operation SQEs pushed to the ring (a request with short I/O counts once per SQE).
    submitted,
    /// Requests the loop took from the submission ring and ended, each counted once whatever
    /// the end: a result delivered, an orphan retired, `Abandoned`, or `Closed` at shutdown.
    /// Once the loop has returned, it equals the number of requests that reached the loop.
    completed,
    /// Requests that ended with `Error::Timeout`.
    timed_out,
    /// Deadlines shortened to an explicit `Config::max_request_timeout` (a cap the user set;
    /// without one, a far deadline is re-armed until due, never shortened).
    capped_deadlines,
    /// AsyncCancel SQEs issued.
    cancel_sqes,
    /// Requests retired because their caller dropped the future.
    orphaned,
    /// CQEs that left a request unfinished (short I/O, EAGAIN) and put it back in the ready queue.
    requeued,
    /// Requests that ended with `Error::Abandoned` (shutdown budget exhausted, or the loop failed).
    abandoned,
    /// Of those, requests the kernel had not released: their slots (and buffers) stay parked for
    /// good, so the storage has that many fewer slots from then on. Unlike the other counters it
    /// is not reset when a static storage is claimed again: it counts the slots the storage has
    /// lost since it was built.
    parked,
    /// Calls of `io_uring_enter` (syscalls made; with SQPOLL, a submission the awake poller takes
    /// costs none).
    enters,
    /// Of `enters`, those that named the ring by its registered index
    /// (`IORING_ENTER_REGISTERED_RING`, `Config::registered_ring`): all of them while the
    /// registration is in effect (`RingFeatures::registered_ring`), none without it.
    registered_enters,
    /// Wake-up CQEs of the eventfd poll.
    wakeups,
    /// Panics caught in user code the crate ran (a waker's `wake`, or the `Drop` of a
    /// descriptor owner a finished request released). Each was contained: the loop and every
    /// other request carried on.
    user_panics,
    /// Operation SQEs that named a registered file (`EventLoop::register_file`).
    fixed_files,
    /// Operation SQEs that used a registered buffer (`READ_FIXED`/`WRITE_FIXED` on a buffer of
    /// the pool given to `EventLoop::register_buffers`).
    fixed_buffers,
    /// Multishot streams (`accept_multi`, `recv_multi`) armed again after the kernel ended
    /// their SQE without ending the stream (it does so now and then, and after a pause).
    stream_rearms,
    /// Connections an `accept_multi` stream closed because its queue was full
    /// (`op::ACCEPT_QUEUE` waiting for `next`). It keeps one accept armed only while its queue
    /// has room, so this stays 0 unless the kernel hands over more than asked.
    stream_refused,
    /// Times a `recv_multi` stream found its `BufRing` empty (`ENOBUFS`): it waits, without
    /// losing data, until a lease is dropped, and is then armed again.
    buf_ring_dry,
    /// Messages other loops posted to this one (`Handle::post`) that arrived.
    messages_received,
    /// Messages this loop accepted that no `recv_message` took before it closed: queued at its
    /// close, or reserved by a sender and not arrived by then (at most: such a sender may yet
    /// fail and be told so).
    messages_unread,
    /// Notifications of zero-copy sends (`send_zc`, `send_vectored_zc`): one per SQE the kernel
    /// ran, when it let go of the buffer.
    zero_copy_notifications,
    /// Of those, the ones whose bytes the kernel copied after all (Linux 6.2+ reports it): every
    /// send to a local peer (loopback) is copied, as is one through a device that cannot
    /// scatter-gather.
    zero_copy_copied,
}

impl Counters {
    /// Adds one. Only the loop thread writes, so a load and a store suffice (no locked RMW on the
    /// hot path); Relaxed because readers want a recent value, not an ordering.
    #[inline]
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Adds `n` (the loop thread only, as `bump`).
    #[inline]
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    /// Sets the gauge.
    #[inline]
    pub(crate) fn set_pending(&self, value: usize) {
        self.pending_operations
            .store(value as u64, Ordering::Relaxed);
    }

    /// Adds `n` caught panics (from any thread, hence a read-modify-write; rare).
    pub(crate) fn count_panics(&self, n: u64) {
        if n != 0 {
            self.user_panics.fetch_add(n, Ordering::Relaxed);
        }
    }
}
