//! Defects found by attacks on a running build (issue 13): each test reproduces one and
//! checks the fix. The point number of the issue is in each test's doc comment.

use std::time::Duration;

use elvon::{Config, Engine, Features, LearnerState, RewardOutcome};
use serde_json::json;

fn two_arm_split(slot: &str, rule: Option<&str>) -> serde_json::Value {
    let mut r = json!({"split": {"variants": [{"variant": "a", "weight": 50}, {"variant": "b", "weight": 50}]}});
    if let Some(id) = rule {
        r["id"] = json!(id);
    }
    json!({"id": slot, "variants": [{"id": "a"}, {"id": "b"}], "default": "a", "rules": [r]})
}

/// Point 18: a rule with id `"1"` at index 0 and an unnamed rule at index 1 of one slot
/// once shared the salt `s.1`: everyone the 50% rollout let through fell in the split's upper
/// half too, so every split decision served `b`.
#[test]
fn a_numeric_rule_id_and_a_rule_index_do_not_share_a_salt() {
    let config = json!({"version": "1", "slots": [{"id": "s", "variants": [{"id": "a"}, {"id": "b"}], "default": "a", "rules": [
        {"id": "1", "rollout": {"variant": "b", "percent": 50}},
        {"split": {"variants": [{"variant": "a", "weight": 50}, {"variant": "b", "weight": 50}]}}
    ]}]});
    let engine = Engine::default();
    engine
        .load_config_json(&config.to_string())
        .expect("valid config");
    let none = Features::new();
    let (mut split, mut a) = (0, 0);
    for i in 0..10_000 {
        let d = engine.decide("s", &format!("user-{i}"), &none);
        if matches!(d.reason(), elvon::Reason::Split { .. }) {
            split += 1;
            a += usize::from(d.variant() == Some("a"));
        }
    }
    assert!((4_000..6_000).contains(&split), "{split} split decisions");
    assert!(
        (split * 4 / 10..split * 6 / 10).contains(&a),
        "{a} of {split} split decisions served a"
    );
}

/// Point 18, the exact pair of the report: slot `a` rule `b.c` and slot `a.b` rule `c`.
#[test]
fn dotted_ids_do_not_share_a_salt() {
    let config = json!({"version": "1", "slots": [two_arm_split("a", Some("b.c")), two_arm_split("a.b", Some("c"))]});
    let engine = Engine::default();
    engine
        .load_config_json(&config.to_string())
        .expect("valid config");
    let none = Features::new();
    let same = (0..10_000)
        .filter(|i| {
            let u = format!("user-{i}");
            engine.decide("a", &u, &none).variant() == engine.decide("a.b", &u, &none).variant()
        })
        .count();
    assert!(
        (4_000..6_000).contains(&same),
        "{same} of 10,000 users in the same arm"
    );
}

/// Point 17: the learner keys of slot `a/b` (unnamed bandit) and slot `a` rule `b` differ:
/// rewards in one slot do not reach the other's statistics.
#[test]
fn learner_keys_of_different_slots_do_not_collide() {
    let bandit = |rule: Option<&str>| {
        let mut r =
            json!({"bandit": {"policy": "epsilon_greedy", "epsilon": 0.1, "arms": ["a", "b"]}});
        if let Some(id) = rule {
            r["id"] = json!(id);
        }
        r
    };
    let slot = |id: &str, rule| json!({"id": id, "variants": [{"id": "a"}, {"id": "b"}], "default": "a", "rules": [bandit(rule)]});
    let config = json!({"version": "1", "slots": [slot("a/b", None), slot("a", Some("b"))]});
    let engine = Engine::default();
    engine
        .load_config_json(&config.to_string())
        .expect("valid config");
    let none = Features::new();
    for _ in 0..50 {
        let d = engine.decide("a/b", "u", &none);
        assert_eq!(engine.reward(d.id(), 1.0), RewardOutcome::Applied);
    }
    let state: LearnerState = engine.learner_state();
    assert_eq!(state.bandits.len(), 2, "two keys: {:?}", state.bandits);
    let n = |k: &str| -> f64 {
        state
            .bandits
            .iter()
            .find(|b| b.key == k)
            .map(|b| b.arms.iter().map(|a| a.n).sum())
            .unwrap_or(f64::NAN)
    };
    assert_eq!(n("a\\/b"), 50.0);
    assert_eq!(n("a/b"), 0.0);
}

