//! Loop-thread mode (`EventLoop::block_on`): a future run on the loop thread itself submits
//! without a cross-thread hop, while handles on other threads keep working.

mod common;

use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use static_uring::{Config, Error, IoBufMut};

/// Requests awaited together by the local future enter the kernel in the same `io_uring_enter`
/// and no eventfd is written for them; `block_on` returns the future's output after the drain.
#[test]
fn local_requests_share_enters_and_need_no_eventfd() {
    let (handle, event_loop) = static_uring::new::<16, 16, 64>(config()).unwrap();
    let reader = event_loop.metrics_reader();
    let result = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let before = handle.metrics();
            let nops: Vec<_> = (0..8).map(|_| handle.nop()).collect();
            let results = join_all(nops).await;
            let after = handle.metrics();
            (results, before, after)
        })
    })
    .unwrap();
    let (results, before, after) = result;
    assert!(results.iter().all(|r| *r == Ok(())));
    assert_eq!(after.submitted - before.submitted, 8);
    assert_eq!(
        after.wakeups, before.wakeups,
        "no eventfd for loop-thread requests"
    );
    assert!(
        after.enters - before.enters <= 3,
        "8 nops in {} enters",
        after.enters - before.enters
    );
    assert_eq!(reader.get().pending_operations, 0);
}

/// Handles on other threads are served while the local future waits, and can wake it: here the
/// local future's recv is satisfied by another thread's write.
#[test]
fn other_threads_keep_working_during_block_on() {
    let (handle, event_loop) = static_uring::new::<16, 16, 64>(config()).unwrap();
    let (a, b) = socket_pair();
    let remote = handle.clone();
    let helper = thread::spawn(move || {
        for _ in 0..50 {
            remote.nop().wait().unwrap();
        }
        thread::sleep(Duration::from_millis(20));
        (&*a).write_all(b"wake").unwrap();
    });
    let got = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let (buf, _) = handle
                .recv(b, IoBufMut::with_capacity(4))
                .exact(4)
                .await
                .unwrap();
            buf.to_vec()
        })
    })
    .unwrap();
    helper.join().unwrap();
    assert_eq!(got, b"wake");
}

/// With no handle left before the future finishes, the loop drains and `block_on` is `Closed`.
#[test]
fn block_on_without_handles_ends_closed() {
    let (handle, event_loop) = static_uring::new::<16, 16, 64>(config()).unwrap();
    drop(handle);
    let result = with_timeout(HANG, move || {
        event_loop.block_on(std::future::pending::<()>())
    });
    assert_eq!(result, Err(Error::Closed));
}

/// A spinning loop (`idle_spin`) and a single-issuer ring run the local future too.
#[test]
fn block_on_with_spin_and_single_issuer() {
    for config in [
        Config {
            idle_spin: Duration::from_micros(50),
            ..config()
        },
        Config {
            single_issuer: true,
            ..config()
        },
    ] {
        let (handle, event_loop) = static_uring::new::<16, 16, 64>(config).unwrap();
        let n = with_timeout(HANG, move || {
            event_loop.block_on(async move {
                for _ in 0..100 {
                    handle.nop().await.unwrap();
                }
                100
            })
        })
        .unwrap();
        assert_eq!(n, 100);
    }
}

