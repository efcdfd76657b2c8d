//! Batched enters: while callers on other threads hold results the loop has just delivered
//! (and are about to submit their next requests), the loop waits a few polls for those requests
//! before it enters, so that one `io_uring_enter` carries several SQEs. A loop whose callers owe
//! nothing (one request outstanding, or callers on the loop thread, which submit within the
//! pass) enters at once: the wait never adds latency to a lone request. A loop that does not
//! spin (`idle_spin = 0`) uses the same estimate to submit without sleeping while callers owe
//! requests (`EventLoop::may_submit_first`).

/// Polls a batch waits at most, in total, before the loop enters.
pub(super) const WAIT_POLLS: u32 = 64;
/// Staged SQEs at which the loop enters without waiting for more.
pub(super) const FULL_ENOUGH: usize = 16;

/// The loop's estimate of requests about to arrive, and the current batch's wait.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// Results delivered to callers on other threads minus requests received from them: about
    /// how many requests those callers are about to submit.
    owed: u32,
    /// Polls the current batch has waited.
    waited: u32,
}

impl Batch {
    /// A result went to a caller on another thread.
    #[inline]
    pub(super) fn delivered(&mut self) {
        self.owed = self.owed.saturating_add(1);
    }

    /// A request arrived from another thread (the shared ring or a lane).
    #[inline]
    pub(super) fn received(&mut self) {
        self.owed = self.owed.saturating_sub(1);
    }

    /// Whether callers on other threads are about to submit (results delivered to them
    /// outnumber the requests received since).
    #[inline]
    pub(super) fn owed(&self) -> bool {
        self.owed != 0
    }

    /// Whether to wait one more poll for requests before entering with `staged` SQEs.
    #[inline]
    pub(super) fn wait(&mut self, staged: usize) -> bool {
        if self.owed == 0 || staged >= FULL_ENOUGH || self.waited >= WAIT_POLLS {
            return false;
        }
        self.waited += 1;
        true
    }

    /// The loop goes to sleep: nothing arrived while it had nothing to do, so the callers owed
    /// nothing after all (they kept or dropped their results). Without this a stale estimate
    /// would make every later idle pass of a loop that does not spin submit apart from its
    /// wait (one enter more per sleep).
    #[inline]
    pub(super) fn sleeping(&mut self) {
        self.owed = 0;
    }

    /// The loop entered: the next batch starts. A batch that waited out its polls found the
    /// callers owing nothing after all (they kept or dropped their results): the debt is
    /// forgotten, so a stale estimate costs one wait, not one per enter.
    #[inline]
    pub(super) fn entered(&mut self) {
        if self.waited >= WAIT_POLLS {
            self.owed = 0;
        }
        self.waited = 0;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Counts the polls a batch waits for.
    fn waits(batch: &mut Batch, staged: usize) -> u32 {
        let mut n = 0;
        while batch.wait(staged) {
            n += 1;
        }
        n
    }

    #[test]
    fn nothing_owed_enters_at_once() {
        let mut batch = Batch::default();
        assert_eq!(waits(&mut batch, 1), 0, "no delivery yet: no wait");
        batch.delivered();
        batch.received();
        assert_eq!(
            waits(&mut batch, 1),
            0,
            "the caller's next request came: no wait"
        );
    }

    #[test]
    fn owed_requests_are_waited_for_a_bounded_time_then_forgotten() {
        let mut batch = Batch::default();
        for _ in 0..8 {
            batch.delivered();
        }
        batch.received();
        assert_eq!(
            waits(&mut batch, 2),
            WAIT_POLLS,
            "bounded in total per batch"
        );
        assert_eq!(waits(&mut batch, 2), 0, "and not again before an enter");
        batch.entered();
        assert_eq!(
            waits(&mut batch, 2),
            0,
            "a batch that waited out its polls forgets the debt"
        );
    }

    #[test]
    fn owed_says_whether_callers_are_about_to_submit_until_the_loop_sleeps() {
        let mut batch = Batch::default();
        assert!(!batch.owed(), "nothing delivered");
        batch.delivered();
        batch.delivered();
        batch.received();
        assert!(batch.owed(), "one caller has not submitted again");
        batch.received();
        assert!(!batch.owed(), "both have");
        batch.delivered();
        batch.sleeping();
        assert!(!batch.owed(), "a loop that sleeps forgets the debt");
        assert_eq!(waits(&mut batch, 1), 0, "and waits for nothing");
    }

    #[test]
    fn a_full_enough_batch_enters_and_the_next_waits_again() {
        let mut batch = Batch::default();
        batch.delivered();
        assert_eq!(waits(&mut batch, FULL_ENOUGH), 0, "enough SQEs: enter");
        assert!(batch.wait(1));
        batch.entered();
        assert_eq!(
            waits(&mut batch, 1),
            WAIT_POLLS,
            "the debt stands after a short wait"
        );
    }
}
