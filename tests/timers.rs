//! Timers on the loop's wheel (`Handle::sleep`, `sleep_until`, `timeout`, `timeout_at`): never
//! early (semantics A4), late by about a tick at most (generous bounds here: a shared machine),
//! no kernel request and none of the `RING` entries, a dropped timer's slot free at the next
//! pass, and the shutdown rules of any request.

mod common;

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use static_uring::{Config, Error, IoBufMut, TaskPool};

/// A generous bound for "about a tick late" on a loaded 2-CPU machine (the test checks that a
/// timer ends, not how precisely; the wheel's tick math has its own tests).
const LATE: Duration = Duration::from_secs(2);

/// From another thread and from the loop thread: a sleep ends `Ok` no earlier than asked, and
/// not much later; no SQE is submitted for it.
#[test]
fn sleep_ends_ok_never_early_without_a_kernel_request() {
    let (handle, lt) = start::<8, 8, 64>(config());
    for ms in [0, 1, 7, 30] {
        let before = handle.metrics();
        let start = Instant::now();
        assert_eq!(handle.sleep(Duration::from_millis(ms)).wait(), Ok(()));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(ms), "{ms} ms took {took:?}");
        assert!(
            took < Duration::from_millis(ms) + LATE,
            "{ms} ms took {took:?}"
        );
        assert_eq!(handle.metrics().submitted, before.submitted, "no SQE");
    }
    drop(handle);
    lt.join(HANG).unwrap();

    let (handle, event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    let took = with_timeout(HANG, move || {
        event_loop
            .block_on(async move {
                let start = Instant::now();
                handle.sleep(Duration::from_millis(25)).await.unwrap();
                start.elapsed()
            })
            .unwrap()
    });
    assert!(took >= Duration::from_millis(25) && took < Duration::from_millis(25) + LATE);
}

/// An instant already past ends at once; `sleep_until` ends at its instant.
#[test]
fn sleep_until_a_past_instant_ends_at_once() {
    let (handle, lt) = start::<8, 8, 64>(config());
    let past = Instant::now();
    thread::sleep(Duration::from_millis(5));
    let start = Instant::now();
    assert_eq!(handle.sleep_until(past).wait(), Ok(()));
    assert!(start.elapsed() < LATE);
    let at = Instant::now() + Duration::from_millis(20);
    handle.sleep_until(at).wait().unwrap();
    assert!(Instant::now() >= at);
    drop(handle);
    lt.join(HANG).unwrap();
}

/// Past the wheel's horizon (WHEEL 8 at a 5 ms tick: 35 ms) a timer is re-armed until its end,
/// even with a `max_request_timeout` cap (which shortens the deadlines of requests, never a
/// timer's end).
#[test]
fn a_timer_beyond_the_horizon_never_fires_early_cap_or_not() {
    for cap in [None, Some(Duration::from_millis(10))] {
        let config = Config {
            max_request_timeout: cap,
            ..config()
        };
        let (handle, lt) = start::<8, 8, 8>(config);
        let start = Instant::now();
        handle.sleep(Duration::from_millis(120)).wait().unwrap();
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(120), "{cap:?}: {took:?}");
        assert!(
            took < Duration::from_millis(120) + LATE,
            "{cap:?}: {took:?}"
        );
        drop(handle);
        lt.join(HANG).unwrap();
    }
}

/// Timers take none of the `RING` entries: with RING = 2 and four long sleeps waiting, two
/// receives still go into the kernel and complete.
#[test]
fn timers_take_no_ring_entries() {
    let (handle, lt) = start::<8, 2, 64>(config());
    let sleeps: Vec<_> = (0..4)
        .map(|_| handle.sleep(Duration::from_secs(60)).try_submit().unwrap())
        .collect();
    let (a, b) = socket_pair();
    let (c, d) = socket_pair();
    let r1 = handle
        .recv(b, IoBufMut::with_capacity(2))
        .exact(2)
        .try_submit()
        .unwrap();
    let r2 = handle
        .recv(d, IoBufMut::with_capacity(2))
        .exact(2)
        .try_submit()
        .unwrap();
    wait_until(HANG, "both receives in the kernel", || {
        handle.metrics().submitted == 2
    });
    (&*a).write_all(b"ok").unwrap();
    (&*c).write_all(b"ok").unwrap();
    assert_eq!(&with_timeout(HANG, move || r1.wait()).unwrap().0[..], b"ok");
    assert_eq!(&with_timeout(HANG, move || r2.wait()).unwrap().0[..], b"ok");
    drop(sleeps);
    drop(handle);
    lt.join(HANG).unwrap();
}

