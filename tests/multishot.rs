//! Multishot streams (`Handle::accept_multi`, `Handle::recv_multi` into a `BufRing`): results in
//! order, queued while nobody asks, the ring running dry without losing data, the accept queue's
//! backpressure, `next` deadlines, dropped streams (cancelled, leases still valid, buffers back), the
//! end of a stream (end of file, the shutdown), and the ring's registration rules.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::*;
use static_uring::{BufRing, Config, Error, TaskPool};

type H = static_uring::Handle<16, 8, 64>;

/// A loop with `ring` registered, on its own thread.
fn start_with<const C: usize, const Z: usize>(
    ring: &'static BufRing<C, Z>,
    config: Config,
) -> (H, LoopThread) {
    let (handle, mut event_loop) = static_uring::new::<16, 8, 64>(config).unwrap();
    event_loop.register_buf_ring(ring).unwrap();
    (handle, LoopThread::spawn(event_loop))
}

/// Everything `stream` yields until it ends, with the error it ends with.
fn drain(stream: &mut static_uring::RecvStream<16, 8, 64>) -> (Vec<u8>, Error) {
    let mut bytes = Vec::new();
    loop {
        match stream.next().timeout(HANG).wait() {
            Ok(lease) => bytes.extend_from_slice(&lease),
            Err(e) => return (bytes, e),
        }
    }
}

#[test]
fn recv_multi_yields_every_byte_in_order_then_end_of_file() {
    static RING: BufRing<8, 64> = BufRing::new();
    let (handle, lt) = start_with(&RING, config());
    let (a, b) = UnixStream::pair().unwrap();
    let mut stream = handle.recv_multi(b, &RING).unwrap();
    let mut sent = Vec::new();
    for i in 0..200u32 {
        let msg = format!("message {i};");
        (&a).write_all(msg.as_bytes()).unwrap();
        sent.extend_from_slice(msg.as_bytes());
        if i % 3 == 0 {
            // Some taken at once, the rest queued while nobody asks.
            let lease = stream.next().timeout(HANG).wait().unwrap();
            assert!(!lease.is_empty() && lease.len() <= 64);
            let got = lease.to_vec();
            drop(lease);
            sent.drain(..got.len())
                .zip(got)
                .for_each(|(s, g)| assert_eq!(s, g));
        }
    }
    drop(a);
    let (rest, end) = drain(&mut stream);
    assert_eq!(rest, sent, "every byte once, in order");
    assert_eq!(end, Error::UnexpectedEof);
    // Ended: it stays ended.
    assert_eq!(stream.next().wait().unwrap_err(), Error::UnexpectedEof);
    drop((stream, handle));
    lt.join(HANG).unwrap();
}

#[test]
fn a_dry_ring_waits_for_leases_and_loses_nothing() {
    static RING: BufRing<2, 16> = BufRing::new();
    let (handle, lt) = start_with(&RING, config());
    let (a, b) = UnixStream::pair().unwrap();
    let mut stream = handle.recv_multi(b, &RING).unwrap();
    let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let writer = Background::spawn(move || {
        (&a).write_all(&data).unwrap();
        data
    });
    // Hold both buffers: the ring runs dry while the writer still has bytes to send.
    let first = stream.next().timeout(HANG).wait().unwrap();
    let second = stream.next().timeout(HANG).wait().unwrap();
    wait_until(HANG, "the ring ran dry", || {
        handle.metrics().buf_ring_dry > 0
    });
    let mut got = first.to_vec();
    got.extend_from_slice(&second);
    drop((first, second));
    while got.len() < 4096 {
        let lease = stream.next().timeout(HANG).wait().unwrap();
        got.extend_from_slice(&lease);
    }
    assert_eq!(got, writer.join(HANG));
    assert!(
        handle.metrics().stream_rearms > 0,
        "armed again after the dry spell"
    );
    drop((stream, handle));
    lt.join(HANG).unwrap();
}

