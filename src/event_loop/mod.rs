//! [`EventLoop`]: the one thread that owns the ring.
//!
//! One iteration (Part B 5.1 of the semantics, with the fixes of Part A):
//!
//! 1. **reap**: drain every CQE. Wake CQEs are acknowledged; op CQEs advance their request
//!    (`op.rs`): finished requests are delivered, unfinished ones go to the ready queue (never
//!    restaged inside the same drain); cancel CQEs never decide anything.
//! 2. **expire**: if deadlines are pending, advance the wheel to now; an expired request in flight
//!    gets an AsyncCancel queued, one parked in the ready queue times out when next staged.
//! 3. **stage**: wake-poll rearm, pending cancels, the ready queue, then fresh requests from the
//!    submission ring while fewer than `RING` are admitted and the SQ has room.
//! 4. **sleep or go on**: a full SQ is submitted without waiting; with the table full the loop
//!    waits for a completion; otherwise it spins for `idle_spin`, arms the wake intent, rechecks
//!    the ring and sleeps in `io_uring_enter` bounded by the next deadline.
//!
//! The loop starts its drain as soon as no handle is left, whatever is still queued and whatever
//! the capacity state (checked in every pass after a wake CQE, which the last sender's exit
//! always causes, and before every sleep). The drain follows the model's: in-flight work
//! finishes, deadlines keep firing, requests still queued are admitted as table entries free up,
//! and `shutdown_timeout` is charged for waiting time only. When the budget runs out, what is
//! still in the kernel is cancelled; what the kernel does not release at once is abandoned: its
//! caller gets `Error::Abandoned` and its buffer stays parked in the slot. Requests never
//! admitted are answered `Error::Closed`.
//!
//! If the loop thread unwinds (a bug, or a fault injected in a test), `Drop` runs the same
//! abandonment, so every caller is woken and no buffer the kernel may write is freed.

pub(crate) mod request;
pub(crate) mod ring;
pub(crate) mod wheel;

use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::config::Checked;
use crate::error::Error;
use crate::event_loop::wheel::{ceil_tick, floor_tick, Target};
use crate::fault;
use crate::handoff::slot::{Finish, ORPHANED};
use crate::handoff::wake::WAKE_TOKEN;
use crate::metrics::Counters;
use crate::storage::{LoopState, SlotFlags, StorageRef};
use ring::{wake_poll_sqe, EventFd};

/// Bit 63 of `user_data`: this CQE answers our AsyncCancel.
const CANCEL_TAG: u64 = 1 << 63;
/// Generations in `user_data` use 31 bits (bits 32 to 62).
const GENERATION_MASK: u32 = 0x7fff_ffff;
/// CQEs copied out of the ring per batch.
const BATCH: usize = 64;
/// Abandonment: the longest single wait for the kernel to release cancelled requests, and the
/// most waits (so an abandonment adds at most a few milliseconds to a shutdown).
const COLLECT_WAIT: Duration = Duration::from_millis(1);
const COLLECT_ROUNDS: usize = 8;

/// What a staging pass is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Serving handles: rearm the wake poll, and report when no sender is left.
    Serve,
    /// Draining after the last handle: no wake poll, no sender check.
    Drain,
}

/// How a staging pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// No handle left: start the drain (requests still queued are admitted by it).
    Disconnected,
    /// The SQ filled up with work left to stage: submit and stage again.
    SqFull,
    /// `RING` requests are admitted: nothing new can be admitted until one completes.
    WaiterFull,
    /// Everything available was staged.
    Drained,
}

