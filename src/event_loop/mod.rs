//! [`EventLoop`]: the one thread that owns the ring.
//!
//! One iteration while handles are alive (`serve`), in this order, which decides the races
//! between completions and deadlines (docs/behaviour.md, "Race matrix"):
//!
//! 1. **reap** (`phases.rs`): drain every CQE. Wake CQEs are acknowledged; op CQEs advance their
//!    request (`request.rs`): finished requests are delivered, unfinished ones go to the ready
//!    queue (never restaged inside the same drain); cancel CQEs never decide anything.
//! 2. **expire**: if deadlines are pending, advance the wheel to now; an expired request in flight
//!    gets an AsyncCancel queued, one waiting in the ready queue times out when next staged.
//! 3. **stage**: wake-poll rearm, pending cancels, the ready queue, then fresh requests from the
//!    submission ring while fewer than `RING` are admitted and the SQ has room.
//! 4. **enter** (`ring.rs`): a full SQ is submitted without waiting; with the table full the loop
//!    waits for a completion; otherwise it spins for `idle_spin`, arms the wake intent, rechecks
//!    and sleeps in `io_uring_enter` bounded by the next deadline.
//!
//! The loop starts its **drain** (`shutdown.rs`) as soon as no handle is left, whatever is still
//! queued and whatever the capacity state: in-flight work finishes, deadlines keep firing,
//! requests still queued are admitted as table entries free up, and `shutdown_timeout` is charged
//! for waiting time only. When the budget runs out the loop **abandons** what is left: it cancels
//! what is in the kernel, collects what the kernel releases, and parks the rest; requests never
//! admitted are answered `Error::Closed`. If the loop thread unwinds (a bug, or a fault injected
//! in a test), `Drop` runs the same abandonment, so every caller is woken and no buffer the
//! kernel may write is freed.
//!
//! The loop-private [`Table`] is borrowed once, when `run` starts, and passed as `&mut` to every
//! phase.

mod batch;
mod fifo;
#[cfg(all(test, not(loom)))]
mod gap_tests;
pub(crate) mod held;
pub(crate) mod id;
pub(crate) mod local;
mod mail;
mod multishot;
mod phases;
pub(crate) mod registry;
pub(crate) mod request;
pub(crate) mod ring;
mod shutdown;
pub(crate) mod table;
pub(crate) mod wheel;
pub(crate) mod zero_copy;

use std::future::Future;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crate::buf_pool::BufPool;
use crate::config::Checked;
use crate::error::Error;
use crate::fault;
use crate::fd::Fd;
use crate::handoff::lane::Lane;
use crate::handoff::loop_local::Window;
use crate::handoff::wake::{self, decide_sleep, Decision, Sleeper, GAP_WAIT};
use crate::metrics::Counters;
use crate::ring_features::RingFeatures;
use crate::spin::Spin;
use crate::storage::StorageRef;
use ring::{EventFd, Ring};

/// Polls of `block_on`'s future after the loop closed, while it is woken (`run_local`).
const FINAL_POLLS: usize = 1024;

/// With `busy_poll`, the longest spin between two passes of the loop (which fire deadlines).
const BUSY_POLL_PASS: Duration = Duration::from_millis(1);
/// Polls of the submission ring's head before a loop that found a claimed, unpublished position
/// naps (its producer is usually publishing as the loop looks).
const NAP_POLLS: usize = 64;
use id::Cqe;
use table::Table;

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

/// An idle loop deciding whether to sleep (`decide_sleep`).
struct Idle<'a, const S: usize, const R: usize, const W: usize, L> {
    event_loop: &'a mut EventLoop<S, R, W>,
    t: &'a Table<S, R, W>,
    local: &'a L,
}

impl<const S: usize, const R: usize, const W: usize, L: local::Local> Sleeper
    for Idle<'_, S, R, W, L>
{
    fn word(&self) -> &crate::loom::AtomicU64 {
        self.event_loop.storage.queue.word()
    }

    fn lane_word(&self) -> Option<&crate::loom::AtomicU64> {
        // Lane producers release the life word (most loops register none).
        (!self.t.lanes.is_empty()).then(|| self.event_loop.storage.life_word())
    }

    fn has_work(&mut self) -> bool {
        self.event_loop.has_work(self.t) || self.local.woken()
    }

    fn claimed(&self, armed: u64) -> bool {
        self.event_loop.storage.queue.claimed_since(armed)
    }
}

/// Ends the private hand-off when serving ends (an error or a panic included): callers on the
/// loop thread take the shared paths from then on (`Storage::close_loop` gives back what it
/// still holds).
struct Private<const S: usize, const R: usize, const W: usize>(StorageRef<S, R, W>);

impl<const S: usize, const R: usize, const W: usize> Drop for Private<S, R, W> {
    fn drop(&mut self) {
        self.0.local.deactivate();
    }
}

/// Whether a lane of `t` holds a fresh request.
#[inline]
pub(crate) fn lanes_ready<const S: usize, const R: usize, const W: usize>(
    t: &Table<S, R, W>,
) -> bool {
    // Most loops register no lane: one look at the length, not an iterator.
    !t.lanes.is_empty() && t.lanes.iter().any(|lane| lane.has_ready())
}

