//! Bounded soak: one `static` storage serves loop after loop while eight producer threads throw a
//! random mix of the operations of the crate's table (`OpKind::ALL`) at it and the last handle is
//! dropped in the middle of traffic.
//!
//! Every kind is picked (by weight; `weight` is an exhaustive match, so an operation added to the
//! crate does not compile here until it is given a weight, a target and a request), each plain and
//! through `try_submit`, and the summary asserts that every kind was resolved. The exceptions have
//! weight 0 and suites of their own: multishot streams (tests/multishot.rs), messages between
//! loops (tests/messages.rs) and zero-copy sends, which the soak's Unix pairs cannot make
//! (tests/send_zc.rs). The variants of
//! kinds (`read_some_at`, `sync_data`) have their own tests (`semantics.rs`, `registered.rs`).
//!
//! Run it with
//!
//! ```text
//! STATIC_URING_SOAK_SECS=60 cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! (3 s when `STATIC_URING_SOAK_SECS` is unset; at least three rounds). The seed is printed first;
//! `STATIC_URING_SOAK_SEED=<seed>` replays the same operation mix (thread timing still varies).
//!
//! # One round
//!
//! 1. Claim `STORAGE` (a `Storage<64, 16, 1024>` reused round after round). Exactly
//!    `SLOTS - parked` `try_nop`s must succeed and the next one must be `Full`, where `parked` is
//!    the number of slots earlier rounds parked (A10: a slot the kernel had not released at
//!    shutdown is never reused); they must all complete `Ok` once the loop runs.
//! 2. Eight producers share the loop, with `shutdown_timeout` rotating through `None`, `Some(0)`
//!    and `Some(20 ms)`, and a random `idle_spin`, `single_issuer` and `cancel_on_drop`. Each producer alternates
//!    blocking steps (one request, `.wait()`) and sessions of a small executor with a real waker
//!    that keeps up to 24 requests in flight. Requests are created lazily or through `try_*`
//!    (`Full` allowed), with random deadlines (none, past, 1-5 ms, 5-50 ms, up to 1.2 s), and
//!    futures are dropped before their first poll, after one poll, mid-flight, or right after a
//!    `try_*` submitted them. Operations: nop; send and recv on a socket pair whose both ends go
//!    through the loop, and recv on a socket nobody writes (always with a deadline); recv on a
//!    socket a pump thread keeps writing and send on one it keeps draining (any deadline); read_at
//!    of a read-only region (contents checked) and across the end of the file (`UnexpectedEof`);
//!    write_at of a per-producer region; sync of the file, and of a socket (`Os(EINVAL)`); the
//!    vectored forms as their single-buffer forms (two buffers); datagrams each way on a
//!    per-producer UDP pair and accept and connect on one listener (with a deadline: nothing
//!    guarantees a peer); a readable poll on the fed socket; and zero-length and invalid requests,
//!    answered at once.
//! 3. After a random stretch the handles go. Each producer drops its own at its next step, a
//!    session between two polls with its requests still in flight (and some not yet polled). The
//!    test drops its handle a few ms later, or, every other round, after the producers and after
//!    filling the admission table with more receives on a quiet socket than it holds: with a
//!    budget they have no deadline (only the budget can end them: A11 with the table full and
//!    requests queued behind it), without one a short deadline.
//! 4. Checks. Every request ended exactly once: dropped, or with a result allowed for its
//!    operation, its deadline, how it was waited for and the shutdown kind (`Timeout` only with a
//!    deadline; `Closed` only for a request not yet submitted when the last handle went or, with
//!    a budget, never admitted; `Abandoned` only with a budget and never for a caller that still
//!    held a handle; `UnexpectedEof` only across the end of the file; `Os` only for the socket
//!    sync; `Ok` never for those two nor for the quiet socket; `Full` only from `try_*`). Every
//!    buffer came back (the same allocation, data checked where known), except with `Abandoned`.
//!    The loop exited within `shutdown_timeout + 1 s` of the last handle drop (with `None`: the
//!    latest deadline + 1 s). `metrics_reader()` (taken before `run`) shows
//!    `pending_operations == 0`, `completed` equal to the requests that reached the loop, no
//!    abandonment without a budget, at least the timeouts and abandonments the callers saw, no
//!    caught user panic. The read-only region of the file is intact.
//!
//! At the end a last claim checks the slots again; no descriptor leaked (`/proc/self/fd` before
//! the first round and after the last, allowing the storage's eventfd, which lives as long as the
//! storage, and one descriptor per parked request); no memory growth (a counting global allocator:
//! live bytes after the last round at most those after the first, plus the parked requests'
//! buffers and a small margin; VmRSS is printed, not checked: allocator caches and the
//! AddressSanitizer quarantine of `scripts/sanitize` make it grow without a leak). Every wait of the test is bounded: a hang
//! fails the test with the seed, the round and what each producer was doing.

mod common;
#[path = "../examples/common/mod.rs"]
mod net;

use std::fmt::Write as _;
use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use common::{block_on, bounded, join_all, Background, TempFile, HANG};
use static_uring::op::{OpKind, Readiness};
use static_uring::BufError;
use static_uring::{
    op, Config, Error, Handle, IoBuf, IoBufMut, IoBufs, MetricsReader, Op, OpResult, Storage,
};

// ---------------------------------------------------------------------------------------------
// Sizes and knobs

const SLOTS: usize = 64;
const RING: usize = 16;
const WHEEL: usize = 1024;

/// The one storage every round claims again.
static STORAGE: Storage<SLOTS, RING, WHEEL> = Storage::new();

type H = Handle<SLOTS, RING, WHEEL>;
type OpOf<T> = Op<T, SLOTS, RING, WHEEL>;
type Reader = MetricsReader<SLOTS, RING, WHEEL>;

const PRODUCERS: usize = 8;
/// Largest buffer a request carries.
const MAX_BUF: usize = 4096;
/// The largest datagram `send_to` sends (and what `recv_from` receives into).
const DATAGRAM: usize = 1024;
/// The temp file: a read-only pattern region, then one write region per producer.
const RO_LEN: u64 = 32 * 1024;
const REGION: u64 = 4096;
const FILE_LEN: u64 = RO_LEN + REGION * PRODUCERS as u64;
/// Longest deadline handed out, in ms (well inside the 5.1 s wheel horizon).
const LONG_MAX_MS: u64 = 1200;
/// Slack on the loop's exit after the last handle drop, beyond the shutdown budget.
const EXIT_MARGIN: Duration = Duration::from_secs(1);
/// Live bytes a parked request may keep (its buffer, at most `MAX_BUF`, and its `Fd`).
const PARKED_BYTES: isize = 2 * MAX_BUF as isize;
/// Live-byte slack between the first and the last round.
const LIVE_MARGIN: isize = 256 * 1024;

// ---------------------------------------------------------------------------------------------
// Live heap bytes of the whole process: the shared counting allocator

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

fn live_bytes() -> isize {
    counting_alloc::live_bytes() as isize
}

/// VmRSS in KiB (0 if unreadable).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The targets of this process's open descriptors, sorted.
fn open_fds() -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    fds.sort();
    fds
}

/// `after` minus `before`, as multisets.
fn extra_fds(before: &[String], after: &[String]) -> Vec<String> {
    let mut left = before.to_vec();
    let mut extra = Vec::new();
    for fd in after {
        match left.iter().position(|b| b == fd) {
            Some(i) => {
                left.swap_remove(i);
            }
            None => extra.push(fd.clone()),
        }
    }
    extra
}

// ---------------------------------------------------------------------------------------------
// A small xorshift PRNG (seeded through splitmix64)

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_micros(self.range(lo * 1000, hi * 1000))
    }
}

// ---------------------------------------------------------------------------------------------
// Tallies

#[derive(Clone, Copy)]
enum C {
    Requests,
    Ok,
    Timeout,
    Closed,
    Abandoned,
    Eof,
    Os,
    Full,
    Invalid,
    ShortCircuit,
    DropUnpolled,
    DropOnePoll,
    DropMidFlight,
    DropSubmitted,
    Resolved,
    Blocking,
    Async,
    ViaTry,
    /// Receives the test queued to fill the table before the last handle drop.
    Fillers,
    /// Requests known to have reached the loop (submitted), and those that may have.
    Reached,
    MaybeReached,
}

const COUNTERS: usize = C::MaybeReached as usize + 1;
const NAMES: [&str; COUNTERS] = [
    "requests",
    "ok",
    "timeout",
    "closed",
    "abandoned",
    "eof",
    "os",
    "full",
    "invalid",
    "short_circuit",
    "drop_unpolled",
    "drop_one_poll",
    "drop_mid_flight",
    "drop_submitted",
    "resolved",
    "blocking",
    "async",
    "via_try",
    "fillers",
    "reached",
    "maybe_reached",
];

