//! [`Storage`]: every byte the loop will ever use, sized by three const parameters and built by a
//! `const fn`, plus the claim that lets one loop at a time use it.
//!
//! # Lifetime word
//!
//! ```text
//! life: AtomicU64 = [ LOOP:1 | CLOSED:1 | INTENT:1 | SHUTDOWN:1 | unused | submitting:24 | handles:32 ]
//! ```
//! * `handles`: live `Handle` clones. The loop shuts down when it reaches 0; the last one closes
//!   the submission ring (`SubmitQueue::close_for`).
//! * `submitting`: lane producers between "may I submit?" and "my index is in the lane". The loop
//!   treats them as senders too, so it never starts draining while a lane push is under way, and
//!   a dead loop waits for them before sweeping the lanes. Other callers are not counted: their
//!   claim of a position in the submission ring checks that it is open in the same step, and a
//!   closing loop waits for the positions claimed before it closed (`submit_queue.rs`).
//! * `CLOSED`: the loop is gone (or going) for good; nothing new may be submitted.
//! * `SHUTDOWN`: a handle asked for the drain (`Handle::shutdown`).
//! * `LOOP`: an `EventLoop` value exists for the current claim.
//! * `INTENT`: while lanes are registered, the loop may be asleep in the kernel; the first lane
//!   producer whose release after its push sees it clears it and writes the eventfd (the wake
//!   protocol, `handoff/wake.rs`, whose main word is the submission ring's tail).
//!
//! The claim is released (and the storage can be claimed again) by whichever read-modify-write
//! leaves `handles == 0`, `submitting == 0` and `LOOP` clear.

use std::sync::Arc;
use std::task::Waker;

use crate::error::Error;
use crate::event_loop::request::Request;
use crate::event_loop::ring::EventFd;
use crate::event_loop::table::Table;
use crate::handoff::free_list::FreeList;
use crate::handoff::lane::Lane;
use crate::handoff::loop_local::LoopLocal;
use crate::handoff::slot::{Caller, Slot};
use crate::handoff::submit_queue::SubmitQueue;
use crate::handoff::wait_list::WaitList;
use crate::handoff::wake;
use crate::loom::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering, UnsafeCell};
use crate::metrics::Counters;
use crate::ring_features::LiveFeatures;
use crate::vectored::VectorCell;

const HANDLE: u64 = 1;
const HANDLES: u64 = 0xffff_ffff;
const SUBMIT: u64 = 1 << 32;
const SUBMITTING: u64 = 0xff_ffff << 32;
/// `Handle::shutdown` was called: the loop drains as if no handle were left, and no request is
/// taken from then on.
const SHUTDOWN: u64 = 1 << 60;
const CLOSED: u64 = 1 << 62;
const LOOP: u64 = 1 << 63;

/// All memory the loop will ever use, sized at compile time.
///
/// * `SLOTS`: logical requests that may be outstanding at once (queued + in flight). The
///   submission ring holds slot indices, so it can never overflow.
/// * `RING`: requests in flight in the kernel at once (SQ entries; CQ = 2 x RING). `RING <= SLOTS`.
/// * `WHEEL`: slots of the timeout wheel; the horizon is `(WHEEL - 1) * tick`.
///
/// All three are powers of two; anything else fails to compile. `Storage::new()` is a `const fn`,
/// so the storage can live in a `static` and the loop then never touches the heap at all:
///
/// ```
/// use static_uring::{Config, Storage};
/// static STORAGE: Storage<64, 32, 1024> = Storage::new();
/// let (handle, event_loop) = static_uring::with_storage(&STORAGE, Config::default()).unwrap();
/// // A storage serves one loop at a time: a second claim is an error, not UB.
/// assert!(static_uring::with_storage(&STORAGE, Config::default()).is_err());
/// let thread = std::thread::spawn(move || event_loop.run());
/// handle.nop().wait().unwrap();
/// drop(handle);
/// thread.join().unwrap().unwrap();
/// ```
/// See `memory-budget.md` for its size as a function of the three parameters.
#[repr(C)]
pub struct Storage<const SLOTS: usize, const RING: usize, const WHEEL: usize> {
    // `repr(C)` fixes this order, which keeps words written by different threads on different
    // cache lines: the slots; then what submitters write (free list, wait list, life word) and
    // read on every call (with the claim's epoch and flags); then the submission ring, whose
    // tail word (with the wake intent) submitters write first and whose head the loop writes last;
    // then what only the loop writes (counters, loop state), last, so nothing a caller reads
    // follows it.
    pub(crate) slots: [Slot<Request>; SLOTS],
    /// Per slot, room for a vectored request's buffers (see `vectored.rs`).
    pub(crate) vectors: [VectorCell; SLOTS],
    pub(crate) free: FreeList<SLOTS>,
    pub(crate) waiters: WaitList,
    life: AtomicU64,
    /// `.wait()` spin: the claim's `idle_spin` (high 32 bits) and the adaptive budget (low),
    /// in nanoseconds.
    wait_spin_ns: AtomicU64,
    /// The eventfd, created at the first claim and kept open for the storage's lifetime, so a
    /// late `ring` can never hit a recycled descriptor number. -1 before.
    eventfd: AtomicI32,
    /// Bumped at every claim; operations created under an older claim cannot submit.
    epoch: AtomicU32,
    claimed: AtomicBool,
    initialized: AtomicBool,
    /// `Config::cancel_on_drop` of the current claim.
    cancel_on_drop: AtomicBool,
    /// A caller dropped an in-flight request to be cancelled (cancel on drop): the loop scans.
    dropped: AtomicBool,
    /// Some bit of `dropped_timers` is set.
    timer_dropped: AtomicBool,
    pub(crate) queue: SubmitQueue<SLOTS>,
    pub(crate) metrics: Counters,
    /// The optional ring setup features the current loop uses (`ring_features.rs`).
    pub(crate) features: LiveFeatures,
    /// The loop thread's private free stack and queue (`loop_local.rs`).
    pub(crate) local: LoopLocal<SLOTS>,
    /// Timers whose callers left, a bit per slot (slot `i` is bit `i % 64` of word `i / 64`;
    /// only the first `SLOTS.div_ceil(64)` words are used, a stable const generic cannot size
    /// the array by them): the loop retires them at its next pass, not at their end.
    dropped_timers: [AtomicU64; SLOTS],
    /// Last: what the loop writes on every operation must not share a cache line with what
    /// callers read on every call (`epoch` above).
    loop_state: UnsafeCell<Table<SLOTS, RING, WHEEL>>,
}