/// A future that wakes itself on the loop thread (a yield) is polled again without sleeping
/// and without an eventfd write: the loop's own wakes are a plain flag the loop reads before it
/// decides to sleep. With `idle_spin` 0 and nothing in the kernel, a loop that missed the flag
/// would sleep for good (the bounded wait fails the test instead).
#[test]
fn a_future_that_wakes_itself_on_the_loop_thread_runs_on_without_the_eventfd() {
    let (handle, event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    let reader = event_loop.metrics_reader();
    let mut handle = Some(handle);
    let mut polls = 0u32;
    let polled = with_timeout(HANG, move || {
        event_loop
            .block_on(std::future::poll_fn(move |cx| {
                polls += 1;
                if polls == 1000 {
                    drop(handle.take());
                    return std::task::Poll::Ready(polls);
                }
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }))
            .unwrap()
    });
    assert_eq!(polled, 1000);
    // At most the one the last handle's exit rings; none of the 999 self-wakes.
    assert!(reader.get().wakeups <= 1, "{:?}", reader.get());
}

/// Temp files opened after a loop is gone: the lowest free descriptors, so one of them reuses
/// the number the loop's eventfd had.
fn reuse_descriptors() -> Vec<TempFile> {
    (0..8).map(|_| TempFile::new()).collect()
}

/// Wakes `waker` from another thread (a wake on the loop thread writes no eventfd).
fn wake_elsewhere(waker: std::task::Waker) {
    thread::spawn(move || {
        waker.wake_by_ref();
        waker.wake();
    })
    .join()
    .unwrap();
}

/// Issue 16, item 1: a waker kept past `block_on` may be woken at any later time, after the loop
/// and its storage are gone, without writing into a descriptor that reused the eventfd's number.
#[test]
fn a_waker_kept_past_block_on_touches_nothing_when_woken() {
    let kept = Arc::new(Mutex::new(None::<std::task::Waker>));
    let k = kept.clone();
    let (handle, event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    let mut handle = Some(handle);
    with_timeout(HANG, move || {
        event_loop
            .block_on(std::future::poll_fn(move |cx| {
                *k.lock().unwrap() = Some(cx.waker().clone());
                drop(handle.take());
                std::task::Poll::Ready(())
            }))
            .unwrap()
    });
    // The loop and its heap storage (and so its eventfd) are gone now.
    let files = reuse_descriptors();
    let waker = kept.lock().unwrap().take().unwrap();
    wake_elsewhere(waker.clone());
    for file in &files {
        assert!(
            file.contents().is_empty(),
            "a stale waker wrote into a reused descriptor"
        );
    }
    drop(waker);
}

/// Issue 16, item 4: `block_on` drops the future as soon as it is ready, so a `Handle` it owns
/// does not keep the loop serving (the drain waits for every handle).
#[test]
fn block_on_returns_when_the_finished_future_owned_a_handle() {
    let (handle, event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    let result = with_timeout(HANG, move || {
        event_loop.block_on(std::future::poll_fn(move |_| {
            let _ = &handle;
            std::task::Poll::Ready(5)
        }))
    });
    assert_eq!(result, Ok(5));
}

/// The panic message of a `catch_unwind` payload.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    }
}

/// Issue 16, item 10: `.wait()` on the loop thread would block the only thread that can complete
/// it: it panics at once with a message that says what to do, never hangs.
#[test]
fn wait_on_the_loop_thread_fails_fast() {
    let (handle, event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    let outcome = with_timeout(HANG, move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            event_loop.block_on(async move { handle.nop().wait() })
        }))
    });
    let message = panic_message(outcome.expect_err(".wait() on the loop thread must panic"));
    assert!(message.contains("loop thread"), "{message}");
    assert!(message.contains(".await"), "{message}");
}

/// An operation of another loop may be waited for on a loop thread: that loop completes it.
#[test]
fn wait_for_another_loops_operation_on_a_loop_thread_works() {
    let (other, other_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    let lp = LoopThread::spawn(other_loop);
    let (handle, event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    let result = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let _keep = handle;
            other.nop().wait()
        })
    });
    assert_eq!(result, Ok(Ok(())));
    lp.join(HANG).unwrap();
}

/// Slots the loop thread frees go to its private stack (no atomics) while nobody waits, and back
/// to the shared list at the end of the pass: another thread's `try_submit` after that pass finds
/// them free. Here the local future frees both slots of a two-slot table, takes one back for a
/// recv and waits; the other thread's `try_submit` must then get the second slot.
#[test]
fn slots_freed_on_the_loop_thread_reach_other_threads_by_the_end_of_the_pass() {
    slots_freed_on_the_loop_thread_reach_other_threads(config());
}

