//! [`Fd`]: a descriptor kept open for as long as an operation may use it.

use std::fmt;
use std::num::NonZeroU32;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;

/// A shared file descriptor that an operation holds until the kernel is done with it.
///
/// Built from an `Arc` of anything that owns a descriptor (`OwnedFd`, `File`, `TcpStream`,
/// `UnixStream`, ...), or from one of those by value (wrapped in an `Arc` once). The request
/// keeps a clone of the `Arc`, so the descriptor cannot be closed, and its number reused by an
/// unrelated open, while an SQE naming it is in the kernel. Converting an `Arc` is an unsizing
/// coercion and cloning an `Fd` a reference count: no allocation.
///
/// A descriptor the process keeps open for good ([`Fd::from_static`], [`Fd::leak`]) needs no
/// reference count at all: cloning such an `Fd`, and each operation that holds one, is a copy
/// (no locked read-modify-write on the operation's path).
///
/// An `Fd` returned by [`EventLoop::register_file`](crate::EventLoop::register_file) also names
/// the descriptor's index in that loop's registered-file table: that loop's SQEs use the index
/// (`IOSQE_FIXED_FILE`); any other loop uses the descriptor as usual.
#[derive(Clone)]
pub struct Fd {
    /// The descriptor's number, bitwise inverted: never 0, since `AsFd` never gives -1, which
    /// leaves `Option<Fd>` a niche (a request's optional descriptor costs no tag).
    raw: NonZeroU32,
    /// Index in the registered-file table of the loop that registered it, or `NOT_FIXED`.
    fixed: u32,
    /// What keeps the descriptor open; `None`: a `'static` owner, never dropped.
    owner: Option<Arc<dyn AsFd + Send + Sync>>,
}

/// `Fd::fixed` of a descriptor no loop registered.
const NOT_FIXED: u32 = u32::MAX;

impl Fd {
    /// The descriptor number, valid while this `Fd` lives.
    #[inline]
    pub fn as_raw_fd(&self) -> RawFd {
        !self.raw.get() as RawFd
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

    /// A descriptor owned by a `'static` value, which is never dropped, so the descriptor stays
    /// open for the rest of the process: the `Fd` holds no reference count, and neither do its
    /// clones nor the operations that use it. For descriptors a service keeps for good (its data
    /// files, long-lived connections); one that comes and goes belongs in an `Arc`.
    ///
    /// ```
    /// # use static_uring::{Config, Fd, IoBufMut};
    /// use std::sync::OnceLock;
    /// static EXE: OnceLock<std::fs::File> = OnceLock::new();
    /// let fd = Fd::from_static(EXE.get_or_init(|| std::fs::File::open("/proc/self/exe").unwrap()));
    /// # let (handle, event_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
    /// # let thread = std::thread::spawn(move || event_loop.run());
    /// let buf = handle.read_at(&fd, 1, IoBufMut::with_capacity(3)).limit(3).wait().unwrap();
    /// assert_eq!(&buf[..], b"ELF");
    /// # drop(handle);
    /// # thread.join().unwrap().unwrap();
    /// ```
    pub fn from_static<T: AsFd + Send + Sync + 'static>(owner: &'static T) -> Fd {
        Fd {
            raw: invert(owner.as_fd()),
            fixed: NOT_FIXED,
            owner: None,
        }
    }

    /// [`from_static`](Self::from_static) for an owner given by value: it is leaked (one
    /// allocation, here, never freed), so its descriptor is never closed.
    pub fn leak<T: AsFd + Send + Sync + 'static>(owner: T) -> Fd {
        Fd::from_static(Box::leak(Box::new(owner)))
    }

    /// True when both keep the same owner alive (so they name the same open descriptor). Two
    /// `'static` owners open at once never share a number: theirs is the identity.
    pub(crate) fn same_owner(&self, other: &Fd) -> bool {
        match (&self.owner, &other.owner) {
            (Some(a), Some(b)) => std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b)),
            (None, None) => self.raw == other.raw,
            _ => false,
        }
    }
}

impl AsRawFd for Fd {
    #[inline]
    fn as_raw_fd(&self) -> RawFd {
        Fd::as_raw_fd(self)
    }
}

/// `Fd::raw` of a descriptor.
fn invert(fd: BorrowedFd<'_>) -> NonZeroU32 {
    // A `BorrowedFd` is never -1 (its type rules it out), so the inverse is never 0.
    NonZeroU32::new(!(fd.as_raw_fd() as u32)).expect("a BorrowedFd is never -1")
}

impl<T: AsFd + Send + Sync + 'static> From<Arc<T>> for Fd {
    fn from(owner: Arc<T>) -> Self {
        Fd {
            raw: invert(owner.as_fd()),
            fixed: NOT_FIXED,
            owner: Some(owner),
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
        t.field(&self.as_raw_fd());
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
    fn a_static_owner_is_named_by_its_number_and_costs_no_tag() {
        // No count to hold: the owner is never dropped. Its identity (for a loop's registered
        // files) is the number, which no other open descriptor shares.
        let file: &'static File = Box::leak(Box::new(File::open("/dev/null").unwrap()));
        let fd = Fd::from_static(file);
        assert_eq!(fd.as_raw_fd(), file.as_raw_fd());
        assert_eq!(fd.registered_index(), None);
        assert!(fd.same_owner(&fd.clone()));
        assert!(fd.same_owner(&Fd::from_static(file)));
        let other = Fd::leak(File::open("/dev/null").unwrap());
        assert!(!fd.same_owner(&other));
        let shared = Fd::from(Arc::new(File::open("/dev/null").unwrap()));
        assert!(!fd.same_owner(&shared) && !shared.same_owner(&fd));
        // Descriptor 0 (the encoding's edge) round-trips too.
        assert_eq!(Fd::leak(std::io::stdin()).as_raw_fd(), 0);
        // A request's optional descriptor needs no tag beside it.
        assert_eq!(std::mem::size_of::<Option<Fd>>(), std::mem::size_of::<Fd>());
        assert_eq!(format!("{:?}", Fd::leak(std::io::stdin())), "Fd(0)");
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
