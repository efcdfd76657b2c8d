//! The slot: one request's state, from claim to hand-back, and the atomic state machine that
//! says who may touch it.
//!
//! # States and owners
//!
//! | phase       | meaning                                        | `request` owned by | next phases (by whom)                                  |
//! |-------------|------------------------------------------------|--------------------|--------------------------------------------------------|
//! | `FREE`      | on the free list                               | nobody             | `FILLED` (caller, after popping the index)             |
//! | `FILLED`    | caller is writing the request                  | caller             | `QUEUED` (caller, before pushing the index), `ACTIVE` (caller on the loop thread, before its private queue), `FREE` |
//! | `QUEUED`    | index in the submission ring                   | loop (once popped) | `ACTIVE` (loop admits), `ORPHANED` (caller drops)      |
//! | `ACTIVE`    | admitted: in flight, ready-queued or cancelling | loop               | `DONE` (loop), `ORPHANED` (caller), `ABANDONED` (loop) |
//! | `DONE`      | result stored, waiting for the caller          | caller             | `FREE` (caller takes the result)                       |
//! | `ORPHANED`  | caller gone; the loop retires it               | loop               | `FREE` (loop), `ABANDONED` (loop)                      |
//! | `ABANDONED` | kernel may still write its buffer; never reused | nobody (leaked)   | none                                                   |
//!
//! The waker cell is not part of the table: it has its own lock-free protocol (`waker_cell.rs`)
//! and may be registered by the caller in `QUEUED` and `ACTIVE`. A caller on the loop thread
//! keeps its waker in the loop's private cell instead (`loop_local.rs`) and says so with the
//! `LOCAL_WAKER` bit beside the phase; such a caller also admits its own request (`FILLED ->
//! ACTIVE`, `mark_admitted_here`), since no other thread can see it before the loop does.
//!
//! # The complete-versus-drop race
//!
//! The loop finishing a request (`ACTIVE -> DONE`) and the caller dropping its future
//! (`ACTIVE -> ORPHANED`) are both compare-exchanges on `phase`, so exactly one wins. If the loop
//! wins, the caller sees `DONE` and frees the slot itself (dropping the result); if the caller
//! wins, the loop sees `ORPHANED` and frees it. Either way the slot is freed once, by the side
//! that owns it at that moment.
//!
//! A caller that can never leave the loop thread (a `LocalOp`, `!Send`) adds `PINNED` when it
//! admits its own request there: then no other thread can ever touch the phase while the request
//! is `ACTIVE`, the race above cannot happen, and the loop finishes it with a plain load and
//! store. Dropping such a caller still takes the compare-exchange (it is the rare side). The
//! loop tells such a request by its phase word alone (`is_pinned_active`: `ACTIVE` with
//! `LOCAL_WAKER` and `PINNED`, nothing else), and ends a plain one through `finish_pinned`.
//!
//! # Blocking waits
//!
//! A thread with no executor (`.wait()`) sets the `PARKED` bit next to the phase and sleeps on the
//! phase word with a futex. Any transition out of `QUEUED`/`ACTIVE` changes the word, so a wait
//! that starts after it returns at once; the loop calls `FUTEX_WAKE` only when it saw `PARKED`.
//! Such a caller submits with `BLOCKING` beside `QUEUED`: it never registers a waker, so the loop
//! does not look in the waker cell (two read-modify-writes saved per request).

use crate::handoff::waker_cell::WakerCell;
use crate::loom::{AtomicU32, Ordering, UnsafeCell};

pub(super) const FREE: u32 = 0;
pub(super) const FILLED: u32 = 1;
pub(super) const QUEUED: u32 = 2;
pub(super) const ACTIVE: u32 = 3;
pub(super) const DONE: u32 = 4;
pub(super) const ORPHANED: u32 = 5;
pub(super) const ABANDONED: u32 = 6;

