//! Property tests: determinism, split balance, monotone ramps, and validation that never panics.
//! Failures found by proptest are recorded in `tests/props.proptest-regressions` (committed).

use std::collections::HashSet;

use common::{KINDS_CONFIG, KIND_SLOTS as SLOTS};
use elvon::{Config, Engine, Features};
use proptest::prelude::*;
use serde_json::{json, Value};

mod common;

const KINDS: &str = KINDS_CONFIG;

fn engine(config: &str) -> Engine {
    let e = Engine::default();
    e.load_config_json(config).expect("valid config");
    e
}

fn features() -> impl Strategy<Value = Features> {
    (
        prop::option::of(prop::sample::select(vec!["KR", "JP", "US", "DE", ""])),
        prop::option::of(prop::sample::select(vec!["free", "pro", "vip"])),
        prop::option::of(prop::sample::select(vec![
            "3.1.0", "3.2.0", "4.0.1", "garbage",
        ])),
        prop::option::of(any::<i64>()),
        prop::option::of(any::<f64>()),
        prop::option::of(".{0,12}"),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(country, plan, ver, age, score, email, vip)| {
            let mut f = Features::new();
            if let Some(c) = country {
                f.insert("country", c);
            }
            if let Some(p) = plan {
                f.insert("plan", p);
            }
            if let Some(v) = ver {
                f.insert("app_version", v);
            }
            if let Some(a) = age {
                f.insert("age", a);
                f.insert("account", a);
                f.insert("page_view_7d", a);
            }
            if let Some(s) = score {
                f.insert("score", s);
                f.insert("purchase_7d", s);
            }
            if let Some(e) = email {
                f.insert("email", e.clone());
                f.insert("device_id", e);
            }
            if let Some(v) = vip {
                f.insert("vip", v);
            }
            f
        })
}

fn split_config(salt: &str, weights: (u32, u32)) -> String {
    json!({"version": "p", "slots": [{"id": "s", "variants": [{"id": "a"}, {"id": "b"}], "default": "a",
        "rules": [{"split": {"salt": salt, "variants": [
            {"variant": "a", "weight": weights.0}, {"variant": "b", "weight": weights.1}]}}]}]})
    .to_string()
}

