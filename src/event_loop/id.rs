//! A request's identity: its slot index and the slot's generation, and the `user_data` layout
//! that carries it through the kernel.
//!
//! ```text
//! user_data = [ cancel tag : 1 | generation : 31 | slot index : 32 ]
//! ```
//! Operation SQEs carry the tag clear; the AsyncCancel issued for a request carries it set, so the
//! two CQEs are told apart. The wake poll uses `u64::MAX`, which no request can produce: slot
//! indices are below 2^24, so the low 32 bits are never all ones. The generation is bumped each
//! time a slot is freed, so a CQE for an earlier request of the same slot is recognised as stale.
//!
//! A message another loop posts (`IORING_OP_MSG_RING`, `mailbox.rs`) arrives as a CQE whose
//! fields the sender chose:
//! ```text
//! user_data = [ value's high half : 32 | MESSAGE_TAG = 0xffff_fffe : 32 ]    result = value's low half
//! ```
//! The tag is no slot index (those are below 2^24) and not the wake token's low half.

use crate::handoff::wake::WAKE_TOKEN;

const CANCEL_TAG: u64 = 1 << 63;
/// The low half of a message CQE's `user_data`.
const MESSAGE_TAG: u64 = 0xffff_fffe;
const GENERATION_MASK: u32 = 0x7fff_ffff;
/// The bits of the low half that no slot index sets (indices are below 2^24).
const OUTSIDE_INDICES: u64 = 0xff00_0000;

/// One request: slot index and (31-bit) generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestId {
    index: u32,
    generation: u32,
}

/// What a CQE is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cqe {
    /// The eventfd wake poll.
    Wake,
    /// A request's operation.
    Op(RequestId),
    /// The AsyncCancel issued for a request (never decides anything).
    Cancel(RequestId),
    /// A message from another loop (its value: [`message_value`]).
    Message,
}

/// The `user_data` and `result` a message SQE sets so that its CQE carries `value`.
pub(crate) fn message_data(value: u64) -> (u64, i32) {
    (value & !0xffff_ffff | MESSAGE_TAG, value as u32 as i32)
}

/// The value a message CQE carries (see [`message_data`]).
pub(crate) fn message_value(user_data: u64, result: i32) -> u64 {
    user_data & !0xffff_ffff | u64::from(result as u32)
}

impl RequestId {
    /// The request now in slot `index`, whose generation is `generation` (any width).
    pub(crate) fn new(index: u32, generation: u32) -> Self {
        RequestId {
            index,
            generation: generation & GENERATION_MASK,
        }
    }

    /// The slot index.
    pub(crate) fn index(self) -> u32 {
        self.index
    }

    /// Whether slot generation `generation` (any width) is this request's.
    pub(crate) fn is_current(self, generation: u32) -> bool {
        self.generation == generation & GENERATION_MASK
    }

    /// The request whose operation SQEs carry `data` ([`op_data`](Self::op_data)).
    pub(crate) fn from_data(data: u64) -> Self {
        RequestId::new(data as u32, (data >> 32) as u32)
    }

    /// `user_data` of the request's operation SQEs.
    pub(crate) fn op_data(self) -> u64 {
        self.index as u64 | (self.generation as u64) << 32
    }

    /// `user_data` of the AsyncCancel SQE issued for it.
    pub(crate) fn cancel_data(self) -> u64 {
        self.op_data() | CANCEL_TAG
    }
}

impl Cqe {
    /// Decodes a CQE's `user_data`.
    pub(crate) fn decode(user_data: u64) -> Cqe {
        // The common case first, in one test: an operation's tag is clear and its index below
        // 2^24, which neither the wake token's low half nor the message tag is.
        if user_data & (CANCEL_TAG | OUTSIDE_INDICES) == 0 {
            return Cqe::Op(RequestId::from_data(user_data));
        }
        if user_data == WAKE_TOKEN {
            return Cqe::Wake;
        }
        if user_data & 0xffff_ffff == MESSAGE_TAG {
            return Cqe::Message;
        }
        let id = RequestId::new(user_data as u32, (user_data >> 32) as u32);
        if user_data & CANCEL_TAG != 0 {
            Cqe::Cancel(id)
        } else {
            Cqe::Op(id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips_and_tells_cancels_from_ops_and_wakes() {
        // Every CQE must be routed: to its request, to the ignored cancel path, or to the wake.
        let id = RequestId::new(7, 0x8000_0005); // the generation wraps at 31 bits
        assert_eq!(id, RequestId::new(7, 5));
        assert_eq!(Cqe::decode(id.op_data()), Cqe::Op(id));
        assert_eq!(Cqe::decode(id.cancel_data()), Cqe::Cancel(id));
        assert_eq!(Cqe::decode(WAKE_TOKEN), Cqe::Wake);
        let last = RequestId::new((1 << 24) - 1, u32::MAX);
        assert_ne!(
            last.cancel_data(),
            WAKE_TOKEN,
            "no request collides with the wake token"
        );
        assert_eq!(Cqe::decode(last.op_data()), Cqe::Op(last));
        assert_eq!(Cqe::decode(last.cancel_data()), Cqe::Cancel(last));
        assert!(id.is_current(5) && id.is_current(0x8000_0005) && !id.is_current(6));
        assert_eq!(id.index(), 7);
    }

    #[test]
    fn message_cqes_carry_every_u64_and_are_told_from_every_other_cqe() {
        // A message must never be routed to a request (or the wake), and no bit may be lost.
        for value in [
            0,
            1,
            u64::MAX,
            1 << 63,
            0xffff_ffff,
            0xffff_ffff_0000_0000,
            0x8000_0000,
        ] {
            let (user_data, result) = message_data(value);
            assert_eq!(Cqe::decode(user_data), Cqe::Message, "{value:#x}");
            assert_eq!(message_value(user_data, result), value);
        }
        let last = RequestId::new((1 << 24) - 1, u32::MAX);
        for data in [last.op_data(), last.cancel_data(), WAKE_TOKEN] {
            assert_ne!(Cqe::decode(data), Cqe::Message);
        }
    }
}