#[test]
fn a_dropped_stream_is_cancelled_its_leases_stay_valid_and_its_buffers_come_back() {
    static RING: BufRing<4, 32> = BufRing::new();
    let (handle, lt) = start_with(&RING, config());
    let (a, b) = UnixStream::pair().unwrap();
    let mut stream = handle.recv_multi(b, &RING).unwrap();
    (&a).write_all(b"kept").unwrap();
    let lease = stream.next().timeout(HANG).wait().unwrap();
    // Most likely received into a buffer and queued in the stream before the drop (else the
    // cancel leaves it in the socket): either way no buffer may be lost.
    (&a).write_all(b"queued").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    drop(stream);
    assert_eq!(&lease[..], b"kept", "a lease outlives its stream");
    // The stream's slot comes back once the kernel lets go (cancelled whatever the config).
    wait_until(HANG, "the stream retired", || {
        handle.metrics().orphaned >= 1
    });
    drop(lease);
    // All four buffers are back: a new stream gets four messages without one being dropped.
    let (a, b) = UnixStream::pair().unwrap();
    let mut stream = handle.recv_multi(b, &RING).unwrap();
    let mut leases = Vec::new();
    for i in 0..4u8 {
        (&a).write_all(&[i]).unwrap();
        let lease = stream.next().timeout(HANG).wait().unwrap();
        assert_eq!(&lease[..], &[i]);
        leases.push(lease);
    }
    assert_eq!(handle.metrics().buf_ring_dry, 0);
    drop((leases, stream, handle));
    lt.join(HANG).unwrap();
}

#[test]
fn next_has_its_own_deadline_and_the_stream_goes_on_after_it() {
    static RING: BufRing<4, 32> = BufRing::new();
    let (handle, lt) = start_with(&RING, config());
    let (a, b) = UnixStream::pair().unwrap();
    let mut stream = handle.recv_multi(b, &RING).unwrap();
    let start = Instant::now();
    let waited = stream.next().timeout(Duration::from_millis(30)).wait();
    assert_eq!(waited.unwrap_err(), Error::Timeout);
    assert!(start.elapsed() >= Duration::from_millis(30));
    (&a).write_all(b"late").unwrap();
    assert_eq!(&stream.next().timeout(HANG).wait().unwrap()[..], b"late");
    drop((stream, handle));
    lt.join(HANG).unwrap();
}

