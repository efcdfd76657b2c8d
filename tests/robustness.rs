//! Robustness against hostile user code and awkward shutdowns: the loop always ends, user code
//! (wakers, their drops) cannot corrupt a slot, hang a caller or kill the loop, a waiting caller
//! holds one slot at most, and what the counters say is what happened.
//!
//! Each test names the defect it pins (found in review, see the closing notes of issue 7).

mod common;

use std::io::{Seek, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use static_uring::{op, Config, Error, Handle, IoBuf, IoBufMut, Op, Storage};

fn zeroed(len: usize) -> IoBufMut {
    IoBufMut::from(vec![0u8; len])
}

fn budget(shutdown: Option<Duration>) -> Config {
    Config {
        shutdown_timeout: shutdown,
        ..config()
    }
}

/// A waker whose `wake` panics, counting how often it was called.
struct Panicking(AtomicUsize);

impl Wake for Panicking {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("a hostile waker");
    }
}

fn panicking_waker() -> (Arc<Panicking>, Waker) {
    let inner = Arc::new(Panicking(AtomicUsize::new(0)));
    (inner.clone(), Waker::from(inner))
}

/// A waker that does nothing; its `Arc` count tells whether anyone still holds it.
struct Quiet;

impl Wake for Quiet {
    fn wake(self: Arc<Self>) {}
}

// ---- Bug 1: shutdown with requests queued behind a full admission table ----------------------

type Silent = Arc<std::os::unix::net::UnixStream>;

/// `n` recvs on sockets whose peers never write; the first `in_flight` are waited into the
/// kernel one by one (so with `RING == in_flight` the rest stay queued). The peers are returned
/// so that they stay open.
fn silent_recvs<const S: usize, const R: usize, const W: usize>(
    handle: &Handle<S, R, W>,
    n: usize,
    in_flight: usize,
) -> (Vec<Op<op::Recv, S, R, W>>, Vec<Silent>) {
    let mut ops = Vec::new();
    let mut peers = Vec::new();
    for i in 0..n {
        let (peer, mine) = socket_pair();
        ops.push(handle.recv(mine, zeroed(4)).limit(4).try_submit().unwrap());
        peers.push(peer);
        if i < in_flight {
            wait_until(HANG, "in flight", || {
                handle.metrics().submitted == i as u64 + 1
            });
        }
    }
    (ops, peers)
}

/// Every op's error, waited for with a bound.
fn errors<const S: usize, const R: usize, const W: usize>(
    ops: Vec<Op<op::Recv, S, R, W>>,
) -> Vec<Error> {
    ops.into_iter()
        .map(|op| with_timeout(HANG, move || op.wait()).unwrap_err().error)
        .collect()
}

/// `new::<2, 1>`, budget 100 ms: recv A in flight on a silent socket, recv B queued (RING = 1),
/// last handle dropped. The drain must start anyway: A is abandoned at the budget, B (never
/// admitted) is answered `Closed` with its buffer, and `run` returns, all within the budget plus
/// a margin.
#[test]
fn shutdown_with_a_request_queued_behind_a_full_table_ends_at_the_budget() {
    let (handle, event_loop) =
        static_uring::new::<2, 1, 64>(budget(Some(Duration::from_millis(100)))).unwrap();
    let reader = event_loop.metrics_reader();
    let lp = LoopThread::spawn(event_loop);
    let (mut ops, _peers) = silent_recvs(&handle, 2, 1);
    let b = ops.pop().unwrap();
    let dropped = Instant::now();
    drop(handle);
    assert_eq!(errors(ops), [Error::Abandoned]);
    let (buf, eb) = with_timeout(HANG, move || b.wait())
        .unwrap_err()
        .into_parts();
    assert_eq!(eb, Error::Closed, "B was never admitted");
    assert_eq!(
        buf.capacity(),
        4,
        "a request never submitted hands its buffer back"
    );
    lp.join(HANG).unwrap();
    let elapsed = dropped.elapsed();
    assert!(
        elapsed >= Duration::from_millis(100),
        "budget not waited out: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "shutdown took {elapsed:?}"
    );
    let m = reader.get();
    assert_eq!((m.abandoned, m.completed, m.pending_operations), (1, 2, 0));
}

