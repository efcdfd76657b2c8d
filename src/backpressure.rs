//! Waiting for a free slot without allocating and without spinning: an intrusive FIFO of waiter
//! nodes that live inside the waiting futures.
//!
//! # Implementation details
//!
//! Claiming a slot is a lock-free pop from the free list. Only when it fails does a caller take
//! the list's mutex, count itself in `waiting`, retry the pop once, and if that fails link its
//! [`Waiter`] node (pinned inside its future) at the tail and return `Pending`.
//!
//! Freeing a slot pushes the index on the free list, then looks at `waiting`. If anyone waits, it
//! takes the mutex and hands free indices directly to the waiters at the head, in FIFO order,
//! waking each *while holding the mutex*. Handing the index over (rather than letting woken
//! waiters race for it) is what makes the order FIFO.
//!
//! The lost-wake-up race (a slot freed between a waiter's failed pop and its linking) is closed
//! by a Dekker pair: the waiter increments `waiting`, then a SeqCst fence, then pops; the freer
//! pushes, then a SeqCst fence, then reads `waiting`. At least one of them sees the other.
//!
//! Node fields are only touched with the mutex held. A node is unlinked under the mutex before
//! its future's memory can go away (`cancel` from the future's `Drop`), and wakes happen under
//! the mutex too, so even a waker that points into the waiting thread's stack (the blocking
//! `.wait()` path) is never used after that thread has moved on.
//!
//! When the loop closes, every node is marked closed and woken: the callers get `Error::Closed`.

use std::cell::UnsafeCell;
use std::marker::PhantomPinned;
use std::ptr;
use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::Waker;

use crate::free_list::FreeList;

/// Where a waiter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitState {
    /// Not in the list.
    Idle,
    /// Linked, waiting for a slot.
    Queued,
    /// A slot was handed over; the waiter owns it.
    Granted(u32),
    /// The loop closed while we waited.
    Closed,
}

/// A waiting caller's node. Lives inside its future, which is `!Unpin` because of it.
pub(crate) struct Waiter {
    inner: UnsafeCell<Node>,
    _pinned: PhantomPinned,
}

struct Node {
    state: WaitState,
    waker: Option<Waker>,
    prev: *mut Waiter,
    next: *mut Waiter,
}

// SAFETY: the node's fields are only accessed with the list's mutex held (or by the owner while
// the node is not linked, which no other thread can then reach).
unsafe impl Send for Waiter {}
// SAFETY: as above.
unsafe impl Sync for Waiter {}

impl Waiter {
    /// A node in no list.
    pub(crate) const fn new() -> Self {
        Waiter {
            inner: UnsafeCell::new(Node {
                state: WaitState::Idle,
                waker: None,
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
            }),
            _pinned: PhantomPinned,
        }
    }
}

/// Head and tail of the FIFO.
struct Links {
    head: *mut Waiter,
    tail: *mut Waiter,
}

// SAFETY: the raw pointers are only followed with the mutex held.
unsafe impl Send for Links {}

/// The FIFO of callers waiting for a slot.
pub(crate) struct WaitList {
    links: Mutex<Links>,
    /// Linked nodes plus callers between their increment and their decision (Dekker counter).
    waiting: AtomicUsize,
}

