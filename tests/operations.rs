//! Operations as values: the options every operation has (`deadline`, `timeout`), the options of
//! `recv` and the reads, `try_submit`, when arguments are checked, and the named error that hands
//! a buffer back.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use static_uring::{op, BufError, Error, IoBuf, IoBufMut, Op};

/// `.timeout(d)` ends a silent request with `Timeout` after about `d`; `.deadline(None)` clears
/// a deadline set before it.
#[test]
fn timeout_and_deadline_bound_a_request_and_none_clears_it() {
    let (handle, lp) = start::<8, 8, 64>(config());
    let (_a, b) = socket_pair();
    let began = Instant::now();
    let err = handle
        .recv(b.clone(), IoBufMut::with_capacity(8))
        .timeout(Duration::from_millis(30))
        .wait()
        .unwrap_err();
    assert_eq!(err.error, Error::Timeout);
    assert_eq!(err.buf.capacity(), 8, "the buffer comes back");
    assert!(began.elapsed() >= Duration::from_millis(30), "not early");

    // A cleared deadline: the request waits until the peer writes.
    let waiting = Background::spawn({
        let (h, b) = (handle.clone(), b.clone());
        move || {
            h.recv(b, IoBufMut::with_capacity(8))
                .timeout(Duration::from_millis(1))
                .deadline(None)
                .wait()
        }
    });
    std::thread::sleep(Duration::from_millis(40));
    assert!(!waiting.is_finished(), "no deadline: still waiting");
    (&*_a).write_all(b"late").unwrap();
    let (buf, n) = waiting.join(HANG).unwrap();
    assert_eq!((n, &buf[..]), (4, &b"late"[..]));
    drop(handle);
    lp.join(HANG).unwrap();
}

/// By default a recv receives into the whole capacity, at least one byte, from the start of the
/// buffer (whatever it held); `.limit` bounds it and `.exact` waits for every byte.
#[test]
fn recv_defaults_to_the_capacity_and_at_least_one_byte() {
    let (handle, lp) = start::<8, 8, 64>(config());
    let (a, b) = socket_pair();
    (&*a).write_all(b"0123456789").unwrap();
    let (buf, n) = handle
        .recv(b.clone(), IoBufMut::from(vec![9u8; 4]))
        .wait()
        .unwrap();
    assert_eq!(
        (n, &buf[..]),
        (4, &b"0123"[..]),
        "capacity 4, from the start"
    );
    let (buf, n) = handle
        .recv(b.clone(), IoBufMut::with_capacity(16))
        .limit(2)
        .wait()
        .unwrap();
    assert_eq!((n, &buf[..]), (2, &b"45"[..]));
    let waiting = Background::spawn({
        let (h, b) = (handle.clone(), b.clone());
        move || h.recv(b, IoBufMut::with_capacity(16)).exact(6).wait()
    });
    std::thread::sleep(Duration::from_millis(20));
    assert!(!waiting.is_finished(), "four of six bytes: still waiting");
    (&*a).write_all(b"ab").unwrap();
    let (buf, n) = waiting.join(HANG).unwrap();
    assert_eq!((n, &buf[..]), (6, &b"6789ab"[..]));
    drop(handle);
    lp.join(HANG).unwrap();
}

/// `read_at` reads exactly the buffer's capacity by default, `.limit` fewer; `read_some_at`
/// reads what is there up to either.
#[test]
fn reads_default_to_the_capacity() {
    let (handle, lp) = start::<8, 8, 64>(config());
    let file = TempFile::with_contents(b"abcdefgh");
    let buf = handle
        .read_at(file.file.clone(), 2, IoBufMut::with_capacity(4))
        .wait()
        .unwrap();
    assert_eq!(&buf[..], b"cdef");
    let buf = handle
        .read_at(file.file.clone(), 0, IoBufMut::with_capacity(64))
        .limit(3)
        .wait()
        .unwrap();
    assert_eq!(&buf[..], b"abc");
    let err = handle
        .read_at(file.file.clone(), 4, IoBufMut::with_capacity(64))
        .wait()
        .unwrap_err();
    assert_eq!(
        (err.error, &err.buf[..]),
        (Error::UnexpectedEof, &b"efgh"[..])
    );
    let buf = handle
        .read_some_at(file.file.clone(), 4, IoBufMut::with_capacity(64))
        .wait()
        .unwrap();
    assert_eq!(&buf[..], b"efgh");
    drop(handle);
    lp.join(HANG).unwrap();
}

