//! `send_vectored` and `write_at_vectored`: the single-buffer rules (short transfers resumed at
//! the cursor, deadlines, closed peers, orphans that still run, input checks, `try_` on a full
//! table) hold for up to `MAX_IOVECS` buffers, and the buffers always come back.

mod common;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use static_uring::{BufPool, Error, IoBuf, IoBufs, MAX_IOVECS};

fn bufs(parts: &[&[u8]]) -> IoBufs {
    parts.iter().map(|p| IoBuf::from(p.to_vec())).collect()
}

#[test]
fn buffers_arrive_in_order_and_come_back() {
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a, b) = socket_pair();
    let parts: [&[u8]; MAX_IOVECS] = [b"one,", b"", b"two,", b"three"];
    let back = handle.send_vectored(a, bufs(&parts)).wait().unwrap();
    assert_eq!(
        back.len(),
        MAX_IOVECS,
        "every buffer comes back, empty ones too"
    );
    assert_eq!(&back[3][..], b"three");
    let mut got = [0u8; 13];
    (&*b).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"one,two,three");

    let file = TempFile::new();
    let back = handle
        .write_at_vectored(file.file.clone(), 2, bufs(&[b"ab", b"cde"]))
        .wait()
        .unwrap();
    assert_eq!(back.iter().map(|b| b.len()).sum::<usize>(), 5);
    assert_eq!(file.contents(), b"\0\0abcde");
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn short_sends_resume_at_the_cursor_across_buffers() {
    // A 4 KiB send buffer and 3 x 64 KiB of distinct bytes: the kernel takes a little at a time,
    // and every resubmission must start exactly where it stopped, even inside a buffer.
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a, b) = UnixStream::pair().unwrap();
    set_sndbuf(&a, 4096);
    let parts: Vec<Vec<u8>> = (0..3u8)
        .map(|k| {
            (0..65536u32)
                .map(|i| (i as u8).wrapping_mul(7) ^ k)
                .collect()
        })
        .collect();
    let expected: Vec<u8> = parts.concat();
    let io: IoBufs = parts.into_iter().map(IoBuf::from).collect();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; 3 * 65536];
        (&b).read_exact(&mut got).unwrap();
        got
    });
    let back = handle.send_vectored(Arc::new(a), io).wait().unwrap();
    assert_eq!(back.len(), 3);
    assert!(
        reader.join().unwrap() == expected,
        "bytes arrived in order, none twice"
    );
    assert!(
        handle.metrics().requeued > 0,
        "the sends were short: {:?}",
        handle.metrics()
    );
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn a_deadline_on_a_full_socket_times_out_with_the_buffers_back() {
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a, b) = UnixStream::pair().unwrap();
    set_sndbuf(&a, 4096);
    let big: IoBufs = (0..2).map(|_| IoBuf::from(vec![1u8; 1 << 20])).collect();
    let deadline = Some(Instant::now() + Duration::from_millis(50));
    let (back, e) = handle
        .send_vectored(Arc::new(a), big)
        .deadline(deadline)
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!(e, Error::Timeout);
    assert_eq!(back.len(), 2);
    assert!(back.iter().all(|b| b.len() == 1 << 20));
    drop(b);
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn a_closed_peer_is_unexpected_eof_and_a_bad_descriptor_an_os_error() {
    let (handle, lp) = start::<4, 4, 64>(config());
    let (a, b) = socket_pair();
    drop(b);
    let (back, e) = handle
        .send_vectored(a, bufs(&[b"x", b"y"]))
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!((e, back.len()), (Error::UnexpectedEof, 2));
    let file = TempFile::new();
    let (back, e) = handle
        .write_at_vectored(file.read_only(), 0, bufs(&[b"x"]))
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!((e, back.len()), (Error::Os(libc::EBADF), 1));
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn input_checks_and_a_full_table() {
    let (handle, lp) = start::<1, 1, 64>(config());
    let file = TempFile::new();
    let (back, e) = handle
        .write_at_vectored(file.file.clone(), u64::MAX - 1, bufs(&[b"xy"]))
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!((e, back.len()), (Error::InvalidInput, 1), "beyond i64::MAX");
    assert_eq!(file.contents(), b"", "nothing was written");
    let empty = handle.write_at_vectored(file.file.clone(), 0, IoBufs::new());
    assert!(
        empty.wait().unwrap().is_empty(),
        "nothing to write: Ok at once"
    );
    let none = handle.send_vectored(file.file.clone(), bufs(&[b""]));
    assert_eq!(none.wait().unwrap().len(), 1);

    // The only slot taken by a recv that waits: try_ gives the buffers back with Full.
    let (a, b) = socket_pair();
    let waiting = handle
        .recv(b, static_uring::IoBufMut::with_capacity(1))
        .exact(1)
        .try_submit()
        .unwrap();
    let (back, e) = handle
        .write_at_vectored(file.file.clone(), 0, bufs(&[b"q", b"r"]))
        .try_submit()
        .unwrap_err()
        .into_parts();
    assert_eq!((e, back.len()), (Error::Full, 2));
    drop(waiting);
    drop(a); // the orphaned recv ends (end of stream), so the loop can drain
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn a_dropped_vectored_write_still_runs_and_frees_its_buffers() {
    // write_at's rule: dropping the future does not cancel the write. Pool buffers show the
    // buffers were dropped (not leaked) once the loop retired the orphan.
    static POOL: BufPool<2, 64> = BufPool::new();
    let (handle, lp) = start::<4, 4, 64>(config());
    let file = TempFile::new();
    let mut io = IoBufs::new();
    for part in [&b"dropped "[..], b"write"] {
        let mut buf = POOL.take().unwrap();
        assert!(buf.extend_from_slice(part));
        io.push(IoBuf::from(buf));
    }
    let op = handle
        .write_at_vectored(file.file.clone(), 0, io)
        .try_submit()
        .unwrap();
    drop(op);
    wait_until(HANG, "the orphaned write to land", || {
        file.contents() == b"dropped write"
    });
    wait_until(HANG, "both pool buffers to come back", || {
        let taken: Vec<_> = std::iter::from_fn(|| POOL.take()).collect();
        taken.len() == 2
    });
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn vectored_requests_share_message_headers_with_recv_from() {
    // Both borrow the loop's RING message headers while in the kernel: with RING = 2, two
    // pending recv_froms and a vectored send must still all complete.
    let (handle, lp) = start::<4, 2, 64>(config());
    let ua = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let ub = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = ub.local_addr().unwrap();
    let ub = static_uring::Fd::from(ub);
    let r1 = handle
        .recv_from(&ub, static_uring::IoBufMut::with_capacity(8))
        .try_submit();
    let (a, b) = socket_pair();
    let sent = handle.send_vectored(a, bufs(&[b"ab", b"c"])).wait();
    assert_eq!(sent.unwrap().len(), 2);
    let mut got = [0u8; 3];
    (&*b).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"abc");
    ua.send_to(b"dgram", addr).unwrap();
    let (buf, len, _) = r1.unwrap().wait().unwrap();
    assert_eq!((&buf[..], len), (&b"dgram"[..], 5));
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn a_slot_reused_at_once_never_mixes_vectored_buffers() {
    // A vectored request's buffers live in its slot's cell. With two slots and four threads,
    // a freed slot is claimed again at once; every caller must get its own buffers back, and a
    // dropped (orphaned) request must never clear the cell of the slot's next request.
    const THREADS: usize = 4;
    const ROUNDS: usize = 1_500;
    let (handle, lp) = start::<2, 2, 64>(config());
    let file = Arc::new(TempFile::new());
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (handle, file) = (handle.clone(), file.clone());
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    let tag = [t as u8; 3];
                    let mark = (round % 251) as u8;
                    let at = (t * 64) as u64;
                    let write = || {
                        let io = bufs(&[&tag, &[mark; 5]]);
                        handle.write_at_vectored(file.file.clone(), at, io)
                    };
                    if round % 3 == 0 {
                        // Orphaned in flight (or refused while the table is full).
                        drop(write().try_submit());
                        continue;
                    }
                    let back = write()
                        .wait()
                        .unwrap_or_else(|e| panic!("thread {t} round {round}: {e}"));
                    let lens: Vec<usize> = back.iter().map(|b| b.len()).collect();
                    assert_eq!(lens, [3, 5], "thread {t} round {round}: another's buffers");
                    assert_eq!(&back[0][..], &tag, "thread {t} round {round}");
                    assert_eq!(&back[1][..], &[mark; 5], "thread {t} round {round}");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    drop(handle);
    lp.join(HANG).unwrap();
}
