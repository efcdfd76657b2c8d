//! The receiving side of loop-to-loop messages (the protocol is in `mailbox.rs`): the messages
//! queued in the loop's table and the receivers waiting for them, what a message CQE does, and
//! the inbox's end at the drain and the close.
//!
//! A waiting `recv_message` is held like a timer (`SlotFlags::timer`: the wheel keeps its
//! deadline, the drain waits for it, a dropped caller's slot is retired at the next pass) and
//! named in the `waiting` FIFO by its request id. An entry whose receiver ended meanwhile (its
//! deadline, its caller left) is stale and skipped: the id's generation or the timer flag no
//! longer match. Stale entries are compacted away when the FIFO is full, so it never holds more
//! than `SLOTS` (at most one live receiver per slot).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::id::RequestId;
use super::request::Deadline;
use super::table::{owned_request, Table};
use super::EventLoop;
use crate::error::Error;
use crate::mailbox::{Inbox, Mailbox, GRACE};
use crate::metrics::Counters;
use crate::op::{OpKind, RecvMessage, Tagged};

/// At the close, the most enters that collect messages the kernel still holds for the loop.
const COLLECT_ROUNDS: usize = 16;

/// A fixed FIFO of `N` (a power of two) `u64`s: a ring buffer with a mask.
pub(crate) struct Fifo<const N: usize> {
    items: [u64; N],
    /// Index of the first item (wraps).
    head: usize,
    len: usize,
}

impl<const N: usize> Fifo<N> {
    const fn new() -> Self {
        Fifo {
            items: [0; N],
            head: 0,
            len: 0,
        }
    }