/// A dropped timer's slot is free again at the loop's next pass, not at its end: with one slot,
/// a one-minute sleep dropped after submission (from another thread, and on the loop thread)
/// leaves room for the next request at once.
#[test]
fn a_dropped_timer_frees_its_slot_at_once() {
    let (handle, lt) = start::<1, 1, 64>(config());
    for _ in 0..3 {
        let sleep = handle.sleep(Duration::from_secs(60)).try_submit().unwrap();
        assert_eq!(err(handle.nop().try_submit()), Error::Full);
        drop(sleep);
        let start = Instant::now();
        with_timeout(HANG, {
            let handle = handle.clone();
            move || handle.nop().wait()
        })
        .unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
    }
    let metrics = handle.metrics();
    assert_eq!(metrics.orphaned, 3, "{metrics:?}");
    drop(handle);
    lt.join(HANG).unwrap();

    // On the loop thread: a pool task drops a long sleep after one poll, a thousand times over
    // a two-slot table; every nop after it finds a slot.
    let (handle, event_loop) = static_uring::new::<2, 2, 64>(config()).unwrap();
    let n = with_timeout(HANG, move || {
        event_loop
            .block_on(async move {
                for _ in 0..1000 {
                    let mut sleep = Box::pin(handle.sleep(Duration::from_secs(60)));
                    std::future::poll_fn(|cx| {
                        assert!(sleep.as_mut().poll(cx).is_pending());
                        Poll::Ready(())
                    })
                    .await;
                    drop(sleep);
                    handle.nop().await.unwrap();
                }
                handle.metrics().orphaned
            })
            .unwrap()
    });
    assert_eq!(n, 1000);
}

/// `timeout` bounds a group of operations: the future's output when it finishes first (the
/// timer is dropped, its slot freed), `Timeout` no earlier than the bound otherwise (the
/// receive inside is dropped: its buffer goes with the future). `timeout_at` likewise.
#[test]
fn timeout_bounds_a_group_of_operations() {
    let (handle, lt) = start::<8, 8, 64>(config());
    let (a, b) = socket_pair();
    let io = handle.clone();
    let (b2, a2) = (b.clone(), a.clone());
    let quick = block_on(
        HANG,
        handle.timeout(Duration::from_secs(30), async move {
            io.nop().await.unwrap();
            (&*a2).write_all(b"hi").unwrap();
            let (buf, _) = io
                .recv(b2, IoBufMut::with_capacity(2))
                .exact(2)
                .await
                .unwrap();
            buf.to_vec()
        }),
    );
    assert_eq!(quick, Ok(b"hi".to_vec()));

    let io = handle.clone();
    let start = Instant::now();
    let slow = block_on(
        HANG,
        handle.timeout(Duration::from_millis(40), async move {
            io.nop().await.unwrap();
            // Nothing is ever sent now: only the timeout ends this.
            io.recv(b, IoBufMut::with_capacity(2)).exact(2).await
        }),
    );
    assert_eq!(slow.map(|_| ()), Err(Error::Timeout));
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(40) && took < Duration::from_millis(40) + LATE);

    let at = Instant::now() + Duration::from_millis(20);
    let io = handle.clone();
    let out = block_on(
        HANG,
        handle.timeout_at(at, io.sleep(Duration::from_secs(60))),
    );
    assert_eq!(out, Err(Error::Timeout));
    assert!(Instant::now() >= at);
    // The dropped timers are retired at once (the inner sleep of `timeout_at`, surely submitted:
    // pending for a minute; the quick group's timer too, unless the group was done at its first
    // poll); the dropped receive stays in the kernel until data comes (the default drop rule).
    wait_until(HANG, "the dropped timers retired", || {
        handle.metrics().orphaned >= 1
    });
    drop((handle, io, a));
    lt.join(HANG).unwrap();
}

