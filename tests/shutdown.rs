//! `Handle::shutdown`: the drain starts at once, with handles still alive, from another thread
//! or from a task on the loop thread, under every shutdown budget; later requests end `Closed`.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use static_uring::{Config, Error, IoBufMut, TaskPool};

fn with_budget(shutdown_timeout: Option<Duration>) -> Config {
    Config {
        shutdown_timeout,
        ..config()
    }
}

/// From another thread, with handles alive: the loop stops taking requests at once (a later
/// one, and one waiting for a slot, end `Closed`) and `run` returns. A request in flight with no
/// budget left is abandoned, its buffer kept (`Abandoned`); a second and a third call change
/// nothing.
#[test]
fn shutdown_from_another_thread_ends_the_loop_with_handles_alive() {
    let (handle, lt) = start::<2, 2, 64>(with_budget(Some(Duration::ZERO)));
    let (_a, b) = socket_pair();
    // Nothing is ever sent: the recv stays in the kernel until the shutdown abandons it.
    let recv = handle.recv(b.clone(), IoBufMut::with_capacity(4));
    let blocked = Background::spawn(move || recv.wait());
    wait_until(HANG, "the recv in flight", || {
        handle.metrics().pending_operations == 1
    });
    // Both slots taken (the second by a recv too); a third caller waits for a slot.
    let second = handle.recv(b.clone(), IoBufMut::with_capacity(4));
    let second = Background::spawn(move || second.wait());
    wait_until(HANG, "both slots in flight", || {
        handle.metrics().pending_operations == 2
    });
    let waiter = handle.nop();
    let waiting = Background::spawn(move || waiter.wait());
    thread::sleep(Duration::from_millis(20));
    handle.shutdown();
    handle.shutdown();
    lt.join(HANG).unwrap();
    assert_eq!(waiting.join(HANG), Err(Error::Closed));
    for blocked in [blocked, second] {
        let err = blocked.join(HANG).unwrap_err();
        assert_eq!(err.error, Error::Abandoned);
    }
    assert_eq!(handle.nop().wait(), Err(Error::Closed));
    handle.shutdown();
    assert_eq!(handle.metrics().abandoned, 2);
}

/// Without a budget the drain waits for what is in flight: a recv submitted before the shutdown
/// still gets the bytes sent after it, while a request made after it is `Closed` at once.
#[test]
fn shutdown_without_a_budget_lets_requests_in_flight_finish() {
    let (handle, lt) = start::<8, 8, 64>(with_budget(None));
    let (a, b) = socket_pair();
    let recv = handle.recv(b.clone(), IoBufMut::with_capacity(4)).exact(4);
    let blocked = Background::spawn(move || recv.wait());
    wait_until(HANG, "the recv in flight", || {
        handle.metrics().pending_operations == 1
    });
    handle.shutdown();
    let late = handle
        .recv(b, IoBufMut::with_capacity(4))
        .wait()
        .unwrap_err();
    assert_eq!(late.error, Error::Closed);
    assert_eq!(late.buf.capacity(), 4, "the buffer comes back");
    thread::sleep(Duration::from_millis(20));
    assert!(!lt.is_finished(), "the drain waits for the recv");
    (&*a).write_all(b"late").unwrap();
    let (buf, n) = blocked.join(HANG).unwrap();
    assert_eq!((&buf[..], n), (&b"late"[..], 4));
    lt.join(HANG).unwrap();
}

/// A deadline that falls inside the budget still ends its request `Timeout` during the drain
/// (the wheel keeps turning), and the loop then returns before the budget is spent.
#[test]
fn shutdown_keeps_deadlines_firing_inside_the_budget() {
    let (handle, lt) = start::<8, 8, 64>(with_budget(Some(Duration::from_secs(5))));
    let (_a, b) = socket_pair();
    let recv = handle
        .recv(b, IoBufMut::with_capacity(4))
        .timeout(Duration::from_millis(50));
    let blocked = Background::spawn(move || recv.wait());
    wait_until(HANG, "the recv in flight", || {
        handle.metrics().pending_operations == 1
    });
    let start = Instant::now();
    handle.shutdown();
    assert_eq!(blocked.join(HANG).unwrap_err().error, Error::Timeout);
    lt.join(HANG).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "not the whole budget"
    );
}

/// From a pool task in loop-thread mode: the tasks blocked in a recv see it abandoned at the
/// end of the budget, a task that submits afterwards gets `Closed`, every task returns, and
/// `block_on` gives the main future's output although a handle is still alive.
#[test]
fn shutdown_from_a_task_ends_block_on_with_its_output() {
    let (handle, event_loop) =
        static_uring::new::<8, 8, 64>(with_budget(Some(Duration::from_millis(50)))).unwrap();
    let kept = handle.clone();
    let ended = Arc::new(AtomicU32::new(0));
    let e = ended.clone();
    let out = with_timeout(HANG, move || {
        let pool = TaskPool::<_, 4>::leak();
        let socks: Vec<_> = (0..3).map(|_| socket_pair()).collect();
        event_loop
            .block_on(pool.run(async move {
                for (i, (a, b)) in socks.into_iter().enumerate() {
                    let (io, e) = (handle.clone(), e.clone());
                    let task = async move {
                        let _keep = a;
                        if i == 0 {
                            // Let the others block first, then stop the loop.
                            io.nop().await.unwrap();
                            io.shutdown();
                            let late = io.nop().await;
                            assert_eq!(late, Err(Error::Closed));
                        } else {
                            let err = io.recv(b, IoBufMut::with_capacity(4)).await.unwrap_err();
                            assert_eq!(err.error, Error::Abandoned);
                        }
                        e.fetch_add(1, Ordering::Relaxed);
                    };
                    assert!(pool.spawn(task).is_ok());
                }
                drop(handle);
                "main done"
            }))
            .unwrap()
    });
    assert_eq!(out, "main done");
    assert_eq!(ended.load(Ordering::Relaxed), 3, "every task returned");
    assert_eq!(kept.nop().wait(), Err(Error::Closed));
}

/// Many threads calling it at once, while others submit: no hang, no double close, and every
/// request ends with its result or `Closed`.
#[test]
fn concurrent_shutdowns_and_submissions_all_end() {
    for _ in 0..20 {
        let (handle, lt) = start::<4, 4, 64>(with_budget(Some(Duration::from_millis(100))));
        let threads: Vec<_> = (0..4)
            .map(|k| {
                let handle = handle.clone();
                thread::spawn(move || {
                    for i in 0..50 {
                        if k == 0 && i == 25 {
                            handle.shutdown();
                        }
                        match handle.nop().wait() {
                            Ok(()) | Err(Error::Closed) => {}
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        lt.join(HANG).unwrap();
        assert_eq!(handle.nop().wait(), Err(Error::Closed));
    }
}
