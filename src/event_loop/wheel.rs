//! Single-level hashed timeout wheel with intrusive buckets.
//!
//! Each event loop keeps one [`Wheel`]. It works purely in integer *ticks*; the loop converts
//! `Instant`s to ticks with [`floor_tick`] / [`ceil_tick`] (relative to an epoch it chooses) and
//! multiplies [`Wheel::next_deadline_ticks`] by the tick length to bound its sleep.
//!
//! # Worked example (5 ms tick, 100 ms horizon = 20 ticks)
//!
//! ```text
//! now = 12 ms            advance(floor_tick(12 ms)) = advance(2)     current = 2
//! deadline = now + 10 s  ceil_tick(10.012 s) = 2003  target(2003, 20) = At(22)   (at the horizon)
//! deadline = now + 9 ms  ceil_tick(21 ms) = 5        target(5, 20) = At(5)       schedule(slot, 5)
//! sleep                  next_deadline_ticks() = 3   -> sleep 15 ms
//! now = 27 ms            advance(floor_tick(27 ms)) = advance(5) calls expired(slot, 5)
//! ```
//!
//! # Why intrusive
//!
//! The model (commonware's loop) keeps a growable `Vec` per bucket and never
//! deletes a removed entry: it goes *stale* and is filtered when its bucket drains. That needs heap
//! growth, lets stale entries pile up, and makes every consumer check ids. Here each bucket is a
//! doubly-linked list threaded through `links`, one [`Link`] per request slot, so:
//!
//! * insert (tail append) and remove (unlink) are O(1) and touch no allocator;
//! * memory is fixed at construction: a request is in at most one bucket, so `SLOTS` links suffice;
//! * nothing stale ever exists: a removed request is gone, so whatever [`Wheel::advance_rearming`] reports
//!   is a live deadline, and a reused slot id cannot be hit by its previous occupant's deadline.
//!
//! Bucket `i` holds the entries whose target tick is `≡ i (mod WHEEL)`. Every target lies in
//! `(current, current + WHEEL)`, a window narrower than the wheel, so a bucket only ever holds the
//! entries of a single tick; appending at the tail keeps them in insertion order.
//!
//! # Tick math (identical to the model's; docs/behaviour.md 3.1)
//!
//! * *Now* is floored: `current = floor(elapsed_ns / tick_ns)`; it only moves forward.
//! * A *deadline* is ceiled: `deadline_tick = ceil(elapsed_ns / tick_ns)`, so an entry never fires
//!   before its real deadline (it fires at the first advance whose floored tick reaches it, i.e.
//!   within one tick plus loop latency after it).
//! * A deadline is **expired** at admission iff `deadline_tick <= current`.
//! * Otherwise it is scheduled at most a horizon ahead: `target = min(deadline_tick, current +
//!   horizon)`, `horizon = ceil(max_ns / tick_ns)` (at least 1, at most `WHEEL - 1`). The wheel
//!   itself only reports that the target came up; what that means is the loop's decision. With
//!   no `max_request_timeout` (horizon `WHEEL - 1`), an entry whose deadline is still ahead is
//!   re-armed by the loop, again at most a horizon ahead, so a far deadline never fires early.
//!   With an explicit `max_request_timeout` the horizon is a cap the user chose: the entry fires
//!   about `max_request_timeout` after admission, up to one tick *earlier* (the current tick is
//!   floored), as in the model, and the loop counts it in `Metrics::capped_deadlines`.
//! * [`Wheel::next_deadline_ticks`] is `min_target - current`, relative to the last *advanced*
//!   tick, not to wall-clock now. Since `current` was floored, real time is already at or past
//!   `current * tick`, so sleeping `(min_target - current) * tick` never wakes the loop before the
//!   target tick is reachable (it may wake up to a tick late, never early).
//! * Tick `u64::MAX` is reserved as the "not scheduled" marker. It is 584 years after the epoch
//!   even at a 1 ns tick; [`Wheel::target`] never returns it (deadlines then report `Expired`).
//!
//! # Occupancy bitmap and the minimum
//!
//! A fixed `[u64; 256]` (16384 bits, 2 KiB) marks non-empty buckets; scans go word by word with
//! `trailing_zeros`. (Stable Rust cannot size `[u64; WHEEL / 64]`, hence the fixed size.) For
//! `WHEEL <= 16384`, bit `i` is bucket `i`. For larger wheels bit `b` covers the group of
//! `G = WHEEL / 16384` consecutive buckets `b*G .. (b+1)*G` and is set while any of them is
//! non-empty; clearing it checks the group's `G` heads, and a scan that lands on a set bit checks
//! those heads to find the bucket.
//!
//! The minimum active target is cached, so [`Wheel::next_deadline_ticks`] is O(1). It is lowered
//! by `schedule`; when the minimum's bucket empties (remove or expiry) it is recomputed by scanning
//! the bitmap forward from the bucket after it, wrapping once: O(WHEEL / 64) words (O(256 + G)
//! when grouped). All the expiries of one `advance` scan at most one revolution in total, so
//! `advance` is O(words scanned + entries expired) whatever the jump.
//!
//! # Memory
//!
//! `size_of::<Wheel<SLOTS, WHEEL>>() = 16 * SLOTS + 8 * WHEEL + 2072` bytes on 64-bit targets:
//! 16 per link, 4 + 4 per bucket (head and tail), 2048 for the bitmap, and 24 for the current tick,
//! the cached minimum and the count. E.g. `SLOTS = 1024, WHEEL = 16384`: 149 528 bytes (~146 KiB).

use std::time::Duration;

/// "No slot": the end of a bucket list, an empty bucket, an unlinked slot. `SLOTS < u32::MAX`
/// (asserted at compile time) keeps it distinct from every slot index.
pub(crate) const NIL: u32 = u32::MAX;

/// Tick value marking a link that is not scheduled, and a cached minimum when the wheel is empty.
/// No target can be `u64::MAX` (see the module doc), so it is unambiguous.
const UNSCHEDULED: u64 = u64::MAX;

/// Words in the occupancy bitmap: fixed because stable Rust cannot size it from `WHEEL`.
const BITMAP_WORDS: usize = 256;

/// Bits in the occupancy bitmap (16384): one per bucket, or per group of buckets beyond that.
const BITMAP_BITS: usize = BITMAP_WORDS * 64;

/// A duration in nanoseconds, saturating at `u64::MAX` (`Duration::MAX` and anything past ~584
/// years), so far deadlines clamp instead of wrapping.
pub(crate) fn duration_to_nanos_saturating(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The tick containing `elapsed_ns`: `floor(elapsed_ns / tick_ns)`. Used for *now*, so the current
/// tick never runs ahead of real time. A `tick_ns` of 0 (rejected by config) is treated as 1 so the
/// loop thread can never panic here.
pub(crate) fn floor_tick(elapsed_ns: u64, tick_ns: u64) -> u64 {
    elapsed_ns / tick_ns.max(1)
}

/// The first tick boundary at or after `elapsed_ns`: `ceil(elapsed_ns / tick_ns)`. Used for
/// deadlines, so an entry never fires before its real deadline. `tick_ns` 0 is treated as 1.
pub(crate) fn ceil_tick(elapsed_ns: u64, tick_ns: u64) -> u64 {
    elapsed_ns.div_ceil(tick_ns.max(1))
}

/// The horizon in ticks for a maximum timeout: `ceil(max_ns / tick_ns)`, at least 1 (the model's
/// effective maximum is `max(max_request_timeout, tick)`). A wheel accepts it iff it is at most
/// `WHEEL - 1`. `tick_ns` 0 is treated as 1.
pub(crate) fn horizon_ticks(max_ns: u64, tick_ns: u64) -> u64 {
    max_ns.div_ceil(tick_ns.max(1)).max(1)
}

/// Where a deadline goes, from [`Wheel::target`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// The deadline tick is not after the current tick: time the request out now, do not schedule.
    Expired,
    /// Schedule at this tick; always in `(current, current + horizon]`, so `schedule` accepts it.
    At(u64),
}

