//! Sticky assignment with the in-memory store: weight changes, targeting re-checks, bucket
//! versions, removed variants, feature units, the write queue, and config errors. The Redis
//! store (one round trip, fleets) is in `tests/redis_sticky.rs`.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use elvon::sticky::{
    Assignment, AssignmentError, AssignmentStore, AssignmentWrite, MemoryAssignments,
};
use elvon::{Engine, Features, Reason, ReasonKind};
use serde_json::{json, Value};

const FLUSH: Duration = Duration::from_secs(10);

/// A one-slot config: a split over `weights` (variant, percent), behind `when` if given.
fn config(version: &str, weights: &[(&str, u32)], sticky: Value, when: Option<Value>) -> String {
    let mut variants: Vec<Value> = ["a", "b", "c"].iter().map(|v| json!({"id": v})).collect();
    variants.retain(|v| weights.iter().any(|(w, _)| v["id"] == *w) || v["id"] == "a");
    let split: Vec<Value> = weights
        .iter()
        .map(|(v, w)| json!({"variant": v, "weight": w}))
        .collect();
    let mut rule = json!({"split": {"variants": split}});
    if let Some(w) = when {
        rule["when"] = w;
    }
    json!({"version": version, "slots": [{
        "id": "exp", "variants": variants, "default": "a", "sticky": sticky, "rules": [rule]
    }]})
    .to_string()
}

fn engine(store: &Arc<MemoryAssignments>) -> Engine {
    Engine::builder().assignments(Arc::clone(store)).build()
}

