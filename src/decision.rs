//! What `decide` returns: [`Decision`], [`Reason`], [`DecisionId`].

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::Guard;
use bytes::Bytes;

use crate::snapshot::{Action, Outcome, RawCause, RawReason, Snapshot, Variant};

/// A unique id for one decision, used to join rewards and outcomes later.
///
/// 128 bits: a random per-engine prefix (high 64) and a sequence number (low 64) handed out in
/// per-thread blocks, so generating one touches no shared cache line. Bandit decisions number
/// from a sequence of their own, marked by the top bit of the low half. Formatted as 32
/// lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DecisionId(u128);

impl DecisionId {
    /// The raw 128-bit value.
    #[must_use]
    pub const fn as_u128(self) -> u128 {
        self.0
    }

    /// Builds an id from its raw value.
    #[must_use]
    pub const fn from_u128(v: u128) -> Self {
        DecisionId(v)
    }
}

impl fmt::Display for DecisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for DecisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DecisionId({self})")
    }
}

/// A string that is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid decision id {0:?}: expected 32 hex digits")]
pub struct ParseDecisionIdError(String);

impl FromStr for DecisionId {
    type Err = ParseDecisionIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseDecisionIdError(s.to_owned()));
        }
        u128::from_str_radix(s, 16)
            .map(DecisionId)
            .map_err(|_| ParseDecisionIdError(s.to_owned()))
    }
}

impl serde::Serialize for DecisionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DecisionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

const BLOCK: u64 = 1 << 16;

/// Set in the sequence half of a bandit decision's id: bandit decisions number from a
/// sequence of their own, so the pending-reward store can index them directly.
pub(crate) const BANDIT_SEQ: u64 = 1 << 63;

type LocalSeq = std::thread::LocalKey<Cell<(u64, u64, u64)>>;

thread_local! {
    /// `(engine, next, end)`: this thread's current block of an engine's sequence.
    static LOCAL_SEQ: Cell<(u64, u64, u64)> = const { Cell::new((0, 0, 0)) };
    /// The same for the engine's bandit sequence.
    static LOCAL_BANDIT_SEQ: Cell<(u64, u64, u64)> = const { Cell::new((0, 0, 0)) };
}

/// The next number of a sequence handed out in per-thread blocks of `block` from `blocks`.
#[inline]
fn take_seq(local: &'static LocalSeq, engine: u64, blocks: &AtomicU64, block: u64) -> u64 {
    local.with(|c| {
        let (mut owner, mut n, mut end) = c.get();
        if owner != engine || n == end {
            owner = engine;
            n = blocks.fetch_add(block, Ordering::Relaxed);
            end = n + block;
        }
        c.set((owner, n + 1, end));
        n
    })
}

/// The next number of an engine's bandit sequence (see [`BANDIT_SEQ`]).
#[inline]
pub(crate) fn next_bandit_seq(engine: u64, blocks: &AtomicU64, block: u64) -> u64 {
    take_seq(&LOCAL_BANDIT_SEQ, engine, blocks, block)
}

/// A process-unique engine serial number (starting at 1).
pub(crate) fn engine_serial() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub(crate) fn random_prefix() -> u64 {
    // RandomState is seeded from the OS once per process; mix in time, pid and a counter.
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish()
}

/// The next id of an engine: `prefix` and a sequence number from `blocks` (the engine's
/// block counter), handed out in per-thread blocks so no shared line is written per call.
/// `engine` is the engine's serial number (never 0, never reused). Each engine numbers from
/// 0, so an engine with a fixed prefix produces the same ids in the
/// same order on one thread.
#[inline]
pub(crate) fn next_id(prefix: u64, engine: u64, blocks: &AtomicU64) -> DecisionId {
    let seq = take_seq(&LOCAL_SEQ, engine, blocks, BLOCK);
    DecisionId((u128::from(prefix) << 64) | u128::from(seq))
}

/// Where the features of a decision came from.
///
/// Its number (`status as u8`, and [`TryFrom<u8>`]) and [`as_str`](FeatureStatus::as_str)
/// name are stable: decision records carry the name.
///
/// ```
/// use elvon::FeatureStatus;
///
/// let s = FeatureStatus::NotFetched;
/// assert_eq!((s as u8, s.as_str()), (5, "not_fetched"));
/// assert_eq!(FeatureStatus::try_from(5), Ok(s));
/// assert!(FeatureStatus::try_from(6).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum FeatureStatus {
    /// The caller passed them (`decide`).
    Provided = 0,
    /// The feature source answered in time (`decide_for`).
    Fetched = 1,
    /// The source missed the deadline; the decision was made without features.
    TimedOut = 2,
    /// The source failed; the decision was made without features.
    Failed = 3,
    /// The source refused to try (its circuit breaker is open after repeated failures); the
    /// decision was made without features and without waiting.
    Unavailable = 4,
    /// Nothing was fetched (`decide_for`): the slot reads no features, or the engine has no
    /// source. The decision was made on no features.
    NotFetched = 5,
}