/// The operations of the crate's table (every one is driven).
const KINDS: usize = OpKind::ALL.len();

/// The counters, and the requests resolved per operation kind.
struct Tally([AtomicU64; COUNTERS], [AtomicU64; KINDS]);

impl Tally {
    fn new() -> Self {
        Tally(
            [const { AtomicU64::new(0) }; COUNTERS],
            [const { AtomicU64::new(0) }; KINDS],
        )
    }
    fn add_kind(&self, kind: OpKind) {
        self.1[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
    fn kind(&self, kind: OpKind) -> u64 {
        self.1[kind as usize].load(Ordering::Relaxed)
    }
    fn add(&self, c: C) {
        self.0[c as usize].fetch_add(1, Ordering::Relaxed);
    }
    fn get(&self, c: C) -> u64 {
        self.0[c as usize].load(Ordering::Relaxed)
    }
    fn merge(&self, other: &Tally) {
        let ours = self.0.iter().chain(self.1.iter());
        for (a, b) in ours.zip(other.0.iter().chain(other.1.iter())) {
            a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
    fn drops(&self) -> u64 {
        self.get(C::DropUnpolled)
            + self.get(C::DropOnePoll)
            + self.get(C::DropMidFlight)
            + self.get(C::DropSubmitted)
    }
    fn line(&self, names: &[usize]) -> String {
        let mut s = String::new();
        for &i in names {
            let _ = write!(s, " {}={}", NAMES[i], self.0[i].load(Ordering::Relaxed));
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

/// How often a producer picks each operation (of every kind in the crate's table).
fn weight(kind: OpKind) -> u64 {
    match kind {
        OpKind::Nop => 12,
        OpKind::Send => 14,
        OpKind::Recv => 20,
        OpKind::ReadAt => 12,
        OpKind::WriteAt => 10,
        OpKind::Sync => 8,
        OpKind::Accept
        | OpKind::Connect
        | OpKind::SendTo
        | OpKind::RecvFrom
        | OpKind::SendVectored
        | OpKind::WriteAtVectored
        | OpKind::Poll
        | OpKind::Sleep => 4,
        // Multishot streams are not single requests; tests/multishot.rs drives them.
        OpKind::AcceptMulti | OpKind::RecvMulti | OpKind::Next => 0,
        // Messages need a second loop's mailbox: tests/messages.rs drives them, not the soak.
        OpKind::Post | OpKind::RecvMessage => 0,
        // Never picked: the soak's pairs are Unix sockets, which cannot send zero-copy (every
        // one would end `Os(EOPNOTSUPP)`); tests/send_zc.rs drives them over TCP.
        OpKind::SendZc | OpKind::SendVectoredZc => 0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    None,
    /// Both ends of the pair go through the loop.
    LoopPair,
    /// The pump writes the other end.
    Fed,
    /// The pump drains the other end.
    Sink,
    /// Nobody ever writes the other end: only a deadline (or the shutdown) ends the request.
    Quiet,
    /// The read-only pattern region of the file.
    RoFile,
    /// This producer's write region.
    RwFile,
    /// A read that crosses the end of the file.
    PastEof,
    /// fsync of a socket.
    Socket,
    /// This producer's UDP pair: datagrams sent to `b` from `a`, received on `b`.
    Udp,
    /// The round's TCP listener: connects reach it, accepts take them.
    Listener,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edge {
    No,
    /// Zero-length: `Ok` at once, no slot.
    ZeroLen,
    /// Bad bounds: `InvalidInput` at once, buffer back.
    Invalid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    None,
    Past,
    Short,
    Medium,
    Long,
}

/// What a request was built with, to judge its result.
#[derive(Debug, Clone)]
struct Spec {
    kind: OpKind,
    target: Target,
    edge: Edge,
    class: Class,
    deadline: Option<Instant>,
    via_try: bool,
    /// Buffer identity: address and capacity (0 for none).
    ptr: usize,
    cap: usize,
    /// send/write_at: bytes; recv/read_at: `len`.
    len: usize,
    /// recv: offset and exact; the initial length of the buffer (filled with 0xAA).
    offset: usize,
    exact: bool,
    pre_len: usize,
    /// read_at/write_at file offset.
    file_off: u64,
}

/// A result of any of the shapes.
enum Res {
    W(OpResult<op::Send>),
    R(OpResult<op::Recv>),
    Rd(OpResult<op::ReadAt>),
    U(OpResult<op::Nop>),
    V(OpResult<op::SendVectored>),
    F(OpResult<op::RecvFrom>),
}

impl Res {
    /// The result of an operation without a buffer, its value dropped.
    fn unit<T>(result: Result<T, Error>) -> Res {
        Res::U(result.map(drop))
    }
}

/// Declares `AnyOp` (an operation of any kind the soak runs) and `AnyTask` (the same, pinned
/// for polling), one variant per operation with the `Res` shape it resolves to.
macro_rules! any_op {
    ($($variant:ident($op:ty) => $res:expr),* $(,)?) => {
        enum AnyOp {
            $($variant(OpOf<$op>),)*
        }

        enum AnyTask {
            $($variant(Pin<Box<OpOf<$op>>>),)*
        }

        impl AnyOp {
            fn wait(self) -> Res {
                match self {
                    $(AnyOp::$variant(op) => $res(op.wait()),)*
                }
            }

            fn pin(self) -> AnyTask {
                match self {
                    $(AnyOp::$variant(op) => AnyTask::$variant(Box::pin(op)),)*
                }
            }
        }

        impl AnyTask {
            fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Res> {
                match self {
                    $(AnyTask::$variant(op) => op.as_mut().poll(cx).map($res),)*
                }
            }

            /// Whether the request is in the loop's hands (from `Op`'s `Debug`, written
            /// without allocating).
            fn submitted(&self) -> bool {
                let mut text = StackText::default();
                let _ = match self {
                    $(AnyTask::$variant(op) => write!(text, "{:?}", &**op),)*
                };
                text.as_str().contains("\"submitted\"")
            }
        }
    };
}

any_op! {
    Send(op::Send) => Res::W,
    WriteAt(op::WriteAt) => Res::W,
    SendTo(op::SendTo) => Res::W,
    Recv(op::Recv) => Res::R,
    ReadAt(op::ReadAt) => Res::Rd,
    RecvFrom(op::RecvFrom) => Res::F,
    SendVectored(op::SendVectored) => Res::V,
    WriteAtVectored(op::WriteAtVectored) => Res::V,
    Nop(op::Nop) => Res::U,
    Sync(op::Sync) => Res::U,
    Accept(op::Accept) => Res::unit,
    Connect(op::Connect) => Res::unit,
    Poll(op::Poll) => Res::unit,
    Sleep(op::Sleep) => Res::U,
}

/// A fixed buffer for short `Debug` texts.
struct StackText {
    buf: [u8; 128],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        StackText {
            buf: [0; 128],
            len: 0,
        }
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl StackText {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

/// The byte at `offset` of the read-only region.
fn pattern(offset: u64) -> u8 {
    (offset.wrapping_mul(31) ^ (offset >> 8) ^ 0x5A) as u8
}

// ---------------------------------------------------------------------------------------------
// Round state

struct Pair {
    a: Arc<UnixStream>,
    b: Arc<UnixStream>,
}

fn pair() -> Pair {
    let (a, b) = UnixStream::pair().expect("socketpair");
    Pair {
        a: Arc::new(a),
        b: Arc::new(b),
    }
}

/// Descriptors of one round.
struct Resources {
    file: TempFile,
    /// `a` sends through the loop, `b` receives through the loop.
    loop_pairs: Vec<Pair>,
    /// The pump writes `a`; `b` receives through the loop.
    fed: Vec<Pair>,
    /// Nobody writes `a`; `b` receives through the loop.
    quiet: Vec<Pair>,
    /// `a` sends through the loop; the pump reads `b`.
    sink: Vec<Pair>,
    /// `send_to` sends from `.0` to `.1`; `recv_from` receives on `.1`.
    udp: Vec<(Arc<UdpSocket>, Arc<UdpSocket>)>,
    /// What `connect` connects to and `accept` accepts on.
    listener: Arc<TcpListener>,
}

impl Resources {
    fn new() -> Self {
        let mut content = vec![0u8; FILE_LEN as usize];
        for (i, byte) in content[..RO_LEN as usize].iter_mut().enumerate() {
            *byte = pattern(i as u64);
        }
        Resources {
            file: TempFile::with_contents(&content),
            loop_pairs: (0..PRODUCERS).map(|_| pair()).collect(),
            fed: (0..PRODUCERS).map(|_| pair()).collect(),
            // One more for the test's own table fillers.
            quiet: (0..=PRODUCERS).map(|_| pair()).collect(),
            sink: (0..PRODUCERS).map(|_| pair()).collect(),
            udp: (0..PRODUCERS)
                .map(|_| {
                    let bind = || Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
                    (bind(), bind())
                })
                .collect(),
            listener: Arc::new(TcpListener::bind("127.0.0.1:0").unwrap()),
        }
    }
}

/// What a producer is doing (for the hang report).
const IDLE: u64 = 0;
const BLOCKED: u64 = 1;
const SESSION: u64 = 2;
const DROPPED: u64 = 3;
const EXITED: u64 = 4;

struct Round {
    index: usize,
    budget: Option<Duration>,
    origin: Instant,
    stop: AtomicBool,
    /// Handles dropped so far (producers and the test's own).
    drops: AtomicUsize,
    /// Nanoseconds after `origin` of the latest handle drop and the latest deadline handed out.
    last_drop_ns: AtomicU64,
    latest_deadline_ns: AtomicU64,
    tally: Tally,
    failures: Mutex<Vec<String>>,
    activity: [AtomicU64; PRODUCERS],
    reader: Reader,
}

impl Round {
    fn ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_nanos() as u64
    }

    fn note_drop(&self) {
        self.last_drop_ns
            .fetch_max(self.ns(Instant::now()), Ordering::SeqCst);
        self.drops.fetch_add(1, Ordering::SeqCst);
    }

    fn fail(&self, what: String) {
        let mut failures = self.failures.lock().unwrap();
        if failures.len() < 64 {
            failures.push(what);
        }
    }

    fn activity_report(&self) -> String {
        let mut s = String::new();
        for (pid, a) in self.activity.iter().enumerate() {
            let a = a.load(Ordering::SeqCst);
            let state = match a >> 8 {
                IDLE => "idle",
                BLOCKED => "blocked in wait()",
                SESSION => "polling a session",
                DROPPED => "handle dropped",
                EXITED => "exited",
                _ => "?",
            };
            let _ = write!(s, " p{pid}: {state}");
            if a >> 8 == BLOCKED {
                let kinds = OpKind::ALL;
                let _ = write!(s, " {:?}", kinds[(a & 0xff) as usize % kinds.len()]);
            }
            s.push(';');
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Building requests

fn deadline(rng: &mut Rng, class: Class) -> Option<Instant> {
    let now = Instant::now();
    match class {
        Class::None => None,
        Class::Past => Some(now.checked_sub(rng.ms(0, 20)).unwrap_or(now)),
        Class::Short => Some(now + rng.ms(1, 5)),
        Class::Medium => Some(now + rng.ms(5, 50)),
        Class::Long => Some(now + rng.ms(100, LONG_MAX_MS)),
    }
}

fn random_spec(rng: &mut Rng, pid: usize) -> Spec {
    let total: u64 = OpKind::ALL.iter().map(|&k| weight(k)).sum();
    let mut pick = rng.range(0, total - 1);
    let kind = *OpKind::ALL
        .iter()
        .find(|&&k| {
            let hit = pick < weight(k);
            pick = pick.saturating_sub(weight(k));
            hit
        })
        .expect("the picks cover the weights");
    let target = match kind {
        OpKind::Nop => Target::None,
        OpKind::Send if rng.chance(50) => Target::LoopPair,
        OpKind::Send => Target::Sink,
        OpKind::Recv => match rng.range(0, 99) {
            0..=44 => Target::LoopPair,
            45..=84 => Target::Fed,
            _ => Target::Quiet,
        },
        OpKind::ReadAt if rng.chance(15) => Target::PastEof,
        OpKind::ReadAt => Target::RoFile,
        OpKind::WriteAt => Target::RwFile,
        OpKind::Sync if rng.chance(10) => Target::Socket,
        OpKind::Sync => Target::RwFile,
        OpKind::SendVectored if rng.chance(50) => Target::LoopPair,
        OpKind::SendVectored => Target::Sink,
        OpKind::WriteAtVectored => Target::RwFile,
        OpKind::SendTo | OpKind::RecvFrom => Target::Udp,
        OpKind::Accept | OpKind::Connect => Target::Listener,
        // Readable once the pump writes.
        OpKind::Poll => Target::Fed,
        OpKind::Sleep => Target::None,
        OpKind::AcceptMulti
        | OpKind::RecvMulti
        | OpKind::Next
        | OpKind::Post
        | OpKind::RecvMessage
        | OpKind::SendZc
        | OpKind::SendVectoredZc => unreachable!("weight 0"),
    };
    let edge = match (kind, rng.range(0, 99)) {
        (
            OpKind::Send
            | OpKind::Recv
            | OpKind::ReadAt
            | OpKind::WriteAt
            | OpKind::SendVectored
            | OpKind::WriteAtVectored,
            0..=2,
        ) => Edge::ZeroLen,
        (OpKind::Recv | OpKind::ReadAt, 3..=4) => Edge::Invalid,
        _ => Edge::No,
    };
    let mut class = match rng.range(0, 99) {
        0..=29 => Class::None,
        30..=39 => Class::Past,
        40..=64 => Class::Short,
        65..=91 => Class::Medium,
        _ => Class::Long,
    };
    let unanswered = matches!(kind, OpKind::RecvFrom | OpKind::Accept | OpKind::Connect);
    if matches!(target, Target::LoopPair | Target::Quiet) || unanswered {
        // Nothing guarantees a peer: a deadline guarantees an end. These requests hold a table
        // entry until it, so long ones are rarer (enough of them still fill the table).
        class = match class {
            Class::None => Class::Medium,
            Class::Long if rng.chance(50) => Class::Medium,
            other => other,
        };
    }
    let mut spec = Spec {
        kind,
        target,
        edge,
        class,
        deadline: None,
        via_try: false,
        ptr: 0,
        cap: 0,
        len: 0,
        offset: 0,
        exact: false,
        pre_len: 0,
        file_off: 0,
    };
    match kind {
        OpKind::Send | OpKind::WriteAt | OpKind::SendVectored | OpKind::WriteAtVectored => {
            let max = match kind {
                OpKind::Send | OpKind::SendVectored => MAX_BUF,
                _ => REGION as usize,
            };
            spec.len = if edge == Edge::ZeroLen {
                0
            } else {
                rng.range(1, max as u64) as usize
            };
            spec.file_off = RO_LEN + REGION * pid as u64 + rng.range(0, REGION - spec.len as u64);
        }
        OpKind::Recv => {
            let cap = rng.range(1, MAX_BUF as u64) as usize;
            spec.cap = cap;
            spec.len = rng.range(1, cap as u64) as usize;
            spec.offset = if rng.chance(60) {
                0
            } else {
                rng.range(0, spec.len as u64 - 1) as usize
            };
            spec.exact = rng.chance(40);
            spec.pre_len = if rng.chance(50) {
                0
            } else {
                rng.range(0, cap as u64) as usize
            };
            match edge {
                Edge::ZeroLen => spec.offset = spec.len,
                Edge::Invalid if rng.chance(50) && spec.len < cap => {
                    spec.offset = spec.len + 1;
                }
                Edge::Invalid => spec.len = cap + 1,
                Edge::No => {}
            }
        }
        OpKind::ReadAt => {
            spec.len = match edge {
                Edge::ZeroLen => 0,
                _ => rng.range(1, MAX_BUF as u64) as usize,
            };
            spec.cap = spec.len + rng.range(0, 64) as usize;
            if edge == Edge::Invalid {
                spec.cap = spec.len - 1;
            }
            spec.file_off = if target == Target::PastEof {
                // Starts at most 100 bytes before the end, and ends past it.
                let start = FILE_LEN - rng.range(0, 100);
                let need = (FILE_LEN - start + 1) as usize;
                if spec.len < need && edge == Edge::No {
                    spec.len = need;
                    spec.cap = spec.cap.max(need);
                }
                start
            } else {
                rng.range(0, RO_LEN - spec.len as u64)
            };
        }
        OpKind::SendTo => spec.len = rng.range(0, DATAGRAM as u64) as usize,
        OpKind::RecvFrom => spec.cap = DATAGRAM,
        OpKind::Nop
        | OpKind::Sync
        | OpKind::Accept
        | OpKind::Connect
        | OpKind::Poll
        | OpKind::Sleep => {}
        OpKind::AcceptMulti
        | OpKind::RecvMulti
        | OpKind::Next
        | OpKind::Post
        | OpKind::RecvMessage
        | OpKind::SendZc
        | OpKind::SendVectoredZc => unreachable!("weight 0"),
    }
    spec
}

/// A receive on the test's own quiet socket, through `try_recv`.
fn filler_spec(class: Class) -> Spec {
    Spec {
        kind: OpKind::Recv,
        target: Target::Quiet,
        edge: Edge::No,
        class,
        deadline: None,
        via_try: true,
        ptr: 0,
        cap: 64,
        len: 64,
        offset: 0,
        exact: false,
        pre_len: 0,
        file_off: 0,
    }
}

fn send_buf(spec: &mut Spec) -> IoBuf {
    let bytes: Vec<u8> = (0..spec.len).map(|i| (i as u8) ^ 0x3C).collect();
    let buf = IoBuf::from(bytes);
    spec.ptr = buf.as_ref().as_ptr() as usize;
    spec.cap = buf.capacity();
    buf
}

fn recv_buf(spec: &mut Spec) -> IoBufMut {
    let mut bytes = Vec::with_capacity(spec.cap);
    bytes.resize(spec.pre_len, 0xAA);
    let buf = IoBufMut::from(bytes);
    spec.ptr = buf.as_ref().as_ptr() as usize;
    spec.cap = buf.capacity();
    buf
}

/// Creates the request `spec` describes (lazy, or submitted now through `try_*`); `Err` is the
/// immediate answer of a `try_*` call, in the operation's own result shape.
#[allow(clippy::result_large_err)] // a refusal hands the buffers back by value
fn build(
    h: &H,
    spec: &mut Spec,
    res: &Resources,
    pid: usize,
    rng: &mut Rng,
    round: &Round,
) -> Result<AnyOp, Res> {
    spec.deadline = deadline(rng, spec.class);
    if let Some(d) = spec.deadline {
        round
            .latest_deadline_ns
            .fetch_max(round.ns(d), Ordering::SeqCst);
    }
    let d = spec.deadline;
    let t = spec.via_try;
    let file = || res.file.file.clone();
    match spec.kind {
        OpKind::Nop if t => h
            .nop()
            .deadline(d)
            .try_submit()
            .map(AnyOp::Nop)
            .map_err(|e| Res::U(Err(e))),
        OpKind::Nop => Ok(AnyOp::Nop(h.nop().deadline(d))),
        OpKind::Send => {
            let fd = match spec.target {
                Target::LoopPair => res.loop_pairs[pid].a.clone(),
                _ => res.sink[pid].a.clone(),
            };
            let buf = send_buf(spec);
            if t {
                h.send(fd, buf)
                    .deadline(d)
                    .try_submit()
                    .map(AnyOp::Send)
                    .map_err(|e| Res::W(Err(e)))
            } else {
                Ok(AnyOp::Send(h.send(fd, buf).deadline(d)))
            }
        }
        OpKind::Recv => {
            let fd = match spec.target {
                Target::LoopPair => res.loop_pairs[pid].b.clone(),
                Target::Quiet => res.quiet[pid].b.clone(),
                _ => res.fed[pid].b.clone(),
            };
            let buf = recv_buf(spec);
            let (offset, len, exact) = (spec.offset, spec.len, spec.exact);
            if t {
                bounded(h.recv(fd, buf).offset(offset), len, exact)
                    .deadline(d)
                    .try_submit()
                    .map(AnyOp::Recv)
                    .map_err(|e| Res::R(Err(e)))
            } else {
                Ok(AnyOp::Recv(
                    bounded(h.recv(fd, buf).offset(offset), len, exact).deadline(d),
                ))
            }
        }
        OpKind::ReadAt => {
            let buf = IoBufMut::with_capacity(spec.cap);
            spec.ptr = buf.as_ref().as_ptr() as usize;
            spec.cap = buf.capacity();
            let (off, len) = (spec.file_off, spec.len);
            if t {
                h.read_at(file(), off, buf)
                    .limit(len)
                    .deadline(d)
                    .try_submit()
                    .map(AnyOp::ReadAt)
                    .map_err(|e| Res::Rd(Err(e)))
            } else {
                Ok(AnyOp::ReadAt(
                    h.read_at(file(), off, buf).limit(len).deadline(d),
                ))
            }
        }
        OpKind::WriteAt => {
            let buf = send_buf(spec);
            let off = spec.file_off;
            if t {
                h.write_at(file(), off, buf)
                    .deadline(d)
                    .try_submit()
                    .map(AnyOp::WriteAt)
                    .map_err(|e| Res::W(Err(e)))
            } else {
                Ok(AnyOp::WriteAt(h.write_at(file(), off, buf).deadline(d)))
            }
        }
        OpKind::Sync => {
            let result = match (spec.target, t) {
                (Target::Socket, true) => h
                    .sync(res.loop_pairs[pid].a.clone())
                    .deadline(d)
                    .try_submit(),
                (Target::Socket, false) => Ok(h.sync(res.loop_pairs[pid].a.clone()).deadline(d)),
                (_, true) => h.sync(file()).deadline(d).try_submit(),
                (_, false) => Ok(h.sync(file()).deadline(d)),
            };
            result.map(AnyOp::Sync).map_err(|e| Res::U(Err(e)))
        }
        OpKind::SendVectored | OpKind::WriteAtVectored => {
            let bufs = send_bufs(spec);
            let refused = |e| Res::V(Err(e));
            if spec.kind == OpKind::SendVectored {
                let fd = match spec.target {
                    Target::LoopPair => res.loop_pairs[pid].a.clone(),
                    _ => res.sink[pid].a.clone(),
                };
                go(
                    h.send_vectored(fd, bufs).deadline(d),
                    t,
                    AnyOp::SendVectored,
                    refused,
                )
            } else {
                let op = h.write_at_vectored(file(), spec.file_off, bufs);
                go(op.deadline(d), t, AnyOp::WriteAtVectored, refused)
            }
        }
        OpKind::SendTo => {
            let (from, to) = &res.udp[pid];
            let op = h.send_to(from.clone(), send_buf(spec), to.local_addr().unwrap());
            go(op.deadline(d), t, AnyOp::SendTo, |e| Res::W(Err(e)))
        }
        OpKind::RecvFrom => {
            let op = h.recv_from(res.udp[pid].1.clone(), recv_buf(spec));
            go(op.deadline(d), t, AnyOp::RecvFrom, |e| Res::F(Err(e)))
        }
        OpKind::Accept => {
            let op = h.accept(res.listener.clone()).deadline(d);
            go(op, t, AnyOp::Accept, |e| Res::U(Err(e)))
        }
        OpKind::Connect => {
            let addr = res.listener.local_addr().unwrap();
            let op = h.connect(net::tcp_socket(addr), addr).deadline(d);
            go(op, t, AnyOp::Connect, |e| Res::U(Err(e)))
        }
        OpKind::Poll => {
            let op = h.poll(res.fed[pid].b.clone(), Readiness::READABLE);
            go(op.deadline(d), t, AnyOp::Poll, |e| Res::U(Err(e)))
        }
        // A timer's deadline is its end (it ends `Ok` then); without one, a short sleep.
        OpKind::Sleep => {
            let op = match d {
                Some(end) => h.sleep_until(end),
                None => h.sleep(Duration::from_millis(rng.range(0, 20))),
            };
            go(op, t, AnyOp::Sleep, |e| Res::U(Err(e)))
        }
        OpKind::AcceptMulti
        | OpKind::RecvMulti
        | OpKind::Next
        | OpKind::Post
        | OpKind::RecvMessage
        | OpKind::SendZc
        | OpKind::SendVectoredZc => unreachable!("weight 0"),
    }
}

/// `op` as an `AnyOp`, submitted now (`try_submit`, whose refusal is `refused` in `Res`'s
/// shape) or lazily.
#[allow(clippy::result_large_err)] // a refusal hands the buffers back by value
fn go<O: op::Operation>(
    op: OpOf<O>,
    now: bool,
    wrap: fn(OpOf<O>) -> AnyOp,
    refused: fn(O::Error) -> Res,
) -> Result<AnyOp, Res> {
    if now {
        op.try_submit().map(wrap).map_err(refused)
    } else {
        Ok(wrap(op))
    }
}

/// `spec.len` bytes in two buffers (the first remembered as the request's identity).
fn send_bufs(spec: &mut Spec) -> IoBufs {
    let bytes: Vec<u8> = (0..spec.len).map(|i| (i as u8) ^ 0x3C).collect();
    let (head, tail) = bytes.split_at(spec.len / 2);
    let bufs: IoBufs = [IoBuf::from(head.to_vec()), IoBuf::from(tail.to_vec())]
        .into_iter()
        .collect();
    spec.ptr = bufs[0].as_ref().as_ptr() as usize;
    spec.cap = spec.len;
    bufs
}

// ---------------------------------------------------------------------------------------------
// Judging results

/// How a result was obtained.
#[derive(Debug, Clone, Copy)]
struct How {
    /// The `try_*` call itself answered.
    immediate: bool,
    /// `.wait()` on the producer thread, which held its handle throughout.
    blocking: bool,
    /// The future was seen in the loop's hands before it finished.
    submitted_seen: bool,
}

fn same_ro(buf: &IoBuf, spec: &Spec) -> Result<(), String> {
    if buf.as_ref().as_ptr() as usize != spec.ptr || buf.len() != spec.len {
        return Err(format!(
            "a different buffer came back (len {} cap {}, expected len {} cap {})",
            buf.len(),
            buf.capacity(),
            spec.len,
            spec.cap
        ));
    }
    Ok(())
}

fn same_mut(buf: &IoBufMut, spec: &Spec) -> Result<(), String> {
    if buf.as_ref().as_ptr() as usize != spec.ptr || buf.capacity() != spec.cap {
        return Err(format!(
            "a different buffer came back (len {} cap {}, expected cap {})",
            buf.len(),
            buf.capacity(),
            spec.cap
        ));
    }
    Ok(())
}

/// The buffer of an error result: ours, or (only when abandoned) none at all.
fn err_buf(same: Result<(), String>, capacity: usize, e: Error) -> Result<(), String> {
    if e == Error::Abandoned && capacity == 0 {
        return Ok(());
    }
    same
}

fn recv_ok(buf: &IoBufMut, filled: usize, spec: &Spec) -> Result<(), String> {
    same_mut(buf, spec)?;
    if buf.len() != filled {
        return Err(format!("buffer len {} != filled {filled}", buf.len()));
    }
    let expect_ok = if spec.edge == Edge::ZeroLen {
        filled == spec.offset
    } else if spec.exact {
        filled == spec.len
    } else {
        filled > spec.offset && filled <= spec.len
    };
    if !expect_ok {
        return Err(format!("filled {filled} out of range"));
    }
    let bytes = buf.as_ref();
    for (i, &b) in bytes[..spec.offset].iter().enumerate() {
        let want = if i < spec.pre_len { 0xAA } else { 0 };
        if b != want {
            return Err(format!(
                "byte {i} below the offset is {b:#x}, not {want:#x}"
            ));
        }
    }
    Ok(())
}

/// The two buffers of a vectored request, whole.
fn same_bufs(bufs: &IoBufs, spec: &Spec) -> Result<(), String> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    if bufs.len() != 2 || bufs[0].as_ref().as_ptr() as usize != spec.ptr || total != spec.len {
        return Err(format!(
            "different buffers came back ({} of {total} bytes, expected 2 of {})",
            bufs.len(),
            spec.len
        ));
    }
    Ok(())
}

fn datagram_ok(buf: &IoBufMut, len: usize, spec: &Spec) -> Result<(), String> {
    same_mut(buf, spec)?;
    if buf.len() != len || len > spec.cap {
        return Err(format!(
            "datagram of {len} in a buffer of len {}",
            buf.len()
        ));
    }
    Ok(())
}

fn read_ok(buf: &IoBufMut, spec: &Spec) -> Result<(), String> {
    same_mut(buf, spec)?;
    if buf.len() != spec.len {
        return Err(format!("read len {} != {}", buf.len(), spec.len));
    }
    if spec.target == Target::RoFile {
        if let Some(i) = (0..spec.len).find(|&i| buf[i] != pattern(spec.file_off + i as u64)) {
            return Err(format!(
                "read byte {i} (file offset {}) is {:#x}, not {:#x}",
                spec.file_off + i as u64,
                buf[i],
                pattern(spec.file_off + i as u64)
            ));
        }
    }
    Ok(())
}

/// Whether error `e` may end `spec` obtained `how` under `budget`.
fn error_allowed(e: Error, spec: &Spec, how: How, budget: Option<Duration>) -> bool {
    if spec.edge == Edge::ZeroLen {
        return false;
    }
    if spec.edge == Edge::Invalid {
        return e == Error::InvalidInput;
    }
    let from_loop = !how.immediate;
    match e {
        Error::Full => how.immediate && spec.via_try,
        Error::Timeout => from_loop && spec.deadline.is_some(),
        // Not yet submitted when the last handle went, or (with a budget) never admitted.
        Error::Closed => from_loop && !how.blocking && (budget.is_some() || !how.submitted_seen),
        Error::Abandoned => from_loop && !how.blocking && budget.is_some(),
        Error::UnexpectedEof => from_loop && spec.target == Target::PastEof,
        Error::Os(errno) => from_loop && spec.target == Target::Socket && errno == libc::EINVAL,
        _ => false,
    }
}

fn ok_allowed(spec: &Spec) -> bool {
    match spec.edge {
        Edge::ZeroLen => true,
        Edge::Invalid => false,
        Edge::No => !matches!(
            spec.target,
            Target::PastEof | Target::Socket | Target::Quiet
        ),
    }
}

fn check(round: &Round, pid: usize, spec: &Spec, res: Res, how: How) {
    let (error, buffer) = match &res {
        Res::W(Ok(buf)) => (None, same_ro(buf, spec)),
        Res::W(Err(BufError { buf, error: e })) => {
            (Some(*e), err_buf(same_ro(buf, spec), buf.capacity(), *e))
        }
        Res::R(Ok((buf, received))) => (None, recv_ok(buf, spec.offset + *received, spec)),
        Res::R(Err(BufError { buf, error: e })) => {
            (Some(*e), err_buf(same_mut(buf, spec), buf.capacity(), *e))
        }
        Res::Rd(Ok(buf)) => (None, read_ok(buf, spec)),
        Res::Rd(Err(BufError { buf, error: e })) => {
            (Some(*e), err_buf(same_mut(buf, spec), buf.capacity(), *e))
        }
        Res::U(r) => (r.err(), Ok(())),
        Res::V(Ok(bufs)) => (None, same_bufs(bufs, spec)),
        Res::V(Err(BufError { buf, error: e })) => {
            let gone = buf.is_empty();
            (
                Some(*e),
                err_buf(same_bufs(buf, spec), usize::from(!gone), *e),
            )
        }
        Res::F(Ok((buf, len, _))) => (None, datagram_ok(buf, *len, spec)),
        Res::F(Err(BufError { buf, error: e })) => {
            (Some(*e), err_buf(same_mut(buf, spec), buf.capacity(), *e))
        }
    };
    drop(res);
    let t = &round.tally;
    t.add(C::Resolved);
    t.add_kind(spec.kind);
    if spec.edge == Edge::No && !how.immediate {
        // A result from the loop, or Closed: before submission (the claim found the loop
        // closed) or after it (swept at shutdown) - the latter is certain only if it was seen.
        if error == Some(Error::Closed) && !how.submitted_seen {
            t.add(C::MaybeReached);
        } else {
            t.add(C::Reached);
        }
    }
    let allowed = match error {
        None => {
            t.add(if spec.edge == Edge::ZeroLen {
                C::ShortCircuit
            } else {
                C::Ok
            });
            ok_allowed(spec)
        }
        Some(e) => {
            t.add(match e {
                Error::Timeout => C::Timeout,
                Error::Closed => C::Closed,
                Error::Abandoned => C::Abandoned,
                Error::UnexpectedEof => C::Eof,
                Error::Os(_) => C::Os,
                Error::Full => C::Full,
                _ => C::Invalid,
            });
            error_allowed(e, spec, how, round.budget)
        }
    };
    if !allowed || buffer.is_err() {
        round.fail(format!(
            "round {} (shutdown_timeout {:?}) producer {pid}: {} result {:?}{} for {spec:?} obtained {how:?}, stop={}",
            round.index,
            round.budget,
            if allowed { "allowed" } else { "UNEXPECTED" },
            error.map_or("Ok".to_string(), |e| format!("{e:?}")),
            buffer.err().map_or(String::new(), |b| format!(" BUFFER: {b}")),
            round.stop.load(Ordering::SeqCst),
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Producers

struct Unpark(thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

fn kind_code(kind: OpKind) -> u64 {
    kind as u64
}

fn producer(round: Arc<Round>, res: Arc<Resources>, pid: usize, handle: H, seed: u64) {
    let mut rng = Rng::new(seed);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut handle = Some(handle);
    while handle.is_some() {
        if round.stop.load(Ordering::SeqCst) {
            drop(handle.take());
            round.note_drop();
            round.activity[pid].store(DROPPED << 8, Ordering::SeqCst);
            break;
        }
        if rng.chance(50) {
            for _ in 0..rng.range(1, 10) {
                if round.stop.load(Ordering::SeqCst) {
                    break;
                }
                blocking_step(&round, &res, pid, handle.as_ref().unwrap(), &mut rng);
            }
        } else {
            session(&round, &res, pid, &mut handle, &mut rng, &waker);
        }
    }
    round.activity[pid].store(EXITED << 8, Ordering::SeqCst);
}

/// One request, waited for with `.wait()` (or dropped without a poll).
fn blocking_step(round: &Round, res: &Resources, pid: usize, h: &H, rng: &mut Rng) {
    let mut spec = random_spec(rng, pid);
    spec.via_try = rng.chance(30);
    let t = &round.tally;
    t.add(C::Requests);
    t.add(C::Blocking);
    if spec.via_try {
        t.add(C::ViaTry);
    }
    let immediate = How {
        immediate: true,
        blocking: true,
        submitted_seen: false,
    };
    match build(h, &mut spec, res, pid, rng, round) {
        Err(result) => check(round, pid, &spec, result, immediate),
        Ok(op) if rng.chance(15) => {
            drop(op);
            if spec.via_try {
                t.add(C::DropSubmitted);
                if spec.edge == Edge::No {
                    t.add(C::Reached);
                }
            } else {
                t.add(C::DropUnpolled);
            }
        }
        Ok(op) => {
            round.activity[pid].store(BLOCKED << 8 | kind_code(spec.kind), Ordering::SeqCst);
            let result = op.wait();
            round.activity[pid].store(IDLE << 8, Ordering::SeqCst);
            let how = How {
                immediate: false,
                blocking: true,
                submitted_seen: spec.edge == Edge::No,
            };
            check(round, pid, &spec, result, how);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Await,
    /// Dropped before its first poll, this many executor iterations after its creation.
    DropBeforePoll(u32),
    DropAfterOnePoll,
    /// Dropped this long after its first poll if still pending.
    DropMidFlight(Duration),
}

struct Task {
    spec: Spec,
    op: Option<AnyTask>,
    fate: Fate,
    /// Executor iteration of its creation, and of its first poll.
    born: u32,
    first_poll_at: u32,
    polls: u32,
    submitted_seen: bool,
    drop_at: Option<Instant>,
    /// Past this, the request is declared hung.
    limit: Instant,
}

/// A small executor on the producer thread: keeps up to `concurrency` requests in flight, creating
/// new ones as others end, until it has created its share; once the stop flag is up it drops the
/// producer's handle between two polls, with its requests still in flight, and polls them out.
fn session(
    round: &Round,
    res: &Resources,
    pid: usize,
    handle: &mut Option<H>,
    rng: &mut Rng,
    waker: &Waker,
) {
    round.activity[pid].store(SESSION << 8, Ordering::SeqCst);
    let t = &round.tally;
    let concurrency = rng.range(1, 24) as usize;
    let mut to_create = rng.range(1, 200);
    let mut tasks: Vec<Task> = Vec::with_capacity(concurrency);
    let mut cx = Context::from_waker(waker);
    let mut iteration = 0u32;
    loop {
        while tasks.len() < concurrency && to_create > 0 {
            let Some(h) = handle.as_ref() else { break };
            to_create -= 1;
            let mut spec = random_spec(rng, pid);
            spec.via_try = rng.chance(25);
            t.add(C::Requests);
            t.add(C::Async);
            if spec.via_try {
                t.add(C::ViaTry);
            }
            let op = match build(h, &mut spec, res, pid, rng, round) {
                Ok(op) => op,
                Err(result) => {
                    let how = How {
                        immediate: true,
                        blocking: false,
                        submitted_seen: false,
                    };
                    check(round, pid, &spec, result, how);
                    continue;
                }
            };
            let fate = match rng.range(0, 99) {
                0..=54 => Fate::Await,
                55..=64 => Fate::DropBeforePoll(rng.range(0, 3) as u32),
                65..=74 => Fate::DropAfterOnePoll,
                _ => Fate::DropMidFlight(rng.ms(0, 10)),
            };
            let first_poll_at = iteration
                + if rng.chance(20) {
                    rng.range(1, 5) as u32
                } else {
                    0
                };
            let limit = spec.deadline.unwrap_or(Instant::now()).max(Instant::now()) + HANG;
            // A request `try_*` accepted is in the loop's hands already.
            let submitted_seen = spec.via_try && spec.edge == Edge::No;
            tasks.push(Task {
                spec,
                op: Some(op.pin()),
                fate,
                born: iteration,
                first_poll_at,
                polls: 0,
                submitted_seen,
                drop_at: None,
                limit,
            });
        }
        for task in tasks.iter_mut() {
            let Some(op) = task.op.as_mut() else { continue };
            if let Fate::DropBeforePoll(after) = task.fate {
                if task.polls == 0 && iteration >= task.born + after {
                    task.op = None;
                    t.add(if task.spec.via_try {
                        C::DropSubmitted
                    } else {
                        C::DropUnpolled
                    });
                    if task.submitted_seen {
                        t.add(C::Reached);
                    }
                    continue;
                }
            }
            if iteration < task.first_poll_at {
                continue;
            }
            match op.poll(&mut cx) {
                Poll::Ready(result) => {
                    let how = How {
                        immediate: false,
                        blocking: false,
                        submitted_seen: task.submitted_seen,
                    };
                    task.op = None;
                    check(round, pid, &task.spec, result, how);
                }
                Poll::Pending => {
                    task.polls += 1;
                    if !task.submitted_seen && op.submitted() {
                        task.submitted_seen = true;
                    }
                    let now = Instant::now();
                    let dropped = match task.fate {
                        Fate::DropAfterOnePoll => Some(C::DropOnePoll),
                        Fate::DropMidFlight(after)
                            if now >= *task.drop_at.get_or_insert(now + after) =>
                        {
                            Some(C::DropMidFlight)
                        }
                        _ => None,
                    };
                    if let Some(c) = dropped {
                        // Still pending, so still where the last poll left it: waiting for a
                        // slot (never reaches the loop) or submitted.
                        task.op = None;
                        t.add(c);
                        if task.submitted_seen {
                            t.add(C::Reached);
                        }
                    }
                }
            }
        }
        tasks.retain(|task| task.op.is_some());
        if handle.is_some() && round.stop.load(Ordering::SeqCst) {
            // The handle goes while these requests are still in flight.
            drop(handle.take());
            round.note_drop();
        }
        if tasks.is_empty() && (to_create == 0 || handle.is_none()) {
            break;
        }
        iteration += 1;
        let now = Instant::now();
        if tasks.iter().any(|task| now > task.limit) {
            let mut what = String::new();
            for task in tasks.iter().filter(|task| now > task.limit) {
                let _ = write!(
                    what,
                    "\n    {:?} polls={} submitted_seen={} fate={:?}",
                    task.spec, task.polls, task.submitted_seen, task.fate
                );
            }
            round.fail(format!(
                "round {} (shutdown_timeout {:?}) producer {pid}: requests never resolved (handle held: {}, metrics {:?}):{what}",
                round.index,
                round.budget,
                handle.is_some(),
                round.reader.get()
            ));
            // Dropping them is always allowed (they become orphans); the round then fails.
            tasks.clear();
            if handle.is_none() {
                break;
            }
        }
        thread::park_timeout(Duration::from_millis(1));
    }
    round.activity[pid].store(IDLE << 8, Ordering::SeqCst);
}

// ---------------------------------------------------------------------------------------------
// The pump: writes the fed sockets, drains the sink sockets

fn pump(res: Arc<Resources>, stop: Arc<AtomicBool>) -> u64 {
    for p in &res.fed {
        p.a.set_nonblocking(true).expect("nonblocking");
    }
    for p in &res.sink {
        p.b.set_nonblocking(true).expect("nonblocking");
    }
    let chunk = [0x77u8; 1024];
    let mut scratch = vec![0u8; 64 * 1024];
    let mut moved = 0u64;
    while !stop.load(Ordering::SeqCst) {
        for p in &res.fed {
            match (&*p.a).write(&chunk) {
                Ok(n) => moved += n as u64,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("pump write: {e}"),
            }
        }
        for p in &res.sink {
            loop {
                match (&*p.b).read(&mut scratch) {
                    Ok(0) => break,
                    Ok(n) => moved += n as u64,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("pump read: {e}"),
                }
            }
        }
        thread::sleep(Duration::from_micros(300));
    }
    moved
}

// ---------------------------------------------------------------------------------------------
// Rounds

/// Claims `free` slots with `try_nop` (the next must be `Full`) and returns the requests.
fn claim_all(h: &H, free: usize, what: &str) -> Vec<OpOf<op::Nop>> {
    let mut ops = Vec::with_capacity(free);
    for i in 0..free {
        match h.nop().try_submit() {
            Ok(op) => ops.push(op),
            Err(e) => panic!("{what}: only {i} of the {free} unparked slots are free ({e:?})"),
        }
    }
    match h.nop().try_submit() {
        Err(Error::Full) => {}
        Err(e) => panic!("{what}: nop().try_submit() beyond the free slots: {e:?}, expected Full"),
        Ok(_) => panic!("{what}: more than {free} slots free: the parked count is wrong"),
    }
    ops
}

/// Runs the claimed slots' nops through a fresh loop and checks them.
fn probe_slots(h: &H, free: usize, what: &str) -> Vec<OpOf<op::Nop>> {
    let ops = claim_all(h, free, what);
    assert_eq!(h.metrics().pending_operations, 0, "{what}: fresh counters");
    ops
}

fn finish_probes(ops: Vec<OpOf<op::Nop>>, what: &str) {
    let n = ops.len();
    let results = block_on(HANG, join_all(ops));
    let bad: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {n} probe nops failed: {bad:?}",
        bad.len()
    );
}

struct RoundReport {
    parked: u64,
    exit: Duration,
}

fn budget_of(round: usize) -> Option<Duration> {
    match round % 3 {
        0 => None,
        1 => Some(Duration::ZERO),
        _ => Some(Duration::from_millis(20)),
    }
}

fn run_round(
    index: usize,
    master: &mut Rng,
    parked_before: u64,
    totals: &Tally,
    seed: u64,
) -> RoundReport {
    let budget = budget_of(index);
    let idle_spin = if master.chance(50) {
        Duration::ZERO
    } else {
        Config::default().idle_spin
    };
    let single_issuer = master.chance(30);
    let cancel_on_drop = master.chance(50);
    let config = Config {
        shutdown_timeout: budget,
        idle_spin,
        single_issuer,
        cancel_on_drop,
        ..Config::default()
    };
    let what = format!("seed {seed:#x} round {index} (shutdown_timeout {budget:?}, idle_spin {idle_spin:?}, single_issuer {single_issuer}, cancel_on_drop {cancel_on_drop})");
    let (handle, event_loop) = static_uring::with_storage(&STORAGE, config)
        .unwrap_or_else(|e| panic!("{what}: the storage cannot be claimed again: {e:?}"));
    let reader = event_loop.metrics_reader();
    let free = SLOTS - parked_before as usize;
    let probes = probe_slots(&handle, free, &what);
    let lp = Background::spawn(move || {
        let result = event_loop.run();
        (Instant::now(), result)
    });
    finish_probes(probes, &what);

    let res = Arc::new(Resources::new());
    let round = Arc::new(Round {
        index,
        budget,
        origin: Instant::now(),
        stop: AtomicBool::new(false),
        drops: AtomicUsize::new(0),
        last_drop_ns: AtomicU64::new(0),
        latest_deadline_ns: AtomicU64::new(0),
        tally: Tally::new(),
        failures: Mutex::new(Vec::new()),
        activity: [const { AtomicU64::new(0) }; PRODUCERS],
        reader: reader.clone(),
    });
    let pump_stop = Arc::new(AtomicBool::new(false));
    let pump = {
        let (res, stop) = (res.clone(), pump_stop.clone());
        Background::spawn(move || pump(res, stop))
    };
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|pid| {
            let (round, res, h, seed) = (round.clone(), res.clone(), handle.clone(), master.next());
            Background::spawn(move || producer(round, res, pid, h, seed))
        })
        .collect();

    // Traffic, then the handles go. Every producer drops its handle at its next step (a
    // blocking wait ends by its deadline at the latest, or as soon as the pump serves it).
    let traffic = master.ms(150, 700);
    thread::sleep(traffic);
    round.stop.store(true, Ordering::SeqCst);
    let drop_limit = Instant::now() + Duration::from_millis(LONG_MAX_MS) + HANG;
    let wait_drops = |n: usize| {
        while round.drops.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < drop_limit,
                "{what}: producers never dropped their handles:{} metrics {:?}",
                round.activity_report(),
                reader.get()
            );
            thread::sleep(Duration::from_millis(1));
        }
    };
    // Odd rounds: with the budgets rotating over three rounds, six rounds see every pairing, and
    // the short form's second round fills the table under `Some(0)`.
    let fill = index % 2 == 1;
    let mut fillers = None;
    let at_drop;
    if fill {
        // Every other round the test's handle goes last, after it has filled the table with
        // receives on a socket nobody writes: with a budget they have no deadline (only the
        // budget ends them: A11 with the table full and the producers' requests queued behind
        // it), without one a short deadline (the drain admits the queued requests as they end).
        wait_drops(PRODUCERS);
        let class = if budget.is_some() {
            Class::None
        } else {
            Class::Medium
        };
        // More than the table holds are kept (so some stay queued behind it), a few more are
        // dropped at once; `Full` (the producers' requests hold slots) means try again shortly.
        let keep = RING + master.range(1, 8) as usize;
        let orphans = master.range(0, 3) as usize;
        let fill_limit = Instant::now() + Duration::from_secs(1);
        let mut ops = Vec::new();
        let mut dropped = 0;
        while ops.len() < keep || dropped < orphans {
            let mut spec = filler_spec(class);
            let t = &round.tally;
            t.add(C::Requests);
            t.add(C::ViaTry);
            t.add(C::Fillers);
            match build(&handle, &mut spec, &res, PRODUCERS, master, &round) {
                Err(result) => {
                    let how = How {
                        immediate: true,
                        blocking: false,
                        submitted_seen: false,
                    };
                    check(&round, PRODUCERS, &spec, result, how);
                    if Instant::now() > fill_limit {
                        break;
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                Ok(op) if ops.len() >= keep => {
                    drop(op);
                    dropped += 1;
                    t.add(C::DropSubmitted);
                    t.add(C::Reached);
                }
                Ok(op) => ops.push((spec, op)),
            }
        }
        at_drop = reader.get();
        drop(handle);
        round.note_drop();
        fillers = Some(Background::spawn(move || {
            ops.into_iter()
                .map(|(spec, op)| (spec, op.wait()))
                .collect::<Vec<_>>()
        }));
    } else {
        thread::sleep(master.ms(0, 3));
        at_drop = reader.get();
        drop(handle);
        round.note_drop();
    }
    wait_drops(PRODUCERS + 1);
    let last_drop = round.origin + Duration::from_nanos(round.last_drop_ns.load(Ordering::SeqCst));
    let latest_deadline =
        round.origin + Duration::from_nanos(round.latest_deadline_ns.load(Ordering::SeqCst));
    let bound = match budget {
        Some(b) => b + EXIT_MARGIN,
        None => latest_deadline.saturating_duration_since(last_drop) + EXIT_MARGIN,
    };

    // The loop must exit within its budget; a loop that never exits fails the test here.
    while !lp.is_finished() {
        assert!(
            Instant::now() < last_drop + bound + HANG,
            "{what}: the loop did not exit within {:?} of the last handle drop (hang):{} metrics {:?}",
            bound + HANG,
            round.activity_report(),
            reader.get()
        );
        thread::sleep(Duration::from_millis(1));
    }
    let (exit_at, result) = lp.join(HANG);
    let exit = exit_at.saturating_duration_since(last_drop);
    if let Err(e) = result {
        round.fail(format!("{what}: run returned {e:?}"));
    }
    if exit > bound {
        round.fail(format!(
            "{what}: the loop exited {exit:?} after the last handle drop, beyond its bound {bound:?} (metrics {:?})",
            reader.get()
        ));
    }

    // Producers finish what they hold once the loop is gone.
    let producer_limit = Instant::now() + HANG;
    for (pid, p) in producers.into_iter().enumerate() {
        while !p.is_finished() {
            assert!(
                Instant::now() < producer_limit,
                "{what}: producer {pid} never finished after the loop exited:{} metrics {:?}",
                round.activity_report(),
                reader.get()
            );
            thread::sleep(Duration::from_millis(1));
        }
        p.join(HANG);
    }
    if let Some(fillers) = fillers {
        for (spec, result) in fillers.join(HANG) {
            let how = How {
                immediate: false,
                blocking: false,
                submitted_seen: true,
            };
            check(&round, PRODUCERS, &spec, result, how);
        }
    }
    pump_stop.store(true, Ordering::SeqCst);
    pump.join(HANG);

    // Counters against what the callers saw.
    let m = reader.get();
    let t = &round.tally;
    // `parked` counts the slots the storage lost since it was built.
    let parked = m.parked.wrapping_sub(parked_before);
    if m.parked < parked_before {
        round.fail(format!(
            "{what}: parked went down from {parked_before}: {m:?}"
        ));
    }
    if m.user_panics != 0 {
        round.fail(format!("{what}: user panics counted, none expected: {m:?}"));
    }
    // Once `run` has returned, `completed` is the number of requests that reached the loop: the
    // probes, and the producers' submitted requests.
    let reached = free as u64 + t.get(C::Reached);
    if m.completed < reached || m.completed > reached + t.get(C::MaybeReached) {
        round.fail(format!(
            "{what}: completed {} but {reached} requests reached the loop (+ up to {} Closed ones not seen submitted): {m:?}",
            m.completed,
            t.get(C::MaybeReached)
        ));
    }
    if m.pending_operations != 0 {
        round.fail(format!(
            "{what}: pending_operations {} after run: {m:?}",
            m.pending_operations
        ));
    }
    if budget.is_none() && (m.abandoned != 0 || parked != 0) {
        round.fail(format!(
            "{what}: abandonment without a shutdown budget: {m:?}"
        ));
    }
    if parked > m.abandoned || m.timed_out < t.get(C::Timeout) || m.abandoned < t.get(C::Abandoned)
    {
        round.fail(format!(
            "{what}: counters disagree with the callers (timeouts seen {}, abandoned seen {}): {m:?}",
            t.get(C::Timeout),
            t.get(C::Abandoned)
        ));
    }
    if t.get(C::Requests) != t.get(C::Resolved) + t.drops() {
        round.fail(format!(
            "{what}: {} requests but {} resolved and {} dropped",
            t.get(C::Requests),
            t.get(C::Resolved),
            t.drops()
        ));
    }
    let contents = res.file.contents();
    if contents.len() != FILE_LEN as usize
        || (0..RO_LEN as usize).any(|i| contents[i] != pattern(i as u64))
    {
        round.fail(format!(
            "{what}: the file changed outside the write regions (len {})",
            contents.len()
        ));
    }
    drop(contents);
    let failures = std::mem::take(&mut *round.failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{what}: {} failure(s) (replay with STATIC_URING_SOAK_SEED={seed:#x}):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    println!(
        "round {index:3} shutdown_timeout={:<10} spin={:<5} single_issuer={:<5} traffic={:>4}ms filled={:<5} admitted_at_drop={:>2} exit={:>7.1?} parked={} metrics(completed={} timed_out={} orphaned={} abandoned={} cancels={}){}",
        format!("{budget:?}"),
        !idle_spin.is_zero(),
        single_issuer,
        traffic.as_millis(),
        fill,
        at_drop.pending_operations,
        exit,
        parked,
        m.completed,
        m.timed_out,
        m.orphaned,
        m.abandoned,
        m.cancel_sqes,
        t.line(&[
            C::Requests as usize,
            C::Ok as usize,
            C::Timeout as usize,
            C::Closed as usize,
            C::Abandoned as usize,
            C::Full as usize,
        ]),
    );
    totals.merge(t);
    drop(round);
    drop(res);
    RoundReport { parked, exit }
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[test]
#[ignore = "soak: STATIC_URING_SOAK_SECS=<n> cargo test --release --test soak -- --ignored --nocapture"]
fn soak() {
    let secs = env_u64("STATIC_URING_SOAK_SECS").unwrap_or(3);
    let seed = env_u64("STATIC_URING_SOAK_SEED").unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        now.as_nanos() as u64 ^ (std::process::id() as u64) << 32
    });
    println!(
        "soak: seed={seed:#x} duration={secs}s storage=Storage<{SLOTS}, {RING}, {WHEEL}> producers={PRODUCERS} (replay: STATIC_URING_SOAK_SEED={seed:#x})"
    );
    let fds_before = open_fds();
    let mut master = Rng::new(seed);
    let totals = Tally::new();
    let start = Instant::now();
    let duration = Duration::from_secs(secs);
    let mut rounds = 0;
    let mut parked = 0u64;
    let mut shutdowns = [0u64; 3];
    let mut max_exit = [Duration::ZERO; 3];
    let mut after_first = None;
    while rounds < 3 || start.elapsed() < duration {
        let report = run_round(rounds, &mut master, parked, &totals, seed);
        parked += report.parked;
        shutdowns[rounds % 3] += 1;
        max_exit[rounds % 3] = max_exit[rounds % 3].max(report.exit);
        if rounds == 0 {
            after_first = Some((live_bytes(), rss_kib(), parked));
        }
        rounds += 1;
        assert!(
            parked < SLOTS as u64 / 2,
            "seed {seed:#x}: {parked} of {SLOTS} slots parked after {rounds} rounds: the storage is wearing out"
        );
    }

    // A last claim: the slots of the last round are free again too.
    {
        let what = format!("seed {seed:#x} final claim");
        let (handle, event_loop) = static_uring::with_storage(&STORAGE, Config::default())
            .unwrap_or_else(|e| panic!("{what}: the storage cannot be claimed again: {e:?}"));
        let reader = event_loop.metrics_reader();
        assert_eq!(
            reader.get().parked,
            parked,
            "{what}: the storage's parked count differs from the rounds' sum"
        );
        let probes = probe_slots(&handle, SLOTS - parked as usize, &what);
        let lp = Background::spawn(move || event_loop.run());
        finish_probes(probes, &what);
        drop(handle);
        lp.join(HANG).expect("the final loop exits cleanly");
    }

    // Descriptors: the storage's eventfd (opened at the first claim, kept with the storage) and
    // one per parked request may remain; nothing else.
    let fds_after = open_fds();
    let extra = extra_fds(&fds_before, &fds_after);
    let eventfds = extra.iter().filter(|f| f.contains("eventfd")).count();
    let others = extra.len() - eventfds;
    let fd_leaks = eventfds.saturating_sub(1) + others.saturating_sub(parked as usize);

    // Memory: live heap bytes after the last round against after the first.
    let (live_first, rss_first, parked_first) = after_first.expect("at least one round");
    let live_last = live_bytes();
    let rss_last = rss_kib();
    let allowance = (parked - parked_first) as isize * PARKED_BYTES + LIVE_MARGIN;
    let growth = live_last - live_first;
    let mem_leaks = usize::from(growth > allowance);

    println!(
        "soak summary: seed={seed:#x} rounds={rounds} elapsed={:.1?}{} drops={} shutdowns(none/zero/20ms)={}/{}/{} max_exit(none/zero/20ms)={:.1?}/{:.1?}/{:.1?} parked={parked} fds(before={} after={} extra={extra:?}) live_bytes(first={live_first} last={live_last} growth={growth} allowance={allowance}) rss_kib(first={rss_first} last={rss_last}) leaks={}",
        start.elapsed(),
        totals.line(&(0..COUNTERS).collect::<Vec<_>>()),
        totals.drops(),
        shutdowns[0],
        shutdowns[1],
        shutdowns[2],
        max_exit[0],
        max_exit[1],
        max_exit[2],
        fds_before.len(),
        fds_after.len(),
        fd_leaks + mem_leaks,
    );
    assert_eq!(
        fd_leaks, 0,
        "seed {seed:#x}: descriptors leaked: {extra:?} (parked {parked})"
    );
    assert!(
        growth <= allowance,
        "seed {seed:#x}: live heap grew by {growth} bytes between the first and the last round (allowed {allowance})"
    );
    assert_eq!(
        totals.get(C::Requests),
        totals.get(C::Resolved) + totals.drops(),
        "every request ended exactly once"
    );
    let per_kind: Vec<_> = OpKind::ALL.iter().map(|&k| (k, totals.kind(k))).collect();
    println!("soak resolved per operation: {per_kind:?}");
    // Every kind the producers pick (weight > 0); the others have their own suites (weight()).
    assert!(
        per_kind.iter().all(|&(k, n)| n > 0 || weight(k) == 0),
        "seed {seed:#x}: every operation of the table is driven: {per_kind:?}"
    );
}
