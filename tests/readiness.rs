//! `Handle::poll`: readiness through the loop (`IORING_OP_POLL_ADD`), the way to drive
//! descriptors the loop does not read itself (signalfd, timerfd, eventfd, other sockets).

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use static_uring::{Config, Error, Readiness};

/// A readable poll waits for data and reports it; a writable one on an idle socket is ready at
/// once; a peer that hangs up is reported whatever was asked.
#[test]
fn poll_reports_readable_writable_and_hang_up() {
    let (handle, lp) = start::<8, 8, 64>(config());
    let (a, b) = socket_pair();
    let h = handle.clone();
    let waiting = Background::spawn({
        let b = b.clone();
        move || h.poll(b, Readiness::READABLE).wait()
    });
    std::thread::sleep(Duration::from_millis(20));
    assert!(!waiting.is_finished(), "nothing to read yet");
    (&*a).write_all(b"x").unwrap();
    let ready = waiting.join(HANG).unwrap();
    assert!(ready.is_readable() && !ready.is_writable(), "{ready:?}");

    let ready = with_timeout(HANG, {
        let (h, a) = (handle.clone(), a.clone());
        move || h.poll(a, Readiness::WRITABLE).wait()
    })
    .unwrap();
    assert!(ready.is_writable() && !ready.is_readable(), "{ready:?}");

    drop(a);
    let ready = with_timeout(HANG, {
        let h = handle.clone();
        move || h.poll(b, Readiness::WRITABLE).wait()
    })
    .unwrap();
    assert!(ready.is_closed(), "{ready:?}");
    drop(handle);
    lp.join(HANG).unwrap();
}

/// A deadline ends a poll nothing answers with `Timeout`, never early.
#[test]
fn a_poll_times_out_at_its_deadline() {
    let (handle, lp) = start::<8, 8, 64>(config());
    let (_a, b) = socket_pair();
    let deadline = Instant::now() + Duration::from_millis(50);
    let h = handle.clone();
    let result = with_timeout(HANG, move || {
        h.poll(b, Readiness::READABLE).deadline(deadline).wait()
    });
    assert_eq!(result, Err(Error::Timeout));
    assert!(Instant::now() >= deadline);
    drop(handle);
    lp.join(HANG).unwrap();
}

/// With `cancel_on_drop`, a dropped poll is cancelled in the kernel and its slot comes back.
#[test]
fn a_dropped_poll_is_cancelled_with_cancel_on_drop() {
    let cfg = Config {
        cancel_on_drop: true,
        ..config()
    };
    let (handle, lp) = start::<8, 8, 64>(cfg);
    let (_a, b) = socket_pair();
    let mut poll = Box::pin(handle.poll(b, Readiness::READABLE));
    assert!(poll_once(poll.as_mut()).is_none());
    wait_until(HANG, "poll in flight", || handle.metrics().submitted == 1);
    drop(poll);
    wait_until(HANG, "the poll is cancelled and retired", || {
        handle.metrics().orphaned == 1
    });
    assert_eq!(handle.metrics().cancel_sqes, 1);
    drop(handle);
    lp.join(HANG).unwrap();
}