    /// Writes an empty FIFO into `ptr` element by element (no `N`-sized temporary).
    ///
    /// # Safety
    /// `ptr` is valid for writes and aligned.
    unsafe fn init_at(ptr: *mut Self) {
        use std::ptr::addr_of_mut;
        // SAFETY: every write targets a field of the FIFO behind `ptr` (contract).
        unsafe {
            let items = addr_of_mut!((*ptr).items).cast::<u64>();
            for i in 0..N {
                items.add(i).write(0);
            }
            addr_of_mut!((*ptr).head).write(0);
            addr_of_mut!((*ptr).len).write(0);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn push_back(&mut self, item: u64) -> Result<(), u64> {
        if self.len == N {
            return Err(item);
        }
        self.items[(self.head + self.len) & (N - 1)] = item;
        self.len += 1;
        Ok(())
    }

    /// Puts an item taken by `pop_front` back in front (there is room: it was just taken).
    fn push_front(&mut self, item: u64) {
        debug_assert!(self.len < N);
        self.head = self.head.wrapping_sub(1) & (N - 1);
        self.items[self.head] = item;
        self.len += 1;
    }

    fn pop_front(&mut self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let item = self.items[self.head];
        self.head = (self.head + 1) & (N - 1);
        self.len -= 1;
        Some(item)
    }
}

/// The loop's side of its inbox, in its table.
pub(crate) struct Mail<const SLOTS: usize> {
    /// The inbox, once `EventLoop::mailbox` made it (none: no message can come).
    inbox: Option<Arc<Inbox>>,
    /// Messages no receiver has taken yet, oldest first. Never overflows: the inbox's tickets
    /// count them (and those in flight) up to `SLOTS`.
    queue: Fifo<SLOTS>,
    /// Waiting receivers' request ids (`RequestId::op_data`), oldest first; some may be stale.
    waiting: Fifo<SLOTS>,
    /// When the drain sealed the inbox.
    sealed_at: Option<Instant>,
}

impl<const SLOTS: usize> Mail<SLOTS> {
    /// No inbox, nothing queued.
    pub(crate) const fn new() -> Self {
        Mail {
            inbox: None,
            queue: Fifo::new(),
            waiting: Fifo::new(),
            sealed_at: None,
        }
    }

    /// Writes `Mail::new()` into `ptr` field by field (no `SLOTS`-sized temporary).
    ///
    /// # Safety
    /// `ptr` is valid for writes and aligned.
    pub(crate) unsafe fn init_at(ptr: *mut Self) {
        use std::ptr::addr_of_mut;
        // SAFETY: every write targets a field of the mail behind `ptr` (contract).
        unsafe {
            addr_of_mut!((*ptr).inbox).write(None);
            Fifo::init_at(addr_of_mut!((*ptr).queue));
            Fifo::init_at(addr_of_mut!((*ptr).waiting));
            addr_of_mut!((*ptr).sealed_at).write(None);
        }
    }

    /// Back to empty for a new claim (the previous claim's inbox is let go).
    pub(crate) fn reset(&mut self) {
        self.inbox = None;
        self.queue.head = 0;
        self.queue.len = 0;
        self.waiting.head = 0;
        self.waiting.len = 0;
        self.sealed_at = None;
    }
}

impl<const S: usize, const R: usize, const W: usize> EventLoop<S, R, W> {
    /// The address of this loop's inbox, for other loops (or this one) to
    /// [`post`](crate::Handle::post) to; its callers take the messages with
    /// [`recv_message`](crate::Handle::recv_message). Made at the first call (a duplicate of
    /// the ring's descriptor and one allocation), the same inbox after. Before the loop runs,
    /// like the other registrations.
    ///
    /// A kernel without `IORING_OP_MSG_RING` (before Linux 5.18) is `Error::Config`.
    pub fn mailbox(&mut self) -> Result<Mailbox, Error> {
        if let Some(inbox) = &self.table_mut().mail.inbox {
            return Ok(Mailbox::new(inbox.clone()));
        }
        if !self
            .ring
            .supports(io_uring::opcode::MsgRingData::CODE)
            .map_err(|e| Error::from_io(&e))?
        {
            return Err(Error::Config(
                "this kernel has no IORING_OP_MSG_RING (Linux 5.18+): loop-to-loop messages are unavailable",
            ));
        }
        let ring = self.ring.duplicate().map_err(|e| Error::from_io(&e))?;
        let inbox = Arc::new(Inbox::new(ring, S));
        self.table_mut().mail.inbox = Some(inbox.clone());
        Ok(Mailbox::new(inbox))
    }

    /// A message CQE: to the oldest waiting receiver, else queued.
    pub(super) fn on_message(&mut self, t: &mut Table<S, R, W>, value: u64) {
        Counters::bump(&self.storage.metrics.messages_received);
        if !self.hand_message(t, value) && t.mail.queue.push_back(value).is_err() {
            // Only a sender that bypassed the tickets (none of this crate's) can overflow it.
            Counters::bump(&self.storage.metrics.messages_unread);
        }
    }

    /// Delivers `value` to the oldest waiting receiver; false if none is left.
    fn hand_message(&mut self, t: &mut Table<S, R, W>, value: u64) -> bool {
        while let Some(data) = t.mail.waiting.pop_front() {
            let id = RequestId::new(data as u32, (data >> 32) as u32);
            if !self.is_waiting(t, id) {
                continue;
            }
            if self.give(t, id.index(), value) {
                return true;
            }
            // Its caller left at this very moment: its slot is freed; the next one gets it.
        }
        false
    }

    /// Whether `id` names a receiver the loop holds whose caller is still there.
    fn is_waiting(&mut self, t: &mut Table<S, R, W>, id: RequestId) -> bool {
        let index = id.index();
        let slot = &self.storage.slots[index as usize];
        t.flags[index as usize].timer
            && id.is_current(slot.generation())
            && !slot.is_orphaned()
            && owned_request(&mut t.flags, &self.storage.slots, index).kind() == OpKind::RecvMessage
    }

    /// Ends receiver `index` (held, or being admitted) with message `value`; false if its
    /// caller had left. The message's ticket goes back first, so a caller woken by it may post
    /// to this inbox again at once; it is taken back if the caller left at this very moment
    /// (the message then stays with the loop).
    fn give(&mut self, t: &mut Table<S, R, W>, index: u32, value: u64) -> bool {
        if let Some(inbox) = &t.mail.inbox {
            inbox.release();
        }
        let held = t.flags[index as usize].timer;
        let delivered = if held {
            self.end_receiver(t, index, Ok(value))
        } else {
            let r = owned_request(&mut t.flags, &self.storage.slots, index);
            // SAFETY: `admit` calls `admit_receiver` for a `RecvMessage` only.
            unsafe { RecvMessage::get(&mut r.work) }.value = value;
            r.outcome = Some(Ok(0));
            self.deliver(t, index)
        };
        if !delivered {
            if let Some(inbox) = &t.mail.inbox {
                inbox.retake();
            }
        }
        delivered
    }

    /// Ends held receiver `index` with a message (`Ok(value)`) or an error; false if its caller
    /// had left (the slot is freed, nothing delivered).
    fn end_receiver(
        &mut self,
        t: &mut Table<S, R, W>,
        index: u32,
        outcome: Result<u64, Error>,
    ) -> bool {
        let r = owned_request(&mut t.flags, &self.storage.slots, index);
        if let Ok(value) = outcome {
            debug_assert_eq!(r.kind(), OpKind::RecvMessage);
            // SAFETY: the caller checked that the request is a `RecvMessage` (`is_waiting`).
            unsafe { RecvMessage::get(&mut r.work) }.value = value;
        }
        self.end_timer(t, index, outcome.map(|_| 0))
    }

    /// A fresh `recv_message`: a queued message at once, else held until one comes (or its
    /// deadline, or the loop's end). `InvalidInput` when the loop has no inbox (no message can
    /// come); `Closed` once the drain has settled the inbox.
    pub(super) fn admit_receiver(
        &mut self,
        t: &mut Table<S, R, W>,
        index: u32,
        deadline: Option<Deadline>,
    ) {
        if let Some(value) = t.mail.queue.pop_front() {
            if !self.give(t, index, value) {
                // Its caller left already: the message stays first in line.
                t.mail.queue.push_front(value);
            }
            return;
        }
        let refused = match &t.mail.inbox {
            None => Some(Error::InvalidInput),
            Some(_) if self.mail_settled(t) => Some(Error::Closed),
            Some(_) => None,
        };
        if let Some(error) = refused {
            owned_request(&mut t.flags, &self.storage.slots, index).outcome = Some(Err(error));
            self.deliver(t, index);
            return;
        }
        let id = RequestId::new(index, self.storage.slots[index as usize].generation());
        if t.mail.waiting.len() == S {
            self.compact_waiting(t);
        }
        // Cannot fail: after compaction only live receivers remain, at most one per other slot.
        let _ = t.mail.waiting.push_back(id.op_data());
        self.admit_timer(t, index, deadline);
    }

    /// Drops the stale entries of the waiting FIFO (order kept).
    fn compact_waiting(&mut self, t: &mut Table<S, R, W>) {
        for _ in 0..t.mail.waiting.len() {
            let Some(data) = t.mail.waiting.pop_front() else {
                break;
            };
            if self.is_waiting(t, RequestId::new(data as u32, (data >> 32) as u32)) {
                let _ = t.mail.waiting.push_back(data);
            }
        }
    }

    /// The drain begins: posts fail `Closed` from now on.
    pub(super) fn seal_inbox(&mut self, t: &mut Table<S, R, W>) {
        if let Some(inbox) = &t.mail.inbox {
            if t.mail.sealed_at.is_none() {
                inbox.seal();
                t.mail.sealed_at = Some(Instant::now());
            }
        }
    }

    /// Whether no more message can arrive for a receiver: the inbox is sealed and every message
    /// reserved before is here (or `GRACE` has passed since the seal), or there is no inbox.
    fn mail_settled(&self, t: &Table<S, R, W>) -> bool {
        match (&t.mail.inbox, t.mail.sealed_at) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(inbox), Some(at)) => {
                inbox.tickets() <= t.mail.queue.len() as u64 || at.elapsed() >= GRACE
            }
        }
    }

