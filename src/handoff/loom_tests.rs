//! loom models of the lock-free core: the free list, the submission ring, the slot hand-off, the
//! waker cell, the wake protocol and the slot wait list.
//!
//! Run them with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target-loom \
//!     cargo test --lib --release loom
//! ```
//!
//! Each model runs the crate's own code (under `--cfg loom` every atomic and `UnsafeCell` of
//! `crate::loom` is loom's), so loom explores every interleaving of the threads' atomic steps and,
//! for every `Relaxed`/`Acquire`/`Release` access, every value the C++ memory model allows it to
//! read. Accesses to the slot's `UnsafeCell` are checked for data races.
//!
//! Bookkeeping that is *not* under test (who holds which index, what was consumed) uses
//! `std` atomics with `SeqCst`: loom runs one thread at a time, so these record the order in which
//! the model scheduled the steps without adding states for loom to explore.
//!
//! Every model bounds its preemptions (`LOOM_MAX_PREEMPTIONS`, capped at 3 by [`model`]) so the
//! whole suite stays around a minute on two cores (the ring wrap-around model, ~630k executions,
//! dominates). A thread that waits for another spins with `yield_now`; where both sides of a
//! hand-off would have to wait, the waits are bounded (see the wrap-around model), because loom may
//! reschedule a yielding thread for free and an unbounded two-sided spin has infinite executions.

use crate::handoff::free_list::FreeList;
use crate::handoff::slot::{Caller, Finish, Leave, Slot, DONE, FREE};
use crate::handoff::submit_queue::SubmitQueue;
use crate::handoff::wait_list::{Notify, WaitList, WaitState, Waiter};
use crate::handoff::wake::{self, decide_sleep, Decision, Sleeper};
use crate::handoff::waker_cell::WakerCell;
use crate::loom::AtomicU64;
use ::loom::sync::Arc;
use ::loom::thread;
use std::sync::atomic::{AtomicBool as StdBool, AtomicUsize as StdUsize, Ordering::SeqCst};

/// Runs `f` under loom with at most `cap` preemptions (fewer if `LOOM_MAX_PREEMPTIONS` says so)
/// and reports how many executions loom explored.
fn model<F>(cap: usize, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = ::loom::model::Builder::new();
    let bound = builder.preemption_bound.map_or(cap, |p| p.min(cap));
    builder.preemption_bound = Some(bound);
    let executions = std::sync::Arc::new(StdUsize::new(0));
    let counter = executions.clone();
    builder.check(move || {
        counter.fetch_add(1, SeqCst);
        f();
    });
    eprintln!(
        "{}: {} executions explored (preemption bound {bound})",
        std::thread::current().name().unwrap_or("loom model"),
        executions.load(SeqCst),
    );
}

/// Pops until an index is free, yielding so the model can let a freer run.
fn pop_blocking<const N: usize>(list: &FreeList<N>) -> u32 {
    loop {
        if let Some(index) = list.pop() {
            return index;
        }
        thread::yield_now();
    }
}

/// Records that `index` left the free list; panics if someone else already holds it.
fn take_ownership(owned: &[StdBool], index: u32) {
    assert!(
        !owned[index as usize].swap(true, SeqCst),
        "index {index} handed out twice"
    );
}

/// Records that `index` is about to go back to the free list.
fn give_back(owned: &[StdBool], index: u32) {
    assert!(
        owned[index as usize].swap(false, SeqCst),
        "index {index} freed by a thread that did not hold it"
    );
}

/// Drains `list` on the main thread after the model's threads are joined and asserts it holds
/// every index of `0..N` exactly once.
fn assert_holds_every_index<const N: usize>(list: &FreeList<N>) {
    let mut seen = [false; N];
    while let Some(index) = list.pop() {
        assert!(
            !std::mem::replace(&mut seen[index as usize], true),
            "index {index} is on the free list twice"
        );
    }
    assert!(seen.iter().all(|&s| s), "an index was lost: {seen:?}");
}

/// **Free list, ABA shape.** Thread A pops x, pops y, pushes x back (so x is on top again with a
/// different `next`) and later pushes y; thread B pops and pushes one index concurrently, so some
/// interleavings preempt B between reading the head (x, next = y) and its CAS, i.e. across A's
/// whole pop-pop-push. Proves: the tagged head turns that stale CAS into a retry (no index is
/// handed out twice while held, checked at every pop), and at the end every index is on the list
/// exactly once (none lost, none duplicated).
/// A request as the slot sees it: written by whoever owns the slot.
#[derive(Debug, Default)]
struct Payload {
    deadline: Option<u64>,
    outcome: Option<usize>,
}

#[test]
fn loom_free_list_aba_no_duplicate_no_loss() {
    model(3, || {
        let list = Arc::new(FreeList::<3>::new());
        list.fill();
        let owned = Arc::new([const { StdBool::new(false) }; 3]);

        let a = {
            let (list, owned) = (list.clone(), owned.clone());
            thread::spawn(move || {
                let x = pop_blocking(&list);
                take_ownership(&owned[..], x);
                let y = pop_blocking(&list);
                take_ownership(&owned[..], y);
                give_back(&owned[..], x);
                list.push(x);
                give_back(&owned[..], y);
                list.push(y);
            })
        };
        let b = {
            let (list, owned) = (list.clone(), owned.clone());
            thread::spawn(move || {
                let z = pop_blocking(&list);
                take_ownership(&owned[..], z);
                give_back(&owned[..], z);
                list.push(z);
            })
        };
        a.join().unwrap();
        b.join().unwrap();
        assert_holds_every_index(&list);
    });
}

