//! Tests of the syscall-free core as a whole: a multi-threaded stress run of the claim / publish /
//! consume / free cycle, and allocation counting of every hot-path operation.
//!
//! The counting allocator below is the global allocator of the whole lib test binary. It only
//! counts on a thread that has switched counting on (a const-initialised thread-local flag), so
//! the other tests, running in parallel, do not pollute the counts.

use crate::buf::IoBufMut;
use crate::event_loop::request::Request;
use crate::event_loop::wheel::{Target, Wheel};
use crate::fd::Fd;
use crate::handoff::free_list::FreeList;
use crate::handoff::slot::{Caller, Finish, Leave, Slot, DONE, FREE};
use crate::handoff::submit_queue::SubmitQueue;
use crate::handoff::wake;
use crate::handoff::waker_cell::WakerCell;
use crate::op::{self, Work};
use crate::storage::Storage;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Counting allocator
// ---------------------------------------------------------------------------------------------

#[path = "../../tests/support/counting_alloc.rs"]
mod counting_alloc;

/// Runs `f` and returns how many allocations this thread made inside it.
fn count_allocations(f: impl FnOnce()) -> u64 {
    counting_alloc::thread_allocations(f)
}

/// Iterations measured per operation, after one warm-up pass.
const ITERATIONS: u32 = 10_000;

/// Runs `step` once to warm up (lazy initialisation is not the hot path), then counts the
/// allocations of `ITERATIONS` more calls.
fn allocations_of(mut step: impl FnMut(u32)) -> u64 {
    step(0);
    count_allocations(|| {
        for i in 1..=ITERATIONS {
            step(i);
        }
    })
}

/// A waker whose clone and drop only touch an `Arc` count: building it allocates, using it not.
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn counting_waker() -> (Arc<CountingWaker>, Waker) {
    let inner = Arc::new(CountingWaker(AtomicUsize::new(0)));
    (inner.clone(), Waker::from(inner))
}

#[test]
fn allocation_counter_counts_this_thread_only() {
    // Every zero-allocation assertion below is only as good as the counter: it must see a real
    // allocation, and must not see other threads' allocations.
    let n = count_allocations(|| {
        let boxed = std::hint::black_box(Box::new(7u64));
        let mut v: Vec<u8> = Vec::with_capacity(1);
        v.extend_from_slice(&[1, 2, 3]); // grows: a realloc
        std::hint::black_box((&boxed, &v));
    });
    assert_eq!(n, 3, "one Box, one Vec, one realloc");

    // Warm up the spawn path (lazy runtime state), then compare two spawns whose children
    // allocate different amounts.
    std::thread::scope(|s| {
        s.spawn(|| ());
    });
    let other = count_allocations(|| {
        std::thread::scope(|s| {
            s.spawn(|| {
                std::hint::black_box(vec![0u8; 64]);
            });
        });
    });
    // The spawn itself allocates on this thread (thread handle, closure box); the Vec on the
    // child thread must not be counted, so the count stays the same however large it is.
    let again = count_allocations(|| {
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..100 {
                    std::hint::black_box(vec![0u8; 64]);
                }
            });
        });
    });
    assert_eq!(
        other, again,
        "allocations on another thread leaked into the count"
    );
}

#[test]
fn free_list_pop_push_allocate_nothing() {
    // Claiming and freeing a slot happen on every request: they must never reach the allocator.
    let list = FreeList::<64>::new();
    list.fill();
    let n = allocations_of(|i| {
        let a = list.pop().expect("free index");
        let b = list.pop().expect("free index");
        list.push(a);
        if i % 2 == 0 {
            list.push(b);
        } else {
            list.push(b);
            let c = list.pop().expect("free index");
            list.push(c);
        }
    });
    assert_eq!(n, 0, "free list pop/push allocated");
    let mut count = 0;
    while list.pop().is_some() {
        count += 1;
    }
    assert_eq!(count, 64, "the free list still holds every index");
}

#[test]
fn submit_queue_push_pop_allocate_nothing() {
    // Publishing to the loop and the loop consuming must not allocate, lap after lap.
    let queue = SubmitQueue::<64>::new();
    queue.reset(1);
    let n = allocations_of(|i| {
        assert!(!queue.publish(queue.claim(1).expect("open"), i % 64));
        queue.push((i + 1) % 64);
        assert!(queue.has_ready());
        assert_eq!(queue.pop(), Some(i % 64));
        assert_eq!(queue.pop(), Some((i + 1) % 64));
        assert_eq!(queue.len(), 0);
    });
    assert_eq!(n, 0, "ring push/pop allocated");
}

