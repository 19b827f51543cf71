//! What `decide` returns: [`Decision`], [`Reason`], [`DecisionId`].

use std::fmt;
use std::sync::Arc;

use arc_swap::Guard;
use bytes::Bytes;

use crate::snapshot::{Outcome, Snapshot};

mod id;
mod reason;
mod status;

pub(crate) use id::{engine_serial, next_bandit_seq, next_id, random_prefix, BANDIT_SEQ};
pub use id::{DecisionId, ParseDecisionIdError};
pub use reason::{FallbackCause, Reason, RuleRef};
pub use status::FeatureStatus;

mod sealed {
    pub trait Sealed {}
}

/// How a [`Decision`] holds the config snapshot it was made from: [`Guarded`] (the default,
/// from the synchronous calls) or [`Shared`] (an [`OwnedDecision`]). Sealed.
pub trait SnapshotHold: std::ops::Deref<Target = Snapshot> + sealed::Sealed {}

/// A lightweight guard on the snapshot (arc-swap's `Guard`): making a decision with it
/// writes to no shared memory, but arc-swap documents such guards as short-lived, not to be
/// stored or held across an `.await` (each thread has a few cheap slots; beyond them a guard
/// falls back to a reference count, and a held guard keeps its snapshot alive).
/// [`Decision::into_owned`] trades it for a [`Shared`] one.
pub struct Guarded(pub(crate) Guard<Arc<Snapshot>>);

/// A reference count on the snapshot: the decision is `'static` and `Clone`, for storing
/// and holding across `.await`s.
#[derive(Clone)]
pub struct Shared(pub(crate) Arc<Snapshot>);

impl std::ops::Deref for Guarded {
    type Target = Snapshot;
    fn deref(&self) -> &Snapshot {
        &self.0
    }
}

impl std::ops::Deref for Shared {
    type Target = Snapshot;
    fn deref(&self) -> &Snapshot {
        &self.0
    }
}

impl fmt::Debug for Guarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Guarded").field(&self.version()).finish()
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Shared").field(&self.version()).finish()
    }
}

impl sealed::Sealed for Guarded {}
impl sealed::Sealed for Shared {}
impl SnapshotHold for Guarded {}
impl SnapshotHold for Shared {}

/// A decision that owns a reference on its snapshot: `Send + Sync + 'static` and `Clone`, to
/// store, send to another thread or hold across an `.await`.
/// [`Engine::decide_for_async`](crate::Engine::decide_for_async) returns one; any
/// [`Decision`] becomes one with [`into_owned`](Decision::into_owned).
pub type OwnedDecision = Decision<Shared>;

/// The answer of [`Engine::decide`](crate::Engine::decide).
///
/// It holds a lightweight guard on the config snapshot it was made from ([`Guarded`]), so
/// its strings and payload are borrowed rather than copied and making one writes to no
/// shared memory. Keep such decisions short-lived: holding many of them on one thread makes
/// later ones fall back to a reference count, and each keeps its snapshot alive. To keep one
/// longer, send it to another thread or hold it across an `.await`, turn it into an
/// [`OwnedDecision`] with [`into_owned`](Decision::into_owned).
pub struct Decision<H: SnapshotHold = Guarded> {
    pub(crate) snap: H,
    pub(crate) slot: u32,
    pub(crate) outcome: Outcome,
    pub(crate) id: DecisionId,
    pub(crate) features: FeatureStatus,
}

impl Decision {
    /// The same decision holding a reference count on its snapshot instead of a guard (one
    /// atomic increment): `Send + Sync + 'static` and `Clone`.
    ///
    /// ```
    /// fn send<T: Send + 'static>(_: T) {}
    /// let engine = elvon::Engine::default();
    /// send(engine.decide("s", "u", &elvon::Features::new()).into_owned());
    /// ```
    #[must_use]
    pub fn into_owned(self) -> OwnedDecision {
        Decision {
            snap: Shared(Guard::into_inner(self.snap.0)),
            slot: self.slot,
            outcome: self.outcome,
            id: self.id,
            features: self.features,
        }
    }
}

impl Clone for OwnedDecision {
    fn clone(&self) -> Self {
        Decision {
            snap: self.snap.clone(),
            slot: self.slot,
            outcome: self.outcome.clone(),
            id: self.id,
            features: self.features,
        }
    }
}

impl<H: SnapshotHold> Decision<H> {
    /// The slot id, or `None` if the slot is unknown.
    #[must_use]
    pub fn slot(&self) -> Option<&str> {
        self.snap.slots.get(self.slot as usize).map(|s| &*s.id)
    }

    /// The chosen variant's id, or `None` for an unknown slot.
    #[inline]
    #[must_use]
    pub fn variant(&self) -> Option<&str> {
        let v = self.snap.variant(self.slot, self.outcome.variant)?;
        Some(&v.id)
    }

