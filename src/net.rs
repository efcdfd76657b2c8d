//! Socket types bound to a [`Handle`]: TCP, UDP and Unix sockets whose operations are methods
//! returning the crate's operations ([`Op`]: `.await`, `.wait()`, `.deadline()`,
//! `.try_submit()`), so a client or a server needs neither `unsafe` nor `libc`.
//!
//! Each type holds a clone of its handle (so, like a handle, it keeps the loop serving until it
//! is dropped) and the std socket (shared with the `Fd` the operations keep while in the
//! kernel); [`as_std`](TcpStream::as_std) reaches the std type for addresses and socket options. Creating a socket and binding it are ordinary syscalls at
//! setup; every transfer, accept and TCP connect goes through the loop. Accepting or connecting
//! yields the connected type through [`Accept`] and [`Connect`], operations like the others.
//!
//! ```
//! use static_uring::net::{TcpListener, TcpStream};
//! use static_uring::{Config, IoBuf, IoBufMut};
//!
//! let (io, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
//! let server = TcpListener::bind(&io, "127.0.0.1:0".parse().unwrap()).unwrap();
//! let addr = server.local_addr().unwrap();
//! event_loop
//!     .block_on(async move {
//!         let (client, accepted) = (TcpStream::connect(&io, addr), server.accept());
//!         let client = client.await.unwrap();
//!         let stream = accepted.await.unwrap();
//!         client.send(IoBuf::from(&b"ping"[..])).await.unwrap();
//!         let (buf, _) = stream.recv(IoBufMut::with_capacity(4)).exact(4).await.unwrap();
//!         assert_eq!(&buf[..], b"ping");
//!     }) // the handles (in `io`, the sockets) are dropped with the future: the loop drains
//!     .unwrap();
//! ```

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net as unix;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::buf::{IoBuf, IoBufMut};
use crate::error::Error;
use crate::fd::Fd;
use crate::handle::{Handle, Op};
use crate::op::{self, Readiness};
use crate::vectored::IoBufs;

/// The parts every socket type has: its handle, its std socket and the `Fd` of both.
macro_rules! socket_type {
    ($(#[$doc:meta])* $name:ident, $std:ty) => {
        $(#[$doc])*
        pub struct $name<const SLOTS: usize, const RING: usize, const WHEEL: usize> {
            io: Handle<SLOTS, RING, WHEEL>,
            sock: Arc<$std>,
            fd: Fd,
        }

        impl<const S: usize, const R: usize, const W: usize> $name<S, R, W> {
            /// Binds a std socket to `handle`'s loop (the socket is used as it is: blocking mode
            /// does not matter to the loop).
            pub fn from_std(handle: &Handle<S, R, W>, socket: $std) -> Self {
                let sock = Arc::new(socket);
                let fd = Fd::from(sock.clone());
                $name { io: handle.clone(), sock, fd }
            }

            /// The std socket: addresses, socket options.
            pub fn as_std(&self) -> &$std {
                &self.sock
            }

            /// The descriptor, for the `Handle` methods this type does not wrap.
            pub fn fd(&self) -> &Fd {
                &self.fd
            }

            /// The handle whose loop runs this socket's operations.
            pub fn handle(&self) -> &Handle<S, R, W> {
                &self.io
            }

            /// Waits until the socket is ready for `events` (`poll` through the loop).
            pub fn ready(&self, events: Readiness) -> Op<op::Poll, S, R, W> {
                self.io.poll(&self.fd, events)
            }
        }

        impl<const S: usize, const R: usize, const W: usize> std::fmt::Debug for $name<S, R, W> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.fd).finish()
            }
        }
    };
}

/// Byte-stream operations (TCP and Unix streams, and connected datagram sockets).
macro_rules! stream_ops {
    ($name:ident) => {
        impl<const S: usize, const R: usize, const W: usize> $name<S, R, W> {
            /// Receives into `buf` ([`Handle::recv`]: `.exact(n)`, `.limit(n)`, `.offset(n)`).
            pub fn recv(&self, buf: IoBufMut) -> Op<op::Recv, S, R, W> {
                self.io.recv(&self.fd, buf)
            }

            /// Sends all of `buf` ([`Handle::send`]).
            pub fn send(&self, buf: IoBuf) -> Op<op::Send, S, R, W> {
                self.io.send(&self.fd, buf)
            }

            /// Sends up to four buffers as one request ([`Handle::send_vectored`]).
            pub fn send_vectored(&self, bufs: IoBufs) -> Op<op::SendVectored, S, R, W> {
                self.io.send_vectored(&self.fd, bufs)
            }

            /// A multishot receive into `ring`'s buffers ([`Handle::recv_multi`]).
            pub fn recv_multi<const COUNT: usize, const SIZE: usize>(
                &self,
                ring: &'static crate::BufRing<COUNT, SIZE>,
            ) -> Result<crate::RecvStream<S, R, W>, Error> {
                self.io.recv_multi(&self.fd, ring)
            }
        }
    };
}

