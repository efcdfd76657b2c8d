//! A bounded FIFO of `Copy` values (slot indices, request ids) for the loop's ready and cancel
//! queues. It keeps its length, so the question the loop asks of both on every request (is it
//! empty? `may_stage_fresh`, `stage`) is one compare; `heapless::Deque` derives it from three
//! fields. Fixed capacity, no allocation. The buffer starts uninitialised (as a `heapless`
//! one does), so a large table is built without writing or copying it.

use std::mem::MaybeUninit;

/// At most `N` values of `T`, oldest first.
pub(crate) struct Fifo<T: Copy, const N: usize> {
    /// The ring: the entries `head..head + len` (wrapping) are written; the others may not be.
    buf: [MaybeUninit<T>; N],
    /// Index of the oldest value.
    head: usize,
    len: usize,
}

impl<T: Copy, const N: usize> Fifo<T, N> {
    /// Empty.
    pub(crate) const fn new() -> Self {
        Fifo {
            buf: [const { MaybeUninit::uninit() }; N],
            head: 0,
            len: 0,
        }
    }

    /// Whether it holds nothing.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many values it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends `value`; gives it back when full.
    #[inline]
    pub(crate) fn push_back(&mut self, value: T) -> Result<(), T> {
        if self.len == N {
            return Err(value);
        }
        self.buf[wrap::<N>(self.head + self.len)].write(value);
        self.len += 1;
        Ok(())
    }

    /// The oldest value, if any.
    #[inline]
    pub(crate) fn front(&self) -> Option<&T> {
        // SAFETY: `head` is the oldest of the `len` written entries.
        (self.len != 0).then(|| unsafe { self.buf[self.head].assume_init_ref() })
    }

    /// Removes and returns the oldest value, if any.
    #[inline]
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        // SAFETY: `head` is the oldest of the `len` (> 0) written entries.
        let value = unsafe { self.buf[self.head].assume_init() };
        self.head = wrap::<N>(self.head + 1);
        self.len -= 1;
        Some(value)
    }

    /// Drops every value.
    pub(crate) fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

/// `i` (< 2N) brought into `0..N` without a division (`N` need not be a power of two).
#[inline]
fn wrap<const N: usize>(i: usize) -> usize {
    if i >= N {
        i - N
    } else {
        i
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn it_is_fifo_across_wraps_and_refuses_when_full() {
        let mut q = Fifo::<u32, 3>::new();
        assert!(q.is_empty() && q.front().is_none() && q.pop_front().is_none());
        for lap in 0..5u32 {
            for i in 0..3 {
                assert_eq!(q.push_back(lap * 10 + i), Ok(()));
            }
            assert_eq!(q.push_back(99), Err(99), "full");
            assert_eq!(q.len(), 3);
            assert_eq!(q.front(), Some(&(lap * 10)));
            assert_eq!(q.pop_front(), Some(lap * 10));
            // One in, so the next lap starts at another offset.
            assert_eq!(q.push_back(lap * 10 + 3), Ok(()));
            for i in 1..4 {
                assert_eq!(q.pop_front(), Some(lap * 10 + i));
            }
            assert!(q.is_empty());
        }
        q.push_back(7).unwrap();
        q.clear();
        assert!(q.is_empty() && q.pop_front().is_none());
        assert_eq!(q.push_back(8), Ok(()));
        assert_eq!(q.pop_front(), Some(8));
    }
}
