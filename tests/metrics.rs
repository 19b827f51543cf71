//! Metrics reach an installed recorder: decisions by slot and reason, fallbacks, swaps,
//! rejections, sink counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use elvon::{Engine, Features, MemorySink};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

#[derive(Default)]
struct Rec {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

fn render(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for Rec {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let c = Arc::clone(
            self.counters
                .lock()
                .unwrap()
                .entry(render(key))
                .or_default(),
        );
        Counter::from_arc(c)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

impl Rec {
    fn get(&self, k: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(k)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

#[test]
fn counters_by_slot_reason_and_config_events() {
    let rec = Rec::default();
    metrics::with_local_recorder(&rec, || {
        let sink = MemorySink::new(1);
        let engine = Engine::builder().sink(sink).build();
        engine
            .load_config_json(include_str!("data/kinds.json"))
            .unwrap();
        assert!(engine.load_config_json(r#"{"version": 2}"#).is_err());
        for i in 0..100 {
            let u = format!("u{i}");
            let _ = engine.decide("split", &u, &Features::new());
            let _ = engine.decide("fallback", &u, &Features::new());
            let _ = engine.decide("killed", &u, &Features::new());
            let _ = engine.decide("nope", &u, &Features::new());
        }
    });
    let holdout = rec.get("elvon_decisions_total{reason=holdout,slot=split}");
    assert_eq!(
        rec.get("elvon_decisions_total{reason=split,slot=split}") + holdout,
        100
    );
    assert_eq!(
        rec.get("elvon_decisions_total{reason=kill_switch,slot=killed}"),
        100
    );
    assert_eq!(
        rec.get("elvon_decisions_total{reason=unknown_slot,slot=<unknown>}"),
        100
    );
    let fb = rec.get("elvon_decisions_total{reason=fallback,slot=fallback}");
    assert!(fb > 90, "{fb}");
    assert_eq!(
        rec.get("elvon_fallbacks_total{cause=feature_missing,slot=fallback}"),
        fb
    );
    assert_eq!(rec.get("elvon_config_swaps_total{}"), 1);
    assert_eq!(rec.get("elvon_config_rejections_total{}"), 1);
    assert_eq!(
        rec.get("elvon_sink_records_total{outcome=offered,sink=memory}"),
        400
    );
    assert_eq!(
        rec.get("elvon_sink_records_total{outcome=written,sink=memory}"),
        1
    );
    assert_eq!(
        rec.get("elvon_sink_records_total{outcome=dropped,sink=memory}"),
        399
    );
}
