//! The table: one row per operation. From the rows the `operations!` macro generates [`OpKind`]
//! and [`OpKind::ALL`], each type's kind ([`Tagged::KIND`]), the [`Work`] enum that stores one
//! operation in its slot with the loop's dispatch over it (one `match` per method), and
//! `FaultOp`, the fault injection's list of operations.

use io_uring::types;

use super::kernel::{Kernel, Sqe, Tagged};
use super::{
    Accept, AcceptMulti, Connect, Headers, MsgHeader, Next, Nop, Poll, Post, ReadAt, Recv,
    RecvFrom, RecvMessage, RecvMulti, Send, SendTo, SendVectored, SendVectoredZc, SendZc, Sleep,
    Sync, WriteAt, WriteAtVectored, NO_MSG,
};
use crate::error::Error;
use crate::event_loop::registry::Registry;
use crate::vectored::Vectors;

/// What a request does when its caller drops its future in flight (docs/behaviour.md
/// section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
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
    /// A timer (no kernel request): retired at the loop's next pass in both modes.
    Timer,
    /// A multishot stream: always cancelled, its slot freed once the kernel lets go of it.
    Multishot,
}

impl Dropped {
    /// Whether a dropped caller lets the loop retire the request early, at its next completion.
    pub(crate) const fn orphanable(self, cancel_on_drop: bool) -> bool {
        match self {
            Dropped::Cancel | Dropped::Retire | Dropped::Timer | Dropped::Multishot => true,
            Dropped::FinishWhenCancelling => !cancel_on_drop,
            Dropped::Finish => false,
        }
    }

    /// Whether `cancel_on_drop` sends an AsyncCancel for it.
    pub(crate) const fn cancelled(self) -> bool {
        matches!(self, Dropped::Cancel)
    }

    /// Whether a dropped request is cancelled whatever the config (a multishot stream, which
    /// would otherwise never end).
    pub(crate) const fn always_cancelled(self) -> bool {
        matches!(self, Dropped::Multishot)
    }
}

