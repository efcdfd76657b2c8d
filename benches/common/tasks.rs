//! The workloads written once over [`AsyncIo`], the interface both loop-based implementations
//! (static-uring and the channel loop) provide, and [`IoBench`], which runs them.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::hist::Hist;
use super::workers::Workers;
use super::{
    exec, leak_aligned, tcp_pair, timed, unix_pair, Bench, Env, Rng, Sample, Workload, BLOCK, MSG,
    PING,
};

/// What a loop-based implementation offers the workloads. Results are unwrapped: a failed
/// operation panics the benchmark.
pub trait AsyncIo: Clone + Send + Sync + 'static {
    type Fd: Send + Sync + 'static;
    /// A buffer the kernel writes (read_at, recv).
    type RBuf: 'static;
    /// A buffer the kernel reads (send).
    type SBuf: 'static;

    fn fd<T: AsFd + Send + Sync + 'static>(&self, owner: Arc<T>) -> Self::Fd;
    fn rbuf(&self, memory: &'static mut [u8]) -> Self::RBuf;
    fn sbuf(&self, memory: &'static [u8]) -> Self::SBuf;

    fn nop(&self) -> impl Future<Output = ()>;
    fn read_at(
        &self,
        fd: &Self::Fd,
        offset: u64,
        buf: Self::RBuf,
    ) -> impl Future<Output = Self::RBuf>;
    fn send(&self, fd: &Self::Fd, buf: Self::SBuf) -> impl Future<Output = Self::SBuf>;
    fn recv_exact(
        &self,
        fd: &Self::Fd,
        buf: Self::RBuf,
        len: usize,
    ) -> impl Future<Output = Self::RBuf>;

    /// A nop from a thread without an executor (spins, then parks).
    fn nop_wait(&self);
    /// A read_at from a thread without an executor.
    fn read_at_wait(&self, fd: &Self::Fd, offset: u64, buf: Self::RBuf) -> Self::RBuf;

    /// Loop counters, if the implementation keeps them: `(io_uring_enter calls, eventfd wake-ups)`.
    fn counters(&self) -> Option<(u64, u64)> {
        None
    }
}

/// A started implementation: the handle, and a guard that stops and joins its loop thread when
/// dropped (after every handle clone is gone).
pub struct Started<B> {
    pub io: B,
    pub guard: Box<dyn Send>,
}

/// Takes one op from the budget; false once it is spent.
#[inline]
pub fn take(budget: &Cell<u64>) -> bool {
    let left = budget.get();
    if left == 0 {
        return false;
    }
    budget.set(left - 1);
    true
}

pub async fn nop_task<B: AsyncIo>(io: &B, budget: &Cell<u64>, hist: &RefCell<&mut Hist>) {
    while take(budget) {
        let start = Instant::now();
        io.nop().await;
        hist.borrow_mut().record(start.elapsed());
    }
}

pub async fn read_task<B: AsyncIo>(
    io: &B,
    fd: &B::Fd,
    bufs: &RefCell<Vec<B::RBuf>>,
    blocks: u64,
    seed: u64,
    budget: &Cell<u64>,
    hist: &RefCell<&mut Hist>,
) {
    let mut buf = bufs.borrow_mut().pop().expect("a buffer per task");
    let mut rng = Rng::new(seed);
    while take(budget) {
        let start = Instant::now();
        buf = io.read_at(fd, rng.offset(blocks), buf).await;
        hist.borrow_mut().record(start.elapsed());
    }
    bufs.borrow_mut().push(buf);
}

/// Which end of a two-ended workload a task plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Ping-pong client / stream sender.
    A,
    /// Ping-pong echo server / stream receiver.
    B,
}

/// One end of the ping-pong. A: send 64 bytes, receive 64 back (a timed round trip). B: receive
/// 64 bytes, answer with 64. Both ends do `rounds` rounds.
#[allow(clippy::too_many_arguments)]
pub async fn pingpong_task<B: AsyncIo>(
    io: &B,
    role: Role,
    fd: &B::Fd,
    rbufs: &RefCell<Vec<B::RBuf>>,
    sbufs: &RefCell<Vec<B::SBuf>>,
    rounds: u64,
    hist: &RefCell<&mut Hist>,
) {
    let mut rbuf = rbufs.borrow_mut().pop().expect("a buffer per task");
    let mut sbuf = sbufs.borrow_mut().pop().expect("a buffer per task");
    for _ in 0..rounds {
        match role {
            Role::A => {
                let start = Instant::now();
                sbuf = io.send(fd, sbuf).await;
                rbuf = io.recv_exact(fd, rbuf, PING).await;
                hist.borrow_mut().record(start.elapsed());
            }
            Role::B => {
                rbuf = io.recv_exact(fd, rbuf, PING).await;
                sbuf = io.send(fd, sbuf).await;
            }
        }
    }
    rbufs.borrow_mut().push(rbuf);
    sbufs.borrow_mut().push(sbuf);
}

