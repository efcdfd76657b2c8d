//! The phases of one loop iteration: reap (CQEs), expire (the wheel), stage (SQEs), and the
//! request endings they lead to. Each takes the loop-private table as `&mut`.

use io_uring::{cqueue, opcode, squeue};
use std::time::Instant;

use super::id::{Cqe, RequestId};
use super::request::Deadline;
use super::table::{owned_request, Table};
use super::wheel::{ceil_tick, floor_tick, Target};
use super::{EventLoop, Mode, Pass};
use crate::error::Error;
use crate::fault;
use crate::handoff::slot::Finish;
use crate::metrics::Counters;
use crate::op::{Headers, OpKind};

impl<const S: usize, const R: usize, const W: usize> EventLoop<S, R, W> {
    /// Drains the CQ; returns the number of CQEs handled.
    pub(super) fn reap(&mut self, t: &mut Table<S, R, W>) -> usize {
        let mut handled = 0;
        // Each CQE is taken off the queue before it is handled: handling one may push SQEs
        // (never CQEs) to the ring.
        while let Some((user_data, result, flags)) = self.ring.pop_cqe() {
            self.on_cqe(t, user_data, result, flags);
            handled += 1;
        }
        handled
    }

    /// One CQE. A cancel CQE never decides anything, and a CQE whose request is gone (slot
    /// freed or reused) is ignored.
    fn on_cqe(&mut self, t: &mut Table<S, R, W>, user_data: u64, result: i32, flags: u32) {
        let id = match Cqe::decode(user_data) {
            Cqe::Wake => return self.on_wake(result, flags),
            Cqe::Cancel(_) => return,
            Cqe::Message => {
                return self.on_message(t, super::id::message_value(user_data, result));
            }
            Cqe::Op(id) => id,
        };
        let index = id.index() as usize;
        if index >= S {
            return;
        }
        // Only an admitted request with an SQE in flight can own this CQE (its slot is ACTIVE or
        // ORPHANED, so the loop owns the request and the generation is stable).
        let plain = t.flags[index].plain;
        if !t.flags[index].in_flight || !id.is_current(self.storage.slots[index].generation()) {
            return;
        }
        let key = self.storage.fault_key();
        let result = fault::cqe_result(key, user_data, result);
        let id32 = id.index();
        #[cfg(feature = "fault-injection")]
        fault::cqe_panic(
            key,
            match t.flags[index].held {
                true => t.held_ref(id32).vtable.kind,
                false => owned_request(&mut t.flags, &self.storage.slots, id32).kind(),
            },
        );
        // A request its future holds (`held.rs`): ended there, or made ordinary first.
        if t.flags[index].held && self.held_cqe(t, id32, result) {
            return;
        }
        if t.flags[index].may_end_pinned() && self.finish_pinned(t, id32, result) {
            return;
        }
        let result = match plain {
            true => result,
            false => match self.special_cqe(t, id32, result, flags) {
                Some(result) => result,
                None => return,
            },
        };
        let flags = &mut t.flags[index];
        flags.in_flight = false;
        let (cancel, abandoning) = (flags.cancel_requested, flags.abandoning);
        let r = owned_request(&mut t.flags, &self.storage.slots, id32);
        let finished = r.complete(result, cancel);
        if abandoning && (!finished || (result == -libc::ECANCELED && !cancel)) {
            // Stopped by the shutdown: the kernel released the buffer, but the request did not
            // finish (our cancel, a short transfer, a retry). A terminal answer of the kernel's
            // (success, an error, end of file) is kept.
            r.outcome = Some(Err(Error::Abandoned));
        }
        if finished || abandoning {
            self.finish(t, id.index());
        } else if self.orphanable(r.kind()) && self.storage.slots[index].is_orphaned() {
            self.retire(t, id.index());
        } else {
            self.requeue(t, id.index());
        }
    }

    /// Queues admitted request `index` (its SQE no longer in flight) for its next SQE: a short
    /// transfer or a retry.
    #[inline]
    pub(super) fn requeue(&mut self, t: &mut Table<S, R, W>, index: u32) {
        // Cannot fail: at most one entry per admitted request, and admitted <= RING.
        let _ = t.ready.push_back(index);
        Counters::bump(&self.storage.metrics.requeued);
    }

    /// The CQE of a plain request not cancelled (`SlotFlags::may_end_pinned`) whose caller is
    /// pinned to the loop thread and still there (a `LocalOp` admitted on the loop thread:
    /// `Slot::is_pinned_active`): the short form of `on_cqe`'s general ending, which it matches
    /// for such a request. Its deadline has not fired, nothing abandons it, nothing else waits
    /// for its slot's phase, and its waker is in the private cell. False, changing nothing, for
    /// any other request (the general path).
    #[inline]
    fn finish_pinned(&mut self, t: &mut Table<S, R, W>, index: u32, result: i32) -> bool {
        let slot = &self.storage.slots[index as usize];
        if !slot.is_pinned_active() {
            return false;
        }
        let r = owned_request(&mut t.flags, &self.storage.slots, index);
        let scheduled = r.deadline.is_some();
        let finished = r.complete(result, false);
        if !finished {
            t.flags[index as usize].in_flight = false;
            self.requeue(t, index);
            return true;
        }
        self.deliver_pinned(t, index, scheduled);
        true
    }

