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

pub(crate) mod math;
pub(crate) mod model;
pub mod ope;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::snapshot::{Action, Snapshot};
use model::{BanditSpec, Model, Policy};
pub use model::{DEFAULT_REWARD_BOUND, MAX_ARMS, MAX_CONTEXT, MAX_CONTEXT_VALUE};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these structures half-updated in a way
    // that matters more than losing the learner; keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

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
    /// Decisions whose window passed without a reward, for rules with no default reward.
    pub expired: u64,
    /// Decisions forgotten before their window passed because the pending store was full.
    /// Each also gets its rule's default reward (counted in `defaulted`, or in `expired`
    /// without one) at the next refresh or reward of its shard, up to 256 per shard in
    /// between; beyond that it is only counted here.
    pub evicted: u64,
    /// Model refreshes published.
    pub refreshes: u64,
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

/// One remembered bandit decision, waiting for its reward. Its context (contextual rules
/// only) is in the shard's `contexts`, at the same ring position.
#[derive(Clone, Copy)]
struct Pending {
    id: u128,
    learner: u32,
    arm: u32,
    /// The arm's generation when the decision was made (see `Bandit::gens`).
    gen: u32,
    expires_ms: u64,
    dim: u8,
}

/// A taken pending decision with its context.
struct Taken {
    p: Pending,
    x: [f64; MAX_CONTEXT],
}

impl Taken {
    fn x(&self) -> &[f64] {
        &self.x[..usize::from(self.p.dim)]
    }
}

/// The pending index: decision id → ring position, open addressing with Robin Hood
/// linear probing and backward-shift deletion, at most half full.
///
/// An entry packs the id's 32-bit key (its low bits, folded with the high ones) above the
/// ring position + 1 (0 = empty). The key's low bits are the home slot, so the ids of one
/// thread, which are consecutive, land on consecutive slots: remembering a decision and
/// evicting the oldest one touch two sliding windows of the table instead of two random
/// cache lines, and the table itself is 8 bytes a slot (a quarter of a general hash map's).
/// Robin Hood order keeps a lookup of an absent id short even inside a long run of
/// consecutive ids: it stops at the first entry closer to its home than the probe.
struct Index {
    slots: Box<[u64]>,
    mask: usize,
}

impl Index {
    fn new(cap: usize) -> Self {
        let n = (cap * 2).next_power_of_two().max(16);
        Index {
            slots: vec![0; n].into_boxed_slice(),
            mask: n - 1,
        }
    }

    fn key(id: u128) -> u32 {
        let (lo, hi) = (id as u64, (id >> 64) as u64);
        (lo ^ hi ^ (hi >> 32)) as u32
    }

    fn dist(&self, slot: usize, entry: u64) -> usize {
        slot.wrapping_sub((entry >> 32) as usize) & self.mask
    }

    /// Inserts a position for a key not in the table (decision ids are unique). The table
    /// is never more than half full, so there is always an empty slot.
    fn insert(&mut self, key: u32, pos: usize) {
        let mut e = (u64::from(key) << 32) | (pos as u64 + 1);
        let mut i = key as usize & self.mask;
        let mut d = 0;
        loop {
            let cur = self.slots[i];
            if cur == 0 {
                self.slots[i] = e;
                return;
            }
            let cd = self.dist(i, cur);
            if cd < d {
                self.slots[i] = e;
                e = cur;
                d = cd;
            }
            i = (i + 1) & self.mask;
            d += 1;
        }
    }

    /// The table slot holding `key` whose position satisfies `is`.
    fn find(&self, key: u32, mut is: impl FnMut(usize) -> bool) -> Option<usize> {
        let mut i = key as usize & self.mask;
        let mut d = 0;
        loop {
            let cur = self.slots[i];
            if cur == 0 || self.dist(i, cur) < d {
                return None;
            }
            if (cur >> 32) as u32 == key && is((cur as u32 - 1) as usize) {
                return Some(i);
            }
            i = (i + 1) & self.mask;
            d += 1;
        }
    }

