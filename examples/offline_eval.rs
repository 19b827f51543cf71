//! Offline evaluation end to end: log decisions with one policy, then estimate what a
//! different config would have earned, from the log alone, and compare with its true value.
//!
//! ```text
//! cargo run --release --example offline_eval
//! ```
//!
//! The simulated world: users belong to one of four segments; each (segment, variant) pair has
//! a click probability the engine does not know. The logging policy is an ε-greedy bandit
//! (ε = 0.2) that learns from the clicks. The candidate is a static, personalized config
//! (one `serve` rule per segment). IPS, SNIPS and DR estimate the candidate's click rate from
//! the logged records and rewards; the truth is computed from the click probabilities.

use elvon::ope::evaluate_records;
use elvon::sink::MemorySink;
use elvon::{Engine, Features};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;

const VARIANTS: [&str; 4] = ["hero", "grid", "list", "video"];
const SEGMENTS: [&str; 4] = ["new", "casual", "loyal", "lapsed"];
const DECISIONS: usize = 50_000;

fn click_rate(segment: usize, variant: usize) -> f64 {
    const P: [[f64; 4]; 4] = [
        [0.10, 0.05, 0.04, 0.12],
        [0.06, 0.09, 0.05, 0.07],
        [0.04, 0.06, 0.11, 0.05],
        [0.08, 0.03, 0.04, 0.06],
    ];
    P[segment][variant]
}

fn variants() -> serde_json::Value {
    json!(VARIANTS
        .iter()
        .map(|v| json!({"id": v}))
        .collect::<Vec<_>>())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. Log with an ε-greedy bandit that learns as it goes.
    let logging = json!({"version": "logging", "slots": [{
        "id": "home", "variants": variants(), "default": "hero",
        // The `when` makes the slot read `segment`, so every record carries it and the
        // candidate below can be replayed on it.
        "rules": [{"when": {"feature": "segment", "op": "exists"},
                   "bandit": {"policy": "epsilon_greedy", "epsilon": 0.2, "arms": VARIANTS,
                              "refresh": {"rewards": 500}}}]
    }]});
    let sink = MemorySink::new(DECISIONS);
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(&logging.to_string())?;
    let mut rng: StdRng = SeedableRng::seed_from_u64(42);
    let mut rewards = std::collections::HashMap::new();
    let mut logged_clicks = 0.0;
    for i in 0..DECISIONS {
        let segment = i % SEGMENTS.len();
        let f = Features::new().with("segment", SEGMENTS[segment]);
        let d = engine.decide("home", &format!("user-{i}"), &f);
        let v = VARIANTS
            .iter()
            .position(|x| Some(*x) == d.variant())
            .ok_or("unknown variant")?;
        let click = if rng.random::<f64>() < click_rate(segment, v) {
            1.0
        } else {
            0.0
        };
        logged_clicks += click;
        engine.reward(d.id(), click);
        rewards.insert(d.id(), click);
    }
    let records = sink.take();
    println!(
        "logged {} decisions with epsilon-greedy(0.2): click rate {:.4}",
        records.len(),
        logged_clicks / DECISIONS as f64
    );

    // 2. The candidate: serve each segment the variant an analyst believes is best for it.
    let picks = ["video", "grid", "list", "hero"];
    let rules: Vec<serde_json::Value> = SEGMENTS
        .iter()
        .zip(picks)
        .map(|(s, v)| json!({"when": {"feature": "segment", "op": "eq", "value": s}, "serve": v}))
        .collect();
    let candidate = Engine::default();
    candidate.load_config_json(
        &json!({"version": "candidate", "slots": [{
            "id": "home", "variants": variants(), "default": "hero", "rules": rules}]})
        .to_string(),
    )?;
    let truth = (0..SEGMENTS.len())
        .map(|s| {
            let v = VARIANTS.iter().position(|x| *x == picks[s]).unwrap_or(0);
            click_rate(s, v)
        })
        .sum::<f64>()
        / SEGMENTS.len() as f64;

    // 3. Estimate the candidate from the log alone.
    let report = evaluate_records(
        records
            .iter()
            .map(|r| (r, rewards.get(&r.id).copied().unwrap_or(0.0))),
        &candidate,
    );
    println!("candidate (static per-segment config), true click rate {truth:.4}:");
    print!("{report}");
    for (name, e) in [
        ("IPS", report.ips),
        ("SNIPS", report.snips),
        ("DM", report.dm),
        ("DR", report.dr),
    ] {
        let verdict = if e.covers(truth) { "covers" } else { "misses" };
        println!("  {name:<5} normal interval {verdict} the truth");
    }
    Ok(())
}