/// Listener operations.
macro_rules! listener_ops {
    ($name:ident, $stream:ident) => {
        impl<const S: usize, const R: usize, const W: usize> $name<S, R, W> {
            /// A multishot accept ([`Handle::accept_multi`]): a stream of accepted descriptors;
            #[doc = concat!("[`", stringify!($stream), "::from_accepted`](FromAccepted::from_accepted)")]
            /// binds one to the loop.
            pub fn accept_multi(&self) -> Result<crate::AcceptStream<S, R, W>, Error> {
                self.io.accept_multi(&self.fd)
            }
        }
    };
}

socket_type!(
    /// A TCP listener: [`accept`](Self::accept) yields a [`TcpStream`] through the loop.
    TcpListener,
    std::net::TcpListener
);
socket_type!(
    /// A connected TCP stream: `recv`, `send`, `send_vectored` and the zero-copy `send_zc`,
    /// `send_vectored_zc` through the loop.
    TcpStream,
    std::net::TcpStream
);
socket_type!(
    /// A UDP socket: `send_to`, `recv_from` (and `send`, `recv` once connected) through the loop.
    UdpSocket,
    std::net::UdpSocket
);
socket_type!(
    /// A Unix stream listener: [`accept`](Self::accept) yields a [`UnixStream`].
    UnixListener,
    unix::UnixListener
);
socket_type!(
    /// A connected Unix stream socket: `recv`, `send`, `send_vectored` through the loop.
    UnixStream,
    unix::UnixStream
);
socket_type!(
    /// A Unix datagram socket: `send` and `recv` through the loop once connected (or paired).
    UnixDatagram,
    unix::UnixDatagram
);

listener_ops!(TcpListener, TcpStream);
listener_ops!(UnixListener, UnixStream);
stream_ops!(TcpStream);
stream_ops!(UnixStream);
stream_ops!(UnixDatagram);

/// The zero-copy sends, on TCP only (a Unix socket cannot send zero-copy).
impl<const S: usize, const R: usize, const W: usize> TcpStream<S, R, W> {
    /// Sends all of `buf` without copying it ([`Handle::send_zc`]: the buffer comes back once
    /// the kernel has let go of it, after the peer's ACK).
    pub fn send_zc(&self, buf: IoBuf) -> Op<op::SendZc, S, R, W> {
        self.io.send_zc(&self.fd, buf)
    }

    /// Sends up to four buffers as one request without copying them
    /// ([`Handle::send_vectored_zc`]).
    pub fn send_vectored_zc(&self, bufs: IoBufs) -> Op<op::SendVectoredZc, S, R, W> {
        self.io.send_vectored_zc(&self.fd, bufs)
    }
}

impl<const S: usize, const R: usize, const W: usize> TcpListener<S, R, W> {
    /// Binds a listener to `addr` (std `bind` and `listen`).
    pub fn bind(handle: &Handle<S, R, W>, addr: SocketAddr) -> io::Result<Self> {
        Ok(Self::from_std(handle, std::net::TcpListener::bind(addr)?))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// The next connection, as a [`TcpStream`] on the same loop.
    pub fn accept(&self) -> Accept<TcpStream<S, R, W>, S, R, W> {
        Accept::new(&self.io, self.io.accept(&self.fd))
    }
}

impl<const S: usize, const R: usize, const W: usize> TcpStream<S, R, W> {
    /// Connects to `addr` through the loop: a new socket of `addr`'s family, then the connect
    /// (a refused peer is `Error::Os(ECONNREFUSED)`; with `.deadline()`, none in time is
    /// `Timeout`).
    pub fn connect(handle: &Handle<S, R, W>, addr: SocketAddr) -> Connect<S, R, W> {
        let socket = new_socket(addr).map(std::net::TcpStream::from);
        Connect::new(handle, socket, addr)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock.peer_addr()
    }

    /// This end's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }
}

impl<const S: usize, const R: usize, const W: usize> UdpSocket<S, R, W> {
    /// Binds a socket to `addr`.
    pub fn bind(handle: &Handle<S, R, W>, addr: SocketAddr) -> io::Result<Self> {
        Ok(Self::from_std(handle, std::net::UdpSocket::bind(addr)?))
    }

    /// Its address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Sets the default peer (std `connect`, no I/O), for `send` and `recv`.
    pub fn connect(&self, addr: SocketAddr) -> io::Result<()> {
        self.sock.connect(addr)
    }

