//! The learning loop: bandit rules, rewards, model refresh, saved state and off-policy
//! evaluation.
//!
//! A `bandit` rule compiles to a [`BanditSpec`](crate::policy::model::BanditSpec) in the config snapshot.
//! Its learned state lives here, in the engine's [`Learner`], keyed by a stable key (the
//! slot id, or `slot/rule-id`) and by arm (variant) id, so it survives config swaps: arms
//! added start fresh, arms removed are dropped. Decide reads only a frozen
//! [`Model`](crate::policy::model::Model) that the learner republishes (an `ArcSwap` per rule) every N
//! rewards or T milliseconds, so it stays O(arms) and lock-free, including remembering the
//! decision for joining its reward (see the `pending` module).

mod arms;
mod build;
mod fleet;
mod outcome;
mod pending;
mod state;

#[cfg(feature = "kafka")]
pub(crate) use fleet::combine_deltas;
pub use fleet::MergeOutcome;
pub use outcome::{RewardOutcome, RewardStats};

use arms::{apply, check, fresh_arm, reconcile};
use build::build_model;
use pending::{Pending, Store, Taken};
pub use state::{ArmState, BanditState, LearnerState};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use crate::policy::model::{BanditSpec, Binding, Model, Policy};
pub use crate::policy::model::{DEFAULT_REWARD_BOUND, MAX_ARMS, MAX_CONTEXT, MAX_CONTEXT_VALUE};
use crate::snapshot::{Action, Snapshot};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these structures half-updated in a way
    // that matters more than losing the learner; keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Default)]
struct Counters {
    applied: AtomicU64,
    unknown: AtomicU64,
    rejected: AtomicU64,
    defaulted: AtomicU64,
    expired: AtomicU64,
    refreshes: AtomicU64,
    fleet_discarded: AtomicU64,
}

/// Parameters of the rule currently serving a key.
#[derive(Clone)]
struct Active {
    policy: Policy,
    floor: f64,
    layout: u64,
    /// Learner arm index per spec arm, in spec order.
    order: Vec<u32>,
    refresh_rewards: u64,
    refresh_ms: u64,
    default_reward: Option<f64>,
    reward_range: (f64, f64),
}

struct Bandit {
    state: BanditState,
    /// Generation of each learner arm (parallel to `state.arms`): a new number whenever
    /// the arm's statistics are started over (added, re-added after removal, new policy or
    /// context), so a pending decision from before cannot credit the new arm.
    gens: Vec<u32>,
    cell: Arc<ArcSwap<Model>>,
    active: Option<Active>,
    version: u64,
    since_refresh: u64,
    refreshed_ms: u64,
    /// Fleet mode (see the `fleet` module): rewards go to `delta`, the statistics change
    /// only by merged deltas, and the model version is the merged log position.
    fleet: bool,
    delta: fleet::Delta,
}

impl Bandit {
    /// A key not served by any rule yet, with the prior model.
    fn new(state: BanditState, now_ms: u64, fleet: bool) -> Self {
        Bandit {
            fleet,
            delta: fleet::Delta::default(),
            gens: (0..state.arms.len()).map(|_| next_gen()).collect(),
            state,
            cell: Arc::new(ArcSwap::from_pointee(Model::default())),
            active: None,
            version: 0,
            since_refresh: 0,
            refreshed_ms: now_ms,
        }
    }
}

/// A fresh arm generation (process-wide, so generations never repeat within a learner).
fn next_gen() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The engine's learner: per-rule statistics, pending decisions and model publishing.
pub(crate) struct Learner {
    bandits: Mutex<(HashMap<String, u32>, Vec<Bandit>)>,
    /// Bandit decisions waiting for their reward (lock-free).
    pending: Store,
    counters: Counters,
    /// How many of the store's own expired count the metric has been given.
    expired_reported: AtomicU64,
    /// Reward windows and refresh intervals are measured on this clock.
    clock: crate::clock::Clock,
    /// Whether the engine has joined a fleet (see the `fleet` module); never unset.
    fleet: std::sync::atomic::AtomicBool,
}

/// Positions of the pending store a reward looks at for expired decisions.
const REWARD_SWEEP: usize = 64;

