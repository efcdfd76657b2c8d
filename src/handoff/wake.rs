//! Waking the loop from sleep: a sleep-intent bit in the storage's life word, and an eventfd
//! watched by a multishot poll in the ring.
//!
//! # State
//!
//! ```text
//! life: AtomicU64 = [ LOOP | CLOSED | INTENT | SHUTDOWN | unused | submitting:24 | handles:32 ]
//! ```
//! (`storage.rs` describes the other fields.) A caller from another thread counts itself in
//! `submitting` before it pushes its index into the submission ring and leaves with a
//! read-modify-write after the push (`Storage::end_submit`); the wake rides on that last step.
//! * **release** (caller, after its index is in the submission ring): subtract its count; if the
//!   previous value had `INTENT` set, the loop may be asleep in `io_uring_enter`: **claim** the
//!   intent (clear it) and write the eventfd if this caller is the one that cleared it. Without
//!   intent no syscall happens, and no read-modify-write beyond the one the count needs anyway.
//!   One sleep takes one write however many callers saw the intent: the others' pushes are in
//!   the ring before their releases, and the woken loop rechecks before it sleeps again.
//! * **arm** (loop, before sleeping): set `INTENT`; then **recheck** the submission ring; sleep
//!   only if nothing is ready.
//! * **disarm** (loop, after waking): clear `INTENT`.
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
//! All releases and the arm are read-modify-writes of one word, so they are totally ordered.
//! Take a release `P` whose push the loop's recheck did not see, and the loop's arm `A`:
//! * if `P` comes before `A`, `A` reads a value at or after `P`'s in that order, and the chain of
//!   read-modify-writes carries `P`'s Release to `A`'s Acquire: the push (which precedes `P`)
//!   happens before the recheck, which therefore sees it. Contradiction, so this case cannot be;
//! * so `P` comes after `A`, and `P` reads the intent bit `A` set. Either `P`'s claim clears
//!   it and `P` writes the eventfd: the armed poll posts a CQE, and `io_uring_enter(min_complete
//!   = 1)` returns; or another caller's claim (after `A`, so a caller that writes the eventfd)
//!   cleared it first, or the loop's `disarm` did (the loop was awake again): either way the
//!   loop wakes, and its next recheck comes after `P` in the order, so it sees `P`'s push.
//!
//! The loop sleeps on "nothing ready in the ring after arming", not on a count of pushes. So a
//! producer preempted mid-push (its position claimed, its stamp not yet written) cannot make the
//! loop spin: the loop sleeps, and that producer's own release, after its push, wakes it. This
//! fixes the model's busy iteration on sequence skew (docs/behaviour.md section 5).
//!
//! Shutdown uses `ring` after the last sender is gone, and the loop checks the sender count
//! after arming too, so the disconnect cannot slip between the check and the sleep.
//!
//! A caller on the loop's own thread takes none of this: the loop is awake, it runs the caller.

use crate::loom::{AtomicU64, Ordering};

/// `user_data` of the wake poll's CQEs; never a request id (slot indices are < 2^31).
pub(crate) const WAKE_TOKEN: u64 = u64::MAX;

/// The sleep-intent bit of the life word (above `submitting`, below `CLOSED` and `LOOP`).
pub(crate) const INTENT: u64 = 1 << 61;

/// A caller leaves the life word after its push: subtracts `count` (its share of `submitting`)
/// and returns the word after it, and whether the caller must write the eventfd (the loop had
/// declared the intent to sleep).
#[must_use]
#[inline]
pub(crate) fn release(word: &AtomicU64, count: u64) -> (u64, bool) {
    // AcqRel: Release carries the push to the loop's arm (module doc) and to its `serving_over`
    // check; Acquire orders our eventfd write after seeing the intent.
    let before = word.fetch_sub(count, Ordering::AcqRel);
    let ring = before & INTENT != 0 && claim(word);
    (before - count, ring)
}

/// A caller that saw the intent takes it (clears it): true if this call cleared it, so that of
/// the callers that saw one intent exactly one writes the eventfd (the others' pushes are seen
/// by the woken loop, which rechecks before it sleeps again).
#[cold]
fn claim(word: &AtomicU64) -> bool {
    // AcqRel: as `release`'s (the write that follows is ordered after it).
    word.fetch_and(!INTENT, Ordering::AcqRel) & INTENT != 0
}

/// Declares the intent to sleep; returns the word as that same atomic step found it.
pub(crate) fn arm(word: &AtomicU64) -> u64 {
    // AcqRel: Acquire pairs with every earlier release (module doc).
    word.fetch_or(INTENT, Ordering::AcqRel)
}

/// Clears the intent after the sleep (or after deciding not to sleep).
pub(crate) fn disarm(word: &AtomicU64) {
    word.fetch_and(!INTENT, Ordering::Release);
}

/// True while the loop declares it may sleep.
#[allow(dead_code)] // tests and models
#[inline]
pub(crate) fn is_armed(word: &AtomicU64) -> bool {
    word.load(Ordering::Acquire) & INTENT != 0
}

/// The loop's side of the wake protocol, as the loop and its loom models see it: where the
/// intent lives, and whether work is waiting.
pub(crate) trait Sleeper {
    /// The word the submitters release (the storage's life word).
    fn word(&self) -> &AtomicU64;
    /// Whether there is work the loop must do instead of sleeping (read after arming).
    fn has_work(&mut self) -> bool;
}

/// The loop's decision to sleep: declare the intent, then recheck for work. `true`: sleep (the
/// intent stays armed, so every later `release` rings; `disarm` after the sleep); `false`: work
/// arrived, the intent is withdrawn. The one implementation of the decision: `EventLoop` calls
/// it before each sleep, and the loom models of the protocol call it too.
pub(crate) fn decide_sleep(loop_side: &mut impl Sleeper) -> bool {
    arm(loop_side.word());
    if loop_side.has_work() {
        disarm(loop_side.word());
        return false;
    }
    true
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn release_arm_disarm() {
        // Port of the model's waker.rs test 1, on the life word: a release without intent asks
        // for no syscall, one while armed does; arm and disarm keep the counts; release takes
        // its count off.
        const ONE: u64 = 1 << 32;
        let word = AtomicU64::new(3 * ONE + 1);
        assert_eq!(
            release(&word, ONE),
            (2 * ONE + 1, false),
            "no intent: no syscall"
        );
        assert_eq!(arm(&word), 2 * ONE + 1);
        assert!(is_armed(&word));
        assert_eq!(
            release(&word, ONE),
            ((ONE + 1) | INTENT, true),
            "armed: ring"
        );
        assert!(!is_armed(&word), "the ringing caller took the intent");
        disarm(&word);
        assert!(!is_armed(&word));
        assert_eq!(
            word.load(Ordering::Relaxed),
            ONE + 1,
            "disarm keeps the counts"
        );
        assert_eq!(release(&word, ONE), (1, false));
    }

    #[test]
    fn one_intent_rings_once() {
        // Callers that release after one arm: the first writes the eventfd, the rest do not (the
        // loop it woke sees their pushes); the next arm rings again.
        const ONE: u64 = 1 << 32;
        let word = AtomicU64::new(4 * ONE);
        arm(&word);
        let rings: Vec<bool> = (0..3).map(|_| release(&word, ONE).1).collect();
        assert_eq!(rings, [true, false, false]);
        disarm(&word);
        arm(&word);
        assert!(release(&word, ONE).1, "a new intent rings again");
        assert_eq!(word.load(Ordering::Relaxed), 0, "every count taken back");
    }
}
