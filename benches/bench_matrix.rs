//! Runs every benchmark workload against every implementation for a fixed time and prints one
//! JSON object per line (the shape `scripts/bench-report` merges with the peers binary).
//!
//! ```text
//! cargo run --release -p static-uring-bench --bin bench_matrix -- [--quick] [--secs S] [--reps N]
//!     [--filter TEXT] [--peer TEXT] [--ops N] [--reverse]
//! ```
//! `--quick`: 0.25 s per case, one repetition (a smoke run). Default: 1.5 s per case, the median
//! of 3 repetitions by ops/s. `--filter TEXT` keeps workloads whose id (`nop@64`,
//! `read_at_4k_hot@32`, ...) contains TEXT (`--filter rt`: only the real-time toolkit rows,
//! `rt_*`, see `common/rt.rs` and `common/paired.rs`); `--peer TEXT` keeps peers whose name
//! contains TEXT (both repeatable; any match keeps; a group of `paired.rs` runs whole if any of
//! its rows is kept). `--ops N`: one warm-up and one run of N ops, no timing loop (for
//! callgrind). `--reverse`: the implementations of each workload in the opposite order (the
//! report's interleaved rounds alternate it, so that running first or last in a process falls on
//! both sides of a ratio alike). Progress goes to stderr.
//!
//! The groups of `common/paired.rs` (vectored I/O, `sync_data`, lanes, parking executors) run
//! their rows in turn:
//! each row calibrated alone, then [`GROUP_REPS`] rounds (at least; one with `--quick`) of one
//! run per row, the order rotating, each run `secs * 3 / rounds` long (the time of a plain
//! row). Each row prints its median run, and the rows after the first the median and range over
//! the rounds of their ops/s over the first row's in the same round (`ratio_vs_baseline`).

mod common;

use std::io::Write;
use std::time::Duration;

use common::paired::{self, Group};
use common::{make, rt, sched, Bench, Env, Peer, Sample, Workload};

/// Rounds of a group of rows, at least (`--reps` more, `--quick` one).
const GROUP_REPS: usize = 7;

const USAGE: &str = "usage: bench_matrix [--quick] [--secs S] [--reps N] [--filter TEXT] \
                     [--peer TEXT] [--ops N] [--reverse]";

struct Args {
    secs: f64,
    reps: usize,
    filters: Vec<String>,
    peers: Vec<String>,
    /// A fixed op count instead of a duration (for callgrind): one warm-up run of a tenth, then one run.
    ops: Option<u64>,
    /// The implementations of each workload in the opposite order.
    reverse: bool,
}

fn args() -> Args {
    let mut args = Args {
        secs: 1.5,
        reps: 3,
        filters: Vec::new(),
        peers: Vec::new(),
        ops: None,
        reverse: false,
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
            "--reverse" => args.reverse = true,
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
    let keep = |filters: &[String], text: &str| {
        filters.is_empty() || filters.iter().any(|f| text.contains(f.as_str()))
    };
    let mut peers = Peer::all();
    if args.reverse {
        peers.reverse();
    }
    for workload in Workload::ALL {
        for &peer in &peers {
            let (id, name) = (workload.id(), peer.name());
            if !keep(&args.filters, &id) || !keep(&args.peers, &name) {
                continue;
            }
            let row = Row {
                id: &id,
                peer: &name,
                workload: workload.name(),
                outstanding: workload.outstanding(),
                policy: &peer.policy(),
                extra: "",
            };
            measure(&args, &row, make(peer, workload, &env));
        }
    }
    // The machine's own stalls on the CPUs the real-time rows pin (`--filter jitter`): the
    // bound on their tails.
    if keep(&args.filters, "rt_jitter") && keep(&args.peers, "machine") {
        let line = common::sched::jitter(if args.reps == 1 { 0.5 } else { 2.0 });
        eprintln!("jitter: {line}");
        writeln!(std::io::stdout().lock(), "{line}").unwrap();
    }
    // The real-time toolkit rows (`--filter rt`): each setting against the default path.
    for case in rt::Case::all() {
        let (id, name) = (case.id(), case.peer());
        if !keep(&args.filters, &id) || !keep(&args.peers, &name) {
            continue;
        }
        let extra = format!(", \"variant\": \"{}\"", case.variant());
        let row = Row {
            id: &id,
            peer: &name,
            workload: case.name(),
            outstanding: case.outstanding(),
            policy: &case.policy(),
            extra: &extra,
        };
        measure(&args, &row, rt::make(case, &env));
    }
    // The rows measured side by side: vectored I/O, sync_data, lanes, parking executors.
    for case in paired::Case::all() {
        let id = case.id();
        let peers: Vec<String> = (0..case.variants().len()).map(|v| case.peer(v)).collect();
        if !keep(&args.filters, &id) || !peers.iter().any(|p| keep(&args.peers, p)) {
            continue;
        }
        let extras: Vec<String> = case
            .variants()
            .iter()
            .map(|v| {
                format!(
                    ", \"variant\": \"{v}\", \"baseline\": \"{}\"",
                    case.variants()[0]
                )
            })
            .collect();
        let policy = case.policy();
        let rows: Vec<Row> = peers
            .iter()
            .zip(&extras)
            .map(|(peer, extra)| Row {
                id: &id,
                peer,
                workload: case.name(),
                outstanding: case.outstanding(),
                policy: &policy,
                extra,
            })
            .collect();
        measure_group(&args, &rows, case.make(&env));
    }
}

/// What names one JSON line.
struct Row<'a> {
    id: &'a str,
    peer: &'a str,
    workload: &'a str,
    outstanding: usize,
    policy: &'a str,
    /// Constant fields of the row (`, "key": value` ...).
    extra: &'a str,
}