/// The same with an idle spin: the loop then reaps what its enter completed at once before it
/// spins (`reaped_work`), and keeps the freed slots private only while it goes round.
#[test]
fn slots_freed_on_the_loop_thread_reach_other_threads_when_the_loop_spins() {
    slots_freed_on_the_loop_thread_reach_other_threads(spinning());
}

/// The test config with a spin budget (the default policy's 50 us) instead of none.
fn spinning() -> Config {
    Config {
        idle_spin: Duration::from_micros(50),
        ..config()
    }
}

fn slots_freed_on_the_loop_thread_reach_other_threads(config: Config) {
    let (handle, event_loop) = static_uring::new::<2, 2, 64>(config).unwrap();
    let (a, b) = socket_pair();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let remote = handle.clone();
    let helper = thread::spawn(move || {
        go_rx.recv().unwrap();
        // The local future parks in its recv, which ends the loop's pass and hands the kept slot
        // back; the loop then sleeps until this thread writes. No timing assumed: retry for a
        // generous while. Without the hand-back the slot stays private for good (the loop has
        // no further pass before the write below), so every try is `Full`.
        let give_up = std::time::Instant::now() + Duration::from_secs(5);
        let submitted = loop {
            match remote.nop().try_submit() {
                Ok(op) => {
                    op.wait().unwrap();
                    break true;
                }
                Err(Error::Full) if std::time::Instant::now() < give_up => {
                    thread::sleep(Duration::from_millis(1));
                }
                Err(_) => break false,
            }
        };
        (&*a).write_all(b"x").unwrap();
        submitted
    });
    let got = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let both = join_all([handle.nop(), handle.nop()]).await;
            assert!(both.iter().all(|r| *r == Ok(())));
            go_tx.send(()).unwrap();
            let (buf, _) = handle
                .recv(b, IoBufMut::with_capacity(1))
                .exact(1)
                .await
                .unwrap();
            buf.to_vec()
        })
    })
    .unwrap();
    assert_eq!(got, b"x");
    assert!(
        helper.join().unwrap(),
        "a slot freed on the loop thread was still hidden from another thread after the pass"
    );
}

/// The loop thread's private hand-off and the shared one on one tiny table: the local future
/// keeps both slots busy while two other threads `.wait()` for slots all along. Nobody starves
/// (slots go to waiting threads in FIFO order), nothing is lost: at the end both slots are free
/// again.
#[test]
fn loop_thread_and_remote_callers_share_a_tiny_table() {
    share_a_tiny_table(config());
}

/// The same with an idle spin (`reaped_work` keeps freed slots private while the loop goes
/// round): the waiting threads still get their turns.
#[test]
fn loop_thread_and_remote_callers_share_a_tiny_table_when_the_loop_spins() {
    share_a_tiny_table(spinning());
}

fn share_a_tiny_table(config: Config) {
    let (handle, event_loop) = static_uring::new::<2, 2, 64>(config).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let remotes: Vec<_> = (0..2)
        .map(|_| {
            let (remote, done) = (handle.clone(), done.clone());
            thread::spawn(move || {
                for _ in 0..300 {
                    remote.nop().wait().unwrap();
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Release);
            })
        })
        .collect();
    let local_ops = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let mut n = 0u64;
            while done.load(std::sync::atomic::Ordering::Acquire) < 2 {
                let pair = join_all([handle.nop(), handle.nop()]).await;
                assert!(pair.iter().all(|r| *r == Ok(())));
                n += 2;
            }
            // Every slot is free again: two at once succeed.
            let a = handle.nop().try_submit().expect("slot 1 free");
            let b = handle.nop().try_submit().expect("slot 2 free");
            assert_eq!(join_all([a, b]).await, [Ok(()), Ok(())]);
            n
        })
    })
    .unwrap();
    for remote in remotes {
        remote.join().unwrap();
    }
    assert!(local_ops > 0);
}

