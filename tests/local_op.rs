//! `LocalOp` (`Op::local`): an operation that never leaves its thread. On the loop thread the
//! loop finishes its request with a plain store instead of a compare-exchange; everything a
//! caller sees (results, deadlines, drop rules, the loop closing under it) is an `Op`'s.
//! (Deadlines: the stress test below; loop_thread.rs has the same for a plain `Op`.)

mod common;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use static_uring::{Config, Error, IoBuf, IoBufMut, LocalOp, Metrics, TaskPool};

type Recv = LocalOp<static_uring::op::Recv, 4, 4, 64>;

/// Local operations of several kinds complete with the results an `Op` gives, one after the
/// other and many in flight at once.
#[test]
fn local_operations_give_the_results_of_ops() {
    let (handle, event_loop) = static_uring::new::<16, 16, 64>(config()).unwrap();
    let (a, b) = socket_pair();
    let file = TempFile::with_contents(b"local bytes");
    let target = file.read_only();
    let reader = event_loop.metrics_reader();
    let got = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let nops: Vec<_> = (0..12).map(|_| handle.nop().local()).collect();
            let nops = join_all(nops).await;
            let sent = handle
                .send(a, IoBuf::from(&b"ping"[..]))
                .local()
                .await
                .unwrap();
            let (received, _) = handle
                .recv(b, IoBufMut::with_capacity(4))
                .exact(4)
                .local()
                .await
                .unwrap();
            let read = handle
                .read_at(target, 6, IoBufMut::with_capacity(5))
                .local()
                .await
                .unwrap();
            (nops, sent.to_vec(), received.to_vec(), read.to_vec())
        })
    })
    .unwrap();
    assert!(got.0.iter().all(|r| *r == Ok(())), "{:?}", got.0);
    assert_eq!(got.1, b"ping", "the send's buffer comes back");
    assert_eq!(got.2, b"ping");
    assert_eq!(got.3, b"bytes");
    let metrics = reader.get();
    assert_eq!(metrics.completed, 15, "{metrics:?}");
    assert_eq!(metrics.pending_operations, 0, "{metrics:?}");
}

/// A local send longer than the socket's buffer goes out in several SQEs (the kernel takes a
/// part at a time, the loop resubmits the rest, as for any `Op`), while a local receive of the
/// whole length runs beside it: every byte arrives, in order, and both buffers come back.
#[test]
fn a_local_transfer_larger_than_the_socket_buffer_arrives_whole() {
    const LEN: usize = 1 << 20;
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    let (a, b) = socket_pair();
    set_sndbuf(&*a, 16 * 1024);
    let bytes: Vec<u8> = (0..LEN).map(|i| (i * 7 % 251) as u8).collect();
    let reader = event_loop.metrics_reader();
    let sent_bytes = IoBuf::from(bytes.clone());
    let (sent, received) = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let send = handle.send(a, sent_bytes).local();
            let recv = handle
                .recv(b, IoBufMut::with_capacity(LEN))
                .exact(LEN)
                .local();
            join2(send, recv).await
        })
    })
    .unwrap();
    assert_eq!(
        sent.unwrap().len(),
        LEN,
        "the send's buffer comes back whole"
    );
    let (received, n) = received.unwrap();
    assert_eq!(n, LEN);
    assert!(received[..] == bytes[..], "the bytes arrive in order");
    let metrics = reader.get();
    assert_eq!(metrics.completed, 2, "{metrics:?}");
    assert!(
        metrics.requeued > 0 && metrics.submitted == 2 + metrics.requeued,
        "a transfer this long takes more than one SQE, each short one resubmitted: {metrics:?}"
    );
}

/// A loop of one slot whose wheel's horizon is short: 8 ticks of 1 ms.
fn one_slot_short_wheel() -> (
    static_uring::Handle<1, 1, 8>,
    static_uring::EventLoop<1, 1, 8>,
) {
    let config = Config {
        timeout_wheel_tick: Duration::from_millis(1),
        ..config()
    };
    static_uring::new::<1, 1, 8>(config).unwrap()
}

