//! The real-time toolkit rows (workloads `rt_*`): each setting of the toolkit measured against
//! the default path, with the loop's own counters per op beside the latency.
//!
//! - `rt_latency_nop@1`, `rt_latency_read_at_4k_hot@1`: 1 outstanding (`.wait()`), the loop
//!   pinned to CPU 1 and the caller to CPU 0, under four idle policies: blocking
//!   (`idle_spin = 0`), spin (the default 50 us), busy-poll (`Config::busy_poll`: the loop
//!   never sleeps; `idle_spin` = 1 h for the caller's `.wait()`) and SQPOLL (`sqpoll_idle` = 1 s, plus the default spin), and a
//!   fifth: SQPOLL with `idle_spin = 0`, where only the kernel's poller spins.
//! - `rt_read_at_32_hot@32`, `rt_read_at_32_direct@32`: 4 KiB at random offsets, 32 outstanding,
//!   same placement, default spin: plain buffers and descriptor, a registered file
//!   (`EventLoop::register_file`), registered buffers (a `BufPool<32, 4096>` given to
//!   `EventLoop::register_buffers`), both.
//! - `rt_sqpoll_nop@1`, `rt_sqpoll_nop@64`: nops with the default config against the same plus
//!   SQPOLL (and SQPOLL with `idle_spin = 0`), placement left to the scheduler: how many
//!   `io_uring_enter` calls an op costs.
//!
//! Everything (loop, registrations, pool, buffers, tasks) is built before the timed region;
//! besides the sample's own fields each row reports `submitted`, `fixed_files` and
//! `fixed_buffers` per op from the loop's metrics (they show which path really ran) and the
//! process's voluntary and involuntary context switches per op (`getrusage`: sleeps and
//! preemptions, loop and caller together).

use std::time::Duration;

use static_uring::{BufPool, Config, Fd, IoBufMut, MetricsReader};

use super::su::SuIo;
use super::tasks::IoBench;
use super::{default_spin, leak_aligned, Bench, Env, Sample, Workload, BLOCK};

/// The loop thread's CPU in the pinned rows.
pub const LOOP_CPU: usize = 1;
/// The caller's (the benchmark thread's) CPU in the pinned rows.
pub const CALLER_CPU: usize = 0;
/// The busy-poll rows' `idle_spin`, the caller's `.wait()` spin (the loop has
/// `Config::busy_poll`): it never runs out while requests keep coming.
pub const BUSY_POLL: Duration = Duration::from_secs(3600);
/// `sqpoll_idle` of the SQPOLL rows.
pub const SQPOLL_IDLE: Duration = Duration::from_secs(1);
/// Reads outstanding in the registered-file and -buffer rows (and buffers in the pool).
pub const READ_DEPTH: usize = 32;

/// How the loop and `.wait()` wait for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `idle_spin = 0`: sleep in the kernel (loop) or park (caller) at once.
    Blocking,
    /// `idle_spin` = the default (50 us), then sleep.
    Spin,
    /// `Config::busy_poll`: the loop never sleeps; `idle_spin` = [`BUSY_POLL`] for `.wait()`.
    BusyPoll,
    /// `sqpoll_idle` = [`SQPOLL_IDLE`] plus the default spin.
    Sqpoll,
    /// `sqpoll_idle` = [`SQPOLL_IDLE`] with `idle_spin = 0`: the kernel's poller is the only
    /// thread that spins (a fifth row: on 2 CPUs the poller, the loop and the caller cannot all
    /// spin on a core of their own).
    SqpollBlocking,
}

impl Policy {
    pub const ALL: [Policy; 5] = [
        Policy::Blocking,
        Policy::Spin,
        Policy::BusyPoll,
        Policy::Sqpoll,
        Policy::SqpollBlocking,
    ];

    fn label(self) -> &'static str {
        match self {
            Policy::Blocking => "blocking",
            Policy::Spin => "spin",
            Policy::BusyPoll => "busy-poll",
            Policy::Sqpoll => "sqpoll + spin",
            Policy::SqpollBlocking => "sqpoll, no spin",
        }
    }

    fn spin(self) -> Duration {
        match self {
            Policy::Blocking | Policy::SqpollBlocking => Duration::ZERO,
            Policy::Spin | Policy::Sqpoll => default_spin(),
            Policy::BusyPoll => BUSY_POLL,
        }
    }

    fn sqpoll(self) -> Option<Duration> {
        matches!(self, Policy::Sqpoll | Policy::SqpollBlocking).then_some(SQPOLL_IDLE)
    }
}

/// One `rt_*` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// 1 outstanding on a pinned loop: a read_at 4 KiB from the page cache if `read`, else a nop.
    Latency { read: bool, policy: Policy },
    /// read_at 4 KiB, [`READ_DEPTH`] outstanding, pinned loop, default spin.
    ReadAt32 {
        direct: bool,
        fixed_file: bool,
        fixed_bufs: bool,
    },
    /// Nops at `depth` outstanding, default placement: the default config
    /// ([`Policy::Spin`]), [`Policy::Sqpoll`] or [`Policy::SqpollBlocking`].
    Sqpoll { depth: usize, policy: Policy },
}

