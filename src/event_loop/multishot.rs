//! The loop's side of multishot streams (`op/multishot.rs`): reading a stream's CQEs, answering
//! its `next` requests, pausing and re-arming it, and the provided-buffer rings' bookkeeping.
//!
//! A stream's request is admitted like any other (it holds one of the `RING` entries while the
//! loop has it). A CQE with `IORING_CQE_F_MORE` leaves its SQE in the kernel; one without ends
//! the SQE, and the loop then re-arms it (the kernel stopped it), pauses it (no room for another
//! accepted connection; no buffer in its ring), or hands it back to its owner (it ended: end of
//! file, an error, the shutdown). A dropped stream is always cancelled and its slot freed when
//! the kernel lets go of it; what it still queues is released (connections closed, buffers
//! given back).
//!
//! A `next` is held like a timer (no SQE; its deadline in the wheel) and named in the stream's
//! `waiter` until a result arrives. Every path that ends it unlinks it first (`unlink_next`).

use io_uring::cqueue;

use super::id::RequestId;
use super::table::{owned_request, Table};
use super::EventLoop;
use crate::error::Error;
use crate::metrics::Counters;
use crate::op::multishot::{Got, Stream, NO_WAITER};
use crate::op::{OpKind, Work};

/// The stream of the loop's request `index` (a multishot kind).
fn stream_of<'a, const S: usize, const R: usize, const W: usize>(
    t: &'a mut Table<S, R, W>,
    slots: &'a [crate::handoff::slot::Slot<super::request::Request>; S],
    index: u32,
) -> &'a mut dyn Stream {
    let r = owned_request(&mut t.flags, slots, index);
    r.work.stream().expect("a stream's request")
}

impl<const S: usize, const R: usize, const W: usize> EventLoop<S, R, W> {
    /// A CQE of stream `index`, whose SQE was in flight.
    pub(super) fn on_stream_cqe(
        &mut self,
        t: &mut Table<S, R, W>,
        index: u32,
        result: i32,
        flags: u32,
    ) {
        let more = cqueue::more(flags);
        let slot = &self.storage.slots[index as usize];
        let entry = &mut t.flags[index as usize];
        entry.in_flight = more;
        let (orphaned, abandoning) = (slot.is_orphaned(), entry.abandoning);
        let metrics = &self.storage.metrics;
        let s = stream_of(t, &self.storage.slots, index);
        let got = s.on_cqe(result, flags);
        match got {
            Got::Refused => Counters::bump(&metrics.stream_refused),
            Got::Dry => Counters::bump(&metrics.buf_ring_dry),
            Got::End(e) => {
                s.multi().end.get_or_insert(e);
            }
            Got::Item | Got::Cancelled => {}
        }
        if more {
            // Full, or ended while the kernel goes on (a surprise): stopped with a cancel.
            let stop = !s.has_room() || s.multi().end.is_some();
            if stop && !s.multi().pausing && !orphaned && !abandoning {
                self.pause(t, index);
            }
            return self.feed(t, index);
        }
        // The kernel let go of the request.
        if orphaned {
            return self.retire(t, index);
        }
        // Only a pause cancels a stream its owner holds: that cancel is over.
        t.flags[index as usize].drop_cancelled = false;
        let r = owned_request(&mut t.flags, &self.storage.slots, index);
        let s = r.work.stream().expect("a stream's request");
        if abandoning {
            s.multi().end.get_or_insert(Error::Abandoned);
        }
        if let Some(end) = s.multi().end {
            r.outcome = Some(Err(end));
            self.feed(t, index);
            return self.finish(t, index);
        }
        s.multi().pausing = false;
        let ring = s.ring();
        match got {
            // The kernel found the ring empty, but buffers came back since (or their CQEs are
            // still queued): tried again at once; it ends up waiting once the count is exact.
            Got::Dry if ring.is_some_and(|r| r.available() > 0) => self.rearm(t, index),
            Got::Dry => {
                s.multi().paused = true;
                self.starve(t, index);
            }
            _ if !s.has_room() => s.multi().paused = true,
            _ => self.rearm(t, index),
        }
        self.feed(t, index);
    }

