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
    /// evaluation of a candidate config over logged decisions. It evaluates the config: a
    /// sticky slot's stored assignment is not read.
    #[must_use]
    pub fn replay(&self, slot: &str, user: &str, features: &Features, id: DecisionId) -> Decision {
        let snap = self.inner.snapshot.load();
        let idx = snap.slot_idx(slot).unwrap_or(NO_VARIANT);
        let outcome = snap.evaluate(idx, user, features, None, &mut id.as_u128(), NoTrace);
        Decision {
            snap: crate::decision::Guarded(snap),
            slot: idx,
            outcome,
            id,
            features: FeatureStatus::Provided,
        }
    }

    /// Decides like [`Engine::decide`] and returns every evaluation step. For debugging: the
    /// decision is neither logged to the sink, nor counted in metrics, nor remembered for a
    /// reward; a sticky slot's stored assignment is read and served as `decide` would, and no
    /// new one is stored. It takes no id from the engine's sequences, so it does not change the ids and
    /// draws of later decisions; its id is the engine's prefix followed by `ffffffffffffffff`,
    /// the same for every explanation (a bandit draw with it is the same each time too).
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
        // An id no decision gets, so explaining takes none from the engine's sequences (and
        // leaves the draws of later, reproducible decisions as they would have been).
        let id = DecisionId::from_u128(u128::from(self.inner.prefix) << 64 | u128::from(u64::MAX));
        let outcome = if snap.any_sticky {
            // Reads a sticky slot's stored assignment like `decide`, never writes one.
            self.sticky_outcome(
                &snap,
                idx,
                user,
                features,
                false,
                None,
                &mut id.as_u128(),
                &mut steps,
                false,
            )
        } else {
            snap.evaluate(idx, user, features, None, &mut id.as_u128(), &mut steps)
        };
        let decision = Decision {
            snap: crate::decision::Guarded(snap),
            slot: idx,
            outcome,
            id,
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