/// Set beside `QUEUED` or `ACTIVE` while a thread sleeps on the phase word.
const PARKED: u32 = 1 << 8;
/// Set beside `QUEUED` or `ACTIVE` while the caller's waker is in the loop thread's private cell
/// (`loop_local.rs`) instead of `waker`: set by the caller on the loop thread, cleared with an
/// RMW by a caller that registers from another thread (see [`Slot::mark_local_waker`]).
const LOCAL_WAKER: u32 = 1 << 9;
/// Set with `QUEUED` by a caller that blocks in `.wait()` (it parks or spins, and never
/// registers a waker): the loop skips the waker cell.
const BLOCKING: u32 = 1 << 10;
/// Set beside `ACTIVE` by a caller that can never leave the loop thread (a `LocalOp`, which is
/// `!Send`), when it admits its own request there: while the request is `ACTIVE` only the loop
/// thread touches the phase, so the loop finishes it with a plain store (no compare-exchange).
const PINNED: u32 = 1 << 11;
/// The bits that stay with the phase while it is `QUEUED` or `ACTIVE`.
const CALLER_BITS: u32 = PARKED | LOCAL_WAKER | BLOCKING | PINNED;
const PHASE: u32 = 0xff;

/// How to tell a waiting caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Caller {
    /// A `.wait()` thread sleeps on the phase word: unpark it.
    pub(crate) parked: bool,
    /// Its waker is in the loop thread's private cell, not in the slot's `waker`.
    pub(crate) local: bool,
    /// It blocks in `.wait()`: it has no waker anywhere.
    pub(crate) blocking: bool,
}

impl Caller {
    fn of(word: u32) -> Caller {
        Caller {
            parked: word & PARKED != 0,
            local: word & LOCAL_WAKER != 0,
            blocking: word & BLOCKING != 0,
        }
    }
}

/// What the loop found when it tried to finish a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// The caller owns the result now; tell it.
    Delivered(Caller),
    /// The caller was gone: the loop owns the slot and must free it.
    Orphaned,
}

/// What a caller that gives up on its request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leave {
    /// The loop owns the request now and will retire it.
    Orphaned,
    /// The result was already stored: the caller owns the slot and must free it.
    Done,
    /// The kernel may still own the buffers: leave the slot alone forever.
    Abandoned,
}

/// One request's storage: the hand-off state machine around a payload `T` (the loop's
/// `Request`), generic so that the hand-off depends on nothing but the loom shim, as an
/// executor's task cell is generic over its future.
pub(crate) struct Slot<T> {
    /// Phase (low byte) and `PARKED`.
    phase: AtomicU32,
    /// Bumped each time the slot is freed; with the index it names one request (`user_data`).
    generation: AtomicU32,
    /// The caller's waker.
    pub(crate) waker: WakerCell,
    /// The request itself; its owner is given by the table above.
    request: UnsafeCell<T>,
}

// SAFETY: `request` is only accessed by the owner that the phase names, and every hand-off
// between owners is an atomic transition with Release/Acquire ordering (see the table); the
// payload moves between threads with it, so it must be `Send`.
unsafe impl<T: Send> Sync for Slot<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Slot<T> {}

impl<T> Slot<T> {
    crate::loom::maybe_const_fn! {
        /// A free slot with generation 0 holding `empty` (a payload that owns nothing).
        pub(crate) fn new(empty: T) -> Self {
            Self {
                phase: AtomicU32::new(FREE),
                generation: AtomicU32::new(0),
                waker: WakerCell::new(),
                request: UnsafeCell::new(empty),
            }
        }
    }

    /// The current phase (without `PARKED`). Acquire: a caller that sees `DONE` sees the result.
    #[inline]
    pub(crate) fn phase(&self) -> u32 {
        self.phase.load(Ordering::Acquire) & PHASE
    }

    /// `DONE`: the result is stored and the caller owns the request (Acquire: it sees it).
    #[inline]
    pub(crate) fn is_done(&self) -> bool {
        self.phase() == DONE
    }

