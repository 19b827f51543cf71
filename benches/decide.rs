//! Criterion benches: `decide` per rule kind, with the no-op sink, over pre-built users.
//!
//! ```text
//! cargo bench --bench decide
//! ```

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use elvon::Engine;

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "workloads/mod.rs"]
mod workloads;

use common::{kinds_users, KINDS_CONFIG, KIND_SLOTS};

const USERS: usize = 4_096;

fn decide(c: &mut Criterion) {
    let engine = Engine::default();
    engine.load_config_json(KINDS_CONFIG).expect("valid config");
    let users = kinds_users(USERS);
    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(1));
    for slot in KIND_SLOTS {
        g.bench_with_input(BenchmarkId::from_parameter(slot), &slot, |b, slot| {
            let mut i = 0usize;
            b.iter(|| {
                let (u, f) = &users[i % USERS];
                i = i.wrapping_add(1);
                let d = engine.decide(black_box(slot), black_box(u), black_box(f));
                black_box(d.variant().map(str::len))
            });
        });
    }
    g.finish();
}

/// The reference workloads W1–W5 (see `benches/workloads/mod.rs`), cycling all 100,000 users.
fn reference_workloads(c: &mut Criterion) {
    let mut g = c.benchmark_group("workload");
    g.throughput(Throughput::Elements(1));
    for w in workloads::all() {
        let engine = Engine::default();
        engine
            .load_config_json(&w.configs[0])
            .expect("valid config");
        g.bench_function(w.name, |b| {
            let mut i = 0usize;
            b.iter(|| {
                let (u, f) = &w.users[i % w.users.len()];
                i = i.wrapping_add(1);
                let d = engine.decide(black_box(w.slot), black_box(u), black_box(f));
                black_box(d.variant().map(str::len))
            });
        });
    }
    g.finish();
}

criterion_group!(benches, decide, reference_workloads);
criterion_main!(benches);
