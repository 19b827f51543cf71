//! Slot evaluation: kill switch → holdouts → layer → rules in order → default.

use super::condition::{Eval, Issue};
use super::trace::Trace;
use super::{Action, FeatureKey, Holdout, ScoreArm, Slot, Snapshot, Unit};
use crate::bucketing::{bucket_with_seed, int_bytes, BUCKETS};
use crate::features::{Features, Value};
use crate::kinds::{FallbackKind, ReasonKind};
use crate::policy::math;
use crate::policy::model::{BanditOutcome, Probs, MAX_ARMS, MAX_CONTEXT, PRIOR};

/// Marks "no variant" (unknown slot).
pub(crate) const NO_VARIANT: u32 = u32::MAX;
/// Marks "no bucket" in a rule reason.
pub(crate) const NO_BUCKET: u32 = u32::MAX;

/// Why a degraded decision fell back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawCause {
    Missing(u32),
    WrongType(u32),
    SourceTimeout,
    SourceError,
    SourceUnavailable,
}

/// Index-based reason, resolved to names by [`crate::Decision::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawReason {
    /// `rule` is the position in `Slot::rules`.
    Rule {
        rule: u16,
        bucket: u32,
    },
    Holdout {
        layer: Option<u32>,
    },
    NotInLayer {
        layer: u32,
    },
    Default,
    KillSwitch,
    UnknownSlot,
    Fallback(RawCause),
    /// A stored assignment of a sticky slot, made under bucket version `version`.
    Sticky {
        version: u32,
    },
}

impl RawCause {
    /// The kind, without resolving names; agrees with `FallbackCause::kind`.
    #[inline]
    pub(crate) fn kind(self) -> FallbackKind {
        match self {
            RawCause::Missing(_) => FallbackKind::FeatureMissing,
            RawCause::WrongType(_) => FallbackKind::FeatureType,
            RawCause::SourceTimeout => FallbackKind::SourceTimeout,
            RawCause::SourceError => FallbackKind::SourceError,
            RawCause::SourceUnavailable => FallbackKind::SourceUnavailable,
        }
    }

    /// The cause of kind `kind` with feature index `feature` (ignored by causes without a
    /// feature): the inverse of [`RawCause::kind`] and [`RawCause::feature`].
    pub(crate) fn from_kind(kind: FallbackKind, feature: u32) -> Self {
        match kind {
            FallbackKind::FeatureMissing => RawCause::Missing(feature),
            FallbackKind::FeatureType => RawCause::WrongType(feature),
            FallbackKind::SourceTimeout => RawCause::SourceTimeout,
            FallbackKind::SourceError => RawCause::SourceError,
            FallbackKind::SourceUnavailable => RawCause::SourceUnavailable,
        }
    }

    /// The interned feature index of a feature cause, 0 for the others.
    pub(crate) fn feature(self) -> u32 {
        match self {
            RawCause::Missing(f) | RawCause::WrongType(f) => f,
            _ => 0,
        }
    }
}