impl FeatureStatus {
    /// The status's name in decision records: `provided`, `fetched`, `timed_out`, `failed`,
    /// `unavailable`, `not_fetched`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            FeatureStatus::Provided => "provided",
            FeatureStatus::Fetched => "fetched",
            FeatureStatus::TimedOut => "timed_out",
            FeatureStatus::Failed => "failed",
            FeatureStatus::Unavailable => "unavailable",
            FeatureStatus::NotFetched => "not_fetched",
        }
    }
}

impl TryFrom<u8> for FeatureStatus {
    type Error = UnknownCodeError;

    fn try_from(n: u8) -> Result<Self, Self::Error> {
        Ok(match n {
            0 => FeatureStatus::Provided,
            1 => FeatureStatus::Fetched,
            2 => FeatureStatus::TimedOut,
            3 => FeatureStatus::Failed,
            4 => FeatureStatus::Unavailable,
            5 => FeatureStatus::NotFetched,
            _ => return Err(UnknownCodeError(n)),
        })
    }
}

/// A number that names no [`FeatureStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown code {0}")]
pub struct UnknownCodeError(pub u8);

/// A rule of a slot, as reasons name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuleRef<'a> {
    /// Position in the slot's `rules` array in the config.
    pub index: usize,
    /// The rule's `id`, when the config gives one.
    pub id: Option<&'a str>,
}

/// Why a default was served although the slot has rules for this user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FallbackCause<'a> {
    /// A feature a rule needed was absent.
    FeatureMissing {
        /// The feature's name.
        feature: &'a str,
    },
    /// A feature had a type the operator cannot use (e.g. a string for `gt`).
    FeatureType {
        /// The feature's name.
        feature: &'a str,
    },
    /// The feature source missed its deadline.
    SourceTimeout,
    /// The feature source failed.
    SourceError,
    /// The feature source refused to try: its circuit breaker is open after repeated
    /// failures, so the decision did not wait for it.
    SourceUnavailable,
}

/// Which part of the config decided. Outcomes, not errors: every one comes with a variant
/// (except [`Reason::UnknownSlot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason<'a> {
    /// A `serve` rule matched.
    Serve(RuleRef<'a>),
    /// A weighted split assigned the variant; `bucket` is the unit's bucket (0..10 000).
    Split {
        /// The rule.
        rule: RuleRef<'a>,
        /// The bucketing unit's bucket.
        bucket: u32,
    },
    /// The unit was inside a percentage rollout.
    Rollout {
        /// The rule.
        rule: RuleRef<'a>,
        /// The bucketing unit's bucket.
        bucket: u32,
    },
    /// A linear score picked the variant (argmax, first wins ties).
    Score(RuleRef<'a>),
    /// A bandit rule drew the variant from its policy's probabilities; see
    /// [`Decision::probabilities`] and [`Decision::model_version`].
    Bandit(RuleRef<'a>),
    /// The user is in a holdout: the global one (`layer: None`) or a layer's.
    Holdout {
        /// The layer whose holdout it is, if not the global one.
        layer: Option<&'a str>,
    },
    /// The slot belongs to a layer and the user's layer bucket is outside the slot's range.
    NotInLayer {
        /// The layer.
        layer: &'a str,
    },
    /// No rule matched; the slot's default was served.
    Default,
    /// The slot's kill switch is on; the default was served.
    KillSwitch,
    /// The slot does not exist in the current config; there is no variant.
    UnknownSlot,
    /// No rule decided and inputs were degraded; the default was served.
    Fallback(FallbackCause<'a>),
}

impl Reason<'_> {
    /// A short stable name (`"split"`, `"default"`, …), as used in metrics and decision logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        crate::metrics::REASON_KINDS[self.kind_index()]
    }

    pub(crate) fn kind_index(&self) -> usize {
        match self {
            Reason::Serve(_) => 0,
            Reason::Split { .. } => 1,
            Reason::Rollout { .. } => 2,
            Reason::Score(_) => 3,
            Reason::Holdout { .. } => 4,
            Reason::NotInLayer { .. } => 5,
            Reason::Default => 6,
            Reason::KillSwitch => 7,
            Reason::UnknownSlot => 8,
            Reason::Fallback(_) => 9,
            Reason::Bandit(_) => 10,
        }
    }
}

impl FallbackCause<'_> {
    /// A short stable name, as used in metrics and decision logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        crate::metrics::FALLBACK_CAUSES[self.kind_index()]
    }

    pub(crate) fn kind_index(&self) -> usize {
        match self {
            FallbackCause::FeatureMissing { .. } => 0,
            FallbackCause::FeatureType { .. } => 1,
            FallbackCause::SourceTimeout => 2,
            FallbackCause::SourceError => 3,
            FallbackCause::SourceUnavailable => 4,
        }
    }
}