/// A `block_on` future that panics with slots on the loop thread's private stack (it freed them
/// in the same poll) leaves none stranded: a static storage claimed again has every slot free.
#[test]
fn a_panic_on_the_loop_thread_strands_no_privately_kept_slot() {
    static STORAGE: static_uring::Storage<2, 2, 64> = static_uring::Storage::new();
    let (handle, event_loop) = static_uring::with_storage(&STORAGE, config()).unwrap();
    let panicked = with_timeout(HANG, move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            event_loop.block_on(async move {
                let both = join_all([handle.nop(), handle.nop()]).await;
                assert!(both.iter().all(|r| *r == Ok(())));
                panic!("the local future fails with both slots just freed");
            })
        }))
        .is_err()
    });
    assert!(panicked);
    let (handle, event_loop) = static_uring::with_storage(&STORAGE, config()).unwrap();
    let a = handle
        .nop()
        .try_submit()
        .expect("slot 1 free after the panic");
    let b = handle
        .nop()
        .try_submit()
        .expect("slot 2 free after the panic");
    let thread = thread::spawn(move || event_loop.run());
    assert_eq!(a.wait(), Ok(()));
    assert_eq!(b.wait(), Ok(()));
    drop(handle);
    thread.join().unwrap().unwrap();
}

/// A waker whose clone panics (user code is hostile).
fn waker_whose_clone_panics() -> std::task::Waker {
    use std::task::{RawWaker, RawWakerVTable, Waker};
    fn clone(_: *const ()) -> RawWaker {
        panic!("this waker's clone panics")
    }
    fn ignore(_: *const ()) {}
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, ignore, ignore, ignore);
    // SAFETY: every function of the vtable ignores the data pointer, which is never read.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
}

/// The first poll of an operation on the loop thread clones the task's waker; if the clone
/// panics, the request is already admitted and owned by the operation, whose drop orphans it:
/// no slot is left half-owned (a static storage claimed again has both slots free).
#[test]
fn a_panicking_waker_clone_on_the_loop_thread_strands_no_slot() {
    static STORAGE: static_uring::Storage<2, 2, 64> = static_uring::Storage::new();
    let (handle, event_loop) = static_uring::with_storage(&STORAGE, config()).unwrap();
    let panics = with_timeout(HANG, move || {
        event_loop
            .block_on(async move {
                let waker = waker_whose_clone_panics();
                let mut panics = 0;
                for _ in 0..2 {
                    let mut op = std::pin::pin!(handle.nop());
                    let mut cx = std::task::Context::from_waker(&waker);
                    let poll = std::panic::AssertUnwindSafe(|| op.as_mut().poll(&mut cx));
                    panics += usize::from(std::panic::catch_unwind(poll).is_err());
                }
                panics
            })
            .unwrap()
    });
    assert_eq!(panics, 2, "each first poll cloned the waker");
    let (handle, event_loop) = static_uring::with_storage(&STORAGE, config()).unwrap();
    let a = handle.nop().try_submit().expect("slot 1 free again");
    let b = handle.nop().try_submit().expect("slot 2 free again");
    let thread = thread::spawn(move || event_loop.run());
    assert_eq!(a.wait(), Ok(()));
    assert_eq!(b.wait(), Ok(()));
    drop(handle);
    thread.join().unwrap().unwrap();
}

/// An operation first polled on the loop thread leaves its waker in the loop's private cell; if
/// it then moves to another thread and is awaited there, the loop wakes that thread's waker (the
/// move clears the private mark with an RMW), not the stale one. A lost wake shows as a timeout.
#[test]
fn an_operation_first_polled_on_the_loop_thread_is_woken_on_another() {
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    let (a, b) = socket_pair();
    let (done_tx, done_rx) = socket_pair();
    type Recv = static_uring::Op<static_uring::op::Recv, 4, 4, 64>;
    let (tx, rx) = std::sync::mpsc::channel::<std::pin::Pin<Box<Recv>>>();
    let helper = thread::spawn(move || {
        let mut op = rx.recv().unwrap();
        // The first poll here registers this thread's waker; then the data arrives.
        assert!(poll_once(op.as_mut()).is_none(), "nothing to receive yet");
        (&*a).write_all(b"m").unwrap();
        let (buf, _) = poll_only_when_woken(op).expect("recv");
        (&*done_tx).write_all(b"d").unwrap();
        buf.to_vec()
    });
    with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let mut op = Box::pin(handle.recv(b, IoBufMut::with_capacity(1)).exact(1));
            // One poll on the loop thread: submitted, its waker in the loop's private cell.
            let first = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(op.as_mut().poll(cx).is_pending())
            })
            .await;
            assert!(first, "nothing to receive yet");
            tx.send(op).unwrap();
            // Serve until the other thread has its result.
            handle
                .recv(done_rx, IoBufMut::with_capacity(1))
                .exact(1)
                .await
                .unwrap();
        })
    })
    .unwrap();
    assert_eq!(helper.join().unwrap(), b"m");
}