/// Same with `Some(0)`: everything ends at once.
#[test]
fn shutdown_with_zero_budget_and_a_queued_request_ends_at_once() {
    let (handle, lp) = start::<2, 1, 64>(budget(Some(Duration::ZERO)));
    let (ops, _peers) = silent_recvs(&handle, 2, 1);
    drop(handle);
    assert_eq!(errors(ops), [Error::Abandoned, Error::Closed]);
    lp.join(HANG).unwrap();
}

/// `SLOTS = 4, RING = 2`, three recvs: two in flight, one queued.
#[test]
fn shutdown_with_two_in_flight_and_one_queued_ends_at_the_budget() {
    let (handle, lp) = start::<4, 2, 64>(budget(Some(Duration::from_millis(50))));
    let (ops, _peers) = silent_recvs(&handle, 3, 2);
    drop(handle);
    assert_eq!(
        errors(ops),
        [Error::Abandoned, Error::Abandoned, Error::Closed]
    );
    lp.join(HANG).unwrap();
}

/// An orphan in the submission ring (its future dropped before the handle) must not keep the
/// loop from draining either; it is retired and counted.
#[test]
fn shutdown_with_an_orphan_queued_behind_a_full_table_ends() {
    let (handle, event_loop) =
        static_uring::new::<2, 1, 64>(budget(Some(Duration::from_millis(30)))).unwrap();
    let reader = event_loop.metrics_reader();
    let lp = LoopThread::spawn(event_loop);
    let (mut ops, _peers) = silent_recvs(&handle, 2, 1);
    drop(ops.pop());
    drop(handle);
    assert_eq!(errors(ops), [Error::Abandoned]);
    lp.join(HANG).unwrap();
    let m = reader.get();
    assert_eq!(m.completed, 2, "the queued orphan is counted once: {m:?}");
}

/// `None` still waits for every request, queued ones included: they are admitted as entries
/// free up and keep their deadlines.
#[test]
fn shutdown_without_budget_admits_queued_requests_and_keeps_their_deadlines() {
    let (handle, lp) = start::<2, 1, 256>(budget(None));
    let (_a1, a2) = socket_pair();
    let (_b1, b2) = socket_pair();
    let start_at = Instant::now();
    let a_deadline = start_at + Duration::from_millis(100);
    let b_deadline = start_at + Duration::from_millis(300);
    let a = handle
        .recv(a2, zeroed(4))
        .limit(4)
        .deadline(a_deadline)
        .try_submit()
        .unwrap();
    wait_until(HANG, "A in flight", || handle.metrics().submitted == 1);
    let b = handle
        .recv(b2, zeroed(4))
        .limit(4)
        .deadline(b_deadline)
        .try_submit()
        .unwrap();
    drop(handle);
    assert_eq!(
        with_timeout(HANG, move || a.wait()).unwrap_err().error,
        Error::Timeout
    );
    assert_eq!(
        with_timeout(HANG, move || b.wait()).unwrap_err().error,
        Error::Timeout
    );
    assert!(Instant::now() >= b_deadline, "B timed out early");
    lp.join(HANG).unwrap();
}