/// One end of the stream: A sends `messages` 16 KiB messages, B receives them.
pub async fn stream_task<B: AsyncIo>(
    io: &B,
    role: Role,
    fd: &B::Fd,
    rbufs: &RefCell<Vec<B::RBuf>>,
    sbufs: &RefCell<Vec<B::SBuf>>,
    messages: u64,
) {
    match role {
        Role::A => {
            let mut sbuf = sbufs.borrow_mut().pop().expect("a buffer per task");
            for _ in 0..messages {
                sbuf = io.send(fd, sbuf).await;
            }
            sbufs.borrow_mut().push(sbuf);
        }
        Role::B => {
            let mut rbuf = rbufs.borrow_mut().pop().expect("a buffer per task");
            for _ in 0..messages {
                rbuf = io.recv_exact(fd, rbuf, MSG).await;
            }
            rbufs.borrow_mut().push(rbuf);
        }
    }
}

/// Pins a set of same-typed tasks (allocated here, before the timed region).
fn pinned<F: Future<Output = ()>>(tasks: Vec<F>) -> Pin<Box<[F]>> {
    Box::into_pin(tasks.into_boxed_slice())
}

/// A loop-based implementation set up for one workload.
pub struct IoBench<B: AsyncIo> {
    /// Producer threads for the two-producer nop (dropped first: they hold handle clones).
    workers: Option<Workers>,
    io: B,
    workload: Workload,
    spin: Duration,
    blocks: u64,
    file: Option<B::Fd>,
    /// Ping-pong / stream: the two connected ends.
    ends: Option<(B::Fd, B::Fd)>,
    rbufs: RefCell<Vec<B::RBuf>>,
    sbufs: RefCell<Vec<B::SBuf>>,
    seed: u64,
    /// Stops the loop thread; dropped last.
    guard: Box<dyn Send>,
}

impl<B: AsyncIo> IoBench<B> {
    pub fn new(started: Started<B>, workload: Workload, spin: Duration, env: &Env) -> Self {
        Self::with_read_at(started, workload, spin, env, None)
    }

    /// `new`, with the read_at file and buffers given (`Some`: a registered file, or buffers of
    /// a registered pool, one per outstanding read) instead of a plain descriptor and buffers.
    pub fn with_read_at(
        started: Started<B>,
        workload: Workload,
        spin: Duration,
        env: &Env,
        read_at: Option<(B::Fd, Vec<B::RBuf>)>,
    ) -> Self {
        let Started { io, guard } = started;
        exec::prepare();
        let mut bench = IoBench {
            workers: None,
            io: io.clone(),
            workload,
            spin,
            blocks: env.blocks(),
            file: None,
            ends: None,
            rbufs: RefCell::new(Vec::new()),
            sbufs: RefCell::new(Vec::new()),
            seed: 1,
            guard,
        };
        match workload {
            Workload::Nop { producers, depth } if producers > 1 => {
                let each = depth / producers;
                bench.workers = Some(Workers::new(producers, move |_, ops, hist, ready| {
                    let budget = Cell::new(ops);
                    let hist = RefCell::new(hist);
                    let mut tasks = pinned(
                        (0..each)
                            .map(|_| nop_task(&io, &budget, &hist))
                            .collect::<Vec<_>>(),
                    );
                    ready();
                    exec::run(tasks.as_mut(), spin);
                }));
            }
            Workload::Nop { .. } => {}
            Workload::ReadAt { depth, direct } => {
                let (file, bufs) = read_at.unwrap_or_else(|| {
                    let file = bench.io.fd(Arc::new(env.open(direct)));
                    let bufs = (0..depth)
                        .map(|_| bench.io.rbuf(leak_aligned(BLOCK)))
                        .collect::<Vec<_>>();
                    (file, bufs)
                });
                assert!(bufs.len() >= depth, "one buffer per outstanding read");
                bench.file = Some(file);
                bench.rbufs = RefCell::new(bufs);
            }
            Workload::PingPong { tcp } => {
                bench.ends = Some(if tcp {
                    let (a, b) = tcp_pair();
                    (bench.io.fd(Arc::new(a)), bench.io.fd(Arc::new(b)))
                } else {
                    let (a, b) = unix_pair();
                    (bench.io.fd(Arc::new(a)), bench.io.fd(Arc::new(b)))
                });
                bench.fill_bufs(PING);
            }
            Workload::Stream => {
                let (a, b) = tcp_pair();
                bench.ends = Some((bench.io.fd(Arc::new(a)), bench.io.fd(Arc::new(b))));
                bench.fill_bufs(MSG);
            }
        }
        bench
    }

