//! Shadow evaluation of a candidate config on live decisions (issue 18, point 3).

use elvon::{Config, Engine, Features, SHADOW_PENDING};
use rand::{RngExt, SeedableRng};

use serde_json::json;

/// Slot `s` with one split rule `r`: `a` gets `weight_a` of 100, `b` the rest.
fn split(version: &str, weight_a: u32) -> String {
    json!({"version": version, "slots": [{
        "id": "s",
        "variants": [{"id": "a"}, {"id": "b"}, {"id": "c"}],
        "default": "a",
        "rules": [{"id": "r", "split": {"variants": [
            {"variant": "a", "weight": weight_a}, {"variant": "b", "weight": 100 - weight_a}]}}]
    }]})
    .to_string()
}

fn candidate(json: &str) -> Config {
    Config::from_json(json).expect("json")
}

#[test]
fn agreement_matches_the_share_the_configs_imply() {
    let engine = Engine::builder().id_prefix(11).build();
    engine.load_config_json(&split("live", 50)).expect("valid");
    engine
        .shadow(&candidate(&split("next", 90)), 0.3)
        .expect("valid candidate");
    let none = Features::new();
    let n = 20_000;
    for i in 0..n {
        let _ = engine.decide("s", &format!("user-{i}"), &none);
    }
    let report = engine.shadow_report().expect("running");
    assert_eq!(report.candidate_version, "next");
    let s = &report.slots[0];
    // Sampled by decision id: about 30% of the decisions.
    let sampled = s.sampled as f64;
    let se = (0.3 * 0.7 / n as f64).sqrt();
    assert!(
        (sampled / n as f64 - 0.3).abs() < 4.0 * se,
        "sampled {sampled}"
    );
    // Same rule, same salt: buckets below 5,000 get a in both, 9,000 and above b in both,
    // 5,000..9,000 move from b to a. Agreement is 60% of users.
    let se = (0.6 * 0.4 / sampled).sqrt();
    let agreement = s.agreement();
    assert!((agreement - 0.6).abs() < 4.0 * se, "agreement {agreement}");
    let count = |list: &[(String, u64)], v: &str| {
        list.iter().find(|(k, _)| k == v).map_or(0, |(_, c)| *c) as f64
    };
    assert!(
        (count(&s.live, "a") / sampled - 0.5).abs() < 0.03,
        "{:?}",
        s.live
    );
    assert!(
        (count(&s.candidate, "a") / sampled - 0.9).abs() < 0.03,
        "{:?}",
        s.candidate
    );
    // Every change is the split rule's, in both configs.
    assert_eq!(s.changes.len(), 1, "{:?}", s.changes);
    assert_eq!(
        (
            s.changes[0].live_rule.as_str(),
            s.changes[0].candidate_rule.as_str()
        ),
        ("rules[0] (r)", "rules[0] (r)")
    );
    assert_eq!(s.changes[0].count, s.sampled - s.agreed);
    assert_eq!(
        s.unsupported, 0,
        "the candidate serves only variants live can"
    );
    let json = report.to_json();
    assert_eq!(json["slots"][0]["sampled"], s.sampled);
}

/// One simulated run: live 50/50, candidate 90/10, clicks with known rates; returns the
/// candidate's IPS and SNIPS estimates (value, lower, upper) and the live mean.
/// (value, lower, upper) of an estimate.
type Interval = (f64, f64, f64);

fn simulate(seed: u64) -> (Interval, Interval, f64, u64) {
    let engine = Engine::builder().id_prefix(seed).build();
    engine.load_config_json(&split("live", 50)).expect("valid");
    engine
        .shadow(&candidate(&split("next", 90)), 0.5)
        .expect("valid candidate");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let none = Features::new();
    for i in 0..20_000 {
        let d = engine.decide("s", &format!("u{seed}-{i}"), &none);
        let p = if d.variant() == Some("a") { 0.1 } else { 0.3 };
        let click = if rng.random::<f64>() < p { 1.0 } else { 0.0 };
        let _ = engine.reward(d.id(), click);
    }
    let report = engine.stop_shadow().expect("was running");
    assert!(engine.shadow_report().is_none(), "stopped");
    let s = &report.slots[0];
    let est = s.estimate.as_ref().expect("rewards arrived");
    let live = s.live_value.expect("rewards arrived").0;
    (
        (est.ips.value, est.ips.lower, est.ips.upper),
        (est.snips.value, est.snips.lower, est.snips.upper),
        live,
        s.rewarded,
    )
}

