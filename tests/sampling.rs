//! Sampling the decision log with its pass probability (issue 19, point 3).

use std::time::Duration;

use elvon::ope::evaluate_records;
use elvon::sink::{
    DecisionRecord, DedupeOptions, DedupeSink, JsonlSink, MemorySink, SampleOptions,
    SampleRateError, SampleSink, SinkStatsSource,
};
use elvon::{Engine, Features};
use rand::{RngExt, SeedableRng};
use serde_json::json;

/// Slots `s1` and `s2`, each a 50/50 split of `a` and `b` (the logging policy).
fn logging() -> String {
    let slot = |id: &str| {
        json!({"id": id, "variants": [{"id": "a"}, {"id": "b"}], "default": "a",
               "rules": [{"split": {"variants": [{"variant": "a", "weight": 50}, {"variant": "b", "weight": 50}]}}]})
    };
    json!({"version": "live", "slots": [slot("s1"), slot("s2")]}).to_string()
}

#[test]
fn each_slot_keeps_its_share_and_every_kept_record_says_so() {
    let log = MemorySink::new(100_000);
    let options = SampleOptions::new(1.0).slot("s1", 0.1);
    let sink = SampleSink::new(log.clone(), options.clone()).expect("rates");
    let engine = Engine::builder().id_prefix(1).sink(sink.clone()).build();
    engine.load_config_json(&logging()).expect("valid");
    let n = 20_000;
    for i in 0..n {
        let _ = engine.decide("s1", &format!("u{i}"), &Features::new());
        let _ = engine.decide("s2", &format!("u{i}"), &Features::new());
    }
    let records = log.records();
    let s1: Vec<&DecisionRecord> = records.iter().filter(|r| r.slot == "s1").collect();
    let s2 = records.iter().filter(|r| r.slot == "s2").count();
    let se = (0.1 * 0.9 / n as f64).sqrt();
    let share = s1.len() as f64 / n as f64;
    assert!((share - 0.1).abs() < 4.0 * se, "s1 kept {share}");
    assert_eq!(s2, n, "s2 keeps everything");
    assert!(s1.iter().all(|r| r.pass_probability == 0.1));
    assert!(records
        .iter()
        .filter(|r| r.slot == "s2")
        .all(|r| r.pass_probability == 1.0));
    let st = sink.stats();
    assert_eq!(st.offered, 2 * n as u64);
    assert_eq!(
        st.offered,
        st.written + st.dropped + st.failed + st.sampled_out + st.pending()
    );
    assert_eq!(st.sampled_out, (n - s1.len()) as u64);

    // The choice is a function of the decision id: the same decisions keep the same records.
    let again = MemorySink::new(100_000);
    let engine = Engine::builder()
        .id_prefix(1)
        .sink(SampleSink::new(again.clone(), options).expect("rates"))
        .build();
    engine.load_config_json(&logging()).expect("valid");
    for i in 0..n {
        let _ = engine.decide("s1", &format!("u{i}"), &Features::new());
        let _ = engine.decide("s2", &format!("u{i}"), &Features::new());
    }
    let ids = |l: &MemorySink| l.records().iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(&log), ids(&again));
}

#[test]
fn the_json_lines_log_carries_the_pass_probability_and_stages_compose() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("log.jsonl");
    let file = JsonlSink::create(&path, Default::default()).expect("sink");
    let dedupe = DedupeSink::new(file.clone(), DedupeOptions::default());
    let sink = SampleSink::new(dedupe.clone(), SampleOptions::new(0.25)).expect("rates");
    let engine = Engine::builder().id_prefix(2).sink(sink.clone()).build();
    engine.load_config_json(&logging()).expect("valid");
    for i in 0..8_000 {
        // Each user twice: the second is a repeat the dedupe stage holds back when kept.
        let _ = engine.decide("s1", &format!("u{}", i / 2), &Features::new());
    }
    engine.flush(Duration::from_secs(30)).expect("flushed");
    let text = std::fs::read_to_string(&path).expect("log");
    let lines: Vec<DecisionRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a record"))
        .collect();
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|r| r.pass_probability == 0.25));
    assert!(text
        .lines()
        .all(|l| l.contains("\"pass_probability\":0.25")));
    let st = sink.stats();
    assert_eq!(st.offered, 8_000);
    assert_eq!(st.pending(), 0, "{st:?}");
    assert_eq!(
        st.offered,
        st.written + st.dropped + st.failed + st.deduped + st.sampled_out,
        "{st:?}"
    );
    assert_eq!(st.written, lines.len() as u64);
    assert!(st.deduped > 0 && st.sampled_out > 0, "{st:?}");
}

