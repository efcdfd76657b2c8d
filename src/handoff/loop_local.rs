//! The loop thread's own hand-off: a private stack of free slots and a private queue of
//! submitted requests, for operations created and polled on the loop thread itself (a
//! `block_on` future, a pool task, a waker the loop runs).
//!
//! On the loop thread the loop is not running while such an operation runs (the thread is
//! inside the loop's call into user code), so a slot it frees and the next slot it claims, and
//! the request it submits, need no atomic hand-off: plain stores in memory only that thread
//! touches. Requests from other threads keep the lock-free path; both coexist on one loop.
//!
//! ```text
//! loop-thread caller: private free stack pop (else the shared list) ─▶ slot ─▶ SQ, staged
//!                     through the loop's open window (`EventLoop::stage_fresh`), or else ─▶
//!                     private queue
//! loop:               private queue pop (before the shared ring) ─▶ admit ─▶ ... ─▶ DONE
//! loop-thread caller: takes the result ─▶ private free stack push (no waiter: else shared)
//! loop, every pass:   private free stack ─▶ shared free list, waiters served (`flush`)
//! ```
//!
//! **The private stack never hides a slot from another thread for long.** A slot goes there
//! only while nobody waits for one; the loop hands the whole stack back to the shared list at
//! the end of every pass, before it can sleep, and serves the waiters then. A remote caller that
//! queued meanwhile gets its slot within the pass, as from any slot freed late in it.
//!
//! **Who may touch it.** Only the thread running the current claim's loop, and only between
//! [`activate`](LoopLocal::activate) and [`deactivate`](LoopLocal::deactivate) for callers
//! (checked with `Storage::loop_here`: the thread's serving key first, `active` only then). The
//! loop itself deactivates, hands the stack back and sweeps the queue when it stops serving and
//! when it closes (a panic included), so both are empty whenever no loop serves; the claim's
//! Release/Acquire orders one loop's last writes before the next loop's first.

use std::cell::Cell;
use std::task::Waker;

use crate::handoff::free_list::FreeList;
use crate::handoff::wait_list::WaitList;

/// The loop thread's private free stack and submission queue, for `N` slots.
pub(crate) struct LoopLocal<const N: usize> {
    /// Callers on the loop thread may use it (the loop is serving).
    active: Cell<bool>,
    /// Free slot indices, a stack of `free_len`.
    free: [Cell<u32>; N],
    free_len: Cell<u32>,
    /// Submitted slot indices, FIFO: positions `head..tail` (wrapping), at most `N` (each slot's
    /// index is in it at most once: a slot is submitted again only after it was freed).
    queue: [Cell<u32>; N],
    head: Cell<u32>,
    tail: Cell<u32>,
    /// Per slot, the waker of a caller that registered on the loop thread (`Slot` phase bit
    /// `LOCAL_WAKER`): the loop wakes it without the slot's atomic waker cell.
    wakers: [Cell<Option<Waker>>; N],
    /// The serving loop (an `EventLoop` of this storage, type-erased) while it polls
    /// `block_on`'s future and holds no borrow of itself or its table: a request submitted then
    /// is staged through it at once (`EventLoop::stage_in_window`). Null otherwise.
    window: Cell<*mut ()>,
}

// SAFETY: only the thread running the current claim's loop touches a `LoopLocal` (module doc:
// callers check `Storage::loop_here` first, the loop is that thread), one at a time; the claim
// hand-off orders one loop's accesses before the next one's.
unsafe impl<const N: usize> Sync for LoopLocal<N> {}
// SAFETY: as above; the window pointer is only set (and read) by the loop's thread while that
// thread serves, and is null whenever no loop serves.
unsafe impl<const N: usize> Send for LoopLocal<N> {}

impl<const N: usize> LoopLocal<N> {
    /// Empty and inactive.
    #[allow(clippy::declare_interior_mutable_const)]
    pub(crate) const fn new() -> Self {
        const EMPTY: Cell<u32> = Cell::new(0);
        const NO_WAKER: Cell<Option<Waker>> = Cell::new(None);
        LoopLocal {
            active: Cell::new(false),
            free: [EMPTY; N],
            free_len: Cell::new(0),
            queue: [EMPTY; N],
            head: Cell::new(0),
            tail: Cell::new(0),
            wakers: [NO_WAKER; N],
            window: Cell::new(std::ptr::null_mut()),
        }
    }