/// A local recv whose deadline lies far beyond the wheel's horizon (8 ticks of 1 ms, a deadline
/// of 400 ms): the wheel re-arms it each time it comes round, reading the deadline from the
/// future that holds the request, so it neither fires early (its bytes come at 100 ms) nor
/// leaves a timer behind when it finishes first: the one slot's next request, with no
/// deadline, waits past the first one's deadline and gets its bytes, not `Timeout`.
#[test]
fn a_local_operation_finished_before_its_deadline_leaves_no_timer() {
    let (handle, event_loop) = one_slot_short_wheel();
    let reader = event_loop.metrics_reader();
    let (a, b) = socket_pair();
    let writer = Arc::clone(&a);
    let late = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        (&*writer).write_all(b"x").unwrap();
        thread::sleep(Duration::from_millis(600));
        (&*writer).write_all(b"y").unwrap();
    });
    let (first, second, waited) = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let start = Instant::now();
            let first = handle
                .recv(Arc::clone(&b), IoBufMut::with_capacity(1))
                .timeout(Duration::from_millis(400))
                .local()
                .await
                .map(|(buf, _)| buf.to_vec());
            let waited = start.elapsed();
            let second = handle
                .recv(b, IoBufMut::with_capacity(1))
                .local()
                .await
                .map(|(buf, _)| buf.to_vec());
            (first, second, waited)
        })
    })
    .unwrap();
    late.join().unwrap();
    assert_eq!(first.unwrap(), b"x", "not timed out at the horizon");
    assert!(waited >= Duration::from_millis(90), "{waited:?}");
    assert_eq!(second.unwrap(), b"y", "no stale wheel entry for the slot");
    let metrics = reader.get();
    assert_eq!(
        (metrics.completed, metrics.timed_out),
        (2, 0),
        "{metrics:?}"
    );
}

/// A local recv with nothing to receive ends with `Timeout` at its deadline, beyond the
/// horizon too, never before it, and with its buffer back; the loop thread's next operation
/// finds the slot free.
#[test]
fn a_local_recv_times_out_at_its_deadline_with_its_buffer() {
    let (handle, event_loop) = one_slot_short_wheel();
    let reader = event_loop.metrics_reader();
    let (a, b) = socket_pair();
    let (err, waited) = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let start = Instant::now();
            let err = handle
                .recv(b, IoBufMut::with_capacity(3))
                .timeout(Duration::from_millis(60))
                .local()
                .await
                .expect_err("nothing to receive");
            let waited = start.elapsed();
            handle.nop().local().await.unwrap();
            (err, waited)
        })
    })
    .unwrap();
    drop(a);
    assert_eq!(err.error, Error::Timeout);
    assert_eq!(err.buf.capacity(), 3);
    assert!(
        waited >= Duration::from_millis(60),
        "never early: {waited:?}"
    );
    let metrics = reader.get();
    assert_eq!(
        (metrics.completed, metrics.timed_out),
        (2, 1),
        "{metrics:?}"
    );
    assert_eq!(metrics.pending_operations, 0, "{metrics:?}");
}

/// A local operation whose deadline has passed by its first poll ends with `Timeout` without
/// I/O (no SQE), as an `Op` does; the next one runs.
#[test]
fn a_local_operation_past_its_deadline_times_out_without_io() {
    let (handle, event_loop) = static_uring::new::<2, 2, 64>(config()).unwrap();
    let reader = event_loop.metrics_reader();
    let past = Instant::now();
    thread::sleep(Duration::from_millis(15));
    let (late, next) = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let late = handle.nop().deadline(past).local().await;
            let next = handle.nop().local().await;
            (late, next)
        })
    })
    .unwrap();
    assert_eq!(late, Err(Error::Timeout));
    assert_eq!(next, Ok(()));
    let metrics = reader.get();
    assert_eq!(
        metrics.submitted, 1,
        "one SQE, the second nop's: {metrics:?}"
    );
    assert_eq!(metrics.timed_out, 1, "{metrics:?}");
}

