//! Loop-thread mode, every workload: the workload's tasks run on the loop thread itself, inside
//! `EventLoop::block_on(pool.run_local(main))` with a `TaskPool` of one task per outstanding request
//! (per ping-pong end; a sender and a receiver for streaming), so every operation is staged in
//! the iteration that polled its task and submitted with the others in one `io_uring_enter`: no
//! hand-off, no eventfd. (The two-producer nop row is nop@64 here: one thread.) Each operation
//! is awaited as a `LocalOp` (`Op::local`), as a loop-thread service would write it: the loop
//! then hands its result over without a locked read-modify-write.
//!
//! `block_on` consumes the loop, so each `run` builds a fresh loop on one `static` storage,
//! claimed again (and leaks a fresh pool, a few KiB), before the timed region; the timed region
//! is `pool.run_local(main)` inside `block_on`: `main`
//! spawns the tasks (allocation-free), and it ends when every task has finished. The loop then
//! drains once the tasks drop the last handles (untimed). Sockets, the file and the buffers are
//! made once and reused by every run; the descriptors are leaked `Fd`s (`Fd::leak`), as a
//! service's long-lived ones can be: like the floor's raw descriptors, they cost no reference
//! count per operation.
//!
//! Clock reads are the floor's: the pipelined rows (nop, read_at) read a pass clock once each
//! time the loop polls the pool (`Clocked`), as the floor reads the clock once per reap pass;
//! ping-pong reads it twice per round trip, as the floor's ping-pong does.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use static_uring::{Config, Fd, IoBuf, IoBufMut, MetricsReader, TaskPool};

use super::alloc::AllocCount;
use super::hist::Hist;
use super::paired::Counters;
use super::su::H;
use super::{leak_aligned, tcp_pair, unix_pair, Bench, Env, Rng, Sample, Workload};
use super::{BLOCK, MSG, PING};

/// The pools' sizes: the deepest nop and read_at rows.
const NOP_TASKS: usize = 64;
const READ_TASKS: usize = 32;

/// Shared by the tasks of one run (one thread: `Rc`, `Cell`).
struct Run {
    budget: Cell<u64>,
    hist: RefCell<Box<Hist>>,
    /// The pass clock: read once each time the loop polls the pool (once per loop pass), as the
    /// floor reads it once per reap pass. The pipelined rows (nop, read_at) time an operation
    /// from the pass that submitted it to the pass that saw it finish, as the floor does.
    now: Cell<Instant>,
}

impl Run {
    fn take(&self) -> bool {
        super::tasks::take(&self.budget)
    }

    /// Records an operation submitted in the pass that read `start`, finished in this one.
    fn record_since(&self, start: Instant) {
        self.hist.borrow_mut().record(self.now.get() - start);
    }
}

/// Polls `inner` after reading the pass clock into `run.now`.
struct Clocked<F> {
    inner: F,
    run: Rc<Run>,
}

impl<F: Future> Future for Clocked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned (never moved out of the pinned `Clocked`).
        let this = unsafe { self.get_unchecked_mut() };
        this.run.now.set(Instant::now());
        // SAFETY: as above.
        unsafe { Pin::new_unchecked(&mut this.inner) }.poll(cx)
    }
}

pub struct LoopThread {
    workload: Workload,
    spin: Duration,
    blocks: u64,
    file: Option<Fd>,
    ends: Option<(Fd, Fd)>,
    rbufs: Rc<RefCell<Vec<IoBufMut>>>,
    sbufs: Rc<RefCell<Vec<IoBuf>>>,
    seed: u64,
}