/// Measures one row (or prints why it was skipped) and prints its JSON line.
fn measure(args: &Args, row: &Row, bench: Result<Box<dyn Bench>, String>) {
    let stdout = std::io::stdout();
    let line = |sample: &Sample, spread: &str| {
        sample.json_as(
            row.peer,
            row.workload,
            row.outstanding,
            row.policy,
            &format!("{}{spread}", row.extra),
        )
    };
    let mut bench = match bench {
        Ok(bench) => bench,
        Err(reason) => {
            eprintln!("{} / {}: skipped ({reason})", row.id, row.peer);
            writeln!(
                stdout.lock(),
                "{{\"peer\": \"{}\", \"workload\": \"{}\", \"outstanding\": {}, \"skipped\": \"{}\"{}}}",
                row.peer,
                row.workload,
                row.outstanding,
                reason.replace('"', "'"),
                row.extra
            )
            .unwrap();
            return;
        }
    };
    if let Some(ops) = args.ops {
        bench.run((ops / 10).max(2));
        let sample = bench.run(ops);
        drop(bench);
        eprintln!("{} / {}: {}", row.id, row.peer, sample.summary());
        writeln!(stdout.lock(), "{}", line(&sample, "")).unwrap();
        return;
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
    let before = sched::Snapshot::now();
    let mut samples: Vec<_> = (0..args.reps).map(|_| bench.run(ops)).collect();
    let sched = sched::Snapshot::now().since(&before);
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
    let spread = format!("{spread}{}", sched.json());
    drop(bench);
    eprintln!("{} / {}: {}", row.id, row.peer, median.summary());
    writeln!(stdout.lock(), "{}", line(median, &spread)).unwrap();
}

/// Measures a group of rows side by side (row 0 is the baseline) and prints their JSON lines.
fn measure_group(args: &Args, rows: &[Row], group: Result<Box<dyn Group>, String>) {
    let mut group = match group {
        Ok(group) => group,
        Err(reason) => {
            for row in rows {
                measure(args, row, Err(reason.clone()));
            }
            return;
        }
    };
    let n = rows.len();
    let stdout = std::io::stdout();
    let fixed = group.extra();
    let print = |row: &Row, sample: &Sample, more: &str| {
        eprintln!("{} / {}: {}", row.id, row.peer, sample.summary());
        let extra = format!("{}{fixed}{more}", row.extra);
        writeln!(
            stdout.lock(),
            "{}",
            sample.json_as(row.peer, row.workload, row.outstanding, row.policy, &extra)
        )
        .unwrap();
    };
    if let Some(ops) = args.ops {
        for (v, row) in rows.iter().enumerate() {
            group.run(v, (ops / 10).max(2));
            let sample = group.run(v, ops);
            print(row, &sample, "");
        }
        return;
    }
    let rounds = if args.reps > 1 {
        args.reps.max(GROUP_REPS)
    } else {
        1
    };
    let secs = args.secs * args.reps as f64 / rounds as f64;
    // Warm up and calibrate each row alone, as `measure` does.
    let ops: Vec<u64> = (0..n)
        .map(|v| {
            let mut ops = 64;
            let rate = loop {
                let sample = group.run(v, ops);
                if sample.elapsed >= Duration::from_millis(50) || ops >= 1 << 30 {
                    break sample.ops_per_sec();
                }
                ops *= 4;
            };
            ((rate * secs) as u64).max(64)
        })
        .collect();
    // samples[v][round]
    let mut samples: Vec<Vec<Sample>> = (0..n).map(|_| Vec::with_capacity(rounds)).collect();
    for round in 0..rounds {
        for k in 0..n {
            let v = (round + k) % n;
            samples[v].push(group.run(v, ops[v]));
        }
    }
    drop(group);
    let rates: Vec<Vec<f64>> = samples
        .iter()
        .map(|s| s.iter().map(Sample::ops_per_sec).collect())
        .collect();
    for (v, row) in rows.iter().enumerate() {
        let mut ratios: Vec<f64> = (0..rounds).map(|r| rates[v][r] / rates[0][r]).collect();
        ratios.sort_by(f64::total_cmp);
        let mut order: Vec<usize> = (0..rounds).collect();
        order.sort_by(|&a, &b| rates[v][a].total_cmp(&rates[v][b]));
        let median = &samples[v][order[rounds / 2]];
        let mut more = if rounds > 1 {
            format!(
                ", \"reps\": {rounds}, \"min_ops_per_sec\": {:.1}, \"max_ops_per_sec\": {:.1}",
                rates[v][order[0]],
                rates[v][order[rounds - 1]]
            )
        } else {
            ", \"reps\": 1".to_string()
        };
        if v > 0 {
            more += &format!(
                ", \"ratio_vs_baseline\": {:.4}, \"ratio_min\": {:.4}, \"ratio_max\": {:.4}",
                ratios[rounds / 2],
                ratios[0],
                ratios[rounds - 1]
            );
        }
        print(row, median, &more);
    }
}
