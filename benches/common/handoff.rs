//! The raw cross-thread hand-off: the shape of a nop round trip through a loop thread with
//! nothing else in it. The caller pushes request indices into an SPSC ring and unparks the
//! server thread; the server moves each index to the reply ring and unparks the caller. Both
//! sides follow the same idle policy as the loop: spin for `spin`, then park (a futex).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use super::hist::Hist;
use super::{timed, Bench, Sample};

const CAP: usize = 128;

/// Single-producer single-consumer ring of `u32`.
#[repr(align(128))]
struct Spsc {
    tail: AtomicUsize,
    _pad: [u8; 120],
    head: AtomicUsize,
    _pad2: [u8; 120],
    cells: [AtomicU32; CAP],
}

impl Spsc {
    fn new() -> Spsc {
        Spsc {
            tail: AtomicUsize::new(0),
            _pad: [0; 120],
            head: AtomicUsize::new(0),
            _pad2: [0; 120],
            cells: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    /// Producer only. Never more than CAP items are in the ring (at most 64 are outstanding).
    fn push(&self, value: u32) {
        let tail = self.tail.load(Ordering::Relaxed);
        self.cells[tail % CAP].store(value, Ordering::Relaxed);
        // Release: the cell is written before the consumer sees the new tail.
        self.tail.store(tail + 1, Ordering::Release);
    }

    /// Consumer only: hands every queued value to `f`; returns how many.
    fn drain(&self, mut f: impl FnMut(u32)) -> usize {
        let head = self.head.load(Ordering::Relaxed);
        // Acquire: pairs with `push`'s Release.
        let tail = self.tail.load(Ordering::Acquire);
        for position in head..tail {
            f(self.cells[position % CAP].load(Ordering::Relaxed));
        }
        self.head.store(tail, Ordering::Release);
        tail - head
    }

    fn is_empty(&self) -> bool {
        self.head.load(Ordering::Relaxed) == self.tail.load(Ordering::Acquire)
    }
}

struct Shared {
    requests: Spsc,
    replies: Spsc,
    stop: AtomicBool,
    caller: Thread,
}

/// Waits until `ready()` (spin for `spin`, then park); false if stopped first.
fn wait_for(spin: Duration, ready: impl Fn() -> bool, stop: &AtomicBool) -> bool {
    if !spin.is_zero() {
        let start = Instant::now();
        while start.elapsed() < spin {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
    }
    loop {
        if ready() {
            return true;
        }
        if stop.load(Ordering::Acquire) {
            return false;
        }
        // An unpark after the check leaves the token set: park returns at once.
        std::thread::park();
    }
}

fn server(shared: &Shared, spin: Duration) {
    loop {
        let moved = shared.requests.drain(|i| shared.replies.push(i));
        if moved > 0 {
            shared.caller.unpark();
            continue;
        }
        if !wait_for(spin, || !shared.requests.is_empty(), &shared.stop) {
            return;
        }
    }
}

pub struct Handoff {
    shared: Arc<Shared>,
    server: Option<JoinHandle<()>>,
    depth: usize,
    spin: Duration,
    starts: Vec<Instant>,
}

impl Handoff {
    /// Must be run on the thread that creates it (it is the one the server unparks).
    pub fn new(depth: usize, spin: Duration) -> Handoff {
        assert!(depth <= 64);
        let shared = Arc::new(Shared {
            requests: Spsc::new(),
            replies: Spsc::new(),
            stop: AtomicBool::new(false),
            caller: std::thread::current(),
        });
        let server_shared = shared.clone();
        let server = std::thread::Builder::new()
            .name("handoff".into())
            .spawn(move || server(&server_shared, spin))
            .expect("spawn");
        let mut handoff = Handoff {
            shared,
            server: Some(server),
            depth,
            spin,
            starts: vec![Instant::now(); depth],
        };
        // The server thread is up (its start-up allocations are done) before any timed region.
        handoff.run(depth as u64);
        handoff
    }
}

impl Bench for Handoff {
    fn run(&mut self, ops: u64) -> Sample {
        assert_eq!(
            std::thread::current().id(),
            self.shared.caller.id(),
            "run on the creating thread"
        );
        let mut hist = Hist::new();
        let s = &*self.shared;
        let server = self.server.as_ref().expect("server").thread();
        let (depth, spin, starts) = (self.depth, self.spin, &mut self.starts);
        let ((), elapsed, alloc) = timed(|| {
            let (mut issued, mut done) = (0u64, 0u64);
            let now = Instant::now();
            for (i, start) in starts.iter_mut().enumerate().take(depth.min(ops as usize)) {
                *start = now;
                s.requests.push(i as u32);
                issued += 1;
            }
            server.unpark();
            while done < ops {
                let mut now = None;
                let got = s.replies.drain(|i| {
                    let now = *now.get_or_insert_with(Instant::now);
                    hist.record(now - starts[i as usize]);
                    done += 1;
                    if issued < ops {
                        starts[i as usize] = now;
                        s.requests.push(i);
                        issued += 1;
                    }
                });
                if got > 0 {
                    server.unpark();
                    continue;
                }
                let never = AtomicBool::new(false);
                wait_for(spin, || !s.replies.is_empty(), &never);
            }
        });
        Sample::new(ops, elapsed, alloc, hist)
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(server) = self.server.take() {
            server.thread().unpark();
            server.join().expect("hand-off server panicked");
        }
    }
}