impl LoopThread {
    pub fn new(workload: Workload, spin: Duration, env: &Env) -> Result<LoopThread, String> {
        let mut bench = LoopThread {
            workload,
            spin,
            blocks: env.blocks(),
            file: None,
            ends: None,
            rbufs: Rc::new(RefCell::new(Vec::new())),
            sbufs: Rc::new(RefCell::new(Vec::new())),
            seed: 1,
        };
        match workload {
            Workload::Nop { depth, .. } => assert!(depth <= NOP_TASKS, "nop depth"),
            Workload::ReadAt { depth, direct } => {
                assert!(depth <= READ_TASKS, "read_at depth");
                bench.file = Some(Fd::leak(env.open(direct)));
                *bench.rbufs.borrow_mut() = (0..depth)
                    .map(|_| IoBufMut::from(leak_aligned(BLOCK)))
                    .collect();
            }
            Workload::PingPong { tcp } => {
                bench.ends = Some(if tcp {
                    let (a, b) = tcp_pair();
                    (Fd::leak(a), Fd::leak(b))
                } else {
                    let (a, b) = unix_pair();
                    (Fd::leak(a), Fd::leak(b))
                });
                *bench.rbufs.borrow_mut() =
                    (0..2).map(|_| IoBufMut::from(leak_aligned(PING))).collect();
                *bench.sbufs.borrow_mut() = (0..2)
                    .map(|_| {
                        let memory = leak_aligned(PING);
                        memory.fill(0xa5);
                        IoBuf::from(&*memory)
                    })
                    .collect();
            }
            Workload::Stream => {
                let (a, b) = tcp_pair();
                bench.ends = Some((Fd::leak(a), Fd::leak(b)));
                *bench.rbufs.borrow_mut() = vec![IoBufMut::from(leak_aligned(MSG))];
                let memory = leak_aligned(MSG);
                memory.fill(0x5a);
                *bench.sbufs.borrow_mut() = vec![IoBuf::from(&*memory)];
            }
        }
        Ok(bench)
    }

    /// A loop on a `static` storage, as a latency-sensitive service deploys one: its handles
    /// and operations then hold no reference count (a heap storage's `Arc` costs every
    /// operation an increment and a decrement). Claimed again by each run: the previous run's
    /// loop has closed and its handles are gone.
    fn event_loop(&self) -> (H, super::su::L) {
        static STORAGE: static_uring::Storage<256, 128, 1024> = static_uring::Storage::new();
        let config = Config {
            idle_spin: self.spin,
            ..Config::default()
        };
        static_uring::with_storage(&STORAGE, config).expect("loop")
    }
}

async fn nop_task(io: H, run: Rc<Run>) {
    while run.take() {
        let start = run.now.get();
        io.nop().local().await.expect("nop");
        run.record_since(start);
    }
}

async fn read_task(
    io: H,
    fd: Fd,
    bufs: Rc<RefCell<Vec<IoBufMut>>>,
    blocks: u64,
    seed: u64,
    run: Rc<Run>,
) {
    let mut buf = bufs.borrow_mut().pop().expect("a buffer per task");
    let mut rng = Rng::new(seed);
    while run.take() {
        let start = run.now.get();
        buf = match io
            .read_at(&fd, rng.offset(blocks), buf)
            .limit(BLOCK)
            .local()
            .await
        {
            Ok(buf) => buf,
            Err(e) => panic!("read_at: {e}"),
        };
        run.record_since(start);
    }
    bufs.borrow_mut().push(buf);
}

/// One end of the stream: the sender sends `messages` messages of `MSG` bytes (each whole), the
/// receiver receives them (each exactly); an op is a message received. Throughput only, as the
/// floor's stream.
async fn stream_task(
    io: H,
    sender: bool,
    fd: Fd,
    rbufs: Rc<RefCell<Vec<IoBufMut>>>,
    sbufs: Rc<RefCell<Vec<IoBuf>>>,
    messages: u64,
) {
    if sender {
        let mut buf = sbufs.borrow_mut().pop().expect("a send buffer");
        for _ in 0..messages {
            buf = match io.send(&fd, buf).local().await {
                Ok(buf) => buf,
                Err(e) => panic!("send: {e}"),
            };
        }
        sbufs.borrow_mut().push(buf);
    } else {
        let mut buf = rbufs.borrow_mut().pop().expect("a receive buffer");
        for _ in 0..messages {
            buf.clear();
            buf = match io.recv(&fd, buf).exact(MSG).local().await {
                Ok((buf, _)) => buf,
                Err(e) => panic!("recv: {e}"),
            };
        }
        rbufs.borrow_mut().push(buf);
    }
}

/// One ping-pong end: `client` sends then receives (a timed round trip), the other end echoes.
async fn pingpong_task(
    io: H,
    client: bool,
    fd: Fd,
    rbufs: Rc<RefCell<Vec<IoBufMut>>>,
    sbufs: Rc<RefCell<Vec<IoBuf>>>,
    rounds: u64,
    run: Rc<Run>,
) {
    let mut rbuf = rbufs.borrow_mut().pop().expect("a buffer per task");
    let mut sbuf = sbufs.borrow_mut().pop().expect("a buffer per task");
    for _ in 0..rounds {
        if client {
            let start = Instant::now();
            sbuf = match io.send(&fd, sbuf).local().await {
                Ok(buf) => buf,
                Err(e) => panic!("send: {e}"),
            };
            rbuf = match io.recv(&fd, rbuf).exact(PING).local().await {
                Ok((buf, _)) => buf,
                Err(e) => panic!("recv: {e}"),
            };
            run.hist.borrow_mut().record(start.elapsed());
        } else {
            rbuf = match io.recv(&fd, rbuf).exact(PING).local().await {
                Ok((buf, _)) => buf,
                Err(e) => panic!("recv: {e}"),
            };
            sbuf = match io.send(&fd, sbuf).local().await {
                Ok(buf) => buf,
                Err(e) => panic!("send: {e}"),
            };
        }
    }
    rbufs.borrow_mut().push(rbuf);
    sbufs.borrow_mut().push(sbuf);
}

