//! Lock-free multi-producer, single-consumer ring of slot indices: callers hand requests to the
//! loop through it.
//!
//! Based on Dmitry Vyukov's bounded queue, with three simplifications our storage allows:
//!
//! * **It can never be full.** Its capacity is `N` = SLOTS and only the owner of a slot pushes
//!   that slot's index, once per request, so at most `N` indices are ever in the ring. A producer
//!   therefore claims its position with one read-modify-write of `tail` and never waits for room.
//! * **One consumer** (the loop thread) owns `head`, so popping needs no read-modify-write.
//! * **The tail word is the submitters' whole protocol.** Beside the next position it holds the
//!   claim's epoch, a `CLOSED` bit and the loop's sleep intent (`wake.rs`):
//!
//! ```text
//! tail: AtomicU64 = [ unused:1 | CLOSED:1 | INTENT:1 | epoch:29 | position:32 ]
//! ```
//!
//!   A producer's one compare-exchange (`claim`) checks that the ring is open for its claim and
//!   takes a position; it learns in the same step whether the loop declared it may sleep. The
//!   loop closes the ring with one `fetch_or` (`close`): every position claimed before it is
//!   below the final tail and will be published, none after it is taken. Nothing else counts
//!   the submitters. The epoch is the claim's low 29 bits: a caller stale by a multiple of 2^29
//!   claims of one storage would be taken by the current loop instead of refused (its slot is
//!   still one of the storage's: nothing unsafe; 2^29 claims, each a ring setup, take hours).
//!
//! Each cell carries a sequence stamp. For position `p` (cell `p % N`, positions wrap at 2^32,
//! and `N <= 2^31`): stamp `p` means "empty, ready for the producer of `p`"; stamp `p + 1`
//! means "holds the index pushed at `p`"; after the pop the consumer writes `p + N`, handing the
//! cell to the producer one lap later.
//!
//! ```text
//!  producer: t = claim(epoch) (CAS tail: t -> t + 1)   wait stamp == p   write index
//!            stamp = p + 1 (Release)   if t had INTENT: wake the loop (wake.rs)
//!  consumer: stamp(head) == head + 1 (Acquire)?  read index   stamp = head + N (Release)  head += 1
//! ```
//!
//! **Preemption.** A producer preempted between its claim and its stamp store never stops
//! another producer: each has its own position and cell. It delays the consumer from seeing
//! positions after its own until it resumes (the stall heapless deprecated its MPMC queue for),
//! and, since its claim may have come before the loop's intent, it may owe the loop no wake:
//! so a loop that finds a claimed, unpublished position after arming does not sleep on it; it
//! polls for it (`EventLoop::sleep`, docs/behaviour.md section 5).
//!
//! **Why the producer's wait is never a real wait.** When the producer of `p` runs, position
//! `p - N` has been popped: positions claimed but not yet popped each hold a distinct slot that is
//! not free, our own slot among them, so there are at most `N` of them, `p - N` excluded. The
//! consumer's stamp store for `p - N` precedes (in real time) the freeing of the slot it popped, so
//! the wait loop only covers the visibility delay of that store.

use crate::handoff::wake::INTENT;
use crate::loom::{spin_hint, AtomicU32, AtomicU64, Ordering};

/// The tail word's closed bit: no position is claimed from now on (the claim's loop closed, its
/// last handle left or a handle asked for shutdown).
pub(crate) const CLOSED: u64 = 1 << 62;
/// The tail word's position bits.
const POSITION: u64 = u32::MAX as u64;
/// Where the epoch starts in the tail word, and its bits there (29: below `INTENT`).
const EPOCH_SHIFT: u32 = 32;
const EPOCH: u64 = ((1 << 29) - 1) << EPOCH_SHIFT;

/// The tail word's epoch bits for claim `epoch`.
const fn epoch_bits(epoch: u32) -> u64 {
    ((epoch as u64) << EPOCH_SHIFT) & EPOCH
}

/// A position claimed by [`SubmitQueue::claim`], to publish with [`SubmitQueue::publish`]: the
/// producer owes the loop that push (the loop waits for it before it closes).
#[must_use = "a claimed position must be published, or the loop waits for it"]
#[derive(Debug)]
pub(crate) struct Claimed {
    /// The tail word as the claim found it: its position, and whether the intent was set.
    tail: u64,
}

/// One position of the ring.
#[derive(Debug)]
struct Cell {
    /// Sequence stamp; see the module doc.
    stamp: AtomicU32,
    /// The slot index, valid while `stamp == position + 1`.
    index: AtomicU32,
}

