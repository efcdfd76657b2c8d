//! Operations: one type per operation, one file per family, one table.
//!
//! A [`Handle`](crate::Handle) method builds an operation and returns it as an
//! [`Op`](crate::Op): a future that is also a value, whose optional parts (deadline, length
//! limits) are methods on it. The types here name those operations (`Op<op::Recv, ..>`); their
//! public side is [`Operation`]: what each gives on success and fails with.
//!
//! Inside the crate each type also implements `Kernel`, which says in one place what the
//! operation is: how its arguments are checked, its SQE, how its CQE results advance it (short
//! transfers, end of file), which errno means what, the message header it borrows, what it
//! hands back and what it owns while in the kernel. The table (`table.rs`) gives each a row with
//! what a dropped request does and generates the kinds, the enum that stores an operation in its
//! slot with the loop's dispatch over it, and the fault injection's list of operations.
//!
//! Adding an operation is one file (or one type in a family's file), one table row and one
//! `Handle` method.

mod addr;
mod datagram;
mod file;
mod kernel;
mod message;
mod msg_header;
pub(crate) mod multishot;
mod nop;
mod poll;
mod sleep;
mod socket;
mod stream;
mod sync;
pub(crate) mod table;
mod vectored;
mod zero_copy;

pub(crate) use addr::RawAddr;
pub use datagram::{RecvFrom, SendTo};
pub use file::{ReadAt, WriteAt};
pub(crate) use kernel::{complete, Kernel, Sqe, Tagged};
pub use message::{Post, RecvMessage};
pub(crate) use msg_header::{Headers, MsgHeader, NO_MSG};
pub use multishot::{AcceptMulti, Next, RecvMulti, ACCEPT_QUEUE};
pub use nop::Nop;
pub use poll::{Poll, Readiness};
pub use sleep::Sleep;
pub use socket::{Accept, Connect};
pub use stream::{Recv, Send};
pub use sync::Sync;
pub use table::OpKind;
pub(crate) use table::Work;
pub use vectored::{SendVectored, WriteAtVectored};
#[cfg(test)]
#[cfg_attr(loom, allow(unused_imports))] // used by code the loom build leaves out
pub(crate) use zero_copy::Notice;
pub use zero_copy::{SendVectoredZc, SendZc};

/// An operation of this crate: a type of this module, built by a method of
/// [`Handle`](crate::Handle) and run by an [`Op`](crate::Op). `O::Output` is what it gives on
/// success; `O::Error` what it fails with: [`BufError`](crate::BufError) carrying its buffer back
/// for an operation that carries one, [`Error`](crate::Error) for the others (see each type).
///
/// Sealed: it extends a crate-private trait that says what the operation is to the loop.
pub trait Operation: Kernel {}

impl<O: Kernel> Operation for O {}

/// What the future of operation `O` resolves to.
pub type OpResult<O> = Result<<O as Kernel>::Output, <O as Kernel>::Error>;
