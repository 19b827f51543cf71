//! Criterion benches: `decide` per rule kind, with the no-op sink, over pre-built users; the
//! reference workloads; `decide_for` and `update` on a `MemoryStore`.
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

/// `MemoryStore` as the engine's source: `decide_for` on W2 (9 features fetched from a
/// store of 100,000 users), and `update` of one feature.
fn memory_store(c: &mut Criterion) {
    let w = workloads::w2();
    let store = elvon::features::MemoryStore::new();
    for (u, f) in &w.users {
        store.set(u, f.clone());
    }
    let engine = Engine::builder().source(store.clone()).build();
    engine
        .load_config_json(&w.configs[0])
        .expect("valid config");
    let mut g = c.benchmark_group("memory_store");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decide_for_W2", |b| {
        let mut i = 0usize;
        b.iter(|| {
            let (u, _) = &w.users[i % w.users.len()];
            i = i.wrapping_add(1);
            let d = engine.decide_for(black_box(w.slot), black_box(u));
            black_box(d.variant().map(str::len))
        });
    });
    g.bench_function("update", |b| {
        let mut i = 0usize;
        b.iter(|| {
            let (u, _) = &w.users[i % w.users.len()];
            i = i.wrapping_add(1);
            store.update(black_box(u), |f| f.insert("sessions_30d", i as i64));
        });
    });
    g.finish();
}

criterion_group!(benches, decide, reference_workloads, memory_store);
criterion_main!(benches);