#[test]
fn slot_phase_transitions_and_request_access_allocate_nothing() {
    // Every request walks FILLED -> QUEUED -> ACTIVE -> DONE (or ORPHANED) -> FREE and has its
    // request written and read in place; none of it may allocate, including moving a buffer and
    // a descriptor into and out of the slot.
    let slot = Slot::new(Request::EMPTY);
    let fd: Fd = Arc::new(std::fs::File::open("/dev/null").expect("open /dev/null")).into();
    let mut buffer = Some(IoBufMut::with_capacity(256));
    let n = allocations_of(|i| {
        // Completed path.
        slot.mark_filled();
        let buf = buffer.take().expect("buffer returned last time");
        // SAFETY: FILLED: this thread (the caller) owns the request.
        unsafe {
            slot.with_request(|r| {
                let work = op::ReadAt {
                    buf,
                    at: u64::from(i),
                    pos: 0,
                    end: 0,
                    exact: true,
                };
                *r = Request::new(work.into(), Some(fd.clone()), None);
            })
        };
        slot.mark_queued(false);
        assert!(slot.admit());
        // SAFETY: ACTIVE: the loop (this thread, playing it) owns the request.
        unsafe {
            slot.with_request(|r| {
                // (Also: the caller wrote a `ReadAt` above, so it is read as one.)
                let at = r.work.get_mut::<op::ReadAt>().at;
                r.outcome = Some(Ok(at as usize));
            })
        };
        assert_eq!(slot.finish(), Finish::Delivered(Caller::default()));
        assert_eq!(slot.phase(), DONE);
        // SAFETY: DONE: the caller owns the request.
        let (work, outcome) = unsafe {
            slot.with_request(|r| {
                let work = std::mem::replace(&mut r.work, Work::EMPTY);
                let outcome = r.outcome.take();
                *r = Request::EMPTY; // drops the Fd clone
                (work, outcome)
            })
        };
        let mut work = work;
        // SAFETY: the caller wrote a `ReadAt` above.
        let buf = unsafe { work.take::<op::ReadAt>() }.buf;
        assert!(matches!(outcome, Some(Ok(v)) if v == i as usize));
        buffer = Some(buf);
        slot.release();

        // Orphaned path: the caller leaves, the loop retires the request.
        slot.mark_filled();
        slot.mark_queued(false);
        assert_eq!(slot.orphan(), Leave::Orphaned);
        assert!(!slot.admit());
        slot.release();
        assert_eq!(slot.phase(), FREE);
    });
    assert_eq!(n, 0, "slot transitions allocated");
    assert_eq!(slot.generation(), 2 * (ITERATIONS + 1));
}

#[test]
fn waker_cell_register_take_wake_allocate_nothing() {
    // A future re-registers its waker on every poll and the loop takes it on every completion:
    // with a pre-built waker, neither may allocate (a clone is a reference-count bump).
    let cell = WakerCell::new();
    let (first, first_waker) = counting_waker();
    let (second, second_waker) = counting_waker();
    let n = allocations_of(|i| {
        cell.register(&first_waker);
        cell.register(&first_waker); // same waker: kept, not cloned again
        if i % 2 == 0 {
            cell.register(&second_waker); // moved to another task: replaced
        }
        let taken = cell.take().expect("a registered waker");
        taken.wake();
        assert!(cell.take().is_none(), "taken once");
        cell.register(&first_waker);
        cell.wake();
    });
    assert_eq!(n, 0, "waker cell allocated");
    let total = first.0.load(Ordering::Relaxed) + second.0.load(Ordering::Relaxed);
    assert_eq!(
        total,
        2 * (ITERATIONS as usize + 1),
        "two wakes per iteration"
    );
}

