//! The compiled, immutable snapshot a config becomes, and slot evaluation.

pub(crate) mod condition;
mod dist;
mod eval;
pub(crate) mod lookup;
pub(crate) mod reclaim;
pub(crate) mod trace;

use std::cell::Cell;
use std::sync::Arc;

use bytes::Bytes;

pub(crate) use crate::features::FeatureKey;
pub(crate) use condition::Cond;
pub(crate) use eval::{unit_bytes, BanditId, Outcome, RawCause, RawReason, NO_VARIANT};
pub(crate) use lookup::StrIndex;

use crate::metrics::Counts;
use crate::policy::model::{BanditSpec, Binding};

thread_local! {
    /// The index of the slot this thread looked up last (see `Snapshot::slot_idx`).
    static LAST_SLOT: Cell<u32> = const { Cell::new(0) };
}

/// A validated, compiled configuration. Immutable; the engine swaps whole snapshots.
///
/// Obtained from [`Engine::snapshot`](crate::Engine::snapshot) for inspection.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(crate) version: Box<str>,
    pub(crate) slots: Vec<Slot>,
    pub(crate) slot_index: StrIndex,
    pub(crate) segments: Vec<Cond>,
    pub(crate) segment_names: Vec<Box<str>>,
    pub(crate) layers: Vec<Layer>,
    pub(crate) holdout: Option<Holdout>,
    /// Interned feature names, indexed by `FeatureKey::id`.
    pub(crate) feature_names: Vec<Box<str>>,
    /// Decision and fallback counts: a row per slot, then one for unknown slots.
    pub(crate) counts: Arc<Counts>,
    /// Each bandit rule's binding to the learner of the engine that loaded the snapshot,
    /// indexed by `BanditSpec::binding`; empty until an engine loads it.
    pub(crate) bindings: Box<[Binding]>,
    /// Whether any slot is `sticky` (the decide path reads only this flag when none is).
    pub(crate) any_sticky: bool,
}

impl Snapshot {
    /// The config's `version` string.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The slot ids, in config order.
    pub fn slots(&self) -> impl Iterator<Item = &str> + '_ {
        self.slots.iter().map(|s| &*s.id)
    }

    /// The feature names a slot reads (conditions, bucketing units, scores), or `None` for an
    /// unknown slot. `Engine::decide_for` fetches exactly these.
    #[must_use]
    pub fn features_for(&self, slot: &str) -> Option<impl Iterator<Item = &str> + '_> {
        let s = self.slot(slot)?;
        Some(s.features.iter().map(|f| &**f))
    }

    /// The variant ids of a slot, in config order.
    #[must_use]
    pub fn variants_of(&self, slot: &str) -> Option<impl Iterator<Item = &str> + '_> {
        let s = self.slot(slot)?;
        Some(s.variants.iter().map(|v| &*v.id))
    }

    /// The slot's position. Each thread remembers the last slot it found: a service that
    /// decides the same slot over and over then compares one string instead of hashing. The
    /// memo is checked against the slot's id, so it is exact for any snapshot.
    #[inline(always)]
    pub(crate) fn slot_idx(&self, slot: &str) -> Option<u32> {
        let last = LAST_SLOT.with(Cell::get);
        if self
            .slots
            .get(last as usize)
            .is_some_and(|s| crate::features::str_eq(&s.id, slot))
        {
            return Some(last);
        }
        let i = self.slot_index.get(slot)?;
        LAST_SLOT.with(|c| c.set(i));
        Some(i)
    }

    pub(crate) fn slot(&self, slot: &str) -> Option<&Slot> {
        self.slots.get(self.slot_idx(slot)? as usize)
    }

    /// An empty snapshot (no slots), served before any config is loaded.
    pub(crate) fn empty() -> Self {
        Snapshot {
            version: "".into(),
            slots: Vec::new(),
            slot_index: StrIndex::default(),
            segments: Vec::new(),
            segment_names: Vec::new(),
            layers: Vec::new(),
            holdout: None,
            feature_names: Vec::new(),
            counts: Counts::register(std::iter::empty()),
            bindings: Box::default(),
            any_sticky: false,
        }
    }

    /// The learner binding of a bandit rule, once an engine has loaded the snapshot.
    #[inline]
    pub(crate) fn binding(&self, spec: &BanditSpec) -> Option<&Binding> {
        self.bindings.get(spec.binding as usize)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Variant {
    pub(crate) id: Box<str>,
    pub(crate) payload: Bytes,
    /// The config's `payload` as compact JSON (a string payload quoted), `None` without one.
    pub(crate) payload_json: Option<Box<serde_json::value::RawValue>>,
}

#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) id: Box<str>,
    pub(crate) variants: Vec<Variant>,
    pub(crate) default: u32,
    pub(crate) killed: bool,
    pub(crate) layer: Option<SlotLayer>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) features: Box<[Box<str>]>,
    /// `name_hash` of each of `features`, for lookups on the capture path.
    pub(crate) feature_hashes: Box<[u64]>,
    /// The slot's `sticky` option.
    pub(crate) sticky: Option<Box<Sticky>>,
}

