//! Helpers shared by the end-to-end tests: bounded waits (a bug fails the test instead of hanging
//! it), a tiny executor with `join_all`, a loop thread wrapper, socket pairs and temp files.
//!
//! The executor here allocates (an `Arc` waker per `block_on`); the zero-allocation test has its
//! own allocation-free one.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use static_uring::{Config, Error, EventLoop, Handle};

/// The longest any single bounded wait may take before the test is declared hung.
pub const HANG: Duration = Duration::from_secs(10);

/// Runs `f` on a helper thread and returns its result, or panics if it takes longer than
/// `limit` (the helper thread is left behind; the test fails instead of hanging).
pub fn with_timeout<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let _ = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("blocking call hung for more than {limit:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("blocking call panicked"),
    }
}

/// Starts `f` on a thread now and lets the test collect its result later with a bound.
pub struct Background<T> {
    rx: mpsc::Receiver<T>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Background<T> {
    pub fn spawn(f: impl FnOnce() -> T + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        let thread = thread::spawn(move || {
            let _ = tx.send(f());
        });
        Background {
            rx,
            thread: Some(thread),
        }
    }

    /// The result, or a panic after `limit`.
    pub fn join(mut self, limit: Duration) -> T {
        match self.rx.recv_timeout(limit) {
            Ok(value) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                value
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("background task hung for more than {limit:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("background task panicked"),
        }
    }

    /// Whether the result is already there (without consuming it).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

/// Polls `cond` every millisecond until it holds; panics after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "condition never held within {limit:?}: {what}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// The event loop running on its own thread.
pub struct LoopThread {
    thread: Option<JoinHandle<Result<(), Error>>>,
}

impl LoopThread {
    pub fn spawn<const S: usize, const R: usize, const W: usize>(
        event_loop: EventLoop<S, R, W>,
    ) -> Self {
        LoopThread {
            thread: Some(thread::spawn(move || event_loop.run())),
        }
    }

    /// Whether `run` has returned.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// `run`'s result; panics if the loop has not returned within `limit`.
    pub fn join(mut self, limit: Duration) -> Result<(), Error> {
        let thread = self.thread.take().expect("joined once");
        let start = Instant::now();
        while !thread.is_finished() {
            assert!(
                start.elapsed() < limit,
                "event loop did not exit within {limit:?}"
            );
            thread::sleep(Duration::from_millis(1));
        }
        thread.join().expect("the loop thread must not panic")
    }
}

/// Starts a loop with `config` on its own thread.
pub fn start<const S: usize, const R: usize, const W: usize>(
    config: Config,
) -> (Handle<S, R, W>, LoopThread) {
    let (handle, event_loop) = static_uring::new::<S, R, W>(config).expect("loop starts");
    (handle, LoopThread::spawn(event_loop))
}

/// The default config with a 5 ms tick and no idle spin (so the loop really sleeps and the
/// wake path is exercised).
pub fn config() -> Config {
    Config {
        timeout_wheel_tick: Duration::from_millis(5),
        idle_spin: Duration::ZERO,
        ..Config::default()
    }
}

/// A connected pair of Unix stream sockets, each shared through an `Arc` (for `Fd`).
pub fn socket_pair() -> (Arc<UnixStream>, Arc<UnixStream>) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    (Arc::new(a), Arc::new(b))
}

/// A file in the temp directory, removed on drop.
pub struct TempFile {
    pub path: PathBuf,
    pub file: Arc<File>,
}

static NEXT_FILE: AtomicUsize = AtomicUsize::new(0);

impl TempFile {
    /// A new empty read-write file.
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "static-uring-test-{}-{}",
            std::process::id(),
            NEXT_FILE.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create temp file");
        TempFile {
            path,
            file: Arc::new(file),
        }
    }

    /// A new file holding `bytes`.
    pub fn with_contents(bytes: &[u8]) -> Self {
        let file = Self::new();
        std::fs::write(&file.path, bytes).expect("write temp file");
        file
    }

    /// The file reopened read-only.
    pub fn read_only(&self) -> Arc<File> {
        Arc::new(File::open(&self.path).expect("reopen temp file"))
    }

    /// The file's current contents (read with plain std I/O).
    pub fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.path).expect("read temp file")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A waker that unparks the thread running `block_on`.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A waker that does nothing (`Waker::noop` needs Rust 1.85; the MSRV is 1.82).
struct Ignore;

impl Wake for Ignore {
    fn wake(self: Arc<Self>) {}
}

/// Runs `fut` to completion on this thread; panics if it is not done within `limit`.
pub fn block_on<F: Future>(limit: Duration, fut: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    let start = Instant::now();
    loop {
        if let Poll::Ready(value) = fut.as_mut().poll(&mut cx) {
            return value;
        }
        let elapsed = start.elapsed();
        assert!(elapsed < limit, "future did not complete within {limit:?}");
        thread::park_timeout(limit - elapsed);
    }
}

/// Polls `fut` once with a waker that does nothing; returns its output if it finished.
pub fn poll_once<F: Future>(fut: Pin<&mut F>) -> Option<F::Output> {
    let waker = Waker::from(Arc::new(Ignore));
    let mut cx = Context::from_waker(&waker);
    match fut.poll(&mut cx) {
        Poll::Ready(value) => Some(value),
        Poll::Pending => None,
    }
}

/// Every future's output, in order; each future is polled until it is done.
pub struct JoinAll<F: Future> {
    futures: Vec<Pin<Box<F>>>,
    outputs: Vec<Option<F::Output>>,
}

pub fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> JoinAll<F> {
    let futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let outputs = futures.iter().map(|_| None).collect();
    JoinAll { futures, outputs }
}

impl<F: Future> Future for JoinAll<F> {
    type Output = Vec<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<F::Output>> {
        // SAFETY: nothing is moved out of `self`: the futures are boxed and pinned on their own,
        // and the outputs are only written or taken, never pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let mut pending = false;
        for (fut, out) in this.futures.iter_mut().zip(this.outputs.iter_mut()) {
            if out.is_none() {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(value) => *out = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            return Poll::Pending;
        }
        Poll::Ready(
            this.outputs
                .iter_mut()
                .map(|o| o.take().expect("all done"))
                .collect(),
        )
    }
}

/// Both outputs.
pub async fn join2<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() {
            Poll::Ready((ra.take().unwrap(), rb.take().unwrap()))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// The error of a result whose `Ok` side has no `Debug` (operation futures).
pub fn err<T, E>(result: Result<T, E>) -> E {
    match result {
        Ok(_) => panic!("expected an error, got Ok"),
        Err(e) => e,
    }
}

/// Polls `fut` once with `waker`; returns its output if it finished.
pub fn poll_with<F: Future>(fut: Pin<&mut F>, waker: &Waker) -> Option<F::Output> {
    match fut.poll(&mut Context::from_waker(waker)) {
        Poll::Ready(value) => Some(value),
        Poll::Pending => None,
    }
}

/// A waker that holds up the thread that wakes it (the loop thread, when it delivers a result)
/// until the test releases it. It lets a test order kernel events against the loop's iteration
/// steps (drain CQEs, advance the wheel, stage) deterministically.
pub struct Stall {
    entered: AtomicBool,
    released: AtomicBool,
}

impl Stall {
    pub fn new() -> Arc<Self> {
        Arc::new(Stall {
            entered: AtomicBool::new(false),
            released: AtomicBool::new(false),
        })
    }

    pub fn waker(self: &Arc<Self>) -> Waker {
        Waker::from(self.clone())
    }

    /// Waits until the loop thread is held inside `wake`.
    pub fn wait_entered(&self) {
        wait_until(HANG, "the loop thread reached the stalling waker", || {
            self.entered.load(Ordering::SeqCst)
        });
    }

    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
    }
}

impl Wake for Stall {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.entered.swap(true, Ordering::SeqCst) {
            return;
        }
        // Sleeping (not spinning) also lets the kernel run the stalled thread's io_uring task
        // work, so completions that arrive meanwhile are posted to the CQ.
        let start = Instant::now();
        while !self.released.load(Ordering::SeqCst) && start.elapsed() < HANG {
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Everything readable on socket `sock` right now (up to the end of stream), without blocking.
pub fn drain_socket(sock: &impl std::os::fd::AsRawFd) -> Vec<u8> {
    let fd = sock.as_raw_fd();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // SAFETY: reads into a live buffer of `chunk.len()` bytes from a live descriptor.
        let n = unsafe {
            libc::recv(
                fd,
                chunk.as_mut_ptr().cast(),
                chunk.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => break,
            n if n > 0 => out.extend_from_slice(&chunk[..n as usize]),
            _ => match std::io::Error::last_os_error() {
                e if e.kind() == std::io::ErrorKind::WouldBlock => break,
                e => panic!("reading the socket: {e}"),
            },
        }
    }
    out
}

/// Shrinks a socket's send buffer (the kernel doubles it and keeps a floor of a few KiB), so a
/// large send is short and resumed many times.
pub fn set_sndbuf(sock: &impl std::os::fd::AsRawFd, bytes: i32) {
    // SAFETY: setsockopt with a valid int option on a live socket.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            std::ptr::from_ref(&bytes).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

/// A recv that receives up to buffer length `len`: exactly, or at least one byte.
#[allow(dead_code)] // not every test file uses every helper
pub fn bounded<const S: usize, const R: usize, const W: usize>(
    op: static_uring::Op<static_uring::op::Recv, S, R, W>,
    len: usize,
    exact: bool,
) -> static_uring::Op<static_uring::op::Recv, S, R, W> {
    if exact {
        op.exact(len)
    } else {
        op.limit(len)
    }
}
