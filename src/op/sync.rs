//! `sync` and `sync_data`: `fsync` / `fdatasync` of a descriptor. Durable: a dropped one still
//! runs to completion.

use io_uring::{opcode, types};

use super::{unit, Headers, Operation, Sqe};
use crate::error::Error;
use crate::event_loop::registry::Registry;
use crate::handle::UnitResult;

/// `fsync`, or `fdatasync` when `data_only`.
#[derive(Debug)]
pub(crate) struct Sync {
    pub(crate) data_only: bool,
}

impl Operation for Sync {
    type Output = UnitResult;

    fn sqe(&mut self, fd: types::Fd, _: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        let flags = if self.data_only {
            types::FsyncFlags::DATASYNC
        } else {
            types::FsyncFlags::empty()
        };
        Ok((opcode::Fsync::new(fd).flags(flags).build(), false))
    }

    fn output(self, outcome: Result<usize, Error>) -> UnitResult {
        unit(outcome)
    }

    fn lost(error: Error) -> UnitResult {
        Err(error)
    }
}