impl Bench for LoopThread {
    fn run(&mut self, ops: u64) -> Sample {
        let (io, event_loop) = self.event_loop();
        let run = Rc::new(Run {
            budget: Cell::new(ops),
            hist: RefCell::new(Hist::new()),
            now: Cell::new(Instant::now()),
        });
        let r = run.clone();
        let reader = event_loop.metrics_reader();
        let (elapsed, alloc, c0, c1) = match self.workload {
            Workload::Nop { depth, .. } => {
                let pool = TaskPool::<_, NOP_TASKS>::leak();
                let main = async move {
                    for _ in 0..depth {
                        assert!(pool.spawn(nop_task(io.clone(), r.clone())).is_ok());
                    }
                };
                event_loop.block_on(timed_async(&reader, clocked(&run, pool.run_local(main))))
            }
            Workload::ReadAt { depth, .. } => {
                let pool = TaskPool::<_, READ_TASKS>::leak();
                let (fd, bufs, blocks) =
                    (self.file.clone().expect("file"), &self.rbufs, self.blocks);
                let base = self.seed;
                self.seed += 1000;
                let bufs = bufs.clone();
                let main = async move {
                    for i in 0..depth as u64 {
                        let task = read_task(
                            io.clone(),
                            fd.clone(),
                            bufs.clone(),
                            blocks,
                            base + i,
                            r.clone(),
                        );
                        assert!(pool.spawn(task).is_ok());
                    }
                };
                event_loop.block_on(timed_async(&reader, clocked(&run, pool.run_local(main))))
            }
            Workload::PingPong { .. } => {
                let pool = TaskPool::<_, 2>::leak();
                let (a, b) = self.ends.clone().expect("sockets");
                let (rbufs, sbufs) = (self.rbufs.clone(), self.sbufs.clone());
                let main = async move {
                    for (client, fd) in [(true, a), (false, b)] {
                        let task = pingpong_task(
                            io.clone(),
                            client,
                            fd,
                            rbufs.clone(),
                            sbufs.clone(),
                            ops,
                            r.clone(),
                        );
                        assert!(pool.spawn(task).is_ok());
                    }
                };
                event_loop.block_on(timed_async(&reader, pool.run_local(main)))
            }
            Workload::Stream => {
                let pool = TaskPool::<_, 2>::leak();
                let (a, b) = self.ends.clone().expect("sockets");
                let (rbufs, sbufs) = (self.rbufs.clone(), self.sbufs.clone());
                let main = async move {
                    for (sender, fd) in [(true, a), (false, b)] {
                        let task =
                            stream_task(io.clone(), sender, fd, rbufs.clone(), sbufs.clone(), ops);
                        assert!(pool.spawn(task).is_ok());
                    }
                };
                event_loop.block_on(timed_async(&reader, pool.run_local(main)))
            }
        }
        .expect("block_on");
        let hist = std::mem::replace(&mut *run.hist.borrow_mut(), Hist::new());
        let mut sample = Sample::new(ops, elapsed, alloc, hist);
        c0.report(c1, &mut sample);
        sample
    }
}

fn clocked<F: Future>(run: &Rc<Run>, inner: F) -> Clocked<F> {
    Clocked {
        inner,
        run: run.clone(),
    }
}

/// Awaits `fut` as the timed region: wall time, allocations and the loop's counters around it.
async fn timed_async<F: Future>(
    reader: &MetricsReader<256, 128, 1024>,
    fut: F,
) -> (Duration, AllocCount, Counters, Counters) {
    let counters = Counters::now(reader.get());
    let before = AllocCount::now();
    let start = Instant::now();
    fut.await;
    let elapsed = start.elapsed();
    let alloc = AllocCount::now().since(before);
    (elapsed, alloc, counters, Counters::now(reader.get()))
}