    /// Ends finished request `index` of a pinned caller still there (`Slot::is_pinned_active`),
    /// its outcome stored, and wakes it: `end_entry` and `deliver` for a plain request that no
    /// cancel touched (never among the starved streams, never timed out or abandoned).
    /// `scheduled`: it has a deadline in the wheel.
    #[inline(always)]
    pub(super) fn deliver_pinned(&mut self, t: &mut Table<S, R, W>, index: u32, scheduled: bool) {
        let metrics = &self.storage.metrics;
        t.end_and_release(index, scheduled);
        metrics.set_pending(t.admitted());
        Counters::bump(&metrics.completed);
        self.storage.slots[index as usize].finish_pinned();
        self.storage.wake_pinned(index);
    }

    /// The special cases of a CQE whose request is not plain (`OpKind::is_plain`): a stream's
    /// (handled here: `None`), a zero-copy send's (its result may wait for the notification:
    /// `None`), and a message header to read and give back. `Some(result)`: go on as for any.
    fn special_cqe(
        &mut self,
        t: &mut Table<S, R, W>,
        index: u32,
        result: i32,
        flags: u32,
    ) -> Option<i32> {
        let r = owned_request(&mut t.flags, &self.storage.slots, index);
        if r.work.is_stream() {
            self.on_stream_cqe(t, index, result, flags);
            return None;
        }
        // A zero-copy send's result waits in flight for its notification (zero_copy.rs).
        let result = self.zero_copy_cqe(t, index, result, flags)?;
        let r = owned_request(&mut t.flags, &self.storage.slots, index);
        if let Some(msg) = r.msg_done(&t.msgs) {
            // Cannot fail: it came from this list, which holds at most RING.
            let _ = t.free_msgs.push(msg);
        }
        Some(result)
    }

    /// A wake CQE: the next pass reads the sender count; a poll that ended is reinstalled.
    fn on_wake(&mut self, result: i32, flags: u32) {
        self.check_senders = true;
        Counters::bump(&self.storage.metrics.wakeups);
        self.eventfd.acknowledge();
        if result < 0 || !cqueue::more(flags) {
            self.rearm = true;
        }
    }

    /// Advances the wheel (only while deadlines are pending) and requests cancels. Without a
    /// `max_request_timeout` cap, an entry that reached the horizon before its deadline is
    /// re-armed instead (semantics A4: a deadline never fires early).
    pub(super) fn expire(&mut self, t: &mut Table<S, R, W>) {
        if t.wheel.len() == 0 {
            return;
        }
        let tick_ns = self.checked.tick_ns;
        let now = floor_tick(self.elapsed_ns(Instant::now()), tick_ns);
        let rearm = self.checked.config.max_request_timeout.is_none();
        let (origin_ns, horizon) = (self.origin_ns, self.checked.horizon);
        let Table {
            wheel,
            cancels,
            flags,
            fired,
            held,
            ..
        } = t;
        let slots = &self.storage.slots;
        wheel.advance_rearming(now, |index, _| {
            let entry = flags[index as usize];
            if entry.timer {
                // Never early, whatever the cap: re-armed until its end.
                let deadline = owned_request(flags, slots, index).deadline;
                let due = deadline.map_or(0, |d| ceil_tick(d.ns_after(origin_ns), tick_ns));
                if due > now {
                    return Some(due.min(now + horizon));
                }
                // Cannot fail: one entry per slot at most.
                let _ = fired.push(index);
                return None;
            }
            if !entry.admitted || entry.cancel_requested {
                return None;
            }
            if rearm {
                let deadline = super::held::deadline_of(flags, held, slots, index);
                let due = deadline.map_or(0, |d| ceil_tick(d.ns_after(origin_ns), tick_ns));
                if due > now {
                    return Some(due.min(now + horizon));
                }
            }
            let flags = &mut flags[index as usize];
            flags.cancel_requested = true;
            if flags.in_flight && !flags.drop_cancelled {
                let _ =
                    cancels.push_back(RequestId::new(index, slots[index as usize].generation()));
            }
            None
        });
        if t.fired.is_empty() {
            return;
        }
        for i in 0..t.fired.len() {
            let index = t.fired[i];
            self.fire_timer(t, index);
        }
        t.fired.clear();
    }

