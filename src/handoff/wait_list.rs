//! Waiting for a free slot without allocating and without spinning: an intrusive FIFO of waiter
//! nodes that live inside the waiting futures.
//!
//! # Implementation details
//!
//! Claiming a slot is a lock-free pop from the free list, taken only while nobody waits (so a
//! newcomer never overtakes a waiter): the free list's head carries a `WAITERS` flag, and the
//! pop that finds it set refuses ([`FreeList::pop_unwaited`]). Otherwise a caller takes the
//! list's mutex, sets the flag, pops once more if the list is empty, and if that fails links its
//! [`Waiter`] node (pinned inside its future) at the tail and returns `Pending`.
//!
//! Freeing a slot pushes the index on the free list ([`WaitList::free`]); the push's own
//! compare-exchange says whether the flag was set. If it was, the freer hands free indices
//! directly to the waiters at the head, in FIFO order, one per lock hold: under the mutex it
//! unlinks the head, records the grant in the node and takes its [`Notifier`]; after releasing
//! the mutex it notifies. Handing the index over (rather than letting woken waiters race for it)
//! is what makes the order FIFO.
//!
//! The lost-wake-up race (a slot freed between a waiter's failed pop and its linking) cannot
//! happen: the waiter's setting of the flag and the freer's push are read-modify-writes of one
//! word, so they are totally ordered. A push before the flag left its index for the waiter's pop
//! that follows; a push after it sees the flag and serves the list, under the mutex the waiter
//! holds until it is linked. The flag is set whenever a node is linked (set before linking,
//! cleared only under the mutex by whoever finds the list empty); a flag left set after the last
//! waiter left (cancelled or closed) costs the next claim or free one pass under the mutex, which
//! clears it.
//!
//! # User code
//!
//! Node fields are only touched with the mutex held, and no user code runs under it: a waker is
//! cloned before the mutex is taken, and wakers taken out of nodes are woken or dropped after it
//! is released. A notifier owns what it wakes (a `Waker`, or a `Thread` handle for `.wait()`,
//! never a pointer into a stack frame), so it stays valid after its node's owner has moved on. A
//! wake that panics is caught and counted: the list is final before it runs.
//!
//! When the loop of a claim closes, every node of that claim is marked closed and notified: the
//! callers get `Error::Closed`. Nodes carry their claim's epoch, so a late close of an old claim
//! never closes the waiters of the next one.

use std::marker::PhantomPinned;
use std::ptr;
use std::task::Waker;
use std::thread::Thread;

use crate::handoff::free_list::FreeList;
use crate::loom::{Mutex, MutexGuard, UnsafeCell};

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

/// How a waiting caller wants to be told, borrowed from its poll.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Notify<'a> {
    /// An async task.
    Task(&'a Waker),
    /// The calling thread, blocked in `.wait()` (its handle is taken only if it must queue).
    CurrentThread,
}

impl Notify<'_> {
    /// Whether the caller blocks its thread (`.wait()`), rather than registering a waker.
    pub(crate) fn blocks(&self) -> bool {
        matches!(self, Notify::CurrentThread)
    }
}

/// An owned [`Notify`], kept in the node while it waits.
#[derive(Debug)]
pub(crate) enum Notifier {
    Task(Waker),
    Thread(Thread),
}

impl Notify<'_> {
    /// An owned copy (a waker clone, or a thread handle's reference count): user code for
    /// `Task`, so it runs before the mutex is taken.
    fn to_owned(self) -> Notifier {
        match self {
            Notify::Task(waker) => Notifier::Task(waker.clone()),
            Notify::CurrentThread => Notifier::Thread(std::thread::current()),
        }
    }
}

impl Notifier {
    /// Whether `self` already notifies whom `other` names (no user code).
    fn same_as(&self, other: &Notifier) -> bool {
        match (self, other) {
            (Notifier::Task(a), Notifier::Task(b)) => a.will_wake(b),
            (Notifier::Thread(a), Notifier::Thread(b)) => a.id() == b.id(),
            _ => false,
        }
    }

    /// Wakes the waiter; returns true if its waker panicked (the panic is caught).
    pub(crate) fn notify(self) -> bool {
        match self {
            Notifier::Task(waker) => crate::contain::run(|| waker.wake()),
            Notifier::Thread(thread) => {
                thread.unpark();
                false
            }
        }
    }
}

