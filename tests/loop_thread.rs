//! Loop-thread mode (`EventLoop::block_on`): a future run on the loop thread itself submits
//! without a cross-thread hop, while handles on other threads keep working.

mod common;

use std::io::Write;
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
            let nops: Vec<_> = (0..8).map(|_| handle.nop(None)).collect();
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
            remote.nop(None).wait().unwrap();
        }
        thread::sleep(Duration::from_millis(20));
        (&*a).write_all(b"wake").unwrap();
    });
    let got = with_timeout(HANG, move || {
        event_loop.block_on(async move {
            let (buf, _) = handle
                .recv(b, IoBufMut::with_capacity(4), 0, 4, true, None)
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
                    handle.nop(None).await.unwrap();
                }
                100
            })
        })
        .unwrap();
        assert_eq!(n, 100);
    }
}
