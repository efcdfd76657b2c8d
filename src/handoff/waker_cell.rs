//! A cell holding one task's `Waker`, registered by the caller and taken by the loop without a
//! lock (the algorithm of `futures::task::AtomicWaker`, written for our loom shim).
//!
//! ```text
//! state: IDLE --register--> REGISTERING --done--> FULL --register--> REGISTERING | FULL ...
//!          \--wake--> WAKING (take waker, wake it) --> IDLE (FULL cleared)
//! REGISTERING + wake  => WAKING bit set; the registrant sees it when it finishes and wakes the
//!                        task itself, so a wake that races a registration is never lost.
//! ```
//! FULL says the cell holds a waker. It lets the registrant take its own waker back with one
//! load when the loop has already taken it (the common case): see [`take_back`].
//!
//! [`take_back`]: WakerCell::take_back
//!
//! Usage contract: the caller registers, *then* checks the condition; the loop changes the
//! condition, *then* takes the waker ([`take`](WakerCell::take)) and wakes it. Both sides'
//! read-modify-writes on `state` are totally ordered, which is what rules out the lost wake-up.

use crate::loom::{AtomicU32, Ordering, UnsafeCell};
use std::task::Waker;

const IDLE: u32 = 0;
const REGISTERING: u32 = 0b01;
const WAKING: u32 = 0b10;
const FULL: u32 = 0b100;

/// Puts the cell back to IDLE, emptied, if a registration unwinds (a panicking waker clone), so
/// that neither side ever waits on a registration that will not finish.
struct ResetOnUnwind<'a>(&'a WakerCell);

impl Drop for ResetOnUnwind<'_> {
    fn drop(&mut self) {
        // SAFETY: only reached while we hold REGISTERING (the guard is forgotten otherwise).
        let stale = self.0.waker.with_mut(|cell| unsafe { (*cell).take() });
        // Release: the emptied cell is visible to the next registrant's Acquire.
        self.0.state.store(IDLE, Ordering::Release);
        // A second panic while unwinding would abort: drop the stale waker without unwinding.
        let _ = crate::contain::run(move || drop(stale));
    }
}

/// One registrant at a time (the slot's current owner), any number of wakers.
pub(crate) struct WakerCell {
    state: AtomicU32,
    /// Written only by whoever moved `state` out of IDLE (registrant or waker).
    waker: UnsafeCell<Option<Waker>>,
}

// SAFETY: `waker` is only accessed by the thread that won the IDLE -> REGISTERING or
// IDLE -> WAKING transition, so accesses never overlap; `Waker` is Send + Sync.
unsafe impl Sync for WakerCell {}
// SAFETY: as above.
unsafe impl Send for WakerCell {}

impl WakerCell {
    crate::loom::maybe_const_fn! {
        /// An empty cell.
        pub(crate) fn new() -> Self {
            Self { state: AtomicU32::new(IDLE), waker: UnsafeCell::new(None) }
        }
    }

    /// Stores `waker` for the next [`take`](Self::take) to wake.
    ///
    /// Cloning `waker` and dropping the one it replaces are user code. The clone runs while the
    /// cell is REGISTERING: if it panics, the cell goes back to IDLE (emptied) before the panic
    /// leaves, so it stays usable. The replaced waker is dropped after the cell left
    /// REGISTERING.
    pub(crate) fn register(&self, waker: &Waker) {
        // Relaxed: a first guess at the state (IDLE, or FULL from our own earlier registration);
        // the exchange below checks it.
        let mut current = self.state.load(Ordering::Relaxed);
        let claimed = loop {
            if current & (REGISTERING | WAKING) != 0 {
                break Err(current);
            }
            // Acquire: sees the cell as the previous owner left it (a take's Release).
            match self.state.compare_exchange(
                current,
                current | REGISTERING,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break Ok(current),
                // Only a waker changes the state under us (one registrant): it set WAKING, or
                // finished a take (FULL cleared); look again.
                Err(actual) => current = actual,
            }
        };
        match claimed {
            Ok(before) => {
                let reset = ResetOnUnwind(self);
                // The replaced waker is dropped at the end, once REGISTERING is cleared.
                let _replaced = self.waker.with_mut(|cell| {
                    // SAFETY: we set REGISTERING on an IDLE or FULL state, so no one else
                    // touches the cell until we clear it.
                    let cell = unsafe { &mut *cell };
                    match cell {
                        Some(old) if old.will_wake(waker) => None,
                        _ => cell.replace(waker.clone()),
                    }
                });
                std::mem::forget(reset);
                // AcqRel: Release publishes the waker to the next waker; Acquire (on failure)
                // sees what a concurrent `wake` published before setting WAKING.
                let done = self.state.compare_exchange(
                    before | REGISTERING,
                    FULL,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                if done.is_err() {
                    // A wake arrived while we registered: deliver it ourselves.
                    // SAFETY: the state is REGISTERING | WAKING; the waker side backs off while
                    // REGISTERING is set, so the cell is still ours.
                    let waker = self.waker.with_mut(|cell| unsafe { (*cell).take() });
                    self.state.swap(IDLE, Ordering::AcqRel);
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                }
            }
            // A wake is being delivered right now: make sure this task polls again.
            Err(_) => waker.wake_by_ref(),
        }
    }

    /// Takes the registered waker, if any, for the caller to wake.
    #[inline]
    pub(crate) fn take(&self) -> Option<Waker> {
        // AcqRel: Acquire sees the registrant's waker; pairs with its Release.
        match self.state.fetch_or(WAKING, Ordering::AcqRel) & !FULL {
            IDLE => {
                // SAFETY: we moved IDLE -> WAKING; the cell is ours until we clear WAKING.
                let waker = self.waker.with_mut(|cell| unsafe { (*cell).take() });
                // Release: the emptied cell is visible to the next registrant's Acquire.
                self.state.fetch_and(!(WAKING | FULL), Ordering::Release);
                waker
            }
            // REGISTERING: the registrant will see WAKING and wake itself. WAKING: someone
            // else is delivering a wake already.
            _ => None,
        }
    }

    /// The registrant takes its own waker back (its request is over), if the cell still holds
    /// it. Only the registrant may call this: the load then sees its own registration or
    /// something newer (coherence), so a cell without FULL was emptied by a waker, and there is
    /// nothing to take and no read-modify-write to pay.
    #[inline]
    pub(crate) fn take_back(&self) -> Option<Waker> {
        if self.state.load(Ordering::Relaxed) & FULL == 0 {
            return None;
        }
        self.take()
    }

    /// Whether the cell holds the registrant's last waker, untaken. Only the registrant may
    /// ask (as for `take_back`): a waker may empty the cell at any time after, and wakes it.
    #[inline]
    pub(crate) fn holds(&self) -> bool {
        // Acquire: pairs with the registrant's own Release (its registration is complete).
        self.state.load(Ordering::Acquire) == FULL
    }

    /// Wakes the registered task, if any (tests and models; the crate itself goes through
    /// `Storage::wake_caller`, which contains a panicking waker).
    #[cfg(test)]
    pub(crate) fn wake(&self) {
        if let Some(waker) = self.take() {
            waker.wake();
        }
    }
}
