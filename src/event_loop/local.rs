//! Loop-thread mode: [`EventLoop::block_on`] runs a future on the loop thread itself, so the
//! requests it makes skip the cross-thread hop: it is polled inside the loop's iteration, after
//! completions are delivered and before staging, so what it submits enters the kernel in the
//! same `io_uring_enter`, with no eventfd write, and its completions wake it with a flag.

use std::cell::Cell;
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::ring::EventFd;
use super::EventLoop;
use crate::error::Error;

thread_local! {
    /// The storage (its key) whose loop this thread is running, 0 for none.
    static SERVING: Cell<usize> = const { Cell::new(0) };
}

thread_local! {
    /// The `block_on` running on this thread, if any: its waker and its flag. Set while that
    /// call holds both, so the pointers are live whenever they are set.
    static BLOCK_ON: Cell<(*const Waker, *const Flag)> =
        const { Cell::new((std::ptr::null(), std::ptr::null())) };
}

/// Names the `block_on` running on this thread if `waker` wakes it (`will_wake`): a token for
/// [`wake_block_on_here`], null for any other waker.
#[inline]
pub(crate) fn block_on_here(waker: &Waker) -> *const () {
    let (here, flag) = BLOCK_ON.with(Cell::get);
    // SAFETY: `here` is set by the `block_on` running on this thread, which keeps its waker in
    // place until it clears the pointer (`BlockOnHere`).
    if !here.is_null() && waker.will_wake(unsafe { &*here }) {
        flag.cast()
    } else {
        std::ptr::null()
    }
}

/// Wakes the `block_on` running on this thread if `token` names it ([`block_on_here`]), as its
/// waker would but by reference: plain stores when this thread serves its loop, no reference
/// count, no waker taken out of a cell. False (nothing done) for any other token.
#[inline]
pub(crate) fn wake_block_on_here(token: *const ()) -> bool {
    let flag = BLOCK_ON.with(Cell::get).1;
    if token.is_null() || flag.cast() != token {
        return false;
    }
    // SAFETY: `flag` is set by the `block_on` running on this thread, which holds the `Arc` it
    // points into until it clears the pointer (`BlockOnHere`).
    unsafe { &*flag }.wake_here_or_remote();
    true
}

/// Marks `block_on`'s waker and flag as this thread's while it lives; restores the previous
/// (a `block_on` of another loop nested inside a poll) when dropped.
struct BlockOnHere((*const Waker, *const Flag));

impl BlockOnHere {
    fn begin(waker: &Waker, flag: &Arc<Flag>) -> BlockOnHere {
        BlockOnHere(BLOCK_ON.with(|b| b.replace((waker, Arc::as_ptr(flag)))))
    }
}

impl Drop for BlockOnHere {
    fn drop(&mut self) {
        BLOCK_ON.with(|b| b.set(self.0));
    }
}

/// Whether the calling thread is running the loop of the storage at `key`: a `.wait()` for one
/// of its operations would block the only thread that can complete it.
#[inline]
pub(crate) fn serves_here(key: usize) -> bool {
    SERVING.with(|serving| serving.get() == key)
}

/// Marks the calling thread as the loop thread of the storage at `key` while it lives.
pub(super) struct Serving(usize);

impl Serving {
    pub(super) fn begin(key: usize) -> Serving {
        Serving(SERVING.with(|serving| serving.replace(key)))
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        SERVING.with(|serving| serving.set(self.0));
    }
}

/// What the serving loop polls on its own thread.
pub(super) trait Local {
    /// Whether there is a future (`block_on`), whose requests the loop thread makes itself.
    const RUNS_FUTURE: bool;
    /// Polls the future if it was woken (and is not done).
    fn poll(&mut self);
    /// Whether it was woken since its last poll: the loop must not sleep.
    fn woken(&self) -> bool;
}

/// `run`: nothing to poll (compiled away).
pub(super) struct Nothing;

impl Local for Nothing {
    const RUNS_FUTURE: bool = false;
    #[inline(always)]
    fn poll(&mut self) {}
    #[inline(always)]
    fn woken(&self) -> bool {
        false
    }
}