impl RawReason {
    /// The kind without resolving names (the decide path counts with it); agrees with
    /// `Reason::kind` of the resolved reason.
    #[inline]
    pub(crate) fn kind(self, slot: &Slot) -> ReasonKind {
        match self {
            RawReason::Rule { rule, .. } => {
                match slot.rules.get(rule as usize).map(|r| &r.action) {
                    Some(Action::Serve(_)) => ReasonKind::Rule,
                    Some(Action::Split { .. }) => ReasonKind::Split,
                    Some(Action::Rollout { .. }) => ReasonKind::Rollout,
                    Some(Action::Score { .. }) => ReasonKind::Score,
                    Some(Action::Bandit(_)) => ReasonKind::Bandit,
                    None => ReasonKind::Default,
                }
            }
            RawReason::Holdout { .. } => ReasonKind::Holdout,
            RawReason::NotInLayer { .. } => ReasonKind::NotInLayer,
            RawReason::Default => ReasonKind::Default,
            RawReason::KillSwitch => ReasonKind::KillSwitch,
            RawReason::UnknownSlot => ReasonKind::UnknownSlot,
            RawReason::Fallback(_) => ReasonKind::Fallback,
            RawReason::Sticky { .. } => ReasonKind::Sticky,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) variant: u32,
    pub(crate) reason: RawReason,
    pub(crate) propensity: f64,
    /// Set when a bandit rule decided.
    pub(crate) bandit: Option<BanditOutcome>,
}

impl Outcome {
    fn default_of(slot: &Slot, reason: RawReason, propensity: f64) -> Self {
        Outcome {
            variant: slot.default,
            reason,
            propensity,
            bandit: None,
        }
    }
}

/// Where a bandit rule gets the id of the decision it draws for: a replay gives the logged
/// id, the decide path takes one from the engine's bandit sequence.
pub(crate) trait BanditId {
    fn bandit_id(&mut self) -> u128;
}

impl BanditId for u128 {
    fn bandit_id(&mut self) -> u128 {
        *self
    }
}

#[inline]
pub(super) fn held_out(h: &Holdout, user: &str) -> bool {
    bucket_with_seed(h.seed, user.as_bytes()) < h.below
}

impl Snapshot {
    /// Evaluates slot `idx` for one user. `degraded` says the feature fetch failed; `id`
    /// gives the decision id a bandit draw is a function of (asked only by bandit rules).
    #[inline(always)]
    pub(crate) fn evaluate<T: Trace>(
        &self,
        idx: u32,
        user: &str,
        features: &Features,
        degraded: Option<RawCause>,
        id: &mut impl BanditId,
        mut trace: T,
    ) -> Outcome {
        let Some(slot) = self.slots.get(idx as usize) else {
            return Outcome {
                variant: NO_VARIANT,
                reason: RawReason::UnknownSlot,
                propensity: 1.0,
                bandit: None,
            };
        };
        if slot.killed {
            trace.note(|| "kill switch is on: serving the default".into());
            return Outcome::default_of(slot, RawReason::KillSwitch, 1.0);
        }
        if let Some(h) = &self.holdout {
            if held_out(h, user) {
                trace.note(|| "user is in the global holdout".into());
                return Outcome::default_of(slot, RawReason::Holdout { layer: None }, 1.0);
            }
        }
        if let Some(sl) = slot.layer {
            if let Some(layer) = self.layers.get(sl.layer as usize) {
                if layer.holdout.as_ref().is_some_and(|h| held_out(h, user)) {
                    trace.note(|| format!("user is in the holdout of layer {:?}", layer.id));
                    return Outcome::default_of(
                        slot,
                        RawReason::Holdout {
                            layer: Some(sl.layer),
                        },
                        1.0,
                    );
                }
                let b = bucket_with_seed(layer.seed, user.as_bytes());
                if b < sl.from || b >= sl.to {
                    trace.note(|| {
                        format!(
                            "layer {:?} bucket {b} is outside [{}, {})",
                            layer.id, sl.from, sl.to
                        )
                    });
                    return Outcome::default_of(
                        slot,
                        RawReason::NotInLayer { layer: sl.layer },
                        1.0,
                    );
                }
                trace.note(|| {
                    format!(
                        "layer {:?} bucket {b} is inside [{}, {})",
                        layer.id, sl.from, sl.to
                    )
                });
            }
        }
        let mut ev = Eval {
            features,
            segments: &self.segments,
            segment_names: &self.segment_names,
            issue: None,
            trace,
        };
        // Probability of the path taken so far, treating hash buckets as uniform draws.
        let mut path = 1.0;
        for (ri, rule) in slot.rules.iter().enumerate() {
            let r = ri as u16;
            if let Some(c) = &rule.when {
                let hit = ev.cond(c);
                ev.trace
                    .note(|| format!("rules[{}] condition → {hit}", rule.index));
                if !hit {
                    continue;
                }
            }
            match &rule.action {
                Action::Serve(v) => {
                    ev.trace.note(|| {
                        format!(
                            "rules[{}] serves {:?}",
                            rule.index, slot.variants[*v as usize].id
                        )
                    });
                    return Outcome {
                        variant: *v,
                        reason: RawReason::Rule {
                            rule: r,
                            bucket: NO_BUCKET,
                        },
                        propensity: path,
                        bandit: None,
                    };
                }
                Action::Split { seed, unit, arms } => {
                    let Some(b) = unit_bucket(*seed, unit, user, features, &mut ev.issue) else {
                        ev.trace.note(|| {
                            format!(
                                "rules[{}] split: bucketing unit unavailable, falling through",
                                rule.index
                            )
                        });
                        continue;
                    };
                    let mut lower = 0;
                    for &(upper, v) in arms {
                        if b < upper {
                            let share = f64::from(upper - lower) / f64::from(BUCKETS);
                            ev.trace.note(|| {
                                format!(
                                    "rules[{}] split: bucket {b} → {:?}",
                                    rule.index, slot.variants[v as usize].id
                                )
                            });
                            return Outcome {
                                variant: v,
                                reason: RawReason::Rule { rule: r, bucket: b },
                                propensity: path * share,
                                bandit: None,
                            };
                        }
                        lower = upper;
                    }
                }
                Action::Rollout {
                    seed,
                    unit,
                    below,
                    variant,
                } => {
                    let Some(b) = unit_bucket(*seed, unit, user, features, &mut ev.issue) else {
                        ev.trace.note(|| {
                            format!(
                                "rules[{}] rollout: bucketing unit unavailable, falling through",
                                rule.index
                            )
                        });
                        continue;
                    };
                    let share = f64::from(*below) / f64::from(BUCKETS);
                    if b < *below {
                        ev.trace.note(|| {
                            format!("rules[{}] rollout: bucket {b} < {below} → in", rule.index)
                        });
                        return Outcome {
                            variant: *variant,
                            reason: RawReason::Rule { rule: r, bucket: b },
                            propensity: path * share,
                            bandit: None,
                        };
                    }
                    ev.trace.note(|| {
                        format!(
                            "rules[{}] rollout: bucket {b} ≥ {below} → falls through",
                            rule.index
                        )
                    });
                    path *= 1.0 - share;
                }
                Action::Score { inputs, arms } => {
                    let variant = score_pick(
                        slot,
                        rule.index,
                        inputs,
                        arms,
                        features,
                        &mut ev.issue,
                        &mut ev.trace,
                    );
                    return Outcome {
                        variant,
                        reason: RawReason::Rule {
                            rule: r,
                            bucket: NO_BUCKET,
                        },
                        propensity: path,
                        bandit: None,
                    };
                }
                Action::Bandit(spec) => {
                    let (mut probs, mut x) = ([0.0; MAX_ARMS], [0.0; MAX_CONTEXT]);
                    // The rule's published model (the prior on a snapshot no engine loaded).
                    let published = self.binding(spec).map(|b| b.model.load());
                    let model = published.as_ref().map_or(&PRIOR, |m| &***m);
                    let version = spec.probabilities(model, features, &mut probs, &mut x);
                    let k = spec.arms.len();
                    let u = math::uniform(id.bandit_id(), spec.seed, version);
                    let chosen = math::pick(&probs[..k], u);
                    ev.trace.note(|| {
                        format!(
                            "rules[{}] bandit ({}, model version {version}): probabilities {:?}, draw {u:.6} → {:?}",
                            rule.index,
                            spec.policy.name(),
                            &probs[..k],
                            slot.variants[spec.arms[chosen] as usize].id
                        )
                    });
                    return Outcome {
                        variant: spec.arms[chosen],
                        reason: RawReason::Rule {
                            rule: r,
                            bucket: NO_BUCKET,
                        },
                        propensity: path * probs[chosen],
                        bandit: Some(BanditOutcome {
                            model_version: version,
                            chosen: chosen as u8,
                            probs: Probs::new(&probs, k, &x, spec.context.len()),
                        }),
                    };
                }
            }
        }
        let reason = match (degraded, ev.issue) {
            (Some(cause), _) => RawReason::Fallback(cause),
            (None, Some(Issue::Missing(f))) => RawReason::Fallback(RawCause::Missing(f)),
            (None, Some(Issue::WrongType(f))) => RawReason::Fallback(RawCause::WrongType(f)),
            (None, None) => RawReason::Default,
        };
        ev.trace
            .note(|| "no rule decided: serving the default".into());
        Outcome::default_of(slot, reason, path)
    }
}

/// Scores with at most this many distinct inputs gather them into a stack array.
const SCORE_STACK: usize = 32;

/// The arm a `score` rule picks (argmax of bias + Σ weight · input, the first arm on ties,
/// NaN lowest; the slot's default without arms). Each input is read once; more inputs than
/// fit on the stack (rare) are read per use instead.
#[inline]
pub(super) fn score_pick<T: Trace>(
    slot: &Slot,
    rule_index: u16,
    inputs: &[FeatureKey],
    arms: &[ScoreArm],
    features: &Features,
    issue: &mut Option<Issue>,
    trace: &mut T,
) -> u32 {
    let mut values = [0.0f64; SCORE_STACK];
    let on_stack = inputs.len() <= SCORE_STACK;
    if on_stack {
        for (slot_value, k) in values.iter_mut().zip(inputs) {
            *slot_value = score_input(k, features, issue);
        }
    }
    let mut best: Option<(f64, u32)> = None;
    for arm in arms {
        let mut s = arm.bias;
        for &(i, w) in &arm.weights {
            let x = if on_stack {
                values[i as usize]
            } else {
                score_input(&inputs[i as usize], features, issue)
            };
            s += w * x;
        }
        trace.note(|| {
            format!(
                "rules[{rule_index}] score {:?} = {s}",
                slot.variants[arm.variant as usize].id
            )
        });
        // NaN ranks lowest; strictly greater, so the first arm wins ties.
        let s = if s.is_nan() { f64::NEG_INFINITY } else { s };
        if best.is_none_or(|(b, _)| s > b) {
            best = Some((s, arm.variant));
        }
    }
    best.map_or(slot.default, |(_, v)| v)
}

/// A score input: the feature as a number; missing or non-numeric counts as 0 (and is noted).
#[inline]
fn score_input(k: &FeatureKey, features: &Features, issue: &mut Option<Issue>) -> f64 {
    match k.get(features) {
        Some(v) => v.as_f64().unwrap_or_else(|| {
            issue.get_or_insert(Issue::WrongType(k.id));
            0.0
        }),
        None => {
            issue.get_or_insert(Issue::Missing(k.id));
            0.0
        }
    }
}

#[inline]
pub(super) fn unit_bucket(
    seed: u64,
    unit: &Unit,
    user: &str,
    features: &Features,
    issue: &mut Option<Issue>,
) -> Option<u32> {
    match unit {
        Unit::User => Some(bucket_with_seed(seed, user.as_bytes())),
        Unit::Feature(k) => {
            let mut buf = [0u8; 20];
            match k.get(features) {
                Some(v) => match unit_bytes(v, &mut buf) {
                    Some(b) => Some(bucket_with_seed(seed, b)),
                    None => {
                        issue.get_or_insert(Issue::WrongType(k.id));
                        None
                    }
                },
                None => {
                    issue.get_or_insert(Issue::Missing(k.id));
                    None
                }
            }
        }
    }
}

/// The bytes a feature unit's value is bucketed (and a sticky assignment tied) by: a
/// string's UTF-8, an integer's decimal digits; `None` for other types.
#[inline]
pub(crate) fn unit_bytes<'a>(v: &'a Value, buf: &'a mut [u8; 20]) -> Option<&'a [u8]> {
    match v {
        Value::Str(s) => Some(s.as_bytes()),
        Value::Int(i) => Some(int_bytes(*i, buf)),
        _ => None,
    }
}