/// The table: one row per operation, `Kind(Type) { policies }`, with the doc of its
/// fault-injection name. Generates `OpKind`, `Work` and its dispatch, and `FaultOp`.
macro_rules! operations {
    ($(
        #[doc = $doc:literal]
        $kind:ident($ty:ty) { dropped: $dropped:ident }
    ),* $(,)?) => {
        /// The kind of an operation: one per row of the crate's table of operations, so
        /// [`OpKind::ALL`] lists every operation there is. Deliberately exhaustive: code that
        /// matches on it (a test harness driving every operation) stops compiling until it
        /// handles an operation added to the crate, instead of silently skipping it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum OpKind {
            $(#[doc = $doc] $kind,)*
        }

        impl OpKind {
            /// Every kind, in table order.
            pub const ALL: &'static [OpKind] = &[$(OpKind::$kind),*];

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
        pub enum Work {
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
                unsafe fn get(work: &mut Work) -> &mut Self {
                    match work {
                        Work::$kind(op) => op,
                        // SAFETY: the caller's contract: `work` holds this operation.
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

            /// The SQE of the next step (see [`Kernel::sqe`]).
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

            /// What one CQE result does (see [`complete`](super::kernel::complete)): one
            /// match on the variant, whose arm applies every rule for that operation.
            #[inline]
            pub(crate) fn complete(
                &mut self,
                result: i32,
                cancel_requested: bool,
            ) -> Option<Result<usize, Error>> {
                match self {
                    $(Work::$kind(op) => super::kernel::complete(op, result, cancel_requested),)*
                }
            }

            /// The message header cell of an operation that uses one.
            fn msg(&mut self) -> Option<&mut u16> {
                match self {
                    $(Work::$kind(op) => op.msg(),)*
                }
            }

            /// The vector cell handle of an operation that keeps buffers there.
            fn vectors(&mut self) -> Option<&mut Vectors> {
                match self {
                    $(Work::$kind(op) => op.vectors(),)*
                }
            }

            /// Lets the operation read the header it held.
            fn read_msg(&mut self, header: &MsgHeader) {
                match self {
                    $(Work::$kind(op) => op.msg_done(header),)*
                }
            }

            /// Releases what `outcome` owns when nobody takes it (see [`Kernel::discard`]).
            pub(crate) fn discard(&self, outcome: Result<usize, Error>) {
                match self {
                    $(Work::$kind(op) => op.discard(outcome),)*
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

        impl From<OpKind> for FaultOp {
            fn from(kind: OpKind) -> FaultOp {
                match kind {
                    $(OpKind::$kind => FaultOp::$kind,)*
                }
            }
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
    /// `sleep` and `sleep_until` (a timer on the wheel, no kernel request).
    Sleep(Sleep) { dropped: Timer },
    /// `accept_multi` (the stream's request).
    AcceptMulti(AcceptMulti) { dropped: Multishot },
    /// `recv_multi` (the stream's request).
    RecvMulti(RecvMulti) { dropped: Multishot },
    /// A stream's `next` (held by the loop, no kernel request).
    Next(Next) { dropped: Timer },
    /// `post` (a message to another loop).
    Post(Post) { dropped: Finish },
    /// `recv_message` (held by the loop until a message comes, no kernel request).
    RecvMessage(RecvMessage) { dropped: Timer },
    /// `send_zc`.
    SendZc(SendZc) { dropped: FinishWhenCancelling },
    /// `send_vectored_zc`.
    SendVectoredZc(SendVectoredZc) { dropped: FinishWhenCancelling },
}

impl OpKind {
    /// A multishot stream's request.
    #[inline]
    pub(crate) fn is_stream(self) -> bool {
        matches!(self, OpKind::AcceptMulti | OpKind::RecvMulti)
    }

    /// Its CQEs need none of the reap's special cases: not a stream, no zero-copy notice, no
    /// message header. Set in the request's flags when its SQE is pushed, so the reap skips the
    /// checks (`on_cqe`).
    #[inline]
    pub(crate) const fn is_plain(self) -> bool {
        matches!(
            self,
            OpKind::Nop
                | OpKind::Sync
                | OpKind::Send
                | OpKind::Recv
                | OpKind::ReadAt
                | OpKind::WriteAt
                | OpKind::Accept
                | OpKind::Connect
                | OpKind::Poll
        )
    }

    /// Whether a `LocalOp`'s request of this kind may stay in its future while in flight
    /// (`event_loop/held.rs`): plain, with an SQE that points at no memory inside the operation
    /// (its buffer's bytes do not move with it), nothing kept in the slot's vector cell, and an
    /// outcome that owns nothing (the slot's empty request could not release it).
    #[inline]
    pub(crate) const fn may_be_held(self) -> bool {
        // Of the plain kinds, all but `connect` (its SQE points at the address inside it) and
        // `accept` (its outcome owns the new socket).
        self.is_plain() && !matches!(self, OpKind::Connect | OpKind::Accept)
    }

    /// Held by the loop without a kernel request (a timer, a stream's `next`, a waiting
    /// `recv_message`).
    #[inline]
    pub(crate) fn is_held(self) -> bool {
        matches!(self, OpKind::Sleep | OpKind::Next | OpKind::RecvMessage)
    }
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
    pub(crate) unsafe fn take<O: Kernel>(&mut self) -> O {
        debug_assert_eq!(self.kind(), O::KIND, "an operation read back as another");
        // SAFETY: the caller's contract: `self` holds an `O`, which is moved out (a copy of its
        // bytes) and replaced by the empty work without being dropped: ownership moves, nothing
        // is dropped twice. Only the tag is written for an operation that moves no bytes.
        unsafe {
            let op = std::ptr::read(O::get(self));
            // Built here, not copied from the `EMPTY` constant: only the tag is stored (the
            // constant's 72 bytes would be).
            std::ptr::write(self, Work::Nop(Nop));
            op
        }
    }

    /// The operation, in place, as the type it was stored as.
    ///
    /// # Safety
    /// As [`take`](Self::take).
    #[inline]
    #[cfg(test)]
    pub(crate) unsafe fn get_mut<O: Kernel>(&mut self) -> &mut O {
        debug_assert_eq!(self.kind(), O::KIND, "an operation read as another");
        // SAFETY: the caller's contract.
        unsafe { O::get(self) }
    }

    /// Drops the buffers it keeps in its slot's vector cell (none for most operations), leaving
    /// the cell empty and the operation naming no cell. Run before its slot is freed: the cell is
    /// the slot's, and the slot's next owner may fill it at once, so a request dropped after its
    /// slot is free must not name the cell any more. (Buffers run no user code when dropped.)
    #[inline]
    pub(crate) fn drop_vectors(&mut self) {
        if let Some(vectors) = self.vectors() {
            drop(std::mem::replace(vectors, Vectors::DETACHED));
        }
    }

    /// Whether it is a multishot stream's request: one compare of the tag, for `on_cqe`'s
    /// every CQE (`kind()` is a call there).
    #[inline(always)]
    pub(crate) fn is_stream(&self) -> bool {
        matches!(self, Work::AcceptMulti(_) | Work::RecvMulti(_))
    }

    /// The stream of a multishot request.
    pub(crate) fn stream(&mut self) -> Option<&mut dyn super::multishot::Stream> {
        match self {
            Work::AcceptMulti(op) => Some(op),
            Work::RecvMulti(op) => Some(op),
            _ => None,
        }
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
