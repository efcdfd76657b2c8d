//! Loop-thread mode: [`EventLoop::block_on`] runs a future on the loop thread itself, so the
//! requests it makes skip the cross-thread hop: it is polled inside the loop's iteration, after
//! completions are delivered and before staging, so what it submits enters the kernel in the
//! same `io_uring_enter`, with no eventfd write, and its completions wake it with a flag.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::ThreadId;

use super::ring::EventFd;
use super::EventLoop;
use crate::error::Error;

/// What the serving loop polls on its own thread.
pub(super) trait Local {
    /// Polls the future if it was woken (and is not done).
    fn poll(&mut self);
    /// Whether it was woken since its last poll: the loop must not sleep.
    fn woken(&self) -> bool;
}

/// `run`: nothing to poll (compiled away).
pub(super) struct Nothing;

impl Local for Nothing {
    #[inline(always)]
    fn poll(&mut self) {}
    #[inline(always)]
    fn woken(&self) -> bool {
        false
    }
}

/// The waker of the local future: a flag, plus an eventfd write when the wake comes from another
/// thread (the loop may sleep in the kernel).
struct Flag {
    woken: AtomicBool,
    loop_thread: ThreadId,
    eventfd: i32,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Release: what the waker did before is visible to the poll that follows.
        self.woken.store(true, Ordering::Release);
        if std::thread::current().id() != self.loop_thread {
            EventFd::from_raw(self.eventfd).ring();
        }
    }
}

/// A future run by `block_on`, and its output once ready.
struct Task<'a, T> {
    future: Pin<&'a mut dyn Future<Output = T>>,
    flag: Arc<Flag>,
    waker: Waker,
    output: Option<T>,
}

impl<T> Local for Task<'_, T> {
    fn poll(&mut self) {
        // Acquire: pairs with the waker's Release.
        if self.output.is_some() || !self.flag.woken.swap(false, Ordering::Acquire) {
            return;
        }
        let mut cx = Context::from_waker(&self.waker);
        if let Poll::Ready(output) = self.future.as_mut().poll(&mut cx) {
            self.output = Some(output);
        }
    }

    fn woken(&self) -> bool {
        self.output.is_none() && self.flag.woken.load(Ordering::Acquire)
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
    /// block the thread (no `.wait()` inside it: the loop would stop). If every `Handle` is
    /// dropped before `fut` finishes, the loop drains and `block_on` returns `Error::Closed`.
    /// Polling `fut` allocates once (its waker); the loop itself allocates nothing.
    ///
    /// ```
    /// use static_uring::Config;
    /// let (handle, event_loop) = static_uring::new::<64, 32, 1024>(Config::default()).unwrap();
    /// let answer = event_loop
    ///     .block_on(async move {
    ///         handle.nop(None).await.unwrap();
    ///         42 // `handle` is dropped here: the loop then drains and returns
    ///     })
    ///     .unwrap();
    /// assert_eq!(answer, 42);
    /// ```
    pub fn block_on<F: Future>(mut self, fut: F) -> Result<F::Output, Error> {
        let fut = pin!(fut);
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            loop_thread: std::thread::current().id(),
            eventfd: self.eventfd.raw(),
        });
        let mut task = Task {
            future: fut,
            waker: Waker::from(flag.clone()),
            flag,
            output: None,
        };
        // SAFETY: as in `run`: the claim makes this loop the table's only user until `close`.
        let table = unsafe { self.table.as_mut() };
        self.running = true;
        let result = self
            .prepare()
            .and_then(|()| self.serve(table, &mut task))
            .and_then(|()| self.drain(table));
        if result.is_err() {
            self.abandon_all(table);
        }
        self.running = false;
        self.close();
        result?;
        task.output.ok_or(Error::Closed)
    }
}
