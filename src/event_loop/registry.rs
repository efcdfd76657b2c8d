//! What a loop registered with its ring: descriptors (fixed files) and one buffer pool (fixed
//! buffers), and how staging picks the fixed form of an SQE from them.
//!
//! It also carries what the ring's kernel supports of the operations that need a probe (the
//! zero-copy sends), since staging reads it from the same place.
//!
//! Registration happens before the loop runs (it needs `&mut EventLoop`) and lasts as long as
//! the ring, so nothing registered can be unregistered while a request uses it. The registry
//! keeps each registered descriptor's `Fd`, so the descriptor stays open as long as the table
//! names it.

use std::ptr::NonNull;

use super::zero_copy::ZeroCopy;
use crate::buf::PoolSlot;
use crate::buf_ring::Provided;
use crate::fd::Fd;

/// The loop's registered files, buffer pool and provided-buffer rings.
pub struct Registry {
    /// `files[i]` is registered-file index `i`.
    files: Vec<Fd>,
    /// The registered pool's identity (its free list's address).
    pool: Option<NonNull<()>>,
    /// Provided-buffer rings: `rings[g]` is buffer group `g`.
    pub(crate) rings: Vec<&'static dyn Provided>,
    /// Streams paused until their ring has buffers again (capacity reserved at registration:
    /// at most one entry per admitted stream).
    pub(crate) starved: Vec<u32>,
    /// A receive stream was parked with the kernel: its ring stays claimed for good.
    pub(crate) keep_rings: bool,
    /// The zero-copy sends the ring's kernel runs (probed when the loop is built).
    pub(crate) zero_copy: ZeroCopy,
}

impl Registry {
    /// Nothing registered.
    pub(crate) const NONE: Registry = Registry {
        files: Vec::new(),
        pool: None,
        rings: Vec::new(),
        starved: Vec::new(),
        keep_rings: false,
        zero_copy: ZeroCopy::ASSUMED,
    };

    /// The descriptors a new file table holds once `fd` joins it.
    pub(crate) fn files_with(&self, fd: &Fd) -> Vec<i32> {
        let mut raws: Vec<i32> = self.files.iter().map(Fd::as_raw_fd).collect();
        raws.push(fd.as_raw_fd());
        raws
    }

    /// Records `fd` as the next index (after the kernel accepted the table); returns the `Fd`
    /// that names it by index.
    pub(crate) fn add_file(&mut self, fd: &Fd) -> Fd {
        let named = fd.with_index(self.files.len() as u32);
        self.files.push(named.clone());
        named
    }

    /// True when some descriptor is registered (a new table replaces the old one).
    pub(crate) fn has_files(&self) -> bool {
        !self.files.is_empty()
    }

    /// The registered-file index to use for `fd`: only if this loop registered that very
    /// descriptor under that index. An `Fd` registered by another loop is used as a plain
    /// descriptor here.
    #[inline(always)]
    pub(crate) fn file_index(&self, fd: &Fd) -> Option<u32> {
        let index = fd.registered_index()?;
        let registered = self.files.get(index as usize)?;
        registered.same_owner(fd).then_some(index)
    }

    /// Records the registered pool.
    pub(crate) fn set_pool(&mut self, id: NonNull<()>) {
        self.pool = Some(id);
    }

    /// True when a pool is registered.
    pub(crate) fn has_pool(&self) -> bool {
        self.pool.is_some()
    }

    /// The fixed-buffer index of a buffer, if it belongs to the registered pool.
    pub(crate) fn buf_index(&self, slot: Option<PoolSlot>) -> Option<u16> {
        let slot = slot?;
        (Some(slot.list) == self.pool).then_some(slot.index)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn only_this_registries_own_descriptors_use_their_index() {
        let file = Fd::from(Arc::new(std::fs::File::open("/dev/null").unwrap()));
        let other = Fd::from(Arc::new(std::fs::File::open("/dev/null").unwrap()));
        let mut reg = Registry::NONE;
        assert_eq!(reg.file_index(&file), None, "a plain Fd has no index");
        assert_eq!(reg.files_with(&file), vec![file.as_raw_fd()]);
        let fixed = reg.add_file(&file);
        assert_eq!(reg.file_index(&fixed), Some(0));
        assert_eq!(
            reg.file_index(&fixed.clone()),
            Some(0),
            "clones keep the index"
        );
        // Another descriptor claiming index 0 (registered by some other loop) is not ours.
        let foreign = other.with_index(0);
        assert_eq!(reg.file_index(&foreign), None);
        assert_eq!(reg.file_index(&other.with_index(7)), None);
    }
}