/// The event loop. Create it with [`new`](crate::new) or [`with_storage`](crate::with_storage) and
/// call [`run`](EventLoop::run) on the thread that should own the ring.
pub struct EventLoop<const SLOTS: usize, const RING: usize, const WHEEL: usize> {
    storage: StorageRef<SLOTS, RING, WHEEL>,
    /// Loop-private state inside the storage; ours alone while the claim lasts.
    state: NonNull<LoopState<SLOTS, RING, WHEEL>>,
    ring: IoUring,
    eventfd: EventFd,
    checked: Checked,
    /// Tick 0 of the wheel.
    origin: Instant,
    /// Requests counted in the table: in flight, ready-queued or cancelling (<= RING).
    admitted: usize,
    /// The wake poll must be (re)installed at the start of the next staging pass.
    rearm: bool,
    /// Read the sender count in the next staging pass. Set by every wake CQE (the last sender's
    /// exit always rings the eventfd) and kept until a pass sees a live sender, so the loop does
    /// not pull the life word's cache line away from the submitters on every pass.
    check_senders: bool,
    /// `close` ran: the claim is given back.
    closed: bool,
    /// Inside `run`: if the loop is dropped in this state, it is unwinding and must abandon.
    running: bool,
}

// SAFETY: `state` points into the storage, which the loop keeps alive through `storage`; the
// claim makes this loop its only user, whichever thread it runs on.
unsafe impl<const S: usize, const R: usize, const W: usize> Send for EventLoop<S, R, W> {}

impl<const S: usize, const R: usize, const W: usize> EventLoop<S, R, W> {
    /// Builds the loop on a claimed storage; on error the claim is given back.
    pub(crate) fn new(
        storage: StorageRef<S, R, W>,
        eventfd: EventFd,
        checked: Checked,
    ) -> Result<Self, Error> {
        let ring = match build_ring(&checked, R as u32) {
            Ok(ring) => ring,
            Err(e) => {
                storage.close_loop(|_| {});
                storage.drop_handle(storage.epoch());
                return Err(e);
            }
        };
        let spin = checked.config.idle_spin.as_nanos().min(u64::MAX as u128) as u64;
        storage
            .wait_spin_ns
            .store(spin, std::sync::atomic::Ordering::Relaxed);
        Ok(EventLoop {
            state: storage.loop_state(),
            storage,
            ring,
            eventfd,
            checked,
            origin: Instant::now(),
            admitted: 0,
            rearm: true,
            check_senders: true,
            closed: false,
            running: false,
        })
    }

    /// A reader of this loop's counters that, unlike a `Handle`, does not keep the loop alive:
    /// take it before `run` to read the final counts (drain, abandonment) after `run` returns.
    pub fn metrics_reader(&self) -> MetricsReader<S, R, W> {
        MetricsReader {
            storage: self.storage.clone(),
        }
    }

    /// Runs the loop on the calling thread until every `Handle` is dropped and the drain has
    /// finished. Returns `Err` only if the kernel failed the loop itself (callers are then woken
    /// with `Error::Abandoned` or `Error::Closed`; no memory the kernel may use is freed).
    pub fn run(mut self) -> Result<(), Error> {
        self.running = true;
        let result = self
            .prepare()
            .and_then(|()| self.main())
            .and_then(|()| self.drain());
        if result.is_err() {
            self.abandon_all();
        }
        self.running = false;
        self.close();
        result
    }

    /// Thread setup: enable a single-issuer ring on this thread, pin it.
    fn prepare(&mut self) -> Result<(), Error> {
        if self.checked.config.single_issuer {
            self.ring
                .submitter()
                .register_enable_rings()
                .map_err(os_error)?;
        }
        if let Some(cpu) = self.checked.config.cpu {
            pin_to_cpu(cpu)?;
        }
        Ok(())
    }

    /// Iterations until disconnect.
    fn main(&mut self) -> Result<(), Error> {
        loop {
            self.reap();
            self.expire();
            let pass = self.stage(Mode::Serve);
            self.storage.metrics.set_pending(self.admitted);
            match pass {
                Pass::Disconnected => return Ok(()),
                Pass::SqFull => self.enter(0, None)?,
                Pass::WaiterFull => self.enter(1, self.next_deadline())?,
                Pass::Drained => self.idle()?,
            }
        }
    }

