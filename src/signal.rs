//! Unix signals through the loop: [`Signals`] reads a signalfd with the loop's `read`, so a
//! service can stop on `SIGTERM` with the loop alone (no signal handler, no extra thread).
//!
//! A signalfd only sees signals that are blocked, and a process-directed signal goes to any
//! thread that does not block it: [`Signals::new`] blocks its signals in the calling thread,
//! and threads inherit the mask of the thread that starts them. So create it on the main thread
//! before starting any other thread (the loop's included); a thread started earlier still takes
//! the signal its own way (for `SIGTERM`, the default: the process ends).
//!
//! ```no_run
//! use static_uring::signal::{Signals, SIGTERM};
//! use static_uring::Config;
//!
//! let (io, event_loop) = static_uring::new::<64, 32, 1024>(Config::default()).unwrap();
//! let mut signals = Signals::new(&io, &[SIGTERM]).unwrap(); // before any thread starts
//! event_loop
//!     .block_on(async move {
//!         // ... spawn the service's tasks ...
//!         let signal = signals.recv().await.unwrap();
//!         assert_eq!(signal, SIGTERM);
//!         io.shutdown(); // the drain begins; the tasks see their requests end
//!     })
//!     .unwrap();
//! ```

use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::buf::IoBufMut;
use crate::error::{BufError, Error};
use crate::fd::Fd;
use crate::handle::{Handle, Op};
use crate::op;

/// `SIGTERM`: a polite request to stop (what `kill` and service managers send).
pub const SIGTERM: i32 = libc::SIGTERM;
/// `SIGINT`: an interrupt from the terminal (Ctrl-C).
pub const SIGINT: i32 = libc::SIGINT;
/// `SIGHUP`: the terminal went away, or (by convention) reload the configuration.
pub const SIGHUP: i32 = libc::SIGHUP;
/// `SIGQUIT`: quit from the terminal.
pub const SIGQUIT: i32 = libc::SIGQUIT;
/// `SIGUSR1`: for the application's own use.
pub const SIGUSR1: i32 = libc::SIGUSR1;
/// `SIGUSR2`: for the application's own use.
pub const SIGUSR2: i32 = libc::SIGUSR2;

/// The size of the kernel's `struct signalfd_siginfo`: one signal per read.
const SIGINFO: usize = std::mem::size_of::<libc::signalfd_siginfo>();

/// A set of signals received through a loop ([`recv`](Self::recv)). It holds a handle clone, so
/// it keeps the loop serving until dropped.
pub struct Signals<const SLOTS: usize, const RING: usize, const WHEEL: usize> {
    io: Handle<SLOTS, RING, WHEEL>,
    fd: Fd,
    /// The buffer one read fills, reused from read to read (lent to the read in flight).
    buf: Option<IoBufMut>,
}

impl<const S: usize, const R: usize, const W: usize> Signals<S, R, W> {
    /// Blocks `signals` in the calling thread (see the module doc: call it before starting other
    /// threads) and opens a signalfd for them. An invalid signal number, or one that cannot be
    /// caught (`SIGKILL`, `SIGSTOP`), is `InvalidInput`. Allocates once (the read buffer).
    pub fn new(handle: &Handle<S, R, W>, signals: &[i32]) -> io::Result<Self> {
        // SAFETY: `sigset_t` is plain data; `sigemptyset` initialises it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable sigset_t.
        unsafe { libc::sigemptyset(&mut set) };
        for &signal in signals {
            let uncatchable = signal == libc::SIGKILL || signal == libc::SIGSTOP;
            // SAFETY: `set` is a valid sigset_t; an invalid number is refused with -1.
            if uncatchable || unsafe { libc::sigaddset(&mut set, signal) } != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a signal a signalfd can receive",
                ));
            }
        }
        // SAFETY: `set` is initialised; the old mask is not wanted.
        let blocked = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if blocked != 0 {
            return Err(io::Error::from_raw_os_error(blocked));
        }
        // SAFETY: a new descriptor for an initialised set; the result is checked.
        let raw = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor nobody else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Signals {
            io: handle.clone(),
            fd: Fd::from(owned),
            buf: Some(IoBufMut::with_capacity(SIGINFO)),
        })
    }

    /// The next of the signals, by number (`SIGTERM`, ...): one read of the signalfd through the
    /// loop. Signals that arrive while none is awaited stay pending and come one per call; the
    /// kernel keeps one of each kind pending, so a repeat sent before the read is one. Dropped
    /// before its end, the read may still consume a signal; the next call then allocates its
    /// buffer again.
    pub fn recv(&mut self) -> Recv<'_, S, R, W> {
        let mut buf = self
            .buf
            .take()
            .unwrap_or_else(|| IoBufMut::with_capacity(SIGINFO));
        buf.clear();
        let op = self.io.read_some_at(&self.fd, 0, buf).limit(SIGINFO);
        Recv {
            op,
            home: &mut self.buf,
        }
    }
}

impl<const S: usize, const R: usize, const W: usize> std::fmt::Debug for Signals<S, R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Signals").field(&self.fd).finish()
    }
}

/// The future of [`Signals::recv`]: the signal's number, or the loop's error (`Closed`,
/// `Abandoned` at shutdown).
#[must_use = "futures do nothing unless polled"]
pub struct Recv<'a, const S: usize, const R: usize, const W: usize> {
    op: Op<op::ReadAt, S, R, W>,
    /// Where the buffer goes back when the read ends.
    home: &'a mut Option<IoBufMut>,
}

impl<const S: usize, const R: usize, const W: usize> Recv<'_, S, R, W> {
    /// Waits on this thread (not the loop's) for the signal.
    pub fn wait(self) -> Result<i32, Error> {
        let Recv { op, home } = self;
        settle(home, op.wait())
    }
}

/// The signal's number out of a read's result; the buffer goes back `home`.
fn settle(
    home: &mut Option<IoBufMut>,
    read: Result<IoBufMut, BufError<IoBufMut>>,
) -> Result<i32, Error> {
    let (buf, error) = match read {
        Ok(buf) => (buf, None),
        Err(BufError { buf, error }) => (buf, Some(error)),
    };
    let signal = match error {
        Some(e) => Err(e),
        // A short read cannot happen (the kernel hands out whole records); checked anyway.
        None if buf.len() < SIGINFO => Err(Error::Os(libc::EIO)),
        // `ssi_signo`, the record's first field.
        None => Ok(u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as i32),
    };
    if buf.capacity() >= SIGINFO {
        *home = Some(buf);
    }
    signal
}

impl<const S: usize, const R: usize, const W: usize> Future for Recv<'_, S, R, W> {
    type Output = Result<i32, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `op` is structurally pinned (never moved out while pinned: only `wait`, which
        // takes `self` by value, moves it); `home` is not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above.
        match unsafe { Pin::new_unchecked(&mut this.op) }.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(read) => Poll::Ready(settle(this.home, read)),
        }
    }
}

impl<const S: usize, const R: usize, const W: usize> std::fmt::Debug for Recv<'_, S, R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Recv").field(&self.op).finish()
    }
}