    /// Sends `buf` as one datagram to `addr` ([`Handle::send_to`]).
    pub fn send_to(&self, buf: IoBuf, addr: SocketAddr) -> Op<op::SendTo, S, R, W> {
        self.io.send_to(&self.fd, buf, addr)
    }

    /// Receives one datagram and its sender ([`Handle::recv_from`]).
    pub fn recv_from(&self, buf: IoBufMut) -> Op<op::RecvFrom, S, R, W> {
        self.io.recv_from(&self.fd, buf)
    }

    /// Sends `buf` as one datagram to the connected peer.
    pub fn send(&self, buf: IoBuf) -> Op<op::Send, S, R, W> {
        self.io.send(&self.fd, buf)
    }

    /// Receives one datagram from the connected peer.
    pub fn recv(&self, buf: IoBufMut) -> Op<op::Recv, S, R, W> {
        self.io.recv(&self.fd, buf)
    }
}

impl<const S: usize, const R: usize, const W: usize> UnixListener<S, R, W> {
    /// Binds a listener to `path` (std `bind` and `listen`).
    pub fn bind(handle: &Handle<S, R, W>, path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Self::from_std(handle, unix::UnixListener::bind(path)?))
    }

    /// The next connection, as a [`UnixStream`] on the same loop.
    pub fn accept(&self) -> Accept<UnixStream<S, R, W>, S, R, W> {
        Accept::new(&self.io, self.io.accept(&self.fd))
    }
}

impl<const S: usize, const R: usize, const W: usize> UnixStream<S, R, W> {
    /// Connects to the listener at `path` with the std call: a Unix connect completes at once
    /// (it waits only while the listener's backlog is full).
    pub fn connect(handle: &Handle<S, R, W>, path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Self::from_std(handle, unix::UnixStream::connect(path)?))
    }

    /// A connected pair.
    pub fn pair(handle: &Handle<S, R, W>) -> io::Result<(Self, Self)> {
        let (a, b) = unix::UnixStream::pair()?;
        Ok((Self::from_std(handle, a), Self::from_std(handle, b)))
    }
}

impl<const S: usize, const R: usize, const W: usize> UnixDatagram<S, R, W> {
    /// A socket bound to `path`.
    pub fn bind(handle: &Handle<S, R, W>, path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Self::from_std(handle, unix::UnixDatagram::bind(path)?))
    }

    /// A connected pair.
    pub fn pair(handle: &Handle<S, R, W>) -> io::Result<(Self, Self)> {
        let (a, b) = unix::UnixDatagram::pair()?;
        Ok((Self::from_std(handle, a), Self::from_std(handle, b)))
    }

    /// Sets the default peer (std `connect`, no I/O), for `send` and `recv`.
    pub fn connect(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.sock.connect(path)
    }
}

/// A new close-on-exec stream socket for `addr`'s family.
fn new_socket(addr: SocketAddr) -> Result<OwnedFd, Error> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscall with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::from_io(&io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A socket type made from an accepted connection.
pub trait FromAccepted<const S: usize, const R: usize, const W: usize>: Sized {
    /// The accepted descriptor, bound to `handle`.
    fn from_accepted(handle: &Handle<S, R, W>, fd: OwnedFd) -> Self;
}

impl<const S: usize, const R: usize, const W: usize> FromAccepted<S, R, W> for TcpStream<S, R, W> {
    fn from_accepted(handle: &Handle<S, R, W>, fd: OwnedFd) -> Self {
        Self::from_std(handle, std::net::TcpStream::from(fd))
    }
}

impl<const S: usize, const R: usize, const W: usize> FromAccepted<S, R, W> for UnixStream<S, R, W> {
    fn from_accepted(handle: &Handle<S, R, W>, fd: OwnedFd) -> Self {
        Self::from_std(handle, unix::UnixStream::from(fd))
    }
}

/// An accept through the loop that yields a socket type `T` ([`TcpListener::accept`],
/// [`UnixListener::accept`]): an operation like the others (`.await`, `.wait()`,
/// `.deadline()`, `.timeout()`, `.try_submit()`), resolving to `Result<T, Error>`. Unlike a
/// bare [`Op`], it holds a handle clone (for the socket it yields), so it keeps the loop serving
/// until it is dropped, as the listener does.
#[must_use = "operations do nothing until polled or waited on"]
pub struct Accept<T, const S: usize, const R: usize, const W: usize> {
    op: Op<op::Accept, S, R, W>,
    io: Handle<S, R, W>,
    into: PhantomData<fn() -> T>,
}

impl<T: FromAccepted<S, R, W>, const S: usize, const R: usize, const W: usize> Accept<T, S, R, W> {
    fn new(io: &Handle<S, R, W>, op: Op<op::Accept, S, R, W>) -> Self {
        Accept {
            op,
            io: io.clone(),
            into: PhantomData,
        }
    }

    /// See [`Op::deadline`].
    pub fn deadline(self, at: impl Into<Option<Instant>>) -> Self {
        Accept {
            op: self.op.deadline(at),
            ..self
        }
    }

    /// See [`Op::timeout`].
    pub fn timeout(self, after: Duration) -> Self {
        Accept {
            op: self.op.timeout(after),
            ..self
        }
    }

    /// See [`Op::try_submit`].
    pub fn try_submit(self) -> Result<Self, Error> {
        let op = self.op.try_submit()?;
        Ok(Accept { op, ..self })
    }

    /// See [`Op::wait`].
    pub fn wait(self) -> Result<T, Error> {
        let io = self.io;
        self.op.wait().map(|fd| T::from_accepted(&io, fd))
    }
}

impl<T: FromAccepted<S, R, W>, const S: usize, const R: usize, const W: usize> Future
    for Accept<T, S, R, W>
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `op` is structurally pinned (never moved out while pinned: only the by-value
        // methods move it); the other fields are not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above.
        let op = unsafe { Pin::new_unchecked(&mut this.op) };
        op.poll(cx)
            .map(|result| result.map(|fd| T::from_accepted(&this.io, fd)))
    }
}

