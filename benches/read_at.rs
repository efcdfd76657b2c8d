//! read_at of 4 KiB at random offsets of a 256 MiB file, page cache (1 and 32 outstanding) and
//! O_DIRECT where the filesystem allows it. `cargo bench -p static-uring-bench --bench read_at`.

mod common;

use common::Workload;
use criterion::{criterion_group, criterion_main, Criterion};

fn read_at(c: &mut Criterion) {
    let workloads: Vec<Workload> = Workload::ALL
        .into_iter()
        .filter(|w| matches!(w, Workload::ReadAt { .. }))
        .collect();
    common::criterion_workloads(c, &workloads);
}

criterion_group!(benches, read_at);
criterion_main!(benches);
