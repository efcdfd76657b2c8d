//! Operations: one file per family, one table.
//!
//! Each operation is a type implementing [`Operation`], which says in one place what the
//! operation is: its SQE, how its CQE results advance it (short transfers, end of file), which
//! errno means what, the message header it borrows, what it hands back to its caller, and what
//! it owns while in the kernel. The `operations!` table below gives each one a row with what a
//! dropped request does ([`Dropped`]) and generates from the rows:
//!
//! * [`OpKind`] and [`OpKind::ALL`], and each type's kind ([`Tagged::KIND`]);
//! * [`Work`], the enum that stores one operation in its slot, and the loop's dispatch over it
//!   (one `match` per method);
//! * `FaultOp`, the fault injection's list of operations.
//!
//! Adding an operation is one file (or one type in a family's file), one table row and one
//! `Handle` method.

mod addr;
mod datagram;
mod file;
mod msg_header;
mod nop;
mod poll;
mod socket;
mod stream;
mod sync;
mod vectored;

use io_uring::{squeue, types};

use crate::error::Error;
use crate::event_loop::registry::Registry;
use crate::handle::{Held, OpOutput};
use crate::vectored::VectorCell;

pub(crate) use addr::RawAddr;
pub(crate) use datagram::{RecvFrom, SendTo};
pub(crate) use file::{ReadAt, WriteAt};
pub(crate) use msg_header::{Headers, MsgHeader, NO_MSG};
pub(crate) use nop::Nop;
pub(crate) use poll::Poll;
pub use poll::{PollResult, Readiness};
pub(crate) use socket::{Accept, Connect};
pub(crate) use stream::{Recv, Send};
pub(crate) use sync::Sync;
pub(crate) use vectored::{SendVectored, WriteAtVectored};

/// How much of a transfer ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// Every byte (`send`, `write_at`, `read_at`, exact `recv`); zero bytes first is end of
    /// file.
    Whole,
    /// The first bytes (`recv`); zero bytes first is end of file.
    FirstBytes,
    /// The first bytes, or end of file (`read_some_at`: pread semantics).
    FirstBytesOrEof,
}

/// A transfer's cursor `pos` (toward `end`) after a CQE of `n` bytes.
pub(crate) fn transfer(
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
pub(crate) fn sqe_len(pos: usize, end: usize, limit: u32) -> u32 {
    (end - pos).min(limit as usize) as u32
}

/// An empty read-only buffer, handed back when the real one must stay with the kernel.
pub(crate) fn no_buf() -> crate::buf::IoBuf {
    crate::buf::IoBuf::from(&[][..])
}

/// An empty writable buffer, handed back when the real one must stay with the kernel.
pub(crate) fn no_buf_mut() -> crate::buf::IoBufMut {
    crate::buf::IoBufMut::from(&mut [][..])
}

/// An operation's next SQE and whether it uses a registered buffer, or the error that ends the
/// request without one.
pub(crate) type Sqe = Result<(squeue::Entry, bool), Error>;

/// The result of an operation that hands its buffer back whole: the buffer, or the buffer and
/// the error.
pub(crate) fn buf_back<B>(buf: B, outcome: Result<usize, Error>) -> Result<B, (B, Error)> {
    match outcome {
        Ok(_) => Ok(buf),
        Err(e) => Err((buf, e)),
    }
}

/// The result of an operation that reports only success.
pub(crate) fn unit(outcome: Result<usize, Error>) -> Result<(), Error> {
    outcome.map(|_| ())
}

/// Where a CQE leaves an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Finished: `Ok(position reached or value)` or the error.
    Done(Result<usize, Error>),
    /// Needs another SQE (a short transfer).
    Again,
}

/// What one operation is. The loop calls `sqe`, `advance`, `error`, `msg`, `msg_done` and
/// `discard` through [`Work`]; the caller's future the rest, with the operation's own type (see
/// [`Work::take`]).
pub(crate) trait Operation: Sized + core::marker::Send + 'static {
    /// What its caller gets.
    type Output: OpOutput;

    /// The SQE that moves it forward, transferring at most `limit` bytes (`u32::MAX` but for
    /// injected short I/O), on descriptor `fd`. An operation that needs stable memory for a
    /// message header takes one from `headers` and holds it until its CQE.
    fn sqe(&mut self, fd: types::Fd, limit: u32, reg: &Registry, headers: &mut Headers<'_>) -> Sqe;

    /// A non-negative CQE result: moves the cursor; `cancel_requested` says the deadline fired
    /// while the SQE was in the kernel (a transfer still short then ends `Timeout`). By default
    /// (an operation that moves no bytes) any non-negative result finishes it, `Ok(0)`.
    fn advance(&mut self, _n: usize, _cancel_requested: bool) -> Step {
        Step::Done(Ok(0))
    }

    /// The error for a negative CQE result (other than the retries and cancels every operation
    /// shares): the kernel's errno by default.
    fn error(errno: i32) -> Error {
        Error::Os(errno)
    }

    /// The cell naming the message header it holds while in the kernel (`NO_MSG` when none),
    /// for operations that use one.
    fn msg(&mut self) -> Option<&mut u16> {
        None
    }

    /// Its message header's CQE arrived: read what the kernel wrote there (before the header is
    /// given back).
    fn msg_done(&mut self, _header: &MsgHeader) {}

    /// Releases what an outcome nobody takes owns (an accepted connection).
    fn discard(_outcome: Result<usize, Error>) {}

    /// The caller's result.
    fn output(self, outcome: Result<usize, Error>) -> Self::Output;

    /// The caller's result when the operation stays with the kernel (abandoned at shutdown and
    /// parked): its buffers cannot come back.
    fn lost(error: Error) -> Self::Output;

    /// Moves what the future kept until its request had a slot into the slot (`cell` is that
    /// slot's vector cell, which the caller owns).
    fn attach(&mut self, _held: Held<Self>, _cell: &VectorCell) {}

    /// The caller's result when the request never reached a slot.
    fn unsubmitted(self, _held: Held<Self>, error: Error) -> Self::Output {
        self.output(Err(error))
    }
}

