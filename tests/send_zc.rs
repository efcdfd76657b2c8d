//! `send_zc` and `send_vectored_zc`: `send`'s rules (the whole buffer, short sends resumed at the
//! cursor, deadlines, dropped requests that still run, the buffer back intact) with the buffer
//! held by the loop until the kernel's notification; `Os(EOPNOTSUPP)` where zero copy is not to
//! be had (a Unix socket); `Abandoned` and no crash when the shutdown cuts one off.

mod common;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use static_uring::{BufPool, Config, Error, IoBuf, IoBufs, OpResult};

/// A connected TCP loopback pair: the sending end (shared, for `Fd`) and the receiving end.
fn tcp_pair() -> (Arc<TcpStream>, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (b, _) = listener.accept().unwrap();
    (Arc::new(a), b)
}

/// Waits for `op`, bounded by `HANG`.
fn wait<O: static_uring::op::Operation>(op: static_uring::Op<O, 4, 4, 64>) -> OpResult<O>
where
    OpResult<O>: Send,
{
    with_timeout(HANG, move || op.wait())
}

/// `len` bytes of a pattern that shows a byte out of place.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Reads exactly `len` bytes from `sock` on another thread.
fn reader(mut sock: TcpStream, len: usize) -> Background<Vec<u8>> {
    Background::spawn(move || {
        let mut got = vec![0u8; len];
        sock.read_exact(&mut got).unwrap();
        got
    })
}