/// Point 21: an object with the same key twice is rejected with its path.
#[test]
fn duplicate_keys_are_rejected_with_a_path() {
    let top = r#"{"version": "1", "version": "2", "slots": []}"#;
    let err = Config::from_json(top).expect_err("duplicate version");
    assert!(
        err.to_string()
            .contains(r#"(root): duplicate key "version""#),
        "{err}"
    );
    let in_slot = r#"{"version": "1", "slots": [{"id": "a", "variants": [{"id": "x"}], "default": "x", "id": "b"}]}"#;
    let err = Engine::default()
        .load_config_json(in_slot)
        .expect_err("duplicate id");
    assert!(
        err.to_string().contains(r#"slots[0]: duplicate key "id""#),
        "{err}"
    );
    // Through serde too (any format): the same check.
    let err = serde_json::from_str::<Config>(top).expect_err("via Deserialize");
    assert!(err.to_string().contains("duplicate key"), "{err}");
    // Same keys in different objects are fine.
    Config::from_json(r#"{"version": "1", "slots": [{"id": "a"}, {"id": "b"}]}"#)
        .expect("no duplicate in one object");
}

/// Point 22: versions and ids are bounded (a 1 MiB version would be copied into every log
/// line).
#[test]
fn oversized_versions_and_ids_are_rejected() {
    let long = "v".repeat(1 << 20);
    let config = json!({"version": long, "slots": [
        {"id": "s".repeat(300), "variants": [{"id": "x"}, {"id": "y".repeat(257)}], "default": "x", "rules": [
            {"id": "r".repeat(1000), "when": {"feature": "f".repeat(300), "op": "exists"}, "serve": "x"}]}
    ]});
    let err = Engine::default()
        .load_config_json(&config.to_string())
        .expect_err("too long");
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path()).collect();
    assert!(paths.contains(&"version"), "{err}");
    assert!(paths.contains(&"slots[0].id"), "{err}");
    assert!(paths.contains(&"slots[0].variants[1].id"), "{err}");
    assert!(paths.contains(&"slots[0].rules[0].id"), "{err}");
    assert!(paths.contains(&"slots[0].rules[0].when.feature"), "{err}");
    assert!(err.to_string().contains("at most 256 bytes"), "{err}");
    // 256 bytes is fine.
    let ok = json!({"version": "v".repeat(256), "slots": []});
    Engine::default()
        .load_config_json(&ok.to_string())
        .expect("256 bytes is within the bound");
}

/// Point 23: building a large feature set is not quadratic. 100,000 features through
/// `collect` and through deserialization: counted in comparisons of a sort, not timed; this
/// checks the result and that a decoded map over the bound is refused.
#[test]
fn large_feature_sets_build_by_sorting_and_decoding_is_bounded() {
    let n = 100_000;
    let f: Features = (0..n).map(|i| (format!("f{i}"), i as i64)).collect();
    assert_eq!(f.len(), n);
    for i in (0..n).step_by(997) {
        assert_eq!(
            f.get(&format!("f{i}")).and_then(elvon::Value::as_f64),
            Some(i as f64)
        );
    }
    // A repeated name keeps its last value, as with insert.
    let f: Features = [("a", 1), ("b", 2), ("a", 3)].into_iter().collect();
    assert_eq!(
        (f.len(), f.get("a").and_then(elvon::Value::as_f64)),
        (2, Some(3.0))
    );
    let mut g = f.clone();
    g.extend([("c", 4), ("b", 5)]);
    assert_eq!(g.len(), 3);
    assert_eq!(g.get("b").and_then(elvon::Value::as_f64), Some(5.0));
    // Decoding: within the bound it works, beyond it is an error naming the bound.
    let map = |n: usize| {
        let body: Vec<String> = (0..n).map(|i| format!("\"f{i}\": {i}")).collect();
        format!("{{{}}}", body.join(","))
    };
    let ok: Features = serde_json::from_str(&map(10_000)).expect("10,000 features decode");
    assert_eq!(ok.len(), 10_000);
    let err = serde_json::from_str::<Features>(&map(10_001)).expect_err("over the bound");
    assert!(
        err.to_string().contains("more than 10000 features"),
        "{err}"
    );
}

/// Point 8: `Duration::MAX` as "no deadline" does not panic.
#[test]
fn duration_max_does_not_panic() {
    let store = elvon::features::MemoryStore::new();
    store.set("u", Features::new().with("country", "KR"));
    let engine = Engine::builder()
        .source(store)
        .fetch_deadline(Duration::MAX)
        .build();
    engine
        .load_config_json(
            r#"{"version": "1", "slots": [{"id": "s", "variants": [{"id": "a"}, {"id": "b"}], "default": "a",
                "rules": [{"when": {"feature": "country", "op": "eq", "value": "KR"}, "serve": "b"}]}]}"#,
        )
        .expect("valid config");
    assert_eq!(engine.decide_for("s", "u").variant(), Some("b"));
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = elvon::sink::JsonlSink::create(
        dir.path().join("log.jsonl"),
        elvon::sink::JsonlOptions::default(),
    )
    .expect("sink");
    sink.flush(Duration::MAX).expect("flush without a deadline");
}