/// The waker of the local future: a flag, plus an eventfd write when the wake comes from another
/// thread (the loop may sleep in the kernel).
///
/// A waker may be kept and woken at any later time, after `block_on` returned and the storage
/// (and its eventfd) are gone: it writes only through its own duplicate of the eventfd, which
/// lives as long as the last waker, and not at all once `block_on` is over.
struct Flag {
    /// Woken from another thread (Release, with an eventfd write).
    woken: AtomicBool,
    /// Woken on the thread that serves the loop (a completion the loop delivered, a task
    /// waking another): set and cleared with plain loads and stores, no read-modify-write.
    /// While `block_on` runs only its thread touches it (`serves_here`: a storage serves one
    /// loop at a time); a waker kept past `block_on` may still set it from the thread of the
    /// storage's next loop, which never reads it.
    woken_here: AtomicBool,
    /// `block_on` returned: wakes do nothing.
    over: AtomicBool,
    /// The storage's key: a wake on the thread that serves it (`serves_here`) is the loop's
    /// own and needs no eventfd write. A thread-local read, where comparing thread ids would
    /// clone and drop the current thread's handle (two locked RMWs per wake).
    key: usize,
    /// A duplicate of the loop's eventfd, owned by the waker: never a number another file reuses.
    eventfd: OwnedFd,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_here_or_remote();
    }
}

impl Flag {
    /// Marks the future woken: a plain store on the thread that serves the loop, else the
    /// remote flag and an eventfd write.
    #[inline]
    fn wake_here_or_remote(&self) {
        if serves_here(self.key) {
            // The loop's own thread: it polls next in program order (Relaxed suffices).
            self.woken_here.store(true, Ordering::Relaxed);
            return;
        }
        self.wake_remote();
    }

    /// [`wake_here_or_remote`](Self::wake_here_or_remote) from another thread.
    fn wake_remote(&self) {
        // Release: what the waker did before is visible to the poll that follows.
        self.woken.store(true, Ordering::Release);
        // Relaxed: a late wake that still rings only wakes a loop spuriously; the descriptor is
        // ours either way.
        if !self.over.load(Ordering::Relaxed) {
            EventFd::from_raw(self.eventfd.as_raw_fd()).ring();
        }
    }
}

/// A future run by `block_on` (dropped in place as soon as it is ready), and its output.
struct Task<'a, F: Future> {
    future: Pin<&'a mut Option<F>>,
    flag: Arc<Flag>,
    waker: Waker,
    output: Option<F::Output>,
}

impl<F: Future> Local for Task<'_, F> {
    const RUNS_FUTURE: bool = true;
    fn poll(&mut self) {
        if self.output.is_some() || !self.take_wake() {
            return;
        }
        let Some(future) = self.future.as_mut().as_pin_mut() else {
            return;
        };
        let mut cx = Context::from_waker(&self.waker);
        if let Poll::Ready(output) = future.poll(&mut cx) {
            self.output = Some(output);
            // Dropped now, not after the drain: what it owns (a `Handle`) must not keep the loop
            // serving.
            self.future.set(None);
        }
    }

    fn woken(&self) -> bool {
        // Relaxed for the loop thread's own flag (this thread wrote it); Acquire: pairs with a
        // remote waker's Release.
        self.output.is_none()
            && (self.flag.woken_here.load(Ordering::Relaxed)
                || self.flag.woken.load(Ordering::Acquire))
    }
}

impl<F: Future> Task<'_, F> {
    /// Whether a wake came since the last poll; clears it. A read-modify-write only when a
    /// remote wake is seen: a wake missed by the first load rang the eventfd, whose CQE sends
    /// the loop round again.
    fn take_wake(&self) -> bool {
        let here = self.flag.woken_here.load(Ordering::Relaxed);
        if here {
            self.flag.woken_here.store(false, Ordering::Relaxed);
        }
        // Acquire: pairs with the remote waker's Release.
        let remote = self.flag.woken.load(Ordering::Relaxed)
            && self.flag.woken.swap(false, Ordering::Acquire);
        here || remote
    }
}

