//! Waking the loop from sleep: a sleep-intent bit in the submission ring's tail word, and an
//! eventfd watched by a multishot poll in the ring.
//!
//! # State
//!
//! ```text
//! tail: AtomicU64 = [ unused:1 | CLOSED:1 | INTENT:1 | epoch:29 | position:32 ]
//! ```
//! (`submit_queue.rs` describes the other fields.) A caller from another thread claims its
//! position with one compare-exchange of this word, which also reads the intent; the wake rides on
//! that step, so a submission costs one read-modify-write of shared state beyond its slot.
//! * **claim** (caller): take a position; then write the index and publish it (the stamp). If
//!   the claim found `INTENT` set, the loop may be asleep in `io_uring_enter`: after publishing,
//!   **take** the intent (clear it) and write the eventfd if this caller is the one that cleared
//!   it. Without intent no syscall happens. One sleep takes one write however many callers saw
//!   the intent: the others' pushes are published before their takes, and the woken loop
//!   rechecks before it sleeps again.
//! * **arm** (loop, before sleeping): set `INTENT`, reading the tail; then **recheck**: work
//!   ready means no sleep; positions claimed before the arm and not yet published (the tail it
//!   read is past the head) mean a **nap**: a sleep bounded by [`GAP_WAIT`], since their
//!   producers read no intent and owe no wake; else sleep.
//! * **disarm** (loop, after waking): clear `INTENT`.
//! * **ring**: an unconditional eventfd write, used when the last sender leaves or a handle asks
//!   for shutdown, so a sleeping loop notices.
//!
//! Lanes (`lane.rs`) and dropped timers do not claim positions: a lane's producer counts itself
//! in the life word's `submitting` around its push and releases with one read-modify-write after
//! it (`release`); a dropped timer releases the tail word with a zero count. While lanes are
//! registered the loop arms the life word too.
//!
//! The eventfd is watched by a multishot `PollAdd` whose completions carry [`WAKE_TOKEN`]; each wake
//! CQE is acknowledged by reading the eventfd, and when the kernel ends the multishot (no
//! `IORING_CQE_F_MORE`) the loop reinstalls it at the start of its next staging pass. Reinstalling
//! is fallible: with a full SQ it stays pending and the loop submits first (no panic).
//!
//! # Why no wake-up is lost
//!
//! A claim, the arm and every release are read-modify-writes of one word, so they are totally
//! ordered. Take a submission `P` the loop has not consumed when it arms (`A`):
//! * if `P`'s claim comes before `A`, `A` reads a tail at or after `P`'s: the position is
//!   claimed. If its stamp is visible to the recheck, the loop takes it; if not, the loop naps
//!   and looks again within [`GAP_WAIT`]: it never sleeps past a claimed position;
//! * if `P`'s claim comes after `A`, it reads the intent bit `A` set. Either `P`'s take clears
//!   it and `P` writes the eventfd after its publish: the armed poll posts a CQE, and
//!   `io_uring_enter(min_complete = 1)` returns; or another caller's take (after `A`, so a caller
//!   that writes the eventfd) cleared it first, or the loop's `disarm` did (the loop was awake
//!   again): either way the loop wakes, and its next arm comes after `P`'s claim, so the case
//!   above applies.
//!
//! For a release (a lane's push, a dropped timer's flag), the work precedes the release: if the
//! release comes before the arm, the chain of read-modify-writes carries its Release to the arm's
//! Acquire and the recheck sees the work; if after, it reads the intent, as above.
//!
//! A producer preempted between its claim and its publish therefore costs the loop naps, not a
//! lost wake-up and not a spin (docs/behaviour.md section 5). A late take (its claim's loop has
//! closed and a new claim began) may clear the new loop's intent; it then writes the current
//! eventfd, so that loop wakes: a spurious wake, never a lost one.
//!
//! A caller on the loop's own thread takes none of this: the loop is awake, it runs the caller.