/// With no budget, a queued write behind a full table still runs once the in-flight request
/// completes: nothing acknowledged is lost.
#[test]
fn shutdown_without_budget_runs_a_queued_write_after_the_table_frees() {
    let (handle, lp) = start::<2, 1, 64>(budget(None));
    let (a1, a2) = socket_pair();
    let file = TempFile::new();
    let a = handle.recv(a2, zeroed(4)).exact(4).try_submit().unwrap();
    wait_until(HANG, "A in flight", || handle.metrics().submitted == 1);
    let w = handle
        .write_at(file.file.clone(), 0, IoBuf::from(&b"kept"[..]))
        .try_submit()
        .unwrap();
    drop(w); // durable writes run to completion even without a caller
    drop(handle);
    thread::sleep(Duration::from_millis(20));
    assert!(!lp.is_finished(), "the recv is still in flight");
    (&*a1).write_all(b"data").unwrap();
    assert_eq!(
        &with_timeout(HANG, move || a.wait()).unwrap().0[..],
        b"data"
    );
    lp.join(HANG).unwrap();
    assert_eq!(file.contents(), b"kept");
}

// ---- Bug 2: a panicking waker on the loop thread ------------------------------------------

/// The loop wakes a waker that panics: the panic is caught and counted, the loop keeps serving,
/// and the request's result is still there for the next poll.
#[test]
fn a_panicking_waker_does_not_stop_the_loop() {
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    let reader = event_loop.metrics_reader();
    let lp = LoopThread::spawn(event_loop);
    let (count, waker) = panicking_waker();
    let (a1, a2) = socket_pair();
    let mut op = Box::pin(handle.recv(a2, zeroed(2)).exact(2));
    assert!(poll_with(op.as_mut(), &waker).is_none(), "in flight");
    (&*a1).write_all(b"ok").unwrap();
    wait_until(HANG, "the loop woke the waker", || {
        count.0.load(Ordering::SeqCst) == 1
    });
    wait_until(HANG, "the panic is counted", || {
        handle.metrics().user_panics == 1
    });
    let (buf, filled) = poll_once(op.as_mut()).expect("done").unwrap();
    assert_eq!((filled, &buf[..]), (2, &b"ok"[..]));
    for _ in 0..10 {
        with_timeout(HANG, {
            let h = handle.clone();
            move || h.nop().wait()
        })
        .unwrap();
    }
    drop(handle);
    lp.join(HANG).unwrap();
    assert_eq!(reader.get().user_panics, 1);
}

/// The loop completes an operation awaited by a `TaskPool` task whose pool is run by another
/// executor, on another thread: the loop marks the task ready and wakes that executor through
/// the runner's waker, which is user code. It panics: the panic is caught and counted, the loop
/// keeps serving, and the pool (polled again by its executor) finishes the task.
#[test]
fn a_panicking_pool_runner_waker_does_not_stop_the_loop() {
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    let reader = event_loop.metrics_reader();
    let lp = LoopThread::spawn(event_loop);
    let pool = static_uring::TaskPool::<_, 1>::leak();
    let done = Arc::new(AtomicUsize::new(0));
    let (io, finished) = (handle.clone(), done.clone());
    let task = async move {
        io.nop().await.unwrap();
        finished.fetch_add(1, Ordering::SeqCst);
    };
    assert!(pool.spawn(task).is_ok());
    let (count, waker) = panicking_waker();
    let mut run = Box::pin(pool.run(std::future::pending::<()>()));
    // Polled by hand with the hostile waker (which the pool registers as its runner's) until
    // the task has finished; no wake is relied on.
    let deadline = Instant::now() + HANG;
    while done.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the pool task never finished");
        assert!(poll_with(run.as_mut(), &waker).is_none());
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        count.0.load(Ordering::SeqCst),
        1,
        "the runner was woken once"
    );
    wait_until(HANG, "the panic is counted", || {
        handle.metrics().user_panics == 1
    });
    for _ in 0..10 {
        with_timeout(HANG, {
            let h = handle.clone();
            move || h.nop().wait()
        })
        .unwrap();
    }
    drop(run);
    drop(handle);
    lp.join(HANG).unwrap();
    assert_eq!(reader.get().user_panics, 1);
}

// ---- Bug 3: offsets the kernel would read as "current position" ------------------------------

