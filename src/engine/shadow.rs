//! Shadow evaluation: a candidate config decides, beside the live one, on a sampled share of
//! live decisions; the report says how often they agree, what would change, and what the
//! candidate would earn.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::json;

use super::{Engine, LoadOutcome};
use crate::config::{Config, ConfigError};
use crate::decision::{Decision, DecisionId};
use crate::ope::{Estimator, Report, Sample};
use crate::snapshot::Snapshot;
use crate::{Features, Reason, SnapshotHold};

/// Sampled decisions kept for joining their rewards (the oldest is dropped first).
pub const SHADOW_PENDING: usize = 65_536;

/// Distinct (live rule, candidate rule) pairs counted per slot; further pairs are counted
/// under `"(other)"`.
const MAX_CHANGES: usize = 256;

/// The running shadow evaluation of an engine.
pub(super) struct Shadow {
    candidate: Arc<Snapshot>,
    version: String,
    rate: f64,
    /// A decision is sampled when the hash of its id is below this.
    threshold: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    slots: BTreeMap<String, SlotStats>,
    pending: HashMap<u128, Pending>,
    order: VecDeque<u128>,
    evicted: u64,
}

#[derive(Default)]
struct SlotStats {
    sampled: u64,
    agreed: u64,
    live: BTreeMap<String, u64>,
    candidate: BTreeMap<String, u64>,
    changes: BTreeMap<(String, String), u64>,
    /// Sampled decisions where the candidate gives a variant probability the live policy
    /// gives 0 (no estimate can say how it would do).
    unsupported: u64,
    estimator: Estimator,
    /// Rewards of the sampled live decisions: (count, sum, sum of squares).
    live_rewards: (f64, f64, f64),
}

/// One sampled decision waiting for its reward.
struct Pending {
    slot: String,
    logged_arm: usize,
    logging: Vec<f64>,
    target: Vec<f64>,
}

fn sampled_hash(id: DecisionId) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(&id.as_u128().to_le_bytes(), 0x5ad0)
}

fn rule_label(r: &Reason<'_>) -> String {
    let rule = match r {
        Reason::Serve(x)
        | Reason::Split { rule: x, .. }
        | Reason::Rollout { rule: x, .. }
        | Reason::Score(x)
        | Reason::Bandit(x) => x,
        other => return other.kind().as_str().to_owned(),
    };
    match rule.id {
        Some(id) => format!("rules[{}] ({id})", rule.index),
        None => format!("rules[{}]", rule.index),
    }
}

impl Shadow {
    fn sampled(&self, id: DecisionId) -> bool {
        sampled_hash(id) < self.threshold
    }

