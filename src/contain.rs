//! Running user code: wakers, and the `Drop` of descriptor owners a request held.
//!
//! The crate calls user code only once its own state is final (a slot released, a node unlinked,
//! a result published) and never under one of its locks, so whatever the code does, including
//! re-entering the crate, it finds consistent state. A panic in it is caught here: it never
//! unwinds through the loop or through a caller's poll of another request, and it is counted in
//! [`Metrics::user_panics`](crate::Metrics::user_panics).

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`, catching a panic. Returns true if it panicked.
///
/// `AssertUnwindSafe` is sound here because the crate's state is final before any call (module
/// doc): a panic inside `f` can only leave the user's own data half-updated.
#[inline(always)]
pub(crate) fn run(f: impl FnOnce()) -> bool {
    catch_unwind(AssertUnwindSafe(f)).is_err()
}