/// io_uring reads an offset of -1 as "the file's current position": `read_at(u64::MAX)` must be
/// refused, buffer back, nothing submitted, cursor untouched; likewise every range beyond
/// `i64::MAX`, and `write_at` alike.
#[test]
fn offsets_beyond_i64_max_are_invalid_input() {
    let (handle, lp) = start::<4, 4, 64>(config());
    let temp = TempFile::with_contents(b"0123456789abcdef0123");
    let mut file = std::fs::File::open(&temp.path).unwrap();
    file.seek(std::io::SeekFrom::Start(3)).unwrap();
    let file = Arc::new(file);
    for offset in [
        u64::MAX,
        u64::MAX - 15,
        i64::MAX as u64,
        i64::MAX as u64 - 15,
        1 << 63,
    ] {
        let (buf, e) = handle
            .read_at(file.clone(), offset, IoBufMut::with_capacity(16))
            .limit(16)
            .wait()
            .unwrap_err()
            .into_parts();
        assert_eq!(
            (e, buf.capacity()),
            (Error::InvalidInput, 16),
            "read_at({offset})"
        );
        let (buf, e) = handle
            .write_at(temp.file.clone(), offset, IoBuf::from(&[1u8; 16][..]))
            .wait()
            .unwrap_err()
            .into_parts();
        assert_eq!(
            (e, buf.len()),
            (Error::InvalidInput, 16),
            "write_at({offset})"
        );
        assert!(handle
            .read_at(file.clone(), offset, IoBufMut::with_capacity(16))
            .limit(16)
            .try_submit()
            .is_err());
    }
    assert_eq!(handle.metrics().submitted, 0, "nothing reached the kernel");
    assert_eq!(
        (&*file).stream_position().unwrap(),
        3,
        "the cursor did not move"
    );
    // The largest valid range still works (end of file there).
    let last = i64::MAX as u64 - 16;
    let (_, e) = handle
        .read_at(file.clone(), last, IoBufMut::with_capacity(16))
        .limit(16)
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!(e, Error::UnexpectedEof);
    drop(handle);
    lp.join(HANG).unwrap();
}

// ---- Bug 5: counters that mean what their docs say ------------------------------------------

/// `completed` counts every request the loop took, orphans included: one retired at admission,
/// one retired at its non-terminal CQE (a short exact recv whose caller left).
#[test]
fn completed_counts_orphans_retired_at_admission_and_at_a_partial_cqe() {
    let (handle, event_loop) = static_uring::new::<2, 1, 64>(config()).unwrap();
    let reader = event_loop.metrics_reader();
    let lp = LoopThread::spawn(event_loop);
    let (a1, a2) = socket_pair();
    // Exact recv of 8: a 4-byte write is a non-terminal CQE.
    let a = handle.recv(a2, zeroed(8)).exact(8).try_submit().unwrap();
    wait_until(HANG, "A in flight", || handle.metrics().submitted == 1);
    // B queued behind it, then orphaned before admission.
    drop(handle.nop().try_submit().unwrap());
    drop(a);
    (&*a1).write_all(b"half").unwrap();
    wait_until(HANG, "both retired", || handle.metrics().completed == 2);
    let m = handle.metrics();
    assert_eq!((m.orphaned, m.pending_operations), (2, 0), "{m:?}");
    drop(handle);
    lp.join(HANG).unwrap();
    assert_eq!(reader.get().completed, 2);
}

