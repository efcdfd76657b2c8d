//! `nop`: a request through the ring that does nothing (the loop's own round trip).

use io_uring::{opcode, types};

use super::kernel::{unit, Kernel, Sqe};
use super::{Headers, OpResult};
use crate::error::Error;
use crate::event_loop::registry::Registry;

/// A no-op ([`Handle::nop`](crate::Handle::nop)).
#[derive(Debug)]
pub struct Nop;

impl Kernel for Nop {
    type Output = ();
    type Error = Error;
    type Held = ();

    /// No `check` of its own: always submitted as built.
    #[inline]
    fn valid(&self) -> bool {
        true
    }

    #[inline]
    fn sqe(&mut self, _: types::Fd, _: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        Ok((opcode::Nop::new().build(), false))
    }

    #[inline]
    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        unit(outcome)
    }

    #[inline]
    fn lost(error: Error) -> Error {
        error
    }
}