/// **Free list, three threads.** Three threads each pop one index and push it back while the
/// others do the same, on a list of two: a thread can find the list empty and wait for a push,
/// so pops race pushes onto an empty and a one-element stack. Proves: every pop returns an index no
/// one holds, and at the end both indices are on the list exactly once.
#[test]
fn loom_free_list_three_threads_contend() {
    model(3, || {
        let list = Arc::new(FreeList::<2>::new());
        list.fill();
        let owned = Arc::new([const { StdBool::new(false) }; 2]);
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (list, owned) = (list.clone(), owned.clone());
                thread::spawn(move || {
                    let i = pop_blocking(&list);
                    take_ownership(&owned[..], i);
                    give_back(&owned[..], i);
                    list.push(i);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_holds_every_index(&list);
    });
}

/// **Submission ring, two producers and the consumer.** Producer 0 pushes 0 then 1, producer 1
/// pushes 2 then 3, into a ring of 4 while the consumer pops concurrently (yielding when the head
/// position is empty or still being written). Before each push the producer writes a payload for
/// the index (a loom `UnsafeCell`, standing for the request in the slot); the consumer reads it
/// after the pop. Proves: every index is popped exactly once, each producer's indices come out in
/// the order it pushed them, and the push publishes the payload to the consumer (loom reports a
/// data race otherwise, and the value read must be the one written).
#[test]
fn loom_submit_queue_two_producers_fifo_exactly_once() {
    model(3, || {
        let queue = Arc::new(SubmitQueue::<4>::new());
        queue.reset(0);
        let payload = Arc::new([0u32; 4].map(::loom::cell::UnsafeCell::new));
        let producers: Vec<_> = (0..2u32)
            .map(|p| {
                let (queue, payload) = (queue.clone(), payload.clone());
                thread::spawn(move || {
                    for index in [2 * p, 2 * p + 1] {
                        // SAFETY: only this producer touches `index` before pushing it.
                        payload[index as usize].with_mut(|cell| unsafe { *cell = 100 + index });
                        queue.push(index);
                    }
                })
            })
            .collect();

        let mut popped = Vec::with_capacity(4);
        while popped.len() < 4 {
            match queue.pop() {
                Some(index) => {
                    assert!(index < 4, "read an unwritten cell: {index}");
                    // SAFETY: popped, so the consumer owns `index` now.
                    let value = payload[index as usize].with(|cell| unsafe { *cell });
                    assert_eq!(value, 100 + index, "payload not published by the push");
                    popped.push(index);
                }
                None => thread::yield_now(),
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(queue.pop(), None, "nothing beyond the four pushes");
        assert_eq!(queue.len(), 0);

        let mut sorted = popped.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3], "each index exactly once: {popped:?}");
        for p in 0..2u32 {
            let mine: Vec<u32> = popped.iter().copied().filter(|i| i / 2 == p).collect();
            assert_eq!(mine, [2 * p, 2 * p + 1], "producer {p} out of order");
        }
    });
}

/// Executions of [`loom_submit_queue_wraps_with_recycled_indices`] in which all four pushes went
/// through the ring of two (positions 2 and 3 reused cells 0 and 1 while the model ran).
static WRAPPED: StdUsize = StdUsize::new(0);

/// Pops from `list`, yielding between tries, at most `tries` times. Bounded so that loom's
/// exploration stays finite (a yield-spinning thread may be rescheduled for free, so unbounded
/// spins on both sides of a hand-off give infinite executions).
fn pop_within<const N: usize>(list: &FreeList<N>, tries: usize) -> Option<u32> {
    for _ in 0..tries {
        if let Some(index) = list.pop() {
            return Some(index);
        }
        thread::yield_now();
    }
    None
}

/// **Submission ring wrap-around with recycled indices.** Capacity 2; two producers each claim an
/// index from a free list of 2, write a payload into that index's cell (a loom `UnsafeCell`, like
/// a slot's request), push it, and try to do it again; the consumer pops, reads the payload and
/// returns the index to the free list. The free list keeps at most 2 indices in the ring (the
/// "never full" precondition), yet positions 2 and 3 reuse cells 0 and 1, so a lap-1 producer
/// depends on the consumer's lap-0 stamp. Waits are bounded (a producer that finds no free index
/// gives up its remaining pushes; the consumer stops after a few empty polls and the rest is
/// drained after the join), so loom's search is finite; the model asserts that the full wrap (all
/// four pushes concurrent with the consumer) was explored. Proves: every push is consumed exactly
/// once, in per-producer order, across the wrap; and the hand-off producer -> ring -> consumer ->
/// free list -> next producer orders the payload accesses (loom reports any data race on them).
#[test]
fn loom_submit_queue_wraps_with_recycled_indices() {
    WRAPPED.store(0, SeqCst);
    model(3, || {
        let queue = Arc::new(SubmitQueue::<2>::new());
        queue.reset(0);
        let free = Arc::new(FreeList::<2>::new());
        free.fill();
        let payload = Arc::new([
            ::loom::cell::UnsafeCell::new(0u32),
            ::loom::cell::UnsafeCell::new(0u32),
        ]);

        let producers: Vec<_> = (0..2u32)
            .map(|p| {
                let (queue, free, payload) = (queue.clone(), free.clone(), payload.clone());
                thread::spawn(move || {
                    let mut pushed = 0;
                    for seq in 0..2u32 {
                        let Some(index) = pop_within(&free, 2) else {
                            break;
                        };
                        // SAFETY: popping `index` made this thread its only owner.
                        payload[index as usize].with_mut(|cell| unsafe { *cell = p * 10 + seq });
                        queue.push(index);
                        pushed += 1;
                    }
                    pushed
                })
            })
            .collect();

        let mut next_seq = [0u32; 2];
        let consume = |index: u32, next_seq: &mut [u32; 2]| {
            // SAFETY: the index was popped from the ring, so the consumer owns it until
            // it pushes it back to the free list.
            let value = payload[index as usize].with(|cell| unsafe { *cell });
            let (p, seq) = ((value / 10) as usize, value % 10);
            assert_eq!(seq, next_seq[p], "producer {p}'s pushes out of order");
            next_seq[p] += 1;
            free.push(index);
        };
        let mut empty_polls = 0;
        while next_seq.iter().sum::<u32>() < 4 && empty_polls < 3 {
            match queue.pop() {
                Some(index) => consume(index, &mut next_seq),
                None => {
                    empty_polls += 1;
                    thread::yield_now();
                }
            }
        }
        let concurrent = next_seq.iter().sum::<u32>();
        let pushed: Vec<u32> = producers.into_iter().map(|p| p.join().unwrap()).collect();
        while let Some(index) = queue.pop() {
            consume(index, &mut next_seq);
        }
        assert_eq!(next_seq[..], pushed[..], "every push consumed exactly once");
        assert_eq!(queue.len(), 0);
        if concurrent == 4 {
            WRAPPED.fetch_add(1, SeqCst);
        }
        assert_holds_every_index(&free);
    });
    assert!(
        WRAPPED.load(SeqCst) > 0,
        "the model never pushed all four indices through the ring concurrently"
    );
}

/// **Slot hand-off: completion racing the caller's drop.** The loop thread admits the request,
/// stores its result through `with_request` and calls `finish()` (the slot is generic: a small
/// payload stands in for the loop's request); concurrently the caller calls
/// `orphan()` and, if it finds `Done`, reads the result and frees the slot. Whichever side loses
/// the race learns it from its compare-exchange. Proves: exactly one side frees the slot (phase
/// `FREE`, generation bumped once); a caller that sees `Done` reads the loop's result; and loom's
/// `UnsafeCell` tracking shows the request is never accessed by both sides without a
/// happens-before edge.
#[test]
fn loom_slot_complete_races_orphan_exactly_one_frees() {
    model(3, || {
        let slot = Arc::new(Slot::new(Payload::default()));
        slot.mark_filled();
        // SAFETY: FILLED, the caller (this thread) owns the request.
        unsafe { slot.with_request(|r| r.deadline = Some(7)) };
        slot.mark_queued(false);
        let frees = Arc::new(StdUsize::new(0));

        let event_loop = {
            let (slot, frees) = (slot.clone(), frees.clone());
            thread::spawn(move || {
                if slot.admit() {
                    // SAFETY: ACTIVE, the loop owns the request.
                    unsafe {
                        slot.with_request(|r| {
                            assert!(r.deadline.is_some(), "the loop sees the caller's request");
                            r.outcome = Some(42);
                        })
                    };
                    match slot.finish() {
                        Finish::Delivered(caller) => assert!(!caller.parked),
                        Finish::Orphaned => {
                            // SAFETY: ORPHANED, the loop owns the request.
                            unsafe { slot.with_request(|r| r.outcome = None) };
                            slot.release();
                            frees.fetch_add(1, SeqCst);
                        }
                    }
                } else {
                    // Orphaned before admission: the loop retires it.
                    // SAFETY: ORPHANED, the loop owns the request.
                    unsafe { slot.with_request(|r| r.outcome = None) };
                    slot.release();
                    frees.fetch_add(1, SeqCst);
                }
            })
        };
        let caller = {
            let (slot, frees) = (slot.clone(), frees.clone());
            thread::spawn(move || match slot.orphan() {
                Leave::Orphaned => {}
                Leave::Done => {
                    // SAFETY: DONE, the caller owns the request.
                    let outcome = unsafe { slot.with_request(|r| r.outcome.take()) };
                    assert_eq!(outcome, Some(42), "result lost");
                    slot.release();
                    frees.fetch_add(1, SeqCst);
                }
                Leave::Abandoned => panic!("nobody abandons in this model"),
            })
        };
        event_loop.join().unwrap();
        caller.join().unwrap();
        assert_eq!(frees.load(SeqCst), 1, "the slot must be freed exactly once");
        assert_eq!(slot.phase(), FREE);
        assert_eq!(slot.generation(), 1);
    });
}

/// **Slot hand-off, caller waits instead of dropping.** The loop finishes the request while the
/// caller polls `phase()`; when it reads `DONE` it takes the result. Proves: the Acquire in
/// `phase()` pairs with `finish()`'s Release, so the caller's read of the result never races the
/// loop's write (loom's cell tracking) and sees the stored value.
#[test]
fn loom_slot_done_publishes_result() {
    model(3, || {
        let slot = Arc::new(Slot::new(Payload::default()));
        slot.mark_filled();
        slot.mark_queued(false);
        let event_loop = {
            let slot = slot.clone();
            thread::spawn(move || {
                assert!(slot.admit());
                // SAFETY: ACTIVE, the loop owns the request.
                unsafe { slot.with_request(|r| r.outcome = Some(5)) };
                assert_eq!(slot.finish(), Finish::Delivered(Caller::default()));
            })
        };
        while slot.phase() != DONE {
            thread::yield_now();
        }
        // SAFETY: DONE, the caller owns the request.
        let outcome = unsafe { slot.with_request(|r| r.outcome.take()) };
        assert_eq!(outcome, Some(5));
        event_loop.join().unwrap();
    });
}

/// A waker that sets a loom flag: lets the models observe wake-ups without an executor.
struct FlagWaker(::loom::sync::atomic::AtomicUsize);

impl std::task::Wake for FlagWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn flag_waker() -> (std::sync::Arc<FlagWaker>, std::task::Waker) {
    let flag = std::sync::Arc::new(FlagWaker(::loom::sync::atomic::AtomicUsize::new(0)));
    (flag.clone(), std::task::Waker::from(flag))
}

/// **Waker cell: register-then-check against set-then-wake.** The caller registers its waker
/// twice (a first poll, then a re-poll with a different waker, as when a future moves between
/// tasks) and then checks a completion flag; the loop sets the flag (Release) and calls `wake()`.
/// Proves: the task is never stranded: either the caller's check sees the flag, or the latest
/// waker is woken (directly by the loop, or by the registrant itself when the wake arrived while
/// it was registering); and the cell's `UnsafeCell` is never accessed by both at once. Then the
/// registrant takes its waker back (`take_back`, a load when the loop already took it): the
/// waker is never both woken and handed back, and never left in the cell.
#[test]
fn loom_waker_cell_no_lost_wake() {
    model(3, || {
        let cell = Arc::new(WakerCell::new());
        let done = Arc::new(::loom::sync::atomic::AtomicBool::new(false));
        let (first, first_waker) = flag_waker();
        let (second, second_waker) = flag_waker();

        let event_loop = {
            let (cell, done) = (cell.clone(), done.clone());
            thread::spawn(move || {
                done.store(true, std::sync::atomic::Ordering::Release);
                cell.wake();
            })
        };
        cell.register(&first_waker);
        cell.register(&second_waker);
        let saw_done = done.load(std::sync::atomic::Ordering::Acquire);
        // Done: the registrant takes its waker back, if the loop has not taken it.
        let back = if saw_done { cell.take_back() } else { None };
        event_loop.join().unwrap();

        let woken = second.0.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            saw_done || woken > 0,
            "lost wake-up: flag unseen and the current waker not woken"
        );
        assert!(
            back.is_none() || woken == 0,
            "the waker was both woken by the loop and handed back"
        );
        drop(back);
        assert!(cell.take_back().is_none(), "a waker was left in the cell");
        drop(first);
        drop(cell);
    });
}

/// **A registrant that skips registering again while the cell holds its waker** (the task
/// pool's runner on `block_on`, `register_runner`). The registrant registered once; the waker
/// side wakes it (emptying the cell), then sets the condition and takes again. The registrant,
/// once woken, registers again only if `holds` says the cell was emptied, then checks the
/// condition. Proves: a registrant that sees the condition unset is woken again (a skip never
/// leaves it waiting on an empty cell); fails if `holds` answers true for an emptied cell.
#[test]
fn loom_waker_cell_holds_lets_a_registrant_skip_without_losing_a_wake() {
    model(3, || {
        let cell = Arc::new(WakerCell::new());
        let done = Arc::new(::loom::sync::atomic::AtomicBool::new(false));
        let (flag, waker) = flag_waker();
        cell.register(&waker);
        let event_loop = {
            let (cell, done) = (cell.clone(), done.clone());
            thread::spawn(move || {
                if let Some(w) = cell.take() {
                    w.wake();
                }
                done.store(true, std::sync::atomic::Ordering::Release);
                if let Some(w) = cell.take() {
                    w.wake();
                }
            })
        };
        // Parked until the first wake (or until the work is done anyway).
        while flag.0.load(std::sync::atomic::Ordering::SeqCst) == 0
            && !done.load(std::sync::atomic::Ordering::Acquire)
        {
            thread::yield_now();
        }
        let woken_before = flag.0.load(std::sync::atomic::Ordering::SeqCst);
        if !cell.holds() {
            cell.register(&waker);
        }
        let saw_done = done.load(std::sync::atomic::Ordering::Acquire);
        event_loop.join().unwrap();
        let woken = flag.0.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            saw_done || woken > woken_before,
            "lost wake-up: the condition unseen and the waker not woken again"
        );
        drop(cell);
    });
}