#[test]
fn tcp_loopback_sends_every_size_whole_and_hands_the_same_buffer_back() {
    let (handle, lp) = start::<4, 4, 64>(config());
    for len in [64, 4096, 1 << 20] {
        let (a, b) = tcp_pair();
        if len > 4096 {
            set_sndbuf(&*a, 16 * 1024);
        }
        let before = handle.metrics();
        let bytes = pattern(len);
        let buf = IoBuf::from(bytes.clone());
        let ptr = buf.as_ptr();
        let got = reader(b, len);
        let back = wait(handle.send_zc(a, buf))
            .unwrap_or_else(|e| panic!("send_zc of {len} bytes: {:?}", e.error));
        assert_eq!(back.as_ptr(), ptr, "the very buffer comes back");
        assert_eq!(&back[..], &bytes[..], "intact");
        assert!(got.join(HANG) == bytes, "every byte arrives, in order");
        let m = handle.metrics();
        let sqes = m.submitted - before.submitted;
        assert_eq!(
            m.zero_copy_notifications - before.zero_copy_notifications,
            sqes,
            "one notification per SQE, each waited for"
        );
        assert!(m.zero_copy_copied <= m.zero_copy_notifications);
        if len == 1 << 20 {
            assert!(
                sqes > 1,
                "a 1 MiB send through a 16 KiB buffer is short: {sqes} SQE"
            );
            assert_eq!(m.requeued - before.requeued, sqes - 1);
        }
    }
    assert_eq!(handle.metrics().pending_operations, 0);
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn loopback_is_copied_after_all_and_says_so() {
    // The kernel copies every zero-copy send whose peer is local (msg_zerocopy.rst: "deferred
    // copy" on loopback) and, since 6.2, reports it in the notification.
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a, b) = tcp_pair();
    let got = reader(b, 64 * 1024);
    wait(handle.send_zc(a, IoBuf::from(pattern(64 * 1024)))).unwrap();
    got.join(HANG);
    let m = handle.metrics();
    assert!(m.zero_copy_notifications >= 1);
    assert_eq!(m.zero_copy_copied, m.zero_copy_notifications, "{m:?}");
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn unix_sockets_cannot_send_zero_copy_and_get_the_buffer_back() {
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a, b) = socket_pair();
    for len in [64, 4096, 1 << 20] {
        let bytes = pattern(len);
        let buf = IoBuf::from(bytes.clone());
        let ptr = buf.as_ptr();
        let e = wait(handle.send_zc(a.clone(), buf)).unwrap_err();
        assert_eq!(e.error, Error::Os(libc::EOPNOTSUPP), "{len} bytes");
        assert_eq!((e.buf.as_ptr(), &e.buf[..]), (ptr, &bytes[..]));
    }
    let parts: IoBufs = [IoBuf::from(&b"ab"[..]), IoBuf::from(&b"cd"[..])]
        .into_iter()
        .collect();
    let e = wait(handle.send_vectored_zc(a.clone(), parts)).unwrap_err();
    assert_eq!(e.error, Error::Os(libc::EOPNOTSUPP));
    assert_eq!(e.buf.len(), 2, "the buffers come back");
    assert!(drain_socket(&b).is_empty(), "nothing was sent");
    // The loop and its slots are fine: the plain send works on the same socket.
    wait(handle.send(a, IoBuf::from(&b"plain"[..]))).unwrap();
    assert_eq!(drain_socket(&b), b"plain");
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn vectored_form_resumes_inside_whichever_buffer_the_kernel_stopped_in() {
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a, b) = tcp_pair();
    set_sndbuf(&*a, 16 * 1024);
    let whole = pattern(3 << 19);
    let parts = [&whole[..7], &whole[7..(1 << 19)], &whole[(1 << 19)..]];
    let bufs: IoBufs = parts.iter().map(|p| IoBuf::from(p.to_vec())).collect();
    let ptrs: Vec<_> = bufs.iter().map(|b| b.as_ptr()).collect();
    let got = reader(b, whole.len());
    let before = handle.metrics();
    let back = wait(handle.send_vectored_zc(a, bufs)).unwrap();
    assert_eq!(back.iter().map(|b| b.as_ptr()).collect::<Vec<_>>(), ptrs);
    assert!(got.join(HANG) == whole, "every byte, in order");
    let m = handle.metrics();
    assert!(
        m.submitted - before.submitted > 1,
        "short sends were resumed"
    );
    assert_eq!(
        m.zero_copy_notifications - before.zero_copy_notifications,
        m.submitted - before.submitted
    );
    // Empty buffers complete at once, without an SQE.
    let empty: IoBufs = [IoBuf::from(Vec::new())].into_iter().collect();
    let (a, _b) = tcp_pair();
    assert_eq!(
        wait(handle.send_vectored_zc(a.clone(), empty))
            .unwrap()
            .len(),
        1
    );
    assert!(wait(handle.send_zc(a, IoBuf::from(Vec::new())))
        .unwrap()
        .is_empty());
    assert_eq!(handle.metrics().submitted, m.submitted);
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn a_deadline_ends_a_blocked_send_timeout_once_the_kernel_lets_go_of_the_buffer() {
    // The peer reads nothing until well after the deadline: the SQE waiting for room is
    // cancelled, but bytes already queued on the socket keep the buffer in the kernel until the
    // peer acknowledges them, so the `Timeout` (with the buffer) comes once the peer reads.
    let (handle, lp) = start::<4, 4, 64>(config());
    for vectored in [false, true] {
        let (a, b) = tcp_pair();
        set_sndbuf(&*a, 16 * 1024);
        let bytes = pattern(8 << 20);
        let before = handle.metrics();
        let pending = if vectored {
            let bufs: IoBufs = [IoBuf::from(bytes.clone())].into_iter().collect();
            let op = handle
                .send_vectored_zc(a, bufs)
                .timeout(Duration::from_millis(50));
            Background::spawn(move || {
                op.wait()
                    .map(drop)
                    .map_err(|e| (e.error, e.buf[0].to_vec()))
            })
        } else {
            let op = handle
                .send_zc(a, IoBuf::from(bytes.clone()))
                .timeout(Duration::from_millis(50));
            Background::spawn(move || op.wait().map(drop).map_err(|e| (e.error, e.buf.to_vec())))
        };
        thread::sleep(Duration::from_millis(200));
        let drained = Background::spawn(move || {
            let mut b = b;
            b.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let mut sink = Vec::new();
            let _ = b.read_to_end(&mut sink);
            sink.len()
        });
        let (error, back) = pending.join(HANG).unwrap_err();
        assert_eq!(error, Error::Timeout, "vectored: {vectored}");
        assert!(back == bytes, "the buffer comes back intact");
        let m = handle.metrics();
        assert_eq!(m.timed_out - before.timed_out, 1);
        assert_eq!(
            m.zero_copy_notifications - before.zero_copy_notifications,
            m.submitted - before.submitted,
            "every SQE released before the result"
        );
        assert!(drained.join(HANG) < bytes.len(), "the rest was never sent");
    }
    assert_eq!(handle.metrics().pending_operations, 0);
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn a_dropped_send_zc_runs_to_completion_with_cancel_on_drop() {
    let (handle, lp) = start::<4, 4, 64>(Config {
        cancel_on_drop: true,
        ..config()
    });
    let (a, b) = tcp_pair();
    set_sndbuf(&*a, 16 * 1024);
    let bytes = pattern(1 << 20);
    let op = handle
        .send_zc(a, IoBuf::from(bytes.clone()))
        .try_submit()
        .unwrap();
    wait_until(HANG, "the send in flight", || {
        handle.metrics().submitted >= 1
    });
    drop(op);
    // Read only now: the orphan is still the loop's and goes on until every byte is sent.
    assert!(reader(b, bytes.len()).join(HANG) == bytes);
    wait_until(HANG, "the orphan retired", || {
        let m = handle.metrics();
        m.orphaned == 1 && m.pending_operations == 0
    });
    let m = handle.metrics();
    assert!(
        m.submitted > 1 && m.zero_copy_notifications == m.submitted,
        "{m:?}"
    );
    // Its slot is free again: all four can be taken.
    let nops: Vec<_> = (0..4).map(|_| handle.nop().try_submit().unwrap()).collect();
    for nop in nops {
        wait(nop).unwrap();
    }
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn a_dropped_send_zc_is_retired_only_after_its_notification_by_default() {
    // Default (A9): retired at its next completion, which for a zero-copy send is the
    // notification: the loop frees the slot and the buffer only once the kernel let go of it.
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a, b) = tcp_pair();
    set_sndbuf(&*a, 16 * 1024);
    let op = handle
        .send_zc(a, IoBuf::from(pattern(1 << 20)))
        .try_submit()
        .unwrap();
    wait_until(HANG, "the send in flight", || {
        handle.metrics().submitted >= 1
    });
    drop(op);
    let drained = Background::spawn(move || {
        let mut sink = Vec::new();
        let mut b = b;
        b.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let _ = b.read_to_end(&mut sink);
        sink
    });
    wait_until(HANG, "the orphan retired", || {
        handle.metrics().orphaned == 1
    });
    let m = handle.metrics();
    assert_eq!(
        m.zero_copy_notifications, m.submitted,
        "retired after the notification"
    );
    assert_eq!(m.pending_operations, 0);
    let sent = drained.join(HANG);
    assert!(!sent.is_empty() && sent[..] == pattern(1 << 20)[..sent.len()]);
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn shutdown_with_no_budget_abandons_a_blocked_send_zc_without_a_crash() {
    let (handle, lp) = start::<4, 4, 64>(Config {
        shutdown_timeout: Some(Duration::ZERO),
        ..config()
    });
    let (a, b) = tcp_pair(); // never read
    set_sndbuf(&*a, 16 * 1024);
    let single = handle.send_zc(a.clone(), IoBuf::from(pattern(8 << 20)));
    let single = Background::spawn(move || single.wait());
    let bufs: IoBufs = [IoBuf::from(pattern(8 << 20))].into_iter().collect();
    let vectored = handle.send_vectored_zc(a, bufs);
    let vectored = Background::spawn(move || vectored.wait().map(drop).map_err(|e| e.error));
    wait_until(HANG, "both sends in flight", || {
        handle.metrics().pending_operations == 2
    });
    thread::sleep(Duration::from_millis(20));
    handle.shutdown();
    lp.join(HANG).unwrap();
    let e = single.join(HANG).unwrap_err();
    assert_eq!(e.error, Error::Abandoned);
    // Back whole if the kernel released it in time, else parked (an empty buffer back).
    assert!(e.buf.is_empty() || e.buf[..] == pattern(8 << 20)[..]);
    assert_eq!(vectored.join(HANG), Err(Error::Abandoned));
    let m = handle.metrics();
    assert_eq!(m.abandoned, 2, "{m:?}");
    // Typically one is parked (its bytes wait in the socket's write queue for an ACK that never
    // comes, so its notification does not either) and the other released (cancelled while it
    // waited for room, nothing queued): both ends of the abandonment, under ASan too.
    drop(b);
}

#[test]
fn a_pool_buffer_is_sent_as_a_registered_buffer() {
    static POOL: BufPool<2, 4096> = BufPool::new();
    let (handle, mut event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    event_loop.register_buffers(&POOL).unwrap();
    let lp = LoopThread::spawn(event_loop);
    let (a, b) = tcp_pair();
    let mut out = POOL.take().unwrap();
    assert!(out.extend_from_slice(&pattern(4096)));
    let got = reader(b, 4096);
    let back = wait(handle.send_zc(a, IoBuf::from(out))).unwrap();
    assert_eq!(&back[..], &pattern(4096)[..]);
    assert!(got.join(HANG) == pattern(4096));
    assert_eq!(handle.metrics().fixed_buffers, 1);
    drop(handle);
    lp.join(HANG).unwrap();
}