/// Drives `fut` on this thread, polling it again only when its waker is woken: a wake that
/// never comes fails (after 5 s) instead of being papered over by a timed re-poll.
fn poll_only_when_woken<F: Future + Unpin>(mut fut: F) -> F::Output {
    struct Flag(Mutex<bool>, std::sync::Condvar);
    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            *self.0.lock().unwrap() = true;
            self.1.notify_all();
        }
    }
    let flag = Arc::new(Flag(Mutex::new(false), std::sync::Condvar::new()));
    let waker = std::task::Waker::from(flag.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(out) = std::pin::Pin::new(&mut fut).poll(&mut cx) {
            return out;
        }
        let woken = flag.0.lock().unwrap();
        let (mut woken, _) = flag
            .1
            .wait_timeout_while(woken, Duration::from_secs(5), |w| !*w)
            .unwrap();
        assert!(*woken, "the operation's waker was never woken");
        *woken = false;
    }
}

/// A loop-thread request the loop cannot stage at its first poll (here: it has a deadline, which
/// the loop's staging schedules) is admitted into the loop's private queue; one dropped before
/// the loop stages it follows its operation's drop rule: a `recv` is retired without ever
/// reaching the kernel (it consumes nothing), a `write_at` still runs.
#[test]
fn a_loop_thread_request_dropped_before_staging_follows_its_drop_rule() {
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    let (a, b) = socket_pair();
    let file = TempFile::new();
    let path_file = file.file.clone();
    let got = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let before = handle.metrics();
            // Polled once (submitted, not yet staged: it has a deadline), then dropped in the
            // same poll.
            let mut recv = Box::pin(
                handle
                    .recv(b.clone(), IoBufMut::with_capacity(1))
                    .exact(1)
                    .timeout(Duration::from_secs(60)),
            );
            let mut write =
                Box::pin(handle.write_at(path_file, 0, static_uring::IoBuf::from(&b"kept"[..])));
            std::future::poll_fn(|cx| {
                assert!(recv.as_mut().poll(cx).is_pending());
                assert!(write.as_mut().poll(cx).is_pending());
                std::task::Poll::Ready(())
            })
            .await;
            drop(recv);
            drop(write);
            (&*a).write_all(b"x").unwrap();
            let (buf, _) = handle
                .recv(b, IoBufMut::with_capacity(1))
                .exact(1)
                .await
                .unwrap();
            let after = handle.metrics();
            (buf.to_vec(), after.orphaned - before.orphaned)
        })
    })
    .unwrap();
    assert_eq!(got.0, b"x", "the dropped recv consumed nothing");
    assert!(got.1 >= 1, "the dropped recv was retired as an orphan");
    wait_until(HANG, "the dropped write to land", || {
        file.contents() == b"kept"
    });
}

