//! `Config::io_poll` (A15): a polled ring (`IORING_SETUP_IOPOLL`). It has no eventfd wake poll, so
//! the loop polls instead of sleeping and reads the sender count on every pass; the kernel runs
//! only what it can poll (nop, and reads and writes of `O_DIRECT` files on devices with poll
//! queues) and answers the rest with its errno. Whatever this machine's devices support, the loop
//! must serve, answer every request (never hang), time out and shut down.

mod common;

use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use common::*;
use static_uring::{Config, Error, IoBuf, IoBufMut};

fn polled(single_issuer: bool) -> Config {
    Config {
        io_poll: true,
        single_issuer,
        ..config()
    }
}

/// A 4 KiB-aligned buffer of 4 KiB (what `O_DIRECT` needs), leaked for the test.
fn aligned() -> IoBufMut {
    let layout = std::alloc::Layout::from_size_align(4096, 4096).unwrap();
    // SAFETY: the layout has a non-zero size; the memory is never freed (leaked on purpose).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!ptr.is_null());
    // SAFETY: `ptr` is valid for 4096 bytes, initialised (zeroed), and owned by nobody else.
    IoBufMut::from(unsafe { std::slice::from_raw_parts_mut(ptr, 4096) })
}

#[test]
fn a_polled_ring_serves_times_out_and_shuts_down() {
    let mut served = 0;
    for single_issuer in [false, true] {
        let (handle, event_loop) = match static_uring::new::<8, 4, 64>(polled(single_issuer)) {
            Ok(built) => built,
            // A kernel may refuse the combination; it must say so as a config error.
            Err(Error::Config(why)) => {
                assert!(!why.is_empty());
                continue;
            }
            Err(e) => panic!("the constructor failed with {e:?}"),
        };
        let lp = LoopThread::spawn(event_loop);

        // nop is pollable: it completes, on a thread and on an executor.
        assert_eq!(
            with_timeout(HANG, {
                let h = handle.clone();
                move || h.nop().wait()
            }),
            Ok(())
        );
        assert_eq!(block_on(HANG, handle.nop()), Ok(()));
        // A deadline that passed ends the request without I/O.
        let past = Instant::now();
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(
            with_timeout(HANG, {
                let h = handle.clone();
                move || h.nop().deadline(past).wait()
            }),
            Err(Error::Timeout)
        );

        // An O_DIRECT read: the bytes, or the kernel's refusal if the device cannot poll.
        let file = TempFile::with_contents(&[7u8; 8192]);
        let direct = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&file.path)
            .unwrap();
        let read = with_timeout(HANG, {
            let h = handle.clone();
            move || h.read_at(direct, 4096, aligned()).wait()
        });
        match read {
            Ok(buf) => assert!(buf.len() == 4096 && buf.iter().all(|&b| b == 7)),
            Err(e) => assert!(
                matches!(e.error, Error::Os(libc::EOPNOTSUPP | libc::EINVAL)),
                "{:?}",
                e.error
            ),
        }

        // A socket cannot be polled: the kernel refuses the recv at once (no hang), and the
        // buffer comes back.
        let (_a, b) = socket_pair();
        let err = with_timeout(HANG, {
            let h = handle.clone();
            move || h.recv(b, IoBufMut::with_capacity(8)).wait()
        })
        .unwrap_err();
        assert!(matches!(err.error, Error::Os(_)), "{:?}", err.error);
        assert_eq!(err.buf.capacity(), 8);
        let sent = with_timeout(HANG, {
            let h = handle.clone();
            let (a, _b) = socket_pair();
            move || h.send(a, IoBuf::from(&b"x"[..])).wait()
        });
        assert!(matches!(sent.unwrap_err().error, Error::Os(_)));

        // Many at once through a full table: all answered.
        let ops: Vec<_> = (0..32).map(|_| handle.nop()).collect();
        let results = block_on(HANG, join_all(ops));
        assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
        assert_eq!(handle.metrics().pending_operations, 0);

        // The last handle going is seen without the eventfd: the loop returns.
        drop(handle);
        assert_eq!(lp.join(HANG), Ok(()), "single_issuer {single_issuer}");
        eprintln!("polled ring served (single_issuer {single_issuer})");
        served += 1;
    }
    assert!(
        served > 0,
        "a plain polled ring builds on any io_uring kernel"
    );
}