    /// One staging pass: wake-poll rearm (serving only), pending cancels, the ready queue, then
    /// fresh requests while fewer than `RING` are admitted. A pass with nothing to stage (most
    /// of them: a completion's pass, a loop-thread pass whose requests were staged as they were
    /// made) is told by a few loads, without the call; a pass with requests but no chores (a
    /// cross-thread request's) looks at the chores once.
    #[inline]
    pub(super) fn stage(&mut self, t: &mut Table<S, R, W>, mode: Mode) -> Pass {
        if self.has_chores(t, mode) {
            return self.stage_pass(t, mode);
        }
        if t.ready.is_empty() && !self.fresh_ready(t) {
            return Self::staged(t);
        }
        match self.stage_requests(t) {
            Some(pass) => pass,
            None => Self::staged(t),
        }
    }

    /// Whether [`stage_pass`](Self::stage_pass) would find nothing to do: no chore, no retry
    /// or fresh request waiting.
    #[inline]
    pub(super) fn nothing_to_stage(&self, t: &Table<S, R, W>, mode: Mode) -> bool {
        !self.has_chores(t, mode) && t.ready.is_empty() && !self.fresh_ready(t)
    }

    /// Whether a staging pass has more to do than stage requests: a wake poll to rearm or the
    /// sender count to read, something dropped, a buffer ring to replenish, a cancel to push.
    #[inline]
    fn has_chores(&self, t: &Table<S, R, W>, mode: Mode) -> bool {
        (mode == Mode::Serve && (self.rearm || self.check_senders))
            || self.storage.may_have_dropped()
            || self.storage.may_have_dropped_timers()
            || !t.registry.rings.is_empty()
            || !t.cancels.is_empty()
    }

    /// What a staging pass reports once nothing more can be staged.
    #[inline]
    fn staged(t: &Table<S, R, W>) -> Pass {
        if t.admitted() == R {
            Pass::WaiterFull
        } else {
            Pass::Drained
        }
    }

    /// [`stage`](Self::stage) when there may be something to stage.
    #[inline(never)]
    fn stage_pass(&mut self, t: &mut Table<S, R, W>, mode: Mode) -> Pass {
        if mode == Mode::Serve && self.rearm {
            if self.ring.sq_full() {
                return Pass::SqFull;
            }
            self.ring
                .push(&super::ring::wake_poll_sqe(self.eventfd.raw()));
            self.rearm = false;
        }
        if self.storage.take_dropped() {
            self.queue_drop_cancels(t);
        }
        // Looked at here (a load): most passes find none, and the call costs more.
        if self.storage.may_have_dropped_timers() {
            self.retire_dropped_timers(t);
        }
        if !t.registry.rings.is_empty() {
            self.replenish(t);
        }
        if !t.cancels.is_empty() {
            if let Some(pass) = self.stage_cancels(t) {
                return pass;
            }
        }
        if let Some(pass) = self.stage_requests(t) {
            return pass;
        }
        // Read only after a wake CQE (`check_senders`); the pre-sleep recheck reads it too. No
        // sender left, or a shutdown asked for: drain, whatever is still queued (the drain
        // admits it).
        if mode == Mode::Serve && self.check_senders {
            if !self.storage.serving_over() {
                // Without a wake poll (a polled ring), read it on every pass.
                self.check_senders = self.checked.config.io_poll;
            } else {
                return Pass::Disconnected;
            }
        }
        Self::staged(t)
    }

    /// The ready queue (retries), then fresh requests while fewer than `RING` are admitted, and
    /// again while that readied more. `Some(Pass::SqFull)` if the SQ filled first. One copy,
    /// out of line, so that what it calls is inlined into it.
    #[inline(never)]
    fn stage_requests(&mut self, t: &mut Table<S, R, W>) -> Option<Pass> {
        loop {
            while let Some(&index) = t.ready.front() {
                if self.ring.sq_full() {
                    return Some(Pass::SqFull);
                }
                t.ready.pop_front();
                self.stage_one(t, index);
            }
            // The SQ's room is read once and counted down (an admission pushes one SQE at
            // most), not looked at again for every request; read again when the count runs out.
            let mut room = 0;
            while t.admitted() < R {
                if room == 0 {
                    room = self.ring.sq_room();
                    if room == 0 {
                        if self.fresh_ready(t) {
                            return Some(Pass::SqFull);
                        }
                        break;
                    }
                }
                match self.pop_fresh(t) {
                    Some(index) => {
                        room -= 1;
                        self.admit(t, index);
                    }
                    None => break,
                }
            }
            // A fresh request can ready another: a stream's `next` that takes a queued result
            // re-arms its stream (room again). Staged in this pass, not left for the next wake.
            if t.ready.is_empty() {
                return None;
            }
        }
    }

