//! What the scheduler did to the benchmark's threads: run-queue waits from
//! `/proc/self/task/*/schedstat`, and a probe of the machine's own stalls (`jitter`).
//!
//! Both explain tails that no change to the loop can remove: a thread that is runnable but has
//! no core (more spinning threads than cores), or a core taken away for a timer tick or by the
//! hypervisor.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::rt::{CallerPin, CALLER_CPU, LOOP_CPU};

/// Per-thread scheduler totals at one moment.
pub struct Snapshot {
    at: Instant,
    /// tid -> ns runnable but waiting on a run queue.
    threads: HashMap<u32, u64>,
}

/// The change between two snapshots, over the threads alive at both.
pub struct Delta {
    wall: Duration,
    /// The largest share of the wall time any one thread spent waiting for a CPU.
    max_wait_frac: f64,
}

impl Snapshot {
    pub fn now() -> Snapshot {
        let mut threads = HashMap::new();
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for entry in dir.flatten() {
                let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
                    continue;
                };
                // Fields: ns on a CPU, ns waiting on a run queue, time slices.
                if let Some(wait) = text.split_whitespace().nth(1).and_then(|v| v.parse().ok()) {
                    threads.insert(tid, wait);
                }
            }
        }
        Snapshot {
            at: Instant::now(),
            threads,
        }
    }

    pub fn since(&self, before: &Snapshot) -> Delta {
        let wall = self.at - before.at;
        let max_wait = self
            .threads
            .iter()
            // A tid reused by a newer thread reads lower: saturate rather than wrap.
            .filter_map(|(tid, wait)| before.threads.get(tid).map(|w0| wait.saturating_sub(*w0)))
            .max()
            .unwrap_or(0);
        Delta {
            wall,
            max_wait_frac: max_wait as f64 / wall.as_nanos().max(1) as f64,
        }
    }
}

impl Delta {
    /// JSON fields for the row (`, "key": value`); empty if schedstat is not available.
    pub fn json(&self) -> String {
        if self.wall.is_zero() {
            return String::new();
        }
        format!(", \"runq_wait_max_frac\": {:.3}", self.max_wait_frac)
    }
}

/// Stalls of a pinned, spinning thread on each of the two CPUs the real-time rows use: how
/// often the clock jumps by 5 us or more between two consecutive reads, and by how much on
/// average. A request that runs across such a stall takes that much longer, whatever the loop
/// does. One JSON line.
pub fn jitter(secs: f64) -> String {
    let probes: Vec<_> = [CALLER_CPU, LOOP_CPU]
        .into_iter()
        .map(|cpu| {
            std::thread::spawn(move || {
                let _pin = CallerPin::pin(cpu).ok()?;
                let limit = Duration::from_secs_f64(secs);
                let start = Instant::now();
                let (mut last, mut stalls, mut total) = (start, 0u64, Duration::ZERO);
                while last - start < limit {
                    let now = Instant::now();
                    let gap = now - last;
                    if gap >= Duration::from_micros(5) {
                        stalls += 1;
                        total += gap;
                    }
                    last = now;
                }
                Some((
                    cpu,
                    stalls as f64 / secs,
                    total.as_nanos() as f64 / stalls.max(1) as f64,
                ))
            })
        })
        .collect();
    let cpus: Vec<String> = probes
        .into_iter()
        .filter_map(|p| p.join().ok().flatten())
        .map(|(cpu, rate, mean)| {
            format!(
                "{{\"cpu\": {cpu}, \"stalls_per_sec\": {rate:.1}, \"mean_stall_ns\": {mean:.0}}}"
            )
        })
        .collect();
    format!(
        "{{\"peer\": \"machine\", \"workload\": \"jitter\", \"outstanding\": 0, \"secs\": {secs}, \"cpus\": [{}]}}",
        cpus.join(", ")
    )
}
