//! The exposure-dedupe stage in front of a sink (issue 19, point 2).

use std::time::Duration;

use elvon::clock::Clock;
use elvon::sink::{DedupeKey, DedupeOptions, DedupeSink, JsonlSink, MemorySink};
use elvon::{Engine, Features};
use serde_json::json;

fn config(version: &str) -> String {
    json!({"version": version, "slots": [
        {"id": "s", "variants": [{"id": "a"}, {"id": "b"}], "default": "a",
         "rules": [{"split": {"variants": [{"variant": "a", "weight": 50}, {"variant": "b", "weight": 50}]}}]},
        {"id": "bandit", "variants": [{"id": "x"}, {"id": "y"}], "default": "x",
         "rules": [{"bandit": {"policy": "thompson", "arms": ["x", "y"]}}]}
    ]})
    .to_string()
}

#[test]
fn a_key_passes_once_per_window() {
    let clock = Clock::fake(1_000_000);
    let log = MemorySink::new(10_000);
    let sink = DedupeSink::new(
        log.clone(),
        DedupeOptions::default().window(Duration::from_secs(60)),
    );
    let engine = Engine::builder()
        .clock(clock.clone())
        .sink(sink.clone())
        .build();
    engine.load_config_json(&config("1")).expect("valid");
    let none = Features::new();
    for _ in 0..100 {
        let _ = engine.decide("s", "u1", &none);
    }
    for i in 0..50 {
        let _ = engine.decide("s", &format!("other-{i}"), &none);
    }
    assert_eq!((sink.offered(), sink.deduped()), (150, 99));
    assert_eq!(log.stats().offered, 51, "u1 once, each other user once");
    // The next window passes u1 again, once.
    clock.advance(Duration::from_secs(60));
    for _ in 0..10 {
        let _ = engine.decide("s", "u1", &none);
    }
    assert_eq!(log.stats().offered, 52);
    // A new config version is a new exposure with the default key.
    engine.load_config_json(&config("2")).expect("valid");
    let _ = engine.decide("s", "u1", &none);
    let _ = engine.decide("s", "u1", &none);
    assert_eq!(log.stats().offered, 53);
    let s = sink.stats();
    assert_eq!(
        s.offered,
        s.written + s.dropped + s.failed + s.deduped + s.pending()
    );
    assert_eq!((s.offered, s.deduped), (162, 109));
}

#[test]
fn the_slot_user_variant_key_ignores_the_config_version() {
    let log = MemorySink::new(1_000);
    let sink = DedupeSink::new(
        log.clone(),
        DedupeOptions::default().key(DedupeKey::SlotUserVariant),
    );
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(&config("1")).expect("valid");
    let _ = engine.decide("s", "u1", &Features::new());
    engine.load_config_json(&config("2")).expect("valid");
    let _ = engine.decide("s", "u1", &Features::new());
    assert_eq!((log.stats().offered, sink.deduped()), (1, 1));
}

#[test]
fn bandit_decisions_are_never_deduped() {
    let log = MemorySink::new(1_000);
    let sink = DedupeSink::new(log.clone(), DedupeOptions::default());
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(&config("1")).expect("valid");
    for _ in 0..200 {
        let _ = engine.decide("bandit", "u1", &Features::new());
    }
    assert_eq!((log.stats().offered, sink.deduped()), (200, 0));
}

#[test]
fn the_accounting_is_exact_with_threads_and_a_full_queue() {
    let dir = tempfile::tempdir().expect("dir");
    let file = JsonlSink::create(dir.path().join("log.jsonl"), Default::default()).expect("sink");
    let small = MemorySink::new(100);
    for inner in 0..2 {
        let (sink_j, sink_m) = (
            DedupeSink::new(file.clone(), DedupeOptions::default()),
            DedupeSink::new(small.clone(), DedupeOptions::default()),
        );
        let engine = if inner == 0 {
            Engine::builder().sink(sink_j.clone()).build()
        } else {
            Engine::builder().sink(sink_m.clone()).build()
        };
        engine.load_config_json(&config("1")).expect("valid");
        std::thread::scope(|s| {
            for t in 0..4 {
                let engine = &engine;
                s.spawn(move || {
                    for i in 0..20_000 {
                        // 1,000 users, each seen many times by every thread.
                        let _ = engine.decide(
                            "s",
                            &format!("u{}", (i * 7 + t) % 1_000),
                            &Features::new(),
                        );
                        if i % 10 == 0 {
                            let _ = engine.decide("bandit", "u", &Features::new());
                        }
                    }
                });
            }
        });
        engine.flush(Duration::from_secs(30)).expect("flushed");
        let s = if inner == 0 {
            sink_j.stats()
        } else {
            sink_m.stats()
        };
        assert_eq!(s.offered, 4 * 22_000);
        assert_eq!(s.pending(), 0, "{s:?}");
        assert_eq!(
            s.offered,
            s.written + s.dropped + s.failed + s.deduped,
            "{s:?}"
        );
        assert_eq!(
            s.deduped,
            4 * 20_000 - 1_000,
            "each user passed once: {s:?}"
        );
        if inner == 1 {
            assert!(s.dropped > 0, "the small sink dropped some: {s:?}");
        }
    }
}
