//! Sticky assignment with the Redis store, against real `redis-server` processes: one round
//! trip per `decide_for`, assignments shared by a fleet, no writes when Redis cannot be read,
//! corrupt stored values. `scripts/test.sh` installs `redis-server`; a missing binary fails
//! these tests with that hint.
#![cfg(feature = "redis")]

use std::collections::BTreeMap;
use std::time::Duration;

use elvon::redis::RedisFeatureSource;
use elvon::sticky::{AssignmentStore, FIELD_PREFIX};
use elvon::{Engine, FeatureStatus, Reason, ReasonKind};
use serde_json::json;

#[path = "common/redis.rs"]
mod redis_common;
use redis_common::*;

const FLUSH: Duration = Duration::from_secs(10);

/// A sticky split over `a`/`b`, behind a condition on the fetched feature `country` (so the
/// fetch reads a feature and the assignment field).
fn config(version: &str, a: u32) -> String {
    json!({"version": version, "slots": [{
        "id": "exp", "variants": [{"id": "a"}, {"id": "b"}], "default": "a", "sticky": {},
        "rules": [{"when": {"feature": "country", "op": "eq", "value": "KR"},
                   "split": {"variants": [{"variant": "a", "weight": a},
                                          {"variant": "b", "weight": 100 - a}]}}]
    }]})
    .to_string()
}

fn sticky_engine(server: &Server) -> (Engine, RedisFeatureSource) {
    let source = RedisFeatureSource::builder(server.url())
        .cache(Duration::from_secs(60), 10_000)
        .build()
        .expect("source");
    let e = Engine::builder()
        .source(source.clone())
        .assignments(source.assignments())
        .fetch_deadline(Duration::from_millis(500))
        .build();
    (e, source)
}

