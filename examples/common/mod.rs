//! Pieces the TCP examples (and tests/network.rs, faults.rs, soak.rs) share: a fresh socket for `connect`, and the
//! per-connection echo through the loop.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};

use static_uring::BufError;
use static_uring::{Error, Fd, Handle, IoBuf, IoBufMut};

/// A new, unconnected TCP socket for `addr`'s family (close-on-exec).
pub fn tcp_socket(addr: SocketAddr) -> OwnedFd {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscall; the result is checked and owned once.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a new descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Sends back whatever arrives on `stream`, through the loop, until the peer closes.
pub fn echo<const S: usize, const R: usize, const W: usize>(
    io: &Handle<S, R, W>,
    stream: &Fd,
) -> Result<(), Error> {
    let mut buf = IoBufMut::with_capacity(256);
    loop {
        buf.clear();
        match io.recv(stream, buf).limit(256).wait() {
            Ok((data, _)) => {
                let data = io
                    .send(stream, IoBuf::from(data))
                    .wait()
                    .map_err(|e| e.error)?;
                buf = IoBufMut::from(data.into_vec().expect("a Vec-backed buffer"));
            }
            Err(BufError {
                error: Error::UnexpectedEof,
                ..
            }) => return Ok(()),
            Err(BufError { error: e, .. }) => return Err(e),
        }
    }
}