impl<const S: usize, const R: usize, const W: usize> EventLoop<S, R, W> {
    /// Runs `fut` on the calling thread, which becomes the loop thread (loop-thread mode), then
    /// serves until every `Handle` is gone and drains, as [`run`](Self::run) does; returns
    /// `fut`'s output.
    ///
    /// Operations `fut` awaits are staged in the iteration that polled it and submitted with the
    /// other requests of that iteration in one `io_uring_enter`: no cross-thread hop, no eventfd;
    /// their completions wake it directly. Handles on other threads keep working. `fut` must not
    /// block the thread: a `.wait()` for an operation of this loop panics (it would block the
    /// only thread that can complete it). `fut` is dropped as soon as it is ready, so a `Handle`
    /// it owns does not hold the loop open. If every `Handle` is dropped before `fut` finishes,
    /// the loop drains and `block_on` returns `Error::Closed`.
    ///
    /// The config's placement (`cpu`, `priority`, `lock_memory`) is applied to the calling
    /// thread first; what the process may not use is the kernel's error, returned before `fut` is
    /// polled. `block_on` allocates once (its waker, which owns a duplicate of the loop's eventfd
    /// so that it may be kept and woken after the loop is gone); the loop allocates nothing.
    ///
    /// ```
    /// use static_uring::Config;
    /// let (handle, event_loop) = static_uring::new::<64, 32, 1024>(Config::default()).unwrap();
    /// let answer = event_loop
    ///     .block_on(async move {
    ///         handle.nop().await.unwrap();
    ///         42 // `handle` is dropped here: the loop then drains and returns
    ///     })
    ///     .unwrap();
    /// assert_eq!(answer, 42);
    /// ```
    pub fn block_on<F: Future>(mut self, fut: F) -> Result<F::Output, Error> {
        let eventfd = self.eventfd.duplicate().map_err(|e| Error::from_io(&e))?;
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            woken_here: AtomicBool::new(false),
            over: AtomicBool::new(false),
            key: self.storage.key(),
            eventfd,
        });
        let mut task = Task {
            future: pin!(Some(fut)),
            waker: Waker::from(flag.clone()),
            flag,
            output: None,
        };
        let here = BlockOnHere::begin(&task.waker, &task.flag);
        let result = self.run_local(&mut task);
        drop(here);
        task.flag.over.store(true, Ordering::Relaxed);
        result?;
        task.output.ok_or(Error::Closed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::handoff::wake;
    use crate::Config;
    use std::time::Duration;

    /// Operations a `block_on` future submits to its own loop never take the cross-thread
    /// release that carries the wake: with the sleep intent forced on, they ring nothing (no
    /// wake CQE follows); another thread's request still completes.
    #[test]
    fn loop_thread_submissions_skip_the_wake() {
        let config = Config {
            idle_spin: Duration::ZERO,
            ..Config::default()
        };
        let (handle, event_loop) = crate::new::<8, 8, 64>(config).unwrap();
        let storage = event_loop.storage.clone();
        let (go, signal) = std::sync::mpsc::channel::<()>();
        let remote = handle.clone();
        let other = std::thread::spawn(move || {
            signal.recv().unwrap();
            remote.nop().wait().unwrap();
        });
        let reader = event_loop.metrics_reader();
        let inside = reader.clone();
        event_loop
            .block_on(async move {
                for _ in 0..16 {
                    // As if the loop had declared it may sleep: a cross-thread release would ring.
                    wake::arm(storage.queue.word());
                    handle.nop().await.unwrap();
                }
                wake::disarm(storage.queue.word());
                assert_eq!(
                    inside.get().wakeups,
                    0,
                    "no eventfd write from the loop thread"
                );
                go.send(()).unwrap();
            })
            .unwrap();
        other.join().unwrap();
        assert_eq!(reader.get().completed, 17);
    }
}