#[test]
fn waker_cell_take_back_returns_only_a_waker_the_loop_did_not_take() {
    // The registrant's side at the end of a request: the loop took the waker (the usual case),
    // or it did not (the result was seen before any wake), or nothing was registered.
    let cell = WakerCell::new();
    let (flag, waker) = counting_waker();
    assert!(cell.take_back().is_none(), "nothing registered");

    cell.register(&waker);
    let taken = cell.take().expect("the loop takes the registered waker");
    assert!(
        cell.take_back().is_none(),
        "the loop took it: nothing to hand back"
    );
    taken.wake();

    cell.register(&waker);
    cell.register(&waker); // a second poll with the same waker keeps the cell full
    let back = cell
        .take_back()
        .expect("not taken by the loop: handed back");
    assert!(back.will_wake(&waker));
    assert!(
        cell.take().is_none(),
        "handed back: the loop finds the cell empty"
    );
    assert!(cell.take_back().is_none(), "and so does a second take_back");
    assert_eq!(
        flag.0.load(Ordering::Relaxed),
        1,
        "only the waker the loop took was woken"
    );
}

#[test]
fn wake_release_arm_disarm_allocate_nothing() {
    // The wake protocol runs on every submission and every loop iteration.
    const ONE: u64 = 1 << 32;
    let word = crate::loom::AtomicU64::new(0);
    let n = allocations_of(|_| {
        word.fetch_add(2 * ONE, Ordering::Relaxed);
        assert!(!wake::release(&word, ONE).1, "not armed: no ring");
        wake::arm(&word);
        assert!(wake::is_armed(&word));
        assert!(wake::release(&word, ONE).1, "armed: ring");
        wake::disarm(&word);
        assert!(!wake::is_armed(&word));
    });
    assert_eq!(n, 0, "wake protocol allocated");
    assert_eq!(word.load(Ordering::Relaxed), 0, "every count taken back");
}

#[test]
fn wheel_schedule_remove_advance_allocate_nothing() {
    // Every request with a deadline is scheduled and removed (or expires) on the loop thread.
    let mut wheel = Box::new(Wheel::<64, 1024>::new());
    let mut expired_total = 0usize;
    let mut tick = 0u64;
    let n = allocations_of(|i| {
        let slot = i % 64;
        for (k, s) in [slot, (slot + 1) % 64, (slot + 2) % 64]
            .into_iter()
            .enumerate()
        {
            match wheel.target(tick + 3 + k as u64 * 200, 1000) {
                Target::At(t) => wheel.schedule(s, t),
                Target::Expired => panic!("future deadline reported expired"),
            }
        }
        assert_eq!(wheel.next_deadline_ticks(), Some(3));
        assert!(wheel.remove((slot + 1) % 64).is_some());
        tick += 3;
        expired_total += wheel.advance(tick, |s, _| assert_eq!(s, slot));
        assert_eq!(wheel.next_deadline_ticks(), Some(400));
        assert!(wheel.remove((slot + 2) % 64).is_some());
        assert_eq!(wheel.next_deadline_ticks(), None);
        assert_eq!(wheel.len(), 0);
    });
    assert_eq!(n, 0, "wheel allocated");
    assert_eq!(
        expired_total,
        ITERATIONS as usize + 1,
        "one expiry per iteration"
    );
}

/// The storage the cycle test claims: `'static`, so claiming it allocates nothing either.
static STORAGE: Storage<64, 32, 1024> = Storage::new();

#[test]
fn storage_claim_publish_consume_free_cycle_allocates_nothing() {
    // The whole syscall-free path of a request through a real storage: claim a slot and a ring
    // position, write the slot, publish; the loop pops, admits, completes; the caller
    // takes the result and frees the slot (free_slot also checks for slot waiters).
    // The eventfd stays owned (and open) by the storage; nothing here rings it.
    let _eventfd = STORAGE.claim().expect("fresh storage");
    let epoch = STORAGE.epoch();
    let (_, waker) = counting_waker();
    let mut buffer = Some(IoBufMut::with_capacity(64));
    let n = allocations_of(|i| {
        // Caller.
        let index = STORAGE.free.pop().expect("a free slot");
        let slot = &STORAGE.slots[index as usize];
        slot.mark_filled();
        let position = STORAGE.queue.claim(epoch).expect("open");
        let buf = buffer.take().expect("buffer back");
        // SAFETY: FILLED: the caller owns the request.
        unsafe {
            slot.with_request(|r| {
                let mut work = op::Recv::new(buf);
                work.end = 0;
                *r = Request::new(work.into(), None, None)
            })
        };
        slot.mark_queued(false);
        assert!(
            !STORAGE.queue.publish(position, index),
            "not armed: no wake"
        );
        slot.waker.register(&waker);

        // Loop.
        assert_eq!(STORAGE.queue.pop(), Some(index));
        assert!(slot.admit());
        // SAFETY: ACTIVE: the loop owns the request.
        unsafe { slot.with_request(|r| r.outcome = Some(Ok(i as usize))) };
        assert_eq!(slot.finish(), Finish::Delivered(Caller::default()));
        slot.waker.wake();

        // Caller again.
        assert_eq!(slot.phase(), DONE);
        // SAFETY: DONE: the caller owns the request.
        let (work, outcome) = unsafe {
            slot.with_request(|r| {
                (
                    std::mem::replace(&mut r.work, Work::EMPTY),
                    r.outcome.take(),
                )
            })
        };
        let mut work = work;
        // SAFETY: the caller wrote a `Recv` above.
        let buf = unsafe { work.take::<op::Recv>() }.buf;
        assert!(matches!(outcome, Some(Ok(v)) if v == i as usize));
        buffer = Some(buf);
        STORAGE.free_slot(index);
    });
    assert_eq!(n, 0, "storage cycle allocated");
    let mut free = 0;
    while STORAGE.free.pop().is_some() {
        free += 1;
    }
    assert_eq!(free, 64, "every slot is free again");
}

