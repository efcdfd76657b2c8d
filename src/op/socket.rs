//! `accept` and `connect`: sockets that become connected.

use io_uring::{opcode, types};

use super::kernel::{unit, Kernel, Sqe, Step};
use super::{Headers, OpResult, RawAddr};
use crate::error::Error;
use crate::event_loop::registry::Registry;

/// Accepts a connection (`accept4` with `SOCK_CLOEXEC`); the result is the new descriptor
/// ([`Handle::accept`](crate::Handle::accept)).
#[derive(Debug)]
pub struct Accept;

impl Kernel for Accept {
    type Output = std::os::fd::OwnedFd;
    type Error = Error;
    type Held = ();

    /// No `check` of its own: always submitted as built.
    #[inline]
    fn valid(&self) -> bool {
        true
    }

    fn sqe(&mut self, fd: types::Fd, _: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        accept_sqe(fd)
    }

    /// The result is the accepted descriptor.
    fn advance(&mut self, n: usize, _: bool) -> Step {
        Step::Done(Ok(n))
    }

    /// A connection accepted for a request nobody takes (an orphan retired, a result dropped)
    /// is closed, not leaked.
    fn discard(&self, outcome: Result<usize, Error>) {
        if let Ok(fd) = outcome {
            // SAFETY: the kernel gave this descriptor to this request and nothing else owns it:
            // a caller that takes the result takes the outcome out first.
            unsafe { libc::close(fd as i32) };
        }
    }

    #[inline]
    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        // SAFETY: an accept's `Ok` is the descriptor the kernel created for this request; the
        // outcome was taken out of the slot, so only this `OwnedFd` owns it.
        outcome.map(|fd| unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) })
    }

    fn lost(error: Error) -> Error {
        error
    }
}

/// One accept (`accept4` with `SOCK_CLOEXEC`, no peer address) on listener `fd`: `accept`'s
/// SQE, and each of an `accept_multi` stream's.
pub(crate) fn accept_sqe(fd: types::Fd) -> Sqe {
    let entry = opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
        .flags(libc::SOCK_CLOEXEC)
        .build();
    Ok((entry, false))
}

/// Connects to `addr`, kept here (stable) until the CQE
/// ([`Handle::connect`](crate::Handle::connect)).
#[derive(Debug)]
pub struct Connect {
    pub(crate) addr: RawAddr,
}

impl Kernel for Connect {
    type Output = ();
    type Error = Error;
    type Held = ();

    /// No `check` of its own: always submitted as built.
    #[inline]
    fn valid(&self) -> bool {
        true
    }

    fn sqe(&mut self, fd: types::Fd, _: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        let entry = opcode::Connect::new(fd, self.addr.as_ptr(), self.addr.len()).build();
        Ok((entry, false))
    }

    #[inline]
    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        unit(outcome)
    }

    fn lost(error: Error) -> Error {
        error
    }
}
