//! Runs every benchmark workload against every implementation for a fixed time and prints one
//! JSON object per line (the shape `scripts/bench-report` merges with the peers binary).
//!
//! ```text
//! cargo run --release -p static-uring-bench --bin bench_matrix -- [--quick] [--secs S] [--reps N]
//!     [--filter TEXT] [--peer TEXT] [--ops N]
//! ```
//! `--quick`: 0.25 s per case, one repetition (a smoke run). Default: 1.5 s per case, the median
//! of 3 repetitions by ops/s. `--filter TEXT` keeps workloads whose id (`nop@64`,
//! `read_at_4k_hot@32`, ...) contains TEXT; `--peer TEXT` keeps peers whose name contains TEXT
//! (both repeatable; any match keeps). `--ops N`: one warm-up and one run of N ops, no timing
//! loop (for callgrind). Progress goes to stderr.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{make, Env, Peer, Workload};

const USAGE: &str = "usage: bench_matrix [--quick] [--secs S] [--reps N] [--filter TEXT] \
                     [--peer TEXT] [--ops N]";

struct Args {
    secs: f64,
    reps: usize,
    filters: Vec<String>,
    peers: Vec<String>,
    /// A fixed op count instead of a duration (for callgrind): one warm-up run of a tenth, then one run.
    ops: Option<u64>,
}

fn args() -> Args {
    let mut args = Args {
        secs: 1.5,
        reps: 3,
        filters: Vec::new(),
        peers: Vec::new(),
        ops: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => {
                args.secs = 0.25;
                args.reps = 1;
            }
            "--secs" => args.secs = it.next().and_then(|s| s.parse().ok()).expect("--secs S"),
            "--reps" => args.reps = it.next().and_then(|s| s.parse().ok()).expect("--reps N"),
            "--filter" => args.filters.push(it.next().expect("--filter TEXT")),
            "--peer" => args.peers.push(it.next().expect("--peer TEXT")),
            "--ops" => args.ops = it.next().and_then(|s| s.parse().ok()),
            "--bench" => {} // passed by `cargo bench`; ignored
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}\n{USAGE}"),
        }
    }
    args
}

fn main() {
    let args = args();
    let env = Env::prepare(false);
    if let Err(reason) = &env.direct {
        eprintln!("O_DIRECT workloads skipped: {reason}");
    }
    let stdout = std::io::stdout();
    for workload in Workload::ALL {
        for peer in Peer::all() {
            let (id, name) = (workload.id(), peer.name());
            let keep = |filters: &[String], text: &str| {
                filters.is_empty() || filters.iter().any(|f| text.contains(f.as_str()))
            };
            if !keep(&args.filters, &id) || !keep(&args.peers, &name) {
                continue;
            }
            let mut bench = match make(peer, workload, &env) {
                Ok(bench) => bench,
                Err(reason) => {
                    writeln!(
                        stdout.lock(),
                        "{{\"peer\": \"{name}\", \"workload\": \"{}\", \"outstanding\": {}, \"skipped\": \"{}\"}}",
                        workload.name(),
                        workload.outstanding(),
                        reason.replace('"', "'")
                    )
                    .unwrap();
                    continue;
                }
            };
            if let Some(ops) = args.ops {
                bench.run((ops / 10).max(2));
                let sample = bench.run(ops);
                drop(bench);
                eprintln!("{id} / {name}: {}", sample.summary());
                writeln!(stdout.lock(), "{}", sample.json(peer, workload, "")).unwrap();
                continue;
            }
            // Warm up and calibrate: grow the op count until a run takes 50 ms.
            let mut ops = 64;
            let rate = loop {
                let sample = bench.run(ops);
                if sample.elapsed >= Duration::from_millis(50) || ops >= 1 << 30 {
                    break sample.ops_per_sec();
                }
                ops *= 4;
            };
            let ops = ((rate * args.secs) as u64).max(64);
            let mut samples: Vec<_> = (0..args.reps).map(|_| bench.run(ops)).collect();
            samples.sort_by(|a, b| a.ops_per_sec().total_cmp(&b.ops_per_sec()));
            let median = &samples[samples.len() / 2];
            let spread = if samples.len() > 1 {
                let lo = samples[0].ops_per_sec();
                let hi = samples[samples.len() - 1].ops_per_sec();
                format!(
                    ", \"reps\": {}, \"min_ops_per_sec\": {lo:.1}, \"max_ops_per_sec\": {hi:.1}",
                    samples.len()
                )
            } else {
                ", \"reps\": 1".to_string()
            };
            drop(bench);
            eprintln!("{id} / {name}: {}", median.summary());
            writeln!(stdout.lock(), "{}", median.json(peer, workload, &spread)).unwrap();
        }
    }
}
