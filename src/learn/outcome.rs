//! What became of a reward, and the learner's counters as the engine reports them.

/// What happened to a reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RewardOutcome {
    /// Applied to the learner.
    Applied,
    /// No pending bandit decision has this id: never a bandit decision, already rewarded, or
    /// expired (its window passed, or it was evicted because too many were pending).
    Unknown,
    /// The slot has no bandit rule with that variant as an arm.
    NoSuchArm,
    /// `reward_variant` on a contextual policy: without the decision's context the reward
    /// cannot be used (send it by decision id instead).
    NeedsContext,
    /// The value is not a finite number.
    Invalid,
    /// The value is outside the rule's reward range (`reward.min` / `reward.max`, default
    /// ±[`DEFAULT_REWARD_BOUND`](crate::DEFAULT_REWARD_BOUND)); nothing was applied, and the
    /// decision's join is used up (a second reward for it is `Unknown`).
    OutOfRange,
    /// The decision's arm was removed from the rule by a config swap (or the rule's
    /// statistics were started over) after the decision was made; nothing was applied. A
    /// decision made before an arm's removal never credits the arm when it comes back.
    ArmRemoved,
}

impl RewardOutcome {
    /// The `outcome` label of `elvon_rewards_total`.
    pub(crate) fn metric_name(self) -> &'static str {
        match self {
            RewardOutcome::Applied => "applied",
            RewardOutcome::Unknown => "unknown",
            RewardOutcome::NoSuchArm
            | RewardOutcome::NeedsContext
            | RewardOutcome::Invalid
            | RewardOutcome::OutOfRange
            | RewardOutcome::ArmRemoved => "rejected",
        }
    }
}

/// Counters of rewards and pending decisions, since the engine was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RewardStats {
    /// Rewards applied (by decision id or by variant).
    pub applied: u64,
    /// Rewards for unknown, already rewarded or expired decisions.
    pub unknown: u64,
    /// Rewards that could not be used (no such arm, needs context, not finite, out of range,
    /// arm removed).
    pub rejected: u64,
    /// Decisions whose window passed without a reward and got the rule's default reward.
    pub defaulted: u64,
    /// Decisions whose window passed without a reward, for rules with no default reward
    /// (and expired decisions that overflowed the 4,096 places kept for their default, see
    /// `evicted`).
    pub expired: u64,
    /// Decisions forgotten before their window passed because a newer decision took their
    /// place in the pending store (see
    /// [`EngineBuilder::pending_rewards`](crate::EngineBuilder::pending_rewards)). A rule
    /// with a default reward still gets it for each (counted in `defaulted`) at the next
    /// reward or refresh, up to 4,096 in between; beyond that, and for rules without a
    /// default, an evicted decision is only counted here.
    pub evicted: u64,
    /// Model refreshes published.
    pub refreshes: u64,
    /// In a fleet: rewards gathered as increments and discarded before they were handed out,
    /// because the rule's policy or context dimension changed in between (as a config swap
    /// discards statistics of another policy on one instance). Counted when increments are
    /// next taken.
    pub fleet_discarded: u64,
}
