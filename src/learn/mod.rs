//! The learning loop: bandit rules, rewards, model refresh, saved state and off-policy
//! evaluation.
//!
//! A `bandit` rule compiles to a [`BanditSpec`](model::BanditSpec) in the config snapshot.
//! Its learned state lives here, in the engine's [`Learner`], keyed by a stable key (the
//! slot id, or `slot/rule-id`) and by arm (variant) id, so it survives config swaps: arms
//! added start fresh, arms removed are dropped. Decide reads only a frozen
//! [`Model`](model::Model) that the learner republishes (an `ArcSwap` per rule) every N
//! rewards or T milliseconds, so it stays O(arms) and lock-free except for one uncontended
//! per-thread lock that remembers the decision for joining its reward.

mod arms;
mod build;
pub(crate) mod math;
pub(crate) mod model;
pub mod ope;
mod outcome;
mod pending;
mod state;

pub use outcome::{RewardOutcome, RewardStats};

use arms::{apply, check, fresh_arm, reconcile};
use build::build_model;
use pending::{Pending, Shard, Taken, EVICTED_KEEP};
pub use state::{ArmState, BanditState, LearnerState};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use arc_swap::ArcSwap;

use crate::snapshot::{Action, Snapshot};
use model::{BanditSpec, Model, Policy};
pub use model::{DEFAULT_REWARD_BOUND, MAX_ARMS, MAX_CONTEXT, MAX_CONTEXT_VALUE};

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
}