    /// Removes the entry at table slot `i`, shifting the run after it back.
    fn remove_at(&mut self, mut i: usize) -> usize {
        let pos = (self.slots[i] as u32 - 1) as usize;
        loop {
            let j = (i + 1) & self.mask;
            let next = self.slots[j];
            if next == 0 || self.dist(j, next) == 0 {
                self.slots[i] = 0;
                return pos;
            }
            self.slots[i] = next;
            i = j;
        }
    }
}

/// A FIFO ring of pending decisions with an id index. Allocated on first use, then never
/// again: the index has at least twice the ring's capacity, so it never grows.
struct Shard {
    ring: Vec<Option<Pending>>,
    /// Contexts by ring position; allocated on the first contextual decision.
    contexts: Vec<[f64; MAX_CONTEXT]>,
    head: usize,
    len: usize,
    index: Index,
    /// Decisions evicted while still pending, or found expired by `push`, waiting for their
    /// rule's default reward (at most [`EVICTED_KEEP`], room reserved up front so `push`
    /// never allocates).
    evicted_due: Vec<Taken>,
    /// Where [`Shard::sweep`] looks next.
    cursor: usize,
}

/// Evicted decisions a shard keeps for their default reward between two refreshes (or
/// rewards of the shard); beyond that an evicted decision is only counted.
const EVICTED_KEEP: usize = 256;

impl Shard {
    fn new(cap: usize) -> Self {
        Shard {
            ring: vec![None; cap],
            contexts: Vec::new(),
            head: 0,
            len: 0,
            index: Index::new(cap),
            evicted_due: Vec::with_capacity(EVICTED_KEEP),
            cursor: 0,
        }
    }

    fn taken(&self, pos: usize, p: Pending) -> Taken {
        let mut x = [0.0; MAX_CONTEXT];
        if p.dim > 0 {
            if let Some(c) = self.contexts.get(pos) {
                x = *c;
            }
        }
        Taken { p, x }
    }

    /// Drops the oldest slot of the ring; returns the entry if it was still pending.
    fn pop_front(&mut self) -> Option<Taken> {
        let cap = self.ring.len();
        let pos = self.head;
        let e = self.ring[pos].take();
        self.head = (self.head + 1) % cap;
        self.len -= 1;
        let p = e?;
        if let Some(i) = self.index.find(Index::key(p.id), |at| at == pos) {
            self.index.remove_at(i);
        }
        Some(self.taken(pos, p))
    }

    /// Looks at up to `n` ring positions from a cursor that keeps going round the ring, and
    /// moves the expired decisions there to `evicted_due` (while there is room). Expiry is
    /// therefore per decision: a long-window decision does not hold back the expiry of the
    /// short-window ones behind it. Lazy: decides and rewards of the shard do it as they go.
    fn sweep(&mut self, now: u64, n: usize) {
        let cap = self.ring.len();
        for _ in 0..n.min(self.len) {
            if self.evicted_due.len() >= EVICTED_KEEP {
                return;
            }
            // The cursor goes round the occupied part of the ring only.
            let offset = (self.cursor + cap - self.head) % cap;
            if offset >= self.len {
                self.cursor = self.head;
            }
            let pos = self.cursor;
            self.cursor = (self.cursor + 1) % cap;
            let Some(p) = self.ring[pos] else { continue };
            if now <= p.expires_ms {
                continue;
            }
            // Out of the middle of the ring: the slot stays (as an empty one) until the
            // front passes it, like a rewarded decision's.
            self.ring[pos] = None;
            if let Some(i) = self.index.find(Index::key(p.id), |at| at == pos) {
                self.index.remove_at(i);
            }
            let t = self.taken(pos, p);
            self.evicted_due.push(t);
        }
    }

    /// Inserts; returns whether a still-pending entry was evicted to make room.
    fn push(&mut self, p: Pending, x: &[f64], now: u64) -> bool {
        self.sweep(now, 2);
        let cap = self.ring.len();
        let mut evicted = false;
        if self.len == cap {
            if let Some(t) = self.pop_front() {
                evicted = true;
                if self.evicted_due.len() < EVICTED_KEEP {
                    self.evicted_due.push(t);
                }
            }
        }
        let pos = (self.head + self.len) % cap;
        if !x.is_empty() {
            if self.contexts.len() != cap {
                self.contexts = vec![[0.0; MAX_CONTEXT]; cap];
            }
            self.contexts[pos][..x.len()].copy_from_slice(x);
        }
        self.ring[pos] = Some(p);
        self.len += 1;
        self.index.insert(Index::key(p.id), pos);
        evicted
    }