fn load(e: &Engine, json: &str) {
    let out = e.load_config_json(json).expect("valid");
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

/// Calls per command since the last `CONFIG RESETSTAT`, from `INFO commandstats`.
fn command_calls(server: &Server) -> BTreeMap<String, u64> {
    server
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

fn set_country(source: &RedisFeatureSource, users: &[String]) {
    let kr = elvon::Features::new().with("country", "KR");
    for u in users {
        source.set_features(u, &kr).expect("written");
    }
}

#[test]
fn a_sticky_decide_for_reads_features_and_assignment_in_one_command() {
    let _serial = serial();
    let server = Server::start(&[]);
    let (e, source) = sticky_engine(&server);
    let group: Vec<String> = (0..100).map(|i| format!("u{i}")).collect();
    set_country(&source, &group);
    load(&e, &config("1", 50));
    let first: Vec<String> = group
        .iter()
        .map(|u| {
            let d = e.decide_for("exp", u);
            assert_eq!(d.feature_status(), FeatureStatus::Fetched);
            assert_eq!(d.reason().kind(), ReasonKind::Split);
            d.variant().expect("known").to_owned()
        })
        .collect();
    e.flush_assignments(FLUSH).expect("written");
    assert_eq!(e.assignment_stats().expect("store").written, 100);

    load(&e, &config("2", 0));
    server.cli(&["CONFIG", "RESETSTAT"]);
    for round in 0..3 {
        for (u, v) in group.iter().zip(&first) {
            let d = e.decide_for("exp", u);
            assert_eq!(
                d.reason(),
                Reason::Sticky { version: 0 },
                "round {round}, {u}"
            );
            assert_eq!(d.variant(), Some(v.as_str()));
            assert_eq!(d.propensity(), 0.5);
        }
    }
    let mut calls = command_calls(&server);
    calls.remove("config|resetstat");
    calls.remove("info");
    // The client sent one fetch script per decision and nothing else; inside it Redis ran
    // the size checks (`HSTRLEN`, one per field: the feature and the assignment) and one
    // `HMGET` that returned both.
    assert_eq!(calls.get("evalsha"), Some(&300), "{calls:?}");
    assert_eq!(calls.get("hmget"), Some(&300), "{calls:?}");
    assert_eq!(calls.get("hstrlen"), Some(&600), "{calls:?}");
    assert_eq!(calls.len(), 3, "no other command: {calls:?}");
    // Sticky reads bypassed the source's cache (300 decisions, 300 commands) and wrote
    // nothing.
    assert_eq!(e.assignment_stats().expect("store").offered, 100);
}

#[test]
fn a_fleet_shares_assignments_through_redis_across_a_weight_change() {
    let _serial = serial();
    let server = Server::start(&[]);
    let (first_engine, source) = sticky_engine(&server);
    let group: Vec<String> = (0..2_000).map(|i| format!("u{i}")).collect();
    set_country(&source, &group);
    load(&first_engine, &config("1", 50));
    let first: Vec<String> = group
        .iter()
        .map(|u| {
            first_engine
                .decide_for("exp", u)
                .variant()
                .expect("known")
                .to_owned()
        })
        .collect();
    first_engine.flush_assignments(FLUSH).expect("written");
    drop(first_engine);

    // Another instance, with its own source, under 10/90.
    let (other, source) = sticky_engine(&server);
    load(&other, &config("2", 10));
    for (u, v) in group.iter().zip(&first) {
        let d = other.decide_for("exp", u);
        assert_eq!(
            (d.variant(), d.reason()),
            (Some(v.as_str()), Reason::Sticky { version: 0 })
        );
    }
    let stored = source
        .assignments()
        .get("u0", "exp")
        .expect("reads")
        .expect("stored");
    assert_eq!(
        (&*stored.variant, stored.propensity),
        (first[0].as_str(), 0.5)
    );
    // New users follow the new weights.
    let fresh: Vec<String> = (0..2_000).map(|i| format!("n{i}")).collect();
    set_country(&source, &fresh);
    let b = fresh
        .iter()
        .filter(|u| other.decide_for("exp", u).variant() == Some("b"))
        .count();
    assert!((b as f64 / 2_000.0 - 0.9).abs() < 0.03, "{b}");
}

#[test]
fn no_assignment_is_written_when_redis_cannot_be_read() {
    let _serial = serial();
    let mut server = Server::start(&[]);
    let (e, source) = sticky_engine(&server);
    load(&e, &config("1", 50));
    set_country(&source, &["u1".to_owned()]);
    assert_eq!(e.decide_for("exp", "u1").reason().kind(), ReasonKind::Split);
    e.flush_assignments(FLUSH).expect("written");
    server.kill();
    for _ in 0..20 {
        let d = e.decide_for("exp", "u1");
        assert_ne!(d.feature_status(), FeatureStatus::Fetched);
        assert_ne!(d.reason().kind(), ReasonKind::Sticky);
    }
    // Deciding without the stored assignment must not overwrite it.
    assert_eq!(e.assignment_stats().expect("store").offered, 1);
    // `decide` with features the caller gives cannot read Redis either: no write.
    let f = elvon::Features::new().with("country", "KR");
    assert_eq!(e.decide("exp", "u2", &f).reason().kind(), ReasonKind::Split);
    assert_eq!(e.assignment_stats().expect("store").offered, 1);
}

#[test]
fn a_corrupt_stored_assignment_is_discarded_and_replaced() {
    let _serial = serial();
    let server = Server::start(&[]);
    let (e, source) = sticky_engine(&server);
    load(&e, &config("1", 0));
    let key = source.key("u1");
    server.cli(&["HSET", &key, "country", "\"KR\""]);
    let field = format!("{FIELD_PREFIX}exp");
    for garbage in [
        "not an assignment",
        "a1;0;0.5;zz;a",
        "a1;0;7;0000000000000000;a",
        "[1, 2]",
    ] {
        server.cli(&["HSET", &key, &field, garbage]);
        let d = e.decide_for("exp", "u1");
        assert_eq!(d.feature_status(), FeatureStatus::Fetched, "{garbage}");
        assert_eq!(
            (d.variant(), d.reason().kind()),
            (Some("b"), ReasonKind::Split),
            "{garbage}"
        );
    }
    e.flush_assignments(FLUSH).expect("written");
    let text = server.cli(&["HGET", &key, &field]);
    assert_eq!(text.trim(), "a1;0;1;0000000000000000;b");
    assert_eq!(
        e.decide_for("exp", "u1").reason(),
        Reason::Sticky { version: 0 }
    );
}
