//! The end of a loop: the drain after the last handle, the abandonment when the budget runs out
//! (or the loop fails or unwinds), and giving the claim back.

use std::time::{Duration, Instant};

use super::id::RequestId;
use super::registry::Registry;
use super::table::{owned_request, Table};
use super::{EventLoop, Mode, Pass};
use crate::error::Error;
use crate::handoff::slot::Finish;
use crate::metrics::Counters;

/// Abandonment: the longest single wait for the kernel to release cancelled requests, and the
/// most waits (so an abandonment adds at most a few tens of milliseconds to a shutdown).
const COLLECT_WAIT: Duration = Duration::from_millis(2);
const COLLECT_ROUNDS: usize = 16;

impl<const S: usize, const R: usize, const W: usize> EventLoop<S, R, W> {
    /// The drain after the last handle (or `Handle::shutdown`): in-flight and ready requests go
    /// on, deadlines fire, queued requests are admitted as entries free up, all under the
    /// budget, which is charged for waiting time only. When it runs out, `abandon_all`; requests
    /// still queued are then answered `Closed` by `close`. `local` (`block_on`'s future) is
    /// still polled when woken, so its tasks see their requests end (and new ones answered
    /// `Closed`) and can return; nothing it submits now is taken.
    pub(super) fn drain<L: super::local::Local>(
        &mut self,
        t: &mut Table<S, R, W>,
        local: &mut L,
    ) -> Result<(), Error> {
        let mut remaining = self.checked.config.shutdown_timeout;
        self.seal_inbox(t);
        loop {
            self.reap(t);
            self.settle_receivers(t);
            local.poll();
            if self.idle_for_good(t) {
                break;
            }
            if remaining == Some(Duration::ZERO) {
                self.abandon_all(t);
                break;
            }
            self.expire(t);
            let pass = self.stage(t, Mode::Drain);
            self.storage.metrics.set_pending(t.admitted());
            if self.idle_for_good(t) {
                break;
            }
            if pass == Pass::SqFull {
                self.enter(0, None)?;
                continue;
            }
            // A position claimed before the ring closed and not yet published: its producer
            // owes no wake (`wake.rs`), so look again soon.
            let gap = self.storage.queue.len() != 0 && !self.storage.queue.has_ready();
            let wait = [remaining, self.next_deadline(t), self.mail_wait(t)]
                .into_iter()
                .flatten()
                .chain(gap.then_some(crate::handoff::wake::GAP_WAIT))
                .min();
            let start = Instant::now();
            self.enter(1, wait)?;
            remaining = remaining.map(|r| r.saturating_sub(start.elapsed()));
        }
        self.storage.metrics.set_pending(t.admitted());
        Ok(())
    }

    /// Nothing admitted and nothing queued (no sender is left, so nothing more can come).
    fn idle_for_good(&self, t: &Table<S, R, W>) -> bool {
        t.admitted() == 0
            && t.timers == 0
            && !self.storage.local.has_ready()
            && self.storage.queue.len() == 0
            && !super::lanes_ready(t)
    }

    /// Budget gone (or the loop failed or unwinds): cancel what is in the kernel, collect what it
    /// releases, and park the rest. Requests not in the kernel end now: with `Timeout` if their
    /// deadline already fired, else `Abandoned`, buffers handed back.
    pub(super) fn abandon_all(&mut self, t: &mut Table<S, R, W>) {
        // Pending deadline cancels first, so that no request gets a second AsyncCancel.
        while self.stage_cancels(t).is_some() {
            if self.enter(0, None).is_err() {
                break;
            }
        }
        for index in 0..S as u32 {
            let flags = t.flags[index as usize];
            if flags.timer {
                // Nothing in the kernel: ended now.
                self.end_timer(t, index, Err(Error::Abandoned));
                continue;
            }
            if !flags.admitted {
                continue;
            }
            if !flags.in_flight {
                let outcome = if flags.cancel_requested {
                    Error::Timeout
                } else {
                    Error::Abandoned
                };
                owned_request(&mut t.flags, &self.storage.slots, index).outcome =
                    Some(Err(outcome));
                self.finish(t, index);
                continue;
            }
            if !flags.cancel_requested && !flags.drop_cancelled {
                if self.ring.sq_full() {
                    let _ = self.enter(0, None);
                }
                if !self.ring.sq_full() {
                    let generation = self.storage.slots[index as usize].generation();
                    self.push_cancel(RequestId::new(index, generation));
                }
            }
            t.flags[index as usize].abandoning = true;
        }
        t.ready.clear();
        t.cancels.clear();
        self.collect_released(t);
        for index in 0..S as u32 {
            if t.flags[index as usize].admitted {
                self.park(t, index);
            }
        }
        self.storage.metrics.set_pending(t.admitted());
    }