fn rollout_config(salt: &str, percent: f64) -> String {
    json!({"version": "p", "slots": [{"id": "s", "variants": [{"id": "off"}, {"id": "on"}], "default": "off",
        "rules": [{"rollout": {"salt": salt, "percent": percent, "variant": "on"}}]}]})
    .to_string()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn same_inputs_same_decision(user in ".{0,24}", f in features(), slot in prop::sample::select(SLOTS.to_vec())) {
        let (a, b) = (engine(KINDS), engine(KINDS));
        let x = a.decide(slot, &user, &f);
        if x.model_version().is_some() {
            // Bandit rules randomize per decision: the same id (not the same inputs) gives
            // the same draw, on any engine serving the same snapshot and model.
            let y = b.replay(slot, &user, &f, x.id());
            prop_assert_eq!(x.variant(), y.variant());
            prop_assert_eq!(x.probability_vector(), y.probability_vector());
            prop_assert_eq!(x.propensity().to_bits(), y.propensity().to_bits());
            return Ok(());
        }
        let y = b.decide(slot, &user, &f);
        let z = a.decide(slot, &user, &f);
        prop_assert_eq!(x.variant(), y.variant());
        prop_assert_eq!(x.reason(), y.reason());
        prop_assert_eq!(x.propensity().to_bits(), y.propensity().to_bits());
        prop_assert_eq!(x.variant(), z.variant());
        prop_assert_eq!(x.reason(), z.reason());
        prop_assert_ne!(x.id(), z.id());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn fifty_fifty_split_is_within_one_percent(salt in "[a-z0-9.-]{0,16}", prefix in "[a-z]{1,6}") {
        let e = engine(&split_config(&salt, (50, 50)));
        let n = 100_000;
        let a = (0..n).filter(|i| e.decide("s", &format!("{prefix}-{i}"), &Features::new()).variant() == Some("a")).count();
        let share = a as f64 / n as f64;
        prop_assert!((share - 0.5).abs() <= 0.01, "arm a got {share}");
    }

    #[test]
    fn ramping_a_rollout_up_keeps_everyone_in(salt in "[a-z0-9.-]{0,16}", low in 0u32..100, extra in 1u32..=100) {
        let high = (low + extra).min(100);
        let (lo, hi) = (engine(&rollout_config(&salt, f64::from(low))), engine(&rollout_config(&salt, f64::from(high))));
        let users: Vec<String> = (0..20_000).map(|i| format!("u{i}")).collect();
        let on = |e: &Engine| -> HashSet<&str> {
            users.iter().filter(|u| e.decide("s", u, &Features::new()).variant() == Some("on")).map(|u| u.as_str()).collect()
        };
        let (before, after) = (on(&lo), on(&hi));
        prop_assert!(before.is_subset(&after), "{} users left the rollout", before.difference(&after).count());
        prop_assert!(after.len() >= before.len());
    }
}

/// Arbitrary JSON, biased towards config-shaped documents.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "eq",
            "in",
            "gtt",
            "matches",
            "semver_ge",
            "before",
            "a",
            "b",
            "home",
            "s",
            "(",
            "[a-",
            "1.2.3",
            "2020-01-01",
            "version",
            "slots",
            "variants",
            "rules",
            "split",
            "serve",
            "weight",
            "variant",
            "segment",
        ])
        .prop_map(|s| json!(s)),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        let keys = prop::sample::select(vec![
            "version", "slots", "id", "variants", "default", "rules", "when", "serve", "split",
            "rollout", "score", "weight", "variant", "percent", "feature", "op", "value", "all",
            "any", "not", "segment", "segments", "layers", "layer", "from", "to", "holdout",
            "salt", "by", "bias", "weights", "killed", "payload", "zz",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(keys.prop_map(str::to_owned), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid-ish config with random pieces swapped in.
fn mutated_config() -> impl Strategy<Value = Value> {
    (arb_json(), 0usize..10).prop_map(|(a, where_)| {
        let mut cfg: Value = serde_json::from_str(KINDS).expect("kinds.json");
        match where_ {
            0 => cfg["slots"][1]["rules"][0] = a,
            1 => cfg["slots"][6]["rules"][0]["when"]["all"][2] = a,
            2 => cfg["segments"]["asia"] = a,
            3 => cfg["layers"][0] = a,
            4 => cfg["slots"][0]["variants"] = a,
            5 => cfg["slots"][5]["rules"][0]["score"] = a,
            6 => cfg["slots"][2]["rules"] = json!([a]),
            7 => cfg["holdout"] = a,
            // Valid documents too, so that decide runs on what was loaded.
            8 => cfg["slots"][3]["killed"] = json!(a.is_null()),
            _ => {}
        }
        cfg
    })
}

fn load_and_decide(v: Value, f: &Features) -> Result<(), TestCaseError> {
    let config: Config = serde_json::from_value(v).expect("any JSON is a Config document");
    let e = Engine::default();
    match e.load_config(&config) {
        Ok(_) => {
            for slot in e.snapshot().slots().map(str::to_owned).collect::<Vec<_>>() {
                for u in ["u1", "u2", ""] {
                    let d = e.decide(&slot, u, f);
                    prop_assert!(d.variant().is_some());
                    let _ = e.explain(&slot, u, f);
                }
            }
        }
        Err(err) => {
            prop_assert!(!err.problems().is_empty());
            for p in err.problems() {
                prop_assert!(!p.path().is_empty() && !p.message().is_empty());
            }
            prop_assert_eq!(e.config_version(), "");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn validating_arbitrary_json_never_panics(v in arb_json(), f in features()) {
        load_and_decide(v, &f)?;
    }

    #[test]
    fn validating_mutated_configs_never_panics(v in mutated_config(), f in features()) {
        load_and_decide(v, &f)?;
    }
}