use std::time::Duration;

use crate::loom::{AtomicU64, Ordering};

/// `user_data` of the wake poll's CQEs; never a request id (slot indices are < 2^31).
pub(crate) const WAKE_TOKEN: u64 = u64::MAX;

/// The sleep-intent bit, at the same place in the tail word and the life word.
pub(crate) const INTENT: u64 = 1 << 61;

/// The longest sleep of a loop that found a position claimed before its arm and not yet
/// published (a producer preempted mid-push, which owes no wake): it looks again after this.
pub(crate) const GAP_WAIT: Duration = Duration::from_micros(50);

/// A releaser leaves `word` after its work is visible (a lane's push, a dropped timer's flag):
/// subtracts `count` (its share of the life word's `submitting`, or 0) and returns the word after
/// it, and whether the caller must write the eventfd (the loop had declared the intent to sleep).
#[must_use]
#[inline]
pub(crate) fn release(word: &AtomicU64, count: u64) -> (u64, bool) {
    // AcqRel: Release carries the work to the loop's arm (module doc) and to its `serving_over`
    // check; Acquire orders our eventfd write after seeing the intent.
    let before = word.fetch_sub(count, Ordering::AcqRel);
    let ring = before & INTENT != 0 && take_intent(word);
    (before - count, ring)
}

/// A caller that saw the intent takes it (clears it): true if this call cleared it, so that of
/// the callers that saw one intent exactly one writes the eventfd (the others' pushes are seen
/// by the woken loop, which rechecks before it sleeps again).
#[cold]
pub(crate) fn take_intent(word: &AtomicU64) -> bool {
    // AcqRel: as `release`'s (the write that follows is ordered after it).
    word.fetch_and(!INTENT, Ordering::AcqRel) & INTENT != 0
}

/// Declares the intent to sleep; returns the word as that same atomic step found it.
pub(crate) fn arm(word: &AtomicU64) -> u64 {
    // AcqRel: Acquire pairs with every earlier release and claim (module doc).
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
    /// The submission ring's tail word (claims and the dropped timers' releases).
    fn word(&self) -> &AtomicU64;
    /// A second word whose releases must wake the loop too: the life word, while lanes are
    /// registered.
    fn lane_word(&self) -> Option<&AtomicU64> {
        None
    }
    /// Whether there is work the loop must do instead of sleeping (read after arming).
    fn has_work(&mut self) -> bool;
    /// Whether the tail word as the arm read it (`armed`) holds positions claimed and not yet
    /// consumed (their producers may owe no wake).
    fn claimed(&self, armed: u64) -> bool;
}

/// What an idle loop does after arming and rechecking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Work arrived: the intent is withdrawn; go round.
    Work,
    /// A claimed position is not published yet: sleep at most [`GAP_WAIT`] (intent armed), then
    /// look again.
    Nap,
    /// Nothing: sleep until a completion, a wake or the next deadline (intent armed).
    Sleep,
}

/// The loop's decision to sleep: declare the intent, then recheck for work. After `Nap` or
/// `Sleep` the intent stays armed, so every later claim or release rings (`disarm_all` after the
/// sleep). The one implementation of the decision: `EventLoop` calls it before each sleep, and the
/// loom models of the protocol call it too.
#[inline]
pub(crate) fn decide_sleep(loop_side: &mut impl Sleeper) -> Decision {
    if let Some(word) = loop_side.lane_word() {
        arm(word);
    }
    let armed = arm(loop_side.word());
    if loop_side.has_work() {
        disarm_all(loop_side);
        return Decision::Work;
    }
    if loop_side.claimed(armed) {
        Decision::Nap
    } else {
        Decision::Sleep
    }
}

/// Clears the intent on every word `decide_sleep` armed.
pub(crate) fn disarm_all(loop_side: &impl Sleeper) {
    disarm(loop_side.word());
    if let Some(word) = loop_side.lane_word() {
        disarm(word);
    }
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
