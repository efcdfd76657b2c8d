//! Shared benchmark machinery: the workloads, the implementations measured side by side (the
//! loop under both idle policies and the baselines), the real-time toolkit rows (`rt.rs`, and
//! the rows measured side by side in `paired.rs`: vectored I/O and `sync_data` in `vectored.rs`,
//! single-producer lanes in `lanes.rs`, parking executors in `parking.rs`), loop-thread mode
//! (`local.rs`), allocation counting, latency histograms and the JSON-lines output the report script reads.
//!
//! Used by the criterion benches (`cargo bench -p static-uring-bench`) and by `bench_matrix.rs`
//! (fixed-duration runs printing one JSON object per line), the targets of the
//! `static-uring-bench` package in `benches/`.
#![allow(dead_code)]

#[path = "../../tests/support/counting_alloc.rs"]
pub mod alloc;
pub mod blocking;
pub mod chan;
pub mod exec;
pub mod floor;
pub mod handoff;
pub mod hist;
pub mod lanes;
pub mod local;
pub mod paired;
pub mod parking;
pub mod rt;
pub mod sched;
pub mod setup;
pub mod su;
pub mod tasks;
pub mod vectored;
pub mod workers;

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use alloc::AllocCount;
use hist::Hist;

/// Bytes per read_at.
pub const BLOCK: usize = 4096;
/// Bytes per ping-pong message.
pub const PING: usize = 64;
/// Bytes per streamed message.
pub const MSG: usize = 16 * 1024;
/// Size of the read_at file in a real run.
pub const FILE_LEN: u64 = 256 << 20;

/// What is measured. One "op" is one nop, one 4 KiB read, one ping-pong round trip, or one
/// 16 KiB message received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `producers` threads, each keeping `depth / producers` nops outstanding.
    Nop { producers: usize, depth: usize },
    /// 4 KiB at random aligned offsets, `depth` outstanding, page cache or O_DIRECT.
    ReadAt { depth: usize, direct: bool },
    /// 64-byte ping-pong, both ends through the implementation, 1 message in flight.
    PingPong { tcp: bool },
    /// 16 KiB messages over TCP loopback: one send and one recv outstanding.
    Stream,
}

impl Workload {
    /// Every workload of issue 4, in report order.
    pub const ALL: [Workload; 10] = [
        Workload::Nop {
            producers: 1,
            depth: 1,
        },
        Workload::Nop {
            producers: 1,
            depth: 64,
        },
        Workload::Nop {
            producers: 2,
            depth: 64,
        },
        Workload::ReadAt {
            depth: 1,
            direct: false,
        },
        Workload::ReadAt {
            depth: 32,
            direct: false,
        },
        Workload::ReadAt {
            depth: 1,
            direct: true,
        },
        Workload::ReadAt {
            depth: 32,
            direct: true,
        },
        Workload::PingPong { tcp: false },
        Workload::PingPong { tcp: true },
        Workload::Stream,
    ];

    /// The workload's name in the JSON lines (shared with the peers binary).
    pub fn name(self) -> &'static str {
        match self {
            Workload::Nop { producers: 1, .. } => "nop",
            Workload::Nop { .. } => "nop_2p",
            Workload::ReadAt { direct: false, .. } => "read_at_4k_hot",
            Workload::ReadAt { direct: true, .. } => "read_at_4k_direct",
            Workload::PingPong { tcp: false } => "pingpong_unix_64",
            Workload::PingPong { tcp: true } => "pingpong_tcp_64",
            Workload::Stream => "stream_16k",
        }
    }

    /// Requests outstanding at once (in total, over all producers).
    pub fn outstanding(self) -> usize {
        match self {
            Workload::Nop { depth, .. } | Workload::ReadAt { depth, .. } => depth,
            Workload::PingPong { .. } | Workload::Stream => 1,
        }
    }

    /// `name@outstanding`, for filters and criterion ids.
    pub fn id(self) -> String {
        format!("{}@{}", self.name(), self.outstanding())
    }
}

