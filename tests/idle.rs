//! Idle policies: busy-poll never sleeps yet keeps every rule (deadlines fire, shutdown ends);
//! the adaptive spin keeps serving correctly whether requests come close together or far apart.

mod common;

use std::time::{Duration, Instant};

use common::*;
use static_uring::{Config, Error, IoBufMut};

#[test]
fn busy_poll_never_sleeps_and_keeps_deadlines_and_shutdown() {
    let cfg = Config {
        busy_poll: true,
        idle_spin: Duration::ZERO,
        timeout_wheel_tick: Duration::from_millis(1),
        ..Config::default()
    };
    let (handle, lp) = start::<8, 8, 64>(cfg);
    for _ in 0..50 {
        handle.nop().wait().unwrap();
        std::thread::sleep(Duration::from_micros(300));
    }
    // A deadline fires although the loop never waits in the kernel with a timeout.
    let (_a, b) = socket_pair();
    let start = Instant::now();
    let deadline = Some(start + Duration::from_millis(30));
    let (_, e) = handle
        .recv(b, IoBufMut::with_capacity(1))
        .limit(1)
        .deadline(deadline)
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!(e, Error::Timeout);
    assert!(start.elapsed() >= Duration::from_millis(30));
    let m = handle.metrics();
    assert_eq!(m.wakeups, 0, "a busy-polling loop is never woken: {m:?}");
    // Shutdown: the last handle's exit reaches a loop that never sleeps.
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn busy_poll_without_deadlines_still_retires_a_dropped_timer() {
    // A busy loop spins instead of making empty passes; what its polls do not watch must still
    // reach it, with no other request to bring it round: here a dropped sleep, whose caller
    // notes the drop without waking a loop that never sleeps.
    let cfg = Config {
        busy_poll: true,
        idle_spin: Duration::ZERO,
        ..Config::default()
    };
    let (handle, lp) = start::<8, 8, 64>(cfg);
    handle.nop().wait().unwrap();
    let mut sleep = Box::pin(handle.sleep(Duration::from_secs(3600)));
    assert!(poll_once(sleep.as_mut()).is_none(), "an hour: pending");
    // Time for the loop to take it (a sleep is the loop's own timer: no SQE to count).
    std::thread::sleep(Duration::from_millis(20));
    drop(sleep);
    wait_until(HANG, "the busy loop retires the dropped sleep", || {
        handle.metrics().orphaned == 1
    });
    assert_eq!(
        handle.metrics().wakeups,
        0,
        "never woken: it found the drop itself"
    );
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn adaptive_spin_serves_bursts_and_sparse_requests_alike() {
    // Budget grows during bursts and shrinks over long gaps; either way every request is served
    // and, after a long gap, the sleeping loop is woken through the eventfd.
    let cfg = Config {
        idle_spin: Duration::from_micros(200),
        ..Config::default()
    };
    let (handle, lp) = start::<8, 8, 64>(cfg);
    for round in 0..3 {
        for _ in 0..200 {
            handle.nop().wait().unwrap();
        }
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(3));
            handle.nop().wait().unwrap();
        }
        assert!(handle.metrics().completed >= 205 * (round + 1));
    }
    let m = handle.metrics();
    assert!(
        m.wakeups >= 1,
        "sparse requests found the loop asleep: {m:?}"
    );
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn a_retry_completed_inside_the_submitting_enter_is_staged_at_once_under_a_long_spin() {
    // A read of 64 bytes from a 5-byte file completes inside the enter that submits it (page
    // cache), short: the loop delivers that CQE before it spins and must then stage the retry
    // (which finds the end of file) at once. A retry left behind would wait out the spin (ten
    // seconds: the budget starts full), and a loop that then slept would never wake for it.
    let cfg = Config {
        idle_spin: Duration::from_secs(10),
        ..Config::default()
    };
    let (handle, lp) = start::<8, 8, 64>(cfg);
    let file = TempFile::with_contents(b"short");
    for _ in 0..20 {
        let h = handle.clone();
        let fd = file.file.clone();
        let (buf, e) = with_timeout(HANG, move || {
            h.read_at(fd, 0, IoBufMut::with_capacity(64))
                .wait()
                .unwrap_err()
                .into_parts()
        });
        assert_eq!((&buf[..], e), (&b"short"[..], Error::UnexpectedEof));
    }
    assert!(handle.metrics().requeued >= 20, "{:?}", handle.metrics());
    drop(handle);
    lp.join(HANG).unwrap();
}

/// A loop without a spin submits a staged send before it arms its sleep (a send usually
/// completes at once); one that waits for room in the socket's buffer must still let the loop
/// sleep, not send it round and round: a handful of enters while nobody reads for 100 ms, and
/// every byte arrives once the other end does.
#[test]
fn a_send_that_waits_for_room_lets_a_loop_without_spin_sleep() {
    a_send_that_waits_for_room_lets_the_loop_sleep(config());
}

/// The same under a spin budget, where a staged send (no caller owed) also sends the loop round
/// at once instead of into its spin: once the send waits, the loop spins out its budget and
/// sleeps.
#[test]
fn a_send_that_waits_for_room_lets_a_spinning_loop_sleep() {
    a_send_that_waits_for_room_lets_the_loop_sleep(Config {
        idle_spin: Duration::from_millis(1),
        ..config()
    });
}

fn a_send_that_waits_for_room_lets_the_loop_sleep(cfg: Config) {
    const LEN: usize = 1 << 20;
    let (handle, lp) = start::<8, 8, 64>(cfg);
    let (a, b) = socket_pair();
    set_sndbuf(&*a, 16 * 1024);
    let bytes: Vec<u8> = (0..LEN).map(|i| (i * 13 % 251) as u8).collect();
    let sender = {
        let (handle, bytes) = (handle.clone(), bytes.clone());
        Background::spawn(move || handle.send(a, static_uring::IoBuf::from(bytes)).wait())
    };
    // The send fills the buffer and waits: the loop settles once its enters stop moving
    // (however late a loaded machine runs the sender).
    wait_until(HANG, "the send is submitted", || {
        handle.metrics().submitted > 0
    });
    let during = enters_once_settled(|| handle.metrics().enters);
    // A loop sending the send round would enter thousands of times in 100 ms.
    assert!(
        during <= 10,
        "the loop slept while the send waited: {during} enters"
    );
    let mut got = Vec::with_capacity(LEN);
    let mut chunk = vec![0; 64 * 1024];
    while got.len() < LEN {
        use std::io::Read;
        let n = (&*b).read(&mut chunk).unwrap();
        assert!(n > 0, "the sender's end closed early");
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(got == bytes, "every byte, in order");
    assert!(sender.join(HANG).is_ok());
    drop(handle);
    lp.join(HANG).unwrap();
}

/// In `block_on`, a lone request made on the loop thread of a kind that usually completes
/// inside the enter that submits it (a nop, a send, a read or write) sends the loop round
/// instead of into its sleep. One that does not complete there (a read of a socket nobody
/// writes) costs that pass and an enter more; then the loop sleeps, and the read still
/// completes once data arrives.
#[test]
fn a_lone_local_read_that_waits_lets_the_loop_sleep() {
    let (handle, event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    let reader = event_loop.metrics_reader();
    let (a, b) = socket_pair();
    let task = Background::spawn(move || {
        event_loop.block_on(async move {
            // A warm-up that completes at once, through the same rule.
            handle.nop().local().await.unwrap();
            let buf = handle
                .read_at(b, 0, IoBufMut::with_capacity(4))
                .limit(4)
                .local()
                .await
                .unwrap();
            buf.to_vec()
        })
    });
    wait_until(HANG, "the read is submitted", || {
        reader.get().submitted >= 2
    });
    let during = enters_once_settled(|| reader.get().enters);
    assert!(
        during <= 10,
        "the loop slept while the read waited: {during} enters"
    );
    use std::io::Write;
    (&*a).write_all(b"data").unwrap();
    let got = task.join(HANG).expect("block_on returns");
    assert_eq!(got, b"data");
}

/// The loop's enters (`enters`) over 100 ms, counted once they stop moving (however late a loaded
/// machine runs the request that makes the loop wait).
fn enters_once_settled(enters: impl Fn() -> u64) -> u64 {
    let mut last = enters();
    wait_until(HANG, "the loop settles into its sleep", || {
        std::thread::sleep(Duration::from_millis(20));
        let now = enters();
        std::mem::replace(&mut last, now) == now
    });
    let before = enters();
    std::thread::sleep(Duration::from_millis(100));
    enters() - before
}
