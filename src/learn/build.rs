//! Building the frozen model a rule's decisions read from its learner state.

use super::*;
use crate::policy::math;

pub(super) fn build_model(state: &BanditState, a: &Active, version: u64) -> Model {
    // Checked: an index the state lacks reads as an untried arm (never a panic).
    let untried = ArmState::default();
    let arms: Vec<&ArmState> = a
        .order
        .iter()
        .map(|&i| state.arms.get(i as usize).unwrap_or(&untried))
        .collect();
    let k = arms.len();
    let mut probs = vec![0.0; k];
    let mean = |s: &ArmState| if s.n > 0.0 { s.sum / s.n } else { f64::NAN };
    match a.policy {
        Policy::Linear { ridge, .. } => {
            let d = state.dim;
            let mut theta = vec![0.0; k * d];
            for (i, s) in arms.iter().enumerate() {
                let mut m = s.xx.clone();
                if m.len() != d * d || s.xr.len() != d {
                    continue;
                }
                for j in 0..d {
                    m[j * d + j] += ridge;
                }
                if let Some(t) = math::solve_spd(&m, &s.xr, d) {
                    theta[i * d..(i + 1) * d].copy_from_slice(&t);
                }
            }
            return Model {
                version,
                layout: a.layout,
                probs: Vec::new(),
                theta,
                dim: d,
            };
        }
        Policy::EpsilonGreedy { epsilon } => {
            let best = argmax_untried_first(&arms, mean);
            for p in probs.iter_mut() {
                *p = epsilon / k as f64;
            }
            probs[best] += 1.0 - epsilon;
        }
        Policy::Softmax { temperature } => {
            let scores = optimistic_means(&arms, mean);
            math::softmax(&scores, temperature, &mut probs);
        }
        Policy::Igw { gamma } => {
            let scores = optimistic_means(&arms, mean);
            math::igw(&scores, gamma, &mut probs);
        }
        Policy::Thompson => {
            // Beta(1 + successes, 1 + failures), rewards clamped to [0, 1].
            let alpha: Vec<f64> = arms.iter().map(|s| 1.0 + s.sum.clamp(0.0, s.n)).collect();
            let beta: Vec<f64> = arms
                .iter()
                .zip(&alpha)
                .map(|(s, al)| 1.0 + s.n - (al - 1.0))
                .collect();
            math::beta_prob_best(&alpha, &beta, &mut probs);
        }
        Policy::Ucb1 => {
            let t: f64 = arms.iter().map(|s| s.n).sum();
            let mut best = 0;
            let mut top = f64::NEG_INFINITY;
            for (i, s) in arms.iter().enumerate() {
                let u = if s.n == 0.0 {
                    f64::INFINITY
                } else {
                    s.sum / s.n + (2.0 * t.max(1.0).ln() / s.n).sqrt()
                };
                if u > top {
                    top = u;
                    best = i;
                }
            }
            probs[best] = 1.0;
        }
    }
    math::normalize(&mut probs);
    math::apply_floor(&mut probs, a.floor);
    Model {
        version,
        layout: a.layout,
        probs,
        theta: Vec::new(),
        dim: 0,
    }
}

/// Arm with the best mean; untried arms first (lowest index).
pub(super) fn argmax_untried_first(arms: &[&ArmState], mean: impl Fn(&ArmState) -> f64) -> usize {
    if let Some(i) = arms.iter().position(|s| s.n == 0.0) {
        return i;
    }
    let mut best = 0;
    for (i, s) in arms.iter().enumerate() {
        if mean(s) > mean(arms[best]) {
            best = i;
        }
    }
    best
}

/// Means, with untried arms given the best tried mean (or 0 when nothing is tried).
pub(super) fn optimistic_means(arms: &[&ArmState], mean: impl Fn(&ArmState) -> f64) -> Vec<f64> {
    let top = arms
        .iter()
        .map(|s| mean(s))
        .filter(|m| m.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    let top = if top.is_finite() { top } else { 0.0 };
    arms.iter()
        .map(|s| {
            let m = mean(s);
            if m.is_finite() {
                m
            } else {
                top
            }
        })
        .collect()
}