// SAFETY: shared fields are atomics or have their own protocol (slots: the phase machine;
// `loop_state`: only the loop thread of the current claim, which the `claimed` flag makes unique;
// `local`: only the thread serving the current claim, see `loop_local.rs`).
unsafe impl<const S: usize, const R: usize, const W: usize> Sync for Storage<S, R, W> {}
// SAFETY: as above.
unsafe impl<const S: usize, const R: usize, const W: usize> Send for Storage<S, R, W> {}

impl<const SLOTS: usize, const RING: usize, const WHEEL: usize> Storage<SLOTS, RING, WHEEL> {
    /// Rejects bad sizes at compile time (evaluated when `new` is instantiated).
    const VALID: () = {
        assert!(
            SLOTS.is_power_of_two(),
            "SLOTS must be a non-zero power of two"
        );
        assert!(
            RING.is_power_of_two(),
            "RING must be a non-zero power of two"
        );
        assert!(
            WHEEL.is_power_of_two(),
            "WHEEL must be a non-zero power of two"
        );
        assert!(WHEEL >= 2, "WHEEL must be at least 2");
        assert!(RING <= SLOTS, "RING must not exceed SLOTS");
        assert!(SLOTS <= 1 << 24, "SLOTS must be at most 2^24");
        assert!(
            RING <= 32768,
            "RING must be at most 32768 (the kernel's SQ limit)"
        );
    };

    crate::loom::maybe_const_fn! {
        /// The storage, with nothing allocated: usable in a `static`.
        pub fn new() -> Self {
            #[allow(clippy::let_unit_value)]
            let () = Self::VALID;
            Storage {
                slots: crate::loom::const_array!(Slot::new(Request::EMPTY); SLOTS),
                vectors: [const { VectorCell::new() }; SLOTS],
                free: FreeList::new(),
                queue: SubmitQueue::new(),
                waiters: WaitList::new(),
                metrics: Counters::new(),
                features: LiveFeatures::new(),
                local: LoopLocal::new(),
                eventfd: AtomicI32::new(-1),
                life: AtomicU64::new(0),
                epoch: AtomicU32::new(0),
                claimed: AtomicBool::new(false),
                initialized: AtomicBool::new(false),
                wait_spin_ns: AtomicU64::new(0),
                cancel_on_drop: AtomicBool::new(false),
                dropped: AtomicBool::new(false),
                timer_dropped: AtomicBool::new(false),
                dropped_timers: crate::loom::const_array!(AtomicU64::new(0); SLOTS),
                loop_state: UnsafeCell::new(Table::new()),
            }
        }
    }

    /// A heap copy built in place (large storages would overflow the stack if built there first).
    pub(crate) fn new_shared() -> Arc<Self> {
        let mut arc = Arc::<Self>::new_uninit();
        let ptr = Arc::get_mut(&mut arc)
            .expect("fresh Arc is unique")
            .as_mut_ptr();
        // SAFETY: `ptr` is valid for writes of `Self` and uniquely ours; `init_at` writes every
        // field before `assume_init`.
        unsafe {
            Self::init_at(ptr);
            arc.assume_init()
        }
    }