#[test]
fn accept_multi_yields_every_connection_of_a_burst_and_refuses_none() {
    let (handle, lt) = start::<16, 8, 64>(config());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut stream = handle.accept_multi(listener).unwrap();
    // Eight times the stream's queue, all at once, nobody taking any yet: the stream queues
    // what fits and stops accepting; the rest wait in the listen backlog.
    let total = static_uring::op::ACCEPT_QUEUE * 8;
    let mut clients = Vec::new();
    for _ in 0..total {
        clients.push(std::net::TcpStream::connect(addr).unwrap());
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut accepted = Vec::new();
    while accepted.len() < total {
        let conn = stream.next().timeout(HANG).wait().unwrap();
        accepted.push(std::net::TcpStream::from(conn));
    }
    assert_eq!(handle.metrics().stream_refused, 0, "no connection refused");
    assert!(
        handle.metrics().stream_rearms >= total as u64 - 1,
        "armed once per connection"
    );
    // Each accepted connection is a live one: a byte from its client arrives.
    for (i, client) in clients.iter_mut().enumerate() {
        client.write_all(&[i as u8]).unwrap();
    }
    for conn in &mut accepted {
        let mut byte = [0u8];
        conn.set_read_timeout(Some(HANG)).unwrap();
        conn.read_exact(&mut byte).unwrap();
    }
    drop((stream, handle));
    lt.join(HANG).unwrap();
}

#[test]
fn streams_serve_pool_tasks_on_the_loop_thread() {
    static RING: BufRing<16, 128> = BufRing::new();
    let (handle, mut event_loop) = static_uring::new::<16, 8, 64>(config()).unwrap();
    event_loop.register_buf_ring(&RING).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let clients = Background::spawn(move || {
        for i in 0..3u8 {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(&[b'a' + i; 100]).unwrap();
            let mut echo = [0u8; 100];
            c.read_exact(&mut echo).unwrap();
            assert_eq!(echo, [b'a' + i; 100]);
        }
    });
    let served = with_timeout(HANG, move || {
        let pool = TaskPool::<_, 4>::leak();
        let done = std::rc::Rc::new(std::cell::Cell::new(0));
        let main = async move {
            let mut conns = handle.accept_multi(listener).unwrap();
            for _ in 0..3 {
                let conn = std::sync::Arc::new(conns.next().await.unwrap());
                let h = handle.clone();
                let done = done.clone();
                let task = async move {
                    let mut rx = h.recv_multi(conn.clone(), &RING).unwrap();
                    let mut echoed = 0;
                    while echoed < 100 {
                        let lease = rx.next().await.unwrap();
                        echoed += lease.len();
                        let buf = static_uring::IoBuf::from(lease.to_vec());
                        h.send(conn.clone(), buf).await.unwrap();
                    }
                    done.set(done.get() + 1);
                };
                assert!(pool.spawn(task).is_ok());
            }
            while done.get() < 3 {
                handle.sleep(Duration::from_millis(1)).await.unwrap();
            }
            done.get()
        };
        event_loop.block_on(pool.run(main)).unwrap()
    });
    assert_eq!(served, 3);
    clients.join(HANG);
}

#[test]
fn shutdown_ends_a_waiting_next_and_the_stream() {
    static RING: BufRing<4, 32> = BufRing::new();
    let config = Config {
        shutdown_timeout: Some(Duration::ZERO),
        ..config()
    };
    let (handle, lt) = start_with(&RING, config);
    let (_a, b) = UnixStream::pair().unwrap();
    let mut stream = handle.recv_multi(b, &RING).unwrap();
    let h = handle.clone();
    let stopper = Background::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        h.shutdown();
    });
    let end = stream.next().timeout(HANG).wait().unwrap_err();
    assert!(matches!(end, Error::Abandoned | Error::Closed), "{end:?}");
    let again = stream.next().timeout(HANG).wait().unwrap_err();
    assert!(
        matches!(again, Error::Abandoned | Error::Closed),
        "{again:?}"
    );
    stopper.join(HANG);
    lt.join(HANG).unwrap();
    drop((stream, handle));
}

#[test]
fn a_ring_serves_one_loop_and_comes_back_once_no_buffer_is_held() {
    static RING: BufRing<4, 32> = BufRing::new();
    let (handle, lt) = start_with(&RING, config());
    let (_, mut second) = static_uring::new::<16, 8, 64>(config()).unwrap();
    assert_eq!(
        second.register_buf_ring(&RING),
        Err(Error::InUse),
        "one loop at a time"
    );
    let (a, b) = UnixStream::pair().unwrap();
    let mut stream = handle.recv_multi(b, &RING).unwrap();
    (&a).write_all(b"held").unwrap();
    let lease = stream.next().timeout(HANG).wait().unwrap();
    drop((stream, handle));
    lt.join(HANG).unwrap();
    assert_eq!(&lease[..], b"held", "valid after its loop is gone");
    assert_eq!(
        second.register_buf_ring(&RING),
        Err(Error::InUse),
        "a lease is out"
    );
    drop(lease);
    second.register_buf_ring(&RING).unwrap();
    // Not registered with a loop: a clear error.
    static OTHER: BufRing<4, 32> = BufRing::new();
    let (h3, _l3) = static_uring::new::<16, 8, 64>(config()).unwrap();
    let (_x, y) = UnixStream::pair().unwrap();
    assert!(matches!(
        h3.recv_multi(y, &OTHER).unwrap_err(),
        Error::Config(_)
    ));
}