fn bandit_config(version: &str, arms: &[&str], bandit: serde_json::Value) -> String {
    let mut b = bandit;
    b["arms"] = json!(arms);
    json!({"version": version, "slots": [{
        "id": "s",
        "variants": arms.iter().map(|a| json!({"id": a})).collect::<Vec<_>>(),
        "default": arms[0],
        "rules": [{"bandit": b}]
    }]})
    .to_string()
}

/// A decision of `engine` in slot `s` that chose `arm`.
fn decision_for(engine: &Engine, arm: &str) -> elvon::DecisionId {
    let none = Features::new();
    (0..10_000)
        .map(|_| engine.decide("s", "u", &none))
        .find(|d| d.variant() == Some(arm))
        .map(|d| d.id())
        .expect("the arm is drawn within 10,000 decisions")
}

/// Point 19: a huge finite reward is refused (out of the rule's range) instead of making a
/// policy's statistics infinite; a huge context value is clamped, so the regression stays
/// finite.
#[test]
fn huge_rewards_and_context_values_do_not_break_policies() {
    let engine = Engine::builder().id_prefix(7).build();
    let eps = json!({"policy": "epsilon_greedy", "epsilon": 0.1, "refresh": {"rewards": 1}});
    engine
        .load_config_json(&bandit_config("1", &["a", "b"], eps))
        .expect("valid");
    for v in [1e308, -1e308, 2e6] {
        let d = decision_for(&engine, "a");
        assert_eq!(engine.reward(d, v), RewardOutcome::OutOfRange, "reward {v}");
    }
    assert_eq!(
        engine.reward_variant("s", "a", 1e300),
        RewardOutcome::OutOfRange
    );
    // Sane rewards: b pays 1, a pays 0; the greedy arm becomes b.
    let none = Features::new();
    for _ in 0..2_000 {
        let d = engine.decide("s", "u", &none);
        let r = if d.variant() == Some("b") { 1.0 } else { 0.0 };
        assert_eq!(engine.reward(d.id(), r), RewardOutcome::Applied);
    }
    let b = (0..1_000)
        .filter(|_| engine.decide("s", "u", &none).variant() == Some("b"))
        .count();
    assert!(b > 900, "b chosen {b} of 1,000 times");
    // A configured range is enforced too.
    let narrow = json!({"policy": "epsilon_greedy", "reward": {"min": 0, "max": 1}});
    engine
        .load_config_json(&bandit_config("2", &["a", "b"], narrow))
        .expect("valid");
    let d = decision_for(&engine, "a");
    assert_eq!(engine.reward(d, 1.5), RewardOutcome::OutOfRange);
    // The refused reward used up the decision's join.
    assert_eq!(engine.reward(d, 1.0), RewardOutcome::Unknown);
    let d = decision_for(&engine, "a");
    assert_eq!(engine.reward(d, 1.0), RewardOutcome::Applied);

    // Contextual: one context value of 1e160 once made an arm's statistics infinite.
    let linear = json!({"policy": "linear", "features": ["x"], "refresh": {"rewards": 1}});
    engine
        .load_config_json(&bandit_config("3", &["a", "b"], linear))
        .expect("valid");
    let huge = Features::new().with("x", 1e160);
    for _ in 0..20 {
        let d = engine.decide("s", "u", &huge);
        assert_eq!(engine.reward(d.id(), 1.0), RewardOutcome::Applied);
    }
    let sane = Features::new().with("x", 1.0);
    for _ in 0..200 {
        let d = engine.decide("s", "u", &sane);
        let r = if d.variant() == Some("b") { 1.0 } else { 0.0 };
        engine.reward(d.id(), r);
    }
    engine.refresh();
    let state = engine.learner_state();
    for arm in state.bandits.iter().flat_map(|b| &b.arms) {
        let all = arm.xx.iter().chain(&arm.xr).chain([&arm.n, &arm.sum]);
        assert!(all.clone().all(|v| v.is_finite()), "{arm:?}");
    }
    let d = engine.decide("s", "u", &sane);
    let p: Vec<f64> = d
        .probabilities()
        .expect("a bandit decision")
        .map(|(_, p)| p)
        .collect();
    assert!(p.iter().all(|p| p.is_finite()), "{p:?}");
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{p:?}");
}

