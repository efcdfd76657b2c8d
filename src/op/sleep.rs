//! `sleep` and `sleep_until`: a timer on the loop's wheel, with no kernel request.

use io_uring::types;

use super::kernel::{unit, Kernel, Sqe};
use super::{Headers, OpResult};
use crate::error::Error;
use crate::event_loop::registry::Registry;

/// A timer ([`Handle::sleep`](crate::Handle::sleep), [`Handle::sleep_until`](crate::Handle::sleep_until)):
/// the request's deadline is its end, kept by the loop's timeout wheel (never early, semantics
/// A4). It takes a slot while it waits but no kernel request and none of the `RING` entries.
#[derive(Debug)]
pub struct Sleep;

impl Kernel for Sleep {
    type Output = ();
    type Error = Error;
    type Held = ();

    /// Never staged: the loop keeps timers in its wheel only. Were one staged by mistake, it
    /// fails instead of ending early.
    fn sqe(&mut self, _: types::Fd, _: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        Err(Error::Os(libc::EINVAL))
    }

    #[inline]
    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        unit(outcome)
    }

    fn lost(error: Error) -> Error {
        error
    }
}
