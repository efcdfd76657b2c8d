// Without the feature this module is private and holds only the loop's empty hooks.
#![cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
//! Fault injection for tests: makes the kernel path return what real kernels return under
//! pressure, where no real trigger exists.
//!
//! The public part exists only with the cargo feature `fault-injection` (off by default, so it is
//! compiled out of every normal build); without it the hooks below are empty inline functions.
//! Faults are kept per storage in a fixed table (no allocation) and each applies once, to the
//! next matching event of the loop that uses that storage:
//!
//! * [`Fault::Result`]: the next SQE of an operation is replaced by a NOP (the kernel does
//!   nothing) whose CQE carries the given result, for example `-EINTR`, `-EAGAIN`, `-ECANCELED`,
//!   `0`, `-EBADF`, `-ECONNRESET`, `-EPIPE`, or more bytes than were asked for;
//! * [`Fault::Short`]: the next SQE of an operation asks the kernel for at most `max` bytes, a
//!   real short read or write;
//! * [`Fault::Enter`]: the next `io_uring_enter` fails with `errno` without entering the kernel
//!   (`EBUSY` is what a full completion queue gives; others are unexpected and stop the loop);
//! * [`Fault::Panic`]: the loop thread panics when it processes the next completion of an
//!   operation (the unwind path);
//! * [`Fault::RegisterRing`]: registering the ring's descriptor with the loop thread, when the
//!   loop starts running, fails with `errno` (a kernel before 5.18, or a thread with all 16
//!   registered rings in use): the loop must enter with the plain descriptor.
//!
//! [`refuse_setup`] is not per storage (the ring is set up before its storage's handle exists):
//! it makes the next ring the calling thread sets up see an optional setup flag refused with
//! `EINVAL`, as an older kernel refuses a flag it does not know.
//!
//! A pending `Short` and a pending `Result` for the same operation both apply to its next SQE (the
//! result wins); to shorten one SQE and fail the next, inject the second fault once the first SQE
//! is in the kernel.

/// Which operations a fault applies to (generated from the operation table).
pub use crate::op::table::FaultOp;
use crate::op::OpKind;

/// One fault, applied once (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next SQE of `op` becomes a NOP whose CQE result is `result`.
    Result {
        /// Which operation.
        op: FaultOp,
        /// The CQE result to report (a negative errno, zero, or a byte count).
        result: i32,
    },
    /// The next SQE of `op` transfers at most `max` bytes.
    Short {
        /// Which operation.
        op: FaultOp,
        /// The byte limit.
        max: u32,
    },
    /// The next `io_uring_enter` fails with `errno`.
    Enter {
        /// The errno.
        errno: i32,
    },
    /// The loop thread panics at the next CQE of `op`.
    Panic {
        /// Which operation.
        op: FaultOp,
    },
    /// Registering the ring's descriptor (`Config::registered_ring`, when the loop starts
    /// running) fails with `errno`.
    RegisterRing {
        /// The errno.
        errno: i32,
    },
}

/// An optional ring setup flag (see [`refuse_setup`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupFlag {
    /// `IORING_SETUP_NO_SQARRAY` (`Config::no_sqarray`).
    NoSqArray,
    /// `IORING_SETUP_COOP_TASKRUN` with `IORING_SETUP_TASKRUN_FLAG` (`Config::coop_taskrun`).
    CoopTaskrun,
    /// `IOU_PBUF_RING_INC` (`EventLoop::register_buf_ring_incremental`): refused at the next
    /// such registration on the calling thread, which then registers the ring whole.
    IncrementalBufRing,
}

impl SetupFlag {
    /// Its bit in the set `take_refused_setup` returns.
    pub(crate) const fn bit(self) -> u8 {
        match self {
            SetupFlag::NoSqArray => 1,
            SetupFlag::CoopTaskrun => 2,
            SetupFlag::IncrementalBufRing => 4,
        }
    }
}

