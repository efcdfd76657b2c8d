//! 64-byte ping-pong over a Unix socket pair and TCP loopback (round trips, latency), and
//! streaming 16 KiB messages over TCP loopback. `cargo bench -p static-uring-bench --bench net`.

mod common;

use common::Workload;
use criterion::{criterion_group, criterion_main, Criterion};

fn net(c: &mut Criterion) {
    let workloads: Vec<Workload> = Workload::ALL
        .into_iter()
        .filter(|w| matches!(w, Workload::PingPong { .. } | Workload::Stream))
        .collect();
    common::criterion_workloads(c, &workloads);
}

criterion_group!(benches, net);
criterion_main!(benches);