    /// Writes `Storage::new()` into `ptr` field by field, slot by slot.
    ///
    /// # Safety
    /// `ptr` is valid for writes and properly aligned.
    unsafe fn init_at(ptr: *mut Self) {
        #[allow(clippy::let_unit_value)]
        let () = Self::VALID;
        // SAFETY: every write targets a field of the allocation behind `ptr` (contract); the
        // slot and cell arrays are written element by element, so no large temporary is built.
        unsafe {
            let slots = std::ptr::addr_of_mut!((*ptr).slots).cast::<Slot<Request>>();
            for i in 0..SLOTS {
                slots.add(i).write(Slot::new(Request::EMPTY));
            }
            let vectors = std::ptr::addr_of_mut!((*ptr).vectors).cast::<VectorCell>();
            for i in 0..SLOTS {
                vectors.add(i).write(VectorCell::new());
            }
            std::ptr::addr_of_mut!((*ptr).free).write(FreeList::new());
            SubmitQueue::init_at(std::ptr::addr_of_mut!((*ptr).queue));
            std::ptr::addr_of_mut!((*ptr).waiters).write(WaitList::new());
            std::ptr::addr_of_mut!((*ptr).metrics).write(Counters::new());
            std::ptr::addr_of_mut!((*ptr).features).write(LiveFeatures::new());
            LoopLocal::init_at(std::ptr::addr_of_mut!((*ptr).local));
            std::ptr::addr_of_mut!((*ptr).eventfd).write(AtomicI32::new(-1));
            std::ptr::addr_of_mut!((*ptr).life).write(AtomicU64::new(0));
            std::ptr::addr_of_mut!((*ptr).epoch).write(AtomicU32::new(0));
            std::ptr::addr_of_mut!((*ptr).claimed).write(AtomicBool::new(false));
            std::ptr::addr_of_mut!((*ptr).initialized).write(AtomicBool::new(false));
            std::ptr::addr_of_mut!((*ptr).cancel_on_drop).write(AtomicBool::new(false));
            std::ptr::addr_of_mut!((*ptr).dropped).write(AtomicBool::new(false));
            std::ptr::addr_of_mut!((*ptr).timer_dropped).write(AtomicBool::new(false));
            let bits = std::ptr::addr_of_mut!((*ptr).dropped_timers).cast::<AtomicU64>();
            for i in 0..SLOTS {
                bits.add(i).write(AtomicU64::new(0));
            }
            std::ptr::addr_of_mut!((*ptr).wait_spin_ns).write(AtomicU64::new(0));
            crate::loom::init_cell_at(std::ptr::addr_of_mut!((*ptr).loop_state), |table| {
                // SAFETY: `table` is valid for writes of the table (`init_cell_at`).
                Table::init_at(table)
            });
        }
    }