/// **A caller that registered on the loop thread, then moved to another.** The caller first
/// registered on the loop thread (its waker in the loop's private cell, the phase bit
/// `LOCAL_WAKER` set with plain stores); its `Op` then moved to another thread, which clears the
/// bit (`clear_local_waker`, an RMW), registers in the slot's atomic cell and checks for `DONE`,
/// while the loop finishes the request and wakes the cell that `finish` names. Proves: the moved
/// caller is never stranded: it sees `DONE`, or its new waker is woken.
#[test]
fn loom_slot_local_waker_moved_to_another_thread_is_woken() {
    model(3, || {
        let slot = Arc::new(Slot::new(0u32));
        let cell = Arc::new(WakerCell::new());
        slot.mark_filled();
        slot.mark_queued(false);
        assert!(slot.admit());
        // The loop thread (this one) ran the caller's first poll: a private waker.
        let (old, old_waker) = flag_waker();
        let mut private = Some(old_waker);
        slot.mark_local_waker();
        let (new, new_waker) = flag_waker();
        let caller = {
            let (slot, cell) = (slot.clone(), cell.clone());
            thread::spawn(move || {
                slot.clear_local_waker();
                cell.register(&new_waker);
                slot.is_done()
            })
        };
        match slot.finish() {
            Finish::Delivered(caller) => {
                if caller.local {
                    private.take().map(|w| w.wake());
                } else if let Some(w) = cell.take() {
                    w.wake();
                }
            }
            Finish::Orphaned => unreachable!("nobody orphans it"),
        }
        let saw_done = caller.join().unwrap();
        assert!(
            saw_done || new.0.load(SeqCst) > 0,
            "the moved caller saw no DONE and its new waker was not woken (old woken {} times)",
            old.0.load(SeqCst)
        );
        drop(private);
    });
}

