//! Parking executors (workloads `exec_nop`, `exec_read_at_4k_hot` at 1 and at 32 or 64
//! outstanding, measured side by side by `paired.rs`): static-uring's futures driven by
//! `futures::executor::block_on` and by a tokio multi-thread runtime, against `.wait()` and the
//! harness's own executor (`exec.rs`, which spins for the loop's `idle_spin` before parking).
//!
//! One loop (default config, its own thread) serves every variant. Each variant runs `depth`
//! tasks (`tasks::nop_task` / `read_task`, the same futures as the `nop` and `read_at` rows):
//! - **.wait()** (1 outstanding only): `handle.nop().wait()` in a loop, as the `nop@1` row;
//! - **harness executor**: the tasks on `exec::run` (the `nop@64` rows' executor);
//! - **futures block_on**: `futures::executor::block_on(join_all(tasks))` on the bench thread
//!   (the `join_all` is built before the timed region);
//! - **tokio multi-thread**: one task spawned on a multi-thread runtime (one worker per CPU)
//!   that builds the same `join_all`, times it, and hands back the sample: the futures run on a
//!   tokio worker, which parks the tokio way when they are pending.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use static_uring::{Fd, IoBufMut};

use super::alloc::AllocCount;
use super::hist::Hist;
use super::paired::Group;
use super::su::SuIo;
use super::tasks::{nop_task, read_task, AsyncIo, IoBench, Started};
use super::{default_spin, exec, leak_aligned, timed, Bench, Env, Sample, Workload, BLOCK};

/// The executors, in variant order after `.wait()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Harness,
    Futures,
    Tokio,
}

/// The variants of a depth (the baseline first).
pub fn variants(depth: usize) -> &'static [&'static str] {
    if depth == 1 {
        &[
            ".wait()",
            "harness executor",
            "futures block_on",
            "tokio multi-thread",
        ]
    } else {
        &["harness executor", "futures block_on", "tokio multi-thread"]
    }
}

struct ParkingGroup {
    /// Dropped before the loop's guard.
    benches: Vec<Box<dyn Bench>>,
    _guard: Box<dyn Send>,
}

impl Group for ParkingGroup {
    fn run(&mut self, variant: usize, ops: u64) -> Sample {
        self.benches[variant].run(ops)
    }
}

/// Builds the group of `depth` nops (`read` false) or 4 KiB reads from the page cache.
pub fn make(read: bool, depth: usize, env: &Env) -> Result<Box<dyn Group>, String> {
    let spin = default_spin();
    let Started { io, guard } = SuIo::start(spin, false);
    exec::prepare();
    let workload = if read {
        Workload::ReadAt {
            depth,
            direct: false,
        }
    } else {
        Workload::Nop {
            producers: 1,
            depth,
        }
    };
    let mut benches: Vec<Box<dyn Bench>> = Vec::new();
    if depth == 1 {
        let started = Started {
            io: io.clone(),
            guard: Box::new(()),
        };
        benches.push(Box::new(IoBench::new(started, workload, spin, env)));
    }
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?,
    );
    for kind in [Kind::Harness, Kind::Futures, Kind::Tokio] {
        let file = read.then(|| io.fd(Arc::new(env.open(false))));
        let bufs = if read {
            (0..depth).map(|_| io.rbuf(leak_aligned(BLOCK))).collect()
        } else {
            Vec::new()
        };
        benches.push(Box::new(ExecBench {
            kind,
            io: io.clone(),
            depth,
            spin,
            file,
            bufs: Some(bufs),
            blocks: env.blocks(),
            seed: 1,
            rt: rt.clone(),
        }));
    }
    Ok(Box::new(ParkingGroup {
        benches,
        _guard: guard,
    }))
}

struct ExecBench {
    kind: Kind,
    io: SuIo,
    depth: usize,
    spin: Duration,
    file: Option<Fd>,
    /// One buffer per task (read_at); `None` only while a run has them.
    bufs: Option<Vec<IoBufMut>>,
    blocks: u64,
    seed: u64,
    rt: Arc<tokio::runtime::Runtime>,
}