    /// The chosen variant's payload, or `None` for an unknown slot.
    #[inline]
    #[must_use]
    pub fn payload(&self) -> Option<&Bytes> {
        let v = self.snap.variant(self.slot, self.outcome.variant)?;
        Some(&v.payload)
    }

    /// The chosen variant's payload as the JSON the config gave (a string payload quoted),
    /// or `None` for an unknown slot or a variant without a payload: what the HTTP service
    /// and the OpenFeature provider return as the value.
    ///
    /// ```
    /// let e = elvon::Engine::default();
    /// e.load_config_json(r#"{"version": "1", "slots": [{"id": "s",
    ///     "variants": [{"id": "a", "payload": "blue"}], "default": "a"}]}"#).expect("valid");
    /// let d = e.decide("s", "u", &elvon::Features::new());
    /// assert_eq!(&d.payload().expect("known slot")[..], b"blue");
    /// assert_eq!(d.payload_json(), Some("\"blue\""));
    /// ```
    #[must_use]
    pub fn payload_json(&self) -> Option<&str> {
        self.payload_raw().map(serde_json::value::RawValue::get)
    }

    /// [`Decision::payload_json`] as a raw JSON value, to embed in an answer as it is.
    pub(crate) fn payload_raw(&self) -> Option<&serde_json::value::RawValue> {
        let v = self.snap.variant(self.slot, self.outcome.variant)?;
        v.payload_json.as_deref()
    }

    /// Why this variant was chosen.
    #[must_use]
    pub fn reason(&self) -> Reason<'_> {
        self.snap.resolve_reason(self.slot, self.outcome.reason)
    }

    /// Probability that this variant was chosen along the path taken, treating hash buckets
    /// as uniform randomization: the arm's share for a split, the percentage for a rollout,
    /// times `1 − p` for every rollout the unit fell through; 1.0 for deterministic outcomes;
    /// for [`Reason::Sticky`](crate::Reason::Sticky), the propensity of the stored assignment.
    #[inline]
    #[must_use]
    pub fn propensity(&self) -> f64 {
        self.outcome.propensity
    }

    /// For a bandit decision, the probability the policy gave each arm, as `(variant,
    /// probability)` in the rule's arm order (they sum to 1); `None` for other decisions,
    /// whose only outcome had probability [`propensity`](Self::propensity).
    #[must_use]
    pub fn probabilities(&self) -> Option<impl Iterator<Item = (&str, f64)> + '_> {
        let b = self.outcome.bandit.as_ref()?;
        let spec = self.bandit_spec()?;
        Some(
            spec.arms
                .iter()
                .zip(b.probs())
                .filter_map(move |(&v, &p)| Some((&*self.snap.variant(self.slot, v)?.id, p))),
        )
    }

    /// The raw probability vector of a bandit decision, in the rule's arm order.
    #[must_use]
    pub fn probability_vector(&self) -> Option<&[f64]> {
        self.outcome.bandit.as_ref().map(|b| b.probs())
    }

    /// For a bandit decision, the version of the model it used: 0 for the prior (nothing
    /// learned yet, or the model was being republished for a changed arm list), then one more
    /// per refresh. `None` for other decisions.
    #[must_use]
    pub fn model_version(&self) -> Option<u64> {
        self.outcome.bandit.as_ref().map(|b| b.model_version)
    }

    pub(crate) fn bandit_spec(&self) -> Option<&crate::policy::model::BanditSpec> {
        self.snap.bandit_spec(self.slot, self.outcome.reason)
    }

    /// The bandit rule that decided and its learner binding (`None` also on a snapshot no
    /// engine loaded).
    pub(crate) fn bandit_binding(
        &self,
    ) -> Option<(
        &crate::policy::model::BanditSpec,
        &crate::policy::model::Binding,
    )> {
        let spec = self.bandit_spec()?;
        Some((spec, self.snap.binding(spec)?))
    }

    /// The `version` of the config that made this decision.
    #[must_use]
    pub fn config_version(&self) -> &str {
        &self.snap.version
    }

    /// The decision's unique id.
    #[inline]
    #[must_use]
    pub fn id(&self) -> DecisionId {
        self.id
    }

    /// Where the features came from (provided, fetched, or a degraded fetch).
    #[must_use]
    pub fn feature_status(&self) -> FeatureStatus {
        self.features
    }

    /// The snapshot this decision was made from.
    #[must_use]
    pub fn snapshot(&self) -> &Snapshot {
        &self.snap
    }
}

impl<H: SnapshotHold> fmt::Debug for Decision<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decision")
            .field("id", &self.id)
            .field("slot", &self.slot())
            .field("variant", &self.variant())
            .field("reason", &self.reason())
            .field("propensity", &self.propensity())
            .field("config_version", &self.config_version())
            .field("features", &self.features)
            .finish()
    }
}