    /// Submits the abandonment's cancels and collects what the kernel releases right away: waits
    /// of at most `COLLECT_WAIT` each, until nothing is left in the kernel or a wait ends with no
    /// completion and the SQ consumed. (An SQPOLL thread takes the SQEs asynchronously, a
    /// cancel's CQE and its target's may arrive in different waits, and deferred task work runs
    /// only inside a waiting enter.)
    fn collect_released(&mut self, t: &mut Table<S, R, W>) {
        for _ in 0..COLLECT_ROUNDS {
            let entered = self.enter(1, Some(COLLECT_WAIT));
            let reaped = self.reap(t);
            if entered.is_err() || t.admitted() == 0 || (reaped == 0 && self.ring.sq_empty()) {
                return;
            }
        }
    }

    /// A request the kernel did not release: its slot (and buffer) stays with the kernel for
    /// good; its caller gets `Abandoned`.
    fn park(&mut self, t: &mut Table<S, R, W>, index: u32) {
        // A held operation moves into its slot, which keeps it for good.
        self.settle_held(t, index);
        if owned_request(&mut t.flags, &self.storage.slots, index).kind()
            == crate::op::OpKind::RecvMulti
        {
            // The kernel may still pick and fill its ring's buffers.
            t.registry.keep_rings = true;
        }
        self.end_entry(t, index);
        // The kernel's for good: the loop lets go of it.
        t.release(index);
        let metrics = &self.storage.metrics;
        Counters::bump(&metrics.completed);
        Counters::bump(&metrics.abandoned);
        Counters::bump(&metrics.parked);
        if let Some(caller) = self.storage.slots[index as usize].abandon() {
            self.storage.wake_caller(index, caller);
        }
    }

    /// Gives the claim back: closes submission and answers `Closed` to requests still queued.
    pub(super) fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let storage = self.storage.clone();
        // SAFETY: as in `table_mut`: the claim is ours and `close` runs outside `run`'s borrow of
        // the table, so this is its only borrow while the inbox closes.
        let table = unsafe { self.table.as_mut() };
        self.close_inbox(table);
        let t = self.table_mut();
        let lanes = std::mem::take(&mut t.lanes);
        let registry = std::mem::replace(&mut t.registry, Registry::NONE);
        storage.close_loop(&lanes, |index| {
            Counters::bump(&storage.metrics.completed);
            let slot = &storage.slots[index as usize];
            // Popped: the loop's (ACTIVE, or ORPHANED if its caller left).
            t.take(index);
            if slot.admit() {
                owned_request(&mut t.flags, &storage.slots, index).outcome =
                    Some(Err(Error::Closed));
                t.release(index);
                if let Finish::Delivered(caller) = slot.finish() {
                    storage.wake_caller(index, caller);
                    return;
                }
            }
            t.release(index);
            storage.free_slot(index);
        });
        // Swept: the lanes are free for another loop. The registered descriptors' owners are
        // dropped as user code is (contained), now the loop is done with them. Buffer rings are
        // free for another loop too, unless a parked receive may still fill them.
        for lane in lanes {
            lane.unbind(storage.key());
        }
        if !registry.keep_rings {
            for ring in &registry.rings {
                ring.release();
            }
        }
        storage.run_user(move || drop(registry));
    }
}