/// **Waker cell: two wakers at once.** A registered waker is taken by two threads at the same
/// time (the loop and a second waker). Proves: the waker is delivered exactly once, and the
/// cell is left usable: a later registration is taken again. (Ending `take` with a plain store
/// instead of its `fetch_and` fails this model: loom lets the other `take`'s RMW read past the
/// store, tokio-rs/loom#254, so the crate keeps every state write an RMW.)
#[test]
fn loom_waker_cell_two_wakers_deliver_once() {
    model(3, || {
        let cell = Arc::new(WakerCell::new());
        let (flag, waker) = flag_waker();
        cell.register(&waker);
        let wakers: Vec<_> = (0..2)
            .map(|_| {
                let cell = cell.clone();
                thread::spawn(move || cell.take().map(|w| w.wake()).is_some())
            })
            .collect();
        let delivered = wakers
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&d| d)
            .count();
        assert_eq!(delivered, 1, "the waker is taken exactly once");
        assert_eq!(flag.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        let (_again, next) = flag_waker();
        cell.register(&next);
        assert!(cell.take().is_some(), "the cell is usable after the wakes");
    });
}

/// A submitter's whole protocol on the ring (`Op::route` and `Op::hand_over`): claim a position
/// under claim `epoch`, publish `index`, and take the intent if the claim saw it. `None`: the
/// ring was closed (or another claim's); else whether this submitter wrote the eventfd.
fn submit<const N: usize>(queue: &SubmitQueue<N>, epoch: u32, index: u32) -> Option<bool> {
    let position = queue.claim(epoch)?;
    Some(queue.publish(position, index) && wake::take_intent(queue.word()))
}