impl Bandit {
    /// A key not served by any rule yet, with the prior model.
    fn new(state: BanditState, now_ms: u64) -> Self {
        Bandit {
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

/// Keeps each shard (its lock and ring indices) on cache lines of its own, so threads
/// deciding on different shards never write to the same line.
#[repr(align(128))]
struct Padded<T>(T);

/// A shard, allocated on first use, and its count of evicted decisions (outside the lock,
/// so reading the stats takes no shard lock).
type ShardCell = (OnceLock<Mutex<Shard>>, AtomicU64);

/// The engine's learner: per-rule statistics, pending decisions and model publishing.
pub(crate) struct Learner {
    bandits: Mutex<(HashMap<String, u32>, Vec<Bandit>)>,
    /// Each shard (allocated on first use) with its count of evicted decisions.
    shards: Box<[Padded<ShardCell>]>,
    /// `block << 8 | shard` for recent id blocks, at `block % OWNERS`.
    owners: Box<[AtomicU64]>,
    shard_cap: usize,
    counters: Counters,
    /// Reward windows and refresh intervals are measured on this clock.
    clock: crate::clock::Clock,
}

/// Number of pending-decision shards: four per core, as `EngineBuilder::pending_rewards`
/// documents. Threads are assigned shards round-robin, so with up to this many deciding
/// threads none shares a shard (and its lock) with another.
fn shard_count() -> usize {
    std::thread::available_parallelism()
        .map_or(16, |n| n.get() * 4)
        .clamp(8, 256)
}

thread_local! {
    static SHARD: usize = {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    };
}

/// Entries of the block-owner table: which shard holds the decisions of each recent id block.
const OWNERS: usize = 4_096;

/// The sequence block of a decision id (each deciding thread takes its ids in blocks of
/// 2^16, see `decision::next_id`).
fn block_of(id: u128) -> u64 {
    (id as u64) >> 16
}

impl Learner {
    /// `pending` is the number of decisions each shard remembers for joining rewards.
    pub(crate) fn new(pending: usize, clock: crate::clock::Clock) -> Self {
        let n = shard_count();
        Learner {
            bandits: Mutex::new((HashMap::new(), Vec::new())),
            shards: (0..n)
                .map(|_| Padded((OnceLock::new(), AtomicU64::new(0))))
                .collect(),
            owners: (0..OWNERS).map(|_| AtomicU64::new(u64::MAX)).collect(),
            shard_cap: pending.clamp(16, 1 << 24),
            counters: Counters::default(),
            clock,
        }
    }

    fn shard(&self, i: usize) -> &Mutex<Shard> {
        self.shards[i % self.shards.len()]
            .0
             .0
            .get_or_init(|| Mutex::new(Shard::new(self.shard_cap)))
    }

    /// Connects the bandit rules of a freshly compiled snapshot to their learner state and
    /// publishes a model matching each rule's arms. Called before the snapshot is swapped in.
    pub(crate) fn attach(&self, snap: &mut Snapshot) {
        let mut guard = lock(&self.bandits);
        let (keys, bandits) = &mut *guard;
        for b in bandits.iter_mut() {
            b.active = None;
        }
        for slot in &mut snap.slots {
            for rule in &mut slot.rules {
                let Action::Bandit(spec) = &mut rule.action else {
                    continue;
                };
                let now = self.clock.monotonic_ms();
                let id = *keys.entry(spec.key.to_string()).or_insert_with(|| {
                    bandits.push(Bandit::new(
                        BanditState {
                            key: spec.key.to_string(),
                            ..BanditState::default()
                        },
                        now,
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
                spec.cell = Arc::clone(&b.cell);
                spec.learner_id = id;
                spec.learner_gens = order.iter().map(|&i| b.gens[i as usize]).collect();
                spec.learner_arms = order;
                publish(b, &self.counters, self.clock.monotonic_ms());
            }
        }
    }

    /// Remembers a bandit decision for joining its reward (decide path: no allocation after
    /// the thread's shard exists, one uncontended lock).
    #[inline]
    pub(crate) fn remember(&self, id: u128, spec: &BanditSpec, chosen: usize, x: &[f64]) {
        let (Some(&arm), Some(&gen)) =
            (spec.learner_arms.get(chosen), spec.learner_gens.get(chosen))
        else {
            return;
        };
        if spec.learner_id == u32::MAX {
            return;
        }
        let x = &x[..x.len().min(MAX_CONTEXT)];
        let now = self.clock.monotonic_ms();
        let p = Pending {
            id,
            learner: spec.learner_id,
            arm,
            gen,
            expires_ms: now.saturating_add(spec.window_ms),
            dim: x.len() as u8,
        };
        let i = SHARD.with(|s| *s) % self.shards.len();
        // Note which shard this id block lives in, so its rewards go straight there (one
        // store per block of 65,536 ids; a load otherwise).
        let block = block_of(id);
        let owner = block << 8 | i as u64;
        let slot = &self.owners[block as usize % OWNERS];
        if slot.load(Ordering::Relaxed) != owner {
            slot.store(owner, Ordering::Relaxed);
        }
        if lock(self.shard(i)).push(p, x, now) {
            self.shards[i].0 .1.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Applies a reward to a remembered decision.
    pub(crate) fn reward(&self, id: u128, value: f64) -> RewardOutcome {
        if !value.is_finite() {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            return RewardOutcome::Invalid;
        }
        // O(1): the block-owner table names the id's shard. A block too old for the table
        // (OWNERS blocks of decisions ago) is looked for in every shard.
        let block = block_of(id);
        let owner = self.owners[block as usize % OWNERS].load(Ordering::Relaxed);
        let now = self.clock.monotonic_ms();
        let mut evicted = Vec::new();
        let mut take = |i: usize| {
            self.shards[i].0 .0.get().and_then(|s| {
                let mut s = lock(s);
                // Lazily, without a thread: this shard's evicted and expired decisions get
                // their default now.
                s.sweep(now, 64);
                evicted.append(&mut s.evicted_due);
                s.take(id)
            })
        };
        let found = if owner >> 8 == block {
            take((owner & 0xff) as usize % self.shards.len())
        } else {
            (0..self.shards.len()).find_map(take)
        };
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
    pub(crate) fn reward_arm(&self, spec: &BanditSpec, variant: &str, value: f64) -> RewardOutcome {
        let out = if !value.is_finite() {
            RewardOutcome::Invalid
        } else if matches!(spec.policy, Policy::Linear { .. }) {
            RewardOutcome::NeedsContext
        } else if let Some(i) = spec.arm_ids.iter().position(|a| **a == *variant) {
            let mut guard = lock(&self.bandits);
            let arm = (spec.learner_arms.get(i), spec.learner_gens.get(i));
            match (guard.1.get_mut(spec.learner_id as usize), arm) {
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
        for s in self.shards.iter().filter_map(|s| s.0 .0.get()) {
            let mut s = lock(s);
            // The whole ring, in rounds that empty `evicted_due` between them.
            let len = s.len;
            let mut looked = 0;
            loop {
                due.append(&mut s.evicted_due);
                if looked >= len {
                    break;
                }
                let step = EVICTED_KEEP.min(len - looked);
                s.sweep(now, step);
                looked += step;
            }
        }
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
            expired: l(&c.expired),
            // No shard lock: eviction counts are atomics beside the shards.
            evicted: self.shards.iter().map(|s| l(&s.0 .1)).sum(),
            refreshes: l(&c.refreshes),
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
                    bandits.push(Bandit::new(s, self.clock.monotonic_ms()));
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
                let Some(&id) = keys.get(&*spec.key) else {
                    continue;
                };
                let b = &mut bandits[id as usize];
                let restored = std::mem::take(&mut b.state);
                let dim = spec.context.len();
                let fits = restored.policy == spec.policy.name() && restored.dim == dim;
                let width = spec
                    .learner_arms
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
                for ((a, &i), &g) in spec
                    .arm_ids
                    .iter()
                    .zip(&spec.learner_arms)
                    .zip(&spec.learner_gens)
                {
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
    b.version += 1;
    let model = build_model(&b.state, a, b.version);
    b.cell.store(Arc::new(model));
    b.since_refresh = 0;
    b.refreshed_ms = now;
    counters.refreshes.fetch_add(1, Ordering::Relaxed);
    crate::metrics::model_refreshed();
}