/// The event loop. Create it with [`new`](crate::new) or [`with_storage`](crate::with_storage) and
/// call [`run`](EventLoop::run) on the thread that should own the ring.
pub struct EventLoop<const SLOTS: usize, const RING: usize, const WHEEL: usize> {
    storage: StorageRef<SLOTS, RING, WHEEL>,
    /// The loop-private table inside the storage; ours alone while the claim lasts.
    table: NonNull<Table<SLOTS, RING, WHEEL>>,
    ring: Ring,
    eventfd: EventFd,
    checked: Checked,
    /// Tick 0 of the wheel.
    origin: Instant,
    /// `origin` in nanoseconds after the deadline epoch (`request::since_epoch`), for reading
    /// request deadlines without a clock or epoch lookup.
    origin_ns: u64,
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
    /// The config's placement is applied to the thread that runs the loop (`spawn` did it).
    placed: bool,
    /// How long the next idle period spins before sleeping, in nanoseconds (adaptive, at most
    /// `idle_spin`).
    spin_budget: u64,
    /// `idle_spin` in nanoseconds: the most the budget grows to.
    spin_max: u64,
    /// Batched enters: requests callers on other threads are about to submit (`batch.rs`).
    batch: batch::Batch,
}

// SAFETY: `table` points into the storage, which the loop keeps alive through `storage`; the
// claim makes this loop its only user, whichever thread it runs on.
unsafe impl<const S: usize, const R: usize, const W: usize> Send for EventLoop<S, R, W> {}

impl<const S: usize, const R: usize, const W: usize> EventLoop<S, R, W> {
    /// Builds the loop on a claimed storage; on error the claim is given back.
    pub(crate) fn new(
        storage: StorageRef<S, R, W>,
        eventfd: EventFd,
        checked: Checked,
    ) -> Result<Self, Error> {
        let ring = match Ring::build(&checked, R as u32, storage.fault_key()) {
            Ok(ring) => ring,
            Err(e) => {
                storage.close_loop(&[], |_| {});
                storage.drop_handle(storage.epoch());
                return Err(e);
            }
        };
        storage.features.set(ring.features());
        storage.set_wait_spin(checked.config.idle_spin);
        let spin_budget = checked
            .config
            .idle_spin
            .as_nanos()
            .min(u128::from(u64::MAX)) as u64;
        storage.set_cancel_on_drop(checked.config.cancel_on_drop);
        // The deadline epoch first: every origin is at or after it.
        let _ = request::epoch();
        let origin = Instant::now();
        let io_poll = checked.config.io_poll;
        let zero_copy = zero_copy::ZeroCopy::probe(&ring);
        let mut event_loop = EventLoop {
            table: storage.loop_table(),
            storage,
            ring,
            eventfd,
            checked,
            origin,
            origin_ns: request::since_epoch(origin),
            // A polled ring cannot run the eventfd's poll: the loop reads the sender count on
            // every pass instead (`stage`).
            rearm: !io_poll,
            check_senders: true,
            closed: false,
            running: false,
            placed: false,
            spin_budget,
            spin_max: spin_budget,
            batch: batch::Batch::default(),
        };
        event_loop.table_mut().registry.zero_copy = zero_copy;
        Ok(event_loop)
    }

    /// A reader of this loop's counters that, unlike a `Handle`, does not keep the loop alive:
    /// take it before `run` to read the final counts (drain, abandonment) after `run` returns.
    pub fn metrics_reader(&self) -> MetricsReader<S, R, W> {
        MetricsReader {
            storage: self.storage.clone(),
        }
    }

    /// Which optional ring setup features this loop uses ([`RingFeatures`]): the setup flags
    /// are known now; `registered_ring` once the loop has started running on its thread.
    pub fn ring_features(&self) -> RingFeatures {
        self.storage.features.get()
    }

    /// Adds a single-producer lane to this loop (before it runs): the loop polls it beside the
    /// shared submission ring, and [`Handle::lane`](crate::Handle::lane) binds one producer to
    /// it. A lane belongs to one live loop at a time: registering a lane that another live loop
    /// holds is `Error::InUse` (it would take that loop's requests); once that loop has returned
    /// or been dropped, the lane is free for the next. Registering it twice with one loop is a
    /// no-op. Allocates (the loop's list of lanes grows); requests do not.
    ///
    /// ```
    /// use static_uring::{Config, Lane};
    ///
    /// static LANE: Lane<8> = Lane::new();
    /// let (handle, mut event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// event_loop.register_lane(&LANE).unwrap();
    /// let thread = std::thread::spawn(move || event_loop.run());
    /// let lane = handle.lane(&LANE).unwrap();
    /// lane.submit(handle.nop()).wait().unwrap();
    /// drop((lane, handle));
    /// thread.join().unwrap().unwrap();
    /// ```
    pub fn register_lane(&mut self, lane: &'static Lane<S>) -> Result<(), Error> {
        if !lane.bind(self.storage.key(), self.storage.epoch()) {
            return Err(Error::InUse);
        }
        let lanes = &mut self.table_mut().lanes;
        if !lanes.iter().any(|l| std::ptr::eq(*l, lane)) {
            lanes.push(lane);
        }
        Ok(())
    }