// ---------------------------------------------------------------------------------------------
// Stress: claim / publish / consume / free
// ---------------------------------------------------------------------------------------------

const STRESS_SLOTS: usize = 64;
const STRESS_PRODUCERS: usize = 4;

/// Outcome of one stress run.
struct StressRun {
    consumed: u64,
    elapsed: Duration,
}

/// `STRESS_PRODUCERS` threads each run `cycles` claim/publish cycles (pop an index from the free
/// list, mark it owned, stamp it with (producer, sequence), push it into the ring) while one
/// consumer pops, checks and clears ownership, checks per-producer order, and frees the index.
/// Panics on any double hand-out, unowned free, reordering, or when `limit` passes first.
fn stress(cycles: u64, limit: Duration) -> StressRun {
    let free = Arc::new(FreeList::<STRESS_SLOTS>::new());
    free.fill();
    let queue = Arc::new(SubmitQueue::<STRESS_SLOTS>::new());
    queue.reset(1);
    // owned[i]: index i is out of the free list (claimed by a producer, in the ring, or being
    // consumed). stamp[i]: producer << 32 | sequence of the push that carries i.
    let owned: Arc<[AtomicBool; STRESS_SLOTS]> =
        Arc::new([const { AtomicBool::new(false) }; STRESS_SLOTS]);
    let stamp: Arc<[AtomicU64; STRESS_SLOTS]> =
        Arc::new([const { AtomicU64::new(0) }; STRESS_SLOTS]);
    let abort = Arc::new(AtomicBool::new(false));
    let total = cycles * STRESS_PRODUCERS as u64;
    let deadline = Instant::now() + limit;
    let start = Instant::now();

    let producers: Vec<_> = (0..STRESS_PRODUCERS as u64)
        .map(|p| {
            let (free, queue, owned, stamp, abort) = (
                free.clone(),
                queue.clone(),
                owned.clone(),
                stamp.clone(),
                abort.clone(),
            );
            std::thread::spawn(move || {
                let mut spins = 0u32;
                for seq in 0..cycles {
                    let index = loop {
                        if let Some(index) = free.pop() {
                            break index;
                        }
                        spins = spins.wrapping_add(1);
                        if spins % 1024 == 0
                            && (abort.load(Ordering::Relaxed) || Instant::now() > deadline)
                        {
                            abort.store(true, Ordering::Relaxed);
                            return;
                        }
                        std::thread::yield_now();
                    };
                    assert!(
                        !owned[index as usize].swap(true, Ordering::Relaxed),
                        "index {index} handed out while owned"
                    );
                    // The position first, as a submit takes it before writing its slot.
                    let position = queue.claim(1).expect("the ring stays open");
                    // Relaxed: the ring's Release publish / Acquire pop must publish it.
                    stamp[index as usize].store(p << 32 | seq, Ordering::Relaxed);
                    let _ = queue.publish(position, index);
                }
            })
        })
        .collect();

    let consumer = {
        let (free, queue, owned, stamp, abort) = (
            free.clone(),
            queue.clone(),
            owned.clone(),
            stamp.clone(),
            abort.clone(),
        );
        std::thread::spawn(move || {
            let mut next = [0u64; STRESS_PRODUCERS];
            let mut consumed = 0u64;
            let mut spins = 0u32;
            while consumed < total {
                let Some(index) = queue.pop() else {
                    spins = spins.wrapping_add(1);
                    if spins % 1024 == 0
                        && (abort.load(Ordering::Relaxed) || Instant::now() > deadline)
                    {
                        abort.store(true, Ordering::Relaxed);
                        break;
                    }
                    std::thread::yield_now();
                    continue;
                };
                let s = stamp[index as usize].load(Ordering::Relaxed);
                let (p, seq) = ((s >> 32) as usize, s & 0xffff_ffff);
                assert_eq!(seq, next[p], "producer {p}'s pushes out of order");
                next[p] += 1;
                assert!(
                    owned[index as usize].swap(false, Ordering::Relaxed),
                    "index {index} consumed but not owned"
                );
                free.push(index);
                consumed += 1;
            }
            consumed
        })
    };

    for p in producers {
        p.join().expect("producer panicked");
    }
    let consumed = consumer.join().expect("consumer panicked");
    let elapsed = start.elapsed();
    assert!(
        !abort.load(Ordering::Relaxed),
        "stress run did not finish within {limit:?} ({consumed} of {total} consumed)"
    );
    assert_eq!(consumed, total, "every cycle consumed");
    assert_eq!(queue.len(), 0, "nothing left in the ring");
    assert_eq!(queue.pop(), None);

    // Every index back on the free list exactly once: none lost, none duplicated.
    let mut seen = [false; STRESS_SLOTS];
    while let Some(index) = free.pop() {
        assert!(
            !std::mem::replace(&mut seen[index as usize], true),
            "index {index} on the free list twice"
        );
    }
    assert!(seen.iter().all(|&s| s), "an index was lost: {seen:?}");
    assert!(
        owned.iter().all(|o| !o.load(Ordering::Relaxed)),
        "an index is still marked owned"
    );
    StressRun { consumed, elapsed }
}

