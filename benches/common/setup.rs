//! The ring setup features (`Config::no_sqarray`, `coop_taskrun`, `registered_ring`) on (the
//! default) and off, side by side (see `paired.rs`): nops at 1 outstanding (`.wait()`) and at 64
//! (64 tasks on the benchmark's executor, as the `nop@64` rows) from the benchmark thread to a
//! loop on its own thread, and, for the cost of one `io_uring_enter`, nops one at a time in
//! loop-thread mode (`block_on`, no idle spin: each nop is one enter that submits it and waits
//! for it), where each row also reports `ns_per_enter` (its time over its enters).
//!
//! The cross-thread rows run one loop per variant, all started before any timed region (the
//! idle ones sleep); the loop-thread rows build a fresh loop per run, outside the timed region.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use static_uring::{Config, RingFeatures};

use super::alloc::AllocCount;
use super::hist::Hist;
use super::paired::{Counters, Group};
use super::su::{SuIo, H};
use super::tasks::{take, Started};
use super::{default_spin, exec, timed, Sample};

/// The variants, the default first: each switch off alone, then all three off.
pub const VARIANTS: [&str; 5] = [
    "setup defaults",
    "no_sqarray off",
    "coop_taskrun off",
    "registered_ring off",
    "all three off",
];

/// The config of `variant` with idle spin `spin`.
fn config(variant: usize, spin: Duration) -> Config {
    let mut config = Config {
        idle_spin: spin,
        ..Config::default()
    };
    match variant {
        1 => config.no_sqarray = false,
        2 => config.coop_taskrun = false,
        3 => config.registered_ring = false,
        4 => {
            config.no_sqarray = false;
            config.coop_taskrun = false;
            config.registered_ring = false;
        }
        _ => {}
    }
    config
}

/// Cross-thread nops, one loop per variant.
struct CrossGroup {
    loops: Vec<SuIo>,
    depth: usize,
    spin: Duration,
    /// Stop the loop threads; dropped last.
    _guards: Vec<Box<dyn Send>>,
}

/// Loop-thread nops, one at a time: a fresh loop per run.
struct LocalGroup;

/// Builds the group: cross-thread at `depth`, or the loop-thread enter-cost rows (`local`).
pub fn make(depth: usize, local: bool) -> Result<Box<dyn Group>, String> {
    if local {
        return Ok(Box::new(LocalGroup));
    }
    let spin = default_spin();
    let mut loops = Vec::new();
    let mut guards = Vec::new();
    for variant in 0..VARIANTS.len() {
        let (handle, event_loop) = static_uring::new::<256, 128, 1024>(config(variant, spin))
            .map_err(|e| format!("new failed: {e}"))?;
        let Started { io, guard } = SuIo::spawn(handle, event_loop)?;
        loops.push(io);
        guards.push(guard);
    }
    exec::prepare();
    Ok(Box::new(CrossGroup {
        loops,
        depth,
        spin,
        _guards: guards,
    }))
}

async fn nop_task(h: &H, budget: &Cell<u64>, hist: &RefCell<&mut Hist>) {
    while take(budget) {
        let start = Instant::now();
        h.nop().await.expect("nop");
        hist.borrow_mut().record(start.elapsed());
    }
}

/// Adds the per-op counters, the nanoseconds per enter and the features in use to the sample.
fn report(features: RingFeatures, before: Counters, after: Counters, sample: &mut Sample) {
    before.report(after, sample);
    let enters = after.metrics().enters - before.metrics().enters;
    sample.extra += &format!(
        concat!(
            ", \"ns_per_enter\": {:.1}, \"no_sqarray\": {}, \"coop_taskrun\": {}, ",
            "\"registered_ring\": {}"
        ),
        sample.elapsed.as_nanos() as f64 / enters.max(1) as f64,
        features.no_sqarray,
        features.coop_taskrun,
        features.registered_ring,
    );
}

impl Group for CrossGroup {
    fn run(&mut self, variant: usize, ops: u64) -> Sample {
        let mut hist = Hist::new();
        let h = &self.loops[variant].0;
        let before = Counters::now(h.metrics());
        let (elapsed, alloc) = if self.depth == 1 {
            let ((), elapsed, alloc) = timed(|| {
                for _ in 0..ops {
                    let start = Instant::now();
                    h.nop().wait().expect("nop");
                    hist.record(start.elapsed());
                }
            });
            (elapsed, alloc)
        } else {
            let budget = Cell::new(ops);
            let hists = RefCell::new(&mut *hist);
            let tasks: Vec<_> = (0..self.depth)
                .map(|_| nop_task(h, &budget, &hists))
                .collect();
            let mut tasks = Box::into_pin(tasks.into_boxed_slice());
            let ((), elapsed, alloc) = timed(|| exec::run(tasks.as_mut(), self.spin));
            (elapsed, alloc)
        };
        let after = Counters::now(h.metrics());
        let mut sample = Sample::new(ops, elapsed, alloc, hist);
        report(h.ring_features(), before, after, &mut sample);
        sample
    }
}

