//! [`SampleSink`]: keeps a share of decision records, per slot, chosen by decision id, and
//! writes the share into each kept record.

use super::stage::StageCounts;
use std::sync::Arc;
use std::time::Duration;

use super::{DecisionEvent, DecisionSink, FlushError, SinkStats, SinkStatsSource};
use crate::DecisionId;

/// The share of records each slot keeps.
#[derive(Debug, Clone)]
#[must_use]
pub struct SampleOptions {
    default: f64,
    slots: Vec<(Box<str>, f64)>,
}

impl SampleOptions {
    /// Every slot keeps `rate` of its records (0–1) unless [`slot`](Self::slot) says
    /// otherwise.
    pub fn new(rate: f64) -> Self {
        SampleOptions {
            default: rate,
            slots: Vec::new(),
        }
    }

    /// Slot `slot` keeps `rate` of its records (0–1).
    pub fn slot(mut self, slot: impl Into<Box<str>>, rate: f64) -> Self {
        let slot = slot.into();
        self.slots.retain(|(s, _)| *s != slot);
        self.slots.push((slot, rate));
        self
    }
}

/// A sample rate that is not a number from 0 to 1.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("sample rate of {what} must be from 0 to 1, got {rate}")]
pub struct SampleRateError {
    /// `the default` or `slot "…"`.
    pub what: String,
    /// The rate given.
    pub rate: f64,
}

/// Keeps each slot's share of records (by a hash of the decision id, so a replay of the
/// same decisions keeps the same records) and passes them on with
/// [`DecisionEvent::pass_probability`] multiplied by the share, which sinks write as the
/// record's `pass_probability`. Off-policy estimates weight each kept record by
/// `1 / pass_probability`, so a sampled log gives unbiased estimates
/// ([`ope::evaluate_records`](crate::ope::evaluate_records)). Records not kept are counted
/// (`sampled_out`, and `elvon_sink_records_total{sink="sample", outcome="sampled_out"}`).
///
/// ```
/// use elvon::sink::{MemorySink, SampleOptions, SampleSink};
/// let log = MemorySink::new(100_000);
/// let sink = SampleSink::new(log.clone(), SampleOptions::new(0.1)).unwrap();
/// let engine = elvon::Engine::builder().sink(sink.clone()).build();
/// engine.load_config_json(r#"{"version": "1", "slots": [{"id": "s",
///     "variants": [{"id": "a"}], "default": "a"}]}"#).unwrap();
/// for i in 0..10_000 {
///     let _ = engine.decide("s", &format!("u{i}"), &elvon::Features::new());
/// }
/// let kept = log.records();
/// assert!((800..1_200).contains(&kept.len()));
/// assert!(kept.iter().all(|r| r.pass_probability == 0.1));
/// ```
#[derive(Clone)]
pub struct SampleSink<S> {
    inner: S,
    state: Arc<State>,
}

struct State {
    /// (slot, rate, threshold), then the default's rate and threshold.
    slots: Vec<(Box<str>, f64, u64)>,
    default: (f64, u64),
    counts: StageCounts,
}

impl<S: std::fmt::Debug> std::fmt::Debug for SampleSink<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleSink")
            .field("inner", &self.inner)
            .field("default", &self.state.default.0)
            .finish_non_exhaustive()
    }
}

fn threshold(rate: f64) -> u64 {
    if rate >= 1.0 {
        u64::MAX
    } else {
        (rate * u64::MAX as f64) as u64
    }
}

/// Whether decision `id` is kept at `threshold` (rate 1 keeps every one).
fn kept(id: DecisionId, rate: f64, threshold: u64) -> bool {
    rate >= 1.0
        || xxhash_rust::xxh3::xxh3_64_with_seed(&id.as_u128().to_le_bytes(), 0x5a_3e) < threshold
}

impl<S> SampleSink<S> {
    /// A sampling stage in front of `inner`.
    ///
    /// # Errors
    /// [`SampleRateError`] for a rate that is not a number from 0 to 1.
    pub fn new(inner: S, options: SampleOptions) -> Result<Self, SampleRateError> {
        let check = |what: String, rate: f64| {
            if (0.0..=1.0).contains(&rate) {
                Ok(())
            } else {
                Err(SampleRateError { what, rate })
            }
        };
        check("the default".into(), options.default)?;
        for (slot, rate) in &options.slots {
            check(format!("slot {slot:?}"), *rate)?;
        }
        Ok(SampleSink {
            inner,
            state: Arc::new(State {
                slots: options
                    .slots
                    .into_iter()
                    .map(|(s, r)| (s, r, threshold(r)))
                    .collect(),
                default: (options.default, threshold(options.default)),
                counts: StageCounts::new("sample", "sampled_out"),
            }),
        })
    }

    /// The sink behind the stage.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Records offered to the stage.
    #[must_use]
    pub fn offered(&self) -> u64 {
        self.state.counts.offered()
    }

    /// Records the stage did not keep.
    #[must_use]
    pub fn sampled_out(&self) -> u64 {
        self.state.counts.held()
    }
}

impl<S: SinkStatsSource> SinkStatsSource for SampleSink<S> {
    /// The stage's counters over the sink behind it: `offered == written + dropped +
    /// failed + deduped + sampled_out + pending`.
    fn stats(&self) -> SinkStats {
        let sampled_out = self.sampled_out();
        let inner = self.inner.stats();
        self.state
            .counts
            .over(sampled_out, inner, |s| &mut s.sampled_out)
    }
}

impl<S: DecisionSink> DecisionSink for SampleSink<S> {
    fn record(&self, event: &DecisionEvent<'_>) {
        let st = &self.state;
        st.counts.offer();
        let (rate, threshold) = st
            .slots
            .iter()
            .find(|(s, _, _)| **s == *event.slot)
            .map_or(st.default, |(_, r, t)| (*r, *t));
        if !kept(event.decision.id(), rate, threshold) {
            st.counts.hold();
            return;
        }
        let kept_event = DecisionEvent {
            pass: event.pass * rate,
            ..*event
        };
        self.inner.record(&kept_event);
    }

    fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        self.inner.flush(timeout)
    }
}
