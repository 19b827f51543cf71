//! Criterion benches: `decide` per rule kind, with the no-op sink, over pre-built users.
//!
//! ```text
//! cargo bench --bench decide
//! ```

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use elvon::{Engine, Features};

const CONFIG: &str = include_str!("../tests/data/kinds.json");
const USERS: usize = 4_096;

fn users() -> Vec<(String, Features)> {
    (0..USERS as i64)
        .map(|i| {
            let f = Features::new()
                .with("country", ["KR", "JP", "US", "DE"][(i % 4) as usize])
                .with("plan", ["free", "pro", "vip"][(i % 3) as usize])
                .with("app_version", ["3.1.0", "3.2.0", "4.0.1"][(i % 3) as usize])
                .with("age", 18 + i % 50)
                .with(
                    "email",
                    if i % 2 == 0 {
                        "ann.lee@example.com"
                    } else {
                        "bob@elsewhere.org"
                    },
                )
                .with("signup", "2024-05-01T12:00:00Z")
                .with("tags", vec!["beta", "early"])
                .with("score", (i % 10) as f64 / 10.0)
                .with("vip", i % 7 == 0)
                .with("device_id", format!("dev-{i}"))
                .with("account", i * 7)
                .with("page_view_7d", i % 20)
                .with("purchase_7d", i % 4)
                .with("cart_abandon_7d", i % 5);
            (format!("user-{i}"), f)
        })
        .collect()
}

fn decide(c: &mut Criterion) {
    let engine = Engine::default();
    engine.load_config_json(CONFIG).expect("valid config");
    let users = users();
    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(1));
    for slot in [
        "serve",
        "split",
        "split_by_device",
        "split_by_int",
        "rollout",
        "score",
        "targeting",
        "layered",
        "killed",
        "fallback",
        "no-such-slot",
    ] {
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

criterion_group!(benches, decide);
criterion_main!(benches);