/// A one-byte local recv dropped once it is in the kernel; then every slot is used again (the
/// orphan's came back), the peer writes "xy" and another local recv takes one byte: the byte
/// it got, and the loop's metrics.
fn drop_in_flight_then_receive(cancel_on_drop: bool) -> (Vec<u8>, Metrics) {
    let (a, b) = socket_pair();
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(Config {
        cancel_on_drop,
        ..config()
    })
    .unwrap();
    let reader = event_loop.metrics_reader();
    let one = move |io: &static_uring::Handle<4, 4, 64>| {
        io.recv(b.clone(), IoBufMut::with_capacity(1))
            .exact(1)
            .local()
    };
    let got = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let mut dropped = Box::pin(one(&handle));
            assert!(
                poll_once(dropped.as_mut()).is_none(),
                "nothing to receive yet"
            );
            // Its SQE goes in with the pass; one more round trip and it is in the kernel.
            handle.nop().local().await.unwrap();
            drop(dropped);
            for _ in 0..8 {
                handle.nop().local().await.unwrap();
            }
            (&*a).write_all(b"xy").unwrap();
            let (buf, _) = one(&handle).await.unwrap();
            buf.to_vec()
        })
    })
    .unwrap();
    (got, reader.get())
}

/// With `cancel_on_drop` a dropped local recv is cancelled and consumes nothing.
#[test]
fn a_dropped_local_operation_is_cancelled_and_its_slot_reused() {
    let (got, metrics) = drop_in_flight_then_receive(true);
    assert_eq!(got, b"x", "the cancelled recv consumed nothing");
    assert_eq!(metrics.orphaned, 1, "{metrics:?}");
    assert_eq!(metrics.cancel_sqes, 1, "{metrics:?}");
    assert_eq!(metrics.pending_operations, 0, "{metrics:?}");
}

/// By default a dropped local recv stays in the kernel and consumes what comes first (the
/// drop rule of a `recv`), then its slot is retired.
#[test]
fn a_dropped_local_recv_runs_on_by_default() {
    let (got, metrics) = drop_in_flight_then_receive(false);
    assert_eq!(got, b"y", "the dropped recv took the first byte");
    assert_eq!(metrics.orphaned, 1, "{metrics:?}");
    assert_eq!(metrics.cancel_sqes, 0, "{metrics:?}");
    assert_eq!(metrics.pending_operations, 0, "{metrics:?}");
}

/// A local recv submitted inside `block_on` and kept past it (same thread): the peer writes
/// `data` (if any) before the future ends and drops the last handle; the recv is polled once
/// after `block_on` returned. Its result, and the loop's metrics.
fn recv_kept_past_block_on(
    config: Config,
    data: &'static [u8],
) -> (Result<Vec<u8>, Error>, Metrics) {
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(config).unwrap();
    let reader = event_loop.metrics_reader();
    let (a, b) = socket_pair();
    let result = with_timeout(HANG, move || {
        let kept: Rc<RefCell<Option<Pin<Box<Recv>>>>> = Rc::new(RefCell::new(None));
        let inside = kept.clone();
        // The peer stays open until the recv was polled after `block_on`: no end of file.
        let peer = a.clone();
        event_loop
            .block_on(async move {
                let capacity = data.len().max(8);
                let mut recv = Box::pin(handle.recv(b, IoBufMut::with_capacity(capacity)).local());
                assert!(poll_once(recv.as_mut()).is_none());
                handle.nop().local().await.unwrap();
                if !data.is_empty() {
                    (&*peer).write_all(data).unwrap();
                }
                *inside.borrow_mut() = Some(recv);
            })
            .unwrap();
        let mut recv = kept.borrow_mut().take().expect("kept");
        let result = poll_once(recv.as_mut()).expect("ended by the drain or the close");
        drop(a);
        result.map(|(buf, _)| buf.to_vec()).map_err(|e| e.error)
    });
    (result, reader.get())
}