    /// Nothing to stage: spin for a while, then arm, recheck and sleep.
    fn idle(&mut self) -> Result<(), Error> {
        let spin = self.checked.config.idle_spin;
        if !spin.is_zero() {
            if !self.ring.submission().is_empty() {
                self.enter(0, None)?;
            }
            let start = Instant::now();
            let mut step = 0;
            while start.elapsed() < spin {
                // Not `has_work`: the last sender's exit rings the eventfd, whose poll (armed by
                // now) posts a CQE, so the life word need not be read (and its cache line taken
                // from the submitters) on every spin.
                if self.storage.queue.has_ready() || !self.ring.completion().is_empty() {
                    return Ok(());
                }
                if self.checked.config.single_issuer && self.ring.submission().taskrun() {
                    // DEFER_TASKRUN posts completions that need task work (sockets, polls, the
                    // wake poll) only inside an enter with GETEVENTS; IORING_SQ_TASKRUN says some
                    // are pending. Run them now instead of spinning out the budget.
                    self.run_task_work()?;
                    continue;
                }
                crate::loom::spin_step(&mut step);
            }
        }
        self.storage.wake.arm();
        if self.has_work() {
            // `has_work` may have seen the last sender gone (with DEFER_TASKRUN its wake CQE is
            // not posted until the next GETEVENTS): have the next pass read the count.
            self.check_senders = true;
            self.storage.wake.disarm();
            return Ok(());
        }
        let slept = self.enter(1, self.next_deadline());
        self.storage.wake.disarm();
        slept
    }

    /// Something the loop should act on without sleeping.
    fn has_work(&mut self) -> bool {
        self.storage.queue.has_ready()
            || self.storage.senders() == 0
            || !self.ring.completion().is_empty()
    }

    /// Drains the CQ.
    fn reap(&mut self) {
        let mut batch = [const { MaybeUninit::<cqueue::Entry>::uninit() }; BATCH];
        loop {
            let entries = self.ring.completion().fill(&mut batch).len();
            for entry in &batch[..entries] {
                // SAFETY: `fill` initialised the first `entries` elements.
                let cqe = unsafe { entry.assume_init_ref() };
                self.on_cqe(cqe.user_data(), cqe.result(), cqe.flags());
            }
            if entries < BATCH {
                return;
            }
        }
    }

    /// One CQE (Part B 2.7).
    fn on_cqe(&mut self, user_data: u64, result: i32, flags: u32) {
        if user_data == WAKE_TOKEN {
            self.check_senders = true;
            Counters::bump(&self.storage.metrics.wakeups);
            self.eventfd.acknowledge();
            if result < 0 || !cqueue::more(flags) {
                self.rearm = true;
            }
            return;
        }
        // A cancel CQE never changes a request; stale ones (slot reused) are ignored alike.
        let index = (user_data & 0xffff_ffff) as usize;
        if user_data & CANCEL_TAG != 0 || index >= S {
            return;
        }
        // SAFETY: loop-private state (field doc).
        let state = unsafe { self.state.as_mut() };
        let flags = &mut state.flags[index];
        let slot = &self.storage.slots[index];
        // Only an admitted request with an SQE in flight can own this CQE (its slot is ACTIVE or
        // ORPHANED, so the loop owns the request and the generation is stable).
        let generation = ((user_data >> 32) as u32) & GENERATION_MASK;
        if !flags.in_flight || slot.generation() & GENERATION_MASK != generation {
            return;
        }
        let key = self.storage.fault_key();
        let result = fault::cqe_result(key, user_data, result);
        // SAFETY: admitted and in flight: the loop owns the request.
        fault::cqe_panic(key, unsafe { slot.with_request(|r| r.kind) });
        flags.in_flight = false;
        let (cancel, abandoning) = (flags.cancel_requested, flags.abandoning);
        // SAFETY: admitted and in flight: the loop owns the request.
        let (finished, kind) = unsafe {
            slot.with_request(|r| {
                let finished = r.complete(result, cancel);
                if abandoning && (!finished || (result == -libc::ECANCELED && !cancel)) {
                    // Stopped by the shutdown: the kernel released the buffer, but the request
                    // did not finish (our cancel, a short transfer, a retry). A terminal answer
                    // of the kernel's (success, an error, end of file) is kept.
                    r.outcome = Some(Err(Error::Abandoned));
                }
                (finished || abandoning, r.kind)
            })
        };
        if finished {
            self.finish(index as u32);
        } else if kind.orphanable() && slot.phase() == ORPHANED {
            self.retire(index as u32);
        } else {
            // Cannot fail: at most one entry per admitted request, and admitted <= RING.
            let _ = state.ready.push_back(index as u32);
            Counters::bump(&self.storage.metrics.requeued);
        }
    }