/// Point 20: a reward for an arm a swap removed is not "applied" and thrown away, and a
/// decision made before the removal never credits the arm once it is back.
#[test]
fn rewards_for_removed_arms_are_refused_and_never_credit_a_readded_arm() {
    let engine = Engine::builder().id_prefix(3).build();
    let eps = json!({"policy": "epsilon_greedy", "epsilon": 0.5, "refresh": {"rewards": 1}});
    engine
        .load_config_json(&bandit_config("1", &["a", "b"], eps.clone()))
        .expect("valid");
    let before_removal = decision_for(&engine, "b");
    let also_before = decision_for(&engine, "b");
    engine
        .load_config_json(&bandit_config("2", &["a", "c"], eps.clone()))
        .expect("valid");
    assert_eq!(
        engine.reward(before_removal, 1.0),
        RewardOutcome::ArmRemoved
    );
    engine
        .load_config_json(&bandit_config("3", &["a", "b", "c"], eps))
        .expect("valid");
    assert_eq!(engine.reward(also_before, 1.0), RewardOutcome::ArmRemoved);
    let state = engine.learner_state();
    let b = state.bandits[0]
        .arms
        .iter()
        .find(|a| a.id == "b")
        .expect("arm b");
    assert_eq!((b.n, b.sum), (0.0, 0.0), "{b:?}");
    // A fresh decision for the re-added arm joins.
    let fresh = decision_for(&engine, "b");
    assert_eq!(engine.reward(fresh, 1.0), RewardOutcome::Applied);
    assert_eq!(engine.reward_stats().rejected, 2);
}