    /// `QUEUED` or `ACTIVE`: the loop has the request and has not finished it (Acquire, as
    /// [`is_done`](Self::is_done)).
    #[inline]
    pub(crate) fn is_pending(&self) -> bool {
        matches!(self.phase(), QUEUED | ACTIVE)
    }

    /// `ABANDONED`: the kernel may still write the request's buffers; nobody owns it, ever.
    #[inline]
    pub(crate) fn is_abandoned(&self) -> bool {
        self.phase() == ABANDONED
    }

    /// `ORPHANED`: the caller left; the loop retires the request.
    #[inline]
    pub(crate) fn is_orphaned(&self) -> bool {
        self.phase() == ORPHANED
    }

    /// Whether the request's memory may be dropped with the storage: only a `FREE` slot (empty)
    /// or a `DONE` one (the kernel is finished with it). Any other phase may still be in the
    /// kernel (a loop that died without abandoning), so its memory is leaked instead.
    pub(crate) fn may_drop_request(&self) -> bool {
        matches!(self.phase(), FREE | DONE)
    }

    /// The generation of the current occupant.
    #[inline]
    pub(crate) fn generation(&self) -> u32 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The request's address: dereferencing it is for the side that owns the request in the
    /// current phase (see the module table), as with [`with_request`](Self::with_request).
    #[inline]
    pub(crate) fn request_ptr(&self) -> *mut T {
        crate::loom::cell_ptr(&self.request)
    }

