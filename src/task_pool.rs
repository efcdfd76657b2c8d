//! [`TaskPool`]: up to `N` concurrent tasks of one future type, run by one future, without
//! allocation. Made for loop-thread mode (a server with one task per connection inside
//! [`EventLoop::block_on`](crate::EventLoop::block_on)); it runs under any executor.
//!
//! Modelled on embassy-executor's `TaskPool`: a fixed array of task slots, [`spawn`] fills a
//! free one or hands the future back ([`Busy`]) when all are taken. Each slot has a state word:
//!
//! ```text
//! OCCUPIED | WOKEN | RUNNING            (all clear: free)
//! spawn:   free --CAS--> OCCUPIED|RUNNING (ours) --write future--> OCCUPIED|WOKEN
//! wake:    fetch_or WOKEN; if it was OCCUPIED alone (idle), set `pending` and, if `pending`
//!          was clear, wake the runner (a set `pending` has a waker already on its way, or is
//!          the runner's own, which it checks before it returns)
//! run:     OCCUPIED|WOKEN --CAS--> OCCUPIED (WOKEN cleared), poll;
//!          Ready: drop the future, store free; Pending: nothing more. A wake during the poll
//!          finds the task idle and records itself as any wake does.
//! ```
//! Only the runner polls (`polling` keeps runners out of each other's way) and a spawner takes
//! only a free slot, so while the runner polls, OCCUPIED alone is enough to keep the future its
//! own: a woken task costs one RMW for the waker and one for the runner.
//! A task's waker points at its slot (the pool is `'static`, so it can never dangle); a stale
//! waker of a finished task at most sets WOKEN on a free slot (which `spawn` ignores) or wakes the
//! slot's next task once, spuriously. The runner registers its own waker, *then* takes
//! `pending`; a waker sets `pending`, *then* wakes the runner: no wake is lost (the contract of
//! `WakerCell`).
//!
//! [`spawn`]: TaskPool::spawn

use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use crate::handoff::waker_cell::WakerCell;
use crate::loom::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering, UnsafeCell};

const OCCUPIED: u32 = 1;
const WOKEN: u32 = 2;
const RUNNING: u32 = 4;

/// `N` task slots for futures of type `F`. Put it in a `static` when `F` can be named, or get
/// one with [`TaskPool::leak`] (allocated once) when it cannot, as for an `async fn`'s future:
///
/// ```
/// use static_uring::{Config, TaskPool};
///
/// async fn job(n: u64, handle: static_uring::Handle<8, 8, 64>) -> u64 {
///     handle.nop().await.unwrap();
///     n
/// }
///
/// let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
/// let pool = TaskPool::<_, 4>::leak();
/// let sum = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
/// let total = sum.clone();
/// let done = event_loop
///     .block_on(pool.run(async move {
///         for n in 1..=3 {
///             let (h, s) = (handle.clone(), sum.clone());
///             // One future type for every task: map the output inside it.
///             let task = async move {
///                 let n = job(n, h).await;
///                 s.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
///             };
///             assert!(pool.spawn(task).is_ok());
///         }
///         drop(handle);
///     }))
///     .unwrap();
/// # let _ = done;
/// assert_eq!(total.load(std::sync::atomic::Ordering::Relaxed), 6);
/// ```
///
/// (In the example the three tasks share one type because they come from one `async` block.)
pub struct TaskPool<F, const N: usize> {
    head: PoolHead,
    slots: [TaskSlot<F>; N],
}

/// The part of a pool a task's waker needs (not generic).
struct PoolHead {
    /// Some task was woken since the runner's last pass.
    pending: AtomicBool,
    /// The waker of the future that runs the pool.
    runner: WakerCell,
    /// A runner is polling (two at once would race for the same futures).
    polling: AtomicBool,
    /// Tasks whose poll or drop panicked (contained; the task ended).
    panics: AtomicU64,
}

/// One task: `head` first, so a waker's data pointer (to `head`) names the slot.
#[repr(C)]
struct TaskSlot<F> {
    head: TaskHead,
    future: UnsafeCell<MaybeUninit<F>>,
}