/// `try_submit` claims and submits at the call: `Full` hands the buffer back (the very same
/// memory), bad input is `InvalidInput` at the call, an operation with nothing to do is ready at
/// once, and a closed loop is `Closed`.
#[test]
fn try_submit_fails_at_once_and_hands_the_buffer_back() {
    let (handle, lp) = start::<2, 2, 64>(config());
    let (a, b) = socket_pair();
    let held: Vec<_> = (0..2)
        .map(|_| {
            handle
                .recv(b.clone(), IoBufMut::with_capacity(8))
                .try_submit()
                .unwrap()
        })
        .collect();
    let buf = IoBuf::from(vec![1u8; 5]);
    let ptr = buf.as_ptr();
    let err = handle.send(b.clone(), buf).try_submit().unwrap_err();
    assert_eq!(err.error, Error::Full);
    assert_eq!(err.buf.as_ptr(), ptr, "the same buffer comes back");
    assert_eq!(handle.nop().try_submit().unwrap_err(), Error::Full);

    let err = handle
        .recv(b.clone(), IoBufMut::with_capacity(4))
        .limit(5)
        .try_submit()
        .unwrap_err();
    assert_eq!(err.error, Error::InvalidInput, "checked before the slot");
    let ready = handle
        .send(b.clone(), IoBuf::from(Vec::new()))
        .try_submit()
        .expect("nothing to send needs no slot");
    assert!(ready.wait().unwrap().is_empty());
    drop(held);
    // The two recvs may be in the kernel by now (orphans retire at their next completion, and
    // the drain waits for them without a shutdown timeout): give them their completion.
    (&*a).write_all(&[0u8; 16]).unwrap();

    let nop = handle.nop();
    drop(handle);
    lp.join(HANG).unwrap();
    assert_eq!(nop.try_submit().unwrap_err(), Error::Closed);
}

/// Arguments are checked before a slot is claimed: an invalid operation fails at once even when
/// every slot is taken, and a zero-length one completes without the loop.
#[test]
fn invalid_input_does_not_wait_for_a_slot() {
    let (handle, lp) = start::<1, 1, 64>(config());
    let (_a, b) = socket_pair();
    let held = handle
        .recv(b.clone(), IoBufMut::with_capacity(8))
        .try_submit()
        .unwrap();
    let result = with_timeout(HANG, {
        let (h, b) = (handle.clone(), b.clone());
        move || {
            h.recv(b, IoBufMut::with_capacity(4))
                .offset(3)
                .limit(2)
                .wait()
        }
    });
    assert_eq!(result.unwrap_err().error, Error::InvalidInput);
    let (buf, n) = with_timeout(HANG, {
        let (h, b) = (handle.clone(), b.clone());
        move || h.recv(b, IoBufMut::with_capacity(4)).limit(0).wait()
    })
    .unwrap();
    assert_eq!((n, buf.len()), (0, 0));
    (&*_a).write_all(b"x").unwrap();
    assert_eq!(with_timeout(HANG, move || held.wait()).unwrap().1, 1);
    // Read once the held recv is done: the loop counts a request when it takes it, which may be
    // after the checks above.
    assert_eq!(
        handle.metrics().submitted,
        1,
        "only the held recv reached the loop"
    );
    drop(handle);
    lp.join(HANG).unwrap();
}

/// Options belong to an operation not yet submitted: setting one on a submitted operation is a
/// bug in the caller, reported as a panic rather than silently ignored.
#[test]
#[should_panic(expected = "before it is submitted")]
fn an_option_after_try_submit_panics() {
    let (handle, _lp) = start::<4, 4, 64>(config());
    let op = handle.nop().try_submit().unwrap();
    drop(op.timeout(Duration::from_secs(1)));
}

/// The error of an operation that carries a buffer converts into `std::io::Error` with `?`,
/// keeping the kind; `into_parts` hands the buffer back.
#[test]
fn buf_error_works_with_question_mark() {
    fn read(handle: &static_uring::Handle<4, 4, 64>, file: &TempFile) -> std::io::Result<IoBufMut> {
        Ok(handle
            .read_at(file.file.clone(), 0, IoBufMut::with_capacity(64))
            .wait()?)
    }
    let (handle, lp) = start::<4, 4, 64>(config());
    let file = TempFile::with_contents(b"short");
    let err = read(&handle, &file).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    let err: BufError<IoBufMut> = handle
        .read_at(file.file.clone(), 0, IoBufMut::with_capacity(64))
        .wait()
        .unwrap_err();
    let (buf, error) = err.into_parts();
    assert_eq!((&buf[..], error), (&b"short"[..], Error::UnexpectedEof));
    drop(handle);
    lp.join(HANG).unwrap();
}

/// An operation's `Debug` names its operation and where it stands.
#[test]
fn an_operation_says_what_it_is() {
    let (handle, lp) = start::<4, 4, 64>(config());
    let op: Op<op::Nop, 4, 4, 64> = handle.nop();
    let text = format!("{op:?}");
    assert!(
        text.contains("Nop") && text.contains("not submitted"),
        "{text}"
    );
    drop(op);
    drop(handle);
    lp.join(HANG).unwrap();
}