/// A loop-thread request without a deadline is staged at its first poll (its SQE goes into the
/// SQ at once, submitted with the pass): dropping it after that poll is dropping a request in
/// flight. With `cancel_on_drop` the loop cancels it in the same pass (the AsyncCancel follows
/// the recv into the kernel), so with no data to receive yet it consumes nothing: the byte
/// written afterwards reaches the next recv, and the orphan's slot is free again.
#[test]
fn a_loop_thread_request_is_in_flight_after_its_first_poll_and_a_dropped_one_is_cancelled() {
    let config = Config {
        cancel_on_drop: true,
        ..config()
    };
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(config).unwrap();
    let (a, b) = socket_pair();
    let reader = event_loop.metrics_reader();
    let got = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let before = handle.metrics();
            let mut recv = Box::pin(handle.recv(b.clone(), IoBufMut::with_capacity(1)).exact(1));
            std::future::poll_fn(|cx| {
                assert!(recv.as_mut().poll(cx).is_pending());
                std::task::Poll::Ready(())
            })
            .await;
            let staged = handle.metrics().submitted - before.submitted;
            drop(recv);
            // A nop round trip: the pass that submits the recv and its cancel has run.
            handle.nop().await.unwrap();
            (&*a).write_all(b"x").unwrap();
            let (buf, _) = handle
                .recv(b, IoBufMut::with_capacity(1))
                .exact(1)
                .await
                .unwrap();
            (buf.to_vec(), staged)
        })
    })
    .unwrap();
    assert_eq!(got.1, 1, "the recv's SQE was staged at its first poll");
    assert_eq!(got.0, b"x", "the cancelled recv consumed nothing");
    let metrics = reader.get();
    assert_eq!(metrics.cancel_sqes, 1, "{metrics:?}");
    assert_eq!(metrics.orphaned, 1, "{metrics:?}");
    assert_eq!(metrics.pending_operations, 0, "{metrics:?}");
}

/// Deadlines hold for loop-thread operations as for any: a recv with nothing to receive ends
/// `Timeout` (buffer back) no earlier than its deadline, and the loop goes on serving.
#[test]
fn a_loop_thread_deadline_fires_and_hands_the_buffer_back() {
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    let (_a, b) = socket_pair();
    let (waited, error, cap, after) = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let start = std::time::Instant::now();
            let err = handle
                .recv(b, IoBufMut::with_capacity(8))
                .timeout(Duration::from_millis(30))
                .await
                .expect_err("nothing to receive");
            let waited = start.elapsed();
            let after = handle.nop().await;
            (waited, err.error, err.buf.capacity(), after)
        })
    })
    .unwrap();
    assert_eq!(error, Error::Timeout);
    assert!(
        waited >= Duration::from_millis(30),
        "fired early: {waited:?}"
    );
    assert_eq!(cap, 8, "the buffer comes back");
    assert_eq!(after, Ok(()));
}

/// The drain runs a loop-thread request left in flight when the future finished: a dropped
/// `write_at` (durable: it always runs) lands before `block_on` returns.
#[test]
fn the_drain_finishes_what_the_loop_thread_left_in_flight() {
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    let file = TempFile::new();
    let target = file.file.clone();
    with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let op = handle
                .write_at(target, 0, static_uring::IoBuf::from(&b"drained"[..]))
                .try_submit()
                .expect("a free slot");
            drop(op);
            drop(handle);
        })
    })
    .unwrap();
    assert_eq!(file.contents(), b"drained");
}

/// With a zero shutdown timeout, a loop-thread recv still in the kernel when the handles are gone
/// is abandoned: `block_on` returns at once, after an AsyncCancel; its slot is parked only if the
/// kernel had not released it (a socket recv is released by the cancel at once).
#[test]
fn a_loop_thread_request_left_in_the_kernel_is_abandoned_at_a_zero_timeout() {
    let config = Config {
        shutdown_timeout: Some(Duration::ZERO),
        ..config()
    };
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(config).unwrap();
    let reader = event_loop.metrics_reader();
    let (_a, b) = socket_pair();
    with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let mut recv = Box::pin(handle.recv(b, IoBufMut::with_capacity(8)));
            // Submitted and staged: the next pass puts it in the kernel.
            assert!(poll_once(recv.as_mut()).is_none());
            handle.nop().await.unwrap();
            // Orphaned (recv is retired at its next completion, which never comes) and no
            // handle left: the drain abandons it.
            drop(recv);
            drop(handle);
        })
    })
    .unwrap();
    let metrics = reader.get();
    assert_eq!(metrics.abandoned, 1, "{metrics:?}");
    assert_eq!(metrics.orphaned, 1, "{metrics:?}");
    assert!(metrics.cancel_sqes >= 1, "{metrics:?}");
    assert!(metrics.parked <= 1, "{metrics:?}");
    assert_eq!(metrics.pending_operations, 0, "{metrics:?}");
}

