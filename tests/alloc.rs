//! `decide` performs zero heap allocations with the no-op sink, for every rule kind (and
//! for a sticky slot serving stored assignments from memory).
//! This test binary installs a counting global allocator that counts per thread.

use std::collections::BTreeMap;

use common::{kinds_users, KINDS_CONFIG, KIND_SLOTS};
use elvon::sink::JsonlSink;
use elvon::Engine;
use elvon::ReasonKind;

mod common;

#[path = "common/counting.rs"]
mod counting;

use counting::{allocs, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn decide_allocates_nothing_for_any_rule_kind() {
    let engine = Engine::default();
    engine.load_config_json(KINDS_CONFIG).expect("valid config");
    let users = kinds_users(100_000);
    // Warm up: per-thread caches (regex scratch space, decision-id block, arc-swap slots).
    for (u, f) in users.iter().take(1_000) {
        for s in KIND_SLOTS {
            std::hint::black_box(engine.decide(s, u, f));
        }
    }
    let mut reasons: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut per_slot = Vec::new();
    for slot in KIND_SLOTS {
        let before = allocs();
        let mut kinds = [0u64; ReasonKind::ALL.len()];
        for (u, f) in &users {
            let d = engine.decide(slot, u, f);
            kinds[d.reason().kind() as usize] += 1;
            std::hint::black_box(d.variant());
        }
        per_slot.push((slot, allocs() - before));
        for (i, n) in kinds.iter().enumerate() {
            *reasons.entry(ReasonKind::ALL[i].as_str()).or_default() += n;
        }
    }
    // Sticky decisions: a sticky split on an in-memory store every user's first decision
    // filled (writing a new assignment allocates; serving a stored one must not).
    let sticky = Engine::builder()
        .assignments(elvon::sticky::MemoryAssignments::new(200_000))
        .assignment_queue(200_000)
        .build();
    let sticky_config = r#"{"version": "1", "slots": [{"id": "s", "sticky": {},
        "variants": [{"id": "a"}, {"id": "b"}], "default": "a",
        "rules": [{"split": {"variants": [{"variant": "a", "weight": 50}, {"variant": "b", "weight": 50}]}}]}]}"#;
    sticky
        .load_config_json(sticky_config)
        .expect("valid config");
    for (u, f) in &users {
        std::hint::black_box(sticky.decide("s", u, f));
    }
    sticky
        .flush_assignments(std::time::Duration::from_secs(30))
        .expect("assignments written");
    let before = allocs();
    for (u, f) in &users {
        let d = sticky.decide("s", u, f);
        *reasons.entry(d.reason().kind().as_str()).or_default() += 1;
        std::hint::black_box(d.variant());
    }
    per_slot.push(("s (sticky, served)", allocs() - before));
    // Every reason kind must actually have been exercised, or the test proves less than it says.
    for k in ReasonKind::ALL.map(ReasonKind::as_str) {
        assert!(
            reasons.get(k).copied().unwrap_or(0) > 0,
            "reason {k} never produced: {reasons:?}"
        );
    }
    let total: u64 = per_slot.iter().map(|(_, n)| n).sum();
    assert_eq!(
        total,
        0,
        "allocations per slot over {} decisions each: {per_slot:?}",
        users.len()
    );
}

#[test]
fn swapping_configs_does_not_make_decide_allocate() {
    let engine = Engine::default();
    let versions: Vec<String> = ["a", "b"]
        .iter()
        .map(|v| KINDS_CONFIG.replace("\"kinds-1\"", &format!("\"{v}\"")))
        .collect();
    engine.load_config_json(&versions[0]).expect("valid config");
    let users = kinds_users(2_000);
    for (u, f) in &users {
        for s in KIND_SLOTS {
            std::hint::black_box(engine.decide(s, u, f));
        }
    }
    let mut decide_allocs = 0;
    for round in 0..50 {
        engine
            .load_config_json(&versions[round % 2])
            .expect("valid config");
        let before = allocs();
        for (u, f) in users.iter().take(200) {
            for s in KIND_SLOTS {
                std::hint::black_box(engine.decide(s, u, f));
            }
        }
        decide_allocs += allocs() - before;
    }
    assert_eq!(engine.config_version(), "b");
    assert_eq!(
        decide_allocs, 0,
        "decide allocated after config swaps (regex caches rebuilt?)"
    );
}

#[test]
fn jsonl_sink_adds_no_allocation_per_decide() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = JsonlSink::create(dir.path().join("log.jsonl"), Default::default()).expect("sink");
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(KINDS_CONFIG).expect("valid config");
    let users = kinds_users(20_000);
    // Warm up: this thread's capture queue is allocated on its first record.
    for (u, f) in users.iter().take(1_000) {
        for s in KIND_SLOTS {
            std::hint::black_box(engine.decide(s, u, f));
        }
    }
    let before = allocs();
    let mut n = 0u64;
    for (u, f) in &users {
        for s in KIND_SLOTS {
            std::hint::black_box(engine.decide(s, u, f));
            n += 1;
        }
    }
    let made = allocs() - before;
    sink.flush(std::time::Duration::from_secs(30))
        .expect("flush");
    let s = sink.stats();
    assert_eq!(s.offered, s.written + s.dropped + s.failed);
    assert!(s.written > 0, "{s:?}");
    assert_eq!(
        made, 0,
        "{made} allocations in {n} decides with the JSON-lines sink"
    );
}
