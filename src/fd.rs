//! [`Fd`]: a descriptor kept open for as long as an operation may use it.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;

/// A shared file descriptor that an operation holds until the kernel is done with it.
///
/// Built from an `Arc` of anything that owns a descriptor (`OwnedFd`, `File`, `TcpStream`,
/// `UnixStream`, ...). The request keeps a clone of the `Arc`, so the descriptor cannot be closed,
/// and its number reused by an unrelated open, while an SQE naming it is in the kernel.
/// Converting is an unsizing coercion: no allocation.
#[derive(Clone)]
pub struct Fd {
    raw: RawFd,
    _owner: Arc<dyn AsFd + Send + Sync>,
}

impl Fd {
    /// The descriptor number, valid while this `Fd` lives.
    pub fn as_raw_fd(&self) -> RawFd {
        self.raw
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
        Fd { raw, _owner: owner }
    }
}

impl From<&Fd> for Fd {
    fn from(fd: &Fd) -> Self {
        fd.clone()
    }
}

impl fmt::Debug for Fd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Fd").field(&self.raw).finish()
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
}