impl WaitList {
    /// Empty.
    pub(crate) const fn new() -> Self {
        WaitList {
            links: Mutex::new(Links {
                head: ptr::null_mut(),
                tail: ptr::null_mut(),
            }),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Claims a free index for the owner of `waiter`, or queues it. `closed` is checked under the
    /// mutex so a close cannot slip between the check and the linking.
    ///
    /// # Safety
    /// `waiter` is pinned and is only ever passed to this list, and [`cancel`](Self::cancel) is
    /// called before its memory is reused.
    pub(crate) unsafe fn poll_claim<const N: usize>(
        &self,
        waiter: *const Waiter,
        free: &FreeList<N>,
        closed: impl Fn() -> bool,
        waker: &Waker,
    ) -> WaitState {
        let waiter = waiter as *mut Waiter;
        let mut links = self.lock();
        // SAFETY: mutex held; the node is valid (contract).
        let node = unsafe { &mut *(*waiter).inner.get() };
        match node.state {
            WaitState::Granted(_) => {
                // The index is the caller's now: the node goes back to Idle so that a later
                // `cancel` does not free it a second time.
                let granted = node.state;
                node.state = WaitState::Idle;
                node.waker = None;
                return granted;
            }
            WaitState::Closed => return WaitState::Closed,
            WaitState::Queued => {
                if closed() {
                    // SAFETY: the node is linked in this list and the mutex is held.
                    unsafe { links.unlink(waiter) };
                    self.waiting.fetch_sub(1, Ordering::Relaxed);
                    node.state = WaitState::Closed;
                } else if !node.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    node.waker = Some(waker.clone());
                }
                return node.state;
            }
            WaitState::Idle => {}
        }
        if closed() {
            return WaitState::Closed;
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        // SeqCst: the Dekker fence pairing with the one in `wake_waiters` (module doc).
        fence(Ordering::SeqCst);
        if let Some(index) = free.pop() {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return WaitState::Granted(index);
        }
        node.waker = Some(waker.clone());
        node.state = WaitState::Queued;
        // SAFETY: mutex held, node not linked, valid until `cancel` (contract).
        unsafe { links.push_back(waiter) };
        WaitState::Queued
    }

    /// After an index was pushed on `free`: hands free indices to waiters, oldest first.
    pub(crate) fn wake_waiters<const N: usize>(&self, free: &FreeList<N>) {
        // SeqCst: pairs with the fence in `poll_claim` (module doc).
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut links = self.lock();
        while !links.head.is_null() {
            let Some(index) = free.pop() else { break };
            let waiter = links.head;
            // SAFETY: mutex held; `waiter` is linked, hence valid.
            unsafe {
                links.unlink(waiter);
                let node = &mut *(*waiter).inner.get();
                node.state = WaitState::Granted(index);
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                if let Some(waker) = node.waker.take() {
                    waker.wake();
                }
            }
        }
    }

    /// Marks every waiter closed and wakes it.
    pub(crate) fn close_all(&self) {
        let mut links = self.lock();
        while !links.head.is_null() {
            let waiter = links.head;
            // SAFETY: mutex held; `waiter` is linked, hence valid.
            unsafe {
                links.unlink(waiter);
                let node = &mut *(*waiter).inner.get();
                node.state = WaitState::Closed;
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                if let Some(waker) = node.waker.take() {
                    waker.wake();
                }
            }
        }
    }

    /// The owner of `waiter` stops waiting; returns an index it was granted but not yet took, which
    /// the caller must free again.
    ///
    /// # Safety
    /// Same as [`poll_claim`](Self::poll_claim).
    pub(crate) unsafe fn cancel(&self, waiter: *const Waiter) -> Option<u32> {
        let waiter = waiter as *mut Waiter;
        let mut links = self.lock();
        // SAFETY: mutex held; the node is valid (contract).
        let node = unsafe { &mut *(*waiter).inner.get() };
        let granted = match node.state {
            WaitState::Queued => {
                // SAFETY: linked in this list, mutex held.
                unsafe { links.unlink(waiter) };
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                None
            }
            WaitState::Granted(index) => Some(index),
            WaitState::Idle | WaitState::Closed => None,
        };
        node.state = WaitState::Idle;
        node.waker = None;
        granted
    }

    /// Callers currently counted as waiting.
    #[allow(dead_code)] // tests
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Links> {
        // A panic while holding this mutex cannot leave the links half-updated (no user code
        // runs under it except `Waker::wake`), so poisoning is ignored.
        self.links
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Links {
    /// # Safety
    /// Mutex held; `waiter` valid and not linked.
    unsafe fn push_back(&mut self, waiter: *mut Waiter) {
        // SAFETY: contract; `self.tail` is linked, hence valid.
        unsafe {
            let node = &mut *(*waiter).inner.get();
            node.prev = self.tail;
            node.next = ptr::null_mut();
            if self.tail.is_null() {
                self.head = waiter;
            } else {
                (*(*self.tail).inner.get()).next = waiter;
            }
        }
        self.tail = waiter;
    }

    /// # Safety
    /// Mutex held; `waiter` linked in this list.
    unsafe fn unlink(&mut self, waiter: *mut Waiter) {
        // SAFETY: contract; neighbours are linked, hence valid.
        unsafe {
            let node = &mut *(*waiter).inner.get();
            if node.prev.is_null() {
                self.head = node.next;
            } else {
                (*(*node.prev).inner.get()).next = node.next;
            }
            if node.next.is_null() {
                self.tail = node.prev;
            } else {
                (*(*node.next).inner.get()).prev = node.prev;
            }
            node.prev = ptr::null_mut();
            node.next = ptr::null_mut();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn waiters_are_granted_in_fifo_order_and_cancel_unlinks() {
        // Backpressure must be fair: the caller that waited longest gets the next free slot;
        // a caller that gives up leaves the queue without losing a slot.
        let free = FreeList::<2>::new();
        free.fill();
        let list = WaitList::new();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let a = free.pop().unwrap();
        let b = free.pop().unwrap();
        let nodes = [Waiter::new(), Waiter::new(), Waiter::new()];
        let open = || false;
        // SAFETY: the nodes live on this frame, are not moved, and are cancelled below.
        unsafe {
            for node in &nodes {
                assert_eq!(
                    list.poll_claim(node, &free, open, &waker),
                    WaitState::Queued
                );
            }
            assert_eq!(list.waiting(), 3);
            assert_eq!(list.cancel(&nodes[1]), None, "second waiter gives up");
            free.push(a);
            list.wake_waiters(&free);
            assert_eq!(
                list.poll_claim(&nodes[0], &free, open, &waker),
                WaitState::Granted(a)
            );
            assert_eq!(
                list.poll_claim(&nodes[2], &free, open, &waker),
                WaitState::Queued
            );
            free.push(b);
            list.wake_waiters(&free);
            assert_eq!(count.0.load(Ordering::SeqCst), 2);
            assert_eq!(list.waiting(), 0);
            assert_eq!(
                list.cancel(&nodes[0]),
                None,
                "a consumed grant is not freed twice"
            );
            assert_eq!(
                list.cancel(&nodes[2]),
                Some(b),
                "granted but unused goes back"
            );
            let late = Waiter::new();
            assert_eq!(
                list.poll_claim(&late, &free, open, &waker),
                WaitState::Queued
            );
            list.close_all();
            assert_eq!(
                list.poll_claim(&late, &free, open, &waker),
                WaitState::Closed
            );
            list.cancel(&late);
        }
    }
}
