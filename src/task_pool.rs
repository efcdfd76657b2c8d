//! [`TaskPool`]: up to `N` concurrent tasks of one future type, run by one future, without
//! allocation. Made for loop-thread mode (a server with one task per connection inside
//! [`EventLoop::block_on`](crate::EventLoop::block_on)); it runs under any executor.
//!
//! Modelled on embassy-executor's `TaskPool`: a fixed array of task slots, [`spawn`] fills a
//! free one or hands the future back ([`Busy`]) when all are taken. Each slot has a state word,
//! and the pool a ready bitmap, one bit per task, 64 tasks to a word:
//!
//! ```text
//! state:   OCCUPIED | RUNNING                (clear: free)
//! spawn:   free --CAS--> OCCUPIED|RUNNING (ours) --write future--> OCCUPIED, then mark ready
//! wake:    fetch_or the task's ready bit; if its word was 0, wake the runner
//! run:     per non-zero word: swap it to 0 and poll each task whose bit was set and whose state
//!          is OCCUPIED alone; Ready: drop the future, state free
//! ```
//! A wake is one RMW (the bit), and the runner pays one swap per word of woken tasks, not a
//! compare-exchange per task, and never scans idle tasks one by one. Only the runner polls
//! (`polling` keeps runners out of each other's way) and a spawner takes only a free slot, so
//! OCCUPIED alone keeps the future the runner's. The waker that turns a word from 0 wakes the
//! runner: by the word's modification order, every other bit set in it before the runner's swap
//! is seen by that swap, and a bit set after it finds the word 0 and wakes the runner itself.
//! A task's waker points at its slot (the pool is `'static`, so it can never dangle); a stale
//! waker of a finished task at most marks a free slot ready (the runner skips it) or wakes the
//! slot's next task once, spuriously. The runner registers its own waker, *then* swaps the
//! words; a waker sets its bit, *then* wakes the runner: no wake is lost (the contract of
//! `WakerCell`). When the runner is [`block_on`](crate::EventLoop::block_on) and the wake
//! comes on its own thread (a completion the loop delivers), the waker sets `block_on`'s flag
//! in place and the runner's waker stays in its cell, so the next pass need not register it
//! again: no waker clone, take or reference count per pass.
//!
//! A runner that stays on its thread ([`TaskPool::run_local`], a `!Send` future, as under
//! `block_on`) holds the pool from its first poll to its end, and names its thread in `owner`:
//! a wake on that thread then sets the task's bit in a second, private bitmap (`local`) with a
//! load and a store, and the runner takes those bits the same way. Only the owner thread ever
//! touches them; a wake from any other thread takes the shared bitmap as above. When the runner
//! ends (or is dropped) it clears `owner` first and moves what is left in the private bits to the
//! shared ones, so the next runner loses no wake.
//!
//! [`spawn`]: TaskPool::spawn

use std::future::Future;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use crate::handoff::waker_cell::WakerCell;
use crate::loom::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering, UnsafeCell};

const OCCUPIED: u32 = 1;
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
    /// Ready bits: task `i` is bit `i % 64` of word `i / 64`. Only the first `N.div_ceil(64)`
    /// words are used (a stable const generic cannot size the array by them; 8 bytes a task).
    ready: [AtomicU64; N],
    /// The owner thread's ready bits (laid out as `ready`): touched only on the thread that
    /// `owner` names, with a load and a store (no read-modify-write).
    local: [AtomicU64; N],
    slots: [TaskSlot<F>; N],
}

