//! Sticky slots on the decide path: read the unit's stored assignment, serve it while it
//! holds, queue a new one when a split or rollout assigns.

use super::Engine;
use crate::features::{Features, Value};
use crate::snapshot::trace::Trace;
use crate::snapshot::{
    unit_bytes, BanditId, Outcome, RawCause, RawReason, Slot, Snapshot, Sticky, Unit,
};
use crate::sticky::queue::Writer;
use crate::sticky::{Assignment, AssignmentWrite};

/// What reading a unit's assignment gave.
enum Read {
    /// The store could not be read (no store, a failed or skipped fetch, a store error, no
    /// unit value): decide from the config and write nothing.
    Unread,
    /// The store answered: the assignment, if one was stored and could be decoded (`bad`
    /// says one was stored and could not).
    Found {
        stored: Option<Assignment>,
        bad: bool,
    },
}

impl Engine {
    /// The outcome of slot `idx` when the snapshot has sticky slots. `fetched` says the
    /// features come from a fetch that asked for the assignment field (for stores that read
    /// with the features); `write` whether a new assignment may be queued (not when
    /// explaining).
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(super) fn sticky_outcome<T: Trace>(
        &self,
        snap: &Snapshot,
        idx: u32,
        user: &str,
        features: &Features,
        fetched: bool,
        degraded: Option<RawCause>,
        ids: &mut impl BanditId,
        trace: &mut T,
        write: bool,
    ) -> Outcome {
        let (slot, st) = match snap.slots.get(idx as usize) {
            Some(slot) if !slot.killed => match slot.sticky.as_deref() {
                Some(st) => (slot, st),
                None => return snap.evaluate(idx, user, features, degraded, ids, trace),
            },
            _ => return snap.evaluate(idx, user, features, degraded, ids, trace),
        };
        let unit = unit_hash(&st.unit, features);
        let read = match (&self.inner.assign, unit) {
            (Some(w), Some(_)) => read(w, st, &slot.id, user, features, fetched),
            _ => Read::Unread,
        };
        let Read::Found { stored, bad } = read else {
            trace.note(|| "sticky: the assignment store was not read; deciding from the config, storing nothing".into());
            decided(Decided::Unread);
            return snap.evaluate(idx, user, features, degraded, ids, trace);
        };
        let unit = unit.unwrap_or(0);
        let held = stored.as_ref().and_then(|a| holds(a, slot, st, unit));
        if bad || (stored.is_some() && held.is_none()) {
            trace.note(|| format!("sticky: stored assignment {stored:?} does not hold; discarded"));
            metrics::counter!("elvon_sticky_discarded_total").increment(1);
        }
        if let (Some(variant), Some(a)) = (held, &stored) {
            let sticky = Outcome {
                variant,
                reason: RawReason::Sticky { version: a.version },
                propensity: a.propensity,
                bandit: None,
            };
            if !st.recheck {
                trace.note(|| format!("sticky: serving the stored assignment {a:?}"));
                decided(Decided::Served);
                return sticky;
            }
            let live = snap.evaluate(idx, user, features, degraded, ids, &mut *trace);
            if assigned_by(&live, slot) {
                trace.note(|| {
                    format!("sticky: targeting still reaches a split or rollout; serving the stored assignment {a:?}")
                });
                decided(Decided::Served);
                return sticky;
            }
            trace.note(|| "sticky: targeting no longer reaches a split or rollout; serving the config's outcome (the assignment is kept)".into());
            decided(Decided::Live);
            return live;
        }
        let live = snap.evaluate(idx, user, features, degraded, ids, &mut *trace);
        match &self.inner.assign {
            Some(w) if write && assigned_by(&live, slot) => {
                let variant = slot
                    .variants
                    .get(live.variant as usize)
                    .map_or("", |v| &v.id);
                w.offer(AssignmentWrite {
                    user: user.to_owned(),
                    slot: slot.id.to_string(),
                    assignment: Assignment::new(variant, live.propensity, st.version, unit),
                });
                decided(Decided::Assigned);
            }
            _ => decided(Decided::Live),
        }
        live
    }
}

/// How a sticky slot's decision went (each a literal key: no allocation per call).
#[derive(Clone, Copy)]
enum Decided {
    Served,
    Assigned,
    Live,
    Unread,
}

fn decided(d: Decided) {
    let c = match d {
        Decided::Served => metrics::counter!("elvon_sticky_decisions_total", "outcome" => "served"),
        Decided::Assigned => {
            metrics::counter!("elvon_sticky_decisions_total", "outcome" => "assigned")
        }
        Decided::Live => metrics::counter!("elvon_sticky_decisions_total", "outcome" => "live"),
        Decided::Unread => metrics::counter!("elvon_sticky_decisions_total", "outcome" => "unread"),
    };
    c.increment(1);
}

fn read(
    w: &Writer,
    st: &Sticky,
    slot: &str,
    user: &str,
    features: &Features,
    fetched: bool,
) -> Read {
    if !w.store.reads_with_features() {
        return match w.store.get(user, slot) {
            Ok(stored) => Read::Found { stored, bad: false },
            Err(_) => Read::Unread,
        };
    }
    match features.get(&st.field) {
        Some(Value::Str(text)) => match Assignment::from_text(text) {
            Ok(a) => Read::Found {
                stored: Some(a),
                bad: false,
            },
            Err(_) => Read::Found {
                stored: None,
                bad: true,
            },
        },
        Some(_) => Read::Found {
            stored: None,
            bad: true,
        },
        None if fetched => Read::Found {
            stored: None,
            bad: false,
        },
        None => Read::Unread,
    }
}

/// The variant a stored assignment serves, if it holds: made under a bucket version in
/// `min_version..=version`, for the same unit value, of a variant the slot still has.
fn holds(a: &Assignment, slot: &Slot, st: &Sticky, unit: u64) -> Option<u32> {
    let fits = (st.min_version..=st.version).contains(&a.version)
        && a.unit == unit
        && a.propensity > 0.0
        && a.propensity <= 1.0;
    fits.then(|| slot.variant_index(&a.variant)).flatten()
}

/// Whether a split or rollout rule made `outcome` (what sticky slots store).
fn assigned_by(outcome: &Outcome, slot: &Slot) -> bool {
    match outcome.reason {
        RawReason::Rule { rule, .. } => slot
            .rules
            .get(rule as usize)
            .is_some_and(|r| crate::config::assigns(&r.action)),
        _ => false,
    }
}

/// What an assignment is tied to: 0 for the user, a hash of the feature's value for a
/// feature unit (`None` when the feature is absent or neither a string nor an integer).
fn unit_hash(unit: &Unit, features: &Features) -> Option<u64> {
    match unit {
        Unit::User => Some(0),
        Unit::Feature(k) => {
            let mut buf = [0u8; 20];
            unit_bytes(k.get(features)?, &mut buf).map(xxhash_rust::xxh3::xxh3_64)
        }
    }
}