    /// Cancel on drop: queues an AsyncCancel for every admitted request in the kernel whose
    /// caller dropped it (at most one cancel per request; a deadline's cancel counts). A
    /// dropped stream is cancelled whatever the config, or retired at once if paused.
    fn queue_drop_cancels(&mut self, t: &mut Table<S, R, W>) {
        let config = self.checked.config.cancel_on_drop;
        for index in 0..S as u32 {
            let flags = t.flags[index as usize];
            if !flags.admitted || flags.cancel_requested || flags.drop_cancelled {
                continue;
            }
            if flags.held {
                // Dropped only if its future left (and moved the operation into the slot).
                if !self.storage.slots[index as usize].is_orphaned() {
                    continue;
                }
                self.settle_held(t, index);
            }
            let slot = &self.storage.slots[index as usize];
            let r = owned_request(&mut t.flags, &self.storage.slots, index);
            let rule = r.kind().dropped();
            if !slot.is_orphaned() || !(rule.always_cancelled() || config && rule.cancelled()) {
                continue;
            }
            if !flags.in_flight {
                // A paused stream (a request waiting in the ready queue is retired there).
                if r.work.stream().is_some_and(|s| s.multi().paused) {
                    self.retire(t, index);
                }
                continue;
            }
            t.flags[index as usize].drop_cancelled = true;
            // Cannot fail: at most one entry per admitted request, and admitted <= RING.
            let _ = t
                .cancels
                .push_back(RequestId::new(index, slot.generation()));
        }
    }

    /// Pushes the pending AsyncCancels (FIFO); `Some(SqFull)` if the SQ filled first.
    pub(super) fn stage_cancels(&mut self, t: &mut Table<S, R, W>) -> Option<Pass> {
        loop {
            let &id = t.cancels.front()?;
            if self.ring.sq_full() {
                return Some(Pass::SqFull);
            }
            t.cancels.pop_front();
            // Dropped silently if the op CQE already arrived (or the slot moved on).
            let index = id.index() as usize;
            if t.flags[index].in_flight && id.is_current(self.storage.slots[index].generation()) {
                self.push_cancel(id);
            }
        }
    }

    /// Pushes an AsyncCancel for `id`'s SQE in flight; the caller checked for room.
    pub(super) fn push_cancel(&mut self, id: RequestId) {
        let sqe = opcode::AsyncCancel::new(id.op_data())
            .build()
            .user_data(id.cancel_data());
        self.ring.push(&sqe);
        Counters::bump(&self.storage.metrics.cancel_sqes);
    }

    /// Takes a fresh request from the submission ring.
    fn admit(&mut self, t: &mut Table<S, R, W>, index: u32) {
        let slot = &self.storage.slots[index as usize];
        let live = slot.admit();
        // Popped from a submission queue: ACTIVE or ORPHANED, the loop's.
        t.take(index);
        let r = owned_request(&mut t.flags, &self.storage.slots, index);
        let (kind, deadline) = (r.kind(), r.deadline);
        if !live && self.orphanable(kind) {
            return self.free_orphan(t, index);
        }
        if kind == OpKind::RecvMessage {
            return self.admit_receiver(t, index, deadline);
        }
        if kind.is_held() {
            return self.admit_timer(t, index, deadline);
        }
        if let Some(deadline) = deadline {
            match self.wheel_target(t, deadline) {
                (_, Target::Expired) => {
                    // Already past: Timeout without I/O and without taking a table entry.
                    owned_request(&mut t.flags, &self.storage.slots, index).outcome =
                        Some(Err(Error::Timeout));
                    self.deliver(t, index);
                    return;
                }
                (deadline_tick, Target::At(tick)) => self.schedule(t, index, deadline_tick, tick),
            }
        }
        t.admit(index);
        self.stage_sqe(t, index, kind);
    }

    /// Puts request `index` in the wheel at `tick`, for its deadline at `deadline_tick`.
    #[inline(never)]
    pub(super) fn schedule(
        &mut self,
        t: &mut Table<S, R, W>,
        index: u32,
        deadline_tick: u64,
        tick: u64,
    ) {
        if tick < deadline_tick && self.checked.config.max_request_timeout.is_some() {
            // Shortened to the cap the user set (without one it is re-armed until due).
            Counters::bump(&self.storage.metrics.capped_deadlines);
        }
        t.wheel.schedule(index, tick);
    }

    /// The tick of `deadline` and where the wheel puts it now (an idle wheel is first aligned
    /// with now: nothing can expire from it, it is empty).
    pub(super) fn wheel_target(
        &mut self,
        t: &mut Table<S, R, W>,
        deadline: Deadline,
    ) -> (u64, Target) {
        if t.wheel.len() == 0 {
            let tick = floor_tick(self.elapsed_ns(Instant::now()), self.checked.tick_ns);
            t.wheel.advance_rearming(tick, |_, _| None);
        }
        let deadline_tick = ceil_tick(deadline.ns_after(self.origin_ns), self.checked.tick_ns);
        (
            deadline_tick,
            t.wheel.target(deadline_tick, self.checked.horizon),
        )
    }

