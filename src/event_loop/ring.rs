//! The ring edge: everything that talks to the kernel's io_uring and the wake eventfd. The one
//! place where the loop makes syscalls and the single unsafe boundary toward the kernel.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::{cqueue, squeue, types, IoUring};

use crate::config::Checked;
use crate::error::Error;
use crate::fault;

/// A non-blocking, close-on-exec eventfd in counter mode.
#[derive(Debug)]
pub(crate) struct EventFd(RawFd);

impl EventFd {
    /// Creates the descriptor (once per storage, at its first claim).
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain syscall with constant flags.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(EventFd(fd))
    }

    /// Wraps a descriptor created by [`new`](Self::new) and kept open since.
    pub(crate) fn from_raw(fd: RawFd) -> Self {
        EventFd(fd)
    }

    /// The raw descriptor.
    pub(crate) fn raw(&self) -> RawFd {
        self.0
    }

    /// A close-on-exec duplicate of the descriptor, owned by the caller: it names the same
    /// eventfd for as long as the caller keeps it, whatever happens to this one.
    pub(crate) fn duplicate(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscall on our open descriptor.
        let fd = unsafe { libc::fcntl(self.0, libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by F_DUPFD_CLOEXEC: open, and owned by nobody else.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    }

    /// Adds one to the counter. EAGAIN (counter saturated) means a wake is pending anyway.
    pub(crate) fn ring(&self) {
        let one: u64 = 1;
        loop {
            // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
            let n = unsafe { libc::write(self.0, (&one as *const u64).cast(), 8) };
            if n >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return;
            }
        }
    }

    /// Drains the counter; returns the value read (0 if it was already empty).
    pub(crate) fn acknowledge(&self) -> u64 {
        let mut value: u64 = 0;
        loop {
            // SAFETY: reads 8 bytes into a valid u64 from our eventfd.
            let n = unsafe { libc::read(self.0, (&mut value as *mut u64).cast(), 8) };
            if n == 8 {
                return value;
            }
            if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return 0;
        }
    }

    /// Closes the descriptor.
    pub(crate) fn close(self) {
        // SAFETY: we own the descriptor and close it once.
        unsafe { libc::close(self.0) };
    }
}

/// The multishot poll SQE that turns eventfd writes into wake CQEs.
pub(crate) fn wake_poll_sqe(fd: RawFd) -> io_uring::squeue::Entry {
    io_uring::opcode::PollAdd::new(io_uring::types::Fd(fd), libc::POLLIN as u32)
        .multi(true)
        .build()
        .user_data(crate::handoff::wake::WAKE_TOKEN)
}

/// CQEs copied out of the ring per batch.
pub(crate) const BATCH: usize = 64;

/// The loop's ring.
pub(crate) struct Ring {
    uring: IoUring,
    /// The storage's key for injected faults (tests only; see `fault.rs`).
    fault_key: usize,
}