#[repr(C)]
struct TaskHead {
    state: AtomicU32,
    /// The pool's head, set at spawn (before the state publishes the task).
    pool: AtomicPtr<PoolHead>,
}

/// [`TaskPool::spawn`] found every slot taken: the future comes back.
pub struct Busy<F>(pub F);

impl<F> std::fmt::Debug for Busy<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Busy")
    }
}

// SAFETY: a slot's future is touched only by the thread that owns the slot through its state
// (the spawner between its CAS and its Release store; the runner between its CAS and its store
// or fetch_and), so accesses never overlap; futures move to the runner's thread, hence F: Send.
unsafe impl<F: Send, const N: usize> Sync for TaskPool<F, N> {}
// SAFETY: as above.
unsafe impl<F: Send, const N: usize> Send for TaskPool<F, N> {}

impl<F: Future<Output = ()>, const N: usize> TaskPool<F, N> {
    crate::loom::maybe_const_fn! {
        /// An empty pool.
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            TaskPool {
                head: PoolHead {
                    pending: AtomicBool::new(false),
                    runner: WakerCell::new(),
                    polling: AtomicBool::new(false),
                    panics: AtomicU64::new(0),
                },
                slots: crate::loom::const_array!(TaskSlot {
                    head: TaskHead {
                        state: AtomicU32::new(0),
                        pool: AtomicPtr::new(std::ptr::null_mut()),
                    },
                    future: UnsafeCell::new(MaybeUninit::uninit()),
                }; N),
            }
        }
    }

    /// An empty pool allocated once and never freed (its tasks' wakers may outlive any owner).
    pub fn leak() -> &'static Self {
        Box::leak(Box::new(Self::new()))
    }

    /// Starts `task` in a free slot; [`Busy`] with the future back if all `N` are taken. It is
    /// first polled by the pool's runner ([`run`](Self::run)). Allocation-free, from any thread.
    pub fn spawn(&'static self, task: F) -> Result<(), Busy<F>> {
        for slot in &self.slots {
            // Relaxed: a hint; the `take` below is what acquires the slot.
            let state = slot.head.state.load(Ordering::Relaxed);
            if state & OCCUPIED != 0 {
                continue;
            }
            // The previous task's drop (its Release swap) happens before our write.
            if !slot.head.take(state) {
                continue;
            }
            let head = std::ptr::from_ref(&self.head).cast_mut();
            slot.head.pool.store(head, Ordering::Relaxed);
            // SAFETY: OCCUPIED | RUNNING by our CAS: the slot's future cell is ours alone.
            slot.future.with_mut(|cell| unsafe { (*cell).write(task) });
            // Release: publishes the future (and `pool`) to the runner's Acquire. A swap, not a
            // store: every write of a state is a read-modify-write, so wakers' `fetch_or`s and
            // ours stay in one order (loom models plain stores racing RMWs wrongly, loom#254).
            slot.head.state.swap(OCCUPIED | WOKEN, Ordering::Release);
            self.head.wake_runner();
            return Ok(());
        }
        Err(Busy(task))
    }

    /// Tasks running now (a snapshot).
    pub fn len(&self) -> usize {
        self.slots
            .iter()
            // Relaxed: a snapshot for the caller, ordering nothing.
            .filter(|s| s.head.state.load(Ordering::Relaxed) & OCCUPIED != 0)
            .count()
    }

    /// True when no task runs (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Panics the pool contained: a task whose poll or drop panicked (it was ended, its future
    /// dropped, and the others carried on), or a finished runner's waker whose drop panicked.
    pub fn panics(&self) -> u64 {
        self.head.panics.load(Ordering::Relaxed)
    }

    /// Runs `main` and the pool's tasks until `main` has returned and every task has finished;
    /// resolves to `main`'s output. `main` usually spawns the tasks (an accept loop). One runner
    /// at a time: polling two `run` futures of one pool at once panics.
    pub fn run<M: Future>(&'static self, main: M) -> Run<F, N, M> {
        Run {
            pool: self,
            main: Some(main),
            output: None,
        }
    }

    /// One pass: polls every woken task once.
    fn poll_tasks(&'static self) {
        // AcqRel: Acquire sees the wakers' task states; pairs with their Release.
        if !self.head.pending.swap(false, Ordering::AcqRel) {
            return;
        }
        for slot in &self.slots {
            // The `pending` swap above already ordered every WOKEN that set it before this read,
            // and `take` acquires the slot; Acquire here is belt and braces (free on x86).
            let state = slot.head.state.load(Ordering::Acquire);
            if state & (OCCUPIED | WOKEN | RUNNING) != OCCUPIED | WOKEN {
                continue;
            }
            // Sees the spawner's future. Only wakers race us, and they only set WOKEN, which is
            // set: the claim fails only if another runner took the slot (ruled out).
            if !slot.head.claim_poll(state) {
                self.head.set_pending();
                continue;
            }
            self.poll_slot(slot);
        }
    }

    /// Polls the task in `slot` (claimed by this runner: `claim_poll`) and settles its state.
    fn poll_slot(&'static self, slot: &'static TaskSlot<F>) {
        let waker = task_waker(&slot.head);
        let mut cx = Context::from_waker(&waker);
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            slot.future.with_mut(|cell| {
                // SAFETY: claimed: the future is ours; it was written at spawn and is never moved
                // (the pool is 'static), so pinning it in place is sound.
                let future = unsafe { Pin::new_unchecked((*cell).assume_init_mut()) };
                future.poll(&mut cx)
            })
        }));
        let finished = match polled {
            Ok(Poll::Pending) => false,
            Ok(Poll::Ready(())) => true,
            Err(_) => {
                self.head.panics.fetch_add(1, Ordering::Relaxed);
                true
            }
        };
        if finished {
            let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                // SAFETY: claimed: ours, initialised, and dropped exactly once, here.
                slot.future
                    .with_mut(|cell| unsafe { (*cell).assume_init_drop() })
            }));
            if dropped.is_err() {
                self.head.panics.fetch_add(1, Ordering::Relaxed);
            }
            // Release: the drop happens before the next spawner's Acquire. A swap, as in `spawn`.
            slot.head.state.swap(0, Ordering::Release);
        }
        // Pending: the task stays OCCUPIED; a wake that came during the poll found it idle and
        // set `pending` itself. The future is touched again only by this runner (or the next,
        // which `polling` orders after us).
    }
}

