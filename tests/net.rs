//! The socket types of `static_uring::net`: accept, connect, recv and send through the loop with
//! the toolkit alone (no `unsafe`, no libc), from another thread (`.wait()`) and on the loop
//! thread (`block_on`), with the operations' options (deadline, `try_submit`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use static_uring::net::{
    TcpListener, TcpStream, UdpSocket, UnixDatagram, UnixListener, UnixStream,
};
use static_uring::{Error, IoBuf, IoBufMut, Readiness};

type Io = static_uring::Handle<16, 16, 64>;

/// A TCP client and server from another thread with `.wait()`: connect, accept, a round trip
/// each way, the peer's address, and end of stream when the client goes.
#[test]
fn tcp_connect_accept_send_recv_with_wait() {
    let (io, lt) = start::<16, 16, 64>(config());
    let server = TcpListener::bind(&io, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr().unwrap();
    let accepted = server.accept().try_submit().unwrap();
    let client = TcpStream::connect(&io, addr).timeout(HANG).wait().unwrap();
    let stream = with_timeout(HANG, move || accepted.wait()).unwrap();
    assert_eq!(stream.peer_addr().unwrap(), client.local_addr().unwrap());
    client.send(IoBuf::from(&b"hello"[..])).wait().unwrap();
    let (buf, n) = stream
        .recv(IoBufMut::with_capacity(5))
        .exact(5)
        .wait()
        .unwrap();
    assert_eq!((&buf[..], n), (&b"hello"[..], 5));
    stream.send(IoBuf::from(&b"world"[..])).wait().unwrap();
    let (buf, _) = client
        .recv(IoBufMut::with_capacity(5))
        .exact(5)
        .wait()
        .unwrap();
    assert_eq!(&buf[..], b"world");
    // The zero-copy sends, as methods of the stream.
    let sent = client.send_zc(IoBuf::from(&b"zc"[..])).wait().unwrap();
    assert_eq!(&sent[..], b"zc", "the buffer comes back");
    let bufs = [IoBuf::from(&b"z"[..]), IoBuf::from(&b"c!"[..])]
        .into_iter()
        .collect();
    assert_eq!(client.send_vectored_zc(bufs).wait().unwrap().len(), 2);
    client.send_zc(IoBuf::from(&b"?"[..])).wait().unwrap();
    let (buf, _) = stream
        .recv(IoBufMut::with_capacity(6))
        .exact(6)
        .wait()
        .unwrap();
    assert_eq!(&buf[..], b"zczc!?");
    drop(client);
    let eof = stream
        .recv(IoBufMut::with_capacity(5))
        .exact(5)
        .wait()
        .unwrap_err();
    assert_eq!(eof.error, Error::UnexpectedEof);
    drop((io, server, stream));
    lt.join(HANG).unwrap();
}

/// A refused connect is the kernel's errno; an accept with nobody connecting times out.
#[test]
fn tcp_errors_come_back_as_errors() {
    let (io, lt) = start::<16, 16, 64>(config());
    // A port with nothing listening: bind a listener, note its port, close it.
    let closed = TcpListener::bind(&io, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let refused = TcpStream::connect(&io, addr).wait().unwrap_err();
    assert_eq!(refused, Error::Os(libc::ECONNREFUSED));
    let server = TcpListener::bind(&io, "127.0.0.1:0".parse().unwrap()).unwrap();
    let start = Instant::now();
    let err = server
        .accept()
        .deadline(Instant::now() + Duration::from_millis(30))
        .wait()
        .unwrap_err();
    assert_eq!(err, Error::Timeout);
    assert!(start.elapsed() >= Duration::from_millis(30));
    drop((io, server));
    lt.join(HANG).unwrap();
}

/// A TCP echo server in loop-thread mode: one pool task per connection, clients from other
/// threads, the server stopped by `Handle::shutdown` once every client is served (its accept,
/// waiting in the kernel, abandoned at the end of the shutdown budget).
#[test]
fn tcp_echo_server_on_the_loop_thread() {
    // The accept waiting in the kernel at the shutdown is abandoned after the budget.
    let config = static_uring::Config {
        shutdown_timeout: Some(Duration::from_millis(50)),
        ..config()
    };
    let (io, event_loop) = static_uring::new::<16, 16, 64>(config).unwrap();
    let server = TcpListener::bind(&io, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr().unwrap();
    let stopper = io.clone();
    let clients: Vec<_> = (0..3u8)
        .map(|k| {
            let io = io.clone();
            std::thread::spawn(move || {
                let stream = TcpStream::connect(&io, addr).wait().unwrap();
                for i in 0..50u8 {
                    let msg = [k, i, 7, 7];
                    stream.send(IoBuf::from(msg.to_vec())).wait().unwrap();
                    let (buf, _) = stream
                        .recv(IoBufMut::with_capacity(4))
                        .exact(4)
                        .wait()
                        .unwrap();
                    assert_eq!(&buf[..], &msg);
                }
            })
        })
        .collect();
    let serving = std::thread::spawn(move || {
        let pool = static_uring::TaskPool::<_, 4>::leak();
        event_loop.block_on(pool.run(async move {
            loop {
                let stream: TcpStream<16, 16, 64> = match server.accept().await {
                    Ok(stream) => stream,
                    // The shutdown: abandoned in the kernel, or refused once it began.
                    Err(Error::Abandoned | Error::Closed) => break,
                    Err(e) => panic!("accept: {e}"),
                };
                let task = async move {
                    let mut buf = IoBufMut::with_capacity(4);
                    while let Ok((data, _)) = stream.recv(buf).exact(4).await {
                        let sent = stream.send(IoBuf::from(data)).await.unwrap();
                        buf = sent.into_mut().unwrap();
                        buf.clear();
                    }
                };
                assert!(pool.spawn(task).is_ok());
            }
        }))
    });
    for c in clients {
        c.join().unwrap();
    }
    stopper.shutdown();
    with_timeout(HANG, move || serving.join().unwrap()).unwrap();
    drop((io, stopper));
}

/// UDP: `send_to` and `recv_from` with the sender's address, then `connect` and `send`/`recv`.
#[test]
fn udp_datagrams_both_ways() {
    let (io, lt): (Io, _) = start::<16, 16, 64>(config());
    let a = UdpSocket::bind(&io, "127.0.0.1:0".parse().unwrap()).unwrap();
    let b = UdpSocket::bind(&io, "127.0.0.1:0".parse().unwrap()).unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    a.send_to(IoBuf::from(&b"ping"[..]), b_addr).wait().unwrap();
    let (buf, len, from) = b.recv_from(IoBufMut::with_capacity(16)).wait().unwrap();
    assert_eq!((&buf[..], len, from), (&b"ping"[..], 4, a_addr));
    b.connect(a_addr).unwrap();
    a.connect(b_addr).unwrap();
    b.send(IoBuf::from(&b"pong"[..])).wait().unwrap();
    let (buf, _) = a.recv(IoBufMut::with_capacity(16)).wait().unwrap();
    assert_eq!(&buf[..], b"pong");
    drop((io, a, b));
    lt.join(HANG).unwrap();
}

/// Unix streams (a listener on a path, and a pair) and Unix datagrams through the loop,
/// readiness included.
#[test]
fn unix_sockets_through_the_loop() {
    let (io, lt): (Io, _) = start::<16, 16, 64>(config());
    let dir = std::env::temp_dir().join(format!("static-uring-net-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("listener.sock");
    let listener = UnixListener::bind(&io, &path).unwrap();
    let accepted = listener.accept().try_submit().unwrap();
    let client = UnixStream::connect(&io, &path).unwrap();
    let server = with_timeout(HANG, move || accepted.wait()).unwrap();
    client.send(IoBuf::from(&b"unix"[..])).wait().unwrap();
    let ready = server.ready(Readiness::READABLE).wait().unwrap();
    assert!(ready.is_readable());
    let (buf, _) = server
        .recv(IoBufMut::with_capacity(4))
        .exact(4)
        .wait()
        .unwrap();
    assert_eq!(&buf[..], b"unix");

    let (x, y) = UnixStream::pair(&io).unwrap();
    x.send(IoBuf::from(&b"pair"[..])).wait().unwrap();
    assert_eq!(
        &y.recv(IoBufMut::with_capacity(4))
            .exact(4)
            .wait()
            .unwrap()
            .0[..],
        b"pair"
    );

    let (d1, d2) = UnixDatagram::pair(&io).unwrap();
    d1.send(IoBuf::from(&b"one datagram"[..])).wait().unwrap();
    let (buf, n) = d2.recv(IoBufMut::with_capacity(64)).wait().unwrap();
    assert_eq!((&buf[..], n), (&b"one datagram"[..], 12));
    let bound = UnixDatagram::bind(&io, dir.join("dgram.sock")).unwrap();
    let sender = UnixDatagram::pair(&io).unwrap().0;
    drop(sender);
    assert!(bound.as_std().local_addr().is_ok());
    drop((io, listener, client, server, x, y, d1, d2, bound));
    lt.join(HANG).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