/// The ring: capacity `N`, a power of two.
/// `repr(C)`: `tail` first and `head` last, so that the two ends (written by different threads)
/// are a ring's length apart instead of sharing a cache line.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct SubmitQueue<const N: usize> {
    /// The tail word (module doc): next position, epoch, `CLOSED`, `INTENT`. Written by every
    /// producer and by the loop's arm and disarm.
    tail: AtomicU64,
    cells: [Cell; N],
    /// Next position the consumer reads. Written by the consumer only (atomic so that `len`
    /// and loom see a well-defined value).
    head: AtomicU32,
}

impl<const N: usize> SubmitQueue<N> {
    const FITS: () = assert!(
        N.is_power_of_two() && N <= 1 << 31,
        "positions wrap at 2^32"
    );

    crate::loom::maybe_const_fn! {
        /// A ring whose cells are unstamped; [`reset`](Self::reset) readies it.
        pub(crate) fn new() -> Self {
            Self {
                tail: AtomicU64::new(0),
                head: AtomicU32::new(0),
                cells: crate::loom::const_array!(
                    Cell { stamp: AtomicU32::new(0), index: AtomicU32::new(u32::MAX) };
                    N
                ),
            }
        }
    }

    /// Writes [`SubmitQueue::new`] into `ptr` cell by cell (no large stack temporary).
    ///
    /// # Safety
    /// `ptr` is valid for writes and aligned.
    pub(crate) unsafe fn init_at(ptr: *mut Self) {
        // SAFETY: every write stays inside the allocation behind `ptr` (contract).
        unsafe {
            core::ptr::addr_of_mut!((*ptr).tail).write(AtomicU64::new(0));
            core::ptr::addr_of_mut!((*ptr).head).write(AtomicU32::new(0));
            let cells = core::ptr::addr_of_mut!((*ptr).cells).cast::<Cell>();
            for i in 0..N {
                cells.add(i).write(Cell {
                    stamp: AtomicU32::new(0),
                    index: AtomicU32::new(u32::MAX),
                });
            }
        }
    }

    /// Stamps every cell for lap 0 and opens the ring for claim `epoch`. Only for a ring no
    /// other thread pushes to (a storage claim: every position of the last claim was popped).
    pub(crate) fn reset(&self, epoch: u32) {
        let () = Self::FITS;
        // Relaxed: no other thread touches the ring yet; the Release below publishes these.
        for (i, cell) in self.cells.iter().enumerate() {
            cell.stamp.store(i as u32, Ordering::Relaxed);
        }
        self.head.store(0, Ordering::Relaxed);
        // Release: the claim that follows publishes the stamps to producers.
        self.tail.store(epoch_bits(epoch), Ordering::Release);
    }