    /// During the drain: once no message can arrive, the waiting receivers end `Closed`.
    pub(super) fn settle_receivers(&mut self, t: &mut Table<S, R, W>) {
        if t.mail.waiting.len() == 0 || !self.mail_settled(t) {
            return;
        }
        while let Some(data) = t.mail.waiting.pop_front() {
            let id = RequestId::new(data as u32, (data >> 32) as u32);
            if self.is_waiting(t, id) {
                self.end_receiver(t, id.index(), Err(Error::Closed));
            }
        }
    }

    /// During the drain: how long the loop may wait before the receivers must be settled (the
    /// rest of `GRACE`), while receivers wait for messages on their way.
    pub(super) fn mail_wait(&self, t: &Table<S, R, W>) -> Option<Duration> {
        let at = t.mail.sealed_at?;
        if t.mail.waiting.len() == 0 || self.mail_settled(t) {
            return None;
        }
        Some(GRACE.saturating_sub(at.elapsed()))
    }

    /// The loop closes: sealed for good; messages the kernel holds for it are collected, and
    /// the messages accepted and not taken (queued, or still on their way) are counted unread.
    pub(super) fn close_inbox(&mut self, t: &mut Table<S, R, W>) {
        self.seal_inbox(t);
        let Some(inbox) = t.mail.inbox.clone() else {
            return;
        };
        // Messages the kernel posted that the CQ does not show yet: in its overflow list (more
        // arrived than the CQ's 2 x RING entries hold) or, on a single-issuer ring, in task work.
        // An enter with GETEVENTS brings them in.
        for _ in 0..COLLECT_ROUNDS {
            if inbox.tickets() <= t.mail.queue.len() as u64 || self.ring.run_task_work().is_err() {
                break;
            }
            if self.reap(t) == 0 {
                break;
            }
        }
        Counters::add(&self.storage.metrics.messages_unread, inbox.tickets());
        t.mail.queue.head = 0;
        t.mail.queue.len = 0;
        t.mail.waiting.head = 0;
        t.mail.waiting.len = 0;
    }
}
