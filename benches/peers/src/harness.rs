//! Shared by the `peers` and `peers-2026-4` binaries (the latter includes this file with
//! `#[path]`): command line, counting allocator, latency recording, the data file and the
//! JSON-lines report.
//!
//! Every cell runs a warm-up phase (discarded), then a measured phase of fixed duration. The
//! measured phase opens a [`Window`] (clock and allocation counters), runs the workload, closes
//! the window and prints one JSON object on one line to stdout. Notes and skips go to stderr.

#![allow(dead_code)] // each binary uses a different subset

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Size of the data file read by the `read_at_4k_*` workloads.
pub const FILE_SIZE: u64 = 256 << 20;
/// Read size and offset alignment of the `read_at_4k_*` workloads.
pub const BLOCK: usize = 4096;
/// Ping-pong message size.
pub const PING: usize = 64;
/// Streaming message size.
pub const STREAM: usize = 16 * 1024;
/// Latency samples kept per cell (the latest ones when a cell runs more ops than this).
pub const SAMPLES: usize = 1 << 21;

/// Where the data file and the commonware storage directories live.
pub fn scratch_dir() -> PathBuf {
    let dir = std::env::var_os("PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("static-uring-peers"));
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}

// ---------------------------------------------------------------------------------------------
// Allocation counting

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// The global allocator of both binaries: the system allocator, counting every allocation
/// (a `realloc` counts as one allocation of its new size) in every thread.
pub struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; counting
// touches only two atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new_size as u64, Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations and bytes requested so far, process-wide.
pub fn alloc_counts() -> (u64, u64) {
    (ALLOCS.load(Relaxed), BYTES.load(Relaxed))
}

// ---------------------------------------------------------------------------------------------
// Command line

/// What to run and for how long.
#[derive(Clone, Debug)]
pub struct Options {
    pub warmup: Duration,
    pub measure: Duration,
    workloads: Vec<String>,
    peers: Vec<String>,
    /// The arguments as given, forwarded to the `peers-2026-4` child.
    pub raw: Vec<String>,
}

pub const USAGE: &str = "\
usage: peers [--quick] [--secs S] [--warmup-secs S] [--workload NAME[,NAME..]] [--peer TEXT[,TEXT..]]
       peers echo-server --runtime monoio|compio --port P --size M   (scripts/echo-bench)

  --quick            ~1 s per cell (0.25 s warm-up); the default is ~5 s (1 s warm-up)
  --secs S           measured seconds per cell (overrides --quick)
  --warmup-secs S    warm-up seconds per cell
  --workload NAMES   only these workloads: nop, read_at_4k_hot, read_at_4k_direct,
                     pingpong_unix_64, pingpong_tcp_64, stream_16k
  --peer TEXTS       only peers whose name contains one of these texts
                     (e.g. tokio-uring, 2026.10, 2026.4, '1 worker')

One JSON object per line on stdout; notes and skipped cells on stderr.
Environment: PEERS_DIR (scratch directory, default /tmp/static-uring-peers),
STATIC_URING_BENCH_FILE (the 256 MiB read_at file, default one in PEERS_DIR),
PEERS_2026_4_BIN (path of the peers-2026-4 binary).";

impl Options {
    pub fn from_args() -> Self {
        let raw: Vec<String> = std::env::args().skip(1).collect();
        let mut options = Options {
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(5),
            workloads: Vec::new(),
            peers: Vec::new(),
            raw: raw.clone(),
        };
        let mut secs = None;
        let mut warmup = None;
        let mut args = raw.into_iter();
        let list = |v: Option<String>| -> Vec<String> {
            v.unwrap_or_else(|| die("missing value"))
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let seconds = |v: Option<String>| -> f64 {
            v.and_then(|v| v.parse().ok())
                .filter(|s: &f64| *s > 0.0)
                .unwrap_or_else(|| die("expected a positive number of seconds"))
        };
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => {
                    options.warmup = Duration::from_millis(250);
                    options.measure = Duration::from_secs(1);
                }
                "--secs" => secs = Some(seconds(args.next())),
                "--warmup-secs" => warmup = Some(seconds(args.next())),
                "--workload" | "--workloads" => options.workloads.extend(list(args.next())),
                "--peer" | "--peers" => options.peers.extend(list(args.next())),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => die(&format!("unknown argument {other:?}")),
            }
        }
        if let Some(s) = secs {
            options.measure = Duration::from_secs_f64(s);
        }
        if let Some(s) = warmup {
            options.warmup = Duration::from_secs_f64(s);
        }
        options
    }

    /// Whether any workload of `peer` is selected.
    pub fn wants_peer(&self, peer: &str) -> bool {
        self.peers.is_empty() || self.peers.iter().any(|p| peer.contains(p.as_str()))
    }

    /// Whether the cell (`peer`, `workload`) is selected.
    pub fn wants(&self, peer: &str, workload: &str) -> bool {
        self.wants_peer(peer)
            && (self.workloads.is_empty() || self.workloads.iter().any(|w| w == workload))
    }
}

fn die(message: &str) -> ! {
    eprintln!("peers: {message}\n{USAGE}");
    std::process::exit(2);
}

/// Reports a cell the peer cannot run (stderr, so stdout stays pure JSON lines).
pub fn skip(peer: &str, workload: &str, reason: &str) {
    eprintln!("# skip: {peer} / {workload}: {reason}");
}

/// A free-form note on stderr.
pub fn note(message: &str) {
    eprintln!("# {message}");
}

// ---------------------------------------------------------------------------------------------
// Measurement

/// Per-task latency samples in nanoseconds, preallocated: recording never allocates. When full
/// it wraps and keeps the latest samples.
pub struct Latencies {
    samples: Vec<u32>,
    next: usize,
    full: bool,
}

