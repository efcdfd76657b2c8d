//! Connections through the loop alone: `accept` and `connect`, with deadlines, refusals, and
//! dropped futures that must not leak an accepted descriptor.

mod common;
#[path = "../examples/common/mod.rs"]
mod net;

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use net::tcp_socket;
use static_uring::{Config, Error, Fd, IoBuf, IoBufMut};

/// A client connects and a server accepts, both through the loop, then they echo through it.
#[test]
fn accept_and_connect_then_echo_through_the_loop() {
    let (handle, lp) = start::<8, 8, 64>(config());
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    let server = handle.accept(listener.clone());
    let client: Fd = tcp_socket(addr).into();
    let connect = handle.connect(&client, addr);
    let (accepted, connected) = block_on(HANG, join2(server, connect));
    connected.unwrap();
    let served: Fd = accepted.unwrap().into();
    let deadline = Some(Instant::now() + HANG);
    handle
        .send(&client, IoBuf::from(&b"ping"[..]))
        .deadline(deadline)
        .wait()
        .unwrap();
    let (buf, n) = handle
        .recv(&served, IoBufMut::with_capacity(4))
        .exact(4)
        .deadline(deadline)
        .wait()
        .unwrap();
    assert_eq!((n, &buf[..]), (4, &b"ping"[..]));
    drop(handle);
    lp.join(HANG).unwrap();
}

/// Connecting to a port nobody listens on is the kernel's ECONNREFUSED; an accept with nobody
/// connecting ends at its deadline.
#[test]
fn refused_connect_is_an_os_error_and_a_lonely_accept_times_out() {
    let (handle, lp) = start::<8, 8, 64>(config());
    let closed = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let e = handle
        .connect(tcp_socket(closed), closed)
        .wait()
        .unwrap_err();
    assert_eq!(e, Error::Os(libc::ECONNREFUSED));
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
    let deadline = Instant::now() + Duration::from_millis(30);
    let e = handle
        .accept(listener)
        .deadline(deadline)
        .wait()
        .unwrap_err();
    assert_eq!(e, Error::Timeout);
    assert!(Instant::now() >= deadline);
    drop(handle);
    lp.join(HANG).unwrap();
}

/// IPv6 loopback, where the machine has it.
#[test]
fn connect_over_ipv6_loopback() {
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        return; // no IPv6 here: nothing to test
    };
    let (handle, lp) = start::<8, 8, 64>(config());
    let addr = listener.local_addr().unwrap();
    handle.connect(tcp_socket(addr), addr).wait().unwrap();
    let (peer, _) = listener.accept().unwrap();
    assert!(peer.peer_addr().unwrap().is_ipv6());
    drop(handle);
    lp.join(HANG).unwrap();
}

/// An accept whose future was dropped: by default it keeps running and the connection it takes
/// is closed by the loop (no descriptor leaks); with `cancel_on_drop` it is cancelled and the
/// connection stays in the backlog for the next accept.
#[test]
fn a_dropped_accept_leaks_nothing_in_either_mode() {
    for cancel_on_drop in [false, true] {
        let cfg = Config {
            cancel_on_drop,
            ..config()
        };
        let (handle, lp) = start::<8, 8, 64>(cfg);
        let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = listener.local_addr().unwrap();
        let mut accept = Box::pin(handle.accept(listener.clone()));
        assert!(poll_once(accept.as_mut()).is_none());
        wait_until(HANG, "accept in flight", || handle.metrics().submitted == 1);
        drop(accept);
        if cancel_on_drop {
            wait_until(HANG, "the accept is cancelled", || {
                handle.metrics().orphaned == 1
            });
        }
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        if cancel_on_drop {
            let accepted = handle.accept(listener.clone()).wait().unwrap();
            assert!(
                accepted.as_raw_fd() >= 0,
                "the connection waited in the backlog"
            );
        } else {
            wait_until(HANG, "the orphan took the connection", || {
                handle.metrics().orphaned == 1
            });
            // The loop closed what the orphan accepted: the client sees the end of stream.
            client.set_read_timeout(Some(HANG)).unwrap();
            let mut byte = [0u8; 1];
            assert_eq!(std::io::Read::read(&mut client, &mut byte).unwrap(), 0);
        }
        drop(handle);
        lp.join(HANG).unwrap();
    }
}
