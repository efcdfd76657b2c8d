//! Datagrams through the loop: `send_to` and `recv_from` over UDP, with the sender's address
//! coming back by value, deadlines, truncation, and empty datagrams.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use static_uring::{Error, IoBuf, IoBufMut};

fn udp(addr: &str) -> Option<Arc<UdpSocket>> {
    UdpSocket::bind(addr).ok().map(Arc::new)
}

/// A datagram sent with `send_to` arrives whole, and `recv_from` reports its length and its
/// sender's address (IPv4, and IPv6 where the machine has it).
#[test]
fn send_to_and_recv_from_carry_datagrams_and_addresses() {
    let (handle, lp) = start::<8, 4, 64>(config());
    for local in ["127.0.0.1:0", "[::1]:0"] {
        let (Some(a), Some(b)) = (udp(local), udp(local)) else {
            continue; // no IPv6 here
        };
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let recv = handle.recv_from(b.clone(), IoBufMut::with_capacity(64));
        let send = handle.send_to(a.clone(), IoBuf::from(&b"datagram"[..]), b_addr);
        let (received, sent) = block_on(HANG, join2(recv, send));
        assert_eq!(&sent.unwrap()[..], b"datagram", "the buffer comes back");
        let (buf, len, from) = received.unwrap();
        assert_eq!((len, &buf[..], from), (8, &b"datagram"[..], a_addr));
    }
    drop(handle);
    lp.join(HANG).unwrap();
}

/// A datagram longer than the buffer is truncated (as `recvfrom` does); an empty datagram is an
/// `Ok` of length 0, not an end of file; no datagram within the deadline is `Timeout` with the
/// buffer back.
#[test]
fn truncation_empty_datagrams_and_deadlines() {
    let (handle, lp) = start::<8, 4, 64>(config());
    let (a, b) = (udp("127.0.0.1:0").unwrap(), udp("127.0.0.1:0").unwrap());
    let b_addr = b.local_addr().unwrap();
    a.send_to(b"0123456789", b_addr).unwrap();
    let (buf, len, _) = handle
        .recv_from(b.clone(), IoBufMut::with_capacity(4))
        .wait()
        .unwrap();
    assert_eq!((len, &buf[..]), (4, &b"0123"[..]));
    handle
        .send_to(a.clone(), IoBuf::from(&b""[..]), b_addr)
        .wait()
        .unwrap();
    let (buf, len, from) = handle
        .recv_from(b.clone(), IoBufMut::with_capacity(4))
        .wait()
        .unwrap();
    assert_eq!((len, buf.len(), from), (0, 0, a.local_addr().unwrap()));
    let deadline = Instant::now() + Duration::from_millis(20);
    let (buf, e) = handle
        .recv_from(b, IoBufMut::with_capacity(16))
        .deadline(deadline)
        .wait()
        .unwrap_err()
        .into_parts();
    assert_eq!((e, buf.capacity()), (Error::Timeout, 16));
    drop(handle);
    lp.join(HANG).unwrap();
}

/// More `recv_from`s in flight than ring entries would hold message headers: each is served,
/// the headers are reused, and every sender address is right.
#[test]
fn many_recv_froms_reuse_the_message_headers() {
    let (handle, lp) = start::<16, 4, 64>(config());
    let b = udp("127.0.0.1:0").unwrap();
    let b_addr = b.local_addr().unwrap();
    let senders: Vec<_> = (0..12).map(|_| udp("127.0.0.1:0").unwrap()).collect();
    let recvs: Vec<_> = (0..12)
        .map(|_| handle.recv_from(b.clone(), IoBufMut::with_capacity(8)))
        .collect();
    let waiting = Background::spawn(move || block_on(HANG, join_all(recvs)));
    for (i, s) in senders.iter().enumerate() {
        s.send_to(&[i as u8], b_addr).unwrap();
    }
    let mut seen: Vec<(u8, SocketAddr)> = waiting
        .join(HANG)
        .into_iter()
        .map(|r| {
            let (buf, _, from) = r.unwrap();
            (buf[0], from)
        })
        .collect();
    seen.sort();
    for (i, (byte, from)) in seen.into_iter().enumerate() {
        assert_eq!((byte, from), (i as u8, senders[i].local_addr().unwrap()));
    }
    drop(handle);
    lp.join(HANG).unwrap();
}