    /// Takes the storage for one loop: resets the ring, wheel and counters and opens the life
    /// word with one handle. Fails if another loop holds it.
    pub(crate) fn claim(&self) -> Result<EventFd, Error> {
        // Acquire: pairs with the Release that gave the claim back, so the previous loop's last
        // writes to the storage happen before our resets.
        if self
            .claimed
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(Error::InUse);
        }
        if !self.initialized.load(Ordering::Relaxed) {
            let fd = match EventFd::new() {
                Ok(fd) => fd,
                Err(e) => {
                    // Release: give the claim back untouched (pairs with the next `claim`).
                    self.claimed.store(false, Ordering::Release);
                    return Err(Error::from_io(&e));
                }
            };
            self.eventfd.store(fd.raw(), Ordering::Relaxed);
            self.free.fill();
            self.initialized.store(true, Ordering::Relaxed);
        }
        self.metrics.reset();
        #[cfg(feature = "fault-injection")]
        crate::fault::clear(self.fault_key());
        // SAFETY: we hold the claim and no loop exists yet, so nobody else touches loop state.
        let state = unsafe { &mut *crate::loom::cell_ptr(&self.loop_state) };
        state.reset();
        // A message header that a parked recv_from left with the kernel stays out of use.
        for slot in self.slots.iter().filter(|slot| slot.is_abandoned()) {
            // SAFETY: an abandoned slot belongs to nobody and no thread touches its request; the
            // kernel may write its buffer and header, never the request itself.
            if let Some(msg) = unsafe { slot.with_request(|r| r.held_msg()) } {
                state.free_msgs.retain(|&free| free != msg);
            }
        }
        // Relaxed: only the claimant writes it; handles read it after acquiring the life word
        // (the Release below).
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        // Opened for the new claim's callers only (a stale caller's claim fails on the epoch).
        self.queue.reset(epoch);
        // Release: publishes the resets above to every thread that acquires the life word.
        self.life.store(LOOP | HANDLE, Ordering::Release);
        Ok(EventFd::from_raw(self.eventfd.load(Ordering::Relaxed)))
    }

    /// This storage's key in the fault-injection table (its address).
    pub(crate) fn fault_key(&self) -> usize {
        self.key()
    }

    /// This storage's identity: its address (lanes are bound to it).
    pub(crate) fn key(&self) -> usize {
        self as *const Self as usize
    }

    /// The private hand-off (`loop_local.rs`), if the calling thread may use it: it runs this
    /// storage's loop, which is serving.
    #[inline]
    pub(crate) fn loop_here(&self) -> Option<&LoopLocal<SLOTS>> {
        self.loop_here_if(crate::event_loop::local::serves_here(self.key()))
    }

    /// [`loop_here`](Self::loop_here) for a caller that knows whether its thread serves this
    /// storage (`serving`, from `serves_here`).
    #[inline]
    pub(crate) fn loop_here_if(&self, serving: bool) -> Option<&LoopLocal<SLOTS>> {
        // The thread's serving key first: only the loop thread may read `active`.
        (serving && self.local.is_active()).then_some(&self.local)
    }

    /// A free slot for a caller while nobody waits for one (a newcomer never overtakes a
    /// waiter): the loop thread's private stack first (`here`), else the shared list, whose pop
    /// checks for waiters in the same look.
    #[inline]
    pub(crate) fn pop_free(&self, here: Option<&LoopLocal<SLOTS>>) -> Option<u32> {
        match here {
            Some(_) if self.free.has_waiters() => None,
            Some(local) => local.pop_free().or_else(|| self.free.pop_unwaited()),
            None => self.free.pop_unwaited(),
        }
    }

    /// Hands the loop thread's private free slots back to the shared list and serves the
    /// waiters. The loop calls it at the end of every pass (before it can sleep). Loop thread.
    #[inline]
    pub(crate) fn flush_local_free(&self) {
        if self.local.has_free() {
            let panics = self.local.hand_back(&self.free, &self.waiters);
            self.metrics.count_panics(panics);
        }
    }

    /// The loop-private table. Dereferencing it is reserved to the loop of the current claim,
    /// which is unique while the claim is held.
    pub(crate) fn loop_table(&self) -> std::ptr::NonNull<Table<SLOTS, RING, WHEEL>> {
        // SAFETY (non-null): the pointer to a field of `self` is never null.
        std::ptr::NonNull::new(crate::loom::cell_ptr(&self.loop_state))
            .expect("field pointer is non-null")
    }

    /// How long `.wait()` polls before parking now (the adaptive budget, see `spin.rs`, at
    /// most the claim's `idle_spin`), and whether it is the full `idle_spin`.
    pub(crate) fn wait_spin_state(&self) -> (std::time::Duration, bool) {
        // Relaxed: a tuning hint; no memory is published through it.
        let packed = self.wait_spin_ns.load(Ordering::Relaxed);
        let (max, budget) = (packed >> 32, packed & u64::from(u32::MAX));
        (std::time::Duration::from_nanos(budget), budget == max)
    }

    /// Adapts the `.wait()` budget after a wait whose `spin` ended before the result came (a
    /// miss: the caller parked). Relaxed load and store: racing waiters may lose each other's
    /// updates, which only makes the heuristic a little slower. Out of line, as `Slot::park`:
    /// part of the parking path, which `scripts/profile` leaves out of a caller's count.
    #[inline(never)]
    pub(crate) fn adapt_wait_spin(&self, spin: &crate::spin::Spin) {
        let (waited, preempted) = (spin.elapsed(), spin.preempted());
        self.update_wait_spin(|budget, max| crate::spin::adapt(budget, max, waited, preempted));
    }

    /// Grows the `.wait()` budget after a wait that ended while it spun (`spin::grow`).
    pub(crate) fn grow_wait_spin(&self) {
        self.update_wait_spin(crate::spin::grow);
    }

    /// Replaces the `.wait()` budget with `next(budget, max)` (as `adapt_wait_spin` says).
    #[inline]
    fn update_wait_spin(&self, next: impl FnOnce(u64, u64) -> u64) {
        let packed = self.wait_spin_ns.load(Ordering::Relaxed);
        let (max, budget) = (packed >> 32, packed & u64::from(u32::MAX));
        let next = next(budget, max);
        if next != budget {
            self.wait_spin_ns.store(max << 32 | next, Ordering::Relaxed);
        }
    }

    /// Sets cancel on drop for this claim.
    pub(crate) fn set_cancel_on_drop(&self, on: bool) {
        self.cancel_on_drop.store(on, Ordering::Relaxed);
        self.dropped.store(false, Ordering::Relaxed);
        self.timer_dropped.store(false, Ordering::Relaxed);
        for word in &self.dropped_timers[..SLOTS.div_ceil(64)] {
            word.store(0, Ordering::Relaxed);
        }
    }

    /// Whether dropped in-flight requests are cancelled (the claim's config). Relaxed: set before
    /// the claim's handles exist, so it reaches their threads with the handles themselves.
    pub(crate) fn cancels_dropped(&self) -> bool {
        self.cancel_on_drop.load(Ordering::Relaxed)
    }

    /// A caller dropped an in-flight request to cancel: tells the loop and rings it. Always:
    /// the loop may be waiting in the kernel without the sleep intent (its table full, or
    /// draining), and a drop is rare enough for one eventfd write.
    pub(crate) fn note_dropped(&self) {
        // Release: pairs with the loop's Acquire in `take_dropped`/`has_dropped`, so a loop that
        // sees the flag also sees the slot's ORPHANED phase written before it.
        self.dropped.store(true, Ordering::Release);
        self.eventfd().ring();
    }

    /// Loop side: whether a drop was noted since the last call.
    pub(crate) fn take_dropped(&self) -> bool {
        // The Relaxed load keeps the common case (nothing dropped) free of a read-modify-write;
        // the swap's Acquire is what orders the scan after the callers' orphan transitions.
        self.dropped.load(Ordering::Relaxed) && self.dropped.swap(false, Ordering::Acquire)
    }

    /// Loop side, at the start of a pass: whether a drop may be pending (a Relaxed look, as
    /// `take_dropped`'s first; the pass that acts on it takes it with its Acquire).
    #[inline]
    pub(crate) fn may_have_dropped(&self) -> bool {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Loop side, before sleeping: whether a drop is pending (not consumed).
    pub(crate) fn has_dropped(&self) -> bool {
        self.dropped.load(Ordering::Acquire)
    }

    /// The caller of timer `index` left it (orphaned): the loop retires it at its next pass.
    /// Off the loop thread the loop may be asleep: a release of the tail word (one
    /// read-modify-write, `wake::release`) writes the eventfd when its sleep intent is set.
    pub(crate) fn note_dropped_timer(&self, index: u32, serving: bool) {
        let bit = 1u64 << (index % 64);
        // Release (both): a loop that sees the bit also sees the slot's ORPHANED phase.
        self.dropped_timers[index as usize / 64].fetch_or(bit, Ordering::Release);
        self.timer_dropped.store(true, Ordering::Release);
        if !serving {
            let (_, ring) = wake::release(self.queue.word(), 0);
            if ring {
                self.eventfd().ring();
            }
        }
    }

    /// Loop side: hands each timer noted dropped since the last call to `retire`.
    pub(crate) fn take_dropped_timers(&self, mut retire: impl FnMut(u32)) {
        // As `take_dropped`: no read-modify-write while nothing was dropped.
        if !(self.timer_dropped.load(Ordering::Relaxed)
            && self.timer_dropped.swap(false, Ordering::Acquire))
        {
            return;
        }
        for (w, word) in self.dropped_timers[..SLOTS.div_ceil(64)].iter().enumerate() {
            if word.load(Ordering::Relaxed) == 0 {
                continue;
            }
            // Acquire: pairs with the callers' Release.
            let mut bits = word.swap(0, Ordering::Acquire);
            while bits != 0 {
                retire((w * 64) as u32 + bits.trailing_zeros());
                bits &= bits - 1;
            }
        }
    }

    /// Loop side, before sleeping: whether a dropped timer waits to be retired.
    pub(crate) fn has_dropped_timers(&self) -> bool {
        self.timer_dropped.load(Ordering::Acquire)
    }

    /// Loop side, at each pass: whether `take_dropped_timers` may find a timer (Relaxed, as its
    /// own first look: a flag set meanwhile is seen at the next pass, which the setter's wake
    /// brings).
    #[inline]
    pub(crate) fn may_have_dropped_timers(&self) -> bool {
        self.timer_dropped.load(Ordering::Relaxed)
    }

    /// Sets the claim's `.wait()` spin: at most `spin` (clamped to `u32::MAX` ns, 4.3 s), and
    /// that much to begin with.
    pub(crate) fn set_wait_spin(&self, spin: std::time::Duration) {
        let ns = spin.as_nanos().min(u128::from(u32::MAX)) as u64;
        self.wait_spin_ns.store(ns << 32 | ns, Ordering::Relaxed);
    }

    /// The current claim's epoch.
    pub(crate) fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// The eventfd of the current claim's loop.
    pub(crate) fn eventfd(&self) -> EventFd {
        EventFd::from_raw(self.eventfd.load(Ordering::Relaxed))
    }

    /// True when a caller of claim `epoch` can no longer submit (as the life word says; the
    /// submission ring's claim is the authoritative check for a request).
    pub(crate) fn is_closed(&self, epoch: u32) -> bool {
        // Acquire: a caller that sees the claim open also sees the claim's resets.
        let life = self.life.load(Ordering::Acquire);
        life & (CLOSED | SHUTDOWN) != 0 || life & HANDLES == 0 || self.epoch() != epoch
    }

    /// Whether the loop should stop serving and drain: no sender is left (no live handle, no
    /// lane producer mid-submit), or a handle asked for it (`Handle::shutdown`). Positions
    /// claimed in the submission ring before it closed are drained (`queue.len()`).
    pub(crate) fn serving_over(&self) -> bool {
        // Acquire: pairs with the Release of the last release of a handle or a submit, so every
        // push made before it is visible to the loop's check of the ring that follows.
        let life = self.life.load(Ordering::Acquire);
        life & (HANDLES | SUBMITTING) == 0 || life & SHUTDOWN != 0
    }

    /// `Handle::shutdown` of claim `epoch`: no request is taken from now on, callers waiting for
    /// a slot get `Closed`, and the loop is woken to start its drain. Idempotent.
    pub(crate) fn shutdown(&self, epoch: u32) {
        // AcqRel: after this no `begin_submit` succeeds (its CAS sees the bit), as for CLOSED.
        let before = self.life.fetch_or(SHUTDOWN, Ordering::AcqRel);
        // A handle keeps its claim alive, so `epoch` is the current one; only the first call
        // does the rest.
        if before & SHUTDOWN != 0 || self.epoch() != epoch {
            return;
        }
        self.queue.close_for(epoch);
        let panics = self.waiters.close_all(epoch);
        self.metrics.count_panics(panics);
        // The wake CQE makes the loop read `serving_over` (a loop that has not started yet reads
        // it in its first pass).
        self.eventfd().ring();
    }

    /// Registers one more `Handle` (the caller holds one, so the loop is open).
    pub(crate) fn add_handle(&self) {
        self.life.fetch_add(HANDLE, Ordering::Relaxed);
    }

    /// A `Handle` of claim `epoch` was dropped.
    pub(crate) fn drop_handle(&self, epoch: u32) {
        // AcqRel: Release publishes this thread's pushes to the loop's Acquire in `serving_over`.
        let after = self.life.fetch_sub(HANDLE, Ordering::AcqRel) - HANDLE;
        if after & HANDLES == 0 {
            // The last handle: no request is taken from now on (the loop may have closed and
            // a new claim begun meanwhile: only this claim's ring closes).
            self.queue.close_for(epoch);
        }
        self.after_release(after, epoch);
    }

    /// A lane's producer asks to submit under claim `epoch`; false if the loop is closed for it.
    /// (Other callers claim a position in the submission ring instead, `SubmitQueue::claim`.)
    #[inline]
    pub(crate) fn begin_submit(&self, epoch: u32) -> bool {
        let mut life = self.life.load(Ordering::Relaxed);
        loop {
            if life & (CLOSED | SHUTDOWN) != 0 || life & HANDLES == 0 {
                return false;
            }
            // Acquire: sees the claim's resets (and, below, its epoch).
            match self.life.compare_exchange_weak(
                life,
                life + SUBMIT,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(current) => life = current,
            }
        }
        // While we are counted the claim cannot change, so the epoch is stable now.
        if self.epoch() != epoch {
            self.end_submit(self.epoch());
            return false;
        }
        true
    }

    /// The index is in the lane (or the attempt was abandoned); `epoch` is the claim's. Wakes
    /// the loop if it declared the intent to sleep (`handoff/wake.rs`): the wake rides on this
    /// release, one read-modify-write for both.
    #[inline]
    pub(crate) fn end_submit(&self, epoch: u32) {
        let (after, ring) = wake::release(&self.life, SUBMIT);
        if ring {
            self.eventfd().ring();
        }
        self.after_release(after, epoch);
    }

    /// The life word, which lanes release (the loop arms it too while lanes are registered).
    pub(crate) fn life_word(&self) -> &AtomicU64 {
        &self.life
    }

    /// Shared tail of the releases: the last sender wakes the loop and closes the slot waiters
    /// of its claim (`epoch`: this may run late, after a new claim began); the last user of all
    /// releases the claim.
    fn after_release(&self, after: u64, epoch: u32) {
        if after & (HANDLES | SUBMITTING) != 0 {
            return;
        }
        self.eventfd().ring();
        let panics = self.waiters.close_all(epoch);
        self.metrics.count_panics(panics);
        if after & LOOP == 0 {
            // Release: pairs with the Acquire of the next `claim`.
            self.claimed.store(false, Ordering::Release);
        }
    }

    /// The loop of this claim is finished: closes submission, waits for the positions claimed
    /// before that and for lane producers mid-submit, and hands every request still in the ring
    /// to `sweep`. Then releases the claim if no handle is
    /// left (else the last handle does).
    pub(crate) fn close_loop(&self, lanes: &[&Lane<SLOTS>], mut sweep: impl FnMut(u32)) {
        // The loop thread's private paths end (after a panic too): its free slots go back to
        // the shared list; what it queued is swept below with the shared ring.
        self.local.deactivate();
        // Waiters, if any, are closed below: no one to serve.
        while let Some(index) = self.local.pop_free() {
            self.free.push(index);
        }

        // AcqRel: after this no `begin_submit` succeeds (its CAS sees CLOSED), and no claim of a
        // position in the ring (its compare-exchange sees the ring's CLOSED).
        self.life.fetch_or(CLOSED, Ordering::AcqRel);
        self.queue.close();
        let panics = self.waiters.close_all(self.epoch());
        self.metrics.count_panics(panics);
        // Lane producers counted in `submitting` finish their push in a few instructions.
        // Acquire: pairs with their `end_submit` Release, so their pushes are visible below.
        while self.life.load(Ordering::Acquire) & SUBMITTING != 0 {
            std::thread::yield_now();
        }
        // Every position below the final tail was claimed while open: its producer publishes
        // it in a few instructions (or when it is scheduled again).
        while self.queue.len() != 0 {
            match self.queue.pop() {
                Some(index) => sweep(index),
                None => std::thread::yield_now(),
            }
        }
        // Queued on the loop thread, which is this one (or none ever was): nothing adds more.
        while let Some(index) = self.local.pop() {
            sweep(index);
        }
        // A lane's producer finished its push inside `submitting`: what it pushed is there.
        for lane in lanes {
            while let Some(index) = lane.pop() {
                sweep(index);
            }
        }
        // Wakers the loop thread's callers left in its private cells (an `Op` that moved to
        // another thread): dropped, contained, once the sweep has woken the current ones.
        for waker in self.local.take_wakers() {
            self.run_user(move || drop(waker));
        }
        // AcqRel: orders the sweep before a later claimer (through the claim flag below or the
        // last handle's release) and sees the handles' final count.
        let after = self.life.fetch_and(!LOOP, Ordering::AcqRel) & !LOOP;
        if after & (HANDLES | SUBMITTING) == 0 {
            // Release: pairs with the Acquire of the next `claim`.
            self.claimed.store(false, Ordering::Release);
        }
    }

    /// Frees slot `index` (owned by the caller) and hands free slots to waiters.
    ///
    /// The slot is released and the free list and waiters are updated first; the user code this
    /// involves (waiters' wakers, the request's descriptor owner's `Drop`) runs after, contained.
    /// The slot's waker cell must be empty: an owner that registered a waker takes it back first.
    pub(crate) fn free_slot(&self, index: u32) {
        self.free_slot_to(index, None);
    }

    /// [`free_slot`](Self::free_slot), by a caller that may use the loop thread's private
    /// stack (`here`, from [`loop_here`](Self::loop_here)): the slot stays there while nobody
    /// waits for one (the loop hands it back at the end of the pass).
    pub(crate) fn free_slot_to(&self, index: u32, here: Option<&LoopLocal<SLOTS>>) {
        let slot = &self.slots[index as usize];
        // SAFETY: the caller owns the slot (DONE taken, ORPHANED retired or FILLED abandoned).
        // A request that owns nothing stays where it is (the common case after the caller took
        // the result of a request without a descriptor): the next claim writes over it without
        // dropping it, so no copy out and no drop glue.
        // A vectored request's buffers leave the slot's cell before the slot does: its next
        // owner may fill the cell as soon as the slot is free, before the request is dropped.
        // The descriptor alone (a finished request whose result was taken holds nothing else)
        // is taken out by itself: no 128-byte copy of the request.
        let (fd, request) = unsafe {
            slot.with_request(|request| {
                let fd = request.fd.take();
                let rest = (!request.is_empty()).then(|| {
                    request.work.drop_vectors();
                    std::mem::replace(request, Request::EMPTY)
                });
                (fd, rest)
            })
        };
        self.free_empty(index, here);
        if fd.is_some() || request.is_some() {
            self.run_user(move || drop((fd, request)));
        }
    }

    /// [`free_slot_to`](Self::free_slot_to) for a slot whose request owns nothing (its owner
    /// took everything out): released, then kept on the loop thread's private stack (`here`)
    /// while nobody waits for a slot, else pushed to the shared list, whose waiters are served.
    #[inline]
    pub(crate) fn free_empty(&self, index: u32, here: Option<&LoopLocal<SLOTS>>) {
        self.slots[index as usize].release();
        let panics = match here {
            Some(local) => local.free_to(index, &self.free, &self.waiters),
            None => self.waiters.free(&self.free, index),
        };
        self.metrics.count_panics(panics);
    }

    /// Runs user code (a waker, the `Drop` of what a request held) once the crate's state is
    /// final: a panic is caught and counted in `user_panics`.
    pub(crate) fn run_user(&self, f: impl FnOnce()) {
        if crate::contain::run(f) {
            self.metrics.count_panics(1);
        }
    }

    /// Tells the caller of a request that just left `QUEUED`/`ACTIVE` (its state is final):
    /// unparks a `.wait()` thread, then wakes the registered waker, contained.
    #[inline(always)]
    pub(crate) fn wake_caller(&self, index: u32, caller: Caller) {
        let slot = &self.slots[index as usize];
        if caller.parked {
            slot.unpark();
        }
        // Loop thread: its private cell is ours to read. A waker there without the `local` bit
        // is stale (left by a caller that moved to another thread): dropped.
        let mut private = self.local.take_waker(index);
        let current = match (caller.local, caller.blocking) {
            (true, _) => private.take(),
            // A `.wait()` caller: no waker anywhere (a loop-thread caller cannot block).
            (false, true) => None,
            (false, false) => slot.waker.take(),
        };
        if let Some(waker) = current {
            self.wake(waker);
        }
        if let Some(stale) = private {
            self.run_user(move || drop(stale));
        }
    }

    /// Wakes the caller of pinned request `index` (`Slot::is_pinned_active` before it
    /// finished): its waker is in the loop thread's private cell. Loop thread.
    #[inline(always)]
    pub(crate) fn wake_pinned(&self, index: u32) {
        self.wake_taken(self.local.take_waker(index));
    }

    /// Wakes the waker taken from a cell, if there was one.
    #[inline(always)]
    pub(crate) fn wake_taken(&self, waker: Option<Waker>) {
        if let Some(waker) = waker {
            self.wake(waker);
        }
    }

    /// Wakes `waker`, a caller's, contained.
    #[inline(always)]
    fn wake(&self, waker: Waker) {
        match crate::task_pool::TaskRef::of(&waker) {
            // A pool task: its ready bit set here (crate code, one read-modify-write); when the
            // pool was idle its runner is woken, in place if it is this thread's `block_on`
            // (crate code), else through its registered waker (user code, contained). The
            // waker owns nothing (its drop does nothing), so it is forgotten, not dropped.
            Some(task) => {
                std::mem::forget(waker);
                if task.set_ready() && !task.wake_runner_here() {
                    self.run_user(move || task.wake_registered_runner());
                }
            }
            None => self.run_user(move || waker.wake()),
        }
    }
}

