//! Metric names and pre-registered handles.
//!
//! Everything goes through the [`metrics`] facade, so nothing is recorded unless the
//! application installs a recorder. Per-slot counters are registered when a config is
//! compiled; `decide` adds into a per-thread cell, and [`publish`] (every second, and before
//! elvon's `GET /metrics` renders) adds the sums to the handles, so the per-slot counters
//! trail the decisions by at most a second unless [`publish`] is called first. Install the
//! recorder before loading a config: handles registered earlier stay no-ops until the next
//! config load.
//!
//! The one list of elvon's metrics:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `elvon_decisions_total` | counter | `slot`, `reason` (see [`Reason::kind`](crate::Reason::kind)) |
//! | `elvon_fallbacks_total` | counter | `slot`, `cause` (`feature_missing`, `feature_type`, `source_timeout`, `source_error`, `source_unavailable`) |
//! | `elvon_rewards_total` | counter | `outcome` (`applied`, `unknown`, `rejected`, `defaulted`, `expired`, the last also for decisions the decide path found expired, reported at the next reward or refresh; evictions are in `Engine::reward_stats`) |
//! | `elvon_model_refreshes_total` | counter | |
//! | `elvon_config_swaps_total` | counter | |
//! | `elvon_config_rejections_total` | counter | |
//! | `elvon_shadow_decisions_total` | counter | `outcome` (`agree`, `disagree`: sampled decisions of a shadow evaluation, see `Engine::shadow`) |
//! | `elvon_config_rollbacks_total` | counter | (`Engine::rollback` swapped a kept snapshot back in) |
//! | `elvon_sticky_decisions_total` | counter | `outcome` (decisions of sticky slots: `served` a stored assignment, `assigned` and queued a new one, `live` neither, `unread` the store could not be read) |
//! | `elvon_sticky_discarded_total` | counter | (stored assignments that did not hold: another bucket version or `by` value, a removed variant, an unreadable value) |
//! | `elvon_sticky_writes_total` | counter | `outcome` (`written`, `dropped` (queue full), `failed` (the store refused or failed)) |
//! | `elvon_feature_fetch_seconds` | histogram | `outcome` (`ok`, `timeout`, `error`, `data_error`, `unavailable`) |
//! | `elvon_sink_records_total` | counter | `sink`, `outcome` (`offered`, `written`, `dropped`, `failed`; a `DedupeSink` counts `offered` and `deduped` under `sink="dedupe"`, a `SampleSink` `offered` and `sampled_out` under `sink="sample"`) |
//! | `elvon_sink_queue_depth` | gauge | `sink` (records the writer took in its last batch, a lower bound of the queue depth; the memory sink's record count) |
//! | `elvon_redis_breaker_state` | gauge | (0 closed, 1 open, 2 probing; feature `redis`) |
//! | `elvon_redis_breaker_opened_total` | counter | (feature `redis`) |
//! | `elvon_feature_cache_total` | counter | `result` (`hit`, `miss`; the Redis source's cache) |
//! | `elvon_kafka_producer_restarts_total` | counter | (feature `kafka`: the decision-log producer was recreated after a fatal error) |
//! | `elvon_updater_events_total` | counter | `outcome` (`applied`, `dead_letter`, `reward`, `reward_not_applied`, `reward_foreign`; feature `kafka`) |
//! | `elvon_updater_errors_total` | counter | `kind` (`poll`, `apply`, `rejected`, `dead_letter`; feature `kafka`) |
//! | `elvon_updater_lag` | gauge | (messages behind the end of the assigned partitions; feature `kafka`) |
//! | `elvon_config_watch_errors_total` | counter | (errors reading a watched config file, the Kafka config topic or the PostgreSQL config store) |
//! | `elvon_fleet_merged_total` | counter | (learner-topic entries merged; feature `kafka`, `FleetSync`) |
//! | `elvon_fleet_rejected_total` | counter | (arm increments a merge left out because they did not fit; feature `kafka`) |
//! | `elvon_fleet_errors_total` | counter | (errors reaching the cluster, retried; feature `kafka`) |

mod counts;

use metrics::{counter, Counter};

pub(crate) use counts::Counts;

/// Adds the decision counts every deciding thread made since the last publish to the
/// `elvon_decisions_total` and `elvon_fallbacks_total` counters of the installed recorder.
///
/// Decide counts into per-thread cells (a plain add, so threads do not contend on shared
/// counters) and these sums reach the recorder in batches: every second on the
/// `elvon-metrics` thread, whenever a swapped-out config is freed, before elvon's own
/// `GET /metrics` renders, and whenever this is called. Call it right before rendering
/// another exporter's output to read counts that are exact up to that moment; it covers
/// every engine in the process (the recorder is process-wide too).
pub fn publish() {
    counts::publish_all();
}

pub(crate) fn config_swapped() {
    counter!("elvon_config_swaps_total").increment(1);
}

pub(crate) fn config_rolled_back() {
    counter!("elvon_config_rollbacks_total").increment(1);
}

pub(crate) fn config_rejected() {
    counter!("elvon_config_rejections_total").increment(1);
}

pub(crate) fn feature_fetch(seconds: f64, outcome: &'static str) {
    metrics::histogram!("elvon_feature_fetch_seconds", "outcome" => outcome).record(seconds);
}

/// Counter handles of one sink.
#[derive(Debug, Clone)]
pub(crate) struct SinkMetrics {
    pub(crate) offered: Counter,
    pub(crate) written: Counter,
    pub(crate) dropped: Counter,
    pub(crate) failed: Counter,
    pub(crate) depth: metrics::Gauge,
}

impl SinkMetrics {
    pub(crate) fn register(sink: &'static str) -> Self {
        let c = |outcome: &'static str| counter!("elvon_sink_records_total", "sink" => sink, "outcome" => outcome);
        SinkMetrics {
            offered: c("offered"),
            written: c("written"),
            dropped: c("dropped"),
            failed: c("failed"),
            depth: metrics::gauge!("elvon_sink_queue_depth", "sink" => sink),
        }
    }
}

pub(crate) fn reward(outcome: &'static str) {
    rewards(outcome, 1);
}

pub(crate) fn rewards(outcome: &'static str, n: u64) {
    counter!("elvon_rewards_total", "outcome" => outcome).increment(n);
}

pub(crate) fn model_refreshed() {
    counter!("elvon_model_refreshes_total").increment(1);
}