/// A local operation still in flight when `block_on`'s future ends is finished by the drain,
/// and its result is there when it is polled after `block_on` returned (same thread).
#[test]
fn a_local_operation_outlives_block_on_and_gets_its_result() {
    let (result, metrics) = recv_kept_past_block_on(config(), b"abc");
    assert_eq!(result, Ok(b"abc".to_vec()));
    assert_eq!(metrics.pending_operations, 0, "{metrics:?}");
}

/// With a zero shutdown timeout, a local recv still in the kernel when the handles are gone is
/// cancelled at the close; kept past `block_on`, it reports an error (its buffer back unless
/// the kernel kept it) and its slot is owned once.
#[test]
fn a_local_operation_cut_off_by_the_close_reports_an_error() {
    let config = Config {
        shutdown_timeout: Some(Duration::ZERO),
        ..config()
    };
    let (result, metrics) = recv_kept_past_block_on(config, b"");
    let error = result.expect_err("nothing was received");
    assert!(
        matches!(error, Error::Abandoned | Error::Closed),
        "{error:?}"
    );
    assert_eq!(metrics.pending_operations, 0, "{metrics:?}");
    assert_eq!(metrics.orphaned, 0, "it was never dropped: {metrics:?}");
}

/// Off the loop thread a `LocalOp` is an `Op` (the compare-exchange path): awaited on another
/// thread, it completes.
#[test]
fn a_local_operation_on_another_thread_works_as_an_op() {
    let (handle, event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    let loop_thread = thread::spawn(move || event_loop.run());
    let results: Vec<_> = (0..16)
        .map(|_| block_on(HANG, handle.nop().local()))
        .collect();
    assert!(results.iter().all(|r| *r == Ok(())));
    drop(handle);
    loop_thread.join().unwrap().unwrap();
}

/// Stress: pool tasks on the loop thread await local operations (nops, deadlined recvs that
/// time out, some dropped after one poll) while two other threads submit and drop plain `Op`s
/// on the same small table. Everything completes, every slot comes back, nothing hangs.
#[test]
fn local_and_remote_operations_mix_on_a_small_table() {
    const TASKS: usize = 6;
    const ROUNDS: usize = 300;
    let (handle, event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    let reader = event_loop.metrics_reader();
    let remote_done = Arc::new(AtomicUsize::new(0));
    let remotes: Vec<_> = (0..2)
        .map(|k| {
            let (io, done) = (handle.clone(), remote_done.clone());
            thread::spawn(move || {
                for i in 0..ROUNDS {
                    if (i + k) % 5 == 0 {
                        let mut op = Box::pin(io.nop());
                        let _ = poll_once(op.as_mut());
                    } else {
                        io.nop().wait().unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let local_done = with_timeout(Duration::from_secs(60), move || {
        let pool = TaskPool::<_, TASKS>::leak();
        let done = Rc::new(std::cell::Cell::new(0usize));
        let count = done.clone();
        let main = async move {
            for t in 0..TASKS {
                let (io, done) = (handle.clone(), count.clone());
                let (a, b) = socket_pair();
                let task = async move {
                    // The peer stays open: a recv then waits (and times out) instead of ending.
                    let _peer = a;
                    for i in 0..ROUNDS {
                        match (i + t) % 7 {
                            0 => {
                                // A deadline: `Timeout` no earlier than it, the buffer back.
                                let start = Instant::now();
                                let err = io
                                    .recv(b.clone(), IoBufMut::with_capacity(4))
                                    .timeout(Duration::from_millis(1))
                                    .local()
                                    .await
                                    .expect_err("nothing to receive");
                                assert!(start.elapsed() >= Duration::from_millis(1));
                                assert_eq!(err.error, Error::Timeout);
                                assert_eq!(err.buf.capacity(), 4);
                            }
                            1 => {
                                let mut op = Box::pin(io.nop().local());
                                let _ = poll_once(op.as_mut());
                            }
                            _ => {
                                io.nop().local().await.unwrap();
                                done.set(done.get() + 1);
                            }
                        }
                    }
                };
                assert!(pool.spawn(task).is_ok());
            }
            drop(handle);
        };
        event_loop.block_on(pool.run(main)).unwrap();
        assert_eq!(pool.panics(), 0, "no task panicked");
        done.get()
    });
    for remote in remotes {
        remote.join().unwrap();
    }
    let local_expected = (0..TASKS)
        .map(|t| (0..ROUNDS).filter(|i| (i + t) % 7 >= 2).count())
        .sum::<usize>();
    assert_eq!(local_done, local_expected);
    let remote_expected = (0..2)
        .map(|k| (0..ROUNDS).filter(|i| (i + k) % 5 != 0).count())
        .sum::<usize>();
    assert_eq!(remote_done.load(Ordering::Relaxed), remote_expected);
    let metrics = reader.get();
    assert_eq!(metrics.pending_operations, 0, "{metrics:?}");
    assert!(metrics.timed_out > 0, "{metrics:?}");
}

/// A future that wakes itself and is pending `times` times, then ready: lets a `block_on`
/// future give the loop passes without an operation of its own.
struct Yield(u32);

impl std::future::Future for Yield {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 == 0 {
            return std::task::Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// A local recv that needs two completions (an exact recv whose bytes come in two writes) stays
/// in its future for the first, then goes on from its slot: whole, in order, once.
#[test]
fn a_local_recv_completed_in_two_parts_arrives_whole() {
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    let reader = event_loop.metrics_reader();
    let (a, b) = socket_pair();
    let got = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let mut recv = Box::pin(handle.recv(b, IoBufMut::with_capacity(8)).exact(8).local());
            assert!(poll_once(recv.as_mut()).is_none(), "nothing to receive yet");
            handle.nop().local().await.unwrap();
            (&*a).write_all(b"abcd").unwrap();
            // The first part's completion (4 of 8 bytes) comes while the recv waits.
            for _ in 0..4 {
                handle.nop().local().await.unwrap();
            }
            (&*a).write_all(b"efgh").unwrap();
            let (buf, _) = recv.await.unwrap();
            buf.to_vec()
        })
    })
    .unwrap();
    assert_eq!(got, b"abcdefgh");
    let metrics = reader.get();
    assert_eq!(
        metrics.requeued, 1,
        "one more SQE for the second part: {metrics:?}"
    );
    assert_eq!(metrics.pending_operations, 0, "{metrics:?}");
}

/// A held local operation hands its slot back when the loop delivers its result, not when its
/// future is next polled (`event_loop/held.rs`): with one slot, a second operation finds it free
/// while the first, finished, has not been polled since.
#[test]
fn a_finished_held_operation_frees_its_slot_before_its_future_is_polled() {
    let (handle, event_loop) = static_uring::new::<1, 1, 64>(config()).unwrap();
    let reader = event_loop.metrics_reader();
    let (free_early, first) = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let mut first = Box::pin(handle.nop().local());
            assert!(
                poll_once(first.as_mut()).is_none(),
                "submitted, not done yet"
            );
            // Passes of the loop (nothing else in flight) finish it.
            Yield(16).await;
            let second = handle.nop().try_submit();
            let free_early = second.is_ok();
            if let Ok(second) = second {
                second.await.unwrap();
            }
            (free_early, first.await)
        })
    })
    .unwrap();
    assert!(first.is_ok(), "{first:?}");
    assert!(
        free_early,
        "the finished nop's slot should be free before its future is polled again"
    );
    let metrics = reader.get();
    assert_eq!(metrics.completed, 2, "{metrics:?}");
    assert_eq!(metrics.pending_operations, 0, "{metrics:?}");
}

/// A held operation's descriptor goes when its result is delivered: a socket the operation
/// owned alone is closed by the time its future returns (the peer reads end of file), not
/// leaked with the request's slot or kept until the loop ends.
#[test]
fn a_held_recv_that_owned_its_socket_closes_it_when_it_finishes() {
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    let (a, b) = socket_pair();
    let (received, peer_read) = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            (&*a).write_all(b"x").unwrap();
            // `b`'s only owner is the operation from here on.
            let (received, _) = handle
                .recv(b, IoBufMut::with_capacity(1))
                .local()
                .await
                .unwrap();
            a.set_read_timeout(Some(HANG)).unwrap();
            let mut byte = [0u8; 1];
            let peer_read = (&*a).read(&mut byte).map_err(|e| e.kind());
            (received.to_vec(), peer_read)
        })
    })
    .unwrap();
    assert_eq!(received, b"x");
    assert_eq!(
        peer_read,
        Ok(0),
        "the received-on socket is closed: end of file"
    );
}