/// An implementation under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// This crate, with `Config::idle_spin` = the given budget (zero = pure blocking).
    StaticUring(Duration),
    /// The same with `Config::single_issuer` (SINGLE_ISSUER + DEFER_TASKRUN), default spin.
    StaticUringSingleIssuer(Duration),
    /// Loop-thread mode: the workload's tasks in a `TaskPool` inside `EventLoop::block_on` on
    /// the loop thread (`local.rs`), with `Config::idle_spin` = the given budget.
    LoopThread(Duration),
    /// The same ring calls through the io-uring crate on the calling thread: no loop at all.
    Floor,
    /// A loop thread fed by a bounded channel, answering through one `Arc` oneshot per request
    /// (commonware's shape), on the same ring calls, with the same idle policy.
    Channel(Duration),
    /// pread / send / recv on the calling thread.
    Blocking,
    /// Two threads handing nops to each other through SPSC rings and park/unpark, with the same
    /// idle policy: the cost of the cross-thread hand-off alone.
    Handoff(Duration),
}

/// `Config::default().idle_spin`, the loop's default spin budget, unless
/// `STATIC_URING_BENCH_SPIN_US` overrides it (profiling under valgrind, which cannot run a thread
/// blocked in `io_uring_enter` beside others, needs a spin that never runs out).
pub fn default_spin() -> Duration {
    match std::env::var("STATIC_URING_BENCH_SPIN_US") {
        Ok(us) => Duration::from_micros(us.parse().expect("STATIC_URING_BENCH_SPIN_US: integer")),
        Err(_) => static_uring::Config::default().idle_spin,
    }
}

/// `Config::busy_poll` for the cross-thread static-uring rows when `STATIC_URING_BENCH_SPIN_US`
/// is set (`scripts/profile`): under valgrind a spin that sees its thread descheduled (every
/// thread switch looks so) stops and the loop sleeps in `io_uring_enter`, which valgrind runs as
/// a non-blocking syscall (no other thread runs: a deadlock); a busy-polling loop never sleeps.
pub fn profiling_busy_poll() -> bool {
    std::env::var_os("STATIC_URING_BENCH_SPIN_US").is_some()
}

fn spin_label(spin: Duration) -> String {
    if spin.is_zero() {
        "0".to_string()
    } else if spin.as_nanos().is_multiple_of(1000) {
        format!("{}us", spin.as_micros())
    } else {
        format!("{}ns", spin.as_nanos())
    }
}

impl Peer {
    /// Every peer, both idle policies where they apply.
    pub fn all() -> Vec<Peer> {
        let spin = default_spin();
        vec![
            Peer::StaticUring(Duration::ZERO),
            Peer::StaticUring(spin),
            Peer::StaticUringSingleIssuer(spin),
            Peer::LoopThread(Duration::ZERO),
            Peer::LoopThread(spin),
            Peer::Floor,
            Peer::Channel(Duration::ZERO),
            Peer::Channel(spin),
            Peer::Blocking,
            Peer::Handoff(Duration::ZERO),
            Peer::Handoff(spin),
        ]
    }

    /// The name in the JSON lines.
    pub fn name(self) -> String {
        match self {
            Peer::StaticUring(spin) => format!("static-uring (idle_spin={})", spin_label(spin)),
            Peer::StaticUringSingleIssuer(spin) => format!(
                "static-uring (single_issuer, idle_spin={})",
                spin_label(spin)
            ),
            Peer::LoopThread(spin) => format!(
                "static-uring (loop-thread mode, idle_spin={})",
                spin_label(spin)
            ),
            Peer::Floor => "floor (raw io-uring)".to_string(),
            Peer::Channel(spin) => format!("channel loop (idle_spin={})", spin_label(spin)),
            Peer::Blocking => "blocking syscalls".to_string(),
            Peer::Handoff(spin) => {
                format!("raw cross-thread hand-off (idle_spin={})", spin_label(spin))
            }
        }
    }

    /// The idle policy, for the report.
    pub fn policy(self) -> String {
        match self {
            Peer::StaticUring(spin)
            | Peer::StaticUringSingleIssuer(spin)
            | Peer::Channel(spin)
            | Peer::Handoff(spin) => {
                if spin.is_zero() {
                    "blocking".to_string()
                } else {
                    format!("spin {} then sleep", spin_label(spin))
                }
            }
            Peer::LoopThread(spin) => format!(
                "one thread: block_on + TaskPool, idle_spin={}",
                spin_label(spin)
            ),
            Peer::Floor => "one thread, waits in io_uring_enter".to_string(),
            Peer::Blocking => "one thread, blocking syscalls".to_string(),
        }
    }