    /// Decides `slot` on the candidate with the live decision's inputs and records both.
    fn observe<H: SnapshotHold>(
        &self,
        live: &Decision<H>,
        live_snap: &Snapshot,
        slot: &str,
        user: &str,
        features: &Features,
    ) {
        let c = &self.candidate;
        let c_idx = c.slot_idx(slot).unwrap_or(crate::snapshot::NO_VARIANT);
        if c_idx == crate::snapshot::NO_VARIANT && live.slot == crate::snapshot::NO_VARIANT {
            // A slot neither config has: nothing to compare, and counting it would let
            // callers grow the report with made-up slot names.
            return;
        }
        let mut id = live.id().as_u128();
        let outcome = c.evaluate(
            c_idx,
            user,
            features,
            None,
            &mut id,
            crate::snapshot::trace::NoTrace,
        );
        let cand_variant = c.variant(c_idx, outcome.variant).map(|v| v.id.to_string());
        let cand_rule = rule_label(&c.resolve_reason(c_idx, outcome.reason));
        let live_variant = live.variant().map(str::to_owned);
        let live_rule = rule_label(&live.reason());
        // Both policies as distributions over variant ids, for the estimate.
        let (mut ld, mut cd) = (Vec::new(), Vec::new());
        live_snap.distribution(live.slot, user, features, &mut ld);
        c.distribution(c_idx, user, features, &mut cd);
        let mut arms: Vec<&str> = Vec::new();
        let mut logging = Vec::new();
        for &(v, p) in &ld {
            if let Some(var) = live_snap.variant(live.slot, v) {
                arms.push(&var.id);
                logging.push(p);
            }
        }
        let mut target = vec![0.0; arms.len()];
        let mut unsupported = false;
        for &(v, p) in &cd {
            let Some(var) = c.variant(c_idx, v) else {
                continue;
            };
            match arms.iter().position(|a| **a == *var.id) {
                Some(i) => target[i] += p,
                None => {
                    unsupported = true;
                    arms.push(&var.id);
                    logging.push(0.0);
                    target.push(p);
                }
            }
        }
        let logged_arm = live_variant
            .as_deref()
            .and_then(|v| arms.iter().position(|a| *a == v));
        let agreed = live_variant == cand_variant;
        metrics::counter!("elvon_shadow_decisions_total", "outcome" => if agreed { "agree" } else { "disagree" })
            .increment(1);

        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let stats = st.slots.entry(slot.to_owned()).or_default();
        stats.sampled += 1;
        *stats
            .live
            .entry(live_variant.unwrap_or_else(|| "(none)".into()))
            .or_default() += 1;
        *stats
            .candidate
            .entry(cand_variant.unwrap_or_else(|| "(none)".into()))
            .or_default() += 1;
        if agreed {
            stats.agreed += 1;
        } else {
            let key = if stats.changes.len() < MAX_CHANGES
                || stats
                    .changes
                    .contains_key(&(live_rule.clone(), cand_rule.clone()))
            {
                (live_rule, cand_rule)
            } else {
                ("(other)".to_owned(), "(other)".to_owned())
            };
            *stats.changes.entry(key).or_default() += 1;
        }
        if unsupported {
            stats.unsupported += 1;
        }
        let Some(logged_arm) = logged_arm else {
            return;
        };
        let key = live.id().as_u128();
        if st.order.len() >= SHADOW_PENDING {
            if let Some(old) = st.order.pop_front() {
                if st.pending.remove(&old).is_some() {
                    st.evicted += 1;
                }
            }
        }
        st.order.push_back(key);
        st.pending.insert(
            key,
            Pending {
                slot: slot.to_owned(),
                logged_arm,
                logging,
                target,
            },
        );
    }

    /// Joins a reward to its sampled decision; `false` when it was not sampled (or was
    /// evicted, or rewarded already).
    fn reward(&self, id: DecisionId, value: f64) -> bool {
        if !value.is_finite() || !self.sampled(id) {
            return false;
        }
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(p) = st.pending.remove(&id.as_u128()) else {
            return false;
        };
        let Some(stats) = st.slots.get_mut(&p.slot) else {
            return false;
        };
        let propensity = p.logging[p.logged_arm];
        let sample = Sample::new(p.logged_arm, propensity, value, &p.target).logging(&p.logging);
        if stats.estimator.add(&sample).is_err() {
            stats.estimator.refused();
        }
        let (n, s, ss) = &mut stats.live_rewards;
        *n += 1.0;
        *s += value;
        *ss += value * value;
        true
    }

    fn report(&self) -> ShadowReport {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let slots = st
            .slots
            .iter()
            .map(|(slot, s)| {
                let (n, sum, ss) = s.live_rewards;
                let live_value = (n > 0.0).then(|| {
                    let mean = sum / n;
                    let var = if n > 1.0 {
                        ((ss - n * mean * mean) / (n - 1.0)).max(0.0)
                    } else {
                        0.0
                    };
                    (mean, (var / n).sqrt())
                });
                SlotShadow {
                    slot: slot.clone(),
                    sampled: s.sampled,
                    agreed: s.agreed,
                    live: s.live.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    candidate: s.candidate.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    changes: s
                        .changes
                        .iter()
                        .map(|((l, c), n)| RuleChange {
                            live_rule: l.clone(),
                            candidate_rule: c.clone(),
                            count: *n,
                        })
                        .collect(),
                    unsupported: s.unsupported,
                    rewarded: n as u64,
                    live_value,
                    estimate: (n > 0.0).then(|| s.estimator.report()),
                }
            })
            .collect();
        ShadowReport {
            candidate_version: self.version.clone(),
            sample_rate: self.rate,
            slots,
            pending: st.pending.len(),
            evicted: st.evicted,
        }
    }
}

/// The shadow evaluation so far (see [`Engine::shadow`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShadowReport {
    /// The candidate config's version.
    pub candidate_version: String,
    /// The share of live decisions sampled.
    pub sample_rate: f64,
    /// One entry per slot with sampled decisions, by slot id.
    pub slots: Vec<SlotShadow>,
    /// Sampled decisions waiting for a reward.
    pub pending: usize,
    /// Sampled decisions dropped unrewarded to keep at most [`SHADOW_PENDING`].
    pub evicted: u64,
}