/// A waiting caller's node. Lives inside its future, which is `!Unpin` because of it.
pub(crate) struct Waiter {
    inner: UnsafeCell<Node>,
    _pinned: PhantomPinned,
}

struct Node {
    state: WaitState,
    /// The claim the waiter belongs to (see `close_all`).
    epoch: u32,
    notifier: Option<Notifier>,
    prev: *mut Waiter,
    next: *mut Waiter,
}

impl Node {
    /// Moves the node to `state` (out of the list) and takes its notifier, to be used or dropped
    /// after the mutex is released.
    fn settle(state: WaitState) -> impl FnOnce(&mut Node) -> Option<Notifier> {
        move |node| {
            node.state = state;
            node.notifier.take()
        }
    }
}

// SAFETY: the node's fields are only accessed with the list's mutex held (or by the owner while
// the node is not linked, which no other thread can then reach).
unsafe impl Send for Waiter {}
// SAFETY: as above.
unsafe impl Sync for Waiter {}

impl Waiter {
    crate::loom::maybe_const_fn! {
        /// A node in no list.
        pub(crate) fn new() -> Self {
            Waiter {
                inner: UnsafeCell::new(Node {
                    state: WaitState::Idle,
                    epoch: 0,
                    notifier: None,
                    prev: ptr::null_mut(),
                    next: ptr::null_mut(),
                }),
                _pinned: PhantomPinned,
            }
        }
    }

    /// Runs `f` on the node.
    ///
    /// # Safety
    /// The list's mutex is held (or the node is unlinked and only its owner can reach it), and
    /// `this` is valid.
    unsafe fn node<R>(this: *mut Waiter, f: impl FnOnce(&mut Node) -> R) -> R {
        // SAFETY: the mutex makes this the only access (contract).
        unsafe { (*this).inner.with_mut(|node| f(&mut *node)) }
    }
}

/// Head and tail of the FIFO.
struct Links {
    head: *mut Waiter,
    tail: *mut Waiter,
}

// SAFETY: the raw pointers are only followed with the mutex held.
unsafe impl Send for Links {}

/// The FIFO of callers waiting for a slot. Whether anyone waits is the free list's `WAITERS`
/// flag (module doc).
pub(crate) struct WaitList {
    links: Mutex<Links>,
}

impl WaitList {
    crate::loom::maybe_const_fn! {
        /// Empty.
        pub(crate) fn new() -> Self {
            WaitList {
                links: Mutex::new(Links {
                    head: ptr::null_mut(),
                    tail: ptr::null_mut(),
                }),
            }
        }
    }

    /// Claims a free index for the owner of `waiter` (of claim `epoch`), or queues it. `closed`
    /// is checked under the mutex so a close cannot slip between the check and the linking.
    ///
    /// # Safety
    /// `waiter` is pinned and is only ever passed to this list, and [`cancel`](Self::cancel) is
    /// called before its memory is reused.
    pub(crate) unsafe fn poll_claim<const N: usize>(
        &self,
        waiter: *const Waiter,
        epoch: u32,
        free: &FreeList<N>,
        closed: impl Fn() -> bool,
        notify: Notify<'_>,
    ) -> WaitState {
        let waiter = waiter as *mut Waiter;
        // User code (a waker clone) before the mutex; the notifier it replaces, and this one if
        // unused, are dropped after the mutex (declared before `links`, dropped after it).
        let mut fresh = Some(notify.to_owned());
        let _old;
        let mut links = self.lock();
        // SAFETY: mutex held; the node is valid (contract). Likewise below.
        match unsafe { Waiter::node(waiter, |node| node.state) } {
            WaitState::Granted(index) => {
                // The index is the caller's now: the node goes back to Idle so that a later
                // `cancel` does not free it a second time.
                // SAFETY: as above.
                _old = unsafe { Waiter::node(waiter, Node::settle(WaitState::Idle)) };
                return WaitState::Granted(index);
            }
            WaitState::Closed => return WaitState::Closed,
            WaitState::Queued if closed() => {
                // SAFETY: the node is linked in this list and the mutex is held.
                unsafe { links.unlink(waiter) };
                // SAFETY: as above.
                _old = unsafe { Waiter::node(waiter, Node::settle(WaitState::Closed)) };
                return WaitState::Closed;
            }
            WaitState::Queued => {
                let fresh = fresh.take().expect("set above");
                // SAFETY: as above.
                _old = unsafe {
                    Waiter::node(waiter, |node| match &node.notifier {
                        Some(current) if current.same_as(&fresh) => Some(fresh),
                        _ => node.notifier.replace(fresh),
                    })
                };
                return WaitState::Queued;
            }
            WaitState::Idle => {}
        }
        if closed() {
            return WaitState::Closed;
        }
        // Before the pop: a push from now on sees the flag and serves the list (module doc).
        free.set_waiters();
        // Only an empty list may be overtaken; otherwise the slot goes to the head of the queue.
        if links.head.is_null() {
            if let Some(index) = free.pop() {
                // Nobody else waits: the list is empty, and we are not linking.
                free.clear_waiters();
                return WaitState::Granted(index);
            }
        }
        // SAFETY: mutex held, node not linked, valid until `cancel` (contract).
        unsafe {
            Waiter::node(waiter, |node| {
                node.notifier = fresh.take();
                node.state = WaitState::Queued;
                node.epoch = epoch;
            });
            links.push_back(waiter);
        }
        WaitState::Queued
    }