    /// Whether this peer runs `workload` (and why not, if it does not).
    pub fn supports(self, workload: Workload) -> Result<(), &'static str> {
        match (self, workload) {
            (Peer::Handoff(_), Workload::Nop { producers: 1, .. }) => Ok(()),
            (Peer::Handoff(_), _) => Err("the hand-off baseline is for the nop target only"),
            (Peer::Blocking, Workload::Nop { .. }) => Err("no blocking equivalent of a nop"),
            (Peer::Blocking, Workload::ReadAt { depth, .. }) if depth > 1 => {
                Err("one blocking thread has one read outstanding")
            }
            _ => Ok(()),
        }
    }
}

/// One measurement.
pub struct Sample {
    pub ops: u64,
    pub elapsed: Duration,
    pub alloc: AllocCount,
    /// Per-op latency (empty where not measured).
    pub hist: Box<Hist>,
    /// Extra JSON fields (`, "key": value` ...), e.g. the loop's syscalls per op.
    pub extra: String,
}

impl Sample {
    /// A measurement without extra JSON fields.
    pub fn new(ops: u64, elapsed: Duration, alloc: AllocCount, hist: Box<Hist>) -> Sample {
        Sample {
            ops,
            elapsed,
            alloc,
            hist,
            extra: String::new(),
        }
    }

    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    pub fn allocs_per_op(&self) -> f64 {
        self.alloc.allocs as f64 / self.ops.max(1) as f64
    }

    pub fn bytes_per_op(&self) -> f64 {
        self.alloc.bytes as f64 / self.ops.max(1) as f64
    }

    /// One JSON object on one line (the peers binary prints the same shape).
    pub fn json(&self, peer: Peer, workload: Workload, extra: &str) -> String {
        self.json_as(
            &peer.name(),
            workload.name(),
            workload.outstanding(),
            &peer.policy(),
            extra,
        )
    }

    /// The same line for rows named outside [`Peer`] and [`Workload`] (the `rt_*` rows).
    pub fn json_as(
        &self,
        peer: &str,
        workload: &str,
        outstanding: usize,
        policy: &str,
        extra: &str,
    ) -> String {
        let q = |q: f64| match self.hist.quantile(q) {
            Some(v) => v.to_string(),
            None => "null".to_string(),
        };
        format!(
            concat!(
                "{{\"peer\": \"{}\", \"workload\": \"{}\", \"outstanding\": {}, ",
                "\"ops_per_sec\": {:.1}, \"p50_ns\": {}, \"p99_ns\": {}, \"p999_ns\": {}, ",
                "\"allocs_per_op\": {:.6}, \"bytes_per_op\": {:.3}, \"policy\": \"{}\", ",
                "\"ops\": {}, \"secs\": {:.3}{}}}"
            ),
            peer,
            workload,
            outstanding,
            self.ops_per_sec(),
            q(0.50),
            q(0.99),
            q(0.999),
            self.allocs_per_op(),
            self.bytes_per_op(),
            policy,
            self.ops,
            self.elapsed.as_secs_f64(),
            format!("{}{extra}", self.extra),
        )
    }

    /// A one-line human summary (printed beside criterion's timing).
    pub fn summary(&self) -> String {
        let q = |q: f64| {
            self.hist
                .quantile(q)
                .map_or("-".to_string(), |v| format!("{:.1}us", v as f64 / 1000.0))
        };
        format!(
            "{:.0} ops/s, p50 {} p99 {} p99.9 {}, allocs/op {:.4}, bytes/op {:.1}{}",
            self.ops_per_sec(),
            q(0.5),
            q(0.99),
            q(0.999),
            self.allocs_per_op(),
            self.bytes_per_op(),
            self.extra
        )
    }
}

