//! `Engine::rollback`: the engine keeps the last few replaced snapshots and swaps the
//! previous one back in without recompiling (issue 18, point 4).

use std::sync::Arc;

use elvon::{Engine, Features, RewardOutcome, RollbackError};
use serde_json::json;

/// A config of `version` whose slot `s` serves `variant` to everyone.
fn serving(version: &str, variant: &str) -> String {
    json!({"version": version, "slots": [{
        "id": "s",
        "variants": [{"id": "a"}, {"id": "b"}, {"id": "c"}],
        "default": "a",
        "rules": [{"serve": variant}]
    }]})
    .to_string()
}

fn served(engine: &Engine) -> String {
    engine
        .decide("s", "u", &Features::new())
        .variant()
        .unwrap_or("-")
        .to_owned()
}

#[test]
fn rollback_swaps_the_kept_snapshots_back_in_one_at_a_time() {
    let engine = Engine::builder().keep_previous(2).build();
    assert_eq!(
        engine.rollback(),
        Err(RollbackError::NoPrevious { keep: 2 }),
        "nothing loaded yet"
    );
    engine.load_config_json(&serving("1", "a")).expect("valid");
    assert!(
        engine.previous_versions().is_empty(),
        "the empty start is not kept"
    );
    engine.load_config_json(&serving("2", "b")).expect("valid");
    let v2 = engine.snapshot();
    engine.load_config_json(&serving("3", "c")).expect("valid");
    assert_eq!(engine.previous_versions(), ["1", "2"]);
    assert_eq!(served(&engine), "c");

    assert_eq!(engine.rollback().expect("kept").version, "2");
    assert!(
        Arc::ptr_eq(&engine.snapshot(), &v2),
        "the very snapshot that served version 2, not a recompiled one"
    );
    assert_eq!(
        (engine.config_version(), served(&engine)),
        ("2".into(), "b".into())
    );
    assert_eq!(engine.previous_versions(), ["1"]);

    assert_eq!(engine.rollback().expect("kept").version, "1");
    assert_eq!(served(&engine), "a");
    assert_eq!(
        engine.rollback(),
        Err(RollbackError::NoPrevious { keep: 2 })
    );
    assert_eq!(
        engine.config_version(),
        "1",
        "a failed rollback changes nothing"
    );

    // A load after rollbacks keeps the rolled-back-to snapshot again.
    engine.load_config_json(&serving("4", "b")).expect("valid");
    assert_eq!(engine.previous_versions(), ["1"]);
}

#[test]
fn kept_snapshots_are_bounded_and_the_ones_pushed_out_are_freed() {
    let engine = Engine::builder().keep_previous(2).build();
    let mut weak = Vec::new();
    for v in 1..=5 {
        engine
            .load_config_json(&serving(&v.to_string(), "b"))
            .expect("valid");
        weak.push(Arc::downgrade(&engine.snapshot()));
    }
    assert_eq!(engine.previous_versions(), ["3", "4"]);
    let alive: Vec<bool> = weak.iter().map(|w| w.upgrade().is_some()).collect();
    assert_eq!(
        alive,
        [false, false, true, true, true],
        "versions 1 and 2 were pushed out and freed by the loads that pushed them"
    );
}

#[test]
fn an_engine_that_keeps_none_cannot_roll_back_and_a_rejected_load_keeps_nothing() {
    let none = Engine::builder().keep_previous(0).build();
    none.load_config_json(&serving("1", "a")).expect("valid");
    none.load_config_json(&serving("2", "b")).expect("valid");
    assert_eq!(none.rollback(), Err(RollbackError::NoPrevious { keep: 0 }));
    assert_eq!(none.config_version(), "2");

    let engine = Engine::default();
    engine.load_config_json(&serving("1", "a")).expect("valid");
    engine.load_config_json(&serving("2", "b")).expect("valid");
    let bad = json!({"version": "3", "slots": [{"id": "s", "variants": [], "default": "zz"}]});
    engine
        .load_config_json(&bad.to_string())
        .expect_err("invalid");
    assert_eq!(
        engine.previous_versions(),
        ["1"],
        "the rejected load kept nothing"
    );
    assert_eq!(engine.rollback().expect("kept").version, "1");
}

fn bandit(version: &str, arms: &[&str]) -> String {
    json!({"version": version, "slots": [{
        "id": "s",
        "variants": arms.iter().map(|a| json!({"id": a})).collect::<Vec<_>>(),
        "default": arms[0],
        "rules": [{"bandit": {"policy": "epsilon_greedy", "arms": arms, "reward": {"window_ms": 600_000}}}]
    }]})
    .to_string()
}

#[test]
fn a_rolled_back_bandit_config_learns_from_rewards_again() {
    let engine = Engine::builder().id_prefix(7).build();
    engine
        .load_config_json(&bandit("1", &["a", "b"]))
        .expect("valid");
    // Version 2 has no bandit at all, so the learner's bandit for `s` goes inactive.
    engine.load_config_json(&serving("2", "c")).expect("valid");
    assert_eq!(engine.rollback().expect("kept").version, "1");
    let none = Features::new();
    let (mut applied, mut late_b) = (0, 0);
    for i in 0..2_000 {
        let d = engine.decide("s", &format!("u{i}"), &none);
        let v = d.variant().expect("an arm").to_owned();
        assert!(v == "a" || v == "b", "{v}");
        let r = if v == "b" { 1.0 } else { 0.0 };
        if engine.reward(d.id(), r) == RewardOutcome::Applied {
            applied += 1;
        }
        if i % 50 == 49 {
            engine.refresh();
        }
        if i >= 1_500 && v == "b" {
            late_b += 1;
        }
    }
    assert_eq!(
        applied, 2_000,
        "every decision of the restored bandit found its reward"
    );
    let n: f64 = engine.learner_state().bandits[0]
        .arms
        .iter()
        .map(|a| a.n)
        .sum();
    assert_eq!(n, 2_000.0);
    // epsilon 0.1: the best arm is chosen with probability 0.95 once the model knows it.
    assert!(
        late_b >= 430,
        "the restored bandit's model was refreshed from its rewards: {late_b} of the last 500 chose b"
    );
}
