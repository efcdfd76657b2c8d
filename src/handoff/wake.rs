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
//! fixes the model's busy iteration on sequence skew (docs/behaviour.md section 5).
//!
//! Shutdown uses `ring` after the last sender is gone, and the loop checks the sender count
//! after arming too, so the disconnect cannot slip between the check and the sleep.

use crate::loom::{AtomicU64, Ordering};

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
    crate::loom::maybe_const_fn! {
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
    #[inline]
    pub(crate) fn publish(&self) -> bool {
        // AcqRel: Release carries the push to the loop's arm (module doc); Acquire orders our
        // eventfd write after seeing the intent.
        self.word.fetch_add(STEP, Ordering::AcqRel) & INTENT != 0
    }

    /// Submissions published so far (63-bit, wrapping).
    #[allow(dead_code)] // tests and models
    #[inline]
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
    #[inline]
    pub(crate) fn is_armed(&self) -> bool {
        self.word.load(Ordering::Acquire) & INTENT != 0
    }
}

/// The loop's side of the wake protocol, as the loop and its loom models see it: where the
/// intent lives, and whether work is waiting.
pub(crate) trait Sleeper {
    /// The wake word the submitters publish to.
    fn wake(&self) -> &WakeState;
    /// Whether there is work the loop must do instead of sleeping (read after arming).
    fn has_work(&mut self) -> bool;
}

/// The loop's decision to sleep: declare the intent, then recheck for work. `true`: sleep (the
/// intent stays armed, so every later `publish` rings; `disarm` after the sleep); `false`: work
/// arrived, the intent is withdrawn. The one implementation of the decision: `EventLoop` calls
/// it before each sleep, and the loom models of the protocol call it too.
pub(crate) fn decide_sleep(loop_side: &mut impl Sleeper) -> bool {
    loop_side.wake().arm();
    if loop_side.has_work() {
        loop_side.wake().disarm();
        return false;
    }
    true
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn publish_arm_disarm_and_submitted() {
        // Port of the model's waker.rs test 1: the sequence counts publishes only; arm reports
        // it; a publish while armed asks for an eventfd write, one without intent does not.
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
}
