//! A minimal single-thread executor for up to 64 tasks, with the same idle policy as the loop's
//! `.wait()`: spin for at most `spin` (an adaptive budget, as in the crate's `spin.rs`), then park
//! the thread. No allocation while it runs (the task boxes
//! and wakers are built before the timed region). Tasks finished are never polled again.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

struct Shared {
    /// Bit i: task i was woken since it was last polled.
    ready: AtomicU64,
    thread: Thread,
    wakers: [TaskWaker; 64],
}

struct TaskWaker {
    shared: *const Shared,
    bit: u64,
}

thread_local! {
    /// This thread's executor state, leaked: a waker may still be inside `wake` (between setting
    /// the bit and unparking) when its task has finished and `run` has returned.
    static SHARED: &'static Shared = {
        let shared: &'static mut Shared = Box::leak(Box::new(Shared {
            ready: AtomicU64::new(0),
            thread: std::thread::current(),
            wakers: std::array::from_fn(|i| TaskWaker { shared: std::ptr::null(), bit: 1 << i }),
        }));
        let ptr: *const Shared = shared;
        for waker in shared.wakers.iter_mut() {
            waker.shared = ptr;
        }
        shared
    };
}

/// Builds this thread's executor state now (it allocates once), outside any timed region.
pub fn prepare() {
    SHARED.with(|_| {});
}

const VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake, drop_waker);

fn clone(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

fn wake(data: *const ()) {
    // SAFETY: `data` points to a `TaskWaker` inside a leaked (`'static`) `Shared`.
    let waker = unsafe { &*data.cast::<TaskWaker>() };
    // SAFETY: `shared` points to that same leaked `Shared`.
    let shared = unsafe { &*waker.shared };
    // Release: the wake follows whatever the waker's side published; pairs with the swap below.
    shared.ready.fetch_or(waker.bit, Ordering::Release);
    shared.thread.unpark();
}

fn drop_waker(_: *const ()) {}

/// Runs `tasks` to completion on this thread; `spin` is how long to poll for wake-ups before
/// parking. At most 64 tasks.
pub fn run<F: Future<Output = ()>>(mut tasks: Pin<&mut [F]>, spin: Duration) {
    assert!(tasks.len() <= 64, "at most 64 tasks");
    let all = if tasks.len() == 64 {
        u64::MAX
    } else {
        (1u64 << tasks.len()) - 1
    };
    let shared: &'static Shared = SHARED.with(|s| *s);
    shared.ready.store(all, Ordering::Relaxed);
    let mut live = all;
    let mut spinner = Spinner::new(spin);
    while live != 0 {
        let mut ready = shared.ready.swap(0, Ordering::Acquire);
        if ready == 0 {
            ready = wait(shared, &mut spinner);
        }
        ready &= live;
        while ready != 0 {
            let i = ready.trailing_zeros() as usize;
            ready &= ready - 1;
            let raw = RawWaker::new((&shared.wakers[i] as *const TaskWaker).cast(), &VTABLE);
            // SAFETY: the vtable functions uphold the RawWaker contract: the data is a
            // `TaskWaker` in leaked memory, valid forever; clone copies the pointer.
            let waker = unsafe { Waker::from_raw(raw) };
            let mut cx = Context::from_waker(&waker);
            // SAFETY: the elements of a pinned slice stay pinned: we poll task i in place and
            // never move it.
            let task = unsafe { Pin::new_unchecked(&mut tasks.as_mut().get_unchecked_mut()[i]) };
            if let Poll::Ready(()) = task.poll(&mut cx) {
                live &= !(1 << i);
            }
        }
    }
}

/// The idle policy of the crate's loop and `.wait()` (`spin.rs`), restated for this executor: the
/// budget moves between `max / 64` and `max`, doubling after a wait that ended within `max` and
/// halving after one that did not; a step that took over 20 us means the thread lost its core, and
/// ends the spin as a miss (spinning on would delay the thread that is to wake it).
struct Spinner {
    max: Duration,
    budget: Duration,
}

const QUICK_STEPS: u32 = 64;
const PREEMPTED: Duration = Duration::from_micros(20);

impl Spinner {
    fn new(max: Duration) -> Spinner {
        Spinner { max, budget: max }
    }

    fn adapt(&mut self, waited: Duration, hit: bool) {
        let floor = self.max / 64;
        self.budget = if hit && waited <= self.max {
            (self.budget * 2).clamp(floor, self.max)
        } else {
            (self.budget / 2).clamp(floor, self.max)
        };
    }
}

/// Waits for at least one wake-up and returns the ready set.
fn wait(shared: &Shared, spinner: &mut Spinner) -> u64 {
    if spinner.budget.is_zero() {
        return park(shared);
    }
    match spin_for_work(shared, spinner.budget) {
        Spun::Quick(ready) => ready,
        Spun::Timed(ready, start) => {
            spinner.adapt(start.elapsed(), true);
            ready
        }
        Spun::GaveUp(start, preempted) => {
            let ready = park(shared);
            // A wake soon after the spin gave up (within `max`) asks for a longer spin next
            // time.
            spinner.adapt(start.elapsed(), !preempted);
            ready
        }
    }
}

/// How an executor's spin ended.
enum Spun {
    /// A wake within the quick polls (no clock read).
    Quick(u64),
    /// A wake in the timed part, which began at the instant given.
    Timed(u64, Instant),
    /// No wake within the budget (or the thread lost its core: true).
    GaveUp(Instant, bool),
}

/// The executor's idle polls. Out of line and named as the loops' polls are, so that
/// `scripts/profile` leaves them out of the caller's count (callgrind's `--toggle-collect`): how
/// long an idle executor polls is timing, not work.
#[inline(never)]
fn spin_for_work(shared: &Shared, budget: Duration) -> Spun {
    for _ in 0..QUICK_STEPS {
        let ready = shared.ready.swap(0, Ordering::Acquire);
        if ready != 0 {
            return Spun::Quick(ready);
        }
        std::hint::spin_loop();
    }
    let start = Instant::now();
    let mut last = start;
    loop {
        let ready = shared.ready.swap(0, Ordering::Acquire);
        if ready != 0 {
            return Spun::Timed(ready, start);
        }
        let now = Instant::now();
        if now - last > PREEMPTED {
            return Spun::GaveUp(start, true);
        }
        if now - start >= budget {
            return Spun::GaveUp(start, false);
        }
        last = now;
        std::hint::spin_loop();
    }
}

fn park(shared: &Shared) -> u64 {
    loop {
        let ready = shared.ready.swap(0, Ordering::Acquire);
        if ready != 0 {
            return ready;
        }
        // A wake between the swap and here leaves the unpark token set: park returns at once.
        std::thread::park();
    }
}
