//! The channel-based loop: commonware's shape on the same ring calls. Requests go in through a
//! bounded channel (`std::sync::mpsc::sync_channel`, preallocated) and come back through a
//! oneshot that is one `Arc` per request: the one heap allocation per request the design of
//! static-uring removes. The loop thread has the same idle policy as static-uring (spin for
//! `idle_spin`, then arm a flag and sleep in `io_uring_enter`, woken by an eventfd watched by a
//! multishot poll), so the difference measured is the machinery between caller and ring.

use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::tasks::{AsyncIo, Started};

/// Requests in the kernel at once (static-uring's RING in the benchmarks).
const IN_FLIGHT: usize = 128;
/// Channel capacity (static-uring's SLOTS in the benchmarks).
const CHANNEL: usize = 256;
const WAKE: u64 = u64::MAX;

/// The reply side of one request.
pub struct Oneshot {
    done: AtomicBool,
    result: AtomicI32,
    waker: Mutex<Option<Waker>>,
}

impl Oneshot {
    fn complete(&self, result: i32) {
        self.result.store(result, Ordering::Relaxed);
        // Release: publishes `result` to the caller's Acquire load of `done`.
        self.done.store(true, Ordering::Release);
        let waker = self.waker.lock().unwrap().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn is_set(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    fn result(&self) -> Option<i32> {
        self.done
            .load(Ordering::Acquire)
            .then(|| self.result.load(Ordering::Relaxed))
    }
}

struct Req {
    sqe: squeue::Entry,
    reply: Arc<Oneshot>,
}

struct Shared {
    /// The loop may be asleep in the kernel: submitters write the eventfd.
    sleeping: AtomicBool,
    /// The benchmark is over: leave once nothing is in flight.
    stop: AtomicBool,
    eventfd: RawFd,
    /// io_uring_enter calls and wake CQEs, for the report (written by the loop thread only).
    enters: AtomicU64,
    wakeups: AtomicU64,
}

impl Shared {
    fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(self.eventfd, (&one as *const u64).cast(), 8) };
    }
}

/// The caller's handle.
#[derive(Clone)]
pub struct ChanIo {
    tx: SyncSender<Req>,
    shared: Arc<Shared>,
    spin: Duration,
}

/// Stops and joins the loop thread, then closes the eventfd.
struct Join {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Join {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.ring();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("channel loop panicked");
        }
        // SAFETY: the loop thread is gone; we close our own descriptor once.
        unsafe { libc::close(self.shared.eventfd) };
    }
}

impl ChanIo {
    pub fn start(spin: Duration) -> Started<ChanIo> {
        // SAFETY: plain syscall with constant flags.
        let eventfd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        assert!(eventfd >= 0, "eventfd");
        let shared = Arc::new(Shared {
            sleeping: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            eventfd,
            enters: AtomicU64::new(0),
            wakeups: AtomicU64::new(0),
        });
        let (tx, rx) = sync_channel(CHANNEL);
        let ring = IoUring::new(2 * IN_FLIGHT as u32).expect("ring");
        let loop_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("channel-loop".into())
            .spawn(move || run_loop(ring, rx, &loop_shared, spin))
            .expect("spawn the channel loop");
        let io = ChanIo {
            tx,
            shared: shared.clone(),
            spin,
        };
        // One round trip: the loop thread is up before any timed region.
        check(io.wait(opcode::Nop::new().build()), 0, "first nop");
        Started {
            io,
            guard: Box::new(Join {
                shared,
                thread: Some(thread),
            }),
        }
    }

    /// Sends one request (allocating its oneshot) and wakes the loop if it sleeps.
    fn submit(&self, sqe: squeue::Entry) -> Arc<Oneshot> {
        let reply = Arc::new(Oneshot {
            done: AtomicBool::new(false),
            result: AtomicI32::new(0),
            waker: Mutex::new(None),
        });
        self.tx
            .send(Req {
                sqe,
                reply: reply.clone(),
            })
            .expect("channel loop gone");
        // SeqCst fence: Dekker pair with the loop's `sleeping` store and its recheck.
        fence(Ordering::SeqCst);
        if self.shared.sleeping.load(Ordering::Relaxed) {
            self.shared.ring();
        }
        reply
    }