fn report(label: &str, run: &StressRun) {
    eprintln!(
        "{label}: {} cycles in {:.2?} = {:.0} cycles/s ({} producers, 1 consumer, {} slots)",
        run.consumed,
        run.elapsed,
        run.consumed as f64 / run.elapsed.as_secs_f64(),
        STRESS_PRODUCERS,
        STRESS_SLOTS,
    );
}

#[test]
fn stress_4x1m_every_slot_accounted_for() {
    // The acceptance run: 4 producer threads x 1,000,000 claim/publish cycles against one
    // consumer over 64 slots; a lost or duplicated index, or a reordered push, fails it. (About
    // 0.5-2 s in a debug build on 2 cores, so it runs by default; the limit is only a hang guard.)
    let run = stress(1_000_000, Duration::from_secs(600));
    report("stress 4x1M", &run);
}

#[test]
fn stress_close_while_claiming_strands_nothing() {
    // Submitters claim positions and publish while the loop side pops and, at some point,
    // closes the ring (`Storage::close_loop`): every position claimed before the close is
    // published and swept, every claim after it is refused, nothing is popped twice. Rounds
    // reopen the ring for a new epoch, as a new claim of the storage does; callers that still
    // carry an old epoch are refused.
    const PRODUCERS: u32 = 3;
    const SLOTS: usize = 64;
    let queue = Arc::new(SubmitQueue::<SLOTS>::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    for round in 1..=200u32 {
        queue.reset(round);
        // In flight per producer at once: one (each holds a "slot" until the consumer pops it).
        let accepted = Arc::new(AtomicU64::new(0));
        let handed: Arc<[AtomicBool; SLOTS]> = Arc::new([const { AtomicBool::new(false) }; SLOTS]);
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let (queue, accepted, handed) = (queue.clone(), accepted.clone(), handed.clone());
                std::thread::spawn(move || {
                    // A stale caller's epoch is refused whatever the ring's state.
                    assert!(
                        queue.claim(round.wrapping_sub(1)).is_none(),
                        "stale epoch claimed"
                    );
                    let index = p;
                    loop {
                        // Our index is ours again once the consumer popped it.
                        while handed[index as usize].load(Ordering::Acquire) {
                            std::hint::spin_loop();
                        }
                        let Some(position) = queue.claim(round) else {
                            return;
                        };
                        handed[index as usize].store(true, Ordering::Relaxed);
                        accepted.fetch_add(1, Ordering::Relaxed);
                        let _ = queue.publish(position, index);
                    }
                })
            })
            .collect();
        let mut popped = 0u64;
        let close_after = 100 + u64::from(round) * 37 % 2000;
        while popped < close_after {
            assert!(
                Instant::now() < deadline,
                "close stress round {round} stuck"
            );
            if let Some(index) = queue.pop() {
                popped += 1;
                assert!(
                    handed[index as usize].swap(false, Ordering::Release),
                    "popped twice"
                );
            }
        }
        // The loop closes and sweeps to the final position, as `close_loop` does.
        let last = queue.close();
        while queue.len() != 0 {
            assert!(Instant::now() < deadline, "sweep of round {round} stuck");
            match queue.pop() {
                Some(index) => {
                    popped += 1;
                    assert!(
                        handed[index as usize].swap(false, Ordering::Release),
                        "swept twice"
                    );
                }
                None => std::thread::yield_now(),
            }
        }
        for p in producers {
            p.join().expect("producer panicked");
        }
        assert_eq!(
            popped,
            accepted.load(Ordering::Relaxed),
            "an accepted push was lost"
        );
        assert_eq!(
            u64::from(last),
            popped,
            "the final position counts every claim"
        );
        assert!(queue.claim(round).is_none(), "a closed ring took a claim");
    }
}