impl PoolHead {
    /// Marks work pending, then wakes the runner (in that order: see the module doc).
    fn wake_runner(&self) {
        // `pending` already set: whoever set it wakes the runner (a waker, after its own
        // swap), or is the runner, which checks `pending` before it returns. Only the swap
        // that sets it takes the runner's waker.
        if self.pending.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(waker) = self.runner.take() {
            waker.wake();
        }
    }

    /// Marks work pending. A read-modify-write, not a store: the runner's `swap` and every
    /// setter then stay in one total order (and loom models it faithfully; its plain stores
    /// racing an RMW are tokio-rs/loom#254). Release: pairs with the runner's AcqRel `swap`.
    fn set_pending(&self) {
        self.pending.swap(true, Ordering::Release);
    }
}

/// The future of [`TaskPool::run`].
pub struct Run<F: 'static, const N: usize, M: Future> {
    pool: &'static TaskPool<F, N>,
    main: Option<M>,
    output: Option<M::Output>,
}

impl<F: Future<Output = ()>, const N: usize, M: Future> Future for Run<F, N, M> {
    type Output = M::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<M::Output> {
        // SAFETY: `main` is structurally pinned: never moved, only dropped in place (by assigning
        // `None` over it); the other fields are not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let pool = this.pool;
        let head = &pool.head;
        // Acquire: pairs with the previous runner's Release in `ReleasePolling`.
        assert!(
            !head.polling.swap(true, Ordering::Acquire),
            "a TaskPool is run by one future at a time"
        );
        let _release = ReleasePolling(head);
        head.runner.register(cx.waker());
        if let Some(main) = this.main.as_mut() {
            // SAFETY: `main` lives pinned inside `self` and is only dropped in place.
            if let Poll::Ready(out) = unsafe { Pin::new_unchecked(main) }.poll(cx) {
                this.output = Some(out);
                this.main = None; // drops it in place
            }
        }
        // A bounded number of passes, then yield to the executor if more is pending. The loads
        // of `pending` are Acquire like the pass's own swap: a task woken meanwhile is seen.
        for _ in 0..4 {
            pool.poll_tasks();
            if !head.pending.load(Ordering::Acquire) {
                break;
            }
        }
        if head.pending.load(Ordering::Acquire) {
            cx.waker().wake_by_ref();
        }
        if this.main.is_none() && pool.is_empty() {
            if let Some(out) = this.output.take() {
                // The pool outlives this runner: it keeps no waker of an executor that is done.
                // The waker's drop is the executor's code: a panic in it is contained (counted).
                let waker = head.runner.take();
                if crate::contain::run(move || drop(waker)) {
                    head.panics.fetch_add(1, Ordering::Relaxed);
                }
                return Poll::Ready(out);
            }
        }
        Poll::Pending
    }
}