/// A local recv that finished while nobody polled it, then dropped: its slot is freed (the
/// table of one slot serves the next operations) and nothing is counted orphaned.
#[test]
fn a_finished_local_operation_dropped_unpolled_frees_its_slot() {
    let (handle, event_loop) = static_uring::new::<1, 1, 64>(config()).unwrap();
    let reader = event_loop.metrics_reader();
    let (a, b) = socket_pair();
    let nops = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            (&*a).write_all(b"x").unwrap();
            let mut recv = Box::pin(handle.recv(b, IoBufMut::with_capacity(1)).local());
            assert!(
                poll_once(recv.as_mut()).is_none(),
                "submitted, not done yet"
            );
            // Passes of the loop (no operation: the one slot is the recv's) finish it.
            Yield(16).await;
            drop(recv);
            let mut done = 0;
            for _ in 0..4 {
                handle.nop().local().await.unwrap();
                done += 1;
            }
            done
        })
    })
    .unwrap();
    assert_eq!(nops, 4, "the recv's slot served the nops");
    let metrics = reader.get();
    assert_eq!(metrics.completed, 5, "{metrics:?}");
    assert_eq!(
        metrics.orphaned, 0,
        "it finished before the drop: {metrics:?}"
    );
    assert_eq!(metrics.pending_operations, 0, "{metrics:?}");
}

