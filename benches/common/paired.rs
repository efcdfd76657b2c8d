//! Rows measured side by side (workloads `rt_send_vectored_*`, `rt_write_at_vectored_4k`,
//! `rt_sync_4k`, `rt_lane_nop`): each [`Case`] is a set of variants of one operation on one loop
//! (or two), variant 0 being the default path. `bench_matrix` calibrates each variant, then runs
//! them in turn, round after round (the order rotating), and reports each variant's median with
//! the median, over the rounds, of its ops/s over the baseline's in the same round: on a noisy
//! machine a ratio of neighbours in time is steadier than a ratio of medians.
//!
//! - `rt_send_vectored_64`, `rt_send_vectored_16k` (`vectored.rs`): a message of two parts (2 x
//!   32 B, 2 x 8 KiB) over a Unix socket pair, received with one `recv` on the other end: one
//!   `send` of a contiguous buffer the parts are copied into (the copy is timed) against
//!   `send_vectored` of the two parts and two `send`s.
//! - `rt_write_at_vectored_4k` (`vectored.rs`): 2 x 2 KiB at a random 4 KiB block of a 4 MiB file
//!   in the page cache: one `write_at` of a copy against `write_at_vectored` and two `write_at`s.
//! - `rt_sync_4k` (`vectored.rs`): a 4 KiB `write_at` over the same block, then `sync` against
//!   `sync_data`, on the filesystem of the read_at file.
//! - `rt_lane_nop` at 1 and 64 outstanding (`lanes.rs`): nops from one producer thread through
//!   the shared submission ring of a loop without lanes, through a registered `Lane`, and through
//!   the shared ring of the loop that has the lane registered.
//! - `ring_setup_nop` at 1 and 64 outstanding, `ring_setup_nop_loop_thread` at 1 (`setup.rs`):
//!   the ring setup features (`no_sqarray`, `coop_taskrun`, `registered_ring`) on, each off, and
//!   all off; `ring_setup_enter@1`: one `io_uring_enter` (submit a nop and wait for it) on a
//!   bare ring, by descriptor and by registered index.
//! - `exec_nop` at 1 and 64 outstanding, `exec_read_at_4k_hot` at 1 and 32 (`parking.rs`):
//!   `.wait()` (at 1) and the harness executor against `futures::executor::block_on` and a tokio
//!   multi-thread runtime driving the same futures on one loop.
//!
//! Everything is built before the timed region; the rows report, per op, the loop's
//! `io_uring_enter` calls, eventfd wake-ups and SQEs (`Handle::metrics()` deltas) and the
//! process's voluntary and involuntary context switches.

use static_uring::Metrics;

use super::{default_spin, Env, Sample};

/// A set of variants measured side by side; variant 0 is the baseline.
pub trait Group {
    /// Performs `ops` operations of `variant` and measures them.
    fn run(&mut self, variant: usize, ops: u64) -> Sample;
    /// Constant JSON fields of every row of the group (`, "key": value` ...), e.g. the
    /// filesystem a file lives on.
    fn extra(&self) -> String {
        String::new()
    }
}

/// Bytes per part of the vectored send rows.
pub const SEND_PARTS: [usize; 2] = [32, 8 * 1024];
/// Bytes per part of the vectored write row (two parts: one 4 KiB block).
pub const WRITE_PART: usize = 2 * 1024;
/// The parking-executor groups: (read_at, outstanding).
pub const PARKING: [(bool, usize); 4] = [(false, 1), (false, 64), (true, 1), (true, 32)];
/// Nops outstanding in the lane rows.
pub const LANE_DEPTHS: [usize; 2] = [1, 64];

/// One group of rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// A message of two `part`-byte parts over a Unix socket pair.
    SendVectored { part: usize },
    /// Two 2 KiB parts at a 4 KiB block of a file in the page cache.
    WriteVectored,
    /// A 4 KiB rewrite of one block, then fsync or fdatasync.
    Sync,
    /// Nops from one producer, `depth` outstanding.
    Lane { depth: usize },
    /// Nops (`read` false) or 4 KiB reads from the page cache driven by parking executors
    /// (`parking.rs`).
    Parking { read: bool, depth: usize },
    /// Nops with the ring setup features on and off (`setup.rs`): from the benchmark thread at
    /// `depth`, or in loop-thread mode one at a time (`local`).
    Setup { depth: usize, local: bool },
    /// One `io_uring_enter` alone, by descriptor and by registered index (`setup.rs`).
    SetupEnter,
}

impl Case {
    /// Every group, in report order.
    pub fn all() -> Vec<Case> {
        let mut cases: Vec<Case> = SEND_PARTS
            .iter()
            .map(|&part| Case::SendVectored { part })
            .collect();
        cases.push(Case::WriteVectored);
        cases.push(Case::Sync);
        cases.extend(LANE_DEPTHS.iter().map(|&depth| Case::Lane { depth }));
        for (read, depth) in PARKING {
            cases.push(Case::Parking { read, depth });
        }
        cases.push(Case::Setup {
            depth: 1,
            local: false,
        });
        cases.push(Case::Setup {
            depth: 64,
            local: false,
        });
        cases.push(Case::Setup {
            depth: 1,
            local: true,
        });
        cases.push(Case::SetupEnter);
        cases
    }