    /// Stages fresh request `index` of operation `O` through the loop whose window is open
    /// (`stage_fresh`); false if none is or it cannot take the request now.
    ///
    /// # Safety
    /// `window` is `LoopLocal::window()` of this loop's storage, read on the loop's thread
    /// while the window is open: the loop serving it is an `EventLoop<S, R, W>` that holds no
    /// borrow of itself or its table until the window closes, and nothing else borrows them
    /// before this call returns (it runs no user code).
    #[inline]
    pub(crate) unsafe fn stage_in_window<O: crate::op::Operation>(
        window: *mut (),
        index: u32,
    ) -> bool {
        // SAFETY: the contract.
        match unsafe { Self::in_window(window) } {
            Some((el, t)) => el.stage_fresh::<O>(t, index),
            None => false,
        }
    }

    /// The loop whose window is open, and its table; `None` when none is (`window` null).
    ///
    /// # Safety
    /// As [`stage_in_window`](Self::stage_in_window); the references are dropped before the
    /// caller runs user code.
    #[inline]
    pub(crate) unsafe fn in_window<'a>(
        window: *mut (),
    ) -> Option<(&'a mut Self, &'a mut Table<S, R, W>)> {
        if window.is_null() {
            return None;
        }
        // SAFETY: the contract: the loop and its claimed table are ours alone for this call.
        unsafe {
            let el = &mut *window.cast::<Self>();
            let t = &mut *el.table.as_ptr();
            Some((el, t))
        }
    }

    /// The oldest result queued in the stream whose request is `stream` (`RequestId::op_data`),
    /// taken from inside the poll of `block_on`'s future (the window): a `next` answered without
    /// a request of its own. `None` (touching nothing) outside the window, when the loop does
    /// not hold the stream, when it queues nothing, or when a `next` of it waits.
    ///
    /// # Safety
    /// As [`stage_in_window`](Self::stage_in_window).
    #[inline]
    pub(crate) unsafe fn stream_item_in_window(
        window: *mut (),
        stream: u64,
    ) -> Option<Result<usize, Error>> {
        // SAFETY: the contract.
        let (el, t) = unsafe { Self::in_window(window) }?;
        el.take_queued(t, stream)
    }

    /// The table, outside `run` (registration before it, `close` after it).
    pub(super) fn table_mut(&mut self) -> &mut Table<S, R, W> {
        // SAFETY: the claim makes this loop the table's only user until `close` gives it back;
        // `&mut self` outside `run` (whose borrow of the table has ended, or not begun) makes
        // this the only borrow.
        unsafe { self.table.as_mut() }
    }

    /// Whether a fresh request waits, in the loop thread's private queue, the shared ring or a
    /// lane ([`pop_fresh`] would give one).
    ///
    /// [`pop_fresh`]: Self::pop_fresh
    #[inline]
    fn fresh_ready(&self, t: &Table<S, R, W>) -> bool {
        self.storage.local.has_ready() || self.storage.queue.has_ready() || lanes_ready(t)
    }

    /// The next fresh request: from the loop thread's private queue, else the shared ring, else
    /// the lanes in turn.
    pub(crate) fn pop_fresh(&mut self, t: &mut Table<S, R, W>) -> Option<u32> {
        // The loop thread's own submissions first (`loop_local.rs`; this is that thread).
        if let Some(index) = self.storage.local.pop() {
            return Some(index);
        }
        if let Some(index) = self.storage.queue.pop() {
            self.batch.received();
            return Some(index);
        }
        let n = t.lanes.len();
        for k in 0..n {
            let i = (t.next_lane + k) % n;
            if let Some(index) = t.lanes[i].pop() {
                t.next_lane = (i + 1) % n;
                self.batch.received();
                return Some(index);
            }
        }
        None
    }

    /// Registers a descriptor with this loop's ring (a fixed file) and returns the `Fd` to use
    /// with it: this loop's SQEs then name the descriptor by its index (`IOSQE_FIXED_FILE`),
    /// which saves the kernel a file-table lookup and reference count per request. Any other
    /// loop uses the returned `Fd` as a plain descriptor.
    ///
    /// Only before the loop runs (it takes `&mut self`); the registration lasts as long as the
    /// loop, which keeps the descriptor open, so it cannot be unregistered while a request uses
    /// it. Registering allocates (the table is rebuilt with the new descriptor); requests do not.
    ///
    /// ```
    /// # use static_uring::{Config, IoBufMut};
    /// let (handle, mut event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// let file = std::fs::File::open("/proc/self/exe").unwrap();
    /// let fixed = event_loop.register_file(file).unwrap();
    /// assert_eq!(fixed.registered_index(), Some(0));
    /// let thread = std::thread::spawn(move || event_loop.run());
    /// let buf = handle.read_at(fixed, 1, IoBufMut::with_capacity(3)).limit(3).wait().unwrap();
    /// assert_eq!(&buf[..], b"ELF");
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    pub fn register_file(&mut self, fd: impl Into<Fd>) -> Result<Fd, Error> {
        let fd = fd.into();
        let registry = &self.table_mut().registry;
        let (raws, replace) = (registry.files_with(&fd), registry.has_files());
        self.ring
            .register_files(&raws, replace)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EMFILE) => {
                    Error::Config("registered files exceed RLIMIT_NOFILE (EMFILE)")
                }
                _ => Error::from_io(&e),
            })?;
        Ok(self.table_mut().registry.add_file(&fd))
    }

    /// Registers a buffer pool with this loop's ring (fixed buffers): this loop then reads and
    /// writes the pool's buffers (`read_at`, `read_some_at`, `write_at`) with `READ_FIXED` and
    /// `WRITE_FIXED`, which skip the kernel's per-request mapping of the pages. One pool per
    /// loop, before the loop runs; the pool's buffers work with every operation, on every loop,
    /// registered or not.
    ///
    /// The kernel pins the pool's memory and counts it against `RLIMIT_MEMLOCK` (unless the
    /// process has `CAP_IPC_LOCK`); a limit too low is `Error::Config` saying so.
    pub fn register_buffers<const COUNT: usize, const SIZE: usize>(
        &mut self,
        pool: &'static BufPool<COUNT, SIZE>,
    ) -> Result<(), Error> {
        if self.table_mut().registry.has_pool() {
            return Err(Error::Config(
                "a buffer pool is already registered with this loop",
            ));
        }
        let iovecs: Vec<libc::iovec> = pool.iovecs().collect();
        // SAFETY: the pool is `'static` (never freed) and its memory is only ever pool buffers.
        unsafe { self.ring.register_buffers(&iovecs) }.map_err(|e| buffer_error(&e))?;
        self.table_mut().registry.set_pool(pool.id());
        Ok(())
    }

    /// Registers a provided-buffer ring with this loop (`IORING_REGISTER_PBUF_RING`, Linux 5.19)
    /// for its `recv_multi` streams: every buffer of the ring goes to the kernel. Before the loop
    /// runs; up to 64 rings per loop.
    ///
    /// `Error::InUse` while another loop has the ring, or while a buffer of it is still held (a
    /// lease, or a stream of an earlier loop); `Error::Config` for a 65th ring; the kernel's
    /// refusal otherwise (`Error::Os(EINVAL)` on a kernel without provided-buffer rings).
    pub fn register_buf_ring<const COUNT: usize, const SIZE: usize>(
        &mut self,
        ring: &'static crate::BufRing<COUNT, SIZE>,
    ) -> Result<(), Error> {
        self.register_ring_of_buffers(ring, false).map(|_| ())
    }

    /// [`register_buf_ring`](Self::register_buf_ring), filled incrementally where the kernel
    /// can (`IOU_PBUF_RING_INC`, Linux 6.12): the kernel puts several receives into one buffer,
    /// one after the other, so a small message takes its own bytes, not a whole buffer (each
    /// lease is a piece: [`BufLease::offset`](crate::BufLease::offset) says where it starts).
    /// A `recv_multi` stream on such a ring keeps one single-shot receive armed while nothing
    /// it received waits for a `next` (the kernel's multishot could post more pieces than a
    /// bounded queue holds). Returns whether the ring is incremental: on an older kernel it is
    /// registered whole (`Ok(false)`), and everything works as with `register_buf_ring`.
    ///
    /// `Error::Config` for buffers of 16 MiB or more ([`MAX_INCREMENTAL_SIZE`]); the other
    /// errors as `register_buf_ring`.
    ///
    /// [`MAX_INCREMENTAL_SIZE`]: crate::MAX_INCREMENTAL_SIZE
    pub fn register_buf_ring_incremental<const COUNT: usize, const SIZE: usize>(
        &mut self,
        ring: &'static crate::BufRing<COUNT, SIZE>,
    ) -> Result<bool, Error> {
        if SIZE > crate::buf_ring::MAX_INCREMENTAL_SIZE {
            return Err(Error::Config(
                "an incremental BufRing's buffers are under 16 MiB (MAX_INCREMENTAL_SIZE)",
            ));
        }
        self.register_ring_of_buffers(ring, true)
    }

    /// Registers `ring`, incremental if asked and the kernel accepts it (true then).
    fn register_ring_of_buffers<const COUNT: usize, const SIZE: usize>(
        &mut self,
        ring: &'static crate::BufRing<COUNT, SIZE>,
        incremental: bool,
    ) -> Result<bool, Error> {
        /// `IOU_PBUF_RING_INC` (`struct io_uring_buf_reg`'s flags, Linux 6.12).
        const IOU_PBUF_RING_INC: u16 = 2;
        const MAX_RINGS: usize = 64;
        let group = self.table_mut().registry.rings.len();
        if group == MAX_RINGS {
            return Err(Error::Config("at most 64 buffer rings per loop"));
        }
        let wake_fd = self.storage.eventfd().raw();
        ring.claim(group as u16, wake_fd)?;
        let (addr, entries) = ring.ring_memory();
        let mut register = |flags: u16| {
            // SAFETY: the ring's entries are `'static`, page-aligned, `entries` long, and
            // written only by this loop (and, incremental, as the kernel's ABI says) from now
            // on (`claim`); its buffers are `'static` too.
            unsafe {
                self.ring
                    .register_buf_ring(addr, entries, group as u16, flags)
            }
        };
        let refused = |e: &std::io::Error| e.raw_os_error() == Some(libc::EINVAL);
        let result = match incremental {
            true => match fault::take_refused(fault::SetupFlag::IncrementalBufRing.bit()) {
                0 => register(IOU_PBUF_RING_INC),
                _ => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
            }
            .map(|()| true)
            // A kernel without incremental rings refuses the flag: registered whole instead.
            .or_else(|e| match refused(&e) {
                true => register(0).map(|()| false),
                false => Err(e),
            }),
            false => register(0).map(|()| false),
        };
        let incremental = match result {
            Ok(incremental) => incremental,
            Err(e) => {
                crate::buf_ring::Provided::release(ring);
                return Err(Error::from_io(&e));
            }
        };
        ring.open(self.storage.key(), incremental);
        let registry = &mut self.table_mut().registry;
        registry.rings.push(ring);
        // One entry per stream admitted at once, at most: no allocation while serving.
        registry.starved.reserve(R);
        Ok(incremental)
    }

    /// Runs the loop on the calling thread until every `Handle` is dropped and the drain has
    /// finished. The config's placement (`cpu`, `priority`, `lock_memory`) is applied to the
    /// calling thread first; what the process may not use is the kernel's error. Returns `Err`
    /// only then, or if the kernel failed the loop itself (callers are then woken with
    /// `Error::Abandoned` or `Error::Closed`; no memory the kernel may use is freed).
    pub fn run(mut self) -> Result<(), Error> {
        self.run_local(&mut local::Nothing)
    }

    /// `run` and `block_on`: prepare the thread, serve (polling `local` in each iteration),
    /// drain, give the claim back.
    fn run_local<L: local::Local>(&mut self, local: &mut L) -> Result<(), Error> {
        let _serving = local::Serving::begin(self.storage.key());
        self.running = true;
        let result = self
            .prepare()
            .and_then(|()| Self::serve(self, local))
            .and_then(|()| {
                // SAFETY: the claim makes this loop the table's only user until `close` gives
                // the claim back (below, or in `Drop`); serving has ended, so this is the only
                // borrow.
                let table = unsafe { self.table.as_mut() };
                self.drain(table, local)
            });
        if result.is_err() {
            // SAFETY: as above; the drain's borrow has ended too.
            let table = unsafe { self.table.as_mut() };
            self.abandon_all(table);
        }
        self.running = false;
        self.close();
        // Before the thread may go on to other things: the registration is this thread's.
        self.ring.unregister_fd();
        // What the drain and the close ended (abandoned, `Closed`) woke its callers: `block_on`'s
        // tasks may now return. Bounded, for a future that keeps waking itself.
        for _ in 0..FINAL_POLLS {
            if !local.woken() {
                break;
            }
            local.poll();
        }
        result
    }

    /// Thread setup: apply the placement (unless `spawn` did), enable a single-issuer ring on
    /// this thread, register the ring's descriptor with it (`registered_ring`; a refusal leaves
    /// the plain descriptor in use).
    fn prepare(&mut self) -> Result<(), Error> {
        if !self.placed {
            crate::placement::apply(&self.checked.config).map_err(|e| Error::from_io(&e))?;
            self.placed = true;
        }
        if self.checked.config.single_issuer {
            self.ring.enable()?;
        }
        if self.checked.config.registered_ring && self.ring.register_fd() {
            self.storage.features.set(self.ring.features());
        }
        Ok(())
    }

    /// Starts a thread named `name` with the config's placement applied (CPU affinity,
    /// `SCHED_FIFO` priority, locked memory) and runs the loop on it; the `JoinHandle` gives
    /// `run`'s result.
    ///
    /// A name the thread cannot take (a NUL byte) is `InvalidInput`. A placement the process
    /// may not use (no such CPU, no permission for the priority, a memory-lock limit) is returned
    /// here as the kernel's error, and the loop is not started: it is dropped, so its handles'
    /// requests end with `Error::Closed`.
    ///
    /// ```
    /// use static_uring::Config;
    /// let config = Config { cpu: Some(0), ..Config::default() };
    /// let (handle, event_loop) = static_uring::new::<64, 32, 1024>(config).unwrap();
    /// let thread = event_loop.spawn("io-loop").expect("CPU 0 exists");
    /// handle.nop().wait().unwrap();
    /// drop(handle);
    /// thread.join().unwrap().unwrap();
    /// ```
    pub fn spawn(self, name: &str) -> std::io::Result<std::thread::JoinHandle<Result<(), Error>>> {
        self.start_thread(name, EventLoop::run)
    }

    /// Starts a thread named `name` with the config's whole placement applied, as
    /// [`spawn`](Self::spawn) does, and runs [`block_on(make())`](Self::block_on) on it
    /// (loop-thread mode on a placed thread). `make` runs on the new thread once the placement
    /// is in force, so the future need not be `Send`; the `JoinHandle` gives `block_on`'s result.
    /// Errors are `spawn`'s, and then `make` never runs.
    ///
    /// ```
    /// use static_uring::Config;
    /// let config = Config { cpu: Some(0), ..Config::default() };
    /// let (handle, event_loop) = static_uring::new::<64, 32, 1024>(config).unwrap();
    /// let thread = event_loop
    ///     .spawn_with("io-loop", move || async move {
    ///         handle.nop().await.unwrap();
    ///         7 // `handle` is dropped here: the loop drains and the thread ends
    ///     })
    ///     .expect("CPU 0 exists");
    /// assert_eq!(thread.join().unwrap(), Ok(7));
    /// ```
    pub fn spawn_with<M, F>(
        self,
        name: &str,
        make: M,
    ) -> std::io::Result<std::thread::JoinHandle<Result<F::Output, Error>>>
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future,
        F::Output: Send + 'static,
    {
        self.start_thread(name, move |event_loop| event_loop.block_on(make()))
    }

    /// `spawn` and `spawn_with`: a thread named `name` that applies the placement, reports it,
    /// and then runs `body` (which finds the placement done).
    fn start_thread<T: Send + 'static>(
        mut self,
        name: &str,
        body: impl FnOnce(Self) -> Result<T, Error> + Send + 'static,
    ) -> std::io::Result<std::thread::JoinHandle<Result<T, Error>>> {
        if name.contains('\0') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a thread name cannot contain a NUL byte",
            ));
        }
        let (placed, outcome) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let applied = crate::placement::apply(&self.checked.config);
                let failed = applied.as_ref().err().map(Error::from_io);
                let _ = placed.send(applied);
                match failed {
                    None => {
                        self.placed = true;
                        body(self)
                    }
                    Some(e) => Err(e),
                }
            })?;
        match outcome.recv() {
            Ok(Ok(())) => Ok(thread),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(std::io::Error::other(
                    "the loop thread died before it started",
                ))
            }
        }
    }

    /// Iterations until no handle is left. `local` is the future `block_on` runs on this thread
    /// (nothing for `run`): it is polled after the completions are delivered and before staging,
    /// so what it submits goes into the kernel in the same iteration, with no eventfd.
    ///
    /// While `local` is polled no reference to the loop or its table is live: an operation
    /// polled there stages its SQE through the loop (`EventLoop::stage_in_window`, behind the pointer
    /// the window publishes), so each phase borrows both afresh from the pointers.
    fn serve<L: local::Local>(this: &mut Self, local: &mut L) -> Result<(), Error> {
        // Operations on this thread may use the private hand-off while the loop serves.
        let private = Private(this.storage.clone());
        private.0.local.activate();
        let table = this.table;
        let this: *mut Self = this;
        loop {
            // SAFETY: `this` comes from our `&mut` and `table` is the claim's table (only this
            // loop uses it, see `run_local`); no other borrow of either is live while these
            // are (the window below is closed).
            let (el, t) = unsafe { (&mut *this, &mut *table.as_ptr()) };
            // A pass that finds the CQ empty (a cross-thread nop's second pass, most spins'
            // rounds) skips the call: its frame costs more than the look.
            if el.ring.has_completions() {
                el.reap(t);
            }
            // Most passes have no deadline pending: no call for them.
            if t.wheel.len() != 0 {
                el.expire(t);
            }
            let window = Window::open(&private.0.local, this.cast());
            local.poll();
            drop(window);
            // SAFETY: as above; the window is closed, so nothing else holds either pointer.
            let (el, t) = unsafe { (&mut *this, &mut *table.as_ptr()) };
            let pass = el.stage(t, Mode::Serve);
            // Before the loop can sleep: slots the loop thread kept go back to everyone.
            el.storage.flush_local_free();
            el.storage.metrics.set_pending(t.admitted());
            match pass {
                Pass::Disconnected => return Ok(()),
                Pass::SqFull => el.enter(0, None)?,
                Pass::WaiterFull if local.woken() || el.checked.config.io_poll => {
                    el.enter(0, None)?
                }
                Pass::WaiterFull => el.enter(1, el.next_deadline(t))?,
                Pass::Drained => el.idle(t, local)?,
            }
        }
    }

    /// Nothing to stage: spin (the adaptive budget, see `spin.rs`; with `busy_poll`, until the
    /// next deadline), then arm, recheck and sleep.
    fn idle<L: local::Local>(&mut self, t: &mut Table<S, R, W>, local: &L) -> Result<(), Error> {
        if local.woken() || self.checked.config.io_poll {
            // A polled ring completes nothing without an enter (GETEVENTS polls the device),
            // and has no wake poll to sleep on: poll once and go round.
            return self.enter(0, None);
        }
        // What is staged usually completes at once (`goes_round`) and no caller is owed:
        // submitted and round at once, spin budget or not; a spinning loop's way (enter, then
        // reap and look for work in `reaped_work`) came to the same with about 47 instructions
        // more per pass.
        if self.goes_round::<L>() && !self.batch.owed() && self.may_submit_first() {
            return self.enter(0, None);
        }
        let busy = self.checked.config.busy_poll;
        let budget = if busy {
            // Most passes have no deadline pending: the constant, without the comparisons.
            match t.wheel.len() {
                0 => BUSY_POLL_PASS,
                _ => self
                    .next_deadline(t)
                    .map_or(BUSY_POLL_PASS, |d| d.min(BUSY_POLL_PASS)),
            }
        } else if self.spin_budget == 0 {
            // `idle_spin = 0`: no division to find out.
            Duration::ZERO
        } else {
            Duration::from_nanos(self.spin_budget)
        };
        // No spin budget and callers on other threads about to submit again: submitted
        // without waiting (`may_submit_first`). What goes round was taken above.
        if budget.is_zero() && self.batch.owed() && self.may_submit_first() {
            return self.enter(0, None);
        }
        let mut spin = None;
        if !budget.is_zero() {
            if !self.ring.sq_empty() {
                // Callers on other threads are about to submit again: gather their requests
                // into this enter (a bounded wait; none when nothing is owed, `batch.rs`).
                while self.batch.wait(self.ring.sq_len()) {
                    if self.fresh_ready(t) || self.ring.has_completions() {
                        return Ok(());
                    }
                    std::hint::spin_loop();
                }
                self.enter(0, None)?;
                if self.ring.has_completions() && self.reaped_work(t, local) {
                    return Ok(());
                }
            }
            let spinning = spin.insert(Spin::new(budget));
            if self.spin_for_work(t, local, spinning, busy)? {
                // Found while spinning: a hit, which grows the budget (`spin::grow`, no clock
                // read) unless it is full; a busy loop's budget is the next deadline, not the
                // adaptive one.
                if !busy && self.spin_budget != self.spin_max {
                    self.spin_budget = crate::spin::grow(self.spin_budget, self.spin_max);
                }
                return Ok(());
            }
            if busy {
                // Never sleep: back to the loop, which fires due deadlines and spins again.
                return Ok(());
            }
        }
        let slept = self.sleep(t, local);
        if let Some(spin) = spin {
            self.adapt_spin(spin.elapsed(), spin.preempted());
        }
        slept
    }

    /// Delivers what the kernel completed inside the submitting enter just made (a nop, a
    /// cached read, a send with room) in this pass, instead of in a pass of its own, then says
    /// whether that gave the loop work (go round) or it may spin on. After a reap the rest of a
    /// pass has nothing to do unless one of its looks says so: a retry, cancel or wake poll to
    /// stage, a fresh request, a woken local future. The slots a local request freed stay on
    /// the loop thread's private stack when the loop goes round (its woken futures take them
    /// again, and the pass's end hands back the rest); only a loop that may spin or sleep now
    /// hands them to everyone first. (Flushed here every time, they went to the shared list and
    /// came back from it with a compare-exchange each: two locked RMWs per loop-thread nop@64
    /// with a spin budget, none without one.)
    #[inline(never)]
    fn reaped_work<L: local::Local>(&mut self, t: &mut Table<S, R, W>, local: &L) -> bool {
        self.reap(t);
        if local.woken() || !self.nothing_to_stage(t, Mode::Serve) {
            return true;
        }
        self.storage.flush_local_free();
        // Serving the waiters may have woken a local future waiting for a slot.
        local.woken()
    }

    /// Whether an idle loop may submit its staged SQEs without waiting and go round, instead of
    /// arming the intent and entering to submit and wait in one call (**submit first**). It
    /// does so while callers on other threads are about to submit again (`batch.rs`), even
    /// without a spin budget: their releases then find no intent and write no eventfd, and what
    /// completed at once is delivered and their next requests staged before the loop sleeps
    /// (at 64 nops outstanding, eventfd writes per op fell from 0.07 to under 0.001); and when
    /// what is staged usually completes inside the enter ([`goes_round`](Self::goes_round)).
    /// Not with SQPOLL, whose poller submits (going round would spin until it has).
    #[inline]
    fn may_submit_first(&mut self) -> bool {
        self.checked.config.sqpoll_idle.is_none() && !self.ring.sq_empty()
    }

    /// Whether the staged SQEs usually complete inside the enter that submits them, so that
    /// arming the intent for it (two locked RMWs on the submission ring's word) would buy a
    /// sleep cut short at once: the loop rather goes round and delivers them, and so a receive
    /// its data reached in the same enter (a loop-thread ping-pong's passes, a stream's). A
    /// send (it usually finds room in the socket buffer); or, in `block_on` (`L`), a lone nop
    /// or read or write the page cache serves, made on the loop thread (its waker is in the
    /// private cell; `ring/queues.rs`, `INLINE`): a loop-thread nop at 1 outstanding 1.10x as
    /// fast, a cached read_at 1.03x, no locked RMW left per nop (`idle_spin = 0`, interleaved
    /// rounds). Not a lone request from another thread: going round first delayed its caller's
    /// wake-up (cross-thread nop at 1 outstanding: 1.46 enters per op instead of 1.33); nor a
    /// batch, which loses nothing to the arm spread over it and ran 0.975x as fast going round
    /// (loop-thread nop@64). One that does not complete at once (a send that waits for room, a
    /// read the cache misses) costs a pass and an enter more.
    #[inline]
    fn goes_round<L: local::Local>(&mut self) -> bool {
        self.ring.send_staged()
            || L::RUNS_FUTURE
                && self
                    .ring
                    .lone_inline()
                    .is_some_and(|user_data| self.made_here(user_data))
    }

    /// Whether the SQE with `user_data` is a request made on the loop thread (`LOCAL_WAKER`).
    #[inline]
    fn made_here(&self, user_data: u64) -> bool {
        match Cqe::decode(user_data) {
            Cqe::Op(id) => self
                .storage
                .slots
                .get(id.index() as usize)
                .is_some_and(|slot| slot.waker_here()),
            _ => false,
        }
    }

    /// Polls for work until `spinning` runs out (false) or work is found (true). A busy loop
    /// (`busy`) spins on while no deadline is pending and nothing the polls do not watch is
    /// waiting (`has_work`: a dropped request or timer, the last sender gone): going round
    /// would only make an empty pass. Out of line: an idle loop's polls are not its work, and
    /// `scripts/profile` leaves this function out of the loop's instruction count (callgrind's
    /// `--toggle-collect`).
    #[inline(never)]
    fn spin_for_work<L: local::Local>(
        &mut self,
        t: &Table<S, R, W>,
        local: &L,
        spinning: &mut Spin,
        busy: bool,
    ) -> Result<bool, Error> {
        loop {
            // Not `has_work`: the last sender's exit rings the eventfd, whose poll (armed by
            // now) posts a CQE, so the life word need not be read (and its cache line taken
            // from the submitters) on every spin.
            if self.fresh_ready(t) || self.ring.has_completions() || local.woken() {
                return Ok(true);
            }
            if self.ring.needs_task_work() {
                // DEFER_TASKRUN posts completions that need task work (sockets, polls, the
                // wake poll) only inside an enter with GETEVENTS, COOP_TASKRUN at the loop
                // thread's next kernel entry (no IPI interrupts the spin); IORING_SQ_TASKRUN
                // says some are pending. Run them now instead of spinning out the budget.
                self.count_enter();
                self.ring.run_task_work()?;
                continue;
            }
            if !spinning.step() {
                if busy && t.wheel.len() == 0 && !self.has_work(t) {
                    *spinning = Spin::new(BUSY_POLL_PASS);
                    continue;
                }
                return Ok(false);
            }
        }
    }

    /// The next spin budget after an idle period of `waited` (see `spin.rs`).
    fn adapt_spin(&mut self, waited: Duration, preempted: bool) {
        self.spin_budget = crate::spin::adapt(self.spin_budget, self.spin_max, waited, preempted);
    }

    /// Arms the wake intent, rechecks, and sleeps in the kernel until a completion, a wake or
    /// the next deadline; or, over a position claimed before the arm and not yet published
    /// (its producer owes no wake), naps: polls it a moment, then sleeps at most `GAP_WAIT`.
    fn sleep<L: local::Local>(&mut self, t: &mut Table<S, R, W>, local: &L) -> Result<(), Error> {
        let mut idle = Idle {
            event_loop: self,
            t,
            local,
        };
        let decision = decide_sleep(&mut idle);
        if decision == Decision::Work {
            // `has_work` may have seen the last sender gone (with DEFER_TASKRUN its wake CQE is
            // not posted until the next GETEVENTS): have the next pass read the count.
            self.check_senders = true;
            return Ok(());
        }
        let mut wait = self.next_deadline(t);
        if decision == Decision::Nap {
            // Its producer is most likely a few instructions from publishing.
            for _ in 0..NAP_POLLS {
                if self.storage.queue.has_ready() {
                    self.disarm(t);
                    return Ok(());
                }
                std::hint::spin_loop();
            }
            wait = Some(wait.map_or(GAP_WAIT, |w| w.min(GAP_WAIT)));
        }
        self.batch.sleeping();
        let slept = self.enter(1, wait);
        self.disarm(t);
        slept
    }

    /// Withdraws the sleep intent from the words `sleep` armed.
    fn disarm(&self, t: &Table<S, R, W>) {
        wake::disarm(self.storage.queue.word());
        if !t.lanes.is_empty() {
            wake::disarm(self.storage.life_word());
        }
    }

    /// Something the loop should act on without sleeping.
    fn has_work(&mut self, t: &Table<S, R, W>) -> bool {
        self.fresh_ready(t)
            || self.storage.serving_over()
            || self.ring.has_completions()
            || self.storage.has_dropped()
            || self.storage.has_dropped_timers()
    }

    /// `io_uring_enter`, counted when the syscall is made.
    fn enter(&mut self, want: usize, timeout: Option<Duration>) -> Result<(), Error> {
        self.batch.entered();
        if self.ring.enter(want, timeout)? {
            self.count_enter();
        }
        Ok(())
    }

    /// Counts one `io_uring_enter` syscall (and whether it named the registered ring).
    #[inline]
    fn count_enter(&self) {
        Counters::bump(&self.storage.metrics.enters);
        if self.ring.registered() {
            Counters::bump(&self.storage.metrics.registered_enters);
        }
    }

    /// Time until the earliest deadline, counted from the last advanced tick.
    fn next_deadline(&self, t: &Table<S, R, W>) -> Option<Duration> {
        let ticks = t.wheel.next_deadline_ticks()?;
        Some(Duration::from_nanos(
            ticks.saturating_mul(self.checked.tick_ns),
        ))
    }

    fn elapsed_ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin)
            .as_nanos()
            .min(u64::MAX as u128) as u64
    }
}

