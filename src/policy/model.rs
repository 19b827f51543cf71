//! What a bandit rule compiles to, and the frozen model it reads on the decide path.

use std::cell::RefCell;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::math;
use crate::features::FeatureKey;
use crate::features::Features;

/// Bandit rules may have at most this many arms (probabilities are kept inline, so decide
/// does not allocate).
pub const MAX_ARMS: usize = 16;
/// Contextual policies may read at most this many features.
pub const MAX_CONTEXT: usize = 16;
/// Context values are clamped to `±MAX_CONTEXT_VALUE` before a contextual policy reads or
/// learns from them, so one huge value cannot make the regression statistics infinite.
pub const MAX_CONTEXT_VALUE: f64 = 1e6;
/// Default bound on the magnitude of a reward (a rule's `reward.min` / `reward.max` default
/// to `∓DEFAULT_REWARD_BOUND`): rewards outside the rule's range are refused with
/// [`RewardOutcome::OutOfRange`](crate::RewardOutcome::OutOfRange), so one absurd value cannot
/// overwhelm (or overflow) a policy's statistics.
pub const DEFAULT_REWARD_BOUND: f64 = 1e6;

/// How a contextual policy turns predicted rewards into probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Explore {
    /// Inverse-gap weighting with this γ.
    Igw(f64),
    /// Softmax with this temperature.
    Softmax(f64),
}

/// A bandit policy with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Policy {
    EpsilonGreedy { epsilon: f64 },
    Softmax { temperature: f64 },
    Igw { gamma: f64 },
    Thompson,
    Ucb1,
    Linear { explore: Explore, ridge: f64 },
}

impl Policy {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Policy::EpsilonGreedy { .. } => "epsilon_greedy",
            Policy::Softmax { .. } => "softmax",
            Policy::Igw { .. } => "igw",
            Policy::Thompson => "thompson",
            Policy::Ucb1 => "ucb1",
            Policy::Linear { .. } => "linear",
        }
    }
}

/// A compiled `bandit` action.
#[derive(Debug, Clone)]
pub(crate) struct BanditSpec {
    /// Learner state key: the slot id, or `slot/rule-id` for a rule with an id (`/` and `\\` in
    /// ids escaped with `\\`).
    pub(crate) key: Box<str>,
    pub(crate) seed: u64,
    /// Variant indices of the arms, in config order.
    pub(crate) arms: Vec<u32>,
    pub(crate) arm_ids: Vec<Box<str>>,
    /// Hash of the arm ids in order: a model is only used by specs with the same layout.
    pub(crate) layout: u64,
    pub(crate) policy: Policy,
    pub(crate) floor: f64,
    pub(crate) context: Vec<FeatureKey>,
    pub(crate) refresh_rewards: u64,
    pub(crate) refresh_ms: u64,
    pub(crate) window_ms: u64,
    pub(crate) default_reward: Option<f64>,
    /// Rewards outside `[min, max]` are refused.
    pub(crate) reward_range: (f64, f64),
    /// This rule's position among the snapshot's bandit rules (in config order): its entry
    /// in the snapshot's [`Binding`] table.
    pub(crate) binding: u32,
}

/// What a bandit rule of a loaded snapshot is bound to in its engine's learner: where its
/// model is published and which learner state its decisions feed. The compiled rules stay
/// as the config made them; the engine that loads a snapshot fills the snapshot's binding
/// table once, before the snapshot serves.
#[derive(Debug, Clone)]
pub(crate) struct Binding {
    /// Where the learner publishes the rule's model.
    pub(crate) model: Arc<ArcSwap<Model>>,
    /// The learner's id for the rule's key.
    pub(crate) learner: u32,
    /// Learner arm index of each arm, in the rule's arm order.
    pub(crate) arms: Vec<u32>,
    /// Generation of each of those learner arms when the snapshot was bound.
    pub(crate) gens: Vec<u32>,
}

/// The model of a rule bound to no learner (a snapshot no engine loaded): the prior.
pub(crate) static PRIOR: Model = Model {
    version: 0,
    layout: 0,
    probs: Vec::new(),
    theta: Vec::new(),
    dim: 0,
};

/// A frozen model, republished by the learner on refresh.
#[derive(Debug, Clone, Default)]
pub(crate) struct Model {
    /// 0 for the prior (nothing learned yet), then 1, 2, … per refresh.
    pub(crate) version: u64,
    pub(crate) layout: u64,
    /// Context-free policies: the probability of each arm, in arm order.
    pub(crate) probs: Vec<f64>,
    /// Linear policy: `arms × dim` coefficients, row per arm.
    pub(crate) theta: Vec<f64>,
    pub(crate) dim: usize,
}

/// Buffers kept per thread for reuse by [`Probs`].
const POOL_MAX: usize = 64;

/// Probabilities (first [`MAX_ARMS`]) then the context (next [`MAX_CONTEXT`]).
type Buf = [f64; MAX_ARMS + MAX_CONTEXT];

thread_local! {
    // The buffers move in and out of `Probs` whole, so they stay boxed in the pool.
    #[allow(clippy::vec_box)]
    static POOL: RefCell<Vec<Box<Buf>>> = RefCell::new(Vec::with_capacity(POOL_MAX));
}