/// A ring open for claim 1 and one thread per index submitting it under claim `epoch` (each
/// joins with [`submit`]'s answer).
fn ring_with_submitters(
    epoch: u32,
    indices: &[u32],
) -> (Arc<SubmitQueue<2>>, Vec<thread::JoinHandle<Option<bool>>>) {
    let queue = Arc::new(SubmitQueue::<2>::new());
    queue.reset(1);
    let submitters = indices
        .iter()
        .map(|&index| {
            let queue = queue.clone();
            thread::spawn(move || submit(&queue, epoch, index))
        })
        .collect();
    (queue, submitters)
}

/// The loop's close (`Storage::close_loop`): close the ring, then sweep every position claimed
/// before it (yielding on one claimed but unwritten). Returns the final position and the sweep.
fn close_and_sweep<const N: usize>(queue: &SubmitQueue<N>) -> (u32, Vec<u32>) {
    let last = queue.close();
    let mut swept = Vec::new();
    while queue.len() != 0 {
        match queue.pop() {
            Some(index) => swept.push(index),
            None => thread::yield_now(),
        }
    }
    (last, swept)
}

/// The loop of a wake model: its submission ring, whose tail word holds the intent.
struct ModelLoop<'a, const N: usize> {
    queue: &'a SubmitQueue<N>,
}

impl<const N: usize> Sleeper for ModelLoop<'_, N> {
    fn word(&self) -> &AtomicU64 {
        self.queue.word()
    }
    fn has_work(&mut self) -> bool {
        self.queue.has_ready()
    }
    fn claimed(&self, armed: u64) -> bool {
        self.queue.claimed_since(armed)
    }
}

/// The loop's side of the wake protocol, once: drain, then the loop's own decision
/// (`decide_sleep`: arm, recheck), then drain again unless it decided to sleep or nap.
fn loop_once<const N: usize>(queue: &SubmitQueue<N>, consumed: &mut Vec<u32>) -> Decision {
    while let Some(index) = queue.pop() {
        consumed.push(index);
    }
    let decision = decide_sleep(&mut ModelLoop { queue });
    if decision == Decision::Work {
        while let Some(index) = queue.pop() {
            consumed.push(index);
        }
    }
    decision
}

/// Checks the outcome of a wake-protocol model: a loop that slept (without a bound) while
/// pushes it had not consumed existed must have been rung, and after the ring (or the nap's
/// timeout) everything is consumable.
fn check_no_lost_wakeup<const N: usize>(
    queue: &SubmitQueue<N>,
    mut consumed: Vec<u32>,
    slept: bool,
    rang: bool,
    expected: &[u32],
) {
    if slept && consumed.len() < expected.len() {
        assert!(
            rang,
            "lost wake-up: the loop sleeps with {consumed:?} of {expected:?} consumed and no ring"
        );
    }
    // Woken (or never asleep): the loop drains the rest; nothing may be missing now.
    while let Some(index) = queue.pop() {
        consumed.push(index);
    }
    consumed.sort_unstable();
    assert_eq!(consumed, expected, "every push is consumed exactly once");
}

/// **Wake protocol, one producer (no lost wake-up).** Producer: its claim of a ring position
/// (one compare-exchange of the tail word, which reads the intent), its publish, and the take
/// of the intent if the claim saw it, ringing the eventfd. Loop: drain, `arm()` (on the same
/// word), recheck: ready work, a claimed but unpublished position (nap), or sleep. Proves: in
/// every interleaving and every value the memory model allows the recheck to read, if the loop
/// goes to sleep without the push, the producer's claim saw the intent bit and rang.
#[test]
fn loom_wake_no_lost_wakeup_single_producer() {
    model(3, || {
        let (queue, mut producers) = ring_with_submitters(1, &[0]);
        let mut consumed = Vec::new();
        let decision = loop_once(&queue, &mut consumed);
        let rang = producers.pop().unwrap().join().unwrap().expect("open");
        check_no_lost_wakeup(&queue, consumed, decision == Decision::Sleep, rang, &[0]);
    });
}

