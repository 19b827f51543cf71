//! Fleet mode: several engines (instances of one service) share one learner state.
//!
//! The policies' sufficient statistics are sums (`n`, `sum`, `Σ x xᵀ`, `Σ r x` per arm), so
//! the fleet's state is the sum of every instance's increments. In fleet mode an engine's
//! rewards no longer change its statistics: they accumulate as increments ([`Delta`]), which
//! the transport takes ([`Learner::take_deltas`]), appends to one shared, ordered log and
//! hands back to every instance, its own included ([`Learner::merge`]). Every instance thus
//! adds the same increments in the same order, holds the same statistics after the same
//! log position, and publishes its models under that position as their version: a logged
//! model version means the same model on every instance.

use super::arms::add_reward;
use super::*;

/// Most bandit keys a merge creates (deltas for keys this engine serves no rule for are
/// kept, so a rule loaded later starts from the fleet's statistics, up to this many).
const MAX_FOREIGN_KEYS: usize = 10_000;

/// Most arms a merge keeps per key.
const MAX_MERGED_ARMS: usize = 4 * MAX_ARMS;

/// Unsent increments of one bandit's statistics.
#[derive(Debug, Default)]
pub(super) struct Delta {
    policy: String,
    dim: usize,
    arms: Vec<ArmState>,
    /// Rewards discarded with increments of an earlier policy or dimension, not counted
    /// in the stats yet.
    discarded: u64,
}

impl Delta {
    /// One reward for arm `id` of a bandit with this policy and context dimension. A policy
    /// or dimension change drops the unsent increments of the old one (they would not fit
    /// the statistics any more, as a config swap drops them locally).
    pub(super) fn add(&mut self, policy: &str, dim: usize, id: &str, value: f64, x: &[f64]) {
        self.fit(policy, dim);
        let i = match self.arms.iter().position(|a| a.id == id) {
            Some(i) => i,
            None => {
                self.arms.push(fresh_arm(id, dim));
                self.arms.len() - 1
            }
        };
        add_reward(&mut self.arms[i], dim, value, x);
    }

    /// Statistics gathered before joining the fleet, as increments.
    fn add_stats(&mut self, policy: &str, dim: usize, gathered: &ArmState) {
        self.fit(policy, dim);
        self.arms.push(gathered.clone());
    }

    /// Starts over (counting what is discarded) when the increments held are of another
    /// policy or context dimension.
    fn fit(&mut self, policy: &str, dim: usize) {
        if self.policy != policy || self.dim != dim {
            let rewards: f64 = self.arms.iter().map(|a| a.n).sum();
            self.discarded += rewards as u64;
            self.policy = policy.to_owned();
            self.dim = dim;
            self.arms.clear();
        }
    }

    fn take(&mut self, key: &str) -> Option<BanditState> {
        if self.arms.is_empty() {
            return None;
        }
        let d = std::mem::take(self);
        Some(BanditState {
            key: key.to_owned(),
            policy: d.policy,
            dim: d.dim,
            arms: d.arms,
        })
    }
}

/// What [`Engine::merge_learner_deltas`](crate::Engine::merge_learner_deltas) did with a
/// batch of increments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MergeOutcome {
    /// Arms whose increments were added.
    pub merged: u64,
    /// Bandits whose increments were already merged at this or a later position (a
    /// redelivered log entry): left out, so merging is idempotent.
    pub replayed: u64,
    /// Arm increments left out because they do not fit: another policy or context dimension
    /// than the statistics of the key, an arm the config removed, values that are not
    /// finite or have the wrong length, or beyond the bounds on keys and arms.
    pub rejected: u64,
}

impl Learner {
    /// Switches to fleet mode (idempotent): from now on rewards become increments for
    /// [`take_deltas`](Self::take_deltas), and statistics change only by merges. Statistics
    /// gathered before joining become increments too (handed to the fleet, not lost), and
    /// the models restart from the prior, version 0, until the first merge.
    pub(crate) fn join_fleet(&self) {
        let now = self.clock.monotonic_ms();
        let mut guard = lock(&self.bandits);
        if self.fleet.swap(true, Ordering::AcqRel) {
            return;
        }
        for b in guard.1.iter_mut() {
            b.fleet = true;
            let dim = b.state.dim;
            for s in b.state.arms.iter_mut().filter(|s| s.active && s.n > 0.0) {
                let gathered = std::mem::replace(s, fresh_arm(&s.id, dim));
                b.delta.add_stats(&b.state.policy, dim, &gathered);
            }
            b.version = 0;
            publish(b, &self.counters, now);
        }
    }