#[test]
fn net_sockets_have_the_multishot_forms() {
    use static_uring::net::{FromAccepted, TcpListener, TcpStream};
    static RING: BufRing<8, 256> = BufRing::new();
    let (handle, lt) = start_with(&RING, config());
    let listener = TcpListener::bind(&handle, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut incoming = listener.accept_multi().unwrap();
    let mut client = std::net::TcpStream::connect(addr).unwrap();
    let conn = TcpStream::from_accepted(&handle, incoming.next().timeout(HANG).wait().unwrap());
    let mut chunks = conn.recv_multi(&RING).unwrap();
    client.write_all(b"over tcp").unwrap();
    let mut got = Vec::new();
    while got.len() < 8 {
        got.extend_from_slice(&chunks.next().timeout(HANG).wait().unwrap());
    }
    assert_eq!(got, b"over tcp");
    drop(client);
    assert_eq!(
        chunks.next().timeout(HANG).wait().unwrap_err(),
        Error::UnexpectedEof
    );
    drop((chunks, conn, incoming, listener, handle));
    lt.join(HANG).unwrap();
}

/// A lease becomes the buffer of a send without a copy (an echo): the ring buffer goes back
/// when the send hands the `IoBuf` back and it is dropped, so a small ring serves a long echo.
#[test]
fn a_lease_is_sent_back_without_a_copy_and_its_buffer_returns() {
    static RING: BufRing<2, 64> = BufRing::new();
    let (handle, lt) = start_with(&RING, config());
    let (a, b) = UnixStream::pair().unwrap();
    let b = std::sync::Arc::new(b);
    let mut stream = handle.recv_multi(b.clone(), &RING).unwrap();
    for i in 0..100u32 {
        let msg = format!("echo {i}");
        (&a).write_all(msg.as_bytes()).unwrap();
        let lease = stream.next().timeout(HANG).wait().unwrap();
        let addr = lease.as_ptr();
        let buf = static_uring::IoBuf::from(lease);
        assert_eq!(buf.as_ptr(), addr, "no copy");
        let sent = handle.send(b.clone(), buf).wait().unwrap();
        assert_eq!(&sent[..], msg.as_bytes());
        drop(sent); // the ring buffer goes back here
        let mut back = vec![0u8; msg.len()];
        (&a).read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    assert_eq!(
        handle.metrics().buf_ring_dry,
        0,
        "two buffers served every message"
    );
    drop((stream, handle));
    lt.join(HANG).unwrap();
}

/// On the loop thread, a `next` whose result is already queued takes it without a request of
/// its own (no slot, no pass); the others still wait through the loop.
#[test]
fn on_the_loop_thread_a_queued_result_is_taken_without_a_request() {
    static RING: BufRing<4, 64> = BufRing::new();
    let (handle, mut event_loop) = static_uring::new::<16, 8, 64>(config()).unwrap();
    event_loop.register_buf_ring(&RING).unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    let taken = with_timeout(HANG, move || {
        event_loop
            .block_on(async move {
                let mut stream = handle.recv_multi(b, &RING).unwrap();
                for msg in [&b"one"[..], b"two"] {
                    (&a).write_all(msg).unwrap();
                    // Received and queued by the loop while this task sleeps.
                    handle.sleep(Duration::from_millis(30)).await.unwrap();
                }
                let before = handle.metrics().completed;
                let one = stream.next().await.unwrap().to_vec();
                let two = stream.next().await.unwrap().to_vec();
                let requests = handle.metrics().completed - before;
                // Nothing queued now: this one waits through the loop.
                (&a).write_all(b"three").unwrap();
                let three = stream.next().timeout(HANG).await.unwrap().to_vec();
                (one, two, three, requests)
            })
            .unwrap()
    });
    assert_eq!(
        (&taken.0[..], &taken.1[..], &taken.2[..]),
        (&b"one"[..], &b"two"[..], &b"three"[..])
    );
    assert_eq!(taken.3, 0, "queued results taken without a request");
}

/// Leases dropped on four other threads at once while a writer keeps a small ring running dry:
/// every returned buffer reaches the kernel again (the lock-free return queue and the starving
/// wake under contention), and every byte arrives once, in order.
#[test]
fn leases_dropped_on_many_threads_keep_a_small_ring_going() {
    static RING: BufRing<8, 256> = BufRing::new();
    let (handle, lt) = start_with(&RING, config());
    stream_through_four_droppers(&handle, &RING);
    drop(handle);
    lt.join(HANG).unwrap();
}

/// The same with pieces: pieces of one buffer dropped on different threads at once (the
/// buffer's reference count); every buffer is back at the end.
#[test]
fn pieces_dropped_on_many_threads_keep_a_small_incremental_ring_going() {
    static RING: BufRing<8, 256> = BufRing::new();
    let (handle, lt, _) = start_incremental(&RING);
    stream_through_four_droppers(&handle, &RING);
    drop(handle);
    lt.join(HANG).unwrap();
    let (_, mut again) = static_uring::new::<16, 8, 64>(config()).unwrap();
    assert_eq!(
        again.register_buf_ring(&RING),
        Ok(()),
        "every buffer came back"
    );
}

/// 1 MiB through a stream on `ring`, each lease dropped by one of four threads in turn.
fn stream_through_four_droppers(handle: &H, ring: &'static BufRing<8, 256>) {
    let (a, b) = UnixStream::pair().unwrap();
    let mut stream = handle.recv_multi(b, ring).unwrap();
    const TOTAL: usize = 1 << 20;
    let writer = Background::spawn(move || {
        let data: Vec<u8> = (0..TOTAL).map(|i| (i % 253) as u8).collect();
        (&a).write_all(&data).unwrap();
        data
    });
    let droppers: Vec<_> = (0..4)
        .map(|_| {
            let (tx, rx) = std::sync::mpsc::channel::<static_uring::BufLease>();
            let thread = std::thread::spawn(move || rx.into_iter().for_each(drop));
            (tx, thread)
        })
        .collect();
    let mut got = Vec::with_capacity(TOTAL);
    let mut i = 0;
    while got.len() < TOTAL {
        let lease = stream.next().timeout(HANG).wait().unwrap();
        got.extend_from_slice(&lease);
        droppers[i % 4].0.send(lease).unwrap();
        i += 1;
    }
    for (tx, thread) in droppers {
        drop(tx);
        thread.join().unwrap();
    }
    assert_eq!(got, writer.join(HANG));
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// A loop with `ring` registered incremental, on its own thread, and whether the kernel took
/// the flag (it must from Linux 6.12 on).
fn start_incremental<const C: usize, const Z: usize>(
    ring: &'static BufRing<C, Z>,
) -> (H, LoopThread, bool) {
    let (handle, mut event_loop) = static_uring::new::<16, 8, 64>(config()).unwrap();
    let incremental = event_loop.register_buf_ring_incremental(ring).unwrap();
    assert_eq!(
        incremental,
        kernel_at_least(6, 12),
        "incremental exactly where the kernel has it"
    );
    (handle, LoopThread::spawn(event_loop), incremental)
}

/// A stream on `ring`, registered incremental with a fresh loop, and the socket that feeds it;
/// `None` (the loop stopped) on a kernel without incremental rings.
fn incremental_stream<const C: usize, const Z: usize>(
    ring: &'static BufRing<C, Z>,
) -> Option<(
    H,
    LoopThread,
    UnixStream,
    static_uring::RecvStream<16, 8, 64>,
)> {
    let (handle, lt, incremental) = start_incremental(ring);
    if !incremental {
        drop(handle);
        lt.join(HANG).unwrap();
        return None;
    }
    let (a, b) = UnixStream::pair().unwrap();
    let stream = handle.recv_multi(b, ring).unwrap();
    Some((handle, lt, a, stream))
}

/// One message of `len` bytes, all `byte`.
fn message(byte: u8, len: usize) -> Vec<u8> {
    vec![byte; len]
}

#[test]
fn an_incremental_ring_packs_messages_into_one_buffer_and_takes_it_back_after_the_last_piece() {
    // Sixteen buffers: a kernel without incremental rings (whole buffers) holds the ten too.
    static RING: BufRing<16, 4096> = BufRing::new();
    let (handle, lt, incremental) = start_incremental(&RING);
    let (a, b) = UnixStream::pair().unwrap();
    let mut stream = handle.recv_multi(b, &RING).unwrap();
    let mut leases = Vec::new();
    for i in 0..10u8 {
        (&a).write_all(&message(b'a' + i, 100)).unwrap();
        let lease = stream.next().timeout(HANG).wait().unwrap();
        assert_eq!(&lease[..], &message(b'a' + i, 100)[..], "message {i}");
        leases.push(lease);
    }
    if incremental {
        let bid = leases[0].buffer_id();
        for (i, lease) in leases.iter().enumerate() {
            assert_eq!(lease.buffer_id(), bid, "every message in the first buffer");
            assert_eq!(lease.offset(), 100 * i as u32, "one after the other");
        }
    } else {
        assert!(leases.iter().all(|l| l.offset() == 0), "whole buffers");
    }
    // Pieces dropped out of order; the buffer stays out while one is held.
    let last = leases.remove(3);
    for lease in leases.drain(..).rev() {
        drop(lease);
    }
    drop((stream, handle));
    lt.join(HANG).unwrap();
    assert_eq!(
        &last[..],
        &message(b'd', 100)[..],
        "valid after its loop is gone"
    );
    let (_, mut second) = static_uring::new::<16, 8, 64>(config()).unwrap();
    assert_eq!(
        second.register_buf_ring_incremental(&RING),
        Err(Error::InUse),
        "a piece of the buffer is out"
    );
    drop(last);
    assert_eq!(second.register_buf_ring_incremental(&RING), Ok(incremental));
}

#[test]
fn pieces_of_one_incremental_buffer_go_to_two_streams_and_are_sent_on_without_a_copy() {
    static RING: BufRing<16, 4096> = BufRing::new();
    let (handle, lt, incremental) = start_incremental(&RING);
    let (a1, b1) = UnixStream::pair().unwrap();
    let (a2, b2) = UnixStream::pair().unwrap();
    let mut first = handle.recv_multi(b1, &RING).unwrap();
    let mut second = handle.recv_multi(b2, &RING).unwrap();
    let mut offset = 0;
    let mut held = Vec::new();
    for round in 0..6u8 {
        for (writer, stream, len) in [(&a1, &mut first, 50), (&a2, &mut second, 70)] {
            let byte = b'0' + round * 2 + (len == 70) as u8;
            (&mut &*writer).write_all(&message(byte, len)).unwrap();
            let lease = stream.next().timeout(HANG).wait().unwrap();
            assert_eq!(&lease[..], &message(byte, len)[..]);
            if incremental {
                assert_eq!(
                    lease.offset(),
                    offset,
                    "the next piece of the shared buffer"
                );
                assert_eq!(
                    lease.buffer_id(),
                    held.first()
                        .map_or(lease.buffer_id(), |l: &static_uring::BufLease| l
                            .buffer_id())
                );
            }
            offset += len as u32;
            held.push(lease);
        }
    }
    // A piece sent on as it is: the same bytes, no copy; its buffer goes back with the rest.
    let (x, y) = UnixStream::pair().unwrap();
    let lease = held.pop().unwrap();
    let (addr, expected) = (lease.as_ptr(), lease.to_vec());
    let buf = static_uring::IoBuf::from(lease);
    assert_eq!(buf.as_ptr(), addr, "no copy");
    drop(handle.send(x, buf).wait().unwrap());
    let mut back = vec![0u8; expected.len()];
    (&y).read_exact(&mut back).unwrap();
    assert_eq!(back, expected);
    drop(held);
    drop((first, second, handle));
    lt.join(HANG).unwrap();
    let (_, mut again) = static_uring::new::<16, 8, 64>(config()).unwrap();
    assert_eq!(
        again.register_buf_ring(&RING),
        Ok(()),
        "every piece is back, so is the buffer"
    );
}

#[test]
fn a_small_incremental_ring_carries_a_long_stream_in_order() {
    // Two 256-byte buffers for 8 KiB: each buffer is filled piece by piece and comes back
    // once its last piece is dropped; the previous piece is still held at each `next`.
    static RING: BufRing<2, 256> = BufRing::new();
    let (handle, lt, _) = start_incremental(&RING);
    let (a, b) = UnixStream::pair().unwrap();
    let mut stream = handle.recv_multi(b, &RING).unwrap();
    let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    let writer = Background::spawn(move || {
        (&a).write_all(&data).unwrap();
        data
    });
    let mut got = Vec::new();
    let mut previous = None;
    while got.len() < 8192 {
        let lease = stream.next().timeout(HANG).wait().unwrap();
        assert!(lease.offset() as usize + lease.len() <= 256);
        got.extend_from_slice(&lease);
        previous = Some(lease);
    }
    assert_eq!(got, writer.join(HANG), "every byte once, in order");
    drop(previous);
    drop((stream, handle));
    lt.join(HANG).unwrap();
}

/// A `next` that takes a queued result and so makes room re-arms its stream in the same pass,
/// not at the loop's next wake: here nothing else wakes the loop, and the re-armed receive is
/// submitted all the same. (It used to wait in the ready queue: staging admitted the `next`
/// after it had staged the ready queue.)
#[test]
fn a_next_that_makes_room_rearms_its_stream_in_the_same_pass() {
    static RING: BufRing<4, 4096> = BufRing::new();
    // Without incremental rings, receives are multishot (never re-armed on room).
    let Some((handle, lt, a, mut stream)) = incremental_stream(&RING) else {
        return;
    };
    (&a).write_all(b"first").unwrap();
    assert_eq!(&stream.next().timeout(HANG).wait().unwrap()[..], b"first");
    // Queued with no `next` waiting: the stream pauses (no room for a second piece).
    (&a).write_all(b"second").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let before = handle.metrics().submitted;
    assert_eq!(&stream.next().timeout(HANG).wait().unwrap()[..], b"second");
    wait_until(HANG, "the stream re-armed without another wake", || {
        handle.metrics().submitted > before
    });
    drop((stream, handle));
    lt.join(HANG).unwrap();
}

/// An incremental ring of one buffer: the second message fills the buffer's rest (a piece of
/// it), the third finds the ring dry (both pieces held) and waits, counted, until both pieces
/// are dropped; then it arrives whole at the buffer's start. Nothing is lost.
#[test]
fn a_dry_incremental_ring_waits_for_the_last_piece_and_loses_nothing() {
    static RING: BufRing<1, 256> = BufRing::new();
    // Without incremental rings, one whole buffer held by the first lease would stall the
    // second `next`.
    let Some((handle, lt, a, mut stream)) = incremental_stream(&RING) else {
        return;
    };
    (&a).write_all(&[1; 200]).unwrap();
    let first = stream.next().timeout(HANG).wait().unwrap();
    assert_eq!((first.offset(), first.len()), (0, 200));
    (&a).write_all(&[2; 100]).unwrap();
    let second = stream.next().timeout(HANG).wait().unwrap();
    assert_eq!(
        (second.offset(), &second[..]),
        (200, &[2; 56][..]),
        "the buffer's rest"
    );
    let dropper = Background::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        drop((first, second));
    });
    let third = stream.next().timeout(HANG).wait().unwrap();
    assert_eq!(
        (third.offset(), &third[..]),
        (0, &[2; 44][..]),
        "the rest, once the buffer is back"
    );
    dropper.join(HANG);
    assert!(handle.metrics().buf_ring_dry >= 1, "the ring ran dry");
    drop((third, stream, handle));
    lt.join(HANG).unwrap();
}