    /// Stops stream `index` (in flight: its queue full, or ended) with our own AsyncCancel; a
    /// full one is re-armed once `next` makes room.
    fn pause(&mut self, t: &mut Table<S, R, W>, index: u32) {
        let flags = &mut t.flags[index as usize];
        if flags.drop_cancelled {
            return;
        }
        // Marked as cancelled so that no second AsyncCancel is queued for it (a drop's).
        flags.drop_cancelled = true;
        stream_of(t, &self.storage.slots, index).multi().pausing = true;
        let generation = self.storage.slots[index as usize].generation();
        // Cannot fail: at most one entry per admitted request, and admitted <= RING.
        let _ = t.cancels.push_back(RequestId::new(index, generation));
    }

    /// Re-arms stream `index` (admitted, no SQE in flight): staged again from the ready queue.
    fn rearm(&mut self, t: &mut Table<S, R, W>, index: u32) {
        t.flags[index as usize].drop_cancelled = false;
        stream_of(t, &self.storage.slots, index).multi().paused = false;
        // Cannot fail: at most one entry per admitted request, and admitted <= RING.
        let _ = t.ready.push_back(index);
        Counters::bump(&self.storage.metrics.stream_rearms);
    }

    /// Stream `index` waits for its ring to have buffers: noted, and the ring told so that a
    /// buffer given back wakes the loop.
    fn starve(&mut self, t: &mut Table<S, R, W>, index: u32) {
        let ring = stream_of(t, &self.storage.slots, index).ring();
        if let Some(ring) = ring {
            ring.set_starving(true);
        }
        let starved = &mut t.registry.starved;
        if !starved.contains(&index) {
            starved.push(index);
        }
    }

    /// Gives the waiting `next` of stream `index` its next result, if there is one (or the
    /// stream's end).
    fn feed(&mut self, t: &mut Table<S, R, W>, index: u32) {
        let s = stream_of(t, &self.storage.slots, index);
        let waiter = s.multi().waiter;
        if waiter == NO_WAITER {
            return;
        }
        let outcome = match s.pop() {
            Some(item) => item,
            None => match s.multi().end {
                Some(e) => Err(e),
                None => return,
            },
        };
        s.multi().waiter = NO_WAITER;
        self.resume_if_room(t, index);
        self.end_timer(t, waiter, outcome);
    }

    /// A paused stream `index` that is re-armed per result (accept; receive on an incremental
    /// ring) and has room again is re-armed.
    fn resume_if_room(&mut self, t: &mut Table<S, R, W>, index: u32) {
        let flags = t.flags[index as usize];
        let s = stream_of(t, &self.storage.slots, index);
        let multi = *s.multi();
        if multi.paused
            && multi.end.is_none()
            && s.has_room()
            && s.rearms_on_room()
            && !flags.in_flight
            && !flags.abandoning
        {
            self.rearm(t, index);
        }
    }

    /// The stream `next` request `index` (held, not fired) names, if the loop holds it: its
    /// slot index.
    fn stream_of_next(&mut self, t: &mut Table<S, R, W>, index: u32) -> Option<u32> {
        let r = owned_request(&mut t.flags, &self.storage.slots, index);
        let Work::Next(next) = &r.work else {
            return None;
        };
        let id = RequestId::from_data(next.stream);
        let stream = id.index();
        let flags = t.flags.get(stream as usize)?;
        let current = id.is_current(self.storage.slots[stream as usize].generation());
        if !flags.admitted || !current {
            return None;
        }
        owned_request(&mut t.flags, &self.storage.slots, stream)
            .kind()
            .is_stream()
            .then_some(stream)
    }