    /// The increments gathered since the last call (`None` when there are none), as a
    /// [`LearnerState`] whose statistics are increments.
    pub(crate) fn take_deltas(&self) -> Option<LearnerState> {
        let mut guard = lock(&self.bandits);
        let mut discarded = 0;
        let bandits: Vec<BanditState> = guard
            .1
            .iter_mut()
            .filter_map(|b| {
                discarded += std::mem::take(&mut b.delta.discarded);
                b.delta.take(&b.state.key)
            })
            .collect();
        self.counters
            .fleet_discarded
            .fetch_add(discarded, Ordering::Relaxed);
        (!bandits.is_empty()).then_some(LearnerState { format: 1, bandits })
    }

    /// Adds the increments of the log entry at `position` (which must grow along the log)
    /// and republishes the models of the bandits it touched under that position as their
    /// version.
    pub(crate) fn merge(&self, delta: &LearnerState, position: u64) -> MergeOutcome {
        let mut out = MergeOutcome::default();
        let now = self.clock.monotonic_ms();
        let mut guard = lock(&self.bandits);
        let (keys, bandits) = &mut *guard;
        for d in &delta.bandits {
            let id = match keys.get(&d.key) {
                Some(&i) => i as usize,
                None if keys.len() < MAX_FOREIGN_KEYS => {
                    let state = BanditState {
                        key: d.key.clone(),
                        policy: d.policy.clone(),
                        dim: d.dim,
                        arms: Vec::new(),
                    };
                    bandits.push(Bandit::new(state, now, true));
                    keys.insert(d.key.clone(), (bandits.len() - 1) as u32);
                    bandits.len() - 1
                }
                None => {
                    out.rejected += d.arms.len() as u64;
                    continue;
                }
            };
            let b = &mut bandits[id];
            if b.version >= position {
                out.replayed += 1;
                continue;
            }
            if b.state.policy != d.policy || b.state.dim != d.dim {
                out.rejected += d.arms.len() as u64;
                continue;
            }
            for a in &d.arms {
                if !fits(a, d.dim) {
                    out.rejected += 1;
                    continue;
                }
                match b.state.arms.iter().position(|s| s.id == a.id) {
                    Some(i) if b.state.arms[i].active => add_stats(&mut b.state.arms[i], a),
                    // Removed by the config: its statistics were cleared, as they are locally.
                    Some(_) => {
                        out.rejected += 1;
                        continue;
                    }
                    None if b.state.arms.len() < MAX_MERGED_ARMS => {
                        let mut s = fresh_arm(&a.id, d.dim);
                        add_stats(&mut s, a);
                        b.state.arms.push(s);
                        b.gens.push(next_gen());
                    }
                    None => {
                        out.rejected += 1;
                        continue;
                    }
                }
                out.merged += 1;
            }
            b.version = position;
            publish(b, &self.counters, now);
        }
        out
    }
}

/// Adds the increments of `more` to `into` (by key and arm id; increments of another
/// policy or dimension than `into` holds for a key replace nothing and are appended as
/// their own entry, for the merge to judge).
#[cfg(feature = "kafka")]
pub(crate) fn combine_deltas(into: &mut LearnerState, more: LearnerState) {
    for d in more.bandits {
        match into
            .bandits
            .iter_mut()
            .find(|b| b.key == d.key && b.policy == d.policy && b.dim == d.dim)
        {
            Some(b) => {
                for a in d.arms {
                    match b.arms.iter_mut().find(|s| s.id == a.id) {
                        Some(s) if s.xx.len() == a.xx.len() && s.xr.len() == a.xr.len() => {
                            add_stats(s, &a);
                        }
                        _ => b.arms.push(a),
                    }
                }
            }
            None => into.bandits.push(d),
        }
    }
}

/// Whether an arm's increments can be added to statistics of context dimension `dim`.
fn fits(a: &ArmState, dim: usize) -> bool {
    a.n.is_finite()
        && a.n >= 0.0
        && a.sum.is_finite()
        && a.xx.len() == dim * dim
        && a.xr.len() == dim
        && a.xx.iter().chain(&a.xr).all(|v| v.is_finite())
}

fn add_stats(s: &mut ArmState, a: &ArmState) {
    s.n += a.n;
    s.sum += a.sum;
    for (t, v) in s.xx.iter_mut().zip(&a.xx) {
        *t += v;
    }
    for (t, v) in s.xr.iter_mut().zip(&a.xr) {
        *t += v;
    }
}