fn load(e: &Engine, json: &str) {
    let out = e.load_config_json(json).expect("valid config");
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn variant(e: &Engine, user: &str, f: &Features) -> (String, ReasonKind, f64) {
    let d = e.decide("exp", user, f);
    (
        d.variant().expect("known slot").to_owned(),
        d.reason().kind(),
        d.propensity(),
    )
}

#[test]
fn weights_changed_from_50_50_to_90_10_keep_every_sticky_user_and_split_new_users_90_10() {
    let store = Arc::new(MemoryAssignments::new(100_000));
    // A queue for the whole burst of 20,000 new users (the default holds 16,384).
    let e = Engine::builder()
        .assignments(Arc::clone(&store))
        .assignment_queue(40_000)
        .build();
    load(&e, &config("1", &[("a", 50), ("b", 50)], json!({}), None));
    let none = Features::new();
    let old = users("old-", 20_000);
    let first: Vec<String> = old
        .iter()
        .map(|u| {
            let (v, kind, p) = variant(&e, u, &none);
            assert_eq!((kind, p), (ReasonKind::Split, 0.5));
            v
        })
        .collect();
    e.flush_assignments(FLUSH).expect("written");
    let s = e.assignment_stats().expect("engine has a store");
    assert_eq!(
        (s.offered, s.written, s.dropped, s.failed),
        (20_000, 20_000, 0, 0)
    );
    assert_eq!(store.len(), 20_000);

    load(&e, &config("2", &[("a", 90), ("b", 10)], json!({}), None));
    let mut kept = 0;
    for (u, v) in old.iter().zip(&first) {
        let d = e.decide("exp", u, &none);
        assert_eq!(d.reason(), Reason::Sticky { version: 0 });
        assert_eq!(
            d.propensity(),
            0.5,
            "the propensity of the original assignment"
        );
        kept += usize::from(d.variant() == Some(v.as_str()));
    }
    assert_eq!(kept, old.len(), "100% of sticky users keep their variant");
    let fresh = users("new-", 20_000);
    let mut a = 0;
    for u in &fresh {
        let (v, kind, p) = variant(&e, u, &none);
        assert_eq!(kind, ReasonKind::Split);
        assert_eq!(p, if v == "a" { 0.9 } else { 0.1 });
        a += usize::from(v == "a");
    }
    let share = a as f64 / fresh.len() as f64;
    assert!(
        (share - 0.9).abs() <= 0.01,
        "new users follow 90/10: {share}"
    );
    // The new users were assigned too; the sticky users' reads wrote nothing.
    e.flush_assignments(FLUSH).expect("written");
    assert_eq!(e.assignment_stats().expect("store").written, 40_000);
}

#[test]
fn targeting_is_rechecked_by_default_and_not_when_the_option_says_so() {
    for recheck in [true, false] {
        let store = Arc::new(MemoryAssignments::new(10_000));
        let e = engine(&store);
        let sticky = json!({"recheck_targeting": recheck});
        let when = |c: &str| Some(json!({"feature": "country", "op": "eq", "value": c}));
        load(
            &e,
            &config("1", &[("a", 50), ("b", 50)], sticky.clone(), when("KR")),
        );
        let kr = Features::new().with("country", "KR");
        let group = users("kr-", 400);
        let first: Vec<String> = group.iter().map(|u| variant(&e, u, &kr).0).collect();
        assert!(first.iter().any(|v| v == "b"), "some users got b");
        e.flush_assignments(FLUSH).expect("written");

        // Targeting moves to JP: KR users no longer reach the split.
        load(
            &e,
            &config("2", &[("a", 0), ("b", 100)], sticky.clone(), when("JP")),
        );
        for (u, v) in group.iter().zip(&first) {
            let d = e.decide("exp", u, &kr);
            if recheck {
                assert_eq!(d.reason(), Reason::Default, "re-checked: {u} is out");
                assert_eq!(d.variant(), Some("a"));
            } else {
                assert_eq!(d.reason(), Reason::Sticky { version: 0 }, "{u} keeps it");
                assert_eq!(d.variant(), Some(v.as_str()));
            }
        }
        // A KR user re-checked out keeps the assignment: targeting restored, it is served
        // again (and not replaced by the new 0/100 split's b).
        load(
            &e,
            &config("3", &[("a", 0), ("b", 100)], sticky, when("KR")),
        );
        for (u, v) in group.iter().zip(&first) {
            let d = e.decide("exp", u, &kr);
            assert_eq!(d.reason(), Reason::Sticky { version: 0 });
            assert_eq!(d.variant(), Some(v.as_str()));
        }
        e.flush_assignments(FLUSH).expect("written");
        assert_eq!(
            e.assignment_stats().expect("store").offered,
            400,
            "recheck {recheck}"
        );
    }
}

#[test]
fn bumping_the_bucket_version_reassigns_everyone_unless_min_version_keeps_them() {
    let store = Arc::new(MemoryAssignments::new(10_000));
    let e = engine(&store);
    let group = users("u", 2_000);
    let none = Features::new();
    load(
        &e,
        &config("1", &[("a", 50), ("b", 50)], json!({"version": 1}), None),
    );
    let first: Vec<String> = group.iter().map(|u| variant(&e, u, &none).0).collect();
    e.flush_assignments(FLUSH).expect("written");

    // Version 2 keeping version 1 assignments: all kept.
    let keep = json!({"version": 2, "min_version": 1});
    load(&e, &config("2", &[("a", 0), ("b", 100)], keep, None));
    for (u, v) in group.iter().zip(&first) {
        let d = e.decide("exp", u, &none);
        assert_eq!(d.reason(), Reason::Sticky { version: 1 });
        assert_eq!(d.variant(), Some(v.as_str()));
    }
    // Version 2 alone (min_version defaults to the version): everyone is reassigned.
    load(
        &e,
        &config("3", &[("a", 0), ("b", 100)], json!({"version": 2}), None),
    );
    for u in &group {
        let (v, kind, p) = variant(&e, u, &none);
        assert_eq!((v.as_str(), kind, p), ("b", ReasonKind::Split, 1.0), "{u}");
    }
    e.flush_assignments(FLUSH).expect("written");
    let a = store.get("u0", "exp").expect("reads").expect("stored");
    assert_eq!((&*a.variant, a.version, a.propensity), ("b", 2, 1.0));
    // And the version 2 assignments now stick.
    load(
        &e,
        &config("4", &[("a", 100), ("b", 0)], json!({"version": 2}), None),
    );
    assert_eq!(variant(&e, "u0", &none).1, ReasonKind::Sticky);
}

#[test]
fn a_removed_variant_is_never_served_from_a_stale_assignment() {
    let store = Arc::new(MemoryAssignments::new(10_000));
    let e = engine(&store);
    let none = Features::new();
    let group = users("u", 3_000);
    load(
        &e,
        &config("1", &[("a", 30), ("b", 30), ("c", 40)], json!({}), None),
    );
    let on_c: Vec<&String> = group
        .iter()
        .filter(|u| variant(&e, u, &none).0 == "c")
        .collect();
    assert!(on_c.len() > 1_000, "{}", on_c.len());
    e.flush_assignments(FLUSH).expect("written");

    load(&e, &config("2", &[("a", 50), ("b", 50)], json!({}), None));
    for u in &on_c {
        let (v, kind, _) = variant(&e, u, &none);
        assert_ne!(v, "c");
        assert_eq!(kind, ReasonKind::Split, "{u} is reassigned");
    }
    e.flush_assignments(FLUSH).expect("written");
    for u in &on_c {
        let a = store.get(u, "exp").expect("reads").expect("stored");
        assert_ne!(&*a.variant, "c", "the stale assignment was replaced");
    }
}

#[test]
fn a_feature_unit_holds_while_its_value_is_unchanged() {
    let store = Arc::new(MemoryAssignments::new(10_000));
    let e = engine(&store);
    let by = json!({"by": "device"});
    load(&e, &config("1", &[("a", 50), ("b", 50)], by.clone(), None));
    let d1 = Features::new().with("device", "d1");
    // Find a user whose first assignment under d1 is b, so 0/100 towards a would change it.
    let (v, _, _) = variant(&e, "u1", &d1);
    e.flush_assignments(FLUSH).expect("written");
    let other = if v == "a" { "b" } else { "a" };
    load(&e, &config("2", &[(other, 100), (&*v, 0)], by, None));
    let d = e.decide("exp", "u1", &d1);
    assert_eq!(
        (d.variant(), d.reason()),
        (Some(&*v), Reason::Sticky { version: 0 })
    );
    // Another device: the assignment does not hold, the config decides (and assigns anew).
    let d2 = Features::new().with("device", "d2");
    assert_eq!(
        variant(&e, "u1", &d2),
        (other.to_owned(), ReasonKind::Split, 1.0)
    );
    // No device: nothing can be read or stored.
    let before = e.assignment_stats().expect("store").offered;
    let d = e.decide("exp", "u1", &Features::new());
    assert_ne!(d.reason().kind(), ReasonKind::Sticky);
    assert_eq!(e.assignment_stats().expect("store").offered, before);
}

#[test]
fn only_splits_and_rollouts_assign_and_the_kill_switch_wins() {
    let store = Arc::new(MemoryAssignments::new(10_000));
    let e = engine(&store);
    let slot = |killed: bool| {
        json!({"version": "1", "slots": [{
            "id": "exp", "variants": [{"id": "a"}, {"id": "b"}], "default": "a",
            "killed": killed, "sticky": {},
            "rules": [
                {"when": {"feature": "vip", "op": "eq", "value": true}, "serve": "b"},
                {"rollout": {"variant": "b", "percent": 50}}
            ]
        }]})
        .to_string()
    };
    load(&e, &slot(false));
    let vip = Features::new().with("vip", true);
    let none = Features::new();
    let mut rolled_in = Vec::new();
    for u in users("u", 1_000) {
        assert_eq!(e.decide("exp", &u, &vip).reason().kind(), ReasonKind::Rule);
        let d = e.decide("exp", &u, &none);
        if d.reason().kind() == ReasonKind::Rollout {
            rolled_in.push(u);
        }
    }
    e.flush_assignments(FLUSH).expect("written");
    // Serve rules and the default fall-through store nothing; rollouts do.
    assert_eq!(store.len(), rolled_in.len());
    assert_eq!(
        e.assignment_stats().expect("store").offered,
        rolled_in.len() as u64
    );
    load(&e, &slot(true));
    for u in &rolled_in {
        assert_eq!(e.decide("exp", u, &none).reason(), Reason::KillSwitch);
    }
}

/// A store whose `put` waits until the gate opens, and whose `get` can fail.
struct Gated {
    inner: MemoryAssignments,
    open: Mutex<bool>,
    cv: Condvar,
    fail_get: bool,
}

impl Gated {
    fn new(fail_get: bool) -> Arc<Gated> {
        Arc::new(Gated {
            inner: MemoryAssignments::new(100_000),
            open: Mutex::new(false),
            cv: Condvar::new(),
            fail_get,
        })
    }
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

impl AssignmentStore for Gated {
    fn get(&self, user: &str, slot: &str) -> Result<Option<Assignment>, AssignmentError> {
        if self.fail_get {
            return Err(AssignmentError::Decode("the test store fails reads".into()));
        }
        self.inner.get(user, slot)
    }
    fn put(&self, batch: &[AssignmentWrite]) -> Result<(), AssignmentError> {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
        self.inner.put(batch)
    }
}

#[test]
fn writes_never_block_decide_and_a_full_queue_is_counted() {
    let store = Gated::new(false);
    let e = Engine::builder()
        .assignments(Arc::clone(&store))
        .assignment_queue(8)
        .build();
    load(&e, &config("1", &[("a", 50), ("b", 50)], json!({}), None));
    let none = Features::new();
    // The store blocks every write; deciding goes on regardless.
    for u in users("u", 1_000) {
        assert_eq!(variant(&e, &u, &none).1, ReasonKind::Split);
    }
    let s = e.assignment_stats().expect("store");
    assert_eq!(s.offered, 1_000);
    assert_eq!(s.offered, s.written + s.dropped + s.failed + s.pending());
    assert_eq!(s.written, 0, "the store is still closed");
    // At most the queue and the one batch the writer holds are pending.
    assert!(s.pending() <= 8 + 256, "{s:?}");
    assert!(s.dropped >= 1_000 - 8 - 256, "{s:?}");
    store.open();
    e.flush_assignments(FLUSH).expect("written");
    let s = e.assignment_stats().expect("store");
    assert_eq!(
        (s.offered, s.written + s.dropped, s.failed, s.pending()),
        (1_000, 1_000, 0, 0)
    );
    assert_eq!(store.inner.len() as u64, s.written);
}

#[test]
fn a_store_that_cannot_be_read_gets_no_writes() {
    let store = Gated::new(true);
    store.open();
    let e = Engine::builder().assignments(Arc::clone(&store)).build();
    load(&e, &config("1", &[("a", 50), ("b", 50)], json!({}), None));
    for u in users("u", 100) {
        assert_eq!(variant(&e, &u, &Features::new()).1, ReasonKind::Split);
    }
    assert_eq!(e.assignment_stats().expect("store").offered, 0);
}

#[test]
fn a_full_memory_store_fails_writes_and_says_so() {
    let store = Arc::new(MemoryAssignments::new(10));
    let e = engine(&store);
    load(&e, &config("1", &[("a", 50), ("b", 50)], json!({}), None));
    for u in users("u", 50) {
        e.decide("exp", &u, &Features::new());
    }
    e.flush_assignments(FLUSH).expect("finished");
    let s = e.assignment_stats().expect("store");
    assert_eq!((s.offered, s.written, s.failed), (50, 10, 40));
    assert!(s.last_error.expect("an error").contains("full"));
    assert_eq!(store.len(), 10);
}

#[test]
fn a_sticky_slot_without_a_store_warns_and_decides_from_the_config() {
    let e = Engine::default();
    let out = e
        .load_config_json(&config("1", &[("a", 50), ("b", 50)], json!({}), None))
        .expect("valid");
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert_eq!(out.warnings[0].path(), "slots[0].sticky");
    assert!(out.warnings[0].message().contains("no assignment store"));
    assert_eq!(e.assignment_stats(), None);
    assert_eq!(variant(&e, "u", &Features::new()).1, ReasonKind::Split);
}

#[test]
fn bad_sticky_options_are_rejected_with_their_path() {
    let cases = [
        (
            json!({"version": 2, "min_version": 3}),
            "slots[0].sticky.min_version",
            "above",
        ),
        (
            json!({"version": -1}),
            "slots[0].sticky.version",
            "whole number",
        ),
        (
            json!({"version": 1.5}),
            "slots[0].sticky.version",
            "whole number",
        ),
        (json!({"by": 5}), "slots[0].sticky.by", "feature name"),
        (
            json!({"recheck_targeting": "yes"}),
            "slots[0].sticky.recheck_targeting",
            "true or false",
        ),
        (json!({"ttl": 5}), "slots[0].sticky", "ttl"),
        (json!(true), "slots[0].sticky", "object"),
    ];
    let e = Engine::default();
    for (sticky, path, words) in cases {
        let err = e
            .load_config_json(&config("1", &[("a", 50), ("b", 50)], sticky.clone(), None))
            .expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.contains(path) && text.contains(words),
            "{sticky}: {text}"
        );
    }
    // A sticky slot without a split or rollout loads with a warning.
    let serve_only = json!({"version": "1", "slots": [{"id": "s", "variants": [{"id": "a"}],
        "default": "a", "sticky": {}, "rules": [{"serve": "a"}]}]});
    let store = Arc::new(MemoryAssignments::new(1));
    let out = engine(&store)
        .load_config_json(&serve_only.to_string())
        .expect("valid");
    assert!(
        out.warnings
            .iter()
            .any(|w| w.path() == "slots[0].sticky" && w.message().contains("no effect")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn sticky_decisions_log_their_kind_version_and_original_propensity_and_explain_reads_them() {
    let store = Arc::new(MemoryAssignments::new(1_000));
    let sink = elvon::sink::MemorySink::new(1_000);
    let e = Engine::builder()
        .assignments(Arc::clone(&store))
        .sink(sink.clone())
        .build();
    let none = Features::new();
    load(
        &e,
        &config("1", &[("a", 25), ("b", 75)], json!({"version": 3}), None),
    );
    let explained = e.explain("exp", "u1", &none);
    e.flush_assignments(FLUSH).expect("flushed");
    assert_eq!(store.len(), 0, "explaining stores nothing");
    let (v, _, p) = variant(&e, "u1", &none);
    e.flush_assignments(FLUSH).expect("written");
    assert_eq!(explained.decision.variant(), Some(v.as_str()));

    load(
        &e,
        &config(
            "2",
            &[(if v == "a" { "b" } else { "a" }, 100)],
            json!({"version": 3}),
            None,
        ),
    );
    let ex = e.explain("exp", "u1", &none);
    assert_eq!(ex.decision.reason(), Reason::Sticky { version: 3 });
    assert!(
        ex.steps
            .iter()
            .any(|s| s.contains("serving the stored assignment")),
        "{:?}",
        ex.steps
    );
    e.decide("exp", "u1", &none);
    let records = sink.take();
    let last = records.last().expect("recorded");
    assert_eq!(last.reason.kind, "sticky");
    assert_eq!(last.reason.sticky_version, Some(3));
    assert_eq!(last.variant.as_deref(), Some(v.as_str()));
    assert_eq!(last.propensity, p);
    let line = serde_json::to_value(last).expect("serializes");
    assert_eq!(
        line["reason"],
        json!({"kind": "sticky", "sticky_version": 3})
    );
}
