//! The ring edge: everything that talks to the kernel's io_uring and the wake eventfd. The one
//! place where the loop makes syscalls and the single unsafe boundary toward the kernel.

mod queues;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use io_uring::{squeue, IoUring};

use queues::Queues;

use crate::config::Checked;
use crate::error::Error;
use crate::fault;
use crate::ring_features::RingFeatures;

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

/// `IORING_REGISTER_RING_FDS` and `IORING_UNREGISTER_RING_FDS` (io_uring_register opcodes).
const REGISTER_RING_FDS: libc::c_uint = 20;
const UNREGISTER_RING_FDS: libc::c_uint = 21;

/// `struct io_uring_rsrc_update`: one entry of a ring-descriptor (un)registration.
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

/// `struct __kernel_timespec`.
#[repr(C)]
struct KernelTimespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/// `struct io_uring_getevents_arg` (`IORING_ENTER_EXT_ARG`): no signal mask, a timeout.
#[repr(C)]
struct GeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

/// The loop's ring.
pub(crate) struct Ring {
    uring: IoUring,
    /// The storage's key for injected faults (tests only; see `fault.rs`).
    fault_key: usize,
    /// What `io_uring_enter` names the ring by: its descriptor, or, once registered with the
    /// loop thread, its index in that thread's registered rings.
    enter_fd: RawFd,
    /// `IORING_ENTER_REGISTERED_RING` while `enter_fd` is an index, else 0.
    enter_flags: u32,
    /// The thread (tid) that registered the ring, 0 if none: the index means something only to it.
    registered_tid: libc::pid_t,
    /// `IORING_SETUP_TASKRUN_FLAG` (with DEFER_TASKRUN or COOP_TASKRUN): the kernel flags pending
    /// task work in the SQ ring.
    taskrun_flag: bool,
    sqpoll: bool,
    iopoll: bool,
    /// The probed setup features in use (`registered_ring` is set by `register_fd`).
    features: RingFeatures,
    /// The SQ and CQ as the loop writes and reads them (`queues.rs`): `uring`'s own views are
    /// never used, as their drop would store stale cursors.
    queues: Queues,
}

