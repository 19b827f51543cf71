//! The versioned decision record.

use serde::{Deserialize, Serialize};

use super::DecisionEvent;
use crate::decision::{DecisionId, FallbackCause, Reason};
use crate::features::{Features, Text};

/// Schema version written in every record's `schema` field.
///
/// Readers must ignore fields they do not know; new optional fields do not change the
/// version, renamed or re-typed ones do.
pub const RECORD_SCHEMA: u32 = 1;

/// One logged decision: self-describing and versioned, one JSON object per line in the
/// JSON-lines sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DecisionRecord {
    /// Record schema version ([`RECORD_SCHEMA`]).
    pub schema: u32,
    /// The decision id (32 hex digits), for joining rewards.
    pub id: DecisionId,
    /// When the decision was recorded, unix milliseconds. The JSON-lines and Kafka sinks read
    /// the kernel's coarse clock (on Linux up to one timer tick, typically 1–4 ms, behind);
    /// [`DecisionRecord::from_event`] reads the precise one.
    pub timestamp_ms: u64,
    /// The slot as requested.
    pub slot: String,
    /// The user.
    pub user: String,
    /// The chosen variant (`null` for an unknown slot).
    pub variant: Option<String>,
    /// Why.
    pub reason: RecordReason,
    /// Probability of the chosen variant (1.0 for deterministic outcomes).
    pub propensity: f64,
    /// Full probability vector for randomized policies (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probabilities: Option<Vec<ArmProbability>>,
    /// The features the slot reads, as they were at decision time.
    pub features: Features,
    /// `provided`, `fetched`, `timed_out`, `failed`, `unavailable` or `not_fetched` (see
    /// [`FeatureStatus::as_str`](crate::FeatureStatus::as_str)).
    pub feature_status: String,
    /// The config version that decided.
    pub config_version: String,
    /// The model version, for bandit decisions (absent otherwise); see
    /// [`Decision::model_version`](crate::Decision::model_version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<u64>,
    /// The probability this record was kept when the log is sampled
    /// ([`SampleSink`](super::SampleSink)); 1 (and absent from the JSON) for an unsampled
    /// log. A kept record stands for `1 / pass_probability` decisions: off-policy estimates
    /// weight it so ([`ope::evaluate_records`](crate::ope::evaluate_records) does).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub pass_probability: f64,
}

fn one() -> f64 {
    1.0
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
fn is_one(p: &f64) -> bool {
    *p == 1.0
}

/// The probability a randomized policy gave one arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ArmProbability {
    /// The variant id.
    pub variant: String,
    /// Its probability.
    pub probability: f64,
}

impl ArmProbability {
    pub(crate) fn new(variant: &str, probability: f64) -> Self {
        ArmProbability {
            variant: variant.to_owned(),
            probability,
        }
    }
}

/// A [`Reason`] in record form.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecordReason {
    /// [`Reason::kind`]: `rule`, `split`, `rollout`, `score`, `bandit`, `holdout`,
    /// `not_in_layer`, `default`, `kill_switch`, `unknown_slot`, `fallback`, `sticky`.
    pub kind: String,
    /// Index of the deciding rule in the slot's `rules`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_index: Option<usize>,
    /// Id of the deciding rule, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
    /// Bucket of the unit, for splits and rollouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<u32>,
    /// Layer, for layer holdouts and `not_in_layer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// [`FallbackCause::kind`], for fallbacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// The feature a fallback is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// The bucket version of a sticky assignment ([`Reason::Sticky`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_version: Option<u32>,
}

impl From<Reason<'_>> for RecordReason {
    fn from(r: Reason<'_>) -> Self {
        let mut out = RecordReason {
            kind: r.kind().as_str().to_owned(),
            ..RecordReason::default()
        };
        let mut rule = |rr: crate::RuleRef<'_>| {
            out.rule_index = Some(rr.index);
            out.rule_id = rr.id.map(str::to_owned);
        };
        match r {
            Reason::Serve(rr) | Reason::Score(rr) => rule(rr),
            Reason::Split { rule: rr, bucket } | Reason::Rollout { rule: rr, bucket } => {
                rule(rr);
                out.bucket = Some(bucket);
            }
            Reason::Holdout { layer } => out.layer = layer.map(str::to_owned),
            Reason::NotInLayer { layer } => out.layer = Some(layer.to_owned()),
            Reason::Sticky { version } => out.sticky_version = Some(version),
            Reason::Fallback(c) => {
                out.cause = Some(c.kind().as_str().to_owned());
                if let FallbackCause::FeatureMissing { feature }
                | FallbackCause::FeatureType { feature } = c
                {
                    out.feature = Some(feature.to_owned());
                }
            }
            _ => {}
        }
        out
    }
}

impl DecisionRecord {
    /// Builds the record of an event, stamped with its [time](DecisionEvent::timestamp_ms).
    #[must_use]
    pub fn from_event(event: &DecisionEvent<'_>) -> Self {
        let d = event.decision;
        let timestamp_ms = event.timestamp_ms();
        let mut features = Features::new();
        for (name, value) in event.features_used() {
            features.insert(Text::Owned(name.to_owned()), value.clone());
        }
        DecisionRecord {
            schema: RECORD_SCHEMA,
            id: d.id(),
            timestamp_ms,
            slot: event.slot.to_owned(),
            user: event.user.to_owned(),
            variant: d.variant().map(str::to_owned),
            reason: d.reason().into(),
            propensity: d.propensity(),
            probabilities: d.probabilities().map(|p| {
                p.map(|(v, probability)| ArmProbability {
                    variant: v.to_owned(),
                    probability,
                })
                .collect()
            }),
            features,
            feature_status: d.feature_status().as_str().to_owned(),
            config_version: d.config_version().to_owned(),
            model_version: d.model_version(),
            pass_probability: event.pass,
        }
    }
}