/// Runs `body` as the timed region: wall time and allocations counted around it only.
pub fn timed<R>(body: impl FnOnce() -> R) -> (R, Duration, AllocCount) {
    let before = AllocCount::now();
    let start = Instant::now();
    let result = body();
    let elapsed = start.elapsed();
    let alloc = AllocCount::now().since(before);
    (result, elapsed, alloc)
}

/// Something that performs `ops` operations of one workload and measures them.
pub trait Bench {
    fn run(&mut self, ops: u64) -> Sample;
}

/// Shared resources: the read_at file and whether O_DIRECT works on its filesystem.
pub struct Env {
    pub path: PathBuf,
    pub len: u64,
    /// `Err(reason)` when O_DIRECT reads cannot be done here.
    pub direct: Result<(), String>,
}

impl Env {
    /// Creates (or reuses) the file and puts it in the page cache. `small` is for smoke runs
    /// (`cargo test`): a 4 MiB file instead of 256 MiB.
    pub fn prepare(small: bool) -> Env {
        let (default_name, len) = if small {
            ("read-4m.dat", 4u64 << 20)
        } else {
            ("read-256m.dat", FILE_LEN)
        };
        let path = match std::env::var_os("STATIC_URING_BENCH_FILE") {
            Some(path) if !small => PathBuf::from(path),
            _ => std::env::temp_dir()
                .join("static-uring-bench")
                .join(default_name),
        };
        ensure_file(&path, len);
        warm(&path, len);
        let direct = check_direct(&path);
        Env { path, len, direct }
    }

    /// Number of 4 KiB blocks in the file.
    pub fn blocks(&self) -> u64 {
        self.len / BLOCK as u64
    }

    pub fn open(&self, direct: bool) -> File {
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        if direct {
            options.custom_flags(libc::O_DIRECT);
        }
        options.open(&self.path).expect("open the bench file")
    }
}

/// Writes `len` bytes of non-zero data at `path` unless a file of that size is there already.
fn ensure_file(path: &std::path::Path, len: u64) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == len) {
        return;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create the bench directory");
    }
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).expect("create the bench file");
    let mut chunk = vec![0u8; 1 << 20];
    let mut rng = Rng::new(0x5eed);
    let mut written = 0;
    while written < len {
        for word in chunk.chunks_exact_mut(8) {
            word.copy_from_slice(&rng.next().to_le_bytes());
        }
        let n = chunk.len().min((len - written) as usize);
        file.write_all(&chunk[..n]).expect("write the bench file");
        written += n as u64;
    }
    file.sync_all().expect("sync the bench file");
    std::fs::rename(&tmp, path).expect("rename the bench file");
}

/// Drops the file from the page cache, then reads it once from start to end, so that the hot
/// workloads hit a page cache in the same state in every run and every binary (the peers'
/// harness does the same to the same file). The state matters: pages that came back one by one
/// (partial eviction, random faults) cost more per 4 KiB read than pages read ahead in one
/// sequential pass; measured here, the floor's read_at hot @1 went from 0.85 M to 1.17 M ops/s
/// on the same file after this alone, which is how a peer on a freshly written file "beat" the
/// floor.
fn warm(path: &std::path::Path, len: u64) {
    let file = File::open(path).expect("open the bench file");
    // SAFETY: a valid descriptor; the call only drops clean cached pages of this file.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let mut chunk = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let n = file.read_at(&mut chunk, at).expect("read the bench file");
        if n == 0 {
            break;
        }
        at += n as u64;
    }
}

/// Tries one aligned O_DIRECT read.
fn check_direct(path: &std::path::Path) -> Result<(), String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| format!("open(O_DIRECT) failed: {e}"))?;
    let buf = leak_aligned(BLOCK);
    // SAFETY: `buf` is valid for BLOCK writable bytes, aligned to 4096.
    let n = unsafe {
        libc::pread(
            file.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            BLOCK,
            BLOCK as libc::off_t,
        )
    };
    if n != BLOCK as isize {
        return Err(format!(
            "O_DIRECT pread failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// A zeroed, 4096-aligned buffer that lives for the rest of the process (buffers handed to
/// the kernel must not move; O_DIRECT needs the alignment).
pub fn leak_aligned(len: usize) -> &'static mut [u8] {
    let layout = std::alloc::Layout::from_size_align(len.max(1), 4096).expect("layout");
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!ptr.is_null(), "out of memory");
    // SAFETY: `ptr` is a fresh, zeroed allocation of `len` bytes that is never freed, so the
    // slice may live for `'static` and is exclusively ours.
    unsafe { std::slice::from_raw_parts_mut(ptr, len) }
}

/// xorshift64*: cheap, deterministic offsets.
#[derive(Debug, Clone, Copy)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    #[inline]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A random block-aligned offset below `blocks * BLOCK`.
    #[inline]
    pub fn offset(&mut self, blocks: u64) -> u64 {
        (self.next() % blocks) * BLOCK as u64
    }
}