impl Snapshot {
    /// Names an index-based reason.
    pub(crate) fn resolve_reason(&self, slot: u32, raw: RawReason) -> Reason<'_> {
        let slot = self.slots.get(slot as usize);
        let feature = |f: u32| self.feature_names.get(f as usize).map_or("", |s| &**s);
        let layer = |l: u32| self.layers.get(l as usize).map_or("", |l| &*l.id);
        match raw {
            RawReason::Rule { rule, bucket } => {
                let Some(rule) = slot.and_then(|s| s.rules.get(rule as usize)) else {
                    return Reason::Default;
                };
                let r = RuleRef {
                    index: usize::from(rule.index),
                    id: rule.id.as_deref(),
                };
                match rule.action {
                    Action::Serve(_) => Reason::Serve(r),
                    Action::Split { .. } => Reason::Split { rule: r, bucket },
                    Action::Rollout { .. } => Reason::Rollout { rule: r, bucket },
                    Action::Score { .. } => Reason::Score(r),
                    Action::Bandit(_) => Reason::Bandit(r),
                }
            }
            RawReason::Holdout { layer: l } => Reason::Holdout {
                layer: l.map(layer),
            },
            RawReason::NotInLayer { layer: l } => Reason::NotInLayer { layer: layer(l) },
            RawReason::Default => Reason::Default,
            RawReason::KillSwitch => Reason::KillSwitch,
            RawReason::UnknownSlot => Reason::UnknownSlot,
            RawReason::Fallback(c) => Reason::Fallback(match c {
                RawCause::Missing(f) => FallbackCause::FeatureMissing {
                    feature: feature(f),
                },
                RawCause::WrongType(f) => FallbackCause::FeatureType {
                    feature: feature(f),
                },
                RawCause::SourceTimeout => FallbackCause::SourceTimeout,
                RawCause::SourceError => FallbackCause::SourceError,
                RawCause::SourceUnavailable => FallbackCause::SourceUnavailable,
            }),
        }
    }

    /// The bandit rule that decided, if one did.
    pub(crate) fn bandit_spec(
        &self,
        slot: u32,
        raw: RawReason,
    ) -> Option<&crate::learn::model::BanditSpec> {
        let RawReason::Rule { rule, .. } = raw else {
            return None;
        };
        match &self
            .slots
            .get(slot as usize)?
            .rules
            .get(rule as usize)?
            .action
        {
            Action::Bandit(spec) => Some(spec),
            _ => None,
        }
    }

    /// `variant` of `slot`, if both exist (`NO_VARIANT` never does).
    pub(crate) fn variant(&self, slot: u32, variant: u32) -> Option<&Variant> {
        self.slots
            .get(slot as usize)?
            .variants
            .get(variant as usize)
    }
}

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

    /// Why this variant was chosen.
    #[must_use]
    pub fn reason(&self) -> Reason<'_> {
        self.snap.resolve_reason(self.slot, self.outcome.reason)
    }

    /// Probability that this variant was chosen along the path taken, treating hash buckets
    /// as uniform randomization: the arm's share for a split, the percentage for a rollout,
    /// times `1 − p` for every rollout the unit fell through; 1.0 for deterministic outcomes.
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

    pub(crate) fn bandit_spec(&self) -> Option<&crate::learn::model::BanditSpec> {
        self.snap.bandit_spec(self.slot, self.outcome.reason)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_round_trip() {
        let p = random_prefix();
        let blocks = AtomicU64::new(0);
        let a = next_id(p, 99, &blocks);
        let b = next_id(p, 99, &blocks);
        assert_ne!(a, b);
        let s = a.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(s.parse::<DecisionId>().unwrap(), a);
        assert!("xyz".parse::<DecisionId>().is_err());
        let t = std::thread::scope(|s| s.spawn(|| next_id(p, 99, &blocks)).join().unwrap());
        assert_ne!(t, a);
        assert_ne!(t, b);
    }
}
