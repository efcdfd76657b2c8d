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
    /// `try_*` only: no free slot right now.
    Full,
    /// Arguments that cannot describe an operation (for example `recv` with `offset > len`).
    InvalidInput,
    /// End of file or a closed peer before the requested bytes were transferred.
    UnexpectedEof,
    /// The kernel's errno for the operation.
    Os(i32),
    /// Invalid configuration, or a ring the kernel refused; the text says which value.
    Config(&'static str),
    /// The storage is claimed by another loop (one loop per storage at a time).
    InUse,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout => f.write_str("request timed out"),
            Error::Closed => f.write_str("event loop closed"),
            Error::Abandoned => f.write_str("request abandoned at shutdown while in the kernel"),
            Error::Full => f.write_str("no free request slot"),
            Error::InvalidInput => f.write_str("invalid operation arguments"),
            Error::UnexpectedEof => f.write_str("unexpected end of file or closed peer"),
            Error::Os(errno) => write!(f, "{}", io::Error::from_raw_os_error(*errno)),
            Error::Config(why) => write!(f, "invalid configuration: {why}"),
            Error::InUse => f.write_str("storage already claimed by another event loop"),
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
        io::Error::new(kind, error)
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
}