/// A task of the workload, boxed so that nops and reads share one type (built before any timed
/// region; every variant polls the same boxes).
type Task<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// `depth` tasks sharing `budget`: nops, or reads of `file` if there is one.
#[allow(clippy::too_many_arguments)]
fn build<'a>(
    io: &'a SuIo,
    file: Option<&'a Fd>,
    bufs: &'a RefCell<Vec<IoBufMut>>,
    depth: usize,
    blocks: u64,
    seed: u64,
    budget: &'a Cell<u64>,
    hist: &'a RefCell<&'a mut Hist>,
) -> Vec<Task<'a>> {
    (0..depth as u64)
        .map(|i| -> Task<'a> {
            match file {
                Some(fd) => Box::pin(read_task(io, fd, bufs, blocks, seed + i, budget, hist)),
                None => Box::pin(nop_task(io, budget, hist)),
            }
        })
        .collect()
}

impl Bench for ExecBench {
    fn run(&mut self, ops: u64) -> Sample {
        let seed = self.seed;
        self.seed += 1000;
        let (io, file) = (self.io.clone(), self.file.clone());
        let (depth, blocks, spin) = (self.depth, self.blocks, self.spin);
        let bufs = RefCell::new(self.bufs.take().expect("buffers"));
        let (elapsed, alloc, hist, bufs) = match self.kind {
            Kind::Harness => {
                let mut hist = Hist::new();
                let budget = Cell::new(ops);
                let (elapsed, alloc) = {
                    let h = RefCell::new(&mut *hist);
                    let mut tasks =
                        build(&io, file.as_ref(), &bufs, depth, blocks, seed, &budget, &h);
                    let ((), elapsed, alloc) = timed(|| exec::run(Pin::new(&mut tasks[..]), spin));
                    (elapsed, alloc)
                };
                (elapsed, alloc, hist, bufs.into_inner())
            }
            Kind::Futures => {
                let mut hist = Hist::new();
                let budget = Cell::new(ops);
                let (elapsed, alloc) = {
                    let h = RefCell::new(&mut *hist);
                    let tasks = build(&io, file.as_ref(), &bufs, depth, blocks, seed, &budget, &h);
                    let mut all: FuturesUnordered<Task> = tasks.into_iter().collect();
                    let ((), elapsed, alloc) = timed(|| {
                        futures::executor::block_on(async { while all.next().await.is_some() {} })
                    });
                    (elapsed, alloc)
                };
                (elapsed, alloc, hist, bufs.into_inner())
            }
            Kind::Tokio => {
                let fut = AssertSend(async move {
                    let mut hist = Hist::new();
                    let budget = Cell::new(ops);
                    let (elapsed, alloc) = {
                        let h = RefCell::new(&mut *hist);
                        let tasks =
                            build(&io, file.as_ref(), &bufs, depth, blocks, seed, &budget, &h);
                        let mut all: FuturesUnordered<Task> = tasks.into_iter().collect();
                        let before = AllocCount::now();
                        let start = Instant::now();
                        while all.next().await.is_some() {}
                        (start.elapsed(), AllocCount::now().since(before))
                    };
                    (elapsed, alloc, hist, bufs.into_inner())
                });
                self.rt
                    .block_on(self.rt.spawn(fut))
                    .expect("the tokio task panicked")
            }
        };
        self.bufs = Some(bufs);
        Sample::new(ops, elapsed, alloc, hist)
    }
}

/// Makes a future `Send` for `tokio::spawn`.
struct AssertSend<F>(F);

// SAFETY: used only for a future whose `!Send` parts (the `Cell` budget, the `RefCell`s, the
// references the tasks hold to them) are created inside it and never leave it: nothing is
// shared with another thread, so moving the whole future between tokio's workers between polls
// is sound (only one thread touches it at a time, with the runtime's synchronisation between).
unsafe impl<F> Send for AssertSend<F> {}

impl<F: Future> Future for AssertSend<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: structural pinning of the only field; it is never moved out.
        unsafe { self.map_unchecked_mut(|s| &mut s.0) }.poll(cx)
    }
}