impl Group for LocalGroup {
    fn run(&mut self, variant: usize, ops: u64) -> Sample {
        let (handle, event_loop) =
            static_uring::new::<256, 128, 1024>(config(variant, Duration::ZERO)).expect("loop");
        let hist = Hist::new();
        let (before, after, elapsed, alloc, features, hist) = event_loop
            .block_on(async move {
                let mut hist = hist;
                // Warm: the loop's first pass and the first enter are not timed.
                handle.nop().await.expect("nop");
                let before = Counters::now(handle.metrics());
                let alloc = AllocCount::now();
                let start = Instant::now();
                for _ in 0..ops {
                    let at = Instant::now();
                    handle.nop().await.expect("nop");
                    hist.record(at.elapsed());
                }
                let elapsed = start.elapsed();
                let alloc = AllocCount::now().since(alloc);
                let after = Counters::now(handle.metrics());
                (before, after, elapsed, alloc, handle.ring_features(), hist)
            })
            .expect("block_on");
        let mut sample = Sample::new(ops, elapsed, alloc, hist);
        report(features, before, after, &mut sample);
        sample
    }
}

/// The raw enter rows' variants: the ring named by its descriptor, then by its registered index,
/// in a process of one thread, then the same with a second thread alive (parked): the kernel
/// then counts a reference on the descriptor's file at each enter by descriptor (its file table
/// is shared), as in any process where a loop serves other threads.
pub const ENTER_VARIANTS: [&str; 4] = [
    "descriptor",
    "registered ring",
    "descriptor, 2 threads",
    "registered ring, 2 threads",
];

/// The cost of one `io_uring_enter` alone, without the loop: per op, one nop pushed and one
/// enter that submits it and waits for it (`to_submit = 1, min_complete = 1, GETEVENTS`), its
/// CQE reaped, on one ring of the io-uring crate (`NO_SQARRAY | COOP_TASKRUN | TASKRUN_FLAG`,
/// as the loop's default) entered by its descriptor or, registered with this thread
/// (`IORING_REGISTER_RING_FDS`), by its index with `IORING_ENTER_REGISTERED_RING`.
struct EnterGroup {
    ring: io_uring::IoUring,
    /// The index `IORING_REGISTER_RING_FDS` gave the ring on this (the benchmark's) thread.
    index: u32,
}

/// Builds the raw enter rows' ring and registers it with the calling thread.
pub fn make_enter() -> Result<Box<dyn Group>, String> {
    let ring = io_uring::IoUring::builder()
        .setup_no_sqarray()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .build(8)
        .map_err(|e| format!("io_uring setup failed: {e}"))?;
    let mut update = [0u64; 2];
    // offset (u32) = -1: any free index; resv (u32) = 0; data (u64) = the descriptor.
    update[0] = u32::MAX as u64;
    update[1] = std::os::fd::AsRawFd::as_raw_fd(&ring) as u64;
    // SAFETY: `update` is an io_uring_rsrc_update (16 bytes) the kernel reads and writes during
    // the call only.
    let registered = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            std::os::fd::AsRawFd::as_raw_fd(&ring),
            20, // IORING_REGISTER_RING_FDS
            update.as_mut_ptr(),
            1,
        )
    };
    if registered != 1 {
        return Err(format!(
            "IORING_REGISTER_RING_FDS failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(Box::new(EnterGroup {
        ring,
        index: update[0] as u32,
    }))
}

impl Group for EnterGroup {
    fn run(&mut self, variant: usize, ops: u64) -> Sample {
        let mut hist = Hist::new();
        let (fd, flags) = match variant % 2 {
            0 => (std::os::fd::AsRawFd::as_raw_fd(&self.ring), 1u32), // GETEVENTS
            _ => (self.index as i32, 1u32 | (1 << 4)),                // | REGISTERED_RING
        };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let second = (variant >= 2).then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    std::thread::park();
                }
            })
        });
        let nop = io_uring::opcode::Nop::new().build().user_data(7);
        let ring = &mut self.ring;
        let ((), elapsed, alloc) = timed(|| {
            for _ in 0..ops {
                let start = Instant::now();
                // SAFETY: a nop names no memory.
                unsafe { ring.submission().push(&nop).expect("room") };
                // SAFETY: `fd` names this ring (its descriptor, or its index registered on this
                // thread, which `Group::run` runs on); no argument.
                let entered = unsafe {
                    libc::syscall(
                        libc::SYS_io_uring_enter,
                        fd,
                        1u32,
                        1u32,
                        flags,
                        std::ptr::null::<libc::c_void>(),
                        0usize,
                    )
                };
                assert_eq!(entered, 1, "{}", std::io::Error::last_os_error());
                assert!(ring.completion().next().is_some(), "the nop's CQE");
                hist.record(start.elapsed());
            }
        });
        if let Some(second) = second {
            stop.store(true, std::sync::atomic::Ordering::Release);
            second.thread().unpark();
            second.join().expect("the parked thread");
        }
        let mut sample = Sample::new(ops, elapsed, alloc, hist);
        sample.extra += &format!(
            ", \"ns_per_enter\": {:.1}",
            elapsed.as_nanos() as f64 / ops.max(1) as f64
        );
        sample
    }
}
