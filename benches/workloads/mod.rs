//! The reference workloads, defined once and used by the latency harness and the criterion
//! benches (`#[path]`-included).
//!
//! - **W1, flag-equivalent**: 100,000 users, features `{country, plan, age}`; one slot whose
//!   rule is "country in [KR, US] → 50/50 split control/treatment by user id", everyone else
//!   gets the default `off`.
//! - **W2, realistic targeting**: 10 rules mixing in-list, numeric range, regex, semver and
//!   segment conditions, inside a layer with a holdout, ending in a 3-way split.
//! - **W3, scoring**: 5 variants scored over 8 numeric features.
//! - **W4, bandit**: a 10-arm Thompson-sampling bandit.
//! - **W5, contextual bandit**: a 10-arm linear policy over the 8 features of W3.
#![allow(dead_code)]

use elvon::Features;
use serde_json::json;

/// Users per workload.
pub const USERS: usize = 100_000;

/// One reference workload: a config (two versions that decide identically, for swap runs),
/// the slot to decide, and pre-built users.
pub struct Workload {
    pub name: &'static str,
    pub slot: &'static str,
    /// Two configs differing only in `version`: swapping between them is pure overhead.
    pub configs: [String; 2],
    pub users: Vec<(String, Features)>,
}

fn versions(v: serde_json::Value) -> [String; 2] {
    let mut a = v.clone();
    let mut b = v;
    a["version"] = json!("a");
    b["version"] = json!("b");
    [a.to_string(), b.to_string()]
}

pub fn w1() -> Workload {
    let config = json!({"version": "", "slots": [{
        "id": "flag",
        "variants": [{"id": "off"}, {"id": "control"}, {"id": "treatment"}],
        "default": "off",
        "rules": [{"id": "kr-us", "when": {"feature": "country", "op": "in", "value": ["KR", "US"]},
                   "split": {"variants": [{"variant": "control", "weight": 50}, {"variant": "treatment", "weight": 50}]}}]
    }]});
    let users = (0..USERS)
        .map(|i| {
            let f = Features::new()
                .with("country", ["KR", "US", "JP", "DE"][i % 4])
                .with("plan", ["free", "pro"][i % 2])
                .with("age", 18 + (i % 50) as i64);
            (format!("user-{i}"), f)
        })
        .collect();
    Workload {
        name: "W1",
        slot: "flag",
        configs: versions(config),
        users,
    }
}