/// What a request does when its caller drops its future in flight (docs/behaviour.md
/// section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// Only reads or waits: retired at its next completion by default (A9); cancelled with
    /// `cancel_on_drop` (A16).
    Cancel,
    /// A send: retired at its next completion by default; run to completion (whole) with
    /// `cancel_on_drop`.
    FinishWhenCancelling,
    /// Durable: always runs to completion.
    Finish,
    /// Retired at its next completion in both modes.
    Retire,
}

impl Dropped {
    /// Whether a dropped caller lets the loop retire the request early, at its next completion.
    pub(crate) const fn orphanable(self, cancel_on_drop: bool) -> bool {
        match self {
            Dropped::Cancel | Dropped::Retire => true,
            Dropped::FinishWhenCancelling => !cancel_on_drop,
            Dropped::Finish => false,
        }
    }

    /// Whether `cancel_on_drop` sends an AsyncCancel for it.
    pub(crate) const fn cancelled(self) -> bool {
        matches!(self, Dropped::Cancel)
    }
}

/// The table: one row per operation, `Kind(Type) { policies }`, with the doc of its
/// fault-injection name. Generates `OpKind`, `Work` and its dispatch, and `FaultOp`.
macro_rules! operations {
    ($(
        #[doc = $doc:literal]
        $kind:ident($ty:ty) { dropped: $dropped:ident }
    ),* $(,)?) => {
        /// The kind of an operation: one per row of the table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum OpKind {
            $(#[doc = $doc] $kind,)*
        }

        impl OpKind {
            /// Every kind, in table order.
            #[allow(dead_code)] // tests and fault injection
            pub(crate) const ALL: &'static [OpKind] = &[$(OpKind::$kind),*];

            /// What a dropped request of this kind does.
            #[inline]
            pub(crate) const fn dropped(self) -> Dropped {
                match self {
                    $(OpKind::$kind => Dropped::$dropped,)*
                }
            }
        }

        /// One operation, stored in its slot. The caller's future reads its own operation
        /// back by type ([`Work::take`]); the loop dispatches on the variant.
        pub(crate) enum Work {
            $(#[doc = $doc] $kind($ty),)*
        }

        $(
            impl From<$ty> for Work {
                #[inline]
                fn from(op: $ty) -> Work {
                    Work::$kind(op)
                }
            }

            impl Tagged for $ty {
                const KIND: OpKind = OpKind::$kind;

                #[inline]
                unsafe fn read(work: Work) -> Self {
                    match work {
                        Work::$kind(op) => op,
                        // SAFETY: the caller's contract: `work` holds this operation.
                        #[allow(unreachable_patterns)]
                        _ => unsafe { std::hint::unreachable_unchecked() },
                    }
                }

                #[inline]
                unsafe fn get(work: &mut Work) -> &mut Self {
                    match work {
                        Work::$kind(op) => op,
                        // SAFETY: as in `read`.
                        #[allow(unreachable_patterns)]
                        _ => unsafe { std::hint::unreachable_unchecked() },
                    }
                }
            }
        )*

        // The loop's dispatch: one match on the variant per method.
        impl Work {
            /// The operation's kind.
            #[inline]
            pub(crate) fn kind(&self) -> OpKind {
                match self {
                    $(Work::$kind(_) => OpKind::$kind,)*
                }
            }

            /// The SQE of the next step (see [`Operation::sqe`]).
            #[inline]
            pub(crate) fn sqe(
                &mut self,
                fd: types::Fd,
                limit: u32,
                reg: &Registry,
                headers: &mut Headers<'_>,
            ) -> Sqe {
                match self {
                    $(Work::$kind(op) => op.sqe(fd, limit, reg, headers),)*
                }
            }

            /// A non-negative CQE result (see [`Operation::advance`]).
            #[inline]
            pub(crate) fn advance(&mut self, n: usize, cancel_requested: bool) -> Step {
                match self {
                    $(Work::$kind(op) => op.advance(n, cancel_requested),)*
                }
            }

            /// The error of a negative CQE result (see [`Operation::error`]).
            #[inline]
            pub(crate) fn error(&self, errno: i32) -> Error {
                match self {
                    $(Work::$kind(_) => <$ty as Operation>::error(errno),)*
                }
            }

            /// The message header cell of an operation that uses one.
            fn msg(&mut self) -> Option<&mut u16> {
                match self {
                    $(Work::$kind(op) => op.msg(),)*
                }
            }

            /// Lets the operation read the header it held.
            fn read_msg(&mut self, header: &MsgHeader) {
                match self {
                    $(Work::$kind(op) => op.msg_done(header),)*
                }
            }

            /// Releases what `outcome` owns when nobody takes it (see [`Operation::discard`]).
            pub(crate) fn discard(&self, outcome: Result<usize, Error>) {
                match self {
                    $(Work::$kind(_) => <$ty as Operation>::discard(outcome),)*
                }
            }
        }

        /// The fault injection's operations: any, or one kind.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
        pub enum FaultOp {
            /// Any operation.
            Any,
            $(#[doc = $doc] $kind,)*
        }

        impl FaultOp {
            /// Whether the fault applies to an operation of `kind`.
            #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
            pub(crate) fn matches(self, kind: OpKind) -> bool {
                match self {
                    FaultOp::Any => true,
                    $(FaultOp::$kind => kind == OpKind::$kind,)*
                }
            }
        }
    };
}

operations! {
    /// `nop`.
    Nop(Nop) { dropped: Cancel },
    /// `sync` and `sync_data`.
    Sync(Sync) { dropped: Finish },
    /// `send`.
    Send(Send) { dropped: FinishWhenCancelling },
    /// `recv`.
    Recv(Recv) { dropped: Cancel },
    /// `read_at` and `read_some_at`.
    ReadAt(ReadAt) { dropped: Cancel },
    /// `write_at`.
    WriteAt(WriteAt) { dropped: Finish },
    /// `accept`.
    Accept(Accept) { dropped: Cancel },
    /// `connect`.
    Connect(Connect) { dropped: Retire },
    /// `send_to`.
    SendTo(SendTo) { dropped: FinishWhenCancelling },
    /// `recv_from`.
    RecvFrom(RecvFrom) { dropped: Cancel },
    /// `send_vectored`.
    SendVectored(SendVectored) { dropped: FinishWhenCancelling },
    /// `write_at_vectored`.
    WriteAtVectored(WriteAtVectored) { dropped: Finish },
    /// `poll` (readiness).
    Poll(Poll) { dropped: Cancel },
}

/// An operation's row in the table, and reading it back out of its [`Work`] (the table
/// implements it for every row, so a type's kind cannot disagree with its row).
pub(crate) trait Tagged: Sized + Into<Work> {
    /// Its row.
    const KIND: OpKind;

    /// # Safety
    /// `work` holds this operation (it was made from one by `Work::from`).
    unsafe fn read(work: Work) -> Self;

    /// # Safety
    /// As [`read`](Self::read).
    unsafe fn get(work: &mut Work) -> &mut Self;
}

impl Work {
    /// An empty request's work: a `nop`, which owns nothing.
    pub(crate) const EMPTY: Work = Work::Nop(Nop);

    /// Takes the operation back out as the type it was stored as: the one place where the
    /// caller's future meets the loop's storage.
    ///
    /// # Safety
    /// `self` was made from an `O` (`Work::from`). An [`Op`](crate::Op) guarantees it: it stores
    /// the operation it was built with and reads back with that same type.
    #[inline]
    pub(crate) unsafe fn take<O: Operation + Tagged>(self) -> O {
        debug_assert_eq!(self.kind(), O::KIND, "an operation read back as another");
        // SAFETY: the caller's contract.
        unsafe { O::read(self) }
    }

    /// The operation, in place, as the type it was stored as.
    ///
    /// # Safety
    /// As [`take`](Self::take).
    #[inline]
    pub(crate) unsafe fn get_mut<O: Operation + Tagged>(&mut self) -> &mut O {
        debug_assert_eq!(self.kind(), O::KIND, "an operation read as another");
        // SAFETY: the caller's contract.
        unsafe { O::get(self) }
    }

    /// The message header it holds (`None`: none, or not an operation that uses one).
    pub(crate) fn held_msg(&mut self) -> Option<u16> {
        self.msg().map(|m| *m).filter(|&m| m != NO_MSG)
    }

    /// After its CQE: reads the header it held (`headers[index]`) and gives it back (returns
    /// its index), if it held one.
    pub(crate) fn msg_done(&mut self, headers: &[MsgHeader]) -> Option<u16> {
        let index = self.held_msg()?;
        self.read_msg(&headers[index as usize]);
        if let Some(msg) = self.msg() {
            *msg = NO_MSG;
        }
        Some(index)
    }
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Work").field(&self.kind()).finish()
    }
}
