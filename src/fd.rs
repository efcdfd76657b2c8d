//! [`Fd`]: a descriptor kept open for as long as an operation may use it.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;

/// A shared file descriptor that an operation holds until the kernel is done with it.
///
/// Built from an `Arc` of anything that owns a descriptor (`OwnedFd`, `File`, `TcpStream`,
/// `UnixStream`, ...), or from one of those by value (wrapped in an `Arc` once). The request
/// keeps a clone of the `Arc`, so the descriptor cannot be closed, and its number reused by an
/// unrelated open, while an SQE naming it is in the kernel. Converting an `Arc` is an unsizing
/// coercion and cloning an `Fd` a reference count: no allocation.
///
/// An `Fd` returned by [`EventLoop::register_file`](crate::EventLoop::register_file) also names
/// the descriptor's index in that loop's registered-file table: that loop's SQEs use the index
/// (`IOSQE_FIXED_FILE`); any other loop uses the descriptor as usual.
#[derive(Clone)]
pub struct Fd {
    raw: RawFd,
    /// Index in the registered-file table of the loop that registered it, or `NOT_FIXED`.
    fixed: u32,
    owner: Arc<dyn AsFd + Send + Sync>,
}

/// `Fd::fixed` of a descriptor no loop registered.
const NOT_FIXED: u32 = u32::MAX;

impl Fd {
    /// The descriptor number, valid while this `Fd` lives.
    pub fn as_raw_fd(&self) -> RawFd {
        self.raw
    }

    /// The index a loop registered this descriptor under, if this `Fd` came from
    /// [`EventLoop::register_file`](crate::EventLoop::register_file).
    pub fn registered_index(&self) -> Option<u32> {
        (self.fixed != NOT_FIXED).then_some(self.fixed)
    }

    /// The same descriptor, named by registered-file `index`.
    pub(crate) fn with_index(&self, index: u32) -> Fd {
        Fd {
            fixed: index,
            ..self.clone()
        }
    }

    /// True when both keep the same owner alive (so they name the same open descriptor).
    pub(crate) fn same_owner(&self, other: &Fd) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.owner), Arc::as_ptr(&other.owner))
    }
}

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.raw
    }
}

impl<T: AsFd + Send + Sync + 'static> From<Arc<T>> for Fd {
    fn from(owner: Arc<T>) -> Self {
        let raw = owner.as_fd().as_raw_fd();
        Fd {
            raw,
            fixed: NOT_FIXED,
            owner,
        }
    }
}

/// Owning descriptor types by value: the `Fd` takes ownership (one `Arc` allocation, here).
/// Convert once and clone the `Fd` (a reference count) for each operation; converting per
/// operation would allocate per operation.
macro_rules! from_owner {
    ($($ty:ty),* $(,)?) => {$(
        impl From<$ty> for Fd {
            fn from(owner: $ty) -> Self {
                Fd::from(Arc::new(owner))
            }
        }
    )*};
}

from_owner!(
    std::os::fd::OwnedFd,
    std::fs::File,
    std::net::TcpStream,
    std::net::TcpListener,
    std::net::UdpSocket,
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixDatagram,
    std::os::unix::net::UnixListener,
);

impl From<&Fd> for Fd {
    fn from(fd: &Fd) -> Self {
        fd.clone()
    }
}

impl fmt::Debug for Fd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut t = f.debug_tuple("Fd");
        t.field(&self.raw);
        if let Some(index) = self.registered_index() {
            t.field(&format_args!("registered {index}"));
        }
        t.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    #[test]
    fn keeps_the_descriptor_alive_while_held() {
        // The whole point of Fd: the kernel may still use the number after the caller drops its
        // own handle, so the Fd must hold a strong reference.
        let file = Arc::new(File::open("/dev/null").unwrap());
        let fd = Fd::from(file.clone());
        assert_eq!(Arc::strong_count(&file), 2);
        assert_eq!(fd.as_raw_fd(), file.as_raw_fd());
        let copy = Fd::from(&fd);
        drop(fd);
        assert_eq!(Arc::strong_count(&file), 2);
        drop(copy);
        assert_eq!(Arc::strong_count(&file), 1);
    }

    #[test]
    fn owners_by_value_convert_and_stay_open_while_held() {
        // `File`, `OwnedFd`, sockets by value: the Fd owns them; the number stays valid (and is
        // closed with the last clone).
        let file = File::open("/dev/null").unwrap();
        let raw = file.as_raw_fd();
        let fd = Fd::from(file);
        assert_eq!(fd.as_raw_fd(), raw);
        let owned: std::os::fd::OwnedFd = File::open("/dev/null").unwrap().into();
        let from_owned = Fd::from(owned);
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let sock = Fd::from(a);
        // SAFETY: fcntl(F_GETFD) only queries the descriptors.
        unsafe {
            assert!(libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) >= 0);
            assert!(libc::fcntl(from_owned.as_raw_fd(), libc::F_GETFD) >= 0);
            assert!(libc::fcntl(sock.as_raw_fd(), libc::F_GETFD) >= 0);
        }
    }
}
