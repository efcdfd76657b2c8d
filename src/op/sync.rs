//! `sync` and `sync_data`: `fsync` / `fdatasync` of a descriptor. Durable: a dropped one still
//! runs to completion.

use io_uring::{opcode, types};

use super::kernel::{unit, Kernel, Sqe};
use super::{Headers, OpResult};
use crate::error::Error;
use crate::event_loop::registry::Registry;

/// `fsync`, or `fdatasync` when `data_only` ([`Handle::sync`](crate::Handle::sync),
/// [`Handle::sync_data`](crate::Handle::sync_data)).
#[derive(Debug)]
pub struct Sync {
    pub(crate) data_only: bool,
}

impl Kernel for Sync {
    type Output = ();
    type Error = Error;
    type Held = ();

    /// No `check` of its own: always submitted as built.
    #[inline]
    fn valid(&self) -> bool {
        true
    }

    fn sqe(&mut self, fd: types::Fd, _: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        let flags = if self.data_only {
            types::FsyncFlags::DATASYNC
        } else {
            types::FsyncFlags::empty()
        };
        Ok((opcode::Fsync::new(fd).flags(flags).build(), false))
    }

    #[inline]
    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        unit(outcome)
    }

    fn lost(error: Error) -> Error {
        error
    }
}