    /// A fresh `next` request `index`, now held: answered at once with the stream's oldest
    /// result or its end (true), else named as the stream's waiter (false; its deadline is
    /// scheduled next). A `next` whose stream the loop does not hold (handed back, or not taken
    /// yet) is answered "gone": its stream then looks at itself.
    pub(super) fn link_next(&mut self, t: &mut Table<S, R, W>, index: u32) -> bool {
        let Some(stream) = self.stream_of_next(t, index) else {
            let r = owned_request(&mut t.flags, &self.storage.slots, index);
            if let Work::Next(next) = &mut r.work {
                next.gone = true;
            }
            self.end_timer(t, index, Ok(0));
            return true;
        };
        let s = stream_of(t, &self.storage.slots, stream);
        let outcome = match (s.pop(), s.multi().end, s.multi().waiter) {
            (Some(item), ..) => item,
            (None, Some(e), _) => Err(e),
            // Two at once: only a `next` leaked with `mem::forget` can still be waiting.
            (None, None, waiter) if waiter != NO_WAITER => Err(Error::InUse),
            (None, None, _) => {
                s.multi().waiter = index;
                return false;
            }
        };
        self.resume_if_room(t, stream);
        self.end_timer(t, index, outcome);
        true
    }

    /// The oldest result queued in stream `stream` (`RequestId::op_data`), if the loop holds
    /// it and no `next` of it waits (`stream_item_in_window`).
    pub(super) fn take_queued(
        &mut self,
        t: &mut Table<S, R, W>,
        stream: u64,
    ) -> Option<Result<usize, Error>> {
        let id = RequestId::from_data(stream);
        let index = id.index();
        let flags = t.flags.get(index as usize)?;
        if !flags.admitted || !id.is_current(self.storage.slots[index as usize].generation()) {
            return None;
        }
        let r = owned_request(&mut t.flags, &self.storage.slots, index);
        let s = r.work.stream()?;
        if s.multi().waiter != NO_WAITER {
            return None;
        }
        let item = s.pop()?;
        self.resume_if_room(t, index);
        Some(item)
    }

    /// Held request `index` is ending: if it is a stream's waiting `next`, the stream forgets
    /// it.
    pub(super) fn unlink_next(&mut self, t: &mut Table<S, R, W>, index: u32) {
        let kind = owned_request(&mut t.flags, &self.storage.slots, index).kind();
        if kind != OpKind::Next {
            return;
        }
        if let Some(stream) = self.stream_of_next(t, index) {
            let multi = stream_of(t, &self.storage.slots, stream).multi();
            if multi.waiter == index {
                multi.waiter = NO_WAITER;
            }
        }
    }

    /// Gives the buffers returned since the last pass back to the kernel, and re-arms the
    /// streams that waited for buffers of a ring that got some.
    pub(super) fn replenish(&mut self, t: &mut Table<S, R, W>) {
        let registry = &mut t.registry;
        let mut refilled = 0u64;
        for (group, ring) in registry.rings.iter().enumerate() {
            if ring.replenish() {
                refilled |= 1 << (group % 64);
            }
        }
        if refilled == 0 || registry.starved.is_empty() {
            return;
        }
        // Every stream starved on a refilled ring is re-armed (it notes the ring again if it
        // starves again), so those rings have no starved stream left.
        for (group, ring) in t.registry.rings.iter().enumerate() {
            if refilled & (1 << (group % 64)) != 0 {
                ring.set_starving(false);
            }
        }
        let mut i = 0;
        while i < t.registry.starved.len() {
            let index = t.registry.starved[i];
            match self.starved_group(t, index) {
                Some(group) if refilled & (1 << (group % 64)) == 0 => i += 1,
                Some(_) => {
                    t.registry.starved.swap_remove(i);
                    self.rearm(t, index);
                }
                // Stale: the stream ended or left since.
                None => {
                    t.registry.starved.swap_remove(i);
                }
            }
        }
    }

    /// The ring group of stream `index` if it is still a receive stream paused for buffers.
    fn starved_group(&mut self, t: &mut Table<S, R, W>, index: u32) -> Option<u16> {
        let flags = t.flags[index as usize];
        if !flags.admitted || flags.in_flight {
            return None;
        }
        let r = owned_request(&mut t.flags, &self.storage.slots, index);
        match &mut r.work {
            Work::RecvMulti(op) if op.multi.paused => Some(op.group()),
            _ => None,
        }
    }
}
