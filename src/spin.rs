//! Adaptive spinning: how long the loop, and a thread in `.wait()`, polls before it sleeps.
//!
//! Sleeping and being woken costs tens of microseconds; spinning costs a core. The configured
//! `idle_spin` is the most a thread spins. The budget it actually spins moves between
//! `idle_spin / 64` and `idle_spin`: after each wait it doubles if the wait ended within
//! `idle_spin` (spinning that long would have caught the event, or did), and halves if it did
//! not, so threads spin where gaps are short and stop burning cores where they are long.
//!
//! A spin also stops at once when the thread finds it was descheduled (a step took longer than
//! [`PREEMPTED`]): the cores are oversubscribed, and spinning on would only delay the thread that
//! is to produce the event. That wait then counts as a miss. On two cores with three spinning
//! threads this is what keeps them from taking turns at burning each other's time slices.

use std::time::{Duration, Instant};

/// A step that took longer than this means the thread was descheduled while spinning.
pub(crate) const PREEMPTED: Duration = Duration::from_micros(20);

/// Steps spun before the first clock read. On a busy path most waits end within them, and a
/// clock read costs more than the whole hand-off (the profile: 4 of them per request were a
/// quarter of the loop's instructions), so those waits read no clock at all.
pub(crate) const QUICK_STEPS: u32 = 64;

/// One spin: polls until the budget is spent or the thread is preempted.
pub(crate) struct Spin {
    /// When the timed part began, and the last step's time; `None` during the quick steps.
    clock: Option<(Instant, Instant)>,
    budget: Duration,
    step: u32,
    preempted: bool,
}

impl Spin {
    /// Starts spinning for at most `budget` (plus the quick steps); reads no clock yet.
    pub(crate) fn new(budget: Duration) -> Self {
        Spin {
            clock: None,
            budget,
            step: 0,
            preempted: false,
        }
    }

    /// Spins one step; false once the budget is spent or the thread was descheduled.
    pub(crate) fn step(&mut self) -> bool {
        if self.budget.is_zero() {
            return false;
        }
        if self.step < QUICK_STEPS {
            self.step += 1;
            crate::loom::spin_hint();
            return true;
        }
        let now = Instant::now();
        match &mut self.clock {
            None => self.clock = Some((now, now)),
            Some((start, last)) => {
                let step = now - std::mem::replace(last, now);
                if step > PREEMPTED {
                    self.preempted = true;
                    return false;
                }
                if now - *start >= self.budget {
                    return false;
                }
            }
        }
        crate::loom::spin_step(&mut self.step);
        true
    }

    /// Time spent in the timed part of the spin, up to its last step (zero if it ended in the
    /// quick steps). No clock read: a step is far shorter than the budgets this is compared
    /// with (a longer one ends the spin as preempted), and the read would cost as much as the
    /// rest of a waiter's bookkeeping.
    pub(crate) fn elapsed(&self) -> Duration {
        self.clock
            .map_or(Duration::ZERO, |(start, last)| last - start)
    }

    /// Whether the spin ended because the thread was descheduled.
    pub(crate) fn preempted(&self) -> bool {
        self.preempted
    }
}

/// The next budget, in nanoseconds, after a wait of `waited` (`max`: the configured spin).
/// `preempted`: the spin was cut short by a lost core, which counts as a miss.
pub(crate) fn adapt(budget: u64, max: u64, waited: Duration, preempted: bool) -> u64 {
    let waited = waited.as_nanos().min(u64::MAX as u128) as u64;
    if waited <= max && !preempted {
        grow(budget, max)
    } else {
        (budget / 2).clamp(floor(max), max)
    }
}

/// The next budget after a wait that ended while its spin still ran (`adapt` of a hit). Such
/// a wait was shorter than the budget, itself at most `max`, and not preempted (a preempted
/// step ends the spin), so no clock read is needed to know it.
#[inline]
pub(crate) fn grow(budget: u64, max: u64) -> u64 {
    budget.saturating_mul(2).clamp(floor(max), max)
}

/// The smallest budget: `max / 64`.
fn floor(max: u64) -> u64 {
    (max / 64).max(1).min(max)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn short_waits_grow_the_budget_to_the_configured_spin() {
        let max = 50_000;
        let mut budget = max / 64;
        for _ in 0..10 {
            budget = adapt(budget, max, Duration::from_micros(10), false);
        }
        assert_eq!(budget, max, "bounded above by idle_spin");
    }

    #[test]
    fn long_waits_and_preemption_shrink_it_to_a_floor() {
        let max = 50_000;
        let mut budget = max;
        budget = adapt(budget, max, Duration::from_micros(10), true);
        assert_eq!(budget, max / 2, "a preempted spin is a miss");
        for _ in 0..20 {
            budget = adapt(budget, max, Duration::from_millis(5), false);
        }
        assert_eq!(budget, max / 64, "bounded below by idle_spin / 64");
        assert_eq!(
            adapt(0, 0, Duration::ZERO, false),
            0,
            "no spin stays no spin"
        );
    }

    #[test]
    fn grow_is_adapt_of_a_wait_within_the_budget() {
        let max = 50_000;
        for budget in [max / 64, max / 8, max / 2 + 1, max] {
            let waited = Duration::from_nanos(budget - 1);
            assert_eq!(grow(budget, max), adapt(budget, max, waited, false));
        }
        assert_eq!(grow(0, 0), 0, "no spin stays no spin");
    }

    #[test]
    fn a_zero_budget_never_spins_and_quick_steps_read_no_clock() {
        assert!(!Spin::new(Duration::ZERO).step());
        let mut spin = Spin::new(Duration::from_secs(1));
        for _ in 0..QUICK_STEPS {
            assert!(spin.step());
        }
        assert_eq!(spin.elapsed(), Duration::ZERO, "no clock read yet");
    }

    #[test]
    fn a_spin_ends_at_its_budget() {
        let mut spin = Spin::new(Duration::from_micros(200));
        let mut steps = 0u64;
        while spin.step() {
            steps += 1;
        }
        assert!(steps > 0);
        // Either the budget ran out, or (on a loaded machine) the thread lost its core.
        assert!(spin.elapsed() >= Duration::from_micros(200) || spin.preempted());
    }
}