/// One pool task of the mixed stress test: until `until`, a pseudo-random mix of awaited nops,
/// pairs of nops, recvs that time out (buffer back), operations dropped after one poll, and
/// `try_submit`s dropped at once.
async fn mixed_local_task(
    handle: static_uring::Handle<4, 4, 64>,
    seed: u64,
    until: std::time::Instant,
    sock: Arc<std::os::unix::net::UnixStream>,
) {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    while std::time::Instant::now() < until {
        match next() % 5 {
            0 => handle.nop().await.unwrap(),
            1 => {
                let both = join_all([handle.nop(), handle.nop()]).await;
                assert!(both.iter().all(|r| r.is_ok()));
            }
            2 => {
                let err = handle
                    .recv(sock.clone(), IoBufMut::with_capacity(4))
                    .timeout(Duration::from_millis(1))
                    .await
                    .expect_err("nothing is ever sent");
                assert_eq!(err.error, Error::Timeout);
                assert_eq!(err.buf.capacity(), 4, "the buffer comes back");
            }
            3 => {
                let mut op = Box::pin(handle.nop());
                std::future::poll_fn(|cx| {
                    let _ = op.as_mut().poll(cx);
                    std::task::Poll::Ready(())
                })
                .await;
                drop(op);
            }
            _ => drop(handle.nop().try_submit()),
        }
    }
}

/// Loop-thread operations (private free stack, private queue, private wakers) and remote ones
/// (shared list, ring, wait list) mixed on a 4-slot table for half a second: waits, timeouts,
/// drops after one poll and dropped `try_submit`s on both sides. Nothing hangs or is lost: every
/// caller finishes, and at the end every slot is free again.
#[test]
fn loop_thread_and_remote_operations_mix_on_a_tiny_table() {
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    let reader = event_loop.metrics_reader();
    let until = std::time::Instant::now() + Duration::from_millis(500);
    let (_a, b) = socket_pair();
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(2));
    let remotes: Vec<_> = (0..2u64)
        .map(|t| {
            let (remote, running) = (handle.clone(), running.clone());
            thread::spawn(move || {
                let mut n = 0u64;
                while std::time::Instant::now() < until {
                    match (n + t) % 3 {
                        0 => remote.nop().wait().unwrap(),
                        1 => {
                            let _ = remote.nop().timeout(Duration::from_millis(50)).wait();
                        }
                        _ => drop(remote.nop().try_submit()),
                    }
                    n += 1;
                }
                running.fetch_sub(1, std::sync::atomic::Ordering::Release);
                n
            })
        })
        .collect();
    let pool = static_uring::TaskPool::<_, 8>::leak();
    let spawner = handle.clone();
    let main = async move {
        for seed in 0..8u64 {
            let task =
                mixed_local_task(spawner.clone(), 0x9e37_79b9 * (seed + 1), until, b.clone());
            assert!(pool.spawn(task).is_ok());
        }
    };
    let last = handle.clone();
    drop(handle);
    let free_at_end = with_timeout(HANG, move || {
        event_loop
            .block_on(async move {
                pool.run(main).await;
                // The remote callers finish; their dropped requests (and ours) retire at their
                // completions, a pass or two later.
                while running.load(std::sync::atomic::Ordering::Acquire) > 0 {
                    last.nop().await.unwrap();
                }
                let give_up = std::time::Instant::now() + Duration::from_secs(5);
                loop {
                    // Every slot is free again: four at once.
                    let ops: Vec<_> = (0..4)
                        .filter_map(|_| last.nop().try_submit().ok())
                        .collect();
                    let got = ops.len();
                    assert!(join_all(ops).await.iter().all(|r| r.is_ok()));
                    if got == 4 || std::time::Instant::now() > give_up {
                        break got;
                    }
                }
            })
            .unwrap()
    });
    assert_eq!(free_at_end, 4, "slots still taken once everything finished");
    for remote in remotes {
        assert!(remote.join().unwrap() > 0);
    }
    assert_eq!(pool.panics(), 0);
    assert_eq!(reader.get().pending_operations, 0);
}

