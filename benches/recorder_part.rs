//! W1 with a Prometheus recorder installed (a module of the latency harness): what counting
//! decisions into a real `metrics` recorder costs, and whether a second thread still adds
//! throughput when every thread counts decisions of the same slot. Runs last: the recorder
//! is process-global, and the scenarios before it run without one.
//!
//! The cost is measured in alternating blocks within this part: an engine whose config was
//! loaded under `metrics::NoopRecorder` (its counters record nothing) against one loaded
//! under the Prometheus recorder, one block of each in turn, so machine noise hits both.

use elvon::Engine;
use metrics_exporter_prometheus::PrometheusBuilder;
use serde::Serialize;

/// The recorder figures.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct RecorderFigures {
    /// Alternating blocks measured (each: no-op engine 1 thread, recorded engine 1 and 2
    /// threads).
    pub(crate) blocks: usize,
    /// W1, 1 thread, the engine whose counters record nothing (median over blocks).
    pub(crate) plain_batch_ns: f64,
    /// W1, 1 thread, with the recorder (median over blocks).
    pub(crate) batch_ns: f64,
    /// Median over blocks of the recorded minus the no-op batch figure, and its range.
    pub(crate) cost_ns: f64,
    pub(crate) cost_min_ns: f64,
    pub(crate) cost_max_ns: f64,
    /// Decisions per second with the recorder, 1 and 2 threads (medians over blocks).
    pub(crate) ops_1: f64,
    pub(crate) ops_2: f64,
    /// Median over blocks of 2-thread / 1-thread throughput, and its range.
    pub(crate) scaling: f64,
    pub(crate) scaling_min: f64,
    pub(crate) scaling_max: f64,
    /// The sum of `elvon_decisions_total` the recorder rendered at the end, and the
    /// decisions the recorded engine made: counters must not lose increments.
    pub(crate) counted: u64,
    pub(crate) decided: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn range(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// Installs the recorder, then runs `blocks` (at least 5, odd) alternating blocks of
/// `measure(engine, threads)`, which returns (batch ns, decisions/s, decisions made) for W1
/// on `engine` (loaded with `config`).
pub(crate) fn run(
    runs: usize,
    measure: impl Fn(&Engine, usize) -> (f64, f64, u64),
    config: &str,
) -> RecorderFigures {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("no other recorder is installed in the harness");
    let plain = Engine::default();
    metrics::with_local_recorder(&metrics::NoopRecorder, || {
        plain.load_config_json(config).expect("W1 config is valid")
    });
    let recorded = Engine::default();
    recorded
        .load_config_json(config)
        .expect("W1 config is valid");
    let blocks = (runs.max(5) * 2 + 1).min(11);
    let (mut plain_b, mut rec_b, mut ops_1, mut ops_2, mut cost, mut scaling) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut decided = 0;
    for _ in 0..blocks {
        let (p, _, _) = measure(&plain, 1);
        let (b1, o1, n1) = measure(&recorded, 1);
        let (_, o2, n2) = measure(&recorded, 2);
        decided += n1 + n2;
        plain_b.push(p);
        rec_b.push(b1);
        cost.push(b1 - p);
        ops_1.push(o1);
        ops_2.push(o2);
        scaling.push(o2 / o1);
    }
    drop(recorded);
    // Elvon's own `/metrics` publishes first; a bare Prometheus handle does not.
    elvon::metrics::publish();
    let counted = handle
        .render()
        .lines()
        .filter(|l| l.starts_with("elvon_decisions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64;
    let (cost_min_ns, cost_max_ns) = range(&cost);
    let (scaling_min, scaling_max) = range(&scaling);
    RecorderFigures {
        blocks,
        plain_batch_ns: median(plain_b),
        batch_ns: median(rec_b),
        cost_ns: median(cost),
        cost_min_ns,
        cost_max_ns,
        ops_1: median(ops_1),
        ops_2: median(ops_2),
        scaling: median(scaling),
        scaling_min,
        scaling_max,
        counted,
        decided,
    }
}
