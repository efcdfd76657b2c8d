//! The one error type of the crate.

use std::fmt;
use std::io;

/// Why an operation or the loop failed.
///
/// Every operation that takes a buffer hands it back beside the error, except where the kernel
/// may still write it ([`Error::Abandoned`]).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The request's deadline passed before the whole logical request finished. Part of a send
    /// or recv may already have been transferred: treat the connection as unusable.
    Timeout,
    /// The loop is gone or shutting down; the request was never submitted.
    Closed,
    /// The loop stopped (`shutdown_timeout` elapsed, or the loop failed) before the request
    /// finished, and the kernel gave no answer of its own. If the kernel had released the buffer,
    /// it comes back with this error; if the kernel may still write it, it stays parked in the
    /// storage for good and an empty buffer comes back instead.
    Abandoned,
    /// [`Op::try_submit`](crate::Op::try_submit): no free slot right now; or
    /// [`Handle::post`](crate::Handle::post): the receiving loop already holds as many messages
    /// as its queue takes (nothing was sent).
    Full,
    /// Arguments that cannot describe an operation (for example `recv` with `offset > len`).
    InvalidInput,
    /// End of file or a closed peer before the requested bytes were transferred.
    UnexpectedEof,
    /// The kernel's errno for the operation.
    Os(i32),
    /// Invalid configuration, or a ring the kernel refused; the text says which value.
    Config(&'static str),
    /// Held by another owner: a storage claimed by another loop (one loop per storage at a
    /// time), a lane registered with another live loop, or a lane another producer holds.
    InUse,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout => f.write_str("request timed out"),
            Error::Closed => f.write_str("event loop closed"),
            Error::Abandoned => f.write_str("request abandoned at shutdown while in the kernel"),
            Error::Full => f.write_str("no free request slot, or the receiving inbox is full"),
            Error::InvalidInput => f.write_str("invalid operation arguments"),
            Error::UnexpectedEof => f.write_str("unexpected end of file or closed peer"),
            Error::Os(errno) => write!(f, "{}", io::Error::from_raw_os_error(*errno)),
            Error::Config(why) => write!(f, "invalid configuration: {why}"),
            Error::InUse => f.write_str(
                "in use: the storage or lane is held by another loop, or the lane by another producer",
            ),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The kernel's errno of an I/O error (`EIO` if it carries none).
    pub(crate) fn from_io(e: &io::Error) -> Error {
        Error::Os(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl From<Error> for io::Error {
    /// `Os` keeps its errno; every other variant becomes its closest `ErrorKind`. Allocation-free
    /// (`io::Error::new` would box the message), so `?` costs nothing on the error path.
    fn from(error: Error) -> Self {
        let kind = match error {
            Error::Os(errno) => return io::Error::from_raw_os_error(errno),
            Error::Timeout => io::ErrorKind::TimedOut,
            Error::Closed | Error::Abandoned => io::ErrorKind::BrokenPipe,
            Error::InUse => io::ErrorKind::AddrInUse,
            Error::Full => io::ErrorKind::WouldBlock,
            Error::InvalidInput | Error::Config(_) => io::ErrorKind::InvalidInput,
            Error::UnexpectedEof => io::ErrorKind::UnexpectedEof,
        };
        io::Error::from(kind)
    }
}

/// The error of an operation that carries a buffer: the buffer, handed back, and why the
/// operation failed.
///
/// It implements `std::error::Error` and converts into `std::io::Error` (dropping the buffer,
/// keeping the errno and the kind, without allocating), so `?` works in a function returning
/// `io::Result`; a caller who wants the buffer back takes [`buf`](Self::buf) or calls
/// [`into_parts`](Self::into_parts).
///
/// ```
/// use static_uring::{Config, IoBuf};
/// use std::os::unix::net::UnixStream;
///
/// fn greet(handle: &static_uring::Handle<8, 8, 64>, peer: UnixStream) -> std::io::Result<()> {
///     handle.send(peer, IoBuf::from(&b"hi"[..])).wait()?;
///     Ok(())
/// }
///
/// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
/// # let thread = std::thread::spawn(move || event_loop.run());
/// let (a, b) = UnixStream::pair().unwrap();
/// greet(&handle, a).unwrap();
/// drop(b);
/// # drop(handle);
/// # thread.join().unwrap().unwrap();
/// ```
pub struct BufError<B> {
    /// The buffer, handed back (empty if the kernel may still write the real one).
    pub buf: B,
    /// Why the operation failed.
    pub error: Error,
}

impl<B> BufError<B> {
    pub(crate) fn new(buf: B, error: Error) -> Self {
        BufError { buf, error }
    }

    /// The buffer and the error.
    pub fn into_parts(self) -> (B, Error) {
        (self.buf, self.error)
    }
}

impl<B> From<(B, Error)> for BufError<B> {
    fn from((buf, error): (B, Error)) -> Self {
        BufError { buf, error }
    }
}

impl<B> fmt::Debug for BufError<B> {
    /// Names the error only: the buffer's bytes are the caller's business.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<B> fmt::Display for BufError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<B> std::error::Error for BufError<B> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<B> From<BufError<B>> for io::Error {
    fn from(error: BufError<B>) -> Self {
        error.error.into()
    }
}

impl<B> From<BufError<B>> for Error {
    fn from(error: BufError<B>) -> Self {
        error.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_io_error_with_matching_kind_and_errno() {
        // Callers that speak std::io must keep the errno and a meaningful kind.
        let e: io::Error = Error::Os(libc::EBADF).into();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
        let e: io::Error = Error::Timeout.into();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let e: io::Error = Error::UnexpectedEof.into();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(Error::Config("tick").to_string().contains("tick"));
    }

    #[test]
    fn buf_error_keeps_the_buffer_and_converts_like_error() {
        let err = BufError::new(vec![1, 2], Error::Os(libc::EPIPE));
        assert_eq!(err.to_string(), Error::Os(libc::EPIPE).to_string());
        assert!(format!("{err:?}").contains("Os"));
        let source = std::error::Error::source(&err).unwrap();
        assert_eq!(source.to_string(), err.to_string());
        let io: io::Error = err.into();
        assert_eq!(io.raw_os_error(), Some(libc::EPIPE));
        let (buf, e) = BufError::from((vec![3u8], Error::Timeout)).into_parts();
        assert_eq!((buf, e), (vec![3], Error::Timeout));
        let e: Error = BufError::from(((), Error::Full)).into();
        assert_eq!(e, Error::Full);
    }
}