    /// Advances the wheel (only while deadlines are pending) and requests cancels.
    fn expire(&mut self) {
        // SAFETY: loop-private state (field doc).
        let state = unsafe { self.state.as_mut() };
        if state.wheel.len() == 0 {
            return;
        }
        let now = floor_tick(self.elapsed_ns(Instant::now()), self.checked.tick_ns);
        let LoopState {
            wheel,
            cancels,
            flags,
            ..
        } = state;
        let slots = &self.storage.slots;
        wheel.advance(now, |index, _| {
            let flags = &mut flags[index as usize];
            if !flags.admitted || flags.cancel_requested {
                return;
            }
            flags.cancel_requested = true;
            if flags.in_flight {
                let generation = slots[index as usize].generation() & GENERATION_MASK;
                let _ = cancels.push_back(index as u64 | (generation as u64) << 32);
            }
        });
    }

    /// One staging pass (Part B 5.1 step 3): wake-poll rearm (serving only), pending cancels, the
    /// ready queue, then fresh requests while fewer than `RING` are admitted.
    fn stage(&mut self, mode: Mode) -> Pass {
        if mode == Mode::Serve && self.rearm {
            if self.sq_full() {
                return Pass::SqFull;
            }
            self.push(&wake_poll_sqe(self.eventfd.raw()));
            self.rearm = false;
        }
        if let Some(pass) = self.stage_cancels() {
            return pass;
        }
        // SAFETY: loop-private state (field doc); the borrow ends before `stage_one`.
        while let Some(&index) = unsafe { self.state.as_ref() }.ready.front() {
            if self.sq_full() {
                return Pass::SqFull;
            }
            // SAFETY: as above.
            unsafe { self.state.as_mut() }.ready.pop_front();
            self.stage_one(index);
        }
        while self.admitted < R {
            if self.sq_full() {
                return Pass::SqFull;
            }
            match self.storage.queue.pop() {
                Some(index) => self.admit(index),
                None => break,
            }
        }
        // Read only after a wake CQE (`check_senders`); the pre-sleep recheck reads it too. No
        // sender left: drain, whatever is still queued (the drain admits it).
        if mode == Mode::Serve && self.check_senders {
            if self.storage.senders() != 0 {
                self.check_senders = false;
            } else {
                return Pass::Disconnected;
            }
        }
        if self.admitted == R {
            Pass::WaiterFull
        } else {
            Pass::Drained
        }
    }

    /// Pushes the pending AsyncCancels (FIFO); `Some(SqFull)` if the SQ filled first.
    fn stage_cancels(&mut self) -> Option<Pass> {
        loop {
            // SAFETY: loop-private state (field doc).
            let state = unsafe { self.state.as_mut() };
            let &id = state.cancels.front()?;
            if self.ring.submission().is_full() {
                return Some(Pass::SqFull);
            }
            state.cancels.pop_front();
            let index = (id & 0xffff_ffff) as usize;
            let generation = (id >> 32) as u32;
            // Dropped silently if the op CQE already arrived (or the slot moved on).
            let current = self.storage.slots[index].generation() & GENERATION_MASK;
            if !state.flags[index].in_flight || current != generation {
                continue;
            }
            self.push_cancel(index, generation);
        }
    }

    fn push_cancel(&mut self, index: usize, generation: u32) {
        let target = user_data(index as u32, generation);
        let sqe = opcode::AsyncCancel::new(target)
            .build()
            .user_data(target | CANCEL_TAG);
        self.push(&sqe);
        Counters::bump(&self.storage.metrics.cancel_sqes);
    }