    fn op(&self, sqe: squeue::Entry) -> ChanOp<'_> {
        ChanOp {
            io: self,
            sqe: Some(sqe),
            reply: None,
        }
    }

    /// Blocks without an executor: spin for the idle budget, then park on a thread waker.
    fn wait(&self, sqe: squeue::Entry) -> i32 {
        let reply = self.submit(sqe);
        if spin_while_pending(&reply, self.spin) {
            if let Some(result) = reply.result() {
                return result;
            }
        }
        let waker = THREAD_WAKER.with(Waker::clone);
        *reply.waker.lock().unwrap() = Some(waker);
        loop {
            if let Some(result) = reply.result() {
                return result;
            }
            std::thread::park();
        }
    }
}

/// The idle loop's polls: a CQE, or a request (kept in `stash`), within `spin` (true), or
/// nothing (false). Out of line and so named, as the crate's own (`EventLoop::spin_for_work`):
/// `scripts/profile` leaves the loop's idle polls out of its instruction count (the request a
/// poll receives is received here, so its channel read is left out too).
#[inline(never)]
fn spin_for_work(
    ring: &mut IoUring,
    rx: &Receiver<Req>,
    stash: &mut Option<Req>,
    spin: Duration,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < spin {
        if !ring.completion().is_empty() {
            return true;
        }
        if let Ok(req) = rx.try_recv() {
            *stash = Some(req);
            return true;
        }
        std::hint::spin_loop();
    }
    false
}

/// Polls until `reply` holds a result (true) or `spin` has passed (false). Out of line and so
/// named, as the crate's own (`Slot::spin_while_pending`): `scripts/profile` leaves a waiting
/// caller's polls out of its instruction count.
#[inline(never)]
fn spin_while_pending(reply: &Oneshot, spin: Duration) -> bool {
    let start = Instant::now();
    loop {
        if reply.is_set() {
            return true;
        }
        if start.elapsed() >= spin {
            return false;
        }
        std::hint::spin_loop();
    }
}

struct Unparker(std::thread::Thread);

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    /// Built once per thread (as `futures::executor::block_on` does), so a blocking wait only
    /// clones an `Arc`.
    static THREAD_WAKER: Waker = Waker::from(Arc::new(Unparker(std::thread::current())));
}

/// The future of one request: submits at the first poll, completes with the CQE result.
pub struct ChanOp<'a> {
    io: &'a ChanIo,
    sqe: Option<squeue::Entry>,
    reply: Option<Arc<Oneshot>>,
}

impl Future for ChanOp<'_> {
    type Output = i32;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<i32> {
        if let Some(sqe) = self.sqe.take() {
            self.reply = Some(self.io.submit(sqe));
        }
        let reply = self.reply.as_ref().expect("submitted");
        if let Some(result) = reply.result() {
            return Poll::Ready(result);
        }
        {
            let mut slot = reply.waker.lock().unwrap();
            // Checked under the lock: `complete` sets `done` before taking the waker.
            if let Some(result) = reply.result() {
                return Poll::Ready(result);
            }
            match &*slot {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        Poll::Pending
    }
}

fn check(result: i32, want: usize, what: &str) {
    assert!(
        result == want as i32,
        "{what}: {}",
        if result < 0 {
            std::io::Error::from_raw_os_error(-result).to_string()
        } else {
            format!("{result} bytes of {want}")
        }
    );
}

fn read_sqe(fd: RawFd, offset: u64, buf: &mut [u8]) -> squeue::Entry {
    opcode::Read::new(types::Fd(fd), buf.as_mut_ptr(), buf.len() as u32)
        .offset(offset)
        .build()
}

fn send_sqe(fd: RawFd, buf: &[u8]) -> squeue::Entry {
    opcode::Send::new(types::Fd(fd), buf.as_ptr(), buf.len() as u32)
        .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
        .build()
}

fn recv_sqe(fd: RawFd, buf: &mut [u8], len: usize) -> squeue::Entry {
    opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), len as u32)
        .flags(libc::MSG_WAITALL)
        .build()
}

/// A descriptor and the owner that keeps it open.
pub struct ChanFd {
    raw: RawFd,
    _owner: Arc<dyn AsFd + Send + Sync>,
}

impl AsyncIo for ChanIo {
    type Fd = ChanFd;
    type RBuf = &'static mut [u8];
    type SBuf = &'static [u8];