    fn take(&mut self, id: u128) -> Option<Taken> {
        let ring = &self.ring;
        let i = self
            .index
            .find(Index::key(id), |at| ring[at].is_some_and(|p| p.id == id))?;
        let pos = self.index.remove_at(i);
        let p = self.ring[pos].take()?;
        Some(self.taken(pos, p))
    }
}

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

/// Makes the bandit's state fit `spec`: a new policy kind or context dimension starts fresh,
/// arms missing from the spec are cleared, new arms are added. Every arm started over gets
/// a new generation.
fn reconcile(b: &mut Bandit, spec: &BanditSpec) {
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

fn fresh_arm(id: &str, dim: usize) -> ArmState {
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
fn check(b: &Bandit, arm: u32, gen: u32, value: f64) -> RewardOutcome {
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

fn apply(b: &mut Bandit, arm: u32, value: f64, x: &[f64]) {
    let Some(s) = b.state.arms.get_mut(arm as usize) else {
        return;
    };
    if !s.active {
        return;
    }
    s.n += 1.0;
    s.sum += value;
    let d = b.state.dim;
    if d > 0 && x.len() == d && s.xx.len() == d * d && s.xr.len() == d {
        for i in 0..d {
            s.xr[i] += value * x[i];
            for j in 0..d {
                s.xx[i * d + j] += x[i] * x[j];
            }
        }
    }
    b.since_refresh += 1;
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

fn build_model(state: &BanditState, a: &Active, version: u64) -> Model {
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
fn argmax_untried_first(arms: &[&ArmState], mean: impl Fn(&ArmState) -> f64) -> usize {
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
fn optimistic_means(arms: &[&ArmState], mean: impl Fn(&ArmState) -> f64) -> Vec<f64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The pending index against a `HashMap` model, with the FIFO insert/evict pattern of a
    /// shard plus random takes, for consecutive ids, ids of interleaved threads and colliding
    /// keys.
    #[test]
    fn index_matches_a_hash_map() {
        for pattern in 0..3u64 {
            let cap = 64;
            let mut shard = Shard::new(cap);
            let mut model: HashMap<u128, ()> = HashMap::new();
            let mut order: std::collections::VecDeque<u128> = Default::default();
            let mut state = 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(pattern + 1);
            let mut rand = || {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z ^ (z >> 27)
            };
            for n in 0..20_000u64 {
                let id: u128 = match pattern {
                    0 => u128::from(n),
                    // Two threads' id blocks, 1 << 16 apart.
                    1 => u128::from(((n % 2) << 16) | (n / 2)),
                    // Keys that collide: same low 32 bits of the folded id.
                    _ => (u128::from(n) << 64) | u128::from(n ^ (n << 32)),
                };
                let p = Pending {
                    id,
                    learner: 0,
                    arm: 0,
                    gen: 0,
                    expires_ms: 0,
                    dim: 0,
                };
                if order.len() == cap {
                    let old = order.pop_front().unwrap_or_default();
                    model.remove(&old);
                }
                shard.push(p, &[], 0);
                order.push_back(id);
                model.insert(id, ());
                if rand() % 3 == 0 {
                    // Take a random remembered (or already taken) id, or one never seen.
                    let probe = match rand() % 3 {
                        0 => u128::from(rand()) | (1 << 100),
                        _ => order[(rand() % order.len() as u64) as usize],
                    };
                    let got = shard.take(probe).map(|t| t.p.id);
                    let want = model.remove(&probe).map(|()| probe);
                    assert_eq!(got, want, "pattern {pattern}, step {n}, id {probe:#x}");
                }
            }
            for id in order {
                assert_eq!(
                    shard.take(id).map(|t| t.p.id),
                    model.remove(&id).map(|()| id)
                );
            }
            assert!(
                shard.index.slots.iter().all(|&e| e == 0),
                "pattern {pattern}"
            );
        }
    }
}