    /// Takes a fresh request from the submission ring (Part B 2.3).
    fn admit(&mut self, index: u32) {
        let slot = &self.storage.slots[index as usize];
        let live = slot.admit();
        // SAFETY: popped from the ring: ACTIVE or ORPHANED, so the loop owns the request.
        let (kind, deadline) = unsafe { slot.with_request(|r| (r.kind, r.deadline)) };
        if !live && kind.orphanable() {
            Counters::bump(&self.storage.metrics.completed);
            Counters::bump(&self.storage.metrics.orphaned);
            self.storage.free_slot(index);
            return;
        }
        // SAFETY: loop-private state (field doc).
        let state = unsafe { self.state.as_mut() };
        if let Some(deadline) = deadline {
            let now = Instant::now();
            if state.wheel.len() == 0 {
                // Align the idle wheel with now (nothing can expire: it is empty).
                let tick = floor_tick(self.elapsed_ns(now), self.checked.tick_ns);
                state.wheel.advance(tick, |_, _| {});
            }
            let deadline_tick = ceil_tick(self.elapsed_ns(deadline), self.checked.tick_ns);
            match state.wheel.target(deadline_tick, self.checked.horizon) {
                Target::Expired => {
                    // Already past: Timeout without I/O and without taking a table entry.
                    // SAFETY: the loop owns the request (above).
                    unsafe { slot.with_request(|r| r.outcome = Some(Err(Error::Timeout))) };
                    self.deliver(index);
                    return;
                }
                Target::At(tick) => state.wheel.schedule(index, tick),
            }
        }
        state.flags[index as usize] = SlotFlags {
            admitted: true,
            ..SlotFlags::NONE
        };
        self.admitted += 1;
        self.stage_one(index);
    }

    /// Produces the next SQE of an admitted request, or ends it (Part B 2.4). SQ has room.
    fn stage_one(&mut self, index: u32) {
        // SAFETY: loop-private state (field doc).
        let flags = unsafe { self.state.as_mut() }.flags[index as usize];
        let slot = &self.storage.slots[index as usize];
        if flags.cancel_requested {
            // SAFETY: admitted: the loop owns the request.
            unsafe { slot.with_request(|r| r.outcome = Some(Err(Error::Timeout))) };
            self.finish(index);
            return;
        }
        // SAFETY: admitted: the loop owns the request.
        let kind = unsafe { slot.with_request(|r| r.kind) };
        if kind.orphanable() && slot.phase() == ORPHANED {
            self.retire(index);
            return;
        }
        let id = user_data(index, slot.generation());
        let key = self.storage.fault_key();
        let limit = fault::sqe_limit(key, kind);
        // SAFETY: admitted: the loop owns the request.
        let mut sqe = unsafe { slot.with_request(|r| r.sqe(id, limit)) };
        if let Some(result) = fault::sqe_result(key, kind) {
            fault::override_result(key, id, result);
            sqe = opcode::Nop::new().build().user_data(id);
        }
        // SAFETY: loop-private state (field doc).
        unsafe { self.state.as_mut() }.flags[index as usize].in_flight = true;
        self.push(&sqe);
        Counters::bump(&self.storage.metrics.submitted);
    }

    /// Ends an admitted request whose outcome is stored.
    fn finish(&mut self, index: u32) {
        // SAFETY: loop-private state (field doc).
        let state = unsafe { self.state.as_mut() };
        state.wheel.remove(index);
        state.flags[index as usize] = SlotFlags::NONE;
        self.admitted -= 1;
        // The gauge is current before the caller can see the result.
        self.storage.metrics.set_pending(self.admitted);
        self.deliver(index);
    }

