//! A fixed-size log-linear latency histogram (64 sub-buckets per power of two, so a reported
//! percentile is within 1.6% of the true value). Recording never allocates.

use std::time::Duration;

const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Buckets for every u64: exponents 6..=63 each get 64 sub-buckets, plus the first 64 values.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// Latency counts in nanoseconds.
pub struct Hist {
    counts: [u64; BUCKETS],
    total: u64,
}

impl Hist {
    pub fn new() -> Box<Hist> {
        Box::new(Hist {
            counts: [0; BUCKETS],
            total: 0,
        })
    }

    fn index(ns: u64) -> usize {
        if ns < SUB as u64 {
            return ns as usize;
        }
        let exp = 63 - ns.leading_zeros(); // >= SUB_BITS
        let shift = exp - SUB_BITS;
        // (ns >> shift) is in [SUB, 2 SUB): one bucket row per exponent.
        shift as usize * SUB + (ns >> shift) as usize
    }

    /// The midpoint of bucket `index`.
    fn value(index: usize) -> u64 {
        if index < SUB {
            return index as u64;
        }
        let shift = (index / SUB - 1) as u32;
        let mantissa = (index % SUB + SUB) as u64;
        (mantissa << shift) + ((1u64 << shift) >> 1)
    }

    #[inline]
    pub fn record_ns(&mut self, ns: u64) {
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
    }

    #[inline]
    pub fn record(&mut self, d: Duration) {
        self.record_ns(d.as_nanos().min(u64::MAX as u128) as u64);
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
    }

    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
    }

    /// The value at quantile `q` (0..=1), or None if nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Self::value(index));
            }
        }
        None
    }
}