    /// Writes [`LoopLocal::new`] into `ptr` field by field (no large stack temporary).
    ///
    /// # Safety
    /// `ptr` is valid for writes and aligned.
    pub(crate) unsafe fn init_at(ptr: *mut Self) {
        // SAFETY: every write stays inside the allocation behind `ptr` (contract).
        unsafe {
            std::ptr::addr_of_mut!((*ptr).active).write(Cell::new(false));
            std::ptr::addr_of_mut!((*ptr).free_len).write(Cell::new(0));
            std::ptr::addr_of_mut!((*ptr).head).write(Cell::new(0));
            std::ptr::addr_of_mut!((*ptr).tail).write(Cell::new(0));
            std::ptr::addr_of_mut!((*ptr).window).write(Cell::new(std::ptr::null_mut()));
            let free = std::ptr::addr_of_mut!((*ptr).free).cast::<Cell<u32>>();
            let queue = std::ptr::addr_of_mut!((*ptr).queue).cast::<Cell<u32>>();
            let wakers = std::ptr::addr_of_mut!((*ptr).wakers).cast::<Cell<Option<Waker>>>();
            for i in 0..N {
                free.add(i).write(Cell::new(0));
                queue.add(i).write(Cell::new(0));
                wakers.add(i).write(Cell::new(None));
            }
        }
    }

    /// Whether the loop is serving: callers on its thread may use the private paths.
    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        self.active.get()
    }

    /// The loop starts serving.
    pub(crate) fn activate(&self) {
        self.active.set(true);
    }

    /// The loop stops serving (drain, close): callers take the shared paths from now on.
    pub(crate) fn deactivate(&self) {
        self.active.set(false);
        self.window.set(std::ptr::null_mut());
    }

    /// The open window's loop, or null (see the field).
    #[inline]
    pub(crate) fn window(&self) -> *mut () {
        self.window.get()
    }

    /// Keeps free slot `index` for the loop thread's next claim.
    #[inline]
    pub(crate) fn push_free(&self, index: u32) {
        let len = self.free_len.get();
        debug_assert!((len as usize) < N, "a slot freed twice");
        self.free[len as usize].set(index);
        self.free_len.set(len + 1);
    }

    /// A free slot kept by the loop thread, if any.
    #[inline]
    pub(crate) fn pop_free(&self) -> Option<u32> {
        let len = self.free_len.get().checked_sub(1)?;
        self.free_len.set(len);
        Some(self.free[len as usize].get())
    }

    /// Whether the stack holds free slots.
    #[inline]
    pub(crate) fn has_free(&self) -> bool {
        self.free_len.get() != 0
    }

    /// Frees slot `index` (released, ours): kept on the private stack while nobody waits for a
    /// slot, else pushed to the shared list, whose waiters are then served. Returns the panics of
    /// the waiters' wakers (contained).
    #[inline]
    pub(crate) fn free_to(&self, index: u32, free: &FreeList<N>, waiters: &WaitList) -> u64 {
        if !free.has_waiters() {
            // A waiter that registers after this read is served by `hand_back` at the end of the
            // pass (its push sees the waiter's flag): never left waiting for good.
            self.push_free(index);
            return 0;
        }
        waiters.free(free, index)
    }

    /// Hands every kept free slot back to the shared list and, if a push found someone waiting,
    /// serves the waiters. Returns the panics of their wakers (contained).
    pub(crate) fn hand_back(&self, free: &FreeList<N>, waiters: &WaitList) -> u64 {
        let mut waiting = false;
        while let Some(index) = self.pop_free() {
            waiting |= free.push(index);
        }
        if waiting {
            waiters.wake_waiters(free)
        } else {
            0
        }
    }

    /// Registers the waker of slot `index`'s caller (on the loop thread). Returns the waker it
    /// replaces, for the caller to drop once the crate's state is final (user code). Cloning
    /// `waker` is user code too: it runs with the cell holding the old waker, so a panic in it
    /// leaves the cell consistent.
    #[inline]
    pub(crate) fn register_waker(&self, index: u32, waker: &Waker) -> Option<Waker> {
        let cell = &self.wakers[index as usize];
        let old = cell.take();
        let same = old.as_ref().is_some_and(|old| old.will_wake(waker));
        cell.set(old);
        if same {
            return None;
        }
        cell.replace(Some(Self::own(waker)))
    }

    /// [`register_waker`](Self::register_waker) for the first poll of a request just
    /// submitted: its cell was emptied when the slot's previous request ended, so there is
    /// nothing to compare with (whatever it holds is still handed back, for the caller to drop).
    #[inline]
    pub(crate) fn register_first_waker(&self, index: u32, waker: &Waker) -> Option<Waker> {
        self.wakers[index as usize].replace(Some(Self::own(waker)))
    }

    /// A waker of our own for `waker` (user code: its clone), or a pool task's copied without
    /// the call through its vtable (crate code).
    #[inline]
    fn own(waker: &Waker) -> Waker {
        match crate::task_pool::TaskRef::of(waker) {
            Some(task) => task.waker(),
            None => waker.clone(),
        }
    }

    /// Takes the waker of slot `index` (the loop, to wake it, or its caller, taking it back).
    #[inline]
    pub(crate) fn take_waker(&self, index: u32) -> Option<Waker> {
        self.wakers[index as usize].take()
    }

    /// Takes every waker left in the cells (the loop closes): for the caller to drop.
    pub(crate) fn take_wakers(&self) -> impl Iterator<Item = Waker> + '_ {
        self.wakers.iter().filter_map(Cell::take)
    }

    /// Queues submitted slot `index` for the loop.
    #[inline]
    pub(crate) fn push(&self, index: u32) {
        let tail = self.tail.get();
        debug_assert!(
            (tail.wrapping_sub(self.head.get()) as usize) < N,
            "a slot queued twice"
        );
        self.queue[tail as usize % N].set(index);
        self.tail.set(tail.wrapping_add(1));
    }

    /// The oldest submitted slot index, if any.
    #[inline]
    pub(crate) fn pop(&self) -> Option<u32> {
        let head = self.head.get();
        if head == self.tail.get() {
            return None;
        }
        self.head.set(head.wrapping_add(1));
        Some(self.queue[head as usize % N].get())
    }

    /// Whether a submitted request waits in the queue.
    #[inline]
    pub(crate) fn has_ready(&self) -> bool {
        self.head.get() != self.tail.get()
    }
}

