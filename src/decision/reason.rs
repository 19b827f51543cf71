//! Why a decision came out as it did: reasons and fallback causes, resolved from the
//! snapshot.

use crate::kinds::{FallbackKind, ReasonKind};
use crate::snapshot::{Action, RawCause, RawReason, Snapshot, Variant};

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
    /// [`Decision::probabilities`](super::Decision::probabilities) and [`Decision::model_version`](super::Decision::model_version).
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
    /// The slot is `sticky` and the unit's stored assignment was served: the variant an
    /// earlier split or rollout gave it, with that assignment's propensity (see the
    /// [config format](crate::docs::config_format#sticky-assignment)).
    Sticky {
        /// The bucket version the assignment was made under.
        version: u32,
    },
}

impl Reason<'_> {
    /// The reason's kind (`split`, `default`, …), as used in metrics and decision logs.
    #[must_use]
    pub fn kind(&self) -> ReasonKind {
        match self {
            Reason::Serve(_) => ReasonKind::Rule,
            Reason::Split { .. } => ReasonKind::Split,
            Reason::Rollout { .. } => ReasonKind::Rollout,
            Reason::Score(_) => ReasonKind::Score,
            Reason::Holdout { .. } => ReasonKind::Holdout,
            Reason::NotInLayer { .. } => ReasonKind::NotInLayer,
            Reason::Default => ReasonKind::Default,
            Reason::KillSwitch => ReasonKind::KillSwitch,
            Reason::UnknownSlot => ReasonKind::UnknownSlot,
            Reason::Fallback(_) => ReasonKind::Fallback,
            Reason::Bandit(_) => ReasonKind::Bandit,
            Reason::Sticky { .. } => ReasonKind::Sticky,
        }
    }
}

impl FallbackCause<'_> {
    /// The cause's kind, without its details; its [`as_str`](FallbackKind::as_str) name is
    /// what metrics and decision logs use.
    #[must_use]
    pub fn kind(&self) -> FallbackKind {
        match self {
            FallbackCause::FeatureMissing { .. } => FallbackKind::FeatureMissing,
            FallbackCause::FeatureType { .. } => FallbackKind::FeatureType,
            FallbackCause::SourceTimeout => FallbackKind::SourceTimeout,
            FallbackCause::SourceError => FallbackKind::SourceError,
            FallbackCause::SourceUnavailable => FallbackKind::SourceUnavailable,
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
            RawReason::Sticky { version } => Reason::Sticky { version },
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
    ) -> Option<&crate::policy::model::BanditSpec> {
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