impl Ring {
    /// Creates the ring (`entries` SQEs, twice as many CQEs); refusals become `Error::Config`
    /// with the reason.
    pub(crate) fn build(checked: &Checked, entries: u32, fault_key: usize) -> Result<Ring, Error> {
        let config = &checked.config;
        let mut builder = IoUring::builder();
        if config.single_issuer {
            builder
                .setup_single_issuer()
                .setup_defer_taskrun()
                // IORING_SQ_TASKRUN tells the spinning loop that deferred completions wait.
                .setup_taskrun_flag()
                .setup_r_disabled();
        }
        if let Some(idle) = config.sqpoll_idle {
            builder.setup_sqpoll(idle.as_millis() as u32);
        }
        if config.io_poll {
            builder.setup_iopoll();
        }
        let uring = builder.build(entries).map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => Error::Config("the kernel rejected the ring setup flags (EINVAL): single_issuer needs Linux 6.1+ and excludes sqpoll"),
            Some(libc::ENOMEM) => Error::Config("not enough locked memory for the ring (ENOMEM): lower RING or raise RLIMIT_MEMLOCK"),
            Some(libc::EPERM) => Error::Config("io_uring is not permitted here (EPERM): see kernel.io_uring_disabled"),
            Some(libc::ENOSYS) => Error::Config("io_uring is not available in this kernel (ENOSYS)"),
            _ => Error::from_io(&e),
        })?;
        Ok(Ring { uring, fault_key })
    }

    /// Registers a provided-buffer ring of `entries` entries at `addr` as buffer group `group`.
    ///
    /// # Safety
    /// The memory at `addr` stays valid (and is written only as the kernel's ABI says) for as
    /// long as the ring lives.
    pub(crate) unsafe fn register_buf_ring(
        &mut self,
        addr: u64,
        entries: u16,
        group: u16,
    ) -> io::Result<()> {
        // SAFETY: the caller's contract.
        unsafe {
            self.uring
                .submitter()
                .register_buf_ring_with_flags(addr, entries, group, 0)
        }
    }

    /// A close-on-exec duplicate of the ring's descriptor, owned by the caller: it keeps the
    /// ring's kernel context (and so the descriptor number) alive for as long as it lives.
    pub(crate) fn duplicate(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: plain syscall on the ring's open descriptor.
        let fd = unsafe { libc::fcntl(self.uring.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by F_DUPFD_CLOEXEC: open, and owned by nobody else.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    }

    /// Whether the kernel supports `opcode` on this ring (`IORING_REGISTER_PROBE`).
    pub(crate) fn supports(&self, opcode: u8) -> io::Result<bool> {
        let mut probe = io_uring::Probe::new();
        self.uring.submitter().register_probe(&mut probe)?;
        Ok(probe.is_supported(opcode))
    }

    /// Registers `raws` as the ring's file table, replacing the current one if `replace`.
    pub(crate) fn register_files(&mut self, raws: &[i32], replace: bool) -> io::Result<()> {
        let submitter = self.uring.submitter();
        if replace {
            submitter.unregister_files()?;
        }
        submitter.register_files(raws)
    }

    /// Registers `iovecs` as the ring's fixed buffers.
    ///
    /// # Safety
    /// Every iovec describes memory that stays valid (and is used only as a pool buffer) for as
    /// long as the ring lives.
    pub(crate) unsafe fn register_buffers(&mut self, iovecs: &[libc::iovec]) -> io::Result<()> {
        // SAFETY: the caller's contract.
        unsafe { self.uring.submitter().register_buffers(iovecs) }
    }

    /// The kernel's table of supported opcodes (`None`: it has none to give, before Linux 5.6).
    /// Allocates: called once, when the loop is built.
    pub(crate) fn probe(&self) -> Option<io_uring::Probe> {
        let mut probe = io_uring::Probe::new();
        self.uring.submitter().register_probe(&mut probe).ok()?;
        Some(probe)
    }

    /// Enables a ring created disabled (single issuer): the calling thread becomes its submitter.
    pub(crate) fn enable(&mut self) -> Result<(), Error> {
        self.uring
            .submitter()
            .register_enable_rings()
            .map_err(|e| Error::from_io(&e))
    }

    /// Whether the SQ has no room left.
    #[inline]
    pub(crate) fn sq_full(&mut self) -> bool {
        self.uring.submission().is_full()
    }

    /// Whether every pushed SQE was submitted (or taken by the SQPOLL thread).
    #[inline]
    pub(crate) fn sq_empty(&mut self) -> bool {
        self.uring.submission().is_empty()
    }

    /// SQEs pushed and not yet submitted.
    #[inline]
    pub(crate) fn sq_len(&mut self) -> usize {
        self.uring.submission().len()
    }

    /// Whether CQEs are waiting.
    #[inline]
    pub(crate) fn has_completions(&mut self) -> bool {
        !self.uring.completion().is_empty()
    }

    /// With DEFER_TASKRUN: completions wait for task work that only an enter runs.
    #[inline]
    pub(crate) fn needs_task_work(&mut self) -> bool {
        self.uring.submission().taskrun()
    }

    /// Pushes an SQE; the caller checked for room.
    #[inline]
    pub(crate) fn push(&mut self, sqe: &squeue::Entry) {
        // SAFETY: the loop's invariant: every buffer and descriptor an SQE names lives in its
        // slot (or the storage's eventfd) until the matching CQE is processed, or forever if the
        // request is abandoned; nothing the kernel may use is freed, moved or handed back.
        let pushed = unsafe { self.uring.submission().push(sqe) };
        debug_assert!(pushed.is_ok(), "callers check for SQ room first");
    }

    /// Copies up to [`BATCH`] CQEs out of the ring into `batch` (once) and returns them; the
    /// slice borrows `batch`, not the ring, so the caller may push SQEs while handling them.
    pub(crate) fn fill<'a>(
        &mut self,
        batch: &'a mut [MaybeUninit<cqueue::Entry>; BATCH],
    ) -> &'a [cqueue::Entry] {
        self.uring.completion().fill(batch)
    }

    /// Whether an `enter(want, ..)` now makes the syscall. With SQPOLL and the poller awake,
    /// submitting needs none (the submitter skips it, as decided here); waiting always does.
    fn needs_syscall(&mut self, want: usize) -> bool {
        if want > 0 || !self.uring.params().is_setup_sqpoll() {
            return true;
        }
        let sq = self.uring.submission();
        sq.need_wakeup() || sq.cq_overflow() || sq.taskrun()
    }

    /// `io_uring_enter`: submits, and waits for `want` completions at most `timeout` (SQPOLL's
    /// wake-up flag is handled by the crate's submitter). A timeout or a transient error
    /// (EINTR, EAGAIN, EBUSY: the CQ is full) returns `Ok`: the loop drains and enters again.
    /// Returns whether the syscall was made (with SQPOLL, a submission to an awake poller is
    /// not), for the `enters` metric.
    pub(crate) fn enter(&mut self, want: usize, timeout: Option<Duration>) -> Result<bool, Error> {
        let syscall = self.needs_syscall(want);
        let result = match fault::enter_errno(self.fault_key) {
            Some(errno) => Err(std::io::Error::from_raw_os_error(errno)),
            None => {
                let submitter = self.uring.submitter();
                match timeout {
                    None => submitter.submit_and_wait(want),
                    Some(timeout) => {
                        let ts = types::Timespec::from(timeout);
                        let args = types::SubmitArgs::new().timespec(&ts);
                        submitter.submit_with_args(want, &args)
                    }
                }
            }
        };
        match result {
            Ok(_) => Ok(syscall),
            Err(e) => match e.raw_os_error() {
                Some(libc::ETIME | libc::EINTR | libc::EAGAIN | libc::EBUSY) => Ok(true),
                _ => Err(Error::from_io(&e)),
            },
        }
    }

    /// `io_uring_enter(0, 0, GETEVENTS)`: runs deferred task work, posting its CQEs; no wait.
    pub(crate) fn run_task_work(&mut self) -> Result<(), Error> {
        // SAFETY: no SQEs and no extra argument; the flags are the kernel's.
        let result = unsafe {
            self.uring.submitter().enter::<libc::sigset_t>(
                0,
                0,
                io_uring::EnterFlags::GETEVENTS.bits(),
                None,
            )
        };
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR | libc::EAGAIN | libc::EBUSY) => Ok(()),
                _ => Err(Error::from_io(&e)),
            },
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::handoff::wake::WAKE_TOKEN;

    #[test]
    fn ring_and_acknowledge_drain_the_counter() {
        // Ports of the model's waker.rs tests 2 and 4: acknowledging reads what was rung, also
        // when empty or saturated.
        let fd = EventFd::new().unwrap();
        fd.ring();
        fd.ring();
        assert_eq!(fd.acknowledge(), 2);
        assert_eq!(fd.acknowledge(), 0, "empty counter");
        let max: u64 = u64::MAX - 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(fd.raw(), (&max as *const u64).cast(), 8) };
        fd.ring(); // saturated: EAGAIN is "already pending"
        assert_eq!(fd.acknowledge(), max);
        fd.close();
    }

    #[test]
    fn wake_poll_sqe_is_one_multishot_poll_with_the_wake_token() {
        // Port of the model's waker.rs test 3: reinstall adds exactly one SQE, tagged so that its
        // CQEs are never mistaken for a request.
        let mut ring = io_uring::IoUring::new(4).unwrap();
        let fd = EventFd::new().unwrap();
        // SAFETY: the SQE references only the eventfd, which outlives the ring use here.
        unsafe { ring.submission().push(&wake_poll_sqe(fd.raw())).unwrap() };
        assert_eq!(ring.submission().len(), 1);
        ring.submit().unwrap();
        fd.ring();
        ring.submit_and_wait(1).unwrap();
        let cqe = ring.completion().next().unwrap();
        assert_eq!(cqe.user_data(), WAKE_TOKEN);
        assert!(cqe.result() >= 0);
        assert!(io_uring::cqueue::more(cqe.flags()), "multishot stays armed");
        drop(ring);
        fd.close();
    }
}
