//! What the loop and an operation's future need from an operation ([`Kernel`]), and the
//! helpers the operations share.
//!
//! The items here are `pub` inside a private module: the public [`Operation`](super::Operation)
//! extends [`Kernel`] without users being able to name or implement it.

use io_uring::{squeue, types};

use super::{MsgHeader, OpKind, OpResult, Work};
use crate::error::{BufError, Error};
use crate::event_loop::registry::Registry;
use crate::op::Headers;
use crate::vectored::{VectorCell, Vectors};

/// How much of a transfer ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Every byte (`send`, `write_at`, `read_at`, exact `recv`); zero bytes first is end of
    /// file.
    Whole,
    /// The first bytes (`recv`); zero bytes first is end of file.
    FirstBytes,
    /// The first bytes, or end of file (`read_some_at`: pread semantics).
    FirstBytesOrEof,
}

/// A transfer's cursor `pos` (toward `end`) after a CQE of `n` bytes.
pub fn transfer(
    pos: &mut usize,
    end: usize,
    n: usize,
    until: Until,
    cancel_requested: bool,
) -> Step {
    if n == 0 && *pos < end && until != Until::FirstBytesOrEof {
        return Step::Done(Err(Error::UnexpectedEof));
    }
    if n > end - *pos {
        // A kernel surprise fails the request concerned, never the loop.
        return Step::Done(Err(Error::Os(libc::EIO)));
    }
    *pos += n;
    if *pos == end || until != Until::Whole {
        Step::Done(Ok(*pos))
    } else if cancel_requested {
        Step::Done(Err(Error::Timeout))
    } else {
        Step::Again
    }
}

/// The byte count of an SQE over `pos..end`, at most `limit`.
#[inline]
pub fn sqe_len(pos: usize, end: usize, limit: u32) -> u32 {
    (end - pos).min(limit as usize) as u32
}

/// The error of an operation whose buffer must stay with the kernel: an empty one comes back.
pub fn lost_buf<B: Default>(error: Error) -> BufError<B> {
    BufError {
        buf: B::default(),
        error,
    }
}

/// An operation's next SQE and whether it uses a registered buffer, or the error that ends the
/// request without one.
pub type Sqe = Result<(squeue::Entry, bool), Error>;

/// The result of an operation that hands its buffer back whole.
pub fn buf_back<B>(buf: B, outcome: Result<usize, Error>) -> Result<B, BufError<B>> {
    match outcome {
        Ok(_) => Ok(buf),
        Err(error) => Err(BufError { buf, error }),
    }
}

/// The result of an operation that reports only success.
pub fn unit(outcome: Result<usize, Error>) -> Result<(), Error> {
    outcome.map(|_| ())
}

/// Where a CQE leaves an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Finished: `Ok(position reached or value)` or the error.
    Done(Result<usize, Error>),
    /// Needs another SQE (a short transfer).
    Again,
}

/// What CQE `result` does to `op`: `None` asks for another SQE, `Some(outcome)` finishes it.
/// `cancel_requested`: the deadline fired while the SQE was in the kernel. The rules every
/// operation shares (`EAGAIN` and `EINTR` retry, a cancel after the deadline is `Timeout`),
/// then the operation's own (`retries`, `error`, `advance`); monomorphised per operation, so
/// the loop dispatches once per CQE (`Work::complete`).
#[inline(always)]
pub(crate) fn complete<K: Kernel>(
    op: &mut K,
    result: i32,
    cancel_requested: bool,
) -> Option<Result<usize, Error>> {
    if result >= 0 {
        return match op.advance(result as usize, cancel_requested) {
            Step::Done(outcome) => Some(outcome),
            Step::Again => None,
        };
    }
    let errno = -result;
    if errno == libc::EAGAIN || errno == libc::EINTR || K::retries(errno) {
        return cancel_requested.then_some(Err(Error::Timeout));
    }
    if errno == libc::ECANCELED && cancel_requested {
        return Some(Err(Error::Timeout));
    }
    Some(Err(K::error(errno)))
}