impl<T, const S: usize, const R: usize, const W: usize> std::fmt::Debug for Accept<T, S, R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Accept").field(&self.op).finish()
    }
}

/// A TCP connect through the loop ([`TcpStream::connect`]) that yields the [`TcpStream`]: an
/// operation like the others, resolving to `Result<TcpStream, Error>`. A socket that could not
/// be created ends it with the kernel's errno at its first poll. It holds the stream it connects
/// (and so a handle clone): it keeps the loop serving until it is dropped.
#[must_use = "operations do nothing until polled or waited on"]
pub struct Connect<const S: usize, const R: usize, const W: usize> {
    /// The connect (`Err`: the socket could not be created). Structurally pinned.
    op: Result<Op<op::Connect, S, R, W>, Error>,
    /// The stream it connects, handed out once the connect succeeded. Not pinned.
    stream: Option<TcpStream<S, R, W>>,
}

impl<const S: usize, const R: usize, const W: usize> Connect<S, R, W> {
    fn new(
        handle: &Handle<S, R, W>,
        socket: Result<std::net::TcpStream, Error>,
        addr: SocketAddr,
    ) -> Self {
        match socket {
            Ok(socket) => {
                let stream = TcpStream::from_std(handle, socket);
                Connect {
                    op: Ok(handle.connect(&stream.fd, addr)),
                    stream: Some(stream),
                }
            }
            Err(e) => Connect {
                op: Err(e),
                stream: None,
            },
        }
    }

    fn map_op(self, f: impl FnOnce(Op<op::Connect, S, R, W>) -> Op<op::Connect, S, R, W>) -> Self {
        Connect {
            op: self.op.map(f),
            stream: self.stream,
        }
    }

    /// See [`Op::deadline`].
    pub fn deadline(self, at: impl Into<Option<Instant>>) -> Self {
        self.map_op(|op| op.deadline(at))
    }

    /// See [`Op::timeout`].
    pub fn timeout(self, after: Duration) -> Self {
        self.map_op(|op| op.timeout(after))
    }

    /// See [`Op::try_submit`].
    pub fn try_submit(self) -> Result<Self, Error> {
        let op = self.op?.try_submit()?;
        Ok(Connect {
            op: Ok(op),
            stream: self.stream,
        })
    }

    /// See [`Op::wait`].
    pub fn wait(self) -> Result<TcpStream<S, R, W>, Error> {
        self.op?.wait()?;
        Ok(self.stream.expect("a stream with every connect"))
    }
}

impl<const S: usize, const R: usize, const W: usize> Future for Connect<S, R, W> {
    type Output = Result<TcpStream<S, R, W>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `op` is structurally pinned (never moved out while pinned: only the by-value
        // methods move it); `stream` is not pinned and is taken out below.
        let this = unsafe { self.get_unchecked_mut() };
        let op = match &mut this.op {
            Ok(op) => op,
            Err(e) => return Poll::Ready(Err(*e)),
        };
        // SAFETY: as above.
        match unsafe { Pin::new_unchecked(op) }.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => Poll::Ready(result.map(|()| {
                this.stream
                    .take()
                    .expect("a connect is polled to its end once")
            })),
        }
    }
}

impl<const S: usize, const R: usize, const W: usize> std::fmt::Debug for Connect<S, R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect").field("op", &self.op).finish()
    }
}