    /// Holds timer `index` (a `sleep`) in the wheel until its end; without one, until its caller
    /// leaves or the loop stops. Not admitted: it takes none of the `RING` entries and no SQE.
    /// An end already past ends it now. An end beyond the horizon is re-armed until due, cap or
    /// not (`expire`): a timer never fires early.
    /// A stream's `next` is held the same way, with its deadline, and then linked to its
    /// stream (`link_next`).
    pub(super) fn admit_timer(
        &mut self,
        t: &mut Table<S, R, W>,
        index: u32,
        deadline: Option<Deadline>,
    ) {
        t.hold_timer(index);
        // A result already there wins over a deadline already past.
        let kind = owned_request(&mut t.flags, &self.storage.slots, index).kind();
        if kind == OpKind::Next && self.link_next(t, index) {
            return;
        }
        let Some(deadline) = deadline else {
            return;
        };
        match self.wheel_target(t, deadline).1 {
            Target::Expired => self.fire_timer(t, index),
            Target::At(tick) => t.wheel.schedule(index, tick),
        }
    }

    /// Timer `index` reached its end: `Ok` to a sleep's caller, `Timeout` to a stream's `next`
    /// or a waiting `recv_message` (or its slot freed if its caller left).
    fn fire_timer(&mut self, t: &mut Table<S, R, W>, index: u32) {
        let outcome = match owned_request(&mut t.flags, &self.storage.slots, index).kind() {
            OpKind::Next | OpKind::RecvMessage => Err(Error::Timeout),
            _ => Ok(0),
        };
        self.end_timer(t, index, outcome);
    }

    /// Ends timer `index` with `outcome`, delivered (or its slot freed if its caller left:
    /// false).
    pub(super) fn end_timer(
        &mut self,
        t: &mut Table<S, R, W>,
        index: u32,
        outcome: Result<usize, Error>,
    ) -> bool {
        self.unlink_next(t, index);
        t.end_timer(index);
        owned_request(&mut t.flags, &self.storage.slots, index).outcome = Some(outcome);
        self.deliver(t, index)
    }

    /// Retires the timers whose callers left (noted by their `Op`'s drop) before their end.
    fn retire_dropped_timers(&mut self, t: &mut Table<S, R, W>) {
        let fired = &mut t.fired;
        // Cannot fail: one entry per slot at most (the list is empty between calls).
        self.storage.take_dropped_timers(|index| {
            let _ = fired.push(index);
        });
        for i in 0..t.fired.len() {
            let index = t.fired[i];
            // A bit may be stale: the timer already ended and its slot moved on.
            if t.flags[index as usize].timer && self.storage.slots[index as usize].is_orphaned() {
                self.unlink_next(t, index);
                t.end_timer(index);
                self.free_orphan(t, index);
            }
        }
        t.fired.clear();
    }

    /// Produces the next SQE of an admitted request, or ends it. The SQ has room.
    fn stage_one(&mut self, t: &mut Table<S, R, W>, index: u32) {
        debug_assert!(
            !t.flags[index as usize].held,
            "a held request is never ready-queued"
        );
        let slots = &self.storage.slots;
        let slot = &slots[index as usize];
        if t.flags[index as usize].cancel_requested {
            // Its deadline fired while it waited for this SQE: no I/O, Timeout.
            owned_request(&mut t.flags, slots, index).outcome = Some(Err(Error::Timeout));
            self.finish(t, index);
            return;
        }
        let kind = owned_request(&mut t.flags, slots, index).kind();
        if self.orphanable(kind) && slot.is_orphaned() {
            self.retire(t, index);
            return;
        }
        self.stage_sqe(t, index, kind);
    }

    /// Builds and pushes the next SQE of admitted request `index` (of `kind`), or ends it if it
    /// gets none. The SQE has room. `admit` calls it directly: a request it has just found live
    /// and admitted needs none of `stage_one`'s checks (no deadline can have fired yet; a caller
    /// that leaves from here on leaves an admitted request, as any later one).
    fn stage_sqe(&mut self, t: &mut Table<S, R, W>, index: u32, kind: OpKind) {
        let slots = &self.storage.slots;
        let id = RequestId::new(index, slots[index as usize].generation()).op_data();
        let key = self.storage.fault_key();
        let limit = fault::sqe_limit(key, kind);
        let mut headers = Headers::new(&mut t.msgs, t.free_msgs.as_mut_view());
        let r = owned_request(&mut t.flags, slots, index);
        // Matched by reference: the SQE is copied once, from where `sqe` built it into the ring.
        let staged = r.sqe(id, limit, &t.registry, &mut headers);
        let (entry, fixed_buffer) = match &staged.sqe {
            Ok(built) => built,
            Err(e) => {
                let e = *e;
                // No SQE (every message header parked with the kernel by abandoned requests).
                r.outcome = Some(Err(e));
                self.finish(t, index);
                return;
            }
        };
        self.push_entry(kind, entry);
        self.mark_pushed(t, index, kind, staged.fixed_file, *fixed_buffer);
    }