/// Shutdown: without a budget the drain waits for a timer like for a request in flight (it ends
/// `Ok` at its end, then `run` returns); with a zero budget a waiting timer ends `Abandoned` at
/// once; a timer asked for after the shutdown is `Closed`.
#[test]
fn timers_follow_the_shutdown_rules() {
    let (handle, lt) = start::<8, 8, 64>(Config {
        shutdown_timeout: None,
        ..config()
    });
    let sleep = handle.sleep(Duration::from_millis(60));
    let began = Instant::now();
    let waiting = Background::spawn(move || sleep.wait());
    thread::sleep(Duration::from_millis(10));
    handle.shutdown();
    assert_eq!(waiting.join(HANG), Ok(()));
    lt.join(HANG).unwrap();
    assert!(
        began.elapsed() >= Duration::from_millis(60),
        "the drain waited"
    );
    assert_eq!(handle.sleep(Duration::ZERO).wait(), Err(Error::Closed));

    let (handle, lt) = start::<8, 8, 64>(Config {
        shutdown_timeout: Some(Duration::ZERO),
        ..config()
    });
    let sleep = handle.sleep(Duration::from_secs(60));
    let waiting = Background::spawn(move || sleep.wait());
    thread::sleep(Duration::from_millis(10));
    drop(handle);
    assert_eq!(waiting.join(HANG), Err(Error::Abandoned));
    lt.join(HANG).unwrap();
}

/// A pool of tasks on the loop thread, each with an idle timeout per message (a `timeout`
/// around each receive), as a server has: the receives that get data finish, the idle one
/// times out, and every timer comes back (no slot is held after the tasks end).
#[test]
fn pool_tasks_with_idle_timeouts_on_the_loop_thread() {
    let (handle, event_loop) = static_uring::new::<16, 8, 64>(config()).unwrap();
    let reader = event_loop.metrics_reader();
    let pairs: Vec<_> = (0..3).map(|_| socket_pair()).collect();
    // Pairs 0 and 1 get 20 bytes, all there before the tasks start (no timing between them);
    // pair 2 stays idle.
    for (a, _) in &pairs[..2] {
        (&**a).write_all(&[b'x'; 20]).unwrap();
    }
    let outcomes = with_timeout(HANG, move || {
        let pool = TaskPool::<_, 4>::leak();
        let results = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let r = results.clone();
        event_loop
            .block_on(pool.run(async move {
                for (i, (a, b)) in pairs.into_iter().enumerate() {
                    let (io, r) = (handle.clone(), r.clone());
                    let task = async move {
                        // The peer stays open: a silent peer, not a closed one.
                        let _peer = a;
                        let mut got = 0;
                        loop {
                            let recv = io.recv(b.clone(), IoBufMut::with_capacity(1)).exact(1);
                            match io.timeout(Duration::from_millis(100), recv).await {
                                Ok(Ok(_)) => got += 1,
                                Ok(Err(e)) => panic!("recv: {e}"),
                                Err(Error::Timeout) => break,
                                Err(e) => panic!("timer: {e}"),
                            }
                        }
                        r.lock().unwrap().push((i, got));
                    };
                    assert!(pool.spawn(task).is_ok());
                }
                drop(handle);
            }))
            .unwrap();
        let mut out = results.lock().unwrap().clone();
        out.sort();
        out
    });
    assert_eq!(outcomes, vec![(0, 20), (1, 20), (2, 0)]);
    assert_eq!(reader.get().pending_operations, 0);
}

/// A timeout polls the inner future first, so one that is ready when the time is up still wins:
/// here both are (first polled after the bound), and the inner future's output comes back; a
/// timeout whose inner future is never ready ends `Timeout` at its bound.
#[test]
fn a_timeout_prefers_a_ready_future() {
    struct ReadyAfter(Instant);
    impl Future for ReadyAfter {
        type Output = u8;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u8> {
            if Instant::now() >= self.0 {
                return Poll::Ready(7);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
    let (handle, lt) = start::<8, 8, 64>(config());
    let at = Instant::now() + Duration::from_millis(10);
    let bounded = handle.timeout_at(at, ReadyAfter(at));
    thread::sleep(Duration::from_millis(20));
    assert_eq!(block_on(HANG, bounded), Ok(7));
    let never = Instant::now() + Duration::from_secs(3600);
    let out = block_on(
        HANG,
        handle.timeout(Duration::from_millis(5), ReadyAfter(never)),
    );
    assert_eq!(out, Err(Error::Timeout));
    drop(handle);
    lt.join(HANG).unwrap();
}
