//! Criterion benches: validate + compile + swap configs of 10, 1,000 and 10,000 slots.
//!
//! ```text
//! cargo bench --bench config
//! ```

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use elvon::Engine;

#[path = "workloads/mod.rs"]
mod workloads;

fn compile_and_swap(c: &mut Criterion) {
    let mut g = c.benchmark_group("load_config");
    g.sample_size(10);
    for n in [10, 1_000, 10_000] {
        let cfg = workloads::many_slots(n);
        let engine = Engine::default();
        engine.load_config(&cfg).expect("bench config is valid");
        g.bench_with_input(BenchmarkId::from_parameter(n), &cfg, |b, cfg| {
            b.iter(|| engine.load_config(cfg).expect("valid"));
        });
    }
    g.finish();
}

criterion_group!(benches, compile_and_swap);
criterion_main!(benches);