#[test]
fn stress_free_list_aba_shape_3x1m() {
    // The stress above pops on producers and pushes on the consumer, which rarely lines up the
    // ABA window on two cores; here three threads run pop A, pop B, push A, push B on a list of 4,
    // so a stale head CAS (an ABA the tag failed to stop) hands an index out twice within
    // seconds. (Checked: with the tag increments removed, this fails on every run.)
    const ROUNDS: u32 = 1_000_000;
    let free = Arc::new(FreeList::<4>::new());
    free.fill();
    let owned: Arc<[AtomicBool; 4]> = Arc::new([const { AtomicBool::new(false) }; 4]);
    let claim = |owned: &[AtomicBool; 4], i: u32| {
        assert!(
            !owned[i as usize].swap(true, Ordering::Relaxed),
            "index {i} handed out twice"
        );
    };
    let start = Instant::now();
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (free, owned) = (free.clone(), owned.clone());
            std::thread::spawn(move || {
                let mut pairs = 0u32;
                for _ in 0..ROUNDS {
                    let Some(a) = free.pop() else {
                        std::thread::yield_now();
                        continue;
                    };
                    claim(&owned, a);
                    let b = free.pop();
                    if let Some(b) = b {
                        claim(&owned, b);
                        pairs += 1;
                    }
                    owned[a as usize].store(false, Ordering::Relaxed);
                    free.push(a);
                    if let Some(b) = b {
                        owned[b as usize].store(false, Ordering::Relaxed);
                        free.push(b);
                    }
                }
                pairs
            })
        })
        .collect();
    let pairs: u32 = threads
        .into_iter()
        .map(|t| t.join().expect("thread panicked"))
        .sum();
    eprintln!(
        "free-list ABA stress: 3x{ROUNDS} rounds ({pairs} pop-pop-push-push) in {:.2?}",
        start.elapsed()
    );
    assert!(
        pairs > 0,
        "the ABA shape (two indices held at once) never ran"
    );
    let mut seen = [false; 4];
    while let Some(i) = free.pop() {
        assert!(
            !std::mem::replace(&mut seen[i as usize], true),
            "index {i} twice"
        );
    }
    assert_eq!(seen, [true; 4], "an index was lost");
}