/// The part of a pool a task's waker needs (not generic).
struct PoolHead {
    /// The waker of the future that runs the pool.
    runner: WakerCell,
    /// Names the `block_on` whose waker the runner registered last (`block_on_here`), or
    /// null for any other waker: a wake on that `block_on`'s thread sets its flag in place.
    runner_token: AtomicPtr<()>,
    /// A runner is polling (two at once would race for the same futures); a [`RunLocal`]
    /// holds it from its first poll until it ends.
    polling: AtomicBool,
    /// The thread (`thread_token`) whose [`RunLocal`] holds the pool, else null: wakes on that
    /// thread mark tasks ready in `local` with plain stores.
    owner: AtomicPtr<()>,
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
    /// The word of `ready` that holds this task's bit, and the bit; set at spawn (before the
    /// state publishes the task), the same for every task of the slot.
    word: AtomicPtr<AtomicU64>,
    /// The same word of the pool's `local` bits.
    local_word: AtomicPtr<AtomicU64>,
    bit: AtomicU64,
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
                    runner: WakerCell::new(),
                    runner_token: AtomicPtr::new(std::ptr::null_mut()),
                    polling: AtomicBool::new(false),
                    owner: AtomicPtr::new(std::ptr::null_mut()),
                    panics: AtomicU64::new(0),
                },
                ready: crate::loom::const_array!(AtomicU64::new(0); N),
                local: crate::loom::const_array!(AtomicU64::new(0); N),
                slots: crate::loom::const_array!(TaskSlot {
                    head: TaskHead {
                        state: AtomicU32::new(0),
                        pool: AtomicPtr::new(std::ptr::null_mut()),
                        word: AtomicPtr::new(std::ptr::null_mut()),
                        local_word: AtomicPtr::new(std::ptr::null_mut()),
                        bit: AtomicU64::new(0),
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
        for (i, slot) in self.slots.iter().enumerate() {
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
            let word = std::ptr::from_ref(&self.ready[i / 64]).cast_mut();
            slot.head.word.store(word, Ordering::Relaxed);
            let local = std::ptr::from_ref(&self.local[i / 64]).cast_mut();
            slot.head.local_word.store(local, Ordering::Relaxed);
            slot.head.bit.store(1 << (i % 64), Ordering::Relaxed);
            // SAFETY: OCCUPIED | RUNNING by our CAS: the slot's future cell is ours alone.
            slot.future.with_mut(|cell| unsafe { (*cell).write(task) });
            // Release: publishes the future (and `pool`, `word`, `bit`) to the runner's and the
            // wakers' Acquire. A swap, not a store: every write of a state is a read-modify-write
            // (loom models plain stores racing RMWs wrongly, loom#254).
            slot.head.state.swap(OCCUPIED, Ordering::Release);
            slot.head.mark_ready();
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

    /// True when no task runs (a snapshot). Stops at the first task found: the runner asks
    /// on every pass.
    pub fn is_empty(&self) -> bool {
        // Relaxed: as `len`.
        !self
            .slots
            .iter()
            .any(|s| s.head.state.load(Ordering::Relaxed) & OCCUPIED != 0)
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

    /// [`run`](Self::run) for a runner that stays on this thread, as a
    /// [`block_on`](crate::EventLoop::block_on) future does: it holds the pool from its first
    /// poll until it finishes or is dropped (another runner polled meanwhile panics), and a task
    /// woken on this thread (a completion the loop delivers, a task waking another) is marked
    /// ready with a plain load and store instead of a read-modify-write. Wakes from other
    /// threads work as with `run`. The future is `!Send`. Forgetting it (`mem::forget`) leaves
    /// the pool held for good: every later runner panics.
    pub fn run_local<M: Future>(&'static self, main: M) -> RunLocal<F, N, M> {
        RunLocal {
            run: self.run(main),
            held: false,
            _here: PhantomData,
        }
    }

    /// The words of `ready` in use.
    const WORDS: usize = N.div_ceil(64);

    /// Whether some task is marked ready. Acquire: pairs with the wakers' Release. (The owner
    /// thread's own bits, Relaxed: only this thread writes them, when it holds the pool.)
    fn any_ready(&self) -> bool {
        (0..Self::WORDS).any(|w| {
            self.ready[w].load(Ordering::Acquire) != 0 || self.local[w].load(Ordering::Relaxed) != 0
        })
    }

    /// The ready bits of word `w`, taken: the owner thread's (a load and a store: only the
    /// runner's thread writes them while it holds the pool, and nothing else does), and the
    /// shared ones (a swap, when the load sees any).
    #[inline]
    fn take_ready(&self, w: usize) -> u64 {
        let local = &self.local[w];
        let mut bits = local.load(Ordering::Relaxed);
        if bits != 0 {
            local.store(0, Ordering::Relaxed);
        }
        let word = &self.ready[w];
        // Relaxed: a word seen 0 here but set meanwhile was set by a waker that found it 0,
        // which wakes the runner (another pass).
        if word.load(Ordering::Relaxed) != 0 {
            // AcqRel: sees what each waker published before its bit (Release: pairs with the
            // next setter, who must see the word as we left it).
            bits |= word.swap(0, Ordering::AcqRel);
        }
        bits
    }

    /// One pass: polls every task marked ready once.
    fn poll_tasks(&'static self) {
        for w in 0..Self::WORDS {
            let mut bits = self.take_ready(w);
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let slot = &self.slots[i];
                // Acquire: sees the spawner's future. Free (a stale waker) or still being
                // spawned (its spawner marks it again when done): skipped.
                if slot.head.state.load(Ordering::Acquire) == OCCUPIED {
                    self.poll_slot(slot);
                }
            }
        }
    }

    /// Polls the task in `slot` (OCCUPIED: the runner's while it polls) and settles its state.
    fn poll_slot(&'static self, slot: &'static TaskSlot<F>) {
        // Its drop would call through the vtable to do nothing (`drop_task`): never dropped.
        let waker = std::mem::ManuallyDrop::new(task_waker(&slot.head));
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
        // Pending: the task stays OCCUPIED; a wake that came during the poll set its bit again,
        // for the next pass. The future is touched again only by this runner (or the next,
        // which `polling` orders after us).
    }
}

impl PoolHead {
    /// Wakes the runner (a waker that turned a ready word from 0 does, after setting its bit).
    /// When the runner is the `block_on` of this very thread (a completion the loop delivers
    /// to a pool task), its flag is set in place and its waker stays registered: no take, no
    /// reference count. Relaxed: a runner registered since (on another executor) stored its
    /// token before its swap of the ready words; if our bit came after that swap, our
    /// `fetch_or` read from it (AcqRel) and we see the new token; if before, the swap sees the
    /// bit, so waking the old runner by mistake loses nothing.
    #[inline]
    fn wake_runner(&self) {
        if !self.wake_runner_here() {
            self.wake_registered_runner();
        }
    }

    /// The crate's part of [`wake_runner`](Self::wake_runner): true if the runner is the
    /// `block_on` of this very thread, whose flag is now set (no user code ran).
    #[inline]
    fn wake_runner_here(&self) -> bool {
        let token = self.runner_token.load(Ordering::Relaxed);
        crate::event_loop::local::wake_block_on_here(token.cast_const())
    }

    /// The rest of [`wake_runner`](Self::wake_runner): takes and wakes the registered waker
    /// (user code).
    fn wake_registered_runner(&self) {
        if let Some(waker) = self.runner.take() {
            waker.wake();
        }
    }

    /// Registers the runner's waker. Skipped when the cell still holds the same `block_on`
    /// waker of this thread (registered by an earlier poll and not taken since): registering
    /// it again would change nothing but cost a clone and four read-modify-writes per pass.
    /// The token names a live flag of that `block_on`, which the waker in the cell keeps alive,
    /// so an equal token means the same waker.
    #[inline]
    fn register_runner(&self, waker: &Waker) {
        let token = crate::event_loop::local::block_on_here(waker);
        if !token.is_null()
            && self.runner_token.load(Ordering::Relaxed).cast_const() == token
            && self.runner.holds()
        {
            return;
        }
        self.runner_token.store(token.cast_mut(), Ordering::Relaxed);
        self.runner.register(waker);
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
        let head = &this.pool.head;
        head.claim();
        let _release = ReleasePolling(head);
        this.pass(cx)
    }
}

impl<F: Future<Output = ()>, const N: usize, M: Future> Run<F, N, M> {
    /// One poll's work, with the pool held (`polling`): `main`, then a bounded number of passes
    /// over the ready tasks; `Ready` once `main` is done and no task is left.
    fn pass(&mut self, cx: &mut Context<'_>) -> Poll<M::Output> {
        let this = self;
        let pool = this.pool;
        let head = &pool.head;
        head.register_runner(cx.waker());
        if let Some(main) = this.main.as_mut() {
            // SAFETY: `main` lives pinned inside `self`, which is pinned (`pass` is only called
            // from `Run::poll` and `RunLocal::poll`), and is only dropped in place.
            if let Poll::Ready(out) = unsafe { Pin::new_unchecked(main) }.poll(cx) {
                this.output = Some(out);
                this.main = None; // drops it in place
            }
        }
        // A bounded number of passes, then yield to the executor if more is ready. A task woken
        // meanwhile is seen (Acquire loads, as the pass's own swaps).
        for _ in 0..4 {
            pool.poll_tasks();
            if !pool.any_ready() {
                break;
            }
        }
        if pool.any_ready() {
            cx.waker().wake_by_ref();
        }
        if this.main.is_none() && pool.is_empty() {
            if let Some(out) = this.output.take() {
                // The pool outlives this runner: it keeps no waker of an executor that is done.
                // The waker's drop is the executor's code: a panic in it is contained (counted).
                head.runner_token
                    .store(std::ptr::null_mut(), Ordering::Relaxed);
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

impl PoolHead {
    /// Takes the pool for a runner (`polling`); panics if another runner holds it. Acquire:
    /// pairs with the previous runner's Release (`ReleasePolling`, `RunLocal::release`).
    fn claim(&self) {
        assert!(
            !self.polling.swap(true, Ordering::Acquire),
            "a TaskPool is run by one future at a time"
        );
    }
}

/// The future of [`TaskPool::run_local`]: [`Run`], holding the pool on this thread from its
/// first poll until it finishes or is dropped.
pub struct RunLocal<F: 'static, const N: usize, M: Future> {
    run: Run<F, N, M>,
    /// Whether it holds the pool (`polling`, and `owner` names this thread).
    held: bool,
    /// `!Send`: the pool's `owner` names the thread it is polled on.
    _here: PhantomData<*const ()>,
}

impl<F: Future<Output = ()>, const N: usize, M: Future> Future for RunLocal<F, N, M> {
    type Output = M::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<M::Output> {
        // SAFETY: `run` is structurally pinned (its `main` is never moved: `Run::pass` drops it
        // in place); `held` is not.
        let this = unsafe { self.get_unchecked_mut() };
        if !this.held {
            let head = &this.run.pool.head;
            head.claim();
            // Relaxed: only this thread acts on a token equal to its own (`set_ready`), and it
            // reads what it stored itself; other threads only need to see it unequal.
            head.owner.store(thread_token(), Ordering::Relaxed);
            this.held = true;
        }
        let polled = this.run.pass(cx);
        if polled.is_ready() {
            this.release();
        }
        polled
    }
}

impl<F, const N: usize, M: Future> RunLocal<F, N, M> {
    /// Lets go of the pool: tasks this thread marked ready in the private bits move to the
    /// shared ones (for whichever runner comes next), then `owner` and `polling` clear.
    fn release(&mut self) {
        if !std::mem::take(&mut self.held) {
            return;
        }
        let pool = self.run.pool;
        // From here on, wakes on this thread take the shared bits. Relaxed: the only thread that
        // could take the private path is this one, which sees its own store.
        pool.head
            .owner
            .store(std::ptr::null_mut(), Ordering::Relaxed);
        for (local, shared) in pool.local.iter().zip(&pool.ready) {
            let bits = local.load(Ordering::Relaxed);
            if bits != 0 {
                local.store(0, Ordering::Relaxed);
                // AcqRel, as a waker's `fetch_or`: the next runner's swap sees these bits and
                // what this thread did before them.
                shared.fetch_or(bits, Ordering::AcqRel);
            }
        }
        // Release: the next runner sees our slot states.
        pool.head.polling.store(false, Ordering::Release);
    }
}

impl<F, const N: usize, M: Future> Drop for RunLocal<F, N, M> {
    fn drop(&mut self) {
        self.release();
    }
}

/// A token naming the calling thread (the address of one of its thread-locals): what
/// `PoolHead::owner` holds. Under loom, a loom thread-local: each modelled thread has its own.
#[inline]
fn thread_token() -> *mut () {
    #[cfg(not(loom))]
    std::thread_local! {
        static TOKEN: u8 = const { 0 };
    }
    #[cfg(loom)]
    loom::thread_local! {
        static TOKEN: u8 = 0;
    }
    TOKEN.with(|token| std::ptr::from_ref(token).cast_mut().cast())
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
    /// Takes the free slot (state `from` -> `OCCUPIED | RUNNING`) for the spawner to fill it.
    /// Acquire: sees what the previous owner published.
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

    /// Marks the task ready: one RMW on its word; the setter that finds the word 0 wakes the
    /// runner. Release: what the waker did before is seen by the runner's swap (AcqRel).
    fn mark_ready(&self) {
        if self.set_ready() {
            self.wake_runner();
        }
    }

    /// [`mark_ready`](Self::mark_ready)'s read-modify-write: true if the word was 0, when the
    /// setter must wake the runner ([`wake_runner`](Self::wake_runner)).
    #[inline]
    fn set_ready(&self) -> bool {
        // Relaxed: set at spawn before the state's Release, which the waker's caller acquired
        // through whatever handed it the waker (or the spawner wrote them itself).
        let bit = self.bit.load(Ordering::Relaxed);
        let pool = self.pool();
        // Relaxed: only this thread can have stored its own token there, and only this thread
        // clears it again (`RunLocal::release`), so a match cannot be stale.
        let owner = pool.owner.load(Ordering::Relaxed);
        if !owner.is_null() && owner == thread_token() {
            // The pool's runner holds it on this thread: nothing else touches these bits.
            // SAFETY: `local_word` points into the `'static` pool's `local` array (set at spawn).
            let local = unsafe { &*self.local_word.load(Ordering::Relaxed) };
            let before = local.load(Ordering::Relaxed);
            local.store(before | bit, Ordering::Relaxed);
            return before == 0;
        }
        let word = self.word.load(Ordering::Relaxed);
        // SAFETY: `word` points into the `'static` pool's `ready` array (set at spawn, never
        // changed but to the same value).
        unsafe { &*word }.fetch_or(bit, Ordering::AcqRel) == 0
    }

    /// Wakes the runner of the task's pool (its waker may be user code).
    fn wake_runner(&self) {
        self.pool().wake_runner();
    }

    /// The task's pool.
    #[inline]
    fn pool(&self) -> &'static PoolHead {
        let pool = self.pool.load(Ordering::Relaxed);
        // SAFETY: set at spawn, as `word`, pointing into the `'static` pool.
        unsafe { &*pool }
    }
}

/// A pool task, named by its waker: what the loop keeps for an operation a pool task awaits on
/// the loop thread, instead of a clone of the generic waker (no call through the waker's
/// vtable to clone, wake or drop it). Copy, and valid for ever (the pool is `'static`).
#[derive(Clone, Copy)]
pub(crate) struct TaskRef(&'static TaskHead);

impl TaskRef {
    /// The task `waker` wakes, if it is a pool task's waker.
    #[inline]
    pub(crate) fn of(waker: &Waker) -> Option<TaskRef> {
        if !std::ptr::eq(waker.vtable(), &TASK_VTABLE) {
            return None;
        }
        // SAFETY: a waker with the pool's vtable was made by `task_waker` (or copied from one
        // by `clone_task`): its data is a `&'static TaskHead`.
        Some(TaskRef(unsafe { &*waker.data().cast::<TaskHead>() }))
    }

    /// Marks the task ready (one read-modify-write). True if the runner must be woken
    /// ([`wake_runner`](Self::wake_runner)): the caller runs that, which may be user code (the
    /// runner's waker), contained.
    #[inline]
    pub(crate) fn set_ready(self) -> bool {
        self.0.set_ready()
    }

    /// Wakes the runner of the task's pool if it is the `block_on` of this very thread (crate
    /// code, no user code runs): true then. Otherwise nothing, and the caller runs
    /// [`wake_registered_runner`](Self::wake_registered_runner), contained.
    #[inline]
    pub(crate) fn wake_runner_here(self) -> bool {
        self.0.pool().wake_runner_here()
    }

    /// Wakes the runner's registered waker (user code).
    pub(crate) fn wake_registered_runner(self) {
        self.0.pool().wake_registered_runner();
    }

    /// The task's waker: what cloning one of its wakers gives, without the call.
    #[inline]
    pub(crate) fn waker(self) -> Waker {
        task_waker(self.0)
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
    head.mark_ready();
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
    fn run_local_takes_wakes_on_its_thread_and_from_others() {
        // Tasks that wake themselves on the runner's thread (the owner's private bits) and
        // gates opened from another thread (the shared bits) all finish; then the pool is free
        // for another runner.
        let pool = TaskPool::<Pin<Box<dyn Future<Output = ()> + Send>>, 70>::leak();
        let open = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(std::sync::Mutex::new(None));
        for _ in 0..64 {
            // Wakes itself (on the runner's thread) 20 times.
            let task = TurnGiver {
                tasks: Vec::new(),
                rounds: 20,
            };
            assert!(pool.spawn(Box::pin(task)).is_ok());
        }
        let gate = Gate {
            open: open.clone(),
            waker: waker.clone(),
        };
        assert!(pool.spawn(Box::pin(gate)).is_ok());
        let opener = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            open.store(true, Ordering::Release);
            if let Some(w) = waker.lock().unwrap().take() {
                w.wake();
            }
        });
        block_on(pool.run_local(async {}));
        opener.join().unwrap();
        assert!(pool.is_empty());
        assert!(pool.head.owner.load(Ordering::Relaxed).is_null());
        block_on(pool.run(async {}));
    }

    #[test]
    fn a_run_local_holds_the_pool_until_it_ends() {
        let pool = TaskPool::<Gate, 2>::leak();
        let open = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(std::sync::Mutex::new(None));
        let gate = Gate {
            open: open.clone(),
            waker: waker.clone(),
        };
        assert!(pool.spawn(gate).is_ok());
        let mut local = Box::pin(pool.run_local(async {}));
        let noop = Waker::noop();
        let mut cx = Context::from_waker(noop);
        assert!(local.as_mut().poll(&mut cx).is_pending());
        // Between its polls it still holds the pool: another runner panics.
        let other = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut run = std::pin::pin!(pool.run(async {}));
            let _ = run.as_mut().poll(&mut cx);
        }));
        assert!(
            other.is_err(),
            "a second runner while a RunLocal holds the pool"
        );
        // Woken on this thread (the owner's bits) and then dropped before it ran the task:
        // the wake is handed on, and the next runner finishes the task.
        open.store(true, Ordering::Release);
        waker.lock().unwrap().take().expect("registered").wake();
        assert_ne!(
            pool.local[0].load(Ordering::Relaxed),
            0,
            "marked in the owner's bits"
        );
        drop(local);
        assert!(pool.head.owner.load(Ordering::Relaxed).is_null());
        assert_ne!(
            pool.ready[0].load(Ordering::Relaxed),
            0,
            "handed to the shared bits"
        );
        block_on(pool.run(async {}));
        assert!(pool.is_empty());
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

    /// Counts down one turn per wake it is given (`turn`), keeping its latest waker; done after
    /// `left` turns.
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

    #[test]
    fn tasks_across_several_ready_words_all_run() {
        // 130 tasks: three words of ready bits, the last one partly used. Each task waits for
        // 50 wakes from one of two threads; every wake must reach its task.
        const TASKS: usize = 130;
        let pool = TaskPool::<Turns, TASKS>::leak();
        let tasks = spawn_turns(pool, 50);
        let halves: Vec<Vec<_>> = vec![
            tasks.iter().step_by(2).cloned().collect(),
            tasks.iter().skip(1).step_by(2).cloned().collect(),
        ];
        let threads = give_turns_from_threads(halves, 50);
        block_on(pool.run(async {}));
        for t in threads {
            t.join().unwrap();
        }
        assert!(pool.is_empty());
    }

    /// A `Turns` task's turn counter and the waker it left.
    type TurnsHandle = (Arc<AtomicU32>, Arc<std::sync::Mutex<Option<Waker>>>);

    /// Fills `pool` with `Turns` tasks that each wait for `turns` turns: their handles.
    fn spawn_turns<const N: usize>(
        pool: &'static TaskPool<Turns, N>,
        turns: u32,
    ) -> Vec<TurnsHandle> {
        (0..N)
            .map(|_| {
                let turn = Arc::new(AtomicU32::new(0));
                let waker = Arc::new(std::sync::Mutex::new(None::<Waker>));
                let task = Turns {
                    left: turns,
                    turn: turn.clone(),
                    waker: waker.clone(),
                };
                pool.spawn(task).ok().unwrap();
                (turn, waker)
            })
            .collect()
    }

    /// One thread per group, each giving its tasks `rounds` turns (a wake each).
    fn give_turns_from_threads(
        groups: Vec<Vec<TurnsHandle>>,
        rounds: u32,
    ) -> Vec<std::thread::JoinHandle<()>> {
        groups
            .into_iter()
            .map(|mine| {
                std::thread::spawn(move || {
                    for _ in 0..rounds {
                        for (turns, waker) in &mine {
                            turns.fetch_add(1, Ordering::AcqRel);
                            if let Some(w) = waker.lock().unwrap().clone() {
                                w.wake();
                            }
                        }
                        std::thread::yield_now();
                    }
                })
            })
            .collect()
    }

    /// Gives each of `tasks` a turn per poll, `rounds` times, waking itself in between: wakes
    /// made on the runner's own thread.
    struct TurnGiver {
        tasks: Vec<TurnsHandle>,
        rounds: u32,
    }

    impl Future for TurnGiver {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.rounds == 0 {
                return Poll::Ready(());
            }
            self.rounds -= 1;
            for (turns, waker) in &self.tasks {
                turns.fetch_add(1, Ordering::AcqRel);
                if let Some(w) = waker.lock().unwrap().clone() {
                    w.wake();
                }
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn run_local_takes_every_wake_from_its_thread_and_two_others() {
        // Stress for the owner's private bits: 130 tasks (three ready words), a third woken 400
        // times by `main` on the runner's thread (private bits), the rest by two other threads
        // (shared bits), all at once. Every wake must reach its task.
        const TASKS: usize = 130;
        let pool = TaskPool::<Turns, TASKS>::leak();
        let mut groups = vec![Vec::new(), Vec::new(), Vec::new()];
        for (i, task) in spawn_turns(pool, 400).into_iter().enumerate() {
            groups[i % 3].push(task);
        }
        let here = groups.pop().unwrap();
        let threads = give_turns_from_threads(groups, 400);
        block_on(pool.run_local(TurnGiver {
            tasks: here,
            rounds: 400,
        }));
        for t in threads {
            t.join().unwrap();
        }
        assert!(pool.is_empty());
        assert!(pool.head.owner.load(Ordering::Relaxed).is_null());
    }

    #[test]
    fn wakes_from_many_threads_are_never_lost() {
        // 4 tasks, each waiting 2,000 times for a wake from its own thread.
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

    /// A gate task's switch and the waker it left.
    type GateHandle = (Arc<AtomicBool>, Arc<Mutex<Option<Waker>>>);

    /// Fills `pool` with closed gates: their switches and wakers.
    fn spawn_gates<const N: usize>(pool: &'static TaskPool<Gate, N>) -> Vec<GateHandle> {
        (0..N)
            .map(|_| {
                let open = Arc::new(AtomicBool::new(false));
                let waker = Arc::new(Mutex::new(None::<Waker>));
                let gate = Gate {
                    open: open.clone(),
                    waker: waker.clone(),
                };
                assert!(pool.spawn(gate).is_ok());
                (open, waker)
            })
            .collect()
    }

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
        // (woken once before). Afterwards, either the task finished, or the runner was woken or
        // saw a ready bit at the end of its pass (it then polls again): the next pass finishes
        // it. A lost wake leaves the task pending and the runner asleep.
        loom::model(|| {
            let pool: &'static TaskPool<Gate, 1> = Box::leak(Box::new(TaskPool::new()));
            let (open, waker) = spawn_gates(pool).pop().unwrap();
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
            // Second pass, concurrent with the wake: the runner is polled (its flag consumed),
            // registers, runs a pass and checks for tasks marked meanwhile, as `Run::poll` does.
            flag.0.store(false, Ordering::Release);
            pool.head.runner.register(&runner);
            pool.poll_tasks();
            let self_wake = pool.any_ready();
            opener.join().unwrap();
            if !pool.is_empty() {
                let recorded = self_wake || flag.0.load(Ordering::Acquire);
                assert!(recorded, "the wake was lost");
                let before = (
                    pool.slots[0].head.state.load(Ordering::Acquire),
                    pool.ready[0].load(Ordering::Acquire),
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
    fn loom_owner_and_remote_wakes_during_a_pass_are_never_lost() {
        // A runner holding the pool on its thread (`RunLocal`: `owner` names it) runs a pass
        // that takes task 0's bit, set on its own thread (the private bits, plain stores),
        // while task 1 is woken from another thread (the shared bits). Afterwards each has
        // finished or its wake is recorded. Task 2, woken here after the pass and left
        // unpolled when the runner lets go (`release`), reaches the next runner.
        loom::model(|| {
            let pool: &'static TaskPool<Gate, 3> = Box::leak(Box::new(TaskPool::new()));
            let mut gates = spawn_gates(pool);
            let wake_here = |(open, waker): GateHandle| {
                open.store(true, Ordering::Release);
                let w = waker.lock().unwrap().take();
                w.expect("polled once").wake();
            };
            let mut local = pool.run_local(std::future::ready(()));
            // `RunLocal::poll`'s first step: hold the pool, name this thread.
            pool.head.claim();
            pool.head.owner.store(thread_token(), Ordering::Relaxed);
            local.held = true;
            let flag = Arc::new(Flag(AtomicBool::new(false)));
            let runner = Waker::from(flag.clone());
            pool.head.runner.register(&runner);
            pool.poll_tasks();
            let later = gates.pop().unwrap();
            let remote = gates.pop().unwrap();
            let opener = loom::thread::spawn(move || {
                remote.0.store(true, Ordering::Release);
                let w = remote.1.lock().unwrap().take();
                if let Some(w) = w {
                    w.wake();
                }
            });
            wake_here(gates.pop().unwrap());
            flag.0.store(false, Ordering::Release);
            pool.head.runner.register(&runner);
            pool.poll_tasks();
            let self_wake = pool.any_ready();
            opener.join().unwrap();
            for i in 0..2 {
                let done = pool.slots[i].head.state.load(Ordering::Acquire) == 0;
                let recorded = self_wake || flag.0.load(Ordering::Acquire);
                assert!(done || recorded, "task {i}'s wake was lost");
            }
            // Task 2 woken here after the pass: the private bits, and a wake for the runner
            // (unless the remote wake already took its waker, which leaves one pending too).
            wake_here(later);
            assert!(
                flag.0.load(Ordering::Acquire),
                "the runner has a wake pending"
            );
            // The runner lets go unpolled: whatever is still marked reaches the next runner.
            drop(local);
            assert!(pool.head.owner.load(Ordering::Relaxed).is_null());
            pool.poll_tasks();
            assert!(pool.is_empty(), "the recorded wakes finish every task");
        });
    }

    #[test]
    fn loom_two_wakes_in_one_ready_word_are_never_lost() {
        // Two tasks woken from two threads while the runner runs a pass: both bits are in one
        // word, and only the wake that finds it 0 wakes the runner. Afterwards each task has
        // finished, or the runner was woken or saw a ready bit at the end of its pass.
        loom::model(|| {
            let pool: &'static TaskPool<Gate, 2> = Box::leak(Box::new(TaskPool::new()));
            let mut openers = Vec::new();
            let gates = spawn_gates(pool);
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
            // The second pass, as `Run::poll` runs it (flag consumed, register, pass, check).
            flag.0.store(false, Ordering::Release);
            pool.head.runner.register(&runner);
            pool.poll_tasks();
            let self_wake = pool.any_ready();
            for opener in openers {
                opener.join().unwrap();
            }
            if !pool.is_empty() {
                let recorded = self_wake || flag.0.load(Ordering::Acquire);
                assert!(recorded, "a wake was lost");
                pool.poll_tasks();
                assert!(pool.is_empty(), "the recorded wakes finish both tasks");
            }
        });
    }
}
