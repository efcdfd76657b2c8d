//! The synchronisation primitives the crate uses, swapped for loom's under `--cfg loom`.
//!
//! Every atomic and every cell shared between threads comes from here, so the loom models in
//! `loom_tests.rs` check the same code that ships. loom's atomics cannot be built in a `const fn`,
//! so constructors go through [`maybe_const_fn!`](crate::maybe_const_fn): `const` normally, plain
//! under loom (where nothing lives in a `static`).

#[cfg(loom)]
#[allow(unused_imports)] // AtomicBool: used by storage.rs, which loom builds leave out
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};

pub(crate) use std::sync::atomic::Ordering;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::fence;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::fence;

#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// Hint for a bounded busy wait; under loom it yields so the model can schedule another thread.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// One step of a bounded busy wait. Every 64th step yields the CPU, so that when spinning
/// threads outnumber cores (the loop, its callers and others on a small machine) a spinner does
/// not hold a core that a thread with work needs until the scheduler's time slice ends. On a
/// dedicated core the yield returns at once.
#[cfg(not(loom))]
#[inline]
pub(crate) fn spin_step(step: &mut u32) {
    *step = step.wrapping_add(1);
    if *step % 64 == 0 {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// An `UnsafeCell` with loom's closure API, so accesses are tracked by loom in models.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    /// Shared access through a raw pointer; the caller's state machine says no one writes now.
    #[allow(dead_code)] // loom's API, kept for symmetry
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Exclusive access through a raw pointer; the caller's state machine says it owns the cell.
    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// Declares a constructor that is `const` in normal builds and plain under loom.
#[macro_export]
#[doc(hidden)]
macro_rules! maybe_const_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($args:tt)*) -> $ret:ty $body:block) => {
        #[cfg(not(loom))]
        $(#[$meta])*
        $vis const fn $name($($args)*) -> $ret $body
        #[cfg(loom)]
        $(#[$meta])*
        $vis fn $name($($args)*) -> $ret $body
    };
}

/// `[A::new(init); n]` for an atomic type `A`: a `const` expression normally, built at run time
/// under loom.
#[cfg(not(loom))]
#[macro_export]
#[doc(hidden)]
macro_rules! atomic_array {
    ($ty:ident, $init:expr, $n:expr) => {
        [const { $crate::sync::$ty::new($init) }; $n]
    };
}

/// `[A::new(init); n]` for an atomic type `A` (loom build: built at run time).
#[cfg(loom)]
#[macro_export]
#[doc(hidden)]
macro_rules! atomic_array {
    ($ty:ident, $init:expr, $n:expr) => {
        core::array::from_fn(|_| $crate::sync::$ty::new($init))
    };
}