#[cfg(feature = "fault-injection")]
thread_local! {
    /// The setup flags the next ring set up on this thread sees refused.
    static REFUSED_SETUP: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// Testing only: the next ring the calling thread sets up (`static_uring::new`,
/// `static_uring::with_storage`) is built as if the kernel refused `flag` with `EINVAL`: every
/// setup attempt that asks for it fails without entering the kernel, so the ring falls back to
/// a setup without it. Calls add up (refuse both flags with two calls).
#[cfg(feature = "fault-injection")]
pub fn refuse_setup(flag: SetupFlag) {
    REFUSED_SETUP.with(|refused| refused.set(refused.get() | flag.bit()));
}

#[cfg(feature = "fault-injection")]
mod table {
    use super::{Fault, OpKind};
    use std::sync::Mutex;

    /// Faults and pending result overrides of every storage, keyed by the storage's address.
    const CAPACITY: usize = 256;

    struct Table {
        faults: [Option<(usize, Fault)>; CAPACITY],
        /// `(storage, user_data, result)` of SQEs replaced by a NOP and still in the kernel.
        overrides: [Option<(usize, u64, i32)>; CAPACITY],
    }

    static TABLE: Mutex<Table> = Mutex::new(Table {
        faults: [None; CAPACITY],
        overrides: [None; CAPACITY],
    });

    fn with<R>(f: impl FnOnce(&mut Table) -> R) -> R {
        f(&mut TABLE.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn inject(key: usize, fault: Fault) {
        with(|t| {
            let free = t.faults.iter_mut().find(|f| f.is_none());
            *free.expect("fault table full (256 pending faults)") = Some((key, fault));
        });
    }

    /// Takes the oldest fault of `key` that `pick` accepts.
    pub(crate) fn take<R>(key: usize, mut pick: impl FnMut(&Fault) -> Option<R>) -> Option<R> {
        with(|t| {
            for entry in t.faults.iter_mut() {
                if let Some((k, fault)) = entry {
                    if *k == key {
                        if let Some(r) = pick(fault) {
                            *entry = None;
                            return Some(r);
                        }
                    }
                }
            }
            None
        })
    }

    pub(crate) fn set_override(key: usize, user_data: u64, result: i32) {
        with(|t| {
            let free = t.overrides.iter_mut().find(|o| o.is_none());
            *free.expect("fault override table full") = Some((key, user_data, result));
        });
    }

    pub(crate) fn take_override(key: usize, user_data: u64) -> Option<i32> {
        with(|t| {
            let entry = t
                .overrides
                .iter_mut()
                .find(|o| matches!(o, Some((k, u, _)) if *k == key && *u == user_data))?;
            entry.take().map(|(_, _, result)| result)
        })
    }

    /// Forgets everything about `key` (a new claim of the storage starts clean).
    pub(crate) fn clear(key: usize) {
        with(|t| {
            for f in t.faults.iter_mut() {
                if matches!(f, Some((k, _)) if *k == key) {
                    *f = None;
                }
            }
            for o in t.overrides.iter_mut() {
                if matches!(o, Some((k, ..)) if *k == key) {
                    *o = None;
                }
            }
        });
    }

    pub(crate) fn matches(op: super::FaultOp, kind: OpKind) -> bool {
        op.matches(kind)
    }
}

#[cfg(feature = "fault-injection")]
pub(crate) use table::{clear, inject};

/// The byte limit for the next SQE of `kind` (`u32::MAX`: none).
#[inline]
pub(crate) fn sqe_limit(_key: usize, _kind: OpKind) -> u32 {
    #[cfg(feature = "fault-injection")]
    if let Some(max) = table::take(_key, |f| match *f {
        Fault::Short { op, max } if table::matches(op, _kind) => Some(max),
        _ => None,
    }) {
        return max;
    }
    u32::MAX
}

/// The result to report instead of running the next SQE of `kind`, if one was injected.
#[inline]
pub(crate) fn sqe_result(_key: usize, _kind: OpKind) -> Option<i32> {
    #[cfg(feature = "fault-injection")]
    return table::take(_key, |f| match *f {
        Fault::Result { op, result } if table::matches(op, _kind) => Some(result),
        _ => None,
    });
    #[cfg(not(feature = "fault-injection"))]
    None
}

/// Records that the CQE of `user_data` must report `result` (its SQE was replaced by a NOP).
#[inline]
pub(crate) fn override_result(_key: usize, _user_data: u64, _result: i32) {
    #[cfg(feature = "fault-injection")]
    table::set_override(_key, _user_data, _result);
}

/// The CQE result to use for `user_data`: the injected one, or the kernel's.
#[inline]
pub(crate) fn cqe_result(_key: usize, _user_data: u64, result: i32) -> i32 {
    #[cfg(feature = "fault-injection")]
    if let Some(injected) = table::take_override(_key, _user_data) {
        return injected;
    }
    result
}

/// Panics if a panic was injected for the next CQE of `kind`.
#[inline]
pub(crate) fn cqe_panic(_key: usize, _kind: OpKind) {
    #[cfg(feature = "fault-injection")]
    if table::take(_key, |f| match *f {
        Fault::Panic { op } if table::matches(op, _kind) => Some(()),
        _ => None,
    })
    .is_some()
    {
        panic!("static-uring: injected panic on the loop thread");
    }
}

/// The errno the next `io_uring_enter` must fail with, if one was injected.
#[inline]
pub(crate) fn enter_errno(_key: usize) -> Option<i32> {
    #[cfg(feature = "fault-injection")]
    return table::take(_key, |f| match *f {
        Fault::Enter { errno } => Some(errno),
        _ => None,
    });
    #[cfg(not(feature = "fault-injection"))]
    None
}

/// The setup flags among `flags` (`SetupFlag::bit`s) that what is being set up on this thread
/// must see refused; taking them clears them.
#[inline]
pub(crate) fn take_refused(flags: u8) -> u8 {
    #[cfg(feature = "fault-injection")]
    return REFUSED_SETUP.with(|refused| {
        let all = refused.get();
        refused.set(all & !flags);
        all & flags
    });
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = flags;
        0
    }
}

/// The ring setup flags the ring being set up on this thread must see refused.
#[inline]
pub(crate) fn take_refused_setup() -> u8 {
    take_refused(SetupFlag::NoSqArray.bit() | SetupFlag::CoopTaskrun.bit())
}

/// The errno registering the ring's descriptor must fail with, if one was injected.
#[inline]
pub(crate) fn register_ring_errno(_key: usize) -> Option<i32> {
    #[cfg(feature = "fault-injection")]
    return table::take(_key, |f| match *f {
        Fault::RegisterRing { errno } => Some(errno),
        _ => None,
    });
    #[cfg(not(feature = "fault-injection"))]
    None
}
