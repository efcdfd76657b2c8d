//! `post` and `recv_message`: loop-to-loop messages (`IORING_OP_MSG_RING`; the protocol is in
//! `mailbox.rs`).

use std::sync::Arc;

use io_uring::{opcode, types};

use super::kernel::{unit, Kernel, Sqe, Step};
use super::{Headers, OpResult};
use crate::error::Error;
use crate::event_loop::id::message_data;
use crate::event_loop::registry::Registry;
use crate::mailbox::{Inbox, Mailbox};

/// Posts a `u64` into another loop's completion queue ([`Handle::post`](crate::Handle::post)).
/// Succeeds once the kernel has posted it; the receiving loop then holds it for a
/// [`recv_message`](crate::Handle::recv_message).
pub struct Post {
    inbox: Arc<Inbox>,
    value: u64,
    /// A ticket of the inbox is held (reserved at the first SQE) and not handed to the
    /// receiver yet: given back when the operation is dropped, so a post that was never sent
    /// frees its room.
    ticket: bool,
}

impl Post {
    pub(crate) fn new(mailbox: &Mailbox, value: u64) -> Self {
        Post {
            inbox: mailbox.inbox().clone(),
            value,
            ticket: false,
        }
    }
}

impl Drop for Post {
    fn drop(&mut self) {
        if self.ticket {
            self.inbox.release();
        }
    }
}

impl std::fmt::Debug for Post {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Post").field("value", &self.value).finish()
    }
}

impl Kernel for Post {
    type Output = ();
    type Error = Error;
    type Held = ();

    /// A receiving loop already draining or gone: `Closed` without a slot.
    fn check(self, held: ()) -> Result<(Self, ()), OpResult<Self>> {
        if self.inbox.is_sealed() {
            return Err(Err(Error::Closed));
        }
        Ok((self, held))
    }

    /// Reserves room in the receiving loop first (`Closed`, `Full`: no SQE), once.
    fn sqe(&mut self, _: types::Fd, _: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        if !self.ticket {
            self.inbox.reserve()?;
            self.ticket = true;
        }
        let (user_data, result) = message_data(self.value);
        let sqe = opcode::MsgRingData::new(types::Fd(self.inbox.raw()), result, user_data, None);
        Ok((sqe.build(), false))
    }

    /// Posted: the ticket is the receiver's now (returned when a caller takes the message).
    fn advance(&mut self, _: usize, _: bool) -> Step {
        self.ticket = false;
        Step::Done(Ok(0))
    }

    /// `EOWNERDEAD`: the receiving ring's thread is gone (a single-issuer ring); `EBADFD`: its
    /// ring is not running yet (a single-issuer ring before `run`). `EINVAL` on a kernel before
    /// 5.18, but `EventLoop::mailbox` refuses those first.
    fn error(errno: i32) -> Error {
        match errno {
            libc::EOWNERDEAD => Error::Closed,
            errno => Error::Os(errno),
        }
    }

    #[inline]
    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        unit(outcome)
    }

    fn lost(error: Error) -> Error {
        error
    }
}

/// Takes the next message posted to this loop ([`Handle::recv_message`](crate::Handle::recv_message)).
/// Held by the loop (a slot, no kernel request, none of the `RING` entries) until a message
/// comes, its deadline (`Timeout`) or the loop's end (`Closed`).
#[derive(Debug)]
pub struct RecvMessage {
    /// The message, written by the loop before it delivers.
    pub(crate) value: u64,
}

impl Kernel for RecvMessage {
    type Output = u64;
    type Error = Error;
    type Held = ();

    /// Never staged: the loop holds receivers itself. Were one staged by mistake, it fails.
    fn sqe(&mut self, _: types::Fd, _: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        Err(Error::Os(libc::EINVAL))
    }

    #[inline]
    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self> {
        outcome.map(|_| self.value)
    }

    fn lost(error: Error) -> Error {
        error
    }
}
