//! Single-producer lanes: requests submitted through a `LaneHandle` keep every rule of the
//! shared path (results, deadlines, drain at shutdown), a lane has one producer at a time and
//! belongs to the loop that registered it, and lanes and the shared ring feed one loop together.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use static_uring::{Config, Error, IoBuf, IoBufMut, Lane, Storage};

#[test]
fn operations_through_a_lane_give_the_same_results() {
    static LANE: Lane<8> = Lane::new();
    let (handle, mut event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    event_loop.register_lane(&LANE).unwrap();
    let lp = LoopThread::spawn(event_loop);
    let lane = handle.lane(&LANE).unwrap();

    lane.submit(handle.nop()).wait().unwrap();
    let (a, b) = socket_pair();
    let sent = lane.submit(handle.send(a.clone(), IoBuf::from(&b"lane"[..])));
    assert_eq!(&sent.wait().unwrap()[..], b"lane");
    let recv = lane.submit(handle.recv(b.clone(), IoBufMut::with_capacity(4)).exact(4));
    let (buf, filled) = recv.wait().unwrap();
    assert_eq!((&buf[..], filled), (&b"lane"[..], 4));
    let file = TempFile::with_contents(b"0123456789");
    let read = lane.submit(
        handle
            .read_at(file.file.clone(), 3, IoBufMut::with_capacity(4))
            .limit(4),
    );
    assert_eq!(&read.wait().unwrap()[..], b"3456");
    // Async too: a future polled on this thread.
    let nop = lane.submit(handle.nop());
    block_on(HANG, nop).unwrap();
    assert_eq!(handle.metrics().completed, 5);
    drop(lane);
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn a_deadline_through_a_lane_cancels_like_any_other() {
    static LANE: Lane<4> = Lane::new();
    let (handle, mut event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    event_loop.register_lane(&LANE).unwrap();
    let lp = LoopThread::spawn(event_loop);
    let lane = handle.lane(&LANE).unwrap();
    let (a, b) = socket_pair();
    let deadline = Some(Instant::now() + Duration::from_millis(30));
    let op = handle
        .recv(b.clone(), IoBufMut::with_capacity(2))
        .exact(2)
        .deadline(deadline);
    let (_, e) = lane.submit(op).wait().unwrap_err().into_parts();
    assert_eq!(e, Error::Timeout);
    assert_eq!(handle.metrics().cancel_sqes, 1);
    (&*a).write_all(b"ok").unwrap();
    let op = handle.recv(b, IoBufMut::with_capacity(2)).exact(2);
    assert_eq!(
        &lane.submit(op).wait().unwrap().0[..],
        b"ok",
        "nothing was lost"
    );
    drop((lane, handle));
    lp.join(HANG).unwrap();
}

#[test]
fn one_producer_per_lane_and_only_on_its_loop() {
    static LANE: Lane<4> = Lane::new();
    static OTHER: Lane<4> = Lane::new();
    let (handle, mut event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    event_loop.register_lane(&LANE).unwrap();
    assert_eq!(
        handle.lane(&OTHER).map(|_| ()),
        Err(Error::Config(
            "the lane is not registered with this handle's loop (EventLoop::register_lane)"
        ))
    );
    let first = handle.lane(&LANE).unwrap();
    assert_eq!(handle.lane(&LANE).map(|_| ()), Err(Error::InUse));
    // The handle moves to another thread and submits there; then the lane is free again.
    let lp = LoopThread::spawn(event_loop);
    let h = handle.clone();
    std::thread::spawn(move || first.submit(h.nop()).wait().unwrap())
        .join()
        .unwrap();
    let second = handle
        .lane(&LANE)
        .expect("released by the first producer's drop");
    second.submit(handle.nop()).wait().unwrap();
    drop((second, handle));
    lp.join(HANG).unwrap();
}

#[test]
fn a_lane_registered_with_an_earlier_loop_is_refused_by_the_next() {
    // A static storage's next loop polls only the lanes it registered: a stale binding must not
    // send requests where nobody reads them.
    static STORAGE: Storage<4, 4, 64> = Storage::new();
    static LANE: Lane<4> = Lane::new();
    let (handle, mut event_loop) = static_uring::with_storage(&STORAGE, config()).unwrap();
    event_loop.register_lane(&LANE).unwrap();
    let lp = LoopThread::spawn(event_loop);
    handle
        .lane(&LANE)
        .unwrap()
        .submit(handle.nop())
        .wait()
        .unwrap();
    drop(handle);
    lp.join(HANG).unwrap();

    let (handle, event_loop) = static_uring::with_storage(&STORAGE, config()).unwrap();
    assert!(matches!(handle.lane(&LANE), Err(Error::Config(_))));
    let lp = LoopThread::spawn(event_loop);
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn requests_queued_in_a_lane_are_answered_at_shutdown() {
    // RING = 1: a recv that waits holds the only kernel entry, so the lane's nops stay queued.
    // With a zero budget the drain answers them Closed; none is lost or left waiting.
    static LANE: Lane<4> = Lane::new();
    let cfg = Config {
        shutdown_timeout: Some(Duration::ZERO),
        ..config()
    };
    let (handle, mut event_loop) = static_uring::new::<4, 1, 64>(cfg).unwrap();
    event_loop.register_lane(&LANE).unwrap();
    let lp = LoopThread::spawn(event_loop);
    let (_a, b) = socket_pair();
    let blocker = handle
        .recv(b, IoBufMut::with_capacity(1))
        .exact(1)
        .try_submit()
        .unwrap();
    let lane = handle.lane(&LANE).unwrap();
    let mut queued: Vec<_> = (0..2)
        .map(|_| Box::pin(lane.submit(handle.nop())))
        .collect();
    for op in &mut queued {
        assert!(
            poll_once(op.as_mut()).is_none(),
            "queued behind the blocker"
        );
    }
    drop(handle); // the last handle: the loop drains (the lane does not keep it alive)
    for op in queued {
        let result = block_on(HANG, op);
        assert!(matches!(result, Err(Error::Closed) | Ok(())), "{result:?}");
    }
    assert!(blocker.wait().is_err());
    lp.join(HANG).unwrap();
    drop(lane);
}

#[test]
fn a_lane_and_shared_producers_feed_one_loop() {
    static LANE: Lane<16> = Lane::new();
    let (handle, mut event_loop) = static_uring::new::<16, 8, 64>(config()).unwrap();
    event_loop.register_lane(&LANE).unwrap();
    let lp = LoopThread::spawn(event_loop);
    let shared: Vec<_> = (0..2)
        .map(|_| {
            let h = handle.clone();
            std::thread::spawn(move || {
                for _ in 0..5_000 {
                    h.nop().wait().unwrap();
                }
            })
        })
        .collect();
    let lane = handle.lane(&LANE).unwrap();
    for _ in 0..5_000 {
        lane.submit(handle.nop()).wait().unwrap();
    }
    for t in shared {
        t.join().unwrap();
    }
    assert_eq!(handle.metrics().completed, 15_000);
    drop((lane, handle));
    lp.join(HANG).unwrap();
}

/// Issue 16, item 3: a lane polled by one live loop cannot be registered with another (the
/// first would pop the second's slot indices as its own); once the first loop is gone, it can.
#[test]
fn a_lane_held_by_a_live_loop_is_refused_by_another() {
    static LANE: Lane<4> = Lane::new();
    let (first, mut first_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    first_loop.register_lane(&LANE).unwrap();
    first_loop
        .register_lane(&LANE)
        .expect("registering again with the same loop is a no-op");
    let (second, mut second_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    assert_eq!(second_loop.register_lane(&LANE), Err(Error::InUse));
    // The first loop still owns the lane and serves it.
    serve_one_through(&LANE, first, first_loop);
    // The first loop is gone: the second takes the lane over.
    second_loop.register_lane(&LANE).unwrap();
    serve_one_through(&LANE, second, second_loop);
}

/// Runs `event_loop`, sends one nop through `lane`, and shuts the loop down.
fn serve_one_through(
    lane: &'static Lane<4>,
    handle: static_uring::Handle<4, 4, 64>,
    event_loop: static_uring::EventLoop<4, 4, 64>,
) {
    let lp = LoopThread::spawn(event_loop);
    let producer = handle.lane(lane).unwrap();
    producer.submit(handle.nop()).wait().unwrap();
    drop((producer, handle));
    lp.join(HANG).unwrap();
}

/// A loop dropped without running gives its lanes back too.
#[test]
fn a_dropped_loop_gives_its_lanes_back() {
    static LANE: Lane<4> = Lane::new();
    let (first, mut first_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    first_loop.register_lane(&LANE).unwrap();
    drop((first, first_loop));
    let (second, mut second_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    second_loop.register_lane(&LANE).unwrap();
    drop((second, second_loop));
}
