//! Saved learner state (serde).

use serde::{Deserialize, Serialize};

/// Learner state of one arm. Serialized as part of [`LearnerState`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ArmState {
    /// The variant id.
    pub id: String,
    /// Rewards received.
    pub n: f64,
    /// Sum of rewards.
    pub sum: f64,
    /// Contextual policies: `Σ x xᵀ`, row-major `dim × dim` (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xx: Vec<f64>,
    /// Contextual policies: `Σ r x` (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xr: Vec<f64>,
    /// `false` once the arm left the config; its statistics are cleared.
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// Learner state of one bandit rule. Serialized as part of [`LearnerState`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BanditState {
    /// The rule's key: the slot id, or `slot/rule-id` (`/` and `\\` in ids escaped with `\\`).
    pub key: String,
    /// The policy the statistics were gathered for (`thompson`, `linear`, …).
    pub policy: String,
    /// Context dimension (0 for context-free policies).
    pub dim: usize,
    /// Per-arm statistics.
    pub arms: Vec<ArmState>,
}

/// Everything the learner knows, for saving and restoring across restarts (serde).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LearnerState {
    /// Format version (1).
    pub format: u32,
    /// One entry per bandit rule ever loaded.
    pub bandits: Vec<BanditState>,
}