/// The drain serves what is still in the loop thread's private queue: with one ring entry, the
/// second of two durable writes dropped in the last poll waits there when the loop starts its
/// drain; it must still land (a dropped `write_at` always runs), not be answered `Closed`.
#[test]
fn the_drain_serves_the_loop_threads_queue_too() {
    let (handle, event_loop) = static_uring::new::<4, 1, 64>(config()).unwrap();
    let file = TempFile::new();
    let target = file.file.clone();
    with_timeout(HANG, move || {
        event_loop.block_on(async move {
            for (at, bytes) in [(0, &b"first "[..]), (6, &b"second"[..])] {
                let op = handle
                    .write_at(target.clone(), at, static_uring::IoBuf::from(bytes))
                    .try_submit()
                    .expect("a free slot");
                drop(op);
            }
            drop(handle);
        })
    })
    .unwrap();
    assert_eq!(file.contents(), b"first second");
}

/// A future that is pending until `open` is set, keeping the waker it was last polled with
/// for whoever opens it.
struct Gate {
    open: Arc<std::sync::atomic::AtomicBool>,
    waker: Arc<Mutex<Option<std::task::Waker>>>,
}

impl Future for Gate {
    type Output = ();
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        if self.open.load(std::sync::atomic::Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

use std::task::Poll;

/// A pool run by `block_on` keeps its runner's waker registered while the loop's completions
/// wake its tasks on the loop thread (the pool sets `block_on`'s flag in place). Between runs of
/// nops, a task waits for a wake from another thread, twice: the first remote wake takes the
/// kept waker out of the pool's cell, so the runner must register it again before the second
/// (a runner that kept skipping its registration would sleep through that one: the bounded
/// wait fails the test). With `idle_spin` 0 every nop's completion is delivered while the loop
/// would otherwise sleep, so a completion wake lost on the loop thread hangs too.
#[test]
fn a_pool_on_block_on_is_woken_by_completions_here_and_by_other_threads_again_and_again() {
    let (handle, event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    let reader = event_loop.metrics_reader();
    let gates: Vec<_> = (0..2)
        .map(|_| {
            (
                Arc::new(std::sync::atomic::AtomicBool::new(false)),
                Arc::new(Mutex::new(None::<std::task::Waker>)),
            )
        })
        .collect();
    let opener = {
        let gates = gates.clone();
        thread::spawn(move || {
            for (open, waker) in &gates {
                // Wait for the task to park on this gate, then open it from here.
                let waker = loop {
                    if let Some(waker) = waker.lock().unwrap().take() {
                        break waker;
                    }
                    thread::sleep(Duration::from_millis(1));
                };
                open.store(true, std::sync::atomic::Ordering::Release);
                waker.wake();
            }
        })
    };
    let nops = with_timeout(HANG, move || {
        let pool = static_uring::TaskPool::<_, 2>::leak();
        let counted = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let c = counted.clone();
        event_loop
            .block_on(pool.run(async move {
                let (io, c) = (handle.clone(), c.clone());
                let task = async move {
                    for (open, waker) in gates {
                        for _ in 0..200 {
                            io.nop().await.unwrap();
                            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Gate { open, waker }.await;
                    }
                    for _ in 0..200 {
                        io.nop().await.unwrap();
                        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                };
                assert!(pool.spawn(task).is_ok());
                drop(handle);
            }))
            .unwrap();
        counted.load(std::sync::atomic::Ordering::Relaxed)
    });
    opener.join().unwrap();
    assert_eq!(nops, 600);
    assert_eq!(reader.get().completed, 600);
}
