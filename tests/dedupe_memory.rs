//! Resident memory of the exposure-dedupe stage under 10,000,000 distinct users (issue 19,
//! point 2). Its own test binary: resident memory is per process, and other tests running
//! beside it would add theirs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use elvon::sink::{DecisionEvent, DecisionSink, DedupeOptions, DedupeSink};
use elvon::{Engine, Features};
use serde_json::json;

fn config(version: &str) -> String {
    json!({"version": version, "slots": [
        {"id": "s", "variants": [{"id": "a"}, {"id": "b"}], "default": "a",
         "rules": [{"split": {"variants": [{"variant": "a", "weight": 50}, {"variant": "b", "weight": 50}]}}]}
    ]})
    .to_string()
}

/// Counts the records that reach it; keeps nothing.
#[derive(Default, Clone)]
struct Count(Arc<AtomicU64>);

impl DecisionSink for Count {
    fn record(&self, _: &DecisionEvent<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

#[test]
fn ten_million_distinct_users_stay_within_the_configured_memory() {
    let before = rss_bytes();
    let passed = Count::default();
    let capacity = 100_000;
    let sink = DedupeSink::new(passed.clone(), DedupeOptions::default().capacity(capacity));
    let table = sink.table_bytes() as u64;
    assert!(
        table <= 16 * 2 * capacity as u64,
        "{table} bytes for {capacity} keys"
    );
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(&config("1")).expect("valid");
    let none = Features::new();
    let mut user = String::with_capacity(32);
    // Warm up (thread-local id blocks, count tables), then measure.
    for i in 0..10_000 {
        user.clear();
        std::fmt::Write::write_fmt(&mut user, format_args!("warm-{i}")).expect("fmt");
        let _ = engine.decide("s", &user, &none);
    }
    let n = 10_000_000u64;
    for i in 0..n {
        user.clear();
        std::fmt::Write::write_fmt(&mut user, format_args!("user-{i}")).expect("fmt");
        let _ = engine.decide("s", &user, &none);
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < table + 10 * 1024 * 1024,
        "resident memory grew {grown} bytes (table {table})"
    );
    assert_eq!(
        passed.0.load(Ordering::Relaxed),
        n + 10_000,
        "distinct users all pass"
    );
    assert_eq!(sink.deduped(), 0);
}
