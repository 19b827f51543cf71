//! The engine's learning calls: rewards, refresh, the learner thread, saved state.

use std::time::Duration;

use super::Engine;
use crate::decision::DecisionId;
use crate::learn::MergeOutcome;
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
    ///
    /// While a [shadow evaluation](Engine::shadow) runs, the reward of a sampled decision,
    /// bandit or not, also feeds its estimate (the outcome returned is the learner's).
    pub fn reward(&self, decision: DecisionId, value: f64) -> RewardOutcome {
        self.shadow_reward(decision, value);
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

    /// Makes this engine one instance of a fleet that shares one learner state (see
    /// [`docs::learning`](crate::docs::learning), "Running several instances"); idempotent.
    ///
    /// From then on, rewards (applied, defaulted) no longer change this engine's statistics:
    /// they gather as increments that [`take_learner_deltas`](Self::take_learner_deltas)
    /// hands out. A transport appends them to one ordered log shared by the fleet and gives
    /// every entry, this engine's own included, to every instance's
    /// [`merge_learner_deltas`](Self::merge_learner_deltas) in log order. Statistics then
    /// change only by merges, so instances that merged the same entries hold the same
    /// statistics and serve the same models, under the same model version (the log
    /// position). `kafka::FleetSync` is such a transport.
    ///
    /// ```
    /// use elvon::{Engine, Features};
    ///
    /// let config = r#"{"version": "1", "slots": [{"id": "s", "variants": [{"id": "a"}, {"id": "b"}],
    ///     "default": "a", "rules": [{"bandit": {"policy": "thompson", "arms": ["a", "b"]}}]}]}"#;
    /// let fleet = [Engine::builder().id_prefix(1).build(), Engine::builder().id_prefix(2).build()];
    /// for e in &fleet {
    ///     e.load_config_json(config)?;
    ///     e.join_fleet();
    /// }
    /// // A reward on one instance …
    /// let d = fleet[0].decide("s", "u", &Features::new());
    /// fleet[0].reward(d.id(), 1.0);
    /// // … reaches every instance through the log (here a vector).
    /// let log = vec![fleet[0].take_learner_deltas().expect("one increment")];
    /// for e in &fleet {
    ///     for (i, entry) in log.iter().enumerate() {
    ///         e.merge_learner_deltas(entry, i as u64 + 1);
    ///     }
    /// }
    /// let versions: Vec<_> = fleet
    ///     .iter()
    ///     .map(|e| e.decide("s", "u", &Features::new()).model_version())
    ///     .collect();
    /// assert_eq!(versions, [Some(1), Some(1)]);
    /// assert_eq!(fleet[0].learner_state(), fleet[1].learner_state());
    /// # Ok::<(), elvon::ConfigError>(())
    /// ```
    pub fn join_fleet(&self) {
        self.inner.learner.join_fleet();
    }

    /// In a fleet ([`join_fleet`](Self::join_fleet)): the reward increments gathered since
    /// the last call, as a [`LearnerState`] whose statistics are increments; `None` when
    /// there are none (and always before joining).
    #[must_use]
    pub fn take_learner_deltas(&self) -> Option<LearnerState> {
        self.inner.learner.take_deltas()
    }

    /// In a fleet: adds the increments of the shared log's entry at `position` (counting
    /// from 1, growing along the log) to the statistics and republishes the models of the
    /// bandits it touched, with `position` as their model version. A bandit that already
    /// merged an entry at `position` or later leaves this one out, so a redelivered entry
    /// is not counted twice. Increments for keys no rule serves yet are kept (a rule loaded
    /// later starts from them).
    pub fn merge_learner_deltas(&self, deltas: &LearnerState, position: u64) -> MergeOutcome {
        self.inner.learner.merge(deltas, position)
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