    /// Runs `f` on the request.
    ///
    /// # Safety
    /// The calling side must own the request in the current phase (see the module table).
    pub(crate) unsafe fn with_request<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: the caller owns the request (function contract), so this is the only access.
        self.request.with_mut(|request| f(unsafe { &mut *request }))
    }

    /// `FREE -> FILLED`: the index was just popped from the free list.
    #[inline]
    pub(crate) fn mark_filled(&self) {
        debug_assert_eq!(self.phase(), FREE);
        self.phase.store(FILLED, Ordering::Relaxed);
    }

    /// `FILLED -> QUEUED`, just before the index is pushed; `blocking` for a caller in
    /// `.wait()` (see `BLOCKING`). Release: the loop's `admit` (Acquire) sees the request (the
    /// ring's own Release/Acquire orders it too).
    #[inline]
    pub(crate) fn mark_queued(&self, blocking: bool) {
        let bits = if blocking { BLOCKING } else { 0 };
        self.phase.store(QUEUED | bits, Ordering::Release);
    }

    /// `FILLED -> ACTIVE` by a caller on the loop thread, which queues the index in the loop's
    /// private queue next: the loop owns the request from here, as after `admit`, with no
    /// compare-exchange (nobody else can see the slot: it is not in any shared queue). Release,
    /// as `mark_queued`: the loop reads it on this same thread, but a caller that moves the `Op`
    /// to another thread afterwards passes it on through its own synchronisation anyway.
    #[inline]
    pub(crate) fn mark_admitted_here(&self) {
        self.phase.store(ACTIVE, Ordering::Release);
    }

    /// [`mark_admitted_here`](Self::mark_admitted_here) by a caller that has already put its
    /// waker in the loop thread's private cell: `ACTIVE` with `LOCAL_WAKER` in one store
    /// (what [`mark_local_waker`](Self::mark_local_waker) would add next), and `PINNED` for a
    /// caller that can never leave this thread (`pinned`: a `LocalOp`). Release, for the reason
    /// `mark_admitted_here` gives.
    #[inline]
    pub(crate) fn mark_admitted_here_with_local_waker(&self, pinned: bool) {
        let pinned = if pinned { PINNED } else { 0 };
        self.phase
            .store(ACTIVE | LOCAL_WAKER | pinned, Ordering::Release);
    }

    /// `QUEUED -> ACTIVE` (loop, when it admits the request), or already `ACTIVE` (admitted by
    /// its caller on the loop thread, `mark_admitted_here`: a load is enough). Returns false if
    /// the caller orphaned it first (the phase is then `ORPHANED`, owned by the loop). A caller
    /// that orphans an `ACTIVE` request after this is handled as any orphan of an admitted one.
    #[inline]
    pub(crate) fn admit(&self) -> bool {
        if self.phase.load(Ordering::Acquire) & PHASE == ACTIVE {
            return true;
        }
        self.transition(|phase| (phase == QUEUED).then_some(ACTIVE))
            .is_ok()
    }

    /// `ACTIVE -> DONE` (loop, after storing the result) or, if the caller left, report that the
    /// loop owns the orphan. Release: publishes the stored result to the caller.
    ///
    /// A `PINNED` request's phase is only ever touched on the loop's thread (its caller cannot
    /// leave it, and the loop's thread does one thing at a time), so nothing can come between
    /// the load and the store: no compare-exchange.
    #[inline]
    pub(crate) fn finish(&self) -> Finish {
        let word = self.phase.load(Ordering::Relaxed);
        if word & (PINNED | PHASE) == PINNED | ACTIVE {
            self.phase.store(DONE, Ordering::Release);
            return Finish::Delivered(Caller::of(word));
        }
        match self.transition(|phase| (phase == ACTIVE).then_some(DONE)) {
            Ok(previous) => Finish::Delivered(Caller::of(previous)),
            Err(_) => Finish::Orphaned,
        }
    }

    /// Whether the caller's waker is in the loop thread's private cell (`LOCAL_WAKER`): the
    /// request was made on the loop thread. Loop thread. Relaxed: a caller that moved to another
    /// thread may clear the bit meanwhile, and the loop only uses the answer to choose how to
    /// enter (`EventLoop::goes_round`), which a stale one cannot make wrong, only slower.
    #[inline]
    pub(crate) fn waker_here(&self) -> bool {
        self.phase.load(Ordering::Relaxed) & LOCAL_WAKER != 0
    }

    /// Whether the request is `ACTIVE` for a pinned caller on the loop thread whose waker is in
    /// the private cell, and nothing else (no caller left, moved or parked): the loop may then
    /// end it with [`finish_pinned`](Self::finish_pinned). Loop thread, as `finish`'s plain load.
    #[inline]
    pub(crate) fn is_pinned_active(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == ACTIVE | LOCAL_WAKER | PINNED
    }

    /// `ACTIVE -> DONE` for a request [`is_pinned_active`](Self::is_pinned_active) found so:
    /// nothing but the loop's thread can touch the phase meanwhile (see `PINNED`), so a store.
    /// Release: publishes the stored result, as `finish`.
    #[inline]
    pub(crate) fn finish_pinned(&self) {
        debug_assert!(self.is_pinned_active());
        self.phase.store(DONE, Ordering::Release);
    }

    /// `ACTIVE | ORPHANED -> ABANDONED` (loop at shutdown, the kernel may still own the buffers).
    /// Returns the caller to tell if one is waiting (it was `ACTIVE`).
    pub(crate) fn abandon(&self) -> Option<Caller> {
        let previous = self
            .transition(|phase| matches!(phase, ACTIVE | ORPHANED).then_some(ABANDONED))
            .unwrap_or(ABANDONED);
        (previous & PHASE == ACTIVE).then(|| Caller::of(previous))
    }

    /// The caller, on the loop thread, put its waker in the loop thread's private cell: the loop
    /// wakes that one. A plain load and store: only the caller (`&mut` its `Op`) and the loop
    /// write the phase while it is `QUEUED` or `ACTIVE`, and the loop is not running while its
    /// thread runs the caller. Only while `QUEUED` or `ACTIVE` (a finished request is taken).
    #[inline]
    pub(crate) fn mark_local_waker(&self) {
        let word = self.phase.load(Ordering::Relaxed);
        if matches!(word & PHASE, QUEUED | ACTIVE) && word & LOCAL_WAKER == 0 {
            self.phase.store(word | LOCAL_WAKER, Ordering::Relaxed);
        }
    }

    /// A caller on another thread is about to register in `waker`: if its waker was left in the
    /// loop thread's private cell (the `Op` moved threads), the loop must look at `waker` from
    /// now on. The read-modify-write orders this against the loop's `finish`: either the loop
    /// sees the bit gone and takes `waker`, or this sees `DONE` (the caller's next check).
    ///
    /// The first load may be Relaxed: the bit was set on the loop thread before the `Op` moved
    /// here, and the move (a channel, a join) orders that store before this load; the loop only
    /// ever clears it (by `finish`), which the RMW then sees.
    #[inline]
    pub(crate) fn clear_local_waker(&self) {
        if self.phase.load(Ordering::Relaxed) & LOCAL_WAKER != 0 {
            self.phase.fetch_and(!LOCAL_WAKER, Ordering::AcqRel);
        }
    }

    /// The caller gives up (its future is dropped): `QUEUED | ACTIVE -> ORPHANED`.
    #[inline]
    pub(crate) fn orphan(&self) -> Leave {
        match self.transition(|phase| matches!(phase, QUEUED | ACTIVE).then_some(ORPHANED)) {
            Ok(_) => Leave::Orphaned,
            Err(phase) if phase & PHASE == DONE => Leave::Done,
            Err(phase) => {
                debug_assert_eq!(phase & PHASE, ABANDONED);
                Leave::Abandoned
            }
        }
    }

    /// `* -> FREE` by the side that owns the slot (caller after `DONE`, loop after `ORPHANED`,
    /// caller after `FILLED`): bumps the generation. The caller pushes the index to the free list
    /// next, whose Release publishes this.
    #[inline]
    pub(crate) fn release(&self) {
        // Only the slot's owner writes the generation, so a load and a store do (no locked RMW).
        let next = self.generation.load(Ordering::Relaxed).wrapping_add(1);
        self.generation.store(next, Ordering::Relaxed);
        self.phase.store(FREE, Ordering::Relaxed);
    }

    /// Applies `next` to the phase (keeping `PARKED` and `LOCAL_WAKER` unless the phase leaves
    /// QUEUED/ACTIVE).
    /// AcqRel: every transition both publishes the mover's writes and acquires the other side's.
    #[inline]
    fn transition(&self, next: impl Fn(u32) -> Option<u32>) -> Result<u32, u32> {
        self.phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                next(word & PHASE).map(|phase| match phase {
                    QUEUED | ACTIVE => phase | (word & CALLER_BITS),
                    _ => phase,
                })
            })
    }
}