impl<const SLOTS: usize, const RING: usize, const WHEEL: usize> Default
    for Storage<SLOTS, RING, WHEEL>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<const SLOTS: usize, const RING: usize, const WHEEL: usize> Drop
    for Storage<SLOTS, RING, WHEEL>
{
    fn drop(&mut self) {
        for slot in &self.slots {
            if !slot.may_drop_request() {
                // The kernel may still write these buffers (ABANDONED, or ACTIVE/ORPHANED/QUEUED
                // after a loop that died without abandoning): leak them on purpose, never free
                // memory the kernel may write.
                // SAFETY: `&mut self`: no other user; abandoned slots belong to nobody.
                unsafe {
                    slot.with_request(|request| {
                        std::mem::forget(std::mem::replace(request, Request::EMPTY))
                    })
                };
            }
        }
        let fd = self.eventfd.load(Ordering::Relaxed);
        if fd >= 0 {
            EventFd::from_raw(fd).close();
        }
    }
}

/// A reference to a storage: `'static` (no heap) or shared on the heap (a counted `Arc`).
///
/// A pointer plus a flag rather than an enum, so that dereferencing it (several times per
/// request, on both threads) is a plain load, not a match.
pub(crate) struct StorageRef<const SLOTS: usize, const RING: usize, const WHEEL: usize> {
    ptr: std::ptr::NonNull<Storage<SLOTS, RING, WHEEL>>,
    /// Whether `ptr` came from `Arc::into_raw` and holds one strong count.
    heap: bool,
}

