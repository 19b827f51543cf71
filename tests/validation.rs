//! Config validation: every problem is reported with its path, and a rejected config changes
//! nothing.

use elvon::{ConfigError, Engine, Features};
use serde_json::{json, Value};

fn base() -> Value {
    json!({
        "version": "v1",
        "segments": {"asia": {"feature": "country", "op": "in", "value": ["KR", "JP"]}},
        "layers": [{"id": "home"}],
        "slots": [
            {"id": "banner", "variants": [{"id": "a"}, {"id": "b"}], "default": "a",
             "rules": [{"when": {"segment": "asia"}, "serve": "b"}]},
            {"id": "ranking", "variants": [{"id": "x"}, {"id": "y"}], "default": "x",
             "rules": [{"split": {"variants": [{"variant": "x", "weight": 50}, {"variant": "y", "weight": 50}]}}]}
        ]
    })
}

fn problems(v: &Value) -> Vec<String> {
    let e = Engine::default();
    match e.load_config_json(&v.to_string()) {
        Ok(_) => Vec::new(),
        Err(err) => err.problems().iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn three_mistakes_three_path_qualified_errors_and_previous_version_keeps_serving() {
    let engine = Engine::default();
    engine
        .load_config_json(&base().to_string())
        .expect("base config is valid");
    let before = engine.decide("banner", "u1", &Features::new().with("country", "KR"));
    assert_eq!(before.variant(), Some("b"));

    let mut bad = base();
    bad["version"] = json!("v2");
    bad["slots"][0]["rules"][0]["when"] =
        json!({"any": [{"segment": "asia"}, {"feature": "age", "op": "gtt", "value": 3}]});
    bad["slots"][1]["rules"][0]["split"]["variants"][1]["weight"] = json!(40);
    bad["slots"][1]["default"] = json!("zzz");
    let err = engine
        .load_config_json(&bad.to_string())
        .expect_err("three mistakes");
    let got: Vec<String> = err.problems().iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        vec![
            "slots[0].rules[0].when.any[1]: unknown operator \"gtt\" (expected one of: eq, ne, in, not_in, lt, le, gt, ge, between, exists, missing, starts_with, ends_with, contains, matches, semver_eq, semver_lt, semver_le, semver_gt, semver_ge, semver_match, before, after)",
            "slots[1].default: unknown variant \"zzz\"",
            "slots[1].rules[0].split.variants: split weights sum to 90, expected 100",
        ],
        "{err}"
    );
    assert!(matches!(err, ConfigError::Invalid(_)));
    assert!(
        err.to_string()
            .starts_with("config rejected with 3 problem(s):"),
        "{err}"
    );

    // Nothing was half-applied: still v1, same answers.
    assert_eq!(engine.config_version(), "v1");
    let after = engine.decide("banner", "u1", &Features::new().with("country", "KR"));
    assert_eq!(after.variant(), Some("b"));
    assert_eq!(after.config_version(), "v1");
}

#[test]
fn every_kind_of_problem_is_reported_where_it_is() {
    type Mutate = fn(&mut Value);
    let cases: Vec<(Mutate, &str, &str)> = vec![
        (
            |v| v["slots"][1]["id"] = json!("banner"),
            "slots[1].id",
            "duplicate slot id \"banner\"",
        ),
        (
            |v| v["slots"][0]["variants"][1]["id"] = json!("a"),
            "slots[0].variants[1].id",
            "duplicate variant id \"a\"",
        ),
        (
            |v| v["slots"][0]["variants"] = json!([]),
            "slots[0].variants",
            "at least one variant",
        ),
        (
            |v| v["slots"][0]["rules"][0]["serve"] = json!("nope"),
            "slots[0].rules[0].serve",
            "unknown variant \"nope\"",
        ),
        (
            |v| v["slots"][0]["rules"][0]["when"] = json!({"segment": "europe"}),
            "slots[0].rules[0].when.segment",
            "unknown segment \"europe\"",
        ),
        (
            |v| {
                v["slots"][0]["rules"][0]["when"] =
                    json!({"feature": "email", "op": "matches", "value": "(unclosed"})
            },
            "slots[0].rules[0].when.value",
            "invalid regex",
        ),
        (
            |v| {
                v["slots"][0]["rules"][0]["when"] =
                    json!({"feature": "v", "op": "semver_ge", "value": "1.x"})
            },
            "slots[0].rules[0].when.value",
            "invalid semver version",
        ),
        (
            |v| {
                v["slots"][0]["rules"][0]["when"] =
                    json!({"feature": "v", "op": "semver_match", "value": ">>1"})
            },
            "slots[0].rules[0].when.value",
            "invalid semver requirement",
        ),
        (
            |v| {
                v["slots"][0]["rules"][0]["when"] =
                    json!({"feature": "d", "op": "before", "value": "yesterday"})
            },
            "slots[0].rules[0].when.value",
            "RFC 3339",
        ),
        (
            |v| {
                v["slots"][0]["rules"][0]["when"] =
                    json!({"feature": "n", "op": "between", "value": [5, 1]})
            },
            "slots[0].rules[0].when.value",
            "low 5 is greater than high 1",
        ),
        (
            |v| {
                v["slots"][0]["rules"][0]["when"] =
                    json!({"feature": "n", "op": "gt", "value": "ten"})
            },
            "slots[0].rules[0].when.value",
            "expected a number",
        ),
        (
            |v| v["slots"][0]["rules"][0]["when"] = json!({"feature": "n", "op": "gt"}),
            "slots[0].rules[0].when",
            "needs a \"value\"",
        ),
        (
            |v| v["segments"] = json!({"a": {"segment": "b"}, "b": {"segment": "a"}}),
            "segments.a",
            "cyclic segment reference: a → b → a",
        ),
        (
            |v| v["slots"][0]["rules"][0]["split"] = json!({}),
            "slots[0].rules[0]",
            "exactly one action",
        ),
        (
            |v| v["slots"][0]["rules"][0] = json!({"when": {"segment": "asia"}}),
            "slots[0].rules[0]",
            "found none",
        ),
        (
            |v| v["slots"][1]["rules"][0]["split"]["variants"][0]["weight"] = json!(-5),
            "slots[1].rules[0].split.variants[0].weight",
            "outside 0..=100",
        ),
        (
            |v| v["slots"][1]["rules"][0]["split"]["variants"][0]["weight"] = json!(33.333),
            "slots[1].rules[0].split.variants[0].weight",
            "more than two decimals",
        ),
        (
            |v| v["slots"][0]["wieght"] = json!(1),
            "slots[0].wieght",
            "unknown field \"wieght\"",
        ),
        (
            |v| v["slots"][0]["layer"] = json!({"id": "nope", "from": 0, "to": 10}),
            "slots[0].layer.id",
            "unknown layer \"nope\"",
        ),
        (
            |v| v["slots"][0]["layer"] = json!({"id": "home", "from": 10, "to": 10}),
            "slots[0].layer",
            "empty bucket range",
        ),
        (
            |v| {
                v["slots"][0]["layer"] = json!({"id": "home", "from": 0, "to": 6000});
                v["slots"][1]["layer"] = json!({"id": "home", "from": 5000, "to": 10000});
            },
            "slots[1].layer",
            "overlaps slot \"banner\"",
        ),
        (
            |v| v["layers"] = json!([{"id": "home"}, {"id": "home"}]),
            "layers[1].id",
            "duplicate layer id \"home\"",
        ),
        (
            |v| v["holdout"] = json!({"percent": 101}),
            "holdout.percent",
            "outside 0..=100",
        ),
        (|v| v["version"] = json!(""), "version", "non-empty string"),
        (
            |v| {
                v.as_object_mut()
                    .unwrap()
                    .remove("slots")
                    .map(drop)
                    .unwrap_or(())
            },
            "(root)",
            "missing required field \"slots\"",
        ),
        (
            |v| v["slots"][0]["default"] = json!(7),
            "slots[0].default",
            "expected a string",
        ),
        (|v| v["slots"][0]["rules"][0]["id"] = json!("r"), "", ""), // valid: control case
    ];
    for (mutate, path, message) in cases {
        let mut v = base();
        mutate(&mut v);
        let got = problems(&v);
        if path.is_empty() {
            assert!(got.is_empty(), "control case rejected: {got:?}");
            continue;
        }
        assert!(
            got.iter()
                .any(|p| p.starts_with(&format!("{path}: ")) && p.contains(message)),
            "expected `{path}: …{message}…`, got {got:?}"
        );
    }
}

#[test]
fn deep_and_long_segment_chains_are_rejected_without_overflowing() {
    let mut segs = serde_json::Map::new();
    for i in 0..10_000 {
        segs.insert(format!("s{i}"), json!({"segment": format!("s{}", i + 1)}));
    }
    segs.insert("s10000".into(), json!({"feature": "x", "op": "exists"}));
    let mut v = base();
    v["segments"] = Value::Object(segs);
    let got = problems(&v);
    assert!(
        got.iter().any(|p| p.contains("more than 32 levels deep")),
        "{got:?}"
    );

    let mut nested = json!({"feature": "x", "op": "exists"});
    for _ in 0..40 {
        nested = json!({"not": nested});
    }
    let mut v = base();
    v["slots"][0]["rules"][0]["when"] = nested;
    let got = problems(&v);
    assert!(
        got.iter()
            .any(|p| p.contains("nested deeper than 32 levels")),
        "{got:?}"
    );
}

#[test]
fn syntax_errors_name_line_and_column() {
    let e = Engine::default();
    let err = e
        .load_config_json("{\n  \"version\": 1,\n  \"slots\": [,]\n}")
        .unwrap_err();
    match err {
        ConfigError::Parse { line, column, .. } => assert_eq!((line, column), (3, 13)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unreachable_rules_are_dropped_with_a_warning() {
    let mut v = base();
    v["slots"][0]["rules"] =
        json!([{"serve": "a"}, {"serve": "b"}, {"when": {"segment": "asia"}, "serve": "b"}]);
    let e = Engine::default();
    let out = e.load_config_json(&v.to_string()).unwrap();
    let w: Vec<String> = out.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].starts_with("slots[0].rules[1]: unreachable"), "{w:?}");
    assert_eq!(
        e.decide("banner", "u", &Features::new().with("country", "KR"))
            .variant(),
        Some("a")
    );
}
