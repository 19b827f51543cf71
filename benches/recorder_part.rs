//! W1 with a Prometheus recorder installed (a module of the latency harness): what counting
//! decisions into a real `metrics` recorder costs, and whether a second thread still adds
//! throughput when every thread increments the same per-slot counters. Runs last: the
//! recorder is process-global, and the scenarios before it run without one.

use metrics_exporter_prometheus::PrometheusBuilder;
use serde::Serialize;

/// The recorder figures (medians over the harness's runs).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct RecorderFigures {
    /// W1, 1 thread, no recorder (the baseline row of the same harness run).
    pub(crate) plain_batch_ns: f64,
    /// W1, 1 thread, with the recorder.
    pub(crate) batch_ns: f64,
    /// `batch_ns - plain_batch_ns`.
    pub(crate) cost_ns: f64,
    /// Decisions per second with the recorder, 1 and 2 threads.
    pub(crate) ops_1: f64,
    pub(crate) ops_2: f64,
    /// `ops_2 / ops_1`.
    pub(crate) scaling: f64,
    /// The sum of `elvon_decisions_total` the recorder rendered at the end, and the
    /// decisions the runs made with it installed: counters must not lose increments.
    pub(crate) counted: u64,
    pub(crate) decided: u64,
}

/// Installs the recorder, then measures with `measure(threads)`, which loads W1 afresh (so
/// its per-slot handles register with the recorder) and returns (batch ns, decisions/s,
/// decisions made).
pub(crate) fn run(
    plain_batch_ns: f64,
    measure: impl Fn(usize) -> (f64, f64, u64),
) -> RecorderFigures {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("no other recorder is installed in the harness");
    let (batch_ns, ops_1, n1) = measure(1);
    let (_, ops_2, n2) = measure(2);
    let counted = handle
        .render()
        .lines()
        .filter(|l| l.starts_with("elvon_decisions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64;
    RecorderFigures {
        plain_batch_ns,
        batch_ns,
        cost_ns: batch_ns - plain_batch_ns,
        ops_1,
        ops_2,
        scaling: ops_2 / ops_1,
        counted,
        decided: n1 + n2,
    }
}
