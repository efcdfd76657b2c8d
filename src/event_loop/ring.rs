//! The ring edge: everything that talks to the kernel's io_uring and the wake eventfd. The one
//! place where the loop makes syscalls and the single unsafe boundary toward the kernel.

use std::io;
use std::os::fd::RawFd;

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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::handoff::wake::{WakeState, WAKE_TOKEN};

    #[test]
    fn ring_and_acknowledge_keep_sequence_and_drain_counter() {
        // Ports of waker.rs tests 2 and 4: ringing and acknowledging (also when empty or
        // saturated) never change the sequence.
        let w = WakeState::new();
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
        assert_eq!(w.submitted(), 0);
        fd.close();
    }

    #[test]
    fn wake_poll_sqe_is_one_multishot_poll_with_the_wake_token() {
        // Port of waker.rs test 3: reinstall adds exactly one SQE, tagged so that its CQEs are
        // never mistaken for a request.
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