    /// Stages fresh request `index`, which the loop thread has just written into its slot and
    /// admitted with plain stores (`Op::submit_here`), from inside the poll of `block_on`'s
    /// future (the window, `stage_in_window`): its SQE goes straight into the SQ and is
    /// submitted with the rest of the pass. `O` is the operation in the slot, so the SQE is
    /// built without matching on the kind, and a fresh request on its caller's thread needs none
    /// of `admit`'s and `stage_one`'s checks (not orphaned, no deadline, not cancelled). False,
    /// touching nothing, when staging it now would change the order of the pass (the table or
    /// the SQ full, retries, cancels or the loop thread's earlier requests waiting), or it gets
    /// no SQE: the caller then queues it as before. The caller passes only requests without a
    /// deadline (the wheel's scheduling is `admit`'s).
    #[inline]
    pub(crate) fn stage_fresh<O: crate::op::Operation>(
        &mut self,
        t: &mut Table<S, R, W>,
        index: u32,
    ) -> bool {
        // A plain operation's SQE is built without side effects, so a full SQ is found by the
        // push itself (one view of the SQ instead of two). Injected faults are taken when the
        // SQE is built: with them, the room is checked first, so none is used up in vain.
        let room_first = cfg!(feature = "fault-injection") || !O::KIND.is_plain();
        if !self.may_stage_fresh(t) || (room_first && self.ring.sq_full()) {
            return false;
        }
        t.take(index);
        let slots = &self.storage.slots;
        let r = owned_request(&mut t.flags, slots, index);
        debug_assert!(r.deadline.is_none(), "admit schedules deadlines");
        let id = RequestId::new(index, slots[index as usize].generation()).op_data();
        let limit = fault::sqe_limit(self.storage.fault_key(), O::KIND);
        let mut headers = Headers::new(&mut t.msgs, t.free_msgs.as_mut_view());
        // SAFETY: `Start::fill` wrote an `O` into this slot just now.
        let staged = unsafe { r.sqe_of::<O>(id, limit, &t.registry, &mut headers) };
        let Ok((entry, fixed_buffer)) = &staged.sqe else {
            // No SQE (no message header free): the ordinary path ends it.
            t.release(index);
            return false;
        };
        if !self.push_entry(O::KIND, entry) {
            // The SQ is full (a plain operation, `room_first`): the ordinary path stages it.
            t.release(index);
            return false;
        }
        t.admit(index);
        self.mark_pushed(t, index, O::KIND, staged.fixed_file, *fixed_buffer);
        true
    }

    /// Whether a fresh request from the window may be staged now without changing the order of
    /// the pass: room in the table, and no retry, cancel or earlier private request waiting.
    #[inline]
    pub(super) fn may_stage_fresh(&self, t: &Table<S, R, W>) -> bool {
        t.admitted() < R
            && t.ready.is_empty()
            && t.cancels.is_empty()
            && !self.storage.local.has_ready()
    }

    /// Pushes `entry` (an injected result's stand-in NOP instead); false, changing nothing but a
    /// fault taken, if the SQ is full.
    #[inline]
    pub(super) fn push_entry(&mut self, kind: OpKind, entry: &squeue::Entry) -> bool {
        let key = self.storage.fault_key();
        match fault::sqe_result(key, kind) {
            None => self.ring.try_push(entry),
            Some(result) => {
                let id = entry.get_user_data();
                let pushed = self
                    .ring
                    .try_push(&opcode::Nop::new().build().user_data(id));
                fault::override_result(key, id, result);
                pushed
            }
        }
    }

    /// Request `index` (of `kind`) has its SQE in the SQ: in flight, counted (`fixed_file`,
    /// `fixed_buffer`: the registered resources it names).
    #[inline]
    pub(super) fn mark_pushed(
        &mut self,
        t: &mut Table<S, R, W>,
        index: u32,
        kind: OpKind,
        fixed_file: bool,
        fixed_buffer: bool,
    ) {
        let flags = &mut t.flags[index as usize];
        flags.in_flight = true;
        flags.plain = kind.is_plain();
        self.count_pushed(fixed_file, fixed_buffer);
    }

    /// Counts an SQE pushed for a request, and the registered resources it names.
    #[inline]
    pub(super) fn count_pushed(&self, fixed_file: bool, fixed_buffer: bool) {
        let metrics = &self.storage.metrics;
        Counters::bump(&metrics.submitted);
        if fixed_file {
            Counters::bump(&metrics.fixed_files);
        }
        if fixed_buffer {
            Counters::bump(&metrics.fixed_buffers);
        }
    }

    /// Takes an admitted request out of the table and the admitted count.
    pub(super) fn end_entry(&mut self, t: &mut Table<S, R, W>, index: u32) {
        // Only a request with a deadline was scheduled (`admit`): the others skip the wheel
        // (and its memory).
        let scheduled = !t.flags[index as usize].is_owned()
            || owned_request(&mut t.flags, &self.storage.slots, index)
                .deadline
                .is_some();
        t.end(index, scheduled);
        // A stream waiting for buffers leaves the list (which then never outgrows `RING`).
        if !t.registry.starved.is_empty() {
            t.registry.starved.retain(|&i| i != index);
        }
        // The gauge is current before the caller can see the result.
        self.storage.metrics.set_pending(t.admitted());
    }