/// A bandit decision's probability vector and, for contextual rules, the context it was
/// computed from (so joining the reward does not read the features again), in a fixed-size
/// buffer taken from a per-thread pool and returned to the pool of the thread that drops it
/// (at most [`POOL_MAX`] kept per thread). Decisions stay small (a pointer instead of 32
/// floats, so non-bandit decisions pay nothing), and a thread that decides and drops its
/// decisions allocates only while warming up its pool.
#[derive(Debug)]
pub(crate) struct Probs {
    buf: Option<Box<Buf>>,
    len: u8,
    dim: u8,
}

impl Probs {
    /// The first `n` of `probs` and the first `d` of `x`.
    pub(crate) fn new(probs: &[f64; MAX_ARMS], n: usize, x: &[f64; MAX_CONTEXT], d: usize) -> Self {
        let mut buf = POOL
            .try_with(|p| p.try_borrow_mut().ok().and_then(|mut v| v.pop()))
            .ok()
            .flatten()
            .unwrap_or_else(|| Box::new([0.0; MAX_ARMS + MAX_CONTEXT]));
        // Fixed-size copies compile to a few vector moves (no `memcpy` call).
        buf[..MAX_ARMS].copy_from_slice(probs);
        if d > 0 {
            buf[MAX_ARMS..].copy_from_slice(x);
        }
        Probs {
            buf: Some(buf),
            len: n.min(MAX_ARMS) as u8,
            dim: d.min(MAX_CONTEXT) as u8,
        }
    }

    pub(crate) fn as_slice(&self) -> &[f64] {
        self.buf
            .as_deref()
            .map_or(&[][..], |b| &b[..usize::from(self.len)])
    }

    /// The context of a contextual decision (empty otherwise).
    pub(crate) fn context(&self) -> &[f64] {
        self.buf
            .as_deref()
            .map_or(&[][..], |b| &b[MAX_ARMS..MAX_ARMS + usize::from(self.dim)])
    }
}

impl Clone for Probs {
    fn clone(&self) -> Self {
        let mut probs = [0.0; MAX_ARMS];
        let mut x = [0.0; MAX_CONTEXT];
        probs[..self.as_slice().len()].copy_from_slice(self.as_slice());
        x[..self.context().len()].copy_from_slice(self.context());
        Probs::new(&probs, usize::from(self.len), &x, usize::from(self.dim))
    }
}

impl Drop for Probs {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            let _ = POOL.try_with(|p| {
                if let Ok(mut v) = p.try_borrow_mut() {
                    if v.len() < POOL_MAX {
                        v.push(b);
                    }
                }
            });
        }
    }
}

/// The bandit part of an outcome: everything needed to log and to join a reward.
#[derive(Debug, Clone)]
pub(crate) struct BanditOutcome {
    pub(crate) model_version: u64,
    pub(crate) chosen: u8,
    pub(crate) probs: Probs,
}

impl BanditOutcome {
    pub(crate) fn probs(&self) -> &[f64] {
        self.probs.as_slice()
    }
}

impl BanditSpec {
    /// The context vector: each feature as a number; missing, non-numeric or non-finite
    /// values count as 0 and the rest are clamped to ±[`MAX_CONTEXT_VALUE`] (so one bad value
    /// cannot poison the regression).
    #[inline]
    pub(crate) fn context(&self, features: &Features, x: &mut [f64; MAX_CONTEXT]) {
        for (xi, k) in x.iter_mut().zip(&self.context) {
            *xi = k
                .get(features)
                .and_then(|v| v.as_f64())
                .filter(|v| v.is_finite())
                .map_or(0.0, |v| v.clamp(-MAX_CONTEXT_VALUE, MAX_CONTEXT_VALUE));
        }
    }

    /// Probabilities for this decision from `model` (the rule's published model), written
    /// to `out[..arms]` (and, for contextual rules, the context to `x[..features]`); returns
    /// the model version used (0 when the model does not match this spec's arms yet).
    #[inline]
    pub(crate) fn probabilities(
        &self,
        model: &Model,
        features: &Features,
        out: &mut [f64; MAX_ARMS],
        x: &mut [f64; MAX_CONTEXT],
    ) -> u64 {
        let k = self.arms.len();
        let fits = model.layout == self.layout;
        match self.policy {
            Policy::Linear { explore, .. } => {
                self.context(features, x);
                let d = self.context.len();
                let mut pred = [0.0; MAX_ARMS];
                if fits && model.dim == d && model.theta.len() == k * d {
                    for (a, p) in pred[..k].iter_mut().enumerate() {
                        let row = &model.theta[a * d..(a + 1) * d];
                        *p = row.iter().zip(&x[..d]).map(|(t, x)| t * x).sum();
                    }
                }
                match explore {
                    Explore::Igw(g) => math::igw(&pred[..k], g, &mut out[..k]),
                    Explore::Softmax(t) => math::softmax(&pred[..k], t, &mut out[..k]),
                }
                math::apply_floor(&mut out[..k], self.floor);
            }
            _ if fits && model.probs.len() == k => out[..k].copy_from_slice(&model.probs),
            _ => {
                let u = 1.0 / k as f64;
                out[..k].iter_mut().for_each(|p| *p = u);
                return 0;
            }
        }
        if fits {
            model.version
        } else {
            0
        }
    }
}

/// Layout hash of an arm list.
pub(crate) fn layout(arm_ids: &[Box<str>]) -> u64 {
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    for id in arm_ids {
        h = xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), h);
    }
    h
}