/// One request slot's place in the wheel: its neighbours in its bucket list and its target tick.
///
/// Invariant: `tick == UNSCHEDULED` iff the slot is in no bucket, and then `prev == next == NIL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Link {
    /// Previous slot in the bucket, `NIL` at the head.
    prev: u32,
    /// Next slot in the bucket, `NIL` at the tail.
    next: u32,
    /// Target tick, `UNSCHEDULED` when the slot is not in the wheel.
    tick: u64,
}

impl Link {
    /// A slot that is in no bucket.
    const UNLINKED: Link = Link {
        prev: NIL,
        next: NIL,
        tick: UNSCHEDULED,
    };
}

/// A hashed timeout wheel of `WHEEL` buckets over `SLOTS` request slots, with no heap and O(1)
/// insert/remove (see the module doc for the design, tick math and memory).
///
/// Invariants (between calls):
/// * every scheduled slot is in exactly one bucket, `tick & (WHEEL - 1)`, with
///   `current < tick < current + WHEEL`, so each bucket holds the entries of one tick, in insertion
///   order;
/// * an occupancy bit is set iff its bucket (or one bucket of its group) is non-empty;
/// * `len` counts scheduled slots and `min` is their smallest target (`UNSCHEDULED` when
///   `len == 0`).
pub(crate) struct Wheel<const SLOTS: usize, const WHEEL: usize> {
    /// First slot of each bucket, `NIL` when empty.
    heads: [u32; WHEEL],
    /// Last slot of each bucket (append point, keeps FIFO order), `NIL` when empty.
    tails: [u32; WHEEL],
    /// Per-slot list links and target tick.
    links: [Link; SLOTS],
    /// Occupancy: bit per bucket, or per group of `WHEEL / 16384` buckets for larger wheels.
    bitmap: [u64; BITMAP_WORDS],
    /// The last tick advanced to; only grows (until `reset`).
    current: u64,
    /// Smallest target among scheduled slots, `UNSCHEDULED` when empty: makes next deadline O(1).
    min: u64,
    /// Number of scheduled slots.
    len: usize,
}

impl<const SLOTS: usize, const WHEEL: usize> Wheel<SLOTS, WHEEL> {
    /// Compile-time check of the const parameters, forced by `new`: powers of two keep the bucket
    /// mask and the bitmap grouping exact, `WHEEL >= 2` leaves a horizon of at least one tick, and
    /// `SLOTS < u32::MAX` keeps `NIL` distinct from every slot.
    const PARAMS_OK: () = {
        assert!(WHEEL.is_power_of_two(), "WHEEL must be a power of two");
        assert!(WHEEL >= 2, "WHEEL must be at least 2");
        assert!(SLOTS.is_power_of_two(), "SLOTS must be a power of two");
        assert!(
            (SLOTS as u64) < u32::MAX as u64,
            "SLOTS must be below u32::MAX"
        );
    };

    /// Bucket index mask: bucket of tick `t` is `t & MASK`.
    const MASK: usize = WHEEL - 1;

    /// Buckets per occupancy bit: 1 up to 16384 buckets, `WHEEL / 16384` beyond.
    const GROUP: usize = if WHEEL > BITMAP_BITS {
        WHEEL / BITMAP_BITS
    } else {
        1
    };

    /// Occupancy bits in use: `min(WHEEL, 16384)`.
    const BITS: usize = WHEEL / Self::GROUP;

