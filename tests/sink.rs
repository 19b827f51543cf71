//! Decision sinks: records round-trip, and `offered = written + dropped + failed` always.

use std::io::BufRead;
use std::time::Duration;

use elvon::sink::{DecisionRecord, JsonlSink, MemorySink};
use elvon::sink::{JsonlOptions, RECORD_SCHEMA};
use elvon::{Engine, Features};

const CONFIG: &str = include_str!("data/kinds.json");

fn features(i: usize) -> Features {
    Features::new()
        .with("country", ["KR", "JP", "US"][i % 3])
        .with("plan", ["free", "vip"][i % 2])
        .with("age", 20 + (i % 40) as i64)
        .with("page_view_7d", (i % 9) as i64)
        .with("irrelevant", "never logged")
}

fn read_lines(path: &std::path::Path) -> Vec<DecisionRecord> {
    let f = std::fs::File::open(path).unwrap();
    std::io::BufReader::new(f)
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).expect("every line is a record"))
        .collect()
}

#[test]
fn jsonl_records_round_trip_and_account_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let sink = JsonlSink::create(&path, JsonlOptions::default()).unwrap();
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(CONFIG).unwrap();
    let mut expected = Vec::new();
    for i in 0..20_000 {
        let slot = ["serve", "split", "score", "fallback", "nope"][i % 5];
        let d = engine.decide(slot, &format!("user-{i}"), &features(i));
        expected.push((
            d.id(),
            d.variant().map(str::to_owned),
            d.reason().kind().as_str(),
            d.propensity(),
        ));
    }
    sink.flush(Duration::from_secs(10)).unwrap();
    let s = sink.stats();
    assert_eq!(s.offered, 20_000);
    assert_eq!(s.offered, s.written + s.dropped + s.failed, "{s:?}");
    assert_eq!(s.pending(), 0);
    let records = read_lines(&path);
    assert_eq!(records.len() as u64, s.written);
    // Dropped records are the only gaps; everything written is in order and decodes exactly.
    let mut it = expected.iter();
    for r in &records {
        let e = it
            .by_ref()
            .find(|e| e.0 == r.id)
            .expect("record matches a decision, in order");
        assert_eq!(
            (r.variant.clone(), r.reason.kind.as_str(), r.propensity),
            (e.1.clone(), e.2, e.3)
        );
        assert_eq!(r.schema, RECORD_SCHEMA);
        assert_eq!(r.config_version, "kinds-1");
        assert!(
            r.features.get("irrelevant").is_none(),
            "only features the slot reads are logged"
        );
    }
    let score = records.iter().find(|r| r.slot == "score").unwrap();
    assert!(score.features.get("page_view_7d").is_some());
    let unknown = records.iter().find(|r| r.slot == "nope").unwrap();
    assert_eq!(
        (unknown.variant.as_deref(), unknown.reason.kind.as_str()),
        (None, "unknown_slot")
    );
    let fb = records.iter().find(|r| r.slot == "fallback").unwrap();
    assert_eq!(
        (fb.reason.cause.as_deref(), fb.reason.feature.as_deref()),
        (Some("feature_missing"), Some("not_provided"))
    );
}

#[test]
fn jsonl_overload_drops_and_counts_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let sink = JsonlSink::create(&path, JsonlOptions::default().queue_capacity(8)).unwrap();
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(CONFIG).unwrap();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0..50_000 {
                    let _ = engine.decide("split", &format!("u{t}-{i}"), &features(i));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    sink.flush(Duration::from_secs(10)).unwrap();
    let s = sink.stats();
    assert_eq!(s.offered, 100_000);
    assert!(s.dropped > 0, "a queue of 8 must overflow: {s:?}");
    assert_eq!(s.offered, s.written + s.dropped + s.failed, "{s:?}");
    assert_eq!(read_lines(&path).len() as u64, s.written);
}

#[test]
fn jsonl_write_failures_are_counted_as_failed() {
    let full = std::path::Path::new("/dev/full");
    assert!(full.exists(), "this test needs /dev/full (Linux)");
    let sink = JsonlSink::create(full, JsonlOptions::default()).unwrap();
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(CONFIG).unwrap();
    for i in 0..1_000 {
        let _ = engine.decide("serve", &format!("u{i}"), &features(i));
    }
    sink.flush(Duration::from_secs(10)).unwrap();
    let s = sink.stats();
    assert_eq!(s.offered, 1_000);
    assert!(s.failed > 0, "{s:?}");
    assert_eq!(s.written, 0, "{s:?}");
    assert_eq!(s.offered, s.written + s.dropped + s.failed, "{s:?}");
}

#[test]
fn dropping_the_last_handle_writes_everything_queued() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let sink = JsonlSink::create(&path, JsonlOptions::default()).unwrap();
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(CONFIG).unwrap();
    for i in 0..5_000 {
        let _ = engine.decide("split", &format!("u{i}"), &features(i));
    }
    let offered = sink.stats().offered;
    assert_eq!(offered, 5_000);
    // No flush: dropping the engine and the last sink handle stops the writer after it has
    // written everything queued.
    drop(engine);
    drop(sink);
    assert_eq!(read_lines(&path).len() as u64, offered);
}

#[test]
fn memory_sink_bounds_and_counts() {
    let sink = MemorySink::new(10);
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(CONFIG).unwrap();
    for i in 0..25 {
        let _ = engine.decide("split", &format!("u{i}"), &features(i));
    }
    let s = sink.stats();
    assert_eq!((s.offered, s.written, s.dropped, s.failed), (25, 10, 15, 0));
    assert_eq!(sink.take().len(), 10);
    assert!(sink.records().is_empty());
}

/// Found by the `record` fuzz target: floats must survive the log exactly (serde_json's
/// default float parsing can be off by one ulp; the crate enables `float_roundtrip`).
#[test]
fn float_features_round_trip_exactly_through_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let sink = JsonlSink::create(&path, JsonlOptions::default()).unwrap();
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(CONFIG).unwrap();
    let values = [
        516_812.857_142_857_16,
        0.1 + 0.2,
        1e-300,
        -2.5e300,
        f64::MIN_POSITIVE,
        123_456_789.123_456_78,
    ];
    for (i, x) in values.iter().enumerate() {
        let _ = engine.decide(
            "targeting",
            &format!("u{i}"),
            &Features::new().with("score", *x),
        );
    }
    sink.flush(Duration::from_secs(10)).unwrap();
    let records = read_lines(&path);
    assert_eq!(records.len(), values.len());
    for (r, x) in records.iter().zip(values) {
        let got = r
            .features
            .get("score")
            .and_then(elvon::Value::as_f64)
            .unwrap();
        assert_eq!(got.to_bits(), x.to_bits(), "{x} came back as {got}");
    }
}

#[test]
fn non_finite_floats_are_logged_as_null_and_lines_still_decode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.jsonl");
    let sink = JsonlSink::create(&path, JsonlOptions::default()).unwrap();
    let engine = Engine::builder().sink(sink.clone()).build();
    engine.load_config_json(CONFIG).unwrap();
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let _ = engine.decide(
            "targeting",
            "u",
            &Features::new().with("score", x).with("age", 30),
        );
    }
    sink.flush(Duration::from_secs(10)).unwrap();
    let records = read_lines(&path);
    assert_eq!(records.len(), 3);
    for r in records {
        assert!(r.features.get("score").is_none(), "{:?}", r.features);
        assert_eq!(r.features.get("age"), Some(&elvon::Value::Int(30)));
    }
}