/// Clears `polling` when a runner's poll ends, panics included.
struct ReleasePolling<'a>(&'a PoolHead);

impl Drop for ReleasePolling<'_> {
    fn drop(&mut self) {
        // Release: the next runner sees our slot states.
        self.0.polling.store(false, Ordering::Release);
    }
}

impl<F, const N: usize> Drop for TaskPool<F, N> {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            if slot.head.state.load(Ordering::Acquire) & OCCUPIED != 0 {
                // SAFETY: `&mut self`: no runner, no spawner; OCCUPIED slots hold a future.
                slot.future
                    .with_mut(|cell| unsafe { (*cell).assume_init_drop() });
            }
        }
    }
}

impl TaskHead {
    /// The runner claims a woken task to poll it (state `from`, `OCCUPIED | WOKEN`, ->
    /// `OCCUPIED`). Acquire: sees the spawner's future and what the waker published.
    fn claim_poll(&self, from: u32) -> bool {
        self.state
            .compare_exchange(from, OCCUPIED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the free slot (state `from` -> `OCCUPIED | RUNNING`) for the spawner to fill it. Acquire: sees what the previous owner published.
    fn take(&self, from: u32) -> bool {
        self.state
            .compare_exchange(
                from,
                OCCUPIED | RUNNING,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok()
    }
}

/// A waker naming `head`'s task: no allocation, and valid for ever (the pool is `'static`).
fn task_waker(head: &'static TaskHead) -> Waker {
    let raw = RawWaker::new(std::ptr::from_ref(head).cast(), &TASK_VTABLE);
    // SAFETY: the vtable's functions uphold RawWaker's contract for a `'static` `TaskHead`
    // (clone copies the pointer; wake and drop release nothing).
    unsafe { Waker::from_raw(raw) }
}

static TASK_VTABLE: RawWakerVTable =
    RawWakerVTable::new(clone_task, wake_task, wake_task, drop_task);

fn clone_task(data: *const ()) -> RawWaker {
    RawWaker::new(data, &TASK_VTABLE)
}

fn wake_task(data: *const ()) {
    // SAFETY: `data` is a `&'static TaskHead` (`task_waker`).
    let head = unsafe { &*data.cast::<TaskHead>() };
    // AcqRel: Release orders the waker's writes before the runner's poll; Acquire reads `pool`.
    let before = head.state.fetch_or(WOKEN, Ordering::AcqRel);
    if before & (OCCUPIED | WOKEN | RUNNING) == OCCUPIED {
        let pool = head.pool.load(Ordering::Relaxed);
        // SAFETY: set at spawn, before the Release that made the slot OCCUPIED, and pointing
        // into the `'static` pool.
        unsafe { &*pool }.wake_runner();
    }
}

fn drop_task(_: *const ()) {}

/// Test futures shared by the unit tests and the loom models (`crate::loom` picks the
/// primitives of each).
#[cfg(test)]
mod test_futures {
    use super::*;
    use crate::loom::Mutex;
    use std::sync::Arc;

    /// Pending until `open`, keeping the waker it was last polled with.
    pub(super) struct Gate {
        pub(super) open: Arc<AtomicBool>,
        pub(super) waker: Arc<Mutex<Option<Waker>>>,
    }

    impl Future for Gate {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.open.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::test_futures::Gate;
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// Polls `fut` to completion on this thread, parking between polls; a park that lasts 10 s
    /// is a lost wake.
    fn block_on<T>(fut: impl Future<Output = T>) -> T {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
            let parked = std::time::Instant::now();
            std::thread::park_timeout(std::time::Duration::from_secs(10));
            assert!(
                parked.elapsed() < std::time::Duration::from_secs(10),
                "a wake was lost"
            );
        }
    }

    #[test]
    fn busy_when_full_and_slots_are_reused() {
        let pool = TaskPool::<Gate, 2>::leak();
        let open = Arc::new(AtomicBool::new(false));
        let wakers: Vec<_> = (0..3)
            .map(|_| Arc::new(std::sync::Mutex::new(None)))
            .collect();
        let gate = |i: usize| Gate {
            open: open.clone(),
            waker: wakers[i].clone(),
        };
        assert!(pool.spawn(gate(0)).is_ok());
        assert!(pool.spawn(gate(1)).is_ok());
        assert!(pool.spawn(gate(2)).is_err(), "two slots, two tasks");
        assert_eq!(pool.len(), 2);
        let opener = {
            let (open, wakers) = (open.clone(), wakers.clone());
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                open.store(true, Ordering::Release);
                for w in &wakers {
                    if let Some(w) = w.lock().unwrap().take() {
                        w.wake();
                    }
                }
            })
        };
        block_on(pool.run(async {}));
        opener.join().unwrap();
        assert!(pool.is_empty(), "run returns once every task finished");
        assert!(
            pool.spawn(gate(2)).is_ok(),
            "a finished task's slot is free again"
        );
        block_on(pool.run(async {}));
    }

    #[test]
    fn a_panicking_task_ends_alone() {
        let pool = TaskPool::<Pin<Box<dyn Future<Output = ()> + Send>>, 4>::leak();
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        pool.spawn(Box::pin(async { panic!("task bug") }))
            .ok()
            .unwrap();
        pool.spawn(Box::pin(async move {
            d.fetch_add(1, Ordering::Relaxed);
        }))
        .ok()
        .unwrap();
        block_on(pool.run(async {}));
        assert_eq!(pool.panics(), 1);
        assert_eq!(done.load(Ordering::Relaxed), 1);
        assert!(pool.is_empty());
    }

    #[test]
    fn wakes_from_many_threads_are_never_lost() {
        // 4 tasks, each waiting 2,000 times for a wake from its own thread.
        struct Turns {
            left: u32,
            turn: Arc<AtomicU32>,
            waker: Arc<std::sync::Mutex<Option<Waker>>>,
        }
        impl Future for Turns {
            type Output = ();
            fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
                *self.waker.lock().unwrap() = Some(cx.waker().clone());
                while self.turn.load(Ordering::Acquire) > 0 {
                    self.turn.fetch_sub(1, Ordering::AcqRel);
                    self.left -= 1;
                    if self.left == 0 {
                        return Poll::Ready(());
                    }
                }
                Poll::Pending
            }
        }
        let pool = TaskPool::<Turns, 4>::leak();
        let mut threads = Vec::new();
        for _ in 0..4 {
            let turn = Arc::new(AtomicU32::new(0));
            let waker = Arc::new(std::sync::Mutex::new(None::<Waker>));
            let task = Turns {
                left: 2_000,
                turn: turn.clone(),
                waker: waker.clone(),
            };
            pool.spawn(task).ok().unwrap();
            threads.push(std::thread::spawn(move || {
                for _ in 0..2_000 {
                    turn.fetch_add(1, Ordering::AcqRel);
                    if let Some(w) = waker.lock().unwrap().clone() {
                        w.wake();
                    }
                    std::thread::yield_now();
                }
            }));
        }
        block_on(pool.run(async {}));
        for t in threads {
            t.join().unwrap();
        }
        assert!(pool.is_empty());
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use super::test_futures::Gate;
    use super::*;
    use crate::loom::Mutex;
    use std::sync::Arc;

    /// The runner's waker: a flag.
    struct Flag(AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::Release);
        }
    }

    #[test]
    fn loom_a_wake_racing_the_poll_is_never_lost() {
        // The task's wake (another thread) races the runner's pass, which is polling the task
        // (woken once before). Afterwards, either the task finished, or the pool recorded the wake
        // (`pending`) or woke the runner: the next pass then finishes it. A lost wake leaves the
        // task pending with nothing recorded.
        loom::model(|| {
            let pool: &'static TaskPool<Gate, 1> = Box::leak(Box::new(TaskPool::new()));
            let open = Arc::new(AtomicBool::new(false));
            let waker = Arc::new(Mutex::new(None::<Waker>));
            let gate = Gate {
                open: open.clone(),
                waker: waker.clone(),
            };
            assert!(pool.spawn(gate).is_ok());
            let flag = Arc::new(Flag(AtomicBool::new(false)));
            let runner = Waker::from(flag.clone());
            // First pass: polls the task once (it stores its waker, pending).
            pool.head.runner.register(&runner);
            pool.poll_tasks();
            // A spurious wake, so that the second pass polls the task while the real one comes.
            let spurious = waker.lock().unwrap().clone().expect("polled once");
            spurious.wake();
            let opener = loom::thread::spawn(move || {
                open.store(true, Ordering::Release);
                let w = waker.lock().unwrap().take();
                if let Some(w) = w {
                    w.wake();
                }
            });
            // Second pass, concurrent with the wake.
            pool.head.runner.register(&runner);
            pool.poll_tasks();
            opener.join().unwrap();
            if !pool.is_empty() {
                let recorded =
                    pool.head.pending.load(Ordering::Acquire) || flag.0.load(Ordering::Acquire);
                assert!(recorded, "the wake was lost");
                let before = (
                    pool.slots[0].head.state.load(Ordering::Acquire),
                    pool.head.pending.load(Ordering::Acquire),
                    flag.0.load(Ordering::Acquire),
                );
                pool.poll_tasks();
                assert!(
                    pool.is_empty(),
                    "the recorded wake finishes the task: {before:?} -> {}",
                    pool.slots[0].head.state.load(Ordering::Acquire)
                );
            }
        });
    }

    #[test]
    fn loom_a_wake_that_finds_pending_set_is_never_lost() {
        // Two tasks woken from two threads while the runner runs a pass: the second wake finds
        // `pending` set and leaves the runner's waker alone. Afterwards each task has finished,
        // or the pool recorded a wake (`pending`) or woke the runner.
        loom::model(|| {
            let pool: &'static TaskPool<Gate, 2> = Box::leak(Box::new(TaskPool::new()));
            let mut openers = Vec::new();
            let mut gates = Vec::new();
            for _ in 0..2 {
                let open = Arc::new(AtomicBool::new(false));
                let waker = Arc::new(Mutex::new(None::<Waker>));
                let gate = Gate {
                    open: open.clone(),
                    waker: waker.clone(),
                };
                assert!(pool.spawn(gate).is_ok());
                gates.push((open, waker));
            }
            let flag = Arc::new(Flag(AtomicBool::new(false)));
            let runner = Waker::from(flag.clone());
            // First pass: both tasks store their wakers and stay pending.
            pool.head.runner.register(&runner);
            pool.poll_tasks();
            for (open, waker) in gates {
                openers.push(loom::thread::spawn(move || {
                    open.store(true, Ordering::Release);
                    let w = waker.lock().unwrap().take();
                    if let Some(w) = w {
                        w.wake();
                    }
                }));
            }
            pool.head.runner.register(&runner);
            pool.poll_tasks();
            for opener in openers {
                opener.join().unwrap();
            }
            if !pool.is_empty() {
                let recorded =
                    pool.head.pending.load(Ordering::Acquire) || flag.0.load(Ordering::Acquire);
                assert!(recorded, "a wake was lost");
                pool.poll_tasks();
                assert!(pool.is_empty(), "the recorded wakes finish both tasks");
            }
        });
    }
}