    /// Ends an admitted request whose outcome is stored.
    pub(super) fn finish(&mut self, t: &mut Table<S, R, W>, index: u32) {
        self.end_entry(t, index);
        self.deliver(t, index);
    }

    /// Hands the stored outcome to the caller, or frees the slot if the caller left (false).
    #[inline(always)]
    pub(super) fn deliver(&mut self, t: &mut Table<S, R, W>, index: u32) -> bool {
        let metrics = &self.storage.metrics;
        let slot = &self.storage.slots[index as usize];
        Counters::bump(&metrics.completed);
        match owned_request(&mut t.flags, &self.storage.slots, index).outcome {
            Some(Err(Error::Timeout)) => Counters::bump(&metrics.timed_out),
            Some(Err(Error::Abandoned)) => Counters::bump(&metrics.abandoned),
            _ => {}
        }
        // Published below: the loop lets go of it first.
        t.release(index);
        match slot.finish() {
            Finish::Delivered(caller) => {
                if !caller.local {
                    self.batch.delivered();
                }
                self.storage.wake_caller(index, caller);
                true
            }
            Finish::Orphaned => {
                Counters::bump(&metrics.orphaned);
                self.storage.free_slot(index);
                false
            }
        }
    }

    /// Whether an orphan of `kind` is retired early under this loop's config.
    #[inline]
    fn orphanable(&self, kind: OpKind) -> bool {
        kind.dropped()
            .orphanable(self.checked.config.cancel_on_drop)
    }

    /// Retires an admitted orphan without an outcome (not in flight).
    pub(super) fn retire(&mut self, t: &mut Table<S, R, W>, index: u32) {
        self.end_entry(t, index);
        self.free_orphan(t, index);
    }

    /// Frees the slot of orphan `index`, which the loop owns and no longer counts anywhere.
    fn free_orphan(&mut self, t: &mut Table<S, R, W>, index: u32) {
        Counters::bump(&self.storage.metrics.completed);
        Counters::bump(&self.storage.metrics.orphaned);
        t.release(index);
        self.storage.free_slot(index);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    //! The phases run by hand on the test thread (no loop thread): what one staging pass admits
    //! and reports, what the wheel turns into cancels, what a CQE does to the table.

    use super::*;
    use crate::{Config, Handle, IoBufMut};
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::time::Duration;

    type Loop = EventLoop<8, 2, 64>;

    fn setup() -> (Handle<8, 2, 64>, Loop) {
        let config = Config {
            idle_spin: Duration::ZERO,
            timeout_wheel_tick: Duration::from_millis(1),
            ..Config::default()
        };
        crate::new::<8, 2, 64>(config).expect("loop")
    }

    /// The table, borrowed as `run` does.
    fn table(el: &mut Loop) -> &'static mut Table<8, 2, 64> {
        // SAFETY: the test thread plays the loop thread; nothing else uses this table.
        unsafe { el.table.as_mut() }
    }

    #[test]
    fn stage_stops_at_a_full_sq_then_at_ring_admitted_requests() {
        // RING = 2 SQ entries: the wake poll and one nop fill the SQ (SqFull, the rest stays
        // queued); after a submit the next pass admits one more and reports the table full.
        let (handle, mut el) = setup();
        let t = table(&mut el);
        let ops: Vec<_> = (0..3).map(|_| handle.nop().try_submit().unwrap()).collect();
        assert_eq!(el.stage(t, Mode::Serve), Pass::SqFull);
        assert_eq!((t.admitted(), el.storage.queue.len()), (1, 2));
        el.ring.enter(0, None).unwrap();
        assert_eq!(el.stage(t, Mode::Serve), Pass::WaiterFull);
        assert_eq!((t.admitted(), el.storage.queue.len()), (2, 1));
        el.ring.enter(1, None).unwrap();
        el.reap(t);
        assert_eq!(t.admitted(), 0, "both nops completed");
        assert_eq!(el.stage(t, Mode::Serve), Pass::Drained);
        el.ring.enter(1, None).unwrap();
        el.reap(t);
        for op in ops {
            assert_eq!(op.wait(), Ok(()));
        }
    }

    #[test]
    fn stage_fresh_of_a_plain_request_finds_a_full_sq_by_its_push_and_changes_nothing() {
        // RING = 2 SQ entries, both taken by stand-in NOPs: the fresh nop is not staged, the
        // loop lets go of it (not admitted, not owned), and it is staged once the SQ drained.
        let (handle, mut el) = setup();
        let t = table(&mut el);
        let filler = opcode::Nop::new().build().user_data(u64::MAX - 1);
        el.ring.push(&filler);
        el.ring.push(&filler);
        assert!(el.ring.sq_full());
        let op = handle.nop().try_submit().unwrap();
        let index = el.storage.queue.pop().expect("queued");
        assert!(el.storage.slots[index as usize].admit());
        assert!(!el.stage_fresh::<crate::op::Nop>(t, index));
        assert_eq!(
            t.flags[index as usize],
            super::super::table::SlotFlags::NONE
        );
        assert_eq!((t.admitted(), el.ring.sq_len()), (0, 2));
        el.ring.enter(0, None).unwrap();
        assert!(el.stage_fresh::<crate::op::Nop>(t, index));
        assert!(t.flags[index as usize].in_flight && t.flags[index as usize].plain);
        assert_eq!(t.admitted(), 1);
        el.ring.enter(1, None).unwrap();
        el.reap(t);
        assert_eq!(t.admitted(), 0);
        assert_eq!(op.wait(), Ok(()));
    }