    fn fill_bufs(&mut self, len: usize) {
        let r = (0..2).map(|_| self.io.rbuf(leak_aligned(len))).collect();
        let s = (0..2)
            .map(|_| {
                let memory = leak_aligned(len);
                memory.fill(0xa5);
                self.io.sbuf(memory)
            })
            .collect();
        self.rbufs = RefCell::new(r);
        self.sbufs = RefCell::new(s);
    }

    fn next_seed(&mut self) -> u64 {
        self.seed += 1000;
        self.seed
    }
}

impl<B: AsyncIo> Bench for IoBench<B> {
    fn run(&mut self, ops: u64) -> Sample {
        let mut hist = Hist::new();
        let spin = self.spin;
        let io = &self.io;
        let counters_before = io.counters();
        let (ops, elapsed, alloc) = match self.workload {
            Workload::Nop { producers, .. } if producers > 1 => {
                let workers = self.workers.as_ref().expect("workers");
                let each = ops / producers as u64;
                let (elapsed, alloc) = workers.run(each, &mut hist);
                (each * producers as u64, elapsed, alloc)
            }
            Workload::Nop { depth: 1, .. } => {
                let ((), elapsed, alloc) = timed(|| {
                    for _ in 0..ops {
                        let start = Instant::now();
                        io.nop_wait();
                        hist.record(start.elapsed());
                    }
                });
                (ops, elapsed, alloc)
            }
            Workload::Nop { depth, .. } => {
                let budget = Cell::new(ops);
                let h = RefCell::new(&mut *hist);
                let mut tasks = pinned((0..depth).map(|_| nop_task(io, &budget, &h)).collect());
                let ((), elapsed, alloc) = timed(|| exec::run(tasks.as_mut(), spin));
                (ops, elapsed, alloc)
            }
            Workload::ReadAt { depth: 1, .. } => {
                let fd = self.file.as_ref().expect("file");
                let mut rng = Rng::new(self.seed);
                self.seed += 1000;
                let mut buf = self.rbufs.borrow_mut().pop().expect("buffer");
                let blocks = self.blocks;
                let (buf, elapsed, alloc) = timed(|| {
                    for _ in 0..ops {
                        let start = Instant::now();
                        buf = io.read_at_wait(fd, rng.offset(blocks), buf);
                        hist.record(start.elapsed());
                    }
                    buf
                });
                self.rbufs.borrow_mut().push(buf);
                (ops, elapsed, alloc)
            }
            Workload::ReadAt { depth, .. } => {
                let base = self.seed;
                self.seed += 1000;
                let fd = self.file.as_ref().expect("file");
                let budget = Cell::new(ops);
                let h = RefCell::new(&mut *hist);
                let mut tasks = pinned(
                    (0..depth as u64)
                        .map(|i| read_task(io, fd, &self.rbufs, self.blocks, base + i, &budget, &h))
                        .collect(),
                );
                let ((), elapsed, alloc) = timed(|| exec::run(tasks.as_mut(), spin));
                (ops, elapsed, alloc)
            }
            Workload::PingPong { .. } => {
                let (a, b) = self.ends.as_ref().expect("sockets");
                let h = RefCell::new(&mut *hist);
                let mut tasks = pinned(vec![
                    pingpong_task(io, Role::A, a, &self.rbufs, &self.sbufs, ops, &h),
                    pingpong_task(io, Role::B, b, &self.rbufs, &self.sbufs, ops, &h),
                ]);
                let ((), elapsed, alloc) = timed(|| exec::run(tasks.as_mut(), spin));
                (ops, elapsed, alloc)
            }
            Workload::Stream => {
                let (a, b) = self.ends.as_ref().expect("sockets");
                let mut tasks = pinned(vec![
                    stream_task(io, Role::A, a, &self.rbufs, &self.sbufs, ops),
                    stream_task(io, Role::B, b, &self.rbufs, &self.sbufs, ops),
                ]);
                let ((), elapsed, alloc) = timed(|| exec::run(tasks.as_mut(), spin));
                hist.clear();
                (ops, elapsed, alloc)
            }
        };
        let extra = match (counters_before, io.counters()) {
            (Some((enters0, wakeups0)), Some((enters1, wakeups1))) => format!(
                ", \"enters_per_op\": {:.4}, \"wakeups_per_op\": {:.4}",
                (enters1 - enters0) as f64 / ops.max(1) as f64,
                (wakeups1 - wakeups0) as f64 / ops.max(1) as f64
            ),
            _ => String::new(),
        };
        Sample {
            ops,
            elapsed,
            alloc,
            hist,
            extra,
        }
    }
}
