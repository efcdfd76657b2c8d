//! Single-producer lanes against the shared submission ring (see `paired.rs`): nops from one
//! producer thread (the benchmark's) at 1 outstanding (`.wait()`) and at 64 (64 tasks on the
//! benchmark's executor, as the `nop@64` rows).
//!
//! Two loops with the default config run side by side, both started before any timed region:
//! one without lanes, whose shared ring is the baseline (what a caller gets without lanes), and
//! one with a `Lane` registered, used through the lane (`LaneHandle::submit`) and, as a third
//! row, through its shared ring (what polling a lane costs the loop). The idle loop sleeps.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use static_uring::{Config, Lane, LaneHandle};

use super::hist::Hist;
use super::paired::{Counters, Group};
use super::su::{SuIo, H};
use super::tasks::{take, Started};
use super::{default_spin, exec, timed, Sample};

/// The lane of the 1-outstanding rows (one per group: a lane is bound to one loop at a time).
static LANE_1: Lane<256> = Lane::new();
/// The lane of the 64-outstanding rows.
static LANE_64: Lane<256> = Lane::new();

/// Variant 0: the shared ring of the loop without lanes.
const SHARED: usize = 0;
/// Variant 1: the lane.
const LANE: usize = 1;

struct LaneGroup {
    /// The producer's end of the lane (the benchmark thread's); dropped first.
    lane: LaneHandle<256, 128, 1024>,
    /// The loop without lanes.
    plain: SuIo,
    /// The loop with the lane registered.
    laned: SuIo,
    depth: usize,
    spin: Duration,
    /// Stop the loop threads; dropped last.
    _guards: [Box<dyn Send>; 2],
}

pub fn make(depth: usize) -> Result<Box<dyn Group>, String> {
    let lane_static: &'static Lane<256> = match depth {
        1 => &LANE_1,
        _ => &LANE_64,
    };
    let spin = default_spin();
    let config = Config {
        idle_spin: spin,
        ..Config::default()
    };
    let (handle, event_loop) = static_uring::new::<256, 128, 1024>(config.clone())
        .map_err(|e| format!("new failed: {e}"))?;
    let plain = SuIo::spawn(handle, event_loop)?;
    let (handle, mut event_loop) =
        static_uring::new::<256, 128, 1024>(config).map_err(|e| format!("new failed: {e}"))?;
    event_loop
        .register_lane(lane_static)
        .expect("the lane is free");
    let laned = SuIo::spawn(handle, event_loop)?;
    let lane = laned
        .io
        .0
        .lane(lane_static)
        .map_err(|e| format!("Handle::lane failed: {e}"))?;
    exec::prepare();
    let Started {
        io: plain,
        guard: plain_guard,
    } = plain;
    let Started {
        io: laned,
        guard: laned_guard,
    } = laned;
    Ok(Box::new(LaneGroup {
        lane,
        plain,
        laned,
        depth,
        spin,
        _guards: [plain_guard, laned_guard],
    }))
}

async fn nop_task(
    h: &H,
    lane: Option<&LaneHandle<256, 128, 1024>>,
    budget: &Cell<u64>,
    hist: &RefCell<&mut Hist>,
) {
    while take(budget) {
        let start = Instant::now();
        match lane {
            Some(lane) => lane.submit(h.nop()).await,
            None => h.nop().await,
        }
        .expect("nop");
        hist.borrow_mut().record(start.elapsed());
    }
}

impl Group for LaneGroup {
    fn run(&mut self, variant: usize, ops: u64) -> Sample {
        let mut hist = Hist::new();
        let (h, lane) = match variant {
            SHARED => (&self.plain.0, None),
            LANE => (&self.laned.0, Some(&self.lane)),
            _ => (&self.laned.0, None),
        };
        let before = Counters::now(h.metrics());
        let (elapsed, alloc) = if self.depth == 1 {
            let ((), elapsed, alloc) = timed(|| {
                for _ in 0..ops {
                    let start = Instant::now();
                    match lane {
                        Some(lane) => lane.submit(h.nop()).wait(),
                        None => h.nop().wait(),
                    }
                    .expect("nop");
                    hist.record(start.elapsed());
                }
            });
            (elapsed, alloc)
        } else {
            let budget = Cell::new(ops);
            let hists = RefCell::new(&mut *hist);
            let tasks: Vec<_> = (0..self.depth)
                .map(|_| nop_task(h, lane, &budget, &hists))
                .collect();
            let mut tasks = Box::into_pin(tasks.into_boxed_slice());
            let ((), elapsed, alloc) = timed(|| exec::run(tasks.as_mut(), self.spin));
            (elapsed, alloc)
        };
        let after = Counters::now(h.metrics());
        let mut sample = Sample::new(ops, elapsed, alloc, hist);
        before.report(after, &mut sample);
        sample
    }
}