impl Latencies {
    pub fn with_capacity(capacity: usize) -> Self {
        Latencies {
            samples: vec![0; capacity.max(1)],
            next: 0,
            full: false,
        }
    }

    /// `outstanding` sample sets sharing [`SAMPLES`].
    pub fn split(outstanding: usize) -> Vec<Latencies> {
        (0..outstanding)
            .map(|_| Latencies::with_capacity(SAMPLES / outstanding.max(1)))
            .collect()
    }

    /// Records the time since `start`.
    #[inline]
    pub fn record(&mut self, start: Instant) {
        let ns = start.elapsed().as_nanos().min(u32::MAX as u128) as u32;
        self.samples[self.next] = ns;
        self.next += 1;
        if self.next == self.samples.len() {
            self.next = 0;
            self.full = true;
        }
    }

    fn recorded(&self) -> &[u32] {
        if self.full {
            &self.samples
        } else {
            &self.samples[..self.next]
        }
    }
}

/// The measured part of a cell: wall clock and allocation counters.
pub struct Window {
    start: Instant,
    allocs: (u64, u64),
}

/// What a closed [`Window`] saw.
pub struct Closed {
    pub elapsed: Duration,
    pub allocs: u64,
    pub bytes: u64,
}

impl Window {
    pub fn open() -> Self {
        let allocs = alloc_counts();
        Window {
            start: Instant::now(),
            allocs,
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn close(self) -> Closed {
        let elapsed = self.start.elapsed();
        let (allocs, bytes) = alloc_counts();
        Closed {
            elapsed,
            allocs: allocs - self.allocs.0,
            bytes: bytes - self.allocs.1,
        }
    }
}

/// One cell's result, printed as one JSON line.
pub struct Cell<'a> {
    pub peer: &'a str,
    pub workload: &'a str,
    pub outstanding: usize,
}

impl Cell<'_> {
    /// Prints the JSON line for `ops` operations measured in `window`.
    pub fn report(&self, ops: u64, window: Closed, latencies: &[Latencies]) {
        let mut all: Vec<u32> = latencies
            .iter()
            .flat_map(|l| l.recorded().iter().copied())
            .collect();
        all.sort_unstable();
        let pct = |q: f64| -> u64 {
            if all.is_empty() {
                return 0;
            }
            let i = ((all.len() - 1) as f64 * q).round() as usize;
            u64::from(all[i])
        };
        let per_op = |n: u64| if ops == 0 { 0.0 } else { n as f64 / ops as f64 };
        let line = format!(
            "{{\"peer\": {}, \"workload\": {}, \"outstanding\": {}, \"ops_per_sec\": {:.1}, \
             \"p50_ns\": {}, \"p99_ns\": {}, \"p999_ns\": {}, \"allocs_per_op\": {:.4}, \
             \"bytes_per_op\": {:.1}}}",
            json_string(self.peer),
            json_string(self.workload),
            self.outstanding,
            ops as f64 / window.elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            pct(0.999),
            per_op(window.allocs),
            per_op(window.bytes),
        );
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").expect("write to stdout");
        out.flush().expect("flush stdout");
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A small, fast generator of block-aligned offsets (xorshift64*).
#[derive(Clone)]
pub struct Offsets(u64);

impl Offsets {
    pub fn new(seed: u64) -> Self {
        Offsets(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A random multiple of [`BLOCK`] with a whole block below `size`.
    #[inline]
    pub fn next(&mut self, size: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let blocks = size / BLOCK as u64;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) % blocks * BLOCK as u64
    }
}

// ---------------------------------------------------------------------------------------------
// The plain data file

/// The 256 MiB data file for peers that read plain files ($STATIC_URING_BENCH_FILE, else one in
/// the scratch directory): created once (kept across runs), then read sequentially once so that
/// it sits in the page cache.
pub fn plain_data_file() -> PathBuf {
    // scripts/bench-report names one file for every binary, so every implementation reads the
    // same pages in the same page-cache state.
    let path = match std::env::var_os("STATIC_URING_BENCH_FILE") {
        Some(path) => PathBuf::from(path),
        None => scratch_dir().join("data-256m"),
    };
    let ok = std::fs::metadata(&path)
        .map(|m| m.len() == FILE_SIZE)
        .unwrap_or(false);
    if !ok {
        note(&format!("creating {}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create the data file's directory");
        }
        let mut file = std::fs::File::create(&path).expect("create the data file");
        let mut chunk = vec![0u8; 1 << 20];
        let mut seed = 0x1234_5678_9abc_def1u64;
        for _ in 0..FILE_SIZE / (1 << 20) {
            fill(&mut chunk, &mut seed);
            file.write_all(&chunk).expect("write the data file");
        }
        file.sync_all().expect("sync the data file");
    }
    warm(&path);
    path
}

/// Fills `buf` with pseudo-random bytes (so no filesystem can compress or dedupe the file).
pub fn fill(buf: &mut [u8], seed: &mut u64) {
    for word in buf.chunks_mut(8) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let bytes = seed.to_le_bytes();
        word.copy_from_slice(&bytes[..word.len()]);
    }
}

/// Reads `path` once from start to end.
pub fn warm(path: &Path) {
    let mut file = std::fs::File::open(path).expect("open the data file");
    // Dropped from the page cache first, then read in one sequential pass: the same page-cache
    // state as static-uring's own bench harness gives the same file (benches/common/mod.rs,
    // `warm`: the state alone moved a 4 KiB hot read by a third).
    // SAFETY: a valid descriptor; the call only drops clean cached pages of this file.
    unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    let mut buf = vec![0u8; 1 << 20];
    while file.read(&mut buf).expect("read the data file") > 0 {}
}