pub fn w2() -> Workload {
    let config = json!({
        "version": "",
        "segments": {
            "asia": {"feature": "country", "op": "in", "value": ["KR", "JP", "TW", "SG"]},
            "mobile": {"feature": "platform", "op": "in", "value": ["ios", "android"]}
        },
        "layers": [{"id": "home", "holdout": {"percent": 5}}],
        "slots": [{
            "id": "hero",
            "layer": {"id": "home", "from": 0, "to": 10000},
            "variants": [{"id": "default"}, {"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "vip"}, {"id": "beta"}, {"id": "legacy"}],
            "default": "default",
            "rules": [
                {"id": "blocked", "when": {"feature": "country", "op": "in", "value": ["XA", "XB", "XC"]}, "serve": "legacy"},
                {"id": "vip", "when": {"feature": "plan", "op": "eq", "value": "vip"}, "serve": "vip"},
                {"id": "old-app", "when": {"feature": "app_version", "op": "semver_lt", "value": "2.0.0"}, "serve": "legacy"},
                {"id": "staff", "when": {"feature": "email", "op": "matches", "value": "@corp\\.example$"}, "serve": "beta"},
                {"id": "teen", "when": {"feature": "age", "op": "between", "value": [13, 17]}, "serve": "default"},
                {"id": "asia-mobile-beta", "when": {"all": [{"segment": "asia"}, {"segment": "mobile"},
                    {"feature": "app_version", "op": "semver_ge", "value": "4.2.0"}]}, "serve": "beta"},
                {"id": "heavy", "when": {"feature": "sessions_30d", "op": "gt", "value": 100}, "serve": "a"},
                {"id": "new-users", "when": {"feature": "days_since_signup", "op": "lt", "value": 3}, "serve": "b"},
                {"id": "tablet", "when": {"feature": "device", "op": "eq", "value": "tablet"}, "serve": "c"},
                {"id": "main", "split": {"variants": [{"variant": "a", "weight": 34}, {"variant": "b", "weight": 33}, {"variant": "c", "weight": 33}]}}
            ]
        }]
    });
    let users = (0..USERS)
        .map(|i| {
            let f = Features::new()
                .with(
                    "country",
                    ["KR", "US", "JP", "DE", "TW", "BR", "SG", "FR"][i % 8],
                )
                .with("plan", ["free", "pro", "free", "vip"][(i / 8) % 4])
                .with(
                    "app_version",
                    ["1.9.3", "3.0.0", "4.2.1", "4.10.0", "5.0.0-beta.1"][(i / 3) % 5],
                )
                .with(
                    "email",
                    if i % 97 == 0 {
                        format!("u{i}@corp.example")
                    } else {
                        format!("u{i}@mail.example")
                    },
                )
                .with("age", 12 + (i % 60) as i64)
                .with("platform", ["ios", "android", "web"][i % 3])
                .with("sessions_30d", (i % 150) as i64)
                .with("days_since_signup", (i % 400) as i64)
                .with("device", ["phone", "tablet", "desktop"][(i / 5) % 3]);
            (format!("user-{i}"), f)
        })
        .collect();
    Workload {
        name: "W2",
        slot: "hero",
        configs: versions(config),
        users,
    }
}

/// The 8 numeric features of W3.
pub const W3_FEATURES: [&str; 8] = [
    "page_view_7d",
    "purchase_7d",
    "cart_add_7d",
    "search_7d",
    "wishlist_30d",
    "session_min_7d",
    "discount_use_30d",
    "days_active_30d",
];

pub fn w3() -> Workload {
    let arms: Vec<serde_json::Value> = ["popular", "personal", "deals", "new", "editorial"]
        .iter()
        .enumerate()
        .map(|(a, v)| {
            let weights: serde_json::Map<String, serde_json::Value> = W3_FEATURES
                .iter()
                .enumerate()
                .map(|(k, f)| {
                    (
                        (*f).to_owned(),
                        json!((((a * 7 + k * 3) % 11) as f64 - 5.0) / 10.0),
                    )
                })
                .collect();
            json!({"variant": v, "bias": a as f64 * 0.1, "weights": weights})
        })
        .collect();
    let config = json!({"version": "", "slots": [{
        "id": "ranking",
        "variants": [{"id": "popular"}, {"id": "personal"}, {"id": "deals"}, {"id": "new"}, {"id": "editorial"}],
        "default": "popular",
        "rules": [{"id": "score", "score": {"variants": arms}}]
    }]});
    let users = (0..USERS)
        .map(|i| {
            let mut f = Features::with_capacity(W3_FEATURES.len());
            for (k, name) in W3_FEATURES.iter().enumerate() {
                f.insert(*name, ((i * (k + 3)) % (17 + k)) as i64);
            }
            (format!("user-{i}"), f)
        })
        .collect();
    Workload {
        name: "W3",
        slot: "ranking",
        configs: versions(config),
        users,
    }
}

/// Arms of the bandit workloads.
pub const BANDIT_ARMS: usize = 10;

fn bandit_config(slot: &str, bandit: serde_json::Value) -> serde_json::Value {
    let ids: Vec<String> = (0..BANDIT_ARMS).map(|a| format!("arm{a}")).collect();
    let mut bandit = bandit;
    bandit["arms"] = json!(ids);
    json!({"version": "", "slots": [{
        "id": slot,
        "variants": ids.iter().map(|i| json!({"id": i})).collect::<Vec<_>>(),
        "default": ids[0],
        "rules": [{"id": "learn", "bandit": bandit}]
    }]})
}

/// W4: a 10-arm Thompson-sampling bandit (no features read).
pub fn w4() -> Workload {
    let users = (0..USERS)
        .map(|i| (format!("user-{i}"), Features::new()))
        .collect();
    Workload {
        name: "W4",
        slot: "offer",
        configs: versions(bandit_config("offer", json!({"policy": "thompson"}))),
        users,
    }
}

/// W5: a contextual linear bandit over the 8 numeric features of W3, 10 arms, inverse-gap
/// weighting.
pub fn w5() -> Workload {
    let mut w = w3();
    w.name = "W5";
    w.slot = "offer";
    w.configs = versions(bandit_config(
        "offer",
        json!({"policy": "linear", "features": W3_FEATURES, "exploration": "igw", "gamma": 100}),
    ));
    w
}

pub fn all() -> Vec<Workload> {
    vec![w1(), w2(), w3(), w4(), w5()]
}

/// A config of `n` slots, each with targeting, a rollout and a split, in two layers.
pub fn many_slots(n: usize) -> elvon::Config {
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