    /// Hands the stored outcome to the caller, or frees the slot if the caller left.
    fn deliver(&mut self, index: u32) {
        let metrics = &self.storage.metrics;
        let slot = &self.storage.slots[index as usize];
        Counters::bump(&metrics.completed);
        // SAFETY: the loop still owns the request until `finish` below publishes it.
        match unsafe { slot.with_request(|r| r.outcome) } {
            Some(Err(Error::Timeout)) => Counters::bump(&metrics.timed_out),
            Some(Err(Error::Abandoned)) => Counters::bump(&metrics.abandoned),
            _ => {}
        }
        match slot.finish() {
            Finish::Delivered { parked } => self.storage.wake_caller(index, parked),
            Finish::Orphaned => {
                Counters::bump(&metrics.orphaned);
                self.storage.free_slot(index);
            }
        }
    }

    /// Retires an admitted orphan without an outcome (not in flight).
    fn retire(&mut self, index: u32) {
        // SAFETY: loop-private state (field doc).
        let state = unsafe { self.state.as_mut() };
        state.wheel.remove(index);
        state.flags[index as usize] = SlotFlags::NONE;
        self.admitted -= 1;
        self.storage.metrics.set_pending(self.admitted);
        Counters::bump(&self.storage.metrics.completed);
        Counters::bump(&self.storage.metrics.orphaned);
        self.storage.free_slot(index);
    }

    /// The drain after disconnect (Part B 6.2, with A11): in-flight and ready requests go on,
    /// deadlines fire, queued requests are admitted as entries free up, all under the budget,
    /// which is charged for waiting time only. When it runs out, `abandon_all`; requests still
    /// queued are then answered `Closed` by `close`.
    fn drain(&mut self) -> Result<(), Error> {
        let mut remaining = self.checked.config.shutdown_timeout;
        loop {
            self.reap();
            if self.idle_for_good() {
                break;
            }
            if remaining == Some(Duration::ZERO) {
                self.abandon_all();
                break;
            }
            self.expire();
            let pass = self.stage(Mode::Drain);
            self.storage.metrics.set_pending(self.admitted);
            if self.idle_for_good() {
                break;
            }
            if pass == Pass::SqFull {
                self.enter(0, None)?;
                continue;
            }
            let wait = match (remaining, self.next_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let start = Instant::now();
            self.enter(1, wait)?;
            remaining = remaining.map(|r| r.saturating_sub(start.elapsed()));
        }
        self.storage.metrics.set_pending(self.admitted);
        Ok(())
    }

    /// Nothing admitted and nothing queued (no sender is left, so nothing more can come).
    fn idle_for_good(&self) -> bool {
        self.admitted == 0 && self.storage.queue.len() == 0
    }

    /// Budget gone (or the loop failed or unwinds): cancel what is in the kernel, collect what it
    /// releases at once, and abandon the rest (A10). Requests not in the kernel end now: with
    /// `Timeout` if their deadline already fired, else `Abandoned`, buffers handed back.
    fn abandon_all(&mut self) {
        // Pending deadline cancels first, so that no request gets a second AsyncCancel.
        while self.stage_cancels().is_some() {
            if self.enter(0, None).is_err() {
                break;
            }
        }
        for index in 0..S {
            // SAFETY: loop-private state (field doc).
            let flags = unsafe { self.state.as_ref() }.flags[index];
            if !flags.admitted {
                continue;
            }
            if !flags.in_flight {
                let outcome = if flags.cancel_requested {
                    Error::Timeout
                } else {
                    Error::Abandoned
                };
                let slot = &self.storage.slots[index];
                // SAFETY: admitted, not in flight: the loop owns the request.
                unsafe { slot.with_request(|r| r.outcome = Some(Err(outcome))) };
                self.finish(index as u32);
                continue;
            }
            if !flags.cancel_requested {
                if self.sq_full() {
                    let _ = self.enter(0, None);
                }
                if !self.sq_full() {
                    let generation = self.storage.slots[index].generation() & GENERATION_MASK;
                    self.push_cancel(index, generation);
                }
            }
            // SAFETY: loop-private state (field doc).
            unsafe { self.state.as_mut() }.flags[index].abandoning = true;
        }
        // SAFETY: loop-private state (field doc).
        let state = unsafe { self.state.as_mut() };
        state.ready.clear();
        state.cancels.clear();
        self.collect_released();
        for index in 0..S {
            // SAFETY: loop-private state (field doc).
            let state = unsafe { self.state.as_mut() };
            if !state.flags[index].admitted {
                continue;
            }
            state.wheel.remove(index as u32);
            state.flags[index] = SlotFlags::NONE;
            self.admitted -= 1;
            let metrics = &self.storage.metrics;
            metrics.set_pending(self.admitted);
            Counters::bump(&metrics.completed);
            Counters::bump(&metrics.abandoned);
            Counters::bump(&metrics.parked);
            let (waiting, parked) = self.storage.slots[index].abandon();
            if waiting {
                self.storage.wake_caller(index as u32, parked);
            }
        }
        self.storage.metrics.set_pending(self.admitted);
    }

    /// Submits the abandonment's cancels and collects what the kernel releases right away: waits
    /// of at most `COLLECT_WAIT` each, until nothing is left in the kernel or a wait brings no
    /// completion with the SQ consumed (an SQPOLL thread takes the SQEs asynchronously, and
    /// deferred task work runs only inside a waiting enter).
    fn collect_released(&mut self) {
        for _ in 0..COLLECT_ROUNDS {
            let before = self.admitted;
            if self.enter(1, Some(COLLECT_WAIT)).is_err() {
                self.reap();
                return;
            }
            self.reap();
            let progress = self.admitted < before;
            if self.admitted == 0 || (!progress && self.ring.submission().is_empty()) {
                return;
            }
        }
    }

    /// Gives the claim back: closes submission and answers `Closed` to requests still queued.
    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let storage = self.storage.clone();
        storage.close_loop(|index| {
            Counters::bump(&storage.metrics.completed);
            let slot = &storage.slots[index as usize];
            if slot.admit() {
                // SAFETY: popped and ACTIVE: the loop owns the request.
                unsafe { slot.with_request(|r| r.outcome = Some(Err(Error::Closed))) };
                if let Finish::Delivered { parked } = slot.finish() {
                    storage.wake_caller(index, parked);
                    return;
                }
            }
            storage.free_slot(index);
        });
    }