impl Slot {
    /// The position of the variant with id `id`.
    pub(crate) fn variant_index(&self, id: &str) -> Option<u32> {
        self.variants
            .iter()
            .position(|v| &*v.id == id)
            .map(|i| i as u32)
    }
}

/// A slot's `sticky` option: what its stored assignments are tied to and which of them hold.
#[derive(Debug, Clone)]
pub(crate) struct Sticky {
    /// What an assignment is tied to: the user, or a feature's value (an assignment holds
    /// while the value is unchanged).
    pub(crate) unit: Unit,
    /// The bucket version new assignments are made under.
    pub(crate) version: u32,
    /// Assignments made under a lower version are discarded.
    pub(crate) min_version: u32,
    /// Whether a stored assignment is served only while the user still reaches a split or
    /// rollout rule of the slot.
    pub(crate) recheck: bool,
    /// The field a store that reads with the features keeps the assignment in
    /// ([`crate::sticky::field_name`]).
    pub(crate) field: Box<str>,
    /// The slot's features and `field`: what `decide_for` fetches from such a store's source.
    pub(crate) fetch: Box<[Box<str>]>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotLayer {
    pub(crate) layer: u32,
    pub(crate) from: u32,
    pub(crate) to: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub(crate) id: Box<str>,
    pub(crate) seed: u64,
    pub(crate) holdout: Option<Holdout>,
}

/// Users whose bucket under `seed` is below `below` are held out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Holdout {
    pub(crate) seed: u64,
    pub(crate) below: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// Position in the config's `rules` array (kept when unreachable rules are dropped).
    pub(crate) index: u16,
    pub(crate) id: Option<Box<str>>,
    pub(crate) when: Option<Cond>,
    pub(crate) action: Action,
}

/// The bucketing unit of a split or rollout.
#[derive(Debug, Clone)]
pub(crate) enum Unit {
    User,
    Feature(FeatureKey),
}

#[derive(Debug, Clone)]
pub(crate) enum Action {
    Serve(u32),
    /// `arms` holds (exclusive upper bucket, variant) in ascending order; the last upper is 10 000.
    Split {
        seed: u64,
        unit: Unit,
        arms: Vec<(u32, u32)>,
    },
    Rollout {
        seed: u64,
        unit: Unit,
        below: u32,
        variant: u32,
    },
    /// `inputs` are the distinct features the arms read, each looked up once per decision.
    Score {
        inputs: Vec<FeatureKey>,
        arms: Vec<ScoreArm>,
    },
    /// A learned policy; its model is published by the engine's learner.
    Bandit(Box<crate::policy::model::BanditSpec>),
}

#[derive(Debug, Clone)]
pub(crate) struct ScoreArm {
    pub(crate) variant: u32,
    pub(crate) bias: f64,
    /// `(index into the action's inputs, weight)`.
    pub(crate) weights: Vec<(u32, f64)>,
}
