//! Nop round trips: 1 producer at 1 and 64 outstanding, 2 producers at 64 (32 each), against the
//! floor, the channel loop and the raw cross-thread hand-off.
//! `cargo bench -p static-uring-bench --bench nop`.

mod common;

use common::Workload;
use criterion::{criterion_group, criterion_main, Criterion};

fn nop(c: &mut Criterion) {
    let workloads: Vec<Workload> = Workload::ALL
        .into_iter()
        .filter(|w| matches!(w, Workload::Nop { .. }))
        .collect();
    common::criterion_workloads(c, &workloads);
}

criterion_group!(benches, nop);
criterion_main!(benches);