/// Point 7: restoring a state saved under a config with fewer arms, while two threads
/// reward and the learner thread refreshes, must not panic.
#[test]
fn restore_races_with_rewards_and_refresh_without_panicking() {
    let eps =
        json!({"policy": "epsilon_greedy", "epsilon": 0.3, "refresh": {"rewards": 1, "ms": 1}});
    let small = Engine::builder().id_prefix(1).build();
    small
        .load_config_json(&bandit_config("1", &["a", "b"], eps.clone()))
        .expect("valid");
    for _ in 0..100 {
        let d = small.decide("s", "u", &Features::new());
        small.reward(d.id(), 1.0);
    }
    let saved = small.learner_state();
    let engine = Engine::builder().id_prefix(2).build();
    engine
        .load_config_json(&bandit_config(
            "2",
            &["c", "d", "e", "f", "a", "b"],
            eps.clone(),
        ))
        .expect("valid");
    let learner = engine
        .spawn_learner(Duration::from_micros(100))
        .expect("learner thread");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let rounds = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let none = Features::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let d = engine.decide("s", "u", &none);
                        engine.reward(d.id(), 1.0);
                        engine.reward_variant("s", "a", 0.0);
                        rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                })
            })
            .collect();
        // At least 2,000 restores, and on until the rewarding threads did 5,000 rounds
        // between them (a loaded machine may start them late).
        let mut restores = 0;
        let t = std::time::Instant::now();
        while restores < 2_000 || rounds.load(std::sync::atomic::Ordering::Relaxed) < 5_000 {
            engine.restore_learner(saved.clone());
            restores += 1;
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "the threads never ran"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in workers {
            w.join().expect("a rewarding thread panicked");
        }
    });
    learner.stop();
    let state = engine.learner_state();
    let arms: Vec<&str> = state.bandits[0]
        .arms
        .iter()
        .filter(|a| a.active)
        .map(|a| a.id.as_str())
        .collect();
    assert_eq!(arms.len(), 6, "{arms:?}");
}

/// Point 9: a counter stored near `i64::MAX` saturates instead of overflowing (a panic in a
/// debug build), and an event dated far in the future (`u64::MAX`) is rejected with its path
/// instead of creating buckets that never leave their window.
#[test]
fn counters_saturate_and_future_events_are_rejected() {
    use elvon::features::aggregate::{Aggregate, Aggregates, Event};
    let aggs = Aggregates::new(vec![
        Aggregate::count("views", "view"),
        Aggregate::count("views_7d", "view").window(Duration::from_millis(86_400_000), 7),
    ])
    .expect("valid");
    let store = elvon::features::MemoryStore::new();
    store.set_feature("u", "views", i64::MAX - 1);
    let now = 1_800_000_000_000;
    for i in 0..3 {
        let e = Event::new(format!("e{i}"), "u", "view", now);
        store.apply(&aggs, &e, now).expect("applied");
    }
    let f = store.read(&aggs, "u", now);
    assert_eq!(f.get("views"), Some(&elvon::Value::Int(i64::MAX)));
    let future = Event::new("late", "u", "view", u64::MAX);
    let err = store
        .apply(&aggs, &future, now)
        .expect_err("dated in the future");
    assert!(err.to_string().contains("time_ms"), "{err}");
    assert!(err.to_string().contains("future"), "{err}");
    // Within the allowed skew (one hour by default) is fine; the skew is configurable.
    let soon = Event::new("soon", "u", "view", now + 60_000);
    store
        .apply(&aggs, &soon, now)
        .expect("a minute ahead is fine");
    let strict = aggs.clone().max_future_skew(Duration::from_secs(1));
    let err = store
        .apply(
            &strict,
            &Event::new("soon2", "u", "view", now + 60_000),
            now,
        )
        .expect_err("a minute ahead is too far with a 1 s skew");
    assert!(err.to_string().contains("future"), "{err}");
}