    /// Claims the next position for a request of claim `epoch`; `None` if the ring is closed
    /// or belongs to another claim (a stale caller's compare-exchange fails on the epoch).
    #[inline]
    pub(crate) fn claim(&self, epoch: u32) -> Option<Claimed> {
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            if tail & (CLOSED | EPOCH) != epoch_bits(epoch) {
                return None;
            }
            let next = (tail & !POSITION) | u64::from((tail as u32).wrapping_add(1));
            // Acquire: the wake protocol (`wake.rs`): a claim after the loop's arm sees the
            // intent and is ordered after it. Release: the claim is a point in the word's order
            // that the loop's arm and `close` read (what the caller wrote before is not
            // published by it: the stamp does that).
            match self
                .tail
                .compare_exchange_weak(tail, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(Claimed { tail }),
                Err(current) => tail = current,
            }
        }
    }

    /// Writes `index` at the claimed position. The caller owns the slot `index`, which is not in
    /// the ring, and has written its request. Returns whether the claim saw the loop's sleep
    /// intent: the caller then wakes it (`wake::take_intent`, then the eventfd).
    #[inline]
    pub(crate) fn publish(&self, claimed: Claimed, index: u32) -> bool {
        let pos = claimed.tail as u32;
        let cell = &self.cells[pos as usize & (N - 1)];
        // Acquire: pairs with the consumer's Release stamp of the previous lap, so our write of
        // `index` cannot be overtaken by its read of the old one. Almost never loops (module doc).
        while cell.stamp.load(Ordering::Acquire) != pos {
            spin_hint();
        }
        // Relaxed: the stamp's Release below publishes it.
        cell.index.store(index, Ordering::Relaxed);
        // Release: publishes `index` and the request the caller wrote into the slot before
        // pushing; pairs with the Acquire in `pop`.
        cell.stamp.store(pos.wrapping_add(1), Ordering::Release);
        claimed.tail & INTENT != 0
    }

    /// Appends `index` whatever the tail word's flags and epoch: for a ring nothing closes
    /// (a buffer ring's returns) and for tests. Never fails.
    #[inline]
    pub(crate) fn push(&self, index: u32) {
        // A carry out of the position bits goes into the epoch, which such a ring never reads.
        // Relaxed: the position only reserves the cell; `publish`'s Release stamp carries the
        // index to the consumer, and no sleep intent rides on such a ring.
        let tail = self.tail.fetch_add(1, Ordering::Relaxed);
        let _ = self.publish(
            Claimed {
                tail: tail & POSITION,
            },
            index,
        );
    }

    /// Closes the ring (idempotent): no position is claimed after this. Returns the final
    /// position: every position below it was claimed while open and will be published.
    pub(crate) fn close(&self) -> u32 {
        // AcqRel: a claim after this fails (its compare-exchange sees the bit); Acquire orders
        // the caller's sweep after every claim before it.
        self.tail.fetch_or(CLOSED, Ordering::AcqRel) as u32
    }

    /// [`close`](Self::close), only if the ring is still open for claim `epoch` (a handle's last
    /// release may run after its loop closed and a new claim began).
    pub(crate) fn close_for(&self, epoch: u32) {
        // Relaxed: a first guess; the compare-exchange is what reads the word.
        let mut tail = self.tail.load(Ordering::Relaxed);
        while tail & (CLOSED | EPOCH) == epoch_bits(epoch) {
            // AcqRel, as `close`'s.
            match self.tail.compare_exchange_weak(
                tail,
                tail | CLOSED,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(current) => tail = current,
            }
        }
    }

    /// The tail word, where the loop declares its sleep intent (`wake::arm`, `wake::disarm`).
    pub(crate) fn word(&self) -> &AtomicU64 {
        &self.tail
    }

    /// Takes the oldest index whose push has finished, or `None` if the head position is empty or
    /// its producer is still mid-push. Consumer only.
    #[inline]
    pub(crate) fn pop(&self) -> Option<u32> {
        // Relaxed: only the consumer touches `head` (the stamps order everything else).
        let pos = self.head.load(Ordering::Relaxed);
        let cell = &self.cells[pos as usize & (N - 1)];
        // Acquire: pairs with the producer's Release stamp; makes the slot's request visible.
        if cell.stamp.load(Ordering::Acquire) != pos.wrapping_add(1) {
            return None;
        }
        // Relaxed: ordered after the producer's write by the stamp's Acquire above.
        let index = cell.index.load(Ordering::Relaxed);
        // Release: hands the cell to the producer of `pos + N` (its Acquire wait).
        cell.stamp
            .store(pos.wrapping_add(N as u32), Ordering::Release);
        self.head.store(pos.wrapping_add(1), Ordering::Relaxed);
        Some(index)
    }

    /// True when the head position holds a finished push. Consumer only.
    #[inline]
    pub(crate) fn has_ready(&self) -> bool {
        // Relaxed: only the consumer writes `head`. Acquire on the stamp, as `pop`'s.
        let pos = self.head.load(Ordering::Relaxed);
        self.cells[pos as usize & (N - 1)]
            .stamp
            .load(Ordering::Acquire)
            == pos.wrapping_add(1)
    }

    /// Positions claimed by producers and not yet popped, including pushes still in progress.
    pub(crate) fn len(&self) -> usize {
        // Acquire: a count for the consumer, at least every claim its last look at the word saw;
        // `head` is its own (Relaxed).
        let tail = self.tail.load(Ordering::Acquire) as u32;
        Self::unpopped(tail, self.head.load(Ordering::Relaxed))
    }

    /// Whether the tail word `tail` (as an arm read it) holds claimed positions not yet popped.
    /// Consumer only.
    #[inline]
    pub(crate) fn claimed_since(&self, tail: u64) -> bool {
        // Relaxed: only the consumer writes `head`.
        Self::unpopped(tail as u32, self.head.load(Ordering::Relaxed)) != 0
    }

    fn unpopped(tail: u32, head: u32) -> usize {
        tail.wrapping_sub(head) as usize
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fifo_across_laps() {
        // Requests must reach the loop in the order their pushes finished, lap after lap.
        let q = SubmitQueue::<4>::new();
        q.reset(0);
        assert_eq!(q.pop(), None);
        for lap in 0..5u32 {
            for i in 0..4 {
                q.push(lap * 10 + i);
            }
            assert_eq!(q.len(), 4);
            assert!(q.has_ready());
            for i in 0..4 {
                assert_eq!(q.pop(), Some(lap * 10 + i));
            }
            assert_eq!(q.pop(), None);
            assert!(!q.has_ready());
        }
    }

    #[test]
    fn unfinished_push_hides_later_ones_but_does_not_block_them() {
        // A producer stalled after claiming its position must not stop other producers; the
        // consumer sees nothing past the gap until the stalled push completes.
        let q = SubmitQueue::<4>::new();
        q.reset(5);
        let stalled = q.claim(5).expect("open"); // claimed, not written
        let _ = q.publish(q.claim(5).expect("open"), 7);
        let _ = q.publish(q.claim(5).expect("open"), 8);
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop(), None, "the gap hides the finished pushes");
        assert!(q.claimed_since(q.word().load(Ordering::Relaxed)));
        assert!(!q.publish(stalled, 6), "no intent: no wake owed");
        assert_eq!(q.pop(), Some(6));
        assert_eq!(q.pop(), Some(7));
        assert_eq!(q.pop(), Some(8));
        assert!(!q.claimed_since(q.word().load(Ordering::Relaxed)));
    }

    #[test]
    fn claim_checks_closed_and_epoch() {
        // The one compare-exchange is the whole admission check: a closed ring or another
        // claim's epoch takes no position, and `close` returns the final position.
        let q = SubmitQueue::<4>::new();
        q.reset(7);
        assert!(q.claim(6).is_none(), "a stale claim's caller is refused");
        let _ = q.publish(q.claim(7).expect("open"), 1);
        q.close_for(6);
        assert!(
            q.claim(7).is_some_and(|c| !q.publish(c, 2)),
            "close_for of another claim is a no-op"
        );
        assert_eq!(q.close(), 2, "two positions were claimed before the close");
        assert!(q.claim(7).is_none(), "closed");
        assert_eq!(q.close(), 2, "idempotent");
        assert_eq!((q.pop(), q.pop(), q.pop()), (Some(1), Some(2), None));
        q.reset(8);
        assert!(
            q.claim(7).is_none(),
            "the old epoch stays refused after a new claim"
        );
        assert!(q.claim(8).is_some_and(|c| !q.publish(c, 3)));
        q.close_for(8);
        assert!(q.claim(8).is_none());
        // Epochs compare on their low 29 bits, the ones the tail word holds.
        q.reset(u32::MAX);
        assert!(q.claim(u32::MAX).is_some_and(|c| !q.publish(c, 4)));
        assert_eq!(q.pop(), Some(4));
    }

    #[test]
    fn intent_rides_on_the_claim() {
        // A claim made while the loop's intent is set says so at publish; one made before the
        // arm does not (the loop's recheck sees it claimed: `claimed_since`).
        let q = SubmitQueue::<4>::new();
        q.reset(1);
        let early = q.claim(1).expect("open");
        let armed = crate::handoff::wake::arm(q.word());
        assert!(q.claimed_since(armed), "the arm sees the earlier claim");
        let late = q.claim(1).expect("open");
        assert!(!q.publish(early, 1));
        assert!(q.publish(late, 2), "the claim after the arm owes a wake");
        assert_eq!((q.pop(), q.pop()), (Some(1), Some(2)));
    }

    #[test]
    fn positions_wrap_at_two_to_the_32() {
        // A long-lived loop claims 2^32 positions in minutes at full rate: the position wraps
        // inside its 32 bits without touching the epoch, and stamps compare modulo 2^32.
        let q = SubmitQueue::<4>::new();
        q.reset(3);
        let start = u32::MAX - 5;
        for i in 0..4u32 {
            let pos = start.wrapping_add(i);
            q.cells[pos as usize & 3]
                .stamp
                .store(pos, Ordering::Relaxed);
        }
        q.head.store(start, Ordering::Relaxed);
        q.tail
            .store(epoch_bits(3) | u64::from(start), Ordering::Relaxed);
        for lap in 0..3u32 {
            for i in 0..4 {
                let _ = q.publish(q.claim(3).expect("open"), lap * 10 + i);
            }
            assert_eq!(q.len(), 4);
            for i in 0..4 {
                assert_eq!(q.pop(), Some(lap * 10 + i));
            }
        }
        assert!(
            q.claim(3).is_some_and(|c| !q.publish(c, 9)),
            "the epoch survived the wrap"
        );
        assert_eq!(q.pop(), Some(9));
    }
}