    /// An empty wheel at tick 0. `const` so the wheel can live inside a `static` storage.
    pub(crate) const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::PARAMS_OK;
        Wheel {
            heads: [NIL; WHEEL],
            tails: [NIL; WHEEL],
            links: [Link::UNLINKED; SLOTS],
            bitmap: [0; BITMAP_WORDS],
            current: 0,
            min: UNSCHEDULED,
            len: 0,
        }
    }

    /// Writes [`Wheel::new`] into `ptr` element by element, so a large wheel is never built as a
    /// temporary on the stack (heap-backed storage is initialised in place).
    ///
    /// # Safety
    /// `ptr` is valid for writes and aligned.
    pub(crate) unsafe fn init_at(ptr: *mut Self) {
        #[allow(clippy::let_unit_value)]
        let () = Self::PARAMS_OK;
        // SAFETY: every write stays inside the allocation behind `ptr` (contract); arrays are
        // written element by element through their first-element pointers.
        unsafe {
            let heads = core::ptr::addr_of_mut!((*ptr).heads).cast::<u32>();
            let tails = core::ptr::addr_of_mut!((*ptr).tails).cast::<u32>();
            for i in 0..WHEEL {
                heads.add(i).write(NIL);
                tails.add(i).write(NIL);
            }
            let links = core::ptr::addr_of_mut!((*ptr).links).cast::<Link>();
            for i in 0..SLOTS {
                links.add(i).write(Link::UNLINKED);
            }
            core::ptr::addr_of_mut!((*ptr).bitmap).write([0; BITMAP_WORDS]);
            core::ptr::addr_of_mut!((*ptr).current).write(0);
            core::ptr::addr_of_mut!((*ptr).min).write(UNSCHEDULED);
            core::ptr::addr_of_mut!((*ptr).len).write(0);
        }
    }

    /// Back to the state of [`Wheel::new`] (empty, tick 0), in place: storage is reclaimed for a
    /// new loop whose epoch starts again at 0. O(SLOTS + WHEEL); never on the hot path.
    pub(crate) fn reset(&mut self) {
        self.heads.fill(NIL);
        self.tails.fill(NIL);
        self.links.fill(Link::UNLINKED);
        self.bitmap.fill(0);
        self.current = 0;
        self.min = UNSCHEDULED;
        self.len = 0;
    }

    /// The last tick advanced to.
    #[allow(dead_code)] // tests
    pub(crate) fn current(&self) -> u64 {
        self.current
    }

    /// Number of scheduled (active) entries; the loop skips reading the clock when it is 0.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Where a deadline at `deadline_tick` goes, given the horizon in ticks (see the module doc):
    /// `Expired` if `deadline_tick <= current`, else `At(min(deadline_tick, current + horizon))`.
    ///
    /// `horizon` must be in `1..=WHEEL - 1` (debug-asserted); it is clamped into that range so the
    /// result is always schedulable.
    pub(crate) fn target(&self, deadline_tick: u64, horizon: u64) -> Target {
        debug_assert!(
            (1..WHEEL as u64).contains(&horizon),
            "horizon {horizon} outside 1..={}",
            WHEEL - 1
        );
        let horizon = horizon.clamp(1, WHEEL as u64 - 1);
        // `UNSCHEDULED - 1`: tick u64::MAX is reserved (module doc).
        let cap = self.current.saturating_add(horizon).min(UNSCHEDULED - 1);
        let tick = deadline_tick.min(cap);
        if tick <= self.current {
            Target::Expired
        } else {
            Target::At(tick)
        }
    }

    /// Schedule `slot` to expire at `tick`. O(1).
    ///
    /// Requires `slot < SLOTS`, `slot` not scheduled, and `current < tick < current + WHEEL`
    /// (what [`Wheel::target`] returns). Violations are bugs in the caller: they panic in debug
    /// builds; in release builds the call is ignored and the wheel is left unchanged (the slot then
    /// never fires).
    pub(crate) fn schedule(&mut self, slot: u32, tick: u64) {
        let valid = (slot as usize) < SLOTS
            && self.links[slot as usize].tick == UNSCHEDULED
            && tick > self.current
            && tick - self.current < WHEEL as u64
            && tick != UNSCHEDULED;
        debug_assert!(
            valid,
            "invalid schedule of slot {slot} at tick {tick} (current {}, WHEEL {WHEEL})",
            self.current
        );
        if !valid {
            return;
        }
        let bucket = tick as usize & Self::MASK;
        let tail = self.tails[bucket];
        debug_assert!(
            tail == NIL || self.links[tail as usize].tick == tick,
            "bucket {bucket} holds another tick"
        );
        self.links[slot as usize] = Link {
            prev: tail,
            next: NIL,
            tick,
        };
        if tail == NIL {
            self.heads[bucket] = slot;
            self.set_bit(bucket);
        } else {
            self.links[tail as usize].next = slot;
        }
        self.tails[bucket] = slot;
        self.len += 1;
        self.min = self.min.min(tick);
    }

    /// Unschedule `slot` (completed, cancelled, retired) and return the tick it had, or `None` if
    /// it was not scheduled (including `slot >= SLOTS`). O(1), plus a bitmap scan when it was the
    /// last entry at the minimum tick.
    ///
    /// Inline up to the check, so an operation without a deadline (most of them) pays a load and
    /// a compare, not a call.
    #[inline]
    pub(crate) fn remove(&mut self, slot: u32) -> Option<u64> {
        let link = *self.links.get(slot as usize)?;
        if link.tick == UNSCHEDULED {
            return None;
        }
        self.unlink(slot, link)
    }

    /// `remove` of a scheduled `slot` whose link is `link`.
    #[inline(never)]
    fn unlink(&mut self, slot: u32, link: Link) -> Option<u64> {
        let bucket = link.tick as usize & Self::MASK;
        if link.prev == NIL {
            self.heads[bucket] = link.next;
        } else {
            self.links[link.prev as usize].next = link.next;
        }
        if link.next == NIL {
            self.tails[bucket] = link.prev;
        } else {
            self.links[link.next as usize].prev = link.prev;
        }
        self.links[slot as usize] = Link::UNLINKED;
        self.len -= 1;
        if self.heads[bucket] == NIL {
            self.clear_bit(bucket);
            if link.tick == self.min {
                self.recompute_min_after(link.tick);
            }
        }
        if self.len == 0 {
            self.min = UNSCHEDULED;
        }
        Some(link.tick)
    }

    /// The tick `slot` is scheduled at, `None` if it is not scheduled.
    #[allow(dead_code)] // tests
    pub(crate) fn scheduled_at(&self, slot: u32) -> Option<u64> {
        let tick = self.links.get(slot as usize)?.tick;
        (tick != UNSCHEDULED).then_some(tick)
    }

    /// [`advance_rearming`](Self::advance_rearming) with a callback that re-arms nothing (tests).
    #[cfg(test)]
    pub(crate) fn advance(&mut self, tick: u64, mut expired: impl FnMut(u32, u64)) -> usize {
        self.advance_rearming(tick, |slot, due| {
            expired(slot, due);
            None
        })
    }

    /// Move the current tick to `tick` (no-op if `tick <= current`) and unschedule every entry
    /// whose target is now `<= current`, calling `expired(slot, target)` for each, in tick order
    /// and within a tick in insertion order. Returns how many expired. A jump of `WHEEL` ticks or
    /// more expires every entry.
    ///
    /// The callback may re-arm an entry instead: returning `Some(target)` (a tick in
    /// `(tick, tick + WHEEL)`, what [`Wheel::target`] gives after the advance) schedules the slot
    /// again there. A deadline beyond the horizon is re-armed this way until it is due (semantics
    /// A4: never early). Re-armed entries are linked after the sweep, through their own links (no
    /// memory beyond the wheel's), and are not counted.
    ///
    /// Each entry is fully unlinked (and the minimum updated) before its callback runs, so a
    /// panicking callback leaves the lists consistent, but loses the entries re-armed before it
    /// (the loop's callback cannot panic); the due entries left behind fire on the next advance
    /// that moves the tick (`next_deadline_ticks` reports 0 meanwhile).
    /// Cost: O(bitmap words scanned + entries expired), at most one revolution of words.
    pub(crate) fn advance_rearming(
        &mut self,
        tick: u64,
        mut expired: impl FnMut(u32, u64) -> Option<u64>,
    ) -> usize {
        if tick <= self.current {
            return 0;
        }
        self.current = tick;
        let mut count = 0;
        // Re-armed slots, chained through `next`, their new target in `tick`: linking them now
        // could put a later tick into a bucket that still holds due entries.
        let mut rearmed = NIL;
        while self.len > 0 && self.min <= tick {
            let due = self.min;
            let bucket = due as usize & Self::MASK;
            loop {
                let slot = self.heads[bucket];
                if slot == NIL {
                    // Only reachable if the invariants were broken; never spin.
                    debug_assert!(false, "minimum tick {due} points at an empty bucket");
                    self.recompute_min_after(due);
                    break;
                }
                let next = self.links[slot as usize].next;
                debug_assert_eq!(self.links[slot as usize].tick, due);
                self.heads[bucket] = next;
                self.links[slot as usize] = Link::UNLINKED;
                self.len -= 1;
                if next == NIL {
                    self.tails[bucket] = NIL;
                    self.clear_bit(bucket);
                    if self.len == 0 {
                        self.min = UNSCHEDULED;
                    } else {
                        self.recompute_min_after(due);
                    }
                } else {
                    self.links[next as usize].prev = NIL;
                }
                match expired(slot, due) {
                    Some(target) => {
                        self.links[slot as usize] = Link {
                            prev: NIL,
                            next: rearmed,
                            tick: target,
                        };
                        rearmed = slot;
                    }
                    None => count += 1,
                }
                if next == NIL {
                    break;
                }
            }
        }
        while rearmed != NIL {
            let slot = rearmed;
            let Link { next, tick, .. } = self.links[slot as usize];
            rearmed = next;
            self.links[slot as usize] = Link::UNLINKED;
            self.schedule(slot, tick);
        }
        count
    }

    /// Ticks from the current tick to the earliest target, `None` if nothing is scheduled. The loop
    /// sleeps this many ticks (times `tick_ns`); see the module doc for why that never wakes early.
    pub(crate) fn next_deadline_ticks(&self) -> Option<u64> {
        (self.len > 0).then(|| self.min.saturating_sub(self.current))
    }

    /// The minimum's bucket (tick `old_min`) just emptied: find the next scheduled tick. Every
    /// other entry lies in `(old_min, old_min + WHEEL)`, so scan the `WHEEL - 1` buckets after it.
    fn recompute_min_after(&mut self, old_min: u64) {
        if self.len == 0 {
            self.min = UNSCHEDULED;
            return;
        }
        let from = old_min.wrapping_add(1) as usize & Self::MASK;
        match self.next_occupied(from, WHEEL - 1) {
            Some(distance) => self.min = old_min + 1 + distance as u64,
            None => {
                debug_assert!(false, "{} entries but no occupied bucket", self.len);
                self.min = UNSCHEDULED;
            }
        }
    }

    /// Smallest `d < limit` such that bucket `(from + d) mod WHEEL` is non-empty, scanning the
    /// bitmap a word at a time and wrapping at most once (`limit <= WHEEL`).
    fn next_occupied(&self, from: usize, limit: usize) -> Option<usize> {
        let mut d = 0;
        while d < limit {
            let b = (from + d) & Self::MASK;
            let bit = b / Self::GROUP;
            let word = self.bitmap[bit / 64] >> (bit % 64);
            if word == 0 {
                // Nothing left in this word: jump to the next word's first bucket (or wrap to 0).
                let next_bit = (bit / 64 + 1) * 64;
                d += next_bit.min(Self::BITS) * Self::GROUP - b;
                continue;
            }
            let found = bit + word.trailing_zeros() as usize;
            // In the group we started in, only buckets from `b` on are ahead of us.
            let start = if found == bit { b } else { found * Self::GROUP };
            let end = (found + 1) * Self::GROUP;
            if let Some(bucket) = (start..end).find(|&i| self.heads[i] != NIL) {
                let dist = d + (bucket - b);
                return (dist < limit).then_some(dist);
            }
            d += end - b;
        }
        None
    }

    /// Mark `bucket` non-empty.
    fn set_bit(&mut self, bucket: usize) {
        let bit = bucket / Self::GROUP;
        self.bitmap[bit / 64] |= 1 << (bit % 64);
    }

    /// `bucket` just emptied: clear its bit unless another bucket of its group is non-empty.
    fn clear_bit(&mut self, bucket: usize) {
        let bit = bucket / Self::GROUP;
        if Self::GROUP > 1 {
            let first = bit * Self::GROUP;
            if self.heads[first..first + Self::GROUP]
                .iter()
                .any(|&h| h != NIL)
            {
                return;
            }
        }
        self.bitmap[bit / 64] &= !(1 << (bit % 64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tick length of the upstream tests.
    const TICK: Duration = Duration::from_millis(5);

    fn tick_ns() -> u64 {
        duration_to_nanos_saturating(TICK)
    }

    fn ms(n: u64) -> u64 {
        duration_to_nanos_saturating(Duration::from_millis(n))
    }

    /// Advance and collect `(slot, tick)` in the order reported.
    fn advance_collect<const S: usize, const W: usize>(
        w: &mut Wheel<S, W>,
        tick: u64,
    ) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        let n = w.advance(tick, |s, t| out.push((s, t)));
        assert_eq!(n, out.len(), "advance count matches callbacks");
        out
    }

    /// Next deadline as the loop computes it: ticks times tick length.
    fn next_deadline<const S: usize, const W: usize>(w: &Wheel<S, W>) -> Option<Duration> {
        w.next_deadline_ticks()
            .map(|t| Duration::from_nanos(t.saturating_mul(tick_ns())))
    }

    /// Full structural check: lists, links, bitmap, count and cached minimum agree.
    fn check_invariants<const S: usize, const W: usize>(w: &Wheel<S, W>) {
        let mut seen = 0usize;
        let mut min = UNSCHEDULED;
        for b in 0..W {
            let mut prev = NIL;
            let mut s = w.heads[b];
            let mut tick = None;
            while s != NIL {
                let l = w.links[s as usize];
                assert_eq!(l.prev, prev, "prev link of slot {s}");
                assert_eq!(l.tick as usize & (W - 1), b, "slot {s} in the wrong bucket");
                assert!(l.tick > w.current && l.tick - w.current < W as u64);
                if let Some(t) = tick {
                    assert_eq!(t, l.tick, "one tick per bucket");
                }
                tick = Some(l.tick);
                min = min.min(l.tick);
                seen += 1;
                prev = s;
                s = l.next;
            }
            assert_eq!(w.tails[b], prev, "tail of bucket {b}");
        }
        assert_eq!(seen, w.len, "len");
        let linked = w.links.iter().filter(|l| l.tick != UNSCHEDULED).count();
        assert_eq!(linked, w.len, "scheduled links");
        for l in w.links.iter().filter(|l| l.tick == UNSCHEDULED) {
            assert_eq!((l.prev, l.next), (NIL, NIL));
        }
        assert_eq!(w.min, min, "cached minimum");
        let group = Wheel::<S, W>::GROUP;
        for bit in 0..BITMAP_BITS {
            let set = w.bitmap[bit / 64] >> (bit % 64) & 1 == 1;
            let occupied = bit < W / group && (0..group).any(|i| w.heads[bit * group + i] != NIL);
            assert_eq!(set, occupied, "bitmap bit {bit}");
        }
    }

    #[test]
    fn rearmed_entries_land_after_the_sweep_even_in_a_bucket_still_due() {
        // WHEEL 8: slots at ticks 1, 7 and 3. Advancing to 7 re-arms slot 0 at 11, whose bucket
        // (3) still holds slot 2's due tick 3 at that moment, and slot 1 at 14; both then fire on
        // time and the wheel stays consistent.
        let mut w = Wheel::<4, 8>::new();
        w.schedule(0, 1);
        w.schedule(1, 7);
        w.schedule(2, 3);
        let mut fired = Vec::new();
        let expired = w.advance_rearming(7, |slot, due| {
            fired.push((slot, due));
            match slot {
                0 => Some(11),
                1 => Some(14),
                _ => None,
            }
        });
        assert_eq!(fired, [(0, 1), (2, 3), (1, 7)], "tick order");
        assert_eq!(expired, 1, "re-armed entries are not counted as expired");
        check_invariants(&w);
        assert_eq!((w.scheduled_at(0), w.scheduled_at(1)), (Some(11), Some(14)));
        assert_eq!(w.next_deadline_ticks(), Some(4));
        assert_eq!(advance_collect(&mut w, 11), [(0, 11)]);
        assert_eq!(advance_collect(&mut w, 14), [(1, 14)]);
        check_invariants(&w);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn tick_math_worked_examples() {
        // The tick math is the observable timing contract (docs/behaviour.md 3.1): these are the
        // model's own examples.
        let t = tick_ns();
        let ticks: Vec<u64> = [0, 4, 5, 12]
            .iter()
            .map(|&m| floor_tick(ms(m), t))
            .collect();
        assert_eq!(ticks, [0, 0, 1, 2]);

        // Horizons of the upstream slot-count examples (slots = next_pow2(H + 1)).
        assert_eq!(horizon_ticks(ms(60_000), t), 12_000);
        assert_eq!(
            (horizon_ticks(ms(60_000), t) + 1).next_power_of_two(),
            16_384
        );
        assert_eq!(horizon_ticks(1, t), 1);
        assert_eq!((horizon_ticks(1, t) + 1).next_power_of_two(), 2);
        let h = horizon_ticks(ms(100), t);
        assert_eq!(h, 20);

        // Deadline at the epoch, or in the past (saturated to 0 elapsed), is expired at tick 0.
        let mut w = Wheel::<8, 32>::new();
        assert_eq!(w.target(ceil_tick(0, t), h), Target::Expired);
        // 10 s away clamps to the horizon.
        let d = ceil_tick(ms(10_000), t);
        assert_eq!(d, 2000);
        assert_eq!(w.target(d, h), Target::At(20));

        // After advancing to tick 7 (35 ms), a deadline 12 ms later is tick ceil(47 / 5) = 10.
        assert_eq!(w.advance(floor_tick(ms(35), t), |_, _| {}), 0);
        assert_eq!(w.current(), 7);
        assert_eq!(w.target(ceil_tick(ms(35 + 12), t), h), Target::At(10));
        // Exactly on a tick boundary a deadline is that tick; equal to current is expired.
        assert_eq!(ceil_tick(ms(35), t), 7);
        assert_eq!(w.target(7, h), Target::Expired);
        assert_eq!(w.target(8, h), Target::At(8));
    }

    #[test]
    fn duration_to_nanos_saturating_extremes() {
        // Far deadlines must clamp, not wrap to a near (or past) tick.
        assert_eq!(duration_to_nanos_saturating(Duration::MAX), u64::MAX);
        assert_eq!(
            duration_to_nanos_saturating(Duration::new(1, 42)),
            1_000_000_042
        );
        assert_eq!(duration_to_nanos_saturating(Duration::ZERO), 0);
        assert_eq!(
            duration_to_nanos_saturating(Duration::from_nanos(u64::MAX)),
            u64::MAX
        );
        assert_eq!(ceil_tick(u64::MAX, tick_ns()), u64::MAX / tick_ns() + 1);
        assert_eq!(ceil_tick(u64::MAX, 1), u64::MAX);
    }

    #[test]
    fn degenerate_tick_and_horizon_inputs_do_not_panic() {
        // Upstream panics at construction; here config rejects them, and the helpers stay total so
        // nothing can panic the loop thread: zero horizon is one tick, zero tick counts as 1 ns.
        assert_eq!(horizon_ticks(0, tick_ns()), 1);
        assert_eq!(horizon_ticks(0, 0), 1);
        assert_eq!(floor_tick(17, 0), 17);
        assert_eq!(ceil_tick(17, 0), 17);
        assert_eq!(horizon_ticks(17, 0), 17);
    }

    #[test]
    fn target_never_returns_reserved_tick() {
        // u64::MAX marks "not scheduled"; target must never hand it out, even at saturation.
        let mut w = Wheel::<4, 4>::new();
        w.advance(u64::MAX - 2, |_, _| {});
        assert_eq!(w.target(u64::MAX, 3), Target::At(u64::MAX - 1));
        w.schedule(0, u64::MAX - 1);
        assert_eq!(w.scheduled_at(0), Some(u64::MAX - 1));
        assert_eq!(advance_collect(&mut w, u64::MAX - 1), [(0, u64::MAX - 1)]);
        assert_eq!(w.target(u64::MAX, 3), Target::Expired);
        assert_eq!(w.advance(u64::MAX, |_, _| {}), 0);
        assert_eq!(w.target(u64::MAX, 3), Target::Expired);
        check_invariants(&w);
    }

    #[test]
    fn advance_non_expiry_paths() {
        // Advancing must move time without inventing expiries or going backwards.
        let mut w = Wheel::<8, 32>::new();
        assert!(advance_collect(&mut w, 10).is_empty());
        assert_eq!(w.current(), 10);
        assert_eq!(w.next_deadline_ticks(), None);
        assert!(advance_collect(&mut w, 0).is_empty());
        assert_eq!(w.current(), 10, "advancing backwards is a no-op");

        let mut w = Wheel::<8, 32>::new();
        w.schedule(1, 10);
        assert!(advance_collect(&mut w, 5).is_empty());
        assert_eq!(w.scheduled_at(1), Some(10));
        assert_eq!(w.next_deadline_ticks(), Some(5));

        let mut w = Wheel::<8, 32>::new();
        w.schedule(2, 2);
        assert!(advance_collect(&mut w, 1).is_empty());
        assert_eq!(w.len(), 1);
        assert_eq!(advance_collect(&mut w, 1), [], "same tick again is a no-op");
        check_invariants(&w);
    }

    #[test]
    fn schedule_after_advance_fires_at_its_target() {
        // A deadline taken after time has moved is relative to the advanced tick.
        let t = tick_ns();
        let mut w = Wheel::<8, 32>::new();
        w.advance(floor_tick(ms(50), t), |_, _| {});
        assert_eq!(w.current(), 10);
        let Target::At(tick) = w.target(ceil_tick(ms(50 + 10), t), 20) else {
            panic!("not expired")
        };
        assert_eq!(tick, 12);
        w.schedule(3, tick);
        assert!(advance_collect(&mut w, 11).is_empty());
        assert_eq!(advance_collect(&mut w, 12), [(3, 12)]);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn schedule_advance_and_next_deadline() {
        // The loop's sleep bound must track the earliest live entry as entries fire.
        let mut w = Wheel::<8, 32>::new();
        w.schedule(0, 2);
        w.schedule(1, 5);
        assert_eq!(next_deadline(&w), Some(Duration::from_millis(10)));
        assert!(advance_collect(&mut w, 1).is_empty());
        assert_eq!(next_deadline(&w), Some(Duration::from_millis(5)));
        assert_eq!(advance_collect(&mut w, 2), [(0, 2)]);
        // Expiry already unscheduled it: a later remove finds nothing.
        assert_eq!(w.remove(0), None);
        assert_eq!(next_deadline(&w), Some(Duration::from_millis(15)));
        assert_eq!(advance_collect(&mut w, 5), [(1, 5)]);
        assert_eq!(w.remove(1), None);
        assert_eq!(next_deadline(&w), None);
        check_invariants(&w);
    }

    #[test]
    fn interleaved_schedule_advance_cycles() {
        // Schedules, removes and advances interleaved as the loop does must fire exactly on time.
        let mut w = Wheel::<8, 32>::new();
        w.schedule(0, 2);
        w.schedule(1, 3);
        assert!(advance_collect(&mut w, 1).is_empty());
        assert_eq!(w.remove(1), Some(3));
        w.schedule(2, 4);
        assert_eq!(advance_collect(&mut w, 2), [(0, 2)]);
        w.schedule(1, 6);
        assert!(advance_collect(&mut w, 3).is_empty());
        assert_eq!(w.remove(1), Some(6));
        assert_eq!(advance_collect(&mut w, 4), [(2, 4)]);
        assert!(advance_collect(&mut w, 10).is_empty());
        assert_eq!(w.len(), 0);
        assert_eq!(w.next_deadline_ticks(), None);
        check_invariants(&w);
    }

    #[test]
    fn removed_entries_never_fire_and_leave_nothing_behind() {
        // Replaces upstream's stale purge: a removed entry is gone at once, with no residue.
        let mut w = Wheel::<8, 32>::new();
        w.schedule(4, 3);
        assert_eq!(w.remove(4), Some(3));
        assert_eq!(w.remove(4), None, "second remove finds nothing");
        assert!(w.bitmap.iter().all(|&x| x == 0));
        assert!(w.heads.iter().chain(w.tails.iter()).all(|&h| h == NIL));
        assert!(advance_collect(&mut w, 10).is_empty());
        assert_eq!(w.current(), 10);
        assert_eq!(w.next_deadline_ticks(), None);
        assert!(advance_collect(&mut w, 100).is_empty());
        assert!(w.bitmap.iter().all(|&x| x == 0));
        check_invariants(&w);
    }

    #[test]
    fn same_bucket_fires_in_insertion_order() {
        // Requests with the same deadline time out in the order they were admitted.
        let mut w = Wheel::<8, 32>::new();
        w.schedule(5, 2);
        w.schedule(1, 2);
        w.schedule(3, 2);
        // Removing the middle keeps the others' order.
        assert_eq!(w.remove(1), Some(2));
        w.schedule(1, 2);
        check_invariants(&w);
        assert_eq!(advance_collect(&mut w, 2), [(5, 2), (3, 2), (1, 2)]);
    }

    #[test]
    fn wraparound_range_drain_order() {
        // A range that wraps past the last bucket must still drain in tick order.
        let mut w = Wheel::<8, 32>::new();
        w.advance(30, |_, _| {});
        w.schedule(0, 33);
        w.schedule(1, 31);
        w.schedule(2, 33);
        check_invariants(&w);
        assert_eq!(next_deadline(&w), Some(Duration::from_millis(5)));
        assert_eq!(advance_collect(&mut w, 33), [(1, 31), (0, 33), (2, 33)]);
        assert_eq!(w.len(), 0);
        // Upstream phrasing (next deadline 15 ms) holds once 31 is gone.
        let mut w = Wheel::<8, 32>::new();
        w.advance(30, |_, _| {});
        w.schedule(0, 33);
        w.schedule(2, 33);
        assert_eq!(next_deadline(&w), Some(Duration::from_millis(15)));
    }

    #[test]
    fn multi_word_bitmap_drains_in_tick_order() {
        // Entries straddling a 64-bit word boundary must be found and fired in order.
        let t = tick_ns();
        let horizon = horizon_ticks(ms(500), t);
        assert_eq!((horizon + 1).next_power_of_two(), 128);
        let mut w = Wheel::<8, 128>::new();
        w.schedule(0, 65);
        w.schedule(1, 63);
        w.schedule(2, 64);
        check_invariants(&w);
        assert_eq!(w.next_deadline_ticks(), Some(63));
        assert_eq!(advance_collect(&mut w, 65), [(1, 63), (2, 64), (0, 65)]);
    }

    #[test]
    fn full_revolution_jump_expires_everything() {
        // A stall longer than the wheel must fire every entry, then the wheel must be reusable.
        let mut w = Wheel::<8, 32>::new();
        w.schedule(0, 20);
        w.schedule(1, 5);
        assert_eq!(advance_collect(&mut w, 40), [(1, 5), (0, 20)]);
        assert_eq!(w.len(), 0);
        assert_eq!(w.remove(0), None);
        w.schedule(0, 41);
        assert!(advance_collect(&mut w, 40).is_empty());
        assert_eq!(advance_collect(&mut w, 41), [(0, 41)]);
        // A jump of far more than one revolution with entries in every bucket.
        let mut w = Wheel::<32, 32>::new();
        for s in 0..31u32 {
            w.schedule(s, 31 - u64::from(s));
        }
        let got = advance_collect(&mut w, 1_000_000);
        let want: Vec<(u32, u64)> = (0..31u32).rev().map(|s| (s, 31 - u64::from(s))).collect();
        assert_eq!(got, want);
        check_invariants(&w);
    }

    #[test]
    fn advance_over_empty_range_expires_nothing() {
        // Replaces the corrupted-metadata case: a due range with no entries is a clean no-op
        // and leaves later entries untouched.
        let mut w = Wheel::<8, 128>::new();
        w.schedule(0, 100);
        assert!(advance_collect(&mut w, 99).is_empty());
        assert_eq!(w.len(), 1);
        assert_eq!(w.scheduled_at(0), Some(100));
        assert_eq!(w.next_deadline_ticks(), Some(1));
        check_invariants(&w);
    }

    #[test]
    fn min_tick_update_paths() {
        // The cached minimum drives the sleep bound: every path that changes it must be right.
        let mut w = Wheel::<8, 128>::new();
        w.schedule(0, 100);
        assert!(advance_collect(&mut w, 50).is_empty());
        assert_eq!(
            w.next_deadline_ticks(),
            Some(50),
            "early advance keeps min 100"
        );
        assert_eq!(advance_collect(&mut w, 100), [(0, 100)]);

        let mut w = Wheel::<8, 128>::new();
        w.schedule(0, 5);
        w.schedule(1, 10);
        w.schedule(2, 20);
        assert_eq!(w.remove(0), Some(5));
        assert_eq!(
            w.next_deadline_ticks(),
            Some(10),
            "removing the min recomputes"
        );
        w.advance(5, |_, _| {});
        assert_eq!(next_deadline(&w), Some(Duration::from_millis(25)));

        let mut w = Wheel::<8, 128>::new();
        w.schedule(0, 5);
        w.schedule(1, 10);
        assert_eq!(w.remove(1), Some(10));
        assert_eq!(
            w.next_deadline_ticks(),
            Some(5),
            "removing a non-min keeps it"
        );
        // Removing one of two entries at the minimum keeps it too.
        w.schedule(2, 5);
        assert_eq!(w.remove(0), Some(5));
        assert_eq!(w.next_deadline_ticks(), Some(5));
        // Scheduling below the minimum lowers it.
        w.schedule(3, 2);
        assert_eq!(w.next_deadline_ticks(), Some(2));
        check_invariants(&w);
    }

    #[test]
    fn reused_slot_fires_only_at_its_new_tick() {
        // Replaces the stale-entry identity test: an old deadline never hits the slot's new user.
        let mut w = Wheel::<8, 32>::new();
        w.schedule(3, 5);
        assert_eq!(w.remove(3), Some(5));
        w.schedule(3, 10);
        assert_eq!(w.scheduled_at(3), Some(10));
        assert!(advance_collect(&mut w, 9).is_empty());
        assert_eq!(advance_collect(&mut w, 10), [(3, 10)]);
        assert_eq!(w.scheduled_at(3), None);
    }

    #[test]
    fn next_deadline_after_removal() {
        // After a completion removes the earliest deadline the loop must not wake for it.
        let mut w = Wheel::<8, 32>::new();
        w.schedule(0, 2);
        w.schedule(1, 7);
        assert_eq!(w.remove(0), Some(2));
        assert_eq!(next_deadline(&w), Some(Duration::from_millis(35)));
        assert_eq!(w.remove(1), Some(7));
        assert_eq!(next_deadline(&w), None);
    }

    #[test]
    fn min_recompute_cases() {
        // Port of compute_min_scheduled_tick: empty is none, and the scan finds the next tick.
        let mut w = Wheel::<8, 32>::new();
        assert_eq!(w.next_deadline_ticks(), None);
        w.advance(30, |_, _| {});
        w.schedule(0, 31);
        w.schedule(1, 33);
        assert_eq!(w.remove(0), Some(31));
        assert_eq!(w.min, 33);
        assert_eq!(w.next_deadline_ticks(), Some(3));
        check_invariants(&w);
    }

    #[test]
    fn remove_of_minimum_recomputes_across_the_wrap() {
        // The next entry may sit in a lower bucket of the next revolution (128 slots, tick 63,
        // entry in bucket 1 = tick 129): the scan must wrap and report the right tick.
        let mut w = Wheel::<8, 128>::new();
        w.advance(63, |_, _| {});
        w.schedule(0, 64);
        w.schedule(1, 129);
        assert_eq!(w.remove(0), Some(64));
        assert_eq!(w.min, 129);
        assert_eq!(w.next_deadline_ticks(), Some(66));
        assert_eq!(advance_collect(&mut w, 129), [(1, 129)]);
        check_invariants(&w);
    }

    #[test]
    fn current_at_last_bucket_with_nothing_left_is_none() {
        // Port of the empty wrapped tail: a wrap with nothing after it must not invent a deadline.
        let mut w = Wheel::<8, 32>::new();
        w.advance(31, |_, _| {});
        w.schedule(0, 32);
        assert_eq!(w.remove(0), Some(32));
        assert_eq!(w.next_deadline_ticks(), None);
        // And with one entry left at the far end of the window.
        w.schedule(0, 32);
        w.schedule(1, 62);
        assert_eq!(w.remove(0), Some(32));
        assert_eq!(w.next_deadline_ticks(), Some(31));
        check_invariants(&w);
    }

    #[test]
    fn invalid_remove_and_lookup_are_harmless() {
        // Upstream panics on bad removes; here they are answered: nothing scheduled, nothing done.
        let mut w = Wheel::<8, 32>::new();
        assert_eq!(w.remove(0), None);
        assert_eq!(w.remove(8), None, "out of range");
        assert_eq!(w.remove(NIL), None);
        assert_eq!(w.scheduled_at(8), None);
        w.schedule(1, 3);
        assert_eq!(w.remove(2), None);
        assert_eq!(w.len(), 1);
        check_invariants(&w);
    }

    /// Attempts every invalid schedule on a wheel at tick 10 with slot 0 scheduled; returns it.
    fn invalid_schedules() -> Wheel<8, 32> {
        let mut w = Wheel::<8, 32>::new();
        w.advance(10, |_, _| {});
        w.schedule(0, 12);
        let attempts: [(u32, u64); 5] = [(1, 10), (1, 9), (1, 42), (0, 13), (8, 12)];
        for (slot, tick) in attempts {
            w.schedule(slot, tick);
        }
        w
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "invalid schedule")]
    fn invalid_schedule_panics_in_debug() {
        // Scheduling at/before the current tick, beyond the wheel, twice or out of range is a
        // caller bug: debug builds must catch it.
        invalid_schedules();
    }

    #[cfg(not(debug_assertions))]
    #[test]
    fn invalid_schedule_is_ignored_in_release() {
        // In release a caller bug must not corrupt the wheel: every invalid call is a no-op.
        let mut w = invalid_schedules();
        check_invariants(&w);
        assert_eq!(w.len(), 1);
        assert_eq!(w.scheduled_at(0), Some(12));
        assert_eq!(w.scheduled_at(1), None);
        assert_eq!(advance_collect(&mut w, 100), [(0, 12)]);
    }

    #[test]
    fn each_invalid_schedule_is_rejected() {
        // Each precondition on its own: valid boundaries accepted, one past rejected (in debug).
        let mut w = Wheel::<8, 32>::new();
        w.advance(10, |_, _| {});
        w.schedule(0, 11); // current + 1: earliest valid
        w.schedule(1, 41); // current + WHEEL - 1: latest valid
        check_invariants(&w);
        for (slot, tick) in [(2u32, 10u64), (2, 42), (0, 20), (8, 20)] {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut c = Wheel::<8, 32>::new();
                c.advance(10, |_, _| {});
                c.schedule(0, 11);
                c.schedule(slot, tick);
                c
            }));
            if cfg!(debug_assertions) {
                assert!(r.is_err(), "schedule({slot}, {tick}) must panic in debug");
            } else {
                let c = r.expect("no panic in release");
                assert_eq!(c.len(), 1);
                check_invariants(&c);
            }
        }
    }

    #[test]
    fn reset_returns_to_empty_tick_zero() {
        // Reclaimed storage must behave exactly like a fresh wheel.
        let mut w = Wheel::<8, 32>::new();
        w.advance(7, |_, _| {});
        w.schedule(0, 9);
        w.schedule(1, 20);
        w.reset();
        assert_eq!(w.current(), 0);
        assert_eq!(w.len(), 0);
        assert_eq!(w.next_deadline_ticks(), None);
        assert_eq!(w.scheduled_at(0), None);
        check_invariants(&w);
        w.schedule(0, 1);
        assert_eq!(advance_collect(&mut w, 1), [(0, 1)]);
    }

    #[test]
    fn const_new_works_in_a_static() {
        // Storage lives in a `static`, so `new` must be usable in const context.
        static W: Wheel<16, 64> = Wheel::new();
        assert_eq!(W.len(), 0);
        assert_eq!(W.current(), 0);
        assert_eq!(W.next_deadline_ticks(), None);
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn size_matches_documented_formula() {
        // The module doc promises the memory cost; keep it honest.
        fn formula(slots: usize, wheel: usize) -> usize {
            16 * slots + 8 * wheel + 2072
        }
        assert_eq!(size_of::<Wheel<8, 32>>(), formula(8, 32));
        assert_eq!(size_of::<Wheel<1024, 16384>>(), formula(1024, 16384));
        assert_eq!(size_of::<Wheel<1024, 16384>>(), 149_528);
        assert_eq!(size_of::<Wheel<1, 2>>(), formula(1, 2));
        assert_eq!(size_of::<Wheel<64, 32768>>(), formula(64, 32768));
    }

    #[test]
    fn minimal_wheel_of_two_buckets() {
        // WHEEL = 2 has a one-tick horizon: every target is current + 1.
        let mut w = Wheel::<2, 2>::new();
        assert_eq!(w.target(100, 1), Target::At(1));
        w.schedule(0, 1);
        w.schedule(1, 1);
        assert_eq!(advance_collect(&mut w, 1), [(0, 1), (1, 1)]);
        w.schedule(1, 2);
        assert_eq!(w.remove(1), Some(2));
        w.schedule(0, 2);
        assert_eq!(advance_collect(&mut w, 5), [(0, 2)]);
        check_invariants(&w);
    }

    /// Runs `f` on a thread with a large stack (the grouped wheel is ~260 KiB by value).
    fn with_big_stack(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn grouped_bitmap_wheel_behaves_identically() {
        // WHEEL > 16384 shares one bitmap bit between buckets; results must not change.
        with_big_stack(|| {
            let mut big = Box::new(Wheel::<64, 32768>::new());
            let mut small = Box::new(Wheel::<64, 16384>::new());
            assert_eq!(Wheel::<64, 32768>::GROUP, 2);
            // Same script on both wheels; ticks fit both horizons.
            let script = |w: &mut dyn FnMut(Op) -> Vec<(u32, u64)>| {
                let mut log = Vec::new();
                for op in [
                    Op::Schedule(0, 10),
                    Op::Schedule(1, 11), // shares a group with 10 in the big wheel
                    Op::Schedule(2, 16_000),
                    Op::Schedule(3, 3),
                    Op::Remove(0),
                    Op::Advance(5),
                    Op::Remove(1),
                    Op::Advance(9_000),
                    Op::Schedule(0, 9_001),
                    Op::Schedule(1, 9_000 + 16_383),
                    Op::Remove(2),
                    Op::Advance(9_001),
                    Op::Advance(40_000),
                ] {
                    log.push(w(op));
                }
                log
            };
            let mut run_big = |op| apply(&mut *big, op);
            let log_big = script(&mut run_big);
            let mut run_small = |op| apply(&mut *small, op);
            let log_small = script(&mut run_small);
            assert_eq!(log_big, log_small);
            let expected: Vec<Vec<(u32, u64)>> = vec![
                vec![],
                vec![],
                vec![],
                vec![],
                vec![(0, 10)],
                vec![(3, 3)],
                vec![(1, 11)],
                vec![],
                vec![],
                vec![],
                vec![(2, 16_000)],
                vec![(0, 9_001)],
                vec![(1, 9_000 + 16_383)],
            ];
            assert_eq!(log_big, expected);
            check_invariants(&big);

            // Group bit lifecycle: two buckets of one group; the bit stays while either is used.
            let mut w = Box::new(Wheel::<64, 32768>::new());
            w.schedule(0, 100);
            w.schedule(1, 101);
            assert_eq!(w.remove(0), Some(100));
            assert_eq!(w.bitmap[0] >> 50 & 1, 1, "group 50 still occupied");
            assert_eq!(w.next_deadline_ticks(), Some(101));
            // The next entry is one revolution later in the group just before the scan start:
            // found only after wrapping.
            w.advance(100, |_, _| {});
            w.schedule(2, 100 + 32_767);
            check_invariants(&w);
            assert_eq!(w.remove(1), Some(101));
            assert_eq!(w.next_deadline_ticks(), Some(32_767));
            check_invariants(&w);

            // Four buckets per bit: the scan starts mid-group (bucket 3) in a group whose bit is
            // set only by bucket 0, which holds a tick one revolution later; it must skip the
            // group's tail and find bucket 0 after wrapping.
            let mut w = Box::new(Wheel::<8, 65536>::new());
            assert_eq!(Wheel::<8, 65536>::GROUP, 4);
            w.advance(1, |_, _| {});
            w.schedule(0, 2);
            w.schedule(1, 65_536);
            assert_eq!(w.remove(0), Some(2));
            assert_eq!(w.next_deadline_ticks(), Some(65_535));
            check_invariants(&w);
            let mut got = Vec::new();
            w.advance(65_536, |s, t| got.push((s, t)));
            assert_eq!(got, [(1, 65_536)]);
            check_invariants(&w);
        });
    }

    /// A scripted operation; the result is what it expired (or the removed entry).
    #[derive(Clone, Copy)]
    enum Op {
        Schedule(u32, u64),
        Remove(u32),
        Advance(u64),
    }

    fn apply<const S: usize, const W: usize>(w: &mut Wheel<S, W>, op: Op) -> Vec<(u32, u64)> {
        match op {
            Op::Schedule(s, t) => {
                w.schedule(s, t);
                vec![]
            }
            Op::Remove(s) => w.remove(s).map(|t| (s, t)).into_iter().collect(),
            Op::Advance(t) => advance_collect(w, t),
        }
    }

    /// Deterministic xorshift64 for the model test (no external crates).
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Naive reference: a list of `(slot, tick, insertion sequence)`.
    #[derive(Default)]
    struct Model {
        entries: Vec<(u32, u64, u64)>,
        current: u64,
        seq: u64,
    }

    impl Model {
        fn schedule(&mut self, slot: u32, tick: u64) {
            self.entries.push((slot, tick, self.seq));
            self.seq += 1;
        }

        fn remove(&mut self, slot: u32) -> Option<u64> {
            let i = self.entries.iter().position(|e| e.0 == slot)?;
            Some(self.entries.remove(i).1)
        }

        fn advance(&mut self, tick: u64) -> Vec<(u32, u64)> {
            if tick <= self.current {
                return vec![];
            }
            self.current = tick;
            let mut due: Vec<_> = self
                .entries
                .iter()
                .copied()
                .filter(|e| e.1 <= tick)
                .collect();
            self.entries.retain(|e| e.1 > tick);
            due.sort_by_key(|e| (e.1, e.2));
            due.into_iter().map(|e| (e.0, e.1)).collect()
        }

        fn next_deadline(&self) -> Option<u64> {
            self.entries.iter().map(|e| e.1 - self.current).min()
        }

        fn scheduled_at(&self, slot: u32) -> Option<u64> {
            self.entries.iter().find(|e| e.0 == slot).map(|e| e.1)
        }
    }

    /// Runs `ops` random operations against the model, checking every observable after each.
    fn model_test<const S: usize, const W: usize>(seed: u64, ops: usize, w: &mut Wheel<S, W>) {
        let mut rng = XorShift(seed);
        let mut m = Model::default();
        let mut fired = 0usize;
        for op in 0..ops {
            match rng.below(10) {
                // Schedule via `target`, as the loop does, mostly near, sometimes far/clamped.
                0..=4 => {
                    let slot = rng.below(S as u64) as u32;
                    if m.scheduled_at(slot).is_some() {
                        continue;
                    }
                    let ahead = match rng.below(4) {
                        0 => rng.below(4),
                        1 | 2 => rng.below(W as u64 / 4 + 1),
                        _ => rng.below(2 * W as u64),
                    };
                    let horizon = 1 + rng.below(W as u64 - 1);
                    let deadline = m.current + ahead;
                    let expect = if deadline <= m.current {
                        Target::Expired
                    } else {
                        Target::At(deadline.min(m.current + horizon))
                    };
                    let got = w.target(deadline, horizon);
                    assert_eq!(got, expect, "op {op}: target");
                    if let Target::At(t) = got {
                        w.schedule(slot, t);
                        m.schedule(slot, t);
                    }
                }
                5 | 6 => {
                    let slot = rng.below(S as u64) as u32;
                    assert_eq!(w.remove(slot), m.remove(slot), "op {op}: remove {slot}");
                }
                _ => {
                    let step = match rng.below(8) {
                        0 => 0,
                        1..=5 => rng.below(4),
                        6 => rng.below(W as u64),
                        _ => W as u64 + rng.below(3 * W as u64),
                    };
                    let to = m.current + step;
                    let want = m.advance(to);
                    let got = advance_collect(w, to);
                    assert_eq!(got, want, "op {op}: advance to {to}");
                    fired += got.len();
                }
            }
            assert_eq!(w.current(), m.current, "op {op}: current");
            assert_eq!(w.len(), m.entries.len(), "op {op}: len");
            assert_eq!(w.next_deadline_ticks(), m.next_deadline(), "op {op}: next");
            let slot = rng.below(S as u64) as u32;
            assert_eq!(w.scheduled_at(slot), m.scheduled_at(slot), "op {op}: at");
            if op % 997 == 0 {
                check_invariants(w);
            }
        }
        check_invariants(w);
        assert!(
            fired > ops / 20,
            "the test exercised expiry ({fired} fired)"
        );
    }

    #[test]
    fn randomized_against_reference_model() {
        // The wheel must match a naive list on every observable across random interleavings,
        // including wraps, clamps, full-revolution jumps and slot reuse.
        model_test(0x9E37_79B9_7F4A_7C15, 20_000, &mut Wheel::<16, 32>::new());
        model_test(0xD1B5_4A32_D192_ED03, 20_000, &mut Wheel::<64, 256>::new());
        model_test(0x2545_F491_4F6C_DD1D, 20_000, &mut Wheel::<4, 2>::new());
    }

    #[test]
    fn randomized_grouped_bitmap_against_reference_model() {
        // Same model check for a grouped-bitmap wheel (WHEEL = 32768, two buckets per bit).
        with_big_stack(|| {
            let mut w = Box::new(Wheel::<128, 32768>::new());
            model_test(0x8CB9_2BA7_2F3D_8DD7, 20_000, &mut *w);
        });
    }
}