impl Ring {
    /// Creates the ring (`entries` SQEs, twice as many CQEs) with the optional setup flags the
    /// config asks for and the kernel takes: an attempt refused with `EINVAL` is retried
    /// without `NO_SQARRAY`, then without `COOP_TASKRUN`, then without both. Refusals of the
    /// config itself become `Error::Config` with the reason.
    pub(crate) fn build(checked: &Checked, entries: u32, fault_key: usize) -> Result<Ring, Error> {
        let config = &checked.config;
        let mut base = IoUring::builder();
        if config.single_issuer {
            base.setup_single_issuer()
                .setup_defer_taskrun()
                // IORING_SQ_TASKRUN tells the spinning loop that deferred completions wait.
                .setup_taskrun_flag()
                .setup_r_disabled();
        }
        if let Some(idle) = config.sqpoll_idle {
            base.setup_sqpoll(idle.as_millis() as u32);
        }
        if config.io_poll {
            base.setup_iopoll();
        }
        // DEFER_TASKRUN already keeps task work for the loop's enters; the SQPOLL thread runs
        // its own, and the kernel refuses COOP_TASKRUN with it.
        let coop = config.coop_taskrun && !config.single_issuer && config.sqpoll_idle.is_none();
        let refused = fault::take_refused_setup();
        let attempts = [
            (config.no_sqarray, coop),
            (false, coop),
            (config.no_sqarray, false),
            (false, false),
        ];
        let mut result = Err(io::Error::from_raw_os_error(libc::EINVAL));
        for (k, &(no_sqarray, coop)) in attempts.iter().enumerate() {
            if attempts[..k].contains(&(no_sqarray, coop)) {
                continue;
            }
            let mut builder = base.clone();
            let mut asked = 0;
            if no_sqarray {
                builder.setup_no_sqarray();
                asked |= fault::SetupFlag::NoSqArray.bit();
            }
            if coop {
                builder.setup_coop_taskrun().setup_taskrun_flag();
                asked |= fault::SetupFlag::CoopTaskrun.bit();
            }
            result = if asked & refused != 0 {
                Err(io::Error::from_raw_os_error(libc::EINVAL))
            } else {
                builder.build(entries)
            }
            .map(|uring| (uring, no_sqarray, coop));
            match &result {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => continue,
                _ => break,
            }
        }
        let (uring, no_sqarray, coop) = result.map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => Error::Config("the kernel rejected the ring setup flags (EINVAL): single_issuer needs Linux 6.1+ and excludes sqpoll"),
            Some(libc::ENOMEM) => Error::Config("not enough locked memory for the ring (ENOMEM): lower RING or raise RLIMIT_MEMLOCK"),
            Some(libc::EPERM) => Error::Config("io_uring is not permitted here (EPERM): see kernel.io_uring_disabled"),
            Some(libc::ENOSYS) => Error::Config("io_uring is not available in this kernel (ENOSYS)"),
            _ => Error::from_io(&e),
        })?;
        let mut queues = Queues::map(&uring).map_err(|e| Error::from_io(&e))?;
        // Without SQPOLL the kernel reads entries only inside `io_uring_enter`, which only the
        // loop's thread calls, and so pushes them.
        queues.sq.reorder = config.sqpoll_idle.is_none();
        Ok(Ring {
            enter_fd: uring.as_raw_fd(),
            uring,
            queues,
            fault_key,
            enter_flags: 0,
            registered_tid: 0,
            taskrun_flag: config.single_issuer || coop,
            sqpoll: config.sqpoll_idle.is_some(),
            iopoll: config.io_poll,
            features: RingFeatures {
                no_sqarray,
                coop_taskrun: coop,
                registered_ring: false,
            },
        })
    }

    /// The optional setup features in use.
    pub(crate) fn features(&self) -> RingFeatures {
        self.features
    }

    /// Whether `io_uring_enter` names the ring by its registered index.
    #[inline]
    pub(crate) fn registered(&self) -> bool {
        self.enter_flags != 0
    }

    /// Registers the ring's descriptor with the calling thread (which must be the one that
    /// enters the ring from now on: the index is that thread's) and enters through it from then
    /// on. A refusal (a kernel before 5.18, the thread's 16 slots in use) leaves the plain
    /// descriptor in use; returns whether the registration took effect.
    pub(crate) fn register_fd(&mut self) -> bool {
        if self.registered() {
            return true;
        }
        let mut update = RsrcUpdate {
            // -1: the kernel picks a free index and writes it here.
            offset: u32::MAX,
            resv: 0,
            data: self.uring.as_raw_fd() as u64,
        };
        let registered = match fault::register_ring_errno(self.fault_key) {
            Some(_) => false,
            // SAFETY: `update` is a valid io_uring_rsrc_update for the one entry the call names;
            // the kernel reads it and writes its `offset` during the call only.
            None => unsafe {
                libc::syscall(
                    libc::SYS_io_uring_register,
                    self.uring.as_raw_fd(),
                    REGISTER_RING_FDS,
                    &mut update as *mut RsrcUpdate,
                    1,
                ) == 1
            },
        };
        if registered {
            self.enter_fd = update.offset as RawFd;
            self.enter_flags = io_uring::EnterFlags::REGISTERED_RING.bits();
            // SAFETY: plain syscall.
            self.registered_tid = unsafe { libc::gettid() };
            self.features.registered_ring = true;
        }
        registered
    }

    /// Undoes `register_fd` on the thread that made it (elsewhere the index means nothing; the
    /// registration then ends with that thread). From then on enters name the descriptor.
    pub(crate) fn unregister_fd(&mut self) {
        // SAFETY: plain syscall.
        if !self.registered() || self.registered_tid != unsafe { libc::gettid() } {
            return;
        }
        let update = RsrcUpdate {
            offset: self.enter_fd as u32,
            resv: 0,
            data: 0,
        };
        // SAFETY: `update` is a valid io_uring_rsrc_update for the one entry the call names,
        // read by the kernel during the call only.
        unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.uring.as_raw_fd(),
                UNREGISTER_RING_FDS,
                &update as *const RsrcUpdate,
                1,
            )
        };
        self.enter_fd = self.uring.as_raw_fd();
        self.enter_flags = 0;
        self.registered_tid = 0;
    }

    /// Registers a provided-buffer ring of `entries` entries at `addr` as buffer group `group`,
    /// with `flags` (`IOU_PBUF_RING_INC` or 0).
    ///
    /// # Safety
    /// The memory at `addr` stays valid (and is written only as the kernel's ABI says) for as
    /// long as the ring lives.
    pub(crate) unsafe fn register_buf_ring(
        &mut self,
        addr: u64,
        entries: u16,
        group: u16,
        flags: u16,
    ) -> io::Result<()> {
        // SAFETY: the caller's contract.
        unsafe {
            self.uring
                .submitter()
                .register_buf_ring_with_flags(addr, entries, group, flags)
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
        self.queues.sq.room() == 0
    }

    /// Free SQ entries (pushes that cannot fail before the next submission).
    #[inline]
    pub(crate) fn sq_room(&mut self) -> usize {
        self.queues.sq.room() as usize
    }

    /// Whether every pushed SQE was submitted (or taken by the SQPOLL thread).
    #[inline]
    pub(crate) fn sq_empty(&mut self) -> bool {
        self.queues.sq.len() == 0
    }

    /// SQEs pushed and not yet submitted.
    #[inline]
    pub(crate) fn sq_len(&mut self) -> usize {
        self.queues.sq.len() as usize
    }

    /// Whether a send was pushed since the last enter (one usually completes inside the enter
    /// that submits it: the socket buffer has room).
    #[inline]
    pub(crate) fn send_staged(&self) -> bool {
        self.queues.sq.send_staged()
    }

    /// The `user_data` of the one SQE waiting for the kernel, if one alone waits and it
    /// usually completes inside the enter that submits it (a nop, a send, a read or write of
    /// file data: `queues.rs`, `INLINE`).
    #[inline]
    pub(crate) fn lone_inline(&mut self) -> Option<u64> {
        self.queues.sq.lone_inline()
    }

    /// Whether CQEs are waiting: two loads, no store (a spin looks on every turn, and a store
    /// would dirty the cache line the kernel reads when it posts a CQE).
    #[inline]
    pub(crate) fn has_completions(&mut self) -> bool {
        !self.queues.cq.is_empty()
    }

    /// With DEFER_TASKRUN or COOP_TASKRUN (both set up with TASKRUN_FLAG): completions wait for
    /// task work that only the loop thread's next kernel entry runs. Always false on a ring
    /// without the flag (nothing is read).
    #[inline]
    pub(crate) fn needs_task_work(&mut self) -> bool {
        self.taskrun_flag && self.queues.sq.taskrun()
    }

    /// Pushes an SQE; the caller checked for room.
    #[inline]
    pub(crate) fn push(&mut self, sqe: &squeue::Entry) {
        let pushed = self.try_push(sqe);
        debug_assert!(pushed, "callers check for SQ room first");
    }

    /// Pushes an SQE if the SQ has room (false: full, nothing pushed).
    #[inline]
    pub(crate) fn try_push(&mut self, sqe: &squeue::Entry) -> bool {
        // SAFETY: the loop's invariant: every buffer and descriptor an SQE names lives in its
        // slot (or the storage's eventfd) until the matching CQE is processed, or forever if the
        // request is abandoned; nothing the kernel may use is freed, moved or handed back.
        unsafe { self.queues.sq.push(sqe) }
    }

    /// The next CQE (user data, result, flags), taken off the CQ; `None` when none waits
    /// (and then the CQEs taken are handed back to the kernel, as before every enter).
    /// Nothing borrows the ring meanwhile: handling a CQE may push SQEs.
    #[inline]
    pub(crate) fn pop_cqe(&mut self) -> Option<(u64, i32, u32)> {
        let cqe = self.queues.cq.pop();
        if cqe.is_none() {
            self.queues.cq.publish();
        }
        cqe
    }

    /// The `to_submit` and flags of an `enter(want, ..)` now, or `None` if it needs no syscall:
    /// with SQPOLL and the poller awake, submitting needs none (waiting always does). As the
    /// io-uring crate's submitter decides: GETEVENTS to wait, poll (IOPOLL), flush an overflowed
    /// CQ or run pending task work; SQ_WAKEUP for a sleeping poller.
    #[inline]
    fn enter_args(&mut self, want: usize) -> Option<(u32, u32)> {
        use io_uring::EnterFlags;
        let (sqpoll, iopoll, registered) = (self.sqpoll, self.iopoll, self.enter_flags);
        let sq = &mut self.queues.sq;
        let overflow = sq.cq_overflow();
        let taskrun = sq.taskrun();
        let mut flags = registered;
        if want > 0 || iopoll || overflow || taskrun {
            flags |= EnterFlags::GETEVENTS.bits();
        }
        if sqpoll {
            // `need_wakeup` orders our SQ tail store before its load (SeqCst), as the kernel's
            // poller does the reverse, so that one of us sees the other.
            if sq.need_wakeup() {
                flags |= EnterFlags::SQ_WAKEUP.bits();
            } else if want == 0 && !overflow && !taskrun {
                return None;
            }
        }
        sq.take_send_staged();
        Some((sq.len(), flags))
    }

    /// The `io_uring_enter` syscall on the ring's descriptor or registered index; `arg` is
    /// `IORING_ENTER_EXT_ARG`'s when `flags` has it.
    #[inline]
    fn syscall(
        &self,
        to_submit: u32,
        want: usize,
        flags: u32,
        arg: Option<&GeteventsArg>,
    ) -> io::Result<()> {
        let (arg, size) = match arg {
            Some(arg) => (
                arg as *const GeteventsArg as *const libc::c_void,
                std::mem::size_of::<GeteventsArg>(),
            ),
            None => (std::ptr::null(), 0),
        };
        // The kernel counts the CQEs not handed back as waiting.
        self.queues.cq.publish();
        // SAFETY: `enter_fd` names this ring (its descriptor, or with REGISTERED_RING its index
        // in this thread's registered rings: `register_fd` ran on this thread, which is the only
        // one that enters); the SQEs it submits were pushed under `push`'s invariant; `arg` is
        // null or a getevents_arg (whose timespec) outlives the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                self.enter_fd,
                to_submit,
                want as u32,
                flags,
                arg,
                size,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `io_uring_enter`: submits, and waits for `want` completions at most `timeout` (SQPOLL's
    /// wake-up flag included). A timeout or a transient error (EINTR, EAGAIN, EBUSY: the CQ is
    /// full) returns `Ok`: the loop drains and enters again. Returns whether the syscall was
    /// made (with SQPOLL, a submission to an awake poller is not), for the `enters` metric.
    pub(crate) fn enter(&mut self, want: usize, timeout: Option<Duration>) -> Result<bool, Error> {
        let result = match fault::enter_errno(self.fault_key) {
            Some(errno) => Err(std::io::Error::from_raw_os_error(errno)),
            None => {
                let Some((to_submit, flags)) = self.enter_args(want) else {
                    return Ok(false);
                };
                match timeout {
                    None => self.syscall(to_submit, want, flags, None),
                    Some(timeout) => {
                        let ts = KernelTimespec {
                            tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
                            tv_nsec: i64::from(timeout.subsec_nanos()),
                        };
                        let arg = GeteventsArg {
                            sigmask: 0,
                            sigmask_sz: 0,
                            min_wait_usec: 0,
                            ts: &ts as *const KernelTimespec as u64,
                        };
                        let flags = flags | io_uring::EnterFlags::EXT_ARG.bits();
                        self.syscall(to_submit, want, flags, Some(&arg))
                    }
                }
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) => match e.raw_os_error() {
                Some(libc::ETIME | libc::EINTR | libc::EAGAIN | libc::EBUSY) => Ok(true),
                _ => Err(Error::from_io(&e)),
            },
        }
    }

    /// `io_uring_enter(0, 0, GETEVENTS)`: runs pending task work, posting its CQEs; no wait.
    pub(crate) fn run_task_work(&mut self) -> Result<(), Error> {
        let flags = self.enter_flags | io_uring::EnterFlags::GETEVENTS.bits();
        match self.syscall(0, 0, flags, None) {
            Ok(()) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR | libc::EAGAIN | libc::EBUSY) => Ok(()),
                _ => Err(Error::from_io(&e)),
            },
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // A registration left by a loop that never reached its end (on this thread) would keep
        // the ring alive as long as the thread: end it here if we can.
        self.unregister_fd();
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
