//! Replaying and explaining decisions.

use super::{Engine, Explanation};
use crate::decision::{Decision, DecisionId, FeatureStatus};
use crate::features::Features;
use crate::snapshot::trace::NoTrace;
use crate::snapshot::NO_VARIANT;

impl Engine {
    /// Re-evaluates a decision as if it had been made with id `id`, against the current
    /// snapshot and models: a bandit rule draws the same arm with the same probabilities as
    /// the original decision did if the snapshot and model version are the same. Not sent to
    /// the sink, not counted, not remembered for rewards. For audits, debugging and offline
    /// evaluation of a candidate config over logged decisions.
    #[must_use]
    pub fn replay(&self, slot: &str, user: &str, features: &Features, id: DecisionId) -> Decision {
        let snap = self.inner.snapshot.load();
        let idx = snap.slot_idx(slot).unwrap_or(NO_VARIANT);
        let outcome = snap.evaluate(idx, user, features, None, &mut id.as_u128(), NoTrace);
        Decision {
            snap,
            slot: idx,
            outcome,
            id,
            features: FeatureStatus::Provided,
        }
    }

    /// Decides like [`Engine::decide`] and returns every evaluation step. For debugging: the
    /// decision is neither logged to the sink nor counted in metrics.
    #[must_use]
    pub fn explain(&self, slot: &str, user: &str, features: &Features) -> Explanation {
        let snap = self.inner.snapshot.load();
        let idx = snap.slot_idx(slot).unwrap_or(NO_VARIANT);
        let mut steps = Vec::new();
        if idx == NO_VARIANT {
            steps.push(format!(
                "slot {slot:?} is not in config version {:?}",
                snap.version
            ));
        }
        let mut ids = super::Ids::new(&self.inner);
        let outcome = snap.evaluate(idx, user, features, None, &mut ids, &mut steps);
        let decision = Decision {
            snap,
            slot: idx,
            outcome,
            id: ids.id(),
            features: FeatureStatus::Provided,
        };
        steps.push(format!(
            "decided {:?} ({}), propensity {}",
            decision.variant().unwrap_or("<none>"),
            decision.reason().kind(),
            decision.propensity()
        ));
        Explanation { decision, steps }
    }
}
