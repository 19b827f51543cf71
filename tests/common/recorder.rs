//! A `metrics` recorder for tests (`#[path]`-included by `tests/metrics.rs` and
//! `tests/redis.rs`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// Keeps every counter, the last value of every gauge and the sample count of every
/// histogram, by rendered key (`name{label=value,...}`, labels sorted).
#[derive(Default)]
pub struct Rec {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<String, Arc<Level>>>,
    histograms: Mutex<HashMap<String, Arc<Samples>>>,
}

/// A gauge's value (f64 bits).
#[derive(Default)]
struct Level(AtomicU64);

impl metrics::GaugeFn for Level {
    fn increment(&self, v: f64) {
        self.set(f64::from_bits(self.0.load(Ordering::Relaxed)) + v);
    }
    fn decrement(&self, v: f64) {
        self.increment(-v);
    }
    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
}

/// Counts histogram samples.
#[derive(Default)]
struct Samples(AtomicU64);

impl metrics::HistogramFn for Samples {
    fn record(&self, _: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
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
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let g = Arc::clone(self.gauges.lock().unwrap().entry(render(key)).or_default());
        Gauge::from_arc(g)
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let h = Arc::clone(
            self.histograms
                .lock()
                .unwrap()
                .entry(render(key))
                .or_default(),
        );
        Histogram::from_arc(h)
    }
}

impl Rec {
    /// A counter's value (0 if never registered).
    pub fn get(&self, k: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(k)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// A gauge's last value, if it was ever registered.
    pub fn gauge(&self, k: &str) -> Option<f64> {
        self.gauges
            .lock()
            .unwrap()
            .get(k)
            .map(|g| f64::from_bits(g.0.load(Ordering::Relaxed)))
    }

    /// Samples recorded into a histogram (0 if never registered).
    pub fn samples(&self, k: &str) -> u64 {
        self.histograms
            .lock()
            .unwrap()
            .get(k)
            .map_or(0, |h| h.0.load(Ordering::Relaxed))
    }
}
