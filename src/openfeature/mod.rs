//! An [OpenFeature](https://openfeature.dev) provider over an [`Engine`] (cargo feature
//! `openfeature`), for services that evaluate flags through the OpenFeature Rust SDK.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(async {
//! use open_feature::{EvaluationContext, OpenFeature};
//!
//! let engine = elvon::Engine::default();
//! engine
//!     .load_config_json(r#"{"version": "1", "slots": [{"id": "banner",
//!         "variants": [{"id": "on", "payload": true}], "default": "on"}]}"#)
//!     .expect("valid");
//! let provider = elvon::openfeature::ElvonProvider::new(engine);
//! OpenFeature::singleton_mut().await.set_provider(provider.clone()).await;
//! let client = OpenFeature::singleton().await.create_client();
//! let ctx = EvaluationContext::default().with_targeting_key("user-1");
//! let shown = client.get_bool_details("banner", Some(&ctx), None).await.expect("a bool");
//! assert!(shown.value);
//! // The reward for what was shown, by the decision id the evaluation carried:
//! let Some(open_feature::FlagMetadataValue::String(id)) = shown.flag_metadata.values.get("decisionId")
//! else { panic!("every evaluation has a decision id") };
//! let details = elvon::openfeature::TrackingEventDetails::for_decision(id.as_str()).value(1.0);
//! let outcome = provider.track("click", &ctx, &details).expect("a decision id");
//! assert_eq!(outcome, elvon::RewardOutcome::Unknown); // `banner` is not a bandit slot
//! # });
//! ```
//!
//! # Mapping
//!
//! - A flag is a slot; the context's `targetingKey` is the user (required:
//!   `TARGETING_KEY_MISSING` without it); its other fields are the features: booleans,
//!   integers, floats and strings as they are, a date-time as its Unix time in seconds, a
//!   structure holding a `Vec<String>` as a list; any other structure is `INVALID_CONTEXT`.
//!   A context with no fields besides the targeting key has its features fetched from the
//!   engine's [feature source](crate::EngineBuilder::source).
//! - The value is the chosen variant's payload; a variant without one has its id as a
//!   string value. Asking for a type the payload is not is `TYPE_MISMATCH` (an integer
//!   payload resolves as a float too; a float does not resolve as an integer); structures
//!   must be JSON objects.
//! - `variant` is the variant id; `reason` is
//!   [`ReasonKind::openfeature_reason`](crate::ReasonKind::openfeature_reason).
//! - `flag_metadata` holds `decisionId`, `propensity`, `version` (the config version, the
//!   key OpenTelemetry's `feature_flag.version` is read from), `configVersion` (the same,
//!   as OFREP names it), `elvonReason` and, for bandit decisions, `modelVersion`.
//! - An unknown slot is `FLAG_NOT_FOUND`. The provider is `Ready` once a config serves,
//!   `NotReady` before.
//!
//! The Rust SDK has no `track` yet; [`ElvonProvider::track`] has its shape and feeds
//! [`Engine::reward`].

mod convert;

use open_feature::provider::{
    FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails,
};
use open_feature::{
    EvaluationContext, EvaluationError, EvaluationErrorCode, EvaluationReason, EvaluationResult,
    FlagMetadata, StructValue,
};

use crate::engine::Engine;
use crate::{DecisionId, RewardOutcome, SnapshotHold};

/// An OpenFeature [`FeatureProvider`] deciding with an [`Engine`] (see the
/// [module docs](self)). Cheap to clone: clones share the engine.
#[derive(Debug, Clone)]
pub struct ElvonProvider {
    engine: Engine,
    metadata: ProviderMetadata,
}

impl ElvonProvider {
    /// A provider named `elvon` over `engine`.
    #[must_use]
    pub fn new(engine: Engine) -> Self {
        ElvonProvider {
            engine,
            metadata: ProviderMetadata::new("elvon"),
        }
    }

    /// The engine it decides with.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// OpenFeature's `track`, which the Rust SDK does not have yet: reports that the user
    /// did `event` after an evaluation, as a reward for that evaluation's decision.
    /// `details` names the decision (the `decisionId` of the evaluation's `flag_metadata`)
    /// and the value (default `1.0`: the event happened). `context` completes the
    /// OpenFeature shape; the decision id alone joins the reward (the user is not checked).
    ///
    /// # Errors
    /// [`TrackError`]: an empty event name, no decision id, or one that does not parse.
    pub fn track(
        &self,
        event: &str,
        context: &EvaluationContext,
        details: &TrackingEventDetails,
    ) -> Result<RewardOutcome, TrackError> {
        let _ = context;
        if event.is_empty() {
            return Err(TrackError::EmptyEventName);
        }
        let id = details
            .decision_id
            .as_deref()
            .ok_or(TrackError::NoDecisionId)?;
        let id: DecisionId = id
            .parse()
            .map_err(|_| TrackError::BadDecisionId(id.to_owned()))?;
        Ok(self.engine.reward(id, details.value.unwrap_or(1.0)))
    }

