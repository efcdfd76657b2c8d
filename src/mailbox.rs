//! [`Mailbox`]: the address of a loop's inbox, for loop-to-loop messages through
//! `IORING_OP_MSG_RING` (Linux 5.18).
//!
//! ```
//! use static_uring::Config;
//! let (receiver, mut receiving_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
//! let mailbox = receiving_loop.mailbox().unwrap();
//! let (sender, sending_loop) = static_uring::new::<8, 8, 64>(Config::default()).unwrap();
//! let threads = [receiving_loop.spawn("rx").unwrap(), sending_loop.spawn("tx").unwrap()];
//! sender.post(&mailbox, u64::MAX).wait().unwrap();
//! assert_eq!(receiver.recv_message().wait(), Ok(u64::MAX));
//! drop((sender, receiver));
//! for thread in threads {
//!     thread.join().unwrap().unwrap();
//! }
//! ```
//!
//! # Implementation details
//!
//! A message is one SQE on the *sender's* ring that names the receiver's ring: the kernel posts a
//! CQE straight into the receiver's completion queue (with `DEFER_TASKRUN`, as task work its
//! next enter runs). No eventfd is written and no queue is shared: a sleeping receiver wakes
//! because a CQE arrived, as for its own I/O. The CQE carries the value in the two fields the
//! sender sets: the high 32 bits in `user_data` beside a tag that no request, cancel or wake CQE
//! uses (`event_loop/id.rs`), the low 32 bits in `result`; so every `u64` gets through.
//!
//! The receiving loop hands a message to the oldest waiting
//! [`recv_message`](crate::Handle::recv_message), or queues it in its table (private memory,
//! `SLOTS` values, no heap) until one comes. The queue cannot overflow, because a sender reserves
//! room before its SQE exists: the inbox's ticket word counts the messages in flight toward the
//! loop plus those queued in it, and a post that finds `SLOTS` of them fails with
//! [`Error::Full`] without sending (refused early, never dropped late). A ticket is returned by
//! the receiver when a caller takes the message, or by the sender when its SQE failed.
//!
//! The same word carries the inbox's `SEALED` bit, set when the receiving loop starts its drain
//! (no handle left, or `Handle::shutdown`): a post that finds it fails with [`Error::Closed`].
//! Every post reserved before the seal is either delivered (the drain waits for messages still
//! on their way, at most `GRACE`, and hands them to waiting receivers) or counted: a message no
//! receiver took before the loop closed is counted in `Metrics::messages_unread`. A receiver
//! still waiting when nothing more can arrive ends with `Error::Closed`.
//!
//! The mailbox keeps a duplicate of the receiving ring's descriptor, so the descriptor number in
//! a sender's SQE always names that ring (never a recycled number), for as long as a mailbox or a
//! post in flight holds it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::loom::{AtomicU64, Ordering};

/// The ticket word's bit: the receiving loop is draining or gone; nothing more is accepted.
const SEALED: u64 = 1 << 63;

/// After the seal, the longest the drain waits for messages reserved before it that have not
/// arrived (a sender loop preempted between its reservation and its enter, or gone): past it,
/// they are counted unread and the waiting receivers end `Closed`.
pub(crate) const GRACE: Duration = Duration::from_millis(500);

/// What a receiving loop shares with its senders: its ring's descriptor and the ticket word.
pub(crate) struct Inbox {
    /// A close-on-exec duplicate of the receiving ring's descriptor.
    ring: OwnedFd,
    /// `[ SEALED : 1 | tickets : 63 ]`: messages in flight toward the loop plus messages queued
    /// in it. Relaxed throughout: it is a counter and a flag, and publishes no memory (the value
    /// travels in the CQE); read-modify-writes of one atomic are totally ordered whatever the
    /// ordering, which is all the reservation needs.
    tickets: AtomicU64,
    /// The most tickets at once: the receiving loop's queue capacity (`SLOTS`).
    capacity: u64,
}

impl Inbox {
    /// The inbox of the ring `ring` duplicates, holding at most `capacity` messages.
    pub(crate) fn new(ring: OwnedFd, capacity: usize) -> Self {
        Inbox {
            ring,
            tickets: AtomicU64::new(0),
            capacity: capacity as u64,
        }
    }

    /// Sender side: reserves room for one message. `Closed` once sealed, `Full` at capacity.
    pub(crate) fn reserve(&self) -> Result<(), Error> {
        let mut word = self.tickets.load(Ordering::Relaxed);
        loop {
            if word & SEALED != 0 {
                return Err(Error::Closed);
            }
            if word >= self.capacity {
                return Err(Error::Full);
            }
            match self.tickets.compare_exchange_weak(
                word,
                word + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => word = now,
            }
        }
    }

    /// Gives one ticket back: its message was taken, or was never sent.
    pub(crate) fn release(&self) {
        self.tickets.fetch_sub(1, Ordering::Relaxed);
    }

    /// Takes a ticket back whatever the count: a message handed to a receiver whose caller left
    /// at that moment stays with the loop (rare; the count may then pass the capacity by one
    /// until it is taken).
    pub(crate) fn retake(&self) {
        self.tickets.fetch_add(1, Ordering::Relaxed);
    }