/// The drain after the last handle, while a local recv is in flight: polled during the drain
/// (where its waker goes to the slot's cell, not the loop thread's) before its bytes come, it
/// still gets them, once the drain has finished it from its slot; and polled during the drain
/// only after it finished, it gets them straight from its future.
#[test]
fn a_local_recv_in_flight_through_the_drain_gets_its_bytes() {
    for polled_early in [true, false] {
        let (handle, event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
        let reader = event_loop.metrics_reader();
        let (a, b) = socket_pair();
        let writer = thread::spawn(move || {
            // Long after the drain began (the last handle goes at once).
            thread::sleep(Duration::from_millis(200));
            (&*a).write_all(b"late").unwrap();
            a
        });
        let got = with_timeout(HANG, move || {
            event_loop.block_on(async move {
                let mut recv = Box::pin(handle.recv(b, IoBufMut::with_capacity(4)).local());
                assert!(poll_once(recv.as_mut()).is_none(), "nothing to receive yet");
                handle.nop().local().await.unwrap();
                drop(handle);
                if polled_early {
                    // Woken and polled again while the loop drains, before the bytes come.
                    let (result, ()) = join2(recv, Yield(64)).await;
                    result
                } else {
                    recv.await
                }
            })
        })
        .unwrap();
        let (buf, _) = got.unwrap();
        assert_eq!(buf.to_vec(), b"late", "polled early: {polled_early}");
        drop(writer.join().unwrap());
        let metrics = reader.get();
        assert_eq!(metrics.pending_operations, 0, "{metrics:?}");
        assert_eq!(metrics.orphaned, 0, "{metrics:?}");
    }
}

/// A local recv left in the kernel at a zero shutdown timeout, still awaited by its future: the
/// loop cancels it and the future gets `Abandoned` with its buffer back (a socket recv is
/// released by the cancel at once), or the buffer stays with the kernel (parked).
#[test]
fn a_local_recv_awaited_through_the_abandonment_reports_it() {
    let config = Config {
        shutdown_timeout: Some(Duration::ZERO),
        ..config()
    };
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(config).unwrap();
    let reader = event_loop.metrics_reader();
    let (_a, b) = socket_pair();
    let got = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let mut recv = Box::pin(handle.recv(b, IoBufMut::with_capacity(8)).local());
            assert!(poll_once(recv.as_mut()).is_none());
            handle.nop().local().await.unwrap();
            drop(handle);
            match recv.await {
                Ok(_) => Err("received from a silent peer"),
                Err(e) => Ok((e.error, e.buf.capacity())),
            }
        })
    });
    let metrics = reader.get();
    match got {
        // The future saw the end: abandoned, its buffer back unless the kernel kept it.
        Ok(Ok((error, capacity))) => {
            assert_eq!(error, Error::Abandoned);
            assert!(capacity == 8 || metrics.parked == 1, "{metrics:?}");
        }
        // `block_on` returned before the future saw it (the drain ended first): `Closed`.
        Err(Error::Closed) => {}
        other => panic!("unexpected: {other:?}"),
    }
    assert_eq!(metrics.abandoned, 1, "{metrics:?}");
    assert!(metrics.cancel_sqes >= 1, "{metrics:?}");
    assert_eq!(metrics.pending_operations, 0, "{metrics:?}");
}

