//! [`RingFeatures`]: which of the optional, probed ring setup features a loop uses, and the live
//! word the loop publishes them in (one per storage, read by any thread).
//!
//! Each feature is asked for by its `Config` switch (on by default) and probed: a kernel that
//! refuses it (an older kernel, or a combination it rejects) gets a ring without it, never an
//! error. What took effect is what this reports.

use crate::loom::{AtomicU8, Ordering};

/// Which optional ring setup features the loop uses: each is asked for by the `Config` switch of
/// the same name and is false here when the switch is off or the kernel refused it (the loop then
/// runs without it). Read it with [`Handle::ring_features`](crate::Handle::ring_features),
/// [`EventLoop::ring_features`](crate::EventLoop::ring_features) or
/// [`MetricsReader::ring_features`](crate::MetricsReader::ring_features).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RingFeatures {
    /// `IORING_SETUP_NO_SQARRAY` (Linux 6.6): the kernel reads SQEs by ring index, without the
    /// indirection array. Known when the loop is built.
    pub no_sqarray: bool,
    /// `IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG` (Linux 5.19): completions that
    /// need the loop thread's task work wait for its next kernel entry instead of interrupting it.
    /// Known when the loop is built; never with `single_issuer` (which defers task work anyway)
    /// or `sqpoll_idle` (which the kernel refuses it with).
    pub coop_taskrun: bool,
    /// The ring's descriptor is registered with the loop thread (`IORING_REGISTER_RING_FDS`,
    /// Linux 5.18), and its `io_uring_enter` calls name it by index
    /// (`IORING_ENTER_REGISTERED_RING`). Known once the loop has started running on its thread;
    /// stays set after the loop returns (`Metrics::registered_enters` counts what it served).
    pub registered_ring: bool,
}

const NO_SQARRAY: u8 = 1;
const COOP_TASKRUN: u8 = 1 << 1;
const REGISTERED_RING: u8 = 1 << 2;

impl RingFeatures {
    fn bits(self) -> u8 {
        (self.no_sqarray as u8 * NO_SQARRAY)
            | (self.coop_taskrun as u8 * COOP_TASKRUN)
            | (self.registered_ring as u8 * REGISTERED_RING)
    }

    fn from_bits(bits: u8) -> Self {
        RingFeatures {
            no_sqarray: bits & NO_SQARRAY != 0,
            coop_taskrun: bits & COOP_TASKRUN != 0,
            registered_ring: bits & REGISTERED_RING != 0,
        }
    }
}

/// The features of the storage's current loop: written by that loop (its constructor, then its
/// thread when it starts running), read by anyone.
#[derive(Debug)]
pub(crate) struct LiveFeatures(AtomicU8);

impl LiveFeatures {
    crate::loom::maybe_const_fn! {
        /// None in use.
        pub(crate) fn new() -> Self {
            LiveFeatures(AtomicU8::new(0))
        }
    }

    /// Replaces what is published (a new loop: its setup features, nothing registered yet).
    pub(crate) fn set(&self, features: RingFeatures) {
        self.0.store(features.bits(), Ordering::Relaxed);
    }

    /// What is published (Relaxed: a report, not an ordering).
    pub(crate) fn get(&self) -> RingFeatures {
        RingFeatures::from_bits(self.0.load(Ordering::Relaxed))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn every_combination_round_trips() {
        // Each flag has its own bit: what the loop publishes is what readers get back.
        for bits in 0..8 {
            let features = RingFeatures::from_bits(bits);
            assert_eq!(features.bits(), bits);
            let live = LiveFeatures::new();
            live.set(features);
            assert_eq!(live.get(), features);
        }
    }
}
