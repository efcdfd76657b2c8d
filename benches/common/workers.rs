//! Persistent producer threads for the multi-producer workloads, so that no thread is spawned
//! (and nothing is allocated) inside a timed region.
//!
//! Each run: the workers build their tasks (allocating, untimed), report ready, wait for "go",
//! run, and report done. The caller times from "go" to the last "done".

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use super::alloc::AllocCount;
use super::hist::Hist;

/// A worker's job: `(worker index, ops, histogram, ready)`; it must call `ready()` once its
/// tasks are built, then do exactly `ops` operations.
pub type Job = dyn Fn(usize, u64, &mut Hist, &dyn Fn()) + Send + Sync;

struct Shared {
    /// Bumped to start a run (workers then prepare).
    generation: AtomicU64,
    /// Set to the generation to let the prepared workers go.
    go: AtomicU64,
    ops: AtomicU64,
    prepared: AtomicUsize,
    done: AtomicUsize,
    stop: AtomicBool,
    main: Mutex<Option<Thread>>,
    hists: Vec<Mutex<Box<Hist>>>,
}

pub struct Workers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    pub fn new(
        n: usize,
        job: impl Fn(usize, u64, &mut Hist, &dyn Fn()) + Send + Sync + 'static,
    ) -> Workers {
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            go: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            prepared: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            main: Mutex::new(None),
            hists: (0..n).map(|_| Mutex::new(Hist::new())).collect(),
        });
        let job: Arc<Job> = Arc::new(job);
        let threads = (0..n)
            .map(|i| {
                let shared = shared.clone();
                let job = job.clone();
                std::thread::spawn(move || worker(i, &shared, &*job))
            })
            .collect();
        Workers { shared, threads }
    }

    /// Runs `ops` operations on every worker; returns the time from "go" to the last "done" and
    /// the allocations in between, and merges the workers' latencies into `hist`.
    pub fn run(&self, ops: u64, hist: &mut Hist) -> (Duration, AllocCount) {
        let s = &*self.shared;
        let n = self.threads.len();
        *s.main.lock().unwrap() = Some(std::thread::current());
        s.prepared.store(0, Ordering::Relaxed);
        s.done.store(0, Ordering::Relaxed);
        s.ops.store(ops, Ordering::Relaxed);
        // Release: publishes `ops` and the resets to the workers' Acquire load.
        let generation = s.generation.fetch_add(1, Ordering::Release) + 1;
        self.unpark_all();
        while s.prepared.load(Ordering::Acquire) < n {
            std::thread::park();
        }
        let before = AllocCount::now();
        let start = Instant::now();
        s.go.store(generation, Ordering::Release);
        self.unpark_all();
        while s.done.load(Ordering::Acquire) < n {
            std::thread::park();
        }
        let elapsed = start.elapsed();
        let alloc = AllocCount::now().since(before);
        for h in &s.hists {
            hist.merge(&h.lock().unwrap());
        }
        (elapsed, alloc)
    }

    fn unpark_all(&self) {
        for t in &self.threads {
            t.thread().unpark();
        }
    }
}

fn worker(index: usize, s: &Shared, job: &Job) {
    super::exec::prepare();
    let mut seen = 0;
    loop {
        // Acquire: pairs with the Release bump in `run`.
        while s.generation.load(Ordering::Acquire) == seen {
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            std::thread::park();
        }
        seen = s.generation.load(Ordering::Acquire);
        let ops = s.ops.load(Ordering::Relaxed);
        let main = s.main.lock().unwrap().clone().expect("main thread");
        let mut hist = s.hists[index].lock().unwrap();
        hist.clear();
        let ready = || {
            s.prepared.fetch_add(1, Ordering::AcqRel);
            main.unpark();
            while s.go.load(Ordering::Acquire) != seen {
                std::thread::park();
            }
        };
        job(index, ops, &mut hist, &ready);
        drop(hist);
        s.done.fetch_add(1, Ordering::AcqRel);
        main.unpark();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.unpark_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
