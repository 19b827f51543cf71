//! Criterion benches: validate + compile + swap configs of 10, 1,000 and 10,000 slots.
//!
//! ```text
//! cargo bench --bench config
//! ```

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use elvon::{Config, Engine};
use serde_json::json;

/// A config of `n` slots, each with targeting, a rollout and a split, in two layers.
pub fn config(n: usize) -> Config {
    let slots: Vec<_> = (0..n)
        .map(|i| {
            json!({
                "id": format!("slot-{i}"),
                "layer": {"id": if i % 2 == 0 { "even" } else { "odd" }, "from": (i / 2) % 10, "to": (i / 2) % 10 + 1},
                "variants": [{"id": "off"}, {"id": "a", "payload": {"i": i}}, {"id": "b"}],
                "default": "off",
                "rules": [
                    {"id": "geo", "when": {"all": [{"segment": "asia"}, {"feature": "age", "op": "between", "value": [18, 65]}]},
                     "rollout": {"percent": 20, "variant": "a"}},
                    {"id": "app", "when": {"feature": "app_version", "op": "semver_ge", "value": "3.2.0"}, "serve": "b"},
                    {"id": "main", "split": {"variants": [{"variant": "a", "weight": 50}, {"variant": "b", "weight": 50}]}}
                ]
            })
        })
        .collect();
    // Layer ranges only need to be disjoint per layer: 10 one-bucket ranges per layer repeat,
    // so give each slot a distinct range instead.
    let slots: Vec<_> = slots
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            let (from, to) = ((i / 2) as u64, (i / 2) as u64 + 1);
            s["layer"]["from"] = json!(from % 10_000);
            s["layer"]["to"] = json!(from % 10_000 + (to - from));
            s
        })
        .collect();
    serde_json::from_value(json!({
        "version": format!("bench-{n}"),
        "segments": {"asia": {"feature": "country", "op": "in", "value": ["KR", "JP", "TW"]}},
        "layers": [{"id": "even"}, {"id": "odd"}],
        "slots": slots
    }))
    .expect("config document")
}

fn compile_and_swap(c: &mut Criterion) {
    let mut g = c.benchmark_group("load_config");
    g.sample_size(10);
    for n in [10, 1_000, 10_000] {
        let cfg = config(n);
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