impl Case {
    /// Every row, in report order.
    pub fn all() -> Vec<Case> {
        let mut cases = Vec::new();
        for read in [false, true] {
            for policy in Policy::ALL {
                cases.push(Case::Latency { read, policy });
            }
        }
        for direct in [false, true] {
            for (fixed_file, fixed_bufs) in
                [(false, false), (true, false), (false, true), (true, true)]
            {
                cases.push(Case::ReadAt32 {
                    direct,
                    fixed_file,
                    fixed_bufs,
                });
            }
        }
        for depth in [1, 64] {
            for policy in [Policy::Spin, Policy::Sqpoll, Policy::SqpollBlocking] {
                cases.push(Case::Sqpoll { depth, policy });
            }
        }
        cases
    }

    /// The workload name in the JSON lines.
    pub fn name(self) -> &'static str {
        match self {
            Case::Latency { read: false, .. } => "rt_latency_nop",
            Case::Latency { read: true, .. } => "rt_latency_read_at_4k_hot",
            Case::ReadAt32 { direct: false, .. } => "rt_read_at_32_hot",
            Case::ReadAt32 { direct: true, .. } => "rt_read_at_32_direct",
            Case::Sqpoll { .. } => "rt_sqpoll_nop",
        }
    }

    pub fn outstanding(self) -> usize {
        match self {
            Case::Latency { .. } => 1,
            Case::ReadAt32 { .. } => READ_DEPTH,
            Case::Sqpoll { depth, .. } => depth,
        }
    }

    /// `name@outstanding`, for `--filter`.
    pub fn id(self) -> String {
        format!("{}@{}", self.name(), self.outstanding())
    }

    /// What this row changes against the default path (the `variant` field).
    pub fn variant(self) -> &'static str {
        match self {
            Case::Latency { policy, .. } => policy.label(),
            Case::ReadAt32 {
                fixed_file,
                fixed_bufs,
                ..
            } => match (fixed_file, fixed_bufs) {
                (false, false) => "default",
                (true, false) => "registered file",
                (false, true) => "registered buffers",
                (true, true) => "registered file + buffers",
            },
            Case::Sqpoll {
                policy: Policy::Spin,
                ..
            } => "default",
            Case::Sqpoll { policy, .. } => policy.label(),
        }
    }

    /// The peer name in the JSON lines (for `--peer`).
    pub fn peer(self) -> String {
        format!("static-uring [{}]", self.variant())
    }

    /// The policy field: the config and the placement.
    pub fn policy(self) -> String {
        let config = self.config();
        let mut text = format!("idle_spin={}", spin_text(config.idle_spin));
        if config.busy_poll {
            text = format!("busy_poll, {text}");
        }
        if let Some(idle) = config.sqpoll_idle {
            text = format!("sqpoll_idle={}, {text}", spin_text(idle));
        }
        if self.pinned() {
            text += &format!("; loop on CPU {LOOP_CPU}, caller on CPU {CALLER_CPU}");
        } else {
            text += "; placement left to the scheduler";
        }
        text
    }

    fn pinned(self) -> bool {
        !matches!(self, Case::Sqpoll { .. })
    }

    fn config(self) -> Config {
        let policy = match self {
            Case::Latency { policy, .. } | Case::Sqpoll { policy, .. } => policy,
            Case::ReadAt32 { .. } => Policy::Spin,
        };
        Config {
            idle_spin: policy.spin(),
            busy_poll: policy == Policy::BusyPoll,
            sqpoll_idle: policy.sqpoll(),
            cpu: self.pinned().then_some(LOOP_CPU),
            ..Config::default()
        }
    }

    /// The workload the row runs through [`IoBench`].
    fn workload(self) -> Workload {
        match self {
            Case::Latency { read: false, .. } => Workload::Nop {
                producers: 1,
                depth: 1,
            },
            Case::Latency { read: true, .. } => Workload::ReadAt {
                depth: 1,
                direct: false,
            },
            Case::ReadAt32 { direct, .. } => Workload::ReadAt {
                depth: READ_DEPTH,
                direct,
            },
            Case::Sqpoll { depth, .. } => Workload::Nop {
                producers: 1,
                depth,
            },
        }
    }
}

