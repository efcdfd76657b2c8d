//! Request lifecycle end to end: futures dropped at every stage free their slots, backpressure
//! serves many callers through few slots, durable writes survive their callers, callers waiting
//! for a slot learn when the loop goes away, and a static storage serves loop after loop.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use static_uring::{Config, Error, Handle, IoBuf, IoBufMut, Storage};

fn zeroed(len: usize) -> IoBufMut {
    IoBufMut::from(vec![0u8; len])
}

/// Every one of the `S` slots is free (or becomes free: the loop may still be retiring a request):
/// `S` requests can be outstanding at once, and they finish.
fn all_slots_free<const S: usize, const R: usize, const W: usize>(handle: &Handle<S, R, W>) {
    let start_at = Instant::now();
    loop {
        let mut ops = Vec::new();
        let mut full = false;
        for _ in 0..S {
            match handle.nop().try_submit() {
                Ok(op) => ops.push(op),
                Err(Error::Full) => {
                    full = true;
                    break;
                }
                Err(e) => panic!("nop().try_submit() failed: {e}"),
            }
        }
        if !full {
            assert_eq!(
                err(handle.nop().try_submit()),
                Error::Full,
                "more than {S} slots?"
            );
        }
        let held = ops.len();
        for op in ops {
            with_timeout(HANG, move || op.wait()).unwrap();
        }
        if !full {
            break;
        }
        assert!(
            start_at.elapsed() < HANG,
            "only {held} of {S} slots ever free"
        );
        thread::sleep(Duration::from_millis(1));
    }
    wait_until(HANG, "gauge back to 0", || {
        handle.metrics().pending_operations == 0
    });
}

