//! `nop`: a request through the ring that does nothing (the loop's own round trip).

use io_uring::{opcode, types};

use super::{unit, Headers, Operation, Sqe};
use crate::error::Error;
use crate::event_loop::registry::Registry;
use crate::handle::UnitResult;

/// A no-op.
#[derive(Debug)]
pub(crate) struct Nop;

impl Operation for Nop {
    type Output = UnitResult;

    fn sqe(&mut self, _: types::Fd, _: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        Ok((opcode::Nop::new().build(), false))
    }

    fn output(self, outcome: Result<usize, Error>) -> UnitResult {
        unit(outcome)
    }

    fn lost(error: Error) -> UnitResult {
        Err(error)
    }
}
