//! Latency histograms: `hdrhistogram` with fixed bounds, 1 ns to 60 s at 3 significant digits (a
//! reported percentile is within 0.1% of the true value).
//!
//! All memory is allocated by `Hist::new`, before any timed region: auto-resize is off and
//! values are recorded with `saturating_record` (anything above 60 s counts as 60 s), so
//! recording, merging, clearing and reading quantiles never allocate.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Lowest discernible value, in nanoseconds.
const LOW_NS: u64 = 1;
/// Highest trackable value, in nanoseconds (larger values are clamped to it).
const HIGH_NS: u64 = 60_000_000_000;
/// Significant decimal digits kept.
const SIGFIG: u8 = 3;

/// Latency counts in nanoseconds.
pub struct Hist {
    h: Histogram<u64>,
}

impl Hist {
    pub fn new() -> Box<Hist> {
        let h = Histogram::new_with_bounds(LOW_NS, HIGH_NS, SIGFIG).expect("histogram bounds");
        debug_assert!(!h.is_auto_resize());
        Box::new(Hist { h })
    }

    #[inline]
    pub fn record_ns(&mut self, ns: u64) {
        self.h.saturating_record(ns);
    }

    #[inline]
    pub fn record(&mut self, d: Duration) {
        self.record_ns(d.as_nanos().min(u64::MAX as u128) as u64);
    }

    pub fn total(&self) -> u64 {
        self.h.len()
    }

    pub fn merge(&mut self, other: &Hist) {
        // Same bounds on both sides: the counts are added in place, never resized.
        self.h.add(&other.h).expect("histograms of the same bounds");
    }

    pub fn clear(&mut self) {
        self.h.reset();
    }

    /// The value at quantile `q` (0..=1), or None if nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.h.is_empty() {
            return None;
        }
        Some(self.h.value_at_quantile(q))
    }
}
