//! Registered (fixed) files and buffers: `EventLoop::register_file`, `BufPool` and
//! `EventLoop::register_buffers`. What must hold: requests on registered descriptors and pool
//! buffers give the same results as on plain ones, the loop uses the fixed forms exactly where it
//! registered them (the `fixed_files` / `fixed_buffers` counters), a registered descriptor stays
//! open while its loop lives, pool buffers come back to their pool, and refusals are errors.

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::*;
use static_uring::{BufPool, Error, Fd, IoBuf, IoBufMut};

/// What descriptor `raw` names now (`socket:[inode]`, a path), if it is open. Other tests of this
/// process may reuse a closed number at once, so compare targets, not just existence.
fn fd_target(raw: i32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{raw}")).ok()
}

#[test]
fn registered_file_serves_every_file_operation_with_fixed_sqes() {
    let (handle, mut event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    let file = TempFile::new();
    let fixed = event_loop.register_file(file.file.clone()).unwrap();
    assert_eq!(fixed.registered_index(), Some(0));
    let lp = LoopThread::spawn(event_loop);

    let buf = handle
        .write_at(&fixed, 0, IoBuf::from(&b"registered"[..]))
        .wait()
        .unwrap();
    assert_eq!(&buf[..], b"registered");
    handle.sync(&fixed).wait().unwrap();
    handle.sync_data(&fixed).wait().unwrap();
    let buf = handle
        .read_at(&fixed, 4, IoBufMut::with_capacity(8))
        .limit(6)
        .wait()
        .unwrap();
    assert_eq!(&buf[..], b"stered");
    let buf = handle
        .read_some_at(&fixed, 8, IoBufMut::with_capacity(64))
        .limit(64)
        .wait()
        .unwrap();
    assert_eq!(&buf[..], b"ed");
    assert_eq!(file.contents(), b"registered");
    let m = handle.metrics();
    assert_eq!((m.fixed_files, m.fixed_buffers), (5, 0), "{m:?}");

    // The plain Fd of the same file still works, without the index.
    let buf = handle
        .read_at(file.file.clone(), 0, IoBufMut::with_capacity(3))
        .limit(3)
        .wait()
        .unwrap();
    assert_eq!(&buf[..], b"reg");
    assert_eq!(handle.metrics().fixed_files, 5);
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn registered_sockets_send_recv_and_time_out_like_plain_ones() {
    let (handle, mut event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    let (a, b) = socket_pair();
    let fa = event_loop.register_file(a.clone()).unwrap();
    let fb = event_loop.register_file(b.clone()).unwrap();
    assert_eq!(
        (fa.registered_index(), fb.registered_index()),
        (Some(0), Some(1))
    );
    let lp = LoopThread::spawn(event_loop);

    handle.send(&fa, IoBuf::from(&b"ping"[..])).wait().unwrap();
    let (buf, filled) = handle
        .recv(&fb, IoBufMut::with_capacity(4))
        .exact(4)
        .wait()
        .unwrap();
    assert_eq!((&buf[..], filled), (&b"ping"[..], 4));
    // A deadline cancels a fixed-file recv exactly as a plain one (AsyncCancel by user_data).
    let deadline = Some(Instant::now() + Duration::from_millis(30));
    let (buf, e) = handle
        .recv(&fb, IoBufMut::with_capacity(4))
        .limit(4)
        .deadline(deadline)
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!((e, buf.capacity()), (Error::Timeout, 4));
    // Data sent after the timeout is not lost.
    (&*a).write_all(b"late").unwrap();
    let (buf, _) = handle
        .recv(&fb, IoBufMut::with_capacity(4))
        .exact(4)
        .wait()
        .unwrap();
    assert_eq!(&buf[..], b"late");
    let m = handle.metrics();
    assert_eq!(m.fixed_files, 4, "{m:?}");
    assert_eq!(m.timed_out, 1, "{m:?}");
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn another_loops_registered_fd_is_used_as_a_plain_descriptor() {
    let (h1, mut l1) = static_uring::new::<4, 4, 64>(config()).unwrap();
    let (h2, mut l2) = static_uring::new::<4, 4, 64>(config()).unwrap();
    let one = TempFile::with_contents(b"one");
    let two = TempFile::with_contents(b"two");
    // Both loops have index 0, naming different files.
    let fixed_one = l1.register_file(one.file.clone()).unwrap();
    let fixed_two = l2.register_file(two.file.clone()).unwrap();
    assert_eq!(fixed_one.registered_index(), fixed_two.registered_index());
    let (lp1, lp2) = (LoopThread::spawn(l1), LoopThread::spawn(l2));

    let read = |h: &static_uring::Handle<4, 4, 64>, fd: &Fd| {
        let buf = IoBufMut::with_capacity(3);
        h.read_at(fd, 0, buf).limit(3).wait().unwrap()
    };
    assert_eq!(&read(&h2, &fixed_one)[..], b"one", "not loop 2's index 0");
    assert_eq!(&read(&h1, &fixed_two)[..], b"two", "not loop 1's index 0");
    assert_eq!((h1.metrics().fixed_files, h2.metrics().fixed_files), (0, 0));
    assert_eq!(&read(&h1, &fixed_one)[..], b"one");
    assert_eq!(h1.metrics().fixed_files, 1);
    drop((h1, h2));
    lp1.join(HANG).unwrap();
    lp2.join(HANG).unwrap();
}

#[test]
fn a_static_descriptor_registers_and_is_named_by_its_index() {
    // A static `Fd` (no reference count) registers like a shared one: this loop's requests name
    // it by index, a plain static `Fd` of the same descriptor is the same registered file, and
    // another static descriptor is not.
    let (handle, mut event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    let file = TempFile::new();
    (&*file.file).write_all(b"static").unwrap();
    let owner: &'static std::fs::File = Box::leak(Box::new(file.file.try_clone().unwrap()));
    let fixed = event_loop.register_file(Fd::from_static(owner)).unwrap();
    assert_eq!(fixed.registered_index(), Some(0));
    let lp = LoopThread::spawn(event_loop);
    let buf = handle
        .read_at(&fixed, 1, IoBufMut::with_capacity(4))
        .limit(4)
        .wait()
        .unwrap();
    assert_eq!(&buf[..], b"tati");
    assert_eq!(handle.metrics().fixed_files, 1);
    let other = Fd::leak(file.file.try_clone().unwrap());
    let buf = handle
        .read_at(&other, 0, IoBufMut::with_capacity(2))
        .limit(2)
        .wait()
        .unwrap();
    assert_eq!(&buf[..], b"st");
    assert_eq!(
        handle.metrics().fixed_files,
        1,
        "another descriptor stays plain"
    );
    drop(handle);
    lp.join(HANG).unwrap();
}

#[test]
fn a_registered_descriptor_stays_open_until_its_loop_ends() {
    // Registration cannot be undone while the loop lives, so the loop keeps the descriptor
    // open even when the caller dropped every Fd of it; it closes once `run` returns.
    let (handle, mut event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let raw = a.as_raw_fd();
    let target = fd_target(raw).expect("open");
    let fixed = event_loop.register_file(a).unwrap();
    drop(fixed);
    let lp = LoopThread::spawn(event_loop);
    handle.nop().wait().unwrap();
    assert_eq!(
        fd_target(raw).as_ref(),
        Some(&target),
        "the loop keeps its registered descriptor"
    );
    drop(handle);
    lp.join(HANG).unwrap();
    assert_ne!(fd_target(raw), Some(target), "closed with the loop");
    drop(b);
}

#[test]
fn pool_buffers_use_fixed_opcodes_only_on_the_loop_that_registered_the_pool() {
    static REGISTERED: BufPool<4, 4096> = BufPool::new();
    static OTHER: BufPool<2, 4096> = BufPool::new();
    let (handle, mut event_loop) = static_uring::new::<8, 8, 64>(config()).unwrap();
    event_loop.register_buffers(&REGISTERED).unwrap();
    assert_eq!(
        event_loop
            .register_buffers(&OTHER)
            .map_err(|e| matches!(e, Error::Config(_))),
        Err(true),
        "one pool per loop"
    );
    let file = TempFile::new();
    let lp = LoopThread::spawn(event_loop);

    let mut out = REGISTERED.take().unwrap();
    assert!(out.extend_from_slice(&[7u8; 4096]));
    let out = handle
        .write_at(file.file.clone(), 4096, IoBuf::from(out))
        .wait()
        .unwrap();
    drop(out);
    let buf = handle
        .read_at(file.file.clone(), 4096, REGISTERED.take().unwrap())
        .limit(4096)
        .wait()
        .unwrap();
    assert!(buf.iter().all(|&b| b == 7) && buf.len() == 4096);
    let buf = handle
        .read_some_at(file.file.clone(), 8000, buf)
        .limit(4096)
        .wait()
        .unwrap();
    assert_eq!(
        buf.len(),
        8192 - 8000,
        "a short read at the end, on a fixed buffer"
    );
    let m = handle.metrics();
    assert_eq!(m.fixed_buffers, 3, "{m:?}");

    // A pool the loop did not register: ordinary opcodes, same results.
    let other = handle
        .read_at(file.file.clone(), 4096, OTHER.take().unwrap())
        .limit(16)
        .wait()
        .unwrap();
    assert_eq!(&other[..], &[7u8; 16]);
    // And a pool buffer works with the non-file operations too.
    let (a, b) = socket_pair();
    let mut msg = OTHER.take().unwrap();
    assert!(msg.extend_from_slice(b"pool"));
    handle.send(a, IoBuf::from(msg)).wait().unwrap();
    let (got, _) = handle
        .recv(b, REGISTERED.take().unwrap())
        .exact(4)
        .wait()
        .unwrap();
    assert_eq!(&got[..], b"pool");
    assert_eq!(handle.metrics().fixed_buffers, 3);
    drop((buf, other, got));
    drop(handle);
    lp.join(HANG).unwrap();
    // Every buffer went back to its pool.
    let all: Vec<_> = std::iter::from_fn(|| REGISTERED.take()).collect();
    assert_eq!(all.len(), 4);
}

#[test]
fn a_pool_registered_with_a_finished_loop_serves_the_next_one() {
    // Registration belongs to the ring: a static pool can be registered again by the next loop
    // of a static storage, and a buffer taken before stays valid across both.
    static POOL: BufPool<2, 512> = BufPool::new();
    static STORAGE: static_uring::Storage<4, 4, 64> = static_uring::Storage::new();
    let file = TempFile::with_contents(&[1u8; 512]);
    let mut held = Some(POOL.take().unwrap());
    for round in 0..2 {
        let (handle, mut event_loop) = static_uring::with_storage(&STORAGE, config()).unwrap();
        event_loop.register_buffers(&POOL).unwrap();
        let lp = LoopThread::spawn(event_loop);
        let buf = held.take().unwrap();
        let buf = handle
            .read_at(file.file.clone(), 0, buf)
            .limit(512)
            .wait()
            .unwrap();
        assert_eq!(buf.len(), 512, "round {round}");
        held = Some(buf);
        assert_eq!(handle.metrics().fixed_buffers, 1, "round {round}");
        drop(handle);
        lp.join(HANG).unwrap();
    }
}

#[test]
fn an_allocated_pool_registers_and_serves_reads() {
    let pool = BufPool::<8, 65536>::allocate();
    let (handle, mut event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    event_loop.register_buffers(pool).unwrap();
    let lp = LoopThread::spawn(event_loop);
    let file = TempFile::with_contents(&[3u8; 100]);
    let buf = handle
        .read_some_at(file.file.clone(), 0, pool.take().unwrap())
        .limit(65536)
        .wait()
        .unwrap();
    assert_eq!(buf.len(), 100);
    assert_eq!(handle.metrics().fixed_buffers, 1);
    drop(handle);
    lp.join(HANG).unwrap();
}

/// Child half of `a_pool_beyond_rlimit_memlock_is_a_clear_error`: runs only when that test
/// starts this binary again as an unprivileged user.
#[test]
fn memlock_child() {
    if std::env::var_os("STATIC_URING_MEMLOCK_CHILD").is_none() {
        return;
    }
    // 1 MiB of locked memory at most; the pool needs 4 MiB.
    let limit = libc::rlimit {
        rlim_cur: 1 << 20,
        rlim_max: 1 << 20,
    };
    // SAFETY: setrlimit with a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) }, 0);
    let pool = BufPool::<64, 65536>::allocate();
    let (_handle, mut event_loop) = static_uring::new::<4, 4, 64>(config()).unwrap();
    match event_loop.register_buffers(pool) {
        Err(Error::Config(why)) if why.contains("RLIMIT_MEMLOCK") => println!("MEMLOCK-REFUSED"),
        other => panic!("expected a clear RLIMIT_MEMLOCK error, got {other:?}"),
    }
}

#[test]
fn a_pool_beyond_rlimit_memlock_is_a_clear_error() {
    // The kernel charges registered buffers to RLIMIT_MEMLOCK unless the process may lock
    // memory (CAP_IPC_LOCK, which root has): so the check runs in a child of this test binary
    // as an unprivileged user with a 1 MiB limit.
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args([
            "--exact",
            "memlock_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("STATIC_URING_MEMLOCK_CHILD", "1");
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        child.uid(65534).gid(65534); // nobody
    }
    let out = match child.output() {
        Ok(out) => out,
        // Only where the test cannot become an unprivileged user (a user namespace without
        // uid 65534): nothing to check there.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return,
        Err(e) => panic!("could not start the child: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("MEMLOCK-REFUSED"),
        "child: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
