//! `poll`: readiness. Waits until a descriptor is readable or writable (`IORING_OP_POLL_ADD`,
//! one shot), the way to drive descriptors the loop does not read itself through the loop:
//! signalfd, timerfd, eventfd, pipes and sockets of other libraries.

use io_uring::{opcode, types};

use super::kernel::{Kernel, Sqe, Step};
use super::{Headers, OpResult};
use crate::error::Error;
use crate::event_loop::registry::Registry;

/// Readiness events of a descriptor (the `poll(2)` bits): what to wait for, and what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Readiness(u32);

impl Readiness {
    /// Data to read (`POLLIN`).
    pub const READABLE: Readiness = Readiness(libc::POLLIN as u32);
    /// Room to write (`POLLOUT`).
    pub const WRITABLE: Readiness = Readiness(libc::POLLOUT as u32);

    /// The raw `poll(2)` bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Whether there is data to read (or end of file to see).
    pub fn is_readable(self) -> bool {
        self.0 & libc::POLLIN as u32 != 0
    }

    /// Whether a write would not block.
    pub fn is_writable(self) -> bool {
        self.0 & libc::POLLOUT as u32 != 0
    }

    /// Whether the peer hung up (`POLLHUP` or `POLLRDHUP`).
    pub fn is_closed(self) -> bool {
        self.0 & (libc::POLLHUP | libc::POLLRDHUP) as u32 != 0
    }

    /// Whether the descriptor has an error pending (`POLLERR`).
    pub fn is_error(self) -> bool {
        self.0 & libc::POLLERR as u32 != 0
    }
}

impl std::ops::BitOr for Readiness {
    type Output = Readiness;
    fn bitor(self, other: Readiness) -> Readiness {
        Readiness(self.0 | other.0)
    }
}

/// Waits for `events` on the request's descriptor ([`Handle::poll`](crate::Handle::poll)). Its
/// output is the events that happened: a subset of those asked for, plus hang-up and error,
/// which `poll(2)` always reports.
#[derive(Debug)]
pub struct Poll {
    pub(crate) events: Readiness,
}

impl Kernel for Poll {
    type Output = Readiness;
    type Error = Error;
    type Held = ();

    /// No `check` of its own: always submitted as built.
    #[inline]
    fn valid(&self) -> bool {
        true
    }

    fn sqe(&mut self, fd: types::Fd, _: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        Ok((opcode::PollAdd::new(fd, self.events.0).build(), false))
    }

    /// The result is the mask of events that happened.
    fn advance(&mut self, n: usize, _: bool) -> Step {
        Step::Done(Ok(n))
    }

    #[inline]
    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        outcome.map(|events| Readiness(events as u32))
    }

    fn lost(error: Error) -> Error {
        error
    }
}