    #[test]
    fn only_a_request_with_a_deadline_is_in_the_wheel_and_it_leaves_it_when_it_ends() {
        let (handle, mut el) = setup();
        let t = table(&mut el);
        let timed = handle
            .nop()
            .timeout(Duration::from_secs(30))
            .try_submit()
            .unwrap();
        let plain = handle.nop().try_submit().unwrap();
        // RING = 2: the wake poll and the first nop fill the SQ; submitted, the second goes in.
        assert_eq!(el.stage(t, Mode::Serve), Pass::SqFull);
        el.ring.enter(0, None).unwrap();
        el.stage(t, Mode::Serve);
        assert_eq!((t.admitted(), t.wheel.len()), (2, 1));
        for _ in 0..100 {
            el.ring.enter(1, None).unwrap();
            el.reap(t);
            if t.admitted() == 0 {
                break;
            }
        }
        assert_eq!((t.admitted(), t.wheel.len()), (0, 0));
        assert_eq!(timed.wait(), Ok(()));
        assert_eq!(plain.wait(), Ok(()));
    }

    #[test]
    fn an_expired_request_in_flight_gets_exactly_one_cancel_and_ends_timeout() {
        // The wheel turns a passed deadline into one queued AsyncCancel (not two on a second
        // pass); staging pushes it; the kernel's -ECANCELED then ends the request with Timeout.
        let (handle, mut el) = setup();
        let t = table(&mut el);
        let (_peer, mine) = UnixStream::pair().unwrap();
        let deadline = Instant::now() + Duration::from_millis(5);
        let op = handle
            .recv(Arc::new(mine), IoBufMut::with_capacity(4))
            .limit(4)
            .deadline(deadline)
            .try_submit()
            .unwrap();
        el.stage(t, Mode::Serve);
        el.ring.enter(0, None).unwrap(); // the recv is in the kernel; the SQ has room again
        let index = (0..8)
            .find(|&i| t.flags[i].in_flight)
            .expect("recv in flight");
        std::thread::sleep(Duration::from_millis(10));
        el.expire(t);
        el.expire(t);
        assert_eq!(t.cancels.len(), 1);
        assert!(t.flags[index].cancel_requested);
        el.stage(t, Mode::Serve);
        assert_eq!(el.storage.metrics.snapshot().cancel_sqes, 1);
        el.ring.enter(1, None).unwrap();
        while t.admitted() != 0 {
            el.ring.enter(1, Some(Duration::from_millis(10))).unwrap();
            el.reap(t);
        }
        assert_eq!(op.wait().unwrap_err().error, Error::Timeout);
    }

    #[test]
    fn an_expired_deadline_at_admission_times_out_without_an_entry_or_io() {
        let (handle, mut el) = setup();
        let t = table(&mut el);
        let past = Instant::now();
        std::thread::sleep(Duration::from_millis(3));
        let op = handle.nop().deadline(past).try_submit().unwrap();
        el.stage(t, Mode::Serve);
        assert_eq!(t.admitted(), 0);
        assert_eq!(el.storage.metrics.snapshot().submitted, 0, "no SQE");
        assert_eq!(op.wait(), Err(Error::Timeout));
    }

    #[test]
    fn a_stale_or_foreign_cqe_changes_nothing() {
        // CQEs for requests that are gone (another generation), for slots out of range and
        // cancel CQEs are ignored: no entry, no count, no panic.
        let (handle, mut el) = setup();
        let t = table(&mut el);
        let op = handle.nop().try_submit().unwrap();
        el.stage(t, Mode::Serve);
        let index = (0..8u32).find(|&i| t.flags[i as usize].in_flight).unwrap();
        let stale = RequestId::new(index, el.storage.slots[index as usize].generation() + 1);
        el.on_cqe(t, stale.op_data(), 0, 0);
        el.on_cqe(t, RequestId::new(1000, 0).op_data(), 0, 0);
        el.on_cqe(t, stale.cancel_data(), -libc::ENOENT, 0);
        assert_eq!(t.admitted(), 1);
        assert!(t.flags[index as usize].in_flight);
        el.ring.enter(1, None).unwrap();
        el.reap(t);
        assert_eq!(t.admitted(), 0);
        assert_eq!(op.wait(), Ok(()));
    }
}
