//! The probability a slot gives each variant for one user: the policy as a distribution, for
//! off-policy estimates of a whole config (shadow evaluation).

use super::condition::Eval;
use super::eval::{held_out, score_pick, unit_bucket};
use super::trace::NoTrace;
use super::{Action, Snapshot};
use crate::bucketing::BUCKETS;
use crate::features::Features;
use crate::policy::model::{MAX_ARMS, MAX_CONTEXT, PRIOR};

impl Snapshot {
    /// Writes into `out` each variant slot `idx` can serve this user with its probability
    /// (summing to 1; empty for an unknown slot), treating hash buckets as uniform draws: a
    /// split gives each arm its weight share, a rollout its share to its variant and passes
    /// the rest on to the next rules, a bandit gives its policy's vector. Holdouts, layers
    /// and the kill switch are exclusions, as in the decision's propensity: they serve the
    /// default with probability 1. This is the distribution whose draw `evaluate` makes.
    pub(crate) fn distribution(
        &self,
        idx: u32,
        user: &str,
        features: &Features,
        out: &mut Vec<(u32, f64)>,
    ) {
        out.clear();
        let Some(slot) = self.slots.get(idx as usize) else {
            return;
        };
        let mut add = |v: u32, p: f64| {
            if p <= 0.0 {
                return;
            }
            match out.iter_mut().find(|(x, _)| *x == v) {
                Some(e) => e.1 += p,
                None => out.push((v, p)),
            }
        };
        let excluded = slot.killed
            || self.holdout.as_ref().is_some_and(|h| held_out(h, user))
            || slot.layer.is_some_and(|sl| {
                self.layers.get(sl.layer as usize).is_some_and(|layer| {
                    layer.holdout.as_ref().is_some_and(|h| held_out(h, user)) || {
                        let b = crate::bucketing::bucket_with_seed(layer.seed, user.as_bytes());
                        b < sl.from || b >= sl.to
                    }
                })
            });
        if excluded {
            add(slot.default, 1.0);
            return;
        }
        let mut ev = Eval {
            features,
            segments: &self.segments,
            segment_names: &self.segment_names,
            issue: None,
            trace: NoTrace,
        };
        let buckets = f64::from(BUCKETS);
        let mut mass = 1.0;
        for rule in &slot.rules {
            if let Some(c) = &rule.when {
                if !ev.cond(c) {
                    continue;
                }
            }
            match &rule.action {
                Action::Serve(v) => {
                    add(*v, mass);
                    return;
                }
                Action::Split { seed, unit, arms } => {
                    if unit_bucket(*seed, unit, user, features, &mut ev.issue).is_none() {
                        continue;
                    }
                    let mut lower = 0;
                    for &(upper, v) in arms {
                        add(v, mass * f64::from(upper - lower) / buckets);
                        lower = upper;
                    }
                    return;
                }
                Action::Rollout {
                    seed,
                    unit,
                    below,
                    variant,
                } => {
                    if unit_bucket(*seed, unit, user, features, &mut ev.issue).is_none() {
                        continue;
                    }
                    let share = f64::from(*below) / buckets;
                    add(*variant, mass * share);
                    mass *= 1.0 - share;
                    if mass <= 0.0 {
                        return;
                    }
                }
                Action::Score { inputs, arms } => {
                    let v = score_pick(
                        slot,
                        rule.index,
                        inputs,
                        arms,
                        features,
                        &mut ev.issue,
                        &mut NoTrace,
                    );
                    add(v, mass);
                    return;
                }
                Action::Bandit(spec) => {
                    let (mut probs, mut x) = ([0.0; MAX_ARMS], [0.0; MAX_CONTEXT]);
                    let published = self.binding(spec).map(|b| b.model.load());
                    let model = published.as_ref().map_or(&PRIOR, |m| &***m);
                    spec.probabilities(model, features, &mut probs, &mut x);
                    for (arm, p) in spec.arms.iter().zip(&probs[..spec.arms.len()]) {
                        add(*arm, mass * p);
                    }
                    return;
                }
            }
        }
        add(slot.default, mass);
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{compile, Config};
    use crate::features::Features;

    fn snapshot(json: &str) -> super::Snapshot {
        let config = Config::from_json(json).expect("json");
        compile(&config).expect("valid").snapshot
    }

    #[test]
    fn rollouts_pass_the_rest_on_and_exclusions_serve_the_default() {
        let s = snapshot(
            r#"{"version": "1", "slots": [
              {"id": "s", "variants": [{"id": "a"}, {"id": "b"}, {"id": "c"}], "default": "a",
               "rules": [
                 {"when": {"feature": "vip", "op": "eq", "value": true}, "serve": "c"},
                 {"rollout": {"variant": "b", "percent": 30}},
                 {"split": {"variants": [{"variant": "a", "weight": 50}, {"variant": "c", "weight": 50}]}}]},
              {"id": "k", "variants": [{"id": "x"}, {"id": "y"}], "default": "y", "killed": true,
               "rules": [{"serve": "x"}]}]}"#,
        );
        let mut out = Vec::new();
        let idx = s.slot_idx("s").expect("slot");
        s.distribution(idx, "u", &Features::new().with("vip", false), &mut out);
        out.sort_by_key(|e| e.0);
        let close = |got: &[(u32, f64)], want: &[(u32, f64)]| {
            got.len() == want.len()
                && got
                    .iter()
                    .zip(want)
                    .all(|(g, w)| g.0 == w.0 && (g.1 - w.1).abs() < 1e-12)
        };
        assert!(close(&out, &[(0, 0.35), (1, 0.3), (2, 0.35)]), "{out:?}");
        s.distribution(idx, "u", &Features::new().with("vip", true), &mut out);
        assert!(close(&out, &[(2, 1.0)]), "{out:?}");
        let killed = s.slot_idx("k").expect("slot");
        s.distribution(killed, "u", &Features::new(), &mut out);
        assert!(
            close(&out, &[(1, 1.0)]),
            "the kill switch serves the default: {out:?}"
        );
        s.distribution(crate::snapshot::NO_VARIANT, "u", &Features::new(), &mut out);
        assert!(out.is_empty());
    }
}