impl Learner {
    /// `pending` is the number of bandit decisions remembered for joining rewards (clamped
    /// to 16..=2^24, rounded up to a power of two); `prefix` is the engine's id prefix.
    pub(crate) fn new(pending: usize, prefix: u64, clock: crate::clock::Clock) -> Self {
        Learner {
            bandits: Mutex::new((HashMap::new(), Vec::new())),
            pending: Store::new(pending.clamp(16, 1 << 24), prefix),
            counters: Counters::default(),
            expired_reported: AtomicU64::new(0),
            clock,
            fleet: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The id of the next bandit decision of engine `engine` on this thread.
    #[inline]
    pub(crate) fn next_id(&self, engine: u64) -> u128 {
        self.pending.next_id(engine)
    }

    /// Binds the bandit rules of a freshly compiled snapshot to their learner state (fills
    /// the snapshot's binding table; the rules themselves are left as compiled) and
    /// publishes a model matching each rule's arms. Called before the snapshot is swapped in.
    /// Marks every bandit inactive: the serving snapshot has no bandit rule.
    pub(crate) fn deactivate_all(&self) {
        for b in lock(&self.bandits).1.iter_mut() {
            b.active = None;
        }
    }

    pub(crate) fn attach(&self, snap: &mut Snapshot) {
        let mut guard = lock(&self.bandits);
        let (keys, bandits) = &mut *guard;
        for b in bandits.iter_mut() {
            b.active = None;
        }
        let mut bindings = Vec::new();
        for slot in &snap.slots {
            for rule in &slot.rules {
                let Action::Bandit(spec) = &rule.action else {
                    continue;
                };
                let now = self.clock.monotonic_ms();
                let fleet = self.fleet.load(Ordering::Acquire);
                let id = *keys.entry(spec.key.to_string()).or_insert_with(|| {
                    bandits.push(Bandit::new(
                        BanditState {
                            key: spec.key.to_string(),
                            ..BanditState::default()
                        },
                        now,
                        fleet,
                    ));
                    (bandits.len() - 1) as u32
                });
                let b = &mut bandits[id as usize];
                reconcile(b, spec);
                let order = spec
                    .arm_ids
                    .iter()
                    .map(|a| b.state.arms.iter().position(|s| s.id == **a).unwrap_or(0) as u32)
                    .collect::<Vec<_>>();
                b.active = Some(Active {
                    policy: spec.policy,
                    floor: spec.floor,
                    layout: spec.layout,
                    order: order.clone(),
                    refresh_rewards: spec.refresh_rewards,
                    refresh_ms: spec.refresh_ms,
                    default_reward: spec.default_reward,
                    reward_range: spec.reward_range,
                });
                // Compile numbers the bandit rules in this same order.
                debug_assert_eq!(spec.binding as usize, bindings.len());
                bindings.push(Binding {
                    model: Arc::clone(&b.cell),
                    learner: id,
                    gens: order.iter().map(|&i| b.gens[i as usize]).collect(),
                    arms: order,
                });
                publish(b, &self.counters, self.clock.monotonic_ms());
            }
        }
        snap.bindings = bindings.into_boxed_slice();
    }

    /// Remembers a bandit decision for joining its reward (decide path: no lock, no
    /// allocation after the store's first use).
    #[inline]
    pub(crate) fn remember(
        &self,
        id: u128,
        spec: &BanditSpec,
        binding: &Binding,
        chosen: usize,
        x: &[f64],
    ) {
        let (Some(&arm), Some(&gen)) = (binding.arms.get(chosen), binding.gens.get(chosen)) else {
            return;
        };
        let x = &x[..x.len().min(MAX_CONTEXT)];
        let now = self.clock.monotonic_ms();
        let p = Pending {
            learner: binding.learner,
            arm,
            gen,
            expires_ms: now.saturating_add(spec.window_ms),
            dim: x.len() as u8,
            has_default: spec.default_reward.is_some(),
            evicted: false,
        };
        self.pending.remember(id, &p, x, now);
    }

    /// Applies a reward to a remembered decision.
    pub(crate) fn reward(&self, id: u128, value: f64) -> RewardOutcome {
        if !value.is_finite() {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return RewardOutcome::Invalid;
        }
        // O(1): the id's sequence number is its position in the pending store.
        let found = self.pending.take(id);
        // Lazily, without a thread: evicted decisions, and expired ones in a stretch of the
        // store, get their default now.
        let now = self.clock.monotonic_ms();
        let mut evicted = Vec::new();
        self.pending.drain_due(&mut evicted);
        self.pending.sweep(now, REWARD_SWEEP, &mut evicted);
        self.report_expired();
        if !evicted.is_empty() {
            let mut guard = lock(&self.bandits);
            for t in &evicted {
                if let Some(b) = guard.1.get_mut(t.p.learner as usize) {
                    self.expire(b, t);
                }
            }
        }
        let Some(t) = found else {
            self.counters.unknown.fetch_add(1, Ordering::Relaxed);
            return RewardOutcome::Unknown;
        };
        let now = self.clock.monotonic_ms();
        let mut guard = lock(&self.bandits);
        let Some(b) = guard.1.get_mut(t.p.learner as usize) else {
            self.counters.unknown.fetch_add(1, Ordering::Relaxed);
            return RewardOutcome::Unknown;
        };
        if now > t.p.expires_ms {
            // The window passed before the reward came: the decision is expired, as if
            // `refresh` had got to it first (its default applies), and the late reward is not.
            self.expire(b, &t);
            self.counters.unknown.fetch_add(1, Ordering::Relaxed);
            return RewardOutcome::Unknown;
        }
        let out = check(b, t.p.arm, t.p.gen, value);
        if out != RewardOutcome::Applied {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return out;
        }
        apply(b, t.p.arm, value, t.x());
        self.counters.applied.fetch_add(1, Ordering::Relaxed);
        maybe_refresh(b, &self.counters, self.clock.monotonic_ms());
        RewardOutcome::Applied
    }

    /// Applies a reward to an arm directly (no decision id).
    pub(crate) fn reward_arm(
        &self,
        spec: &BanditSpec,
        binding: &Binding,
        variant: &str,
        value: f64,
    ) -> RewardOutcome {
        let out = if !value.is_finite() {
            RewardOutcome::Invalid
        } else if matches!(spec.policy, Policy::Linear { .. }) {
            RewardOutcome::NeedsContext
        } else if let Some(i) = spec.arm_ids.iter().position(|a| **a == *variant) {
            let mut guard = lock(&self.bandits);
            let arm = (binding.arms.get(i), binding.gens.get(i));
            match (guard.1.get_mut(binding.learner as usize), arm) {
                (Some(b), (Some(&arm), Some(&gen))) => match check(b, arm, gen, value) {
                    RewardOutcome::Applied => {
                        apply(b, arm, value, &[]);
                        self.counters.applied.fetch_add(1, Ordering::Relaxed);
                        maybe_refresh(b, &self.counters, self.clock.monotonic_ms());
                        return RewardOutcome::Applied;
                    }
                    other => other,
                },
                _ => RewardOutcome::NoSuchArm,
            }
        } else {
            RewardOutcome::NoSuchArm
        };
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        out
    }

    /// Expires pending decisions whose window has passed (applying default rewards), then
    /// republishes models that are due (`force`: all of them).
    pub(crate) fn refresh(&self, force: bool) {
        let now = self.clock.monotonic_ms();
        let mut due: Vec<Taken> = Vec::new();
        self.pending.sweep_all(now, &mut due);
        self.report_expired();
        let mut guard = lock(&self.bandits);
        for t in due {
            if let Some(b) = guard.1.get_mut(t.p.learner as usize) {
                self.expire(b, &t);
            }
        }
        for b in guard.1.iter_mut() {
            let Some(a) = &b.active else { continue };
            let stale = now.saturating_sub(b.refreshed_ms) >= a.refresh_ms && b.since_refresh > 0;
            if force || stale || b.since_refresh >= a.refresh_rewards {
                publish(b, &self.counters, self.clock.monotonic_ms());
            }
        }
    }

    /// A decision whose window passed: the rule's default reward if it has one (and the arm
    /// is still the decision's), else only counted.
    fn expire(&self, b: &mut Bandit, t: &Taken) {
        let default = b.active.as_ref().and_then(|a| a.default_reward);
        match default.filter(|&r| check(b, t.p.arm, t.p.gen, r) == RewardOutcome::Applied) {
            Some(r) => {
                apply(b, t.p.arm, r, t.x());
                self.counters.defaulted.fetch_add(1, Ordering::Relaxed);
                crate::metrics::reward("defaulted");
            }
            None => {
                self.counters.expired.fetch_add(1, Ordering::Relaxed);
                crate::metrics::reward("expired");
            }
        }
    }

    /// Gives the metric the decisions the store counted as expired since the last report
    /// (the decide path counts them without touching the metrics recorder).
    fn report_expired(&self) {
        let total = self.pending.expired();
        let before = self.expired_reported.fetch_max(total, Ordering::Relaxed);
        if total > before {
            crate::metrics::rewards("expired", total - before);
        }
    }

    pub(crate) fn count_rejected(&self) {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> RewardStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RewardStats {
            applied: l(&c.applied),
            unknown: l(&c.unknown),
            rejected: l(&c.rejected),
            defaulted: l(&c.defaulted),
            // With those the store only counted (no default applied).
            expired: l(&c.expired) + self.pending.expired(),
            evicted: self.pending.evicted(),
            refreshes: l(&c.refreshes),
            fleet_discarded: l(&c.fleet_discarded),
        }
    }

    pub(crate) fn save(&self) -> LearnerState {
        let guard = lock(&self.bandits);
        LearnerState {
            format: 1,
            bandits: guard.1.iter().map(|b| b.state.clone()).collect(),
        }
    }

    /// Replaces the state of every key in `state` (others are kept), then republishes the
    /// models of active rules. Statistics that do not fit the rule now serving the key
    /// (another policy kind, another context dimension) are dropped, as on a config swap.
    /// All under one lock, so a concurrent reward or refresh never sees restored statistics
    /// that do not yet fit the serving rules.
    pub(crate) fn restore(&self, state: LearnerState, snap: &Snapshot) {
        let mut guard = lock(&self.bandits);
        let (keys, bandits) = &mut *guard;
        for s in state.bandits {
            match keys.get(&s.key) {
                Some(&i) => {
                    let b = &mut bandits[i as usize];
                    // An arm keeps its generation if it is restored under the same id at the
                    // same index (decisions made before the restore still join it).
                    let gens = s
                        .arms
                        .iter()
                        .enumerate()
                        .map(|(j, a)| match (b.state.arms.get(j), b.gens.get(j)) {
                            (Some(old), Some(&g)) if old.id == a.id && old.active && a.active => g,
                            _ => next_gen(),
                        })
                        .collect();
                    b.state = s;
                    b.gens = gens;
                }
                None => {
                    keys.insert(s.key.clone(), bandits.len() as u32);
                    let fleet = self.fleet.load(Ordering::Acquire);
                    bandits.push(Bandit::new(s, self.clock.monotonic_ms(), fleet));
                }
            }
        }
        // Fit the restored statistics to the serving rules: each arm goes to the learner
        // index the serving snapshot already uses for it.
        for slot in &snap.slots {
            for rule in &slot.rules {
                let Action::Bandit(spec) = &rule.action else {
                    continue;
                };
                let (Some(&id), Some(binding)) = (keys.get(&*spec.key), snap.binding(spec)) else {
                    continue;
                };
                let b = &mut bandits[id as usize];
                let restored = std::mem::take(&mut b.state);
                let dim = spec.context.len();
                let fits = restored.policy == spec.policy.name() && restored.dim == dim;
                let width = binding
                    .arms
                    .iter()
                    .map(|&i| i as usize + 1)
                    .max()
                    .unwrap_or(0);
                let mut arms: Vec<ArmState> = (0..width)
                    .map(|i| ArmState {
                        id: format!("<retired-{i}>"),
                        active: false,
                        ..ArmState::default()
                    })
                    .collect();
                let mut gens: Vec<u32> = (0..width).map(|_| next_gen()).collect();
                for ((a, &i), &g) in spec.arm_ids.iter().zip(&binding.arms).zip(&binding.gens) {
                    // The serving rule's arms keep the generations its snapshot carries,
                    // so its decisions (made before or after the restore) still join.
                    let i = i as usize;
                    arms[i] = restored
                        .arms
                        .iter()
                        .find(|s| fits && s.active && s.id == **a)
                        .cloned()
                        .unwrap_or_else(|| fresh_arm(a, dim));
                    gens[i] = g;
                }
                b.state = BanditState {
                    key: restored.key,
                    policy: spec.policy.name().to_owned(),
                    dim,
                    arms,
                };
                b.gens = gens;
                publish(b, &self.counters, self.clock.monotonic_ms());
            }
        }
    }
}

fn maybe_refresh(b: &mut Bandit, counters: &Counters, now: u64) {
    if let Some(a) = &b.active {
        if b.since_refresh >= a.refresh_rewards
            || now.saturating_sub(b.refreshed_ms) >= a.refresh_ms
        {
            publish(b, counters, now);
        }
    }
}

/// Computes and publishes the model of an active rule.
fn publish(b: &mut Bandit, counters: &Counters, now: u64) {
    let Some(a) = &b.active else {
        return;
    };
    // In a fleet the version is the merged log position, set by `merge`.
    if !b.fleet {
        b.version += 1;
    }
    let model = build_model(&b.state, a, b.version);
    b.cell.store(Arc::new(model));
    b.since_refresh = 0;
    b.refreshed_ms = now;
    counters.refreshes.fetch_add(1, Ordering::Relaxed);
    crate::metrics::model_refreshed();
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use crate::{Engine, Features, RewardOutcome};

    /// Issue 13, point 11: the decide path takes no lock a reward holds. A reward is stopped
    /// in the middle of taking a decision from the pending store (after reading the slot,
    /// before claiming it); the thread that made that decision goes on making bandit
    /// decisions into the same store. Before, the reward held the mutex of that thread's
    /// shard there, and the thread's next bandit decision blocked until the reward went on.
    #[test]
    fn decisions_complete_while_a_reward_is_stopped_mid_take() {
        let engine = Engine::builder().id_prefix(3).build();
        let config = r#"{"version": "1", "slots": [{"id": "s", "variants": [{"id": "a"}, {"id": "b"}],
            "default": "a", "rules": [{"bandit": {"policy": "epsilon_greedy", "arms": ["a", "b"]}}]}]}"#;
        engine.load_config_json(config).expect("valid");
        let wait = Duration::from_secs(20);
        // The deciding thread: one decision, then (when told) a thousand more.
        let (first_id, first) = mpsc::channel();
        let (start, started) = mpsc::channel::<()>();
        let (done, finished) = mpsc::channel();
        let decider = {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let none = Features::new();
                let _ = first_id.send(engine.decide("s", "u", &none).id());
                if started.recv_timeout(wait * 2).is_ok() {
                    let bandit = (0..1_000)
                        .filter(|_| engine.decide("s", "u", &none).model_version().is_some())
                        .count();
                    let _ = done.send(bandit);
                }
            })
        };
        let first = first.recv_timeout(wait).expect("the first decision");
        let (inside, stopped) = mpsc::channel();
        let (resume, go) = mpsc::channel::<()>();
        let rewarder = {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let mut go = Some(go);
                super::pending::hooks::set(move || {
                    if let Some(go) = go.take() {
                        let _ = inside.send(());
                        let _ = go.recv_timeout(Duration::from_secs(60));
                    }
                });
                let out = engine.reward(first, 1.0);
                super::pending::hooks::clear();
                out
            })
        };
        stopped
            .recv_timeout(wait)
            .expect("the reward reached the pending store");
        let _ = start.send(());
        let decided = finished.recv_timeout(wait);
        let _ = resume.send(());
        assert_eq!(
            decided,
            Ok(1_000),
            "bandit decisions completed while a reward was stopped mid-take"
        );
        assert_eq!(rewarder.join().ok(), Some(RewardOutcome::Applied));
        let _ = decider.join();
        assert_eq!(engine.reward_stats().applied, 1);
    }
}