fn spin_text(d: Duration) -> String {
    if d.is_zero() {
        "0".to_string()
    } else if d.as_nanos().is_multiple_of(1_000_000_000) {
        format!("{}s", d.as_secs())
    } else if d.as_nanos().is_multiple_of(1000) {
        format!("{}us", d.as_micros())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

/// A row set up: the loop, its counters, and the caller's pin (undone when dropped).
struct RtBench {
    /// Dropped first: stops and joins the loop thread.
    inner: IoBench<SuIo>,
    metrics: MetricsReader<256, 128, 1024>,
    /// Dropped last: gives the benchmark thread its affinity back.
    _pin: Option<CallerPin>,
}

/// Builds row `case`, or says why it cannot run here.
pub fn make(case: Case, env: &Env) -> Result<Box<dyn Bench>, String> {
    let workload = case.workload();
    if let Workload::ReadAt { direct: true, .. } = workload {
        env.direct.clone()?;
    }
    let config = case.config();
    let spin = config.idle_spin;
    // The ring before the caller's pin: SQPOLL's kernel thread inherits the CPU mask of the
    // thread that creates the ring, and pinned to the caller's CPU it would share that core
    // with the caller (what an application creating its loop on an unpinned thread avoids).
    let (handle, mut event_loop) =
        static_uring::new::<256, 128, 1024>(config).map_err(|e| format!("new failed: {e}"))?;
    let pin = if case.pinned() {
        Some(CallerPin::pin(CALLER_CPU)?)
    } else {
        None
    };
    let metrics = event_loop.metrics_reader();
    let read_setup = match case {
        Case::ReadAt32 {
            direct,
            fixed_file,
            fixed_bufs,
        } => {
            let file = env.open(direct);
            let fd = if fixed_file {
                event_loop
                    .register_file(file)
                    .map_err(|e| format!("register_file failed: {e}"))?
            } else {
                Fd::from(file)
            };
            let bufs: Vec<IoBufMut> = if fixed_bufs {
                let pool = BufPool::<READ_DEPTH, BLOCK>::allocate();
                event_loop
                    .register_buffers(pool)
                    .map_err(|e| format!("register_buffers failed: {e}"))?;
                (0..READ_DEPTH)
                    .map(|_| pool.take().expect("a pool buffer per read"))
                    .collect()
            } else {
                (0..READ_DEPTH)
                    .map(|_| IoBufMut::from(leak_aligned(BLOCK)))
                    .collect()
            };
            Some((fd, bufs))
        }
        _ => None,
    };
    let started = SuIo::spawn(handle, event_loop)?;
    let inner = IoBench::with_read_at(started, workload, spin, env, read_setup);
    Ok(Box::new(RtBench {
        inner,
        metrics,
        _pin: pin,
    }))
}

impl Bench for RtBench {
    fn run(&mut self, ops: u64) -> Sample {
        let (m0, r0) = (self.metrics.get(), rusage());
        let mut sample = self.inner.run(ops);
        let (m1, r1) = (self.metrics.get(), rusage());
        let per_op = |a: u64, b: u64| b.saturating_sub(a) as f64 / sample.ops.max(1) as f64;
        sample.extra += &format!(
            concat!(
                ", \"submitted_per_op\": {:.4}, \"fixed_files_per_op\": {:.4}, ",
                "\"fixed_buffers_per_op\": {:.4}, \"vcsw_per_op\": {:.4}, \"ivcsw_per_op\": {:.4}"
            ),
            per_op(m0.submitted, m1.submitted),
            per_op(m0.fixed_files, m1.fixed_files),
            per_op(m0.fixed_buffers, m1.fixed_buffers),
            per_op(r0.0, r1.0),
            per_op(r0.1, r1.1),
        );
        sample
    }
}

/// The process's (voluntary, involuntary) context switches so far, every thread included.
pub fn rusage() -> (u64, u64) {
    // SAFETY: `rusage` is plain data, filled by the kernel; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    (usage.ru_nvcsw as u64, usage.ru_nivcsw as u64)
}

/// The calling thread pinned to one CPU; its previous affinity comes back on drop.
pub(crate) struct CallerPin {
    before: libc::cpu_set_t,
}

impl CallerPin {
    pub(crate) fn pin(cpu: usize) -> Result<CallerPin, String> {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: cpu_set_t is plain data; both calls target the calling thread (pid 0) with a
        // set of the right size; CPU_SET gets an index below CPU_SETSIZE (checked first).
        unsafe {
            let mut before: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size, &mut before) != 0 {
                return Err(format!(
                    "sched_getaffinity failed: {}",
                    std::io::Error::last_os_error()
                ));
            }
            if cpu >= libc::CPU_SETSIZE as usize
                || !libc::CPU_ISSET(cpu, &before)
                || !libc::CPU_ISSET(LOOP_CPU, &before)
            {
                return Err(format!(
                    "needs CPUs {CALLER_CPU} and {LOOP_CPU} in this process's affinity"
                ));
            }
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, size, &set) != 0 {
                return Err(format!(
                    "pinning the caller to CPU {cpu} failed: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(CallerPin { before })
        }
    }
}

impl Drop for CallerPin {
    fn drop(&mut self) {
        // SAFETY: restores the set read in `pin`, on the same thread (benchmarks are built,
        // run and dropped on one thread).
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.before);
        }
    }
}