/// Executions of [`loom_wake_stalled_producer_makes_the_loop_nap`] in which the loop found a
/// position claimed before its arm but unwritten (the stalled-producer shape) and napped.
static STALLED_SHAPES: StdUsize = StdUsize::new(0);

/// **Wake protocol, stalled producer.** Two producers submit while the loop runs once. Among
/// the interleavings is the one where producer 0 has claimed its position but not written it
/// while producer 1 finishes (before the loop arms, so it owes no wake): the head position is
/// unwritten, and producer 0 (claimed before the arm) owes none either. Proves: in every
/// interleaving, a loop that sleeps without a bound with pushes unconsumed has been rung by some
/// producer; a loop over a claimed, unwritten position naps instead (the shape is counted and
/// must be explored); after the ring or the nap the loop gets both indices; and at most one
/// producer writes the eventfd for the loop's one arm (the first to see the intent takes it).
#[test]
fn loom_wake_stalled_producer_makes_the_loop_nap() {
    STALLED_SHAPES.store(0, SeqCst);
    model(3, || {
        let (queue, producers) = ring_with_submitters(1, &[0, 1]);
        let mut consumed = Vec::new();
        let decision = loop_once(&queue, &mut consumed);
        if decision == Decision::Nap {
            STALLED_SHAPES.fetch_add(1, SeqCst);
        }
        let rings = producers
            .into_iter()
            .map(|p| p.join().unwrap().expect("open"))
            .filter(|&rang| rang)
            .count();
        // The loop arms once: the first producer to see the intent takes it.
        assert!(rings <= 1, "one intent, one eventfd write: {rings} writes");
        let slept = decision == Decision::Sleep;
        check_no_lost_wakeup(&queue, consumed, slept, rings == 1, &[0, 1]);
    });
    assert!(
        STALLED_SHAPES.load(SeqCst) > 0,
        "the model never explored a loop napping over a claimed, unwritten position"
    );
}

/// The loop of the two-word wake model: the ring (its tail word) and a lane whose producer
/// releases the life word, both armed (as `EventLoop::sleep` does while lanes are registered).
struct TwoWordLoop<'a> {
    queue: &'a SubmitQueue<2>,
    lane: &'a crate::handoff::lane::Lane<2>,
    life: &'a AtomicU64,
}

impl Sleeper for TwoWordLoop<'_> {
    fn word(&self) -> &AtomicU64 {
        self.queue.word()
    }
    fn lane_word(&self) -> Option<&AtomicU64> {
        Some(self.life)
    }
    fn has_work(&mut self) -> bool {
        self.queue.has_ready() || self.lane.has_ready()
    }
    fn claimed(&self, armed: u64) -> bool {
        self.queue.claimed_since(armed)
    }
}

/// **Wake protocol, a ring submitter and a lane producer.** The ring submitter claims, publishes
/// and takes the tail word's intent; the lane producer (counted in the life word's
/// `submitting`, as `begin_submit` leaves it) pushes into its lane and releases the life word
/// (`end_submit`). The loop drains both, arms both words and rechecks. Proves: a loop that
/// sleeps without a bound with either push unconsumed was rung by that push's producer (each
/// word's intent is taken by the one that saw it), and after the rings everything arrives.
#[test]
fn loom_wake_lane_and_ring_submitters_both_ring() {
    use crate::handoff::lane::Lane;
    model(3, || {
        let queue = Arc::new(SubmitQueue::<2>::new());
        queue.reset(1);
        let lane = Arc::new(Lane::<2>::new());
        let life = Arc::new(AtomicU64::new(ONE_SUBMIT));
        let ring_submitter = {
            let queue = queue.clone();
            thread::spawn(move || submit(&queue, 1, 0).expect("open"))
        };
        let lane_producer = {
            let (lane, life) = (lane.clone(), life.clone());
            thread::spawn(move || {
                lane.push(1);
                wake::release(&life, ONE_SUBMIT).1
            })
        };
        let mut consumed = Vec::new();
        let drain = |consumed: &mut Vec<u32>| {
            while let Some(index) = queue.pop().or_else(|| lane.pop()) {
                consumed.push(index);
            }
        };
        drain(&mut consumed);
        let decision = decide_sleep(&mut TwoWordLoop {
            queue: &queue,
            lane: &lane,
            life: &life,
        });
        if decision == Decision::Work {
            drain(&mut consumed);
        }
        let rang = [
            ring_submitter.join().unwrap(),
            lane_producer.join().unwrap(),
        ];
        if decision == Decision::Sleep {
            let missing_ring = !consumed.contains(&0);
            let missing_lane = !consumed.contains(&1);
            assert!(
                !missing_ring || rang[0],
                "lost wake-up: the ring push, no ring"
            );
            assert!(
                !missing_lane || rang[1],
                "lost wake-up: the lane push, no ring"
            );
        }
        drain(&mut consumed);
        consumed.sort_unstable();
        assert_eq!(consumed, [0, 1], "every push is consumed exactly once");
        assert_eq!(
            life.load(SeqCst) & !wake::INTENT,
            0,
            "the lane producer left"
        );
    });
}

/// One lane producer's share of `submitting` in the two-word model's life word (as `Storage`'s).
const ONE_SUBMIT: u64 = 1 << 32;