/// A request whose deadline fired (AsyncCancel staged but not yet submitted) when the budget
/// runs out gets no second AsyncCancel, and its outcome is the known one, `Timeout`.
#[test]
fn abandonment_sends_no_second_cancel_after_a_deadline() {
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(budget(Some(Duration::ZERO))).unwrap();
    let reader = event_loop.metrics_reader();
    let lp = LoopThread::spawn(event_loop);
    let (_x1, x2) = socket_pair();
    let deadline = Instant::now() + Duration::from_millis(50);
    let x = handle
        .recv(x2, zeroed(4))
        .limit(4)
        .deadline(deadline)
        .try_submit()
        .unwrap();
    wait_until(HANG, "X in flight", || handle.metrics().submitted == 1);
    // Hold the loop thread inside a waker across the deadline and the last handle's drop.
    // A nop the loop completes before its first poll registers the waker ends in that poll (the
    // waker is taken back unused): poll fresh nops until one is left waiting.
    let stall = Stall::new();
    let y = loop {
        let mut y = Box::pin(handle.nop());
        if poll_with(y.as_mut(), &stall.waker()).is_none() {
            break y;
        }
    };
    stall.wait_entered();
    thread::sleep(deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(20));
    drop(handle);
    thread::sleep(Duration::from_millis(10));
    stall.release();
    let (_, e) = with_timeout(HANG, move || x.wait())
        .unwrap_err()
        .into_parts();
    assert_eq!(
        e,
        Error::Timeout,
        "the deadline had fired: its answer is known"
    );
    lp.join(HANG).unwrap();
    assert_eq!(reader.get().cancel_sqes, 1, "one AsyncCancel per request");
    drop(y);
}

// ---- Bug 6: user code run before an `Op` recorded that it is finished -------------------------

/// `new::<1, 1>`: a recv holds the only slot, a send waits for it with a waker that panics.
/// Taking the recv's result frees the slot and hands it to the send (waking its waker): the
/// panic must not escape into the recv's poll, and the recv's result is its own.
#[test]
fn a_panicking_waiter_cannot_make_an_op_take_the_next_owners_result() {
    let (handle, lp) = start::<1, 1, 64>(config());
    let (a1, a2) = socket_pair();
    let (b1, _b2) = socket_pair();
    let mut recv = Box::pin(handle.recv(a2, IoBufMut::with_capacity(8)).limit(8));
    assert!(poll_once(recv.as_mut()).is_none());
    wait_until(HANG, "recv in flight", || handle.metrics().submitted == 1);
    let (count, waker) = panicking_waker();
    let mut send = Box::pin(handle.send(b1, IoBuf::from(&b"four"[..])));
    assert!(
        poll_with(send.as_mut(), &waker).is_none(),
        "waits for the slot"
    );
    (&*a1).write_all(b"ping").unwrap();
    wait_until(HANG, "recv done", || handle.metrics().completed == 1);
    let polled = catch_unwind(AssertUnwindSafe(|| poll_once(recv.as_mut())));
    let (buf, filled) = polled
        .expect("a waiter's panic must not escape into another caller's poll")
        .expect("recv is done")
        .unwrap();
    assert_eq!((filled, &buf[..]), (4, &b"ping"[..]));
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    assert_eq!(handle.metrics().user_panics, 1);
    let sent = block_on(HANG, send.as_mut()).unwrap();
    assert_eq!(&sent[..], b"four");
    drop(handle);
    lp.join(HANG).unwrap();
}

// ---- Bug 8: user wakers run under the wait-list mutex -----------------------------------------

/// A waiting caller whose waker, when woken by the close, drops another waiting `Op` (which
/// unlinks itself from the same wait list): dropping the last handle must return.
#[test]
fn a_waker_that_drops_another_waiter_does_not_deadlock_the_close() {
    type Waiting = Pin<Box<Op<op::Nop, 1, 1, 64>>>;
    struct DropsOther(Mutex<Option<Waiting>>);
    impl Wake for DropsOther {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            drop(self.0.lock().unwrap().take());
        }
    }
    let (handle, lp) = start::<1, 1, 64>(budget(Some(Duration::ZERO)));
    let (_a1, a2) = socket_pair();
    let held = handle.recv(a2, zeroed(4)).limit(4).try_submit().unwrap();
    wait_until(HANG, "slot taken", || handle.metrics().submitted == 1);
    let dropper = Arc::new(DropsOther(Mutex::new(None)));
    let mut first: Waiting = Box::pin(handle.nop());
    assert!(poll_with(first.as_mut(), &Waker::from(dropper.clone())).is_none());
    let mut second: Waiting = Box::pin(handle.nop());
    assert!(poll_once(second.as_mut()).is_none());
    *dropper.0.lock().unwrap() = Some(second);
    with_timeout(HANG, move || drop(handle));
    // The last handle's close or the loop's (whichever unlinks the waiter first) runs the waker.
    wait_until(HANG, "the waker ran and dropped the other op", || {
        dropper.0.lock().unwrap().is_none()
    });
    assert_eq!(poll_once(first.as_mut()), Some(Err(Error::Closed)));
    assert_eq!(
        with_timeout(HANG, move || held.wait()).unwrap_err().error,
        Error::Abandoned
    );
    lp.join(HANG).unwrap();
}