#[test]
fn orphan_dropped_before_first_poll_submits_nothing() {
    // A future that was never polled has not claimed anything: dropping it must not submit,
    // hold a slot, or keep its descriptor.
    let (handle, lp) = start::<4, 4, 64>(config());
    let (_a, b) = socket_pair();
    let op = handle.recv(b.clone(), zeroed(4)).limit(4);
    assert_eq!(Arc::strong_count(&b), 2);
    drop(op);
    assert_eq!(Arc::strong_count(&b), 1, "the request went with the future");
    drop(
        handle
            .nop()
            .deadline(Instant::now() + Duration::from_millis(10)),
    );
    all_slots_free(&handle);
    let m = handle.metrics();
    assert_eq!(
        (m.submitted, m.orphaned),
        (4, 0),
        "only the probe nops were submitted: {m:?}"
    );
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn orphan_dropped_while_waiting_for_a_slot_leaves_no_trace() {
    // A caller that gives up while queued for a slot must leave the wait list, and one that
    // gives up after being granted a slot (but before using it) must give that slot back.
    let (handle, lp) = start::<1, 1, 64>(config());
    let (a, b) = socket_pair();
    let holder = handle.recv(b, zeroed(4)).limit(4).try_submit().unwrap();

    let mut waiting = Box::pin(handle.nop());
    assert!(
        poll_once(waiting.as_mut()).is_none(),
        "no slot: the caller waits"
    );
    drop(waiting);

    let mut granted = Box::pin(handle.nop());
    assert!(poll_once(granted.as_mut()).is_none());
    (&*a).write_all(b"x").unwrap();
    let (buf, n) = with_timeout(HANG, move || holder.wait()).unwrap();
    assert_eq!(&buf[..n], b"x");
    // Freeing the holder's slot handed it to `granted`, which now leaves without using it.
    drop(granted);

    all_slots_free(&handle);
    let m = handle.metrics();
    assert_eq!(
        (m.submitted, m.orphaned),
        (2, 0),
        "neither waiter submitted anything: {m:?}"
    );
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn orphan_dropped_while_queued_is_never_submitted() {
    // 9.1.29: requests dropped while still in the submission ring (the loop has not looked yet)
    // are retired by the loop without I/O, deadline or not, through try_* and the lazy path.
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    let (a, b) = socket_pair();
    let file = TempFile::with_contents(b"0123456789");
    drop(
        handle
            .recv(b.clone(), zeroed(4))
            .limit(4)
            .deadline(Instant::now() + Duration::from_millis(100))
            .try_submit()
            .unwrap(),
    );
    drop(
        handle
            .send(a.clone(), IoBuf::from(&b"no"[..]))
            .try_submit()
            .unwrap(),
    );
    let mut lazy = Box::pin(handle.read_at(file.file.clone(), 0, zeroed(4)).limit(4));
    assert!(poll_once(lazy.as_mut()).is_none(), "first poll submits");
    drop(lazy);
    let lp = LoopThread::spawn(event_loop);
    wait_until(HANG, "all three orphans retired", || {
        handle.metrics().orphaned == 3
    });
    assert_eq!(handle.metrics().submitted, 0);
    assert_eq!(
        (Arc::strong_count(&a), Arc::strong_count(&b)),
        (1, 1),
        "descriptors released"
    );
    all_slots_free(&handle);
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn orphan_dropped_in_flight_retires_at_its_deadline() {
    // 9.1.30 / 2.9 / A9: an orphan in the kernel is not cancelled early: it keeps its slot until
    // its deadline sends the AsyncCancel, then the loop retires it and frees the slot.
    let (handle, lp) = start::<1, 1, 64>(config());
    let (a, b) = socket_pair();
    let deadline = Instant::now() + Duration::from_millis(80);
    let op = handle
        .recv(b, zeroed(8))
        .exact(8)
        .deadline(deadline)
        .try_submit()
        .unwrap();
    (&*a).write_all(b"half").unwrap();
    wait_until(HANG, "short read requeued", || {
        handle.metrics().requeued == 1
    });
    drop(op);
    thread::sleep(Duration::from_millis(20));
    if Instant::now() < deadline {
        assert_eq!(
            handle.metrics().pending_operations,
            1,
            "not cancelled before its deadline"
        );
        assert_eq!(
            err(handle.nop().try_submit()),
            Error::Full,
            "the orphan still holds the slot"
        );
    }
    wait_until(HANG, "orphan retired", || handle.metrics().orphaned == 1);
    assert!(Instant::now() >= deadline);
    assert_eq!(handle.metrics().cancel_sqes, 1);
    all_slots_free(&handle);
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn orphan_dropped_in_flight_without_deadline_retires_at_its_completion() {
    // A9: without a deadline an in-flight orphan stays in the kernel until its CQE; then it is
    // retired silently (its bytes are consumed) and its slot serves others.
    let (handle, lp) = start::<2, 2, 64>(config());
    let (a, b) = socket_pair();
    let op = handle
        .recv(b.clone(), zeroed(8))
        .limit(8)
        .try_submit()
        .unwrap();
    wait_until(HANG, "admitted", || handle.metrics().submitted == 1);
    drop(op);
    thread::sleep(Duration::from_millis(30));
    let m = handle.metrics();
    assert_eq!(
        (m.pending_operations, m.orphaned, m.cancel_sqes),
        (1, 0, 0),
        "no early cancel: {m:?}"
    );
    (&*a).write_all(b"eaten").unwrap();
    wait_until(HANG, "orphan retired", || handle.metrics().orphaned == 1);
    wait_until(HANG, "descriptor released", || Arc::strong_count(&b) == 1);
    all_slots_free(&handle);
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn orphan_dropped_after_completion_before_poll_frees_its_slot() {
    // The complete-versus-drop race, completion side: the result is stored, then the caller
    // leaves without taking it; the caller side must free the slot (and drop the result).
    let (handle, lp) = start::<2, 2, 64>(config());
    let (a, b) = socket_pair();
    (&*a).write_all(b"data").unwrap();
    let done = handle
        .recv(b.clone(), zeroed(8))
        .limit(8)
        .try_submit()
        .unwrap();
    // Polled once (so its waker is registered), then completed by data that arrives later.
    let (c, d) = socket_pair();
    let mut polled = Box::pin(handle.recv(d.clone(), zeroed(8)).limit(8));
    assert!(poll_once(polled.as_mut()).is_none(), "no data yet");
    (&*c).write_all(b"later").unwrap();
    wait_until(HANG, "both completed", || handle.metrics().completed == 2);
    drop(done);
    drop(polled);
    assert_eq!(
        (Arc::strong_count(&b), Arc::strong_count(&d)),
        (1, 1),
        "the results and their descriptors were dropped"
    );
    assert_eq!(handle.metrics().orphaned, 0, "delivered, so not an orphan");
    all_slots_free(&handle);
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn two_hundred_callers_share_four_slots() {
    // Backpressure: 200 concurrent callers (100 blocking threads, 100 async tasks) through 4
    // slots and 2 SQ entries all complete, each with its own correct data.
    let (handle, lp) = start::<4, 2, 64>(config());
    const ROUNDS: usize = 3;
    let content: Vec<u8> = (0..200 * 4).map(|i| (i * 7 % 256) as u8).collect();
    let file = TempFile::with_contents(&content);
    let expect = |i: usize| content[i * 4..i * 4 + 4].to_vec();

    let threads: Vec<_> = (0..100)
        .map(|i| {
            let (handle, file, want) = (handle.clone(), file.file.clone(), expect(i));
            thread::spawn(move || {
                for _ in 0..ROUNDS {
                    handle.nop().wait().unwrap();
                    let buf = handle
                        .read_at(file.clone(), (i * 4) as u64, zeroed(4))
                        .limit(4)
                        .wait()
                        .unwrap();
                    assert_eq!(&buf[..], &want[..]);
                }
            })
        })
        .collect();
    let tasks = (100..200).map(|i| {
        let (handle, file, want) = (handle.clone(), file.file.clone(), expect(i));
        async move {
            for _ in 0..ROUNDS {
                handle.nop().await.unwrap();
                let buf = handle
                    .read_at(file.clone(), (i * 4) as u64, zeroed(4))
                    .limit(4)
                    .await
                    .unwrap();
                assert_eq!(&buf[..], &want[..]);
            }
        }
    });
    block_on(Duration::from_secs(60), join_all(tasks));
    for t in threads {
        let start_at = Instant::now();
        while !t.is_finished() {
            assert!(
                start_at.elapsed() < Duration::from_secs(60),
                "a blocking caller hung"
            );
            thread::sleep(Duration::from_millis(1));
        }
        t.join().expect("caller thread panicked");
    }
    wait_until(HANG, "idle", || handle.metrics().pending_operations == 0);
    let m = handle.metrics();
    assert_eq!(m.completed, (200 * ROUNDS * 2) as u64, "{m:?}");
    all_slots_free(&handle);
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn dropped_write_at_still_writes() {
    // A9: durable writes (and syncs) run to completion even when nobody waits for them: dropped
    // while queued, right after submission, or after the first poll.
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    let file = TempFile::new();
    drop(
        handle
            .write_at(file.file.clone(), 0, IoBuf::from(&b"queued-"[..]))
            .try_submit()
            .unwrap(),
    );
    let lp = LoopThread::spawn(event_loop);
    drop(
        handle
            .write_at(file.file.clone(), 7, IoBuf::from(b"in-flight-".to_vec()))
            .try_submit()
            .unwrap(),
    );
    let mut polled = Box::pin(handle.write_at(file.file.clone(), 17, IoBuf::from(&b"polled"[..])));
    let _ = poll_once(polled.as_mut());
    drop(polled);
    drop(handle.sync(file.file.clone()).try_submit().unwrap());
    drop(handle);
    lp.join(HANG).unwrap();
    assert_eq!(file.contents(), b"queued-in-flight-polled");
}

#[test]
fn caller_waiting_for_a_slot_is_closed_when_the_last_handle_goes() {
    // A caller blocked on a free slot must not sleep until the drain ends (which may be never):
    // once no handle is left it gets Closed at once (its request was never submitted), blocking
    // or async, while the loop still drains the request that holds the slot.
    let (handle, lp) = start::<1, 1, 64>(config());
    let (a, b) = socket_pair();
    let holder = handle.recv(b, zeroed(4)).limit(4).try_submit().unwrap();
    let blocked = handle.nop();
    let blocked = Background::spawn(move || blocked.wait());
    let mut waiting = Box::pin(handle.nop());
    assert!(poll_once(waiting.as_mut()).is_none());
    thread::sleep(Duration::from_millis(30));
    assert!(!blocked.is_finished(), "no slot: the caller waits");
    drop(handle);
    assert_eq!(blocked.join(HANG), Err(Error::Closed));
    assert_eq!(block_on(HANG, waiting), Err(Error::Closed));
    assert!(!lp.is_finished(), "the drain still waits for the holder");
    (&*a).write_all(b"done").unwrap();
    let (buf, n) = with_timeout(HANG, move || holder.wait()).unwrap();
    assert_eq!(&buf[..n], b"done");
    lp.join(HANG).unwrap();
}

#[test]
fn caller_waiting_for_a_slot_is_closed_when_the_loop_is_dropped() {
    // A13: a loop that goes away while callers wait (here: dropped without running) answers the
    // waiters and the queued requests with Closed.
    let (handle, event_loop) = static_uring::new::<1, 1, 64>(config()).unwrap();
    let queued = handle.nop().try_submit().unwrap();
    let blocked = handle.nop();
    let blocked = Background::spawn(move || blocked.wait());
    thread::sleep(Duration::from_millis(30));
    assert!(!blocked.is_finished());
    drop(event_loop);
    assert_eq!(blocked.join(HANG), Err(Error::Closed));
    assert_eq!(
        with_timeout(HANG, move || queued.wait()),
        Err(Error::Closed)
    );
    assert_eq!(err(handle.nop().try_submit()), Error::Closed);
}

#[test]
fn static_storage_serves_loop_after_loop() {
    // A static storage is reused across loops: orphans, timeouts and abandoned-but-released
    // requests of one loop must not cost the next loop any slot.
    static STORAGE: Storage<4, 2, 64> = Storage::new();
    let (a, b) = socket_pair();
    for round in 0..4 {
        let cfg = Config {
            shutdown_timeout: Some(Duration::from_millis(30)),
            ..config()
        };
        let (handle, event_loop) = static_uring::with_storage(&STORAGE, cfg).expect("claimable");
        assert_eq!(handle.metrics().completed, 0, "fresh counters");
        let lp = LoopThread::spawn(event_loop);
        all_slots_free(&handle);
        match round {
            // Orphans left behind at shutdown.
            0 => {
                drop(
                    handle
                        .recv(b.clone(), zeroed(4))
                        .limit(4)
                        .deadline(Instant::now() + Duration::from_millis(20))
                        .try_submit()
                        .unwrap(),
                );
                drop(handle.nop().try_submit().unwrap());
                drop(handle);
            }
            // A timeout.
            1 => {
                let op = handle
                    .recv(b.clone(), zeroed(4))
                    .limit(4)
                    .deadline(Instant::now() + Duration::from_millis(20))
                    .try_submit()
                    .unwrap();
                assert_eq!(
                    with_timeout(HANG, move || op.wait()).unwrap_err().error,
                    Error::Timeout
                );
                drop(handle);
            }
            // Abandoned at shutdown (the kernel releases a cancelled recv at once).
            2 => {
                let op = handle
                    .recv(b.clone(), zeroed(4))
                    .limit(4)
                    .try_submit()
                    .unwrap();
                drop(handle);
                assert_eq!(
                    with_timeout(HANG, move || op.wait()).unwrap_err().error,
                    Error::Abandoned
                );
            }
            _ => {
                (&*a).write_all(b"last").unwrap();
                let (buf, n) = handle.recv(b.clone(), zeroed(4)).exact(4).wait().unwrap();
                assert_eq!(&buf[..n], b"last");
                drop(handle);
            }
        }
        lp.join(HANG).unwrap();
    }
    assert_eq!(Arc::strong_count(&b), 1, "no request kept the socket");
}

// ---- Cancel on drop (`Config::cancel_on_drop`) ------------------------------------------------

fn cancelling() -> Config {
    Config {
        cancel_on_drop: true,
        ..config()
    }
}

/// The two modes side by side: a recv dropped in flight keeps running by default (the model's
/// semantics: it eats the next bytes), and is cancelled with `cancel_on_drop` (the next recv
/// gets them). Either way the slot comes back.
#[test]
fn a_dropped_recv_eats_data_by_default_and_is_cancelled_with_cancel_on_drop() {
    for (cfg, cancelled) in [(config(), false), (cancelling(), true)] {
        let (handle, lp) = start::<4, 4, 64>(cfg);
        let (a, b) = socket_pair();
        let mut first = Box::pin(handle.recv(b.clone(), zeroed(5)).exact(5));
        assert!(poll_once(first.as_mut()).is_none());
        wait_until(HANG, "recv in flight", || handle.metrics().submitted == 1);
        drop(first);
        if cancelled {
            wait_until(HANG, "the orphan is cancelled and retired", || {
                handle.metrics().orphaned == 1
            });
            assert_eq!(handle.metrics().cancel_sqes, 1);
        }
        (&*a).write_all(b"firstsecnd").unwrap();
        let (buf, _) = with_timeout(HANG, {
            let h = handle.clone();
            move || h.recv(b, zeroed(5)).exact(5).wait()
        })
        .unwrap();
        let expected: &[u8] = if cancelled { b"first" } else { b"secnd" };
        assert_eq!(&buf[..], expected, "cancel_on_drop: {cancelled}");
        all_slots_free(&handle);
        drop(handle);
        lp.join(HANG).unwrap();
    }
}

/// `read_at` (here on an empty pipe, which keeps it in the kernel) and `nop` are cancelled too;
/// `write_at` and `sync` still run to completion.
#[test]
fn cancel_on_drop_cancels_reads_but_lets_durable_writes_finish() {
    let (handle, lp) = start::<4, 4, 64>(cancelling());
    let (reader, writer) = pipe();
    let mut read = Box::pin(handle.read_at(reader, 0, zeroed(4)).limit(4));
    assert!(poll_once(read.as_mut()).is_none());
    wait_until(HANG, "read in flight", || handle.metrics().submitted == 1);
    drop(read);
    wait_until(HANG, "the read is cancelled and retired", || {
        handle.metrics().orphaned == 1
    });
    let file = TempFile::new();
    let mut write = Box::pin(handle.write_at(file.file.clone(), 0, IoBuf::from(&b"kept"[..])));
    let _ = poll_once(write.as_mut());
    drop(write);
    drop(handle.sync(file.file.clone()).try_submit().unwrap());
    drop(handle);
    lp.join(HANG).unwrap();
    assert_eq!(file.contents(), b"kept");
    drop(writer);
}

/// With `shutdown_timeout: None`, a dropped recv no longer holds the shutdown: it is cancelled
/// and the loop exits.
#[test]
fn cancel_on_drop_lets_a_shutdown_without_budget_end() {
    let (handle, event_loop) = static_uring::new::<4, 4, 64>(cancelling()).unwrap();
    let reader = event_loop.metrics_reader();
    let lp = LoopThread::spawn(event_loop);
    let (_a, b) = socket_pair();
    let mut recv = Box::pin(handle.recv(b, zeroed(4)).limit(4));
    assert!(poll_once(recv.as_mut()).is_none());
    wait_until(HANG, "recv in flight", || handle.metrics().submitted == 1);
    drop(handle);
    drop(recv);
    lp.join(HANG).unwrap();
    let m = reader.get();
    assert_eq!((m.orphaned, m.cancel_sqes, m.pending_operations), (1, 1, 0));
}

/// An empty pipe, both ends shared through `Arc`s.
fn pipe() -> (Arc<std::fs::File>, Arc<std::fs::File>) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `pipe2` writes two new descriptors into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the descriptors are new and owned by nothing else.
    let (r, w) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    (Arc::new(r), Arc::new(w))
}

/// A dropped recv holding the only table entry (`RING = 1`) is cancelled although the loop
/// waits in the kernel with its table full, so the request queued behind it runs.
#[test]
fn cancel_on_drop_frees_a_full_table() {
    let (handle, lp) = start::<2, 1, 64>(cancelling());
    let (_a, b) = socket_pair();
    let mut recv = Box::pin(handle.recv(b, zeroed(4)).limit(4));
    assert!(poll_once(recv.as_mut()).is_none());
    wait_until(HANG, "recv in flight", || handle.metrics().submitted == 1);
    let behind = handle.nop().try_submit().unwrap();
    thread::sleep(Duration::from_millis(10));
    drop(recv);
    assert_eq!(with_timeout(HANG, move || behind.wait()), Ok(()));
    drop(handle);
    lp.join(HANG).unwrap();
}

/// Issue 16, item 5: with `cancel_on_drop`, a send dropped while in the kernel runs to
/// completion: resubmitted after each short transfer until the whole buffer is sent (here 1 MiB
/// over a Unix socket pair, far more than one send moves), the vectored form too.
#[test]
fn cancel_on_drop_lets_a_dropped_send_finish_whole() {
    const LEN: usize = 1 << 20;
    let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    for vectored in [false, true] {
        let (handle, lp) = start::<4, 4, 64>(cancelling());
        let (a, b) = socket_pair();
        if vectored {
            let bufs: static_uring::IoBufs = data
                .chunks(LEN / 2)
                .map(|part| IoBuf::from(part.to_vec()))
                .collect();
            drop_in_flight(&handle, handle.send_vectored(a, bufs));
        } else {
            drop_in_flight(&handle, handle.send(a, IoBuf::from(data.clone())));
        }
        // The reader drains the stream until the loop drops the sender's socket (EOF).
        let received = with_timeout(HANG, move || {
            let mut all = Vec::new();
            (&*b).read_to_end(&mut all).unwrap();
            all
        });
        assert_eq!(received.len(), LEN, "vectored: {vectored}");
        assert!(
            received == data,
            "vectored: {vectored}: the bytes arrive in order"
        );
        drop(handle);
        lp.join(HANG).unwrap();
    }
}

/// Polls `op` once (it must stay pending), waits until its first SQE is in the kernel, drops it.
fn drop_in_flight<F: std::future::Future>(handle: &Handle<4, 4, 64>, op: F) {
    let mut op = Box::pin(op);
    assert!(poll_once(op.as_mut()).is_none(), "still in flight");
    wait_until(HANG, "in flight", || handle.metrics().submitted >= 1);
    drop(op);
}
