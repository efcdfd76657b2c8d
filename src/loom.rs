//! The loom shim: every synchronisation primitive the crate uses comes from here, as tokio does
//! it. In the loom models (`RUSTFLAGS="--cfg loom"` *and* a test build) these are loom's types,
//! so the models check the code that ships; in every other build, including a user's build with
//! `--cfg loom` set for their own models, they are std's.
//!
//! loom's atomics cannot be built in a `const fn`, so constructors go through
//! [`maybe_const_fn!`](maybe_const_fn) (`const` normally, plain under loom, where nothing
//! lives in a `static`) and arrays through [`const_array!`](const_array). Blocking on a
//! futex becomes a yield under loom, so a model can schedule the thread that wakes.

#[cfg(all(test, loom))]
pub(crate) use ::loom::sync::atomic::{
    fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize,
};
#[cfg(all(test, loom))]
pub(crate) use ::loom::sync::{Mutex, MutexGuard};
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::atomic::{
    fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize,
};
#[cfg(not(all(test, loom)))]
pub(crate) use std::sync::{Mutex, MutexGuard};

pub(crate) use std::sync::atomic::Ordering;

/// Hint for a bounded busy wait; under loom it yields so the model can schedule another thread.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(all(test, loom))]
    ::loom::thread::yield_now();
    #[cfg(not(all(test, loom)))]
    std::hint::spin_loop();
}

/// One step of a bounded busy wait. Every 64th step yields the CPU, so that when spinning
/// threads outnumber cores (the loop, its callers and others on a small machine) a spinner does
/// not hold a core that a thread with work needs until the scheduler's time slice ends. On a
/// dedicated core the yield returns at once.
#[inline]
pub(crate) fn spin_step(step: &mut u32) {
    *step = step.wrapping_add(1);
    if *step % 64 == 0 {
        yield_now();
    } else {
        spin_hint();
    }
}

/// Gives up the CPU (a model step under loom).
#[inline]
pub(crate) fn yield_now() {
    #[cfg(all(test, loom))]
    ::loom::thread::yield_now();
    #[cfg(not(all(test, loom)))]
    std::thread::yield_now();
}

/// Sleeps while `*word == expected` (FUTEX_WAIT); returns on a wake, a change or a signal, or
/// spuriously (a yield under loom). Callers re-check their condition.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32) {
    #[cfg(all(test, loom))]
    {
        let _ = (word, expected);
        yield_now();
    }
    // SAFETY: FUTEX_WAIT reads the aligned u32 at a valid address (an AtomicU32 we borrow); a
    // null timeout means no timeout.
    #[cfg(not(all(test, loom)))]
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

/// Wakes every thread in [`futex_wait`] on `word` (nothing to do under loom).
pub(crate) fn futex_wake(word: &AtomicU32) {
    #[cfg(all(test, loom))]
    let _ = word;
    // SAFETY: FUTEX_WAKE only uses the address as a key; it is a valid AtomicU32.
    #[cfg(not(all(test, loom)))]
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

/// An `UnsafeCell` with loom's closure API, so accesses are tracked by loom in models.
#[cfg(not(all(test, loom)))]
#[derive(Debug)]
#[repr(transparent)] // `init_cell_at` writes the value in place through a cast
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(all(test, loom)))]
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

#[cfg(all(test, loom))]
pub(crate) use ::loom::cell::UnsafeCell;

/// A raw pointer to the value of `cell`, for a borrow that outlives one access (the loop's
/// table, a pool's memory, a slot's vector cell). Under loom, accesses through it are not
/// tracked; the owners of such cells are proven by the models of the hand-offs that grant them.
#[inline]
pub(crate) fn cell_ptr<T>(cell: &UnsafeCell<T>) -> *mut T {
    cell.with_mut(|ptr| ptr)
}

/// Initialises the cell at `cell` in place: `init` writes the value field by field, so no large
/// temporary is built (under loom, whose cell carries tracking state, the value is built aside
/// and moved in).
///
/// # Safety
/// `cell` is valid for writes and aligned; `init` writes every field of the value it is given.
pub(crate) unsafe fn init_cell_at<T>(cell: *mut UnsafeCell<T>, init: impl FnOnce(*mut T)) {
    #[cfg(not(all(test, loom)))]
    init(cell.cast::<T>()); // `UnsafeCell` is `repr(transparent)` over the value
    #[cfg(all(test, loom))]
    {
        let mut value = std::mem::MaybeUninit::<T>::uninit();
        init(value.as_mut_ptr());
        // SAFETY: `init` wrote every field (contract); `cell` is valid for writes (contract).
        unsafe { cell.write(UnsafeCell::new(value.assume_init())) };
    }
}

/// Declares a constructor that is `const` in normal builds and plain under loom.
macro_rules! maybe_const_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($args:tt)*) -> $ret:ty $body:block) => {
        #[cfg(not(all(test, loom)))]
        $(#[$meta])*
        $vis const fn $name($($args)*) -> $ret $body
        #[cfg(all(test, loom))]
        $(#[$meta])*
        $vis fn $name($($args)*) -> $ret $body
    };
}

/// `[expr; n]` for a non-`Copy` `expr` that is a `const` expression normally and built at run time
/// under loom (whose atomics are not `const`).
#[cfg(not(all(test, loom)))]
macro_rules! const_array {
    ($init:expr; $n:expr) => {
        [const { $init }; $n]
    };
}

/// `[expr; n]` (loom build: built at run time).
#[cfg(all(test, loom))]
macro_rules! const_array {
    ($init:expr; $n:expr) => {
        core::array::from_fn(|_| $init)
    };
}

// Crate-private helpers, not exported: `crate::loom::maybe_const_fn!`, `crate::loom::const_array!`.
pub(crate) use {const_array, maybe_const_fn};