/// What the candidate did on one slot's sampled decisions.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SlotShadow {
    /// The slot.
    pub slot: String,
    /// Sampled live decisions.
    pub sampled: u64,
    /// Of those, how many the candidate decided the same variant for.
    pub agreed: u64,
    /// Live variant counts, by variant id (`"(none)"`: the slot is unknown there).
    pub live: Vec<(String, u64)>,
    /// Candidate variant counts on the same decisions.
    pub candidate: Vec<(String, u64)>,
    /// The decisions that would change, by (live rule, candidate rule); a rule is
    /// `rules[i]` (with its id) or the reason kind (`default`, `holdout`, …).
    pub changes: Vec<RuleChange>,
    /// Sampled decisions where the candidate could serve a variant the live config never
    /// could for that user: no estimate covers those.
    pub unsupported: u64,
    /// Sampled decisions whose reward arrived.
    pub rewarded: u64,
    /// Mean reward of the rewarded live decisions, with its standard error.
    pub live_value: Option<(f64, f64)>,
    /// The off-policy estimate of the candidate's mean reward on this slot (IPS, SNIPS, …
    /// with intervals and support warnings), once a reward arrived.
    pub estimate: Option<Report>,
}

impl SlotShadow {
    /// The share of sampled decisions on which the candidate agreed (1 with none sampled).
    #[must_use]
    pub fn agreement(&self) -> f64 {
        if self.sampled == 0 {
            1.0
        } else {
            self.agreed as f64 / self.sampled as f64
        }
    }
}

/// A count of decisions that one live rule made and one candidate rule would make instead.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuleChange {
    /// The rule (or reason) that decided live.
    pub live_rule: String,
    /// The rule (or reason) that decides in the candidate.
    pub candidate_rule: String,
    /// Sampled decisions.
    pub count: u64,
}

impl ShadowReport {
    /// The report as JSON (what `GET /admin/v1/shadow` answers).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let est = |e: &crate::ope::Estimate| json!({"value": e.value, "std_error": e.std_error, "ci95": [e.lower, e.upper]});
        let slots: Vec<_> = self
            .slots
            .iter()
            .map(|s| {
                json!({
                    "slot": s.slot,
                    "sampled": s.sampled,
                    "agreed": s.agreed,
                    "agreement": s.agreement(),
                    "live": s.live.iter().map(|(k, v)| json!({"variant": k, "count": v})).collect::<Vec<_>>(),
                    "candidate": s.candidate.iter().map(|(k, v)| json!({"variant": k, "count": v})).collect::<Vec<_>>(),
                    "changes": s.changes.iter().map(|c| json!({"live_rule": c.live_rule, "candidate_rule": c.candidate_rule, "count": c.count})).collect::<Vec<_>>(),
                    "unsupported": s.unsupported,
                    "rewarded": s.rewarded,
                    "live_value": s.live_value.map(|(m, se)| json!({"value": m, "stderr": se})),
                    "estimate": s.estimate.as_ref().map(|r| json!({
                        "ips": est(&r.ips),
                        "snips": est(&r.snips),
                        "effective_sample_size": r.effective_sample_size,
                        "unsupported": r.unsupported,
                        "warnings": r.warnings(),
                    })),
                })
            })
            .collect();
        json!({
            "candidate_version": self.candidate_version,
            "sample_rate": self.sample_rate,
            "pending": self.pending,
            "evicted": self.evicted,
            "slots": slots,
        })
    }
}

