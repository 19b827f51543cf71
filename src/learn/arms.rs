//! Fitting learner state to a rule's arms, checking and applying rewards.

use super::*;

/// Makes the bandit's state fit `spec`: a new policy kind or context dimension starts fresh,
/// arms missing from the spec are cleared, new arms are added. Every arm started over gets
/// a new generation.
pub(super) fn reconcile(b: &mut Bandit, spec: &BanditSpec) {
    let dim = spec.context.len();
    let (state, gens) = (&mut b.state, &mut b.gens);
    gens.resize_with(state.arms.len(), next_gen);
    if state.policy != spec.policy.name() || state.dim != dim {
        state.policy = spec.policy.name().to_owned();
        state.dim = dim;
        state.arms.clear();
        gens.clear();
    }
    for (arm, gen) in state.arms.iter_mut().zip(gens.iter_mut()) {
        if arm.active && !spec.arm_ids.iter().any(|a| **a == *arm.id) {
            let id = std::mem::take(&mut arm.id);
            *arm = ArmState {
                id,
                active: false,
                ..ArmState::default()
            };
            *gen = next_gen();
        }
    }
    for a in &spec.arm_ids {
        match state.arms.iter().position(|s| s.id == **a) {
            Some(i) if state.arms[i].active => {}
            Some(i) => {
                state.arms[i] = fresh_arm(a, dim);
                gens[i] = next_gen();
            }
            None => {
                state.arms.push(fresh_arm(a, dim));
                gens.push(next_gen());
            }
        }
    }
}

pub(super) fn fresh_arm(id: &str, dim: usize) -> ArmState {
    ArmState {
        id: id.to_owned(),
        n: 0.0,
        sum: 0.0,
        xx: vec![0.0; dim * dim],
        xr: vec![0.0; dim],
        active: true,
    }
}

/// Whether a reward for learner arm `arm` of generation `gen` may be applied: the arm is
/// still the one the decision chose (active, same generation) and the value is in the
/// serving rule's range.
pub(super) fn check(b: &Bandit, arm: u32, gen: u32, value: f64) -> RewardOutcome {
    let i = arm as usize;
    let same = b.state.arms.get(i).is_some_and(|s| s.active) && b.gens.get(i) == Some(&gen);
    if !same {
        return RewardOutcome::ArmRemoved;
    }
    match &b.active {
        Some(a) if !(a.reward_range.0..=a.reward_range.1).contains(&value) => {
            RewardOutcome::OutOfRange
        }
        _ => RewardOutcome::Applied,
    }
}

/// Applies a reward to the bandit's statistics, or, in a fleet, to its unsent increments.
pub(super) fn apply(b: &mut Bandit, arm: u32, value: f64, x: &[f64]) {
    let Some(s) = b.state.arms.get_mut(arm as usize) else {
        return;
    };
    if !s.active {
        return;
    }
    if b.fleet {
        b.delta.add(&b.state.policy, b.state.dim, &s.id, value, x);
        return;
    }
    add_reward(s, b.state.dim, value, x);
    b.since_refresh += 1;
}

/// One reward into an arm's sufficient statistics (`n`, `sum`, and for a context of `dim`
/// features `Σ x xᵀ` and `Σ r x`).
pub(super) fn add_reward(s: &mut ArmState, dim: usize, value: f64, x: &[f64]) {
    s.n += 1.0;
    s.sum += value;
    let d = dim;
    if d > 0 && x.len() == d && s.xx.len() == d * d && s.xr.len() == d {
        for i in 0..d {
            s.xr[i] += value * x[i];
            for j in 0..d {
                s.xx[i * d + j] += x[i] * x[j];
            }
        }
    }
}