// ---- Bug 9: a waiter handed a slot must not take a second one ----------------------------------

/// `SLOTS = 2`: two recvs in flight, a third waits. Both finish: the first freed slot is handed
/// to the third's node, the second goes to the free list. The third must submit on the slot it
/// was handed, so one slot is still free for `try_nop`.
#[test]
fn a_granted_waiter_uses_its_grant_and_leaves_the_other_slot_free() {
    let (handle, lp) = start::<2, 2, 64>(config());
    let (a1, a2) = socket_pair();
    let (b1, b2) = socket_pair();
    let mut ra = Box::pin(handle.recv(a2, zeroed(4)).limit(4));
    let mut rb = Box::pin(handle.recv(b2, zeroed(4)).limit(4));
    assert!(poll_once(ra.as_mut()).is_none() && poll_once(rb.as_mut()).is_none());
    wait_until(HANG, "both in flight", || handle.metrics().submitted == 2);
    let (c1, c2) = socket_pair();
    let mut third = Box::pin(handle.recv(c2, zeroed(4)).limit(4));
    assert!(poll_once(third.as_mut()).is_none(), "no slot: waits");
    (&*a1).write_all(b"a").unwrap();
    (&*b1).write_all(b"b").unwrap();
    wait_until(HANG, "both done", || handle.metrics().completed == 2);
    assert!(poll_once(ra.as_mut()).unwrap().is_ok()); // frees a slot: granted to `third`
    assert!(poll_once(rb.as_mut()).unwrap().is_ok()); // frees the other: free list
    assert!(poll_once(third.as_mut()).is_none(), "submitted, in flight");
    // `third` is in flight: it holds exactly one slot, its grant.
    let extra = handle
        .nop()
        .try_submit()
        .expect("one slot is free: the waiter holds only its grant");
    (&*c1).write_all(b"c").unwrap();
    assert!(block_on(HANG, third.as_mut()).is_ok());
    assert_eq!(with_timeout(HANG, move || extra.wait()), Ok(()));
    drop(handle);
    lp.join(HANG).unwrap();
}

/// Waiters are served in order, and a newcomer does not overtake them.
#[test]
fn slot_waiters_are_served_first_come_first_served() {
    let (handle, lp) = start::<1, 1, 64>(config());
    let (a1, a2) = socket_pair();
    let mut held = Box::pin(handle.recv(a2, zeroed(4)).limit(4));
    assert!(poll_once(held.as_mut()).is_none());
    wait_until(HANG, "slot taken", || handle.metrics().submitted == 1);
    let mut first = Box::pin(handle.nop());
    let mut second = Box::pin(handle.nop());
    assert!(poll_once(first.as_mut()).is_none());
    assert!(poll_once(second.as_mut()).is_none());
    (&*a1).write_all(b"go").unwrap();
    wait_until(HANG, "recv done", || handle.metrics().completed == 1);
    assert!(poll_once(held.as_mut()).unwrap().is_ok()); // hands the slot to `first`
    let mut newcomer = Box::pin(handle.nop());
    assert!(
        poll_once(newcomer.as_mut()).is_none(),
        "a newcomer queues behind the waiters"
    );
    assert!(
        poll_once(second.as_mut()).is_none(),
        "second waits for first"
    );
    assert_eq!(block_on(HANG, first.as_mut()), Ok(()));
    assert_eq!(block_on(HANG, second.as_mut()), Ok(()));
    assert_eq!(block_on(HANG, newcomer.as_mut()), Ok(()));
    drop(handle);
    lp.join(HANG).unwrap();
}

