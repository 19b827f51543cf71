//! The engine's learning calls: rewards, refresh, the learner thread, saved state.

use std::time::Duration;

use super::Engine;
use crate::decision::DecisionId;
use crate::learn::{LearnerState, RewardOutcome, RewardStats};

impl Engine {
    /// Reports the reward of a bandit decision, joined by its id.
    ///
    /// Decisions are remembered for their rule's `reward.window_ms`; a reward for an unknown,
    /// already rewarded or expired decision is counted and returns
    /// [`RewardOutcome::Unknown`] — never an error the caller must handle. Non-finite values
    /// return [`RewardOutcome::Invalid`]. The rule's model is republished after
    /// `refresh.rewards` rewards (on this thread) or `refresh.ms` milliseconds (on the next
    /// reward or [`Engine::refresh`]).
    pub fn reward(&self, decision: DecisionId, value: f64) -> RewardOutcome {
        let out = self.inner.learner.reward(decision.as_u128(), value);
        crate::metrics::reward(out.metric_name());
        out
    }

    /// Reports a reward for a variant of a slot's bandit rule without a decision id (for
    /// rewards whose decision was not kept). Context-free policies only: a contextual policy
    /// needs the decision's features and returns [`RewardOutcome::NeedsContext`]. With several
    /// bandit rules in the slot, the first with that arm gets it.
    pub fn reward_variant(&self, slot: &str, variant: &str, value: f64) -> RewardOutcome {
        let snap = self.inner.snapshot.load();
        let spec = snap.slot(slot).and_then(|s| {
            s.rules.iter().find_map(|r| match &r.action {
                crate::snapshot::Action::Bandit(b) if b.arm_ids.iter().any(|a| **a == *variant) => {
                    Some((&**b, snap.binding(b)?))
                }
                _ => None,
            })
        });
        let out = match spec {
            Some((spec, binding)) => self.inner.learner.reward_arm(spec, binding, variant, value),
            None => {
                self.inner.learner.count_rejected();
                RewardOutcome::NoSuchArm
            }
        };
        crate::metrics::reward(out.metric_name());
        out
    }

    /// Expires remembered decisions whose reward window has passed (giving them the rule's
    /// default reward, if it has one) and republishes every bandit model now. Call it from
    /// tests or on your own schedule; [`Engine::spawn_learner`] does it periodically.
    pub fn refresh(&self) {
        self.inner.learner.refresh(true);
    }

    /// Starts a background thread that, every `period`, expires due decisions and
    /// republishes the models whose `refresh.ms` has passed. The thread stops when the
    /// returned handle is dropped or [`LearnerThread::stop`] is called.
    ///
    /// # Errors
    /// The OS error if the thread cannot be spawned.
    pub fn spawn_learner(&self, period: Duration) -> std::io::Result<LearnerThread> {
        let engine = self.clone();
        let thread = crate::background::Background::spawn("elvon-learner", move |stop| {
            while !stop.sleep(period) {
                engine.inner.learner.refresh(false);
            }
        })?;
        Ok(LearnerThread { thread })
    }

    /// Counts of rewards and remembered decisions.
    #[must_use]
    pub fn reward_stats(&self) -> RewardStats {
        self.inner.learner.stats()
    }

    /// Everything the learner knows, to save (serde) and [`restore`](Self::restore_learner)
    /// after a restart.
    #[must_use]
    pub fn learner_state(&self) -> LearnerState {
        self.inner.learner.save()
    }

    /// Restores saved learner state: each bandit key in `state` replaces the engine's
    /// statistics for that key and the serving models are republished. Statistics that do
    /// not fit the rule now serving the key (another policy, another context dimension, arms
    /// no longer in the config) are dropped, as on a config swap.
    pub fn restore_learner(&self, state: LearnerState) {
        let _serial = self
            .inner
            .loading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let snap = self.inner.snapshot.load();
        self.inner.learner.restore(state, &snap);
    }
}

/// The background learner thread of [`Engine::spawn_learner`]; stops when dropped.
///
/// The handle is `#[must_use]`: discarding it stops the thread at once.
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn start(engine: &elvon::Engine) -> std::io::Result<()> {
///     engine.spawn_learner(std::time::Duration::from_millis(100))?;
///     Ok(())
/// }
/// ```
/// ```
/// #![deny(unused_must_use)]
/// fn start(engine: &elvon::Engine) -> std::io::Result<elvon::LearnerThread> {
///     let learner = engine.spawn_learner(std::time::Duration::from_millis(100))?;
///     Ok(learner)
/// }
/// # start(&elvon::Engine::default()).unwrap().stop();
/// ```
#[derive(Debug)]
#[must_use = "dropping the handle stops the learner thread"]
pub struct LearnerThread {
    thread: crate::background::Background,
}

impl LearnerThread {
    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.thread.stop();
    }
}
