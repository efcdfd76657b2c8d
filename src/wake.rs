//! Waking the loop from sleep: a submission sequence with a sleep-intent bit, and an eventfd
//! watched by a multishot poll in the ring.
//!
//! # State
//!
//! ```text
//! word: AtomicU64 = [ submitted sequence: 63 bits | intent: 1 bit ]
//! ```
//! * **publish** (caller, after its index is in the submission ring): add 2 to the word (one step
//!   of the sequence); if the previous value had `intent` set, the loop may be asleep in
//!   `io_uring_enter`, so write the eventfd. Without intent no syscall happens.
//! * **arm** (loop, before sleeping): set `intent` and return the sequence seen by that same
//!   read-modify-write; then **recheck** the submission ring; sleep only if nothing is ready.
//! * **disarm** (loop, after waking): clear `intent`.
//! * **ring**: an unconditional eventfd write, used when the last sender leaves so a sleeping loop
//!   notices shutdown.
//!
//! The eventfd is watched by a multishot `PollAdd` whose completions carry [`WAKE_TOKEN`]; each wake
//! CQE is acknowledged by reading the eventfd, and when the kernel ends the multishot (no
//! `IORING_CQE_F_MORE`) the loop reinstalls it at the start of its next staging pass. Reinstalling
//! is fallible: with a full SQ it stays pending and the loop submits first (no panic).
//!
//! # Why no wake-up is lost
//!
//! All publishes and the arm are read-modify-writes of one word, so they are totally ordered.
//! Take a publish `P` whose push the loop's recheck did not see, and the loop's arm `A`:
//! * if `P` comes before `A`, `A` reads a value at or after `P`'s in that order, and the chain of
//!   read-modify-writes carries `P`'s Release to `A`'s Acquire: the push (which precedes `P`)
//!   happens before the recheck, which therefore sees it. Contradiction, so this case cannot be;
//! * so `P` comes after `A`, and `P` reads the intent bit `A` set: it writes the eventfd, the
//!   armed poll posts a CQE, and `io_uring_enter(min_complete = 1)` returns.
//!
//! The loop sleeps on "nothing ready in the ring after arming", not on sequence equality. So a
//! producer preempted mid-push (its position claimed, its stamp not yet written) cannot make the
//! loop spin: the loop sleeps, and that producer's own publish, after its push, wakes it. This
//! fixes the busy iteration on sequence skew of the model (Part A, A12).
//!
//! Shutdown uses `ring` after the last sender is gone, and the loop checks the sender count
//! after arming too, so the disconnect cannot slip between the check and the sleep.

use crate::sync::{AtomicU64, Ordering};

/// `user_data` of the wake poll's CQEs; never a request id (slot indices are < 2^31).
pub(crate) const WAKE_TOKEN: u64 = u64::MAX;

const INTENT: u64 = 1;
const STEP: u64 = 2;

/// The shared word of the protocol.
#[derive(Debug)]
pub(crate) struct WakeState {
    word: AtomicU64,
}

impl WakeState {
    crate::maybe_const_fn! {
        /// Sequence 0, not armed.
        pub(crate) fn new() -> Self {
            Self { word: AtomicU64::new(0) }
        }
    }

    /// Back to sequence 0, not armed (storage claim, no other thread involved).
    pub(crate) fn reset(&self) {
        self.word.store(0, Ordering::Relaxed);
    }

    /// Counts one submission; returns true if the caller must write the eventfd.
    #[must_use]
    pub(crate) fn publish(&self) -> bool {
        // AcqRel: Release carries the push to the loop's arm (module doc); Acquire orders our
        // eventfd write after seeing the intent.
        self.word.fetch_add(STEP, Ordering::AcqRel) & INTENT != 0
    }

    /// Submissions published so far (63-bit, wrapping).
    #[allow(dead_code)] // tests and models
    pub(crate) fn submitted(&self) -> u64 {
        self.word.load(Ordering::Acquire) >> 1
    }

    /// Declares the intent to sleep; returns the sequence seen by the same atomic step.
    pub(crate) fn arm(&self) -> u64 {
        // AcqRel: Acquire pairs with every earlier publish (module doc).
        self.word.fetch_or(INTENT, Ordering::AcqRel) >> 1
    }

    /// Clears the intent after the sleep (or after deciding not to sleep).
    pub(crate) fn disarm(&self) {
        self.word.fetch_and(!INTENT, Ordering::Release);
    }

    /// True while the loop declares it may sleep.
    #[allow(dead_code)] // tests and models
    pub(crate) fn is_armed(&self) -> bool {
        self.word.load(Ordering::Acquire) & INTENT != 0
    }
}