/// Point 24: the request thread that drops the last decision of a replaced snapshot does not
/// free it (with a large config that took 215 ms on a request thread); the reclaimer does,
/// soon after.
#[test]
fn the_last_decision_of_an_old_snapshot_does_not_free_it() {
    // No snapshot kept for rollback: the replaced one is retired at once.
    let engine = Engine::builder().keep_previous(0).build();
    let config = |v: &str| {
        let slots: Vec<_> = (0..2_000)
            .map(|i| two_arm_split(&format!("s{i}"), Some("r")))
            .collect();
        json!({"version": v, "slots": slots}).to_string()
    };
    engine.load_config_json(&config("1")).expect("valid");
    let old = std::sync::Arc::downgrade(&engine.snapshot());
    let held = engine.decide("s1", "u", &Features::new());
    engine.load_config_json(&config("2")).expect("valid");
    assert!(old.upgrade().is_some(), "the held decision keeps it alive");
    // The "request thread" lets go of the last decision of version 1 …
    drop(held);
    // … and the snapshot is still there: it was not freed on this thread.
    assert!(
        old.upgrade().is_some(),
        "the old snapshot was freed by the thread that dropped the decision"
    );
    let t = std::time::Instant::now();
    while old.upgrade().is_some() {
        assert!(t.elapsed() < Duration::from_secs(10), "never freed");
        std::thread::sleep(Duration::from_millis(5));
    }
    // A swap with no decision outstanding frees the old snapshot on the swapping thread.
    let v2 = std::sync::Arc::downgrade(&engine.snapshot());
    engine.load_config_json(&config("3")).expect("valid");
    assert!(v2.upgrade().is_none(), "freed by the swap itself");
}

/// Point 10 (in part): a reward that arrives after its decision's window is not applied;
/// the decision expires instead (with the rule's default reward). Measured on a fake clock,
/// without sleeping. Before, a late reward was applied whenever `refresh` had not yet run.
#[test]
fn a_reward_after_the_window_is_not_applied() {
    let clock = elvon::clock::Clock::fake(1_000_000);
    let engine = Engine::builder().clock(clock.clone()).id_prefix(5).build();
    let eps = json!({"policy": "epsilon_greedy", "reward": {"window_ms": 1_000, "default": 0}});
    engine
        .load_config_json(&bandit_config("1", &["a", "b"], eps))
        .expect("valid");
    let none = Features::new();
    let late = engine.decide("s", "u", &none).id();
    let in_time = engine.decide("s", "u", &none).id();
    clock.advance(Duration::from_millis(999));
    assert_eq!(engine.reward(in_time, 1.0), RewardOutcome::Applied);
    clock.advance(Duration::from_millis(2));
    assert_eq!(engine.reward(late, 1.0), RewardOutcome::Unknown);
    let s = engine.reward_stats();
    assert_eq!((s.applied, s.unknown, s.defaulted), (1, 1, 1), "{s:?}");
    let sum: f64 = engine.learner_state().bandits[0]
        .arms
        .iter()
        .map(|a| a.sum)
        .sum();
    assert_eq!(
        sum, 1.0,
        "only the reward in time counted (the default is 0)"
    );
}

/// Point 10 (in part): a decision evicted because the pending store is full gets its rule's
/// default reward (before, it was only counted, which biases every policy under load).
#[test]
fn evicted_decisions_get_the_default_reward() {
    let clock = elvon::clock::Clock::fake(0);
    let engine = Engine::builder()
        .clock(clock)
        .pending_rewards(16)
        .id_prefix(9)
        .build();
    let eps = json!({"policy": "epsilon_greedy", "reward": {"window_ms": 3_600_000, "default": 0}});
    engine
        .load_config_json(&bandit_config("1", &["a", "b"], eps))
        .expect("valid");
    let none = Features::new();
    for _ in 0..40 {
        engine.decide("s", "u", &none);
    }
    engine.refresh();
    let s = engine.reward_stats();
    assert_eq!(s.evicted, 24, "{s:?}");
    assert_eq!(
        s.defaulted, 24,
        "every evicted decision got the default: {s:?}"
    );
    let n: f64 = engine.learner_state().bandits[0]
        .arms
        .iter()
        .map(|a| a.n)
        .sum();
    assert_eq!(n, 24.0);
}

