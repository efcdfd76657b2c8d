//! `post` and `recv_message`: loop-to-loop messages (`IORING_OP_MSG_RING`; the protocol is in
//! `mailbox.rs`).

use std::sync::Arc;
use std::time::Duration;

use io_uring::{opcode, types};

use super::kernel::{unit, Kernel, Sqe, Step};
use super::{Headers, OpResult};
use crate::error::Error;
use crate::event_loop::id::message_data;
use crate::event_loop::registry::Registry;
use crate::mailbox::{Inbox, Mailbox};

/// How long a post waits before it tries again a receiving ring that is not running yet (a
/// single-issuer ring is disabled until its loop thread starts: `EBADFD`).
const RETRY_AFTER: Duration = Duration::from_micros(100);

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
    /// The last SQE was the message (not a wait): `sqe` called again means it asked for a
    /// retry, so a wait comes next.
    sent: bool,
    /// The wait between two tries, read by the kernel when the wait's SQE is submitted.
    pause: types::Timespec,
}

impl Post {
    pub(crate) fn new(mailbox: &Mailbox, value: u64) -> Self {
        Post {
            inbox: mailbox.inbox().clone(),
            value,
            ticket: false,
            sent: false,
            pause: types::Timespec::from(RETRY_AFTER),
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

    /// Reserves room in the receiving loop first (`Closed`, `Full`: no SQE), once. Called again
    /// after the message asked for a retry (a receiving ring not running yet), a short wait on
    /// the kernel's timer comes first, then the message again, until the receiving loop runs or
    /// is gone (`Closed`).
    fn sqe(&mut self, _: types::Fd, _: u32, _: &Registry, _: &mut Headers<'_>) -> Sqe {
        if !self.ticket {
            self.inbox.reserve()?;
            self.ticket = true;
        } else if self.inbox.is_sealed() {
            return Err(Error::Closed);
        }
        if std::mem::take(&mut self.sent) {
            let wait = opcode::Timeout::new(&self.pause).build();
            return Ok((wait, false));
        }
        self.sent = true;
        let (user_data, result) = message_data(self.value);
        let sqe = opcode::MsgRingData::new(types::Fd(self.inbox.raw()), result, user_data, None);
        Ok((sqe.build(), false))
    }

    /// Posted: the ticket is the receiver's now (returned when a caller takes the message).
    fn advance(&mut self, _: usize, cancel_requested: bool) -> Step {
        if !self.sent {
            // A wait ended (it reports -ETIME; a 0 is taken the same way): try again.
            return if cancel_requested {
                Step::Done(Err(Error::Timeout))
            } else {
                Step::Again
            };
        }
        self.ticket = false;
        Step::Done(Ok(0))
    }

    /// `EOWNERDEAD`: the receiving ring's thread is gone (a single-issuer ring). `EINVAL` on a
    /// kernel before 5.18, but `EventLoop::mailbox` refuses those first.
    fn error(errno: i32) -> Error {
        match errno {
            libc::EOWNERDEAD => Error::Closed,
            errno => Error::Os(errno),
        }
    }

    /// `EBADFD`: the receiving ring is not running yet (a single-issuer ring is disabled until
    /// its loop thread starts): try again after a wait. `ETIME`: that wait ended.
    fn retries(errno: i32) -> bool {
        matches!(errno, libc::EBADFD | libc::ETIME)
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