#[cfg(not(loom))]
pub(crate) use eventfd::EventFd;

#[cfg(not(loom))]
mod eventfd {
    use std::io;
    use std::os::fd::RawFd;

    /// A non-blocking, close-on-exec eventfd in counter mode.
    #[derive(Debug)]
    pub(crate) struct EventFd(RawFd);

    impl EventFd {
        /// Creates the descriptor (once per storage, at its first claim).
        pub(crate) fn new() -> io::Result<Self> {
            // SAFETY: plain syscall with constant flags.
            let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(EventFd(fd))
        }

        /// Wraps a descriptor created by [`new`](Self::new) and kept open since.
        pub(crate) fn from_raw(fd: RawFd) -> Self {
            EventFd(fd)
        }

        /// The raw descriptor.
        pub(crate) fn raw(&self) -> RawFd {
            self.0
        }

        /// Adds one to the counter. EAGAIN (counter saturated) means a wake is pending anyway.
        pub(crate) fn ring(&self) {
            let one: u64 = 1;
            loop {
                // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
                let n = unsafe { libc::write(self.0, (&one as *const u64).cast(), 8) };
                if n >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    return;
                }
            }
        }

        /// Drains the counter; returns the value read (0 if it was already empty).
        pub(crate) fn acknowledge(&self) -> u64 {
            let mut value: u64 = 0;
            loop {
                // SAFETY: reads 8 bytes into a valid u64 from our eventfd.
                let n = unsafe { libc::read(self.0, (&mut value as *mut u64).cast(), 8) };
                if n == 8 {
                    return value;
                }
                if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return 0;
            }
        }

        /// Closes the descriptor.
        pub(crate) fn close(self) {
            // SAFETY: we own the descriptor and close it once.
            unsafe { libc::close(self.0) };
        }
    }

    /// The multishot poll SQE that turns eventfd writes into wake CQEs.
    pub(crate) fn wake_poll_sqe(fd: RawFd) -> io_uring::squeue::Entry {
        io_uring::opcode::PollAdd::new(io_uring::types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(super::WAKE_TOKEN)
    }
}

#[cfg(not(loom))]
pub(crate) use eventfd::wake_poll_sqe;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn publish_arm_disarm_and_submitted() {
        // Port of waker.rs test 1: the sequence counts publishes only; arm reports it; a publish
        // while armed asks for an eventfd write, one without intent does not.
        let w = WakeState::new();
        assert_eq!(w.submitted(), 0);
        assert!(!w.publish(), "no intent: no syscall");
        assert_eq!(w.submitted(), 1);
        assert_eq!(w.arm(), 1);
        assert!(w.is_armed());
        assert!(w.publish(), "armed: the producer must ring");
        assert_eq!(w.submitted(), 2);
        w.disarm();
        assert!(!w.is_armed());
        assert_eq!(w.submitted(), 2, "disarm keeps the sequence");
        assert_eq!(w.arm(), 2);
    }

    #[test]
    fn ring_and_acknowledge_keep_sequence_and_drain_counter() {
        // Ports of waker.rs tests 2 and 4: ringing and acknowledging (also when empty or
        // saturated) never change the sequence.
        let w = WakeState::new();
        let fd = EventFd::new().unwrap();
        fd.ring();
        fd.ring();
        assert_eq!(fd.acknowledge(), 2);
        assert_eq!(fd.acknowledge(), 0, "empty counter");
        let max: u64 = u64::MAX - 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(fd.raw(), (&max as *const u64).cast(), 8) };
        fd.ring(); // saturated: EAGAIN is "already pending"
        assert_eq!(fd.acknowledge(), max);
        assert_eq!(w.submitted(), 0);
        fd.close();
    }

    #[test]
    fn wake_poll_sqe_is_one_multishot_poll_with_the_wake_token() {
        // Port of waker.rs test 3: reinstall adds exactly one SQE, tagged so that its CQEs are
        // never mistaken for a request.
        let mut ring = io_uring::IoUring::new(4).unwrap();
        let fd = EventFd::new().unwrap();
        // SAFETY: the SQE references only the eventfd, which outlives the ring use here.
        unsafe { ring.submission().push(&wake_poll_sqe(fd.raw())).unwrap() };
        assert_eq!(ring.submission().len(), 1);
        ring.submit().unwrap();
        fd.ring();
        ring.submit_and_wait(1).unwrap();
        let cqe = ring.completion().next().unwrap();
        assert_eq!(cqe.user_data(), WAKE_TOKEN);
        assert!(cqe.result() >= 0);
        assert!(io_uring::cqueue::more(cqe.flags()), "multishot stays armed");
        drop(ring);
        fd.close();
    }
}