    /// `io_uring_enter`: submit, and wait for `want` completions at most `timeout`.
    fn enter(&mut self, want: usize, timeout: Option<Duration>) -> Result<(), Error> {
        Counters::bump(&self.storage.metrics.enters);
        let result = match fault::enter_errno(self.storage.fault_key()) {
            Some(errno) => Err(std::io::Error::from_raw_os_error(errno)),
            None => {
                let submitter = self.ring.submitter();
                match timeout {
                    None => submitter.submit_and_wait(want),
                    Some(timeout) => {
                        let ts = types::Timespec::from(timeout);
                        let args = types::SubmitArgs::new().timespec(&ts);
                        submitter.submit_with_args(want, &args)
                    }
                }
            }
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                // Timed out, or transient: return to the loop, which drains and re-enters.
                Some(libc::ETIME | libc::EINTR | libc::EAGAIN | libc::EBUSY) => Ok(()),
                _ => Err(os_error(e)),
            },
        }
    }

    /// `io_uring_enter(0, 0, GETEVENTS)`: runs deferred task work, posting its CQEs; no wait.
    fn run_task_work(&mut self) -> Result<(), Error> {
        Counters::bump(&self.storage.metrics.enters);
        // SAFETY: no SQEs and no extra argument; the flags are the kernel's.
        let result = unsafe {
            self.ring.submitter().enter::<libc::sigset_t>(
                0,
                0,
                io_uring::EnterFlags::GETEVENTS.bits(),
                None,
            )
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR | libc::EAGAIN | libc::EBUSY) => Ok(()),
                _ => Err(os_error(e)),
            },
        }
    }

    /// Time until the earliest deadline, counted from the last advanced tick.
    fn next_deadline(&self) -> Option<Duration> {
        // SAFETY: loop-private state (field doc).
        let ticks = unsafe { self.state.as_ref() }.wheel.next_deadline_ticks()?;
        Some(Duration::from_nanos(
            ticks.saturating_mul(self.checked.tick_ns),
        ))
    }

    fn elapsed_ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin)
            .as_nanos()
            .min(u64::MAX as u128) as u64
    }

    fn sq_full(&mut self) -> bool {
        self.ring.submission().is_full()
    }

    /// Pushes an SQE; the caller checked for room.
    fn push(&mut self, sqe: &squeue::Entry) {
        // SAFETY: every buffer and descriptor an SQE names lives in its slot (or the storage's
        // eventfd) until the matching CQE is processed, or forever if abandoned.
        let pushed = unsafe { self.ring.submission().push(sqe) };
        debug_assert!(pushed.is_ok(), "callers check for SQ room first");
    }
}