#[test]
fn stress_wait_list_4_threads_on_2_slots_no_lost_grant() {
    // Backpressure under contention: four threads share two slots, each claiming as a caller
    // does (the fast path while nobody waits, else the wait list, parking until granted) and
    // freeing through `WaitList::free`, whose push reads the waiters' flag in the free list's
    // head. A grant lost between a failed pop and the linking strands a thread (the deadline
    // fails the test); an index handed out twice fails the ownership check. At the end every
    // index is back and no flag is left (the last grant found the list empty).
    use crate::handoff::wait_list::{Notify, WaitList, WaitState, Waiter};
    const ROUNDS: u32 = 20_000;
    let free = Arc::new(FreeList::<2>::new());
    free.fill();
    let list = Arc::new(WaitList::new());
    let owned: Arc<[AtomicBool; 2]> = Arc::new([const { AtomicBool::new(false) }; 2]);
    let waited = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(120);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (free, list, owned, waited) =
                (free.clone(), list.clone(), owned.clone(), waited.clone());
            std::thread::spawn(move || {
                let node = Box::pin(Waiter::new());
                for _ in 0..ROUNDS {
                    let index = match free.pop_unwaited() {
                        Some(index) => index,
                        None => loop {
                            // SAFETY: the node is pinned on the heap, used by this thread only,
                            // and cancelled before it is dropped.
                            let state = unsafe {
                                list.poll_claim(&*node, 0, &free, || false, Notify::CurrentThread)
                            };
                            match state {
                                WaitState::Granted(index) => break index,
                                WaitState::Queued => {
                                    waited.fetch_add(1, Ordering::Relaxed);
                                    assert!(Instant::now() < deadline, "a waiter was stranded");
                                    std::thread::park_timeout(Duration::from_millis(100));
                                }
                                other => panic!("unexpected {other:?}"),
                            }
                        },
                    };
                    assert!(
                        !owned[index as usize].swap(true, Ordering::Relaxed),
                        "index {index} handed out twice"
                    );
                    // Held a moment, so that the others find no slot and queue.
                    std::thread::yield_now();
                    owned[index as usize].store(false, Ordering::Relaxed);
                    assert_eq!(list.free(&free, index), 0);
                }
                // SAFETY: as above.
                assert_eq!(unsafe { list.cancel(&*node) }, None);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread panicked");
    }
    eprintln!(
        "wait-list stress: 4x{ROUNDS} claims of 2 slots, {} waits",
        waited.load(Ordering::Relaxed)
    );
    assert!(!free.has_waiters(), "a flag left with nobody waiting");
    let mut seen = [false; 2];
    while let Some(i) = free.pop() {
        assert!(
            !std::mem::replace(&mut seen[i as usize], true),
            "index {i} twice"
        );
    }
    assert_eq!(seen, [true; 2], "an index was lost");
}

// ---------------------------------------------------------------------------------------------
// User code cannot corrupt the core
// ---------------------------------------------------------------------------------------------

/// A waker whose `clone` panics.
fn waker_that_panics_on_clone() -> Waker {
    use std::task::{RawWaker, RawWakerVTable};
    const VTABLE: RawWakerVTable =
        RawWakerVTable::new(|_| panic!("hostile clone"), |_| {}, |_| {}, |_| {});
    // SAFETY: the vtable never dereferences the (null) data pointer.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
}

#[test]
fn waker_cell_stays_usable_after_a_panicking_clone() {
    // A caller's waker that panics while being registered must not leave the cell REGISTERING:
    // later registrations (the next request in this slot) and the loop's wakes must work.
    let cell = WakerCell::new();
    let hostile = waker_that_panics_on_clone();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cell.register(&hostile)));
    assert!(caught.is_err(), "the clone's panic reaches its own caller");
    let (count, waker) = counting_waker();
    cell.register(&waker);
    cell.wake();
    assert_eq!(count.0.load(Ordering::SeqCst), 1, "the cell works again");
}

#[test]
fn dropping_a_storage_leaks_requests_the_kernel_may_still_own() {
    // A loop that died without abandoning leaves ACTIVE (or ORPHANED, QUEUED) slots: their
    // buffers and descriptors may still be used by the kernel, so dropping the storage must leak
    // them; FREE and DONE slots are dropped normally.
    let file = Arc::new(std::fs::File::open("/dev/null").expect("open /dev/null"));
    let storage = Storage::<4, 2, 8>::new_shared();
    let fill = |index: usize| {
        let slot = &storage.slots[index];
        slot.mark_filled();
        // SAFETY: FILLED: this thread owns the request.
        unsafe {
            slot.with_request(|r| {
                *r = Request::new(
                    op::Sync { data_only: false }.into(),
                    Some(Fd::from(file.clone())),
                    None,
                )
            })
        };
        slot.mark_queued(false);
        assert!(slot.admit());
    };
    fill(0); // stays ACTIVE
    fill(1);
    // SAFETY: ACTIVE: the loop (this thread) owns the request.
    unsafe { storage.slots[1].with_request(|r| r.outcome = Some(Ok(0))) };
    assert_eq!(
        storage.slots[1].finish(),
        Finish::Delivered(Caller::default())
    ); // DONE
    assert_eq!(Arc::strong_count(&file), 3);
    drop(storage);
    assert_eq!(
        Arc::strong_count(&file),
        2,
        "the DONE request was dropped, the ACTIVE one leaked"
    );
}