// ---- Bug 10: blocking waiters and a concurrent close ------------------------------------------

/// Threads blocked in `.wait()` for a slot while the last handle goes: each gets a result or
/// `Closed`, none hangs. (The wait list now holds a thread handle, never a pointer into the
/// waiting frame; this exercises the close racing the waiters' exits.)
#[test]
fn blocking_waiters_racing_the_close_all_return() {
    for round in 0..20 {
        let (handle, lp) = start::<1, 1, 64>(budget(Some(Duration::ZERO)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = handle.clone();
                Background::spawn(move || {
                    (0..20)
                        .map(|_| h.nop().wait())
                        .filter(|r| *r == Err(Error::Closed))
                        .count()
                })
            })
            .collect();
        thread::sleep(Duration::from_micros(200 * round));
        drop(handle);
        for t in threads {
            t.join(HANG);
        }
        lp.join(HANG).unwrap();
    }
}

// ---- Bug 11: a dropped `Op` must not keep its waker ---------------------------------------------

/// Dropping an in-flight future releases its waker at once (not when the slot is reused), so the
/// caller's task is not kept alive or woken spuriously later.
#[test]
fn a_dropped_op_releases_its_waker() {
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a1, a2) = socket_pair();
    let quiet = Arc::new(Quiet);
    let waker = Waker::from(quiet.clone());
    // The test keeps its own reference to `a2`: an orphan the loop retires before staging it
    // drops the op's descriptor at once, and the late write must still find the socket open.
    let mut op = Box::pin(handle.recv(a2.clone(), zeroed(4)).limit(4));
    assert!(poll_with(op.as_mut(), &waker).is_none());
    drop(waker);
    assert_eq!(
        Arc::strong_count(&quiet),
        2,
        "the slot holds the registered waker"
    );
    drop(op);
    assert_eq!(
        Arc::strong_count(&quiet),
        1,
        "dropping the op released the waker"
    );
    (&*a1).write_all(b"late").unwrap();
    wait_until(HANG, "orphan retired", || handle.metrics().orphaned == 1);
    drop(handle);
    lp.join(HANG).unwrap();
    drop(a2);
}

// ---- Bug 13: static buffers keep their capacity -------------------------------------------------

/// A `&'static mut` buffer reused recv after recv: a short recv and `clear` must not shrink what
/// the next recv may fill.
#[test]
fn a_static_buffer_is_reusable_after_a_short_recv() {
    static STORAGE: Storage<4, 4, 64> = Storage::new();
    let (handle, event_loop) = static_uring::with_storage(&STORAGE, config()).unwrap();
    let lp = LoopThread::spawn(event_loop);
    let (a1, a2) = socket_pair();
    let bytes: &'static mut [u8] = Box::leak(vec![0u8; 16].into_boxed_slice());
    let mut buf = IoBufMut::from(bytes);
    buf.clear();
    (&*a1).write_all(b"abc").unwrap();
    let (mut buf, filled) = with_timeout(HANG, {
        let h = handle.clone();
        let a2 = a2.clone();
        move || h.recv(a2, buf).limit(16).wait()
    })
    .unwrap();
    assert_eq!((filled, buf.capacity()), (3, 16));
    buf.clear();
    (&*a1).write_all(&[7u8; 16]).unwrap();
    let (buf, filled) = with_timeout(HANG, {
        let h = handle.clone();
        move || h.recv(a2, buf).exact(16).wait()
    })
    .unwrap();
    assert_eq!((filled, &buf[..]), (16, &[7u8; 16][..]));
    drop(handle);
    lp.join(HANG).unwrap();
}