/// What one operation is to the loop and to its future. The loop calls `sqe`, `advance`,
/// `error`, `msg`, `msg_done` and `discard` through [`Work`]; the future the rest, with the
/// operation's own type.
pub trait Kernel: Tagged + Sized + core::marker::Send + 'static {
    /// What it gives on success.
    type Output: core::marker::Send + 'static;
    /// What it fails with: [`BufError`] carrying its buffer back for an operation that carries
    /// one, [`Error`] for the others.
    type Error: core::marker::Send + 'static;
    /// What the future keeps apart from the operation until the request has a slot: `()`,
    /// except the buffers of a vectored request, which then move into the slot's vector cell.
    type Held: core::marker::Send;

    /// Validates the operation before it takes a slot: `Err` is its result without the loop
    /// (invalid input, or nothing to transfer). The one place an operation's arguments are
    /// checked, whether it is awaited, waited on or `try_submit`ted.
    #[inline]
    fn check(self, held: Self::Held) -> Result<(Self, Self::Held), OpResult<Self>> {
        Ok((self, held))
    }

    /// Whether [`check`](Self::check) would hand the operation back unchanged, read in place:
    /// lets the loop thread's submission write the request into its slot straight from the
    /// future, without moving it through `check`. `false` (the default) only means "ask
    /// `check`": an operation that overrides `check` answers `true` exactly when its `check`
    /// passes it through untouched.
    #[inline]
    fn valid(&self) -> bool {
        false
    }

    /// The SQE that moves it forward, transferring at most `limit` bytes (`u32::MAX` but for
    /// injected short I/O), on descriptor `fd`. An operation that needs stable memory for a
    /// message header takes one from `headers` and holds it until its CQE.
    fn sqe(&mut self, fd: types::Fd, limit: u32, reg: &Registry, headers: &mut Headers<'_>) -> Sqe;

    /// A non-negative CQE result: moves the cursor; `cancel_requested` says the deadline fired
    /// while the SQE was in the kernel (a transfer still short then ends `Timeout`). By default
    /// (an operation that moves no bytes) any non-negative result finishes it, `Ok(0)`.
    #[inline]
    fn advance(&mut self, _n: usize, _cancel_requested: bool) -> Step {
        Step::Done(Ok(0))
    }

    /// The error for a negative CQE result (other than the retries and cancels every operation
    /// shares): the kernel's errno by default.
    #[inline]
    fn error(errno: i32) -> Error {
        Error::Os(errno)
    }

    /// Whether a negative CQE result of `errno` asks for another SQE, as `EAGAIN` and `EINTR` do
    /// for every operation (a deadline that fired meanwhile still ends it `Timeout`). None by
    /// default.
    #[inline]
    fn retries(_errno: i32) -> bool {
        false
    }

    /// The cell naming the message header it holds while in the kernel (`NO_MSG` when none),
    /// for operations that use one.
    fn msg(&mut self) -> Option<&mut u16> {
        None
    }

    /// The handle of the buffers it keeps in its slot's vector cell, for operations that keep
    /// some there (the vectored ones).
    fn vectors(&mut self) -> Option<&mut Vectors> {
        None
    }

    /// Its message header's CQE arrived: read what the kernel wrote there (before the header is
    /// given back).
    fn msg_done(&mut self, _header: &MsgHeader) {}

    /// Releases what an outcome nobody takes owns (an accepted connection).
    fn discard(&self, _outcome: Result<usize, Error>) {}

    /// The caller's result.
    fn output(self, outcome: Result<usize, Error>) -> OpResult<Self>;

    /// The caller's error when the operation stays with the kernel (abandoned at shutdown and
    /// parked): its buffers cannot come back.
    fn lost(error: Error) -> Self::Error;

    /// Moves what the future kept until its request had a slot into the slot (`cell` is that
    /// slot's vector cell, which the caller owns).
    fn attach(&mut self, _held: Self::Held, _cell: &VectorCell) {}

    /// The caller's result when the request never reached a slot.
    fn unsubmitted(self, _held: Self::Held, error: Error) -> OpResult<Self> {
        self.output(Err(error))
    }
}

/// An operation's row in the table, and reading it back out of its [`Work`] (the table
/// implements it for every row, so a type's kind cannot disagree with its row).
pub trait Tagged: Sized + Into<Work> {
    /// Its row.
    const KIND: OpKind;

    /// The operation in `work`, in place.
    ///
    /// # Safety
    /// `work` holds this operation (it was made from one by `Work::from`).
    unsafe fn get(work: &mut Work) -> &mut Self;
}

#[cfg(all(test, not(loom)))]
mod tests {
    //! `Kernel::valid` lets the loop thread skip `check`: where it says yes, `check` must hand
    //! the operation back exactly as it was (an operation that reaches the kernel unchecked
    //! could name memory past its buffer).

    use super::*;
    use crate::buf::{IoBuf, IoBufMut};
    use crate::op::{ReadAt, Recv, Send, WriteAt};

    const AT: [u64; 4] = [0, 4096, i64::MAX as u64 - 8, u64::MAX - 4];
    const N: [usize; 6] = [0, 5, 10, 63, 64, 65];

    fn filled(capacity: usize, len: usize) -> IoBufMut {
        let mut buf = IoBufMut::with_capacity(capacity);
        assert!(buf.extend_from_slice(&vec![7; len]));
        buf
    }

    #[test]
    fn recv_valid_means_check_changes_nothing() {
        let mut valid = 0;
        for len in [0, 5, 64] {
            for start in N {
                for end in N {
                    let op = Recv {
                        buf: filled(64, len),
                        start,
                        pos: start,
                        end,
                        exact: false,
                    };
                    if !op.valid() {
                        continue;
                    }
                    valid += 1;
                    let ptr = op.buf.as_ptr();
                    let Ok((op, ())) = op.check(()) else {
                        panic!("valid but refused: len {len} start {start} end {end}")
                    };
                    assert_eq!((op.start, op.pos, op.end), (start, start, end));
                    assert_eq!((op.buf.len(), op.buf.as_ptr()), (len, ptr));
                }
            }
        }
        assert!(valid > 0);
    }

    #[test]
    fn read_at_valid_means_check_changes_nothing() {
        let mut valid = 0;
        for at in AT {
            for end in N {
                let mut op = ReadAt::new(at, filled(64, 0), true);
                op.end = end;
                if !op.valid() {
                    continue;
                }
                valid += 1;
                let Ok((op, ())) = op.check(()) else {
                    panic!("valid but refused: at {at} end {end}")
                };
                assert_eq!((op.at, op.pos, op.end, op.buf.len()), (at, 0, end, 0));
            }
        }
        assert!(valid > 0);
    }

    #[test]
    fn write_at_and_send_valid_means_check_changes_nothing() {
        let mut valid = 0;
        for len in [0, 10] {
            for at in AT {
                let op = WriteAt::new(at, IoBuf::from(vec![1; len]));
                if op.valid() {
                    valid += 1;
                    let Ok((op, ())) = op.check(()) else {
                        panic!("valid but refused: at {at} len {len}")
                    };
                    assert_eq!((op.at, op.pos, op.end), (at, 0, len));
                }
            }
            let op = Send::new(IoBuf::from(vec![1; len]));
            if op.valid() {
                valid += 1;
                let Ok((op, ())) = op.check(()) else {
                    panic!("valid but refused: len {len}")
                };
                assert_eq!((op.pos, op.end), (0, len));
            }
        }
        assert!(valid > 0);
    }
}