impl<T> Slot<T> {
    /// Sleeps until the phase leaves `QUEUED`/`ACTIVE` (or a spurious wake-up). Caller side.
    /// Out of line (a syscall follows anyway): `scripts/profile` leaves waiting out of the
    /// caller's count, as it does the spin before it.
    #[inline(never)]
    pub(crate) fn park(&self) {
        let word = self.phase.load(Ordering::Acquire);
        if !matches!(word & PHASE, QUEUED | ACTIVE) {
            return;
        }
        // AcqRel: the loop's `finish` either sees PARKED or changed the word first.
        if self
            .phase
            .compare_exchange(word, word | PARKED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        crate::loom::futex_wait(&self.phase, word | PARKED);
    }

    /// Polls until the phase leaves `QUEUED`/`ACTIVE` (true) or `spin` runs out (false).
    /// Caller side, before [`park`](Self::park). Out of line: a waiting caller's polls are not
    /// its work, and `scripts/profile` leaves this function out of the caller's instruction
    /// count (callgrind's `--toggle-collect`).
    #[inline(never)]
    pub(crate) fn spin_while_pending(&self, spin: &mut crate::spin::Spin) -> bool {
        loop {
            if !self.is_pending() {
                return true;
            }
            if !spin.step() {
                return false;
            }
        }
    }

    /// Wakes the thread sleeping in [`park`](Self::park). Loop side. Out of line, as `park`
    /// (whether a caller parked depends on timing: `scripts/profile` leaves it out).
    #[inline(never)]
    pub(crate) fn unpark(&self) {
        crate::loom::futex_wake(&self.phase);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn complete_then_drop_leaves_the_slot_to_the_caller() {
        // If the loop stores the result first, the dropping caller must free the slot.
        let slot = Slot::new(());
        slot.mark_filled();
        slot.mark_queued(false);
        assert!(slot.admit());
        assert_eq!(slot.finish(), Finish::Delivered(Caller::default()));
        assert_eq!(slot.orphan(), Leave::Done);
    }

    #[test]
    fn drop_then_complete_leaves_the_slot_to_the_loop() {
        // If the caller leaves first, the loop must learn it owns the orphan.
        let slot = Slot::new(());
        slot.mark_filled();
        slot.mark_queued(false);
        assert_eq!(slot.orphan(), Leave::Orphaned);
        assert!(!slot.admit(), "an orphan is not admitted as live");
        assert_eq!(slot.finish(), Finish::Orphaned);
        assert_eq!(slot.abandon(), None);
        assert_eq!(slot.phase(), ABANDONED);
        assert_eq!(
            slot.orphan(),
            Leave::Abandoned,
            "abandoned slots are never handed back"
        );
    }

    #[test]
    fn a_blocking_caller_is_reported_as_such() {
        // A `.wait()` caller has no waker: the loop learns it from `finish` and `abandon`.
        let slot = Slot::new(());
        slot.mark_filled();
        slot.mark_queued(true);
        assert!(slot.admit());
        let blocking = Caller {
            blocking: true,
            ..Caller::default()
        };
        assert_eq!(slot.abandon(), Some(blocking));
        let slot = Slot::new(());
        slot.mark_filled();
        slot.mark_queued(true);
        assert!(slot.admit());
        assert_eq!(slot.finish(), Finish::Delivered(blocking));
    }

    #[test]
    fn a_pinned_request_is_finished_and_left_like_any_other() {
        // Finished by a plain store: the caller learns it is local, a later drop owns the
        // result, and the bit does not outlive the request.
        let slot = Slot::new(());
        slot.mark_filled();
        slot.mark_admitted_here_with_local_waker(true);
        assert!(slot.admit(), "admitted by its caller");
        let local = Caller {
            local: true,
            ..Caller::default()
        };
        assert_eq!(slot.finish(), Finish::Delivered(local));
        assert_eq!(
            slot.phase.load(Ordering::Relaxed),
            DONE,
            "no caller bit left"
        );
        assert_eq!(slot.orphan(), Leave::Done);
        slot.release();
        assert_eq!(slot.phase(), FREE);
        // Dropped first: orphaned (the compare-exchange), and then the loop owns it.
        slot.mark_filled();
        slot.mark_admitted_here_with_local_waker(true);
        assert_eq!(slot.orphan(), Leave::Orphaned);
        assert_eq!(slot.finish(), Finish::Orphaned);
        // Abandoned at shutdown while the caller waits: the caller is told.
        let slot = Slot::new(());
        slot.mark_filled();
        slot.mark_admitted_here_with_local_waker(true);
        assert_eq!(slot.abandon(), Some(local));
        assert_eq!(
            slot.finish(),
            Finish::Orphaned,
            "an abandoned request is not finished"
        );
    }

    #[test]
    fn release_bumps_generation_and_parked_bit_is_reported() {
        // Stale cancel CQEs are recognised by generation; a parked waiter must be woken.
        let slot = Slot::new(());
        slot.mark_filled();
        slot.mark_queued(false);
        slot.phase.fetch_or(PARKED, Ordering::Relaxed);
        assert!(slot.admit());
        assert_eq!(slot.phase(), ACTIVE);
        assert_eq!(
            slot.finish(),
            Finish::Delivered(Caller {
                parked: true,
                ..Caller::default()
            })
        );
        slot.release();
        assert_eq!(slot.generation(), 1);
        assert_eq!(slot.phase(), FREE);
    }
}