    /// The workload name in the JSON lines.
    pub fn name(self) -> &'static str {
        match self {
            Case::SendVectored { part: 32 } => "rt_send_vectored_64",
            Case::SendVectored { .. } => "rt_send_vectored_16k",
            Case::WriteVectored => "rt_write_at_vectored_4k",
            Case::Sync => "rt_sync_4k",
            Case::Lane { .. } => "rt_lane_nop",
            Case::Parking { read: false, .. } => "exec_nop",
            Case::Parking { read: true, .. } => "exec_read_at_4k_hot",
            Case::Setup { local: false, .. } => "ring_setup_nop",
            Case::Setup { local: true, .. } => "ring_setup_nop_loop_thread",
            Case::SetupEnter => "ring_setup_enter",
        }
    }

    pub fn outstanding(self) -> usize {
        match self {
            Case::Lane { depth } | Case::Parking { depth, .. } | Case::Setup { depth, .. } => depth,
            _ => 1,
        }
    }

    /// `name@outstanding`, for `--filter`.
    pub fn id(self) -> String {
        format!("{}@{}", self.name(), self.outstanding())
    }

    /// The variants (the `variant` field), the baseline first.
    pub fn variants(self) -> &'static [&'static str] {
        match self {
            Case::SendVectored { .. } => &["copy + send", "send_vectored", "two sends"],
            Case::WriteVectored => &["copy + write_at", "write_at_vectored", "two write_ats"],
            Case::Sync => &["write_at + sync", "write_at + sync_data"],
            Case::Lane { .. } => &["shared ring", "lane", "shared ring, lane registered"],
            Case::Parking { depth, .. } => super::parking::variants(depth),
            Case::Setup { .. } => &super::setup::VARIANTS,
            Case::SetupEnter => &super::setup::ENTER_VARIANTS,
        }
    }

    /// The peer name of `variant` in the JSON lines (for `--peer`).
    pub fn peer(self, variant: usize) -> String {
        format!("static-uring [{}]", self.variants()[variant])
    }

    /// The policy field: the loop's config and the placement.
    pub fn policy(self) -> String {
        let spin = default_spin();
        let spin = if spin.is_zero() {
            "0".to_string()
        } else {
            format!("{}us", spin.as_micros())
        };
        format!("idle_spin={spin}; placement left to the scheduler")
    }

    /// Builds the group, or says why it cannot run here.
    pub fn make(self, env: &Env) -> Result<Box<dyn Group>, String> {
        match self {
            Case::SendVectored { part } => super::vectored::send(part),
            Case::WriteVectored => super::vectored::write(env),
            Case::Sync => super::vectored::sync(env),
            Case::Lane { depth } => super::lanes::make(depth),
            Case::Parking { read, depth } => super::parking::make(read, depth, env),
            Case::Setup { depth, local } => super::setup::make(depth, local),
            Case::SetupEnter => super::setup::make_enter(),
        }
    }
}

/// The loop's counters and the process's context switches at one instant.
#[derive(Clone, Copy)]
pub struct Counters {
    metrics: Metrics,
    rusage: (u64, u64),
}

impl Counters {
    pub fn now(metrics: Metrics) -> Counters {
        Counters {
            metrics,
            rusage: super::rt::rusage(),
        }
    }

    /// The loop's counters at that instant.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Adds the per-op deltas since `self` to `sample.extra`.
    pub fn report(self, after: Counters, sample: &mut Sample) {
        let per_op = |a: u64, b: u64| b.saturating_sub(a) as f64 / sample.ops.max(1) as f64;
        let (m0, m1) = (&self.metrics, &after.metrics);
        sample.extra += &format!(
            concat!(
                ", \"enters_per_op\": {:.4}, \"wakeups_per_op\": {:.4}, ",
                "\"submitted_per_op\": {:.4}, \"vcsw_per_op\": {:.4}, \"ivcsw_per_op\": {:.4}"
            ),
            per_op(m0.enters, m1.enters),
            per_op(m0.wakeups, m1.wakeups),
            per_op(m0.submitted, m1.submitted),
            per_op(self.rusage.0, after.rusage.0),
            per_op(self.rusage.1, after.rusage.1),
        );
    }
}

/// The filesystem `path` lives on, from /proc/self/mounts (the longest mount point that is a
/// prefix of it): `"ext4 on /dev/vda (/)"`.
pub fn filesystem(path: &std::path::Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 {
            continue;
        }
        let (source, point, fstype) = (fields[0], fields[1].replace("\\040", " "), fields[2]);
        if path.starts_with(&point) && best.as_ref().is_none_or(|(len, _)| point.len() >= *len) {
            best = Some((point.len(), format!("{fstype} on {source} ({point})")));
        }
    }
    best.map_or_else(|| "unknown".to_string(), |(_, fs)| fs)
}