    /// Frees `index` (the caller's, not on the list) onto `free` and, if anyone waits, hands
    /// free indices to the waiters. Returns the number of waiter wakes that panicked (caught).
    #[inline]
    pub(crate) fn free<const N: usize>(&self, free: &FreeList<N>, index: u32) -> u64 {
        if free.push(index) {
            self.wake_waiters(free)
        } else {
            0
        }
    }

    /// After a push found the `WAITERS` flag set: hands free indices to waiters, oldest first,
    /// and clears the flag once none is left. Returns the number of waiter wakes that panicked
    /// (caught).
    #[cold]
    pub(crate) fn wake_waiters<const N: usize>(&self, free: &FreeList<N>) -> u64 {
        self.notify_each(|links| {
            if links.head.is_null() {
                // Under the mutex: nobody is linked or deciding (module doc).
                free.clear_waiters();
                return None;
            }
            let index = free.pop()?;
            Some((links.head, WaitState::Granted(index)))
        })
    }

    /// Marks every waiter of claim `epoch` closed and notifies it. Returns the panicked wakes.
    pub(crate) fn close_all(&self, epoch: u32) -> u64 {
        self.notify_each(|links| {
            let mut at = links.head;
            while !at.is_null() {
                // SAFETY: mutex held; `at` is linked, hence valid.
                let (of_claim, next) = unsafe { Waiter::node(at, |n| (n.epoch == epoch, n.next)) };
                if of_claim {
                    return Some((at, WaitState::Closed));
                }
                at = next;
            }
            None
        })
    }