    /// Decides `key` for the context; an unknown slot or an unusable context is the error.
    async fn resolve<T>(
        &self,
        key: &str,
        ctx: &EvaluationContext,
        typed: impl FnOnce(Option<&str>, &str) -> Result<T, EvaluationError>,
    ) -> EvaluationResult<ResolutionDetails<T>> {
        if self.engine.snapshot().features_for(key).is_none() {
            return Err(error(
                EvaluationErrorCode::FlagNotFound,
                format!("flag {key:?} is not a slot of the serving config"),
            ));
        }
        let user = match ctx.targeting_key.as_deref() {
            Some(u) if !u.is_empty() => u,
            _ => {
                return Err(error(
                    EvaluationErrorCode::TargetingKeyMissing,
                    "the evaluation context has no targeting key (the user)",
                ))
            }
        };
        if ctx.custom_fields.is_empty() {
            let d = self.engine.decide_for_async(key, user).await;
            details(key, &d, typed)
        } else {
            let features = convert::features(ctx)?;
            let d = self.engine.decide(key, user, &features);
            details(key, &d, typed)
        }
    }
}

/// The details of OpenFeature's `track` ([`ElvonProvider::track`]).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct TrackingEventDetails {
    /// The event's value: the reward (default `1.0`).
    pub value: Option<f64>,
    /// The decision the event follows: the `decisionId` of the evaluation's metadata.
    pub decision_id: Option<String>,
}

impl TrackingEventDetails {
    /// Details naming the decision `decision_id` (as the evaluation's metadata gave it).
    #[must_use]
    pub fn for_decision(decision_id: impl Into<String>) -> Self {
        TrackingEventDetails {
            value: None,
            decision_id: Some(decision_id.into()),
        }
    }

    /// With the event's value (the reward).
    #[must_use]
    pub fn value(mut self, value: f64) -> Self {
        self.value = Some(value);
        self
    }
}

/// Why [`ElvonProvider::track`] sent no reward.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrackError {
    /// The event name is empty.
    #[error("the tracking event name is empty")]
    EmptyEventName,
    /// The details name no decision.
    #[error("the tracking details have no decision id (the evaluation's \"decisionId\")")]
    NoDecisionId,
    /// The decision id is not one elvon wrote (32 hex digits).
    #[error("{0:?} is not a decision id (32 hex digits)")]
    BadDecisionId(String),
}

fn error(code: EvaluationErrorCode, message: impl Into<String>) -> EvaluationError {
    EvaluationError {
        code,
        message: Some(message.into()),
    }
}

fn reason(r: crate::ReasonKind) -> EvaluationReason {
    match r.openfeature_reason() {
        "TARGETING_MATCH" => EvaluationReason::TargetingMatch,
        "SPLIT" => EvaluationReason::Split,
        "DISABLED" => EvaluationReason::Disabled,
        _ => EvaluationReason::Default,
    }
}

fn details<H: SnapshotHold, T>(
    key: &str,
    d: &crate::Decision<H>,
    typed: impl FnOnce(Option<&str>, &str) -> Result<T, EvaluationError>,
) -> EvaluationResult<ResolutionDetails<T>> {
    let variant = d.variant().unwrap_or_default();
    let value = typed(d.payload_json(), variant).map_err(|mut e| {
        let m = e.message.take().unwrap_or_default();
        e.message = Some(format!("flag {key:?}, variant {variant:?}: {m}"));
        e
    })?;
    let kind = d.reason().kind();
    let mut meta = FlagMetadata::default()
        .with_value("decisionId", d.id().to_string())
        .with_value("propensity", d.propensity())
        .with_value("version", d.config_version().to_owned())
        .with_value("configVersion", d.config_version().to_owned())
        .with_value("elvonReason", kind.as_str().to_owned());
    if let Some(v) = d.model_version() {
        meta = meta.with_value("modelVersion", i64::try_from(v).unwrap_or(i64::MAX));
    }
    Ok(ResolutionDetails {
        value,
        variant: Some(variant.to_owned()),
        reason: Some(reason(kind)),
        flag_metadata: Some(meta),
    })
}

#[open_feature::async_trait]
impl FeatureProvider for ElvonProvider {
    fn status(&self) -> ProviderStatus {
        if self.engine.config_version().is_empty() {
            ProviderStatus::NotReady
        } else {
            ProviderStatus::Ready
        }
    }

    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    async fn resolve_bool_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        self.resolve(key, ctx, convert::bool).await
    }

    async fn resolve_int_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        self.resolve(key, ctx, convert::int).await
    }

    async fn resolve_float_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        self.resolve(key, ctx, convert::float).await
    }

    async fn resolve_string_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        self.resolve(key, ctx, convert::string).await
    }

    async fn resolve_struct_value(
        &self,
        key: &str,
        ctx: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        self.resolve(key, ctx, convert::structure).await
    }
}