// SAFETY: a `StorageRef` is a shared reference to a `Storage` (which is `Sync`: all its shared
// state is atomics or loop-private by protocol), or an `Arc` of one; both are `Send` and `Sync`.
unsafe impl<const S: usize, const R: usize, const W: usize> Send for StorageRef<S, R, W> {}
// SAFETY: as for `Send`.
unsafe impl<const S: usize, const R: usize, const W: usize> Sync for StorageRef<S, R, W> {}

impl<const S: usize, const R: usize, const W: usize> StorageRef<S, R, W> {
    /// A reference to a `'static` storage.
    pub(crate) fn from_static(storage: &'static Storage<S, R, W>) -> Self {
        StorageRef {
            ptr: std::ptr::NonNull::from(storage),
            heap: false,
        }
    }

    /// A reference owning one count of `storage`.
    pub(crate) fn from_arc(storage: Arc<Storage<S, R, W>>) -> Self {
        // SAFETY (non-null): `Arc::into_raw` never returns null.
        let ptr = std::ptr::NonNull::new(Arc::into_raw(storage).cast_mut()).expect("non-null");
        StorageRef { ptr, heap: true }
    }
}

impl<const S: usize, const R: usize, const W: usize> Clone for StorageRef<S, R, W> {
    fn clone(&self) -> Self {
        if self.heap {
            // SAFETY: `ptr` came from `Arc::into_raw` and `self` holds a count, so the
            // allocation is alive; the new count is owned by the clone.
            unsafe { Arc::increment_strong_count(self.ptr.as_ptr()) };
        }
        StorageRef {
            ptr: self.ptr,
            heap: self.heap,
        }
    }
}

impl<const S: usize, const R: usize, const W: usize> Drop for StorageRef<S, R, W> {
    fn drop(&mut self) {
        if self.heap {
            // SAFETY: `ptr` came from `Arc::into_raw` and `self` owns one count, given up here.
            unsafe { Arc::decrement_strong_count(self.ptr.as_ptr()) };
        }
    }
}

impl<const S: usize, const R: usize, const W: usize> std::ops::Deref for StorageRef<S, R, W> {
    type Target = Storage<S, R, W>;
    fn deref(&self) -> &Self::Target {
        // SAFETY: the storage is `'static`, or `self` holds a count of its `Arc`: alive as long
        // as `self` is.
        unsafe { self.ptr.as_ref() }
    }
}
