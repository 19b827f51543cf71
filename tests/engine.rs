//! Engine behaviour: targeting, splits, rollouts, scoring, layers, holdouts, kill switch,
//! fallbacks, feature fetching with deadlines, explain.

use std::future::Future as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use elvon::features::{FeatureSource, MemoryStore, SourceError};
use elvon::features::{FetchFuture, FetchRequest};
use elvon::{Engine, FallbackCause, FeatureStatus, Features, Reason};
use serde_json::{json, Value};

fn engine(v: Value) -> Engine {
    let e = Engine::default();
    e.load_config_json(&v.to_string())
        .unwrap_or_else(|err| panic!("{err}"));
    e
}

fn one_slot(rules: Value) -> Value {
    json!({"version": "t", "slots": [{"id": "s", "variants": [{"id": "off"}, {"id": "on"}], "default": "off", "rules": rules}]})
}

fn hit(rules_when: Value, f: &Features) -> bool {
    let e = engine(one_slot(json!([{"when": rules_when, "serve": "on"}])));
    e.decide("s", "u", f).variant() == Some("on")
}

#[test]
fn operators_behave_as_documented() {
    let f = Features::new()
        .with("country", "KR")
        .with("age", 30)
        .with("score", 0.75)
        .with("email", "ann@example.com")
        .with("tags", vec!["beta", "vip"])
        .with("app", "3.4.1")
        .with("signup", "2024-06-01T00:00:00Z")
        .with("signup_secs", 1_717_200_000)
        .with("flag", true)
        .with("account", 42);
    let cases: Vec<(Value, bool)> = vec![
        (
            json!({"feature": "country", "op": "eq", "value": "KR"}),
            true,
        ),
        (
            json!({"feature": "country", "op": "ne", "value": "KR"}),
            false,
        ),
        (
            json!({"feature": "country", "op": "in", "value": ["US", "KR"]}),
            true,
        ),
        (
            json!({"feature": "country", "op": "not_in", "value": ["US", "KR"]}),
            false,
        ),
        (
            json!({"feature": "account", "op": "in", "value": [41, 42]}),
            true,
        ),
        (
            json!({"feature": "tags", "op": "in", "value": ["vip"]}),
            true,
        ),
        (json!({"feature": "age", "op": "lt", "value": 30}), false),
        (json!({"feature": "age", "op": "le", "value": 30}), true),
        (json!({"feature": "age", "op": "gt", "value": 29.5}), true),
        (json!({"feature": "score", "op": "ge", "value": 0.75}), true),
        (json!({"feature": "age", "op": "eq", "value": 30.0}), true),
        (
            json!({"feature": "age", "op": "between", "value": [18, 30]}),
            true,
        ),
        (
            json!({"feature": "age", "op": "between", "value": [31, 40]}),
            false,
        ),
        (json!({"feature": "email", "op": "exists"}), true),
        (json!({"feature": "phone", "op": "missing"}), true),
        (
            json!({"feature": "email", "op": "starts_with", "value": "ann@"}),
            true,
        ),
        (
            json!({"feature": "email", "op": "ends_with", "value": "@example.org"}),
            false,
        ),
        (
            json!({"feature": "email", "op": "contains", "value": "@exa"}),
            true,
        ),
        (
            json!({"feature": "tags", "op": "contains", "value": "beta"}),
            true,
        ),
        (
            json!({"feature": "email", "op": "matches", "value": "^[a-z]+@example\\.com$"}),
            true,
        ),
        (
            json!({"feature": "app", "op": "semver_ge", "value": "3.4.0"}),
            true,
        ),
        (
            json!({"feature": "app", "op": "semver_lt", "value": "3.10.0"}),
            true,
        ),
        (
            json!({"feature": "app", "op": "semver_eq", "value": "3.4.1"}),
            true,
        ),
        (
            json!({"feature": "app", "op": "semver_match", "value": "^3.4"}),
            true,
        ),
        (
            json!({"feature": "app", "op": "semver_match", "value": ">=4"}),
            false,
        ),
        (
            json!({"feature": "signup", "op": "after", "value": "2024-01-01"}),
            true,
        ),
        (
            json!({"feature": "signup", "op": "before", "value": "2024-05-31T23:59:59Z"}),
            false,
        ),
        (
            json!({"feature": "signup_secs", "op": "after", "value": 1_700_000_000}),
            true,
        ),
        (json!({"feature": "flag", "op": "eq", "value": true}), true),
        (
            json!({"all": [{"feature": "flag", "op": "eq", "value": true}, {"feature": "age", "op": "gt", "value": 50}]}),
            false,
        ),
        (
            json!({"any": [{"feature": "flag", "op": "eq", "value": false}, {"feature": "age", "op": "gt", "value": 20}]}),
            true,
        ),
        (
            json!({"not": {"feature": "country", "op": "eq", "value": "US"}}),
            true,
        ),
        (json!({"all": []}), true),
        (json!({"any": []}), false),
        // Missing features and type mismatches never match (except `missing`).
        (
            json!({"feature": "nothing", "op": "ne", "value": "x"}),
            false,
        ),
        (json!({"feature": "country", "op": "gt", "value": 3}), false),
        (
            json!({"feature": "email", "op": "semver_ge", "value": "1.0.0"}),
            false,
        ),
    ];
    for (cond, want) in cases {
        assert_eq!(hit(cond.clone(), &f), want, "{cond}");
    }
}