/// The window open while the serving loop polls `block_on`'s future (see `LoopLocal::window`);
/// closed when dropped, a panic included.
pub(crate) struct Window<'a, const N: usize>(&'a LoopLocal<N>);

impl<'a, const N: usize> Window<'a, N> {
    /// Publishes `event_loop`, which holds no borrow of itself or its table until the window
    /// closes.
    pub(crate) fn open(local: &'a LoopLocal<N>, event_loop: *mut ()) -> Self {
        local.window.set(event_loop);
        Window(local)
    }
}

impl<const N: usize> Drop for Window<'_, N> {
    fn drop(&mut self) {
        self.0.window.set(std::ptr::null_mut());
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_stack_is_lifo_and_the_queue_fifo_across_wraps() {
        let local = LoopLocal::<4>::new();
        assert!(!local.is_active() && !local.has_free() && !local.has_ready());
        local.activate();
        assert!(local.is_active());
        for i in [3, 1, 2] {
            local.push_free(i);
        }
        assert_eq!(local.pop_free(), Some(2));
        assert_eq!(local.pop_free(), Some(1));
        assert!(local.has_free());
        assert_eq!(local.pop_free(), Some(3));
        assert_eq!(local.pop_free(), None);
        // Many laps of the queue, up to full each time.
        for lap in 0..10u32 {
            for i in 0..4 {
                local.push(lap * 4 + i);
            }
            assert!(local.has_ready());
            for i in 0..4 {
                assert_eq!(local.pop(), Some(lap * 4 + i));
            }
            assert_eq!(local.pop(), None);
        }
        local.deactivate();
        assert!(!local.is_active());
    }
}