    /// Repeatedly: under the mutex, `pick` a linked node and its new state, unlink it and take its
    /// notifier; then, with the mutex released, notify. Returns the panicked wakes.
    fn notify_each(
        &self,
        mut pick: impl FnMut(&mut Links) -> Option<(*mut Waiter, WaitState)>,
    ) -> u64 {
        let mut panics = 0;
        loop {
            let notifier = {
                let mut links = self.lock();
                let Some((waiter, state)) = pick(&mut links) else {
                    return panics;
                };
                // SAFETY: mutex held; `pick` returned a linked (hence valid) node.
                unsafe {
                    links.unlink(waiter);
                    Waiter::node(waiter, Node::settle(state))
                }
            };
            if notifier.is_some_and(Notifier::notify) {
                panics += 1;
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
        let state = unsafe { Waiter::node(waiter, |node| node.state) };
        if state == WaitState::Queued {
            // SAFETY: linked in this list, mutex held.
            unsafe { links.unlink(waiter) };
        }
        // SAFETY: as above.
        let notifier = unsafe { Waiter::node(waiter, Node::settle(WaitState::Idle)) };
        drop(links);
        // User code (the waker's drop) after the mutex.
        drop(notifier);
        match state {
            WaitState::Granted(index) => Some(index),
            _ => None,
        }
    }

    /// Callers currently linked (tests).
    #[allow(dead_code)] // tests
    pub(crate) fn waiting(&self) -> usize {
        let links = self.lock();
        let (mut count, mut at) = (0, links.head);
        while !at.is_null() {
            count += 1;
            // SAFETY: mutex held; `at` is linked, hence valid.
            at = unsafe { Waiter::node(at, |n| n.next) };
        }
        count
    }

    fn lock(&self) -> MutexGuard<'_, Links> {
        // No user code runs under this mutex and no step inside can panic, so a poisoned lock
        // (impossible in practice) still guards consistent links.
        self.links
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Links {
    /// # Safety
    /// Mutex held; `waiter` valid and not linked.
    unsafe fn push_back(&mut self, waiter: *mut Waiter) {
        let tail = self.tail;
        // SAFETY: contract; `tail` is linked, hence valid, and is a different node.
        unsafe {
            Waiter::node(waiter, |node| {
                node.prev = tail;
                node.next = ptr::null_mut();
            });
            if tail.is_null() {
                self.head = waiter;
            } else {
                Waiter::node(tail, |node| node.next = waiter);
            }
        }
        self.tail = waiter;
    }

    /// # Safety
    /// Mutex held; `waiter` linked in this list.
    unsafe fn unlink(&mut self, waiter: *mut Waiter) {
        // SAFETY: contract; the neighbours are linked, hence valid, and each node is borrowed
        // alone.
        unsafe {
            let (prev, next) = Waiter::node(waiter, |node| {
                let links = (node.prev, node.next);
                node.prev = ptr::null_mut();
                node.next = ptr::null_mut();
                links
            });
            if prev.is_null() {
                self.head = next;
            } else {
                Waiter::node(prev, |node| node.next = next);
            }
            if next.is_null() {
                self.tail = prev;
            } else {
                Waiter::node(next, |node| node.prev = prev);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
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
                    list.poll_claim(node, 0, &free, open, Notify::Task(&waker)),
                    WaitState::Queued
                );
            }
            assert_eq!(list.waiting(), 3);
            assert_eq!(list.cancel(&nodes[1]), None, "second waiter gives up");
            assert_eq!(list.free(&free, a), 0);
            assert_eq!(
                list.poll_claim(&nodes[0], 0, &free, open, Notify::Task(&waker)),
                WaitState::Granted(a)
            );
            assert_eq!(
                list.poll_claim(&nodes[2], 0, &free, open, Notify::Task(&waker)),
                WaitState::Queued
            );
            assert_eq!(list.free(&free, b), 0);
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
                list.poll_claim(&late, 0, &free, open, Notify::Task(&waker)),
                WaitState::Queued
            );
            list.close_all(0);
            assert_eq!(
                list.poll_claim(&late, 0, &free, open, Notify::Task(&waker)),
                WaitState::Closed
            );
            list.cancel(&late);
        }
    }

    #[test]
    fn the_free_lists_flag_says_whether_anyone_waits() {
        // The claim's fast path and the freer's push read one flag in the free list's head: a
        // newcomer may not take a slot while someone waits, a push serves the list exactly when
        // someone waits, and a flag left by a waiter that gave up is cleared by the next free.
        let free = FreeList::<2>::new();
        free.fill();
        let list = WaitList::new();
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let open = || false;
        let (a, b) = (free.pop_unwaited().unwrap(), free.pop_unwaited().unwrap());
        assert!(!free.has_waiters());
        assert!(!free.push(a), "nobody waits: the push serves no one");
        assert_eq!(free.pop_unwaited(), Some(a));
        let node = Waiter::new();
        // SAFETY: the node lives on this frame, is not moved, and is cancelled below.
        unsafe {
            assert_eq!(
                list.poll_claim(&node, 0, &free, open, Notify::Task(&waker)),
                WaitState::Queued
            );
            assert!(free.has_waiters());
            assert!(free.push(a), "the push sees the waiter");
            assert_eq!(free.pop_unwaited(), None, "no overtaking a waiter");
            assert_eq!(list.wake_waiters(&free), 0);
            assert!(!free.has_waiters(), "served, and nobody else waits");
            assert_eq!(
                list.poll_claim(&node, 0, &free, open, Notify::Task(&waker)),
                WaitState::Granted(a)
            );
            assert_eq!(list.cancel(&node), None);
            // A waiter that gives up leaves the flag set: the next free clears it.
            let quitter = Waiter::new();
            assert_eq!(
                list.poll_claim(&quitter, 0, &free, open, Notify::Task(&waker)),
                WaitState::Queued
            );
            assert_eq!(list.cancel(&quitter), None);
            assert!(free.has_waiters());
            assert_eq!(free.pop_unwaited(), None);
            assert_eq!(list.free(&free, b), 0);
            assert!(!free.has_waiters());
            assert_eq!(free.pop_unwaited(), Some(b));
            // A caller that queues while the list is empty and a slot is free takes it at once.
            free.push(b);
            let late = Waiter::new();
            assert_eq!(
                list.poll_claim(&late, 0, &free, open, Notify::Task(&waker)),
                WaitState::Granted(b)
            );
            assert!(!free.has_waiters());
            list.cancel(&late);
        }
    }

    #[test]
    fn a_late_close_of_an_old_claim_leaves_the_next_claims_waiters_alone() {
        // The last handle of claim 1 may run its close after claim 2 began (preempted between
        // ringing the loop and closing the waiters): it must close claim 1's waiters only.
        let free = FreeList::<1>::new();
        let list = WaitList::new();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let (old, new) = (Waiter::new(), Waiter::new());
        let open = || false;
        // SAFETY: the nodes live on this frame, are not moved, and are cancelled below.
        unsafe {
            assert_eq!(
                list.poll_claim(&old, 1, &free, open, Notify::Task(&waker)),
                WaitState::Queued
            );
            assert_eq!(
                list.poll_claim(&new, 2, &free, open, Notify::Task(&waker)),
                WaitState::Queued
            );
            list.close_all(1);
            assert_eq!(
                list.poll_claim(&old, 1, &free, open, Notify::Task(&waker)),
                WaitState::Closed
            );
            assert_eq!(
                list.poll_claim(&new, 2, &free, open, Notify::Task(&waker)),
                WaitState::Queued
            );
            assert_eq!(
                count.0.load(Ordering::SeqCst),
                1,
                "only the old claim's waiter was woken"
            );
            list.free(&free, 0);
            assert_eq!(
                list.poll_claim(&new, 2, &free, open, Notify::Task(&waker)),
                WaitState::Granted(0)
            );
            list.cancel(&old);
            list.cancel(&new);
        }
    }

    #[test]
    fn wakers_run_outside_the_mutex_and_a_panicking_one_is_counted() {
        // A waker may re-enter the list (here: cancel another waiter) and may panic: neither
        // deadlocks nor leaves the list inconsistent.
        struct Reenter(*const WaitList, *const Waiter);
        // SAFETY: the test keeps both pointees alive on its frame while the waker can run.
        unsafe impl Send for Reenter {}
        // SAFETY: as above.
        unsafe impl Sync for Reenter {}
        impl Wake for Reenter {
            fn wake(self: Arc<Self>) {
                // SAFETY: see the Send impl; re-entering takes the list's mutex.
                unsafe { (*self.0).cancel(self.1) };
                panic!("and then panics");
            }
        }
        let free = FreeList::<1>::new();
        let list = WaitList::new();
        let (a, b) = (Waiter::new(), Waiter::new());
        let reenter = Waker::from(Arc::new(Reenter(&list, &b)));
        let quiet = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let open = || false;
        // SAFETY: the nodes live on this frame, are not moved, and are cancelled below.
        unsafe {
            assert_eq!(
                list.poll_claim(&a, 0, &free, open, Notify::Task(&reenter)),
                WaitState::Queued
            );
            assert_eq!(
                list.poll_claim(&b, 0, &free, open, Notify::Task(&quiet)),
                WaitState::Queued
            );
            assert_eq!(list.free(&free, 0), 1, "the panic was caught and counted");
            assert_eq!(list.waiting(), 0, "b left the list from inside a's waker");
            assert_eq!(
                list.poll_claim(&a, 0, &free, open, Notify::Task(&quiet)),
                WaitState::Granted(0)
            );
            list.cancel(&a);
            list.cancel(&b);
        }
    }
}