impl<const S: usize, const R: usize, const W: usize> Drop for EventLoop<S, R, W> {
    fn drop(&mut self) {
        if self.running {
            // `run` is unwinding: wake every caller and park what the kernel may still own.
            self.running = false;
            self.abandon_all();
        }
        // Answer queued requests with `Closed` (also for a loop dropped without running).
        self.close();
    }
}

impl<const S: usize, const R: usize, const W: usize> std::fmt::Debug for EventLoop<S, R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("admitted", &self.admitted)
            .finish_non_exhaustive()
    }
}

/// Reads a loop's counters without keeping the loop alive (see [`EventLoop::metrics_reader`]).
pub struct MetricsReader<const SLOTS: usize, const RING: usize, const WHEEL: usize> {
    storage: StorageRef<SLOTS, RING, WHEEL>,
}

impl<const S: usize, const R: usize, const W: usize> MetricsReader<S, R, W> {
    /// A snapshot of the counters (no allocation). After the storage is claimed again by a new
    /// loop, this reads the new loop's counters.
    pub fn get(&self) -> crate::Metrics {
        self.storage.metrics.snapshot()
    }
}

impl<const S: usize, const R: usize, const W: usize> Clone for MetricsReader<S, R, W> {
    fn clone(&self) -> Self {
        MetricsReader {
            storage: self.storage.clone(),
        }
    }
}

impl<const S: usize, const R: usize, const W: usize> std::fmt::Debug for MetricsReader<S, R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("MetricsReader").field(&self.get()).finish()
    }
}

/// `user_data` of an op SQE: index in bits 0-31, generation in bits 32-62, bit 63 clear.
fn user_data(index: u32, generation: u32) -> u64 {
    index as u64 | ((generation & GENERATION_MASK) as u64) << 32
}

fn os_error(e: std::io::Error) -> Error {
    Error::Os(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Creates the ring; refusals become `Error::Config` with the reason.
fn build_ring(checked: &Checked, entries: u32) -> Result<IoUring, Error> {
    let config = &checked.config;
    let mut builder = IoUring::builder();
    if config.single_issuer {
        builder
            .setup_single_issuer()
            .setup_defer_taskrun()
            // IORING_SQ_TASKRUN tells the spinning loop that deferred completions wait for it.
            .setup_taskrun_flag()
            .setup_r_disabled();
    }
    if let Some(idle) = config.sqpoll_idle {
        builder.setup_sqpoll(idle.as_millis() as u32);
    }
    builder.build(entries).map_err(|e| match e.raw_os_error() {
        Some(libc::EINVAL) => Error::Config("the kernel rejected the ring setup flags (EINVAL): single_issuer needs Linux 6.1+ and excludes sqpoll"),
        Some(libc::ENOMEM) => Error::Config("not enough locked memory for the ring (ENOMEM): lower RING or raise RLIMIT_MEMLOCK"),
        Some(libc::EPERM) => Error::Config("io_uring is not permitted here (EPERM): see kernel.io_uring_disabled"),
        Some(libc::ENOSYS) => Error::Config("io_uring is not available in this kernel (ENOSYS)"),
        _ => os_error(e),
    })
}

/// Pins the calling thread to `cpu`.
fn pin_to_cpu(cpu: usize) -> Result<(), Error> {
    // SAFETY: cpu_set_t is plain data; CPU_SET is given an index below CPU_SETSIZE (checked in
    // Config::check); sched_setaffinity(0) targets the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(os_error(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