impl<const S: usize, const R: usize, const W: usize> Drop for EventLoop<S, R, W> {
    fn drop(&mut self) {
        if self.running {
            // `run` is unwinding (its borrow of the table is dead): wake every caller and park
            // what the kernel may still own.
            self.running = false;
            // SAFETY: as in `run`: the claim is still ours and no other borrow is live.
            let table = unsafe { self.table.as_mut() };
            self.abandon_all(table);
        }
        // Answer queued requests with `Closed` (also for a loop dropped without running).
        self.close();
    }
}

impl<const S: usize, const R: usize, const W: usize> std::fmt::Debug for EventLoop<S, R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop").finish_non_exhaustive()
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

    /// The loop's [`RingFeatures`] (as [`EventLoop::ring_features`]; after the storage is
    /// claimed again, the new loop's).
    pub fn ring_features(&self) -> RingFeatures {
        self.storage.features.get()
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

/// The error of a refused buffer registration.
fn buffer_error(e: &std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOMEM) => Error::Config(
            "registering the buffer pool needs more locked memory than RLIMIT_MEMLOCK allows (ENOMEM): raise the limit or shrink the pool",
        ),
        Some(libc::EOVERFLOW) | Some(libc::EINVAL) => {
            Error::Config("the kernel refused the buffer pool's sizes (EINVAL/EOVERFLOW)")
        }
        _ => Error::from_io(e),
    }
}