/// A connected Unix stream socket pair.
pub fn unix_pair() -> (
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixStream,
) {
    std::os::unix::net::UnixStream::pair().expect("socketpair")
}

/// A connected TCP loopback pair with Nagle off on both ends.
pub fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let a = std::net::TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (b, _) = listener.accept().expect("accept");
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    (a, b)
}

/// Builds the measured implementation of `workload` for `peer`, or says why it does not apply.
pub fn make(peer: Peer, workload: Workload, env: &Env) -> Result<Box<dyn Bench>, String> {
    peer.supports(workload).map_err(str::to_string)?;
    if let Workload::ReadAt { direct: true, .. } = workload {
        env.direct.clone()?;
    }
    Ok(match peer {
        Peer::StaticUring(spin) => Box::new(tasks::IoBench::new(
            su::SuIo::start(spin, false),
            workload,
            spin,
            env,
        )),
        Peer::StaticUringSingleIssuer(spin) => Box::new(tasks::IoBench::new(
            su::SuIo::start(spin, true),
            workload,
            spin,
            env,
        )),
        Peer::Channel(spin) => Box::new(tasks::IoBench::new(
            chan::ChanIo::start(spin),
            workload,
            spin,
            env,
        )),
        Peer::LoopThread(spin) => Box::new(local::LoopThread::new(workload, spin, env)?),
        Peer::Floor => Box::new(floor::Floor::new(workload, env)),
        Peer::Blocking => Box::new(blocking::Blocking::new(workload, env)),
        Peer::Handoff(spin) => Box::new(handoff::Handoff::new(workload.outstanding(), spin)),
    })
}

impl Sample {
    /// Adds `other` to this sample (criterion calls `run` many times per benchmark).
    pub fn absorb(&mut self, other: &Sample) {
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.alloc.allocs += other.alloc.allocs;
        self.alloc.bytes += other.alloc.bytes;
        self.hist.merge(&other.hist);
    }

    pub fn empty() -> Sample {
        Sample {
            ops: 0,
            elapsed: Duration::ZERO,
            alloc: AllocCount::default(),
            hist: Hist::new(),
            extra: String::new(),
        }
    }
}

/// The criterion side: one group per workload, one benchmark per peer, each timed by
/// `iter_custom` over `Bench::run`; allocs/op and latency percentiles are printed beside.
pub fn criterion_workloads(c: &mut criterion::Criterion, workloads: &[Workload]) {
    // Outside `cargo bench` (e.g. `cargo test -p static-uring-bench --benches`) criterion runs each
    // benchmark once: keep that cheap with a 4 MiB file.
    let small = !std::env::args().any(|a| a == "--bench");
    let env = Env::prepare(small);
    for &workload in workloads {
        let mut group = c.benchmark_group(workload.id());
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .throughput(criterion::Throughput::Elements(1));
        for peer in Peer::all() {
            let mut bench = match make(peer, workload, &env) {
                Ok(bench) => bench,
                Err(reason) => {
                    eprintln!("{} / {}: skipped ({reason})", workload.id(), peer.name());
                    continue;
                }
            };
            let mut total = Sample::empty();
            group.bench_function(peer.name(), |b| {
                b.iter_custom(|iters| {
                    let sample = bench.run(iters.max(2));
                    total.absorb(&sample);
                    sample.elapsed.mul_f64(iters as f64 / sample.ops as f64)
                })
            });
            eprintln!("{} / {}: {}", workload.id(), peer.name(), total.summary());
        }
        group.finish();
    }
}