/// A local readiness poll (held in its future while in the kernel) reports the readiness the
/// peer's write causes.
#[test]
fn a_local_poll_reports_readiness() {
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    let (a, b) = socket_pair();
    let ready = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let mut poll = Box::pin(handle.poll(b, static_uring::Readiness::READABLE).local());
            assert!(poll_once(poll.as_mut()).is_none(), "nothing to read yet");
            handle.nop().local().await.unwrap();
            (&*a).write_all(b"!").unwrap();
            poll.await
        })
    })
    .unwrap()
    .unwrap();
    assert!(ready.is_readable(), "{ready:?}");
}

/// Receives submitted in one poll ahead of the sends that feed them, both ends on the loop
/// thread (the SQ then puts the batch's sends first, docs/behaviour.md section 1.5): each
/// receive gets the bytes meant for it, two sends on one socket arrive in their order, and a
/// timed receive on a silent socket in the same batch still ends with `Timeout`, not before its
/// deadline.
#[test]
fn receives_ahead_of_the_sends_that_feed_them_get_their_bytes_and_deadlines_hold() {
    let (handle, event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    let (a, b) = socket_pair();
    let (_c, silent) = socket_pair();
    let reader = event_loop.metrics_reader();
    let (got, timed_out, waited, sent) = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let start = Instant::now();
            let receives = join2(
                handle.recv(b, IoBufMut::with_capacity(8)).exact(8).local(),
                handle
                    .recv(silent, IoBufMut::with_capacity(1))
                    .timeout(Duration::from_millis(50))
                    .local(),
            );
            let sends = join2(
                handle.send(a.clone(), IoBuf::from(&b"ping"[..])).local(),
                handle.send(a, IoBuf::from(&b"pong"[..])).local(),
            );
            let ((got, timed_out), (first, second)) = join2(receives, sends).await;
            let waited = start.elapsed();
            let (got, _) = got.unwrap();
            let timed_out = timed_out.map(|_| ()).map_err(|e| e.error);
            let sent = (first.is_ok(), second.is_ok());
            (got.to_vec(), timed_out, waited, sent)
        })
    })
    .unwrap();
    assert_eq!(got, b"pingpong", "both sends, in their order");
    assert_eq!(timed_out, Err(Error::Timeout));
    assert!(
        waited >= Duration::from_millis(50),
        "never early: {waited:?}"
    );
    assert_eq!(sent, (true, true));
    let metrics = reader.get();
    assert_eq!(
        (metrics.completed, metrics.timed_out),
        (4, 1),
        "{metrics:?}"
    );
    assert_eq!(metrics.pending_operations, 0, "{metrics:?}");
}