    fn fd<T: AsFd + Send + Sync + 'static>(&self, owner: Arc<T>) -> ChanFd {
        ChanFd {
            raw: owner.as_fd().as_raw_fd(),
            _owner: owner,
        }
    }

    fn rbuf(&self, memory: &'static mut [u8]) -> &'static mut [u8] {
        memory
    }

    fn sbuf(&self, memory: &'static [u8]) -> &'static [u8] {
        memory
    }

    async fn nop(&self) {
        check(self.op(opcode::Nop::new().build()).await, 0, "nop");
    }

    // The buffer moves into the request and back, as in commonware; it lives in the future
    // while the kernel uses it.
    async fn read_at(&self, fd: &ChanFd, offset: u64, buf: &'static mut [u8]) -> &'static mut [u8] {
        let result = self.op(read_sqe(fd.raw, offset, buf)).await;
        check(result, buf.len(), "read_at");
        buf
    }

    async fn send(&self, fd: &ChanFd, buf: &'static [u8]) -> &'static [u8] {
        check(self.op(send_sqe(fd.raw, buf)).await, buf.len(), "send");
        buf
    }

    async fn recv_exact(
        &self,
        fd: &ChanFd,
        buf: &'static mut [u8],
        len: usize,
    ) -> &'static mut [u8] {
        check(self.op(recv_sqe(fd.raw, buf, len)).await, len, "recv");
        buf
    }

    // Out of line: `scripts/profile` counts a caller's instructions inside this call.
    #[inline(never)]
    fn nop_wait(&self) {
        check(self.wait(opcode::Nop::new().build()), 0, "nop");
    }

    fn counters(&self) -> Option<(u64, u64)> {
        Some((
            self.shared.enters.load(Ordering::Relaxed),
            self.shared.wakeups.load(Ordering::Relaxed),
        ))
    }

    fn read_at_wait(&self, fd: &ChanFd, offset: u64, buf: &'static mut [u8]) -> &'static mut [u8] {
        let result = self.wait(read_sqe(fd.raw, offset, buf));
        check(result, buf.len(), "read_at");
        buf
    }
}

/// The loop thread: reap, admit from the channel, submit; when idle spin, then sleep.
fn run_loop(mut ring: IoUring, rx: Receiver<Req>, shared: &Shared, spin: Duration) {
    let mut slab: Vec<Option<Arc<Oneshot>>> = (0..IN_FLIGHT).map(|_| None).collect();
    let mut free: Vec<u64> = (0..IN_FLIGHT as u64).rev().collect();
    let mut stash: Option<Req> = None;
    let mut rearm = true;
    loop {
        let mut progressed = false;
        // Reap.
        for cqe in ring.completion() {
            progressed = true;
            if cqe.user_data() == WAKE {
                shared.wakeups.fetch_add(1, Ordering::Relaxed);
                let mut value = 0u64;
                // SAFETY: reads 8 bytes into a valid u64 from our eventfd.
                unsafe { libc::read(shared.eventfd, (&mut value as *mut u64).cast(), 8) };
                if !cqueue::more(cqe.flags()) {
                    rearm = true;
                }
                continue;
            }
            let index = cqe.user_data() as usize;
            let reply = slab[index].take().expect("in flight");
            free.push(index as u64);
            reply.complete(cqe.result());
        }
        if rearm {
            let poll = opcode::PollAdd::new(types::Fd(shared.eventfd), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(WAKE);
            // SAFETY: the SQE names only the eventfd, which outlives the loop.
            unsafe { ring.submission().push(&poll).expect("SQ room") };
            rearm = false;
        }
        // Admit.
        while let Some(&index) = free.last() {
            let req = match stash.take() {
                Some(req) => req,
                None => match rx.try_recv() {
                    Ok(req) => req,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                },
            };
            free.pop();
            slab[index as usize] = Some(req.reply);
            // SAFETY: the request's buffer lives in its caller's future until the oneshot
            // completes (the benchmark never drops a future early).
            unsafe {
                ring.submission()
                    .push(&req.sqe.user_data(index))
                    .expect("SQ room")
            };
            progressed = true;
        }
        if !ring.submission().is_empty() {
            shared.enters.fetch_add(1, Ordering::Relaxed);
            ring.submit().expect("submit");
        }
        if shared.stop.load(Ordering::Acquire) && free.len() == IN_FLIGHT {
            return;
        }
        if progressed {
            continue;
        }
        // Idle: spin, then arm and sleep.
        if spin_for_work(&mut ring, &rx, &mut stash, spin) {
            continue;
        }
        shared.sleeping.store(true, Ordering::Relaxed);
        // SeqCst fence: Dekker pair with the submitter's fence after its send.
        fence(Ordering::SeqCst);
        if let Ok(req) = rx.try_recv() {
            stash = Some(req);
        } else if ring.completion().is_empty() && !shared.stop.load(Ordering::Acquire) {
            shared.enters.fetch_add(1, Ordering::Relaxed);
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => panic!("io_uring_enter: {e}"),
            }
        }
        shared.sleeping.store(false, Ordering::Relaxed);
    }
}