impl Engine {
    /// Starts shadow evaluation of `candidate`: on a `sample_rate` share of live decisions
    /// (0–1, chosen by a hash of the decision id, so the same decisions are sampled on
    /// every run), the candidate also decides, on the same slot, user, features and id, and
    /// [`shadow_report`](Self::shadow_report) says per slot how often it agreed, how the
    /// variant counts compare, which rules' decisions would change, and, from the rewards
    /// given with [`Engine::reward`] to sampled decisions, an off-policy estimate (IPS,
    /// SNIPS) of the candidate's mean reward beside the live one's. Replaces a running
    /// shadow evaluation. The live decision is returned unchanged; an unsampled decision
    /// pays one atomic load and a hash, a sampled one the candidate's evaluation and a
    /// short lock. Memory is bounded: counts per slot, variant and rule pair of the two
    /// configs, and at most [`SHADOW_PENDING`] sampled decisions awaiting rewards.
    ///
    /// The candidate is compiled but not attached to the learner: its bandit rules draw
    /// from their prior, and it learns nothing. Slots neither config has are not counted.
    ///
    /// ```
    /// let engine = elvon::Engine::default();
    /// let config = |v: &str, w: u32| format!(r#"{{"version": "{v}", "slots": [{{"id": "s",
    ///     "variants": [{{"id": "a"}}, {{"id": "b"}}], "default": "a",
    ///     "rules": [{{"split": {{"variants": [{{"variant": "a", "weight": {w}}}, {{"variant": "b", "weight": {}}}]}}}}]}}]}}"#, 100 - w);
    /// engine.load_config_json(&config("live", 50)).unwrap();
    /// engine.shadow(&elvon::Config::from_json(&config("next", 90)).unwrap(), 1.0).unwrap();
    /// for i in 0..1_000 {
    ///     let _ = engine.decide("s", &format!("u{i}"), &elvon::Features::new());
    /// }
    /// let report = engine.shadow_report().unwrap();
    /// let agreement = report.slots[0].agreement();
    /// assert!((0.55..0.65).contains(&agreement), "{agreement}"); // 60% of users keep their variant
    /// ```
    ///
    /// # Errors
    /// The candidate's [`ConfigError::Invalid`]; a `sample_rate` outside 0–1 is an
    /// `Invalid` error at path `sample_rate`. Nothing changes on error.
    pub fn shadow(&self, candidate: &Config, sample_rate: f64) -> Result<LoadOutcome, ConfigError> {
        if !(0.0..=1.0).contains(&sample_rate) {
            return Err(ConfigError::Invalid(vec![crate::ConfigProblem::new(
                "sample_rate",
                format!("must be between 0 and 1, got {sample_rate}"),
            )]));
        }
        let compiled = crate::config::compile(candidate).map_err(ConfigError::Invalid);
        crate::config::prune_regexes();
        let compiled = compiled?;
        // Not attached to the learner: the candidate's bandit rules draw from their prior and
        // learn nothing (the live engine's learner state stays the live config's).
        let snapshot = compiled.snapshot;
        let version = snapshot.version().to_owned();
        let threshold = if sample_rate >= 1.0 {
            u64::MAX
        } else {
            (sample_rate * u64::MAX as f64) as u64
        };
        let shadow = Shadow {
            candidate: Arc::new(snapshot),
            version: version.clone(),
            rate: sample_rate,
            threshold,
            state: Mutex::new(State::default()),
        };
        self.inner.shadow.store(Some(Arc::new(shadow)));
        self.inner.shadow_on.store(true, Ordering::Release);
        Ok(LoadOutcome {
            version,
            warnings: compiled.warnings,
        })
    }

    /// Stops shadow evaluation and returns its final report (`None` if none ran).
    pub fn stop_shadow(&self) -> Option<ShadowReport> {
        self.inner.shadow_on.store(false, Ordering::Release);
        self.inner.shadow.swap(None).map(|s| s.report())
    }

    /// The running shadow evaluation's report so far (`None` if none runs).
    #[must_use]
    pub fn shadow_report(&self) -> Option<ShadowReport> {
        self.inner.shadow.load().as_ref().map(|s| s.report())
    }

    /// The decide path's hook: records a sampled decision.
    #[inline]
    pub(super) fn shadow_observe<H: SnapshotHold>(
        &self,
        live: &Decision<H>,
        live_snap: &Snapshot,
        slot: &str,
        user: &str,
        features: &Features,
    ) {
        let guard = self.inner.shadow.load();
        if let Some(s) = guard.as_ref() {
            if s.sampled(live.id()) {
                s.observe(live, live_snap, slot, user, features);
            }
        }
    }

    /// The reward path's hook: joins a reward to a sampled decision.
    pub(super) fn shadow_reward(&self, id: DecisionId, value: f64) {
        if self.inner.shadow_on.load(Ordering::Acquire) {
            if let Some(s) = self.inner.shadow.load().as_ref() {
                s.reward(id, value);
            }
        }
    }
}