#[test]
fn segments_are_reusable_and_nest() {
    let e = engine(json!({"version": "t",
        "segments": {"asia": {"feature": "country", "op": "in", "value": ["KR", "JP"]},
                     "adult_asia": {"all": [{"segment": "asia"}, {"feature": "age", "op": "ge", "value": 18}]}},
        "slots": [{"id": "s", "variants": [{"id": "off"}, {"id": "on"}], "default": "off",
                   "rules": [{"when": {"segment": "adult_asia"}, "serve": "on"}]}]}));
    let on = |c: &'static str, a: i64| {
        e.decide("s", "u", &Features::new().with("country", c).with("age", a))
            .variant()
            == Some("on")
    };
    assert!(on("KR", 20));
    assert!(!on("KR", 10));
    assert!(!on("US", 20));
    // The slot reads both features through the nested segment.
    let snap = e.snapshot();
    let mut names: Vec<&str> = snap.features_for("s").unwrap().collect();
    names.sort_unstable();
    assert_eq!(names, ["age", "country"]);
}

#[test]
fn reasons_kill_switch_unknown_slot_and_fallbacks() {
    let e = engine(json!({"version": "t", "slots": [
        {"id": "killed", "killed": true, "variants": [{"id": "safe"}, {"id": "new"}], "default": "safe", "rules": [{"serve": "new"}]},
        {"id": "needs", "variants": [{"id": "d"}, {"id": "x"}], "default": "d",
         "rules": [{"id": "adults", "when": {"feature": "age", "op": "ge", "value": 18}, "serve": "x"}]}]}));
    let d = e.decide("killed", "u", &Features::new());
    assert_eq!(
        (d.variant(), d.reason(), d.propensity()),
        (Some("safe"), Reason::KillSwitch, 1.0)
    );
    let d = e.decide("nope", "u", &Features::new());
    assert_eq!(
        (d.variant(), d.payload(), d.slot(), d.reason()),
        (None, None, None, Reason::UnknownSlot)
    );
    let d = e.decide("needs", "u", &Features::new());
    assert_eq!(
        d.reason(),
        Reason::Fallback(FallbackCause::FeatureMissing { feature: "age" })
    );
    assert_eq!(d.variant(), Some("d"));
    let d = e.decide("needs", "u", &Features::new().with("age", "old"));
    assert_eq!(
        d.reason(),
        Reason::Fallback(FallbackCause::FeatureType { feature: "age" })
    );
    let d = e.decide("needs", "u", &Features::new().with("age", 10));
    assert_eq!(d.reason(), Reason::Default);
    let d = e.decide("needs", "u", &Features::new().with("age", 30));
    match d.reason() {
        Reason::Serve(r) => assert_eq!((r.index, r.id), (0, Some("adults"))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn splits_rollouts_and_propensities() {
    let e = engine(one_slot(json!([
        {"rollout": {"percent": 20, "variant": "on", "salt": "r"}},
        {"split": {"salt": "s", "variants": [{"variant": "off", "weight": 75}, {"variant": "on", "weight": 25}]}}
    ])));
    let (mut rollout, mut split) = (0, 0);
    for i in 0..20_000 {
        let d = e.decide("s", &format!("u{i}"), &Features::new());
        match d.reason() {
            Reason::Rollout { bucket, .. } => {
                assert!(bucket < 2_000);
                assert!((d.propensity() - 0.2).abs() < 1e-12);
                rollout += 1;
            }
            Reason::Split { bucket, .. } => {
                let arm = if d.variant() == Some("off") {
                    0.75
                } else {
                    0.25
                };
                assert_eq!(d.variant() == Some("off"), bucket < 7_500);
                assert!(
                    (d.propensity() - 0.8 * arm).abs() < 1e-12,
                    "{}",
                    d.propensity()
                );
                split += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!((3_700..4_300).contains(&rollout), "{rollout}");
    assert_eq!(rollout + split, 20_000);
}

#[test]
fn split_by_feature_follows_the_unit_not_the_user() {
    let e = engine(one_slot(
        json!([{"split": {"by": "device_id", "variants": [{"variant": "off", "weight": 50}, {"variant": "on", "weight": 50}]}}]),
    ));
    for dev in 0..200 {
        let f = Features::new().with("device_id", format!("d{dev}"));
        let first = e.decide("s", "user-a", &f).variant().map(str::to_owned);
        for u in ["user-b", "user-c", ""] {
            assert_eq!(e.decide("s", u, &f).variant().map(str::to_owned), first);
        }
    }
    let d = e.decide("s", "u", &Features::new());
    assert_eq!(
        d.reason(),
        Reason::Fallback(FallbackCause::FeatureMissing {
            feature: "device_id"
        })
    );
}

#[test]
fn score_picks_argmax_first_wins_ties_missing_counts_zero() {
    let e = engine(
        json!({"version": "t", "slots": [{"id": "s", "variants": [{"id": "a"}, {"id": "b"}, {"id": "c"}], "default": "c",
        "rules": [{"score": {"variants": [
            {"variant": "a", "bias": 1.0},
            {"variant": "b", "weights": {"pv": 0.3, "buy": 0.7}},
            {"variant": "c", "bias": 1.0}]}}]}]}),
    );
    let v = |f: Features| e.decide("s", "u", &f).variant().map(str::to_owned);
    assert_eq!(
        v(Features::new().with("pv", 10).with("buy", 0)).as_deref(),
        Some("b")
    ); // 3.0
    assert_eq!(
        v(Features::new().with("pv", 1).with("buy", 1)).as_deref(),
        Some("a")
    ); // 1.0 = 1.0 = 1.0: first
    assert_eq!(v(Features::new()).as_deref(), Some("a")); // b scores 0
    assert!(matches!(
        e.decide("s", "u", &Features::new()).reason(),
        Reason::Score(_)
    ));
}

#[test]
fn layers_are_mutually_exclusive_and_holdouts_see_defaults() {
    let e = engine(json!({"version": "t",
        "holdout": {"percent": 5},
        "layers": [{"id": "home", "holdout": {"percent": 10}}],
        "slots": [
            {"id": "x", "layer": {"id": "home", "from": 0, "to": 5000}, "variants": [{"id": "d"}, {"id": "t"}], "default": "d", "rules": [{"serve": "t"}]},
            {"id": "y", "layer": {"id": "home", "from": 5000, "to": 10000}, "variants": [{"id": "d"}, {"id": "t"}], "default": "d", "rules": [{"serve": "t"}]},
            {"id": "free", "variants": [{"id": "d"}, {"id": "t"}], "default": "d", "rules": [{"serve": "t"}]}]}));
    let (mut global, mut layer, mut both_in) = (0, 0, 0);
    let n = 40_000;
    for i in 0..n {
        let u = format!("u{i}");
        let (x, y, free) = (
            e.decide("x", &u, &Features::new()),
            e.decide("y", &u, &Features::new()),
            e.decide("free", &u, &Features::new()),
        );
        match free.reason() {
            Reason::Holdout { layer: None } => {
                global += 1;
                assert_eq!(
                    (x.reason(), y.reason()),
                    (
                        Reason::Holdout { layer: None },
                        Reason::Holdout { layer: None }
                    )
                );
                continue;
            }
            r => assert!(matches!(r, Reason::Serve(_))),
        }
        if x.reason()
            == (Reason::Holdout {
                layer: Some("home"),
            })
        {
            layer += 1;
            assert_eq!(
                y.reason(),
                Reason::Holdout {
                    layer: Some("home")
                }
            );
            assert_eq!((x.variant(), y.variant()), (Some("d"), Some("d")));
            continue;
        }
        let xin = x.variant() == Some("t");
        let yin = y.variant() == Some("t");
        assert!(
            xin ^ yin,
            "user {u} in both or neither experiment of the layer"
        );
        if !xin {
            assert_eq!(x.reason(), Reason::NotInLayer { layer: "home" });
        }
        both_in += usize::from(xin && yin);
    }
    assert_eq!(both_in, 0);
    let share = |k: usize, of: usize| k as f64 / of as f64;
    assert!(
        (share(global, n) - 0.05).abs() < 0.005,
        "global holdout {global}"
    );
    assert!(
        (share(layer, n - global) - 0.10).abs() < 0.008,
        "layer holdout {layer}"
    );
}

#[test]
fn editing_one_slot_never_moves_users_of_another() {
    let v1 = json!({"version": "1", "slots": [
        {"id": "a", "variants": [{"id": "x"}, {"id": "y"}], "default": "x", "rules": [{"split": {"variants": [{"variant": "x", "weight": 50}, {"variant": "y", "weight": 50}]}}]},
        {"id": "b", "variants": [{"id": "x"}, {"id": "y"}], "default": "x", "rules": [{"split": {"variants": [{"variant": "x", "weight": 50}, {"variant": "y", "weight": 50}]}}]}]});
    let mut v2 = v1.clone();
    v2["version"] = json!("2");
    v2["slots"][1]["rules"][0]["split"]["variants"] =
        json!([{"variant": "x", "weight": 10}, {"variant": "y", "weight": 90}]);
    v2["slots"][1]["rules"] = json!([{"when": {"feature": "c", "op": "eq", "value": "KR"}, "serve": "y"}, v2["slots"][1]["rules"][0].clone()]);
    v2["slots"].as_array_mut().unwrap().insert(
        0,
        json!({"id": "new", "variants": [{"id": "z"}], "default": "z"}),
    );
    let (e1, e2) = (engine(v1), engine(v2));
    let mut moved_b = 0;
    for i in 0..10_000 {
        let u = format!("u{i}");
        let f = Features::new();
        assert_eq!(
            e1.decide("a", &u, &f).variant(),
            e2.decide("a", &u, &f).variant(),
            "{u} moved in slot a"
        );
        moved_b +=
            usize::from(e1.decide("b", &u, &f).variant() != e2.decide("b", &u, &f).variant());
    }
    assert!(moved_b > 0, "the edited slot should change");
}

#[test]
fn payloads_are_raw_strings_or_compact_json() {
    let e = engine(
        json!({"version": "t", "slots": [{"id": "s", "variants": [{"id": "a", "payload": "hello"}, {"id": "b", "payload": {"k": [1, 2]}}], "default": "a",
        "rules": [{"when": {"feature": "f", "op": "exists"}, "serve": "b"}]}]}),
    );
    assert_eq!(
        &e.decide("s", "u", &Features::new()).payload().unwrap()[..],
        b"hello"
    );
    assert_eq!(
        &e.decide("s", "u", &Features::new().with("f", 1))
            .payload()
            .unwrap()[..],
        br#"{"k":[1,2]}"#
    );
}

/// A source that records what it was asked and answers after `delay` (or fails).
struct Recording {
    inner: MemoryStore,
    asked: Mutex<Vec<Vec<String>>>,
    delay: Duration,
    fail: bool,
}

impl FeatureSource for Recording {
    fn fetch<'a>(&'a self, request: FetchRequest<'a>) -> FetchFuture<'a> {
        self.asked
            .lock()
            .unwrap()
            .push(request.names.iter().map(|n| n.to_string()).collect());
        if self.fail {
            return Box::pin(std::future::ready(Err(SourceError::backend(
                "test",
                std::io::Error::other("down"),
            ))));
        }
        if self.delay.is_zero() {
            return self.inner.fetch(request);
        }
        // Resolves on a helper thread after the delay (a real async wake-up).
        let (tx, rx) = std::sync::mpsc::channel();
        let delay = self.delay;
        let waker_slot: Arc<Mutex<Option<std::task::Waker>>> = Arc::default();
        let ws = Arc::clone(&waker_slot);
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let _ = tx.send(());
            if let Some(w) = ws.lock().unwrap().take() {
                w.wake();
            }
        });
        Box::pin(std::future::poll_fn(move |cx| {
            *waker_slot.lock().unwrap() = Some(cx.waker().clone());
            match rx.try_recv() {
                Ok(()) => std::task::Poll::Ready(Ok(Features::new().with("country", "KR"))),
                Err(_) => std::task::Poll::Pending,
            }
        }))
    }
}

fn fetch_engine(delay: Duration, fail: bool) -> (Engine, Arc<Recording>) {
    let store = MemoryStore::new();
    store.set(
        "u1",
        Features::new()
            .with("country", "KR")
            .with("age", 30)
            .with("unused", 1),
    );
    let src = Arc::new(Recording {
        inner: store,
        asked: Mutex::default(),
        delay,
        fail,
    });
    let e = Engine::builder()
        .source(Arc::clone(&src))
        .fetch_deadline(Duration::from_millis(20))
        .build();
    e.load_config_json(
        &json!({"version": "t", "slots": [
            {"id": "s", "variants": [{"id": "off"}, {"id": "on"}], "default": "off",
             "rules": [{"when": {"all": [{"feature": "country", "op": "eq", "value": "KR"}, {"feature": "age", "op": "gt", "value": 1}]}, "serve": "on"}]},
            {"id": "nofeatures", "variants": [{"id": "only"}], "default": "only"}]})
        .to_string(),
    )
    .unwrap();
    (e, src)
}

#[test]
fn decide_for_fetches_only_what_the_slot_reads() {
    let (e, src) = fetch_engine(Duration::ZERO, false);
    let d = e.decide_for("s", "u1");
    assert_eq!(
        (d.variant(), d.feature_status()),
        (Some("on"), FeatureStatus::Fetched)
    );
    let d = e.decide_for("nofeatures", "u1");
    assert_eq!(
        (d.variant(), d.feature_status()),
        (Some("only"), FeatureStatus::NotFetched),
        "nothing was fetched"
    );
    let d = e.decide_for("s", "stranger");
    assert_eq!(
        d.reason(),
        Reason::Fallback(FallbackCause::FeatureMissing { feature: "country" })
    );
    let asked = src.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        vec![vec!["country".to_owned(), "age".to_owned()]; 2],
        "no fetch for a slot without features"
    );
}

#[test]
fn decide_for_async_awaits_the_source() {
    let (e, _) = fetch_engine(Duration::ZERO, false);
    let fut = std::pin::pin!(e.decide_for_async("s", "u1"));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let std::task::Poll::Ready(d) = fut.poll(&mut cx) else {
        panic!("memory source is ready at once")
    };
    assert_eq!(d.variant(), Some("on"));
}

#[test]
fn slow_source_times_out_at_the_deadline_and_failures_fall_back() {
    let (e, _) = fetch_engine(Duration::from_millis(200), false);
    let t = Instant::now();
    let d = e.decide_for("s", "u1");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(20) && took < Duration::from_millis(120),
        "{took:?}"
    );
    assert_eq!(d.feature_status(), FeatureStatus::TimedOut);
    assert_eq!(
        (d.variant(), d.reason()),
        (Some("off"), Reason::Fallback(FallbackCause::SourceTimeout))
    );

    let (e, _) = fetch_engine(Duration::from_millis(2), false);
    let d = e.decide_for("s", "u1");
    assert_eq!(
        (d.feature_status(), d.variant()),
        (FeatureStatus::Fetched, Some("off")),
        "answer arrived in time; age is absent"
    );

    let (e, _) = fetch_engine(Duration::ZERO, true);
    let d = e.decide_for("s", "u1");
    assert_eq!(d.feature_status(), FeatureStatus::Failed);
    assert_eq!(d.reason(), Reason::Fallback(FallbackCause::SourceError));
}

#[test]
fn a_source_that_refuses_gives_an_unavailable_fallback() {
    struct Refuses;
    impl elvon::features::FeatureSource for Refuses {
        fn fetch<'a>(&'a self, _: FetchRequest<'a>) -> FetchFuture<'a> {
            Box::pin(async {
                Err(elvon::features::SourceError::Unavailable(
                    "breaker open".into(),
                ))
            })
        }
    }
    let e = Engine::builder().source(Refuses).build();
    e.load_config_json(
        &one_slot(
            json!([{"when": {"feature": "country", "op": "eq", "value": "KR"}, "serve": "on"}]),
        )
        .to_string(),
    )
    .unwrap();
    let d = e.decide_for("s", "u1");
    assert_eq!(d.feature_status(), FeatureStatus::Unavailable);
    assert_eq!(
        (d.variant(), d.reason()),
        (
            Some("off"),
            Reason::Fallback(FallbackCause::SourceUnavailable)
        )
    );
    assert_eq!(d.reason().kind().as_str(), "fallback");
}

#[test]
fn explain_traces_every_step_without_logging() {
    let sink = elvon::sink::MemorySink::new(100);
    let e = Engine::builder().sink(sink.clone()).build();
    e.load_config_json(&one_slot(json!([{"id": "kr", "when": {"feature": "country", "op": "eq", "value": "KR"}, "serve": "on"}])).to_string())
        .unwrap();
    let x = e.explain("s", "u", &Features::new().with("country", "US"));
    let text = x.steps.join("\n");
    assert!(
        text.contains("country = \"US\": eq \"KR\" → false"),
        "{text}"
    );
    assert!(text.contains("rules[0] condition → false"), "{text}");
    assert!(text.contains("decided \"off\" (default)"), "{text}");
    assert_eq!(x.decision.variant(), Some("off"));
    assert_eq!(sink.stats().offered, 0);
    let x = e.explain("missing-slot", "u", &Features::new());
    assert!(
        x.steps[0].contains("not in config version"),
        "{:?}",
        x.steps
    );
}

/// Explaining takes no id from the engine's sequences: an engine that explains between two
/// decisions makes the same ids and the same bandit draws as one that does not.
#[test]
fn explain_does_not_change_later_ids_or_draws() {
    let config = json!({"version": "1", "slots": [
        {"id": "b", "variants": [{"id": "x"}, {"id": "y"}, {"id": "z"}], "default": "x",
         "rules": [{"bandit": {"policy": "epsilon_greedy", "epsilon": 0.9, "arms": ["x", "y", "z"]}}]},
        {"id": "s", "variants": [{"id": "off"}, {"id": "on"}], "default": "off"}]})
    .to_string();
    let run = |explain: bool| {
        let e = Engine::builder().id_prefix(77).build();
        e.load_config_json(&config).unwrap();
        let none = Features::new();
        (0..50)
            .map(|i| {
                if explain {
                    let x = e.explain(if i % 2 == 0 { "b" } else { "s" }, "u", &none);
                    assert_eq!(
                        x.decision.id().to_string(),
                        "000000000000004dffffffffffffffff"
                    );
                }
                let slot = if i % 3 == 0 { "s" } else { "b" };
                let d = e.decide(slot, &format!("u{i}"), &none);
                (d.id(), d.variant().map(str::to_owned))
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(true), run(false));
}

#[test]
fn decisions_carry_version_and_unique_ids() {
    let e = engine(one_slot(json!([])));
    let a = e.decide("s", "u", &Features::new());
    let b = e.decide("s", "u", &Features::new());
    assert_eq!(a.config_version(), "t");
    assert_ne!(a.id(), b.id());
    assert_eq!(
        a.id().to_string().parse::<elvon::DecisionId>().unwrap(),
        a.id()
    );
}

#[test]
fn scores_with_many_inputs_read_each_feature_correctly() {
    // 40 distinct inputs: more than are gathered on the stack, so the per-use path runs too.
    let n = 40;
    let weights_a: serde_json::Map<String, Value> =
        (0..n).map(|i| (format!("f{i}"), json!(1.0))).collect();
    let weights_b: serde_json::Map<String, Value> = (0..n)
        .map(|i| (format!("f{i}"), json!(if i == n - 1 { 100.0 } else { 0.0 })))
        .collect();
    for inputs in [n, 20] {
        let (wa, wb): (serde_json::Map<_, _>, serde_json::Map<_, _>) = (
            weights_a.clone().into_iter().take(inputs).collect(),
            weights_b
                .clone()
                .into_iter()
                .filter(|(k, _)| k == "f39" || inputs == n)
                .take(inputs)
                .collect(),
        );
        let e = engine(
            json!({"version": "t", "slots": [{"id": "s", "variants": [{"id": "a"}, {"id": "b"}], "default": "a",
            "rules": [{"score": {"variants": [{"variant": "a", "weights": wa}, {"variant": "b", "weights": wb}]}}]}]}),
        );
        let mut f: Features = (0..n).map(|i| (format!("f{i}"), 1i64)).collect();
        // a scores `inputs` (sum of ones), b scores 100 from f39.
        assert_eq!(
            e.decide("s", "u", &f).variant(),
            Some("b"),
            "inputs {inputs}"
        );
        f.insert("f39", 0);
        assert_eq!(
            e.decide("s", "u", &f).variant(),
            Some("a"),
            "inputs {inputs}"
        );
        f.remove("f0");
        let d = e.decide("s", "u", &f);
        assert!(matches!(d.reason(), Reason::Score(_)), "{:?}", d.reason());
    }
}

/// Features from a borrowed request: `&str` values (copied) and integer types of every width
/// that fits an `i64`.
#[test]
fn features_from_a_borrowed_request() {
    struct Request {
        country: String,
        tags: Vec<String>,
        age: u8,
        visits: usize,
    }
    fn features(req: &Request) -> Features {
        let tags: Vec<&str> = req.tags.iter().map(String::as_str).collect();
        Features::new()
            .with("country", req.country.as_str())
            .with("tags", tags)
            .with("age", req.age)
            .with("visits", elvon::Value::try_from(req.visits).expect("fits"))
    }
    let e = engine(one_slot(json!([
        {"when": {"all": [{"feature": "country", "op": "eq", "value": "KR"},
                          {"feature": "tags", "op": "contains", "value": "vip"},
                          {"feature": "visits", "op": "gt", "value": 2}]}, "serve": "on"}])));
    let req = Request {
        country: "KR".to_owned(),
        tags: vec!["new".to_owned(), "vip".to_owned()],
        age: 30,
        visits: 3,
    };
    let f = features(&req);
    drop(req);
    assert_eq!(e.decide("s", "u", &f).variant(), Some("on"));
    assert_eq!(f.get("age"), Some(&elvon::Value::Int(30)));
}

/// Records are stamped on the engine's clock: both the in-memory sink (which builds the
/// record on the deciding thread) and the JSON-lines sink (which encodes the time into its
/// capture queue and builds the record on its writer thread).
#[test]
fn records_are_stamped_on_the_engines_clock() {
    let clock = elvon::clock::Clock::fake(1_700_000_000_000);
    let memory = elvon::sink::MemorySink::new(10);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("log.jsonl");
    let jsonl =
        elvon::sink::JsonlSink::create(&path, elvon::sink::JsonlOptions::default()).expect("sink");
    let config = one_slot(json!([])).to_string();
    let (a, b) = (
        Engine::builder()
            .sink(memory.clone())
            .clock(clock.clone())
            .build(),
        Engine::builder()
            .sink(jsonl.clone())
            .clock(clock.clone())
            .build(),
    );
    a.load_config_json(&config).expect("valid");
    b.load_config_json(&config).expect("valid");
    a.decide("s", "u", &Features::new());
    b.decide("s", "u", &Features::new());
    clock.advance(std::time::Duration::from_secs(90));
    a.decide("s", "u", &Features::new());
    b.decide("s", "u", &Features::new());
    jsonl
        .flush(std::time::Duration::from_secs(10))
        .expect("flushed");
    let stamps: Vec<u64> = memory.records().iter().map(|r| r.timestamp_ms).collect();
    assert_eq!(stamps, [1_700_000_000_000, 1_700_000_090_000]);
    let text = std::fs::read_to_string(&path).expect("log");
    let stamps: Vec<u64> = text
        .lines()
        .map(|l| {
            let r: elvon::sink::DecisionRecord = serde_json::from_str(l).expect("a record");
            r.timestamp_ms
        })
        .collect();
    assert_eq!(stamps, [1_700_000_000_000, 1_700_000_090_000]);
}