/// **Close against submitters.** Two producers submit under the ring's claim while the loop
/// closes it (`SubmitQueue::close`, as `Storage::close_loop`) and sweeps up to the final position
/// (yielding on a claimed, unwritten one). Proves: every submit that got a position is swept
/// exactly once, every other was refused, the final position counts exactly the accepted ones,
/// and no claim succeeds after the close.
#[test]
fn loom_close_strands_no_claimed_submit() {
    model(3, || {
        let (queue, producers) = ring_with_submitters(1, &[0, 1]);
        let (last, mut swept) = close_and_sweep(&queue);
        assert!(queue.claim(1).is_none(), "a claim after the close");
        let accepted: Vec<u32> = producers
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| p.join().unwrap().map(|_| i as u32))
            .collect();
        swept.sort_unstable();
        assert_eq!(
            swept, accepted,
            "each accepted submit swept once, nothing else"
        );
        assert_eq!(
            last as usize,
            accepted.len(),
            "the final position counts the claims"
        );
        assert_eq!(queue.pop(), None);
    });
}

/// **A stale caller against a new claim.** A caller of claim 1 submits while the storage's loop
/// closes claim 1, sweeps it, and the storage is claimed again (`reset(2)`) and submitted to.
/// Proves: the stale submit is either accepted by claim 1 (and swept before the reset) or
/// refused; it never lands in claim 2's ring, whatever it read of the tail word.
#[test]
fn loom_stale_epoch_never_enters_a_new_claim() {
    model(3, || {
        let (queue, mut stale) = ring_with_submitters(1, &[7]);
        let (_, swept) = close_and_sweep(&queue);
        queue.reset(2);
        assert_eq!(
            submit(&queue, 2, 3),
            Some(false),
            "the new claim takes requests"
        );
        let accepted = stale.pop().unwrap().join().unwrap().is_some();
        assert_eq!(swept, if accepted { vec![7] } else { vec![] });
        assert_eq!(queue.pop(), Some(3));
        assert_eq!(queue.pop(), None, "the stale request entered the new claim");
    });
}

/// **Wait list: a freed slot is never missed by a waiter that registers concurrently.** One
/// thread frees the only slot (`WaitList::free`: the push, whose compare-exchange reads the free
/// list's `WAITERS` flag, then the list served if it was set); the other claims it through the
/// wait list (flag set, pop, else link), no fence on either side.
/// Proves: the slot ends with the claimer exactly once: popped at once, or granted to its node
/// with a notification that runs after the grant is recorded (outside the mutex); never stranded
/// on the free list while the claimer waits, never handed out twice.
#[test]
fn loom_wait_list_no_missed_slot() {
    model(3, || {
        claim_while_freed(|free, list, held| {
            list.free(free, held);
        })
    });
}

/// The claimer's side of the wait-list models: the only slot is held by a freer thread, which
/// runs `freer(free list, wait list, index)`, while this thread claims through the wait list
/// (and, if queued, claims again once notified). Checks that the slot ends with the claimer
/// exactly once: granted, never stranded, never handed out twice.
fn claim_while_freed(freer: impl FnOnce(&FreeList<1>, &WaitList, u32) + Send + 'static) {
    let free = Arc::new(FreeList::<1>::new());
    free.fill();
    let list = Arc::new(WaitList::new());
    let held = free.pop().expect("one slot");
    let (flag, waker) = flag_waker();

    let freer = {
        let (free, list) = (free.clone(), list.clone());
        thread::spawn(move || freer(&free, &list, held))
    };
    let node = Box::pin(Waiter::new());
    let never_closed = || false;
    // SAFETY: the node is pinned on the heap and cancelled before it is dropped.
    let first = unsafe { list.poll_claim(&*node, 0, &free, never_closed, Notify::Task(&waker)) };
    freer.join().unwrap();
    assert_claimed_once(&free, &list, node, first, (&flag, &waker), held);
}

