//! What a stage in front of a sink counts ([`DedupeSink`](super::DedupeSink),
//! [`SampleSink`](super::SampleSink)): records offered to it, and records it held back.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::Counter;

use super::SinkStats;

/// Offered and held-back counts of one stage, mirrored to
/// `elvon_sink_records_total{sink, outcome}`.
pub(super) struct StageCounts {
    offered: AtomicU64,
    held: AtomicU64,
    metric_offered: Counter,
    metric_held: Counter,
}

impl StageCounts {
    /// Counts for stage `sink`, whose held-back records are counted as `held`.
    pub(super) fn new(sink: &'static str, held: &'static str) -> Self {
        let c = |outcome: &'static str| metrics::counter!("elvon_sink_records_total", "sink" => sink, "outcome" => outcome);
        StageCounts {
            offered: AtomicU64::new(0),
            held: AtomicU64::new(0),
            metric_offered: c("offered"),
            metric_held: c(held),
        }
    }

    pub(super) fn offer(&self) {
        self.offered.fetch_add(1, Ordering::Relaxed);
        self.metric_offered.increment(1);
    }

    pub(super) fn hold(&self) {
        self.held.fetch_add(1, Ordering::Relaxed);
        self.metric_held.increment(1);
    }

    pub(super) fn offered(&self) -> u64 {
        self.offered.load(Ordering::Acquire)
    }

    pub(super) fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// The stats of the sink behind the stage (`inner`, read by the caller after
    /// [`held`](Self::held), as `Counters::stats` reads outcomes before `offered`, so the sum
    /// never exceeds `offered`), with this stage's `offered` and its held-back records added
    /// to the field `field` picks (stages in front of stages add up).
    pub(super) fn over(
        &self,
        held: u64,
        mut inner: SinkStats,
        field: fn(&mut SinkStats) -> &mut u64,
    ) -> SinkStats {
        inner.offered = self.offered().max(inner.offered + held);
        *field(&mut inner) += held;
        inner
    }
}