#[test]
fn rates_outside_zero_to_one_are_refused_with_the_slot() {
    let err = SampleSink::new(
        MemorySink::new(10),
        SampleOptions::new(0.5).slot("banner", 1.5),
    )
    .expect_err("refused");
    assert_eq!(
        err,
        SampleRateError {
            what: "slot \"banner\"".into(),
            rate: 1.5
        }
    );
    assert!(err.to_string().contains("banner"), "{err}");
    assert!(SampleSink::new(MemorySink::new(10), SampleOptions::new(f64::NAN)).is_err());
}

/// A log sampled at 10% on `s1` and kept whole on `s2`; the candidate serves `a` on `s1`
/// and `b` on `s2`. Returns the IPS estimate and its standard error, from the records
/// weighted (as logged) or read as if unsampled.
fn estimate(seed: u64, weighted: bool) -> (f64, f64) {
    let log = MemorySink::new(1_000_000);
    let sink =
        SampleSink::new(log.clone(), SampleOptions::new(1.0).slot("s1", 0.1)).expect("rates");
    let engine = Engine::builder().id_prefix(seed).sink(sink).build();
    engine.load_config_json(&logging()).expect("valid");
    for i in 0..40_000 {
        let _ = engine.decide(
            if i % 2 == 0 { "s1" } else { "s2" },
            &format!("u{i}"),
            &Features::new(),
        );
    }
    let candidate = Engine::default();
    let serve = |id: &str, v: &str| json!({"id": id, "variants": [{"id": "a"}, {"id": "b"}], "default": "a", "rules": [{"serve": v}]});
    candidate
        .load_config_json(
            &json!({"version": "next", "slots": [serve("s1", "a"), serve("s2", "b")]}).to_string(),
        )
        .expect("valid");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut records = log.records();
    if !weighted {
        for r in &mut records {
            r.pass_probability = 1.0;
        }
    }
    let rewarded: Vec<(DecisionRecord, f64)> = records
        .into_iter()
        .map(|r| {
            let p = match (r.slot.as_str(), r.variant.as_deref()) {
                ("s1", Some("a")) => 0.2,
                ("s1", _) => 0.4,
                (_, Some("a")) => 0.6,
                _ => 0.8,
            };
            let reward = if rng.random::<f64>() < p { 1.0 } else { 0.0 };
            (r, reward)
        })
        .collect();
    let report = evaluate_records(rewarded.iter().map(|(r, x)| (r, *x)), &candidate);
    (report.ips.value, report.ips.std_error)
}

#[test]
fn estimates_from_a_sampled_log_are_unbiased_when_weighted() {
    // The candidate's true value over all decisions: ½·0.2 (a on s1) + ½·0.8 (b on s2).
    let truth = 0.5;
    let (value, se) = estimate(41, true);
    assert!(
        (value - truth).abs() < 4.0 * se,
        "weighted IPS {value} ± {se}"
    );
    // The control: read as unsampled, s2's records outweigh s1's tenfold.
    let (value, se) = estimate(41, false);
    assert!(
        (value - truth).abs() > 10.0 * se,
        "unweighted IPS {value} ± {se}"
    );
}

#[test]
fn sampled_bandit_records_keep_their_model_version_and_probabilities() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("log.jsonl");
    let file = JsonlSink::create(&path, Default::default()).expect("sink");
    let sink = SampleSink::new(file, SampleOptions::new(0.5)).expect("rates");
    let engine = Engine::builder().id_prefix(3).sink(sink).build();
    let config = json!({"version": "1", "slots": [{"id": "b", "variants": [{"id": "x"}, {"id": "y"}],
        "default": "x", "rules": [{"bandit": {"policy": "thompson", "arms": ["x", "y"]}}]}]});
    engine.load_config_json(&config.to_string()).expect("valid");
    for i in 0..2_000 {
        let _ = engine.decide("b", &format!("u{i}"), &Features::new());
        // An unknown slot carries its name in the record too.
        let _ = engine.decide("nope", &format!("u{i}"), &Features::new());
    }
    engine.flush(Duration::from_secs(30)).expect("flushed");
    let text = std::fs::read_to_string(&path).expect("log");
    let records: Vec<DecisionRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a record"))
        .collect();
    let bandit: Vec<_> = records.iter().filter(|r| r.slot == "b").collect();
    assert!((800..1_200).contains(&bandit.len()), "{}", bandit.len());
    for r in &bandit {
        assert_eq!(r.pass_probability, 0.5);
        // Not the pass probability's bits: the two extra words decode in their places.
        assert!(
            matches!(r.model_version, Some(v) if v < 1_000),
            "{:?}",
            r.model_version
        );
        let p = r.probabilities.as_ref().expect("bandit probabilities");
        assert_eq!(p.len(), 2);
    }
    assert!(records
        .iter()
        .any(|r| r.slot == "nope" && r.pass_probability == 0.5));
}