/// The end of a wait-list model, once every other thread has finished: the claimer's `first`
/// answer is a grant, or it queued (`node`) and was notified (`flag`) of a grant its next
/// claim takes; the slot it got is `held`, and it is nowhere else.
fn assert_claimed_once(
    free: &FreeList<1>,
    list: &WaitList,
    node: std::pin::Pin<Box<Waiter>>,
    first: WaitState,
    (flag, waker): (&FlagWaker, &std::task::Waker),
    held: u32,
) {
    let got = match first {
        WaitState::Granted(index) => index,
        WaitState::Queued => {
            assert!(
                flag.0.load(SeqCst) > 0,
                "queued, and the slot never reached us"
            );
            // SAFETY: the node is pinned on the heap and cancelled below, before it is dropped.
            match unsafe { list.poll_claim(&*node, 0, free, || false, Notify::Task(waker)) } {
                WaitState::Granted(index) => index,
                other => panic!("woken without a grant: {other:?}"),
            }
        }
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(got, held);
    assert_eq!(free.pop(), None, "the slot was handed out twice");
    // SAFETY: as above; the grant was taken, so nothing comes back.
    assert_eq!(unsafe { list.cancel(&*node) }, None);
}

/// **Wait list: a flag left by a waiter that gave up strands nobody.** The only slot is held by
/// a freer (`WaitList::free`); a quitter queues for it and gives up (`cancel`, freeing the slot
/// again if it was granted meanwhile), which may leave the free list's `WAITERS` flag set with
/// nobody linked; the claimer takes the fast path (`pop_unwaited`, refused while the flag is set)
/// and else queues. Proves: the slot ends with the claimer exactly once, whatever the flag's
/// state when each step ran; never stranded on the free list while the claimer waits.
#[test]
fn loom_wait_list_a_quitters_flag_strands_no_one() {
    model(2, || {
        let free = Arc::new(FreeList::<1>::new());
        free.fill();
        let list = Arc::new(WaitList::new());
        let held = free.pop().expect("one slot");
        let freer = {
            let (free, list) = (free.clone(), list.clone());
            thread::spawn(move || {
                list.free(&free, held);
            })
        };
        let quitter = {
            let (free, list) = (free.clone(), list.clone());
            thread::spawn(move || {
                let (_flag, waker) = flag_waker();
                let node = Box::pin(Waiter::new());
                // SAFETY: the node is pinned on the heap and cancelled before it is dropped.
                unsafe {
                    let first = list.poll_claim(&*node, 0, &free, || false, Notify::Task(&waker));
                    let granted = match first {
                        WaitState::Granted(index) => Some(index),
                        _ => list.cancel(&*node),
                    };
                    if let Some(index) = granted {
                        list.free(&free, index);
                    }
                }
            })
        };
        let (flag, waker) = flag_waker();
        let node = Box::pin(Waiter::new());
        let first = match free.pop_unwaited() {
            Some(index) => WaitState::Granted(index),
            // SAFETY: as above.
            None => unsafe { list.poll_claim(&*node, 0, &free, || false, Notify::Task(&waker)) },
        };
        freer.join().unwrap();
        quitter.join().unwrap();
        assert_claimed_once(&free, &list, node, first, (&flag, &waker), held);
    });
}

/// **Loop-thread free stack: a slot kept privately is never missed by a remote waiter.** The loop
/// thread frees the only slot through its private hand-off (`LoopLocal::free_to`: kept on the
/// private stack if it sees no waiter, else pushed and the waiters served), then ends its pass
/// (`hand_back`); a remote caller claims through the wait list concurrently. Proves: the slot
/// ends with the remote caller exactly once (no lost grant: popped, or granted with a
/// notification, by the end of the pass), and is never also left on the shared list or the
/// private stack (no double owner).
#[test]
fn loom_loop_local_free_stack_never_strands_a_waiter() {
    use crate::handoff::loop_local::LoopLocal;
    model(3, || {
        claim_while_freed(|free, list, held| {
            // The loop thread's own hand-off lives on that thread alone.
            let local = LoopLocal::<1>::new();
            local.activate();
            assert_eq!(local.free_to(held, free, list), 0);
            // The end of the pass.
            assert_eq!(local.hand_back(free, list), 0);
            assert!(!local.has_free(), "handed back whole");
        })
    });
}

/// **Lane, its producer and the loop.** The producer fills a payload for each index and pushes
/// 0, 1, 2 into a lane of 2 cells, reusing a cell only after the loop popped what it held (as a
/// slot is reused only after it was freed), while the loop pops concurrently. Proves: every index
/// arrives once and in order, and the push publishes the payload (loom reports a data race, or
/// the value read is wrong, otherwise). With `push`'s Release store of `tail` made Relaxed, loom
/// finds the race.
#[test]
fn loom_lane_single_producer_fifo_and_publication() {
    use crate::handoff::lane::Lane;
    model(3, || {
        let lane = Arc::new(Lane::<2>::new());
        let payload = Arc::new([0u32; 3].map(::loom::cell::UnsafeCell::new));
        let popped = Arc::new(crate::loom::AtomicU32::new(0));
        let producer = {
            let (lane, payload, popped) = (lane.clone(), payload.clone(), popped.clone());
            thread::spawn(move || {
                for index in 0..3u32 {
                    // Never more than 2 outstanding (the lane's size, as SLOTS bounds a lane).
                    while index >= popped.load(crate::loom::Ordering::Acquire) + 2 {
                        thread::yield_now();
                    }
                    // SAFETY: only the producer touches `index` before pushing it.
                    payload[index as usize].with_mut(|cell| unsafe { *cell = 100 + index });
                    lane.push(index);
                }
            })
        };
        let mut next = 0u32;
        while next < 3 {
            match lane.pop() {
                Some(index) => {
                    assert_eq!(index, next, "in order, exactly once");
                    // SAFETY: popped, so the loop owns `index` now.
                    let value = payload[index as usize].with(|cell| unsafe { *cell });
                    assert_eq!(value, 100 + index, "payload not published by the push");
                    next += 1;
                    popped.store(next, crate::loom::Ordering::Release);
                }
                None => thread::yield_now(),
            }
        }
        producer.join().unwrap();
        assert_eq!(lane.pop(), None);
    });
}

/// **Lane binding: one live loop at a time.** Two loops (storages 1 and 2) try to bind the same
/// lane while the first binder may already be closing (unbinding). Proves: the two are never
/// bound at once (a loop that binds sees the lane as its own until it unbinds), and a lane freed
/// by its loop can be bound by the other.
#[test]
fn loom_lane_binds_one_live_loop() {
    use crate::handoff::lane::Lane;
    model(3, || {
        let lane = Arc::new(Lane::<2>::new());
        let live = Arc::new(crate::loom::AtomicU32::new(0));
        let loops: Vec<_> = [1usize, 2]
            .into_iter()
            .map(|key| {
                let (lane, live) = (lane.clone(), live.clone());
                thread::spawn(move || {
                    if !lane.bind(key, 7) {
                        return false;
                    }
                    // Our loop runs: nobody else holds the lane meanwhile.
                    let before = live.fetch_add(1, crate::loom::Ordering::AcqRel);
                    assert_eq!(before, 0, "two live loops hold one lane");
                    assert!(lane.is_bound_to(key, 7));
                    live.fetch_sub(1, crate::loom::Ordering::AcqRel);
                    lane.unbind(key);
                    true
                })
            })
            .collect();
        let bound: Vec<bool> = loops.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(
            bound.contains(&true),
            "a free lane is always bound by someone"
        );
        assert!(
            lane.bind(3, 8),
            "unbound at the end: free for the next loop"
        );
    });
}