    /// Receiving loop: accepts nothing more from now on.
    pub(crate) fn seal(&self) {
        self.tickets.fetch_or(SEALED, Ordering::Relaxed);
    }

    /// Whether the receiving loop accepts nothing more.
    pub(crate) fn is_sealed(&self) -> bool {
        self.tickets.load(Ordering::Relaxed) & SEALED != 0
    }

    /// Tickets out: messages in flight plus messages queued.
    pub(crate) fn tickets(&self) -> u64 {
        self.tickets.load(Ordering::Relaxed) & !SEALED
    }

    /// The receiving ring's descriptor (the duplicate).
    pub(crate) fn raw(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

impl AsFd for Inbox {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

/// The address of one loop's inbox ([`EventLoop::mailbox`](crate::EventLoop::mailbox)): any
/// loop posts a `u64` to it with [`Handle::post`](crate::Handle::post), and the receiving loop's
/// callers take it with [`Handle::recv_message`](crate::Handle::recv_message).
///
/// Cloneable (a reference count) and `Send`; it does not keep the receiving loop alive (only its
/// `Handle`s do). Once that loop drains or stops, posts to it fail with `Error::Closed`.
#[derive(Clone)]
pub struct Mailbox {
    inbox: Arc<Inbox>,
}

impl Mailbox {
    pub(crate) fn new(inbox: Arc<Inbox>) -> Self {
        Mailbox { inbox }
    }

    /// The shared inbox (a reference count for each post).
    pub(crate) fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }

    /// Whether the receiving loop has started its drain or stopped: every post fails `Closed`.
    pub fn is_closed(&self) -> bool {
        self.inbox.is_sealed()
    }
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("ring", &self.inbox.raw())
            .field("closed", &self.is_closed())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn inbox(capacity: usize) -> Inbox {
        let fd = std::fs::File::open("/dev/null").unwrap();
        Inbox::new(fd.into(), capacity)
    }

    #[test]
    fn reservations_stop_at_capacity_and_at_the_seal() {
        // The full rule and the closed rule are decided here, before any SQE: a full inbox is
        // `Full` until a ticket comes back; a sealed one is `Closed` whatever its count.
        let inbox = inbox(2);
        assert_eq!(inbox.reserve(), Ok(()));
        assert_eq!(inbox.reserve(), Ok(()));
        assert_eq!(inbox.reserve(), Err(Error::Full));
        inbox.release();
        assert_eq!(inbox.tickets(), 1);
        assert_eq!(inbox.reserve(), Ok(()));
        inbox.seal();
        inbox.release();
        assert!(inbox.is_sealed());
        assert_eq!(inbox.tickets(), 1);
        assert_eq!(inbox.reserve(), Err(Error::Closed));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The ticket word under every interleaving: never more reservations than the capacity, a
    //! sealed inbox refuses, and the count always equals the reservations not given back.

    use super::*;
    use ::loom::sync::Arc;
    use ::loom::thread;

    fn inbox(capacity: usize) -> Arc<Inbox> {
        let fd = std::fs::File::open("/dev/null").unwrap();
        Arc::new(Inbox::new(fd.into(), capacity))
    }

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = ::loom::model::Builder::new();
        builder.preemption_bound = Some(builder.preemption_bound.map_or(3, |p| p.min(3)));
        builder.check(f);
    }

    /// Two senders race for the last ticket: exactly one gets it, the other is `Full`.
    #[test]
    fn loom_inbox_two_senders_one_ticket() {
        model(|| {
            let inbox = inbox(1);
            let other = {
                let inbox = inbox.clone();
                thread::spawn(move || inbox.reserve())
            };
            let mine = inbox.reserve();
            let theirs = other.join().unwrap();
            let oks = [mine, theirs].iter().filter(|r| r.is_ok()).count();
            assert_eq!(oks, 1, "{mine:?} {theirs:?}");
            assert!(mine == Err(Error::Full) || theirs == Err(Error::Full));
            assert_eq!(inbox.tickets(), 1);
        });
    }

    /// A receiver gives a ticket back while a sender reserves at capacity, and the loop seals:
    /// the count is the reservations held, and once sealed nothing more is accepted.
    #[test]
    fn loom_inbox_release_reserve_and_seal() {
        model(|| {
            let inbox = inbox(1);
            assert_eq!(inbox.reserve(), Ok(()));
            let receiver = {
                let inbox = inbox.clone();
                thread::spawn(move || inbox.release())
            };
            let sealer = {
                let inbox = inbox.clone();
                thread::spawn(move || inbox.seal())
            };
            let sent = inbox.reserve();
            receiver.join().unwrap();
            sealer.join().unwrap();
            assert!(matches!(
                sent,
                Ok(()) | Err(Error::Full) | Err(Error::Closed)
            ));
            assert_eq!(inbox.tickets(), u64::from(sent.is_ok()));
            assert_eq!(inbox.reserve(), Err(Error::Closed), "sealed: nothing more");
        });
    }
}