/// Point 10: with no default reward, a decision that takes the place of an expired one counts
/// it as expired (not evicted), once; one that takes the place of a pending one counts an
/// eviction. A refresh afterwards finds nothing more to count.
#[test]
fn overwritten_decisions_without_a_default_are_counted_once() {
    let clock = elvon::clock::Clock::fake(0);
    let engine = Engine::builder()
        .clock(clock.clone())
        .pending_rewards(16)
        .id_prefix(10)
        .build();
    let eps = json!({"policy": "epsilon_greedy", "reward": {"window_ms": 1_000}});
    engine
        .load_config_json(&bandit_config("1", &["a", "b"], eps))
        .expect("valid");
    let none = Features::new();
    for _ in 0..16 {
        engine.decide("s", "u", &none);
    }
    clock.advance(Duration::from_secs(2));
    for _ in 0..20 {
        engine.decide("s", "u", &none);
    }
    let s = engine.reward_stats();
    assert_eq!((s.expired, s.evicted, s.defaulted), (16, 4, 0), "{s:?}");
    engine.refresh();
    let after = engine.reward_stats();
    assert_eq!(
        (after.expired, after.evicted),
        (16, 4),
        "nothing new: {after:?}"
    );
    clock.advance(Duration::from_secs(2));
    engine.refresh();
    let s = engine.reward_stats();
    assert_eq!(
        (s.expired, s.evicted),
        (32, 4),
        "the 16 in the store expired: {s:?}"
    );
}

/// Point 10 (in part): decisions expire lazily, without `refresh` or the learner thread: a
/// later reward (or decision) of the same shard gives the expired ones their default.
#[test]
fn decisions_expire_without_a_refresh() {
    let clock = elvon::clock::Clock::fake(0);
    let engine = Engine::builder().clock(clock.clone()).id_prefix(11).build();
    let eps = json!({"policy": "epsilon_greedy", "reward": {"window_ms": 1_000, "default": 0}});
    engine
        .load_config_json(&bandit_config("1", &["a", "b"], eps))
        .expect("valid");
    let none = Features::new();
    for _ in 0..10 {
        engine.decide("s", "u", &none);
    }
    clock.advance(Duration::from_secs(2));
    let fresh = engine.decide("s", "u", &none).id();
    assert_eq!(engine.reward(fresh, 1.0), RewardOutcome::Applied);
    let s = engine.reward_stats();
    assert_eq!((s.defaulted, s.applied), (10, 1), "{s:?}");
}

/// Point 10: expiry is per decision. A long-window decision at the front of the pending store
/// no longer holds back the expiry (and default reward) of short-window decisions behind it.
#[test]
fn a_long_window_does_not_hold_back_short_ones() {
    let clock = elvon::clock::Clock::fake(0);
    let engine = Engine::builder().clock(clock.clone()).id_prefix(13).build();
    let slot = |id: &str, window: u64| {
        json!({"id": id, "variants": [{"id": "a"}, {"id": "b"}], "default": "a", "rules": [
            {"bandit": {"policy": "epsilon_greedy", "arms": ["a", "b"],
                        "reward": {"window_ms": window, "default": 0}}}]})
    };
    let config = json!({"version": "1", "slots": [slot("long", 86_400_000), slot("short", 1_000)]});
    engine.load_config_json(&config.to_string()).expect("valid");
    let none = Features::new();
    engine.decide("long", "u", &none);
    for _ in 0..10 {
        engine.decide("short", "u", &none);
    }
    clock.advance(Duration::from_secs(5));
    engine.refresh();
    let s = engine.reward_stats();
    assert_eq!(s.defaulted, 10, "the short-window decisions expired: {s:?}");
}