#[test]
fn the_off_policy_estimate_covers_the_candidates_true_value() {
    // True values: live 0.5·0.1 + 0.5·0.3 = 0.2; candidate 0.9·0.1 + 0.1·0.3 = 0.12.
    let truth = 0.12;
    let (mut ips_cover, mut snips_cover, mut sum) = (0, 0, 0.0);
    let reps = 20;
    for seed in 0..reps {
        let (ips, snips, live, rewarded) = simulate(1_000 + seed);
        assert!(
            rewarded > 9_000,
            "about half of 20,000 sampled and rewarded: {rewarded}"
        );
        assert!((live - 0.2).abs() < 0.02, "live mean {live}");
        if ips.1 <= truth && truth <= ips.2 {
            ips_cover += 1;
        }
        if snips.1 <= truth && truth <= snips.2 {
            snips_cover += 1;
        }
        sum += ips.0;
    }
    let mean = sum / reps as f64;
    assert!((mean - truth).abs() < 0.005, "mean IPS estimate {mean}");
    assert!(
        ips_cover >= 16,
        "IPS 95% intervals covered {ips_cover} of {reps}"
    );
    assert!(
        snips_cover >= 16,
        "SNIPS 95% intervals covered {snips_cover} of {reps}"
    );
}

#[test]
fn a_candidate_serving_what_live_never_could_is_flagged_unsupported() {
    let engine = Engine::builder().id_prefix(3).build();
    engine.load_config_json(&split("live", 50)).expect("valid");
    let c = json!({"version": "next", "slots": [{"id": "s",
        "variants": [{"id": "a"}, {"id": "b"}, {"id": "c"}], "default": "a",
        "rules": [{"serve": "c"}]}]});
    engine
        .shadow(&candidate(&c.to_string()), 1.0)
        .expect("valid");
    for i in 0..500 {
        let d = engine.decide("s", &format!("u{i}"), &Features::new());
        let _ = engine.reward(d.id(), 1.0);
    }
    let report = engine.shadow_report().expect("running");
    let s = &report.slots[0];
    assert_eq!((s.sampled, s.agreed, s.unsupported), (500, 0, 500));
    let est = s.estimate.as_ref().expect("rewarded");
    assert_eq!(est.unsupported, 500);
    assert!(
        est.warnings().iter().any(|w| w.contains("never could")),
        "{:?}",
        est.warnings()
    );
    assert_eq!(s.changes[0].candidate_rule, "rules[0]");
}

#[test]
fn live_decisions_are_the_same_with_shadowing_on() {
    let (with, without) = (
        Engine::builder().id_prefix(5).build(),
        Engine::builder().id_prefix(5).build(),
    );
    for e in [&with, &without] {
        e.load_config_json(&split("live", 50)).expect("valid");
    }
    with.shadow(&candidate(&split("next", 10)), 1.0)
        .expect("valid");
    let none = Features::new();
    for i in 0..5_000 {
        let u = format!("u{i}");
        let (a, b) = (with.decide("s", &u, &none), without.decide("s", &u, &none));
        assert_eq!(
            (a.variant(), a.id(), a.propensity()),
            (b.variant(), b.id(), b.propensity())
        );
    }
    assert_eq!(
        with.shadow_report().expect("running").slots[0].sampled,
        5_000
    );
}

#[test]
fn pending_rewards_are_bounded_and_bad_candidates_are_refused() {
    let engine = Engine::builder().id_prefix(9).build();
    engine.load_config_json(&split("live", 50)).expect("valid");
    let bad = json!({"version": "x", "slots": [{"id": "s", "variants": [], "default": "zz"}]});
    let err = engine
        .shadow(&candidate(&bad.to_string()), 1.0)
        .expect_err("invalid");
    assert!(err.to_string().contains("slots[0]"), "{err}");
    let err = engine
        .shadow(&candidate(&split("next", 90)), 1.5)
        .expect_err("rate");
    assert!(err.to_string().contains("sample_rate"), "{err}");
    assert!(engine.shadow_report().is_none(), "nothing started");

    engine
        .shadow(&candidate(&split("next", 90)), 1.0)
        .expect("valid");
    let extra = 1_000;
    for i in 0..SHADOW_PENDING + extra {
        let _ = engine.decide("s", &format!("u{i}"), &Features::new());
    }
    // Slots neither config has are not counted: made-up names cannot grow the report.
    for i in 0..10_000 {
        let _ = engine.decide(&format!("no-such-slot-{i}"), "u", &Features::new());
    }
    let r = engine.shadow_report().expect("running");
    assert_eq!(r.slots.len(), 1, "only slot s");
    assert_eq!(r.pending, SHADOW_PENDING);
    assert_eq!(r.evicted, extra as u64);
    assert_eq!(r.slots[0].sampled, (SHADOW_PENDING + extra) as u64);
}
